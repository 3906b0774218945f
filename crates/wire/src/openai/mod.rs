//! OpenAI Chat Completions and Embeddings: both sides of the wire.
//!
//! Client side: [`parse_request`], [`encode_response`], [`StreamEncoder`], [`error_body`],
//! [`parse_embeddings_request`], [`encode_embeddings_response`]. Upstream side (OpenAI and
//! OpenAI-compatible servers such as vLLM and Ollama): [`encode_request`],
//! [`decode_response`], [`StreamDecoder`], [`decode_error`], [`encode_embeddings_request`],
//! [`decode_embeddings_response`].
//!
//! Wire formats as documented in the OpenAI API reference:
//! - request: <https://platform.openai.com/docs/api-reference/chat/create>
//! - response object: <https://platform.openai.com/docs/api-reference/chat/object>
//! - stream chunks: <https://platform.openai.com/docs/api-reference/chat-streaming/streaming>
//!   (with `stream_options.include_usage`, every chunk carries `"usage": null` and a last
//!   chunk with `"choices": []` carries the usage)
//! - embeddings: <https://platform.openai.com/docs/api-reference/embeddings/create> and
//!   <https://platform.openai.com/docs/api-reference/embeddings/object>
//! - errors: <https://platform.openai.com/docs/guides/error-codes>
//!
//! Choices made here:
//! - `system` and `developer` messages are hoisted, in order, into the canonical system
//!   prompt (joined by a blank line); upstream it is sent as one leading `system` message.
//! - The token limit of a request from the OpenAI surface goes upstream under the key the
//!   client used (`max_completion_tokens` is kept in [`Extra::fields`] as a marker);
//!   a request from another surface (Anthropic `max_tokens`) is sent as
//!   `max_completion_tokens` to OpenAI itself (it deprecated `max_tokens`, which its
//!   o-series models refuse) and as `max_tokens` to OpenAI-compatible servers (vLLM,
//!   Ollama), which all read it: see [`Dialect`].
//! - `tools[].function.strict`, `image_url.detail`, `frequency_penalty` and
//!   `presence_penalty` are canonical fields, written back to OpenAI-format and Mistral
//!   upstreams.
//! - `response_format` is read into the canonical [`ResponseFormat`] (`text`,
//!   `json_object`, `json_schema` with an object `json_schema.schema`; a type the hub
//!   does not know, such as vLLM's `structural_tag`, is kept as given) and written back
//!   in OpenAI's shape to OpenAI-format and Mistral upstreams (Mistral's `json_schema`
//!   is the same object). A schema without a name (Anthropic's structured outputs have
//!   none) is named [`SCHEMA_NAME`]; one from the Anthropic surface says `strict: true`
//!   when OpenAI's strict mode takes it ([`strict_compatible`]: every property required,
//!   every object closed), as Anthropic always holds the reply to the schema, and
//!   `strict: false` otherwise (OpenAI would answer 400 to it strict).
//! - Anthropic `output_config.effort` is not sent: OpenAI's nearest, `reasoning_effort`,
//!   is refused with 400 by every model without reasoning (gpt-4o, gpt-4.1, ...), which
//!   would break a fallback from Claude to one of them; Mistral's takes only `none`
//!   and `high`, on one model family.
//! - Embeddings token-array input (`[1, 2]`, `[[1], [2, 3]]`, as LangChain sends by
//!   default) is read as text by a [`TokenDecoder`] the caller provides, so the canonical
//!   [`EmbeddingsRequest`](crate::canonical::EmbeddingsRequest) is always text.
//! - Embeddings `encoding_format: "base64"` is accepted and kept in
//!   [`EmbeddingsRequest::extra`](crate::canonical::EmbeddingsRequest::extra); upstream always receives floats, and the gateway answers
//!   with [`encode_embeddings_response_base64`] when [`wants_base64`] says so.
//! - `file` content parts (<https://platform.openai.com/docs/guides/pdf-files?api-mode=chat>)
//!   are canonical documents: `file_data` must be a base64 data URL
//!   (`data:application/pdf;base64,...`), `file_id` an OpenAI file; `filename` is the
//!   title. Documents from Anthropic are written as `document_parts` says (a PDF as
//!   `file_data`, text as text); a document by URL or an Anthropic file id is refused by
//!   [`check_documents`] (the gateway asks it before choosing an OpenAI-format upstream).
//! - A `usage` object is read from any stream chunk, even one whose `choices` is not empty
//!   (some proxies put usage on the finish chunk: BerriAI/litellm#36168).

use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::{Map, Value, json};

use crate::canonical::{
    Block, ChatRequest, Document, DocumentSource, Extra, Format, ImageDetail, ImageSource,
    JsonSchemaFormat, Message, ResponseFormat, Role, System, Tool, ToolChoice,
};
use crate::error::RequestError;

mod embeddings;
mod response;
mod stream;
#[cfg(test)]
mod tests;

