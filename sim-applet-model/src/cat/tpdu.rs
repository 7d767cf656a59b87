//! The two SMS TPDUs (TS 23.040) that carry secured packets (TS 31.115): SMS-DELIVER inside the
//! SMS-PP DOWNLOAD envelope (gateway -> card) and SMS-SUBMIT inside SEND SHORT MESSAGE (card ->
//! gateway). Both have TP-PID 0x7F (SIM data download), TP-DCS 0xF6 (8-bit, class 2), TP-UDHI
//! set, and a user data header holding only the packet IEI (`02 70 00` command packet,
//! `02 71 00` response packet). `packet` is everything after that header.
//!
//! A command packet longer than one SMS travels as concatenated SMS (TS 31.115 §4.3, TS 23.040
//! §9.2.3.24.1): every segment has a concatenation element (`00 03 ref total seq`, or the 16-bit
//! reference form `08 04 ref ref total seq` on receive) and the first one also the `70 00`
//! element. [`command_segments`] writes `07 00 03 ref n 1 70 00 | part` then `05 00 03 ref n k |
//! part`; [`parse_user_data_header`] accepts the elements in any order, so a sender putting
//! `70 00` first is understood too. [`DeliverSegment`] is one such SMS-DELIVER as the card sees
//! it; reassembly is the card's job (`applet::reassembly`). [`SecuredDeliver::decode`] refuses a
//! segment of a multi-part message so a part is never mistaken for a whole packet.

use nom::bytes::complete::take;
use nom::number::complete::u8 as octet;
use nom::IResult;

use super::objects::Address;
use super::CatError;
use crate::udh::{self, UdhError};
pub use crate::udh::{Concat, PacketIei, UserDataHeader};

/// TP-PID: (U)SIM data download.
pub const PID_SIM_DATA_DOWNLOAD: u8 = 0x7F;
/// TP-DCS: 8-bit data, class 2 (SIM specific).
pub const DCS_8BIT_CLASS2: u8 = 0xF6;
/// Most secured-packet octets one SMS carries after the 3-octet header.
pub const MAX_SINGLE_PACKET: usize = 137;
const MAX_TP_DIGITS: usize = 20;

/// Longest SMS user data (TP-UDL of 8-bit data).
pub const MAX_USER_DATA: usize = 140;
/// UDH of the first segment of a concatenated command packet: UDHL, `00 03 ref n 1`, `70 00`.
pub const FIRST_SEGMENT_UDH_LEN: usize = 8;
/// UDH of a later segment: UDHL, `00 03 ref n k`.
pub const NEXT_SEGMENT_UDH_LEN: usize = 6;
/// Most segments [`command_segments`] writes (and the card reassembles): 4 segments carry
/// 132 + 3 x 134 = 534 octets of secured packet.
pub const MAX_SEGMENTS: u8 = 4;
/// Longest secured packet that fits [`MAX_SEGMENTS`] segments.
pub const MAX_CONCATENATED_PACKET: usize = (MAX_USER_DATA - FIRST_SEGMENT_UDH_LEN)
    + (MAX_SEGMENTS as usize - 1) * (MAX_USER_DATA - NEXT_SEGMENT_UDH_LEN);

/// Parse the UDH at the start of `ud` (TP-UDHI set) with the shared parser
/// ([`crate::udh::parse`]): elements in any order, unknown ones skipped; errors name the field
/// and the offset from the start of the user data.
pub fn parse_user_data_header(ud: &[u8]) -> Result<UserDataHeader, CatError> {
    udh::parse(ud).map_err(|e| match e {
        UdhError::Missing => err("TP-UDHL", 0, "user data header missing"),
        UdhError::LongerThanUserData { .. } => {
            err("TP-UDHL", 0, "header longer than the user data")
        }
        UdhError::TruncatedElement { at } => err("TP-UDH", at, "information element truncated"),
    })
}

