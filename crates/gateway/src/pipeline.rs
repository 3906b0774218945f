//! The request's path through the gateway, as phases, in order:
//!
//! 1. **authenticate**: the key (`Authorization: Bearer` or `x-api-key`) → tenant;
//! 2. **parse**: the body, bounded by `server.max_body_bytes`, in the surface's format →
//!    canonical request;
//! 3. **policy**: the model exists and the tenant may use it; residency excludes targets
//!    outside the tenant's regions (for every later step: retries and fallbacks only
//!    ever see the filtered plan);
//! 4. **route**: the try order — one target by weight, the other targets, then fallbacks;
//! 5. **attempt**: per target up to `1 + retries` tries on retryable failures, with
//!    jittered backoff; a stream counts as started only once its first event is in, so
//!    a stream falls back only before its first byte reaches the client;
//! 6. **respond**: same-format non-stream replies pass through byte for byte, others are
//!    translated; streams are translated event by event as they arrive;
//! 7. **record**: [`record::finish`] runs exactly once for every request, whatever the
//!    outcome, from the response path or from the stream's drop guard when the client
//!    goes away (which also drops, and so cancels, the upstream call).
//!
//! All state of one request lives in [`RequestCtx`]; the config generation is one
//! `Arc<Live>` loaded at the start and held to the end.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use asc_wire::{
    ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse, StreamEvent, anthropic,
    openai,
};
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use http_body_util::BodyExt;

use crate::cache::{self, CacheStore};
use crate::config::validate::key_hash;
use crate::config::{Model, Strategy, Target, Tenant};
use crate::directory::TenantEntry;
use crate::error::{AttemptSummary, Error, Surface};
use crate::experiments::{self, Arm, Assignment};
use crate::guardrails::{Findings, PiiMode, StreamRedactor};
use crate::policy::{self, Admit, Estimate, Hold};
use crate::providers::{AttemptError, ChatReply, Upstream, UpstreamStream, Wire};
use crate::record::{self, Attempt, Excluded, ExecutionRecord, Recorder};
use crate::routing::Pass;
use crate::state::{AppState, Live};
use crate::traces::{Outgoing, RequestTrace};

/// Most `x-asc-tags` pairs kept per request (labels stay bounded).
const MAX_TAGS: usize = 16;
/// Longest backoff between two tries of one target.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The gateway's own headers, made once (not validated again per request).
pub(crate) mod hdr {
    use http::HeaderName;
    pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-asc-request-id");
    /// The request id under the names the official SDKs read.
    pub const OPENAI_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    pub const ANTHROPIC_REQUEST_ID: HeaderName = HeaderName::from_static("request-id");
    pub const USER: HeaderName = HeaderName::from_static("x-asc-user");
    pub const TAGS: HeaderName = HeaderName::from_static("x-asc-tags");
    pub const PROVIDER: HeaderName = HeaderName::from_static("x-asc-provider");
    pub const TARGET_MODEL: HeaderName = HeaderName::from_static("x-asc-target-model");
    pub const ATTEMPTS: HeaderName = HeaderName::from_static("x-asc-attempts");
    pub const DOWNGRADED_TO: HeaderName = HeaderName::from_static("x-asc-downgraded-to");
    pub const CACHE: HeaderName = HeaderName::from_static("x-asc-cache");
    pub const EXPERIMENT: HeaderName = HeaderName::from_static("x-asc-experiment");
    pub const ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");
}

/// One request's state, from the first phase to the record.
pub struct RequestCtx {
    pub surface: Surface,
    pub started: Instant,
    pub record: ExecutionRecord,
    /// Response headers gathered on the way (`x-asc-*`).
    pub headers: HeaderMap,
    /// What the request took from rate limits and budgets.
    pub hold: Hold,
    /// The request's trace: the client's `traceparent` or a new one; its spans are
    /// written from the record at the single exit.
    pub trace: RequestTrace,
    /// The request's experiment enrolment, if any; its outcome goes to the experiment's
    /// controller at the single exit.
    pub experiment: Option<Assignment>,
    /// The first target of the try order is an experiment's candidate: tried once, and
    /// any failure falls back to the baseline plan (the client never sees it).
    protect_first: bool,
    recorder: Recorder,
    cache: Arc<CacheStore>,
    /// `audit.durability`: `strict` (the default) completes the response only after the
    /// record is committed.
    durability: record::Durability,
    /// The single exit ran. Dropped without it (the client went away and the server
    /// dropped the request's future mid-way), the request closes as `client_closed`.
    closed: bool,
}

impl RequestCtx {
    pub fn new(
        surface: Surface,
        endpoint: &'static str,
        state: &AppState,
        live: &Live,
        headers: &HeaderMap,
    ) -> Self {
        let id = request_id();
        // Room for every header the gateway sets (id twice, cache, attempts, provider,
        // target model, experiment, downgrade) and the response's own (content type; a
        // stream's cache control and buffering), so the map is allocated once.
        let mut response_headers = HeaderMap::with_capacity(12);
        // (Cache and attempts until routing says otherwise: a request refused before
        // it, for one.)
        every_response(&mut response_headers, &id, surface);
        Self {
            surface,
            started: Instant::now(),
            record: ExecutionRecord::new(id, surface.as_str(), endpoint),
            headers: response_headers,
            hold: Hold::default(),
            trace: RequestTrace::start(headers, live.traces.as_ref()),
            experiment: None,
            protect_first: false,
            recorder: state.recorder.clone(),
            cache: state.cache.clone(),
            durability: record::Durability::of(live.config.raw.audit.durability.as_deref()),
            closed: false,
        }
    }

    /// The single exit: settles limits with the real usage and cost, then hands the
    /// record on. Every path ends here exactly once.
    fn close(mut self) -> Option<tokio::sync::oneshot::Receiver<()>> {
        self.close_now()
    }

    fn close_now(&mut self) -> Option<tokio::sync::oneshot::Receiver<()>> {
        self.closed = true;
        self.record.latency_ms = self.elapsed_ms();
        self.hold.settle(&mut self.record, &self.recorder);
        if let Some(a) = self.experiment.take() {
            experiments::finish(a, &self.record);
        }
        self.trace.finish(&self.record);
        // (An empty record allocates nothing.)
        let record = std::mem::replace(
            &mut self.record,
            ExecutionRecord::new(String::new(), "", ""),
        );
        match self.durability {
            record::Durability::Strict => Some(self.recorder.finish_durable(record)),
            record::Durability::Batched => self.recorder.finish(record),
            record::Durability::None => {
                self.recorder.finish_unstored(record);
                None
            }
        }
    }

    /// Closes the request and, with `strict` durability (or a `batched` writer that fell
    /// behind), waits for its record's commit: true once committed (or when nothing is
    /// waited for), false when the record was dropped or the store did not take it
    /// within [`record::COMMIT_WAIT`].
    async fn close_durably(self) -> bool {
        committed(self.close()).await
    }

    /// Refuses the request (before any provider is called) when its record could not
    /// be kept: the store fails and the durability promises a committed record.
    fn keepable(&self) -> Result<(), Error> {
        if self.recorder.refusing(self.durability) {
            return Err(Error::AuditUnavailable);
        }
        Ok(())
    }

    fn elapsed_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1000.0
    }

    fn set_header(&mut self, name: HeaderName, value: &str) {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.insert(name, v);
        }
    }

    /// Renders `err` in the client's format, records the request, returns the response.
    pub async fn fail(mut self, err: Error) -> Response {
        let status = err.status();
        self.record.status = match &err {
            Error::ModelNotAllowed { .. }
            | Error::ResidencyDenied { .. }
            | Error::GuardrailBlocked { .. }
            | Error::RateLimited { .. }
            | Error::BudgetExceeded { .. } => "denied",
            _ => "error",
        };
        self.record.http_status = status.as_u16();
        self.record.error_code = Some(err.code().to_owned());
        if let Error::Internal(detail) = &err {
            tracing::error!(request_id = %self.record.request_id, %detail, "internal error");
        }
        let mut resp = error_response(&err, self.surface);
        // The request's headers become the response's, with the error's few added (not
        // the reverse: extending a map hashes every entry again).
        let mut headers = std::mem::take(&mut self.headers);
        headers.extend(std::mem::take(resp.headers_mut()));
        *resp.headers_mut() = headers;
        if matches!(err, Error::AuditUnavailable) {
            // Refused because records cannot be committed now: its record is logged and
            // counted, not held (refusals must not crowd out the held records of
            // requests that were served), and the refusal does not wait.
            self.durability = record::Durability::None;
            drop(self.close());
        } else {
            self.close_durably().await;
        }
        resp
    }

    /// The response of an endpoint that answers with one JSON body: the body, or the
    /// error in the client's format; recorded either way.
    async fn answer(self, result: Result<Vec<u8>, Error>) -> Response {
        match result {
            Ok(body) => self.complete(body).await,
            Err(e) => self.fail(e).await,
        }
    }

    /// Records a successful non-streamed reply and builds its response.
    async fn complete(mut self, body: impl Into<bytes::Bytes>) -> Response {
        let body: bytes::Bytes = body.into();
        let mut resp = Response::new(Body::from(body));
        // The request's headers map becomes the response's (moved, not copied entry by
        // entry).
        let mut headers = std::mem::take(&mut self.headers);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        *resp.headers_mut() = headers;
        let surface = self.surface;
        if self.close_durably().await {
            return resp;
        }
        // The record was not committed (the store failed past the wait): the answer is
        // not given. (The writer has rewritten the record as this refusal; it is written
        // once the store answers. The client retries.)
        let mut refused = error_response(&Error::AuditUnavailable, surface);
        if let Some(id) = resp.headers().get(hdr::REQUEST_ID) {
            refused.headers_mut().insert(hdr::REQUEST_ID, id.clone());
        }
        refused
    }
}

