//! SIM toolkit: proactive commands, terminal responses, SMS-PP envelopes and APDUs never panic
//! the decoders, and what decodes survives decode -> encode -> decode unchanged (up to the
//! trailing-CR ambiguity of packed GSM text). The checks live in `sim_applet_model::fuzzing`
//! so that `tests/fuzz_corpus.rs` replays the seed corpus on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sim_applet_model::fuzzing::cat_decode(data);
});
