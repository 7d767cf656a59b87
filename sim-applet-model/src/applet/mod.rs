//! Our Mobile Connect authenticator applet, as a card that answers APDUs (the protocol is in
//! `docs/stk-applet-protocol.md`).
//!
//! Data flow: the handset sends an ENVELOPE (SMS-PP DOWNLOAD) to [`Applet::process_apdu`] (one
//! per SMS; segments of a concatenated packet are joined by [`reassembly`] first); the
//! card's OTA layer opens the secured command packet with `ota` (CC, ciphering, counter policy)
//! and either answers at once with an error PoR or hands the data to the applet, which decodes
//! the [`protocol::AuthRequest`] and runs a `session` dialog: each step is a proactive command
//! (`91 XX`, FETCH, TERMINAL RESPONSE). The end of every path is a SEND SHORT MESSAGE carrying
//! the PoR with the MACed [`protocol::AuthAnswer`] back to the gateway.
//!
//! - [`protocol`]: the request/answer codec and the card's MAC, shared with the gateway.
//! - [`pin`]: the PIN object (try counter, PUK).
//! - [`state`]: provisioned secrets and the durable state (18 octets).
//! - [`reassembly`]: concatenated command packets, one ENVELOPE per segment, joined on the card.
//! - `session`: one dialog as a state machine over proactive commands.
//! - [`gateway`]: what the gateway calls: build the request SMS, open and verify the answer.

pub mod gateway;
pub mod pin;
pub mod protocol;
pub mod reassembly;
mod session;
pub mod state;

use crate::cat::apdu::{CLA_TOOLKIT, INS_ENVELOPE, INS_FETCH, INS_TERMINAL_RESPONSE};
use crate::cat::tpdu::{DeliverSegment, PacketIei, SecuredSubmit};
use crate::cat::{
    Address, Apdu, Command, CommandDetails, ProactiveCommand, ResponseData, SendShortMessage,
    SmsPpDownload, StatusWord, TerminalResponse,
};
use crate::handset::VirtualInstant;
use crate::ota::ChecksumKind;
use crate::ota::{
    check_counter, inspect_command, CommandHeader, Counter, CounterPolicy, KeySet, PorRequired,
    PorSecurity, ResponsePacket, ResponseStatus, Spi,
};

use pin::{PinError, PinObject};
use protocol::{AuthAnswer, AuthRequest, ErrorCode, Loa, Outcome, CHALLENGE_LEN, TAR};
use reassembly::{Fed, Reassembly};
use session::{Dialog, Next, TrSummary};
use state::{AppletState, CardSecrets};

/// Status words the card answers with besides the toolkit ones.
const SW_WRONG_DATA: [u8; 2] = [0x6A, 0x80];
const SW_CONDITIONS: [u8; 2] = [0x69, 0x85];
const SW_CLA: [u8; 2] = [0x6E, 0x00];
const SW_INS: [u8; 2] = [0x6D, 0x00];

/// Where the PoR goes and how it is secured.
#[derive(Debug, Clone)]
struct PorTarget {
    header: CommandHeader,
    counter: Counter,
    reply_to: Address,
}

/// The proactive session in progress.
#[derive(Debug)]
struct Run {
    dialog: Option<Dialog>,
    por: PorTarget,
    /// Encoded proactive command waiting for FETCH.
    pending: Option<Vec<u8>>,
    /// Details of the command whose terminal response is awaited.
    awaiting: Option<CommandDetails>,
    /// The SEND SHORT MESSAGE is out: its terminal response ends the session.
    sending: bool,
}

/// The card: OTA layer plus the authenticator applet.
#[derive(Debug)]
pub struct Applet {
    secrets: CardSecrets,
    pins: PinObject,
    last_counter: u64,
    message_reference: u8,
    run: Option<Box<Run>>,
    /// Concatenated packets in progress; boxed only while one is.
    reassembly: Option<Box<Reassembly>>,
}

impl Applet {
    /// A card fresh from issuance.
    pub fn new(secrets: CardSecrets) -> Self {
        let st = AppletState::fresh(&secrets);
        Self::restore(secrets, st)
    }

    /// A card whose non-volatile state was kept by a store.
    pub fn restore(secrets: CardSecrets, state: AppletState) -> Self {
        Applet {
            pins: state.pin_object(&secrets),
            secrets,
            last_counter: state.last_counter,
            message_reference: 0,
            run: None,
            reassembly: None,
        }
    }

