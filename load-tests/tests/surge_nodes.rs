//! `surge --nodes 2 --store redis` end to end at a small scale: two in-process gateway nodes on
//! a `redis-server` surge starts itself, their binds all to the simulated SMSC, API calls spread
//! over them. The JSON report must show nothing lost, both nodes working, and answers that
//! crossed nodes (the SMSC hands answers to any bind).
#![allow(clippy::unwrap_used)]

use std::process::Command;

use serde_json::Value;

#[test]
fn two_nodes_on_redis_lose_nothing_and_answers_cross_nodes() {
    let dir = std::env::temp_dir().join(format!("surge-nodes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_surge"))
        .args([
            "--scale",
            "0.003",
            "--compress",
            "540",
            "--window-hours",
            "19-22",
            "--seed",
            "5",
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
            "--nodes",
            "2",
            "--store",
            "redis",
        ])
        .arg("--json")
        .arg(&json)
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
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(r["lost"], 0, "{stdout}");
    let started = r["started"].as_u64().unwrap();
    assert!(started > 200, "{stdout}");
    let nodes = r["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{stdout}");
    for n in nodes {
        assert!(n["started"].as_u64().unwrap() > 0, "{n}");
        assert!(n["prompts_sent"].as_u64().unwrap() > 0, "{n}");
        assert!(n["answers_received"].as_u64().unwrap() > 0, "{n}");
    }
    let per_node: u64 = nodes.iter().map(|n| n["started"].as_u64().unwrap()).sum();
    assert_eq!(per_node, started, "every start is one node's");
    assert!(r["cross_node_answers"].as_u64().unwrap() > 0, "{stdout}");
    assert!(r["redis"]["round_trips"].as_u64().unwrap() > 0, "{stdout}");
    assert!(r["redis"]["cpu_seconds"].as_f64().is_some(), "{stdout}");
    assert!(
        r["completed"]["approved"].as_u64().unwrap() > started / 2,
        "{stdout}"
    );
}
