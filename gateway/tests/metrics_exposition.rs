//! The gateway's `/metrics` exposition: valid OpenMetrics with our naming rules, accepted by
//! `promtool check metrics`, served with the right content type; the alert rules pass
//! `promtool check rules`.
//!
//! `promtool` comes from Debian's `prometheus` package, installed by `scripts/install-peers.sh`.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use gateway::metrics::api::{HttpMethod, RejectReason};
use gateway::metrics::authorization::{Channel, Loa, OtaFailure, Outcome};
use gateway::metrics::callback::{CallbackOutcome, CallbackTarget};
use gateway::metrics::smpp::{BindState, Direction};
use gateway::metrics::store::StoreOp;
use gateway::metrics::{Exposition, Metrics, OPENMETRICS_CONTENT_TYPE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FORBIDDEN_LABELS: &[&str] = &["msisdn", "session", "session_id", "message_id", "id"];

/// A registry with every family touched once, as after a little traffic.
fn exercised() -> (Metrics, Exposition) {
    let (m, exposition) = Metrics::standalone();
    let op = m.authorization.operator("op1");
    op.started(Channel::Ussd, Loa::Loa2);
    op.prompt_sent(Channel::Ussd);
    op.user_answered(Channel::Ussd, Duration::from_secs(4));
    op.completed(
        Channel::Ussd,
        Loa::Loa2,
        Outcome::Approved,
        Duration::from_secs(5),
        Some(Duration::from_millis(12)),
    );
    op.pin_failure(Channel::Stk);
    op.pin_lockout(Channel::Stk);
    op.ota_failure(OtaFailure::CcFailed);
    let bind = Arc::new(m.smpp.bind("op1", "op1-trx-1"));
    bind.set_state(BindState::Bound);
    bind.pdu(Direction::Out, rusmpp::CommandId::SubmitSm);
    bind.pdu(Direction::In, rusmpp::CommandId::SubmitSmResp);
    bind.response(rusmpp::CommandStatus::EsmeRok);
    bind.response(rusmpp::CommandStatus::Other(0x0400));
    bind.round_trip(Duration::from_millis(8));
    bind.throttled();
    bind.reconnect();
    bind.window(3);
    m.api.observe_request(
        "/v1/authorizations",
        HttpMethod::Post,
        201,
        Duration::from_millis(3),
    );
    m.api.rejected(RejectReason::Admission);
    m.store.observe(
        StoreOp::CreateAuthorization,
        true,
        Duration::from_micros(300),
    );
    m.callback.record(
        CallbackTarget::Native,
        CallbackOutcome::Delivered,
        1,
        Duration::from_millis(40),
    );
    (m, exposition)
}

/// Family name -> type, from the `# TYPE` lines.
fn families(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|rest| {
            let (name, kind) = rest.split_once(' ').expect("TYPE line has a type");
            (name.to_owned(), kind.to_owned())
        })
        .collect()
}

/// (sample name, label names) of every sample line.
fn samples(text: &str) -> Vec<(String, Vec<String>)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let name_end = l.find(['{', ' ']).expect("sample has a value");
            let name = l[..name_end].to_owned();
            let mut labels = Vec::new();
            if l[name_end..].starts_with('{') {
                let close = l.rfind('}').expect("labels are closed");
                for pair in l[name_end + 1..close].split("\",") {
                    if let Some((k, _)) = pair.split_once('=') {
                        labels.push(k.to_owned());
                    }
                }
            }
            (name, labels)
        })
        .collect()
}

fn family_of<'a>(
    sample: &str,
    families: &'a BTreeMap<String, String>,
) -> Option<(&'a str, &'a str)> {
    let suffixes = [
        "_total", "_bucket", "_count", "_sum", "_info", "_created", "",
    ];
    suffixes.iter().find_map(|s| {
        let base = sample.strip_suffix(s)?;
        families
            .get_key_value(base)
            .map(|(k, v)| (k.as_str(), v.as_str()))
    })
}