    /// The non-volatile state to persist (after every APDU that may change it).
    pub fn state(&self) -> AppletState {
        AppletState {
            last_counter: self.last_counter,
            pin_tries_left: self.pins.pin_tries_left(),
            puk_tries_left: self.pins.puk_tries_left(),
            pin: *self.pins.pin(),
        }
    }

    /// Unblock the PIN with the PUK and set a new PIN.
    pub fn unblock_with_puk(&mut self, puk: &[u8], new_pin: &[u8]) -> Result<(), PinError> {
        self.pins.unblock_with_puk(puk, new_pin)
    }

    /// PIN tries left.
    pub fn pin_tries_left(&self) -> u8 {
        self.pins.pin_tries_left()
    }

    /// Concatenated command packets waiting for segments (expired ones are dropped at the next
    /// APDU).
    pub fn pending_concatenations(&self) -> usize {
        self.reassembly.as_ref().map_or(0, |r| r.pending())
    }

    /// True while a proactive session runs.
    pub fn is_busy(&self) -> bool {
        self.run.is_some()
    }

    /// Process one command APDU and return the response APDU (data, SW1, SW2). Never panics.
    pub fn process_apdu(&mut self, now: VirtualInstant, apdu: &[u8]) -> Vec<u8> {
        let Ok(apdu) = Apdu::decode(apdu) else {
            return vec![0x67, 0x00];
        };
        if apdu.cla != CLA_TOOLKIT {
            return SW_CLA.to_vec();
        }
        if let Some(r) = self.reassembly.as_mut() {
            r.expire(now);
            if r.pending() == 0 {
                self.reassembly = None;
            }
        }
        match apdu.ins {
            INS_ENVELOPE => self.envelope(now, &apdu.data),
            INS_FETCH => match self.run.as_mut().and_then(|r| r.pending.take()) {
                Some(mut cmd) => {
                    cmd.extend_from_slice(&StatusWord::Ok.to_bytes());
                    cmd
                }
                None => SW_CONDITIONS.to_vec(),
            },
            INS_TERMINAL_RESPONSE => self.terminal_response(now, &apdu.data),
            _ => SW_INS.to_vec(),
        }
    }

    fn envelope(&mut self, now: VirtualInstant, data: &[u8]) -> Vec<u8> {
        if self.run.is_some() {
            return StatusWord::ToolkitBusy.to_bytes().to_vec();
        }
        let Ok(env) = SmsPpDownload::decode(data) else {
            return SW_WRONG_DATA.to_vec();
        };
        let Ok(seg) = DeliverSegment::decode(&env.tpdu) else {
            return SW_WRONG_DATA.to_vec();
        };
        match seg.header.concat.filter(|c| c.total > 1) {
            None => {
                if seg.header.packet != Some(PacketIei::Command) {
                    return SW_WRONG_DATA.to_vec();
                }
                self.command_packet(now, &seg.body, seg.originator)
            }
            Some(concat) => {
                let r = self.reassembly.get_or_insert_with(Box::default);
                match r.feed(now, &seg.originator, concat, seg.header.packet, &seg.body) {
                    Fed::Complete(packet) => {
                        if r.pending() == 0 {
                            self.reassembly = None;
                        }
                        self.command_packet(now, &packet, seg.originator)
                    }
                    // A segment is acknowledged like any SMS-PP download without an answer yet;
                    // a refused one too, since nothing the network can do would fix it.
                    Fed::Waiting | Fed::Duplicate | Fed::Refused(_) => {
                        if r.pending() == 0 {
                            self.reassembly = None;
                        }
                        StatusWord::Ok.to_bytes().to_vec()
                    }
                }
            }
        }
    }

    fn key_set(&self) -> KeySet {
        gateway::applet_key_set(&self.secrets)
    }

