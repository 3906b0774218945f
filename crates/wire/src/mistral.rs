//! Mistral chat completions and embeddings: the upstream side.
//!
//! Mistral's API is OpenAI-like; this module writes its differences and reuses
//! [`crate::openai`] for what is the same (message shapes, responses, stream chunks,
//! embeddings lists). As documented in the Mistral API reference:
//! - chat: <https://docs.mistral.ai/api/#tag/chat/operation/chat_completion_v1_chat_completions_post>
//! - embeddings: <https://docs.mistral.ai/api/#tag/embeddings/operation/embeddings_v1_embeddings_post>
//! - function calling: <https://docs.mistral.ai/capabilities/function_calling/>
//!
//! Differences handled here:
//! - `random_seed` instead of `seed`; no `user`; no `stream_options` (a stream's last
//!   chunk carries `usage` together with its `finish_reason`);
//! - `tool_choice` is `auto` / `none` / `any` / `required` or
//!   `{"type":"function","function":{"name"}}`; canonical `Required` is sent as `any`;
//! - tool-call ids must match `[a-zA-Z0-9]{9}` (the API answers 400 "Tool call id was ...
//!   but must be a-z, A-Z, 0-9, with a length of 9", see langchain-ai/langchain#24668).
//!   Other ids (`call_...`, Anthropic `toolu_...`) are mapped by [`tool_call_id`], a pure
//!   hash, on assistant `tool_calls` and `tool` messages alike, so a conversation stays
//!   consistent across requests;
//! - unknown fields are rejected ("Extra inputs are not permitted", 422), so only extras
//!   that came from the Mistral format are forwarded;
//! - error bodies: `{"object":"error","message","type","param","code"}` where `message`
//!   may itself be a validation object `{"detail":[...]}`, a bare 422 `{"detail":[...]}`,
//!   or `{"message":"Unauthorized"}`; all are read by [`decode_error`];
//! - `finish_reason` may be `model_length` (read as max tokens); content may be an array
//!   of chunks (`text`, `thinking`), of which the text is kept.

use serde_json::{Map, Value, json};

use crate::canonical::{
    ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse, Format, ProviderError,
    StreamEvent, ToolChoice,
};
use crate::error::DecodeError;
use crate::openai;
use crate::sse::SseEvent;

/// Writes a canonical request as a Mistral chat completions body for `model`.
pub fn encode_request(req: &ChatRequest, model: &str) -> Vec<u8> {
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert(
        "messages".into(),
        Value::Array(openai::encode_messages(req, &tool_call_id)),
    );
    if !req.tools.is_empty() {
        body.insert("tools".into(), openai::tools_json(&req.tools));
    }
    if let Some(tc) = &req.tool_choice {
        let v = match tc {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!("any"),
            ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
        };
        body.insert("tool_choice".into(), v);
    }
    if let Some(mt) = req.max_tokens {
        body.insert("max_tokens".into(), json!(mt));
    }
    openai::insert_common(&mut body, req);
    if let Some(seed) = req.seed {
        body.insert("random_seed".into(), json!(seed));
    }
    if req.stream {
        body.insert("stream".into(), json!(true));
    }
    if req.extra.format == Some(Format::Mistral) {
        for (k, v) in &req.extra.fields {
            if !body.contains_key(k) {
                body.insert(k.clone(), v.clone());
            }
        }
    }
    openai::to_bytes(&Value::Object(body))
}

/// A tool-call id Mistral accepts: ids that already match `[a-zA-Z0-9]{9}` are kept,
/// others become 9 base-62 digits of their 64-bit FNV-1a hash. Pure and deterministic.
pub fn tool_call_id(id: &str) -> String {
    if id.len() == 9 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return id.to_owned();
    }
    const DIGITS: &[u8; 62] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (0..9)
        .map(|_| {
            let d = (h % 62) as usize;
            h /= 62;
            char::from(DIGITS[d])
        })
        .collect()
}

/// Reads a Mistral chat completion body.
pub fn decode_response(body: &[u8]) -> Result<ChatResponse, DecodeError> {
    openai::decode_response(body)
}

/// Reads Mistral stream chunks (OpenAI's chunk shape; usage on the last chunk).
#[derive(Debug, Default)]
pub struct StreamDecoder(openai::StreamDecoder);

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn decode(&mut self, ev: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        self.0.decode(ev, out)
    }
}

/// Reads a Mistral error body (any of the documented forms).
pub fn decode_error(body: &[u8]) -> Option<ProviderError> {
    openai::decode_error(body)
}

/// Fields of an embeddings request that Mistral knows (it rejects any other).
const EMBEDDINGS_FIELDS: [&str; 2] = ["output_dimension", "output_dtype"];

/// A Mistral embeddings body for `model`. OpenAI `dimensions` becomes `output_dimension`;
/// fields Mistral does not know (`user`, `encoding_format`, ...) are dropped.
pub fn encode_embeddings_request(req: &EmbeddingsRequest, model: &str) -> Vec<u8> {
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("input".into(), json!(req.input));
    if let Some(d) = req.extra.get("dimensions") {
        body.insert("output_dimension".into(), d.clone());
    }
    for (k, v) in &req.extra {
        if EMBEDDINGS_FIELDS.contains(&k.as_str()) {
            body.insert(k.clone(), v.clone());
        }
    }
    openai::to_bytes(&Value::Object(body))
}

/// Reads a Mistral embeddings `list` (the OpenAI shape).
pub fn decode_embeddings_response(body: &[u8]) -> Result<EmbeddingsResponse, DecodeError> {
    openai::decode_embeddings_response(body)
}
