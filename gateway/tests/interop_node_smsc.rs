//! Interop against a real SMPP implementation: the npm `smpp` package playing the SMSC
//! (`tests/peers/node/server.js`). Each test starts its own server on a free loopback port.
//!
//! Needs `node` and `tests/peers/node/node_modules` (`npm ci` in that directory;
//! scripts/test.sh does it).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use gateway::smpp::bind::{spawn, BindConfig, BindEvent};
use gateway::smpp::session::{SessionConfig, SubmitRequest};
use rusmpp::{
    pdus::SubmitSm,
    types::{COctetString, OctetString},
};
use sim_applet_model::smpp::dialect::{Dialect, Step};
use tokio::sync::mpsc;

struct Peer {
    child: Child,
    port: u16,
    lines: std_mpsc::Receiver<serde_json::Value>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    fn start(extra: &[&str]) -> Peer {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/node");
        assert!(
            dir.join("node_modules/smpp").is_dir(),
            "{} has no node_modules/smpp: run scripts/test.sh, it installs the peers \
             (or `npm ci` in that directory)",
            dir.display()
        );
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = Command::new("node")
            .arg("server.js")
            .arg(port.to_string())
            .args(extra)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `node` ({e}): run scripts/test.sh, it installs the peers")
            });
        let mut child = child;
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std_mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        let mut peer = Peer {
            child,
            port,
            lines: rx,
        };
        let first = peer.next_line();
        assert_eq!(first["event"], "listening", "{first}");
        peer
    }

    fn next_line(&mut self) -> serde_json::Value {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .expect("the node SMSC said nothing for 20 s")
    }

    /// Lines up to and including the `n`-th `accepted` one (the SMSC prints after it
    /// answered, so the line can trail the client's event).
    fn until_accepted(&mut self, n: usize) -> Vec<serde_json::Value> {
        let mut lines = Vec::new();
        let mut seen = 0;
        while seen < n {
            let line = self.next_line();
            if line["event"] == "accepted" {
                seen += 1;
            }
            lines.push(line);
        }
        lines
    }
}

fn session_config(window: usize) -> SessionConfig {
    SessionConfig {
        system_id: "gw".into(),
        password: "secret".into(),
        window,
        throttle_backoff_initial: Duration::from_millis(50),
        throttle_backoff_max: Duration::from_millis(400),
        ..SessionConfig::default()
    }
}

fn bind_config(peer: &Peer, window: usize) -> BindConfig {
    BindConfig {
        reconnect_initial: Duration::from_millis(100),
        reconnect_max: Duration::from_millis(500),
        ..BindConfig::new(format!("127.0.0.1:{}", peer.port), session_config(window))
    }
}

fn sms(text: &str) -> SubmitRequest {
    SubmitRequest {
        submit_sm: SubmitSm::builder()
            .source_addr(COctetString::from_str("GATEWAY").unwrap())
            .destination_addr(COctetString::from_str("48600100200").unwrap())
            .short_message(OctetString::from_str(text).unwrap())
            .build(),
        deadline: None,
    }
}

async fn next_event(rx: &mut mpsc::Receiver<BindEvent>) -> BindEvent {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("no bind event within 20 s")
        .expect("bind task ended")
}

async fn wait_bound(rx: &mut mpsc::Receiver<BindEvent>) {
    loop {
        match next_event(rx).await {
            BindEvent::Bound { smsc_system_id } => {
                assert_eq!(smsc_system_id, "NODESMSC");
                return;
            }
            BindEvent::Disconnected { .. } => {}
            other => panic!("before bind: {other:?}"),
        }
    }
}

