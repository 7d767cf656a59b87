//! The sender of the durable outbox: the deliveries an ending owes (the client's callback,
//! Keycloak's callback, the audit line), written by the store in the same atomic step as the
//! terminal state ([`Store::end_authorization`]) and removed only once delivered or given up.
//!
//! Data flow: the manager hands the entries of an ending it won to [`Outbox::deliver`] right
//! after the commit (no store read on the way); at start [`Outbox::resume`] reads what an earlier
//! run left ([`Store::outbox_pending`]) and delivers it again. Each entry gets a task that waits
//! for its `not_before`, renders its body from the terminal record (so it says what `GET` says),
//! delivers it with retries and back-off until its deadline ([`CallbackClient`]), then removes it.
//!
//! Delivery is at least once: a crash between a delivery and its removal delivers it again
//! after the restart. Every callback carries the authorization id (in the body) and a stable
//! event id (`Event-Id` header, and `event_id` in the native body; the audit line has it too),
//! so receivers drop duplicates.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::audit::AuditLog;
use super::pin::UnixClock;
use super::service::{AuthorizationState, AuthorizationView, TerminalStatus};
use super::state;
use crate::callback::{CallbackClient, Delivery, GiveUpReason, RetryPolicy};
use crate::metrics::callback::{CallbackMetrics, CallbackOutcome, CallbackTarget};
use crate::metrics::outbox::{self as om, OutboxMetrics, OutboxOutcome};
use crate::store::{AuthorizationRecord, OutboxEntry, OutboxKind, Store};

/// The callback status Keycloak understands (`AuthenticationChannelResponse.Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChannelStatus {
    /// Authenticated: Keycloak issues the tokens.
    Succeed,
    /// Not authorized (Keycloak logs `consent_denied`; the client gets `access_denied`).
    Unauthorized,
    /// Cancelled (Keycloak logs `not_allowed`; the client gets `access_denied`).
    Cancelled,
}

/// The result Keycloak receives for an authorization that ended with `status`.
pub fn channel_status(status: TerminalStatus) -> ChannelStatus {
    match status {
        TerminalStatus::Approved => ChannelStatus::Succeed,
        TerminalStatus::Cancelled => ChannelStatus::Cancelled,
        TerminalStatus::Denied
        | TerminalStatus::Expired
        | TerminalStatus::PinBlocked
        | TerminalStatus::NotReachable
        | TerminalStatus::DeliveryError
        | TerminalStatus::SimError
        | TerminalStatus::Rejected => ChannelStatus::Unauthorized,
    }
}

#[derive(Serialize)]
struct KeycloakBody {
    status: ChannelStatus,
}

/// The native callback body: the terminal view and the event id.
#[derive(Serialize)]
struct CallbackBody<'a> {
    event_id: &'a str,
    #[serde(flatten)]
    view: &'a AuthorizationView,
}

/// What happened to one outbox entry (for tests, logs and whoever listens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    pub event_id: String,
    pub authorization_id: String,
    pub kind: OutboxKind,
    /// The terminal status it told.
    pub status: TerminalStatus,
    /// Keycloak's status, for Keycloak entries.
    pub keycloak_status: Option<ChannelStatus>,
    pub delivery: Delivery,
}

/// Metrics the sender reports to.
#[derive(Debug, Clone)]
pub struct OutboxObservers {
    pub outbox: Arc<OutboxMetrics>,
    pub callbacks: Arc<CallbackMetrics>,
}

/// First and longest waits between two attempts to write an audit line (it is owed for good:
/// a full disk is retried until it has room, or until the process stops).
const AUDIT_FIRST_RETRY: Duration = Duration::from_millis(500);
const AUDIT_LONGEST_RETRY: Duration = Duration::from_secs(30);

/// The outbox sender; share it behind an `Arc`.
pub struct Outbox {
    store: Arc<dyn Store>,
    callbacks: CallbackClient,
    audit: Option<AuditLog>,
    clock: UnixClock,
    observers: Option<OutboxObservers>,
    /// (written at, event id) of every entry owned by a delivery task: depth and oldest age.
    waiting: Mutex<BTreeSet<(u64, String)>>,
    reports: broadcast::Sender<DeliveryReport>,
    tracker: TaskTracker,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("waiting", &self.depth())
            .finish_non_exhaustive()
    }
}

fn kind_label(kind: OutboxKind) -> om::OutboxKind {
    match kind {
        OutboxKind::Callback => om::OutboxKind::Callback,
        OutboxKind::Keycloak => om::OutboxKind::Keycloak,
        OutboxKind::Audit => om::OutboxKind::Audit,
    }
}

