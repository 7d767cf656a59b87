//! Response packets, the proof of receipt (TS 102 225 §5.2):
//!
//! ```text
//! 02 71 00 | RPL(2) RHL(1) TAR(3) | CNTR(5) PCNTR(1) RSC(1) CC(8 or 0) | data | padding
//!                                   `---------- ciphered (CBC, zero IV) ----------------'
//! ```
//! Unlike the command packet, the CC covers the `02 71 00` user data header. Whether the PoR is
//! ciphered and checksummed comes from SPI octet 2 of the command it answers, with the command's
//! KIc/KID keys ([`PorSecurity`]).

use super::command::{padding_for, strip_padding, take, CommandHeader};
use super::counter::Counter;
use super::crypto::{self, CcCheck, CC_LEN};
use super::error::{OtaError, ResponseStatus};
use super::keys::{KeySet, Kic, Kid};
use super::spi::ChecksumKind;

/// User data header announcing a response packet (UDHL 2, IEI 0x71, IEDL 0).
pub const RESPONSE_UDH: [u8; 3] = [0x02, 0x71, 0x00];

/// RHL without the CC: TAR(3) CNTR(5) PCNTR(1) RSC(1).
const RHL_BASE: usize = 10;
/// Offset of CNTR after RPL(2) RHL(1) TAR(3).
const SECURED_AT: usize = 6;
/// CNTR(5) PCNTR(1) RSC(1).
const CNTR_PCNTR_RSC_LEN: usize = 7;

/// How a PoR is secured: SPI octet 2 of the command, with the command's KIc and KID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PorSecurity {
    /// Integrity check on the PoR.
    pub checksum: ChecksumKind,
    /// PoR ciphered.
    pub ciphered: bool,
    /// Ciphering key identifier (used only when ciphered).
    pub kic: Kic,
    /// Checksum key identifier (used only with a CC).
    pub kid: Kid,
}

impl PorSecurity {
    /// The security a PoR to this command carries.
    pub fn for_command(header: &CommandHeader) -> Self {
        PorSecurity {
            checksum: header.spi.por_checksum,
            ciphered: header.spi.por_ciphered,
            kic: header.kic,
            kid: header.kid,
        }
    }

    /// No ciphering, no checksum.
    pub fn none() -> Self {
        PorSecurity {
            checksum: ChecksumKind::None,
            ciphered: false,
            kic: Kic::from_byte(0),
            kid: Kid::from_byte(0),
        }
    }
}

/// A proof of receipt in the clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponsePacket {
    /// TAR of the command answered.
    pub tar: [u8; 3],
    /// Counter (the command's).
    pub counter: Counter,
    /// Response status code.
    pub status: ResponseStatus,
    /// Additional response data (for RFM/RAM, the APDU results).
    pub data: Vec<u8>,
}

/// A response packet as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedResponse {
    /// The packet, padding removed.
    pub packet: ResponsePacket,
    /// PCNTR.
    pub padding_len: u8,
    /// The checksum comparison, when the PoR carries a CC.
    pub cc: Option<CcCheck>,
}

fn checksum_len(kind: ChecksumKind) -> Result<usize, OtaError> {
    super::command::checksum_len(kind)
}

impl ResponsePacket {
    /// Encode with the `02 71 00` header: zero padding when ciphered, CC over the header and
    /// the clear packet, then ciphering.
    pub fn encode(&self, sec: &PorSecurity, keys: &KeySet) -> Result<Vec<u8>, OtaError> {
        let cc_len = checksum_len(sec.checksum)?;
        let block = if sec.ciphered {
            crypto::kic_block_size(sec.kic)?
        } else {
            1
        };
        let body_len = CNTR_PCNTR_RSC_LEN + cc_len + self.data.len();
        let pad = padding_for(body_len, block);
        let rpl = SECURED_AT - 2 + body_len + pad;
        if rpl > usize::from(u16::MAX) {
            return Err(OtaError::TooLong {
                len: rpl,
                max: usize::from(u16::MAX),
            });
        }
        let mut out = Vec::with_capacity(RESPONSE_UDH.len() + 2 + rpl);
        out.extend_from_slice(&RESPONSE_UDH);
        out.extend_from_slice(&(rpl as u16).to_be_bytes());
        out.push((RHL_BASE + cc_len) as u8);
        out.extend_from_slice(&self.tar);
        out.extend_from_slice(&self.counter.to_bytes());
        out.push(pad as u8);
        out.push(self.status.to_byte());
        let cc_at = out.len();
        out.resize(cc_at + cc_len, 0);
        out.extend_from_slice(&self.data);
        out.resize(out.len() + pad, 0);
        if cc_len > 0 {
            let cc = crypto::cc_over(
                sec.kid,
                &keys.kid_key,
                &[&out[..cc_at], &out[cc_at + cc_len..]],
            )?;
            out[cc_at..cc_at + cc_len].copy_from_slice(&cc);
        }
        if sec.ciphered {
            let at = RESPONSE_UDH.len() + SECURED_AT;
            crypto::encrypt(sec.kic, &keys.kic_key, &mut out[at..])?;
        }
        Ok(out)
    }

