//! The execution record (contract section 5): one per request, whatever its outcome.
//!
//! The pipeline fills one [`ExecutionRecord`] as the request moves through its phases
//! and hands it to [`finish`] exactly once, from the response path or, when the client
//! goes away mid-stream, from the stream's drop guard. Today `finish` writes the one
//! structured log line per request; the store's batch writer takes records from the
//! same call.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ExecutionRecord {
    pub request_id: String,
    /// RFC 3339, UTC.
    pub ts: String,
    pub tenant: Option<String>,
    pub key_id: Option<String>,
    pub user: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// `openai` or `anthropic`: the inbound API.
    pub surface: &'static str,
    /// `chat` or `embeddings`.
    pub endpoint: &'static str,
    pub model_requested: Option<String>,
    pub stream: bool,
    pub decision: Decision,
    pub attempts: Vec<Attempt>,
    /// `hit`, `miss` or `bypass`.
    pub cache: &'static str,
    pub policy: Vec<PolicyCheck>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// True when the upstream reported no usage and the counts were estimated.
    pub usage_estimated: bool,
    pub cost_usd: f64,
    pub ttft_ms: Option<f64>,
    pub latency_ms: f64,
    /// `success`, `error`, `denied` or `client_closed`.
    pub status: &'static str,
    pub http_status: u16,
    pub error_code: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Decision {
    /// `provider/model` of every target considered, in try order.
    pub candidates: Vec<String>,
    pub excluded: Vec<Excluded>,
    pub chosen: Option<String>,
    pub experiment: Option<String>,
    pub arm: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Excluded {
    pub target: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub provider: String,
    pub model: String,
    pub region: String,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyCheck {
    pub check: String,
    pub outcome: String,
    pub detail: Option<String>,
}

impl ExecutionRecord {
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
            usage_estimated: false,
            cost_usd: 0.0,
            ttft_ms: None,
            latency_ms: 0.0,
            status: "success",
            http_status: 200,
            error_code: None,
        }
    }
}

/// Hands a finished record on: the request log line.
pub fn finish(record: ExecutionRecord) {
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
