//! Simple COMPREHENSION-TLV data objects shared by commands, responses and envelopes: command
//! details, device identities, duration, address, response length and tone. Each has a value
//! encoder and a decoder from a walked [`Tlv`].

use super::tlv::Tlv;
use super::CatError;

/// Type of a proactive command (TS 102 223 §9.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandType {
    SendShortMessage,
    PlayTone,
    DisplayText,
    GetInkey,
    GetInput,
    SelectItem,
    SetUpMenu,
    Other(u8),
}

impl From<u8> for CommandType {
    fn from(v: u8) -> Self {
        match v {
            0x13 => CommandType::SendShortMessage,
            0x20 => CommandType::PlayTone,
            0x21 => CommandType::DisplayText,
            0x22 => CommandType::GetInkey,
            0x23 => CommandType::GetInput,
            0x24 => CommandType::SelectItem,
            0x25 => CommandType::SetUpMenu,
            other => CommandType::Other(other),
        }
    }
}

impl From<CommandType> for u8 {
    fn from(t: CommandType) -> u8 {
        match t {
            CommandType::SendShortMessage => 0x13,
            CommandType::PlayTone => 0x20,
            CommandType::DisplayText => 0x21,
            CommandType::GetInkey => 0x22,
            CommandType::GetInput => 0x23,
            CommandType::SelectItem => 0x24,
            CommandType::SetUpMenu => 0x25,
            CommandType::Other(v) => v,
        }
    }
}

/// Command details (`81 03 number type qualifier`), echoed in the terminal response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommandDetails {
    pub number: u8,
    pub command_type: CommandType,
    pub qualifier: u8,
}

impl CommandDetails {
    pub fn encode_value(&self) -> [u8; 3] {
        [self.number, self.command_type.into(), self.qualifier]
    }

    pub fn decode_tlv(tlv: &Tlv<'_>) -> Result<Self, CatError> {
        match tlv.value {
            [number, t, qualifier] => Ok(Self {
                number: *number,
                command_type: CommandType::from(*t),
                qualifier: *qualifier,
            }),
            _ => Err(tlv.bad_length()),
        }
    }
}

/// A device identity (TS 102 223 §8.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceId {
    Keypad,
    Display,
    Earpiece,
    Uicc,
    Terminal,
    Network,
    Other(u8),
}

impl From<u8> for DeviceId {
    fn from(v: u8) -> Self {
        match v {
            0x01 => DeviceId::Keypad,
            0x02 => DeviceId::Display,
            0x03 => DeviceId::Earpiece,
            0x81 => DeviceId::Uicc,
            0x82 => DeviceId::Terminal,
            0x83 => DeviceId::Network,
            other => DeviceId::Other(other),
        }
    }
}

impl From<DeviceId> for u8 {
    fn from(d: DeviceId) -> u8 {
        match d {
            DeviceId::Keypad => 0x01,
            DeviceId::Display => 0x02,
            DeviceId::Earpiece => 0x03,
            DeviceId::Uicc => 0x81,
            DeviceId::Terminal => 0x82,
            DeviceId::Network => 0x83,
            DeviceId::Other(v) => v,
        }
    }
}

/// Device identities (`82 02 source destination`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceIdentities {
    pub source: DeviceId,
    pub destination: DeviceId,
}

impl DeviceIdentities {
    pub fn new(source: DeviceId, destination: DeviceId) -> Self {
        Self {
            source,
            destination,
        }
    }

    pub fn encode_value(&self) -> [u8; 2] {
        [self.source.into(), self.destination.into()]
    }

    pub fn decode_tlv(tlv: &Tlv<'_>) -> Result<Self, CatError> {
        match tlv.value {
            [s, d] => Ok(Self::new(DeviceId::from(*s), DeviceId::from(*d))),
            _ => Err(tlv.bad_length()),
        }
    }
}

/// Time unit of a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeUnit {
    Minutes,
    Seconds,
    Tenths,
}

/// Duration (`84 02 unit interval`); the interval is 1..=255 units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Duration {
    pub unit: TimeUnit,
    pub interval: u8,
}

impl Duration {
    pub fn seconds(interval: u8) -> Self {
        Self {
            unit: TimeUnit::Seconds,
            interval,
        }
    }

    /// The duration in milliseconds.
    pub fn as_millis(&self) -> u64 {
        let per = match self.unit {
            TimeUnit::Minutes => 60_000,
            TimeUnit::Seconds => 1_000,
            TimeUnit::Tenths => 100,
        };
        per * u64::from(self.interval)
    }

