//! The execution record (contract section 5): one per request, whatever its outcome.
//!
//! The pipeline fills one [`ExecutionRecord`] as the request moves through its phases
//! and hands it to [`Recorder::finish`] exactly once, from the response path or, when
//! the client goes away mid-stream, from the stream's drop guard. `finish` writes the
//! one structured log line per request and queues the record (a channel send, no lock)
//! for the background writer, which aggregates usage and flushes it, with the budget
//! ledgers, to the store in batches.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::Auditor;
use crate::limits::Limits;
use crate::store::{Store, UsageCounts, UsageKey};
use crate::telemetry::Metrics;

// The record's structs declare their fields in alphabetical order, so their derived
// serialisation is already the canonical JSON (keys sorted) that the audit chain hashes:
// the writer serialises each record once, straight to text, without a `Value` in between.
// `serialisation_is_canonical` below holds this.

#[derive(Debug, Clone, Serialize)]
pub struct ExecutionRecord {
    pub attempts: Vec<Attempt>,
    /// `hit`, `miss` or `bypass`.
    pub cache: &'static str,
    /// Of `prompt_tokens`, written to (Anthropic) and read from (Anthropic, OpenAI) the
    /// provider's prompt cache, when the provider said (they are priced apart: see
    /// [`crate::prices::Price::cost_micros_cached`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_creation_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_read_tokens: Option<u64>,
    pub completion_tokens: u64,
    /// Prompt and completion text, PII redacted: only when the tenant's `log_content`
    /// is true (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// The same cost in integer micro-dollars (what budgets count).
    #[serde(skip)]
    pub cost_micros: u64,
    pub cost_usd: f64,
    pub decision: Decision,
    /// `chat` or `embeddings`.
    pub endpoint: &'static str,
    pub error_code: Option<String>,
    pub http_status: u16,
    pub key_id: Option<String>,
    pub latency_ms: f64,
    pub model_requested: Option<String>,
    pub policy: Vec<PolicyCheck>,
    pub prompt_tokens: u64,
    pub request_id: String,
    /// `success`, `error`, `denied` or `client_closed`.
    pub status: &'static str,
    pub stream: bool,
    /// `openai` or `anthropic`: the inbound API.
    pub surface: &'static str,
    pub tags: BTreeMap<String, String>,
    pub tenant: Option<String>,
    /// RFC 3339, UTC.
    pub ts: String,
    pub ttft_ms: Option<f64>,
    /// True when the upstream reported no usage and the counts were estimated.
    pub usage_estimated: bool,
    pub user: Option<String>,
}