#[test]
fn exposition_is_openmetrics_with_prefixed_names_and_bounded_labels() {
    let (_m, exposition) = exercised();
    let text = exposition.encode();
    assert!(text.ends_with("# EOF\n"), "no # EOF terminator:\n{text}");
    let families = families(&text);
    assert!(families.len() >= 20, "too few families: {families:?}");
    for (name, kind) in &families {
        assert!(name.starts_with("gateway_"), "{name} is not prefixed");
        assert!(
            ["counter", "gauge", "histogram", "info"].contains(&kind.as_str()),
            "{name}: {kind}"
        );
        // Histograms of time are in seconds; the one histogram of a count says what it counts.
        if kind == "histogram" && name != "gateway_store_operations_per_commit" {
            assert!(
                name.ends_with("_seconds"),
                "histogram {name} is not in seconds"
            );
        }
    }
    let mut seen = BTreeSet::new();
    for (sample, labels) in samples(&text) {
        let (family, kind) = family_of(&sample, &families)
            .unwrap_or_else(|| panic!("sample {sample} belongs to no TYPE'd family"));
        if kind == "counter" {
            assert!(
                sample.ends_with("_total"),
                "counter sample {sample} lacks _total"
            );
        }
        for l in &labels {
            assert!(
                !FORBIDDEN_LABELS.contains(&l.as_str()),
                "{sample} has the unbounded label {l}"
            );
        }
        seen.insert(family.to_owned());
    }
    for key in [
        "gateway_authorizations_started",
        "gateway_authorizations_completed",
        "gateway_authorizations_in_flight",
        "gateway_authorization_duration_seconds",
        "gateway_authorization_own_duration_seconds",
        "gateway_user_answer_duration_seconds",
        "gateway_prompts",
        "gateway_pin_failures",
        "gateway_pin_lockouts",
        "gateway_ota_failures",
        "gateway_api_requests",
        "gateway_api_request_duration_seconds",
        "gateway_api_rejected",
        "gateway_smpp_bind_state",
        "gateway_smpp_pdus",
        "gateway_smpp_responses",
        "gateway_smpp_window_occupancy",
        "gateway_smpp_submit_round_trip_seconds",
        "gateway_smpp_throttles",
        "gateway_smpp_reconnects",
        "gateway_smpp_generic_nacks",
        "gateway_store_operation_duration_seconds",
        "gateway_callbacks",
        "gateway_build",
    ] {
        assert!(seen.contains(key), "no samples of {key}:\n{text}");
    }
    // Unknown statuses collapse into `other`; the raw number never becomes a label.
    assert!(text.contains("command_status=\"other\"} 1"), "{text}");
    assert!(
        !text.contains("0x400") && !text.contains("1024\""),
        "{text}"
    );
    // Histogram buckets are the explicit ones (1 ms .. 10 s, 0.5 s .. 180 s).
    assert!(text.contains("gateway_smpp_submit_round_trip_seconds_bucket{le=\"0.001\""));
    assert!(text.contains("gateway_smpp_submit_round_trip_seconds_bucket{le=\"10.0\""));
    assert!(text.contains("gateway_user_answer_duration_seconds_bucket{le=\"0.5\""));
    assert!(text.contains("gateway_user_answer_duration_seconds_bucket{le=\"180.0\""));
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

fn promtool() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("promtool"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "promtool not found in PATH: install Debian's `prometheus` package \
             (scripts/install-peers.sh does it)"
        )
    })
}

fn run_promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new(promtool())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).expect("write to promtool");
        }
    }
    let out = child.wait_with_output().expect("promtool ends");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn promtool_check_metrics_accepts_the_exposition() {
    let (_m, exposition) = exercised();
    // promtool (2.x) lints the classic text format, which is what the endpoint serves to
    // clients that do not ask for OpenMetrics.
    let text = exposition.encode_prometheus_text();
    let (ok, out) = run_promtool(&["check", "metrics"], Some(&text));
    assert!(
        ok && out.trim().is_empty(),
        "promtool check metrics:\n{out}\n--- input:\n{text}"
    );
}

#[test]
fn promtool_check_rules_accepts_the_alert_rules() {
    let rules = repo_root().join("scripts/prometheus/alerts.yml");
    let (ok, out) = run_promtool(
        &["check", "rules", rules.to_str().expect("utf-8 path")],
        None,
    );
    assert!(ok, "promtool check rules:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn promtool_check_config_accepts_the_example_config() {
    let config = repo_root().join("scripts/prometheus/prometheus.yml");
    let (ok, out) = run_promtool(
        &["check", "config", config.to_str().expect("utf-8 path")],
        None,
    );
    assert!(ok, "promtool check config:\n{out}");
}

async fn http_get(addr: std::net::SocketAddr, path: &str, accept: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    String::from_utf8(buf).expect("utf-8 answer")
}

#[tokio::test]
async fn endpoint_serves_openmetrics_to_prometheus_and_classic_text_to_others() {
    let (_m, exposition) = exercised();
    let app: axum::Router = exposition.routes("/metrics");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    // What Prometheus 2.x sends.
    let om = http_get(
        addr,
        "/metrics",
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    )
    .await;
    let lower = om.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 200"), "{om}");
    assert!(
        lower.contains(&format!("content-type: {OPENMETRICS_CONTENT_TYPE}")),
        "{om}"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");
    let plain = http_get(addr, "/metrics", "*/*").await;
    assert!(
        plain
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{plain}"
    );
    assert!(!plain.contains("# EOF"), "{plain}");
    assert!(
        plain.contains("# TYPE gateway_smpp_pdus_total counter"),
        "{plain}"
    );
    server.abort();
}

/// Every `gateway_*` series the dashboard and the alert rules query is one the gateway exports:
/// a renamed metric would otherwise leave a panel empty and an alert silent.
#[test]
fn dashboard_and_alerts_query_only_exported_series() {
    let (_m, exposition) = exercised();
    let text = exposition.encode();
    let exported: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let mut checked = 0;
    for file in [
        "scripts/grafana/gateway-dashboard.json",
        "scripts/prometheus/alerts.yml",
    ] {
        let source = std::fs::read_to_string(repo_root().join(file)).expect(file);
        let mut rest = source.as_str();
        while let Some(at) = rest.find("gateway_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            // The dashboard's uid and similar words are not series.
            if name == "gateway_" || !name[8..].contains('_') && !exported.contains(name.as_str()) {
                continue;
            }
            assert!(
                exported.contains(name.as_str()),
                "{file} queries {name}, which the gateway does not export"
            );
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} series references found");
}
