//! Secured packets of ETSI TS 102 225 / 3GPP TS 31.115, as carried by SMS-PP data download.
//!
//! Data flow, sender side: a [`CommandPacket`] (SPI, KIc, KID, TAR, counter, application data)
//! is encoded with a [`KeySet`] into `CPL .. padding`: the data is padded to the cipher block,
//! the cryptographic checksum is computed over the clear packet, then everything from the
//! counter on is ciphered. [`CommandPacket::encode_sms`] adds the `02 70 00` user data header.
//!
//! Receiver side: [`decode_command`] (or [`decode_command_sms`] for user data with the header)
//! parses the header, asks a [`KeyLookup`] for the keys of the TAR, deciphers, verifies the CC in
//! constant time and strips the padding counted in PCNTR. The counter is returned, not judged:
//! the card model keeps the last counter per key set and calls [`check_counter`]. Every failure
//! is an [`OtaError`] that maps to the [`ResponseStatus`] the card puts in its proof of receipt.
//!
//! The proof of receipt is a [`ResponsePacket`], secured per the command's SPI octet 2
//! ([`PorSecurity`]) and always carried with the `02 71 00` header, which its CC covers.
//!
//! Supported algorithms: 3DES with two or three keys and AES-128/192/256 in CBC for ciphering;
//! 3DES CBC-MAC and AES-CMAC (truncated to 8 octets) for the cryptographic checksum. Single DES,
//! DES-ECB, proprietary algorithms, redundancy checks (RC) and digital signatures (DS) are
//! refused with [`OtaError::UnsupportedAlgorithm`] / [`OtaError::UnsupportedChecksum`]:
//! single DES is broken, and nothing we talk to uses the others.

mod command;
mod counter;
mod crypto;
mod error;
mod keys;
mod response;
mod spi;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod proptests;

pub use command::{
    decode_command, decode_command_sms, inspect_command, CommandHeader, CommandPacket,
    DecodedCommand, COMMAND_UDH,
};
pub use counter::{check_counter, Counter};
pub use crypto::{compute_cc, verify_cc, CcCheck, CC_LEN};
pub use error::{OtaError, ResponseStatus};
pub use keys::{Algorithm, KeyLookup, KeyRole, KeySet, Kic, Kid};
pub use response::{
    decode_response, decode_response_no_udh, DecodedResponse, PorSecurity, ResponsePacket,
    RESPONSE_UDH,
};
pub use spi::{ChecksumKind, CounterPolicy, PorRequired, Spi};
