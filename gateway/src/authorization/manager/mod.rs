//! [`AuthorizationManager`]: the [`AuthorizationService`] behind the north API.
//!
//! Data flow of a start: parse and route the MSISDN ([`Router`]), look the subscriber up
//! ([`SubscriberRegistry`]), pick the channel (SIM applet when the SIM has it, USSD otherwise),
//! apply the policy (LoA3 over USSD), then, under one lock, answer an idempotent retry of a
//! running authorization, or admit a new one (in-flight cap, one prompt per MSISDN). The
//! store then gets the idempotency claim and the record, already `routed`, in one durable
//! step (with the OTA counter of an STK push); a tracked task takes it on: `prompted`, the channel ([`ChannelPort`], the
//! operator's [`Authorizer`](crate::channel::Authorizer) in production), `answered` (steps not
//! fsynced by themselves), and the ending. Every step is a compare-and-set in the store, so the
//! first terminal state wins once: a cancel racing an answer, a shutdown racing a result, two
//! nodes racing, all end with exactly one status. The ending and the deliveries it owes
//! (callback, Keycloak, audit line) are one durable step; only after it committed does the
//! winner publish: to long-pollers (a `watch` per running authorization; the map holds only
//! running ones, so the admission cap bounds it) and metrics, and the [`Outbox`] delivers.
//! When the ending cannot be stored nobody hears of it: readers keep seeing pending, the
//! ending is retried until the deadline plus [`ManagerSettings::overrun`], and an
//! authorization still in flight after that is ended by the next start's recovery.
//!
//! Fallback: an STK push that never reached the handset (delivery error) is retried over USSD
//! when the policy allows it and the LoA can be reached there. A PIN-locked subscriber asking
//! for LoA3 over USSD ends `pin_blocked` at once, without a prompt.
//!
//! Restart: what checking an answer needs (the USSD session key from [`keys`], the STK
//! transaction id and challenge, the OTA counter) is chosen here and stored with the record
//! before the prompt goes out, so [`AuthorizationManager::recover`] takes over the
//! authorizations left in flight that still have time (the channel waits for their answers
//! without sending anything) and ends the others as `expired` / `gateway_restarted`.
//!
//! Shutdown: new starts are refused, running authorizations get a time to finish, then end
//! as `expired` / `gateway_shutdown`; callbacks get a bounded time to go out.
//!
//! The parts: `admission` (routing, policy, the caps, creating the record), `keys` (USSD
//! session keys), `carrying`
//! (the task that carries one authorization out), `publishing` (the one ending and who hears
//! of it), `recovery` (start-up and shutdown). This file holds the shared state and the
//! [`AuthorizationService`] the API calls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

mod admission;
mod carrying;
mod keys;
mod publishing;
mod recovery;
mod strays;

pub use recovery::Recovered;

