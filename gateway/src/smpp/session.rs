//! Sans-IO ESME session: one SMPP bind, from `bind_*` to `unbind_resp`, with no socket or clock.
//!
//! The bind machine ([`super::bind_machine`]) creates a [`Session`] once a connection is up, feeds it every frame
//! ([`Session::handle_frame`]), wakes it at [`Session::poll_timeout`] ([`Session::handle_timeout`])
//! and writes whatever [`Session::poll_transmit`] yields; callers put submissions in with
//! [`Session::submit`] and read outcomes from [`Session::poll_event`].
//!
//! Inside: a bind state machine (`Binding -> Bound -> Unbinding -> Closed`), sequence numbers
//! 1..=0x7FFF_FFFF with wrap, a queue of submissions waiting for a window slot, ordered by
//! deadline (the submission that must leave soonest goes first; equal deadlines keep their
//! submission order), at most
//! `window` unacknowledged `submit_sm`, each with a response timer), `enquire_link` after
//! `enquire_link_interval` of silence and a dead-link verdict when its answer does not come
//! within `enquire_link_timeout`, and pacing: submits go out at the rate of the bind's
//! [`Pacer`] (the configured `max_submits_per_sec`, cut on `ESME_RTHROTTLED` /
//! `ESME_RMSGQFUL` and grown back while submits wait); a throttled submission goes back to its
//! place in the queue and waits for the next token, not for a pause of the whole bind. A queued
//! submission whose deadline has passed is never written: it fails as
//! [`SubmitFailure::DeadlineExpired`].
//!
//! Guarantee: every submission the session accepted ends with exactly one
//! [`SessionEvent::SubmitAccepted`] or [`SessionEvent::SubmitFailed`], or (when the session
//! closes before it could be answered) is handed back in [`SessionEvent::Closed::unsent`] so
//! that the bind machine can re-send it on the next connection or fail it at its deadline.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rusmpp::{
    pdus::{BindReceiver, BindTransceiver, BindTransmitter, DeliverSm, DeliverSmResp, SubmitSm},
    types::COctetString,
    values::{InterfaceVersion, Npi, Ton},
    Command, CommandId, CommandStatus, Pdu,
};

use super::pacer::Pacer;
use crate::metrics::smpp::{BindMetrics, Direction};
use sim_applet_model::smpp::pdu::{decode_frame, encode_command, generic_nack, Decoded};

/// A timer that fires this late says the process, not the link, was slow.
const LATE_TIMER: Duration = Duration::from_millis(200);
/// How long a late keep-alive verdict is put off to read what may be waiting.
const KEEPALIVE_GRACE: Duration = Duration::from_millis(500);
/// A link silent for this many `enquire_link_timeout`s is dead, however busy the process.
const MAX_KEEPALIVE_GRACES: u32 = 2;

/// Identifier the caller gives a submission; echoed in its final event.
pub type SubmitId = u64;

/// Which bind PDU the session opens with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindKind {
    /// `bind_transceiver`: submits and MO on one connection.
    Transceiver,
    /// `bind_transmitter`: submits only (pair it with a receiver bind).
    Transmitter,
    /// `bind_receiver`: MO and receipts only; submits are rejected.
    Receiver,
}

/// Settings of one bind.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Bind PDU to open with.
    pub bind_kind: BindKind,
    /// `system_id` (at most 15 characters).
    pub system_id: String,
    /// `password` (at most 8 characters).
    pub password: String,
    /// `system_type` (at most 12 characters, may be empty).
    pub system_type: String,
    /// `address_range` (at most 40 characters, may be empty).
    pub address_range: String,
    /// Most unacknowledged `submit_sm` at a time.
    pub window: usize,
    /// Most submissions waiting for a window slot; more are rejected.
    pub max_queued: usize,
    /// Time allowed for a `submit_sm_resp`.
    pub response_timeout: Duration,
    /// Time allowed for the bind response.
    pub bind_timeout: Duration,
    /// Silence after which an `enquire_link` is sent.
    pub enquire_link_interval: Duration,
    /// Time allowed for the `enquire_link_resp` before the link is declared dead.
    pub enquire_link_timeout: Duration,
    /// Submits per second the operator allows on this bind (`None`: only the window and the
    /// SMSC's throttling answers limit them).
    pub max_submits_per_sec: Option<u32>,
    /// Time allowed for in-flight submits to drain and for the `unbind_resp`.
    pub unbind_timeout: Duration,
    /// While closed, every `deliver_sm` is answered ESME_RX_T_APPN (a temporary error: the
    /// SMSC delivers it again later) and not reported: the store an answer must be applied
    /// to cannot be reached, and an answer acknowledged now would be lost.
    pub mo_gate: MoGate,
    /// Report each `deliver_sm` unanswered ([`SessionEvent::MoAwaitingAck`]) and answer it
    /// only when told ([`Session::ack_mo`]): with a shared store, an answer prompted by another
    /// node is acknowledged only once it is checked and applied there.
    pub defer_mo_ack: bool,
}

/// Shared between the store's health and every bind: closed while answers cannot be applied.
#[derive(Debug, Clone, Default)]
pub struct MoGate(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl MoGate {
    /// Closes (`true`) or opens the gate.
    pub fn set_closed(&self, closed: bool) {
        self.0.store(closed, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_closed(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            bind_kind: BindKind::Transceiver,
            system_id: "gateway".into(),
            password: "secret".into(),
            system_type: String::new(),
            address_range: String::new(),
            window: 10,
            max_queued: 1000,
            response_timeout: Duration::from_secs(10),
            bind_timeout: Duration::from_secs(10),
            enquire_link_interval: Duration::from_secs(30),
            enquire_link_timeout: Duration::from_secs(10),
            max_submits_per_sec: None,
            unbind_timeout: Duration::from_secs(5),
            mo_gate: MoGate::default(),
            defer_mo_ack: false,
        }
    }
}

/// A configuration the session cannot bind with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A bind field is too long or not ASCII.
    #[error("bind field `{field}` is invalid (too long or not ASCII, max {max} characters)")]
    BindField {
        /// Field name.
        field: &'static str,
        /// Its maximum length in characters.
        max: usize,
    },
    /// `window` is 0.
    #[error("`window` must be at least 1")]
    ZeroWindow,
}

/// One `submit_sm` to send, with the instant after which it is no longer worth sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitRequest {
    /// The PDU body; the session assigns the sequence number.
    pub submit_sm: SubmitSm,
    /// If still unsent at this instant (queued, throttled, link down), it fails definitely.
    pub deadline: Option<Instant>,
}

/// Why a submission failed for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitFailure {
    /// The SMSC answered with this error status.
    Rejected(CommandStatus),
    /// No `submit_sm_resp` within `response_timeout`; the SMSC may or may not have it.
    ResponseTimeout,
    /// Still unsent at the request's deadline while the bind was up (waiting for the window or
    /// the paced rate: the SMSC takes fewer than are offered).
    DeadlineExpired,
    /// Still unsent at the request's deadline because the bind had no link to send it on.
    NoLinkByDeadline,
    /// Written on a link that then died, and the bind is set not to re-send such submissions
    /// (the SMSC may or may not have it).
    LinkLostInFlight,
    /// The bind was shutting down.
    ShuttingDown,
    /// Too many submissions waiting while the link was down.
    QueueFull,
    /// Accepted by the SMSC, then reported undeliverable in a delivery receipt (the handset or
    /// its SIM refused it).
    Undeliverable,
}

