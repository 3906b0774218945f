//! Mock upstream providers (contract section 8, `asc mock-provider`).
//!
//! A stand-in upstream that speaks each provider's *real* wire format, built on
//! `serde_json::Value` and written independently of `asc-wire`, so that it
//! checks the gateway's adapters rather than mirroring them. Formats follow the
//! public references:
//!
//! * OpenAI Chat Completions, streaming chunks, `stream_options.include_usage`
//!   and Embeddings: <https://platform.openai.com/docs/api-reference/chat/create>,
//!   <https://platform.openai.com/docs/api-reference/chat-streaming>,
//!   <https://platform.openai.com/docs/api-reference/embeddings/create>,
//!   <https://platform.openai.com/docs/guides/error-codes>.
//! * Anthropic Messages, streaming events and errors:
//!   <https://docs.anthropic.com/en/api/messages>,
//!   <https://docs.anthropic.com/en/api/messages-streaming>,
//!   <https://docs.anthropic.com/en/api/errors> (e.g. 529 `overloaded_error`).
//! * Mistral chat/embeddings (base URL `https://api.mistral.ai/v1`) and the
//!   error format `{"object":"error","message","type","param","code"}`:
//!   <https://docs.mistral.ai/api/>, <https://docs.mistral.ai/resources/error-glossary>.
//!
//! # Endpoints
//! * openai, mistral: `POST /v1/chat/completions`, `POST /v1/embeddings`, `GET /v1/models`
//! * anthropic: `POST /v1/messages`, `GET /v1/models`
//! * every flavor: `GET /mock/stats` ([`MockStats`] as JSON), `POST /mock/reset`
//!   (zeroes the stats and restarts the fault sequence). Any other path answers
//!   404 with the provider's error body.
//!
//! # Behaviour
//! * Reply text: `echo: ` + the text of the last user message (string content or
//!   concatenated text parts/blocks; Anthropic tool_result blocks count as text, and
//!   so do text documents: a `text` source's data, a `content` source's text).
//!   Documents are validated as the real APIs do (Anthropic `document` blocks and
//!   their sources; OpenAI `file` parts with `file_data` and `filename`, or
//!   `file_id`; Mistral `document_url` chunks); a PDF, a URL or a file id adds no
//!   text, so the usage stays a function of the request's texts.
//! * When the request offers tools and does not forbid them (OpenAI/Mistral
//!   `tool_choice: "none"`, Anthropic `{"type":"none"}`) and the conversation does
//!   not end with tool results, the reply calls the first tool (or the one named
//!   by `tool_choice`) with arguments `{"input": "<text of last user message>"}`.
//!   After tool results (trailing `role: "tool"` messages, or an Anthropic user
//!   message holding `tool_result` blocks) the reply is `echo: <tool result text>`.
//! * Structured output (OpenAI and Mistral `response_format`, Anthropic
//!   `output_config.format`): a JSON Schema is answered with the schema's simplest
//!   instance, its strings `echo: <text>` (enums their first value, numbers 0,
//!   booleans false, arrays empty, `$ref`s into `$defs` followed), as the text of the
//!   reply, JSON and streamed alike, so the SDKs' `chat.completions.parse` and
//!   `messages.parse` work against it; OpenAI/Mistral `json_object` with
//!   `{"echo": "echo: <text>"}`. Anthropic checks `output_config` as its API does
//!   (`format.type` `json_schema` with an object `schema`, `effort` one of `low`,
//!   `medium`, `high`, `xhigh`, `max`, no other key; the deprecated beta top-level
//!   `output_format` is refused like any unknown field, so a gateway that leaks it
//!   shows).
//! * Usage: see [`common`] — prompt = `ceil(chars/4) + 3 * messages`, completion
//!   = `max(1, ceil(reply chars/4))`; identical in JSON and streamed replies.
//!   Anthropic prompt caching: a request with `cache_control` on any system block,
//!   message content block or tool reports `cache_creation_input_tokens` =
//!   prompt / 4 and `cache_read_input_tokens` = prompt / 2 (integer division), and
//!   `input_tokens` the rest; without any, both are 0. OpenAI's automatic prompt
//!   cache: `prompt_tokens_details.cached_tokens` is the largest multiple of 128 up to
//!   half the prompt when that is 1024 or more (prompts of 2048 tokens and longer), else
//!   0 (Mistral reports no cache). Anthropic citations: when the request's
//!   documents have `citations.enabled`, a text reply cites the first such document
//!   whole (`char_location` of a text, `page_location` page 1 of a PDF, URL or file,
//!   `content_block_location` block 0 of custom content; `document_index` counts the
//!   request's documents), in JSON as the text block's `citations`, streamed as a
//!   `citations_delta` before the text. `message_delta`'s usage is cumulative with
//!   the input and cache counts, as the API sends it. Thinking blocks in the history
//!   are accepted and not echoed (the mock never thinks).
//! * `max_tokens` (`max_completion_tokens` too for OpenAI) truncates the text to
//!   `max_tokens * 4` chars (`length` / `max_tokens`); `stop` / `stop_sequences`
//!   cut at the first occurrence (`stop` / `stop_sequence`). Tool calls are not
//!   truncated.
//! * Validation like the real APIs: invalid JSON → 400; missing `model` /
//!   `messages` → 400 (`invalid_request_error`; Mistral answers 422
//!   `invalid_request_error` whose `message` is a pydantic `detail` list, as its
//!   API does — see e.g. <https://github.com/Gage-Technologies/mistral-go/pull/2>);
//!   Anthropic missing `max_tokens` → 400; unknown top-level fields are refused
//!   (OpenAI 400 "Unrecognized request argument", Anthropic 400 "Extra inputs are
//!   not permitted", Mistral 422 `extra_forbidden`) so leaked fields from another
//!   provider's format show up; OpenAI `stream_options` without `stream` → 400.
//! * Streaming: OpenAI `chat.completion.chunk`s (role delta, `chunks` content
//!   pieces or a tool-call header delta then argument pieces, a finish chunk, an
//!   optional usage chunk with `choices: []`, `data: [DONE]`). Mistral: the same
//!   framing, but the last content chunk carries `finish_reason` and `usage`, and
//!   a tool call comes whole in one delta (as Mistral sends it). Anthropic:
//!   `message_start`, `content_block_start`, `ping`, `content_block_delta`s,
//!   `content_block_stop`, `message_delta`, `message_stop`.
//! * Embeddings: per input an L2-normalised vector (8 dims, or `dimensions` /
//!   `output_dimension`) from FNV-1a of the text driving splitmix64; OpenAI
//!   `encoding_format: "base64"` gives little-endian f32 bytes in base64.
//!
//! # Knobs ([`MockSettings`])
//! `ttft_ms` delays the first byte (headers included) of every reply;
//! `latency_ms` delays the whole reply (JSON: `ttft + latency` before answering;
//! streams: spread evenly between the frames after the first); `chunks` pieces
//! per streamed text; `fail_rate` share of chat/embeddings requests answered with
//! `fail_status` and the provider's error body (drawn from splitmix64 of `seed`
//! and a request counter, so a run is reproducible); 429 adds `retry-after: 1`;
//! `api_key` requires `Authorization: Bearer` (openai, mistral) or `x-api-key`
//! (anthropic). Anthropic always requires `anthropic-version` (400 without).
//!
//! # Test hooks (request headers)
//! * `x-mock-fail: <status>` — answer this request with that status and the
//!   provider's error body (any endpoint; counts in `failures_injected`).
//! * `x-mock-stall-ms: <n>` — stall `n` ms before the headers (on top of ttft).
//! * `x-mock-truncate-after: <k>` — a stream ends cleanly after `k` SSE frames,
//!   without the terminator (`[DONE]` / `message_stop`).
//! * `x-mock-reset-after: <k>` — a stream is cut after `k` frames with an
//!   aborted body (the connection is reset, no final chunk).
//! * `x-mock-stream-error-after: <k>` — after `k` frames the stream sends the
//!   provider's in-stream error event (OpenAI/Mistral `data: {"error"...}`,
//!   Anthropic `event: error` with `overloaded_error`) and ends.

