//! Keycloak CIBA HTTP authentication channel, end to end over loopback: a test realm (keys in
//! `tests/fixtures/keycloak/`, TEST-ONLY) signs the bearer tokens, a fake Keycloak records the
//! callbacks and answers as scripted, the real authorization manager (in-memory store) stores
//! Keycloak's follow state and delivers the callback from its outbox, and a scripted channel
//! stands in for the phones.

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use gateway::api::jwt::{JwksSource, JwtConfig, JwtVerifier};
use gateway::api::keycloak::{
    routes, ChannelStatus, KeycloakChannel, KeycloakConfig, SubscriberMap,
};
use gateway::authorization::service::{
    AuthorizationService, AuthorizationView, Loa, LookupError, Readiness, StartError, StartRequest,
    TerminalStatus,
};
use gateway::authorization::{
    system_clock, AuthorizationManager, ChannelPort, DeliveryReport, ManagerDeps, ManagerSettings,
    Operator,
};
use gateway::callback::{Delivery, GiveUpReason, RetryPolicy};
use gateway::channel::{AuthRequest, AuthResult};
use gateway::routing::{PortabilityTable, Router as NumberRouter};
use gateway::store::{InMemoryStore, OutboxKind, StoreOptions};
use gateway::subscribers::provision::{generate_record, ProvisionParams};
use gateway::subscribers::{Pepper, SubscriberRegistry};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::sync::broadcast;

// ---------------------------------------------------------------- fixtures

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keycloak")
        .join(name)
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims as Keycloak's `HttpAuthenticationChannelProvider.createBearerToken` sets them.
fn claims(realm: &str, jti: &str) -> Value {
    json!({
        "typ": "Bearer",
        "iss": realm,
        "aud": realm,
        "azp": "portal",
        "jti": jti,
        "sub": "5b1c0e9e-user-id",
        "exp": now() + 120,
    })
}

fn sign(claims: &Value, alg: Algorithm, kid: &str, key_file: &str) -> String {
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem(key_file)).unwrap(),
        _ => EncodingKey::from_rsa_pem(&pem(key_file)).unwrap(),
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn rsa_token(realm: &str, jti: &str) -> String {
    sign(
        &claims(realm, jti),
        Algorithm::RS256,
        "rsa-1",
        "realm-rsa.key.pem",
    )
}

// ---------------------------------------------------------------- the phones and the layer

/// The phones: every authorization ends as scripted (`None`: never answered).
struct ScriptedNetwork {
    outcome: Option<TerminalStatus>,
}

impl ChannelPort for ScriptedNetwork {
    fn authorize(&self, request: AuthRequest) -> BoxFuture<'static, AuthResult> {
        let result = match self.outcome {
            Some(TerminalStatus::Approved) => AuthResult::Approved {
                loa: request.loa,
                proof: None,
            },
            Some(TerminalStatus::Denied) => AuthResult::Denied,
            Some(TerminalStatus::NotReachable) => {
                AuthResult::DeliveryError(gateway::smpp::session::SubmitFailure::Rejected(
                    rusmpp::CommandStatus::EsmeRinvdstadr,
                ))
            }
            Some(_) => AuthResult::Expired,
            None => return std::future::pending().boxed(),
        };
        async move { result }.boxed()
    }

    fn binds_up(&self) -> (usize, usize) {
        (1, 1)
    }
}

/// The real manager, recording what it was asked to start.
struct RecordingService {
    manager: AuthorizationManager,
    starts: Mutex<Vec<StartRequest>>,
}

impl RecordingService {
    fn starts(&self) -> Vec<StartRequest> {
        self.starts.lock().unwrap().clone()
    }
}

