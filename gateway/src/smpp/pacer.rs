//! [`Pacer`]: the submit rate of one bind, sans IO.
//!
//! Operators throttle binds far below what the gateway can send (10 to 150 submits/s per bind is
//! normal) and answer the excess with `ESME_RTHROTTLED` / `ESME_RMSGQFUL`. Pausing the whole bind
//! for a growing back-off after each such answer leaves it idle most of the time; sending as fast
//! as the window allows gets most submits refused. The pacer sends at a rate instead: a token
//! bucket (a burst of [`BURST`] worth of the rate) whose rate starts at the configured ceiling
//! (`max_submits_per_sec`, or unlimited), is cut to [`CUT`] of itself on a throttling answer (at
//! most once per [`CUT_SPACING`], since the answers to one burst arrive together; the first cut
//! of an unlimited bind starts from what it sent in the last second) and, while submits wait for
//! it, grows by [`GROWTH_SHARE`] of itself per second (at least [`GROWTH_FLOOR`]/s per second),
//! never above the ceiling. So a throttled bind settles just under what the SMSC accepts,
//! probing upwards, and a throttled submit waits for the next token, not for a pause of seconds.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Share of the rate kept after a throttling answer.
pub const CUT: f64 = 0.9;
/// Least time between two cuts.
pub const CUT_SPACING: Duration = Duration::from_millis(500);
/// Growth of the rate per second of waiting submits, as a share of the rate...
pub const GROWTH_SHARE: f64 = 0.2;
/// ... and at least this many submits per second, per second.
pub const GROWTH_FLOOR: f64 = 10.0;
/// Longest stretch of one refill that counts for growth: an idle bind does not grow.
const GROWTH_STEP_MAX: Duration = Duration::from_millis(100);
/// The bucket holds this much of the rate: small bursts, never a second's worth at once.
pub const BURST: Duration = Duration::from_millis(50);
/// The rate is never cut below this.
pub const MIN_RATE: f64 = 1.0;
/// Sends remembered for the first cut of an unlimited bind (a second's worth, bounded).
const MAX_REMEMBERED: usize = 10_000;

/// The pacing of one bind.
#[derive(Debug, Clone)]
pub struct Pacer {
    ceiling: Option<f64>,
    /// Submits per second allowed now; `None`: unlimited.
    rate: Option<f64>,
    tokens: f64,
    refilled: Instant,
    last_cut: Option<Instant>,
    /// Send instants of the last second while unlimited.
    recent: VecDeque<Instant>,
}

impl Pacer {
    /// A pacer at `ceiling` submits per second (`None`: unlimited until the SMSC throttles).
    pub fn new(ceiling: Option<u32>, now: Instant) -> Self {
        let ceiling = ceiling.map(|c| f64::from(c.max(1)));
        let mut pacer = Self {
            ceiling,
            rate: ceiling,
            tokens: 0.0,
            refilled: now,
            last_cut: None,
            recent: VecDeque::new(),
        };
        pacer.tokens = pacer.capacity();
        pacer
    }

    /// The rate now (`None`: unlimited).
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    fn capacity(&self) -> f64 {
        self.rate
            .map_or(f64::INFINITY, |r| (r * BURST.as_secs_f64()).max(1.0))
    }

    fn refill(&mut self, now: Instant) {
        if let Some(rate) = self.rate {
            let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
            self.tokens = (self.tokens + elapsed * rate).min(self.capacity());
        }
        self.refilled = self.refilled.max(now);
    }

    /// Whether a submit that waits may go out at `now` (call only with submits waiting: the
    /// rate grows while they wait).
    pub fn may_send(&mut self, now: Instant) -> bool {
        if let (Some(rate), false) = (
            self.rate,
            self.ceiling.is_some_and(|c| self.rate >= Some(c)),
        ) {
            let waited = now
                .saturating_duration_since(self.refilled)
                .min(GROWTH_STEP_MAX)
                .as_secs_f64();
            let grown = rate + (rate * GROWTH_SHARE).max(GROWTH_FLOOR) * waited;
            self.rate = Some(self.ceiling.map_or(grown, |c| grown.min(c)));
        }
        self.refill(now);
        self.rate.is_none() || self.tokens >= 1.0
    }

    /// A submit went out at `now`.
    pub fn sent(&mut self, now: Instant) {
        match self.rate {
            Some(_) => self.tokens -= 1.0,
            None => {
                self.recent.push_back(now);
                if self.recent.len() > MAX_REMEMBERED {
                    self.recent.pop_front();
                }
            }
        }
    }

