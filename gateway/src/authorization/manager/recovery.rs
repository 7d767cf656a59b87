//! Recovery at start and the graceful shutdown (refuse, drain for a time, end the rest as
//! `gateway_shutdown`).
//!
//! At start the outbox left by the last run is delivered, and every authorization the last run
//! left in flight is taken over when its prompt can still be answered: time is left, and the
//! record holds what checking the answer needs (the USSD session key; the STK counter,
//! transaction id and challenge, with the card's keys from the subscriber registry). Its
//! channel then waits for the answer without sending anything, and the authorization ends as the
//! user chose. The others end as `expired` / `gateway_restarted`.

use super::*;

/// What [`AuthorizationManager::recover`] did with the authorizations left in flight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Taken over: their answers are awaited.
    pub resumed: usize,
    /// Ended as `expired` / `gateway_restarted` (no time left, or nothing to match an answer).
    pub ended: usize,
}

/// Less time than this left: not worth taking over.
const LEAST_TIME_TO_RESUME: Duration = Duration::from_secs(1);

impl AuthorizationManager {
    /// Delivers what the last run left in the outbox, takes over the authorizations it left in
    /// flight whose answers can still come, and ends the others as `expired` /
    /// `gateway_restarted`. Call once, before serving.
    pub async fn recover(&self) -> Result<Recovered, StoreError> {
        // Deliveries owed by endings of the last run first: they are older. A store that
        // cannot list them does not keep the gateway from serving: they stay for a later start.
        if let Err(e) = self.inner.outbox.resume().await {
            tracing::error!(error = %e, "the outbox left by the last run cannot be read");
        }
        let inner = &self.inner;
        let node = inner.settings.node_id.clone();
        let lease_ms = u64::try_from(inner.settings.node_lease.as_millis()).unwrap_or(u64::MAX);
        if let Err(e) = inner.store.renew_lease(&node, lease_ms).await {
            tracing::warn!(error = %e, "node lease not renewed");
        }
        let mut stale = Vec::new();
        let mut leases = HashMap::new();
        for record in inner.store.list_in_flight().await? {
            if inner.takes_over(&record, &mut leases).await {
                stale.push(record);
            }
        }
        let now_ms = (self.inner.clock)();
        let mut done = Recovered::default();
        // Every USSD key the last run left on a handset stays out of use for its MSISDN, taken
        // over or not: a late answer to a prompt ended here must not fit a new dialog.
        for record in &stale {
            if let (Some(key), Some(book)) = (
                record.ussd_key,
                self.inner
                    .operators
                    .iter()
                    .position(|o| o.name == record.operator)
                    .and_then(|i| self.inner.dialog_keys.get(i)),
            ) {
                book.reserve(&record.msisdn, key, Instant::now());
            }
        }
        for record in stale {
            if self.resume(&record, now_ms) {
                done.resumed += 1;
                continue;
            }
            let ending = Ending::new(TerminalStatus::Expired, "gateway_restarted");
            if self.inner.finish(&record.id, ending, None).await.is_ok() {
                done.ended += 1;
            }
        }
        if done.resumed + done.ended > 0 {
            tracing::warn!(
                resumed = done.resumed,
                ended = done.ended,
                "authorizations left in flight by the last run"
            );
        }
        Ok(done)
    }

