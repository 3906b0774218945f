//! Flavor-independent pieces of the mock: the deterministic reply plan, token
//! counting, chunk splitting, ids, hashing, embeddings and SSE framing.
//!
//! Token counting (documented in the module docs of [`super`]):
//! * prompt tokens = `ceil(C / 4) + 3 * M`, where `C` is the number of Unicode
//!   scalar values in every text of the request (string contents, text parts,
//!   tool results, Anthropic text documents, the Anthropic `system` prompt; PDFs
//!   and documents by URL or id count nothing) and `M` the number of messages
//!   (a non-empty Anthropic `system` counts as one message, so an OpenAI request
//!   with a system message and its Anthropic translation count the same);
//! * completion tokens = `max(1, ceil(R / 4))`, `R` the chars of the reply text,
//!   or for a tool call the chars of the tool name plus its arguments JSON.

use serde_json::Value;

/// What the request says about the conversation, extracted by the flavor.
#[derive(Debug, Default)]
pub(crate) struct Conversation {
    /// Text of the last user message (or of the trailing tool results).
    pub last_text: String,
    /// The conversation ends with tool results: answer with text.
    pub after_tool: bool,
    /// Chars of every text in the request.
    pub prompt_chars: usize,
    /// Number of messages (plus one for a non-empty Anthropic `system`).
    pub messages: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Finish {
    /// Natural end (`stop` / `end_turn`).
    Stop,
    /// `max_tokens` reached (`length` / `max_tokens`).
    Length,
    /// A stop sequence matched (`stop` / `stop_sequence`), with the sequence.
    StopSequence(String),
}

#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Text { text: String, finish: Finish },
    Tool { name: String, arguments: String },
}

#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub outcome: Outcome,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// `ceil(chars / 4)`.
pub(crate) fn tokens(chars: usize) -> u64 {
    (chars as u64).div_ceil(4)
}

/// Computes the deterministic reply. `tool` is the tool to call (already
/// decided by the flavor from `tools`/`tool_choice` and `after_tool`).
pub(crate) fn plan(
    conv: &Conversation,
    tool: Option<String>,
    max_tokens: Option<u64>,
    stops: &[String],
) -> Plan {
    let prompt_tokens = tokens(conv.prompt_chars) + 3 * conv.messages as u64;
    if let Some(name) = tool {
        let arguments = serde_json::json!({ "input": conv.last_text }).to_string();
        let completion_tokens = tokens(name.chars().count() + arguments.chars().count()).max(1);
        return Plan {
            outcome: Outcome::Tool { name, arguments },
            prompt_tokens,
            completion_tokens,
        };
    }
    let full = format!("echo: {}", conv.last_text);
    let (text, finish) = cut(&full, max_tokens, stops);
    let completion_tokens = tokens(text.chars().count()).max(1);
    Plan {
        outcome: Outcome::Text { text, finish },
        prompt_tokens,
        completion_tokens,
    }
}

/// The reply to a request for structured output (OpenAI's and Mistral's
/// `response_format`): for `json_schema`, [`schema_reply`]; for `json_object`,
/// `{"echo": "echo: <text>"}`. None for plain text.
pub(crate) fn structured(format: &Value, text: &str) -> Option<String> {
    match format.get("type").and_then(Value::as_str) {
        Some("json_object") => {
            Some(serde_json::json!({ "echo": format!("echo: {text}") }).to_string())
        }
        Some("json_schema") => Some(schema_reply(
            format.get("json_schema")?.get("schema")?,
            text,
        )),
        _ => None,
    }
}

/// The reply that follows a JSON Schema (OpenAI's and Mistral's `json_schema`,
/// Anthropic's `output_config.format`): the schema's simplest instance, its strings
/// `echo: <text>` (an enum's first value, a `const` as given; numbers 0, booleans
/// false, arrays empty, `anyOf`/`oneOf` their first choice, `$ref`s into `$defs`
/// followed), as JSON text.
pub(crate) fn schema_reply(schema: &Value, text: &str) -> String {
    instance(schema, schema, &format!("echo: {text}"), 0).to_string()
}