    /// The SMSC throttled a submit at `now`: cut the rate (once per [`CUT_SPACING`]) and make
    /// the next submit wait for a fresh token.
    pub fn throttled(&mut self, now: Instant) {
        self.refill(now);
        if self
            .last_cut
            .is_some_and(|at| now.saturating_duration_since(at) < CUT_SPACING)
        {
            return;
        }
        let base = match self.rate {
            Some(rate) => rate,
            None => {
                let second_ago = now.checked_sub(Duration::from_secs(1));
                self.recent
                    .iter()
                    .filter(|t| second_ago.is_none_or(|s| **t >= s))
                    .count() as f64
            }
        };
        self.rate = Some((base * CUT).max(MIN_RATE));
        self.recent.clear();
        self.tokens = self.tokens.min(0.0);
        self.last_cut = Some(now);
    }

    /// When the next submit may go out, if it must wait.
    pub fn next_send_at(&self) -> Option<Instant> {
        let rate = self.rate?;
        if self.tokens >= 1.0 {
            return None;
        }
        Some(self.refilled + Duration::from_secs_f64((1.0 - self.tokens) / rate))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// An SMSC that accepts `rate` submits per second with a small burst and throttles the rest.
    struct ThrottlingSmsc {
        rate: f64,
        tokens: f64,
        at: Instant,
    }

    impl ThrottlingSmsc {
        fn answer(&mut self, now: Instant) -> bool {
            let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.rate * 0.1);
            self.at = now;
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                true
            } else {
                false
            }
        }
    }

    /// Runs a saturated queue through `pacer` against an SMSC accepting `smsc_rate`/s for
    /// `seconds` of virtual time; returns the accepted count per second.
    fn run(pacer: &mut Pacer, smsc_rate: f64, t0: Instant, seconds: u64) -> Vec<u32> {
        // Like an SMSC's own bucket, full at the start.
        let mut smsc = ThrottlingSmsc {
            rate: smsc_rate,
            tokens: smsc_rate * 0.1,
            at: t0,
        };
        let mut per_second = vec![0u32; seconds as usize];
        let step = Duration::from_micros(200);
        let mut now = t0;
        while now < t0 + Duration::from_secs(seconds) {
            while pacer.may_send(now) {
                pacer.sent(now);
                // Answered at once: the window never limits here.
                if smsc.answer(now) {
                    per_second[(now - t0).as_secs() as usize] += 1;
                } else {
                    pacer.throttled(now);
                }
            }
            now += step;
        }
        per_second
    }

    #[test]
    fn an_unlimited_bind_settles_within_ten_percent_of_what_the_smsc_accepts() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(None, t0);
        let per_second = run(&mut pacer, 100.0, t0, 30);
        // Converged within 8 s of a cold start; from then on every second carries 90 to 110 %
        // of the SMSC's rate (its own bucket lets a burst over the rate through).
        for (second, accepted) in per_second.iter().enumerate().skip(8) {
            assert!(
                (90..=110).contains(accepted),
                "second {second}: {accepted} accepted ({per_second:?})"
            );
        }
        let rate = pacer.rate().unwrap();
        assert!((80.0..=110.0).contains(&rate), "rate {rate}");
    }

    #[test]
    fn a_ceiling_below_the_smscs_rate_is_kept_and_never_throttled() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(Some(50), t0);
        let per_second = run(&mut pacer, 100.0, t0, 10);
        for accepted in &per_second[1..] {
            assert!((49..=51).contains(accepted), "{per_second:?}");
        }
        assert_eq!(pacer.rate(), Some(50.0));
    }

    #[test]
    fn a_throttle_makes_the_next_submit_wait_one_token_not_seconds() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(Some(100), t0);
        assert!(pacer.may_send(t0));
        pacer.sent(t0);
        pacer.throttled(t0);
        assert!(!pacer.may_send(t0));
        let next = pacer.next_send_at().unwrap();
        assert!(next - t0 <= Duration::from_millis(12), "{:?}", next - t0);
        assert!(pacer.may_send(next + Duration::from_micros(10)));
        // Answers to the same burst cut once.
        let rate = pacer.rate().unwrap();
        pacer.throttled(next);
        assert_eq!(pacer.rate(), Some(rate));
        assert!((89.0..=91.0).contains(&rate), "{rate}");
    }
}
