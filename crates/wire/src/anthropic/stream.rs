//! Streams: canonical events out as Anthropic SSE ([`StreamEncoder`]), Anthropic SSE in as
//! canonical events ([`StreamDecoder`]).
//!
//! The wire sequence is `message_start`, then per content block `content_block_start`,
//! `content_block_delta`s and `content_block_stop`, then `message_delta` (stop reason and
//! cumulative usage) and `message_stop`; `ping` and `error` may come anywhere. Thinking
//! blocks stream as `content_block_start` (`thinking`), `thinking_delta`s, one
//! `signature_delta`; a `redacted_thinking` block comes whole in its `content_block_start`.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    WireError, WireUsage, error_value, message_id, stop_reason_from, stop_reason_name, usage_fields,
};
use crate::canonical::{StopReason, StreamEvent, Usage};
use crate::error::DecodeError;
use crate::sse::{SseEvent, write_json_event};

/// Id of the `message_start` the encoder writes when a stream begins without `Start`.
const FALLBACK_ID: &str = "msg_gateway";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Opaque,
    Text,
    /// A thinking block; `signed` once its signature is written (it then takes no more).
    Thinking {
        signed: bool,
    },
    Tool,
}

/// Writes canonical stream events as Anthropic server-sent events for a client.
///
/// Blocks are numbered in order; a text delta opens a text block unless one is open, a
/// tool call start closes whatever is open and opens a `tool_use` block; a thinking delta
/// opens a thinking block unless an unsigned one is open, and a signature ends it; a
/// redacted thinking block is written whole. `Finish` and
/// `Usage` are remembered and written in the `message_delta` that `Done` emits, because
/// their order varies by upstream.
#[derive(Debug, Default)]
pub struct StreamEncoder {
    started: bool,
    finished: bool,
    next_index: u32,
    open: Option<(u32, BlockKind)>,
    /// Canonical tool-call index → content block index.
    tool_blocks: HashMap<u32, u32>,
    /// The usage of `Start`, the fallback for a stream without `Usage`.
    start_usage: Usage,
    stop_reason: Option<StopReason>,
    usage: Option<Usage>,
}

