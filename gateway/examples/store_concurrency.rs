//! Durable operations per second of the embedded store with many concurrent callers, and the
//! latency each caller sees: `cargo run -p gateway --release --example store_concurrency --
//! --dir DIR [--callers 1,8,64,512] [--seconds 5] [--durable-interval-ms 5]`.
//!
//! Each caller task runs one authorization's durable life in a loop, as the gateway does:
//! create with its idempotency claim, then the ending with its outbox entries (two durable
//! operations) plus one non-durable step in between. Callers are tasks on a two-worker tokio
//! runtime, like the gateway's. One JSON line per caller count: operations/s, latency p50/p99/max of one
//! durable operation in µs, and (when the store reports it) operations per commit and per fsync.
//! `DIR` decides the disk: a directory on the ordinary disk, or on tmpfs (`/dev/shm`) to take
//! fsync out of the figures.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use gateway::store::{
    AuthState, AuthorizationRecord, AuthorizationUpdate, Channel, EmbeddedStore, Loa, OutboxPolicy,
    Store, StoreOptions, TerminalStatus,
};

fn record(caller: u64, i: u64) -> AuthorizationRecord {
    AuthorizationRecord {
        id: format!("c{caller:04}-{i:012}"),
        client_id: "rp-1".into(),
        msisdn: format!("467{caller:04}{:04}", i % 10_000),
        operator: "op-a".into(),
        channel: Channel::Stk,
        loa_requested: Loa::Loa3,
        loa_achieved: None,
        state: AuthState::Created,
        created_ms: i,
        deadline_ms: i + 120_000,
        updated_ms: i,
        stk_counter: None,
        challenge: vec![0x5a; 16],
        txid: Vec::new(),
        ussd_key: None,
        proof: None,
        callback_url: Some("https://rp.example/callback".into()),
        idempotency_key: Some(format!("req-{caller}-{i}")),
        prompted_ms: None,
        keycloak: None,
        node: None,
    }
}

struct Args {
    dir: PathBuf,
    callers: Vec<u64>,
    seconds: u64,
    /// `StoreOptions::durable_commit_interval` in ms (0: no pacing).
    interval_ms: u64,
}

fn args() -> anyhow::Result<Args> {
    let mut dir = None;
    let mut callers = vec![1, 8, 64, 512];
    let mut seconds = 5;
    let mut interval_ms = 5;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let value = it.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--dir" => dir = Some(PathBuf::from(value)),
            "--callers" => {
                callers = value
                    .split(',')
                    .map(|c| c.parse().context("--callers"))
                    .collect::<Result<_, _>>()?
            }
            "--seconds" => seconds = value.parse().context("--seconds")?,
            "--durable-interval-ms" => {
                interval_ms = value.parse().context("--durable-interval-ms")?
            }
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    Ok(Args {
        dir: dir.context("--dir is required")?,
        callers,
        seconds,
        interval_ms,
    })
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(args()?))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let outbox = OutboxPolicy {
        audit: true,
        callback_window_ms: 60_000,
    };
    for &callers in &args.callers {
        let dir = tempfile::tempdir_in(&args.dir)?;
        let store = Arc::new(EmbeddedStore::open(
            dir.path().join("store.redb"),
            StoreOptions {
                durable_commit_interval: Duration::from_millis(args.interval_ms),
                ..StoreOptions::default()
            },
        )?);
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let latencies = Arc::new(Mutex::new(Vec::<u64>::new()));
        let before = stats(&store);
        let started = Instant::now();
        let tasks: Vec<_> = (0..callers)
            .map(|caller| {
                let (store, stop, ops, latencies) =
                    (store.clone(), stop.clone(), ops.clone(), latencies.clone());
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let r = record(caller, i);
                        let t = Instant::now();
                        store.create_authorization(&r, i, 60_000, None).await?;
                        mine.push(t.elapsed().as_micros() as u64);
                        let prompted = AuthorizationUpdate::to(AuthState::Prompted, i);
                        store
                            .update_authorization_state(&r.id, &AuthState::Created, &prompted)
                            .await?;
                        let end = AuthorizationUpdate::to(
                            AuthState::terminal(TerminalStatus::Approved, None),
                            i,
                        );
                        let t = Instant::now();
                        store.end_authorization(&r.id, &end, &outbox).await?;
                        mine.push(t.elapsed().as_micros() as u64);
                        ops.fetch_add(2, Ordering::Relaxed);
                        i += 1;
                    }
                    latencies
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend(mine);
                    anyhow::Ok(())
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(args.seconds)).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.map_err(|_| anyhow::anyhow!("caller panicked"))??;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let after = stats(&store);
        let mut lat = latencies.lock().unwrap_or_else(|p| p.into_inner()).clone();
        lat.sort_unstable();
        let q = |p: f64| {
            lat.get(((lat.len() as f64 - 1.0) * p) as usize)
                .copied()
                .unwrap_or(0)
        };
        let durable = ops.load(Ordering::Relaxed);
        let per_commit = match (before, after) {
            (Some(b), Some(a)) if a.0 > b.0 => {
                let commits = a.0 - b.0;
                let fsyncs = a.1 - b.1;
                let operations = a.2 - b.2;
                serde_json::json!({
                    "commits": commits,
                    "fsyncs": fsyncs,
                    "operations_per_commit": operations as f64 / commits as f64,
                    "durable_operations_per_fsync": durable as f64 / fsyncs.max(1) as f64,
                })
            }
            _ => serde_json::Value::Null,
        };
        println!(
            "{}",
            serde_json::json!({
                "callers": callers,
                "durable_interval_ms": args.interval_ms,
                "seconds": elapsed,
                "durable_operations": durable,
                "durable_operations_per_s": durable as f64 / elapsed,
                "latency_us": {"p50": q(0.5), "p99": q(0.99), "max": lat.last().copied().unwrap_or(0)},
                "writer": per_commit,
            })
        );
    }
    Ok(())
}

/// (commits, fsyncs, operations) of the store's writer thread.
fn stats(store: &EmbeddedStore) -> Option<(u64, u64, u64)> {
    let f = store.writer_stats().figures();
    Some((f.commits, f.durable_commits, f.operations))
}
