//! Faults on demand: what the operator's SMSC does on a bad day.
//!
//! A [`Fault`] comes in through `SmscHandle::inject` or the `[faults]` table of the config and
//! lands in the shared [`FaultState`]. Connection tasks consult it for every response they are
//! about to send ([`FaultState::response_action`]) and for every `submit_sm`
//! ([`FaultState::storm_active`]); "drop a bind" goes through the bind registry instead, which
//! owns the binds' kill switches. Randomness comes from a seeded generator so a run can be
//! replayed.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One fault to inject. Faults with a duration or probability replace the previous setting of
/// the same kind; [`Fault::Clear`] resets everything.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Close binds abruptly (no unbind): every bind of `system_id`, or every bind when `None`.
    DropBinds { system_id: Option<String> },
    /// Hold every response for this long before sending it (`Duration::ZERO` turns it off).
    DelayResponses(Duration),
    /// Silently drop each response with this probability (0.0 turns it off).
    DropResponses { probability: f64 },
    /// Answer the next `count` requests (other than binds) with `generic_nack` (ESME_RSYSERR).
    GenericNack { count: u32 },
    /// Answer every `submit_sm` with ESME_RTHROTTLED for this long, from now.
    ThrottleStorm(Duration),
    /// The SMSC goes down for this long: every bind is dropped at once and connections are
    /// closed as soon as they are accepted until the time is up. The network behind it keeps
    /// running: handsets keep their dialogs and their answers wait for a receiver.
    Outage(Duration),
    /// Send `count` malformed PDUs in all, one at a time on whichever bound connection runs
    /// next (an unknown command id and a `deliver_sm` cut short, alternately). A correct ESME
    /// answers each with `generic_nack` and keeps the bind.
    MalformedPdus { count: u32 },
    /// Turn every fault off.
    Clear,
}

/// What to do with a response the connection is about to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseAction {
    /// Send it now.
    Send,
    /// Send it after this delay.
    Delay(Duration),
    /// Do not send it at all.
    Drop,
    /// Send `generic_nack` with the request's sequence number instead.
    Nack,
}

#[derive(Debug)]
struct Inner {
    delay: Duration,
    drop_probability: f64,
    nacks_left: u32,
    storm_until: Option<Instant>,
    outage_until: Option<Instant>,
    malformed_left: u32,
    rng: SplitMix64,
}

/// The fault settings shared by all connections of one SMSC.
#[derive(Debug)]
pub struct FaultState {
    inner: Mutex<Inner>,
}

