//! Secured packets: decoding never panics, and whatever decodes re-encodes to a packet that
//! decodes to the same clear packet (decode -> encode -> decode).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sim_applet_model::ota::{
    decode_command, decode_response, CommandHeader, KeySet, PorSecurity,
};

const KIC_3DES: [u8; 16] = [
    0x30, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
];
const KID_3DES: [u8; 16] = [
    0x30, 0x11, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
];

/// The keys of the pySim vectors, for whatever algorithms the packet names (AES takes the same
/// 16 octets), so that the corpus of real packets decodes and mutations explore past the CC.
fn lookup(h: &CommandHeader) -> Option<KeySet> {
    KeySet::new(h.kic, &KIC_3DES, h.kid, &KID_3DES).ok()
}

fuzz_target!(|data: &[u8]| {
    if let Ok(decoded) = decode_command(data, &lookup) {
        let keys = lookup(&decoded.packet.header()).expect("keys were found once");
        let again = decoded.packet.encode(&keys).expect("a decoded packet re-encodes");
        let twice = decode_command(&again, &lookup).expect("a re-encoded packet decodes");
        assert_eq!(twice.packet, decoded.packet);
    }
    // A PoR secured like the pySim 3DES vector's command (SPI 06 19, KIc/KID 35).
    let header = CommandHeader {
        spi: sim_applet_model::ota::Spi::from_bytes([0x06, 0x19]),
        kic: sim_applet_model::ota::Kic::from_byte(0x35),
        kid: sim_applet_model::ota::Kid::from_byte(0x35),
        tar: [0xb0, 0x00, 0x11],
    };
    let keys = lookup(&header).expect("3DES keys fit");
    let sec = PorSecurity::for_command(&header);
    if let Ok(decoded) = decode_response(data, &sec, &keys) {
        let again = decoded.packet.encode(&sec, &keys).expect("a decoded PoR re-encodes");
        let twice = decode_response(&again, &sec, &keys).expect("a re-encoded PoR decodes");
        assert_eq!(twice.packet, decoded.packet);
    }
});
