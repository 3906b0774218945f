//! Peeking-safe sequential statistics for canary experiments (design `canary.md` §4.7).
//!
//! * [`RatioTest`] judges bad-event metrics (errors, latency-threshold exceedances) on the
//!   rate ratio r. Given that request i produced a bad event, its arm is candidate with
//!   probability q_i(r) = p_i·r / (p_i·r + 1 − p_i) whatever the base rate does, so the
//!   likelihood ratio of the events' arms against the margin r0 is a test supermartingale
//!   under r ≤ r0 (harm test) or r ≥ r0 (non-inferiority test) (§4.7.2). Exact for any drift
//!   of the base rate and any logged, time-varying propensities.
//! * [`MeanTest`] judges bounded outcomes (cost, feedback, 0/1 errors on an additive margin):
//!   betting e-processes on inverse-propensity pseudo-outcomes, with every bet sized so that
//!   its factor stays positive for any outcome in range. Exact for bounded outcomes
//!   (Waudby-Smith & Ramdas, 2023) and well behaved on small samples and zero variance.
//! * [`Quantiles`] is a log-bucketed streaming quantile sketch for latency reports.
//!
//! By Ville's inequality an e-process crosses 1/α with probability at most α under its null,
//! however often it is read, so verdicts may be checked after every observation; they are
//! latched (the running maximum of each e-value is kept). Bounds are confidence sequences
//! obtained by inverting tests over a grid, valid at all times simultaneously. Everything is
//! deterministic (bit for bit on a given platform), round-trips exactly through `serde`, and
//! ignores invalid inputs.

use serde::{Deserialize, Serialize};

/// Smallest assignment probability accepted (and 1 minus the largest).
const P_MIN: f64 = 1e-6;
/// Harm alternatives for [`RatioTest`], as multiples of the margin.
const HARM_MULTIPLIERS: [f64; 6] = [1.25, 1.5, 2.0, 3.0, 5.0, 10.0];
/// Non-inferiority alternatives for [`RatioTest`], as multiples of the margin.
const SAFE_MULTIPLIERS: [f64; 4] = [0.2, 0.4, 0.6, 0.8];
/// Ratio of neighbouring points of the grid a [`RatioTest`] bound is read from.
const RATIO_GRID_STEP: f64 = 1.02;
/// The ratio grid spans `margin · RATIO_GRID_STEP^k` for |k| ≤ this (about ×/÷ 1000).
const RATIO_GRID_HALF: i32 = 350;
/// Width, on the logit scale, of the propensity buckets kept for bounds.
const P_BUCKET_WIDTH: f64 = 0.01;
/// Bet fractions mixed (equal weights) by the [`MeanTest`] verdict e-processes.
const BET_FRACTIONS: [f64; 7] = [0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9];
/// Bet fractions mixed by the [`MeanTest`] empirical-Bernstein bounds.
const EB_FRACTIONS: [f64; 9] = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9];
/// Number of intervals of the grid a [`MeanTest`] bound is read from.
const MEAN_GRID_INTERVALS: u32 = 1000;
/// Largest accepted `cap`, `k`, `delta` and margin magnitudes (keeps all sums finite).
const PARAM_MAX: f64 = 1e12;

/// The verdict on one guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The non-inferiority e-process crossed 1/α_promote: the candidate is within the margin.
    Pass,
    /// The harm e-process crossed 1/α_abort: the candidate is worse than the margin.
    Fail,
    /// Neither e-process has crossed its threshold yet.
    Undecided,
}

/// Request and bad-event counts per arm, for reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ArmCounts {
    /// Baseline requests observed.
    pub baseline_n: u64,
    /// Baseline bad events.
    pub baseline_events: u64,
    /// Candidate requests observed.
    pub candidate_n: u64,
    /// Candidate bad events.
    pub candidate_events: u64,
}

/// Conditional-allocation e-processes for a bad-event metric (an error; a request slower
/// than the baseline's p95; ...) judged on the ratio r = rate_candidate / rate_baseline
/// against a margin r0 (the largest allowed ratio, >= 1). Exact under continuous peeking
/// (Ville's inequality), whatever the drift of the base rate, with time-varying
/// assignment probabilities p_i (design 4.7.2). Serializable so the state survives a restart
/// and a decision can be replayed from it.
///
/// The harm e-value mixes, with equal weights, the alternatives r0 × {1.25, 1.5, 2, 3, 5, 10};
/// the non-inferiority e-value mixes r0 × {0.2, 0.4, 0.6, 0.8}. Each bad event multiplies the
/// e-value of alternative r by (q(r)/q(r0))^Z · ((1 − q(r))/(1 − q(r0)))^(1−Z).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RatioTest {
    margin: f64,
    counts: ArmCounts,
    /// Σ 1/p over candidate requests and over candidate bad events.
    candidate_weight: f64,
    candidate_event_weight: f64,
    /// Σ 1/(1 − p) over baseline requests and over baseline bad events.
    baseline_weight: f64,
    baseline_event_weight: f64,
    /// Log e-value of each harm alternative.
    log_harm: [f64; 6],
    /// Log e-value of each non-inferiority alternative.
    log_safe: [f64; 4],
    /// Running maxima of the log mixtures (0 = the initial e-value 1).
    max_log_harm: f64,
    max_log_safe: f64,
    /// Bad events bucketed by propensity, sorted by key: enough to evaluate the e-processes
    /// at any margin (exactly when a bucket holds one distinct p, conservatively otherwise).
    buckets: Vec<PropensityBucket>,
}

/// Bad events whose propensities share one logit bucket.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PropensityBucket {
    key: i64,
    events: u64,
    p_min: f64,
    p_max: f64,
}

impl RatioTest {
    /// A test against `margin`, the largest allowed ratio (usually at least 1). With a
    /// margin outside [1e-12, 1e12] (or NaN) the test ignores every observation and stays
    /// [`Verdict::Undecided`].
    pub fn new(margin: f64) -> Self {
        Self {
            // A non-finite margin is stored as 0 (equally invalid) so the state serializes.
            margin: if margin.is_finite() { margin } else { 0.0 },
            counts: ArmCounts::default(),
            candidate_weight: 0.0,
            candidate_event_weight: 0.0,
            baseline_weight: 0.0,
            baseline_event_weight: 0.0,
            log_harm: [0.0; 6],
            log_safe: [0.0; 4],
            max_log_harm: 0.0,
            max_log_safe: 0.0,
            buckets: Vec::new(),
        }
    }

    /// Whether the margin is usable (finite, in [1e-12, 1e12]).
    pub fn is_valid(&self) -> bool {
        self.margin.is_finite() && self.margin >= 1.0 / PARAM_MAX && self.margin <= PARAM_MAX
    }

    /// One finished request: its arm (`candidate`), its assignment probability to the
    /// candidate `p` (0 < p < 1), and whether it was a bad event.
    ///
    /// Requests with p outside [1e-6, 1 − 1e-6] (or NaN) are ignored.
    pub fn observe(&mut self, candidate: bool, p: f64, bad: bool) {
        if !self.is_valid() || !valid_p(p) {
            return;
        }
        if candidate {
            self.counts.candidate_n += 1;
            self.candidate_weight += 1.0 / p;
        } else {
            self.counts.baseline_n += 1;
            self.baseline_weight += 1.0 / (1.0 - p);
        }
        if !bad {
            return;
        }
        if candidate {
            self.counts.candidate_events += 1;
            self.candidate_event_weight += 1.0 / p;
        } else {
            self.counts.baseline_events += 1;
            self.baseline_event_weight += 1.0 / (1.0 - p);
        }
        let r0 = self.margin;
        update_ratio_log_e(&mut self.log_harm, &HARM_MULTIPLIERS, r0, p, candidate);
        update_ratio_log_e(&mut self.log_safe, &SAFE_MULTIPLIERS, r0, p, candidate);
        self.max_log_harm = self
            .max_log_harm
            .max(log_mean_exp(self.log_harm.iter().copied()));
        self.max_log_safe = self
            .max_log_safe
            .max(log_mean_exp(self.log_safe.iter().copied()));
        self.add_to_bucket(p);
    }

