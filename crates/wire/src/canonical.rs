//! The hub of the hub-and-spoke translation: one provider-neutral shape for a chat
//! request, its response and its stream events.
//!
//! Every wire format (OpenAI, Anthropic, Mistral) converts to and from these types, so
//! N formats need N adapters rather than N×N. The shapes follow the union of what the
//! formats can express:
//!
//! - the system prompt lives outside the messages (Anthropic's model; OpenAI `system` and
//!   `developer` messages are hoisted into it, in order);
//! - a message is a role plus a list of [`Block`]s (text, image, tool call, tool result),
//!   so an OpenAI assistant message with `tool_calls` and an Anthropic `tool_use` block are
//!   the same thing, and an OpenAI `tool` message is a user message with a
//!   [`Block::ToolResult`] (consecutive ones merge, as Anthropic requires);
//! - tool-call arguments are kept as the JSON *text* the model produced, because streams
//!   deliver them as text fragments that are not valid JSON until the end;
//! - Anthropic's prompt-caching markers ([`CacheControl`] on system blocks, content blocks
//!   and tools) and extended-thinking blocks ([`Block::Thinking`],
//!   [`Block::RedactedThinking`]) are carried so that an Anthropic request and reply
//!   survive the hub unchanged; the other formats have no counterpart and leave them out.
//!
//! Fields that only one format knows and that have no counterpart travel in
//! [`ChatRequest::extra`], tagged with the format they came from, and are written back
//! only when the request goes out in that same format.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Which wire format a body was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Anthropic Messages API.
    Anthropic,
    /// Mistral chat completions (OpenAI-like, with its own differences).
    Mistral,
    /// OpenAI Chat Completions (and OpenAI-compatible servers such as vLLM, Ollama).
    OpenAi,
}

/// A chat request in canonical form.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The model name as the client asked for it (a gateway model name, or a provider's).
    pub model: String,
    /// System prompt: one text (OpenAI system messages are joined into it), or Anthropic's
    /// text blocks as given. [`ChatRequest::system_text`] reads it as one string.
    pub system: Option<System>,
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    /// `max_tokens` / `max_completion_tokens`.
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// OpenAI `frequency_penalty` (-2..=2; Mistral takes it too, Anthropic has none).
    pub frequency_penalty: Option<f64>,
    /// OpenAI `presence_penalty` (-2..=2; Mistral takes it too, Anthropic has none).
    pub presence_penalty: Option<f64>,
    /// Stop sequences (`stop` / `stop_sequences`).
    pub stop: Vec<String>,
    pub seed: Option<i64>,
    /// End-user id as the client sent it (OpenAI `user`, Anthropic `metadata.user_id`).
    pub user: Option<String>,
    /// Structured output: what the reply's text must be (OpenAI `response_format`,
    /// Anthropic `output_config.format`).
    pub response_format: Option<ResponseFormat>,
    /// Anthropic `output_config.effort` as given (`low`, `medium`, `high`, `xhigh`,
    /// `max`): how many tokens the model may spend. Written back to Anthropic only (see
    /// the `openai` module docs for why not as OpenAI's `reasoning_effort`).
    pub effort: Option<String>,
    /// OpenAI `parallel_tool_calls` / Anthropic `disable_parallel_tool_use` (negated).
    pub parallel_tool_calls: Option<bool>,
    pub stream: bool,
    /// The client asked for usage in the stream (`stream_options.include_usage`).
    /// Anthropic streams always carry usage, so requests from that surface set it.
    pub include_usage: bool,
    /// Fields of the source format with no canonical counterpart.
    pub extra: Extra,
}

/// Structured output: the shape the reply's text must take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormat {
    /// OpenAI JSON mode: any JSON object. Anthropic has no counterpart (its structured
    /// outputs need a schema), so it is not sent there.
    JsonObject,
    /// JSON that follows a schema (OpenAI `json_schema`, Anthropic `json_schema`).
    JsonSchema(JsonSchemaFormat),
    /// Plain text, said explicitly (OpenAI `{"type": "text"}`), the default anyway.
    Text,
    /// An OpenAI `response_format` of a type the hub does not model (vLLM's
    /// `structural_tag`, ...), kept as given and written only to OpenAI-format and
    /// Mistral upstreams.
    Other(Value),
}

