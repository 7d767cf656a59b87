//! Conversions between rusmpp PDUs and the network's plain messages, and the receipt text.
//!
//! `submit_sm` -> [`MtMessage`] on the way in; [`MoMessage`] and receipts -> `deliver_sm` on
//! the way out. Values rusmpp cannot carry (an address longer than 20 octets, say) are cut to
//! fit rather than failing: the SMSC is a test double and must keep talking.

use std::str::FromStr;

use rusmpp::pdus::{DeliverSm, SubmitSm};
use rusmpp::tlvs::{MessageDeliveryRequestTlvValue, TlvValue};
use rusmpp::types::{AnyOctetString, COctetString, OctetString};
use rusmpp::values::{
    DataCoding, EsmClass, ItsSessionInfo, MessagePayload, MessageState, Npi, RegisteredDelivery,
    ServiceType, Ton, UserMessageReference, UssdServiceOp,
};

use super::network::{Address, MoMessage, MtMessage, MtOutcome, SmFields};

/// `esm_class` of a delivery receipt (SMSC delivery receipt, message type bits 0x04).
pub const ESM_CLASS_RECEIPT: u8 = 0x04;

/// Reads the fields of an accepted `submit_sm`.
pub fn mt_from_submit(sm: &SubmitSm, message_id: String, system_id: String) -> MtMessage {
    let mut fields = SmFields {
        source: Address {
            ton: u8::from(sm.source_addr_ton),
            npi: u8::from(sm.source_addr_npi),
            addr: sm.source_addr.as_str().to_owned(),
        },
        destination: Address {
            ton: u8::from(sm.dest_addr_ton),
            npi: u8::from(sm.dest_addr_npi),
            addr: sm.destination_addr.as_str().to_owned(),
        },
        service_type: sm.service_type.value().as_str().to_owned(),
        esm_class: u8::from(sm.esm_class),
        protocol_id: sm.protocol_id,
        data_coding: u8::from(sm.data_coding),
        short_message: sm.short_message().as_ref().to_vec(),
        ..SmFields::default()
    };
    for tlv in sm.tlvs() {
        match tlv.value() {
            Some(TlvValue::MessagePayload(p)) => {
                fields.message_payload = Some(p.value.as_ref().to_vec());
            }
            Some(TlvValue::UssdServiceOp(op)) => fields.ussd_service_op = Some(u8::from(*op)),
            Some(TlvValue::ItsSessionInfo(i)) => {
                fields.its_session_info =
                    Some(u16::from(i.session_number) << 8 | u16::from(i.sequence_number));
            }
            Some(TlvValue::UserMessageReference(r)) => {
                fields.user_message_reference = Some(r.value);
            }
            _ => {}
        }
    }
    MtMessage {
        message_id,
        system_id,
        sm: fields,
    }
}

fn c_string<const MIN: usize, const MAX: usize>(s: &str) -> COctetString<MIN, MAX> {
    // MAX counts the terminating NUL; NULs inside would end the string early on the wire.
    let clean: String = s.chars().filter(|c| *c != '\0').take(MAX - 1).collect();
    let mut text = clean.as_str();
    while text.len() > MAX - 1 {
        // Cut on a char boundary: `take` counted chars, the limit is octets.
        let mut end = MAX - 1;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text = &text[..end];
    }
    COctetString::from_str(text).unwrap_or_default()
}

fn octets<const MIN: usize, const MAX: usize>(b: &[u8]) -> OctetString<MIN, MAX> {
    OctetString::from_slice(&b[..b.len().min(MAX)]).unwrap_or_default()
}

/// Builds the `deliver_sm` for an MO message.
pub fn deliver_from_mo(mo: &MoMessage) -> DeliverSm {
    let sm = &mo.sm;
    let mut tlvs: Vec<MessageDeliveryRequestTlvValue> = Vec::new();
    if let Some(p) = &sm.message_payload {
        tlvs.push(MessageDeliveryRequestTlvValue::MessagePayload(
            MessagePayload::new(AnyOctetString::from_slice(p)),
        ));
    }
    if let Some(op) = sm.ussd_service_op {
        tlvs.push(MessageDeliveryRequestTlvValue::UssdServiceOp(
            UssdServiceOp::from(op),
        ));
    }
    if let Some(info) = sm.its_session_info {
        let [hi, lo] = info.to_be_bytes();
        tlvs.push(MessageDeliveryRequestTlvValue::ItsSessionInfo(
            ItsSessionInfo::new(hi, lo),
        ));
    }
    if let Some(r) = sm.user_message_reference {
        tlvs.push(MessageDeliveryRequestTlvValue::UserMessageReference(
            UserMessageReference::new(r),
        ));
    }
    let mut d = DeliverSm::builder()
        .service_type(ServiceType::new(c_string(&sm.service_type)))
        .source_addr_ton(Ton::from(sm.source.ton))
        .source_addr_npi(Npi::from(sm.source.npi))
        .source_addr(c_string(&sm.source.addr))
        .dest_addr_ton(Ton::from(sm.destination.ton))
        .dest_addr_npi(Npi::from(sm.destination.npi))
        .destination_addr(c_string(&sm.destination.addr))
        .esm_class(EsmClass::from(sm.esm_class))
        .protocol_id(sm.protocol_id)
        .data_coding(DataCoding::from(sm.data_coding))
        .short_message(octets(&sm.short_message))
        .build();
    d.set_tlvs(tlvs);
    d
}

