//! The exact-match response cache (per model `cache_ttl_s`; `0` = off), pure of HTTP.
//!
//! - [`key`]: a SHA-256 over the tenant, the model name as requested and the parts of the
//!   canonical request that change the answer. Tenants never share entries.
//! - [`ResponseCache`]: an in-memory map from key to [`Entry`], bounded by approximate bytes,
//!   each entry with its own time to live. A read names the regions the tenant allows *now*,
//!   and an answer produced elsewhere is never served (residency is absolute, and a tenant's
//!   allowed regions can change between the write and the read).
//! - [`replay`]: the stream events of a cached response, to answer a streaming request.
//! - [`Collector`]: the reverse, a response rebuilt from a stream's events, to cache a
//!   streamed reply.
//!
//! Expiry is enforced twice, on purpose: moka's per-entry [`Expiry`] (the entry's ttl,
//! capped at [`MAX_TTL`]) frees the memory of expired entries on its own, and every
//! [`ResponseCache::get`] also compares the entry's expiry instant with the cache's clock, so
//! an entry is never served late (moka's expiry is checked lazily) and tests can move time.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use asc_wire::canonical::{
    Block, CacheControl, ChatRequest, ChatResponse, Format, ImageSource, Message, ResponseFormat,
    StopReason, StreamEvent, System, Tool, ToolChoice, Usage,
};
use moka::Expiry;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The longest an entry lives, whatever its model's `cache_ttl_s` says.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Fixed cost counted per entry on top of its strings (key, `Arc`s, moka's bookkeeping).
const ENTRY_OVERHEAD: usize = 256;

/// Bumped whenever what goes into the key changes, so old and new keys never collide.
const KEY_DOMAIN: &[u8] = b"asc-response-cache-v1\0";

// === key ===

/// The cache key of a request: SHA-256 over the tenant name, the model name as requested and
/// the normalised canonical request.
///
/// Included: everything that changes the answer — `system` (its text; and its blocks'
/// `cache_control`, only when one has it), `messages`, `tools`,
/// `tool_choice`, `max_tokens`, `temperature`, `top_p`, `frequency_penalty`,
/// `presence_penalty`, `stop`, `seed`, `response_format`, `effort`,
/// `parallel_tool_calls` and the `extra` fields (with their source format, because they are
/// written back only to that format; the format alone, without fields, is left out so
/// identical requests from both surfaces share an entry). Excluded: `stream` (a cached
/// answer can be replayed as a stream, see [`replay`]), `include_usage`, `user`, and
/// `req.model` (the `model` argument stands for it).
///
/// Canonical form: the tenant and the model are length-prefixed, then the request is
/// serialised with `serde_json`, whose output is deterministic here: struct fields come in
/// declaration order, and JSON objects (`extra.fields`, `response_format` schemas, tool
/// `parameters`) are `serde_json::Map`, a `BTreeMap` ordered by key because the workspace
/// does not enable serde_json's `preserve_order` feature (the test
/// `key_ignores_object_insertion_order` guards that).
pub fn key(tenant: &str, model: &str, req: &ChatRequest) -> [u8; 32] {
    let view = KeyView {
        system: req.system_text(),
        system_cache_control: system_cache_control(req),
        messages: &req.messages,
        tools: &req.tools,
        tool_choice: req.tool_choice.as_ref(),
        max_tokens: req.max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        frequency_penalty: req.frequency_penalty,
        presence_penalty: req.presence_penalty,
        stop: &req.stop,
        seed: req.seed,
        response_format: req.response_format.as_ref(),
        effort: req.effort.as_deref(),
        parallel_tool_calls: req.parallel_tool_calls,
        extra_format: if req.extra.fields.is_empty() {
            None
        } else {
            req.extra.format
        },
        extra_fields: &req.extra.fields,
    };
    let mut h = Sha256::new();
    h.update(KEY_DOMAIN);
    for part in [tenant, model] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    if serde_json::to_writer(&mut h, &view).is_err() {
        // Unreachable in practice (a hasher never fails to write and these types always
        // serialise); still deterministic, and distinct from any JSON text.
        h.update(b"\xff");
        h.update(format!("{view:?}").as_bytes());
    }
    h.finalize().into()
}

/// The `cache_control` of each system block, when any has one (so the keys of requests
/// without any are those they had before system blocks were kept).
fn system_cache_control(req: &ChatRequest) -> Option<Vec<Option<&CacheControl>>> {
    let Some(System::Blocks(blocks)) = &req.system else {
        return None;
    };
    blocks
        .iter()
        .any(|b| b.cache_control.is_some())
        .then(|| blocks.iter().map(|b| b.cache_control.as_ref()).collect())
}

