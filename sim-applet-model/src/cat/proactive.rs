//! Proactive commands (`D0 L 81 03 number type qualifier 82 02 source destination ...`): the
//! typed [`Command`]s our applet uses, their qualifiers, and the BER-TLV encoding. Commands of
//! other types are kept as [`Command::Unsupported`] with their data objects untouched, so a
//! handset can answer them "beyond terminal capabilities".

use super::objects::{
    Address, CommandDetails, CommandType, DeviceId, DeviceIdentities, Duration, ResponseLength,
    Tone,
};
use super::text_string::{AlphaId, TextString};
use super::tlv::{put_tlv, read_ber, tag, TlvList, CR, PROACTIVE_COMMAND};
use super::CatError;

/// DISPLAY TEXT qualifier: bit 1 high priority, bit 8 wait for the user to clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DisplayTextQualifier {
    pub high_priority: bool,
    pub wait_for_user_clear: bool,
}

impl DisplayTextQualifier {
    pub fn octet(self) -> u8 {
        u8::from(self.high_priority) | (u8::from(self.wait_for_user_clear) << 7)
    }

    pub fn from_octet(q: u8) -> Self {
        Self {
            high_priority: q & 0x01 != 0,
            wait_for_user_clear: q & 0x80 != 0,
        }
    }
}

/// GET INKEY qualifier: bit 1 alphabet (else digits), bit 2 UCS2 (else GSM), bit 3 Yes/No
/// (bits 1-2 then do not apply), bit 4 immediate digit response, bit 8 help available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct GetInkeyQualifier {
    pub alphabet: bool,
    pub ucs2: bool,
    pub yes_no: bool,
    pub immediate: bool,
    pub help: bool,
}

impl GetInkeyQualifier {
    pub fn octet(self) -> u8 {
        u8::from(self.alphabet)
            | (u8::from(self.ucs2) << 1)
            | (u8::from(self.yes_no) << 2)
            | (u8::from(self.immediate) << 3)
            | (u8::from(self.help) << 7)
    }

    pub fn from_octet(q: u8) -> Self {
        Self {
            alphabet: q & 0x01 != 0,
            ucs2: q & 0x02 != 0,
            yes_no: q & 0x04 != 0,
            immediate: q & 0x08 != 0,
            help: q & 0x80 != 0,
        }
    }
}

/// GET INPUT qualifier: bit 1 alphabet (else digits), bit 2 UCS2, bit 3 hidden input (no
/// echo, e.g. a PIN), bit 4 packed response, bit 8 help available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct GetInputQualifier {
    pub alphabet: bool,
    pub ucs2: bool,
    pub hidden: bool,
    pub packed: bool,
    pub help: bool,
}

impl GetInputQualifier {
    pub fn octet(self) -> u8 {
        u8::from(self.alphabet)
            | (u8::from(self.ucs2) << 1)
            | (u8::from(self.hidden) << 2)
            | (u8::from(self.packed) << 3)
            | (u8::from(self.help) << 7)
    }

    pub fn from_octet(q: u8) -> Self {
        Self {
            alphabet: q & 0x01 != 0,
            ucs2: q & 0x02 != 0,
            hidden: q & 0x04 != 0,
            packed: q & 0x08 != 0,
            help: q & 0x80 != 0,
        }
    }
}

/// DISPLAY TEXT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayText {
    pub qualifier: DisplayTextQualifier,
    pub text: TextString,
    /// Immediate response data object (`2B 00`): the terminal answers before the text clears.
    pub immediate_response: bool,
    pub duration: Option<Duration>,
}

/// GET INKEY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetInkey {
    pub qualifier: GetInkeyQualifier,
    pub text: TextString,
    pub duration: Option<Duration>,
}

/// GET INPUT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetInput {
    pub qualifier: GetInputQualifier,
    pub text: TextString,
    pub response_length: ResponseLength,
    pub default_text: Option<TextString>,
}

/// SEND SHORT MESSAGE. `tpdu` is an SMS-SUBMIT TPDU as opaque octets (see
/// [`super::tpdu::SecuredSubmit`] for the secured-packet one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendShortMessage {
    /// Qualifier bit 1: the terminal must pack the text before sending.
    pub packing_required: bool,
    pub alpha_id: Option<AlphaId>,
    pub address: Option<Address>,
    pub tpdu: Vec<u8>,
}

