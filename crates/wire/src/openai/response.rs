//! Complete replies and error bodies:
//! <https://platform.openai.com/docs/api-reference/chat/object> and
//! <https://platform.openai.com/docs/guides/error-codes>.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{arguments_text, to_bytes};
use crate::canonical::{Block, ChatResponse, ProviderError, StopReason, Usage};
use crate::error::DecodeError;

/// The `finish_reason` of a canonical stop reason (unknown counts as a normal stop).
pub(crate) fn finish_reason(r: Option<StopReason>) -> &'static str {
    match r {
        None | Some(StopReason::EndTurn | StopReason::StopSequence) => "stop",
        Some(StopReason::MaxTokens) => "length",
        Some(StopReason::ToolUse) => "tool_calls",
        Some(StopReason::ContentFilter) => "content_filter",
    }
}

/// A canonical stop reason from an OpenAI or Mistral `finish_reason`.
pub(crate) fn stop_reason(s: &str) -> StopReason {
    match s {
        "length" | "model_length" => StopReason::MaxTokens,
        "tool_calls" | "function_call" => StopReason::ToolUse,
        "content_filter" => StopReason::ContentFilter,
        _ => StopReason::EndTurn,
    }
}

/// OpenAI's `usage`, with `prompt_tokens_details.cached_tokens` as OpenAI always sends it
/// (the tokens read from the prompt cache, whichever provider's; 0 when none were).
pub(super) fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cache_read_input_tokens.unwrap_or(0)},
    })
}

/// Writes a canonical reply as an OpenAI `chat.completion` object.
pub fn encode_response(resp: &ChatResponse, created: u64) -> Vec<u8> {
    let text = resp.text();
    let calls: Vec<Value> = resp
        .content
        .iter()
        .filter_map(|b| match b {
            Block::ToolCall {
                id,
                name,
                arguments,
                ..
            } => Some(json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})),
            _ => None,
        })
        .collect();
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    let content = if text.is_empty() && !calls.is_empty() {
        Value::Null
    } else {
        json!(text)
    };
    message.insert("content".into(), content);
    if !calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    message.insert("refusal".into(), Value::Null);
    to_bytes(&json!({
        "id": resp.id,
        "object": "chat.completion",
        "created": created,
        "model": resp.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(resp.stop_reason),
        }],
        "usage": usage_json(&resp.usage),
    }))
}

#[derive(Deserialize)]
struct ResponseIn {
    id: Option<String>,
    model: Option<String>,
    choices: Option<Vec<ChoiceIn>>,
    usage: Option<UsageIn>,
}

#[derive(Deserialize)]
struct ChoiceIn {
    index: Option<u32>,
    message: Option<ResponseMessageIn>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ResponseMessageIn {
    content: Option<ContentText>,
    tool_calls: Option<Vec<ToolCallOutIn>>,
    refusal: Option<String>,
}

#[derive(Deserialize)]
struct ToolCallOutIn {
    id: Option<String>,
    function: FunctionOutIn,
}

#[derive(Deserialize)]
struct FunctionOutIn {
    name: Option<String>,
    arguments: Option<Value>,
}

#[derive(Deserialize)]
pub(super) struct UsageIn {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<PromptDetailsIn>,
}

/// `usage.prompt_tokens_details`: of the prompt, the tokens read from OpenAI's prompt
/// cache (automatic for long prompts), which are billed at the cached-input price.
#[derive(Deserialize)]
struct PromptDetailsIn {
    cached_tokens: Option<u64>,
}

impl UsageIn {
    pub(super) fn canonical(&self) -> Usage {
        Usage {
            input_tokens: self.prompt_tokens.unwrap_or(0),
            output_tokens: self.completion_tokens.unwrap_or(0),
            // 0 (what OpenAI says when nothing was cached) is "none".
            cache_read_input_tokens: self
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens)
                .filter(|n| *n > 0),
            ..Default::default()
        }
    }
}

/// A message's (or a stream delta's) `content` read straight into its text: a string as
/// it is, an array of parts as its `text` parts joined (Mistral also sends `thinking`
/// parts, which are skipped), anything else as no text. Read without a detour through a
/// [`Value`] and a copy out of it: a stream reads one per chunk.
#[derive(Debug, Default)]
pub(crate) struct ContentText(pub(crate) String);

impl<'de> Deserialize<'de> for ContentText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ContentVisitor)
    }
}

struct ContentVisitor;

