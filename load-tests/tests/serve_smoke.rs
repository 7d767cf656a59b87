//! Smoke test of the whole gateway in-process: the simulated SMSC with its handset population
//! (users who always approve, time compressed) on a free port, `gateway::serve::start` with a
//! configuration pointing at it, then the native HTTP API: an applet subscriber at LoA2 and
//! LoA3 (STK, with the card's MAC as proof) and a subscriber without the applet at LoA2
//! (USSD), each long-polled until it ends approved; then a graceful shutdown.
//!
//! The second test reads what the gateway logs during such a run, at the most verbose level and
//! in the JSON format production uses: every authorization's lines carry its span (id, masked
//! number), and no full MSISDN, PIN, OTA or card key, pepper or bearer token appears anywhere.
//! It covers the paths where secrets pass through the gateway: LoA3 over STK (keys, counters,
//! the card's MAC) and LoA3 over USSD (the PIN typed by the user, verified by the gateway).
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway::config::GatewayConfig;
use load_tests::harness::client::{start_body, ApiClient};
use load_tests::harness::config::GatewayConfigBuilder;
use load_tests::harness::network::{start_smsc as start_network, SmscSpec};
use load_tests::smsc::population::PopulationConfig;
use load_tests::smsc::SmscHandle;
use serde_json::Value;
use sim_applet_model::applet::state::CardSecrets;
use sim_applet_model::handset::population::has_applet;
use sim_applet_model::handset::user::UserParams;

const SEED: u64 = 42;
const COUNT: u64 = 200;
const BASE: u64 = 48_600_000_000;
const SHARE: f64 = 0.6;
const TOKEN: &str = "smoke-token-7f3a";
const PEPPER: &str = "smoke test pepper of enough octets";

fn config(smsc: SocketAddr, dir: &tempfile::TempDir, loa3_over_ussd: bool) -> GatewayConfig {
    let mut b = GatewayConfigBuilder::new(smsc.to_string(), dir.path());
    b.client_id = "smoke".into();
    b.token = TOKEN.into();
    b.seed = SEED;
    b.count = COUNT;
    b.msisdn_base = BASE;
    b.applet_share = SHARE;
    b.loa3_over_ussd = loa3_over_ussd;
    b.pepper = PEPPER.into();
    b.metrics = true;
    b.build().unwrap()
}

