//! `http-push`: a fixed number of HTTP requests over a fixed number of keep-alive connections,
//! as fast as the server answers, then one JSON line with the figures. It drives both sides
//! of `scripts/kannel-vs-gateway.sh`: Kannel's `sendsms` (GET) and our gateway's starts (POST).
//!
//! `{i}` in the URL or the body becomes the request's number (0, 1, ...), so every request
//! can name its own subscriber (`--msisdn-base` is added to it first when given).

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, Request};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};

#[derive(Debug, Parser)]
#[command(about = "N HTTP requests over C keep-alive connections; figures as JSON")]
struct Cli {
    /// URL; `{i}` becomes the request's number (plus --msisdn-base).
    #[arg(long)]
    url: String,
    /// GET or POST.
    #[arg(long, default_value = "GET")]
    method: String,
    /// Request body (POST); `{i}` as in the URL.
    #[arg(long)]
    body: Option<String>,
    /// Extra header, `Name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    #[arg(long, default_value_t = 20_000)]
    requests: u64,
    #[arg(long, default_value_t = 32)]
    connections: u64,
    /// Added to each request's number before it replaces `{i}`.
    #[arg(long, default_value_t = 0)]
    msisdn_base: u64,
    /// Longest wait for one answer, seconds.
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
}

async fn run(cli: Cli) -> anyhow::Result<serde_json::Value> {
    let client = load_tests::surge::target::http_client();
    let headers: Vec<(String, String)> = cli
        .headers
        .iter()
        .map(|h| {
            h.split_once(':')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| anyhow::anyhow!("--header {h:?}: expected `Name: value`"))
        })
        .collect::<anyhow::Result<_>>()?;
    let method: Method = cli
        .method
        .parse()
        .map_err(|_| anyhow::anyhow!("--method {:?}", cli.method))?;
    let next = Arc::new(AtomicU64::new(0));
    let counts = Arc::new(Counts::default());
    let latencies = Arc::new(std::sync::Mutex::new(
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?,
    ));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..cli.connections.max(1) {
        let (client, headers, method) = (client.clone(), headers.clone(), method.clone());
        let (next, counts, latencies) = (next.clone(), counts.clone(), latencies.clone());
        let (url, body) = (cli.url.clone(), cli.body.clone());
        let (total, base, limit) = (
            cli.requests,
            cli.msisdn_base,
            Duration::from_secs(cli.timeout_secs),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return;
                }
                let n = (base + i).to_string();
                let mut req = Request::builder()
                    .method(method.clone())
                    .uri(url.replace("{i}", &n));
                for (k, v) in &headers {
                    req = req.header(k, v);
                }
                let body = body.as_deref().map(|b| b.replace("{i}", &n));
                let Ok(req) = req.body(Full::new(Bytes::from(body.unwrap_or_default()))) else {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let sent = Instant::now();
                let answer = tokio::time::timeout(limit, async {
                    let resp = client.request(req).await?;
                    let status = resp.status();
                    // Read the body to its end so the connection is reused.
                    let _ = resp.into_body().collect().await;
                    Ok::<_, hyper_util::client::legacy::Error>(status)
                })
                .await;
                let took = sent.elapsed().as_micros() as u64;
                match answer {
                    Ok(Ok(status)) if status.is_success() => {
                        counts.ok.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut h) = latencies.lock() {
                            let _ = h.record(took.max(1));
                        }
                    }
                    Ok(Ok(_)) => {
                        counts.rejected.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        counts.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = started.elapsed().as_secs_f64();
    let ok = counts.ok.load(Ordering::Relaxed);
    let h = latencies
        .lock()
        .map_err(|_| anyhow::anyhow!("latency histogram poisoned"))?
        .clone();
    let q = |x: f64| (h.value_at_quantile(x) as f64 / 1000.0 * 100.0).round() / 100.0;
    Ok(serde_json::json!({
        "requests": cli.requests,
        "connections": cli.connections,
        "ok": ok,
        "rejected": counts.rejected.load(Ordering::Relaxed),
        "failed": counts.failed.load(Ordering::Relaxed),
        "seconds": (secs * 1000.0).round() / 1000.0,
        "ok_per_s": ((ok as f64 / secs) * 10.0).round() / 10.0,
        "latency_ms": {"p50": q(0.5), "p99": q(0.99), "max": (h.max() as f64 / 1000.0)},
    }))
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("http-push: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(figures) => {
            println!("{figures}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("http-push: {e:#}");
            ExitCode::from(64)
        }
    }
}
