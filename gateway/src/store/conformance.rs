//! The behaviour every [`Store`] backend must show, written once and run against each backend
//! (the Redis backend adds one line to the `suite!` invocation).

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;

use super::records::tests::sample;
use super::*;

pub(crate) const OPTIONS: StoreOptions = StoreOptions {
    terminal_ttl_ms: 10_000,
};

const POLICY: LockoutPolicy = LockoutPolicy {
    max_failures: 3,
    lockout_ms: 1_000,
    permanent_after_lockouts: None,
};

fn key(msisdn: &str) -> OtaCounterKey {
    OtaCounterKey::new(msisdn, [0xB0, 0x00, 0x10], 1)
}

fn record(id: &str, msisdn: &str) -> AuthorizationRecord {
    AuthorizationRecord {
        id: id.into(),
        msisdn: msisdn.into(),
        ..sample()
    }
}

fn terminal(status: TerminalStatus) -> AuthState {
    AuthState::terminal(status, None)
}

pub(crate) fn counters_start_at_one_and_blocks_do_not_overlap(store: &dyn Store) {
    let k = key("46700000001");
    assert_eq!(store.ota_high_water(&k).unwrap(), OTA_COUNTER_FIRST);
    assert_eq!(store.reserve_ota_counters(&k, 0).unwrap(), 1..1);
    assert_eq!(store.reserve_ota_counters(&k, 64).unwrap(), 1..65);
    assert_eq!(store.reserve_ota_counters(&k, 64).unwrap(), 65..129);
    assert_eq!(store.ota_high_water(&k).unwrap(), 129);
    // Another key set of the same subscriber has its own counter.
    let other = OtaCounterKey::new("46700000001", [0xB0, 0x00, 0x10], 2);
    assert_eq!(store.reserve_ota_counters(&other, 1).unwrap(), 1..2);
}

pub(crate) fn counter_floor_raises_but_never_lowers(store: &dyn Store) {
    let k = key("46700000002");
    assert_eq!(store.raise_ota_counter_floor(&k, 500).unwrap(), 500);
    assert_eq!(store.raise_ota_counter_floor(&k, 10).unwrap(), 500);
    assert_eq!(store.reserve_ota_counters(&k, 2).unwrap(), 500..502);
}

pub(crate) fn counter_space_exhaustion_is_an_error(store: &dyn Store) {
    let k = key("46700000003");
    store.raise_ota_counter_floor(&k, OTA_COUNTER_MAX).unwrap();
    assert_eq!(
        store.reserve_ota_counters(&k, 1).unwrap(),
        OTA_COUNTER_MAX..OTA_COUNTER_MAX + 1
    );
    assert!(matches!(
        store.reserve_ota_counters(&k, 1),
        Err(StoreError::CountersExhausted { key_set: 1, .. })
    ));
    assert!(matches!(
        store.raise_ota_counter_floor(&k, OTA_COUNTER_MAX + 2),
        Err(StoreError::CountersExhausted { .. })
    ));
}

pub(crate) fn third_pin_failure_locks_and_reset_clears(store: &dyn Store) {
    let m = "46700000010";
    assert_eq!(
        store.lock_state(m, 0).unwrap(),
        LockState::Open { failures: 0 }
    );
    assert_eq!(
        store.record_pin_failure(m, 1, &POLICY).unwrap(),
        LockState::Open { failures: 1 }
    );
    store.record_pin_failure(m, 2, &POLICY).unwrap();
    assert_eq!(
        store.record_pin_failure(m, 3, &POLICY).unwrap(),
        LockState::Locked { until_ms: 1_003 }
    );
    assert_eq!(
        store.lock_state(m, 500).unwrap(),
        LockState::Locked { until_ms: 1_003 }
    );
    assert_eq!(
        store.lock_state(m, 1_003).unwrap(),
        LockState::Open { failures: 0 }
    );
    // Other subscribers are unaffected.
    assert_eq!(
        store.lock_state("46700000011", 500).unwrap(),
        LockState::Open { failures: 0 }
    );
    store.reset_pin_failures(m).unwrap();
    assert_eq!(
        store.lock_state(m, 500).unwrap(),
        LockState::Open { failures: 0 }
    );
}

pub(crate) fn pin_block_is_permanent_until_reset(store: &dyn Store) {
    let m = "46700000012";
    let policy = LockoutPolicy {
        permanent_after_lockouts: Some(1),
        ..POLICY
    };
    for t in 0..3 {
        store.record_pin_failure(m, t, &policy).unwrap();
    }
    assert_eq!(store.lock_state(m, u64::MAX).unwrap(), LockState::Blocked);
    store.reset_pin_failures(m).unwrap();
    assert_eq!(
        store.lock_state(m, u64::MAX).unwrap(),
        LockState::Open { failures: 0 }
    );
}