fn instance(root: &Value, schema: &Value, echo: &str, depth: u32) -> Value {
    if depth > 16 {
        return Value::Null;
    }
    let next = |s: &Value| instance(root, s, echo, depth + 1);
    if let Some(c) = schema.get("const") {
        return c.clone();
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let target = r
            .strip_prefix("#/")
            .and_then(|path| path.split('/').try_fold(root, |at, key| at.get(key)));
        return target.map_or(Value::Null, next);
    }
    for choice in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = schema
            .get(choice)
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        {
            return next(first);
        }
    }
    let kind = match schema.get("type") {
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|k| *k != "null"),
        Some(Value::String(k)) => Some(k.as_str()),
        _ if schema.get("properties").is_some() => Some("object"),
        _ => None,
    };
    match kind {
        Some("object") => Value::Object(
            schema
                .get("properties")
                .and_then(Value::as_object)
                .map(|props| props.iter().map(|(k, v)| (k.clone(), next(v))).collect())
                .unwrap_or_default(),
        ),
        Some("string") => Value::from(echo),
        Some("integer" | "number") => Value::from(0),
        Some("boolean") => Value::Bool(false),
        Some("array") => Value::Array(Vec::new()),
        _ => Value::Null,
    }
}

/// Applies stop sequences and the `max_tokens * 4` chars limit, whichever
/// comes first in the text.
fn cut(full: &str, max_tokens: Option<u64>, stops: &[String]) -> (String, Finish) {
    let stop = stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| full.find(s.as_str()).map(|at| (at, s)))
        .min_by_key(|(at, _)| *at);
    let limit = max_tokens.map(|m| usize::try_from(m.saturating_mul(4)).unwrap_or(usize::MAX));
    if let Some((at, seq)) = stop {
        let stop_chars = full[..at].chars().count();
        if limit.is_none_or(|l| stop_chars <= l) {
            return (full[..at].to_string(), Finish::StopSequence(seq.clone()));
        }
    }
    match limit {
        Some(l) if full.chars().count() > l => (full.chars().take(l).collect(), Finish::Length),
        _ => (full.to_string(), Finish::Stop),
    }
}

/// Splits `s` into at most `k` non-empty pieces of near-equal char counts,
/// on char boundaries. Empty text gives no pieces.
pub(crate) fn split_chars(s: &str, k: u32) -> Vec<&str> {
    let n = s.chars().count();
    if n == 0 {
        return Vec::new();
    }
    let k = (k.max(1) as usize).min(n);
    let (base, extra) = (n / k, n % k);
    let bounds: Vec<usize> = s.char_indices().map(|(i, _)| i).chain([s.len()]).collect();
    let mut out = Vec::with_capacity(k);
    let mut at = 0;
    for i in 0..k {
        let len = base + usize::from(i < extra);
        out.push(&s[bounds[at]..bounds[at + len]]);
        at += len;
    }
    out
}

/// splitmix64 step: a well-mixed 64-bit value from a counter.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a over the UTF-8 bytes.
pub(crate) fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A deterministic alphanumeric string of `len` chars from `seed`.
pub(crate) fn alnum(len: usize, seed: u64) -> String {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = splitmix64(state);
            char::from(ALNUM[(state % ALNUM.len() as u64) as usize])
        })
        .collect()
}

