//! A simulated handset: its SIM (with or without our applet) and its user, as a sans-IO state
//! machine on virtual time. The SMSC simulator feeds it MT traffic (`handle_mt_ussd`,
//! `handle_mt_sms_pp`) and wake-ups (`handle_timeout`), and takes MO traffic (`poll_mo`) and the
//! next wake-up (`poll_timeout`).
//!
//! Data flow for SMS-PP: the MT user data becomes an SMS-DELIVER in an ENVELOPE to the card (one
//! per SMS, also for the segments of a concatenated packet, which the card joins); the
//! handset then FETCHes proactive commands, shows them, lets the [`user`] model answer after a
//! think time (or not: the UI timers of 25 s / 180 s answer "no response", TR 12) and returns
//! TERMINAL RESPONSEs; a SEND SHORT MESSAGE becomes an MO SMS. For USSD the user reads the
//! prompt and answers "1", "2" or a PIN.
//!
//! Memory: an idle handset is 32 bytes. Card secrets and the user's PIN are derived from
//! (population seed, index) when needed; the card is boxed on first use (it then holds the
//! OTA counter and PIN state); a dialog's state is boxed only while it runs.

pub mod clock;
pub mod population;
pub mod rng;
pub mod user;

use std::collections::VecDeque;
use std::sync::Arc;

use crate::applet::pin::Pin;
use crate::applet::state::{AppletState, CardSecrets};
use crate::applet::Applet;
use crate::cat::tpdu::{PacketIei, SecuredSubmit, DCS_8BIT_CLASS2, PID_SIM_DATA_DOWNLOAD};
use crate::cat::{
    Address, Apdu, ApduResponse, Command, CommandDetails, ProactiveCommand, ResultCode,
    SmsPpDownload, StatusWord, TerminalResponse, TextString,
};
pub use clock::VirtualInstant;
use rng::{derive_seed, SplitMix64};
use user::{Intent, Step, UserParams};

/// Parameters shared by a population of handsets.
#[derive(Debug, Clone, PartialEq)]
pub struct HandsetParams {
    /// Seed of the population; each handset's streams derive from it and its index.
    pub population_seed: u64,
    pub user: UserParams,
    /// Handset timer for DISPLAY TEXT and GET INKEY, ms (notes §5: 25 s).
    pub display_timeout_ms: u64,
    /// Handset timer for GET INPUT, ms (notes §5: 180 s).
    pub input_timeout_ms: u64,
    /// What the user types to approve a USSD prompt.
    pub ussd_approve: String,
    /// What the user types to refuse a USSD prompt.
    pub ussd_deny: String,
    /// A USSD prompt containing this (case-insensitive) asks for the PIN.
    pub ussd_pin_marker: String,
}

impl Default for HandsetParams {
    fn default() -> Self {
        HandsetParams {
            population_seed: 1,
            user: UserParams::default(),
            display_timeout_ms: 25_000,
            input_timeout_ms: 180_000,
            ussd_approve: "1".into(),
            ussd_deny: "2".into(),
            ussd_pin_marker: "PIN".into(),
        }
    }
}

/// An MT USSD message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UssdMt {
    pub text: String,
    /// USSR (a menu or question waiting for an answer) vs. USSN / release (final screen).
    pub expects_answer: bool,
}

/// An MT SMS as the SMSC has it (SMPP `protocol_id`, `data_coding`, `short_message` with UDH).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtSms {
    /// Originating address digits (the gateway's service number).
    pub originator: String,
    pub protocol_id: u8,
    pub data_coding: u8,
    /// User data including the UDH (UDHI is implied for PID 7F).
    pub user_data: Vec<u8>,
}

/// An MO SMS, ready for a `deliver_sm` (`esm_class` UDHI when `udhi`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoSms {
    pub destination: String,
    pub protocol_id: u8,
    pub data_coding: u8,
    pub udhi: bool,
    pub user_data: Vec<u8>,
}

/// Something the handset sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoMessage {
    /// The user's answer in the current USSD dialog.
    UssdAnswer { text: String },
    /// An MO SMS (the applet's PoR).
    Sms(MoSms),
}

/// The screen the user is looking at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StkScreen {
    Display,
    YesNo,
    Pin,
}

#[derive(Debug)]
struct StkUi {
    details: CommandDetails,
    screen: StkScreen,
    act_at: Option<VirtualInstant>,
    timeout_at: VirtualInstant,
}

#[derive(Debug)]
struct UssdUi {
    answer_at: VirtualInstant,
    answer: String,
}

