//! The tokio shell of the simulated SMSC: accept loop, one task per connection, one task for
//! the network.
//!
//! Accept loop: a `Semaphore` permit per connection (the connection limit), accept errors are
//! logged and retried with back-off, never fatal. Connection task: reads frames with
//! `sim_applet_model::smpp::pdu`, answers binds, `submit_sm`, `enquire_link`, `unbind`; sends the
//! bind's `deliver_sm` (receipts and MO) within its window and retries those the ESME refuses;
//! pings idle binds; obeys the fault state on every response. Network task: feeds accepted MT
//! to the [`Network`], turns its outcomes into receipts and its MO into `deliver_sm`, and hands
//! both to the bind registry for the account. Shutdown: the root `CancellationToken` stops the
//! accept loop, each bound connection sends `unbind` and waits for `unbind_resp` (bounded by
//! the response timeout), then closes.
//!
//! With [`SmscConfig::tls`] set every accepted socket first completes a rustls handshake
//! (bounded by the response timeout, inside the connection's task so a slow client cannot
//! stall the accept loop); one that fails is closed without a word of SMPP.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::framing::frame_codec;
use bytes::Bytes;
use futures_util::StreamExt;
use rusmpp::pdus::{
    BindReceiverResp, BindTransceiverResp, BindTransmitterResp, SubmitSm, SubmitSmResp,
};
use rusmpp::types::COctetString;
use rusmpp::values::InterfaceVersion;
use rusmpp::{Command, CommandStatus, Pdu};
use sim_applet_model::smpp::pdu::{decode_frame, encode_command, generic_nack, Decoded};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::bind::{BindTicket, BoundAs, Delivery, DeliveryKind, Dispatched, Registry};
use super::config::SmscConfig;
use super::faults::{FaultState, ResponseAction};
use super::network::{MoMessage, MtMessage, Network};
use super::pdus::{deliver_from_mo, mt_from_submit, receipt_for};
use super::stats::SmscStats;
use super::throttle::TokenBucket;

/// The `system_id` the SMSC answers binds with.
pub const SMSC_SYSTEM_ID: &str = "SMSCSIM";

/// MT messages waiting for the network task; beyond this `submit_sm` gets ESME_RMSGQFUL.
const NETWORK_QUEUE: usize = 10_000;

/// Gap between two malformed PDUs of the fault, so they interleave with real traffic.
const MALFORMED_PACE: Duration = Duration::from_millis(20);

/// Distinct MT source addresses remembered for MO routing.
const MAX_ROUTES: usize = 100_000;

/// The byte stream a connection runs over: plain TCP or TLS over TCP.
trait LinkStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> LinkStream for T {}

type Link = Box<dyn LinkStream>;

/// State shared by all tasks of one SMSC.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: SmscConfig,
    pub registry: Registry,
    pub faults: FaultState,
    pub stats: SmscStats,
    next_message_id: AtomicU64,
    network_tx: mpsc::Sender<MtEnvelope>,
}

