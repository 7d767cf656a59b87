//! Sans-IO bind: one configured bind to an SMSC across all its connections, with no socket,
//! clock or task of its own.
//!
//! A [`Session`] lives for one connection; a [`BindMachine`] lives for the bind. It decides
//! when to connect (at once, then after each loss on an exponential back-off with jitter that
//! restarts once a connection got bound), keeps the submissions that wait for a connection
//! (the carried queue, bounded by `max_queued`), fails them at their deadlines, and decides
//! what becomes of the submissions a closed session hands back: re-sent on the next
//! connection, ahead of anything carried since, or, for those already written when
//! `resend_in_flight` is off, failed as [`SubmitFailure::LinkLostInFlight`].
//!
//! The shell ([`super::bind`]) feeds it: [`BindMachine::submit`], [`BindMachine::unbind`],
//! [`BindMachine::handle_connected`] / [`BindMachine::handle_connect_failed`],
//! [`BindMachine::handle_frame`], [`BindMachine::handle_link_lost`] and
//! [`BindMachine::handle_timeout`], always with the current time; it carries out
//! [`BindMachine::poll_action`] (connect, close the link, stop), writes
//! [`BindMachine::poll_transmit`], forwards [`BindMachine::poll_event`] and sleeps until
//! [`BindMachine::poll_timeout`].
//!
//! Guarantee: every submission handed to [`BindMachine::submit`] ends with exactly one
//! [`BindEvent::Accepted`] or [`BindEvent::Failed`], whatever happens to the connections,
//! before [`BindEvent::Stopped`]. Every loss of a connection is reported once, with a typed
//! [`LinkDown`] reason.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rusmpp::pdus::DeliverSm;
use rusmpp::CommandStatus;
use sim_applet_model::handset::rng::SplitMix64;

use super::session::{
    CloseReason, ConfigError, Session, SessionConfig, SessionEvent, SubmitFailure, SubmitId,
    SubmitRejected, SubmitRequest,
};
use crate::metrics::smpp::{BindMetrics, BindState};

/// Settings of a bind beyond one connection.
#[derive(Debug, Clone)]
pub struct BindMachineConfig {
    /// Settings of each connection's session.
    pub session: SessionConfig,
    /// First reconnect delay; doubles per failed attempt.
    pub reconnect_initial: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// Re-send submissions that were written on a link that died before their answer came.
    /// `true` is at-least-once (a lost `submit_sm_resp` duplicates the message at the SMSC);
    /// `false` fails them with [`SubmitFailure::LinkLostInFlight`].
    pub resend_in_flight: bool,
}

/// Why connecting failed, as the shell saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectError {
    /// The TCP connect failed (refused, unreachable ...).
    Tcp(String),
    /// The connect, TLS handshake included, took longer than allowed.
    TimedOut,
    /// The TLS setup or handshake failed.
    Tls(String),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Tcp(e) => write!(f, "connect failed: {e}"),
            ConnectError::TimedOut => f.write_str("connect timed out"),
            ConnectError::Tls(e) => write!(f, "TLS failed: {e}"),
        }
    }
}

/// Why a bind is down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkDown {
    /// No connection could be made.
    Connect(ConnectError),
    /// The connection's session ended.
    Closed(CloseReason),
    /// The bind's settings cannot open a session (the bind stops: retrying cannot help).
    InvalidConfig(ConfigError),
}

impl fmt::Display for LinkDown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkDown::Connect(e) => e.fmt(f),
            LinkDown::Closed(reason) => write!(f, "session closed: {reason}"),
            LinkDown::InvalidConfig(e) => write!(f, "invalid bind configuration: {e}"),
        }
    }
}

/// What a bind reports.
#[derive(Debug, PartialEq, Eq)]
pub enum BindEvent {
    /// Bound (again).
    Bound {
        /// The SMSC's `system_id`.
        smsc_system_id: String,
    },
    /// The SMSC accepted submission `id`.
    Accepted {
        /// Caller's id.
        id: SubmitId,
        /// The SMSC's `message_id`.
        message_id: String,
    },
    /// Submission `id` failed for good.
    Failed {
        /// Caller's id.
        id: SubmitId,
        /// Why.
        reason: SubmitFailure,
    },
    /// Submission `id` was throttled and will be re-sent.
    Throttled {
        /// Caller's id.
        id: SubmitId,
    },
    /// An MO `deliver_sm` (already answered).
    Mo(Box<DeliverSm>),
    /// An MO `deliver_sm` not answered yet (the session defers its answers): `ack` answers it,
    /// `ESME_ROK` when dropped.
    MoAwaitingAck {
        /// The message.
        deliver: Box<DeliverSm>,
        /// Its answer.
        ack: MoAck,
    },
    /// The link went down (or never came up); a reconnect follows unless the bind is stopping.
    Disconnected {
        /// What happened.
        reason: LinkDown,
    },
    /// The bind has ended (after [`BindMachine::unbind`]); nothing follows.
    Stopped,
}

