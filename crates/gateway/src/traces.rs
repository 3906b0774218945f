//! Traces (contract sections 2 and 7): W3C trace context in, a `traceparent` on every
//! upstream attempt, and OpenTelemetry spans over OTLP/HTTP (protobuf) when
//! `telemetry.otlp_endpoint` is set.
//!
//! A request's spans are not live objects. Everything they say is in the execution
//! record by the end of the request, so at the single exit (`RequestCtx::close`) the
//! record is written out as one request span (named by the endpoint: `chat`,
//! `embeddings`, ...) and one child span per upstream attempt, with explicit start and
//! end times kept on the way (a wall-clock start per request, monotonic offsets and
//! durations). There the few record fields the spans carry are copied into a plain
//! struct and handed to the exporter task through a bounded channel: a full queue drops
//! spans (counted and logged), it never delays a request. The task builds the official
//! OTLP messages from them (`opentelemetry-proto`'s generated types), encodes them with
//! prost, and sends them in batches (every second, or sooner when a batch is full) with
//! the shared HTTP client. Nothing is encoded on the request path.
//!
//! Without an endpoint only propagation runs: ids are drawn and one header is formatted
//! per attempt. No `tracing` layer and no SDK tracer or batch processor: a span per
//! request held open through the pipeline would cost an allocation per field and a lock
//! per event on the hot path, for data the record already holds.
//!
//! Sampling is parent-based: a valid client `traceparent` whose sampled flag is off is
//! propagated (flag off) and nothing is exported; a request without one (or with a
//! malformed one, which is ignored) starts a new trace, sampled when spans are exported.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, header};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::record::{Attempt, ExecutionRecord};

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
        exporter.send(Finished::of(self, record));
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

// === OTLP messages ===

/// A finished request as its spans tell it: the record fields they carry, copied at the
/// request's exit. The export task turns it into OTLP messages; nothing is encoded on
/// the request path.
#[derive(Debug)]
struct Finished {
    trace_id: TraceId,
    span_id: SpanId,
    parent: Option<SpanId>,
    start_unix_nanos: u64,
    latency_ms: f64,
    endpoint: &'static str,
    surface: &'static str,
    status: &'static str,
    cache: &'static str,
    request_id: String,
    tenant: Option<String>,
    model: Option<String>,
    target: Option<String>,
    /// The experiment and the arm, when enrolled.
    experiment: Option<(String, String)>,
    stream: bool,
    http_status: u16,
    error_code: Option<String>,
    prompt_tokens: u64,
    completion_tokens: u64,
    cost_usd: f64,
    ttft_ms: Option<f64>,
    attempts: Vec<Attempt>,
}

impl Finished {
    fn of(t: &RequestTrace, r: &ExecutionRecord) -> Self {
        Self {
            trace_id: t.trace_id,
            span_id: t.span_id,
            parent: t.parent,
            start_unix_nanos: t.start_unix_nanos,
            latency_ms: r.latency_ms,
            endpoint: r.endpoint,
            surface: r.surface,
            status: r.status,
            cache: r.cache,
            request_id: r.request_id.clone(),
            tenant: r.tenant.clone(),
            model: r.model_requested.clone(),
            target: r.decision.chosen.clone(),
            experiment: match (&r.decision.experiment, &r.decision.arm) {
                (Some(e), Some(a)) => Some((e.clone(), a.clone())),
                _ => None,
            },
            stream: r.stream,
            http_status: r.http_status,
            error_code: r.error_code.clone(),
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            cost_usd: r.cost_usd,
            ttft_ms: r.ttft_ms,
            attempts: r.attempts.clone(),
        }
    }

    /// How many spans: the request's and one per attempt.
    fn count(&self) -> u64 {
        1 + self.attempts.len() as u64
    }