/// `log_content: true`: what was asked and answered, after PII redaction.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Content {
    pub completion: Option<String>,
    pub prompt: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Decision {
    pub arm: Option<String>,
    /// The probability the request's unit had of being assigned the candidate.
    pub assignment_probability: Option<f64>,
    /// `provider/model` of every target considered, in try order.
    pub candidates: Vec<String>,
    pub chosen: Option<String>,
    pub excluded: Vec<Excluded>,
    pub experiment: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Excluded {
    pub reason: String,
    pub target: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub error: Option<String>,
    pub latency_ms: f64,
    pub model: String,
    /// When the attempt started, counted from the request's start (traces).
    #[serde(skip)]
    pub offset: Duration,
    pub provider: String,
    pub region: String,
    /// The attempt's span (traces; not part of the record).
    #[serde(skip)]
    pub span_id: crate::traces::SpanId,
    pub status: Option<u16>,
    pub ttft_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyCheck {
    pub check: String,
    pub detail: Option<String>,
    pub outcome: String,
}

impl ExecutionRecord {
    /// Takes the usage a provider reported: all prompt tokens, output tokens, and what
    /// of the prompt went through a prompt cache.
    pub fn set_usage(&mut self, u: &asc_wire::Usage) {
        self.prompt_tokens = u.input_tokens;
        self.completion_tokens = u.output_tokens;
        self.cache_creation_tokens = u.cache_creation_input_tokens;
        self.cache_read_tokens = u.cache_read_input_tokens;
    }

    /// What of its prompt went through a prompt cache, for pricing; `hour`: the request
    /// asked for the one-hour cache (see [`crate::policy::prompt_cache`]).
    pub fn cached(&self, hour: bool) -> crate::prices::Cached {
        crate::prices::Cached {
            written: self.cache_creation_tokens.unwrap_or(0),
            read: self.cache_read_tokens.unwrap_or(0),
            hour,
        }
    }

    pub fn new(request_id: String, surface: &'static str, endpoint: &'static str) -> Self {
        Self {
            request_id,
            ts: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            tenant: None,
            key_id: None,
            user: None,
            tags: BTreeMap::new(),
            surface,
            endpoint,
            model_requested: None,
            stream: false,
            decision: Decision::default(),
            attempts: Vec::new(),
            cache: "bypass",
            policy: Vec::new(),
            prompt_tokens: 0,
            completion_tokens: 0,
            content: None,
            usage_estimated: false,
            cache_creation_tokens: None,
            cache_read_tokens: None,
            cost_usd: 0.0,
            cost_micros: 0,
            ttft_ms: None,
            latency_ms: 0.0,
            status: "success",
            http_status: 200,
            error_code: None,
        }
    }
}

/// `audit.durability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// A response completes only after its record is committed (the default).
    Strict,
    /// Records are committed in batches, within `audit.flush_ms` (default 100); when the
    /// writer falls [`BACKLOG`] records behind, responses wait for their commit as with
    /// `strict` until it catches up (memory stays bounded, and so does the delay).
    Batched,
    /// Records are logged and counted (usage, metrics, experiments) but not stored, and
    /// not in the audit trail: for benchmarks only.
    None,
}

impl Durability {
    pub fn of(setting: Option<&str>) -> Self {
        match setting {
            Some("batched") => Self::Batched,
            Some("none") => Self::None,
            _ => Self::Strict,
        }
    }
}

/// Records queued for the writer past which a `batched` response waits for its commit.
pub const BACKLOG: usize = 4096;

/// Records a writer whose store fails keeps for its next tries (about 25 MB): past
/// this, `batched` requests are refused too, and the oldest records beyond it would be
/// dropped (counted in `asc_record_write_failures_total{outcome="dropped"}`).
pub const HELD_CAP: usize = 16_384;

/// The longest wait between two tries of a failed write.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The longest a response waits for its record's commit (`strict`, or `batched` behind
/// its backlog). Past it the writer, which holds the record, rewrites it as what the
/// client then gets (503 `audit_unavailable`, or that error event ending a stream)
/// before it is ever stored, and lets the response go: the record never says `success`
/// for an answer that was not given.
pub const COMMIT_WAIT: Duration = Duration::from_secs(10);

/// The audit event of a response refused (its commit did not come in time) whose
/// record had been committed, as served, by a write reported failed.
pub const REFUSAL_EVENT: &str = "response_refused";

/// Where finished records go.
#[derive(Clone, Debug)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<Msg>,
    /// Records sent and not yet taken by the writer.
    queued: Arc<AtomicUsize>,
    held: Arc<Held>,
}

/// What the writer tells the request path about its store.
#[derive(Debug, Default)]
struct Held {
    /// The last write of records failed (they are held for the next try).
    failing: AtomicBool,
    /// Records held after failed writes.
    records: AtomicUsize,
}

/// A response waiting for its record's commit: told once it is committed; dropped
/// (the response is refused) once `deadline` passes first or the record is dropped.
#[derive(Debug)]
struct Wait {
    ack: oneshot::Sender<()>,
    deadline: tokio::time::Instant,
}

impl Wait {
    fn new() -> (Self, oneshot::Receiver<()>) {
        let (ack, done) = oneshot::channel();
        let deadline = tokio::time::Instant::now() + COMMIT_WAIT;
        (Self { ack, deadline }, done)
    }
}

/// What the writer receives.
#[derive(Debug)]
enum Msg {
    /// An event for the admin event log (budget alerts, ...).
    Event {
        kind: &'static str,
        tenant: Option<String>,
        payload: serde_json::Value,
    },
    /// A record, with a waiter to tell once it is committed (`strict` durability).
    Record(Box<ExecutionRecord>, Option<Wait>),
    /// A record counted but not stored (`durability: none`).
    Unstored(Box<ExecutionRecord>),
}

