//! The behaviour every [`Store`] backend must show, written once and run against each backend
//! (in memory, embedded redb, journal, and Redis on a `redis-server` each test starts).

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;

use super::records::tests::sample;
use super::*;

pub(crate) const OPTIONS: StoreOptions = StoreOptions {
    terminal_ttl_ms: 10_000,
    durable_commit_interval: DEFAULT_DURABLE_COMMIT_INTERVAL,
    cache_bytes: 16 * 1024 * 1024,
    journal_compact_bytes: crate::store::journal::COMPACT_MIN_BYTES,
};

const POLICY: LockoutPolicy = LockoutPolicy {
    max_failures: 3,
    lockout_ms: 1_000,
    permanent_after_lockouts: None,
};

const AUDITED: OutboxPolicy = OutboxPolicy {
    audit: true,
    callback_window_ms: 60_000,
};

fn key(msisdn: &str) -> OtaCounterKey {
    OtaCounterKey::new(msisdn, [0xB0, 0x00, 0x10], 1)
}

/// An in-flight record without idempotency key or callback.
fn record(id: &str, msisdn: &str) -> AuthorizationRecord {
    AuthorizationRecord {
        id: id.into(),
        msisdn: msisdn.into(),
        idempotency_key: None,
        callback_url: None,
        ..sample()
    }
}

fn terminal(status: TerminalStatus) -> AuthState {
    AuthState::terminal(status, None)
}

async fn create(store: &dyn Store, r: &AuthorizationRecord) {
    assert_eq!(
        store
            .create_authorization(r, 0, 60_000, None)
            .await
            .unwrap(),
        Creation::Created { ota_counter: None }
    );
}

async fn end(store: &dyn Store, id: &str, status: TerminalStatus, at: u64) -> Ended {
    store
        .end_authorization(
            id,
            &AuthorizationUpdate::to(terminal(status), at),
            &OutboxPolicy::default(),
        )
        .await
        .unwrap()
}

pub(crate) async fn counters_start_at_one_and_blocks_do_not_overlap(store: Arc<dyn Store>) {
    let k = key("46700000001");
    assert_eq!(store.ota_high_water(&k).await.unwrap(), OTA_COUNTER_FIRST);
    assert_eq!(store.reserve_ota_counters(&k, 0).await.unwrap(), 1..1);
    assert_eq!(store.reserve_ota_counters(&k, 64).await.unwrap(), 1..65);
    assert_eq!(store.reserve_ota_counters(&k, 64).await.unwrap(), 65..129);
    assert_eq!(store.ota_high_water(&k).await.unwrap(), 129);
    // Another key set of the same subscriber has its own counter.
    let other = OtaCounterKey::new("46700000001", [0xB0, 0x00, 0x10], 2);
    assert_eq!(store.reserve_ota_counters(&other, 1).await.unwrap(), 1..2);
}

pub(crate) async fn counter_floor_raises_but_never_lowers(store: Arc<dyn Store>) {
    let k = key("46700000002");
    assert_eq!(store.raise_ota_counter_floor(&k, 500).await.unwrap(), 500);
    assert_eq!(store.raise_ota_counter_floor(&k, 10).await.unwrap(), 500);
    assert_eq!(store.reserve_ota_counters(&k, 2).await.unwrap(), 500..502);
}

pub(crate) async fn counter_space_exhaustion_is_an_error(store: Arc<dyn Store>) {
    let k = key("46700000003");
    store
        .raise_ota_counter_floor(&k, OTA_COUNTER_MAX)
        .await
        .unwrap();
    assert_eq!(
        store.reserve_ota_counters(&k, 1).await.unwrap(),
        OTA_COUNTER_MAX..OTA_COUNTER_MAX + 1
    );
    assert!(matches!(
        store.reserve_ota_counters(&k, 1).await,
        Err(StoreError::CountersExhausted { key_set: 1, .. })
    ));
    assert!(matches!(
        store.raise_ota_counter_floor(&k, OTA_COUNTER_MAX + 2).await,
        Err(StoreError::CountersExhausted { .. })
    ));
}

