//! Anthropic flavor: `POST /v1/messages` (JSON and SSE), `GET /v1/models`.
//!
//! References: <https://docs.anthropic.com/en/api/messages>,
//! <https://docs.anthropic.com/en/api/messages-streaming> (event flow:
//! `message_start`, content blocks each with `content_block_start`, deltas and
//! `content_block_stop`, `message_delta`, `message_stop`, plus `ping`s),
//! <https://docs.anthropic.com/en/api/errors> (`{"type":"error","error":{"type",
//! "message"},"request_id"}`; 529 `overloaded_error`),
//! <https://docs.anthropic.com/en/api/versioning> (`anthropic-version` header).

use axum::http::HeaderMap;
use serde_json::{Map, Value, json};

use super::common::{
    Conversation, Finish, Outcome, event_frame, plan, schema_reply, split_chars, stop_list, tokens,
};
use super::{Ctx, Reply};

/// Top-level fields the Messages API accepts; others get a 400.
const FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "system",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
    "container",
    "mcp_servers",
    "context_management",
    "output_config",
];

/// `output_config.effort` values the API takes.
const EFFORTS: &[&str] = &["low", "medium", "high", "xhigh", "max"];

fn error_body(ctx: &Ctx<'_>, kind: &str, message: &str) -> Value {
    json!({
        "type": "error",
        "error": { "type": kind, "message": message },
        "request_id": format!("req_011C{}", ctx.id(9, 20)),
    })
}

fn err(ctx: &Ctx<'_>, status: u16, kind: &str, message: &str) -> Reply {
    Reply::status(status, error_body(ctx, kind, message))
}

fn invalid(ctx: &Ctx<'_>, message: &str) -> Reply {
    err(ctx, 400, "invalid_request_error", message)
}

/// `x-api-key` (when a key is configured) and `anthropic-version` (always).
pub(super) fn check_headers(ctx: &Ctx<'_>, headers: &HeaderMap) -> Option<Reply> {
    if let Some(key) = ctx.settings.api_key.as_deref() {
        match headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
            None => {
                return Some(err(
                    ctx,
                    401,
                    "authentication_error",
                    "x-api-key header is required",
                ));
            }
            Some(given) if given != key => {
                return Some(err(ctx, 401, "authentication_error", "invalid x-api-key"));
            }
            Some(_) => {}
        }
    }
    if headers.get("anthropic-version").is_none() {
        return Some(invalid(ctx, "anthropic-version: header is required"));
    }
    None
}

/// An injected failure with Anthropic's body for `status`.
pub(super) fn fault(ctx: &Ctx<'_>, status: u16) -> Reply {
    let (kind, msg) = match status {
        400 => (
            "invalid_request_error",
            "There was an issue with the format or content of your request.",
        ),
        401 => ("authentication_error", "invalid x-api-key"),
        402 => (
            "billing_error",
            "Your credit balance is too low to access the Anthropic API.",
        ),
        403 => (
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
        ),
        404 => (
            "not_found_error",
            "The requested resource could not be found.",
        ),
        413 => (
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes.",
        ),
        429 => (
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit (https://docs.anthropic.com/en/api/rate-limits); see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later.",
        ),
        504 => ("timeout_error", "Request timed out"),
        529 => ("overloaded_error", "Overloaded"),
        500..=599 => ("api_error", "Internal server error"),
        _ => ("invalid_request_error", "Invalid request"),
    };
    err(ctx, status, kind, msg)
}

pub(super) fn not_found(ctx: &Ctx<'_>) -> Reply {
    err(ctx, 404, "not_found_error", "Not Found")
}

pub(super) fn models() -> Reply {
    let models = [
        (
            "claude-opus-4-1-20250805",
            "Claude Opus 4.1",
            "2025-08-05T00:00:00Z",
        ),
        (
            "claude-sonnet-4-5-20250929",
            "Claude Sonnet 4.5",
            "2025-09-29T00:00:00Z",
        ),
        (
            "claude-3-5-haiku-20241022",
            "Claude Haiku 3.5",
            "2024-10-22T00:00:00Z",
        ),
    ];
    let data: Vec<Value> = models
        .iter()
        .map(|(id, name, at)| json!({ "type": "model", "id": id, "display_name": name, "created_at": at }))
        .collect();
    Reply::ok(json!({
        "data": data,
        "has_more": false,
        "first_id": models[0].0,
        "last_id": models[models.len() - 1].0,
    }))
}

/// Text of a `tool_result` block's `content` (string or text blocks).
fn tool_result_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// Text of a message or `system` content: a string, or its text blocks,
/// tool_result contents and text documents, concatenated.
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .map(|b| match b.get("type").and_then(Value::as_str) {
                Some("text") => b
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                Some("tool_result") => tool_result_text(b.get("content")),
                Some("document") => document_text(b.get("source")),
                _ => String::new(),
            })
            .collect(),
        _ => String::new(),
    }
}