impl Recorder {
    /// Starts the background writer: usage aggregated per (tenant, day, model,
    /// provider, tags) and written with the budget ledgers every `every`, and at
    /// shutdown.
    #[expect(
        clippy::too_many_arguments,
        reason = "the writer's sinks and timings, each used once, at start"
    )]
    pub fn start(
        store: Store,
        limits: Arc<Limits>,
        metrics: Arc<Metrics>,
        audit: Arc<Auditor>,
        notify: mpsc::UnboundedSender<crate::notify::Notice>,
        checkpoint_every: Duration,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
        every: Duration,
    ) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
        let queued = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(Held::default());
        let (taken, writer_held) = (queued.clone(), held.clone());
        tasks.spawn(async move {
            let sinks = Sinks {
                store,
                audit,
                notify,
                metrics,
                queued: taken,
                held: writer_held,
            };
            let mut batch = Batch::default();
            let mut tick = tokio::time::interval(every);
            let mut checkpoint_tick = tokio::time::interval(checkpoint_every);
            checkpoint_tick.tick().await;
            loop {
                // The first waiting response's deadline, when its record is still held
                // (waiters are in the order they came, so the first is the earliest).
                let due = batch.waiters.first().map(|w| w.wait.deadline);
                let (stop, flush) = tokio::select! {
                    r = rx.recv() => match r {
                        Some(msg) => {
                            let durable = sinks.absorb(msg, &mut batch).await;
                            if durable {
                                // Group commit: everything already queued joins this
                                // transaction.
                                while let Ok(msg) = rx.try_recv() {
                                    sinks.absorb(msg, &mut batch).await;
                                }
                            }
                            (false, durable || batch.rows.len() >= 256)
                        }
                        None => (true, true),
                    },
                    _ = tick.tick() => (false, true),
                    () = async {
                        match due {
                            Some(at) => tokio::time::sleep_until(at).await,
                            None => std::future::pending().await,
                        }
                    } => (false, true),
                    _ = checkpoint_tick.tick() => {
                        if let Err(e) = sinks.audit.checkpoint().await {
                            tracing::error!(error = %e, "audit checkpoint failed");
                        }
                        (false, false)
                    }
                    () = shutdown.cancelled() => (true, true),
                };
                if stop {
                    while let Ok(msg) = rx.try_recv() {
                        sinks.absorb(msg, &mut batch).await;
                    }
                    // A last try now, whatever the backoff says.
                    if let Some(r) = &mut batch.retry {
                        r.at = tokio::time::Instant::now();
                    }
                }
                if flush {
                    sinks.flush(&mut batch, &limits).await;
                }
                if stop {
                    if !batch.rows.is_empty() {
                        // The store failed to the end: these are lost (their waiting
                        // responses learn it as their waiters drop with the batch).
                        tracing::error!(records = batch.rows.len(),
                            "records could not be written before shutdown: the store failed to the end");
                        sinks.metrics.record_write_failure("dropped", batch.rows.len() as u64);
                    }
                    // At shutdown the chain's head is signed, so nothing can be cut off
                    // unnoticed.
                    if let Err(e) = sinks.audit.checkpoint().await {
                        tracing::error!(error = %e, "final audit checkpoint failed");
                    }
                    return;
                }
            }
        });
        Self { tx, queued, held }
    }

    /// Whether a new request is refused because its record could not be kept: with
    /// `strict` durability while the store fails (a response completes only once its
    /// record is committed, so none is served), with `batched` once [`HELD_CAP`]
    /// records wait for the store. Never with `none`.
    pub fn refusing(&self, durability: Durability) -> bool {
        let failing = self.held.failing.load(Ordering::Relaxed);
        match durability {
            Durability::Strict => failing,
            Durability::Batched => failing && self.held.records.load(Ordering::Relaxed) >= HELD_CAP,
            Durability::None => false,
        }
    }

    /// Logs the record's line and queues it for the writer (`batched`). While the
    /// writer is [`BACKLOG`] records behind, returns a receiver that resolves at the
    /// record's commit, for the response to wait on: backpressure instead of a queue
    /// that grows with the load.
    pub fn finish(&self, record: ExecutionRecord) -> Option<oneshot::Receiver<()>> {
        log(&record);
        if self.queued.fetch_add(1, Ordering::Relaxed) < BACKLOG {
            let _ = self.tx.send(Msg::Record(Box::new(record), None));
            return None;
        }
        let (wait, done) = Wait::new();
        let _ = self.tx.send(Msg::Record(Box::new(record), Some(wait)));
        Some(done)
    }

    /// Logs and queues the record; the receiver resolves once it is committed (the
    /// `strict` durability of the contract: a response completes only after that).
    pub fn finish_durable(&self, record: ExecutionRecord) -> oneshot::Receiver<()> {
        log(&record);
        self.queued.fetch_add(1, Ordering::Relaxed);
        let (wait, done) = Wait::new();
        let _ = self.tx.send(Msg::Record(Box::new(record), Some(wait)));
        done
    }

    /// Logs the record and counts it (usage, metrics) without storing it.
    pub fn finish_unstored(&self, record: ExecutionRecord) {
        log(&record);
        self.queued.fetch_add(1, Ordering::Relaxed);
        let _ = self.tx.send(Msg::Unstored(Box::new(record)));
    }

    /// Queues an admin event (written by the writer, off the request path).
    pub fn event(&self, kind: &'static str, tenant: Option<&str>, payload: serde_json::Value) {
        let _ = self.tx.send(Msg::Event {
            kind,
            tenant: tenant.map(str::to_owned),
            payload,
        });
    }

    /// A recorder whose records go nowhere but the log (tools and tests).
    pub fn detached() -> Self {
        let (tx, _rx) = mpsc::unbounded_channel();
        Self {
            tx,
            queued: Arc::default(),
            held: Arc::default(),
        }
    }
}