    /// The harm e-value: evidence that r > margin (mixture over alternatives above r0).
    /// This is the current value; [`RatioTest::verdict`] uses its running maximum.
    pub fn e_harm(&self) -> f64 {
        log_mean_exp(self.log_harm.iter().copied()).exp()
    }

    /// The non-inferiority e-value: evidence that r < margin (mixture over alternatives
    /// below r0). This is the current value; [`RatioTest::verdict`] uses its running maximum.
    pub fn e_safe(&self) -> f64 {
        log_mean_exp(self.log_safe.iter().copied()).exp()
    }

    /// [`Verdict::Fail`] once the harm e-value has ever reached 1/`alpha_abort`,
    /// otherwise [`Verdict::Pass`] once the non-inferiority e-value has ever reached
    /// 1/`alpha_promote`, otherwise [`Verdict::Undecided`]. Fail wins; an alpha outside
    /// (0, 1) disables its side.
    pub fn verdict(&self, alpha_abort: f64, alpha_promote: f64) -> Verdict {
        latched_verdict(
            self.max_log_harm,
            self.max_log_safe,
            alpha_abort,
            alpha_promote,
        )
    }

    /// IPW-corrected (Hájek) point estimate of r (None before there is data in both arms,
    /// or while the baseline has no bad event).
    pub fn estimate(&self) -> Option<f64> {
        if self.candidate_weight <= 0.0 || self.baseline_weight <= 0.0 {
            return None;
        }
        let baseline_rate = self.baseline_event_weight / self.baseline_weight;
        if baseline_rate <= 0.0 {
            return None;
        }
        Some(self.candidate_event_weight / self.candidate_weight / baseline_rate)
    }

    /// The harmful-side bound: the upper end of a (1 - alpha) confidence sequence for r,
    /// obtained by inverting the test over a grid of r0 values (None while unbounded).
    ///
    /// The grid is `margin · 1.02^k`, |k| ≤ 350; the bound is the smallest grid point at and
    /// above which every grid point is rejected by the non-inferiority test at level alpha.
    pub fn upper_bound(&self, alpha: f64) -> Option<f64> {
        let threshold = log_threshold(alpha)?;
        if !self.is_valid() {
            return None;
        }
        let mut bound = None;
        for k in (-RATIO_GRID_HALF..=RATIO_GRID_HALF).rev() {
            let r0 = self.grid_point(k);
            if self.bucket_log_e(r0, &SAFE_MULTIPLIERS, false) >= threshold {
                bound = Some(r0);
            } else {
                break;
            }
        }
        bound
    }

    /// The lower end of a (1 - alpha) confidence sequence for r, from the harm test over
    /// the same grid as [`RatioTest::upper_bound`] (None while no grid point is rejected).
    pub fn lower_bound(&self, alpha: f64) -> Option<f64> {
        let threshold = log_threshold(alpha)?;
        if !self.is_valid() {
            return None;
        }
        let mut bound = None;
        for k in -RATIO_GRID_HALF..=RATIO_GRID_HALF {
            let r0 = self.grid_point(k);
            if self.bucket_log_e(r0, &HARM_MULTIPLIERS, true) >= threshold {
                bound = Some(r0);
            } else {
                break;
            }
        }
        bound
    }

    /// Counts for reports: (requests, bad events) per arm.
    pub fn counts(&self) -> ArmCounts {
        self.counts
    }

    fn grid_point(&self, k: i32) -> f64 {
        self.margin * RATIO_GRID_STEP.powf(f64::from(k))
    }

    fn add_to_bucket(&mut self, p: f64) {
        let key = ((p / (1.0 - p)).ln() / P_BUCKET_WIDTH).floor() as i64;
        match self.buckets.binary_search_by_key(&key, |b| b.key) {
            Ok(i) => {
                if let Some(b) = self.buckets.get_mut(i) {
                    b.events += 1;
                    b.p_min = b.p_min.min(p);
                    b.p_max = b.p_max.max(p);
                }
            }
            Err(i) => self.buckets.insert(
                i,
                PropensityBucket {
                    key,
                    events: 1,
                    p_min: p,
                    p_max: p,
                },
            ),
        }
    }

    /// Log mixture e-value at margin `r0` from the propensity buckets. Per event the log
    /// factor is Z·ln(r/r0) − ln(1 + p(r − 1)) + ln(1 + p(r0 − 1)), monotone in p, so a
    /// bucket's extreme p bounds it from below: p_max for harm (r > r0), p_min otherwise.
    fn bucket_log_e(&self, r0: f64, multipliers: &[f64], harm: bool) -> f64 {
        let candidate_events = self.counts.candidate_events as f64;
        log_mean_exp(multipliers.iter().map(|&a| {
            let r = r0 * a;
            let mut log_e = candidate_events * a.ln();
            for b in &self.buckets {
                let p = if harm { b.p_max } else { b.p_min };
                log_e += b.events as f64 * ((p * (r0 - 1.0)).ln_1p() - (p * (r - 1.0)).ln_1p());
            }
            log_e
        }))
    }
}

/// Adds one bad event's log factors to the per-alternative log e-values.
fn update_ratio_log_e(log_e: &mut [f64], multipliers: &[f64], r0: f64, p: f64, candidate: bool) {
    let null_term = (p * (r0 - 1.0)).ln_1p();
    for (value, &a) in log_e.iter_mut().zip(multipliers) {
        let mut step = null_term - (p * (r0 * a - 1.0)).ln_1p();
        if candidate {
            step += a.ln();
        }
        *value += step;
    }
}

/// A test on the difference of means of an outcome in [0, cap] (cost per request, a
/// feedback score, a 0/1 error indicator for an additive margin), oriented so that harm
/// always means the candidate is worse than the baseline by more than the margin. The harm
/// quantity is θ = μ_candidate − k·μ_baseline − δ when `higher_is_worse` (cost, errors) and
/// θ = k·μ_baseline − μ_candidate − δ otherwise; θ > 0 is a breach. Valid under continuous
/// peeking.
///
/// Each observation gives the pseudo-outcome ψ = Z·y/p − (1−Z)·k·y/(1−p) (negated when
/// higher is better), whose conditional mean is θ + δ whatever the propensities. The harm
/// e-process mixes bets 1 + λ(ψ − δ), the non-inferiority one bets 1 − λ(ψ − δ), over bet
/// fractions {0.05, …, 0.9} of the largest λ that keeps the factor positive for every ψ the
/// observation could have produced: exact (Ville) for bounded outcomes. Bounds invert
/// empirical-Bernstein lower bounds of such bets, which have closed-form sufficient
/// statistics; they are valid but more conservative than the verdict.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MeanTest {
    k: f64,
    delta: f64,
    cap: f64,
    higher_is_worse: bool,
    candidate_n: u64,
    baseline_n: u64,
    /// Hájek sums: Σ 1/p and Σ y/p over candidate observations.
    candidate_weight: f64,
    candidate_weighted_sum: f64,
    /// Hájek sums: Σ 1/(1 − p) and Σ y/(1 − p) over baseline observations.
    baseline_weight: f64,
    baseline_weighted_sum: f64,
    /// Log wealth of each harm bet fraction.
    log_harm: [f64; 7],
    /// Log wealth of each non-inferiority bet fraction.
    log_safe: [f64; 7],
    max_log_harm: f64,
    max_log_safe: f64,
    /// Empirical-Bernstein sufficient statistics for the harm-side and safe-side bounds.
    eb_harm: BernsteinSums,
    eb_safe: BernsteinSums,
}