/// A JSON Schema the reply must follow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonSchemaFormat {
    /// OpenAI `json_schema.name`. Anthropic has none; OpenAI-format and Mistral
    /// upstreams get [`crate::openai::SCHEMA_NAME`] when it is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// OpenAI `json_schema.description` (Anthropic has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON Schema, an object.
    pub schema: Value,
    /// OpenAI `json_schema.strict`. Anthropic always holds the reply to the schema, so
    /// requests from its surface say `Some(true)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// Source-format fields kept verbatim, written back only to the same format.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Extra {
    pub format: Option<Format>,
    pub fields: Map<String, Value>,
}

/// A system prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum System {
    /// Anthropic's array of text blocks, each with its own optional `cache_control`;
    /// written back as blocks to Anthropic, joined by a blank line to the other formats.
    Blocks(Vec<SystemBlock>),
    /// One text.
    Text(String),
}

/// One text block of an Anthropic `system` array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemBlock {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<CacheControl>,
}

/// Anthropic's prompt-caching marker (`{"type": "ephemeral", "ttl"?: "5m" | "1h"}`), kept
/// as the client wrote it and written only to Anthropic upstreams (OpenAI and Mistral
/// cache prompts on their own and have no such field).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CacheControl(pub Map<String, Value>);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Assistant,
    User,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Block>,
}

/// One piece of a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    /// An image, from a data URL or base64 block, or a plain URL.
    Image {
        source: ImageSource,
        /// OpenAI `image_url.detail`, written back only to OpenAI-format upstreams
        /// (Anthropic has no counterpart).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<ImageDetail>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<CacheControl>,
    },
    /// A document: Anthropic's `document` block, an OpenAI `file` part. Boxed: rare, and
    /// larger than the other blocks.
    Document(Box<Document>),
    /// Anthropic's redacted extended thinking: `data` is opaque and goes back unchanged.
    RedactedThinking { data: String },
    Text {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<CacheControl>,
    },
    /// Anthropic's extended thinking. In a reply it is shown to Anthropic-surface clients
    /// only; in an assistant turn of a request it goes back, with its `signature`,
    /// unchanged (the API checks the signature) and only to Anthropic upstreams.
    Thinking {
        thinking: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
    },
    /// The model asks for a tool to be called. `arguments` is JSON text.
    ToolCall {
        id: String,
        name: String,
        arguments: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<CacheControl>,
    },
    /// The result of a tool call, sent back by the client.
    ToolResult {
        tool_call_id: String,
        content: String,
        is_error: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<CacheControl>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ImageSource {
    /// Inline bytes, base64 encoded, with their media type (`image/png`).
    Base64 {
        media_type: String,
        data: String,
    },
    Url {
        url: String,
    },
}

/// A document in a user message: Anthropic's `document` block (PDF, plain text, custom
/// content, by URL or Files API id) or an OpenAI `file` part (`file_data`, `file_id`).
///
/// An Anthropic upstream receives every field as given. The other formats receive what
/// has a counterpart there (see each spoke's `check_documents`); what has none is refused
/// before anything is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    pub source: DocumentSource,
    /// Anthropic `title`; OpenAI `file.filename` (each is the other's counterpart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Anthropic `context`: text about the document the model reads (never cited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Anthropic `citations` as given (`{"enabled": true}`); Anthropic upstreams only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub citations: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<CacheControl>,
    /// Where the client wrote it (`messages[2].content[1]`), so that a refusal names the
    /// client's own field (OpenAI system and tool messages do not keep their index in
    /// the hub). Not part of the request's identity: never serialized.
    #[serde(skip)]
    pub at: String,
}