/// Where the writer puts things.
struct Sinks {
    store: Store,
    audit: Arc<Auditor>,
    notify: mpsc::UnboundedSender<crate::notify::Notice>,
    metrics: Arc<Metrics>,
    /// The recorders' count of records not yet taken.
    queued: Arc<AtomicUsize>,
    held: Arc<Held>,
}

/// What the writer holds until its next flush.
#[derive(Default)]
struct Batch {
    usage: HashMap<UsageKey, UsageCounts>,
    /// Store rows: id, ts, tenant, status, the record's JSON (serialised once, for the
    /// records table and the audit chain alike).
    rows: Vec<crate::store::RecordRow>,
    /// Responses waiting for a row's commit, in the order of `rows`: a row dropped
    /// (past [`HELD_CAP`], or at shutdown) drops its waiter, whose response then knows
    /// its record was not stored.
    waiters: Vec<Waiter>,
    /// After a failed write: when to try again, the wait after that, and since when
    /// writes fail (and when that was last logged).
    retry: Option<Retry>,
    /// Held rows rewritten as refusals (their responses stopped waiting): id, tenant,
    /// and what the client got. Should the write that failed have been committed after
    /// all, the stored record is the one first written; an audit event then says what
    /// the client got.
    refusals: Vec<(String, Option<String>, serde_json::Value)>,
}

/// A row's waiting response, with the row's record, which the response's outcome is
/// not final without: it is counted (metrics) once committed, or rewritten as a
/// refusal when the wait ends first.
struct Waiter {
    /// The row's index in [`Batch::rows`].
    row: usize,
    wait: Wait,
    record: Box<ExecutionRecord>,
}

struct Retry {
    at: tokio::time::Instant,
    backoff: Duration,
    since: tokio::time::Instant,
    logged: tokio::time::Instant,
}

