//! Recovery at start (the outbox left by the last run is delivered, every record left in
//! flight ends as `expired` / `gateway_restarted`) and
//! the graceful shutdown (refuse, drain for a time, end the rest as `gateway_shutdown`).

use super::*;

impl AuthorizationManager {
    /// Ends every authorization the store holds in flight (left by an earlier run) as
    /// `expired` / `gateway_restarted`. Returns how many.
    pub async fn recover(&self) -> Result<usize, StoreError> {
        // Deliveries owed by endings of the last run first: they are older.
        self.inner.outbox.resume().await?;
        let stale = self.inner.store.list_in_flight().await?;
        let mut ended = 0;
        for record in stale {
            let ending = Ending::new(TerminalStatus::Expired, "gateway_restarted");
            if self.inner.finish(&record.id, ending, None).await.is_ok() {
                ended += 1;
            }
        }
        if ended > 0 {
            tracing::warn!(
                count = ended,
                "ended authorizations left in flight by the last run"
            );
        }
        Ok(ended)
    }

    /// Refuses new starts, lets running authorizations finish for up to `drain`, ends the rest
    /// as `expired` / `gateway_shutdown`, and waits (bounded) for callbacks to go out.
    pub async fn shutdown(&self, drain: Duration) {
        let inner = &self.inner;
        inner.accepting.store(false, Ordering::SeqCst);
        inner.tracker.close();
        if tokio::time::timeout(drain, inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = self.in_flight(),
                "drain time over, ending running authorizations"
            );
            inner.shutdown.cancel();
            let limit = inner.settings.callback_window.min(Duration::from_secs(10));
            if tokio::time::timeout(limit, inner.tracker.wait())
                .await
                .is_err()
            {
                tracing::warn!("authorizations still ending at shutdown");
            }
        }
        // Cancelled tasks end their flights; a flight whose task vanished still ends here.
        let left: Vec<String> = lock(&inner.live).by_id.keys().cloned().collect();
        for id in left {
            let ending = Ending::new(TerminalStatus::Expired, "gateway_shutdown");
            let _ = inner.finish(&id, ending, None).await;
        }
        // What is not delivered in time stays in the store's outbox for the next start.
        let limit = inner.settings.callback_window.min(Duration::from_secs(10));
        if !inner.outbox.drain(limit).await {
            tracing::warn!(
                left = inner.outbox.depth(),
                "deliveries still running at shutdown; the next start sends them again"
            );
        }
    }
}
