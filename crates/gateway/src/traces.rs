//! Traces (contract sections 2 and 7): W3C trace context in, a `traceparent` on every
//! upstream attempt, and OpenTelemetry spans over OTLP/HTTP (protobuf) when
//! `telemetry.otlp_endpoint` is set.
//!
//! A request's spans are not live objects. Everything they say is in the execution
//! record by the end of the request, so at the single exit (`RequestCtx::close`) the
//! record is written out as one request span (named by the endpoint: `chat`,
//! `embeddings`, ...) and one child span per upstream attempt, with explicit start and
//! end times kept on the way (a wall-clock start per request, monotonic offsets and
//! durations). They are encoded there straight into OTLP protobuf (one buffer, no string
//! copies) and handed to the exporter task through a bounded channel: a full queue drops
//! spans (counted and logged), it never delays a request. The task sends them in batches
//! (every second, or sooner when a batch is full) with the shared HTTP client.
//!
//! Without an endpoint only propagation runs: ids are drawn and one header is formatted
//! per attempt. No `tracing` layer and no SDK: a span per request held open through the
//! pipeline would cost an allocation per field and a lock per event on the hot path,
//! for data the record already holds.
//!
//! Sampling is parent-based: a valid client `traceparent` whose sampled flag is off is
//! propagated (flag off) and nothing is exported; a request without one (or with a
//! malformed one, which is ignored) starts a new trace, sampled when spans are exported.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, header};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::record::ExecutionRecord;

pub type TraceId = [u8; 16];
pub type SpanId = [u8; 8];

/// Finished requests waiting for the exporter; beyond this their spans are dropped.
const QUEUE: usize = 8192;
/// Most requests' spans in one export.
const BATCH: usize = 1024;
/// How often the exporter sends what it has.
const EVERY: Duration = Duration::from_secs(1);
/// One export's time limit.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one warning about failed exports this often.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// Longest `tracestate` forwarded (the W3C minimum to propagate).
const MAX_TRACESTATE: usize = 512;

// === W3C trace context ===

/// A valid `traceparent` from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    /// The caller's span: the parent of the request span.
    pub span_id: SpanId,
    /// Trace flags; bit 0 is `sampled`.
    pub flags: u8,
}

impl TraceParent {
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

/// Parses a W3C `traceparent` (Trace Context, section 3.2):
/// `VERSION-TRACEID-PARENTID-FLAGS` in lowercase hex. `None` for anything invalid:
/// version `ff`, version `00` with anything after the flags, a later version whose extra
/// part does not start with `-`, wrong lengths, uppercase or other non-hex characters, an
/// all-zero trace or parent id.
pub fn parse_traceparent(s: &str) -> Option<TraceParent> {
    let b = s.trim_matches([' ', '\t']).as_bytes();
    if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let version = hex_byte(&b[0..2])?;
    if version == 0xff || (version == 0 && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
        return None;
    }
    let trace_id: TraceId = hex_array(&b[3..35])?;
    let span_id: SpanId = hex_array(&b[36..52])?;
    let flags = hex_byte(&b[53..55])?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(TraceParent {
        trace_id,
        span_id,
        flags,
    })
}

/// `00-TRACEID-SPANID-FLAGS`, the `traceparent` of a call made under `span_id`.
pub fn format_traceparent(trace_id: &TraceId, span_id: &SpanId, sampled: bool) -> String {
    let mut s = String::with_capacity(55);
    s.push_str("00-");
    push_hex(&mut s, trace_id);
    s.push('-');
    push_hex(&mut s, span_id);
    s.push_str(if sampled { "-01" } else { "-00" });
    s
}

/// Lowercase hex of `bytes` (trace and span ids as W3C and tests write them).
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    s
}

fn push_hex(s: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex_byte(b: &[u8]) -> Option<u8> {
    Some((nibble(*b.first()?)? << 4) | nibble(*b.get(1)?)?)
}

fn hex_array<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
    if b.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = hex_byte(pair)?;
    }
    Some(out)
}

