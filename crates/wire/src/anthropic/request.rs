//! Client requests in (`parse_request`) and upstream requests out (`encode_request`).

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::tool_input;
use crate::canonical::{
    Block, CacheControl, ChatRequest, Document, DocumentSource, Extra, Format, ImageSource,
    JsonSchemaFormat, Message, ResponseFormat, Role, System, SystemBlock, Tool, ToolChoice,
};
use crate::error::RequestError;

/// `max_tokens` sent upstream when the canonical request has none (Anthropic requires it).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// The largest `max_tokens` a client may ask for.
const MAX_TOKENS_LIMIT: i64 = 1_000_000;

/// Top-level fields with a canonical counterpart; everything else travels in `extra`.
const KNOWN: &[&str] = &[
    "max_tokens",
    "messages",
    "metadata",
    "model",
    "output_config",
    "output_format",
    "stop_sequences",
    "stream",
    "system",
    "temperature",
    "tool_choice",
    "tools",
    "top_p",
];

#[derive(Deserialize)]
struct WireRequest {
    model: Option<String>,
    messages: Option<Vec<WireMessage>>,
    system: Option<Value>,
    max_tokens: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    stop_sequences: Option<Vec<String>>,
    stream: Option<bool>,
    tools: Option<Vec<WireTool>>,
    tool_choice: Option<WireToolChoice>,
    metadata: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct WireMessage {
    role: String,
    content: Value,
}

#[derive(Deserialize)]
struct WireTool {
    #[serde(rename = "type")]
    kind: Option<String>,
    name: String,
    description: Option<String>,
    input_schema: Option<Value>,
    cache_control: Option<CacheControl>,
}

#[derive(Deserialize)]
struct WireToolChoice {
    #[serde(rename = "type")]
    kind: String,
    name: Option<String>,
    disable_parallel_tool_use: Option<bool>,
}

#[derive(Deserialize)]
struct TextBlock {
    text: String,
    cache_control: Option<CacheControl>,
}

#[derive(Deserialize)]
struct ImageBlock {
    source: WireImageSource,
    cache_control: Option<CacheControl>,
}

#[derive(Deserialize)]
struct DocumentBlock {
    source: Value,
    title: Option<String>,
    context: Option<String>,
    citations: Option<Map<String, Value>>,
    cache_control: Option<CacheControl>,
}

#[derive(Deserialize)]
struct WireDocumentSource {
    #[serde(rename = "type")]
    kind: String,
    media_type: Option<String>,
    data: Option<String>,
    url: Option<String>,
    content: Option<Value>,
    file_id: Option<String>,
}

#[derive(Deserialize)]
struct ThinkingBlock {
    thinking: String,
    signature: Option<String>,
}

#[derive(Deserialize)]
struct RedactedThinkingBlock {
    data: String,
}

#[derive(Deserialize)]
struct WireImageSource {
    #[serde(rename = "type")]
    kind: String,
    media_type: Option<String>,
    data: Option<String>,
    url: Option<String>,
}

#[derive(Deserialize)]
struct ToolUseBlock {
    id: String,
    name: String,
    input: Value,
    cache_control: Option<CacheControl>,
}

#[derive(Deserialize)]
struct ToolResultBlock {
    tool_use_id: String,
    content: Option<Value>,
    is_error: Option<bool>,
    cache_control: Option<CacheControl>,
}

/// Parses a client's `/v1/messages` body into a canonical request.
pub fn parse_request(body: &[u8]) -> Result<ChatRequest, RequestError> {
    let text = std::str::from_utf8(body).map_err(|e| RequestError {
        param: None,
        message: format!("the body is not valid UTF-8: {e}"),
    })?;
    let value: Value = serde_json::from_str(text).map_err(|e| RequestError {
        param: None,
        message: format!("the body is not valid JSON: {e}"),
    })?;
    let Value::Object(fields) = &value else {
        return Err(RequestError {
            param: None,
            message: "the body must be a JSON object".to_owned(),
        });
    };
    // Path tracking only to name the field of a body that fails (see `typed`).
    let wire = match WireRequest::deserialize(&value) {
        Ok(w) => w,
        Err(_) => serde_path_to_error::deserialize(&value).map_err(RequestError::from_path)?,
    };

    let model = match wire.model {
        Some(m) if !m.is_empty() => m,
        _ => {
            return Err(RequestError::new(
                "model",
                "`model` is required and must not be empty",
            ));
        }
    };
    let wire_messages = match wire.messages {
        Some(m) if !m.is_empty() => m,
        _ => {
            return Err(RequestError::new(
                "messages",
                "`messages` is required and must contain at least one message",
            ));
        }
    };
    let max_tokens = match wire.max_tokens {
        None => {
            return Err(RequestError::new(
                "max_tokens",
                "`max_tokens` is required by the Anthropic Messages API",
            ));
        }
        Some(n) if !(1..=MAX_TOKENS_LIMIT).contains(&n) => {
            return Err(RequestError::new(
                "max_tokens",
                format!("`max_tokens` must be between 1 and {MAX_TOKENS_LIMIT}, got {n}"),
            ));
        }
        Some(n) => u32::try_from(n).unwrap_or(u32::MAX),
    };
    check_unit("temperature", wire.temperature)?;
    check_unit("top_p", wire.top_p)?;

    let system = match &wire.system {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_system(v)?).filter(|s| !s.text().is_empty()),
    };

