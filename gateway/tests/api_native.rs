//! The native north API over real HTTP on loopback, in front of a fake
//! [`AuthorizationService`]: status codes, headers and JSON bodies of every outcome.
//!
//! The client is a small HTTP/1.1 writer over `TcpStream` (one request per connection,
//! `Connection: close`), so the tests see exactly the bytes the gateway sends. The rate
//! limiter's clock is frozen, so its refusals do not depend on the machine's speed.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use gateway::api::{self, ApiOptions, ApiState, ClientCredential};
use gateway::authorization::service::{
    AuthorizationService, AuthorizationState, AuthorizationView, ChannelKind, Loa, LookupError,
    PendingState, Readiness, StartError, StartRequest, TerminalStatus,
};
use gateway::config::Secret;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

const TOKEN: &str = "rp-token-0123456789";
const LIMITED_TOKEN: &str = "limited-token-abcdef";

/// MSISDNs for which the fake refuses the start, and how.
const BUSY: &str = "48600000409";
const OVERLOADED: &str = "48600000503";
const SERVICE_RATE_LIMITED: &str = "48600000429";

#[derive(Default)]
struct FakeInner {
    views: HashMap<String, (String, AuthorizationView)>,
    by_key: HashMap<(String, String), String>,
    starts: Vec<StartRequest>,
    waits: Vec<Duration>,
    next: u64,
}

/// Keeps authorizations in a map; a test ends them with [`Fake::complete`].
struct Fake {
    inner: Mutex<FakeInner>,
    changed: watch::Sender<u64>,
    waiter_entered: Notify,
    ready: bool,
}

impl Fake {
    fn new(ready: bool) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(FakeInner::default()),
            changed: watch::channel(0).0,
            waiter_entered: Notify::new(),
            ready,
        })
    }

    fn end(&self, id: &str, status: TerminalStatus, reason: &str) {
        let mut inner = self.inner.lock().unwrap();
        let (_, view) = inner.views.get_mut(id).unwrap();
        view.state = AuthorizationState::Terminal {
            status,
            reason: reason.into(),
        };
        if status == TerminalStatus::Approved {
            view.loa_achieved = Some(view.loa_requested);
            view.channel = Some(ChannelKind::Stk);
            view.proof = Some("00112233aabbccdd".into());
        }
        view.completed_at_ms = Some(view.created_at_ms + 4200);
        drop(inner);
        self.changed.send_modify(|v| *v += 1);
    }

    fn lookup(&self, client_id: &str, id: &str) -> Result<AuthorizationView, LookupError> {
        let inner = self.inner.lock().unwrap();
        match inner.views.get(id) {
            Some((owner, view)) if owner == client_id => Ok(view.clone()),
            _ => Err(LookupError::NotFound),
        }
    }
}

