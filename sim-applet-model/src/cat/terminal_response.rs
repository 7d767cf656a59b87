//! TERMINAL RESPONSE: `81 03 <command details as fetched> 82 02 82 81 83 L <result>
//! [additional information] [8D text]`, the handset's answer to a proactive command. The text
//! of a GET INKEY Yes/No answer (`8D 02 04 01` / `8D 02 04 00`) is decoded as
//! [`ResponseData::YesNo`], because the echoed command details say how to read it.

use super::objects::{CommandDetails, CommandType, DeviceId, DeviceIdentities};
use super::text_string::{TextDcs, TextString};
use super::tlv::{put_tlv, tag, TlvList, CR};
use super::CatError;

/// General result (TS 102 223 §8.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResultCode {
    /// 00
    Ok,
    /// 01
    PartialComprehension,
    /// 02
    MissingInformation,
    /// 04
    IconNotDisplayed,
    /// 10
    SessionTerminatedByUser,
    /// 11
    BackwardMove,
    /// 12
    NoResponseFromUser,
    /// 13
    HelpRequested,
    /// 20 (additional information says why)
    TerminalBusy,
    /// 22
    UserRejected,
    /// 30
    BeyondTerminalCapabilities,
    /// 31
    TypeNotUnderstood,
    /// 32
    DataNotUnderstood,
    /// 36
    RequiredValuesMissing,
    Other(u8),
}

impl From<u8> for ResultCode {
    fn from(v: u8) -> Self {
        match v {
            0x00 => ResultCode::Ok,
            0x01 => ResultCode::PartialComprehension,
            0x02 => ResultCode::MissingInformation,
            0x04 => ResultCode::IconNotDisplayed,
            0x10 => ResultCode::SessionTerminatedByUser,
            0x11 => ResultCode::BackwardMove,
            0x12 => ResultCode::NoResponseFromUser,
            0x13 => ResultCode::HelpRequested,
            0x20 => ResultCode::TerminalBusy,
            0x22 => ResultCode::UserRejected,
            0x30 => ResultCode::BeyondTerminalCapabilities,
            0x31 => ResultCode::TypeNotUnderstood,
            0x32 => ResultCode::DataNotUnderstood,
            0x36 => ResultCode::RequiredValuesMissing,
            other => ResultCode::Other(other),
        }
    }
}

impl From<ResultCode> for u8 {
    fn from(r: ResultCode) -> u8 {
        match r {
            ResultCode::Ok => 0x00,
            ResultCode::PartialComprehension => 0x01,
            ResultCode::MissingInformation => 0x02,
            ResultCode::IconNotDisplayed => 0x04,
            ResultCode::SessionTerminatedByUser => 0x10,
            ResultCode::BackwardMove => 0x11,
            ResultCode::NoResponseFromUser => 0x12,
            ResultCode::HelpRequested => 0x13,
            ResultCode::TerminalBusy => 0x20,
            ResultCode::UserRejected => 0x22,
            ResultCode::BeyondTerminalCapabilities => 0x30,
            ResultCode::TypeNotUnderstood => 0x31,
            ResultCode::DataNotUnderstood => 0x32,
            ResultCode::RequiredValuesMissing => 0x36,
            ResultCode::Other(v) => v,
        }
    }
}

impl ResultCode {
    /// Results 0x: the command was performed (possibly with reservations).
    pub fn is_success(self) -> bool {
        u8::from(self) < 0x10
    }
}

/// What the user answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseData {
    None,
    /// GET INKEY / GET INPUT text.
    Text(TextString),
    /// GET INKEY with the Yes/No qualifier: `true` for Yes.
    YesNo(bool),
}

/// A TERMINAL RESPONSE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminalResponse {
    /// The command details of the command answered, unchanged.
    pub command: CommandDetails,
    pub devices: DeviceIdentities,
    pub result: ResultCode,
    /// Additional information octets of the result (e.g. the busy cause for 0x20).
    pub additional_info: Vec<u8>,
    pub response: ResponseData,
}

fn is_yes_no(c: &CommandDetails) -> bool {
    c.command_type == CommandType::GetInkey && c.qualifier & 0x04 != 0
}

impl TerminalResponse {
    /// A response from the terminal to the UICC with no additional information and no data.
    pub fn new(command: CommandDetails, result: ResultCode) -> Self {
        Self {
            command,
            devices: DeviceIdentities::new(DeviceId::Terminal, DeviceId::Uicc),
            result,
            additional_info: Vec::new(),
            response: ResponseData::None,
        }
    }

