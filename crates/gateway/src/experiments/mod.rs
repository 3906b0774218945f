//! Canary and shadow experiments (the config's `experiments`, design in
//! `shared/design/canary.md`): on the request path, eligibility and sticky assignment
//! ([`assign`]); off it, one controller task per experiment ([`controller`]) that reads
//! every enrolled request's outcome, runs the sequential tests of [`stats`], and
//! advances, pauses, rolls back or promotes, writing each decision with its evidence to
//! the audit trail.
//!
//! The request path reads only atomics of the experiment's [`Runtime`] (its weight and
//! state) and hashes the unit once: no lock, no allocation of config.

pub mod controller;
pub mod stats;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use http::HeaderMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, mpsc};

use crate::config::raw::ExperimentRaw;
use crate::config::{Config, Target, Tenant};

/// Most shadow copies in flight per experiment; more are dropped and counted.
pub const SHADOW_CONCURRENCY: usize = 32;

/// The two arms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    Baseline,
    Candidate,
}

impl Arm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Candidate => "candidate",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "baseline" => Some(Self::Baseline),
            "candidate" => Some(Self::Candidate),
            _ => None,
        }
    }
}

/// An experiment's life (contract section 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Shadow,
    Running,
    Paused,
    AwaitingApproval,
    Promoted,
    RolledBack,
    Completed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shadow => "shadow",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::AwaitingApproval => "awaiting_approval",
            Self::Promoted => "promoted",
            Self::RolledBack => "rolled_back",
            Self::Completed => "completed",
        }
    }

    fn to_u8(self) -> u8 {
        self as u8
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Shadow,
            1 => Self::Running,
            2 => Self::Paused,
            3 => Self::AwaitingApproval,
            4 => Self::Promoted,
            5 => Self::RolledBack,
            _ => Self::Completed,
        }
    }

    /// Rolled back and promoted are final for a given experiment config.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::RolledBack | Self::Promoted)
    }
}

/// Where the unit of assignment comes from (`sticky_by`).
#[derive(Debug, Clone)]
pub enum UnitSource {
    Header(http::HeaderName),
    User,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    AbortOnly,
    Noninferior,
}

#[derive(Debug, Clone)]
pub struct Stage {
    /// Parts per million of eligible units sent to the candidate (shadow: copied).
    pub weight_ppm: u32,
    pub min_requests: u64,
    pub min_duration_s: u64,
    pub gate: Gate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSuccess {
    Promote,
    AwaitApproval,
    Hold,
}

/// The guards' margins: how much worse than the baseline the candidate may be.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Guards {
    /// (max_ratio, max_increase) on the error rate.
    pub error_rate: Option<(f64, Option<f64>)>,
    /// max_ratio on the share of requests slower than the baseline's p95.
    pub latency_p95: Option<f64>,
    pub ttft_p95: Option<f64>,
    /// max_ratio on the mean cost per request.
    pub cost_per_request: Option<f64>,
    /// max_decrease of the mean feedback score.
    pub feedback: Option<f64>,
}

impl Guards {
    /// How many guards are judged (each is one abort test: the false-rollback budget
    /// `alpha` is split among them).
    pub fn count(&self) -> usize {
        usize::from(self.error_rate.is_some())
            + usize::from(self.latency_p95.is_some())
            + usize::from(self.ttft_p95.is_some())
            + usize::from(self.cost_per_request.is_some())
            + usize::from(self.feedback.is_some())
    }
}

/// One experiment of the config, compiled.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    /// The model (route) clients call.
    pub model: String,
    /// None: every tenant that may use the model and the candidate.
    pub tenants: Option<Vec<String>>,
    pub shadow: bool,
    /// The candidate as a target of this generation.
    pub candidate: Target,
    pub candidate_region: String,
    pub sticky_by: Vec<UnitSource>,
    pub stages: Vec<Stage>,
    pub max_stage_duration_s: u64,
    pub rollback_if_inconclusive: bool,
    pub guards: Guards,
    pub alpha: f64,
    /// (max_error_rate, window) of the hard breaker.
    pub breaker: Option<(f64, usize)>,
    pub budget_micros: Option<u64>,
    pub on_success: OnSuccess,
    /// SHA-256 of the experiment as written: its state belongs to this version.
    pub hash: String,
}