/// Σ 1/D, Σ ψ/D, Σ 1/D², Σ ψ/D², Σ ψ²/D² for per-observation scales D.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct BernsteinSums {
    inv: f64,
    psi: f64,
    inv2: f64,
    psi_inv2: f64,
    psi2: f64,
}

impl BernsteinSums {
    fn add(&mut self, psi: f64, scale: f64) {
        let inv = 1.0 / scale;
        let z = psi * inv;
        self.inv += inv;
        self.psi += z;
        self.inv2 += inv * inv;
        self.psi_inv2 += z * inv;
        self.psi2 += z * z;
    }

    /// Σ ((ψ − d)/D)², clamped against rounding below zero.
    fn squares(&self, d: f64) -> f64 {
        (self.psi2 - 2.0 * d * self.psi_inv2 + d * d * self.inv2).max(0.0)
    }

    /// Σ (ψ − d)/D.
    fn linear(&self, d: f64) -> f64 {
        self.psi - d * self.inv
    }
}

/// A pseudo-outcome with the range it could have taken given the propensity.
struct Pseudo {
    psi: f64,
    lo: f64,
    hi: f64,
}

impl MeanTest {
    /// `k`: ratio margin (1.0 for a pure additive margin), `delta`: additive margin (>= 0),
    /// `cap`: outcomes are clamped to [0, cap] (winsorised), `higher_is_worse`.
    ///
    /// With invalid parameters (non-finite, k or delta negative, cap not positive, any
    /// above 1e12) the test ignores every observation and stays [`Verdict::Undecided`].
    pub fn new(k: f64, delta: f64, cap: f64, higher_is_worse: bool) -> Self {
        // Non-finite parameters are stored as -1 (equally invalid) so the state serializes.
        let finite = |x: f64| if x.is_finite() { x } else { -1.0 };
        Self {
            k: finite(k),
            delta: finite(delta),
            cap: finite(cap),
            higher_is_worse,
            candidate_n: 0,
            baseline_n: 0,
            candidate_weight: 0.0,
            candidate_weighted_sum: 0.0,
            baseline_weight: 0.0,
            baseline_weighted_sum: 0.0,
            log_harm: [0.0; 7],
            log_safe: [0.0; 7],
            max_log_harm: 0.0,
            max_log_safe: 0.0,
            eb_harm: BernsteinSums::default(),
            eb_safe: BernsteinSums::default(),
        }
    }

    /// Whether the parameters are usable.
    pub fn is_valid(&self) -> bool {
        let in_range = |x: f64| x.is_finite() && (0.0..=PARAM_MAX).contains(&x);
        in_range(self.k) && in_range(self.delta) && in_range(self.cap) && self.cap > 0.0
    }

    /// One observation: its arm, its assignment probability to the candidate `p`, and its
    /// outcome `y`, clamped to at most `cap`. Observations with p outside
    /// [1e-6, 1 − 1e-6], or y negative or not finite, are ignored.
    pub fn observe(&mut self, candidate: bool, p: f64, y: f64) {
        if !self.is_valid() || !valid_p(p) || !y.is_finite() || y < 0.0 {
            return;
        }
        let y = y.min(self.cap);
        if candidate {
            self.candidate_n += 1;
            self.candidate_weight += 1.0 / p;
            self.candidate_weighted_sum += y / p;
        } else {
            self.baseline_n += 1;
            self.baseline_weight += 1.0 / (1.0 - p);
            self.baseline_weighted_sum += y / (1.0 - p);
        }
        let obs = self.pseudo(candidate, p, y);
        // Largest safe bets: 1 + λ(ψ − δ) > 0 needs λ < 1/(δ − lo); 1 − λ(ψ − δ) > 0 needs
        // λ < 1/(hi − δ). The floor only matters for degenerate margins and keeps both valid.
        let floor = self.cap * 1e-9;
        let harm_scale = (self.delta - obs.lo).max(floor);
        let safe_scale = (obs.hi - self.delta).max(floor);
        let excess = obs.psi - self.delta;
        for (value, c) in self.log_harm.iter_mut().zip(BET_FRACTIONS) {
            *value += (c * (excess / harm_scale)).ln_1p();
        }
        for (value, c) in self.log_safe.iter_mut().zip(BET_FRACTIONS) {
            *value += (-c * (excess / safe_scale)).ln_1p();
        }
        self.max_log_harm = self
            .max_log_harm
            .max(log_mean_exp(self.log_harm.iter().copied()));
        self.max_log_safe = self
            .max_log_safe
            .max(log_mean_exp(self.log_safe.iter().copied()));
        let (mean_lo, mean_hi) = self.mean_range();
        self.eb_harm.add(obs.psi, mean_hi - obs.lo);
        self.eb_safe.add(obs.psi, obs.hi - mean_lo);
    }

    /// The harm e-value: evidence that the harm quantity is > 0 (current value).
    pub fn e_harm(&self) -> f64 {
        log_mean_exp(self.log_harm.iter().copied()).exp()
    }

    /// The non-inferiority e-value: evidence that the harm quantity is < 0 (current value).
    pub fn e_safe(&self) -> f64 {
        log_mean_exp(self.log_safe.iter().copied()).exp()
    }

    /// Latched like [`RatioTest::verdict`]: Fail once the harm e-value has ever reached
    /// 1/`alpha_abort`, else Pass once the non-inferiority e-value has ever reached
    /// 1/`alpha_promote`, else Undecided.
    pub fn verdict(&self, alpha_abort: f64, alpha_promote: f64) -> Verdict {
        latched_verdict(
            self.max_log_harm,
            self.max_log_safe,
            alpha_abort,
            alpha_promote,
        )
    }

    /// Point estimate of the harm quantity (candidate worse-by minus margin; > 0 = breach),
    /// from IPW (Hájek) means; None before there is data in both arms.
    pub fn estimate(&self) -> Option<f64> {
        if self.candidate_weight <= 0.0 || self.baseline_weight <= 0.0 {
            return None;
        }
        let candidate = self.candidate_weighted_sum / self.candidate_weight;
        let baseline = self.baseline_weighted_sum / self.baseline_weight;
        let worse_by = if self.higher_is_worse {
            candidate - self.k * baseline
        } else {
            self.k * baseline - candidate
        };
        Some(worse_by - self.delta)
    }

    /// Harmful-side bound of a (1-alpha) confidence sequence for that quantity: the
    /// quantity is below it at all times with probability at least 1 − alpha (None while
    /// unbounded). Read from a grid of 1001 points across the quantity's possible range.
    pub fn upper_bound(&self, alpha: f64) -> Option<f64> {
        let threshold = log_threshold(alpha)?;
        if !self.is_valid() {
            return None;
        }
        let (lo, hi) = self.mean_range();
        let mut bound = None;
        for i in (0..=MEAN_GRID_INTERVALS).rev() {
            let d = lo + (hi - lo) * (f64::from(i) / f64::from(MEAN_GRID_INTERVALS));
            if bernstein_log_e(&self.eb_safe, d, false) >= threshold {
                bound = Some(d);
            } else {
                break;
            }
        }
        bound.map(|d| d - self.delta)
    }

