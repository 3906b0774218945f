//! `chat.completion.chunk` streams: [`StreamEncoder`] for clients, [`StreamDecoder`] for
//! upstreams. See <https://platform.openai.com/docs/api-reference/chat-streaming/streaming>.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    ContentText, UsageIn, error_json, finish_reason, provider_error, stop_reason, usage_json,
};
use crate::canonical::{StreamEvent, Usage};
use crate::error::DecodeError;
use crate::sse::{SseEvent, write_event, write_json_event};

#[derive(Serialize)]
struct ChunkOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    /// One choice, or none in the usage chunk (borrowed: no allocation per chunk).
    choices: &'a [ChunkChoiceOut<'a>],
    /// Absent without `include_usage`; `null` on ordinary chunks with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Value>>,
}

#[derive(Serialize)]
struct ChunkChoiceOut<'a> {
    index: u32,
    delta: DeltaOut<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct DeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDeltaOut<'a>; 1]>,
}

#[derive(Serialize)]
struct ToolCallDeltaOut<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDeltaOut<'a>,
}

#[derive(Serialize)]
struct FunctionDeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

/// Writes canonical stream events as `chat.completion.chunk` server-sent events.
#[derive(Debug)]
pub struct StreamEncoder {
    include_usage: bool,
    created: u64,
    id: String,
    model: String,
    usage: Option<Usage>,
}

impl StreamEncoder {
    pub fn new(include_usage: bool, created: u64) -> Self {
        Self {
            include_usage,
            created,
            id: String::new(),
            model: String::new(),
            usage: None,
        }
    }

    fn chunk(&self, delta: DeltaOut<'_>, finish: Option<&'static str>, out: &mut Vec<u8>) {
        let choice = [ChunkChoiceOut {
            index: 0,
            delta,
            logprobs: None,
            finish_reason: finish,
        }];
        let chunk = ChunkOut {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: &choice,
            usage: self.include_usage.then_some(None),
        };
        write_json_event(out, None, &chunk);
    }

    /// Appends the SSE frames of one event to `out`.
    pub fn encode(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) {
        match ev {
            StreamEvent::Start { id, model, .. } => {
                self.id.clone_from(id);
                self.model.clone_from(model);
                let delta = DeltaOut {
                    role: Some("assistant"),
                    content: Some(""),
                    tool_calls: None,
                };
                self.chunk(delta, None, out);
            }
            StreamEvent::TextDelta { text } => {
                let delta = DeltaOut {
                    content: Some(text),
                    ..DeltaOut::default()
                };
                self.chunk(delta, None, out);
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                let call = ToolCallDeltaOut {
                    index: *index,
                    id: Some(id),
                    kind: Some("function"),
                    function: FunctionDeltaOut {
                        name: Some(name),
                        arguments: "",
                    },
                };
                let delta = DeltaOut {
                    tool_calls: Some([call]),
                    ..DeltaOut::default()
                };
                self.chunk(delta, None, out);
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                let call = ToolCallDeltaOut {
                    index: *index,
                    id: None,
                    kind: None,
                    function: FunctionDeltaOut {
                        name: None,
                        arguments,
                    },
                };
                let delta = DeltaOut {
                    tool_calls: Some([call]),
                    ..DeltaOut::default()
                };
                self.chunk(delta, None, out);
            }
            StreamEvent::Finish { stop_reason } => {
                self.chunk(
                    DeltaOut::default(),
                    Some(finish_reason(Some(*stop_reason))),
                    out,
                );
            }
            StreamEvent::Usage(u) => self.usage = Some(*u),
            // Chat Completions has no thinking blocks: left out, as Anthropic's own
            // clients are the only ones who can read them back.
            StreamEvent::ThinkingDelta { .. }
            | StreamEvent::SignatureDelta { .. }
            | StreamEvent::RedactedThinking { .. } => {}
            StreamEvent::Done => {
                if self.include_usage {
                    let chunk = ChunkOut {
                        id: &self.id,
                        object: "chat.completion.chunk",
                        created: self.created,
                        model: &self.model,
                        choices: &[],
                        usage: Some(Some(usage_json(&self.usage.unwrap_or_default()))),
                    };
                    write_json_event(out, None, &chunk);
                }
                write_event(out, None, "[DONE]");
            }
            StreamEvent::Error { kind, message } => {
                let body = error_json(kind, None, message, None);
                write_json_event(out, None, &body);
            }
        }
    }

    /// A gateway-originated error in the middle of a stream (type `server_error`).
    pub fn encode_error(&mut self, code: &str, message: &str, out: &mut Vec<u8>) {
        let body = error_json("server_error", Some(code), message, None);
        write_json_event(out, None, &body);
    }
}

// ================================================================================
// Streams: upstream side
// ================================================================================