/// A random id, never all zeros (which W3C and OTLP read as "no id").
fn random_id<const N: usize>() -> [u8; N] {
    let mut id: [u8; N] = rand::random();
    if id.iter().all(|&b| b == 0) {
        id[N - 1] = 1;
    }
    id
}

pub fn new_span_id() -> SpanId {
    random_id()
}

// === one request's trace ===

/// The trace headers of one upstream call.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    traceparent: Option<HeaderValue>,
    tracestate: Option<HeaderValue>,
}

impl Outgoing {
    /// The headers to add to the call.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &HeaderValue)> {
        (self.traceparent.iter().map(|v| ("traceparent", v)))
            .chain(self.tracestate.iter().map(|v| ("tracestate", v)))
    }
}

/// One request's trace: its ids, its timing, and where its spans go.
#[derive(Debug)]
pub struct RequestTrace {
    pub trace_id: TraceId,
    /// The request span's id.
    pub span_id: SpanId,
    /// The client's span, when a valid `traceparent` came in.
    pub parent: Option<SpanId>,
    /// The sampled flag sent upstream.
    pub sampled: bool,
    /// The client's `tracestate`, forwarded as is along with a valid `traceparent`.
    tracestate: Option<HeaderValue>,
    /// Wall-clock start in Unix nanoseconds; span times are this plus monotonic offsets.
    start_unix_nanos: u64,
    /// Where the spans go: set when an endpoint is configured and the trace is sampled.
    exporter: Option<Exporter>,
}

impl RequestTrace {
    /// The trace a request joins: the client's (a valid `traceparent`, one header only)
    /// or a new one.
    pub fn start(headers: &HeaderMap, exporter: Option<&Exporter>) -> Self {
        let mut values = headers.get_all("traceparent").iter();
        let parent = match (values.next(), values.next()) {
            (Some(v), None) => v.to_str().ok().and_then(parse_traceparent),
            _ => None,
        };
        let (trace_id, parent_span, sampled, tracestate) = match parent {
            Some(p) => {
                let mut states = headers.get_all("tracestate").iter();
                let state = match (states.next(), states.next()) {
                    (Some(v), None) if !v.is_empty() && v.len() <= MAX_TRACESTATE => {
                        Some(v.clone())
                    }
                    _ => None,
                };
                (p.trace_id, Some(p.span_id), p.sampled(), state)
            }
            // A new trace is sampled when its spans are recorded (exported).
            None => (random_id(), None, exporter.is_some(), None),
        };
        Self {
            trace_id,
            span_id: new_span_id(),
            parent: parent_span,
            sampled,
            tracestate,
            start_unix_nanos: unix_nanos(SystemTime::now()),
            exporter: exporter.filter(|_| sampled).cloned(),
        }
    }

    /// Spans of this request will be exported.
    pub fn exported(&self) -> bool {
        self.exporter.is_some()
    }

    /// A new span for an upstream attempt: its id and the headers the call carries.
    pub fn attempt(&self) -> (SpanId, Outgoing) {
        let id = new_span_id();
        let out = self.outgoing(&id);
        (id, out)
    }

    /// The headers of an upstream call made under span `span_id`.
    pub fn outgoing(&self, span_id: &SpanId) -> Outgoing {
        let tp = format_traceparent(&self.trace_id, span_id, self.sampled);
        Outgoing {
            traceparent: HeaderValue::try_from(tp).ok(),
            tracestate: self.tracestate.clone(),
        }
    }