/// Why [`Session::submit`] refused a submission (it is handed back, no event will follow).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitRejected {
    /// The queue holds `max_queued` submissions already.
    #[error("submission queue is full")]
    QueueFull,
    /// The session is unbinding or closed.
    #[error("session is unbinding or closed")]
    NotAccepting,
    /// A receiver bind cannot submit.
    #[error("a receiver bind cannot submit")]
    ReceiverBind,
}

/// Why the session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// Our `unbind` was answered (or timed out) after a graceful drain.
    Unbound,
    /// The SMSC sent `unbind`; we answered it.
    PeerUnbound,
    /// The SMSC refused the bind with this status (0x05 means an old bind still lingers).
    BindRejected(CommandStatus),
    /// No bind response within `bind_timeout`.
    BindTimeout,
    /// No `enquire_link_resp` within `enquire_link_timeout`.
    DeadLink,
    /// The shell reported the transport gone.
    LinkLost,
    /// A frame shorter than the SMPP header: framing cannot be recovered.
    FramingLost,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::Unbound => f.write_str("unbound"),
            CloseReason::PeerUnbound => f.write_str("unbound by the SMSC"),
            CloseReason::BindRejected(status) => write!(f, "bind rejected with {status:?}"),
            CloseReason::BindTimeout => f.write_str("no bind response in time"),
            CloseReason::DeadLink => f.write_str("dead link (no enquire_link_resp in time)"),
            CloseReason::LinkLost => f.write_str("connection lost"),
            CloseReason::FramingLost => f.write_str("framing lost (PDU shorter than its header)"),
        }
    }
}

/// A submission that was not answered before the session closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsent {
    /// Caller's id.
    pub id: SubmitId,
    /// The request, unchanged.
    pub request: SubmitRequest,
    /// Whether it had been written to the link (an answer may have been lost: re-sending it
    /// can duplicate it at the SMSC).
    pub was_in_flight: bool,
}

/// What the session reports to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// The bind was accepted.
    Bound {
        /// The SMSC's `system_id`.
        smsc_system_id: String,
    },
    /// The SMSC accepted a submission (this says nothing about delivery).
    SubmitAccepted {
        /// Caller's id.
        id: SubmitId,
        /// The SMSC's `message_id`.
        message_id: String,
    },
    /// A submission failed for good.
    SubmitFailed {
        /// Caller's id.
        id: SubmitId,
        /// Why.
        reason: SubmitFailure,
    },
    /// The SMSC throttled a submission; it is back in its place in the queue and leaves at the
    /// bind's next token (`until`).
    Throttled {
        /// Caller's id.
        id: SubmitId,
        /// The status received (`ESME_RTHROTTLED` or `ESME_RMSGQFUL`).
        status: CommandStatus,
        /// End of the pause.
        until: Instant,
    },
    /// A `deliver_sm` (MO message or receipt); it has been answered with `deliver_sm_resp`.
    Mo(Box<DeliverSm>),
    /// A `deliver_sm` not answered yet (with `defer_mo_ack`): [`Session::ack_mo`] with `seq`
    /// answers it. Unanswered, the SMSC delivers it again after its own timeout.
    MoAwaitingAck {
        /// The message.
        deliver: Box<DeliverSm>,
        /// Its sequence number, for the answer.
        seq: u32,
    },
    /// The session ended; nothing more will be sent or reported.
    Closed {
        /// Why.
        reason: CloseReason,
        /// Submissions not answered, those written first (in send order), then the queued ones
        /// (in queue order), for the shell to re-send or fail.
        unsent: Vec<Unsent>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Binding {
        seq: u32,
        deadline: Instant,
    },
    Bound,
    /// Draining in-flight submits; `unbind_seq` is set once `unbind` went out.
    Unbinding {
        deadline: Instant,
        unbind_seq: Option<u32>,
    },
    Closed,
}

#[derive(Debug)]
struct Queued {
    id: SubmitId,
    request: SubmitRequest,
}

/// Queue order: earliest deadline first, submissions without one last, then submission order
/// (the counter), so a throttled submission goes back exactly where it was.
type QueueKey = (bool, Option<Instant>, u64);

fn queue_key(request: &SubmitRequest, order: u64) -> QueueKey {
    (request.deadline.is_none(), request.deadline, order)
}

#[derive(Debug)]
struct InFlight {
    id: SubmitId,
    request: SubmitRequest,
    /// Its place in the queue, kept for a throttled resend.
    order: u64,
    deadline: Instant,
    /// When it was written, for the round-trip histogram.
    sent_at: Instant,
}

/// One ESME bind, sans IO. See the module docs.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    state: State,
    next_seq: u32,
    queue: BTreeMap<QueueKey, Queued>,
    /// Submission counter, the tie-break of equal deadlines.
    next_order: u64,
    in_flight: HashMap<u32, InFlight>,
    /// Sequence number and deadline of the outstanding `enquire_link`.
    enquire_link: Option<(u32, Instant)>,
    /// When the outstanding `enquire_link` was sent.
    enquire_link_sent: Instant,
    last_rx: Instant,
    pacer: Pacer,
    /// Smoothed `submit_sm` round trip (1/8 of each new sample, as TCP's SRTT).
    round_trip: Option<Duration>,
    transmit: VecDeque<Bytes>,
    events: VecDeque<SessionEvent>,
    /// Instrumentation (atomics only: no clock, no I/O), when the bind has it.
    metrics: Option<Arc<BindMetrics>>,
}

fn c_string<const MIN: usize, const MAX: usize>(
    value: &str,
    field: &'static str,
) -> Result<COctetString<MIN, MAX>, ConfigError> {
    COctetString::from_str(value).map_err(|_| ConfigError::BindField {
        field,
        max: MAX - 1,
    })
}

impl Session {
    /// A session on a freshly connected transport; the bind PDU is queued at once.
    pub fn new(config: SessionConfig, now: Instant) -> Result<Self, ConfigError> {
        Self::with_metrics(config, now, None)
    }

    /// [`Session::new`] reporting PDUs, statuses, round trips, throttles and its window to
    /// `metrics` (atomics only: the session stays free of clocks and I/O).
    pub fn with_metrics(
        config: SessionConfig,
        now: Instant,
        metrics: Option<Arc<BindMetrics>>,
    ) -> Result<Self, ConfigError> {
        if config.window == 0 {
            return Err(ConfigError::ZeroWindow);
        }
        let system_id = c_string(&config.system_id, "system_id")?;
        let password = c_string(&config.password, "password")?;
        let system_type = c_string(&config.system_type, "system_type")?;
        let address_range = c_string(&config.address_range, "address_range")?;
        let body = BindTransceiver::new(
            system_id,
            password,
            system_type,
            InterfaceVersion::Smpp3_4,
            Ton::Unknown,
            Npi::Unknown,
            address_range,
        );
        let pdu: Pdu = match config.bind_kind {
            BindKind::Transceiver => body.into(),
            BindKind::Transmitter => BindTransmitter::new(
                body.system_id,
                body.password,
                body.system_type,
                body.interface_version,
                body.addr_ton,
                body.addr_npi,
                body.address_range,
            )
            .into(),
            BindKind::Receiver => BindReceiver::new(
                body.system_id,
                body.password,
                body.system_type,
                body.interface_version,
                body.addr_ton,
                body.addr_npi,
                body.address_range,
            )
            .into(),
        };
        let pacer = Pacer::new(config.max_submits_per_sec, now);
        let bind_timeout = config.bind_timeout;
        let mut session = Self {
            config,
            state: State::Closed,
            next_seq: 1,
            queue: BTreeMap::new(),
            next_order: 0,
            in_flight: HashMap::new(),
            enquire_link: None,
            enquire_link_sent: now,
            last_rx: now,
            pacer,
            round_trip: None,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            metrics,
        };
        if let Some(m) = &session.metrics {
            m.window_size(session.config.window);
            m.window(0);
        }
        let seq = session.send_request(pdu);
        session.state = State::Binding {
            seq,
            deadline: now + bind_timeout,
        };
        Ok(session)
    }