fn percent_to_ppm(w: f64) -> u32 {
    (w.clamp(0.0, 100.0) * 10_000.0).round() as u32
}

impl Spec {
    /// Compiles a validated experiment; None if its candidate provider does not exist.
    pub fn compile(raw: &ExperimentRaw, config: &Config) -> Option<Self> {
        let provider = config
            .providers
            .iter()
            .position(|p| p.name == raw.candidate.provider)?;
        let hash = {
            let text = serde_json::to_string(raw).unwrap_or_default();
            crate::config::hex(&Sha256::digest(text.as_bytes()))
        };
        let guards = match &raw.guards {
            None => Guards {
                error_rate: Some((1.25, Some(0.01))),
                ..Guards::default()
            },
            Some(g) => Guards {
                error_rate: g
                    .error_rate
                    .as_ref()
                    .map(|e| (e.max_ratio.unwrap_or(1.25).max(1.0), e.max_increase)),
                latency_p95: g
                    .latency_p95
                    .as_ref()
                    .map(|e| e.max_ratio.unwrap_or(1.25).max(1.0)),
                ttft_p95: g
                    .ttft_p95
                    .as_ref()
                    .map(|e| e.max_ratio.unwrap_or(1.25).max(1.0)),
                cost_per_request: g
                    .cost_per_request
                    .as_ref()
                    .map(|e| e.max_ratio.unwrap_or(1.5).max(1.0)),
                feedback: g
                    .feedback
                    .as_ref()
                    .map(|e| e.max_decrease.unwrap_or(0.05).max(0.0)),
            },
        };
        let stages = raw
            .stages
            .iter()
            .map(|s| Stage {
                weight_ppm: percent_to_ppm(s.weight),
                min_requests: s.min_requests.unwrap_or(0),
                min_duration_s: s.min_duration_s.unwrap_or(0),
                gate: match s.gate.as_deref() {
                    Some("noninferior") => Gate::Noninferior,
                    _ => Gate::AbortOnly,
                },
            })
            .collect();
        let sticky_by = raw
            .sticky_by
            .iter()
            .filter_map(|s| match s.strip_prefix("header:") {
                Some(h) => http::HeaderName::try_from(h).ok().map(UnitSource::Header),
                None => (s == "user").then_some(UnitSource::User),
            })
            .collect();
        Some(Self {
            name: raw.name.clone(),
            model: raw.model.clone(),
            tenants: raw.tenants.clone(),
            shadow: raw.mode.as_deref() == Some("shadow"),
            candidate: Target {
                key: format!("{}/{}", raw.candidate.provider, raw.candidate.model),
                provider,
                model: raw.candidate.model.clone(),
                weight: 1.0,
            },
            candidate_region: config.providers[provider].region.clone(),
            sticky_by,
            stages,
            max_stage_duration_s: raw.max_stage_duration_s.unwrap_or(86_400),
            rollback_if_inconclusive: raw.on_inconclusive.as_deref() == Some("rollback"),
            guards,
            alpha: raw.alpha.unwrap_or(0.05),
            breaker: raw
                .breaker
                .as_ref()
                .map(|b| (b.max_error_rate, b.window.max(1) as usize)),
            budget_micros: raw
                .budget_usd
                .map(|usd| (usd.max(0.0) * 1e6).round() as u64),
            on_success: match raw.on_success.as_deref() {
                Some("await_approval") => OnSuccess::AwaitApproval,
                Some("hold") => OnSuccess::Hold,
                _ => OnSuccess::Promote,
            },
            hash,
        })
    }

    /// The tenant is enrolled: in scope, and it may use the candidate (model allow-list
    /// and region), so an experiment never moves a prompt out of its regions. The same
    /// for both arms, decided before assignment.
    pub fn eligible(&self, tenant: &Tenant) -> bool {
        self.tenants
            .as_ref()
            .is_none_or(|ts| ts.contains(&tenant.name))
            && tenant.may_use(&self.candidate.model)
            && tenant.region_allowed(&self.candidate_region)
    }

    /// Tenants in scope that are not enrolled because they may not use the candidate
    /// (what `check-config` warns about).
    pub fn ineligible_tenants<'a>(&self, tenants: &'a [Tenant]) -> Vec<&'a str> {
        tenants
            .iter()
            .filter(|t| {
                self.tenants.as_ref().is_none_or(|ts| ts.contains(&t.name))
                    && t.may_use(&self.model)
                    && !self.eligible(t)
            })
            .map(|t| t.name.as_str())
            .collect()
    }
}