/// The text a document contributes: a `text` source's data, a `content`
/// source's text (string or text blocks); a PDF, a URL or a file none.
fn document_text(source: Option<&Value>) -> String {
    let Some(source) = source else {
        return String::new();
    };
    match source.get("type").and_then(Value::as_str) {
        Some("text") => source
            .get("data")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        Some("content") => tool_result_text(source.get("content")),
        _ => String::new(),
    }
}

/// The citation a text reply carries when the request's documents have citations
/// enabled (<https://docs.anthropic.com/en/docs/build-with-claude/citations>): the
/// first such document, cited whole, in its kind's location: characters of a plain
/// text (`char_location`, 0-based, end exclusive), pages of a PDF, by URL or file
/// (`page_location`, 1-based, end exclusive: page 1), blocks of custom content
/// (`content_block_location`: block 0). `document_index` counts the request's
/// documents in order, as the API does.
fn citation(messages: &[Value]) -> Option<Value> {
    let documents = messages
        .iter()
        .filter_map(|m| m.get("content").and_then(Value::as_array))
        .flatten()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("document"));
    for (index, doc) in documents.enumerate() {
        let enabled = doc
            .get("citations")
            .and_then(|c| c.get("enabled"))
            .and_then(Value::as_bool)
            == Some(true);
        if !enabled {
            continue;
        }
        let source = doc.get("source");
        let title = doc.get("title").cloned().unwrap_or(Value::Null);
        let text = document_text(source);
        let location = match source.and_then(|s| s.get("type")).and_then(Value::as_str) {
            Some("text") => json!({"type": "char_location", "start_char_index": 0,
                "end_char_index": text.chars().count()}),
            Some("content") => json!({"type": "content_block_location",
                "start_block_index": 0, "end_block_index": 1}),
            _ => json!({"type": "page_location", "start_page_number": 1,
                "end_page_number": 2}),
        };
        let mut c = location;
        c["cited_text"] = Value::String(text);
        c["document_index"] = json!(index);
        c["document_title"] = title;
        return Some(c);
    }
    None
}

/// A `document` block as the API validates it (the first problem, with the
/// API's pydantic-style location): a `source` of type `base64` (a PDF), `text`
/// (`text/plain`), `url`, `content` (a string or blocks) or `file`; `title` and
/// `context` strings; `citations` an object with a boolean `enabled`.
fn check_document(at: &str, block: &Value) -> Result<(), String> {
    let string = |v: Option<&Value>| matches!(v, None | Some(Value::Null | Value::String(_)));
    for field in ["title", "context"] {
        if !string(block.get(field)) {
            return Err(format!("{at}.{field}: Input should be a valid string"));
        }
    }
    match block.get("citations") {
        None | Some(Value::Null) => {}
        Some(Value::Object(c)) if matches!(c.get("enabled"), None | Some(Value::Bool(_))) => {}
        Some(_) => {
            return Err(format!(
                "{at}.citations.enabled: Input should be a valid boolean"
            ));
        }
    }
    let Some(source) = block.get("source").filter(|s| s.is_object()) else {
        return Err(format!("{at}.source: Field required"));
    };
    let kind = source.get("type").and_then(Value::as_str).unwrap_or("");
    let at = format!("{at}.source.{kind}");
    let text = |field: &str| match source.get(field) {
        Some(Value::String(_)) => Ok(()),
        None | Some(Value::Null) => Err(format!("{at}.{field}: Field required")),
        Some(_) => Err(format!("{at}.{field}: Input should be a valid string")),
    };
    match kind {
        "base64" | "text" => {
            let want = if kind == "base64" {
                "application/pdf"
            } else {
                "text/plain"
            };
            if source.get("media_type").and_then(Value::as_str) != Some(want) {
                return Err(format!("{at}.media_type: Input should be '{want}'"));
            }
            text("data")
        }
        "url" => text("url"),
        "file" => text("file_id"),
        "content" => match source.get("content") {
            Some(Value::String(_) | Value::Array(_)) => Ok(()),
            _ => Err(format!(
                "{at}.content: Input should be a valid string or list"
            )),
        },
        _ => Err(format!(
            "{at}.type: Input tag '{kind}' found using 'type' does not match any of the \
             expected tags: 'base64', 'content', 'text', 'url', 'file'"
        )),
    }
}