pub use embeddings::{
    TokenDecoder, decode_embeddings_response, encode_embeddings_request,
    encode_embeddings_response, encode_embeddings_response_base64, parse_embeddings_request,
    wants_base64,
};
pub(crate) use response::{ContentText, provider_error};
use response::{UsageIn, error_json, finish_reason, stop_reason, usage_json};
pub use response::{decode_error, decode_response, encode_response, error_body};
pub use stream::{StreamDecoder, StreamEncoder};

/// Largest `max_tokens` accepted from a client.
const MAX_TOKENS_LIMIT: i64 = 1_000_000;
/// Key of [`Extra::fields`] marking that the client used `max_completion_tokens`.
const MCT: &str = "max_completion_tokens";
/// `response_format.json_schema.name` sent upstream for a schema that came without one
/// (Anthropic's structured outputs name none; OpenAI and Mistral require one).
pub const SCHEMA_NAME: &str = "response";

/// Whether OpenAI's strict mode takes `schema` (its Structured Outputs subset): the root
/// an object, every object closed (`additionalProperties: false`) with every property
/// required, and no `allOf`/`oneOf`, through `properties`, `items`, `anyOf` and
/// `$defs`/`definitions`. An Anthropic-surface schema is sent strict only then: OpenAI
/// answers 400 to a strict schema outside the subset (an optional property, say),
/// which Anthropic's structured outputs accept.
pub fn strict_compatible(schema: &Value) -> bool {
    fn node(v: &Value, depth: usize) -> bool {
        let Some(o) = v.as_object() else {
            // `true`/`false` schemas and non-schemas: not in the subset.
            return false;
        };
        if depth > 64 || o.contains_key("allOf") || o.contains_key("oneOf") {
            return false;
        }
        if crate::canonical::is_object_schema(o) {
            if o.get("additionalProperties") != Some(&Value::Bool(false)) {
                return false;
            }
            let props = o.get("properties").and_then(Value::as_object);
            let required = o.get("required").and_then(Value::as_array);
            let all_required = props.is_none_or(|p| {
                p.keys().all(|k| {
                    required.is_some_and(|r| r.iter().any(|x| x.as_str() == Some(k.as_str())))
                })
            });
            if !all_required || !props.is_none_or(|p| p.values().all(|v| node(v, depth + 1))) {
                return false;
            }
        }
        let items_ok = match o.get("items") {
            None => true,
            Some(Value::Array(a)) => a.iter().all(|v| node(v, depth + 1)),
            Some(v) => node(v, depth + 1),
        };
        let any_ok = o.get("anyOf").is_none_or(|a| {
            a.as_array()
                .is_some_and(|a| a.iter().all(|v| node(v, depth + 1)))
        });
        let defs_ok = ["$defs", "definitions"].iter().all(|k| {
            o.get(*k).is_none_or(|d| {
                d.as_object()
                    .is_some_and(|d| d.values().all(|v| node(v, depth + 1)))
            })
        });
        items_ok && any_ok && defs_ok
    }
    schema
        .as_object()
        .is_some_and(crate::canonical::is_object_schema)
        && node(schema, 0)
}

// ================================================================================
// Client side: requests
// ================================================================================

#[derive(Deserialize)]
struct RequestIn {
    model: Option<String>,
    messages: Option<Vec<MessageIn>>,
    tools: Option<Vec<ToolIn>>,
    tool_choice: Option<Value>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    n: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    frequency_penalty: Option<f64>,
    presence_penalty: Option<f64>,
    stop: Option<Value>,
    seed: Option<i64>,
    user: Option<String>,
    response_format: Option<Value>,
    parallel_tool_calls: Option<bool>,
    stream: Option<bool>,
    stream_options: Option<StreamOptionsIn>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Deserialize)]
