//! The tokio shell around one [`BindMachine`]: socket, timers, task.
//!
//! [`spawn`] starts a task that does what the sans-IO [`BindMachine`] asks and nothing more:
//! it connects (TCP, then the rustls handshake when [`BindConfig::tls`] is set, the whole
//! bounded by `connect_timeout`) on [`Action::Connect`], cuts the read half into frames with
//! [`frame_codec`] and feeds them in, writes what [`BindMachine::poll_transmit`] yields,
//! sleeps until [`BindMachine::poll_timeout`], and forwards [`BindEvent`]s on a bounded
//! channel. Reconnect policy, the queue carried across reconnects, deadlines and the resend
//! decision are the machine's, so every submission ends with exactly one
//! [`BindEvent::Accepted`] or [`BindEvent::Failed`] (see [`super::bind_machine`]).
//!
//! Callers talk to the task through a [`BindHandle`] (bounded command channel). SMPP over TLS
//! is conventionally on port 3550; a failed handshake is a failed connect: `Disconnected`,
//! back-off, retry.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use rand::Rng;
use rusmpp::CommandStatus;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

pub use super::bind_machine::{BindEvent, ConnectError, LinkDown, MoAck};
pub use crate::tls::{
    crypto_provider, load_pem_certs, load_pem_key, tls_server_config, TlsClientSettings,
    TlsSetupError,
};

use super::bind_machine::{Action, BindMachine, BindMachineConfig, MoAckToken};
use super::framing::frame_codec;
use super::session::{SessionConfig, SubmitId, SubmitRequest};
use crate::metrics::smpp::{BindMetrics, BindState};

/// Settings of one bind and its reconnect policy.
#[derive(Debug, Clone)]
pub struct BindConfig {
    /// `host:port` of the SMSC.
    pub addr: String,
    /// Session settings.
    pub session: SessionConfig,
    /// Time allowed for the TCP connect and the TLS handshake.
    pub connect_timeout: Duration,
    /// First reconnect delay; doubles per failed attempt.
    pub reconnect_initial: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// Re-send submissions that were written on a link that died before their answer came.
    /// `true` is at-least-once (a lost `submit_sm_resp` duplicates the message at the SMSC);
    /// `false` fails them with `SubmitFailure::LinkLostInFlight`.
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

    fn machine_config(&self) -> BindMachineConfig {
        BindMachineConfig {
            session: self.session.clone(),
            reconnect_initial: self.reconnect_initial,
            reconnect_max: self.reconnect_max,
            resend_in_flight: self.resend_in_flight,
        }
    }
}

enum Command {
    Submit {
        id: SubmitId,
        request: Box<SubmitRequest>,
    },
    Unbind,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Submit { id, .. } => write!(f, "Submit({id})"),
            Command::Unbind => write!(f, "Unbind"),
        }
    }
}

/// The caller's side of a bind task.
#[derive(Debug, Clone)]
pub struct BindHandle {
    tx: mpsc::Sender<Command>,
    pending: Arc<AtomicUsize>,
    load: Arc<BindLoad>,
}

/// What a bind carries now, written by its task after every step, read by admission.
#[derive(Debug)]
struct BindLoad {
    in_flight: AtomicUsize,
    /// Submits per second x 1000; `u64::MAX`: not known yet (unpaced, no round trip yet).
    capacity_milli: AtomicU64,
}

impl BindLoad {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            // Unknown until the task's first step: a start racing the bind's spawn is not told
            // that no bind is up.
            capacity_milli: AtomicU64::new(u64::MAX),
        }
    }

    fn update(&self, machine: &BindMachine) {
        self.in_flight.store(machine.in_flight(), Ordering::Relaxed);
        let milli = machine.capacity().map_or(u64::MAX, |c| {
            (c * 1000.0).clamp(0.0, (u64::MAX - 1) as f64) as u64
        });
        self.capacity_milli.store(milli, Ordering::Relaxed);
    }
}

/// A bind's load as admission sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BindLoadView {
    /// Submissions handed over and not yet written (command channel, carried, queued).
    pub waiting: usize,
    /// Submits per second it carries now (0 while down; `None`: bound, not measured yet).
    pub capacity: Option<f64>,
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

    /// What the bind carries now and what waits for it.
    pub fn load(&self) -> BindLoadView {
        let in_flight = self.load.in_flight.load(Ordering::Relaxed);
        let milli = self.load.capacity_milli.load(Ordering::Relaxed);
        BindLoadView {
            waiting: self.pending().saturating_sub(in_flight),
            capacity: (milli != u64::MAX).then(|| milli as f64 / 1000.0),
        }
    }
}