fn has_tool_result(msg: &Value) -> bool {
    msg.get("content")
        .and_then(Value::as_array)
        .is_some_and(|b| {
            b.iter()
                .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        })
}

fn conversation(system: Option<&Value>, messages: &[Value]) -> Conversation {
    let system_text = content_text(system);
    let text = |m: &Value| content_text(m.get("content"));
    let mut conv = Conversation {
        messages: messages.len() + usize::from(!system_text.is_empty()),
        prompt_chars: system_text.chars().count()
            + messages
                .iter()
                .map(|m| text(m).chars().count())
                .sum::<usize>(),
        ..Conversation::default()
    };
    let role = |m: &Value| m.get("role").and_then(Value::as_str) == Some("user");
    conv.after_tool = messages
        .last()
        .is_some_and(|m| role(m) && has_tool_result(m));
    conv.last_text = messages
        .iter()
        .rev()
        .find(|m| role(m))
        .map(text)
        .unwrap_or_default();
    conv
}

/// Whether a system block, a message content block or a tool has `cache_control`.
fn has_cache_control(body: &Map<String, Value>) -> bool {
    let marked = |items: Option<&Value>| {
        items
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|b| b.get("cache_control").is_some()))
    };
    marked(body.get("system"))
        || marked(body.get("tools"))
        || body
            .get("messages")
            .and_then(Value::as_array)
            .is_some_and(|ms| ms.iter().any(|m| marked(m.get("content"))))
}

fn pick_tool(body: &Map<String, Value>, conv: &Conversation) -> Option<String> {
    let tools = body
        .get("tools")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty())?;
    let choice = body.get("tool_choice");
    let choice_type = choice.and_then(|c| c.get("type")).and_then(Value::as_str);
    if conv.after_tool || choice_type == Some("none") {
        return None;
    }
    if choice_type == Some("tool")
        && let Some(name) = choice.and_then(|c| c.get("name")).and_then(Value::as_str)
    {
        return Some(name.to_string());
    }
    tools
        .iter()
        .find_map(|t| t.get("name").and_then(Value::as_str))
        .map(str::to_string)
}

/// Validates like the real API: the first problem found, as a 400.
fn validate<'a>(
    ctx: &Ctx<'_>,
    body: &'a Map<String, Value>,
) -> Result<(&'a str, u64, &'a [Value]), Reply> {
    if let Some(k) = body.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(invalid(
            ctx,
            &format!("{k}: Extra inputs are not permitted"),
        ));
    }
    let model = match body.get("model") {
        None | Some(Value::Null) => return Err(invalid(ctx, "model: Field required")),
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(invalid(ctx, "model: Input should be a valid string")),
    };
    let messages = match body.get("messages") {
        None | Some(Value::Null) => return Err(invalid(ctx, "messages: Field required")),
        Some(Value::Array(a)) if a.is_empty() => {
            return Err(invalid(ctx, "messages: at least one message is required"));
        }
        Some(Value::Array(a)) => a.as_slice(),
        Some(_) => return Err(invalid(ctx, "messages: Input should be a valid list")),
    };
    for (i, m) in messages.iter().enumerate() {
        match m.get("role").and_then(Value::as_str) {
            Some("user" | "assistant") => {}
            None => return Err(invalid(ctx, &format!("messages.{i}.role: Field required"))),
            Some(_) => {
                return Err(invalid(
                    ctx,
                    &format!("messages.{i}.role: Input should be 'user' or 'assistant'"),
                ));
            }
        }
        if m.get("content").is_none_or(Value::is_null) {
            return Err(invalid(
                ctx,
                &format!("messages.{i}.content: Field required"),
            ));
        }
        let blocks = m.get("content").and_then(Value::as_array);
        for (j, b) in blocks.into_iter().flatten().enumerate() {
            if b.get("type").and_then(Value::as_str) == Some("document") {
                check_document(&format!("messages.{i}.content.{j}.document"), b)
                    .map_err(|e| invalid(ctx, &e))?;
            }
        }
    }
    let max_tokens = match body.get("max_tokens") {
        None | Some(Value::Null) => return Err(invalid(ctx, "max_tokens: Field required")),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => n,
            Some(_) => {
                return Err(invalid(
                    ctx,
                    "max_tokens: Input should be greater than or equal to 1",
                ));
            }
            None => return Err(invalid(ctx, "max_tokens: Input should be a valid integer")),
        },
    };
    validate_output_config(ctx, body.get("output_config"))?;
    Ok((model, max_tokens, messages))
}

