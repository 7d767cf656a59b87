//! SMS text user data (3GPP TS 23.040 §9.2.3.16/24): segmentation of a text into TP-UD with an
//! 8-bit-reference concatenation UDH (`05 00 03 ref total seq`), the reverse parse of TP-DCS,
//! TP-UDHI, TP-UDL and TP-UD, and a bounded, sans-IO [`Reassembler`] for concatenated parts.
//!
//! Outbound: text -> alphabet -> units (septets or UTF-16 units) -> ranges that never split an
//! escape pair or a surrogate pair -> per segment UDH + packed payload. Inbound: UDH walked by
//! the shared parser ([`crate::udh`]) -> payload units -> joined across parts (so a pair split by another sender still
//! decodes) -> text.

use std::hash::Hash;
use std::ops::Range;

use super::gsm7::{gsm7_decode, gsm7_encode, ESCAPE};
use super::septets::{pack_septets, unpack_septets};
use super::ucs2::{be_units, units_to_string};
use super::{choose_encoding, Encoding, TextError};
pub use crate::udh::Concat;
use crate::udh::{self, Duplicates, Fed, Limits, UdhError};

/// Septets in a single, unconcatenated GSM 7-bit SMS.
pub const SMS_GSM7_SEPTETS: usize = 160;
/// Payload septets per segment after the 6-octet concatenation UDH (7 septets with fill).
pub const SMS_GSM7_CONCAT_SEPTETS: usize = 153;
/// UTF-16 units in a single UCS2 SMS.
pub const SMS_UCS2_UNITS: usize = 70;
/// UTF-16 units per segment after the 6-octet concatenation UDH.
pub const SMS_UCS2_CONCAT_UNITS: usize = 67;
/// Segments an 8-bit total can count.
pub const MAX_SEGMENTS: usize = 255;

/// One SMS ready for a `submit_sm` / SMS-DELIVER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsSegment {
    /// TP-DCS: 0x00 GSM 7-bit, 0x08 UCS2.
    pub dcs: u8,
    /// The UDH including its length octet, when concatenated (TP-UDHI set).
    pub udh: Option<Vec<u8>>,
    /// Complete TP-UD: UDH then payload (septets packed after fill bits for GSM).
    pub user_data: Vec<u8>,
    /// TP-UDL: septets including the UDH's septets for GSM, octets for UCS2.
    pub udl: u8,
    /// The concatenation IE carried in `udh`.
    pub concat: Option<Concat>,
}

/// Fill bits after a UDH of `udh_len` octets (length octet included) so the first payload
/// septet starts on a septet boundary.
pub fn udh_fill_bits(udh_len: usize) -> u8 {
    ((7 - (udh_len * 8) % 7) % 7) as u8
}

/// Septets a UDH of `udh_len` octets occupies in TP-UDL, fill bits included.
pub fn udh_septets(udh_len: usize) -> usize {
    (udh_len * 8).div_ceil(7)
}

/// Split `len` units into ranges of at most `max`, where `pair_at(i)` says a two-unit sequence
/// that must stay together starts at `i`. Errors beyond [`MAX_SEGMENTS`].
fn split(
    len: usize,
    max: usize,
    pair_at: impl Fn(usize) -> bool,
) -> Result<Vec<Range<usize>>, TextError> {
    let mut ranges = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < len {
        let step = if pair_at(i) && i + 1 < len { 2 } else { 1 };
        if i + step - start > max {
            ranges.push(start..i);
            if ranges.len() >= MAX_SEGMENTS {
                return Err(TextError::TooManySegments { max: MAX_SEGMENTS });
            }
            start = i;
        }
        i += step;
    }
    ranges.push(start..len);
    Ok(ranges)
}

fn concat_udh(reference: u8, total: u8, seq: u8) -> Vec<u8> {
    vec![0x05, 0x00, 0x03, reference, total, seq]
}

