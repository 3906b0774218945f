//! Target health and target order.
//!
//! Each target (`provider/model`) has a [`TargetHealth`]: a circuit breaker and moving
//! averages of its latency and time to first token. Health lives in [`Health`], outside
//! the config generation, so a reload keeps it; a generation resolves its targets'
//! health once when it is built, so the hot path does one map lookup per target tried
//! and takes only that target's own small lock.
//!
//! Breaker: **closed** until `consecutive_failures` failures in a row, or an error rate
//! of at least `error_rate` over the last `window` outcomes (once the window is full);
//! then **open** for `cooldown` (doubling on each re-open, at most 16×); then
//! **half-open**: one probe request is let through; its success closes the breaker, its
//! failure opens it again. Only upstream failures count (connect errors, timeouts,
//! malformed replies, 408/429/5xx); a request the upstream refused as malformed does not.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::raw::BreakerSettingsRaw;
use crate::limits::lock;

/// Breaker settings of a model's targets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSettings {
    pub consecutive_failures: u32,
    pub error_rate: f64,
    pub window: usize,
    pub cooldown: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            error_rate: 0.5,
            window: 20,
            cooldown: Duration::from_secs(10),
        }
    }
}

impl BreakerSettings {
    pub fn from_raw(raw: Option<&BreakerSettingsRaw>) -> Self {
        let d = Self::default();
        let Some(r) = raw else { return d };
        Self {
            consecutive_failures: r
                .consecutive_failures
                .unwrap_or(d.consecutive_failures)
                .max(1),
            error_rate: r.error_rate.unwrap_or(d.error_rate),
            window: r.window.unwrap_or(d.window as u32).max(1) as usize,
            cooldown: r.cooldown_ms.map_or(d.cooldown, Duration::from_millis),
        }
    }
}

#[derive(Debug)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
struct Breaker {
    state: State,
    consecutive: u32,
    recent: VecDeque<bool>,
    /// How many times in a row it opened (for the growing cool-down).
    openings: u32,
}

/// What a target may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Closed: go.
    Go,
    /// Half-open: this request is the probe.
    Probe,
    /// Open (or a probe is already out): skip this target.
    Skip,
}

/// One target's health.
#[derive(Debug)]
pub struct TargetHealth {
    pub key: String,
    breaker: Mutex<Breaker>,
    /// Exponentially weighted moving averages in microseconds (0: no sample yet).
    latency_us: AtomicU64,
    ttft_us: AtomicU64,
}

impl TargetHealth {
    fn new(key: String) -> Self {
        Self {
            key,
            breaker: Mutex::new(Breaker {
                state: State::Closed,
                consecutive: 0,
                recent: VecDeque::new(),
                openings: 0,
            }),
            latency_us: AtomicU64::new(0),
            ttft_us: AtomicU64::new(0),
        }
    }

    /// Whether a request may try this target now; a half-open breaker lets one probe.
    pub fn pass(&self, now: Instant) -> Pass {
        let mut b = lock(&self.breaker);
        match b.state {
            State::Closed => Pass::Go,
            State::Open { until } if now >= until => {
                b.state = State::HalfOpen { probing: true };
                Pass::Probe
            }
            State::Open { .. } | State::HalfOpen { probing: true } => Pass::Skip,
            State::HalfOpen { probing: false } => {
                b.state = State::HalfOpen { probing: true };
                Pass::Probe
            }
        }
    }

    /// Open right now (for routing decisions and `asc_circuit_open`).
    pub fn is_open(&self, now: Instant) -> bool {
        match lock(&self.breaker).state {
            State::Open { until } => now < until,
            State::HalfOpen { probing } => probing,
            State::Closed => false,
        }
    }

    pub fn success(&self, latency: Duration, ttft: Option<Duration>) {
        {
            let mut b = lock(&self.breaker);
            b.consecutive = 0;
            b.openings = 0;
            b.state = State::Closed;
            push(&mut b.recent, true, usize::MAX);
        }
        ewma(&self.latency_us, latency);
        if let Some(t) = ttft {
            ewma(&self.ttft_us, t);
        }
    }

    /// Counts a failure; true if this opened the breaker.
    pub fn failure(&self, now: Instant, s: &BreakerSettings) -> bool {
        let mut b = lock(&self.breaker);
        b.consecutive += 1;
        push(&mut b.recent, false, s.window);
        while b.recent.len() > s.window {
            b.recent.pop_front();
        }
        let failures = b.recent.iter().filter(|ok| !**ok).count();
        let rate_tripped =
            b.recent.len() >= s.window && failures as f64 / b.recent.len() as f64 >= s.error_rate;
        let trip = match b.state {
            State::HalfOpen { .. } => true,
            State::Closed => b.consecutive >= s.consecutive_failures || rate_tripped,
            State::Open { .. } => false,
        };
        if trip {
            let factor = 1u32 << b.openings.min(4);
            b.openings += 1;
            b.state = State::Open {
                until: now + s.cooldown * factor,
            };
            b.recent.clear();
        }
        trip
    }

    /// How much longer the breaker stays open (`None` when it is not open).
    pub fn open_for(&self, now: Instant) -> Option<Duration> {
        match lock(&self.breaker).state {
            State::Open { until } if now < until => Some(until - now),
            _ => None,
        }
    }

    /// Opens the breaker for `remaining` because another replica's breaker of this
    /// target opened (shared circuits, `storage.redis`): a closed breaker, or a
    /// half-open one with no probe out, opens until then; an open one stays open at
    /// least that long; a probe in flight is left to decide. The cool-down does not
    /// grow: only this replica's own openings count for that.
    pub fn open_from_peer(&self, now: Instant, remaining: Duration) {
        let until = now + remaining;
        let mut b = lock(&self.breaker);
        match b.state {
            State::Closed | State::HalfOpen { probing: false } => {
                b.state = State::Open { until };
                b.consecutive = 0;
                b.recent.clear();
            }
            State::Open { until: current } if current < until => {
                b.state = State::Open { until };
            }
            State::Open { .. } | State::HalfOpen { probing: true } => {}
        }
    }

