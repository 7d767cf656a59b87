//! One authorization pushed to the SIM applet over SMS-PP, as a sans-IO state machine.
//!
//! Flow: [`StkPush::new`] encodes the applet request (txid and challenge from the caller's
//! randomness, CNTR from the caller's per-card counter) into a secured command packet with
//! `build_request_packet` and wraps it in `submit_sm`s with `smspp::build_submits`; the channel
//! router (`super::router`) sends them ([`poll_transmit`](StkPush::poll_transmit)) and reports the bind's verdicts
//! ([`handle_submit_result`](StkPush::handle_submit_result)). The card's proof of receipt comes
//! back as MO SMS, reassembled by the router (`smspp::Reassembler`) and fed to
//! [`handle_por`](StkPush::handle_por): a PoR whose CC does not check with this card's keys, or
//! that answers another counter, is not ours and is ignored; one that is ours is verified
//! (the card's MAC over counter, txid, challenge and outcome) and ends the push. The MAC is the
//! proof of the user's consent and is kept in [`CardProof`].
//!
//! The SMSC may accept the packet and fail it later on the handset (a SIM without the applet
//! answers the download with an error): its failure receipt, matched to this push by the router
//! through the `message_id`, comes in through
//! [`handle_delivery_failure`](StkPush::handle_delivery_failure) and ends the push as
//! [`StkOutcome::Undelivered`], a delivery failure like a refused submit.

use std::time::{Duration, Instant};

use rusmpp::pdus::SubmitSm;
use sim_applet_model::applet::gateway::{build_request_packet, open_answer_sms, verify_answer};
use sim_applet_model::applet::gateway::{CardReply, GatewayError};
use sim_applet_model::applet::protocol::{
    AuthAnswer, AuthRequest, ErrorCode, Loa, Outcome, CHALLENGE_LEN, MAC_LEN, TXID_LEN,
};
use sim_applet_model::applet::state::CardSecrets;
use sim_applet_model::ota::{Counter, ResponseStatus, RESPONSE_UDH};

use crate::smpp::session::SubmitFailure;
use sim_applet_model::smpp::smspp::{build_submits, SmsPpError};

/// What to ask one card.
#[derive(Clone, PartialEq, Eq)]
pub struct StkParams {
    /// The subscriber.
    pub msisdn: String,
    /// Originating address of the SMS-PP: the gateway's OTA number, digits (the card's
    /// TP-OA is BCD), where the card's answer goes.
    pub originator: String,
    /// The card's provisioned secrets.
    pub secrets: CardSecrets,
    /// CNTR for this packet: higher than any the card has seen (the caller keeps it durable).
    pub counter: u64,
    /// Fresh random transaction id.
    pub txid: [u8; TXID_LEN],
    /// Fresh random challenge the card MACs.
    pub challenge: [u8; CHALLENGE_LEN],
    /// LoA2: Yes/No on the handset; LoA3: PIN checked by the card.
    pub loa: Loa,
    /// Seconds the card gives the user.
    pub expiry_secs: u16,
    /// Relying party shown to the user.
    pub rp_name: String,
    /// Consent text.
    pub consent: String,
    /// Code the user compares with the one on the web page.
    pub binding_code: String,
    /// Concatenation reference, if the packet needs several SMS.
    pub concat_ref: u8,
    /// Wait for the PoR beyond `expiry_secs` (SMS transit both ways).
    pub grace: Duration,
}

impl std::fmt::Debug for StkParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StkParams")
            .field("counter", &self.counter)
            .field("loa", &self.loa)
            .field("expiry_secs", &self.expiry_secs)
            .finish_non_exhaustive()
    }
}

/// The card's signed answer: what a relying party or an auditor can check again with `k_auth`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardProof {
    /// CNTR of the request the card answered.
    pub counter: u64,
    pub txid: [u8; TXID_LEN],
    pub challenge: [u8; CHALLENGE_LEN],
    /// The outcome the MAC covers.
    pub outcome: Outcome,
    /// The card's MAC.
    pub mac: [u8; MAC_LEN],
}

impl CardProof {
    /// Checks the MAC again with the card's `k_auth`.
    pub fn verify(&self, secrets: &CardSecrets) -> bool {
        let Ok(counter) = Counter::new(self.counter) else {
            return false;
        };
        AuthAnswer {
            txid: self.txid,
            outcome: self.outcome,
            mac: self.mac,
        }
        .verify(&secrets.k_auth, counter.to_bytes(), &self.challenge)
        .is_ok()
    }
}

