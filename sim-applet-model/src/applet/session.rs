//! One authentication dialog on the card, as a state machine over proactive commands: DISPLAY
//! TEXT, then GET INKEY Yes/No (LoA2) or GET INPUT hidden digits (LoA3, asked again after a wrong
//! PIN while tries are left), ending in an [`Outcome`]. The caller (the applet in `mod.rs`) feeds
//! it the terminal responses, already reduced to a [`TrSummary`], and sends the answer.

use super::pin::{PinCheck, PinObject, PIN_MAX, PIN_MIN};
use super::protocol::{AuthRequest, DenyReason, ErrorCode, Loa, Outcome, TextEncoding};
use crate::cat::{
    Command, DisplayText, DisplayTextQualifier, GetInkey, GetInkeyQualifier, GetInput,
    GetInputQualifier, ProactiveCommand, ResponseLength, TextString,
};
use crate::handset::VirtualInstant;

/// What the applet needs from a terminal response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrSummary {
    /// General result octet (00 OK, 10 terminated, 11 backward, 12 no response, ...).
    pub result: u8,
    /// GET INKEY Yes/No: `Some(true)` for Yes.
    pub yes: Option<bool>,
    /// GET INPUT: the characters typed, as octets of the text (digits are ASCII).
    pub input: Option<Vec<u8>>,
}

/// Where the dialog is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Display,
    YesNo,
    Pin,
}

/// A running dialog.
#[derive(Debug, Clone)]
pub(crate) struct Dialog {
    pub txid: [u8; 8],
    pub challenge: [u8; 16],
    loa: Loa,
    pub deadline: VirtualInstant,
    encoding: TextEncoding,
    question: String,
    step: Step,
    /// Command number of the command in flight (1..=254, wraps).
    pub number: u8,
}

/// What to do after a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    Ask(ProactiveCommand),
    Done(Outcome),
}

fn decode_text(encoding: TextEncoding, octets: &[u8]) -> String {
    // The request decoder checked the octets against the encoding; a character this crate's
    // tables still refuse is shown as '?' rather than failing the dialog.
    let r = match encoding {
        TextEncoding::Gsm7Unpacked => crate::text::gsm7_decode(octets),
        TextEncoding::Ucs2 => crate::text::ucs2_decode(octets),
    };
    r.unwrap_or_else(|_| "?".to_string())
}

impl Dialog {
    /// Start a dialog: the first command is the DISPLAY TEXT.
    pub fn start(req: &AuthRequest, now: VirtualInstant, number: u8) -> (Self, ProactiveCommand) {
        let default_q = match req.loa {
            Loa::Loa2 => "OK?",
            Loa::Loa3 => "PIN:",
        };
        let question = req
            .question
            .as_deref()
            .map(|q| decode_text(req.encoding, q))
            .unwrap_or_else(|| default_q.to_string());
        let mut text = decode_text(req.encoding, &req.rp_name);
        text.push('\n');
        text.push_str(&decode_text(req.encoding, &req.consent));
        if !req.binding_code.is_empty() {
            text.push('\n');
            text.push_str(&decode_text(req.encoding, &req.binding_code));
        }
        let d = Dialog {
            txid: req.txid,
            challenge: req.challenge,
            loa: req.loa,
            deadline: now.add_secs(u64::from(req.expiry_secs)),
            encoding: req.encoding,
            question,
            step: Step::Display,
            number,
        };
        let cmd = Command::DisplayText(DisplayText {
            qualifier: DisplayTextQualifier {
                high_priority: true,
                wait_for_user_clear: true,
            },
            text: d.text(text),
            immediate_response: false,
            duration: None,
        });
        (d, ProactiveCommand::new(number, cmd))
    }

    fn text(&self, s: String) -> TextString {
        match self.encoding {
            TextEncoding::Gsm7Unpacked => TextString::gsm7(s),
            TextEncoding::Ucs2 => TextString::ucs2(s),
        }
    }

    fn next_number(&mut self) -> u8 {
        self.number = if self.number >= 0xFE {
            1
        } else {
            self.number + 1
        };
        self.number
    }

    fn ask_pin(&mut self, prefix: Option<String>) -> Next {
        self.step = Step::Pin;
        let mut t = prefix.unwrap_or_default();
        t.push_str(&self.question);
        let cmd = Command::GetInput(GetInput {
            qualifier: GetInputQualifier {
                alphabet: false,
                ucs2: false,
                hidden: true,
                packed: false,
                help: false,
            },
            text: self.text(t),
            response_length: ResponseLength {
                min: PIN_MIN as u8,
                max: PIN_MAX as u8,
            },
            default_text: None,
        });
        let n = self.next_number();
        Next::Ask(ProactiveCommand::new(n, cmd))
    }

    /// Feed the terminal response to the command in flight.
    pub fn on_terminal_response(
        &mut self,
        now: VirtualInstant,
        tr: &TrSummary,
        pins: &mut PinObject,
    ) -> Next {
        // The card learns the time only with each APDU; anything answered after the deadline is
        // reported as expired, whatever the user did.
        if now > self.deadline {
            return Next::Done(Outcome::NoResponse { expired: true });
        }
        match tr.result {
            0x00..=0x0F => {}
            0x10 | 0x11 => {
                return Next::Done(Outcome::Denied {
                    reason: DenyReason::SessionTerminated,
                })
            }
            0x12 => return Next::Done(Outcome::NoResponse { expired: false }),
            _ => return Next::Done(Outcome::Error(ErrorCode::TerminalFailure)),
        }
        match self.step {
            Step::Display => match self.loa {
                Loa::Loa2 => {
                    self.step = Step::YesNo;
                    let cmd = Command::GetInkey(GetInkey {
                        qualifier: GetInkeyQualifier {
                            alphabet: false,
                            ucs2: false,
                            yes_no: true,
                            immediate: false,
                            help: false,
                        },
                        text: self.text(self.question.clone()),
                        duration: None,
                    });
                    let n = self.next_number();
                    Next::Ask(ProactiveCommand::new(n, cmd))
                }
                Loa::Loa3 => {
                    if pins.is_blocked() {
                        return Next::Done(Outcome::PinBlocked { now: false });
                    }
                    self.ask_pin(None)
                }
            },
            Step::YesNo => match tr.yes {
                Some(true) => Next::Done(Outcome::Approved { loa: Loa::Loa2 }),
                Some(false) => Next::Done(Outcome::Denied {
                    reason: DenyReason::UserSaidNo,
                }),
                None => Next::Done(Outcome::Error(ErrorCode::TerminalFailure)),
            },
            Step::Pin => {
                let Some(input) = tr.input.as_deref() else {
                    return Next::Done(Outcome::Error(ErrorCode::TerminalFailure));
                };
                match pins.verify(input) {
                    PinCheck::Correct => Next::Done(Outcome::Approved { loa: Loa::Loa3 }),
                    PinCheck::Wrong { tries_left } => {
                        self.ask_pin(Some(format!("Wrong PIN, {tries_left} left. ")))
                    }
                    PinCheck::Blocked { just_now } => {
                        Next::Done(Outcome::PinBlocked { now: just_now })
                    }
                }
            }
        }
    }
}