pub(crate) async fn pin_attempts_are_counted_before_the_check_and_lock(store: Arc<dyn Store>) {
    let m = "46700000010";
    assert_eq!(
        store.lock_state(m, 0).await.unwrap(),
        LockState::Open { failures: 0 }
    );
    assert_eq!(
        store.count_pin_attempt(m, 1, &POLICY).await.unwrap(),
        PinAttempt::Counted(LockState::Open { failures: 1 })
    );
    store.count_pin_attempt(m, 2, &POLICY).await.unwrap();
    // The third attempt locks as it is counted, before anyone checks the PIN.
    assert_eq!(
        store.count_pin_attempt(m, 3, &POLICY).await.unwrap(),
        PinAttempt::Counted(LockState::Locked { until_ms: 1_003 })
    );
    // While locked, an attempt is refused and not counted.
    assert_eq!(
        store.count_pin_attempt(m, 4, &POLICY).await.unwrap(),
        PinAttempt::Refused(LockState::Locked { until_ms: 1_003 })
    );
    assert_eq!(
        store.lock_state(m, 500).await.unwrap(),
        LockState::Locked { until_ms: 1_003 }
    );
    assert_eq!(
        store.lock_state(m, 1_003).await.unwrap(),
        LockState::Open { failures: 0 }
    );
    // Other subscribers are unaffected.
    assert_eq!(
        store.lock_state("46700000011", 500).await.unwrap(),
        LockState::Open { failures: 0 }
    );
    // A right PIN clears what its attempt counted, the lock included.
    store.reset_pin_failures(m).await.unwrap();
    assert_eq!(
        store.lock_state(m, 500).await.unwrap(),
        LockState::Open { failures: 0 }
    );
}

pub(crate) async fn pin_block_is_permanent_until_reset(store: Arc<dyn Store>) {
    let m = "46700000012";
    let policy = LockoutPolicy {
        permanent_after_lockouts: Some(1),
        ..POLICY
    };
    for t in 0..3 {
        store.count_pin_attempt(m, t, &policy).await.unwrap();
    }
    assert_eq!(
        store.lock_state(m, u64::MAX).await.unwrap(),
        LockState::Blocked
    );
    store.reset_pin_failures(m).await.unwrap();
    assert_eq!(
        store.lock_state(m, u64::MAX).await.unwrap(),
        LockState::Open { failures: 0 }
    );
}

