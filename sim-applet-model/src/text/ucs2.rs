//! UCS2 text as it travels in SMS, USSD and SIM toolkit strings: big-endian 16-bit code units.
//!
//! [`ucs2_encode`] is strict UCS2 (BMP only) for the SIM toolkit, whose 0x80 format has no
//! surrogates. [`utf16_encode`] is what SMS and USSD send: handsets read the UCS2 DCS as UTF-16,
//! so a character outside the BMP travels as a surrogate pair. [`ucs2_decode`] accepts both and
//! refuses only unpaired surrogates.

use nom::multi::many0;
use nom::number::complete::be_u16;
use nom::Parser;

use super::TextError;

/// Encode text as UCS2 (big-endian UTF-16 code units; characters outside the BMP are refused).
pub fn ucs2_encode(text: &str) -> Result<Vec<u8>, TextError> {
    let mut out = Vec::with_capacity(text.len() * 2);
    for (index, ch) in text.chars().enumerate() {
        let mut buf = [0u16; 2];
        match ch.encode_utf16(&mut buf) {
            [unit] => out.extend_from_slice(&unit.to_be_bytes()),
            _ => return Err(TextError::NotUcs2 { ch, index }),
        }
    }
    Ok(out)
}

/// Encode text as big-endian UTF-16 (UCS2 plus surrogate pairs for characters beyond the BMP).
pub fn utf16_encode(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

/// Split big-endian octets into 16-bit units.
pub(super) fn be_units(bytes: &[u8]) -> Result<Vec<u16>, TextError> {
    if bytes.len() % 2 != 0 {
        return Err(TextError::OddUcs2Length { len: bytes.len() });
    }
    let parsed: nom::IResult<&[u8], Vec<u16>> = many0(be_u16).parse(bytes);
    match parsed {
        Ok((_, units)) => Ok(units),
        // Unreachable for even lengths; reported rather than unwrapped.
        Err(_) => Err(TextError::OddUcs2Length { len: bytes.len() }),
    }
}

/// UTF-16 units to text; an unpaired surrogate is an error naming its octet offset.
pub(super) fn units_to_string(units: &[u16]) -> Result<String, TextError> {
    let mut out = String::with_capacity(units.len());
    let mut at = 0usize;
    for r in char::decode_utf16(units.iter().copied()) {
        match r {
            Ok(ch) => {
                out.push(ch);
                at += ch.len_utf16() * 2;
            }
            Err(e) => {
                return Err(TextError::InvalidUcs2 {
                    unit: e.unpaired_surrogate(),
                    at,
                })
            }
        }
    }
    Ok(out)
}

/// Decode big-endian UCS2.
///
/// Surrogate pairs are accepted (see the module doc); an unpaired surrogate is refused.
pub fn ucs2_decode(bytes: &[u8]) -> Result<String, TextError> {
    units_to_string(&be_units(bytes)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use hex_literal::hex;
    use proptest::prelude::*;

    #[test]
    fn polish_letters_are_big_endian_units() {
        assert_eq!(ucs2_encode("zź").unwrap(), hex!("007a017a"));
        assert_eq!(
            ucs2_decode(&hex!("0055 0072 007a 0105 0064")).unwrap(),
            "Urząd"
        );
    }

    #[test]
    fn strict_ucs2_refuses_characters_beyond_the_bmp() {
        assert_eq!(
            ucs2_encode("a😀"),
            Err(TextError::NotUcs2 {
                ch: '😀', index: 1
            })
        );
        assert_eq!(utf16_encode("😀"), hex!("d83d de00"));
        assert_eq!(ucs2_decode(&hex!("d83d de00")).unwrap(), "😀");
    }

    #[test]
    fn odd_length_and_lone_surrogates_are_refused() {
        assert_eq!(
            ucs2_decode(&[0x00, 0x41, 0x00]),
            Err(TextError::OddUcs2Length { len: 3 })
        );
        assert_eq!(
            ucs2_decode(&hex!("0041 d83d 0041")),
            Err(TextError::InvalidUcs2 {
                unit: 0xD83D,
                at: 2
            })
        );
        assert!(ucs2_decode(&hex!("de00")).is_err());
    }

    proptest! {
        #[test]
        fn bmp_strings_round_trip(text in "[\u{0}-\u{D7FF}\u{E000}-\u{FFFF}]{0,200}") {
            let bytes = ucs2_encode(&text).unwrap();
            prop_assert_eq!(bytes.len(), 2 * text.chars().count());
            prop_assert_eq!(ucs2_decode(&bytes).unwrap(), text);
        }

        #[test]
        fn any_string_round_trips_as_utf16(text in any::<String>()) {
            prop_assert_eq!(ucs2_decode(&utf16_encode(&text)).unwrap(), text);
        }

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = ucs2_decode(&bytes);
        }
    }
}
