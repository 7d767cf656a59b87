//! [`InMemoryStore`]: the [`Store`] contract without durability, for tests and simulations.
//!
//! One mutex over plain maps makes every operation atomic; the record rules come from
//! [`records`](super::records), so behaviour matches the embedded store except that nothing
//! survives the process.

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::records::{apply_ending, apply_update, CasRefusal, IdempotencyEntry};
use super::{
    advance_high_water, check_change, check_creation, check_key, exhausted, expiry, outbox_for,
    sort_outbox, AuthState, AuthorizationRecord, AuthorizationUpdate, Creation, Ended, LockState,
    LockoutPolicy, OtaCounterKey, OutboxEntry, OutboxPolicy, PinAttempt, PinRecord, PurgeReport,
    Store, StoreError, StoreOptions, OTA_COUNTER_FIRST, OTA_COUNTER_MAX,
};

#[derive(Debug, Default)]
struct Inner {
    ota: HashMap<String, u64>,
    pin: HashMap<String, PinRecord>,
    auth: HashMap<String, AuthorizationRecord>,
    /// Terminal records by expiry time.
    auth_expiry: BTreeSet<(u64, String)>,
    idempotency: HashMap<(String, String), IdempotencyEntry>,
    outbox: HashMap<String, OutboxEntry>,
}

#[derive(Debug, Default)]
pub struct InMemoryStore {
    options: StoreOptions,
    inner: Mutex<Inner>,
}

