//! Per-bind submit throttle: a token bucket driven by a clock the caller passes in.
//!
//! The connection task asks [`TokenBucket::try_take`] once per `submit_sm`; a refusal becomes
//! `ESME_RTHROTTLED` (0x58). The bucket never reads the time itself, so tests drive it with
//! hand-made instants.

use std::time::{Duration, Instant};

/// A token bucket holding at most `burst` tokens, refilled at `rate_per_sec`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket allowing `tps` submits per second with a burst of one second's worth.
    /// A `tps` of 0 is treated as 1: a bind that may never submit is better expressed as a
    /// refused bind.
    pub fn new(tps: u32, now: Instant) -> Self {
        let rate = f64::from(tps.max(1));
        Self {
            rate_per_sec: rate,
            burst: rate,
            tokens: rate,
            last: now,
        }
    }

    /// Takes one token if there is one at `now`.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long from `now` until a token is available (zero if one is).
    pub fn wait_time(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate_per_sec)
        }
    }

    fn refill(&mut self, now: Instant) {
        // An instant earlier than the last one (clock handed in out of order) refills nothing.
        let elapsed = now.saturating_duration_since(self.last);
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate_per_sec).min(self.burst);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_allows_one_seconds_worth_then_refuses() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(5, t0);
        for _ in 0..5 {
            assert!(b.try_take(t0));
        }
        assert!(!b.try_take(t0));
    }

    #[test]
    fn tokens_come_back_at_the_configured_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, t0);
        while b.try_take(t0) {}
        assert!(!b.try_take(t0 + Duration::from_millis(50)));
        assert!(b.try_take(t0 + Duration::from_millis(100)));
        assert!(!b.try_take(t0 + Duration::from_millis(100)));
        let wait = b.wait_time(t0 + Duration::from_millis(150));
        assert!(
            wait.abs_diff(Duration::from_millis(50)) < Duration::from_micros(10),
            "{wait:?}"
        );
    }

    #[test]
    fn an_idle_bucket_never_holds_more_than_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3, t0);
        let later = t0 + Duration::from_secs(3600);
        let taken = (0..10).filter(|_| b.try_take(later)).count();
        assert_eq!(taken, 3);
    }

    #[test]
    fn an_earlier_instant_refills_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::new(1, t0);
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0 - Duration::from_secs(5)));
        assert!(!b.try_take(t0 + Duration::from_millis(500)));
        assert!(b.try_take(t0 + Duration::from_secs(1)));
    }
}
