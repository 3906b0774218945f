//! One task per experiment: it owns the experiment's [`Status`] (counts, test states,
//! decisions), takes every enrolled request's [`Outcome`] in the order they finish, and
//! decides:
//!
//! - the hard **breaker** (`breaker: {max_error_rate, window}`) rolls back as soon as
//!   the candidate's last `window` requests hold too many errors: no statistics;
//! - a guard **proven breached** by its cumulative sequential test (valid however often it
//!   is looked at) rolls back; the false-rollback budget `alpha` is split evenly among
//!   the guards;
//! - a stage **advances** once `min_requests` and `min_duration_s` are met and, for a
//!   `noninferior` gate, every guard is proven within its margin by tests restarted at
//!   the stage's start (each at `alpha`: promotion needs all of them, so no correction);
//!   past `max_stage_duration_s` without that, `on_inconclusive` applies;
//! - the **budget** reached pauses.
//!
//! Each decision is published to the request path at once (the runtime's atomics), then
//! written to the audit trail and the timeline as an `experiment_decision` event with its
//! evidence: counts, estimates, bounds, e-values, the rule that fired, the config hash,
//! and the serialised test states, so the decision can be recomputed from them. The
//! status is saved to the store after every decision and every second, and resumed
//! from it on start.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::stats::{MeanTest, Quantiles, RatioTest, Verdict};
use super::{Arm, Env, Gate, Msg, OnSuccess, Outcome, Runtime, Spec, State};

/// How many baseline requests are needed before their p95 is a usable threshold, and
/// before the cost scale is fixed.
const MIN_BASELINE: u64 = 20;
/// Ticks (of half a second) between saves of a changed status.
const SAVE_EVERY: u32 = 4;
/// How many candidate error request ids a decision keeps as examples.
const EXAMPLES: usize = 5;

/// A manual action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Promote,
    Rollback,
    Pause,
    Resume,
}

impl Action {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "promote" => Some(Self::Promote),
            "rollback" => Some(Self::Rollback),
            "pause" => Some(Self::Pause),
            "resume" => Some(Self::Resume),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Promote => "promote",
            Self::Rollback => "rollback",
            Self::Pause => "pause",
            Self::Resume => "resume",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ArmStats {
    pub requests: u64,
    pub errors: u64,
    pub cost_micros: u64,
    pub latency: Quantiles,
    pub ttft: Quantiles,
    pub feedback_n: u64,
    pub feedback_sum: f64,
}

/// The sequential tests of every configured guard.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tests {
    pub error_rate: Option<RatioTest>,
    /// The additive margin of the error rate (`max_increase`), on 0/1 outcomes.
    pub error_increase: Option<MeanTest>,
    pub latency_p95: Option<RatioTest>,
    pub ttft_p95: Option<RatioTest>,
    /// Created once the cost scale is known (costs are divided by it, so in [0, 1]).
    pub cost_per_request: Option<MeanTest>,
    pub feedback: Option<MeanTest>,
}

impl Tests {
    fn new(spec: &Spec, cost_scale: Option<f64>) -> Self {
        let g = &spec.guards;
        Self {
            error_rate: g.error_rate.map(|(r, _)| RatioTest::new(r)),
            error_increase: g
                .error_rate
                .and_then(|(_, inc)| inc)
                .map(|inc| MeanTest::new(1.0, inc, 1.0, true)),
            latency_p95: g.latency_p95.map(RatioTest::new),
            ttft_p95: g.ttft_p95.map(RatioTest::new),
            cost_per_request: cost_scale
                .and(g.cost_per_request)
                .map(|k| MeanTest::new(k, 0.0, 1.0, true)),
            feedback: g.feedback.map(|d| MeanTest::new(1.0, d, 1.0, false)),
        }
    }
}

/// One decision, as listed by `GET /admin/v1/experiments/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decision {
    pub ts: String,
    pub action: String,
    pub reason: String,
    pub evidence: Value,
}

/// Everything an experiment knows; saved to the store, resumed on start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub hash: String,
    pub state: State,
    pub stage: usize,
    pub started_ms: u64,
    pub stage_started_ms: u64,
    pub stage_requests: u64,
    pub baseline: ArmStats,
    pub candidate: ArmStats,
    /// Costs are divided by this (fixed once the baseline has [`MIN_BASELINE`] requests:
    /// ten times its mean cost) and capped at 1 for the cost test.
    pub cost_scale: Option<f64>,
    /// Cumulative tests: a breach here rolls back.
    pub cumulative: Tests,
    /// Restarted at each stage: a `noninferior` gate needs every guard proven here.
    pub stage_tests: Tests,
    /// The candidate's last `window` outcomes (true: error), for the breaker.
    pub breaker: VecDeque<bool>,
    pub spent_micros: u64,
    pub decisions: Vec<Decision>,
    /// Recent candidate error request ids (examples for the evidence).
    pub examples: VecDeque<String>,
    /// Sticky units that already had a bad event of each kind in this stage: a unit
    /// counts at most once per metric per stage, since events of one unit are not
    /// independent (design 4.7.2). Bounded by [`MAX_UNITS`].
    #[serde(default)]
    pub seen: Seen,
}

/// Most sticky units remembered per metric and stage; past it, further units' events
/// count as they come.
const MAX_UNITS: usize = 100_000;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Seen {
    pub error: std::collections::HashSet<u64>,
    pub slow: std::collections::HashSet<u64>,
    pub slow_ttft: std::collections::HashSet<u64>,
}

