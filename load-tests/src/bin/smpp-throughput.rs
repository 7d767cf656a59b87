//! `smpp-throughput`: `submit_sm` -> `submit_sm_resp` throughput over loopback TCP.
//!
//! Two modes share one driver shape: `count` submissions per bind, at most `window` of them
//! unanswered at a time (a new one goes out as soon as an answer comes), latency measured from
//! hand-over to answer.
//!
//! - `esme`: the real path. The simulated SMSC (`load_tests::smsc`, echo network, no
//!   throttle) runs in-process on `127.0.0.1:0`; each bind is a `gateway::smpp::bind` task
//!   with `window`, fed through its `BindHandle`, answers read from its event channel.
//! - `raw`: the ceiling. A minimal pair of tokio tasks per bind exchanges the same encoded
//!   `submit_sm` and `submit_sm_resp` frames (pre-encoded, sequence number patched in place,
//!   length-prefixed buffered reads, one `write_all` per frame) with the same window: only
//!   the sockets and the runtime, no codec and no session.
//!
//! The result is one line of JSON on stdout. The run ends after `count` answers per bind or
//! after `--max-seconds`, whichever comes first (`timed_out` says which).

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use gateway::smpp::bind::{self, BindConfig, BindEvent};
use gateway::smpp::session::{SessionConfig, SubmitRequest};
use load_tests::smsc::{self, AccountConfig, EchoNetwork, SmscConfig};
use rusmpp::{
    pdus::{SubmitSm, SubmitSmResp},
    tlvs::MessageSubmissionRequestTlvValue,
    types::{COctetString, OctetString},
    values::{ItsSessionInfo, Npi, ServiceType, Ton, UssdServiceOp},
    Command, CommandStatus,
};
use sim_applet_model::smpp::pdu::encode_command;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{timeout_at, Instant};

const SYSTEM_ID: &str = "bench";
const PASSWORD: &str = "secret";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// gateway ESME bind against the simulated SMSC.
    Esme,
    /// Raw loopback ping-pong of the same frames (the ceiling).
    Raw,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Esme => "esme",
            Mode::Raw => "raw",
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "smpp-throughput",
    about = "submit_sm -> submit_sm_resp throughput: gateway ESME vs raw loopback ceiling"
)]
struct Cli {
    /// Path to measure.
    #[arg(long, value_enum)]
    mode: Mode,
    /// Unanswered submit_sm allowed per bind.
    #[arg(long, default_value_t = 10)]
    window: usize,
    /// Submissions per bind.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Binds (connections) running side by side, each with its own window.
    #[arg(long, default_value_t = 1)]
    binds: usize,
    /// Stop after this long even if not all answers came.
    #[arg(long, default_value_t = 120)]
    max_seconds: u64,
    /// Tokio worker threads (both modes use the same runtime).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Send USSR requests (the echo network then answers each with an MO `deliver_sm` after
    /// 100 ms, which the ESME acknowledges) instead of USSN notifications (no answer).
    #[arg(long)]
    ussr: bool,
}

/// What one bind measured.
#[derive(Debug, Default)]
struct Lane {
    completed: u64,
    failed: u64,
    mo: u64,
    disconnects: u64,
    timed_out: bool,
    /// Hand-over to answer, nanoseconds.
    latencies: Vec<u64>,
}

/// The USSD push the gateway sends, as the throughput payload.
fn submit_sm(ussr: bool) -> anyhow::Result<SubmitSm> {
    let op = if ussr {
        UssdServiceOp::UssrRequest
    } else {
        UssdServiceOp::UssnRequest
    };
    Ok(SubmitSm::builder()
        .service_type(ServiceType::new(COctetString::from_str("USSD")?))
        .source_addr(COctetString::from_str("*123#")?)
        .dest_addr_ton(Ton::International)
        .dest_addr_npi(Npi::Isdn)
        .destination_addr(COctetString::from_str("48600100200")?)
        .short_message(OctetString::from_str(
            "Approve login to Example? 1=yes 2=no",
        )?)
        .tlvs(vec![
            MessageSubmissionRequestTlvValue::UssdServiceOp(op),
            MessageSubmissionRequestTlvValue::ItsSessionInfo(ItsSessionInfo::new(7, 2)),
        ])
        .build())
}

