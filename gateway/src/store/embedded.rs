//! [`EmbeddedStore`]: the default [`Store`], one redb file, nothing to install.
//!
//! Every write goes through the one writer thread ([`super::writer`]): concurrent operations are
//! applied in arrival order in one redb write transaction (which makes every read-modify-write
//! atomic) and committed together, with `Durability::Immediate` (fsync before any of them
//! returns) when one of them is listed as durable in the module documentation, with
//! `Durability::None` otherwise. Reads run on the caller's thread in their own read
//! transaction and see every acknowledged write. Tables:
//!
//! - `ota_high_water`: OTA counter key -> lowest counter never handed out;
//! - `pin_failures`: MSISDN -> [`PinRecord`] (JSON);
//! - `authorizations`: id -> [`AuthorizationRecord`] (JSON);
//! - `auth_in_flight`: (MSISDN, id) for every non-terminal record, for recovery and correlation;
//! - `auth_expiry`: (expiry ms, id) for terminal records, for purging in order;
//! - `idempotency`: (client, key) -> [`IdempotencyEntry`] (JSON);
//! - `idempotency_expiry`: (expiry ms, client, key);
//! - `outbox`: event id -> [`OutboxEntry`] (JSON), deliveries owed for ended authorizations.
//!
//! redb recovers a file left by `kill -9` on the next open (to the last durable commit, which carries
//! every non-durable commit before it).

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::records::{apply_ending, apply_update, CasRefusal, IdempotencyEntry};
use super::writer::{CommitObserver, Writer, WriterStats};
use super::{
    advance_high_water, check_change, check_creation, check_key, exhausted, expiry, outbox_for,
    sort_outbox, AuthState, AuthorizationRecord, AuthorizationUpdate, Creation, Ended, LockState,
    LockoutPolicy, OtaCounterKey, OutboxEntry, OutboxPolicy, PinAttempt, PinRecord, PurgeReport,
    Store, StoreError, StoreOptions, OTA_COUNTER_FIRST, OTA_COUNTER_MAX,
};

const OTA: TableDefinition<&str, u64> = TableDefinition::new("ota_high_water");
const PIN: TableDefinition<&str, &[u8]> = TableDefinition::new("pin_failures");
const AUTH: TableDefinition<&str, &[u8]> = TableDefinition::new("authorizations");
const IN_FLIGHT: TableDefinition<(&str, &str), ()> = TableDefinition::new("auth_in_flight");
const AUTH_EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("auth_expiry");
const IDEM: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("idempotency");
const IDEM_EXPIRY: TableDefinition<(u64, &str, &str), ()> =
    TableDefinition::new("idempotency_expiry");
const OUTBOX: TableDefinition<&str, &[u8]> = TableDefinition::new("outbox");

/// The redb-backed store. Cheap to share behind an `Arc`; one per file and process (a second
/// open of the same file fails with [`StoreError::Backend`]).
pub struct EmbeddedStore {
    db: Arc<Database>,
    writer: Writer,
    options: StoreOptions,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

pub(super) fn backend(err: impl Into<redb::Error>) -> StoreError {
    match err.into() {
        redb::Error::Io(err) => StoreError::Io(err),
        redb::Error::Corrupted(detail) => StoreError::Corrupt {
            table: "(file)",
            key: String::new(),
            detail,
        },
        other => StoreError::Backend(other.to_string()),
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(err: $t) -> Self {
                backend(err)
            }
        }
    )*};
}
from_redb!(
    redb::TableError,
    redb::StorageError,
    redb::TransactionError,
    redb::CommitError
);