/// A bad event counts unless its sticky unit already had one of this kind.
fn first_for_unit(set: &mut std::collections::HashSet<u64>, unit: Option<u64>, bad: bool) -> bool {
    match unit {
        Some(u) if bad => set.len() >= MAX_UNITS || set.insert(u),
        _ => bad,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn ts() -> String {
    crate::store::timestamp(SystemTime::now())
}

impl Status {
    pub fn fresh(spec: &Spec, now: u64) -> Self {
        Self {
            hash: spec.hash.clone(),
            state: if spec.shadow {
                State::Shadow
            } else {
                State::Running
            },
            stage: 0,
            started_ms: now,
            stage_started_ms: now,
            stage_requests: 0,
            baseline: ArmStats::default(),
            candidate: ArmStats::default(),
            cost_scale: None,
            cumulative: Tests::new(spec, None),
            stage_tests: Tests::new(spec, None),
            breaker: VecDeque::new(),
            spent_micros: 0,
            decisions: Vec::new(),
            examples: VecDeque::new(),
            seen: Seen::default(),
        }
    }

    fn active(&self) -> bool {
        matches!(self.state, State::Running | State::Shadow)
    }

    fn arm(&mut self, arm: Arm) -> &mut ArmStats {
        match arm {
            Arm::Baseline => &mut self.baseline,
            Arm::Candidate => &mut self.candidate,
        }
    }

    /// Takes one outcome into the counts and the tests. Thresholds (the baseline's p95,
    /// the cost scale) are read before the outcome is added, so each observation is
    /// judged against what was known before it.
    pub fn observe(&mut self, o: &Outcome) {
        let candidate = o.arm == Arm::Candidate;
        let tau_latency = (self.baseline.latency.count() >= MIN_BASELINE)
            .then(|| self.baseline.latency.quantile(0.95))
            .flatten();
        let tau_ttft = (self.baseline.ttft.count() >= MIN_BASELINE)
            .then(|| self.baseline.ttft.quantile(0.95))
            .flatten();
        let scale = self.cost_scale;
        let error = first_for_unit(&mut self.seen.error, o.unit, o.error);
        let slow =
            tau_latency.map(|tau| first_for_unit(&mut self.seen.slow, o.unit, o.latency_ms > tau));
        let slow_ttft = tau_ttft
            .zip(o.ttft_ms)
            .map(|(tau, t)| first_for_unit(&mut self.seen.slow_ttft, o.unit, t > tau));
        for t in [&mut self.cumulative, &mut self.stage_tests] {
            if let Some(e) = t.error_rate.as_mut() {
                e.observe(candidate, o.p, error);
            }
            if let Some(e) = t.error_increase.as_mut() {
                e.observe(candidate, o.p, if o.error { 1.0 } else { 0.0 });
            }
            if let (Some(e), Some(bad)) = (t.latency_p95.as_mut(), slow) {
                e.observe(candidate, o.p, bad);
            }
            if let (Some(e), Some(bad)) = (t.ttft_p95.as_mut(), slow_ttft) {
                e.observe(candidate, o.p, bad);
            }
            if let (Some(e), Some(scale)) = (t.cost_per_request.as_mut(), scale) {
                e.observe(candidate, o.p, (o.cost_micros as f64 / scale).min(1.0));
            }
        }
        self.stage_requests += 1;
        let a = self.arm(o.arm);
        a.requests += 1;
        a.errors += u64::from(o.error);
        a.cost_micros += o.cost_micros;
        a.latency.observe(o.latency_ms);
        if let Some(t) = o.ttft_ms {
            a.ttft.observe(t);
        }
        if self.cost_scale.is_none() && self.baseline.requests >= MIN_BASELINE {
            let mean = self.baseline.cost_micros as f64 / self.baseline.requests as f64;
            self.cost_scale = Some((mean * 10.0).max(1.0));
        }
        if candidate && o.error {
            self.examples.push_back(o.request_id.clone());
            while self.examples.len() > EXAMPLES {
                self.examples.pop_front();
            }
        }
    }

    fn feedback(&mut self, arm: Arm, p: f64, score: f64) {
        let a = self.arm(arm);
        a.feedback_n += 1;
        a.feedback_sum += score;
        for t in [&mut self.cumulative, &mut self.stage_tests] {
            if let Some(f) = t.feedback.as_mut() {
                f.observe(arm == Arm::Candidate, p, score);
            }
        }
    }

    /// The cost test starts once its scale is known.
    fn ensure_cost_tests(&mut self, spec: &Spec) {
        if let (Some(k), Some(_)) = (spec.guards.cost_per_request, self.cost_scale) {
            for t in [&mut self.cumulative, &mut self.stage_tests] {
                if t.cost_per_request.is_none() {
                    t.cost_per_request = Some(MeanTest::new(k, 0.0, 1.0, true));
                }
            }
        }
    }
}

/// The alphas of one decision: each guard's abort test gets `alpha / guards`
/// (Bonferroni: the chance of any false rollback stays within `alpha`); promotion needs
/// every guard, so each is tested at `alpha` (an either-margin guard at `alpha / 2` per
/// margin).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Alphas {
    pub abort: f64,
    pub promote: f64,
}

pub fn alphas(spec: &Spec) -> Alphas {
    Alphas {
        abort: spec.alpha / spec.guards.count().max(1) as f64,
        promote: spec.alpha,
    }
}

/// One guard's judgement.
#[derive(Debug, Clone, Serialize)]
pub struct GuardView {
    pub guard: &'static str,
    pub verdict: Verdict,
    pub estimate: Option<f64>,
    /// The harmful-side bound (upper end of the confidence sequence): within the margin
    /// is what promotion needs.
    pub bound: Option<f64>,
    /// The other end: above the margin is what a breach shows.
    pub lower_bound: Option<f64>,
    pub margin: Value,
    pub e_harm: Option<f64>,
    pub e_safe: Option<f64>,
}

fn ratio_verdict(t: &Option<RatioTest>, a: Alphas) -> Option<Verdict> {
    t.as_ref().map(|t| t.verdict(a.abort, a.promote))
}

/// Each configured guard's verdict in a set of tests (`Undecided` while a test has not
/// started).
pub fn verdicts(spec: &Spec, t: &Tests, a: Alphas) -> Vec<(&'static str, Verdict)> {
    let g = &spec.guards;
    let mut out = Vec::new();
    if let Some((_, inc)) = g.error_rate {
        let half = Alphas {
            abort: a.abort,
            promote: if inc.is_some() {
                a.promote / 2.0
            } else {
                a.promote
            },
        };
        let ratio = ratio_verdict(&t.error_rate, half).unwrap_or(Verdict::Undecided);
        let add = t
            .error_increase
            .as_ref()
            .map(|m| m.verdict(half.abort, half.promote));
        // Allowed within either margin: breached only when both are proven breached,
        // proven within when either is.
        let v = match add {
            None => ratio,
            Some(add) if ratio == Verdict::Fail && add == Verdict::Fail => Verdict::Fail,
            Some(add) if ratio == Verdict::Pass || add == Verdict::Pass => Verdict::Pass,
            Some(_) => Verdict::Undecided,
        };
        out.push(("error_rate", v));
    }
    if g.latency_p95.is_some() {
        out.push((
            "latency_p95",
            ratio_verdict(&t.latency_p95, a).unwrap_or(Verdict::Undecided),
        ));
    }
    if g.ttft_p95.is_some() {
        out.push((
            "ttft_p95",
            ratio_verdict(&t.ttft_p95, a).unwrap_or(Verdict::Undecided),
        ));
    }
    if g.cost_per_request.is_some() {
        out.push((
            "cost_per_request",
            t.cost_per_request
                .as_ref()
                .map_or(Verdict::Undecided, |m| m.verdict(a.abort, a.promote)),
        ));
    }
    if g.feedback.is_some() {
        out.push((
            "feedback",
            t.feedback
                .as_ref()
                .map_or(Verdict::Undecided, |m| m.verdict(a.abort, a.promote)),
        ));
    }
    out
}

/// The guards as the status and the evidence show them: the verdict (breached by the
/// cumulative test, else the current stage's), the estimate and the harmful-side bound.
pub fn guard_views(spec: &Spec, st: &Status) -> Vec<GuardView> {
    let a = alphas(spec);
    let cumulative = verdicts(spec, &st.cumulative, a);
    let stage = verdicts(spec, &st.stage_tests, a);
    let c = &st.cumulative;
    cumulative
        .into_iter()
        .zip(stage)
        .map(|((guard, cv), (_, sv))| {
            let verdict = if cv == Verdict::Fail { cv } else { sv };
            let ratio = |t: &Option<RatioTest>| {
                t.as_ref().map_or((None, None, None, None, None), |t| {
                    (
                        t.estimate(),
                        t.upper_bound(a.abort),
                        t.lower_bound(a.abort),
                        Some(t.e_harm()),
                        Some(t.e_safe()),
                    )
                })
            };
            let mean = |t: &Option<MeanTest>| {
                t.as_ref().map_or((None, None, None, None, None), |t| {
                    (
                        t.estimate(),
                        t.upper_bound(a.abort),
                        t.lower_bound(a.abort),
                        Some(t.e_harm()),
                        Some(t.e_safe()),
                    )
                })
            };
            let g = &spec.guards;
            let ((estimate, bound, lower_bound, e_harm, e_safe), margin) = match guard {
                "error_rate" => (
                    ratio(&c.error_rate),
                    json!({"max_ratio": g.error_rate.map(|e| e.0),
                           "max_increase": g.error_rate.and_then(|e| e.1)}),
                ),
                "latency_p95" => (ratio(&c.latency_p95), json!({"max_ratio": g.latency_p95})),
                "ttft_p95" => (ratio(&c.ttft_p95), json!({"max_ratio": g.ttft_p95})),
                "cost_per_request" => (
                    mean(&c.cost_per_request),
                    json!({"max_ratio": g.cost_per_request}),
                ),
                _ => (mean(&c.feedback), json!({"max_decrease": g.feedback})),
            };
            GuardView {
                guard,
                verdict,
                estimate,
                bound,
                lower_bound,
                margin,
                e_harm,
                e_safe,
            }
        })
        .collect()
}

fn p95(q: &Quantiles) -> Option<f64> {
    q.quantile(0.95)
}

/// The share of an arm's requests slower than the baseline's p95 (as the guard counts
/// them), when that guard runs.
fn slow_share(t: &Option<RatioTest>, arm: Arm) -> Option<f64> {
    let c = t.as_ref()?.counts();
    let (n, events) = match arm {
        Arm::Baseline => (c.baseline_n, c.baseline_events),
        Arm::Candidate => (c.candidate_n, c.candidate_events),
    };
    (n > 0).then(|| events as f64 / n as f64)
}

fn arm_view(st: &Status, arm: Arm) -> Value {
    let a = match arm {
        Arm::Baseline => &st.baseline,
        Arm::Candidate => &st.candidate,
    };
    let n = a.requests.max(1) as f64;
    json!({
        "slower_than_baseline_p95": slow_share(&st.cumulative.latency_p95, arm),
        "ttft_slower_than_baseline_p95": slow_share(&st.cumulative.ttft_p95, arm),
        "requests": a.requests,
        "errors": a.errors,
        "error_rate": if a.requests > 0 { a.errors as f64 / n } else { 0.0 },
        "p95_latency_ms": p95(&a.latency),
        "p95_ttft_ms": p95(&a.ttft),
        "cost_per_request_usd": if a.requests > 0 { a.cost_micros as f64 / n / 1e6 } else { 0.0 },
        "feedback_mean": (a.feedback_n > 0).then(|| a.feedback_sum / a.feedback_n as f64),
        "feedback_count": a.feedback_n,
    })
}

/// The status as `GET /admin/v1/experiments/{name}` and `asc experiments status` show it.
pub fn view(spec: &Spec, st: &Status, shadow_dropped: u64) -> Value {
    json!({
        "name": spec.name,
        "model": spec.model,
        "mode": if spec.shadow { "shadow" } else { "canary" },
        "candidate": spec.candidate.key,
        "tenants": spec.tenants,
        "state": st.state.as_str(),
        "stage": st.stage,
        "stages": spec.stages.len(),
        "weight": f64::from(st.weight_ppm(spec)) / 10_000.0,
        "stage_requests": st.stage_requests,
        "arms": {"baseline": arm_view(st, Arm::Baseline), "candidate": arm_view(st, Arm::Candidate)},
        "guards": guard_views(spec, st),
        "decisions": st.decisions,
        "spent_usd": st.spent_micros as f64 / 1e6,
        "budget_usd": spec.budget_micros.map(|m| m as f64 / 1e6),
        "shadow_dropped": shadow_dropped,
        "config_hash": spec.hash,
    })
}

/// What a decision carries: enough to check it, and to recompute it from the test states.
fn evidence(spec: &Spec, st: &Status, rule: &str) -> Value {
    json!({
        "rule": rule,
        "config_hash": spec.hash,
        "stage": st.stage,
        "weight": f64::from(st.weight_ppm(spec)) / 10_000.0,
        "stage_requests": st.stage_requests,
        "arms": {"baseline": arm_view(st, Arm::Baseline), "candidate": arm_view(st, Arm::Candidate)},
        "guards": guard_views(spec, st),
        "alphas": alphas(spec),
        "breaker": {
            "window": st.breaker.len(),
            "errors": st.breaker.iter().filter(|e| **e).count(),
            "limit": spec.breaker.map(|b| json!({"max_error_rate": b.0, "window": b.1})),
        },
        "spent_usd": st.spent_micros as f64 / 1e6,
        "budget_usd": spec.budget_micros.map(|m| m as f64 / 1e6),
        "examples": {"candidate_error_request_ids": st.examples},
        "tests": {"cumulative": st.cumulative, "stage": st.stage_tests},
    })
}

/// The controller's decisions, given the state and the time; pure (no I/O), so it can
/// be replayed and tested. Returns the decision taken, if any.
pub fn step(spec: &Spec, st: &mut Status, now: u64, budget_hit: bool) -> Option<Decision> {
    if !st.active() {
        return None;
    }
    st.ensure_cost_tests(spec);
    // The hard breaker: no statistics.
    if let Some((max_rate, window)) = spec.breaker
        && st.breaker.len() >= window
    {
        let errors = st.breaker.iter().filter(|e| **e).count();
        if errors as f64 / window as f64 > max_rate {
            let reason = format!(
                "breaker: {errors} of the candidate's last {window} requests failed (max error rate {max_rate})"
            );
            return Some(transition(
                spec,
                st,
                State::RolledBack,
                "rollback",
                reason,
                "breaker",
            ));
        }
    }
    let a = alphas(spec);
    for (guard, v) in verdicts(spec, &st.cumulative, a) {
        if v == Verdict::Fail {
            let reason = format!("guard {guard} breached: proven worse than its margin");
            let rule = format!("abort:{guard}:cumulative");
            return Some(transition(
                spec,
                st,
                State::RolledBack,
                "rollback",
                reason,
                &rule,
            ));
        }
    }
    if let Some(limit) = spec.budget_micros
        && (budget_hit || st.spent_micros >= limit)
    {
        let reason = format!(
            "budget: the candidate spent {:.6} of {:.6} USD",
            st.spent_micros as f64 / 1e6,
            limit as f64 / 1e6
        );
        return Some(transition(
            spec,
            st,
            State::Paused,
            "pause",
            reason,
            "budget",
        ));
    }
    let stage = spec.stages.get(st.stage)?;
    let elapsed_s = now.saturating_sub(st.stage_started_ms) / 1000;
    let minimums = st.stage_requests >= stage.min_requests && elapsed_s >= stage.min_duration_s;
    // Shadow gates are abort-only: a shadow cannot prove a candidate for promotion.
    let gate_ok = stage.gate == Gate::AbortOnly
        || (!spec.shadow
            && verdicts(spec, &st.stage_tests, a)
                .iter()
                .all(|(_, v)| *v == Verdict::Pass));
    if minimums && gate_ok {
        return Some(advance(spec, st, now));
    }
    if elapsed_s >= spec.max_stage_duration_s {
        let undecided: Vec<&str> = verdicts(spec, &st.stage_tests, a)
            .iter()
            .filter(|(_, v)| *v != Verdict::Pass)
            .map(|(g, _)| *g)
            .collect();
        let reason = format!(
            "inconclusive: stage {} ran {}s (max_stage_duration_s) without {}",
            st.stage,
            elapsed_s,
            if minimums {
                format!("proving {}", undecided.join(", "))
            } else {
                "its minimum requests".to_owned()
            }
        );
        let (state, action) = if spec.rollback_if_inconclusive {
            (State::RolledBack, "rollback")
        } else {
            (State::Paused, "pause")
        };
        return Some(transition(spec, st, state, action, reason, "inconclusive"));
    }
    None
}

/// The next stage, or the end of the stages (`on_success`).
fn advance(spec: &Spec, st: &mut Status, now: u64) -> Decision {
    let next = st.stage + 1;
    let passed = format!("stage {} passed", st.stage);
    let Some(stage) = spec.stages.get(next) else {
        if spec.shadow {
            let reason = format!("{passed}: shadow stages complete (a shadow never promotes)");
            return transition(spec, st, State::Completed, "advance", reason, "complete");
        }
        return match spec.on_success {
            OnSuccess::Promote => transition(
                spec,
                st,
                State::Promoted,
                "promote",
                format!("{passed}: every stage passed"),
                "promote:on_success",
            ),
            OnSuccess::AwaitApproval => transition(
                spec,
                st,
                State::AwaitingApproval,
                "advance",
                format!("{passed}: every stage passed, awaiting approval"),
                "await_approval",
            ),
            OnSuccess::Hold => transition(
                spec,
                st,
                State::Completed,
                "advance",
                format!("{passed}: every stage passed, holding the weight"),
                "hold",
            ),
        };
    };
    let decision = decide(
        spec,
        st,
        "advance",
        format!(
            "{passed}: weight {} -> {}%",
            f64::from(st.weight_ppm(spec)) / 10_000.0,
            f64::from(stage.weight_ppm) / 10_000.0
        ),
        "advance",
    );
    st.stage = next;
    st.stage_started_ms = now;
    st.stage_requests = 0;
    st.stage_tests = Tests::new(spec, st.cost_scale);
    st.seen = Seen::default();
    decision
}

impl Status {
    /// The weight the request path uses, from the state and the stage.
    pub fn weight_ppm(&self, spec: &Spec) -> u32 {
        match self.state {
            State::Paused | State::RolledBack => 0,
            State::Promoted => 1_000_000,
            _ => spec.stages.get(self.stage).map_or(0, |s| s.weight_ppm),
        }
    }
}

fn transition(
    spec: &Spec,
    st: &mut Status,
    state: State,
    action: &str,
    reason: String,
    rule: &str,
) -> Decision {
    let d = decide(spec, st, action, reason, rule);
    st.state = state;
    d
}

fn decide(spec: &Spec, st: &mut Status, action: &str, reason: String, rule: &str) -> Decision {
    let d = Decision {
        ts: ts(),
        action: action.to_owned(),
        reason,
        evidence: evidence(spec, st, rule),
    };
    st.decisions.push(d.clone());
    d
}

/// A manual action; an action the state does not allow is refused with the reason.
pub fn command(
    spec: &Spec,
    st: &mut Status,
    action: Action,
    actor: &str,
    now: u64,
) -> Result<Decision, String> {
    let state = st.state;
    if state.is_terminal() {
        return Err(format!(
            "the experiment is {}; change its config to run it again",
            state.as_str()
        ));
    }
    let rule = format!("manual:{}", action.as_str());
    let by = format!("by {actor}");
    match action {
        Action::Promote if spec.shadow => Err("a shadow experiment cannot be promoted".into()),
        Action::Promote => Ok(transition(
            spec,
            st,
            State::Promoted,
            "promote",
            format!("manual promotion {by}"),
            &rule,
        )),
        Action::Rollback => Ok(transition(
            spec,
            st,
            State::RolledBack,
            "rollback",
            format!("manual rollback {by}"),
            &rule,
        )),
        Action::Pause if state == State::Paused => Err("the experiment is already paused".into()),
        Action::Pause => Ok(transition(
            spec,
            st,
            State::Paused,
            "pause",
            format!("manual pause {by}"),
            &rule,
        )),
        Action::Resume if state != State::Paused => Err(format!(
            "only a paused experiment can be resumed (it is {})",
            state.as_str()
        )),
        Action::Resume => {
            let to = if spec.shadow {
                State::Shadow
            } else {
                State::Running
            };
            st.stage_started_ms = now;
            Ok(transition(
                spec,
                st,
                to,
                "resume",
                format!("manual resume {by}"),
                &rule,
            ))
        }
    }
}

/// Starts the experiment's controller (resuming its saved status when it belongs to
/// this config) and returns its runtime.
pub async fn start(spec: Arc<Spec>, env: &Env) -> Arc<Runtime> {
    let saved = match env.store.experiment_state(&spec.name).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(experiment = %spec.name, error = %e, "reading the experiment state failed");
            None
        }
    };
    let st = saved
        .filter(|(hash, _)| *hash == spec.hash)
        .and_then(|(_, json)| serde_json::from_str::<Status>(&json).ok())
        .unwrap_or_else(|| Status::fresh(&spec, now_ms()));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let rt = Arc::new(super::runtime(
        &spec.name,
        &spec.hash,
        st.state,
        st.weight_ppm(&spec),
        tx,
    ));
    rt.set_spent(st.spent_micros);
    let shared = (env.store.backend() == crate::store::Backend::Postgres).then(|| Shared {
        lease: None,
        outbox: Vec::new(),
        sent_cost: 0,
        others: 0,
        me: rand::random(),
    });
    let mut c = Controller {
        spec,
        st,
        rt: Arc::downgrade(&rt),
        env: env.clone(),
        dirty: true,
        shared,
        synced: None,
    };
    env.tasks.spawn(async move { c.run(rx).await });
    rt
}