impl AuthorizationService for Fake {
    fn start(&self, req: StartRequest) -> BoxFuture<'_, Result<AuthorizationView, StartError>> {
        async move {
            match req.msisdn.as_str() {
                BUSY => return Err(StartError::AlreadyInProgress),
                OVERLOADED => {
                    return Err(StartError::Overloaded {
                        retry_after: Duration::from_secs(2),
                    })
                }
                SERVICE_RATE_LIMITED => {
                    return Err(StartError::RateLimited {
                        retry_after: Duration::from_millis(2500),
                    })
                }
                _ => {}
            }
            let mut inner = self.inner.lock().unwrap();
            inner.starts.push(req.clone());
            if let Some(key) = &req.idempotency_key {
                if let Some(id) = inner.by_key.get(&(req.client_id.clone(), key.clone())) {
                    return Ok(inner.views[id].1.clone());
                }
            }
            inner.next += 1;
            let id = format!("auth-{}", inner.next);
            let view = AuthorizationView {
                id: id.clone(),
                state: AuthorizationState::Pending {
                    step: PendingState::Created,
                },
                loa_requested: req.loa,
                loa_achieved: None,
                channel: None,
                operator: None,
                created_at_ms: 1_700_000_000_000,
                completed_at_ms: None,
                gateway_ms: None,
                proof: None,
            };
            if let Some(key) = &req.idempotency_key {
                inner
                    .by_key
                    .insert((req.client_id.clone(), key.clone()), id.clone());
            }
            inner
                .views
                .insert(id, (req.client_id.clone(), view.clone()));
            Ok(view)
        }
        .boxed()
    }

    fn get(
        &self,
        client_id: &str,
        id: &str,
        wait: Option<Duration>,
    ) -> BoxFuture<'_, Result<AuthorizationView, LookupError>> {
        let (client_id, id) = (client_id.to_owned(), id.to_owned());
        async move {
            let mut rx = self.changed.subscribe();
            let view = self.lookup(&client_id, &id)?;
            let Some(wait) = wait else { return Ok(view) };
            self.inner.lock().unwrap().waits.push(wait);
            self.waiter_entered.notify_one();
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                let view = self.lookup(&client_id, &id)?;
                if matches!(view.state, AuthorizationState::Terminal { .. }) {
                    return Ok(view);
                }
                if tokio::time::timeout_at(deadline, rx.changed())
                    .await
                    .is_err()
                {
                    return Ok(view);
                }
            }
        }
        .boxed()
    }

    fn cancel(
        &self,
        client_id: &str,
        id: &str,
    ) -> BoxFuture<'_, Result<AuthorizationView, LookupError>> {
        let result = self.lookup(client_id, id).map(|view| {
            if matches!(view.state, AuthorizationState::Pending { .. }) {
                self.end(id, TerminalStatus::Cancelled, "cancelled_by_client");
            }
        });
        let after = result.and_then(|()| self.lookup(client_id, id));
        async move { after }.boxed()
    }

    fn readiness(&self) -> Readiness {
        Readiness {
            ready: self.ready,
            binds_up: vec![("op-a".into(), usize::from(self.ready), 1)],
            store_ok: true,
        }
    }
}

struct Server {
    addr: SocketAddr,
    fake: Arc<Fake>,
}

async fn server_with(ready: bool) -> Server {
    let fake = Fake::new(ready);
    let options = ApiOptions {
        clients: vec![
            ClientCredential {
                id: "rp".into(),
                token: Secret::new(TOKEN),
                rate_per_sec: 1,
                burst: 1000,
                callback_allow: vec!["https://rp.example/cb".into()],
            },
            ClientCredential {
                id: "limited".into(),
                token: Secret::new(LIMITED_TOKEN),
                rate_per_sec: 1,
                burst: 2,
                callback_allow: vec!["rp.example".into()],
            },
        ],
        ..ApiOptions::default()
    };
    let frozen = Instant::now();
    let state = ApiState::with_clock(fake.clone(), options, Arc::new(move || frozen));
    let app = api::router(state, None);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server { addr, fake }
}

