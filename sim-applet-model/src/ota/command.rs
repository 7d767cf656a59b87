//! Command packets (TS 102 225 §5.1): build them (`CommandPacket::encode`) and take them apart
//! (`decode_command`).
//!
//! ```text
//! CPL(2) CHL(1) SPI(2) KIc(1) KID(1) TAR(3) | CNTR(5) PCNTR(1) CC(8 or 0) | data | padding
//!                                           `------------ ciphered (CBC, zero IV) ---------'
//! ```
//! The CC covers every octet except itself (not the SMS user data header). The padding brings
//! the ciphered part to a whole number of blocks, is counted in PCNTR and is covered by the CC.
//! A receiver verifies the CC before it trusts PCNTR and never looks at the padding values.

use super::counter::Counter;
use super::crypto::{self, CcCheck, CC_LEN};
use super::error::OtaError;
use super::keys::{KeyLookup, KeySet, Kic, Kid};
use super::spi::{ChecksumKind, Spi};

/// User data header announcing a command packet (UDHL 2, IEI 0x70, IEDL 0).
pub const COMMAND_UDH: [u8; 3] = [0x02, 0x70, 0x00];

/// Offset of CNTR: CPL(2) CHL(1) SPI(2) KIc(1) KID(1) TAR(3).
const SECURED_AT: usize = 10;
/// CNTR(5) PCNTR(1).
const CNTR_PCNTR_LEN: usize = 6;
/// CHL without the CC.
const CHL_BASE: usize = 13;

/// The part of the header a receiver needs to find its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommandHeader {
    /// Security parameter indicator.
    pub spi: Spi,
    /// Ciphering key identifier.
    pub kic: Kic,
    /// Checksum key identifier.
    pub kid: Kid,
    /// Toolkit application reference.
    pub tar: [u8; 3],
}

/// A command packet in the clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandPacket {
    /// Security parameter indicator.
    pub spi: Spi,
    /// Ciphering key identifier.
    pub kic: Kic,
    /// Checksum key identifier.
    pub kid: Kid,
    /// Toolkit application reference.
    pub tar: [u8; 3],
    /// Replay counter.
    pub counter: Counter,
    /// Application data (for RFM/RAM, APDUs; for our applet, its messages).
    pub data: Vec<u8>,
}

/// A command packet as received: the clear packet, how much padding it carried and the checksum
/// comparison (when the SPI asks for a CC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedCommand {
    /// The packet, padding removed.
    pub packet: CommandPacket,
    /// PCNTR.
    pub padding_len: u8,
    /// The checksum comparison; `None` when the SPI asks for no checksum.
    pub cc: Option<CcCheck>,
}

/// Octets of checksum the SPI asks for.
pub(crate) fn checksum_len(kind: ChecksumKind) -> Result<usize, OtaError> {
    match kind {
        ChecksumKind::None => Ok(0),
        ChecksumKind::Cc => Ok(CC_LEN),
        ChecksumKind::Rc | ChecksumKind::Ds => Err(OtaError::UnsupportedChecksum { kind }),
    }
}

/// Keeps the data between `rest_at` and the `pcntr` octets of padding at the end. The padding
/// values are never read: real packets pad with zeros or with `80 00 ..`.
pub(crate) fn strip_padding(
    plain: &mut Vec<u8>,
    rest_at: usize,
    pcntr: u8,
) -> Result<(), OtaError> {
    let available = plain.len() - rest_at;
    let data_len = available
        .checked_sub(usize::from(pcntr))
        .ok_or(OtaError::PaddingTooLong { pcntr, available })?;
    plain.truncate(rest_at + data_len);
    plain.drain(..rest_at);
    Ok(())
}

/// Padding that brings `len` to a multiple of `block`.
pub(crate) fn padding_for(len: usize, block: usize) -> usize {
    (block - len % block) % block
}

/// Borrow `n` octets at `at`, or say which field is cut short and where (`base` is the offset
/// of `b` in the caller's input).
pub(crate) fn take<'a>(
    b: &'a [u8],
    at: usize,
    n: usize,
    field: &'static str,
    base: usize,
) -> Result<&'a [u8], OtaError> {
    b.get(at..at.saturating_add(n)).ok_or(OtaError::Truncated {
        field,
        at: base + at,
    })
}