/// Which `deliver_sm` an answer is for: the connection it came on and its sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoAckToken {
    connection: u64,
    seq: u32,
}

/// Where a bind's shell takes the answers to deferred `deliver_sm`s.
pub type MoAckSender = tokio::sync::mpsc::UnboundedSender<(MoAckToken, CommandStatus)>;

/// The answer owed for one `deliver_sm`: [`MoAck::reply`] with a status, or `ESME_ROK` when
/// dropped, so that no path can leave the SMSC waiting (an unanswered `deliver_sm` holds a slot
/// of its window until it times out). Answers for a connection that has gone are not sent: the
/// SMSC delivers the message again.
#[derive(Debug)]
pub struct MoAck {
    token: MoAckToken,
    to: Option<MoAckSender>,
}

impl MoAck {
    /// Which `deliver_sm` this answers.
    pub fn token(&self) -> MoAckToken {
        self.token
    }

    /// Answers with `status`.
    pub fn reply(mut self, status: CommandStatus) {
        self.send(status);
    }

    fn send(&mut self, status: CommandStatus) {
        if let Some(to) = self.to.take() {
            let _ = to.send((self.token, status));
        }
    }
}

impl Drop for MoAck {
    fn drop(&mut self) {
        self.send(CommandStatus::EsmeRok);
    }
}

impl PartialEq for MoAck {
    fn eq(&self, other: &Self) -> bool {
        self.token == other.token
    }
}

impl Eq for MoAck {}

/// What the shell must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Open a connection (TCP, then TLS if configured) and report it with
    /// [`BindMachine::handle_connected`] or [`BindMachine::handle_connect_failed`].
    Connect,
    /// Close the connection (after writing what [`BindMachine::poll_transmit`] still yields),
    /// or abandon the connect in progress.
    CloseLink,
    /// The bind has ended: stop the task once the events are forwarded.
    Stop,
}

#[derive(Debug)]
enum Link {
    /// No connection; the next attempt is due at `retry_at`.
    Down { retry_at: Instant },
    /// The shell is connecting.
    Connecting,
    /// A connection with its session; `was_bound` once the bind was accepted.
    Up {
        session: Box<Session>,
        was_bound: bool,
    },
    /// Ended.
    Stopped,
}

/// One bind across its connections, sans IO. See the module docs.
#[derive(Debug)]
pub struct BindMachine {
    config: BindMachineConfig,
    link: Link,
    /// Whether the first connection was decided (bound, or lost/failed): until then the bind's
    /// capacity is unknown rather than zero.
    settled: bool,
    /// Submissions waiting for a connection, in order.
    carried: VecDeque<(SubmitId, SubmitRequest)>,
    /// Failed connection attempts since the last bound connection.
    attempt: u32,
    stopping: bool,
    jitter: SplitMix64,
    actions: VecDeque<Action>,
    events: VecDeque<BindEvent>,
    metrics: Option<Arc<BindMetrics>>,
    /// Counts connections, so that an answer owed on one is never sent on the next.
    connection: u64,
    /// Where the answers of deferred `deliver_sm`s go (set by the shell).
    mo_acks: Option<MoAckSender>,
}

impl BindMachine {
    /// A bind that connects at once. `jitter_seed` drives the reconnect jitter (the shell seeds
    /// it at random so that binds dropped together do not reconnect in step; tests fix it).
    pub fn new(
        config: BindMachineConfig,
        now: Instant,
        jitter_seed: u64,
        metrics: Option<Arc<BindMetrics>>,
    ) -> Self {
        BindMachine {
            config,
            link: Link::Down { retry_at: now },
            settled: false,
            carried: VecDeque::new(),
            attempt: 0,
            stopping: false,
            jitter: SplitMix64::new(jitter_seed),
            actions: VecDeque::new(),
            connection: 0,
            mo_acks: None,
            events: VecDeque::new(),
            metrics,
        }
    }

