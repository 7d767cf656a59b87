//! BER-TLV (the `D0`/`D1` wrappers) and COMPREHENSION-TLV (the data objects inside) framing,
//! and the walker that splits a list of data objects for the message decoders.
//!
//! Lengths are one octet below 0x80 and `81 xx` for 0x80..=0xFF; nothing in CAT over short APDUs
//! is longer, so `82 ..` and the non-minimal `81 xx` (xx < 0x80) are refused. Decoders collect the
//! objects of a message into a [`TlvList`], take the ones they know, and [`TlvList::finish`]
//! rejects any left-over object that has its comprehension-required bit set.

use nom::number::complete::u8 as octet;
use nom::IResult;

use super::CatError;

/// BER-TLV tag of a proactive command.
pub const PROACTIVE_COMMAND: u8 = 0xD0;
/// BER-TLV tag of the SMS-PP DOWNLOAD envelope.
pub const SMS_PP_DOWNLOAD: u8 = 0xD1;
/// Comprehension-required bit of a single-octet COMPREHENSION-TLV tag.
pub const CR: u8 = 0x80;

/// COMPREHENSION-TLV tag values (without the CR bit).
pub mod tag {
    pub const COMMAND_DETAILS: u8 = 0x01;
    pub const DEVICE_IDENTITIES: u8 = 0x02;
    pub const RESULT: u8 = 0x03;
    pub const DURATION: u8 = 0x04;
    pub const ALPHA_IDENTIFIER: u8 = 0x05;
    pub const ADDRESS: u8 = 0x06;
    pub const SMS_TPDU: u8 = 0x0B;
    pub const TEXT_STRING: u8 = 0x0D;
    pub const TONE: u8 = 0x0E;
    pub const RESPONSE_LENGTH: u8 = 0x11;
    pub const DEFAULT_TEXT: u8 = 0x17;
    pub const IMMEDIATE_RESPONSE: u8 = 0x2B;
}

/// One COMPREHENSION-TLV data object, borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// The first tag octet as on the wire (0x7F for a three-octet tag).
    pub wire_tag: u8,
    /// Tag value without the CR bit: 7 bits for single-octet tags, 15 bits for three-octet tags.
    pub tag: u16,
    /// Whether this is a three-octet tag (`7F xx yy`).
    pub long_form: bool,
    /// The comprehension-required bit.
    pub comprehension_required: bool,
    /// Offset of the first tag octet from the start of the decoded input.
    pub at: usize,
    /// The value octets.
    pub value: &'a [u8],
    /// Offset just past the value, from the start of the decoded input.
    pub end: usize,
}

impl Tlv<'_> {
    /// Whether this is the single-octet data object `tag` (CR bit ignored).
    pub fn is(&self, tag: u8) -> bool {
        !self.long_form && self.tag == u16::from(tag & !CR)
    }

    /// A `BadValue` error for this data object.
    pub fn bad_value(&self, reason: &'static str) -> CatError {
        CatError::BadValue {
            tag: self.wire_tag,
            at: self.at,
            reason,
        }
    }

    /// A `BadLength` error for this data object.
    pub fn bad_length(&self) -> CatError {
        CatError::BadLength {
            tag: self.wire_tag,
            at: self.at,
        }
    }
}

/// Append a length field.
pub fn put_length(out: &mut Vec<u8>, tag: u8, len: usize) -> Result<(), CatError> {
    match u8::try_from(len) {
        Ok(l) if l < 0x80 => out.push(l),
        Ok(l) => out.extend_from_slice(&[0x81, l]),
        Err(_) => return Err(CatError::ValueTooLong { tag, len }),
    }
    Ok(())
}

/// Append a single-octet-tag TLV (`tag` is written as given, CR bit included).
pub fn put_tlv(out: &mut Vec<u8>, tag: u8, value: &[u8]) -> Result<(), CatError> {
    out.push(tag);
    put_length(out, tag, value.len())?;
    out.extend_from_slice(value);
    Ok(())
}

/// Wrap `body` in a BER-TLV with `tag`.
pub fn wrap_ber(tag: u8, body: &[u8]) -> Result<Vec<u8>, CatError> {
    let mut out = Vec::with_capacity(body.len() + 3);
    put_tlv(&mut out, tag, body)?;
    Ok(out)
}

fn length_field(input: &[u8]) -> IResult<&[u8], Option<usize>> {
    let (rest, first) = octet(input)?;
    match first {
        0x00..=0x7F => Ok((rest, Some(usize::from(first)))),
        0x81 => {
            let (rest, second) = octet(rest)?;
            // A one-octet length written in two octets is refused: it is never produced by a
            // conforming encoder and accepting it would make encodings non-unique.
            Ok((rest, (second >= 0x80).then_some(usize::from(second))))
        }
        _ => Ok((rest, None)),
    }
}

