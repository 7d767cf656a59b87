//! Text data objects: the text string (tag `0D`, with a data coding scheme octet) and the alpha
//! identifier (tag `05`, SIM-record coding: unpacked GSM 7-bit or one of the UCS2 formats
//! `80`/`81`/`82` of TS 102 221 Annex A). GSM and UCS2 tables live in [`crate::text`].

use crate::text::{self, TextError};

use super::tlv::{put_tlv, Tlv};
use super::CatError;

/// Data coding scheme of a text string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextDcs {
    /// `00`: GSM 7-bit default alphabet, packed.
    PackedGsm7,
    /// `04`: GSM 7-bit default alphabet, one septet per octet.
    Gsm7,
    /// `08`: UCS2, big-endian.
    Ucs2,
}

impl TextDcs {
    /// The DCS octet.
    pub fn octet(self) -> u8 {
        match self {
            TextDcs::PackedGsm7 => 0x00,
            TextDcs::Gsm7 => 0x04,
            TextDcs::Ucs2 => 0x08,
        }
    }

    /// The coding for a DCS octet, if it is one of the three we support.
    pub fn from_octet(dcs: u8) -> Option<Self> {
        match dcs {
            0x00 => Some(TextDcs::PackedGsm7),
            0x04 => Some(TextDcs::Gsm7),
            0x08 => Some(TextDcs::Ucs2),
            _ => None,
        }
    }
}

/// A text string data object: text and the coding it travels in.
///
/// A null text string (length 0 on the wire) decodes as empty [`TextDcs::Gsm7`] text.
/// Packed GSM text follows TS 23.038 §6.1.2.3.1: when 7 spare bits would be left, a CR pads the
/// last octet, and a CR decoded in that position is dropped; text ending in CR on an octet
/// boundary therefore comes back with a second CR (which displays the same).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TextString {
    pub dcs: TextDcs,
    pub text: String,
}

const CR_SEPTET: u8 = 0x0D;

impl TextString {
    /// Unpacked GSM 7-bit text.
    pub fn gsm7(text: impl Into<String>) -> Self {
        Self {
            dcs: TextDcs::Gsm7,
            text: text.into(),
        }
    }

    /// Packed GSM 7-bit text.
    pub fn packed(text: impl Into<String>) -> Self {
        Self {
            dcs: TextDcs::PackedGsm7,
            text: text.into(),
        }
    }

    /// UCS2 text.
    pub fn ucs2(text: impl Into<String>) -> Self {
        Self {
            dcs: TextDcs::Ucs2,
            text: text.into(),
        }
    }

    /// Unpacked GSM 7-bit when every character is in the GSM alphabet, UCS2 otherwise (e.g.
    /// Polish text).
    pub fn auto(text: impl Into<String>) -> Self {
        let text = text.into();
        if text::gsm7_encode(&text).is_ok() {
            Self::gsm7(text)
        } else {
            Self::ucs2(text)
        }
    }

    /// The value of the data object: DCS octet then the coded text.
    pub fn encode_value(&self) -> Result<Vec<u8>, TextError> {
        let mut out = vec![self.dcs.octet()];
        match self.dcs {
            TextDcs::Gsm7 => out.extend(text::gsm7_encode(&self.text)?),
            TextDcs::PackedGsm7 => {
                let mut septets = text::gsm7_encode(&self.text)?;
                match septets.len() % 8 {
                    7 => septets.push(CR_SEPTET),
                    0 if septets.last() == Some(&CR_SEPTET) => septets.push(CR_SEPTET),
                    _ => {}
                }
                out.extend(text::pack_septets(&septets, 0));
            }
            TextDcs::Ucs2 => out.extend(text::ucs2_encode(&self.text)?),
        }
        Ok(out)
    }