/// The parts of a request that go into its key, borrowed. `messages` and `tools`
/// serialise a block's or tool's `cache_control` only when it has one, so those keys
/// did not change either.
#[derive(Debug, Serialize)]
struct KeyView<'a> {
    system: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_cache_control: Option<Vec<Option<&'a CacheControl>>>,
    messages: &'a [Message],
    tools: &'a [Tool],
    tool_choice: Option<&'a ToolChoice>,
    max_tokens: Option<u32>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    // Left out when absent, so the keys of requests without them did not change when
    // they became canonical fields (they were `extra_fields` before).
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    stop: &'a [String],
    seed: Option<i64>,
    response_format: Option<&'a ResponseFormat>,
    // Left out when absent, so the keys of requests without it did not change when it
    // became a canonical field.
    #[serde(skip_serializing_if = "Option::is_none")]
    effort: Option<&'a str>,
    parallel_tool_calls: Option<bool>,
    extra_format: Option<Format>,
    extra_fields: &'a Map<String, Value>,
}

// === ResponseCache ===

/// A cached answer and where it came from (for the response headers and the record).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Entry {
    pub response: ChatResponse,
    pub provider: String,
    pub target_model: String,
    /// The region of the target that produced the answer.
    pub region: String,
}

/// What the moka map holds: the entry, shared with readers, and when it stops being served.
#[derive(Clone)]
struct Stored {
    entry: Arc<Entry>,
    ttl: Duration,
    expires: Instant,
}

/// moka's per-entry expiry: the ttl the entry was stored with.
struct TtlExpiry;

impl Expiry<[u8; 32], Stored> for TtlExpiry {
    fn expire_after_create(&self, _: &[u8; 32], v: &Stored, _: Instant) -> Option<Duration> {
        Some(v.ttl)
    }

    fn expire_after_update(
        &self,
        _: &[u8; 32],
        v: &Stored,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.ttl)
    }
}

type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// The exact-match response cache: bounded by approximate bytes, a time to live per entry.
/// Cheap to share behind an `Arc`; every method takes `&self`.
pub struct ResponseCache {
    inner: moka::sync::Cache<[u8; 32], Stored>,
    clock: Clock,
}

impl fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCache")
            .field("entries", &self.inner.entry_count())
            .field("weighted_size", &self.inner.weighted_size())
            .finish()
    }
}

impl ResponseCache {
    /// `max_bytes`: total weight bound (approximate size of entries: their strings plus a
    /// fixed overhead each). Past it, moka evicts (and may decline to admit) entries.
    pub fn new(max_bytes: u64) -> Self {
        Self::with_clock(max_bytes, Arc::new(Instant::now))
    }

    /// As [`ResponseCache::new`], reading the time from `clock` for the expiry check of
    /// [`ResponseCache::get`] (moka's own eviction of expired entries keeps real time).
    fn with_clock(max_bytes: u64, clock: Clock) -> Self {
        let inner = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_: &[u8; 32], v: &Stored| weight(&v.entry))
            .expire_after(TtlExpiry)
            .build();
        Self { inner, clock }
    }

    /// An entry if present, not expired, and produced in a region `region_allowed` accepts
    /// (residency: a cached answer produced in a region the tenant does not allow is never
    /// served — a tenant's allowed regions can change between the write and the read).
    pub fn get(&self, key: &[u8; 32], region_allowed: &dyn Fn(&str) -> bool) -> Option<Arc<Entry>> {
        let stored = self.inner.get(key)?;
        if (self.clock)() >= stored.expires || !region_allowed(&stored.entry.region) {
            return None;
        }
        Some(stored.entry)
    }

    /// Stores with a time to live (the model's `cache_ttl_s`, capped at [`MAX_TTL`]); a zero
    /// ttl does nothing. Replaces an entry under the same key.
    pub fn insert(&self, key: [u8; 32], entry: Entry, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let ttl = ttl.min(MAX_TTL);
        let stored = Stored {
            entry: Arc::new(entry),
            ttl,
            expires: (self.clock)() + ttl,
        };
        self.inner.insert(key, stored);
    }

    /// Entries held (approximate until moka's pending maintenance has run).
    pub fn entry_count(&self) -> u64 {
        self.inner.entry_count()
    }

    /// Runs moka's pending maintenance now (evictions, expirations, counts); moka otherwise
    /// runs it in the course of reads and writes.
    pub fn run_pending_tasks(&self) {
        self.inner.run_pending_tasks();
    }
}