struct Controller {
    spec: Arc<Spec>,
    st: Status,
    rt: Weak<Runtime>,
    env: Env,
    dirty: bool,
    /// On PostgreSQL, where replicas share the store: whether this replica leads the
    /// experiment, and what it sends the leader when it does not.
    shared: Option<Shared>,
    /// The saved status text this replica's status last matched (it saved it, or, as a
    /// follower, applied it): a status still saved as that is not applied again, so
    /// a leader that takes its lock back keeps its newer status in memory.
    synced: Option<String>,
}

/// One experiment across replicas. One replica leads it: the one holding the
/// experiment's advisory lock. The leader alone counts, decides, applies commands and
/// saves the status. The others (followers) send it their enrolled requests' outcomes,
/// feedback and budget hits through the store (`experiment_inbox`), every tick. They
/// queue admin commands for it as the CLI does, and read the status it saves, so that
/// their request path follows its weight and state. When the leader goes (its lock with
/// its connection), the next follower to take the lock resumes from the saved status.
struct Shared {
    /// Some while this replica leads: the connection holding the lock.
    lease: Option<sqlx::PgConnection>,
    /// A follower's items for the leader, sent at the next tick.
    outbox: Vec<Forward>,
    /// The candidate cost of the outcomes this replica sent the leader, and what it
    /// last took the other replicas to have spent (the saved spend less that).
    sent_cost: u64,
    others: u64,
    /// This replica's id in what it sends.
    me: u64,
}

