//! Carrying out one authorization: `prompted`, the channel, `answered`, and
//! the fallback from the SIM applet to USSD; every step a compare-and-set in the store.

use super::*;
use crate::channel::SimFailure;
use sim_applet_model::ota::ResponseStatus;

/// Seconds the user is given, rounded up so a request with the API's minimum expiry is not cut
/// below it by the milliseconds already spent; for the applet, inside the range its protocol
/// accepts (the gateway's own deadline still ends the authorization on time).
/// First pause before a step is written again after a transient store failure; it doubles up
/// to [`STEP_RETRY_MAX`].
const STEP_RETRY_FIRST: Duration = Duration::from_millis(100);
const STEP_RETRY_MAX: Duration = Duration::from_secs(1);

/// Failures that may pass (a shared store unreachable, a disk hiccup), as opposed to a record
/// that cannot be written at all.
fn is_transient(e: &StoreError) -> bool {
    matches!(e, StoreError::Backend(_) | StoreError::Io(_))
}

fn user_expiry_secs(remaining: Duration, channel: ChannelKind) -> u16 {
    let secs = u16::try_from(remaining.as_millis().div_ceil(1000)).unwrap_or(u16::MAX);
    match channel {
        ChannelKind::Stk => secs.clamp(
            sim_applet_model::applet::protocol::MIN_EXPIRY_SECS,
            sim_applet_model::applet::protocol::MAX_EXPIRY_SECS,
        ),
        ChannelKind::Ussd => secs.max(1),
    }
}

/// Counters skipped at once when a card reports ours too low.
pub const OTA_COUNTER_RAISE: u64 = 1 << 16;

fn ota_failure_kind(failure: &SimFailure) -> m::OtaFailure {
    match failure {
        SimFailure::Por(ResponseStatus::ChecksumFailed) => m::OtaFailure::CcFailed,
        SimFailure::Por(
            ResponseStatus::CounterLow
            | ResponseStatus::CounterHigh
            | ResponseStatus::CounterBlocked,
        ) => m::OtaFailure::CounterRejected,
        SimFailure::BadAnswer(_) => m::OtaFailure::BadAnswer,
        _ => m::OtaFailure::Other,
    }
}

/// The sender needs `CardSecrets`; the PIN fields are the card's business and unknown to the
/// gateway, so placeholders fill them (the push never uses them).
fn card_secrets(keys: &CardKeys) -> Option<sim_applet_model::applet::state::CardSecrets> {
    use sim_applet_model::applet::pin::Pin;
    Some(sim_applet_model::applet::state::CardSecrets {
        kic_key: keys.kic_key,
        kid_key: keys.kid_key,
        k_auth: keys.k_auth,
        initial_pin: Pin::new(b"0000").ok()?,
        puk: Pin::new_puk(b"00000000").ok()?,
    })
}

/// The channel's request for `plan` on `channel` with `remaining` of the user's time; the
/// ending instead when the push cannot be built (no card keys, no counter).
pub(super) fn channel_request(
    plan: &Plan,
    channel: ChannelKind,
    ussd_key: Option<u16>,
    stk_counter: Option<u64>,
    remaining: Duration,
    ended_elsewhere: Option<EndedElsewhere>,
) -> Result<AuthRequest, Ending> {
    let auth_channel = match (channel, &plan.keys) {
        (ChannelKind::Stk, Some(keys)) => {
            let Some(secrets) = card_secrets(keys) else {
                return Err(Ending::new(TerminalStatus::SimError, "card_keys"));
            };
            let Some(counter) = stk_counter else {
                tracing::error!("no OTA counter was reserved with the record");
                return Err(Ending::new(
                    TerminalStatus::SimError,
                    "ota_counter_unavailable",
                ));
            };
            AuthChannel::Stk { secrets, counter }
        }
        _ => AuthChannel::Ussd,
    };
    Ok(AuthRequest {
        msisdn: plan.msisdn.clone(),
        loa: state::to_applet_loa(plan.loa),
        channel: auth_channel,
        rp_name: plan.rp_name.clone(),
        consent: plan.consent.clone(),
        binding_code: plan.binding.clone(),
        expiry_secs: user_expiry_secs(remaining, channel),
        ussd_key: match channel {
            ChannelKind::Ussd => ussd_key,
            ChannelKind::Stk => None,
        },
        stk_nonce: plan.stk_nonce,
        ended_elsewhere,
    })
}

