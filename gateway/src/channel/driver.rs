//! The tokio shell that runs USSD dialogs and SMS-PP pushes over SMPP binds.
//!
//! [`Authorizer::start`] spawns the binds and one driver task. [`Authorizer::authorize`] takes a
//! slot of a `Semaphore` (the limit on authorizations in flight, which also bounds the driver's
//! map of machines: the permit lives in the map entry until the machine has nothing left to
//! send), hands the request to the task over a bounded channel and waits for its one result.
//! The task owns every machine: it feeds them bind events (submit verdicts, MO), wakes them at
//! their deadlines and forwards what they queue to the least loaded bind, one spawned, tracked
//! task per batch so a full bind queue never blocks the loop that drains the bind's events.
//!
//! Definite endings: each submission carries a deadline, so a bind that stays down fails it
//! ([`SubmitFailure::DeadlineExpired`]); the machines' own timers end them anyway; a stopped
//! driver drops the reply channel, which [`authorize`](Authorizer::authorize) reports as
//! [`AuthResult::Unavailable`].
//!
//! Failure receipts: SMS-PP submits ask for a receipt on failure. The driver keeps each
//! accepted segment's `message_id` (normalized) mapped to its push until the push ends, so the
//! map is bounded like the machines; an MO `deliver_sm` that is a delivery receipt
//! (`smspp::parse_receipt`) with a failed state ends the matching push as undelivered, which
//! the caller sees as [`AuthResult::DeliveryError`] (and may fall back to USSD). A failure
//! receipt for an id not (yet) known is kept a short while in a small bounded list, because an
//! SMSC may send it before the `submit_sm_resp` that tells us the id; other receipts are ignored.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusmpp::pdus::{DeliverSm, SubmitSm};
use sim_applet_model::applet::protocol::Loa;
use sim_applet_model::applet::state::CardSecrets;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use super::stk::{CardProof, SimFailure, StkOutcome, StkParams, StkPush};
use super::ussd::{UssdDialog, UssdOutcome, UssdPrompt};
use crate::smpp::bind::{self, BindConfig, BindEvent, BindHandle};
use crate::smpp::session::{SubmitFailure, SubmitId, SubmitRequest};
use sim_applet_model::smpp::dialect::{Dialect, SessionKeyLocation};
use sim_applet_model::smpp::smspp::{
    is_delivery_receipt, normalize_message_id, parse_receipt, Reassembler,
};

/// Most failure receipts held while their `submit_sm_resp` is awaited.
const MAX_EARLY_RECEIPTS: usize = 256;

/// Checks a PIN typed over USSD (LoA3). The gateway's verifier store, with its lockout, lives
/// behind this.
pub trait PinVerifier: Send + Sync + 'static {
    /// Whether `pin` is right for `msisdn` (and counts the attempt).
    fn verify(&self, msisdn: &str, pin: &str) -> bool;
}

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
        }
    }
}

/// Which channel, with what the SIM applet channel needs.
#[derive(Clone, PartialEq, Eq)]
pub enum AuthChannel {
    /// USSD push in the configured dialect.
    Ussd,
    /// SMS-PP to the applet, with the card's secrets and the next OTA counter (kept durable by
    /// the caller: a counter the card has seen is refused).
    Stk { secrets: CardSecrets, counter: u64 },
}

impl std::fmt::Debug for AuthChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthChannel::Ussd => f.write_str("Ussd"),
            AuthChannel::Stk { counter, .. } => write!(f, "Stk {{ counter: {counter} }}"),
        }
    }
}

/// One authorization to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest {
    pub msisdn: String,
    pub loa: Loa,
    pub channel: AuthChannel,
    /// Relying party name (the STK screen shows it; USSD puts it in the text).
    pub rp_name: String,
    pub consent: String,
    pub binding_code: String,
    /// Seconds the user has (STK: told to the card; USSD: the dialect's timers apply).
    pub expiry_secs: u16,
}

