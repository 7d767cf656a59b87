//! SIM toolkit (CAT, ETSI TS 102 223 / 3GPP TS 31.111): the proactive commands our applet sends,
//! the terminal responses the handset answers with, the SMS-PP DOWNLOAD envelope that carries a
//! secured packet to the card, and the APDUs that move all of them.
//!
//! Data flow on the handset side: an MT SMS-PP becomes an [`SmsPpDownload`] envelope
//! ([`tpdu::SecuredDeliver`] inside), sent to the card as an ENVELOPE [`Apdu`]; the card answers
//! `91 XX` ([`StatusWord::ProactiveCommandPending`]), the handset FETCHes a [`ProactiveCommand`],
//! shows it and answers with a [`TerminalResponse`]. A SEND SHORT MESSAGE command carries an
//! SMS-SUBMIT ([`tpdu::SecuredSubmit`]) back to the gateway.
//!
//! Layers: [`tlv`] frames BER-TLV and COMPREHENSION-TLV and walks TLV lists; [`objects`] and
//! [`text_string`] hold the simple data objects; [`proactive`], [`terminal_response`] and
//! [`envelope`] build messages from them; [`tpdu`] holds the SMS TPDUs for secured packets;
//! [`apdu`] the command/response APDUs and status words. Every decoder takes a byte slice, never
//! panics, and reports the tag and the offset (from the start of the decoded input) of what it
//! could not accept.

pub mod apdu;
pub mod envelope;
pub mod objects;
pub mod proactive;
pub mod terminal_response;
pub mod text_string;
pub mod tlv;
pub mod tpdu;

use thiserror::Error;

use crate::text::TextError;

pub use apdu::{Apdu, ApduResponse, StatusWord};
pub use envelope::SmsPpDownload;
pub use objects::{
    Address, CommandDetails, CommandType, DeviceId, DeviceIdentities, Duration, ResponseLength,
    TimeUnit, Tone,
};
pub use proactive::{
    Command, DisplayText, DisplayTextQualifier, GetInkey, GetInkeyQualifier, GetInput,
    GetInputQualifier, PlayTone, ProactiveCommand, SendShortMessage,
};
pub use terminal_response::{ResponseData, ResultCode, TerminalResponse};
pub use text_string::{AlphaId, TextDcs, TextString};

/// Errors of the CAT codecs. `tag` is the tag octet as found on the wire (or, for a missing TLV,
/// as we would write it); `at` is the offset of that tag octet from the start of the input.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CatError {
    /// The input ends before the length or the value of this TLV.
    #[error("TLV tag 0x{tag:02x} at offset {at} is truncated")]
    Truncated { tag: u8, at: usize },
    /// The length field is not a form we accept (`80`, `82`.., `81 xx` with xx < 0x80), or the
    /// length does not fit the data object (e.g. command details that are not 3 octets).
    #[error("TLV tag 0x{tag:02x} at offset {at} has an invalid length")]
    BadLength { tag: u8, at: usize },
    /// A mandatory data object is absent.
    #[error("mandatory TLV tag 0x{tag:02x} is missing")]
    MissingTlv { tag: u8 },
    /// A tag that is not allowed here: a wrong BER tag, an invalid tag octet, or an unknown
    /// data object with the comprehension-required bit set.
    #[error("unexpected tag 0x{tag:02x} at offset {at}")]
    UnexpectedTag { tag: u8, at: usize },
    /// The value of a data object is malformed.
    #[error("TLV tag 0x{tag:02x} at offset {at}: {reason}")]
    BadValue {
        tag: u8,
        at: usize,
        reason: &'static str,
    },
    /// A text data object does not decode as its coding scheme says.
    #[error("text in TLV tag 0x{tag:02x} at offset {at}: {source}")]
    Text {
        tag: u8,
        at: usize,
        source: TextError,
    },
    /// Text to encode cannot be written in the coding scheme asked for.
    #[error("text for TLV tag 0x{tag:02x} cannot be encoded: {source}")]
    TextEncode { tag: u8, source: TextError },
    /// A value to encode is longer than the 255 octets a TLV can carry here.
    #[error("value of {len} octets for tag 0x{tag:02x} exceeds 255")]
    ValueTooLong { tag: u8, len: usize },
    /// A field to encode has a value the format cannot carry.
    #[error("{field}: {reason}")]
    Invalid {
        field: &'static str,
        reason: &'static str,
    },
    /// Octets follow the decoded object.
    #[error("unexpected octets after the object, from offset {at}")]
    TrailingBytes { at: usize },
    /// An SMS TPDU field is malformed.
    #[error("SMS TPDU field {field} at offset {at}: {reason}")]
    Tpdu {
        field: &'static str,
        at: usize,
        reason: &'static str,
    },
    /// An APDU is malformed.
    #[error("APDU at offset {at}: {reason}")]
    Apdu { at: usize, reason: &'static str },
}