#[tokio::test]
async fn bind_submit_and_a_full_ussd_push_dialog() {
    let mut peer = Peer::start(&[]);
    let (tx, mut rx) = mpsc::channel(64);
    let (handle, join) = spawn(bind_config(&peer, 10), tx);
    wait_bound(&mut rx).await;
    let bound = peer.next_line();
    assert_eq!(bound["command"], "bind_transceiver");
    assert_eq!(bound["interface_version"], 0x34);

    handle.submit(1, sms("hello")).await.unwrap();
    assert_eq!(
        next_event(&mut rx).await,
        BindEvent::Accepted {
            id: 1,
            message_id: "m1".into()
        }
    );

    let dialect = Dialect::spec_default();
    let start = dialect
        .build_submit(
            Step::Start,
            "48600100200",
            "*123#",
            42,
            1,
            "Log in to Bank? 1=Yes 2=No",
        )
        .unwrap();
    handle
        .submit(
            2,
            SubmitRequest {
                submit_sm: start,
                deadline: None,
            },
        )
        .await
        .unwrap();
    let mut accepted = false;
    let mut answer = None;
    while !(accepted && answer.is_some()) {
        match next_event(&mut rx).await {
            BindEvent::Accepted { id: 2, .. } => accepted = true,
            BindEvent::Mo(deliver) => answer = Some(dialect.parse_mo(&deliver).unwrap()),
            other => panic!("{other:?}"),
        }
    }
    let answer = answer.unwrap();
    assert_eq!(answer.msisdn, "48600100200");
    assert_eq!(
        answer.session_key, 42,
        "its_session_info echoed by the SMSC"
    );
    assert_eq!(answer.op, 18);
    assert!(!answer.end);
    assert_eq!(answer.text, "1");

    let end = dialect
        .build_submit(
            Step::End,
            "48600100200",
            "*123#",
            answer.session_key,
            2,
            "Approved",
        )
        .unwrap();
    handle
        .submit(
            3,
            SubmitRequest {
                submit_sm: end,
                deadline: None,
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        next_event(&mut rx).await,
        BindEvent::Accepted { id: 3, .. }
    ));

    let seen: Vec<serde_json::Value> = (0..3).map(|_| peer.next_line()).collect();
    assert_eq!(seen[1]["ussd_service_op"], 2);
    assert_eq!(
        seen[1]["its_session_info"], "2a02",
        "session 42, step 1, no end bit"
    );
    assert_eq!(seen[2]["ussd_service_op"], 3);
    assert_eq!(
        seen[2]["its_session_info"], "2a05",
        "session 42, step 2, end bit"
    );

    handle.unbind().await.unwrap();
    assert_eq!(next_event(&mut rx).await, BindEvent::Stopped);
    join.await.unwrap();
}

#[tokio::test]
async fn throttled_submissions_are_retried_not_dropped() {
    let mut peer = Peer::start(&["--throttle", "3"]);
    let (tx, mut rx) = mpsc::channel(64);
    let (handle, join) = spawn(bind_config(&peer, 10), tx);
    wait_bound(&mut rx).await;
    handle.submit(1, sms("first")).await.unwrap();
    handle.submit(2, sms("second")).await.unwrap();
    let mut throttled = 0;
    let mut accepted = Vec::new();
    while accepted.len() < 2 {
        match next_event(&mut rx).await {
            BindEvent::Throttled { .. } => throttled += 1,
            BindEvent::Accepted { id, .. } => accepted.push(id),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(throttled, 3);
    accepted.sort_unstable();
    assert_eq!(accepted, vec![1, 2]);
    let texts: Vec<String> = peer
        .until_accepted(2)
        .into_iter()
        .filter(|v| v["event"] == "accepted")
        .map(|v| v["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(
        peer.lines.try_recv().is_err(),
        "no third acceptance: nothing was sent twice"
    );
    handle.unbind().await.unwrap();
    assert_eq!(next_event(&mut rx).await, BindEvent::Stopped);
    join.await.unwrap();
}

#[tokio::test]
async fn forced_disconnect_reconnects_without_loss_or_duplicates() {
    let mut peer = Peer::start(&["--drop-on", "DROP"]);
    let (tx, mut rx) = mpsc::channel(64);
    // Window 1: the SMSC drops the link with no answer pending for any other submission.
    let (handle, join) = spawn(bind_config(&peer, 1), tx);
    wait_bound(&mut rx).await;
    for (id, text) in [(1, "a"), (2, "DROP"), (3, "b")] {
        handle.submit(id, sms(text)).await.unwrap();
    }
    let mut accepted = Vec::new();
    let mut disconnects = 0;
    let mut binds = 1;
    while accepted.len() < 3 {
        match next_event(&mut rx).await {
            BindEvent::Accepted { id, .. } => accepted.push(id),
            BindEvent::Disconnected { .. } => disconnects += 1,
            BindEvent::Bound { .. } => binds += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(accepted, vec![1, 2, 3], "each exactly once, in order");
    assert!(disconnects >= 1 && binds >= 2, "{disconnects} {binds}");
    let lines = peer.until_accepted(3);
    let texts: Vec<&str> = lines
        .iter()
        .filter(|v| v["event"] == "accepted")
        .map(|v| v["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, vec!["a", "DROP", "b"], "SMSC saw no duplicate");
    assert!(lines.iter().any(|v| v["event"] == "dropped"));
    handle.unbind().await.unwrap();
    assert_eq!(next_event(&mut rx).await, BindEvent::Stopped);
    join.await.unwrap();
}