    /// Whether the bind is up and accepting submissions.
    pub fn is_bound(&self) -> bool {
        matches!(self.state, State::Bound)
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Submissions accepted and not yet answered (queued plus in flight).
    pub fn pending(&self) -> usize {
        self.queue.len() + self.in_flight.len()
    }

    /// Submissions written and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Submissions waiting for a window slot or a token.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Submits per second this bind can carry now: the paced rate, or the window over the
    /// smoothed round trip when that is lower (`None`: unpaced and no round trip measured yet).
    pub fn capacity(&self) -> Option<f64> {
        if !self.is_bound() {
            return Some(0.0);
        }
        let by_window = self
            .round_trip
            .map(|rtt| self.config.window as f64 / rtt.as_secs_f64().max(1e-4));
        match (self.pacer.rate(), by_window) {
            (Some(rate), Some(window)) => Some(rate.min(window)),
            (rate, window) => rate.or(window),
        }
    }

    /// Queue a submission; it is sent once bound, a window slot is free and no throttle pause
    /// runs. On `Err` the request is handed back and no event will follow.
    pub fn submit(
        &mut self,
        now: Instant,
        request: SubmitRequest,
        id: SubmitId,
    ) -> Result<(), (SubmitRejected, Box<SubmitRequest>)> {
        if self.config.bind_kind == BindKind::Receiver {
            return Err((SubmitRejected::ReceiverBind, Box::new(request)));
        }
        if !matches!(self.state, State::Binding { .. } | State::Bound) {
            return Err((SubmitRejected::NotAccepting, Box::new(request)));
        }
        if self.queue.len() >= self.config.max_queued {
            return Err((SubmitRejected::QueueFull, Box::new(request)));
        }
        self.next_order += 1;
        self.queue
            .insert(queue_key(&request, self.next_order), Queued { id, request });
        self.pump(now);
        Ok(())
    }

    /// Start a graceful unbind: no new submissions, in-flight ones drain, then `unbind`.
    /// Queued, unsent submissions are handed back in the final `Closed` event.
    /// Answers the `deliver_sm` reported as [`SessionEvent::MoAwaitingAck`] with `seq`, with
    /// `status` (`ESME_ROK`, or a temporary error so that the SMSC delivers it again). Nothing
    /// is sent once the session is closed: the SMSC delivers it again on another bind.
    pub fn ack_mo(&mut self, seq: u32, status: CommandStatus) {
        if matches!(self.state, State::Bound | State::Unbinding { .. }) {
            self.answer_mo(seq, status);
        }
    }

    fn answer_mo(&mut self, seq: u32, status: CommandStatus) {
        if status != CommandStatus::EsmeRok {
            if let Some(m) = &self.metrics {
                m.mo_refused();
            }
        }
        let resp = DeliverSmResp::builder().build();
        self.send(Command::new(status, seq, resp));
    }

    pub fn unbind(&mut self, now: Instant) {
        match self.state {
            State::Bound => {
                self.state = State::Unbinding {
                    deadline: now + self.config.unbind_timeout,
                    unbind_seq: None,
                };
                self.pump(now);
            }
            State::Binding { .. } => self.close(CloseReason::Unbound),
            State::Unbinding { .. } | State::Closed => {}
        }
    }

    /// The transport is gone (EOF, I/O error): close at once.
    pub fn handle_disconnect(&mut self, _now: Instant) {
        self.close(CloseReason::LinkLost);
    }

    /// One frame from the link, 4-byte length header included.
    pub fn handle_frame(&mut self, now: Instant, frame: &[u8]) {
        if self.is_closed() {
            return;
        }
        self.last_rx = now;
        if frame.len() < 16 {
            self.close(CloseReason::FramingLost);
            return;
        }
        match decode_frame(frame) {
            Decoded::Nack {
                sequence_number,
                status,
                reason,
            } => {
                tracing::warn!(sequence_number, ?status, %reason, "undecodable PDU, sending generic_nack");
                self.send(generic_nack(sequence_number, status));
            }
            Decoded::Pdu(command) => {
                if let Some(m) = &self.metrics {
                    m.pdu(Direction::In, command.id());
                    if command.id().is_response() {
                        m.response(command.status());
                    }
                }
                self.handle_command(now, command)
            }
        }
        self.pump(now);
    }

    fn handle_command(&mut self, now: Instant, command: Command) {
        let seq = command.sequence_number();
        let status = command.status();
        match command.id() {
            CommandId::BindTransceiverResp
            | CommandId::BindTransmitterResp
            | CommandId::BindReceiverResp => self.on_bind_resp(now, &command),
            CommandId::SubmitSmResp => {
                let message_id = match command.pdu() {
                    Some(Pdu::SubmitSmResp(resp)) => resp.message_id().to_string(),
                    _ => String::new(),
                };
                self.on_submit_resp(now, seq, status, message_id);
            }
            CommandId::GenericNack => {
                if self.in_flight.contains_key(&seq) {
                    self.on_submit_resp(now, seq, status, String::new());
                } else if self.enquire_link.is_some_and(|(s, _)| s == seq) {
                    self.enquire_link = None;
                } else if let State::Binding { seq: bind_seq, .. } = self.state {
                    if bind_seq == seq {
                        self.close(CloseReason::BindRejected(status));
                    }
                } else {
                    tracing::warn!(seq, ?status, "generic_nack for no known request");
                }
            }
            CommandId::EnquireLinkResp => {
                if self.enquire_link.is_some_and(|(s, _)| s == seq) {
                    self.enquire_link = None;
                }
            }
            CommandId::EnquireLink => {
                self.send(Command::new(
                    CommandStatus::EsmeRok,
                    seq,
                    Pdu::EnquireLinkResp,
                ));
            }
            CommandId::DeliverSm if self.config.mo_gate.is_closed() => {
                self.answer_mo(seq, CommandStatus::EsmeRxTAppn);
            }
            CommandId::DeliverSm if self.config.defer_mo_ack => {
                if let Some(Pdu::DeliverSm(deliver)) = command.pdu() {
                    self.events.push_back(SessionEvent::MoAwaitingAck {
                        deliver: Box::new(deliver.clone()),
                        seq,
                    });
                }
            }
            CommandId::DeliverSm => {
                let resp = DeliverSmResp::builder().build();
                self.send(Command::new(CommandStatus::EsmeRok, seq, resp));
                if let Some(Pdu::DeliverSm(deliver)) = command.pdu() {
                    self.events
                        .push_back(SessionEvent::Mo(Box::new(deliver.clone())));
                }
            }
            CommandId::Unbind => {
                self.send(Command::new(CommandStatus::EsmeRok, seq, Pdu::UnbindResp));
                self.close(CloseReason::PeerUnbound);
            }
            CommandId::UnbindResp => {
                if let State::Unbinding {
                    unbind_seq: Some(s),
                    ..
                } = self.state
                {
                    if s == seq {
                        self.close(CloseReason::Unbound);
                    }
                }
            }
            id if id.is_response() => {
                tracing::debug!(?id, seq, "ignoring response to a request we never send");
            }
            // alert_notification takes no response; everything else we do not serve.
            CommandId::AlertNotification => {}
            id => {
                tracing::debug!(?id, seq, "unsupported request, sending generic_nack");
                self.send(generic_nack(seq, CommandStatus::EsmeRinvcmdid));
            }
        }
    }

    fn on_bind_resp(&mut self, now: Instant, command: &Command) {
        let State::Binding { seq, .. } = self.state else {
            return;
        };
        if command.sequence_number() != seq {
            return;
        }
        if command.status() != CommandStatus::EsmeRok {
            self.close(CloseReason::BindRejected(command.status()));
            return;
        }
        let smsc_system_id = match command.pdu() {
            Some(Pdu::BindTransceiverResp(r)) => r.system_id.to_string(),
            Some(Pdu::BindTransmitterResp(r)) => r.system_id.to_string(),
            Some(Pdu::BindReceiverResp(r)) => r.system_id.to_string(),
            _ => String::new(),
        };
        self.state = State::Bound;
        self.last_rx = now;
        self.events
            .push_back(SessionEvent::Bound { smsc_system_id });
    }

    fn on_submit_resp(
        &mut self,
        now: Instant,
        seq: u32,
        status: CommandStatus,
        message_id: String,
    ) {
        let Some(entry) = self.in_flight.remove(&seq) else {
            tracing::warn!(seq, ?status, "submit_sm_resp for no submission in flight");
            return;
        };
        let sample = now.saturating_duration_since(entry.sent_at);
        self.round_trip = Some(match self.round_trip {
            Some(srtt) => srtt.mul_f64(0.875) + sample.mul_f64(0.125),
            None => sample,
        });
        if let Some(m) = &self.metrics {
            m.round_trip(sample);
            if matches!(
                status,
                CommandStatus::EsmeRthrottled | CommandStatus::EsmeRmsgqful
            ) {
                m.throttled();
            }
        }
        match status {
            CommandStatus::EsmeRok => {
                self.events.push_back(SessionEvent::SubmitAccepted {
                    id: entry.id,
                    message_id,
                });
            }
            CommandStatus::EsmeRthrottled | CommandStatus::EsmeRmsgqful => {
                self.pacer.throttled(now);
                let until = self.pacer.next_send_at().unwrap_or(now);
                self.events.push_back(SessionEvent::Throttled {
                    id: entry.id,
                    status,
                    until,
                });
                // Back in its place: throttling must not reorder a user's prompts.
                self.queue.insert(
                    queue_key(&entry.request, entry.order),
                    Queued {
                        id: entry.id,
                        request: entry.request,
                    },
                );
            }
            other => self.events.push_back(SessionEvent::SubmitFailed {
                id: entry.id,
                reason: SubmitFailure::Rejected(other),
            }),
        }
    }

    /// Timers: response timeouts, keep-alive, dead link, throttle pause, deadlines, unbind.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Closed => return,
            State::Binding { deadline, .. } if now >= deadline => {
                self.close(CloseReason::BindTimeout);
                return;
            }
            State::Unbinding { deadline, .. } if now >= deadline => {
                self.close(CloseReason::Unbound);
                return;
            }
            _ => {}
        }
        if let Some((seq, deadline)) = self.enquire_link {
            if now >= deadline {
                let late = now.saturating_duration_since(deadline);
                let sent = self.enquire_link_sent;
                if self.last_rx > sent {
                    // The SMSC kept talking after our enquire_link: the link lives, its answer
                    // is only behind. The next one goes out after the usual silence.
                    self.enquire_link = None;
                } else if late >= LATE_TIMER
                    && now < sent + self.config.enquire_link_timeout * MAX_KEEPALIVE_GRACES
                {
                    // Our own timer fired late: this process was too busy to read, so the
                    // answer may be waiting unread. Look again shortly instead of dropping a
                    // live bind; a dead SMSC still loses it within a bounded time.
                    tracing::debug!(?late, "enquire_link timer fired late, granting a grace");
                    if let Some(m) = &self.metrics {
                        m.keepalive_grace();
                    }
                    self.enquire_link = Some((seq, now + KEEPALIVE_GRACE));
                } else {
                    self.close(CloseReason::DeadLink);
                    return;
                }
            }
        }
        let mut expired: Vec<u32> = self
            .in_flight
            .iter()
            .filter(|(_, f)| now >= f.deadline)
            .map(|(s, _)| *s)
            .collect();
        expired.sort_unstable();
        for seq in expired {
            if let Some(entry) = self.in_flight.remove(&seq) {
                self.events.push_back(SessionEvent::SubmitFailed {
                    id: entry.id,
                    reason: SubmitFailure::ResponseTimeout,
                });
            }
        }
        self.expire_queued(now);
        if matches!(self.state, State::Bound | State::Unbinding { .. })
            && self.enquire_link.is_none()
            && now >= self.last_rx + self.config.enquire_link_interval
        {
            let seq = self.send_request(Pdu::EnquireLink);
            self.enquire_link = Some((seq, now + self.config.enquire_link_timeout));
            self.enquire_link_sent = now;
        }
        self.pump(now);
    }

    /// Fails the queued submissions whose deadline has passed: they sit at the head.
    fn expire_queued(&mut self, now: Instant) {
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().1.is_none_or(|d| now < d) {
                break;
            }
            let q = entry.remove();
            self.events.push_back(SessionEvent::SubmitFailed {
                id: q.id,
                reason: SubmitFailure::DeadlineExpired,
            });
        }
    }

    /// The next instant [`Session::handle_timeout`] must be called at.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        match self.state {
            State::Closed => return None,
            State::Binding { deadline, .. } | State::Unbinding { deadline, .. } => {
                consider(deadline)
            }
            State::Bound => {}
        }
        match self.enquire_link {
            Some((_, deadline)) => consider(deadline),
            None if !matches!(self.state, State::Binding { .. }) => {
                consider(self.last_rx + self.config.enquire_link_interval)
            }
            None => {}
        }
        for f in self.in_flight.values() {
            consider(f.deadline);
        }
        if let Some(Some(d)) = self.queue.keys().next().map(|k| k.1) {
            consider(d);
        }
        if !self.queue.is_empty() && self.in_flight.len() < self.config.window {
            if let Some(at) = self.pacer.next_send_at() {
                consider(at);
            }
        }
        next
    }

    /// The next encoded PDU to write to the link.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmit.pop_front()
    }

    /// The next event for the owner.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// Moves queued submissions into the window and drives the unbind drain.
    fn pump(&mut self, now: Instant) {
        if self.state == State::Bound {
            while self.in_flight.len() < self.config.window && !self.queue.is_empty() {
                if !self.pacer.may_send(now) {
                    break;
                }
                let Some(((_, _, order), q)) = self.queue.pop_first() else {
                    break;
                };
                if q.request.deadline.is_some_and(|d| now >= d) {
                    self.events.push_back(SessionEvent::SubmitFailed {
                        id: q.id,
                        reason: SubmitFailure::DeadlineExpired,
                    });
                    continue;
                }
                let seq = self.send_request(Pdu::SubmitSm(q.request.submit_sm.clone()));
                self.pacer.sent(now);
                self.in_flight.insert(
                    seq,
                    InFlight {
                        id: q.id,
                        request: q.request,
                        order,
                        deadline: now + self.config.response_timeout,
                        sent_at: now,
                    },
                );
            }
        }
        if let Some(m) = &self.metrics {
            m.window(self.in_flight.len());
            m.submit_rate(self.pacer.rate().unwrap_or(0.0));
        }
        if let State::Unbinding {
            deadline,
            unbind_seq: None,
        } = self.state
        {
            if self.in_flight.is_empty() {
                let seq = self.send_request(Pdu::Unbind);
                self.state = State::Unbinding {
                    deadline,
                    unbind_seq: Some(seq),
                };
            }
        }
    }

    fn next_sequence_number(&mut self) -> u32 {
        loop {
            let seq = self.next_seq;
            self.next_seq = if seq >= 0x7FFF_FFFF { 1 } else { seq + 1 };
            // After a wrap, a number still waiting for its answer must not be reused.
            if !self.in_flight.contains_key(&seq) {
                return seq;
            }
        }
    }

    fn send_request(&mut self, pdu: Pdu) -> u32 {
        let seq = self.next_sequence_number();
        self.send(Command::new(CommandStatus::EsmeRok, seq, pdu));
        seq
    }

    fn send(&mut self, command: Command) {
        if let Some(m) = &self.metrics {
            m.pdu(Direction::Out, command.id());
        }
        self.transmit.push_back(encode_command(&command));
    }

    fn close(&mut self, reason: CloseReason) {
        if self.is_closed() {
            return;
        }
        self.state = State::Closed;
        self.enquire_link = None;
        if let Some(m) = &self.metrics {
            m.window(0);
        }
        let mut in_flight: Vec<(u32, InFlight)> = self.in_flight.drain().collect();
        // Sequence order is send order (wraps aside), which keeps the user's order.
        in_flight.sort_unstable_by_key(|(s, _)| *s);
        let mut unsent: Vec<Unsent> = in_flight
            .into_iter()
            .map(|(_, f)| Unsent {
                id: f.id,
                request: f.request,
                was_in_flight: true,
            })
            .collect();
        unsent.extend(
            std::mem::take(&mut self.queue)
                .into_values()
                .map(|q| Unsent {
                    id: q.id,
                    request: q.request,
                    was_in_flight: false,
                }),
        );
        self.events
            .push_back(SessionEvent::Closed { reason, unsent });
    }

    /// Test hook: start numbering at `seq` (to exercise the wrap).
    #[cfg(test)]
    fn set_next_sequence_number(&mut self, seq: u32) {
        self.next_seq = seq;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rusmpp::{
        pdus::{BindTransceiverResp, SubmitSmResp},
        types::OctetString,
    };

    fn cfg() -> SessionConfig {
        SessionConfig {
            window: 2,
            ..SessionConfig::default()
        }
    }

    fn decode(bytes: &Bytes) -> Command {
        match decode_frame(bytes) {
            Decoded::Pdu(c) => c,
            other => panic!("{other:?}"),
        }
    }

    fn sent(s: &mut Session) -> Vec<Command> {
        std::iter::from_fn(|| s.poll_transmit())
            .map(|b| decode(&b))
            .collect()
    }

    fn events(s: &mut Session) -> Vec<SessionEvent> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    fn frame(cmd: Command) -> Bytes {
        encode_command(&cmd)
    }

    fn request(text: &str) -> SubmitRequest {
        SubmitRequest {
            submit_sm: SubmitSm::builder()
                .destination_addr(COctetString::from_str("48600100200").unwrap())
                .short_message(OctetString::from_str(text).unwrap())
                .build(),
            deadline: None,
        }
    }

    fn bound(config: SessionConfig, t0: Instant) -> Session {
        let mut s = Session::new(config, t0).unwrap();
        let bind = sent(&mut s);
        assert_eq!(bind.len(), 1);
        let resp = BindTransceiverResp::builder()
            .system_id(COctetString::from_str("SMSC").unwrap())
            .build();
        s.handle_frame(
            t0,
            &frame(Command::new(
                CommandStatus::EsmeRok,
                bind[0].sequence_number(),
                resp,
            )),
        );
        assert_eq!(
            events(&mut s),
            vec![SessionEvent::Bound {
                smsc_system_id: "SMSC".into()
            }]
        );
        s
    }

    fn submit_resp(seq: u32, status: CommandStatus, id: &str) -> Bytes {
        let resp = SubmitSmResp::builder()
            .message_id(COctetString::from_str(id).unwrap())
            .build();
        frame(Command::new(status, seq, resp))
    }

    #[test]
    fn bind_transceiver_says_interface_version_3_4() {
        let t0 = Instant::now();
        let mut s = Session::new(cfg(), t0).unwrap();
        let bind = sent(&mut s);
        match bind[0].pdu() {
            Some(Pdu::BindTransceiver(b)) => {
                assert_eq!(b.interface_version, InterfaceVersion::Smpp3_4);
                assert_eq!(b.system_id.to_string(), "gateway");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(bind[0].sequence_number(), 1);
    }

    #[test]
    fn transmitter_and_receiver_binds_use_their_pdus() {
        let t0 = Instant::now();
        for (kind, id) in [
            (BindKind::Transmitter, CommandId::BindTransmitter),
            (BindKind::Receiver, CommandId::BindReceiver),
        ] {
            let mut s = Session::new(
                SessionConfig {
                    bind_kind: kind,
                    ..cfg()
                },
                t0,
            )
            .unwrap();
            assert_eq!(sent(&mut s)[0].id(), id);
        }
    }

    #[test]
    fn over_long_system_id_is_a_config_error() {
        let err = Session::new(
            SessionConfig {
                system_id: "x".repeat(16),
                ..cfg()
            },
            Instant::now(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            ConfigError::BindField {
                field: "system_id",
                max: 15
            }
        );
    }

    #[test]
    fn rejected_bind_closes_with_the_status() {
        let t0 = Instant::now();
        let mut s = Session::new(cfg(), t0).unwrap();
        let seq = sent(&mut s)[0].sequence_number();
        s.submit(t0, request("a"), 1).unwrap();
        s.handle_frame(
            t0,
            &frame(Command::new(
                CommandStatus::EsmeRalybnd,
                seq,
                BindTransceiverResp::builder().build(),
            )),
        );
        assert_eq!(
            events(&mut s),
            vec![SessionEvent::Closed {
                reason: CloseReason::BindRejected(CommandStatus::EsmeRalybnd),
                unsent: vec![Unsent {
                    id: 1,
                    request: request("a"),
                    was_in_flight: false
                }]
            }]
        );
    }

    #[test]
    fn bind_without_answer_times_out() {
        let t0 = Instant::now();
        let mut s = Session::new(cfg(), t0).unwrap();
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        s.handle_timeout(t0 + Duration::from_secs(10));
        assert!(matches!(
            events(&mut s)[..],
            [SessionEvent::Closed {
                reason: CloseReason::BindTimeout,
                ..
            }]
        ));
    }

    #[test]
    fn submits_wait_for_the_bind_then_respect_the_window() {
        let t0 = Instant::now();
        let mut s = Session::new(cfg(), t0).unwrap();
        let bind_seq = sent(&mut s)[0].sequence_number();
        for id in 1..=3 {
            s.submit(t0, request("x"), id).unwrap();
        }
        assert!(sent(&mut s).is_empty(), "nothing goes out before the bind");
        s.handle_frame(
            t0,
            &frame(Command::new(
                CommandStatus::EsmeRok,
                bind_seq,
                BindTransceiverResp::builder().build(),
            )),
        );
        let out = sent(&mut s);
        assert_eq!(out.len(), 2, "window of 2");
        assert_eq!(s.in_flight(), 2);
        s.handle_frame(
            t0,
            &submit_resp(out[0].sequence_number(), CommandStatus::EsmeRok, "m1"),
        );
        let out2 = sent(&mut s);
        assert_eq!(out2.len(), 1, "a freed slot lets the third go");
        let ev = events(&mut s);
        assert!(ev.contains(&SessionEvent::SubmitAccepted {
            id: 1,
            message_id: "m1".into()
        }));
    }

    #[test]
    fn a_throttled_submission_is_resent_once_at_the_next_token_not_after_a_pause() {
        let t0 = Instant::now();
        let mut s = bound(
            SessionConfig {
                window: 10,
                ..cfg()
            },
            t0,
        );
        for id in 0..5 {
            s.submit(t0, request("hello"), id).unwrap();
        }
        let first = sent(&mut s);
        assert_eq!(
            first.len(),
            5,
            "unlimited until throttled: the window sends them all"
        );
        s.handle_frame(
            t0,
            &submit_resp(
                first[0].sequence_number(),
                CommandStatus::EsmeRthrottled,
                "",
            ),
        );
        let ev = events(&mut s);
        let [SessionEvent::Throttled { id: 0, until, .. }] = ev[..] else {
            panic!("{ev:?}");
        };
        // The next token, not a pause of the whole bind: a few milliseconds.
        assert!(
            until > t0 && until - t0 <= Duration::from_millis(300),
            "{:?}",
            until - t0
        );
        assert!(sent(&mut s).is_empty(), "nothing before the token");
        assert_eq!(s.poll_timeout().map(|t| t <= until), Some(true));
        s.handle_timeout(until);
        let again = sent(&mut s);
        assert_eq!(again.len(), 1, "sent again exactly once");
        assert_eq!(again[0].pdu(), first[0].pdu(), "the same PDU body");
        assert_ne!(again[0].sequence_number(), first[0].sequence_number());
        // The others' answers are unaffected.
        for out in &first[1..] {
            s.handle_frame(
                until,
                &submit_resp(out.sequence_number(), CommandStatus::EsmeRok, "m"),
            );
        }
        s.handle_frame(
            until,
            &submit_resp(again[0].sequence_number(), CommandStatus::EsmeRok, "m0"),
        );
        let accepted = events(&mut s)
            .into_iter()
            .filter(|e| matches!(e, SessionEvent::SubmitAccepted { .. }))
            .count();
        assert_eq!(accepted, 5);
    }

    #[test]
    fn a_configured_ceiling_paces_the_submits() {
        let t0 = Instant::now();
        let mut s = bound(
            SessionConfig {
                max_submits_per_sec: Some(100),
                window: 50,
                ..cfg()
            },
            t0,
        );
        for id in 0..30 {
            s.submit(t0, request("x"), id).unwrap();
        }
        // A burst of 50 ms worth (5), then one every 10 ms.
        assert_eq!(sent(&mut s).len(), 5);
        let next = s.poll_timeout().unwrap();
        assert!(next - t0 <= Duration::from_millis(11), "{:?}", next - t0);
        // Driven as the shell drives it: at each instant the session asks for.
        let end = t0 + Duration::from_millis(100);
        let mut more = 0;
        while let Some(at) = s.poll_timeout().filter(|at| *at <= end) {
            s.handle_timeout(at);
            more += sent(&mut s).len();
        }
        assert!((9..=11).contains(&more), "{more} in 100 ms");
    }

    #[test]
    fn error_status_fails_the_submission() {
        let t0 = Instant::now();
        let mut s = bound(cfg(), t0);
        s.submit(t0, request("x"), 3).unwrap();
        let out = sent(&mut s);
        s.handle_frame(
            t0,
            &submit_resp(out[0].sequence_number(), CommandStatus::EsmeRinvdstadr, ""),
        );
        assert_eq!(
            events(&mut s),
            vec![SessionEvent::SubmitFailed {
                id: 3,
                reason: SubmitFailure::Rejected(CommandStatus::EsmeRinvdstadr)
            }]
        );
    }

    #[test]
    fn missing_submit_resp_fails_after_the_response_timeout() {
        let t0 = Instant::now();
        let mut s = bound(cfg(), t0);
        s.submit(t0, request("x"), 4).unwrap();
        sent(&mut s);
        let t = t0 + Duration::from_secs(10);
        assert_eq!(s.poll_timeout(), Some(t));
        s.handle_timeout(t);
        assert_eq!(
            events(&mut s),
            vec![SessionEvent::SubmitFailed {
                id: 4,
                reason: SubmitFailure::ResponseTimeout
            }]
        );
    }

    #[test]
    fn queued_submission_past_its_deadline_fails() {
        let t0 = Instant::now();
        let mut s = Session::new(cfg(), t0).unwrap();
        let mut req = request("x");
        req.deadline = Some(t0 + Duration::from_secs(2));
        s.submit(t0, req, 9).unwrap();
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(2)));
        s.handle_timeout(t0 + Duration::from_secs(2));
        assert_eq!(
            events(&mut s),
            vec![SessionEvent::SubmitFailed {
                id: 9,
                reason: SubmitFailure::DeadlineExpired
            }]
        );
    }

    #[test]
    fn silence_sends_enquire_link_and_no_answer_closes_as_dead() {
        let t0 = Instant::now();
        let mut s = bound(cfg(), t0);
        s.submit(t0, request("x"), 5).unwrap();
        let sub = sent(&mut s);
        s.handle_frame(
            t0,
            &submit_resp(sub[0].sequence_number(), CommandStatus::EsmeRok, "m"),
        );
        events(&mut s);
        let t30 = t0 + Duration::from_secs(30);
        assert_eq!(s.poll_timeout(), Some(t30));
        s.handle_timeout(t30);
        let out = sent(&mut s);
        assert_eq!(out[0].id(), CommandId::EnquireLink);
        assert_eq!(s.poll_timeout(), Some(t30 + Duration::from_secs(10)));
        s.submit(t30, request("y"), 6).unwrap();
        sent(&mut s);
        s.handle_timeout(t30 + Duration::from_secs(10));
        assert_eq!(
            events(&mut s),
            vec![SessionEvent::Closed {
                reason: CloseReason::DeadLink,
                unsent: vec![Unsent {
                    id: 6,
                    request: request("y"),
                    was_in_flight: true
                }]
            }]
        );
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn answered_enquire_link_keeps_the_link() {
        let t0 = Instant::now();
        let mut s = bound(cfg(), t0);
        let t30 = t0 + Duration::from_secs(30);
        s.handle_timeout(t30);
        let el = sent(&mut s);
        s.handle_frame(
            t30,
            &frame(Command::new(
                CommandStatus::EsmeRok,
                el[0].sequence_number(),
                Pdu::EnquireLinkResp,
            )),
        );
        s.handle_timeout(t30 + Duration::from_secs(10));
        assert!(s.is_bound());
        assert_eq!(s.poll_timeout(), Some(t30 + Duration::from_secs(30)));
    }

    #[test]
    fn with_the_mo_gate_closed_an_answer_gets_a_temporary_error_and_is_not_reported() {
        let t0 = Instant::now();
        let config = cfg();
        let gate = config.mo_gate.clone();
        let mut s = bound(config, t0);
        let deliver = DeliverSm::builder()
            .source_addr(COctetString::from_str("48600100200").unwrap())
            .short_message(OctetString::from_str("1").unwrap())
            .build();
        gate.set_closed(true);
        s.handle_frame(
            t0,
            &frame(Command::new(CommandStatus::EsmeRok, 901, deliver.clone())),
        );
        let out = sent(&mut s);
        assert_eq!(out[0].id(), CommandId::DeliverSmResp);
        assert_eq!(out[0].status(), CommandStatus::EsmeRxTAppn);
        assert!(
            events(&mut s).is_empty(),
            "not reported while the gate is closed"
        );
        gate.set_closed(false);
        s.handle_frame(
            t0,
            &frame(Command::new(CommandStatus::EsmeRok, 902, deliver.clone())),
        );
        assert_eq!(sent(&mut s)[0].status(), CommandStatus::EsmeRok);
        assert_eq!(events(&mut s), vec![SessionEvent::Mo(Box::new(deliver))]);
        assert!(s.is_bound());
    }

    #[test]
    fn a_deferred_deliver_sm_is_answered_only_when_told_and_not_after_the_close() {
        let t0 = Instant::now();
        let mut s = bound(
            SessionConfig {
                defer_mo_ack: true,
                ..cfg()
            },
            t0,
        );
        let deliver = DeliverSm::builder()
            .source_addr(COctetString::from_str("48600100200").unwrap())
            .short_message(OctetString::from_str("1").unwrap())
            .build();
        for seq in [901, 902] {
            s.handle_frame(
                t0,
                &frame(Command::new(CommandStatus::EsmeRok, seq, deliver.clone())),
            );
        }
        assert!(
            sent(&mut s).is_empty(),
            "nothing answered before the owner says"
        );
        assert_eq!(
            events(&mut s),
            vec![
                SessionEvent::MoAwaitingAck {
                    deliver: Box::new(deliver.clone()),
                    seq: 901
                },
                SessionEvent::MoAwaitingAck {
                    deliver: Box::new(deliver.clone()),
                    seq: 902
                }
            ]
        );
        s.ack_mo(902, CommandStatus::EsmeRxTAppn);
        s.ack_mo(901, CommandStatus::EsmeRok);
        let out = sent(&mut s);
        assert_eq!(
            out.iter()
                .map(|c| (c.id(), c.sequence_number(), c.status()))
                .collect::<Vec<_>>(),
            vec![
                (CommandId::DeliverSmResp, 902, CommandStatus::EsmeRxTAppn),
                (CommandId::DeliverSmResp, 901, CommandStatus::EsmeRok),
            ]
        );
        s.handle_frame(
            t0,
            &frame(Command::new(CommandStatus::EsmeRok, 7, Pdu::Unbind)),
        );
        let _ = sent(&mut s);
        s.ack_mo(903, CommandStatus::EsmeRok);
        assert!(sent(&mut s).is_empty(), "a closed session answers nothing");
    }

    #[test]
    fn smsc_enquire_link_and_deliver_sm_are_answered() {
        let t0 = Instant::now();
        let mut s = bound(cfg(), t0);
        s.handle_frame(
            t0,
            &frame(Command::new(CommandStatus::EsmeRok, 900, Pdu::EnquireLink)),
        );
        let deliver = DeliverSm::builder()
            .source_addr(COctetString::from_str("48600100200").unwrap())
            .short_message(OctetString::from_str("1").unwrap())
            .build();
        s.handle_frame(
            t0,
            &frame(Command::new(CommandStatus::EsmeRok, 901, deliver.clone())),
        );
        let out = sent(&mut s);
        assert_eq!(out[0].id(), CommandId::EnquireLinkResp);
        assert_eq!(out[0].sequence_number(), 900);
        assert_eq!(out[1].id(), CommandId::DeliverSmResp);
        assert_eq!(out[1].sequence_number(), 901);
        assert_eq!(events(&mut s), vec![SessionEvent::Mo(Box::new(deliver))]);
    }

    #[test]
    fn undecodable_frame_gets_generic_nack_and_the_bind_stays() {
        let t0 = Instant::now();
        let mut s = bound(cfg(), t0);
        s.handle_frame(
            t0,
            &[0, 0, 0, 16, 0, 0, 0x66, 0x66, 0, 0, 0, 0, 0, 0, 0, 42],
        );
        let out = sent(&mut s);
        assert_eq!(out[0].id(), CommandId::GenericNack);
        assert_eq!(out[0].status(), CommandStatus::EsmeRinvcmdid);
        assert_eq!(out[0].sequence_number(), 42);
        assert!(s.is_bound());
    }

    #[test]
    fn graceful_unbind_drains_in_flight_then_unbinds() {
        let t0 = Instant::now();
        let mut s = bound(cfg(), t0);
        s.submit(t0, request("a"), 1).unwrap();
        s.submit(t0, request("b"), 2).unwrap();
        s.submit(t0, request("c"), 3).unwrap();
        let out = sent(&mut s);
        assert_eq!(out.len(), 2);
        s.unbind(t0);
        assert!(matches!(
            s.submit(t0, request("d"), 4),
            Err((SubmitRejected::NotAccepting, _))
        ));
        assert!(
            sent(&mut s).is_empty(),
            "unbind waits for the in-flight ones"
        );
        s.handle_frame(
            t0,
            &submit_resp(out[0].sequence_number(), CommandStatus::EsmeRok, "1"),
        );
        assert!(
            sent(&mut s).is_empty(),
            "queued ones are not sent while draining"
        );
        s.handle_frame(
            t0,
            &submit_resp(out[1].sequence_number(), CommandStatus::EsmeRok, "2"),
        );
        let unbind = sent(&mut s);
        assert_eq!(unbind[0].id(), CommandId::Unbind);
        s.handle_frame(
            t0,
            &frame(Command::new(
                CommandStatus::EsmeRok,
                unbind[0].sequence_number(),
                Pdu::UnbindResp,
            )),
        );
        let ev = events(&mut s);
        assert_eq!(
            ev.last(),
            Some(&SessionEvent::Closed {
                reason: CloseReason::Unbound,
                unsent: vec![Unsent {
                    id: 3,
                    request: request("c"),
                    was_in_flight: false
                }]
            })
        );
    }

    #[test]
    fn peer_unbind_is_answered_and_closes() {
        let t0 = Instant::now();
        let mut s = bound(cfg(), t0);
        s.handle_frame(
            t0,
            &frame(Command::new(CommandStatus::EsmeRok, 77, Pdu::Unbind)),
        );
        let out = sent(&mut s);
        assert_eq!(out[0].id(), CommandId::UnbindResp);
        assert!(s.is_closed());
    }

    #[test]
    fn sequence_numbers_wrap_to_one_and_skip_those_in_flight() {
        let t0 = Instant::now();
        let mut s = bound(SessionConfig { window: 5, ..cfg() }, t0);
        s.set_next_sequence_number(0x7FFF_FFFF);
        s.submit(t0, request("a"), 1).unwrap();
        s.submit(t0, request("b"), 2).unwrap();
        let seqs: Vec<u32> = sent(&mut s).iter().map(|c| c.sequence_number()).collect();
        assert_eq!(seqs, vec![0x7FFF_FFFF, 1]);
        s.set_next_sequence_number(1);
        s.submit(t0, request("c"), 3).unwrap();
        assert_eq!(sent(&mut s)[0].sequence_number(), 2);
    }

    #[test]
    fn receiver_bind_rejects_submits() {
        let t0 = Instant::now();
        let mut s = Session::new(
            SessionConfig {
                bind_kind: BindKind::Receiver,
                ..cfg()
            },
            t0,
        )
        .unwrap();
        assert!(matches!(
            s.submit(t0, request("a"), 1),
            Err((SubmitRejected::ReceiverBind, _))
        ));
    }

    #[test]
    fn disconnect_hands_back_in_flight_and_queued_in_order() {
        let t0 = Instant::now();
        let mut s = bound(cfg(), t0);
        for id in 1..=3 {
            s.submit(t0, request("x"), id).unwrap();
        }
        s.handle_disconnect(t0);
        match &events(&mut s)[..] {
            [SessionEvent::Closed {
                reason: CloseReason::LinkLost,
                unsent,
            }] => {
                let ids: Vec<(u64, bool)> =
                    unsent.iter().map(|u| (u.id, u.was_in_flight)).collect();
                assert_eq!(ids, vec![(1, true), (2, true), (3, false)]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn metrics_count_pdus_statuses_round_trips_throttles_and_the_window() {
        use crate::metrics::smpp::{Direction, SmppMetrics};
        let mut registry = prometheus_client::registry::Registry::default();
        let m = Arc::new(SmppMetrics::new(&mut registry).bind("op", "b1"));
        let t0 = Instant::now();
        let mut s = Session::with_metrics(cfg(), t0, Some(m.clone())).unwrap();
        let bind_seq = sent(&mut s)[0].sequence_number();
        assert_eq!(m.pdu_count(Direction::Out, CommandId::BindTransceiver), 1);
        s.handle_frame(
            t0,
            &frame(Command::new(
                CommandStatus::EsmeRok,
                bind_seq,
                BindTransceiverResp::builder().build(),
            )),
        );
        s.submit(t0, request("a"), 1).unwrap();
        s.submit(t0, request("b"), 2).unwrap();
        let out = sent(&mut s);
        assert_eq!(m.pdu_count(Direction::Out, CommandId::SubmitSm), 2);
        assert_eq!(m.window_occupancy(), 2);
        let t1 = t0 + Duration::from_millis(30);
        s.handle_frame(
            t1,
            &submit_resp(out[0].sequence_number(), CommandStatus::EsmeRthrottled, ""),
        );
        s.handle_frame(
            t1,
            &submit_resp(out[1].sequence_number(), CommandStatus::EsmeRok, "m2"),
        );
        assert_eq!(
            m.window_occupancy(),
            0,
            "the throttled one waits for its pause"
        );
        assert_eq!(m.throttle_count(), 1);
        assert_eq!(m.response_count(CommandStatus::EsmeRthrottled), 1);
        // bind_transceiver_resp and one submit_sm_resp.
        assert_eq!(m.response_count(CommandStatus::EsmeRok), 2);
        assert_eq!(m.pdu_count(Direction::In, CommandId::SubmitSmResp), 2);
        let text = crate::metrics::encode(&registry);
        assert!(
            text.contains("smpp_submit_round_trip_seconds_count{operator=\"op\",bind=\"b1\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "smpp_submit_round_trip_seconds_bucket{le=\"0.05\",operator=\"op\",bind=\"b1\"} 2"
            ),
            "{text}"
        );
        s.handle_disconnect(t1);
        assert_eq!(m.window_occupancy(), 0);
    }

    fn with_deadline(text: &str, deadline: Option<Instant>) -> SubmitRequest {
        SubmitRequest {
            deadline,
            ..request(text)
        }
    }

    fn texts(commands: &[Command]) -> Vec<String> {
        commands
            .iter()
            .map(|c| match c.pdu() {
                Some(Pdu::SubmitSm(sm)) => {
                    String::from_utf8_lossy(sm.short_message().as_ref()).into_owned()
                }
                other => panic!("not a submit_sm: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn the_queue_sends_the_earliest_deadline_first_and_keeps_order_among_equals() {
        let t0 = Instant::now();
        let mut s = bound(SessionConfig { window: 1, ..cfg() }, t0);
        let at = |secs| Some(t0 + Duration::from_secs(secs));
        s.submit(t0, with_deadline("first", at(20)), 1).unwrap();
        s.submit(t0, with_deadline("none", None), 2).unwrap();
        s.submit(t0, with_deadline("late", at(15)), 3).unwrap();
        s.submit(t0, with_deadline("soon-a", at(5)), 4).unwrap();
        s.submit(t0, with_deadline("soon-b", at(5)), 5).unwrap();
        let mut order = Vec::new();
        for _ in 0..5 {
            let out = sent(&mut s);
            assert_eq!(out.len(), 1, "window 1: one submit at a time");
            order.extend(texts(&out));
            s.handle_frame(
                t0,
                &submit_resp(out[0].sequence_number(), CommandStatus::EsmeRok, "m"),
            );
        }
        assert_eq!(order, ["first", "soon-a", "soon-b", "late", "none"]);
    }

    #[test]
    fn a_queued_submission_whose_deadline_passed_is_never_written() {
        let t0 = Instant::now();
        let mut s = bound(SessionConfig { window: 1, ..cfg() }, t0);
        s.submit(t0, with_deadline("blocker", None), 1).unwrap();
        let blocker = sent(&mut s);
        s.submit(
            t0,
            with_deadline("doomed", Some(t0 + Duration::from_secs(2))),
            2,
        )
        .unwrap();
        s.submit(t0, with_deadline("fine", None), 3).unwrap();
        // The blocker's answer comes after the doomed one's deadline.
        let t3 = t0 + Duration::from_secs(3);
        s.handle_frame(
            t3,
            &submit_resp(blocker[0].sequence_number(), CommandStatus::EsmeRok, "m"),
        );
        assert_eq!(texts(&sent(&mut s)), ["fine"]);
        assert!(events(&mut s).contains(&SessionEvent::SubmitFailed {
            id: 2,
            reason: SubmitFailure::DeadlineExpired
        }));
    }

    #[test]
    fn a_keepalive_timer_that_fires_late_gets_a_grace_and_the_late_answer_keeps_the_link() {
        let t0 = Instant::now();
        let mut s = bound(cfg(), t0);
        let t30 = t0 + Duration::from_secs(30);
        s.handle_timeout(t30);
        let el = sent(&mut s);
        assert_eq!(el[0].id(), CommandId::EnquireLink);
        // The process was stalled: the timer due at t40 runs at t43.
        let t43 = t30 + Duration::from_secs(13);
        s.handle_timeout(t43);
        assert!(s.is_bound(), "a late timer is not a dead SMSC");
        assert_eq!(s.poll_timeout(), Some(t43 + KEEPALIVE_GRACE));
        s.handle_frame(
            t43,
            &frame(Command::new(
                CommandStatus::EsmeRok,
                el[0].sequence_number(),
                Pdu::EnquireLinkResp,
            )),
        );
        s.handle_timeout(t43 + KEEPALIVE_GRACE);
        assert!(s.is_bound());
    }

    #[test]
    fn a_silent_smsc_is_declared_dead_even_when_every_timer_fires_late() {
        let t0 = Instant::now();
        let mut s = bound(cfg(), t0);
        let t30 = t0 + Duration::from_secs(30);
        s.handle_timeout(t30);
        sent(&mut s);
        let mut now = t30 + Duration::from_secs(11);
        while s.is_bound() {
            assert!(
                now < t30 + Duration::from_secs(25),
                "a silent SMSC must lose the bind within two keep-alive timeouts"
            );
            s.handle_timeout(now);
            now = s.poll_timeout().unwrap_or(now) + Duration::from_secs(1);
        }
        let closed = events(&mut s);
        assert!(matches!(
            closed.last(),
            Some(SessionEvent::Closed {
                reason: CloseReason::DeadLink,
                ..
            })
        ));
    }

    #[test]
    fn traffic_after_an_enquire_link_proves_the_link_alive() {
        let t0 = Instant::now();
        let mut s = bound(cfg(), t0);
        let t30 = t0 + Duration::from_secs(30);
        s.handle_timeout(t30);
        sent(&mut s);
        let deliver = DeliverSm::builder()
            .source_addr(COctetString::from_str("48600100200").unwrap())
            .short_message(OctetString::from_str("1").unwrap())
            .build();
        s.handle_frame(
            t30 + Duration::from_secs(1),
            &frame(Command::new(CommandStatus::EsmeRok, 77, deliver)),
        );
        s.handle_timeout(t30 + Duration::from_secs(10));
        assert!(s.is_bound());
    }
}
