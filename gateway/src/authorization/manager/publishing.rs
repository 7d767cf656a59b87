//! Publishing the one ending: the terminal compare-and-set with its outbox entries (one
//! durable step), then, only once it committed, long-pollers and metrics, and the outbox's
//! deliveries (callback, Keycloak, audit line); releasing the running authorization's
//! admission slot; retrying an ending the store refused.

use super::*;

impl Inner {
    /// Forgets a running authorization (after its end, or when its creation failed); `false`
    /// when it was forgotten already.
    pub(super) fn release(&self, flight: &Flight) -> bool {
        let mut live = lock(&self.live);
        if live.by_id.remove(&flight.id).is_none() {
            return false;
        }
        if let Some(n) = live.per_msisdn.get_mut(&flight.msisdn) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                live.per_msisdn.remove(&flight.msisdn);
            }
        }
        if let Some(key) = &flight.idempotency_key {
            live.by_key.remove(&(flight.client_id.clone(), key.clone()));
        }
        true
    }

    /// Shows `view` to the flight's readers and forgets the flight; whoever forgets it counts
    /// its completion, once, under the channel it was counted in when it started.
    pub(super) fn complete(&self, flight: &Flight, view: &AuthorizationView) {
        flight.view.send_replace(view.clone());
        if !self.release(flight) {
            return;
        }
        let status = match &view.state {
            AuthorizationState::Terminal { status, .. } => *status,
            // Given up without a stored ending: it left this process as an expiry.
            AuthorizationState::Pending { .. } => TerminalStatus::Expired,
        };
        if let Some(om) = self
            .operators
            .get(flight.operator)
            .and_then(|o| o.metrics.as_ref())
        {
            om.completed(
                metric_channel(flight.channel),
                metric_loa(flight.loa),
                metric_outcome(status),
                flight.started.elapsed(),
                None,
            );
        }
    }

    /// Gives back a USSD key handed out for a dialog that was never created.
    pub(super) fn release_dialog_key(&self, operator: usize, msisdn: &str, key: Option<u16>) {
        if let (Some(key), Some(keys)) = (key, self.dialog_keys.get(operator)) {
            keys.release(msisdn, key);
        }
    }

    /// What an ending owes the outbox besides the record's own callback targets.
    fn outbox_policy(&self) -> OutboxPolicy {
        OutboxPolicy {
            audit: self.outbox.audits(),
            callback_window_ms: u64::try_from(self.settings.callback_window.as_millis())
                .unwrap_or(u64::MAX),
        }
    }

    /// Ends `id` with `ending` unless it already ended: the store's compare-and-set decides,
    /// once, in the same durable step that writes the deliveries the ending owes. Only then is
    /// it published. Returns the terminal view (the winner's or the earlier one).
    ///
    /// When the store cannot take the ending, nothing is published: readers keep seeing the
    /// authorization pending, and a task retries the same ending until the deadline plus
    /// [`ManagerSettings::overrun`]; past that the record stays in flight and the next start's
    /// recovery ends it.
    pub(super) async fn finish(
        self: &Arc<Self>,
        id: &str,
        ending: Ending,
        via: Option<ChannelKind>,
    ) -> Result<AuthorizationView, LookupError> {
        match self.try_finish(id, &ending, via).await {
            Err(LookupError::Internal(e)) => {
                tracing::error!(id, error = %e, "ending not stored; nothing published, retrying");
                let flight = lock(&self.live).by_id.get(id).cloned();
                if let Some(flight) = flight {
                    self.retry_finish(flight, ending, via);
                }
                Err(LookupError::Internal(e))
            }
            other => other,
        }
    }

    async fn try_finish(
        &self,
        id: &str,
        ending: &Ending,
        via: Option<ChannelKind>,
    ) -> Result<AuthorizationView, LookupError> {
        let now = (self.clock)();
        let mut update = AuthorizationUpdate::to(
            state::terminal_state(ending.status, &ending.reason, via),
            now,
        );
        if let Some(loa) = ending.loa_achieved {
            update = update.with_loa_achieved(state::to_store_loa(loa));
        }
        if let Some(proof) = ending.proof.clone() {
            update = update.with_proof(proof);
        }
        let policy = self.outbox_policy();
        match self.store.end_authorization(id, &update, &policy).await {
            Ok(Ended {
                record,
                won: true,
                outbox,
            }) => {
                let view = self.publish(&record);
                let _ = self.ended_here.send(record.id.clone());
                self.outbox.deliver(outbox, &record);
                Ok(view)
            }
            Ok(Ended { record, .. }) => {
                let view = state::view_of(&record);
                // A flight that lost the race still leaves the live set.
                let flight = lock(&self.live).by_id.get(id).cloned();
                if let Some(f) = flight {
                    self.complete(&f, &view);
                }
                Ok(view)
            }
            Err(StoreError::NotFound { .. }) => Err(LookupError::NotFound),
            Err(e) => Err(LookupError::Internal(e.to_string())),
        }
    }

    /// Retries an ending the store refused, with back-off, until it is stored (then it is
    /// published) or the deadline plus the overrun passed (then the flight is forgotten here
    /// and the record, still in flight in the store, is ended by the next start's recovery).
    fn retry_finish(
        self: &Arc<Self>,
        flight: Arc<Flight>,
        ending: Ending,
        via: Option<ChannelKind>,
    ) {
        let me = self.clone();
        let give_up = flight.deadline + self.settings.overrun;
        self.tracker.spawn(async move {
            let mut wait = Duration::from_millis(100);
            loop {
                if Instant::now() + wait >= give_up || me.shutdown.is_cancelled() {
                    tracing::error!(
                        id = %flight.id,
                        "ending still not stored; left in flight for the next start to end"
                    );
                    let pending = flight.view.borrow().clone();
                    me.complete(&flight, &pending);
                    return;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
                match me.try_finish(&flight.id, &ending, via).await {
                    Err(LookupError::Internal(_)) => continue,
                    _ => return,
                }
            }
        });
    }

    /// Tells the live readers about an ending that won and is stored: long-pollers, metrics,
    /// the log. Deliveries (callbacks, audit) go through the outbox.
    pub(super) fn publish(&self, record: &AuthorizationRecord) -> AuthorizationView {
        let view = state::view_of(record);
        let flight = lock(&self.live).by_id.get(&record.id).cloned();
        let (status, reason) = match &view.state {
            AuthorizationState::Terminal { status, reason } => (*status, reason.as_str()),
            AuthorizationState::Pending { .. } => (TerminalStatus::Expired, ""),
        };
        if let Some(f) = &flight {
            self.complete(f, &view);
        }
        let masked = Msisdn::parse(&record.msisdn)
            .map(|m| m.masked().to_string())
            .unwrap_or_default();
        tracing::info!(
            id = %record.id,
            msisdn = %masked,
            status = state::status_name(status),
            reason,
            "authorization ended"
        );
        view
    }
}
