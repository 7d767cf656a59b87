//! SMS-PP data download over SMPP: secured command packets out, proofs of receipt back.
//!
//! Outgoing, [`build_submits`] wraps a secured command packet (TS 31.115) in one or more
//! `submit_sm` with `protocol_id` 0x7F (SIM data download), `data_coding` 0xF6 (8-bit,
//! class 2) and UDHI set; the user data starts with the command-packet IEI `70 00`, and a
//! packet longer than 137 octets is split with the 8-bit concatenation IEI `00` (IEI 0x70 in
//! the first segment, after the concatenation IE).
//!
//! Incoming, the card's answer arrives as an ordinary MO `deliver_sm` (PID 0x7F, UDH with the
//! response-packet IEI `71 00`, maybe concatenated). [`Reassembler::push`] collects segments per
//! (MSISDN, reference) with a bound on pending messages and an age limit, and returns the
//! response packet without the UDH (its CC covers the header `02 71 00`: prepend it again).
//!
//! Each SMS-PP `submit_sm` asks for a delivery receipt on failure only (`registered_delivery`
//! 0x02): an SMSC accepts a download to a SIM without the applet, and only its receipt (stat
//! UNDELIV, err 213 = TP-FCS 0xD5 "(U)SIM data download error") says it failed on the handset.
//! [`parse_receipt`] reads such a receipt: the `receipted_message_id` and `message_state` TLVs
//! when present, else the `id:` and `stat:` fields of the SMPP 3.4 appendix B text; the gateway's
//! channel router matches its id against the `message_id`s of `submit_sm_resp` with [`normalize_message_id`].

use crate::cat::tpdu::{command_segments, MAX_SEGMENTS};
use crate::udh::{self, Duplicates, Fed, Limits, UdhError};
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::smpp::rusmpp::{
    pdus::{DeliverSm, SubmitSm},
    tlvs::TlvValue,
    types::{COctetString, OctetString},
    values::{DataCoding, EsmClass, Npi, RegisteredDelivery, Ton},
};

/// `registered_delivery` of SMS-PP submits: SMSC delivery receipt on failure only (SMPP 3.4
/// 5.2.17); success is the card's PoR.
pub const RECEIPT_ON_FAILURE: u8 = 0x02;

/// Longest receipt text read (the appendix B layout is about 100 octets; `message_payload` may
/// be longer, and nothing after `text:` is read anyway).
const MAX_RECEIPT_TEXT: usize = 512;

/// Errors of the SMS-PP transport.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmsPpError {
    /// The packet needs more segments than a card reassembles
    /// ([`sim_applet_model::cat::tpdu::MAX_SEGMENTS`]).
    #[error("secured packet of {len} octets needs more SMS segments than a card reassembles")]
    TooLong { len: usize },
    /// An address does not fit its field.
    #[error("field `{field}` is invalid")]
    BadField { field: &'static str },
    /// Not a SIM data download answer (PID or UDHI missing).
    #[error("deliver_sm is not an SMS-PP answer (protocol_id 0x{pid:02X}, esm_class 0x{esm:02X})")]
    NotSmsPp { pid: u8, esm: u8 },
    /// The UDH is malformed.
    #[error("malformed UDH at offset {at}")]
    BadUdh { at: usize },
}

/// Why a `deliver_sm` could not be read as a delivery receipt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// `esm_class` message type (bits 2-5) is not 0x04 "SMSC delivery receipt".
    #[error("deliver_sm is not a delivery receipt (esm_class 0x{esm:02X})")]
    NotReceipt { esm: u8 },
    /// Neither the TLV nor the text gives this field (`id` or `stat`).
    #[error("delivery receipt without `{field}`")]
    Missing { field: &'static str },
}

/// The message state a receipt reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptState {
    /// DELIVRD / message_state 2.
    Delivered,
    /// EXPIRED / 3.
    Expired,
    /// DELETED / 4.
    Deleted,
    /// UNDELIV / 5.
    Undeliverable,
    /// REJECTD / 8.
    Rejected,
    /// ENROUTE, ACCEPTD, UNKNOWN or anything else: not final, or says nothing of delivery.
    Other,
}

