//! Durable state the gateway's security depends on: OTA counters, PIN failure counts and
//! lockouts, authorizations and idempotency keys, behind one [`Store`] trait.
//!
//! Data flows from the sessions and channels into the trait's operations; each operation is one
//! atomic step in the backend (a redb write transaction in [`EmbeddedStore`], a mutex in
//! [`InMemoryStore`], one Redis command or Lua script in the Redis backend to come). The rules
//! that change records (lockout, compare-and-set on authorization state) live in [`records`] and
//! are shared, so backends only differ in atomicity and durability. [`OtaCounterAllocator`] sits
//! on top of any store and hands out OTA counters from durably reserved blocks without I/O.
//!
//! Files: [`records`] (types and rules), [`embedded`] (redb, the default: one file, nothing to
//! install), [`writer`] (its group commit), [`memory`] (tests), [`observed`] (metrics of every
//! call, around any backend), [`allocator`] (OTA counter blocks).
//!
//! # Durability guarantees
//!
//! "Durable" means: once the call returned `Ok`, the effect survives `kill -9` of the gateway
//! and a crash of the process at any instant (for [`EmbeddedStore`]: the redb commit with
//! `Durability::Immediate` has fsynced before returning; power loss is covered as far as the
//! disk honours fsync). `tests/store_durability.rs` kills a writer process with SIGKILL in the
//! middle of its work and checks every acknowledged item after reopening.
//!
//! | Operation | Embedded store | Why |
//! |---|---|---|
//! | [`Store::reserve_ota_counters`], [`Store::raise_ota_counter_floor`] | durable | A reused OTA counter is rejected by the card as a replay. |
//! | [`Store::count_pin_attempt`] | durable | Counted before the PIN is checked: a crash costs the user one try, never gives an attacker one more. |
//! | [`Store::reset_pin_failures`] | not durable by itself | Rides on the ending that follows a right PIN; lost, it leaves one failure counted, the safe side. |
//! | [`Store::create_authorization`] (record + idempotency claim) | durable | Every accepted authorization must end in exactly one terminal status, and a retry must find it, also after a restart. |
//! | [`Store::update_authorization_state`] (non-terminal steps) | not durable by itself (made durable by the next durable commit) | Recovery treats an earlier in-flight state the same way; saves two fsyncs per authorization. |
//! | [`Store::end_authorization`] (terminal state + outbox entries) | durable | The status the client saw must not change, and what the ending owes must not be lost. |
//! | [`Store::outbox_remove`], [`Store::purge_expired`] | not durable by itself | A lost removal means one more delivery (event ids make it recognisable); a lost purge is repeated. |
//!
//! `docs/store.md` justifies each durable step of an authorization.
//!
//! **OTA counters.** The store keeps, per (MSISDN, TAR, key set), a high-water mark: the lowest
//! counter never handed out. [`Store::reserve_ota_counters`] advances it by a block and returns
//! the block; the allocator hands counters from the block in increasing order. After a crash the
//! unused rest of a block is skipped, never reused: counters after a restart are above every
//! counter handed out before. This needs the card's counter mode "process if higher than the
//! stored counter" (SPI counter bits `10`), not "exactly one higher", which no crash-safe sender
//! can honour. Counters are 5 bytes ([`OTA_COUNTER_MAX`]); exhaustion is an error, the key set
//! must then be replaced. With several nodes sharing a Redis store, blocks reserved by two nodes
//! interleave, so a counter from node A can be lower than one node B already sent: use a block of
//! 1 (one `INCRBY`, no fsync in the gateway) or keep each MSISDN's sends on one node.
//!
//! **PIN lockout.** Counted per MSISDN under [`LockoutPolicy`]; the PIN itself is never stored.
//! Attempts are counted before the check; while locked they are refused and not counted.
//!
//! **Authorizations.** Created once ([`StoreError::AlreadyExists`] otherwise); changed only by
//! compare-and-set on the state; a terminal state is final ([`StoreError::Conflict`] for any
//! later change), so two nodes racing to end one authorization produce exactly one terminal
//! status. [`Store::list_in_flight`] returns every non-terminal record for recovery at start.
//! Terminal records and idempotency claims expire: [`Store::purge_expired`] removes terminal
//! records older than [`StoreOptions::terminal_ttl_ms`] and claims past their TTL (an expired
//! claim is already ignored by [`Store::create_authorization`] before it is purged). In-flight
//! records never expire by themselves: the caller ends them with a terminal status.
//!
//! **Outbox.** [`Store::end_authorization`] writes the deliveries an ending owes
//! ([`records::outbox_for`]) with the terminal state; they stay until
//! [`Store::outbox_remove`], so a crash before delivery means delivery after the restart.
//!
//! # Latency, group commit and async callers
//!
//! Every write of the `EmbeddedStore` goes through one writer thread ([`writer`]): a
//! caller hands its operation over a bounded queue and waits; the writer takes the first waiting
//! operation and every other one already queued (no timer: operations that arrive during a commit
//! form the next batch), applies them in arrival order in one redb write transaction, commits once
//! (with an fsync when one of them is durable) and only then answers them all. So concurrent
//! durable operations share one fsync, and nothing is acknowledged before the commit that carries
//! it. An expected refusal (already exists, conflict, counters exhausted) is that operation's
//! answer and does not disturb the others; a failure inside the backend aborts the whole batch
//! (none of it is applied, every caller in it gets the error) and marks the store failed: from
//! then on writes are refused at once, `/readyz` answers 503 and `gateway_store_failed` is 1,
//! because a disk that failed a commit is not retried silently.
//!
//! Methods are async: reads run on the caller's task and take microseconds; a write awaits its
//! batch's commit (an fsync: 0.1–10 ms depending on the disk) without holding a runtime worker.
//! [`OtaCounterAllocator::next`] does I/O only once per block.
//!
//! # Mapping onto Redis
//!
//! Keys are strings built the same way in every backend (e.g. [`OtaCounterKey::storage_key`]):
//! OTA high-water marks are `INCRBY` (and a max-script for the floor); PIN records, the creation
//! with its claim and the ending with its outbox entries are short Lua scripts over JSON values;
//! in-flight authorizations are a set per MSISDN plus a global set; terminal records get
//! `PEXPIRE`, which makes `purge_expired` a no-op there.