impl<'de> serde::de::Visitor<'de> for ContentVisitor {
    type Value = ContentText;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("message content")
    }

    fn visit_str<E>(self, v: &str) -> Result<ContentText, E> {
        Ok(ContentText(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<ContentText, E> {
        Ok(ContentText(v))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<ContentText, A::Error> {
        let mut text = String::new();
        while let Some(part) = seq.next_element::<Value>()? {
            if part.get("type").and_then(Value::as_str) == Some("text")
                && let Some(t) = part.get("text").and_then(Value::as_str)
            {
                text.push_str(t);
            }
        }
        Ok(ContentText(text))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<ContentText, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(ContentText::default())
    }

    fn visit_unit<E>(self) -> Result<ContentText, E> {
        Ok(ContentText::default())
    }

    fn visit_none<E>(self) -> Result<ContentText, E> {
        Ok(ContentText::default())
    }

    fn visit_bool<E>(self, _: bool) -> Result<ContentText, E> {
        Ok(ContentText::default())
    }

    fn visit_i64<E>(self, _: i64) -> Result<ContentText, E> {
        Ok(ContentText::default())
    }

    fn visit_u64<E>(self, _: u64) -> Result<ContentText, E> {
        Ok(ContentText::default())
    }

    fn visit_f64<E>(self, _: f64) -> Result<ContentText, E> {
        Ok(ContentText::default())
    }
}

/// Reads an OpenAI (or OpenAI-compatible, or Mistral) `chat.completion` body.
pub fn decode_response(body: &[u8]) -> Result<ChatResponse, DecodeError> {
    let raw: ResponseIn =
        serde_json::from_slice(body).map_err(|e| DecodeError::new("response", e))?;
    let mut choices = raw.choices.unwrap_or_default();
    if choices.is_empty() {
        return Err(DecodeError::new("response", "no choices"));
    }
    let first = choices
        .iter()
        .position(|c| c.index.unwrap_or(0) == 0)
        .unwrap_or(0);
    let choice = choices.swap_remove(first);
    let mut content = Vec::new();
    if let Some(msg) = choice.message {
        let mut text = msg.content.map(|c| c.0).unwrap_or_default();
        if text.is_empty()
            && let Some(refusal) = msg.refusal
        {
            text = refusal;
        }
        if !text.is_empty() {
            content.push(Block::Text {
                text,
                cache_control: None,
            });
        }
        for (i, tc) in msg.tool_calls.iter().flatten().enumerate() {
            content.push(Block::ToolCall {
                id: tc.id.clone().unwrap_or_else(|| format!("call_{i}")),
                name: tc.function.name.clone().unwrap_or_default(),
                arguments: arguments_text(tc.function.arguments.clone()),
                cache_control: None,
            });
        }
    }
    Ok(ChatResponse {
        id: raw.id.unwrap_or_default(),
        model: raw.model.unwrap_or_default(),
        content,
        stop_reason: choice.finish_reason.as_deref().map(stop_reason),
        usage: raw
            .usage
            .as_ref()
            .map(UsageIn::canonical)
            .unwrap_or_default(),
    })
}

// ================================================================================
// Errors
// ================================================================================

/// An OpenAI error body: `{"error":{"message","type","code","param"}}`.
pub fn error_body(kind: &str, code: &str, message: &str, param: Option<&str>) -> Vec<u8> {
    to_bytes(&error_json(kind, Some(code), message, param))
}

pub(super) fn error_json(
    kind: &str,
    code: Option<&str>,
    message: &str,
    param: Option<&str>,
) -> Value {
    json!({"error": {
        "message": message,
        "type": kind,
        "code": code.filter(|c| !c.is_empty()),
        "param": param,
    }})
}

/// Reads an upstream error body. Understands OpenAI's `{"error":{...}}`, `{"error":"..."}`
/// (Ollama), and top-level `{"message","type"}` / `{"detail":...}` (vLLM, Mistral).
pub fn decode_error(body: &[u8]) -> Option<ProviderError> {
    let v: Value = serde_json::from_slice(body).ok()?;
    provider_error(&v)
}

pub(crate) fn provider_error(v: &Value) -> Option<ProviderError> {
    let obj = v.as_object()?;
    let kind_of = |o: &Map<String, Value>, default: &str| {
        o.get("type")
            .and_then(Value::as_str)
            .or_else(|| o.get("code").and_then(Value::as_str))
            .unwrap_or(default)
            .to_owned()
    };
    match obj.get("error") {
        Some(Value::Object(e)) => {
            return Some(ProviderError {
                kind: kind_of(e, "api_error"),
                message: e.get("message").map(message_text).unwrap_or_default(),
            });
        }
        Some(Value::String(s)) => {
            return Some(ProviderError {
                kind: "api_error".into(),
                message: s.clone(),
            });
        }
        _ => {}
    }
    if let Some(m) = obj.get("message") {
        return Some(ProviderError {
            kind: kind_of(obj, "api_error"),
            message: message_text(m),
        });
    }
    obj.get("detail").map(|d| ProviderError {
        kind: "invalid_request_error".into(),
        message: message_text(&json!({"detail": d})),
    })
}

/// A message that may be a string or a validation object `{"detail":[{"loc","msg"}]}`.
fn message_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(o) => match o.get("detail") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    let msg = item.get("msg").and_then(Value::as_str).unwrap_or("invalid");
                    let loc: Vec<String> = item
                        .get("loc")
                        .and_then(Value::as_array)
                        .map(|l| {
                            l.iter()
                                .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                    if loc.is_empty() {
                        msg.to_owned()
                    } else {
                        format!("{}: {msg}", loc.join("."))
                    }
                })
                .collect::<Vec<_>>()
                .join("; "),
            _ => v.to_string(),
        },
        other => other.to_string(),
    }
}