    /// Result OK with the user's text.
    pub fn text(command: CommandDetails, text: TextString) -> Self {
        Self {
            response: ResponseData::Text(text),
            ..Self::new(command, ResultCode::Ok)
        }
    }

    /// Result OK with a Yes/No answer.
    pub fn yes_no(command: CommandDetails, yes: bool) -> Self {
        Self {
            response: ResponseData::YesNo(yes),
            ..Self::new(command, ResultCode::Ok)
        }
    }

    /// The data of the TERMINAL RESPONSE APDU.
    pub fn encode(&self) -> Result<Vec<u8>, CatError> {
        let mut out = Vec::new();
        put_tlv(
            &mut out,
            tag::COMMAND_DETAILS | CR,
            &self.command.encode_value(),
        )?;
        put_tlv(
            &mut out,
            tag::DEVICE_IDENTITIES | CR,
            &self.devices.encode_value(),
        )?;
        let mut result = vec![u8::from(self.result)];
        result.extend_from_slice(&self.additional_info);
        put_tlv(&mut out, tag::RESULT | CR, &result)?;
        match &self.response {
            ResponseData::None => {}
            ResponseData::Text(t) => t.put(&mut out, tag::TEXT_STRING | CR)?,
            ResponseData::YesNo(yes) => {
                if !is_yes_no(&self.command) {
                    return Err(CatError::Invalid {
                        field: "terminal response data",
                        reason: "Yes/No answer to a command that is not GET INKEY Yes/No",
                    });
                }
                put_tlv(
                    &mut out,
                    tag::TEXT_STRING | CR,
                    &[TextDcs::Gsm7.octet(), u8::from(*yes)],
                )?
            }
        }
        Ok(out)
    }