/// A data-plane response made outside the request pipeline (health checks, an unknown
/// route or method) gets the headers every response carries: a request id of its own,
/// `x-asc-cache: bypass`, `x-asc-attempts: 0`.
pub fn stamped(mut resp: Response, surface: Surface) -> Response {
    every_response(resp.headers_mut(), &request_id(), surface);
    resp
}

/// The headers every data-plane response carries (contract section 2): the request id
/// (also under the name the client's SDK reads for `response._request_id` and
/// `error.request_id`: OpenAI's `x-request-id`, Anthropic's `request-id`),
/// `x-asc-cache: bypass` and `x-asc-attempts: 0` until routing says otherwise.
fn every_response(h: &mut HeaderMap, id: &str, surface: Surface) {
    if let Ok(v) = HeaderValue::from_str(id) {
        let sdk = match surface {
            Surface::OpenAi => hdr::OPENAI_REQUEST_ID,
            Surface::Anthropic => hdr::ANTHROPIC_REQUEST_ID,
        };
        h.insert(sdk, v.clone());
        h.insert(hdr::REQUEST_ID, v);
    }
    h.insert(hdr::CACHE, HeaderValue::from_static("bypass"));
    h.insert(hdr::ATTEMPTS, HeaderValue::from_static("0"));
}

/// `err` as the client's format says it: status, JSON body, `Retry-After` when it has one.
fn error_response(err: &Error, surface: Surface) -> Response {
    let mut resp = Response::new(Body::from(err.body(surface)));
    *resp.status_mut() = err.status();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(secs) = err.retry_after() {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// How much longer than [`record::COMMIT_WAIT`] a response waits when the writer does
/// not let it go at its deadline: a store write that hangs holds the writer, and must
/// not hold the response for good. (Only then can a record say more than its client
/// got; the writer logs it.)
const COMMIT_WAIT_SLACK: Duration = Duration::from_secs(5);

/// Waits for a record's commit, if anything waits for it (see [`RequestCtx::close`]):
/// true once committed or when nothing is waited for, false when the record was dropped
/// or not committed within [`record::COMMIT_WAIT`] (the writer has then rewritten it as
/// the refusal).
async fn committed(done: Option<tokio::sync::oneshot::Receiver<()>>) -> bool {
    match done {
        Some(done) => matches!(
            tokio::time::timeout(record::COMMIT_WAIT + COMMIT_WAIT_SLACK, done).await,
            Ok(Ok(()))
        ),
        None => true,
    }
}

// === phases shared by every data-plane endpoint ===

/// Phase 1: the key's tenant. One `ArcSwap` load and one map lookup.
pub fn authenticate(
    live: &Live,
    headers: &HeaderMap,
    record: &mut ExecutionRecord,
) -> Result<TenantEntry, Error> {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or(Error::InvalidApiKey)?;
    let directory = live.directory.load();
    let (entry, tenant) = directory
        .authenticate(&key_hash(key), SystemTime::now())
        .ok_or(Error::InvalidApiKey)?;
    record.tenant = Some(tenant.tenant.name.clone());
    record.key_id = Some(entry.id.clone());
    Ok(tenant.clone())
}

/// Phase 2a: the body, refusing more than `limit` bytes without buffering them.
pub async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, Error> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Error::RequestTooLarge { limit });
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(Error::RequestTooLarge { limit })
        }
        Err(_) => Err(Error::InvalidRequest {
            message: "the request body could not be read completely".into(),
            param: None,
        }),
    }
}

/// `x-asc-user` (or the body's `user`) and `x-asc-tags` into the record.
fn attribution(headers: &HeaderMap, body_user: Option<&str>, record: &mut ExecutionRecord) {
    record.user = headers
        .get(&hdr::USER)
        .and_then(|v| v.to_str().ok())
        .or(body_user)
        .map(|u| u.chars().take(256).collect());
    if let Some(tags) = headers.get(&hdr::TAGS).and_then(|v| v.to_str().ok()) {
        record.tags = parse_tags(tags);
    }
}

/// `team=search,cost-center=42` → pairs; malformed pieces are skipped.
pub fn parse_tags(s: &str) -> BTreeMap<String, String> {
    s.split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            let (k, v) = (k.trim(), v.trim());
            (!k.is_empty() && k.len() <= 64 && v.len() <= 128).then(|| (k.to_owned(), v.to_owned()))
        })
        .take(MAX_TAGS)
        .collect()
}

/// Why a target cannot serve a request, whatever its health.
enum Unfit {
    /// The provider has no such endpoint (embeddings on Anthropic).
    Endpoint,
    /// Its format has no counterpart for some of the request's content (a document).
    Content(asc_wire::RequestError),
}

/// For [`plan`]: whether each target's format can carry `req`'s documents. A request
/// without documents walks its blocks once, whatever the number of targets.
fn carries<'a>(live: &'a Live, req: &'a ChatRequest) -> impl Fn(&Target) -> Result<(), Unfit> + 'a {
    let documents = req.has_documents();
    move |t: &Target| {
        if !documents {
            return Ok(());
        }
        live.upstreams[t.provider]
            .can_send(req)
            .map_err(Unfit::Content)
    }
}

/// Phase 3: the model exists, the tenant may use it, and which targets its regions allow.
/// Returns the try order (phase 4): the model's targets and fallbacks this request may
/// go to, in order. Targets outside the tenant's regions, `unusable` ones and open
/// circuits are left out (the record says why). With none left: 503 when circuits are
/// open; else 400 with the first target's refusal when the request's content fits no
/// target (a document no target's format can take: a client's mistake, never a 5xx);
/// else 403 for residency; else 404.
fn plan<'c>(
    live: &'c Live,
    tenant: &Tenant,
    model_name: &str,
    usable: impl Fn(&Target) -> Result<(), Unfit>,
    record: &mut ExecutionRecord,
) -> Result<(&'c Model, Vec<&'c Target>), Error> {
    let config = &*live.config;
    let now = Instant::now();
    let model = config
        .model(model_name)
        .ok_or_else(|| Error::ModelNotFound {
            model: model_name.to_owned(),
        })?;
    if !tenant.may_use(model_name) {
        record.policy.push(record::PolicyCheck {
            check: "allowed_models".into(),
            outcome: "deny".into(),
            detail: Some(model_name.to_owned()),
        });
        return Err(Error::ModelNotAllowed {
            model: model_name.to_owned(),
        });
    }
    let label = |t: &Target| t.key.clone();
    let circuit_open = |t: &Target| live.health.get(&t.key).is_some_and(|h| h.is_open(now));
    let mut open_circuits = 0;
    let mut refused = None;
    let mut allowed_targets = Vec::new();
    let mut allowed_fallbacks = Vec::new();
    for (list, out) in [
        (&model.targets, &mut allowed_targets),
        (&model.fallbacks, &mut allowed_fallbacks),
    ] {
        for t in list {
            let region = &config.providers[t.provider].region;
            if !tenant.region_allowed(region) {
                record.decision.excluded.push(Excluded {
                    target: label(t),
                    reason: format!("residency: region {region} not allowed"),
                });
            } else if let Err(why) = usable(t) {
                let reason = match &why {
                    Unfit::Endpoint => {
                        "unsupported: the provider cannot serve this endpoint".into()
                    }
                    Unfit::Content(e) => format!("unsupported: {}", e.message),
                };
                record.decision.excluded.push(Excluded {
                    target: label(t),
                    reason,
                });
                if let Unfit::Content(e) = why {
                    refused.get_or_insert(e);
                }
            } else if circuit_open(t) {
                open_circuits += 1;
                record.decision.excluded.push(Excluded {
                    target: label(t),
                    reason: "circuit open".into(),
                });
            } else {
                out.push(t);
            }
        }
    }
    if allowed_targets.is_empty() && allowed_fallbacks.is_empty() {
        if open_circuits > 0 {
            return Err(Error::NoHealthyTarget {
                model: model_name.to_owned(),
            });
        }
        if let Some(e) = refused {
            return Err(e.into());
        }
        let residency = record
            .decision
            .excluded
            .iter()
            .any(|e| e.reason.starts_with("residency"));
        if residency {
            record.policy.push(record::PolicyCheck {
                check: "residency".into(),
                outcome: "deny".into(),
                detail: Some(format!("allowed regions: {}", tenant.regions.join(", "))),
            });
            return Err(Error::ResidencyDenied {
                model: model_name.to_owned(),
                regions: tenant.regions.clone(),
            });
        }
        return Err(Error::ModelNotFound {
            model: model_name.to_owned(),
        });
    }
    let mut order = match model.strategy {
        Strategy::Weighted => weighted_order(allowed_targets),
        Strategy::LeastLatency => latency_order(live, allowed_targets),
        Strategy::Cost => cost_order(live, allowed_targets),
    };
    order.extend(allowed_fallbacks);
    record.decision.candidates = order.iter().map(|t| label(t)).collect();
    Ok((model, order))
}

