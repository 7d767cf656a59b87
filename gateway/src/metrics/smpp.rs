//! SMPP binds: state, PDUs by command and direction, responses by status, window occupancy,
//! `submit_sm` round trip, throttles, reconnects and `generic_nack`s.
//!
//! [`SmppMetrics`] holds the families; each configured bind gets one [`BindMetrics`] from
//! [`SmppMetrics::bind`] (all label handles resolved there), which goes into
//! [`BindConfig::with_metrics`](crate::smpp::bind::BindConfig::with_metrics). The tokio shell
//! reports state and reconnects, the sans-IO session every PDU, status, round trip (measured
//! with the `now` it is given, never a clock of its own) and its window after each step.
//!
//! `command` and `command_status` values come from fixed tables ([`COMMANDS`],
//! [`STATUSES`]); anything else is `other`, so a misbehaving SMSC cannot grow the series.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use rusmpp::{CommandId, CommandStatus};

use super::{label_enum, seconds, MACHINE_LATENCY_BUCKETS};

label_enum! {
    /// Which way a PDU went.
    pub enum Direction {
        /// Received from the SMSC.
        In => "in",
        /// Sent to the SMSC.
        Out => "out",
    }
}

label_enum! {
    /// Where a bind is in its life.
    pub enum BindState {
        /// No connection (waiting to reconnect, or stopped).
        Down => "down",
        /// TCP connect under way.
        Connecting => "connecting",
        /// Connected, bind PDU sent, no answer yet.
        Binding => "binding",
        /// Bound: submissions flow.
        Bound => "bound",
        /// Draining for a graceful unbind.
        Unbinding => "unbinding",
    }
}

/// The `command` label table: command id and label value; anything else is `other`.
pub const COMMANDS: &[(u32, &str)] = &[
    (0x0000_0001, "bind_receiver"),
    (0x8000_0001, "bind_receiver_resp"),
    (0x0000_0002, "bind_transmitter"),
    (0x8000_0002, "bind_transmitter_resp"),
    (0x0000_0009, "bind_transceiver"),
    (0x8000_0009, "bind_transceiver_resp"),
    (0x0000_0004, "submit_sm"),
    (0x8000_0004, "submit_sm_resp"),
    (0x0000_0005, "deliver_sm"),
    (0x8000_0005, "deliver_sm_resp"),
    (0x0000_0015, "enquire_link"),
    (0x8000_0015, "enquire_link_resp"),
    (0x0000_0006, "unbind"),
    (0x8000_0006, "unbind_resp"),
    (0x8000_0000, "generic_nack"),
    (0x0000_0102, "alert_notification"),
    (0x0000_0103, "data_sm"),
    (0x8000_0103, "data_sm_resp"),
];

/// The `command_status` label table (SMPP 3.4 / 5.0 names); anything else is `other`.
pub const STATUSES: &[(u32, &str)] = &[
    (0x0000_0000, "ESME_ROK"),
    (0x0000_0001, "ESME_RINVMSGLEN"),
    (0x0000_0002, "ESME_RINVCMDLEN"),
    (0x0000_0003, "ESME_RINVCMDID"),
    (0x0000_0004, "ESME_RINVBNDSTS"),
    (0x0000_0005, "ESME_RALYBND"),
    (0x0000_0008, "ESME_RSYSERR"),
    (0x0000_000A, "ESME_RINVSRCADR"),
    (0x0000_000B, "ESME_RINVDSTADR"),
    (0x0000_000D, "ESME_RBINDFAIL"),
    (0x0000_000E, "ESME_RINVPASWD"),
    (0x0000_000F, "ESME_RINVSYSID"),
    (0x0000_0014, "ESME_RMSGQFUL"),
    (0x0000_0045, "ESME_RSUBMITFAIL"),
    (0x0000_0058, "ESME_RTHROTTLED"),
    (0x0000_00C4, "ESME_RINVTLVVAL"),
    (0x0000_00FE, "ESME_RDELIVERYFAILURE"),
    (0x0000_00FF, "ESME_RUNKNOWNERR"),
];