impl AuthorizationService for RecordingService {
    fn start(&self, req: StartRequest) -> BoxFuture<'_, Result<AuthorizationView, StartError>> {
        self.starts.lock().unwrap().push(req.clone());
        self.manager.start(req)
    }

    fn get(
        &self,
        client_id: &str,
        id: &str,
        wait: Option<Duration>,
    ) -> BoxFuture<'_, Result<AuthorizationView, LookupError>> {
        self.manager.get(client_id, id, wait)
    }

    fn cancel(
        &self,
        client_id: &str,
        id: &str,
    ) -> BoxFuture<'_, Result<AuthorizationView, LookupError>> {
        self.manager.cancel(client_id, id)
    }

    fn readiness(&self) -> Readiness {
        self.manager.readiness()
    }
}

fn manager(outcome: Option<TerminalStatus>) -> AuthorizationManager {
    let pepper = Pepper::new(b"keycloak test pepper, long enough").unwrap();
    // The two numbers the tests use, both without the applet (USSD).
    let records = [48_600_100_200u64, 48_600_999_888].map(|base| {
        let params = ProvisionParams {
            seed: 7,
            count: 1,
            msisdn_base: base,
            applet_share: 0.0,
        };
        generate_record(&params, 0, &pepper).unwrap()
    });
    let router = NumberRouter::new(
        &[("red".to_owned(), vec!["48600".parse().unwrap()])],
        PortabilityTable::new(),
    )
    .unwrap();
    AuthorizationManager::new(ManagerDeps {
        store: Arc::new(InMemoryStore::new(StoreOptions::default())),
        router: Arc::new(router),
        subscribers: Arc::new(SubscriberRegistry::from_records(records)),
        operators: vec![Operator {
            name: "red".into(),
            channel: Arc::new(ScriptedNetwork { outcome }),
            metrics: None,
        }],
        settings: ManagerSettings {
            loa3_over_ussd: true,
            callback_retry: RetryPolicy {
                max_attempts: 5,
                initial_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(40),
                attempt_timeout: Duration::from_secs(5),
            },
            ..ManagerSettings::default()
        },
        audit: None,
        clock: system_clock(),
        outbox_observers: None,
        // Test receivers listen on plain http on loopback.
        callbacks: gateway::callback::CallbackClient::new(
            Default::default(),
            &gateway::outbound::OutboundSettings {
                allow_http: true,
                ..Default::default()
            },
        )
        .unwrap(),
    })
}

// ---------------------------------------------------------------- fake Keycloak

#[derive(Clone, Default)]
struct FakeKeycloak {
    /// Statuses to answer, in order; 200 (what Keycloak answers) once empty.
    script: Arc<Mutex<VecDeque<u16>>>,
    /// (Authorization header, body) of every callback.
    calls: Arc<Mutex<Vec<(String, Value)>>>,
}

async fn kc_callback(
    State(kc): State<FakeKeycloak>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let auth = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    kc.calls.lock().unwrap().push((auth, body));
    let code = kc.script.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(code).unwrap()
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

// ---------------------------------------------------------------- harness

struct Harness {
    realm: String,
    gateway: SocketAddr,
    keycloak: FakeKeycloak,
    service: Arc<RecordingService>,
    reports: broadcast::Receiver<DeliveryReport>,
}

struct Options {
    outcome: Option<TerminalStatus>,
    script: Vec<u16>,
    jwks: JwksSource,
    min_reload_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            outcome: Some(TerminalStatus::Approved),
            script: Vec::new(),
            jwks: JwksSource::File(fixture("realm.jwks.json")),
            min_reload_interval: Duration::from_secs(3600),
        }
    }
}

