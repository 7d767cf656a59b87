//! Durable operations per second of the embedded store with many concurrent callers, and the
//! latency each caller sees: `cargo run -p gateway --release --example store_concurrency --
//! --dir DIR [--callers 1,8,64,512] [--seconds 5]`.
//!
//! Each caller thread runs one authorization's durable life in a loop, as the gateway does:
//! idempotency claim, create, terminal update (three durable operations) plus one non-durable
//! step in between. One JSON line per caller count: operations/s, latency p50/p99/max of one
//! durable operation in µs, and (when the store reports it) operations per commit and per fsync.
//! `DIR` decides the disk: a directory on the ordinary disk, or on tmpfs (`/dev/shm`) to take
//! fsync out of the figures.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use gateway::store::{
    AuthState, AuthorizationRecord, AuthorizationUpdate, Channel, EmbeddedStore, Loa, Store,
    StoreOptions, TerminalStatus,
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
        proof: None,
        callback_url: Some("https://rp.example/callback".into()),
        idempotency_key: Some(format!("req-{caller}-{i}")),
        prompted_ms: None,
    }
}

struct Args {
    dir: PathBuf,
    callers: Vec<u64>,
    seconds: u64,
}

fn args() -> anyhow::Result<Args> {
    let mut dir = None;
    let mut callers = vec![1, 8, 64, 512];
    let mut seconds = 5;
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
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    Ok(Args {
        dir: dir.context("--dir is required")?,
        callers,
        seconds,
    })
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    for &callers in &args.callers {
        let dir = tempfile::tempdir_in(&args.dir)?;
        let store = Arc::new(EmbeddedStore::open(
            dir.path().join("store.redb"),
            StoreOptions::default(),
        )?);
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let latencies = Arc::new(Mutex::new(Vec::<u64>::new()));
        let before = stats(&store);
        let started = Instant::now();
        let threads: Vec<_> = (0..callers)
            .map(|caller| {
                let (store, stop, ops, latencies) =
                    (store.clone(), stop.clone(), ops.clone(), latencies.clone());
                std::thread::spawn(move || -> anyhow::Result<()> {
                    let mut mine = Vec::new();
                    let mut i = 0u64;
                    let timed = |mine: &mut Vec<u64>, f: &mut dyn FnMut() -> anyhow::Result<()>| {
                        let t = Instant::now();
                        f()?;
                        mine.push(t.elapsed().as_micros() as u64);
                        anyhow::Ok(())
                    };
                    while !stop.load(Ordering::Relaxed) {
                        let r = record(caller, i);
                        timed(&mut mine, &mut || {
                            store.claim_idempotency_key(
                                "rp-1",
                                &format!("req-{caller}-{i}"),
                                &r.id,
                                i,
                                60_000,
                            )?;
                            Ok(())
                        })?;
                        timed(&mut mine, &mut || Ok(store.put_authorization(&r)?))?;
                        let prompted = AuthorizationUpdate::to(AuthState::Prompted, i);
                        store.update_authorization_state(&r.id, &AuthState::Created, &prompted)?;
                        let end = AuthorizationUpdate::to(
                            AuthState::terminal(TerminalStatus::Approved, None),
                            i,
                        );
                        timed(&mut mine, &mut || {
                            store.update_authorization_state(&r.id, &AuthState::Prompted, &end)?;
                            Ok(())
                        })?;
                        ops.fetch_add(3, Ordering::Relaxed);
                        i += 1;
                    }
                    latencies
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend(mine);
                    Ok(())
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(args.seconds));
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().map_err(|_| anyhow::anyhow!("caller panicked"))??;
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
