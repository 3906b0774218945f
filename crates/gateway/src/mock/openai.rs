//! OpenAI and Mistral flavors (Mistral's API is OpenAI-shaped with its own
//! error body, strict field validation, usage on the last stream chunk and
//! 9-char tool call ids).
//!
//! References: <https://platform.openai.com/docs/api-reference/chat/create>,
//! <https://platform.openai.com/docs/api-reference/chat-streaming>,
//! <https://platform.openai.com/docs/api-reference/embeddings/create>,
//! <https://platform.openai.com/docs/guides/error-codes>,
//! <https://docs.mistral.ai/api/> (chat, embeddings),
//! <https://docs.mistral.ai/resources/error-glossary> (error format).

use axum::http::{HeaderMap, Method, Uri, header};
use serde_json::{Map, Value, json};

use super::common::{
    Conversation, Finish, Outcome, base64, data_frame, embedding, embedding_inputs,
    embedding_tokens, now_secs, openai_content_text, plan, split_chars, splitmix64, stop_list,
    structured, tokens,
};
use super::{Ctx, Flavor, Reply};

const FINGERPRINT: &str = "fp_asc_mock";

/// Top-level chat fields the OpenAI API accepts; others get a 400.
const OPENAI_CHAT_FIELDS: &[&str] = &[
    "model",
    "messages",
    "audio",
    "frequency_penalty",
    "function_call",
    "functions",
    "logit_bias",
    "logprobs",
    "max_completion_tokens",
    "max_tokens",
    "metadata",
    "modalities",
    "n",
    "parallel_tool_calls",
    "prediction",
    "presence_penalty",
    "prompt_cache_key",
    "prompt_cache_retention",
    "reasoning_effort",
    "response_format",
    "safety_identifier",
    "seed",
    "service_tier",
    "stop",
    "store",
    "stream",
    "stream_options",
    "temperature",
    "tool_choice",
    "tools",
    "top_logprobs",
    "top_p",
    "user",
    "verbosity",
    "web_search_options",
];

/// Top-level chat fields the Mistral API accepts; others get a 422.
const MISTRAL_CHAT_FIELDS: &[&str] = &[
    "model",
    "messages",
    "temperature",
    "top_p",
    "max_tokens",
    "stream",
    "stop",
    "random_seed",
    "response_format",
    "tools",
    "tool_choice",
    "presence_penalty",
    "frequency_penalty",
    "n",
    "prediction",
    "parallel_tool_calls",
    "prompt_mode",
    "safe_prompt",
    "metadata",
];

const OPENAI_EMBED_FIELDS: &[&str] = &["input", "model", "dimensions", "encoding_format", "user"];
const MISTRAL_EMBED_FIELDS: &[&str] = &[
    "model",
    "input",
    "output_dimension",
    "output_dtype",
    "encoding_format",
    "metadata",
];

fn mistral(ctx: &Ctx<'_>) -> bool {
    ctx.settings.flavor == Flavor::Mistral
}

/// The provider's error body: OpenAI `{"error":{message,type,param,code}}`,
/// Mistral `{"object":"error",message,type,param,code}`.
fn error_body(
    mistral: bool,
    message: Value,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Value {
    if mistral {
        json!({ "object": "error", "message": message, "type": kind, "param": param, "code": code })
    } else {
        json!({ "error": { "message": message, "type": kind, "param": param, "code": code } })
    }
}

fn err(
    ctx: &Ctx<'_>,
    status: u16,
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Reply {
    Reply::status(
        status,
        error_body(mistral(ctx), Value::from(message), kind, param, code),
    )
}

/// OpenAI 400 `invalid_request_error`.
fn invalid(ctx: &Ctx<'_>, message: &str, param: Option<&str>, code: Option<&str>) -> Reply {
    err(ctx, 400, message, "invalid_request_error", param, code)
}

/// Mistral's request validation error: 422 with a pydantic-style `detail`
/// list as the message (as reported in
/// <https://github.com/Gage-Technologies/mistral-go/pull/2> and
/// <https://github.com/mistralai/platform-docs-public/issues/7>).
fn mistral_422(kind: &str, loc: &[Value], msg: &str, input: Value) -> Reply {
    let mut l = vec![Value::from("body")];
    l.extend_from_slice(loc);
    let detail = json!({ "detail": [{ "type": kind, "loc": l, "msg": msg, "input": input }] });
    Reply::status(
        422,
        error_body(true, detail, "invalid_request_error", None, None),
    )
}

fn invalid_json(ctx: &Ctx<'_>) -> Reply {
    if mistral(ctx) {
        return err(
            ctx,
            400,
            "Invalid JSON body",
            "invalid_request_error",
            None,
            None,
        );
    }
    invalid(
        ctx,
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)",
        None,
        None,
    )
}

fn mask(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 7))
}

