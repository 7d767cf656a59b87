//! Secured packets: decoding never panics, and whatever decodes re-encodes to a packet that
//! decodes to the same clear packet (decode -> encode -> decode). The checks live in
//! `sim_applet_model::fuzzing` so that `tests/fuzz_corpus.rs` replays the seed corpus on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sim_applet_model::fuzzing::ota_decode(data);
});