    /// [`ResponsePacket::encode`] without the user data header (which the CC still covers).
    pub fn encode_no_udh(&self, sec: &PorSecurity, keys: &KeySet) -> Result<Vec<u8>, OtaError> {
        let mut out = self.encode(sec, keys)?;
        out.drain(..RESPONSE_UDH.len());
        Ok(out)
    }
}

/// Decode SMS user data holding a PoR: `02 71 00`, then `RPL .. padding`; verify the CC.
pub fn decode_response(
    bytes: &[u8],
    sec: &PorSecurity,
    keys: &KeySet,
) -> Result<DecodedResponse, OtaError> {
    let udh = take(bytes, 0, RESPONSE_UDH.len(), "UDH", 0)?;
    if udh != RESPONSE_UDH {
        return Err(OtaError::UnexpectedUdh {
            expected: RESPONSE_UDH,
            found: udh.to_vec(),
        });
    }
    decode_body(&bytes[RESPONSE_UDH.len()..], RESPONSE_UDH.len(), sec, keys)
}

/// Decode a PoR whose user data header was already removed (`RPL .. padding`); the CC is
/// computed with the standard `02 71 00` header in front, as the sender did.
pub fn decode_response_no_udh(
    bytes: &[u8],
    sec: &PorSecurity,
    keys: &KeySet,
) -> Result<DecodedResponse, OtaError> {
    decode_body(bytes, 0, sec, keys)
}

