//! Interop against a real SMPP implementation: the npm `smpp` package playing the SMSC
//! (`tests/peers/node/server.js`). Each test starts its own server on a free loopback port and,
//! once the gateway's bind has stopped, checks what the SMSC itself received (it prints a JSON
//! line per connection, bind and submit), not only what the gateway was told.
//!
//! Needs `node` and `tests/peers/node/node_modules` (`npm ci` in that directory;
//! scripts/test.sh does it).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
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
use serde_json::{json, Value};
use sim_applet_model::smpp::dialect::{Dialect, Step};
use tokio::sync::mpsc;

struct Peer {
    child: Child,
    port: u16,
    lines: std_mpsc::Receiver<Value>,
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
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
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

    fn next_line(&mut self) -> Value {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .expect("the node SMSC said nothing for 20 s")
    }

    /// Every line the SMSC printed since it started listening, read once it has no connection
    /// left open. Call it after the gateway's `Stopped`: no connection opens after that, and
    /// node closes a connection only after handling every PDU read from it, so these lines are
    /// everything the SMSC received. Bounded by `next_line`'s wait.
    fn received_when_idle(&mut self) -> Vec<Value> {
        let stdin = self
            .child
            .stdin
            .as_mut()
            .expect("the peer's stdin is piped");
        stdin
            .write_all(b"idle\n")
            .and_then(|()| stdin.flush())
            .expect("the node SMSC reads its stdin");
        let mut lines = Vec::new();
        loop {
            let line = self.next_line();
            if line["event"] == "idle" {
                return lines;
            }
            lines.push(line);
        }
    }
}

/// The lines of one event.
fn events<'a>(lines: &'a [Value], event: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["event"] == event).collect()
}

/// What one submit_sm carried to the SMSC, as a test states it; addresses are [TON, NPI, digits].
fn submitted(line: &Value) -> Value {
    json!({
        "service_type": line["service_type"],
        "source_addr": [line["source_addr_ton"], line["source_addr_npi"], line["source_addr"]],
        "destination_addr": [line["dest_addr_ton"], line["dest_addr_npi"], line["destination_addr"]],
        "text": line["text"],
        "ussd_service_op": line["ussd_service_op"],
        "its_session_info": line["its_session_info"],
    })
}

/// A plain SMS from `GATEWAY` to the test MSISDN, as the SMSC must receive it.
fn sms_received(text: &str) -> Value {
    json!({
        "service_type": "",
        "source_addr": [0, 0, "GATEWAY"],
        "destination_addr": [0, 0, "48600100200"],
        "text": text,
        "ussd_service_op": null,
        "its_session_info": null,
    })
}

fn session_config(window: usize) -> SessionConfig {
    SessionConfig {
        system_id: "gw".into(),
        password: "secret".into(),
        window,
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

    handle.unbind().await.unwrap();
    assert_eq!(next_event(&mut rx).await, BindEvent::Stopped);
    join.await.unwrap();

    let lines = peer.received_when_idle();
    let bound = events(&lines, "bound");
    assert_eq!(bound.len(), 1, "one bind: {lines:#?}");
    assert_eq!(bound[0]["command"], "bind_transceiver");
    assert_eq!(bound[0]["system_id"], "gw");
    assert_eq!(bound[0]["interface_version"], 0x34);
    let received: Vec<Value> = events(&lines, "accepted")
        .into_iter()
        .map(submitted)
        .collect();
    assert_eq!(
        received,
        vec![
            sms_received("hello"),
            // The prompt: a USSR request (2) from the service code to the international ISDN
            // number, session 42, step 1.
            json!({
                "service_type": "USSD",
                "source_addr": [0, 0, "*123#"],
                "destination_addr": [1, 1, "48600100200"],
                "text": "Log in to Bank? 1=Yes 2=No",
                "ussd_service_op": 2,
                "its_session_info": "2a02",
            }),
            // The final screen: a USSN request (3), session 42, step 2 with the end bit, which
            // closes the dialog on the handset.
            json!({
                "service_type": "USSD",
                "source_addr": [0, 0, "*123#"],
                "destination_addr": [1, 1, "48600100200"],
                "text": "Approved",
                "ussd_service_op": 3,
                "its_session_info": "2a05",
            }),
        ],
        "the SMSC received each submit once, in order: {lines:#?}"
    );
    assert!(
        events(&lines, "throttled").is_empty() && events(&lines, "dropped").is_empty(),
        "{lines:#?}"
    );
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
            BindEvent::Accepted { id, message_id } => accepted.push((id, message_id)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(throttled, 3);
    accepted.sort_unstable();
    handle.unbind().await.unwrap();
    assert_eq!(next_event(&mut rx).await, BindEvent::Stopped);
    join.await.unwrap();

    // Read only now: a duplicate re-sent after the second acceptance is in these lines too.
    let lines = peer.received_when_idle();
    let refused = events(&lines, "throttled");
    assert_eq!(refused.len(), 3, "{lines:#?}");
    for line in refused {
        let text = line["text"].as_str().unwrap();
        assert!(["first", "second"].contains(&text), "{lines:#?}");
        assert_eq!(
            submitted(line),
            sms_received(text),
            "a retry changed the submit"
        );
    }
    let mut received: Vec<&Value> = events(&lines, "accepted");
    received.sort_by_key(|l| l["text"].as_str().unwrap().to_owned());
    assert_eq!(
        received.iter().map(|l| submitted(l)).collect::<Vec<_>>(),
        vec![sms_received("first"), sms_received("second")],
        "each submission reached the SMSC exactly once after the throttling: {lines:#?}"
    );
    // Each acceptance reached the submission it answered: gateway id 1 is "first".
    let ids: Vec<_> = received
        .iter()
        .zip([1, 2])
        .map(|(l, id)| (id, l["message_id"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(accepted, ids, "{lines:#?}");
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
    handle.unbind().await.unwrap();
    assert_eq!(next_event(&mut rx).await, BindEvent::Stopped);
    join.await.unwrap();

    let lines = peer.received_when_idle();
    // The SMSC dropped the first connection once; the gateway bound again on a second one.
    assert_eq!(
        (disconnects, binds),
        (1, 2),
        "gateway side, against the SMSC's {lines:#?}"
    );
    assert_eq!(events(&lines, "connected").len(), 2, "{lines:#?}");
    assert_eq!(events(&lines, "bound").len(), 2, "{lines:#?}");
    let dropped = events(&lines, "dropped");
    assert_eq!(dropped.len(), 1, "{lines:#?}");
    assert_eq!(dropped[0]["text"], "DROP");
    assert_eq!(dropped[0]["conn"], 1);
    let received = events(&lines, "accepted");
    assert_eq!(
        received.iter().map(|l| submitted(l)).collect::<Vec<_>>(),
        vec![sms_received("a"), sms_received("DROP"), sms_received("b")],
        "the SMSC received each once, in order, no duplicate: {lines:#?}"
    );
    // What the drop lost was re-sent on the new connection.
    assert_eq!(received[0]["conn"], 1, "{lines:#?}");
    assert_eq!(received[1]["conn"], 2, "{lines:#?}");
    assert_eq!(received[2]["conn"], 2, "{lines:#?}");
}
