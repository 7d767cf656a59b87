//! The bodies of the fuzz targets in `fuzz/fuzz_targets/`, here so that a plain `cargo test`
//! can replay their seed corpus (`tests/fuzz_corpus.rs`): libFuzzer needs a nightly-only build,
//! the checks themselves do not.
//!
//! Each function takes one input, panics when a property fails (a decoder panicking, or a round
//! trip that changes the value), and returns how many of its decoders accepted the input, so a
//! replay can tell a seed that reaches the round trips from one that every decoder refuses.
//! Not an API: hidden from the docs and free to change with the fuzz targets.

use crate::cat::{Apdu, ProactiveCommand, SmsPpDownload, TerminalResponse};
use crate::ota::{
    decode_command, decode_response, Algorithm, CommandHeader, KeySet, Kic, Kid, PorSecurity, Spi,
};
use crate::text::{
    decode_ussd, gsm7_decode, gsm7_encode, parse_user_data, ucs2_decode, unpack_septets,
    unpack_ussd,
};

/// The pySim vectors' keys: (KIc key, KID key) of the 3DES vector (KIc/KID 35)...
const PYSIM_3DES: ([u8; 16], [u8; 16]) = (
    [
        0x30, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
        0x0f,
    ],
    [
        0x30, 0x11, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
        0x0f,
    ],
);
/// ... and of the AES vector (KIc/KID 22).
const PYSIM_AES: ([u8; 16], [u8; 16]) = (
    [
        0x20, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
        0x0f,
    ],
    [
        0x20, 0x11, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
        0x0f,
    ],
);

/// The pySim vectors' keys for the algorithm each of KIc and KID names (16 octets: 3DES with
/// three keys and the unimplemented algorithms find none), so that the corpus of real packets
/// gets past the CC and mutations explore the round trip.
fn pysim_keys(h: &CommandHeader) -> Option<KeySet> {
    let pick = |alg: Algorithm| {
        if alg == Algorithm::Aes {
            PYSIM_AES
        } else {
            PYSIM_3DES
        }
    };
    KeySet::new(
        h.kic,
        &pick(h.kic.algorithm).0,
        h.kid,
        &pick(h.kid.algorithm).1,
    )
    .ok()
}

/// Secured packets (`ota_decode`): decoding never panics, and whatever decodes as a command
/// packet or as a PoR re-encodes to bytes that decode to the same clear packet.
pub fn ota_decode(data: &[u8]) -> usize {
    let mut accepted = 0;
    if let Ok(decoded) = decode_command(data, &pysim_keys) {
        accepted += 1;
        let keys = pysim_keys(&decoded.packet.header()).expect("keys were found once");
        let again = decoded
            .packet
            .encode(&keys)
            .expect("a decoded packet re-encodes");
        let twice = decode_command(&again, &pysim_keys).expect("a re-encoded packet decodes");
        assert_eq!(twice.packet, decoded.packet);
    }
    // A PoR secured like the pySim 3DES vector's command (SPI 06 19, KIc/KID 35).
    let header = CommandHeader {
        spi: Spi::from_bytes([0x06, 0x19]),
        kic: Kic::from_byte(0x35),
        kid: Kid::from_byte(0x35),
        tar: [0xb0, 0x00, 0x11],
    };
    let keys = pysim_keys(&header).expect("3DES keys fit");
    let sec = PorSecurity::for_command(&header);
    if let Ok(decoded) = decode_response(data, &sec, &keys) {
        accepted += 1;
        let again = decoded
            .packet
            .encode(&sec, &keys)
            .expect("a decoded PoR re-encodes");
        let twice = decode_response(&again, &sec, &keys).expect("a re-encoded PoR decodes");
        assert_eq!(twice.packet, decoded.packet);
    }
    accepted
}

/// Decode -> encode -> decode of one SIM toolkit type; true when `data` decoded.
///
/// One loss is inherent to the format, not a bug: packed GSM 7-bit text whose last septet is a
/// CR on an octet boundary cannot be told from CR padding (TS 23.038 6.1.2.3.1), so a round trip
/// may add or drop one trailing CR. For that case the value may differ only in CRs and must be
/// stable from the second round on.
macro_rules! cat_round_trip {
    ($ty:ty, $data:expr) => {{
        match <$ty>::decode($data) {
            Ok(value) => {
                if let Ok(bytes) = value.encode() {
                    let again = <$ty>::decode(&bytes)
                        .expect(concat!(stringify!($ty), ": re-encoded bytes decode"));
                    if again != value {
                        let strip = |v: &$ty| format!("{v:?}").replace("\\r", "");
                        assert_eq!(
                            strip(&again),
                            strip(&value),
                            "{} changed in a round trip beyond CR padding",
                            stringify!($ty)
                        );
                        let bytes = again.encode().expect("re-encodes");
                        let third = <$ty>::decode(&bytes).expect("decodes again");
                        assert_eq!(
                            third,
                            again,
                            "{} is not stable after one round",
                            stringify!($ty)
                        );
                    }
                }
                true
            }
            Err(_) => false,
        }
    }};
}

/// SIM toolkit (`cat_decode`): proactive commands, terminal responses, SMS-PP envelopes and
/// APDUs never panic the decoders, and what decodes survives decode -> encode -> decode.
pub fn cat_decode(data: &[u8]) -> usize {
    [
        cat_round_trip!(ProactiveCommand, data),
        cat_round_trip!(TerminalResponse, data),
        cat_round_trip!(SmsPpDownload, data),
        cat_round_trip!(Apdu, data),
    ]
    .into_iter()
    .filter(|&decoded| decoded)
    .count()
}

/// GSM text (`text_decode`): the decoders never panic, and decoded GSM septets re-encode to
/// septets with the same text. The first octet is the fill bits / DCS, the rest the payload.
pub fn text_decode(data: &[u8]) -> usize {
    let Some((&head, rest)) = data.split_first() else {
        return 0;
    };
    let mut accepted = 0;
    let fill = head & 0x07;
    if let Ok(septets) = unpack_septets(rest, rest.len() * 8 / 7, fill) {
        if let Ok(text) = gsm7_decode(&septets) {
            accepted += 1;
            // Decoding is lenient (unknown escapes), so compare text, not septets.
            let encoded = gsm7_encode(&text).expect("decoded GSM text re-encodes");
            assert_eq!(
                gsm7_decode(&encoded).expect("re-encoded septets decode"),
                text
            );
        }
    }
    accepted += usize::from(unpack_ussd(rest).is_ok());
    accepted += usize::from(ucs2_decode(rest).is_ok());
    accepted += usize::from(decode_ussd(head, rest).is_ok());
    if let Some((&udl, body)) = rest.split_first() {
        accepted += usize::from(parse_user_data(head, head & 0x40 != 0, udl, body).is_ok());
        accepted += usize::from(parse_user_data(0x08, true, udl, body).is_ok());
        accepted += usize::from(parse_user_data(0x00, true, udl, body).is_ok());
    }
    accepted
}
