//! [`HandsetNetwork`]: a [`Network`] hosting a seeded population of simulated handsets
//! (`sim_applet_model::handset`), the radio side a load run talks to through the SMSC.
//!
//! Population: handset `i` has MSISDN `msisdn_base + i`, so routing is arithmetic and there is no
//! address map. Whether its SIM carries our applet is drawn from `(seed, i)` with probability
//! `applet_share`. Handsets live in one `Vec` (32 bytes each when idle, plus whatever a running
//! dialog boxes), so a million of them cost about 32 MB.
//!
//! Provisioning by derivation: a card's OTA keys, `K_auth`, PIN and PUK are
//! `sim_applet_model::applet::state::CardSecrets::derive(seed, i)`. The gateway side of a test or a load
//! run does not need a key file: knowing the population seed and the MSISDN base, it derives the
//! secrets of MSISDN `m` as `CardSecrets::derive(seed, m - msisdn_base)` (see
//! [`HandsetNetwork::card_secrets`]). Never use this outside simulation: real cards are
//! personalised with random keys.
//!
//! Time: a handset runs on `VirtualInstant` (ms). The network maps it onto the driver's real
//! `Instant`s: virtual ms = real ms since `start` times `time_compression` (1.0 = real time;
//! 1000 makes an 8 s think time last 8 ms). Timers compare in the real domain, the same mapping
//! [`Network::poll_timeout`] reports, so a wake-up at the reported instant always finds its
//! timer due.
//!
//! Data flow:
//! - `handle_mt`: destination -> index (unknown: UNDELIV, [`ERR_UNKNOWN_SUBSCRIBER`]). USSD
//!   (`service_type` of the dialect or a `ussd_service_op` TLV): the text is decoded by DCS,
//!   the session key and the MT's source are kept per handset in a bounded dialog table, and
//!   the handset gets `handle_mt_ussd` (an answer is expected for the dialect's start/continue
//!   ops without end signal; anything else closes the dialog). SIM data download (PID 0x7F):
//!   a SIM without the applet answers UNDELIV with [`ERR_SIM_DATA_DOWNLOAD`] (what a handset
//!   reports as RP-ERROR TP-FCS 0xD5 "(U)SIM data download error"), else `handle_mt_sms_pp`.
//!   Other SMS are delivered and read. Then the handset's wake-up goes into a heap.
//! - `poll_mo`: due handsets get `handle_timeout`; their MO become `deliver_sm` fields in a
//!   bounded queue: a USSD answer with the dialect's `mo_answer` op and the session key echoed,
//!   source the MSISDN, destination the service code the MT came from; the card's PoR SMS with
//!   `esm_class` UDHI, PID 0x7F, DCS 0xF6, to the address the MT came from.
//! - Bounds: at most `max_active_dialogs` handsets in a dialog (an MT that would open one more
//!   is UNDELIV [`ERR_SYSTEM_FAILURE`]; dialogs older than the dialect's session timeout are
//!   released first, as the network's own dialog timer would); at most `mo_queue_capacity`
//!   MO waiting (timers stop being served while it is full; MO produced by an MT into a full
//!   queue are dropped and counted). The heap may hold stale entries; they only cost a wake-up.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sim_applet_model::applet::state::CardSecrets;
use sim_applet_model::handset::user::UserParams;
use sim_applet_model::handset::{self, Handset, HandsetParams, MtSms, UssdMt, VirtualInstant};
use sim_applet_model::smpp::dialect::{DcsScheme, Dialect, EndSignal, SessionKeyLocation};
use sim_applet_model::text;

use super::network::{
    Address, MoMessage, MtMessage, MtOutcome, Network, SmFields, PID_SIM_DATA_DOWNLOAD,
};

/// Receipt `err` for an MSISDN outside the population (MAP unknownSubscriber).
pub const ERR_UNKNOWN_SUBSCRIBER: u16 = 1;
/// Receipt `err` when the network has no room for one more dialog (MAP systemFailure).
pub const ERR_SYSTEM_FAILURE: u16 = 34;
/// Receipt `err` for SIM data download to a SIM without the applet (TP-FCS 0xD5).
pub const ERR_SIM_DATA_DOWNLOAD: u16 = 0xD5;

/// `esm_class` UDHI bit.
const ESM_UDHI: u8 = 0x40;
/// How long the network keeps a SIM data download dialog without news, virtual ms: longer than
/// the handset's GET INPUT timer (180 s) plus the screens before it.
const SMS_DIALOG_MS: u64 = 300_000;