pub(crate) async fn create_then_get_round_trips_and_duplicates_are_refused(store: Arc<dyn Store>) {
    let r = record("auth-1", "46700000020");
    assert_eq!(store.get_authorization("auth-1").await.unwrap(), None);
    create(&*store, &r).await;
    assert_eq!(
        store.get_authorization("auth-1").await.unwrap(),
        Some(r.clone())
    );
    assert!(matches!(
        store.create_authorization(&r, 0, 60_000, None).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    // Endings are never created directly.
    let done = AuthorizationRecord {
        id: "auth-1b".into(),
        state: terminal(TerminalStatus::Denied),
        ..r
    };
    assert!(store
        .create_authorization(&done, 0, 60_000, None)
        .await
        .is_err());
}

pub(crate) async fn creation_reserves_the_push_counter_in_the_same_step(store: Arc<dyn Store>) {
    let k = key("46700000026");
    store.raise_ota_counter_floor(&k, 41).await.unwrap();
    let r = record("auth-ota", "46700000026");
    assert_eq!(
        store
            .create_authorization(&r, 0, 1_000, Some(&k))
            .await
            .unwrap(),
        Creation::Created {
            ota_counter: Some(41)
        }
    );
    let stored = store.get_authorization("auth-ota").await.unwrap().unwrap();
    assert_eq!(stored.stk_counter, Some(41));
    assert_eq!(store.ota_high_water(&k).await.unwrap(), 42);
    // An exhausted key set refuses the whole creation: no record, no claim.
    let spent = key("46700000027");
    store
        .raise_ota_counter_floor(&spent, OTA_COUNTER_MAX + 1)
        .await
        .unwrap();
    let refused = keyed("auth-spent", "rp-1", "k-spent");
    assert!(matches!(
        store
            .create_authorization(&refused, 0, 1_000, Some(&spent))
            .await,
        Err(StoreError::CountersExhausted { .. })
    ));
    assert_eq!(store.get_authorization("auth-spent").await.unwrap(), None);
    let retry = keyed("auth-retry", "rp-1", "k-spent");
    assert!(matches!(
        store
            .create_authorization(&retry, 0, 1_000, None)
            .await
            .unwrap(),
        Creation::Created { .. }
    ));
}

pub(crate) async fn compare_and_set_applies_only_on_the_expected_state(store: Arc<dyn Store>) {
    create(&*store, &record("auth-2", "46700000021")).await;
    let routed = store
        .update_authorization_state(
            "auth-2",
            &AuthState::Created,
            &AuthorizationUpdate::to(AuthState::Routed, 5),
        )
        .await
        .unwrap();
    assert_eq!(routed.state, AuthState::Routed);
    assert_eq!(routed.updated_ms, 5);

    let err = store
        .update_authorization_state(
            "auth-2",
            &AuthState::Created,
            &AuthorizationUpdate::to(AuthState::Prompted, 6),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict { actual, .. } if *actual == AuthState::Routed),
        "{err:?}"
    );

    let answered = store
        .update_authorization_state(
            "auth-2",
            &AuthState::Routed,
            &AuthorizationUpdate::to(AuthState::Answered, 7)
                .with_stk_counter(42)
                .with_proof(vec![9, 9])
                .with_loa_achieved(Loa::Loa3),
        )
        .await
        .unwrap();
    assert_eq!(answered.stk_counter, Some(42));
    assert_eq!(answered.proof, Some(vec![9, 9]));
    assert_eq!(answered.loa_achieved, Some(Loa::Loa3));
    assert_eq!(
        store.get_authorization("auth-2").await.unwrap(),
        Some(answered)
    );
    // A step cannot end an authorization: endings carry their outbox.
    assert!(store
        .update_authorization_state(
            "auth-2",
            &AuthState::Answered,
            &AuthorizationUpdate::to(terminal(TerminalStatus::Approved), 8),
        )
        .await
        .is_err());
}

pub(crate) async fn the_first_ending_is_final_and_writes_its_outbox(store: Arc<dyn Store>) {
    let r = AuthorizationRecord {
        callback_url: Some("https://rp.example/cb".into()),
        keycloak: Some(KeycloakFollow {
            callback_url: "https://kc.example/cb".into(),
            token: "t".into(),
            deadline_ms: 90_000,
            not_before_ms: 1_000,
        }),
        ..record("auth-3", "46700000022")
    };
    create(&*store, &r).await;
    assert!(store.outbox_pending().await.unwrap().is_empty());
    let approved = store
        .end_authorization(
            "auth-3",
            &AuthorizationUpdate::to(terminal(TerminalStatus::Approved), 10),
            &AUDITED,
        )
        .await
        .unwrap();
    assert!(approved.won);
    assert_eq!(approved.record.state, terminal(TerminalStatus::Approved));
    let kinds: Vec<OutboxKind> = approved.outbox.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            OutboxKind::Callback,
            OutboxKind::Keycloak,
            OutboxKind::Audit
        ]
    );
    let keycloak = &approved.outbox[1];
    assert_eq!(keycloak.event_id, "auth-3:keycloak");
    assert_eq!(
        (keycloak.not_before_ms, keycloak.deadline_ms),
        (1_000, 90_000)
    );
    assert_eq!(approved.outbox[0].deadline_ms, 10 + 60_000);
    // Pending entries come oldest first, then by event id.
    let mut written = approved.outbox.clone();
    written.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    assert_eq!(store.outbox_pending().await.unwrap(), written);

    // A later ending loses, changes nothing and owes nothing.
    let late = end(&*store, "auth-3", TerminalStatus::Expired, 11).await;
    assert!(!late.won);
    assert!(late.outbox.is_empty());
    assert_eq!(late.record, approved.record);
    assert_eq!(
        store.get_authorization("auth-3").await.unwrap(),
        Some(approved.record)
    );
    assert_eq!(store.outbox_pending().await.unwrap().len(), 3);
    store.outbox_remove("auth-3:callback").await.unwrap();
    store.outbox_remove("auth-3:callback").await.unwrap();
    let left: Vec<String> = store
        .outbox_pending()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(left, ["auth-3:audit", "auth-3:keycloak"]);
}

