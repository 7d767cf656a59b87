//! The authorization state machine as plain functions: which steps may follow which, how a
//! channel's [`AuthResult`] becomes exactly one terminal status with a reason, and how a stored
//! [`AuthorizationRecord`] reads as the [`AuthorizationView`] a relying party sees.
//!
//! ```text
//! created -> routed -> prompted -> answered -> terminal
//!    \__________\__________\___________\______-> terminal (cancel, expiry, failure, restart)
//! ```
//!
//! The store keeps four terminal statuses (approved, denied, expired, failed); the API knows
//! nine. The API status is kept in the stored reason as `status;reason` (plus `;via=ussd` when
//! the STK push fell back to USSD, since a record's channel is fixed at creation), so a record
//! read back after a restart shows the same status and channel the client saw.

use crate::channel::{AuthResult, SimFailure};
use crate::smpp::session::SubmitFailure;
use crate::store::records;
use crate::store::{AuthState, AuthorizationRecord};

use super::service::{
    AuthorizationState, AuthorizationView, ChannelKind, Loa, PendingState, TerminalStatus,
};

/// Whether `to` may follow `from`. Steps only go forward; any in-flight step may end.
pub fn may_follow(from: &AuthState, to: &AuthState) -> bool {
    fn rank(s: &AuthState) -> u8 {
        match s {
            AuthState::Created => 0,
            AuthState::Routed => 1,
            AuthState::Prompted => 2,
            AuthState::Answered => 3,
            AuthState::Terminal { .. } => 4,
        }
    }
    !from.is_terminal() && rank(to) > rank(from)
}

/// How an authorization ends: the one status, its reason, and what was achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    pub status: TerminalStatus,
    /// snake_case words, never a PIN, key or MSISDN.
    pub reason: String,
    pub loa_achieved: Option<Loa>,
    /// The card's MAC (STK approvals).
    pub proof: Option<Vec<u8>>,
}

impl Ending {
    /// An ending without LoA or proof.
    pub fn new(status: TerminalStatus, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
            loa_achieved: None,
            proof: None,
        }
    }
}

/// Whether the channel's result means the user saw the prompt and answered (the `answered` step).
pub fn user_answered(result: &AuthResult) -> bool {
    matches!(
        result,
        AuthResult::Approved { .. } | AuthResult::Denied | AuthResult::WrongPin
    )
}

/// Maps one channel result to its ending. `requested` is the LoA asked for and `stk` says the
/// prompt went to the SIM applet: an STK approval without a card MAC, or with a lower LoA than
/// asked, is never an approval. `locked_now` says whether a wrong USSD PIN locked the PIN.
pub fn ending_of(result: AuthResult, requested: Loa, stk: bool, locked_now: bool) -> Ending {
    use TerminalStatus as S;
    match result {
        AuthResult::Approved { loa, proof } => {
            let achieved = from_applet_loa(loa);
            if achieved == Loa::Loa2 && requested == Loa::Loa3 {
                return Ending::new(S::SimError, "loa_not_reached");
            }
            match (stk, proof) {
                (true, None) => Ending::new(S::SimError, "missing_card_proof"),
                (_, proof) => Ending {
                    status: S::Approved,
                    reason: "user_approved".into(),
                    loa_achieved: Some(achieved),
                    proof: proof.map(|p| p.mac.to_vec()),
                },
            }
        }
        AuthResult::Denied => Ending::new(S::Denied, "user_denied"),
        AuthResult::WrongPin if locked_now => Ending::new(S::PinBlocked, "ussd_pin_locked"),
        AuthResult::WrongPin => Ending::new(S::Denied, "wrong_pin"),
        AuthResult::Expired => Ending::new(S::Expired, "no_response"),
        AuthResult::Aborted => Ending::new(S::Denied, "dialog_aborted"),
        AuthResult::PinBlocked => Ending::new(S::PinBlocked, "card_pin_blocked"),
        AuthResult::SimError(f) => Ending::new(
            S::SimError,
            match f {
                SimFailure::Applet(_) => "applet_error",
                SimFailure::Por(_) => "ota_refused",
                // Forged or otherwise unverifiable answers to this prompt end here (one for another
                // counter, a replay, never reaches this: the push ignores it).
                SimFailure::BadAnswer(_) => "answer_not_verified",
            },
        ),
        AuthResult::DeliveryError(f) => match f {
            // ESME_RINVDSTADR: the SMSC does not know the number.
            SubmitFailure::Rejected(status) if u32::from(status) == 0x0B => {
                Ending::new(S::NotReachable, "invalid_destination")
            }
            SubmitFailure::Rejected(status) => Ending::new(
                S::DeliveryError,
                format!("smsc_error_0x{:02x}", u32::from(status)),
            ),
            SubmitFailure::ResponseTimeout => Ending::new(S::DeliveryError, "smsc_timeout"),
            // Queued on a bound bind past its deadline: the SMSC takes fewer than are offered.
            SubmitFailure::DeadlineExpired => {
                Ending::new(S::DeliveryError, "submit_deadline_passed")
            }
            SubmitFailure::NoLinkByDeadline => Ending::new(S::DeliveryError, "binds_down"),
            SubmitFailure::LinkLostInFlight => Ending::new(S::DeliveryError, "link_lost"),
            SubmitFailure::ShuttingDown => Ending::new(S::DeliveryError, "gateway_shutdown"),
            SubmitFailure::QueueFull => Ending::new(S::DeliveryError, "bind_queue_full"),
            SubmitFailure::Undeliverable => Ending::new(S::DeliveryError, "handset_undeliverable"),
        },
        // Not sent for lack of the user's time: the authorization ran out of time, not the
        // network (and no fallback: there is no time for a second prompt either).
        AuthResult::NotSentInTime => Ending::new(S::Expired, "prompt_not_sent_in_time"),
        AuthResult::HandsetTimeout => Ending::new(S::Expired, "handset_timeout"),
        AuthResult::Invalid(_) => Ending::new(S::Rejected, "not_sendable"),
        AuthResult::Unavailable => Ending::new(S::DeliveryError, "channel_unavailable"),
    }
}

