//! Cutting an ESME's byte stream into SMPP frames for the shared decoder
//! (`sim_applet_model::smpp::pdu::decode_frame`). The gateway has its own: each side owns its
//! framing, so a change to one never silently changes the other.

use sim_applet_model::smpp::pdu::MAX_PDU_LEN;

/// 4-byte big-endian `command_length` that counts itself; each frame keeps its header, which
/// `decode_frame` expects (hence `num_skip(0)` and an adjustment of 0). Frames longer than
/// [`MAX_PDU_LEN`] are an error that ends the connection; so is one shorter than the 16-octet
/// header, which the server checks, since the codec cannot resynchronise after it.
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