impl CommandPacket {
    /// The header fields a receiver looks keys up with.
    pub fn header(&self) -> CommandHeader {
        CommandHeader {
            spi: self.spi,
            kic: self.kic,
            kid: self.kid,
            tar: self.tar,
        }
    }

    /// Encode `CPL .. padding`: zero padding when ciphered, CC per the SPI, then ciphering.
    pub fn encode(&self, keys: &KeySet) -> Result<Vec<u8>, OtaError> {
        let cc_len = checksum_len(self.spi.checksum)?;
        let block = if self.spi.ciphered {
            crypto::kic_block_size(self.kic)?
        } else {
            1
        };
        let body_len = CNTR_PCNTR_LEN + cc_len + self.data.len();
        let pad = padding_for(body_len, block);
        let cpl = SECURED_AT - 2 + body_len + pad;
        if cpl > usize::from(u16::MAX) {
            return Err(OtaError::TooLong {
                len: cpl,
                max: usize::from(u16::MAX),
            });
        }
        let mut out = Vec::with_capacity(2 + cpl);
        out.extend_from_slice(&(cpl as u16).to_be_bytes());
        out.push((CHL_BASE + cc_len) as u8);
        out.extend_from_slice(&self.spi.to_bytes());
        out.push(self.kic.to_byte());
        out.push(self.kid.to_byte());
        out.extend_from_slice(&self.tar);
        out.extend_from_slice(&self.counter.to_bytes());
        out.push(pad as u8);
        let cc_at = out.len();
        out.resize(cc_at + cc_len, 0);
        out.extend_from_slice(&self.data);
        out.resize(out.len() + pad, 0);
        if cc_len > 0 {
            let cc = crypto::cc_over(
                self.kid,
                &keys.kid_key,
                &[&out[..cc_at], &out[cc_at + cc_len..]],
            )?;
            out[cc_at..cc_at + cc_len].copy_from_slice(&cc);
        }
        if self.spi.ciphered {
            crypto::encrypt(self.kic, &keys.kic_key, &mut out[SECURED_AT..])?;
        }
        Ok(out)
    }

    /// [`CommandPacket::encode`] behind the `02 70 00` user data header, ready for SMS user data.
    pub fn encode_sms(&self, keys: &KeySet) -> Result<Vec<u8>, OtaError> {
        let packet = self.encode(keys)?;
        let mut out = Vec::with_capacity(COMMAND_UDH.len() + packet.len());
        out.extend_from_slice(&COMMAND_UDH);
        out.extend_from_slice(&packet);
        Ok(out)
    }
}

/// Decode a command packet (`CPL .. padding`, no user data header) and verify its checksum.
pub fn decode_command(bytes: &[u8], keys: &impl KeyLookup) -> Result<DecodedCommand, OtaError> {
    decode_inner(bytes, 0, keys, true)
}

/// Decode SMS user data: the `02 70 00` header, then a command packet.
pub fn decode_command_sms(bytes: &[u8], keys: &impl KeyLookup) -> Result<DecodedCommand, OtaError> {
    let udh = take(bytes, 0, COMMAND_UDH.len(), "UDH", 0)?;
    if udh != COMMAND_UDH {
        return Err(OtaError::UnexpectedUdh {
            expected: COMMAND_UDH,
            found: udh.to_vec(),
        });
    }
    decode_inner(&bytes[COMMAND_UDH.len()..], COMMAND_UDH.len(), keys, true)
}

/// Like [`decode_command`] but a wrong checksum is reported in [`DecodedCommand::cc`] instead
/// of failing, for tools that show both values. Never act on what it returns.
pub fn inspect_command(bytes: &[u8], keys: &impl KeyLookup) -> Result<DecodedCommand, OtaError> {
    decode_inner(bytes, 0, keys, false)
}