/// Lowest moving average (latency plus time to first token) first; targets without a
/// sample yet come first so they get one; one request in twenty explores a random
/// target first so averages stay current.
fn latency_order<'c>(live: &Live, mut targets: Vec<&'c Target>) -> Vec<&'c Target> {
    let score = |t: &Target| {
        live.health.get(&t.key).map_or(0, |h| {
            let (l, f) = h.averages();
            l + f
        })
    };
    targets.sort_by_key(|t| score(t));
    if targets.len() > 1 && rand::random::<f64>() < 0.05 {
        let i = rand::random_range(0..targets.len());
        let t = targets.remove(i);
        targets.insert(0, t);
    }
    targets
}

/// Cheapest first (price of a typical 1000-in, 1000-out request); unpriced last.
fn cost_order<'c>(live: &Live, mut targets: Vec<&'c Target>) -> Vec<&'c Target> {
    targets
        .sort_by_key(|t| policy::price_of(live, t).map_or(u64::MAX, |p| p.cost_micros(1000, 1000)));
    targets
}

/// One target drawn by weight first, then the rest by descending weight.
fn weighted_order(mut targets: Vec<&Target>) -> Vec<&Target> {
    if targets.len() > 1 {
        let total: f64 = targets.iter().map(|t| t.weight).sum();
        let mut x = rand::random::<f64>() * total;
        let mut first = targets.len() - 1;
        for (i, t) in targets.iter().enumerate() {
            if x < t.weight {
                first = i;
                break;
            }
            x -= t.weight;
        }
        let chosen = targets.remove(first);
        targets.sort_by(|a, b| b.weight.total_cmp(&a.weight));
        targets.insert(0, chosen);
    }
    targets
}

/// Jittered exponential backoff before try `n` (1-based), honouring `Retry-After` when
/// it is within [`MAX_BACKOFF`].
fn backoff(n: u32, retry_after: Option<Duration>) -> Duration {
    let base = Duration::from_millis(100u64.saturating_mul(1 << n.min(5).saturating_sub(1)));
    let jittered = base.mul_f64(0.5 + rand::random::<f64>() * 0.5);
    retry_after
        .map_or(jittered, |ra| ra.max(jittered))
        .min(MAX_BACKOFF)
}

/// What one attempt asks of an upstream.
#[derive(Clone, Copy)]
enum Op<'a> {
    /// A chat request; with `Some`, a stream from an upstream of the client's own format
    /// is relayed as its own bytes (see [`Relay`]).
    Chat(&'a ChatRequest, Option<Relay>),
    Embeddings(&'a EmbeddingsRequest),
}

/// A stream from an upstream of the client's own format, whose events the gateway does
/// not change (no PII redaction; for OpenAI, no tools), goes to the client as the
/// upstream wrote it: its events are still decoded (usage, the end, errors, the cache
/// and the record), but not re-encoded.
#[derive(Clone, Copy)]
struct Relay {
    /// The client's format: only an upstream of this format is relayed.
    surface: Surface,
    /// The client did not ask for usage: the usage-only chunk is left out.
    drop_usage_only: bool,
}

/// What a successful attempt returns. (Moved once, into the boxed reply or the shadow
/// task; boxing the stream here would add an allocation to every stream.)
enum Output {
    Complete(ChatResponse, Bytes),
    Embeddings(EmbeddingsResponse),
    /// A stream and its first events (so it has started).
    Stream(UpstreamStream, Vec<StreamEvent>),
}

/// One attempt against one upstream; returns the output and its time to first token.
async fn attempt_once(
    up: &Upstream,
    op: Op<'_>,
    model: &str,
    timeout: Duration,
    trace: &Outgoing,
) -> Result<(Output, Option<f64>), AttemptError> {
    match op {
        Op::Embeddings(req) => Ok((
            Output::Embeddings(up.embeddings(req, model, timeout, trace).await?),
            None,
        )),
        Op::Chat(req, relay) => {
            let t0 = Instant::now();
            match up.chat(req, model, timeout, trace).await? {
                ChatReply::Complete { response, raw } => {
                    Ok((Output::Complete(response, raw), None))
                }
                ChatReply::Stream(mut s) => {
                    if let Some(r) = relay
                        && up.wire.format() == r.surface.format()
                    {
                        // Anthropic's events that mean nothing canonical (`ping`,
                        // `citations_delta`, blocks the hub does not model) are the
                        // client's too; an OpenAI-format one (an Azure content-filter
                        // chunk) is left out, as re-encoding would.
                        s.relay(r.drop_usage_only, r.surface == Surface::Anthropic);
                    }
                    let mut first = Vec::new();
                    // First-byte timeout: the first event must arrive within the attempt timeout.
                    let more = s.next_events(&mut first, timeout).await?;
                    if let Some(StreamEvent::Error { kind, message }) = first.first() {
                        return Err(AttemptError::Status {
                            status: 502,
                            error: Some(asc_wire::ProviderError {
                                kind: kind.clone(),
                                message: message.clone(),
                            }),
                            retry_after: None,
                        });
                    }
                    if first.is_empty() && !more {
                        return Err(AttemptError::Malformed(
                            "stream ended before its first event".into(),
                        ));
                    }
                    let ttft = t0.elapsed().as_secs_f64() * 1000.0;
                    Ok((Output::Stream(s, first), Some(ttft)))
                }
            }
        }
    }
}

/// Phase 5: tries the plan in order until one attempt succeeds. Every attempt lands in
/// the record.
async fn attempts(
    live: &Live,
    model: &Model,
    order: &[&Target],
    ctx: &mut RequestCtx,
    op: Op<'_>,
) -> Result<(Output, Wire), Error> {
    let timeout = Duration::from_millis(model.timeout_ms);
    let deadline = ctx.started + Duration::from_millis(model.deadline_ms);
    let mut failed = Vec::new();
    let mut circuits_open = 0;
    'targets: for (i, target) in order.iter().enumerate() {
        // An experiment's candidate is tried once; whatever fails falls back.
        let protected = i == 0 && ctx.protect_first;
        let retries = if protected { 0 } else { model.retries };
        let up = &live.upstreams[target.provider];
        let health = live.health.get(&target.key);
        if !policy::reserve_provider(live, target, &mut ctx.hold).await {
            ctx.record.decision.excluded.push(Excluded {
                target: format!("{}/{}", up.name, target.model),
                reason: "provider budget spent".into(),
            });
            continue;
        }
        let mut retry_after = None;
        for n in 0..=retries {
            if n > 0 {
                if retry_after.is_some_and(|ra| ra > MAX_BACKOFF) {
                    break; // the upstream asked for a longer pause: move on
                }
                tokio::time::sleep(backoff(n, retry_after)).await;
            }
            let t0 = Instant::now();
            let remaining = deadline.saturating_duration_since(t0);
            if remaining.is_zero() {
                // The request's overall deadline has passed: no more attempts.
                failed.push((up.name.clone(), AttemptError::Timeout));
                break 'targets;
            }
            if let Some(h) = health
                && h.pass(t0) == Pass::Skip
            {
                circuits_open += 1;
                ctx.record.decision.excluded.push(Excluded {
                    target: target.key.clone(),
                    reason: "circuit open".into(),
                });
                break;
            }
            let (span_id, trace) = ctx.trace.attempt();
            let offset = t0.saturating_duration_since(ctx.started);
            // The attempt is in the record before it is made (no status and no error
            // yet: in flight): should the client go away meanwhile (the request's future
            // dropped here), the record keeps it, as cut short by the client (see
            // `RequestCtx::drop`), at this target's price.
            ctx.record.attempts.push(Attempt {
                provider: up.name.clone(),
                model: target.model.clone(),
                region: up.region.clone(),
                status: None,
                error: None,
                latency_ms: 0.0,
                ttft_ms: None,
                span_id,
                offset,
            });
            ctx.hold.price = policy::price_of(live, target);
            let result = attempt_once(up, op, &target.model, timeout.min(remaining), &trace).await;
            let elapsed = t0.elapsed();
            let latency_ms = elapsed.as_secs_f64() * 1000.0;
            let Some(attempt) = ctx.record.attempts.last_mut() else {
                return Err(Error::Internal("the attempt left the record".into()));
            };
            attempt.latency_ms = latency_ms;
            match result {
                Ok((value, ttft_ms)) => {
                    if let Some(h) = health {
                        let ttft = ttft_ms.map(|ms| Duration::from_secs_f64(ms / 1000.0));
                        h.success(elapsed, ttft);
                    }
                    if protected && let Some(a) = ctx.experiment.as_mut() {
                        a.served = true;
                    }
                    (attempt.status, attempt.error, attempt.ttft_ms) = (Some(200), None, ttft_ms);
                    ctx.record.decision.chosen = Some(format!("{}/{}", up.name, target.model));
                    ctx.set_header(hdr::PROVIDER, &up.name);
                    ctx.set_header(hdr::TARGET_MODEL, &target.model);
                    let tries = ctx.record.attempts.len().to_string();
                    ctx.set_header(hdr::ATTEMPTS, &tries);
                    return Ok((value, up.wire));
                }
                Err(e) => {
                    tracing::debug!(provider = %up.name, error = %e, "attempt failed");
                    (attempt.status, attempt.error) = (e.status(), Some(e.summary()));
                    if !matches!(e, AttemptError::Connect(_) | AttemptError::Unsupported(_)) {
                        // The provider was reached (it answered, or took the request and
                        // did not answer in time): the error response names the last one.
                        ctx.set_header(hdr::PROVIDER, &up.name);
                        ctx.set_header(hdr::TARGET_MODEL, &target.model);
                    }
                    failed.push((up.name.clone(), e.clone()));
                    if let Some(h) = health {
                        if e.is_client_mistake() {
                            h.release_probe();
                        } else if h.failure(Instant::now(), &model.breaker) {
                            tracing::warn!(target = %target.key, error = %e, "circuit opened");
                            if let (Some(sh), Some(open_for)) =
                                (&live.shared, h.open_for(Instant::now()))
                            {
                                // Every replica skips the target as long as this one does.
                                let (sh, key) = (sh.clone(), target.key.clone());
                                tokio::spawn(async move {
                                    if let Err(e) = sh.publish_open(&key, open_for).await {
                                        sh.degraded("circuit", &e);
                                    }
                                });
                            }
                            ctx.recorder.event(
                                "circuit_open",
                                None,
                                serde_json::json!({"target": target.key, "model": model.name}),
                            );
                        }
                    }
                    if protected {
                        // Counted against the candidate; the baseline plan serves.
                        break;
                    }
                    if e.is_client_mistake() {
                        let message = match &e {
                            AttemptError::Status {
                                error: Some(pe), ..
                            } => pe.message.clone(),
                            _ => e.summary(),
                        };
                        let tries = ctx.record.attempts.len().to_string();
                        ctx.set_header(hdr::ATTEMPTS, &tries);
                        return Err(Error::UpstreamRejected {
                            provider: up.name.clone(),
                            message: truncate(&message, 500),
                        });
                    }
                    if !e.is_retryable() {
                        break;
                    }
                    retry_after = match &e {
                        AttemptError::Status { retry_after, .. } => *retry_after,
                        _ => None,
                    };
                }
            }
        }
        // This target is done with: its provider reservation goes back.
        policy::release_provider(&mut ctx.hold);
    }
    let tries = ctx.record.attempts.len().to_string();
    ctx.set_header(hdr::ATTEMPTS, &tries);
    if failed.is_empty() && circuits_open > 0 {
        return Err(Error::NoHealthyTarget {
            model: model.name.clone(),
        });
    }
    let all_timeouts = failed
        .iter()
        .all(|(_, e)| matches!(e, AttemptError::Timeout));
    let summaries = failed
        .into_iter()
        .map(|(provider, e)| AttemptSummary {
            provider,
            status: e.status(),
            error: e.summary(),
        })
        .collect();
    if all_timeouts {
        Err(Error::UpstreamTimeout {
            attempts: summaries,
        })
    } else {
        Err(Error::UpstreamFailed {
            attempts: summaries,
        })
    }
}