impl Inner {
    pub(super) fn set_view(&self, flight: &Flight, view: AuthorizationView) {
        flight.view.send_replace(view);
    }

    pub(super) fn set_step(&self, flight: &Flight, step: PendingState) {
        flight.view.send_modify(|v| {
            if !state::is_terminal(v) {
                v.state = AuthorizationState::Pending { step };
            }
        });
    }

    /// Records that the prompt left (`Routed` to `Prompted`), once per authorization; `false`
    /// when it ended meanwhile (cancelled, shut down) or the step could not be stored before
    /// the user's time ran out, so the caller stops.
    pub(super) async fn mark_prompted(
        &self,
        flight: &Flight,
        counter: Option<u64>,
        prompted: &mut bool,
    ) -> bool {
        if *prompted {
            return true;
        }
        if !self
            .step(flight, AuthState::Routed, AuthState::Prompted, counter)
            .await
        {
            return false;
        }
        *prompted = true;
        true
    }

    /// A non-terminal step by compare-and-set, tried again on a transient store failure until
    /// the deadline. `false`: the authorization ended meanwhile, or the step was not stored.
    pub(super) async fn step(
        &self,
        flight: &Flight,
        from: AuthState,
        to: AuthState,
        counter: Option<u64>,
    ) -> bool {
        let step = state::pending_step(&to);
        let mut pause = STEP_RETRY_FIRST;
        loop {
            let mut update = AuthorizationUpdate::to(to.clone(), (self.clock)());
            if let Some(c) = counter {
                update = update.with_stk_counter(c);
            }
            let result = self
                .store
                .update_authorization_state(&flight.id, &from, &update)
                .await;
            match result {
                Ok(_) => {}
                // An earlier attempt that timed out at this end was applied by the store after
                // all (a paused or slow Redis runs it late): the step is there.
                Err(StoreError::Conflict { actual, .. }) if actual == to => {}
                Err(StoreError::Conflict { actual, .. }) if actual.is_terminal() => return false,
                Err(e) if Instant::now() + pause < flight.deadline && is_transient(&e) => {
                    // A shared store that is briefly unreachable (a Redis restart or
                    // failover): the answer may still come, so the step is tried again.
                    tracing::warn!(error = %e, "authorization step not stored yet; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(STEP_RETRY_MAX);
                    continue;
                }
                Err(e) => {
                    // The store is the record of truth; without it the step cannot be kept,
                    // and the authorization ends rather than carrying on unrecorded.
                    tracing::error!(error = %e, "authorization step not stored");
                    return false;
                }
            }
            if let Some(step) = step {
                self.set_step(flight, step);
            }
            return true;
        }
    }

    /// The task of one authorization: carry it out, end it once.
    pub(super) async fn run(self: Arc<Self>, flight: Arc<Flight>, plan: Plan) {
        let outcome = tokio::select! {
            () = flight.cancel.cancelled() => {
                if self.shutdown.is_cancelled() {
                    Some((Ending::new(TerminalStatus::Expired, "gateway_shutdown"), None))
                } else {
                    // Cancelled by the client: `cancel` has ended it already.
                    None
                }
            }
            outcome = self.carry_out(&flight, &plan) => Some(outcome),
        };
        let (ending, via) = outcome.unwrap_or_else(|| {
            (
                Ending::new(TerminalStatus::Cancelled, "client_cancelled"),
                None,
            )
        });
        // Loses harmlessly when the authorization already ended; when the store fails,
        // `finish` keeps retrying on its own and publishes nothing until it is stored.
        // Boxed, as the steps below: a sub-future awaited inline would make the state of every
        // flight (alive for minutes) as large as its largest step.
        let _ = Box::pin(self.finish(&flight.id, ending, via)).await;
    }

    pub(super) async fn carry_out(
        &self,
        flight: &Flight,
        plan: &Plan,
    ) -> (Ending, Option<ChannelKind>) {
        let mut channel = plan.channel;
        let mut via = plan.via;
        // A prompt taken over after a restart was out already; its step is in the record.
        let mut resumed = plan.resumed_from.is_some();
        let mut prompted = plan.resumed_from == Some(AuthState::Prompted);
        let mut ussd_key = plan.ussd_key;
        let mut stk_counter = plan.stk_counter;
        let mut counter_raised = false;
        let Some(operator) = self.operators.get(flight.operator) else {
            return (Ending::new(TerminalStatus::Rejected, "no_operator"), None);
        };
        loop {
            let remaining = plan.deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return (Ending::new(TerminalStatus::Expired, "no_response"), via);
            }
            let request = match channel_request(
                plan,
                channel,
                ussd_key,
                stk_counter,
                remaining,
                Some(flight.ended_elsewhere.clone()),
            ) {
                Ok(request) => request,
                Err(ending) => return (ending, via),
            };
            let counter = match &request.channel {
                AuthChannel::Stk { counter, .. } => Some(*counter),
                AuthChannel::Ussd => None,
            };
            // `prompted` is recorded when the SMSC takes the prompt, not when it is queued: a
            // throttled bind must not make the view claim the handset has it.
            let (accepted_tx, accepted_rx) = oneshot::channel();
            let mut accepted_rx = Some(accepted_rx);
            let work = if std::mem::take(&mut resumed) {
                drop(accepted_tx);
                accepted_rx = None;
                operator.channel.resume(request)
            } else {
                if let Some(om) = &operator.metrics {
                    om.prompt_sent(metric_channel(channel));
                }
                operator.channel.authorize_notifying(request, accepted_tx)
            };
            // The applet keeps its own clock and its answer travels back by SMS, so an STK
            // push gets an overrun past the expiry; a USSD dialog is live: at the expiry it is
            // over, whatever the dialect's step timers would still allow.
            let allowance = match channel {
                ChannelKind::Stk => remaining + self.settings.overrun,
                ChannelKind::Ussd => remaining,
            };
            let deadline = tokio::time::sleep(allowance);
            tokio::pin!(work, deadline);
            let result = loop {
                tokio::select! {
                    result = &mut work => break result,
                    () = &mut deadline => break AuthResult::Expired,
                    taken = async {
                        match accepted_rx.as_mut() {
                            Some(rx) => rx.await,
                            None => std::future::pending().await,
                        }
                    }, if accepted_rx.is_some() =>
                    {
                        accepted_rx = None;
                        flight.prompt_left();
                        if taken.is_ok()
                            && !Box::pin(self.mark_prompted(flight, counter, &mut prompted)).await
                        {
                            return (interrupted(), via);
                        }
                    }
                }
            };
            flight.prompt_left();
            // The result can overtake the acceptance notice; an answer from the user also
            // proves the prompt arrived.
            let taken = accepted_rx.as_mut().is_some_and(|rx| rx.try_recv().is_ok());
            if (taken || state::user_answered(&result))
                && !Box::pin(self.mark_prompted(flight, counter, &mut prompted)).await
            {
                return (interrupted(), via);
            }
            if let (Some(om), AuthResult::SimError(failure)) = (&operator.metrics, &result) {
                om.ota_failure(ota_failure_kind(failure));
            }
            let counter_low = matches!(
                result,
                AuthResult::SimError(SimFailure::Por(ResponseStatus::CounterLow))
            );
            if counter_low && channel == ChannelKind::Stk && !counter_raised {
                // The card has seen a higher counter than our store knows (a restored store,
                // another system): raise the floor once, durably, and push again. The card
                // refused the packet, so the user saw nothing yet.
                counter_raised = true;
                if let Some(raised) = Box::pin(self.raise_ota_floor(flight, plan, prompted)).await {
                    if let Some(om) = &operator.metrics {
                        om.ota_counter_raised();
                    }
                    tracing::warn!(id = %flight.id, "card reported the OTA counter low: floor raised, pushing again");
                    stk_counter = Some(raised);
                    continue;
                }
            }
            let can_fall_back = channel == ChannelKind::Stk
                && self.settings.fallback_stk_to_ussd
                && (plan.loa == Loa::Loa2 || self.settings.loa3_over_ussd)
                && state::is_delivery_failure(&result);
            if can_fall_back {
                tracing::info!(id = %flight.id, "STK push not delivered, falling back to USSD");
                channel = ChannelKind::Ussd;
                via = Some(ChannelKind::Ussd);
                ussd_key = self
                    .dialog_keys
                    .get(flight.operator)
                    .and_then(|k| k.allocate(&plan.msisdn, Instant::now()));
                // The fallback prompt's key goes into the record (with the next commit, not
                // fsynced by itself), so a restart resumes the USSD dialog, not the STK push.
                if let Some(key) = ussd_key {
                    Box::pin(self.keep_with_record(
                        flight,
                        prompted,
                        |u| u.with_ussd_key(key),
                        "fallback key",
                    ))
                    .await;
                }
                flight
                    .view
                    .send_modify(|v| v.channel = Some(ChannelKind::Ussd));
                if plan.loa == Loa::Loa3 && Box::pin(self.is_locked(&plan.msisdn)).await {
                    return (
                        Ending::new(TerminalStatus::PinBlocked, "ussd_pin_locked"),
                        via,
                    );
                }
                continue;
            }
            if state::user_answered(&result) {
                // Shown, not stored: the ending follows at once and is the durable step (a
                // crash in between finds the record `prompted`, which recovery treats alike;
                // a cancel in between wins or loses the ending's compare-and-set).
                self.set_step(flight, PendingState::Answered);
            }
            let locked_now = matches!(result, AuthResult::WrongPin)
                && Box::pin(self.is_locked(&plan.msisdn)).await;
            if let (Some(om), AuthResult::WrongPin) = (&operator.metrics, &result) {
                om.pin_failure(metric_channel(channel));
                if locked_now {
                    om.pin_lockout(metric_channel(channel));
                }
            }
            let ending =
                state::ending_of(result, plan.loa, channel == ChannelKind::Stk, locked_now);
            return (ending, via);
        }
    }

