//! Packing of 7-bit septets into octets (TS 23.038 §6.1.2.1), least significant bit first, with
//! leading fill bits so an SMS payload starts on a septet boundary after its UDH, and the USSD
//! variant (§6.1.2.3.1) that pads 7 spare bits with CR so they are not read as `@`.

use super::TextError;

/// Carriage return, the USSD padding septet.
pub const CR: u8 = 0x0D;

/// Pack septets 8-into-7 (TS 23.038 §6.1.2.1), `fill_bits` leading bits of padding (for UDH alignment).
///
/// Only the low 7 bits of each septet are used. Spare bits at the end are zero.
pub fn pack_septets(septets: &[u8], fill_bits: u8) -> Vec<u8> {
    let fill = usize::from(fill_bits);
    let total_bits = fill + 7 * septets.len();
    let mut out = vec![0u8; total_bits.div_ceil(8)];
    for (i, &s) in septets.iter().enumerate() {
        let bit = fill + 7 * i;
        let (byte, shift) = (bit / 8, bit % 8);
        let v = u16::from(s & 0x7F) << shift;
        out[byte] |= v as u8;
        // A septet starting past bit 1 of an octet spills into the next one, which exists
        // because total_bits covers this septet's last bit.
        if shift > 1 {
            out[byte + 1] |= (v >> 8) as u8;
        }
    }
    out
}

/// Unpack `count` septets from packed octets, skipping `fill_bits` leading bits.
pub fn unpack_septets(packed: &[u8], count: usize, fill_bits: u8) -> Result<Vec<u8>, TextError> {
    let fill = usize::from(fill_bits);
    let available = packed.len().saturating_mul(8);
    // Checked before allocating: `count` may come straight from a TP-UDL.
    let needed = count
        .checked_mul(7)
        .and_then(|n| n.checked_add(fill))
        .filter(|&n| n <= available);
    if needed.is_none() {
        return Err(TextError::Truncated {
            what: "packed septets",
            at: packed.len(),
        });
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let bit = fill + 7 * i;
        let (byte, shift) = (bit / 8, bit % 8);
        let lo = u16::from(packed.get(byte).copied().unwrap_or(0));
        let hi = u16::from(packed.get(byte + 1).copied().unwrap_or(0));
        out.push((((hi << 8 | lo) >> shift) & 0x7F) as u8);
    }
    Ok(out)
}

/// Pack septets for a USSD string: as [`pack_septets`] with no fill, but when the last octet has
/// 7 spare bits they hold CR instead of zeros, and a message whose real last character is CR on
/// an octet boundary gets a second CR (TS 23.038 §6.1.2.3.1).
pub fn pack_ussd(septets: &[u8]) -> Vec<u8> {
    let n = septets.len();
    if n % 8 == 0 && septets.last().is_some_and(|&s| s & 0x7F == CR) {
        // Without the extra CR the receiver would strip the wanted one as padding.
        let mut with_cr = septets.to_vec();
        with_cr.push(CR);
        return pack_septets(&with_cr, 0);
    }
    let mut packed = pack_septets(septets, 0);
    if n % 8 == 7 {
        if let Some(last) = packed.last_mut() {
            *last |= CR << 1;
        }
    }
    packed
}