/// An accepted MT on its way to the network task.
#[derive(Debug)]
pub(crate) struct MtEnvelope {
    mt: MtMessage,
    registered_delivery: u8,
    submit_unix: u64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Everything the running server is made of; `mod.rs` wraps it in the public handle.
pub(crate) struct Running {
    pub shared: Arc<Shared>,
    pub local_addr: SocketAddr,
    pub cancel: CancellationToken,
    pub tracker: TaskTracker,
}

/// Binds the listener and spawns the accept loop and the network task.
pub(crate) async fn start(config: SmscConfig, network: Box<dyn Network>) -> io::Result<Running> {
    let tls = match &config.tls {
        Some(t) => {
            let server = gateway::smpp::bind::tls_server_config(&t.cert_file, &t.key_file)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            Some(tokio_rustls::TlsAcceptor::from(server))
        }
        None => None,
    };
    let listener = TcpListener::bind(config.listen).await?;
    let local_addr = listener.local_addr()?;
    let (network_tx, network_rx) = mpsc::channel(NETWORK_QUEUE);
    let registry = Registry::new(
        &config.accounts,
        (config.window * 4).max(64),
        config.pending_capacity,
    );
    let faults = FaultState::new(config.seed);
    let now = Instant::now().into_std();
    for f in &config.faults {
        faults.apply(now, f);
    }
    let shared = Arc::new(Shared {
        config,
        registry,
        faults,
        stats: SmscStats::default(),
        next_message_id: AtomicU64::new(1),
        network_tx,
    });
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    tracker.spawn(network_task(
        shared.clone(),
        network,
        network_rx,
        cancel.clone(),
    ));
    tracker.spawn(accept_loop(
        shared.clone(),
        listener,
        tls,
        cancel.clone(),
        tracker.clone(),
    ));
    Ok(Running {
        shared,
        local_addr,
        cancel,
        tracker,
    })
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(shared.config.max_connections));
    let mut backoff = Duration::from_millis(1);
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => return,
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(1);
                if shared.faults.outage_active(Instant::now().into_std()) {
                    // Down: the peer sees its connection closed before any bind.
                    SmscStats::inc(&shared.stats.outage_refusals);
                    drop(stream);
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let cancel = cancel.child_token();
                let tls = tls.clone();
                tracker.spawn(async move {
                    let link: Link = match tls {
                        None => Box::new(stream),
                        Some(acceptor) => {
                            let limit = shared.config.response_timeout;
                            match timeout(limit, acceptor.accept(stream)).await {
                                Ok(Ok(s)) => Box::new(s),
                                Ok(Err(e)) => {
                                    tracing::info!(%peer, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::info!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            }
                        }
                    };
                    Connection::new(shared, link, peer, cancel).run().await;
                    drop(permit);
                });
            }
            Err(e) => {
                // EMFILE and friends pass; the server must not die of them.
                tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

async fn network_task(
    shared: Arc<Shared>,
    mut network: Box<dyn Network>,
    mut rx: mpsc::Receiver<MtEnvelope>,
    cancel: CancellationToken,
) {
    // MT source address (service code) -> account that used it: where MO for it belongs.
    let mut routes: HashMap<String, String> = HashMap::new();
    let fallback = shared
        .config
        .mo_account
        .clone()
        .or_else(|| shared.config.accounts.first().map(|a| a.system_id.clone()));
    loop {
        let now = Instant::now();
        while let Some(mo) = network.poll_mo(now.into_std()) {
            let account = routes
                .get(&mo.sm.destination.addr)
                .cloned()
                .or_else(|| fallback.clone());
            match account {
                Some(account) => deliver_mo(&shared, &account, &mo),
                None => SmscStats::inc(&shared.stats.deliver_failed),
            }
        }
        let wake = network.poll_timeout().map(Instant::from_std);
        tokio::select! {
            _ = cancel.cancelled() => return,
            env = rx.recv() => {
                let Some(env) = env else { return };
                if routes.len() < MAX_ROUTES || routes.contains_key(&env.mt.sm.source.addr) {
                    routes.insert(env.mt.sm.source.addr.clone(), env.mt.system_id.clone());
                }
                let want = env.registered_delivery & 0x03;
                let copy = (want != 0).then(|| env.mt.clone());
                let outcome = network.handle_mt(Instant::now().into_std(), env.mt);
                if let Some(mt) = copy {
                    let failed = !matches!(outcome, super::network::MtOutcome::Delivered);
                    // 1: receipt always; 2: only on failure (SMPP 3.4 5.2.17).
                    if want == 1 || (want == 2 && failed) {
                        let pdu = receipt_for(&mt, outcome, env.submit_unix, unix_now());
                        dispatch(&shared, &mt.system_id, Delivery { kind: DeliveryKind::Receipt, pdu, attempts: 0 });
                    }
                }
            }
            _ = sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
        }
    }
}

pub(crate) fn deliver_mo(shared: &Shared, system_id: &str, mo: &MoMessage) {
    let pdu = deliver_from_mo(mo);
    dispatch(
        shared,
        system_id,
        Delivery {
            kind: DeliveryKind::Mo,
            pdu,
            attempts: 0,
        },
    );
}

fn dispatch(shared: &Shared, system_id: &str, delivery: Delivery) {
    match shared.registry.dispatch(system_id, delivery) {
        Dispatched::ToBind | Dispatched::Backlogged => {}
        Dispatched::Dropped | Dispatched::UnknownAccount => {
            SmscStats::inc(&shared.stats.deliver_failed);
        }
    }
}

/// A `deliver_sm` sent and not yet answered.
#[derive(Debug)]
struct Outstanding {
    delivery: Delivery,
    deadline: Instant,
}

/// What woke the connection loop.
enum Event {
    Shutdown,
    Killed,
    Frame(Option<Result<bytes::BytesMut, io::Error>>),
    Delivery(Option<Box<Delivery>>),
    Timer,
}

/// Why the connection loop ended.
#[derive(Debug, PartialEq, Eq)]
enum Close {
    /// Peer closed, I/O error or protocol breakdown: just close.
    Abrupt,
    /// Shutdown requested: unbind first.
    Shutdown,
}

struct Connection {
    shared: Arc<Shared>,
    reader: FramedRead<ReadHalf<Link>, tokio_util::codec::LengthDelimitedCodec>,
    writer: WriteHalf<Link>,
    peer: SocketAddr,
    cancel: CancellationToken,
    bind: Option<BindTicket>,
    bucket: Option<TokenBucket>,
    next_seq: u32,
    outstanding: HashMap<u32, Outstanding>,
    /// Sequence numbers of malformed PDUs sent and not answered yet.
    malformed: HashSet<u32>,
    /// Deliveries to send as soon as the window allows, before new ones from the registry.
    ready: VecDeque<Delivery>,
    /// Deliveries waiting for their retry time.
    retry: BinaryHeap<Reverse<(Instant, u64, RetryItem)>>,
    /// Responses held back by the delay fault.
    delayed: BinaryHeap<Reverse<(Instant, u64, DelayedBytes)>>,
    order: u64,
    last_rx: Instant,
    /// Our own `enquire_link` awaiting its response: (sequence number, deadline).
    ping: Option<(u32, Instant)>,
    opened: Instant,
}

/// Wrappers so heap entries order by (time, insertion) only.
#[derive(Debug)]
struct RetryItem(Delivery);
#[derive(Debug)]
struct DelayedBytes(Bytes);

macro_rules! order_by_nothing {
    ($t:ty) => {
        impl PartialEq for $t {
            fn eq(&self, _: &Self) -> bool {
                true
            }
        }
        impl Eq for $t {}
        impl PartialOrd for $t {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }
        impl Ord for $t {
            fn cmp(&self, _: &Self) -> std::cmp::Ordering {
                std::cmp::Ordering::Equal
            }
        }
    };
}
order_by_nothing!(RetryItem);
order_by_nothing!(DelayedBytes);

impl Connection {
    fn new(shared: Arc<Shared>, stream: Link, peer: SocketAddr, cancel: CancellationToken) -> Self {
        let (r, w) = tokio::io::split(stream);
        let now = Instant::now();
        Self {
            shared,
            reader: FramedRead::new(r, frame_codec()),
            writer: w,
            peer,
            cancel,
            bind: None,
            bucket: None,
            next_seq: 1,
            outstanding: HashMap::new(),
            malformed: HashSet::new(),
            ready: VecDeque::new(),
            retry: BinaryHeap::new(),
            delayed: BinaryHeap::new(),
            order: 0,
            last_rx: now,
            ping: None,
            opened: now,
        }
    }

    fn next_seq(&mut self) -> u32 {
        let s = self.next_seq;
        // Sequence numbers run 1..=0x7FFFFFFF (SMPP 3.4 5.1.4).
        self.next_seq = if s >= 0x7FFF_FFFF { 1 } else { s + 1 };
        s
    }

    async fn run(mut self) {
        let close = self.serve().await;
        if close == Close::Shutdown && self.bind.is_some() {
            self.unbind_gracefully().await;
        }
        self.finish();
    }

    async fn serve(&mut self) -> Close {
        let never = CancellationToken::new();
        loop {
            self.pump_deliveries().await;
            if self.bind.is_some() {
                if let Some(n) = self.shared.faults.take_malformed() {
                    if self.send_malformed(n).await.is_err() {
                        return Close::Abrupt;
                    }
                }
            }
            let can_take = self.bind.as_ref().is_some_and(|b| b.kind.can_receive())
                && self.ready.is_empty()
                && self.outstanding.len() < self.shared.config.window;
            let deadline = self.next_deadline();
            let kill = self.bind.as_ref().map_or(never.clone(), |b| b.kill.clone());
            let event = {
                let deliveries = self.bind.as_mut().map(|b| &mut b.deliveries);
                tokio::select! {
                    biased;
                    _ = self.cancel.cancelled() => Event::Shutdown,
                    _ = kill.cancelled() => Event::Killed,
                    f = self.reader.next() => Event::Frame(f),
                    d = async { match deliveries { Some(rx) => rx.recv().await, None => std::future::pending().await } }, if can_take => Event::Delivery(d.map(Box::new)),
                    _ = sleep_until(deadline) => Event::Timer,
                }
            };
            match event {
                Event::Shutdown => return Close::Shutdown,
                Event::Killed => {
                    tracing::info!(peer = %self.peer, "bind dropped by fault");
                    return Close::Abrupt;
                }
                Event::Frame(None) => return Close::Abrupt,
                Event::Frame(Some(Err(e))) => {
                    // A length over MAX_PDU_LEN lands here: the stream cannot be resynchronised.
                    tracing::info!(peer = %self.peer, error = %e, "read failed, closing");
                    return Close::Abrupt;
                }
                Event::Frame(Some(Ok(frame))) => {
                    self.last_rx = Instant::now();
                    match self.handle_frame(&frame).await {
                        Ok(true) => {}
                        Ok(false) | Err(_) => return Close::Abrupt,
                    }
                }
                Event::Delivery(Some(d)) => self.ready.push_back(*d),
                // The registry dropped our sender: the bind is gone.
                Event::Delivery(None) => return Close::Abrupt,
                Event::Timer => {
                    if self.handle_timers().await.is_err() {
                        return Close::Abrupt;
                    }
                }
            }
        }
    }

    fn next_deadline(&self) -> Instant {
        let cfg = &self.shared.config;
        let mut t = match (&self.bind, self.ping) {
            (_, Some((_, deadline))) => deadline,
            (Some(_), None) => self.last_rx + cfg.enquire_link_interval,
            // An unbound connection gets one ping interval to bind.
            (None, None) => self.opened + cfg.enquire_link_interval,
        };
        if let Some(Reverse((at, _, _))) = self.delayed.peek() {
            t = t.min(*at);
        }
        if let Some(Reverse((at, _, _))) = self.retry.peek() {
            t = t.min(*at);
        }
        for o in self.outstanding.values() {
            t = t.min(o.deadline);
        }
        if self.bind.is_some() && self.shared.faults.malformed_pending() {
            t = t.min(Instant::now() + MALFORMED_PACE);
        }
        t
    }

    /// Sends malformed PDU number `n`: an unknown command id for even `n`, a `deliver_sm`
    /// whose body stops inside its first field for odd `n`. Both have a valid header, so the
    /// stream stays in step and the ESME can answer with a `generic_nack`.
    async fn send_malformed(&mut self, n: u32) -> io::Result<()> {
        let seq = self.next_seq();
        let (command_id, body): (u32, &[u8]) = if n % 2 == 0 {
            (0x0000_0077, &[0, 0, 0, 0])
        } else {
            (0x0000_0005, b"US")
        };
        let mut pdu = Vec::with_capacity(16 + body.len());
        pdu.extend_from_slice(&((16 + body.len()) as u32).to_be_bytes());
        pdu.extend_from_slice(&command_id.to_be_bytes());
        pdu.extend_from_slice(&0u32.to_be_bytes());
        pdu.extend_from_slice(&seq.to_be_bytes());
        pdu.extend_from_slice(body);
        SmscStats::inc(&self.shared.stats.malformed_sent);
        self.malformed.insert(seq);
        self.write(&pdu).await
    }

    /// Counts an answer to one of our malformed PDUs; `false` when `seq` was not one.
    fn malformed_answered(&mut self, seq: u32) -> bool {
        if self.malformed.remove(&seq) {
            SmscStats::inc(&self.shared.stats.malformed_answered);
            true
        } else {
            false
        }
    }

    async fn handle_timers(&mut self) -> io::Result<()> {
        let now = Instant::now();
        let cfg_interval = self.shared.config.enquire_link_interval;
        let timeout_d = self.shared.config.response_timeout;
        while let Some(Reverse((at, _, _))) = self.delayed.peek() {
            if *at > now {
                break;
            }
            if let Some(Reverse((_, _, DelayedBytes(b)))) = self.delayed.pop() {
                self.write(&b).await?;
            }
        }
        while let Some(Reverse((at, _, _))) = self.retry.peek() {
            if *at > now {
                break;
            }
            if let Some(Reverse((_, _, RetryItem(d)))) = self.retry.pop() {
                self.ready.push_back(d);
            }
        }
        let expired: Vec<u32> = self
            .outstanding
            .iter()
            .filter(|(_, o)| o.deadline <= now)
            .map(|(s, _)| *s)
            .collect();
        for seq in expired {
            if let Some(o) = self.outstanding.remove(&seq) {
                self.failed_delivery(o.delivery, now);
            }
        }
        match (&self.bind, self.ping) {
            (_, Some((_, deadline))) if deadline <= now => {
                tracing::info!(peer = %self.peer, "enquire_link unanswered, closing");
                return Err(io::ErrorKind::TimedOut.into());
            }
            (Some(_), None) if self.last_rx + cfg_interval <= now => {
                let seq = self.next_seq();
                self.ping = Some((seq, now + timeout_d));
                let b =
                    encode_command(&Command::new(CommandStatus::EsmeRok, seq, Pdu::EnquireLink));
                self.write(&b).await?;
            }
            (None, None) if self.opened + cfg_interval <= now => {
                tracing::info!(peer = %self.peer, "no bind within the interval, closing");
                return Err(io::ErrorKind::TimedOut.into());
            }
            _ => {}
        }
        Ok(())
    }

    fn failed_delivery(&mut self, mut d: Delivery, now: Instant) {
        d.attempts += 1;
        if d.attempts < self.shared.config.mo_max_attempts {
            SmscStats::inc(&self.shared.stats.deliver_retries);
            self.order += 1;
            self.retry.push(Reverse((
                now + self.shared.config.mo_retry_delay,
                self.order,
                RetryItem(d),
            )));
        } else {
            SmscStats::inc(&self.shared.stats.deliver_failed);
        }
    }

    async fn pump_deliveries(&mut self) {
        let window = self.shared.config.window;
        while self.outstanding.len() < window {
            let Some(d) = self.ready.pop_front() else {
                break;
            };
            let seq = self.next_seq();
            let cmd = Command::new(CommandStatus::EsmeRok, seq, Pdu::DeliverSm(d.pdu.clone()));
            let bytes = encode_command(&cmd);
            self.outstanding.insert(
                seq,
                Outstanding {
                    delivery: d,
                    deadline: Instant::now() + self.shared.config.response_timeout,
                },
            );
            if self.write(&bytes).await.is_err() {
                // The read side sees the broken socket next and ends the loop; the delivery
                // stays outstanding and is handed back in `finish`.
                break;
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        // An ESME that stops reading must not stall the SMSC forever.
        let limit = self.shared.config.response_timeout * 2;
        match timeout(limit, self.writer.write_all(bytes)).await {
            Ok(r) => r,
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        }
    }

    /// Answers request `seq` with the `generic_nack` a fault asked for.
    async fn send_fault_nack(&mut self, seq: u32) -> io::Result<()> {
        SmscStats::inc(&self.shared.stats.nacks);
        self.write(&encode_command(&generic_nack(
            seq,
            CommandStatus::EsmeRsyserr,
        )))
        .await
    }

    /// Sends a response to an ESME request through the fault state.
    async fn respond(&mut self, cmd: Command) -> io::Result<()> {
        let seq = cmd.sequence_number();
        match self.shared.faults.response_action() {
            ResponseAction::Send => self.write(&encode_command(&cmd)).await,
            ResponseAction::Drop => Ok(()),
            ResponseAction::Nack => self.send_fault_nack(seq).await,
            ResponseAction::Delay(d) => {
                self.order += 1;
                self.delayed.push(Reverse((
                    Instant::now() + d,
                    self.order,
                    DelayedBytes(encode_command(&cmd)),
                )));
                Ok(())
            }
        }
    }

    /// Handles one frame; `Ok(false)` ends the connection.
    async fn handle_frame(&mut self, frame: &[u8]) -> io::Result<bool> {
        let cmd = match decode_frame(frame) {
            Decoded::Pdu(cmd) => cmd,
            Decoded::Nack {
                sequence_number,
                status,
                reason,
            } => {
                tracing::debug!(peer = %self.peer, %reason, "undecodable frame");
                SmscStats::inc(&self.shared.stats.nacks);
                self.write(&encode_command(&generic_nack(sequence_number, status)))
                    .await?;
                // Below the header length the codec cannot find the next frame (see pdu docs).
                return Ok(frame.len() >= 16);
            }
        };
        let seq = cmd.sequence_number();
        let status = cmd.status();
        let Some(pdu) = cmd.pdu() else {
            SmscStats::inc(&self.shared.stats.nacks);
            self.write(&encode_command(&generic_nack(
                seq,
                CommandStatus::EsmeRinvcmdid,
            )))
            .await?;
            return Ok(true);
        };
        match pdu {
            Pdu::BindTransmitter(b) => {
                let (id, pw) = (
                    b.system_id.as_str().to_owned(),
                    b.password.as_str().as_bytes().to_vec(),
                );
                self.handle_bind(seq, BoundAs::Transmitter, &id, &pw)
                    .await?;
            }
            Pdu::BindReceiver(b) => {
                let (id, pw) = (
                    b.system_id.as_str().to_owned(),
                    b.password.as_str().as_bytes().to_vec(),
                );
                self.handle_bind(seq, BoundAs::Receiver, &id, &pw).await?;
            }
            Pdu::BindTransceiver(b) => {
                let (id, pw) = (
                    b.system_id.as_str().to_owned(),
                    b.password.as_str().as_bytes().to_vec(),
                );
                self.handle_bind(seq, BoundAs::Transceiver, &id, &pw)
                    .await?;
            }
            Pdu::EnquireLink => {
                self.respond(Command::new(
                    CommandStatus::EsmeRok,
                    seq,
                    Pdu::EnquireLinkResp,
                ))
                .await?;
            }
            Pdu::EnquireLinkResp => {
                if self.ping.is_some_and(|(s, _)| s == seq) {
                    self.ping = None;
                }
            }
            Pdu::Unbind => {
                self.write(&encode_command(&Command::new(
                    CommandStatus::EsmeRok,
                    seq,
                    Pdu::UnbindResp,
                )))
                .await?;
                let _ = self.writer.shutdown().await;
                return Ok(false);
            }
            Pdu::UnbindResp => {}
            Pdu::SubmitSm(sm) => {
                let sm = sm.clone();
                self.handle_submit(seq, &sm).await?;
            }
            Pdu::DeliverSmResp(_) | Pdu::GenericNack if self.malformed_answered(seq) => {}
            Pdu::DeliverSmResp(_) => self.handle_deliver_resp(seq, status),
            Pdu::GenericNack => {
                // A nack of one of our deliver_sm counts as an error answer.
                self.handle_deliver_resp(seq, CommandStatus::EsmeRsyserr);
            }
            Pdu::Other { .. } => {
                SmscStats::inc(&self.shared.stats.nacks);
                self.write(&encode_command(&generic_nack(
                    seq,
                    CommandStatus::EsmeRinvcmdid,
                )))
                .await?;
            }
            other => {
                // Requests the simulator does not serve (query_sm, data_sm, ...): nack them so
                // the ESME does not wait; stray responses are ignored.
                let id = u32::from(other.command_id());
                if id & 0x8000_0000 == 0 {
                    SmscStats::inc(&self.shared.stats.nacks);
                    self.write(&encode_command(&generic_nack(
                        seq,
                        CommandStatus::EsmeRinvcmdid,
                    )))
                    .await?;
                }
            }
        }
        Ok(true)
    }

    async fn handle_bind(
        &mut self,
        seq: u32,
        kind: BoundAs,
        system_id: &str,
        password: &[u8],
    ) -> io::Result<()> {
        let result = if self.bind.is_some() {
            Err(CommandStatus::EsmeRalybnd)
        } else {
            self.shared
                .registry
                .bind(system_id, password, kind)
                .map_err(|e| {
                    tracing::info!(peer = %self.peer, system_id, error = %e, "bind refused");
                    e.status()
                })
        };
        let status = match result {
            Ok(ticket) => {
                SmscStats::inc(&self.shared.stats.binds);
                SmscStats::inc(&self.shared.stats.binds_total);
                self.bucket = ticket
                    .throttle_tps
                    .map(|tps| TokenBucket::new(tps, Instant::now().into_std()));
                self.bind = Some(ticket);
                CommandStatus::EsmeRok
            }
            Err(status) => {
                SmscStats::inc(&self.shared.stats.bind_failures);
                status
            }
        };
        let id: COctetString<1, 16> = COctetString::from_str(SMSC_SYSTEM_ID).unwrap_or_default();
        let v = Some(InterfaceVersion::Smpp3_4);
        let pdu = match kind {
            BoundAs::Transmitter => Pdu::BindTransmitterResp(BindTransmitterResp::new(id, v)),
            BoundAs::Receiver => Pdu::BindReceiverResp(BindReceiverResp::new(id, v)),
            BoundAs::Transceiver => Pdu::BindTransceiverResp(BindTransceiverResp::new(id, v)),
        };
        self.write(&encode_command(&Command::new(status, seq, pdu)))
            .await
    }

    async fn handle_submit(&mut self, seq: u32, sm: &SubmitSm) -> io::Result<()> {
        let refuse = |status| Command::new(status, seq, Pdu::SubmitSmResp(SubmitSmResp::default()));
        let Some(bind) = self.bind.as_ref().filter(|b| b.kind.can_submit()) else {
            return self.respond(refuse(CommandStatus::EsmeRinvbndsts)).await;
        };
        let system_id = bind.system_id.clone();
        let now = Instant::now().into_std();
        let storm = self.shared.faults.storm_active(now);
        let allowed = !storm && self.bucket.as_mut().is_none_or(|b| b.try_take(now));
        if !allowed {
            SmscStats::inc(&self.shared.stats.throttled);
            return self.respond(refuse(CommandStatus::EsmeRthrottled)).await;
        }
        if self.shared.faults.take_nack() {
            return self.send_fault_nack(seq).await;
        }
        let n = self.shared.next_message_id.fetch_add(1, Ordering::Relaxed);
        let message_id = format!("{n:010}");
        let env = MtEnvelope {
            mt: mt_from_submit(sm, message_id.clone(), system_id),
            registered_delivery: u8::from(sm.registered_delivery),
            submit_unix: unix_now(),
        };
        if self.shared.network_tx.try_send(env).is_err() {
            SmscStats::inc(&self.shared.stats.queue_full);
            return self.respond(refuse(CommandStatus::EsmeRmsgqful)).await;
        }
        SmscStats::inc(&self.shared.stats.submits);
        let id: COctetString<1, 65> = COctetString::from_str(&message_id).unwrap_or_default();
        let resp = SubmitSmResp::new(id, Vec::new());
        self.respond(Command::new(
            CommandStatus::EsmeRok,
            seq,
            Pdu::SubmitSmResp(resp),
        ))
        .await
    }

    fn handle_deliver_resp(&mut self, seq: u32, status: CommandStatus) {
        let Some(o) = self.outstanding.remove(&seq) else {
            return;
        };
        if status == CommandStatus::EsmeRok {
            let c = match o.delivery.kind {
                DeliveryKind::Receipt => &self.shared.stats.receipts,
                DeliveryKind::Mo => &self.shared.stats.mo_delivered,
            };
            SmscStats::inc(c);
        } else {
            self.failed_delivery(o.delivery, Instant::now());
        }
        if let Some(b) = &self.bind {
            self.shared.registry.refill(&b.system_id, b.bind_id);
        }
    }

    /// Sends `unbind`, then waits (bounded) for `unbind_resp`, answering nothing else.
    async fn unbind_gracefully(&mut self) {
        let seq = self.next_seq();
        let unbind = encode_command(&Command::new(CommandStatus::EsmeRok, seq, Pdu::Unbind));
        if self.write(&unbind).await.is_err() {
            return;
        }
        let deadline = Instant::now() + self.shared.config.response_timeout;
        loop {
            let frame = tokio::select! {
                f = self.reader.next() => f,
                _ = sleep_until(deadline) => return,
            };
            let Some(Ok(frame)) = frame else { return };
            match decode_frame(&frame) {
                Decoded::Pdu(cmd) => match cmd.pdu() {
                    Some(Pdu::UnbindResp) if cmd.sequence_number() == seq => break,
                    Some(Pdu::DeliverSmResp(_)) => {
                        self.handle_deliver_resp(cmd.sequence_number(), cmd.status());
                    }
                    _ => {}
                },
                Decoded::Nack { .. } => {}
            }
        }
        let _ = self.writer.shutdown().await;
    }

    /// Releases the bind and hands unsent deliveries back to the account.
    fn finish(mut self) {
        let Some(mut bind) = self.bind.take() else {
            return;
        };
        SmscStats::dec(&self.shared.stats.binds);
        let mut left: Vec<Delivery> = self.outstanding.drain().map(|(_, o)| o.delivery).collect();
        left.extend(self.ready.drain(..));
        left.extend(self.retry.drain().map(|Reverse((_, _, RetryItem(d)))| d));
        bind.deliveries.close();
        while let Ok(d) = bind.deliveries.try_recv() {
            left.push(d);
        }
        let dropped = self
            .shared
            .registry
            .unregister(&bind.system_id, bind.bind_id, left);
        for _ in 0..dropped {
            SmscStats::inc(&self.shared.stats.deliver_failed);
        }
    }
}