/// Approximate bytes of an entry: its strings plus a fixed overhead.
fn weight(e: &Entry) -> u32 {
    let r = &e.response;
    let blocks: usize = r
        .content
        .iter()
        .map(|b| {
            32 + match b {
                Block::Text { text, .. } => text.len(),
                Block::ToolCall {
                    id,
                    name,
                    arguments,
                    ..
                } => id.len() + name.len() + arguments.len(),
                Block::Thinking {
                    thinking,
                    signature,
                } => thinking.len() + signature.as_ref().map_or(0, String::len),
                Block::RedactedThinking { data } => data.len(),
                Block::ToolResult {
                    tool_call_id,
                    content,
                    ..
                } => tool_call_id.len() + content.len(),
                Block::Image { source, .. } => match source {
                    ImageSource::Base64 { media_type, data } => media_type.len() + data.len(),
                    ImageSource::Url { url } => url.len(),
                },
                // (Replies carry no documents; weighed as their JSON should one appear.)
                Block::Document(d) => serde_json::to_vec(d).map_or(0, |v| v.len()),
            }
        })
        .sum();
    let total = ENTRY_OVERHEAD
        + blocks
        + r.id.len()
        + r.model.len()
        + e.provider.len()
        + e.target_model.len()
        + e.region.len();
    u32::try_from(total).unwrap_or(u32::MAX)
}

// === replay ===

/// Text is replayed in at most this many deltas.
const TEXT_PIECES: usize = 4;

/// The stream events a client would have received for this response: `Start` (with the
/// input tokens), each text block as a few `TextDelta`s split on char boundaries, each tool
/// call as `ToolCallStart` + one `ToolCallDelta` (indices 0, 1, … in order), a thinking
/// block as one `ThinkingDelta` and its `SignatureDelta`, a redacted one as
/// `RedactedThinking`, `Finish` (when the response has a stop reason), `Usage`, `Done`.
/// Image and tool-result blocks never occur in a reply and are skipped.
pub fn replay(resp: &ChatResponse) -> Vec<StreamEvent> {
    let mut out = vec![StreamEvent::Start {
        id: resp.id.clone(),
        model: resp.model.clone(),
        usage: Some(Usage {
            output_tokens: 0,
            ..resp.usage
        }),
    }];
    let mut tool_index: u32 = 0;
    for block in &resp.content {
        match block {
            Block::Text { text, .. } => {
                out.extend(split_text(text).map(|t| StreamEvent::TextDelta { text: t.to_owned() }));
            }
            Block::Thinking {
                thinking,
                signature,
            } => {
                out.push(StreamEvent::ThinkingDelta {
                    thinking: thinking.clone(),
                });
                if let Some(signature) = signature {
                    out.push(StreamEvent::SignatureDelta {
                        signature: signature.clone(),
                    });
                }
            }
            Block::RedactedThinking { data } => {
                out.push(StreamEvent::RedactedThinking { data: data.clone() });
            }
            Block::ToolCall {
                id,
                name,
                arguments,
                ..
            } => {
                out.push(StreamEvent::ToolCallStart {
                    index: tool_index,
                    id: id.clone(),
                    name: name.clone(),
                });
                out.push(StreamEvent::ToolCallDelta {
                    index: tool_index,
                    arguments: arguments.clone(),
                });
                tool_index += 1;
            }
            Block::Image { .. } | Block::ToolResult { .. } | Block::Document(_) => {}
        }
    }
    if let Some(stop_reason) = resp.stop_reason {
        out.push(StreamEvent::Finish { stop_reason });
    }
    out.push(StreamEvent::Usage(resp.usage));
    out.push(StreamEvent::Done);
    out
}

/// `text` in at most [`TEXT_PIECES`] non-empty pieces of about equal byte length, each cut on
/// a char boundary. Empty text gives nothing.
fn split_text(text: &str) -> impl Iterator<Item = &str> {
    let step = text.len().div_ceil(TEXT_PIECES).max(1);
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut cut = step.min(rest.len());
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        let (piece, tail) = rest.split_at(cut);
        rest = tail;
        Some(piece)
    })
}

// === Collector ===

/// Rebuilds a complete response from a stream's canonical events as they pass (to cache a
/// streamed reply). Text deltas append to the current text block (a new one after a tool
/// call); tool-call deltas append to the arguments of the call with their index; thinking
/// deltas append to the current thinking block until its signature ends it. Usage: the
/// last `Usage` event, with the `Start` input tokens when that event says 0.
#[derive(Debug, Default)]
pub struct Collector {
    id: String,
    model: String,
    start_input_tokens: Option<u64>,
    content: Vec<Block>,
    /// Tool-call index → position in `content`.
    tool_calls: HashMap<u32, usize>,
    stop_reason: Option<StopReason>,
    usage: Option<Usage>,
    done: bool,
    /// An `Error` event, or a stream this cannot rebuild faithfully (a delta for a tool call
    /// that never started).
    broken: bool,
}