/// `Authorization: Bearer <key>` when a key is configured.
pub(super) fn auth(ctx: &Ctx<'_>, headers: &HeaderMap) -> Option<Reply> {
    let key = ctx.settings.api_key.as_deref()?;
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let bearer = value
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    if bearer == Some(key) {
        return None;
    }
    if mistral(ctx) {
        return Some(err(
            ctx,
            401,
            "Unauthorized",
            "authentication_error",
            None,
            None,
        ));
    }
    Some(match bearer.filter(|b| !b.is_empty()) {
        None => err(
            ctx,
            401,
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're accessing the API from your browser and are prompted for a username and password. You can obtain an API key from https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            None,
            None,
        ),
        Some(given) => err(
            ctx,
            401,
            &format!(
                "Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.",
                mask(given)
            ),
            "invalid_request_error",
            None,
            Some("invalid_api_key"),
        ),
    })
}

/// An injected failure with the provider's body for `status`.
pub(super) fn fault(ctx: &Ctx<'_>, status: u16) -> Reply {
    if mistral(ctx) {
        let (kind, msg) = match status {
            401 | 403 => ("authentication_error", "Unauthorized"),
            429 => ("rate_limit_error", "Requests rate limit exceeded"),
            500..=599 => ("server_error", "Internal server error"),
            _ => ("invalid_request_error", "Invalid request"),
        };
        let msg = if status == 503 {
            "Service unavailable"
        } else {
            msg
        };
        return err(ctx, status, msg, kind, None, None);
    }
    let (msg, kind, code): (&str, &str, Option<&str>) = match status {
        400 => ("Bad request.", "invalid_request_error", None),
        401 => (
            "Incorrect API key provided.",
            "invalid_request_error",
            Some("invalid_api_key"),
        ),
        403 => (
            "You are not allowed to sample from this model.",
            "invalid_request_error",
            None,
        ),
        404 => (
            "The model does not exist or you do not have access to it.",
            "invalid_request_error",
            Some("model_not_found"),
        ),
        429 => (
            "Rate limit reached for requests. Please try again in 1s.",
            "requests",
            Some("rate_limit_exceeded"),
        ),
        500 => (
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
        ),
        502 => ("Bad gateway.", "server_error", None),
        503 => (
            "The engine is currently overloaded, please try again later.",
            "server_error",
            None,
        ),
        504 => ("Gateway timeout.", "server_error", None),
        501 | 505..=599 => (
            "The server had an error processing your request.",
            "server_error",
            None,
        ),
        _ => ("Request failed.", "invalid_request_error", None),
    };
    err(ctx, status, msg, kind, None, code)
}

pub(super) fn not_found(ctx: &Ctx<'_>, method: &Method, uri: &Uri) -> Reply {
    if mistral(ctx) {
        return err(ctx, 404, "Not Found", "invalid_request_error", None, None);
    }
    invalid_with_status(ctx, 404, &format!("Invalid URL ({method} {})", uri.path()))
}

fn invalid_with_status(ctx: &Ctx<'_>, status: u16, message: &str) -> Reply {
    err(ctx, status, message, "invalid_request_error", None, None)
}

