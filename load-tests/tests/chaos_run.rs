//! A chaos run of `surge` end to end: the gateway in a child process is SIGKILLed and
//! restarted on its store, the simulated SMSC goes down for two seconds, throttles every
//! submit for two more, and sends malformed PDUs, all while ~40 authorizations a second
//! arrive. Runs the real binary and checks its JSON report: nothing lost, no client-visible
//! result changed (`duplicates`), a callback for every authorization that agrees with GET,
//! every malformed PDU answered without losing a bind, and every fault carried out.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use serde_json::Value;

#[test]
fn a_chaos_run_loses_nothing_and_changes_no_result() {
    let dir = std::env::temp_dir().join(format!("surge-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_surge"))
        .args([
            "--scale",
            "0.005",
            "--compress",
            "540",
            "--window-hours",
            "19-22",
            "--seed",
            "3",
            "--compress-think",
            "--loa3-over-ussd",
            "--expiry-secs",
            "10",
            "--population",
            "20000",
            "--drain-secs",
            "90",
            "--progress",
            "plain",
            "--chaos",
            "kill-gateway@4,smsc-outage@8:2,throttle-storm@12:2,malformed@15:20,kill-gateway@17",
        ])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: String = {
        let lines: Vec<&str> = stderr.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    assert!(
        out.status.success(),
        "surge failed ({:?})\nstdout:\n{stdout}\nstderr (tail):\n{tail}",
        out.status
    );
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);

    let chaos = r["chaos"].as_array().unwrap();
    assert_eq!(chaos.len(), 5, "{stdout}");
    for c in chaos {
        assert_eq!(c["outcome"], "done", "{c}\n{stdout}");
    }
    for kill in chaos.iter().filter(|c| c["action"] == "kill-gateway") {
        assert!(kill["downtime_ms"].as_u64().unwrap() > 0, "{kill}");
    }

    let started = r["started"].as_u64().unwrap();
    assert!(
        started > 400,
        "too little got through to mean anything:\n{stdout}"
    );
    assert_eq!(r["lost"], 0, "{stdout}");
    assert_eq!(r["duplicates"], 0, "{stdout}");
    let v = &r["verification"];
    assert_eq!(v["reread"].as_u64().unwrap(), started, "{stdout}");
    assert_eq!(v["reread_errors"], 0, "{stdout}");
    assert_eq!(
        v["callbacks_expected"].as_u64().unwrap(),
        started,
        "{stdout}"
    );
    assert_eq!(v["callbacks_missing"], 0, "{stdout}");
    assert_eq!(v["callbacks_disagreeing"], 0, "{stdout}");
    assert_eq!(v["callbacks_malformed"], 0, "{stdout}");

    // Users kept approving across the faults: the run is not one that simply refused all.
    assert!(
        r["completed"]["approved"].as_u64().unwrap() > started / 2,
        "{stdout}"
    );
    // Work accepted before each fault was carried through it, not failed.
    assert_eq!(r["completed"].get("delivery_error"), None, "{stdout}");

    let smpp = &r["smpp"];
    assert_eq!(smpp["malformed_sent"], 20, "{stdout}");
    assert_eq!(smpp["malformed_answered"], 20, "{stdout}");
    assert!(smpp["outage_refusals"].as_u64().unwrap() > 0, "{stdout}");
    assert!(smpp["throttles"].as_u64().unwrap() > 0, "{stdout}");
    assert_eq!(r["slo"]["duplicates == 0"], true, "{stdout}");
}