/// Unpack a USSD string packed by [`pack_ussd`] (or any sender following §6.1.2.3.1): every
/// whole septet in the octets, minus a final CR when the septets end on an octet boundary.
///
/// A message of 8n septets ending in CR comes back with CR CR, as the spec intends (the
/// receiver cannot tell it from a message of 8n+1 septets ending in CR CR).
pub fn unpack_ussd(packed: &[u8]) -> Result<Vec<u8>, TextError> {
    let count = packed.len() * 8 / 7;
    let mut septets = unpack_septets(packed, count, 0)?;
    if packed.len() % 7 == 0 && septets.last() == Some(&CR) {
        septets.pop();
    }
    Ok(septets)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::text::gsm7_encode;
    use hex_literal::hex;
    use proptest::prelude::*;

    #[test]
    fn hellohello_packs_to_the_published_vector() {
        let septets = gsm7_encode("hellohello").unwrap();
        let packed = pack_septets(&septets, 0);
        assert_eq!(packed, hex!("e8329bfd4697d9ec37"));
        assert_eq!(unpack_septets(&packed, 10, 0).unwrap(), septets);
    }

    #[test]
    fn fill_bits_shift_the_payload() {
        // One fill bit after a 6-octet UDH: "A" (0x41) becomes 0x82 in the first octet.
        assert_eq!(pack_septets(&[0x41], 1), vec![0x82]);
        assert_eq!(pack_septets(&[0x7F], 2), vec![0xFC, 0x01]);
        assert_eq!(unpack_septets(&[0x82], 1, 1).unwrap(), vec![0x41]);
    }

    #[test]
    fn unpacking_more_septets_than_present_is_truncated() {
        assert_eq!(
            unpack_septets(&[0xFF; 7], 9, 0),
            Err(TextError::Truncated {
                what: "packed septets",
                at: 7
            })
        );
        assert!(unpack_septets(&[0xFF; 7], 8, 0).is_ok());
        assert!(unpack_septets(&[], usize::MAX, 7).is_err());
    }

    #[test]
    fn seven_char_ussd_gets_cr_in_the_last_octet() {
        let septets = gsm7_encode("1234567").unwrap();
        let plain = pack_septets(&septets, 0);
        let ussd = pack_ussd(&septets);
        assert_eq!(plain.len(), 7);
        assert_eq!(ussd.len(), 7);
        assert_eq!(plain[6] & 0xFE, 0);
        assert_eq!(ussd[6] >> 1, CR);
        assert_eq!(ussd[..6], plain[..6]);
        assert_eq!(unpack_ussd(&ussd).unwrap(), septets);
    }

    #[test]
    fn ussd_without_spare_septet_is_plain_packing() {
        let septets = gsm7_encode("hellohello").unwrap();
        assert_eq!(pack_ussd(&septets), pack_septets(&septets, 0));
        assert_eq!(unpack_ussd(&pack_ussd(&septets)).unwrap(), septets);
    }

    #[test]
    fn wanted_cr_on_octet_boundary_gets_a_second_cr() {
        let septets = gsm7_encode("1234567\r").unwrap();
        let packed = pack_ussd(&septets);
        assert_eq!(packed.len(), 8);
        let mut expected = septets.clone();
        expected.push(CR);
        assert_eq!(unpack_ussd(&packed).unwrap(), expected);
    }

    #[test]
    fn wanted_cr_before_padding_survives() {
        let septets = gsm7_encode("123456\r").unwrap();
        let packed = pack_ussd(&septets);
        assert_eq!(packed.len(), 7);
        assert_eq!(unpack_ussd(&packed).unwrap(), septets);
    }

    proptest! {
        #[test]
        fn pack_unpack_round_trip(
            septets in proptest::collection::vec(0u8..0x80, 0..400),
            fill in 0u8..8,
        ) {
            let packed = pack_septets(&septets, fill);
            prop_assert_eq!(packed.len(), (usize::from(fill) + 7 * septets.len()).div_ceil(8));
            prop_assert_eq!(unpack_septets(&packed, septets.len(), fill).unwrap(), septets);
        }

        #[test]
        fn ussd_round_trip(septets in proptest::collection::vec(0u8..0x80, 0..200)) {
            let packed = pack_ussd(&septets);
            let back = unpack_ussd(&packed).unwrap();
            if septets.len() % 8 == 0 && septets.last() == Some(&CR) {
                prop_assert_eq!(&back[..septets.len()], &septets[..]);
                prop_assert_eq!(back.last(), Some(&CR));
            } else {
                prop_assert_eq!(back, septets);
            }
        }

        #[test]
        fn unpackers_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            count in 0usize..400,
            fill in any::<u8>(),
        ) {
            let _ = unpack_septets(&bytes, count, fill);
            let _ = unpack_ussd(&bytes);
        }
    }
}