/// The bucket of a unit: SHA-256 over the length-prefixed salt, tenant and unit, first
/// eight bytes. Length prefixes keep `("ab", "c")` and `("a", "bc")` apart.
pub fn bucket(salt: &str, tenant: &str, unit: &str) -> u64 {
    let mut h = Sha256::new();
    for part in [salt, tenant, unit] {
        h.update((part.len() as u32).to_be_bytes());
        h.update(part.as_bytes());
    }
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

/// The candidate holds buckets `[0, w)`: raising the weight only moves baseline units to
/// the candidate, lowering it only moves them back.
pub fn arm_of(bucket: u64, weight_ppm: u32) -> Arm {
    let threshold = (u128::from(weight_ppm.min(1_000_000)) << 64) / 1_000_000;
    if u128::from(bucket) < threshold {
        Arm::Candidate
    } else {
        Arm::Baseline
    }
}

/// What the controller learns about an enrolled request.
#[derive(Debug)]
pub enum Msg {
    /// A finished enrolled request (or a shadow copy).
    Outcome(Outcome),
    /// A feedback score for an enrolled request.
    Feedback { arm: Arm, p: f64, score: f64 },
    /// A manual action (admin API or CLI).
    Command {
        action: controller::Action,
        actor: String,
        reply: Option<tokio::sync::oneshot::Sender<Result<serde_json::Value, String>>>,
    },
    /// The status view, for the admin API.
    View(tokio::sync::oneshot::Sender<serde_json::Value>),
}

/// One enrolled request's outcome, by intention to treat: a candidate attempt that
/// failed counts against the candidate even when the baseline rescued the request, and
/// its wasted time is in the latency.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub arm: Arm,
    /// The probability this request's unit had of being assigned the candidate.
    pub p: f64,
    pub error: bool,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    pub cost_micros: u64,
    pub request_id: String,
    /// The sticky unit's bucket (None: the request is its own unit).
    pub unit: Option<u64>,
}

/// An experiment's live part, shared by the request path (atomics only) and its
/// controller; kept across reloads while the experiment's config is unchanged.
#[derive(Debug)]
pub struct Runtime {
    pub name: String,
    pub hash: String,
    /// The weight the request path uses now (0 when paused or rolled back).
    weight_ppm: AtomicU32,
    state: AtomicU8,
    /// The candidate's spend (shadow copies included) plus what in-flight candidate
    /// requests have reserved, in micro-dollars.
    spend_micros: AtomicU64,
    /// With `storage.redis`: the experiment's spend as the replicas' shared ledger last
    /// said it (never ahead of it), which the ledger starts from should Redis lose it.
    ledger_seen: AtomicU64,
    /// The scope of the experiment's ledger in the shared counters (`exp:NAME`; its
    /// period is the version's hash: a changed experiment starts a new budget, as it
    /// starts new statistics). Made once, not per request.
    ledger_scope: String,
    /// Set when a reservation did not fit: the controller pauses the experiment.
    budget_hit: std::sync::atomic::AtomicBool,
    pub shadow_slots: Arc<Semaphore>,
    pub shadow_dropped: AtomicU64,
    tx: mpsc::UnboundedSender<Msg>,
}

impl Runtime {
    pub fn weight_ppm(&self) -> u32 {
        self.weight_ppm.load(Ordering::Acquire)
    }

    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    pub(crate) fn publish(&self, state: State, weight_ppm: u32) {
        self.state.store(state.to_u8(), Ordering::Release);
        self.weight_ppm.store(weight_ppm, Ordering::Release);
    }

    pub fn send(&self, msg: Msg) {
        let _ = self.tx.send(msg);
    }

