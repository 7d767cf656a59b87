//! Rough throughput of the embedded store's operations on this machine's disk, single-threaded:
//! `cargo run -p gateway --release --example store_ops [-- <ops per measurement>]`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use gateway::store::{
    AuthState, AuthorizationRecord, AuthorizationUpdate, Channel, EmbeddedStore, Loa,
    LockoutPolicy, OtaCounterAllocator, OtaCounterKey, Store, StoreOptions, TerminalStatus,
};

fn measure(
    name: &str,
    n: u64,
    mut op: impl FnMut(u64) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let start = Instant::now();
    for i in 0..n {
        op(i)?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{name:<36} {n:>7} ops  {:>10.0} ops/s  {:>8.1} us/op",
        n as f64 / secs,
        secs * 1e6 / n as f64
    );
    Ok(())
}

fn record(i: u64) -> AuthorizationRecord {
    AuthorizationRecord {
        id: format!("01HZX{i:021}"),
        client_id: "rp-1".into(),
        msisdn: format!("467{i:08}"),
        operator: "op-a".into(),
        channel: Channel::Stk,
        loa_requested: Loa::Loa3,
        loa_achieved: None,
        state: AuthState::Created,
        created_ms: i,
        deadline_ms: i + 120_000,
        updated_ms: i,
        stk_counter: None,
        challenge: vec![0x5a; 16],
        proof: None,
        callback_url: Some("https://rp.example/callback".into()),
        idempotency_key: Some(format!("req-{i}")),
        prompted_ms: None,
    }
}

fn main() -> anyhow::Result<()> {
    let n: u64 = match std::env::args().nth(1) {
        Some(arg) => arg.parse().context("ops per measurement")?,
        None => 2_000,
    };
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(
        dir.path().join("store.redb"),
        StoreOptions::default(),
    )?);
    let key = |i: u64| OtaCounterKey::new(format!("467{:08}", i % 1_000), [0xB0, 0, 0x10], 1);

    measure("reserve_ota_counters (durable)", n, |i| {
        store.reserve_ota_counters(&key(i), 64)?;
        Ok(())
    })?;
    let allocator = OtaCounterAllocator::new(Arc::clone(&store), 64, 100_000);
    measure("allocator.next, block 64", n * 20, |i| {
        allocator.next(&key(i / 64))?;
        Ok(())
    })?;
    let policy = LockoutPolicy::default();
    measure("record_pin_failure (durable)", n, |i| {
        store.record_pin_failure(&format!("468{i:08}"), i, &policy)?;
        Ok(())
    })?;
    measure("claim_idempotency_key (durable)", n, |i| {
        store.claim_idempotency_key("rp-1", &format!("req-{i}"), &record(i).id, i, 60_000)?;
        Ok(())
    })?;
    measure("put_authorization (durable)", n, |i| {
        store.put_authorization(&record(i))?;
        Ok(())
    })?;
    measure("update to prompted (eventual)", n, |i| {
        let update = AuthorizationUpdate::to(AuthState::Prompted, i).with_stk_counter(i);
        store.update_authorization_state(&record(i).id, &AuthState::Created, &update)?;
        Ok(())
    })?;
    measure("get_authorization", n * 10, |i| {
        store.get_authorization(&record(i % n).id)?;
        Ok(())
    })?;
    measure("update to terminal (durable)", n, |i| {
        let update =
            AuthorizationUpdate::to(AuthState::terminal(TerminalStatus::Approved, None), i);
        store.update_authorization_state(&record(i).id, &AuthState::Prompted, &update)?;
        Ok(())
    })?;
    let start = Instant::now();
    let purged = store.purge_expired(u64::MAX)?;
    println!("purge_expired: {purged:?} in {:?}", start.elapsed());
    Ok(())
}
