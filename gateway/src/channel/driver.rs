//! The tokio shell around one operator's [`Router`]: tasks, channels and permits.
//!
//! [`Authorizer::start`] spawns the operator's binds and one driver task. [`Authorizer::authorize`]
//! takes a slot of a `Semaphore` (the limit on authorizations in flight, which also bounds the
//! router's maps: the permit is held until the router releases the authorization), hands the
//! request to the task over a bounded channel and waits for its one result. The task owns the
//! sans-IO [`Router`] and does what it asks: each [`RouterOutput::Submit`] goes to the least
//! loaded bind (one spawned, tracked task per batch, so a full bind queue never blocks the loop
//! that drains the binds' events), results and "prompt accepted" go to the waiting callers, a
//! PIN typed over USSD goes to the [`PinVerifier`]. Bind events and the router's deadlines go
//! back into the router.
//!
//! A caller that stops waiting (the relying party cancelled, or the gateway's own deadline
//! passed) is noticed when its future is dropped: the driver ends the authorization early
//! ([`Router::end_early`]: the USSD dialog is released, nothing after it counts).
//!
//! Definite endings: the router gives every authorization exactly one result; each submission
//! carries a deadline, so a bind that stays down fails it; a stopped driver ends every caller
//! with [`AuthResult::Unavailable`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use super::admission::{self, Admission, AdmissionPolicy, OperatorLoad};
pub use super::router::{AuthChannel, AuthRequest, AuthResult};
use super::router::{
    AuthId, EndedElsewhere, IgnoredAnswers, Router, RouterConfig, RouterOutput, StkNonce,
    StrayAnswer,
};
use crate::smpp::bind::{self, BindConfig, BindEvent, BindHandle, MoAck};
use crate::smpp::session::{SubmitFailure, SubmitId, SubmitRequest};
use prometheus_client::metrics::counter::Counter;
use sim_applet_model::smpp::dialect::Dialect;

/// Checks a PIN typed over USSD (LoA3). The gateway's verifier store, with its lockout, lives
/// behind this. The driver runs each check in its own task (it waits for a durable write), so
/// no other answer of the operator waits behind it; the verdict comes back as an event.
#[async_trait::async_trait]
pub trait PinVerifier: Send + Sync + 'static {
    /// Whether `pin` is right for `msisdn` (and counts the attempt).
    async fn verify(&self, msisdn: &str, pin: &str) -> bool;
}

/// Takes over, for an answer this node's router matched to nothing, the authorizations of a
/// shared store it may belong to (prompted by another node): each comes back as the request
/// [`Router::resume`] needs and the sender of its one result. The answer is then handed to the
/// router again. `Err` when the store could not be asked: the answer is then refused with a
/// temporary error, for the SMSC to deliver again.
pub trait StrayAnswers: Send + Sync + 'static {
    fn adopt<'a>(
        &'a self,
        answer: &'a StrayAnswer,
    ) -> futures_util::future::BoxFuture<'a, Result<Vec<Adoption>, String>>;
}

/// One authorization taken over for a stray answer.
pub struct Adoption {
    pub request: AuthRequest,
    pub reply: oneshot::Sender<AuthResult>,
    /// Whether the ending the answer decided is stored (`true` also when it decided none);
    /// the answer's `deliver_sm` is acknowledged after it. Dropped unsent: nothing to store.
    pub settled: oneshot::Receiver<bool>,
}

/// A stray answer with the `deliver_sm_resp` it is owed (when its bind defers them).
type StrayWithAck = (StrayAnswer, Option<MoAck>);

/// Longest wait for the endings a stray answer decided before its `deliver_sm` is acknowledged
/// anyway (they are then in memory and being stored; an SMSC's own timeout is longer).
const SETTLE_BEFORE_ACK: Duration = Duration::from_secs(5);

/// Where the [`StrayAnswers`] handler goes once it exists (the manager is built after the
/// authorizers it drives).
#[derive(Clone, Default)]
pub struct StraySlot(pub Arc<std::sync::OnceLock<Arc<dyn StrayAnswers>>>);