    /// Reserves `micros` of the experiment budget; false (and the controller is told to
    /// pause) when it would pass `limit`.
    pub fn reserve(&self, micros: u64, limit: Option<u64>) -> bool {
        let Some(limit) = limit else { return true };
        let ok = self
            .spend_micros
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                let next = s.saturating_add(micros);
                (next <= limit).then_some(next)
            })
            .is_ok();
        if !ok {
            self.budget_hit.store(true, Ordering::Release);
        }
        ok
    }

    /// Replaces a reservation by the real cost.
    pub fn settle(&self, reserved: u64, actual: u64) {
        let _ = self
            .spend_micros
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                Some(s.saturating_sub(reserved).saturating_add(actual))
            });
    }

    pub fn spent_micros(&self) -> u64 {
        self.spend_micros.load(Ordering::Acquire)
    }

    pub(crate) fn set_spent(&self, micros: u64) {
        self.spend_micros.store(micros, Ordering::Release);
    }

    /// Adds `delta` (may be negative) to the spend: a follower's share of what the other
    /// replicas spent, as the leader's saved figure says.
    pub(crate) fn shift_spent(&self, delta: i64) {
        let _ = self
            .spend_micros
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                Some(s.saturating_add_signed(delta))
            });
    }

    /// A follower's reservation did not fit: the controller pauses as for its own.
    pub(crate) fn hit_budget(&self) {
        self.budget_hit.store(true, Ordering::Release);
    }

    pub(crate) fn take_budget_hit(&self) -> bool {
        self.budget_hit.swap(false, Ordering::AcqRel)
    }
}

/// Every experiment's runtime by name; touched at start and reload only.
#[derive(Default)]
pub struct Registry {
    runtimes: std::sync::Mutex<HashMap<String, Arc<Runtime>>>,
}

/// A compiled experiment with its runtime.
pub type Entry = (Arc<Spec>, Arc<Runtime>);

/// What a generation holds: each compiled experiment with its runtime, by model name.
#[derive(Default)]
pub struct Active {
    pub by_model: HashMap<String, Vec<Entry>>,
}

impl Active {
    pub fn find(&self, name: &str) -> Option<&Entry> {
        self.by_model
            .values()
            .flatten()
            .find(|(s, _)| s.name == name)
    }

    pub fn all(&self) -> impl Iterator<Item = &Entry> {
        self.by_model.values().flatten()
    }

    /// The candidate target of the `index`th experiment on `model`.
    pub fn candidate(&self, model: &str, index: usize) -> Option<&Target> {
        self.by_model
            .get(model)
            .and_then(|l| l.get(index))
            .map(|(s, _)| &s.candidate)
    }
}

/// What the controllers need from the gateway.
#[derive(Clone)]
pub struct Env {
    pub store: crate::store::Store,
    pub recorder: crate::record::Recorder,
    pub tasks: tokio_util::task::TaskTracker,
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl Registry {
    /// The experiments of `config`: runtimes of unchanged experiments are kept (their
    /// controllers go on), new or changed ones get a fresh runtime and controller, which
    /// resumes from the store if it holds this version's state.
    pub async fn activate(&self, config: &Config, env: &Env) -> Active {
        let mut active = Active::default();
        let mut keep = HashMap::new();
        for raw in &config.raw.experiments {
            let Some(spec) = Spec::compile(raw, config) else {
                continue;
            };
            let spec = Arc::new(spec);
            let existing = crate::limits::lock(&self.runtimes)
                .get(&spec.name)
                .filter(|rt| rt.hash == spec.hash)
                .cloned();
            let rt = match existing {
                Some(rt) => rt,
                None => controller::start(spec.clone(), env).await,
            };
            keep.insert(spec.name.clone(), rt.clone());
            active
                .by_model
                .entry(spec.model.clone())
                .or_default()
                .push((spec, rt));
        }
        // Controllers of experiments no longer in the config stop with their channel.
        *crate::limits::lock(&self.runtimes) = keep;
        active
    }
}

pub(crate) fn runtime(
    name: &str,
    hash: &str,
    state: State,
    weight_ppm: u32,
    tx: mpsc::UnboundedSender<Msg>,
) -> Runtime {
    Runtime {
        name: name.to_owned(),
        hash: hash.to_owned(),
        weight_ppm: AtomicU32::new(weight_ppm),
        state: AtomicU8::new(state.to_u8()),
        spend_micros: AtomicU64::new(0),
        ledger_seen: AtomicU64::new(0),
        ledger_scope: format!("exp:{name}"),
        budget_hit: std::sync::atomic::AtomicBool::new(false),
        shadow_slots: Arc::new(Semaphore::new(SHADOW_CONCURRENCY)),
        shadow_dropped: AtomicU64::new(0),
        tx,
    }
}

/// A request's enrolment.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub spec: Arc<Spec>,
    pub rt: Arc<Runtime>,
    /// The experiment's place in [`Active::by_model`]'s list for the model.
    pub index: usize,
    /// The candidate attempt succeeded (set by the attempts phase).
    pub served: bool,
    pub arm: Arm,
    /// The probability of the candidate arm for this unit (the weight).
    pub p: f64,
    /// A shadow copy goes to the candidate (shadow mode, sampled unit).
    pub shadow: bool,
    /// Micro-dollars reserved from the experiment budget for this request's candidate work.
    pub reserved: u64,
    /// With `storage.redis`: that reservation in the replicas' shared ledger of the
    /// experiment (its id), so that all of them together hold the budget exactly.
    pub ledger: Option<(Arc<crate::limits::Shared>, u64)>,
    /// The unit's bucket when the unit is sticky (a header or the user), None when the
    /// request is its own unit.
    pub unit: Option<u64>,
}

