//! GSM 03.38 text: the 7-bit default alphabet with its extension table, packed and unpacked
//! septets (with the USSD CR padding rule), UCS2, the choice between them, SMS segmentation with
//! a concatenation UDH, and USSD string limits.
//!
//! CONTRACT (fixed signatures other modules already call; bodies are being written):

use thiserror::Error;

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
    TooLong { len: usize, limit: usize, what: &'static str },
}

/// Map text to unpacked GSM 7-bit septets (extension characters become `0x1B` + code).
pub fn gsm7_encode(text: &str) -> Result<Vec<u8>, TextError> {
    let _ = text;
    todo!()
}

/// Map unpacked septets back to text (`0x1B` escapes read through the extension table).
pub fn gsm7_decode(septets: &[u8]) -> Result<String, TextError> {
    let _ = septets;
    todo!()
}

/// Pack septets 8-into-7 (TS 23.038 §6.1.2.1), `fill_bits` leading bits of padding (for UDH alignment).
pub fn pack_septets(septets: &[u8], fill_bits: u8) -> Vec<u8> {
    let _ = (septets, fill_bits);
    todo!()
}

/// Unpack `count` septets from packed octets, skipping `fill_bits` leading bits.
pub fn unpack_septets(packed: &[u8], count: usize, fill_bits: u8) -> Result<Vec<u8>, TextError> {
    let _ = (packed, count, fill_bits);
    todo!()
}

/// Encode text as UCS2 (big-endian UTF-16 code units; characters outside the BMP are refused).
pub fn ucs2_encode(text: &str) -> Result<Vec<u8>, TextError> {
    let _ = text;
    todo!()
}

/// Decode big-endian UCS2.
pub fn ucs2_decode(bytes: &[u8]) -> Result<String, TextError> {
    let _ = bytes;
    todo!()
}