    /// The bind's state, as the metrics report it.
    pub fn state(&self) -> BindState {
        match &self.link {
            Link::Down { .. } | Link::Stopped => BindState::Down,
            Link::Connecting => BindState::Connecting,
            Link::Up { .. } if self.stopping => BindState::Unbinding,
            Link::Up {
                was_bound: false, ..
            } => BindState::Binding,
            Link::Up { session, .. } if session.is_bound() => BindState::Bound,
            Link::Up { .. } => BindState::Unbinding,
        }
    }

    /// Submissions waiting for a connection.
    pub fn carried(&self) -> usize {
        self.carried.len()
    }

    /// Submissions waiting to be written: carried for a connection, or queued in the session.
    pub fn queued(&self) -> usize {
        let in_session = match &self.link {
            Link::Up { session, .. } => session.queued(),
            _ => 0,
        };
        self.carried.len() + in_session
    }

    /// Submissions written and not yet answered.
    pub fn in_flight(&self) -> usize {
        match &self.link {
            Link::Up { session, .. } => session.in_flight(),
            _ => 0,
        }
    }

    /// Submits per second the bind can carry now: 0 while it is not bound (once its first
    /// connection was decided); `None` while that first connection is under way, or bound,
    /// unpaced, before a round trip was measured.
    pub fn capacity(&self) -> Option<f64> {
        match &self.link {
            Link::Up { session, .. } if !self.stopping && session.is_bound() => session.capacity(),
            _ if !self.settled && !self.stopping => None,
            _ => Some(0.0),
        }
    }

    /// Hands a submission to the bind; it ends in exactly one `Accepted` or `Failed` event.
    pub fn submit(&mut self, now: Instant, id: SubmitId, request: SubmitRequest) {
        if self.stopping || matches!(self.link, Link::Stopped) {
            return self.fail(id, SubmitFailure::ShuttingDown);
        }
        if let Link::Up { session, .. } = &mut self.link {
            match session.submit(now, request, id) {
                Ok(()) => {}
                Err((SubmitRejected::QueueFull, _)) => self.fail(id, SubmitFailure::QueueFull),
                Err((SubmitRejected::ReceiverBind, _)) => {
                    self.fail(id, SubmitFailure::Rejected(CommandStatus::EsmeRinvbndsts))
                }
                Err((SubmitRejected::NotAccepting, request)) => self.carry(id, *request),
            }
            self.pump_session(now);
        } else {
            self.carry(id, request);
        }
    }