impl ReceiptState {
    /// From the `message_state` TLV value (SMPP 3.4 5.2.28).
    pub fn from_message_state(value: u8) -> Self {
        match value {
            2 => Self::Delivered,
            3 => Self::Expired,
            4 => Self::Deleted,
            5 => Self::Undeliverable,
            8 => Self::Rejected,
            _ => Self::Other,
        }
    }

    /// From the text's `stat:` word (SMPP 3.4 appendix B), case-insensitive.
    pub fn from_stat(stat: &str) -> Self {
        match stat.to_ascii_uppercase().as_str() {
            "DELIVRD" | "DELIVERED" => Self::Delivered,
            "EXPIRED" => Self::Expired,
            "DELETED" => Self::Deleted,
            "UNDELIV" | "UNDELIVERABLE" => Self::Undeliverable,
            "REJECTD" | "REJECTED" => Self::Rejected,
            _ => Self::Other,
        }
    }

    /// Whether the message will never reach the handset.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Self::Expired | Self::Deleted | Self::Undeliverable | Self::Rejected
        )
    }

    fn word(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Expired => "expired",
            Self::Deleted => "deleted",
            Self::Undeliverable => "undeliverable",
            Self::Rejected => "rejected",
            Self::Other => "other",
        }
    }
}

/// What an SMSC delivery receipt says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReceipt {
    /// The receipted message's id as the SMSC wrote it (match with [`normalize_message_id`]).
    pub message_id: String,
    pub state: ReceiptState,
    /// The text's `err:` field, if any (network specific; 213 is TP-FCS 0xD5).
    pub error: Option<String>,
}

impl DeliveryReceipt {
    /// A short reason for logs and outcomes, e.g. `undeliverable err:213`.
    pub fn reason(&self) -> String {
        match &self.error {
            Some(err) => format!("{} err:{err}", self.state.word()),
            None => self.state.word().to_owned(),
        }
    }
}

/// Whether `esm_class` marks an SMSC delivery receipt (message type bits 2-5 = 0x04).
pub fn is_delivery_receipt(esm_class: u8) -> bool {
    esm_class & 0x3C == 0x04
}

/// The form in which message ids are compared: trimmed, ASCII lower case (hex ids), without
/// leading zeros (SMSCs pad decimal ids in the text but not always in `submit_sm_resp`).
pub fn normalize_message_id(id: &str) -> String {
    let id = id.trim().to_ascii_lowercase();
    let stripped = id.trim_start_matches('0');
    if stripped.is_empty() && !id.is_empty() {
        "0".to_owned()
    } else {
        stripped.to_owned()
    }
}

/// The `id:`, `stat:` and `err:` fields of a receipt text (SMPP 3.4 appendix B), read
/// tolerantly: keys in any case, fields in any order, separated by any whitespace; the
/// free-form `text:` field and whatever follows it are never read.
pub fn parse_receipt_text(text: &str) -> (Option<&str>, Option<&str>, Option<&str>) {
    let (mut id, mut stat, mut err) = (None, None, None);
    for token in text.split_ascii_whitespace() {
        let Some((key, value)) = token.split_once(':') else {
            continue;
        };
        let value = Some(value).filter(|v| !v.is_empty());
        if key.eq_ignore_ascii_case("text") {
            break;
        } else if key.eq_ignore_ascii_case("id") {
            id = id.or(value);
        } else if key.eq_ignore_ascii_case("stat") {
            stat = stat.or(value);
        } else if key.eq_ignore_ascii_case("err") {
            err = err.or(value);
        }
    }
    (id, stat, err)
}

