//! A real Prometheus scrapes the gateway side (an SMPP bind from `gateway::smpp::bind`, its
//! registry served by a small axum server here) and the simulated SMSC's `/metrics` while a
//! small load runs, and its query API shows the key series exist and move.
//!
//! Prometheus comes from Debian's `prometheus` package (`scripts/install-peers.sh`); the test
//! starts it on loopback with a temporary config and data directory, and kills it at the end.
//! Every wait below polls an external process with a deadline; nothing sleeps to assert.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use gateway::metrics::Metrics;
use gateway::smpp::bind::{self, BindConfig, BindEvent};
use gateway::smpp::session::{SessionConfig, SubmitRequest};
use load_tests::smsc::{self, AccountConfig, EchoNetwork, SmscConfig};
use rusmpp::pdus::SubmitSm;
use rusmpp::types::{COctetString, OctetString};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

const SUBMITS: u64 = 200;
const DEADLINE: Duration = Duration::from_secs(30);

/// Kills Prometheus when the test ends, however it ends.
struct PrometheusProcess {
    child: Child,
    log: PathBuf,
}

impl PrometheusProcess {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for PrometheusProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn prometheus_binary() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("prometheus"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "`prometheus` not found in PATH: install Debian's `prometheus` package \
                 (scripts/install-peers.sh does it)"
            )
        })
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn start_prometheus(
    dir: &std::path::Path,
    port: u16,
    targets: &[(&str, SocketAddr)],
) -> PrometheusProcess {
    let mut config = String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n");
    for (job, addr) in targets {
        config.push_str(&format!(
            "  - job_name: {job}\n    metrics_path: /metrics\n    static_configs:\n      - targets: [\"{addr}\"]\n"
        ));
    }
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let log = dir.join("prometheus.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let child = Command::new(prometheus_binary())
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--storage.tsdb.retention.time=1h")
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("prometheus starts");
    PrometheusProcess { child, log }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One HTTP/1.0 GET (no chunking, connection closed by the server); `None` on any failure.
async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8(buf).ok()?;
    let status = text.get(9..12)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// The values of an instant query, one per series; `None` while Prometheus cannot answer.
async fn query(port: u16, promql: &str) -> Option<Vec<f64>> {
    let (status, body) = http_get(
        port,
        &format!("/api/v1/query?query={}", percent_encode(promql)),
    )
    .await?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let result = v.get("data")?.get("result")?.as_array()?;
    result
        .iter()
        .map(|r| r.get("value")?.get(1)?.as_str()?.parse().ok())
        .collect()
}

/// Polls `promql` until `accept` holds for its values or the deadline passes.
async fn wait_for(
    prom: &PrometheusProcess,
    port: u16,
    promql: &str,
    what: &str,
    accept: impl Fn(&[f64]) -> bool,
) -> Vec<f64> {
    let deadline = Instant::now() + DEADLINE;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last = None;
    loop {
        tick.tick().await;
        if let Some(values) = query(port, promql).await {
            if accept(&values) {
                return values;
            }
            last = Some(values);
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never showed {what} (`{promql}`), last answer {last:?}\n--- prometheus log:\n{}",
            prom.log()
        );
    }
}

fn submit_request(i: u64) -> SubmitRequest {
    SubmitRequest {
        submit_sm: SubmitSm::builder()
            .source_addr(COctetString::from_str("GATEWAY").unwrap())
            .destination_addr(COctetString::from_str(&format!("48600{:06}", i)).unwrap())
            .short_message(OctetString::from_str("load").unwrap())
            .build(),
        deadline: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_gateway_and_smsc_and_the_key_series_move() {
    // Fail first, with the install hint, when Prometheus is missing.
    prometheus_binary();
    let dir = tempfile::tempdir().unwrap();

    // The simulated SMSC and its /metrics.
    let smsc = smsc::start(
        SmscConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            AccountConfig::new("gw", "secret"),
        ),
        Box::new(EchoNetwork::default()),
    )
    .await
    .unwrap();
    let smsc_metrics = smsc
        .serve_metrics("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();

    // The gateway side: one bind with metrics, the registry served on its own port.
    let (metrics, exposition) = Metrics::standalone();
    let bind_metrics = Arc::new(metrics.smpp.bind("sim", "sim-trx-1"));
    let session = SessionConfig {
        system_id: "gw".into(),
        password: "secret".into(),
        window: 10,
        ..SessionConfig::default()
    };
    let config =
        BindConfig::new(smsc.local_addr().to_string(), session).with_metrics(bind_metrics.clone());
    let (events_tx, mut events) = mpsc::channel(256);
    let (handle, bind_task) = bind::spawn(config, events_tx);
    let gw_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw_metrics = gw_listener.local_addr().unwrap();
    let app: axum::Router = exposition.routes("/metrics");
    let gw_server = tokio::spawn(async move { axum::serve(gw_listener, app).await });

    let port = free_port();
    let prom = start_prometheus(
        dir.path(),
        port,
        &[("gateway", gw_metrics), ("smsc-sim", smsc_metrics)],
    );

    // Both targets scraped once before the load: the counters start at zero.
    wait_for(&prom, port, "up", "both targets up", |v| {
        v.len() == 2 && v.iter().all(|x| *x == 1.0)
    })
    .await;
    let before = wait_for(
        &prom,
        port,
        r#"gateway_smpp_pdus_total{command="submit_sm",direction="out"}"#,
        "the submit_sm counter before the load",
        |v| v.len() == 1,
    )
    .await;
    assert_eq!(before, vec![0.0]);
    wait_for(
        &prom,
        port,
        "smsc_sim_submits_total",
        "the SMSC's submit counter",
        |v| v == [0.0],
    )
    .await;

    // The load: 200 submits paced over about 2 s, all answered.
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    let mut accepted = 0u64;
    let mut sent = 0u64;
    let load_deadline = Instant::now() + DEADLINE;
    while accepted < SUBMITS {
        tokio::select! {
            _ = pace.tick(), if sent < SUBMITS => {
                for _ in 0..10 {
                    handle.submit(sent, submit_request(sent)).await.unwrap();
                    sent += 1;
                }
            }
            event = events.recv() => match event.expect("bind task alive") {
                BindEvent::Accepted { .. } => accepted += 1,
                BindEvent::Failed { id, reason } => panic!("submission {id} failed: {reason:?}"),
                _ => {}
            },
            _ = tokio::time::sleep_until(load_deadline) => panic!("only {accepted} of {SUBMITS} accepted"),
        }
    }

    // The gateway's series, as Prometheus stored them.
    wait_for(
        &prom,
        port,
        r#"gateway_smpp_pdus_total{command="submit_sm",direction="out"}"#,
        "200 submit_sm out",
        |v| v == [SUBMITS as f64],
    )
    .await;
    wait_for(
        &prom,
        port,
        r#"gateway_smpp_responses_total{command_status="ESME_ROK"}"#,
        "the OK responses",
        |v| v.len() == 1 && v[0] >= SUBMITS as f64,
    )
    .await;
    wait_for(
        &prom,
        port,
        "gateway_smpp_submit_round_trip_seconds_count",
        "200 round trips",
        |v| v == [SUBMITS as f64],
    )
    .await;
    wait_for(
        &prom,
        port,
        r#"gateway_smpp_bind_state{state="bound"}"#,
        "the bind bound",
        |v| v == [1.0],
    )
    .await;
    wait_for(
        &prom,
        port,
        "increase(gateway_smpp_pdus_total{command=\"submit_sm\",direction=\"out\"}[1m])",
        "the submit counter moving",
        |v| v.len() == 1 && v[0] > 0.0,
    )
    .await;
    wait_for(
        &prom,
        port,
        "gateway_smpp_window_size",
        "the window size",
        |v| v == [10.0],
    )
    .await;
    wait_for(&prom, port, "gateway_build_info", "the build info", |v| {
        v == [1.0]
    })
    .await;
    // The SMSC's series.
    wait_for(
        &prom,
        port,
        "smsc_sim_submits_total",
        "200 submits at the SMSC",
        |v| v == [SUBMITS as f64],
    )
    .await;
    wait_for(
        &prom,
        port,
        r#"smsc_sim_binds{account="gw",kind="transceiver"}"#,
        "one open bind at the SMSC",
        |v| v == [1.0],
    )
    .await;
    wait_for(
        &prom,
        port,
        "smsc_sim_binds_accepted_total",
        "the accepted bind",
        |v| v == [1.0],
    )
    .await;

    // Stop everything: the bind unbinds, the SMSC shuts down, Prometheus is killed on drop.
    handle.unbind().await.unwrap();
    loop {
        match events.recv().await {
            Some(BindEvent::Stopped) | None => break,
            _ => {}
        }
    }
    bind_task.await.unwrap();
    assert_eq!(
        bind_metrics.state(),
        Some(gateway::metrics::smpp::BindState::Down)
    );
    smsc.shutdown().await;
    gw_server.abort();
    drop(prom);
}