/// State that exists only while the handset is doing something.
#[derive(Debug)]
struct Active {
    rng: SplitMix64,
    intent: Intent,
    ussd_open: bool,
    ussd: Option<UssdUi>,
    stk: Option<StkUi>,
    outbox: VecDeque<MoMessage>,
}

/// Bit of `flags_dialogs` saying the SIM has the applet; the low 31 bits count dialogs.
const HAS_APPLET: u32 = 1 << 31;
/// A misbehaving card cannot keep the handset in a loop: at most this many APDUs per event.
const MAX_APDUS_PER_EVENT: usize = 32;

/// A handset with its SIM and its user.
#[derive(Debug)]
pub struct Handset {
    params: Arc<HandsetParams>,
    index: u32,
    flags_dialogs: u32,
    card: Option<Box<Applet>>,
    active: Option<Box<Active>>,
}

impl Handset {
    /// Handset `index` of the population described by `params`.
    pub fn new(params: Arc<HandsetParams>, index: u32, has_applet: bool) -> Self {
        Handset {
            params,
            index,
            flags_dialogs: if has_applet { HAS_APPLET } else { 0 },
            card: None,
            active: None,
        }
    }

    /// Its index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Whether its SIM carries the applet.
    pub fn has_applet(&self) -> bool {
        self.flags_dialogs & HAS_APPLET != 0
    }

    /// The card secrets the gateway must be provisioned with for this handset.
    pub fn card_secrets(&self) -> CardSecrets {
        CardSecrets::derive(self.params.population_seed, u64::from(self.index))
    }

    /// The PIN the user knows (the card's current one).
    pub fn user_pin(&self) -> Pin {
        match &self.card {
            Some(c) => c.state().pin,
            None => self.card_secrets().initial_pin,
        }
    }

    /// The card's durable state (fresh if the card was never used).
    pub fn card_state(&self) -> Option<AppletState> {
        if !self.has_applet() {
            return None;
        }
        Some(match &self.card {
            Some(c) => c.state(),
            None => AppletState::fresh(&self.card_secrets()),
        })
    }

    /// Restore the card's durable state from a store.
    pub fn set_card_state(&mut self, state: AppletState) {
        if self.has_applet() {
            self.card = Some(Box::new(Applet::restore(self.card_secrets(), state)));
        }
    }

    /// The card, for PUK operations in tests and tools.
    pub fn card_mut(&mut self) -> Option<&mut Applet> {
        if !self.has_applet() {
            return None;
        }
        let secrets = self.card_secrets();
        Some(
            self.card
                .get_or_insert_with(|| Box::new(Applet::new(secrets))),
        )
    }

    fn active(&mut self) -> &mut Active {
        let dialogs = self.flags_dialogs & !HAS_APPLET;
        let (params, index) = (&self.params, self.index);
        self.active.get_or_insert_with(|| {
            let rng = SplitMix64::new(derive_seed(
                params.population_seed,
                u64::from(index),
                u64::from(dialogs) + 1,
            ));
            Box::new(Active {
                rng,
                intent: Intent::Ignore,
                ussd_open: false,
                ussd: None,
                stk: None,
                outbox: VecDeque::new(),
            })
        })
    }

    fn new_intent(&mut self) {
        self.flags_dialogs =
            (self.flags_dialogs & HAS_APPLET) | ((self.flags_dialogs + 1) & !HAS_APPLET);
        // Fresh stream per dialog, so behaviour does not depend on what happened before.
        let stream = u64::from(self.flags_dialogs & !HAS_APPLET) + 1;
        let seed = derive_seed(self.params.population_seed, u64::from(self.index), stream);
        let user = self.params.user.clone();
        let a = self.active();
        a.rng = SplitMix64::new(seed);
        a.intent = user.draw_intent(&mut a.rng);
    }

