//! `kill -9` of a whole gateway process, and what its restart on the same store does with what
//! was under way: prompts on the handsets (USSD and the SIM applet) are answered after the
//! restart and end as the users chose; endings whose callbacks (native and Keycloak) had not
//! gone out when the process died are called back after the restart, with the status `GET`
//! returns and a stable event id.
//!
//! The test binary re-executes itself: with `RESTART_GATEWAY_CONFIG` set, the
//! `gateway_process` test becomes the gateway (`gateway::serve::start` on that configuration
//! file), prints `API <addr>` and waits, bounded; without it that test does nothing. The parent
//! runs the simulated SMSC and a callback receiver in-process, starts authorizations through
//! the gateway's API, SIGKILLs the gateway while the users are still reading their prompts,
//! starts it again on the same store, and checks. It runs twice: on the redb store and on the
//! journal.

#![allow(clippy::unwrap_used)]

mod e2e_support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use e2e_support::*;
use gateway::config::GatewayConfig;
use load_tests::harness::client::{start_body, ApiClient};
use load_tests::harness::config::GatewayConfigBuilder;
use load_tests::harness::network::{self, SmscSpec};
use load_tests::smsc::population::PopulationConfig;
use load_tests::smsc::AccountConfig;
use serde_json::{json, Value};
use sim_applet_model::handset::user::UserParams;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const CONFIG_ENV: &str = "RESTART_GATEWAY_CONFIG";
/// The gateway process ends by itself after this, so a failed parent leaves nothing behind.
const PROCESS_LIFETIME: Duration = Duration::from_secs(90);
/// The API client owns the native authorizations and, by sharing Keycloak's client id, can
/// cancel Keycloak's too.
const CLIENT: &str = "keycloak";
/// Prompts per channel on the handsets at the kill; `RESTART_SIGKILL_PROMPTS` raises it for a
/// measurement (150: the 300 of the trial).
fn prompts_per_channel() -> usize {
    std::env::var("RESTART_SIGKILL_PROMPTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}

/// The `n`-th index (from 0) of a population of `size` whose SIM has the applet, or not.
fn index_in(size: u32, applet: bool, n: usize) -> u64 {
    (0..u64::from(size))
        .filter(|i| sim_applet_model::handset::population::has_applet(SEED, *i, SHARE) == applet)
        .nth(n)
        .expect("population too small")
}

#[test]
fn gateway_process() {
    let Ok(path) = std::env::var(CONFIG_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let text = std::fs::read_to_string(&path).unwrap();
        let config = GatewayConfig::from_toml(&text, &[]).unwrap();
        let handle = gateway::serve::start(config).await.unwrap();
        println!("API {}", handle.api_addr);
        tokio::time::sleep(PROCESS_LIFETIME).await;
    });
}

/// One gateway process; killed with SIGKILL when dropped.
struct GatewayProcess {
    child: Child,
    api: SocketAddr,
}

impl GatewayProcess {
    async fn start(config: &Path) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "gateway_process",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CONFIG_ENV, config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let api = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                // libtest's "test gateway_process ... " precedes it on the same line.
                if let Some((_, addr)) = line.split_once("API ") {
                    return addr.trim().parse::<SocketAddr>().unwrap();
                }
            }
            panic!("the gateway process ended before serving");
        })
        .await
        .expect("the gateway process serves within 30 s");
        // Keep draining its stdout so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, api }
    }

    /// SIGKILL: no shutdown, no flush, nothing published on the way out.
    async fn kill(mut self) {
        self.child.start_kill().unwrap();
        let status = self.child.wait().await.unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(9), "{status}");
        }
    }
}

/// One callback received: path, event id, authorization header, body.
type Call = (String, String, String, Value);