/// Starts the bind task; events go to `events`.
pub fn spawn(
    config: BindConfig,
    events: mpsc::Sender<BindEvent>,
) -> (BindHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(64);
    let pending = Arc::new(AtomicUsize::new(0));
    let load = Arc::new(BindLoad::new());
    let mut machine = BindMachine::new(
        config.machine_config(),
        now_std(),
        rand::thread_rng().gen(),
        config.metrics.clone(),
    );
    let (mo_acks_tx, mo_acks) = mpsc::unbounded_channel();
    machine.set_mo_ack_sender(mo_acks_tx);
    let task = BindTask {
        machine,
        config,
        events,
        commands: rx,
        mo_acks,
        pending: pending.clone(),
        load: load.clone(),
        link: None,
        connecting: None,
        attempts: 0,
        held: VecDeque::new(),
    };
    let join = tokio::spawn(task.run());
    (BindHandle { tx, pending, load }, join)
}

type Reader = FramedRead<ReadHalf<Box<dyn LinkStream>>, LengthDelimitedCodec>;

struct BindTask {
    machine: BindMachine,
    config: BindConfig,
    events: mpsc::Sender<BindEvent>,
    commands: mpsc::Receiver<Command>,
    /// Answers owed for deferred `deliver_sm`s (as many as the SMSC has outstanding).
    mo_acks: mpsc::UnboundedReceiver<(MoAckToken, CommandStatus)>,
    pending: Arc<AtomicUsize>,
    load: Arc<BindLoad>,
    /// The open connection, split.
    link: Option<(Reader, WriteHalf<Box<dyn LinkStream>>)>,
    /// The connect in progress.
    connecting: Option<BoxFuture<'static, Result<Box<dyn LinkStream>, ConnectError>>>,
    /// Connect attempts so far (every one after the first is a reconnect).
    attempts: u64,
    /// Events the owner has not taken yet (its channel is full). The link is still read and
    /// answered meanwhile, so keep-alive never waits for a busy owner; past
    /// [`MAX_HELD_EVENTS`] reading pauses and TCP pushes back on the SMSC.
    held: VecDeque<BindEvent>,
}

/// Most events held for a busy owner before the link stops being read.
const MAX_HELD_EVENTS: usize = 8192;

fn now_std() -> std::time::Instant {
    Instant::now().into_std()
}

