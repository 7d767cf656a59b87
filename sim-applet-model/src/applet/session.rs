//! One authentication dialog on the card, as a state machine over proactive commands: DISPLAY
//! TEXT (several pages when the text is longer than one FETCH carries), then GET INKEY Yes/No (LoA2) or GET INPUT hidden digits (LoA3, asked again after a wrong
//! PIN while tries are left), ending in an [`Outcome`]. The caller (the applet in `mod.rs`) feeds
//! it the terminal responses, already reduced to a [`TrSummary`], and sends the answer.

use super::pin::{PinCheck, PinObject, PIN_MAX, PIN_MIN};
use super::protocol::{AuthRequest, DenyReason, ErrorCode, Loa, Outcome, TextEncoding};
use crate::cat::{
    Command, DisplayText, DisplayTextQualifier, GetInkey, GetInkeyQualifier, GetInput,
    GetInputQualifier, ProactiveCommand, ResponseLength, TextString,
};
use crate::handset::VirtualInstant;

/// Most text octets (after the DCS) of a DISPLAY TEXT that still fits one FETCH (255 octets):
/// `D0 81 L`, command details (5), device identities (4), `8D 81 L` and the DCS take 16.
pub const MAX_DISPLAY_OCTETS: usize = 239;

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
    /// DISPLAY TEXT pages still to show, in order.
    pages: std::collections::VecDeque<String>,
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
        let mut pages = paginate(&text, req.encoding, MAX_DISPLAY_OCTETS);
        let first = pages.pop_front().unwrap_or_default();
        let d = Dialog {
            txid: req.txid,
            challenge: req.challenge,
            loa: req.loa,
            deadline: now.add_secs(u64::from(req.expiry_secs)),
            encoding: req.encoding,
            question,
            pages,
            step: Step::Display,
            number,
        };
        let cmd = d.display(first);
        (d, ProactiveCommand::new(number, cmd))
    }

    fn display(&self, page: String) -> Command {
        Command::DisplayText(DisplayText {
            qualifier: DisplayTextQualifier {
                high_priority: true,
                wait_for_user_clear: true,
            },
            text: self.text(page),
            immediate_response: false,
            duration: None,
        })
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
            Step::Display if !self.pages.is_empty() => {
                let page = self.pages.pop_front().unwrap_or_default();
                let cmd = self.display(page);
                let n = self.next_number();
                Next::Ask(ProactiveCommand::new(n, cmd))
            }
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

/// Octets one character takes in a CAT text string of `encoding`.
fn char_octets(encoding: TextEncoding, c: char) -> usize {
    match encoding {
        TextEncoding::Ucs2 => 2 * c.len_utf16(),
        TextEncoding::Gsm7Unpacked => {
            let mut buf = [0u8; 4];
            crate::text::gsm7_len(c.encode_utf8(&mut buf)).unwrap_or(1)
        }
    }
}

/// Split `text` into DISPLAY TEXT pages of at most `max` octets, breaking after the last
/// whitespace of a full page when there is one (a word is cut only if it fills a page alone).
/// Text that fits is one page, unchanged.
fn paginate(text: &str, encoding: TextEncoding, max: usize) -> std::collections::VecDeque<String> {
    let mut pages = std::collections::VecDeque::new();
    let mut cur = String::new();
    let mut used = 0usize;
    // Byte offset in `cur` just after its last whitespace, and the octets up to there.
    let mut last_break: Option<(usize, usize)> = None;
    for c in text.chars() {
        let cost = char_octets(encoding, c);
        while used + cost > max && !cur.is_empty() {
            match last_break.take() {
                Some((at, octets)) => {
                    let rest = cur.split_off(at);
                    pages.push_back(cur.trim_end().to_string());
                    cur = rest;
                    used -= octets;
                }
                None => {
                    pages.push_back(std::mem::take(&mut cur));
                    used = 0;
                }
            }
        }
        cur.push(c);
        used += cost;
        if c.is_whitespace() {
            last_break = Some((cur.len(), used));
        }
    }
    if !cur.is_empty() || pages.is_empty() {
        pages.push_back(cur);
    }
    pages
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_text_is_one_unchanged_page() {
        let p = paginate("Gov.pl\nLogin ", TextEncoding::Gsm7Unpacked, 239);
        assert_eq!(p, ["Gov.pl\nLogin "]);
        assert_eq!(paginate("", TextEncoding::Ucs2, 239), [""]);
    }

    #[test]
    fn long_ucs2_text_breaks_between_words() {
        let text =
            "Urząd Gminy Warszawa-Bemowo\nmDokumenty: potwierdź udostępnienie danych dowodu \
                    osobistego dla: Urząd Gminy Warszawa-Bemowo. Podaj PIN\n4821";
        let p = paginate(text, TextEncoding::Ucs2, MAX_DISPLAY_OCTETS);
        assert_eq!(p.len(), 2);
        assert!(p[0].ends_with("dla: Urząd Gminy"), "{p:?}");
        assert_eq!(p[1], "Warszawa-Bemowo. Podaj PIN\n4821");
        assert!(p
            .iter()
            .all(|s| s.encode_utf16().count() * 2 <= MAX_DISPLAY_OCTETS));
    }

    #[test]
    fn a_word_longer_than_a_page_is_cut() {
        let p = paginate(&"x".repeat(10), TextEncoding::Gsm7Unpacked, 4);
        assert_eq!(p, ["xxxx", "xxxx", "xx"]);
    }

    proptest! {
        #[test]
        fn pages_fit_and_keep_every_non_space_character(text in "[a-zżó \n{}]{0,400}", max in 2usize..60) {
            for enc in [TextEncoding::Ucs2, TextEncoding::Gsm7Unpacked] {
                let pages = paginate(&text, enc, max);
                for p in &pages {
                    prop_assert!(p.chars().map(|c| char_octets(enc, c)).sum::<usize>() <= max);
                }
                let joined: String = pages.iter().flat_map(|p| p.chars()).filter(|c| !c.is_whitespace()).collect();
                let orig: String = text.chars().filter(|c| !c.is_whitespace()).collect();
                prop_assert_eq!(joined, orig);
            }
        }
    }
}
