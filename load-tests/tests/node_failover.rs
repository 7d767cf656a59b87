//! A node dies, the other carries on: two gateway nodes on one Redis (a real `redis-server`
//! the test starts) and one simulated SMSC whose users answer about 6 s after a prompt. Node A
//! runs in a child process (this test binary re-executed) and is killed with SIGKILL while its
//! prompts are on the handsets; their answers then reach node B's binds only, and B ends every
//! one of them as the users chose, against the shared records. A restarted on the same node id
//! takes over nothing of B's, which is alive and prompting; in the end nothing is left in
//! flight in the store.
#![allow(clippy::unwrap_used)]

mod e2e_support;

use std::sync::Arc;
use std::time::Duration;

use e2e_support::start_gateway;
use gateway::config::GatewayConfig;
use gateway::store::{LocalRedis, RedisSettings, RedisStore, Store, StoreOptions};
use load_tests::harness::client::{start_body, ApiClient};
use load_tests::harness::config::GatewayConfigBuilder;
use load_tests::harness::network::{self, SmscSpec};
use load_tests::smsc::population::PopulationConfig;
use load_tests::smsc::AccountConfig;
use load_tests::surge::gateway_process::{serve_if_child, GatewayProcess, CONFIG_ENV};
use sim_applet_model::handset::population::has_applet;
use sim_applet_model::handset::user::UserParams;

const SEED: u64 = 21;
const SHARE: f64 = 0.5;
const BASE: u64 = 48_600_300_000;
const POPULATION: u32 = 64;
const TOKEN: &str = "failover-token";
const PREFIX: &str = "failover";

/// The re-executed binary's gateway (see the module docs); a no-op in a normal run.
#[test]
fn gateway_child() {
    if std::env::var_os(CONFIG_ENV).is_some() {
        let _ = serve_if_child();
    }
}

fn nth(applet: bool, n: usize) -> String {
    let i = (0..u64::from(POPULATION))
        .filter(|i| has_applet(SEED, *i, SHARE) == applet)
        .nth(n)
        .unwrap();
    (BASE + i).to_string()
}

fn builder(smsc: &str, dir: &std::path::Path, redis: &str, node: &str) -> GatewayConfigBuilder {
    let mut b = GatewayConfigBuilder::new(smsc, dir);
    b.system_id = "gw".into();
    b.password = "pw".into();
    b.binds = 1;
    b.token = TOKEN.into();
    b.seed = SEED;
    b.count = u64::from(POPULATION);
    b.msisdn_base = BASE;
    b.applet_share = SHARE;
    b.pepper = "failover test pepper, long enough".into();
    b.redis = Some((redis.to_owned(), PREFIX.into()));
    b.node_id = Some(node.into());
    b
}

