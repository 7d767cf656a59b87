//! Sans-IO channel router: every authorization of one operator in flight, with no task,
//! channel, permit or clock of its own (the model is quinn-proto's `Endpoint`).
//!
//! Data flow: [`Router::start`] builds the channel's machine (a [`UssdDialog`] or an
//! [`StkPush`]) under the caller's [`AuthId`]; what the machine sends comes out of
//! [`Router::poll_output`] as [`RouterOutput::Submit`], each with a fresh [`SubmitId`] and a
//! deadline, for the shell to hand to a bind. Everything the binds report goes back in through
//! [`Router::handle_event`]: submit verdicts by `SubmitId`, USSD answers by (MSISDN, session
//! key), SMS-PP proofs of receipt after reassembly by MSISDN, delivery receipts by the
//! `message_id` the SMSC gave the push's segments (a failure receipt that comes before its
//! `submit_sm_resp` is held a short while in a small bounded list). [`Router::handle_timeout`]
//! wakes the machines whose deadline has come: the deadlines sit in an ordered set, so an event
//! never scans every entry. A PIN typed over USSD comes out as [`RouterOutput::VerifyPin`], and
//! the verdict goes back in with [`Router::handle_pin_verdict`].
//!
//! Guarantee: every authorization started ends with exactly one [`RouterOutput::Result`]
//! (none when its caller ended it first with [`Router::end_early`]: nobody waits for it), then
//! one [`RouterOutput::Released`] once the router holds nothing more of it (a USSD dialog may
//! still send its final screen after its result); the shell frees the authorization's slot
//! at `Released`, which bounds the router's maps by the shell's limit on authorizations in
//! flight.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use rusmpp::pdus::{DeliverSm, SubmitSm};
use sim_applet_model::applet::protocol::{Loa, CHALLENGE_LEN, TXID_LEN};
use sim_applet_model::applet::state::CardSecrets;
use sim_applet_model::smpp::dialect::{Dialect, SessionKeyLocation};
use sim_applet_model::smpp::smspp::{
    is_delivery_receipt, normalize_message_id, parse_receipt, Reassembler,
};

use super::stk::{CardProof, SimFailure, StkOutcome, StkParams, StkPush};
use super::ussd::{UssdDialog, UssdOutcome, UssdPrompt};
use crate::smpp::bind::BindEvent;
use crate::smpp::session::{SubmitFailure, SubmitId, SubmitRequest};

/// Most failure receipts held while their `submit_sm_resp` is awaited.
pub const MAX_EARLY_RECEIPTS: usize = 256;

/// The caller's name for one authorization.
pub type AuthId = u64;

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
    /// The USSD session key the caller chose (and stored, so a restart can match the answer);
    /// `None`: the router picks one.
    pub ussd_key: Option<u16>,
    /// The STK transaction id and challenge the caller drew (and stored); `None`: the shell's.
    pub stk_nonce: Option<StkNonce>,
    /// Set by the caller when another node ended the authorization (it answered there): the
    /// dialog is then forgotten without a release screen, since the answer's node sent the
    /// final one.
    pub ended_elsewhere: Option<EndedElsewhere>,
}

/// A flag the caller raises when the authorization ended on another node.
#[derive(Debug, Clone, Default)]
pub struct EndedElsewhere(pub std::sync::Arc<std::sync::atomic::AtomicBool>);

impl EndedElsewhere {
    pub fn raise(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_raised(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl PartialEq for EndedElsewhere {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for EndedElsewhere {}

/// An answer no authorization of this router's matched: on a shared store it may belong to an
/// authorization another node prompted (an SMSC hands answers to any bind of the account).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrayAnswer {
    /// A USSD `deliver_sm`.
    Ussd(Box<DeliverSm>),
    /// A reassembled SMS-PP proof of receipt from `msisdn`.
    Stk { msisdn: String, packet: Vec<u8> },
}

impl StrayAnswer {
    /// The sender, normalised as the router matches it.
    pub fn msisdn(&self) -> String {
        match self {
            StrayAnswer::Ussd(d) => normalized_msisdn(&d.source_addr.to_string()),
            StrayAnswer::Stk { msisdn, .. } => msisdn.clone(),
        }
    }
}

/// How an authorization ended. Exactly one per authorization.
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
    /// The card reported that the handset dismissed the prompt before the user acted (its
    /// screen timer ran out).
    HandsetTimeout,
    /// The prompt was still queued for the binds when less than `min_answer_time` was left of
    /// the user's time, so it was not sent.
    NotSentInTime,
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

/// The fresh random values an STK push needs; the caller or the shell draws them (a CSPRNG),
/// tests fix them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StkNonce {
    pub txid: [u8; TXID_LEN],
    pub challenge: [u8; CHALLENGE_LEN],
}

impl std::fmt::Debug for StkNonce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StkNonce(..)")
    }
}

/// Settings of a [`Router`].
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// The operator's USSD flavour.
    pub dialect: Dialect,
    /// Source address of USSD pushes.
    pub service_code: String,
    /// Source address of SMS-PP pushes, digits: the card answers to it.
    pub ota_originator: String,
    /// A submission still unsent this long after it was queued fails for good.
    pub submit_timeout: Duration,
    /// A prompt still unsent when less than this is left of its authorization's time is not
    /// sent at all: the user could not answer it (it fails as
    /// [`SubmitFailure::DeadlineExpired`]).
    pub min_answer_time: Duration,
    /// Wait for a PoR beyond the request's expiry.
    pub stk_grace: Duration,
    /// Most incomplete concatenated PoRs held.
    pub max_pending_por: usize,
    /// Whether PINs typed over USSD can be checked (a verifier is wired).
    pub ussd_pin_check: bool,
    /// Answers that match nothing here are output as [`RouterOutput::Stray`] (a store shared
    /// by several nodes) instead of being counted as ignored.
    pub forward_strays: bool,
}

/// What the shell must do.
#[derive(Clone, PartialEq, Eq)]
pub enum RouterOutput {
    /// Hand this submission to a bind; its verdict comes back as a [`BindEvent`].
    Submit {
        auth: AuthId,
        id: SubmitId,
        request: Box<SubmitRequest>,
    },
    /// The SMSC accepted (the first part of) the authorization's prompt: from now on the prompt
    /// is the network's. Once per authorization at most.
    PromptAccepted { auth: AuthId },
    /// Check a PIN typed over USSD (counting the attempt) and answer with
    /// [`Router::handle_pin_verdict`].
    VerifyPin {
        auth: AuthId,
        msisdn: String,
        pin: String,
    },
    /// The authorization's one result.
    Result { auth: AuthId, result: AuthResult },
    /// The router holds nothing more of the authorization.
    Released { auth: AuthId },
    /// An answer that matched nothing here (only with `forward_strays`): the caller may take
    /// over the authorizations it could belong to ([`Router::resume`]) and hand it back
    /// ([`Router::handle_stray`]).
    Stray(StrayAnswer),
}