pub(super) fn models(ctx: &Ctx<'_>) -> Reply {
    let created = 1_700_000_000u64;
    let (ids, owner): (&[&str], &str) = if mistral(ctx) {
        (
            &[
                "mistral-large-latest",
                "mistral-small-latest",
                "mistral-embed",
            ],
            "mistralai",
        )
    } else {
        (
            &["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"],
            "system",
        )
    };
    let data: Vec<Value> = ids
        .iter()
        .map(|id| json!({ "id": id, "object": "model", "created": created, "owned_by": owner }))
        .collect();
    Reply::ok(json!({ "object": "list", "data": data }))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Common request checks: unknown fields, `model`, and the given array field.
fn check_common<'a>(
    ctx: &Ctx<'_>,
    body: &'a Map<String, Value>,
    allowed: &[&str],
    array_field: &str,
) -> Result<&'a str, Reply> {
    let m = mistral(ctx);
    if let Some((k, v)) = body.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        return Err(if m {
            mistral_422(
                "extra_forbidden",
                &[Value::from(k.as_str())],
                "Extra inputs are not permitted",
                v.clone(),
            )
        } else {
            invalid(
                ctx,
                &format!("Unrecognized request argument supplied: {k}"),
                None,
                None,
            )
        });
    }
    let model = match body.get("model") {
        Some(Value::String(s)) if !s.is_empty() => s.as_str(),
        other => {
            return Err(if m {
                match other {
                    None | Some(Value::Null) => mistral_422(
                        "missing",
                        &[Value::from("model")],
                        "Field required",
                        Value::Object(body.clone()),
                    ),
                    Some(v) => mistral_422(
                        "string_type",
                        &[Value::from("model")],
                        "Input should be a valid string",
                        v.clone(),
                    ),
                }
            } else {
                invalid(ctx, "you must provide a model parameter", None, None)
            });
        }
    };
    match body.get(array_field) {
        None | Some(Value::Null) if array_field == "messages" => Err(if m {
            mistral_422(
                "missing",
                &[Value::from("messages")],
                "Field required",
                Value::Object(body.clone()),
            )
        } else {
            invalid(
                ctx,
                "Missing required parameter: 'messages'.",
                Some("messages"),
                Some("missing_required_parameter"),
            )
        }),
        Some(v) if array_field == "messages" && !v.is_array() => Err(if m {
            mistral_422(
                "list_type",
                &[Value::from("messages")],
                "Input should be a valid list",
                v.clone(),
            )
        } else {
            invalid(
                ctx,
                &format!(
                    "Invalid type for 'messages': expected an array of objects, but got {} instead.",
                    type_name(v)
                ),
                Some("messages"),
                Some("invalid_type"),
            )
        }),
        Some(Value::Array(a)) if array_field == "messages" && a.is_empty() => Err(if m {
            mistral_422(
                "too_short",
                &[Value::from("messages")],
                "List should have at least 1 item after validation, not 0",
                json!([]),
            )
        } else {
            invalid(
                ctx,
                "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
                Some("messages"),
                Some("empty_array"),
            )
        }),
        _ => Ok(model),
    }
}