    /// Reserves [`OTA_COUNTER_RAISE`] counters of the card at once (durable) and returns the
    /// highest: the floor jumps past what the card may have seen. The record keeps the new
    /// counter (with the next commit) so a restart matches the card's answer to it.
    async fn raise_ota_floor(&self, flight: &Flight, plan: &Plan, prompted: bool) -> Option<u64> {
        let key = plan.ota_key.as_ref()?;
        let range = match self
            .store
            .reserve_ota_counters(key, OTA_COUNTER_RAISE)
            .await
        {
            Ok(range) => range,
            Err(e) => {
                tracing::error!(error = %e, "OTA counter floor not raised");
                return None;
            }
        };
        let counter = range.end.checked_sub(1)?;
        self.keep_with_record(
            flight,
            prompted,
            |u| u.with_stk_counter(counter),
            "raised OTA counter",
        )
        .await;
        Some(counter)
    }

    /// Stores what a second prompt of the same authorization needs with its record, in the
    /// step it is in (with the next commit, not fsynced by itself), so a restart resumes that
    /// prompt; a failure is logged, the prompt goes out regardless.
    async fn keep_with_record(
        &self,
        flight: &Flight,
        prompted: bool,
        with: impl FnOnce(AuthorizationUpdate) -> AuthorizationUpdate,
        what: &'static str,
    ) {
        let from = if prompted {
            AuthState::Prompted
        } else {
            AuthState::Routed
        };
        let update = with(AuthorizationUpdate::to(from.clone(), (self.clock)()));
        if let Err(e) = self
            .store
            .update_authorization_state(&flight.id, &from, &update)
            .await
        {
            tracing::warn!(error = %e, what, "not stored with the record");
        }
    }

    pub(super) async fn is_locked(&self, msisdn: &str) -> bool {
        let now = (self.clock)();
        !matches!(
            self.store.lock_state(msisdn, now).await,
            Ok(LockState::Open { .. })
        )
    }
}