/// Split an encoded command packet (from CPL on) into SMS user data: one SMS `02 70 00 | packet`
/// when it fits, else up to [`MAX_SEGMENTS`] segments with the 8-bit concatenation element and
/// `70 00` in the first one.
pub fn command_segments(packet: &[u8], reference: u8) -> Result<Vec<Vec<u8>>, CatError> {
    if packet.len() <= MAX_SINGLE_PACKET {
        let mut ud = vec![0x02, 0x70, 0x00];
        ud.extend_from_slice(packet);
        return Ok(vec![ud]);
    }
    if packet.len() > MAX_CONCATENATED_PACKET {
        return Err(CatError::Invalid {
            field: "secured packet",
            reason: "longer than 534 octets (4 concatenated SMS)",
        });
    }
    let first = MAX_USER_DATA - FIRST_SEGMENT_UDH_LEN;
    let next = MAX_USER_DATA - NEXT_SEGMENT_UDH_LEN;
    let total = 1 + (packet.len() - first).div_ceil(next);
    // Bounded by MAX_CONCATENATED_PACKET above, so at most MAX_SEGMENTS.
    let total = u8::try_from(total).unwrap_or(MAX_SEGMENTS);
    let mut out = Vec::with_capacity(usize::from(total));
    let (head, mut rest) = packet.split_at(first);
    let mut ud = vec![0x07, 0x00, 0x03, reference, total, 1, 0x70, 0x00];
    ud.extend_from_slice(head);
    out.push(ud);
    for seq in 2..=total {
        let (part, tail) = rest.split_at(next.min(rest.len()));
        let mut ud = vec![0x05, 0x00, 0x03, reference, total, seq];
        ud.extend_from_slice(part);
        out.push(ud);
        rest = tail;
    }
    Ok(out)
}

/// One SMS-DELIVER of a command packet as the card receives it: a whole packet (no
/// concatenation element) or one segment of a concatenated one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverSegment {
    pub originator: Address,
    pub header: UserDataHeader,
    /// The user data after the header: the whole packet, or this segment's part of it.
    pub body: Vec<u8>,
}

impl DeliverSegment {
    /// Decode an SMS-DELIVER with PID 7F, DCS F6 and a UDH; the UDH need not hold `70 00`
    /// (later segments do not). At most 140 octets of user data, so the body is bounded.
    pub fn decode(input: &[u8]) -> Result<Self, CatError> {
        let mut r = Reader::new(input);
        let first = r.octet("first octet")?;
        if first & 0x03 != 0x00 {
            return Err(err("TP-MTI", 0, "not SMS-DELIVER"));
        }
        if first & 0x40 == 0 {
            return Err(err("TP-UDHI", 0, "user data header indicator not set"));
        }
        let originator = r.address("TP-OA")?;
        check_pid_dcs(&mut r)?;
        r.take(7, "TP-SCTS")?;
        let udl_at = r.at();
        let udl = usize::from(r.octet("TP-UDL")?);
        if udl != r.rest.len() {
            return Err(err("TP-UDL", udl_at, "disagrees with the user data length"));
        }
        if udl > MAX_USER_DATA {
            return Err(err("TP-UDL", udl_at, "more than 140 octets"));
        }
        let ud_at = r.at();
        let header = parse_user_data_header(r.rest).map_err(|e| match e {
            CatError::Tpdu { field, at, reason } => err(field, ud_at + at, reason),
            other => other,
        })?;
        let body = r.rest.get(header.body_at..).unwrap_or_default().to_vec();
        Ok(Self {
            originator,
            header,
            body,
        })
    }
}

/// SMS-DELIVER carrying a secured packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecuredDeliver {
    pub originator: Address,
    /// TP-SCTS as on the wire (swapped BCD date, time, zone).
    pub scts: [u8; 7],
    pub iei: PacketIei,
    pub packet: Vec<u8>,
}

/// SMS-SUBMIT carrying a secured packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecuredSubmit {
    pub message_reference: u8,
    pub destination: Address,
    pub iei: PacketIei,
    pub packet: Vec<u8>,
}