    /// An MT USSD message arrives.
    pub fn handle_mt_ussd(&mut self, now: VirtualInstant, msg: UssdMt) {
        if self.active.as_ref().is_some_and(|a| a.stk.is_some()) {
            // One dialog at a time: a USSD during a SIM dialog goes unanswered.
            return;
        }
        if !msg.expects_answer {
            if let Some(a) = self.active.as_mut() {
                a.ussd_open = false;
                a.ussd = None;
            }
            self.gc();
            return;
        }
        if !self.active.as_ref().is_some_and(|a| a.ussd_open) {
            self.new_intent();
        }
        let wants_pin = msg
            .text
            .to_lowercase()
            .contains(&self.params.ussd_pin_marker.to_lowercase());
        let pin = if wants_pin {
            Some(self.user_pin())
        } else {
            None
        };
        let params = self.params.clone();
        let a = self.active();
        a.ussd_open = true;
        a.ussd = match a.intent {
            Intent::Ignore => None,
            Intent::Deny => Some(UssdUi {
                answer_at: now.add_millis(params.user.draw_delay_ms(&mut a.rng, Step::Decide)),
                answer: params.ussd_deny.clone(),
            }),
            Intent::Approve => {
                let (step, answer) = match pin {
                    Some(pin) => {
                        let typed = params.user.type_pin(&mut a.rng, pin.digits());
                        (Step::EnterPin, String::from_utf8_lossy(&typed).into_owned())
                    }
                    None => (Step::Decide, params.ussd_approve.clone()),
                };
                let read = params.user.draw_delay_ms(&mut a.rng, Step::Read);
                Some(UssdUi {
                    answer_at: now.add_millis(read + params.user.draw_delay_ms(&mut a.rng, step)),
                    answer,
                })
            }
        };
        self.gc();
    }

    /// An MT SMS arrives. Only SIM data download (PID 7F) reaches the card; others are read and
    /// forgotten. Each segment of a concatenated secured packet is one call: the ME passes it
    /// unchanged in its own ENVELOPE and the card reassembles (`applet::reassembly`), so
    /// segments may come in any order and the prompt appears with the last one.
    pub fn handle_mt_sms_pp(&mut self, now: VirtualInstant, sms: &MtSms) {
        if sms.protocol_id != PID_SIM_DATA_DOWNLOAD || !self.has_applet() {
            return;
        }
        let Some(tpdu) = deliver_tpdu(sms) else {
            return;
        };
        let Ok(env) = SmsPpDownload::new(None, tpdu).encode() else {
            return;
        };
        let Ok(apdu) = Apdu::envelope(env).encode() else {
            return;
        };
        let response = self
            .card_mut()
            .map(|c| c.process_apdu(now, &apdu))
            .unwrap_or_default();
        if let Ok(r) = ApduResponse::decode(&response) {
            // 90 00 (a segment stored, a packet refused silently) and 93 00 (toolkit busy) leave
            // any dialog on screen as it is; only a new proactive session is driven.
            if matches!(r.sw, StatusWord::ProactiveCommandPending(_)) {
                self.new_intent();
                self.drive_card(now, r.sw);
            }
        }
        self.gc();
    }

    /// FETCH and handle proactive commands until one needs the user or the card is done.
    fn drive_card(&mut self, now: VirtualInstant, mut sw: StatusWord) {
        for _ in 0..MAX_APDUS_PER_EVENT {
            let StatusWord::ProactiveCommandPending(len) = sw else {
                if let Some(a) = self.active.as_mut() {
                    a.stk = None;
                }
                return;
            };
            let Some(card) = self.card.as_mut() else {
                return;
            };
            let Ok(fetch) = Apdu::fetch(len).encode() else {
                return;
            };
            let Ok(r) = ApduResponse::decode(&card.process_apdu(now, &fetch)) else {
                return;
            };
            let Ok(cmd) = ProactiveCommand::decode(&r.data) else {
                sw = StatusWord::Ok;
                continue;
            };
            let details = cmd.details();
            let screen = match &cmd.command {
                Command::DisplayText(_) => Some(StkScreen::Display),
                Command::GetInkey(_) => Some(StkScreen::YesNo),
                Command::GetInput(_) => Some(StkScreen::Pin),
                Command::SendShortMessage(s) => {
                    if let Some(mo) = mo_sms(&s.tpdu) {
                        self.active().outbox.push_back(MoMessage::Sms(mo));
                    }
                    None
                }
                _ => None,
            };
            match screen {
                Some(screen) => {
                    self.show(now, details, screen);
                    return;
                }
                None => {
                    let result = match cmd.command {
                        Command::SendShortMessage(_) | Command::PlayTone(_) => ResultCode::Ok,
                        _ => ResultCode::BeyondTerminalCapabilities,
                    };
                    sw = self.send_tr(now, TerminalResponse::new(details, result));
                }
            }
        }
    }

    fn send_tr(&mut self, now: VirtualInstant, tr: TerminalResponse) -> StatusWord {
        let Some(card) = self.card.as_mut() else {
            return StatusWord::Ok;
        };
        let Ok(data) = tr.encode() else {
            return StatusWord::Ok;
        };
        let Ok(apdu) = Apdu::terminal_response(data).encode() else {
            return StatusWord::Ok;
        };
        ApduResponse::decode(&card.process_apdu(now, &apdu))
            .map(|r| r.sw)
            .unwrap_or(StatusWord::Ok)
    }