/// Settings of a [`HandsetNetwork`].
#[derive(Debug, Clone, PartialEq)]
pub struct PopulationConfig {
    /// Number of handsets.
    pub size: u32,
    /// Share of SIMs carrying the applet, 0.0..=1.0.
    pub applet_share: f64,
    /// Seed of the population: applet draw, user behaviour, card secrets.
    pub seed: u64,
    /// MSISDN of handset 0 (international digits, no `+`).
    pub msisdn_base: u64,
    /// MO destination when the MT had an empty source address.
    pub service_code: String,
    /// The user model.
    pub user: UserParams,
    /// Handset UI timers, ms of virtual time.
    pub display_timeout_ms: u64,
    pub input_timeout_ms: u64,
    /// Virtual ms per real ms.
    pub time_compression: f64,
    /// The USSD dialect the SMSC's USSD gateway speaks (session key, ops, DCS scheme).
    pub dialect: Dialect,
    /// CBS GSM 7-bit text (`0x0F`) arrives packed (TS 23.038) rather than one septet per
    /// octet. The gateway sends one per octet, as most SMPP USSD gateways expect.
    pub cbs_packed: bool,
    pub max_active_dialogs: usize,
    pub mo_queue_capacity: usize,
}

impl Default for PopulationConfig {
    fn default() -> Self {
        let h = HandsetParams::default();
        Self {
            size: 1000,
            applet_share: 0.7,
            seed: 1,
            msisdn_base: 48_600_000_000,
            service_code: "*123#".into(),
            user: h.user,
            display_timeout_ms: h.display_timeout_ms,
            input_timeout_ms: h.input_timeout_ms,
            time_compression: 1.0,
            dialect: Dialect::spec_default(),
            cbs_packed: false,
            max_active_dialogs: 100_000,
            mo_queue_capacity: 10_000,
        }
    }
}

/// A population the network cannot host.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PopulationError {
    #[error("population `size` must be at least 1")]
    Empty,
    #[error("`applet_share` {0} is not in 0.0..=1.0")]
    AppletShare(f64),
    #[error("`time_compression` {0} must be finite and above 0")]
    TimeCompression(f64),
    #[error("`msisdn_base` {base} + `size` {size} overflows 15 digits")]
    MsisdnRange { base: u64, size: u32 },
    #[error("`{field}` must be at least 1")]
    ZeroBound { field: &'static str },
}

/// Counters of a [`HandsetNetwork`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PopulationStats {
    pub mt_ussd: u64,
    pub mt_sms_pp: u64,
    pub mt_other: u64,
    pub unknown_subscriber: u64,
    pub no_applet: u64,
    pub dialogs_refused: u64,
    pub dialogs_expired: u64,
    pub mo_ussd: u64,
    pub mo_sms: u64,
    /// MO lost: queue full, or a USSD answer after the network released the dialog.
    pub mo_dropped: u64,
}

/// Where a USSD session key sat in the MT, to echo it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SessionTag {
    its_session_info: Option<u16>,
    user_message_reference: Option<u16>,
}

/// The network's side of one handset's dialog: where answers go.
#[derive(Debug, Clone)]
struct Dialog {
    /// Source of the last MT: the MO's destination.
    peer: Address,
    /// The USSD dialog's key while one is open.
    ussd: Option<SessionTag>,
    expires: VirtualInstant,
}

/// A [`Network`] of simulated handsets. See the module doc.
#[derive(Debug)]
pub struct HandsetNetwork {
    config: PopulationConfig,
    start: Instant,
    handsets: Vec<Handset>,
    dialogs: HashMap<u32, Dialog>,
    timers: BinaryHeap<Reverse<(VirtualInstant, u32)>>,
    mo: VecDeque<MoMessage>,
    last_sweep: VirtualInstant,
    stats: PopulationStats,
}

impl HandsetNetwork {
    /// Builds the population; virtual time 0 is `start`.
    pub fn new(config: PopulationConfig, start: Instant) -> Result<Self, PopulationError> {
        if config.size == 0 {
            return Err(PopulationError::Empty);
        }
        if !(0.0..=1.0).contains(&config.applet_share) {
            return Err(PopulationError::AppletShare(config.applet_share));
        }
        if !(config.time_compression.is_finite() && config.time_compression > 0.0) {
            return Err(PopulationError::TimeCompression(config.time_compression));
        }
        if config
            .msisdn_base
            .checked_add(u64::from(config.size))
            .is_none_or(|end| end > 999_999_999_999_999)
        {
            return Err(PopulationError::MsisdnRange {
                base: config.msisdn_base,
                size: config.size,
            });
        }
        if config.max_active_dialogs == 0 {
            return Err(PopulationError::ZeroBound {
                field: "max_active_dialogs",
            });
        }
        if config.mo_queue_capacity == 0 {
            return Err(PopulationError::ZeroBound {
                field: "mo_queue_capacity",
            });
        }
        let params = Arc::new(HandsetParams {
            population_seed: config.seed,
            user: config.user.clone(),
            display_timeout_ms: config.display_timeout_ms,
            input_timeout_ms: config.input_timeout_ms,
            ..HandsetParams::default()
        });
        let handsets = (0..config.size)
            .map(|i| {
                // The gateway's provisioning draws the same way, so both sides agree on who has
                // the applet without exchanging a table.
                let has_applet = sim_applet_model::handset::population::has_applet(
                    config.seed,
                    u64::from(i),
                    config.applet_share,
                );
                Handset::new(params.clone(), i, has_applet)
            })
            .collect();
        Ok(Self {
            config,
            start,
            handsets,
            dialogs: HashMap::new(),
            timers: BinaryHeap::new(),
            mo: VecDeque::new(),
            last_sweep: VirtualInstant(0),
            stats: PopulationStats::default(),
        })
    }