pub mod allocator;
pub mod embedded;
pub mod journal;
pub mod memory;
pub mod observed;
pub mod records;
pub mod redis;
pub mod writer;

#[cfg(test)]
mod conformance;

use std::ops::Range;

pub use allocator::OtaCounterAllocator;
pub use embedded::EmbeddedStore;
pub use journal::JournalStore;
pub use memory::InMemoryStore;
pub use observed::ObservedStore;
pub use records::{
    outbox_for, AuthState, AuthorizationRecord, AuthorizationUpdate, Channel, Creation, Ended,
    KeycloakFollow, Loa, LockState, LockoutPolicy, OtaCounterKey, OutboxEntry, OutboxKind,
    OutboxPolicy, PinAttempt, PinRecord, PurgeReport, TerminalStatus, OTA_COUNTER_FIRST,
    OTA_COUNTER_MAX,
};
pub use redis::{LocalRedis, RedisObservers, RedisSettings, RedisStore};

/// Settings shared by all backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// How long a terminal authorization stays readable (polling clients, late callbacks,
    /// audits) before [`Store::purge_expired`] removes it.
    pub terminal_ttl_ms: u64,
    /// Embedded store: the shortest time between the starts of two fsynced commits (see
    /// [`writer`]'s pacing); zero: no pacing.
    pub durable_commit_interval: std::time::Duration,
    /// Embedded store: bytes of the file's pages kept in memory (a fixed cost, whatever the
    /// number of authorizations; the OS's page cache holds the rest of the file).
    pub cache_bytes: usize,
    /// Journal store: the segment being written is compacted once it is past this size and
    /// past twice the last dump.
    pub journal_compact_bytes: u64,
}

/// Default [`StoreOptions::cache_bytes`].
pub const DEFAULT_CACHE_BYTES: usize = 128 * 1024 * 1024;

/// Default [`StoreOptions::durable_commit_interval`]: at most 200 fsyncs per second.
pub const DEFAULT_DURABLE_COMMIT_INTERVAL: std::time::Duration =
    std::time::Duration::from_millis(5);

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            terminal_ttl_ms: 24 * 60 * 60 * 1000,
            durable_commit_interval: DEFAULT_DURABLE_COMMIT_INTERVAL,
            cache_bytes: DEFAULT_CACHE_BYTES,
            journal_compact_bytes: journal::COMPACT_MIN_BYTES,
        }
    }
}

