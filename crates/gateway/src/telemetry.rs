//! Prometheus metrics (contract section 7), derived from execution records.
//!
//! The request path does no metrics work: the record writer (see [`crate::record`])
//! feeds every finished record to [`Metrics::observe`], off the hot path, and budget
//! gauges are set when ledgers are flushed. Each gateway owns its registry (no global
//! recorder), so several gateways in one process (tests) keep separate counts. Labels
//! are bounded: tenants, models, providers, statuses and reasons, never request or
//! user ids.

use std::collections::HashMap;

use metrics::{Counter, Histogram, counter, gauge, histogram, with_local_recorder};
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
    /// The per-request series' handles (only the record writer observes, so the lock
    /// is never contended).
    series: std::sync::Mutex<Series>,
}

/// (tenant, model) pairs kept with their handles; past this, new models of a tenant
/// are counted as [`OTHER`].
pub const MAX_PAIRS: usize = 4096;
/// The `model` label of pairs past [`MAX_PAIRS`].
pub const OTHER: &str = "_other";

/// Handles of the per-request series, made on first use.
#[derive(Default)]
struct Series {
    /// By (tenant, model).
    pairs: Keyed<Pair>,
    /// `asc_upstream_attempts_total` by (provider, outcome).
    attempts: Keyed<Counter>,
}

impl Series {
    fn pair(&mut self, rec: &PrometheusRecorder, tenant: &str, model: &str) -> &mut Pair {
        let model = if self.pairs.len() < MAX_PAIRS || self.pairs.contains(&[tenant, model]) {
            model
        } else {
            OTHER
        };
        self.pairs
            .get_or_make(&[tenant, model], || Pair::new(rec, tenant, model))
    }

    fn attempt(&mut self, rec: &PrometheusRecorder, provider: &str, ok: bool) -> &Counter {
        let outcome = if ok { "success" } else { "failure" };
        self.attempts.get_or_make(&[provider, outcome], || {
            with_local_recorder(rec, || {
                counter!(names::ATTEMPTS, "provider" => provider.to_owned(), "outcome" => outcome)
            })
        })
    }
}

/// Values by a tuple of label values, looked up through one reused key buffer: a
/// lookup of a known key allocates nothing.
struct Keyed<T> {
    index: HashMap<String, usize>,
    items: Vec<T>,
    key: String,
}

impl<T> Default for Keyed<T> {
    fn default() -> Self {
        Self {
            index: HashMap::new(),
            items: Vec::new(),
            key: String::new(),
        }
    }
}

impl<T> Keyed<T> {
    fn len(&self) -> usize {
        self.items.len()
    }

    fn set_key(&mut self, parts: &[&str]) {
        self.key.clear();
        for p in parts {
            // A separator no label value has (config names and model ids are text).
            self.key.push_str(p);
            self.key.push('\u{1f}');
        }
    }

    fn contains(&mut self, parts: &[&str]) -> bool {
        self.set_key(parts);
        self.index.contains_key(self.key.as_str())
    }

    fn get_or_make(&mut self, parts: &[&str], make: impl FnOnce() -> T) -> &mut T {
        self.set_key(parts);
        let i = match self.index.get(self.key.as_str()) {
            Some(&i) => i,
            None => {
                self.items.push(make());
                self.index.insert(self.key.clone(), self.items.len() - 1);
                self.items.len() - 1
            }
        };
        &mut self.items[i]
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }
}

/// One (tenant, model)'s handles; those of series that not every request has are made
/// when first needed, so a series appears only once it has counted something.
struct Pair {
    tenant: String,
    model: String,
    duration: Histogram,
    /// `asc_requests_total` by (provider, status).
    requests: Keyed<Counter>,
    tokens: Option<(Counter, Counter)>,
    ttft: Option<Histogram>,
    cache_hits: Option<Counter>,
    fallbacks: Option<Counter>,
    /// `asc_cost_usd_total`: a float counter, which the `metrics` facade (integer
    /// counters) does not have, so it is kept and rendered here.
    cost: f64,
}