use super::audit::AuditLog;
use super::outbox::{DeliveryReport, Outbox, OutboxObservers};
use super::pin::UnixClock;
use super::service::{
    AuthorizationService, AuthorizationState, AuthorizationView, ChannelKind, Loa, LookupError,
    PendingState, Readiness, StartError, StartRequest, TerminalStatus,
};
use super::state::{self, Ending};
use crate::callback::{CallbackClient, RetryPolicy};
use crate::channel::admission::Admission;
use crate::channel::router::{EndedElsewhere, StkNonce};
use crate::channel::{AuthChannel, AuthRequest, AuthResult};
use crate::metrics::authorization as m;
use crate::routing::{Msisdn, Router};
use crate::store::{
    AuthState, AuthorizationRecord, AuthorizationUpdate, Creation, Ended, LockState, LockoutPolicy,
    OtaCounterKey, OutboxPolicy, Store, StoreError,
};
use crate::subscribers::provision::CardKeys;
use crate::subscribers::SubscriberRegistry;
use tokio::sync::broadcast;

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
    /// Takes over an authorization whose prompt an earlier run sent (after a restart), from
    /// what the store kept; nothing is sent. A channel that cannot says so at once.
    fn resume(&self, _request: AuthRequest) -> BoxFuture<'static, AuthResult> {
        async { AuthResult::Unavailable }.boxed()
    }
    /// How many USSD session keys the operator's dialect has (keys are `0..range`).
    fn ussd_key_range(&self) -> u32 {
        0x100
    }
    /// Binds (bound, configured).
    fn binds_up(&self) -> (usize, usize);
    /// Whether a start that expires after `expiry` can be carried now, with
    /// `awaiting_prompts` admitted prompts of this operator not yet taken by the network (see
    /// [`crate::channel::admission`]). A channel that cannot tell admits.
    fn admit(&self, _awaiting_prompts: usize, _expiry: Duration) -> Admission {
        Admission::Admit {
            expected_wait: None,
        }
    }
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
    /// Delivery of callbacks: back-off and attempt timeout (outbox entries are retried until
    /// their deadline, so `max_attempts` does not bound them).
    pub callback_retry: RetryPolicy,
    /// Longest time spent delivering one callback.
    pub callback_window: Duration,
    /// This node's id in a store shared by several nodes (kept across restarts).
    pub node_id: String,
    /// How long a node's lease runs without renewal; it renews every third of it. A node whose
    /// lease ran out is dead: the others take over its authorizations in flight.
    pub node_lease: Duration,
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
            node_id: "local".into(),
            node_lease: Duration::from_secs(5),
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
    /// Where ended authorizations are audited (an outbox entry per ending when set).
    pub audit: Option<AuditLog>,
    pub clock: UnixClock,
    /// Metrics of the outbox and its callbacks.
    pub outbox_observers: Option<OutboxObservers>,
    /// The HTTP client of callbacks (its trust and scheme rule; the retry policy is
    /// `settings.callback_retry`).
    pub callbacks: CallbackClient,
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
    clock: UnixClock,
    outbox: Arc<Outbox>,
    /// USSD session keys per operator (index = operator).
    dialog_keys: Vec<keys::DialogKeys>,
    /// Admitted prompts not yet taken by the network, per operator (index = operator).
    awaiting_prompts: Vec<Arc<AtomicUsize>>,
    live: Mutex<Live>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    accepting: AtomicBool,
    /// Ids this node ended: wakes its long-polls of authorizations it does not run (an answer
    /// it took for another node's prompt), which the store's hints, from other nodes only,
    /// would not.
    ended_here: broadcast::Sender<String>,
    /// Ids taken over here for a stray answer and not settled yet: a sweep must not take them
    /// over a second time (the router refuses a second dialog with the same key or counter).
    adopted: Mutex<std::collections::HashSet<String>>,
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
    /// The channel it started on (its metrics stay there, fallback or not).
    channel: ChannelKind,
    view: watch::Sender<AuthorizationView>,
    cancel: CancellationToken,
    started: Instant,
    /// When the user's time runs out.
    deadline: Instant,
    /// Held while the prompt waits to be taken by the network; counts in admission.
    prompt_ticket: Mutex<Option<PromptTicket>>,
    /// Raised when another node ended it: the channel then forgets its dialog quietly.
    ended_elsewhere: EndedElsewhere,
}

impl Flight {
    /// The prompt has left the queue (taken by the network, or the attempt ended).
    fn prompt_left(&self) {
        drop(
            self.prompt_ticket
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
    }
}

/// One admitted prompt waiting for the network: counted (and shown on its gauge) while it
/// lives.
struct PromptTicket {
    counter: Arc<AtomicUsize>,
    gauge: Option<prometheus_client::metrics::gauge::Gauge>,
}

impl PromptTicket {
    fn new(
        counter: &Arc<AtomicUsize>,
        gauge: Option<prometheus_client::metrics::gauge::Gauge>,
    ) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(g) = &gauge {
            g.inc();
        }
        Self {
            counter: counter.clone(),
            gauge,
        }
    }
}

impl Drop for PromptTicket {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
        if let Some(g) = &self.gauge {
            g.dec();
        }
    }
}

/// What the task needs to carry one authorization out.
struct Plan {
    msisdn: String,
    loa: Loa,
    channel: ChannelKind,
    keys: Option<CardKeys>,
    /// The OTA counter reserved with the record (STK only).
    stk_counter: Option<u64>,
    /// The card's counter key (STK only), to raise the floor when the card reports our counter
    /// too low.
    ota_key: Option<OtaCounterKey>,
    /// The STK transaction id and challenge, stored with the record.
    stk_nonce: Option<StkNonce>,
    /// The USSD session key, stored with the record.
    ussd_key: Option<u16>,
    /// Taken over after a restart, in this state: the prompt is out, only its answer is awaited.
    resumed_from: Option<AuthState>,
    /// The channel it ended up on when that is not `channel`'s first one (a resumed fallback).
    via: Option<ChannelKind>,
    rp_name: String,
    consent: String,
    binding: String,
    deadline: Instant,
}

/// Endings of this node a slow long-poll may fall behind by (it then re-reads the store).
const ENDED_HERE_BACKLOG: usize = 1024;

/// How often a long-poll of an authorization running on another node re-reads the store when
/// no ending hint woke it: rarely when hints come (they are the normal wake-up; the re-read
/// covers a lost one and endings made by this node for another's prompt), often without.
const ELSEWHERE_REREAD_WITH_HINTS: Duration = Duration::from_secs(1);
const ELSEWHERE_REREAD: Duration = Duration::from_millis(200);