fn err(field: &'static str, at: usize, reason: &'static str) -> CatError {
    CatError::Tpdu { field, at, reason }
}

/// Reads fields in order, naming the field and its offset when one is missing.
struct Reader<'a> {
    input: &'a [u8],
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(input: &'a [u8]) -> Self {
        Self { input, rest: input }
    }

    fn at(&self) -> usize {
        self.input.len() - self.rest.len()
    }

    fn octet(&mut self, field: &'static str) -> Result<u8, CatError> {
        let r: IResult<&[u8], u8> = octet(self.rest);
        let (rest, v) = r.map_err(|_| err(field, self.at(), "truncated"))?;
        self.rest = rest;
        Ok(v)
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], CatError> {
        let r: IResult<&[u8], &[u8]> = take(n)(self.rest);
        let (rest, v) = r.map_err(|_| err(field, self.at(), "truncated"))?;
        self.rest = rest;
        Ok(v)
    }

    fn address(&mut self, field: &'static str) -> Result<Address, CatError> {
        let at = self.at();
        let digits = usize::from(self.octet(field)?);
        if digits > MAX_TP_DIGITS {
            return Err(err(field, at, "more than 20 digits"));
        }
        let ton_npi = self.octet(field)?;
        if ton_npi & 0x70 == 0x50 {
            return Err(err(field, at, "alphanumeric addresses are not supported"));
        }
        let bcd = self.take(digits.div_ceil(2), field)?;
        let text = Address::digits_from_bcd(bcd)
            .filter(|d| d.len() == digits)
            .ok_or(err(field, at, "not swapped BCD of the stated length"))?;
        Ok(Address {
            ton_npi,
            digits: text,
        })
    }

    /// TP-UDL and TP-UD of an 8-bit message with a packet header.
    fn user_data(&mut self) -> Result<(PacketIei, Vec<u8>), CatError> {
        let udl_at = self.at();
        let udl = usize::from(self.octet("TP-UDL")?);
        if udl != self.rest.len() {
            return Err(err("TP-UDL", udl_at, "disagrees with the user data length"));
        }
        let ud_at = self.at();
        let header = parse_user_data_header(self.rest).map_err(|e| match e {
            CatError::Tpdu { field, at, reason } => err(field, ud_at + at, reason),
            other => other,
        })?;
        if header.concat.is_some_and(|c| c.total > 1) {
            return Err(err("TP-UDH", ud_at, "segment of a concatenated packet"));
        }
        let iei =
            header
                .packet
                .ok_or(err("TP-UDH", ud_at, "no secured packet element (70 or 71)"))?;
        let body = self.rest.get(header.body_at..).unwrap_or_default().to_vec();
        self.rest = &[];
        Ok((iei, body))
    }
}

fn put_address(out: &mut Vec<u8>, a: &Address) -> Result<(), CatError> {
    let digits = a.digits.chars().count();
    if digits > MAX_TP_DIGITS {
        return Err(CatError::Invalid {
            field: "TP address",
            reason: "more than 20 digits",
        });
    }
    out.push(digits as u8);
    out.push(a.ton_npi);
    out.extend(a.bcd()?);
    Ok(())
}

fn put_user_data(out: &mut Vec<u8>, iei: PacketIei, packet: &[u8]) -> Result<(), CatError> {
    if packet.len() > MAX_SINGLE_PACKET {
        return Err(CatError::Invalid {
            field: "secured packet",
            reason: "longer than 137 octets (one SMS)",
        });
    }
    out.push((packet.len() + 3) as u8);
    out.extend_from_slice(&[0x02, iei.octet(), 0x00]);
    out.extend_from_slice(packet);
    Ok(())
}

