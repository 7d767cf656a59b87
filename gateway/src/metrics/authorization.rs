//! Authorizations: started and completed by outcome, in flight, end-to-end latency, the user's
//! answer time and the gateway's own share, prompts per channel, PIN failures and lockouts,
//! and OTA (SIM applet secured packet) failures.
//!
//! The authorization manager resolves one [`OperatorMetrics`] per configured operator at start-up
//! ([`AuthorizationMetrics::operator`]) and calls it on each step of an authorization:
//!
//! ```text
//! let m = metrics.authorization.operator("orange");          // once, at start-up
//! m.started(Channel::Ussd, Loa::Loa2);                  // admitted
//! m.prompt_sent(Channel::Ussd);                         // each prompt submitted
//! m.user_answered(Channel::Ussd, answer_wait);          // prompt accepted -> answer
//! m.completed(Channel::Ussd, Loa::Loa2, Outcome::Approved, end_to_end, own_time);
//! ```
//!
//! Every `started` must be followed by exactly one `completed` (it keeps the in-flight gauge).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::channel::admission::Refusal;

use super::{label_enum, seconds, MACHINE_LATENCY_BUCKETS, USER_LATENCY_BUCKETS};

label_enum! {
    /// The channel carrying the prompt.
    pub enum Channel {
        /// USSD push.
        Ussd => "ussd",
        /// SIM applet over secured SMS-PP.
        Stk => "stk",
    }
}

label_enum! {
    /// Level of assurance asked for.
    pub enum Loa {
        /// Possession (OK / Cancel).
        Loa2 => "loa2",
        /// Possession and PIN.
        Loa3 => "loa3",
    }
}

label_enum! {
    /// How an authorization ended (mirrors `channel::AuthResult`, plus the authorization manager's
    /// own endings).
    pub enum Outcome {
        /// The user approved.
        Approved => "approved",
        /// The user refused.
        Denied => "denied",
        /// Wrong PIN (attempts left).
        WrongPin => "wrong_pin",
        /// No answer in time.
        Expired => "expired",
        /// The user or the network aborted the dialog.
        Aborted => "aborted",
        /// The PIN is (now) blocked.
        PinBlocked => "pin_blocked",
        /// The SIM or its answer failed.
        SimError => "sim_error",
        /// The prompt never reached the network.
        DeliveryError => "delivery_error",
        /// The request could not be served as given.
        Invalid => "invalid",
        /// No bind or channel available.
        Unavailable => "unavailable",
        /// The relying party cancelled it.
        Cancelled => "cancelled",
    }
}

