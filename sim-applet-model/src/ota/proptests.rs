//! Property tests across the OTA module: round trips over every supported SPI/KIc/KID
//! combination, single-bit corruption, and decoders fed arbitrary bytes.

use proptest::prelude::*;

use super::*;

/// (algorithm, key length) pairs we implement.
fn cipher_choice() -> impl Strategy<Value = (Algorithm, usize)> {
    prop_oneof![
        Just((Algorithm::TripleDes2Key, 16)),
        Just((Algorithm::TripleDes3Key, 24)),
        Just((Algorithm::Aes, 16)),
        Just((Algorithm::Aes, 24)),
        Just((Algorithm::Aes, 32)),
    ]
}

fn checksum() -> impl Strategy<Value = ChecksumKind> {
    prop_oneof![Just(ChecksumKind::None), Just(ChecksumKind::Cc)]
}

fn policy() -> impl Strategy<Value = CounterPolicy> {
    prop_oneof![
        Just(CounterPolicy::NoCounter),
        Just(CounterPolicy::Present),
        Just(CounterPolicy::Higher),
        Just(CounterPolicy::OneHigher),
    ]
}

fn por() -> impl Strategy<Value = PorRequired> {
    prop_oneof![
        Just(PorRequired::None),
        Just(PorRequired::Required),
        Just(PorRequired::OnError),
    ]
}

prop_compose! {
    fn spi()(
        checksum in checksum(),
        ciphered in any::<bool>(),
        counter in policy(),
        por in por(),
        por_checksum in checksum(),
        por_ciphered in any::<bool>(),
        por_via_sms_submit in any::<bool>(),
        r1 in any::<u8>(),
        r2 in any::<u8>(),
    ) -> Spi {
        Spi {
            checksum, ciphered, counter, por, por_checksum, por_ciphered, por_via_sms_submit,
            reserved: [r1 & 0xE0, r2 & 0xC0],
        }
    }
}

prop_compose! {
    /// A command packet and keys that fit its KIc/KID.
    fn command()(
        spi in spi(),
        (kic_alg, kic_len) in cipher_choice(),
        (kid_alg, kid_len) in cipher_choice(),
        kic_index in 0u8..16,
        kid_index in 0u8..16,
        tar in any::<[u8; 3]>(),
        counter in 0u64..=Counter::MAX.value(),
        data in proptest::collection::vec(any::<u8>(), 0..300),
        key_seed in any::<[u8; 32]>(),
    ) -> (CommandPacket, KeySet) {
        let packet = CommandPacket {
            spi,
            kic: Kic::new(kic_index, kic_alg),
            kid: Kid::new(kid_index, kid_alg),
            tar,
            counter: Counter::new(counter).unwrap(),
            data,
        };
        let keys = KeySet {
            kic_key: key_seed[..kic_len].to_vec(),
            kid_key: key_seed.iter().rev().take(kid_len).copied().collect(),
        };
        (packet, keys)
    }
}