    let mut messages = Vec::with_capacity(wire_messages.len());
    for (i, m) in wire_messages.iter().enumerate() {
        let role = match m.role.as_str() {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(RequestError::new(
                    format!("messages[{i}].role"),
                    format!(
                        "`messages[{i}].role` must be \"user\" or \"assistant\", got {other:?} \
                         (the system prompt goes in the top-level `system` field)"
                    ),
                ));
            }
        };
        let content = parse_content(&m.content, &format!("messages[{i}].content"))?;
        messages.push(Message { role, content });
    }

    let mut tools = Vec::new();
    for (i, t) in wire.tools.unwrap_or_default().into_iter().enumerate() {
        if let Some(kind) = t.kind.as_deref()
            && kind != "custom"
        {
            return Err(RequestError::new(
                format!("tools[{i}].type"),
                format!(
                    "`tools[{i}].type` is {kind:?}: Anthropic server tools are not supported \
                     through this gateway; define a custom tool with `input_schema` instead"
                ),
            ));
        }
        let Some(parameters) = t.input_schema else {
            return Err(RequestError::new(
                format!("tools[{i}].input_schema"),
                format!("`tools[{i}].input_schema` is required"),
            ));
        };
        tools.push(Tool {
            name: t.name,
            description: t.description,
            parameters,
            strict: None,
            cache_control: t.cache_control,
        });
    }

    let (tool_choice, parallel_tool_calls) = match wire.tool_choice {
        None => (None, None),
        Some(tc) => {
            let choice = match tc.kind.as_str() {
                "auto" => ToolChoice::Auto,
                "any" => ToolChoice::Required,
                "none" => ToolChoice::None,
                "tool" => match tc.name {
                    Some(n) if !n.is_empty() => ToolChoice::Tool(n),
                    _ => {
                        return Err(RequestError::new(
                            "tool_choice.name",
                            "`tool_choice.name` is required when `tool_choice.type` is \"tool\"",
                        ));
                    }
                },
                other => {
                    return Err(RequestError::new(
                        "tool_choice.type",
                        format!(
                            "`tool_choice.type` must be one of \"auto\", \"any\", \"tool\", \
                             \"none\", got {other:?}"
                        ),
                    ));
                }
            };
            (Some(choice), tc.disable_parallel_tool_use.map(|d| !d))
        }
    };

    let mut extra = Map::new();
    for (k, v) in fields {
        if !KNOWN.contains(&k.as_str()) {
            extra.insert(k.clone(), v.clone());
        }
    }
    let (response_format, effort) = parse_output(fields, &mut extra)?;
    let mut user = None;
    if let Some(mut meta) = wire.metadata {
        match meta.remove("user_id") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => user = Some(s),
            Some(_) => {
                return Err(RequestError::new(
                    "metadata.user_id",
                    "`metadata.user_id` must be a string",
                ));
            }
        }
        if !meta.is_empty() {
            extra.insert("metadata".to_owned(), Value::Object(meta));
        }
    }

    Ok(ChatRequest {
        model,
        system,
        messages,
        tools,
        tool_choice,
        max_tokens: Some(max_tokens),
        temperature: wire.temperature,
        top_p: wire.top_p,
        frequency_penalty: None,
        presence_penalty: None,
        stop: wire.stop_sequences.unwrap_or_default(),
        seed: None,
        user,
        response_format,
        effort,
        parallel_tool_calls,
        stream: wire.stream.unwrap_or(false),
        include_usage: true,
        extra: Extra {
            format: Some(Format::Anthropic),
            fields: extra,
        },
    })
}

