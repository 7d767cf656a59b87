//! The two SMS TPDUs (TS 23.040) that carry secured packets (TS 31.115): SMS-DELIVER inside the
//! SMS-PP DOWNLOAD envelope (gateway -> card) and SMS-SUBMIT inside SEND SHORT MESSAGE (card ->
//! gateway). Both have TP-PID 0x7F (SIM data download), TP-DCS 0xF6 (8-bit, class 2), TP-UDHI
//! set, and a user data header holding only the packet IEI (`02 70 00` command packet,
//! `02 71 00` response packet). `packet` is everything after that header.
//!
//! Concatenated secured packets (IEI 0x00 beside 0x70) are not modelled: decoding accepts and
//! drops other header elements, encoding writes a single SMS.

use nom::bytes::complete::take;
use nom::number::complete::u8 as octet;
use nom::IResult;

use super::objects::Address;
use super::CatError;

/// TP-PID: (U)SIM data download.
pub const PID_SIM_DATA_DOWNLOAD: u8 = 0x7F;
/// TP-DCS: 8-bit data, class 2 (SIM specific).
pub const DCS_8BIT_CLASS2: u8 = 0xF6;
/// Most secured-packet octets one SMS carries after the 3-octet header.
pub const MAX_SINGLE_PACKET: usize = 137;
const MAX_TP_DIGITS: usize = 20;

/// The user data header element that says what the user data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketIei {
    /// 0x70: command packet.
    Command,
    /// 0x71: response packet.
    Response,
}

impl PacketIei {
    pub fn octet(self) -> u8 {
        match self {
            PacketIei::Command => 0x70,
            PacketIei::Response => 0x71,
        }
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
        let ud = self.rest;
        let (&udhl, after) =
            ud.split_first()
                .ok_or(err("TP-UDHL", ud_at, "user data header missing"))?;
        let header = after.get(..usize::from(udhl)).ok_or(err(
            "TP-UDHL",
            ud_at,
            "header longer than the user data",
        ))?;
        let mut iei = None;
        let mut ies = header;
        while let [id, len, rest @ ..] = ies {
            let data = rest.get(..usize::from(*len)).ok_or(err(
                "TP-UDH",
                ud_at,
                "information element truncated",
            ))?;
            match id {
                0x70 if data.is_empty() => iei = Some(PacketIei::Command),
                0x71 if data.is_empty() => iei = Some(PacketIei::Response),
                _ => {}
            }
            ies = &rest[data.len()..];
        }
        if !ies.is_empty() {
            return Err(err("TP-UDH", ud_at, "information element truncated"));
        }
        let iei = iei.ok_or(err("TP-UDH", ud_at, "no secured packet element (70 or 71)"))?;
        self.rest = &[];
        Ok((iei, after[usize::from(udhl)..].to_vec()))
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
        }
    }
}