impl Collector {
    pub fn push(&mut self, ev: &StreamEvent) {
        if self.done || self.broken {
            return;
        }
        match ev {
            StreamEvent::Start { id, model, usage } => {
                self.id.clone_from(id);
                self.model.clone_from(model);
                self.start_input_tokens = usage.map(|u| u.input_tokens);
            }
            StreamEvent::TextDelta { text } => match self.content.last_mut() {
                Some(Block::Text { text: current, .. }) => current.push_str(text),
                _ => self.content.push(Block::text(text.clone())),
            },
            StreamEvent::ThinkingDelta { thinking } => match self.content.last_mut() {
                Some(Block::Thinking {
                    thinking: current,
                    signature: None,
                }) => current.push_str(thinking),
                _ => self.content.push(Block::Thinking {
                    thinking: thinking.clone(),
                    signature: None,
                }),
            },
            StreamEvent::SignatureDelta { signature } => match self.content.last_mut() {
                Some(Block::Thinking { signature: s, .. }) if s.is_none() => {
                    *s = Some(signature.clone());
                }
                _ => self.content.push(Block::Thinking {
                    thinking: String::new(),
                    signature: Some(signature.clone()),
                }),
            },
            StreamEvent::RedactedThinking { data } => {
                self.content
                    .push(Block::RedactedThinking { data: data.clone() });
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.tool_calls.insert(*index, self.content.len());
                self.content.push(Block::ToolCall {
                    id: id.clone(),
                    name: name.clone(),
                    arguments: String::new(),
                    cache_control: None,
                });
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                let block = self
                    .tool_calls
                    .get(index)
                    .and_then(|&at| self.content.get_mut(at));
                match block {
                    Some(Block::ToolCall { arguments: a, .. }) => a.push_str(arguments),
                    _ => self.broken = true,
                }
            }
            StreamEvent::Finish { stop_reason } => self.stop_reason = Some(*stop_reason),
            StreamEvent::Usage(u) => self.usage = Some(*u),
            StreamEvent::Done => self.done = true,
            StreamEvent::Error { .. } => self.broken = true,
        }
    }

    /// The response, only if the stream completed (saw `Done` and no `Error`).
    pub fn finish(self) -> Option<ChatResponse> {
        if !self.done || self.broken {
            return None;
        }
        let mut usage = self.usage.unwrap_or_default();
        if usage.input_tokens == 0 {
            usage.input_tokens = self.start_input_tokens.unwrap_or(0);
        }
        Some(ChatResponse {
            id: self.id,
            model: self.model,
            content: self.content,
            stop_reason: self.stop_reason,
            usage,
        })
    }
}

/// The cache a gateway uses: in memory on one replica, or Redis (`storage.redis`)
/// shared by every replica. Redis errors are misses (logged), never request failures:
/// the cache is an optimisation, not a policy.
pub enum CacheStore {
    Memory(ResponseCache),
    Redis(redis::aio::ConnectionManager),
}

impl fmt::Debug for CacheStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory(c) => c.fmt(f),
            Self::Redis(_) => f.write_str("CacheStore::Redis"),
        }
    }
}