/// `output_config` (its `format` and `effort` into the canonical request, its other
/// keys into `extra` for Anthropic upstreams) and `output_format`, the deprecated beta
/// name of `output_config.format`.
fn parse_output(
    fields: &Map<String, Value>,
    extra: &mut Map<String, Value>,
) -> Result<(Option<ResponseFormat>, Option<String>), RequestError> {
    let mut format = None;
    let mut effort = None;
    match fields.get("output_config") {
        None | Some(Value::Null) => {}
        Some(Value::Object(config)) => {
            let mut rest = Map::new();
            for (k, v) in config {
                match (k.as_str(), v) {
                    ("format", v) => format = parse_output_format(v, "output_config.format")?,
                    ("effort", Value::Null) => {}
                    ("effort", Value::String(e)) => effort = Some(e.clone()),
                    ("effort", _) => {
                        return Err(RequestError::new(
                            "output_config.effort",
                            "`output_config.effort` must be a string: low, medium, high, \
                             xhigh or max",
                        ));
                    }
                    _ => {
                        rest.insert(k.clone(), v.clone());
                    }
                }
            }
            if !rest.is_empty() {
                extra.insert("output_config".to_owned(), Value::Object(rest));
            }
        }
        Some(_) => {
            return Err(RequestError::new(
                "output_config",
                "`output_config` must be an object",
            ));
        }
    }
    match fields.get("output_format") {
        None | Some(Value::Null) => {}
        Some(_) if format.is_some() => {
            return Err(RequestError::new(
                "output_format",
                "`output_format` and `output_config.format` are both given: send only \
                 `output_config.format` (`output_format` is its deprecated beta name)",
            ));
        }
        Some(v) => format = parse_output_format(v, "output_format")?,
    }
    Ok((format, effort))
}

/// A structured-output format at `at`: `{"type": "json_schema", "schema": {...}}`, or
/// `null` for none.
fn parse_output_format(v: &Value, at: &str) -> Result<Option<ResponseFormat>, RequestError> {
    let o = match v {
        Value::Null => return Ok(None),
        Value::Object(o) => o,
        _ => {
            return Err(RequestError::new(
                at,
                format!(
                    "`{at}` must be an object: {{\"type\": \"json_schema\", \"schema\": {{...}}}}"
                ),
            ));
        }
    };
    match o.get("type") {
        Some(Value::String(t)) if t == "json_schema" => {}
        Some(Value::String(t)) => return Err(unknown_type(at, t, "json_schema")),
        _ => {
            return Err(RequestError::new(
                format!("{at}.type"),
                format!("`{at}.type` is required and must be \"json_schema\""),
            ));
        }
    }
    match o.get("schema") {
        Some(schema @ Value::Object(_)) => Ok(Some(ResponseFormat::JsonSchema(JsonSchemaFormat {
            name: None,
            description: None,
            schema: schema.clone(),
            strict: Some(crate::openai::strict_compatible(schema)),
        }))),
        _ => Err(RequestError::new(
            format!("{at}.schema"),
            format!("`{at}.schema` is required and must be a JSON Schema object"),
        )),
    }
}

fn check_unit(param: &str, v: Option<f64>) -> Result<(), RequestError> {
    match v {
        Some(x) if !(0.0..=1.0).contains(&x) => Err(RequestError::new(
            param,
            format!("`{param}` must be between 0 and 1, got {x}"),
        )),
        _ => Ok(()),
    }
}

/// Deserializes `v` (found at `at`) with errors naming the full path of the field.
/// A value that deserializes is read once, without tracking; one that fails is read
/// again with path tracking to name the field.
fn typed<T: DeserializeOwned>(v: &Value, at: &str) -> Result<T, RequestError> {
    if let Ok(t) = T::deserialize(v) {
        return Ok(t);
    }
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let param = if path == "." || path.is_empty() {
            at.to_owned()
        } else if path.starts_with('[') {
            format!("{at}{path}")
        } else {
            format!("{at}.{path}")
        };
        RequestError {
            message: format!("invalid value for `{param}`: {inner}"),
            param: Some(param),
        }
    })
}