/// The first `max` characters of `s` (never cut inside one).
pub(crate) fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// A new request id: a UUIDv7 (milliseconds since the epoch, then 74 random bits) in
/// 32 hex digits. The random bits come from the thread's generator (seeded from the
/// OS, `rand::rng`), not from a `getrandom` system call per request as
/// `Uuid::now_v7` does.
fn request_id() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    uuid::Builder::from_unix_timestamp_millis(ms, &rand::random::<[u8; 10]>())
        .into_uuid()
        .simple()
        .to_string()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The guardrails phase: blocked terms, PII (detect, redact in place, or block) and the
/// prompt-size limit. What matched lands in the record by type and count only.
fn guard_request(
    tenant: &Tenant,
    req: &mut ChatRequest,
    upstream_model: &str,
    record: &mut ExecutionRecord,
) -> Result<(), Error> {
    let g = &tenant.guardrails;
    if g.is_off() {
        return Ok(());
    }
    match g.check_request(req, upstream_model) {
        Ok(found) => {
            note_findings(record, "request", &found);
            Ok(())
        }
        Err(v) => {
            record.policy.push(record::PolicyCheck {
                check: v.guardrail().into(),
                outcome: "deny".into(),
                detail: Some(v.to_string()),
            });
            Err(Error::GuardrailBlocked {
                guardrail: v.guardrail().into(),
            })
        }
    }
}

/// PII findings as a policy entry: `email:2,ip:1` (types and counts, never text).
fn note_findings(record: &mut ExecutionRecord, on: &str, found: &Findings) {
    if found.pii.is_empty() {
        return;
    }
    let detail = found
        .pii
        .iter()
        .map(|(k, n)| format!("{k}:{n}"))
        .collect::<Vec<_>>()
        .join(",");
    record.policy.push(record::PolicyCheck {
        check: "pii".into(),
        outcome: format!("found_in_{on}"),
        detail: Some(detail),
    });
}

// === chat: /v1/chat/completions and /v1/messages ===

/// Handles a chat request on either surface.
pub async fn chat(state: &AppState, surface: Surface, headers: HeaderMap, body: Body) -> Response {
    let live = state.live.load_full();
    let mut ctx = RequestCtx::new(surface, "chat", state, &live, &headers);
    match chat_inner(&live, &mut ctx, &headers, body).await {
        Ok(Reply::Complete(body)) => ctx.complete(body).await,
        Ok(Reply::Stream(s)) => stream_response(ctx, live, *s),
        Err(e) => ctx.fail(e).await,
    }
}

enum Reply {
    /// The body: the upstream's own bytes (same format) or the gateway's encoding.
    Complete(bytes::Bytes),
    Stream(Box<StartedStream>),
}

/// A stream whose first events are in: from here on there is no fallback.
struct StartedStream {
    /// None when answered from the cache (`first` holds the whole reply).
    upstream: Option<UpstreamStream>,
    /// Fills the cache when the stream completes.
    fill: Option<CacheFill>,
    first: Vec<StreamEvent>,
    /// In `redact` mode: holds back text until no PII can straddle what is sent.
    redactor: Option<StreamRedactor>,
    include_usage: bool,
    idle: Duration,
}