pub(crate) async fn ending_an_unknown_id_is_not_found(store: Arc<dyn Store>) {
    let err = store
        .update_authorization_state(
            "nope",
            &AuthState::Created,
            &AuthorizationUpdate::to(AuthState::Routed, 1),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    let err = store
        .end_authorization(
            "nope",
            &AuthorizationUpdate::to(terminal(TerminalStatus::Denied), 1),
            &AUDITED,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
}

pub(crate) async fn in_flight_lists_exclude_terminal_records(store: Arc<dyn Store>) {
    create(&*store, &record("a", "4670")).await;
    create(&*store, &record("b", "46701")).await;
    create(&*store, &record("c", "4670")).await;
    end(&*store, "c", TerminalStatus::Denied, 3).await;
    store
        .update_authorization_state(
            "b",
            &AuthState::Created,
            &AuthorizationUpdate::to(AuthState::Prompted, 3),
        )
        .await
        .unwrap();
    let ids = |v: Vec<AuthorizationRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(store.list_in_flight().await.unwrap()), ["a", "b"]);
    // "4670" is a prefix of "46701": the lookup must match the whole MSISDN.
    assert_eq!(
        ids(store.in_flight_for_msisdn("4670").await.unwrap()),
        ["a"]
    );
    assert_eq!(
        ids(store.in_flight_for_msisdn("46701").await.unwrap()),
        ["b"]
    );
    assert!(store.in_flight_for_msisdn("4671").await.unwrap().is_empty());
}

fn keyed(id: &str, client: &str, key: &str) -> AuthorizationRecord {
    AuthorizationRecord {
        client_id: client.into(),
        idempotency_key: Some(key.into()),
        ..record(id, "46700000025")
    }
}

pub(crate) async fn an_idempotency_key_names_the_first_authorization_until_it_expires(
    store: Arc<dyn Store>,
) {
    let created = |c: Creation| matches!(c, Creation::Created { .. });
    let existing = |c: Creation| match c {
        Creation::Existing(r) => r.id,
        Creation::Created { .. } => "(created)".into(),
    };
    let x = keyed("auth-x", "rp-1", "req-1");
    assert!(created(
        store.create_authorization(&x, 100, 50, None).await.unwrap()
    ));
    assert_eq!(
        existing(
            store
                .create_authorization(&keyed("auth-y", "rp-1", "req-1"), 149, 50, None)
                .await
                .unwrap()
        ),
        "auth-x"
    );
    // Nothing was written for the refused one.
    assert_eq!(store.get_authorization("auth-y").await.unwrap(), None);
    // Same key, other client: independent.
    assert!(created(
        store
            .create_authorization(&keyed("auth-z", "rp-2", "req-1"), 149, 50, None)
            .await
            .unwrap()
    ));
    // Expired: the key names a new authorization.
    assert!(created(
        store
            .create_authorization(&keyed("auth-y", "rp-1", "req-1"), 150, 50, None)
            .await
            .unwrap()
    ));
    assert_eq!(
        existing(
            store
                .create_authorization(&keyed("auth-w", "rp-1", "req-1"), 151, 50, None)
                .await
                .unwrap()
        ),
        "auth-y"
    );
}

pub(crate) async fn purge_removes_only_expired_terminal_records_and_claims(store: Arc<dyn Store>) {
    let ttl = OPTIONS.terminal_ttl_ms;
    store
        .create_authorization(&keyed("old", "rp-1", "k-old"), 0, 150 + ttl, None)
        .await
        .unwrap();
    store
        .create_authorization(&keyed("new", "rp-1", "k-new"), 0, 250 + ttl, None)
        .await
        .unwrap();
    create(&*store, &record("live", "46700000030")).await;
    for (id, at) in [("old", 100), ("new", 200)] {
        end(&*store, id, TerminalStatus::Expired, at).await;
    }

    assert_eq!(
        store.purge_expired(99 + ttl).await.unwrap(),
        PurgeReport::default()
    );
    assert_eq!(
        store.purge_expired(150 + ttl).await.unwrap(),
        PurgeReport {
            authorizations: 1,
            idempotency_keys: 1
        }
    );
    assert_eq!(store.get_authorization("old").await.unwrap(), None);
    assert!(store.get_authorization("new").await.unwrap().is_some());
    // In-flight records never expire by themselves.
    assert!(store.get_authorization("live").await.unwrap().is_some());
    assert_eq!(
        store.purge_expired(u64::MAX).await.unwrap(),
        PurgeReport {
            authorizations: 1,
            idempotency_keys: 1
        }
    );
    assert!(store.get_authorization("live").await.unwrap().is_some());
    assert_eq!(
        store
            .create_authorization(&keyed("again", "rp-1", "k-new"), 1, 10, None)
            .await
            .unwrap(),
        Creation::Created { ota_counter: None }
    );
}

pub(crate) async fn invalid_keys_are_refused(store: Arc<dyn Store>) {
    for bad in ["", "a\nb", &"9".repeat(256)] {
        assert!(matches!(
            store.lock_state(bad, 0).await,
            Err(StoreError::InvalidKey { .. })
        ));
        assert!(matches!(
            store.reserve_ota_counters(&key(bad), 1).await,
            Err(StoreError::InvalidKey { .. })
        ));
        assert!(matches!(
            store
                .create_authorization(&record(bad, "46700000040"), 0, 1, None)
                .await,
            Err(StoreError::InvalidKey { .. })
        ));
    }
}

pub(crate) async fn racing_endings_have_exactly_one_winner(store: Arc<dyn Store>) {
    create(&*store, &record("race", "46700000050")).await;
    let statuses = [
        TerminalStatus::Approved,
        TerminalStatus::Denied,
        TerminalStatus::Expired,
        TerminalStatus::Failed,
    ];
    let tasks: Vec<_> = statuses
        .into_iter()
        .map(|status| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .end_authorization(
                        "race",
                        &AuthorizationUpdate::to(terminal(status), 1),
                        &AUDITED,
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut endings = Vec::new();
    for t in tasks {
        endings.push(t.await.unwrap());
    }
    assert_eq!(endings.iter().filter(|e| e.won).count(), 1);
    // Every loser read the winner's ending; one audit entry, the winner's.
    assert!(endings.windows(2).all(|w| w[0].record == w[1].record));
    assert_eq!(store.outbox_pending().await.unwrap().len(), 1);
    assert!(store.list_in_flight().await.unwrap().is_empty());
}

pub(crate) async fn allocator_counters_are_unique_and_increasing_per_task(store: Arc<dyn Store>) {
    let allocator = Arc::new(OtaCounterAllocator::new(Arc::clone(&store), 8, 16));
    let k = key("46700000060");
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (allocator, k) = (allocator.clone(), k.clone());
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for _ in 0..50 {
                    mine.push(allocator.next(&k).await.unwrap());
                }
                mine
            })
        })
        .collect();
    let mut all = HashSet::new();
    for t in tasks {
        let counters = t.await.unwrap();
        assert!(counters.windows(2).all(|w| w[0] < w[1]), "{counters:?}");
        for c in counters {
            assert!(all.insert(c), "counter {c} handed out twice");
        }
    }
    assert_eq!(all.len(), 200);
    // 200 counters in blocks of 8: 25 reservations, no more.
    assert_eq!(store.ota_high_water(&k).await.unwrap(), 201);
}