proptest! {
    #[test]
    fn every_command_combination_round_trips((packet, keys) in command()) {
        let bytes = packet.encode(&keys).unwrap();
        prop_assert_eq!(bytes.len() - 2, usize::from(u16::from_be_bytes([bytes[0], bytes[1]])));
        let d = decode_command(&bytes, &keys).unwrap();
        prop_assert_eq!(&d.packet, &packet);
        prop_assert_eq!(d.cc.is_some(), packet.spi.checksum == ChecksumKind::Cc);
        let sms = packet.encode_sms(&keys).unwrap();
        prop_assert_eq!(&sms[3..], &bytes[..]);
        prop_assert_eq!(decode_command_sms(&sms, &keys).unwrap().packet, packet);
    }

    #[test]
    fn every_response_combination_round_trips(
        (command, keys) in command(),
        status in any::<u8>(),
    ) {
        let sec = PorSecurity::for_command(&command.header());
        let por = ResponsePacket {
            tar: command.tar,
            counter: command.counter,
            status: ResponseStatus::from_byte(status),
            data: command.data,
        };
        let bytes = por.encode(&sec, &keys).unwrap();
        prop_assert_eq!(&bytes[..3], &RESPONSE_UDH);
        let d = decode_response(&bytes, &sec, &keys).unwrap();
        prop_assert_eq!(&d.packet, &por);
        prop_assert_eq!(decode_response_no_udh(&bytes[3..], &sec, &keys).unwrap().packet, por);
    }

    #[test]
    fn any_flipped_bit_in_a_cc_protected_command_is_rejected(
        (mut packet, keys) in command(),
        bit in any::<prop::sample::Index>(),
    ) {
        packet.spi.checksum = ChecksumKind::Cc;
        let mut bytes = packet.encode(&keys).unwrap();
        let i = bit.index(bytes.len() * 8);
        bytes[i / 8] ^= 1 << (i % 8);
        let r = decode_command(&bytes, &keys);
        prop_assert!(r.is_err(), "bit {} flipped and still accepted: {:?}", i, r);
    }

    #[test]
    fn any_flipped_bit_in_a_cc_protected_response_is_rejected(
        (mut command, keys) in command(),
        bit in any::<prop::sample::Index>(),
    ) {
        command.spi.por_checksum = ChecksumKind::Cc;
        let sec = PorSecurity::for_command(&command.header());
        let por = ResponsePacket {
            tar: command.tar,
            counter: command.counter,
            status: ResponseStatus::PorOk,
            data: command.data,
        };
        let mut bytes = por.encode(&sec, &keys).unwrap();
        let i = bit.index(bytes.len() * 8);
        bytes[i / 8] ^= 1 << (i % 8);
        prop_assert!(decode_response(&bytes, &sec, &keys).is_err());
    }

    #[test]
    fn command_decoders_never_panic_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        (_, keys) in command(),
    ) {
        let _ = decode_command(&bytes, &keys);
        let _ = decode_command_sms(&bytes, &keys);
        let _ = inspect_command(&bytes, &keys);
    }

    #[test]
    fn command_decoders_never_panic_on_plausible_headers(
        (packet, keys) in command(),
        tail in proptest::collection::vec(any::<u8>(), 0..64),
        chl in prop_oneof![Just(13u8), Just(21u8), any::<u8>()],
    ) {
        // A consistent CPL and CHL get the decoder past the header into deciphering and the CC.
        let mut b = Vec::new();
        b.extend_from_slice(&((8 + tail.len()) as u16).to_be_bytes());
        b.push(chl);
        b.extend_from_slice(&packet.spi.to_bytes());
        b.push(packet.kic.to_byte());
        b.push(packet.kid.to_byte());
        b.extend_from_slice(&packet.tar);
        b.extend_from_slice(&tail);
        let _ = decode_command(&b, &keys);
        let _ = inspect_command(&b, &keys);
    }

    #[test]
    fn response_decoders_never_panic_on_arbitrary_bytes(
        body in proptest::collection::vec(any::<u8>(), 0..400),
        (command, keys) in command(),
        consistent_rpl in any::<bool>(),
    ) {
        let sec = PorSecurity::for_command(&command.header());
        let mut bytes = RESPONSE_UDH.to_vec();
        if consistent_rpl {
            bytes.extend_from_slice(&(body.len() as u16).to_be_bytes());
        }
        bytes.extend_from_slice(&body);
        let _ = decode_response(&bytes, &sec, &keys);
        let _ = decode_response_no_udh(&bytes[3..], &sec, &keys);
        let _ = decode_response(&body, &sec, &keys);
    }

    #[test]
    fn keys_of_the_wrong_length_are_errors_not_panics(
        (packet, _) in command(),
        kic_len in 0usize..40,
        kid_len in 0usize..40,
    ) {
        let keys = KeySet { kic_key: vec![1; kic_len], kid_key: vec![2; kid_len] };
        if let Ok(bytes) = packet.encode(&keys) {
            prop_assert_eq!(decode_command(&bytes, &keys).unwrap().packet, packet);
        }
    }
}