    /// Decode the value of a text string data object.
    pub fn decode_tlv(tlv: &Tlv<'_>) -> Result<Self, CatError> {
        let Some((&dcs, body)) = tlv.value.split_first() else {
            return Ok(Self::gsm7(String::new()));
        };
        let dcs =
            TextDcs::from_octet(dcs).ok_or(tlv.bad_value("unsupported data coding scheme"))?;
        let text_err = |source| CatError::Text {
            tag: tlv.wire_tag,
            at: tlv.at,
            source,
        };
        let text = match dcs {
            TextDcs::Gsm7 => text::gsm7_decode(body).map_err(text_err)?,
            TextDcs::PackedGsm7 => {
                let count = body.len() * 8 / 7;
                let mut septets = text::unpack_septets(body, count, 0).map_err(text_err)?;
                if count % 8 == 0 && septets.last() == Some(&CR_SEPTET) {
                    septets.pop();
                }
                text::gsm7_decode(&septets).map_err(text_err)?
            }
            TextDcs::Ucs2 => text::ucs2_decode(body).map_err(text_err)?,
        };
        Ok(Self { dcs, text })
    }

    /// Append as a TLV with `tag` (CR bit as given).
    pub fn put(&self, out: &mut Vec<u8>, tag: u8) -> Result<(), CatError> {
        let value = self
            .encode_value()
            .map_err(|source| CatError::TextEncode { tag, source })?;
        put_tlv(out, tag, &value)
    }
}

/// An alpha identifier: text shown to the user (an empty one is a null alpha identifier).
/// Encoded as unpacked GSM when possible, as UCS2 format `80` otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AlphaId(pub String);

impl AlphaId {
    /// The value of the data object.
    pub fn encode_value(&self) -> Result<Vec<u8>, TextError> {
        if let Ok(septets) = text::gsm7_encode(&self.0) {
            return Ok(septets);
        }
        // U+FFFF is the records' padding value in format 80: it cannot be sent as a character.
        if let Some((index, ch)) = self.0.chars().enumerate().find(|&(_, c)| c == '\u{FFFF}') {
            return Err(TextError::NotUcs2 { ch, index });
        }
        let mut out = vec![0x80];
        out.extend(text::ucs2_encode(&self.0)?);
        Ok(out)
    }

    /// Append as a TLV with `tag`.
    pub fn put(&self, out: &mut Vec<u8>, tag: u8) -> Result<(), CatError> {
        let value = self
            .encode_value()
            .map_err(|source| CatError::TextEncode { tag, source })?;
        put_tlv(out, tag, &value)
    }

    /// Decode an alpha identifier in any of the SIM-record codings.
    pub fn decode_tlv(tlv: &Tlv<'_>) -> Result<Self, CatError> {
        let v = tlv.value;
        let text_err = |source| CatError::Text {
            tag: tlv.wire_tag,
            at: tlv.at,
            source,
        };
        let text = match v.first() {
            None => String::new(),
            Some(0x80) => {
                let mut body = &v[1..];
                // Records pad with FF; an odd trailing FF is the unused last octet.
                if body.len() % 2 == 1 && body.last() == Some(&0xFF) {
                    body = &body[..body.len() - 1];
                }
                let end = body
                    .chunks(2)
                    .position(|c| c == [0xFF, 0xFF])
                    .map_or(body.len(), |i| i * 2);
                text::ucs2_decode(&body[..end]).map_err(text_err)?
            }
            Some(0x81) => {
                let (count, base, chars) = match v {
                    [_, n, b, rest @ ..] => (usize::from(*n), u32::from(*b) << 7, rest),
                    _ => return Err(tlv.bad_value("UCS2 format 81 header truncated")),
                };
                let chars = chars
                    .get(..count)
                    .ok_or(tlv.bad_value("UCS2 format 81 shorter than its character count"))?;
                decode_windowed(tlv, base, chars)?
            }
            Some(0x82) => {
                let (count, base, chars) = match v {
                    [_, n, hi, lo, rest @ ..] => (
                        usize::from(*n),
                        (u32::from(*hi) << 8) | u32::from(*lo),
                        rest,
                    ),
                    _ => return Err(tlv.bad_value("UCS2 format 82 header truncated")),
                };
                let chars = chars
                    .get(..count)
                    .ok_or(tlv.bad_value("UCS2 format 82 shorter than its character count"))?;
                decode_windowed(tlv, base, chars)?
            }
            Some(_) => {
                let end = v.iter().rposition(|&b| b != 0xFF).map_or(0, |i| i + 1);
                text::gsm7_decode(&v[..end]).map_err(text_err)?
            }
        };
        Ok(Self(text))
    }
}