    /// The other end: the quantity is above it at all times with probability at least
    /// 1 − alpha (None while unbounded).
    pub fn lower_bound(&self, alpha: f64) -> Option<f64> {
        let threshold = log_threshold(alpha)?;
        if !self.is_valid() {
            return None;
        }
        let (lo, hi) = self.mean_range();
        let mut bound = None;
        for i in 0..=MEAN_GRID_INTERVALS {
            let d = lo + (hi - lo) * (f64::from(i) / f64::from(MEAN_GRID_INTERVALS));
            if bernstein_log_e(&self.eb_harm, d, true) >= threshold {
                bound = Some(d);
            } else {
                break;
            }
        }
        bound.map(|d| d - self.delta)
    }

    /// Per-arm (n, mean) for reports: `(baseline_n, baseline_mean, candidate_n,
    /// candidate_mean)`, IPW (Hájek) weighted means of the clamped outcomes (the plain means
    /// when p is constant), 0 for an empty arm.
    pub fn means(&self) -> (u64, f64, u64, f64) {
        let mean = |sum: f64, weight: f64| if weight > 0.0 { sum / weight } else { 0.0 };
        (
            self.baseline_n,
            mean(self.baseline_weighted_sum, self.baseline_weight),
            self.candidate_n,
            mean(self.candidate_weighted_sum, self.candidate_weight),
        )
    }

    fn pseudo(&self, candidate: bool, p: f64, y: f64) -> Pseudo {
        let (k, cap) = (self.k, self.cap);
        // Oriented so that larger ψ is worse for the candidate.
        let sign = if self.higher_is_worse { 1.0 } else { -1.0 };
        let candidate_max = sign * cap / p;
        let baseline_max = -sign * k * cap / (1.0 - p);
        let psi = if candidate {
            sign * y / p
        } else {
            -sign * k * y / (1.0 - p)
        };
        Pseudo {
            psi,
            lo: candidate_max.min(baseline_max).min(0.0),
            hi: candidate_max.max(baseline_max).max(0.0),
        }
    }

    /// The range of E[ψ] = harm quantity + δ: [−k·cap, cap] (higher is worse) or
    /// [−cap, k·cap].
    fn mean_range(&self) -> (f64, f64) {
        if self.higher_is_worse {
            (-self.k * self.cap, self.cap)
        } else {
            (-self.cap, self.k * self.cap)
        }
    }
}

/// Log of the mixture (over [`EB_FRACTIONS`]) of empirical-Bernstein wealths testing
/// E[ψ] ≤ d (`harm`) or E[ψ] ≥ d. With ξ = ±(ψ − d)/D ≥ −1, Fan et al.'s inequality
/// 1 + cξ ≥ exp(cξ − ψ_E(c)ξ²), ψ_E(c) = −ln(1 − c) − c, makes each a test supermartingale.
fn bernstein_log_e(sums: &BernsteinSums, d: f64, harm: bool) -> f64 {
    let linear = if harm {
        sums.linear(d)
    } else {
        -sums.linear(d)
    };
    let squares = sums.squares(d);
    log_mean_exp(
        EB_FRACTIONS
            .iter()
            .map(|&c| c * linear - (-(-c).ln_1p() - c) * squares),
    )
}

/// A streaming quantile estimate of positive durations in milliseconds (log-spaced
/// histogram buckets, e.g. 5% relative width, from 0.01 ms to 10 minutes), serializable, O(1) update.
///
/// Buckets grow by 5% from 0.01 ms to about 629 s; durations below or above land in an
/// underflow or overflow bucket. A quantile is reported as its bucket's geometric midpoint,
/// clamped to the observed minimum and maximum, so its relative error is at most about 2.5%.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Quantiles {
    buckets: Vec<u64>,
    n: u64,
    min: f64,
    max: f64,
}

/// Lower edge of the first log bucket, in ms.
const Q_MIN_MS: f64 = 0.01;
/// Relative growth of the log buckets.
const Q_GROWTH: f64 = 1.05;
/// Number of log buckets: 1.05^368 · 0.01 ms ≈ 629 s ≥ 10 minutes.
const Q_LOG_BUCKETS: usize = 368;
/// Total slots: underflow, log buckets, overflow.
const Q_SLOTS: usize = Q_LOG_BUCKETS + 2;

impl Quantiles {
    /// Records one duration in ms; negative or non-finite values are ignored (zero is
    /// counted in the underflow bucket).
    pub fn observe(&mut self, ms: f64) {
        if !ms.is_finite() || ms < 0.0 {
            return;
        }
        if self.buckets.len() != Q_SLOTS {
            self.buckets.resize(Q_SLOTS, 0);
        }
        let slot = if ms < Q_MIN_MS {
            0
        } else {
            let i = ((ms / Q_MIN_MS).ln() / Q_GROWTH.ln()).floor() as usize + 1;
            i.min(Q_LOG_BUCKETS + 1)
        };
        if let Some(count) = self.buckets.get_mut(slot) {
            *count += 1;
        }
        if self.n == 0 {
            self.min = ms;
            self.max = ms;
        } else {
            self.min = self.min.min(ms);
            self.max = self.max.max(ms);
        }
        self.n += 1;
    }

    /// Number of durations recorded.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// The q-quantile (0<q<1), None when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.n == 0 || !(q > 0.0 && q < 1.0) {
            return None;
        }
        let rank = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0u64;
        for (slot, &count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let value = match slot {
                    0 => self.min,
                    s if s > Q_LOG_BUCKETS => self.max,
                    s => Q_MIN_MS * Q_GROWTH.powf(s as f64 - 0.5),
                };
                return Some(value.clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }
}

fn valid_p(p: f64) -> bool {
    p.is_finite() && (P_MIN..=1.0 - P_MIN).contains(&p)
}

/// ln(1/alpha) for alpha in (0, 1).
fn log_threshold(alpha: f64) -> Option<f64> {
    (alpha > 0.0 && alpha < 1.0).then(|| -alpha.ln())
}

fn latched_verdict(
    max_log_harm: f64,
    max_log_safe: f64,
    alpha_abort: f64,
    alpha_promote: f64,
) -> Verdict {
    if log_threshold(alpha_abort).is_some_and(|t| max_log_harm >= t) {
        Verdict::Fail
    } else if log_threshold(alpha_promote).is_some_and(|t| max_log_safe >= t) {
        Verdict::Pass
    } else {
        Verdict::Undecided
    }
}