/// Split a text into SMS: one segment without UDH when it fits (160 septets / 70 UCS2 units),
/// else parts of 153 septets / 67 units with an 8-bit-reference concatenation UDH. Never splits
/// an escape pair or a surrogate pair.
pub fn segment_sms(text: &str, reference: u8) -> Result<Vec<SmsSegment>, TextError> {
    match choose_encoding(text) {
        Encoding::Gsm7 => {
            let septets = gsm7_encode(text)?;
            if septets.len() <= SMS_GSM7_SEPTETS {
                return Ok(vec![SmsSegment {
                    dcs: Encoding::Gsm7.sms_dcs(),
                    udh: None,
                    user_data: pack_septets(&septets, 0),
                    udl: septets.len() as u8,
                    concat: None,
                }]);
            }
            let ranges = split(septets.len(), SMS_GSM7_CONCAT_SEPTETS, |i| {
                septets[i] == ESCAPE
            })?;
            let total = ranges.len() as u8;
            Ok(ranges
                .into_iter()
                .zip(1..=total)
                .map(|(r, seq)| {
                    let udh = concat_udh(reference, total, seq);
                    let mut user_data = udh.clone();
                    user_data.extend(pack_septets(&septets[r.clone()], udh_fill_bits(udh.len())));
                    SmsSegment {
                        dcs: Encoding::Gsm7.sms_dcs(),
                        udl: (udh_septets(udh.len()) + r.len()) as u8,
                        udh: Some(udh),
                        user_data,
                        concat: Some(Concat {
                            reference: u16::from(reference),
                            total,
                            seq,
                        }),
                    }
                })
                .collect())
        }
        Encoding::Ucs2 => {
            let units: Vec<u16> = text.encode_utf16().collect();
            let to_bytes =
                |u: &[u16]| -> Vec<u8> { u.iter().flat_map(|x| x.to_be_bytes()).collect() };
            if units.len() <= SMS_UCS2_UNITS {
                return Ok(vec![SmsSegment {
                    dcs: Encoding::Ucs2.sms_dcs(),
                    udh: None,
                    user_data: to_bytes(&units),
                    udl: (units.len() * 2) as u8,
                    concat: None,
                }]);
            }
            let ranges = split(units.len(), SMS_UCS2_CONCAT_UNITS, |i| {
                (0xD800..0xDC00).contains(&units[i])
            })?;
            let total = ranges.len() as u8;
            Ok(ranges
                .into_iter()
                .zip(1..=total)
                .map(|(r, seq)| {
                    let udh = concat_udh(reference, total, seq);
                    let mut user_data = udh.clone();
                    user_data.extend(to_bytes(&units[r]));
                    SmsSegment {
                        dcs: Encoding::Ucs2.sms_dcs(),
                        udl: user_data.len() as u8,
                        udh: Some(udh),
                        user_data,
                        concat: Some(Concat {
                            reference: u16::from(reference),
                            total,
                            seq,
                        }),
                    }
                })
                .collect())
        }
    }
}

/// Alphabet announced by an SMS TP-DCS (TS 23.038 §4). Reserved codings read as GSM 7-bit, as
/// the spec tells receivers to; 8-bit data and compressed text are not text.
fn sms_alphabet(dcs: u8) -> Result<Encoding, TextError> {
    let by_bits = |bits: u8| match bits & 0x03 {
        0b01 => Err(TextError::UnsupportedDcs { dcs }),
        0b10 => Ok(Encoding::Ucs2),
        _ => Ok(Encoding::Gsm7),
    };
    match dcs >> 4 {
        0x0..=0x7 if dcs & 0x20 != 0 => Err(TextError::UnsupportedDcs { dcs }),
        0x0..=0x7 => by_bits(dcs >> 2),
        0xE => Ok(Encoding::Ucs2),
        0xF if dcs & 0x04 != 0 => Err(TextError::UnsupportedDcs { dcs }),
        _ => Ok(Encoding::Gsm7),
    }
}