/// Builds the delivery receipt for `mt` with the standard text
/// `id:.. sub:001 dlvrd:001 submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DELIVRD err:000
/// text:..` and the `receipted_message_id` and `message_state` TLVs.
pub fn receipt_for(
    mt: &MtMessage,
    outcome: MtOutcome,
    submit_unix: u64,
    done_unix: u64,
) -> DeliverSm {
    let (dlvrd, stat, err, state) = match outcome {
        MtOutcome::Delivered => (1, "DELIVRD", 0, MessageState::Delivered),
        MtOutcome::Undeliverable { err } => (0, "UNDELIV", err, MessageState::Undeliverable),
    };
    let text = receipt_text(
        &mt.message_id,
        dlvrd,
        submit_unix,
        done_unix,
        stat,
        err,
        &mt.sm.short_message,
    );
    let mut d = DeliverSm::builder()
        .source_addr_ton(Ton::from(mt.sm.destination.ton))
        .source_addr_npi(Npi::from(mt.sm.destination.npi))
        .source_addr(c_string(&mt.sm.destination.addr))
        .dest_addr_ton(Ton::from(mt.sm.source.ton))
        .dest_addr_npi(Npi::from(mt.sm.source.npi))
        .destination_addr(c_string(&mt.sm.source.addr))
        .esm_class(EsmClass::from(ESM_CLASS_RECEIPT))
        .registered_delivery(RegisteredDelivery::default())
        .short_message(octets(text.as_bytes()))
        .build();
    d.set_tlvs(vec![
        MessageDeliveryRequestTlvValue::ReceiptedMessageId(c_string(&mt.message_id)),
        MessageDeliveryRequestTlvValue::MessageState(state),
    ]);
    d
}

/// The receipt text of SMPP 3.4 appendix B. `text` is the first 20 octets of the message,
/// non-printable octets shown as '.', so binary SMS-PP stays readable ASCII.
pub fn receipt_text(
    message_id: &str,
    dlvrd: u8,
    submit_unix: u64,
    done_unix: u64,
    stat: &str,
    err: u16,
    short_message: &[u8],
) -> String {
    let text: String = short_message
        .iter()
        .take(20)
        .map(|&b| {
            if (0x20..0x7F).contains(&b) {
                b as char
            } else {
                '.'
            }
        })
        .collect();
    format!(
        "id:{message_id} sub:001 dlvrd:{dlvrd:03} submit date:{} done date:{} stat:{stat} err:{err:03} text:{text}",
        yymmddhhmm(submit_unix),
        yymmddhhmm(done_unix)
    )
}

/// `YYMMDDhhmm` in UTC for seconds since the Unix epoch.
pub fn yymmddhhmm(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{:02}{:02}{:02}{:02}{:02}",
        y % 100,
        m,
        d,
        secs / 3600,
        (secs % 3600) / 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (the well-known era algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_yymmddhhmm() {
        assert_eq!(yymmddhhmm(0), "7001010000");
        // 2026-11-23 10:34:00 UTC
        assert_eq!(yymmddhhmm(1_795_430_040), "2611231034");
        // 2000-02-29 23:59 (leap day)
        assert_eq!(yymmddhhmm(951_868_740), "0002292359");
    }

    #[test]
    fn the_receipt_text_has_the_standard_layout() {
        let t = receipt_text("0000000042", 1, 0, 60, "DELIVRD", 0, b"Hello\x01world");
        assert_eq!(
            t,
            "id:0000000042 sub:001 dlvrd:001 submit date:7001010000 done date:7001010001 \
             stat:DELIVRD err:000 text:Hello.world"
        );
    }

    #[test]
    fn an_mo_keeps_its_ussd_tlvs_through_deliver_sm() {
        let mo = MoMessage {
            sm: SmFields {
                source: Address::international("48600100200"),
                destination: Address::international("*123#"),
                service_type: "USSD".into(),
                short_message: b"1".to_vec(),
                ussd_service_op: Some(18),
                its_session_info: Some(0x0A03),
                user_message_reference: Some(7),
                ..SmFields::default()
            },
        };
        let d = deliver_from_mo(&mo);
        assert_eq!(d.source_addr.as_str(), "48600100200");
        let tags: Vec<_> = d.tlvs().iter().filter_map(|t| t.value().cloned()).collect();
        assert!(tags.contains(&TlvValue::UssdServiceOp(UssdServiceOp::UssrConfirm)));
        assert!(tags.contains(&TlvValue::ItsSessionInfo(ItsSessionInfo::new(0x0A, 0x03))));
        assert!(
            tags.contains(&TlvValue::UserMessageReference(UserMessageReference::new(
                7
            )))
        );
    }

    #[test]
    fn overlong_addresses_are_cut_not_refused() {
        let c: COctetString<1, 21> = c_string("1234567890123456789012345");
        assert_eq!(c.as_str(), "12345678901234567890");
    }
}