/// Whether a failed STK push may be retried over USSD: only when the push never reached the
/// handset (nothing was shown, so a second prompt is not a second question).
pub fn is_delivery_failure(result: &AuthResult) -> bool {
    matches!(result, AuthResult::DeliveryError(_))
}

pub fn from_applet_loa(loa: sim_applet_model::applet::protocol::Loa) -> Loa {
    match loa {
        sim_applet_model::applet::protocol::Loa::Loa2 => Loa::Loa2,
        sim_applet_model::applet::protocol::Loa::Loa3 => Loa::Loa3,
    }
}

pub fn to_applet_loa(loa: Loa) -> sim_applet_model::applet::protocol::Loa {
    match loa {
        Loa::Loa2 => sim_applet_model::applet::protocol::Loa::Loa2,
        Loa::Loa3 => sim_applet_model::applet::protocol::Loa::Loa3,
    }
}

pub fn to_store_loa(loa: Loa) -> records::Loa {
    match loa {
        Loa::Loa2 => records::Loa::Loa2,
        Loa::Loa3 => records::Loa::Loa3,
    }
}

pub fn from_store_loa(loa: records::Loa) -> Loa {
    match loa {
        records::Loa::Loa2 => Loa::Loa2,
        records::Loa::Loa3 => Loa::Loa3,
    }
}

pub fn to_store_channel(c: ChannelKind) -> records::Channel {
    match c {
        ChannelKind::Ussd => records::Channel::Ussd,
        ChannelKind::Stk => records::Channel::Stk,
    }
}

pub fn from_store_channel(c: records::Channel) -> ChannelKind {
    match c {
        records::Channel::Ussd => ChannelKind::Ussd,
        records::Channel::Stk => ChannelKind::Stk,
    }
}

/// snake_case name of a status (as serialized in the API).
pub fn status_name(status: TerminalStatus) -> &'static str {
    use TerminalStatus as S;
    match status {
        S::Approved => "approved",
        S::Denied => "denied",
        S::Expired => "expired",
        S::PinBlocked => "pin_blocked",
        S::NotReachable => "not_reachable",
        S::DeliveryError => "delivery_error",
        S::SimError => "sim_error",
        S::Rejected => "rejected",
        S::Cancelled => "cancelled",
    }
}

fn status_from_name(name: &str) -> Option<TerminalStatus> {
    use TerminalStatus as S;
    [
        S::Approved,
        S::Denied,
        S::Expired,
        S::PinBlocked,
        S::NotReachable,
        S::DeliveryError,
        S::SimError,
        S::Rejected,
        S::Cancelled,
    ]
    .into_iter()
    .find(|s| status_name(*s) == name)
}

/// The stored terminal state of an ending; `via` is the channel actually used when it differs
/// from the record's.
pub fn terminal_state(status: TerminalStatus, reason: &str, via: Option<ChannelKind>) -> AuthState {
    let store_status = match status {
        TerminalStatus::Approved => records::TerminalStatus::Approved,
        TerminalStatus::Denied | TerminalStatus::Cancelled => records::TerminalStatus::Denied,
        TerminalStatus::Expired => records::TerminalStatus::Expired,
        _ => records::TerminalStatus::Failed,
    };
    let mut encoded = format!("{};{reason}", status_name(status));
    if let Some(via) = via {
        encoded.push_str(match via {
            ChannelKind::Ussd => ";via=ussd",
            ChannelKind::Stk => ";via=stk",
        });
    }
    AuthState::terminal(store_status, Some(&encoded))
}

