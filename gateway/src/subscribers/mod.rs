//! The subscriber registry: for each MSISDN, whether the SIM carries our applet, its TAR and
//! OTA key set (KIc/KID octets and keys), and the USSD PIN verifier.
//!
//! Data flow: `gateway provision` ([`provision`]) writes a subscriber file from a population
//! seed; at start the gateway loads it (or generates the same records in memory from
//! `[subscribers.generate]`) into a [`SubscriberRegistry`], looked up by [`Msisdn`]. The
//! simulated network in `load-tests` derives its handsets from the same seed with
//! [`has_applet`] and `CardSecrets::derive`, so both sides agree without sharing a table.
//!
//! Mutable per-subscriber state (OTA counter, PIN failures, lockout) lives in the store; this
//! module only holds the pure lockout rule ([`LockoutPolicy`]) the store's callers apply.
//!
//! - [`verifier`]: salted, peppered HMAC-SHA256 PIN verifiers, constant-time check.
//! - [`provision`]: record generation, the subscriber file format (JSON lines, mode 0600).

pub mod provision;
pub mod verifier;

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sim_applet_model::handset::rng::derive_seed;

use crate::routing::Msisdn;

pub use provision::{ProvisionError, SubscriberRecord};
pub use verifier::{Pepper, PinVerifier};

/// Stream of `derive_seed` for applet presence (card keys and user behaviour use others).
const STREAM_APPLET: u64 = 0x4150_504C;

/// Whether subscriber `index` of population `seed` has the applet, for an applet share in
/// [0, 1]: a pure function of its arguments, shared by the gateway's provisioning and the
/// simulated network (`load-tests`), so both agree on who can be reached by STK.
pub fn has_applet(seed: u64, index: u64, share: f64) -> bool {
    if share.is_nan() || share <= 0.0 {
        return false;
    }
    if share >= 1.0 {
        return true;
    }
    let u = (derive_seed(seed, index, STREAM_APPLET) >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
    u < share
}

/// USSD PIN lockout state of one subscriber, as the store keeps it. Times are milliseconds
/// since the Unix epoch, so a lockout survives a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PinLockState {
    /// Consecutive wrong PINs since the last success or lockout.
    pub failures: u8,
    /// End of the current lockout.
    pub locked_until_unix_ms: Option<u64>,
}

/// The USSD PIN lockout rule: `max_failures` consecutive wrong PINs lock the subscriber for
/// `lockout`; when it ends the count starts again from zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    pub max_failures: u8,
    pub lockout: Duration,
}

impl Default for LockoutPolicy {
    /// Three failures, fifteen minutes.
    fn default() -> Self {
        LockoutPolicy {
            max_failures: 3,
            lockout: Duration::from_secs(900),
        }
    }
}

impl LockoutPolicy {
    /// Whether PIN entry is refused at `now`.
    pub fn is_locked(&self, state: PinLockState, now_unix_ms: u64) -> bool {
        state
            .locked_until_unix_ms
            .is_some_and(|until| now_unix_ms < until)
    }

    /// Time left of the lockout at `now` (for the user's message and `Retry-After`).
    pub fn remaining(&self, state: PinLockState, now_unix_ms: u64) -> Option<Duration> {
        state
            .locked_until_unix_ms
            .filter(|&until| now_unix_ms < until)
            .map(|until| Duration::from_millis(until - now_unix_ms))
    }

    /// The state after a wrong PIN at `now`. A failure during a lockout changes nothing (the
    /// gateway should not have asked); one after an expired lockout counts from zero.
    pub fn record_failure(&self, state: PinLockState, now_unix_ms: u64) -> PinLockState {
        if self.is_locked(state, now_unix_ms) {
            return state;
        }
        let failures = if state.locked_until_unix_ms.is_some() {
            1
        } else {
            state.failures.saturating_add(1)
        };
        if failures >= self.max_failures {
            let lockout_ms = u64::try_from(self.lockout.as_millis()).unwrap_or(u64::MAX);
            PinLockState {
                failures: 0,
                locked_until_unix_ms: Some(now_unix_ms.saturating_add(lockout_ms)),
            }
        } else {
            PinLockState {
                failures,
                locked_until_unix_ms: None,
            }
        }
    }

