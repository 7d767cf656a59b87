//! Admission: a start is parsed, routed and admitted (or answered from a running
//! authorization with the same idempotency key), then created in the store and handed to a
//! tracked task (`carrying`).

use super::*;

/// Longest authorization the manager runs, whatever a channel asks: deadlines stay far from
/// any overflow of the clock arithmetic.
pub const MAX_EXPIRY: Duration = Duration::from_secs(24 * 60 * 60);

/// A start the store could not take: 503 with `Retry-After` while the store says it is
/// unreachable or failed, an internal error otherwise.
fn store_refusal(inner: &Inner, retry_after: Duration) -> StartError {
    if inner.store.failure().is_some() {
        StartError::StoreUnavailable { retry_after }
    } else {
        internal("store unavailable")
    }
}

pub(super) fn internal(e: impl std::fmt::Display) -> StartError {
    StartError::Internal(e.to_string())
}

pub(super) enum Admitted {
    /// A running authorization with the same idempotency key.
    Running(AuthorizationView),
    New(Arc<Flight>),
}

impl AuthorizationManager {
    /// Starts, or finds the authorization an idempotency key already names; the flag says
    /// which (the API answers 200 for an existing one, 201 for a new one).
    pub(super) async fn start_inner(
        &self,
        req: StartRequest,
    ) -> Result<(AuthorizationView, bool), StartError> {
        let inner = &self.inner;
        let retry_after = inner.settings.retry_after;
        if !inner.accepting.load(Ordering::SeqCst) {
            return Err(StartError::Overloaded { retry_after });
        }
        // A store that cannot be written (Redis unreachable, a failed disk) takes nothing new:
        // nothing may be promised before it is stored.
        if inner.store.failure().is_some() {
            return Err(StartError::StoreUnavailable { retry_after });
        }
        let msisdn = Msisdn::parse(&req.msisdn).map_err(|e| StartError::Invalid(e.to_string()))?;
        if req.expiry.is_zero() || req.expiry > MAX_EXPIRY {
            return Err(StartError::Invalid(format!(
                "expiry must be above zero and at most {} s",
                MAX_EXPIRY.as_secs()
            )));
        }
        let op = inner
            .router
            .route(&msisdn)
            .map_err(|_| StartError::UnknownSubscriber)?;
        let op_index = usize::from(op.0);
        let operator = inner
            .operators
            .get(op_index)
            .ok_or(StartError::UnknownSubscriber)?;
        let sub = inner
            .subscribers
            .get(&msisdn)
            .ok_or(StartError::UnknownSubscriber)?;
        let keys = if sub.has_applet {
            sub.keys.clone()
        } else {
            None
        };
        let channel = if keys.is_some() {
            ChannelKind::Stk
        } else {
            ChannelKind::Ussd
        };
        if channel == ChannelKind::Ussd && req.loa == Loa::Loa3 && !inner.settings.loa3_over_ussd {
            return Err(StartError::Policy(
                "LoA3 needs the SIM applet for this subscriber; PIN entry over USSD is disabled"
                    .into(),
            ));
        }
        let now_ms = (inner.clock)();
        let id = new_id();
        let view = AuthorizationView {
            id: id.clone(),
            state: AuthorizationState::Pending {
                step: PendingState::Created,
            },
            loa_requested: req.loa,
            loa_achieved: None,
            channel: Some(channel),
            operator: Some(operator.name.clone()),
            created_at_ms: now_ms,
            completed_at_ms: None,
            gateway_ms: None,
            proof: None,
        };
        let flight = match self.admit(&req, &msisdn, op_index, view)? {
            Admitted::Running(view) => return Ok((view, true)),
            Admitted::New(f) => f,
        };
        let expiry_ms = u64::try_from(req.expiry.as_millis()).unwrap_or(u64::MAX);
        // What checking the answer needs is chosen here and stored with the record, before the
        // prompt goes out, so an answer that arrives after a restart still counts.
        let stk_nonce = (channel == ChannelKind::Stk).then(|| StkNonce {
            txid: rand::random(),
            challenge: rand::random(),
        });
        let ussd_key = match channel {
            ChannelKind::Ussd => match inner.dialog_keys.get(op_index) {
                Some(keys) => match keys.allocate(msisdn.as_str(), Instant::now()) {
                    Some(key) => Some(key),
                    None => {
                        inner.release(&flight);
                        return Err(StartError::AlreadyInProgress);
                    }
                },
                None => None,
            },
            ChannelKind::Stk => None,
        };
        let record = AuthorizationRecord {
            id: id.clone(),
            client_id: req.client_id.clone(),
            msisdn: msisdn.as_str().to_owned(),
            operator: operator.name.clone(),
            channel: state::to_store_channel(channel),
            loa_requested: state::to_store_loa(req.loa),
            loa_achieved: None,
            // Created and routed in one step: routing happened above, in memory.
            state: AuthState::Routed,
            created_ms: now_ms,
            deadline_ms: now_ms.saturating_add(expiry_ms),
            updated_ms: now_ms,
            stk_counter: None,
            challenge: stk_nonce.map(|n| n.challenge.to_vec()).unwrap_or_default(),
            txid: stk_nonce.map(|n| n.txid.to_vec()).unwrap_or_default(),
            ussd_key,
            proof: None,
            callback_url: req.callback_url.clone(),
            idempotency_key: req.idempotency_key.clone(),
            prompted_ms: None,
            keycloak: req.keycloak.clone(),
            node: Some(inner.settings.node_id.clone()),
        };
        let check_lock = channel == ChannelKind::Ussd && req.loa == Loa::Loa3;
        let locked = check_lock
            && match inner.store.lock_state(&record.msisdn, now_ms).await {
                Ok(state) => !matches!(state, LockState::Open { .. }),
                Err(e) => {
                    inner.release(&flight);
                    inner.release_dialog_key(op_index, msisdn.as_str(), ussd_key);
                    tracing::error!(error = %e, "PIN lock state unreadable");
                    return Err(store_refusal(inner, retry_after));
                }
            };
        let ttl_ms = u64::try_from(inner.settings.idempotency_ttl.as_millis()).unwrap_or(0);
        let counter_key = OtaCounterKey::new(msisdn.as_str(), sub.tar, sub.kic >> 4);
        // The OTA counter of the push is reserved in the same durable step as the record.
        let ota = (channel == ChannelKind::Stk && !locked).then_some(&counter_key);
        let stk_counter = match inner
            .store
            .create_authorization(&record, now_ms, ttl_ms, ota)
            .await
        {
            Ok(Creation::Created { ota_counter }) => ota_counter,
            Ok(Creation::Existing(other)) => {
                inner.release(&flight);
                inner.release_dialog_key(op_index, msisdn.as_str(), ussd_key);
                return Ok((state::view_of(&other), true));
            }
            Err(e) => {
                inner.release(&flight);
                inner.release_dialog_key(op_index, msisdn.as_str(), ussd_key);
                tracing::error!(error = %e, "store refused a new authorization");
                return Err(store_refusal(inner, retry_after));
            }
        };
        if locked {
            self.metered_start(&flight, channel);
            inner.set_view(&flight, state::view_of(&record));
            let ending = Ending::new(TerminalStatus::PinBlocked, "ussd_pin_locked");
            return inner
                .finish(&id, ending, None)
                .await
                .map(|view| (view, false))
                .map_err(|e| StartError::Internal(e.to_string()));
        }
        self.metered_start(&flight, channel);
        let view = state::view_of(&record);
        inner.set_view(&flight, view.clone());
        tracing::info!(
            id = %id,
            msisdn = %msisdn.masked(),
            operator = %operator.name,
            channel = ?channel,
            loa = ?req.loa,
            "authorization started"
        );
        let plan = Plan {
            msisdn: msisdn.as_str().to_owned(),
            loa: req.loa,
            channel,
            keys,
            stk_counter,
            ota_key: (channel == ChannelKind::Stk).then(|| counter_key.clone()),
            stk_nonce,
            ussd_key,
            resumed_from: None,
            via: None,
            rp_name: req.client_name,
            consent: req.consent_text,
            binding: req.binding_message.unwrap_or_default(),
            deadline: flight.deadline,
        };
        let task_inner = inner.clone();
        // Every log line of this authorization carries its id and the masked number, never
        // the full MSISDN.
        let span = tracing::info_span!(
            "authorization",
            id = %id,
            msisdn = %msisdn.masked(),
            channel = ?channel,
            loa = ?req.loa,
        );
        inner.tracker.spawn(
            async move {
                task_inner.run(flight, plan).await;
            }
            .instrument(span),
        );
        Ok((view, false))
    }

