//! Two gateway nodes on one Redis (a real `redis-server` the test starts) and one simulated
//! SMSC, as an operator runs them: an SMSC hands a handset's answer to any bind of the account,
//! so answers land on the node that did not send the prompt.
//!
//! - Node A binds as a transmitter only, node B as a receiver only: every prompt leaves A and
//!   every answer lands on B. B takes the answer against the shared record (session key,
//!   the card's MAC over the stored challenge) and ends the authorization; A's API reports the
//!   approved result (with the card's proof for the applet) at once, B's GET the same.
//! - An answer landing on B while Redis does not answer is refused with a temporary error (B
//!   cannot check it against the shared record, and an acknowledged answer would be lost); the
//!   SMSC delivers it again and, Redis back, B applies it.
//! - Both nodes transceivers: three wrong PINs over USSD started on alternating nodes lock
//!   the MSISDN on both (the try counter is in Redis).
#![allow(clippy::unwrap_used)]

mod e2e_support;

use std::net::SocketAddr;
use std::time::Duration;

use e2e_support::*;
use gateway::config::{GatewayConfig, StoreBackend};
use gateway::smpp::session::BindKind;
use gateway::store::LocalRedis;

fn on_redis(config: &mut GatewayConfig, url: &str) {
    config.store.backend = StoreBackend::Redis;
    config.store.url = Some(url.to_owned());
    config.store.key_prefix = "two".into();
}

async fn node(
    smsc: SocketAddr,
    url: &str,
    kind: BindKind,
    dir: &std::path::Path,
) -> gateway::serve::ServeHandle {
    node_with(smsc, url, kind, dir, |_| {}).await
}

/// [`node`], with `tweak` applied to its configuration last.
async fn node_with(
    smsc: SocketAddr,
    url: &str,
    kind: BindKind,
    dir: &std::path::Path,
    tweak: impl FnOnce(&mut GatewayConfig),
) -> gateway::serve::ServeHandle {
    let mut config = gateway_config(smsc, dir, u64::from(SIZE));
    on_redis(&mut config, url);
    for bind in &mut config.operators[0].binds {
        bind.bind_kind = kind;
    }
    tweak(&mut config);
    start_gateway(config).await
}

