//! Per-operator USSD-over-SMPP dialects: building USSD `submit_sm` and reading MO `deliver_sm`.
//!
//! Nothing about USSD over SMPP is uniform between operators (protocol notes §2): the
//! `ussd_service_op` codes for start/continue/end/abort, where the session key lives, what
//! the end bit means, `service_type`, the data coding scheme and the length limit. A
//! [`Dialect`] (deserialised from the operator's configuration, unknown keys refused) captures
//! one flavour; [`Dialect::build_submit`] turns a dialog step into a `submit_sm` and
//! [`Dialect::parse_mo`] turns a `deliver_sm` into a [`UssdMo`] keyed by MSISDN plus session
//! key, which is how dialogs must be found (the answer may arrive on any bind).
//!
//! Text goes through the shared codec (`sim_applet_model::text`): GSM 7-bit when the default
//! alphabet and its extension table can write it, UCS2 otherwise. The dialect's [`DcsScheme`]
//! picks the `data_coding` numbering, and [`Dialect::gsm7_packed`] whether GSM 7-bit text
//! travels packed (the USSD string as MAP carries it) or one septet per octet (what most SMPP
//! USSD gateways expect, whatever the numbering: the SMSC packs).

use std::str::FromStr;
use std::time::Duration;

use crate::smpp::rusmpp::{
    pdus::{DeliverSm, SubmitSm},
    tlvs::{MessageSubmissionRequestTlvValue, TlvValue},
    types::{COctetString, OctetString},
    values::{
        DataCoding, ItsSessionInfo, Npi, ServiceType, Ton, UserMessageReference, UssdServiceOp,
    },
};
use crate::text::{
    choose_encoding, decode_ussd, encode_ussd, gsm7_decode, gsm7_encode, Encoding, TextError,
};
use serde::Deserialize;

/// `ussd_service_op` values of one dialect.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpCodes {
    /// Network-initiated first prompt expecting an answer (USSR request, 2).
    pub start: u8,
    /// Next prompt in an open dialog (usually USSR request, 2, again).
    pub continue_: u8,
    /// Final screen that closes the dialog (USSN request 3, or PSSR response 17).
    pub end: u8,
    /// Abort sent by the gateway (vendor specific; `None`: end with the end bit and no text).
    pub abort: Option<u8>,
    /// The user's answer in a `deliver_sm` (USSR confirm, 18).
    pub mo_answer: u8,
    /// The user or network aborted (vendor specific, e.g. 0x81).
    pub mo_abort: Option<u8>,
}

/// Where the session key travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionKeyLocation {
    /// `its_session_info` octet 1 (8-bit session number); octet 2 = step << 1 | end.
    ItsSessionInfo8,
    /// `its_session_info` as 15 bits of dialog id followed by the end bit.
    DialogId15,
    /// `user_message_reference` (16 bits); no `its_session_info` is sent.
    UserMessageReference,
}

/// How the end of a dialog is signalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndSignal {
    /// Bit 0 of `its_session_info` octet 2 (set on the final message), as in the spec.
    ItsSessionInfoBit,
    /// Only the `ussd_service_op` says it (end/abort codes).
    OpCodeOnly,
}

/// Which numbering the `data_coding` field uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DcsScheme {
    /// SMPP `data_coding`: 0x00 SMSC default (GSM), 0x08 UCS2.
    Smpp,
    /// The CBS data coding scheme of TS 23.038 §5: 0x0F GSM 7-bit, 0x48 UCS2.
    Cbs,
}

/// One operator's USSD flavour.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dialect {
    /// Name for logs.
    pub name: String,
    /// `service_type` of USSD submits ("USSD" at most gateways).
    pub service_type: String,
    /// Op codes.
    pub ops: OpCodes,
    /// Session key location.
    pub session_key: SessionKeyLocation,
    /// End signalling.
    pub end_signal: EndSignal,
    /// Data coding numbering.
    pub dcs: DcsScheme,
    /// Most octets of one USSD string (160 = 182 GSM characters packed or 80 UCS2).
    pub max_octets: usize,
    /// Longest wait for the user's answer to one prompt, in seconds.
    pub step_timeout_secs: u64,
    /// Longest whole dialog, in seconds.
    pub session_timeout_secs: u64,
    /// GSM 7-bit text packed into octets (USSD CR rule) rather than one septet per octet
    /// (the default).
    #[serde(default)]
    pub gsm7_packed: bool,
}

