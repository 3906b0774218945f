//! Prometheus metrics (contract section 7), derived from execution records.
//!
//! The request path does no metrics work: the record writer (see [`crate::record`])
//! feeds every finished record to [`Metrics::observe`], off the hot path, and budget
//! gauges are set when ledgers are flushed. Each gateway owns its registry (no global
//! recorder), so several gateways in one process (tests) keep separate counts. Labels
//! are bounded: tenants, models, providers, statuses and reasons, never request or
//! user ids.

use metrics::{counter, gauge, histogram, with_local_recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

use crate::record::ExecutionRecord;

pub mod names {
    pub const REQUESTS: &str = "asc_requests_total";
    pub const TOKENS: &str = "asc_tokens_total";
    pub const COST: &str = "asc_cost_usd_total";
    pub const DURATION: &str = "asc_request_duration_seconds";
    pub const TTFT: &str = "asc_ttft_seconds";
    pub const ATTEMPTS: &str = "asc_upstream_attempts_total";
    pub const FALLBACKS: &str = "asc_fallbacks_total";
    pub const DENIALS: &str = "asc_policy_denials_total";
    pub const CACHE_HITS: &str = "asc_cache_hits_total";
    pub const BUDGET_SPENT: &str = "asc_budget_spent_usd";
    pub const BUDGET_LIMIT: &str = "asc_budget_limit_usd";
    pub const CIRCUIT_OPEN: &str = "asc_circuit_open";
    pub const EXPERIMENT_REQUESTS: &str = "asc_experiment_requests_total";
}

/// Latency buckets in seconds: fine at the bottom (a gateway's own overhead), wide at
/// the top (long generations).
const BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];

pub struct Metrics {
    recorder: PrometheusRecorder,
    /// `asc_cost_usd_total` by (tenant, model): a float counter, which the `metrics`
    /// facade (integer counters) does not have, so it is kept and rendered here.
    cost: std::sync::Mutex<std::collections::BTreeMap<(String, String), f64>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
            .map_or_else(
                |_| PrometheusBuilder::new().build_recorder(),
                |b| b.build_recorder(),
            );
        Self {
            recorder,
            cost: std::sync::Mutex::default(),
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = self.recorder.handle().render();
        let cost = crate::limits::lock(&self.cost);
        if !cost.is_empty() {
            out.push_str(&format!("# TYPE {} counter\n", names::COST));
            for ((tenant, model), v) in cost.iter() {
                out.push_str(&format!(
                    "{}{{tenant=\"{}\",model=\"{}\"}} {v}\n",
                    names::COST,
                    escape(tenant),
                    escape(model)
                ));
            }
        }
        out
    }

    /// Counts one finished request.
    pub fn observe(&self, r: &ExecutionRecord) {
        with_local_recorder(&self.recorder, || {
            let tenant = r.tenant.clone().unwrap_or_else(|| "-".into());
            let model = r.model_requested.clone().unwrap_or_else(|| "-".into());
            let provider = r
                .decision
                .chosen
                .as_deref()
                .and_then(|c| c.split('/').next())
                .unwrap_or("-")
                .to_owned();
            counter!(names::REQUESTS, "tenant" => tenant.clone(), "model" => model.clone(),
                "provider" => provider, "status" => r.status)
            .increment(1);
            if r.prompt_tokens > 0 || r.completion_tokens > 0 {
                counter!(names::TOKENS, "tenant" => tenant.clone(), "model" => model.clone(), "kind" => "prompt")
                    .increment(r.prompt_tokens);
                counter!(names::TOKENS, "tenant" => tenant.clone(), "model" => model.clone(), "kind" => "completion")
                    .increment(r.completion_tokens);
            }
            if r.cost_usd > 0.0 {
                *crate::limits::lock(&self.cost)
                    .entry((tenant.clone(), model.clone()))
                    .or_default() += r.cost_usd;
            }
            histogram!(names::DURATION, "tenant" => tenant.clone(), "model" => model.clone())
                .record(r.latency_ms / 1000.0);
            if let Some(t) = r.ttft_ms {
                histogram!(names::TTFT, "tenant" => tenant.clone(), "model" => model.clone())
                    .record(t / 1000.0);
            }
            for (i, a) in r.attempts.iter().enumerate() {
                let outcome = if a.error.is_none() {
                    "success"
                } else {
                    "failure"
                };
                counter!(names::ATTEMPTS, "provider" => a.provider.clone(), "outcome" => outcome)
                    .increment(1);
                // A success after a failed attempt on another target is a fallback.
                if a.error.is_none()
                    && i > 0
                    && r.attempts[..i].iter().any(|p| p.provider != a.provider)
                {
                    counter!(names::FALLBACKS, "model" => model.clone()).increment(1);
                }
            }
            for p in r.policy.iter().filter(|p| p.outcome == "deny") {
                counter!(names::DENIALS, "tenant" => tenant.clone(), "reason" => p.check.clone())
                    .increment(1);
            }
            if let (Some(e), Some(arm)) = (&r.decision.experiment, &r.decision.arm) {
                counter!(names::EXPERIMENT_REQUESTS, "experiment" => e.clone(), "arm" => arm.clone())
                    .increment(1);
            }
            if r.cache == "hit" {
                counter!(names::CACHE_HITS, "tenant" => tenant).increment(1);
            }
        });
    }

    /// Sets `asc_circuit_open{provider,model}` (1 open, 0 closed) for `provider/model` keys.
    pub fn circuits(&self, snapshot: &[(String, bool)]) {
        with_local_recorder(&self.recorder, || {
            for (key, open) in snapshot {
                let (provider, model) = key.split_once('/').unwrap_or((key, ""));
                gauge!(names::CIRCUIT_OPEN, "provider" => provider.to_owned(), "model" => model.to_owned())
                    .set(if *open { 1.0 } else { 0.0 });
            }
        });
    }

    /// Counts a webhook delivery outcome (`delivered`, `retried`, `failed`).
    pub fn notification(&self, event: &'static str, outcome: &'static str) {
        with_local_recorder(&self.recorder, || {
            counter!("asc_notifications_total", "event" => event, "outcome" => outcome)
                .increment(1);
        });
    }

    /// Sets a tenant's budget gauges.
    pub fn budget(&self, tenant: &str, spent_usd: f64, limit_usd: f64) {
        with_local_recorder(&self.recorder, || {
            gauge!(names::BUDGET_SPENT, "tenant" => tenant.to_owned()).set(spent_usd);
            gauge!(names::BUDGET_LIMIT, "tenant" => tenant.to_owned()).set(limit_usd);
        });
    }
}

/// Escapes a label value for the text format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
