//! The embedded store survives `kill -9`: every write acknowledged before the kill is there after
//! reopening, OTA counters restart above every counter handed out, and every in-flight
//! authorization can be given exactly one terminal status.
//!
//! The test binary re-executes itself: with `GATEWAY_STORE_CRASH_WRITER` set, the
//! `crash_writer_child` test becomes the writer process, which prints one line per durably
//! acknowledged item; without it that test does nothing. The parent reads part of the output,
//! sends SIGKILL while the writer is mid-stream, reads what was printed before the kill, reopens
//! the file and checks.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use gateway::store::{
    AuthState, AuthorizationRecord, AuthorizationUpdate, Channel, EmbeddedStore, Loa, LockState,
    LockoutPolicy, OtaCounterAllocator, OtaCounterKey, Store, StoreOptions, TerminalStatus,
};

const WRITER_ENV: &str = "GATEWAY_STORE_CRASH_WRITER";
/// Upper bound of the writer's work, so a writer whose parent failed stops by itself.
const WRITER_ITERATIONS: u64 = 20_000;
/// Acknowledgements the parent waits for before killing.
const ACKS_BEFORE_KILL: usize = 400;
const SUBSCRIBERS: u64 = 4;

/// Never locks, so the failure count keeps growing and every lost write would show.
const COUNTING_POLICY: LockoutPolicy = LockoutPolicy {
    max_failures: u32::MAX,
    lockout_ms: 0,
    permanent_after_lockouts: None,
};

fn msisdn(i: u64) -> String {
    format!("4670000{:04}", i % SUBSCRIBERS)
}

fn counter_key(msisdn: &str) -> OtaCounterKey {
    OtaCounterKey::new(msisdn, [0xB0, 0x00, 0x10], 1)
}

fn authorization(i: u64) -> AuthorizationRecord {
    AuthorizationRecord {
        id: format!("auth-{i:06}"),
        client_id: "rp-1".into(),
        msisdn: msisdn(i),
        operator: "op-a".into(),
        channel: Channel::Stk,
        loa_requested: Loa::Loa2,
        loa_achieved: None,
        state: AuthState::Created,
        created_ms: i,
        deadline_ms: i + 120_000,
        updated_ms: i,
        stk_counter: None,
        challenge: i.to_be_bytes().to_vec(),
        proof: None,
        callback_url: None,
        idempotency_key: None,
        prompted_ms: None,
    }
}

#[test]
fn crash_writer_child() {
    let Ok(path) = std::env::var(WRITER_ENV) else {
        return;
    };
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(Path::new(&path), StoreOptions::default()).unwrap());
    let allocator = OtaCounterAllocator::new(Arc::clone(&store), 16, 100);
    for i in 0..WRITER_ITERATIONS {
        let m = msisdn(i);
        let counter = allocator.next(&counter_key(&m)).unwrap();
        println!("OTA {m} {counter}");

        if i % 2 == 0 {
            let LockState::Open { failures } =
                store.record_pin_failure(&m, i, &COUNTING_POLICY).unwrap()
            else {
                panic!("the counting policy never locks");
            };
            println!("PIN {m} {failures}");
        }

        let record = authorization(i);
        store.put_authorization(&record).unwrap();
        println!("AUTH {}", record.id);

        // A non-durable step, to mix eventual commits in; not acknowledged.
        store
            .update_authorization_state(
                &record.id,
                &AuthState::Created,
                &AuthorizationUpdate::to(AuthState::Prompted, i).with_stk_counter(counter),
            )
            .unwrap();
        if i % 3 == 0 {
            store
                .update_authorization_state(
                    &record.id,
                    &AuthState::Prompted,
                    &AuthorizationUpdate::to(
                        AuthState::terminal(TerminalStatus::Approved, None),
                        i,
                    ),
                )
                .unwrap();
            println!("TERM {}", record.id);
        }
    }
}

#[derive(Default)]
struct Acks {
    counters: BTreeMap<String, BTreeSet<u64>>,
    pin_failures: BTreeMap<String, u32>,
    created: BTreeSet<String>,
    terminal: BTreeSet<String>,
    lines: usize,
}