    pub fn encode_value(&self) -> Result<[u8; 2], CatError> {
        if self.interval == 0 {
            return Err(CatError::Invalid {
                field: "duration interval",
                reason: "0 is reserved",
            });
        }
        let unit = match self.unit {
            TimeUnit::Minutes => 0x00,
            TimeUnit::Seconds => 0x01,
            TimeUnit::Tenths => 0x02,
        };
        Ok([unit, self.interval])
    }

    pub fn decode_tlv(tlv: &Tlv<'_>) -> Result<Self, CatError> {
        let [unit, interval] = tlv.value else {
            return Err(tlv.bad_length());
        };
        let unit = match unit {
            0x00 => TimeUnit::Minutes,
            0x01 => TimeUnit::Seconds,
            0x02 => TimeUnit::Tenths,
            _ => return Err(tlv.bad_value("unknown time unit")),
        };
        if *interval == 0 {
            return Err(tlv.bad_value("duration interval 0 is reserved"));
        }
        Ok(Self {
            unit,
            interval: *interval,
        })
    }
}

/// A dialling number: TON/NPI octet and digits (`0-9`, `*`, `#`, and `c`/`d`/`e` for the BCD
/// values C, D, E). Used by the Address data object (`06`) and by TP addresses in TPDUs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    pub ton_npi: u8,
    pub digits: String,
}

/// Longest digit string we accept anywhere (TP addresses carry at most 20).
pub const MAX_ADDRESS_DIGITS: usize = 40;

impl Address {
    /// International number, ISDN numbering plan (TON/NPI 0x91).
    pub fn international(digits: impl Into<String>) -> Self {
        Self {
            ton_npi: 0x91,
            digits: digits.into(),
        }
    }

    fn nibble(c: char) -> Option<u8> {
        match c {
            '0'..='9' => Some(c as u8 - b'0'),
            '*' => Some(0x0A),
            '#' => Some(0x0B),
            'c' => Some(0x0C),
            'd' => Some(0x0D),
            'e' => Some(0x0E),
            _ => None,
        }
    }

    fn digit(n: u8) -> Option<char> {
        match n {
            0..=9 => Some(char::from(b'0' + n)),
            0x0A => Some('*'),
            0x0B => Some('#'),
            0x0C => Some('c'),
            0x0D => Some('d'),
            0x0E => Some('e'),
            _ => None,
        }
    }

    /// Digits as swapped BCD, F-filled.
    pub fn bcd(&self) -> Result<Vec<u8>, CatError> {
        if self.digits.chars().count() > MAX_ADDRESS_DIGITS {
            return Err(CatError::Invalid {
                field: "address digits",
                reason: "too many digits",
            });
        }
        let nibbles = self
            .digits
            .chars()
            .map(Self::nibble)
            .collect::<Option<Vec<u8>>>()
            .ok_or(CatError::Invalid {
                field: "address digits",
                reason: "not a BCD dialling digit",
            })?;
        Ok(nibbles
            .chunks(2)
            .map(|c| c[0] | (c.get(1).copied().unwrap_or(0x0F) << 4))
            .collect())
    }

    /// Parse swapped BCD; F ends the digits and only F may follow it. `None` on a bad digit.
    pub fn digits_from_bcd(bcd: &[u8]) -> Option<String> {
        let mut out = String::new();
        let mut ended = false;
        for n in bcd.iter().flat_map(|b| [b & 0x0F, b >> 4]) {
            if n == 0x0F {
                ended = true;
            } else if ended {
                return None;
            } else {
                out.push(Self::digit(n)?);
            }
        }
        Some(out)
    }

    /// Value of the Address data object: TON/NPI then BCD.
    pub fn encode_value(&self) -> Result<Vec<u8>, CatError> {
        let mut out = vec![self.ton_npi];
        out.extend(self.bcd()?);
        Ok(out)
    }

    pub fn decode_tlv(tlv: &Tlv<'_>) -> Result<Self, CatError> {
        let Some((&ton_npi, bcd)) = tlv.value.split_first() else {
            return Err(tlv.bad_length());
        };
        if bcd.len() * 2 > MAX_ADDRESS_DIGITS {
            return Err(tlv.bad_length());
        }
        let digits =
            Self::digits_from_bcd(bcd).ok_or(tlv.bad_value("address is not swapped BCD"))?;
        Ok(Self { ton_npi, digits })
    }
}