/// `output_config` as the API checks it: an object of `format` (`{"type":
/// "json_schema", "schema": {...}}`) and `effort`, nothing else.
fn validate_output_config(ctx: &Ctx<'_>, config: Option<&Value>) -> Result<(), Reply> {
    let config = match config {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(c)) => c,
        Some(_) => {
            return Err(invalid(
                ctx,
                "output_config: Input should be a valid dictionary or object to extract fields from",
            ));
        }
    };
    if let Some(k) = config
        .keys()
        .find(|k| !["format", "effort"].contains(&k.as_str()))
    {
        return Err(invalid(
            ctx,
            &format!("output_config.{k}: Extra inputs are not permitted"),
        ));
    }
    if let Some(effort) = config.get("effort").filter(|e| !e.is_null())
        && !effort.as_str().is_some_and(|e| EFFORTS.contains(&e))
    {
        return Err(invalid(
            ctx,
            "output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'",
        ));
    }
    match config.get("format") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(f)) => {
            if f.get("type").and_then(Value::as_str) != Some("json_schema") {
                return Err(invalid(
                    ctx,
                    "output_config.format.type: Input should be 'json_schema'",
                ));
            }
            match f.get("schema") {
                Some(Value::Object(_)) => Ok(()),
                None | Some(Value::Null) => {
                    Err(invalid(ctx, "output_config.format.schema: Field required"))
                }
                Some(_) => Err(invalid(
                    ctx,
                    "output_config.format.schema: Input should be a valid dictionary",
                )),
            }
        }
        Some(_) => Err(invalid(
            ctx,
            "output_config.format: Input should be a valid dictionary or object to extract fields from",
        )),
    }
}