/// How an authorization ended. Exactly one per [`Authorizer::authorize`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthResult {
    /// Approved; over STK with the card's MAC as proof.
    Approved { loa: Loa, proof: Option<CardProof> },
    /// The user refused.
    Denied,
    /// A PIN typed over USSD did not verify.
    WrongPin,
    /// No answer in time.
    Expired,
    /// The user or the network aborted the USSD dialog.
    Aborted,
    /// The card's PIN is blocked.
    PinBlocked,
    /// The card or its answer failed.
    SimError(SimFailure),
    /// The prompt never reached the network.
    DeliveryError(SubmitFailure),
    /// The request cannot be sent as asked (text too long, no PIN verifier ...).
    Invalid(String),
    /// The authorizer has stopped.
    Unavailable,
}

enum Command {
    Start {
        request: Box<AuthRequest>,
        permit: OwnedSemaphorePermit,
        reply: oneshot::Sender<AuthResult>,
        accepted: Option<oneshot::Sender<()>>,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

/// The caller's side of the channel driver. Cheap to clone.
#[derive(Clone)]
pub struct Authorizer {
    commands: mpsc::Sender<Command>,
    slots: Arc<Semaphore>,
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
        let mut binds = Vec::with_capacity(config.binds.len());
        let mut bind_tasks = Vec::with_capacity(config.binds.len());
        for b in &config.binds {
            let (handle, join) = bind::spawn(b.clone(), events_tx.clone());
            binds.push(handle);
            bind_tasks.push(join);
        }
        let (commands, commands_rx) = mpsc::channel(config.max_in_flight.clamp(1, 1024));
        let slots = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
        let driver = Driver::new(
            config,
            binds,
            bind_tasks,
            events_tx,
            pin_verifier,
            slots.clone(),
        );
        let join = tokio::spawn(driver.run(commands_rx, events_rx));
        (Self { commands, slots }, join)
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
        let Ok(permit) = self.slots.clone().acquire_owned().await else {
            return AuthResult::Unavailable;
        };
        let (reply, result) = oneshot::channel();
        let start = Command::Start {
            request: Box::new(request),
            permit,
            reply,
            accepted,
        };
        if self.commands.send(start).await.is_err() {
            return AuthResult::Unavailable;
        }
        result.await.unwrap_or(AuthResult::Unavailable)
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

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Ussd(String, u16),
    Stk(String, u64),
}

enum Machine {
    Ussd(UssdDialog),
    Stk(StkPush),
}

struct Entry {
    machine: Machine,
    loa: Loa,
    reply: Option<oneshot::Sender<AuthResult>>,
    /// Told once when the SMSC accepts the prompt.
    accepted: Option<oneshot::Sender<()>>,
    /// Normalized `message_id`s of accepted SMS-PP segments (keys of `Driver::receipt_ids`).
    message_ids: Vec<String>,
    /// Held until the machine is removed: the slot bounds the map.
    _permit: OwnedSemaphorePermit,
}

struct Driver {
    config: AuthorizerConfig,
    binds: Vec<BindHandle>,
    bind_tasks: Vec<JoinHandle<()>>,
    events_tx: mpsc::Sender<BindEvent>,
    entries: HashMap<Key, Entry>,
    submits: HashMap<SubmitId, Key>,
    /// Normalized `message_id` of each accepted SMS-PP segment -> its push, while it runs.
    receipt_ids: HashMap<String, Key>,
    /// Failure receipts for ids not known yet: (arrival, normalized id, reason).
    early_receipts: VecDeque<(Instant, String, String)>,
    next_submit: SubmitId,
    next_key: u32,
    reassembler: Reassembler,
    pin_verifier: Option<Arc<dyn PinVerifier>>,
    tracker: TaskTracker,
    slots: Arc<Semaphore>,
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
        slots: Arc<Semaphore>,
    ) -> Self {
        Self {
            reassembler: Reassembler::new(config.max_pending_por, config.stk_grace * 4),
            config,
            binds,
            bind_tasks,
            events_tx,
            entries: HashMap::new(),
            submits: HashMap::new(),
            receipt_ids: HashMap::new(),
            early_receipts: VecDeque::new(),
            next_submit: 0,
            next_key: 0,
            pin_verifier,
            tracker: TaskTracker::new(),
            slots,
        }
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::Receiver<BindEvent>,
    ) {
        loop {
            let wake = self.next_timeout();
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Start { request, permit, reply, accepted }) => {
                        self.start(now_std(), *request, permit, reply, accepted);
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
                Some(event) = events.recv() => self.handle_event(now_std(), event),
                () = sleep => self.handle_timeouts(now_std()),
            }
        }
    }