struct StreamOptionsIn {
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct MessageIn {
    role: Option<String>,
    content: Option<Value>,
    tool_calls: Option<Vec<ToolCallIn>>,
    tool_call_id: Option<String>,
}

#[derive(Deserialize)]
struct ToolCallIn {
    id: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    function: FunctionCallIn,
}

#[derive(Deserialize)]
struct FunctionCallIn {
    name: String,
    arguments: Option<Value>,
}

#[derive(Deserialize)]
struct ToolIn {
    #[serde(rename = "type")]
    kind: Option<String>,
    function: Option<ToolFunctionIn>,
}

#[derive(Deserialize)]
struct ToolFunctionIn {
    name: String,
    description: Option<String>,
    parameters: Option<Value>,
    strict: Option<bool>,
}

fn err(param: impl Into<String>, message: impl Into<String>) -> RequestError {
    RequestError::new(param, message)
}

/// Deserializes a client body that must be one JSON object, naming fields in errors.
/// A well-formed body is read once, directly; only a body that fails is read again
/// with path tracking, to name the field (tracking every field of every good request
/// cost a quarter of the request's parse).
fn parse_object<T: DeserializeOwned>(body: &[u8]) -> Result<T, RequestError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    // (Only an object: serde would also read a struct from an array, by position.)
    if first == Some(&b'{')
        && let Ok(value) = serde_json::from_slice(body)
    {
        return Ok(value);
    }
    if first != Some(&b'{') && serde_json::from_slice::<IgnoredAny>(body).is_ok() {
        return Err(RequestError {
            param: None,
            message: "the request body must be a JSON object".into(),
        });
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(RequestError::from_path)?;
    de.end().map_err(|e| RequestError {
        param: None,
        message: format!("the body is not valid JSON: {e}"),
    })?;
    Ok(value)
}

fn required_string(v: Option<String>, param: &str) -> Result<String, RequestError> {
    match v {
        None => Err(err(param, format!("`{param}` is required"))),
        Some(s) if s.trim().is_empty() => Err(err(param, format!("`{param}` must not be empty"))),
        Some(s) => Ok(s),
    }
}

/// Parses an OpenAI Chat Completions request into canonical form.
pub fn parse_request(body: &[u8]) -> Result<ChatRequest, RequestError> {
    let raw: RequestIn = parse_object(body)?;
    let model = required_string(raw.model, "model")?;
    let raw_messages = match raw.messages {
        None => return Err(err("messages", "`messages` is required")),
        Some(m) if m.is_empty() => {
            return Err(err(
                "messages",
                "`messages` must contain at least one message",
            ));
        }
        Some(m) => m,
    };
    if let Some(n) = raw.n
        && n != 1
    {
        return Err(err("n", "only n=1 is supported"));
    }
    for (name, value) in [
        ("max_tokens", raw.max_tokens),
        (MCT, raw.max_completion_tokens),
    ] {
        if let Some(v) = value
            && !(1..=MAX_TOKENS_LIMIT).contains(&v)
        {
            return Err(err(
                name,
                format!("`{name}` must be between 1 and {MAX_TOKENS_LIMIT}, got {v}"),
            ));
        }
    }
    if let Some(t) = raw.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(err(
            "temperature",
            format!("`temperature` must be between 0 and 2, got {t}"),
        ));
    }
    if let Some(p) = raw.top_p
        && !(0.0..=1.0).contains(&p)
    {
        return Err(err(
            "top_p",
            format!("`top_p` must be between 0 and 1, got {p}"),
        ));
    }
    for (name, value) in [
        ("frequency_penalty", raw.frequency_penalty),
        ("presence_penalty", raw.presence_penalty),
    ] {
        if let Some(v) = value
            && !(-2.0..=2.0).contains(&v)
        {
            return Err(err(
                name,
                format!("`{name}` must be between -2 and 2, got {v}"),
            ));
        }
    }

    let (system, messages) = convert_messages(raw_messages)?;
    let tools = raw
        .tools
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, t)| convert_tool(i, t))
        .collect::<Result<Vec<_>, _>>()?;
    let tool_choice = match raw.tool_choice {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_tool_choice(&v)?),
    };
    let stop = match raw.stop {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(j, v)| match v {
                Value::String(s) => Ok(s),
                _ => Err(err(format!("stop[{j}]"), "stop sequences must be strings")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(err(
                "stop",
                "`stop` must be a string or an array of strings",
            ));
        }
    };

    let mut extra = raw.extra;
    let max_tokens = match (raw.max_completion_tokens, raw.max_tokens) {
        (Some(v), _) => {
            extra.insert(MCT.into(), json!(v));
            Some(v)
        }
        (None, v) => v,
    };
    let stream = raw.stream.unwrap_or(false);
    let include_usage = stream
        && raw
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
    Ok(ChatRequest {
        model,
        system: system.map(System::Text),
        messages,
        tools,
        tool_choice,
        // In 1..=1_000_000, checked above.
        max_tokens: max_tokens.and_then(|v| u32::try_from(v).ok()),
        temperature: raw.temperature,
        top_p: raw.top_p,
        frequency_penalty: raw.frequency_penalty,
        presence_penalty: raw.presence_penalty,
        stop,
        seed: raw.seed,
        user: raw.user,
        response_format: match raw.response_format {
            None => None,
            Some(v) => parse_response_format(v)?,
        },
        effort: None,
        parallel_tool_calls: raw.parallel_tool_calls,
        stream,
        include_usage,
        extra: Extra {
            format: Some(Format::OpenAi),
            fields: extra,
        },
    })
}

/// The `type` of a `response_format`, read before its object is taken apart.
enum FormatType {
    JsonObject,
    JsonSchema,
    Other,
    Text,
}