/// TCP connect, then the TLS handshake when configured, the whole within `limit`.
async fn connect(
    addr: String,
    tls: Option<TlsClientSettings>,
    limit: Duration,
) -> Result<Box<dyn LinkStream>, ConnectError> {
    let attempt = async {
        let tcp = TcpStream::connect(&addr)
            .await
            .map_err(|e| ConnectError::Tcp(format!("{addr}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = tls else {
            return Ok(Box::new(tcp) as Box<dyn LinkStream>);
        };
        // Built per attempt so a CA file replaced on disk is picked up on the next reconnect.
        let (connector, name) = tls
            .connector()
            .map_err(|e| ConnectError::Tls(format!("setup for {addr}: {e}")))?;
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| ConnectError::Tls(format!("handshake with {addr}: {e}")))?;
        Ok(Box::new(stream) as Box<dyn LinkStream>)
    };
    timeout(limit, attempt)
        .await
        .unwrap_or(Err(ConnectError::TimedOut))
}

impl BindTask {
    async fn run(mut self) {
        loop {
            if self.carry_out().await {
                return;
            }
            let wake = self.machine.poll_timeout().map(Instant::from_std);
            let link = &mut self.link;
            let connecting = &mut self.connecting;
            let reading = self.held.len() < MAX_HELD_EVENTS;
            let holding = !self.held.is_empty();
            let events = &self.events;
            // Biased: what the SMSC sent (keep-alive among it) is read and answered before
            // anything else is taken on, and a late timer finds the answers already read.
            tokio::select! {
                biased;
                frame = async {
                    match link {
                        Some((reader, _)) => reader.next().await,
                        None => std::future::pending().await,
                    }
                }, if reading => match frame {
                    Some(Ok(frame)) => self.machine.handle_frame(now_std(), &frame),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "SMPP framing error, closing the link");
                        self.machine.handle_link_lost(now_std());
                    }
                    None => self.machine.handle_link_lost(now_std()),
                },
                permit = events.reserve(), if holding => {
                    if let (Ok(permit), Some(event)) = (permit, self.held.pop_front()) {
                        permit.send(event);
                    } else {
                        // Nobody listens any more: the events have nowhere to go.
                        self.held.clear();
                    }
                }
                connected = async {
                    match connecting {
                        Some(attempt) => attempt.await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.connecting = None;
                    match connected {
                        Ok(stream) => {
                            let (read_half, write_half) = tokio::io::split(stream);
                            self.link = Some((FramedRead::new(read_half, frame_codec()), write_half));
                            self.machine.handle_connected(now_std());
                        }
                        Err(e) => self.machine.handle_connect_failed(now_std(), e),
                    }
                }
                Some((token, status)) = self.mo_acks.recv() => {
                    self.machine.ack_mo(token, status);
                }
                command = self.commands.recv() => match command {
                    Some(Command::Submit { id, request }) => {
                        self.machine.submit(now_std(), id, *request)
                    }
                    Some(Command::Unbind) | None => self.machine.unbind(now_std()),
                },
                _ = async {
                    match wake {
                        Some(w) => sleep_until(w).await,
                        None => std::future::pending().await,
                    }
                } => self.machine.handle_timeout(now_std()),
            }
        }
    }

    /// Does what the machine asks until it asks nothing more; `true` once it has stopped.
    async fn carry_out(&mut self) -> bool {
        loop {
            let mut busy = false;
            // Everything the machine has to send goes out in one write (one syscall for a
            // burst of submits and answers, not one per PDU).
            let mut gathered: Option<Vec<u8>> = None;
            while let Some(bytes) = self.machine.poll_transmit() {
                match &mut gathered {
                    None => gathered = Some(bytes.to_vec()),
                    Some(all) => all.extend_from_slice(&bytes),
                }
            }
            busy |= gathered.is_some();
            // Without a link there is nowhere to write: the machine has already counted it lost.
            if let (Some(bytes), Some((_, writer))) = (gathered, &mut self.link) {
                // An SMSC that stops reading must not freeze the bind: the write gets as long
                // as an enquire_link answer would, then the link counts as lost.
                let limit = self.config.session.enquire_link_timeout;
                match timeout(limit, writer.write_all(&bytes)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "write to SMSC failed");
                        self.machine.handle_link_lost(now_std());
                    }
                    Err(_) => {
                        tracing::warn!(?limit, "write to SMSC timed out: it stopped reading");
                        self.machine.handle_link_lost(now_std());
                    }
                }
            }
            while let Some(event) = self.machine.poll_event() {
                busy = true;
                self.hand_over(event);
            }
            let mut stopped = false;
            while let Some(action) = self.machine.poll_action() {
                busy = true;
                match action {
                    Action::Connect => {
                        if self.attempts > 0 {
                            if let Some(m) = &self.config.metrics {
                                m.reconnect();
                            }
                        }
                        self.attempts += 1;
                        self.connecting = Some(
                            connect(
                                self.config.addr.clone(),
                                self.config.tls.clone(),
                                self.config.connect_timeout,
                            )
                            .boxed(),
                        );
                    }
                    Action::CloseLink => {
                        self.connecting = None;
                        if let Some((_, mut writer)) = self.link.take() {
                            let _ = writer.shutdown().await;
                        }
                    }
                    Action::Stop => stopped = true,
                }
            }
            if let Some(m) = &self.config.metrics {
                m.set_state(self.machine.state());
            }
            self.load.update(&self.machine);
            if stopped {
                while let Some(event) = self.machine.poll_event() {
                    self.hand_over(event);
                }
                // The last events (every submission's ending, `Stopped`) are owed: wait for room.
                for event in self.held.drain(..) {
                    if self.events.send(event).await.is_err() {
                        break;
                    }
                }
                if let Some(m) = &self.config.metrics {
                    m.set_state(BindState::Down);
                }
                return true;
            }
            if !busy {
                return false;
            }
        }
    }
}

impl BindTask {
    /// Passes one event to the owner at once, or holds it (in order) while the owner's channel
    /// is full; a submission's ending leaves the pending count.
    fn hand_over(&mut self, event: BindEvent) {
        if let BindEvent::Disconnected { reason } = &event {
            if matches!(
                reason,
                LinkDown::Closed(super::session::CloseReason::BindRejected(_))
            ) {
                tracing::warn!(%reason, "bind rejected");
            }
        }
        if matches!(event, BindEvent::Accepted { .. } | BindEvent::Failed { .. }) {
            self.pending.fetch_sub(1, Ordering::Relaxed);
        }
        if !self.held.is_empty() {
            self.held.push_back(event);
            return;
        }
        match self.events.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(event)) => self.held.push_back(event),
            // A dropped receiver means nobody listens any more; the task winds down on its own.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::smpp::session::SubmitFailure;
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

