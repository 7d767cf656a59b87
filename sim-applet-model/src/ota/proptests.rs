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
    fn a_command_encodes_exactly_when_the_keys_it_uses_have_valid_lengths(
        (packet, _) in command(),
        kic_len in 0usize..40,
        kid_len in 0usize..40,
    ) {
        let keys = KeySet { kic_key: vec![1; kic_len], kid_key: vec![2; kid_len] };
        // The KIc key is used only when ciphering, the KID key only for a CC.
        let kic_ok = !packet.spi.ciphered || valid_length(packet.kic.algorithm, kic_len);
        let kid_ok = packet.spi.checksum != ChecksumKind::Cc
            || valid_length(packet.kid.algorithm, kid_len);
        match packet.encode(&keys) {
            Ok(bytes) => {
                prop_assert!(kic_ok && kid_ok, "encoded with KIc key {} / KID key {}", kic_len, kid_len);
                prop_assert_eq!(decode_command(&bytes, &keys).unwrap().packet, packet);
            }
            Err(e) => {
                prop_assert!(!(kic_ok && kid_ok), "valid keys refused: {}", e);
                let is_wrong_key_length = matches!(e, OtaError::WrongKeyLength { .. });
                prop_assert!(is_wrong_key_length, "{:?}", e);
            }
        }
    }
}

/// Whether `len` octets is a key length `algorithm` takes (the implemented algorithms only).
fn valid_length(algorithm: Algorithm, len: usize) -> bool {
    match algorithm {
        Algorithm::TripleDes2Key => len == 16,
        Algorithm::TripleDes3Key => len == 24,
        Algorithm::Aes => matches!(len, 16 | 24 | 32),
        _ => false,
    }
}

/// An implemented algorithm with a key length it does not take: any length from 0 to 80 octets
/// (well past the longest key, 32) but the ones the algorithm takes.
fn wrong_key() -> impl Strategy<Value = (Algorithm, Vec<u8>)> {
    (
        prop_oneof![
            Just(Algorithm::TripleDes2Key),
            Just(Algorithm::TripleDes3Key),
            Just(Algorithm::Aes),
        ],
        0usize..=80,
        any::<u8>(),
    )
        .prop_filter("a valid key length", |(alg, len, _)| {
            !valid_length(*alg, *len)
        })
        .prop_map(|(alg, len, fill)| (alg, vec![fill; len]))
}

/// The refusal a key of the wrong length must get.
fn wrong_length(role: KeyRole, algorithm: Algorithm, key: &[u8]) -> OtaError {
    OtaError::WrongKeyLength {
        role,
        algorithm,
        got: key.len(),
    }
}

/// A command packet that uses only the KIc key (ciphered, no CC) or only the KID key (CC, not
/// ciphered), so the refusal can only come from that key.
fn only_uses(role: KeyRole, algorithm: Algorithm, data: Vec<u8>) -> CommandPacket {
    let (kic_alg, kid_alg) = match role {
        KeyRole::Kic => (algorithm, Algorithm::Aes),
        KeyRole::Kid => (Algorithm::Aes, algorithm),
    };
    CommandPacket {
        spi: Spi {
            checksum: match role {
                KeyRole::Kic => ChecksumKind::None,
                KeyRole::Kid => ChecksumKind::Cc,
            },
            ciphered: role == KeyRole::Kic,
            counter: CounterPolicy::NoCounter,
            por: PorRequired::Required,
            por_checksum: ChecksumKind::None,
            por_ciphered: false,
            por_via_sms_submit: false,
            reserved: [0, 0],
        },
        kic: Kic::new(1, kic_alg),
        kid: Kid::new(1, kid_alg),
        tar: [0xb0, 0x00, 0x11],
        counter: Counter::new(1).unwrap(),
        data,
    }
}

/// A key of the right length for `algorithm`.
fn good_key(algorithm: Algorithm) -> Vec<u8> {
    let len = if algorithm == Algorithm::TripleDes3Key {
        24
    } else {
        16
    };
    (0..len as u8).collect()
}

/// Keys with `key` in `role` and a good AES key in the other role (which an [`only_uses`]
/// packet does not use).
fn keys_with(role: KeyRole, key: Vec<u8>) -> KeySet {
    match role {
        KeyRole::Kic => KeySet {
            kic_key: key,
            kid_key: good_key(Algorithm::Aes),
        },
        KeyRole::Kid => KeySet {
            kic_key: good_key(Algorithm::Aes),
            kid_key: key,
        },
    }
}

