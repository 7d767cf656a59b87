//! GSM 03.38 text: the 7-bit default alphabet with its extension table, packed and unpacked
//! septets (with the USSD CR padding rule), UCS2, the choice between them, SMS segmentation with
//! a concatenation UDH, and USSD string limits.
//!
//! Data flows in two directions:
//!
//! - Outbound, text -> [`choose_encoding`] -> either [`gsm7_encode`] (unpacked septets) then
//!   [`pack_septets`] / [`pack_ussd`], or [`ucs2_encode`] (big-endian UTF-16). [`segment_sms`]
//!   and [`encode_ussd`] do the whole chain and apply the per-bearer limits.
//! - Inbound, octets + DCS -> [`parse_user_data`] (SMS TP-UD, UDH walked with `nom`) or
//!   [`decode_ussd`] (CBS data coding) -> [`unpack_septets`] / [`unpack_ussd`] ->
//!   [`gsm7_decode`], or [`ucs2_decode`]. [`Reassembler`] joins concatenated SMS parts.
//!
//! Submodules: `gsm7` (the alphabet tables), `septets` (bit packing), `ucs2`, `sms`
//! (segmentation, TP-UD parsing, reassembly) and `ussd`.

mod gsm7;
mod septets;
mod sms;
mod ucs2;
mod ussd;

use thiserror::Error;

pub use gsm7::{gsm7_decode, gsm7_encode, gsm7_len, ESCAPE};
pub use septets::{pack_septets, pack_ussd, unpack_septets, unpack_ussd, CR};
pub use sms::{
    parse_user_data, segment_sms, udh_fill_bits, udh_septets, Concat, Reassembler, SmsSegment,
    MAX_SEGMENTS, SMS_GSM7_CONCAT_SEPTETS, SMS_GSM7_SEPTETS, SMS_UCS2_CONCAT_UNITS, SMS_UCS2_UNITS,
};
pub use ucs2::{ucs2_decode, ucs2_encode, utf16_encode};
pub use ussd::{
    decode_ussd, encode_ussd, UssdString, USSD_MAX_GSM7_SEPTETS, USSD_MAX_OCTETS,
    USSD_MAX_UCS2_UNITS,
};

/// Errors of the text codecs.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TextError {
    #[error("character {ch:?} at index {index} is not in the GSM 7-bit default alphabet or its extension table")]
    NotGsm7 { ch: char, index: usize },
    #[error("septet 0x{value:02x} at offset {at} is not a GSM 7-bit code")]
    InvalidSeptet { value: u8, at: usize },
    #[error("UCS2 data has odd length {len}")]
    OddUcs2Length { len: usize },
    #[error("UCS2 code unit 0x{unit:04x} at offset {at} is not a valid character")]
    InvalidUcs2 { unit: u16, at: usize },
    #[error("{what} truncated at offset {at}")]
    Truncated { what: &'static str, at: usize },
    #[error("text of {len} characters exceeds the {limit}-character limit for {what}")]
    TooLong {
        len: usize,
        limit: usize,
        what: &'static str,
    },
    /// A character outside the Basic Multilingual Plane cannot be written in strict UCS2.
    #[error("character {ch:?} at index {index} is outside the BMP and has no UCS2 code")]
    NotUcs2 { ch: char, index: usize },
    /// The text needs more SMS segments than an 8-bit segment count can number.
    #[error("text needs more than {max} SMS segments")]
    TooManySegments { max: usize },
    /// The data coding scheme announces 8-bit data, compressed text or an unsupported group.
    #[error("data coding scheme 0x{dcs:02x} does not carry GSM 7-bit or UCS2 text")]
    UnsupportedDcs { dcs: u8 },
    /// TP-UDL is inconsistent with the user data header it must cover.
    #[error("TP-UDL {udl} is shorter than the {header}-unit user data header")]
    UdlShorterThanHeader { udl: u8, header: usize },
}

/// The two text alphabets the gateway sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// GSM 7-bit default alphabet plus its extension table.
    Gsm7,
    /// UCS2 (sent as big-endian UTF-16).
    Ucs2,
}

impl Encoding {
    /// TP-DCS for an SMS in this alphabet (general data coding, no class).
    pub fn sms_dcs(self) -> u8 {
        match self {
            Encoding::Gsm7 => 0x00,
            Encoding::Ucs2 => 0x08,
        }
    }

    /// SMPP `data_coding` for this alphabet (0 = SMSC default alphabet, 8 = UCS2).
    pub fn smpp_data_coding(self) -> u8 {
        self.sms_dcs()
    }

    /// CBS data coding scheme as USSD carries it in MAP (0x0F GSM 7-bit language unspecified,
    /// 0x48 general data coding UCS2).
    pub fn cbs_dcs(self) -> u8 {
        match self {
            Encoding::Gsm7 => 0x0F,
            Encoding::Ucs2 => 0x48,
        }
    }
}

/// GSM 7-bit when every character is in the default alphabet or its extension table, else UCS2.
pub fn choose_encoding(text: &str) -> Encoding {
    if gsm7_len(text).is_some() {
        Encoding::Gsm7
    } else {
        Encoding::Ucs2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_text_chooses_gsm7() {
        assert_eq!(
            choose_encoding("Hello, confirm login? Reply 1"),
            Encoding::Gsm7
        );
        assert_eq!(choose_encoding(""), Encoding::Gsm7);
        assert_eq!(choose_encoding("price 5€ [x]"), Encoding::Gsm7);
    }

    #[test]
    fn polish_text_chooses_ucs2() {
        assert_eq!(choose_encoding("potwierdź"), Encoding::Ucs2);
        assert_eq!(choose_encoding("ó"), Encoding::Ucs2);
        // Backquote is ASCII but not in the GSM alphabet.
        assert_eq!(choose_encoding("`"), Encoding::Ucs2);
    }

    #[test]
    fn dcs_values_per_bearer() {
        assert_eq!(Encoding::Gsm7.cbs_dcs(), 0x0F);
        assert_eq!(Encoding::Ucs2.cbs_dcs(), 0x48);
        assert_eq!(Encoding::Gsm7.smpp_data_coding(), 0x00);
        assert_eq!(Encoding::Ucs2.smpp_data_coding(), 0x08);
        assert_eq!(Encoding::Ucs2.sms_dcs(), 0x08);
    }
}
