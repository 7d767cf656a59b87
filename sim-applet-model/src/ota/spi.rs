//! The two-octet security parameter indicator (SPI) of TS 102 225 §5.1.1, parsed into typed
//! fields and encoded back bit for bit (reserved bits are kept).

/// Kind of integrity check: SPI octet 1 bits 1-2 (command), octet 2 bits 3-4 (PoR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ChecksumKind {
    /// No RC, CC or DS.
    #[default]
    None,
    /// Redundancy check.
    Rc,
    /// Cryptographic checksum.
    Cc,
    /// Digital signature.
    Ds,
}

impl ChecksumKind {
    fn from_bits(b: u8) -> Self {
        match b & 0b11 {
            0b00 => ChecksumKind::None,
            0b01 => ChecksumKind::Rc,
            0b10 => ChecksumKind::Cc,
            _ => ChecksumKind::Ds,
        }
    }

    fn bits(self) -> u8 {
        match self {
            ChecksumKind::None => 0b00,
            ChecksumKind::Rc => 0b01,
            ChecksumKind::Cc => 0b10,
            ChecksumKind::Ds => 0b11,
        }
    }
}

/// Counter policy: SPI octet 1 bits 4-5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CounterPolicy {
    /// No counter available (the counter field is still present, and ignored).
    #[default]
    NoCounter,
    /// Counter available, not checked.
    Present,
    /// Process only if the counter is higher than the one stored.
    Higher,
    /// Process only if the counter is exactly one higher than the one stored.
    OneHigher,
}

impl CounterPolicy {
    fn from_bits(b: u8) -> Self {
        match b & 0b11 {
            0b00 => CounterPolicy::NoCounter,
            0b01 => CounterPolicy::Present,
            0b10 => CounterPolicy::Higher,
            _ => CounterPolicy::OneHigher,
        }
    }

    fn bits(self) -> u8 {
        match self {
            CounterPolicy::NoCounter => 0b00,
            CounterPolicy::Present => 0b01,
            CounterPolicy::Higher => 0b10,
            CounterPolicy::OneHigher => 0b11,
        }
    }
}

/// When a proof of receipt is wanted: SPI octet 2 bits 1-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PorRequired {
    /// No PoR.
    #[default]
    None,
    /// PoR required.
    Required,
    /// PoR required only when an error occurred.
    OnError,
    /// The reserved value `11`, kept so the SPI re-encodes exactly.
    Reserved,
}

impl PorRequired {
    fn from_bits(b: u8) -> Self {
        match b & 0b11 {
            0b00 => PorRequired::None,
            0b01 => PorRequired::Required,
            0b10 => PorRequired::OnError,
            _ => PorRequired::Reserved,
        }
    }

    fn bits(self) -> u8 {
        match self {
            PorRequired::None => 0b00,
            PorRequired::Required => 0b01,
            PorRequired::OnError => 0b10,
            PorRequired::Reserved => 0b11,
        }
    }
}

/// Reserved bits of SPI octet 1 (bits 6-8) and octet 2 (bits 7-8).
const RESERVED_1: u8 = 0xE0;
const RESERVED_2: u8 = 0xC0;

/// Security parameter indicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Spi {
    /// Integrity check on the command packet.
    pub checksum: ChecksumKind,
    /// Command packet ciphered.
    pub ciphered: bool,
    /// Counter policy.
    pub counter: CounterPolicy,
    /// When to send a PoR.
    pub por: PorRequired,
    /// Integrity check on the PoR.
    pub por_checksum: ChecksumKind,
    /// PoR ciphered.
    pub por_ciphered: bool,
    /// PoR sent with SMS-SUBMIT instead of the SMS-DELIVER-REPORT.
    pub por_via_sms_submit: bool,
    /// Reserved bits as received (octet 1 bits 6-8, octet 2 bits 7-8); other bits are ignored.
    pub reserved: [u8; 2],
}

impl Spi {
    /// Parse the two SPI octets; every value is valid.
    pub fn from_bytes(b: [u8; 2]) -> Self {
        Spi {
            checksum: ChecksumKind::from_bits(b[0]),
            ciphered: b[0] & 0x04 != 0,
            counter: CounterPolicy::from_bits(b[0] >> 3),
            por: PorRequired::from_bits(b[1]),
            por_checksum: ChecksumKind::from_bits(b[1] >> 2),
            por_ciphered: b[1] & 0x10 != 0,
            por_via_sms_submit: b[1] & 0x20 != 0,
            reserved: [b[0] & RESERVED_1, b[1] & RESERVED_2],
        }
    }

    /// The two SPI octets.
    pub fn to_bytes(self) -> [u8; 2] {
        let first = self.checksum.bits()
            | if self.ciphered { 0x04 } else { 0 }
            | self.counter.bits() << 3
            | (self.reserved[0] & RESERVED_1);
        let second = self.por.bits()
            | self.por_checksum.bits() << 2
            | if self.por_ciphered { 0x10 } else { 0 }
            | if self.por_via_sms_submit { 0x20 } else { 0 }
            | (self.reserved[1] & RESERVED_2);
        [first, second]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pysim_spi_0619_is_cc_ciphered_por_required_cc_ciphered() {
        let spi = Spi::from_bytes([0x06, 0x19]);
        assert_eq!(spi.checksum, ChecksumKind::Cc);
        assert!(spi.ciphered);
        assert_eq!(spi.counter, CounterPolicy::NoCounter);
        assert_eq!(spi.por, PorRequired::Required);
        assert_eq!(spi.por_checksum, ChecksumKind::Cc);
        assert!(spi.por_ciphered);
        assert!(!spi.por_via_sms_submit);
        assert_eq!(spi.reserved, [0, 0]);
        assert_eq!(spi.to_bytes(), [0x06, 0x19]);
    }

    #[test]
    fn counter_policy_bits_are_four_and_five() {
        assert_eq!(Spi::from_bytes([0x08, 0]).counter, CounterPolicy::Present);
        assert_eq!(Spi::from_bytes([0x10, 0]).counter, CounterPolicy::Higher);
        assert_eq!(Spi::from_bytes([0x18, 0]).counter, CounterPolicy::OneHigher);
        assert!(Spi::from_bytes([0, 0x20]).por_via_sms_submit);
        assert_eq!(Spi::from_bytes([0, 0x02]).por, PorRequired::OnError);
    }

    #[test]
    fn every_spi_value_round_trips_with_reserved_bits() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                assert_eq!(Spi::from_bytes([a, b]).to_bytes(), [a, b]);
            }
        }
    }
}
