//! Exact sliding-window rate limits: at most N requests, and T tokens, in any 60 s.
//!
//! Each tenant keeps a log of its admissions in the window (time, tokens), so the limit
//! holds for every 60 s window, not just aligned minutes, and a burst up to the full
//! figure is allowed. Memory is one entry per request in the last minute. Tokens are
//! charged in two steps: the prompt's estimate at admission (a prompt alone over the
//! limit is refused outright), then the real usage once the reply is in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct RateWindow {
    /// (seq, admitted at, tokens charged), oldest first.
    log: VecDeque<(u64, Instant, u64)>,
    next_seq: u64,
    tokens_in_window: u64,
}

/// An admission, to settle with the real token count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission(u64);

impl RateWindow {
    fn prune(&mut self, now: Instant) {
        while let Some(&(_, t, tokens)) = self.log.front() {
            if now.duration_since(t) < WINDOW {
                break;
            }
            self.log.pop_front();
            self.tokens_in_window -= tokens;
        }
    }

    /// Admits a request charging `tokens` now, or says how long to wait.
    pub fn admit(
        &mut self,
        now: Instant,
        rpm: Option<u64>,
        tpm: Option<u64>,
        tokens: u64,
    ) -> Result<Admission, Duration> {
        self.prune(now);
        if let Some(max) = tpm
            && tokens > max
        {
            // Can never fit: wait a whole window (the caller reports it).
            return Err(WINDOW);
        }
        let mut wait = Duration::ZERO;
        if let Some(max) = rpm
            && self.log.len() as u64 >= max
        {
            // The oldest entries leave first: wait until enough of them have.
            let excess = self.log.len() as u64 + 1 - max;
            if let Some(&(_, t, _)) = self.log.get(excess as usize - 1) {
                wait = wait.max(WINDOW.saturating_sub(now.duration_since(t)));
            }
        }
        if let Some(max) = tpm
            && self.tokens_in_window + tokens > max
        {
            let mut freed = 0;
            let need = self.tokens_in_window + tokens - max;
            for &(_, t, n) in &self.log {
                freed += n;
                if freed >= need {
                    wait = wait.max(WINDOW.saturating_sub(now.duration_since(t)));
                    break;
                }
            }
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.log.push_back((seq, now, tokens));
        self.tokens_in_window += tokens;
        Ok(Admission(seq))
    }

    /// Replaces an admission's charged tokens with the real count (if it is still in
    /// the window).
    pub fn settle(&mut self, a: Admission, tokens: u64) {
        if let Ok(i) = self.log.binary_search_by_key(&a.0, |e| e.0) {
            let e = &mut self.log[i];
            self.tokens_in_window = self.tokens_in_window - e.2 + tokens;
            e.2 = tokens;
        }
    }

    pub fn requests_in_window(&self) -> usize {
        self.log.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn requests_per_minute_hold_in_any_window() {
        let mut w = RateWindow::default();
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(w.admit(t0, Some(10), None, 0).is_ok());
        }
        let wait = w
            .admit(t0 + Duration::from_secs(30), Some(10), None, 0)
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(30));
        // Exactly when the first ones leave the window, one more fits.
        assert!(w.admit(t0 + WINDOW, Some(10), None, 0).is_ok());
    }

    #[test]
    fn tokens_are_charged_then_settled() {
        let mut w = RateWindow::default();
        let t0 = Instant::now();
        let a = w.admit(t0, None, Some(1000), 100).unwrap();
        w.settle(a, 900);
        assert!(
            w.admit(t0, None, Some(1000), 200).is_err(),
            "900 + 200 > 1000"
        );
        assert!(w.admit(t0, None, Some(1000), 100).is_ok());
        assert_eq!(
            w.admit(t0, None, Some(1000), 5000),
            Err(WINDOW),
            "a prompt over the limit"
        );
    }

    proptest! {
        /// Whatever the arrival times, no 60 s window ever holds more than the limit.
        #[test]
        fn no_window_exceeds_the_limit(gaps in prop::collection::vec(0u64..5000, 1..400), limit in 1u64..50) {
            let mut w = RateWindow::default();
            let t0 = Instant::now();
            let mut now = t0;
            let mut admitted = Vec::new();
            for g in gaps {
                now += Duration::from_millis(g);
                if w.admit(now, Some(limit), None, 0).is_ok() {
                    admitted.push(now);
                }
            }
            for (i, &t) in admitted.iter().enumerate() {
                let in_window = admitted[i..].iter().take_while(|&&u| u.duration_since(t) < WINDOW).count();
                prop_assert!(in_window as u64 <= limit);
            }
        }
    }
}