/// PLAY TONE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayTone {
    /// Qualifier bit 1: vibrate alert, if available.
    pub vibrate: bool,
    pub alpha_id: Option<AlphaId>,
    pub tone: Option<Tone>,
    pub duration: Option<Duration>,
}

/// The body of a proactive command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    DisplayText(DisplayText),
    GetInkey(GetInkey),
    GetInput(GetInput),
    SendShortMessage(SendShortMessage),
    PlayTone(PlayTone),
    /// Any other command type; `tlvs` are the data objects after the device identities.
    Unsupported {
        command_type: CommandType,
        qualifier: u8,
        tlvs: Vec<u8>,
    },
}

impl Command {
    pub fn command_type(&self) -> CommandType {
        match self {
            Command::DisplayText(_) => CommandType::DisplayText,
            Command::GetInkey(_) => CommandType::GetInkey,
            Command::GetInput(_) => CommandType::GetInput,
            Command::SendShortMessage(_) => CommandType::SendShortMessage,
            Command::PlayTone(_) => CommandType::PlayTone,
            Command::Unsupported { command_type, .. } => *command_type,
        }
    }

    pub fn qualifier(&self) -> u8 {
        match self {
            Command::DisplayText(c) => c.qualifier.octet(),
            Command::GetInkey(c) => c.qualifier.octet(),
            Command::GetInput(c) => c.qualifier.octet(),
            Command::SendShortMessage(c) => u8::from(c.packing_required),
            Command::PlayTone(c) => u8::from(c.vibrate),
            Command::Unsupported { qualifier, .. } => *qualifier,
        }
    }

    /// The destination device TS 102 223 names for this command.
    pub fn default_destination(&self) -> DeviceId {
        match self {
            Command::DisplayText(_) => DeviceId::Display,
            Command::PlayTone(_) => DeviceId::Earpiece,
            Command::SendShortMessage(_) => DeviceId::Network,
            Command::GetInkey(_) | Command::GetInput(_) | Command::Unsupported { .. } => {
                DeviceId::Terminal
            }
        }
    }
}

/// A proactive command as FETCHed from the card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProactiveCommand {
    pub number: u8,
    pub devices: DeviceIdentities,
    pub command: Command,
}

impl ProactiveCommand {
    /// A command from the UICC to the command's usual destination.
    pub fn new(number: u8, command: Command) -> Self {
        let devices = DeviceIdentities::new(DeviceId::Uicc, command.default_destination());
        Self {
            number,
            devices,
            command,
        }
    }

    /// The command details, as a terminal response must echo them.
    pub fn details(&self) -> CommandDetails {
        CommandDetails {
            number: self.number,
            command_type: self.command.command_type(),
            qualifier: self.command.qualifier(),
        }
    }