    pub fn config(&self) -> &PopulationConfig {
        &self.config
    }

    pub fn stats(&self) -> PopulationStats {
        self.stats
    }

    /// Number of handsets.
    pub fn len(&self) -> usize {
        self.handsets.len()
    }

    /// Never true: a population has at least one handset.
    pub fn is_empty(&self) -> bool {
        self.handsets.is_empty()
    }

    /// Handsets the network holds a dialog for.
    pub fn active_dialogs(&self) -> usize {
        self.dialogs.len()
    }

    /// The index of an MSISDN (digits, optional leading `+`), if it is in the population.
    pub fn index_of(&self, msisdn: &str) -> Option<u32> {
        let digits = msisdn.strip_prefix('+').unwrap_or(msisdn);
        if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: u64 = digits.parse().ok()?;
        let i = u32::try_from(n.checked_sub(self.config.msisdn_base)?).ok()?;
        (i < self.config.size).then_some(i)
    }

    /// The MSISDN of handset `index`.
    pub fn msisdn(&self, index: u32) -> String {
        (self.config.msisdn_base + u64::from(index)).to_string()
    }

    /// Handset `index`, for inspection.
    pub fn handset(&self, index: u32) -> Option<&Handset> {
        self.handsets.get(index as usize)
    }

    /// The secrets the gateway derives for handset `index` ("provisioning by derivation").
    pub fn card_secrets(&self, index: u32) -> CardSecrets {
        CardSecrets::derive(self.config.seed, u64::from(index))
    }

    /// Virtual time at `now`.
    pub fn virtual_now(&self, now: Instant) -> VirtualInstant {
        let real_ms = now.saturating_duration_since(self.start).as_secs_f64() * 1000.0;
        VirtualInstant((real_ms * self.config.time_compression) as u64)
    }

    /// The real instant at which virtual time reaches `v` (rounded up to the next microsecond,
    /// so that `virtual_now(real_instant(v)) >= v`).
    pub fn real_instant(&self, v: VirtualInstant) -> Instant {
        let micros = (v.as_millis() as f64 * 1000.0 / self.config.time_compression).ceil();
        // Far-future timers saturate rather than overflow Instant arithmetic.
        let micros = if micros.is_finite() {
            micros.min(1e15) as u64
        } else {
            1_000_000_000_000_000
        };
        self.start
            .checked_add(Duration::from_micros(micros.saturating_add(1)))
            .unwrap_or(self.start + Duration::from_secs(86_400 * 365 * 30))
    }

    fn is_ussd(&self, sm: &SmFields) -> bool {
        sm.ussd_service_op.is_some()
            || (!self.config.dialect.service_type.is_empty()
                && sm.service_type == self.config.dialect.service_type)
            || sm.service_type == "USSD"
    }

    /// Key and end signal of an MT per the dialect.
    fn session_of(&self, sm: &SmFields) -> (SessionTag, bool) {
        let d = &self.config.dialect;
        let tag = SessionTag {
            its_session_info: sm.its_session_info,
            user_message_reference: sm.user_message_reference,
        };
        let end_bit = d.end_signal == EndSignal::ItsSessionInfoBit
            && sm.its_session_info.is_some_and(|i| i & 1 == 1);
        (tag, end_bit)
    }

    /// The key as the MO must carry it: the session number (or dialog id, or reference) echoed,
    /// the sequence number one up, no end bit.
    fn echo(&self, tag: SessionTag) -> (Option<u16>, Option<u16>) {
        match self.config.dialect.session_key {
            SessionKeyLocation::ItsSessionInfo8 => {
                let info = tag.its_session_info.map(|i| {
                    let seq = ((i & 0xFF) >> 1).wrapping_add(1) & 0x7F;
                    (i & 0xFF00) | (seq << 1)
                });
                (info, tag.user_message_reference)
            }
            SessionKeyLocation::DialogId15 => (
                tag.its_session_info.map(|i| i & !1),
                tag.user_message_reference,
            ),
            SessionKeyLocation::UserMessageReference => (None, tag.user_message_reference),
        }
    }

    fn decode_text(&self, data_coding: u8, bytes: &[u8]) -> String {
        let ucs2 = match self.config.dialect.dcs {
            DcsScheme::Smpp => data_coding == 0x08,
            DcsScheme::Cbs => data_coding & 0xCC == 0x48 || data_coding == 0x11,
        };
        let decoded = if ucs2 {
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            Some(String::from_utf16_lossy(&units))
        } else if self.config.dialect.dcs == DcsScheme::Cbs && self.config.cbs_packed {
            text::decode_ussd(data_coding, bytes).ok()
        } else {
            text::gsm7_decode(bytes).ok()
        };
        // Unreadable text still reaches the user: as Latin-1, the way a confused handset shows it.
        decoded.unwrap_or_else(|| bytes.iter().map(|&b| char::from(b)).collect())
    }