/// Index of `id` in [`COMMANDS`], or `COMMANDS.len()` for `other`.
pub fn command_index(id: CommandId) -> usize {
    let raw = u32::from(id);
    COMMANDS
        .iter()
        .position(|(v, _)| *v == raw)
        .unwrap_or(COMMANDS.len())
}

/// Index of `status` in [`STATUSES`], or `STATUSES.len()` for `other`.
pub fn status_index(status: CommandStatus) -> usize {
    let raw = u32::from(status);
    STATUSES
        .iter()
        .position(|(v, _)| *v == raw)
        .unwrap_or(STATUSES.len())
}

/// The `command_status` label of `status`.
pub fn status_label(status: CommandStatus) -> &'static str {
    STATUSES
        .get(status_index(status))
        .map_or("other", |(_, name)| name)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BindLabels {
    operator: String,
    bind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    operator: String,
    bind: String,
    state: BindState,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PduLabels {
    operator: String,
    bind: String,
    command: &'static str,
    direction: Direction,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatusLabels {
    operator: String,
    bind: String,
    command_status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct NackLabels {
    operator: String,
    bind: String,
    direction: Direction,
}

/// The SMPP families; hand out per-bind handles with [`SmppMetrics::bind`].
#[derive(Debug)]
pub struct SmppMetrics {
    state: Family<StateLabels, Gauge>,
    pdus: Family<PduLabels, Counter>,
    responses: Family<StatusLabels, Counter>,
    window: Family<BindLabels, Gauge>,
    window_size: Family<BindLabels, Gauge>,
    submit_rate: Family<BindLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    round_trip: Family<BindLabels, Histogram>,
    throttles: Family<BindLabels, Counter>,
    mo_refused: Family<BindLabels, Counter>,
    reconnects: Family<BindLabels, Counter>,
    keepalive_graces: Family<BindLabels, Counter>,
    nacks: Family<NackLabels, Counter>,
}

/// Pre-resolved handles of one bind. Cheap to call from the session's hot path.
#[derive(Debug)]
pub struct BindMetrics {
    state: Vec<Gauge>,
    /// `[command][direction]`, `other` last.
    pdus: Vec<Counter>,
    /// `[status]`, `other` last.
    responses: Vec<Counter>,
    window: Gauge,
    window_size: Gauge,
    submit_rate: Gauge<f64, std::sync::atomic::AtomicU64>,
    round_trip: Histogram,
    throttles: Counter,
    mo_refused: Counter,
    reconnects: Counter,
    keepalive_graces: Counter,
    nacks: Vec<Counter>,
}

impl SmppMetrics {
    /// Registers the SMPP families.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            state: Family::default(),
            pdus: Family::default(),
            responses: Family::default(),
            window: Family::default(),
            window_size: Family::default(),
            submit_rate: Family::default(),
            round_trip: Family::new_with_constructor(|| Histogram::new(MACHINE_LATENCY_BUCKETS)),
            throttles: Family::default(),
            mo_refused: Family::default(),
            reconnects: Family::default(),
            keepalive_graces: Family::default(),
            nacks: Family::default(),
        };
        registry.register(
            "smpp_bind_state",
            "1 for the state each bind is in now, 0 for the others",
            m.state.clone(),
        );
        registry.register(
            "smpp_pdus",
            "SMPP PDUs by command and direction",
            m.pdus.clone(),
        );
        registry.register(
            "smpp_responses",
            "SMPP responses received from the SMSC, by command_status",
            m.responses.clone(),
        );
        registry.register(
            "smpp_window_occupancy",
            "submit_sm written and not yet answered",
            m.window.clone(),
        );
        registry.register(
            "smpp_submit_rate_limit",
            "Submits per second a bind's pacer allows now (the ceiling, cut on throttling and grown back); 0: unlimited",
            m.submit_rate.clone(),
        );
        registry.register(
            "smpp_window_size",
            "Most submit_sm a bind may have unanswered",
            m.window_size.clone(),
        );
        registry.register(
            "smpp_submit_round_trip_seconds",
            "Time from writing a submit_sm to reading its answer",
            m.round_trip.clone(),
        );
        registry.register(
            "smpp_throttles",
            "submit_sm answered ESME_RTHROTTLED or ESME_RMSGQFUL (re-sent at the bind's next token)",
            m.throttles.clone(),
        );
        registry.register(
            "smpp_mo_refused",
            "deliver_sm answered with a temporary error (ESME_RX_T_APPN), for the SMSC to deliver \
             again: the shared store could not be reached, or an answer's ending not stored",
            m.mo_refused.clone(),
        );
        registry.register(
            "smpp_reconnects",
            "Connection attempts after the first one of a bind",
            m.reconnects.clone(),
        );
        registry.register(
            "smpp_keepalive_graces",
            "Dead-link verdicts put off because the keep-alive timer fired late (this process was busy, the answer may be unread)",
            m.keepalive_graces.clone(),
        );
        registry.register(
            "smpp_generic_nacks",
            "generic_nack PDUs by direction",
            m.nacks.clone(),
        );
        m
    }

    /// Resolves every handle of bind `bind` of `operator` (names from the configuration).
    /// The bind starts `down`.
    pub fn bind(&self, operator: &str, bind: &str) -> BindMetrics {
        let labels = BindLabels {
            operator: operator.to_owned(),
            bind: bind.to_owned(),
        };
        let state = BindState::ALL
            .iter()
            .map(|&state| {
                self.state.get_or_create_owned(&StateLabels {
                    operator: operator.to_owned(),
                    bind: bind.to_owned(),
                    state,
                })
            })
            .collect();
        let command_names = COMMANDS.iter().map(|(_, n)| *n).chain(["other"]);
        let mut pdus = Vec::new();
        for command in command_names {
            for &direction in Direction::ALL {
                pdus.push(self.pdus.get_or_create_owned(&PduLabels {
                    operator: operator.to_owned(),
                    bind: bind.to_owned(),
                    command,
                    direction,
                }));
            }
        }
        let responses = STATUSES
            .iter()
            .map(|(_, n)| *n)
            .chain(["other"])
            .map(|command_status| {
                self.responses.get_or_create_owned(&StatusLabels {
                    operator: operator.to_owned(),
                    bind: bind.to_owned(),
                    command_status,
                })
            })
            .collect();
        let nacks = Direction::ALL
            .iter()
            .map(|&direction| {
                self.nacks.get_or_create_owned(&NackLabels {
                    operator: operator.to_owned(),
                    bind: bind.to_owned(),
                    direction,
                })
            })
            .collect();
        let m = BindMetrics {
            state,
            pdus,
            responses,
            window: self.window.get_or_create_owned(&labels),
            window_size: self.window_size.get_or_create_owned(&labels),
            submit_rate: self.submit_rate.get_or_create_owned(&labels),
            round_trip: self.round_trip.get_or_create_owned(&labels),
            throttles: self.throttles.get_or_create_owned(&labels),
            mo_refused: self.mo_refused.get_or_create_owned(&labels),
            reconnects: self.reconnects.get_or_create_owned(&labels),
            keepalive_graces: self.keepalive_graces.get_or_create_owned(&labels),
            nacks,
        };
        m.set_state(BindState::Down);
        m
    }
}

impl BindMetrics {
    /// The bind moved to `state`.
    pub fn set_state(&self, state: BindState) {
        for (i, g) in self.state.iter().enumerate() {
            g.set(i64::from(i == state as usize));
        }
    }

    /// The state the gauge shows now (tests).
    pub fn state(&self) -> Option<BindState> {
        BindState::ALL
            .iter()
            .copied()
            .find(|s| self.state[*s as usize].get() == 1)
    }

    /// A PDU went `direction`; `generic_nack`s are also counted on their own.
    pub fn pdu(&self, direction: Direction, id: CommandId) {
        let c = command_index(id);
        self.pdus[c * Direction::ALL.len() + direction as usize].inc();
        if id == CommandId::GenericNack {
            self.nacks[direction as usize].inc();
        }
    }

    /// PDUs of `id` counted so far in `direction` (tests).
    pub fn pdu_count(&self, direction: Direction, id: CommandId) -> u64 {
        self.pdus[command_index(id) * Direction::ALL.len() + direction as usize].get()
    }

    /// A response with `status` came from the SMSC.
    pub fn response(&self, status: CommandStatus) {
        self.responses[status_index(status)].inc();
    }

    /// Responses with `status` so far (tests).
    pub fn response_count(&self, status: CommandStatus) -> u64 {
        self.responses[status_index(status)].get()
    }

    /// `in_flight` submit_sm are unanswered now.
    pub fn window(&self, in_flight: usize) {
        self.window
            .set(i64::try_from(in_flight).unwrap_or(i64::MAX));
    }

    /// The window occupancy the gauge shows now (tests).
    pub fn window_occupancy(&self) -> i64 {
        self.window.get()
    }

    /// The bind's window size.
    pub fn window_size(&self, size: usize) {
        self.window_size
            .set(i64::try_from(size).unwrap_or(i64::MAX));
    }

    /// A submit_sm was answered `rtt` after it was written.
    pub fn round_trip(&self, rtt: Duration) {
        self.round_trip.observe(seconds(rtt));
    }

    /// The bind's pacer allows `rate` submits per second now (0: unlimited).
    pub fn submit_rate(&self, rate: f64) {
        self.submit_rate.set(rate);
    }

    /// A submit_sm was throttled.
    pub fn throttled(&self) {
        self.throttles.inc();
    }

    /// A deliver_sm was answered with a temporary error.
    pub fn mo_refused(&self) {
        self.mo_refused.inc();
    }

    /// Throttles so far (tests).
    pub fn throttle_count(&self) -> u64 {
        self.throttles.get()
    }

    /// A reconnect attempt started.
    pub fn reconnect(&self) {
        self.reconnects.inc();
    }

    /// A dead-link verdict was put off: the keep-alive timer fired late.
    pub fn keepalive_grace(&self) {
        self.keepalive_graces.inc();
    }

    /// Reconnect attempts so far (tests).
    pub fn reconnect_count(&self) -> u64 {
        self.reconnects.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_status_and_command_map_to_other() {
        assert_eq!(status_label(CommandStatus::Other(0x0400)), "other");
        assert_eq!(
            status_label(CommandStatus::EsmeRthrottled),
            "ESME_RTHROTTLED"
        );
        assert_eq!(command_index(CommandId::Other(0x1234)), COMMANDS.len());
        assert_eq!(
            COMMANDS[command_index(CommandId::SubmitSmResp)].1,
            "submit_sm_resp"
        );
    }

    #[test]
    fn bind_state_gauge_has_exactly_one_state_set() {
        let mut registry = Registry::default();
        let m = SmppMetrics::new(&mut registry).bind("op", "b1");
        assert_eq!(m.state(), Some(BindState::Down));
        m.set_state(BindState::Bound);
        assert_eq!(m.state(), Some(BindState::Bound));
        let text = super::super::encode(&registry);
        assert!(
            text.contains("smpp_bind_state{operator=\"op\",bind=\"b1\",state=\"bound\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("smpp_bind_state{operator=\"op\",bind=\"b1\",state=\"down\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn generic_nack_counts_as_pdu_and_as_nack() {
        let mut registry = Registry::default();
        let m = SmppMetrics::new(&mut registry).bind("op", "b1");
        m.pdu(Direction::Out, CommandId::GenericNack);
        assert_eq!(m.pdu_count(Direction::Out, CommandId::GenericNack), 1);
        let text = super::super::encode(&registry);
        assert!(
            text.contains(
                "smpp_generic_nacks_total{operator=\"op\",bind=\"b1\",direction=\"out\"} 1"
            ),
            "{text}"
        );
    }
}