    /// The BER-TLV `D0 ...`.
    pub fn encode(&self) -> Result<Vec<u8>, CatError> {
        let mut b = Vec::new();
        put_tlv(
            &mut b,
            tag::COMMAND_DETAILS | CR,
            &self.details().encode_value(),
        )?;
        put_tlv(
            &mut b,
            tag::DEVICE_IDENTITIES | CR,
            &self.devices.encode_value(),
        )?;
        match &self.command {
            Command::DisplayText(c) => {
                c.text.put(&mut b, tag::TEXT_STRING | CR)?;
                if c.immediate_response {
                    put_tlv(&mut b, tag::IMMEDIATE_RESPONSE, &[])?;
                }
                if let Some(d) = &c.duration {
                    put_tlv(&mut b, tag::DURATION | CR, &d.encode_value()?)?;
                }
            }
            Command::GetInkey(c) => {
                c.text.put(&mut b, tag::TEXT_STRING | CR)?;
                if let Some(d) = &c.duration {
                    put_tlv(&mut b, tag::DURATION | CR, &d.encode_value()?)?;
                }
            }
            Command::GetInput(c) => {
                c.text.put(&mut b, tag::TEXT_STRING | CR)?;
                put_tlv(
                    &mut b,
                    tag::RESPONSE_LENGTH | CR,
                    &c.response_length.encode_value()?,
                )?;
                if let Some(t) = &c.default_text {
                    t.put(&mut b, tag::DEFAULT_TEXT)?;
                }
            }
            Command::SendShortMessage(c) => {
                if let Some(a) = &c.alpha_id {
                    a.put(&mut b, tag::ALPHA_IDENTIFIER | CR)?;
                }
                if let Some(a) = &c.address {
                    put_tlv(&mut b, tag::ADDRESS | CR, &a.encode_value()?)?;
                }
                put_tlv(&mut b, tag::SMS_TPDU | CR, &c.tpdu)?;
            }
            Command::PlayTone(c) => {
                if let Some(a) = &c.alpha_id {
                    a.put(&mut b, tag::ALPHA_IDENTIFIER | CR)?;
                }
                if let Some(t) = c.tone {
                    put_tlv(&mut b, tag::TONE | CR, &[t.into()])?;
                }
                if let Some(d) = &c.duration {
                    put_tlv(&mut b, tag::DURATION | CR, &d.encode_value()?)?;
                }
            }
            Command::Unsupported { tlvs, .. } => b.extend_from_slice(tlvs),
        }
        let mut out = Vec::with_capacity(b.len() + 3);
        put_tlv(&mut out, PROACTIVE_COMMAND, &b)?;
        Ok(out)
    }