/// Inline documents must be PDFs: the one inline kind every provider's chat API takes
/// (OpenAI's `file_data`, Anthropic's `base64` source), and one the guardrails know they
/// cannot read. Other inline data (a `text/plain` file, say) would reach the provider
/// past blocked terms and PII redaction, so it is refused at the edge: text goes as text.
pub(crate) fn pdf_only(media_type: &str, at: &str) -> Result<(), crate::error::RequestError> {
    if media_type.eq_ignore_ascii_case("application/pdf") {
        return Ok(());
    }
    Err(crate::error::RequestError::new(
        at,
        format!(
            "`{at}` is {media_type:?} data; inline documents must be PDFs (application/pdf): \
             send text as a text part or a text document"
        ),
    ))
}

/// Whether a JSON Schema node describes an object (`type: "object"`, `object` among its
/// types, or `properties` without a type): what OpenAI's strict mode and Anthropic's
/// structured outputs both require to be closed.
pub(crate) fn is_object_schema(o: &Map<String, Value>) -> bool {
    match o.get("type") {
        Some(Value::String(t)) => t == "object",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "object"),
        _ => o.contains_key("properties"),
    }
}

/// Where a document's content comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DocumentSource {
    /// Inline bytes, base64 encoded (Anthropic `base64`, an OpenAI `file_data` data URL),
    /// with their media type (`application/pdf`).
    Base64 { media_type: String, data: String },
    /// Anthropic's custom content: text and image blocks, cited block by block.
    Content { content: Vec<Block> },
    /// A file uploaded to a provider's Files API; an id means something to that
    /// provider only (`owner`: Anthropic `file` source, OpenAI `file_id`).
    File { file_id: String, owner: Format },
    /// Plain text (Anthropic `text` source, `media_type: text/plain`).
    Text { media_type: String, data: String },
    /// A URL the provider fetches (Anthropic `url` source).
    Url { url: String },
}

/// The resolution an image is read at (OpenAI `image_url.detail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageDetail {
    Auto,
    High,
    Low,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    pub parameters: Value,
    /// OpenAI `function.strict` (structured outputs: the arguments follow the schema
    /// exactly), written to OpenAI-format and Mistral upstreams; Anthropic has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
    /// Anthropic `cache_control` on the tool definition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<CacheControl>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "name", rename_all = "snake_case")]
pub enum ToolChoice {
    Auto,
    None,
    /// The model must call some tool (OpenAI `required`, Anthropic `any`).
    Required,
    /// The model must call this tool.
    Tool(String),
}

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    ContentFilter,
    EndTurn,
    MaxTokens,
    StopSequence,
    ToolUse,
}

/// Token usage of one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// All input tokens, cached or not (what OpenAI calls prompt tokens; for Anthropic the
    /// sum of `input_tokens`, `cache_creation_input_tokens` and `cache_read_input_tokens`).
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Anthropic `cache_creation_input_tokens` (part of `input_tokens`), when the upstream
    /// said it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    /// Anthropic `cache_read_input_tokens`, OpenAI `prompt_tokens_details.cached_tokens`
    /// (part of `input_tokens`), when the upstream said it (OpenAI's 0 is `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
}

/// A complete (non-streamed) reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub id: String,
    /// The model that answered, as the provider names it.
    pub model: String,
    /// Text and tool-call blocks, in order.
    pub content: Vec<Block>,
    pub stop_reason: Option<StopReason>,
    pub usage: Usage,
}

/// One event of a streamed reply, in the order a client must see them:
/// `Start`, then deltas, then `Finish`, `Usage` (either order), then `Done`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    /// The upstream ended the stream with an error event.
    Error {
        kind: String,
        message: String,
    },
    /// The stream ended normally (OpenAI `[DONE]`, Anthropic `message_stop`).
    Done,
    Finish {
        stop_reason: StopReason,
    },
    /// A whole `redacted_thinking` block (Anthropic).
    RedactedThinking {
        data: String,
    },
    /// The signature of the thinking block being written; it ends that block.
    SignatureDelta {
        signature: String,
    },
    /// The reply starts. `usage` when the format says it up front (Anthropic).
    Start {
        id: String,
        model: String,
        usage: Option<Usage>,
    },
    TextDelta {
        text: String,
    },
    /// Extended-thinking text (Anthropic); opens a thinking block unless one without a
    /// signature yet is open.
    ThinkingDelta {
        thinking: String,
    },
    /// A fragment of the JSON arguments of tool call number `index`.
    ToolCallDelta {
        index: u32,
        arguments: String,
    },
    /// Tool call number `index` (0-based among this reply's tool calls) begins.
    ToolCallStart {
        index: u32,
        id: String,
        name: String,
    },
    /// Usage so far; the last one seen is the reply's usage.
    Usage(Usage),
}