impl Pair {
    fn new(rec: &PrometheusRecorder, tenant: &str, model: &str) -> Self {
        let duration = with_local_recorder(
            rec,
            || histogram!(names::DURATION, "tenant" => tenant.to_owned(), "model" => model.to_owned()),
        );
        Self {
            tenant: tenant.to_owned(),
            model: model.to_owned(),
            duration,
            requests: Keyed::default(),
            tokens: None,
            ttft: None,
            cache_hits: None,
            fallbacks: None,
            cost: 0.0,
        }
    }

    fn requests(
        &mut self,
        rec: &PrometheusRecorder,
        provider: &str,
        status: &'static str,
    ) -> &Counter {
        let (t, m) = (&self.tenant, &self.model);
        self.requests.get_or_make(&[provider, status], || {
            with_local_recorder(rec, || {
                counter!(names::REQUESTS, "tenant" => t.clone(), "model" => m.clone(),
                    "provider" => provider.to_owned(), "status" => status)
            })
        })
    }

    fn tokens(&mut self, rec: &PrometheusRecorder) -> &(Counter, Counter) {
        let (t, m) = (&self.tenant, &self.model);
        self.tokens.get_or_insert_with(|| {
            with_local_recorder(rec, || {
                (
                    counter!(names::TOKENS, "tenant" => t.clone(), "model" => m.clone(), "kind" => "prompt"),
                    counter!(names::TOKENS, "tenant" => t.clone(), "model" => m.clone(), "kind" => "completion"),
                )
            })
        })
    }

    fn ttft(&mut self, rec: &PrometheusRecorder) -> &Histogram {
        let (t, m) = (&self.tenant, &self.model);
        self.ttft.get_or_insert_with(|| {
            with_local_recorder(
                rec,
                || histogram!(names::TTFT, "tenant" => t.clone(), "model" => m.clone()),
            )
        })
    }

    fn cache_hits(&mut self, rec: &PrometheusRecorder) -> &Counter {
        let t = &self.tenant;
        self.cache_hits.get_or_insert_with(|| {
            with_local_recorder(rec, || counter!(names::CACHE_HITS, "tenant" => t.clone()))
        })
    }

