//! Store operations: latency and errors per operation (USE for the store: rate of
//! `gateway_store_operation_duration_seconds_sum` is its busy time, errors by `result`).
//!
//! [`crate::store::ObservedStore`] wraps the store `serve` uses, times each call of the
//! [`crate::store`] trait and reports it with [`StoreMetrics::observe`] (an expected refusal,
//! such as a lost compare-and-set, counts as `ok`: it is an answer, not a failure). The embedded store's
//! writer thread reports each group commit to [`StoreWriterMetrics`]: commits, fsyncs,
//! operations per commit, commit latency, and whether the store has failed.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::{label_enum, seconds, STORE_LATENCY_BUCKETS};

label_enum! {
    /// One operation of the store trait.
    pub enum StoreOp {
        /// `reserve_ota_counters`.
        ReserveOtaCounters => "reserve_ota_counters",
        /// `raise_ota_counter_floor`.
        RaiseOtaCounterFloor => "raise_ota_counter_floor",
        /// `ota_high_water`.
        OtaHighWater => "ota_high_water",
        /// `count_pin_attempt`.
        CountPinAttempt => "count_pin_attempt",
        /// `reset_pin_failures`.
        ResetPinFailures => "reset_pin_failures",
        /// `lock_state`.
        LockState => "lock_state",
        /// `create_authorization`.
        CreateAuthorization => "create_authorization",
        /// `update_authorization_state`.
        UpdateAuthorizationState => "update_authorization_state",
        /// `end_authorization`.
        EndAuthorization => "end_authorization",
        /// `get_authorization`.
        GetAuthorization => "get_authorization",
        /// `list_in_flight`.
        ListInFlight => "list_in_flight",
        /// `in_flight_for_msisdn`.
        InFlightForMsisdn => "in_flight_for_msisdn",
        /// `outbox_pending`.
        OutboxPending => "outbox_pending",
        /// `outbox_remove`.
        OutboxRemove => "outbox_remove",
        /// `purge_expired`.
        PurgeExpired => "purge_expired",
    }
}

