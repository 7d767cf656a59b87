//! Harness of the end-to-end tests: a simulated SMSC whose handset population has a user model
//! fixed by the test, a gateway started in-process (`gateway::serve::start`) on a configuration
//! built in code and pointing at that SMSC, and a tiny HTTP/1.1 client for the north API.
//!
//! Data flow: a test picks MSISDNs with or without the applet (`has_applet` over the shared
//! seed), POSTs to the gateway, which binds to the SMSC; the SMSC hands MT to [`Recording`],
//! which logs them (so a test can count prompts) and forwards them to the population, and logs
//! the handsets' MO (so a test can replay a card's answer) unless their sender is muted.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gateway::config::GatewayConfig;
use gateway::serve::ServeHandle;
use gateway::subscribers::has_applet;
use load_tests::smsc::network::{HandsetNetwork, PopulationConfig};
use load_tests::smsc::{
    self, AccountConfig, MoMessage, MtMessage, MtOutcome, Network, SmscConfig, SmscHandle,
};
use serde_json::Value;
use sim_applet_model::handset::user::UserParams;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// What went through the network, for assertions.
#[derive(Default)]
pub struct Log {
    pub mt: Mutex<Vec<MtMessage>>,
    pub mo: Mutex<Vec<MoMessage>>,
    /// MO from these MSISDNs are dropped (a handset gone silent).
    pub muted: Mutex<HashSet<String>>,
    /// Counts MT, so a test can wait for one without sleeping.
    pub mt_seen: tokio::sync::watch::Sender<usize>,
}

impl Log {
    /// Prompts sent to `msisdn`: USSR requests (op 2) and SIM data downloads (PID 0x7F), a
    /// concatenated download counted once (by its first segment).
    pub fn prompts_to(&self, msisdn: &str) -> usize {
        self.mt
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.sm.destination.addr == msisdn)
            .filter(|m| {
                m.sm.ussd_service_op == Some(2)
                    || (m.sm.protocol_id == 0x7F && concat_segment(&m.sm) <= 1)
            })
            .count()
    }

    /// MO from `msisdn` seen so far (the muted ones included).
    pub fn mo_from(&self, msisdn: &str) -> Vec<MoMessage> {
        self.mo
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.sm.source.addr == msisdn)
            .cloned()
            .collect()
    }

    /// Waits until `msisdn` got at least `n` prompts.
    pub async fn wait_prompts(&self, msisdn: &str, n: usize) {
        let mut rx = self.mt_seen.subscribe();
        rx.wait_for(|_| self.prompts_to(msisdn) >= n).await.unwrap();
    }

    pub fn mute(&self, msisdn: &str) {
        self.muted.lock().unwrap().insert(msisdn.to_owned());
    }
}

/// Sequence number of a concatenated segment (UDH IE 0x00 or 0x08), 0 when not concatenated.
fn concat_segment(sm: &load_tests::smsc::SmFields) -> u8 {
    let ud = &sm.short_message;
    if sm.esm_class & 0x40 == 0 || ud.is_empty() {
        return 0;
    }
    let udh = &ud[1..ud.len().min(1 + usize::from(ud[0]))];
    let mut i = 0;
    while i + 1 < udh.len() {
        let (iei, len) = (udh[i], usize::from(udh[i + 1]));
        let ie = &udh[(i + 2).min(udh.len())..(i + 2 + len).min(udh.len())];
        match (iei, ie.len()) {
            (0x00, 3) => return ie[2],
            (0x08, 4) => return ie[3],
            _ => {}
        }
        i += 2 + len;
    }
    0
}

/// The population behind a recorder.
pub struct Recording {
    inner: HandsetNetwork,
    log: Arc<Log>,
}

impl Network for Recording {
    fn handle_mt(&mut self, now: Instant, mt: MtMessage) -> MtOutcome {
        self.log.mt.lock().unwrap().push(mt.clone());
        self.log.mt_seen.send_modify(|n| *n += 1);
        self.inner.handle_mt(now, mt)
    }