pub(crate) fn put_then_get_round_trips_and_duplicates_are_refused(store: &dyn Store) {
    let r = record("auth-1", "46700000020");
    assert_eq!(store.get_authorization("auth-1").unwrap(), None);
    store.put_authorization(&r).unwrap();
    assert_eq!(store.get_authorization("auth-1").unwrap(), Some(r.clone()));
    assert!(matches!(
        store.put_authorization(&r),
        Err(StoreError::AlreadyExists { .. })
    ));
}

pub(crate) fn compare_and_set_applies_only_on_the_expected_state(store: &dyn Store) {
    store
        .put_authorization(&record("auth-2", "46700000021"))
        .unwrap();
    let routed = store
        .update_authorization_state(
            "auth-2",
            &AuthState::Created,
            &AuthorizationUpdate::to(AuthState::Routed, 5),
        )
        .unwrap();
    assert_eq!(routed.state, AuthState::Routed);
    assert_eq!(routed.updated_ms, 5);

    let err = store
        .update_authorization_state(
            "auth-2",
            &AuthState::Created,
            &AuthorizationUpdate::to(AuthState::Prompted, 6),
        )
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
        .unwrap();
    assert_eq!(answered.stk_counter, Some(42));
    assert_eq!(answered.proof, Some(vec![9, 9]));
    assert_eq!(answered.loa_achieved, Some(Loa::Loa3));
    assert_eq!(store.get_authorization("auth-2").unwrap(), Some(answered));
}