/// Eligibility, then sticky assignment. `None`: the request is not in any experiment.
/// Only experiments that are running (or shadowing) with a weight above zero enrol.
pub fn assign(
    active: &Active,
    model: &str,
    tenant: &Tenant,
    headers: &HeaderMap,
    user: Option<&str>,
    request_id: &str,
) -> Option<Assignment> {
    if active.by_model.is_empty() {
        return None;
    }
    let list = active.by_model.get(model)?;
    for (index, (spec, rt)) in list.iter().enumerate() {
        let state = rt.state();
        let weight = rt.weight_ppm();
        // Paused and rolled back publish weight 0; every other state serves its weight
        // (awaiting approval and hold keep the last stage's, promoted all of it).
        let enrolling = !matches!(state, State::Paused | State::RolledBack);
        if !enrolling || weight == 0 || !spec.eligible(tenant) {
            continue;
        }
        let sticky = spec
            .sticky_by
            .iter()
            .find_map(|s| match s {
                UnitSource::Header(h) => headers.get(h).and_then(|v| v.to_str().ok()),
                UnitSource::User => user,
            })
            .filter(|u| !u.is_empty());
        let b = bucket(&spec.name, &tenant.name, sticky.unwrap_or(request_id));
        let unit = sticky.map(|_| b);
        let arm = arm_of(b, weight);
        let p = f64::from(weight) / 1e6;
        if spec.shadow {
            // Shadow: the baseline always answers; sampled units are copied.
            if arm == Arm::Baseline {
                continue;
            }
            return Some(Assignment {
                spec: spec.clone(),
                rt: rt.clone(),
                index,
                served: false,
                arm: Arm::Baseline,
                p,
                shadow: true,
                reserved: 0,
                ledger: None,
                unit,
            });
        }
        return Some(Assignment {
            spec: spec.clone(),
            rt: rt.clone(),
            index,
            served: false,
            arm,
            p,
            shadow: false,
            reserved: 0,
            ledger: None,
            unit,
        });
    }
    None
}

/// Reserves `worst` for `a` from the experiment budget: in this replica's figure and,
/// with `shared` (Redis), in the replicas' shared ledger, which decides. False when it
/// does not fit (the controller is told to pause). When Redis does not answer, this
/// replica decides alone on its own figure (logged), as the tenants' budgets do.
pub async fn reserve(
    a: &mut Assignment,
    worst: u64,
    shared: Option<&Arc<crate::limits::Shared>>,
) -> bool {
    let limit = a.spec.budget_micros;
    if !a.rt.reserve(worst, limit) {
        return false;
    }
    a.reserved = worst;
    let (Some(limit), Some(sh)) = (limit, shared) else {
        return true;
    };
    if worst == 0 {
        return true;
    }
    let (scope, period) = (&a.rt.ledger_scope, &a.rt.hash);
    let seed = a.rt.ledger_seen.load(Ordering::Acquire);
    let id = crate::limits::shared::reservation_id();
    match sh.reserve(scope, period, seed, worst, limit, id).await {
        Ok(true) => {
            a.ledger = Some((sh.clone(), id));
            true
        }
        Ok(false) => {
            a.rt.settle(worst, 0);
            a.reserved = 0;
            a.rt.hit_budget();
            false
        }
        Err(e) => {
            sh.degraded("experiment budget", &e);
            // Its answer may be lost with the reservation taken: give it back.
            let (sh, rt) = (sh.clone(), a.rt.clone());
            tokio::spawn(async move { sh.release(&rt.ledger_scope, &rt.hash, seed, id).await });
            true
        }
    }
}

