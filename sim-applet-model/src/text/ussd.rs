//! USSD strings (3GPP TS 23.038 §5 CBS coding, TS 24.090): at most 160 octets, i.e. 182 GSM
//! 7-bit septets packed with the CR padding rule or 80 UCS2 units. The CBS data coding scheme
//! travels in MAP; SMPP gateways differ (some take SMPP `data_coding`), so [`UssdString`] carries
//! both and the per-operator dialect picks one.

use super::septets::{pack_ussd, unpack_ussd};
use super::ucs2::{be_units, units_to_string};
use super::{choose_encoding, gsm7_decode, gsm7_encode, Encoding, TextError};

/// Octets in one USSD string.
pub const USSD_MAX_OCTETS: usize = 160;
/// GSM 7-bit septets that fit in 160 octets (182 * 7 = 1274 bits).
pub const USSD_MAX_GSM7_SEPTETS: usize = 182;
/// UTF-16 units that fit in 160 octets.
pub const USSD_MAX_UCS2_UNITS: usize = 80;

/// An encoded USSD string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UssdString {
    pub encoding: Encoding,
    /// CBS data coding scheme: 0x0F (GSM 7-bit, language unspecified) or 0x48 (UCS2).
    pub cbs_dcs: u8,
    /// SMPP `data_coding`: 0x00 or 0x08.
    pub smpp_data_coding: u8,
    /// The string: packed septets (USSD CR rule) or big-endian UTF-16.
    pub bytes: Vec<u8>,
    /// Length in the bearer's units: septets (extension characters count 2) or UTF-16 units.
    pub units: usize,
}

/// Encode a USSD string in GSM 7-bit when the alphabet allows, else UCS2, within 160 octets.
pub fn encode_ussd(text: &str) -> Result<UssdString, TextError> {
    let encoding = choose_encoding(text);
    let (bytes, units) = match encoding {
        Encoding::Gsm7 => {
            let septets = gsm7_encode(text)?;
            if septets.len() > USSD_MAX_GSM7_SEPTETS {
                return Err(TextError::TooLong {
                    len: septets.len(),
                    limit: USSD_MAX_GSM7_SEPTETS,
                    what: "a GSM 7-bit USSD string",
                });
            }
            (pack_ussd(&septets), septets.len())
        }
        Encoding::Ucs2 => {
            let units: Vec<u16> = text.encode_utf16().collect();
            if units.len() > USSD_MAX_UCS2_UNITS {
                return Err(TextError::TooLong {
                    len: units.len(),
                    limit: USSD_MAX_UCS2_UNITS,
                    what: "a UCS2 USSD string",
                });
            }
            (
                units.iter().flat_map(|u| u.to_be_bytes()).collect(),
                units.len(),
            )
        }
    };
    Ok(UssdString {
        encoding,
        cbs_dcs: encoding.cbs_dcs(),
        smpp_data_coding: encoding.smpp_data_coding(),
        bytes,
        units,
    })
}

/// How a CBS data coding scheme (TS 23.038 §5) says to read the string.
enum CbsText {
    Gsm7,
    Ucs2,
    /// UCS2 preceded by a two-character GSM 7-bit language code packed into two octets.
    Ucs2WithLanguage,
}

fn cbs_alphabet(dcs: u8) -> Result<CbsText, TextError> {
    match dcs >> 4 {
        // 0000, 0010, 0011: GSM 7-bit in various languages; 0001 0000 carries the language in
        // its first characters, which are text too.
        0x0 | 0x2 | 0x3 => Ok(CbsText::Gsm7),
        0x1 => match dcs & 0x0F {
            0x1 => Ok(CbsText::Ucs2WithLanguage),
            _ => Ok(CbsText::Gsm7),
        },
        // General data coding; bit 5 = compressed.
        0x4..=0x7 if dcs & 0x20 != 0 => Err(TextError::UnsupportedDcs { dcs }),
        0x4..=0x7 => match (dcs >> 2) & 0x03 {
            0b01 => Err(TextError::UnsupportedDcs { dcs }),
            0b10 => Ok(CbsText::Ucs2),
            _ => Ok(CbsText::Gsm7),
        },
        // Message with UDH, WAP, and data coding / class with 8-bit data.
        0x9 | 0xE => Err(TextError::UnsupportedDcs { dcs }),
        0xF if dcs & 0x04 != 0 => Err(TextError::UnsupportedDcs { dcs }),
        // Reserved groups are read as GSM 7-bit, as the spec tells receivers to.
        _ => Ok(CbsText::Gsm7),
    }
}