/// Errors of every backend. Messages never contain an MSISDN (keys stay in the fields).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A stored value does not decode (disk corruption or a record written by an incompatible
    /// version). `key` may contain an MSISDN: do not log it.
    #[error("corrupt record in table {table}: {detail}")]
    Corrupt {
        table: &'static str,
        key: String,
        detail: String,
    },
    /// Compare-and-set refused: the authorization is in `actual`, not in the expected state, or
    /// is already terminal.
    #[error("authorization {id} is {}, not in the expected state", actual.name())]
    Conflict { id: String, actual: AuthState },
    /// A create found the key already present.
    #[error("{table} already holds this key")]
    AlreadyExists { table: &'static str, key: String },
    #[error("{table} has no such key")]
    NotFound { table: &'static str, key: String },
    /// The 5-byte OTA counter space of a key set is used up: provision a new key set.
    #[error("OTA counters exhausted for TAR {tar} key set {key_set}")]
    CountersExhausted { tar: String, key_set: u8 },
    /// A key component is empty, too long or has control characters.
    #[error("invalid {field}: {reason}")]
    InvalidKey {
        field: &'static str,
        reason: &'static str,
    },
    /// Any other backend failure (database already open by another process, poisoned lock...).
    #[error("store backend error: {0}")]
    Backend(String),
}

/// The gateway's durable state. See the module documentation for durability and latency.
///
/// Times are unix milliseconds passed in by the caller; the store never reads a clock, so tests
/// run on virtual time. Methods are async: a write waits for its group commit without holding a
/// runtime worker.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Durably advances the high-water mark of `key` by `n` and returns the reserved counters
    /// (`n == 0` returns an empty range without I/O). Never returns a counter twice, also across
    /// restarts.
    async fn reserve_ota_counters(
        &self,
        key: &OtaCounterKey,
        n: u64,
    ) -> Result<Range<u64>, StoreError>;

    /// Durably raises the high-water mark of `key` to at least `floor` (e.g. after the card
    /// answered "counter too low" with its own value + 1, or when provisioning a used card) and
    /// returns the mark. Never lowers it.
    async fn raise_ota_counter_floor(
        &self,
        key: &OtaCounterKey,
        floor: u64,
    ) -> Result<u64, StoreError>;

    /// The lowest counter never handed out for `key`.
    async fn ota_high_water(&self, key: &OtaCounterKey) -> Result<u64, StoreError>;

    /// Before a PIN of `msisdn` is checked: refuses while locked, else durably counts the
    /// attempt as a failure and returns the resulting state. A right PIN then clears the count
    /// ([`Store::reset_pin_failures`]), so a crash between the two costs the user one try and
    /// never gives an attacker one more.
    async fn count_pin_attempt(
        &self,
        msisdn: &str,
        now_ms: u64,
        policy: &LockoutPolicy,
    ) -> Result<PinAttempt, StoreError>;

    /// Forgets failures, locks and blocks of `msisdn` (right PIN, or support desk). Not durable
    /// by itself: it rides on the next durable commit (the ending that follows a right PIN).
    async fn reset_pin_failures(&self, msisdn: &str) -> Result<(), StoreError>;

    async fn lock_state(&self, msisdn: &str, now_ms: u64) -> Result<LockState, StoreError>;

    /// Durably creates `record` and, when it has an idempotency key, points (client, key) at it
    /// for `idempotency_ttl_ms`, in one atomic step; with `ota`, the same step reserves the
    /// next OTA counter of that key (as [`Store::reserve_ota_counters`] with 1) and stores it
    /// in the record's `stk_counter`, so the counter costs no durable step of its own and is
    /// known after a restart. A live claim of the same key answers [`Creation::Existing`] with
    /// the record it names and writes nothing; [`StoreError::AlreadyExists`] if the id is taken.
    async fn create_authorization(
        &self,
        record: &AuthorizationRecord,
        now_ms: u64,
        idempotency_ttl_ms: u64,
        ota: Option<&OtaCounterKey>,
    ) -> Result<Creation, StoreError>;

    /// Compare-and-set of a non-terminal step: applies `update` if the stored state equals
    /// `expected` and is not terminal, and returns the updated record; [`StoreError::Conflict`]
    /// with the actual state otherwise, [`StoreError::NotFound`] if there is no such id. Not
    /// durable by itself (a terminal `update` is refused: endings go through
    /// [`Store::end_authorization`]).
    async fn update_authorization_state(
        &self,
        id: &str,
        expected: &AuthState,
        update: &AuthorizationUpdate,
    ) -> Result<AuthorizationRecord, StoreError>;

    /// Durably ends `id` with the terminal `update` unless it ended already, and writes the
    /// outbox entries the ending owes under `outbox` ([`records::outbox_for`]) in the same
    /// atomic step. [`Ended::won`] says whether this call ended it; the record is the terminal
    /// one either way.
    async fn end_authorization(
        &self,
        id: &str,
        update: &AuthorizationUpdate,
        outbox: &OutboxPolicy,
    ) -> Result<Ended, StoreError>;

    async fn get_authorization(&self, id: &str) -> Result<Option<AuthorizationRecord>, StoreError>;

    /// Every authorization not in a terminal state, for recovery at start.
    async fn list_in_flight(&self) -> Result<Vec<AuthorizationRecord>, StoreError>;

    /// The in-flight authorizations of one subscriber: to correlate an MO answer arriving on any
    /// bind, and to refuse a second concurrent transaction.
    async fn in_flight_for_msisdn(
        &self,
        msisdn: &str,
    ) -> Result<Vec<AuthorizationRecord>, StoreError>;

    /// Every outbox entry not yet delivered (or given up), oldest first: the sender's work after
    /// a restart.
    async fn outbox_pending(&self) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Removes a delivered (or given up) entry. Not durable by itself: a removal lost in a
    /// crash means one more delivery of an event the receiver can recognise by its id.
    async fn outbox_remove(&self, event_id: &str) -> Result<(), StoreError>;

    /// Removes terminal authorizations past their TTL and expired idempotency claims.
    async fn purge_expired(&self, now_ms: u64) -> Result<PurgeReport, StoreError>;

    /// Why the store refuses writes, if it does (a commit failed: the disk is not trusted any
    /// more and nothing is retried silently). `/readyz` reports it.
    fn failure(&self) -> Option<String> {
        None
    }

    /// Says that `node` is alive for `ttl_ms` more (a store shared by several nodes; a local
    /// store has one node and keeps nothing).
    async fn renew_lease(&self, _node: &str, _ttl_ms: u64) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether `node`'s lease still runs. A local store knows no other node: `false`.
    async fn lease_alive(&self, _node: &str) -> Result<bool, StoreError> {
        Ok(false)
    }

    /// Ids of authorizations another node ended, as they are ended (a shared store only):
    /// a hint to wake this node's waiters at once. Hints can be lost (a dropped connection, a
    /// lagging receiver): the waiters' own deadline re-reads the store as the backstop.
    fn ended_hints(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        None
    }
}