/// Read the length at `buf[pos..]` for the tag at `tag_at`; returns the value range.
fn read_length(
    buf: &[u8],
    pos: usize,
    wire_tag: u8,
    tag_at: usize,
    base: usize,
) -> Result<(usize, usize), CatError> {
    let truncated = CatError::Truncated {
        tag: wire_tag,
        at: base + tag_at,
    };
    let input = buf.get(pos..).ok_or(truncated.clone())?;
    let (rest, len) = length_field(input).map_err(|_| truncated.clone())?;
    let len = len.ok_or(CatError::BadLength {
        tag: wire_tag,
        at: base + tag_at,
    })?;
    let start = buf.len() - rest.len();
    let end = start.checked_add(len).ok_or(truncated.clone())?;
    if end > buf.len() {
        return Err(truncated);
    }
    Ok((start, end))
}

/// Read a BER-TLV with the expected `tag` at the start of `buf`. Returns the value, the offset
/// of the value in `buf`, and the rest after it.
pub fn read_ber(buf: &[u8], expected: u8) -> Result<(&[u8], usize, &[u8]), CatError> {
    let first = *buf.first().ok_or(CatError::MissingTlv { tag: expected })?;
    if first != expected {
        return Err(CatError::UnexpectedTag { tag: first, at: 0 });
    }
    let (start, end) = read_length(buf, 1, first, 0, 0)?;
    Ok((&buf[start..end], start, &buf[end..]))
}

/// Split `buf` (which starts at offset `base` of the decoded input) into COMPREHENSION-TLVs.
pub fn walk(buf: &[u8], base: usize) -> Result<Vec<Tlv<'_>>, CatError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let at = pos;
        let first = buf[pos];
        let (tag, long_form, cr, len_pos) = match first {
            // 0x00, 0x80 and 0xFF are not valid first tag octets (TS 101 220 §7.1.1).
            0x00 | 0x80 | 0xFF => {
                return Err(CatError::UnexpectedTag {
                    tag: first,
                    at: base + at,
                })
            }
            0x7F => {
                let (b1, b2) = match (buf.get(pos + 1), buf.get(pos + 2)) {
                    (Some(b1), Some(b2)) => (*b1, *b2),
                    _ => {
                        return Err(CatError::Truncated {
                            tag: first,
                            at: base + at,
                        })
                    }
                };
                let tag = (u16::from(b1 & 0x7F) << 8) | u16::from(b2);
                (tag, true, b1 & 0x80 != 0, pos + 3)
            }
            _ => (u16::from(first & !CR), false, first & CR != 0, pos + 1),
        };
        let (start, end) = read_length(buf, len_pos, first, at, base)?;
        out.push(Tlv {
            wire_tag: first,
            tag,
            long_form,
            comprehension_required: cr,
            at: base + at,
            value: &buf[start..end],
            end: base + end,
        });
        pos = end;
    }
    Ok(out)
}

/// The data objects of one message, consumed by tag.
#[derive(Debug)]
pub struct TlvList<'a> {
    items: Vec<(Tlv<'a>, bool)>,
}

impl<'a> TlvList<'a> {
    /// Walk `buf` (at offset `base` of the input) into a list.
    pub fn parse(buf: &'a [u8], base: usize) -> Result<Self, CatError> {
        Ok(Self {
            items: walk(buf, base)?.into_iter().map(|t| (t, false)).collect(),
        })
    }