async fn chat_inner(
    live: &Arc<Live>,
    ctx: &mut RequestCtx,
    headers: &HeaderMap,
    body: Body,
) -> Result<Reply, Error> {
    let config = &*live.config;
    let tenant = authenticate(live, headers, &mut ctx.record)?;
    ctx.keepable()?;
    let bytes = read_body(body, headers, config.server.max_body_bytes).await?;
    let mut req = match ctx.surface {
        Surface::OpenAi => openai::parse_request(&bytes)?,
        Surface::Anthropic => anthropic::parse_request(&bytes)?,
    };
    drop(bytes);
    ctx.record.model_requested = Some(req.model.clone());
    ctx.record.stream = req.stream;
    attribution(headers, req.user.as_deref(), &mut ctx.record);
    let (mut model, mut order) = plan(
        live,
        &tenant.tenant,
        &req.model,
        carries(live, &req),
        &mut ctx.record,
    )?;
    let upstream_model = order.first().map_or(req.model.clone(), |t| t.model.clone());
    guard_request(&tenant.tenant, &mut req, &upstream_model, &mut ctx.record)?;
    if tenant.tenant.log_content {
        ctx.record.content = Some(record::Content {
            prompt: crate::guardrails::loggable_request(&req),
            completion: None,
        });
    }
    let estimate = Estimate::chat(&req, &upstream_model);
    // Experiments: eligibility and sticky assignment, before the limits, so that what
    // the limits decide does not depend on the arm (an enrolled request reserves for the
    // dearer of the candidate and the baseline, whichever arm it is in).
    let mut enrolled = experiments::assign(
        &live.experiments,
        &model.name,
        &tenant.tenant,
        headers,
        ctx.record.user.as_deref(),
        &ctx.record.request_id,
    );
    // A candidate that cannot take the request's documents is not tried (nor shadowed).
    let candidate = enrolled
        .as_ref()
        .and_then(|a| live.experiments.candidate(&model.name, a.index))
        .filter(|c| live.upstreams[c.provider].can_send(&req).is_ok());
    let with_candidate: Vec<&Target>;
    let admit_over: &[&Target] = match candidate {
        Some(c) => {
            with_candidate = std::iter::once(c).chain(order.iter().copied()).collect();
            &with_candidate
        }
        None => &order,
    };
    if let Admit::Downgrade(cheaper) = policy::admit(
        live,
        &tenant,
        admit_over,
        estimate,
        &mut ctx.record,
        &mut ctx.hold,
    )
    .await?
    {
        // The budget is spent; the tenant's action serves it with a cheaper model.
        (model, order) = plan(
            live,
            &tenant.tenant,
            &cheaper,
            carries(live, &req),
            &mut ctx.record,
        )?;
        ctx.set_header(hdr::DOWNGRADED_TO, &cheaper);
        enrolled = None;
    }
    if let (Some(a), Some(c)) = (enrolled, candidate) {
        enroll(live, model, ctx, a, c, &mut order, &req, estimate).await;
    }
    let include_usage = req.include_usage;
    let surface = ctx.surface;
    // Cache phase: keyed by tenant, model and the (redacted) request; an entry made in a
    // region the tenant does not allow is never served.
    let bypass = headers
        .get(&hdr::CACHE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"));
    // Enrolled requests bypass the cache, both arms alike: a cached reply would hide the
    // arm's own outcome.
    let cache_key = (model.cache_ttl_s > 0 && !bypass && ctx.experiment.is_none())
        .then(|| cache::key(&tenant.tenant.name, &model.name, &req));
    if let Some(key) = &cache_key
        && let Some(hit) = ctx
            .cache
            .get(key, &|r| tenant.tenant.region_allowed(r))
            .await
    {
        ctx.record.cache = "hit";
        ctx.set_header(hdr::CACHE, "hit");
        ctx.set_header(hdr::ATTEMPTS, "0");
        ctx.record.decision.chosen = Some(format!("{}/{}", hit.provider, hit.target_model));
        if req.stream {
            return Ok(Reply::Stream(Box::new(StartedStream {
                upstream: None,
                first: cache::replay(&hit.response),
                redactor: None,
                include_usage,
                idle: Duration::from_millis(model.timeout_ms),
                fill: None,
            })));
        }
        log_completion(&mut ctx.record, &hit.response);
        return Ok(Reply::Complete(
            encode_response(surface, &hit.response).into(),
        ));
    }
    let cache_state = if cache_key.is_some() {
        "miss"
    } else {
        "bypass"
    };
    ctx.record.cache = cache_state;
    ctx.set_header(hdr::CACHE, cache_state);
    // The gateway always asks the upstream for usage; the client's choice only decides
    // whether the usage chunk is forwarded.
    req.include_usage = true;
    // Relayed: streams the gateway does not change (no PII redaction) from an upstream
    // of the client's format. OpenAI-format ones only without tools: with tools, the
    // decoder renumbers parallel calls and names id-less ones, which some
    // OpenAI-compatible servers need. Anthropic's, tools and all: what the hub does not
    // model (citations, server tools, events added later) reaches the client as sent.
    let relay = (req.stream
        && (surface == Surface::Anthropic || req.tools.is_empty())
        && tenant.tenant.guardrails.pii_mode() != PiiMode::Redact)
        .then_some(Relay {
            surface,
            // (Anthropic's usage rides on events the client needs anyway.)
            drop_usage_only: surface == Surface::OpenAi && !include_usage,
        });
    let (output, wire) = attempts(live, model, &order, ctx, Op::Chat(&req, relay)).await?;
    let fill = |ctx: &RequestCtx| {
        let key = cache_key?;
        let a = ctx.record.attempts.last()?;
        Some(CacheFill {
            cache: ctx.cache.clone(),
            key,
            ttl: Duration::from_secs(model.cache_ttl_s),
            provider: a.provider.clone(),
            target_model: a.model.clone(),
            region: a.region.clone(),
            collector: cache::Collector::default(),
        })
    };
    let (response, raw) = match output {
        Output::Stream(upstream, first) => {
            return Ok(Reply::Stream(Box::new(StartedStream {
                upstream: Some(upstream),
                first,
                redactor: tenant.tenant.guardrails.stream_redactor(),
                include_usage,
                idle: Duration::from_millis(model.timeout_ms),
                fill: fill(ctx),
            })));
        }
        Output::Complete(response, raw) => (response, raw),
        Output::Embeddings(_) => return Err(Error::Internal("embeddings reply to chat".into())),
    };
    ctx.record.set_usage(&response.usage);
    let mut response = response;
    let redacting = tenant.tenant.guardrails.pii_mode() == PiiMode::Redact;
    if redacting {
        let found = tenant.tenant.guardrails.redact_response(&mut response);
        note_findings(&mut ctx.record, "response", &found);
    }
    log_completion(&mut ctx.record, &response);
    let same_format = !redacting && wire.format() == surface.format();
    // Same format: the upstream's bytes go out as they came (no copy, no re-encoding).
    let body = if same_format {
        raw
    } else {
        encode_response(surface, &response).into()
    };
    if let Some(f) = fill(ctx) {
        f.store(response).await;
    }
    Ok(Reply::Complete(body))
}

/// Puts an assigned request into its experiment: the record and the response header say
/// so; a candidate-arm request reserves from the experiment budget and tries the
/// candidate first (once, protected); a shadow-sampled one sends a copy to the
/// candidate. A reservation that does not fit the budget leaves the request out (the
/// experiment pauses), as does a full shadow queue.
#[expect(
    clippy::too_many_arguments,
    reason = "the request's plan, borrowed from the phases before"
)]
async fn enroll<'c>(
    live: &Arc<Live>,
    model: &Model,
    ctx: &mut RequestCtx,
    mut a: Assignment,
    candidate: &'c Target,
    order: &mut Vec<&'c Target>,
    req: &ChatRequest,
    estimate: Estimate,
) {
    if a.shadow || a.arm == Arm::Candidate {
        let worst = policy::price_of(live, candidate).map_or(0, |p| estimate.worst_micros(&p));
        let fits = experiments::reserve(&mut a, worst, live.shared.as_ref()).await;
        if a.spec.budget_micros.is_some() {
            // The experiment's budget, in the record: what this request reserved of it,
            // or that it was left out because that did not fit.
            let (outcome, detail) = if fits {
                let usd = crate::limits::budget::micros_to_usd(worst);
                ("allow", format!("reserved ${usd:.6}"))
            } else {
                (
                    "skip",
                    "the experiment's budget is spent: not enrolled".to_owned(),
                )
            };
            ctx.record.policy.push(record::PolicyCheck {
                check: "experiment_budget".into(),
                outcome: outcome.into(),
                detail: Some(detail),
            });
        }
        if !fits {
            return;
        }
    }
    if a.shadow {
        let Ok(permit) = a.rt.shadow_slots.clone().try_acquire_owned() else {
            experiments::settle(&a, 0);
            a.rt.shadow_dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        };
        let copy = ShadowCopy {
            live: live.clone(),
            assignment: a.clone(),
            candidate: candidate.clone(),
            req: ChatRequest {
                include_usage: true,
                ..req.clone()
            },
            timeout: Duration::from_millis(model.timeout_ms),
            request_id: ctx.record.request_id.clone(),
            // The copy's call hangs under the request span (it has no span of its own).
            trace: ctx.trace.outgoing(&ctx.trace.span_id),
        };
        tokio::spawn(async move {
            copy.run().await;
            drop(permit);
        });
        // The shadow's spend is settled by the copy itself, charged to the experiment only.
        a.reserved = 0;
        a.ledger = None;
    } else if a.arm == Arm::Candidate {
        order.insert(0, candidate);
        ctx.protect_first = true;
        ctx.record
            .decision
            .candidates
            .insert(0, candidate.key.clone());
    }
    let arm = a.arm.as_str();
    ctx.record.decision.experiment = Some(a.spec.name.clone());
    ctx.record.decision.arm = Some(arm.to_owned());
    ctx.record.decision.assignment_probability = Some(a.p);
    ctx.set_header(hdr::EXPERIMENT, &format!("{}/{arm}", a.spec.name));
    ctx.experiment = Some(a);
}

/// A shadow experiment's copy of a request: sent to the candidate off the request path,
/// consumed whole (streams included, for the time to first token), its outcome and spend
/// given to the experiment; the client never sees it.
struct ShadowCopy {
    live: Arc<Live>,
    assignment: Assignment,
    candidate: Target,
    req: ChatRequest,
    timeout: Duration,
    request_id: String,
    trace: Outgoing,
}

impl ShadowCopy {
    async fn run(self) {
        let up = &self.live.upstreams[self.candidate.provider];
        let t0 = Instant::now();
        let mut usage = asc_wire::Usage::default();
        let mut ttft_ms = None;
        let result = attempt_once(
            up,
            Op::Chat(&self.req, None),
            &self.candidate.model,
            self.timeout,
            &self.trace,
        )
        .await;
        let ok = match result {
            Ok((Output::Complete(resp, _), _)) => {
                usage = resp.usage;
                true
            }
            Ok((Output::Stream(mut s, first), ttft)) => {
                ttft_ms = ttft;
                let mut events = first;
                let mut ok = true;
                loop {
                    for ev in events.drain(..) {
                        match ev {
                            StreamEvent::Usage(u) => usage = u,
                            StreamEvent::Error { .. } => ok = false,
                            _ => {}
                        }
                    }
                    match s.next_events(&mut events, self.timeout).await {
                        Ok(true) => {}
                        Ok(false) if !events.is_empty() => {}
                        Ok(false) => break,
                        Err(_) => {
                            ok = false;
                            break;
                        }
                    }
                }
                ok
            }
            Ok((Output::Embeddings(_), _)) | Err(_) => false,
        };
        let cost = policy::price_of(&self.live, &self.candidate).map_or(0, |p| {
            let cached = crate::prices::Cached {
                written: usage.cache_creation_input_tokens.unwrap_or(0),
                read: usage.cache_read_input_tokens.unwrap_or(0),
                hour: policy::prompt_cache(&self.req) == Some(true),
            };
            p.cost_micros_cached(usage.input_tokens, usage.output_tokens, cached)
        });
        let a = &self.assignment;
        experiments::settle(a, cost);
        a.rt.send(experiments::Msg::Outcome(experiments::Outcome {
            arm: Arm::Candidate,
            p: 0.5,
            error: !ok,
            latency_ms: t0.elapsed().as_secs_f64() * 1000.0,
            ttft_ms,
            cost_micros: cost,
            request_id: self.request_id,
            unit: a.unit,
        }));
    }
}