label_enum! {
    /// Which OTA check failed on a SIM applet exchange.
    pub enum OtaFailure {
        /// The card's PoR reported a cryptographic checksum failure.
        CcFailed => "cc_failed",
        /// The card refused the counter (too low, or blocked).
        CounterRejected => "counter_rejected",
        /// The PoR itself did not verify (our checks of the card's answer).
        BadAnswer => "bad_answer",
        /// Any other PoR status.
        Other => "other",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StartLabels {
    operator: String,
    channel: Channel,
    loa: Loa,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DoneLabels {
    operator: String,
    channel: Channel,
    loa: Loa,
    outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OpChannelLabels {
    operator: String,
    channel: Channel,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ChannelOutcomeLabels {
    channel: Channel,
    outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ChannelLabels {
    channel: Channel,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusalLabels {
    operator: String,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperatorLabels {
    operator: String,
}

const REFUSALS: [Refusal; 2] = [Refusal::NoBind, Refusal::QueueTooLong];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OtaLabels {
    operator: String,
    kind: OtaFailure,
}

/// The authorization families; hand out per-operator handles with [`AuthorizationMetrics::operator`].
#[derive(Debug)]
pub struct AuthorizationMetrics {
    started: Family<StartLabels, Counter>,
    completed: Family<DoneLabels, Counter>,
    in_flight: Family<OpChannelLabels, Gauge>,
    prompts: Family<OpChannelLabels, Counter>,
    pin_failures: Family<OpChannelLabels, Counter>,
    pin_lockouts: Family<OpChannelLabels, Counter>,
    ota_failures: Family<OtaLabels, Counter>,
    resumed: Family<OpChannelLabels, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    awaiting_prompts: Family<OperatorLabels, Gauge>,
    answers_ignored: Family<OpChannelLabels, Counter>,
    cross_node_answers: Family<OperatorLabels, Counter>,
    ota_counter_raises: Family<OperatorLabels, Counter>,
    duration: Family<ChannelOutcomeLabels, Histogram>,
    user_answer: Family<ChannelLabels, Histogram>,
    own: Family<ChannelLabels, Histogram>,
}

/// Pre-resolved handles of one operator; every method only indexes arrays.
#[derive(Debug, Clone)]
pub struct OperatorMetrics {
    /// `[channel][loa]`.
    started: Vec<Counter>,
    /// `[channel][loa][outcome]`.
    completed: Vec<Counter>,
    /// `[channel]` for the rest.
    in_flight: Vec<Gauge>,
    prompts: Vec<Counter>,
    pin_failures: Vec<Counter>,
    pin_lockouts: Vec<Counter>,
    /// `[kind]`.
    ota_failures: Vec<Counter>,
    /// `[channel]`.
    resumed: Vec<Counter>,
    /// `[refusal]`, in `REFUSALS` order.
    refusals: Vec<Counter>,
    awaiting_prompts: Gauge,
    /// `[channel]`.
    answers_ignored: Vec<Counter>,
    cross_node_answers: Counter,
    ota_counter_raises: Counter,
    /// `[channel][outcome]`.
    duration: Vec<Histogram>,
    user_answer: Vec<Histogram>,
    own: Vec<Histogram>,
}

const LOAS: usize = 2;
const OUTCOMES: usize = 11;

impl AuthorizationMetrics {
    /// Registers the authorization families.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            started: Family::default(),
            completed: Family::default(),
            in_flight: Family::default(),
            prompts: Family::default(),
            pin_failures: Family::default(),
            pin_lockouts: Family::default(),
            ota_failures: Family::default(),
            resumed: Family::default(),
            refusals: Family::default(),
            awaiting_prompts: Family::default(),
            answers_ignored: Family::default(),
            cross_node_answers: Family::default(),
            ota_counter_raises: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(USER_LATENCY_BUCKETS)),
            user_answer: Family::new_with_constructor(|| Histogram::new(USER_LATENCY_BUCKETS)),
            own: Family::new_with_constructor(|| Histogram::new(MACHINE_LATENCY_BUCKETS)),
        };
        registry.register(
            "authorizations_started",
            "Authorizations admitted, by operator, channel and level of assurance",
            m.started.clone(),
        );
        registry.register(
            "authorizations_completed",
            "Authorizations ended, by operator, channel, level of assurance and outcome",
            m.completed.clone(),
        );
        registry.register(
            "authorizations_in_flight",
            "Authorizations admitted and not yet ended",
            m.in_flight.clone(),
        );
        registry.register(
            "authorization_duration_seconds",
            "End-to-end time of an authorization, from admission to its outcome",
            m.duration.clone(),
        );
        registry.register(
            "user_answer_duration_seconds",
            "Time from the prompt being accepted by the SMSC to the user's answer",
            m.user_answer.clone(),
        );
        registry.register(
            "authorization_own_duration_seconds",
            "Time an authorization spent inside the gateway (end-to-end minus the waits on the SMSC and the user)",
            m.own.clone(),
        );
        registry.register(
            "prompts",
            "Consent prompts submitted to the network, by operator and channel",
            m.prompts.clone(),
        );
        registry.register(
            "pin_failures",
            "Wrong PINs entered, by operator and channel",
            m.pin_failures.clone(),
        );
        registry.register(
            "pin_lockouts",
            "PINs blocked after too many failures, by operator and channel",
            m.pin_lockouts.clone(),
        );
        registry.register(
            "ota_failures",
            "SIM applet exchanges failed in the OTA layer, by operator and check",
            m.ota_failures.clone(),
        );
        registry.register(
            "authorizations_resumed",
            "Authorizations taken over after a restart (their prompt was out, the answer is awaited), by operator and channel",
            m.resumed.clone(),
        );
        registry.register(
            "admission_refusals",
            "Starts refused at the door because the operator's binds cannot carry the prompt in time, by operator and reason (no_bind, queue_too_long)",
            m.refusals.clone(),
        );
        registry.register(
            "answers_ignored",
            "Answers that changed nothing, by operator and channel: no open dialog or push for them, late (after the end), duplicated, or another prompt's",
            m.answers_ignored.clone(),
        );
        registry.register(
            "cross_node_answers",
            "Answers this node took for authorizations another node prompted (a shared store: the SMSC hands answers to any bind), by operator",
            m.cross_node_answers.clone(),
        );
        registry.register(
            "ota_floor_raises",
            "Cards that reported our OTA counter too low: the floor was raised (by 65 536, durably) and the push sent again, by operator",
            m.ota_counter_raises.clone(),
        );
        registry.register(
            "admission_awaiting_prompts",
            "Admitted prompts not yet taken by the SMSC, by operator (what admission counts as waiting)",
            m.awaiting_prompts.clone(),
        );
        // Operator-free series exist from the start, so dashboards show zeros, not gaps.
        for &channel in Channel::ALL {
            drop(m.user_answer.get_or_create(&ChannelLabels { channel }));
            drop(m.own.get_or_create(&ChannelLabels { channel }));
        }
        m
    }

    /// Resolves every handle of `operator` (call once per configured operator, at start-up;
    /// calling again returns handles on the same series).
    pub fn operator(&self, operator: &str) -> OperatorMetrics {
        let op = || operator.to_owned();
        let mut out = OperatorMetrics {
            started: Vec::new(),
            completed: Vec::new(),
            in_flight: Vec::new(),
            prompts: Vec::new(),
            pin_failures: Vec::new(),
            pin_lockouts: Vec::new(),
            ota_failures: Vec::new(),
            resumed: Vec::new(),
            refusals: REFUSALS
                .iter()
                .map(|r| {
                    self.refusals.get_or_create_owned(&RefusalLabels {
                        operator: op(),
                        reason: r.as_str(),
                    })
                })
                .collect(),
            awaiting_prompts: self
                .awaiting_prompts
                .get_or_create_owned(&OperatorLabels { operator: op() }),
            ota_counter_raises: self
                .ota_counter_raises
                .get_or_create_owned(&OperatorLabels { operator: op() }),
            cross_node_answers: self
                .cross_node_answers
                .get_or_create_owned(&OperatorLabels { operator: op() }),
            answers_ignored: Channel::ALL
                .iter()
                .map(|&channel| {
                    self.answers_ignored.get_or_create_owned(&OpChannelLabels {
                        operator: op(),
                        channel,
                    })
                })
                .collect(),
            duration: Vec::new(),
            user_answer: Vec::new(),
            own: Vec::new(),
        };
        for &channel in Channel::ALL {
            for &loa in Loa::ALL {
                out.started
                    .push(self.started.get_or_create_owned(&StartLabels {
                        operator: op(),
                        channel,
                        loa,
                    }));
                for &outcome in Outcome::ALL {
                    out.completed
                        .push(self.completed.get_or_create_owned(&DoneLabels {
                            operator: op(),
                            channel,
                            loa,
                            outcome,
                        }));
                }
            }
            let l = OpChannelLabels {
                operator: op(),
                channel,
            };
            out.in_flight.push(self.in_flight.get_or_create_owned(&l));
            out.prompts.push(self.prompts.get_or_create_owned(&l));
            out.pin_failures
                .push(self.pin_failures.get_or_create_owned(&l));
            out.pin_lockouts
                .push(self.pin_lockouts.get_or_create_owned(&l));
            out.resumed.push(self.resumed.get_or_create_owned(&l));
            for &outcome in Outcome::ALL {
                out.duration.push(
                    self.duration
                        .get_or_create_owned(&ChannelOutcomeLabels { channel, outcome }),
                );
            }
            out.user_answer.push(
                self.user_answer
                    .get_or_create_owned(&ChannelLabels { channel }),
            );
            out.own
                .push(self.own.get_or_create_owned(&ChannelLabels { channel }));
        }
        for &kind in OtaFailure::ALL {
            out.ota_failures
                .push(self.ota_failures.get_or_create_owned(&OtaLabels {
                    operator: op(),
                    kind,
                }));
        }
        out
    }
}

impl OperatorMetrics {
    /// A start was refused for lack of capacity.
    pub fn refused(&self, why: Refusal) {
        if let Some(i) = REFUSALS.iter().position(|r| *r == why) {
            self.refusals[i].inc();
        }
    }

    /// A card reported our OTA counter low; the floor was raised.
    pub fn ota_counter_raised(&self) {
        self.ota_counter_raises.inc();
    }

    /// The counter of ignored answers on `channel`.
    pub fn answers_ignored_counter(&self, channel: Channel) -> Counter {
        self.answers_ignored[channel as usize].clone()
    }

    /// The counter of answers taken for another node's prompts.
    pub fn cross_node_answers_counter(&self) -> Counter {
        self.cross_node_answers.clone()
    }

    /// The gauge of admitted prompts not yet taken by the SMSC.
    pub fn awaiting_prompts_gauge(&self) -> Gauge {
        self.awaiting_prompts.clone()
    }

    /// An authorization was admitted.
    pub fn started(&self, channel: Channel, loa: Loa) {
        self.started[channel as usize * LOAS + loa as usize].inc();
        self.in_flight[channel as usize].inc();
    }

    /// An authorization ended with `outcome` after `end_to_end`, of which `own` was spent in
    /// the gateway itself (pass `None` when it was not measured).
    pub fn completed(
        &self,
        channel: Channel,
        loa: Loa,
        outcome: Outcome,
        end_to_end: Duration,
        own: Option<Duration>,
    ) {
        let c = channel as usize;
        self.completed[(c * LOAS + loa as usize) * OUTCOMES + outcome as usize].inc();
        self.in_flight[c].dec();
        self.duration[c * OUTCOMES + outcome as usize].observe(seconds(end_to_end));
        if let Some(own) = own {
            self.own[c].observe(seconds(own));
        }
    }

    /// An authorization left in flight by the last run was taken over: it is in flight again.
    pub fn resumed(&self, channel: Channel) {
        self.resumed[channel as usize].inc();
        self.in_flight[channel as usize].inc();
    }

    /// A prompt (USSD push or secured SMS-PP) was submitted.
    pub fn prompt_sent(&self, channel: Channel) {
        self.prompts[channel as usize].inc();
    }

    /// The user answered `wait` after the prompt was accepted by the SMSC.
    pub fn user_answered(&self, channel: Channel, wait: Duration) {
        self.user_answer[channel as usize].observe(seconds(wait));
    }

    /// A wrong PIN was entered.
    pub fn pin_failure(&self, channel: Channel) {
        self.pin_failures[channel as usize].inc();
    }

    /// A PIN got blocked.
    pub fn pin_lockout(&self, channel: Channel) {
        self.pin_lockouts[channel as usize].inc();
    }

    /// An OTA check failed.
    pub fn ota_failure(&self, kind: OtaFailure) {
        self.ota_failures[kind as usize].inc();
    }

    /// Authorizations in flight on `channel` now.
    pub fn in_flight(&self, channel: Channel) -> i64 {
        self.in_flight[channel as usize].get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_table_size_matches_the_index_arithmetic() {
        assert_eq!(Outcome::ALL.len(), OUTCOMES);
        assert_eq!(Loa::ALL.len(), LOAS);
    }

    #[test]
    fn started_then_completed_leaves_nothing_in_flight_and_counts_the_outcome() {
        let mut registry = Registry::default();
        let m = AuthorizationMetrics::new(&mut registry);
        let op = m.operator("op1");
        op.started(Channel::Stk, Loa::Loa3);
        assert_eq!(op.in_flight(Channel::Stk), 1);
        op.completed(
            Channel::Stk,
            Loa::Loa3,
            Outcome::PinBlocked,
            Duration::from_secs(3),
            None,
        );
        assert_eq!(op.in_flight(Channel::Stk), 0);
        let text = super::super::encode(&registry);
        assert!(text.contains(
            "authorizations_completed_total{operator=\"op1\",channel=\"stk\",loa=\"loa3\",outcome=\"pin_blocked\"} 1"
        ), "{text}");
    }
}
