//! SIM toolkit: proactive commands, terminal responses, SMS-PP envelopes and APDUs never panic
//! the decoders, and what decodes survives decode -> encode -> decode unchanged.
//!
//! One loss is inherent to the format, not a bug: packed GSM 7-bit text whose last septet is a
//! CR on an octet boundary cannot be told from CR padding (TS 23.038 6.1.2.3.1), so a round trip
//! may add or drop one trailing CR. For that case the target checks that the value differs only
//! in CRs and is stable from the second round on.
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
                    assert_eq!(third, again, "{} is not stable after one round", stringify!($ty));
                }
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