/// With `log_content`, the reply's text (and tool-call arguments) into the record, PII
/// redacted.
fn log_completion(record: &mut ExecutionRecord, response: &ChatResponse) {
    let Some(c) = record.content.as_mut() else {
        return;
    };
    let mut text = String::new();
    for block in &response.content {
        match block {
            asc_wire::Block::Text { text: t, .. } => text.push_str(t),
            asc_wire::Block::ToolCall { arguments, .. } => text.push_str(arguments),
            _ => {}
        }
    }
    c.completion = Some(crate::guardrails::loggable(text));
}

/// Where a reply goes into the cache once complete.
struct CacheFill {
    cache: Arc<CacheStore>,
    key: [u8; 32],
    ttl: Duration,
    provider: String,
    target_model: String,
    region: String,
    collector: cache::Collector,
}

impl CacheFill {
    async fn store(self, response: ChatResponse) {
        let entry = cache::Entry {
            response,
            provider: self.provider,
            target_model: self.target_model,
            region: self.region,
        };
        self.cache.insert(self.key, entry, self.ttl).await;
    }
}

fn encode_response(surface: Surface, response: &ChatResponse) -> Vec<u8> {
    match surface {
        Surface::OpenAi => openai::encode_response(response, unix_now()),
        Surface::Anthropic => anthropic::encode_response(response),
    }
}

// === streaming ===

enum ClientEncoder {
    Anthropic(anthropic::StreamEncoder),
    OpenAi(openai::StreamEncoder),
}

impl ClientEncoder {
    fn encode(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) {
        match self {
            Self::Anthropic(e) => e.encode(ev, out),
            Self::OpenAi(e) => e.encode(ev, out),
        }
    }

    fn error(&mut self, code: &str, message: &str, out: &mut Vec<u8>) {
        match self {
            Self::Anthropic(e) => e.encode_error("api_error", message, out),
            Self::OpenAi(e) => e.encode_error(code, message, out),
        }
    }
}

/// The status (and error code) of a request whose client went away first.
const CLIENT_CLOSED: &str = "client_closed";

/// Runs [`record::finish`] exactly once: on a normal end, or on drop when the client
/// disconnected first (the record then says `client_closed`).
struct Finisher {
    ctx: Option<RequestCtx>,
    usage_seen: bool,
    output_chars: u64,
}

impl Finisher {
    fn observe(&mut self, ev: &StreamEvent) {
        let Some(ctx) = self.ctx.as_mut() else { return };
        match ev {
            StreamEvent::Usage(u) => {
                self.usage_seen = true;
                ctx.record.set_usage(u);
            }
            StreamEvent::Start { usage: Some(u), .. } => {
                // The prompt as the stream's start counts it (its output comes later).
                let output = ctx.record.completion_tokens;
                ctx.record.set_usage(u);
                ctx.record.completion_tokens = output;
            }
            StreamEvent::TextDelta { text: t }
            | StreamEvent::ToolCallDelta { arguments: t, .. } => {
                self.output_chars += t.len() as u64;
                // With `log_content`, the text so far (redacted once, at the end).
                if let Some(c) = ctx.record.content.as_mut() {
                    c.completion.get_or_insert_with(String::new).push_str(t);
                }
            }
            _ => {}
        }
    }

    /// Closes the request; with `strict` durability the receiver resolves at commit.
    fn finish(
        &mut self,
        status: &'static str,
        error_code: Option<&str>,
    ) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let mut ctx = self.ctx.take()?;
        if !self.usage_seen {
            // The upstream never said (a stream cut short, or an upstream that does not
            // count): estimate and flag it. The output at about four characters a
            // token; the prompt, unless the stream's start said it, as at admission.
            ctx.record.completion_tokens = self.output_chars.div_ceil(4);
            if ctx.record.prompt_tokens == 0 {
                ctx.record.prompt_tokens = ctx.hold.estimate.prompt;
            }
            ctx.record.usage_estimated = true;
        } else if status != "success" {
            // A stream that did not end as it should (cut, client gone, an error) may
            // have said only its early usage (Anthropic's `message_start` counts one
            // output token): the output is at least what was relayed.
            let relayed = self.output_chars.div_ceil(4);
            if relayed > ctx.record.completion_tokens {
                ctx.record.completion_tokens = relayed;
                ctx.record.usage_estimated = true;
            }
        }
        ctx.record.status = status;
        ctx.record.error_code = error_code.map(str::to_owned);
        if let Some(c) = ctx.record.content.as_mut() {
            let text = c.completion.take().unwrap_or_default();
            c.completion = Some(crate::guardrails::loggable(text));
        }
        ctx.close()
    }

    /// As [`Finisher::finish`], then waits for the commit (the stream's last bytes go
    /// out only after it): true once committed (or when nothing is waited for), false
    /// when the record was dropped or the store did not take it within [`record::COMMIT_WAIT`]
    /// (a store that fails does not hold a stream open for good).
    async fn finish_durably(&mut self, status: &'static str, error_code: Option<&str>) -> bool {
        committed(self.finish(status, error_code)).await
    }
}

impl Drop for RequestCtx {
    /// A request whose future was dropped before its exit (a client that went away
    /// while it waited for the upstream): the upstream call is cancelled with it, and
    /// the record says `client_closed`; limits are settled as for any other end.
    fn drop(&mut self) {
        if !self.closed {
            self.record.status = CLIENT_CLOSED;
            self.record.error_code = Some(CLIENT_CLOSED.to_owned());
            // An attempt cut short: how long it ran, and the prompt the provider was
            // sent, as estimated at admission (it is charged for; nothing came back).
            let now = self.elapsed_ms();
            if let Some(a) = self.record.attempts.last_mut()
                && a.status.is_none()
                && a.error.is_none()
            {
                a.error = Some(CLIENT_CLOSED.to_owned());
                a.latency_ms = (now - a.offset.as_secs_f64() * 1000.0).max(0.0);
                if self.record.prompt_tokens == 0 {
                    self.record.prompt_tokens = self.hold.estimate.prompt;
                    self.record.usage_estimated = true;
                }
            }
            let _ = self.close_now();
        }
    }
}

impl Drop for Finisher {
    fn drop(&mut self) {
        self.finish(CLIENT_CLOSED, Some(CLIENT_CLOSED));
    }
}

struct StreamState {
    upstream: Option<UpstreamStream>,
    fill: Option<CacheFill>,
    redactor: Option<StreamRedactor>,
    encoder: ClientEncoder,
    pending: Vec<StreamEvent>,
    finisher: Finisher,
    idle: Duration,
    ended: bool,
    /// Holds the config generation for the stream's whole life.
    _live: Arc<Live>,
}

