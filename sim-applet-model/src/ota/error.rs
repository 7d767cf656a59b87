//! The OTA error type and the response status codes (RSC) it maps to, in one place.

use thiserror::Error;

use super::keys::{Algorithm, KeyRole};
use super::spi::ChecksumKind;

/// Why a secured packet could not be built or accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OtaError {
    /// The input ends inside `field`, which starts at offset `at`.
    #[error("{field} truncated at offset {at}")]
    Truncated { field: &'static str, at: usize },
    /// A length field disagrees with the octets that follow it.
    #[error("{field} declares {declared} octets but {actual} follow")]
    LengthMismatch {
        field: &'static str,
        declared: usize,
        actual: usize,
    },
    /// CHL/RHL disagrees with the length the SPI and KID imply.
    #[error("{field} at offset {at} is {got}, the SPI and KID imply {expected}")]
    HeaderLength {
        field: &'static str,
        at: usize,
        expected: usize,
        got: usize,
    },
    /// The user data header is not the expected `02 70 00` / `02 71 00`.
    #[error("user data header {found:02x?} is not {expected:02x?}")]
    UnexpectedUdh { expected: [u8; 3], found: Vec<u8> },
    /// The ciphered part is not a whole number of cipher blocks.
    #[error("ciphered part starting at offset {at} is {len} octets, not a multiple of {block}")]
    NotBlockAligned { at: usize, len: usize, block: usize },
    /// PCNTR counts more padding than there are octets after the checksum.
    #[error("padding counter {pcntr} exceeds the {available} octets of data and padding")]
    PaddingTooLong { pcntr: u8, available: usize },
    /// The cryptographic checksum does not match.
    #[error("cryptographic checksum mismatch")]
    CcMismatch,
    /// No key set is known for this TAR (and key indexes).
    #[error("unknown TAR {tar:02x?}")]
    UnknownTar { tar: [u8; 3] },
    /// The KIc/KID names an algorithm we do not implement.
    #[error("{role:?} algorithm {algorithm:?} is not supported")]
    UnsupportedAlgorithm { role: KeyRole, algorithm: Algorithm },
    /// The SPI asks for a checksum kind we do not implement (RC, DS).
    #[error("checksum kind {kind:?} is not supported")]
    UnsupportedChecksum { kind: ChecksumKind },
    /// The key provisioned for `role` has the wrong length for the algorithm.
    #[error("{role:?} key for {algorithm:?} is {got} octets")]
    WrongKeyLength {
        role: KeyRole,
        algorithm: Algorithm,
        got: usize,
    },
    /// A counter above the 40-bit maximum.
    #[error("counter {0:#x} does not fit in 5 octets")]
    CounterOutOfRange(u64),
    /// The encoded packet would not fit its 16-bit length field.
    #[error("packet of {len} octets exceeds the maximum of {max}")]
    TooLong { len: usize, max: usize },
}

impl OtaError {
    /// The response status a card answers with when a command packet fails this way.
    pub fn response_status(&self) -> ResponseStatus {
        match self {
            OtaError::CcMismatch => ResponseStatus::ChecksumFailed,
            OtaError::NotBlockAligned { .. } | OtaError::PaddingTooLong { .. } => {
                ResponseStatus::CipheringError
            }
            OtaError::UnknownTar { .. } => ResponseStatus::TarUnknown,
            OtaError::Truncated { .. }
            | OtaError::LengthMismatch { .. }
            | OtaError::HeaderLength { .. }
            | OtaError::UnexpectedUdh { .. }
            | OtaError::UnsupportedAlgorithm { .. }
            | OtaError::UnsupportedChecksum { .. }
            | OtaError::WrongKeyLength { .. }
            | OtaError::CounterOutOfRange(_)
            | OtaError::TooLong { .. } => ResponseStatus::UnidentifiedSecurityError,
        }
    }
}