mod anthropic;
mod common;
mod openai;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;

/// Which provider's wire format the mock speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    Anthropic,
    Mistral,
    #[serde(rename = "openai")]
    OpenAi,
}

impl Flavor {
    /// The lowercase name (`anthropic`, `mistral`, `openai`).
    pub fn as_str(self) -> &'static str {
        match self {
            Flavor::Anthropic => "anthropic",
            Flavor::Mistral => "mistral",
            Flavor::OpenAi => "openai",
        }
    }
}

impl std::fmt::Display for Flavor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Flavor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "anthropic" => Ok(Flavor::Anthropic),
            "mistral" => Ok(Flavor::Mistral),
            "openai" => Ok(Flavor::OpenAi),
            other => Err(format!(
                "unknown flavor `{other}` (expected openai, anthropic or mistral)"
            )),
        }
    }
}

/// The mock's knobs (see the module docs).
#[derive(Clone, Debug)]
pub struct MockSettings {
    pub flavor: Flavor,
    pub ttft_ms: u64,
    pub latency_ms: u64,
    pub chunks: u32,
    pub fail_rate: f64,
    pub fail_status: u16,
    pub seed: u64,
    pub api_key: Option<String>,
}

impl MockSettings {
    /// Defaults: no delays, 4 chunks, no faults (status 500 when enabled),
    /// seed 0, no auth.
    pub fn new(flavor: Flavor) -> Self {
        MockSettings {
            flavor,
            ttft_ms: 0,
            latency_ms: 0,
            chunks: 4,
            fail_rate: 0.0,
            fail_status: 500,
            seed: 0,
            api_key: None,
        }
    }
}