/// Redis keys: `asc:cache:` and the hex of the cache key.
fn redis_key(key: &[u8; 32]) -> String {
    let mut s = String::with_capacity(10 + 64);
    s.push_str("asc:cache:");
    for b in key {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

impl CacheStore {
    /// Connects to Redis at `url` (within 5 s).
    pub async fn redis(url: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis URL: {e}"))?;
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            redis::aio::ConnectionManager::new(client),
        )
        .await
        .map_err(|_| "redis did not answer within 5 s".to_owned())?
        .map_err(|e| format!("redis: {e}"))?;
        Ok(Self::Redis(conn))
    }

    pub async fn get(
        &self,
        key: &[u8; 32],
        region_allowed: &(dyn Fn(&str) -> bool + Sync),
    ) -> Option<Arc<Entry>> {
        match self {
            Self::Memory(c) => c.get(key, region_allowed),
            Self::Redis(conn) => {
                let mut conn = conn.clone();
                let raw: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(redis_key(key))
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| tracing::warn!(error = %e, "redis cache read failed"))
                    .ok()?;
                let entry: Entry = serde_json::from_slice(&raw?).ok()?;
                region_allowed(&entry.region).then(|| Arc::new(entry))
            }
        }
    }

    pub async fn insert(&self, key: [u8; 32], entry: Entry, ttl: Duration) {
        match self {
            Self::Memory(c) => c.insert(key, entry, ttl),
            Self::Redis(conn) => {
                let secs = ttl.min(MAX_TTL).as_secs();
                if secs == 0 {
                    return;
                }
                let Ok(value) = serde_json::to_vec(&entry) else {
                    return;
                };
                let mut conn = conn.clone();
                let r: redis::RedisResult<()> = redis::cmd("SET")
                    .arg(redis_key(&key))
                    .arg(value)
                    .arg("EX")
                    .arg(secs)
                    .query_async(&mut conn)
                    .await;
                if let Err(e) = r {
                    tracing::warn!(error = %e, "redis cache write failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use asc_wire::canonical::{Extra, ImageDetail, JsonSchemaFormat, Role, SystemBlock};
    use serde_json::json;

    use super::*;

    fn request() -> ChatRequest {
        ChatRequest {
            model: "chat".into(),
            system: Some("be brief".into()),
            messages: vec![Message {
                role: Role::User,
                content: vec![Block::Text {
                    text: "hello".into(),
                    cache_control: None,
                }],
            }],
            temperature: Some(0.2),
            ..ChatRequest::default()
        }
    }

    fn response() -> ChatResponse {
        ChatResponse {
            id: "msg_1".into(),
            model: "gpt-4o-mini".into(),
            content: vec![
                Block::Text {
                    text: "Grüße, 世界! 🎉 Voilà — naïve café. ".repeat(3),
                    cache_control: None,
                },
                Block::ToolCall {
                    id: "call_a".into(),
                    name: "get_weather".into(),
                    arguments: r#"{"city":"Zürich"}"#.into(),
                    cache_control: None,
                },
                Block::ToolCall {
                    id: "call_b".into(),
                    name: "noop".into(),
                    arguments: String::new(),
                    cache_control: None,
                },
            ],
            stop_reason: Some(StopReason::ToolUse),
            usage: Usage {
                input_tokens: 12,
                output_tokens: 34,
                ..Default::default()
            },
        }
    }

    fn entry(region: &str) -> Entry {
        Entry {
            response: response(),
            provider: "openai".into(),
            target_model: "gpt-4o-mini".into(),
            region: region.into(),
        }
    }

    fn any_region(_: &str) -> bool {
        true
    }

    #[test]
    fn key_is_stable_for_identical_requests() {
        assert_eq!(key("t", "chat", &request()), key("t", "chat", &request()));
    }

    #[test]
    fn key_differs_across_tenants_and_models() {
        let r = request();
        assert_ne!(key("a", "chat", &r), key("b", "chat", &r));
        assert_ne!(key("t", "chat", &r), key("t", "chat2", &r));
        // Length prefixes: the split between tenant and model matters.
        assert_ne!(key("ab", "c", &r), key("a", "bc", &r));
    }

    #[test]
    fn key_differs_on_anything_that_changes_the_answer() {
        let base = key("t", "chat", &request());
        type Change = Box<dyn Fn(&mut ChatRequest)>;
        let variants: Vec<Change> = vec![
            Box::new(|r| {
                r.messages[0].content[0] = Block::Text {
                    text: "hello!".into(),
                    cache_control: None,
                }
            }),
            Box::new(|r| r.system = None),
            Box::new(|r| r.temperature = Some(0.3)),
            Box::new(|r| r.top_p = Some(0.9)),
            Box::new(|r| r.frequency_penalty = Some(0.5)),
            Box::new(|r| r.presence_penalty = Some(0.5)),
            Box::new(|r| r.max_tokens = Some(10)),
            Box::new(|r| r.stop = vec!["\n".into()]),
            Box::new(|r| r.seed = Some(1)),
            Box::new(|r| r.tool_choice = Some(ToolChoice::Required)),
            Box::new(|r| r.parallel_tool_calls = Some(false)),
            Box::new(|r| r.response_format = Some(ResponseFormat::JsonObject)),
            Box::new(|r| {
                r.response_format = Some(ResponseFormat::JsonSchema(JsonSchemaFormat {
                    name: None,
                    description: None,
                    schema: json!({"type": "object"}),
                    strict: Some(true),
                }))
            }),
            Box::new(|r| r.effort = Some("low".into())),
            Box::new(|r| {
                r.tools = vec![Tool {
                    name: "f".into(),
                    description: None,
                    parameters: json!({"type": "object"}),
                    strict: None,
                    cache_control: None,
                }]
            }),
            Box::new(|r| {
                r.extra.format = Some(Format::OpenAi);
                r.extra.fields.insert("logprobs".into(), json!(true));
            }),
        ];
        for (i, change) in variants.iter().enumerate() {
            let mut r = request();
            change(&mut r);
            assert_ne!(key("t", "chat", &r), base, "variant {i}");
        }
        // a tool's `strict` and an image's `detail` change the answer too
        let with = |strict: Option<bool>, detail: Option<ImageDetail>| {
            let mut r = request();
            r.tools = vec![Tool {
                name: "f".into(),
                description: None,
                parameters: json!({"type": "object"}),
                strict,
                cache_control: None,
            }];
            r.messages[0].content.push(Block::Image {
                source: ImageSource::Url { url: "u".into() },
                detail,
                cache_control: None,
            });
            key("t", "chat", &r)
        };
        let plain = with(None, None);
        assert_ne!(with(Some(true), None), plain);
        assert_ne!(with(None, Some(ImageDetail::Low)), plain);
    }

    #[test]
    fn key_ignores_stream_include_usage_user_and_empty_extra_format() {
        let base = key("t", "chat", &request());
        let mut r = request();
        r.stream = true;
        r.include_usage = true;
        r.user = Some("alice".into());
        r.model = "other-name".into();
        r.extra.format = Some(Format::Anthropic);
        assert_eq!(key("t", "chat", &r), base);
    }

    /// The key as `asc-response-cache-v1` wrote it before system blocks, `cache_control`
    /// and thinking were canonical: the bytes the old `KeyView` serialised, by hand.
    fn v1_key(tenant: &str, model: &str, view_json: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(KEY_DOMAIN);
        for part in [tenant, model] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        h.update(view_json.as_bytes());
        h.finalize().into()
    }

    #[test]
    fn keys_without_cache_control_are_unchanged() {
        let old = r#"{"system":"be brief","messages":[{"role":"user","content":[{"type":"text","text":"hello"}]}],"tools":[],"tool_choice":null,"max_tokens":null,"temperature":0.2,"top_p":null,"stop":[],"seed":null,"response_format":null,"parallel_tool_calls":null,"extra_format":null,"extra_fields":{}}"#;
        assert_eq!(key("t", "chat", &request()), v1_key("t", "chat", old));
        // System blocks without `cache_control` key as their joined text did.
        let mut blocks = request();
        blocks.system = Some(System::Blocks(vec![
            SystemBlock {
                text: "be".into(),
                cache_control: None,
            },
            SystemBlock {
                text: "brief".into(),
                cache_control: None,
            },
        ]));
        let mut joined = request();
        joined.system = Some("be\n\nbrief".into());
        assert_eq!(key("t", "chat", &blocks), key("t", "chat", &joined));
    }

    #[test]
    fn key_includes_cache_control_and_thinking_when_present() {
        let base = key("t", "chat", &request());
        let ephemeral = || {
            let mut m = Map::new();
            m.insert("type".into(), json!("ephemeral"));
            Some(CacheControl(m))
        };
        let mut r = request();
        r.system = Some(System::Blocks(vec![SystemBlock {
            text: "be brief".into(),
            cache_control: ephemeral(),
        }]));
        assert_ne!(key("t", "chat", &r), base, "system cache_control");
        let mut r = request();
        r.messages[0].content[0] = Block::Text {
            text: "hello".into(),
            cache_control: ephemeral(),
        };
        assert_ne!(key("t", "chat", &r), base, "block cache_control");
        let mut r = request();
        r.messages.push(Message {
            role: Role::Assistant,
            content: vec![Block::Thinking {
                thinking: "hm".into(),
                signature: Some("s".into()),
            }],
        });
        assert_ne!(key("t", "chat", &r), base, "thinking in history");
    }

    #[test]
    fn replay_and_collector_keep_thinking() {
        let mut resp = response();
        resp.content.splice(
            0..0,
            [
                Block::Thinking {
                    thinking: "Let me think about Zürich.".into(),
                    signature: Some("sig1".into()),
                },
                Block::Thinking {
                    thinking: "Again.".into(),
                    signature: Some("sig2".into()),
                },
                Block::RedactedThinking {
                    data: "opaque".into(),
                },
            ],
        );
        resp.usage.cache_read_input_tokens = Some(10);
        let events = replay(&resp);
        assert_eq!(
            events[1..6],
            [
                StreamEvent::ThinkingDelta {
                    thinking: "Let me think about Zürich.".into()
                },
                StreamEvent::SignatureDelta {
                    signature: "sig1".into()
                },
                StreamEvent::ThinkingDelta {
                    thinking: "Again.".into()
                },
                StreamEvent::SignatureDelta {
                    signature: "sig2".into()
                },
                StreamEvent::RedactedThinking {
                    data: "opaque".into()
                },
            ]
        );
        let mut c = Collector::default();
        for ev in &events {
            c.push(ev);
        }
        assert_eq!(c.finish(), Some(resp));
    }

    #[test]
    fn key_ignores_object_insertion_order() {
        let mut a = request();
        let mut b = request();
        a.extra = Extra {
            format: Some(Format::OpenAi),
            fields: Map::new(),
        };
        b.extra = a.extra.clone();
        a.extra.fields.insert("z".into(), json!(1));
        a.extra.fields.insert("a".into(), json!(2));
        b.extra.fields.insert("a".into(), json!(2));
        b.extra.fields.insert("z".into(), json!(1));
        let schema = |text: &str| {
            Some(ResponseFormat::JsonSchema(JsonSchemaFormat {
                name: Some("s".into()),
                description: None,
                schema: serde_json::from_str(text).unwrap_or_default(),
                strict: None,
            }))
        };
        a.response_format = schema(r#"{"type":"object","b":1,"a":2}"#);
        b.response_format = schema(r#"{"a":2,"b":1,"type":"object"}"#);
        assert_eq!(key("t", "chat", &a), key("t", "chat", &b));
    }

    #[test]
    fn get_insert_and_zero_ttl() {
        let cache = ResponseCache::new(1 << 20);
        let k = key("t", "chat", &request());
        assert!(cache.get(&k, &any_region).is_none());
        cache.insert(k, entry("eu"), Duration::ZERO);
        assert!(cache.get(&k, &any_region).is_none());
        cache.insert(k, entry("eu"), Duration::from_secs(60));
        let got = cache.get(&k, &any_region);
        assert_eq!(got.map(|e| e.response.clone()), Some(response()));
        let other = key("u", "chat", &request());
        assert!(cache.get(&other, &any_region).is_none());
        cache.run_pending_tasks();
        assert_eq!(cache.entry_count(), 1);
    }

    #[test]
    fn ttl_expiry_with_injected_clock() {
        let now = Arc::new(Mutex::new(Instant::now()));
        let clock_now = Arc::clone(&now);
        let cache = ResponseCache::with_clock(
            1 << 20,
            Arc::new(move || *clock_now.lock().unwrap_or_else(|e| e.into_inner())),
        );
        let advance = |d: Duration| {
            let mut t = now.lock().unwrap_or_else(|e| e.into_inner());
            *t += d;
        };
        let k = [7u8; 32];
        cache.insert(k, entry("eu"), Duration::from_secs(30));
        advance(Duration::from_secs(29));
        assert!(cache.get(&k, &any_region).is_some());
        advance(Duration::from_secs(1));
        assert!(cache.get(&k, &any_region).is_none());
        // The 24 h cap.
        let k2 = [8u8; 32];
        cache.insert(k2, entry("eu"), Duration::from_secs(10 * 24 * 3600));
        advance(MAX_TTL - Duration::from_secs(1));
        assert!(cache.get(&k2, &any_region).is_some());
        advance(Duration::from_secs(1));
        assert!(cache.get(&k2, &any_region).is_none());
    }

    #[test]
    fn ttl_expiry_in_real_time() {
        let cache = ResponseCache::new(1 << 20);
        let k = [1u8; 32];
        cache.insert(k, entry("eu"), Duration::from_millis(20));
        assert!(cache.get(&k, &any_region).is_some());
        std::thread::sleep(Duration::from_millis(30));
        assert!(cache.get(&k, &any_region).is_none());
        // moka's own per-entry expiry hides it too (its timer wheel frees the slot later,
        // at about one-second granularity, so entry_count is not checked here).
        assert!(cache.inner.get(&k).is_none());
    }

    #[test]
    fn region_filter_is_applied_on_read() {
        let cache = ResponseCache::new(1 << 20);
        let k = [2u8; 32];
        cache.insert(k, entry("us-east"), Duration::from_secs(60));
        assert!(cache.get(&k, &|r: &str| r == "eu").is_none());
        let got = cache.get(&k, &|r: &str| r == "us-east" || r == "eu");
        assert_eq!(got.map(|e| e.region.clone()), Some("us-east".to_owned()));
    }

    #[test]
    fn size_bound_evicts() {
        let max = 64 * 1024;
        let cache = ResponseCache::new(max);
        let mut big = entry("eu");
        big.response.content = vec![Block::Text {
            text: "x".repeat(4096),
            cache_control: None,
        }];
        let one = u64::from(weight(&big));
        for i in 0..200u32 {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_le_bytes());
            cache.insert(k, big.clone(), Duration::from_secs(60));
        }
        cache.run_pending_tasks();
        assert!(cache.entry_count() > 0);
        assert!(
            cache.entry_count() <= max / one,
            "{} entries of {one} bytes over a {max} bound",
            cache.entry_count()
        );
        assert!(cache.inner.weighted_size() <= max);
    }

    #[test]
    fn replay_splits_text_on_char_boundaries() {
        let events = replay(&response());
        let deltas: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::TextDelta { text } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert!(deltas.len() > 1 && deltas.len() <= TEXT_PIECES);
        assert!(deltas.iter().all(|d| !d.is_empty()));
        assert_eq!(deltas.concat(), response().text());
        assert_eq!(
            events.first(),
            Some(&StreamEvent::Start {
                id: "msg_1".into(),
                model: "gpt-4o-mini".into(),
                usage: Some(Usage {
                    input_tokens: 12,
                    ..Default::default()
                }),
            })
        );
        assert_eq!(events.last(), Some(&StreamEvent::Done));
        assert_eq!(split_text("").count(), 0);
        assert_eq!(split_text("é").collect::<Vec<_>>(), vec!["é"]);
        assert_eq!(split_text("🎉🎉").collect::<String>(), "🎉🎉");
    }

    fn collect(events: &[StreamEvent]) -> Option<ChatResponse> {
        let mut c = Collector::default();
        for e in events {
            c.push(e);
        }
        c.finish()
    }

    #[test]
    fn replay_then_collect_round_trips() {
        let mut with_text_after_tool = response();
        with_text_after_tool.content.push(Block::Text {
            text: "done.".into(),
            cache_control: None,
        });
        with_text_after_tool.stop_reason = Some(StopReason::EndTurn);
        let plain = ChatResponse {
            id: "r".into(),
            model: "m".into(),
            content: vec![Block::Text {
                text: "ok".into(),
                cache_control: None,
            }],
            stop_reason: Some(StopReason::MaxTokens),
            usage: Usage::default(),
        };
        for resp in [response(), with_text_after_tool, plain] {
            assert_eq!(collect(&replay(&resp)), Some(resp));
        }
    }

    #[test]
    fn collector_merges_interleaved_tool_deltas_and_start_input_tokens() {
        let events = [
            StreamEvent::Start {
                id: "x".into(),
                model: "m".into(),
                usage: Some(Usage {
                    input_tokens: 5,
                    ..Default::default()
                }),
            },
            StreamEvent::ToolCallStart {
                index: 0,
                id: "a".into(),
                name: "f".into(),
            },
            StreamEvent::ToolCallStart {
                index: 1,
                id: "b".into(),
                name: "g".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "{\"k\":".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 1,
                arguments: "{}".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "1}".into(),
            },
            StreamEvent::Usage(Usage {
                input_tokens: 0,
                output_tokens: 9,
                ..Default::default()
            }),
            StreamEvent::Finish {
                stop_reason: StopReason::ToolUse,
            },
            StreamEvent::Done,
        ];
        let got = collect(&events);
        assert_eq!(
            got,
            Some(ChatResponse {
                id: "x".into(),
                model: "m".into(),
                content: vec![
                    Block::ToolCall {
                        id: "a".into(),
                        name: "f".into(),
                        arguments: "{\"k\":1}".into(),
                        cache_control: None,
                    },
                    Block::ToolCall {
                        id: "b".into(),
                        name: "g".into(),
                        arguments: "{}".into(),
                        cache_control: None,
                    },
                ],
                stop_reason: Some(StopReason::ToolUse),
                usage: Usage {
                    input_tokens: 5,
                    output_tokens: 9,
                    ..Default::default()
                },
            })
        );
    }

    #[test]
    fn collector_needs_done_and_no_error() {
        let mut events = replay(&response());
        events.pop(); // Done
        assert_eq!(collect(&events), None);

        let mut errored = replay(&response());
        errored.insert(
            errored.len() - 1,
            StreamEvent::Error {
                kind: "overloaded_error".into(),
                message: "try later".into(),
            },
        );
        assert_eq!(collect(&errored), None);

        let orphan_delta = [
            StreamEvent::ToolCallDelta {
                index: 3,
                arguments: "{}".into(),
            },
            StreamEvent::Done,
        ];
        assert_eq!(collect(&orphan_delta), None);
    }
}