impl FaultState {
    /// No faults; `seed` feeds the drop-probability draws.
    pub fn new(seed: u64) -> Self {
        Self {
            inner: Mutex::new(Inner {
                delay: Duration::ZERO,
                drop_probability: 0.0,
                nacks_left: 0,
                storm_until: None,
                outage_until: None,
                malformed_left: 0,
                rng: SplitMix64(seed),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain numbers behind, still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a fault that acts on responses or submits. `DropBinds` is not stored here (the
    /// registry acts on it at once); it is accepted and ignored.
    pub fn apply(&self, now: Instant, fault: &Fault) {
        let mut s = self.lock();
        match fault {
            Fault::DropBinds { .. } => {}
            Fault::DelayResponses(d) => s.delay = *d,
            Fault::DropResponses { probability } => {
                s.drop_probability = probability.clamp(0.0, 1.0);
            }
            Fault::GenericNack { count } => s.nacks_left = *count,
            Fault::ThrottleStorm(d) => s.storm_until = Some(now + *d),
            Fault::Outage(d) => s.outage_until = Some(now + *d),
            Fault::MalformedPdus { count } => s.malformed_left = *count,
            Fault::Clear => {
                s.delay = Duration::ZERO;
                s.drop_probability = 0.0;
                s.nacks_left = 0;
                s.storm_until = None;
                s.outage_until = None;
                s.malformed_left = 0;
            }
        }
    }

    /// Consumes one pending `generic_nack`. A request answered so was not processed: the submit
    /// handler asks before it hands a message to the network, so a nacked message never reaches
    /// a handset.
    pub fn take_nack(&self) -> bool {
        let mut s = self.lock();
        if s.nacks_left > 0 {
            s.nacks_left -= 1;
            true
        } else {
            false
        }
    }

    /// Whether a throttle storm is on at `now`.
    pub fn storm_active(&self, now: Instant) -> bool {
        self.lock().storm_until.is_some_and(|until| now < until)
    }

    /// Whether the SMSC is down at `now` (connections are closed on accept).
    pub fn outage_active(&self, now: Instant) -> bool {
        self.lock().outage_until.is_some_and(|until| now < until)
    }

    /// Consumes one pending malformed PDU; `Some(n)` numbers it (0, 1, ...) so the sender can
    /// alternate its kinds.
    pub fn take_malformed(&self) -> Option<u32> {
        let mut s = self.lock();
        if s.malformed_left > 0 {
            s.malformed_left -= 1;
            Some(s.malformed_left)
        } else {
            None
        }
    }

    /// Whether malformed PDUs are waiting to be sent.
    pub fn malformed_pending(&self) -> bool {
        self.lock().malformed_left > 0
    }

    /// Decides the fate of one response to an ESME request. Nack takes precedence over drop,
    /// drop over delay.
    pub fn response_action(&self) -> ResponseAction {
        if self.take_nack() {
            return ResponseAction::Nack;
        }
        let mut s = self.lock();
        if s.drop_probability > 0.0 && s.rng.next_f64() < s.drop_probability {
            return ResponseAction::Drop;
        }
        if s.delay > Duration::ZERO {
            return ResponseAction::Delay(s.delay);
        }
        ResponseAction::Send
    }
}

/// SplitMix64: small, seedable, good enough to decide which responses to lose.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn no_fault_means_send() {
        let f = FaultState::new(1);
        assert_eq!(f.response_action(), ResponseAction::Send);
        assert!(!f.storm_active(Instant::now()));
    }

    #[test]
    fn generic_nack_answers_exactly_count_requests() {
        let f = FaultState::new(1);
        f.apply(Instant::now(), &Fault::GenericNack { count: 2 });
        assert_eq!(f.response_action(), ResponseAction::Nack);
        assert_eq!(f.response_action(), ResponseAction::Nack);
        assert_eq!(f.response_action(), ResponseAction::Send);
    }

    #[test]
    fn a_storm_ends_after_its_duration() {
        let f = FaultState::new(1);
        let t0 = Instant::now();
        f.apply(t0, &Fault::ThrottleStorm(Duration::from_secs(2)));
        assert!(f.storm_active(t0 + Duration::from_secs(1)));
        assert!(!f.storm_active(t0 + Duration::from_secs(2)));
    }

    #[test]
    fn drop_probability_one_drops_everything_and_zero_nothing() {
        let f = FaultState::new(7);
        f.apply(Instant::now(), &Fault::DropResponses { probability: 1.0 });
        assert!((0..100).all(|_| f.response_action() == ResponseAction::Drop));
        f.apply(Instant::now(), &Fault::DropResponses { probability: 0.0 });
        assert!((0..100).all(|_| f.response_action() == ResponseAction::Send));
    }

    #[test]
    fn half_probability_drops_about_half() {
        let f = FaultState::new(42);
        f.apply(Instant::now(), &Fault::DropResponses { probability: 0.5 });
        let dropped = (0..10_000)
            .filter(|_| f.response_action() == ResponseAction::Drop)
            .count();
        assert!((4_500..5_500).contains(&dropped), "{dropped}");
    }

    #[test]
    fn an_outage_ends_after_its_duration_and_malformed_pdus_are_counted_down() {
        let f = FaultState::new(1);
        let t0 = Instant::now();
        f.apply(t0, &Fault::Outage(Duration::from_secs(3)));
        assert!(f.outage_active(t0 + Duration::from_secs(2)));
        assert!(!f.outage_active(t0 + Duration::from_secs(3)));
        f.apply(t0, &Fault::MalformedPdus { count: 2 });
        assert!(f.malformed_pending());
        assert_eq!(f.take_malformed(), Some(1));
        assert_eq!(f.take_malformed(), Some(0));
        assert_eq!(f.take_malformed(), None);
        assert!(!f.malformed_pending());
    }

    #[test]
    fn clear_turns_off_delay_and_storm() {
        let f = FaultState::new(1);
        let t0 = Instant::now();
        f.apply(t0, &Fault::DelayResponses(Duration::from_millis(30)));
        f.apply(t0, &Fault::ThrottleStorm(Duration::from_secs(9)));
        assert_eq!(
            f.response_action(),
            ResponseAction::Delay(Duration::from_millis(30))
        );
        f.apply(t0, &Fault::Clear);
        assert_eq!(f.response_action(), ResponseAction::Send);
        assert!(!f.storm_active(t0));
    }
}