fn check_pid_dcs(r: &mut Reader<'_>) -> Result<(), CatError> {
    let at = r.at();
    if r.octet("TP-PID")? != PID_SIM_DATA_DOWNLOAD {
        return Err(err("TP-PID", at, "not SIM data download (7F)"));
    }
    let at = r.at();
    // F6 and 16 both mean 8-bit data, class 2.
    if !matches!(r.octet("TP-DCS")?, 0xF6 | 0x16) {
        return Err(err("TP-DCS", at, "not 8-bit class 2 (F6)"));
    }
    Ok(())
}

impl SecuredDeliver {
    pub fn encode(&self) -> Result<Vec<u8>, CatError> {
        // TP-MTI 00 (SMS-DELIVER), TP-MMS 1 (no more messages), TP-UDHI 1.
        let mut out = vec![0x44];
        put_address(&mut out, &self.originator)?;
        out.extend_from_slice(&[PID_SIM_DATA_DOWNLOAD, DCS_8BIT_CLASS2]);
        out.extend_from_slice(&self.scts);
        put_user_data(&mut out, self.iei, &self.packet)?;
        Ok(out)
    }

    pub fn decode(input: &[u8]) -> Result<Self, CatError> {
        let mut r = Reader::new(input);
        let first = r.octet("first octet")?;
        if first & 0x03 != 0x00 {
            return Err(err("TP-MTI", 0, "not SMS-DELIVER"));
        }
        if first & 0x40 == 0 {
            return Err(err("TP-UDHI", 0, "user data header indicator not set"));
        }
        let originator = r.address("TP-OA")?;
        check_pid_dcs(&mut r)?;
        let mut scts = [0u8; 7];
        scts.copy_from_slice(r.take(7, "TP-SCTS")?);
        let (iei, packet) = r.user_data()?;
        Ok(Self {
            originator,
            scts,
            iei,
            packet,
        })
    }
}

impl SecuredSubmit {
    pub fn encode(&self) -> Result<Vec<u8>, CatError> {
        // TP-MTI 01 (SMS-SUBMIT), no validity period, TP-UDHI 1.
        let mut out = vec![0x41, self.message_reference];
        put_address(&mut out, &self.destination)?;
        out.extend_from_slice(&[PID_SIM_DATA_DOWNLOAD, DCS_8BIT_CLASS2]);
        put_user_data(&mut out, self.iei, &self.packet)?;
        Ok(out)
    }