    async fn stop(&mut self) {
        self.slots.close();
        // Dropping the reply senders tells every waiting caller `Unavailable`.
        self.entries.clear();
        self.receipt_ids.clear();
        self.early_receipts.clear();
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

    fn next_timeout(&self) -> Option<Instant> {
        // A scan: the map is bounded by `max_in_flight`, and this runs once per event.
        self.entries
            .values()
            .filter_map(|e| match &e.machine {
                Machine::Ussd(d) => d.poll_timeout(),
                Machine::Stk(s) => s.poll_timeout(),
            })
            .min()
    }

    fn key_range(&self) -> u32 {
        match self.config.dialect.session_key {
            SessionKeyLocation::ItsSessionInfo8 => 0x100,
            SessionKeyLocation::DialogId15 => 0x8000,
            SessionKeyLocation::UserMessageReference => 0x1_0000,
        }
    }

    /// A session key not used by another open dialog with the same MSISDN.
    fn allocate_key(&mut self, msisdn: &str) -> Option<u16> {
        let range = self.key_range();
        for _ in 0..range {
            self.next_key = (self.next_key + 1) % range;
            let key = u16::try_from(self.next_key).ok()?;
            if !self
                .entries
                .contains_key(&Key::Ussd(msisdn.to_owned(), key))
            {
                return Some(key);
            }
        }
        None
    }

    fn start(
        &mut self,
        now: Instant,
        request: AuthRequest,
        permit: OwnedSemaphorePermit,
        reply: oneshot::Sender<AuthResult>,
        accepted: Option<oneshot::Sender<()>>,
    ) {
        let built = match &request.channel {
            AuthChannel::Ussd => self.start_ussd(now, &request),
            AuthChannel::Stk { secrets, counter } => {
                let params = StkParams {
                    msisdn: request.msisdn.clone(),
                    originator: self.config.ota_originator.clone(),
                    secrets: secrets.clone(),
                    counter: *counter,
                    txid: rand::random(),
                    challenge: rand::random(),
                    loa: request.loa,
                    expiry_secs: request.expiry_secs,
                    rp_name: request.rp_name.clone(),
                    consent: request.consent.clone(),
                    binding_code: request.binding_code.clone(),
                    // Only distinct among concurrent concatenated pushes to one handset.
                    concat_ref: (*counter & 0xFF) as u8,
                    grace: self.config.stk_grace,
                };
                let key = Key::Stk(request.msisdn.clone(), *counter);
                if self.entries.contains_key(&key) {
                    Err("an STK push with this counter is already in flight".to_owned())
                } else {
                    StkPush::new(now, params)
                        .map(|s| (key, Machine::Stk(s)))
                        .map_err(|e| e.to_string())
                }
            }
        };
        match built {
            Ok((key, machine)) => {
                self.entries.insert(
                    key.clone(),
                    Entry {
                        machine,
                        loa: request.loa,
                        reply: Some(reply),
                        accepted,
                        message_ids: Vec::new(),
                        _permit: permit,
                    },
                );
                self.drive(now, &key);
            }
            Err(why) => {
                let _ = reply.send(AuthResult::Invalid(why));
            }
        }
    }

    fn start_ussd(
        &mut self,
        now: Instant,
        request: &AuthRequest,
    ) -> Result<(Key, Machine), String> {
        if request.loa == Loa::Loa3 && self.pin_verifier.is_none() {
            return Err("USSD LoA3 needs a PIN verifier".into());
        }
        let key = self
            .allocate_key(&request.msisdn)
            .ok_or_else(|| "no free USSD session key for this MSISDN".to_owned())?;
        let text = if request.binding_code.is_empty() {
            format!("{}: {}", request.rp_name, request.consent)
        } else {
            format!(
                "{}: {} Code {}",
                request.rp_name, request.consent, request.binding_code
            )
        };
        let prompt = UssdPrompt {
            msisdn: request.msisdn.clone(),
            service_code: self.config.service_code.clone(),
            key,
            loa: request.loa,
            text,
        };
        let dialog =
            UssdDialog::new(now, self.config.dialect.clone(), prompt).map_err(|e| e.to_string())?;
        Ok((
            Key::Ussd(request.msisdn.clone(), key),
            Machine::Ussd(dialog),
        ))
    }

    fn handle_event(&mut self, now: Instant, event: BindEvent) {
        match event {
            BindEvent::Accepted { id, message_id } => {
                let key = self.submits.get(&id).cloned();
                self.submit_result(now, id, Ok(()));
                if let Some(key @ Key::Stk(..)) = key {
                    self.note_message_id(now, &key, &message_id);
                }
            }
            BindEvent::Failed { id, reason } => self.submit_result(now, id, Err(reason)),
            BindEvent::Mo(deliver) => {
                if is_delivery_receipt(u8::from(deliver.esm_class)) {
                    self.handle_receipt(now, &deliver);
                } else if deliver.protocol_id == 0x7F {
                    self.handle_sms_pp(now, &deliver);
                } else {
                    match self.config.dialect.parse_mo(&deliver) {
                        Ok(mo) => {
                            let key = Key::Ussd(mo.msisdn.clone(), mo.session_key);
                            if let Some(Entry {
                                machine: Machine::Ussd(d),
                                ..
                            }) = self.entries.get_mut(&key)
                            {
                                d.handle_mo(now, &mo);
                                self.drive(now, &key);
                            } else {
                                tracing::debug!("USSD MO for no open dialog");
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "MO that is not a USSD answer"),
                    }
                }
            }
            BindEvent::Bound { .. } => tracing::info!("bind up"),
            BindEvent::Disconnected { reason } => tracing::warn!(%reason, "bind down"),
            BindEvent::Throttled { .. } | BindEvent::Stopped => {}
        }
    }

    /// Remembers that SMS-PP segment `message_id` belongs to the push at `key`, and applies a
    /// failure receipt that came before it.
    fn note_message_id(&mut self, now: Instant, key: &Key, message_id: &str) {
        let id = normalize_message_id(message_id);
        if id.is_empty() {
            return;
        }
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        if !matches!(&entry.machine, Machine::Stk(s) if s.poll_timeout().is_some()) {
            // Already ended: no receipt can change it, and nothing would remove the id.
            return;
        }
        entry.message_ids.push(id.clone());
        self.receipt_ids.insert(id.clone(), key.clone());
        self.prune_early_receipts(now);
        if let Some(at) = self.early_receipts.iter().position(|(_, i, _)| *i == id) {
            if let Some((_, _, reason)) = self.early_receipts.remove(at) {
                self.fail_delivery(now, key, reason);
            }
        }
    }

    fn prune_early_receipts(&mut self, now: Instant) {
        let max_age = self.config.stk_grace;
        while self
            .early_receipts
            .front()
            .is_some_and(|(at, _, _)| now.saturating_duration_since(*at) >= max_age)
        {
            self.early_receipts.pop_front();
        }
    }

    fn handle_receipt(&mut self, now: Instant, deliver: &DeliverSm) {
        let receipt = match parse_receipt(deliver) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "unreadable delivery receipt");
                return;
            }
        };
        if !receipt.state.is_failure() {
            // Success is the card's PoR; a DELIVRD or interim receipt adds nothing.
            tracing::trace!(state = ?receipt.state, "delivery receipt ignored");
            return;
        }
        let id = normalize_message_id(&receipt.message_id);
        let reason = receipt.reason();
        match self.receipt_ids.get(&id).cloned() {
            Some(key) => self.fail_delivery(now, &key, reason),
            None => {
                tracing::debug!(
                    message_id = %receipt.message_id,
                    %reason,
                    "failure receipt for no open push (kept a while in case its submit_sm_resp follows)"
                );
                self.prune_early_receipts(now);
                if self.early_receipts.len() >= MAX_EARLY_RECEIPTS {
                    self.early_receipts.pop_front();
                }
                self.early_receipts.push_back((now, id, reason));
            }
        }
    }

    fn fail_delivery(&mut self, now: Instant, key: &Key, reason: String) {
        if let Some(Entry {
            machine: Machine::Stk(s),
            ..
        }) = self.entries.get_mut(key)
        {
            if s.handle_delivery_failure(now, reason) {
                self.drive(now, key);
            }
        }
    }

    fn handle_sms_pp(&mut self, now: Instant, deliver: &DeliverSm) {
        let packet = match self.reassembler.push(now, deliver) {
            Ok(Some(packet)) => packet,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "unusable SMS-PP MO");
                return;
            }
        };
        let msisdn = deliver.source_addr.to_string();
        let candidates: Vec<Key> = self
            .entries
            .keys()
            .filter(|k| matches!(k, Key::Stk(m, _) if *m == msisdn))
            .cloned()
            .collect();
        for key in candidates {
            if let Some(Entry {
                machine: Machine::Stk(s),
                ..
            }) = self.entries.get_mut(&key)
            {
                if s.handle_por(now, &msisdn, &packet) {
                    self.drive(now, &key);
                    return;
                }
            }
        }
        tracing::debug!("PoR for no open push");
    }

    fn submit_result(&mut self, now: Instant, id: SubmitId, result: Result<(), SubmitFailure>) {
        let Some(key) = self.submits.remove(&id) else {
            return;
        };
        if let Some(entry) = self.entries.get_mut(&key) {
            if result.is_ok() {
                if let Some(accepted) = entry.accepted.take() {
                    let _ = accepted.send(());
                }
            }
            match &mut entry.machine {
                Machine::Ussd(d) => d.handle_submit_result(now, result),
                Machine::Stk(s) => s.handle_submit_result(now, result),
            }
            self.drive(now, &key);
        }
    }

    fn handle_timeouts(&mut self, now: Instant) {
        self.reassembler.handle_timeout(now);
        let due: Vec<Key> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                match &e.machine {
                    Machine::Ussd(d) => d.poll_timeout(),
                    Machine::Stk(s) => s.poll_timeout(),
                }
                .is_some_and(|at| at <= now)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            if let Some(entry) = self.entries.get_mut(&key) {
                match &mut entry.machine {
                    Machine::Ussd(d) => d.handle_timeout(now),
                    Machine::Stk(s) => s.handle_timeout(now),
                }
            }
            self.drive(now, &key);
        }
    }

    /// Delivers the machine's result, sends what it queued, and removes it when done.
    fn drive(&mut self, now: Instant, key: &Key) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        let mut out = Vec::new();
        let finished = match &mut entry.machine {
            Machine::Ussd(d) => {
                if let Some(outcome) = d.poll_result() {
                    let result = match outcome {
                        UssdOutcome::Approved => AuthResult::Approved {
                            loa: entry.loa,
                            proof: None,
                        },
                        UssdOutcome::Denied => AuthResult::Denied,
                        UssdOutcome::Expired => AuthResult::Expired,
                        UssdOutcome::Aborted => AuthResult::Aborted,
                        UssdOutcome::DeliveryError(f) => AuthResult::DeliveryError(f),
                        UssdOutcome::PinEntered(pin) => {
                            let ok = self
                                .pin_verifier
                                .as_ref()
                                .is_some_and(|v| v.verify(d.msisdn(), &pin));
                            d.conclude(now, ok);
                            if ok {
                                AuthResult::Approved {
                                    loa: Loa::Loa3,
                                    proof: None,
                                }
                            } else {
                                AuthResult::WrongPin
                            }
                        }
                    };
                    if let Some(reply) = entry.reply.take() {
                        let _ = reply.send(result);
                    }
                }
                while let Some(sm) = d.poll_transmit() {
                    out.push(sm);
                }
                d.is_finished()
            }
            Machine::Stk(s) => {
                if let Some(outcome) = s.poll_result() {
                    let result = match outcome {
                        StkOutcome::Approved { loa, proof } => AuthResult::Approved {
                            loa,
                            proof: Some(proof),
                        },
                        StkOutcome::Denied => AuthResult::Denied,
                        StkOutcome::Expired => AuthResult::Expired,
                        StkOutcome::PinBlocked => AuthResult::PinBlocked,
                        StkOutcome::SimError(e) => AuthResult::SimError(e),
                        StkOutcome::DeliveryError(f) => AuthResult::DeliveryError(f),
                        StkOutcome::Undelivered { reason } => {
                            tracing::info!(
                                counter = s.counter(),
                                %reason,
                                "SMSC reports the STK push undeliverable"
                            );
                            AuthResult::DeliveryError(SubmitFailure::Undeliverable)
                        }
                    };
                    if let Some(reply) = entry.reply.take() {
                        let _ = reply.send(result);
                    }
                }
                while let Some(sm) = s.poll_transmit() {
                    out.push(sm);
                }
                s.is_finished()
            }
        };
        if !out.is_empty() {
            self.send(now, key, out);
        }
        if finished {
            if let Some(entry) = self.entries.remove(key) {
                for id in entry.message_ids {
                    if self.receipt_ids.get(&id) == Some(key) {
                        self.receipt_ids.remove(&id);
                    }
                }
            }
        }
    }

    fn send(&mut self, now: Instant, key: &Key, batch: Vec<SubmitSm>) {
        let Some(bind) = self.binds.iter().min_by_key(|b| b.pending()).cloned() else {
            // No bind configured: fail each submission at once, through the normal path.
            for _ in batch {
                let id = self.new_submit(key);
                let events = self.events_tx.clone();
                self.tracker.spawn(async move {
                    let _ = events
                        .send(BindEvent::Failed {
                            id,
                            reason: SubmitFailure::ShuttingDown,
                        })
                        .await;
                });
            }
            return;
        };
        let deadline = Some(now + self.config.submit_timeout);
        let items: Vec<(SubmitId, SubmitRequest)> = batch
            .into_iter()
            .map(|submit_sm| {
                (
                    self.new_submit(key),
                    SubmitRequest {
                        submit_sm,
                        deadline,
                    },
                )
            })
            .collect();
        let events = self.events_tx.clone();
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

    fn new_submit(&mut self, key: &Key) -> SubmitId {
        self.next_submit += 1;
        self.submits.insert(self.next_submit, key.clone());
        self.next_submit
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rusmpp::types::{COctetString, OctetString};
    use rusmpp::values::EsmClass;
    use std::str::FromStr;

    const MSISDN: &str = "48600100200";

    fn driver() -> (Driver, mpsc::Receiver<BindEvent>) {
        let (events_tx, events_rx) = mpsc::channel(16);
        let slots = Arc::new(Semaphore::new(4));
        let d = Driver::new(
            AuthorizerConfig::new(Vec::new()),
            Vec::new(),
            Vec::new(),
            events_tx,
            None,
            slots,
        );
        (d, events_rx)
    }

    /// Starts an LoA2 STK push; its one segment is submission 1.
    async fn start_push(d: &mut Driver, now: Instant) -> oneshot::Receiver<AuthResult> {
        let (reply, result) = oneshot::channel();
        let permit = d.slots.clone().acquire_owned().await.unwrap();
        let request = AuthRequest {
            msisdn: MSISDN.into(),
            loa: Loa::Loa2,
            channel: AuthChannel::Stk {
                secrets: CardSecrets::derive(1, 5),
                counter: 7,
            },
            rp_name: "Portal".into(),
            consent: "Log in?".into(),
            binding_code: "AB12".into(),
            expiry_secs: 60,
        };
        d.start(now, request, permit, reply, None);
        assert_eq!(d.submits.len(), 1, "one SMS-PP segment submitted");
        result
    }

    fn receipt(text: &str) -> BindEvent {
        BindEvent::Mo(Box::new(
            DeliverSm::builder()
                .source_addr(COctetString::from_str(MSISDN).unwrap())
                .esm_class(EsmClass::from(0x04))
                .short_message(OctetString::from_vec(text.as_bytes().to_vec()).unwrap())
                .build(),
        ))
    }

    fn undeliv(id: &str) -> BindEvent {
        receipt(&format!(
            "id:{id} sub:001 dlvrd:000 submit date:2401011200 done date:2401011200 \
             stat:UNDELIV err:213 text:.p."
        ))
    }

    fn assert_undelivered(result: &mut oneshot::Receiver<AuthResult>) {
        assert_eq!(
            result.try_recv().unwrap(),
            AuthResult::DeliveryError(SubmitFailure::Undeliverable)
        );
    }

    #[tokio::test]
    async fn failure_receipt_ends_the_push_as_a_delivery_failure() {
        let (mut d, _events) = driver();
        let t0 = now_std();
        let mut result = start_push(&mut d, t0).await;
        d.handle_event(
            t0,
            BindEvent::Accepted {
                id: 1,
                message_id: "0000000042".into(),
            },
        );
        assert_eq!(d.receipt_ids.len(), 1);
        // Another message's failure, and this message's success: the push goes on.
        d.handle_event(t0, undeliv("0000000043"));
        d.handle_event(
            t0,
            receipt("id:0000000042 sub:001 dlvrd:001 stat:DELIVRD err:000 text:"),
        );
        assert!(result.try_recv().is_err());
        assert_eq!(d.entries.len(), 1);
        // Its failure, id written without the padding: ended, and its id forgotten.
        d.handle_event(t0, undeliv("42"));
        assert_undelivered(&mut result);
        assert!(d.entries.is_empty());
        assert!(d.receipt_ids.is_empty());
    }

    #[tokio::test]
    async fn unrelated_receipt_leaves_the_push_running() {
        let (mut d, _events) = driver();
        let t0 = now_std();
        let mut result = start_push(&mut d, t0).await;
        d.handle_event(
            t0,
            BindEvent::Accepted {
                id: 1,
                message_id: "1F".into(),
            },
        );
        d.handle_event(t0, undeliv("2F"));
        d.handle_event(t0, receipt("garbage without fields"));
        assert!(result.try_recv().is_err());
        assert_eq!(d.entries.len(), 1);
        assert_eq!(d.next_timeout(), Some(t0 + Duration::from_secs(75)));
    }

    #[tokio::test]
    async fn failure_receipt_before_the_submit_sm_resp_still_ends_the_push() {
        let (mut d, _events) = driver();
        let t0 = now_std();
        let mut result = start_push(&mut d, t0).await;
        d.handle_event(t0, undeliv("00ab"));
        assert!(result.try_recv().is_err());
        d.handle_event(
            t0,
            BindEvent::Accepted {
                id: 1,
                message_id: "AB".into(),
            },
        );
        assert_undelivered(&mut result);
        assert!(d.early_receipts.is_empty());
        assert!(d.entries.is_empty());
    }

    #[tokio::test]
    async fn early_receipts_are_bounded_and_age_out() {
        let (mut d, _events) = driver();
        let t0 = now_std();
        for i in 0..MAX_EARLY_RECEIPTS + 10 {
            d.handle_event(t0, undeliv(&i.to_string()));
        }
        assert_eq!(d.early_receipts.len(), MAX_EARLY_RECEIPTS);
        let mut result = start_push(&mut d, t0).await;
        let later = t0 + d.config.stk_grace;
        d.handle_event(
            later,
            BindEvent::Accepted {
                id: 1,
                message_id: "100".into(),
            },
        );
        // The receipt for 100 is older than the grace: no longer applied.
        assert!(result.try_recv().is_err());
        assert!(d.early_receipts.is_empty());
    }
}