impl std::fmt::Debug for RouterOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouterOutput::Submit { auth, id, .. } => write!(f, "Submit({auth}, {id})"),
            RouterOutput::PromptAccepted { auth } => write!(f, "PromptAccepted({auth})"),
            // Never the PIN or the number.
            RouterOutput::VerifyPin { auth, .. } => write!(f, "VerifyPin({auth})"),
            RouterOutput::Result { auth, result } => write!(f, "Result({auth}, {result:?})"),
            RouterOutput::Released { auth } => write!(f, "Released({auth})"),
            RouterOutput::Stray(_) => write!(f, "Stray"),
        }
    }
}

enum Machine {
    Ussd(UssdDialog),
    Stk(StkPush),
}

impl Machine {
    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Machine::Ussd(d) => d.poll_timeout(),
            Machine::Stk(s) => s.poll_timeout(),
        }
    }
}

struct Entry {
    machine: Machine,
    loa: Loa,
    msisdn: String,
    /// The USSD session key, or the STK push's OTA counter.
    key: u64,
    /// When the user's time runs out.
    expires_at: Instant,
    /// The deadline registered in `Router::timers`.
    timer: Option<Instant>,
    /// A PIN is being checked: the dialog waits for the verdict.
    pin_pending: bool,
    prompt_accepted: bool,
    result_sent: bool,
    /// Normalized `message_id`s of accepted SMS-PP segments (keys of `Router::receipt_ids`).
    message_ids: Vec<String>,
}

/// An SMSC's `source_addr` in the form the gateway keeps numbers in (E.164 digits, no `+`):
/// SMSCs send `+48...`, `0048...` or `48...` for the same handset. A number that is not
/// international (a national form) is kept as it came, and matches nothing.
fn normalized_msisdn(source: &str) -> String {
    crate::routing::Msisdn::parse(source)
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|_| source.to_owned())
}

/// How many USSD session keys `dialect` carries (keys are `0..range`).
pub fn session_key_range(dialect: &Dialect) -> u32 {
    match dialect.session_key {
        SessionKeyLocation::ItsSessionInfo8 => 0x100,
        SessionKeyLocation::DialogId15 => 0x8000,
        SessionKeyLocation::UserMessageReference => 0x1_0000,
    }
}

/// Every authorization in flight on one operator, sans IO. See the module docs.
pub struct Router {
    config: RouterConfig,
    entries: HashMap<AuthId, Entry>,
    /// Open USSD dialogs by (MSISDN, session key).
    ussd: HashMap<(String, u16), AuthId>,
    /// Open STK pushes by MSISDN.
    stk: HashMap<String, Vec<AuthId>>,
    submits: HashMap<SubmitId, AuthId>,
    /// Normalized `message_id` of each accepted SMS-PP segment -> its push, while it runs.
    receipt_ids: HashMap<String, AuthId>,
    /// Failure receipts for ids not known yet: (arrival, normalized id, reason).
    early_receipts: VecDeque<(Instant, String, String)>,
    /// Machine deadlines, ordered.
    timers: BTreeSet<(Instant, AuthId)>,
    reassembler: Reassembler,
    next_submit: SubmitId,
    next_key: u32,
    outputs: VecDeque<RouterOutput>,
    ignored: IgnoredAnswers,
}

/// Answers that changed nothing, since the router started: no open dialog or push for them,
/// late (after the end), duplicated, or another prompt's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IgnoredAnswers {
    /// USSD MOs.
    pub ussd: u64,
    /// SMS-PP proofs of receipt.
    pub stk: u64,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("entries", &self.entries.len())
            .field("submits", &self.submits.len())
            .field("receipt_ids", &self.receipt_ids.len())
            .field("early_receipts", &self.early_receipts.len())
            .finish_non_exhaustive()
    }
}

impl Router {
    /// An empty router.
    pub fn new(config: RouterConfig) -> Self {
        Router {
            reassembler: Reassembler::new(config.max_pending_por, config.stk_grace * 4),
            config,
            entries: HashMap::new(),
            ussd: HashMap::new(),
            stk: HashMap::new(),
            submits: HashMap::new(),
            receipt_ids: HashMap::new(),
            early_receipts: VecDeque::new(),
            timers: BTreeSet::new(),
            next_submit: 0,
            next_key: 0,
            outputs: VecDeque::new(),
            ignored: IgnoredAnswers::default(),
        }
    }

    /// Authorizations held (running, or finishing a USSD dialog after their result).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Starts authorization `auth`. On `Err` nothing was started and no output will follow;
    /// the error says why the request cannot be sent as asked.
    pub fn start(
        &mut self,
        now: Instant,
        auth: AuthId,
        request: AuthRequest,
        nonce: StkNonce,
    ) -> Result<(), String> {
        if self.entries.contains_key(&auth) {
            return Err(format!("authorization {auth} is already running"));
        }
        let (machine, key) = match &request.channel {
            AuthChannel::Ussd => {
                let (dialog, key) = self.ussd_dialog(now, &request)?;
                (Machine::Ussd(dialog), u64::from(key))
            }
            AuthChannel::Stk { counter, .. } => {
                let params = self.stk_params(&request, request.stk_nonce.unwrap_or(nonce))?;
                let push = StkPush::new(now, params).map_err(|e| e.to_string())?;
                (Machine::Stk(push), *counter)
            }
        };
        self.register(now, auth, request, machine, key);
        Ok(())
    }

    /// Takes over authorization `auth` whose prompt an earlier run of the gateway sent: the
    /// request carries what the store kept (the USSD session key; the STK counter, transaction
    /// id and challenge). Nothing is sent; the answer is awaited for `request.expiry_secs` (plus
    /// the STK grace), and the authorization ends as [`Router::start`]'s would.
    pub fn resume(
        &mut self,
        now: Instant,
        auth: AuthId,
        request: AuthRequest,
    ) -> Result<(), String> {
        if self.entries.contains_key(&auth) {
            return Err(format!("authorization {auth} is already running"));
        }
        let (machine, key) = match &request.channel {
            AuthChannel::Ussd => {
                let key = request
                    .ussd_key
                    .ok_or_else(|| "a resumed USSD dialog needs its session key".to_owned())?;
                if self.ussd.contains_key(&(request.msisdn.clone(), key)) {
                    return Err("this USSD session key is in use".to_owned());
                }
                let prompt = UssdPrompt {
                    msisdn: request.msisdn.clone(),
                    service_code: self.config.service_code.clone(),
                    key,
                    loa: request.loa,
                    text: String::new(),
                };
                let deadline = now + Duration::from_secs(u64::from(request.expiry_secs));
                let dialog = UssdDialog::resumed(self.config.dialect.clone(), prompt, deadline);
                (Machine::Ussd(dialog), u64::from(key))
            }
            AuthChannel::Stk { counter, .. } => {
                let nonce = request
                    .stk_nonce
                    .ok_or_else(|| "a resumed STK push needs its transaction id".to_owned())?;
                let params = self.stk_params(&request, nonce)?;
                (Machine::Stk(StkPush::resumed(now, params)), *counter)
            }
        };
        self.register(now, auth, request, machine, key);
        Ok(())
    }

