//! SMPP framing and PDU decoding that never ends the stream.
//!
//! The I/O shells cut the byte stream into frames (each keeps its 4-byte `command_length`
//! header; the gateway and the simulated SMSC each own their tokio-util framing), then every
//! frame goes to [`decode_frame`]:
//! a well-formed frame becomes a `rusmpp::Command`; anything else becomes [`Decoded::Nack`]
//! carrying the header's sequence number and the `command_status` for the `generic_nack`
//! ([`generic_nack`]) the caller sends back, and the bind stays up. Outgoing commands are
//! serialised by [`encode_command`].
//!
//! rusmpp decodes fixed-size TLVs (`ussd_service_op`, `its_session_info`, ...) by their type
//! and ignores the wire length, so a TLV whose length disagrees would silently shift the rest
//! of the PDU. [`decode_frame`] therefore walks the TLV area itself first (for the commands
//! that carry TLVs) and refuses such frames with `ESME_RINVTLVLEN`.

use crate::smpp::rusmpp::{
    decode::{DecodeErrorKind, DecodeWithLength},
    encode::{owned::Encode, Length},
    Command, CommandId, CommandStatus, Pdu,
};
use bytes::{BufMut, Bytes, BytesMut};

/// Largest frame accepted or produced, `command_length` included.
pub const MAX_PDU_LEN: usize = 64 * 1024;

/// Size of the SMPP header: length, id, status, sequence number.
pub const HEADER_LEN: usize = 16;

/// The outcome of decoding one frame.
// The command is moved on at once, so boxing it would only add an allocation per PDU.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A well-formed command.
    Pdu(Command),
    /// The frame could not be decoded: answer `generic_nack(sequence_number, status)`.
    Nack {
        /// The header's sequence number, 0 when the frame is too short to carry one.
        sequence_number: u32,
        /// The `command_status` for the `generic_nack`.
        status: CommandStatus,
        /// What was wrong, naming the field and offset where known (for logs).
        reason: String,
    },
}