pub(crate) fn terminal_state_is_final(store: &dyn Store) {
    store
        .put_authorization(&record("auth-3", "46700000022"))
        .unwrap();
    let approved = terminal(TerminalStatus::Approved);
    store
        .update_authorization_state(
            "auth-3",
            &AuthState::Created,
            &AuthorizationUpdate::to(approved.clone(), 10),
        )
        .unwrap();
    let err = store
        .update_authorization_state(
            "auth-3",
            &approved,
            &AuthorizationUpdate::to(terminal(TerminalStatus::Expired), 11),
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    assert_eq!(
        store.get_authorization("auth-3").unwrap().unwrap().state,
        approved
    );
}

pub(crate) fn update_of_unknown_id_is_not_found(store: &dyn Store) {
    let err = store
        .update_authorization_state(
            "nope",
            &AuthState::Created,
            &AuthorizationUpdate::to(AuthState::Routed, 1),
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
}

pub(crate) fn in_flight_lists_exclude_terminal_records(store: &dyn Store) {
    store.put_authorization(&record("a", "4670")).unwrap();
    store.put_authorization(&record("b", "46701")).unwrap();
    store.put_authorization(&record("c", "4670")).unwrap();
    store
        .update_authorization_state(
            "c",
            &AuthState::Created,
            &AuthorizationUpdate::to(terminal(TerminalStatus::Denied), 3),
        )
        .unwrap();
    store
        .update_authorization_state(
            "b",
            &AuthState::Created,
            &AuthorizationUpdate::to(AuthState::Prompted, 3),
        )
        .unwrap();
    let ids = |v: Vec<AuthorizationRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(store.list_in_flight().unwrap()), ["a", "b"]);
    // "4670" is a prefix of "46701": the lookup must match the whole MSISDN.
    assert_eq!(ids(store.in_flight_for_msisdn("4670").unwrap()), ["a"]);
    assert_eq!(ids(store.in_flight_for_msisdn("46701").unwrap()), ["b"]);
    assert!(store.in_flight_for_msisdn("4671").unwrap().is_empty());
}

pub(crate) fn idempotency_claim_returns_the_first_id_until_it_expires(store: &dyn Store) {
    assert_eq!(
        store
            .claim_idempotency_key("rp-1", "req-1", "auth-x", 100, 50)
            .unwrap(),
        IdempotencyClaim::Claimed
    );
    assert_eq!(
        store
            .claim_idempotency_key("rp-1", "req-1", "auth-y", 149, 50)
            .unwrap(),
        IdempotencyClaim::Existing("auth-x".into())
    );
    // Same key, other client: independent.
    assert_eq!(
        store
            .claim_idempotency_key("rp-2", "req-1", "auth-z", 149, 50)
            .unwrap(),
        IdempotencyClaim::Claimed
    );
    assert_eq!(
        store
            .claim_idempotency_key("rp-1", "req-1", "auth-y", 150, 50)
            .unwrap(),
        IdempotencyClaim::Claimed
    );
    assert_eq!(
        store
            .claim_idempotency_key("rp-1", "req-1", "auth-w", 151, 50)
            .unwrap(),
        IdempotencyClaim::Existing("auth-y".into())
    );
}

pub(crate) fn purge_removes_only_expired_terminal_records_and_claims(store: &dyn Store) {
    let ttl = OPTIONS.terminal_ttl_ms;
    store
        .put_authorization(&record("old", "46700000030"))
        .unwrap();
    store
        .put_authorization(&record("new", "46700000030"))
        .unwrap();
    store
        .put_authorization(&record("live", "46700000030"))
        .unwrap();
    for (id, at) in [("old", 100), ("new", 200)] {
        store
            .update_authorization_state(
                id,
                &AuthState::Created,
                &AuthorizationUpdate::to(terminal(TerminalStatus::Expired), at),
            )
            .unwrap();
    }
    store
        .claim_idempotency_key("rp-1", "k-old", "old", 0, 150 + ttl)
        .unwrap();
    store
        .claim_idempotency_key("rp-1", "k-new", "new", 0, 250 + ttl)
        .unwrap();

    assert_eq!(
        store.purge_expired(99 + ttl).unwrap(),
        PurgeReport::default()
    );
    assert_eq!(
        store.purge_expired(150 + ttl).unwrap(),
        PurgeReport {
            authorizations: 1,
            idempotency_keys: 1
        }
    );
    assert_eq!(store.get_authorization("old").unwrap(), None);
    assert!(store.get_authorization("new").unwrap().is_some());
    // In-flight records never expire by themselves.
    assert!(store.get_authorization("live").unwrap().is_some());
    assert_eq!(
        store.purge_expired(u64::MAX).unwrap(),
        PurgeReport {
            authorizations: 1,
            idempotency_keys: 1
        }
    );
    assert!(store.get_authorization("live").unwrap().is_some());
    assert_eq!(
        store
            .claim_idempotency_key("rp-1", "k-new", "again", 1, 10)
            .unwrap(),
        IdempotencyClaim::Claimed
    );
}

pub(crate) fn invalid_keys_are_refused(store: &dyn Store) {
    for bad in ["", "a\nb", &"9".repeat(129)] {
        assert!(matches!(
            store.lock_state(bad, 0),
            Err(StoreError::InvalidKey { .. })
        ));
        assert!(matches!(
            store.reserve_ota_counters(&key(bad), 1),
            Err(StoreError::InvalidKey { .. })
        ));
        assert!(matches!(
            store.put_authorization(&record(bad, "46700000040")),
            Err(StoreError::InvalidKey { .. })
        ));
    }
}

pub(crate) fn racing_terminal_updates_have_exactly_one_winner(store: &dyn Store) {
    store
        .put_authorization(&record("race", "46700000050"))
        .unwrap();
    let statuses = [
        TerminalStatus::Approved,
        TerminalStatus::Denied,
        TerminalStatus::Expired,
        TerminalStatus::Failed,
    ];
    let wins: usize = std::thread::scope(|s| {
        let handles: Vec<_> = statuses
            .iter()
            .map(|status| {
                s.spawn(move || {
                    store
                        .update_authorization_state(
                            "race",
                            &AuthState::Created,
                            &AuthorizationUpdate::to(terminal(*status), 1),
                        )
                        .is_ok()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| usize::from(h.join().unwrap()))
            .sum()
    });
    assert_eq!(wins, 1);
    assert!(store.list_in_flight().unwrap().is_empty());
}

pub(crate) fn allocator_counters_are_unique_and_increasing_per_thread(store: Arc<dyn Store>) {
    let allocator = OtaCounterAllocator::new(Arc::clone(&store), 8, 16);
    let k = key("46700000060");
    let per_thread: Vec<Vec<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| (0..50).map(|_| allocator.next(&k).unwrap()).collect()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all = HashSet::new();
    for counters in &per_thread {
        assert!(counters.windows(2).all(|w| w[0] < w[1]), "{counters:?}");
        for c in counters {
            assert!(all.insert(*c), "counter {c} handed out twice");
        }
    }
    assert_eq!(all.len(), 200);
    // 200 counters in blocks of 8: 25 reservations, no more.
    assert_eq!(store.ota_high_water(&k).unwrap(), 201);
}

pub(crate) fn many_concurrent_callers_interleave_cas_pin_counts_and_claims(store: &dyn Store) {
    const CALLERS: usize = 32;
    const ROUNDS: u64 = 5;
    let counting = LockoutPolicy {
        max_failures: 10_000,
        lockout_ms: 1_000,
        permanent_after_lockouts: None,
    };
    store
        .put_authorization(&record("shared", "46700000070"))
        .unwrap();
    let shared_counter = key("46700000071");
    let results: Vec<(bool, String, usize, Vec<std::ops::Range<u64>>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CALLERS)
            .map(|caller| {
                let shared_counter = &shared_counter;
                let counting = &counting;
                s.spawn(move || {
                    let mine = format!("own-{caller:02}");
                    let claim = store
                        .claim_idempotency_key("rp-1", "same-key", &mine, 0, 60_000)
                        .unwrap();
                    let (claimed, pointed_at) = match claim {
                        IdempotencyClaim::Claimed => (true, mine.clone()),
                        IdempotencyClaim::Existing(id) => (false, id),
                    };
                    let mut blocks = Vec::new();
                    for round in 0..ROUNDS {
                        store
                            .record_pin_failure("46700000072", round, counting)
                            .unwrap();
                        blocks.push(store.reserve_ota_counters(shared_counter, 4).unwrap());
                    }
                    let own = record(&mine, &format!("4670000{caller:04}"));
                    store.put_authorization(&own).unwrap();
                    store
                        .update_authorization_state(
                            &mine,
                            &AuthState::Created,
                            &AuthorizationUpdate::to(AuthState::Prompted, 1),
                        )
                        .unwrap();
                    store
                        .update_authorization_state(
                            &mine,
                            &AuthState::Prompted,
                            &AuthorizationUpdate::to(terminal(TerminalStatus::Approved), 2),
                        )
                        .unwrap();
                    let won = store
                        .update_authorization_state(
                            "shared",
                            &AuthState::Created,
                            &AuthorizationUpdate::to(terminal(TerminalStatus::Denied), 3),
                        )
                        .is_ok();
                    (claimed, pointed_at, usize::from(won), blocks)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // One claim won, and every other caller was pointed at the winner's id.
    let winners: Vec<&String> = results.iter().filter(|r| r.0).map(|r| &r.1).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(results.iter().all(|r| &r.1 == winners[0]));
    // Every PIN failure was counted once.
    assert_eq!(
        store.lock_state("46700000072", ROUNDS).unwrap(),
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
        store.ota_high_water(&shared_counter).unwrap(),
        1 + CALLERS as u64 * ROUNDS * 4
    );
    // One terminal update of the shared authorization won; every own one ended.
    assert_eq!(results.iter().map(|r| r.2).sum::<usize>(), 1);
    assert!(store.list_in_flight().unwrap().is_empty());
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod in_memory {
            $(
                #[test]
                fn $name() {
                    super::$name(&super::InMemoryStore::new(super::OPTIONS));
                }
            )*

            #[test]
            fn allocator_counters_are_unique_and_increasing_per_thread() {
                super::allocator_counters_are_unique_and_increasing_per_thread(
                    std::sync::Arc::new(super::InMemoryStore::new(super::OPTIONS)),
                );
            }
        }
        mod embedded {
            fn open(dir: &tempfile::TempDir) -> super::EmbeddedStore {
                super::EmbeddedStore::open(dir.path().join("store.redb"), super::OPTIONS).unwrap()
            }

            $(
                #[test]
                fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$name(&open(&dir));
                }
            )*

            #[test]
            fn allocator_counters_are_unique_and_increasing_per_thread() {
                let dir = tempfile::tempdir().unwrap();
                super::allocator_counters_are_unique_and_increasing_per_thread(
                    std::sync::Arc::new(open(&dir)),
                );
            }
        }
    };
}

suite!(
    counters_start_at_one_and_blocks_do_not_overlap,
    counter_floor_raises_but_never_lowers,
    counter_space_exhaustion_is_an_error,
    third_pin_failure_locks_and_reset_clears,
    pin_block_is_permanent_until_reset,
    put_then_get_round_trips_and_duplicates_are_refused,
    compare_and_set_applies_only_on_the_expected_state,
    terminal_state_is_final,
    update_of_unknown_id_is_not_found,
    in_flight_lists_exclude_terminal_records,
    idempotency_claim_returns_the_first_id_until_it_expires,
    purge_removes_only_expired_terminal_records_and_claims,
    invalid_keys_are_refused,
    racing_terminal_updates_have_exactly_one_winner,
    many_concurrent_callers_interleave_cas_pin_counts_and_claims,
);