    /// Text for an MO USSD: GSM 7-bit (one septet per octet) when it fits, else UCS2.
    fn encode_text(&self, s: &str) -> (u8, Vec<u8>) {
        let cbs = self.config.dialect.dcs == DcsScheme::Cbs;
        match text::gsm7_encode(s) {
            Ok(septets) if cbs && self.config.cbs_packed => (0x0F, text::pack_ussd(&septets)),
            Ok(septets) => (if cbs { 0x0F } else { 0x00 }, septets),
            Err(_) => (
                if cbs { 0x48 } else { 0x08 },
                s.encode_utf16().flat_map(u16::to_be_bytes).collect(),
            ),
        }
    }

    /// Makes room for a new dialog: releases expired ones (at most once per virtual second, so
    /// an overload does not turn every MT into a full scan).
    fn room_for_dialog(&mut self, now: VirtualInstant) -> bool {
        if self.dialogs.len() < self.config.max_active_dialogs {
            return true;
        }
        if now.as_millis() >= self.last_sweep.as_millis().saturating_add(1000) {
            self.last_sweep = now;
            let expired: Vec<u32> = self
                .dialogs
                .iter()
                .filter(|(_, d)| d.expires <= now)
                .map(|(i, _)| *i)
                .collect();
            for i in expired {
                self.release(i, now);
            }
        }
        self.dialogs.len() < self.config.max_active_dialogs
    }

    /// The network's dialog timer fired: the USSD dialog is released towards the handset too.
    fn release(&mut self, index: u32, now: VirtualInstant) {
        if let Some(d) = self.dialogs.remove(&index) {
            self.stats.dialogs_expired += 1;
            if d.ussd.is_some() {
                if let Some(h) = self.handsets.get_mut(index as usize) {
                    h.handle_mt_ussd(
                        now,
                        UssdMt {
                            text: String::new(),
                            expects_answer: false,
                        },
                    );
                }
                self.after_event(index);
            }
        }
    }

    /// Opens or refreshes the dialog of `index`; false when there is no room.
    fn touch_dialog(
        &mut self,
        index: u32,
        now: VirtualInstant,
        peer: &Address,
        ussd: Option<SessionTag>,
        ttl_ms: u64,
    ) -> bool {
        if !self.dialogs.contains_key(&index) && !self.room_for_dialog(now) {
            self.stats.dialogs_refused += 1;
            return false;
        }
        let d = self.dialogs.entry(index).or_insert_with(|| Dialog {
            peer: peer.clone(),
            ussd: None,
            expires: now,
        });
        d.peer = peer.clone();
        if ussd.is_some() {
            d.ussd = ussd;
        }
        d.expires = now.add_millis(ttl_ms);
        true
    }

    fn mt_ussd(&mut self, index: u32, now: VirtualInstant, mt: &MtMessage) -> MtOutcome {
        self.stats.mt_ussd += 1;
        let sm = &mt.sm;
        let ops = &self.config.dialect.ops;
        let (tag, end_bit) = self.session_of(sm);
        let expects_answer = !end_bit
            && sm
                .ussd_service_op
                .is_some_and(|op| op == ops.start || op == ops.continue_);
        let body = sm.message_payload.as_deref().unwrap_or(&sm.short_message);
        let text = self.decode_text(sm.data_coding, body);
        if expects_answer {
            let ttl = self
                .config
                .dialect
                .session_timeout_secs
                .saturating_mul(1000);
            if !self.touch_dialog(index, now, &sm.source, Some(tag), ttl) {
                return MtOutcome::Undeliverable {
                    err: ERR_SYSTEM_FAILURE,
                };
            }
        } else if let Some(d) = self.dialogs.get_mut(&index) {
            d.ussd = None;
        }
        if let Some(h) = self.handsets.get_mut(index as usize) {
            h.handle_mt_ussd(
                now,
                UssdMt {
                    text,
                    expects_answer,
                },
            );
        }
        self.after_event(index);
        MtOutcome::Delivered
    }

    fn mt_sms_pp(&mut self, index: u32, now: VirtualInstant, mt: &MtMessage) -> MtOutcome {
        self.stats.mt_sms_pp += 1;
        if !self
            .handsets
            .get(index as usize)
            .is_some_and(Handset::has_applet)
        {
            self.stats.no_applet += 1;
            return MtOutcome::Undeliverable {
                err: ERR_SIM_DATA_DOWNLOAD,
            };
        }
        let sm = &mt.sm;
        if !self.touch_dialog(index, now, &sm.source, None, SMS_DIALOG_MS) {
            return MtOutcome::Undeliverable {
                err: ERR_SYSTEM_FAILURE,
            };
        }
        let sms = MtSms {
            originator: sm.source.addr.clone(),
            protocol_id: sm.protocol_id,
            data_coding: sm.data_coding,
            user_data: sm
                .message_payload
                .clone()
                .unwrap_or_else(|| sm.short_message.clone()),
        };
        if let Some(h) = self.handsets.get_mut(index as usize) {
            h.handle_mt_sms_pp(now, &sms);
        }
        self.after_event(index);
        MtOutcome::Delivered
    }