    /// The OTA layer: open the packet, judge security level and counter, then run the applet.
    fn command_packet(&mut self, now: VirtualInstant, packet: &[u8], reply_to: Address) -> Vec<u8> {
        let keys = self.key_set();
        let lookup = |h: &CommandHeader| (h.tar == TAR).then(|| keys.clone());
        let decoded = match inspect_command(packet, &lookup) {
            Ok(d) => d,
            Err(e) => return self.unopened_error(packet, reply_to, e.response_status()),
        };
        let p = decoded.packet;
        let por = PorTarget {
            header: p.header(),
            counter: p.counter,
            reply_to,
        };
        let status = match decoded.cc {
            None => Some(ResponseStatus::InsufficientSecurityLevel),
            Some(cc) if !cc.valid => Some(ResponseStatus::ChecksumFailed),
            Some(_) if !secure_enough(&p.spi) => Some(ResponseStatus::InsufficientSecurityLevel),
            Some(_) => check_counter(p.spi.counter, self.last_counter, p.counter.value()).err(),
        };
        if let Some(status) = status {
            // Nothing is shown for a packet the OTA layer refused.
            if p.spi.por == PorRequired::None {
                return StatusWord::Ok.to_bytes().to_vec();
            }
            return self.send_por(por, status, Vec::new());
        }
        // Stored before anything is shown, so a replay during the dialog is already refused.
        self.last_counter = p.counter.value();

        let req = match AuthRequest::decode(&p.data) {
            Ok(r) => r,
            Err(e) => {
                let txid = AuthRequest::peek_txid(&p.data).unwrap_or_default();
                let challenge = peek_challenge(&p.data);
                let outcome = Outcome::Error(ErrorCode::for_decode_error(&e));
                return self.send_answer(por, txid, challenge, outcome);
            }
        };
        if req.loa == Loa::Loa3 && self.pins.is_blocked() {
            let outcome = if self.pins.is_puk_blocked() {
                Outcome::Error(ErrorCode::CardLocked)
            } else {
                Outcome::PinBlocked { now: false }
            };
            return self.send_answer(por, req.txid, req.challenge, outcome);
        }
        let (dialog, cmd) = Dialog::start(&req, now, 1);
        let mut run = Box::new(Run {
            dialog: Some(dialog),
            por,
            pending: None,
            awaiting: None,
            sending: false,
        });
        let sw = queue(&mut run, &cmd);
        match sw {
            Some(sw) => {
                self.run = Some(run);
                sw
            }
            None => self.send_answer(
                run.por,
                req.txid,
                req.challenge,
                Outcome::Error(ErrorCode::TerminalFailure),
            ),
        }
    }

    /// A packet that did not open (unknown TAR, bad length ...): if its clear header says a PoR
    /// is wanted, answer unsecured, since no key can be trusted for it.
    fn unopened_error(
        &mut self,
        packet: &[u8],
        reply_to: Address,
        status: ResponseStatus,
    ) -> Vec<u8> {
        let (Some(spi), Some(tar)) = (packet.get(3..5), packet.get(7..10)) else {
            return StatusWord::Ok.to_bytes().to_vec();
        };
        let spi = Spi::from_bytes([spi[0], spi[1]]);
        if spi.por == PorRequired::None {
            return StatusWord::Ok.to_bytes().to_vec();
        }
        let mut header = CommandHeader {
            spi,
            kic: crate::ota::Kic::from_byte(0),
            kid: crate::ota::Kid::from_byte(0),
            tar: [tar[0], tar[1], tar[2]],
        };
        header.spi.por_checksum = ChecksumKind::None;
        header.spi.por_ciphered = false;
        self.send_por(
            PorTarget {
                header,
                counter: Counter::default(),
                reply_to,
            },
            status,
            Vec::new(),
        )
    }

    fn send_answer(
        &mut self,
        por: PorTarget,
        txid: [u8; 8],
        challenge: [u8; CHALLENGE_LEN],
        outcome: Outcome,
    ) -> Vec<u8> {
        let answer = AuthAnswer::new_signed(
            &self.secrets.k_auth,
            por.counter.to_bytes(),
            txid,
            &challenge,
            outcome,
        );
        self.send_por(por, ResponseStatus::PorOk, answer.encode())
    }

