//! [`AuthorizationManager`]: the [`AuthorizationService`] behind the north API.
//!
//! Data flow of a start: parse and route the MSISDN ([`Router`]), look the subscriber up
//! ([`SubscriberRegistry`]), pick the channel (SIM applet when the SIM has it, USSD otherwise),
//! apply the policy (LoA3 over USSD), then, under one lock, answer an idempotent retry of a
//! running authorization, or admit a new one (in-flight cap, one prompt per MSISDN). The
//! store then gets the idempotency claim and the record (`created`, durable), then `routed`;
//! a tracked task takes it on: OTA counter, `prompted`, the channel ([`ChannelPort`], the
//! operator's [`Authorizer`](crate::channel::Authorizer) in production), `answered`, and the
//! ending. Every step is a compare-and-set in the store, so the first terminal state wins
//! once: a cancel racing an answer, a shutdown racing a result, two nodes racing, all end with
//! exactly one status. The winner publishes it: to long-pollers (a `watch` per running
//! authorization; the map holds only running ones, so the admission cap bounds it), to the
//! audit log, to the callback URL (bounded retries), to metrics.
//!
//! Fallback: an STK push that never reached the handset (delivery error) is retried over USSD
//! when the policy allows it and the LoA can be reached there. A PIN-locked subscriber asking
//! for LoA3 over USSD ends `pin_blocked` at once, without a prompt.
//!
//! Restart: the dialogs live in the channel driver's memory, so after a restart none can be
//! resumed (a USSD dialog is gone at the SMSC, and the card's answer cannot be matched without
//! the challenge). [`AuthorizationManager::recover`] therefore ends every in-flight record as
//! `expired` / `gateway_restarted`, whether or not its deadline passed.
//!
//! Shutdown: new starts are refused, running authorizations get a time to finish, then end
//! as `expired` / `gateway_shutdown`; callbacks get a bounded time to go out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::audit::AuditLog;
use super::pin::UnixClock;
use super::service::{
    AuthorizationService, AuthorizationState, AuthorizationView, ChannelKind, Loa, LookupError,
    PendingState, Readiness, StartError, StartRequest, TerminalStatus,
};
use super::state::{self, Ending};
use crate::callback::{CallbackClient, RetryPolicy};
use crate::channel::{AuthChannel, AuthRequest, AuthResult};
use crate::metrics::authorization as m;
use crate::routing::{Msisdn, Router};
use crate::store::{
    AuthState, AuthorizationRecord, AuthorizationUpdate, IdempotencyClaim, LockState,
    LockoutPolicy, OtaCounterAllocator, OtaCounterKey, Store, StoreError,
};
use crate::subscribers::provision::CardKeys;
use crate::subscribers::SubscriberRegistry;

/// One operator's channel, as the manager sees it (the operator's `Authorizer` in production,
/// a fake in tests).
pub trait ChannelPort: Send + Sync + 'static {
    /// Runs one authorization to its one result.
    fn authorize(&self, request: AuthRequest) -> BoxFuture<'static, AuthResult>;
    /// [`ChannelPort::authorize`], telling `accepted` when the network has taken the prompt.
    /// A channel that cannot tell says so at once.
    fn authorize_notifying(
        &self,
        request: AuthRequest,
        accepted: oneshot::Sender<()>,
    ) -> BoxFuture<'static, AuthResult> {
        let _ = accepted.send(());
        self.authorize(request)
    }
    /// Binds (bound, configured).
    fn binds_up(&self) -> (usize, usize);
}

/// One operator: its configured name, channel and metrics handles.
pub struct Operator {
    pub name: String,
    pub channel: Arc<dyn ChannelPort>,
    pub metrics: Option<m::OperatorMetrics>,
}

/// Settings of the manager.
#[derive(Debug, Clone)]
pub struct ManagerSettings {
    /// Most authorizations in flight; beyond: `Overloaded`.
    pub max_in_flight: usize,
    /// Most concurrent authorizations per MSISDN; beyond: `AlreadyInProgress`.
    pub per_msisdn: usize,
    /// `Retry-After` of refusals.
    pub retry_after: Duration,
    pub loa3_over_ussd: bool,
    pub fallback_stk_to_ussd: bool,
    /// USSD PIN lockout.
    pub lockout: LockoutPolicy,
    /// How long an idempotency key keeps pointing at its authorization.
    pub idempotency_ttl: Duration,
    /// Time past an authorization's expiry after which the manager ends it itself when the
    /// channel has not (so a stuck bind never leaves it in flight).
    pub overrun: Duration,
    /// Delivery of callbacks.
    pub callback_retry: RetryPolicy,
    /// Longest time spent delivering one callback.
    pub callback_window: Duration,
}