fn role() -> impl Strategy<Value = KeyRole> {
    prop_oneof![Just(KeyRole::Kic), Just(KeyRole::Kid)]
}

proptest! {
    #[test]
    fn a_key_of_the_wrong_length_is_refused_when_the_key_set_is_made(
        (algorithm, key) in wrong_key(),
    ) {
        let good = good_key(algorithm);
        prop_assert_eq!(
            KeySet::new(Kic::new(1, algorithm), &key, Kid::new(1, algorithm), &good),
            Err(wrong_length(KeyRole::Kic, algorithm, &key))
        );
        prop_assert_eq!(
            KeySet::new(Kic::new(1, algorithm), &good, Kid::new(1, algorithm), &key),
            Err(wrong_length(KeyRole::Kid, algorithm, &key))
        );
    }

    #[test]
    fn a_checksum_with_a_key_of_the_wrong_length_is_an_error(
        (algorithm, key) in wrong_key(),
        input in proptest::collection::vec(any::<u8>(), 0..64),
        received in any::<[u8; CC_LEN]>(),
    ) {
        let kid = Kid::new(1, algorithm);
        let refused: Result<(), _> = Err(wrong_length(KeyRole::Kid, algorithm, &key));
        prop_assert_eq!(compute_cc(kid, &key, &input).map(|_| ()), refused.clone());
        prop_assert_eq!(verify_cc(kid, &key, &input, &received).map(|_| ()), refused);
    }

    #[test]
    fn encoding_a_command_with_a_key_of_the_wrong_length_is_an_error(
        (algorithm, key) in wrong_key(),
        role in role(),
        data in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let packet = only_uses(role, algorithm, data);
        let keys = keys_with(role, key.clone());
        let refused: Result<(), _> = Err(wrong_length(role, algorithm, &key));
        prop_assert_eq!(packet.encode(&keys).map(|_| ()), refused.clone());
        prop_assert_eq!(packet.encode_sms(&keys).map(|_| ()), refused);
    }

    #[test]
    fn decoding_a_command_with_a_key_of_the_wrong_length_is_an_error(
        (algorithm, key) in wrong_key(),
        role in role(),
        data in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let packet = only_uses(role, algorithm, data);
        let mut good = keys_with(role, good_key(algorithm));
        let bytes = packet.encode(&good).unwrap();
        let sms = packet.encode_sms(&good).unwrap();
        match role {
            KeyRole::Kic => good.kic_key = key.clone(),
            KeyRole::Kid => good.kid_key = key.clone(),
        }
        let wrong = good;
        let refused: Result<(), _> = Err(wrong_length(role, algorithm, &key));
        let via_lookup = |_: &CommandHeader| Some(wrong.clone());
        prop_assert_eq!(decode_command(&bytes, &wrong).map(|_| ()), refused.clone());
        prop_assert_eq!(decode_command(&bytes, &via_lookup).map(|_| ()), refused.clone());
        prop_assert_eq!(decode_command_sms(&sms, &wrong).map(|_| ()), refused.clone());
        // The tool that tolerates a wrong CC must not tolerate an unusable key.
        prop_assert_eq!(inspect_command(&bytes, &wrong).map(|_| ()), refused);
    }

    #[test]
    fn a_por_with_a_key_of_the_wrong_length_is_an_error_both_ways(
        (algorithm, key) in wrong_key(),
        role in role(),
        status in any::<u8>(),
        data in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let sec = PorSecurity {
            checksum: match role {
                KeyRole::Kic => ChecksumKind::None,
                KeyRole::Kid => ChecksumKind::Cc,
            },
            ciphered: role == KeyRole::Kic,
            kic: Kic::new(1, algorithm),
            kid: Kid::new(1, algorithm),
        };
        let por = ResponsePacket {
            tar: [0xb0, 0x00, 0x11],
            counter: Counter::new(1).unwrap(),
            status: ResponseStatus::from_byte(status),
            data,
        };
        let good = keys_with(role, good_key(algorithm));
        let wrong = keys_with(role, key.clone());
        let refused: Result<(), _> = Err(wrong_length(role, algorithm, &key));
        prop_assert_eq!(por.encode(&sec, &wrong).map(|_| ()), refused.clone());
        prop_assert_eq!(por.encode_no_udh(&sec, &wrong).map(|_| ()), refused.clone());
        let bytes = por.encode(&sec, &good).unwrap();
        prop_assert_eq!(decode_response(&bytes, &sec, &wrong).map(|_| ()), refused.clone());
        prop_assert_eq!(decode_response_no_udh(&bytes[3..], &sec, &wrong).map(|_| ()), refused);
    }
}
