//! [`ObservedStore`]: any [`Store`], with the latency and result of every call in
//! [`StoreMetrics`] (`gateway_store_operation_duration_seconds`, `gateway_store_operations_total`).

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use super::{
    AuthState, AuthorizationRecord, AuthorizationUpdate, Creation, Ended, LockState, LockoutPolicy,
    OtaCounterKey, OutboxEntry, OutboxPolicy, PinAttempt, PurgeReport, Store, StoreError,
};
use crate::metrics::store::{StoreMetrics, StoreOp};

/// A store that reports every call to the store metrics.
pub struct ObservedStore {
    inner: Arc<dyn Store>,
    metrics: Arc<StoreMetrics>,
}

impl std::fmt::Debug for ObservedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObservedStore").finish_non_exhaustive()
    }
}

impl ObservedStore {
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<StoreMetrics>) -> Self {
        Self { inner, metrics }
    }

    async fn timed<T>(
        &self,
        op: StoreOp,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        // Refusals decided by the data (conflict, already exists, exhausted, bad key) are
        // answers; only backend trouble counts as an error.
        let ok = !matches!(
            result,
            Err(StoreError::Io(_) | StoreError::Backend(_) | StoreError::Corrupt { .. })
        );
        self.metrics.observe(op, ok, started.elapsed());
        result
    }
}

#[async_trait::async_trait]
impl Store for ObservedStore {
    async fn reserve_ota_counters(
        &self,
        key: &OtaCounterKey,
        n: u64,
    ) -> Result<Range<u64>, StoreError> {
        self.timed(
            StoreOp::ReserveOtaCounters,
            self.inner.reserve_ota_counters(key, n),
        )
        .await
    }

    async fn raise_ota_counter_floor(
        &self,
        key: &OtaCounterKey,
        floor: u64,
    ) -> Result<u64, StoreError> {
        self.timed(
            StoreOp::RaiseOtaCounterFloor,
            self.inner.raise_ota_counter_floor(key, floor),
        )
        .await
    }

    async fn ota_high_water(&self, key: &OtaCounterKey) -> Result<u64, StoreError> {
        self.timed(StoreOp::OtaHighWater, self.inner.ota_high_water(key))
            .await
    }

    async fn count_pin_attempt(
        &self,
        msisdn: &str,
        now_ms: u64,
        policy: &LockoutPolicy,
    ) -> Result<PinAttempt, StoreError> {
        self.timed(
            StoreOp::CountPinAttempt,
            self.inner.count_pin_attempt(msisdn, now_ms, policy),
        )
        .await
    }

    async fn reset_pin_failures(&self, msisdn: &str) -> Result<(), StoreError> {
        self.timed(
            StoreOp::ResetPinFailures,
            self.inner.reset_pin_failures(msisdn),
        )
        .await
    }

    async fn lock_state(&self, msisdn: &str, now_ms: u64) -> Result<LockState, StoreError> {
        self.timed(StoreOp::LockState, self.inner.lock_state(msisdn, now_ms))
            .await
    }

    async fn create_authorization(
        &self,
        record: &AuthorizationRecord,
        now_ms: u64,
        idempotency_ttl_ms: u64,
        ota: Option<&OtaCounterKey>,
    ) -> Result<Creation, StoreError> {
        self.timed(
            StoreOp::CreateAuthorization,
            self.inner
                .create_authorization(record, now_ms, idempotency_ttl_ms, ota),
        )
        .await
    }

    async fn update_authorization_state(
        &self,
        id: &str,
        expected: &AuthState,
        update: &AuthorizationUpdate,
    ) -> Result<AuthorizationRecord, StoreError> {
        self.timed(
            StoreOp::UpdateAuthorizationState,
            self.inner.update_authorization_state(id, expected, update),
        )
        .await
    }

    async fn end_authorization(
        &self,
        id: &str,
        update: &AuthorizationUpdate,
        outbox: &OutboxPolicy,
    ) -> Result<Ended, StoreError> {
        self.timed(
            StoreOp::EndAuthorization,
            self.inner.end_authorization(id, update, outbox),
        )
        .await
    }

    async fn get_authorization(&self, id: &str) -> Result<Option<AuthorizationRecord>, StoreError> {
        self.timed(StoreOp::GetAuthorization, self.inner.get_authorization(id))
            .await
    }

    async fn list_in_flight(&self) -> Result<Vec<AuthorizationRecord>, StoreError> {
        self.timed(StoreOp::ListInFlight, self.inner.list_in_flight())
            .await
    }

    async fn in_flight_for_msisdn(
        &self,
        msisdn: &str,
    ) -> Result<Vec<AuthorizationRecord>, StoreError> {
        self.timed(
            StoreOp::InFlightForMsisdn,
            self.inner.in_flight_for_msisdn(msisdn),
        )
        .await
    }

    async fn outbox_pending(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        self.timed(StoreOp::OutboxPending, self.inner.outbox_pending())
            .await
    }

    async fn outbox_remove(&self, event_id: &str) -> Result<(), StoreError> {
        self.timed(StoreOp::OutboxRemove, self.inner.outbox_remove(event_id))
            .await
    }

    async fn purge_expired(&self, now_ms: u64) -> Result<PurgeReport, StoreError> {
        self.timed(StoreOp::PurgeExpired, self.inner.purge_expired(now_ms))
            .await
    }

    fn failure(&self) -> Option<String> {
        self.inner.failure()
    }

    fn ended_hints(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        self.inner.ended_hints()
    }

    async fn renew_lease(&self, node: &str, ttl_ms: u64) -> Result<(), StoreError> {
        self.inner.renew_lease(node, ttl_ms).await
    }

    async fn lease_alive(&self, node: &str) -> Result<bool, StoreError> {
        self.inner.lease_alive(node).await
    }
}