fn stream_response(mut ctx: RequestCtx, live: Arc<Live>, s: StartedStream) -> Response {
    let encoder = match ctx.surface {
        Surface::OpenAi => {
            ClientEncoder::OpenAi(openai::StreamEncoder::new(s.include_usage, unix_now()))
        }
        Surface::Anthropic => ClientEncoder::Anthropic(anthropic::StreamEncoder::new()),
    };
    ctx.record.ttft_ms = ctx.record.attempts.last().and_then(|a| a.ttft_ms);
    let mut headers = std::mem::take(&mut ctx.headers);
    let state = StreamState {
        upstream: s.upstream,
        fill: s.fill,
        redactor: s.redactor,
        encoder,
        pending: s.first,
        finisher: Finisher {
            ctx: Some(ctx),
            usage_seen: false,
            output_chars: 0,
        },
        idle: s.idle,
        ended: false,
        _live: live,
    };
    // The end-of-stream awaits (record, cache fill) are boxed: inline they make every
    // open stream's state ~1.2 KB larger for futures that run once, at its end. The
    // state itself is boxed too: `unfold` moves it into and out of its future on every
    // frame, and inline that was two copies of the ~1 KB record per frame.
    let stream = futures_util::stream::unfold(Box::new(state), |mut st| async move {
        // One frame: the events of one upstream read (a few hundred bytes each). Its
        // buffer is allocated once there is something to encode, not while the stream
        // waits for the upstream: an idle open stream holds no frame buffer.
        let mut buf = Vec::new();
        loop {
            if st.ended {
                // The error event written on the way out goes first.
                return (!buf.is_empty()).then(|| (Ok(Bytes::from(buf)), st));
            }
            let mut done = false;
            // The pending list is taken and given back (emptied) below, so its
            // allocation serves every read of the stream.
            let mut events = std::mem::take(&mut st.pending);
            if let Some(r) = st.redactor.as_mut() {
                events = events.into_iter().flat_map(|ev| r.on_event(ev)).collect();
            }
            let relaying = st.upstream.as_ref().is_some_and(UpstreamStream::relaying);
            // A relayed frame is the upstream's own bytes (swapped in below), so only an
            // encoded one needs a buffer of its own.
            if !relaying && buf.capacity() == 0 && !events.is_empty() {
                buf.reserve(2048);
            }
            for ev in events.drain(..) {
                if let Some(f) = st.fill.as_mut() {
                    f.collector.push(&ev);
                }
                st.finisher.observe(&ev);
                // The end (`[DONE]`, `message_stop`) is encoded only once the record
                // is committed (below).
                if !relaying && !matches!(ev, StreamEvent::Done) {
                    st.encoder.encode(&ev, &mut buf);
                }
                match &ev {
                    StreamEvent::Done => done = true,
                    StreamEvent::Error { kind, .. } => {
                        let code = format!("upstream_{kind}");
                        Box::pin(st.finisher.finish_durably("error", Some(&code))).await;
                        st.ended = true;
                    }
                    _ => {}
                }
            }
            st.pending = events;
            // Where a relayed stream's end (as the upstream wrote it) begins in `buf`:
            // cut off if the record is not committed.
            let relayed_end = st.upstream.as_mut().and_then(|u| u.take_relayed(&mut buf));
            if done {
                if let Some(mut f) = st.fill.take() {
                    let collector = std::mem::take(&mut f.collector);
                    if let Some(resp) = collector.finish() {
                        Box::pin(f.store(resp)).await;
                    }
                }
                if Box::pin(st.finisher.finish_durably("success", None)).await {
                    if !relaying {
                        st.encoder.encode(&StreamEvent::Done, &mut buf);
                    }
                } else {
                    // `strict`, and the record was not committed in time: the stream
                    // does not end as complete (as a non-streaming answer gets 503).
                    if let Some(at) = relayed_end {
                        buf.truncate(at);
                    }
                    let e = Error::AuditUnavailable;
                    st.encoder.error(e.code(), &e.message(), &mut buf);
                }
                st.ended = true;
            }
            if !buf.is_empty() {
                return Some((Ok::<_, Infallible>(Bytes::from(buf)), st));
            }
            if st.ended {
                return None;
            }
            let Some(upstream) = st.upstream.as_mut() else {
                // A cached reply is all in `pending`; nothing more will come.
                st.ended = true;
                continue;
            };
            match upstream.next_events(&mut st.pending, st.idle).await {
                Ok(true) => {}
                Ok(false) if !st.pending.is_empty() => {}
                Ok(false) => {
                    let msg = "the upstream closed the stream before it was complete";
                    st.encoder.error("upstream_error", msg, &mut buf);
                    Box::pin(
                        st.finisher
                            .finish_durably("error", Some("upstream_truncated")),
                    )
                    .await;
                    st.ended = true;
                }
                Err(e) => {
                    let (code, msg) = match e {
                        AttemptError::Timeout => (
                            "upstream_timeout",
                            "the upstream stopped sending before the reply was complete",
                        ),
                        _ => (
                            "upstream_error",
                            "the upstream stream failed before the reply was complete",
                        ),
                    };
                    st.encoder.error(code, msg, &mut buf);
                    Box::pin(st.finisher.finish_durably("error", Some(code))).await;
                    st.ended = true;
                }
            }
        }
    });
    // The request's own header map becomes the response's (hyper holds it for the
    // stream's life; a second map would be ~1 KB more per open stream).
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(hdr::ACCEL_BUFFERING, HeaderValue::from_static("no"));
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.headers_mut() = headers;
    resp
}

// === embeddings ===

pub async fn embeddings(state: &AppState, headers: HeaderMap, body: Body) -> Response {
    let live = state.live.load_full();
    let mut ctx = RequestCtx::new(Surface::OpenAi, "embeddings", state, &live, &headers);
    let result = embeddings_inner(&live, &mut ctx, &headers, body).await;
    ctx.answer(result).await
}

async fn embeddings_inner(
    live: &Live,
    ctx: &mut RequestCtx,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<u8>, Error> {
    let config = &*live.config;
    let tenant = authenticate(live, headers, &mut ctx.record)?;
    ctx.keepable()?;
    let bytes = read_body(body, headers, config.server.max_body_bytes).await?;
    // Token-array input is read as cl100k_base text here, so everything after (the size
    // estimate, the record, any provider) sees text.
    let req = openai::parse_embeddings_request(&bytes, &crate::guardrails::EmbeddingTokens)?;
    ctx.record.model_requested = Some(req.model.clone());
    attribution(headers, None, &mut ctx.record);
    let usable = |t: &Target| {
        if live.upstreams[t.provider].supports_embeddings() {
            Ok(())
        } else {
            Err(Unfit::Endpoint)
        }
    };
    let (model, order) = plan(live, &tenant.tenant, &req.model, usable, &mut ctx.record)?;
    let chars: usize = req.input.iter().map(String::len).sum();
    let estimate = Estimate {
        prompt: (chars as u64).div_ceil(4) + 1,
        max_output: 0,
        cache: None,
    };
    if let Admit::Downgrade(_) = policy::admit(
        live,
        &tenant,
        &order,
        estimate,
        &mut ctx.record,
        &mut ctx.hold,
    )
    .await?
    {
        return Err(Error::BudgetExceeded {
            tenant: tenant.tenant.name.clone(),
        });
    }
    ctx.set_header(hdr::CACHE, "bypass");
    let (output, _) = attempts(live, model, &order, ctx, Op::Embeddings(&req)).await?;
    let Output::Embeddings(resp) = output else {
        return Err(Error::Internal("chat reply to embeddings".into()));
    };
    ctx.record.prompt_tokens = resp.usage.input_tokens;
    // Upstreams are always asked for floats; the client gets the encoding it asked for
    // (the OpenAI SDKs ask for base64 by default).
    Ok(if openai::wants_base64(&req) {
        openai::encode_embeddings_response_base64(&resp)
    } else {
        openai::encode_embeddings_response(&resp)
    })
}

// === feedback ===

/// `POST /v1/feedback`: `{"request_id", "score": 0..1, "comment"?}`, a later quality
/// signal for one of the tenant's own requests; stored once per request, and given to the
/// request's experiment (joined by request id) when it was enrolled in one.
pub async fn feedback(state: &AppState, headers: HeaderMap, body: Body) -> Response {
    let live = state.live.load_full();
    let mut ctx = RequestCtx::new(Surface::OpenAi, "feedback", state, &live, &headers);
    let result = feedback_inner(state, &live, &mut ctx, &headers, body).await;
    ctx.answer(result).await
}

/// The feedback body, checked field by field.
fn parse_feedback(bytes: &[u8]) -> Result<(String, f64, Option<String>), Error> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| Error::InvalidRequest {
            message: format!("the body is not valid JSON: {e}"),
            param: None,
        })?;
    let obj = v
        .as_object()
        .ok_or_else(|| Error::invalid("body", "the body must be a JSON object"))?;
    if let Some(k) = obj
        .keys()
        .find(|k| !["request_id", "score", "comment"].contains(&k.as_str()))
    {
        return Err(Error::invalid(k, format!("unknown field `{k}`")));
    }
    let request_id = match obj.get("request_id") {
        Some(serde_json::Value::String(s)) if !s.is_empty() && s.len() <= 128 => s.clone(),
        Some(serde_json::Value::String(_)) => {
            return Err(Error::invalid(
                "request_id",
                "`request_id` must be 1 to 128 characters",
            ));
        }
        Some(_) => {
            return Err(Error::invalid(
                "request_id",
                "`request_id` must be a string",
            ));
        }
        None => return Err(Error::invalid("request_id", "`request_id` is required")),
    };
    let score = match obj.get("score") {
        Some(serde_json::Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        Some(_) => return Err(Error::invalid("score", "`score` must be a number")),
        None => return Err(Error::invalid("score", "`score` is required")),
    };
    if !(0.0..=1.0).contains(&score) {
        return Err(Error::invalid("score", "`score` must be between 0 and 1"));
    }
    let comment = match obj.get("comment") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(c)) if c.len() <= 4096 => Some(c.clone()),
        Some(serde_json::Value::String(_)) => {
            return Err(Error::invalid(
                "comment",
                "`comment` must be at most 4096 bytes",
            ));
        }
        Some(_) => return Err(Error::invalid("comment", "`comment` must be a string")),
    };
    Ok((request_id, score, comment))
}

