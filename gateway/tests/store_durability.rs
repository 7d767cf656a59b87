//! The embedded stores (redb, and the journal) survive `kill -9`: every write acknowledged before the kill is there after
//! reopening, OTA counters restart above every counter handed out, and every in-flight
//! authorization can be given exactly one terminal status.
//!
//! The test binary re-executes itself: with `GATEWAY_STORE_CRASH_WRITER` set, the
//! `crash_writer_child` test becomes the writer process: several tasks write at once (so the
//! writer thread forms group commits) and print one line per durably acknowledged item. The
//! parent reads a random number of lines, sends SIGKILL while the writer is mid-stream (so at a
//! random point of some batch), reads what was printed before the kill, reopens the file and
//! checks. It does this 100 times on the same file, each round adding to what must survive.
//! The journal runs with a small compaction threshold, so some kills land in a compaction.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use gateway::store::{
    AuthState, AuthorizationRecord, AuthorizationUpdate, Channel, EmbeddedStore, JournalStore, Loa,
    LockState, LockoutPolicy, OtaCounterAllocator, OtaCounterKey, OutboxPolicy, PinAttempt, Store,
    StoreOptions, TerminalStatus,
};

const WRITER_ENV: &str = "GATEWAY_STORE_CRASH_WRITER";
const ROUND_ENV: &str = "GATEWAY_STORE_CRASH_ROUND";
const BACKEND_ENV: &str = "GATEWAY_STORE_CRASH_BACKEND";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Redb,
    Journal,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Redb => "redb",
            Backend::Journal => "journal",
        }
    }

    fn open(self, path: &Path, options: StoreOptions) -> Arc<dyn Store> {
        match self {
            Backend::Redb => Arc::new(EmbeddedStore::open(path, options).unwrap()),
            Backend::Journal => Arc::new(
                JournalStore::open(
                    path,
                    StoreOptions {
                        // A compaction every few hundred kilobytes: kills land inside them.
                        journal_compact_bytes: 256 * 1024,
                        ..options
                    },
                )
                .unwrap(),
            ),
        }
    }
}
/// Upper bound of each writer task's work, so a writer whose parent failed stops by itself.
const WRITER_ITERATIONS: u64 = 5_000;
/// Writer tasks at once (each with its own subscriber, so its PIN count is exact).
const WRITERS: u64 = 8;
/// Kills, each after a random number of acknowledgements up to this.
const ROUNDS: usize = 100;
const MOST_ACKS_BEFORE_KILL: usize = 300;

/// Never locks, so the failure count keeps growing and every lost write would show.
const COUNTING_POLICY: LockoutPolicy = LockoutPolicy {
    max_failures: u32::MAX,
    lockout_ms: 0,
    permanent_after_lockouts: None,
};

fn msisdn(writer: u64) -> String {
    format!("4670000{writer:04}")
}

fn counter_key(msisdn: &str) -> OtaCounterKey {
    OtaCounterKey::new(msisdn, [0xB0, 0x00, 0x10], 1)
}

fn authorization(round: u64, writer: u64, i: u64) -> AuthorizationRecord {
    AuthorizationRecord {
        id: format!("auth-{round:03}-{writer}-{i:06}"),
        client_id: "rp-1".into(),
        msisdn: msisdn(writer),
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
        txid: Vec::new(),
        ussd_key: None,
        proof: None,
        callback_url: None,
        idempotency_key: None,
        prompted_ms: None,
        keycloak: None,
        node: None,
    }
}

#[test]
fn crash_writer_child() {
    let Ok(path) = std::env::var(WRITER_ENV) else {
        return;
    };
    let round: u64 = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    let backend = match std::env::var(BACKEND_ENV).unwrap().as_str() {
        "journal" => Backend::Journal,
        _ => Backend::Redb,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        // Even rounds commit back to back (kills land inside commits), odd rounds with the
        // default pacing (kills land while a batch is being collected too).
        let options = StoreOptions {
            durable_commit_interval: if round % 2 == 0 {
                std::time::Duration::ZERO
            } else {
                StoreOptions::default().durable_commit_interval
            },
            ..StoreOptions::default()
        };
        let store = backend.open(Path::new(&path), options);
        let allocator = Arc::new(OtaCounterAllocator::new(Arc::clone(&store), 16, 100));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (store, allocator) = (store.clone(), allocator.clone());
                tokio::spawn(async move { write(round, w, &*store, &allocator).await })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
    });
}

