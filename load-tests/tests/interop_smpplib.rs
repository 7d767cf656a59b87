//! Interop with an ESME we did not write: python `smpplib` (tests/peers/python/esme.py)
//! against the simulated SMSC started in-process on a free port.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use load_tests::smsc::{Address, MoMessage, SmFields};

const HINT: &str = "run scripts/test.sh, it installs the peers \
                    (pip install -r load-tests/tests/peers/python/requirements.txt)";

async fn python_with_smpplib() {
    let probe = tokio::process::Command::new("python3")
        .args(["-c", "import smpplib"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await;
    match probe {
        Err(e) => panic!("python3 is not available ({e}): {HINT}"),
        Ok(out) if !out.status.success() => panic!(
            "python3 cannot import smpplib ({}): {HINT}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Ok(_) => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smpplib_binds_submits_and_gets_receipts_and_mo() {
    python_with_smpplib().await;
    let smsc = start(config()).await;
    // Queued before the ESME binds: the SMSC holds it until a receiver of the account appears.
    let mo = MoMessage {
        sm: SmFields {
            source: Address::international("48600100299"),
            destination: Address::international("4800"),
            short_message: b"HELLO FROM HANDSET".to_vec(),
            ..SmFields::default()
        },
    };
    smsc.deliver_mo(SYSTEM_ID, &mo).unwrap();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/python/esme.py");
    let child = tokio::process::Command::new("python3")
        .arg(script)
        .arg(smsc.local_addr().port().to_string())
        .arg("5")
        .env("SMSC_SYSTEM_ID", SYSTEM_ID)
        .env("SMSC_PASSWORD", PASSWORD)
        .env("EXPECT_MO", "1")
        .env("ESME_TIMEOUT", "20")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning python3");
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("esme.py did not finish within 60 s")
        .expect("waiting for esme.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| {
            panic!("no JSON summary from esme.py\nstdout:\n{stdout}\nstderr:\n{stderr}")
        });
    let v: serde_json::Value = serde_json::from_str(line).expect("summary is JSON");
    let ctx = format!("summary: {line}\nstderr:\n{stderr}");
    assert_eq!(v["error"], serde_json::Value::Null, "{ctx}");
    assert_eq!(v["bound"], true, "{ctx}");
    assert_eq!(v["accepted"], 5, "all submits accepted; {ctx}");
    assert_eq!(v["rejected"].as_array().map(Vec::len), Some(0), "{ctx}");
    assert_eq!(
        v["receipts_matched"], 5,
        "a receipt for every message id; {ctx}"
    );
    let sample = v["receipt_sample"].as_str().unwrap_or("");
    assert!(
        sample.contains(" stat:DELIVRD err:000 text:interop"),
        "{ctx}"
    );
    assert_eq!(v["mo"], 1, "{ctx}");
    assert_eq!(v["mo_texts"][0], "HELLO FROM HANDSET", "{ctx}");
    assert_eq!(v["unbound"], true, "{ctx}");
    assert!(out.status.success(), "esme.py failed; {ctx}");

    let s = smsc.stats().snapshot();
    assert_eq!(s.submits, 5);
    assert_eq!(s.binds_total, 1);
    smsc.shutdown().await;
}