pub(crate) async fn many_concurrent_callers_interleave_cas_pin_counts_and_claims(
    store: Arc<dyn Store>,
) {
    const CALLERS: usize = 32;
    const ROUNDS: u64 = 5;
    let counting = LockoutPolicy {
        max_failures: 10_000,
        lockout_ms: 1_000,
        permanent_after_lockouts: None,
    };
    create(&*store, &record("shared", "46700000070")).await;
    let shared_counter = key("46700000071");
    let tasks: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let (store, shared_counter) = (store.clone(), shared_counter.clone());
            tokio::spawn(async move {
                let mine = format!("own-{caller:02}");
                let mut claim = keyed(&mine, "rp-1", "same-key");
                claim.msisdn = format!("4670000{caller:04}");
                let (claimed, pointed_at) = match store
                    .create_authorization(&claim, 0, 60_000, None)
                    .await
                    .unwrap()
                {
                    Creation::Created { .. } => (true, mine.clone()),
                    Creation::Existing(r) => (false, r.id),
                };
                let mut blocks = Vec::new();
                for round in 0..ROUNDS {
                    store
                        .count_pin_attempt("46700000072", round, &counting)
                        .await
                        .unwrap();
                    blocks.push(
                        store
                            .reserve_ota_counters(&shared_counter, 4)
                            .await
                            .unwrap(),
                    );
                }
                let own = format!("own-b-{caller:02}");
                create(&*store, &record(&own, &format!("4671000{caller:04}"))).await;
                store
                    .update_authorization_state(
                        &own,
                        &AuthState::Created,
                        &AuthorizationUpdate::to(AuthState::Prompted, 1),
                    )
                    .await
                    .unwrap();
                assert!(end(&*store, &own, TerminalStatus::Approved, 2).await.won);
                if claimed {
                    assert!(end(&*store, &mine, TerminalStatus::Approved, 2).await.won);
                }
                let won = end(&*store, "shared", TerminalStatus::Denied, 3).await.won;
                (claimed, pointed_at, usize::from(won), blocks)
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    // One claim won, and every other caller was pointed at the winner's id.
    let winners: Vec<&String> = results.iter().filter(|r| r.0).map(|r| &r.1).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(results.iter().all(|r| &r.1 == winners[0]));
    // Every PIN attempt was counted once.
    assert_eq!(
        store.lock_state("46700000072", ROUNDS).await.unwrap(),
        LockState::Open {
            failures: (CALLERS as u64 * ROUNDS) as u32
        }
    );
    // OTA counter blocks never overlapped, and nothing was reserved twice or lost.
    let mut counters = HashSet::new();
    for r in &results {
        for block in &r.3 {
            for c in block.clone() {
                assert!(counters.insert(c), "counter {c} reserved twice");
            }
        }
    }
    assert_eq!(counters.len() as u64, CALLERS as u64 * ROUNDS * 4);
    assert_eq!(
        store.ota_high_water(&shared_counter).await.unwrap(),
        1 + CALLERS as u64 * ROUNDS * 4
    );
    // One ending of the shared authorization won; every own one ended.
    assert_eq!(results.iter().map(|r| r.2).sum::<usize>(), 1);
    assert!(store.list_in_flight().await.unwrap().is_empty());
}

/// A Redis backend on a server of its own, with a fresh key prefix.
pub(crate) async fn redis_store(server: &LocalRedis) -> RedisStore {
    RedisStore::connect(&redis_settings(server, "conformance"), OPTIONS)
        .await
        .unwrap()
}

pub(crate) fn redis_settings(server: &LocalRedis, prefix: &str) -> RedisSettings {
    RedisSettings {
        url: server.url(),
        ca_file: None,
        prefix: prefix.into(),
        response_timeout: std::time::Duration::from_secs(5),
        connect_timeout: std::time::Duration::from_secs(5),
    }
}

/// A real `redis-server` for one test; the test fails, never skips, without one.
pub(crate) fn redis_server(dir: &tempfile::TempDir) -> LocalRedis {
    LocalRedis::start(dir.path()).unwrap_or_else(|e| {
        panic!("the Redis conformance tests need redis-server (scripts/test.sh installs it): {e}")
    })
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod in_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(std::sync::Arc::new(super::InMemoryStore::new(super::OPTIONS)))
                        .await;
                }
            )*
        }
        mod embedded {
            fn open(dir: &tempfile::TempDir) -> super::EmbeddedStore {
                super::EmbeddedStore::open(dir.path().join("store.redb"), super::OPTIONS).unwrap()
            }

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$name(std::sync::Arc::new(open(&dir))).await;
                }
            )*
        }
        mod journal {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = super::JournalStore::open(dir.path(), super::OPTIONS).unwrap();
                    super::$name(std::sync::Arc::new(store)).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let server = super::redis_server(&dir);
                    super::$name(std::sync::Arc::new(super::redis_store(&server).await)).await;
                }
            )*
        }
    };
}