/// A snapshot of what the mock has seen since start or the last reset.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct MockStats {
    /// API requests (every path except `/mock/*`).
    pub requests: u64,
    /// Requests to the chat endpoint (streaming or not, answered or failed).
    pub chat: u64,
    /// Streamed replies started.
    pub streams: u64,
    /// Requests to the embeddings endpoint.
    pub embeddings: u64,
    /// Requests answered with an injected fault (`fail_rate`, `x-mock-fail`).
    pub failures_injected: u64,
    /// Streams whose client went away before the last frame was handed over.
    pub aborted: u64,
    /// Headers of the last API request; auth header values are `<redacted>`.
    pub last_headers: Vec<(String, String)>,
    /// Body of the last API request, when it was JSON.
    pub last_body: Option<Value>,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    chat: AtomicU64,
    streams: AtomicU64,
    embeddings: AtomicU64,
    failures_injected: AtomicU64,
    aborted: AtomicU64,
    /// Draw counter for `fail_rate`.
    fault_seq: AtomicU64,
    /// Counter for ids.
    nonce: AtomicU64,
}

#[derive(Default)]
struct Last {
    headers: Vec<(String, String)>,
    body: Option<Value>,
}

/// A mock provider: settings plus stats.
pub struct Mock {
    settings: MockSettings,
    counters: Counters,
    last: Mutex<Last>,
}

/// What a flavor handler decided to answer.
pub(crate) enum Reply {
    Json {
        status: StatusCode,
        body: Value,
        headers: Vec<(HeaderName, String)>,
    },
    Sse {
        frames: Vec<String>,
        error_frame: String,
    },
}

impl Reply {
    pub(crate) fn ok(body: Value) -> Reply {
        Reply::Json {
            status: StatusCode::OK,
            body,
            headers: Vec::new(),
        }
    }