/// Deterministic embedding: FNV-1a of the text seeds a splitmix64 sequence;
/// each component is the top 24 bits mapped to [-1, 1); the vector is then
/// L2-normalised (like real embeddings).
pub(crate) fn embedding(text: &str, dims: usize) -> Vec<f32> {
    let mut state = fnv1a(text);
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            state = splitmix64(state);
            ((state >> 40) as f32 / (1u32 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// Standard base64 (with padding) — for `encoding_format: "base64"`.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= c.len() {
                out.push(char::from(T[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The inputs of an embeddings request: a string, an array of strings, an
/// array of token ids (one input) or an array of token-id arrays. Token ids
/// are hashed as their JSON text.
pub(crate) fn embedding_inputs(input: &Value) -> Option<Vec<String>> {
    match input {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(items) if items.is_empty() => None,
        Value::Array(items) if items.iter().all(Value::is_number) => Some(vec![input.to_string()]),
        Value::Array(items) => Some(
            items
                .iter()
                .map(|i| match i {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
        ),
        _ => None,
    }
}

/// Prompt tokens of embedding inputs: sum of `max(1, ceil(chars / 4))`.
pub(crate) fn embedding_tokens(inputs: &[String]) -> u64 {
    inputs
        .iter()
        .map(|s| tokens(s.chars().count()).max(1))
        .sum()
}

/// `data: {json}\n\n`
pub(crate) fn data_frame(v: &Value) -> String {
    format!("data: {v}\n\n")
}

/// `event: {name}\ndata: {json}\n\n`
pub(crate) fn event_frame(name: &str, v: &Value) -> String {
    format!("event: {name}\ndata: {v}\n\n")
}

/// Seconds since the Unix epoch (the `created` field).
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Text of an OpenAI/Mistral message `content`: a string, or the text parts
/// of an array (concatenated), or nothing.
pub(crate) fn openai_content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| match p {
                Value::String(s) => Some(s.as_str()),
                Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("text") => {
                    o.get("text").and_then(Value::as_str)
                }
                _ => None,
            })
            .collect(),
        _ => String::new(),
    }
}

/// Stop sequences from a `stop` (string or array) or `stop_sequences` value.
pub(crate) fn stop_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Structured output: the schema's simplest instance, nested models through
    /// `$defs` (as Pydantic writes them), enums and optional fields; `json_object` an
    /// echo object; plain text none.
    #[test]
    fn structured_output_follows_the_schema() {
        let format = serde_json::json!({"type": "json_schema", "json_schema": {"name": "Order", "strict": true,
            "schema": {"type": "object", "properties": {
                "item": {"type": "string"},
                "qty": {"type": "integer"},
                "express": {"type": "boolean"},
                "size": {"enum": ["S", "M"]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "buyer": {"$ref": "#/$defs/Buyer"}},
              "$defs": {"Buyer": {"type": "object", "properties": {"name": {"type": ["string", "null"]}}}}}}});
        let got: Value = serde_json::from_str(&structured(&format, "hi").unwrap()).unwrap();
        assert_eq!(
            got,
            serde_json::json!({"item": "echo: hi", "qty": 0, "express": false, "size": "S",
                "tags": [], "note": "echo: hi", "buyer": {"name": "echo: hi"}})
        );
        let object = serde_json::json!({"type": "json_object"});
        assert_eq!(structured(&object, "hi").unwrap(), r#"{"echo":"echo: hi"}"#);
        assert_eq!(structured(&serde_json::json!({"type": "text"}), "hi"), None);
    }

    #[test]
    fn split_on_char_boundaries() {
        let s = "échos ünïcödé 🦀🦀";
        for k in 1..=30 {
            let parts = split_chars(s, k);
            assert_eq!(parts.concat(), s);
            assert!(parts.iter().all(|p| !p.is_empty()));
            assert_eq!(parts.len(), (k as usize).min(s.chars().count()));
        }
        assert!(split_chars("", 4).is_empty());
    }

    #[test]
    fn cut_prefers_first_limit() {
        let (t, f) = cut("echo: hello world", Some(2), &[]);
        assert_eq!((t.as_str(), f), ("echo: he", Finish::Length));
        let (t, f) = cut("echo: hello world", Some(100), &["o w".into(), "ll".into()]);
        assert_eq!(
            (t.as_str(), f),
            ("echo: he", Finish::StopSequence("ll".into()))
        );
        let (t, f) = cut("echo: hello world", Some(1), &["world".into()]);
        assert_eq!((t.as_str(), f), ("echo", Finish::Length));
        let (t, f) = cut("echo: hi", None, &[]);
        assert_eq!((t.as_str(), f), ("echo: hi", Finish::Stop));
    }

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn embedding_is_unit_and_deterministic() {
        let a = embedding("hello", 8);
        assert_eq!(a, embedding("hello", 8));
        assert_ne!(a, embedding("hellp", 8));
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-5);
    }
}
