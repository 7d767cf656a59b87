//! The durable outbox: deliveries owed for ended authorizations (client callbacks, Keycloak
//! callbacks, audit lines), how many wait, how old the oldest is, and how they ended.
//!
//! Callback outcomes and attempts are also counted in [`super::callback`]; this family adds
//! the audit lines and the queue itself. Age is exported as the oldest entry's unix timestamp
//! (0 when empty), so Prometheus computes it: `time() - gateway_outbox_oldest_entry_timestamp_seconds`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::label_enum;

label_enum! {
    /// What an outbox entry delivers.
    pub enum OutboxKind {
        /// A native client's `callback_url`.
        Callback => "callback",
        /// Keycloak's CIBA callback.
        Keycloak => "keycloak",
        /// An audit log line.
        Audit => "audit",
    }
}

label_enum! {
    /// How an outbox entry left the outbox.
    pub enum OutboxOutcome {
        /// Delivered (2xx, or the line written).
        Delivered => "delivered",
        /// Given up: refused for good, unsendable, or its deadline passed.
        GaveUp => "gave_up",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabels {
    kind: OutboxKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    kind: OutboxKind,
    outcome: OutboxOutcome,
}

/// Outbox metrics.
#[derive(Debug)]
pub struct OutboxMetrics {
    entries: Gauge,
    oldest: Gauge,
    /// `[kind]`.
    written: Vec<Counter>,
    /// `[kind]`.
    retries: Vec<Counter>,
    /// `[kind][outcome]`.
    ended: Vec<Counter>,
}

impl OutboxMetrics {
    /// Registers the outbox families.
    pub fn new(registry: &mut Registry) -> Self {
        let entries = Gauge::default();
        let oldest = Gauge::default();
        let written_family = Family::<KindLabels, Counter>::default();
        let retries_family = Family::<KindLabels, Counter>::default();
        let ended_family = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "outbox_entries",
            "Deliveries owed for ended authorizations, not yet delivered or given up",
            entries.clone(),
        );
        registry.register(
            "outbox_oldest_entry_timestamp_seconds",
            "Unix time the oldest waiting outbox entry was written (0 when the outbox is empty)",
            oldest.clone(),
        );
        registry.register(
            "outbox_written",
            "Outbox entries written with terminal states, by kind",
            written_family.clone(),
        );
        registry.register(
            "outbox_retries",
            "Delivery attempts of outbox entries after their first, by kind",
            retries_family.clone(),
        );
        registry.register(
            "outbox_ended",
            "Outbox entries that left the outbox, by kind and outcome (delivered, gave_up)",
            ended_family.clone(),
        );
        let mut written = Vec::new();
        let mut retries = Vec::new();
        let mut ended = Vec::new();
        for &kind in OutboxKind::ALL {
            written.push(written_family.get_or_create_owned(&KindLabels { kind }));
            retries.push(retries_family.get_or_create_owned(&KindLabels { kind }));
            for &outcome in OutboxOutcome::ALL {
                ended.push(ended_family.get_or_create_owned(&OutcomeLabels { kind, outcome }));
            }
        }
        Self {
            entries,
            oldest,
            written,
            retries,
            ended,
        }
    }

    /// The outbox now holds `entries`, the oldest written at `oldest_ms` (unix ms, 0: none).
    pub fn depth(&self, entries: usize, oldest_ms: u64) {
        self.entries.set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.oldest
            .set(i64::try_from(oldest_ms / 1000).unwrap_or(i64::MAX));
    }

    /// An entry of `kind` was written.
    pub fn written(&self, kind: OutboxKind) {
        self.written[kind as usize].inc();
    }

    /// An entry of `kind` left after `attempts` attempts.
    pub fn ended(&self, kind: OutboxKind, outcome: OutboxOutcome, attempts: u32) {
        self.retries[kind as usize].inc_by(u64::from(attempts.saturating_sub(1)));
        self.ended[kind as usize * OutboxOutcome::ALL.len() + outcome as usize].inc();
    }

    /// Entries of `kind` that ended with `outcome` so far (tests).
    pub fn ended_count(&self, kind: OutboxKind, outcome: OutboxOutcome) -> u64 {
        self.ended[kind as usize * OutboxOutcome::ALL.len() + outcome as usize].get()
    }
}