/// `response_format`: `text`, `json_object`, `json_schema` (its `json_schema.schema` an
/// object; `name`, `description` and `strict` optional), or another type, kept as
/// given for OpenAI-format upstreams. `null` is no format.
fn parse_response_format(v: Value) -> Result<Option<ResponseFormat>, RequestError> {
    let mut o = match v {
        Value::Null => return Ok(None),
        Value::Object(o) => o,
        _ => {
            return Err(err(
                "response_format",
                "`response_format` must be an object such as \
                 {\"type\": \"json_schema\", \"json_schema\": {\"name\": ..., \"schema\": {...}}}",
            ));
        }
    };
    let kind = match o.get("type").and_then(Value::as_str) {
        Some("text") => FormatType::Text,
        Some("json_object") => FormatType::JsonObject,
        Some("json_schema") => FormatType::JsonSchema,
        Some(_) => FormatType::Other,
        None => {
            return Err(err(
                "response_format.type",
                "`response_format.type` is required and must be a string: \
                 text, json_object or json_schema",
            ));
        }
    };
    let format = match kind {
        FormatType::Text => ResponseFormat::Text,
        FormatType::JsonObject => ResponseFormat::JsonObject,
        FormatType::Other => ResponseFormat::Other(Value::Object(o)),
        FormatType::JsonSchema => {
            let Some(Value::Object(mut js)) = o.remove("json_schema") else {
                return Err(err(
                    "response_format.json_schema",
                    "`response_format.json_schema` is required when `response_format.type` \
                     is json_schema, and must be an object with `name` and `schema`",
                ));
            };
            let schema = match js.remove("schema") {
                Some(s @ Value::Object(_)) => s,
                _ => {
                    return Err(err(
                        "response_format.json_schema.schema",
                        "`response_format.json_schema.schema` is required and must be a \
                         JSON Schema object",
                    ));
                }
            };
            let text = |v: Option<Value>, param: &str| match v {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(err(param, format!("`{param}` must be a string"))),
            };
            let name = text(js.remove("name"), "response_format.json_schema.name")?;
            let description = text(
                js.remove("description"),
                "response_format.json_schema.description",
            )?;
            let strict = match js.remove("strict") {
                None | Some(Value::Null) => None,
                Some(Value::Bool(b)) => Some(b),
                Some(_) => {
                    return Err(err(
                        "response_format.json_schema.strict",
                        "`response_format.json_schema.strict` must be a boolean",
                    ));
                }
            };
            ResponseFormat::JsonSchema(JsonSchemaFormat {
                name,
                description,
                schema,
                strict,
            })
        }
    };
    Ok(Some(format))
}

fn convert_messages(raw: Vec<MessageIn>) -> Result<(Option<String>, Vec<Message>), RequestError> {
    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<Message> = Vec::new();
    let mut prev_tool = false;
    for (i, m) in raw.into_iter().enumerate() {
        let p = format!("messages[{i}]");
        let Some(role) = m.role else {
            return Err(err(format!("{p}.role"), format!("`{p}.role` is required")));
        };
        let content_param = format!("{p}.content");
        let is_tool = role == "tool";
        match role.as_str() {
            "system" | "developer" => {
                system.push(text_content(m.content.as_ref(), &content_param)?);
            }
            "user" => messages.push(Message {
                role: Role::User,
                content: user_blocks(m.content.as_ref(), &content_param)?,
            }),
            "assistant" => {
                let mut content = assistant_text(m.content.as_ref(), &content_param)?;
                for (j, tc) in m.tool_calls.unwrap_or_default().into_iter().enumerate() {
                    if let Some(kind) = tc.kind.as_deref()
                        && kind != "function"
                    {
                        return Err(err(
                            format!("{p}.tool_calls[{j}].type"),
                            format!("unsupported tool call type `{kind}`; expected `function`"),
                        ));
                    }
                    content.push(Block::ToolCall {
                        id: tc.id,
                        name: tc.function.name,
                        arguments: arguments_text(tc.function.arguments),
                        cache_control: None,
                    });
                }
                messages.push(Message {
                    role: Role::Assistant,
                    content,
                });
            }
            "tool" => {
                let tool_call_id = required_string(m.tool_call_id, &format!("{p}.tool_call_id"))?;
                let block = Block::ToolResult {
                    tool_call_id,
                    content: text_content(m.content.as_ref(), &content_param)?,
                    is_error: false,
                    cache_control: None,
                };
                match messages.last_mut() {
                    Some(last) if prev_tool => last.content.push(block),
                    _ => messages.push(Message {
                        role: Role::User,
                        content: vec![block],
                    }),
                }
            }
            other => {
                return Err(err(
                    format!("{p}.role"),
                    format!(
                        "unknown role `{other}`; expected system, developer, user, assistant or tool"
                    ),
                ));
            }
        }
        prev_tool = is_tool;
    }
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    Ok((system, messages))
}

/// Tool-call arguments as JSON text (some clients send an object instead of a string).
fn arguments_text(v: Option<Value>) -> String {
    match v {
        None | Some(Value::Null) => "{}".into(),
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
    }
}