async fn server() -> Server {
    server_with(true).await
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// An error answer: JSON body with its code, and the code returned.
    fn error_code(&self) -> String {
        let body = self.json();
        assert!(body["message"].is_string(), "{body}");
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{body}"
        );
        body["error"].as_str().unwrap().to_owned()
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_text = std::str::from_utf8(&raw[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        raw = &raw[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Resp {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    // The server may answer (413, 401) and close before reading all of a body; what it sent
    // is read all the same.
    let _ = stream.write_all(&bytes).await;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if raw.is_empty() => panic!("no answer: {e}"),
            Err(_) => break,
        }
    }
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

const AUTH: (&str, &str) = ("Authorization", "Bearer rp-token-0123456789");
const JSON_CT: (&str, &str) = ("Content-Type", "application/json");

async fn start(s: &Server, body: Value, extra: &[(&str, &str)]) -> Resp {
    let mut headers = vec![AUTH, JSON_CT];
    headers.extend_from_slice(extra);
    let body = body.to_string();
    request(
        s.addr,
        "POST",
        "/v1/authorizations",
        &headers,
        Some(body.as_bytes()),
    )
    .await
}

fn good_body() -> Value {
    json!({
        "msisdn": "+48600100200",
        "loa": 3,
        "client_name": "Example Bank",
        "consent_text": "Log in to Example Bank?",
        "binding_message": "K7Q2",
        "expiry_secs": 90,
        "callback_url": "https://rp.example/cb"
    })
}

#[tokio::test]
async fn a_callback_outside_the_clients_allow_list_or_over_plain_http_is_refused_before_anything_starts(
) {
    let s = server().await;
    for (url, code) in [
        // Internal addresses an authenticated client might aim the gateway at.
        (
            "https://169.254.169.254/latest/meta-data",
            "callback_not_allowed",
        ),
        ("https://rp.example.evil/cb", "callback_not_allowed"),
        ("https://rp.example/admin", "callback_not_allowed"),
        // The right place, but in clear: refused without `[outbound] allow_http`.
        ("http://rp.example/cb", "invalid_callback_url"),
    ] {
        let mut body = good_body();
        body["callback_url"] = json!(url);
        let r = start(&s, body, &[]).await;
        assert_eq!(r.status, 400, "{url}");
        assert_eq!(r.json()["error"], code, "{url}");
    }
    assert!(
        s.fake.inner.lock().unwrap().starts.is_empty(),
        "a refused callback target must not start an authorization"
    );
    let r = start(&s, good_body(), &[]).await;
    assert_eq!(r.status, 201, "the allowed target is accepted");
}

#[tokio::test]
async fn start_answers_201_with_location_and_the_view() {
    let s = server().await;
    let r = start(&s, good_body(), &[]).await;
    assert_eq!(r.status, 201);
    let view = r.json();
    let id = view["id"].as_str().unwrap();
    assert_eq!(
        r.header("location"),
        Some(format!("/v1/authorizations/{id}").as_str())
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(view["state"], "pending");
    assert_eq!(view["step"], "created");
    assert_eq!(view["loa_requested"], "3");

    let inner = s.fake.inner.lock().unwrap();
    let req = &inner.starts[0];
    assert_eq!(req.client_id, "rp");
    assert_eq!(req.msisdn, "48600100200");
    assert_eq!(req.loa, Loa::Loa3);
    assert_eq!(req.client_name, "Example Bank");
    assert_eq!(req.binding_message.as_deref(), Some("K7Q2"));
    assert_eq!(req.expiry, Duration::from_secs(90));
    assert_eq!(req.callback_url.as_deref(), Some("https://rp.example/cb"));
    assert_eq!(req.idempotency_key, None);
}

#[tokio::test]
async fn a_repeated_idempotency_key_returns_the_same_authorization_with_200() {
    let s = server().await;
    let key = ("Idempotency-Key", "order-4711");
    let first = start(&s, good_body(), &[key]).await;
    let again = start(&s, good_body(), &[key]).await;
    let other = start(&s, good_body(), &[("Idempotency-Key", "order-4712")]).await;
    assert_eq!(first.status, 201);
    assert_eq!(again.status, 200);
    assert_eq!(other.status, 201);
    assert_eq!(first.json()["id"], again.json()["id"]);
    assert_ne!(first.json()["id"], other.json()["id"]);
    assert_eq!(
        s.fake.inner.lock().unwrap().starts[0]
            .idempotency_key
            .as_deref(),
        Some("order-4711")
    );
}

#[tokio::test]
async fn login_hint_is_accepted_instead_of_msisdn() {
    let s = server().await;
    let body = json!({"login_hint": "MSISDN:48600100200", "loa": "2", "client_name": "Shop"});
    let r = start(&s, body, &[]).await;
    assert_eq!(r.status, 201);
    let inner = s.fake.inner.lock().unwrap();
    assert_eq!(inner.starts[0].msisdn, "48600100200");
    assert_eq!(inner.starts[0].loa, Loa::Loa2);
    assert_eq!(inner.starts[0].consent_text, "Log in to Shop?");
    assert_eq!(inner.starts[0].expiry, Duration::from_secs(120));
}

#[tokio::test]
async fn get_long_polls_until_the_authorization_ends() {
    let s = server().await;
    let id = start(&s, good_body(), &[]).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let now = request(
        s.addr,
        "GET",
        &format!("/v1/authorizations/{id}"),
        &[AUTH],
        None,
    )
    .await;
    assert_eq!(now.status, 200);
    assert_eq!(now.json()["state"], "pending");

    let addr = s.addr;
    let path = format!("/v1/authorizations/{id}?wait=30");
    let poll = tokio::spawn(async move { request(addr, "GET", &path, &[AUTH], None).await });
    s.fake.waiter_entered.notified().await;
    s.fake.end(&id, TerminalStatus::Approved, "user_approved");
    let r = poll.await.unwrap();
    assert_eq!(r.status, 200);
    let view = r.json();
    assert_eq!(view["state"], "terminal");
    assert_eq!(view["status"], "approved");
    assert_eq!(view["reason"], "user_approved");
    assert_eq!(view["loa_achieved"], "3");
    assert_eq!(view["channel"], "stk");
    assert_eq!(view["proof"], "00112233aabbccdd");
    assert_eq!(
        s.fake.inner.lock().unwrap().waits,
        vec![Duration::from_secs(30)]
    );
}

#[tokio::test]
async fn wait_above_the_cap_is_lowered_and_a_bad_wait_is_400() {
    let s = server().await;
    let id = start(&s, good_body(), &[]).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.fake.end(&id, TerminalStatus::Denied, "user_cancelled");
    let r = request(
        s.addr,
        "GET",
        &format!("/v1/authorizations/{id}?wait=3600"),
        &[AUTH],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "denied");
    assert_eq!(
        s.fake.inner.lock().unwrap().waits,
        vec![Duration::from_secs(60)]
    );

    let r = request(
        s.addr,
        "GET",
        &format!("/v1/authorizations/{id}?wait=soon"),
        &[AUTH],
        None,
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "invalid_wait");
}

#[tokio::test]
async fn cancel_ends_a_pending_authorization() {
    let s = server().await;
    let id = start(&s, good_body(), &[]).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = request(
        s.addr,
        "POST",
        &format!("/v1/authorizations/{id}/cancel"),
        &[AUTH],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "cancelled");
    assert_eq!(r.json()["reason"], "cancelled_by_client");
}

#[tokio::test]
async fn an_unknown_or_foreign_id_is_404() {
    let s = server().await;
    let id = start(&s, good_body(), &[]).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = ("Authorization", "Bearer limited-token-abcdef");
    let r = request(
        s.addr,
        "GET",
        &format!("/v1/authorizations/{id}"),
        &[other],
        None,
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "not_found");
    let r = request(
        s.addr,
        "POST",
        "/v1/authorizations/nope/cancel",
        &[AUTH],
        None,
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "not_found");
}

#[tokio::test]
async fn missing_or_wrong_bearer_is_401_with_a_challenge() {
    let s = server().await;
    let body = good_body().to_string();
    // docs/api.md and RFC 6750 §3.1: `WWW-Authenticate: Bearer`, with `error="invalid_token"`
    // only when a bearer token was presented (a credential of another scheme gets none).
    let invalid = r#"Bearer error="invalid_token""#;
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[JSON_CT], "Bearer"),
        (
            &[JSON_CT, ("Authorization", "Bearer rp-token-012345678")],
            invalid,
        ),
        (
            &[JSON_CT, ("Authorization", "Basic cnA6cnAtdG9rZW4=")],
            "Bearer",
        ),
        (
            &[JSON_CT, ("Authorization", "Bearer rp-token-0123456789x")],
            invalid,
        ),
    ];
    for (headers, challenge) in cases {
        let r = request(
            s.addr,
            "POST",
            "/v1/authorizations",
            headers,
            Some(body.as_bytes()),
        )
        .await;
        assert_eq!(r.status, 401, "{headers:?}");
        assert_eq!(r.header("www-authenticate"), Some(challenge), "{headers:?}");
        assert_eq!(r.error_code(), "unauthorized");
        assert!(!String::from_utf8_lossy(&r.body).contains("rp-token"));
    }
    let r = request(s.addr, "GET", "/v1/authorizations/auth-1", &[], None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(r.error_code(), "unauthorized");
    assert!(s.fake.inner.lock().unwrap().starts.is_empty());
}

#[tokio::test]
async fn each_invalid_start_is_400_with_its_code() {
    let s = server().await;
    let raw = |text: &'static str| text;
    let cases: Vec<(String, &str)> = vec![
        (raw("{\"msisdn\": ").into(), "invalid_json"),
        (raw("not json").into(), "invalid_json"),
        (json!({"loa": 2, "client_name": "B"}).to_string(), "missing_field"),
        (json!({"msisdn": "48600100200", "client_name": "B"}).to_string(), "missing_field"),
        (json!({"msisdn": 48600100200u64, "loa": 2, "client_name": "B"}).to_string(), "wrong_type"),
        (json!({"msisdn": "48600100200", "loa": 2, "client_name": ["B"]}).to_string(), "wrong_type"),
        (json!({"msisdn": "48600100200", "loa": 2, "client_name": "B", "scope": "openid"}).to_string(), "unknown_field"),
        (json!({"msisdn": "+0048600", "loa": 2, "client_name": "B"}).to_string(), "invalid_msisdn"),
        (json!({"login_hint": "EMAIL:a@b.c", "loa": 2, "client_name": "B"}).to_string(), "invalid_login_hint"),
        (json!({"msisdn": "48600100200", "loa": 1, "client_name": "B"}).to_string(), "invalid_loa"),
        (json!({"msisdn": "48600100200", "loa": 2, "client_name": "B", "expiry_secs": 1}).to_string(), "invalid_expiry"),
        (json!({"msisdn": "48600100200", "loa": 2, "client_name": "B", "expiry_secs": 86400}).to_string(), "invalid_expiry"),
        (json!({"msisdn": "48600100200", "loa": 2, "client_name": "B", "callback_url": "javascript:x"}).to_string(), "invalid_callback_url"),
    ];
    for (body, code) in cases {
        let r = request(
            s.addr,
            "POST",
            "/v1/authorizations",
            &[AUTH, JSON_CT],
            Some(body.as_bytes()),
        )
        .await;
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.error_code(), code, "{body}");
    }
    let r = start(&s, good_body(), &[("Idempotency-Key", "")]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "invalid_idempotency_key");
    assert!(s.fake.inner.lock().unwrap().starts.is_empty());
}

#[tokio::test]
async fn a_body_that_is_not_declared_json_is_415() {
    let s = server().await;
    let body = good_body().to_string();
    let r = request(
        s.addr,
        "POST",
        "/v1/authorizations",
        &[AUTH, ("Content-Type", "text/plain")],
        Some(body.as_bytes()),
    )
    .await;
    assert_eq!(r.status, 415);
    assert_eq!(r.error_code(), "unsupported_media_type");
}

#[tokio::test]
async fn a_body_over_16_kib_is_413() {
    let s = server().await;
    let mut body = good_body();
    body["consent_text"] = Value::String("x".repeat(17 * 1024));
    let body = body.to_string();
    let r = request(
        s.addr,
        "POST",
        "/v1/authorizations",
        &[AUTH, JSON_CT],
        Some(body.as_bytes()),
    )
    .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.error_code(), "body_too_large");
}

#[tokio::test]
async fn service_refusals_map_to_409_429_503_with_retry_after() {
    let s = server().await;
    let with = |msisdn: &str| {
        let mut b = good_body();
        b["msisdn"] = Value::String(msisdn.into());
        b
    };
    let r = start(&s, with(BUSY), &[]).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.error_code(), "already_in_progress");

    let r = start(&s, with(OVERLOADED), &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("2"));
    assert_eq!(r.error_code(), "overloaded");

    let r = start(&s, with(SERVICE_RATE_LIMITED), &[]).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("3"));
    assert_eq!(r.error_code(), "rate_limited");
}