    fn poll_mo(&mut self, now: Instant) -> Option<MoMessage> {
        loop {
            let mo = self.inner.poll_mo(now)?;
            self.log.mo.lock().unwrap().push(mo.clone());
            if !self.log.muted.lock().unwrap().contains(&mo.sm.source.addr) {
                return Some(mo);
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.inner.poll_timeout()
    }
}

/// Starts an SMSC (account `gw`/`pw`) with the population under `user`.
pub async fn start_smsc(user: UserParams) -> (SmscHandle, Arc<Log>) {
    let population = PopulationConfig {
        size: SIZE,
        applet_share: SHARE,
        seed: SEED,
        msisdn_base: BASE,
        time_compression: COMPRESSION,
        user,
        ..PopulationConfig::default()
    };
    let log = Arc::new(Log::default());
    let network = Recording {
        inner: HandsetNetwork::new(population, tokio::time::Instant::now().into_std()).unwrap(),
        log: log.clone(),
    };
    let mut config = SmscConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        AccountConfig::new(SYSTEM_ID, PASSWORD),
    );
    // Shutdown waits this long for unbind_resp.
    config.response_timeout = Duration::from_millis(500);
    let smsc = smsc::start(config, Box::new(network)).await.unwrap();
    (smsc, log)
}

/// A gateway configuration for the SMSC at `smsc`: API and metrics on free ports, store in
/// `dir`, one operator with two binds, the registry generated like the population (`count`
/// subscribers; more than [`SIZE`] gives subscribers the network does not know).
pub fn gateway_config(smsc: SocketAddr, dir: &std::path::Path, count: u64) -> GatewayConfig {
    let pepper = dir.join("pepper");
    std::fs::write(&pepper, "end to end test pepper, long enough").unwrap();
    let text = format!(
        r#"
[api]
listen = "127.0.0.1:0"
[[api.clients]]
id = "e2e"
token = "{TOKEN}"
rate_limit_per_sec = 1000
rate_limit_burst = 1000

[[operators]]
name = "sim"
ranges = ["48600"]
dialect = "spec-default"
service_code = "*123#"
sms_source_address = "4800"
[[operators.binds]]
address = "{smsc}"
system_id = "{SYSTEM_ID}"
password = "{PASSWORD}"
[[operators.binds]]
address = "{smsc}"
system_id = "{SYSTEM_ID}"
password = "{PASSWORD}"

[subscribers]
pepper_file = "{pepper}"
[subscribers.generate]
seed = {SEED}
count = {count}
msisdn_base = {BASE}
applet_share = {SHARE}

[policy]
loa3_over_ussd = false
submit_timeout_secs = 2

[store]
path = "{store}"
"#,
        pepper = pepper.display(),
        store = dir.join("store.redb").display(),
    );
    GatewayConfig::from_toml(&text, &[]).unwrap()
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

/// One HTTP answer.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`), JSON body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Resp {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status: u16 = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Resp {
        status,
        headers,
        body: serde_json::from_str(body).unwrap_or(Value::Null),
    }
}

const BEARER: &str = "Bearer e2e-token";

/// POST /v1/authorizations with the test client's token.
pub async fn start_auth(api: SocketAddr, body: &Value, idempotency_key: Option<&str>) -> Resp {
    let mut headers = vec![("Authorization", BEARER)];
    if let Some(k) = idempotency_key {
        headers.push(("Idempotency-Key", k));
    }
    http(api, "POST", "/v1/authorizations", &headers, Some(body)).await
}

/// A start body.
pub fn auth_body(msisdn: &str, loa: u8, expiry_secs: u64) -> Value {
    serde_json::json!({
        "msisdn": msisdn,
        "loa": loa,
        "client_name": "Portal",
        "binding_message": "AB12",
        "expiry_secs": expiry_secs,
    })
}

/// Starts and expects 201; returns the id.
pub async fn start_ok(api: SocketAddr, msisdn: &str, loa: u8, expiry_secs: u64) -> String {
    let r = start_auth(api, &auth_body(msisdn, loa, expiry_secs), None).await;
    assert_eq!(r.status, 201, "start: {:?}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

/// GET with `wait` seconds of long-poll.
pub async fn get(api: SocketAddr, id: &str, wait: u64) -> Resp {
    http(
        api,
        "GET",
        &format!("/v1/authorizations/{id}?wait={wait}"),
        &[("Authorization", BEARER)],
        None,
    )
    .await
}

pub async fn cancel(api: SocketAddr, id: &str) -> Resp {
    http(
        api,
        "POST",
        &format!("/v1/authorizations/{id}/cancel"),
        &[("Authorization", BEARER)],
        None,
    )
    .await
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