/// Reads a delivery receipt: TLVs first, the text for what they leave out.
pub fn parse_receipt(deliver: &DeliverSm) -> Result<DeliveryReceipt, ReceiptError> {
    let esm = u8::from(deliver.esm_class);
    if !is_delivery_receipt(esm) {
        return Err(ReceiptError::NotReceipt { esm });
    }
    let mut tlv_id = None;
    let mut tlv_state = None;
    let mut payload: Option<&[u8]> = None;
    for tlv in deliver.tlvs() {
        match tlv.value() {
            Some(TlvValue::ReceiptedMessageId(id)) => tlv_id = Some(id.to_string()),
            Some(TlvValue::MessageState(state)) => tlv_state = Some(u8::from(*state)),
            Some(TlvValue::MessagePayload(p)) => payload = Some(p.value.as_ref()),
            _ => {}
        }
    }
    let raw = match deliver.short_message().as_ref() {
        [] => payload.unwrap_or_default(),
        sm => sm,
    };
    let text = String::from_utf8_lossy(&raw[..raw.len().min(MAX_RECEIPT_TEXT)]);
    let (text_id, text_stat, text_err) = parse_receipt_text(&text);
    let message_id = tlv_id
        .filter(|id| !id.trim().is_empty())
        .or_else(|| text_id.map(str::to_owned))
        .ok_or(ReceiptError::Missing { field: "id" })?;
    let state = match (tlv_state, text_stat) {
        (Some(v), _) => ReceiptState::from_message_state(v),
        (None, Some(stat)) => ReceiptState::from_stat(stat),
        (None, None) => return Err(ReceiptError::Missing { field: "stat" }),
    };
    Ok(DeliveryReceipt {
        message_id,
        state,
        error: text_err.map(str::to_owned),
    })
}

fn submit(dest: &str, src: &str, ud: Vec<u8>) -> Result<SubmitSm, SmsPpError> {
    Ok(SubmitSm::builder()
        .source_addr_ton(Ton::Unknown)
        .source_addr_npi(Npi::Unknown)
        .source_addr(
            COctetString::from_str(src).map_err(|_| SmsPpError::BadField {
                field: "source_addr",
            })?,
        )
        .dest_addr_ton(Ton::International)
        .dest_addr_npi(Npi::Isdn)
        .destination_addr(
            COctetString::from_str(dest).map_err(|_| SmsPpError::BadField {
                field: "destination_addr",
            })?,
        )
        .esm_class(EsmClass::from(0x40))
        .protocol_id(0x7F)
        .registered_delivery(RegisteredDelivery::from(RECEIPT_ON_FAILURE))
        .data_coding(DataCoding::from(0xF6))
        .short_message(OctetString::from_vec(ud).map_err(|_| SmsPpError::BadField {
            field: "short_message",
        })?)
        .build())
}

/// `submit_sm`s carrying `packet` (a secured command packet from CPL on) to `dest`;
/// `reference` is the concatenation reference used when it needs several SMS.
pub fn build_submits(
    dest: &str,
    src: &str,
    packet: &[u8],
    reference: u8,
) -> Result<Vec<SubmitSm>, SmsPpError> {
    // One segmentation for both sides: the card model reassembles what this layout produces.
    let segments = command_segments(packet, reference)
        .map_err(|_| SmsPpError::TooLong { len: packet.len() })?;
    segments
        .into_iter()
        .map(|ud| submit(dest, src, ud))
        .collect()
}

/// Collects SMS-PP answers, concatenated or not, with bounded state: the shared reassembler
/// ([`crate::udh::Reassembler`]) keyed by the answering MSISDN, at most
/// [`MAX_SEGMENTS`](crate::cat::tpdu::MAX_SEGMENTS) parts a message, a repeated part
/// replacing the earlier.
#[derive(Debug)]
pub struct Reassembler {
    parts: udh::Reassembler<String, Instant, Vec<u8>>,
}

