//! The radio side of the simulated SMSC: where MT messages go and where MO messages come from.
//!
//! The SMSC turns each accepted `submit_sm` into an [`MtMessage`] and hands it to a [`Network`];
//! whatever the network later yields from [`Network::poll_mo`] goes back to the ESMEs as
//! `deliver_sm`. The network is sans-IO: it never reads the clock and never sleeps. One task in
//! the server owns it, passes `now` in, and wakes it at [`Network::poll_timeout`] mapped onto
//! real time. [`EchoNetwork`] answers every USSD request alike; [`HandsetNetwork`] hosts a
//! seeded population of simulated handsets (`sim_applet_model::handset`) behind the same trait.
//!
//! Values are kept as plain octets (no rusmpp types) so a handset model without SMPP
//! knowledge can produce and consume them.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub use super::population::{HandsetNetwork, PopulationConfig, PopulationError, PopulationStats};

/// `ussd_service_op` 2: USSR request (network asks, handset answers).
pub const USSD_OP_USSR_REQUEST: u8 = 2;
/// `ussd_service_op` 18: USSR confirm (the handset's answer).
pub const USSD_OP_USSR_CONFIRM: u8 = 18;
/// TP-PID of SIM data download (SMS-PP to the card).
pub const PID_SIM_DATA_DOWNLOAD: u8 = 0x7F;

/// An SMPP address: type of number, numbering plan, digits (or alphanumeric).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Address {
    pub ton: u8,
    pub npi: u8,
    pub addr: String,
}

impl Address {
    /// International ISDN number (TON 1, NPI 1).
    pub fn international(addr: impl Into<String>) -> Self {
        Self {
            ton: 1,
            npi: 1,
            addr: addr.into(),
        }
    }
}

/// The fields of a short message shared by both directions (`submit_sm` and `deliver_sm`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmFields {
    pub source: Address,
    pub destination: Address,
    /// `service_type`, e.g. "USSD"; empty for the default.
    pub service_type: String,
    pub esm_class: u8,
    pub protocol_id: u8,
    pub data_coding: u8,
    pub short_message: Vec<u8>,
    /// TLV `message_payload` (0x0424), used instead of `short_message` for long content.
    pub message_payload: Option<Vec<u8>>,
    /// TLV `ussd_service_op` (0x0501).
    pub ussd_service_op: Option<u8>,
    /// TLV `its_session_info` (0x1383) as sent: session number in the high octet, sequence
    /// number and end-of-session bit (bit 0) in the low octet.
    pub its_session_info: Option<u16>,
    /// TLV `user_message_reference` (0x0204).
    pub user_message_reference: Option<u16>,
}

/// A mobile-terminated message accepted from an ESME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtMessage {
    /// The id returned in `submit_sm_resp`; receipts carry it too.
    pub message_id: String,
    /// The `system_id` of the account that submitted it.
    pub system_id: String,
    pub sm: SmFields,
}

/// A mobile-originated message for the ESMEs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoMessage {
    pub sm: SmFields,
}

/// What became of an MT message; decides the delivery receipt's `stat` and `err`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtOutcome {
    /// Delivered to the handset (`stat:DELIVRD err:000`).
    Delivered,
    /// Not deliverable (`stat:UNDELIV`, `err` the network error code).
    Undeliverable { err: u16 },
}

/// The simulated radio network behind the SMSC. Sans-IO: every call gets `now`.
///
/// Contract:
/// - [`handle_mt`](Network::handle_mt) is called once per accepted MT, in arrival order, and
///   returns at once with the delivery outcome (used for the receipt). Answers the handset
///   produces later are queued inside the network.
/// - [`poll_mo`](Network::poll_mo) is called after every `handle_mt` and after every wake-up
///   until it returns `None`; it yields the MO messages due at `now`.
/// - [`poll_timeout`](Network::poll_timeout) says when the network next has something to do
///   (`None`: nothing until the next MT). The driver sleeps until then and calls `poll_mo`.
/// - MO routing to an account is the SMSC's business: an MO whose destination is an address
///   that an account used as source of an MT goes to that account's receivers.
pub trait Network: Send {
    fn handle_mt(&mut self, now: Instant, mt: MtMessage) -> MtOutcome;
    fn poll_mo(&mut self, now: Instant) -> Option<MoMessage>;
    fn poll_timeout(&self) -> Option<Instant>;
}