    pub(crate) fn status(status: u16, body: Value) -> Reply {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = if status == StatusCode::TOO_MANY_REQUESTS {
            vec![(header::RETRY_AFTER, "1".to_string())]
        } else {
            Vec::new()
        };
        Reply::Json {
            status,
            body,
            headers,
        }
    }
}

/// Per-request context handed to the flavor handlers.
pub(crate) struct Ctx<'a> {
    pub settings: &'a MockSettings,
    /// Seed for this request's ids.
    pub id_seed: u64,
}

impl Ctx<'_> {
    /// A deterministic alphanumeric id part.
    pub(crate) fn id(&self, salt: u64, len: usize) -> String {
        common::alnum(len, self.id_seed ^ salt.wrapping_mul(0x2545_F491_4F6C_DD1D))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Embeddings,
    Models,
    NotFound,
}

#[derive(Default)]
struct Hooks {
    fail: Option<u16>,
    stall_ms: u64,
    truncate_after: Option<usize>,
    reset_after: Option<usize>,
    error_after: Option<usize>,
}

impl Hooks {
    fn from_headers(h: &HeaderMap) -> Hooks {
        fn num<T: std::str::FromStr>(h: &HeaderMap, name: &str) -> Option<T> {
            h.get(name)?.to_str().ok()?.trim().parse().ok()
        }
        Hooks {
            fail: num(h, "x-mock-fail"),
            stall_ms: num(h, "x-mock-stall-ms").unwrap_or(0),
            truncate_after: num(h, "x-mock-truncate-after"),
            reset_after: num(h, "x-mock-reset-after"),
            error_after: num(h, "x-mock-stream-error-after"),
        }
    }
}

const SENSITIVE: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "cookie",
    "x-goog-api-key",
];

impl Mock {
    /// A new mock with zeroed stats.
    pub fn new(settings: MockSettings) -> Arc<Mock> {
        Arc::new(Mock {
            settings,
            counters: Counters::default(),
            last: Mutex::new(Last::default()),
        })
    }

    /// The settings this mock runs with.
    pub fn settings(&self) -> &MockSettings {
        &self.settings
    }

    /// The HTTP routes of this mock's flavor (see the module docs).
    pub fn router(self: &Arc<Self>) -> Router {
        let api = match self.settings.flavor {
            Flavor::Anthropic => Router::new().route("/v1/messages", post(chat_h)),
            Flavor::OpenAi | Flavor::Mistral => Router::new()
                .route("/v1/chat/completions", post(chat_h))
                .route("/v1/embeddings", post(embeddings_h)),
        };
        api.route("/v1/models", get(models_h))
            .route("/mock/stats", get(stats_h))
            .route("/mock/reset", post(reset_h))
            .fallback(fallback_h)
            .with_state(Arc::clone(self))
    }

    /// A snapshot of the stats.
    pub fn stats(&self) -> MockStats {
        let c = &self.counters;
        let last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        MockStats {
            requests: c.requests.load(Ordering::Relaxed),
            chat: c.chat.load(Ordering::Relaxed),
            streams: c.streams.load(Ordering::Relaxed),
            embeddings: c.embeddings.load(Ordering::Relaxed),
            failures_injected: c.failures_injected.load(Ordering::Relaxed),
            aborted: c.aborted.load(Ordering::Relaxed),
            last_headers: last.headers.clone(),
            last_body: last.body.clone(),
        }
    }

    /// Zeroes the stats and restarts the fault and id sequences.
    pub fn reset(&self) {
        let c = &self.counters;
        for a in [
            &c.requests,
            &c.chat,
            &c.streams,
            &c.embeddings,
            &c.failures_injected,
            &c.aborted,
            &c.fault_seq,
            &c.nonce,
        ] {
            a.store(0, Ordering::Relaxed);
        }
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Last::default();
    }