#[tokio::test]
async fn a_client_over_its_rate_gets_429_and_others_do_not() {
    let s = server().await;
    let limited = ("Authorization", "Bearer limited-token-abcdef");
    let body = good_body().to_string();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = request(
            s.addr,
            "POST",
            "/v1/authorizations",
            &[limited, JSON_CT],
            Some(body.as_bytes()),
        )
        .await;
        statuses.push(r.status);
        if r.status == 429 {
            assert_eq!(r.header("retry-after"), Some("1"));
            assert_eq!(r.error_code(), "rate_limited");
        }
    }
    assert_eq!(statuses, vec![201, 201, 429]);
    assert_eq!(start(&s, good_body(), &[]).await.status, 201);
}

#[tokio::test]
async fn unknown_routes_are_404_json_and_wrong_methods_405_json() {
    let s = server().await;
    let r = request(s.addr, "GET", "/v2/nothing", &[AUTH], None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "not_found");
    let r = request(s.addr, "DELETE", "/v1/authorizations", &[AUTH], None).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.error_code(), "method_not_allowed");
    assert_eq!(r.header("allow"), Some("POST"));
    let r = request(s.addr, "PUT", "/healthz", &[], None).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.error_code(), "method_not_allowed");
}

#[tokio::test]
async fn health_and_readiness() {
    let s = server().await;
    let r = request(s.addr, "GET", "/healthz", &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
    let r = request(s.addr, "GET", "/readyz", &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["ready"], true);
    assert_eq!(r.json()["binds"][0]["operator"], "op-a");

    let down = server_with(false).await;
    let r = request(down.addr, "GET", "/readyz", &[], None).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["ready"], false);
    assert_eq!(r.json()["binds"][0]["up"], 0);
}

