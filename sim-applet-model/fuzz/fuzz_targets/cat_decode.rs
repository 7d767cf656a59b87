//! SIM toolkit: proactive commands, terminal responses, SMS-PP envelopes and APDUs never panic
//! the decoders, and what decodes survives decode -> encode -> decode unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sim_applet_model::cat::{Apdu, ProactiveCommand, SmsPpDownload, TerminalResponse};

macro_rules! round_trip {
    ($ty:ty, $data:expr) => {
        if let Ok(value) = <$ty>::decode($data) {
            if let Ok(bytes) = value.encode() {
                let again = <$ty>::decode(&bytes).expect(concat!(
                    stringify!($ty),
                    ": re-encoded bytes decode"
                ));
                assert_eq!(again, value, "{} changed in a round trip", stringify!($ty));
            }
        }
    };
}

fuzz_target!(|data: &[u8]| {
    round_trip!(ProactiveCommand, data);
    round_trip!(TerminalResponse, data);
    round_trip!(SmsPpDownload, data);
    round_trip!(Apdu, data);
});