impl Default for ManagerSettings {
    fn default() -> Self {
        Self {
            max_in_flight: 10_000,
            per_msisdn: 1,
            retry_after: Duration::from_secs(1),
            loa3_over_ussd: false,
            fallback_stk_to_ussd: true,
            lockout: LockoutPolicy::default(),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            overrun: Duration::from_secs(60),
            callback_retry: RetryPolicy::default(),
            callback_window: Duration::from_secs(60),
        }
    }
}

/// What the manager is built from.
pub struct ManagerDeps {
    pub store: Arc<dyn Store>,
    pub router: Arc<Router>,
    pub subscribers: Arc<SubscriberRegistry>,
    /// Index = [`crate::routing::OperatorId`].
    pub operators: Vec<Operator>,
    pub settings: ManagerSettings,
    pub audit: Option<AuditLog>,
    pub clock: UnixClock,
}

/// The authorization manager; cheap to clone.
#[derive(Clone)]
pub struct AuthorizationManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AuthorizationManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizationManager")
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

struct Inner {
    store: Arc<dyn Store>,
    router: Arc<Router>,
    subscribers: Arc<SubscriberRegistry>,
    operators: Vec<Operator>,
    settings: ManagerSettings,
    audit: Option<AuditLog>,
    clock: UnixClock,
    counters: Arc<OtaCounterAllocator>,
    callbacks: CallbackClient,
    live: Mutex<Live>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    accepting: AtomicBool,
}

/// Running authorizations (bounded by the admission cap).
#[derive(Default)]
struct Live {
    by_id: HashMap<String, Arc<Flight>>,
    per_msisdn: HashMap<String, usize>,
    by_key: HashMap<(String, String), String>,
}

/// One running authorization.
struct Flight {
    id: String,
    client_id: String,
    msisdn: String,
    idempotency_key: Option<String>,
    operator: usize,
    loa: Loa,
    view: watch::Sender<AuthorizationView>,
    cancel: CancellationToken,
    started: Instant,
}

/// What the task needs to carry one authorization out.
struct Plan {
    msisdn: String,
    loa: Loa,
    channel: ChannelKind,
    keys: Option<CardKeys>,
    counter_key: OtaCounterKey,
    rp_name: String,
    consent: String,
    binding: String,
    deadline: Instant,
}

fn lock(live: &Mutex<Live>) -> MutexGuard<'_, Live> {
    // Every change to `Live` is a few map operations that cannot panic halfway.
    live.lock().unwrap_or_else(|p| p.into_inner())
}

fn internal(e: impl std::fmt::Display) -> StartError {
    StartError::Internal(e.to_string())
}

/// Seconds the user is given, rounded up so a request with the API's minimum expiry is not cut
/// below it by the milliseconds already spent; for the applet, inside the range its protocol
/// accepts (the gateway's own deadline still ends the authorization on time).
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

/// The ending when a step could not be stored: usually the authorization ended meanwhile (then
/// this ending loses the compare-and-set and is never seen), else the store failed.
fn interrupted() -> Ending {
    Ending::new(TerminalStatus::Rejected, "store_unavailable")
}

fn new_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

fn metric_channel(c: ChannelKind) -> m::Channel {
    match c {
        ChannelKind::Ussd => m::Channel::Ussd,
        ChannelKind::Stk => m::Channel::Stk,
    }
}

fn metric_loa(l: Loa) -> m::Loa {
    match l {
        Loa::Loa2 => m::Loa::Loa2,
        Loa::Loa3 => m::Loa::Loa3,
    }
}