async fn until_terminal(api: &ApiClient, id: &str) -> serde_json::Value {
    tokio::time::timeout(Duration::from_secs(40), api.until_terminal(id))
        .await
        .expect("ends within 40 s")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_prompts_are_ended_by_the_other_and_its_restart_takes_nothing_of_it() {
    if std::env::var_os(CONFIG_ENV).is_some() {
        return;
    }
    let redis_dir = tempfile::tempdir().unwrap();
    let redis = LocalRedis::start(redis_dir.path())
        .expect("this test needs redis-server (scripts/test.sh installs it)");
    // Users who always approve, about 6 s after the prompt, in real time.
    let user = UserParams {
        read_mean_ms: 3_500.0,
        decide_mean_ms: 2_500.0,
        sigma: 0.05,
        min_action_ms: 700,
        p_ignore: 0.0,
        p_deny: 0.0,
        p_wrong_pin: 0.0,
        ..UserParams::default()
    };
    let population = PopulationConfig {
        size: POPULATION,
        applet_share: SHARE,
        seed: SEED,
        msisdn_base: BASE,
        time_compression: 1.0,
        user,
        ..PopulationConfig::default()
    };
    let spec = SmscSpec {
        account: AccountConfig::new("gw", "pw"),
        response_timeout: Some(Duration::from_millis(500)),
        ..SmscSpec::new(population)
    };
    let (smsc, log) = network::start_smsc(spec).await.unwrap();
    let smsc_addr = smsc.local_addr().to_string();

    // Node A in a child process.
    let dir_a = tempfile::tempdir().unwrap();
    let mut a = builder(&smsc_addr, dir_a.path(), &redis.url(), "a");
    let metrics_a = load_tests::surge::gateway_process::free_loopback_addr().unwrap();
    a.metrics = true;
    a.metrics_listen = Some(metrics_a.to_string());
    a.build().unwrap();
    let config_a = dir_a.path().join("gateway.toml");
    std::fs::write(&config_a, a.toml()).unwrap();
    let me = std::env::current_exe().unwrap();
    let args = [
        "gateway_child",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ];
    let node_a = GatewayProcess::spawn_with_args(&me, &args, &config_a)
        .await
        .unwrap();
    // Node B in this process.
    let dir_b = tempfile::tempdir().unwrap();
    let config_b: GatewayConfig = builder(&smsc_addr, dir_b.path(), &redis.url(), "b")
        .build()
        .unwrap();
    let node_b = start_gateway(config_b).await;
    let api_a = ApiClient::new(node_a.api_addr, TOKEN);
    let api_b = ApiClient::new(node_b.api_addr, TOKEN);
    for api in [&api_a, &api_b] {
        for _ in 0..100 {
            if api
                .request(axum::http::Method::GET, "/readyz", &[], None)
                .await
                .unwrap()
                .status
                == 200
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Prompts from A, on the handsets when A dies.
    let mut from_a = Vec::new();
    for applet in [false, true] {
        for n in 0..3 {
            let msisdn = nth(applet, n);
            let r = api_a
                .start(&start_body(&msisdn, 2, 40), None)
                .await
                .unwrap();
            assert_eq!(r.status, 201, "{}", r.body);
            from_a.push((msisdn, r.body["id"].as_str().unwrap().to_owned()));
        }
    }
    for (msisdn, _) in &from_a {
        tokio::time::timeout(Duration::from_secs(5), log.wait_prompts(msisdn, 1))
            .await
            .expect("the prompt reaches the handset");
    }
    node_a.kill().await.unwrap();

    // B prompts too, and is alive with these in flight when A comes back.
    let mut from_b = Vec::new();
    for applet in [false, true] {
        let msisdn = nth(applet, 5);
        let r = api_b
            .start(&start_body(&msisdn, 2, 40), None)
            .await
            .unwrap();
        assert_eq!(r.status, 201, "{}", r.body);
        from_b.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let store = RedisStore::connect(
        &RedisSettings {
            url: redis.url(),
            ca_file: None,
            prefix: PREFIX.into(),
            response_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
        },
        StoreOptions::default(),
    )
    .await
    .unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let b_in_flight = store
        .list_in_flight()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.node.as_deref() == Some("b"))
        .count();
    assert_eq!(b_in_flight, from_b.len(), "B's prompts are in flight");
    let a_in_flight = store
        .list_in_flight()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.node.as_deref() == Some("a"))
        .count();

    // A comes back on the same node id while B's prompts are out.
    let node_a = GatewayProcess::spawn_with_args(&me, &args, &config_a)
        .await
        .unwrap();
    let api_a = ApiClient::new(node_a.api_addr, TOKEN);
    // It took over at most its own (some may have been answered on B meanwhile), none of B's.
    let resumed_on_a = metric(Some(metrics_a), "gateway_authorizations_resumed_total").await;
    assert!(
        resumed_on_a <= a_in_flight as f64,
        "A resumed {resumed_on_a} with only {a_in_flight} of its own in flight"
    );

    // Every prompt A sent ends as its user chose, whichever node took the answer; B's too.
    for (_, id) in &from_a {
        let view = until_terminal(&api_b, id).await;
        assert_eq!(view["status"], "approved", "{view}");
        let again = until_terminal(&api_a, id).await;
        assert_eq!(again["status"], view["status"]);
        assert_eq!(again["proof"], view["proof"]);
    }
    for id in &from_b {
        let view = until_terminal(&api_b, id).await;
        assert_eq!(view["status"], "approved", "{view}");
    }
    // Nothing is left in flight.
    assert!(store.list_in_flight().await.unwrap().is_empty());
    node_a.stop(Duration::from_secs(5)).await;
    node_b.shutdown().await;
    smsc.shutdown().await;
    drop(redis);
}

async fn metric(addr: Option<std::net::SocketAddr>, name: &str) -> f64 {
    let Some(addr) = addr else {
        return 0.0;
    };
    let client = load_tests::surge::target::http_client();
    let text = load_tests::surge::target::scrape(&client, &format!("http://{addr}/metrics"))
        .await
        .unwrap();
    load_tests::surge::target::metric_sum(&text, name).unwrap_or(0.0)
}