impl Outbox {
    pub fn new(
        store: Arc<dyn Store>,
        callbacks: CallbackClient,
        audit: Option<AuditLog>,
        clock: UnixClock,
        observers: Option<OutboxObservers>,
    ) -> Self {
        let (reports, _) = broadcast::channel(1024);
        // An entry is owed until its deadline: it is retried (with the policy's back-off)
        // until then, however many attempts that takes.
        let callbacks = callbacks.with_policy(RetryPolicy {
            max_attempts: u32::MAX,
            ..callbacks.policy().clone()
        });
        Self {
            store,
            callbacks,
            audit,
            clock,
            observers,
            waiting: Mutex::new(BTreeSet::new()),
            reports,
            tracker: TaskTracker::new(),
        }
    }

    /// Whether endings owe an audit line.
    pub fn audits(&self) -> bool {
        self.audit.is_some()
    }

    /// Reports of entries that left the outbox (lagging receivers lose the oldest).
    pub fn subscribe(&self) -> broadcast::Receiver<DeliveryReport> {
        self.reports.subscribe()
    }

    /// Entries being delivered now.
    pub fn depth(&self) -> usize {
        self.lock().len()
    }

    /// Waits up to `limit` for the deliveries under way; what is left stays in the store for the
    /// next run. Returns whether all finished.
    pub async fn drain(&self, limit: Duration) -> bool {
        self.tracker.close();
        let done = tokio::time::timeout(limit, self.tracker.wait())
            .await
            .is_ok();
        self.tracker.reopen();
        done
    }

    /// Delivers the entries an ending just wrote, `record` being its terminal record.
    pub fn deliver(self: &Arc<Self>, entries: Vec<OutboxEntry>, record: &AuthorizationRecord) {
        if entries.is_empty() {
            return;
        }
        let record = Arc::new(record.clone());
        for entry in entries {
            if let Some(o) = &self.observers {
                o.outbox.written(kind_label(entry.kind));
            }
            self.take(entry, record.clone());
        }
    }

    /// Delivers what an earlier run left in the outbox. Returns how many entries.
    pub async fn resume(self: &Arc<Self>) -> Result<usize, crate::store::StoreError> {
        let entries = self.store.outbox_pending().await?;
        let count = entries.len();
        for entry in entries {
            match self
                .store
                .get_authorization(&entry.authorization_id)
                .await?
            {
                Some(record) if record.state.is_terminal() => {
                    self.take(entry, Arc::new(record));
                }
                // Purged meanwhile (or never ended, which the store does not allow): nothing
                // true is left to say.
                _ => {
                    if let Err(e) = self.store.outbox_remove(&entry.event_id).await {
                        tracing::warn!(error = %e, "stale outbox entry not removed");
                    }
                }
            }
        }
        if count > 0 {
            tracing::info!(count, "delivering what the last run left in the outbox");
        }
        Ok(count)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<(u64, String)>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish_depth(&self, waiting: &BTreeSet<(u64, String)>) {
        if let Some(o) = &self.observers {
            let oldest = waiting.first().map_or(0, |(at, _)| *at);
            o.outbox.depth(waiting.len(), oldest);
        }
    }

    fn take(self: &Arc<Self>, entry: OutboxEntry, record: Arc<AuthorizationRecord>) {
        let slot = (entry.created_ms, entry.event_id.clone());
        {
            let mut waiting = self.lock();
            if !waiting.insert(slot.clone()) {
                // Already being delivered (a resume racing a fresh ending cannot happen, but a
                // second resume could).
                return;
            }
            self.publish_depth(&waiting);
        }
        let me = self.clone();
        self.tracker.spawn(async move {
            me.deliver_one(&entry, &record).await;
            let mut waiting = me.lock();
            waiting.remove(&slot);
            me.publish_depth(&waiting);
        });
    }

    fn instant_of(&self, unix_ms: u64) -> Option<Instant> {
        let left = unix_ms.saturating_sub((self.clock)());
        Instant::now().checked_add(Duration::from_millis(left))
    }

    async fn deliver_one(&self, entry: &OutboxEntry, record: &AuthorizationRecord) {
        if let Some(at) = self.instant_of(entry.not_before_ms) {
            tokio::time::sleep_until(at).await;
        }
        let view = state::view_of(record);
        let status = match &view.state {
            AuthorizationState::Terminal { status, .. } => *status,
            AuthorizationState::Pending { .. } => TerminalStatus::Expired,
        };
        let deadline = self.instant_of(entry.deadline_ms);
        let started = Instant::now();
        let mut keycloak_status = None;
        let delivery = match entry.kind {
            OutboxKind::Audit => self.write_audit(entry, record, &view).await,
            OutboxKind::Callback => match &record.callback_url {
                Some(url) => {
                    let body = serde_json::to_vec(&CallbackBody {
                        event_id: &entry.event_id,
                        view: &view,
                    })
                    .unwrap_or_default();
                    self.callbacks
                        .post_event(
                            url,
                            None,
                            Some(&entry.event_id),
                            Bytes::from(body),
                            deadline,
                        )
                        .await
                }
                None => unsendable("the authorization has no callback URL"),
            },
            OutboxKind::Keycloak => match &record.keycloak {
                Some(kc) => {
                    let kc_status = channel_status(status);
                    keycloak_status = Some(kc_status);
                    let body =
                        serde_json::to_vec(&KeycloakBody { status: kc_status }).unwrap_or_default();
                    self.callbacks
                        .post_event(
                            &kc.callback_url,
                            Some(&kc.token),
                            Some(&entry.event_id),
                            Bytes::from(body),
                            deadline,
                        )
                        .await
                }
                None => unsendable("Keycloak does not follow this authorization"),
            },
        };
        self.observe(entry.kind, &delivery, started.elapsed());
        match &delivery {
            Delivery::Delivered { attempts, .. } => {
                tracing::info!(id = %record.id, kind = entry.kind.name(), attempts, "delivered")
            }
            Delivery::GaveUp { reason } => {
                tracing::warn!(id = %record.id, kind = entry.kind.name(), %reason, "delivery given up")
            }
        }
        if let Err(e) = self.store.outbox_remove(&entry.event_id).await {
            tracing::warn!(error = %e, "delivered outbox entry not removed; it will be delivered again");
        }
        let _ = self.reports.send(DeliveryReport {
            event_id: entry.event_id.clone(),
            authorization_id: record.id.clone(),
            kind: entry.kind,
            status,
            keycloak_status,
            delivery,
        });
    }

    async fn write_audit(
        &self,
        entry: &OutboxEntry,
        record: &AuthorizationRecord,
        view: &AuthorizationView,
    ) -> Delivery {
        let Some(audit) = &self.audit else {
            // Written by a run that audited; this one does not: the entry cannot be kept.
            return unsendable("no audit log is configured");
        };
        let mut attempts = 0;
        let mut wait = AUDIT_FIRST_RETRY;
        loop {
            attempts += 1;
            match audit.record(&entry.event_id, &record.client_id, &record.msisdn, view) {
                Ok(()) => {
                    return Delivery::Delivered {
                        status: 0,
                        attempts,
                    }
                }
                // Logged by the audit log; the entry stays counted in the outbox meanwhile.
                Err(_) => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(AUDIT_LONGEST_RETRY);
                }
            }
        }
    }