    /// Decode the data of a TERMINAL RESPONSE APDU.
    pub fn decode(input: &[u8]) -> Result<Self, CatError> {
        let mut list = TlvList::parse(input, 0)?;
        let command = CommandDetails::decode_tlv(&list.require(tag::COMMAND_DETAILS | CR)?)?;
        let devices = DeviceIdentities::decode_tlv(&list.require(tag::DEVICE_IDENTITIES | CR)?)?;
        let result_tlv = list.require(tag::RESULT | CR)?;
        let (&code, additional) = result_tlv
            .value
            .split_first()
            .ok_or(result_tlv.bad_length())?;
        let response = match list.take(tag::TEXT_STRING) {
            None => ResponseData::None,
            Some(t) if is_yes_no(&command) => match t.value {
                [0x04, 0x01] => ResponseData::YesNo(true),
                [0x04, 0x00] => ResponseData::YesNo(false),
                _ => return Err(t.bad_value("Yes/No answer is not 04 01 or 04 00")),
            },
            Some(t) => ResponseData::Text(TextString::decode_tlv(&t)?),
        };
        list.finish()?;
        Ok(Self {
            command,
            devices,
            result: ResultCode::from(code),
            additional_info: additional.to_vec(),
            response,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use hex_literal::hex;
    use proptest::prelude::*;

    fn details(t: u8, q: u8) -> CommandDetails {
        CommandDetails {
            number: 1,
            command_type: CommandType::from(t),
            qualifier: q,
        }
    }

    #[test]
    fn display_text_ok_matches_published_vector() {
        let bytes = hex!("81 03 01 21 80 82 02 82 81 83 01 00");
        let tr = TerminalResponse::new(details(0x21, 0x80), ResultCode::Ok);
        assert_eq!(tr.encode().unwrap(), bytes);
        assert_eq!(TerminalResponse::decode(&bytes).unwrap(), tr);
    }

    #[test]
    fn yes_and_no_answers() {
        let yes = hex!("81 03 01 22 04 82 02 82 81 83 01 00 8D 02 04 01");
        let no = hex!("81 03 01 22 04 82 02 82 81 83 01 00 8D 02 04 00");
        assert_eq!(
            TerminalResponse::yes_no(details(0x22, 0x04), true)
                .encode()
                .unwrap(),
            yes
        );
        assert_eq!(
            TerminalResponse::yes_no(details(0x22, 0x04), false)
                .encode()
                .unwrap(),
            no
        );
        assert_eq!(
            TerminalResponse::decode(&yes).unwrap().response,
            ResponseData::YesNo(true)
        );
        assert_eq!(
            TerminalResponse::decode(&no).unwrap().response,
            ResponseData::YesNo(false)
        );
    }

    #[test]
    fn yes_no_answer_with_other_value_is_refused() {
        let bytes = hex!("81 03 01 22 04 82 02 82 81 83 01 00 8D 02 04 59");
        assert!(matches!(
            TerminalResponse::decode(&bytes),
            Err(CatError::BadValue {
                tag: 0x8D,
                at: 12,
                ..
            })
        ));
    }

    #[test]
    fn get_inkey_character_answer() {
        // TS 31.124 27.22.4.2.1 seq 1.1 response: "+".
        let bytes = hex!("81 03 01 22 00 82 02 82 81 83 01 00 8D 02 04 2B");
        let tr = TerminalResponse::decode(&bytes).unwrap();
        assert_eq!(tr.response, ResponseData::Text(TextString::gsm7("+")));
        assert_eq!(tr.encode().unwrap(), bytes);
    }

    #[test]
    fn get_input_answer_matches_published_vector() {
        // TS 31.124 27.22.4.3.1 seq 1.1 response: "12345".
        let bytes = hex!("81 03 01 23 00 82 02 82 81 83 01 00 8D 06 04 31 32 33 34 35");
        let tr = TerminalResponse::text(details(0x23, 0x00), TextString::gsm7("12345"));
        assert_eq!(tr.encode().unwrap(), bytes);
        assert_eq!(TerminalResponse::decode(&bytes).unwrap(), tr);
    }

    #[test]
    fn busy_result_keeps_additional_information() {
        let bytes = hex!("81 03 01 21 80 82 02 82 81 83 02 20 01");
        let tr = TerminalResponse::decode(&bytes).unwrap();
        assert_eq!(tr.result, ResultCode::TerminalBusy);
        assert_eq!(tr.additional_info, vec![0x01]);
        assert_eq!(tr.encode().unwrap(), bytes);
    }

    #[test]
    fn result_codes_map_both_ways_and_keep_unknown() {
        for (code, rc) in [
            (0x10, ResultCode::SessionTerminatedByUser),
            (0x11, ResultCode::BackwardMove),
            (0x12, ResultCode::NoResponseFromUser),
            (0x22, ResultCode::UserRejected),
            (0x32, ResultCode::DataNotUnderstood),
            (0x3A, ResultCode::Other(0x3A)),
        ] {
            assert_eq!(ResultCode::from(code), rc);
            assert_eq!(u8::from(rc), code);
        }
    }

    #[test]
    fn malformed_responses_name_tag_and_offset() {
        assert_eq!(
            TerminalResponse::decode(&hex!("81 03 01 21 80 82 02 82 81")),
            Err(CatError::MissingTlv { tag: 0x83 })
        );
        assert_eq!(
            TerminalResponse::decode(&hex!("81 03 01 21 80 82 02 82 81 83 00")),
            Err(CatError::BadLength { tag: 0x83, at: 9 })
        );
        assert_eq!(
            TerminalResponse::decode(&hex!("81 03 01 21 80 82 02 82 81 83 03 00")),
            Err(CatError::Truncated { tag: 0x83, at: 9 })
        );
    }

    fn response() -> impl Strategy<Value = TerminalResponse> {
        (
            any::<(u8, u8, u8)>(),
            any::<u8>(),
            proptest::collection::vec(any::<u8>(), 0..10),
            proptest::option::of(("[A-Za-z0-9]{0,30}", any::<bool>())),
        )
            .prop_map(|((n, t, q), r, additional_info, text)| {
                let command = CommandDetails {
                    number: n,
                    command_type: CommandType::from(t),
                    qualifier: q,
                };
                let response = match text {
                    None => ResponseData::None,
                    Some((_, yes)) if is_yes_no(&command) => ResponseData::YesNo(yes),
                    Some((s, packed)) if packed => ResponseData::Text(TextString::packed(s)),
                    Some((s, _)) => ResponseData::Text(TextString::ucs2(s)),
                };
                TerminalResponse {
                    command,
                    devices: DeviceIdentities::new(DeviceId::Terminal, DeviceId::Uicc),
                    result: ResultCode::from(r),
                    additional_info,
                    response,
                }
            })
    }

    proptest! {
        #[test]
        fn terminal_response_round_trips(tr in response()) {
            let bytes = tr.encode().unwrap();
            prop_assert_eq!(TerminalResponse::decode(&bytes).unwrap(), tr);
        }

        #[test]
        fn terminal_response_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = TerminalResponse::decode(&bytes);
        }

        #[test]
        fn terminal_response_decoder_never_panics_on_plausible_input(q in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..60)) {
            let mut bytes = vec![0x81, 0x03, 0x01, 0x22, q, 0x82, 0x02, 0x82, 0x81];
            bytes.extend(body);
            let _ = TerminalResponse::decode(&bytes);
        }
    }
}
