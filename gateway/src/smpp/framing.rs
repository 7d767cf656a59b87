//! Cutting the SMSC's byte stream into SMPP frames for the shared decoder
//! (`sim_applet_model::smpp::pdu::decode_frame`).

use sim_applet_model::smpp::pdu::MAX_PDU_LEN;

/// LengthDelimitedCodec: 4-byte BE length including itself, max frame MAX_PDU_LEN.
///
/// Frames handed out include the length header, which is what `decode_frame` expects.
/// With `num_skip(0)` tokio-util counts the adjusted length from the start of the header, so
/// the adjustment is 0, not -4 (-4 is right only when the header is skipped; with `num_skip(0)`
/// it cuts 4 octets off every frame, which the unit test below pins).
///
/// A `command_length` below 16 cannot be resynchronised: with 0 the codec yields empty frames
/// forever. The I/O shell therefore closes the connection on any frame shorter than the header.
/// On the encode side the codec would add a second length: send `encode_command`'s bytes as
/// they are (`Framed::get_mut` / `write_all`), not through the codec's encoder.
pub fn frame_codec() -> tokio_util::codec::LengthDelimitedCodec {
    tokio_util::codec::LengthDelimitedCodec::builder()
        .length_field_offset(0)
        .length_field_length(4)
        .length_adjustment(0)
        .num_skip(0)
        .max_frame_length(MAX_PDU_LEN)
        .big_endian()
        .new_codec()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use rusmpp::pdus::SubmitSm;
    use rusmpp::types::{COctetString, OctetString};
    use rusmpp::{Command, CommandStatus, Pdu};
    use sim_applet_model::smpp::pdu::encode_command;
    use std::str::FromStr;

    #[tokio::test]
    async fn frame_codec_keeps_the_header_and_splits_back_to_back_pdus() {
        let submit = SubmitSm::builder()
            .destination_addr(COctetString::from_str("48600100200").unwrap())
            .short_message(OctetString::from_str("Approve login?").unwrap())
            .build();
        let a = encode_command(&Command::new(CommandStatus::EsmeRok, 1, submit));
        let b = encode_command(&Command::new(CommandStatus::EsmeRok, 2, Pdu::EnquireLink));
        let mut wire = a.to_vec();
        wire.extend_from_slice(&b);
        let mut framed =
            tokio_util::codec::FramedRead::new(std::io::Cursor::new(wire), frame_codec());
        assert_eq!(&framed.next().await.unwrap().unwrap()[..], &a[..]);
        assert_eq!(&framed.next().await.unwrap().unwrap()[..], &b[..]);
        assert!(framed.next().await.is_none());
    }
}