/// Document parts as each API validates them. OpenAI: a `file` part's `file`
/// holds `file_data` (a base64 data URL, with a `filename`) or a `file_id`; it
/// has no `document_url` parts. Mistral: a `document_url` chunk holds a string
/// `document_url`; its `file` chunk a string `file_id` (no nested `file`).
/// Documents contribute no text to the reply or the usage (a PDF is not read).
fn check_documents(ctx: &Ctx<'_>, messages: &[Value]) -> Result<(), Reply> {
    let m = mistral(ctx);
    for (i, msg) in messages.iter().enumerate() {
        let parts = msg.get("content").and_then(Value::as_array);
        for (j, part) in parts.into_iter().flatten().enumerate() {
            let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
            let p = format!("messages[{i}].content[{j}]");
            let loc = |field: &str| {
                [
                    Value::from("messages"),
                    Value::from(i),
                    Value::from("content"),
                    Value::from(j),
                    Value::from(kind),
                    Value::from(field),
                ]
            };
            let (field, present) = match (kind, m) {
                ("document_url", true) => ("document_url", part.get("document_url")),
                ("file", true) => ("file_id", part.get("file_id")),
                _ => ("", None),
            };
            if !field.is_empty() && !present.is_some_and(Value::is_string) {
                return Err(mistral_422(
                    "missing",
                    &loc(field),
                    "Field required",
                    part.clone(),
                ));
            }
            match (kind, m) {
                ("document_url", false) => {
                    return Err(invalid(
                        ctx,
                        "Invalid value: 'document_url'. Supported values are: 'text', 'image_url', 'input_audio', 'refusal', 'audio', and 'file'.",
                        Some(&format!("{p}.type")),
                        Some("invalid_value"),
                    ));
                }
                ("file", false) => {
                    let file = part.get("file");
                    let data = file
                        .and_then(|f| f.get("file_data"))
                        .and_then(Value::as_str);
                    let named = file
                        .and_then(|f| f.get("filename"))
                        .is_some_and(Value::is_string);
                    let id = file
                        .and_then(|f| f.get("file_id"))
                        .is_some_and(Value::is_string);
                    let data_ok = data.is_some_and(|d| {
                        d.strip_prefix("data:")
                            .and_then(|d| d.split_once(','))
                            .is_some_and(|(meta, _)| meta.ends_with(";base64"))
                    });
                    if data.is_some() && !data_ok {
                        return Err(invalid(
                            ctx,
                            &format!(
                                "Invalid value for '{p}.file.file_data': expected a base64-encoded data URL with an application/pdf MIME type."
                            ),
                            Some(&format!("{p}.file.file_data")),
                            Some("invalid_value"),
                        ));
                    }
                    // As OpenAI answers a `file_data` without a `filename`.
                    if !(id || (data_ok && named)) {
                        return Err(invalid(
                            ctx,
                            &format!("Missing required parameter: '{p}.file.file_id'."),
                            Some(&format!("{p}.file.file_id")),
                            Some("missing_required_parameter"),
                        ));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

fn role(m: &Value) -> &str {
    m.get("role").and_then(Value::as_str).unwrap_or("")
}

fn conversation(messages: &[Value]) -> Conversation {
    let text = |m: &Value| openai_content_text(m.get("content"));
    let mut conv = Conversation {
        messages: messages.len(),
        prompt_chars: messages.iter().map(|m| text(m).chars().count()).sum(),
        ..Conversation::default()
    };
    let trailing: Vec<&Value> = messages
        .iter()
        .rev()
        .take_while(|m| role(m) == "tool")
        .collect();
    if trailing.is_empty() {
        conv.last_text = messages
            .iter()
            .rev()
            .find(|m| role(m) == "user")
            .map(text)
            .unwrap_or_default();
    } else {
        conv.after_tool = true;
        conv.last_text = trailing.iter().rev().map(|m| text(m)).collect();
    }
    conv
}

/// The tool to call, if tools are offered and allowed.
fn pick_tool(body: &Map<String, Value>, conv: &Conversation) -> Option<String> {
    let tools = body
        .get("tools")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty())?;
    let choice = body.get("tool_choice");
    if conv.after_tool || choice.and_then(Value::as_str) == Some("none") {
        return None;
    }
    let tool_name = |t: &Value| {
        t.pointer("/function/name")
            .or_else(|| t.pointer("/custom/name"))
            .or_else(|| t.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    choice
        .and_then(|c| c.pointer("/function/name").or_else(|| c.get("name")))
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| tools.iter().find_map(tool_name))
}

pub(super) fn chat(ctx: &Ctx<'_>, parsed: Result<Value, serde_json::Error>) -> Reply {
    let m = mistral(ctx);
    let Ok(Value::Object(body)) = parsed else {
        return invalid_json(ctx);
    };
    let allowed = if m {
        MISTRAL_CHAT_FIELDS
    } else {
        OPENAI_CHAT_FIELDS
    };
    let model = match check_common(ctx, &body, allowed, "messages") {
        Ok(model) => model,
        Err(r) => return r,
    };
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if let Some((i, _)) = messages
        .iter()
        .enumerate()
        .find(|(_, msg)| msg.get("role").and_then(Value::as_str).is_none())
    {
        return if m {
            mistral_422(
                "missing",
                &[Value::from("messages"), Value::from(i), Value::from("role")],
                "Field required",
                messages[i].clone(),
            )
        } else {
            invalid(
                ctx,
                &format!("Missing required parameter: 'messages[{i}].role'."),
                Some(&format!("messages[{i}].role")),
                Some("missing_required_parameter"),
            )
        };
    }
    if let Err(r) = check_documents(ctx, messages) {
        return r;
    }
    let mut max_tokens = None;
    for field in ["max_completion_tokens", "max_tokens"] {
        match body.get(field) {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_u64() {
                Some(n) if n >= 1 || m => {
                    max_tokens = Some(n);
                    break;
                }
                _ if m => {
                    return mistral_422(
                        "int_type",
                        &[Value::from(field)],
                        "Input should be a valid integer",
                        v.clone(),
                    );
                }
                _ => {
                    return invalid(
                        ctx,
                        &format!(
                            "Invalid '{field}': integer below minimum value. Expected a value >= 1, but got {v} instead."
                        ),
                        Some(field),
                        Some("integer_below_min_value"),
                    );
                }
            },
        }
    }
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let stream_options = body.get("stream_options").filter(|v| !v.is_null());
    if !m && stream_options.is_some() && !stream {
        return invalid(
            ctx,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            Some("stream_options"),
            None,
        );
    }
    let include_usage = stream_options
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true);

    let conv = conversation(messages);
    let tool = pick_tool(&body, &conv);
    let mut p = plan(&conv, tool, max_tokens, &stop_list(body.get("stop")));
    if matches!(p.outcome, Outcome::Text { .. })
        && let Some(json) = body
            .get("response_format")
            .and_then(|f| structured(f, &conv.last_text))
    {
        p.completion_tokens = tokens(json.chars().count()).max(1);
        p.outcome = Outcome::Text {
            text: json,
            finish: Finish::Stop,
        };
    }
    let r = Render {
        mistral: m,
        model,
        created: now_secs(),
        id: if m {
            format!(
                "{:016x}{:016x}",
                splitmix64(ctx.id_seed ^ 1),
                splitmix64(ctx.id_seed ^ 2)
            )
        } else {
            format!("chatcmpl-{}", ctx.id(1, 29))
        },
        tool_id: if m {
            ctx.id(2, 9)
        } else {
            format!("call_{}", ctx.id(2, 24))
        },
        usage: usage(m, p.prompt_tokens, p.completion_tokens),
        outcome: p.outcome,
    };
    if stream {
        Reply::Sse {
            frames: r.frames(ctx.settings.chunks, include_usage),
            error_frame: stream_error(m),
        }
    } else {
        Reply::ok(r.json())
    }
}

/// OpenAI caches prompt prefixes of 1024 tokens or more, in steps of 128, by itself. The
/// mock, which keeps no state, says half of every prompt was read from the cache: the
/// largest multiple of 128 up to half the prompt, when that is 1024 or more (prompts of
/// 2048 tokens and longer), else nothing.
pub(super) fn cached_tokens(prompt: u64) -> u64 {
    let half = prompt / 2 / 128 * 128;
    if half >= 1024 { half } else { 0 }
}

fn usage(mistral: bool, prompt: u64, completion: u64) -> Value {
    if mistral {
        json!({ "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion })
    } else {
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": { "cached_tokens": cached_tokens(prompt), "audio_tokens": 0 },
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0
            }
        })
    }
}

fn stream_error(mistral: bool) -> String {
    let body = if mistral {
        error_body(
            true,
            Value::from("Internal server error"),
            "server_error",
            None,
            None,
        )
    } else {
        error_body(
            false,
            Value::from("The server had an error while processing your request. Sorry about that!"),
            "server_error",
            None,
            None,
        )
    };
    data_frame(&body)
}

struct Render<'a> {
    mistral: bool,
    model: &'a str,
    created: u64,
    id: String,
    tool_id: String,
    usage: Value,
    outcome: Outcome,
}

impl Render<'_> {
    fn finish(&self) -> &'static str {
        match &self.outcome {
            Outcome::Tool { .. } => "tool_calls",
            Outcome::Text {
                finish: Finish::Length,
                ..
            } => "length",
            Outcome::Text { .. } => "stop",
        }
    }

    fn json(&self) -> Value {
        let message = match (&self.outcome, self.mistral) {
            (Outcome::Text { text, .. }, false) => {
                json!({ "role": "assistant", "content": text, "refusal": null, "annotations": [] })
            }
            (Outcome::Text { text, .. }, true) => {
                json!({ "role": "assistant", "tool_calls": null, "content": text })
            }
            (Outcome::Tool { name, arguments }, false) => json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{
                    "id": self.tool_id,
                    "type": "function",
                    "function": { "name": name, "arguments": arguments }
                }],
                "refusal": null,
                "annotations": []
            }),
            (Outcome::Tool { name, arguments }, true) => json!({
                "role": "assistant",
                "content": "",
                "tool_calls": [{
                    "id": self.tool_id,
                    "type": "function",
                    "function": { "name": name, "arguments": arguments },
                    "index": 0
                }]
            }),
        };
        let mut out = json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "message": message, "finish_reason": self.finish() }],
            "usage": self.usage,
        });
        if !self.mistral {
            out["choices"][0]["logprobs"] = Value::Null;
            out["service_tier"] = Value::from("default");
            out["system_fingerprint"] = Value::from(FINGERPRINT);
        }
        out
    }

    fn chunk(
        &self,
        delta: Value,
        finish: Option<&str>,
        usage: Option<&Value>,
        include_usage: bool,
    ) -> String {
        let mut choice = json!({ "index": 0, "delta": delta, "finish_reason": finish });
        let mut c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
        });
        if !self.mistral {
            choice["logprobs"] = Value::Null;
            c["system_fingerprint"] = Value::from(FINGERPRINT);
        }
        c["choices"] = json!([choice]);
        if let Some(u) = usage {
            c["usage"] = u.clone();
        } else if include_usage {
            c["usage"] = Value::Null;
        }
        data_frame(&c)
    }

    fn frames(&self, chunks: u32, include_usage: bool) -> Vec<String> {
        let mut out = Vec::new();
        if self.mistral {
            out.push(self.chunk(
                json!({ "role": "assistant", "content": "" }),
                None,
                None,
                false,
            ));
            match &self.outcome {
                Outcome::Text { text, .. } => {
                    let pieces = split_chars(text, chunks);
                    if pieces.is_empty() {
                        out.push(self.chunk(
                            json!({ "content": "" }),
                            Some(self.finish()),
                            Some(&self.usage),
                            false,
                        ));
                    }
                    for (i, piece) in pieces.iter().enumerate() {
                        let last = i + 1 == pieces.len();
                        out.push(self.chunk(
                            json!({ "content": piece }),
                            last.then(|| self.finish()),
                            last.then_some(&self.usage),
                            false,
                        ));
                    }
                }
                Outcome::Tool { name, arguments } => {
                    let delta = json!({ "tool_calls": [{
                        "id": self.tool_id,
                        "function": { "name": name, "arguments": arguments },
                        "index": 0
                    }] });
                    out.push(self.chunk(delta, Some(self.finish()), Some(&self.usage), false));
                }
            }
        } else {
            match &self.outcome {
                Outcome::Text { text, .. } => {
                    out.push(self.chunk(
                        json!({ "role": "assistant", "content": "", "refusal": null }),
                        None,
                        None,
                        include_usage,
                    ));
                    for piece in split_chars(text, chunks) {
                        out.push(self.chunk(
                            json!({ "content": piece }),
                            None,
                            None,
                            include_usage,
                        ));
                    }
                }
                Outcome::Tool { name, arguments } => {
                    let head = json!({
                        "role": "assistant",
                        "content": null,
                        "tool_calls": [{
                            "index": 0,
                            "id": self.tool_id,
                            "type": "function",
                            "function": { "name": name, "arguments": "" }
                        }],
                        "refusal": null
                    });
                    out.push(self.chunk(head, None, None, include_usage));
                    for piece in split_chars(arguments, chunks) {
                        let delta = json!({ "tool_calls": [{ "index": 0, "function": { "arguments": piece } }] });
                        out.push(self.chunk(delta, None, None, include_usage));
                    }
                }
            }
            out.push(self.chunk(json!({}), Some(self.finish()), None, include_usage));
            if include_usage {
                let mut c = json!({
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "system_fingerprint": FINGERPRINT,
                    "choices": [],
                });
                c["usage"] = self.usage.clone();
                out.push(data_frame(&c));
            }
        }
        out.push("data: [DONE]\n\n".to_string());
        out
    }
}