/// The `type` of a block at `at`, required to be a string.
fn block_type<'a>(v: &'a Value, at: &str) -> Result<&'a str, RequestError> {
    match v.get("type") {
        Some(Value::String(s)) => Ok(s),
        _ if !v.is_object() => Err(RequestError::new(
            at,
            format!("`{at}` must be a content block object"),
        )),
        _ => Err(RequestError::new(
            format!("{at}.type"),
            format!("`{at}.type` is required and must be a string"),
        )),
    }
}

fn unknown_type(at: &str, kind: &str, allowed: &str) -> RequestError {
    RequestError::new(
        format!("{at}.type"),
        format!("`{at}.type` {kind:?} is not supported here; supported: {allowed}"),
    )
}

/// `system`: a string or an array of text blocks (kept as blocks, with their
/// `cache_control`).
fn parse_system(v: &Value) -> Result<System, RequestError> {
    match v {
        Value::String(s) => Ok(System::Text(s.clone())),
        Value::Array(items) => {
            let mut blocks = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let at = format!("system[{i}]");
                match block_type(item, &at)? {
                    "text" => {
                        let b = typed::<TextBlock>(item, &at)?;
                        blocks.push(SystemBlock {
                            text: b.text,
                            cache_control: b.cache_control,
                        });
                    }
                    other => return Err(unknown_type(&at, other, "text")),
                }
            }
            Ok(System::Blocks(blocks))
        }
        _ => Err(RequestError::new(
            "system",
            "`system` must be a string or an array of text blocks",
        )),
    }
}

/// Message content: a string or an array of content blocks.
fn parse_content(v: &Value, at: &str) -> Result<Vec<Block>, RequestError> {
    match v {
        Value::String(s) => Ok(vec![Block::text(s.clone())]),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (j, item) in items.iter().enumerate() {
                out.push(parse_block(item, &format!("{at}[{j}]"))?);
            }
            Ok(out)
        }
        _ => Err(RequestError::new(
            at,
            format!("`{at}` must be a string or an array of content blocks"),
        )),
    }
}

fn parse_block(v: &Value, at: &str) -> Result<Block, RequestError> {
    let block = match block_type(v, at)? {
        "text" => {
            let b: TextBlock = typed(v, at)?;
            Block::Text {
                text: b.text,
                cache_control: b.cache_control,
            }
        }
        "image" => {
            let b: ImageBlock = typed(v, at)?;
            Block::Image {
                source: parse_image_source(b.source, at)?,
                detail: None,
                cache_control: b.cache_control,
            }
        }
        "tool_use" => {
            let b: ToolUseBlock = typed(v, at)?;
            Block::ToolCall {
                id: b.id,
                name: b.name,
                arguments: b.input.to_string(),
                cache_control: b.cache_control,
            }
        }
        "tool_result" => {
            let b: ToolResultBlock = typed(v, at)?;
            Block::ToolResult {
                tool_call_id: b.tool_use_id,
                content: parse_tool_result_content(b.content.as_ref(), &format!("{at}.content"))?,
                is_error: b.is_error.unwrap_or(false),
                cache_control: b.cache_control,
            }
        }
        // Extended-thinking output echoed back by clients, to go back upstream unchanged.
        "thinking" => {
            let b: ThinkingBlock = typed(v, at)?;
            Block::Thinking {
                thinking: b.thinking,
                signature: b.signature,
            }
        }
        "redacted_thinking" => Block::RedactedThinking {
            data: typed::<RedactedThinkingBlock>(v, at)?.data,
        },
        "document" => {
            let b: DocumentBlock = typed(v, at)?;
            // `citations` is `{"enabled": bool}` and nothing else: it travels unscanned.
            if let Some(c) = &b.citations
                && (c.keys().any(|k| k != "enabled")
                    || c.get("enabled").is_some_and(|e| !e.is_boolean()))
            {
                return Err(RequestError::new(
                    format!("{at}.citations"),
                    format!("`{at}.citations` takes only `enabled`, a boolean"),
                ));
            }
            let param = format!("{at}.source");
            let source = parse_document_source(typed(&b.source, &param)?, &param)?;
            Block::Document(Box::new(Document {
                source,
                title: b.title,
                context: b.context,
                citations: b.citations,
                cache_control: b.cache_control,
                at: param,
            }))
        }
        other => {
            return Err(unknown_type(
                at,
                other,
                "text, image, document, tool_use, tool_result, thinking, redacted_thinking",
            ));
        }
    };
    Ok(block)
}