async fn wait_ready(api: SocketAddr) {
    for _ in 0..100 {
        if http(api, "GET", "/readyz", &[], None).await.status == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("node at {api} not ready within 5 s");
}

/// Sends one command to the Redis at `port` over RESP (inline form) and reads the first line.
fn redis_command(port: u16, command: &str) -> String {
    use std::io::{BufRead, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(format!("{command}\r\n").as_bytes()).unwrap();
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line).unwrap();
    line
}

async fn metric(gw: &gateway::serve::ServeHandle, name: &str) -> f64 {
    let Some(addr) = gw.metrics_addr else {
        return f64::NAN;
    };
    let client = load_tests::surge::target::http_client();
    let text = load_tests::surge::target::scrape(&client, &format!("http://{addr}/metrics"))
        .await
        .unwrap();
    load_tests::surge::target::metric_sum(&text, name).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_leave_one_node_answers_land_on_the_other_and_both_report_the_one_result() {
    within(90, async {
        let redis_dir = tempfile::tempdir().unwrap();
        let redis = LocalRedis::start(redis_dir.path())
            .expect("this test needs redis-server (scripts/test.sh installs it)");
        let (smsc, _log) = start_smsc(user(0.0, 0.0, 0.0)).await;
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = node(
            smsc.local_addr(),
            &redis.url(),
            BindKind::Transmitter,
            dir_a.path(),
        )
        .await;
        let b = node(
            smsc.local_addr(),
            &redis.url(),
            BindKind::Receiver,
            dir_b.path(),
        )
        .await;
        wait_ready(a.api_addr).await;
        wait_ready(b.api_addr).await;

        let ussd = start_ok(a.api_addr, &msisdn(index_with(false, 0)), 2, 30).await;
        let stk = start_ok(a.api_addr, &msisdn(index_with(true, 0)), 2, 30).await;
        for id in [&ussd, &stk] {
            let started = std::time::Instant::now();
            let on_a = terminal(a.api_addr, id).await;
            assert_eq!(on_a["status"], "approved", "A: {on_a}");
            // Woken by B's ending hint, not by its own deadline (30 s).
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "A learnt the result only after {:?}",
                started.elapsed()
            );
            let on_b = get(b.api_addr, id, 0).await.body;
            assert_eq!(on_b["status"], on_a["status"], "B: {on_b}");
            assert_eq!(on_b["reason"], on_a["reason"]);
            assert_eq!(on_b["proof"], on_a["proof"]);
        }
        let on_a = terminal(a.api_addr, &stk).await;
        assert!(on_a["proof"].is_string(), "the card's proof: {on_a}");
        a.shutdown().await;
        b.shutdown().await;
        smsc.shutdown().await;
        drop(redis);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_on_the_other_node_while_redis_is_paused_is_refused_and_applied_when_delivered_again(
) {
    within(90, async {
        let redis_dir = tempfile::tempdir().unwrap();
        let redis = LocalRedis::start(redis_dir.path())
            .expect("this test needs redis-server (scripts/test.sh installs it)");
        // Every user approves, about 1.5 s (real) after the prompt: time enough to pause Redis first on a busy machine.
        let slow = sim_applet_model::handset::user::UserParams {
            min_action_ms: 150_000,
            sigma: 0.05,
            ..user(0.0, 0.0, 0.0)
        };
        let (smsc, log) = start_smsc_with(slow, Some((30, Duration::from_millis(250)))).await;
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = node(
            smsc.local_addr(),
            &redis.url(),
            BindKind::Transmitter,
            dir_a.path(),
        )
        .await;
        let b = node_with(
            smsc.local_addr(),
            &redis.url(),
            BindKind::Receiver,
            dir_b.path(),
            |c| {
                c.store.response_timeout_ms = 200;
                c.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
            },
        )
        .await;
        wait_ready(a.api_addr).await;
        wait_ready(b.api_addr).await;

        let m = msisdn(index_with(false, 3));
        let id = start_ok(a.api_addr, &m, 2, 30).await;
        log.wait_prompts(&m, 1).await;
        // Redis stops answering before the handset does, for 3 s.
        assert_eq!(
            redis_command(redis.port(), "CLIENT PAUSE 3000 ALL"),
            "+OK\r\n"
        );
        let on_a = terminal(a.api_addr, &id).await;
        assert_eq!(on_a["status"], "approved", "the answer was lost: {on_a}");
        let on_b = get(b.api_addr, &id, 0).await.body;
        assert_eq!(on_b["status"], "approved", "B: {on_b}");
        let refused = metric(&b, "gateway_smpp_mo_refused_total").await;
        assert!(refused >= 1.0, "B refused {refused} deliveries");
        assert!(
            smsc.stats()
                .deliver_retries
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1
        );
        a.shutdown().await;
        b.shutdown().await;
        smsc.shutdown().await;
        drop(redis);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_wrong_pins_split_across_two_nodes_lock_the_msisdn_on_both() {
    within(120, async {
        let redis_dir = tempfile::tempdir().unwrap();
        let redis = LocalRedis::start(redis_dir.path())
            .expect("this test needs redis-server (scripts/test.sh installs it)");
        let (smsc, _log) = start_smsc(user(0.0, 0.0, 1.0)).await;
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut nodes = Vec::new();
        for dir in [&dir_a, &dir_b] {
            let node = node_with(
                smsc.local_addr(),
                &redis.url(),
                BindKind::Transceiver,
                dir.path(),
                |c| {
                    c.policy.loa3_over_ussd = true;
                    c.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
                },
            )
            .await;
            nodes.push(node);
        }
        for n in &nodes {
            wait_ready(n.api_addr).await;
        }
        let who = msisdn(index_with(false, 3));
        for attempt in 0..3 {
            let api = nodes[attempt % 2].api_addr;
            let id = start_ok(api, &who, 3, 30).await;
            let view = terminal(api, &id).await;
            // The third wrong PIN is the one that locks.
            let (status, reason) = if attempt < 2 {
                ("denied", "wrong_pin")
            } else {
                ("pin_blocked", "ussd_pin_locked")
            };
            assert_eq!(view["status"], status, "attempt {attempt}: {view}");
            assert_eq!(view["reason"], reason, "attempt {attempt}: {view}");
        }
        for n in &nodes {
            let id = start_ok(n.api_addr, &who, 3, 30).await;
            let view = terminal(n.api_addr, &id).await;
            assert_eq!(view["status"], "pin_blocked", "{view}");
        }
        // With two transceivers the SMSC spreads answers over four binds: some of them reach
        // the node that did not prompt.
        let cross = metric(&nodes[0], "gateway_cross_node_answers_total").await
            + metric(&nodes[1], "gateway_cross_node_answers_total").await;
        assert!(cross >= 1.0, "no answer crossed nodes ({cross})");
        for n in nodes {
            n.shutdown().await;
        }
        smsc.shutdown().await;
        drop(redis);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_on_the_other_node_ends_it_everywhere_and_the_prompting_node_releases_the_dialog()
{
    within(60, async {
        let redis_dir = tempfile::tempdir().unwrap();
        let redis = LocalRedis::start(redis_dir.path())
            .expect("this test needs redis-server (scripts/test.sh installs it)");
        // Users who never answer: the dialog is open on the handset when the cancel comes.
        let (smsc, log) = start_smsc(user(1.0, 0.0, 0.0)).await;
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = node(
            smsc.local_addr(),
            &redis.url(),
            BindKind::Transceiver,
            dir_a.path(),
        )
        .await;
        let b = node(
            smsc.local_addr(),
            &redis.url(),
            BindKind::Transceiver,
            dir_b.path(),
        )
        .await;
        wait_ready(a.api_addr).await;
        wait_ready(b.api_addr).await;
        let m = msisdn(index_with(false, 7));
        let id = start_ok(a.api_addr, &m, 2, 60).await;
        log.wait_prompts(&m, 1).await;
        // A long-poll on A, then the cancel on B.
        let poll = tokio::spawn({
            let api = a.api_addr;
            let id = id.clone();
            async move { get(api, &id, 30).await.body }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let c = cancel(b.api_addr, &id).await;
        assert_eq!(c.status, 200, "{:?}", c.body);
        assert_eq!(c.body["status"], "cancelled", "{:?}", c.body);
        let on_a = tokio::time::timeout(Duration::from_secs(5), poll)
            .await
            .expect("A's long-poll is woken by B's cancel")
            .unwrap();
        assert_eq!(on_a["status"], "cancelled", "{on_a}");
        // A still held the dialog: it releases it on the handset.
        let texts = || -> Vec<String> {
            log.mt()
                .iter()
                .filter(|x| x.sm.destination.addr == m)
                .map(|x| String::from_utf8_lossy(&x.sm.short_message).into_owned())
                .collect()
        };
        for _ in 0..100 {
            if texts().len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let texts = texts();
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert_eq!(texts[1], "Cancelled", "{texts:?}");
        a.shutdown().await;
        b.shutdown().await;
        smsc.shutdown().await;
        drop(redis);
    })
    .await;
}