fn decode_inner(
    bytes: &[u8],
    base: usize,
    keys: &impl KeyLookup,
    require_valid_cc: bool,
) -> Result<DecodedCommand, OtaError> {
    let cpl = take(bytes, 0, 2, "CPL", base)?;
    let cpl = usize::from(u16::from_be_bytes([cpl[0], cpl[1]]));
    let actual = bytes.len() - 2;
    if cpl != actual {
        return Err(OtaError::LengthMismatch {
            field: "CPL",
            declared: cpl,
            actual,
        });
    }
    let chl = take(bytes, 2, 1, "CHL", base)?[0];
    let spi = take(bytes, 3, 2, "SPI", base)?;
    let spi = Spi::from_bytes([spi[0], spi[1]]);
    let kic = Kic::from_byte(take(bytes, 5, 1, "KIc", base)?[0]);
    let kid = Kid::from_byte(take(bytes, 6, 1, "KID", base)?[0]);
    let tar_octets = take(bytes, 7, 3, "TAR", base)?;
    let tar = [tar_octets[0], tar_octets[1], tar_octets[2]];

    let cc_len = checksum_len(spi.checksum)?;
    if usize::from(chl) != CHL_BASE + cc_len {
        return Err(OtaError::HeaderLength {
            field: "CHL",
            at: base + 2,
            expected: CHL_BASE + cc_len,
            got: usize::from(chl),
        });
    }
    let header = CommandHeader { spi, kic, kid, tar };
    let keys = keys.key_set(&header).ok_or(OtaError::UnknownTar { tar })?;

    // Bounded by the input length, which CPL was checked against.
    let mut plain = bytes[SECURED_AT..].to_vec();
    if spi.ciphered {
        let block = crypto::kic_block_size(kic)?;
        if plain.len() % block != 0 {
            return Err(OtaError::NotBlockAligned {
                at: base + SECURED_AT,
                len: plain.len(),
                block,
            });
        }
        crypto::decrypt(kic, &keys.kic_key, &mut plain)?;
    }
    let counter = take(&plain, 0, 5, "CNTR", base + SECURED_AT)?;
    let counter = Counter::from_bytes([counter[0], counter[1], counter[2], counter[3], counter[4]]);
    let pcntr = take(&plain, 5, 1, "PCNTR", base + SECURED_AT)?[0];
    let received = take(&plain, CNTR_PCNTR_LEN, cc_len, "CC", base + SECURED_AT)?;
    let rest_at = CNTR_PCNTR_LEN + cc_len;

    let cc = if cc_len > 0 {
        let computed = crypto::cc_over(
            kid,
            &keys.kid_key,
            &[
                &bytes[..SECURED_AT],
                &plain[..CNTR_PCNTR_LEN],
                &plain[rest_at..],
            ],
        )?;
        let mut r = [0u8; CC_LEN];
        r.copy_from_slice(received);
        let check = crypto::compare(computed, r);
        if require_valid_cc && !check.valid {
            return Err(OtaError::CcMismatch);
        }
        Some(check)
    } else {
        None
    };

    strip_padding(&mut plain, rest_at, pcntr)?;
    Ok(DecodedCommand {
        packet: CommandPacket {
            spi,
            kic,
            kid,
            tar,
            counter,
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
    use crate::ota::keys::Algorithm;
    use hex_literal::hex;

    const APDU: [u8; 7] = hex!("00a40004023f00");
    const TAR: [u8; 3] = hex!("b00011");

    pub(crate) fn tdes_keys() -> KeySet {
        KeySet {
            kic_key: hex!("300102030405060708090a0b0c0d0e0f").to_vec(),
            kid_key: hex!("301102030405060708090a0b0c0d0e0f").to_vec(),
        }
    }

    fn aes_keys() -> KeySet {
        KeySet {
            kic_key: hex!("200102030405060708090a0b0c0d0e0f").to_vec(),
            kid_key: hex!("201102030405060708090a0b0c0d0e0f").to_vec(),
        }
    }

    fn pysim_packet(key_octet: u8) -> CommandPacket {
        CommandPacket {
            spi: Spi::from_bytes([0x06, 0x19]),
            kic: Kic::from_byte(key_octet),
            kid: Kid::from_byte(key_octet),
            tar: TAR,
            counter: Counter::default(),
            data: APDU.to_vec(),
        }
    }

    const TDES_VECTOR: [u8; 34] =
        hex!("00201506193535b00011ae733256918d050b87c94fbfe12e4dc402f262c41cf67f2f");
    const AES_VECTOR: [u8; 42] = hex!(
        "00281506192222b00011e87cceebb2d93083011ce294f93fc4d8de80da1abae8c37ca3e72ec4432e5058"
    );

    #[test]
    fn pysim_3des_command_vector_encodes_byte_for_byte() {
        let out = pysim_packet(0x35).encode(&tdes_keys()).unwrap();
        assert_eq!(out, TDES_VECTOR);
    }

    #[test]
    fn pysim_3des_command_vector_decodes() {
        let d = decode_command(&TDES_VECTOR, &tdes_keys()).unwrap();
        assert_eq!(d.packet, pysim_packet(0x35));
        assert_eq!(d.padding_len, 3);
        let cc = d.cc.unwrap();
        assert!(cc.valid);
        assert_eq!(cc.received, hex!("04ceaed74c102a01"));
    }

    #[test]
    fn pysim_aes_command_vector_encodes_byte_for_byte() {
        let out = pysim_packet(0x22).encode(&aes_keys()).unwrap();
        assert_eq!(out, AES_VECTOR);
    }

    #[test]
    fn pysim_aes_command_vector_decodes() {
        let d = decode_command(&AES_VECTOR, &aes_keys()).unwrap();
        assert_eq!(d.packet, pysim_packet(0x22));
        assert_eq!(d.padding_len, 11);
        assert_eq!(d.cc.unwrap().received, hex!("ecbab1f8f55502c5"));
    }

    #[test]
    fn sms_form_carries_the_0270_header() {
        let sms = pysim_packet(0x35).encode_sms(&tdes_keys()).unwrap();
        assert_eq!(&sms[..3], &COMMAND_UDH);
        assert_eq!(&sms[3..], &TDES_VECTOR);
        let d = decode_command_sms(&sms, &tdes_keys()).unwrap();
        assert_eq!(d.packet, pysim_packet(0x35));
        // The bare decoder refuses the header form and vice versa.
        assert!(decode_command(&sms, &tdes_keys()).is_err());
        assert_eq!(
            decode_command_sms(&TDES_VECTOR, &tdes_keys()),
            Err(OtaError::UnexpectedUdh {
                expected: COMMAND_UDH,
                found: TDES_VECTOR[..3].to_vec()
            })
        );
    }

    #[test]
    fn wrong_key_gives_cc_mismatch_and_inspect_shows_both_values() {
        let mut keys = tdes_keys();
        // Not the low bit: DES ignores the parity bit of each key octet.
        keys.kid_key[15] ^= 0x80;
        assert_eq!(
            decode_command(&TDES_VECTOR, &keys),
            Err(OtaError::CcMismatch)
        );
        let d = inspect_command(&TDES_VECTOR, &keys).unwrap();
        let cc = d.cc.unwrap();
        assert!(!cc.valid);
        assert_eq!(cc.received, hex!("04ceaed74c102a01"));
        assert_ne!(cc.computed, cc.received);
    }

    #[test]
    fn unknown_tar_is_reported_with_the_tar() {
        let lookup = |h: &CommandHeader| (h.tar == [1, 2, 3]).then(tdes_keys);
        assert_eq!(
            decode_command(&TDES_VECTOR, &lookup),
            Err(OtaError::UnknownTar { tar: TAR })
        );
    }

    #[test]
    fn cpl_must_match_the_octets_that_follow() {
        let mut long = TDES_VECTOR.to_vec();
        long.push(0);
        assert_eq!(
            decode_command(&long, &tdes_keys()),
            Err(OtaError::LengthMismatch {
                field: "CPL",
                declared: 32,
                actual: 33
            })
        );
        assert!(matches!(
            decode_command(&TDES_VECTOR[..20], &tdes_keys()),
            Err(OtaError::LengthMismatch { .. })
        ));
        assert_eq!(
            decode_command(&[0x00], &tdes_keys()),
            Err(OtaError::Truncated {
                field: "CPL",
                at: 0
            })
        );
        assert_eq!(
            decode_command_sms(&[0x02, 0x70, 0x00, 0x00], &tdes_keys()),
            Err(OtaError::Truncated {
                field: "CPL",
                at: 3
            })
        );
    }

    #[test]
    fn header_fields_cut_short_are_named() {
        // CPL 4: CHL SPI KIc only.
        let b = hex!("000415061935");
        assert_eq!(
            decode_command(&b, &tdes_keys()),
            Err(OtaError::Truncated {
                field: "KID",
                at: 6
            })
        );
        let b = hex!("00071506193535b000");
        assert_eq!(
            decode_command(&b, &tdes_keys()),
            Err(OtaError::Truncated {
                field: "TAR",
                at: 7
            })
        );
        // A header with nothing after it: CNTR is named at its offset.
        let b = hex!("00080d00003535b00011");
        assert_eq!(
            decode_command(&b, &tdes_keys()),
            Err(OtaError::Truncated {
                field: "CNTR",
                at: 10
            })
        );
    }

    #[test]
    fn ciphered_part_must_be_whole_blocks() {
        let mut b = TDES_VECTOR[..TDES_VECTOR.len() - 1].to_vec();
        b[1] -= 1;
        assert_eq!(
            decode_command(&b, &tdes_keys()),
            Err(OtaError::NotBlockAligned {
                at: 10,
                len: 23,
                block: 8
            })
        );
    }

    #[test]
    fn chl_must_match_the_checksum_length() {
        let mut b = TDES_VECTOR.to_vec();
        b[2] = 13;
        assert_eq!(
            decode_command(&b, &tdes_keys()),
            Err(OtaError::HeaderLength {
                field: "CHL",
                at: 2,
                expected: 21,
                got: 13
            })
        );
    }

    #[test]
    fn redundancy_checks_and_signatures_are_refused() {
        let mut p = pysim_packet(0x35);
        p.spi.checksum = ChecksumKind::Rc;
        assert_eq!(
            p.encode(&tdes_keys()),
            Err(OtaError::UnsupportedChecksum {
                kind: ChecksumKind::Rc
            })
        );
        let mut b = TDES_VECTOR.to_vec();
        b[3] = 0x07; // DS + ciphering
        assert_eq!(
            decode_command(&b, &tdes_keys()),
            Err(OtaError::UnsupportedChecksum {
                kind: ChecksumKind::Ds
            })
        );
    }

    /// An unciphered packet with a valid CC, built by hand so that PCNTR and the padding can
    /// be anything.
    fn hand_built(pcntr: u8, tail: &[u8]) -> Vec<u8> {
        let kid = Kid::new(3, Algorithm::TripleDes2Key);
        let cpl = (8 + 6 + 8 + tail.len()) as u16;
        let mut b = cpl.to_be_bytes().to_vec();
        b.extend_from_slice(&[21, 0x02, 0x00, 0x00, kid.to_byte()]);
        b.extend_from_slice(&TAR);
        b.extend_from_slice(&[0, 0, 0, 0, 7, pcntr]);
        let mut input = b.clone();
        input.extend_from_slice(tail);
        let cc = crate::ota::compute_cc(kid, &tdes_keys().kid_key, &input).unwrap();
        b.extend_from_slice(&cc);
        b.extend_from_slice(tail);
        b
    }

    #[test]
    fn padding_is_stripped_by_count_whatever_its_value() {
        let b = hand_built(3, &hex!("0102 800000"));
        let d = decode_command(&b, &tdes_keys()).unwrap();
        assert_eq!(d.packet.data, [1, 2]);
        assert_eq!(d.packet.counter.value(), 7);
        assert_eq!(d.padding_len, 3);
    }

    #[test]
    fn pcntr_larger_than_the_data_is_an_error() {
        let b = hand_built(6, &hex!("0102 800000"));
        assert_eq!(
            decode_command(&b, &tdes_keys()),
            Err(OtaError::PaddingTooLong {
                pcntr: 6,
                available: 5
            })
        );
    }

    #[test]
    fn unciphered_packets_are_not_padded() {
        let mut p = pysim_packet(0x35);
        p.spi.ciphered = false;
        let out = p.encode(&tdes_keys()).unwrap();
        assert_eq!(out.len(), 2 + 8 + 6 + 8 + APDU.len());
        assert_eq!(out[15], 0);
        assert_eq!(&out[out.len() - 7..], &APDU);
        assert_eq!(decode_command(&out, &tdes_keys()).unwrap().packet, p);
    }

    #[test]
    fn oversized_data_is_refused() {
        let mut p = pysim_packet(0x22);
        p.data = vec![0; 70_000];
        assert!(matches!(
            p.encode(&aes_keys()),
            Err(OtaError::TooLong { .. })
        ));
    }
}