fn parse_image_source(s: WireImageSource, at: &str) -> Result<ImageSource, RequestError> {
    let missing = |field: &str| {
        RequestError::new(
            format!("{at}.source.{field}"),
            format!("`{at}.source.{field}` is required for this image source type"),
        )
    };
    match s.kind.as_str() {
        "base64" => Ok(ImageSource::Base64 {
            media_type: s.media_type.ok_or_else(|| missing("media_type"))?,
            data: s.data.ok_or_else(|| missing("data"))?,
        }),
        "url" => Ok(ImageSource::Url {
            url: s.url.ok_or_else(|| missing("url"))?,
        }),
        other => Err(RequestError::new(
            format!("{at}.source.type"),
            format!("`{at}.source.type` {other:?} is not supported; supported: base64, url"),
        )),
    }
}

/// A `document` block's `source` (at `at`): `base64` (a PDF), `text`, `url`, `content`
/// (a string or text and image blocks) or `file` (a Files API id).
fn parse_document_source(s: WireDocumentSource, at: &str) -> Result<DocumentSource, RequestError> {
    let missing = |field: &str| {
        RequestError::new(
            format!("{at}.{field}"),
            format!(
                "`{at}.{field}` is required for a {:?} document source",
                s.kind
            ),
        )
    };
    match s.kind.as_str() {
        "base64" | "text" => {
            let media_type = s.media_type.clone().ok_or_else(|| missing("media_type"))?;
            let data = s.data.clone().ok_or_else(|| missing("data"))?;
            Ok(if s.kind == "base64" {
                crate::canonical::pdf_only(&media_type, &format!("{at}.media_type"))?;
                DocumentSource::Base64 { media_type, data }
            } else {
                DocumentSource::Text { media_type, data }
            })
        }
        "url" => Ok(DocumentSource::Url {
            url: s.url.clone().ok_or_else(|| missing("url"))?,
        }),
        "file" => Ok(DocumentSource::File {
            file_id: s.file_id.clone().ok_or_else(|| missing("file_id"))?,
            owner: Format::Anthropic,
        }),
        "content" => {
            let content_at = format!("{at}.content");
            let content = match &s.content {
                Some(Value::String(text)) => vec![Block::text(text.clone())],
                Some(Value::Array(items)) => {
                    let mut blocks = Vec::with_capacity(items.len());
                    for (k, item) in items.iter().enumerate() {
                        let item_at = format!("{content_at}[{k}]");
                        match block_type(item, &item_at)? {
                            "text" | "image" => blocks.push(parse_block(item, &item_at)?),
                            other => return Err(unknown_type(&item_at, other, "text, image")),
                        }
                    }
                    blocks
                }
                None | Some(Value::Null) => return Err(missing("content")),
                Some(_) => {
                    return Err(RequestError::new(
                        &content_at,
                        format!(
                            "`{content_at}` must be a string or an array of text and image blocks"
                        ),
                    ));
                }
            };
            Ok(DocumentSource::Content { content })
        }
        other => Err(RequestError::new(
            format!("{at}.type"),
            format!(
                "`{at}.type` {other:?} is not supported; supported: base64, text, url, content, file"
            ),
        )),
    }
}

/// `tool_result.content`: absent, a string, or text blocks (joined by a newline).
fn parse_tool_result_content(v: Option<&Value>, at: &str) -> Result<String, RequestError> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(items)) => {
            let mut texts = Vec::with_capacity(items.len());
            for (k, item) in items.iter().enumerate() {
                let at = format!("{at}[{k}]");
                match block_type(item, &at)? {
                    "text" => texts.push(typed::<TextBlock>(item, &at)?.text),
                    other => return Err(unknown_type(&at, other, "text")),
                }
            }
            Ok(texts.join("\n"))
        }
        Some(_) => Err(RequestError::new(
            at,
            format!("`{at}` must be a string or an array of text blocks"),
        )),
    }
}