/// Settings of [`EchoNetwork`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoConfig {
    /// How long the "user" takes to answer a USSR request.
    pub ussd_reply_delay: Duration,
    /// The answer the "user" types.
    pub ussd_reply_text: String,
}

impl Default for EchoConfig {
    fn default() -> Self {
        Self {
            ussd_reply_delay: Duration::from_millis(100),
            ussd_reply_text: "1".to_owned(),
        }
    }
}

/// A network where every handset exists and every USSR request is answered with the same
/// text after a fixed delay. SMS-PP (PID 0x7F) and plain SMS are delivered and answer nothing.
#[derive(Debug, Default)]
pub struct EchoNetwork {
    config: EchoConfig,
    /// Answers waiting for their time, in due order (the delay is constant, so FIFO is sorted).
    due: VecDeque<(Instant, MoMessage)>,
}

impl EchoNetwork {
    pub fn new(config: EchoConfig) -> Self {
        Self {
            config,
            due: VecDeque::new(),
        }
    }
}

impl Network for EchoNetwork {
    fn handle_mt(&mut self, now: Instant, mt: MtMessage) -> MtOutcome {
        if mt.sm.ussd_service_op == Some(USSD_OP_USSR_REQUEST) {
            let reply = MoMessage {
                sm: SmFields {
                    source: mt.sm.destination.clone(),
                    destination: mt.sm.source.clone(),
                    service_type: mt.sm.service_type.clone(),
                    esm_class: 0,
                    protocol_id: 0,
                    data_coding: 0,
                    short_message: self.config.ussd_reply_text.as_bytes().to_vec(),
                    message_payload: None,
                    ussd_service_op: Some(USSD_OP_USSR_CONFIRM),
                    its_session_info: mt.sm.its_session_info,
                    user_message_reference: mt.sm.user_message_reference,
                },
            };
            self.due
                .push_back((now + self.config.ussd_reply_delay, reply));
        }
        MtOutcome::Delivered
    }

    fn poll_mo(&mut self, now: Instant) -> Option<MoMessage> {
        match self.due.front() {
            Some((at, _)) if *at <= now => self.due.pop_front().map(|(_, mo)| mo),
            _ => None,
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.due.front().map(|(at, _)| *at)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ussd_request(session: u16) -> MtMessage {
        MtMessage {
            message_id: "1".into(),
            system_id: "gw".into(),
            sm: SmFields {
                source: Address::international("*123#"),
                destination: Address::international("48600100200"),
                service_type: "USSD".into(),
                short_message: b"Approve login? 1=yes".to_vec(),
                ussd_service_op: Some(USSD_OP_USSR_REQUEST),
                its_session_info: Some(session),
                ..SmFields::default()
            },
        }
    }

    #[test]
    fn a_ussr_request_is_confirmed_after_the_delay_with_the_same_session() {
        let mut n = EchoNetwork::new(EchoConfig {
            ussd_reply_delay: Duration::from_secs(2),
            ussd_reply_text: "1".into(),
        });
        let t0 = Instant::now();
        assert_eq!(n.handle_mt(t0, ussd_request(0x0702)), MtOutcome::Delivered);
        assert_eq!(n.poll_timeout(), Some(t0 + Duration::from_secs(2)));
        assert!(n.poll_mo(t0 + Duration::from_secs(1)).is_none());
        let mo = n.poll_mo(t0 + Duration::from_secs(2)).expect("reply due");
        assert_eq!(mo.sm.ussd_service_op, Some(USSD_OP_USSR_CONFIRM));
        assert_eq!(mo.sm.its_session_info, Some(0x0702));
        assert_eq!(mo.sm.short_message, b"1");
        assert_eq!(mo.sm.source.addr, "48600100200");
        assert_eq!(mo.sm.destination.addr, "*123#");
        assert!(n.poll_timeout().is_none());
    }

    #[test]
    fn sms_pp_is_delivered_silently() {
        let mut n = EchoNetwork::default();
        let mut mt = ussd_request(1);
        mt.sm.ussd_service_op = None;
        mt.sm.service_type.clear();
        mt.sm.protocol_id = PID_SIM_DATA_DOWNLOAD;
        mt.sm.data_coding = 0xF6;
        let t0 = Instant::now();
        assert_eq!(n.handle_mt(t0, mt), MtOutcome::Delivered);
        assert!(n.poll_timeout().is_none());
        assert!(n.poll_mo(t0 + Duration::from_secs(60)).is_none());
    }
}