    fn record(&self, ep: Endpoint, headers: &HeaderMap, body: &Bytes) {
        let c = &self.counters;
        c.requests.fetch_add(1, Ordering::Relaxed);
        match ep {
            Endpoint::Chat => c.chat.fetch_add(1, Ordering::Relaxed),
            Endpoint::Embeddings => c.embeddings.fetch_add(1, Ordering::Relaxed),
            Endpoint::Models | Endpoint::NotFound => 0,
        };
        let headers = headers
            .iter()
            .map(|(k, v)| {
                let name = k.as_str().to_string();
                let value = if SENSITIVE.contains(&name.as_str()) {
                    "<redacted>".to_string()
                } else {
                    v.to_str()
                        .map(str::to_string)
                        .unwrap_or_else(|_| "<binary>".to_string())
                };
                (name, value)
            })
            .collect();
        let body = serde_json::from_slice::<Value>(body).ok();
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Last { headers, body };
    }

    /// Deterministic fault draw for the next chat/embeddings request.
    fn draw_fault(&self) -> bool {
        let rate = self.settings.fail_rate;
        if rate <= 0.0 {
            return false;
        }
        let n = self.counters.fault_seq.fetch_add(1, Ordering::Relaxed);
        if rate >= 1.0 {
            return true;
        }
        let x = common::splitmix64(self.settings.seed ^ common::splitmix64(n));
        ((x >> 11) as f64 / (1u64 << 53) as f64) < rate
    }

    fn decide(
        &self,
        ep: Endpoint,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &Bytes,
        hooks: &Hooks,
    ) -> Reply {
        let flavor = self.settings.flavor;
        let nonce = self.counters.nonce.fetch_add(1, Ordering::Relaxed);
        let ctx = Ctx {
            settings: &self.settings,
            id_seed: common::splitmix64(self.settings.seed ^ (nonce << 20)),
        };
        let refused = match flavor {
            Flavor::Anthropic => anthropic::check_headers(&ctx, headers),
            Flavor::OpenAi | Flavor::Mistral => openai::auth(&ctx, headers),
        };
        if let Some(r) = refused {
            return r;
        }
        if ep == Endpoint::NotFound {
            return match flavor {
                Flavor::Anthropic => anthropic::not_found(&ctx),
                Flavor::OpenAi | Flavor::Mistral => openai::not_found(&ctx, method, uri),
            };
        }
        let injected = hooks.fail.or_else(|| {
            (matches!(ep, Endpoint::Chat | Endpoint::Embeddings) && self.draw_fault())
                .then_some(self.settings.fail_status)
        });
        if let Some(status) = injected {
            self.counters
                .failures_injected
                .fetch_add(1, Ordering::Relaxed);
            return match flavor {
                Flavor::Anthropic => anthropic::fault(&ctx, status),
                Flavor::OpenAi | Flavor::Mistral => openai::fault(&ctx, status),
            };
        }
        if ep == Endpoint::Models {
            return match flavor {
                Flavor::Anthropic => anthropic::models(),
                Flavor::OpenAi | Flavor::Mistral => openai::models(&ctx),
            };
        }
        let parsed = serde_json::from_slice::<Value>(body);
        match (flavor, ep) {
            (Flavor::Anthropic, _) => anthropic::messages(&ctx, parsed),
            (_, Endpoint::Embeddings) => openai::embeddings(&ctx, parsed),
            _ => openai::chat(&ctx, parsed),
        }
    }