/// Replaces `a`'s reservation by what the candidate really cost: in this replica's
/// figure at once, and in the shared ledger off the request's path.
pub fn settle(a: &Assignment, actual: u64) {
    a.rt.settle(a.reserved, actual);
    let Some((sh, id)) = a.ledger.clone() else {
        return;
    };
    let runtime = a.rt.clone();
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            let seed = runtime.ledger_seen.load(Ordering::Acquire);
            let (scope, period) = (&runtime.ledger_scope, &runtime.hash);
            match sh.settle(scope, period, seed, Some(id), actual).await {
                Ok((_, after)) => {
                    runtime.ledger_seen.fetch_max(after, Ordering::AcqRel);
                }
                // The reservation expires in Redis; the cost stays in this replica's
                // own figure.
                Err(e) => sh.degraded("experiment budget settle", &e),
            }
        });
    }
}

/// At the request's single exit: settles the experiment budget with what the candidate
/// really cost, and gives the controller the outcome by intention to treat (a candidate
/// that did not serve is an error of the candidate, its wasted time in the latency).
/// Denied and client-closed requests are not outcomes of either arm.
pub fn finish(a: Assignment, r: &crate::record::ExecutionRecord) {
    let candidate_arm = a.arm == Arm::Candidate && !a.shadow;
    if a.reserved > 0 {
        let actual = if candidate_arm && a.served {
            r.cost_micros
        } else {
            0
        };
        settle(&a, actual);
    }
    if matches!(r.status, "denied" | "client_closed") {
        return;
    }
    let error = r.status == "error" || (candidate_arm && !a.served);
    // Time to first token from the request's start: failed attempts before it count.
    let ttft_ms = r.ttft_ms.map(|t| {
        let wasted: f64 = r.attempts.iter().rev().skip(1).map(|x| x.latency_ms).sum();
        t + wasted
    });
    a.rt.send(Msg::Outcome(Outcome {
        arm: a.arm,
        // A shadow pairs each sampled request with its copy: one outcome of each arm.
        p: if a.shadow { 0.5 } else { a.p },
        error,
        latency_ms: r.latency_ms,
        ttft_ms,
        cost_micros: r.cost_micros,
        // Only a candidate error's id is kept (as an example in the evidence).
        request_id: if error && a.arm == Arm::Candidate {
            r.request_id.clone()
        } else {
            String::new()
        },
        unit: a.unit,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_length_prefixed_and_stable() {
        assert_ne!(bucket("ab", "c", "u"), bucket("a", "bc", "u"));
        assert_eq!(bucket("s", "t", "u"), bucket("s", "t", "u"));
        assert_ne!(bucket("s", "t", "u1"), bucket("s", "t", "u2"));
    }

    #[test]
    fn arms_are_monotone_in_the_weight() {
        let weights = [0, 10_000, 50_000, 250_000, 500_000, 1_000_000];
        let mut shares = Vec::new();
        for unit in 0..5_000 {
            let b = bucket("exp", "tenant", &format!("user-{unit}"));
            let arms: Vec<Arm> = weights.iter().map(|w| arm_of(b, *w)).collect();
            // Once a unit is in the candidate at some weight, it stays there at every
            // higher weight (a ramp never moves anyone back); at 0 nobody is, at 100%
            // everybody is.
            let first = arms.iter().position(|a| *a == Arm::Candidate);
            if let Some(i) = first {
                assert!(arms[i..].iter().all(|a| *a == Arm::Candidate), "{arms:?}");
            }
            assert_eq!(arms[0], Arm::Baseline);
            assert_eq!(arms[5], Arm::Candidate);
            shares.push(arms);
        }
        for (i, w) in weights.iter().enumerate() {
            let n = shares.iter().filter(|a| a[i] == Arm::Candidate).count() as f64;
            let expected = f64::from(*w) / 1e6 * 5_000.0;
            assert!(
                (n - expected).abs() <= 4.0 * (expected.max(1.0)).sqrt() + 1.0,
                "weight {w}: {n} vs {expected}"
            );
        }
    }
}