impl InMemoryStore {
    pub fn new(options: StoreOptions) -> Self {
        Self {
            options,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every operation leaves the maps consistent before anything can panic, so a poisoned
        // lock still guards valid data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl Store for InMemoryStore {
    async fn reserve_ota_counters(
        &self,
        key: &OtaCounterKey,
        n: u64,
    ) -> Result<Range<u64>, StoreError> {
        check_key("msisdn", &key.msisdn)?;
        let mut inner = self.lock();
        let mark = inner
            .ota
            .entry(key.storage_key())
            .or_insert(OTA_COUNTER_FIRST);
        if n == 0 {
            return Ok(*mark..*mark);
        }
        let start = (*mark).max(OTA_COUNTER_FIRST);
        let next = advance_high_water(key, start, n)?;
        *mark = next;
        Ok(start..next)
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
        let mut inner = self.lock();
        let mark = inner
            .ota
            .entry(key.storage_key())
            .or_insert(OTA_COUNTER_FIRST);
        *mark = (*mark).max(floor);
        Ok(*mark)
    }

    async fn ota_high_water(&self, key: &OtaCounterKey) -> Result<u64, StoreError> {
        check_key("msisdn", &key.msisdn)?;
        Ok(self
            .lock()
            .ota
            .get(&key.storage_key())
            .copied()
            .unwrap_or(OTA_COUNTER_FIRST))
    }

    async fn count_pin_attempt(
        &self,
        msisdn: &str,
        now_ms: u64,
        policy: &LockoutPolicy,
    ) -> Result<PinAttempt, StoreError> {
        check_key("msisdn", msisdn)?;
        let mut inner = self.lock();
        let record = inner.pin.entry(msisdn.to_owned()).or_default();
        Ok(record.count_attempt(now_ms, policy))
    }

    async fn reset_pin_failures(&self, msisdn: &str) -> Result<(), StoreError> {
        check_key("msisdn", msisdn)?;
        self.lock().pin.remove(msisdn);
        Ok(())
    }

    async fn lock_state(&self, msisdn: &str, now_ms: u64) -> Result<LockState, StoreError> {
        check_key("msisdn", msisdn)?;
        Ok(self
            .lock()
            .pin
            .get(msisdn)
            .map_or(LockState::Open { failures: 0 }, |r| r.state(now_ms)))
    }

    async fn create_authorization(
        &self,
        record: &AuthorizationRecord,
        now_ms: u64,
        idempotency_ttl_ms: u64,
        ota: Option<&OtaCounterKey>,
    ) -> Result<Creation, StoreError> {
        check_creation(record, ota)?;
        let mut inner = self.lock();
        if inner.auth.contains_key(&record.id) {
            return Err(StoreError::AlreadyExists {
                table: "authorizations",
                key: record.id.clone(),
            });
        }
        if let Some(key) = &record.idempotency_key {
            let slot = (record.client_id.clone(), key.clone());
            if let Some(entry) = inner.idempotency.get(&slot) {
                if entry.expires_ms > now_ms {
                    if let Some(other) = inner.auth.get(&entry.auth_id) {
                        return Ok(Creation::Existing(Box::new(other.clone())));
                    }
                }
            }
        }
        let mut record = record.clone();
        let ota_counter = match ota {
            Some(key) => {
                let mark = inner
                    .ota
                    .entry(key.storage_key())
                    .or_insert(OTA_COUNTER_FIRST);
                let counter = (*mark).max(OTA_COUNTER_FIRST);
                *mark = advance_high_water(key, counter, 1)?;
                record.stk_counter = Some(counter);
                Some(counter)
            }
            None => None,
        };
        if let Some(key) = &record.idempotency_key {
            inner.idempotency.insert(
                (record.client_id.clone(), key.clone()),
                IdempotencyEntry {
                    auth_id: record.id.clone(),
                    expires_ms: expiry(now_ms, idempotency_ttl_ms),
                },
            );
        }
        inner.auth.insert(record.id.clone(), record);
        Ok(Creation::Created { ota_counter })
    }

    async fn update_authorization_state(
        &self,
        id: &str,
        expected: &AuthState,
        update: &AuthorizationUpdate,
    ) -> Result<AuthorizationRecord, StoreError> {
        check_change(id, update, false)?;
        let mut inner = self.lock();
        let record = inner.auth.get_mut(id).ok_or_else(|| StoreError::NotFound {
            table: "authorizations",
            key: id.to_owned(),
        })?;
        apply_update(record, expected, update).map_err(|CasRefusal::Conflict(actual)| {
            StoreError::Conflict {
                id: id.to_owned(),
                actual,
            }
        })?;
        Ok(record.clone())
    }

    async fn end_authorization(
        &self,
        id: &str,
        update: &AuthorizationUpdate,
        outbox: &OutboxPolicy,
    ) -> Result<Ended, StoreError> {
        check_change(id, update, true)?;
        let mut inner = self.lock();
        let record = inner.auth.get_mut(id).ok_or_else(|| StoreError::NotFound {
            table: "authorizations",
            key: id.to_owned(),
        })?;
        if !apply_ending(record, update) {
            return Ok(Ended {
                record: record.clone(),
                won: false,
                outbox: Vec::new(),
            });
        }
        let record = record.clone();
        let at = expiry(update.now_ms, self.options.terminal_ttl_ms);
        inner.auth_expiry.insert((at, id.to_owned()));
        let entries = outbox_for(&record, outbox, update.now_ms);
        for entry in &entries {
            inner.outbox.insert(entry.event_id.clone(), entry.clone());
        }
        Ok(Ended {
            record,
            won: true,
            outbox: entries,
        })
    }

    async fn get_authorization(&self, id: &str) -> Result<Option<AuthorizationRecord>, StoreError> {
        check_key("authorization id", id)?;
        Ok(self.lock().auth.get(id).cloned())
    }

    async fn list_in_flight(&self) -> Result<Vec<AuthorizationRecord>, StoreError> {
        let mut records: Vec<_> = self
            .lock()
            .auth
            .values()
            .filter(|r| !r.state.is_terminal())
            .cloned()
            .collect();
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }

    async fn in_flight_for_msisdn(
        &self,
        msisdn: &str,
    ) -> Result<Vec<AuthorizationRecord>, StoreError> {
        check_key("msisdn", msisdn)?;
        let mut records: Vec<_> = self
            .lock()
            .auth
            .values()
            .filter(|r| r.msisdn == msisdn && !r.state.is_terminal())
            .cloned()
            .collect();
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }

    async fn outbox_pending(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut entries: Vec<_> = self.lock().outbox.values().cloned().collect();
        sort_outbox(&mut entries);
        Ok(entries)
    }

    async fn outbox_remove(&self, event_id: &str) -> Result<(), StoreError> {
        self.lock().outbox.remove(event_id);
        Ok(())
    }

    async fn purge_expired(&self, now_ms: u64) -> Result<PurgeReport, StoreError> {
        let mut inner = self.lock();
        let mut report = PurgeReport::default();
        let due: Vec<(u64, String)> = inner
            .auth_expiry
            .range(..(now_ms.saturating_add(1), String::new()))
            .cloned()
            .collect();
        for entry in due {
            inner.auth_expiry.remove(&entry);
            if inner.auth.remove(&entry.1).is_some() {
                report.authorizations += 1;
            }
        }
        let before = inner.idempotency.len();
        inner.idempotency.retain(|_, e| e.expires_ms > now_ms);
        report.idempotency_keys = before - inner.idempotency.len();
        Ok(report)
    }
}