    /// Collects what the handset sends, re-arms its timer, forgets an idle handset's dialog.
    fn after_event(&mut self, index: u32) {
        while let Some(m) = self
            .handsets
            .get_mut(index as usize)
            .and_then(Handset::poll_mo)
        {
            match self.mo_message(index, m) {
                Some(mo) if self.mo.len() < self.config.mo_queue_capacity => self.mo.push_back(mo),
                _ => self.stats.mo_dropped += 1,
            }
        }
        let Some(h) = self.handsets.get(index as usize) else {
            return;
        };
        if let Some(t) = h.poll_timeout() {
            self.timers.push(Reverse((t, index)));
        }
        if h.is_idle() {
            self.dialogs.remove(&index);
        } else if let Some(d) = self.dialogs.get_mut(&index) {
            // A handset still busy keeps its dialog alive past its wake-up.
            if let Some(t) = h.poll_timeout() {
                d.expires = d.expires.max(t.add_secs(1));
            }
        }
    }

    /// Turns a handset's MO into `deliver_sm` fields; `None` when it has nowhere to go.
    fn mo_message(&mut self, index: u32, m: handset::MoMessage) -> Option<MoMessage> {
        let source = Address::international(self.msisdn(index));
        let dialog = self.dialogs.get(&index);
        let peer = dialog
            .map(|d| d.peer.clone())
            .filter(|p| !p.addr.is_empty());
        match m {
            handset::MoMessage::UssdAnswer { text } => {
                let tag = dialog.and_then(|d| d.ussd)?;
                let (its_session_info, user_message_reference) = self.echo(tag);
                let (data_coding, short_message) = self.encode_text(&text);
                self.stats.mo_ussd += 1;
                Some(MoMessage {
                    sm: SmFields {
                        source,
                        destination: peer.unwrap_or_else(|| Address {
                            ton: 0,
                            npi: 0,
                            addr: self.config.service_code.clone(),
                        }),
                        service_type: self.config.dialect.service_type.clone(),
                        data_coding,
                        short_message,
                        ussd_service_op: Some(self.config.dialect.ops.mo_answer),
                        its_session_info,
                        user_message_reference,
                        ..SmFields::default()
                    },
                })
            }
            handset::MoMessage::Sms(sms) => {
                self.stats.mo_sms += 1;
                let destination = peer.unwrap_or_else(|| Address::international(sms.destination));
                let (short_message, message_payload) = if sms.user_data.len() > 254 {
                    (Vec::new(), Some(sms.user_data))
                } else {
                    (sms.user_data, None)
                };
                Some(MoMessage {
                    sm: SmFields {
                        source,
                        destination,
                        esm_class: if sms.udhi { ESM_UDHI } else { 0 },
                        protocol_id: sms.protocol_id,
                        data_coding: sms.data_coding,
                        short_message,
                        message_payload,
                        ..SmFields::default()
                    },
                })
            }
        }
    }
}

impl Network for HandsetNetwork {
    fn handle_mt(&mut self, now: Instant, mt: MtMessage) -> MtOutcome {
        let v = self.virtual_now(now);
        let Some(index) = self.index_of(&mt.sm.destination.addr) else {
            self.stats.unknown_subscriber += 1;
            return MtOutcome::Undeliverable {
                err: ERR_UNKNOWN_SUBSCRIBER,
            };
        };
        if self.is_ussd(&mt.sm) {
            self.mt_ussd(index, v, &mt)
        } else if mt.sm.protocol_id == PID_SIM_DATA_DOWNLOAD {
            self.mt_sms_pp(index, v, &mt)
        } else {
            // A plain SMS: the handset shows it; nothing comes back.
            self.stats.mt_other += 1;
            MtOutcome::Delivered
        }
    }