/// Text of a `text` part, or an error naming it.
fn text_part<'a>(part: &'a Value, param: &str) -> Result<Option<&'a str>, RequestError> {
    let Some(kind) = part.get("type").and_then(Value::as_str) else {
        return Err(err(
            format!("{param}.type"),
            format!("`{param}.type` is required"),
        ));
    };
    match kind {
        "text" => match part.get("text").and_then(Value::as_str) {
            Some(t) => Ok(Some(t)),
            None => Err(err(
                format!("{param}.text"),
                "a text part needs a string `text`",
            )),
        },
        _ => Ok(None),
    }
}

/// Content that must be text: a string or an array of `text` parts (joined by newlines).
fn text_content(v: Option<&Value>, param: &str) -> Result<String, RequestError> {
    match v {
        None | Some(Value::Null) => Err(err(param, format!("`{param}` is required"))),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                let pp = format!("{param}[{j}]");
                match text_part(part, &pp)? {
                    Some(t) => texts.push(t),
                    None => {
                        return Err(err(
                            format!("{pp}.type"),
                            "only `text` parts are allowed in this message",
                        ));
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        Some(_) => Err(err(
            param,
            format!("`{param}` must be a string or an array of text parts"),
        )),
    }
}

fn assistant_text(v: Option<&Value>, param: &str) -> Result<Vec<Block>, RequestError> {
    let text = match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::new();
            for (j, part) in parts.iter().enumerate() {
                // `refusal` parts carry no content to send back to a model.
                if let Some(t) = text_part(part, &format!("{param}[{j}]"))? {
                    texts.push(t);
                }
            }
            texts.join("\n")
        }
        Some(_) => {
            return Err(err(
                param,
                format!("`{param}` must be a string, an array of parts or null"),
            ));
        }
    };
    Ok(if text.is_empty() {
        Vec::new()
    } else {
        vec![Block::Text {
            text,
            cache_control: None,
        }]
    })
}

fn user_blocks(v: Option<&Value>, param: &str) -> Result<Vec<Block>, RequestError> {
    match v {
        None | Some(Value::Null) => Err(err(param, format!("`{param}` is required"))),
        Some(Value::String(s)) => Ok(vec![Block::Text {
            text: s.clone(),
            cache_control: None,
        }]),
        Some(Value::Array(parts)) if parts.is_empty() => {
            Err(err(param, format!("`{param}` must not be empty")))
        }
        Some(Value::Array(parts)) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                let pp = format!("{param}[{j}]");
                if let Some(text) = text_part(part, &pp)? {
                    blocks.push(Block::Text {
                        text: text.to_owned(),
                        cache_control: None,
                    });
                    continue;
                }
                let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
                if kind == "file" {
                    blocks.push(file_part(part, &pp)?);
                    continue;
                }
                if kind != "image_url" {
                    return Err(err(
                        format!("{pp}.type"),
                        format!(
                            "unsupported content part type `{kind}`; supported: text, image_url, file"
                        ),
                    ));
                }
                let (url, detail) = match part.get("image_url") {
                    Some(Value::String(u)) => (u.as_str(), None),
                    Some(obj) => match obj.get("url").and_then(Value::as_str) {
                        Some(u) => (u, image_detail(obj.get("detail"), &pp)?),
                        None => {
                            return Err(err(
                                format!("{pp}.image_url.url"),
                                "an image part needs a string `url`",
                            ));
                        }
                    },
                    None => {
                        return Err(err(
                            format!("{pp}.image_url"),
                            "an image part needs `image_url`",
                        ));
                    }
                };
                blocks.push(Block::Image {
                    source: image_source(url),
                    detail,
                    cache_control: None,
                });
            }
            Ok(blocks)
        }
        Some(_) => Err(err(
            param,
            format!("`{param}` must be a string or an array of content parts"),
        )),
    }
}

/// A `file` part (at `param`): `{"file": {"file_data": "data:<type>;base64,<data>",
/// "filename"}}` or `{"file": {"file_id"}}`, as a document.
fn file_part(part: &Value, param: &str) -> Result<Block, RequestError> {
    let Some(file) = part.get("file").filter(|f| f.is_object()) else {
        return Err(err(
            format!("{param}.file"),
            format!("`{param}.file` is required and must be an object"),
        ));
    };
    let field = |name: &str| -> Result<Option<&str>, RequestError> {
        match file.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(err(
                format!("{param}.file.{name}"),
                format!("`{param}.file.{name}` must be a string"),
            )),
        }
    };
    let title = field("filename")?.map(str::to_owned);
    let (source, at) = match (field("file_data")?, field("file_id")?) {
        (Some(data), None) => {
            let at = format!("{param}.file.file_data");
            match image_source(data) {
                ImageSource::Base64 { media_type, data } => {
                    crate::canonical::pdf_only(&media_type, &at)?;
                    (DocumentSource::Base64 { media_type, data }, at)
                }
                ImageSource::Url { .. } => {
                    return Err(err(
                        &at,
                        format!(
                            "`{at}` must be a base64 data URL: data:application/pdf;base64,<data>"
                        ),
                    ));
                }
            }
        }
        (None, Some(id)) => (
            DocumentSource::File {
                file_id: id.to_owned(),
                owner: Format::OpenAi,
            },
            format!("{param}.file.file_id"),
        ),
        (Some(_), Some(_)) => {
            return Err(err(
                format!("{param}.file"),
                format!("`{param}.file` takes `file_data` or `file_id`, not both"),
            ));
        }
        (None, None) => {
            return Err(err(
                format!("{param}.file"),
                format!("`{param}.file` needs `file_data` (a base64 data URL) or `file_id`"),
            ));
        }
    };
    Ok(Block::Document(Box::new(Document {
        source,
        title,
        context: None,
        citations: None,
        cache_control: None,
        at,
    })))
}