#[derive(Deserialize)]
struct ChunkIn {
    id: Option<String>,
    model: Option<String>,
    object: Option<String>,
    choices: Option<Vec<ChunkChoiceIn>>,
    usage: Option<UsageIn>,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct ChunkChoiceIn {
    index: Option<u32>,
    delta: Option<DeltaIn>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct DeltaIn {
    content: Option<ContentText>,
    tool_calls: Option<Vec<ToolCallDeltaIn>>,
}

#[derive(Deserialize)]
struct ToolCallDeltaIn {
    index: Option<u32>,
    id: Option<String>,
    function: Option<FunctionDeltaIn>,
}

#[derive(Deserialize)]
struct FunctionDeltaIn {
    name: Option<String>,
    arguments: Option<Value>,
}

/// One tool call of the reply: where the upstream put it and which canonical index it got.
#[derive(Debug)]
struct Slot {
    upstream: Option<u32>,
    id: String,
}

/// Reads OpenAI (and OpenAI-compatible) `chat.completion.chunk` events into canonical ones.
///
/// Tool calls get canonical indexes in the order they start. A call starts when a delta
/// brings an id not seen at that upstream index (servers that repeat the id on every
/// delta are tolerated) or when an unknown index shows up.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    started: bool,
    /// Canonical index = position.
    calls: Vec<Slot>,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads one SSE event, appending the canonical events it means to `out`.
    pub fn decode(&mut self, ev: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        let data = ev.data.trim();
        if data.is_empty() {
            return Ok(());
        }
        if data == "[DONE]" {
            out.push(StreamEvent::Done);
            return Ok(());
        }
        let chunk: ChunkIn =
            serde_json::from_str(data).map_err(|e| DecodeError::new("stream chunk", e))?;
        let error = match (&chunk.error, chunk.object.as_deref()) {
            (Some(e), _) if !e.is_null() => provider_error(&json!({"error": e})),
            (_, Some("error")) => serde_json::from_str::<Value>(data)
                .ok()
                .and_then(|v| provider_error(&v)),
            _ => None,
        };
        if let Some(e) = error {
            out.push(StreamEvent::Error {
                kind: e.kind,
                message: e.message,
            });
            return Ok(());
        }
        let no_choices = chunk.choices.as_ref().is_none_or(Vec::is_empty);
        if !self.started
            && no_choices
            && chunk.usage.is_none()
            && chunk.id.as_deref().is_none_or(str::is_empty)
        {
            // Azure OpenAI opens with an id-less `prompt_filter_results` chunk.
            return Ok(());
        }
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: chunk.id.clone().unwrap_or_default(),
                model: chunk.model.clone().unwrap_or_default(),
                usage: None,
            });
        }
        for choice in chunk.choices.into_iter().flatten() {
            if choice.index.unwrap_or(0) != 0 {
                continue;
            }
            if let Some(delta) = choice.delta {
                let text = delta.content.map(|c| c.0).unwrap_or_default();
                if !text.is_empty() {
                    out.push(StreamEvent::TextDelta { text });
                }
                for tc in delta.tool_calls.iter().flatten() {
                    self.tool_call(tc, out);
                }
            }
            if let Some(reason) = &choice.finish_reason {
                out.push(StreamEvent::Finish {
                    stop_reason: stop_reason(reason),
                });
            }
        }
        if let Some(u) = &chunk.usage {
            out.push(StreamEvent::Usage(u.canonical()));
        }
        Ok(())
    }

    fn tool_call(&mut self, tc: &ToolCallDeltaIn, out: &mut Vec<StreamEvent>) {
        let id = tc.id.as_deref().filter(|s| !s.is_empty());
        let name = tc.function.as_ref().and_then(|f| f.name.as_deref());
        let args = tc.function.as_ref().and_then(|f| f.arguments.clone());
        let args = match args {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s,
            Some(other) => other.to_string(),
        };
        // The call this delta continues, if any: the latest one at the same upstream index
        // (or the latest one at all when the upstream gives no index).
        let current = match tc.index {
            Some(up) => self.calls.iter().rposition(|s| s.upstream == Some(up)),
            None => self.calls.len().checked_sub(1),
        };
        let continues = match (current, id) {
            (Some(i), Some(id)) => self.calls.get(i).is_some_and(|s| s.id == id),
            (Some(_), None) => true,
            (None, _) => false,
        };
        let index = match current {
            Some(i) if continues => i,
            _ => {
                let i = self.calls.len();
                let id = id.map_or_else(|| format!("call_{i}"), str::to_owned);
                self.calls.push(Slot {
                    upstream: tc.index,
                    id: id.clone(),
                });
                out.push(StreamEvent::ToolCallStart {
                    index: to_u32(i),
                    id,
                    name: name.unwrap_or_default().to_owned(),
                });
                i
            }
        };
        if !args.is_empty() {
            out.push(StreamEvent::ToolCallDelta {
                index: to_u32(index),
                arguments: args,
            });
        }
    }
}

fn to_u32(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}
