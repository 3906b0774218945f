//! The Anthropic Messages API (`POST /v1/messages`), both as a client-facing surface and as
//! an upstream, translated to and from the canonical hub.
//!
//! Written against Anthropic's own reference:
//!
//! - Messages request and response: <https://platform.claude.com/docs/en/api/messages/create>
//! - Streaming (`message_start`, `content_block_start` / `_delta` / `_stop` with
//!   `text_delta` and `input_json_delta`, `message_delta`, `message_stop`, `ping`,
//!   `error`): <https://platform.claude.com/docs/en/build-with-claude/streaming>
//! - Errors (`{"type":"error","error":{"type","message"}}`, `invalid_request_error`,
//!   `overloaded_error`, ...): <https://platform.claude.com/docs/en/api/errors>
//! - Stop reasons (`end_turn`, `max_tokens`, `stop_sequence`, `tool_use`, `pause_turn`,
//!   `refusal`): <https://platform.claude.com/docs/en/build-with-claude/handling-stop-reasons>
//!
//! Client side: [`parse_request`], [`encode_response`], [`StreamEncoder`], [`error_body`].
//! Upstream side: [`encode_request`], [`decode_response`], [`StreamDecoder`],
//! [`decode_error`], [`API_VERSION`].
//!
//! Translation choices (each one is a place where the formats disagree):
//!
//! - `max_tokens` is required by Anthropic. A canonical request without it (OpenAI makes it
//!   optional) is sent with [`DEFAULT_MAX_TOKENS`].
//! - `temperature` is 0..=1 at Anthropic and 0..=2 at OpenAI: outgoing values are clamped
//!   into 0..=1 (so OpenAI's 1.5 becomes 1.0), as is `top_p`.
//! - OpenAI `seed` has no Anthropic counterpart and is dropped.
//! - Structured outputs
//!   (<https://platform.claude.com/docs/en/build-with-claude/structured-outputs>): a
//!   canonical JSON Schema format (OpenAI `response_format` `json_schema`, or this
//!   surface's own) is sent as GA `output_config.format`
//!   (`{"type": "json_schema", "schema"}`, no beta header); the reply is a text block
//!   holding the JSON. OpenAI's `name`, `description` and `strict` have no place there
//!   (Anthropic always holds the reply to the schema). `json_object` is not sent:
//!   Anthropic's structured outputs need a schema and `additionalProperties: false` on
//!   every object, so "any JSON object" cannot be said; the prompt, which OpenAI's JSON
//!   mode requires to ask for JSON, still does. `text` is the default anyway.
//! - Client requests: `output_config.format` and the deprecated beta `output_format`
//!   (the same shape; both at once is refused) are read into the canonical format
//!   (`strict` where OpenAI's strict mode takes the schema: [`crate::openai::strict_compatible`]),
//!   `output_config.effort` into the canonical effort, and
//!   `output_config`'s other keys travel in [`crate::Extra`]; an Anthropic upstream gets
//!   them all back as one `output_config`. A `format` whose `type` is not `json_schema`,
//!   or without an object `schema`, is refused naming the field.
//! - Consecutive canonical messages of the same role are merged into one Anthropic turn,
//!   and in a user turn the `tool_result` blocks are moved (stably) before other blocks,
//!   as the API requires. A conversation that starts with an assistant turn is sent as is:
//!   inventing a user turn would change the conversation, so the API decides (it may
//!   answer 400 `invalid_request_error`, which the gateway relays).
//! - Tool-call arguments are JSON text in the hub; Anthropic wants an object in
//!   `tool_use.input`. Text that is not a JSON object (invalid, truncated, empty) becomes
//!   `{}`.
//! - `tool_choice` is only sent when tools are (the API refuses it alone).
//! - Input token counts read from Anthropic include the prompt-cache counts
//!   (`input_tokens + cache_creation_input_tokens + cache_read_input_tokens`), the total
//!   the other formats report as prompt tokens. The two cache counts are kept beside it
//!   and written back to Anthropic-surface clients as Anthropic sent them (with
//!   `input_tokens` the uncached part again).
//! - Prompt caching (<https://platform.claude.com/docs/en/build-with-claude/prompt-caching>):
//!   a `system` array stays an array of text blocks, and `cache_control` on system blocks,
//!   content blocks (`text`, `image`, `tool_use`, `tool_result`) and tool definitions is
//!   kept and written back exactly to an Anthropic upstream.
//! - Extended thinking
//!   (<https://platform.claude.com/docs/en/build-with-claude/extended-thinking>): `thinking`
//!   (with `signature`) and `redacted_thinking` (with `data`) blocks of replies and streams
//!   (`thinking_delta`, `signature_delta`) reach Anthropic-surface clients, and those that
//!   clients send back in assistant turns reach an Anthropic upstream unchanged.
//! - `pause_turn` and unknown stop reasons read as `end_turn`;
//!   `model_context_window_exceeded` as `max_tokens`; `refusal` as content filter (and back).
//! - Documents (<https://platform.claude.com/docs/en/build-with-claude/pdf-support>,
//!   <https://platform.claude.com/docs/en/build-with-claude/citations>): `document` blocks
//!   with every source type (`base64` PDF, `text`, `url`, `content`, `file`) and their
//!   `title`, `context`, `citations` and `cache_control` reach an Anthropic upstream as
//!   given. Sent here from OpenAI, `file_data` becomes a `base64` source (its `filename`
//!   the `title`); an OpenAI `file_id`, and inline data other than a PDF, are refused by
//!   [`check_documents`] (the gateway asks it before choosing this upstream).
//! - Client requests: block types with no canonical counterpart (server tool blocks, images inside `tool_result`)
//!   and server tools (`tools[i].type` other than `custom`) are refused with a clear error
//!   rather than silently lost. Unknown top-level fields (`top_k`, `thinking`,
//!   `service_tier`, other `metadata` keys, ...) travel in [`crate::Extra`] and are
//!   written back only to an Anthropic upstream; `cache_control` on the text blocks inside
//!   a `tool_result` is dropped (their texts are joined).

