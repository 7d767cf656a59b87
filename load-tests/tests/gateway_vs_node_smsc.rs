//! The whole gateway against a real SMPP peer: the npm `smpp` package playing the SMSC
//! (`gateway/tests/peers/node/server.js`, which confirms every USSR request with op 18, the
//! same `its_session_info` and the text "1"). The gateway is started in-process on a
//! configuration pointing at it, and one authorization goes through the north API over USSD
//! and ends approved.
//!
//! Needs `node` and `gateway/tests/peers/node/node_modules` (`npm ci` in that directory;
//! scripts/test.sh does it).
#![allow(clippy::unwrap_used)]

mod e2e_support;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use e2e_support::{get, index_with, msisdn, start_ok, within, BASE, SEED, SHARE, SIZE, TOKEN};
use serde_json::Value;

/// The node SMSC, killed on drop (it also exits when our stdin pipe closes).
struct NodeSmsc {
    child: Child,
    port: u16,
    lines: std_mpsc::Receiver<Value>,
}

impl Drop for NodeSmsc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl NodeSmsc {
    fn start() -> NodeSmsc {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../gateway/tests/peers/node");
        assert!(
            dir.join("node_modules/smpp").is_dir(),
            "{} has no node_modules/smpp: run scripts/test.sh, it installs the peers \
             (or `npm ci` in that directory)",
            dir.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new("node")
            .arg("server.js")
            .arg(port.to_string())
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `node` ({e})"));
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
        let mut peer = NodeSmsc {
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
    /// left open. Call it after the gateway shut down: node closes a connection only after
    /// handling every PDU read from it, so these lines are everything the SMSC received (a
    /// late duplicate included, which lines read earlier could miss).
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

fn config(port: u16, dir: &std::path::Path) -> gateway::config::GatewayConfig {
    let pepper = dir.join("pepper");
    std::fs::write(&pepper, "node interop test pepper, long enough").unwrap();
    let text = format!(
        r#"
[api]
listen = "127.0.0.1:0"
[[api.clients]]
id = "e2e"
token = "{TOKEN}"

[[operators]]
name = "node"
ranges = ["48600"]
dialect = "spec-default"
service_code = "*123#"
sms_source_address = "4800"
[[operators.binds]]
address = "127.0.0.1:{port}"
system_id = "gw"
password = "secret"

[subscribers]
pepper_file = "{pepper}"
[subscribers.generate]
seed = {SEED}
count = {SIZE}
msisdn_base = {BASE}
applet_share = {SHARE}

[store]
path = "{store}"
"#,
        pepper = pepper.display(),
        store = dir.join("store.redb").display(),
    );
    gateway::config::GatewayConfig::from_toml(&text, &[]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_runs_a_ussd_authorization_against_the_node_smsc() {
    let mut node = NodeSmsc::start();
    let dir = tempfile::tempdir().unwrap();
    let mut gw = gateway::serve::start(config(node.port, dir.path()))
        .await
        .unwrap();
    gw.drain = Duration::from_millis(300);
    let api = gw.api_addr;
    // A SIM without the applet: the gateway prompts over USSD.
    let m = msisdn(index_with(false, 0));
    let v = within(20, async {
        let id = start_ok(api, &m, 2, 60).await;
        loop {
            let r = get(api, &id, 30).await;
            assert_eq!(r.status, 200, "{:?}", r.body);
            if r.body["state"] == "terminal" {
                break r.body;
            }
        }
    })
    .await;
    assert_eq!(v["status"], "approved", "{v}");
    assert_eq!(v["channel"], "ussd", "{v}");
    assert_eq!(v["operator"], "node", "{v}");
    assert_eq!(v["loa_achieved"], "2", "{v}");
    gw.shutdown().await;

    let lines = node.received_when_idle();
    assert!(
        lines.iter().any(|l| l["event"] == "bound"),
        "the gateway never bound: {lines:?}"
    );
    let prompts: Vec<_> = lines
        .iter()
        .filter(|l| l["event"] == "accepted" && l["ussd_service_op"] == 2)
        .collect();
    assert_eq!(prompts.len(), 1, "{lines:?}");
    assert!(
        prompts[0]["its_session_info"].is_string(),
        "the USSR request carried no its_session_info: {lines:?}"
    );
    assert_eq!(prompts[0]["source_addr"], "*123#", "{lines:?}");
    assert_eq!(prompts[0]["destination_addr"], m.as_str(), "{lines:?}");
    assert_eq!(prompts[0]["service_type"], "USSD", "{lines:?}");
}