/// An embeddings request (OpenAI shape; Mistral takes the same).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub input: Vec<String>,
    pub extra: Map<String, Value>,
}

/// An embeddings reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingsResponse {
    pub model: String,
    pub data: Vec<Vec<f32>>,
    pub usage: Usage,
}

/// An error as a provider reported it, read from its error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderError {
    /// The provider's error type (`invalid_request_error`, `overloaded_error`, ...).
    pub kind: String,
    pub message: String,
}

// === impl System ===

impl System {
    /// The prompt as one string: the blocks' texts joined by a blank line.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            System::Text(t) => t.as_str().into(),
            System::Blocks(blocks) => {
                let texts: Vec<&str> = blocks.iter().map(|b| b.text.as_str()).collect();
                texts.join("\n\n").into()
            }
        }
    }

    /// Each text, to rewrite in place (redaction) without touching the blocks around it.
    pub fn texts_mut(&mut self) -> Vec<&mut String> {
        match self {
            System::Text(t) => vec![t],
            System::Blocks(blocks) => blocks.iter_mut().map(|b| &mut b.text).collect(),
        }
    }
}

impl From<String> for System {
    fn from(text: String) -> Self {
        System::Text(text)
    }
}

impl From<&str> for System {
    fn from(text: &str) -> Self {
        System::Text(text.to_owned())
    }
}

// === impl Block ===

impl Block {
    /// A text block without `cache_control`.
    pub fn text(text: impl Into<String>) -> Self {
        Block::Text {
            text: text.into(),
            cache_control: None,
        }
    }
}

// === impl ChatRequest ===

impl ChatRequest {
    /// The system prompt as one string (blocks joined by a blank line), if any.
    pub fn system_text(&self) -> Option<std::borrow::Cow<'_, str>> {
        self.system.as_ref().map(System::text)
    }

    /// Whether a message carries a document (one pass over the blocks, no allocation):
    /// requests without any skip every document check.
    pub fn has_documents(&self) -> bool {
        self.documents().next().is_some()
    }

    /// The refusal of the first document `why` finds no place for in a target's format
    /// (what each spoke's `check_documents` says): a 400 naming the client's own field,
    /// `` `messages[1].content[0].file.file_id` names a file in ...``.
    pub(crate) fn refuse_documents(
        &self,
        why: impl Fn(&DocumentSource) -> Option<&'static str>,
    ) -> Result<(), crate::error::RequestError> {
        match self
            .documents()
            .find_map(|d| why(&d.source).map(|w| (d, w)))
        {
            Some((d, why)) => Err(crate::error::RequestError::new(
                &d.at,
                format!("`{}` {why}", d.at),
            )),
            None => Ok(()),
        }
    }

    /// The documents of the request, in order.
    pub fn documents(&self) -> impl Iterator<Item = &Document> {
        self.messages
            .iter()
            .flat_map(|m| &m.content)
            .filter_map(|b| match b {
                Block::Document(d) => Some(&**d),
                _ => None,
            })
    }

    /// The text of the last user message (text blocks joined), if any.
    pub fn last_user_text(&self) -> Option<String> {
        let msg = self.messages.iter().rev().find(|m| m.role == Role::User)?;
        let texts: Vec<&str> = msg
            .content
            .iter()
            .filter_map(|b| match b {
                Block::Text { text, .. } => Some(text.as_str()),
                Block::ToolResult { content, .. } => Some(content.as_str()),
                Block::Document(d) => match &d.source {
                    DocumentSource::Text { data, .. } => Some(data.as_str()),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        Some(texts.join("\n"))
    }
}

// === impl ChatResponse ===

impl ChatResponse {
    /// All text blocks joined (thinking left out).
    pub fn text(&self) -> String {
        self.content
            .iter()
            .filter_map(|b| match b {
                Block::Text { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }
}