    fn observe(&self, kind: OutboxKind, delivery: &Delivery, elapsed: Duration) {
        let Some(o) = &self.observers else {
            return;
        };
        let (outcome, attempts) = match delivery {
            Delivery::Delivered { attempts, .. } => (OutboxOutcome::Delivered, *attempts),
            Delivery::GaveUp { reason } => (OutboxOutcome::GaveUp, reason_attempts(reason)),
        };
        o.outbox.ended(kind_label(kind), outcome, attempts);
        let target = match kind {
            OutboxKind::Callback => CallbackTarget::Native,
            OutboxKind::Keycloak => CallbackTarget::Keycloak,
            OutboxKind::Audit => return,
        };
        let outcome = match delivery {
            Delivery::Delivered { .. } => CallbackOutcome::Delivered,
            Delivery::GaveUp { reason } => match reason {
                GiveUpReason::Unsendable(_) => CallbackOutcome::Unsendable,
                GiveUpReason::Refused { .. } => CallbackOutcome::Refused,
                GiveUpReason::DeadlinePassed { .. } | GiveUpReason::AttemptsExhausted { .. } => {
                    CallbackOutcome::Expired
                }
            },
        };
        o.callbacks.record(target, outcome, attempts, elapsed);
    }
}

fn reason_attempts(reason: &GiveUpReason) -> u32 {
    match reason {
        GiveUpReason::Unsendable(_) => 0,
        GiveUpReason::Refused { .. } => 1,
        GiveUpReason::DeadlinePassed { attempts, .. }
        | GiveUpReason::AttemptsExhausted { attempts, .. } => *attempts,
    }
}

fn unsendable(why: &str) -> Delivery {
    Delivery::GaveUp {
        reason: GiveUpReason::Unsendable(why.into()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_terminal_status_has_a_keycloak_status() {
        assert_eq!(
            channel_status(TerminalStatus::Approved),
            ChannelStatus::Succeed
        );
        assert_eq!(
            channel_status(TerminalStatus::Cancelled),
            ChannelStatus::Cancelled
        );
        for s in [
            TerminalStatus::Denied,
            TerminalStatus::Expired,
            TerminalStatus::PinBlocked,
            TerminalStatus::NotReachable,
            TerminalStatus::DeliveryError,
            TerminalStatus::SimError,
            TerminalStatus::Rejected,
        ] {
            assert_eq!(channel_status(s), ChannelStatus::Unauthorized, "{s:?}");
        }
        assert_eq!(
            serde_json::to_string(&KeycloakBody {
                status: ChannelStatus::Succeed
            })
            .unwrap(),
            r#"{"status":"SUCCEED"}"#
        );
    }
}