#[tokio::test]
async fn the_served_openapi_document_is_the_checked_in_file_and_covers_every_route() {
    let s = server().await;
    let r = request(s.addr, "GET", "/openapi.yaml", &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/yaml"));
    let checked_in =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml")).unwrap();
    assert_eq!(r.body, checked_in);

    // Every documented operation is routed (an undocumented one is caught by the unit test
    // against the route table).
    let doc = String::from_utf8(r.body).unwrap();
    let ops = api::openapi::documented_operations(&doc);
    assert_eq!(ops.len(), api::native::ROUTES.len());
    for (method, path) in ops {
        let concrete = path.replace("{id}", "auth-999");
        let r = request(s.addr, &method, &concrete, &[AUTH, JSON_CT], Some(b"{}")).await;
        assert!(
            r.status != 405 && !(r.status == 404 && r.json()["message"] == "no such route"),
            "{method} {path}: {}",
            r.status
        );
    }
}

#[tokio::test]
async fn extra_routes_are_merged_and_share_the_state() {
    use axum::extract::State;
    use axum::routing::get;
    let fake = Fake::new(true);
    let state = ApiState::new(
        fake,
        ApiOptions {
            clients: vec![ClientCredential {
                id: "rp".into(),
                token: Secret::new(TOKEN),
                rate_per_sec: 10,
                burst: 10,
                callback_allow: Vec::new(),
            }],
            ..ApiOptions::default()
        },
    );
    let extra = axum::Router::new().route(
        "/extra",
        get(
            |client: api::AuthenticatedClient, State(s): State<ApiState>| async move {
                format!("{} {}", client.id, s.options.max_body_bytes)
            },
        ),
    );
    let app = api::router(state, Some(extra));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let r = request(addr, "GET", "/extra", &[AUTH], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"rp 16384");
    let r = request(addr, "GET", "/extra", &[], None).await;
    assert_eq!(r.status, 401);
}