fn metric_outcome(s: TerminalStatus) -> m::Outcome {
    use TerminalStatus as S;
    match s {
        S::Approved => m::Outcome::Approved,
        S::Denied => m::Outcome::Denied,
        S::Expired => m::Outcome::Expired,
        S::PinBlocked => m::Outcome::PinBlocked,
        S::NotReachable | S::DeliveryError => m::Outcome::DeliveryError,
        S::SimError => m::Outcome::SimError,
        S::Rejected => m::Outcome::Invalid,
        S::Cancelled => m::Outcome::Cancelled,
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

/// Runs a store call off the async workers (durable writes wait for an fsync).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StoreError::Backend(format!("store task failed: {e}"))))
}

enum Admitted {
    /// A running authorization with the same idempotency key.
    Running(AuthorizationView),
    New(Arc<Flight>),
}

enum Created {
    /// The idempotency key points at an existing authorization.
    Existing(AuthorizationView),
    /// Created and routed.
    Routed(AuthorizationRecord),
    /// Created, and ends at once without a prompt.
    EndsNow(AuthorizationRecord, Ending),
}

impl AuthorizationManager {
    /// A manager over its dependencies. Call [`recover`](Self::recover) before serving.
    pub fn new(deps: ManagerDeps) -> Self {
        let counters = Arc::new(OtaCounterAllocator::with_defaults(deps.store.clone()));
        let callbacks = CallbackClient::new(deps.settings.callback_retry.clone());
        Self {
            inner: Arc::new(Inner {
                store: deps.store,
                router: deps.router,
                subscribers: deps.subscribers,
                operators: deps.operators,
                settings: deps.settings,
                audit: deps.audit,
                clock: deps.clock,
                counters,
                callbacks,
                live: Mutex::new(Live::default()),
                tracker: TaskTracker::new(),
                shutdown: CancellationToken::new(),
                accepting: AtomicBool::new(true),
            }),
        }
    }

    /// Authorizations running now.
    pub fn in_flight(&self) -> usize {
        lock(&self.inner.live).by_id.len()
    }

    /// Ends every authorization the store holds in flight (left by an earlier run) as
    /// `expired` / `gateway_restarted`. Returns how many.
    pub async fn recover(&self) -> Result<usize, StoreError> {
        let store = self.inner.store.clone();
        let stale = blocking(move || store.list_in_flight()).await?;
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
                tracing::warn!("callbacks still running at shutdown");
            }
        }
        // Cancelled tasks end their flights; a flight whose task vanished still ends here.
        let left: Vec<String> = lock(&inner.live).by_id.keys().cloned().collect();
        for id in left {
            let ending = Ending::new(TerminalStatus::Expired, "gateway_shutdown");
            let _ = inner.finish(&id, ending, None).await;
        }
    }

    /// Starts, or finds the authorization an idempotency key already names; the flag says
    /// which (the API answers 200 for an existing one, 201 for a new one).
    async fn start_inner(
        &self,
        req: StartRequest,
    ) -> Result<(AuthorizationView, bool), StartError> {
        let inner = &self.inner;
        let retry_after = inner.settings.retry_after;
        if !inner.accepting.load(Ordering::SeqCst) {
            return Err(StartError::Overloaded { retry_after });
        }
        let msisdn = Msisdn::parse(&req.msisdn).map_err(|e| StartError::Invalid(e.to_string()))?;
        if req.expiry.is_zero() {
            return Err(StartError::Invalid("expiry must be above zero".into()));
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
        let record = AuthorizationRecord {
            id: id.clone(),
            client_id: req.client_id.clone(),
            msisdn: msisdn.as_str().to_owned(),
            operator: operator.name.clone(),
            channel: state::to_store_channel(channel),
            loa_requested: state::to_store_loa(req.loa),
            loa_achieved: None,
            state: AuthState::Created,
            created_ms: now_ms,
            deadline_ms: now_ms.saturating_add(expiry_ms),
            updated_ms: now_ms,
            stk_counter: None,
            challenge: Vec::new(),
            proof: None,
            callback_url: req.callback_url.clone(),
            idempotency_key: req.idempotency_key.clone(),
            prompted_ms: None,
        };
        let created = {
            let store = inner.store.clone();
            let ttl_ms = u64::try_from(inner.settings.idempotency_ttl.as_millis()).unwrap_or(0);
            let check_lock = channel == ChannelKind::Ussd && req.loa == Loa::Loa3;
            let client = req.client_id.clone();
            let key = req.idempotency_key.clone();
            blocking(move || {
                if let Some(key) = &key {
                    if let IdempotencyClaim::Existing(other) =
                        store.claim_idempotency_key(&client, key, &record.id, now_ms, ttl_ms)?
                    {
                        return Ok(match store.get_authorization(&other)? {
                            Some(r) if r.client_id == client => {
                                Created::Existing(state::view_of(&r))
                            }
                            // Being created by a concurrent request, or a crash came between
                            // the claim and the record: retry later.
                            _ => {
                                return Err(StoreError::NotFound {
                                    table: "authorizations",
                                    key: String::new(),
                                })
                            }
                        });
                    }
                }
                let locked = check_lock
                    && !matches!(
                        store.lock_state(&record.msisdn, now_ms)?,
                        LockState::Open { .. }
                    );
                store.put_authorization(&record)?;
                let routed = store.update_authorization_state(
                    &record.id,
                    &AuthState::Created,
                    &AuthorizationUpdate::to(AuthState::Routed, now_ms),
                )?;
                Ok(if locked {
                    Created::EndsNow(
                        routed,
                        Ending::new(TerminalStatus::PinBlocked, "ussd_pin_locked"),
                    )
                } else {
                    Created::Routed(routed)
                })
            })
            .await
        };
        let record = match created {
            Ok(Created::Existing(view)) => {
                inner.release(&flight);
                return Ok((view, true));
            }
            Ok(Created::Routed(r)) => r,
            Ok(Created::EndsNow(r, ending)) => {
                self.metered_start(&flight, channel);
                inner.set_view(&flight, state::view_of(&r));
                return inner
                    .finish(&id, ending, None)
                    .await
                    .map(|view| (view, false))
                    .map_err(|e| StartError::Internal(e.to_string()));
            }
            Err(StoreError::NotFound { .. }) => {
                inner.release(&flight);
                return Err(StartError::Overloaded { retry_after });
            }
            Err(e) => {
                inner.release(&flight);
                tracing::error!(error = %e, "store refused a new authorization");
                return Err(internal("store unavailable"));
            }
        };
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
            counter_key: OtaCounterKey::new(msisdn.as_str(), sub.tar, sub.kic >> 4),
            rp_name: req.client_name,
            consent: req.consent_text,
            binding: req.binding_message.unwrap_or_default(),
            deadline: Instant::now() + req.expiry,
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

    fn metered_start(&self, flight: &Flight, channel: ChannelKind) {
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
    fn admit(
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
        let id = view.id.clone();
        let (tx, _) = watch::channel(view);
        let flight = Arc::new(Flight {
            id,
            client_id: req.client_id.clone(),
            msisdn: msisdn.as_str().to_owned(),
            idempotency_key: req.idempotency_key.clone(),
            operator,
            loa: req.loa,
            view: tx,
            cancel: self.inner.shutdown.child_token(),
            started: Instant::now(),
        });
        live.per_msisdn.insert(flight.msisdn.clone(), same + 1);
        if let Some(key) = &flight.idempotency_key {
            live.by_key
                .insert((flight.client_id.clone(), key.clone()), flight.id.clone());
        }
        live.by_id.insert(flight.id.clone(), flight.clone());
        Ok(Admitted::New(flight))
    }

    async fn lookup(&self, client_id: &str, id: &str) -> Result<AuthorizationRecord, LookupError> {
        let store = self.inner.store.clone();
        let owned = id.to_owned();
        match blocking(move || store.get_authorization(&owned)).await {
            Ok(Some(r)) if r.client_id == client_id => Ok(r),
            Ok(_) => Err(LookupError::NotFound),
            // An id that is no valid key cannot exist.
            Err(StoreError::InvalidKey { .. }) => Err(LookupError::NotFound),
            Err(e) => Err(LookupError::Internal(e.to_string())),
        }
    }

    fn running(&self, client_id: &str, id: &str) -> Option<Arc<Flight>> {
        lock(&self.inner.live)
            .by_id
            .get(id)
            .filter(|f| f.client_id == client_id)
            .cloned()
    }
}

impl Inner {
    fn set_view(&self, flight: &Flight, view: AuthorizationView) {
        flight.view.send_replace(view);
    }

    fn set_step(&self, flight: &Flight, step: PendingState) {
        flight.view.send_modify(|v| {
            if !state::is_terminal(v) {
                v.state = AuthorizationState::Pending { step };
            }
        });
    }

    /// Forgets a running authorization (after its end, or when its creation failed).
    fn release(&self, flight: &Flight) {
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

    /// A non-terminal step by compare-and-set. `false`: the authorization ended meanwhile
    /// (cancel, shutdown), and the caller stops.
    /// Records the step to `prompted` once per authorization; `false` when it ended meanwhile
    /// (cancelled, shut down), so the caller stops.
    async fn mark_prompted(
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

    async fn step(
        &self,
        flight: &Flight,
        from: AuthState,
        to: AuthState,
        counter: Option<u64>,
    ) -> bool {
        let store = self.store.clone();
        let id = flight.id.clone();
        let now = (self.clock)();
        let step = state::pending_step(&to);
        let result = blocking(move || {
            let mut update = AuthorizationUpdate::to(to, now);
            if let Some(c) = counter {
                update = update.with_stk_counter(c);
            }
            store.update_authorization_state(&id, &from, &update)
        })
        .await;
        match result {
            Ok(_) => {
                if let Some(step) = step {
                    self.set_step(flight, step);
                }
                true
            }
            Err(StoreError::Conflict { actual, .. }) if actual.is_terminal() => false,
            Err(e) => {
                // The store is the record of truth; without it the step cannot be kept, and
                // the authorization ends rather than carrying on unrecorded.
                tracing::error!(error = %e, "authorization step not stored");
                false
            }
        }
    }

    /// The task of one authorization: carry it out, end it once.
    async fn run(self: Arc<Self>, flight: Arc<Flight>, plan: Plan) {
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
        // Loses harmlessly when the authorization already ended.
        if self.finish(&flight.id, ending, via).await.is_err() {
            // The store failed; `finish` has published the ending anyway.
        }
    }

    async fn carry_out(&self, flight: &Flight, plan: &Plan) -> (Ending, Option<ChannelKind>) {
        let mut channel = plan.channel;
        let mut via = None;
        let mut prompted = false;
        let Some(operator) = self.operators.get(flight.operator) else {
            return (Ending::new(TerminalStatus::Rejected, "no_operator"), None);
        };
        loop {
            let auth_channel = match (channel, &plan.keys) {
                (ChannelKind::Stk, Some(keys)) => {
                    let Some(secrets) = card_secrets(keys) else {
                        return (Ending::new(TerminalStatus::SimError, "card_keys"), via);
                    };
                    let counters_key = plan.counter_key.clone();
                    let counters = self.counters.clone();
                    let counter = match blocking(move || counters.next(&counters_key)).await {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::error!(error = %e, "no OTA counter");
                            return (
                                Ending::new(TerminalStatus::SimError, "ota_counter_unavailable"),
                                via,
                            );
                        }
                    };
                    AuthChannel::Stk { secrets, counter }
                }
                _ => AuthChannel::Ussd,
            };
            let counter = match &auth_channel {
                AuthChannel::Stk { counter, .. } => Some(*counter),
                AuthChannel::Ussd => None,
            };
            let remaining = plan.deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return (Ending::new(TerminalStatus::Expired, "no_response"), via);
            }
            let request = AuthRequest {
                msisdn: plan.msisdn.clone(),
                loa: state::to_applet_loa(plan.loa),
                channel: auth_channel,
                rp_name: plan.rp_name.clone(),
                consent: plan.consent.clone(),
                binding_code: plan.binding.clone(),
                expiry_secs: user_expiry_secs(remaining, channel),
            };
            if let Some(om) = &operator.metrics {
                om.prompt_sent(metric_channel(channel));
            }
            // `prompted` is recorded when the SMSC takes the prompt, not when it is queued: a
            // throttled bind must not make the view claim the handset has it.
            let (accepted_tx, accepted_rx) = oneshot::channel();
            let mut accepted_rx = Some(accepted_rx);
            let work = operator.channel.authorize_notifying(request, accepted_tx);
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
                        if taken.is_ok()
                            && !self.mark_prompted(flight, counter, &mut prompted).await
                        {
                            return (interrupted(), via);
                        }
                    }
                }
            };
            // The result can overtake the acceptance notice; an answer from the user also
            // proves the prompt arrived.
            let taken = accepted_rx.as_mut().is_some_and(|rx| rx.try_recv().is_ok());
            if (taken || state::user_answered(&result))
                && !self.mark_prompted(flight, counter, &mut prompted).await
            {
                return (interrupted(), via);
            }
            let can_fall_back = channel == ChannelKind::Stk
                && self.settings.fallback_stk_to_ussd
                && (plan.loa == Loa::Loa2 || self.settings.loa3_over_ussd)
                && state::is_delivery_failure(&result);
            if can_fall_back {
                tracing::info!(id = %flight.id, "STK push not delivered, falling back to USSD");
                channel = ChannelKind::Ussd;
                via = Some(ChannelKind::Ussd);
                flight
                    .view
                    .send_modify(|v| v.channel = Some(ChannelKind::Ussd));
                if plan.loa == Loa::Loa3 && self.is_locked(&plan.msisdn).await {
                    return (
                        Ending::new(TerminalStatus::PinBlocked, "ussd_pin_locked"),
                        via,
                    );
                }
                continue;
            }
            if state::user_answered(&result)
                && !self
                    .step(flight, AuthState::Prompted, AuthState::Answered, None)
                    .await
            {
                return (
                    Ending::new(TerminalStatus::Cancelled, "client_cancelled"),
                    via,
                );
            }
            let locked_now =
                matches!(result, AuthResult::WrongPin) && self.is_locked(&plan.msisdn).await;
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

    async fn is_locked(&self, msisdn: &str) -> bool {
        let store = self.store.clone();
        let now = (self.clock)();
        let m = msisdn.to_owned();
        !matches!(
            blocking(move || store.lock_state(&m, now)).await,
            Ok(LockState::Open { .. })
        )
    }

    /// Ends `id` with `ending` unless it already ended: the compare-and-set decides, once.
    /// The winner publishes. Returns the terminal view (the winner's or the earlier one).
    async fn finish(
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
    fn publish(&self, record: &AuthorizationRecord) -> AuthorizationView {
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

    fn send_callback(&self, url: String, view: &AuthorizationView) {
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

impl AuthorizationService for AuthorizationManager {
    fn start(&self, req: StartRequest) -> BoxFuture<'_, Result<AuthorizationView, StartError>> {
        async move { self.start_inner(req).await.map(|(view, _)| view) }.boxed()
    }

    fn start_reporting(
        &self,
        req: StartRequest,
    ) -> BoxFuture<'_, Result<(AuthorizationView, Option<bool>), StartError>> {
        async move {
            self.start_inner(req)
                .await
                .map(|(view, existing)| (view, Some(existing)))
        }
        .boxed()
    }

    fn get(
        &self,
        client_id: &str,
        id: &str,
        wait: Option<Duration>,
    ) -> BoxFuture<'_, Result<AuthorizationView, LookupError>> {
        let client_id = client_id.to_owned();
        let id = id.to_owned();
        async move {
            if let Some(flight) = self.running(&client_id, &id) {
                let mut rx = flight.view.subscribe();
                if let Some(wait) = wait {
                    // The sender lives as long as `flight`, which we hold.
                    let _ = tokio::time::timeout(wait, rx.wait_for(state::is_terminal)).await;
                }
                let view = rx.borrow().clone();
                return Ok(view);
            }
            self.lookup(&client_id, &id)
                .await
                .map(|r| state::view_of(&r))
        }
        .boxed()
    }

    fn cancel(
        &self,
        client_id: &str,
        id: &str,
    ) -> BoxFuture<'_, Result<AuthorizationView, LookupError>> {
        let client_id = client_id.to_owned();
        let id = id.to_owned();
        async move {
            let record = self.lookup(&client_id, &id).await?;
            if record.state.is_terminal() {
                return Ok(state::view_of(&record));
            }
            let flight = self.running(&client_id, &id);
            let via = flight
                .as_ref()
                .and_then(|f| f.view.borrow().channel)
                .filter(|c| *c != state::from_store_channel(record.channel));
            let ending = Ending::new(TerminalStatus::Cancelled, "client_cancelled");
            let view = self.inner.finish(&id, ending, via).await;
            if let Some(f) = flight {
                // Stops the channel work; the handset's prompt times out by itself.
                f.cancel.cancel();
            }
            view
        }
        .boxed()
    }

    fn readiness(&self) -> Readiness {
        let inner = &self.inner;
        let store_ok = inner.store.lock_state("0", 0).is_ok();
        let binds_up: Vec<(String, usize, usize)> = inner
            .operators
            .iter()
            .map(|o| {
                let (up, configured) = o.channel.binds_up();
                (o.name.clone(), up, configured)
            })
            .collect();
        let ready = store_ok
            && inner.accepting.load(Ordering::SeqCst)
            && binds_up.iter().all(|(_, up, _)| *up > 0);
        Readiness {
            ready,
            binds_up,
            store_ok,
        }
    }
}
