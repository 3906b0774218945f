//! Budget ledgers in integer micro-dollars: reserve the worst case before a request
//! goes upstream, settle to the real cost after.
//!
//! A reservation succeeds only if `spent + reserved + worst ≤ limit`, checked and taken
//! under the ledger's own lock, so concurrent requests cannot together pass the limit
//! (the race peers have: check and record done separately). Settling releases the
//! reservation and adds the real cost, which is never more than the worst case the
//! reservation assumed.

use crate::prices::Period;

#[derive(Debug, Clone)]
pub struct Ledger {
    pub period: Period,
    pub spent: u64,
    pub reserved: u64,
    /// Alert thresholds (in thousandths of the limit) already fired this period.
    alerted: Vec<u32>,
    /// Changed since the store last saw it.
    pub dirty: bool,
}

impl Ledger {
    pub fn new(period: Period, spent: u64) -> Self {
        Self {
            period,
            spent,
            reserved: 0,
            alerted: Vec::new(),
            dirty: false,
        }
    }

    /// Moves to `now`'s period when it differs: spend starts again from zero.
    /// Reservations in flight stay reserved (they settle into the new period).
    pub fn roll(&mut self, now: Period) {
        if now.key != self.period.key {
            self.period = now;
            self.spent = 0;
            self.alerted.clear();
            self.dirty = true;
        }
    }

    /// Takes `worst` micro-dollars out of what is left, or refuses.
    pub fn reserve(&mut self, worst: u64, limit: u64) -> bool {
        let committed = self.spent.saturating_add(self.reserved);
        if committed.saturating_add(worst) > limit {
            return false;
        }
        self.reserved += worst;
        true
    }

    /// Releases a reservation of `worst` and charges `actual`. Returns the alert
    /// thresholds (fractions of the limit) this crossed for the first time this period.
    pub fn settle(&mut self, worst: u64, actual: u64, limit: u64, alert_at: &[f64]) -> Vec<f64> {
        self.reserved = self.reserved.saturating_sub(worst);
        self.charge(actual, limit, alert_at)
    }

    /// Charges `actual` without a reservation (a downgraded request over its budget).
    pub fn charge(&mut self, actual: u64, limit: u64, alert_at: &[f64]) -> Vec<f64> {
        self.spent = self.spent.saturating_add(actual);
        self.dirty = true;
        let mut fired = Vec::new();
        for &a in alert_at {
            let permille = (a * 1000.0).round() as u32;
            let threshold = u128::from(limit) * u128::from(permille) / 1000;
            if u128::from(self.spent) >= threshold && !self.alerted.contains(&permille) {
                self.alerted.push(permille);
                fired.push(a);
            }
        }
        fired
    }

    pub fn remaining(&self, limit: u64) -> u64 {
        limit.saturating_sub(self.spent.saturating_add(self.reserved))
    }
}

/// USD as a float → micro-dollars (config values only; never used for arithmetic).
pub fn usd_to_micros(usd: f64) -> u64 {
    if usd.is_finite() && usd > 0.0 {
        (usd * 1_000_000.0).round() as u64
    } else {
        0
    }
}

/// Micro-dollars → USD for display.
pub fn micros_to_usd(m: u64) -> f64 {
    m as f64 / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn period(key: &str) -> Period {
        Period {
            key: key.into(),
            start: 0,
            end: 1,
        }
    }

    #[test]
    fn reservations_never_let_the_limit_pass() {
        let mut l = Ledger::new(period("2026-11"), 0);
        assert!(l.reserve(600, 1000));
        assert!(!l.reserve(500, 1000), "600 reserved + 500 > 1000");
        assert!(l.reserve(400, 1000));
        assert_eq!(l.remaining(1000), 0);
        assert!(l.settle(600, 100, 1000, &[]).is_empty());
        assert_eq!((l.spent, l.reserved), (100, 400));
        assert!(l.reserve(500, 1000));
    }

    #[test]
    fn alerts_fire_once_per_period() {
        let mut l = Ledger::new(period("2026-11"), 0);
        assert_eq!(l.charge(400, 1000, &[0.5, 0.8]), Vec::<f64>::new());
        assert_eq!(l.charge(100, 1000, &[0.5, 0.8]), vec![0.5]);
        assert_eq!(l.charge(400, 1000, &[0.5, 0.8]), vec![0.8]);
        assert!(l.charge(400, 1000, &[0.5, 0.8]).is_empty());
        l.roll(period("2026-12"));
        assert_eq!(l.spent, 0);
        assert_eq!(l.charge(900, 1000, &[0.5, 0.8]), vec![0.5, 0.8]);
    }

    #[test]
    fn micros() {
        assert_eq!(usd_to_micros(500.0), 500_000_000);
        assert_eq!(usd_to_micros(0.000_001), 1);
        assert_eq!(usd_to_micros(-1.0), 0);
        assert_eq!(micros_to_usd(1_500_000), 1.5);
    }
}