/// Callbacks received. Answers 503 until `accepting` is set.
#[derive(Clone, Default)]
struct Receiver {
    accepting: Arc<AtomicBool>,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Receiver {
    fn accepted(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

async fn receive(
    State(r): State<Receiver>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if !r.accepting.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    r.calls.lock().unwrap().push((
        uri.path().to_owned(),
        header("event-id"),
        header("authorization"),
        body,
    ));
    StatusCode::OK
}

async fn keycloak_request(api: SocketAddr, token: &str, msisdn: &str) -> String {
    let body = json!({ "login_hint": msisdn });
    let (status, body) = post_with_bearer(api, "/keycloak/ciba", token, body).await;
    assert_eq!(status, 201, "{body}");
    body["authorization_id"].as_str().unwrap().to_owned()
}

/// A POST with a bearer token over a fresh hyper connection.
async fn post_with_bearer(api: SocketAddr, path: &str, token: &str, body: Value) -> (u16, Value) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = axum::http::Request::post(format!("http://{api}{path}"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_on_handsets_and_callbacks_owed_survive_sigkill_of_the_gateway() {
    survives_sigkill(false).await;
}

/// The same with the journal store (`[store] backend = "journal"`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_and_callbacks_survive_sigkill_of_a_gateway_on_the_journal() {
    survives_sigkill(true).await;
}

async fn survives_sigkill(journal: bool) {
    if std::env::var_os(CONFIG_ENV).is_some() {
        return;
    }
    // Users who always approve, about 6 s after the prompt, in real time: the gateway is
    // killed and back long before they answer.
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
    let per_channel = prompts_per_channel();
    // Room for every prompt and the two extra authorizations on each channel.
    let size = SIZE.max(u32::try_from(4 * per_channel + 16).unwrap());
    let population = PopulationConfig {
        size,
        applet_share: SHARE,
        seed: SEED,
        msisdn_base: BASE,
        time_compression: 1.0,
        user,
        ..PopulationConfig::default()
    };
    let spec = SmscSpec {
        account: AccountConfig::new(SYSTEM_ID, PASSWORD),
        response_timeout: Some(Duration::from_millis(500)),
        ..SmscSpec::new(population)
    };
    let (smsc, log) = network::start_smsc(spec).await.unwrap();

    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver_addr = listener.local_addr().unwrap();
    let app = Router::new()
        .fallback(post(receive))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let realm = format!("http://{receiver_addr}/realms/test");

    let dir = tempfile::tempdir().unwrap();
    let mut b = GatewayConfigBuilder::new(smsc.local_addr().to_string(), dir.path());
    b.system_id = SYSTEM_ID.into();
    b.password = PASSWORD.into();
    b.binds = 2;
    b.client_id = CLIENT.into();
    b.token = TOKEN.into();
    b.seed = SEED;
    b.count = u64::from(size);
    b.msisdn_base = BASE;
    b.applet_share = SHARE;
    b.pepper = "end to end test pepper, long enough".into();
    b.journal = journal;
    b.build().unwrap();
    let toml = format!(
        "{}[keycloak]\nrealm_url = \"{realm}\"\naudience = \"{realm}\"\njwks_file = \"{}\"\nusernames_are_msisdn = true\n",
        b.toml(),
        keycloak_fixture("realm.jwks.json").display()
    );
    let config_path = dir.path().join("gateway.toml");
    std::fs::write(&config_path, toml).unwrap();

    let first = GatewayProcess::start(&config_path).await;
    let api = ApiClient::new(first.api, TOKEN);

    // Prompts that will be on the handsets when the gateway dies.
    let mut prompted = Vec::new();
    for applet in [false, true] {
        for n in 0..per_channel {
            let msisdn = msisdn(index_in(size, applet, n));
            let mut body = start_body(&msisdn, 2, 60);
            body["callback_url"] = json!(format!("http://{receiver_addr}/cb"));
            let r = api.start(&body, None).await.unwrap();
            assert_eq!(r.status, 201, "{}", r.body);
            prompted.push((msisdn, r.body["id"].as_str().unwrap().to_owned()));
        }
    }
    // Endings whose callbacks cannot go out before the kill (the receiver answers 503).
    let cancelled_msisdn = msisdn(index_in(size, false, per_channel));
    let mut body = start_body(&cancelled_msisdn, 2, 60);
    body["callback_url"] = json!(format!("http://{receiver_addr}/cb"));
    let native = api.start(&body, None).await.unwrap().body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = keycloak_token(&realm, "jti-restart");
    let keycloak_msisdn = msisdn(index_in(size, true, per_channel));
    let keycloak = keycloak_request(first.api, &token, &keycloak_msisdn).await;
    for id in [&native, &keycloak] {
        assert_eq!(api.cancel(id).await.unwrap().body["status"], "cancelled");
    }
    // Every prompt is on its handset (the SMSC took it) before the kill.
    for (msisdn, _) in &prompted {
        tokio::time::timeout(Duration::from_secs(5), log.wait_prompts(msisdn, 1))
            .await
            .expect("the prompt reaches the handset");
    }
    for (_, id) in &prompted {
        let view = api.get(id, Duration::ZERO).await.unwrap().body;
        assert_eq!(view["state"], "pending", "{view}");
    }
    // Let the Keycloak callback's earliest time pass, so it is being refused too.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert!(receiver.accepted().is_empty());
    first.kill().await;

    receiver.accepting.store(true, Ordering::SeqCst);
    let second = GatewayProcess::start(&config_path).await;
    let api = ApiClient::new(second.api, TOKEN);

    // The prompts answered after the restart end as the users chose.
    let mut status_of = HashMap::new();
    for (_, id) in &prompted {
        let view = tokio::time::timeout(Duration::from_secs(40), api.until_terminal(id))
            .await
            .expect("ends within 40 s")
            .unwrap();
        assert_eq!(
            (view["status"].as_str(), view["reason"].as_str()),
            (Some("approved"), Some("user_approved")),
            "{view}"
        );
        status_of.insert(id.clone(), "approved".to_owned());
    }
    status_of.insert(native.clone(), "cancelled".to_owned());

    // Every native callback arrives with GET's status and its stable event id; Keycloak's too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let calls = receiver.accepted();
        let native_ids: std::collections::BTreeSet<&str> = calls
            .iter()
            .filter(|c| c.0 == "/cb")
            .map(|c| c.3["id"].as_str().unwrap_or(""))
            .collect();
        let keycloak_done = calls.iter().any(|c| c.0.ends_with("/ciba/auth/callback"));
        if native_ids.len() == status_of.len() && keycloak_done {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "callbacks after the restart: {calls:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (path, event_id, auth, body) in receiver.accepted() {
        if path == "/cb" {
            let id = body["id"].as_str().unwrap();
            assert_eq!(event_id, format!("{id}:callback"));
            assert_eq!(body["event_id"], event_id.as_str());
            assert_eq!(body["status"], status_of[id].as_str(), "{body}");
            let now = api.get(id, Duration::ZERO).await.unwrap().body;
            assert_eq!(now["status"], body["status"]);
        } else {
            assert_eq!(event_id, format!("{keycloak}:keycloak"));
            assert_eq!(auth, format!("Bearer {token}"));
            assert_eq!(body, json!({ "status": "CANCELLED" }));
        }
    }
    second.kill().await;
    smsc.shutdown().await;
}
