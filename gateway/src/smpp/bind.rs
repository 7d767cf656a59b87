//! The tokio shell around one [`Session`]: socket, timers, reconnects.
//!
//! [`spawn`] starts a task that connects to the SMSC, frames the read half with
//! [`frame_codec`], writes [`Session::poll_transmit`] bytes to the write half, sleeps until
//! [`Session::poll_timeout`], and turns [`SessionEvent`]s into [`BindEvent`]s on a bounded
//! channel. Callers talk to it through a [`BindHandle`] (bounded command channel).
//!
//! When the link dies the task reconnects with exponential back-off and jitter and binds
//! again. Submissions the closed session handed back are re-submitted on the new bind
//! (those already written only if `resend_in_flight`, since their answer may just have been
//! lost); any that are still unsent at their own deadline fail with
//! [`SubmitFailure::DeadlineExpired`], so every submission ends with exactly one
//! [`BindEvent::Accepted`] or [`BindEvent::Failed`].
//!
//! SMPP over TLS (conventionally port 3550): with [`BindConfig::tls`] set, the task connects
//! TCP, runs the rustls handshake (the whole connect, handshake included, bounded by
//! `connect_timeout`) and then drives the same framed loop over the TLS stream. A failed
//! handshake is a failed connect: `Disconnected`, back-off, retry.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rand::Rng;
use rusmpp::pdus::DeliverSm;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::codec::FramedRead;

pub use crate::tls::{
    crypto_provider, load_pem_certs, load_pem_key, tls_server_config, TlsClientSettings,
    TlsSetupError,
};

use super::framing::frame_codec;
use super::session::{
    CloseReason, Session, SessionConfig, SessionEvent, SubmitFailure, SubmitId, SubmitRejected,
    SubmitRequest,
};
use crate::metrics::smpp::{BindMetrics, BindState};

/// Settings of one bind and its reconnect policy.
#[derive(Debug, Clone)]
pub struct BindConfig {
    /// `host:port` of the SMSC.
    pub addr: String,
    /// Session settings.
    pub session: SessionConfig,
    /// Time allowed for the TCP connect.
    pub connect_timeout: Duration,
    /// First reconnect delay; doubles per failed attempt.
    pub reconnect_initial: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// Re-send submissions that were written on a link that died before their answer came.
    /// `true` is at-least-once (a lost `submit_sm_resp` duplicates the message at the SMSC);
    /// `false` fails them with [`SubmitFailure::LinkLostInFlight`].
    pub resend_in_flight: bool,
    /// Instrumentation of this bind (none: not measured).
    pub metrics: Option<Arc<BindMetrics>>,
    /// SMPP over TLS; `None` is plain TCP.
    pub tls: Option<TlsClientSettings>,
}

/// The byte stream a bind runs over: plain TCP or TLS over TCP.
trait LinkStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> LinkStream for T {}

impl BindConfig {
    /// Defaults for `addr`: 5 s connect timeout, back-off 1 s doubling to 60 s, re-send on.
    pub fn new(addr: impl Into<String>, session: SessionConfig) -> Self {
        Self {
            addr: addr.into(),
            session,
            connect_timeout: Duration::from_secs(5),
            reconnect_initial: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            resend_in_flight: true,
            metrics: None,
            tls: None,
        }
    }