    fn show(&mut self, now: VirtualInstant, details: CommandDetails, screen: StkScreen) {
        let params = self.params.clone();
        let a = self.active();
        let timeout = match screen {
            StkScreen::Display | StkScreen::YesNo => params.display_timeout_ms,
            StkScreen::Pin => params.input_timeout_ms,
        };
        let step = match (screen, a.intent) {
            (_, Intent::Ignore) => None,
            (StkScreen::Display, _) => Some(Step::Read),
            (StkScreen::YesNo, _) | (StkScreen::Pin, Intent::Deny) => Some(Step::Decide),
            (StkScreen::Pin, Intent::Approve) => Some(Step::EnterPin),
        };
        let act_at = step.map(|s| now.add_millis(params.user.draw_delay_ms(&mut a.rng, s)));
        a.stk = Some(StkUi {
            details,
            screen,
            act_at,
            timeout_at: now.add_millis(timeout),
        });
    }

    /// Time has reached `now`: let the user act, or the handset's timers fire.
    pub fn handle_timeout(&mut self, now: VirtualInstant) {
        let params = self.params.clone();
        let pin = self.user_pin();
        let Some(a) = self.active.as_mut() else {
            return;
        };
        if let Some(u) = a.ussd.take_if(|u| u.answer_at <= now) {
            a.outbox.push_back(MoMessage::UssdAnswer { text: u.answer });
        }
        let tr = match a.stk.as_ref() {
            Some(ui) if ui.timeout_at <= now && ui.act_at.is_none_or(|t| t >= ui.timeout_at) => {
                Some(TerminalResponse::new(
                    ui.details,
                    ResultCode::NoResponseFromUser,
                ))
            }
            Some(ui) if ui.act_at.is_some_and(|t| t <= now) => Some(match (ui.screen, a.intent) {
                (StkScreen::Display, _) => TerminalResponse::new(ui.details, ResultCode::Ok),
                (StkScreen::YesNo, intent) => {
                    TerminalResponse::yes_no(ui.details, intent == Intent::Approve)
                }
                (StkScreen::Pin, Intent::Approve) => {
                    let typed = params.user.type_pin(&mut a.rng, pin.digits());
                    TerminalResponse::text(
                        ui.details,
                        TextString::gsm7(String::from_utf8_lossy(&typed).into_owned()),
                    )
                }
                (StkScreen::Pin, _) => {
                    TerminalResponse::new(ui.details, ResultCode::SessionTerminatedByUser)
                }
            }),
            _ => None,
        };
        if let Some(tr) = tr {
            a.stk = None;
            let sw = self.send_tr(now, tr);
            self.drive_card(now, sw);
        }
        self.gc();
    }

    /// The next MO message to send.
    pub fn poll_mo(&mut self) -> Option<MoMessage> {
        let m = self.active.as_mut()?.outbox.pop_front();
        self.gc();
        m
    }

    /// When to call [`Handset::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<VirtualInstant> {
        let a = self.active.as_ref()?;
        let ussd = a.ussd.as_ref().map(|u| u.answer_at);
        let stk = a
            .stk
            .as_ref()
            .map(|s| s.act_at.map_or(s.timeout_at, |t| t.min(s.timeout_at)));
        match (ussd, stk) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        }
    }

    /// True when nothing is pending (no dialog, nothing to send).
    pub fn is_idle(&self) -> bool {
        self.active.is_none()
    }

    fn gc(&mut self) {
        if self.active.as_ref().is_some_and(|a| {
            a.stk.is_none()
                && a.ussd.is_none()
                && a.outbox.is_empty()
                && (!a.ussd_open || a.intent == Intent::Ignore)
        }) {
            self.active = None;
        }
    }
}

/// Build the SMS-DELIVER the handset hands to the card: `44 OA 7F F6 SCTS UDL UD`, with the user
/// data as the SMSC delivered it (UDH included).
fn deliver_tpdu(sms: &MtSms) -> Option<Vec<u8>> {
    if sms.user_data.len() > 140 {
        return None;
    }
    let addr = Address::international(sms.originator.clone());
    let mut out = vec![
        0x44,
        u8::try_from(addr.digits.chars().count()).ok()?,
        addr.ton_npi,
    ];
    out.extend(addr.bcd().ok()?);
    out.extend_from_slice(&[PID_SIM_DATA_DOWNLOAD, sms.data_coding]);
    // TP-SCTS: the card does not look at it; a fixed plausible time keeps runs reproducible.
    out.extend_from_slice(&[0x32, 0x01, 0x13, 0x02, 0x00, 0x00, 0x00]);
    out.push(sms.user_data.len() as u8);
    out.extend_from_slice(&sms.user_data);
    Some(out)
}