    fn fallbacks(&mut self, rec: &PrometheusRecorder) -> &Counter {
        let m = &self.model;
        self.fallbacks.get_or_insert_with(|| {
            with_local_recorder(rec, || counter!(names::FALLBACKS, "model" => m.clone()))
        })
    }
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
            series: std::sync::Mutex::default(),
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = self.recorder.handle().render();
        let series = crate::limits::lock(&self.series);
        let mut cost: Vec<(&str, &str, f64)> = series
            .pairs
            .iter()
            .filter(|p| p.cost > 0.0)
            .map(|p| (p.tenant.as_str(), p.model.as_str(), p.cost))
            .collect();
        cost.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        if !cost.is_empty() {
            out.push_str(&format!("# TYPE {} counter\n", names::COST));
            for (tenant, model, v) in cost {
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

    /// Counts one finished request. The handles of a (tenant, model) are made once and
    /// kept, so a record costs a few atomic adds, not a registry lookup with freshly
    /// built label sets per metric. At most [`MAX_PAIRS`] pairs are kept: past that (a
    /// client sending ever new model names), new models count under `model="_other"`,
    /// so no client can grow the exposition without bound.
    pub fn observe(&self, r: &ExecutionRecord) {
        let tenant = r.tenant.as_deref().unwrap_or("-");
        let provider = r
            .decision
            .chosen
            .as_deref()
            .and_then(|c| c.split('/').next())
            .unwrap_or("-");
        let rec = &self.recorder;
        let mut guard = crate::limits::lock(&self.series);
        let series = &mut *guard;
        for a in &r.attempts {
            series
                .attempt(rec, &a.provider, a.error.is_none())
                .increment(1);
        }
        // A success after a failed attempt on another target is a fallback.
        let fallbacks = r
            .attempts
            .iter()
            .enumerate()
            .filter(|(i, a)| {
                a.error.is_none() && r.attempts[..*i].iter().any(|p| p.provider != a.provider)
            })
            .count();
        let pair = series.pair(rec, tenant, r.model_requested.as_deref().unwrap_or("-"));
        pair.requests(rec, provider, r.status).increment(1);
        if r.prompt_tokens > 0 || r.completion_tokens > 0 {
            let (prompt, completion) = pair.tokens(rec);
            prompt.increment(r.prompt_tokens);
            completion.increment(r.completion_tokens);
        }
        if r.cost_usd > 0.0 {
            pair.cost += r.cost_usd;
        }
        pair.duration.record(r.latency_ms / 1000.0);
        if let Some(t) = r.ttft_ms {
            pair.ttft(rec).record(t / 1000.0);
        }
        if r.cache == "hit" {
            pair.cache_hits(rec).increment(1);
        }
        if fallbacks > 0 {
            pair.fallbacks(rec).increment(fallbacks as u64);
        }
        // Rare paths (denials, experiments): the registry's own lookup.
        if r.policy.iter().any(|p| p.outcome == "deny")
            || (r.decision.experiment.is_some() && r.decision.arm.is_some())
        {
            with_local_recorder(rec, || {
                for p in r.policy.iter().filter(|p| p.outcome == "deny") {
                    counter!(names::DENIALS, "tenant" => tenant.to_owned(), "reason" => p.check.clone())
                        .increment(1);
                }
                if let (Some(e), Some(arm)) = (&r.decision.experiment, &r.decision.arm) {
                    counter!(names::EXPERIMENT_REQUESTS, "experiment" => e.clone(), "arm" => arm.clone())
                        .increment(1);
                }
            });
        }
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

    /// Counts a failed write of records (and their audit entries): `kept` when they stay
    /// queued for the next try, `dropped` when past the writer's limit.
    pub fn record_write_failure(&self, outcome: &'static str, records: u64) {
        with_local_recorder(&self.recorder, || {
            counter!("asc_record_write_failures_total", "outcome" => outcome).increment(records);
        });
    }

    /// Records written on a later try, and how many wait now.
    pub fn records_pending(&self, pending: usize) {
        with_local_recorder(&self.recorder, || {
            gauge!("asc_records_pending").set(pending as f64);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(tenant: &str, model: &str) -> ExecutionRecord {
        let mut r = ExecutionRecord::new("r".into(), "openai", "chat");
        r.tenant = Some(tenant.into());
        r.model_requested = Some(model.into());
        r.status = "success";
        r.prompt_tokens = 3;
        r.completion_tokens = 2;
        r.cost_usd = 0.25;
        r
    }

    fn requests(text: &str, model: &str) -> f64 {
        let label = format!("model=\"{model}\"");
        text.lines()
            .filter(|l| l.starts_with("asc_requests_total{") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    #[test]
    fn kept_handles_count_like_fresh_ones() {
        let m = Metrics::new();
        for _ in 0..3 {
            m.observe(&record("t", "chat"));
        }
        m.observe(&record("u", "chat"));
        let text = m.render();
        assert_eq!(requests(&text, "chat"), 4.0);
        assert!(text.contains("asc_tokens_total{tenant=\"t\",model=\"chat\",kind=\"prompt\"} 9"));
        assert!(text.contains("asc_cost_usd_total{tenant=\"t\",model=\"chat\"} 0.75"));
        assert!(text.contains("asc_cost_usd_total{tenant=\"u\",model=\"chat\"} 0.25"));
        // Series no request has touched are not shown.
        assert!(!text.contains("asc_cache_hits_total"));
        assert!(!text.contains("asc_ttft_seconds"));
    }

    #[test]
    fn models_past_the_bound_count_as_other() {
        let m = Metrics::new();
        for i in 0..MAX_PAIRS + 10 {
            m.observe(&record("t", &format!("m{i}")));
        }
        // A pair seen before the bound keeps its own series.
        m.observe(&record("t", "m0"));
        let text = m.render();
        assert_eq!(requests(&text, OTHER), 10.0);
        assert_eq!(requests(&text, "m0"), 2.0);
        assert_eq!(requests(&text, &format!("m{}", MAX_PAIRS + 1)), 0.0);
        let series = text
            .lines()
            .filter(|l| l.starts_with("asc_requests_total{"))
            .count();
        assert_eq!(series, MAX_PAIRS + 1);
    }
}