impl std::fmt::Debug for StraySlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StraySlot")
            .field("set", &self.0.get().is_some())
            .finish()
    }
}

/// Ids of adopted authorizations start here, apart from the callers' own.
const ADOPTED_IDS: AuthId = 1 << 62;

/// Settings of an [`Authorizer`].
#[derive(Debug, Clone)]
pub struct AuthorizerConfig {
    /// The binds to the operator's SMSC (at least one).
    pub binds: Vec<BindConfig>,
    /// The operator's USSD flavour.
    pub dialect: Dialect,
    /// Source address of USSD pushes.
    pub service_code: String,
    /// Source address of SMS-PP pushes, digits: the card answers to it.
    pub ota_originator: String,
    /// Most authorizations in flight; more callers wait for a slot.
    pub max_in_flight: usize,
    /// A submission still unsent this long after it was queued fails for good.
    pub submit_timeout: Duration,
    /// Wait for a PoR beyond the request's expiry.
    pub stk_grace: Duration,
    /// Most incomplete concatenated PoRs held.
    pub max_pending_por: usize,
    /// When a start is admitted, and how late a prompt may still leave.
    pub admission: AdmissionPolicy,
    /// Counters of ignored answers (USSD, STK), when measured.
    pub ignored_answers: Option<(Counter, Counter)>,
    /// With a store shared by several nodes: who takes over the authorizations an unmatched
    /// answer may belong to. `None`: unmatched answers are ignored.
    pub strays: Option<StraySlot>,
    /// Answers applied to authorizations another node prompted, when measured.
    pub cross_node_answers: Option<Counter>,
}

impl AuthorizerConfig {
    /// Defaults around `binds`: spec dialect, USSD from `*123#`, SMS-PP from 4860000, 1000 in
    /// flight, 10 s to submit, 15 s grace.
    pub fn new(binds: Vec<BindConfig>) -> Self {
        Self {
            binds,
            dialect: Dialect::spec_default(),
            service_code: "*123#".into(),
            ota_originator: "4860000".into(),
            max_in_flight: 1000,
            submit_timeout: Duration::from_secs(10),
            stk_grace: Duration::from_secs(15),
            max_pending_por: 1024,
            admission: AdmissionPolicy::default(),
            ignored_answers: None,
            strays: None,
            cross_node_answers: None,
        }
    }
}

enum Command {
    Start {
        auth: AuthId,
        request: Box<AuthRequest>,
        permit: OwnedSemaphorePermit,
        reply: oneshot::Sender<AuthResult>,
        accepted: Option<oneshot::Sender<()>>,
    },
    /// Take over an authorization whose prompt an earlier run sent.
    Resume {
        auth: AuthId,
        request: Box<AuthRequest>,
        permit: OwnedSemaphorePermit,
        reply: oneshot::Sender<AuthResult>,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
    /// The caller stopped waiting (cancelled, or its own deadline passed): end the dialog;
    /// `quietly` when another node ended it (no release screen from here).
    EndEarly {
        auth: AuthId,
        quietly: bool,
    },
}

/// Tells the driver when a caller stops waiting before its authorization's result: dropped
/// armed (the caller's future was dropped), it sends [`Command::EndEarly`].
struct EndEarlyOnDrop {
    commands: mpsc::Sender<Command>,
    auth: AuthId,
    armed: bool,
    ended_elsewhere: Option<EndedElsewhere>,
}

impl Drop for EndEarlyOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let end = Command::EndEarly {
            auth: self.auth,
            quietly: self
                .ended_elsewhere
                .as_ref()
                .is_some_and(EndedElsewhere::is_raised),
        };
        if let Err(mpsc::error::TrySendError::Full(end)) = self.commands.try_send(end) {
            // The driver is busy: deliver it without holding the dropping caller up.
            let commands = self.commands.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = commands.send(end).await;
                });
            }
        }
    }
}