    /// A half-open probe that ended without a verdict (client went away): let another.
    pub fn release_probe(&self) {
        let mut b = lock(&self.breaker);
        if let State::HalfOpen { probing: true } = b.state {
            b.state = State::HalfOpen { probing: false };
        }
    }

    /// Latency and time-to-first-token averages (µs), 0 when unknown.
    pub fn averages(&self) -> (u64, u64) {
        (
            self.latency_us.load(Ordering::Relaxed),
            self.ttft_us.load(Ordering::Relaxed),
        )
    }
}

fn push(q: &mut VecDeque<bool>, v: bool, cap: usize) {
    q.push_back(v);
    if q.len() > cap.min(1024) {
        q.pop_front();
    }
}

/// New average = 0.8 × old + 0.2 × sample (the first sample is taken as is).
fn ewma(a: &AtomicU64, sample: Duration) {
    let s = u64::try_from(sample.as_micros()).unwrap_or(u64::MAX);
    let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
        Some(if old == 0 {
            s.max(1)
        } else {
            (old * 4 + s) / 5
        })
    });
}

/// Every target's health, kept across reloads.
#[derive(Debug, Default)]
pub struct Health {
    targets: Mutex<HashMap<String, Arc<TargetHealth>>>,
}

impl Health {
    /// The health of `key` (`provider/model`), created on first use. Called when a
    /// generation is built, not per request.
    pub fn of(&self, key: &str) -> Arc<TargetHealth> {
        lock(&self.targets)
            .entry(key.to_owned())
            .or_insert_with(|| Arc::new(TargetHealth::new(key.to_owned())))
            .clone()
    }

    /// The health of `key` if it was ever resolved (a peer's news of a target this
    /// replica does not route to is ignored).
    pub fn get(&self, key: &str) -> Option<Arc<TargetHealth>> {
        lock(&self.targets).get(key).cloned()
    }

    /// `(key, open)` of every target seen, for `asc_circuit_open`.
    pub fn snapshot(&self, now: Instant) -> Vec<(String, bool)> {
        lock(&self.targets)
            .values()
            .map(|t| (t.key.clone(), t.is_open(now)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peers_opening_opens_a_closed_breaker_without_growing_its_cooldown() {
        let h = TargetHealth::new("p/m".into());
        let now = Instant::now();
        h.open_from_peer(now, Duration::from_secs(5));
        assert_eq!(h.pass(now), Pass::Skip);
        assert_eq!(h.open_for(now), Some(Duration::from_secs(5)));
        // A shorter news does not shorten it; a longer one extends it.
        h.open_from_peer(now, Duration::from_secs(1));
        assert_eq!(h.open_for(now), Some(Duration::from_secs(5)));
        h.open_from_peer(now, Duration::from_secs(8));
        assert_eq!(h.open_for(now), Some(Duration::from_secs(8)));
        // Then half-open as usual; the probe's own failure opens it for one cool-down.
        let later = now + Duration::from_secs(8);
        assert_eq!(h.pass(later), Pass::Probe);
        h.open_from_peer(later, Duration::from_secs(30));
        assert_eq!(h.pass(later), Pass::Skip, "the probe in flight decides");
        assert!(h.failure(later, &settings()));
        assert_eq!(h.open_for(later), Some(Duration::from_secs(1)));
    }

    fn settings() -> BreakerSettings {
        BreakerSettings {
            consecutive_failures: 3,
            error_rate: 0.5,
            window: 10,
            cooldown: Duration::from_secs(1),
        }
    }

    #[test]
    fn opens_after_consecutive_failures_and_probes_after_the_cooldown() {
        let h = TargetHealth::new("p/m".into());
        let s = settings();
        let t0 = Instant::now();
        assert!(!h.failure(t0, &s));
        assert!(!h.failure(t0, &s));
        assert!(h.failure(t0, &s), "third failure opens");
        assert_eq!(h.pass(t0), Pass::Skip);
        assert!(h.is_open(t0));
        let later = t0 + Duration::from_millis(1001);
        assert_eq!(h.pass(later), Pass::Probe);
        assert_eq!(h.pass(later), Pass::Skip, "one probe at a time");
        // The probe fails: open again, for twice as long.
        assert!(h.failure(later, &s));
        assert_eq!(h.pass(later + Duration::from_millis(1500)), Pass::Skip);
        assert_eq!(h.pass(later + Duration::from_millis(2001)), Pass::Probe);
        h.success(Duration::from_millis(5), None);
        assert_eq!(h.pass(later + Duration::from_millis(2001)), Pass::Go);
        assert!(!h.is_open(later));
    }

    #[test]
    fn opens_on_the_error_rate_of_a_full_window() {
        let h = TargetHealth::new("p/m".into());
        let s = settings();
        let t0 = Instant::now();
        let mut opened = false;
        for i in 0..10 {
            if i % 2 == 0 {
                h.success(Duration::from_millis(1), None);
            } else {
                opened |= h.failure(t0, &s);
            }
        }
        assert!(opened, "5 failures in 10 is the 50% rate");
    }

    #[test]
    fn averages_move_towards_samples() {
        let h = TargetHealth::new("p/m".into());
        h.success(
            Duration::from_micros(1000),
            Some(Duration::from_micros(500)),
        );
        assert_eq!(h.averages(), (1000, 500));
        h.success(Duration::from_micros(2000), None);
        assert_eq!(h.averages().0, 1200);
    }
}