    fn stk_params(&self, request: &AuthRequest, nonce: StkNonce) -> Result<StkParams, String> {
        let AuthChannel::Stk { secrets, counter } = &request.channel else {
            return Err("not an STK request".to_owned());
        };
        let in_flight = self.stk.get(&request.msisdn).is_some_and(|ids| {
            ids.iter()
                .any(|id| self.entries.get(id).is_some_and(|e| e.key == *counter))
        });
        if in_flight {
            return Err("an STK push with this counter is already in flight".to_owned());
        }
        Ok(StkParams {
            msisdn: request.msisdn.clone(),
            originator: self.config.ota_originator.clone(),
            secrets: secrets.clone(),
            counter: *counter,
            txid: nonce.txid,
            challenge: nonce.challenge,
            loa: request.loa,
            expiry_secs: request.expiry_secs,
            rp_name: request.rp_name.clone(),
            consent: request.consent.clone(),
            binding_code: request.binding_code.clone(),
            // Only distinct among concurrent concatenated pushes to one handset.
            concat_ref: (*counter & 0xFF) as u8,
            grace: self.config.stk_grace,
        })
    }

    fn register(
        &mut self,
        now: Instant,
        auth: AuthId,
        request: AuthRequest,
        machine: Machine,
        key: u64,
    ) {
        match &machine {
            Machine::Ussd(_) => {
                self.ussd.insert((request.msisdn.clone(), key as u16), auth);
            }
            Machine::Stk(_) => self
                .stk
                .entry(request.msisdn.clone())
                .or_default()
                .push(auth),
        }
        self.entries.insert(
            auth,
            Entry {
                machine,
                loa: request.loa,
                msisdn: request.msisdn,
                key,
                expires_at: now + Duration::from_secs(u64::from(request.expiry_secs)),
                timer: None,
                pin_pending: false,
                prompt_accepted: false,
                result_sent: false,
                message_ids: Vec::new(),
            },
        );
        self.drive(now, auth);
    }

    /// Ends every authorization at once (the shell is stopping): each gets
    /// [`AuthResult::Unavailable`] unless it has its result already, then `Released`.
    pub fn abandon_all(&mut self) {
        let mut ids: Vec<AuthId> = self.entries.keys().copied().collect();
        ids.sort_unstable();
        for auth in ids {
            if let Some(entry) = self.entries.get_mut(&auth) {
                if !entry.result_sent {
                    entry.result_sent = true;
                    self.outputs.push_back(RouterOutput::Result {
                        auth,
                        result: AuthResult::Unavailable,
                    });
                }
            }
            self.remove(auth);
        }
        self.early_receipts.clear();
    }

    /// One event from a bind.
    pub fn handle_event(&mut self, now: Instant, event: BindEvent) {
        match event {
            BindEvent::Accepted { id, message_id } => {
                if let Some(auth) = self.submits.remove(&id) {
                    self.submit_result(now, auth, Ok(()));
                    self.note_message_id(now, auth, &message_id);
                }
            }
            BindEvent::Failed { id, reason } => {
                if let Some(auth) = self.submits.remove(&id) {
                    self.submit_result(now, auth, Err(reason));
                }
            }
            // An answer owed is sent when its `ack` drops, after this: the owner that defers
            // answers takes the `ack` out first.
            BindEvent::Mo(deliver) | BindEvent::MoAwaitingAck { deliver, .. } => {
                if is_delivery_receipt(u8::from(deliver.esm_class)) {
                    self.handle_receipt(now, &deliver);
                } else if deliver.protocol_id == 0x7F {
                    self.handle_sms_pp(now, &deliver);
                } else {
                    self.handle_ussd(now, &deliver, false);
                }
            }
            BindEvent::Bound { .. } => tracing::info!("bind up"),
            BindEvent::Disconnected { reason } => tracing::warn!(%reason, "bind down"),
            BindEvent::Throttled { .. } | BindEvent::Stopped => {}
        }
    }

    /// The caller has ended authorization `auth` itself (the relying party cancelled it, or its
    /// time ran out in the gateway) and awaits nothing more: a USSD dialog is released with a
    /// short "Cancelled" or "Expired" screen (the latter when its time is up, give or take a
    /// second) and nothing it receives afterwards is confirmed, checked or counted; an STK push
    /// is forgotten (its late proof matches nothing). No result is output for it.
    pub fn end_early(&mut self, now: Instant, auth: AuthId) {
        let Some(entry) = self.entries.get_mut(&auth) else {
            return;
        };
        entry.result_sent = true;
        entry.pin_pending = false;
        match &mut entry.machine {
            Machine::Ussd(d) => {
                let screen = if now + Duration::from_secs(1) >= entry.expires_at {
                    super::ussd::SCREEN_EXPIRED
                } else {
                    super::ussd::SCREEN_CANCELLED
                };
                d.end(now, screen);
                self.drive(now, auth);
            }
            Machine::Stk(_) => self.remove(auth),
        }
    }

    /// The verdict on the PIN of [`RouterOutput::VerifyPin`].
    pub fn handle_pin_verdict(&mut self, now: Instant, auth: AuthId, right: bool) {
        let Some(entry) = self.entries.get_mut(&auth) else {
            return;
        };
        let Machine::Ussd(dialog) = &mut entry.machine else {
            return;
        };
        if !std::mem::take(&mut entry.pin_pending) {
            return;
        }
        dialog.conclude(now, right);
        let result = if right {
            AuthResult::Approved {
                loa: Loa::Loa3,
                proof: None,
            }
        } else {
            AuthResult::WrongPin
        };
        self.send_result(auth, result);
        self.drive(now, auth);
    }