/// Walks the UDH at the start of `bytes` with the shared parser; returns the concatenation
/// element and the UDH's length in octets (length octet included).
fn parse_udh(bytes: &[u8]) -> Result<(Option<Concat>, usize), TextError> {
    match udh::parse(bytes) {
        Ok(header) => Ok((header.concat, header.body_at)),
        Err(UdhError::Missing | UdhError::LongerThanUserData { .. }) => Err(TextError::Truncated {
            what: "user data header",
            at: bytes.len(),
        }),
        Err(UdhError::TruncatedElement { at }) => Err(TextError::Truncated {
            what: "UDH information element",
            at,
        }),
    }
}

/// A part's payload before decoding, kept raw so parts can be joined before decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Payload {
    Septets(Vec<u8>),
    Units(Vec<u16>),
}

impl Payload {
    fn decode(&self) -> Result<String, TextError> {
        match self {
            Payload::Septets(s) => gsm7_decode(s),
            Payload::Units(u) => units_to_string(u),
        }
    }
}

fn parse_payload(
    dcs: u8,
    udhi: bool,
    udl: u8,
    bytes: &[u8],
) -> Result<(Option<Concat>, Payload), TextError> {
    let alphabet = sms_alphabet(dcs)?;
    let (concat, udh_len) = if udhi { parse_udh(bytes)? } else { (None, 0) };
    let body = bytes.get(udh_len..).unwrap_or(&[]);
    match alphabet {
        Encoding::Gsm7 => {
            let header = if udhi { udh_septets(udh_len) } else { 0 };
            let count = usize::from(udl)
                .checked_sub(header)
                .ok_or(TextError::UdlShorterThanHeader { udl, header })?;
            let fill = if udhi { udh_fill_bits(udh_len) } else { 0 };
            let septets = unpack_septets(body, count, fill).map_err(|_| TextError::Truncated {
                what: "TP-UD septets",
                at: bytes.len(),
            })?;
            Ok((concat, Payload::Septets(septets)))
        }
        Encoding::Ucs2 => {
            let end = usize::from(udl);
            if end < udh_len {
                return Err(TextError::UdlShorterThanHeader {
                    udl,
                    header: udh_len,
                });
            }
            let data = bytes.get(udh_len..end).ok_or(TextError::Truncated {
                what: "TP-UD octets",
                at: bytes.len(),
            })?;
            Ok((concat, Payload::Units(be_units(data)?)))
        }
    }
}

/// Parse TP-UD given TP-DCS, TP-UDHI and TP-UDL: the concatenation IE if any, and the text.
pub fn parse_user_data(
    dcs: u8,
    udhi: bool,
    udl: u8,
    bytes: &[u8],
) -> Result<(Option<Concat>, String), TextError> {
    let (concat, payload) = parse_payload(dcs, udhi, udl, bytes)?;
    Ok((concat, payload.decode()?))
}

/// Joins concatenated SMS parts: the shared reassembler ([`crate::udh::Reassembler`]) over
/// raw payloads, so a character split across parts still decodes. Sans-IO: the caller feeds
/// parts with a key of its choice (for example the originator address) and gets the text when
/// the last part arrives. At most `max_pending` messages wait at once; the oldest is dropped to
/// make room, and counted. A repeated part replaces the earlier.
pub struct Reassembler<K> {
    parts: udh::Reassembler<K, (), Payload>,
}

impl<K: Eq + Hash + Clone> Reassembler<K> {
    /// A reassembler holding at most `max_pending` incomplete messages (at least one).
    pub fn new(max_pending: usize) -> Self {
        Reassembler {
            parts: udh::Reassembler::new(Limits {
                max_pending,
                max_parts: u8::MAX,
                max_age_ms: None,
                duplicates: Duplicates::Replace,
            }),
        }
    }