    pub fn decode(input: &[u8]) -> Result<Self, CatError> {
        let mut r = Reader::new(input);
        let first = r.octet("first octet")?;
        if first & 0x03 != 0x01 {
            return Err(err("TP-MTI", 0, "not SMS-SUBMIT"));
        }
        if first & 0x40 == 0 {
            return Err(err("TP-UDHI", 0, "user data header indicator not set"));
        }
        let message_reference = r.octet("TP-MR")?;
        let destination = r.address("TP-DA")?;
        check_pid_dcs(&mut r)?;
        match (first >> 3) & 0x03 {
            0b00 => {}
            0b10 => {
                r.take(1, "TP-VP")?;
            }
            _ => {
                r.take(7, "TP-VP")?;
            }
        }
        let (iei, packet) = r.user_data()?;
        Ok(Self {
            message_reference,
            destination,
            iei,
            packet,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use hex_literal::hex;
    use proptest::prelude::*;

    #[test]
    fn deliver_with_command_packet_header() {
        let d = SecuredDeliver {
            originator: Address::international("1234"),
            scts: hex!("32 11 13 01 00 00 00"),
            iei: PacketIei::Command,
            packet: hex!("00 10 15 06").to_vec(),
        };
        let bytes = hex!("44 04 91 21 43 7F F6 32 11 13 01 00 00 00 07 02 70 00 00 10 15 06");
        assert_eq!(d.encode().unwrap(), bytes);
        assert_eq!(SecuredDeliver::decode(&bytes).unwrap(), d);
    }

    #[test]
    fn submit_with_response_packet_header_and_relative_validity() {
        let s = SecuredSubmit {
            message_reference: 7,
            destination: Address::international("48123"),
            iei: PacketIei::Response,
            packet: vec![0xAB],
        };
        let bytes = hex!("41 07 05 91 84 21 F3 7F F6 04 02 71 00 AB");
        assert_eq!(s.encode().unwrap(), bytes);
        assert_eq!(SecuredSubmit::decode(&bytes).unwrap(), s);
        // VPF relative (bits 4-3 = 10) adds one TP-VP octet.
        let with_vp = hex!("51 07 05 91 84 21 F3 7F F6 A7 04 02 71 00 AB");
        assert_eq!(SecuredSubmit::decode(&with_vp).unwrap(), s);
    }

    #[test]
    fn wrong_pid_udl_and_missing_header_are_named() {
        assert_eq!(
            SecuredDeliver::decode(&hex!(
                "44 04 91 21 43 00 F6 32 11 13 01 00 00 00 04 02 70 00 00"
            )),
            Err(err("TP-PID", 5, "not SIM data download (7F)"))
        );
        assert_eq!(
            SecuredDeliver::decode(&hex!(
                "44 04 91 21 43 7F F6 32 11 13 01 00 00 00 09 02 70 00 00"
            )),
            Err(err("TP-UDL", 14, "disagrees with the user data length"))
        );
        assert_eq!(
            SecuredDeliver::decode(&hex!(
                "44 04 91 21 43 7F F6 32 11 13 01 00 00 00 04 02 00 00 00"
            )),
            Err(err("TP-UDH", 15, "no secured packet element (70 or 71)"))
        );
        assert_eq!(
            SecuredDeliver::decode(&hex!("44 04 91 21")),
            Err(err("TP-OA", 3, "truncated"))
        );
    }

    #[test]
    fn packet_longer_than_one_sms_is_refused() {
        let s = SecuredSubmit {
            message_reference: 0,
            destination: Address::international("1"),
            iei: PacketIei::Command,
            packet: vec![0; 138],
        };
        assert!(matches!(s.encode(), Err(CatError::Invalid { .. })));
    }

    #[test]
    fn long_packet_is_split_with_concat_then_command_element_in_the_first_segment() {
        let packet: Vec<u8> = (0..300u16).map(|i| i as u8).collect();
        let segs = command_segments(&packet, 0x2A).unwrap();
        assert_eq!(segs.len(), 3);
        assert_eq!(&segs[0][..8], &hex!("07 00 03 2A 03 01 70 00"));
        assert_eq!(&segs[1][..6], &hex!("05 00 03 2A 03 02"));
        assert_eq!(&segs[2][..6], &hex!("05 00 03 2A 03 03"));
        assert_eq!(
            (segs[0].len(), segs[1].len(), segs[2].len()),
            (140, 140, 6 + 300 - 132 - 134)
        );
        let joined: Vec<u8> = segs
            .iter()
            .flat_map(|s| s[parse_user_data_header(s).unwrap().body_at..].to_vec())
            .collect();
        assert_eq!(joined, packet);
    }

    #[test]
    fn short_packet_is_one_plain_sms_and_oversized_is_refused() {
        assert_eq!(
            command_segments(&[1, 2], 0).unwrap(),
            vec![vec![0x02, 0x70, 0x00, 1, 2]]
        );
        assert_eq!(command_segments(&[0; 137], 0).unwrap().len(), 1);
        assert_eq!(command_segments(&[0; 138], 0).unwrap().len(), 2);
        assert_eq!(
            command_segments(&[0; MAX_CONCATENATED_PACKET], 0)
                .unwrap()
                .len(),
            4
        );
        assert!(command_segments(&[0; MAX_CONCATENATED_PACKET + 1], 0).is_err());
    }

    #[test]
    fn header_elements_are_read_in_either_order() {
        let ours = parse_user_data_header(&hex!("07 00 03 05 02 01 70 00 AA")).unwrap();
        let theirs = parse_user_data_header(&hex!("07 70 00 00 03 05 02 01 AA")).unwrap();
        let sixteen = parse_user_data_header(&hex!("08 70 00 08 04 01 05 02 01 AA")).unwrap();
        for (h, reference) in [(ours, 5), (theirs, 5), (sixteen, 0x105)] {
            assert_eq!(h.packet, Some(PacketIei::Command));
            assert_eq!(
                h.concat,
                Some(Concat {
                    reference,
                    total: 2,
                    seq: 1
                })
            );
        }
        assert_eq!((ours.body_at, sixteen.body_at), (8, 9));
        // Sequence 0 or beyond the total: the element is ignored (TS 23.040).
        let h = parse_user_data_header(&hex!("05 00 03 05 02 03")).unwrap();
        assert_eq!((h.packet, h.concat), (None, None));
    }

    #[test]
    fn segment_decodes_but_is_not_a_whole_deliver() {
        let bytes = hex!("44 04 91 21 43 7F F6 32 11 13 01 00 00 00 08 05 00 03 07 02 02 AB CD");
        let seg = DeliverSegment::decode(&bytes).unwrap();
        assert_eq!(seg.originator, Address::international("1234"));
        assert_eq!(
            seg.header.concat,
            Some(Concat {
                reference: 7,
                total: 2,
                seq: 2
            })
        );
        assert_eq!((seg.header.packet, seg.body), (None, vec![0xAB, 0xCD]));
        assert_eq!(
            SecuredDeliver::decode(&bytes),
            Err(err("TP-UDH", 15, "segment of a concatenated packet"))
        );
    }

    fn iei() -> impl Strategy<Value = PacketIei> {
        prop_oneof![Just(PacketIei::Command), Just(PacketIei::Response)]
    }

    proptest! {
        #[test]
        fn deliver_round_trips(digits in "[0-9*#]{0,20}", ton in any::<u8>().prop_filter("not alphanumeric", |t| t & 0x70 != 0x50), scts in any::<[u8; 7]>(), iei in iei(), packet in proptest::collection::vec(any::<u8>(), 0..=137)) {
            let d = SecuredDeliver { originator: Address { ton_npi: ton, digits }, scts, iei, packet };
            prop_assert_eq!(SecuredDeliver::decode(&d.encode().unwrap()).unwrap(), d);
        }

        #[test]
        fn submit_round_trips(mr in any::<u8>(), digits in "[0-9]{0,20}", iei in iei(), packet in proptest::collection::vec(any::<u8>(), 0..=137)) {
            let s = SecuredSubmit { message_reference: mr, destination: Address::international(digits), iei, packet };
            prop_assert_eq!(SecuredSubmit::decode(&s.encode().unwrap()).unwrap(), s);
        }

        #[test]
        fn tpdu_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = SecuredDeliver::decode(&bytes);
            let _ = SecuredSubmit::decode(&bytes);
            let _ = DeliverSegment::decode(&bytes);
            let _ = parse_user_data_header(&bytes);
        }

        #[test]
        fn segments_fit_one_sms_and_rejoin(packet in proptest::collection::vec(any::<u8>(), 0..=MAX_CONCATENATED_PACKET), reference in any::<u8>()) {
            let segs = command_segments(&packet, reference).unwrap();
            prop_assert!(segs.len() <= usize::from(MAX_SEGMENTS));
            let mut joined = Vec::new();
            for (i, s) in segs.iter().enumerate() {
                prop_assert!(s.len() <= MAX_USER_DATA);
                let h = parse_user_data_header(s).unwrap();
                prop_assert_eq!(h.packet.is_some(), i == 0);
                if segs.len() > 1 {
                    prop_assert_eq!(h.concat, Some(Concat { reference: u16::from(reference), total: segs.len() as u8, seq: i as u8 + 1 }));
                }
                joined.extend_from_slice(&s[h.body_at..]);
            }
            prop_assert_eq!(joined, packet);
        }
    }
}