/// `image_url.detail` of the part at `param`: `low`, `high`, `auto` or absent (null).
fn image_detail(v: Option<&Value>, param: &str) -> Result<Option<ImageDetail>, RequestError> {
    match v.and_then(|d| (!d.is_null()).then_some(d)) {
        None => Ok(None),
        Some(d) => match d.as_str() {
            Some("auto") => Ok(Some(ImageDetail::Auto)),
            Some("high") => Ok(Some(ImageDetail::High)),
            Some("low") => Ok(Some(ImageDetail::Low)),
            _ => Err(err(
                format!("{param}.image_url.detail"),
                format!("`{param}.image_url.detail` must be low, high or auto"),
            )),
        },
    }
}

/// `data:<media type>;base64,<data>` becomes inline bytes; anything else is a URL.
fn image_source(url: &str) -> ImageSource {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((meta, data)) = rest.split_once(',')
        && let Some(media_type) = meta.strip_suffix(";base64")
    {
        return ImageSource::Base64 {
            media_type: media_type.to_owned(),
            data: data.to_owned(),
        };
    }
    ImageSource::Url {
        url: url.to_owned(),
    }
}

fn convert_tool(i: usize, t: ToolIn) -> Result<Tool, RequestError> {
    let kind = t.kind.as_deref().unwrap_or("function");
    if kind != "function" {
        return Err(err(
            format!("tools[{i}].type"),
            format!("unsupported tool type `{kind}`; only `function` tools are supported"),
        ));
    }
    let Some(f) = t.function else {
        return Err(err(
            format!("tools[{i}].function"),
            format!("`tools[{i}].function` is required"),
        ));
    };
    let name = required_string(Some(f.name), &format!("tools[{i}].function.name"))?;
    Ok(Tool {
        name,
        description: f.description,
        // Omitted parameters mean an empty parameter list.
        parameters: f
            .parameters
            .filter(|p| !p.is_null())
            .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        strict: f.strict,
        cache_control: None,
    })
}

fn parse_tool_choice(v: &Value) -> Result<ToolChoice, RequestError> {
    match v {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            other => Err(err(
                "tool_choice",
                format!(
                    "unknown tool_choice `{other}`; expected auto, none, required or an object"
                ),
            )),
        },
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            match o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
            {
                Some(name) => Ok(ToolChoice::Tool(name.to_owned())),
                None => Err(err(
                    "tool_choice.function.name",
                    "`tool_choice.function.name` is required",
                )),
            }
        }
        _ => Err(err(
            "tool_choice",
            "`tool_choice` must be auto, none, required or {\"type\":\"function\",\"function\":{\"name\":...}}",
        )),
    }
}

// ================================================================================
// Upstream side: requests
// ================================================================================

/// Which kind of server an OpenAI-format request body is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// An OpenAI-compatible server (vLLM, Ollama): the token limit is `max_tokens`,
    /// which they all read.
    Compatible,
    /// OpenAI's own API: the token limit is `max_completion_tokens` (OpenAI deprecated
    /// `max_tokens`, and its o-series models refuse it).
    OpenAi,
}

