//! One network-initiated USSD authorization push as a sans-IO state machine.
//!
//! Flow: [`UssdDialog::new`] builds the prompt (`"… 1=OK 2=Cancel"` for LoA2, `"… Enter PIN"`
//! for LoA3) in the operator's [`Dialect`]; the shell takes it from
//! [`poll_transmit`](UssdDialog::poll_transmit), submits it and reports the bind's verdict to
//! [`handle_submit_result`](UssdDialog::handle_submit_result). The user's answer arrives as a
//! [`UssdMo`] through [`handle_mo`](UssdDialog::handle_mo), matched by MSISDN plus session key;
//! the shell wakes the dialog at [`poll_timeout`](UssdDialog::poll_timeout) through
//! [`handle_timeout`](UssdDialog::handle_timeout). [`poll_result`](UssdDialog::poll_result)
//! yields exactly one [`UssdOutcome`]; the dialog then queues its final screen ("Confirmed" /
//! "Cancelled") or, when the user never answered, an abort that releases the network's dialog.
//!
//! A PIN typed over USSD is not checked here: the dialog yields [`UssdOutcome::PinEntered`] and
//! waits for the caller's verdict through [`conclude`](UssdDialog::conclude), which picks the
//! final screen.

use std::collections::VecDeque;
use std::time::Instant;

use rusmpp::pdus::SubmitSm;
use sim_applet_model::applet::protocol::Loa;

use crate::smpp::session::SubmitFailure;
use sim_applet_model::smpp::dialect::{Dialect, DialectError, Step, UssdMo};

/// Final screen after an approval.
pub const SCREEN_CONFIRMED: &str = "Confirmed";
/// Final screen after a refusal, a wrong PIN or a bad answer, or a cancel by the relying party.
pub const SCREEN_CANCELLED: &str = "Cancelled";
/// Final screen when the authorization's time ran out.
pub const SCREEN_EXPIRED: &str = "Expired";

/// What to ask one subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UssdPrompt {
    /// The subscriber (destination of the push, source of the answer).
    pub msisdn: String,
    /// The service code the push comes from (e.g. `*123#`).
    pub service_code: String,
    /// Session key, unique among this MSISDN's open dialogs and within the dialect's range.
    pub key: u16,
    /// LoA2: OK/Cancel; LoA3: a PIN the caller verifies.
    pub loa: Loa,
    /// The consent text shown above the choices.
    pub text: String,
}

/// How one USSD authorization ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UssdOutcome {
    /// The user chose OK (LoA2).
    Approved,
    /// The user chose Cancel or answered something else.
    Denied,
    /// No answer within the step or dialog time limit.
    Expired,
    /// The user or the network aborted the dialog.
    Aborted,
    /// The prompt never reached the network.
    DeliveryError(SubmitFailure),
    /// The user typed this PIN (LoA3); the caller verifies it and calls
    /// [`UssdDialog::conclude`].
    PinEntered(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The prompt is out (or queued); waiting for the answer.
    AwaitAnswer,
    /// A PIN was handed to the caller; waiting for [`UssdDialog::conclude`].
    AwaitVerdict,
    /// The outcome is known; only the final screen may still be queued.
    Done,
}

/// One USSD authorization dialog.
#[derive(Debug)]
pub struct UssdDialog {
    dialect: Dialect,
    prompt: UssdPrompt,
    state: State,
    prompt_accepted: bool,
    step_no: u8,
    step_deadline: Instant,
    session_deadline: Instant,
    outbox: VecDeque<SubmitSm>,
    result: Option<UssdOutcome>,
    /// An answer that came before the prompt's `submit_sm_resp` (possible across binds): held
    /// until that response decides whether the prompt is ours to be answered.
    held: Option<UssdMo>,
}

fn prompt_text(prompt: &UssdPrompt) -> String {
    match prompt.loa {
        Loa::Loa2 => format!("{}\n1=OK 2=Cancel", prompt.text),
        Loa::Loa3 => format!("{}\nEnter PIN", prompt.text),
    }
}