/// Why the card, or its answer, failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimFailure {
    /// The applet answered with an error code.
    Applet(ErrorCode),
    /// The card's OTA layer refused the command packet (counter low, CC failed ...).
    Por(ResponseStatus),
    /// The PoR checked and answered our counter, but its content does not verify.
    BadAnswer(GatewayError),
}

/// How one SIM-applet authorization ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StkOutcome {
    /// Approved, with the card's MAC as proof.
    Approved { loa: Loa, proof: CardProof },
    /// The user said No or ended the session on the handset.
    Denied,
    /// The request's time ran out (the card said so) or no PoR came in time.
    Expired,
    /// The handset's screen timer ran out before the user acted (the card said so).
    HandsetTimeout,
    /// The card's PIN is blocked.
    PinBlocked,
    /// The card or its answer failed.
    SimError(SimFailure),
    /// The request never reached the network.
    DeliveryError(SubmitFailure),
    /// The SMSC took the request but reports it could not deliver it (a failure receipt),
    /// e.g. `undeliverable err:213`: nothing was shown to the user.
    Undelivered { reason: String },
}

/// Why a push could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StkError {
    /// A text cannot be written for the card.
    #[error("request text: {0}")]
    Text(#[from] sim_applet_model::text::TextError),
    /// The request or its secured packet cannot be built (texts too long, bad counter ...).
    #[error("request: {0}")]
    Request(#[from] GatewayError),
    /// The SMS-PP `submit_sm` cannot be built.
    #[error("SMS-PP: {0}")]
    SmsPp(#[from] SmsPpError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Done,
}

/// One SMS-PP authorization push.
#[derive(Debug)]
pub struct StkPush {
    params: StkParams,
    state: State,
    outbox: Vec<SubmitSm>,
    /// Segments not yet accepted by the SMSC.
    unaccepted: usize,
    deadline: Instant,
    result: Option<StkOutcome>,
}

impl StkPush {
    /// Builds the request at `now`; its segments wait in [`poll_transmit`](Self::poll_transmit).
    pub fn new(now: Instant, params: StkParams) -> Result<Self, StkError> {
        let request = AuthRequest::from_text(
            params.txid,
            params.challenge,
            params.loa,
            params.expiry_secs,
            &params.rp_name,
            &params.consent,
            &params.binding_code,
            None,
        )?;
        let packet = build_request_packet(&params.secrets, params.counter, &request)?;
        let mut outbox = build_submits(
            &params.msisdn,
            &params.originator,
            &packet,
            params.concat_ref,
        )?;
        outbox.reverse();
        let deadline = now + Duration::from_secs(u64::from(params.expiry_secs)) + params.grace;
        Ok(Self {
            unaccepted: outbox.len(),
            params,
            state: State::Waiting,
            outbox,
            deadline,
            result: None,
        })
    }

    /// A push an earlier run of the gateway sent (restored after a restart from what the store
    /// kept: counter, transaction id, challenge): nothing to send, the PoR is awaited until the
    /// expiry plus the grace.
    pub fn resumed(now: Instant, params: StkParams) -> Self {
        let deadline = now + Duration::from_secs(u64::from(params.expiry_secs)) + params.grace;
        Self {
            params,
            state: State::Waiting,
            outbox: Vec::new(),
            unaccepted: 0,
            deadline,
            result: None,
        }
    }

    /// The subscriber.
    pub fn msisdn(&self) -> &str {
        &self.params.msisdn
    }

    /// The counter that identifies this push's answer.
    pub fn counter(&self) -> u64 {
        self.params.counter
    }

    /// The next `submit_sm`, segments in order.
    pub fn poll_transmit(&mut self) -> Option<SubmitSm> {
        let next = self.outbox.pop();
        if self.outbox.is_empty() {
            // The push waits minutes for its answer: its spent segments' room goes back now.
            self.outbox = Vec::new();
        }
        next
    }

    /// The bind's verdict on one segment. Any failure before the answer is a delivery error:
    /// the card cannot act on part of a packet.
    pub fn handle_submit_result(&mut self, _now: Instant, result: Result<(), SubmitFailure>) {
        match result {
            Ok(()) => self.unaccepted = self.unaccepted.saturating_sub(1),
            Err(failure) => {
                if self.state == State::Waiting {
                    self.finish(StkOutcome::DeliveryError(failure));
                }
            }
        }
    }

    /// The SMSC reports that a segment of this push will never reach the handset (a failure
    /// receipt for one of its `message_id`s); `reason` says why, e.g. `undeliverable err:213`.
    /// Returns whether it ended the push (not if it has already ended, by a PoR for instance).
    pub fn handle_delivery_failure(&mut self, _now: Instant, reason: String) -> bool {
        if self.state != State::Waiting {
            return false;
        }
        self.finish(StkOutcome::Undelivered { reason });
        true
    }

    /// Feeds a reassembled response packet (without its UDH) from `msisdn`; returns whether it
    /// answered this push.
    pub fn handle_por(&mut self, _now: Instant, msisdn: &str, packet: &[u8]) -> bool {
        if self.state != State::Waiting || msisdn != self.params.msisdn {
            return false;
        }
        // The reassembler strips the UDH, which the PoR's CC covers: put it back.
        let mut ud = RESPONSE_UDH.to_vec();
        ud.extend_from_slice(packet);
        // A PoR that does not open with this card's keys is not from this card.
        let Ok(reply) = open_answer_sms(&self.params.secrets, &ud) else {
            return false;
        };
        if reply.counter != self.params.counter {
            // A stale answer to an earlier request.
            return false;
        }
        let outcome = self.judge(&reply);
        self.finish(outcome);
        true
    }

    fn judge(&self, reply: &CardReply) -> StkOutcome {
        let p = &self.params;
        match verify_answer(&p.secrets, reply, p.counter, &p.txid, &p.challenge) {
            Ok(Outcome::Approved { loa }) => {
                let Some(answer) = reply.answer.as_ref() else {
                    return StkOutcome::SimError(SimFailure::BadAnswer(
                        GatewayError::MissingAnswer,
                    ));
                };
                StkOutcome::Approved {
                    loa,
                    proof: CardProof {
                        counter: p.counter,
                        txid: p.txid,
                        challenge: p.challenge,
                        outcome: answer.outcome,
                        mac: answer.mac,
                    },
                }
            }
            Ok(Outcome::Denied { .. }) => StkOutcome::Denied,
            // The handset's own screen timer (a display or Yes/No screen lasts ~25 s on a phone)
            // ran out before the user acted: the card says so, and it is told apart from an
            // answer that never came.
            Ok(Outcome::NoResponse { expired: false }) => StkOutcome::HandsetTimeout,
            Ok(Outcome::NoResponse { expired: true }) => StkOutcome::Expired,
            Ok(Outcome::PinBlocked { .. }) => StkOutcome::PinBlocked,
            Ok(Outcome::Error(code)) => StkOutcome::SimError(SimFailure::Applet(code)),
            Err(GatewayError::Rejected { status }) => StkOutcome::SimError(SimFailure::Por(status)),
            Err(e) => StkOutcome::SimError(SimFailure::BadAnswer(e)),
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.state == State::Waiting).then_some(self.deadline)
    }

    /// No PoR by the deadline: expired, or a delivery error if the SMSC never took the packet.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state != State::Waiting || now < self.deadline {
            return;
        }
        if self.unaccepted > 0 {
            self.finish(StkOutcome::DeliveryError(SubmitFailure::DeadlineExpired));
        } else {
            self.finish(StkOutcome::Expired);
        }
    }

    /// The terminal outcome, once.
    pub fn poll_result(&mut self) -> Option<StkOutcome> {
        self.result.take()
    }

    /// Whether nothing is left to do.
    pub fn is_finished(&self) -> bool {
        self.state == State::Done && self.result.is_none()
    }

    fn finish(&mut self, outcome: StkOutcome) {
        self.state = State::Done;
        self.outbox.clear();
        self.result = Some(outcome);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rusmpp::CommandStatus;
    use sim_applet_model::applet::protocol::DenyReason;
    use sim_applet_model::ota::{PorSecurity, ResponsePacket};
    use std::sync::Arc;

    const MSISDN: &str = "48600100200";

    fn params_for(loa: Loa) -> StkParams {
        params(loa)
    }

    fn params(loa: Loa) -> StkParams {
        StkParams {
            msisdn: MSISDN.into(),
            originator: "4860000".into(),
            secrets: CardSecrets::derive(1, 5),
            counter: 42,
            txid: [7; TXID_LEN],
            challenge: [9; CHALLENGE_LEN],
            loa,
            expiry_secs: 60,
            rp_name: "ePUAP".into(),
            consent: "Log in?".into(),
            binding_code: "AB12".into(),
            concat_ref: 1,
            grace: Duration::from_secs(10),
        }
    }

    /// The PoR a card would send (what `Applet` does, written with the shared codecs).
    fn por(p: &StkParams, counter: u64, outcome: Outcome) -> Vec<u8> {
        let answer = AuthAnswer::new_signed(
            &p.secrets.k_auth,
            Counter::new(counter).unwrap().to_bytes(),
            p.txid,
            &p.challenge,
            outcome,
        );
        por_with(p, counter, ResponseStatus::PorOk, answer.encode())
    }

    fn por_with(p: &StkParams, counter: u64, status: ResponseStatus, data: Vec<u8>) -> Vec<u8> {
        let packet = ResponsePacket {
            tar: sim_applet_model::applet::protocol::TAR,
            counter: Counter::new(counter).unwrap(),
            status,
            data,
        };
        let sec = PorSecurity {
            checksum: sim_applet_model::ota::ChecksumKind::Cc,
            ciphered: true,
            kic: sim_applet_model::applet::gateway::applet_kic(),
            kid: sim_applet_model::applet::gateway::applet_kid(),
        };
        packet
            .encode_no_udh(
                &sec,
                &sim_applet_model::applet::gateway::applet_key_set(&p.secrets),
            )
            .unwrap()
    }

    fn started(loa: Loa, t0: Instant) -> StkPush {
        let mut s = StkPush::new(t0, params(loa)).unwrap();
        let sm = s.poll_transmit().unwrap();
        assert_eq!(sm.protocol_id, 0x7F);
        assert_eq!(
            &sm.short_message().as_ref()[..3],
            &sim_applet_model::ota::COMMAND_UDH[..]
        );
        assert!(s.poll_transmit().is_none());
        s.handle_submit_result(t0, Ok(()));
        s
    }

    #[test]
    fn approval_carries_a_proof_that_verifies() {
        let t0 = Instant::now();
        let mut s = started(Loa::Loa3, t0);
        let p = params(Loa::Loa3);
        let ud = por(&p, 42, Outcome::Approved { loa: Loa::Loa3 });
        assert!(s.handle_por(t0, MSISDN, &ud));
        let Some(StkOutcome::Approved { loa, proof }) = s.poll_result() else {
            panic!("not approved");
        };
        assert_eq!(loa, Loa::Loa3);
        assert!(proof.verify(&p.secrets));
        assert!(!proof.verify(&CardSecrets::derive(1, 6)));
        let mut forged = proof.clone();
        forged.challenge[0] ^= 1;
        assert!(!forged.verify(&p.secrets));
        assert!(s.is_finished());
    }

    #[test]
    fn a_resumed_push_sends_nothing_and_checks_the_answer_to_the_stored_request() {
        let t0 = Instant::now();
        let p = params(Loa::Loa2);
        let mut s = StkPush::resumed(t0, params(Loa::Loa2));
        assert!(
            s.poll_transmit().is_none(),
            "the packet went out before the restart"
        );
        // An answer to another counter is not this push's.
        assert!(!s.handle_por(
            t0,
            MSISDN,
            &por(&p, 41, Outcome::Approved { loa: Loa::Loa2 })
        ));
        let ud = por(&p, 42, Outcome::Approved { loa: Loa::Loa2 });
        assert!(s.handle_por(t0, MSISDN, &ud));
        let Some(StkOutcome::Approved { proof, .. }) = s.poll_result() else {
            panic!("not approved");
        };
        assert!(proof.verify(&p.secrets));
        // No PoR by the deadline: expired (nothing is left unsent).
        let mut quiet = StkPush::resumed(t0, params(Loa::Loa2));
        let due = quiet.poll_timeout().unwrap();
        quiet.handle_timeout(due);
        assert_eq!(quiet.poll_result(), Some(StkOutcome::Expired));
    }

    #[test]
    fn no_from_the_user_is_denied() {
        let t0 = Instant::now();
        let mut s = started(Loa::Loa2, t0);
        let denied = Outcome::Denied {
            reason: DenyReason::UserSaidNo,
        };
        assert!(s.handle_por(t0, MSISDN, &por(&params(Loa::Loa2), 42, denied)));
        assert_eq!(s.poll_result(), Some(StkOutcome::Denied));
    }

    #[test]
    fn blocked_pin_and_applet_errors_are_reported() {
        let t0 = Instant::now();
        let p = params(Loa::Loa3);
        let mut s = started(Loa::Loa3, t0);
        assert!(s.handle_por(t0, MSISDN, &por(&p, 42, Outcome::PinBlocked { now: true })));
        assert_eq!(s.poll_result(), Some(StkOutcome::PinBlocked));
        let mut s = started(Loa::Loa3, t0);
        let err = Outcome::Error(ErrorCode::TerminalFailure);
        assert!(s.handle_por(t0, MSISDN, &por(&p, 42, err)));
        assert_eq!(
            s.poll_result(),
            Some(StkOutcome::SimError(SimFailure::Applet(
                ErrorCode::TerminalFailure
            )))
        );
        let mut s = started(Loa::Loa3, t0);
        let low = por_with(&p, 42, ResponseStatus::CounterLow, vec![]);
        assert!(s.handle_por(t0, MSISDN, &low));
        assert_eq!(
            s.poll_result(),
            Some(StkOutcome::SimError(SimFailure::Por(
                ResponseStatus::CounterLow
            )))
        );
    }

    #[test]
    fn a_handset_that_dismissed_the_prompt_is_told_apart_from_an_expired_request() {
        let t0 = Instant::now();
        let p = params(Loa::Loa2);
        let mut s = started(Loa::Loa2, t0);
        let dismissed = Outcome::NoResponse { expired: false };
        assert!(s.handle_por(t0, MSISDN, &por(&p, 42, dismissed)));
        assert_eq!(s.poll_result(), Some(StkOutcome::HandsetTimeout));
        let mut s = started(Loa::Loa2, t0);
        let expired = Outcome::NoResponse { expired: true };
        assert!(s.handle_por(t0, MSISDN, &por(&p, 42, expired)));
        assert_eq!(s.poll_result(), Some(StkOutcome::Expired));
    }

    #[test]
    fn no_por_by_the_deadline_expires() {
        let t0 = Instant::now();
        let mut s = started(Loa::Loa2, t0);
        let due = s.poll_timeout().unwrap();
        assert_eq!(due, t0 + Duration::from_secs(70));
        s.handle_timeout(due - Duration::from_millis(1));
        assert_eq!(s.poll_result(), None);
        s.handle_timeout(due);
        assert_eq!(s.poll_result(), Some(StkOutcome::Expired));
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn unsent_packet_at_the_deadline_is_a_delivery_error() {
        let t0 = Instant::now();
        let mut s = StkPush::new(t0, params(Loa::Loa2)).unwrap();
        s.poll_transmit().unwrap();
        s.handle_timeout(t0 + Duration::from_secs(70));
        assert_eq!(
            s.poll_result(),
            Some(StkOutcome::DeliveryError(SubmitFailure::DeadlineExpired))
        );
    }

    #[test]
    fn refused_submit_is_a_delivery_error() {
        let t0 = Instant::now();
        let mut s = StkPush::new(t0, params(Loa::Loa2)).unwrap();
        s.poll_transmit().unwrap();
        let f = SubmitFailure::Rejected(CommandStatus::EsmeRthrottled);
        s.handle_submit_result(t0, Err(f.clone()));
        assert_eq!(s.poll_result(), Some(StkOutcome::DeliveryError(f)));
    }

    #[test]
    fn failure_receipt_ends_a_waiting_push_as_undelivered() {
        let t0 = Instant::now();
        let mut s = started(Loa::Loa2, t0);
        assert!(s.handle_delivery_failure(t0, "undeliverable err:213".into()));
        assert_eq!(
            s.poll_result(),
            Some(StkOutcome::Undelivered {
                reason: "undeliverable err:213".into()
            })
        );
        assert!(s.is_finished());
        assert_eq!(s.poll_timeout(), None);
        // A second receipt (another segment) changes nothing.
        assert!(!s.handle_delivery_failure(t0, "rejected".into()));
        assert_eq!(s.poll_result(), None);
    }

    #[test]
    fn failure_receipt_after_the_answer_is_ignored() {
        let t0 = Instant::now();
        let p = params(Loa::Loa2);
        let mut s = started(Loa::Loa2, t0);
        assert!(s.handle_por(
            t0,
            MSISDN,
            &por(&p, 42, Outcome::Approved { loa: Loa::Loa2 })
        ));
        assert!(!s.handle_delivery_failure(t0, "expired".into()));
        assert!(matches!(s.poll_result(), Some(StkOutcome::Approved { .. })));
    }

    #[test]
    fn por_for_another_counter_msisdn_or_card_is_ignored() {
        let t0 = Instant::now();
        let p = params(Loa::Loa2);
        let mut s = started(Loa::Loa2, t0);
        let ok = Outcome::Approved { loa: Loa::Loa2 };
        assert!(!s.handle_por(t0, MSISDN, &por(&p, 41, ok)));
        assert!(!s.handle_por(t0, "48600999999", &por(&p, 42, ok)));
        let other_card = StkParams {
            secrets: CardSecrets::derive(1, 6),
            ..params(Loa::Loa2)
        };
        assert!(!s.handle_por(t0, MSISDN, &por(&other_card, 42, ok)));
        assert!(!s.handle_por(t0, MSISDN, &[0xFF, 0x00]));
        assert_eq!(s.poll_result(), None);
        assert!(s.handle_por(t0, MSISDN, &por(&p, 42, ok)));
        assert!(matches!(s.poll_result(), Some(StkOutcome::Approved { .. })));
    }

    #[test]
    fn duplicate_por_is_ignored() {
        let t0 = Instant::now();
        let p = params(Loa::Loa2);
        let mut s = started(Loa::Loa2, t0);
        let ok = por(&p, 42, Outcome::Approved { loa: Loa::Loa2 });
        assert!(s.handle_por(t0, MSISDN, &ok));
        assert!(!s.handle_por(t0, MSISDN, &ok));
        assert!(s.poll_result().is_some());
        assert_eq!(s.poll_result(), None);
    }

    #[test]
    fn mac_over_another_challenge_is_a_sim_error_not_an_approval() {
        let t0 = Instant::now();
        let p = params(Loa::Loa2);
        let mut s = started(Loa::Loa2, t0);
        let other = StkParams {
            challenge: [1; CHALLENGE_LEN],
            ..params(Loa::Loa2)
        };
        let forged = por(&other, 42, Outcome::Approved { loa: Loa::Loa2 });
        assert!(s.handle_por(t0, MSISDN, &forged));
        assert!(matches!(
            s.poll_result(),
            Some(StkOutcome::SimError(SimFailure::BadAnswer(_)))
        ));
        let _ = p;
    }

    /// The push against the handset and applet model: what the card sends back verifies.
    #[test]
    fn simulated_handset_approves_with_a_proof() {
        use sim_applet_model::handset::{
            user::UserParams, Handset, HandsetParams, MoMessage, MtSms, VirtualInstant,
        };
        let t0 = Instant::now();
        let params = Arc::new(HandsetParams {
            population_seed: 1,
            user: UserParams {
                p_ignore: 0.0,
                p_deny: 0.0,
                p_wrong_pin: 0.0,
                ..UserParams::default()
            },
            ..HandsetParams::default()
        });
        let mut phone = Handset::new(params, 5, true);
        let mut push = StkPush::new(
            t0,
            StkParams {
                counter: 1,
                ..params_for(Loa::Loa3)
            },
        )
        .unwrap();
        let sm = push.poll_transmit().unwrap();
        push.handle_submit_result(t0, Ok(()));
        let mut v = VirtualInstant(0);
        phone.handle_mt_sms_pp(
            v,
            &MtSms {
                originator: "4860000".into(),
                protocol_id: sm.protocol_id,
                data_coding: u8::from(sm.data_coding),
                user_data: sm.short_message().as_ref().to_vec(),
            },
        );
        let mut por = None;
        for _ in 0..100 {
            if let Some(MoMessage::Sms(sms)) = phone.poll_mo() {
                por = Some(sms.user_data);
                break;
            }
            let Some(at) = phone.poll_timeout() else {
                break;
            };
            v = at;
            phone.handle_timeout(v);
        }
        let ud = por.expect("the card answers");
        assert_eq!(&ud[..3], &RESPONSE_UDH[..]);
        assert!(push.handle_por(t0, MSISDN, &ud[3..]));
        match push.poll_result() {
            Some(StkOutcome::Approved { loa, proof }) => {
                assert_eq!(loa, Loa::Loa3);
                assert!(proof.verify(&CardSecrets::derive(1, 5)));
            }
            other => panic!("{other:?}"),
        }
    }
}