/// What a follower sends the leader.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Forward {
    /// `from`: the sending replica's id (a follower that becomes leader finds its own
    /// items, whose cost is already in its spend).
    Outcome {
        from: u64,
        outcome: Outcome,
    },
    Feedback {
        arm: Arm,
        p: f64,
        score: f64,
    },
    BudgetHit,
}

/// Most items a follower holds for the leader; past this (the store failing), the
/// oldest go.
const OUTBOX_MAX: usize = 50_000;

impl Controller {
    async fn run(&mut self, mut rx: tokio::sync::mpsc::UnboundedReceiver<Msg>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        // The status (which can hold many sticky units' marks) is saved every
        // SAVE_EVERY ticks when it changed, and at once on decisions and at shutdown.
        let mut ticks: u32 = 0;
        let shutdown = self.env.shutdown.clone();
        self.lead_or_follow().await;
        if self.leads() {
            // Commands queued by the CLI while no gateway ran.
            self.poll_commands().await;
            self.save().await;
        }
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(m) => self.handle(m).await,
                    None => break,
                },
                _ = tick.tick() => {
                    if self.rt.strong_count() == 0 {
                        break;
                    }
                    self.lead_or_follow().await;
                    if self.leads() {
                        self.take_inbox().await;
                        self.poll_commands().await;
                        self.evaluate().await;
                        ticks = ticks.wrapping_add(1);
                        if self.dirty && ticks.is_multiple_of(SAVE_EVERY) {
                            self.save().await;
                        }
                    }
                }
                () = shutdown.cancelled() => {
                    while let Ok(m) = rx.try_recv() {
                        self.handle(m).await;
                    }
                    break;
                }
            }
        }
        if self.leads() {
            self.save().await;
        } else {
            self.send_outbox().await;
        }
    }

    /// Leads unless this is a follower on PostgreSQL.
    fn leads(&self) -> bool {
        self.shared.as_ref().is_none_or(|s| s.lease.is_some())
    }

    /// On PostgreSQL, each tick: a leader checks that it still holds the lock (a lost
    /// connection lost it, and another replica may lead now); a follower sends its
    /// items, tries to take the lead, and otherwise follows the saved status.
    async fn lead_or_follow(&mut self) {
        let Some(shared) = self.shared.as_mut() else {
            return;
        };
        if let Some(conn) = shared.lease.as_mut() {
            if sqlx::Connection::ping(conn).await.is_ok() {
                return;
            }
            tracing::warn!(experiment = %self.spec.name,
                "the experiment's lock was lost with its connection: following until this replica leads again");
            shared.lease = None;
        }
        self.send_outbox().await;
        let key = format!("experiment {} {}", self.spec.name, self.spec.hash);
        match self.env.store.try_lock(&key).await {
            Ok(Some(conn)) => {
                // Where the last leader stopped: its saved status (unless that is the one
                // this replica's status matches: it led, lost the lock for a moment and
                // took it back, and what it holds in memory is newer).
                self.follow().await;
                if let Some(shared) = self.shared.as_mut() {
                    shared.lease = Some(conn);
                }
                tracing::info!(experiment = %self.spec.name, "this replica leads the experiment");
                self.publish_runtime();
                self.dirty = true;
                self.save().await;
            }
            Ok(None) => self.follow().await,
            Err(e) => {
                tracing::warn!(experiment = %self.spec.name, error = %e, "taking the experiment's lock failed");
                self.follow().await;
            }
        }
    }

    /// Applies the status the leader saved (weight, state, spend), unless it is the one
    /// this replica's status already matches.
    async fn follow(&mut self) {
        let saved = match self.env.store.experiment_state(&self.spec.name).await {
            Ok(Some((hash, text))) if hash == self.spec.hash => text,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(experiment = %self.spec.name, error = %e, "reading the experiment state failed");
                return;
            }
        };
        if self.synced.as_deref() == Some(saved.as_str()) {
            return;
        }
        match serde_json::from_str::<Status>(&saved) {
            Ok(st) => self.st = st,
            Err(e) => {
                tracing::warn!(experiment = %self.spec.name, error = %e, "the saved experiment state does not parse");
                return;
            }
        }
        self.synced = Some(saved);
        self.publish_runtime();
        if let (Some(rt), Some(shared)) = (self.rt.upgrade(), self.shared.as_mut()) {
            // The leader's figure counts every replica's spend, this one's included
            // (through the outcomes it sent). What the others spent is added to this
            // replica's own figure, which keeps its reservations in flight.
            let others = self.st.spent_micros.saturating_sub(shared.sent_cost);
            rt.shift_spent(others as i64 - shared.others as i64);
            shared.others = others;
        }
    }

    fn publish_runtime(&self) {
        if let Some(rt) = self.rt.upgrade() {
            rt.publish(self.st.state, self.st.weight_ppm(&self.spec));
        }
    }

    /// A follower's items go to the leader (kept for the next tick if the store fails).
    async fn send_outbox(&mut self) {
        let Some(shared) = self.shared.as_mut() else {
            return;
        };
        if let Some(rt) = self.rt.upgrade()
            && rt.take_budget_hit()
        {
            shared.outbox.push(Forward::BudgetHit);
        }
        if shared.outbox.is_empty() {
            return;
        }
        let text = match serde_json::to_string(&shared.outbox) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "serialising experiment outcomes failed");
                shared.outbox.clear();
                return;
            }
        };
        match self
            .env
            .store
            .add_experiment_inbox(&self.spec.name, &self.spec.hash, &text)
            .await
        {
            Ok(()) => shared.outbox.clear(),
            Err(e) => {
                tracing::warn!(experiment = %self.spec.name, error = %e, "sending outcomes to the experiment's leader failed; kept for the next try");
                let over = shared.outbox.len().saturating_sub(OUTBOX_MAX);
                shared.outbox.drain(..over);
            }
        }
    }

    /// The leader: what followers sent, counted as its own requests' are.
    async fn take_inbox(&mut self) {
        let Some(conn) = self.shared.as_mut().and_then(|s| s.lease.as_mut()) else {
            return;
        };
        let batches = match crate::store::Store::take_experiment_inbox_on(
            conn,
            &self.spec.name,
            &self.spec.hash,
        )
        .await
        {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(experiment = %self.spec.name, error = %e, "reading followers' outcomes failed");
                return;
            }
        };
        for text in batches {
            let Ok(items) = serde_json::from_str::<Vec<Forward>>(&text) else {
                tracing::warn!(experiment = %self.spec.name, "a follower's batch does not parse; dropped");
                continue;
            };
            for item in items {
                match item {
                    Forward::Outcome { from, outcome: o } => {
                        let own = self.shared.as_ref().is_some_and(|s| s.me == from);
                        if o.arm == Arm::Candidate
                            && !own
                            && let Some(rt) = self.rt.upgrade()
                        {
                            // Their candidate spend counts against the experiment's budget.
                            rt.settle(0, o.cost_micros);
                        }
                        self.count(o);
                    }
                    Forward::Feedback { arm, p, score } => {
                        if self.st.active() {
                            self.st.feedback(arm, p, score);
                            self.dirty = true;
                        }
                    }
                    Forward::BudgetHit => {
                        if let Some(rt) = self.rt.upgrade() {
                            rt.hit_budget();
                        }
                    }
                }
            }
        }
    }

    /// Counts an outcome (the breaker's window too).
    fn count(&mut self, o: Outcome) {
        if !self.st.active() {
            return;
        }
        if o.arm == Arm::Candidate
            && let Some((_, window)) = self.spec.breaker
        {
            self.st.breaker.push_back(o.error);
            while self.st.breaker.len() > window {
                self.st.breaker.pop_front();
            }
        }
        self.st.observe(&o);
        self.dirty = true;
    }

    async fn handle(&mut self, msg: Msg) {
        if !self.leads() {
            return self.forward(msg);
        }
        match msg {
            Msg::Outcome(o) => {
                if !self.st.active() {
                    return;
                }
                self.count(o);
                self.evaluate().await;
            }
            Msg::Feedback { arm, p, score } => {
                if self.st.active() {
                    self.st.feedback(arm, p, score);
                    self.dirty = true;
                    self.evaluate().await;
                }
            }
            Msg::Command {
                action,
                actor,
                reply,
            } => {
                let r = self.apply(action, &actor).await;
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
            Msg::View(reply) => {
                let _ = reply.send(self.view());
            }
        }
    }

    /// A follower: outcomes and feedback go to the leader at the next tick; a command
    /// is queued for it (as the CLI queues one) and answered once it has applied it.
    fn forward(&mut self, msg: Msg) {
        let Some(shared) = self.shared.as_mut() else {
            return;
        };
        match msg {
            Msg::Outcome(o) => {
                if self.st.active() {
                    if o.arm == Arm::Candidate {
                        shared.sent_cost += o.cost_micros;
                    }
                    shared.outbox.push(Forward::Outcome {
                        from: shared.me,
                        outcome: o,
                    });
                }
            }
            Msg::Feedback { arm, p, score } => {
                if self.st.active() {
                    shared.outbox.push(Forward::Feedback { arm, p, score });
                }
            }
            Msg::Command {
                action,
                actor,
                reply,
            } => {
                let (store, name) = (self.env.store.clone(), self.spec.name.clone());
                self.env.tasks.spawn(async move {
                    let r = queue_command(&store, &name, action, &actor).await;
                    if let Some(reply) = reply {
                        let _ = reply.send(r);
                    }
                });
            }
            Msg::View(reply) => {
                let _ = reply.send(self.view());
            }
        }
    }

    fn view(&self) -> Value {
        let dropped = self.rt.upgrade().map_or(0, |rt| {
            rt.shadow_dropped.load(std::sync::atomic::Ordering::Relaxed)
        });
        view(&self.spec, &self.st, dropped)
    }

    async fn apply(&mut self, action: Action, actor: &str) -> Result<Value, String> {
        self.sync_spend();
        let d = command(&self.spec, &mut self.st, action, actor, now_ms())?;
        self.publish(d, actor).await;
        Ok(self.view())
    }

    fn sync_spend(&mut self) {
        if let Some(rt) = self.rt.upgrade() {
            self.st.spent_micros = rt.spent_micros();
        }
    }

    /// Runs [`step`]; a decision is published and written.
    async fn evaluate(&mut self) {
        self.sync_spend();
        let hit = self.rt.upgrade().is_some_and(|rt| rt.take_budget_hit());
        if let Some(d) = step(&self.spec, &mut self.st, now_ms(), hit) {
            self.publish(d, "controller").await;
        }
    }

    /// The new weight reaches the request path first; then the decision is written to
    /// the audit trail and the timeline, and the status saved.
    async fn publish(&mut self, d: Decision, actor: &str) {
        if let Some(rt) = self.rt.upgrade() {
            rt.publish(self.st.state, self.st.weight_ppm(&self.spec));
        }
        tracing::info!(experiment = %self.spec.name, action = %d.action, reason = %d.reason,
            state = self.st.state.as_str(), "experiment decision");
        let tenant = match self.spec.tenants.as_deref() {
            Some([one]) => Some(one.as_str()),
            _ => None,
        };
        self.env.recorder.event(
            "experiment_decision",
            tenant,
            json!({
                "experiment": self.spec.name,
                "action": d.action,
                "reason": d.reason,
                "actor": actor,
                "state": self.st.state.as_str(),
                "evidence": d.evidence,
            }),
        );
        self.dirty = true;
        self.save().await;
    }

    async fn save(&mut self) {
        self.sync_spend();
        let text = match serde_json::to_string(&self.st) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "serialising the experiment state failed");
                return;
            }
        };
        let follower = self.shared.as_ref().is_some_and(|s| s.lease.is_none());
        if follower {
            return; // a follower saves nothing: the leader does
        }
        let saved = match self.shared.as_mut().and_then(|s| s.lease.as_mut()) {
            Some(conn) => {
                crate::store::Store::save_experiment_state_on(
                    conn,
                    &self.spec.name,
                    &self.spec.hash,
                    &text,
                )
                .await
            }
            None => {
                self.env
                    .store
                    .save_experiment_state(&self.spec.name, &self.spec.hash, &text)
                    .await
            }
        };
        match saved {
            Ok(()) => {
                self.dirty = false;
                self.synced = Some(text);
            }
            Err(e) => tracing::error!(experiment = %self.spec.name, error = %e,
                "saving the experiment state failed"),
        }
    }

    /// Applies actions queued by `asc experiments promote|rollback|pause|resume`.
    async fn poll_commands(&mut self) {
        let pending = match self
            .env
            .store
            .pending_experiment_commands(&self.spec.name)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "reading experiment commands failed");
                return;
            }
        };
        for (id, action, actor) in pending {
            match self.env.store.claim_experiment_command(id).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "taking an experiment command failed");
                    return;
                }
            }
            let result = match Action::parse(&action) {
                Some(a) => self.apply(a, &actor).await,
                None => Err(format!("unknown action `{action}`")),
            };
            let text = match result {
                Ok(v) => json!({"ok": true, "state": v["state"], "view": v}),
                Err(e) => json!({"ok": false, "error": e}),
            };
            if let Err(e) = self
                .env
                .store
                .finish_experiment_command(id, &text.to_string())
                .await
            {
                tracing::warn!(error = %e, "finishing an experiment command failed");
            }
        }
    }
}

