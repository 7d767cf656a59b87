//! Per-client request rate limits: one token bucket per configured client.
//!
//! [`TokenBucket`] is sans-IO (the time is passed in); [`ClientRateLimiter`] holds one per
//! client id behind a mutex and reads its [`Clock`]. The map is fixed at construction (only
//! authenticated, configured clients reach it), so it cannot grow from the network. Per-MSISDN
//! protection and the in-flight cap belong to the service (`AlreadyInProgress`, `Overloaded`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{ClientCredential, Clock};

/// A token bucket: `capacity` tokens, refilled at `rate_per_sec`.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    capacity: f64,
    rate_per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. A capacity of 0 is raised to 1 so that a client can make any request.
    pub fn new(rate_per_sec: u32, capacity: u32, now: Instant) -> Self {
        let capacity = f64::from(capacity.max(1));
        Self {
            capacity,
            rate_per_sec: f64::from(rate_per_sec),
            tokens: capacity,
            last: now,
        }
    }

    /// Take one token, or say how long until one is available (`Duration::MAX` if the bucket
    /// never refills).
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate_per_sec).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        if self.rate_per_sec <= 0.0 {
            return Err(Duration::MAX);
        }
        let wait = (1.0 - self.tokens) / self.rate_per_sec;
        Err(Duration::try_from_secs_f64(wait).unwrap_or(Duration::MAX))
    }
}

/// The token buckets of every client.
pub struct ClientRateLimiter {
    buckets: HashMap<String, Mutex<TokenBucket>>,
    clock: Clock,
}

impl std::fmt::Debug for ClientRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRateLimiter")
            .field("clients", &self.buckets.len())
            .finish_non_exhaustive()
    }
}

impl ClientRateLimiter {
    /// One full bucket per client.
    pub fn new(clients: &[ClientCredential], clock: Clock) -> Self {
        let now = clock();
        let buckets = clients
            .iter()
            .map(|c| {
                (
                    c.id.clone(),
                    Mutex::new(TokenBucket::new(c.rate_per_sec, c.burst, now)),
                )
            })
            .collect();
        Self { buckets, clock }
    }

    /// Count one request of `client_id`; `Err(retry_after)` when over its rate. An unknown
    /// client (not configured) is refused outright: it cannot have authenticated.
    pub fn check(&self, client_id: &str) -> Result<(), Duration> {
        let Some(bucket) = self.buckets.get(client_id) else {
            return Err(Duration::from_secs(1));
        };
        let now = (self.clock)();
        // A poisoned lock only means another request panicked mid-update; the bucket's
        // numbers are still usable.
        let mut bucket = bucket.lock().unwrap_or_else(|e| e.into_inner());
        bucket.try_take(now)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_allows_its_burst_then_refuses() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1, 3, t0);
        for _ in 0..3 {
            assert!(b.try_take(t0).is_ok());
        }
        let wait = b.try_take(t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
    }

    #[test]
    fn the_bucket_refills_at_its_rate_up_to_capacity() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 2, t0);
        assert!(b.try_take(t0).is_ok());
        assert!(b.try_take(t0).is_ok());
        assert!(b.try_take(t0).is_err());
        // 100 ms at 10/s is one token.
        let t1 = t0 + Duration::from_millis(100);
        assert!(b.try_take(t1).is_ok());
        assert!(b.try_take(t1).is_err());
        // A long pause refills only to the capacity.
        let t2 = t1 + Duration::from_secs(60);
        assert!(b.try_take(t2).is_ok());
        assert!(b.try_take(t2).is_ok());
        assert!(b.try_take(t2).is_err());
    }

    #[test]
    fn a_zero_rate_never_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0, 1, t0);
        assert!(b.try_take(t0).is_ok());
        assert_eq!(
            b.try_take(t0 + Duration::from_secs(3600)),
            Err(Duration::MAX)
        );
    }

    #[test]
    fn time_going_backwards_does_not_add_tokens() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::new(1, 1, t0);
        assert!(b.try_take(t0).is_ok());
        assert!(b.try_take(t0 - Duration::from_secs(5)).is_err());
        assert!(b.try_take(t0).is_err());
    }

    #[test]
    fn limiter_keeps_clients_apart() {
        let t0 = Instant::now();
        let clients = [
            ClientCredential {
                id: "a".into(),
                token: crate::secret::Secret::new("ta"),
                rate_per_sec: 0,
                burst: 1,
                callback_allow: Vec::new(),
            },
            ClientCredential {
                id: "b".into(),
                token: crate::secret::Secret::new("tb"),
                rate_per_sec: 0,
                burst: 1,
                callback_allow: Vec::new(),
            },
        ];
        let limiter = ClientRateLimiter::new(&clients, std::sync::Arc::new(move || t0));
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_err());
        assert!(limiter.check("b").is_ok());
        assert!(limiter.check("nobody").is_err());
    }
}