impl Acks {
    fn take(&mut self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["OTA", m, c] => {
                let fresh = self
                    .counters
                    .entry((*m).to_owned())
                    .or_default()
                    .insert(c.parse().unwrap());
                assert!(fresh, "counter {c} handed out twice before the crash");
            }
            ["PIN", m, n] => {
                self.pin_failures
                    .insert((*m).to_owned(), n.parse().unwrap());
            }
            ["AUTH", id] => {
                self.created.insert((*id).to_owned());
            }
            ["TERM", id] => {
                self.terminal.insert((*id).to_owned());
            }
            // libtest's own lines, and a line cut short by the kill.
            _ => return,
        }
        self.lines += 1;
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if std::env::var_os(WRITER_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_writer_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WRITER_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acks = Acks::default();
    while acks.lines < ACKS_BEFORE_KILL {
        match lines.next() {
            Some(line) => acks.take(&line.unwrap()),
            None => break,
        }
    }
    // SIGKILL on Unix: no destructor, no flush, no redb shutdown.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    // Whatever the writer printed before dying was acknowledged too.
    for line in lines {
        match line {
            Ok(line) => acks.take(&line),
            Err(_) => break,
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "the writer must die by SIGKILL mid-stream, not exit ({status})"
        );
    }
    assert!(
        acks.lines >= ACKS_BEFORE_KILL,
        "writer stopped after {} acknowledgements",
        acks.lines
    );

    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(&path, StoreOptions::default()).unwrap());

    // OTA: counters after the restart are above every counter handed out before.
    let allocator = OtaCounterAllocator::new(Arc::clone(&store), 16, 100);
    for (m, counters) in &acks.counters {
        let highest = *counters.iter().next_back().unwrap();
        let key = counter_key(m);
        assert!(store.ota_high_water(&key).unwrap() > highest);
        let next = allocator.next(&key).unwrap();
        assert!(next > highest, "{m}: counter {next} after {highest}");
    }

    // PIN failures: every acknowledged failure counted (one more may have committed unprinted).
    for (m, acked) in &acks.pin_failures {
        let LockState::Open { failures } = store.lock_state(m, u64::MAX).unwrap() else {
            panic!("unexpected lock");
        };
        assert!(
            (*acked..=acked + 1).contains(&failures),
            "{m}: {failures} failures stored, {acked} acknowledged"
        );
    }

    // Authorizations: every acknowledged one exists; acknowledged terminal ones kept their status.
    for id in &acks.created {
        let record = store.get_authorization(id).unwrap();
        assert!(record.is_some(), "authorization {id} lost");
    }
    for id in &acks.terminal {
        let record = store.get_authorization(id).unwrap().unwrap();
        assert_eq!(
            record.state,
            AuthState::terminal(TerminalStatus::Approved, None),
            "{id}"
        );
    }

    // Recovery: every in-flight authorization gets exactly one terminal status.
    let in_flight = store.list_in_flight().unwrap();
    let expected_in_flight: BTreeSet<_> = acks.created.difference(&acks.terminal).collect();
    let found: BTreeSet<_> = in_flight.iter().map(|r| &r.id).collect();
    for id in &expected_in_flight {
        // At most the last one may have been ended without its line reaching us.
        assert!(
            found.contains(id)
                || store
                    .get_authorization(id)
                    .unwrap()
                    .unwrap()
                    .state
                    .is_terminal(),
            "{id} neither in flight nor terminal"
        );
    }
    for record in &in_flight {
        store
            .update_authorization_state(
                &record.id,
                &record.state,
                &AuthorizationUpdate::to(
                    AuthState::terminal(TerminalStatus::Expired, Some("gateway_restart")),
                    u64::MAX / 2,
                ),
            )
            .unwrap();
    }
    assert!(store.list_in_flight().unwrap().is_empty());
    eprintln!(
        "crash test: {} acknowledgements, {} in flight at restart",
        acks.lines,
        in_flight.len()
    );
}