    /// Writes the request's spans from its finished record and queues them for export;
    /// nothing unless they are exported. Called once, at the request's single exit.
    pub fn finish(&mut self, record: &ExecutionRecord) {
        let Some(exporter) = self.exporter.take() else {
            return;
        };
        let mut buf = Vec::with_capacity(384 + 256 * record.attempts.len());
        encode_spans(self, record, &mut buf);
        exporter.send(Spans {
            bytes: buf,
            count: 1 + record.attempts.len() as u64,
        });
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn ms_nanos(ms: f64) -> u64 {
    // `as` saturates (and maps NaN to 0): a bad duration cannot wrap a timestamp.
    (ms * 1e6) as u64
}

// === OTLP protobuf ===

/// The few protobuf writes OTLP needs (proto3 wire format).
mod pb {
    pub fn varint(buf: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        buf.push(v as u8);
    }

    /// How many bytes `varint` writes for `v`.
    pub fn varint_len(v: u64) -> usize {
        (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
    }

    pub fn key(buf: &mut Vec<u8>, field: u32, wire: u8) {
        varint(buf, (u64::from(field) << 3) | u64::from(wire));
    }

    pub fn bytes(buf: &mut Vec<u8>, field: u32, b: &[u8]) {
        key(buf, field, 2);
        varint(buf, b.len() as u64);
        buf.extend_from_slice(b);
    }

    pub fn string(buf: &mut Vec<u8>, field: u32, s: &str) {
        bytes(buf, field, s.as_bytes());
    }

    /// `uint32`, `uint64`, enums, and `int64` (negative values as ten bytes, as proto3).
    pub fn uint(buf: &mut Vec<u8>, field: u32, v: u64) {
        key(buf, field, 0);
        varint(buf, v);
    }

    pub fn fixed64(buf: &mut Vec<u8>, field: u32, v: u64) {
        key(buf, field, 1);
        buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn double(buf: &mut Vec<u8>, field: u32, v: f64) {
        key(buf, field, 1);
        buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A nested message, written in place; its length goes in front afterwards (for
    /// spans and batches: small messages whose size is known write it first).
    pub fn message(buf: &mut Vec<u8>, field: u32, f: impl FnOnce(&mut Vec<u8>)) {
        key(buf, field, 2);
        let start = buf.len();
        f(buf);
        let mut len = Vec::with_capacity(10);
        varint(&mut len, (buf.len() - start) as u64);
        buf.splice(start..start, len);
    }
}

/// OTLP field numbers (opentelemetry/proto, v1).
mod otlp {
    // ExportTraceServiceRequest
    pub const RESOURCE_SPANS: u32 = 1;
    // ResourceSpans
    pub const RESOURCE: u32 = 1;
    pub const SCOPE_SPANS: u32 = 2;
    // Resource, InstrumentationScope (name 1, version 2)
    pub const RESOURCE_ATTRIBUTES: u32 = 1;
    pub const SCOPE_NAME: u32 = 1;
    pub const SCOPE_VERSION: u32 = 2;
    // ScopeSpans
    pub const SCOPE: u32 = 1;
    pub const SPANS: u32 = 2;
    // Span
    pub const TRACE_ID: u32 = 1;
    pub const SPAN_ID: u32 = 2;
    pub const PARENT_SPAN_ID: u32 = 4;
    pub const NAME: u32 = 5;
    pub const KIND: u32 = 6;
    pub const START: u32 = 7;
    pub const END: u32 = 8;
    pub const ATTRIBUTES: u32 = 9;
    pub const STATUS: u32 = 15;
    // Span.SpanKind
    pub const KIND_SERVER: u64 = 2;
    pub const KIND_CLIENT: u64 = 3;
    // Status (message 2, code 3); Status.StatusCode
    pub const STATUS_MESSAGE: u32 = 2;
    pub const STATUS_CODE: u32 = 3;
    pub const CODE_ERROR: u64 = 2;
    // KeyValue
    pub const KEY: u32 = 1;
    pub const VALUE: u32 = 2;
    // AnyValue
    pub const STRING_VALUE: u32 = 1;
    pub const BOOL_VALUE: u32 = 2;
    pub const INT_VALUE: u32 = 3;
    pub const DOUBLE_VALUE: u32 = 4;
}

/// An attribute value.
enum Val<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i64),
    F64(f64),
}

/// A `KeyValue`, sizes computed up front (every field number here takes one byte).
fn attr(buf: &mut Vec<u8>, field: u32, key: &str, v: Val<'_>) {
    let any_len = match v {
        Val::Str(s) => 1 + pb::varint_len(s.len() as u64) + s.len(),
        Val::Bool(_) => 2,
        Val::Int(i) => 1 + pb::varint_len(i as u64),
        Val::F64(_) => 9,
    };
    let kv_len = 1
        + pb::varint_len(key.len() as u64)
        + key.len()
        + 1
        + pb::varint_len(any_len as u64)
        + any_len;
    pb::key(buf, field, 2);
    pb::varint(buf, kv_len as u64);
    pb::string(buf, otlp::KEY, key);
    pb::key(buf, otlp::VALUE, 2);
    pb::varint(buf, any_len as u64);
    match v {
        Val::Str(s) => pb::string(buf, otlp::STRING_VALUE, s),
        Val::Bool(b) => pb::uint(buf, otlp::BOOL_VALUE, u64::from(b)),
        Val::Int(i) => pb::uint(buf, otlp::INT_VALUE, i as u64),
        Val::F64(f) => pb::double(buf, otlp::DOUBLE_VALUE, f),
    }
}

fn span_attr(buf: &mut Vec<u8>, key: &str, v: Val<'_>) {
    attr(buf, otlp::ATTRIBUTES, key, v);
}

fn error_status(buf: &mut Vec<u8>, message: &str) {
    pb::message(buf, otlp::STATUS, |st| {
        if !message.is_empty() {
            pb::string(st, otlp::STATUS_MESSAGE, message);
        }
        pb::uint(st, otlp::STATUS_CODE, otlp::CODE_ERROR);
    });
}

/// The request span and one child per attempt, each framed as a `ScopeSpans.spans`
/// entry (so batches are these buffers one after the other).
fn encode_spans(t: &RequestTrace, r: &ExecutionRecord, buf: &mut Vec<u8>) {
    let start = t.start_unix_nanos;
    pb::message(buf, otlp::SPANS, |s| {
        pb::bytes(s, otlp::TRACE_ID, &t.trace_id);
        pb::bytes(s, otlp::SPAN_ID, &t.span_id);
        if let Some(p) = &t.parent {
            pb::bytes(s, otlp::PARENT_SPAN_ID, p);
        }
        pb::string(s, otlp::NAME, r.endpoint);
        pb::uint(s, otlp::KIND, otlp::KIND_SERVER);
        pb::fixed64(s, otlp::START, start);
        pb::fixed64(s, otlp::END, start.saturating_add(ms_nanos(r.latency_ms)));
        span_attr(s, "asc.request_id", Val::Str(&r.request_id));
        if let Some(tenant) = &r.tenant {
            span_attr(s, "asc.tenant", Val::Str(tenant));
        }
        span_attr(s, "asc.surface", Val::Str(r.surface));
        if let Some(m) = &r.model_requested {
            span_attr(s, "asc.model", Val::Str(m));
        }
        span_attr(s, "asc.stream", Val::Bool(r.stream));
        span_attr(s, "asc.status", Val::Str(r.status));
        span_attr(
            s,
            "http.response.status_code",
            Val::Int(i64::from(r.http_status)),
        );
        if let Some(code) = &r.error_code {
            span_attr(s, "error.type", Val::Str(code));
        }
        span_attr(s, "asc.cache", Val::Str(r.cache));
        if let Some(chosen) = &r.decision.chosen {
            span_attr(s, "asc.target", Val::Str(chosen));
        }
        span_attr(s, "asc.attempts", Val::Int(r.attempts.len() as i64));
        if let (Some(e), Some(a)) = (&r.decision.experiment, &r.decision.arm) {
            span_attr(s, "asc.experiment", Val::Str(e));
            span_attr(s, "asc.arm", Val::Str(a));
        }
        let tokens = |n: u64| Val::Int(i64::try_from(n).unwrap_or(i64::MAX));
        span_attr(s, "gen_ai.usage.input_tokens", tokens(r.prompt_tokens));
        span_attr(s, "gen_ai.usage.output_tokens", tokens(r.completion_tokens));
        span_attr(s, "asc.cost_usd", Val::F64(r.cost_usd));
        if let Some(ttft) = r.ttft_ms {
            span_attr(s, "asc.ttft_ms", Val::F64(ttft));
        }
        if r.http_status >= 500 {
            error_status(s, r.error_code.as_deref().unwrap_or_default());
        }
    });
    for (i, a) in r.attempts.iter().enumerate() {
        let a_start = start.saturating_add(u64::try_from(a.offset.as_nanos()).unwrap_or(0));
        pb::message(buf, otlp::SPANS, |s| {
            pb::bytes(s, otlp::TRACE_ID, &t.trace_id);
            pb::bytes(s, otlp::SPAN_ID, &a.span_id);
            pb::bytes(s, otlp::PARENT_SPAN_ID, &t.span_id);
            // GenAI convention: "{operation} {model}".
            pb::message(s, otlp::NAME, |n| {
                n.extend_from_slice(r.endpoint.as_bytes());
                n.push(b' ');
                n.extend_from_slice(a.model.as_bytes());
            });
            pb::uint(s, otlp::KIND, otlp::KIND_CLIENT);
            pb::fixed64(s, otlp::START, a_start);
            pb::fixed64(s, otlp::END, a_start.saturating_add(ms_nanos(a.latency_ms)));
            span_attr(s, "asc.provider", Val::Str(&a.provider));
            span_attr(s, "asc.model", Val::Str(&a.model));
            span_attr(s, "asc.region", Val::Str(&a.region));
            span_attr(s, "asc.attempt", Val::Int(i as i64 + 1));
            if let Some(status) = a.status {
                span_attr(s, "http.response.status_code", Val::Int(i64::from(status)));
            }
            if let Some(e) = &a.error {
                span_attr(s, "error.type", Val::Str(e));
            }
            span_attr(s, "asc.latency_ms", Val::F64(a.latency_ms));
            if let Some(ttft) = a.ttft_ms {
                span_attr(s, "asc.ttft_ms", Val::F64(ttft));
            }
            if let Some(e) = &a.error {
                error_status(s, e);
            }
        });
    }
}

/// `Resource` (service name and version) and `InstrumentationScope`, encoded once.
fn resource_and_scope(service_name: &str) -> (Vec<u8>, Vec<u8>) {
    resource_and_scope_of(service_name, env!("CARGO_PKG_VERSION"))
}

fn resource_and_scope_of(service_name: &str, version: &str) -> (Vec<u8>, Vec<u8>) {
    let mut resource = Vec::new();
    attr(
        &mut resource,
        otlp::RESOURCE_ATTRIBUTES,
        "service.name",
        Val::Str(service_name),
    );
    attr(
        &mut resource,
        otlp::RESOURCE_ATTRIBUTES,
        "service.version",
        Val::Str(version),
    );
    let mut scope = Vec::new();
    pb::string(&mut scope, otlp::SCOPE_NAME, "asc");
    pb::string(&mut scope, otlp::SCOPE_VERSION, version);
    (resource, scope)
}

/// An `ExportTraceServiceRequest` around already framed spans.
fn export_request(resource: &[u8], scope: &[u8], spans: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(spans.len() + resource.len() + scope.len() + 32);
    pb::message(&mut buf, otlp::RESOURCE_SPANS, |rs| {
        pb::bytes(rs, otlp::RESOURCE, resource);
        pb::message(rs, otlp::SCOPE_SPANS, |ss| {
            pb::bytes(ss, otlp::SCOPE, scope);
            ss.extend_from_slice(spans);
        });
    });
    buf
}

// === the exporter ===

/// One request's encoded spans.
#[derive(Debug)]
struct Spans {
    bytes: Vec<u8>,
    count: u64,
}

/// Where sampled requests' spans go: a channel to the export task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Exporter {
    tx: mpsc::Sender<Spans>,
    /// Spans dropped because the queue was full (reported by the task).
    dropped: Arc<AtomicU64>,
}

/// The URL spans are POSTed to: the endpoint itself when it names `/v1/traces`,
/// otherwise the endpoint as a base URL with `/v1/traces` added (as
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is read).
pub fn traces_url(endpoint: &str) -> String {
    let e = endpoint.trim();
    if e.ends_with("/v1/traces") {
        e.to_owned()
    } else {
        format!("{}/v1/traces", e.trim_end_matches('/'))
    }
}

impl Exporter {
    /// Starts the export task for `endpoint`; it flushes and stops at `shutdown`, or
    /// when every handle is gone (the config generation and its last request).
    pub fn start(
        endpoint: &str,
        service_name: &str,
        http: reqwest::Client,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let (resource, scope) = resource_and_scope(service_name);
        let task = Task {
            url: traces_url(endpoint),
            http,
            resource,
            scope,
            dropped: dropped.clone(),
            spans: Vec::new(),
            requests: 0,
            count: 0,
            lost: 0,
            last_warning: None,
        };
        tasks.spawn(task.run(rx, shutdown));
        Self { tx, dropped }
    }

    fn send(&self, spans: Spans) {
        if let Err(e) = self.tx.try_send(spans) {
            let n = match e {
                mpsc::error::TrySendError::Full(s) | mpsc::error::TrySendError::Closed(s) => {
                    s.count
                }
            };
            self.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// The export task's state: the batch being gathered and what was lost.
struct Task {
    url: String,
    http: reqwest::Client,
    resource: Vec<u8>,
    scope: Vec<u8>,
    dropped: Arc<AtomicU64>,
    /// Framed spans of `requests` requests, `count` spans.
    spans: Vec<u8>,
    requests: usize,
    count: u64,
    /// Spans lost (queue full or export failed) since the last warning.
    lost: u64,
    last_warning: Option<Instant>,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Spans>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(s) => {
                        self.push(s);
                        if self.requests >= BATCH {
                            self.export().await;
                        }
                    }
                    None => {
                        self.export().await;
                        return;
                    }
                },
                _ = tick.tick() => self.export().await,
                () = shutdown.cancelled() => {
                    while let Ok(s) = rx.try_recv() {
                        self.push(s);
                        if self.requests >= BATCH {
                            self.export().await;
                        }
                    }
                    self.export().await;
                    return;
                }
            }
        }
    }

    fn push(&mut self, s: Spans) {
        self.spans.extend_from_slice(&s.bytes);
        self.requests += 1;
        self.count += s.count;
    }

    /// Sends the batch (if any); a failed export is dropped, counted and logged.
    async fn export(&mut self) {
        let queue_full = self.dropped.swap(0, Ordering::Relaxed);
        self.lost += queue_full;
        if self.requests > 0 {
            let body = export_request(&self.resource, &self.scope, &self.spans);
            let sent = self
                .http
                .post(&self.url)
                .header(header::CONTENT_TYPE, "application/x-protobuf")
                .timeout(EXPORT_TIMEOUT)
                .body(body)
                .send()
                .await;
            let failure = match sent {
                Ok(r) if r.status().is_success() => None,
                Ok(r) => Some(format!("the collector answered {}", r.status().as_u16())),
                Err(e) if e.is_timeout() => Some("timed out".to_owned()),
                Err(e) if e.is_connect() => Some("connection failed".to_owned()),
                Err(_) => Some("transport error".to_owned()),
            };
            if let Some(why) = failure {
                self.lost += self.count;
                self.warn(&why);
            }
            self.spans.clear();
            self.requests = 0;
            self.count = 0;
        }
        if queue_full > 0 {
            self.warn("the export queue was full");
        }
    }

    fn warn(&mut self, why: &str) {
        let now = Instant::now();
        if self
            .last_warning
            .is_some_and(|t| now.duration_since(t) < WARN_EVERY)
        {
            return;
        }
        tracing::warn!(
            reason = why,
            spans_lost = self.lost,
            "OTLP trace export failed"
        );
        self.last_warning = Some(now);
        self.lost = 0;
    }
}

#[cfg(test)]
mod tests;