impl Reassembler {
    /// At most `max_pending` incomplete messages, each kept at most `max_age`.
    pub fn new(max_pending: usize, max_age: Duration) -> Self {
        Self {
            parts: udh::Reassembler::new(Limits {
                max_pending,
                max_parts: MAX_SEGMENTS,
                max_age_ms: Some(u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX)),
                duplicates: Duplicates::Replace,
            }),
        }
    }

    /// Incomplete messages held.
    pub fn pending(&self) -> usize {
        self.parts.pending()
    }

    /// Drops incomplete messages older than `max_age`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.parts.expire(now);
    }

    /// Feeds one `deliver_sm`; returns the whole response packet once complete.
    pub fn push(
        &mut self,
        now: Instant,
        deliver: &DeliverSm,
    ) -> Result<Option<Vec<u8>>, SmsPpError> {
        let esm = u8::from(deliver.esm_class);
        if deliver.protocol_id != 0x7F || esm & 0x40 == 0 {
            return Err(SmsPpError::NotSmsPp {
                pid: deliver.protocol_id,
                esm,
            });
        }
        let ud = deliver.short_message().as_ref();
        let header = udh::parse(ud).map_err(|e| SmsPpError::BadUdh {
            at: match e {
                UdhError::TruncatedElement { at } => at,
                UdhError::Missing | UdhError::LongerThanUserData { .. } => 0,
            },
        })?;
        let payload = ud.get(header.body_at..).unwrap_or_default().to_vec();
        let Some(concat) = header.concat.filter(|c| c.total > 1) else {
            return Ok(Some(payload));
        };
        match self
            .parts
            .push(now, deliver.source_addr.to_string(), concat, payload)
        {
            Fed::Complete(parts) => Ok(Some(parts.concat())),
            Fed::Waiting | Fed::Duplicate => Ok(None),
            Fed::TooManyParts | Fed::BadPartNumber => Err(SmsPpError::BadUdh { at: 1 }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn deliver(ud: Vec<u8>) -> DeliverSm {
        DeliverSm::builder()
            .source_addr(COctetString::from_str("48600100200").unwrap())
            .esm_class(EsmClass::from(0x40))
            .protocol_id(0x7F)
            .data_coding(DataCoding::from(0xF6))
            .short_message(OctetString::from_vec(ud).unwrap())
            .build()
    }

    #[test]
    fn short_packet_is_one_sms_with_the_command_header() {
        let packet = [0xAB; 137];
        let sms = build_submits("486", "OTA", &packet, 1).unwrap();
        assert_eq!(sms.len(), 1);
        let ud = sms[0].short_message().as_ref();
        assert_eq!(&ud[..3], &[0x02, 0x70, 0x00]);
        assert_eq!(ud.len(), 140);
        assert_eq!(sms[0].protocol_id, 0x7F);
        assert_eq!(u8::from(sms[0].data_coding), 0xF6);
        assert_eq!(u8::from(sms[0].esm_class), 0x40);
    }

    #[test]
    fn long_packet_is_concatenated_with_0x70_in_the_first_segment() {
        let packet: Vec<u8> = (0..300u16).map(|i| i as u8).collect();
        let sms = build_submits("486", "OTA", &packet, 9).unwrap();
        assert_eq!(sms.len(), 3);
        let first = sms[0].short_message().as_ref();
        assert_eq!(&first[..8], &[0x07, 0x00, 0x03, 9, 3, 1, 0x70, 0x00]);
        let second = sms[1].short_message().as_ref();
        assert_eq!(&second[..6], &[0x05, 0x00, 0x03, 9, 3, 2]);
        let mut joined = first[8..].to_vec();
        joined.extend_from_slice(&second[6..]);
        joined.extend_from_slice(&sms[2].short_message().as_ref()[6..]);
        assert_eq!(joined, packet);
        assert!(sms.iter().all(|s| s.short_message().as_ref().len() <= 140));
    }

    #[test]
    fn single_por_is_returned_without_the_udh() {
        let por =
            hex::decode("001c12b000118bb989492c632529326a2f4681feb37c825bc9021c9f6d0b").unwrap();
        let mut ud = vec![0x02, 0x71, 0x00];
        ud.extend_from_slice(&por);
        let mut r = Reassembler::new(4, Duration::from_secs(60));
        assert_eq!(r.push(Instant::now(), &deliver(ud)).unwrap(), Some(por));
    }

    #[test]
    fn concatenated_por_is_reassembled_in_any_order() {
        let t0 = Instant::now();
        let mut r = Reassembler::new(4, Duration::from_secs(60));
        let p2 = deliver(vec![0x05, 0x00, 0x03, 7, 2, 2, 0xCC, 0xDD]);
        let p1 = deliver(vec![0x07, 0x00, 0x03, 7, 2, 1, 0x71, 0x00, 0xAA, 0xBB]);
        assert_eq!(r.push(t0, &p2).unwrap(), None);
        assert_eq!(r.pending(), 1);
        assert_eq!(r.push(t0, &p1).unwrap(), Some(vec![0xAA, 0xBB, 0xCC, 0xDD]));
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn pending_messages_are_bounded_and_expire() {
        let t0 = Instant::now();
        let mut r = Reassembler::new(2, Duration::from_secs(10));
        for reference in 0..5u8 {
            r.push(t0, &deliver(vec![0x05, 0x00, 0x03, reference, 2, 1, 0x00]))
                .unwrap();
        }
        assert_eq!(r.pending(), 2);
        r.handle_timeout(t0 + Duration::from_secs(10));
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn non_smspp_deliver_is_refused() {
        let d = DeliverSm::builder().build();
        assert!(matches!(
            Reassembler::new(1, Duration::from_secs(1)).push(Instant::now(), &d),
            Err(SmsPpError::NotSmsPp { .. })
        ));
    }

    #[test]
    fn smspp_submits_ask_for_a_receipt_on_failure_only() {
        let packet: Vec<u8> = (0..300u16).map(|i| i as u8).collect();
        for sm in build_submits("486", "OTA", &packet, 9).unwrap() {
            assert_eq!(u8::from(sm.registered_delivery), 0x02);
        }
    }

    /// The layout of SMPP 3.4 appendix B, as the simulated SMSC writes it.
    const UNDELIV_TEXT: &str = "id:0000000042 sub:001 dlvrd:000 submit date:2401011200 \
        done date:2401011200 stat:UNDELIV err:213 text:.p.stat:DELIVRD id:9";

    fn receipt(
        text: &str,
        tlvs: Vec<crate::smpp::rusmpp::tlvs::MessageDeliveryRequestTlvValue>,
    ) -> DeliverSm {
        let mut d = DeliverSm::builder()
            .source_addr(COctetString::from_str("48600100200").unwrap())
            .esm_class(EsmClass::from(0x04))
            .short_message(OctetString::from_vec(text.as_bytes().to_vec()).unwrap())
            .build();
        d.set_tlvs(tlvs);
        d
    }

    #[test]
    fn receipt_text_fields_are_read_and_the_free_text_is_not() {
        assert_eq!(
            parse_receipt_text(UNDELIV_TEXT),
            (Some("0000000042"), Some("UNDELIV"), Some("213"))
        );
        // Keys in any case and order, odd spacing; a field without value is absent.
        assert_eq!(
            parse_receipt_text("STAT:rejectd  Err:  ID:1f3A\tsub:1"),
            (Some("1f3A"), Some("rejectd"), None)
        );
        assert_eq!(parse_receipt_text(""), (None, None, None));
        assert_eq!(
            parse_receipt_text("text:id:5 stat:UNDELIV"),
            (None, None, None)
        );
    }

    #[test]
    fn undeliverable_receipt_from_text_is_a_failure_with_its_error() {
        let r = parse_receipt(&receipt(UNDELIV_TEXT, vec![])).unwrap();
        assert_eq!(r.message_id, "0000000042");
        assert_eq!(r.state, ReceiptState::Undeliverable);
        assert!(r.state.is_failure());
        assert_eq!(r.reason(), "undeliverable err:213");
    }

    #[test]
    fn receipt_tlvs_win_over_the_text() {
        use crate::smpp::rusmpp::tlvs::MessageDeliveryRequestTlvValue as T;
        use crate::smpp::rusmpp::values::MessageState;
        let r = parse_receipt(&receipt(
            "id:1 stat:DELIVRD err:000",
            vec![
                T::ReceiptedMessageId(COctetString::from_str("2A").unwrap()),
                T::MessageState(MessageState::Rejected),
            ],
        ))
        .unwrap();
        assert_eq!(r.message_id, "2A");
        assert_eq!(r.state, ReceiptState::Rejected);
        // TLVs alone, no text at all.
        let r = parse_receipt(&receipt(
            "",
            vec![
                T::ReceiptedMessageId(COctetString::from_str("77").unwrap()),
                T::MessageState(MessageState::Expired),
            ],
        ))
        .unwrap();
        assert_eq!(
            (r.message_id.as_str(), r.state),
            ("77", ReceiptState::Expired)
        );
        assert_eq!(r.reason(), "expired");
    }

    #[test]
    fn receipt_states_follow_the_spec_numbers_and_words() {
        let failed: Vec<u8> = (0..=10)
            .filter(|v| ReceiptState::from_message_state(*v).is_failure())
            .collect();
        assert_eq!(failed, vec![3, 4, 5, 8]);
        assert_eq!(ReceiptState::from_message_state(2), ReceiptState::Delivered);
        for (word, failure) in [
            ("DELIVRD", false),
            ("ENROUTE", false),
            ("ACCEPTD", false),
            ("UNKNOWN", false),
            ("UNDELIV", true),
            ("REJECTD", true),
            ("EXPIRED", true),
            ("deleted", true),
        ] {
            assert_eq!(
                ReceiptState::from_stat(word).is_failure(),
                failure,
                "{word}"
            );
        }
    }

    #[test]
    fn receipt_without_id_or_state_or_of_another_type_is_an_error() {
        assert_eq!(
            parse_receipt(&receipt("stat:UNDELIV", vec![])),
            Err(ReceiptError::Missing { field: "id" })
        );
        assert_eq!(
            parse_receipt(&receipt("id:5 err:1", vec![])),
            Err(ReceiptError::Missing { field: "stat" })
        );
        assert_eq!(
            parse_receipt(&deliver(vec![0x02, 0x71, 0x00])),
            Err(ReceiptError::NotReceipt { esm: 0x40 })
        );
    }

    #[test]
    fn receipt_type_is_bits_2_to_5_of_esm_class() {
        assert!(is_delivery_receipt(0x04));
        assert!(is_delivery_receipt(0x44));
        assert!(is_delivery_receipt(0x07));
        assert!(!is_delivery_receipt(0x00));
        assert!(!is_delivery_receipt(0x40));
        assert!(!is_delivery_receipt(0x08));
        assert!(!is_delivery_receipt(0x24));
    }

    #[test]
    fn message_ids_compare_without_padding_or_case() {
        assert_eq!(
            normalize_message_id("0000000042"),
            normalize_message_id("42")
        );
        assert_eq!(
            normalize_message_id(" 00aB12 "),
            normalize_message_id("Ab12")
        );
        assert_eq!(normalize_message_id("0000"), "0");
        assert_eq!(normalize_message_id(""), "");
        assert_ne!(normalize_message_id("420"), normalize_message_id("42"));
    }

    proptest::proptest! {
        #[test]
        fn receipt_parser_never_panics(
            text in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..254),
            esm in proptest::prelude::any::<u8>(),
        ) {
            let d = DeliverSm::builder()
                .esm_class(EsmClass::from(esm))
                .short_message(OctetString::from_vec(text.clone()).unwrap())
                .build();
            let _ = parse_receipt(&d);
            let _ = parse_receipt_text(&String::from_utf8_lossy(&text));
        }
    }

    #[test]
    fn truncated_udh_is_an_error_not_a_panic() {
        let mut r = Reassembler::new(1, Duration::from_secs(1));
        assert!(r
            .push(Instant::now(), &deliver(vec![0x09, 0x00, 0x03]))
            .is_err());
        assert!(r
            .push(Instant::now(), &deliver(vec![0x03, 0x00, 0x05, 1]))
            .is_err());
        assert!(r.push(Instant::now(), &deliver(vec![])).is_err());
    }
}