/// Decode a USSD string given its CBS data coding scheme.
pub fn decode_ussd(dcs: u8, bytes: &[u8]) -> Result<String, TextError> {
    match cbs_alphabet(dcs)? {
        CbsText::Gsm7 => gsm7_decode(&unpack_ussd(bytes)?),
        CbsText::Ucs2 => units_to_string(&be_units(bytes)?),
        CbsText::Ucs2WithLanguage => {
            let body = bytes.get(2..).ok_or(TextError::Truncated {
                what: "USSD language indication",
                at: bytes.len(),
            })?;
            units_to_string(&be_units(body)?)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use hex_literal::hex;
    use proptest::prelude::*;

    #[test]
    fn ascii_prompt_is_packed_gsm_with_cbs_0f() {
        let u = encode_ussd("hellohello").unwrap();
        assert_eq!(u.encoding, Encoding::Gsm7);
        assert_eq!((u.cbs_dcs, u.smpp_data_coding), (0x0F, 0x00));
        assert_eq!(u.bytes, hex!("e8329bfd4697d9ec37"));
        assert_eq!(decode_ussd(0x0F, &u.bytes).unwrap(), "hellohello");
    }

    #[test]
    fn seven_character_menu_is_padded_with_cr_and_decodes_clean() {
        let u = encode_ussd("1 Yes 2").unwrap();
        assert_eq!(u.bytes.len(), 7);
        assert_eq!(u.bytes[6] >> 1, 0x0D);
        assert_eq!(decode_ussd(0x0F, &u.bytes).unwrap(), "1 Yes 2");
    }

    #[test]
    fn polish_prompt_is_ucs2_with_cbs_48() {
        let u = encode_ussd("Podaj PIN dla: Urząd").unwrap();
        assert_eq!(u.encoding, Encoding::Ucs2);
        assert_eq!((u.cbs_dcs, u.smpp_data_coding), (0x48, 0x08));
        assert_eq!(u.bytes.len(), 40);
        assert_eq!(decode_ussd(0x48, &u.bytes).unwrap(), "Podaj PIN dla: Urząd");
    }

    #[test]
    fn limits_are_182_septets_and_80_units() {
        let gsm = encode_ussd(&"a".repeat(182)).unwrap();
        assert_eq!(gsm.bytes.len(), 160);
        assert_eq!(
            encode_ussd(&"a".repeat(183)),
            Err(TextError::TooLong {
                len: 183,
                limit: 182,
                what: "a GSM 7-bit USSD string"
            })
        );
        // Extension characters count two septets.
        assert!(encode_ussd(&"€".repeat(91)).is_ok());
        assert!(encode_ussd(&"€".repeat(92)).is_err());
        assert_eq!(encode_ussd(&"ź".repeat(80)).unwrap().bytes.len(), 160);
        assert!(matches!(
            encode_ussd(&"ź".repeat(81)),
            Err(TextError::TooLong { limit: 80, .. })
        ));
    }

    #[test]
    fn ucs2_with_language_skips_the_language_octets() {
        let mut bytes = vec![0xF0, 0x0C];
        bytes.extend(hex!("0041"));
        assert_eq!(decode_ussd(0x11, &bytes).unwrap(), "A");
        assert!(decode_ussd(0x11, &[0xF0]).is_err());
    }

    #[test]
    fn eight_bit_and_compressed_schemes_are_refused() {
        assert!(matches!(
            decode_ussd(0x44, b"x"),
            Err(TextError::UnsupportedDcs { dcs: 0x44 })
        ));
        assert!(decode_ussd(0x60, b"x").is_err());
        assert!(decode_ussd(0xF4, b"x").is_err());
    }

    proptest! {
        #[test]
        fn ussd_round_trip(text in "[a-zA-Z0-9 .,:?€]{0,91}|[a-zźąę ]{0,80}") {
            let u = encode_ussd(&text).unwrap();
            prop_assert!(u.bytes.len() <= USSD_MAX_OCTETS);
            prop_assert_eq!(decode_ussd(u.cbs_dcs, &u.bytes).unwrap(), text);
        }

        #[test]
        fn decoder_never_panics(dcs in any::<u8>(), bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_ussd(dcs, &bytes);
        }
    }
}