fn since(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

async fn esme_lane(
    addr: SocketAddr,
    window: usize,
    count: u64,
    ussr: bool,
    deadline: Instant,
) -> anyhow::Result<Lane> {
    let session = SessionConfig {
        system_id: SYSTEM_ID.into(),
        password: PASSWORD.into(),
        window,
        max_queued: window.max(1000),
        ..SessionConfig::default()
    };
    // Large enough that the bind task never waits on us while we wait on its command channel
    // (MO answers in --ussr mode arrive independently of our submissions).
    let (tx, mut rx) = mpsc::channel(65_536);
    let (handle, join) = bind::spawn(BindConfig::new(addr.to_string(), session), tx);
    loop {
        match timeout_at(deadline, rx.recv()).await {
            Ok(Some(BindEvent::Bound { .. })) => break,
            Ok(Some(BindEvent::Disconnected { reason })) => bail!("bind failed: {reason}"),
            Ok(Some(_)) => {}
            Ok(None) => bail!("bind task ended before binding"),
            Err(_) => bail!("not bound before --max-seconds"),
        }
    }
    let request = SubmitRequest {
        submit_sm: submit_sm(ussr)?,
        deadline: None,
    };
    let mut lane = Lane {
        latencies: Vec::with_capacity(usize::try_from(count).unwrap_or(0)),
        ..Lane::default()
    };
    let mut sent_at: Vec<Instant> = Vec::with_capacity(lane.latencies.capacity());
    let mut next: u64 = 0;
    while next < count && next < window as u64 {
        sent_at.push(Instant::now());
        handle.submit(next, request.clone()).await?;
        next += 1;
    }
    while lane.completed + lane.failed < count {
        let event = match timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(_) => {
                lane.timed_out = true;
                break;
            }
        };
        let answered = match event {
            BindEvent::Accepted { id, .. } => {
                lane.completed += 1;
                Some(id)
            }
            BindEvent::Failed { id, .. } => {
                lane.failed += 1;
                Some(id)
            }
            BindEvent::Mo(_) | BindEvent::MoAwaitingAck { .. } => {
                lane.mo += 1;
                None
            }
            BindEvent::Disconnected { .. } => {
                lane.disconnects += 1;
                None
            }
            BindEvent::Stopped => break,
            BindEvent::Bound { .. } | BindEvent::Throttled { .. } => None,
        };
        if let Some(id) = answered {
            if let Some(t) = usize::try_from(id).ok().and_then(|i| sent_at.get(i)) {
                lane.latencies.push(since(*t));
            }
            if next < count {
                sent_at.push(Instant::now());
                handle.submit(next, request.clone()).await?;
                next += 1;
            }
        }
    }
    // Graceful end; a slow unbind must not hold the result.
    let _ = handle.unbind().await;
    let stop_by = Instant::now() + Duration::from_secs(5);
    while let Ok(Some(event)) = timeout_at(stop_by, rx.recv()).await {
        if event == BindEvent::Stopped {
            break;
        }
    }
    join.abort();
    Ok(lane)
}

/// Reads one length-prefixed frame into `buf` (header included).
async fn read_frame<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    let mut head = [0u8; 4];
    reader.read_exact(&mut head).await?;
    let len = u32::from_be_bytes(head) as usize;
    if !(16..=sim_applet_model::smpp::pdu::MAX_PDU_LEN).contains(&len) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame length {len}"),
        ));
    }
    buf.clear();
    buf.extend_from_slice(&head);
    buf.resize(len, 0);
    reader.read_exact(&mut buf[4..]).await?;
    Ok(())
}

fn set_seq(frame: &mut [u8], seq: u32) {
    frame[12..16].copy_from_slice(&seq.to_be_bytes());
}

/// The peer of the raw pair: answers every frame with the `submit_sm_resp` of its sequence
/// number.
async fn raw_server(listener: TcpListener, mut resp: Vec<u8>) -> std::io::Result<()> {
    let (stream, _) = listener.accept().await?;
    stream.set_nodelay(true)?;
    let (rd, mut wr) = stream.into_split();
    let mut reader = BufReader::new(rd);
    let mut frame = Vec::with_capacity(256);
    loop {
        match read_frame(&mut reader, &mut frame).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        resp[12..16].copy_from_slice(&frame[12..16]);
        wr.write_all(&resp).await?;
    }
}