    /// Take the first unconsumed object with `tag` (CR bit ignored).
    pub fn take(&mut self, tag: u8) -> Option<Tlv<'a>> {
        let (tlv, used) = self
            .items
            .iter_mut()
            .find(|(t, used)| !*used && t.is(tag))?;
        *used = true;
        Some(*tlv)
    }

    /// Take a mandatory object; `wire_tag` names it in the error.
    pub fn require(&mut self, wire_tag: u8) -> Result<Tlv<'a>, CatError> {
        self.take(wire_tag)
            .ok_or(CatError::MissingTlv { tag: wire_tag })
    }

    /// The raw encodings of the objects not taken yet, in order; `input` is the whole decoded
    /// input the offsets refer to.
    pub fn untaken_raw(&self, input: &[u8]) -> Vec<u8> {
        self.items
            .iter()
            .filter(|(_, used)| !*used)
            .filter_map(|(t, _)| input.get(t.at..t.end))
            .flatten()
            .copied()
            .collect()
    }

    /// Refuse a left-over object that the sender required us to understand.
    pub fn finish(self) -> Result<(), CatError> {
        match self
            .items
            .iter()
            .find(|(t, used)| !*used && t.comprehension_required)
        {
            Some((t, _)) => Err(CatError::UnexpectedTag {
                tag: t.wire_tag,
                at: t.at,
            }),
            None => Ok(()),
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
    fn lengths_use_one_octet_below_0x80_and_81_up_to_255() {
        let mut out = Vec::new();
        put_length(&mut out, 0x8D, 0x7F).unwrap();
        put_length(&mut out, 0x8D, 0x80).unwrap();
        put_length(&mut out, 0x8D, 0xFF).unwrap();
        assert_eq!(out, hex!("7F 81 80 81 FF"));
        assert_eq!(
            put_length(&mut out, 0x8D, 256),
            Err(CatError::ValueTooLong {
                tag: 0x8D,
                len: 256
            })
        );
    }

    #[test]
    fn walker_reads_long_length_and_flags_comprehension_required() {
        let mut buf = vec![0x0D, 0x81, 0x80];
        buf.extend(std::iter::repeat_n(0x41, 0x80));
        buf.extend_from_slice(&hex!("82 02 81 82"));
        let tlvs = walk(&buf, 10).unwrap();
        assert_eq!(tlvs.len(), 2);
        assert!(tlvs[0].is(tag::TEXT_STRING) && !tlvs[0].comprehension_required);
        assert_eq!(tlvs[0].value.len(), 0x80);
        assert_eq!(tlvs[1].at, 10 + 3 + 0x80);
        assert!(tlvs[1].comprehension_required && tlvs[1].is(tag::DEVICE_IDENTITIES));
    }

    #[test]
    fn non_minimal_and_multi_octet_lengths_are_refused() {
        assert_eq!(
            walk(&hex!("8D 81 05 04 41 42 43 44"), 0),
            Err(CatError::BadLength { tag: 0x8D, at: 0 })
        );
        assert_eq!(
            walk(&hex!("01 00 8D 82 00 01 04"), 0),
            Err(CatError::BadLength { tag: 0x8D, at: 2 })
        );
        assert_eq!(
            walk(&hex!("8D 80"), 0),
            Err(CatError::BadLength { tag: 0x8D, at: 0 })
        );
    }

    #[test]
    fn truncated_length_and_value_past_end_name_tag_and_offset() {
        assert_eq!(
            walk(&hex!("81 03 01 21 80 82"), 4),
            Err(CatError::Truncated { tag: 0x82, at: 9 })
        );
        assert_eq!(
            walk(&hex!("81 03 01 21 80 8D 05 04 41"), 0),
            Err(CatError::Truncated { tag: 0x8D, at: 5 })
        );
        assert_eq!(
            walk(&hex!("8D 81"), 0),
            Err(CatError::Truncated { tag: 0x8D, at: 0 })
        );
    }

    #[test]
    fn three_octet_tags_are_walked_and_skipped_unless_required() {
        let buf = hex!("7F 00 40 01 AA 0D 01 04");
        let mut list = TlvList::parse(&buf, 0).unwrap();
        assert!(list.take(tag::TEXT_STRING).is_some());
        list.finish().unwrap();
        let buf = hex!("7F 80 40 01 AA");
        let list = TlvList::parse(&buf, 3).unwrap();
        assert_eq!(
            list.finish(),
            Err(CatError::UnexpectedTag { tag: 0x7F, at: 3 })
        );
    }

    #[test]
    fn unknown_objects_are_skipped_unless_comprehension_required() {
        let buf = hex!("3C 01 00 8D 01 04");
        let mut list = TlvList::parse(&buf, 0).unwrap();
        assert!(list.take(tag::TEXT_STRING).is_some());
        list.finish().unwrap();
        let buf = hex!("BC 01 00 8D 01 04");
        let mut list = TlvList::parse(&buf, 0).unwrap();
        assert!(list.take(tag::TEXT_STRING).is_some());
        assert_eq!(
            list.finish(),
            Err(CatError::UnexpectedTag { tag: 0xBC, at: 0 })
        );
    }

    #[test]
    fn missing_mandatory_object_is_named() {
        let buf = hex!("81 03 01 21 80");
        let mut list = TlvList::parse(&buf, 0).unwrap();
        assert_eq!(list.require(0x82), Err(CatError::MissingTlv { tag: 0x82 }));
    }

    #[test]
    fn ber_wrapper_checks_tag_and_length() {
        assert_eq!(
            read_ber(&hex!("D1 01 00"), PROACTIVE_COMMAND),
            Err(CatError::UnexpectedTag { tag: 0xD1, at: 0 })
        );
        assert_eq!(
            read_ber(&hex!("D0 05 00"), PROACTIVE_COMMAND),
            Err(CatError::Truncated { tag: 0xD0, at: 0 })
        );
        let (value, at, rest) = read_ber(&hex!("D0 01 AA BB"), PROACTIVE_COMMAND).unwrap();
        assert_eq!((value, at, rest), (&[0xAA][..], 2, &[0xBB][..]));
    }

    proptest! {
        #[test]
        fn walker_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..300), base in 0usize..1000) {
            let _ = walk(&buf, base);
            if let Ok(list) = TlvList::parse(&buf, base) { let _ = list.finish(); }
        }

        #[test]
        fn tlv_round_trips(tag in 1u8..0x7F, cr in any::<bool>(), value in proptest::collection::vec(any::<u8>(), 0..=255)) {
            let wire = if cr { tag | CR } else { tag };
            let mut out = Vec::new();
            put_tlv(&mut out, wire, &value).unwrap();
            let tlvs = walk(&out, 0).unwrap();
            prop_assert_eq!(tlvs.len(), 1);
            prop_assert_eq!(tlvs[0].value, &value[..]);
            prop_assert_eq!(tlvs[0].comprehension_required, cr);
            prop_assert!(tlvs[0].is(tag));
        }
    }
}