async fn harness(opts: Options) -> Harness {
    let keycloak = FakeKeycloak::default();
    keycloak.script.lock().unwrap().extend(opts.script);
    let kc_addr = serve(
        Router::new()
            .route(
                "/realms/test/protocol/openid-connect/ext/ciba/auth/callback",
                post(kc_callback),
            )
            .with_state(keycloak.clone()),
    )
    .await;
    let realm = format!("http://{kc_addr}/realms/test");

    let mut jwt = JwtConfig::for_realm(&realm);
    jwt.min_reload_interval = opts.min_reload_interval;
    let verifier = Arc::new(
        JwtVerifier::load(jwt, opts.jwks, &Default::default())
            .await
            .unwrap(),
    );

    let mut config = KeycloakConfig::for_realm(&realm);
    config.client_names.insert("portal".into(), "ePUAP".into());
    config.callback_min_delay = Duration::ZERO;
    let subscribers = SubscriberMap::parse("jan.kowalski +48600100200\n", true).unwrap();
    let manager = manager(opts.outcome);
    let reports = manager.deliveries();
    let service = Arc::new(RecordingService {
        manager,
        starts: Mutex::new(Vec::new()),
    });
    let channel = Arc::new(KeycloakChannel::new(
        config,
        verifier,
        subscribers,
        service.clone(),
    ));
    let gateway = serve(routes::<()>(channel)).await;
    Harness {
        realm,
        gateway,
        keycloak,
        service,
        reports,
    }
}