suite!(
    counters_start_at_one_and_blocks_do_not_overlap,
    counter_floor_raises_but_never_lowers,
    counter_space_exhaustion_is_an_error,
    pin_attempts_are_counted_before_the_check_and_lock,
    pin_block_is_permanent_until_reset,
    create_then_get_round_trips_and_duplicates_are_refused,
    creation_reserves_the_push_counter_in_the_same_step,
    compare_and_set_applies_only_on_the_expected_state,
    the_first_ending_is_final_and_writes_its_outbox,
    ending_an_unknown_id_is_not_found,
    in_flight_lists_exclude_terminal_records,
    an_idempotency_key_names_the_first_authorization_until_it_expires,
    invalid_keys_are_refused,
    racing_endings_have_exactly_one_winner,
    allocator_counters_are_unique_and_increasing_per_task,
    many_concurrent_callers_interleave_cas_pin_counts_and_claims,
);

/// Purging is the local backends' own work: on Redis, terminal records and claims carry a
/// `PEXPIRE` (checked in `store::redis_backend`).
mod purge {
    #[tokio::test]
    async fn in_memory() {
        super::purge_removes_only_expired_terminal_records_and_claims(std::sync::Arc::new(
            super::InMemoryStore::new(super::OPTIONS),
        ))
        .await;
    }

    #[tokio::test]
    async fn embedded() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            super::EmbeddedStore::open(dir.path().join("store.redb"), super::OPTIONS).unwrap();
        super::purge_removes_only_expired_terminal_records_and_claims(std::sync::Arc::new(store))
            .await;
    }

    #[tokio::test]
    async fn journal() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::JournalStore::open(dir.path(), super::OPTIONS).unwrap();
        super::purge_removes_only_expired_terminal_records_and_claims(std::sync::Arc::new(store))
            .await;
    }
}