async fn write(round: u64, writer: u64, store: &dyn Store, allocator: &OtaCounterAllocator) {
    let m = msisdn(writer);
    for i in 0..WRITER_ITERATIONS {
        let counter = allocator.next(&counter_key(&m)).await.unwrap();
        println!("OTA {m} {counter}");

        if i % 2 == 0 {
            let PinAttempt::Counted(LockState::Open { failures }) = store
                .count_pin_attempt(&m, i, &COUNTING_POLICY)
                .await
                .unwrap()
            else {
                panic!("the counting policy never locks");
            };
            println!("PIN {m} {failures}");
        }

        let record = authorization(round, writer, i);
        store
            .create_authorization(&record, i, 60_000, None)
            .await
            .unwrap();
        println!("AUTH {}", record.id);

        // A non-durable step, to mix commits without fsync in; not acknowledged.
        store
            .update_authorization_state(
                &record.id,
                &AuthState::Created,
                &AuthorizationUpdate::to(AuthState::Prompted, i).with_stk_counter(counter),
            )
            .await
            .unwrap();
        if i % 3 == 0 {
            store
                .end_authorization(
                    &record.id,
                    &AuthorizationUpdate::to(
                        AuthState::terminal(TerminalStatus::Approved, None),
                        i,
                    ),
                    &OutboxPolicy {
                        audit: true,
                        callback_window_ms: 1,
                    },
                )
                .await
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

/// One writer process, killed after a random number of acknowledgements.
fn crash_once(backend: Backend, path: &Path, round: usize, acks: &mut Acks) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_writer_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WRITER_ENV, path)
        .env(ROUND_ENV, round.to_string())
        .env(BACKEND_ENV, backend.name())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let kill_after =
        acks.lines + 1 + rand::Rng::gen_range(&mut rand::thread_rng(), 0..MOST_ACKS_BEFORE_KILL);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while acks.lines < kill_after {
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
            "round {round}: the writer must die by SIGKILL mid-stream, not exit ({status})"
        );
    }
    assert!(
        acks.lines >= kill_after,
        "round {round}: writer stopped after {} acknowledgements",
        acks.lines
    );
}

/// Every acknowledged write is in the reopened store.
async fn check(store: &dyn Store, acks: &Acks, round: usize) {
    // OTA: counters after the restart are above every counter handed out before.
    for (m, counters) in &acks.counters {
        let highest = *counters.iter().next_back().unwrap();
        let key = counter_key(m);
        assert!(
            store.ota_high_water(&key).await.unwrap() > highest,
            "round {round}: {m}: counter {highest} handed out but the mark is not above it"
        );
    }
    // PIN attempts: every acknowledged one counted (one more may have committed unprinted).
    for (m, acked) in &acks.pin_failures {
        let LockState::Open { failures } = store.lock_state(m, u64::MAX).await.unwrap() else {
            panic!("unexpected lock");
        };
        assert!(
            failures >= *acked,
            "round {round}: {m}: {failures} attempts stored, {acked} acknowledged"
        );
    }
    // Authorizations: every acknowledged one exists; acknowledged endings kept their status
    // and their outbox entry.
    for id in &acks.created {
        let record = store.get_authorization(id).await.unwrap();
        assert!(record.is_some(), "round {round}: authorization {id} lost");
    }
    let outbox: BTreeSet<String> = store
        .outbox_pending()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.authorization_id)
        .collect();
    for id in &acks.terminal {
        let record = store.get_authorization(id).await.unwrap().unwrap();
        assert_eq!(
            record.state,
            AuthState::terminal(TerminalStatus::Approved, None),
            "round {round}: {id}"
        );
        assert!(
            outbox.contains(id),
            "round {round}: {id} lost its audit entry"
        );
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill_at_random_points_of_batches() {
    survives_sigkill(Backend::Redb, "store.redb").await;
}

#[tokio::test]
async fn acknowledged_journal_writes_survive_sigkill_at_random_points_of_batches() {
    survives_sigkill(Backend::Journal, "store.journal").await;
}

async fn survives_sigkill(backend: Backend, file: &str) {
    if std::env::var_os(WRITER_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file);
    let mut acks = Acks::default();
    for round in 0..ROUNDS {
        crash_once(backend, &path, round, &mut acks);
        let store = backend.open(&path, StoreOptions::default());
        check(&*store, &acks, round).await;
    }

    let store = backend.open(&path, StoreOptions::default());
    let allocator = OtaCounterAllocator::new(Arc::clone(&store), 16, 100);
    for (m, counters) in &acks.counters {
        let highest = *counters.iter().next_back().unwrap();
        let next = allocator.next(&counter_key(m)).await.unwrap();
        assert!(next > highest, "{m}: counter {next} after {highest}");
    }
    // Recovery: every in-flight authorization gets exactly one terminal status.
    let in_flight = store.list_in_flight().await.unwrap();
    for record in &in_flight {
        let ended = store
            .end_authorization(
                &record.id,
                &AuthorizationUpdate::to(
                    AuthState::terminal(TerminalStatus::Expired, Some("gateway_restart")),
                    u64::MAX / 2,
                ),
                &OutboxPolicy::default(),
            )
            .await
            .unwrap();
        assert!(ended.won);
    }
    assert!(store.list_in_flight().await.unwrap().is_empty());
    if backend == Backend::Journal {
        // The journal was compacted along the way (so kills met compactions), and the
        // segments and snapshots a completed snapshot replaced are gone.
        let segments: Vec<String> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            segments.iter().all(|s| s != "00000001.journal"),
            "no compaction happened: {segments:?}"
        );
        let count = |suffix: &str| segments.iter().filter(|s| s.ends_with(suffix)).count();
        // The snapshot's segment, and the next one if a kill stopped the next snapshot.
        assert!(count(".journal") <= 2, "old segments left: {segments:?}");
        assert!(count(".snapshot") <= 1, "old snapshots left: {segments:?}");
    }
    eprintln!(
        "crash test ({}): {ROUNDS} kills, {} acknowledgements, {} in flight at the end",
        backend.name(),
        acks.lines,
        in_flight.len()
    );
}