fn nack(sequence_number: u32, status: CommandStatus, reason: impl Into<String>) -> Decoded {
    Decoded::Nack {
        sequence_number,
        status,
        reason: reason.into(),
    }
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// `frame` includes the 4-byte length header. Never panics; unknown command ids, bad bodies,
/// bad TLV lengths -> Nack with ESME_RINVCMDID / ESME_RINVCMDLEN / ESME_RINVTLVLEN /
/// ESME_RSYSERR etc. and the header's sequence number.
pub fn decode_frame(frame: &[u8]) -> Decoded {
    let sequence_number = be_u32(frame, 12).unwrap_or(0);
    if frame.len() < HEADER_LEN {
        return nack(
            sequence_number,
            CommandStatus::EsmeRinvcmdlen,
            format!("frame of {} octets is shorter than the header", frame.len()),
        );
    }
    if frame.len() > MAX_PDU_LEN {
        return nack(
            sequence_number,
            CommandStatus::EsmeRinvcmdlen,
            format!("frame of {} octets exceeds {MAX_PDU_LEN}", frame.len()),
        );
    }
    let declared = be_u32(frame, 0).unwrap_or(0) as usize;
    if declared != frame.len() {
        return nack(
            sequence_number,
            CommandStatus::EsmeRinvcmdlen,
            format!(
                "command_length at offset 0 says {declared}, frame has {}",
                frame.len()
            ),
        );
    }
    let raw_id = be_u32(frame, 4).unwrap_or(0);
    let id = CommandId::from(raw_id);
    if matches!(id, CommandId::Other(_)) {
        return nack(
            sequence_number,
            CommandStatus::EsmeRinvcmdid,
            format!("unknown command_id 0x{raw_id:08X} at offset 4"),
        );
    }
    let body = &frame[HEADER_LEN..];
    if let Err(reason) = check_tlv_area(id, body) {
        return nack(sequence_number, CommandStatus::EsmeRinvtlvlen, reason);
    }

    let mut buf = BytesMut::from(&frame[4..]);
    let expected = frame.len() - 4;
    match <Command as DecodeWithLength>::decode(&mut buf, expected) {
        Ok((command, size)) => {
            if size != expected {
                return nack(
                    sequence_number,
                    CommandStatus::EsmeRinvcmdlen,
                    format!(
                        "{id:?} body decoded {} of {} octets",
                        size.saturating_sub(12),
                        body.len()
                    ),
                );
            }
            if command.pdu().is_none() && !id.is_response() {
                return nack(
                    sequence_number,
                    CommandStatus::EsmeRinvcmdlen,
                    format!("{id:?} without its mandatory body"),
                );
            }
            Decoded::Pdu(command)
        }
        Err(err) => {
            let status = match err.kind() {
                DecodeErrorKind::UnexpectedEof
                | DecodeErrorKind::OctetStringDecodeError(_)
                | DecodeErrorKind::COctetStringDecodeError(_) => CommandStatus::EsmeRinvcmdlen,
                DecodeErrorKind::TooManyElements { .. } => CommandStatus::EsmeRinvtlvlen,
                DecodeErrorKind::UnsupportedKey { .. } => CommandStatus::EsmeRinvcmdid,
                _ => CommandStatus::EsmeRsyserr,
            };
            nack(
                sequence_number,
                status,
                format!("{id:?} body does not decode: {:?}", err.kind()),
            )
        }
    }
}

/// Octets of a C-octet string starting at `at` (NUL included), if it is terminated.
fn c_string_end(body: &[u8], at: usize) -> Option<usize> {
    let rest = body.get(at..)?;
    let nul = rest.iter().position(|&b| b == 0)?;
    Some(at + nul + 1)
}

/// Offset of the first TLV in `body` for the commands that carry TLVs we receive, or `None`
/// when the mandatory part is malformed (rusmpp then reports it) or the command has no TLVs.
fn tlv_offset(id: CommandId, body: &[u8]) -> Option<usize> {
    match id {
        CommandId::SubmitSm | CommandId::DeliverSm => {
            // service_type, source (ton npi addr), dest (ton npi addr).
            let mut at = c_string_end(body, 0)?;
            at = c_string_end(body, at + 2)?;
            at = c_string_end(body, at + 2)?;
            // esm_class, protocol_id, priority_flag.
            at += 3;
            // schedule_delivery_time, validity_period.
            at = c_string_end(body, at)?;
            at = c_string_end(body, at)?;
            // registered_delivery, replace_if_present, data_coding, sm_default_msg_id.
            at += 4;
            let sm_length = usize::from(*body.get(at)?);
            Some(at + 1 + sm_length)
        }
        CommandId::DataSm => {
            let mut at = c_string_end(body, 0)?;
            at = c_string_end(body, at + 2)?;
            at = c_string_end(body, at + 2)?;
            // esm_class, registered_delivery, data_coding.
            Some(at + 3)
        }
        CommandId::SubmitSmResp
        | CommandId::DeliverSmResp
        | CommandId::DataSmResp
        | CommandId::BindTransceiverResp
        | CommandId::BindTransmitterResp
        | CommandId::BindReceiverResp => c_string_end(body, 0),
        _ => None,
    }
}

/// Value size of the fixed-size TLVs rusmpp decodes by type (SMPP 5.0 §4.8.4).
fn fixed_tlv_size(tag: u16) -> Option<usize> {
    Some(match tag {
        0x0005 | 0x0006 | 0x0007 | 0x000D | 0x000E | 0x000F => 1,
        0x0008 => 2,
        0x0017 => 4,
        0x0019 | 0x0030 | 0x0201 | 0x0205 => 1,
        0x0204 | 0x020A | 0x020B | 0x020C => 2,
        0x020D..=0x0210 => 1,
        0x0302 | 0x0304 => 1,
        0x0420 | 0x0421 | 0x0422 | 0x0425 | 0x0426 | 0x0427 => 1,
        0x0501 => 1,
        0x1201 | 0x1380 => 1,
        0x1383 => 2,
        _ => return None,
    })
}

/// Walks the TLV area: each TLV must fit in the body and fixed-size TLVs must have their size.
fn check_tlv_area(id: CommandId, body: &[u8]) -> Result<(), String> {
    let Some(mut at) = tlv_offset(id, body) else {
        return Ok(());
    };
    // Offsets in messages count from the start of the frame.
    while at < body.len() {
        let Some(head) = body.get(at..at + 4) else {
            return Err(format!(
                "truncated TLV header at offset {}",
                at + HEADER_LEN
            ));
        };
        let tag = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        if at + 4 + len > body.len() {
            return Err(format!(
                "TLV 0x{tag:04X} at offset {} claims {len} octets, {} remain",
                at + HEADER_LEN,
                body.len() - at - 4
            ));
        }
        if let Some(size) = fixed_tlv_size(tag) {
            if len != size && len != 0 {
                return Err(format!(
                    "TLV 0x{tag:04X} at offset {} has length {len}, expected {size}",
                    at + HEADER_LEN
                ));
            }
        }
        at += 4 + len;
    }
    Ok(())
}

/// Serialises `cmd` with its 4-byte `command_length` header.
pub fn encode_command(cmd: &Command) -> Bytes {
    let total = 4 + cmd.length();
    let mut dst = BytesMut::with_capacity(total);
    dst.put_u32(total as u32);
    cmd.encode(&mut dst);
    dst.freeze()
}

/// A `generic_nack` answering the frame with `sequence_number`.
pub fn generic_nack(sequence_number: u32, status: CommandStatus) -> Command {
    Command::new(status, sequence_number, Pdu::GenericNack)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::smpp::rusmpp::{
        pdus::{DeliverSm, SubmitSm, SubmitSmResp},
        tlvs::MessageSubmissionRequestTlvValue,
        types::{COctetString, OctetString},
        values::{ItsSessionInfo, ServiceType, UssdServiceOp},
    };
    use proptest::prelude::*;
    use std::str::FromStr;

    fn ussd_submit(seq: u32) -> Command {
        let sm = SubmitSm::builder()
            .service_type(ServiceType::new(COctetString::from_str("USSD").unwrap()))
            .source_addr(COctetString::from_str("*123#").unwrap())
            .destination_addr(COctetString::from_str("48600100200").unwrap())
            .short_message(OctetString::from_str("Approve login?").unwrap())
            .tlvs(vec![
                MessageSubmissionRequestTlvValue::UssdServiceOp(UssdServiceOp::UssrRequest),
                MessageSubmissionRequestTlvValue::ItsSessionInfo(ItsSessionInfo::new(7, 1)),
            ])
            .build();
        Command::new(CommandStatus::EsmeRok, seq, sm)
    }

    fn expect_nack(frame: &[u8]) -> (u32, CommandStatus) {
        match decode_frame(frame) {
            Decoded::Nack {
                sequence_number,
                status,
                ..
            } => (sequence_number, status),
            Decoded::Pdu(c) => panic!("expected a nack, decoded {c:?}"),
        }
    }

    #[test]
    fn submit_sm_with_ussd_tlvs_round_trips() {
        let cmd = ussd_submit(42);
        let bytes = encode_command(&cmd);
        assert_eq!(
            bytes.len(),
            u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize
        );
        assert_eq!(decode_frame(&bytes), Decoded::Pdu(cmd));
    }

    #[test]
    fn enquire_link_encodes_to_the_sixteen_octet_header() {
        let bytes = encode_command(&Command::new(CommandStatus::EsmeRok, 9, Pdu::EnquireLink));
        assert_eq!(
            &bytes[..],
            &[0, 0, 0, 16, 0, 0, 0, 0x15, 0, 0, 0, 0, 0, 0, 0, 9]
        );
    }

    #[test]
    fn unknown_command_id_gets_rinvcmdid_with_the_sequence_number() {
        let frame = [0, 0, 0, 16, 0, 0, 0x77, 0x77, 0, 0, 0, 0, 0, 0, 1, 2];
        assert_eq!(expect_nack(&frame), (0x102, CommandStatus::EsmeRinvcmdid));
    }

    #[test]
    fn short_frame_gets_rinvcmdlen() {
        assert_eq!(
            expect_nack(&[0, 0, 0, 8, 0, 0, 0, 0x15]),
            (0, CommandStatus::EsmeRinvcmdlen)
        );
    }

    #[test]
    fn length_field_disagreeing_with_frame_gets_rinvcmdlen() {
        let mut frame = encode_command(&ussd_submit(5)).to_vec();
        frame[3] = frame[3].wrapping_add(1);
        assert_eq!(expect_nack(&frame), (5, CommandStatus::EsmeRinvcmdlen));
    }

    #[test]
    fn truncated_submit_body_gets_rinvcmdlen() {
        // Header plus "USSD\0" only: the mandatory fields run out.
        let mut frame = vec![0, 0, 0, 21, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 3];
        frame.extend_from_slice(b"USSD\0");
        assert_eq!(expect_nack(&frame), (3, CommandStatus::EsmeRinvcmdlen));
    }

    #[test]
    fn enquire_link_with_a_body_gets_rinvcmdlen() {
        let frame = [0, 0, 0, 17, 0, 0, 0, 0x15, 0, 0, 0, 0, 0, 0, 0, 4, 0xAA];
        assert_eq!(expect_nack(&frame), (4, CommandStatus::EsmeRinvcmdlen));
    }

    #[test]
    fn ussd_service_op_with_wrong_length_gets_rinvtlvlen() {
        let mut frame = encode_command(&ussd_submit(11)).to_vec();
        // Append a second ussd_service_op TLV claiming 2 octets.
        frame.extend_from_slice(&[0x05, 0x01, 0x00, 0x02, 0x02, 0x00]);
        let len = frame.len() as u32;
        frame[..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(expect_nack(&frame), (11, CommandStatus::EsmeRinvtlvlen));
    }

    #[test]
    fn tlv_overrunning_the_body_gets_rinvtlvlen() {
        let mut frame = encode_command(&ussd_submit(12)).to_vec();
        frame.extend_from_slice(&[0x14, 0x00, 0x00, 0x10, 0x01]);
        let len = frame.len() as u32;
        frame[..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(expect_nack(&frame), (12, CommandStatus::EsmeRinvtlvlen));
    }

    #[test]
    fn error_response_without_body_decodes() {
        let frame = [0, 0, 0, 16, 0x80, 0, 0, 4, 0, 0, 0, 0x58, 0, 0, 0, 6];
        match decode_frame(&frame) {
            Decoded::Pdu(c) => {
                assert_eq!(c.id(), CommandId::SubmitSmResp);
                assert_eq!(c.status(), CommandStatus::EsmeRthrottled);
                assert_eq!(c.sequence_number(), 6);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn submit_sm_resp_round_trips() {
        let resp = SubmitSmResp::builder()
            .message_id(COctetString::from_str("abc123").unwrap())
            .build();
        let cmd = Command::new(CommandStatus::EsmeRok, 77, resp);
        assert_eq!(decode_frame(&encode_command(&cmd)), Decoded::Pdu(cmd));
    }

    #[test]
    fn deliver_sm_round_trips() {
        let cmd = Command::new(CommandStatus::EsmeRok, 1, DeliverSm::builder().build());
        assert_eq!(decode_frame(&encode_command(&cmd)), Decoded::Pdu(cmd));
    }

    #[test]
    fn generic_nack_carries_sequence_and_status() {
        let bytes = encode_command(&generic_nack(0x1234, CommandStatus::EsmeRinvcmdid));
        assert_eq!(
            &bytes[..],
            &[0, 0, 0, 16, 0x80, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0x12, 0x34]
        );
    }

    proptest! {
        #[test]
        fn decode_frame_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode_frame(&bytes);
        }

        #[test]
        fn decode_frame_never_panics_on_consistent_headers(
            id in prop_oneof![Just(4u32), Just(5), Just(0x80000004), Just(0x103), Just(9), Just(0x80000009), any::<u32>()],
            seq in any::<u32>(),
            body in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let mut frame = Vec::with_capacity(16 + body.len());
            frame.extend_from_slice(&((16 + body.len()) as u32).to_be_bytes());
            frame.extend_from_slice(&id.to_be_bytes());
            frame.extend_from_slice(&0u32.to_be_bytes());
            frame.extend_from_slice(&seq.to_be_bytes());
            frame.extend_from_slice(&body);
            if let Decoded::Nack { sequence_number, .. } = decode_frame(&frame) {
                prop_assert_eq!(sequence_number, seq);
            }
        }

        #[test]
        fn ussd_submit_round_trips(seq in 1u32..0x7FFF_FFFF, session in any::<u8>(), step in any::<u8>()) {
            let mut cmd = ussd_submit(seq);
            if let Some(Pdu::SubmitSm(sm)) = cmd.pdu() {
                let mut sm = sm.clone();
                sm.set_tlvs(vec![MessageSubmissionRequestTlvValue::ItsSessionInfo(ItsSessionInfo::new(session, step))]);
                cmd.set_pdu(sm);
            }
            prop_assert_eq!(decode_frame(&encode_command(&cmd)), Decoded::Pdu(cmd));
        }
    }
}