    /// Incomplete messages held.
    pub fn pending(&self) -> usize {
        self.parts.pending()
    }

    /// Incomplete messages dropped to respect the bound.
    pub fn evicted(&self) -> u64 {
        self.parts.evicted()
    }

    /// Feed one SMS. Returns the whole text when this part completes a message (at once for an
    /// unconcatenated SMS), `None` while parts are missing.
    pub fn push(
        &mut self,
        key: K,
        dcs: u8,
        udhi: bool,
        udl: u8,
        bytes: &[u8],
    ) -> Result<Option<String>, TextError> {
        let (concat, payload) = parse_payload(dcs, udhi, udl, bytes)?;
        let Some(concat) = concat.filter(|c| c.total > 1) else {
            return payload.decode().map(Some);
        };
        match self.parts.push((), key, concat, payload) {
            Fed::Complete(parts) => join(parts).map(Some),
            Fed::Waiting | Fed::Duplicate | Fed::TooManyParts | Fed::BadPartNumber => Ok(None),
        }
    }
}

/// Join payloads of one alphabet before decoding; decode separately if a sender mixed them.
fn join(parts: Vec<Payload>) -> Result<String, TextError> {
    if parts.iter().all(|p| matches!(p, Payload::Septets(_))) {
        let all: Vec<u8> = parts
            .iter()
            .flat_map(|p| match p {
                Payload::Septets(s) => s.as_slice(),
                Payload::Units(_) => &[],
            })
            .copied()
            .collect();
        return gsm7_decode(&all);
    }
    if parts.iter().all(|p| matches!(p, Payload::Units(_))) {
        let all: Vec<u16> = parts
            .iter()
            .flat_map(|p| match p {
                Payload::Units(u) => u.as_slice(),
                Payload::Septets(_) => &[],
            })
            .copied()
            .collect();
        return units_to_string(&all);
    }
    parts.iter().map(Payload::decode).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::text::gsm7_len;
    use hex_literal::hex;
    use proptest::prelude::*;

    const POLISH: &str = "mDokumenty: potwierdź udostępnienie danych dowodu osobistego dla: Urząd Gminy Warszawa-Bemowo. Podaj PIN";

    fn parse(seg: &SmsSegment) -> (Option<Concat>, String) {
        parse_user_data(seg.dcs, seg.udh.is_some(), seg.udl, &seg.user_data).unwrap()
    }

    fn reassemble(segs: &[SmsSegment]) -> String {
        let mut r = Reassembler::new(4);
        let mut out = None;
        for s in segs {
            assert!(out.is_none(), "completed before the last part");
            out = r
                .push("+48600000000", s.dcs, s.udh.is_some(), s.udl, &s.user_data)
                .unwrap();
        }
        assert_eq!(r.pending(), 0);
        out.unwrap()
    }

    #[test]
    fn udh_alignment_for_the_concat_header() {
        assert_eq!(udh_fill_bits(6), 1);
        assert_eq!(udh_septets(6), 7);
        assert_eq!(udh_fill_bits(7), 0);
        assert_eq!(udh_septets(7), 8);
    }

    #[test]
    fn polish_seed_text_goes_out_as_two_ucs2_parts() {
        assert_eq!(POLISH.chars().count(), 104);
        let segs = segment_sms(POLISH, 0x42).unwrap();
        assert_eq!(segs.len(), 2);
        for (i, s) in segs.iter().enumerate() {
            assert_eq!(s.dcs, 0x08);
            let udh = s.udh.as_deref().unwrap();
            assert_eq!(udh, [0x05, 0x00, 0x03, 0x42, 0x02, i as u8 + 1]);
            assert_eq!(&s.user_data[..6], udh);
            assert_eq!(usize::from(s.udl), s.user_data.len());
        }
        assert_eq!(segs[0].udl, 6 + 67 * 2);
        assert_eq!(segs[1].udl, 6 + 37 * 2);
        let (c, first) = parse(&segs[0]);
        assert_eq!(
            c,
            Some(Concat {
                reference: 0x42,
                total: 2,
                seq: 1
            })
        );
        assert_eq!(first.chars().count(), 67);
        assert_eq!(reassemble(&segs), POLISH);
    }

    #[test]
    fn ascii_fits_one_gsm_sms_up_to_160() {
        let text = "a".repeat(160);
        let segs = segment_sms(&text, 1).unwrap();
        assert_eq!(segs.len(), 1);
        assert_eq!(
            (segs[0].dcs, segs[0].udl, segs[0].udh.clone()),
            (0, 160, None)
        );
        assert_eq!(segs[0].user_data.len(), 140);
        assert_eq!(parse(&segs[0]).1, text);
    }

    #[test]
    fn gsm_161_needs_two_parts_and_306_still_two() {
        let segs = segment_sms(&"a".repeat(161), 7).unwrap();
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[0].udl, 160);
        assert_eq!(segs[0].user_data.len(), 140);
        assert_eq!(segs[1].udl, 7 + 8);
        assert_eq!(segment_sms(&"a".repeat(153 * 2), 7).unwrap().len(), 2);
        assert_eq!(segment_sms(&"a".repeat(153 * 2 + 1), 7).unwrap().len(), 3);
    }

    #[test]
    fn concatenated_gsm_part_has_fill_bit_after_udh() {
        let segs = segment_sms(&"A".repeat(161), 9).unwrap();
        assert_eq!(segs[0].user_data[..6], hex!("050003090201"));
        // First septet 'A' (0x41) shifted by one fill bit.
        assert_eq!(segs[0].user_data[6], 0x82);
    }

    #[test]
    fn ucs2_boundaries_70_and_71() {
        let one = segment_sms(&"ź".repeat(70), 1).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].udl, 140);
        let two = segment_sms(&"ź".repeat(71), 1).unwrap();
        assert_eq!(two.len(), 2);
        assert_eq!(two[0].udl, 140);
        assert_eq!(segment_sms(&"ź".repeat(67 * 2), 1).unwrap().len(), 2);
        assert_eq!(segment_sms(&"ź".repeat(67 * 2 + 1), 1).unwrap().len(), 3);
    }

    #[test]
    fn escape_pair_is_never_split() {
        // 152 plain septets then '€': the escape would be septet 153 of part one.
        let text = format!("{}€{}", "a".repeat(152), "b".repeat(10));
        let segs = segment_sms(&text, 3).unwrap();
        assert_eq!(segs[0].udl as usize, 7 + 152);
        let (_, first) = parse(&segs[0]);
        assert_eq!(first, "a".repeat(152));
        let (_, second) = parse(&segs[1]);
        assert!(second.starts_with('€'));
        assert_eq!(reassemble(&segs), text);
    }

    #[test]
    fn surrogate_pair_is_never_split() {
        let text = format!("{}😀{}", "ź".repeat(66), "ż".repeat(10));
        let segs = segment_sms(&text, 3).unwrap();
        assert_eq!(segs[0].udl as usize, 6 + 66 * 2);
        assert!(parse(&segs[1]).1.starts_with('😀'));
        assert_eq!(reassemble(&segs), text);
    }

    #[test]
    fn more_than_255_parts_is_an_error() {
        assert_eq!(segment_sms(&"a".repeat(153 * 255), 1).unwrap().len(), 255);
        assert_eq!(
            segment_sms(&"a".repeat(153 * 255 + 1), 1),
            Err(TextError::TooManySegments { max: 255 })
        );
    }

    #[test]
    fn sixteen_bit_reference_is_accepted() {
        let mut ud = hex!("06 08 04 12 34 02 01").to_vec();
        ud.extend(hex!("0041 0042"));
        let (c, text) = parse_user_data(0x08, true, ud.len() as u8, &ud).unwrap();
        assert_eq!(
            c,
            Some(Concat {
                reference: 0x1234,
                total: 2,
                seq: 1
            })
        );
        assert_eq!(text, "AB");
    }

    #[test]
    fn out_of_range_sequence_voids_the_concat_ie() {
        let ud = hex!("05 00 03 01 02 03 0041");
        assert_eq!(parse_user_data(0x08, true, 8, &ud).unwrap().0, None);
    }

    #[test]
    fn malformed_headers_name_their_offset() {
        assert_eq!(
            parse_user_data(0x08, true, 4, &hex!("05 00 03 01")),
            Err(TextError::Truncated {
                what: "user data header",
                at: 4
            })
        );
        assert_eq!(
            parse_user_data(0x08, true, 4, &hex!("03 00 05 01")),
            Err(TextError::Truncated {
                what: "UDH information element",
                at: 1
            })
        );
        assert_eq!(
            parse_user_data(0x00, true, 3, &hex!("05 00 03 01 02 01")),
            Err(TextError::UdlShorterThanHeader { udl: 3, header: 7 })
        );
        assert!(matches!(
            parse_user_data(0x04, false, 1, &[0]),
            Err(TextError::UnsupportedDcs { dcs: 0x04 })
        ));
    }

    #[test]
    fn reassembler_accepts_parts_out_of_order_and_evicts_the_oldest() {
        let a = segment_sms(&"a".repeat(200), 1).unwrap();
        let b = segment_sms(&"b".repeat(200), 2).unwrap();
        let mut r = Reassembler::new(1);
        let feed = |r: &mut Reassembler<u32>, key, s: &SmsSegment| {
            r.push(key, s.dcs, true, s.udl, &s.user_data).unwrap()
        };
        assert_eq!(feed(&mut r, 1, &a[1]), None);
        assert_eq!(feed(&mut r, 1, &a[0]), Some("a".repeat(200)));
        assert_eq!(feed(&mut r, 1, &a[0]), None);
        assert_eq!(feed(&mut r, 2, &b[0]), None);
        assert_eq!(r.evicted(), 1);
        assert_eq!(r.pending(), 1);
        assert_eq!(feed(&mut r, 2, &b[1]), Some("b".repeat(200)));
    }

    proptest! {
        #[test]
        fn segment_parse_concatenate_round_trip(
            text in "[a-zA-Z0-9 €\\[\\]{}|^~\\\\@£$]{0,700}|[a-zź😀ą ]{0,400}",
            reference in any::<u8>(),
        ) {
            let segs = segment_sms(&text, reference).unwrap();
            let mut joined = String::new();
            for (i, s) in segs.iter().enumerate() {
                prop_assert!(s.user_data.len() <= 140);
                let (c, part) = parse(s);
                if segs.len() > 1 {
                    let c = c.unwrap();
                    prop_assert_eq!((c.seq as usize, c.total as usize), (i + 1, segs.len()));
                    prop_assert_eq!(c.reference, u16::from(reference));
                }
                joined.push_str(&part);
            }
            prop_assert_eq!(&joined, &text);
            prop_assert_eq!(reassemble(&segs), text.clone());
            if let Some(n) = gsm7_len(&text) {
                if n <= 160 {
                    prop_assert_eq!(segs.len(), 1);
                } else {
                    // An escape pair pushed to the next part wastes at most one septet per part.
                    prop_assert!(segs.len() >= n.div_ceil(153) && segs.len() <= n.div_ceil(152));
                }
            }
        }

        #[test]
        fn parser_never_panics(
            dcs in any::<u8>(),
            udhi in any::<bool>(),
            udl in any::<u8>(),
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let _ = parse_user_data(dcs, udhi, udl, &bytes);
            let mut r = Reassembler::new(2);
            let _ = r.push(0u8, dcs, udhi, udl, &bytes);
        }
    }
}