async fn feedback_inner(
    state: &AppState,
    live: &Live,
    ctx: &mut RequestCtx,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<u8>, Error> {
    let tenant = authenticate(live, headers, &mut ctx.record)?;
    let bytes = read_body(body, headers, live.config.server.max_body_bytes).await?;
    let (request_id, score, comment) = parse_feedback(&bytes)?;
    let not_found = || Error::RequestNotFound {
        request_id: request_id.clone(),
    };
    let (owner, record) = state
        .store
        .record(&request_id)
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .ok_or_else(not_found)?;
    if owner.as_deref() != Some(tenant.tenant.name.as_str()) {
        // Another tenant's request is as unknown as a missing one.
        return Err(not_found());
    }
    let added = state
        .store
        .add_feedback(&request_id, &tenant.tenant.name, score, comment.as_deref())
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    if !added {
        return Err(Error::FeedbackExists { request_id });
    }
    let decision = &record["decision"];
    let experiment = decision["experiment"].as_str();
    if let (Some(name), Some(arm), Some(p)) = (
        experiment,
        decision["arm"].as_str().and_then(Arm::parse),
        decision["assignment_probability"].as_f64(),
    ) && let Some((spec, rt)) = live.experiments.find(name)
        && !spec.shadow
    {
        // A shadow's users only ever saw the baseline: feedback says nothing of the
        // candidate there.
        rt.send(experiments::Msg::Feedback { arm, p, score });
    }
    Ok(serde_json::json!({
        "request_id": request_id,
        "score": score,
        "recorded": true,
        "experiment": experiment,
    })
    .to_string()
    .into_bytes())
}

// === models ===

/// A `GET /v1/models…` request: its context, in the client's format (Anthropic's when
/// it sends `anthropic-version`, as the Anthropic SDK does), and the key's tenant; or
/// the refusal to send.
async fn models_request(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(Arc<Live>, RequestCtx, Arc<Tenant>), Response> {
    let live = state.live.load_full();
    let surface = if headers.contains_key("anthropic-version") {
        Surface::Anthropic
    } else {
        Surface::OpenAi
    };
    let mut ctx = RequestCtx::new(surface, "models", state, &live, headers);
    match authenticate(&live, headers, &mut ctx.record) {
        Ok(t) => Ok((live, ctx, t.tenant)),
        Err(e) => Err(ctx.fail(e).await),
    }
}

/// A model a tenant sees: one it may use with a target in a region it allows.
fn visible(live: &Live, tenant: &Tenant, m: &Model) -> bool {
    tenant.may_use(&m.name)
        && (m.targets.iter().chain(&m.fallbacks))
            .any(|t| tenant.region_allowed(&live.config.providers[t.provider].region))
}

/// One model object, in the client's format.
fn model_object(id: &str, surface: Surface) -> serde_json::Value {
    match surface {
        Surface::Anthropic => serde_json::json!({"type": "model", "id": id, "display_name": id,
            "created_at": "2025-01-01T00:00:00Z"}),
        Surface::OpenAi => {
            serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "asc"})
        }
    }
}

/// `GET /v1/models`: the models this key may use, in OpenAI's list shape, or
/// Anthropic's when the client sends `anthropic-version` (the Anthropic SDK does).
pub async fn models(state: &AppState, headers: HeaderMap) -> Response {
    let (live, ctx, tenant) = match models_request(state, &headers).await {
        Ok(r) => r,
        Err(refused) => return refused,
    };
    let names: Vec<&str> = (live.config.models.iter())
        .filter(|m| visible(&live, &tenant, m))
        .map(|m| m.name.as_str())
        .collect();
    let data: Vec<_> = names.iter().map(|n| model_object(n, ctx.surface)).collect();
    let body = match ctx.surface {
        Surface::Anthropic => serde_json::json!({"data": data, "has_more": false,
            "first_id": names.first(), "last_id": names.last()}),
        Surface::OpenAi => serde_json::json!({"object": "list", "data": data}),
    };
    ctx.complete(body.to_string().into_bytes()).await
}

/// `GET /v1/models/{id}`: one model this key may use, in the client's shape (OpenAI's
/// model object, or Anthropic's with `anthropic-version`); any other name is 404
/// `model_not_found`, as a model the key may not see is not there for it.
pub async fn model(state: &AppState, headers: HeaderMap, id: &str) -> Response {
    let (live, mut ctx, tenant) = match models_request(state, &headers).await {
        Ok(r) => r,
        Err(refused) => return refused,
    };
    ctx.record.model_requested = Some(id.to_owned());
    if !live
        .config
        .model(id)
        .is_some_and(|m| visible(&live, &tenant, m))
    {
        return ctx
            .fail(Error::ModelNotFound {
                model: id.to_owned(),
            })
            .await;
    }
    let body = model_object(id, ctx.surface);
    ctx.complete(body.to_string().into_bytes()).await
}

/// `POST /v1/messages/count_tokens` (Anthropic): the prompt tokens of a Messages
/// request (`max_tokens` not needed), `{"input_tokens": N}`, counted as the gateway
/// counts prompts for budgets and `max_prompt_tokens` (see
/// [`crate::guardrails::count_prompt_tokens`]: the tokenizer of the model's first target
/// the tenant's regions allow). The model must be one the key may use there; nothing
/// is sent to a provider.
pub async fn count_tokens(state: &AppState, headers: HeaderMap, body: Body) -> Response {
    let live = state.live.load_full();
    let mut ctx = RequestCtx::new(Surface::Anthropic, "count_tokens", state, &live, &headers);
    let result = count_tokens_inner(&live, &mut ctx, &headers, body).await;
    ctx.answer(result).await
}

async fn count_tokens_inner(
    live: &Arc<Live>,
    ctx: &mut RequestCtx,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<u8>, Error> {
    let tenant = authenticate(live, headers, &mut ctx.record)?;
    let bytes = read_body(body, headers, live.config.server.max_body_bytes).await?;
    let mut v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| Error::InvalidRequest {
            message: format!("the body is not valid JSON: {e}"),
            param: None,
        })?;
    if let Some(obj) = v.as_object_mut() {
        // Counting takes no `max_tokens`; the Messages parser wants one.
        obj.entry("max_tokens").or_insert(serde_json::json!(1));
        obj.remove("stream");
    }
    let req = anthropic::parse_request(v.to_string().as_bytes())?;
    ctx.record.model_requested = Some(req.model.clone());
    let (_, order) = plan(
        live,
        &tenant.tenant,
        &req.model,
        |_| Ok(()),
        &mut ctx.record,
    )?;
    let upstream_model = order
        .first()
        .map_or(req.model.as_str(), |t| t.model.as_str());
    // (The record keeps no tokens: nothing was used.)
    let tokens = crate::guardrails::count_prompt_tokens(upstream_model, &req);
    Ok(serde_json::json!({"input_tokens": tokens})
        .to_string()
        .into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_v7_uuids_in_time_order_and_distinct() {
        let a = request_id();
        std::thread::sleep(Duration::from_millis(2));
        let b = request_id();
        for id in [&a, &b] {
            assert_eq!(id.len(), 32);
            let u = uuid::Uuid::parse_str(id).unwrap_or_default();
            assert_eq!(u.get_version_num(), 7, "{id}");
            assert_eq!(u.get_variant(), uuid::Variant::RFC4122, "{id}");
        }
        assert!(a < b, "{a} then {b}");
        let many: std::collections::HashSet<String> = (0..10_000).map(|_| request_id()).collect();
        assert_eq!(many.len(), 10_000);
    }

    #[test]
    fn tags_are_parsed_and_bounded() {
        let t = parse_tags("team=search, cost-center=42,bad,=x,k=");
        assert_eq!(t.get("team").map(String::as_str), Some("search"));
        assert_eq!(t.get("cost-center").map(String::as_str), Some("42"));
        assert_eq!(t.get("k").map(String::as_str), Some(""));
        assert_eq!(t.len(), 3);
        let many = (0..100)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(parse_tags(&many).len(), MAX_TAGS);
    }

    #[test]
    fn backoff_is_bounded_and_honours_retry_after() {
        for n in 1..10 {
            let b = backoff(n, None);
            assert!(b <= MAX_BACKOFF);
            assert!(b >= Duration::from_millis(50));
        }
        assert_eq!(
            backoff(1, Some(Duration::from_millis(1500))),
            Duration::from_millis(1500)
        );
        assert_eq!(backoff(1, Some(Duration::from_secs(30))), MAX_BACKOFF);
    }

    #[test]
    fn weighted_order_puts_every_target_once() {
        let ts: Vec<Target> = (0..3)
            .map(|i| Target {
                key: format!("p{i}/m{i}"),
                provider: i,
                model: format!("m{i}"),
                weight: (i + 1) as f64,
            })
            .collect();
        let mut firsts = [0u32; 3];
        for _ in 0..3000 {
            let order = weighted_order(ts.iter().collect());
            assert_eq!(order.len(), 3);
            let mut seen: Vec<usize> = order.iter().map(|t| t.provider).collect();
            seen.sort_unstable();
            assert_eq!(seen, [0, 1, 2]);
            firsts[order[0].provider] += 1;
        }
        // Weights 1:2:3 → shares 1/6, 2/6, 3/6 (loose bounds: a random test must not flake).
        assert!(firsts[0] > 300 && firsts[0] < 700, "{firsts:?}");
        assert!(firsts[2] > 1200 && firsts[2] < 1800, "{firsts:?}");
    }
}