    /// Issue SEND SHORT MESSAGE with the PoR; the session ends with its terminal response.
    fn send_por(&mut self, por: PorTarget, status: ResponseStatus, data: Vec<u8>) -> Vec<u8> {
        let sec =
            if por.header.spi.por_checksum == ChecksumKind::None && !por.header.spi.por_ciphered {
                PorSecurity::none()
            } else {
                PorSecurity::for_command(&por.header)
            };
        let rp = ResponsePacket {
            tar: por.header.tar,
            counter: por.counter,
            status,
            data,
        };
        let Ok(user_data) = rp.encode(&sec, &self.key_set()) else {
            return StatusWord::Ok.to_bytes().to_vec();
        };
        self.message_reference = self.message_reference.wrapping_add(1);
        let submit = SecuredSubmit {
            message_reference: self.message_reference,
            destination: por.reply_to.clone(),
            iei: PacketIei::Response,
            packet: user_data.get(3..).unwrap_or_default().to_vec(),
        };
        let Ok(tpdu) = submit.encode() else {
            return StatusWord::Ok.to_bytes().to_vec();
        };
        let number = self
            .run
            .as_ref()
            .and_then(|r| r.dialog.as_ref())
            .map(|d| if d.number >= 0xFE { 1 } else { d.number + 1 })
            .unwrap_or(1);
        let cmd = ProactiveCommand::new(
            number,
            Command::SendShortMessage(SendShortMessage {
                packing_required: false,
                alpha_id: None,
                address: None,
                tpdu,
            }),
        );
        let mut run = Box::new(Run {
            dialog: None,
            por,
            pending: None,
            awaiting: None,
            sending: true,
        });
        match queue(&mut run, &cmd) {
            Some(sw) => {
                self.run = Some(run);
                sw
            }
            None => {
                self.run = None;
                StatusWord::Ok.to_bytes().to_vec()
            }
        }
    }

    fn terminal_response(&mut self, now: VirtualInstant, data: &[u8]) -> Vec<u8> {
        let Some(mut run) = self.run.take() else {
            return SW_CONDITIONS.to_vec();
        };
        let Some(awaiting) = run.awaiting else {
            self.run = Some(run);
            return SW_CONDITIONS.to_vec();
        };
        if run.sending {
            return StatusWord::Ok.to_bytes().to_vec();
        }
        let summary = match TerminalResponse::decode(data) {
            Ok(tr) if tr.command.number == awaiting.number => TrSummary {
                result: u8::from(tr.result),
                yes: match &tr.response {
                    ResponseData::YesNo(y) => Some(*y),
                    _ => None,
                },
                input: match tr.response {
                    ResponseData::Text(t) => Some(t.text.into_bytes()),
                    _ => None,
                },
            },
            // Not understood or for another command: end the dialog with an error answer.
            _ => TrSummary {
                result: 0x32,
                yes: None,
                input: None,
            },
        };
        let Some(dialog) = run.dialog.as_mut() else {
            return StatusWord::Ok.to_bytes().to_vec();
        };
        let (txid, challenge) = (dialog.txid, dialog.challenge);
        match dialog.on_terminal_response(now, &summary, &mut self.pins) {
            Next::Ask(cmd) => match queue(&mut run, &cmd) {
                Some(sw) => {
                    self.run = Some(run);
                    sw
                }
                None => {
                    let por = run.por.clone();
                    self.run = Some(run);
                    self.send_answer(
                        por,
                        txid,
                        challenge,
                        Outcome::Error(ErrorCode::TerminalFailure),
                    )
                }
            },
            Next::Done(outcome) => {
                let por = run.por.clone();
                self.run = Some(run);
                self.send_answer(por, txid, challenge, outcome)
            }
        }
    }
}

/// Put a command up for FETCH; `None` if it cannot be encoded in one FETCH.
fn queue(run: &mut Run, cmd: &ProactiveCommand) -> Option<Vec<u8>> {
    let bytes = cmd.encode().ok()?;
    let len = u8::try_from(bytes.len()).ok()?;
    run.pending = Some(bytes);
    run.awaiting = Some(cmd.details());
    Some(StatusWord::ProactiveCommandPending(len).to_bytes().to_vec())
}

/// The security the applet insists on (doc §1): CC, ciphering, a checked counter.
fn secure_enough(spi: &Spi) -> bool {
    spi.checksum == ChecksumKind::Cc
        && spi.ciphered
        && matches!(
            spi.counter,
            CounterPolicy::Higher | CounterPolicy::OneHigher
        )
}

fn peek_challenge(data: &[u8]) -> [u8; CHALLENGE_LEN] {
    data.get(10..26)
        .and_then(|s| <[u8; CHALLENGE_LEN]>::try_from(s).ok())
        .unwrap_or_default()
}
