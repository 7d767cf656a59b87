//! Answers on any node. With a store shared by several nodes, an SMSC hands a handset's
//! answer (a USSD `deliver_sm`, a PoR) to any bind of the account, so it often lands on a node
//! that did not send the prompt. That node's router matches it to nothing and hands it here:
//! the authorizations of that subscriber in flight in the shared store and not running on this
//! node are taken over for the answer ([`Inner::resumable`], as after a restart), the router
//! checks the answer against them (session key and step, PIN with the shared try counter, the
//! card's MAC over the stored challenge), and the one it fits ends here by compare-and-set.
//!
//! The prompting node learns it from the store's ending hint (pub/sub): its flight publishes
//! the stored result to its waiters and forgets its dialog quietly (the answering node sent the
//! final screen). A lost hint costs time, not correctness: at its deadline the prompting node's
//! own ending loses the compare-and-set and publishes the stored one.

use super::carrying::channel_request;
use super::recovery::Resumable;
use super::*;
use crate::channel::{Adoption, StrayAnswer, StrayAnswers};

/// One operator's [`StrayAnswers`], over the manager.
pub(super) struct StrayAdopter {
    pub(super) inner: std::sync::Weak<Inner>,
    pub(super) operator: usize,
}

impl StrayAnswers for StrayAdopter {
    fn adopt<'a>(
        &'a self,
        answer: &'a StrayAnswer,
    ) -> BoxFuture<'a, Result<Vec<Adoption>, String>> {
        async move {
            let Some(inner) = self.inner.upgrade() else {
                return Ok(Vec::new());
            };
            inner.adopt(self.operator, answer).await
        }
        .boxed()
    }
}

impl Inner {
    /// Whether `id` was taken over here for a stray answer and is not settled yet.
    pub(super) fn is_adopted(&self, id: &str) -> bool {
        self.adopted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id)
    }

    async fn adopt(
        self: &Arc<Self>,
        operator: usize,
        answer: &StrayAnswer,
    ) -> Result<Vec<Adoption>, String> {
        let Some(op) = self.operators.get(operator) else {
            return Ok(Vec::new());
        };
        let msisdn = answer.msisdn();
        let records = self
            .store
            .in_flight_for_msisdn(&msisdn)
            .await
            .map_err(|e| e.to_string())?;
        let now_ms = (self.clock)();
        let mut adopted = Vec::new();
        for record in records {
            if record.operator != op.name
                || lock(&self.live).by_id.contains_key(&record.id)
                || self.is_adopted(&record.id)
            {
                continue;
            }
            let Some(Resumable { plan, stored, .. }) = self.resumable(&record, now_ms) else {
                continue;
            };
            let fits = matches!(
                (answer, plan.channel),
                (StrayAnswer::Ussd(_), ChannelKind::Ussd)
                    | (StrayAnswer::Stk { .. }, ChannelKind::Stk)
            );
            if !fits {
                continue;
            }
            let remaining = plan.deadline.saturating_duration_since(Instant::now());
            let Ok(request) = channel_request(
                &plan,
                plan.channel,
                plan.ussd_key,
                plan.stk_counter,
                remaining,
                None,
            ) else {
                continue;
            };
            let (reply, result) = oneshot::channel();
            let (settled_tx, settled) = oneshot::channel();
            let inner = self.clone();
            let id = record.id.clone();
            self.adopted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.clone());
            self.tracker.spawn(async move {
                let stored_ok = inner.settle_adopted(&id, &plan, stored, result).await;
                if let Some(ok) = stored_ok {
                    let _ = settled_tx.send(ok);
                }
                inner
                    .adopted
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
            });
            adopted.push(Adoption {
                request,
                reply,
                settled,
            });
        }
        Ok(adopted)
    }

    /// Ends an authorization taken over for a stray answer with what the answer decided. One
    /// the answer did not fit (it went to another, or it ran out of time here) is left to the
    /// node that prompted it: this node only ends what it was answered. Whether the ending is
    /// stored (`true` when nothing was to be stored); `None` when no result came.
    async fn settle_adopted(
        self: &Arc<Self>,
        id: &str,
        plan: &Plan,
        stored: ChannelKind,
        result: oneshot::Receiver<AuthResult>,
    ) -> Option<bool> {
        let Ok(result) = result.await else {
            return None;
        };
        // An expiry the handset reported (a PoR saying the user let the screen time out) is
        // an answer; one from this node's own timer at the deadline is not: it is the
        // prompting node's to call.
        let by_timer = Instant::now() + Duration::from_millis(500) >= plan.deadline;
        let decided = state::user_answered(&result)
            || matches!(
                result,
                AuthResult::Aborted | AuthResult::SimError(_) | AuthResult::PinBlocked
            )
            || (matches!(result, AuthResult::Expired | AuthResult::HandsetTimeout) && !by_timer);
        if !decided {
            return Some(true);
        }
        let channel = plan.channel;
        let locked_now =
            matches!(result, AuthResult::WrongPin) && self.is_locked(&plan.msisdn).await;
        let ending = state::ending_of(result, plan.loa, channel == ChannelKind::Stk, locked_now);
        tracing::info!(id, status = ?ending.status, "answer taken on this node for another node's prompt");
        let via = (channel != stored).then_some(channel);
        match self.finish(id, ending, via).await {
            Err(LookupError::Internal(e)) => {
                // The record stays in flight: the answer, refused for now, is delivered again
                // and taken over again.
                tracing::warn!(id, error = %e, "the ending an answer decided is not stored");
                Some(false)
            }
            _ => Some(true),
        }
    }
}

/// Follows the store's ending hints while the manager lives: a flight running here that
/// another node ended publishes the stored result and forgets its dialog.
pub(super) async fn follow_ending_hints(
    inner: std::sync::Weak<Inner>,
    mut hints: broadcast::Receiver<String>,
) {
    loop {
        let id = match hints.recv().await {
            Ok(id) => id,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(lost = n, "ending hints lost; deadlines re-read the store");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let Some(flight) = lock(&inner.live).by_id.get(&id).cloned() else {
            continue;
        };
        match inner.store.get_authorization(&id).await {
            Ok(Some(record)) if record.state.is_terminal() => {
                // Answered elsewhere: that node sent the final screen. Cancelled or expired
                // elsewhere: this node still holds the dialog and releases it.
                let view = state::view_of(&record);
                let answered = !matches!(
                    view.state,
                    AuthorizationState::Terminal {
                        status: TerminalStatus::Cancelled | TerminalStatus::Expired,
                        ..
                    }
                );
                if answered {
                    flight.ended_elsewhere.raise();
                }
                inner.complete(&flight, &view);
                flight.cancel.cancel();
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "an ended authorization could not be read"),
        }
    }
}
