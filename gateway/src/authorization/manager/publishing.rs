//! Publishing the one ending: the terminal compare-and-set, then long-pollers, the audit log,
//! the callback URL and metrics; and releasing the running authorization's admission slot.

use super::*;

impl Inner {
    /// Forgets a running authorization (after its end, or when its creation failed).
    pub(super) fn release(&self, flight: &Flight) {
        let mut live = lock(&self.live);
        if live.by_id.remove(&flight.id).is_none() {
            return;
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
    }

    /// Ends `id` with `ending` unless it already ended: the compare-and-set decides, once.
    /// The winner publishes. Returns the terminal view (the winner's or the earlier one).
    pub(super) async fn finish(
        &self,
        id: &str,
        ending: Ending,
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
        let store = self.store.clone();
        let owned = id.to_owned();
        let result = blocking(move || {
            // A step may land between the read and the write; a few rounds settle it.
            for _ in 0..16 {
                let Some(current) = store.get_authorization(&owned)? else {
                    return Err(StoreError::NotFound {
                        table: "authorizations",
                        key: String::new(),
                    });
                };
                if current.state.is_terminal() {
                    return Ok((current, false));
                }
                match store.update_authorization_state(&owned, &current.state, &update) {
                    Ok(r) => return Ok((r, true)),
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(StoreError::Backend(
                "authorization state kept changing".into(),
            ))
        })
        .await;
        match result {
            Ok((record, true)) => Ok(self.publish(&record)),
            Ok((record, false)) => {
                let view = state::view_of(&record);
                // A flight that lost the race still leaves the live set.
                let flight = lock(&self.live).by_id.get(id).cloned();
                if let Some(f) = flight {
                    f.view.send_replace(view.clone());
                    self.release(&f);
                }
                Ok(view)
            }
            Err(StoreError::NotFound { .. }) => Err(LookupError::NotFound),
            Err(e) => {
                // Never leave a client waiting on a store failure: the ending is published
                // from memory; the record stays in flight and the next start's recovery ends
                // it as `gateway_restarted`.
                tracing::error!(error = %e, "terminal state not stored");
                let flight = lock(&self.live).by_id.get(id).cloned();
                if let Some(f) = flight {
                    let mut view = f.view.borrow().clone();
                    view.state = AuthorizationState::Terminal {
                        status: ending.status,
                        reason: ending.reason,
                    };
                    view.completed_at_ms = Some(now);
                    f.view.send_replace(view);
                    self.release(&f);
                }
                Err(LookupError::Internal(e.to_string()))
            }
        }
    }

    /// Tells everyone about an ending that won: long-pollers, metrics, logs, audit, callback.
    pub(super) fn publish(&self, record: &AuthorizationRecord) -> AuthorizationView {
        let view = state::view_of(record);
        let flight = lock(&self.live).by_id.get(&record.id).cloned();
        let (status, reason) = match &view.state {
            AuthorizationState::Terminal { status, reason } => (*status, reason.as_str()),
            AuthorizationState::Pending { .. } => (TerminalStatus::Expired, ""),
        };
        if let Some(f) = &flight {
            f.view.send_replace(view.clone());
            self.release(f);
            if let Some(om) = self
                .operators
                .get(f.operator)
                .and_then(|o| o.metrics.as_ref())
            {
                om.completed(
                    metric_channel(view.channel.unwrap_or(ChannelKind::Ussd)),
                    metric_loa(f.loa),
                    metric_outcome(status),
                    f.started.elapsed(),
                    None,
                );
            }
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
        if let Some(audit) = &self.audit {
            audit.record(&record.client_id, &record.msisdn, &view);
        }
        if let Some(url) = record.callback_url.clone() {
            self.send_callback(url, &view);
        }
        view
    }

    pub(super) fn send_callback(&self, url: String, view: &AuthorizationView) {
        let body = match serde_json::to_vec(view) {
            Ok(b) => bytes::Bytes::from(b),
            Err(_) => return,
        };
        let client = self.callbacks.clone();
        let deadline = Instant::now() + self.settings.callback_window;
        let id = view.id.clone();
        self.tracker.spawn(async move {
            let delivery = client.post_json(&url, None, body, Some(deadline)).await;
            if !delivery.is_delivered() {
                tracing::warn!(id = %id, ?delivery, "callback not delivered");
            }
        });
    }
}