    /// Wakes the machines whose deadline has come, and ages the reassembly buffers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.reassembler.handle_timeout(now);
        self.prune_early_receipts(now);
        while let Some(&(at, auth)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, auth));
            if let Some(entry) = self.entries.get_mut(&auth) {
                entry.timer = None;
                match &mut entry.machine {
                    Machine::Ussd(d) => d.handle_timeout(now),
                    Machine::Stk(s) => s.handle_timeout(now),
                }
            }
            self.drive(now, auth);
        }
    }

    /// Answers ignored so far.
    pub fn ignored_answers(&self) -> IgnoredAnswers {
        self.ignored
    }

    /// The earliest machine deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// What the shell must do next, in order.
    pub fn poll_output(&mut self) -> Option<RouterOutput> {
        self.outputs.pop_front()
    }

    fn key_range(&self) -> u32 {
        session_key_range(&self.config.dialect)
    }

    /// A session key not used by another open dialog with the same MSISDN.
    fn allocate_key(&mut self, msisdn: &str) -> Option<u16> {
        let range = self.key_range();
        let mut probe = (msisdn.to_owned(), 0u16);
        for _ in 0..range {
            self.next_key = (self.next_key + 1) % range;
            probe.1 = u16::try_from(self.next_key).ok()?;
            if !self.ussd.contains_key(&probe) {
                return Some(probe.1);
            }
        }
        None
    }

    fn ussd_dialog(
        &mut self,
        now: Instant,
        request: &AuthRequest,
    ) -> Result<(UssdDialog, u16), String> {
        if request.loa == Loa::Loa3 && !self.config.ussd_pin_check {
            return Err("USSD LoA3 needs a PIN verifier".into());
        }
        let key = match request.ussd_key {
            Some(key) if u32::from(key) >= self.key_range() => {
                return Err(format!(
                    "USSD session key {key} is out of the dialect's range"
                ))
            }
            Some(key) if self.ussd.contains_key(&(request.msisdn.clone(), key)) => {
                return Err("this USSD session key is in use for this MSISDN".to_owned())
            }
            Some(key) => key,
            None => self
                .allocate_key(&request.msisdn)
                .ok_or_else(|| "no free USSD session key for this MSISDN".to_owned())?,
        };
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
        Ok((dialog, key))
    }

    fn handle_ussd(&mut self, now: Instant, deliver: &DeliverSm, retried: bool) {
        match self.config.dialect.parse_mo(deliver) {
            Ok(mut mo) => {
                mo.msisdn = normalized_msisdn(&mo.msisdn);
                let Some(&auth) = self.ussd.get(&(mo.msisdn.clone(), mo.session_key)) else {
                    if self.config.forward_strays && !retried {
                        self.outputs
                            .push_back(RouterOutput::Stray(StrayAnswer::Ussd(Box::new(
                                deliver.clone(),
                            ))));
                        return;
                    }
                    tracing::debug!("USSD MO for no open dialog");
                    self.ignored.ussd += 1;
                    return;
                };
                if let Some(Entry {
                    machine: Machine::Ussd(d),
                    ..
                }) = self.entries.get_mut(&auth)
                {
                    if !d.handle_mo(now, &mo) {
                        // Late (after the end) or a duplicate: it changes nothing.
                        self.ignored.ussd += 1;
                    }
                    self.drive(now, auth);
                }
            }
            Err(e) => tracing::debug!(error = %e, "MO that is not a USSD answer"),
        }
    }

    /// Remembers that SMS-PP segment `message_id` belongs to push `auth`, and applies a
    /// failure receipt that came before it.
    fn note_message_id(&mut self, now: Instant, auth: AuthId, message_id: &str) {
        let id = normalize_message_id(message_id);
        if id.is_empty() {
            return;
        }
        let Some(entry) = self.entries.get_mut(&auth) else {
            return;
        };
        if !matches!(&entry.machine, Machine::Stk(s) if s.poll_timeout().is_some()) {
            // Already ended (or not a push): no receipt can change it.
            return;
        }
        entry.message_ids.push(id.clone());
        self.receipt_ids.insert(id.clone(), auth);
        self.prune_early_receipts(now);
        if let Some(at) = self.early_receipts.iter().position(|(_, i, _)| *i == id) {
            if let Some((_, _, reason)) = self.early_receipts.remove(at) {
                self.fail_delivery(now, auth, reason);
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
        match self.receipt_ids.get(&id).copied() {
            Some(auth) => self.fail_delivery(now, auth, reason),
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

    fn fail_delivery(&mut self, now: Instant, auth: AuthId, reason: String) {
        if let Some(Entry {
            machine: Machine::Stk(s),
            ..
        }) = self.entries.get_mut(&auth)
        {
            if s.handle_delivery_failure(now, reason) {
                self.drive(now, auth);
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
        let msisdn = normalized_msisdn(&deliver.source_addr.to_string());
        self.handle_packet(now, msisdn, packet, false);
    }

    /// A reassembled PoR `packet` from `msisdn`: to the push it answers.
    fn handle_packet(&mut self, now: Instant, msisdn: String, packet: Vec<u8>, retried: bool) {
        let candidates = self.stk.get(&msisdn).cloned().unwrap_or_default();
        for auth in candidates {
            if let Some(Entry {
                machine: Machine::Stk(s),
                ..
            }) = self.entries.get_mut(&auth)
            {
                if s.handle_por(now, &msisdn, &packet) {
                    self.drive(now, auth);
                    return;
                }
            }
        }
        if self.config.forward_strays && !retried {
            self.outputs
                .push_back(RouterOutput::Stray(StrayAnswer::Stk { msisdn, packet }));
            return;
        }
        tracing::debug!("PoR for no open push");
        self.ignored.stk += 1;
    }

    /// An answer handed back after [`RouterOutput::Stray`] (the caller has resumed what it could
    /// belong to): matched now, or counted as ignored.
    pub fn handle_stray(&mut self, now: Instant, answer: StrayAnswer) {
        match answer {
            StrayAnswer::Ussd(deliver) => self.handle_ussd(now, &deliver, true),
            StrayAnswer::Stk { msisdn, packet } => self.handle_packet(now, msisdn, packet, true),
        }
    }

    /// The authorization ended on another node: its dialog or push is dropped without a
    /// release screen and without a result.
    pub fn forget(&mut self, now: Instant, auth: AuthId) {
        let Some(entry) = self.entries.get_mut(&auth) else {
            return;
        };
        entry.result_sent = true;
        entry.pin_pending = false;
        let _ = now;
        self.remove(auth);
    }

    fn submit_result(&mut self, now: Instant, auth: AuthId, result: Result<(), SubmitFailure>) {
        let Some(entry) = self.entries.get_mut(&auth) else {
            return;
        };
        if result.is_ok() && !entry.prompt_accepted {
            entry.prompt_accepted = true;
            self.outputs
                .push_back(RouterOutput::PromptAccepted { auth });
        }
        match &mut entry.machine {
            Machine::Ussd(d) => d.handle_submit_result(now, result),
            Machine::Stk(s) => s.handle_submit_result(now, result),
        }
        self.drive(now, auth);
    }

    fn send_result(&mut self, auth: AuthId, result: AuthResult) {
        if let Some(entry) = self.entries.get_mut(&auth) {
            if !entry.result_sent {
                entry.result_sent = true;
                self.outputs
                    .push_back(RouterOutput::Result { auth, result });
            }
        }
    }

    /// Takes the machine's result and what it queued, re-arms its timer, and removes it when
    /// it is done.
    fn drive(&mut self, now: Instant, auth: AuthId) {
        let Some(entry) = self.entries.get_mut(&auth) else {
            return;
        };
        let mut batch: Vec<SubmitSm> = Vec::new();
        let mut result = None;
        let finished = match &mut entry.machine {
            Machine::Ussd(d) => {
                match d.poll_result() {
                    Some(UssdOutcome::PinEntered(pin)) => {
                        entry.pin_pending = true;
                        self.outputs.push_back(RouterOutput::VerifyPin {
                            auth,
                            msisdn: entry.msisdn.clone(),
                            pin,
                        });
                    }
                    Some(outcome) => {
                        result = Some(match outcome {
                            UssdOutcome::Approved => AuthResult::Approved {
                                loa: entry.loa,
                                proof: None,
                            },
                            UssdOutcome::Denied => AuthResult::Denied,
                            UssdOutcome::Expired => AuthResult::Expired,
                            UssdOutcome::Aborted => AuthResult::Aborted,
                            UssdOutcome::DeliveryError(f) => AuthResult::DeliveryError(f),
                            UssdOutcome::PinEntered(_) => AuthResult::WrongPin,
                        })
                    }
                    None => {}
                }
                batch.extend(std::iter::from_fn(|| d.poll_transmit()));
                d.is_finished() && !entry.pin_pending
            }
            Machine::Stk(s) => {
                if let Some(outcome) = s.poll_result() {
                    result = Some(match outcome {
                        StkOutcome::Approved { loa, proof } => AuthResult::Approved {
                            loa,
                            proof: Some(proof),
                        },
                        StkOutcome::Denied => AuthResult::Denied,
                        StkOutcome::Expired => AuthResult::Expired,
                        StkOutcome::HandsetTimeout => AuthResult::HandsetTimeout,
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
                    });
                }
                batch.extend(std::iter::from_fn(|| s.poll_transmit()));
                s.is_finished()
            }
        };
        let next_timer = entry.machine.poll_timeout();
        let old_timer = std::mem::replace(&mut entry.timer, next_timer);
        let (prompt_unsent, expires_at) = (!entry.prompt_accepted, entry.expires_at);
        let result = result.map(|r| match r {
            // Held back by the queue for lack of the user's time, not failed by the network.
            AuthResult::DeliveryError(SubmitFailure::DeadlineExpired)
                if prompt_unsent && now + self.config.min_answer_time >= expires_at =>
            {
                AuthResult::NotSentInTime
            }
            r => r,
        });
        if let Some(result) = result {
            self.send_result(auth, result);
        }
        if old_timer != next_timer {
            if let Some(at) = old_timer {
                self.timers.remove(&(at, auth));
            }
            if let Some(at) = next_timer {
                self.timers.insert((at, auth));
            }
        }
        let mut deadline = now + self.config.submit_timeout;
        if prompt_unsent {
            // The prompt itself: worth sending only while the user has time to answer it.
            let latest = expires_at
                .checked_sub(self.config.min_answer_time)
                .unwrap_or(now);
            deadline = deadline.min(latest.max(now));
        }
        let deadline = Some(deadline);
        for submit_sm in batch {
            self.next_submit += 1;
            let id = self.next_submit;
            self.submits.insert(id, auth);
            self.outputs.push_back(RouterOutput::Submit {
                auth,
                id,
                request: Box::new(SubmitRequest {
                    submit_sm,
                    deadline,
                }),
            });
        }
        if finished {
            self.remove(auth);
        }
    }

    fn remove(&mut self, auth: AuthId) {
        let Some(entry) = self.entries.remove(&auth) else {
            return;
        };
        if let Some(at) = entry.timer {
            self.timers.remove(&(at, auth));
        }
        match entry.machine {
            Machine::Ussd(_) => {
                if let Ok(key) = u16::try_from(entry.key) {
                    self.ussd.remove(&(entry.msisdn, key));
                }
            }
            Machine::Stk(_) => {
                if let Some(ids) = self.stk.get_mut(&entry.msisdn) {
                    ids.retain(|id| *id != auth);
                    if ids.is_empty() {
                        self.stk.remove(&entry.msisdn);
                    }
                }
            }
        }
        for id in entry.message_ids {
            if self.receipt_ids.get(&id) == Some(&auth) {
                self.receipt_ids.remove(&id);
            }
        }
        // Submissions still out keep their ids until their verdict comes; it finds no entry.
        self.outputs.push_back(RouterOutput::Released { auth });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rusmpp::tlvs::{MessageDeliveryRequestTlvValue, TlvValue};
    use rusmpp::types::{COctetString, OctetString};
    use rusmpp::values::{DataCoding, EsmClass, ItsSessionInfo, UssdServiceOp};
    use std::str::FromStr;

    const MSISDN: &str = "48600100200";

    fn config() -> RouterConfig {
        RouterConfig {
            dialect: Dialect::spec_default(),
            service_code: "*123#".into(),
            ota_originator: "4860000".into(),
            submit_timeout: Duration::from_secs(10),
            min_answer_time: Duration::from_secs(3),
            stk_grace: Duration::from_secs(15),
            max_pending_por: 16,
            ussd_pin_check: true,
            forward_strays: false,
        }
    }

    const NONCE: StkNonce = StkNonce {
        txid: [1; TXID_LEN],
        challenge: [2; CHALLENGE_LEN],
    };

    fn request(channel: AuthChannel, loa: Loa) -> AuthRequest {
        AuthRequest {
            msisdn: MSISDN.into(),
            loa,
            channel,
            rp_name: "Portal".into(),
            consent: "Log in?".into(),
            binding_code: "AB12".into(),
            expiry_secs: 60,
            ussd_key: None,
            stk_nonce: None,
            ended_elsewhere: None,
        }
    }

    fn stk(counter: u64) -> AuthChannel {
        AuthChannel::Stk {
            secrets: CardSecrets::derive(1, 5),
            counter,
        }
    }

    fn outputs(r: &mut Router) -> Vec<RouterOutput> {
        std::iter::from_fn(|| r.poll_output()).collect()
    }

    /// The submissions among `outputs`, as (auth, id, USSD session key if any).
    fn submits(outputs: &[RouterOutput]) -> Vec<(AuthId, SubmitId, Option<u8>)> {
        outputs
            .iter()
            .filter_map(|o| match o {
                RouterOutput::Submit { auth, id, request } => {
                    let key = request
                        .submit_sm
                        .tlvs()
                        .iter()
                        .find_map(|t| match t.value() {
                            Some(TlvValue::ItsSessionInfo(i)) => Some(i.session_number),
                            _ => None,
                        });
                    Some((*auth, *id, key))
                }
                _ => None,
            })
            .collect()
    }

    fn results(outputs: &[RouterOutput]) -> Vec<(AuthId, AuthResult)> {
        outputs
            .iter()
            .filter_map(|o| match o {
                RouterOutput::Result { auth, result } => Some((*auth, result.clone())),
                _ => None,
            })
            .collect()
    }

    fn accepted(id: SubmitId, message_id: &str) -> BindEvent {
        BindEvent::Accepted {
            id,
            message_id: message_id.into(),
        }
    }

    fn ussd_answer(key: u8, text: &str) -> BindEvent {
        ussd_answer_from(MSISDN, key, text)
    }

    /// A USSD answer whose `source_addr` is `source` as the SMSC wrote it.
    fn ussd_answer_from(source: &str, key: u8, text: &str) -> BindEvent {
        BindEvent::Mo(Box::new(
            DeliverSm::builder()
                .source_addr(COctetString::from_str(source).unwrap())
                .data_coding(DataCoding::from(0x00))
                .short_message(OctetString::from_slice(text.as_bytes()).unwrap())
                .tlvs(vec![
                    MessageDeliveryRequestTlvValue::UssdServiceOp(UssdServiceOp::from(18)),
                    MessageDeliveryRequestTlvValue::ItsSessionInfo(ItsSessionInfo::new(key, 0)),
                ])
                .build(),
        ))
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

    /// Starts LoA2 STK push 1; its one segment is submission 1.
    fn start_push(r: &mut Router, now: Instant) {
        r.start(now, 1, request(stk(7), Loa::Loa2), NONCE).unwrap();
        assert_eq!(submits(&outputs(r)), vec![(1, 1, None)]);
    }

    const UNDELIVERED: AuthResult = AuthResult::DeliveryError(SubmitFailure::Undeliverable);

    fn submitted(outputs: &[RouterOutput]) -> impl Iterator<Item = &SubmitRequest> {
        outputs.iter().filter_map(|o| match o {
            RouterOutput::Submit { request, .. } => Some(request.as_ref()),
            _ => None,
        })
    }

    fn deadlines(outputs: &[RouterOutput]) -> Vec<Option<Instant>> {
        submitted(outputs).map(|r| r.deadline).collect()
    }

    #[test]
    fn a_prompt_must_leave_while_the_user_can_still_answer_and_later_screens_get_the_submit_time() {
        let t0 = Instant::now();
        let mut r = Router::new(config());
        let short = AuthRequest {
            expiry_secs: 5,
            ..request(AuthChannel::Ussd, Loa::Loa2)
        };
        r.start(t0, 10, short, NONCE).unwrap();
        let out = outputs(&mut r);
        // 5 s to live, 3 s kept for the answer: the prompt must be out within 2 s.
        assert_eq!(deadlines(&out), vec![Some(t0 + Duration::from_secs(2))]);
        let (_, id, key) = submits(&out)[0];
        let t1 = t0 + Duration::from_secs(1);
        r.handle_event(t1, accepted(id, "a"));
        outputs(&mut r);
        r.handle_event(t1, ussd_answer(key.unwrap(), "1"));
        let out = outputs(&mut r);
        assert_eq!(
            deadlines(&out),
            vec![Some(t1 + Duration::from_secs(10))],
            "the closing screen is not held to the prompt's limit"
        );
    }

    #[test]
    fn a_prompt_held_back_past_the_answer_time_is_not_sent_in_time_and_an_early_one_a_delivery_error(
    ) {
        let t0 = Instant::now();
        let mut r = Router::new(config());
        let short = AuthRequest {
            expiry_secs: 5,
            ..request(AuthChannel::Ussd, Loa::Loa2)
        };
        r.start(t0, 10, short, NONCE).unwrap();
        r.start(t0, 11, request(AuthChannel::Ussd, Loa::Loa2), NONCE)
            .unwrap();
        let out = submits(&outputs(&mut r));
        let failed = |id| BindEvent::Failed {
            id,
            reason: SubmitFailure::DeadlineExpired,
        };
        r.handle_event(t0 + Duration::from_secs(2), failed(out[0].1));
        assert_eq!(
            results(&outputs(&mut r)),
            vec![(10, AuthResult::NotSentInTime)]
        );
        // 50 s of the user's time left: the submit timeout passed, the network took too few.
        r.handle_event(t0 + Duration::from_secs(10), failed(out[1].1));
        assert_eq!(
            results(&outputs(&mut r)),
            vec![(
                11,
                AuthResult::DeliveryError(SubmitFailure::DeadlineExpired)
            )]
        );
    }

    #[test]
    fn an_answer_from_plus_or_double_zero_forms_of_the_number_matches_its_dialog() {
        for form in [
            format!("+{MSISDN}"),
            format!("00{MSISDN}"),
            "+48 600-100-200".to_owned(),
        ] {
            let t0 = Instant::now();
            let mut r = Router::new(config());
            r.start(t0, 10, request(AuthChannel::Ussd, Loa::Loa2), NONCE)
                .unwrap();
            let out = submits(&outputs(&mut r));
            r.handle_event(t0, accepted(out[0].1, "a"));
            outputs(&mut r);
            r.handle_event(t0, ussd_answer_from(&form, out[0].2.unwrap(), "1"));
            assert_eq!(
                results(&outputs(&mut r)),
                vec![(
                    10,
                    AuthResult::Approved {
                        loa: Loa::Loa2,
                        proof: None
                    }
                )],
                "{form}"
            );
        }
    }

    fn texts_of(outputs: &[RouterOutput]) -> Vec<String> {
        submitted(outputs)
            .map(|r| String::from_utf8_lossy(r.submit_sm.short_message().as_ref()).into_owned())
            .collect()
    }

    #[test]
    fn a_dialog_ended_by_its_caller_is_released_and_a_late_answer_changes_nothing() {
        let t0 = Instant::now();
        let mut r = Router::new(config());
        r.start(t0, 10, request(AuthChannel::Ussd, Loa::Loa2), NONCE)
            .unwrap();
        r.start(t0, 11, request(AuthChannel::Ussd, Loa::Loa3), NONCE)
            .unwrap();
        let out = submits(&outputs(&mut r));
        for (_, id, _) in &out {
            r.handle_event(t0, accepted(*id, "m"));
        }
        outputs(&mut r);
        // The relying party cancels the first 5 s in; the second runs out of time (60 s).
        let t5 = t0 + Duration::from_secs(5);
        r.end_early(t5, 10);
        let released = outputs(&mut r);
        assert_eq!(texts_of(&released), ["Cancelled"]);
        assert!(results(&released).is_empty(), "its caller is gone");
        r.handle_event(t5, ussd_answer(out[0].2.unwrap(), "1"));
        let after = outputs(&mut r);
        assert!(
            after.is_empty(),
            "a \"1\" after the cancel confirmed or decided something: {after:?}"
        );
        let t60 = t0 + Duration::from_secs(60);
        r.end_early(t60, 11);
        assert_eq!(texts_of(&outputs(&mut r)), ["Expired"]);
        r.handle_event(t60, ussd_answer(out[1].2.unwrap(), "1234"));
        let after = outputs(&mut r);
        assert!(
            !after
                .iter()
                .any(|o| matches!(o, RouterOutput::VerifyPin { .. })),
            "a PIN after the end must not be checked (nor counted): {after:?}"
        );
        assert!(after.is_empty(), "{after:?}");
        assert_eq!(
            r.ignored_answers(),
            IgnoredAnswers { ussd: 2, stk: 0 },
            "both late answers counted"
        );
    }

    #[test]
    fn a_ussd_answer_with_the_wrong_sequence_number_is_ignored_and_counted() {
        let t0 = Instant::now();
        let mut r = Router::new(config());
        r.start(t0, 1, request(AuthChannel::Ussd, Loa::Loa2), NONCE)
            .unwrap();
        let out = submits(&outputs(&mut r));
        let (_, id, key) = out[0];
        r.handle_event(t0, accepted(id, "m"));
        outputs(&mut r);
        let numbered = |sequence: u8| {
            let BindEvent::Mo(mut deliver) = ussd_answer(key.unwrap(), "1") else {
                unreachable!()
            };
            deliver.set_tlvs(vec![
                MessageDeliveryRequestTlvValue::UssdServiceOp(UssdServiceOp::from(18)),
                MessageDeliveryRequestTlvValue::ItsSessionInfo(ItsSessionInfo::new(
                    key.unwrap(),
                    sequence << 1,
                )),
            ]);
            BindEvent::Mo(deliver)
        };
        // Prompt 1 is answered by message 2 (or 1, echoed); a "1" numbered 4 is a stray of
        // another step.
        r.handle_event(t0, numbered(4));
        assert!(results(&outputs(&mut r)).is_empty());
        assert_eq!(r.ignored_answers(), IgnoredAnswers { ussd: 1, stk: 0 });
        r.handle_event(t0, numbered(2));
        assert_eq!(
            results(&outputs(&mut r)),
            [(
                1,
                AuthResult::Approved {
                    loa: Loa::Loa2,
                    proof: None
                }
            )]
        );
    }

    #[test]
    fn ussd_answer_is_routed_by_msisdn_and_session_key_and_ends_with_one_result() {
        let t0 = Instant::now();
        let mut r = Router::new(config());
        r.start(t0, 10, request(AuthChannel::Ussd, Loa::Loa2), NONCE)
            .unwrap();
        r.start(t0, 11, request(AuthChannel::Ussd, Loa::Loa2), NONCE)
            .unwrap();
        let out = submits(&outputs(&mut r));
        let (k10, k11) = (out[0].2.unwrap(), out[1].2.unwrap());
        assert_ne!(k10, k11, "two open dialogs of one MSISDN never share a key");
        r.handle_event(t0, accepted(out[0].1, "a"));
        r.handle_event(t0, accepted(out[1].1, "b"));
        assert_eq!(
            outputs(&mut r),
            vec![
                RouterOutput::PromptAccepted { auth: 10 },
                RouterOutput::PromptAccepted { auth: 11 }
            ]
        );
        // "2" on the second dialog's key denies the second, and only it.
        r.handle_event(t0, ussd_answer(k11, "2"));
        let out = outputs(&mut r);
        assert_eq!(results(&out), vec![(11, AuthResult::Denied)]);
        assert_eq!(submits(&out).len(), 1, "the closing screen");
        // A duplicate of the answer changes nothing.
        r.handle_event(t0, ussd_answer(k11, "2"));
        assert!(results(&outputs(&mut r)).is_empty());
        r.handle_event(t0, ussd_answer(k10, "1"));
        let out = outputs(&mut r);
        assert_eq!(
            results(&out),
            vec![(
                10,
                AuthResult::Approved {
                    loa: Loa::Loa2,
                    proof: None
                }
            )]
        );
    }

    #[test]
    fn a_resumed_dialog_is_matched_by_its_stored_key_and_nothing_is_sent_before_the_answer() {
        let t0 = Instant::now();
        let mut r = Router::new(config());
        let mut req = request(AuthChannel::Ussd, Loa::Loa2);
        // Without its key a dialog cannot be taken over.
        assert!(r.resume(t0, 1, req.clone()).is_err());
        req.ussd_key = Some(42);
        r.resume(t0, 1, req.clone()).unwrap();
        assert!(outputs(&mut r).is_empty(), "no prompt is sent again");
        // A new dialog asking for the same key of the same MSISDN is refused.
        assert!(r.start(t0, 2, req, NONCE).is_err());
        r.handle_event(t0, ussd_answer(41, "1"));
        assert!(results(&outputs(&mut r)).is_empty());
        r.handle_event(t0, ussd_answer(42, "1"));
        let out = outputs(&mut r);
        assert_eq!(
            results(&out),
            vec![(
                1,
                AuthResult::Approved {
                    loa: Loa::Loa2,
                    proof: None
                }
            )]
        );
        assert_eq!(submits(&out).len(), 1, "the closing screen");
    }

    #[test]
    fn a_chosen_key_is_used_and_checked_against_the_dialect() {
        let t0 = Instant::now();
        let mut r = Router::new(config());
        let mut req = request(AuthChannel::Ussd, Loa::Loa2);
        req.ussd_key = Some(0x1FF);
        assert!(
            r.start(t0, 1, req.clone(), NONCE).is_err(),
            "8-bit keys only"
        );
        req.ussd_key = Some(0x42);
        r.start(t0, 1, req, NONCE).unwrap();
        assert_eq!(submits(&outputs(&mut r))[0].2, Some(0x42));
    }

    #[test]
    fn dialog_is_released_once_its_closing_screen_is_handed_over() {
        let t0 = Instant::now();
        let mut r = Router::new(config());
        r.start(t0, 1, request(AuthChannel::Ussd, Loa::Loa2), NONCE)
            .unwrap();
        let first = submits(&outputs(&mut r))[0];
        r.handle_event(t0, accepted(first.1, "m"));
        outputs(&mut r);
        r.handle_event(t0, ussd_answer(first.2.unwrap(), "1"));
        let out = outputs(&mut r);
        assert!(matches!(out[0], RouterOutput::Result { auth: 1, .. }));
        assert!(matches!(out[1], RouterOutput::Submit { auth: 1, .. }));
        assert_eq!(out[2], RouterOutput::Released { auth: 1 });
        assert_eq!(out.len(), 3);
        assert!(r.is_empty());
        assert_eq!(r.poll_timeout(), None);
        // The closing screen's verdict finds nothing, and changes nothing.
        let closing = submits(&out)[0];
        r.handle_event(t0, accepted(closing.1, "n"));
        assert!(outputs(&mut r).is_empty());
    }

    #[test]
    fn pin_typed_over_ussd_is_checked_outside_and_the_verdict_ends_the_dialog() {
        let t0 = Instant::now();
        let mut r = Router::new(config());
        r.start(t0, 1, request(AuthChannel::Ussd, Loa::Loa3), NONCE)
            .unwrap();
        let first = submits(&outputs(&mut r))[0];
        r.handle_event(t0, accepted(first.1, "m"));
        outputs(&mut r);
        r.handle_event(t0, ussd_answer(first.2.unwrap(), "4821"));
        assert_eq!(
            outputs(&mut r),
            vec![RouterOutput::VerifyPin {
                auth: 1,
                msisdn: MSISDN.into(),
                pin: "4821".into()
            }]
        );
        r.handle_pin_verdict(t0, 1, false);
        let out = outputs(&mut r);
        assert_eq!(results(&out), vec![(1, AuthResult::WrongPin)]);
        // A verdict nobody asked for is ignored.
        r.handle_pin_verdict(t0, 1, true);
        assert!(results(&outputs(&mut r)).is_empty());
    }

    #[test]
    fn pin_output_never_shows_the_pin_in_debug() {
        let o = RouterOutput::VerifyPin {
            auth: 3,
            msisdn: MSISDN.into(),
            pin: "4821".into(),
        };
        let shown = format!("{o:?}");
        assert!(
            !shown.contains("4821") && !shown.contains(MSISDN),
            "{shown}"
        );
    }

    #[test]
    fn ussd_loa3_without_a_pin_check_is_refused_at_the_start() {
        let mut r = Router::new(RouterConfig {
            ussd_pin_check: false,
            forward_strays: false,
            ..config()
        });
        let err = r
            .start(
                Instant::now(),
                1,
                request(AuthChannel::Ussd, Loa::Loa3),
                NONCE,
            )
            .unwrap_err();
        assert!(err.contains("PIN verifier"), "{err}");
        assert!(outputs(&mut r).is_empty());
        assert!(r.is_empty());
    }

    #[test]
    fn a_second_push_with_the_same_counter_is_refused() {
        let t0 = Instant::now();
        let mut r = Router::new(config());
        start_push(&mut r, t0);
        let err = r
            .start(t0, 2, request(stk(7), Loa::Loa2), NONCE)
            .unwrap_err();
        assert!(err.contains("counter"), "{err}");
        r.start(t0, 3, request(stk(8), Loa::Loa2), NONCE).unwrap();
    }

    #[test]
    fn failure_receipt_ends_the_push_as_a_delivery_failure() {
        let t0 = Instant::now();
        let mut r = Router::new(config());
        start_push(&mut r, t0);
        r.handle_event(t0, accepted(1, "0000000042"));
        assert_eq!(r.receipt_ids.len(), 1);
        // Another message's failure, and this message's success: the push goes on.
        r.handle_event(t0, undeliv("0000000043"));
        r.handle_event(
            t0,
            receipt("id:0000000042 sub:001 dlvrd:001 stat:DELIVRD err:000 text:"),
        );
        assert_eq!(
            outputs(&mut r),
            vec![RouterOutput::PromptAccepted { auth: 1 }]
        );
        // Its failure, id written without the padding: ended, and its id forgotten.
        r.handle_event(t0, undeliv("42"));
        assert_eq!(
            outputs(&mut r),
            vec![
                RouterOutput::Result {
                    auth: 1,
                    result: UNDELIVERED
                },
                RouterOutput::Released { auth: 1 }
            ]
        );
        assert!(r.is_empty());
        assert!(r.receipt_ids.is_empty());
        assert!(r.stk.is_empty());
    }

    #[test]
    fn unrelated_receipt_leaves_the_push_running() {
        let t0 = Instant::now();
        let mut r = Router::new(config());
        start_push(&mut r, t0);
        r.handle_event(t0, accepted(1, "1F"));
        r.handle_event(t0, undeliv("2F"));
        r.handle_event(t0, receipt("garbage without fields"));
        assert!(results(&outputs(&mut r)).is_empty());
        assert_eq!(r.len(), 1);
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(75)));
    }

    #[test]
    fn failure_receipt_before_the_submit_sm_resp_still_ends_the_push() {
        let t0 = Instant::now();
        let mut r = Router::new(config());
        start_push(&mut r, t0);
        r.handle_event(t0, undeliv("00ab"));
        assert!(outputs(&mut r).is_empty());
        r.handle_event(t0, accepted(1, "AB"));
        assert_eq!(results(&outputs(&mut r)), vec![(1, UNDELIVERED)]);
        assert!(r.early_receipts.is_empty());
        assert!(r.is_empty());
    }

    #[test]
    fn early_receipts_are_bounded_and_age_out() {
        let t0 = Instant::now();
        let mut r = Router::new(config());
        for i in 0..MAX_EARLY_RECEIPTS + 10 {
            r.handle_event(t0, undeliv(&i.to_string()));
        }
        assert_eq!(r.early_receipts.len(), MAX_EARLY_RECEIPTS);
        start_push(&mut r, t0);
        let later = t0 + config().stk_grace;
        r.handle_event(later, accepted(1, "100"));
        // The receipt for 100 is older than the grace: no longer applied.
        assert!(results(&outputs(&mut r)).is_empty());
        assert!(r.early_receipts.is_empty());
    }

    #[test]
    fn a_machine_is_woken_at_its_own_deadline_and_others_are_left_alone() {
        let t0 = Instant::now();
        let mut r = Router::new(config());
        // Push 1 expires 75 s on (60 s + 15 s grace); dialog 2's step timer is the dialect's.
        start_push(&mut r, t0);
        r.start(t0, 2, request(AuthChannel::Ussd, Loa::Loa2), NONCE)
            .unwrap();
        let sent = submits(&outputs(&mut r));
        for (_, id, _) in &sent {
            r.handle_event(t0, accepted(*id, &format!("m{id}")));
        }
        outputs(&mut r);
        let first = r.poll_timeout().unwrap();
        assert_eq!(r.timers.len(), 2);
        r.handle_timeout(first - Duration::from_millis(1));
        assert!(outputs(&mut r).is_empty(), "nothing is due early");
        r.handle_timeout(first);
        let ended = results(&outputs(&mut r));
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].1, AuthResult::Expired);
        // The other one is still armed, once.
        assert_eq!(r.timers.len(), 1);
        assert!(r.poll_timeout().unwrap() > first);
    }

    #[test]
    fn submissions_whose_verdict_comes_after_the_release_are_ignored() {
        let t0 = Instant::now();
        let mut r = Router::new(config());
        start_push(&mut r, t0);
        r.abandon_all();
        assert_eq!(
            outputs(&mut r),
            vec![
                RouterOutput::Result {
                    auth: 1,
                    result: AuthResult::Unavailable
                },
                RouterOutput::Released { auth: 1 }
            ]
        );
        r.handle_event(t0, accepted(1, "late"));
        r.handle_event(t0, undeliv("late"));
        assert!(outputs(&mut r).is_empty());
        assert!(r.receipt_ids.is_empty());
    }

    #[test]
    fn every_start_ends_with_exactly_one_result_then_one_release() {
        // A mixed run: answers, failures and timeouts in an arbitrary but fixed order.
        let t0 = Instant::now();
        let mut r = Router::new(config());
        let mut all = Vec::new();
        for auth in 1..=40u64 {
            let channel = if auth % 2 == 0 {
                AuthChannel::Ussd
            } else {
                stk(auth)
            };
            r.start(t0, auth, request(channel, Loa::Loa2), NONCE)
                .unwrap();
        }
        let mut now = t0;
        for step in 0..200u64 {
            let out = outputs(&mut r);
            for s in submits(&out) {
                let event = match (s.1 + step) % 3 {
                    0 => BindEvent::Failed {
                        id: s.1,
                        reason: SubmitFailure::ResponseTimeout,
                    },
                    _ => accepted(s.1, &format!("m{}", s.1)),
                };
                r.handle_event(now, event);
                if let Some(key) = s.2 {
                    r.handle_event(now, ussd_answer(key, if step % 2 == 0 { "1" } else { "2" }));
                }
            }
            all.extend(out);
            if r.is_empty() {
                break;
            }
            now = r.poll_timeout().unwrap_or(now + Duration::from_secs(1));
            r.handle_timeout(now);
        }
        all.extend(outputs(&mut r));
        assert!(r.is_empty(), "everything ended");
        for auth in 1..=40u64 {
            let mine: Vec<&RouterOutput> = all
                .iter()
                .filter(|o| {
                    matches!(o, RouterOutput::Result { auth: a, .. } | RouterOutput::Released { auth: a } if *a == auth)
                })
                .collect();
            assert_eq!(mine.len(), 2, "auth {auth}: {mine:?}");
            assert!(matches!(mine[0], RouterOutput::Result { .. }));
            assert!(matches!(mine[1], RouterOutput::Released { .. }));
        }
    }
}