pub(super) fn messages(ctx: &Ctx<'_>, parsed: Result<Value, serde_json::Error>) -> Reply {
    let body = match parsed {
        Ok(Value::Object(body)) => body,
        Ok(_) => {
            return invalid(
                ctx,
                "Input should be a valid dictionary or object to extract fields from",
            );
        }
        Err(e) => {
            return invalid(
                ctx,
                &format!("There was an issue with your request body: invalid JSON ({e})"),
            );
        }
    };
    let (model, max_tokens, messages) = match validate(ctx, &body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let conv = conversation(body.get("system"), messages);
    let tool = pick_tool(&body, &conv);
    let mut p = plan(
        &conv,
        tool,
        Some(max_tokens),
        &stop_list(body.get("stop_sequences")),
    );
    // Structured outputs: the text is the schema's simplest instance (validated above).
    if matches!(p.outcome, Outcome::Text { .. })
        && let Some(schema) = body
            .get("output_config")
            .and_then(|c| c.get("format"))
            .and_then(|f| f.get("schema"))
    {
        let json = schema_reply(schema, &conv.last_text);
        p.completion_tokens = tokens(json.chars().count()).max(1);
        p.outcome = Outcome::Text {
            text: json,
            finish: Finish::Stop,
        };
    }
    let (stop_reason, stop_sequence) = match &p.outcome {
        Outcome::Tool { .. } => ("tool_use", Value::Null),
        Outcome::Text {
            finish: Finish::Stop,
            ..
        } => ("end_turn", Value::Null),
        Outcome::Text {
            finish: Finish::Length,
            ..
        } => ("max_tokens", Value::Null),
        Outcome::Text {
            finish: Finish::StopSequence(s),
            ..
        } => ("stop_sequence", Value::from(s.as_str())),
    };
    let id = format!("msg_01{}", ctx.id(1, 22));
    let tool_id = format!("toolu_01{}", ctx.id(2, 22));
    // Prompt caching, deterministically: a request with any `cache_control` is answered
    // as if a quarter of its prompt was written to the cache and half read from it.
    let (created, read) = if has_cache_control(&body) {
        (p.prompt_tokens / 4, p.prompt_tokens / 2)
    } else {
        (0, 0)
    };
    let usage = |output: u64| {
        json!({
            "input_tokens": p.prompt_tokens - created - read,
            "cache_creation_input_tokens": created,
            "cache_read_input_tokens": read,
            "output_tokens": output,
            "service_tier": "standard"
        })
    };
    // A structured reply is the schema's JSON, which the API does not cite.
    let structured = body
        .get("output_config")
        .is_some_and(|c| c.get("format").is_some());
    let cited = match &p.outcome {
        Outcome::Text { .. } if !structured => citation(messages),
        _ => None,
    };
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if !stream {
        let content = match &p.outcome {
            Outcome::Text { text, .. } => match &cited {
                Some(c) => json!([{ "type": "text", "text": text, "citations": [c] }]),
                None => json!([{ "type": "text", "text": text }]),
            },
            Outcome::Tool { name, arguments } => {
                let input: Value = serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
                json!([{ "type": "tool_use", "id": tool_id, "name": name, "input": input }])
            }
        };
        return Reply::ok(json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": usage(p.completion_tokens),
        }));
    }
    let chunks = ctx.settings.chunks;
    let mut frames = vec![event_frame(
        "message_start",
        &json!({
            "type": "message_start",
            "message": {
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": usage(1),
            }
        }),
    )];
    let (block, deltas): (Value, Vec<Value>) = match &p.outcome {
        Outcome::Text { text, .. } => (
            json!({ "type": "text", "text": "" }),
            split_chars(text, chunks)
                .into_iter()
                .map(|t| json!({ "type": "text_delta", "text": t }))
                .collect(),
        ),
        Outcome::Tool { name, arguments } => (
            json!({ "type": "tool_use", "id": tool_id, "name": name, "input": {} }),
            split_chars(arguments, chunks)
                .into_iter()
                .map(|t| json!({ "type": "input_json_delta", "partial_json": t }))
                .collect(),
        ),
    };
    frames.push(event_frame(
        "content_block_start",
        &json!({ "type": "content_block_start", "index": 0, "content_block": block }),
    ));
    frames.push(event_frame("ping", &json!({ "type": "ping" })));
    // A cited text block's citations come as `citations_delta`s, before its text.
    let citations = cited
        .into_iter()
        .map(|c| json!({ "type": "citations_delta", "citation": c }));
    for delta in citations.chain(deltas) {
        frames.push(event_frame(
            "content_block_delta",
            &json!({ "type": "content_block_delta", "index": 0, "delta": delta }),
        ));
    }
    frames.push(event_frame(
        "content_block_stop",
        &json!({ "type": "content_block_stop", "index": 0 }),
    ));
    frames.push(event_frame(
        "message_delta",
        &json!({
            "type": "message_delta",
            "delta": { "stop_reason": stop_reason, "stop_sequence": stop_sequence },
            // Cumulative, input and cache counts included, as the API sends it now.
            "usage": {
                "input_tokens": p.prompt_tokens - created - read,
                "cache_creation_input_tokens": created,
                "cache_read_input_tokens": read,
                "output_tokens": p.completion_tokens
            }
        }),
    ));
    frames.push(event_frame(
        "message_stop",
        &json!({ "type": "message_stop" }),
    ));
    let error_frame = event_frame(
        "error",
        &json!({ "type": "error", "error": { "type": "overloaded_error", "message": "Overloaded" } }),
    );
    Reply::Sse {
        frames,
        error_frame,
    }
}