/// UCS2 formats 81/82: octets below 0x80 are GSM characters, others an offset from `base`.
fn decode_windowed(tlv: &Tlv<'_>, base: u32, chars: &[u8]) -> Result<String, CatError> {
    let mut out = String::new();
    let mut gsm_run: Vec<u8> = Vec::new();
    let flush = |run: &mut Vec<u8>, out: &mut String| -> Result<(), CatError> {
        if !run.is_empty() {
            let s = text::gsm7_decode(run).map_err(|source| CatError::Text {
                tag: tlv.wire_tag,
                at: tlv.at,
                source,
            })?;
            out.push_str(&s);
            run.clear();
        }
        Ok(())
    };
    for &b in chars {
        if b < 0x80 {
            gsm_run.push(b);
        } else {
            flush(&mut gsm_run, &mut out)?;
            let code = base + u32::from(b & 0x7F);
            // 0xFFFF is padding in the 80 format, not a character (and a noncharacter anyway).
            let ch = (code < 0xFFFF)
                .then(|| char::from_u32(code))
                .flatten()
                .ok_or(tlv.bad_value("UCS2 window character is not a valid code point"))?;
            out.push(ch);
        }
    }
    flush(&mut gsm_run, &mut out)?;
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::tlv::walk;
    use super::*;
    use hex_literal::hex;
    use proptest::prelude::*;

    fn one(buf: &[u8]) -> Tlv<'_> {
        walk(buf, 0).unwrap()[0]
    }

    #[test]
    fn unpacked_gsm_text_string() {
        let mut out = Vec::new();
        TextString::gsm7("Toolkit Test 1")
            .put(&mut out, 0x8D)
            .unwrap();
        assert_eq!(
            out,
            hex!("8D 0F 04 54 6F 6F 6C 6B 69 74 20 54 65 73 74 20 31")
        );
        assert_eq!(
            TextString::decode_tlv(&one(&out)).unwrap(),
            TextString::gsm7("Toolkit Test 1")
        );
    }

    #[test]
    fn packed_gsm_text_string() {
        // "Test" packed: D4 F2 9C 0E (hand-computed, TS 23.038 §6.1.2.1.1).
        let mut out = Vec::new();
        TextString::packed("Test").put(&mut out, 0x8D).unwrap();
        assert_eq!(out, hex!("8D 05 00 D4 F2 9C 0E"));
        assert_eq!(
            TextString::decode_tlv(&one(&out)).unwrap(),
            TextString::packed("Test")
        );
    }

    #[test]
    fn packed_text_of_seven_characters_is_padded_with_cr() {
        // "1234567": 7 septets leave 7 spare bits, filled with CR (0x0D << 1 = 0x1A).
        let mut out = Vec::new();
        TextString::packed("1234567").put(&mut out, 0x8D).unwrap();
        assert_eq!(out, hex!("8D 08 00 31 D9 8C 56 B3 DD 1A"));
        assert_eq!(TextString::decode_tlv(&one(&out)).unwrap().text, "1234567");
    }

    #[test]
    fn ucs2_text_string() {
        // TS 31.124 DISPLAY TEXT UCS2 text.
        let buf = hex!(
            "8D 19 08 04 17 04 14 04 20 04 10 04 12 04 21 04 22 04 12 04 23 04 19 04 22 04 15"
        );
        let t = TextString::decode_tlv(&one(&buf)).unwrap();
        assert_eq!(t, TextString::ucs2("ЗДРАВСТВУЙТЕ"));
        let mut out = Vec::new();
        t.put(&mut out, 0x8D).unwrap();
        assert_eq!(out, buf);
    }

    #[test]
    fn auto_picks_ucs2_for_polish() {
        assert_eq!(TextString::auto("Zażółć").dcs, TextDcs::Ucs2);
        assert_eq!(TextString::auto("Zaloguj?").dcs, TextDcs::Gsm7);
    }

    #[test]
    fn unknown_dcs_is_a_bad_value() {
        assert_eq!(
            TextString::decode_tlv(&one(&hex!("8D 02 F4 41"))),
            Err(CatError::BadValue {
                tag: 0x8D,
                at: 0,
                reason: "unsupported data coding scheme"
            })
        );
    }

    #[test]
    fn null_text_string_is_empty() {
        assert_eq!(
            TextString::decode_tlv(&one(&hex!("8D 00"))).unwrap(),
            TextString::gsm7("")
        );
    }

    #[test]
    fn alpha_id_gsm_and_80_format() {
        let mut out = Vec::new();
        AlphaId("Send SM".into()).put(&mut out, 0x85).unwrap();
        assert_eq!(out, hex!("85 07 53 65 6E 64 20 53 4D"));
        let mut out = Vec::new();
        AlphaId("ż".into()).put(&mut out, 0x85).unwrap();
        assert_eq!(out, hex!("85 03 80 01 7C"));
        assert_eq!(AlphaId::decode_tlv(&one(&out)).unwrap().0, "ż");
    }

    #[test]
    fn alpha_id_gsm_ignores_ff_padding() {
        assert_eq!(
            AlphaId::decode_tlv(&one(&hex!("05 04 41 42 FF FF")))
                .unwrap()
                .0,
            "AB"
        );
    }

    #[test]
    fn alpha_id_81_and_82_windows() {
        // 81: base 0x08 << 7 = 0x0400; 0x98 -> U+0418.
        assert_eq!(
            AlphaId::decode_tlv(&one(&hex!("05 05 81 02 08 53 98")))
                .unwrap()
                .0,
            "SИ"
        );
        // 82: base 0x0410; 0x98 -> U+0428.
        assert_eq!(
            AlphaId::decode_tlv(&one(&hex!("05 06 82 02 04 10 53 98")))
                .unwrap()
                .0,
            "SШ"
        );
        assert!(matches!(
            AlphaId::decode_tlv(&one(&hex!("05 04 81 05 08 53"))),
            Err(CatError::BadValue {
                tag: 0x05,
                at: 0,
                ..
            })
        ));
    }

    #[test]
    fn ffff_is_padding_never_a_character() {
        // Format 82 with base 0xFF80: 0xFF would name U+FFFF, the padding value of format 80;
        // accepting it would not survive a round trip (found by the cat_decode fuzz target).
        assert!(matches!(
            AlphaId::decode_tlv(&one(&hex!("05 05 82 01 FF 80 FF"))),
            Err(CatError::BadValue { tag: 0x05, .. })
        ));
        assert!(AlphaId("a\u{FFFF}".into()).encode_value().is_err());
    }

    fn text_strategy() -> impl Strategy<Value = String> {
        // No CR: a CR on an octet boundary of packed text legitimately comes back doubled.
        "[A-Za-z0-9 @?!.,:;ąćęłńóśźżЗД€]{0,60}"
    }

    proptest! {
        #[test]
        fn text_string_round_trips(text in text_strategy(), dcs in prop_oneof![Just(TextDcs::PackedGsm7), Just(TextDcs::Gsm7), Just(TextDcs::Ucs2)]) {
            let ts = TextString { dcs, text };
            let mut out = Vec::new();
            match ts.put(&mut out, 0x8D) {
                Ok(()) => prop_assert_eq!(TextString::decode_tlv(&one(&out)).unwrap(), ts),
                Err(CatError::TextEncode { .. }) => prop_assert!(dcs != TextDcs::Ucs2),
                Err(e) => prop_assert!(false, "{e}"),
            }
        }

        #[test]
        fn alpha_id_round_trips(text in text_strategy()) {
            let a = AlphaId(text);
            let mut out = Vec::new();
            a.put(&mut out, 0x85).unwrap();
            prop_assert_eq!(AlphaId::decode_tlv(&one(&out)).unwrap(), a);
        }

        #[test]
        fn text_decoders_never_panic(value in proptest::collection::vec(any::<u8>(), 0..=255)) {
            let mut buf = Vec::new();
            put_tlv(&mut buf, 0x8D, &value).unwrap();
            let _ = TextString::decode_tlv(&one(&buf));
            let _ = AlphaId::decode_tlv(&one(&buf));
        }
    }
}
