//! USSD session keys, chosen by the manager (not the channel) so that the key is in the record
//! before the prompt goes out, and a restart can still match the answer.
//!
//! A key is not given to the same MSISDN again within [`QUARANTINE`] of its last use, so a
//! late or repeated answer to an earlier dialog can never be taken for an answer to a later one.
//! Keys go round a per-operator counter; the memory is one entry per key handed out in the last
//! quarantine (about 80 bytes each).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How long a key stays out of use for the MSISDN it was given to: longer than the longest
/// authorization the API accepts (600 s) plus the network's delivery time.
pub const QUARANTINE: Duration = Duration::from_secs(15 * 60);

/// The session keys of one operator.
#[derive(Debug)]
pub(super) struct DialogKeys {
    range: u32,
    state: Mutex<KeyState>,
}

#[derive(Debug, Default)]
struct KeyState {
    next: u32,
    /// Keys given out per MSISDN, with when.
    used: HashMap<String, Vec<(u16, Instant)>>,
    /// Every key given out, oldest first, to forget them after the quarantine.
    order: VecDeque<(Instant, String)>,
}

impl DialogKeys {
    /// Keys `0..range` (the dialect's key space).
    pub(super) fn new(range: u32) -> Self {
        Self {
            range: range.clamp(1, 0x1_0000),
            state: Mutex::new(KeyState {
                next: rand::random::<u32>(),
                ..KeyState::default()
            }),
        }
    }

    /// A key for a new dialog with `msisdn` that it did not get within the quarantine; `None`
    /// when it had every key (a subscriber with more dialogs than keys in 15 minutes).
    pub(super) fn allocate(&self, msisdn: &str, now: Instant) -> Option<u16> {
        let mut state = self.lock();
        state.forget_before(now.checked_sub(QUARANTINE));
        let range = self.range;
        let taken: Vec<u16> = state
            .used
            .get(msisdn)
            .map(|keys| keys.iter().map(|(k, _)| *k).collect())
            .unwrap_or_default();
        for _ in 0..range {
            state.next = state.next.wrapping_add(1);
            let key = u16::try_from(state.next % range).ok()?;
            if !taken.contains(&key) {
                state.note(msisdn, key, now);
                return Some(key);
            }
        }
        None
    }

    /// Gives back `key`, handed to `msisdn` for a dialog that was never created (an idempotent
    /// retry, a store failure), so it costs that MSISDN no key.
    pub(super) fn release(&self, msisdn: &str, key: u16) {
        let mut state = self.lock();
        if let Some(keys) = state.used.get_mut(msisdn) {
            if let Some(at) = keys.iter().rposition(|(k, _)| *k == key) {
                keys.remove(at);
            }
            if keys.is_empty() {
                state.used.remove(msisdn);
            }
        }
        // The `order` entry stays until it ages out; forgetting it then finds nothing.
    }

    /// Marks `key` as used by `msisdn` now (a dialog taken over after a restart).
    pub(super) fn reserve(&self, msisdn: &str, key: u16, now: Instant) {
        self.lock().note(msisdn, key, now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeyState> {
        // The state is a cache of recent keys; a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl KeyState {
    fn note(&mut self, msisdn: &str, key: u16, now: Instant) {
        self.used
            .entry(msisdn.to_owned())
            .or_default()
            .push((key, now));
        self.order.push_back((now, msisdn.to_owned()));
    }

    fn forget_before(&mut self, cutoff: Option<Instant>) {
        let Some(cutoff) = cutoff else {
            return;
        };
        while let Some((at, _)) = self.order.front() {
            if *at >= cutoff {
                break;
            }
            let Some((_, msisdn)) = self.order.pop_front() else {
                break;
            };
            if let Some(keys) = self.used.get_mut(&msisdn) {
                keys.retain(|(_, used)| *used >= cutoff);
                if keys.is_empty() {
                    self.used.remove(&msisdn);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_not_given_to_the_same_msisdn_again_within_the_quarantine() {
        let keys = DialogKeys::new(4);
        let t0 = Instant::now();
        let mine: Vec<u16> = (0..4)
            .map(|_| keys.allocate("48600", t0).unwrap())
            .collect();
        let mut sorted = mine.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 1, 2, 3], "every key once");
        // All four are in quarantine for this MSISDN, not for another one.
        assert_eq!(keys.allocate("48600", t0), None);
        assert!(keys.allocate("48601", t0).is_some());
        // After the quarantine they come back, and the memory is freed.
        let later = t0 + QUARANTINE + Duration::from_secs(1);
        assert!(keys.allocate("48600", later).is_some());
        let state = keys.lock();
        assert_eq!(state.order.len(), 1);
        assert_eq!(state.used.len(), 1);
    }

    #[test]
    fn a_released_key_is_not_in_quarantine() {
        let keys = DialogKeys::new(1);
        let t0 = Instant::now();
        let k = keys.allocate("48600", t0).unwrap();
        keys.release("48600", k);
        assert_eq!(keys.allocate("48600", t0), Some(k));
    }

    #[test]
    fn a_reserved_key_is_skipped() {
        let keys = DialogKeys::new(2);
        let t0 = Instant::now();
        keys.reserve("48600", 1, t0);
        assert_eq!(keys.allocate("48600", t0), Some(0));
        assert_eq!(keys.allocate("48600", t0), None);
    }
}