/// Response length for GET INPUT (`91 02 min max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResponseLength {
    pub min: u8,
    pub max: u8,
}

impl ResponseLength {
    pub fn encode_value(&self) -> Result<[u8; 2], CatError> {
        if self.min > self.max {
            return Err(CatError::Invalid {
                field: "response length",
                reason: "minimum above maximum",
            });
        }
        Ok([self.min, self.max])
    }

    pub fn decode_tlv(tlv: &Tlv<'_>) -> Result<Self, CatError> {
        let [min, max] = tlv.value else {
            return Err(tlv.bad_length());
        };
        if min > max {
            return Err(tlv.bad_value("minimum response length above maximum"));
        }
        Ok(Self {
            min: *min,
            max: *max,
        })
    }
}

/// Tone for PLAY TONE (TS 102 223 §8.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tone {
    DialTone,
    CalledSubscriberBusy,
    Congestion,
    RadioPathAcknowledge,
    RadioPathNotAvailable,
    Error,
    CallWaiting,
    Ringing,
    GeneralBeep,
    PositiveAcknowledgement,
    NegativeAcknowledgement,
    UserSelectedRinging,
    SmsAlert,
    Other(u8),
}

impl From<u8> for Tone {
    fn from(v: u8) -> Self {
        match v {
            0x01 => Tone::DialTone,
            0x02 => Tone::CalledSubscriberBusy,
            0x03 => Tone::Congestion,
            0x04 => Tone::RadioPathAcknowledge,
            0x05 => Tone::RadioPathNotAvailable,
            0x06 => Tone::Error,
            0x07 => Tone::CallWaiting,
            0x08 => Tone::Ringing,
            0x10 => Tone::GeneralBeep,
            0x11 => Tone::PositiveAcknowledgement,
            0x12 => Tone::NegativeAcknowledgement,
            0x13 => Tone::UserSelectedRinging,
            0x14 => Tone::SmsAlert,
            other => Tone::Other(other),
        }
    }
}

impl From<Tone> for u8 {
    fn from(t: Tone) -> u8 {
        match t {
            Tone::DialTone => 0x01,
            Tone::CalledSubscriberBusy => 0x02,
            Tone::Congestion => 0x03,
            Tone::RadioPathAcknowledge => 0x04,
            Tone::RadioPathNotAvailable => 0x05,
            Tone::Error => 0x06,
            Tone::CallWaiting => 0x07,
            Tone::Ringing => 0x08,
            Tone::GeneralBeep => 0x10,
            Tone::PositiveAcknowledgement => 0x11,
            Tone::NegativeAcknowledgement => 0x12,
            Tone::UserSelectedRinging => 0x13,
            Tone::SmsAlert => 0x14,
            Tone::Other(v) => v,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::tlv::walk;
    use super::*;
    use hex_literal::hex;

    #[test]
    fn address_is_swapped_bcd_with_f_filler() {
        let a = Address::international("112233445566778");
        assert_eq!(
            a.encode_value().unwrap(),
            hex!("91 11 22 33 44 55 66 77 F8")
        );
        let buf = hex!("86 09 91 11 22 33 44 55 66 77 F8");
        assert_eq!(Address::decode_tlv(&walk(&buf, 0).unwrap()[0]).unwrap(), a);
    }

    #[test]
    fn address_with_digit_after_filler_is_refused() {
        let buf = hex!("86 03 91 F1 21");
        assert!(matches!(
            Address::decode_tlv(&walk(&buf, 0).unwrap()[0]),
            Err(CatError::BadValue {
                tag: 0x86,
                at: 0,
                ..
            })
        ));
    }

    #[test]
    fn duration_units_and_reserved_zero() {
        let buf = hex!("84 02 02 0F");
        let d = Duration::decode_tlv(&walk(&buf, 0).unwrap()[0]).unwrap();
        assert_eq!(d.as_millis(), 1_500);
        let buf = hex!("84 02 01 00");
        assert!(Duration::decode_tlv(&walk(&buf, 0).unwrap()[0]).is_err());
        let buf = hex!("84 01 01");
        assert_eq!(
            Duration::decode_tlv(&walk(&buf, 0).unwrap()[0]),
            Err(CatError::BadLength { tag: 0x84, at: 0 })
        );
    }
}
