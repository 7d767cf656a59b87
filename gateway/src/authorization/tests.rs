//! The authorization manager over the in-memory store and a scripted fake channel.

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::Notify;

use super::service::*;
use super::*;
use crate::channel::{AuthChannel, AuthRequest, AuthResult, CardProof, PinVerifier as _};
use crate::routing::{PortabilityTable, Router};
use crate::smpp::session::SubmitFailure;
use crate::store::{
    AuthState, AuthorizationRecord, AuthorizationUpdate, Channel, Creation, Ended, InMemoryStore,
    LockState, LockoutPolicy, OtaCounterKey, OutboxEntry, OutboxPolicy, PinAttempt, PurgeReport,
    Store, StoreError, StoreOptions,
};
use crate::subscribers::provision::ProvisionParams;
use crate::subscribers::{has_applet, Pepper, SubscriberRegistry};
use sim_applet_model::applet::protocol::{Loa as AppletLoa, Outcome};
use std::ops::Range;
use std::sync::atomic::AtomicBool;

const SEED: u64 = 11;
const BASE: u64 = 48_600_000_000;
const COUNT: u64 = 40;

#[derive(Clone)]
enum Script {
    Reply(AuthResult),
    /// Never answers until `release` is notified, then answers `Denied`.
    Hang,
}

#[derive(Default)]
struct FakeChannel {
    script: Mutex<VecDeque<Script>>,
    seen: Mutex<Vec<AuthRequest>>,
    /// Requests taken over after a restart.
    resumed: Mutex<Vec<AuthRequest>>,
    release: Arc<Notify>,
}

impl FakeChannel {
    fn push(&self, s: Script) {
        self.script.lock().unwrap().push_back(s);
    }
    fn seen(&self) -> Vec<AuthRequest> {
        self.seen.lock().unwrap().clone()
    }
}

impl ChannelPort for Arc<FakeChannel> {
    fn authorize(&self, request: AuthRequest) -> BoxFuture<'static, AuthResult> {
        self.seen.lock().unwrap().push(request);
        let next = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Script::Reply(AuthResult::Expired));
        let release = self.release.clone();
        async move {
            match next {
                Script::Reply(r) => r,
                Script::Hang => {
                    release.notified().await;
                    AuthResult::Denied
                }
            }
        }
        .boxed()
    }
    fn resume(&self, request: AuthRequest) -> BoxFuture<'static, AuthResult> {
        self.resumed.lock().unwrap().push(request);
        let next = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Script::Reply(AuthResult::Expired));
        async move {
            match next {
                Script::Reply(r) => r,
                Script::Hang => std::future::pending().await,
            }
        }
        .boxed()
    }
    fn binds_up(&self) -> (usize, usize) {
        (1, 1)
    }
}

fn pepper() -> Pepper {
    Pepper::new(b"session test pepper, long enough").unwrap()
}

