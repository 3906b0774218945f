//! Complete (non-streamed) replies: out to clients, in from upstream.

use serde::Deserialize;
use serde_json::{Value, json};

use super::request::thinking_json;
use super::{WireUsage, message_id, stop_reason_from, stop_reason_name, tool_input, usage_fields};
use crate::canonical::{Block, ChatResponse};
use crate::error::DecodeError;

/// Writes a canonical reply as an Anthropic `message` object.
pub fn encode_response(resp: &ChatResponse) -> Vec<u8> {
    let content: Vec<Value> = resp
        .content
        .iter()
        .filter_map(|b| match b {
            Block::Text { text, .. } => Some(json!({"type": "text", "text": text})),
            Block::ToolCall {
                id,
                name,
                arguments,
                ..
            } => Some(json!({
                "type": "tool_use", "id": id, "name": name, "input": tool_input(arguments),
            })),
            Block::Thinking {
                thinking,
                signature,
            } => Some(thinking_json(thinking, signature.as_deref())),
            Block::RedactedThinking { data } => {
                Some(json!({"type": "redacted_thinking", "data": data}))
            }
            // A reply carries no images or tool results.
            Block::Image { .. } | Block::ToolResult { .. } | Block::Document(_) => None,
        })
        .collect();
    json!({
        "id": message_id(&resp.id),
        "type": "message",
        "role": "assistant",
        "model": resp.model,
        "content": content,
        "stop_reason": resp.stop_reason.map(stop_reason_name),
        "stop_sequence": null,
        "usage": usage_fields(&resp.usage),
    })
    .to_string()
    .into_bytes()
}

#[derive(Deserialize)]
struct WireResponse {
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    content: Vec<WireBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
        #[serde(default)]
        signature: Option<String>,
    },
    RedactedThinking {
        data: String,
    },
    /// Server tool blocks and the like: not part of the canonical reply.
    #[serde(other)]
    Other,
}

/// Reads an Anthropic `message` object (the body of a non-streamed reply).
pub fn decode_response(body: &[u8]) -> Result<ChatResponse, DecodeError> {
    let wire: WireResponse =
        serde_json::from_slice(body).map_err(|e| DecodeError::new("Anthropic response", e))?;
    let content = wire
        .content
        .into_iter()
        .filter_map(|b| match b {
            WireBlock::Text { text } => Some(Block::text(text)),
            WireBlock::ToolUse { id, name, input } => Some(Block::ToolCall {
                id,
                name,
                arguments: match input {
                    Value::Null => "{}".to_owned(),
                    v => v.to_string(),
                },
                cache_control: None,
            }),
            WireBlock::Thinking {
                thinking,
                signature,
            } => Some(Block::Thinking {
                thinking,
                signature,
            }),
            WireBlock::RedactedThinking { data } => Some(Block::RedactedThinking { data }),
            WireBlock::Other => None,
        })
        .collect();
    Ok(ChatResponse {
        id: wire.id,
        model: wire.model,
        content,
        stop_reason: wire.stop_reason.as_deref().map(stop_reason_from),
        usage: wire.usage.canonical(),
    })
}