    /// The state after a right PIN at `now` (a lockout in force is kept).
    pub fn record_success(&self, state: PinLockState, now_unix_ms: u64) -> PinLockState {
        if self.is_locked(state, now_unix_ms) {
            state
        } else {
            PinLockState::default()
        }
    }
}

/// Subscribers by MSISDN.
#[derive(Debug, Default)]
pub struct SubscriberRegistry {
    by_msisdn: HashMap<u64, SubscriberRecord>,
}

impl SubscriberRegistry {
    /// A registry of these records (a later duplicate MSISDN replaces an earlier one; the
    /// file loader refuses duplicates before this).
    pub fn from_records(records: impl IntoIterator<Item = SubscriberRecord>) -> Self {
        SubscriberRegistry {
            by_msisdn: records
                .into_iter()
                .map(|r| (r.msisdn.as_u64(), r))
                .collect(),
        }
    }

    /// The record of a number.
    pub fn get(&self, msisdn: &Msisdn) -> Option<&SubscriberRecord> {
        self.by_msisdn.get(&msisdn.as_u64())
    }

    /// Number of subscribers.
    pub fn len(&self) -> usize {
        self.by_msisdn.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_msisdn.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    #[test]
    fn three_wrong_pins_lock_for_fifteen_minutes_then_unlock() {
        let p = LockoutPolicy::default();
        let t0 = 1_700_000_000_000;
        let s = p.record_failure(PinLockState::default(), t0);
        assert!(!p.is_locked(s, t0));
        let s = p.record_failure(s, t0 + MIN);
        assert!(!p.is_locked(s, t0 + MIN));
        let s = p.record_failure(s, t0 + 2 * MIN);
        assert!(p.is_locked(s, t0 + 2 * MIN));
        assert!(p.is_locked(s, t0 + 16 * MIN));
        assert_eq!(
            p.remaining(s, t0 + 16 * MIN),
            Some(Duration::from_millis(MIN))
        );
        assert!(!p.is_locked(s, t0 + 17 * MIN));
        assert_eq!(p.remaining(s, t0 + 17 * MIN), None);
        // After the lockout one failure does not lock again.
        let s = p.record_failure(s, t0 + 18 * MIN);
        assert_eq!(s.failures, 1);
        assert!(!p.is_locked(s, t0 + 18 * MIN));
    }

    #[test]
    fn failures_during_a_lockout_do_not_extend_it() {
        let p = LockoutPolicy::default();
        let locked = PinLockState {
            failures: 0,
            locked_until_unix_ms: Some(1000 + 900_000),
        };
        assert_eq!(p.record_failure(locked, 2000), locked);
        assert_eq!(p.record_success(locked, 2000), locked);
    }

    #[test]
    fn a_right_pin_resets_the_count() {
        let p = LockoutPolicy::default();
        let s = p.record_failure(p.record_failure(PinLockState::default(), 0), 1);
        assert_eq!(s.failures, 2);
        let s = p.record_success(s, 2);
        assert_eq!(s, PinLockState::default());
        let s = p.record_failure(s, 3);
        assert!(!p.is_locked(s, 3));
    }

    #[test]
    fn configured_policy_is_honoured() {
        let p = LockoutPolicy {
            max_failures: 1,
            lockout: Duration::from_secs(10),
        };
        let s = p.record_failure(PinLockState::default(), 0);
        assert!(p.is_locked(s, 9_999));
        assert!(!p.is_locked(s, 10_000));
    }

    #[test]
    fn applet_presence_is_deterministic_and_follows_the_share() {
        let n = 20_000u64;
        let with = (0..n).filter(|&i| has_applet(42, i, 0.7)).count() as f64 / n as f64;
        assert!((with - 0.7).abs() < 0.02, "{with}");
        for i in 0..100 {
            assert_eq!(has_applet(42, i, 0.7), has_applet(42, i, 0.7));
            assert!(!has_applet(42, i, 0.0));
            assert!(has_applet(42, i, 1.0));
            // A larger share only adds subscribers.
            if has_applet(42, i, 0.3) {
                assert!(has_applet(42, i, 0.7));
            }
        }
        let differ = (0..100).any(|i| has_applet(1, i, 0.5) != has_applet(2, i, 0.5));
        assert!(differ);
    }
}