fn decode_body(
    body: &[u8],
    base: usize,
    sec: &PorSecurity,
    keys: &KeySet,
) -> Result<DecodedResponse, OtaError> {
    let rpl = take(body, 0, 2, "RPL", base)?;
    let rpl = usize::from(u16::from_be_bytes([rpl[0], rpl[1]]));
    let actual = body.len() - 2;
    if rpl != actual {
        return Err(OtaError::LengthMismatch {
            field: "RPL",
            declared: rpl,
            actual,
        });
    }
    let rhl = usize::from(take(body, 2, 1, "RHL", base)?[0]);
    let tar_octets = take(body, 3, 3, "TAR", base)?;
    let tar = [tar_octets[0], tar_octets[1], tar_octets[2]];
    let cc_len = checksum_len(sec.checksum)?;
    if rhl != RHL_BASE + cc_len {
        return Err(OtaError::HeaderLength {
            field: "RHL",
            at: base + 2,
            expected: RHL_BASE + cc_len,
            got: rhl,
        });
    }

    // Bounded by the input length, which RPL was checked against.
    let mut plain = body[SECURED_AT..].to_vec();
    if sec.ciphered {
        let block = crypto::kic_block_size(sec.kic)?;
        if plain.len() % block != 0 {
            return Err(OtaError::NotBlockAligned {
                at: base + SECURED_AT,
                len: plain.len(),
                block,
            });
        }
        crypto::decrypt(sec.kic, &keys.kic_key, &mut plain)?;
    }
    let at = base + SECURED_AT;
    let c = take(&plain, 0, 5, "CNTR", at)?;
    let counter = Counter::from_bytes([c[0], c[1], c[2], c[3], c[4]]);
    let pcntr = take(&plain, 5, 1, "PCNTR", at)?[0];
    let status = ResponseStatus::from_byte(take(&plain, 6, 1, "RSC", at)?[0]);
    let received = take(&plain, CNTR_PCNTR_RSC_LEN, cc_len, "CC", at)?;
    let rest_at = CNTR_PCNTR_RSC_LEN + cc_len;

    let cc = if cc_len > 0 {
        let computed = crypto::cc_over(
            sec.kid,
            &keys.kid_key,
            &[
                &RESPONSE_UDH,
                &body[..SECURED_AT],
                &plain[..CNTR_PCNTR_RSC_LEN],
                &plain[rest_at..],
            ],
        )?;
        let mut r = [0u8; CC_LEN];
        r.copy_from_slice(received);
        let check = crypto::compare(computed, r);
        if !check.valid {
            return Err(OtaError::CcMismatch);
        }
        Some(check)
    } else {
        None
    };

    strip_padding(&mut plain, rest_at, pcntr)?;
    Ok(DecodedResponse {
        packet: ResponsePacket {
            tar,
            counter,
            status,
            data: plain,
        },
        padding_len: pcntr,
        cc,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ota::spi::Spi;
    use hex_literal::hex;

    const POR_VECTOR: [u8; 33] =
        hex!("027100001c12b000118bb989492c632529326a2f4681feb37c825bc9021c9f6d0b");

    fn tdes_keys() -> KeySet {
        KeySet {
            kic_key: hex!("300102030405060708090a0b0c0d0e0f").to_vec(),
            kid_key: hex!("301102030405060708090a0b0c0d0e0f").to_vec(),
        }
    }

    fn pysim_security() -> PorSecurity {
        PorSecurity::for_command(&CommandHeader {
            spi: Spi::from_bytes([0x06, 0x19]),
            kic: Kic::from_byte(0x35),
            kid: Kid::from_byte(0x35),
            tar: hex!("b00011"),
        })
    }

    fn pysim_por() -> ResponsePacket {
        ResponsePacket {
            tar: hex!("b00011"),
            counter: Counter::default(),
            status: ResponseStatus::PorOk,
            data: hex!("016132").to_vec(),
        }
    }

    #[test]
    fn pysim_3des_por_vector_decodes() {
        let d = decode_response(&POR_VECTOR, &pysim_security(), &tdes_keys()).unwrap();
        assert_eq!(d.packet, pysim_por());
        assert_eq!(d.packet.status, ResponseStatus::PorOk);
        assert_eq!(d.packet.data, hex!("016132"));
        assert_eq!(d.padding_len, 6);
        assert!(d.cc.unwrap().valid);
    }

    #[test]
    fn pysim_3des_por_vector_encodes_byte_for_byte() {
        let out = pysim_por().encode(&pysim_security(), &tdes_keys()).unwrap();
        assert_eq!(out, POR_VECTOR);
    }

    #[test]
    fn por_without_header_still_checks_the_header_in_the_cc() {
        let d = decode_response_no_udh(&POR_VECTOR[3..], &pysim_security(), &tdes_keys()).unwrap();
        assert_eq!(d.packet, pysim_por());
        let bare = pysim_por()
            .encode_no_udh(&pysim_security(), &tdes_keys())
            .unwrap();
        assert_eq!(bare, POR_VECTOR[3..]);
    }

    #[test]
    fn por_cc_mismatch_is_detected() {
        let mut keys = tdes_keys();
        keys.kid_key[0] ^= 0x80;
        assert_eq!(
            decode_response(&POR_VECTOR, &pysim_security(), &keys),
            Err(OtaError::CcMismatch)
        );
    }

    #[test]
    fn por_header_errors_name_the_field() {
        assert!(matches!(
            decode_response(&hex!("027000"), &pysim_security(), &tdes_keys()),
            Err(OtaError::UnexpectedUdh { .. })
        ));
        assert_eq!(
            decode_response(&hex!("027100 00"), &pysim_security(), &tdes_keys()),
            Err(OtaError::Truncated {
                field: "RPL",
                at: 3
            })
        );
        assert_eq!(
            decode_response(&POR_VECTOR, &PorSecurity::none(), &tdes_keys()),
            Err(OtaError::HeaderLength {
                field: "RHL",
                at: 5,
                expected: 10,
                got: 18
            })
        );
    }

    #[test]
    fn unsecured_por_round_trips_with_a_reserved_status() {
        let p = ResponsePacket {
            tar: [1, 2, 3],
            counter: Counter::new(42).unwrap(),
            status: ResponseStatus::Reserved(0x42),
            data: vec![],
        };
        let out = p.encode(&PorSecurity::none(), &KeySet::default()).unwrap();
        assert_eq!(out, hex!("027100 000b 0a 010203 000000002a 00 42"));
        let d = decode_response(&out, &PorSecurity::none(), &KeySet::default()).unwrap();
        assert_eq!(d.packet, p);
        assert_eq!(d.cc, None);
    }
}