/// Reads a stored terminal state back: (status, reason, channel override). Records written by
/// something else still read sensibly (the store status, the raw reason).
pub fn parse_terminal(state: &AuthState) -> Option<(TerminalStatus, String, Option<ChannelKind>)> {
    let AuthState::Terminal { status, reason } = state else {
        return None;
    };
    let raw = reason.as_deref().unwrap_or("");
    let mut parts = raw.split(';');
    let first = parts.next().unwrap_or("");
    if let Some(s) = status_from_name(first) {
        let reason = parts.next().unwrap_or("").to_owned();
        let via = parts.next().and_then(|v| match v {
            "via=ussd" => Some(ChannelKind::Ussd),
            "via=stk" => Some(ChannelKind::Stk),
            _ => None,
        });
        return Some((s, reason, via));
    }
    let s = match status {
        records::TerminalStatus::Approved => TerminalStatus::Approved,
        records::TerminalStatus::Denied => TerminalStatus::Denied,
        records::TerminalStatus::Expired => TerminalStatus::Expired,
        records::TerminalStatus::Failed => TerminalStatus::DeliveryError,
    };
    Some((s, raw.to_owned(), None))
}

/// The pending step of an in-flight state.
pub fn pending_step(state: &AuthState) -> Option<PendingState> {
    Some(match state {
        AuthState::Created => PendingState::Created,
        AuthState::Routed => PendingState::Routed,
        AuthState::Prompted => PendingState::Prompted,
        AuthState::Answered => PendingState::Answered,
        AuthState::Terminal { .. } => return None,
    })
}

/// What a relying party reads of a stored record.
pub fn view_of(record: &AuthorizationRecord) -> AuthorizationView {
    let mut channel = from_store_channel(record.channel);
    let (state, completed_at_ms) = match parse_terminal(&record.state) {
        Some((status, reason, via)) => {
            if let Some(via) = via {
                channel = via;
            }
            (
                AuthorizationState::Terminal { status, reason },
                Some(record.updated_ms),
            )
        }
        None => (
            AuthorizationState::Pending {
                step: pending_step(&record.state).unwrap_or(PendingState::Created),
            },
            None,
        ),
    };
    let approved = matches!(
        state,
        AuthorizationState::Terminal {
            status: TerminalStatus::Approved,
            ..
        }
    );
    AuthorizationView {
        id: record.id.clone(),
        state,
        loa_requested: from_store_loa(record.loa_requested),
        loa_achieved: if approved {
            record.loa_achieved.map(from_store_loa)
        } else {
            None
        },
        channel: Some(channel),
        operator: Some(record.operator.clone()),
        created_at_ms: record.created_ms,
        completed_at_ms,
        gateway_ms: record
            .prompted_ms
            .map(|at| at.saturating_sub(record.created_ms)),
        proof: if approved {
            record.proof.as_ref().map(hex::encode)
        } else {
            None
        },
    }
}