/// The caller's side of the channel driver. Cheap to clone.
#[derive(Clone)]
pub struct Authorizer {
    commands: mpsc::Sender<Command>,
    slots: Arc<Semaphore>,
    /// Ids of the authorizations handed to the driver (its callers name them when they stop
    /// waiting).
    next_auth: Arc<AtomicU64>,
    /// The binds' handles, for their load.
    binds: Arc<[BindHandle]>,
    /// What the binds' queues hold together.
    queue_room: usize,
    admission: AdmissionPolicy,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("free_slots", &self.slots.available_permits())
            .finish()
    }
}

impl Authorizer {
    /// Spawns the binds and the driver task. `pin_verifier` checks PINs typed over USSD; without
    /// one, USSD LoA3 requests are [`AuthResult::Invalid`].
    pub fn start(
        config: AuthorizerConfig,
        pin_verifier: Option<Arc<dyn PinVerifier>>,
    ) -> (Self, JoinHandle<()>) {
        let (events_tx, events_rx) = mpsc::channel(1024);
        let (verdicts_tx, verdicts_rx) = mpsc::unbounded_channel();
        let (adoptions_tx, adoptions_rx) = mpsc::unbounded_channel();
        let mut binds = Vec::with_capacity(config.binds.len());
        let mut bind_tasks = Vec::with_capacity(config.binds.len());
        for b in &config.binds {
            let (handle, join) = bind::spawn(b.clone(), events_tx.clone());
            binds.push(handle);
            bind_tasks.push(join);
        }
        let (commands, commands_rx) = mpsc::channel(config.max_in_flight.clamp(1, 1024));
        let slots = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
        let shared_binds: Arc<[BindHandle]> = binds.clone().into();
        let queue_room = config.binds.iter().map(|b| b.session.max_queued).sum();
        let admission = config.admission;
        let driver = Driver::new(
            config,
            binds,
            bind_tasks,
            events_tx,
            pin_verifier,
            Feedback {
                verdicts: verdicts_tx,
                adoptions: adoptions_tx,
            },
            slots.clone(),
        );
        let join = tokio::spawn(driver.run(commands_rx, events_rx, verdicts_rx, adoptions_rx));
        (
            Self {
                commands,
                slots,
                next_auth: Arc::new(AtomicU64::new(0)),
                binds: shared_binds,
                queue_room,
                admission,
            },
            join,
        )
    }

    /// What the operator's binds carry now and what waits for them.
    pub fn load(&self) -> OperatorLoad {
        let mut waiting_submits = 0;
        let (mut known, mut unknown) = (0.0, false);
        for bind in self.binds.iter() {
            let load = bind.load();
            waiting_submits += load.waiting;
            match load.capacity {
                Some(c) => known += c,
                None => unknown = true,
            }
        }
        OperatorLoad {
            waiting_submits,
            // A bind not measured yet adds nothing; only when no bind is measured is the whole
            // unknown.
            capacity: if known == 0.0 && unknown {
                None
            } else {
                Some(known)
            },
            queue_room: self.queue_room,
        }
    }

    /// Whether a start that expires after `expiry` may be admitted now, with
    /// `awaiting_prompts` admitted prompts not yet accepted by the SMSC (see
    /// [`super::admission`]).
    pub fn admit(&self, awaiting_prompts: usize, expiry: Duration) -> Admission {
        admission::judge(&self.admission, &self.load(), awaiting_prompts, expiry)
    }

    /// Runs one authorization to its end. Waits for a slot first when the limit is reached.
    pub async fn authorize(&self, request: AuthRequest) -> AuthResult {
        self.authorize_notifying(request, None).await
    }

    /// [`Authorizer::authorize`], and `accepted` fires when the SMSC has accepted the prompt
    /// (the first `submit_sm` of it answered OK): from then on the prompt is the network's, and
    /// the session may say `prompted`. Dropped unfired when the prompt never went out.
    pub async fn authorize_notifying(
        &self,
        request: AuthRequest,
        accepted: Option<oneshot::Sender<()>>,
    ) -> AuthResult {
        // Boxed before the first wait: the future lives as long as the authorization, and a
        // request held by value would sit in it all that time.
        let request = Box::new(request);
        let Ok(permit) = self.slots.clone().acquire_owned().await else {
            return AuthResult::Unavailable;
        };
        let auth = self.next_auth.fetch_add(1, Ordering::Relaxed) + 1;
        let (reply, result) = oneshot::channel();
        let ended = request.ended_elsewhere.clone();
        let start = Command::Start {
            auth,
            request,
            permit,
            reply,
            accepted,
        };
        self.hand_over(auth, start, result, ended).await
    }