    pub(super) fn metered_start(&self, flight: &Flight, channel: ChannelKind) {
        if let Some(om) = self
            .inner
            .operators
            .get(flight.operator)
            .and_then(|o| o.metrics.as_ref())
        {
            om.started(metric_channel(channel), metric_loa(flight.loa));
        }
    }

    /// Under one lock: an idempotent retry of a running authorization, or admission.
    pub(super) fn admit(
        &self,
        req: &StartRequest,
        msisdn: &Msisdn,
        operator: usize,
        view: AuthorizationView,
    ) -> Result<Admitted, StartError> {
        let settings = &self.inner.settings;
        let mut live = lock(&self.inner.live);
        if let Some(key) = &req.idempotency_key {
            let running = live
                .by_key
                .get(&(req.client_id.clone(), key.clone()))
                .and_then(|id| live.by_id.get(id));
            if let Some(f) = running {
                return Ok(Admitted::Running(f.view.borrow().clone()));
            }
        }
        if live.by_id.len() >= settings.max_in_flight {
            return Err(StartError::Overloaded {
                retry_after: settings.retry_after,
            });
        }
        let same = live.per_msisdn.get(msisdn.as_str()).copied().unwrap_or(0);
        if same >= settings.per_msisdn {
            return Err(StartError::AlreadyInProgress);
        }
        // Under the lock, so that concurrent starts each see the prompts admitted before them.
        let awaiting = &self.inner.awaiting_prompts[operator];
        let port = &self.inner.operators[operator];
        match port
            .channel
            .admit(awaiting.load(Ordering::Relaxed), req.expiry)
        {
            Admission::Admit { .. } => {}
            Admission::Refuse { why, retry_after } => {
                if let Some(om) = &port.metrics {
                    om.refused(why);
                }
                return Err(StartError::NoCapacity {
                    retry_after: retry_after.unwrap_or(settings.retry_after),
                });
            }
        }
        let id = view.id.clone();
        let channel = view.channel.unwrap_or(ChannelKind::Ussd);
        let (tx, _) = watch::channel(view);
        let flight = Arc::new(Flight {
            id,
            client_id: req.client_id.clone(),
            msisdn: msisdn.as_str().to_owned(),
            idempotency_key: req.idempotency_key.clone(),
            operator,
            loa: req.loa,
            channel,
            view: tx,
            cancel: self.inner.shutdown.child_token(),
            started: Instant::now(),
            deadline: Instant::now() + req.expiry,
            prompt_ticket: Mutex::new(Some(PromptTicket::new(
                awaiting,
                port.metrics.as_ref().map(|m| m.awaiting_prompts_gauge()),
            ))),
            ended_elsewhere: EndedElsewhere::default(),
        });
        live.per_msisdn.insert(flight.msisdn.clone(), same + 1);
        if let Some(key) = &flight.idempotency_key {
            live.by_key
                .insert((flight.client_id.clone(), key.clone()), flight.id.clone());
        }
        live.by_id.insert(flight.id.clone(), flight.clone());
        Ok(Admitted::New(flight))
    }
}