impl Harness {
    /// POST a channel request the way Keycloak does; returns the status and JSON body.
    async fn request(&self, token: Option<&str>, body: &str) -> (u16, Value) {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let mut req = axum::http::Request::post(format!("http://{}/keycloak/ciba", self.gateway))
            .header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = client
            .request(req.body(Full::new(Bytes::from(body.to_string()))).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// The next Keycloak delivery that left the outbox.
    async fn next_report(&mut self) -> DeliveryReport {
        loop {
            let report = tokio::time::timeout(Duration::from_secs(20), self.reports.recv())
                .await
                .expect("a Keycloak delivery within 20 s")
                .unwrap();
            if report.kind == OutboxKind::Keycloak {
                return report;
            }
        }
    }

    fn calls(&self) -> Vec<(String, Value)> {
        self.keycloak.calls.lock().unwrap().clone()
    }
}

const BODY: &str = r#"{"login_hint":"jan.kowalski","binding_message":"X7Q2","is_consent_required":false,"scope":"openid profile","acr_values":null}"#;

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn valid_request_gets_201_then_succeed_with_the_same_bearer() {
    let mut h = harness(Options::default()).await;
    let token = rsa_token(&h.realm, "jti-ok");
    let (status, _) = h.request(Some(&token), BODY).await;
    assert_eq!(status, 201);

    let report = h.next_report().await;
    assert_eq!(
        report.event_id,
        format!("{}:keycloak", report.authorization_id)
    );
    assert_eq!(report.keycloak_status, Some(ChannelStatus::Succeed));
    assert!(matches!(
        report.delivery,
        Delivery::Delivered {
            status: 200,
            attempts: 1
        }
    ));
    assert_eq!(
        h.calls(),
        vec![(format!("Bearer {token}"), json!({"status": "SUCCEED"}))]
    );

    let starts = h.service.starts();
    assert_eq!(starts.len(), 1);
    let s = &starts[0];
    assert_eq!(s.msisdn, "48600100200");
    assert_eq!(s.loa, Loa::Loa2);
    assert_eq!(s.client_id, "keycloak");
    assert_eq!(s.client_name, "ePUAP");
    assert_eq!(s.consent_text, "ePUAP: potwierdź logowanie. Kod: X7Q2");
    assert_eq!(s.binding_message.as_deref(), Some("X7Q2"));
    assert_eq!(s.idempotency_key.as_deref(), Some("jti-ok"));
    // The authorization ends before the token does, leaving time to call back.
    assert!(s.expiry <= Duration::from_secs(115) && s.expiry >= Duration::from_secs(100));
}

#[tokio::test]
async fn es256_tokens_from_the_realm_are_accepted() {
    let mut h = harness(Options::default()).await;
    let token = sign(
        &claims(&h.realm, "jti-ec"),
        Algorithm::ES256,
        "ec-1",
        "realm-ec.key.pem",
    );
    assert_eq!(h.request(Some(&token), BODY).await.0, 201);
    assert_eq!(
        h.next_report().await.keycloak_status,
        Some(ChannelStatus::Succeed)
    );
}

#[tokio::test]
async fn bad_tokens_get_401_and_start_nothing() {
    let h = harness(Options::default()).await;
    let realm = h.realm.clone();
    let realm_signed = |c: &Value| sign(c, Algorithm::RS256, "rsa-1", "realm-rsa.key.pem");
    let mut expired = claims(&realm, "j1");
    expired["exp"] = json!(now() - 3600);
    let mut wrong_aud = claims(&realm, "j2");
    wrong_aud["aud"] = json!("http://elsewhere/realms/test");
    let mut wrong_iss = claims(&realm, "j3");
    wrong_iss["iss"] = json!("http://elsewhere/realms/test");
    let mut no_jti = claims(&realm, "j4");
    no_jti.as_object_mut().unwrap().remove("jti");
    let cases = [
        (
            "forged signature",
            Some(sign(
                &claims(&realm, "j0"),
                Algorithm::RS256,
                "rsa-1",
                "attacker-rsa.key.pem",
            )),
        ),
        ("expired", Some(realm_signed(&expired))),
        ("wrong audience", Some(realm_signed(&wrong_aud))),
        ("wrong issuer", Some(realm_signed(&wrong_iss))),
        ("no jti", Some(realm_signed(&no_jti))),
        (
            "unknown kid",
            Some(sign(
                &claims(&realm, "j5"),
                Algorithm::RS256,
                "nope",
                "realm-rsa.key.pem",
            )),
        ),
        ("garbage", Some("abc.def.ghi".to_string())),
        ("no token", None),
    ];
    for (what, token) in cases {
        let (status, body) = h.request(token.as_deref(), BODY).await;
        assert_eq!(status, 401, "{what}: {body}");
        if token.is_some() {
            assert_eq!(body["error"], "invalid_token", "{what}: {body}");
        }
    }
    assert!(h.service.starts().is_empty());
}

#[tokio::test]
async fn unknown_username_gets_404_unknown_subscriber() {
    let h = harness(Options::default()).await;
    let token = rsa_token(&h.realm, "jti-unknown");
    let body = r#"{"login_hint":"nobody","scope":"openid"}"#;
    let (status, json) = h.request(Some(&token), body).await;
    assert_eq!(status, 404);
    assert_eq!(json["error"], "unknown_subscriber");
    assert!(h.service.starts().is_empty());
}

#[tokio::test]
async fn e164_usernames_are_their_own_msisdn() {
    let mut h = harness(Options::default()).await;
    let token = rsa_token(&h.realm, "jti-e164");
    let body = r#"{"login_hint":"+48600999888","scope":"openid"}"#;
    assert_eq!(h.request(Some(&token), body).await.0, 201);
    h.next_report().await;
    let starts = h.service.starts();
    assert_eq!(starts[0].msisdn, "48600999888");
    assert_eq!(starts[0].consent_text, "ePUAP: potwierdź logowanie.");
}

#[tokio::test]
async fn acr_values_3_2_ask_for_loa3_and_unsupported_levels_get_400() {
    let mut h = harness(Options::default()).await;
    let token = rsa_token(&h.realm, "jti-acr");
    let body = r#"{"login_hint":"jan.kowalski","acr_values":"3 2"}"#;
    assert_eq!(h.request(Some(&token), body).await.0, 201);
    h.next_report().await;
    assert_eq!(h.service.starts()[0].loa, Loa::Loa3);

    let token = rsa_token(&h.realm, "jti-acr4");
    let (status, json) = h
        .request(
            Some(&token),
            r#"{"login_hint":"jan.kowalski","acr_values":"4"}"#,
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(json["error"], "unsupported_acr");
    assert_eq!(h.service.starts().len(), 1);
}

#[tokio::test]
async fn malformed_bodies_get_400() {
    let h = harness(Options::default()).await;
    for (body, code) in [
        ("not json", "invalid_request"),
        (r#"{"scope":"openid"}"#, "invalid_request"),
        (
            r#"{"login_hint":"jan.kowalski","binding_message":"with space"}"#,
            "invalid_binding_message",
        ),
    ] {
        let token = rsa_token(&h.realm, "jti-bad-body");
        let (status, json) = h.request(Some(&token), body).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(json["error"], code, "{body}");
    }
    assert!(h.service.starts().is_empty());
}

#[tokio::test]
async fn callback_answered_503_twice_is_delivered_on_the_third_attempt() {
    let mut h = harness(Options {
        script: vec![503, 503, 201],
        ..Options::default()
    })
    .await;
    let token = rsa_token(&h.realm, "jti-retry");
    assert_eq!(h.request(Some(&token), BODY).await.0, 201);
    let report = h.next_report().await;
    assert_eq!(
        report.delivery,
        Delivery::Delivered {
            status: 201,
            attempts: 3
        }
    );
    let calls = h.calls();
    assert_eq!(calls.len(), 3);
    assert!(calls
        .iter()
        .all(|(auth, body)| auth == &format!("Bearer {token}")
            && body == &json!({"status": "SUCCEED"})));
}

#[tokio::test]
async fn callback_answered_403_is_not_retried() {
    let mut h = harness(Options {
        script: vec![403, 200],
        ..Options::default()
    })
    .await;
    let token = rsa_token(&h.realm, "jti-403");
    assert_eq!(h.request(Some(&token), BODY).await.0, 201);
    let report = h.next_report().await;
    assert_eq!(
        report.delivery,
        Delivery::GaveUp {
            reason: GiveUpReason::Refused { status: 403 }
        }
    );
    assert_eq!(h.calls().len(), 1);
}

#[tokio::test]
async fn a_repeated_jti_starts_one_authorization_and_calls_back_once() {
    let mut h = harness(Options {
        outcome: None,
        ..Options::default()
    })
    .await;
    // Short-lived token: the unanswered authorization expires a second before it.
    let mut c = claims(&h.realm, "jti-dup");
    c["exp"] = json!(now() + 2);
    let token = sign(&c, Algorithm::RS256, "rsa-1", "realm-rsa.key.pem");
    let (a, first) = h.request(Some(&token), BODY).await;
    let (b, second) = h.request(Some(&token), BODY).await;
    assert_eq!((a, b), (201, 201));
    assert_eq!(first["authorization_id"], second["authorization_id"]);
    // Both reached the layer; the idempotency key (the jti) made them one authorization.
    assert_eq!(h.service.starts().len(), 2);

    // Never answered: it expires, and Keycloak hears UNAUTHORIZED once, before the token's exp.
    let report = h.next_report().await;
    assert_eq!(report.authorization_id, first["authorization_id"]);
    assert_eq!(report.status, TerminalStatus::Expired);
    assert_eq!(report.keycloak_status, Some(ChannelStatus::Unauthorized));
    assert!(report.delivery.is_delivered(), "{:?}", report.delivery);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        h.calls(),
        vec![(format!("Bearer {token}"), json!({"status": "UNAUTHORIZED"}))]
    );
}

#[tokio::test]
async fn a_token_whose_exp_is_ages_away_gets_an_authorization_of_the_longest_allowed_expiry() {
    let h = harness(Options {
        outcome: None,
        ..Options::default()
    })
    .await;
    let mut c = claims(&h.realm, "jti-far");
    // A validly signed token valid for half of u64 seconds: its exp must not reach the clock.
    c["exp"] = json!(u64::MAX / 2);
    let token = sign(&c, Algorithm::RS256, "rsa-1", "realm-rsa.key.pem");
    let (status, body) = h.request(Some(&token), BODY).await;
    assert_eq!(status, 201, "{body}");
    let starts = h.service.starts();
    assert_eq!(starts.len(), 1);
    assert!(
        starts[0].expiry <= Duration::from_secs(600),
        "expiry {:?} beyond the channel's max_expiry",
        starts[0].expiry
    );
}

#[tokio::test]
async fn a_callback_refused_until_the_tokens_exp_is_given_up_there() {
    let mut h = harness(Options {
        outcome: Some(TerminalStatus::Denied),
        script: vec![503; 1_000],
        ..Options::default()
    })
    .await;
    let mut c = claims(&h.realm, "jti-late");
    c["exp"] = json!(now() + 2);
    let token = sign(&c, Algorithm::RS256, "rsa-1", "realm-rsa.key.pem");
    assert_eq!(h.request(Some(&token), BODY).await.0, 201);
    let report = h.next_report().await;
    assert!(
        matches!(
            report.delivery,
            Delivery::GaveUp {
                reason: GiveUpReason::DeadlinePassed { .. }
                    | GiveUpReason::AttemptsExhausted { .. }
            }
        ),
        "{:?}",
        report.delivery
    );
    // Retried, and never past the token's exp (checked again by a late attempt count).
    let tried = h.calls().len();
    assert!(tried >= 1, "no attempt was made");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.calls().len(), tried, "an attempt after giving up");
}

#[tokio::test]
async fn denial_is_unauthorized_and_relying_party_cancel_is_cancelled() {
    for (outcome, expected) in [
        (Some(TerminalStatus::Denied), "UNAUTHORIZED"),
        (Some(TerminalStatus::Expired), "UNAUTHORIZED"),
        (Some(TerminalStatus::NotReachable), "UNAUTHORIZED"),
        // Never answered; the relying party cancels.
        (None, "CANCELLED"),
    ] {
        let mut h = harness(Options {
            outcome,
            ..Options::default()
        })
        .await;
        let token = rsa_token(&h.realm, "jti-deny");
        let (status, body) = h.request(Some(&token), BODY).await;
        assert_eq!(status, 201);
        if outcome.is_none() {
            let id = body["authorization_id"].as_str().unwrap();
            h.service.cancel("keycloak", id).await.unwrap();
        }
        let report = h.next_report().await;
        if let Some(outcome) = outcome {
            assert_eq!(report.status, outcome);
        }
        assert_eq!(h.calls()[0].1, json!({ "status": expected }), "{outcome:?}");
    }
}

#[tokio::test]
async fn a_rotated_realm_key_is_picked_up_by_reloading_the_jwks() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("realm.jwks.json");
    std::fs::copy(fixture("realm.jwks.json"), &jwks).unwrap();
    let mut h = harness(Options {
        jwks: JwksSource::File(jwks.clone()),
        min_reload_interval: Duration::ZERO,
        ..Options::default()
    })
    .await;
    let rotated = sign(
        &claims(&h.realm, "jti-rot"),
        Algorithm::RS256,
        "rsa-2",
        "rotated-rsa.key.pem",
    );
    assert_eq!(h.request(Some(&rotated), BODY).await.0, 401);

    std::fs::copy(fixture("realm-rotated.jwks.json"), &jwks).unwrap();
    assert_eq!(h.request(Some(&rotated), BODY).await.0, 201);
    assert_eq!(
        h.next_report().await.keycloak_status,
        Some(ChannelStatus::Succeed)
    );
}

#[tokio::test]
async fn unknown_kids_do_not_reload_the_jwks_more_than_the_interval_allows() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("realm.jwks.json");
    std::fs::copy(fixture("realm.jwks.json"), &jwks).unwrap();
    let h = harness(Options {
        jwks: JwksSource::File(jwks.clone()),
        ..Options::default()
    })
    .await;
    // Loaded just now: the interval (1 h) forbids a reload, even though the file changed.
    std::fs::copy(fixture("realm-rotated.jwks.json"), &jwks).unwrap();
    let rotated = sign(
        &claims(&h.realm, "jti-rot2"),
        Algorithm::RS256,
        "rsa-2",
        "rotated-rsa.key.pem",
    );
    let (status, json) = h.request(Some(&rotated), BODY).await;
    assert_eq!(status, 401);
    assert!(
        json["message"].as_str().unwrap().contains("rsa-2"),
        "{json}"
    );
}