    /// Graceful stop: no new submissions; the session drains what is in flight and unbinds;
    /// what waits for a connection fails as [`SubmitFailure::ShuttingDown`]; then
    /// [`BindEvent::Stopped`].
    pub fn unbind(&mut self, now: Instant) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        match &mut self.link {
            Link::Up { session, .. } => {
                session.unbind(now);
                self.pump_session(now);
            }
            Link::Connecting => {
                self.actions.push_back(Action::CloseLink);
                self.stop();
            }
            Link::Down { .. } => self.stop(),
            Link::Stopped => {}
        }
    }

    /// The connection asked for by [`Action::Connect`] is up: a session starts on it, and the
    /// carried submissions go into it in order.
    /// Where the answers of deferred `deliver_sm`s go ([`MoAck`]): the shell's loop, which
    /// hands them to [`Self::ack_mo`].
    pub fn set_mo_ack_sender(&mut self, to: MoAckSender) {
        self.mo_acks = Some(to);
    }

    /// Answers a deferred `deliver_sm`, when its connection is still the one up.
    pub fn ack_mo(&mut self, token: MoAckToken, status: CommandStatus) {
        if let Link::Up { session, .. } = &mut self.link {
            if token.connection == self.connection {
                session.ack_mo(token.seq, status);
            }
        }
    }

    pub fn handle_connected(&mut self, now: Instant) {
        if !matches!(self.link, Link::Connecting) {
            // A connection nobody asked for any more (the bind is stopping): close it.
            self.actions.push_back(Action::CloseLink);
            return;
        }
        self.connection += 1;
        let mut session =
            match Session::with_metrics(self.config.session.clone(), now, self.metrics.clone()) {
                Ok(s) => s,
                Err(e) => {
                    self.actions.push_back(Action::CloseLink);
                    self.events.push_back(BindEvent::Disconnected {
                        reason: LinkDown::InvalidConfig(e),
                    });
                    self.stopping = true;
                    return self.stop();
                }
            };
        let carried = std::mem::take(&mut self.carried);
        for (id, request) in carried {
            match session.submit(now, request, id) {
                Ok(()) => {}
                Err((SubmitRejected::ReceiverBind, _)) => {
                    self.fail(id, SubmitFailure::Rejected(CommandStatus::EsmeRinvbndsts))
                }
                // The session queue is as large as the carried queue, so this is rare: keep it
                // for the next connection rather than failing it early.
                Err((_, request)) => self.carried.push_back((id, *request)),
            }
        }
        self.link = Link::Up {
            session: Box::new(session),
            was_bound: false,
        };
        self.pump_session(now);
    }

    /// The connection asked for by [`Action::Connect`] could not be made.
    pub fn handle_connect_failed(&mut self, now: Instant, error: ConnectError) {
        if !matches!(self.link, Link::Connecting) {
            return;
        }
        self.link_down(now, LinkDown::Connect(error), false);
    }

    /// One frame read from the connection, its 4-byte length header included.
    pub fn handle_frame(&mut self, now: Instant, frame: &[u8]) {
        if let Link::Up { session, .. } = &mut self.link {
            session.handle_frame(now, frame);
            self.pump_session(now);
        }
    }

    /// The connection is gone (EOF, read or write error, framing lost).
    pub fn handle_link_lost(&mut self, now: Instant) {
        if let Link::Up { session, .. } = &mut self.link {
            session.handle_disconnect(now);
            self.pump_session(now);
        }
    }

    /// Wakes the machine at (or after) [`BindMachine::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire_carried(now);
        match &mut self.link {
            Link::Down { retry_at } if now >= *retry_at && !self.stopping => {
                self.link = Link::Connecting;
                self.actions.push_back(Action::Connect);
            }
            Link::Up { session, .. } => {
                session.handle_timeout(now);
                self.pump_session(now);
            }
            _ => {}
        }
    }

    /// The next instant [`BindMachine::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let link = match &self.link {
            Link::Down { retry_at } if !self.stopping => Some(*retry_at),
            Link::Up { session, .. } => session.poll_timeout(),
            _ => None,
        };
        // A scan, but of the carried queue only: it is bounded by `max_queued` and holds
        // anything only while the link is down.
        let carried = self.carried.iter().filter_map(|(_, r)| r.deadline).min();
        match (link, carried) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// What the shell must do next.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Bytes to write to the connection, in order.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        match &mut self.link {
            Link::Up { session, .. } => session.poll_transmit(),
            _ => None,
        }
    }

    /// What happened, in order.
    pub fn poll_event(&mut self) -> Option<BindEvent> {
        self.events.pop_front()
    }

    fn fail(&mut self, id: SubmitId, reason: SubmitFailure) {
        self.events.push_back(BindEvent::Failed { id, reason });
    }

    fn carry(&mut self, id: SubmitId, request: SubmitRequest) {
        if self.stopping {
            self.fail(id, SubmitFailure::ShuttingDown);
        } else if self.carried.len() >= self.config.session.max_queued {
            self.fail(id, SubmitFailure::QueueFull);
        } else {
            self.carried.push_back((id, request));
        }
    }

    fn expire_carried(&mut self, now: Instant) {
        if !self
            .carried
            .iter()
            .any(|(_, r)| r.deadline.is_some_and(|d| now >= d))
        {
            return;
        }
        let mut kept = VecDeque::with_capacity(self.carried.len());
        for (id, request) in std::mem::take(&mut self.carried) {
            if request.deadline.is_some_and(|d| now >= d) {
                self.fail(id, SubmitFailure::NoLinkByDeadline);
            } else {
                kept.push_back((id, request));
            }
        }
        self.carried = kept;
    }

    /// Moves the session's events out, and handles its end.
    fn pump_session(&mut self, now: Instant) {
        let Link::Up { session, was_bound } = &mut self.link else {
            return;
        };
        let mut closed = None;
        while let Some(event) = session.poll_event() {
            match event {
                SessionEvent::Bound { smsc_system_id } => {
                    *was_bound = true;
                    self.settled = true;
                    self.events.push_back(BindEvent::Bound { smsc_system_id });
                }
                SessionEvent::SubmitAccepted { id, message_id } => self
                    .events
                    .push_back(BindEvent::Accepted { id, message_id }),
                SessionEvent::SubmitFailed { id, reason } => {
                    self.events.push_back(BindEvent::Failed { id, reason })
                }
                SessionEvent::Throttled { id, .. } => {
                    self.events.push_back(BindEvent::Throttled { id })
                }
                SessionEvent::Mo(deliver) => self.events.push_back(BindEvent::Mo(deliver)),
                SessionEvent::MoAwaitingAck { deliver, seq } => {
                    let ack = MoAck {
                        token: MoAckToken {
                            connection: self.connection,
                            seq,
                        },
                        to: self.mo_acks.clone(),
                    };
                    self.events
                        .push_back(BindEvent::MoAwaitingAck { deliver, ack });
                }
                SessionEvent::Closed { reason, unsent } => {
                    closed = Some((reason, unsent));
                    break;
                }
            }
        }
        let Some((reason, unsent)) = closed else {
            return;
        };
        let was_bound = *was_bound;
        // Handed back in submission order, ahead of anything carried since.
        let mut back = VecDeque::with_capacity(unsent.len() + self.carried.len());
        for u in unsent {
            if u.was_in_flight && !self.config.resend_in_flight {
                self.fail(u.id, SubmitFailure::LinkLostInFlight);
            } else {
                back.push_back((u.id, u.request));
            }
        }
        back.extend(self.carried.drain(..));
        self.carried = back;
        self.actions.push_back(Action::CloseLink);
        let graceful = matches!(reason, CloseReason::Unbound | CloseReason::PeerUnbound);
        if self.stopping && graceful {
            return self.stop();
        }
        self.link_down(now, LinkDown::Closed(reason), was_bound);
    }

    fn link_down(&mut self, now: Instant, reason: LinkDown, was_bound: bool) {
        self.settled = true;
        if was_bound {
            self.attempt = 0;
        }
        if self.stopping {
            return self.stop();
        }
        self.events.push_back(BindEvent::Disconnected { reason });
        let delay = self.backoff(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        self.link = Link::Down {
            retry_at: now + delay,
        };
        self.expire_carried(now);
    }

    fn stop(&mut self) {
        for (id, _) in std::mem::take(&mut self.carried) {
            self.fail(id, SubmitFailure::ShuttingDown);
        }
        self.link = Link::Stopped;
        self.events.push_back(BindEvent::Stopped);
        self.actions.push_back(Action::Stop);
    }

    /// Exponential back-off with "equal jitter": half fixed, half random, so that many binds
    /// dropped together do not reconnect in step.
    fn backoff(&mut self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(16));
        let base = self
            .config
            .reconnect_initial
            .saturating_mul(factor)
            .min(self.config.reconnect_max);
        let half = base / 2;
        half + half.mul_f64(self.jitter.next_f64())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rusmpp::pdus::{BindTransceiverResp, SubmitSm, SubmitSmResp};
    use rusmpp::types::{COctetString, OctetString};
    use rusmpp::{Command, CommandId, Pdu};
    use sim_applet_model::smpp::pdu::{decode_frame, encode_command, Decoded};
    use std::str::FromStr;

    fn config() -> BindMachineConfig {
        BindMachineConfig {
            session: SessionConfig {
                window: 4,
                max_queued: 3,
                ..SessionConfig::default()
            },
            reconnect_initial: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            resend_in_flight: true,
        }
    }

    fn request(text: &str, deadline: Option<Instant>) -> SubmitRequest {
        SubmitRequest {
            submit_sm: SubmitSm::builder()
                .destination_addr(COctetString::from_str("48600100200").unwrap())
                .short_message(OctetString::from_str(text).unwrap())
                .build(),
            deadline,
        }
    }

    fn actions(m: &mut BindMachine) -> Vec<Action> {
        std::iter::from_fn(|| m.poll_action()).collect()
    }

    fn events(m: &mut BindMachine) -> Vec<BindEvent> {
        std::iter::from_fn(|| m.poll_event()).collect()
    }

    fn sent(m: &mut BindMachine) -> Vec<Command> {
        std::iter::from_fn(|| m.poll_transmit())
            .map(|b| match decode_frame(&b) {
                Decoded::Pdu(c) => c,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    /// Connects and binds; returns the SMSC's view of what was sent after the bind.
    fn bind(m: &mut BindMachine, now: Instant) -> Vec<Command> {
        m.handle_timeout(now);
        assert_eq!(actions(m), vec![Action::Connect]);
        m.handle_connected(now);
        let mut out = sent(m);
        let bind = out.remove(0);
        assert_eq!(bind.id(), CommandId::BindTransceiver);
        let resp = BindTransceiverResp::builder()
            .system_id(COctetString::from_str("SMSC").unwrap())
            .build();
        m.handle_frame(
            now,
            &encode_command(&Command::new(
                CommandStatus::EsmeRok,
                bind.sequence_number(),
                resp,
            )),
        );
        assert!(events(m).contains(&BindEvent::Bound {
            smsc_system_id: "SMSC".into()
        }));
        out.extend(sent(m));
        out
    }

    fn accept(m: &mut BindMachine, now: Instant, submit: &Command, message_id: &str) {
        let resp = SubmitSmResp::builder()
            .message_id(COctetString::from_str(message_id).unwrap())
            .build();
        m.handle_frame(
            now,
            &encode_command(&Command::new(
                CommandStatus::EsmeRok,
                submit.sequence_number(),
                resp,
            )),
        );
    }

    fn endings(events: &[BindEvent]) -> Vec<(SubmitId, Result<String, SubmitFailure>)> {
        events
            .iter()
            .filter_map(|e| match e {
                BindEvent::Accepted { id, message_id } => Some((*id, Ok(message_id.clone()))),
                BindEvent::Failed { id, reason } => Some((*id, Err(reason.clone()))),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_new_bind_connects_at_once() {
        let t0 = Instant::now();
        let mut m = BindMachine::new(config(), t0, 1, None);
        assert_eq!(m.poll_timeout(), Some(t0));
        m.handle_timeout(t0);
        assert_eq!(actions(&mut m), vec![Action::Connect]);
        assert_eq!(m.state(), BindState::Connecting);
        assert_eq!(m.poll_timeout(), None);
    }

    #[test]
    fn submission_carried_over_a_reconnect_is_sent_once_and_ends_once() {
        let t0 = Instant::now();
        let mut m = BindMachine::new(config(), t0, 1, None);
        m.submit(t0, 7, request("carried", None));
        assert_eq!(m.carried(), 1);
        // The first connect fails: still carried, nothing ended.
        m.handle_timeout(t0);
        assert_eq!(actions(&mut m), vec![Action::Connect]);
        m.handle_connect_failed(t0, ConnectError::Tcp("refused".into()));
        assert_eq!(
            events(&mut m),
            vec![BindEvent::Disconnected {
                reason: LinkDown::Connect(ConnectError::Tcp("refused".into()))
            }]
        );
        assert_eq!(m.carried(), 1);
        // The second one binds, and the carried submission goes out exactly once.
        let t1 = m.poll_timeout().unwrap();
        let out = bind(&mut m, t1);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].id(), CommandId::SubmitSm);
        accept(&mut m, t1, &out[0], "m1");
        assert_eq!(endings(&events(&mut m)), vec![(7, Ok("m1".to_owned()))]);
        assert_eq!(m.carried(), 0);
        assert!(sent(&mut m).is_empty());
    }

    #[test]
    fn in_flight_submission_lost_with_the_link_is_resent_on_the_next_bind() {
        let t0 = Instant::now();
        let mut m = BindMachine::new(config(), t0, 1, None);
        bind(&mut m, t0);
        m.submit(t0, 1, request("a", None));
        assert_eq!(sent(&mut m).len(), 1);
        m.handle_link_lost(t0);
        assert_eq!(actions(&mut m), vec![Action::CloseLink]);
        assert_eq!(
            events(&mut m),
            vec![BindEvent::Disconnected {
                reason: LinkDown::Closed(CloseReason::LinkLost)
            }]
        );
        let t1 = m.poll_timeout().unwrap();
        let out = bind(&mut m, t1);
        assert_eq!(out.len(), 1, "re-sent once");
        accept(&mut m, t1, &out[0], "m2");
        assert_eq!(endings(&events(&mut m)), vec![(1, Ok("m2".to_owned()))]);
    }

    #[test]
    fn in_flight_submission_lost_with_the_link_fails_when_resending_is_off() {
        let t0 = Instant::now();
        let mut m = BindMachine::new(
            BindMachineConfig {
                resend_in_flight: false,
                ..config()
            },
            t0,
            1,
            None,
        );
        bind(&mut m, t0);
        m.submit(t0, 1, request("written", None));
        assert_eq!(sent(&mut m).len(), 1);
        m.handle_link_lost(t0);
        assert_eq!(
            endings(&events(&mut m)),
            vec![(1, Err(SubmitFailure::LinkLostInFlight))]
        );
        assert_eq!(m.carried(), 0);
    }

    #[test]
    fn submission_fails_at_its_deadline_while_the_smsc_is_unreachable() {
        let t0 = Instant::now();
        let mut m = BindMachine::new(config(), t0, 1, None);
        let deadline = t0 + Duration::from_secs(3);
        m.submit(t0, 9, request("late", Some(deadline)));
        let mut now = t0;
        let mut ended = Vec::new();
        while ended.is_empty() {
            now = m.poll_timeout().unwrap();
            m.handle_timeout(now);
            if actions(&mut m).contains(&Action::Connect) {
                m.handle_connect_failed(now, ConnectError::TimedOut);
            }
            ended = endings(&events(&mut m));
        }
        assert_eq!(ended, vec![(9, Err(SubmitFailure::NoLinkByDeadline))]);
        assert_eq!(now, deadline, "failed at its deadline, not at a reconnect");
    }

    #[test]
    fn reconnect_back_off_doubles_with_jitter_is_capped_and_restarts_after_a_bind() {
        let t0 = Instant::now();
        let mut m = BindMachine::new(config(), t0, 42, None);
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..10 {
            m.handle_timeout(now);
            assert_eq!(actions(&mut m), vec![Action::Connect]);
            m.handle_connect_failed(now, ConnectError::TimedOut);
            let next = m.poll_timeout().unwrap();
            delays.push(next - now);
            now = next;
        }
        for (attempt, delay) in delays.iter().enumerate() {
            let base = Duration::from_secs(1 << attempt.min(6)).min(Duration::from_secs(60));
            assert!(
                *delay >= base / 2 && *delay <= base,
                "attempt {attempt}: {delay:?}"
            );
        }
        // A connection that binds resets the schedule: the next loss waits about a second.
        bind(&mut m, now);
        m.handle_link_lost(now);
        let delay = m.poll_timeout().unwrap() - now;
        assert!(delay <= Duration::from_secs(1), "{delay:?}");
    }

    #[test]
    fn carried_queue_is_bounded() {
        let t0 = Instant::now();
        let mut m = BindMachine::new(config(), t0, 1, None);
        for id in 0..4 {
            m.submit(t0, id, request("x", None));
        }
        assert_eq!(m.carried(), 3);
        assert_eq!(
            endings(&events(&mut m)),
            vec![(3, Err(SubmitFailure::QueueFull))]
        );
    }

    #[test]
    fn unbind_while_down_fails_what_waits_and_stops() {
        let t0 = Instant::now();
        let mut m = BindMachine::new(config(), t0, 1, None);
        m.submit(t0, 1, request("x", None));
        m.unbind(t0);
        assert_eq!(
            events(&mut m),
            vec![
                BindEvent::Failed {
                    id: 1,
                    reason: SubmitFailure::ShuttingDown
                },
                BindEvent::Stopped
            ]
        );
        assert_eq!(actions(&mut m), vec![Action::Stop]);
        m.submit(t0, 2, request("y", None));
        assert_eq!(
            endings(&events(&mut m)),
            vec![(2, Err(SubmitFailure::ShuttingDown))]
        );
        assert_eq!(m.poll_timeout(), None);
    }

    #[test]
    fn graceful_unbind_drains_in_flight_then_stops() {
        let t0 = Instant::now();
        let mut m = BindMachine::new(config(), t0, 1, None);
        bind(&mut m, t0);
        m.submit(t0, 1, request("a", None));
        let submit = sent(&mut m).remove(0);
        m.unbind(t0);
        assert_eq!(m.state(), BindState::Unbinding);
        accept(&mut m, t0, &submit, "m1");
        let unbind = sent(&mut m).remove(0);
        assert_eq!(unbind.id(), CommandId::Unbind);
        m.handle_frame(
            t0,
            &encode_command(&Command::new(
                CommandStatus::EsmeRok,
                unbind.sequence_number(),
                Pdu::UnbindResp,
            )),
        );
        assert_eq!(
            events(&mut m),
            vec![
                BindEvent::Accepted {
                    id: 1,
                    message_id: "m1".into()
                },
                BindEvent::Stopped
            ]
        );
        assert_eq!(actions(&mut m), vec![Action::CloseLink, Action::Stop]);
    }

    #[test]
    fn dead_link_is_reported_with_its_reason_and_reconnects() {
        let t0 = Instant::now();
        let mut m = BindMachine::new(config(), t0, 1, None);
        bind(&mut m, t0);
        // Silence: an enquire_link goes out, its answer never comes.
        let t1 = m.poll_timeout().unwrap();
        m.handle_timeout(t1);
        assert_eq!(sent(&mut m)[0].id(), CommandId::EnquireLink);
        let t2 = m.poll_timeout().unwrap();
        m.handle_timeout(t2);
        assert_eq!(
            events(&mut m),
            vec![BindEvent::Disconnected {
                reason: LinkDown::Closed(CloseReason::DeadLink)
            }]
        );
        assert_eq!(actions(&mut m), vec![Action::CloseLink]);
        let t3 = m.poll_timeout().unwrap();
        m.handle_timeout(t3);
        assert_eq!(actions(&mut m), vec![Action::Connect]);
    }

    #[test]
    fn invalid_settings_stop_the_bind_instead_of_looping() {
        let t0 = Instant::now();
        let mut cfg = config();
        cfg.session.system_id = "x".repeat(16);
        let mut m = BindMachine::new(cfg, t0, 1, None);
        m.submit(t0, 1, request("x", None));
        m.handle_timeout(t0);
        assert_eq!(actions(&mut m), vec![Action::Connect]);
        m.handle_connected(t0);
        let ev = events(&mut m);
        assert!(matches!(
            ev[0],
            BindEvent::Disconnected {
                reason: LinkDown::InvalidConfig(ConfigError::BindField { .. })
            }
        ));
        assert_eq!(
            &ev[1..],
            &[
                BindEvent::Failed {
                    id: 1,
                    reason: SubmitFailure::ShuttingDown
                },
                BindEvent::Stopped
            ]
        );
        assert_eq!(actions(&mut m), vec![Action::CloseLink, Action::Stop]);
    }

    #[test]
    fn a_deferred_answer_goes_out_on_its_own_connection_only_and_by_drop_as_ok() {
        let t0 = Instant::now();
        let mut m = BindMachine::new(
            BindMachineConfig {
                session: SessionConfig {
                    defer_mo_ack: true,
                    ..config().session
                },
                ..config()
            },
            t0,
            7,
            None,
        );
        let (to, mut acks) = tokio::sync::mpsc::unbounded_channel();
        m.set_mo_ack_sender(to);
        bind(&mut m, t0);
        let deliver = |seq: u32| {
            let pdu = DeliverSm::builder()
                .source_addr(COctetString::from_str("48600100200").unwrap())
                .short_message(OctetString::from_str("1").unwrap())
                .build();
            encode_command(&Command::new(CommandStatus::EsmeRok, seq, pdu))
        };
        let mo_ack = |m: &mut BindMachine| match events(m).pop() {
            Some(BindEvent::MoAwaitingAck { ack, .. }) => ack,
            other => panic!("{other:?}"),
        };
        m.handle_frame(t0, &deliver(41));
        let first = mo_ack(&mut m);
        m.handle_frame(t0, &deliver(42));
        let second = mo_ack(&mut m);
        assert!(sent(&mut m).is_empty());

        first.reply(CommandStatus::EsmeRxTAppn);
        drop(second);
        for _ in 0..2 {
            let (token, status) = acks.try_recv().unwrap();
            m.ack_mo(token, status);
        }
        let out: Vec<_> = sent(&mut m)
            .iter()
            .map(|c| (c.id(), c.sequence_number(), c.status()))
            .collect();
        assert_eq!(
            out,
            vec![
                (CommandId::DeliverSmResp, 41, CommandStatus::EsmeRxTAppn),
                (CommandId::DeliverSmResp, 42, CommandStatus::EsmeRok),
            ]
        );

        // Owed on a connection that is gone: never sent on the next one.
        m.handle_frame(t0, &deliver(43));
        let stale = mo_ack(&mut m);
        m.handle_link_lost(t0);
        let _ = (events(&mut m), actions(&mut m));
        bind(&mut m, t0 + Duration::from_secs(2));
        drop(stale);
        let (token, status) = acks.try_recv().unwrap();
        m.ack_mo(token, status);
        assert!(sent(&mut m).is_empty(), "an answer owed on the old link");
    }
}