fn mo_sms(tpdu: &[u8]) -> Option<MoSms> {
    let s = SecuredSubmit::decode(tpdu).ok()?;
    let mut user_data = vec![
        0x02,
        if s.iei == PacketIei::Response {
            0x71
        } else {
            0x70
        },
        0x00,
    ];
    user_data.extend_from_slice(&s.packet);
    Some(MoSms {
        destination: s.destination.digits,
        protocol_id: PID_SIM_DATA_DOWNLOAD,
        data_coding: DCS_8BIT_CLASS2,
        udhi: true,
        user_data,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn params() -> Arc<HandsetParams> {
        Arc::new(HandsetParams {
            user: UserParams {
                p_ignore: 0.0,
                p_deny: 0.0,
                p_wrong_pin: 0.0,
                ..UserParams::default()
            },
            ..HandsetParams::default()
        })
    }

    #[test]
    fn an_idle_handset_is_32_bytes() {
        assert_eq!(std::mem::size_of::<Handset>(), 32);
        let h = Handset::new(params(), 1, true);
        assert!(h.is_idle());
        assert_eq!(h.poll_timeout(), None);
    }

    #[test]
    fn ussd_prompt_is_answered_after_a_think_time() {
        let mut h = Handset::new(params(), 1, false);
        h.handle_mt_ussd(
            VirtualInstant(0),
            UssdMt {
                text: "Gov.pl: log in? 1 Yes 2 No".into(),
                expects_answer: true,
            },
        );
        let t = h.poll_timeout().unwrap();
        assert!(t.as_millis() >= 700 * 2, "{t:?}");
        assert_eq!(h.poll_mo(), None);
        h.handle_timeout(t);
        assert_eq!(
            h.poll_mo(),
            Some(MoMessage::UssdAnswer { text: "1".into() })
        );
        h.handle_mt_ussd(
            t,
            UssdMt {
                text: "Done".into(),
                expects_answer: false,
            },
        );
        assert!(h.is_idle());
    }

    #[test]
    fn ussd_pin_prompt_gets_the_users_pin() {
        let mut h = Handset::new(params(), 2, false);
        h.handle_mt_ussd(
            VirtualInstant(0),
            UssdMt {
                text: "Podaj PIN".into(),
                expects_answer: true,
            },
        );
        let t = h.poll_timeout().unwrap();
        h.handle_timeout(t);
        let pin = String::from_utf8(h.user_pin().digits().to_vec()).unwrap();
        assert_eq!(h.poll_mo(), Some(MoMessage::UssdAnswer { text: pin }));
    }

    #[test]
    fn ignoring_user_never_answers_ussd() {
        let p = Arc::new(HandsetParams {
            user: UserParams {
                p_ignore: 1.0,
                ..UserParams::default()
            },
            ..HandsetParams::default()
        });
        let mut h = Handset::new(p, 3, false);
        h.handle_mt_ussd(
            VirtualInstant(0),
            UssdMt {
                text: "1 Yes 2 No".into(),
                expects_answer: true,
            },
        );
        assert_eq!(h.poll_timeout(), None);
        assert_eq!(h.poll_mo(), None);
    }

    #[test]
    fn same_seed_same_behaviour() {
        let run = || {
            let mut h = Handset::new(Arc::new(HandsetParams::default()), 42, false);
            h.handle_mt_ussd(
                VirtualInstant(0),
                UssdMt {
                    text: "1 Yes 2 No".into(),
                    expects_answer: true,
                },
            );
            h.poll_timeout()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn sms_without_applet_or_wrong_pid_is_ignored() {
        let mut h = Handset::new(params(), 1, false);
        let sms = MtSms {
            originator: "123".into(),
            protocol_id: 0x7F,
            data_coding: 0xF6,
            user_data: vec![2, 0x70, 0],
        };
        h.handle_mt_sms_pp(VirtualInstant(0), &sms);
        assert!(h.is_idle());
        let mut h = Handset::new(params(), 1, true);
        h.handle_mt_sms_pp(
            VirtualInstant(0),
            &MtSms {
                protocol_id: 0,
                ..sms
            },
        );
        assert!(h.is_idle());
    }
}