async fn approve(api: &ApiClient, msisdn: &str, loa: u8) -> Value {
    let r = api.start(&start_body(msisdn, loa, 60), None).await.unwrap();
    assert_eq!(r.status, 201, "start: {}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    tokio::time::timeout(Duration::from_secs(60), api.until_terminal(&id))
        .await
        .unwrap_or_else(|_| panic!("authorization {id} did not end"))
        .unwrap()
}

/// The simulated SMSC with the population, on a free port; its users always approve, with the
/// right PIN, at 100 times their real pace.
async fn start_smsc() -> SmscHandle {
    let population = PopulationConfig {
        size: COUNT as u32,
        applet_share: SHARE,
        seed: SEED,
        msisdn_base: BASE,
        time_compression: 100.0,
        user: UserParams {
            p_ignore: 0.0,
            p_deny: 0.0,
            p_wrong_pin: 0.0,
            ..UserParams::default()
        },
        ..PopulationConfig::default()
    };
    let spec = SmscSpec {
        record: false,
        ..SmscSpec::new(population)
    };
    start_network(spec).await.unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_serves_stk_and_ussd_authorizations_end_to_end() {
    let smsc = start_smsc().await;
    let dir = tempfile::tempdir().unwrap();
    let handle = gateway::serve::start(config(smsc.local_addr(), &dir, false))
        .await
        .unwrap();
    let api = ApiClient::new(handle.api_addr, TOKEN);
    assert!(handle.metrics_addr.is_some());

    let applet = (0..COUNT).find(|i| has_applet(SEED, *i, SHARE)).unwrap();
    let plain = (0..COUNT).find(|i| !has_applet(SEED, *i, SHARE)).unwrap();
    let applet = (BASE + applet).to_string();
    let plain = (BASE + plain).to_string();

    for loa in [2u8, 3] {
        let v = approve(&api, &applet, loa).await;
        assert_eq!(v["status"], "approved", "{v}");
        assert_eq!(v["channel"], "stk");
        assert_eq!(v["loa_achieved"], loa.to_string());
        assert_eq!(v["proof"].as_str().unwrap().len(), 32, "{v}");
    }
    let v = approve(&api, &plain, 2).await;
    assert_eq!(v["status"], "approved", "{v}");
    assert_eq!(v["channel"], "ussd");
    assert!(v["proof"].is_null());

    // LoA3 without the applet is a policy refusal under this configuration (docs/api.md:
    // 403 `policy_refused`, "e.g. LoA 3 over USSD").
    let body = serde_json::json!({"msisdn": plain, "loa": 3, "client_name": "Portal"});
    let r = api.start(&body, None).await.unwrap();
    let refusal = r.body;
    assert_eq!(r.status, 403, "{refusal}");
    assert_eq!(refusal["error"], "policy_refused", "{refusal}");

    // The API, sessions and binds are all counted on /metrics, without a phone number.
    let metrics_url = format!("http://{}/metrics", handle.metrics_addr.unwrap());
    let exposition =
        load_tests::surge::target::scrape(&load_tests::surge::target::http_client(), &metrics_url)
            .await
            .unwrap();
    for needle in [
        "gateway_api_requests_total{route=\"/v1/authorizations\",method=\"POST\",status_class=\"2xx\"} 3",
        "gateway_authorizations_completed_total{operator=\"sim\",channel=\"stk\",loa=\"loa3\",outcome=\"approved\"} 1",
        "gateway_smpp_bind_state{operator=\"sim\"",
    ] {
        assert!(exposition.contains(needle), "missing {needle:?} in:\n{exposition}");
    }
    assert!(!exposition.contains(&applet) && !exposition.contains(&plain));

    let audit = std::fs::read_to_string(dir.path().join("store.audit.jsonl")).unwrap();
    assert_eq!(audit.lines().count(), 3);
    assert!(!audit.contains(&applet) && !audit.contains(&plain));

    handle.shutdown().await;
    smsc.shutdown().await;
}

/// Collects everything the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_an_end_to_end_run_carry_no_secret_and_no_full_msisdn() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_current_span(true)
        .with_span_list(true)
        .with_writer(move || writer.clone())
        .init();

    let smsc = start_smsc().await;
    let dir = tempfile::tempdir().unwrap();
    let handle = gateway::serve::start(config(smsc.local_addr(), &dir, true))
        .await
        .unwrap();
    let api = ApiClient::new(handle.api_addr, TOKEN);

    let applet = (0..COUNT).find(|i| has_applet(SEED, *i, SHARE)).unwrap();
    let plain = (0..COUNT).find(|i| !has_applet(SEED, *i, SHARE)).unwrap();
    let v = approve(&api, &(BASE + applet).to_string(), 3).await;
    assert_eq!(
        (v["status"].as_str(), v["channel"].as_str()),
        (Some("approved"), Some("stk")),
        "{v}"
    );
    let v = approve(&api, &(BASE + plain).to_string(), 3).await;
    assert_eq!(
        (v["status"].as_str(), v["channel"].as_str()),
        (Some("approved"), Some("ussd")),
        "{v}"
    );
    handle.shutdown().await;
    smsc.shutdown().await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.lines().count() > 10,
        "too few log lines to judge:\n{logs}"
    );
    // Each authorization's lines are in its span, with the number masked.
    assert!(
        logs.contains(r#""name":"authorization""#),
        "no authorization span:\n{logs}"
    );
    for index in [applet, plain] {
        let msisdn = (BASE + index).to_string();
        assert!(!logs.contains(&msisdn), "full MSISDN {msisdn} in the logs");
        assert!(
            logs.contains(&format!(
                "{}***{}",
                &msisdn[..5],
                &msisdn[msisdn.len() - 3..]
            )),
            "masked MSISDN of {msisdn} not in the logs"
        );
        let secrets = CardSecrets::derive(SEED, index);
        for (what, key) in [
            ("KIc", secrets.kic_key),
            ("KID", secrets.kid_key),
            ("K_auth", secrets.k_auth),
        ] {
            let hex_key: String = key.iter().map(|b| format!("{b:02x}")).collect();
            assert!(
                !logs.to_lowercase().contains(&hex_key),
                "{what} key of {index} in the logs"
            );
        }
        let pin = String::from_utf8(secrets.initial_pin.digits().to_vec()).unwrap();
        for shape in [
            format!("\"{pin}\""),
            format!("={pin}"),
            format!(": {pin}"),
            format!("PIN {pin}"),
        ] {
            assert!(
                !logs.contains(&shape),
                "PIN of {index} in the logs as {shape:?}"
            );
        }
    }
    assert!(!logs.contains(TOKEN), "bearer token in the logs");
    assert!(!logs.contains(PEPPER), "pepper in the logs");
}