pub(super) fn embeddings(ctx: &Ctx<'_>, parsed: Result<Value, serde_json::Error>) -> Reply {
    let m = mistral(ctx);
    let Ok(Value::Object(body)) = parsed else {
        return invalid_json(ctx);
    };
    let allowed = if m {
        MISTRAL_EMBED_FIELDS
    } else {
        OPENAI_EMBED_FIELDS
    };
    let model = match check_common(ctx, &body, allowed, "input") {
        Ok(model) => model,
        Err(r) => return r,
    };
    let inputs = match body.get("input") {
        None | Some(Value::Null) => {
            return if m {
                mistral_422(
                    "missing",
                    &[Value::from("input")],
                    "Field required",
                    Value::Object(body.clone()),
                )
            } else {
                invalid(
                    ctx,
                    "Missing required parameter: 'input'.",
                    Some("input"),
                    Some("missing_required_parameter"),
                )
            };
        }
        Some(v) => match embedding_inputs(v).filter(|i| i.iter().all(|s| !s.is_empty())) {
            Some(i) => i,
            None if m => {
                return mistral_422(
                    "value_error",
                    &[Value::from("input")],
                    "Invalid input",
                    v.clone(),
                );
            }
            None => {
                return invalid(
                    ctx,
                    "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
                    None,
                    None,
                );
            }
        },
    };
    let dims_field = if m { "output_dimension" } else { "dimensions" };
    let dims = match body.get(dims_field) {
        None | Some(Value::Null) => 8,
        Some(v) => match v.as_u64().filter(|d| (1..=4096).contains(d)) {
            Some(d) => d as usize,
            None if m => {
                return mistral_422(
                    "int_type",
                    &[Value::from(dims_field)],
                    "Input should be a valid integer",
                    v.clone(),
                );
            }
            None => {
                return invalid(
                    ctx,
                    &format!("Invalid value for 'dimensions' = {v}. Must be between 1 and 4096."),
                    Some("dimensions"),
                    None,
                );
            }
        },
    };
    let base64_out = match body.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) if s == "float" => false,
        Some(Value::String(s)) if s == "base64" => true,
        Some(v) if m => {
            return mistral_422(
                "enum",
                &[Value::from("encoding_format")],
                "Input should be 'float' or 'base64'",
                v.clone(),
            );
        }
        Some(v) => {
            return invalid(
                ctx,
                &format!(
                    "Invalid value for 'encoding_format': {v}. Supported values are: 'float' and 'base64'."
                ),
                Some("encoding_format"),
                Some("invalid_value"),
            );
        }
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let v = embedding(text, dims);
            let emb = if base64_out {
                Value::from(base64(
                    &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
                ))
            } else {
                Value::from(v)
            };
            json!({ "object": "embedding", "index": i, "embedding": emb })
        })
        .collect();
    let tokens = embedding_tokens(&inputs);
    if m {
        Reply::ok(json!({
            "id": format!("{:016x}{:016x}", splitmix64(ctx.id_seed ^ 3), splitmix64(ctx.id_seed ^ 4)),
            "object": "list",
            "data": data,
            "model": model,
            "usage": { "prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens }
        }))
    } else {
        Reply::ok(json!({
            "object": "list",
            "data": data,
            "model": model,
            "usage": { "prompt_tokens": tokens, "total_tokens": tokens }
        }))
    }
}