    /// Decode a whole FETCH response; octets after the BER-TLV are refused.
    pub fn decode(input: &[u8]) -> Result<Self, CatError> {
        let (value, value_at, rest) = read_ber(input, PROACTIVE_COMMAND)?;
        if !rest.is_empty() {
            return Err(CatError::TrailingBytes {
                at: input.len() - rest.len(),
            });
        }
        let mut list = TlvList::parse(value, value_at)?;
        let details = CommandDetails::decode_tlv(&list.require(tag::COMMAND_DETAILS | CR)?)?;
        let devices = DeviceIdentities::decode_tlv(&list.require(tag::DEVICE_IDENTITIES | CR)?)?;
        let q = details.qualifier;
        let duration = |list: &mut TlvList<'_>| {
            list.take(tag::DURATION)
                .map(|t| Duration::decode_tlv(&t))
                .transpose()
        };
        let command = match details.command_type {
            CommandType::DisplayText => {
                let text = TextString::decode_tlv(&list.require(tag::TEXT_STRING | CR)?)?;
                let immediate = match list.take(tag::IMMEDIATE_RESPONSE) {
                    Some(t) if !t.value.is_empty() => return Err(t.bad_length()),
                    Some(_) => true,
                    None => false,
                };
                Command::DisplayText(DisplayText {
                    qualifier: DisplayTextQualifier::from_octet(q),
                    text,
                    immediate_response: immediate,
                    duration: duration(&mut list)?,
                })
            }
            CommandType::GetInkey => Command::GetInkey(GetInkey {
                qualifier: GetInkeyQualifier::from_octet(q),
                text: TextString::decode_tlv(&list.require(tag::TEXT_STRING | CR)?)?,
                duration: duration(&mut list)?,
            }),
            CommandType::GetInput => Command::GetInput(GetInput {
                qualifier: GetInputQualifier::from_octet(q),
                text: TextString::decode_tlv(&list.require(tag::TEXT_STRING | CR)?)?,
                response_length: ResponseLength::decode_tlv(
                    &list.require(tag::RESPONSE_LENGTH | CR)?,
                )?,
                default_text: list
                    .take(tag::DEFAULT_TEXT)
                    .map(|t| TextString::decode_tlv(&t))
                    .transpose()?,
            }),
            CommandType::SendShortMessage => Command::SendShortMessage(SendShortMessage {
                packing_required: q & 0x01 != 0,
                alpha_id: list
                    .take(tag::ALPHA_IDENTIFIER)
                    .map(|t| AlphaId::decode_tlv(&t))
                    .transpose()?,
                address: list
                    .take(tag::ADDRESS)
                    .map(|t| Address::decode_tlv(&t))
                    .transpose()?,
                tpdu: list.require(tag::SMS_TPDU | CR)?.value.to_vec(),
            }),
            CommandType::PlayTone => Command::PlayTone(PlayTone {
                vibrate: q & 0x01 != 0,
                alpha_id: list
                    .take(tag::ALPHA_IDENTIFIER)
                    .map(|t| AlphaId::decode_tlv(&t))
                    .transpose()?,
                tone: match list.take(tag::TONE) {
                    Some(t) => match t.value {
                        [v] => Some(Tone::from(*v)),
                        _ => return Err(t.bad_length()),
                    },
                    None => None,
                },
                duration: duration(&mut list)?,
            }),
            other => {
                // Kept verbatim so that the caller can still answer (or forward) it.
                return Ok(Self {
                    number: details.number,
                    devices,
                    command: Command::Unsupported {
                        command_type: other,
                        qualifier: q,
                        tlvs: list.untaken_raw(input),
                    },
                });
            }
        };
        list.finish()?;
        Ok(Self {
            number: details.number,
            devices,
            command,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::cat::tpdu::{PacketIei, SecuredSubmit};
    use hex_literal::hex;
    use proptest::prelude::*;

    #[test]
    fn display_text_toolkit_test_1_matches_published_vector() {
        let bytes = hex!(
            "D0 1A 81 03 01 21 80 82 02 81 02 8D 0F 04 54 6F 6F 6C 6B 69 74 20 54 65 73 74 20 31"
        );
        let cmd = ProactiveCommand::new(
            1,
            Command::DisplayText(DisplayText {
                qualifier: DisplayTextQualifier {
                    high_priority: false,
                    wait_for_user_clear: true,
                },
                text: TextString::gsm7("Toolkit Test 1"),
                immediate_response: false,
                duration: None,
            }),
        );
        assert_eq!(cmd.encode().unwrap(), bytes);
        assert_eq!(ProactiveCommand::decode(&bytes).unwrap(), cmd);
    }

    #[test]
    fn display_text_ucs2_matches_published_vector() {
        let bytes = hex!("D0 24 81 03 01 21 80 82 02 81 02 8D 19 08 04 17 04 14 04 20 04 10 04 12 04 21 04 22 04 12 04 23 04 19 04 22 04 15");
        let cmd = ProactiveCommand::decode(&bytes).unwrap();
        let Command::DisplayText(dt) = &cmd.command else {
            panic!("not DISPLAY TEXT")
        };
        assert_eq!(dt.text, TextString::ucs2("ЗДРАВСТВУЙТЕ"));
        assert_eq!(cmd.encode().unwrap(), bytes);
    }

    #[test]
    fn display_text_high_priority_immediate_with_duration() {
        // Hand-built: qualifier 81, text "Hi", immediate response, duration 10 s.
        let bytes = hex!("D0 14 81 03 02 21 81 82 02 81 02 8D 03 04 48 69 2B 00 84 02 01 0A");
        let cmd = ProactiveCommand::decode(&bytes).unwrap();
        let Command::DisplayText(dt) = &cmd.command else {
            panic!("not DISPLAY TEXT")
        };
        assert!(dt.qualifier.high_priority && dt.qualifier.wait_for_user_clear);
        assert!(dt.immediate_response);
        assert_eq!(dt.duration.unwrap().as_millis(), 10_000);
        assert_eq!(cmd.encode().unwrap(), bytes);
    }

    #[test]
    fn get_inkey_matches_published_vector() {
        // TS 31.124 27.22.4.2.1 seq 1.1: "Enter \"+\"".
        let bytes = hex!("D0 15 81 03 01 22 00 82 02 81 82 8D 0A 04 45 6E 74 65 72 20 22 2B 22");
        let cmd = ProactiveCommand::decode(&bytes).unwrap();
        assert_eq!(
            cmd,
            ProactiveCommand::new(
                1,
                Command::GetInkey(GetInkey {
                    qualifier: GetInkeyQualifier::default(),
                    text: TextString::gsm7("Enter \"+\""),
                    duration: None,
                })
            )
        );
        assert_eq!(cmd.encode().unwrap(), bytes);
    }

    #[test]
    fn get_inkey_yes_no_qualifier() {
        let bytes = hex!("D0 0E 81 03 01 22 04 82 02 81 82 8D 03 04 4F 4B");
        let cmd = ProactiveCommand::decode(&bytes).unwrap();
        let Command::GetInkey(gi) = &cmd.command else {
            panic!("not GET INKEY")
        };
        assert!(gi.qualifier.yes_no && !gi.qualifier.alphabet);
        assert_eq!(cmd.encode().unwrap(), bytes);
    }

    #[test]
    fn get_input_matches_published_vector() {
        // TS 31.124 27.22.4.3.1 seq 1.1: "Enter 12345", 5..5 digits.
        let bytes = hex!("D0 1B 81 03 01 23 00 82 02 81 82 8D 0C 04 45 6E 74 65 72 20 31 32 33 34 35 91 02 05 05");
        let cmd = ProactiveCommand::decode(&bytes).unwrap();
        let Command::GetInput(gi) = &cmd.command else {
            panic!("not GET INPUT")
        };
        assert_eq!(gi.response_length, ResponseLength { min: 5, max: 5 });
        assert_eq!(gi.text.text, "Enter 12345");
        assert_eq!(cmd.encode().unwrap(), bytes);
    }

    #[test]
    fn hidden_get_input_for_pin_with_min_max_and_default_text() {
        let cmd = ProactiveCommand::new(
            3,
            Command::GetInput(GetInput {
                qualifier: GetInputQualifier {
                    hidden: true,
                    ..Default::default()
                },
                text: TextString::gsm7("PIN"),
                response_length: ResponseLength { min: 4, max: 8 },
                default_text: Some(TextString::gsm7("")),
            }),
        );
        let bytes = hex!("D0 16 81 03 03 23 04 82 02 81 82 8D 04 04 50 49 4E 91 02 04 08 17 01 04");
        assert_eq!(cmd.encode().unwrap(), bytes);
        assert_eq!(ProactiveCommand::decode(&bytes).unwrap(), cmd);
    }

    #[test]
    fn get_input_without_response_length_is_missing_tlv() {
        let bytes = hex!("D0 0D 81 03 01 23 00 82 02 81 82 8D 02 04 41");
        assert_eq!(
            ProactiveCommand::decode(&bytes),
            Err(CatError::MissingTlv { tag: 0x91 })
        );
    }

    #[test]
    fn send_short_message_matches_published_vector() {
        // TS 31.124 27.22.4.10.1 seq 1.1.
        let bytes = hex!(
            "D0 37 81 03 01 13 00 82 02 81 83 85 07 53 65 6E 64 20 53 4D 86 09 91 11 22 33 44
             55 66 77 F8 8B 18 01 00 09 91 10 32 54 76 F8 40 F4 0C 54 65 73 74 20 4D 65 73 73
             61 67 65"
        );
        let cmd = ProactiveCommand::decode(&bytes).unwrap();
        let Command::SendShortMessage(sm) = &cmd.command else {
            panic!("not SEND SHORT MESSAGE")
        };
        assert_eq!(sm.alpha_id, Some(AlphaId("Send SM".into())));
        assert_eq!(sm.address, Some(Address::international("112233445566778")));
        assert_eq!(sm.tpdu.len(), 0x18);
        assert_eq!(cmd.devices.destination, DeviceId::Network);
        assert_eq!(cmd.encode().unwrap(), bytes);
    }

    #[test]
    fn send_short_message_carries_a_secured_submit() {
        let submit = SecuredSubmit {
            message_reference: 0,
            destination: Address::international("48600000000"),
            iei: PacketIei::Response,
            packet: vec![0xAA; 10],
        };
        let cmd = ProactiveCommand::new(
            1,
            Command::SendShortMessage(SendShortMessage {
                packing_required: false,
                alpha_id: None,
                address: None,
                tpdu: submit.encode().unwrap(),
            }),
        );
        let back = ProactiveCommand::decode(&cmd.encode().unwrap()).unwrap();
        let Command::SendShortMessage(sm) = back.command else {
            panic!("not SEND SHORT MESSAGE")
        };
        assert_eq!(SecuredSubmit::decode(&sm.tpdu).unwrap(), submit);
    }

    #[test]
    fn play_tone_matches_published_vector() {
        // TS 31.124 27.22.4.5.1 seq 1.1: "Dial Tone", tone 01, 5 s.
        let bytes = hex!("D0 1B 81 03 01 20 00 82 02 81 03 85 09 44 69 61 6C 20 54 6F 6E 65 8E 01 01 84 02 01 05");
        let cmd = ProactiveCommand::decode(&bytes).unwrap();
        assert_eq!(
            cmd,
            ProactiveCommand::new(
                1,
                Command::PlayTone(PlayTone {
                    vibrate: false,
                    alpha_id: Some(AlphaId("Dial Tone".into())),
                    tone: Some(Tone::DialTone),
                    duration: Some(Duration::seconds(5)),
                })
            )
        );
        assert_eq!(cmd.encode().unwrap(), bytes);
    }

    #[test]
    fn unsupported_command_keeps_its_objects() {
        // SELECT ITEM with one item (8F 02 01 41).
        let bytes = hex!("D0 0D 81 03 01 24 00 82 02 81 82 8F 02 01 41");
        let cmd = ProactiveCommand::decode(&bytes).unwrap();
        assert_eq!(
            cmd.command,
            Command::Unsupported {
                command_type: CommandType::SelectItem,
                qualifier: 0,
                tlvs: hex!("8F 02 01 41").to_vec()
            }
        );
        assert_eq!(cmd.encode().unwrap(), bytes);
    }

    #[test]
    fn malformed_commands_name_tag_and_offset() {
        // Length past end of the text string.
        assert_eq!(
            ProactiveCommand::decode(&hex!("D0 10 81 03 01 21 80 82 02 81 02 8D 09 04 41 42")),
            Err(CatError::Truncated { tag: 0xD0, at: 0 })
        );
        assert_eq!(
            ProactiveCommand::decode(&hex!("D0 0C 81 03 01 21 80 82 02 81 02 8D 09 04")),
            Err(CatError::Truncated { tag: 0x8D, at: 11 })
        );
        // Truncated length of the device identities.
        assert_eq!(
            ProactiveCommand::decode(&hex!("D0 06 81 03 01 21 80 82")),
            Err(CatError::Truncated { tag: 0x82, at: 7 })
        );
        // Missing text string.
        assert_eq!(
            ProactiveCommand::decode(&hex!("D0 09 81 03 01 21 80 82 02 81 02")),
            Err(CatError::MissingTlv { tag: 0x8D })
        );
        // Command details of the wrong length.
        assert_eq!(
            ProactiveCommand::decode(&hex!("D0 08 81 02 01 21 82 02 81 02")),
            Err(CatError::BadLength { tag: 0x81, at: 2 })
        );
        // Unknown comprehension-required object.
        assert_eq!(
            ProactiveCommand::decode(&hex!("D0 0E 81 03 01 21 80 82 02 81 02 8D 01 04 BC 00")),
            Err(CatError::UnexpectedTag { tag: 0xBC, at: 14 })
        );
        // Wrong BER tag, and trailing octets.
        assert_eq!(
            ProactiveCommand::decode(&hex!("D1 00")),
            Err(CatError::UnexpectedTag { tag: 0xD1, at: 0 })
        );
        assert_eq!(
            ProactiveCommand::decode(&hex!("D0 0C 81 03 01 21 80 82 02 81 02 8D 01 04 00")),
            Err(CatError::TrailingBytes { at: 14 })
        );
    }

    #[test]
    fn unknown_optional_object_is_skipped() {
        // Icon identifier without CR (1E 02 00 01) is not understood, but not required.
        let bytes = hex!("D0 12 81 03 01 21 80 82 02 81 02 8D 03 04 48 69 1E 02 00 01");
        assert!(ProactiveCommand::decode(&bytes).is_ok());
    }

    fn text() -> impl Strategy<Value = TextString> {
        (
            "[A-Za-z0-9 ?!.:ąż]{0,40}",
            prop_oneof![Just(0u8), Just(1), Just(2)],
        )
            .prop_map(|(t, d)| match d {
                0 if t.is_ascii() => TextString::packed(t),
                1 if t.is_ascii() => TextString::gsm7(t),
                _ => TextString::ucs2(t),
            })
    }

    fn duration() -> impl Strategy<Value = Option<Duration>> {
        proptest::option::of(
            (
                prop_oneof![
                    Just(crate::cat::TimeUnit::Minutes),
                    Just(crate::cat::TimeUnit::Seconds),
                    Just(crate::cat::TimeUnit::Tenths)
                ],
                1u8..,
            )
                .prop_map(|(unit, interval)| Duration { unit, interval }),
        )
    }

    fn command() -> impl Strategy<Value = Command> {
        prop_oneof![
            (any::<(bool, bool, bool)>(), text(), duration()).prop_map(
                |((h, w, i), text, duration)| {
                    Command::DisplayText(DisplayText {
                        qualifier: DisplayTextQualifier {
                            high_priority: h,
                            wait_for_user_clear: w,
                        },
                        text,
                        immediate_response: i,
                        duration,
                    })
                }
            ),
            (any::<u8>(), text(), duration()).prop_map(|(q, text, duration)| {
                Command::GetInkey(GetInkey {
                    qualifier: GetInkeyQualifier::from_octet(q),
                    text,
                    duration,
                })
            }),
            (
                any::<u8>(),
                text(),
                any::<(u8, u8)>(),
                proptest::option::of(text())
            )
                .prop_map(|(q, text, (a, b), default_text)| {
                    Command::GetInput(GetInput {
                        qualifier: GetInputQualifier::from_octet(q),
                        text,
                        response_length: ResponseLength {
                            min: a.min(b),
                            max: a.max(b),
                        },
                        default_text,
                    })
                }),
            (
                any::<bool>(),
                proptest::option::of("[A-Za-z ż]{0,20}"),
                proptest::option::of("[0-9*#]{0,20}"),
                proptest::collection::vec(any::<u8>(), 0..120)
            )
                .prop_map(|(p, alpha, addr, tpdu)| {
                    Command::SendShortMessage(SendShortMessage {
                        packing_required: p,
                        alpha_id: alpha.map(AlphaId),
                        address: addr.map(Address::international),
                        tpdu,
                    })
                }),
            (
                any::<bool>(),
                proptest::option::of("[A-Za-z ]{0,20}"),
                proptest::option::of(any::<u8>()),
                duration()
            )
                .prop_map(|(v, alpha, tone, duration)| Command::PlayTone(PlayTone {
                    vibrate: v,
                    alpha_id: alpha.map(AlphaId),
                    tone: tone.map(Tone::from),
                    duration,
                })),
            (
                any::<u8>(),
                proptest::collection::vec(
                    (
                        3u8..0x7F,
                        any::<bool>(),
                        proptest::collection::vec(any::<u8>(), 0..20)
                    ),
                    0..5
                )
            )
                .prop_map(|(q, objs)| {
                    let mut tlvs = Vec::new();
                    for (t, cr, v) in objs {
                        put_tlv(&mut tlvs, if cr { t | CR } else { t }, &v).unwrap();
                    }
                    Command::Unsupported {
                        command_type: CommandType::SelectItem,
                        qualifier: q,
                        tlvs,
                    }
                }),
        ]
    }

    proptest! {
        #[test]
        fn proactive_command_round_trips(number in any::<u8>(), devices in any::<(u8, u8)>(), command in command()) {
            let cmd = ProactiveCommand {
                number,
                devices: DeviceIdentities::new(devices.0.into(), devices.1.into()),
                command,
            };
            let bytes = cmd.encode().unwrap();
            prop_assert_eq!(ProactiveCommand::decode(&bytes).unwrap(), cmd);
        }

        #[test]
        fn proactive_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = ProactiveCommand::decode(&bytes);
        }

        #[test]
        fn proactive_decoder_never_panics_on_plausible_commands(t in prop_oneof![Just(0x13u8), Just(0x20), Just(0x21), Just(0x22), Just(0x23), any::<u8>()], q in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..120)) {
            let mut v = vec![0x81, 0x03, 0x01, t, q, 0x82, 0x02, 0x81, 0x82];
            v.extend(body);
            let mut bytes = vec![0xD0];
            crate::cat::tlv::put_length(&mut bytes, 0xD0, v.len()).unwrap();
            bytes.extend(v);
            let _ = ProactiveCommand::decode(&bytes);
        }
    }
}