impl StreamEncoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the SSE bytes for `ev` (possibly none) to `out`.
    pub fn encode(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        match ev {
            StreamEvent::Start { id, model, usage } => {
                if !self.started {
                    self.start(id, model, usage.unwrap_or_default(), out);
                }
            }
            StreamEvent::TextDelta { text } => {
                if text.is_empty() {
                    return;
                }
                self.ensure_started(out);
                let index = match self.open {
                    Some((i, BlockKind::Text)) => i,
                    _ => self.open_block(BlockKind::Text, json!({"type": "text", "text": ""}), out),
                };
                let delta = json!({"type": "text_delta", "text": text});
                emit_delta(index, delta, out);
            }
            StreamEvent::ThinkingDelta { thinking } => {
                if thinking.is_empty() {
                    return;
                }
                self.ensure_started(out);
                let index = self.thinking_block(out);
                let delta = json!({"type": "thinking_delta", "thinking": thinking});
                emit_delta(index, delta, out);
            }
            StreamEvent::SignatureDelta { signature } => {
                self.ensure_started(out);
                let index = self.thinking_block(out);
                self.open = Some((index, BlockKind::Thinking { signed: true }));
                let delta = json!({"type": "signature_delta", "signature": signature});
                emit_delta(index, delta, out);
            }
            StreamEvent::RedactedThinking { data } => {
                self.ensure_started(out);
                let block = json!({"type": "redacted_thinking", "data": data});
                self.open_block(BlockKind::Opaque, block, out);
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.ensure_started(out);
                let block = json!({"type": "tool_use", "id": id, "name": name, "input": {}});
                let block_index = self.open_block(BlockKind::Tool, block, out);
                self.tool_blocks.insert(*index, block_index);
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                if arguments.is_empty() {
                    return;
                }
                // A delta for a tool never started has no block to go to.
                if let Some(&block_index) = self.tool_blocks.get(index) {
                    let delta = json!({"type": "input_json_delta", "partial_json": arguments});
                    emit_delta(block_index, delta, out);
                }
            }
            StreamEvent::Finish { stop_reason } => self.stop_reason = Some(*stop_reason),
            StreamEvent::Usage(u) => self.usage = Some(*u),
            StreamEvent::Done => self.done(out),
            StreamEvent::Error { kind, message } => self.encode_error(kind, message, out),
        }
    }

    /// Appends an `error` event (for errors the gateway raises mid-stream) and ends the
    /// stream: later events are ignored.
    pub fn encode_error(&mut self, kind: &str, message: &str, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.finished = true;
        write_json_event(out, Some("error"), &error_value(kind, message));
    }

    fn start(&mut self, id: &str, model: &str, usage: Usage, out: &mut Vec<u8>) {
        self.started = true;
        self.start_usage = usage;
        let data = json!({
            "type": "message_start",
            "message": {
                "id": message_id(id),
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": usage_fields(&self.start_usage),
            },
        });
        write_json_event(out, Some("message_start"), &data);
        write_json_event(out, Some("ping"), &json!({"type": "ping"}));
    }

    fn ensure_started(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.start(FALLBACK_ID, "", Usage::default(), out);
        }
    }

    /// The index of the open unsigned thinking block, opening one if needed.
    fn thinking_block(&mut self, out: &mut Vec<u8>) -> u32 {
        match self.open {
            Some((i, BlockKind::Thinking { signed: false })) => i,
            _ => {
                let block = json!({"type": "thinking", "thinking": "", "signature": ""});
                self.open_block(BlockKind::Thinking { signed: false }, block, out)
            }
        }
    }

    /// Closes the open block and opens a new one; returns its index.
    fn open_block(&mut self, kind: BlockKind, block: Value, out: &mut Vec<u8>) -> u32 {
        self.close_block(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((index, kind));
        let data = json!({"type": "content_block_start", "index": index, "content_block": block});
        write_json_event(out, Some("content_block_start"), &data);
        index
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some((index, _)) = self.open.take() {
            let data = json!({"type": "content_block_stop", "index": index});
            write_json_event(out, Some("content_block_stop"), &data);
        }
    }

    fn done(&mut self, out: &mut Vec<u8>) {
        self.ensure_started(out);
        self.close_block(out);
        let usage = self.usage.unwrap_or(self.start_usage);
        let stop = stop_reason_name(self.stop_reason.unwrap_or(StopReason::EndTurn));
        let data = json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": null},
            "usage": usage_fields(&usage),
        });
        write_json_event(out, Some("message_delta"), &data);
        write_json_event(out, Some("message_stop"), &json!({"type": "message_stop"}));
        self.finished = true;
    }
}

fn emit_delta(index: u32, delta: Value, out: &mut Vec<u8>) {
    let data = json!({"type": "content_block_delta", "index": index, "delta": delta});
    write_json_event(out, Some("content_block_delta"), &data);
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireEvent {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: u32,
        content_block: WireBlock,
    },
    ContentBlockDelta {
        index: u32,
        delta: WireDelta,
    },
    MessageDelta {
        #[serde(default)]
        delta: MessageDelta,
        #[serde(default)]
        usage: WireUsage,
    },
    MessageStop,
    Error {
        error: WireError,
    },
    /// `ping`, `content_block_stop` and event types added later.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct StartMessage {
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlock {
    Text {
        #[serde(default)]
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
    /// Server tool blocks, ...: ignored.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    ThinkingDelta {
        thinking: String,
    },
    SignatureDelta {
        signature: String,
    },
    /// `citations_delta`, ...: ignored.
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default)]
struct MessageDelta {
    #[serde(default)]
    stop_reason: Option<String>,
}