    /// Runs the bind over TLS with these settings.
    pub fn with_tls(mut self, tls: TlsClientSettings) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Reports this bind's state, reconnects and its session's PDUs to `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<BindMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

/// What a bind reports.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// The link went down; a reconnect follows unless the bind is stopping.
    Disconnected {
        /// What happened.
        reason: String,
    },
    /// The task ended (after [`BindHandle::unbind`] or when the handle was dropped).
    Stopped,
}

enum Command {
    Submit {
        id: SubmitId,
        request: Box<SubmitRequest>,
    },
    Unbind,
}

/// The caller's side of a bind task.
#[derive(Debug, Clone)]
pub struct BindHandle {
    tx: mpsc::Sender<Command>,
    pending: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Submit { id, .. } => write!(f, "Submit({id})"),
            Command::Unbind => write!(f, "Unbind"),
        }
    }
}

/// The bind task is gone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the bind task has stopped")]
pub struct BindStopped;

impl BindHandle {
    /// Hands a submission to the bind; its outcome arrives as an event.
    pub async fn submit(&self, id: SubmitId, request: SubmitRequest) -> Result<(), BindStopped> {
        self.pending.fetch_add(1, Ordering::Relaxed);
        if self
            .tx
            .send(Command::Submit {
                id,
                request: Box::new(request),
            })
            .await
            .is_err()
        {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            return Err(BindStopped);
        }
        Ok(())
    }

    /// Graceful stop: drain in-flight submissions, unbind, end the task.
    pub async fn unbind(&self) -> Result<(), BindStopped> {
        self.tx.send(Command::Unbind).await.map_err(|_| BindStopped)
    }

    /// Submissions handed over and not yet answered (for least-loaded routing).
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }
}

/// Starts the bind task; events go to `events`.
pub fn spawn(
    config: BindConfig,
    events: mpsc::Sender<BindEvent>,
) -> (BindHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(64);
    let pending = Arc::new(AtomicUsize::new(0));
    let task = BindTask {
        config,
        events,
        commands: rx,
        carried: VecDeque::new(),
        pending: pending.clone(),
        stopping: false,
    };
    let join = tokio::spawn(task.run());
    (BindHandle { tx, pending }, join)
}

struct BindTask {
    config: BindConfig,
    events: mpsc::Sender<BindEvent>,
    commands: mpsc::Receiver<Command>,
    /// Submissions waiting for a bind, in order.
    carried: VecDeque<(SubmitId, SubmitRequest)>,
    pending: Arc<AtomicUsize>,
    stopping: bool,
}

fn now_std() -> std::time::Instant {
    Instant::now().into_std()
}

impl BindTask {
    fn set_state(&self, state: BindState) {
        if let Some(m) = &self.config.metrics {
            m.set_state(state);
        }
    }

    async fn emit(&self, event: BindEvent) {
        if matches!(event, BindEvent::Accepted { .. } | BindEvent::Failed { .. }) {
            self.pending.fetch_sub(1, Ordering::Relaxed);
        }
        // A dropped receiver means nobody listens any more; the task winds down on its own.
        let _ = self.events.send(event).await;
    }

    async fn fail(&self, id: SubmitId, reason: SubmitFailure) {
        self.emit(BindEvent::Failed { id, reason }).await;
    }

    /// Keeps a submission for the next bind; `false` when too many wait already.
    fn carry(&mut self, id: SubmitId, request: SubmitRequest) -> bool {
        if self.carried.len() >= self.config.session.max_queued {
            return false;
        }
        self.carried.push_back((id, request));
        true
    }

    async fn expire_carried(&mut self) {
        let now = now_std();
        let mut kept = VecDeque::with_capacity(self.carried.len());
        let mut expired = Vec::new();
        for (id, req) in self.carried.drain(..) {
            if req.deadline.is_some_and(|d| now >= d) {
                expired.push(id);
            } else {
                kept.push_back((id, req));
            }
        }
        self.carried = kept;
        for id in expired {
            self.fail(id, SubmitFailure::DeadlineExpired).await;
        }
    }

    async fn fail_all_carried(&mut self, reason: SubmitFailure) {
        let ids: Vec<SubmitId> = self.carried.drain(..).map(|(id, _)| id).collect();
        for id in ids {
            self.fail(id, reason.clone()).await;
        }
    }

    async fn handle_command_while_down(&mut self, command: Option<Command>) {
        match command {
            Some(Command::Submit { id, request }) => {
                if self.stopping {
                    self.fail(id, SubmitFailure::ShuttingDown).await;
                } else if !self.carry(id, *request) {
                    self.fail(id, SubmitFailure::QueueFull).await;
                }
            }
            Some(Command::Unbind) | None => self.stopping = true,
        }
    }

    async fn run(mut self) {
        let mut attempt: u32 = 0;
        let mut first_attempt = true;
        loop {
            self.expire_carried().await;
            if self.stopping {
                break;
            }
            if let Some(m) = &self.config.metrics {
                if !first_attempt {
                    m.reconnect();
                }
                m.set_state(BindState::Connecting);
            }
            first_attempt = false;
            let connected = timeout(self.config.connect_timeout, self.connect()).await;
            match connected {
                Ok(Ok(stream)) => {
                    let (reason, was_bound) = self.run_connected(stream).await;
                    self.set_state(BindState::Down);
                    if was_bound {
                        attempt = 0;
                    }
                    if self.stopping {
                        break;
                    }
                    self.emit(BindEvent::Disconnected { reason }).await;
                }
                Ok(Err(reason)) => {
                    self.set_state(BindState::Down);
                    self.emit(BindEvent::Disconnected { reason }).await
                }
                Err(_) => {
                    self.set_state(BindState::Down);
                    self.emit(BindEvent::Disconnected {
                        reason: format!("connect to {} timed out", self.config.addr),
                    })
                    .await
                }
            }
            let delay = self.backoff(attempt);
            attempt = attempt.saturating_add(1);
            self.wait_down(Instant::now() + delay).await;
        }
        self.fail_all_carried(SubmitFailure::ShuttingDown).await;
        self.set_state(BindState::Down);
        self.emit(BindEvent::Stopped).await;
    }

    /// TCP connect, then the TLS handshake when configured; the error says which step failed.
    async fn connect(&self) -> Result<Box<dyn LinkStream>, String> {
        let addr = &self.config.addr;
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.config.tls else {
            return Ok(Box::new(tcp));
        };
        // Built per attempt so a CA file replaced on disk is picked up on the next reconnect.
        let (connector, name) = tls
            .connector()
            .map_err(|e| format!("TLS setup for {addr}: {e}"))?;
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
        Ok(Box::new(stream))
    }

    /// Exponential back-off with "equal jitter": half fixed, half random, so that many binds
    /// dropped together do not reconnect in step.
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(16));
        let base = self
            .config
            .reconnect_initial
            .saturating_mul(factor)
            .min(self.config.reconnect_max);
        let half = base / 2;
        half + half.mul_f64(rand::thread_rng().gen_range(0.0..=1.0))
    }

    /// Sleeps until `until` while the link is down, taking commands and failing expired
    /// submissions at their deadlines.
    async fn wait_down(&mut self, until: Instant) {
        loop {
            let next_deadline = self
                .carried
                .iter()
                .filter_map(|(_, r)| r.deadline)
                .min()
                .map(Instant::from_std);
            let wake = next_deadline.map_or(until, |d| d.min(until));
            tokio::select! {
                _ = sleep_until(wake) => {
                    self.expire_carried().await;
                    if Instant::now() >= until {
                        return;
                    }
                }
                command = self.commands.recv() => {
                    self.handle_command_while_down(command).await;
                    if self.stopping {
                        return;
                    }
                }
            }
        }
    }

    /// Runs one connection to its end; returns why it ended and whether it got bound.
    async fn run_connected(&mut self, stream: Box<dyn LinkStream>) -> (String, bool) {
        self.set_state(BindState::Binding);
        let mut session = match Session::with_metrics(
            self.config.session.clone(),
            now_std(),
            self.config.metrics.clone(),
        ) {
            Ok(s) => s,
            Err(e) => {
                // The config cannot change between attempts: stop instead of looping.
                self.stopping = true;
                return (format!("invalid bind configuration: {e}"), false);
            }
        };
        let mut was_bound = false;
        let carried: Vec<(SubmitId, SubmitRequest)> = self.carried.drain(..).collect();
        for (id, request) in carried {
            if let Err((_, request)) = session.submit(now_std(), request, id) {
                self.carried.push_back((id, *request));
            }
        }
        if self.stopping {
            self.set_state(BindState::Unbinding);
            session.unbind(now_std());
        }
        let (read_half, mut write_half) = tokio::io::split(stream);
        let mut reader = FramedRead::new(read_half, frame_codec());
        loop {
            while let Some(bytes) = session.poll_transmit() {
                if let Err(e) = write_half.write_all(&bytes).await {
                    tracing::warn!(error = %e, "write to SMSC failed");
                    session.handle_disconnect(now_std());
                    break;
                }
            }
            while let Some(event) = session.poll_event() {
                match event {
                    SessionEvent::Bound { smsc_system_id } => {
                        was_bound = true;
                        self.set_state(BindState::Bound);
                        self.emit(BindEvent::Bound { smsc_system_id }).await;
                    }
                    SessionEvent::SubmitAccepted { id, message_id } => {
                        self.emit(BindEvent::Accepted { id, message_id }).await
                    }
                    SessionEvent::SubmitFailed { id, reason } => self.fail(id, reason).await,
                    SessionEvent::Throttled { id, .. } => {
                        self.emit(BindEvent::Throttled { id }).await
                    }
                    SessionEvent::Mo(deliver) => self.emit(BindEvent::Mo(deliver)).await,
                    SessionEvent::Closed { reason, unsent } => {
                        let graceful =
                            matches!(reason, CloseReason::Unbound | CloseReason::PeerUnbound);
                        if matches!(reason, CloseReason::BindRejected(_)) {
                            tracing::warn!(?reason, "bind rejected");
                        }
                        // Handed back in submission order, ahead of anything carried since.
                        let mut back = VecDeque::new();
                        for u in unsent {
                            if u.was_in_flight && !self.config.resend_in_flight {
                                self.fail(u.id, SubmitFailure::LinkLostInFlight).await;
                            } else {
                                back.push_back((u.id, u.request));
                            }
                        }
                        back.extend(self.carried.drain(..));
                        self.carried = back;
                        if graceful && self.stopping {
                            self.fail_all_carried(SubmitFailure::ShuttingDown).await;
                        }
                        let _ = write_half.shutdown().await;
                        return (format!("{reason:?}"), was_bound);
                    }
                }
            }
            let wake = session.poll_timeout().map(Instant::from_std);
            tokio::select! {
                frame = reader.next() => match frame {
                    Some(Ok(frame)) => session.handle_frame(now_std(), &frame),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "SMPP framing error, closing the link");
                        session.handle_disconnect(now_std());
                    }
                    None => session.handle_disconnect(now_std()),
                },
                command = self.commands.recv() => match command {
                    Some(Command::Submit { id, request }) => {
                        match session.submit(now_std(), *request, id) {
                            Ok(()) => {}
                            Err((SubmitRejected::QueueFull, _)) => {
                                self.fail(id, SubmitFailure::QueueFull).await
                            }
                            Err((SubmitRejected::ReceiverBind, _)) => {
                                self.fail(id, SubmitFailure::Rejected(
                                    rusmpp::CommandStatus::EsmeRinvbndsts,
                                )).await
                            }
                            Err((SubmitRejected::NotAccepting, request)) => {
                                if self.stopping {
                                    self.fail(id, SubmitFailure::ShuttingDown).await;
                                } else if !self.carry(id, *request) {
                                    self.fail(id, SubmitFailure::QueueFull).await;
                                }
                            }
                        }
                    }
                    Some(Command::Unbind) | None => {
                        self.stopping = true;
                        self.set_state(BindState::Unbinding);
                        session.unbind(now_std());
                    }
                },
                _ = async {
                    match wake {
                        Some(w) => sleep_until(w).await,
                        None => std::future::pending().await,
                    }
                } => session.handle_timeout(now_std()),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rusmpp::{
        pdus::{BindTransceiverResp, SubmitSm, SubmitSmResp},
        types::COctetString,
        CommandId, CommandStatus, Pdu,
    };
    use sim_applet_model::smpp::pdu::{decode_frame, encode_command, Decoded};
    use std::str::FromStr;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn next_command(
        reader: &mut FramedRead<
            tokio::net::tcp::OwnedReadHalf,
            tokio_util::codec::LengthDelimitedCodec,
        >,
    ) -> Option<rusmpp::Command> {
        match reader.next().await? {
            Ok(f) => match decode_frame(&f) {
                Decoded::Pdu(c) => Some(c),
                other => panic!("{other:?}"),
            },
            Err(_) => None,
        }
    }

    async fn next_answering_keepalive(
        reader: &mut FramedRead<
            tokio::net::tcp::OwnedReadHalf,
            tokio_util::codec::LengthDelimitedCodec,
        >,
        wr: &mut tokio::net::tcp::OwnedWriteHalf,
    ) -> rusmpp::Command {
        loop {
            let c = next_command(reader).await.unwrap();
            if c.id() != CommandId::EnquireLink {
                return c;
            }
            wr.write_all(&encode_command(&rusmpp::Command::new(
                CommandStatus::EsmeRok,
                c.sequence_number(),
                Pdu::EnquireLinkResp,
            )))
            .await
            .unwrap();
        }
    }

    fn request(deadline: Option<std::time::Instant>) -> SubmitRequest {
        SubmitRequest {
            submit_sm: SubmitSm::builder()
                .destination_addr(COctetString::from_str("48600").unwrap())
                .build(),
            deadline,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn submission_fails_at_its_deadline_while_the_smsc_is_unreachable() {
        // A listener that is dropped at once: every connect is refused.
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let (tx, mut rx) = mpsc::channel(16);
        let (handle, join) = spawn(
            BindConfig::new(addr.to_string(), SessionConfig::default()),
            tx,
        );
        let deadline = now_std() + Duration::from_secs(30);
        handle.submit(1, request(Some(deadline))).await.unwrap();
        loop {
            match rx.recv().await.unwrap() {
                BindEvent::Failed { id, reason } => {
                    assert_eq!((id, reason), (1, SubmitFailure::DeadlineExpired));
                    break;
                }
                BindEvent::Disconnected { .. } => {}
                other => panic!("{other:?}"),
            }
        }
        assert!(now_std() >= deadline);
        assert_eq!(handle.pending(), 0);
        handle.unbind().await.unwrap();
        assert_eq!(rx.recv().await, Some(BindEvent::Stopped));
        join.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn dead_link_is_detected_and_the_bind_reconnects() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let config = BindConfig::new(addr.to_string(), SessionConfig::default());
        let (handle, join) = spawn(config, tx);
        for round in 0..2 {
            let (sock, _) = listener.accept().await.unwrap();
            let (rd, mut wr) = sock.into_split();
            let mut reader = FramedRead::new(rd, frame_codec());
            let bind = next_command(&mut reader).await.unwrap();
            assert_eq!(bind.id(), CommandId::BindTransceiver);
            let resp = BindTransceiverResp::builder()
                .system_id(COctetString::from_str("SIM").unwrap())
                .build();
            wr.write_all(&encode_command(&rusmpp::Command::new(
                CommandStatus::EsmeRok,
                bind.sequence_number(),
                resp,
            )))
            .await
            .unwrap();
            assert!(matches!(rx.recv().await.unwrap(), BindEvent::Bound { .. }));
            if round == 0 {
                // Stay silent: after 30 s an enquire_link comes, after 10 more the link is dead.
                let el = next_command(&mut reader).await.unwrap();
                assert_eq!(el.id(), CommandId::EnquireLink);
                match rx.recv().await.unwrap() {
                    BindEvent::Disconnected { reason } => assert_eq!(reason, "DeadLink"),
                    other => panic!("{other:?}"),
                }
            } else {
                handle.submit(5, request(None)).await.unwrap();
                // Paused time auto-advances while tasks wait on real sockets, so a keep-alive
                // may come first: answer it.
                let sub = next_answering_keepalive(&mut reader, &mut wr).await;
                assert_eq!(sub.id(), CommandId::SubmitSm);
                let resp = SubmitSmResp::builder()
                    .message_id(COctetString::from_str("x1").unwrap())
                    .build();
                wr.write_all(&encode_command(&rusmpp::Command::new(
                    CommandStatus::EsmeRok,
                    sub.sequence_number(),
                    resp,
                )))
                .await
                .unwrap();
                assert_eq!(
                    rx.recv().await.unwrap(),
                    BindEvent::Accepted {
                        id: 5,
                        message_id: "x1".into()
                    }
                );
                handle.unbind().await.unwrap();
                let unbind = next_answering_keepalive(&mut reader, &mut wr).await;
                assert_eq!(unbind.id(), CommandId::Unbind);
                wr.write_all(&encode_command(&rusmpp::Command::new(
                    CommandStatus::EsmeRok,
                    unbind.sequence_number(),
                    Pdu::UnbindResp,
                )))
                .await
                .unwrap();
                assert_eq!(rx.recv().await, Some(BindEvent::Stopped));
            }
        }
        join.await.unwrap();
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let (tx, _rx) = mpsc::channel(1);
        let (_ctx, crx) = mpsc::channel(1);
        let task = BindTask {
            config: BindConfig::new("127.0.0.1:1", SessionConfig::default()),
            events: tx,
            commands: crx,
            carried: VecDeque::new(),
            pending: Arc::new(AtomicUsize::new(0)),
            stopping: false,
        };
        for (attempt, base) in [(0u32, 1u64), (1, 2), (2, 4), (10, 60), (40, 60)] {
            let d = task.backoff(attempt);
            let base = Duration::from_secs(base);
            assert!(d >= base / 2 && d <= base, "attempt {attempt}: {d:?}");
        }
    }
}