fn lock(live: &Mutex<Live>) -> MutexGuard<'_, Live> {
    // Every change to `Live` is a few map operations that cannot panic halfway.
    live.lock().unwrap_or_else(|p| p.into_inner())
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

impl AuthorizationManager {
    /// A manager over its dependencies. Call [`recover`](Self::recover) before serving.
    pub fn new(deps: ManagerDeps) -> Self {
        let callbacks = deps
            .callbacks
            .with_policy(deps.settings.callback_retry.clone());
        let outbox = Arc::new(Outbox::new(
            deps.store.clone(),
            callbacks,
            deps.audit,
            deps.clock.clone(),
            deps.outbox_observers,
        ));
        let dialog_keys = deps
            .operators
            .iter()
            .map(|o| keys::DialogKeys::new(o.channel.ussd_key_range()))
            .collect();
        let awaiting_prompts = deps
            .operators
            .iter()
            .map(|_| Arc::new(AtomicUsize::new(0)))
            .collect();
        let manager = Self {
            inner: Arc::new(Inner {
                dialog_keys,
                awaiting_prompts,
                store: deps.store,
                router: deps.router,
                subscribers: deps.subscribers,
                operators: deps.operators,
                settings: deps.settings,
                clock: deps.clock,
                outbox,
                live: Mutex::new(Live::default()),
                tracker: TaskTracker::new(),
                shutdown: CancellationToken::new(),
                accepting: AtomicBool::new(true),
                ended_here: broadcast::channel(ENDED_HERE_BACKLOG).0,
                adopted: Mutex::new(std::collections::HashSet::new()),
            }),
        };
        if let Some(hints) = manager.inner.store.ended_hints() {
            tokio::spawn(strays::follow_ending_hints(
                Arc::downgrade(&manager.inner),
                hints,
            ));
        }
        manager
    }

    /// The [`crate::channel::StrayAnswers`] of operator `operator` (its index): with a store
    /// shared by several nodes, an answer to another node's prompt is taken here.
    pub fn stray_answers(&self, operator: usize) -> Arc<dyn crate::channel::StrayAnswers> {
        Arc::new(strays::StrayAdopter {
            inner: Arc::downgrade(&self.inner),
            operator,
        })
    }

    /// Authorizations running now.
    pub fn in_flight(&self) -> usize {
        lock(&self.inner.live).by_id.len()
    }

    /// Reports of deliveries that left the outbox (callbacks, Keycloak, audit lines).
    pub fn deliveries(&self) -> broadcast::Receiver<DeliveryReport> {
        self.inner.outbox.subscribe()
    }

    /// Deliveries under way now.
    pub fn outbox_depth(&self) -> usize {
        self.inner.outbox.depth()
    }

    /// Long-polls an authorization another node runs: woken by the store's ending hint, and
    /// re-reading the record every [`ELSEWHERE_REREAD`] as the backstop, until it is terminal
    /// or `wait` is over.
    async fn wait_elsewhere(
        &self,
        client_id: &str,
        id: &str,
        mut view: AuthorizationView,
        wait: Duration,
    ) -> Result<AuthorizationView, LookupError> {
        let until = Instant::now() + wait;
        let mut hints = self.inner.store.ended_hints();
        let mut here = self.inner.ended_here.subscribe();
        loop {
            let now = Instant::now();
            if now >= until || state::is_terminal(&view) {
                return Ok(view);
            }
            let every = if hints.is_some() {
                ELSEWHERE_REREAD_WITH_HINTS
            } else {
                ELSEWHERE_REREAD
            };
            let pause = (until - now).min(every);
            let _ = tokio::time::timeout(pause, async {
                loop {
                    let ended = tokio::select! {
                        e = here.recv() => e,
                        e = async {
                            match hints.as_mut() {
                                Some(h) => h.recv().await,
                                None => std::future::pending().await,
                            }
                        } => e,
                    };
                    match ended {
                        Ok(ended) if ended == id => return,
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await
                        }
                    }
                }
            })
            .await;
            view = self
                .lookup(client_id, id)
                .await
                .map(|r| state::view_of(&r))?;
        }
    }

    async fn lookup(&self, client_id: &str, id: &str) -> Result<AuthorizationRecord, LookupError> {
        match self.inner.store.get_authorization(id).await {
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
            let view = self
                .lookup(&client_id, &id)
                .await
                .map(|r| state::view_of(&r))?;
            match wait {
                // Running on another node (a shared store): wait here for its ending.
                Some(wait) if !state::is_terminal(&view) => {
                    self.wait_elsewhere(&client_id, &id, view, wait).await
                }
                _ => Ok(view),
            }
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
        let store_ok = inner.store.failure().is_none();
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
