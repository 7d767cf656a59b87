//! The end-to-end tests' view of the shared harness (`load_tests::harness`): a simulated SMSC
//! whose handset population has a user model fixed by the test, a gateway started in-process
//! (`gateway::serve::start`) on the harness's configuration pointing at that SMSC, and the
//! harness's API client, wrapped in the short helpers the tests read well with.
//!
//! Data flow: a test picks MSISDNs with or without the applet (`has_applet` over the shared
//! seed), POSTs to the gateway, which binds to the SMSC; the SMSC's network log records every
//! MT (so a test can count prompts) and every MO (so a test can replay a card's answer), and
//! drops the MO of muted handsets.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gateway::config::GatewayConfig;
use gateway::serve::ServeHandle;
use load_tests::harness::client::{start_body, ApiClient};
use load_tests::harness::config::GatewayConfigBuilder;
use load_tests::harness::network::{self, SmscSpec};
use load_tests::smsc::population::PopulationConfig;
use load_tests::smsc::{AccountConfig, SmscHandle};
use serde_json::Value;
use sim_applet_model::handset::population::has_applet;
use sim_applet_model::handset::user::UserParams;

pub use load_tests::harness::client::ApiResponse as Resp;
pub use load_tests::harness::network::NetworkLog as Log;

pub const SEED: u64 = 42;
pub const BASE: u64 = 48_600_000_000;
pub const SHARE: f64 = 0.5;
/// Handsets in the simulated network.
pub const SIZE: u32 = 64;
pub const TOKEN: &str = "e2e-token";
pub const SYSTEM_ID: &str = "gw";
pub const PASSWORD: &str = "pw";
/// Virtual ms per real ms: an 8 s think time takes 80 ms.
pub const COMPRESSION: f64 = 100.0;

/// MSISDN of handset `index`.
pub fn msisdn(index: u64) -> String {
    (BASE + index).to_string()
}

/// The `n`-th index (from 0) whose SIM carries the applet (`applet == true`) or not.
pub fn index_with(applet: bool, n: usize) -> u64 {
    (0..u64::from(SIZE))
        .filter(|i| has_applet(SEED, *i, SHARE) == applet)
        .nth(n)
        .expect("population too small for this test")
}

/// A user who always does the same thing, fast (compressed time).
pub fn user(p_ignore: f64, p_deny: f64, p_wrong_pin: f64) -> UserParams {
    UserParams {
        p_ignore,
        p_deny,
        p_wrong_pin,
        ..UserParams::default()
    }
}

/// Starts an SMSC (account `gw`/`pw`) with the population under `user`, recording.
pub async fn start_smsc(user: UserParams) -> (SmscHandle, Arc<Log>) {
    start_smsc_with(user, None).await
}

/// [`start_smsc`], with the SMSC's MO delivery attempts and the pause between them.
pub async fn start_smsc_with(
    user: UserParams,
    mo_retries: Option<(u32, Duration)>,
) -> (SmscHandle, Arc<Log>) {
    let population = PopulationConfig {
        size: SIZE,
        applet_share: SHARE,
        seed: SEED,
        msisdn_base: BASE,
        time_compression: COMPRESSION,
        user,
        ..PopulationConfig::default()
    };
    let spec = SmscSpec {
        account: AccountConfig::new(SYSTEM_ID, PASSWORD),
        // Shutdown waits this long for unbind_resp.
        response_timeout: Some(Duration::from_millis(500)),
        mo_retries,
        ..SmscSpec::new(population)
    };
    network::start_smsc(spec).await.unwrap()
}

/// A gateway configuration for the SMSC at `smsc`: API on a free port, store in `dir`, one
/// operator with two binds, the registry generated like the population (`count` subscribers;
/// more than [`SIZE`] gives subscribers the network does not know).
pub fn gateway_config(smsc: SocketAddr, dir: &std::path::Path, count: u64) -> GatewayConfig {
    let mut b = GatewayConfigBuilder::new(smsc.to_string(), dir);
    b.system_id = SYSTEM_ID.into();
    b.password = PASSWORD.into();
    b.binds = 2;
    b.client_id = "e2e".into();
    b.token = TOKEN.into();
    b.seed = SEED;
    b.count = count;
    b.msisdn_base = BASE;
    b.applet_share = SHARE;
    b.submit_timeout_secs = Some(2);
    b.pepper = "end to end test pepper, long enough".into();
    b.build().unwrap()
}