    /// The request span, then a child per attempt.
    fn into_spans(self, out: &mut Vec<Span>) {
        let start = self.start_unix_nanos;
        let trace_id = self.trace_id.to_vec();
        let mut attrs = Vec::with_capacity(18);
        attrs.push(kv("asc.request_id", Value::StringValue(self.request_id)));
        if let Some(tenant) = self.tenant {
            attrs.push(kv("asc.tenant", Value::StringValue(tenant)));
        }
        attrs.push(kv("asc.surface", text(self.surface)));
        if let Some(m) = self.model {
            attrs.push(kv("asc.model", Value::StringValue(m)));
        }
        attrs.push(kv("asc.stream", Value::BoolValue(self.stream)));
        attrs.push(kv("asc.status", text(self.status)));
        attrs.push(kv(
            "http.response.status_code",
            Value::IntValue(i64::from(self.http_status)),
        ));
        let status = (self.http_status >= 500)
            .then(|| error_status(self.error_code.clone().unwrap_or_default()));
        if let Some(code) = self.error_code {
            attrs.push(kv("error.type", Value::StringValue(code)));
        }
        attrs.push(kv("asc.cache", text(self.cache)));
        if let Some(chosen) = self.target {
            attrs.push(kv("asc.target", Value::StringValue(chosen)));
        }
        attrs.push(kv(
            "asc.attempts",
            Value::IntValue(self.attempts.len() as i64),
        ));
        if let Some((experiment, arm)) = self.experiment {
            attrs.push(kv("asc.experiment", Value::StringValue(experiment)));
            attrs.push(kv("asc.arm", Value::StringValue(arm)));
        }
        let tokens = |n: u64| Value::IntValue(i64::try_from(n).unwrap_or(i64::MAX));
        attrs.push(kv("gen_ai.usage.input_tokens", tokens(self.prompt_tokens)));
        attrs.push(kv(
            "gen_ai.usage.output_tokens",
            tokens(self.completion_tokens),
        ));
        attrs.push(kv("asc.cost_usd", Value::DoubleValue(self.cost_usd)));
        if let Some(ttft) = self.ttft_ms {
            attrs.push(kv("asc.ttft_ms", Value::DoubleValue(ttft)));
        }
        out.push(Span {
            trace_id: trace_id.clone(),
            span_id: self.span_id.to_vec(),
            parent_span_id: self.parent.map(|p| p.to_vec()).unwrap_or_default(),
            name: self.endpoint.to_owned(),
            kind: SpanKind::Server.into(),
            start_time_unix_nano: start,
            end_time_unix_nano: start.saturating_add(ms_nanos(self.latency_ms)),
            attributes: attrs,
            status,
            ..Span::default()
        });
        for (i, a) in self.attempts.into_iter().enumerate() {
            let a_start = start.saturating_add(u64::try_from(a.offset.as_nanos()).unwrap_or(0));
            // GenAI convention: "{operation} {model}".
            let name = format!("{} {}", self.endpoint, a.model);
            let mut attrs = Vec::with_capacity(8);
            attrs.push(kv("asc.provider", Value::StringValue(a.provider)));
            attrs.push(kv("asc.model", Value::StringValue(a.model)));
            attrs.push(kv("asc.region", Value::StringValue(a.region)));
            attrs.push(kv("asc.attempt", Value::IntValue(i as i64 + 1)));
            if let Some(status) = a.status {
                attrs.push(kv(
                    "http.response.status_code",
                    Value::IntValue(i64::from(status)),
                ));
            }
            let status = a.error.as_ref().map(|e| error_status(e.clone()));
            if let Some(e) = a.error {
                attrs.push(kv("error.type", Value::StringValue(e)));
            }
            attrs.push(kv("asc.latency_ms", Value::DoubleValue(a.latency_ms)));
            if let Some(ttft) = a.ttft_ms {
                attrs.push(kv("asc.ttft_ms", Value::DoubleValue(ttft)));
            }
            out.push(Span {
                trace_id: trace_id.clone(),
                span_id: a.span_id.to_vec(),
                parent_span_id: self.span_id.to_vec(),
                name,
                kind: SpanKind::Client.into(),
                start_time_unix_nano: a_start,
                end_time_unix_nano: a_start.saturating_add(ms_nanos(a.latency_ms)),
                attributes: attrs,
                status,
                ..Span::default()
            });
        }
    }
}

fn text(s: &str) -> Value {
    Value::StringValue(s.to_owned())
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn error_status(message: String) -> Status {
    Status {
        message,
        code: StatusCode::Error.into(),
    }
}

/// The `Resource` (service name and version) and `InstrumentationScope` of every export.
fn resource_and_scope(service_name: &str) -> (Resource, InstrumentationScope) {
    resource_and_scope_of(service_name, env!("CARGO_PKG_VERSION"))
}

fn resource_and_scope_of(service_name: &str, version: &str) -> (Resource, InstrumentationScope) {
    let resource = Resource {
        attributes: vec![
            kv("service.name", text(service_name)),
            kv("service.version", text(version)),
        ],
        ..Resource::default()
    };
    let scope = InstrumentationScope {
        name: "asc".to_owned(),
        version: version.to_owned(),
        ..InstrumentationScope::default()
    };
    (resource, scope)
}

/// One export: the spans under the gateway's resource and scope.
fn export_request(
    resource: Resource,
    scope: InstrumentationScope,
    spans: Vec<Span>,
) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

// === the exporter ===

/// Where sampled requests' spans go: a channel to the export task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Exporter {
    tx: mpsc::Sender<Finished>,
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
            lost: 0,
            last_warning: None,
        };
        tasks.spawn(task.run(rx, shutdown));
        Self { tx, dropped }
    }

    fn send(&self, finished: Finished) {
        if let Err(e) = self.tx.try_send(finished) {
            let n = match e {
                mpsc::error::TrySendError::Full(f) | mpsc::error::TrySendError::Closed(f) => {
                    f.count()
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
    resource: Resource,
    scope: InstrumentationScope,
    dropped: Arc<AtomicU64>,
    /// The spans of `requests` requests.
    spans: Vec<Span>,
    requests: usize,
    /// Spans lost (queue full or export failed) since the last warning.
    lost: u64,
    last_warning: Option<Instant>,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Finished>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(f) => {
                        self.push(f);
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
                    while let Ok(f) = rx.try_recv() {
                        self.push(f);
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

    fn push(&mut self, f: Finished) {
        f.into_spans(&mut self.spans);
        self.requests += 1;
    }

    /// Sends the batch (if any); a failed export is dropped, counted and logged.
    async fn export(&mut self) {
        let queue_full = self.dropped.swap(0, Ordering::Relaxed);
        self.lost += queue_full;
        if self.requests > 0 {
            let count = self.spans.len() as u64;
            let spans = std::mem::take(&mut self.spans);
            let body =
                export_request(self.resource.clone(), self.scope.clone(), spans).encode_to_vec();
            self.requests = 0;
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
                self.lost += count;
                self.warn(&why);
            }
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