mod request;
mod response;
mod stream;
#[cfg(test)]
mod tests;

pub use request::{DEFAULT_MAX_TOKENS, check_documents, encode_request, parse_request};
pub use response::{decode_response, encode_response};
pub use stream::{StreamDecoder, StreamEncoder};

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::canonical::{ProviderError, StopReason, Usage};

/// The `anthropic-version` header value the gateway sends upstream.
pub const API_VERSION: &str = "2023-06-01";

/// An Anthropic error body: `{"type":"error","error":{"type":kind,"message":message}}`.
pub fn error_body(kind: &str, message: &str) -> Vec<u8> {
    error_value(kind, message).to_string().into_bytes()
}

/// Reads an Anthropic error body (`{"type":"error","error":{"type","message"}}`).
/// `None` when the body is not one.
pub fn decode_error(body: &[u8]) -> Option<ProviderError> {
    #[derive(Deserialize)]
    struct Body {
        error: WireError,
    }
    let body: Body = serde_json::from_slice(body).ok()?;
    Some(body.error.into())
}

#[derive(Deserialize)]
struct WireError {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl From<WireError> for ProviderError {
    fn from(e: WireError) -> Self {
        ProviderError {
            kind: e.kind.unwrap_or_else(|| "api_error".to_owned()),
            message: e.message.unwrap_or_default(),
        }
    }
}

fn error_value(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// The Anthropic name of a stop reason.
fn stop_reason_name(r: StopReason) -> &'static str {
    match r {
        StopReason::ContentFilter => "refusal",
        StopReason::EndTurn => "end_turn",
        StopReason::MaxTokens => "max_tokens",
        StopReason::StopSequence => "stop_sequence",
        StopReason::ToolUse => "tool_use",
    }
}

/// The canonical stop reason of an Anthropic name (see the module docs for the lossy ones).
fn stop_reason_from(name: &str) -> StopReason {
    match name {
        "max_tokens" | "model_context_window_exceeded" => StopReason::MaxTokens,
        "stop_sequence" => StopReason::StopSequence,
        "tool_use" => StopReason::ToolUse,
        "refusal" => StopReason::ContentFilter,
        _ => StopReason::EndTurn,
    }
}

/// Tool-call arguments (JSON text) as an Anthropic `input` object: `{}` unless the text is
/// a JSON object.
fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(m)) => Value::Object(m),
        _ => Value::Object(Map::new()),
    }
}

/// Anthropic message ids start with `msg_`; others get the prefix.
fn message_id(id: &str) -> String {
    if id.starts_with("msg_") {
        id.to_owned()
    } else {
        format!("msg_{id}")
    }
}

/// Anthropic `usage` as read from responses and stream events.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl WireUsage {
    /// All input tokens, cached or not.
    fn total_input(&self) -> u64 {
        self.input_tokens.unwrap_or(0)
            + self.cache_creation_input_tokens.unwrap_or(0)
            + self.cache_read_input_tokens.unwrap_or(0)
    }

    /// Canonical usage: total input, output, and the cache counts as given.
    fn canonical(&self) -> Usage {
        Usage {
            input_tokens: self.total_input(),
            output_tokens: self.output_tokens.unwrap_or(0),
            cache_creation_input_tokens: self.cache_creation_input_tokens,
            cache_read_input_tokens: self.cache_read_input_tokens,
        }
    }
}

/// Anthropic `usage` fields of canonical usage: `input_tokens` without the cached tokens,
/// and the cache counts when the upstream gave them.
fn usage_fields(u: &Usage) -> Map<String, Value> {
    let cached =
        u.cache_creation_input_tokens.unwrap_or(0) + u.cache_read_input_tokens.unwrap_or(0);
    let mut o = Map::new();
    o.insert(
        "input_tokens".into(),
        json!(u.input_tokens.saturating_sub(cached)),
    );
    if let Some(n) = u.cache_creation_input_tokens {
        o.insert("cache_creation_input_tokens".into(), json!(n));
    }
    if let Some(n) = u.cache_read_input_tokens {
        o.insert("cache_read_input_tokens".into(), json!(n));
    }
    o.insert("output_tokens".into(), json!(u.output_tokens));
    o
}