/// Writes a canonical request as an Anthropic Messages request for upstream `model`.
/// See the module docs for what is clamped, defaulted, merged and dropped.
pub fn encode_request(req: &ChatRequest, model: &str) -> Vec<u8> {
    let mut body = Map::new();
    let own_extra = req.extra.format == Some(Format::Anthropic);
    if own_extra {
        for (k, v) in &req.extra.fields {
            if !KNOWN.contains(&k.as_str()) {
                body.insert(k.clone(), v.clone());
            }
        }
    }
    body.insert("model".into(), json!(model));
    body.insert(
        "max_tokens".into(),
        json!(req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
    );
    match &req.system {
        Some(System::Blocks(blocks)) => {
            let blocks: Vec<Value> = blocks
                .iter()
                .map(|b| text_json(&b.text, b.cache_control.as_ref()))
                .collect();
            body.insert("system".into(), Value::Array(blocks));
        }
        Some(System::Text(text)) if !text.is_empty() => {
            body.insert("system".into(), json!(text));
        }
        Some(System::Text(_)) | None => {}
    }
    body.insert("messages".into(), encode_messages(&req.messages));
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut o = Map::new();
                o.insert("name".into(), json!(t.name));
                if let Some(d) = &t.description {
                    o.insert("description".into(), json!(d));
                }
                o.insert("input_schema".into(), t.parameters.clone());
                with_cache_control(&mut o, t.cache_control.as_ref());
                Value::Object(o)
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
        if let Some(tc) = encode_tool_choice(req.tool_choice.as_ref(), req.parallel_tool_calls) {
            body.insert("tool_choice".into(), tc);
        }
    }
    if !req.stop.is_empty() {
        body.insert("stop_sequences".into(), json!(req.stop));
    }
    if let Some(t) = req.temperature {
        body.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = req.top_p {
        body.insert("top_p".into(), json!(p.clamp(0.0, 1.0)));
    }
    let mut metadata = match req.extra.fields.get("metadata") {
        Some(Value::Object(m)) if own_extra => m.clone(),
        _ => Map::new(),
    };
    if let Some(user) = &req.user {
        metadata.insert("user_id".into(), json!(user));
    }
    if !metadata.is_empty() {
        body.insert("metadata".into(), Value::Object(metadata));
    }
    if let Some(output) = output_config(req, own_extra) {
        body.insert("output_config".into(), output);
    }
    if req.stream {
        body.insert("stream".into(), json!(true));
    }
    Value::Object(body).to_string().into_bytes()
}

/// `output_config`: the client's own keys (from this surface), `effort`, and a JSON
/// Schema as GA structured outputs take it (`format`, no beta header). `text`,
/// `json_object` and other OpenAI types have no counterpart and are left out.
fn output_config(req: &ChatRequest, own_extra: bool) -> Option<Value> {
    let mut output = match req.extra.fields.get("output_config") {
        Some(Value::Object(m)) if own_extra => m.clone(),
        _ => Map::new(),
    };
    if let Some(effort) = &req.effort {
        output.insert("effort".into(), json!(effort));
    }
    if let Some(ResponseFormat::JsonSchema(s)) = &req.response_format {
        // An Anthropic client's schema is sent as it wrote it (its SDK has shaped it for
        // Anthropic); another format's is shaped here, as Anthropic's SDKs do.
        let schema = if own_extra {
            s.schema.clone()
        } else {
            anthropic_schema(&s.schema, 0)
        };
        output.insert(
            "format".into(),
            json!({"type": "json_schema", "schema": schema}),
        );
    }
    (!output.is_empty()).then_some(Value::Object(output))
}

/// Constraints Anthropic's structured outputs refuse, which OpenAI's take (Pydantic's
/// `Field(ge=..., max_length=...)` writes them); `minItems` above 1 too (below).
const UNSUPPORTED_CONSTRAINTS: [&str; 8] = [
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "maxItems",
];

/// String formats Anthropic's structured outputs take.
const SUPPORTED_FORMATS: [&str; 10] = [
    "date-time",
    "time",
    "date",
    "duration",
    "email",
    "hostname",
    "uri",
    "ipv4",
    "ipv6",
    "uuid",
];

/// A schema from another format shaped for Anthropic's structured outputs, as its SDKs
/// shape Pydantic and Zod schemas: the constraints it refuses (numeric bounds, string
/// lengths, `maxItems`, a `minItems` above 1, an unsupported string `format`) are taken
/// out and said in the `description` instead (`{minimum: 1, maxLength: 20}`), so the
/// model still reads them; every object without `additionalProperties` gets `false`,
/// which Anthropic requires. Through `properties`, `items`, `prefixItems`, `anyOf`,
/// `allOf`, `oneOf`, `$defs` and `definitions`.
pub(crate) fn anthropic_schema(schema: &Value, depth: usize) -> Value {
    let Value::Object(o) = schema else {
        return schema.clone();
    };
    if depth > 64 {
        return schema.clone();
    }
    let mut out = Map::with_capacity(o.len() + 1);
    let mut moved: Vec<String> = Vec::new();
    for (k, v) in o {
        let refused = match k.as_str() {
            "minItems" => v.as_u64().is_none_or(|n| n > 1),
            "format" => v.as_str().is_none_or(|f| !SUPPORTED_FORMATS.contains(&f)),
            key => UNSUPPORTED_CONSTRAINTS.contains(&key),
        };
        if refused {
            moved.push(format!("{k}: {v}"));
            continue;
        }
        let shaped = match k.as_str() {
            "properties" | "$defs" | "definitions" => match v {
                Value::Object(m) => Value::Object(
                    m.iter()
                        .map(|(name, s)| (name.clone(), anthropic_schema(s, depth + 1)))
                        .collect(),
                ),
                other => other.clone(),
            },
            "items" | "additionalItems" => anthropic_schema(v, depth + 1),
            "prefixItems" | "anyOf" | "allOf" | "oneOf" => match v {
                Value::Array(a) => {
                    Value::Array(a.iter().map(|s| anthropic_schema(s, depth + 1)).collect())
                }
                other => other.clone(),
            },
            _ => v.clone(),
        };
        out.insert(k.clone(), shaped);
    }
    if crate::canonical::is_object_schema(o) && !out.contains_key("additionalProperties") {
        out.insert("additionalProperties".into(), Value::Bool(false));
    }
    if !moved.is_empty() {
        let said = format!("{{{}}}", moved.join(", "));
        let description = match out.get("description").and_then(Value::as_str) {
            Some(d) if !d.is_empty() => format!("{d}\n\n{said}"),
            _ => said,
        };
        out.insert("description".into(), Value::String(description));
    }
    Value::Object(out)
}

fn encode_tool_choice(choice: Option<&ToolChoice>, parallel: Option<bool>) -> Option<Value> {
    let mut o = Map::new();
    match choice {
        Some(ToolChoice::None) => return Some(json!({"type": "none"})),
        Some(ToolChoice::Auto) => {
            o.insert("type".into(), json!("auto"));
        }
        Some(ToolChoice::Required) => {
            o.insert("type".into(), json!("any"));
        }
        Some(ToolChoice::Tool(name)) => {
            o.insert("type".into(), json!("tool"));
            o.insert("name".into(), json!(name));
        }
        // No choice, but parallel calls are disabled: say so with the default choice.
        None if parallel == Some(false) => {
            o.insert("type".into(), json!("auto"));
        }
        None => return None,
    }
    if let Some(p) = parallel {
        o.insert("disable_parallel_tool_use".into(), json!(!p));
    }
    Some(Value::Object(o))
}

/// Messages with same-role neighbours merged and `tool_result` blocks first in user turns.
fn encode_messages(messages: &[Message]) -> Value {
    let mut turns: Vec<(Role, Vec<&Block>)> = Vec::new();
    for m in messages {
        match turns.last_mut() {
            Some((role, blocks)) if *role == m.role => blocks.extend(m.content.iter()),
            _ => turns.push((m.role, m.content.iter().collect())),
        }
    }
    let out: Vec<Value> = turns
        .into_iter()
        .map(|(role, mut blocks)| {
            if role == Role::User {
                // Stable: tool results keep their order, as do the other blocks.
                blocks.sort_by_key(|b| !matches!(b, Block::ToolResult { .. }));
            }
            // The API refuses empty text blocks; keep one only if it is all there is.
            if blocks.len() > 1 {
                blocks.retain(|b| !matches!(b, Block::Text { text, .. } if text.is_empty()));
            }
            let role = match role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            let content: Vec<Value> = blocks.into_iter().map(encode_block).collect();
            json!({"role": role, "content": content})
        })
        .collect();
    Value::Array(out)
}

fn encode_block(b: &Block) -> Value {
    match b {
        Block::Text {
            text,
            cache_control,
        } => text_json(text, cache_control.as_ref()),
        Block::Image {
            source,
            cache_control,
            ..
        } => {
            let source = match source {
                ImageSource::Base64 { media_type, data } => {
                    json!({"type": "base64", "media_type": media_type, "data": data})
                }
                ImageSource::Url { url } => json!({"type": "url", "url": url}),
            };
            let mut o = Map::new();
            o.insert("type".into(), json!("image"));
            o.insert("source".into(), source);
            with_cache_control(&mut o, cache_control.as_ref());
            Value::Object(o)
        }
        Block::ToolCall {
            id,
            name,
            arguments,
            cache_control,
        } => {
            let mut o = Map::new();
            o.insert("type".into(), json!("tool_use"));
            o.insert("id".into(), json!(id));
            o.insert("name".into(), json!(name));
            o.insert("input".into(), tool_input(arguments));
            with_cache_control(&mut o, cache_control.as_ref());
            Value::Object(o)
        }
        Block::ToolResult {
            tool_call_id,
            content,
            is_error,
            cache_control,
        } => {
            let mut o = Map::new();
            o.insert("type".into(), json!("tool_result"));
            o.insert("tool_use_id".into(), json!(tool_call_id));
            o.insert("content".into(), json!(content));
            if *is_error {
                o.insert("is_error".into(), json!(true));
            }
            with_cache_control(&mut o, cache_control.as_ref());
            Value::Object(o)
        }
        Block::Thinking {
            thinking,
            signature,
        } => thinking_json(thinking, signature.as_deref()),
        Block::RedactedThinking { data } => json!({"type": "redacted_thinking", "data": data}),
        Block::Document(d) => document_json(d),
    }
}

/// A `document` block with every field the client gave. (An OpenAI `file_id` has no
/// Anthropic form: [`check_documents`] refuses it before anything is encoded.)
fn document_json(d: &Document) -> Value {
    let source = match &d.source {
        DocumentSource::Base64 { media_type, data } => {
            json!({"type": "base64", "media_type": media_type, "data": data})
        }
        DocumentSource::Text { media_type, data } => {
            json!({"type": "text", "media_type": media_type, "data": data})
        }
        DocumentSource::Url { url } => json!({"type": "url", "url": url}),
        DocumentSource::Content { content } => {
            let blocks: Vec<Value> = content.iter().map(encode_block).collect();
            json!({"type": "content", "content": blocks})
        }
        DocumentSource::File { file_id, .. } => json!({"type": "file", "file_id": file_id}),
    };
    let mut o = Map::new();
    o.insert("type".into(), json!("document"));
    o.insert("source".into(), source);
    if let Some(t) = &d.title {
        o.insert("title".into(), json!(t));
    }
    if let Some(c) = &d.context {
        o.insert("context".into(), json!(c));
    }
    if let Some(c) = &d.citations {
        o.insert("citations".into(), Value::Object(c.clone()));
    }
    with_cache_control(&mut o, d.cache_control.as_ref());
    Value::Object(o)
}

/// Refuses the documents an Anthropic upstream cannot take, naming the client's field:
/// an OpenAI `file_id` (a file in OpenAI's Files API). Everything else is sent as given
/// (inline data is a PDF: both surfaces refuse other inline data when they read it).
pub fn check_documents(req: &ChatRequest) -> Result<(), RequestError> {
    req.refuse_documents(|source| match source {
        DocumentSource::File { owner, .. } if *owner != Format::Anthropic => Some(
            "names a file in OpenAI's Files API, which Anthropic cannot read; send the PDF \
             itself as `file_data` for this model",
        ),
        _ => None,
    })
}

/// A `text` block, with its `cache_control` when it has one.
fn text_json(text: &str, cache_control: Option<&CacheControl>) -> Value {
    let mut o = Map::new();
    o.insert("type".into(), json!("text"));
    o.insert("text".into(), json!(text));
    with_cache_control(&mut o, cache_control);
    Value::Object(o)
}

/// A `thinking` block, with its `signature` when it has one.
pub(super) fn thinking_json(thinking: &str, signature: Option<&str>) -> Value {
    let mut o = Map::new();
    o.insert("type".into(), json!("thinking"));
    o.insert("thinking".into(), json!(thinking));
    if let Some(s) = signature {
        o.insert("signature".into(), json!(s));
    }
    Value::Object(o)
}

fn with_cache_control(o: &mut Map<String, Value>, cache_control: Option<&CacheControl>) {
    if let Some(c) = cache_control {
        o.insert("cache_control".into(), Value::Object(c.0.clone()));
    }
}