/// Whether a view is terminal.
pub fn is_terminal(view: &AuthorizationView) -> bool {
    matches!(view.state, AuthorizationState::Terminal { .. })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::channel::CardProof;
    use sim_applet_model::applet::protocol::Loa as AppletLoa;

    #[test]
    fn a_prompt_held_back_for_lack_of_time_expires_and_is_not_called_binds_down() {
        let ending = |r| ending_of(r, Loa::Loa2, false, false);
        let held_back = ending(AuthResult::NotSentInTime);
        assert_eq!(
            (held_back.status, held_back.reason.as_str()),
            (TerminalStatus::Expired, "prompt_not_sent_in_time")
        );
        assert!(!is_delivery_failure(&AuthResult::NotSentInTime));
        let dismissed = ending(AuthResult::HandsetTimeout);
        assert_eq!(
            (dismissed.status, dismissed.reason.as_str()),
            (TerminalStatus::Expired, "handset_timeout")
        );
        let queued_too_long = ending(AuthResult::DeliveryError(SubmitFailure::DeadlineExpired));
        assert_eq!(queued_too_long.reason, "submit_deadline_passed");
        assert_eq!(
            ending(AuthResult::DeliveryError(SubmitFailure::NoLinkByDeadline)).reason,
            "binds_down"
        );
    }

    fn record(state: AuthState) -> AuthorizationRecord {
        AuthorizationRecord {
            id: "a1".into(),
            client_id: "c".into(),
            msisdn: "48600000001".into(),
            operator: "red".into(),
            channel: records::Channel::Stk,
            loa_requested: records::Loa::Loa2,
            loa_achieved: Some(records::Loa::Loa2),
            state,
            created_ms: 10,
            deadline_ms: 1000,
            updated_ms: 20,
            stk_counter: Some(5),
            challenge: Vec::new(),
            txid: Vec::new(),
            ussd_key: None,
            proof: Some(vec![0xAB, 0xCD]),
            callback_url: None,
            idempotency_key: None,
            keycloak: None,
            node: None,
            prompted_ms: None,
        }
    }

    #[test]
    fn steps_only_go_forward_and_terminal_is_final() {
        assert!(may_follow(&AuthState::Created, &AuthState::Routed));
        assert!(may_follow(&AuthState::Routed, &AuthState::Prompted));
        assert!(may_follow(&AuthState::Prompted, &AuthState::Answered));
        let done = AuthState::terminal(records::TerminalStatus::Expired, None);
        assert!(may_follow(&AuthState::Created, &done));
        assert!(!may_follow(&AuthState::Prompted, &AuthState::Routed));
        assert!(!may_follow(
            &done,
            &AuthState::Terminal {
                status: records::TerminalStatus::Approved,
                reason: None
            }
        ));
    }

    #[test]
    fn every_api_status_survives_the_store_encoding() {
        for s in [
            TerminalStatus::Approved,
            TerminalStatus::Denied,
            TerminalStatus::Expired,
            TerminalStatus::PinBlocked,
            TerminalStatus::NotReachable,
            TerminalStatus::DeliveryError,
            TerminalStatus::SimError,
            TerminalStatus::Rejected,
            TerminalStatus::Cancelled,
        ] {
            let st = terminal_state(s, "why_not", Some(ChannelKind::Ussd));
            assert_eq!(
                parse_terminal(&st),
                Some((s, "why_not".into(), Some(ChannelKind::Ussd)))
            );
        }
    }

    #[test]
    fn approved_view_carries_proof_and_fallback_channel() {
        let st = terminal_state(
            TerminalStatus::Approved,
            "user_approved",
            Some(ChannelKind::Ussd),
        );
        let v = view_of(&record(st));
        assert_eq!(v.channel, Some(ChannelKind::Ussd));
        assert_eq!(v.proof.as_deref(), Some("abcd"));
        assert_eq!(v.completed_at_ms, Some(20));
    }

    #[test]
    fn denied_view_shows_no_proof_or_loa() {
        let st = terminal_state(TerminalStatus::Denied, "user_denied", None);
        let v = view_of(&record(st));
        assert_eq!(v.proof, None);
        assert_eq!(v.loa_achieved, None);
        assert_eq!(v.channel, Some(ChannelKind::Stk));
    }

    #[test]
    fn stk_approval_without_card_proof_is_not_an_approval() {
        let e = ending_of(
            AuthResult::Approved {
                loa: AppletLoa::Loa2,
                proof: None,
            },
            Loa::Loa2,
            true,
            false,
        );
        assert_eq!(e.status, TerminalStatus::SimError);
    }

    #[test]
    fn lower_loa_than_asked_is_not_an_approval() {
        let e = ending_of(
            AuthResult::Approved {
                loa: AppletLoa::Loa2,
                proof: None,
            },
            Loa::Loa3,
            false,
            false,
        );
        assert_eq!(e.status, TerminalStatus::SimError);
    }

    #[test]
    fn stk_approval_keeps_the_card_mac() {
        let proof = CardProof {
            counter: 7,
            txid: Default::default(),
            challenge: Default::default(),
            outcome: sim_applet_model::applet::protocol::Outcome::Approved {
                loa: AppletLoa::Loa3,
            },
            mac: [7u8; 16],
        };
        let e = ending_of(
            AuthResult::Approved {
                loa: AppletLoa::Loa3,
                proof: Some(proof),
            },
            Loa::Loa3,
            true,
            false,
        );
        assert_eq!(e.status, TerminalStatus::Approved);
        assert_eq!(e.loa_achieved, Some(Loa::Loa3));
        assert_eq!(e.proof, Some(vec![7u8; 16]));
    }

    #[test]
    fn wrong_pin_that_locks_ends_pin_blocked() {
        assert_eq!(
            ending_of(AuthResult::WrongPin, Loa::Loa3, false, true).status,
            TerminalStatus::PinBlocked
        );
        assert_eq!(
            ending_of(AuthResult::WrongPin, Loa::Loa3, false, false).status,
            TerminalStatus::Denied
        );
    }
}