impl UssdDialog {
    /// Starts the dialog at `now`: the prompt is queued for [`poll_transmit`](Self::poll_transmit).
    /// Fails when the prompt does not fit the dialect (text too long, key out of range).
    pub fn new(now: Instant, dialect: Dialect, prompt: UssdPrompt) -> Result<Self, DialectError> {
        let first = dialect.build_submit(
            Step::Start,
            &prompt.msisdn,
            &prompt.service_code,
            prompt.key,
            1,
            &prompt_text(&prompt),
        )?;
        let step_deadline = now + dialect.step_timeout();
        let session_deadline = now + dialect.session_timeout();
        Ok(Self {
            dialect,
            prompt,
            state: State::AwaitAnswer,
            prompt_accepted: false,
            step_no: 1,
            step_deadline,
            session_deadline,
            outbox: VecDeque::from([first]),
            result: None,
            held: None,
        })
    }

    /// A dialog whose prompt an earlier run of the gateway sent (restored after a restart
    /// from what the store kept): nothing to send, the answer is awaited until `deadline`.
    pub fn resumed(dialect: Dialect, prompt: UssdPrompt, deadline: Instant) -> Self {
        Self {
            dialect,
            prompt,
            state: State::AwaitAnswer,
            prompt_accepted: true,
            step_no: 1,
            step_deadline: deadline,
            session_deadline: deadline,
            outbox: VecDeque::new(),
            result: None,
            held: None,
        }
    }

    /// The subscriber.
    pub fn msisdn(&self) -> &str {
        &self.prompt.msisdn
    }

    /// The session key.
    pub fn key(&self) -> u16 {
        self.prompt.key
    }

    /// The next `submit_sm` to send.
    pub fn poll_transmit(&mut self) -> Option<SubmitSm> {
        self.outbox.pop_front()
    }

    /// The bind's verdict on this dialog's submissions, in the order they were taken. Only a
    /// failure of the prompt before any answer matters: the final screen is best effort.
    pub fn handle_submit_result(&mut self, now: Instant, result: Result<(), SubmitFailure>) {
        match result {
            Ok(()) => {
                self.prompt_accepted = true;
                if let Some(mo) = self.held.take() {
                    self.handle_mo(now, &mo);
                }
            }
            Err(failure) => {
                if self.state == State::AwaitAnswer && !self.prompt_accepted {
                    // Refused by the SMSC: an answer that came first cannot be to it.
                    self.held = None;
                    self.finish(UssdOutcome::DeliveryError(failure), None);
                }
            }
        }
    }

    /// Feeds an MO; returns whether it belongs to this dialog and was used. Answers for another
    /// MSISDN or key, and anything after the answer (duplicates), are ignored.
    pub fn handle_mo(&mut self, _now: Instant, mo: &UssdMo) -> bool {
        if mo.msisdn != self.prompt.msisdn
            || mo.session_key != self.prompt.key
            || self.state != State::AwaitAnswer
        {
            return false;
        }
        // Where the dialect numbers the session's messages, the answer to prompt n carries
        // n + 1 (numbered on, as the spec counts) or n (echoed, as some SMSCs do); any other
        // number is not the answer to this step (a replay, a stray of another step). 0 is an
        // SMSC that does not number them.
        let sequence = mo.sequence.filter(|s| *s != 0);
        if sequence.is_some_and(|s| s != self.step_no && s != self.answer_sequence()) {
            return false;
        }
        if !self.prompt_accepted {
            // Not taken blindly: the prompt's own response decides (the first answer held).
            if self.held.is_some() {
                return false;
            }
            self.held = Some(mo.clone());
            return true;
        }
        if mo.aborted || mo.end {
            // The network's dialog is already closed: no final screen. An answer that closes
            // the session is not a USSR confirm of an open dialog, whatever its text: it
            // approves nothing.
            self.state = State::Done;
            self.result = Some(UssdOutcome::Aborted);
            return true;
        }
        if mo.op != self.dialect.ops.mo_answer {
            return false;
        }
        // The final screen follows the answer in the session's numbering.
        if let Some(s) = sequence {
            self.step_no = s;
        }
        let answer = mo.text.trim();
        match self.prompt.loa {
            Loa::Loa2 if answer == "1" => self.finish(UssdOutcome::Approved, Some(Step::End)),
            Loa::Loa2 => self.finish(UssdOutcome::Denied, Some(Step::End)),
            Loa::Loa3 => {
                self.state = State::AwaitVerdict;
                self.result = Some(UssdOutcome::PinEntered(answer.to_owned()));
            }
        }
        true
    }