/// Reads an Anthropic upstream's server-sent events as canonical stream events.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    /// The usage of `message_start`, the fallback for fields `message_delta` omits.
    start_usage: WireUsage,
    /// Content block index → tool-call ordinal among this reply's `tool_use` blocks.
    tools: HashMap<u32, u32>,
    next_tool: u32,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the canonical events of one SSE event (possibly none) to `out`.
    pub fn decode(&mut self, ev: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        let wire: WireEvent = serde_json::from_str(&ev.data)
            .map_err(|e| DecodeError::new("Anthropic stream event", e))?;
        match wire {
            WireEvent::MessageStart { message } => {
                self.start_usage = message.usage;
                let usage = message.usage.canonical();
                out.push(StreamEvent::Start {
                    id: message.id,
                    model: message.model,
                    usage: Some(usage),
                });
                out.push(StreamEvent::Usage(usage));
            }
            WireEvent::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                WireBlock::Text { text } if !text.is_empty() => {
                    out.push(StreamEvent::TextDelta { text });
                }
                WireBlock::ToolUse { id, name, input } => {
                    let ordinal = self.next_tool;
                    self.next_tool += 1;
                    self.tools.insert(index, ordinal);
                    out.push(StreamEvent::ToolCallStart {
                        index: ordinal,
                        id,
                        name,
                    });
                    // The input is `{}` in practice; anything else is the start of it.
                    if input.as_object().is_some_and(|o| !o.is_empty()) {
                        out.push(StreamEvent::ToolCallDelta {
                            index: ordinal,
                            arguments: input.to_string(),
                        });
                    }
                }
                WireBlock::Thinking {
                    thinking,
                    signature,
                } => {
                    if !thinking.is_empty() {
                        out.push(StreamEvent::ThinkingDelta { thinking });
                    }
                    if let Some(signature) = signature.filter(|s| !s.is_empty()) {
                        out.push(StreamEvent::SignatureDelta { signature });
                    }
                }
                WireBlock::RedactedThinking { data } => {
                    out.push(StreamEvent::RedactedThinking { data });
                }
                WireBlock::Text { .. } | WireBlock::Other => {}
            },
            WireEvent::ContentBlockDelta { index, delta } => match delta {
                WireDelta::TextDelta { text } if !text.is_empty() => {
                    out.push(StreamEvent::TextDelta { text });
                }
                WireDelta::InputJsonDelta { partial_json } if !partial_json.is_empty() => {
                    // Input of a block that is not a client tool (server tools): ignored.
                    if let Some(&ordinal) = self.tools.get(&index) {
                        out.push(StreamEvent::ToolCallDelta {
                            index: ordinal,
                            arguments: partial_json,
                        });
                    }
                }
                WireDelta::ThinkingDelta { thinking } if !thinking.is_empty() => {
                    out.push(StreamEvent::ThinkingDelta { thinking });
                }
                WireDelta::SignatureDelta { signature } => {
                    out.push(StreamEvent::SignatureDelta { signature });
                }
                _ => {}
            },
            WireEvent::MessageDelta { delta, usage } => {
                if let Some(reason) = delta.stop_reason.as_deref() {
                    out.push(StreamEvent::Finish {
                        stop_reason: stop_reason_from(reason),
                    });
                }
                let start = self.start_usage;
                let merged = WireUsage {
                    input_tokens: usage.input_tokens.or(start.input_tokens),
                    cache_creation_input_tokens: usage
                        .cache_creation_input_tokens
                        .or(start.cache_creation_input_tokens),
                    cache_read_input_tokens: usage
                        .cache_read_input_tokens
                        .or(start.cache_read_input_tokens),
                    output_tokens: usage.output_tokens.or(start.output_tokens),
                };
                out.push(StreamEvent::Usage(merged.canonical()));
            }
            WireEvent::MessageStop => out.push(StreamEvent::Done),
            WireEvent::Error { error } => {
                let e: crate::canonical::ProviderError = error.into();
                out.push(StreamEvent::Error {
                    kind: e.kind,
                    message: e.message,
                });
            }
            WireEvent::Other => {}
        }
        Ok(())
    }
}