/// ln of the mean of exp(x) over `values`, in one numerically safe pass (NaN and −∞ terms
/// contribute zero; −∞ when there is nothing to average).
fn log_mean_exp(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut max = f64::NEG_INFINITY;
    let mut sum = 0.0f64;
    let mut n = 0u32;
    for x in values {
        n += 1;
        if x.is_nan() || x == f64::NEG_INFINITY {
            continue;
        }
        if x == f64::INFINITY {
            return f64::INFINITY;
        }
        if x > max {
            sum = sum * (max - x).exp() + 1.0;
            max = x;
        } else {
            sum += (x - max).exp();
        }
    }
    if n == 0 || sum <= 0.0 {
        f64::NEG_INFINITY
    } else {
        max + (sum / f64::from(n)).ln()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::f64::consts::TAU;

    const ALPHA: f64 = 0.05;
    /// Canary shares of the simulated ramp.
    const RAMP: [f64; 4] = [0.01, 0.05, 0.25, 0.5];

    /// Share at request `i` of `n`, the ramp split into equal stages.
    fn ramp_p(i: usize, n: usize, ramp: &[f64]) -> f64 {
        let stage = (i * ramp.len() / n).min(ramp.len() - 1);
        ramp[stage]
    }

    /// A diurnal-like multiplicative drift in [0.2, 1.8].
    fn drift(i: usize, period: usize) -> f64 {
        1.0 + 0.8 * (TAU * i as f64 / period as f64).sin()
    }

    /// The largest rate compatible with alpha over `runs` Bernoulli trials: alpha + 3 SE.
    fn limit(alpha: f64, runs: usize) -> f64 {
        alpha + 3.0 * (alpha * (1.0 - alpha) / runs as f64).sqrt()
    }

    #[test]
    fn ratio_aa_false_harm_rate_is_controlled() {
        let (runs, n) = (2000usize, 4000usize);
        let margins = [1.0, 1.25];
        let mut fails = [0usize; 2];
        let mut events = 0u64;
        for run in 0..runs {
            let mut rng = StdRng::seed_from_u64(10_000 + run as u64);
            let mut tests = margins.map(RatioTest::new);
            let mut ever = [false; 2];
            let period = 900 + run % 700;
            for i in 0..n {
                let p = ramp_p(i, n, &RAMP);
                let candidate = rng.random_bool(p);
                let bad = rng.random_bool(0.1 * drift(i, period));
                for t in &mut tests {
                    t.observe(candidate, p, bad);
                }
                if bad {
                    for (e, t) in ever.iter_mut().zip(&tests) {
                        *e |= t.verdict(ALPHA, ALPHA) == Verdict::Fail;
                    }
                }
            }
            for (j, t) in tests.iter().enumerate() {
                // The latched verdict agrees with checking after every event.
                assert_eq!(ever[j], t.verdict(ALPHA, ALPHA) == Verdict::Fail);
                fails[j] += usize::from(ever[j]);
            }
            let c = tests[0].counts();
            events += c.baseline_events + c.candidate_events;
        }
        let rates = fails.map(|f| f as f64 / runs as f64);
        println!(
            "ratio A/A: {runs} runs x {n} requests ({:.0} events/run): false Fail rate {:.4} (margin 1.0), {:.4} (margin 1.25), limit {:.4}",
            events as f64 / runs as f64,
            rates[0],
            rates[1],
            limit(ALPHA, runs)
        );
        for rate in rates {
            assert!(rate <= limit(ALPHA, runs), "false harm rate {rate}");
        }
    }

    #[test]
    fn ratio_boundary_false_pass_rate_is_controlled() {
        let (runs, n, margin) = (2000usize, 4000usize, 1.25);
        let mut passes = 0usize;
        for run in 0..runs {
            let mut rng = StdRng::seed_from_u64(20_000 + run as u64);
            let mut test = RatioTest::new(margin);
            let period = 900 + run % 700;
            for i in 0..n {
                // Late-heavy ramp: more events at the large shares that could show safety.
                let p = ramp_p(i, n, &[0.05, 0.25, 0.5, 0.5]);
                let candidate = rng.random_bool(p);
                let base = 0.1 * drift(i, period);
                let rate = if candidate { margin * base } else { base };
                test.observe(candidate, p, rng.random_bool(rate));
            }
            passes += usize::from(test.verdict(ALPHA, ALPHA) == Verdict::Pass);
        }
        let rate = passes as f64 / runs as f64;
        println!(
            "ratio boundary r = r0 = {margin}: {runs} runs x {n}: false Pass rate {rate:.4}, limit {:.4}",
            limit(ALPHA, runs)
        );
        assert!(rate <= limit(ALPHA, runs), "false pass rate {rate}");
    }

    /// Runs a ratio experiment until `stop` or `n` requests; returns the requests used.
    fn run_ratio(
        rng: &mut StdRng,
        test: &mut RatioTest,
        r: f64,
        base: f64,
        n: usize,
        stop: Verdict,
    ) -> Option<usize> {
        let ramp = [0.05, 0.25, 0.5];
        for i in 0..n {
            let p = ramp_p(i, n, &ramp);
            let candidate = rng.random_bool(p);
            let mean = base * drift(i, 5000);
            let rate = if candidate { r * mean } else { mean };
            test.observe(candidate, p, rng.random_bool(rate.min(1.0)));
            if test.verdict(ALPHA, ALPHA) == stop {
                return Some(i + 1);
            }
        }
        None
    }

    fn median(mut xs: Vec<usize>) -> usize {
        xs.sort_unstable();
        xs.get(xs.len() / 2).copied().unwrap_or(0)
    }

    #[test]
    fn ratio_power_harm_and_safety() {
        let runs = 100;
        let mut detect = Vec::new();
        let mut healthy = Vec::new();
        for run in 0..runs {
            let mut rng = StdRng::seed_from_u64(30_000 + run);
            let mut harmful = RatioTest::new(1.0);
            if let Some(n) = run_ratio(&mut rng, &mut harmful, 3.0, 0.02, 12_000, Verdict::Fail) {
                detect.push(n);
            }
            let mut fine = RatioTest::new(2.0);
            if let Some(n) = run_ratio(&mut rng, &mut fine, 1.0, 0.05, 12_000, Verdict::Pass) {
                healthy.push(n);
            }
            assert_ne!(fine.verdict(ALPHA, ALPHA), Verdict::Fail);
        }
        println!(
            "ratio power: r = 3 (margin 1, base 2%) detected in {}/{runs}, median {} requests; r = 1 (margin 2, base 5%) passed in {}/{runs}, median {} requests",
            detect.len(),
            median(detect.clone()),
            healthy.len(),
            median(healthy.clone())
        );
        assert!(detect.len() >= 90);
        assert!(healthy.len() >= 90);
    }

    #[test]
    fn ratio_verdict_is_latched_and_fail_wins() {
        let mut t = RatioTest::new(2.0);
        // Baseline-only events: strong evidence r < 2, then candidate-only events: harm.
        let mut n = 0;
        while t.verdict(ALPHA, ALPHA) != Verdict::Pass {
            t.observe(false, 0.5, true);
            n += 1;
            assert!(n < 100);
        }
        while t.verdict(ALPHA, ALPHA) != Verdict::Fail {
            t.observe(true, 0.5, true);
            n += 1;
            assert!(n < 1000);
        }
        assert!(t.e_safe() < 1.0 / ALPHA, "safety evidence is gone");
        // Drive harm evidence back below the threshold: the verdict stays Fail.
        for _ in 0..200 {
            t.observe(false, 0.5, true);
        }
        assert!(t.e_harm() < 1.0 / ALPHA);
        assert_eq!(t.verdict(ALPHA, ALPHA), Verdict::Fail);
        // Invalid alphas disable a side.
        assert_eq!(t.verdict(0.0, ALPHA), Verdict::Pass);
        assert_eq!(t.verdict(f64::NAN, 1.0), Verdict::Undecided);
    }

    #[test]
    fn ratio_matches_the_design_formula() {
        // One candidate event at p = 0.1, margin 1: factor for r is q(r)/q(1).
        let mut t = RatioTest::new(1.0);
        t.observe(true, 0.1, true);
        let q = |r: f64| 0.1 * r / (0.1 * r + 0.9);
        let expected: f64 = HARM_MULTIPLIERS.iter().map(|&r| q(r) / q(1.0)).sum::<f64>() / 6.0;
        assert!((t.e_harm() - expected).abs() < 1e-12 * expected);
        let expected_safe: f64 = SAFE_MULTIPLIERS.iter().map(|&r| q(r) / q(1.0)).sum::<f64>() / 4.0;
        assert!((t.e_safe() - expected_safe).abs() < 1e-12);
        // A baseline event: (1 − q(r))/(1 − q(1)).
        let mut b = RatioTest::new(1.0);
        b.observe(false, 0.1, true);
        let expected: f64 = HARM_MULTIPLIERS
            .iter()
            .map(|&r| (1.0 - q(r)) / (1.0 - q(1.0)))
            .sum::<f64>()
            / 6.0;
        assert!((b.e_harm() - expected).abs() < 1e-12);
        // Non-events do not move the e-processes but are counted.
        b.observe(true, 0.1, false);
        assert!((b.e_harm() - expected).abs() < 1e-12);
        assert_eq!(b.counts().candidate_n, 1);
        // The bucketed evaluation used for bounds agrees at the margin.
        assert!((b.bucket_log_e(1.0, &HARM_MULTIPLIERS, true) - b.e_harm().ln()).abs() < 1e-12);
    }

    #[test]
    fn ratio_confidence_sequence_covers_and_shrinks() {
        let (runs, n, r) = (200usize, 8000usize, 1.5);
        let (mut upper_miss, mut lower_miss, mut bounded) = (0usize, 0usize, 0usize);
        let mut estimates = 0.0;
        for run in 0..runs {
            let mut rng = StdRng::seed_from_u64(40_000 + run as u64);
            let mut t = RatioTest::new(1.25);
            let (mut up_bad, mut low_bad) = (false, false);
            for i in 0..n {
                let p = ramp_p(i, n, &[0.05, 0.25, 0.5, 0.5]);
                let candidate = rng.random_bool(p);
                let base = 0.08 * drift(i, 3000);
                let rate = if candidate { r * base } else { base };
                t.observe(candidate, p, rng.random_bool(rate));
                if (i + 1) % 2000 == 0 {
                    up_bad |= t.upper_bound(ALPHA).is_some_and(|u| u < r);
                    low_bad |= t.lower_bound(ALPHA).is_some_and(|l| l > r);
                }
            }
            upper_miss += usize::from(up_bad);
            lower_miss += usize::from(low_bad);
            if let (Some(u), Some(e)) = (t.upper_bound(ALPHA), t.estimate()) {
                bounded += 1;
                assert!(u >= e, "upper bound {u} below estimate {e}");
            }
            estimates += t.estimate().unwrap_or(0.0);
        }
        let mean_estimate = estimates / runs as f64;
        println!(
            "ratio CS (r = {r}): upper miss {:.3}, lower miss {:.3}, bounded {bounded}/{runs}, mean estimate {mean_estimate:.3}",
            upper_miss as f64 / runs as f64,
            lower_miss as f64 / runs as f64
        );
        assert!(upper_miss as f64 / runs as f64 <= limit(ALPHA, runs));
        assert!(lower_miss as f64 / runs as f64 <= limit(ALPHA, runs));
        assert!(bounded >= runs * 9 / 10);
        assert!((mean_estimate - r).abs() < 0.05 * r);
    }

    #[test]
    fn mean_aa_false_harm_rate_is_controlled() {
        let (runs, n) = (2000usize, 600usize);
        // Identical arms, delta = 0: both orientations sit exactly on the harm boundary.
        let mut fails = [0usize; 2];
        for run in 0..runs {
            let mut rng = StdRng::seed_from_u64(50_000 + run as u64);
            let mut tests = [
                MeanTest::new(1.0, 0.0, 1.0, true),
                MeanTest::new(1.0, 0.0, 1.0, false),
            ];
            let mut ever = [false; 2];
            let period = 200 + run % 300;
            for i in 0..n {
                let p = ramp_p(i, n, &RAMP);
                let candidate = rng.random_bool(p);
                let y = (0.3 * drift(i, period) * 2.0 * rng.random::<f64>()).min(1.0);
                for (e, t) in ever.iter_mut().zip(&mut tests) {
                    t.observe(candidate, p, y);
                    *e |= t.verdict(ALPHA, ALPHA) == Verdict::Fail;
                }
            }
            for (j, t) in tests.iter().enumerate() {
                assert_eq!(ever[j], t.verdict(ALPHA, ALPHA) == Verdict::Fail);
                fails[j] += usize::from(ever[j]);
            }
        }
        let rates = fails.map(|f| f as f64 / runs as f64);
        println!(
            "mean A/A: {runs} runs x {n}: false Fail rate {:.4} (higher worse), {:.4} (higher better), limit {:.4}",
            rates[0],
            rates[1],
            limit(ALPHA, runs)
        );
        for rate in rates {
            assert!(rate <= limit(ALPHA, runs), "false harm rate {rate}");
        }
    }

    #[test]
    fn mean_boundary_false_pass_rate_is_controlled() {
        let (runs, n) = (2000usize, 600usize);
        let mut passes = [0usize; 2];
        for run in 0..runs {
            let mut rng = StdRng::seed_from_u64(60_000 + run as u64);
            // Errors: candidate exactly delta = 0.05 worse. Feedback: candidate exactly at
            // k·baseline − delta with k = 0.95, delta = 0.02.
            let mut errors = MeanTest::new(1.0, 0.05, 1.0, true);
            let mut feedback = MeanTest::new(0.95, 0.02, 1.0, false);
            let period = 200 + run % 300;
            for i in 0..n {
                let p = ramp_p(i, n, &[0.05, 0.25, 0.5]);
                let candidate = rng.random_bool(p);
                let base = 0.1 * drift(i, period);
                let err = rng.random_bool(if candidate { base + 0.05 } else { base });
                errors.observe(candidate, p, f64::from(u8::from(err)));
                let score = 0.5 + 0.25 * drift(i, period);
                let mean = if candidate {
                    0.95 * score - 0.02
                } else {
                    score
                };
                let y = (mean + 0.3 * (rng.random::<f64>() - 0.5)).clamp(0.0, 1.0);
                feedback.observe(candidate, p, y);
            }
            passes[0] += usize::from(errors.verdict(ALPHA, ALPHA) == Verdict::Pass);
            passes[1] += usize::from(feedback.verdict(ALPHA, ALPHA) == Verdict::Pass);
        }
        let rates = passes.map(|f| f as f64 / runs as f64);
        println!(
            "mean boundary θ = 0: {runs} runs x {n}: false Pass rate {:.4} (errors, additive), {:.4} (feedback, k = 0.95), limit {:.4}",
            rates[0],
            rates[1],
            limit(ALPHA, runs)
        );
        for rate in rates {
            assert!(rate <= limit(ALPHA, runs), "false pass rate {rate}");
        }
    }

    #[test]
    fn mean_key_behaviour_zero_errors_pass_quickly() {
        let mut t = MeanTest::new(1.0, 0.1, 1.0, true);
        let mut rng = StdRng::seed_from_u64(7);
        let mut n = 0;
        while t.verdict(ALPHA, ALPHA) != Verdict::Pass && n < 1000 {
            t.observe(rng.random_bool(0.5), 0.5, 0.0);
            n += 1;
        }
        let bound_n = {
            let mut u = MeanTest::new(1.0, 0.1, 1.0, true);
            let mut m = 0;
            while u.upper_bound(ALPHA).is_none_or(|b| b >= 0.0) && m < 2000 {
                u.observe(m % 2 == 0, 0.5, 0.0);
                m += 1;
            }
            m
        };
        println!(
            "mean: all-zero outcomes, delta 0.1, p 0.5: Pass after {n} observations (upper bound < 0 after {bound_n})"
        );
        assert!(n <= 300, "took {n}");
        assert_eq!(t.estimate(), Some(-0.1));
        assert!(bound_n < 2000);
    }

    #[test]
    fn mean_key_behaviour_ten_percent_errors_fail_quickly() {
        let runs = 200;
        let mut took = Vec::new();
        for run in 0..runs {
            let mut rng = StdRng::seed_from_u64(70_000 + run);
            let mut t = MeanTest::new(1.0, 0.01, 1.0, true);
            for i in 0..2000 {
                let candidate = rng.random_bool(0.5);
                let y = if candidate && rng.random_bool(0.1) {
                    1.0
                } else {
                    0.0
                };
                t.observe(candidate, 0.5, y);
                if t.verdict(ALPHA, ALPHA) == Verdict::Fail {
                    took.push(i + 1);
                    break;
                }
            }
        }
        took.sort_unstable();
        let within = took.iter().filter(|&&n| n <= 500).count();
        let pct = |q: f64| {
            took.get(((took.len() as f64 * q) as usize).min(took.len() - 1))
                .copied()
        };
        println!(
            "mean: candidate 10% errors vs 0%, delta 0.01, p 0.5: Fail in {}/{runs} runs; observations median {:?}, p90 {:?}, max {:?}; within 500: {within}",
            took.len(),
            pct(0.5),
            pct(0.9),
            took.last()
        );
        assert!(within >= runs as usize * 9 / 10);
        assert!(pct(0.5).is_some_and(|m| m <= 300));
    }

    #[test]
    fn mean_power_and_confidence_sequence() {
        // Cost-like outcomes: candidate 20% cheaper than baseline, tested with k = 1.1:
        // θ = 0.8μ − 1.1μ < 0 passes; a candidate twice as dear fails.
        let (runs, n) = (40usize, 3000usize);
        let (mut passed, mut failed, mut miss) = (0usize, 0usize, 0usize);
        for run in 0..runs {
            let mut rng = StdRng::seed_from_u64(80_000 + run as u64);
            let mut cheap = MeanTest::new(1.1, 0.0, 4.0, true);
            let mut dear = MeanTest::new(1.1, 0.0, 4.0, true);
            let mut bad = false;
            for i in 0..n {
                let p = ramp_p(i, n, &[0.05, 0.25, 0.5]);
                let candidate = rng.random_bool(p);
                let base = 0.5 * drift(i, 1000) * 2.0 * rng.random::<f64>();
                let y_cheap = if candidate { 0.8 * base } else { base };
                let y_dear = if candidate { 2.0 * base } else { base };
                cheap.observe(candidate, p, y_cheap);
                dear.observe(candidate, p, y_dear);
                if (i + 1) % 1000 == 0 {
                    // Time-averaged truth: θ = (0.8 − 1.1)·0.5 = −0.15 (cheap).
                    let theta = -0.15;
                    bad |= cheap.upper_bound(ALPHA).is_some_and(|u| u < theta)
                        || cheap.lower_bound(ALPHA).is_some_and(|l| l > theta);
                }
            }
            passed += usize::from(cheap.verdict(ALPHA, ALPHA) == Verdict::Pass);
            failed += usize::from(dear.verdict(ALPHA, ALPHA) == Verdict::Fail);
            miss += usize::from(bad);
            let (u, l) = (cheap.upper_bound(ALPHA), cheap.lower_bound(ALPHA));
            if let (Some(u), Some(l), Some(e)) = (u, l, cheap.estimate()) {
                assert!(l <= e && e <= u);
            }
        }
        println!(
            "mean power: cheaper candidate passed {passed}/{runs}, dearer failed {failed}/{runs}, CS misses {miss}/{runs}"
        );
        assert!(passed >= runs * 9 / 10);
        assert!(failed >= runs * 9 / 10);
        assert!(miss as f64 / runs as f64 <= limit(2.0 * ALPHA, runs));
    }

    #[test]
    fn mean_confidence_sequence_covers() {
        // Errors on an additive margin: baseline 10%, candidate 14%, delta 0.02: θ = 0.02.
        let (runs, n, theta) = (300usize, 1500usize, 0.02);
        let (mut upper_miss, mut lower_miss, mut width) = (0usize, 0usize, 0.0);
        for run in 0..runs {
            let mut rng = StdRng::seed_from_u64(85_000 + run as u64);
            let mut t = MeanTest::new(1.0, 0.02, 1.0, true);
            let (mut up_bad, mut low_bad) = (false, false);
            for i in 0..n {
                let p = ramp_p(i, n, &[0.05, 0.25, 0.5]);
                let candidate = rng.random_bool(p);
                let err = rng.random_bool(if candidate { 0.14 } else { 0.1 });
                t.observe(candidate, p, f64::from(u8::from(err)));
                if (i + 1) % 500 == 0 {
                    up_bad |= t.upper_bound(ALPHA).is_some_and(|u| u < theta);
                    low_bad |= t.lower_bound(ALPHA).is_some_and(|l| l > theta);
                }
            }
            upper_miss += usize::from(up_bad);
            lower_miss += usize::from(low_bad);
            let (Some(u), Some(l)) = (t.upper_bound(ALPHA), t.lower_bound(ALPHA)) else {
                panic!("bounds should exist after {n} observations");
            };
            width += u - l;
        }
        println!(
            "mean CS (θ = {theta}): upper miss {:.3}, lower miss {:.3}, mean width {:.3} after {n}",
            upper_miss as f64 / runs as f64,
            lower_miss as f64 / runs as f64,
            width / runs as f64
        );
        assert!(upper_miss as f64 / runs as f64 <= limit(ALPHA, runs));
        assert!(lower_miss as f64 / runs as f64 <= limit(ALPHA, runs));
        assert!(width / (runs as f64) < 0.5);
    }

    fn feed_ratio(t: &mut RatioTest, rng: &mut StdRng, n: usize) {
        for i in 0..n {
            let p = [0.01, 0.05, 0.25, 0.5][i % 4];
            let candidate = rng.random_bool(p);
            t.observe(
                candidate,
                p,
                rng.random_bool(if candidate { 0.2 } else { 0.1 }),
            );
        }
    }

    fn feed_mean(t: &mut MeanTest, rng: &mut StdRng, n: usize) {
        for i in 0..n {
            let p = [0.05, 0.25, 0.5][i % 3];
            let candidate = rng.random_bool(p);
            t.observe(candidate, p, 3.0 * rng.random::<f64>());
        }
    }

    #[test]
    fn serde_round_trip_and_replay_are_exact() {
        let mut rng = StdRng::seed_from_u64(90);
        let mut ratio = RatioTest::new(1.25);
        feed_ratio(&mut ratio, &mut rng, 3000);
        let mut mean = MeanTest::new(1.1, 0.05, 2.0, true);
        feed_mean(&mut mean, &mut rng, 3000);
        let mut quantiles = Quantiles::default();
        for _ in 0..1000 {
            quantiles.observe(1000.0 * rng.random::<f64>());
        }

        let ratio_json = serde_json::to_string(&ratio).unwrap();
        let mut ratio2: RatioTest = serde_json::from_str(&ratio_json).unwrap();
        assert_eq!(serde_json::to_string(&ratio2).unwrap(), ratio_json);
        let mean_json = serde_json::to_string(&mean).unwrap();
        let mut mean2: MeanTest = serde_json::from_str(&mean_json).unwrap();
        assert_eq!(serde_json::to_string(&mean2).unwrap(), mean_json);
        let q_json = serde_json::to_string(&quantiles).unwrap();
        let quantiles2: Quantiles = serde_json::from_str(&q_json).unwrap();
        assert_eq!(quantiles2.quantile(0.9), quantiles.quantile(0.9));

        // Replay: the same further observations give bit-identical state and decisions.
        let seed = 91;
        feed_ratio(&mut ratio, &mut StdRng::seed_from_u64(seed), 3000);
        feed_ratio(&mut ratio2, &mut StdRng::seed_from_u64(seed), 3000);
        assert_eq!(
            serde_json::to_string(&ratio).unwrap(),
            serde_json::to_string(&ratio2).unwrap()
        );
        assert_eq!(ratio.e_harm().to_bits(), ratio2.e_harm().to_bits());
        assert_eq!(ratio.e_safe().to_bits(), ratio2.e_safe().to_bits());
        assert_eq!(ratio.verdict(0.01, 0.05), ratio2.verdict(0.01, 0.05));
        assert_eq!(ratio.upper_bound(0.05), ratio2.upper_bound(0.05));
        assert_eq!(ratio.estimate(), ratio2.estimate());
        feed_mean(&mut mean, &mut StdRng::seed_from_u64(seed), 3000);
        feed_mean(&mut mean2, &mut StdRng::seed_from_u64(seed), 3000);
        assert_eq!(
            serde_json::to_string(&mean).unwrap(),
            serde_json::to_string(&mean2).unwrap()
        );
        assert_eq!(mean.e_harm().to_bits(), mean2.e_harm().to_bits());
        assert_eq!(mean.upper_bound(0.05), mean2.upper_bound(0.05));
        assert_eq!(mean.lower_bound(0.05), mean2.lower_bound(0.05));
        assert_eq!(mean.means(), mean2.means());
        // The candidate is twice as bad: the estimate sees it.
        assert!(ratio.estimate().is_some_and(|r| (r - 2.0).abs() < 0.3));

        assert_eq!(
            serde_json::to_string(&Verdict::Undecided).unwrap(),
            "\"undecided\""
        );
        let v: Verdict = serde_json::from_str("\"fail\"").unwrap();
        assert_eq!(v, Verdict::Fail);
    }

    #[test]
    fn quantiles_are_accurate() {
        let mut rng = StdRng::seed_from_u64(100);
        let mut exp = Quantiles::default();
        let mut lognormal = Quantiles::default();
        let n = 100_000;
        for _ in 0..n {
            // Exponential with mean 100 ms.
            exp.observe(-100.0 * (1.0 - rng.random::<f64>()).ln());
            // Log-normal-ish: e^(5 + N) via a sum of 12 uniforms.
            let z: f64 = (0..12).map(|_| rng.random::<f64>()).sum::<f64>() - 6.0;
            lognormal.observe((5.0 + z).exp());
        }
        assert_eq!(exp.count(), n);
        for (q, truth) in [
            (0.5, 100.0 * 2f64.ln()),
            (0.95, 100.0 * 20f64.ln()),
            (0.99, 100.0 * 100f64.ln()),
        ] {
            let est = exp.quantile(q).unwrap();
            assert!((est / truth - 1.0).abs() < 0.05, "q {q}: {est} vs {truth}");
        }
        let p95 = lognormal.quantile(0.95).unwrap();
        let truth = (5.0f64 + 1.644_853_6).exp();
        assert!((p95 / truth - 1.0).abs() < 0.05, "{p95} vs {truth}");
        // Tails clamp to the observed range; out-of-range durations stay countable.
        let mut wide = Quantiles::default();
        wide.observe(0.0);
        wide.observe(0.001);
        wide.observe(1e9);
        assert_eq!(wide.quantile(0.01), Some(0.0));
        assert_eq!(wide.quantile(0.99), Some(1e9));
        assert!(Q_MIN_MS * Q_GROWTH.powi(Q_LOG_BUCKETS as i32) >= 600_000.0);
        assert_eq!(Quantiles::default().quantile(0.5), None);
        assert_eq!(exp.quantile(0.0), None);
        assert_eq!(exp.quantile(1.0), None);
        assert_eq!(exp.quantile(f64::NAN), None);
    }

    #[test]
    fn garbage_inputs_are_ignored() {
        let mut rng = StdRng::seed_from_u64(110);
        let mut ratio = RatioTest::new(1.25);
        feed_ratio(&mut ratio, &mut rng, 500);
        let mut mean = MeanTest::new(1.0, 0.1, 1.0, false);
        feed_mean(&mut mean, &mut rng, 500);
        let mut quantiles = Quantiles::default();
        quantiles.observe(12.0);
        let before = (
            serde_json::to_string(&ratio).unwrap(),
            serde_json::to_string(&mean).unwrap(),
            serde_json::to_string(&quantiles).unwrap(),
        );
        let bad_p = [
            0.0,
            1.0,
            -0.5,
            1.5,
            1e-9,
            1.0 - 1e-9,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        for p in bad_p {
            for arm in [false, true] {
                ratio.observe(arm, p, true);
                ratio.observe(arm, p, false);
                mean.observe(arm, p, 0.5);
            }
        }
        for y in [f64::NAN, -1.0, -1e-300, f64::INFINITY, f64::NEG_INFINITY] {
            mean.observe(true, 0.5, y);
            mean.observe(false, 0.5, y);
            quantiles.observe(y);
        }
        let after = (
            serde_json::to_string(&ratio).unwrap(),
            serde_json::to_string(&mean).unwrap(),
            serde_json::to_string(&quantiles).unwrap(),
        );
        assert_eq!(before, after);

        // Outcomes above the cap are winsorised, not dropped.
        let mut a = MeanTest::new(1.0, 0.0, 1.0, true);
        let mut b = MeanTest::new(1.0, 0.0, 1.0, true);
        a.observe(true, 0.3, 7.0);
        b.observe(true, 0.3, 1.0);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );

        // Invalid parameters make inert tests, never a decision and never a panic.
        let mut inert = [
            RatioTest::new(f64::NAN),
            RatioTest::new(0.0),
            RatioTest::new(-1.0),
        ];
        for t in &mut inert {
            assert!(!t.is_valid());
            for _ in 0..100 {
                t.observe(true, 0.5, true);
            }
            assert_eq!(t.counts(), ArmCounts::default());
            assert_eq!(t.verdict(ALPHA, ALPHA), Verdict::Undecided);
            assert_eq!(t.upper_bound(ALPHA), None);
            assert_eq!(t.estimate(), None);
            let back: RatioTest = serde_json::from_str(&serde_json::to_string(t).unwrap()).unwrap();
            assert!(!back.is_valid());
        }
        let mut inert = [
            MeanTest::new(f64::NAN, 0.0, 1.0, true),
            MeanTest::new(1.0, -0.1, 1.0, true),
            MeanTest::new(1.0, 0.0, 0.0, true),
            MeanTest::new(1.0, 0.0, f64::INFINITY, false),
        ];
        for t in &mut inert {
            assert!(!t.is_valid());
            for _ in 0..100 {
                t.observe(true, 0.5, 1.0);
            }
            assert_eq!(t.means(), (0, 0.0, 0, 0.0));
            assert_eq!(t.verdict(ALPHA, ALPHA), Verdict::Undecided);
            assert_eq!(t.upper_bound(ALPHA), None);
            assert_eq!(t.lower_bound(ALPHA), None);
            let back: MeanTest = serde_json::from_str(&serde_json::to_string(t).unwrap()).unwrap();
            assert!(!back.is_valid());
        }
        // Degenerate but valid margins stay finite and serializable.
        let mut degenerate = MeanTest::new(0.0, 0.0, 1.0, true);
        for i in 0..200 {
            degenerate.observe(i % 2 == 0, 0.5, if i % 7 == 0 { 1.0 } else { 0.0 });
        }
        assert_eq!(degenerate.verdict(ALPHA, ALPHA), Verdict::Fail);
        assert!(serde_json::to_string(&degenerate).is_ok());
        // Extreme but valid propensities keep everything finite.
        let mut extreme = RatioTest::new(1.0);
        for i in 0..1000 {
            extreme.observe(
                i % 3 == 0,
                if i % 2 == 0 { P_MIN } else { 1.0 - P_MIN },
                true,
            );
        }
        assert!(serde_json::to_string(&extreme).is_ok());
        assert!(extreme.e_harm().is_finite() && extreme.e_safe().is_finite());
        let _ = (
            extreme.upper_bound(0.05),
            extreme.lower_bound(0.05),
            extreme.estimate(),
        );
        // Empty tests.
        assert_eq!(RatioTest::new(1.0).estimate(), None);
        assert_eq!(RatioTest::new(1.0).upper_bound(ALPHA), None);
        assert_eq!(MeanTest::new(1.0, 0.0, 1.0, true).estimate(), None);
    }
}