/// A step of a network-initiated dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// First prompt.
    Start,
    /// Further prompt.
    Continue,
    /// Final screen.
    End,
    /// Abort.
    Abort,
}

/// What the user's answer or abort carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UssdMo {
    /// The user's MSISDN (`source_addr`).
    pub msisdn: String,
    /// Session key, in the dialect's location.
    pub session_key: u16,
    /// The message's sequence number in the session (`its_session_info` octet 2 bits 7..1),
    /// where the dialect carries one (`its_session_info8`); 0 from an SMSC that does not
    /// number its messages.
    pub sequence: Option<u8>,
    /// Raw `ussd_service_op`.
    pub op: u8,
    /// The dialog ended (end bit, or an abort op).
    pub end: bool,
    /// Whether `op` is the dialect's abort code.
    pub aborted: bool,
    /// The text.
    pub text: String,
}

/// Errors building or parsing USSD PDUs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialectError {
    /// The encoded text is longer than the dialect allows.
    #[error("USSD text of {octets} octets exceeds the dialect's {max}")]
    TooLong { octets: usize, max: usize },
    /// The session key does not fit the dialect's location.
    #[error("session key {key} does not fit in {bits} bits")]
    KeyTooLarge { key: u16, bits: u32 },
    /// A text contains a character outside the BMP (no UCS2 form).
    #[error("character {ch:?} at index {index} has no UCS2 form")]
    NotUcs2 { ch: char, index: usize },
    /// An address or `service_type` does not fit its field.
    #[error("field `{field}` is invalid (too long or not ASCII)")]
    BadField { field: &'static str },
    /// The `deliver_sm` lacks a TLV the dialect needs.
    #[error("deliver_sm has no `{tlv}` TLV")]
    MissingTlv { tlv: &'static str },
    /// The `deliver_sm` lacks `ussd_service_op`.
    #[error("deliver_sm has no ussd_service_op: not a USSD message")]
    NotUssd,
    /// UCS2 text of odd length.
    #[error("UCS2 text of odd length {len}")]
    OddUcs2 { len: usize },
    /// The text cannot be encoded, or the MO text does not decode in its `data_coding`.
    #[error("USSD text: {0}")]
    Text(#[from] TextError),
    /// The MO `data_coding` is not one the dialect reads as text.
    #[error("deliver_sm data_coding 0x{data_coding:02x} is not text this dialect reads")]
    UnsupportedDataCoding { data_coding: u8 },
}

impl Dialect {
    /// The spec reading of protocol notes §2: ops 2/2/3 (USSN final screen), answer 18, no
    /// abort code, 8-bit session number in `its_session_info` with the end bit in octet 2,
    /// SMPP `data_coding`, 160 octets, 30 s per step (OsmoMSC's inactivity timer) and 180 s
    /// per dialog (what session stores keep).
    pub fn spec_default() -> Self {
        Self {
            name: "spec".into(),
            service_type: "USSD".into(),
            ops: OpCodes {
                start: 2,
                continue_: 2,
                end: 3,
                abort: None,
                mo_answer: 18,
                mo_abort: None,
            },
            session_key: SessionKeyLocation::ItsSessionInfo8,
            end_signal: EndSignal::ItsSessionInfoBit,
            dcs: DcsScheme::Smpp,
            max_octets: 160,
            step_timeout_secs: 30,
            session_timeout_secs: 180,
            gsm7_packed: false,
        }
    }

    /// A gateway in the style that keys dialogs with 15 bits of dialog id plus the end bit in
    /// `its_session_info`, ends with PSSR response (17), has a vendor user-abort code 0x81
    /// in both directions, and wants the CBS data coding scheme (0x0F GSM, 0x48 UCS2).
    pub fn vendor_dialog_id_cbs() -> Self {
        Self {
            name: "dialog-id-cbs".into(),
            ops: OpCodes {
                end: 17,
                abort: Some(0x81),
                mo_abort: Some(0x81),
                ..Self::spec_default().ops
            },
            session_key: SessionKeyLocation::DialogId15,
            dcs: DcsScheme::Cbs,
            ..Self::spec_default()
        }
    }

    /// A gateway in the style that carries the session key in `user_message_reference`,
    /// sends no `its_session_info`, signals the end only by op code, uses the vendor op 32 as
    /// "end", an empty `service_type`, and shorter timers (20 s per step, 120 s per dialog).
    pub fn vendor_umr_op_end() -> Self {
        Self {
            name: "umr-op-end".into(),
            service_type: String::new(),
            ops: OpCodes {
                end: 32,
                abort: Some(32),
                ..Self::spec_default().ops
            },
            session_key: SessionKeyLocation::UserMessageReference,
            end_signal: EndSignal::OpCodeOnly,
            step_timeout_secs: 20,
            session_timeout_secs: 120,
            ..Self::spec_default()
        }
    }

    /// Per-step timeout.
    pub fn step_timeout(&self) -> Duration {
        Duration::from_secs(self.step_timeout_secs)
    }

    /// Per-dialog timeout.
    pub fn session_timeout(&self) -> Duration {
        Duration::from_secs(self.session_timeout_secs)
    }

    fn data_coding(&self, encoding: Encoding) -> u8 {
        match self.dcs {
            DcsScheme::Smpp => encoding.smpp_data_coding(),
            DcsScheme::Cbs => encoding.cbs_dcs(),
        }
    }

    /// The octets of `text` for `short_message` and its `data_coding`. The length limit is on
    /// the air (packed septets or UTF-16), whatever form the SMSC receives.
    pub fn encode_text(&self, text: &str) -> Result<(Vec<u8>, u8), DialectError> {
        let ussd = encode_ussd(text).map_err(|e| match e {
            TextError::TooLong { len, .. } if choose_encoding(text) == Encoding::Gsm7 => {
                DialectError::TooLong {
                    octets: (len * 7).div_ceil(8),
                    max: self.max_octets.min(255),
                }
            }
            TextError::TooLong { len, .. } => DialectError::TooLong {
                octets: len * 2,
                max: self.max_octets.min(255),
            },
            other => DialectError::Text(other),
        })?;
        let air = ussd.bytes.len();
        let bytes = match ussd.encoding {
            Encoding::Gsm7 if !self.gsm7_packed => gsm7_encode(text)?,
            _ => ussd.bytes,
        };
        let max = self.max_octets.min(255);
        if air > self.max_octets || bytes.len() > 255 {
            return Err(DialectError::TooLong {
                octets: air.max(bytes.len()),
                max,
            });
        }
        Ok((bytes, self.data_coding(ussd.encoding)))
    }

    /// The text of an MO `short_message` in `data_coding`.
    pub fn decode_text(&self, data_coding: u8, raw: &[u8]) -> Result<String, DialectError> {
        let unsupported = DialectError::UnsupportedDataCoding { data_coding };
        match self.dcs {
            DcsScheme::Smpp => match data_coding {
                0x00 if self.gsm7_packed => Ok(decode_ussd(0x0F, raw)?),
                0x00 => Ok(gsm7_decode(raw)?),
                // IA5 (ASCII) and Latin-1: each octet is its code point.
                0x01 | 0x03 => Ok(raw.iter().map(|&b| char::from(b)).collect()),
                0x08 => Ok(decode_ussd(0x48, raw)?),
                _ => Err(unsupported),
            },
            DcsScheme::Cbs if self.gsm7_packed => Ok(decode_ussd(data_coding, raw)?),
            // CBS numbering but septets one per octet: only the alphabet is read from the DCS.
            DcsScheme::Cbs => {
                if data_coding & 0xCC == 0x48 || data_coding == 0x11 {
                    Ok(decode_ussd(data_coding, raw)?)
                } else {
                    decode_ussd(data_coding, &[]).map_err(|_| unsupported)?;
                    Ok(gsm7_decode(raw)?)
                }
            }
        }
    }

    /// Encodes the key (and end flag) as `its_session_info` octets, per the dialect.
    fn its_session_info(
        &self,
        key: u16,
        step_no: u8,
        end: bool,
    ) -> Result<ItsSessionInfo, DialectError> {
        let end_bit = u8::from(end && self.end_signal == EndSignal::ItsSessionInfoBit);
        match self.session_key {
            SessionKeyLocation::ItsSessionInfo8 => {
                let session =
                    u8::try_from(key).map_err(|_| DialectError::KeyTooLarge { key, bits: 8 })?;
                Ok(ItsSessionInfo::new(
                    session,
                    ((step_no & 0x7F) << 1) | end_bit,
                ))
            }
            SessionKeyLocation::DialogId15 => {
                if key > 0x7FFF {
                    return Err(DialectError::KeyTooLarge { key, bits: 15 });
                }
                let v = (key << 1) | u16::from(end_bit);
                let [hi, lo] = v.to_be_bytes();
                Ok(ItsSessionInfo::new(hi, lo))
            }
            SessionKeyLocation::UserMessageReference => Ok(ItsSessionInfo::new(0, end_bit)),
        }
    }

    /// A USSD `submit_sm` for `step` of the dialog `key` with `msisdn`, from `service_code`.
    /// `step_no` numbers the prompts (it goes to `its_session_info` octet 2 bits 7..1 where
    /// the dialect uses it).
    pub fn build_submit(
        &self,
        step: Step,
        msisdn: &str,
        service_code: &str,
        key: u16,
        step_no: u8,
        text: &str,
    ) -> Result<SubmitSm, DialectError> {
        let (octets, data_coding) = self.encode_text(text)?;
        let op = match step {
            Step::Start => self.ops.start,
            Step::Continue => self.ops.continue_,
            Step::End => self.ops.end,
            Step::Abort => self.ops.abort.unwrap_or(self.ops.end),
        };
        let end = matches!(step, Step::End | Step::Abort);
        let mut tlvs = vec![MessageSubmissionRequestTlvValue::UssdServiceOp(
            UssdServiceOp::from(op),
        )];
        match self.session_key {
            SessionKeyLocation::UserMessageReference => {
                tlvs.push(MessageSubmissionRequestTlvValue::UserMessageReference(
                    UserMessageReference::new(key),
                ))
            }
            _ => tlvs.push(MessageSubmissionRequestTlvValue::ItsSessionInfo(
                self.its_session_info(key, step_no, end)?,
            )),
        }
        let field = |field: &'static str| DialectError::BadField { field };
        let service_type = if self.service_type.is_empty() {
            ServiceType::default()
        } else {
            ServiceType::new(
                COctetString::from_str(&self.service_type).map_err(|_| field("service_type"))?,
            )
        };
        Ok(SubmitSm::builder()
            .service_type(service_type)
            .source_addr_ton(Ton::Unknown)
            .source_addr_npi(Npi::Unknown)
            .source_addr(COctetString::from_str(service_code).map_err(|_| field("source_addr"))?)
            .dest_addr_ton(Ton::International)
            .dest_addr_npi(Npi::Isdn)
            .destination_addr(
                COctetString::from_str(msisdn).map_err(|_| field("destination_addr"))?,
            )
            .data_coding(DataCoding::from(data_coding))
            .short_message(OctetString::from_vec(octets).map_err(|_| field("short_message"))?)
            .tlvs(tlvs)
            .build())
    }

    /// Reads a USSD `deliver_sm` (the user's answer or an abort).
    pub fn parse_mo(&self, deliver: &DeliverSm) -> Result<UssdMo, DialectError> {
        let mut op = None;
        let mut info = None;
        let mut umr = None;
        for tlv in deliver.tlvs() {
            match tlv.value() {
                Some(TlvValue::UssdServiceOp(v)) => op = Some(u8::from(*v)),
                Some(TlvValue::ItsSessionInfo(v)) => info = Some(*v),
                Some(TlvValue::UserMessageReference(v)) => umr = Some(v.value),
                _ => {}
            }
        }
        let op = op.ok_or(DialectError::NotUssd)?;
        let missing_info = DialectError::MissingTlv {
            tlv: "its_session_info",
        };
        let (session_key, sequence, end_bit) = match self.session_key {
            SessionKeyLocation::ItsSessionInfo8 => {
                let i = info.ok_or(missing_info)?;
                // rusmpp keeps octet 2 raw: bit 0 is the end flag, bits 7..1 the step.
                (
                    u16::from(i.session_number),
                    Some(i.sequence_number >> 1),
                    i.sequence_number & 0x01 == 1,
                )
            }
            SessionKeyLocation::DialogId15 => {
                let i = info.ok_or(missing_info)?;
                let v = u16::from_be_bytes([i.session_number, i.sequence_number]);
                (v >> 1, None, v & 1 == 1)
            }
            SessionKeyLocation::UserMessageReference => (
                umr.ok_or(DialectError::MissingTlv {
                    tlv: "user_message_reference",
                })?,
                None,
                info.is_some_and(|i| i.sequence_number & 1 == 1),
            ),
        };
        let aborted = self.ops.mo_abort == Some(op);
        let end = aborted
            || (self.end_signal == EndSignal::ItsSessionInfoBit && end_bit)
            || op == self.ops.end;
        let text = self.decode_text(
            u8::from(deliver.data_coding),
            deliver.short_message().as_ref(),
        )?;
        Ok(UssdMo {
            msisdn: deliver.source_addr.to_string(),
            session_key,
            sequence,
            op,
            end,
            aborted,
            text,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::smpp::rusmpp::tlvs::MessageDeliveryRequestTlvValue;

    fn tlv_of(sm: &SubmitSm) -> (Option<u8>, Option<ItsSessionInfo>, Option<u16>) {
        let (mut op, mut info, mut umr) = (None, None, None);
        for t in sm.tlvs() {
            match t.value() {
                Some(TlvValue::UssdServiceOp(v)) => op = Some(u8::from(*v)),
                Some(TlvValue::ItsSessionInfo(v)) => info = Some(*v),
                Some(TlvValue::UserMessageReference(v)) => umr = Some(v.value),
                _ => {}
            }
        }
        (op, info, umr)
    }

    fn mo(tlvs: Vec<MessageDeliveryRequestTlvValue>, dcs: u8, text: &[u8]) -> DeliverSm {
        DeliverSm::builder()
            .source_addr(COctetString::from_str("48600100200").unwrap())
            .data_coding(DataCoding::from(dcs))
            .short_message(OctetString::from_slice(text).unwrap())
            .tlvs(tlvs)
            .build()
    }

    #[test]
    fn spec_start_is_ussr_with_session_number_and_no_end_bit() {
        let d = Dialect::spec_default();
        let sm = d
            .build_submit(Step::Start, "48600100200", "*123#", 7, 1, "Approve? 1=Yes")
            .unwrap();
        assert_eq!(sm.service_type.value().to_string(), "USSD");
        assert_eq!(u8::from(sm.data_coding), 0x00);
        assert_eq!(
            tlv_of(&sm),
            (Some(2), Some(ItsSessionInfo::new(7, 0b10)), None)
        );
    }

    #[test]
    fn spec_end_sets_the_end_bit_and_uses_ussn() {
        let d = Dialect::spec_default();
        let sm = d
            .build_submit(Step::End, "48600100200", "*123#", 7, 2, "Done")
            .unwrap();
        assert_eq!(
            tlv_of(&sm),
            (Some(3), Some(ItsSessionInfo::new(7, 0b101)), None)
        );
    }

    #[test]
    fn polish_text_goes_out_as_ucs2_in_both_schemes() {
        let sm = Dialect::spec_default()
            .build_submit(Step::Start, "486", "*1#", 1, 0, "Zażółć")
            .unwrap();
        assert_eq!(u8::from(sm.data_coding), 0x08);
        assert_eq!(sm.short_message().as_ref().len(), 12);
        let sm = Dialect::vendor_dialog_id_cbs()
            .build_submit(Step::Start, "486", "*1#", 1, 0, "Zażółć")
            .unwrap();
        assert_eq!(u8::from(sm.data_coding), 0x48);
        let sm = Dialect::vendor_dialog_id_cbs()
            .build_submit(Step::Start, "486", "*1#", 1, 0, "Yes")
            .unwrap();
        assert_eq!(u8::from(sm.data_coding), 0x0F);
    }

    #[test]
    fn too_long_text_is_refused() {
        let err = Dialect::spec_default()
            .build_submit(Step::Start, "486", "*1#", 1, 0, &"a".repeat(183))
            .unwrap_err();
        assert_eq!(
            err,
            DialectError::TooLong {
                octets: 161,
                max: 160
            }
        );
    }

    #[test]
    fn smpp_scheme_sends_unpacked_septets_with_the_extension_table() {
        let d = Dialect::spec_default();
        let (octets, dcs) = d.encode_text("5€ @").unwrap();
        assert_eq!((octets, dcs), (vec![0x35, 0x1B, 0x65, 0x20, 0x00], 0x00));
        // 182 septets pack into 160 octets: the limit is on the air, not on short_message.
        assert_eq!(d.encode_text(&"a".repeat(182)).unwrap().0.len(), 182);
    }

    #[test]
    fn cbs_scheme_packs_septets_when_the_dialect_says_so() {
        let packed = Dialect {
            gsm7_packed: true,
            ..Dialect::vendor_dialog_id_cbs()
        };
        let (octets, dcs) = packed.encode_text("hellohello").unwrap();
        assert_eq!(dcs, 0x0F);
        assert_eq!(hex::encode(&octets), "e8329bfd4697d9ec37");
        assert_eq!(packed.decode_text(0x0F, &octets).unwrap(), "hellohello");
        let unpacked = Dialect::vendor_dialog_id_cbs();
        assert_eq!(unpacked.encode_text("hi").unwrap(), (b"hi".to_vec(), 0x0F));
        assert_eq!(unpacked.decode_text(0x0F, b"hi").unwrap(), "hi");
        assert_eq!(unpacked.decode_text(0x48, &[0x01, 0x7C]).unwrap(), "ż");
    }

    #[test]
    fn mo_text_in_an_unknown_data_coding_is_refused_not_garbled() {
        let d = Dialect::spec_default();
        assert_eq!(
            d.decode_text(0x04, &[0xFF]).unwrap_err(),
            DialectError::UnsupportedDataCoding { data_coding: 0x04 }
        );
        assert!(matches!(
            d.decode_text(0x00, &[0x80]).unwrap_err(),
            DialectError::Text(TextError::InvalidSeptet { .. })
        ));
        assert_eq!(d.decode_text(0x03, &[0xE9]).unwrap(), "é");
    }

    #[test]
    fn dialog_id_takes_fifteen_bits_and_the_end_bit() {
        let d = Dialect::vendor_dialog_id_cbs();
        let sm = d
            .build_submit(Step::End, "486", "*1#", 0x7ABC, 0, "bye")
            .unwrap();
        let (op, info, _) = tlv_of(&sm);
        assert_eq!(op, Some(17));
        let v = u16::from_be_bytes([info.unwrap().session_number, info.unwrap().sequence_number]);
        assert_eq!((v >> 1, v & 1), (0x7ABC, 1));
        assert_eq!(
            d.build_submit(Step::Start, "486", "*1#", 0x8000, 0, "x")
                .unwrap_err(),
            DialectError::KeyTooLarge {
                key: 0x8000,
                bits: 15
            }
        );
    }

    #[test]
    fn umr_dialect_carries_the_key_in_user_message_reference() {
        let d = Dialect::vendor_umr_op_end();
        let sm = d
            .build_submit(Step::Start, "486", "*1#", 4242, 0, "x")
            .unwrap();
        assert_eq!(tlv_of(&sm), (Some(2), None, Some(4242)));
        assert!(sm.service_type.value().to_string().is_empty());
    }

    #[test]
    fn mo_answer_is_parsed_with_the_end_bit_masked() {
        let d = Dialect::spec_default();
        let deliver = mo(
            vec![
                MessageDeliveryRequestTlvValue::UssdServiceOp(UssdServiceOp::UssrConfirm),
                MessageDeliveryRequestTlvValue::ItsSessionInfo(ItsSessionInfo::new(7, 0b0000_0011)),
            ],
            0,
            b"1",
        );
        assert_eq!(
            d.parse_mo(&deliver).unwrap(),
            UssdMo {
                msisdn: "48600100200".into(),
                session_key: 7,
                sequence: Some(1),
                op: 18,
                end: true,
                aborted: false,
                text: "1".into()
            }
        );
    }

    #[test]
    fn vendor_abort_op_ends_the_dialog() {
        let d = Dialect::vendor_dialog_id_cbs();
        let deliver = mo(
            vec![
                MessageDeliveryRequestTlvValue::UssdServiceOp(UssdServiceOp::from(0x81)),
                MessageDeliveryRequestTlvValue::ItsSessionInfo(ItsSessionInfo::new(0x12, 0x34)),
            ],
            0x48,
            &[0x01, 0x7C],
        );
        let m = d.parse_mo(&deliver).unwrap();
        assert_eq!((m.session_key, m.aborted, m.end), (0x1234 >> 1, true, true));
        assert_eq!(m.text, "ż");
    }

    #[test]
    fn non_ussd_deliver_sm_is_refused() {
        assert_eq!(
            Dialect::spec_default()
                .parse_mo(&mo(vec![], 0, b"hi"))
                .unwrap_err(),
            DialectError::NotUssd
        );
    }

    #[test]
    fn dialect_config_refuses_unknown_keys() {
        let good = r#"
            name = "x"
            service_type = "USSD"
            session_key = "dialog_id15"
            end_signal = "op_code_only"
            dcs = "cbs"
            max_octets = 160
            step_timeout_secs = 30
            session_timeout_secs = 180
            [ops]
            start = 2
            continue_ = 2
            end = 17
            mo_answer = 18
        "#;
        let d: Dialect = toml::from_str(good).unwrap();
        assert_eq!(d.session_key, SessionKeyLocation::DialogId15);
        assert_eq!(d.ops.abort, None);
        let bad = format!("{good}\nsurprise = 1\n");
        assert!(toml::from_str::<Dialect>(&bad).is_err());
    }
}
