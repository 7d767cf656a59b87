//! `surge` end to end at a small scale: the peak hour (20:00-21:00) of 1 % of the day at x1000
//! (~600 authorizations in 3.6 s, ~170/s), in-process gateway, simulated SMSC and handsets
//! with compressed think times. Runs the real binary and checks its JSON report: nothing lost,
//! every offered arrival accounted for, the fixed keys present and consistent.
//!
//! Ignored USSD prompts end at the USSD step timeout (30 s real), which bounds the run at
//! about 35 s; the drain limit (60 s) is above it so a slow machine does not count them lost.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use serde_json::Value;

fn count(v: &Value) -> u64 {
    v.as_object()
        .map(|m| m.values().map(|x| x.as_u64().unwrap()).sum())
        .unwrap_or(0)
}

#[test]
fn surge_peak_hour_at_one_percent_loses_nothing_and_accounts_for_every_arrival() {
    let dir = std::env::temp_dir().join(format!("surge-small-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let svg = dir.join("report.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_surge"))
        .args([
            "--scale",
            "0.01",
            "--compress",
            "1000",
            "--window-hours",
            "20-21",
            "--seed",
            "7",
            "--compress-think",
            "--expiry-secs",
            "20",
            "--p-ignore",
            "0.02",
            "--population",
            "20000",
            "--drain-secs",
            "60",
            "--progress",
            "plain",
            "--slo-error-rate",
            "0.05",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "surge failed ({:?})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stdout.contains("surge report"), "{stdout}");

    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let offered = r["offered"].as_u64().unwrap();
    let started = r["started"].as_u64().unwrap();
    let completed = count(&r["completed"]);
    let refused = count(&r["refused"]);
    let start_errors = r["start_errors"].as_u64().unwrap();

    // Poisson around ~615 expected arrivals in the peak hour at 1 %.
    assert!((450..=800).contains(&offered), "offered {offered}");
    assert_eq!(r["lost"], 0, "{r:#}");
    assert_eq!(started, completed, "every start reaches a terminal status");
    assert_eq!(
        offered,
        started + refused + start_errors,
        "every arrival accounted for"
    );
    // LoA 3 for SIMs without the applet is the only refusal the policy should produce.
    for (code, _) in r["refused"].as_object().unwrap() {
        assert_eq!(code, "policy_refused", "unexpected refusal: {r:#}");
    }
    let approved = r["completed"]["approved"].as_u64().unwrap_or(0);
    assert!(
        approved * 10 >= started * 8,
        "approved {approved} of {started}"
    );

    for key in ["latency_ms", "gateway_latency_ms"] {
        let l = &r[key];
        let (p50, p90, p99, p999, max) = (
            l["p50"].as_u64().unwrap(),
            l["p90"].as_u64().unwrap(),
            l["p99"].as_u64().unwrap(),
            l["p999"].as_u64().unwrap(),
            l["max"].as_u64().unwrap(),
        );
        assert!(
            p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= max,
            "{key}: {l}"
        );
        assert!(max > 0, "{key}: {l}");
    }
    assert!(r["achieved_per_s"].as_f64().unwrap() > 50.0, "{r:#}");
    assert!(r["late_starts"].as_u64().is_some());
    assert!(r["peak_in_flight"].as_u64().unwrap() >= 1);
    assert!(r["cpu_seconds"].as_f64().unwrap() > 0.0);
    assert!(r["peak_rss_bytes"].as_u64().unwrap() > 1_000_000);
    let smpp = &r["smpp"];
    // Every approval took at least one MT (the prompt) through the SMSC.
    assert!(smpp["submits"].as_u64().unwrap() >= approved, "{smpp}");
    assert!(smpp["mo_delivered"].as_u64().unwrap() > 0);
    assert_eq!(r["slo"]["lost == 0"], true);
    assert!(!r["histograms"]["latency_ms"].as_str().unwrap().is_empty());
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Overload at the door: ~300 starts/s offered for ~6 s to one bind the simulated SMSC throttles
/// to 20 submits/s. The excess must be refused (503 `no_capacity`), and what was accepted must
/// not fail for lack of capacity: no `delivery_error` at all, nothing lost.
#[test]
fn surge_against_a_throttled_smsc_refuses_the_excess_and_fails_none_it_accepted() {
    let dir = std::env::temp_dir().join(format!("surge-throttled-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_surge"))
        .args([
            "--scale",
            "0.0101",
            "--compress",
            "1800",
            "--window-hours",
            "19-22",
            "--seed",
            "11",
            "--compress-think",
            "--smsc-throttle-tps",
            "20",
            "--binds",
            "1",
            "--expiry-secs",
            "20",
            "--population",
            "20000",
            "--drain-secs",
            "60",
            "--progress",
            "off",
        ])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The run breaks its default SLOs on purpose (most starts are refused), so the exit code
    // is not the verdict: the report is.
    let text = std::fs::read_to_string(&json)
        .unwrap_or_else(|e| panic!("no report ({e})\nstdout:\n{stdout}\nstderr:\n{stderr}"));
    let r: Value = serde_json::from_str(&text).unwrap();
    let offered = r["offered"].as_u64().unwrap();
    let started = r["started"].as_u64().unwrap();
    let refused = &r["refused"];
    let no_capacity = refused["no_capacity"].as_u64().unwrap_or(0);
    assert!(offered > 1000, "offered {offered}");
    assert_eq!(r["lost"], 0, "{r:#}");
    assert!(
        no_capacity * 2 > offered,
        "most of the overload must be refused at the door: {r:#}"
    );
    assert_eq!(
        r["completed"]["delivery_error"].as_u64().unwrap_or(0),
        0,
        "an accepted authorization failed for lack of capacity: {r:#}"
    );
    assert_eq!(
        r["smpp"]["gateway_reconnects"].as_u64(),
        Some(0),
        "a bind was lost under load: {r:#}"
    );
    let approved = r["completed"]["approved"].as_u64().unwrap_or(0);
    assert!(approved > 0 && started > 0, "{r:#}");
    assert_eq!(
        started,
        count(&r["completed"]),
        "every start reaches a terminal status"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Opens `page` in Debian's chromium, headless, and returns the `<body>` tag of the DOM after
/// its scripts ran, and what chromium logged. Fails (never skips) without chromium.
fn open_in_chromium(page: &std::path::Path) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=2000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap_or_else(|e| {
            panic!("this test opens the report in chromium (scripts/test.sh installs it): {e}")
        });
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "chromium failed: {log}");
    let body = dom
        .find("<body")
        .and_then(|i| dom[i..].find('>').map(|j| dom[i..=i + j].to_owned()))
        .unwrap_or_else(|| panic!("no <body> in the DOM chromium rendered:\n{dom}"));
    (body, log)
}

/// `--follow callbacks`: no task or connection per authorization in the driver, the gateway
/// POSTs each ending to surge's receiver. Every arrival is still accounted for, nothing lost,
/// and the gateway's latency still comes from the views (the callbacks carry `gateway_ms`).
/// The run's HTML report renders in a real headless browser with every chart drawn and no
/// script error.
#[test]
fn following_by_callback_accounts_for_every_arrival_and_the_html_report_renders() {
    let dir = std::env::temp_dir().join(format!("surge-callbacks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let html = dir.join("report.html");
    let out = Command::new(env!("CARGO_BIN_EXE_surge"))
        .args([
            "--scale",
            "0.003",
            "--compress",
            "540",
            "--window-hours",
            "19-22",
            "--seed",
            "11",
            "--compress-think",
            "--loa3-over-ussd",
            "--expiry-secs",
            "10",
            "--population",
            "20000",
            "--drain-secs",
            "60",
            "--progress",
            "plain",
            "--follow",
            "callbacks",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "surge failed ({:?})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let (body, log) = open_in_chromium(&html);
    let page = std::fs::read_to_string(&html).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(body.contains("data-charts=\"5\""), "{body}\n{log}");
    assert!(body.contains("data-errors=\"0\""), "{body}\n{log}");
    assert!(!log.contains("Uncaught"), "{log}");
    for panel in [
        "Rate per second",
        "Authorizations in flight",
        "own latency, by second offered (log)",
        "answered authorizations",
        "SMPP window",
    ] {
        assert!(page.contains(panel), "no {panel} panel");
    }
    assert!(page.contains("By channel") && page.contains("stk") && page.contains("ussd"));
    assert_eq!(r["settings"]["follow"], "callbacks", "{stdout}");
    assert_eq!(r["lost"], 0, "{stdout}");
    assert_eq!(r["poll_errors"], 0, "{stdout}");
    let started = r["started"].as_u64().unwrap();
    assert!(started > 200, "{stdout}");
    assert_eq!(count(&r["completed"]), started, "{stdout}");
    assert_eq!(r["gateway_latency_source"]["view"], started, "{stdout}");
    assert!(
        r["completed"]["approved"].as_u64().unwrap() > started / 2,
        "{stdout}"
    );
}