/// Starts the gateway; its shutdown drains for a short time only.
pub async fn start_gateway(config: GatewayConfig) -> ServeHandle {
    let mut handle = gateway::serve::start(config).await.unwrap();
    handle.drain = Duration::from_millis(300);
    handle
}

/// Everything one test runs on.
pub struct Env {
    pub smsc: SmscHandle,
    pub log: Arc<Log>,
    pub gw: ServeHandle,
    pub api: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Env {
    /// SMSC with `user`, gateway with the default configuration changed by `tweak`.
    pub async fn start(user: UserParams, tweak: impl FnOnce(&mut GatewayConfig)) -> Env {
        let (smsc, log) = start_smsc(user).await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = gateway_config(smsc.local_addr(), dir.path(), u64::from(SIZE));
        tweak(&mut config);
        let gw = start_gateway(config).await;
        let api = gw.api_addr;
        Env {
            smsc,
            log,
            gw,
            api,
            dir,
        }
    }

    pub async fn stop(self) {
        self.gw.shutdown().await;
        self.smsc.shutdown().await;
    }
}

fn client(api: SocketAddr) -> ApiClient {
    ApiClient::new(api, TOKEN)
}

/// One request with the test client's token (and any `headers` after it); JSON body.
pub async fn http(
    api: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Resp {
    let method = axum::http::Method::from_bytes(method.as_bytes()).unwrap();
    client(api)
        .request(method, path, headers, body)
        .await
        .unwrap()
}

/// POST /v1/authorizations with the test client's token.
pub async fn start_auth(api: SocketAddr, body: &Value, idempotency_key: Option<&str>) -> Resp {
    client(api).start(body, idempotency_key).await.unwrap()
}

/// A start body.
pub fn auth_body(msisdn: &str, loa: u8, expiry_secs: u64) -> Value {
    start_body(msisdn, loa, expiry_secs)
}

/// Starts and expects 201; returns the id.
pub async fn start_ok(api: SocketAddr, msisdn: &str, loa: u8, expiry_secs: u64) -> String {
    let r = start_auth(api, &auth_body(msisdn, loa, expiry_secs), None).await;
    assert_eq!(r.status, 201, "start: {:?}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

/// GET with `wait` seconds of long-poll.
pub async fn get(api: SocketAddr, id: &str, wait: u64) -> Resp {
    client(api)
        .get(id, Duration::from_secs(wait))
        .await
        .unwrap()
}

pub async fn cancel(api: SocketAddr, id: &str) -> Resp {
    client(api).cancel(id).await.unwrap()
}

/// Long-polls until the authorization is terminal (the caller's deadline bounds it).
pub async fn terminal(api: SocketAddr, id: &str) -> Value {
    loop {
        let r = get(api, id, 30).await;
        assert_eq!(r.status, 200, "get: {:?}", r.body);
        if r.body["state"] == "terminal" {
            return r.body;
        }
    }
}

/// Runs `f` with a deadline; a test that hits it has failed.
pub async fn within<T>(secs: u64, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {secs} s"))
}

/// A file of the gateway's TEST-ONLY Keycloak realm fixtures.
pub fn keycloak_fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../gateway/tests/fixtures/keycloak")
        .join(name)
}

/// A bearer token as Keycloak's `HttpAuthenticationChannelProvider` makes it, signed with the
/// TEST realm key of the gateway's fixtures, valid for 2 minutes.
pub fn keycloak_token(realm: &str, jti: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "typ": "Bearer",
        "iss": realm,
        "aud": realm,
        "azp": "portal",
        "jti": jti,
        "sub": "5b1c0e9e-user-id",
        "exp": now + 120,
    });
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(
        &std::fs::read(keycloak_fixture("realm-rsa.key.pem")).unwrap(),
    )
    .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}