/// Response status code (RSC) of a proof of receipt, TS 102 225 §5.2.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseStatus {
    /// 00: PoR OK.
    PorOk,
    /// 01: RC/CC/DS failed.
    ChecksumFailed,
    /// 02: counter low.
    CounterLow,
    /// 03: counter high.
    CounterHigh,
    /// 04: counter blocked.
    CounterBlocked,
    /// 05: ciphering error.
    CipheringError,
    /// 06: unidentified security error.
    UnidentifiedSecurityError,
    /// 07: insufficient memory to process the incoming message.
    InsufficientMemory,
    /// 08: more time needed to process the command.
    MoreTime,
    /// 09: TAR unknown.
    TarUnknown,
    /// 0A: insufficient security level.
    InsufficientSecurityLevel,
    /// 0B: the actual response data is sent using SMS-SUBMIT.
    PorViaSmsSubmit,
    /// 0C: the actual response data is sent using a USSD operation.
    PorViaUssd,
    /// Any other (reserved) value, kept so that decoding is lossless.
    Reserved(u8),
}

impl ResponseStatus {
    /// The RSC octet.
    pub fn to_byte(self) -> u8 {
        match self {
            ResponseStatus::PorOk => 0x00,
            ResponseStatus::ChecksumFailed => 0x01,
            ResponseStatus::CounterLow => 0x02,
            ResponseStatus::CounterHigh => 0x03,
            ResponseStatus::CounterBlocked => 0x04,
            ResponseStatus::CipheringError => 0x05,
            ResponseStatus::UnidentifiedSecurityError => 0x06,
            ResponseStatus::InsufficientMemory => 0x07,
            ResponseStatus::MoreTime => 0x08,
            ResponseStatus::TarUnknown => 0x09,
            ResponseStatus::InsufficientSecurityLevel => 0x0A,
            ResponseStatus::PorViaSmsSubmit => 0x0B,
            ResponseStatus::PorViaUssd => 0x0C,
            ResponseStatus::Reserved(b) => b,
        }
    }

    /// Parse an RSC octet; values the spec reserves become [`ResponseStatus::Reserved`].
    pub fn from_byte(b: u8) -> Self {
        match b {
            0x00 => ResponseStatus::PorOk,
            0x01 => ResponseStatus::ChecksumFailed,
            0x02 => ResponseStatus::CounterLow,
            0x03 => ResponseStatus::CounterHigh,
            0x04 => ResponseStatus::CounterBlocked,
            0x05 => ResponseStatus::CipheringError,
            0x06 => ResponseStatus::UnidentifiedSecurityError,
            0x07 => ResponseStatus::InsufficientMemory,
            0x08 => ResponseStatus::MoreTime,
            0x09 => ResponseStatus::TarUnknown,
            0x0A => ResponseStatus::InsufficientSecurityLevel,
            0x0B => ResponseStatus::PorViaSmsSubmit,
            0x0C => ResponseStatus::PorViaUssd,
            other => ResponseStatus::Reserved(other),
        }
    }

    /// Whether this status reports a failure (everything except OK and the "sent elsewhere" notes).
    pub fn is_error(self) -> bool {
        !matches!(
            self,
            ResponseStatus::PorOk
                | ResponseStatus::MoreTime
                | ResponseStatus::PorViaSmsSubmit
                | ResponseStatus::PorViaUssd
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_status_octet_round_trips() {
        for b in 0..=255u8 {
            assert_eq!(ResponseStatus::from_byte(b).to_byte(), b);
        }
        assert_eq!(
            ResponseStatus::from_byte(0x0A),
            ResponseStatus::InsufficientSecurityLevel
        );
        assert_eq!(
            ResponseStatus::from_byte(0x0D),
            ResponseStatus::Reserved(0x0D)
        );
    }

    #[test]
    fn errors_map_to_the_status_a_card_answers_with() {
        assert_eq!(
            OtaError::CcMismatch.response_status(),
            ResponseStatus::ChecksumFailed
        );
        assert_eq!(
            OtaError::UnknownTar { tar: [1, 2, 3] }.response_status(),
            ResponseStatus::TarUnknown
        );
        assert_eq!(
            OtaError::NotBlockAligned {
                at: 10,
                len: 7,
                block: 8
            }
            .response_status(),
            ResponseStatus::CipheringError
        );
        assert_eq!(
            OtaError::Truncated {
                field: "CPL",
                at: 0
            }
            .response_status(),
            ResponseStatus::UnidentifiedSecurityError
        );
    }
}