/// Writes a canonical request as an OpenAI Chat Completions body for `model`, sent to a
/// server of `dialect`.
pub fn encode_request(req: &ChatRequest, model: &str, dialect: Dialect) -> Vec<u8> {
    let from_openai = req.extra.format == Some(Format::OpenAi);
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert(
        "messages".into(),
        Value::Array(encode_messages(req, &|id| id.to_owned(), Format::OpenAi)),
    );
    if !req.tools.is_empty() {
        body.insert("tools".into(), tools_json(&req.tools));
    }
    if let Some(tc) = &req.tool_choice {
        let v = match tc {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
        };
        body.insert("tool_choice".into(), v);
    }
    if let Some(mt) = req.max_tokens {
        // An OpenAI-surface request keeps the key it used; others get the dialect's.
        let key = match (from_openai, dialect) {
            (true, _) if req.extra.fields.contains_key(MCT) => MCT,
            (true, _) | (false, Dialect::Compatible) => "max_tokens",
            (false, Dialect::OpenAi) => MCT,
        };
        body.insert(key.into(), json!(mt));
    }
    insert_common(&mut body, req);
    if let Some(seed) = req.seed {
        body.insert("seed".into(), json!(seed));
    }
    if let Some(user) = &req.user {
        body.insert("user".into(), json!(user));
    }
    if req.stream {
        body.insert("stream".into(), json!(true));
        // The gateway always needs the usage, whatever the client asked.
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if from_openai {
        for (k, v) in &req.extra.fields {
            if k != MCT && !body.contains_key(k) {
                body.insert(k.clone(), v.clone());
            }
        }
    }
    to_bytes(&Value::Object(body))
}

/// Fields written the same way to OpenAI and Mistral.
pub(crate) fn insert_common(body: &mut Map<String, Value>, req: &ChatRequest) {
    if let Some(t) = req.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if let Some(p) = req.frequency_penalty {
        body.insert("frequency_penalty".into(), json!(p));
    }
    if let Some(p) = req.presence_penalty {
        body.insert("presence_penalty".into(), json!(p));
    }
    if !req.stop.is_empty() {
        body.insert("stop".into(), json!(req.stop));
    }
    if let Some(rf) = &req.response_format {
        body.insert("response_format".into(), response_format_json(rf));
    }
    if let Some(p) = req.parallel_tool_calls {
        body.insert("parallel_tool_calls".into(), json!(p));
    }
}

/// A `response_format` as OpenAI (and Mistral) write it; a schema without a name is
/// named [`SCHEMA_NAME`].
fn response_format_json(rf: &ResponseFormat) -> Value {
    match rf {
        ResponseFormat::Text => json!({"type": "text"}),
        ResponseFormat::JsonObject => json!({"type": "json_object"}),
        ResponseFormat::JsonSchema(s) => {
            let mut js = Map::new();
            js.insert(
                "name".into(),
                json!(s.name.as_deref().unwrap_or(SCHEMA_NAME)),
            );
            if let Some(d) = &s.description {
                js.insert("description".into(), json!(d));
            }
            js.insert("schema".into(), s.schema.clone());
            if let Some(strict) = s.strict {
                js.insert("strict".into(), json!(strict));
            }
            json!({"type": "json_schema", "json_schema": js})
        }
        ResponseFormat::Other(v) => v.clone(),
    }
}

pub(crate) fn to_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

pub(crate) fn tools_json(tools: &[Tool]) -> Value {
    Value::Array(
        tools
            .iter()
            .map(|t| {
                let mut f = Map::new();
                f.insert("name".into(), json!(t.name));
                if let Some(d) = &t.description {
                    f.insert("description".into(), json!(d));
                }
                if !t.parameters.is_null() {
                    f.insert("parameters".into(), t.parameters.clone());
                }
                if let Some(strict) = t.strict {
                    f.insert("strict".into(), json!(strict));
                }
                json!({"type": "function", "function": f})
            })
            .collect(),
    )
}

fn image_url_json(source: &ImageSource, detail: Option<ImageDetail>) -> Value {
    let url = match source {
        ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        ImageSource::Url { url } => url.clone(),
    };
    let mut image_url = Map::new();
    image_url.insert("url".into(), json!(url));
    if let Some(d) = detail {
        let d = match d {
            ImageDetail::Auto => "auto",
            ImageDetail::High => "high",
            ImageDetail::Low => "low",
        };
        image_url.insert("detail".into(), json!(d));
    }
    json!({"type": "image_url", "image_url": image_url})
}

/// The `messages` array: system first, tool results as `tool` messages, tool calls as
/// `tool_calls`. `map_id` rewrites tool-call ids (identity for OpenAI; Mistral needs its own);
/// `target` (OpenAI or Mistral) decides how documents are written ([`document_parts`]).
pub(crate) fn encode_messages(
    req: &ChatRequest,
    map_id: &dyn Fn(&str) -> String,
    target: Format,
) -> Vec<Value> {
    let mut out = Vec::with_capacity(req.messages.len() + 1);
    if let Some(system) = req.system_text() {
        out.push(json!({"role": "system", "content": system}));
    }
    for m in &req.messages {
        match m.role {
            Role::User => encode_user(m, map_id, target, &mut out),
            Role::Assistant => out.push(encode_assistant(m, map_id)),
        }
    }
    out
}

/// The parts of a document for an OpenAI-format (`target` OpenAI) or Mistral upstream:
///
/// - inline data: OpenAI `{"type":"file","file":{"file_data":"data:<type>;base64,...",
///   "filename"}}` (OpenAI requires the filename: the title, else `document.pdf`);
/// - an OpenAI `file_id`: `{"type":"file","file":{"file_id"}}`;
/// - a URL: Mistral `{"type":"document_url","document_url","document_name"?}`;
/// - plain text: a text part with its text; custom content: its text and image parts.
///
/// Title, context, citations and `cache_control` have no counterpart and are left out.
/// What neither format can take ([`check_documents`], [`crate::mistral::check_documents`]
/// refuse it first) is written as no part.
fn document_parts(d: &Document, target: Format, out: &mut Vec<Value>) {
    match (&d.source, target) {
        (DocumentSource::Text { data, .. }, _) => out.push(json!({"type": "text", "text": data})),
        (DocumentSource::Content { content }, _) => {
            for b in content {
                match b {
                    Block::Text { text, .. } => out.push(json!({"type": "text", "text": text})),
                    Block::Image { source, detail, .. } => {
                        out.push(image_url_json(source, *detail))
                    }
                    _ => {}
                }
            }
        }
        (DocumentSource::Base64 { media_type, data }, Format::OpenAi) => {
            let filename = d.title.as_deref().unwrap_or("document.pdf");
            out.push(json!({"type": "file", "file": {
                "file_data": format!("data:{media_type};base64,{data}"),
                "filename": filename,
            }}));
        }
        (
            DocumentSource::File {
                file_id,
                owner: Format::OpenAi,
            },
            Format::OpenAi,
        ) => {
            let mut file = Map::new();
            file.insert("file_id".into(), json!(file_id));
            if let Some(t) = &d.title {
                file.insert("filename".into(), json!(t));
            }
            out.push(json!({"type": "file", "file": file}));
        }
        (DocumentSource::Url { url }, Format::Mistral) => {
            let mut o = Map::new();
            o.insert("type".into(), json!("document_url"));
            o.insert("document_url".into(), json!(url));
            if let Some(t) = &d.title {
                o.insert("document_name".into(), json!(t));
            }
            out.push(Value::Object(o));
        }
        _ => {}
    }
}

/// Refuses the documents an OpenAI-format upstream cannot take, naming the client's
/// field: a PDF by URL (Chat Completions takes files as `file_data` or `file_id` only)
/// and a file in Anthropic's Files API. Inline data goes as `file_data`, text as text.
pub fn check_documents(req: &ChatRequest) -> Result<(), RequestError> {
    req.refuse_documents(|source| match source {
        DocumentSource::Url { .. } => Some(
            "is a document by URL, and OpenAI Chat Completions takes files only as \
             `file_data` or `file_id`; send the PDF inline (`source.type: base64`) \
             for this model",
        ),
        DocumentSource::File { owner, .. } if *owner != Format::OpenAi => Some(
            "names a file in Anthropic's Files API, which OpenAI cannot read; send the \
             PDF inline (`source.type: base64`) for this model",
        ),
        _ => None,
    })
}

fn encode_user(m: &Message, map_id: &dyn Fn(&str) -> String, target: Format, out: &mut Vec<Value>) {
    let mut has_results = false;
    let mut rest: Vec<&Block> = Vec::new();
    for b in &m.content {
        match b {
            Block::ToolResult {
                tool_call_id,
                content,
                ..
            } => {
                has_results = true;
                out.push(json!({"role": "tool", "tool_call_id": map_id(tool_call_id), "content": content}));
            }
            Block::Text { .. } | Block::Image { .. } | Block::Document(_) => rest.push(b),
            // Thinking is Anthropic's alone (and never in a user turn in practice).
            Block::ToolCall { .. } | Block::Thinking { .. } | Block::RedactedThinking { .. } => {}
        }
    }
    if rest.is_empty() && has_results {
        return;
    }
    let content = match rest.as_slice() {
        [] => json!(""),
        [Block::Text { text, .. }] => json!(text),
        blocks => {
            let mut parts = Vec::with_capacity(blocks.len());
            for b in blocks {
                match b {
                    Block::Text { text, .. } => parts.push(json!({"type": "text", "text": text})),
                    Block::Image { source, detail, .. } => {
                        parts.push(image_url_json(source, *detail));
                    }
                    Block::Document(d) => document_parts(d, target, &mut parts),
                    _ => {}
                }
            }
            Value::Array(parts)
        }
    };
    out.push(json!({"role": "user", "content": content}));
}

fn encode_assistant(m: &Message, map_id: &dyn Fn(&str) -> String) -> Value {
    let texts: Vec<&str> = m
        .content
        .iter()
        .filter_map(|b| match b {
            Block::Text { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    let calls: Vec<Value> = m
        .content
        .iter()
        .filter_map(|b| match b {
            Block::ToolCall {
                id,
                name,
                arguments,
                ..
            } => Some(json!({
                "id": map_id(id),
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            })),
            _ => None,
        })
        .collect();
    let mut msg = Map::new();
    msg.insert("role".into(), json!("assistant"));
    let content = if texts.is_empty() && !calls.is_empty() {
        Value::Null
    } else {
        json!(texts.join("\n"))
    };
    msg.insert("content".into(), content);
    if !calls.is_empty() {
        msg.insert("tool_calls".into(), Value::Array(calls));
    }
    Value::Object(msg)
}