/// Refuses key parts that would make keys ambiguous or unbounded.
pub(crate) fn check_key(field: &'static str, value: &str) -> Result<(), StoreError> {
    if value.is_empty() {
        return Err(StoreError::InvalidKey {
            field,
            reason: "empty",
        });
    }
    if value.len() > records::MAX_KEY_COMPONENT_LEN {
        return Err(StoreError::InvalidKey {
            field,
            reason: "longer than 255 bytes",
        });
    }
    if value.chars().any(char::is_control) {
        return Err(StoreError::InvalidKey {
            field,
            reason: "control character",
        });
    }
    Ok(())
}

pub(crate) fn check_record(record: &AuthorizationRecord) -> Result<(), StoreError> {
    check_key("authorization id", &record.id)?;
    check_key("client id", &record.client_id)?;
    check_key("msisdn", &record.msisdn)?;
    if let Some(key) = &record.idempotency_key {
        check_key("idempotency key", key)?;
    }
    Ok(())
}

/// The arguments of [`Store::create_authorization`], checked the same way in every backend.
pub(crate) fn check_creation(
    record: &AuthorizationRecord,
    ota: Option<&OtaCounterKey>,
) -> Result<(), StoreError> {
    check_record(record)?;
    if record.state.is_terminal() {
        return Err(StoreError::Backend(
            "an authorization is created in flight".into(),
        ));
    }
    if let Some(key) = ota {
        check_key("msisdn", &key.msisdn)?;
    }
    Ok(())
}

/// The arguments of [`Store::update_authorization_state`] (`terminal == false`) or
/// [`Store::end_authorization`] (`terminal == true`), checked the same way in every backend.
pub(crate) fn check_change(
    id: &str,
    update: &AuthorizationUpdate,
    terminal: bool,
) -> Result<(), StoreError> {
    check_key("authorization id", id)?;
    match (terminal, update.state.is_terminal()) {
        (false, true) => Err(StoreError::Backend(
            "endings go through end_authorization".into(),
        )),
        (true, false) => Err(StoreError::Backend("an ending must be terminal".into())),
        _ => Ok(()),
    }
}

/// Outbox entries in the order [`Store::outbox_pending`] returns them: oldest first, then by
/// event id.
pub(crate) fn sort_outbox(entries: &mut [OutboxEntry]) {
    entries.sort_by(|a, b| (a.created_ms, &a.event_id).cmp(&(b.created_ms, &b.event_id)));
}

/// The new high-water mark after reserving `n`, or the exhaustion error.
pub(crate) fn advance_high_water(
    key: &OtaCounterKey,
    current: u64,
    n: u64,
) -> Result<u64, StoreError> {
    let current = current.max(OTA_COUNTER_FIRST);
    match current.checked_add(n) {
        // `OTA_COUNTER_MAX` itself is usable, so the mark may reach MAX + 1.
        Some(next) if next <= OTA_COUNTER_MAX + 1 => Ok(next),
        _ => Err(exhausted(key)),
    }
}

pub(crate) fn exhausted(key: &OtaCounterKey) -> StoreError {
    StoreError::CountersExhausted {
        tar: hex::encode(key.tar),
        key_set: key.key_set,
    }
}

pub(crate) fn expiry(now_ms: u64, ttl_ms: u64) -> u64 {
    now_ms.saturating_add(ttl_ms)
}