    /// Sends `command` (which carries `auth`) and waits for its result; a caller that stops
    /// waiting meanwhile (its future dropped) makes the driver end the authorization early.
    async fn hand_over(
        &self,
        auth: AuthId,
        command: Command,
        result: oneshot::Receiver<AuthResult>,
        ended_elsewhere: Option<EndedElsewhere>,
    ) -> AuthResult {
        if self.commands.send(command).await.is_err() {
            return AuthResult::Unavailable;
        }
        let mut guard = EndEarlyOnDrop {
            commands: self.commands.clone(),
            auth,
            armed: true,
            ended_elsewhere,
        };
        let result = result.await.unwrap_or(AuthResult::Unavailable);
        guard.armed = false;
        result
    }

    /// Takes over an authorization whose prompt an earlier run of the gateway sent (after a
    /// restart): `request` carries what the store kept (USSD session key; STK counter,
    /// transaction id and challenge). Nothing is sent; the answer that arrives in time ends it
    /// as [`Authorizer::authorize`] would.
    pub async fn resume(&self, request: AuthRequest) -> AuthResult {
        // Boxed before the first wait: the future lives as long as the authorization, and a
        // request held by value would sit in it all that time.
        let request = Box::new(request);
        let Ok(permit) = self.slots.clone().acquire_owned().await else {
            return AuthResult::Unavailable;
        };
        let auth = self.next_auth.fetch_add(1, Ordering::Relaxed) + 1;
        let (reply, result) = oneshot::channel();
        let ended = request.ended_elsewhere.clone();
        let resume = Command::Resume {
            auth,
            request,
            permit,
            reply,
        };
        self.hand_over(auth, resume, result, ended).await
    }

    /// Authorizations running now.
    pub fn in_flight(&self, max_in_flight: usize) -> usize {
        max_in_flight.saturating_sub(self.slots.available_permits())
    }