label_enum! {
    /// Whether a store call succeeded.
    pub enum StoreResult {
        /// `Ok`.
        Ok => "ok",
        /// `Err`.
        Error => "error",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OpLabels {
    op: StoreOp,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    op: StoreOp,
    result: StoreResult,
}

/// Store metrics.
#[derive(Debug)]
pub struct StoreMetrics {
    duration: Vec<Histogram>,
    /// `[op][result]`.
    operations: Vec<Counter>,
    writer: std::sync::Arc<StoreWriterMetrics>,
    purged_authorizations: Counter,
    purged_idempotency_keys: Counter,
    file_bytes: Gauge,
    round_trips: Counter,
    shared_store_up: Gauge,
}

label_enum! {
    /// What the scheduled purge removed.
    pub enum PurgedKind {
        /// Ended authorizations past their TTL.
        Authorizations => "authorizations",
        /// Idempotency claims past their TTL.
        IdempotencyKeys => "idempotency_keys",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PurgedLabels {
    kind: PurgedKind,
}

/// Operations per commit: 1 to 1024 (the writer's largest batch).
const BATCH_BUCKETS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// The embedded store's group commits.
#[derive(Debug)]
pub struct StoreWriterMetrics {
    commits: Counter,
    fsyncs: Counter,
    batch: Histogram,
    commit_seconds: Histogram,
    failed: Gauge,
    compactions: Counter,
}

impl crate::store::writer::CommitObserver for StoreWriterMetrics {
    fn committed(&self, operations: usize, durable: bool, took: Duration) {
        self.commits.inc();
        if durable {
            self.fsyncs.inc();
        }
        self.batch.observe(operations as f64);
        self.commit_seconds.observe(seconds(took));
    }

    fn failed(&self) {
        self.failed.set(1);
    }

    fn compacted(&self) {
        self.compactions.inc();
    }
}

impl StoreMetrics {
    /// Registers the store families.
    pub fn new(registry: &mut Registry) -> Self {
        let duration_family = Family::<OpLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(STORE_LATENCY_BUCKETS)
        });
        let ops_family = Family::<ResultLabels, Counter>::default();
        registry.register(
            "store_operation_duration_seconds",
            "Latency of store operations",
            duration_family.clone(),
        );
        registry.register(
            "store_operations",
            "Store operations by result (ok, error)",
            ops_family.clone(),
        );
        let mut duration = Vec::new();
        let mut operations = Vec::new();
        for &op in StoreOp::ALL {
            duration.push(duration_family.get_or_create_owned(&OpLabels { op }));
            for &result in StoreResult::ALL {
                operations.push(ops_family.get_or_create_owned(&ResultLabels { op, result }));
            }
        }
        let writer = StoreWriterMetrics {
            commits: Counter::default(),
            fsyncs: Counter::default(),
            batch: Histogram::new(BATCH_BUCKETS),
            commit_seconds: Histogram::new(STORE_LATENCY_BUCKETS),
            failed: Gauge::default(),
            compactions: Counter::default(),
        };
        registry.register(
            "store_commits",
            "Group commits of the embedded store's writer",
            writer.commits.clone(),
        );
        registry.register(
            "store_fsyncs",
            "Group commits that were fsynced (one of their operations was durable)",
            writer.fsyncs.clone(),
        );
        registry.register(
            "store_operations_per_commit",
            "Operations carried by one group commit",
            writer.batch.clone(),
        );
        registry.register(
            "store_commit_duration_seconds",
            "Time of one group commit (the fsync included when there is one)",
            writer.commit_seconds.clone(),
        );
        registry.register(
            "store_failed",
            "1 when the store refuses writes after a failed commit (see /readyz)",
            writer.failed.clone(),
        );
        registry.register(
            "store_compactions",
            "Compactions of the journal store completed (the live state dumped into a new segment, older segments removed)",
            writer.compactions.clone(),
        );
        let purged = Family::<PurgedLabels, Counter>::default();
        registry.register(
            "store_purged",
            "Records removed by the scheduled purge, by kind",
            purged.clone(),
        );
        let file_bytes = Gauge::default();
        registry.register(
            "store_file_bytes",
            "Size of the embedded store's file (the journal's segments together), read after each purge",
            file_bytes.clone(),
        );
        let round_trips = Counter::default();
        registry.register(
            "store_round_trips",
            "Requests sent to a shared store (Redis commands, scripts and pipelines; health pings excluded)",
            round_trips.clone(),
        );
        let shared_store_up = Gauge::default();
        registry.register(
            "store_shared_up",
            "1 while the shared store (Redis) answers, 0 while it cannot be reached; absent meaning for the embedded store (always 1)",
            shared_store_up.clone(),
        );
        shared_store_up.set(1);
        Self {
            round_trips,
            shared_store_up,
            duration,
            operations,
            writer: std::sync::Arc::new(writer),
            purged_authorizations: purged.get_or_create_owned(&PurgedLabels {
                kind: PurgedKind::Authorizations,
            }),
            purged_idempotency_keys: purged.get_or_create_owned(&PurgedLabels {
                kind: PurgedKind::IdempotencyKeys,
            }),
            file_bytes,
        }
    }

    /// One purge removed `authorizations` and `idempotency_keys`; the file is now `file_bytes`.
    pub fn purged(&self, authorizations: u64, idempotency_keys: u64, file_bytes: Option<u64>) {
        self.purged_authorizations.inc_by(authorizations);
        self.purged_idempotency_keys.inc_by(idempotency_keys);
        if let Some(bytes) = file_bytes {
            self.file_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }

    /// The counter of requests to a shared store.
    pub fn round_trips(&self) -> Counter {
        self.round_trips.clone()
    }

    /// The gauge saying whether the shared store answers.
    pub fn shared_up(&self) -> Gauge {
        self.shared_store_up.clone()
    }

    /// The observer to give the embedded store's writer.
    pub fn writer(&self) -> std::sync::Arc<StoreWriterMetrics> {
        self.writer.clone()
    }

    /// One store call took `elapsed` and ended `ok` or not.
    pub fn observe(&self, op: StoreOp, ok: bool, elapsed: Duration) {
        self.duration[op as usize].observe(seconds(elapsed));
        let result = if ok {
            StoreResult::Ok
        } else {
            StoreResult::Error
        };
        self.operations[op as usize * StoreResult::ALL.len() + result as usize].inc();
    }
}