impl Sinks {
    /// Takes one message into the batch (events are written at once); true if it was a
    /// record someone waits on.
    async fn absorb(&self, msg: Msg, batch: &mut Batch) -> bool {
        match msg {
            Msg::Record(rec, wait) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                aggregate(&mut batch.usage, &rec);
                batch.rows.push((
                    rec.request_id.clone(),
                    rec.ts.clone(),
                    rec.tenant.clone(),
                    rec.status.to_owned(),
                    text_of(&rec),
                ));
                match wait {
                    Some(wait) => {
                        let row = batch.rows.len() - 1;
                        batch.waiters.push(Waiter {
                            row,
                            wait,
                            record: rec,
                        });
                        true
                    }
                    None => {
                        self.metrics.observe(&rec);
                        false
                    }
                }
            }
            Msg::Unstored(rec) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                self.metrics.observe(&rec);
                aggregate(&mut batch.usage, &rec);
                false
            }
            Msg::Event {
                kind,
                tenant,
                payload,
            } => {
                self.event(kind, tenant, payload).await;
                false
            }
        }
    }

    async fn event(&self, kind: &'static str, tenant: Option<String>, payload: serde_json::Value) {
        if crate::notify::EVENTS.contains(&kind) {
            let _ = self.notify.send(crate::notify::Notice {
                kind,
                tenant: tenant.clone(),
                payload: payload.clone(),
            });
        }
        if let Err(e) = self
            .store
            .add_event(kind, "gateway", tenant.as_deref(), &payload)
            .await
        {
            tracing::error!(error = %e, "writing an event failed");
        }
        let ts = crate::store::timestamp(SystemTime::now());
        let item = (ts, kind.to_owned(), "gateway".to_owned(), tenant, payload);
        if let Err(e) = self.audit.append(vec![item]).await {
            tracing::error!(error = %e, "appending an event to the audit chain failed");
        }
    }

    /// Writes the batch: records in one transaction (group commit), then into the audit
    /// chain, then wakes the responses waiting on them; usage and spend.
    ///
    /// A failed write keeps its records (and the responses waiting on them) for the
    /// next try, after 100 ms, then twice as long each time up to 5 s; meanwhile
    /// [`Recorder::refusing`] tells the request path. Nothing is dropped below
    /// [`HELD_CAP`] records.
    async fn flush(&self, batch: &mut Batch, limits: &Limits) {
        let now = tokio::time::Instant::now();
        self.expire(batch, now);
        let due = batch.retry.as_ref().is_none_or(|r| now >= r.at);
        if !batch.rows.is_empty() && due {
            match self.audit.append_records(&batch.rows).await {
                Ok(stored) => {
                    if let Some(r) = batch.retry.take() {
                        tracing::warn!(
                            records = batch.rows.len(),
                            failing_s = r.since.elapsed().as_secs(),
                            "records written again: the store answers"
                        );
                        self.held.records.store(0, Ordering::Relaxed);
                        self.held.failing.store(false, Ordering::Relaxed);
                        self.metrics.records_pending(0);
                    }
                    batch.rows.clear();
                    for (id, tenant, given) in std::mem::take(&mut batch.refusals) {
                        if stored.get(&id).is_some_and(|s| s == "success") {
                            // Committed as first written, before its response stopped
                            // waiting: the chain says, after it, what the client got.
                            tracing::warn!(request_id = %id,
                                "a refused response's record had been committed as first written; an audit event records the refusal");
                            self.event(REFUSAL_EVENT, tenant, given).await;
                        }
                    }
                    let written = tokio::time::Instant::now();
                    for w in batch.waiters.drain(..) {
                        self.metrics.observe(&w.record);
                        let deadline = w.wait.deadline;
                        if w.wait.ack.send(()).is_err() && written >= deadline {
                            // A write that hung past the deadline held the writer, and
                            // the response stopped waiting (its client got 503): this
                            // record says what the gateway had ready instead. (Before the
                            // deadline, a dropped response is a client that went away.)
                            tracing::warn!(request_id = %w.record.request_id,
                                "a record was committed after its response had stopped waiting");
                        }
                    }
                }
                Err(e) => self.failed(batch, &e),
            }
        }
        if !batch.usage.is_empty() {
            let rows: Vec<_> = batch.usage.drain().collect();
            if let Err(e) = self.store.add_usage(&rows).await {
                tracing::error!(error = %e, "writing usage failed");
            }
        }
        if let Err(e) = limits.flush().await {
            tracing::error!(error = %e, "writing budget spend failed");
        }
    }

    /// The rows whose responses waited [`COMMIT_WAIT`] without a commit: each is
    /// rewritten as the refusal its client gets now ([`refused`]), before it is stored,
    /// and its response is let go (its waiter dropped).
    fn expire(&self, batch: &mut Batch, now: tokio::time::Instant) {
        let (rows, refusals) = (&mut batch.rows, &mut batch.refusals);
        batch.waiters.retain_mut(|w| {
            if w.wait.deadline > now {
                return true;
            }
            if refused(&mut w.record) {
                let row = &mut rows[w.row];
                row.3 = w.record.status.to_owned();
                row.4 = text_of(&w.record);
                let r = &w.record;
                refusals.push((
                    r.request_id.clone(),
                    r.tenant.clone(),
                    serde_json::json!({
                        "request_id": r.request_id,
                        "recorded_status": "success",
                        "status": r.status,
                        "http_status": r.http_status,
                        "error_code": r.error_code,
                        "stream": r.stream,
                    }),
                ));
            }
            tracing::warn!(request_id = %w.record.request_id, status = w.record.status,
                "a response stopped waiting: its record was not committed in time (the record says what the client got)");
            self.metrics.observe(&w.record);
            false
        });
    }

    /// A write of `batch.rows` failed: they stay for the next try.
    fn failed(&self, batch: &mut Batch, e: &crate::store::StoreError) {
        let now = tokio::time::Instant::now();
        let n = batch.rows.len();
        self.metrics.record_write_failure("kept", n as u64);
        let (dropped, refusals) = trim(batch, HELD_CAP);
        for mut w in refusals {
            // Their responses are refused as their waiters drop.
            let _ = refused(&mut w.record);
            self.metrics.observe(&w.record);
        }
        if dropped > 0 {
            self.metrics.record_write_failure("dropped", dropped as u64);
            tracing::error!(
                dropped,
                "records dropped: the store has failed for too long"
            );
        }
        self.held.records.store(batch.rows.len(), Ordering::Relaxed);
        self.held.failing.store(true, Ordering::Relaxed);
        self.metrics.records_pending(batch.rows.len());
        match &mut batch.retry {
            None => {
                tracing::error!(error = %e, records = n,
                    "writing records and their audit entries failed; they are kept and retried, and strict requests are refused until the store answers");
                batch.retry = Some(Retry {
                    at: now + Duration::from_millis(100),
                    backoff: Duration::from_millis(200),
                    since: now,
                    logged: now,
                });
            }
            Some(r) => {
                r.at = now + r.backoff;
                r.backoff = (r.backoff * 2).min(RETRY_MAX);
                if now.duration_since(r.logged) >= Duration::from_secs(10) {
                    r.logged = now;
                    tracing::error!(error = %e, records = n,
                        failing_s = r.since.elapsed().as_secs(),
                        "writing records still fails; they are kept and retried");
                }
            }
        }
    }
}