fn decode<T: DeserializeOwned>(
    table: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|err| StoreError::Corrupt {
        table,
        key: key.to_owned(),
        detail: err.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    // Our record types always serialise; an error here is a programming error surfaced as one.
    serde_json::to_vec(value).map_err(|err| StoreError::Backend(err.to_string()))
}

impl EmbeddedStore {
    /// Opens `path`, creating the file and its tables if needed. After a crash this also
    /// recovers the file, which may take a while for a large file.
    pub fn open(path: impl AsRef<Path>, options: StoreOptions) -> Result<Self, StoreError> {
        Self::open_observed(path, options, None)
    }

    /// [`EmbeddedStore::open`], telling `observer` of every group commit (metrics).
    pub fn open_observed(
        path: impl AsRef<Path>,
        options: StoreOptions,
        observer: Option<Arc<dyn CommitObserver>>,
    ) -> Result<Self, StoreError> {
        // redb's default cache is 1 GiB, which a node with many authorizations in flight
        // fills: the configured size bounds it.
        let db = Arc::new(
            Database::builder()
                .set_cache_size(options.cache_bytes)
                .create(path.as_ref())
                .map_err(backend)?,
        );
        // The tables exist before the writer takes over, so readers never miss one.
        let txn = db.begin_write()?;
        txn.open_table(OTA)?;
        txn.open_table(PIN)?;
        txn.open_table(AUTH)?;
        txn.open_table(IN_FLIGHT)?;
        txn.open_table(AUTH_EXPIRY)?;
        txn.open_table(IDEM)?;
        txn.open_table(IDEM_EXPIRY)?;
        txn.open_table(OUTBOX)?;
        txn.commit()?;
        let writer = Writer::start(db.clone(), observer, options.durable_commit_interval)?;
        Ok(Self {
            db,
            writer,
            options,
        })
    }

    /// Runs `body` in the writer thread's next group commit and waits for that commit
    /// (fsynced when `durability` is `Immediate`; see [`super::writer`]).
    async fn write<T: Send + 'static>(
        &self,
        durability: Durability,
        body: impl FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.writer
            .write(matches!(durability, Durability::Immediate), body)
            .await
    }

    /// What the writer thread has done (commits, fsyncs, operations per commit).
    pub fn writer_stats(&self) -> Arc<WriterStats> {
        self.writer.stats().clone()
    }

    fn read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(self.db.begin_read()?)
    }

    fn load_authorization(
        table: &impl ReadableTable<&'static str, &'static [u8]>,
        id: &str,
    ) -> Result<Option<AuthorizationRecord>, StoreError> {
        match table.get(id)? {
            Some(bytes) => Ok(Some(decode("authorizations", id, bytes.value())?)),
            None => Ok(None),
        }
    }

    /// [`EmbeddedStore::load_authorization`], with a missing record a [`StoreError::NotFound`].
    fn load_existing(
        table: &impl ReadableTable<&'static str, &'static [u8]>,
        id: &str,
    ) -> Result<AuthorizationRecord, StoreError> {
        Self::load_authorization(table, id)?.ok_or_else(|| StoreError::NotFound {
            table: "authorizations",
            key: id.to_owned(),
        })
    }

    fn load_many(
        &self,
        txn: &ReadTransaction,
        ids: Vec<String>,
    ) -> Result<Vec<AuthorizationRecord>, StoreError> {
        let auth = txn.open_table(AUTH)?;
        let mut records = Vec::with_capacity(ids.len());
        for id in ids {
            match Self::load_authorization(&auth, &id)? {
                Some(record) => records.push(record),
                None => {
                    return Err(StoreError::Corrupt {
                        table: "auth_in_flight",
                        key: id,
                        detail: "index points at a missing authorization".into(),
                    })
                }
            }
        }
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn reserve_ota_counters(
        &self,
        key: &OtaCounterKey,
        n: u64,
    ) -> Result<Range<u64>, StoreError> {
        check_key("msisdn", &key.msisdn)?;
        if n == 0 {
            let mark = self.ota_high_water(key).await?;
            return Ok(mark..mark);
        }
        let storage_key = key.storage_key();
        let key = key.clone();
        self.write(Durability::Immediate, move |txn| {
            let mut table = txn.open_table(OTA)?;
            let start = table
                .get(storage_key.as_str())?
                .map_or(OTA_COUNTER_FIRST, |v| v.value())
                .max(OTA_COUNTER_FIRST);
            let next = advance_high_water(&key, start, n)?;
            table.insert(storage_key.as_str(), next)?;
            Ok(start..next)
        })
        .await
    }

    async fn raise_ota_counter_floor(
        &self,
        key: &OtaCounterKey,
        floor: u64,
    ) -> Result<u64, StoreError> {
        check_key("msisdn", &key.msisdn)?;
        if floor > OTA_COUNTER_MAX + 1 {
            return Err(exhausted(key));
        }
        let storage_key = key.storage_key();
        self.write(Durability::Immediate, move |txn| {
            let mut table = txn.open_table(OTA)?;
            let current = table
                .get(storage_key.as_str())?
                .map_or(OTA_COUNTER_FIRST, |v| v.value());
            let mark = current.max(floor);
            if mark != current {
                table.insert(storage_key.as_str(), mark)?;
            }
            Ok(mark)
        })
        .await
    }

    async fn ota_high_water(&self, key: &OtaCounterKey) -> Result<u64, StoreError> {
        check_key("msisdn", &key.msisdn)?;
        let txn = self.read()?;
        let table = txn.open_table(OTA)?;
        let mark = table
            .get(key.storage_key().as_str())?
            .map_or(OTA_COUNTER_FIRST, |v| v.value());
        Ok(mark.max(OTA_COUNTER_FIRST))
    }

    async fn count_pin_attempt(
        &self,
        msisdn: &str,
        now_ms: u64,
        policy: &LockoutPolicy,
    ) -> Result<PinAttempt, StoreError> {
        check_key("msisdn", msisdn)?;
        let msisdn = msisdn.to_owned();
        let policy = *policy;
        self.write(Durability::Immediate, move |txn| {
            let mut table = txn.open_table(PIN)?;
            let mut record: PinRecord = match table.get(msisdn.as_str())? {
                Some(bytes) => decode("pin_failures", &msisdn, bytes.value())?,
                None => PinRecord::default(),
            };
            let attempt = record.count_attempt(now_ms, &policy);
            if matches!(attempt, PinAttempt::Counted(_)) {
                table.insert(msisdn.as_str(), encode(&record)?.as_slice())?;
            }
            Ok(attempt)
        })
        .await
    }

    async fn reset_pin_failures(&self, msisdn: &str) -> Result<(), StoreError> {
        check_key("msisdn", msisdn)?;
        let msisdn = msisdn.to_owned();
        self.write(Durability::None, move |txn| {
            txn.open_table(PIN)?.remove(msisdn.as_str())?;
            Ok(())
        })
        .await
    }

    async fn lock_state(&self, msisdn: &str, now_ms: u64) -> Result<LockState, StoreError> {
        check_key("msisdn", msisdn)?;
        let txn = self.read()?;
        let table = txn.open_table(PIN)?;
        let state = match table.get(msisdn)? {
            Some(bytes) => {
                decode::<PinRecord>("pin_failures", msisdn, bytes.value())?.state(now_ms)
            }
            None => LockState::Open { failures: 0 },
        };
        Ok(state)
    }

    async fn create_authorization(
        &self,
        record: &AuthorizationRecord,
        now_ms: u64,
        idempotency_ttl_ms: u64,
        ota: Option<&OtaCounterKey>,
    ) -> Result<Creation, StoreError> {
        check_creation(record, ota)?;
        let mut record = record.clone();
        let ota = ota.cloned();
        self.write(Durability::Immediate, move |txn| {
            // Every refusal is decided before anything is written (see `writer`).
            let mut auth = txn.open_table(AUTH)?;
            if auth.get(record.id.as_str())?.is_some() {
                return Err(StoreError::AlreadyExists {
                    table: "authorizations",
                    key: record.id.clone(),
                });
            }
            let mut idem = txn.open_table(IDEM)?;
            let mut stale_claim = None;
            if let Some(key) = &record.idempotency_key {
                let client = record.client_id.as_str();
                if let Some(bytes) = idem.get((client, key.as_str()))? {
                    let entry: IdempotencyEntry = decode("idempotency", key, bytes.value())?;
                    // A claim whose record is gone (purged) names nothing: it is taken over.
                    if entry.expires_ms > now_ms {
                        if let Some(other) = Self::load_authorization(&auth, &entry.auth_id)? {
                            return Ok(Creation::Existing(Box::new(other)));
                        }
                    }
                    stale_claim = Some(entry.expires_ms);
                }
            }
            let mut counters = txn.open_table(OTA)?;
            let reserved = match &ota {
                Some(key) => {
                    let storage_key = key.storage_key();
                    let counter = counters
                        .get(storage_key.as_str())?
                        .map_or(OTA_COUNTER_FIRST, |v| v.value())
                        .max(OTA_COUNTER_FIRST);
                    Some((storage_key, counter, advance_high_water(key, counter, 1)?))
                }
                None => None,
            };

            if let Some(key) = &record.idempotency_key {
                let client = record.client_id.as_str();
                let mut index = txn.open_table(IDEM_EXPIRY)?;
                if let Some(expired_at) = stale_claim {
                    index.remove((expired_at, client, key.as_str()))?;
                }
                let entry = IdempotencyEntry {
                    auth_id: record.id.clone(),
                    expires_ms: expiry(now_ms, idempotency_ttl_ms),
                };
                idem.insert((client, key.as_str()), encode(&entry)?.as_slice())?;
                index.insert((entry.expires_ms, client, key.as_str()), ())?;
            }
            let ota_counter = match reserved {
                Some((storage_key, counter, next)) => {
                    counters.insert(storage_key.as_str(), next)?;
                    record.stk_counter = Some(counter);
                    Some(counter)
                }
                None => None,
            };
            auth.insert(record.id.as_str(), encode(&record)?.as_slice())?;
            txn.open_table(IN_FLIGHT)?
                .insert((record.msisdn.as_str(), record.id.as_str()), ())?;
            Ok(Creation::Created { ota_counter })
        })
        .await
    }

    async fn update_authorization_state(
        &self,
        id: &str,
        expected: &AuthState,
        update: &AuthorizationUpdate,
    ) -> Result<AuthorizationRecord, StoreError> {
        check_change(id, update, false)?;
        let (id, expected, update) = (id.to_owned(), expected.clone(), update.clone());
        self.write(Durability::None, move |txn| {
            let id = id.as_str();
            let mut auth = txn.open_table(AUTH)?;
            let mut record = Self::load_existing(&auth, id)?;
            apply_update(&mut record, &expected, &update).map_err(
                |CasRefusal::Conflict(actual)| StoreError::Conflict {
                    id: id.to_owned(),
                    actual,
                },
            )?;
            auth.insert(id, encode(&record)?.as_slice())?;
            Ok(record)
        })
        .await
    }

    async fn end_authorization(
        &self,
        id: &str,
        update: &AuthorizationUpdate,
        outbox: &OutboxPolicy,
    ) -> Result<Ended, StoreError> {
        check_change(id, update, true)?;
        let ttl = self.options.terminal_ttl_ms;
        let (id, update, policy) = (id.to_owned(), update.clone(), *outbox);
        self.write(Durability::Immediate, move |txn| {
            let id = id.as_str();
            let mut auth = txn.open_table(AUTH)?;
            let mut record = Self::load_existing(&auth, id)?;
            if !apply_ending(&mut record, &update) {
                return Ok(Ended {
                    record,
                    won: false,
                    outbox: Vec::new(),
                });
            }
            auth.insert(id, encode(&record)?.as_slice())?;
            txn.open_table(IN_FLIGHT)?
                .remove((record.msisdn.as_str(), id))?;
            txn.open_table(AUTH_EXPIRY)?
                .insert((expiry(update.now_ms, ttl), id), ())?;
            let entries = outbox_for(&record, &policy, update.now_ms);
            let mut table = txn.open_table(OUTBOX)?;
            for entry in &entries {
                table.insert(entry.event_id.as_str(), encode(entry)?.as_slice())?;
            }
            Ok(Ended {
                record,
                won: true,
                outbox: entries,
            })
        })
        .await
    }

    async fn get_authorization(&self, id: &str) -> Result<Option<AuthorizationRecord>, StoreError> {
        check_key("authorization id", id)?;
        let txn = self.read()?;
        let auth = txn.open_table(AUTH)?;
        Self::load_authorization(&auth, id)
    }

    async fn list_in_flight(&self) -> Result<Vec<AuthorizationRecord>, StoreError> {
        let txn = self.read()?;
        let mut ids = Vec::new();
        for entry in txn.open_table(IN_FLIGHT)?.iter()? {
            let (key, _) = entry?;
            ids.push(key.value().1.to_owned());
        }
        self.load_many(&txn, ids)
    }

    async fn in_flight_for_msisdn(
        &self,
        msisdn: &str,
    ) -> Result<Vec<AuthorizationRecord>, StoreError> {
        check_key("msisdn", msisdn)?;
        let txn = self.read()?;
        let mut ids = Vec::new();
        for entry in txn.open_table(IN_FLIGHT)?.range((msisdn, "")..)? {
            let (key, _) = entry?;
            let (owner, id) = key.value();
            if owner != msisdn {
                break;
            }
            ids.push(id.to_owned());
        }
        self.load_many(&txn, ids)
    }

    async fn outbox_pending(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        let txn = self.read()?;
        let mut entries = Vec::new();
        for entry in txn.open_table(OUTBOX)?.iter()? {
            let (key, value) = entry?;
            entries.push(decode::<OutboxEntry>("outbox", key.value(), value.value())?);
        }
        sort_outbox(&mut entries);
        Ok(entries)
    }

    async fn outbox_remove(&self, event_id: &str) -> Result<(), StoreError> {
        let event_id = event_id.to_owned();
        self.write(Durability::None, move |txn| {
            txn.open_table(OUTBOX)?.remove(event_id.as_str())?;
            Ok(())
        })
        .await
    }

    fn failure(&self) -> Option<String> {
        self.writer.failure()
    }

    async fn purge_expired(&self, now_ms: u64) -> Result<PurgeReport, StoreError> {
        let bound = now_ms.saturating_add(1);
        self.write(Durability::None, move |txn| {
            let mut report = PurgeReport::default();

            let mut auth_index = txn.open_table(AUTH_EXPIRY)?;
            let mut due = Vec::new();
            for entry in auth_index.range(..(bound, ""))? {
                let (key, _) = entry?;
                let (at, id) = key.value();
                due.push((at, id.to_owned()));
            }
            let mut auth = txn.open_table(AUTH)?;
            for (at, id) in &due {
                auth_index.remove((*at, id.as_str()))?;
                if auth.remove(id.as_str())?.is_some() {
                    report.authorizations += 1;
                }
            }

            let mut idem_index = txn.open_table(IDEM_EXPIRY)?;
            let mut due = Vec::new();
            for entry in idem_index.range(..(bound, "", ""))? {
                let (key, _) = entry?;
                let (at, client, idem_key) = key.value();
                due.push((at, client.to_owned(), idem_key.to_owned()));
            }
            let mut idem = txn.open_table(IDEM)?;
            for (at, client, idem_key) in &due {
                idem_index.remove((*at, client.as_str(), idem_key.as_str()))?;
                if idem.remove((client.as_str(), idem_key.as_str()))?.is_some() {
                    report.idempotency_keys += 1;
                }
            }
            Ok(report)
        })
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::conformance::OPTIONS;
    use crate::store::records::tests::sample;
    use crate::store::{OtaCounterAllocator, TerminalStatus};

    #[tokio::test]
    async fn counters_handed_out_before_reopen_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let key = OtaCounterKey::new("46700000001", [1, 2, 3], 1);
        let mut seen = Vec::new();
        for _ in 0..3 {
            // Each round hands out a few counters from a fresh block and "crashes" by dropping
            // the allocator with most of its block unused.
            let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&path, OPTIONS).unwrap());
            let allocator = OtaCounterAllocator::new(store, 64, 10);
            for _ in 0..5 {
                let counter = allocator.next(&key).await.unwrap();
                assert!(
                    seen.iter().all(|&c| c < counter),
                    "{counter} after {seen:?}"
                );
                seen.push(counter);
            }
        }
        assert_eq!(seen[5], 65, "the rest of the first block is skipped");
    }

    #[tokio::test]
    async fn records_and_outbox_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let policy = LockoutPolicy::default();
        {
            let store = EmbeddedStore::open(&path, OPTIONS).unwrap();
            store
                .create_authorization(&sample(), 0, 1_000, None)
                .await
                .unwrap();
            store
                .count_pin_attempt("46700000001", 5, &policy)
                .await
                .unwrap();
        }
        let store = EmbeddedStore::open(&path, OPTIONS).unwrap();
        assert_eq!(store.list_in_flight().await.unwrap(), vec![sample()]);
        assert_eq!(
            store.lock_state("46700000001", 6).await.unwrap(),
            LockState::Open { failures: 1 }
        );
        let again = AuthorizationRecord {
            id: "other".into(),
            ..sample()
        };
        assert_eq!(
            store
                .create_authorization(&again, 1, 1_000, None)
                .await
                .unwrap(),
            Creation::Existing(Box::new(sample()))
        );
        let done = store
            .end_authorization(
                &sample().id,
                &AuthorizationUpdate::to(AuthState::terminal(TerminalStatus::Failed, Some("x")), 9),
                &OutboxPolicy::default(),
            )
            .await
            .unwrap();
        assert!(done.won);
        assert_eq!(done.outbox.len(), 1, "the sample has a callback URL");
        drop(store);
        let store = EmbeddedStore::open(&path, OPTIONS).unwrap();
        assert_eq!(
            store.get_authorization(&sample().id).await.unwrap(),
            Some(done.record)
        );
        assert!(store.list_in_flight().await.unwrap().is_empty());
        assert_eq!(store.outbox_pending().await.unwrap(), done.outbox);
    }

    #[tokio::test]
    async fn undecodable_record_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("store.redb"), OPTIONS).unwrap();
        store
            .write(Durability::Immediate, |txn| {
                txn.open_table(AUTH)?.insert("bad", &b"{not json"[..])?;
                txn.open_table(PIN)?.insert("46700000001", &b"\xff"[..])?;
                Ok(())
            })
            .await
            .unwrap();
        assert!(matches!(
            store.get_authorization("bad").await,
            Err(StoreError::Corrupt {
                table: "authorizations",
                ..
            })
        ));
        assert!(matches!(
            store.lock_state("46700000001", 0).await,
            Err(StoreError::Corrupt {
                table: "pin_failures",
                ..
            })
        ));
    }

    #[tokio::test]
    async fn a_backend_failure_aborts_its_batch_and_the_store_refuses_writes_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("store.redb"), OPTIONS).unwrap();
        store
            .create_authorization(&sample(), 0, 1_000, None)
            .await
            .unwrap();
        assert_eq!(store.failure(), None);
        let broken = store
            .write(Durability::Immediate, |txn| {
                // Half a change, then the backend fails: nothing of it may stay.
                txn.open_table(PIN)?.insert("46700000009", &b"{}"[..])?;
                Err::<(), _>(StoreError::Backend("disk on fire".into()))
            })
            .await;
        assert!(matches!(broken, Err(StoreError::Backend(ref m)) if m.contains("disk on fire")));
        let why = store.failure().expect("the store says it failed");
        assert!(why.contains("disk on fire"), "{why}");
        assert!(matches!(
            store.count_pin_attempt("46700000009", 1, &LockoutPolicy::default()).await,
            Err(StoreError::Backend(ref m)) if m.contains("writes refused")
        ));
        // Reads go on, and see nothing of the aborted batch.
        assert_eq!(
            store.get_authorization(&sample().id).await.unwrap(),
            Some(sample())
        );
        assert_eq!(
            store.lock_state("46700000009", 2).await.unwrap(),
            LockState::Open { failures: 0 }
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_durable_writes_share_commits_and_refusals_stay_answers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path().join("store.redb"), OPTIONS).unwrap());
        let before = store.writer_stats().figures();
        let (tasks, each) = (64u64, 20u64);
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut refused = 0u64;
                    for i in 0..each {
                        let id = format!("t{t:02}-{i:02}");
                        let own = AuthorizationRecord {
                            id,
                            idempotency_key: None,
                            ..sample()
                        };
                        store
                            .create_authorization(&own, 0, 1_000, None)
                            .await
                            .unwrap();
                        // Everyone also tries one id that only the first may create.
                        let dup = AuthorizationRecord {
                            id: format!("shared-{i:02}"),
                            idempotency_key: None,
                            ..sample()
                        };
                        if let Err(e) = store.create_authorization(&dup, 0, 1_000, None).await {
                            assert!(matches!(e, StoreError::AlreadyExists { .. }), "{e}");
                            refused += 1;
                        }
                    }
                    refused
                })
            })
            .collect();
        let mut refused = 0;
        for h in handles {
            refused += h.await.unwrap();
        }
        assert_eq!(refused, (tasks - 1) * each, "one creation per shared id");
        assert_eq!(
            store.list_in_flight().await.unwrap().len() as u64,
            (tasks + 1) * each
        );
        assert_eq!(store.failure(), None, "refusals do not fail the store");
        let after = store.writer_stats().figures();
        let (ops, commits) = (
            after.operations - before.operations,
            after.commits - before.commits,
        );
        assert_eq!(ops, 2 * tasks * each);
        assert!(
            commits < ops,
            "{commits} commits for {ops} operations: no batch was formed"
        );
        assert!(after.durable_commits - before.durable_commits <= commits);
    }
}