    async fn handle(
        self: Arc<Self>,
        ep: Endpoint,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        self.record(ep, &headers, &body);
        let hooks = Hooks::from_headers(&headers);
        let reply = self.decide(ep, &method, &uri, &headers, &body, &hooks);
        let before_headers =
            Duration::from_millis(self.settings.ttft_ms.saturating_add(hooks.stall_ms));
        let latency = Duration::from_millis(self.settings.latency_ms);
        match reply {
            Reply::Json {
                status,
                body,
                headers: extra,
            } => {
                pause(before_headers + latency).await;
                let mut h = HeaderMap::new();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                for (k, v) in extra {
                    if let Ok(v) = HeaderValue::from_str(&v) {
                        h.insert(k, v);
                    }
                }
                (status, h, body.to_string()).into_response()
            }
            Reply::Sse {
                frames,
                error_frame,
            } => {
                self.counters.streams.fetch_add(1, Ordering::Relaxed);
                pause(before_headers).await;
                let body = self.stream_body(frames, error_frame, &hooks, latency);
                let mut h = HeaderMap::new();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/event-stream; charset=utf-8"),
                );
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                (StatusCode::OK, h, body).into_response()
            }
        }
    }

    fn stream_body(
        self: &Arc<Self>,
        mut frames: Vec<String>,
        error_frame: String,
        hooks: &Hooks,
        latency: Duration,
    ) -> Body {
        let mut reset = false;
        if let Some(k) = hooks.error_after {
            frames.truncate(k);
            frames.push(error_frame);
        } else if let Some(k) = hooks.reset_after {
            frames.truncate(k);
            reset = true;
        } else if let Some(k) = hooks.truncate_after {
            frames.truncate(k);
        }
        let gaps = u32::try_from(frames.len().saturating_sub(1))
            .unwrap_or(u32::MAX)
            .max(1);
        let interval = latency / gaps;
        let state = StreamState {
            frames: frames
                .into_iter()
                .map(Bytes::from)
                .collect::<Vec<_>>()
                .into_iter(),
            sent: 0,
            interval,
            reset,
            guard: AbortGuard {
                mock: Arc::clone(self),
                done: false,
            },
        };
        let stream = futures_util::stream::unfold(state, |mut st| async move {
            let Some(frame) = st.frames.next() else {
                st.guard.done = true;
                if st.reset {
                    st.reset = false;
                    // Let the server flush the frames already written before
                    // the body error tears the connection down.
                    tokio::time::sleep(Duration::from_millis(25)).await;
                    return Some((Err(std::io::Error::other("mock: stream reset")), st));
                }
                return None;
            };
            if st.sent > 0 && !st.interval.is_zero() {
                tokio::time::sleep(st.interval).await;
            }
            st.sent += 1;
            if st.frames.as_slice().is_empty() && !st.reset {
                st.guard.done = true;
            }
            Some((Ok(frame), st))
        });
        Body::from_stream(stream)
    }
}

struct StreamState {
    frames: std::vec::IntoIter<Bytes>,
    sent: usize,
    interval: Duration,
    reset: bool,
    guard: AbortGuard,
}

/// Counts a stream as aborted when its body is dropped before the last frame
/// was handed to the server (the client went away).
struct AbortGuard {
    mock: Arc<Mock>,
    done: bool,
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if !self.done {
            self.mock.counters.aborted.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn chat_h(
    State(m): State<Arc<Mock>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    m.handle(Endpoint::Chat, method, uri, headers, body).await
}

async fn embeddings_h(
    State(m): State<Arc<Mock>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    m.handle(Endpoint::Embeddings, method, uri, headers, body)
        .await
}

async fn models_h(
    State(m): State<Arc<Mock>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    m.handle(Endpoint::Models, method, uri, headers, Bytes::new())
        .await
}

async fn fallback_h(
    State(m): State<Arc<Mock>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    m.handle(Endpoint::NotFound, method, uri, headers, body)
        .await
}

async fn stats_h(State(m): State<Arc<Mock>>) -> Response {
    axum::Json(m.stats()).into_response()
}

async fn reset_h(State(m): State<Arc<Mock>>) -> Response {
    m.reset();
    axum::Json(serde_json::json!({ "reset": true })).into_response()
}

/// Serves `mock` on `listener` (TCP_NODELAY on every connection) until the
/// task is dropped or the listener fails.
/// Sleeps, unless there is nothing to wait for: even a zero sleep waits for the next
/// timer tick (about a millisecond), which would dominate a fast mock's latency.
async fn pause(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

pub async fn serve(listener: tokio::net::TcpListener, mock: Arc<Mock>) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "mock: set_nodelay failed");
        }
    });
    axum::serve(listener, mock.router()).await
}