    /// Stops: in-flight authorizations end with [`AuthResult::Unavailable`], new ones are
    /// refused, the binds unbind. Returns when the driver has stopped.
    pub async fn shutdown(&self) {
        self.slots.close();
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Shutdown { done }).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// What the driver holds for one caller while the router runs its authorization.
struct Waiter {
    reply: Option<oneshot::Sender<AuthResult>>,
    /// Told once when the SMSC accepts the prompt.
    accepted: Option<oneshot::Sender<()>>,
    /// Held until the router releases the authorization: the slot bounds the router.
    _permit: OwnedSemaphorePermit,
}

struct Driver {
    router: Router,
    config: AuthorizerConfig,
    binds: Vec<BindHandle>,
    bind_tasks: Vec<JoinHandle<()>>,
    events_tx: mpsc::Sender<BindEvent>,
    waiters: HashMap<AuthId, Waiter>,
    /// The router's ignored answers already counted.
    ignored_seen: IgnoredAnswers,
    pin_verifier: Option<Arc<dyn PinVerifier>>,
    /// PIN verdicts of the checks under way (one task each; bounded by the dialogs waiting for
    /// one, at most one per authorization).
    verdicts_tx: mpsc::UnboundedSender<(AuthId, bool)>,
    /// Authorizations taken over for a stray answer, with the answer to hand back.
    adoptions_tx: mpsc::UnboundedSender<(Vec<Adoption>, StrayWithAck)>,
    next_adopted: AuthId,
    /// The answer owed for the `deliver_sm` being handled: taken with the stray answer it
    /// becomes, or sent (`ESME_ROK`) when the handling is done.
    mo_ack: Option<MoAck>,
    /// Authorizations whose PIN check started since this was cleared (an adopted one's answer
    /// is acknowledged after that check's ending is stored).
    pin_checks_started: Vec<AuthId>,
    tracker: TaskTracker,
    slots: Arc<Semaphore>,
}

/// What the driver's own tasks send back to its loop: PIN verdicts, and the authorizations
/// taken over for a stray answer with the answer.
struct Feedback {
    verdicts: mpsc::UnboundedSender<(AuthId, bool)>,
    adoptions: mpsc::UnboundedSender<(Vec<Adoption>, StrayWithAck)>,
}

fn now_std() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Driver {
    fn new(
        config: AuthorizerConfig,
        binds: Vec<BindHandle>,
        bind_tasks: Vec<JoinHandle<()>>,
        events_tx: mpsc::Sender<BindEvent>,
        pin_verifier: Option<Arc<dyn PinVerifier>>,
        feedback: Feedback,
        slots: Arc<Semaphore>,
    ) -> Self {
        let Feedback {
            verdicts: verdicts_tx,
            adoptions: adoptions_tx,
        } = feedback;
        let router = Router::new(RouterConfig {
            dialect: config.dialect.clone(),
            service_code: config.service_code.clone(),
            ota_originator: config.ota_originator.clone(),
            submit_timeout: config.submit_timeout,
            min_answer_time: config.admission.min_answer_time,
            stk_grace: config.stk_grace,
            max_pending_por: config.max_pending_por,
            ussd_pin_check: pin_verifier.is_some(),
            forward_strays: config.strays.is_some(),
        });
        Self {
            router,
            config,
            binds,
            bind_tasks,
            events_tx,
            waiters: HashMap::new(),
            ignored_seen: IgnoredAnswers::default(),
            pin_verifier,
            verdicts_tx,
            adoptions_tx,
            next_adopted: ADOPTED_IDS,
            mo_ack: None,
            pin_checks_started: Vec::new(),
            tracker: TaskTracker::new(),
            slots,
        }
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::Receiver<BindEvent>,
        mut verdicts: mpsc::UnboundedReceiver<(AuthId, bool)>,
        mut adoptions: mpsc::UnboundedReceiver<(Vec<Adoption>, StrayWithAck)>,
    ) {
        loop {
            let wake = self.router.poll_timeout();
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Start { auth, request, permit, reply, accepted }) => {
                        self.start(now_std(), auth, *request, permit, reply, accepted);
                    }
                    Some(Command::Resume { auth, request, permit, reply }) => {
                        self.resume(now_std(), auth, *request, permit, reply);
                    }
                    Some(Command::EndEarly { auth, quietly }) => {
                        if quietly {
                            self.router.forget(now_std(), auth);
                        } else {
                            self.router.end_early(now_std(), auth);
                        }
                        // Its caller is gone; the slot frees when the router releases it.
                        if let Some(w) = self.waiters.get_mut(&auth) {
                            w.reply = None;
                            w.accepted = None;
                        }
                    }
                    Some(Command::Shutdown { done }) => {
                        self.stop().await;
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        self.stop().await;
                        return;
                    }
                },
                Some(event) = events.recv() => {
                    let event = match event {
                        BindEvent::MoAwaitingAck { deliver, ack } => {
                            self.mo_ack = Some(ack);
                            BindEvent::Mo(deliver)
                        }
                        event => event,
                    };
                    self.router.handle_event(now_std(), event);
                    self.count_ignored();
                }
                Some((auth, right)) = verdicts.recv() => {
                    self.router.handle_pin_verdict(now_std(), auth, right);
                }
                Some((adopted, (answer, ack))) = adoptions.recv() => {
                    self.adopt(now_std(), adopted, answer, ack);
                    self.count_ignored();
                }
                () = sleep => self.router.handle_timeout(now_std()),
            }
            self.carry_out(now_std());
            // Handled here (matched, ignored, or no stray of it taken): acknowledged now.
            self.mo_ack = None;
            self.pin_checks_started.clear();
        }
    }

    /// Resumes the authorizations taken over for `answer`, then hands it to the router again.
    /// Its `deliver_sm` is acknowledged once what it decided is stored: the endings of the
    /// authorizations it ended, or whose PIN check it started; refused with a temporary error
    /// (the SMSC delivers it again) when an ending could not be stored.
    fn adopt(
        &mut self,
        now: Instant,
        adopted: Vec<Adoption>,
        answer: StrayAnswer,
        ack: Option<MoAck>,
    ) {
        let mut taken = Vec::new();
        for Adoption {
            request,
            reply,
            settled,
        } in adopted
        {
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                let _ = reply.send(AuthResult::Unavailable);
                continue;
            };
            self.next_adopted += 1;
            // Refused when it runs here after all (resumed meanwhile): the answer finds it, and
            // the refusal (`Invalid`) ends nothing.
            if self.resume(now, self.next_adopted, request, permit, reply) {
                taken.push((self.next_adopted, settled));
            }
        }
        if !taken.is_empty() {
            if let Some(c) = &self.config.cross_node_answers {
                c.inc();
            }
        }
        self.pin_checks_started.clear();
        self.router.handle_stray(now, answer);
        self.carry_out(now);
        let Some(ack) = ack else {
            return;
        };
        let decided: Vec<_> = taken
            .into_iter()
            .filter(|(auth, _)| {
                let result_sent = self.waiters.get(auth).is_none_or(|w| w.reply.is_none());
                result_sent || self.pin_checks_started.contains(auth)
            })
            .map(|(_, settled)| settled)
            .collect();
        if decided.is_empty() {
            return;
        }
        self.tracker.spawn(async move {
            let stored =
                tokio::time::timeout(SETTLE_BEFORE_ACK, futures_util::future::join_all(decided))
                    .await
                    .map_or(true, |all| all.into_iter().all(|s| s.unwrap_or(true)));
            ack.reply(if stored {
                rusmpp::CommandStatus::EsmeRok
            } else {
                rusmpp::CommandStatus::EsmeRxTAppn
            });
        });
    }

    fn resume(
        &mut self,
        now: Instant,
        auth: AuthId,
        request: AuthRequest,
        permit: OwnedSemaphorePermit,
        reply: oneshot::Sender<AuthResult>,
    ) -> bool {
        match self.router.resume(now, auth, request) {
            Ok(()) => {
                self.waiters.insert(
                    auth,
                    Waiter {
                        reply: Some(reply),
                        accepted: None,
                        _permit: permit,
                    },
                );
                true
            }
            Err(why) => {
                let _ = reply.send(AuthResult::Invalid(why));
                false
            }
        }
    }

    fn start(
        &mut self,
        now: Instant,
        auth: AuthId,
        request: AuthRequest,
        permit: OwnedSemaphorePermit,
        reply: oneshot::Sender<AuthResult>,
        accepted: Option<oneshot::Sender<()>>,
    ) {
        let nonce = StkNonce {
            txid: rand::random(),
            challenge: rand::random(),
        };
        match self.router.start(now, auth, request, nonce) {
            Ok(()) => {
                self.waiters.insert(
                    auth,
                    Waiter {
                        reply: Some(reply),
                        accepted,
                        _permit: permit,
                    },
                );
            }
            Err(why) => {
                let _ = reply.send(AuthResult::Invalid(why));
            }
        }
    }

    /// Moves the router's count of ignored answers to the counters.
    fn count_ignored(&mut self) {
        let now = self.router.ignored_answers();
        if let Some((ussd, stk)) = &self.config.ignored_answers {
            ussd.inc_by(now.ussd.saturating_sub(self.ignored_seen.ussd));
            stk.inc_by(now.stk.saturating_sub(self.ignored_seen.stk));
        }
        self.ignored_seen = now;
    }

    /// Does what the router asks until it asks nothing more.
    fn carry_out(&mut self, now: Instant) {
        let mut batch: Vec<(SubmitId, SubmitRequest)> = Vec::new();
        let mut batch_of = None;
        while let Some(output) = self.router.poll_output() {
            match output {
                RouterOutput::Submit { auth, id, request } => {
                    if batch_of != Some(auth) && !batch.is_empty() {
                        self.send(std::mem::take(&mut batch));
                    }
                    batch_of = Some(auth);
                    batch.push((id, *request));
                }
                RouterOutput::PromptAccepted { auth } => {
                    if let Some(accepted) =
                        self.waiters.get_mut(&auth).and_then(|w| w.accepted.take())
                    {
                        let _ = accepted.send(());
                    }
                }
                RouterOutput::VerifyPin { auth, msisdn, pin } => match &self.pin_verifier {
                    Some(verifier) => {
                        self.pin_checks_started.push(auth);
                        let (verifier, verdicts) = (verifier.clone(), self.verdicts_tx.clone());
                        self.tracker.spawn(async move {
                            let right = verifier.verify(&msisdn, &pin).await;
                            let _ = verdicts.send((auth, right));
                        });
                    }
                    None => self.router.handle_pin_verdict(now, auth, false),
                },
                RouterOutput::Result { auth, result } => {
                    if let Some(reply) = self.waiters.get_mut(&auth).and_then(|w| w.reply.take()) {
                        let _ = reply.send(result);
                    }
                }
                RouterOutput::Released { auth } => {
                    self.waiters.remove(&auth);
                }
                RouterOutput::Stray(answer) => {
                    match self.config.strays.as_ref().and_then(|s| s.0.get()).cloned() {
                        Some(handler) => {
                            let adoptions = self.adoptions_tx.clone();
                            // A stray comes only from the `deliver_sm` being handled.
                            let ack = self.mo_ack.take();
                            self.tracker.spawn(async move {
                                match handler.adopt(&answer).await {
                                    Ok(adopted) => {
                                        let _ = adoptions.send((adopted, (answer, ack)));
                                    }
                                    Err(e) => {
                                        tracing::warn!(error = %e, "a stray answer could not be looked up; refused for the SMSC to deliver it again");
                                        if let Some(ack) = ack {
                                            ack.reply(rusmpp::CommandStatus::EsmeRxTAppn);
                                        }
                                    }
                                }
                            });
                        }
                        // Not wired yet: hand it straight back, to be counted as ignored.
                        None => self.router.handle_stray(now, answer),
                    }
                }
            }
        }
        if !batch.is_empty() {
            self.send(batch);
        }
    }

    async fn stop(&mut self) {
        self.slots.close();
        self.router.abandon_all();
        self.carry_out(now_std());
        // Anything the router did not know of (it cannot happen, but a caller must never hang).
        self.waiters.clear();
        for b in &self.binds {
            let _ = b.unbind().await;
        }
        let limit = self
            .config
            .binds
            .iter()
            .map(|b| b.session.unbind_timeout)
            .max()
            .unwrap_or_default()
            + Duration::from_secs(1);
        for join in self.bind_tasks.drain(..) {
            if tokio::time::timeout(limit, join).await.is_err() {
                tracing::warn!("bind did not stop within its unbind time");
            }
        }
        self.tracker.close();
        let _ = tokio::time::timeout(limit, self.tracker.wait()).await;
    }

    /// Hands one authorization's submissions to the least loaded bind, in order.
    fn send(&mut self, items: Vec<(SubmitId, SubmitRequest)>) {
        let events = self.events_tx.clone();
        let Some(bind) = self.binds.iter().min_by_key(|b| b.pending()).cloned() else {
            // No bind configured: each submission fails through the normal path.
            self.tracker.spawn(async move {
                for (id, _) in items {
                    let _ = events
                        .send(BindEvent::Failed {
                            id,
                            reason: SubmitFailure::ShuttingDown,
                        })
                        .await;
                }
            });
            return;
        };
        // Its own task: the bind's command queue may be full while the bind waits for us to
        // drain its events.
        self.tracker.spawn(async move {
            for (id, request) in items {
                if bind.submit(id, request).await.is_err() {
                    let _ = events
                        .send(BindEvent::Failed {
                            id,
                            reason: SubmitFailure::ShuttingDown,
                        })
                        .await;
                }
            }
        });
    }
}