    fn poll_mo(&mut self, now: Instant) -> Option<MoMessage> {
        while self.mo.len() < self.config.mo_queue_capacity {
            let Some(&Reverse((due, index))) = self.timers.peek() else {
                break;
            };
            if self.real_instant(due) > now {
                break;
            }
            self.timers.pop();
            let Some(h) = self.handsets.get_mut(index as usize) else {
                continue;
            };
            // Stale entries (the handset moved its timer or went idle) are skipped: every change
            // of a handset's timer pushed its own entry. The handset's due time is passed in, so
            // late wake-ups do not change behaviour.
            if let Some(t) = h.poll_timeout().filter(|t| *t <= due) {
                h.handle_timeout(t);
                self.after_event(index);
            }
        }
        self.mo.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if !self.mo.is_empty() {
            return Some(self.start);
        }
        self.timers
            .peek()
            .map(|Reverse((due, _))| self.real_instant(*due))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use sim_applet_model::applet::gateway::{build_request_sms, open_answer_sms, verify_answer};
    use sim_applet_model::applet::protocol::{AuthRequest, Loa, Outcome};

    const GW_NUMBER: &str = "48500100100";

    fn sure_user() -> UserParams {
        UserParams {
            p_ignore: 0.0,
            p_deny: 0.0,
            p_wrong_pin: 0.0,
            ..UserParams::default()
        }
    }

    fn network(size: u32, dialect: Dialect) -> (HandsetNetwork, Instant) {
        let t0 = Instant::now();
        let n = HandsetNetwork::new(
            PopulationConfig {
                size,
                user: sure_user(),
                dialect,
                ..PopulationConfig::default()
            },
            t0,
        )
        .unwrap();
        (n, t0)
    }

    fn ussd_mt(dest: &str, op: u8, info: Option<u16>, umr: Option<u16>, text: &str) -> MtMessage {
        MtMessage {
            message_id: "1".into(),
            system_id: "gw".into(),
            sm: SmFields {
                source: Address {
                    ton: 0,
                    npi: 0,
                    addr: "*123#".into(),
                },
                destination: Address::international(dest),
                service_type: "USSD".into(),
                short_message: text.as_bytes().to_vec(),
                ussd_service_op: Some(op),
                its_session_info: info,
                user_message_reference: umr,
                ..SmFields::default()
            },
        }
    }

    /// Sleeps in fake time until the network yields an MO (or gives up after `limit` wakes).
    fn next_mo(n: &mut HandsetNetwork, limit: usize) -> Option<(Instant, MoMessage)> {
        for _ in 0..limit {
            let at = n.poll_timeout()?;
            if let Some(mo) = n.poll_mo(at) {
                return Some((at, mo));
            }
        }
        None
    }

    #[test]
    fn msisdn_maps_to_index_by_arithmetic() {
        let (n, _) = network(10, Dialect::spec_default());
        assert_eq!(n.index_of("48600000000"), Some(0));
        assert_eq!(n.index_of("+48600000009"), Some(9));
        assert_eq!(n.index_of("48600000010"), None);
        assert_eq!(n.index_of("48599999999"), None);
        assert_eq!(n.index_of("4860000000x"), None);
        assert_eq!(n.index_of(""), None);
        assert_eq!(n.index_of("99999999999999999999999"), None);
        assert_eq!(n.msisdn(7), "48600000007");
    }

    #[test]
    fn unknown_subscriber_is_undeliverable() {
        let (mut n, t0) = network(10, Dialect::spec_default());
        let out = n.handle_mt(t0, ussd_mt("48600000010", 2, Some(0x0700), None, "Hi"));
        assert_eq!(
            out,
            MtOutcome::Undeliverable {
                err: ERR_UNKNOWN_SUBSCRIBER
            }
        );
        assert_eq!(n.poll_timeout(), None);
    }

    #[test]
    fn ussd_request_is_confirmed_with_the_session_echoed() {
        let (mut n, t0) = network(10, Dialect::spec_default());
        let out = n.handle_mt(
            t0,
            ussd_mt("48600000003", 2, Some(0x0702), None, "Log in? 1 Yes"),
        );
        assert_eq!(out, MtOutcome::Delivered);
        assert!(n.poll_mo(t0).is_none());
        let (at, mo) = next_mo(&mut n, 10).unwrap();
        // The user's think time (>= 2 x 700 ms in virtual time = real time here) elapsed.
        assert!(at >= t0 + Duration::from_millis(1400));
        assert_eq!(mo.sm.ussd_service_op, Some(18));
        assert_eq!(
            mo.sm.its_session_info,
            Some(0x0704),
            "session 7, sequence 2, no end"
        );
        assert_eq!(mo.sm.short_message, b"1");
        assert_eq!(mo.sm.data_coding, 0x00);
        assert_eq!(mo.sm.source.addr, "48600000003");
        assert_eq!(mo.sm.destination.addr, "*123#");
        assert_eq!(mo.sm.service_type, "USSD");
        // The gateway ends the dialog with a USSN and the end bit: the network forgets it.
        assert_eq!(n.active_dialogs(), 1);
        let out = n.handle_mt(at, ussd_mt("48600000003", 3, Some(0x0705), None, "Done"));
        assert_eq!(out, MtOutcome::Delivered);
        assert_eq!(n.active_dialogs(), 0);
        assert!(n.handset(3).unwrap().is_idle());
    }

    #[test]
    fn umr_dialect_echoes_the_user_message_reference() {
        let (mut n, t0) = network(10, Dialect::vendor_umr_op_end());
        n.handle_mt(
            t0,
            ussd_mt("48600000001", 2, None, Some(4242), "Log in? 1 Yes"),
        );
        let (_, mo) = next_mo(&mut n, 10).unwrap();
        assert_eq!(mo.sm.user_message_reference, Some(4242));
        assert_eq!(mo.sm.its_session_info, None);
        assert_eq!(mo.sm.ussd_service_op, Some(18));
    }

    #[test]
    fn dialog_id_dialect_echoes_the_dialog_id_without_end_bit() {
        let (mut n, t0) = network(10, Dialect::vendor_dialog_id_cbs());
        let mut mt = ussd_mt("48600000001", 2, Some((0x1234 << 1) & 0xFFFE), None, "");
        mt.sm.data_coding = 0x0F;
        mt.sm.short_message = b"Log in? 1 Yes".to_vec();
        n.handle_mt(t0, mt);
        let (_, mo) = next_mo(&mut n, 10).unwrap();
        assert_eq!(mo.sm.its_session_info, Some(0x1234 << 1));
        assert_eq!(mo.sm.data_coding, 0x0F);
    }

    #[test]
    fn ucs2_pin_prompt_is_decoded_and_answered_with_the_pin() {
        let (mut n, t0) = network(10, Dialect::spec_default());
        let mut mt = ussd_mt("48600000002", 2, Some(0x0100), None, "");
        mt.sm.data_coding = 0x08;
        mt.sm.short_message = "Podaj PIN, żeby się zalogować"
            .encode_utf16()
            .flat_map(u16::to_be_bytes)
            .collect();
        n.handle_mt(t0, mt);
        let (_, mo) = next_mo(&mut n, 10).unwrap();
        let pin = n.handset(2).unwrap().user_pin();
        assert_eq!(mo.sm.short_message, pin.digits());
    }

    #[test]
    fn ussn_without_an_open_dialog_gets_no_answer() {
        let (mut n, t0) = network(10, Dialect::spec_default());
        let out = n.handle_mt(t0, ussd_mt("48600000004", 3, Some(0x0101), None, "Info"));
        assert_eq!(out, MtOutcome::Delivered);
        assert_eq!(n.poll_timeout(), None);
        assert_eq!(n.active_dialogs(), 0);
    }

    #[test]
    fn dialog_cap_refuses_one_more_until_dialogs_expire() {
        let t0 = Instant::now();
        let mut n = HandsetNetwork::new(
            PopulationConfig {
                size: 10,
                user: UserParams {
                    p_ignore: 1.0,
                    ..UserParams::default()
                },
                max_active_dialogs: 2,
                ..PopulationConfig::default()
            },
            t0,
        )
        .unwrap();
        // An ignoring user leaves the handset idle, so only the network holds the dialog...
        for i in 0..2 {
            let d = format!("4860000000{i}");
            assert_eq!(
                n.handle_mt(t0, ussd_mt(&d, 2, Some(0x0100), None, "?")),
                MtOutcome::Delivered
            );
        }
        // ... which an idle handset does not keep: the network forgets it at once.
        assert_eq!(n.active_dialogs(), 0);

        let (mut n, t0) = network(10, Dialect::spec_default());
        n.config.max_active_dialogs = 2;
        for i in 0..2 {
            let d = format!("4860000000{i}");
            n.handle_mt(t0, ussd_mt(&d, 2, Some(0x0100), None, "?"));
        }
        assert_eq!(n.active_dialogs(), 2);
        let out = n.handle_mt(t0, ussd_mt("48600000005", 2, Some(0x0100), None, "?"));
        assert_eq!(
            out,
            MtOutcome::Undeliverable {
                err: ERR_SYSTEM_FAILURE
            }
        );
        assert_eq!(n.stats().dialogs_refused, 1);
        // After the dialect's session timeout the old dialogs are released.
        let later = t0 + Duration::from_secs(Dialect::spec_default().session_timeout_secs + 60);
        while n.poll_mo(later).is_some() {}
        let out = n.handle_mt(later, ussd_mt("48600000005", 2, Some(0x0100), None, "?"));
        assert_eq!(out, MtOutcome::Delivered);
    }

    #[test]
    fn sms_pp_to_a_sim_without_the_applet_fails_with_a_sim_error() {
        let (mut n, t0) = network(100, Dialect::spec_default());
        let plain = (0..100)
            .find(|i| !n.handset(*i).unwrap().has_applet())
            .unwrap();
        let mt = sms_pp_mt(&n.msisdn(plain), vec![0x02, 0x70, 0x00, 0x01]);
        assert_eq!(
            n.handle_mt(t0, mt),
            MtOutcome::Undeliverable {
                err: ERR_SIM_DATA_DOWNLOAD
            }
        );
    }

    fn sms_pp_mt(dest: &str, ud: Vec<u8>) -> MtMessage {
        MtMessage {
            message_id: "2".into(),
            system_id: "gw".into(),
            sm: SmFields {
                source: Address::international(GW_NUMBER),
                destination: Address::international(dest),
                esm_class: ESM_UDHI,
                protocol_id: PID_SIM_DATA_DOWNLOAD,
                data_coding: 0xF6,
                short_message: ud,
                ..SmFields::default()
            },
        }
    }

    pub(super) fn auth_request() -> AuthRequest {
        AuthRequest::from_text(
            [1, 2, 3, 4, 5, 6, 7, 8],
            [0x5A; 16],
            Loa::Loa2,
            120,
            "Gov.pl",
            "Login to ePUAP",
            "4821",
            None,
        )
        .unwrap()
    }

    #[test]
    fn stk_request_to_an_applet_sim_comes_back_approved() {
        let (mut n, t0) = network(100, Dialect::spec_default());
        n.config.time_compression = 1000.0;
        let i = (0..100)
            .find(|i| n.handset(*i).unwrap().has_applet())
            .unwrap();
        let secrets = n.card_secrets(i);
        let req = auth_request();
        let ud = build_request_sms(&secrets, 1, &req, 0).unwrap().remove(0);
        assert_eq!(
            n.handle_mt(t0, sms_pp_mt(&n.msisdn(i), ud)),
            MtOutcome::Delivered
        );
        let (at, mo) = next_mo(&mut n, 20).unwrap();
        // Seconds of virtual think time are milliseconds of real time.
        assert!(at < t0 + Duration::from_secs(1), "{:?}", at - t0);
        assert_eq!(mo.sm.esm_class, 0x40);
        assert_eq!(mo.sm.protocol_id, 0x7F);
        assert_eq!(mo.sm.data_coding, 0xF6);
        assert_eq!(&mo.sm.short_message[..3], &[0x02, 0x71, 0x00]);
        assert_eq!(mo.sm.destination.addr, GW_NUMBER);
        assert_eq!(mo.sm.source.addr, n.msisdn(i));
        let reply = open_answer_sms(&secrets, &mo.sm.short_message).unwrap();
        assert_eq!(
            verify_answer(&secrets, &reply, 1, &req.txid, &req.challenge),
            Ok(Outcome::Approved { loa: Loa::Loa2 })
        );
    }

    #[test]
    fn virtual_time_is_real_time_times_the_compression() {
        let (mut n, t0) = network(1, Dialect::spec_default());
        n.config.time_compression = 10.0;
        assert_eq!(
            n.virtual_now(t0 + Duration::from_millis(150)),
            VirtualInstant(1500)
        );
        for v in [0, 1, 7, 999, 123_456_789] {
            let v = VirtualInstant(v);
            assert!(n.virtual_now(n.real_instant(v)) >= v);
        }
        assert_eq!(
            n.virtual_now(t0 - Duration::from_millis(5)),
            VirtualInstant(0)
        );
    }

    #[test]
    fn a_bad_population_is_refused_with_the_field_named() {
        let t0 = Instant::now();
        let bad = |c: PopulationConfig| HandsetNetwork::new(c, t0).unwrap_err();
        let d = PopulationConfig::default;
        assert_eq!(
            bad(PopulationConfig { size: 0, ..d() }),
            PopulationError::Empty
        );
        assert!(matches!(
            bad(PopulationConfig {
                applet_share: 1.5,
                ..d()
            }),
            PopulationError::AppletShare(_)
        ));
        assert!(matches!(
            bad(PopulationConfig {
                time_compression: 0.0,
                ..d()
            }),
            PopulationError::TimeCompression(_)
        ));
        assert!(matches!(
            bad(PopulationConfig {
                msisdn_base: 999_999_999_999_999,
                ..d()
            }),
            PopulationError::MsisdnRange { .. }
        ));
    }

    #[test]
    fn a_hundred_thousand_handsets_build_quickly_and_stay_small() {
        let t0 = Instant::now();
        let n = HandsetNetwork::new(
            PopulationConfig {
                size: 100_000,
                ..PopulationConfig::default()
            },
            t0,
        )
        .unwrap();
        let took = t0.elapsed();
        let per_handset = std::mem::size_of::<Handset>();
        println!("100k handsets in {took:?}, {per_handset} bytes each");
        assert_eq!(per_handset, 32);
        // Generous for an unoptimised build on a shared machine; typical is a few ms.
        assert!(took < Duration::from_secs(5), "{took:?}");
        let with_applet = (0..100_000)
            .filter(|i| n.handset(*i).unwrap().has_applet())
            .count();
        assert!((69_000..71_000).contains(&with_applet), "{with_applet}");
        assert_eq!(n.active_dialogs(), 0);
        assert_eq!(n.poll_timeout(), None);
    }

    #[test]
    fn the_same_seed_gives_the_same_population_and_answers() {
        let run = || {
            let (mut n, t0) = network(50, Dialect::spec_default());
            n.config.user = UserParams::default();
            let applets: Vec<bool> = (0..50)
                .map(|i| n.handset(i).unwrap().has_applet())
                .collect();
            n.handle_mt(t0, ussd_mt("48600000011", 2, Some(0x0100), None, "?"));
            let at = next_mo(&mut n, 10).map(|(at, _)| at - t0);
            (applets, at)
        };
        assert_eq!(run(), run());
    }
}
