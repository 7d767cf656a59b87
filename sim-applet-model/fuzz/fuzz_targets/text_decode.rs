//! GSM text: the decoders never panic; decoded septets re-encode to the same text, and SMS user
//! data parsing never panics. The checks live in `sim_applet_model::fuzzing` so that
//! `tests/fuzz_corpus.rs` replays the seed corpus on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sim_applet_model::fuzzing::text_decode(data);
});