/// Drops the oldest rows past `cap` (a store down for long must not take the memory
/// with it). Returns how many rows went, and the waiters of those rows: once dropped,
/// their responses learn that their records were not stored.
fn trim(batch: &mut Batch, cap: usize) -> (usize, Vec<Waiter>) {
    let dropped = batch.rows.len().saturating_sub(cap);
    if dropped == 0 {
        return (0, Vec::new());
    }
    batch.rows.drain(..dropped);
    let gone = batch.waiters.partition_point(|w| w.row < dropped);
    let gone = batch.waiters.drain(..gone).collect();
    for w in &mut batch.waiters {
        w.row -= dropped;
    }
    (dropped, gone)
}

/// The record's JSON, as stored and hashed.
fn text_of(rec: &ExecutionRecord) -> String {
    // Sized for a typical record, so it is written without regrowing.
    let mut text = Vec::with_capacity(1536);
    match serde_json::to_writer(&mut text, rec) {
        Ok(()) => String::from_utf8(text).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// `rec` as its client gets it when its commit does not come in time: an answer
/// becomes 503 `audit_unavailable`; a stream (already 200) ends with that error event.
/// An error or a denial is given as it is, committed or not, and stays as recorded.
/// True if it was rewritten.
fn refused(rec: &mut ExecutionRecord) -> bool {
    if rec.status != "success" {
        return false;
    }
    rec.status = "error";
    rec.error_code = Some(crate::error::Error::AuditUnavailable.code().to_owned());
    if !rec.stream {
        rec.http_status = crate::error::Error::AuditUnavailable.status().as_u16();
    }
    true
}

/// Usage counts model requests (chat and embeddings, whatever their outcome, once they
/// named a model); the other endpoints (models, feedback, token counting) and bodies
/// that did not parse use no model and are not usage.
fn aggregate(pending: &mut HashMap<UsageKey, UsageCounts>, r: &ExecutionRecord) {
    if !matches!(r.endpoint, "chat" | "embeddings") || r.model_requested.is_none() {
        return;
    }
    let Some(tenant) = &r.tenant else { return };
    let tags = r
        .tags
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let key = UsageKey {
        tenant: tenant.clone(),
        day: r.ts.get(..10).unwrap_or_default().to_owned(),
        model: r.model_requested.clone().unwrap_or_default(),
        provider: r
            .decision
            .chosen
            .as_deref()
            .and_then(|c| c.split('/').next())
            .unwrap_or_default()
            .to_owned(),
        tags,
    };
    let c = pending.entry(key).or_default();
    c.requests += 1;
    c.prompt_tokens += r.prompt_tokens;
    c.completion_tokens += r.completion_tokens;
    c.cost_micros += r.cost_micros;
}

/// The request's log line.
fn log(record: &ExecutionRecord) {
    tracing::info!(
        target: "asc::request",
        request_id = %record.request_id,
        tenant = record.tenant.as_deref().unwrap_or("-"),
        model = record.model_requested.as_deref().unwrap_or("-"),
        provider = record.decision.chosen.as_deref().unwrap_or("-"),
        stream = record.stream,
        status = record.status,
        http_status = record.http_status,
        error_code = record.error_code.as_deref().unwrap_or("-"),
        attempts = record.attempts.len(),
        prompt_tokens = record.prompt_tokens,
        completion_tokens = record.completion_tokens,
        ttft_ms = record.ttft_ms.unwrap_or(0.0),
        latency_ms = record.latency_ms,
        "request"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Past the cap, the oldest rows go with their waiters (those responses learn that
    /// their records were not stored); the rest keep theirs, at their new places.
    #[test]
    fn trimming_drops_the_oldest_rows_and_only_their_waiters() {
        let mut batch = Batch::default();
        let mut done = Vec::new();
        for i in 0..5 {
            batch.rows.push((
                format!("r{i}"),
                String::new(),
                None,
                "success".into(),
                "{}".into(),
            ));
            if i % 2 == 1 {
                let (wait, rx) = Wait::new();
                batch.waiters.push(Waiter {
                    row: i,
                    wait,
                    record: Box::new(ExecutionRecord::new(format!("r{i}"), "openai", "chat")),
                });
                done.push(rx);
            }
        }
        let (dropped, gone) = trim(&mut batch, 3);
        assert_eq!(dropped, 2);
        let ids: Vec<&str> = gone.iter().map(|w| w.record.request_id.as_str()).collect();
        assert_eq!(ids, ["r1"], "the dropped rows' waiters are handed back");
        drop(gone);
        let ids: Vec<&str> = batch.rows.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(ids, ["r2", "r3", "r4"]);
        assert_eq!(batch.waiters.iter().map(|w| w.row).collect::<Vec<_>>(), [1]);
        let mut done = done.into_iter();
        let mut first = done.next().unwrap();
        assert!(
            matches!(first.try_recv(), Err(oneshot::error::TryRecvError::Closed)),
            "r1's waiter was dropped"
        );
        assert_eq!(trim(&mut batch, 3).0, 0);
        for w in batch.waiters.drain(..) {
            w.wait.ack.send(()).unwrap();
        }
        assert!(
            done.next().unwrap().try_recv().is_ok(),
            "r3's waiter is told"
        );
    }

    /// A double fault: a write committed but reported failed, and the stored head
    /// unreadable, so the writer still holds the records as served; their responses
    /// stop waiting and are refused. Tried again, the write finds the records stored as
    /// served (the chain cannot be rewritten): an audit event after them says what the
    /// client got. A record not stored before is stored as the refusal, with no event.
    #[tokio::test]
    async fn a_refusal_of_a_record_committed_as_served_is_an_audit_event() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let audit = Arc::new(Auditor::open(store.clone(), key).await.unwrap());
        let (notify, _notices) = mpsc::unbounded_channel();
        let metrics = Arc::new(Metrics::new());
        let sinks = Sinks {
            store: store.clone(),
            audit: audit.clone(),
            notify,
            metrics: metrics.clone(),
            queued: Arc::default(),
            held: Arc::default(),
        };
        let limits = Limits::new(store.clone(), None);
        let mut batch = Batch::default();
        let mut answers = Vec::new();
        for id in ["committed", "lost"] {
            let mut rec = ExecutionRecord::new(id.into(), "openai", "chat");
            rec.tenant = Some("acme".into());
            let row = (
                rec.request_id.clone(),
                rec.ts.clone(),
                rec.tenant.clone(),
                rec.status.to_owned(),
                text_of(&rec),
            );
            if id == "committed" {
                // The write whose answer was lost.
                audit
                    .append_records(std::slice::from_ref(&row))
                    .await
                    .unwrap();
            }
            batch.rows.push(row);
            let (mut wait, done) = Wait::new();
            wait.deadline = tokio::time::Instant::now();
            let row = batch.rows.len() - 1;
            batch.waiters.push(Waiter {
                row,
                wait,
                record: Box::new(rec),
            });
            answers.push(done);
        }
        audit.lose_last_answer().await;

        sinks.flush(&mut batch, &limits).await;

        assert!(batch.rows.is_empty() && batch.waiters.is_empty());
        for mut done in answers {
            assert!(
                matches!(done.try_recv(), Err(oneshot::error::TryRecvError::Closed)),
                "each response was refused"
            );
        }
        let status = |id: &'static str| {
            let store = store.clone();
            async move { store.record(id).await.unwrap().unwrap().1["status"].clone() }
        };
        assert_eq!(status("committed").await, "success", "stored as served");
        assert_eq!(status("lost").await, "error", "stored as refused");
        let events = store.events().await.unwrap();
        let refusals: Vec<_> = events.iter().filter(|e| e.kind == REFUSAL_EVENT).collect();
        assert_eq!(refusals.len(), 1, "{events:?}");
        let e = &refusals[0];
        assert_eq!(e.tenant.as_deref(), Some("acme"));
        assert_eq!(e.payload["request_id"], "committed");
        assert_eq!(e.payload["recorded_status"], "success");
        assert_eq!(e.payload["http_status"], 503);
        assert_eq!(e.payload["error_code"], "audit_unavailable");
        let report = crate::audit::verify_store(&store).await.unwrap();
        assert!(report.ok, "{report:?}");
        let entries = store.audit_entries(None, None).await.unwrap();
        let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["request", "request", REFUSAL_EVENT]);
        assert!(batch.refusals.is_empty());
    }

    /// A served answer whose commit does not come in time is recorded as the refusal
    /// its client gets; a stream keeps its 200 (the error event ends it); an error or a
    /// denial, given as it was, stays.
    #[test]
    fn a_refusal_rewrites_only_what_was_served() {
        let record = |stream: bool, status: &'static str, http: u16, code: Option<&str>| {
            let mut r = ExecutionRecord::new("r".into(), "openai", "chat");
            (r.stream, r.status, r.http_status) = (stream, status, http);
            r.error_code = code.map(str::to_owned);
            r
        };
        // (record, rewritten, then: status, http_status, error_code)
        let cases = [
            (
                record(false, "success", 200, None),
                true,
                ("error", 503, Some("audit_unavailable")),
            ),
            (
                record(true, "success", 200, None),
                true,
                ("error", 200, Some("audit_unavailable")),
            ),
            (
                record(false, "denied", 429, Some("rate_limited")),
                false,
                ("denied", 429, Some("rate_limited")),
            ),
        ];
        for (mut r, rewritten, want) in cases {
            assert_eq!(refused(&mut r), rewritten, "{want:?}");
            assert_eq!((r.status, r.http_status, r.error_code.as_deref()), want);
        }
    }

    /// A `batched` record waits for its commit only once the writer is BACKLOG records
    /// behind, and the writer's taking a record makes room again.
    #[test]
    fn a_writer_that_falls_behind_makes_responses_wait() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let recorder = Recorder {
            tx,
            queued: Arc::default(),
            held: Arc::default(),
        };
        let rec = || ExecutionRecord::new("r".into(), "openai", "chat");
        for _ in 0..BACKLOG {
            assert!(recorder.finish(rec()).is_none());
        }
        assert!(recorder.finish(rec()).is_some(), "past the backlog: wait");
        assert_eq!(recorder.queued.load(Ordering::Relaxed), BACKLOG + 1);
        // The writer takes records (as `Sinks::absorb` does): room again.
        for _ in 0..2 {
            assert!(rx.try_recv().is_ok());
            recorder.queued.fetch_sub(1, Ordering::Relaxed);
        }
        assert!(recorder.finish(rec()).is_none());
    }

    /// The derived serialisation (fields declared alphabetically) is the canonical JSON
    /// of the record's value, so the text the writer stores hashes as the audit chain
    /// recomputes it.
    #[test]
    fn serialisation_is_canonical() {
        let mut r = ExecutionRecord::new("req-1".into(), "openai", "chat");
        r.tenant = Some("t".into());
        r.key_id = Some("t/k".into());
        r.user = Some("u\"1".into());
        r.tags.insert("team".into(), "x".into());
        r.tags.insert("a".into(), "b".into());
        r.model_requested = Some("chat".into());
        r.stream = true;
        (r.cache_creation_tokens, r.cache_read_tokens) = (Some(7), Some(30));
        r.decision = Decision {
            arm: Some("candidate".into()),
            assignment_probability: Some(0.05),
            candidates: vec!["p/m".into(), "q/n".into()],
            chosen: Some("q/n".into()),
            excluded: vec![Excluded {
                reason: "circuit open".into(),
                target: "r/o".into(),
            }],
            experiment: Some("e".into()),
        };
        r.attempts.push(Attempt {
            error: Some("status 500".into()),
            latency_ms: 1.25,
            model: "m".into(),
            offset: Duration::from_millis(3),
            provider: "p".into(),
            region: "eu".into(),
            span_id: crate::traces::SpanId::default(),
            status: Some(500),
            ttft_ms: None,
        });
        r.policy.push(PolicyCheck {
            check: "pii".into(),
            detail: Some("email:1".into()),
            outcome: "found_in_request".into(),
        });
        r.prompt_tokens = 12;
        r.completion_tokens = 34;
        r.cost_usd = 0.000_123_4;
        r.ttft_ms = Some(0.1 + 0.2);
        r.latency_ms = 2.708_475_000_000_000_4;
        r.error_code = Some("e".into());
        r.content = Some(Content {
            completion: Some("echo: [EMAIL_1]".into()),
            prompt: "hi [EMAIL_1]".into(),
        });
        let direct = serde_json::to_string(&r).unwrap();
        let canonical = serde_json::to_value(&r).unwrap().to_string();
        assert_eq!(direct, canonical);
    }
}