async fn raw_lane(
    window: usize,
    count: u64,
    ussr: bool,
    deadline: Instant,
) -> anyhow::Result<Lane> {
    let mut submit =
        encode_command(&Command::new(CommandStatus::EsmeRok, 1, submit_sm(ussr)?)).to_vec();
    let resp = encode_command(&Command::new(
        CommandStatus::EsmeRok,
        1,
        SubmitSmResp::builder()
            .message_id(COctetString::from_str("4f2a9c01")?)
            .build(),
    ))
    .to_vec();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(raw_server(listener, resp));
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (rd, mut wr) = stream.into_split();
    let mut reader = BufReader::new(rd);

    let mut lane = Lane {
        latencies: Vec::with_capacity(usize::try_from(count).unwrap_or(0)),
        ..Lane::default()
    };
    let mut sent_at: Vec<Instant> = Vec::with_capacity(lane.latencies.capacity());
    // Sequence numbers are the index + 1 (SMPP forbids 0); counts stay far below 2^31.
    let mut next: u64 = 0;
    while next < count && next < window as u64 {
        set_seq(&mut submit, u32::try_from(next + 1)?);
        sent_at.push(Instant::now());
        wr.write_all(&submit).await?;
        next += 1;
    }
    let mut frame = Vec::with_capacity(256);
    while lane.completed < count {
        match timeout_at(deadline, read_frame(&mut reader, &mut frame)).await {
            Ok(r) => r.context("raw client read")?,
            Err(_) => {
                lane.timed_out = true;
                break;
            }
        }
        let seq = u32::from_be_bytes([frame[12], frame[13], frame[14], frame[15]]);
        if let Some(t) = (seq as usize).checked_sub(1).and_then(|i| sent_at.get(i)) {
            lane.latencies.push(since(*t));
        }
        lane.completed += 1;
        if next < count {
            set_seq(&mut submit, u32::try_from(next + 1)?);
            sent_at.push(Instant::now());
            wr.write_all(&submit).await?;
            next += 1;
        }
    }
    drop(wr);
    drop(reader);
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Ok(lane)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let i = rank.clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

async fn run(cli: Cli) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(cli.max_seconds);
    let smsc = match cli.mode {
        Mode::Esme => {
            let mut account = AccountConfig::new(SYSTEM_ID, PASSWORD);
            account.max_binds = cli.binds;
            let config = SmscConfig::new("127.0.0.1:0".parse()?, account);
            Some(smsc::start(config, Box::new(EchoNetwork::default())).await?)
        }
        Mode::Raw => None,
    };
    let mut tasks = Vec::with_capacity(cli.binds);
    let started = Instant::now();
    for _ in 0..cli.binds {
        let (window, count, ussr) = (cli.window, cli.count, cli.ussr);
        tasks.push(match &smsc {
            Some(s) => tokio::spawn(esme_lane(s.local_addr(), window, count, ussr, deadline)),
            None => tokio::spawn(raw_lane(window, count, ussr, deadline)),
        });
    }
    let mut lanes = Vec::with_capacity(tasks.len());
    for t in tasks {
        lanes.push(t.await??);
    }
    // Binding is inside the clock for esme: with 1e5 submissions it is well under 0.1 %.
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(s) = smsc {
        s.shutdown().await;
    }

    let completed: u64 = lanes.iter().map(|l| l.completed).sum();
    let failed: u64 = lanes.iter().map(|l| l.failed).sum();
    let mo: u64 = lanes.iter().map(|l| l.mo).sum();
    let disconnects: u64 = lanes.iter().map(|l| l.disconnects).sum();
    let timed_out = lanes.iter().any(|l| l.timed_out);
    let mut lat: Vec<u64> = lanes.into_iter().flat_map(|l| l.latencies).collect();
    lat.sort_unstable();
    Ok(format!(
        concat!(
            "{{\"mode\":\"{}\",\"window\":{},\"count\":{},\"binds\":{},\"threads\":{},",
            "\"ussr\":{},\"completed\":{},\"failed\":{},\"mo\":{},\"disconnects\":{},",
            "\"timed_out\":{},\"elapsed_s\":{:.4},\"submits_per_s\":{:.0},",
            "\"lat_us\":{{\"p50\":{:.1},\"p90\":{:.1},\"p99\":{:.1},\"max\":{:.1}}}}}"
        ),
        cli.mode.name(),
        cli.window,
        cli.count,
        cli.binds,
        cli.threads,
        cli.ussr,
        completed,
        failed,
        mo,
        disconnects,
        timed_out,
        elapsed,
        completed as f64 / elapsed,
        percentile(&lat, 50.0),
        percentile(&lat, 90.0),
        percentile(&lat, 99.0),
        percentile(&lat, 100.0),
    ))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.window == 0 || cli.binds == 0 || cli.threads == 0 {
        bail!("--window, --binds and --threads must be at least 1");
    }
    if cli.count > u64::from(u32::MAX >> 2) {
        bail!("--count must stay below 2^30 (sequence numbers)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads)
        .enable_all()
        .build()?;
    let line = runtime.block_on(run(cli))?;
    println!("{line}");
    Ok(())
}
