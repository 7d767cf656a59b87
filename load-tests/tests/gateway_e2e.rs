//! End to end through real sockets: the gateway started in-process (`gateway::serve::start`),
//! its north API over HTTP/1.1 on loopback, its SMPP binds to the simulated SMSC, and the
//! SMSC's handset population whose users behave as each test fixes (approve, deny, ignore,
//! wrong PIN). Each test has its own SMSC, gateway and store, a deadline, and ends by shutting
//! both down. The harness is in `e2e_support`.
#![allow(clippy::unwrap_used)]

mod e2e_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use e2e_support::*;
use load_tests::smsc::Fault;
use serde_json::{json, Value};
use tokio::sync::mpsc;

fn assert_stk_approval(v: &Value, loa: u8) {
    assert_eq!(v["status"], "approved", "{v}");
    assert_eq!(v["channel"], "stk", "{v}");
    assert_eq!(v["loa_requested"], loa.to_string(), "{v}");
    assert_eq!(v["loa_achieved"], loa.to_string(), "{v}");
    let proof = v["proof"]
        .as_str()
        .unwrap_or_else(|| panic!("no proof: {v}"));
    assert_eq!(proof.len(), 32, "{v}");
    assert!(proof.bytes().all(|b| b.is_ascii_hexdigit()), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stk_loa2_is_approved_with_the_cards_proof() {
    let env = Env::start(user(0.0, 0.0, 0.0), |_| {}).await;
    let m = msisdn(index_with(true, 0));
    within(20, async {
        let id = start_ok(env.api, &m, 2, 60).await;
        let v = terminal(env.api, &id).await;
        assert_stk_approval(&v, 2);
        assert_eq!(env.log.prompts_to(&m), 1);
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stk_loa3_is_approved_by_the_pin_on_the_card() {
    let env = Env::start(user(0.0, 0.0, 0.0), |_| {}).await;
    let m = msisdn(index_with(true, 1));
    within(20, async {
        let id = start_ok(env.api, &m, 3, 60).await;
        let v = terminal(env.api, &id).await;
        assert_stk_approval(&v, 3);
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ussd_loa2_is_approved_on_a_sim_without_the_applet() {
    let env = Env::start(user(0.0, 0.0, 0.0), |_| {}).await;
    let m = msisdn(index_with(false, 0));
    within(20, async {
        let id = start_ok(env.api, &m, 2, 60).await;
        let v = terminal(env.api, &id).await;
        assert_eq!(v["status"], "approved", "{v}");
        assert_eq!(v["channel"], "ussd", "{v}");
        assert_eq!(v["loa_achieved"], "2", "{v}");
        assert!(v["proof"].is_null(), "{v}");
        assert_eq!(env.log.prompts_to(&m), 1);
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ussd_loa3_is_approved_by_the_gateways_pin_check_when_policy_allows() {
    let env = Env::start(user(0.0, 0.0, 0.0), |c| c.policy.loa3_over_ussd = true).await;
    let m = msisdn(index_with(false, 1));
    within(20, async {
        let id = start_ok(env.api, &m, 3, 60).await;
        let v = terminal(env.api, &id).await;
        assert_eq!(v["status"], "approved", "{v}");
        assert_eq!(v["channel"], "ussd", "{v}");
        assert_eq!(v["loa_achieved"], "3", "{v}");
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_wrong_ussd_pins_lock_the_subscriber_and_a_fourth_start_prompts_nothing() {
    let env = Env::start(user(0.0, 0.0, 1.0), |c| {
        c.policy.loa3_over_ussd = true;
        c.policy.ussd_pin_max_failures = 3;
    })
    .await;
    let m = msisdn(index_with(false, 2));
    within(30, async {
        for attempt in 1..=3 {
            let id = start_ok(env.api, &m, 3, 60).await;
            let v = terminal(env.api, &id).await;
            if attempt < 3 {
                assert_eq!(v["status"], "denied", "attempt {attempt}: {v}");
                assert_eq!(v["reason"], "wrong_pin", "attempt {attempt}: {v}");
            } else {
                assert_eq!(v["status"], "pin_blocked", "attempt {attempt}: {v}");
            }
            assert!(v["loa_achieved"].is_null(), "{v}");
        }
        assert_eq!(env.log.prompts_to(&m), 3);

        // Locked: docs/api.md has no refusal for it, the start is a start (201), and the
        // authorization ends `pin_blocked` ("the gateway's USSD lockout") without a prompt.
        let r = start_auth(env.api, &auth_body(&m, 3, 60), None).await;
        assert_eq!(r.status, 201, "{r:?}");
        let id = r.body["id"].as_str().unwrap();
        let v = terminal(env.api, id).await;
        assert_eq!(v["status"], "pin_blocked", "{v}");
        assert!(v["loa_achieved"].is_null(), "{v}");
        assert_eq!(
            env.log.prompts_to(&m),
            3,
            "a locked subscriber was prompted"
        );
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_refuses_ends_denied_over_stk_and_over_ussd() {
    let env = Env::start(user(0.0, 1.0, 0.0), |_| {}).await;
    let stk = msisdn(index_with(true, 2));
    let ussd = msisdn(index_with(false, 3));
    within(20, async {
        let a = start_ok(env.api, &stk, 2, 60).await;
        let b = start_ok(env.api, &ussd, 2, 60).await;
        let (va, vb) = tokio::join!(terminal(env.api, &a), terminal(env.api, &b));
        for (v, channel) in [(va, "stk"), (vb, "ussd")] {
            assert_eq!(v["status"], "denied", "{v}");
            assert_eq!(v["channel"], channel, "{v}");
            assert!(v["loa_achieved"].is_null() && v["proof"].is_null(), "{v}");
        }
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_ends_expired_at_the_requested_expiry() {
    let env = Env::start(user(1.0, 0.0, 0.0), |_| {}).await;
    let m = msisdn(index_with(false, 4));
    within(25, async {
        // 10 s is the API's shortest expiry; 4 s of slack for the network and the timers.
        let id = start_ok(env.api, &m, 2, 10).await;
        let r = get(env.api, &id, 14).await;
        let v = &r.body;
        assert_eq!(
            v["state"], "terminal",
            "still pending 14 s into a 10 s authorization: {v}"
        );
        assert_eq!(v["status"], "expired", "{v}");
        let took = v["completed_at_ms"].as_u64().unwrap() - v["created_at_ms"].as_u64().unwrap();
        assert!(
            took >= 9_000,
            "ended after {took} ms, before its expiry: {v}"
        );
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_stk_push_the_smsc_refuses_falls_back_to_ussd_and_is_approved() {
    // The SMSC throttles every submit for 1.5 s. The push is throttled and retried at the
    // bind's paced rate until its 1 s submit deadline passes: a delivery failure, the handset
    // saw nothing. The USSD fallback is retried the same way and goes out after the storm.
    let env = Env::start(user(0.0, 0.0, 0.0), |c| {
        c.policy.fallback_stk_to_ussd = true;
        c.policy.submit_timeout_secs = 1;
    })
    .await;
    let m = msisdn(index_with(true, 3));
    within(20, async {
        env.smsc
            .inject(Fault::ThrottleStorm(Duration::from_millis(1_500)));
        let id = start_ok(env.api, &m, 2, 60).await;
        let v = terminal(env.api, &id).await;
        assert_eq!(v["status"], "approved", "{v}");
        assert_eq!(v["channel"], "ussd", "{v}");
        assert!(v["proof"].is_null(), "{v}");
        assert!(env.smsc.stats().snapshot().throttled >= 1);
        let mt = env.log.mt();
        let to_m: Vec<_> = mt.iter().filter(|x| x.sm.destination.addr == m).collect();
        // The refused push never reached the network; the USSD prompt did.
        assert!(to_m.iter().all(|x| x.sm.protocol_id != 0x7F), "{to_m:?}");
        assert_eq!(env.log.prompts_to(&m), 1);
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_card_answer_never_approves_a_new_authorization() {
    let env = Env::start(user(0.0, 0.0, 0.0), |_| {}).await;
    let m = msisdn(index_with(true, 4));
    within(30, async {
        let first = start_ok(env.api, &m, 2, 60).await;
        let v = terminal(env.api, &first).await;
        assert_stk_approval(&v, 2);
        let captured: Vec<_> = env
            .log
            .mo_from(&m)
            .into_iter()
            .filter(|mo| mo.sm.protocol_id == 0x7F)
            .collect();
        assert!(!captured.is_empty(), "no card answer captured");

        // Replayed with nothing pending: ignored, the first stays approved.
        for mo in &captured {
            env.smsc.deliver_mo(SYSTEM_ID, mo).unwrap();
        }

        // The handset goes silent; a new authorization gets only the replayed answer.
        env.log.mute(&m);
        let second = start_ok(env.api, &m, 2, 60).await;
        env.log.wait_prompts(&m, 2).await;
        for mo in &captured {
            env.smsc.deliver_mo(SYSTEM_ID, mo).unwrap();
        }
        // docs/api.md: an answer carrying another prompt's counter is ignored; the
        // authorization keeps waiting for its own answer (so an old answer can neither approve
        // nor end it), and the relying party can still cancel it.
        let r = get(env.api, &second, 3).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            r.body["state"], "pending",
            "the replay ended it: {:?}",
            r.body
        );
        let again = get(env.api, &first, 0).await;
        assert_stk_approval(&again.body, 2);
        let c = cancel(env.api, &second).await;
        assert_eq!(c.status, 200, "{c:?}");
        assert_eq!(c.body["status"], "cancelled", "{:?}", c.body);
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_retried_with_the_same_idempotency_key_is_one_authorization_and_one_prompt() {
    let env = Env::start(user(0.0, 0.0, 0.0), |_| {}).await;
    let m = msisdn(index_with(false, 5));
    within(20, async {
        let body = auth_body(&m, 2, 60);
        let a = start_auth(env.api, &body, Some("order-4711")).await;
        let b = start_auth(env.api, &body, Some("order-4711")).await;
        assert_eq!(a.status, 201, "{a:?}");
        assert_eq!(b.status, 200, "{b:?}");
        let id = a.body["id"].as_str().unwrap();
        assert_eq!(b.body["id"], id);
        let v = terminal(env.api, id).await;
        assert_eq!(v["status"], "approved", "{v}");
        // After the end: still the same authorization, not a new prompt.
        let c = start_auth(env.api, &body, Some("order-4711")).await;
        assert_eq!(c.status, 200, "{c:?}");
        assert_eq!(c.body["id"], id);
        assert_eq!(c.body["status"], "approved", "{:?}", c.body);
        assert_eq!(env.log.prompts_to(&m), 1);
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_ussd_dialog_is_released_on_the_handset_with_a_cancelled_screen() {
    // A user who never answers: the dialog is open on the handset when the relying party
    // cancels.
    let env = Env::start(user(1.0, 0.0, 0.0), |_| {}).await;
    let m = msisdn(index_with(false, 9));
    within(20, async {
        let id = start_ok(env.api, &m, 2, 60).await;
        env.log.wait_prompts(&m, 1).await;
        assert_eq!(cancel(env.api, &id).await.status, 200);
        let texts = || -> Vec<String> {
            env.log
                .mt()
                .iter()
                .filter(|x| x.sm.destination.addr == m)
                .map(|x| String::from_utf8_lossy(&x.sm.short_message).into_owned())
                .collect()
        };
        while texts().len() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let texts = texts();
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert_eq!(texts[1], "Cancelled", "{texts:?}");
        let v = terminal(env.api, &id).await;
        assert_eq!(v["status"], "cancelled", "{v}");
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_of_the_apis_longest_length_is_kept_by_the_store() {
    let env = Env::start(user(0.0, 0.0, 0.0), |_| {}).await;
    let m = msisdn(index_with(false, 8));
    within(20, async {
        // The API accepts up to 255 characters; the store once refused over 128 with a 500.
        for len in [200, 255] {
            let key = "k".repeat(len - 3) + &format!("{len:03}");
            let body = auth_body(&m, 2, 60);
            let a = start_auth(env.api, &body, Some(&key)).await;
            assert_eq!(a.status, 201, "{len}: {a:?}");
            let b = start_auth(env.api, &body, Some(&key)).await;
            assert_eq!((b.status, &b.body["id"]), (200, &a.body["id"]), "{len}");
            terminal(env.api, a.body["id"].as_str().unwrap()).await;
        }
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_in_flight_cap_a_start_is_refused_at_once_with_retry_after() {
    let env = Env::start(user(1.0, 0.0, 0.0), |c| {
        c.limits.max_in_flight = 1;
        c.limits.retry_after_secs = 2;
    })
    .await;
    let a = msisdn(index_with(false, 6));
    let b = msisdn(index_with(false, 7));
    within(20, async {
        let first = start_ok(env.api, &a, 2, 60).await;
        let r = start_auth(env.api, &auth_body(&b, 2, 60), None).await;
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(r.body["error"], "overloaded", "{r:?}");
        assert_eq!(r.header("retry-after"), Some("2"), "{r:?}");
        assert_eq!(env.log.prompts_to(&b), 0);

        let c = cancel(env.api, &first).await;
        assert_eq!(c.body["status"], "cancelled", "{:?}", c.body);
        // Room again.
        let next = start_ok(env.api, &b, 2, 60).await;
        cancel(env.api, &next).await;
    })
    .await;
    env.stop().await;
}

/// Runs a gateway on its own runtime and kills that runtime: no shutdown code runs, as when
/// the process dies. Returns (approved STK id, approved USSD id with key, id left in flight).
fn run_gateway_then_crash(
    config: gateway::config::GatewayConfig,
    log: Arc<Log>,
    stk: String,
    ussd: String,
    silent: String,
) -> (String, String, String) {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (gw, ids) = rt.block_on(async {
            let gw = start_gateway(config).await;
            let api = gw.api_addr;
            let a = start_ok(api, &stk, 2, 60).await;
            assert_stk_approval(&terminal(api, &a).await, 2);
            let r = start_auth(api, &auth_body(&ussd, 2, 60), Some("before-crash")).await;
            assert_eq!(r.status, 201, "{r:?}");
            let b = r.body["id"].as_str().unwrap().to_owned();
            assert_eq!(terminal(api, &b).await["status"], "approved");
            // Nobody answers this one: the network does not know the number.
            let c = start_ok(api, &silent, 2, 300).await;
            log.wait_prompts(&silent, 1).await;
            let v = get(api, &c, 0).await.body;
            assert_eq!(v["state"], "pending", "{v}");
            (gw, (a, b, c))
        });
        rt.shutdown_timeout(Duration::from_secs(2));
        drop(gw);
        ids
    })
    .join()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_mid_flight_the_restarted_gateway_takes_it_over_and_keeps_what_was_done() {
    let (smsc, log) = start_smsc(user(0.0, 0.0, 0.0)).await;
    let dir = tempfile::tempdir().unwrap();
    // The registry knows twice the network's handsets: the extra ones never answer.
    let count = 2 * u64::from(SIZE);
    let stk = msisdn(index_with(true, 5));
    let ussd = msisdn(index_with(false, 8));
    let silent = (u64::from(SIZE)..count)
        .find(|i| !gateway::subscribers::has_applet(SEED, *i, SHARE))
        .map(msisdn)
        .unwrap();
    within(40, async {
        let config = gateway_config(smsc.local_addr(), dir.path(), count);
        let (a, b, c) = tokio::task::spawn_blocking({
            let (log, stk, ussd, silent) = (log.clone(), stk.clone(), ussd.clone(), silent.clone());
            move || run_gateway_then_crash(config, log, stk, ussd, silent)
        })
        .await
        .unwrap();

        let gw = start_gateway(gateway_config(smsc.local_addr(), dir.path(), count)).await;
        let api = gw.api_addr;
        // What was in flight with time left is taken over: its prompt is still out, its answer
        // awaited (this handset never answers), and it ends once, here by the client's cancel.
        let v = get(api, &c, 0).await.body;
        assert_eq!(
            (&v["state"], &v["step"]),
            (&json!("pending"), &json!("prompted")),
            "{v}"
        );
        let cancelled = cancel(api, &c).await.body;
        assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
        assert_eq!(get(api, &c, 0).await.body["status"], "cancelled");
        // What had ended is kept.
        assert_stk_approval(&get(api, &a, 0).await.body, 2);
        assert_eq!(get(api, &b, 0).await.body["status"], "approved");
        // The idempotency key still names the same authorization.
        let retried = start_auth(api, &auth_body(&ussd, 2, 60), Some("before-crash")).await;
        assert_eq!(retried.body["id"], b.as_str(), "{retried:?}");
        assert_eq!(retried.body["status"], "approved", "{retried:?}");
        // The OTA counter survived: the card accepts the next push.
        let d = start_ok(api, &stk, 2, 60).await;
        assert_stk_approval(&terminal(api, &d).await, 2);
        // The MSISDN it held is free again.
        let e = start_ok(api, &silent, 2, 60).await;
        cancel(api, &e).await;
        gw.shutdown().await;
        // docs/api.md: "the first answer is 201, a retry 200 with the same id".
        assert_eq!(
            retried.status, 200,
            "a start retried after a restart: {retried:?}"
        );
    })
    .await;
    smsc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_ends_what_runs_and_a_restart_reads_it_the_same() {
    let (smsc, log) = start_smsc(user(1.0, 0.0, 0.0)).await;
    let dir = tempfile::tempdir().unwrap();
    let m = msisdn(index_with(false, 9));
    within(30, async {
        let gw = start_gateway(gateway_config(
            smsc.local_addr(),
            dir.path(),
            u64::from(SIZE),
        ))
        .await;
        let api = gw.api_addr;
        let id = start_ok(api, &m, 2, 300).await;
        log.wait_prompts(&m, 1).await;
        gw.shutdown().await;
        let gw = start_gateway(gateway_config(
            smsc.local_addr(),
            dir.path(),
            u64::from(SIZE),
        ))
        .await;
        let v = get(gw.api_addr, &id, 0).await.body;
        assert_eq!(v["state"], "terminal", "{v}");
        assert_eq!(v["status"], "expired", "{v}");
        assert_eq!(v["reason"], "gateway_shutdown", "{v}");
        gw.shutdown().await;
    })
    .await;
    smsc.shutdown().await;
}

// ---------------------------------------------------------------- Keycloak CIBA

/// A fake Keycloak: records each CIBA callback (Authorization header, JSON body), answers 200.
async fn fake_keycloak() -> (SocketAddr, mpsc::UnboundedReceiver<(String, Value)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/realms/e2e/protocol/openid-connect/ext/ciba/auth/callback",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let tx = tx.clone();
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let _ = tx.send((auth, serde_json::from_str(&body).unwrap_or(Value::Null)));
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keycloak_ciba_request_is_answered_201_and_called_back_with_succeed() {
    let (kc_addr, mut callbacks) = fake_keycloak().await;
    let realm = format!("http://{kc_addr}/realms/e2e");
    let env = Env::start(user(0.0, 0.0, 0.0), |c| {
        c.keycloak = Some(gateway::config::KeycloakConfig {
            realm_url: realm.clone(),
            jwks_file: Some(keycloak_fixture("realm.jwks.json")),
            jwks_url: None,
            audience: realm.clone(),
            username_map_file: None,
            usernames_are_msisdn: true,
        });
    })
    .await;
    let m = msisdn(index_with(true, 6));
    within(25, async {
        let token = keycloak_token(&realm, "auth-result-1");
        let bearer = format!("Bearer {token}");
        let body = json!({
            "login_hint": m,
            "binding_message": "AB12",
            "is_consent_required": true,
            "scope": "openid",
            "acr_values": "3",
        });
        let r = http(
            env.api,
            "POST",
            "/keycloak/ciba",
            &[("Authorization", bearer.as_str())],
            Some(&body),
        )
        .await;
        assert_eq!(r.status, 201, "{r:?}");
        assert!(r.body["authorization_id"].is_string(), "{r:?}");

        let (auth, result) = callbacks.recv().await.unwrap();
        assert_eq!(auth, bearer);
        assert_eq!(result, json!({"status": "SUCCEED"}));
        assert_eq!(env.log.prompts_to(&m), 1);
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_authorization_and_its_idempotency_key_are_purged_after_their_ttl() {
    let env = Env::start(user(0.0, 0.0, 0.0), |c| {
        c.store.terminal_ttl_secs = 1;
        c.store.purge_interval_secs = 1;
    })
    .await;
    let m = msisdn(index_with(true, 0));
    within(30, async {
        let r = start_auth(env.api, &auth_body(&m, 2, 60), Some("purge-me")).await;
        assert_eq!(r.status, 201, "{r:?}");
        let id = r.body["id"].as_str().unwrap().to_owned();
        assert_eq!(terminal(env.api, &id).await["status"], "approved");
        // The scheduled purge removes the record once its TTL is over: GET says 404.
        loop {
            let g = get(env.api, &id, 0).await;
            if g.status == 404 {
                break;
            }
            assert_eq!(g.status, 200, "{g:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // And the key went with it: the same key starts a new authorization.
        let again = start_auth(env.api, &auth_body(&m, 2, 60), Some("purge-me")).await;
        assert_eq!(again.status, 201, "{again:?}");
        assert_ne!(again.body["id"], id.as_str());
        let second = again.body["id"].as_str().unwrap().to_owned();
        assert_eq!(terminal(env.api, &second).await["status"], "approved");
    })
    .await;
    env.stop().await;
}