/// Queues `action` for the replica that leads `name` and waits (up to 10 s) for its
/// result: the status view it answered with, or its refusal.
async fn queue_command(
    store: &crate::store::Store,
    name: &str,
    action: Action,
    actor: &str,
) -> Result<Value, String> {
    let id = store
        .add_experiment_command(name, action.as_str(), actor)
        .await
        .map_err(|e| format!("queueing the command failed: {e}"))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok(Some(result)) = store.experiment_command_result(id).await else {
            continue;
        };
        let v: Value = serde_json::from_str(&result).unwrap_or(Value::Null);
        if v["ok"] == true {
            return Ok(v["view"].clone());
        }
        return Err(v["error"].as_str().unwrap_or("refused").to_owned());
    }
    Err(
        "the replica leading the experiment did not apply the command within 10 s; it stays queued"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(experiment: &str) -> Spec {
        let yaml = format!(
            r#"
providers:
  - {{name: base, kind: mock, flavor: openai, region: eu}}
  - {{name: cand, kind: mock, flavor: mistral, region: eu}}
models:
  - name: chat
    targets: [{{provider: base, model: gpt-4o-mini}}]
tenants:
  - {{name: t, allowed_models: ["*"]}}
experiments:
  - name: e
    model: chat
    candidate: {{provider: cand, model: big}}
{experiment}
"#
        );
        let cfg = crate::config::load_str(&yaml, &|_| None).unwrap();
        Spec::compile(&cfg.raw.experiments[0], &cfg).unwrap()
    }

    fn outcome(arm: Arm, p: f64, error: bool) -> Outcome {
        Outcome {
            arm,
            p,
            error,
            latency_ms: 10.0,
            ttft_ms: None,
            cost_micros: 5,
            request_id: format!("r-{error}"),
            unit: None,
        }
    }

    /// Feeds alternating arms (p = 0.5) until `step` decides; the candidate fails every
    /// `every`th request.
    fn run(spec: &Spec, st: &mut Status, every: u64, max: u64) -> Option<Decision> {
        for i in 0..max {
            let arm = if i % 2 == 0 {
                Arm::Candidate
            } else {
                Arm::Baseline
            };
            let error = arm == Arm::Candidate && (i / 2) % every == 0;
            let o = outcome(arm, 0.5, error);
            if arm == Arm::Candidate
                && let Some((_, w)) = spec.breaker
            {
                st.breaker.push_back(error);
                while st.breaker.len() > w {
                    st.breaker.pop_front();
                }
            }
            st.observe(&o);
            if let Some(d) = step(spec, st, 0, false) {
                return Some(d);
            }
        }
        None
    }

    #[test]
    fn a_breached_guard_rolls_back_and_its_evidence_reproduces_the_decision() {
        let spec = spec(
            "    stages: [{weight: 50, min_requests: 1000000}]
    guards: {error_rate: {max_ratio: 1.25}, cost_per_request: {max_ratio: 1.5}}",
        );
        let mut st = Status::fresh(&spec, 0);
        let d = run(&spec, &mut st, 5, 2000).expect("no decision");
        assert_eq!(d.action, "rollback");
        assert_eq!(st.state, State::RolledBack);
        assert_eq!(st.weight_ppm(&spec), 0);
        assert_eq!(d.evidence["rule"], "abort:error_rate:cumulative");
        // Replay: the stored test states and alphas give the same verdicts.
        let tests: Tests =
            serde_json::from_value(d.evidence["tests"]["cumulative"].clone()).unwrap();
        let a = Alphas {
            abort: d.evidence["alphas"]["abort"].as_f64().unwrap(),
            promote: d.evidence["alphas"]["promote"].as_f64().unwrap(),
        };
        assert_eq!(a.abort, 0.025, "alpha split over two guards");
        let v = verdicts(&spec, &tests, a);
        assert_eq!(v[0], ("error_rate", Verdict::Fail));
        assert_ne!(v[1].1, Verdict::Fail, "equal costs are no breach");
        // The status survives a round trip through the store's text exactly.
        let text = serde_json::to_string(&st).unwrap();
        let back: Status = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), text);
    }

    #[test]
    fn a_sticky_unit_counts_one_bad_event_per_metric_and_stage() {
        let spec = spec(
            "    stages: [{weight: 50, min_requests: 1000000}]
    guards: {error_rate: {max_ratio: 1.25}}",
        );
        let mut st = Status::fresh(&spec, 0);
        // One heavy user failing on the candidate again and again is one event.
        for _ in 0..500 {
            st.observe(&Outcome {
                unit: Some(7),
                ..outcome(Arm::Candidate, 0.5, true)
            });
            st.observe(&Outcome {
                unit: Some(8),
                ..outcome(Arm::Baseline, 0.5, false)
            });
        }
        let c = st.cumulative.error_rate.as_ref().unwrap().counts();
        assert_eq!((c.candidate_n, c.candidate_events), (500, 1));
        assert!(
            step(&spec, &mut st, 0, false).is_none(),
            "one unit proves nothing"
        );
        assert_eq!(
            st.candidate.errors, 500,
            "the arm's own counts keep every error"
        );
        // Request units each count.
        let mut st = Status::fresh(&spec, 0);
        assert!(run(&spec, &mut st, 1, 400).is_some());
    }

    /// A/A through the controller: identical arms, every guard kind at once, the weight
    /// ramping through the stages, `step` after every request. False rollbacks stay
    /// within `alpha` (the Bonferroni split over guards keeps the family within it).
    #[test]
    fn a_a_experiments_through_the_controller_rarely_roll_back() {
        use rand::{Rng, SeedableRng};
        let spec = spec(
            "    stages:
      - {weight: 5, min_requests: 300}
      - {weight: 25, min_requests: 300}
      - {weight: 50, min_requests: 1000000}
    guards: {error_rate: {max_ratio: 1.25, max_increase: 0.01}, latency_p95: {max_ratio: 1.25}, cost_per_request: {max_ratio: 1.5}}
    alpha: 0.05",
        );
        let runs = 300;
        let mut rollbacks = 0;
        for seed in 0..runs {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut st = Status::fresh(&spec, 0);
            for _ in 0..1500 {
                let p = f64::from(st.weight_ppm(&spec)) / 1e6;
                let arm = if rng.random::<f64>() < p {
                    Arm::Candidate
                } else {
                    Arm::Baseline
                };
                let o = Outcome {
                    arm,
                    p,
                    error: rng.random::<f64>() < 0.05,
                    latency_ms: 100.0 * (1.0 + rng.random::<f64>()).powi(3),
                    ttft_ms: None,
                    cost_micros: rng.random_range(50..150),
                    request_id: String::new(),
                    unit: None,
                };
                st.observe(&o);
                if let Some(d) = step(&spec, &mut st, 0, false)
                    && d.action == "rollback"
                {
                    rollbacks += 1;
                    break;
                }
            }
        }
        let rate = f64::from(rollbacks) / runs as f64;
        eprintln!("controller A/A: {rollbacks} false rollbacks in {runs} runs");
        let se = (0.05_f64 * 0.95 / runs as f64).sqrt();
        assert!(rate <= 0.05 + 3.0 * se, "false rollback rate {rate}");
    }

    #[test]
    fn the_breaker_rolls_back_without_statistics() {
        let spec = spec(
            "    stages: [{weight: 50, min_requests: 1000000}]
    guards: {error_rate: {max_ratio: 100}}
    breaker: {max_error_rate: 0.2, window: 10}",
        );
        let mut st = Status::fresh(&spec, 0);
        // Every third candidate request fails: 4 of 10 > 20%.
        let d = run(&spec, &mut st, 3, 200).expect("no decision");
        assert_eq!(d.action, "rollback");
        assert!(d.reason.starts_with("breaker"), "{}", d.reason);
        assert_eq!(d.evidence["rule"], "breaker");
        assert!(
            st.candidate.requests <= 10,
            "rolled back at the first full window"
        );
    }

    #[test]
    fn stages_advance_on_their_gates_and_an_inconclusive_stage_pauses() {
        let spec = spec(
            "    stages:
      - {weight: 10, min_requests: 20, min_duration_s: 0}
      - {weight: 30, min_requests: 20, gate: noninferior}
    max_stage_duration_s: 60
    guards: {error_rate: {max_ratio: 2, max_increase: 0.2}, feedback: {max_decrease: 0.1}}
    on_success: await_approval",
        );
        let mut st = Status::fresh(&spec, 0);
        let d = run(&spec, &mut st, u64::MAX, 100).expect("abort_only stage advances");
        assert_eq!(
            (d.action.as_str(), st.stage, st.weight_ppm(&spec)),
            ("advance", 1, 300_000)
        );
        assert_eq!(st.stage_requests, 0);
        // No feedback: the noninferior gate cannot pass however many requests come...
        assert!(run(&spec, &mut st, u64::MAX, 2000).is_none());
        // ...and once the stage has run too long, on_inconclusive (pause) applies.
        let d = step(&spec, &mut st, 61_000, false).expect("inconclusive");
        assert_eq!((d.action.as_str(), st.state), ("pause", State::Paused));
        assert!(d.reason.contains("feedback"), "{}", d.reason);
        // Resumed, with good feedback on both arms the gate passes: awaiting approval.
        let c = command(&spec, &mut st, Action::Resume, "ops", 61_000).unwrap();
        assert_eq!((c.action.as_str(), st.state), ("resume", State::Running));
        for i in 0..6000 {
            let arm = if i % 2 == 0 {
                Arm::Candidate
            } else {
                Arm::Baseline
            };
            st.feedback(arm, 0.5, 0.9);
        }
        let d = step(&spec, &mut st, 62_000, false).expect("gate passes");
        assert_eq!(st.state, State::AwaitingApproval, "{}", d.reason);
        let p = command(&spec, &mut st, Action::Promote, "ops", 62_000).unwrap();
        assert_eq!(
            (p.action.as_str(), st.state, st.weight_ppm(&spec)),
            ("promote", State::Promoted, 1_000_000)
        );
        assert!(
            command(&spec, &mut st, Action::Rollback, "ops", 0).is_err(),
            "terminal"
        );
    }

    #[test]
    fn the_budget_pauses_and_a_shadow_never_promotes() {
        let spec_b = spec(
            "    stages: [{weight: 50}]
    budget_usd: 1",
        );
        let mut st = Status::fresh(&spec_b, 0);
        st.spent_micros = 1_000_000;
        let d = step(&spec_b, &mut st, 0, false).unwrap();
        assert_eq!(
            (d.action.as_str(), st.state, st.weight_ppm(&spec_b)),
            ("pause", State::Paused, 0)
        );
        let shadow = spec(
            "    mode: shadow
    stages: [{weight: 50, gate: noninferior}]",
        );
        let mut st = Status::fresh(&shadow, 0);
        assert_eq!(st.state, State::Shadow);
        assert!(
            run(&shadow, &mut st, u64::MAX, 500).is_none(),
            "a shadow gate never passes"
        );
        assert!(command(&shadow, &mut st, Action::Promote, "ops", 0).is_err());
    }
}