    /// The caller's verdict on the PIN of a LoA3 dialog: sends the final screen. No effect in
    /// any other state.
    pub fn conclude(&mut self, _now: Instant, approved: bool) {
        if self.state != State::AwaitVerdict {
            return;
        }
        self.state = State::Done;
        let text = if approved {
            SCREEN_CONFIRMED
        } else {
            SCREEN_CANCELLED
        };
        self.queue(Step::End, text);
    }

    /// The authorization ended outside the dialog (cancelled by the relying party, or its time
    /// ran out in the gateway): release the network's dialog with `screen`, and take nothing
    /// more: a later answer is neither confirmed nor checked. No outcome follows.
    pub fn end(&mut self, _now: Instant, screen: &str) {
        if self.state == State::Done {
            return;
        }
        self.state = State::Done;
        self.result = None;
        self.queue(Step::Abort, screen);
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due (`None`: never).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::AwaitAnswer | State::AwaitVerdict => {
                Some(self.step_deadline.min(self.session_deadline))
            }
            State::Done => None,
        }
    }

    /// Expires the dialog when its step or session time is up. A prompt the SMSC never
    /// accepted by then is a delivery error, not a user who did not answer.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.step_deadline.min(self.session_deadline) {
            return;
        }
        match self.state {
            State::AwaitAnswer if !self.prompt_accepted => self.finish(
                UssdOutcome::DeliveryError(SubmitFailure::DeadlineExpired),
                Some(Step::Abort),
            ),
            State::AwaitAnswer => self.finish(UssdOutcome::Expired, Some(Step::Abort)),
            // The caller never said: release the dialog with the neutral screen.
            State::AwaitVerdict => {
                self.state = State::Done;
                self.queue(Step::Abort, SCREEN_CANCELLED);
            }
            State::Done => {}
        }
    }

    /// The terminal outcome, once.
    pub fn poll_result(&mut self) -> Option<UssdOutcome> {
        self.result.take()
    }

    /// Whether nothing is left to do (outcome known, taken, and nothing left to send).
    pub fn is_finished(&self) -> bool {
        self.state == State::Done && self.result.is_none() && self.outbox.is_empty()
    }

    fn finish(&mut self, outcome: UssdOutcome, closing: Option<Step>) {
        self.state = State::Done;
        let text = if outcome == UssdOutcome::Approved {
            SCREEN_CONFIRMED
        } else {
            SCREEN_CANCELLED
        };
        self.result = Some(outcome);
        if let Some(step) = closing {
            self.queue(step, text);
        }
    }

    /// The sequence number the answer to the current prompt carries (7 bits, wrapping).
    fn answer_sequence(&self) -> u8 {
        self.step_no.wrapping_add(1) & 0x7F
    }

    fn queue(&mut self, step: Step, text: &str) {
        self.step_no = self.step_no.wrapping_add(1) & 0x7F;
        // Built from texts that fit and a key that was accepted for the prompt, so this
        // cannot fail in practice; if it does the network's own timer closes the dialog.
        if let Ok(sm) = self.dialect.build_submit(
            step,
            &self.prompt.msisdn,
            &self.prompt.service_code,
            self.prompt.key,
            self.step_no,
            text,
        ) {
            self.outbox.push_back(sm);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rusmpp::values::UssdServiceOp;
    use rusmpp::{tlvs::TlvValue, CommandStatus};
    use std::time::Duration;

    const MSISDN: &str = "48600100200";

    fn dialog(loa: Loa, t0: Instant) -> UssdDialog {
        UssdDialog::new(
            t0,
            Dialect::spec_default(),
            UssdPrompt {
                msisdn: MSISDN.into(),
                service_code: "*123#".into(),
                key: 7,
                loa,
                text: "Log in to ePUAP?".into(),
            },
        )
        .unwrap()
    }

    /// The answer to the first prompt, numbered as the spec numbers it (2).
    fn answer(key: u16, text: &str) -> UssdMo {
        UssdMo {
            msisdn: MSISDN.into(),
            session_key: key,
            sequence: Some(2),
            op: 18,
            end: false,
            aborted: false,
            text: text.into(),
        }
    }

    fn op_and_text(sm: &SubmitSm) -> (u8, String) {
        let op = sm
            .tlvs()
            .iter()
            .find_map(|t| match t.value() {
                Some(TlvValue::UssdServiceOp(v)) => Some(u8::from(*v)),
                _ => None,
            })
            .unwrap();
        let text = String::from_utf8(sm.short_message().as_ref().to_vec()).unwrap();
        (op, text)
    }

    #[test]
    fn ok_answer_approves_and_ends_with_a_confirmed_screen() {
        let t0 = Instant::now();
        let mut d = dialog(Loa::Loa2, t0);
        let (op, text) = op_and_text(&d.poll_transmit().unwrap());
        assert_eq!(op, u8::from(UssdServiceOp::UssrRequest));
        assert!(text.ends_with("1=OK 2=Cancel"), "{text}");
        assert!(d.poll_transmit().is_none());
        d.handle_submit_result(t0, Ok(()));
        assert!(d.handle_mo(t0 + Duration::from_secs(3), &answer(7, " 1 ")));
        assert_eq!(d.poll_result(), Some(UssdOutcome::Approved));
        assert_eq!(d.poll_result(), None);
        assert_eq!(
            op_and_text(&d.poll_transmit().unwrap()),
            (3, "Confirmed".into())
        );
        assert!(d.is_finished());
        assert_eq!(d.poll_timeout(), None);
    }

    #[test]
    fn a_resumed_dialog_sends_nothing_first_and_takes_its_answer_until_its_deadline() {
        let t0 = Instant::now();
        let prompt = UssdPrompt {
            msisdn: MSISDN.into(),
            service_code: "*123#".into(),
            key: 7,
            loa: Loa::Loa2,
            text: String::new(),
        };
        let deadline = t0 + Duration::from_secs(20);
        let mut d = UssdDialog::resumed(Dialect::spec_default(), prompt.clone(), deadline);
        assert!(
            d.poll_transmit().is_none(),
            "the prompt went out before the restart"
        );
        assert_eq!(d.poll_timeout(), Some(deadline));
        // Another key is another dialog.
        assert!(!d.handle_mo(t0, &answer(8, "1")));
        assert!(d.handle_mo(t0 + Duration::from_secs(5), &answer(7, "1")));
        assert_eq!(d.poll_result(), Some(UssdOutcome::Approved));
        assert_eq!(
            op_and_text(&d.poll_transmit().unwrap()),
            (3, "Confirmed".into())
        );
        // Silence until the deadline: expired, not a delivery error (the prompt was accepted).
        let mut quiet = UssdDialog::resumed(Dialect::spec_default(), prompt, deadline);
        quiet.handle_timeout(deadline);
        assert_eq!(quiet.poll_result(), Some(UssdOutcome::Expired));
    }

    #[test]
    fn cancel_answer_denies_and_ends_with_a_cancelled_screen() {
        let t0 = Instant::now();
        let mut d = dialog(Loa::Loa2, t0);
        d.poll_transmit().unwrap();
        d.handle_submit_result(t0, Ok(()));
        assert!(d.handle_mo(t0, &answer(7, "2")));
        assert_eq!(d.poll_result(), Some(UssdOutcome::Denied));
        assert_eq!(op_and_text(&d.poll_transmit().unwrap()).1, "Cancelled");
    }

    #[test]
    fn silence_expires_at_the_step_timeout_and_releases_the_dialog() {
        let t0 = Instant::now();
        let mut d = dialog(Loa::Loa2, t0);
        d.poll_transmit().unwrap();
        d.handle_submit_result(t0, Ok(()));
        let due = d.poll_timeout().unwrap();
        assert_eq!(due, t0 + Duration::from_secs(30));
        d.handle_timeout(due - Duration::from_millis(1));
        assert_eq!(d.poll_result(), None);
        d.handle_timeout(due);
        assert_eq!(d.poll_result(), Some(UssdOutcome::Expired));
        assert!(
            d.poll_transmit().is_some(),
            "abort to release the network dialog"
        );
        // A late answer changes nothing.
        assert!(!d.handle_mo(due + Duration::from_secs(1), &answer(7, "1")));
        assert_eq!(d.poll_result(), None);
    }

    #[test]
    fn session_timeout_wins_when_shorter_than_the_step_timeout() {
        let t0 = Instant::now();
        let dialect = Dialect {
            session_timeout_secs: 5,
            ..Dialect::spec_default()
        };
        let mut d = UssdDialog::new(
            t0,
            dialect,
            UssdPrompt {
                msisdn: MSISDN.into(),
                service_code: "*1#".into(),
                key: 1,
                loa: Loa::Loa2,
                text: "x".into(),
            },
        )
        .unwrap();
        assert_eq!(d.poll_timeout(), Some(t0 + Duration::from_secs(5)));
        d.handle_submit_result(t0, Ok(()));
        d.handle_timeout(t0 + Duration::from_secs(5));
        assert_eq!(d.poll_result(), Some(UssdOutcome::Expired));
    }

    #[test]
    fn user_abort_ends_without_a_final_screen() {
        let t0 = Instant::now();
        let mut d = UssdDialog::new(
            t0,
            Dialect::vendor_dialog_id_cbs(),
            UssdPrompt {
                msisdn: MSISDN.into(),
                service_code: "*1#".into(),
                key: 300,
                loa: Loa::Loa2,
                text: "x".into(),
            },
        )
        .unwrap();
        d.poll_transmit().unwrap();
        d.handle_submit_result(t0, Ok(()));
        let abort = UssdMo {
            op: 0x81,
            end: true,
            aborted: true,
            ..answer(300, "")
        };
        assert!(d.handle_mo(t0, &abort));
        assert_eq!(d.poll_result(), Some(UssdOutcome::Aborted));
        assert!(d.poll_transmit().is_none());
        assert!(d.is_finished());
    }

    #[test]
    fn rejected_prompt_is_a_delivery_error() {
        let t0 = Instant::now();
        let mut d = dialog(Loa::Loa2, t0);
        d.poll_transmit().unwrap();
        let failure = SubmitFailure::Rejected(CommandStatus::EsmeRinvdstadr);
        d.handle_submit_result(t0, Err(failure.clone()));
        assert_eq!(d.poll_result(), Some(UssdOutcome::DeliveryError(failure)));
        assert!(d.poll_transmit().is_none(), "nothing reached the handset");
    }

    #[test]
    fn prompt_never_accepted_by_the_deadline_is_a_delivery_error_not_expiry() {
        let t0 = Instant::now();
        let mut d = dialog(Loa::Loa2, t0);
        d.poll_transmit().unwrap();
        d.handle_timeout(t0 + Duration::from_secs(30));
        assert_eq!(
            d.poll_result(),
            Some(UssdOutcome::DeliveryError(SubmitFailure::DeadlineExpired))
        );
    }

    #[test]
    fn wrong_session_key_or_msisdn_is_ignored() {
        let t0 = Instant::now();
        let mut d = dialog(Loa::Loa2, t0);
        d.poll_transmit().unwrap();
        assert!(!d.handle_mo(t0, &answer(8, "1")));
        let other = UssdMo {
            msisdn: "48600999999".into(),
            ..answer(7, "1")
        };
        assert!(!d.handle_mo(t0, &other));
        assert_eq!(d.poll_result(), None);
        assert!(d.poll_timeout().is_some());
    }

    /// The sequence number of a submit's `its_session_info` (octet 2 bits 7..1).
    fn sequence_of(sm: &SubmitSm) -> u8 {
        sm.tlvs()
            .iter()
            .find_map(|t| match t.value() {
                Some(TlvValue::ItsSessionInfo(i)) => Some(i.sequence_number >> 1),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn an_answer_numbered_for_another_step_is_ignored_and_the_final_screen_numbers_on() {
        let t0 = Instant::now();
        let mut d = dialog(Loa::Loa2, t0);
        assert_eq!(sequence_of(&d.poll_transmit().unwrap()), 1);
        d.handle_submit_result(t0, Ok(()));
        for wrong in [3, 4, 127] {
            let stray = UssdMo {
                sequence: Some(wrong),
                ..answer(7, "1")
            };
            assert!(!d.handle_mo(t0, &stray), "sequence {wrong} taken");
        }
        assert_eq!(d.poll_result(), None);
        assert!(d.handle_mo(t0, &answer(7, "1")));
        assert_eq!(d.poll_result(), Some(UssdOutcome::Approved));
        let last = d.poll_transmit().unwrap();
        assert_eq!(sequence_of(&last), 3, "prompt 1, answer 2, final screen 3");
    }

    #[test]
    fn an_answer_that_closes_the_session_approves_nothing() {
        let t0 = Instant::now();
        let mut d = dialog(Loa::Loa2, t0);
        d.poll_transmit().unwrap();
        d.handle_submit_result(t0, Ok(()));
        let closing = UssdMo {
            end: true,
            ..answer(7, "1")
        };
        assert!(d.handle_mo(t0, &closing));
        assert_eq!(d.poll_result(), Some(UssdOutcome::Aborted));
        assert!(
            d.poll_transmit().is_none(),
            "no final screen on a closed session"
        );
    }

    #[test]
    fn an_answer_echoing_the_prompt_s_number_is_taken() {
        let t0 = Instant::now();
        let mut d = dialog(Loa::Loa2, t0);
        d.poll_transmit().unwrap();
        d.handle_submit_result(t0, Ok(()));
        let echoed = UssdMo {
            sequence: Some(1),
            ..answer(7, "1")
        };
        assert!(d.handle_mo(t0, &echoed));
        assert_eq!(d.poll_result(), Some(UssdOutcome::Approved));
        assert_eq!(sequence_of(&d.poll_transmit().unwrap()), 2);
    }

    #[test]
    fn an_unnumbered_answer_is_taken() {
        let t0 = Instant::now();
        let mut d = dialog(Loa::Loa2, t0);
        d.poll_transmit().unwrap();
        d.handle_submit_result(t0, Ok(()));
        let unnumbered = UssdMo {
            sequence: Some(0),
            ..answer(7, "2")
        };
        assert!(d.handle_mo(t0, &unnumbered));
        assert_eq!(d.poll_result(), Some(UssdOutcome::Denied));
    }

    #[test]
    fn duplicate_answer_is_ignored() {
        let t0 = Instant::now();
        let mut d = dialog(Loa::Loa2, t0);
        d.poll_transmit().unwrap();
        d.handle_submit_result(t0, Ok(()));
        assert!(d.handle_mo(t0, &answer(7, "1")));
        assert!(!d.handle_mo(t0, &answer(7, "2")));
        assert_eq!(d.poll_result(), Some(UssdOutcome::Approved));
        assert_eq!(d.poll_result(), None);
        d.poll_transmit().unwrap();
        assert!(d.poll_transmit().is_none(), "one final screen only");
    }

    #[test]
    fn an_answer_that_overtakes_the_prompts_response_counts_only_if_it_accepts_the_prompt() {
        let t0 = Instant::now();
        // Accepted: the held "1" approves.
        let mut d = dialog(Loa::Loa2, t0);
        d.poll_transmit().unwrap();
        assert!(d.handle_mo(t0, &answer(7, "1")));
        assert_eq!(d.poll_result(), None, "held, not taken blindly");
        d.handle_submit_result(t0, Ok(()));
        assert_eq!(d.poll_result(), Some(UssdOutcome::Approved));
        // Refused: the held "1" cannot be an answer to a prompt the SMSC never took.
        let mut d = dialog(Loa::Loa2, t0);
        d.poll_transmit().unwrap();
        assert!(d.handle_mo(t0, &answer(7, "1")));
        d.handle_submit_result(t0, Err(SubmitFailure::ResponseTimeout));
        assert_eq!(
            d.poll_result(),
            Some(UssdOutcome::DeliveryError(SubmitFailure::ResponseTimeout))
        );
    }

    #[test]
    fn loa3_hands_the_pin_over_and_waits_for_the_verdict() {
        let t0 = Instant::now();
        let mut d = dialog(Loa::Loa3, t0);
        let (_, text) = op_and_text(&d.poll_transmit().unwrap());
        d.handle_submit_result(t0, Ok(()));
        assert!(text.contains("PIN"));
        assert!(d.handle_mo(t0, &answer(7, "4821")));
        assert_eq!(
            d.poll_result(),
            Some(UssdOutcome::PinEntered("4821".into()))
        );
        assert!(d.poll_transmit().is_none(), "no screen before the verdict");
        d.conclude(t0, false);
        assert_eq!(op_and_text(&d.poll_transmit().unwrap()).1, "Cancelled");
        d.conclude(t0, true);
        assert!(d.poll_transmit().is_none(), "one verdict only");
        assert!(d.is_finished());
    }
}