    /// Answers the bind PDU the gateway sends first on `sock` (bound as transceiver "SIM");
    /// returns the link's halves for the test to go on with.
    async fn accept_bind(
        sock: tokio::net::TcpStream,
    ) -> (
        FramedRead<tokio::net::tcp::OwnedReadHalf, tokio_util::codec::LengthDelimitedCodec>,
        tokio::net::tcp::OwnedWriteHalf,
    ) {
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
        (reader, wr)
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

    /// Real time: the keep-alive answer must leave while the submit queue is saturated, the
    /// SMSC answers no submit, and the owner has stopped taking events.
    #[tokio::test]
    async fn keepalive_is_answered_in_time_with_a_saturated_queue_and_a_stalled_owner() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Room for one event: `Bound` fills it, and nobody reads it.
        let (tx, _stalled_owner) = mpsc::channel(1);
        let (handle, _join) = spawn(
            BindConfig::new(addr.to_string(), SessionConfig::default()),
            tx,
        );
        let (sock, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .expect("the bind never connected")
            .unwrap();
        let (mut reader, mut wr) = accept_bind(sock).await;
        // 500 submissions: the window (10) fills and stays full, the rest queue.
        for id in 0..500 {
            handle.submit(id, request(None)).await.unwrap();
        }
        // 300 MO messages, each an event the owner does not take, then our keep-alive probe.
        let mo = rusmpp::pdus::DeliverSm::builder()
            .source_addr(COctetString::from_str("48600100200").unwrap())
            .build();
        for seq in 1..=300 {
            wr.write_all(&encode_command(&rusmpp::Command::new(
                CommandStatus::EsmeRok,
                seq,
                mo.clone(),
            )))
            .await
            .unwrap();
        }
        wr.write_all(&encode_command(&rusmpp::Command::new(
            CommandStatus::EsmeRok,
            9_999,
            Pdu::EnquireLink,
        )))
        .await
        .unwrap();
        let (mut submits, mut mo_answers) = (0, 0);
        let answered = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                let c = next_command(&mut reader).await.expect("link closed");
                match c.id() {
                    CommandId::EnquireLinkResp => return c.sequence_number(),
                    CommandId::SubmitSm => submits += 1,
                    CommandId::DeliverSmResp => mo_answers += 1,
                    other => panic!("unexpected {other:?}"),
                }
            }
        })
        .await
        .expect("no enquire_link_resp within 2 s: keep-alive waited behind the load");
        assert_eq!(answered, 9_999);
        assert_eq!(mo_answers, 300, "every MO answered before the keep-alive");
        assert_eq!(submits, 10, "only the window's worth of submits written");
    }

    /// Real time: an SMSC that binds, then stops reading. The writes fill the socket buffers;
    /// without a time limit the bind task would block in `write_all` for ever, its keep-alive
    /// and its reconnect with it.
    #[tokio::test]
    async fn an_smsc_that_stops_reading_loses_the_link_and_the_bind_reconnects() {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        // A small receive buffer, so the gateway's writes block soon.
        socket.set_recv_buffer_size(4096).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(4).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel(1024);
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let session = SessionConfig {
            window: 100_000,
            max_queued: 100_000,
            enquire_link_timeout: Duration::from_secs(1),
            ..SessionConfig::default()
        };
        let (handle, _join) = spawn(BindConfig::new(addr.to_string(), session), tx);
        let accept = || async {
            tokio::time::timeout(Duration::from_secs(25), listener.accept())
                .await
                .expect("no connection from the bind")
                .unwrap()
                .0
        };
        let sock = accept().await;
        let (reader, wr) = accept_bind(sock).await;
        // From now on nothing is read: 20 000 submits of ~200 bytes cannot all be written.
        let text = rusmpp::types::OctetString::from_str(&"x".repeat(140)).unwrap();
        let started = std::time::Instant::now();
        let submitter = handle.clone();
        tokio::spawn(async move {
            for id in 0..20_000 {
                let request = SubmitRequest {
                    submit_sm: SubmitSm::builder()
                        .destination_addr(COctetString::from_str("48600").unwrap())
                        .short_message(text.clone())
                        .build(),
                    deadline: None,
                };
                if submitter.submit(id, request).await.is_err() {
                    return;
                }
            }
        });
        let _second = accept().await;
        // Bound generously: under a loaded test run the write timeout (1 s) and the reconnect
        // back-off stretch; without the write timeout there is no second connection at all.
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "reconnected only after {:?}",
            started.elapsed()
        );
        drop((reader, wr));
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
                    assert_eq!((id, reason), (1, SubmitFailure::NoLinkByDeadline));
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
            let (mut reader, mut wr) = accept_bind(sock).await;
            assert!(matches!(rx.recv().await.unwrap(), BindEvent::Bound { .. }));
            if round == 0 {
                // Stay silent: after 30 s an enquire_link comes, after 10 more the link is dead.
                let el = next_command(&mut reader).await.unwrap();
                assert_eq!(el.id(), CommandId::EnquireLink);
                match rx.recv().await.unwrap() {
                    BindEvent::Disconnected { reason } => assert_eq!(
                        reason,
                        LinkDown::Closed(crate::smpp::session::CloseReason::DeadLink)
                    ),
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
}