    /// Takes `record` over if its prompt can still be answered; `false` otherwise.
    fn resume(&self, record: &AuthorizationRecord, now_ms: u64) -> bool {
        let inner = &self.inner;
        let Some(Resumable {
            plan,
            operator: op_index,
            stored,
        }) = inner.resumable(record, now_ms)
        else {
            return false;
        };
        let channel = plan.channel;
        let loa = plan.loa;
        let deadline = plan.deadline;
        let msisdn = match Msisdn::parse(&record.msisdn) {
            Ok(m) => m,
            Err(_) => return false,
        };
        let mut view = state::view_of(record);
        view.channel = Some(channel);
        let (tx, _) = watch::channel(view);
        let flight = Arc::new(Flight {
            prompt_ticket: Mutex::new(None),
            id: record.id.clone(),
            client_id: record.client_id.clone(),
            msisdn: record.msisdn.clone(),
            idempotency_key: record.idempotency_key.clone(),
            operator: op_index,
            loa,
            channel: stored,
            view: tx,
            cancel: inner.shutdown.child_token(),
            started: Instant::now(),
            deadline,
            ended_elsewhere: EndedElsewhere::default(),
        });
        {
            let mut live = lock(&inner.live);
            *live.per_msisdn.entry(flight.msisdn.clone()).or_insert(0) += 1;
            if let Some(key) = &flight.idempotency_key {
                live.by_key
                    .insert((flight.client_id.clone(), key.clone()), flight.id.clone());
            }
            live.by_id.insert(flight.id.clone(), flight.clone());
        }
        if let Some(om) = inner.operators[op_index].metrics.as_ref() {
            om.resumed(metric_channel(stored));
        }
        let span = tracing::info_span!(
            "authorization",
            id = %record.id,
            msisdn = %msisdn.masked(),
            channel = ?channel,
            resumed = true,
        );
        let task_inner = inner.clone();
        inner.tracker.spawn(
            async move {
                task_inner.run(flight, plan).await;
            }
            .instrument(span),
        );
        true
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

/// A node's lease is renewed this many times per lease period.
const RENEWALS_PER_LEASE: u32 = 3;

impl AuthorizationManager {
    /// With a store shared by several nodes: renews this node's lease, and takes over (or ends,
    /// when their time is up) the authorizations in flight of nodes whose lease ran out, while
    /// the manager lives. A no-op on a local store.
    pub fn follow_nodes(&self) {
        if self.inner.store.ended_hints().is_none() {
            return;
        }
        tokio::spawn(follow_nodes(Arc::downgrade(&self.inner)));
    }

    /// Takes over or ends what dead nodes left in flight; returns how many records it touched.
    pub async fn sweep_dead_nodes(&self) -> usize {
        let inner = &self.inner;
        let Ok(records) = inner.store.list_in_flight().await else {
            return 0;
        };
        let now_ms = (inner.clock)();
        let mut touched = 0;
        let mut leases = HashMap::new();
        for record in records {
            let mine = record.node.as_deref() == Some(inner.settings.node_id.as_str());
            if mine
                || lock(&inner.live).by_id.contains_key(&record.id)
                || inner.is_adopted(&record.id)
            {
                continue;
            }
            if !inner.takes_over(&record, &mut leases).await {
                continue;
            }
            touched += 1;
            if self.resume(&record, now_ms) {
                tracing::warn!(id = %record.id, node = ?record.node, "taken over from a dead node");
                continue;
            }
            let ending = Ending::new(TerminalStatus::Expired, "node_lost");
            let _ = inner.finish(&record.id, ending, None).await;
        }
        touched
    }
}

async fn follow_nodes(inner: std::sync::Weak<Inner>) {
    let Some(lease) = inner.upgrade().map(|i| i.settings.node_lease) else {
        return;
    };
    let every = (lease / RENEWALS_PER_LEASE).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u32 = 0;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if inner.shutdown.is_cancelled() {
            return;
        }
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        if let Err(e) = inner
            .store
            .renew_lease(&inner.settings.node_id, lease_ms)
            .await
        {
            tracing::warn!(error = %e, "node lease not renewed");
        }
        ticks = ticks.wrapping_add(1);
        if ticks % RENEWALS_PER_LEASE == 0 {
            AuthorizationManager { inner }.sweep_dead_nodes().await;
        }
    }
}

impl Inner {
    /// Whether this node may take `record` over: its own (or a record without a node, written
    /// before nodes were named), or one of a node whose lease ran out. Never a live node's.
    /// `leases` remembers each node's answer for one pass over the records (one request per
    /// node, not per record).
    pub(super) async fn takes_over(
        &self,
        record: &AuthorizationRecord,
        leases: &mut HashMap<String, bool>,
    ) -> bool {
        match record.node.as_deref() {
            None => true,
            Some(node) if node == self.settings.node_id => true,
            Some(node) => {
                if let Some(alive) = leases.get(node) {
                    return !alive;
                }
                match self.store.lease_alive(node).await {
                    Ok(alive) => {
                        leases.insert(node.to_owned(), alive);
                        !alive
                    }
                    // Unknown: leave it; the next sweep asks again.
                    Err(_) => false,
                }
            }
        }
    }
}

/// What taking over a record needs: its plan, its operator and the channel it started on.
pub(super) struct Resumable {
    pub(super) plan: Plan,
    pub(super) operator: usize,
    pub(super) stored: ChannelKind,
}

impl Inner {
    /// The plan that awaits `record`'s answer, if it can still come: time is left, the prompt
    /// is out (or going out), and the record holds what checking the answer needs (the USSD
    /// session key; the STK counter, transaction id and challenge, with the card's keys from
    /// the registry).
    pub(super) fn resumable(&self, record: &AuthorizationRecord, now_ms: u64) -> Option<Resumable> {
        // Bounded: a deadline is at most the API's longest expiry away; a wild one must not
        // overflow the clock.
        let left = Duration::from_millis(record.deadline_ms.saturating_sub(now_ms))
            .min(Duration::from_secs(24 * 3600));
        if left < LEAST_TIME_TO_RESUME
            || !matches!(record.state, AuthState::Routed | AuthState::Prompted)
        {
            return None;
        }
        let op_index = self
            .operators
            .iter()
            .position(|o| o.name == record.operator)?;
        let msisdn = Msisdn::parse(&record.msisdn).ok()?;
        let stored = state::from_store_channel(record.channel);
        // A USSD key on an STK record is a fallback prompt's: that is the one out.
        let channel = if record.ussd_key.is_some() {
            ChannelKind::Ussd
        } else {
            stored
        };
        let (keys, stk_nonce) = match channel {
            ChannelKind::Stk => {
                let keys = self
                    .subscribers
                    .get(&msisdn)
                    .and_then(|sub| sub.keys.clone());
                let nonce = match (
                    <[u8; 8]>::try_from(record.txid.as_slice()),
                    <[u8; 16]>::try_from(record.challenge.as_slice()),
                ) {
                    (Ok(txid), Ok(challenge)) => Some(StkNonce { txid, challenge }),
                    _ => None,
                };
                if keys.is_none() || nonce.is_none() || record.stk_counter.is_none() {
                    return None;
                }
                (keys, nonce)
            }
            ChannelKind::Ussd => {
                record.ussd_key?;
                (None, None)
            }
        };
        let plan = Plan {
            msisdn: record.msisdn.clone(),
            loa: state::from_store_loa(record.loa_requested),
            channel,
            keys,
            stk_counter: record.stk_counter,
            // A resumed push's counter was accepted by nobody yet or by the card: no raise.
            ota_key: None,
            stk_nonce,
            ussd_key: record.ussd_key,
            resumed_from: Some(record.state.clone()),
            via: (channel != stored).then_some(channel),
            // The prompt is on the handset already: its texts are not needed again.
            rp_name: String::new(),
            consent: String::new(),
            binding: String::new(),
            deadline: Instant::now() + left,
        };
        Some(Resumable {
            plan,
            operator: op_index,
            stored,
        })
    }
}