struct Rig {
    manager: AuthorizationManager,
    store: Arc<dyn Store>,
    channel: Arc<FakeChannel>,
    subscribers: Arc<SubscriberRegistry>,
    clock: Arc<AtomicU64>,
    audit_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn rig_with(settings: ManagerSettings, store: Arc<dyn Store>) -> Rig {
    let params = ProvisionParams {
        seed: SEED,
        count: COUNT,
        msisdn_base: BASE,
        applet_share: 0.5,
    };
    let subscribers = Arc::new(SubscriberRegistry::generate(&params, &pepper()).unwrap());
    let router = Router::new(
        &[("red".to_owned(), vec!["48600".parse().unwrap()])],
        PortabilityTable::new(),
    )
    .unwrap();
    let channel = Arc::new(FakeChannel::default());
    let clock = Arc::new(AtomicU64::new(1_700_000_000_000));
    let c = clock.clone();
    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("audit.jsonl");
    let manager = AuthorizationManager::new(ManagerDeps {
        store: store.clone(),
        router: Arc::new(router),
        subscribers: subscribers.clone(),
        operators: vec![Operator {
            name: "red".into(),
            channel: Arc::new(channel.clone()),
            metrics: None,
        }],
        settings,
        audit: Some(AuditLog::open(&audit_path).unwrap()),
        clock: Arc::new(move || c.load(Ordering::SeqCst)),
        outbox_observers: None,
        // Test receivers listen on plain http on loopback.
        callbacks: crate::callback::CallbackClient::new(
            Default::default(),
            &crate::outbound::OutboundSettings {
                allow_http: true,
                ..Default::default()
            },
        )
        .unwrap(),
    });
    Rig {
        manager,
        store,
        channel,
        subscribers,
        clock,
        audit_path,
        _dir: dir,
    }
}

fn rig(settings: ManagerSettings) -> Rig {
    rig_with(
        settings,
        Arc::new(InMemoryStore::new(StoreOptions::default())),
    )
}

fn msisdn(applet: bool, skip: usize) -> String {
    (0..COUNT)
        .filter(|i| has_applet(SEED, *i, 0.5) == applet)
        .nth(skip)
        .map(|i| (BASE + i).to_string())
        .unwrap()
}

fn request(msisdn: &str, loa: Loa) -> StartRequest {
    StartRequest {
        client_id: "rp".into(),
        msisdn: msisdn.into(),
        loa,
        client_name: "Portal".into(),
        consent_text: "Log in?".into(),
        binding_message: Some("AB12".into()),
        expiry: Duration::from_secs(60),
        callback_url: None,
        idempotency_key: None,
        keycloak: None,
    }
}

/// The audit log once it holds `lines` lines (the outbox writes them after the ending).
async fn audit_lines(r: &Rig, lines: usize) -> String {
    for _ in 0..500 {
        let text = std::fs::read_to_string(&r.audit_path).unwrap_or_default();
        if text.lines().count() >= lines {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the audit log never reached {lines} line(s)");
}

fn stk_approval(loa: AppletLoa) -> AuthResult {
    AuthResult::Approved {
        loa,
        proof: Some(CardProof {
            counter: 1,
            txid: [1; 8],
            challenge: [2; 16],
            outcome: Outcome::Approved { loa },
            mac: [0xAA; 16],
        }),
    }
}

async fn wait_end(r: &Rig, id: &str) -> AuthorizationView {
    r.manager
        .get("rp", id, Some(Duration::from_secs(30)))
        .await
        .unwrap()
}

fn status(v: &AuthorizationView) -> Option<(TerminalStatus, String)> {
    match &v.state {
        AuthorizationState::Terminal { status, reason } => Some((*status, reason.clone())),
        AuthorizationState::Pending { .. } => None,
    }
}

#[tokio::test]
async fn applet_subscriber_is_approved_over_stk_with_the_card_proof() {
    let r = rig(ManagerSettings::default());
    r.channel.push(Script::Reply(stk_approval(AppletLoa::Loa3)));
    let v = r
        .manager
        .start(request(&msisdn(true, 0), Loa::Loa3))
        .await
        .unwrap();
    assert_eq!(v.channel, Some(ChannelKind::Stk));
    let done = wait_end(&r, &v.id).await;
    assert_eq!(status(&done).unwrap().0, TerminalStatus::Approved);
    assert_eq!(done.loa_achieved, Some(Loa::Loa3));
    assert_eq!(done.proof.as_deref(), Some("aa".repeat(16).as_str()));
    // The prompt's acceptance was recorded, so the view carries the gateway's own time.
    assert!(done.gateway_ms.is_some(), "{done:?}");
    let seen = r.channel.seen();
    assert!(matches!(seen[0].channel, AuthChannel::Stk { counter, .. } if counter >= 1));
    let rec = r.store.get_authorization(&v.id).await.unwrap().unwrap();
    assert!(rec.stk_counter.is_some());
    assert!(rec.prompted_ms.is_some_and(|at| at >= rec.created_ms));
    assert!(rec.state.is_terminal());
    // One audit line, no full MSISDN in it.
    let audit = audit_lines(&r, 1).await;
    assert_eq!(audit.lines().count(), 1);
    assert!(!audit.contains(&msisdn(true, 0)));
    assert_eq!(r.manager.in_flight(), 0);
}

#[tokio::test]
async fn stk_counters_never_repeat_across_authorizations() {
    let r = rig(ManagerSettings::default());
    let m = msisdn(true, 0);
    let mut counters = Vec::new();
    for _ in 0..3 {
        r.channel.push(Script::Reply(AuthResult::Denied));
        let v = r.manager.start(request(&m, Loa::Loa2)).await.unwrap();
        wait_end(&r, &v.id).await;
    }
    for s in r.channel.seen() {
        if let AuthChannel::Stk { counter, .. } = s.channel {
            counters.push(counter);
        }
    }
    assert_eq!(counters.len(), 3);
    assert!(counters.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test]
async fn non_applet_subscriber_goes_over_ussd() {
    let r = rig(ManagerSettings::default());
    r.channel.push(Script::Reply(AuthResult::Approved {
        loa: AppletLoa::Loa2,
        proof: None,
    }));
    let v = r
        .manager
        .start(request(&msisdn(false, 0), Loa::Loa2))
        .await
        .unwrap();
    assert_eq!(v.channel, Some(ChannelKind::Ussd));
    let done = wait_end(&r, &v.id).await;
    assert_eq!(status(&done).unwrap().0, TerminalStatus::Approved);
    assert_eq!(done.proof, None);
    assert_eq!(r.channel.seen()[0].channel, AuthChannel::Ussd);
}

#[tokio::test]
async fn loa3_over_ussd_is_refused_unless_the_policy_allows_it() {
    let r = rig(ManagerSettings::default());
    let err = r
        .manager
        .start(request(&msisdn(false, 0), Loa::Loa3))
        .await
        .unwrap_err();
    assert!(matches!(err, StartError::Policy(_)));
    assert!(r.channel.seen().is_empty());
}

#[tokio::test]
async fn locked_subscriber_ends_pin_blocked_without_a_prompt() {
    let r = rig(ManagerSettings {
        loa3_over_ussd: true,
        ..ManagerSettings::default()
    });
    let m = msisdn(false, 1);
    let now = r.clock.load(Ordering::SeqCst);
    let policy = crate::store::LockoutPolicy::default();
    for _ in 0..3 {
        r.store.count_pin_attempt(&m, now, &policy).await.unwrap();
    }
    let v = r.manager.start(request(&m, Loa::Loa3)).await.unwrap();
    assert_eq!(
        status(&v),
        Some((TerminalStatus::PinBlocked, "ussd_pin_locked".into()))
    );
    assert!(r.channel.seen().is_empty());
    assert_eq!(r.manager.in_flight(), 0);
}

#[tokio::test]
async fn three_wrong_ussd_pins_lock_the_subscriber() {
    let r = rig(ManagerSettings {
        loa3_over_ussd: true,
        ..ManagerSettings::default()
    });
    let m = msisdn(false, 2);
    let check = UssdPinCheck::new(
        r.store.clone(),
        r.subscribers.clone(),
        pepper(),
        crate::store::LockoutPolicy::default(),
        {
            let c = r.clock.clone();
            Arc::new(move || c.load(Ordering::SeqCst))
        },
    );
    for _ in 0..3 {
        assert!(!check.verify(&m, "99999999").await);
    }
    let now = r.clock.load(Ordering::SeqCst);
    assert!(matches!(
        r.store.lock_state(&m, now).await.unwrap(),
        LockState::Locked { .. }
    ));
    // The wrong PIN that locked ends as pin_blocked.
    r.channel.push(Script::Reply(AuthResult::WrongPin));
    r.clock.fetch_add(16 * 60 * 1000, Ordering::SeqCst);
    for _ in 0..2 {
        assert!(!check.verify(&m, "99999999").await);
    }
    let v = r.manager.start(request(&m, Loa::Loa3)).await.unwrap();
    // The fake answers WrongPin without calling the verifier: count the third one here.
    assert!(!check.verify(&m, "99999999").await);
    let done = wait_end(&r, &v.id).await;
    assert_eq!(status(&done).unwrap().0, TerminalStatus::PinBlocked);
}

#[tokio::test]
async fn second_concurrent_prompt_for_one_msisdn_is_refused() {
    let r = rig(ManagerSettings::default());
    r.channel.push(Script::Hang);
    let m = msisdn(true, 0);
    let first = r.manager.start(request(&m, Loa::Loa2)).await.unwrap();
    let err = r.manager.start(request(&m, Loa::Loa2)).await.unwrap_err();
    assert_eq!(err, StartError::AlreadyInProgress);
    r.channel.release.notify_one();
    let done = wait_end(&r, &first.id).await;
    assert_eq!(status(&done).unwrap().0, TerminalStatus::Denied);
    // The slot is free again.
    r.channel.push(Script::Reply(AuthResult::Denied));
    r.manager.start(request(&m, Loa::Loa2)).await.unwrap();
}

#[tokio::test]
async fn admission_cap_answers_overloaded_at_once() {
    let r = rig(ManagerSettings {
        max_in_flight: 1,
        ..ManagerSettings::default()
    });
    r.channel.push(Script::Hang);
    r.manager
        .start(request(&msisdn(true, 0), Loa::Loa2))
        .await
        .unwrap();
    let err = r
        .manager
        .start(request(&msisdn(true, 1), Loa::Loa2))
        .await
        .unwrap_err();
    assert!(matches!(err, StartError::Overloaded { .. }));
}

#[tokio::test]
async fn idempotent_retry_returns_the_same_authorization() {
    let r = rig(ManagerSettings::default());
    r.channel.push(Script::Hang);
    let mut req = request(&msisdn(true, 0), Loa::Loa2);
    req.idempotency_key = Some("k1".into());
    let a = r.manager.start(req.clone()).await.unwrap();
    let b = r.manager.start(req.clone()).await.unwrap();
    assert_eq!(a.id, b.id);
    r.channel.release.notify_one();
    wait_end(&r, &a.id).await;
    // After the end, the store's claim still points at it.
    let c = r.manager.start(req).await.unwrap();
    assert_eq!(a.id, c.id);
    assert_eq!(r.channel.seen().len(), 1);
}

#[tokio::test]
async fn undelivered_stk_push_falls_back_to_ussd() {
    let r = rig(ManagerSettings::default());
    r.channel.push(Script::Reply(AuthResult::DeliveryError(
        SubmitFailure::ResponseTimeout,
    )));
    r.channel.push(Script::Reply(AuthResult::Approved {
        loa: AppletLoa::Loa2,
        proof: None,
    }));
    let v = r
        .manager
        .start(request(&msisdn(true, 0), Loa::Loa2))
        .await
        .unwrap();
    let done = wait_end(&r, &v.id).await;
    assert_eq!(status(&done).unwrap().0, TerminalStatus::Approved);
    assert_eq!(done.channel, Some(ChannelKind::Ussd));
    let seen = r.channel.seen();
    assert!(matches!(seen[0].channel, AuthChannel::Stk { .. }));
    assert_eq!(seen[1].channel, AuthChannel::Ussd);
    // Read back from the store, the channel used is kept.
    let again = r.manager.get("rp", &v.id, None).await.unwrap();
    assert_eq!(again.channel, Some(ChannelKind::Ussd));
}

#[tokio::test]
async fn no_fallback_when_disabled() {
    let r = rig(ManagerSettings {
        fallback_stk_to_ussd: false,
        ..ManagerSettings::default()
    });
    r.channel.push(Script::Reply(AuthResult::DeliveryError(
        SubmitFailure::ResponseTimeout,
    )));
    let v = r
        .manager
        .start(request(&msisdn(true, 0), Loa::Loa2))
        .await
        .unwrap();
    let done = wait_end(&r, &v.id).await;
    assert_eq!(status(&done).unwrap().0, TerminalStatus::DeliveryError);
    assert_eq!(r.channel.seen().len(), 1);
}

#[tokio::test]
async fn forged_or_proofless_stk_answer_never_approves() {
    let r = rig(ManagerSettings::default());
    r.channel.push(Script::Reply(AuthResult::Approved {
        loa: AppletLoa::Loa2,
        proof: None,
    }));
    let v = r
        .manager
        .start(request(&msisdn(true, 0), Loa::Loa2))
        .await
        .unwrap();
    let done = wait_end(&r, &v.id).await;
    assert_eq!(status(&done).unwrap().0, TerminalStatus::SimError);
    assert_eq!(done.proof, None);
}

#[tokio::test]
async fn cancel_wins_once_and_a_late_answer_is_ignored() {
    let r = rig(ManagerSettings::default());
    r.channel.push(Script::Hang);
    let v = r
        .manager
        .start(request(&msisdn(true, 0), Loa::Loa2))
        .await
        .unwrap();
    let c = r.manager.cancel("rp", &v.id).await.unwrap();
    assert_eq!(status(&c).unwrap().0, TerminalStatus::Cancelled);
    r.channel.release.notify_one();
    tokio::task::yield_now().await;
    let again = r.manager.get("rp", &v.id, None).await.unwrap();
    assert_eq!(status(&again).unwrap().0, TerminalStatus::Cancelled);
    // Cancelling again returns the same ending.
    let twice = r.manager.cancel("rp", &v.id).await.unwrap();
    assert_eq!(status(&twice).unwrap().0, TerminalStatus::Cancelled);
    assert_eq!(r.manager.in_flight(), 0);
    let audit = audit_lines(&r, 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(audit.lines().count(), 1);
}

#[tokio::test]
async fn another_clients_authorization_is_not_found() {
    let r = rig(ManagerSettings::default());
    r.channel.push(Script::Hang);
    let v = r
        .manager
        .start(request(&msisdn(true, 0), Loa::Loa2))
        .await
        .unwrap();
    assert_eq!(
        r.manager.get("other", &v.id, None).await.unwrap_err(),
        LookupError::NotFound
    );
    assert_eq!(
        r.manager.cancel("other", &v.id).await.unwrap_err(),
        LookupError::NotFound
    );
    assert_eq!(
        r.manager.get("rp", "nope", None).await.unwrap_err(),
        LookupError::NotFound
    );
}

#[tokio::test]
async fn long_poll_returns_pending_when_the_wait_runs_out() {
    let r = rig(ManagerSettings::default());
    r.channel.push(Script::Hang);
    let v = r
        .manager
        .start(request(&msisdn(true, 0), Loa::Loa2))
        .await
        .unwrap();
    tokio::time::pause();
    let p = r
        .manager
        .get("rp", &v.id, Some(Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(status(&p).is_none());
}

#[tokio::test]
async fn unknown_numbers_are_refused() {
    let r = rig(ManagerSettings::default());
    let err = r
        .manager
        .start(request("48700000001", Loa::Loa2))
        .await
        .unwrap_err();
    assert_eq!(err, StartError::UnknownSubscriber);
    let err = r
        .manager
        .start(request(&(BASE + COUNT + 5).to_string(), Loa::Loa2))
        .await
        .unwrap_err();
    assert_eq!(err, StartError::UnknownSubscriber);
    let err = r
        .manager
        .start(request("12ab", Loa::Loa2))
        .await
        .unwrap_err();
    assert!(matches!(err, StartError::Invalid(_)));
}

#[tokio::test]
async fn restart_recovery_ends_every_in_flight_record() {
    let store: Arc<dyn Store> = Arc::new(InMemoryStore::new(StoreOptions::default()));
    for (i, state) in [AuthState::Created, AuthState::Prompted]
        .into_iter()
        .enumerate()
    {
        store
            .create_authorization(
                &AuthorizationRecord {
                    id: format!("old{i}"),
                    client_id: "rp".into(),
                    msisdn: msisdn(true, 0),
                    operator: "red".into(),
                    channel: Channel::Stk,
                    loa_requested: crate::store::Loa::Loa2,
                    loa_achieved: None,
                    state,
                    created_ms: 1,
                    // One deadline still ahead: it ends anyway (its dialog is gone).
                    deadline_ms: if i == 0 { 2 } else { u64::MAX },
                    updated_ms: 1,
                    stk_counter: None,
                    challenge: Vec::new(),
                    txid: Vec::new(),
                    ussd_key: None,
                    proof: None,
                    callback_url: None,
                    idempotency_key: None,
                    prompted_ms: None,
                    keycloak: None,
                    node: None,
                },
                1,
                0,
                None,
            )
            .await
            .unwrap();
    }
    let r = rig_with(ManagerSettings::default(), store);
    assert_eq!(
        r.manager.recover().await.unwrap(),
        Recovered {
            resumed: 0,
            ended: 2
        }
    );
    assert!(r.store.list_in_flight().await.unwrap().is_empty());
    for id in ["old0", "old1"] {
        let v = r.manager.get("rp", id, None).await.unwrap();
        assert_eq!(
            status(&v),
            Some((TerminalStatus::Expired, "gateway_restarted".into()))
        );
    }
}

#[tokio::test]
async fn shutdown_ends_running_authorizations_definitely() {
    let r = rig(ManagerSettings::default());
    r.channel.push(Script::Hang);
    let v = r
        .manager
        .start(request(&msisdn(true, 0), Loa::Loa2))
        .await
        .unwrap();
    r.manager.shutdown(Duration::from_millis(1)).await;
    let done = r.manager.get("rp", &v.id, None).await.unwrap();
    assert_eq!(
        status(&done),
        Some((TerminalStatus::Expired, "gateway_shutdown".into()))
    );
    assert!(r.store.list_in_flight().await.unwrap().is_empty());
    let err = r
        .manager
        .start(request(&msisdn(true, 1), Loa::Loa2))
        .await
        .unwrap_err();
    assert!(matches!(err, StartError::Overloaded { .. }));
    assert!(!r.manager.readiness().ready);
}

/// The in-memory store, with endings refused while `fail_endings` is set (a disk that fails
/// the terminal commit, a Redis that is down).
struct FlakyStore {
    inner: InMemoryStore,
    fail_endings: AtomicBool,
}

#[async_trait::async_trait]
impl Store for FlakyStore {
    async fn reserve_ota_counters(
        &self,
        key: &OtaCounterKey,
        n: u64,
    ) -> Result<Range<u64>, StoreError> {
        self.inner.reserve_ota_counters(key, n).await
    }
    async fn raise_ota_counter_floor(
        &self,
        key: &OtaCounterKey,
        floor: u64,
    ) -> Result<u64, StoreError> {
        self.inner.raise_ota_counter_floor(key, floor).await
    }
    async fn ota_high_water(&self, key: &OtaCounterKey) -> Result<u64, StoreError> {
        self.inner.ota_high_water(key).await
    }
    async fn count_pin_attempt(
        &self,
        msisdn: &str,
        now_ms: u64,
        policy: &LockoutPolicy,
    ) -> Result<PinAttempt, StoreError> {
        self.inner.count_pin_attempt(msisdn, now_ms, policy).await
    }
    async fn reset_pin_failures(&self, msisdn: &str) -> Result<(), StoreError> {
        self.inner.reset_pin_failures(msisdn).await
    }
    async fn lock_state(&self, msisdn: &str, now_ms: u64) -> Result<LockState, StoreError> {
        self.inner.lock_state(msisdn, now_ms).await
    }
    async fn create_authorization(
        &self,
        record: &AuthorizationRecord,
        now_ms: u64,
        ttl_ms: u64,
        ota: Option<&OtaCounterKey>,
    ) -> Result<Creation, StoreError> {
        self.inner
            .create_authorization(record, now_ms, ttl_ms, ota)
            .await
    }
    async fn update_authorization_state(
        &self,
        id: &str,
        expected: &AuthState,
        update: &AuthorizationUpdate,
    ) -> Result<AuthorizationRecord, StoreError> {
        self.inner
            .update_authorization_state(id, expected, update)
            .await
    }
    async fn end_authorization(
        &self,
        id: &str,
        update: &AuthorizationUpdate,
        outbox: &OutboxPolicy,
    ) -> Result<Ended, StoreError> {
        if self.fail_endings.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("commit failed: disk on fire".into()));
        }
        self.inner.end_authorization(id, update, outbox).await
    }
    async fn get_authorization(&self, id: &str) -> Result<Option<AuthorizationRecord>, StoreError> {
        self.inner.get_authorization(id).await
    }
    async fn list_in_flight(&self) -> Result<Vec<AuthorizationRecord>, StoreError> {
        self.inner.list_in_flight().await
    }
    async fn in_flight_for_msisdn(
        &self,
        msisdn: &str,
    ) -> Result<Vec<AuthorizationRecord>, StoreError> {
        self.inner.in_flight_for_msisdn(msisdn).await
    }
    async fn outbox_pending(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        self.inner.outbox_pending().await
    }
    async fn outbox_remove(&self, event_id: &str) -> Result<(), StoreError> {
        self.inner.outbox_remove(event_id).await
    }
    async fn purge_expired(&self, now_ms: u64) -> Result<PurgeReport, StoreError> {
        self.inner.purge_expired(now_ms).await
    }
}

fn flaky() -> Arc<FlakyStore> {
    Arc::new(FlakyStore {
        inner: InMemoryStore::new(StoreOptions::default()),
        fail_endings: AtomicBool::new(true),
    })
}

#[tokio::test]
async fn an_ending_the_store_refused_is_never_published_and_lands_once_it_is_stored() {
    let store = flaky();
    let r = rig_with(ManagerSettings::default(), store.clone());
    r.channel.push(Script::Reply(AuthResult::Denied));
    let v = r
        .manager
        .start(request(&msisdn(false, 0), Loa::Loa2))
        .await
        .unwrap();
    // The user denied, the store refused the ending: every reader still sees pending.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let seen = r.manager.get("rp", &v.id, None).await.unwrap();
        assert_eq!(status(&seen), None, "{seen:?}");
        let long_poll = r
            .manager
            .get("rp", &v.id, Some(Duration::from_millis(20)))
            .await
            .unwrap();
        assert_eq!(status(&long_poll), None);
    }
    assert!(std::fs::read_to_string(&r.audit_path)
        .unwrap_or_default()
        .is_empty());
    // The store is back: the same ending lands, once, and every reader sees it.
    store.fail_endings.store(false, Ordering::SeqCst);
    let done = wait_end(&r, &v.id).await;
    assert_eq!(
        status(&done),
        Some((TerminalStatus::Denied, "user_denied".into()))
    );
    assert_eq!(audit_lines(&r, 1).await.lines().count(), 1);
    // After a restart on the same store, the same result.
    let again = rig_with(ManagerSettings::default(), store.clone());
    assert_eq!(again.manager.recover().await.unwrap(), Recovered::default());
    let after = again.manager.get("rp", &v.id, None).await.unwrap();
    assert_eq!(status(&after), status(&done));
}

#[tokio::test]
async fn an_ending_never_stored_stays_pending_and_the_next_start_ends_it_once() {
    let store = flaky();
    let settings = ManagerSettings {
        overrun: Duration::ZERO,
        ..ManagerSettings::default()
    };
    let r = rig_with(settings.clone(), store.clone());
    r.channel.push(Script::Reply(AuthResult::Approved {
        loa: AppletLoa::Loa2,
        proof: None,
    }));
    let mut req = request(&msisdn(false, 0), Loa::Loa2);
    req.expiry = Duration::from_millis(300);
    let v = r.manager.start(req).await.unwrap();
    // Past its deadline the manager stops retrying: the approval was never published.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(r.manager.in_flight(), 0);
    let seen = r.manager.get("rp", &v.id, None).await.unwrap();
    assert_eq!(status(&seen), None, "{seen:?}");
    // The next start ends it, definitely, and nobody ever saw "approved".
    store.fail_endings.store(false, Ordering::SeqCst);
    let next = rig_with(settings, store.clone());
    assert_eq!(next.manager.recover().await.unwrap().ended, 1);
    let after = next.manager.get("rp", &v.id, None).await.unwrap();
    assert_eq!(status(&after).unwrap().0, TerminalStatus::Expired);
    let twice = r.manager.get("rp", &v.id, None).await.unwrap();
    assert_eq!(status(&twice), status(&after));
}

#[tokio::test]
async fn a_restart_takes_over_prompts_that_can_still_be_answered_and_ends_the_rest() {
    let store: Arc<dyn Store> = Arc::new(InMemoryStore::new(StoreOptions::default()));
    let now = 1_700_000_000_000u64;
    let base = AuthorizationRecord {
        id: String::new(),
        client_id: "rp".into(),
        msisdn: String::new(),
        operator: "red".into(),
        channel: Channel::Stk,
        loa_requested: crate::store::Loa::Loa2,
        loa_achieved: None,
        state: AuthState::Prompted,
        created_ms: now - 5_000,
        deadline_ms: now + 60_000,
        updated_ms: now - 5_000,
        stk_counter: Some(7),
        challenge: vec![2; 16],
        txid: vec![1; 8],
        ussd_key: None,
        proof: None,
        callback_url: None,
        idempotency_key: None,
        prompted_ms: Some(now - 4_000),
        keycloak: None,
        node: None,
    };
    let stk = AuthorizationRecord {
        id: "stk".into(),
        msisdn: msisdn(true, 0),
        ..base.clone()
    };
    let ussd = AuthorizationRecord {
        id: "ussd".into(),
        msisdn: msisdn(false, 0),
        channel: Channel::Ussd,
        state: AuthState::Routed,
        stk_counter: None,
        challenge: Vec::new(),
        txid: Vec::new(),
        ussd_key: Some(5),
        ..base.clone()
    };
    let late = AuthorizationRecord {
        id: "late".into(),
        msisdn: msisdn(true, 1),
        deadline_ms: now - 1,
        ..base.clone()
    };
    for r in [&stk, &ussd, &late] {
        store.create_authorization(r, now, 0, None).await.unwrap();
    }
    let r = rig_with(ManagerSettings::default(), store);
    r.channel.push(Script::Reply(AuthResult::Denied));
    r.channel.push(Script::Reply(AuthResult::Denied));
    assert_eq!(
        r.manager.recover().await.unwrap(),
        Recovered {
            resumed: 2,
            ended: 1
        }
    );
    for id in ["stk", "ussd"] {
        let done = wait_end(&r, id).await;
        assert_eq!(
            status(&done),
            Some((TerminalStatus::Denied, "user_denied".into())),
            "{id}"
        );
    }
    let late = r.manager.get("rp", "late", None).await.unwrap();
    assert_eq!(
        status(&late),
        Some((TerminalStatus::Expired, "gateway_restarted".into()))
    );
    // Nothing was sent again; each was taken over with what the store kept.
    assert!(r.channel.seen().is_empty());
    let resumed = r.channel.resumed.lock().unwrap().clone();
    assert_eq!(resumed.len(), 2);
    let stk_req = resumed.iter().find(|q| q.msisdn == stk.msisdn).unwrap();
    assert!(matches!(
        stk_req.channel,
        AuthChannel::Stk { counter: 7, .. }
    ));
    let nonce = stk_req.stk_nonce.unwrap();
    assert_eq!((nonce.txid, nonce.challenge), ([1; 8], [2; 16]));
    let ussd_req = resumed.iter().find(|q| q.msisdn == ussd.msisdn).unwrap();
    assert_eq!(ussd_req.ussd_key, Some(5));
    assert!(ussd_req.expiry_secs <= 60 && ussd_req.expiry_secs >= 59);
}

#[tokio::test]
async fn what_checking_an_answer_needs_is_stored_before_the_prompt_goes_out() {
    let r = rig(ManagerSettings::default());
    r.channel.push(Script::Hang);
    r.channel.push(Script::Hang);
    let stk = r
        .manager
        .start(request(&msisdn(true, 0), Loa::Loa2))
        .await
        .unwrap();
    let ussd = r
        .manager
        .start(request(&msisdn(false, 0), Loa::Loa2))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let seen = r.channel.seen();
    let stored_stk = r.store.get_authorization(&stk.id).await.unwrap().unwrap();
    let sent_stk = seen.iter().find(|q| q.msisdn == stored_stk.msisdn).unwrap();
    let AuthChannel::Stk { counter, .. } = sent_stk.channel else {
        panic!("not a push");
    };
    assert_eq!(stored_stk.stk_counter, Some(counter));
    let nonce = sent_stk.stk_nonce.unwrap();
    assert_eq!(stored_stk.txid, nonce.txid.to_vec());
    assert_eq!(stored_stk.challenge, nonce.challenge.to_vec());
    let stored_ussd = r.store.get_authorization(&ussd.id).await.unwrap().unwrap();
    let sent_ussd = seen
        .iter()
        .find(|q| q.msisdn == stored_ussd.msisdn)
        .unwrap();
    assert!(stored_ussd.ussd_key.is_some());
    assert_eq!(sent_ussd.ussd_key, stored_ussd.ussd_key);
}

#[tokio::test]
async fn a_restart_resumes_a_fallback_prompt_over_ussd_not_the_failed_push() {
    let store: Arc<dyn Store> = Arc::new(InMemoryStore::new(StoreOptions::default()));
    let r = rig_with(ManagerSettings::default(), store.clone());
    // The push never reaches the handset; the fallback prompt hangs (the process "dies").
    r.channel.push(Script::Reply(AuthResult::DeliveryError(
        SubmitFailure::ResponseTimeout,
    )));
    r.channel.push(Script::Hang);
    let v = r
        .manager
        .start(request(&msisdn(true, 0), Loa::Loa2))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let sent = r.channel.seen();
    assert_eq!(sent.len(), 2);
    let fallback_key = sent[1].ussd_key.expect("the fallback prompt has a key");
    let stored = store.get_authorization(&v.id).await.unwrap().unwrap();
    assert_eq!(
        stored.ussd_key,
        Some(fallback_key),
        "stored with the record"
    );

    // A new process on the same store takes it over as the USSD dialog it had become.
    let next = rig_with(ManagerSettings::default(), store);
    next.channel.push(Script::Reply(AuthResult::Approved {
        loa: AppletLoa::Loa2,
        proof: None,
    }));
    assert_eq!(next.manager.recover().await.unwrap().resumed, 1);
    let done = wait_end(&next, &v.id).await;
    assert_eq!(status(&done).unwrap().0, TerminalStatus::Approved);
    assert_eq!(done.channel, Some(ChannelKind::Ussd));
    let resumed = next.channel.resumed.lock().unwrap().clone();
    assert_eq!(resumed[0].channel, AuthChannel::Ussd);
    assert_eq!(resumed[0].ussd_key, Some(fallback_key));
}

#[tokio::test]
async fn a_card_that_reports_our_counter_low_gets_one_more_push_above_a_raised_floor() {
    use sim_applet_model::ota::ResponseStatus;
    let r = rig(ManagerSettings::default());
    let m = msisdn(true, 0);
    let low = || {
        Script::Reply(AuthResult::SimError(crate::channel::SimFailure::Por(
            ResponseStatus::CounterLow,
        )))
    };
    let stk_counters = |r: &Rig| -> Vec<u64> {
        r.channel
            .seen()
            .iter()
            .filter_map(|s| match s.channel {
                AuthChannel::Stk { counter, .. } => Some(counter),
                AuthChannel::Ussd => None,
            })
            .collect()
    };
    r.channel.push(low());
    r.channel.push(Script::Reply(AuthResult::Denied));
    let v = r.manager.start(request(&m, Loa::Loa2)).await.unwrap();
    let done = wait_end(&r, &v.id).await;
    assert_eq!(status(&done).unwrap().0, TerminalStatus::Denied, "{done:?}");
    let counters = stk_counters(&r);
    assert_eq!(counters.len(), 2, "one more push, with a new counter");
    // The floor jumped by 65 536: past whatever the card may have seen.
    assert!(counters[1] >= counters[0] + 65_535, "{counters:?}");
    // Once per authorization: a card still reporting it low ends it.
    r.channel.push(low());
    r.channel.push(low());
    let v = r.manager.start(request(&m, Loa::Loa2)).await.unwrap();
    let done = wait_end(&r, &v.id).await;
    let (s, reason) = status(&done).unwrap();
    assert_eq!(
        (s, reason.as_str()),
        (TerminalStatus::SimError, "ota_refused")
    );
    let counters = stk_counters(&r);
    assert_eq!(counters.len(), 4);
    assert!(
        counters[2] > counters[1],
        "counters keep rising: {counters:?}"
    );
}
