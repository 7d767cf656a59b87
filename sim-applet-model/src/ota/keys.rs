//! KIc and KID octets (key index and algorithm, TS 102 225 §5.1.2-5.1.3), the key set a TAR
//! uses, and how a receiver finds it.

use std::fmt;

use super::command::CommandHeader;
use super::error::OtaError;

/// Which of the two keys of a key set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyRole {
    /// The ciphering key, named by KIc.
    Kic,
    /// The checksum key, named by KID.
    Kid,
}

/// Algorithm named by the low nibble of KIc or KID. For KIc the block ciphers run in CBC mode;
/// for KID 3DES is a CBC-MAC and AES is a CMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `xx00`: known implicitly by both sides (the nibble is kept).
    Implicit(u8),
    /// `0001`: single DES (refused).
    Des,
    /// `0101`: triple DES, two keys (16 octets).
    TripleDes2Key,
    /// `1001`: triple DES, three keys (24 octets).
    TripleDes3Key,
    /// `1101`: DES in ECB mode for KIc, reserved for KID (refused).
    DesEcb,
    /// `0010`: AES (16, 24 or 32 octets).
    Aes,
    /// `xx11`: proprietary (the nibble is kept).
    Proprietary(u8),
    /// `0110`, `1010`, `1110`: reserved AES variants (the nibble is kept).
    Reserved(u8),
}

impl Algorithm {
    fn from_nibble(n: u8) -> Self {
        let n = n & 0x0F;
        match (n & 0b11, n >> 2) {
            (0b00, _) => Algorithm::Implicit(n),
            (0b01, 0b00) => Algorithm::Des,
            (0b01, 0b01) => Algorithm::TripleDes2Key,
            (0b01, 0b10) => Algorithm::TripleDes3Key,
            (0b01, _) => Algorithm::DesEcb,
            (0b10, 0b00) => Algorithm::Aes,
            (0b10, _) => Algorithm::Reserved(n),
            _ => Algorithm::Proprietary(n),
        }
    }

    fn nibble(self) -> u8 {
        match self {
            Algorithm::Des => 0b0001,
            Algorithm::TripleDes2Key => 0b0101,
            Algorithm::TripleDes3Key => 0b1001,
            Algorithm::DesEcb => 0b1101,
            Algorithm::Aes => 0b0010,
            Algorithm::Implicit(n) | Algorithm::Proprietary(n) | Algorithm::Reserved(n) => n & 0x0F,
        }
    }

    /// Cipher block size, for the algorithms we implement.
    pub fn block_size(self) -> Option<usize> {
        match self {
            Algorithm::TripleDes2Key | Algorithm::TripleDes3Key => Some(8),
            Algorithm::Aes => Some(16),
            _ => None,
        }
    }

    /// Check that `key` fits this algorithm, refusing the algorithms we do not implement.
    pub fn check_key(self, role: KeyRole, key: &[u8]) -> Result<(), OtaError> {
        let ok = match self {
            Algorithm::TripleDes2Key => key.len() == 16,
            Algorithm::TripleDes3Key => key.len() == 24,
            Algorithm::Aes => matches!(key.len(), 16 | 24 | 32),
            _ => {
                return Err(OtaError::UnsupportedAlgorithm {
                    role,
                    algorithm: self,
                })
            }
        };
        if ok {
            Ok(())
        } else {
            Err(OtaError::WrongKeyLength {
                role,
                algorithm: self,
                got: key.len(),
            })
        }
    }
}

macro_rules! key_octet {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name {
            /// Key index, the high nibble (0-15).
            pub index: u8,
            /// Algorithm, the low nibble.
            pub algorithm: Algorithm,
        }

        impl $name {
            /// Build from a key index (0-15; higher bits are dropped) and an algorithm.
            pub fn new(index: u8, algorithm: Algorithm) -> Self {
                Self {
                    index: index & 0x0F,
                    algorithm,
                }
            }

            /// Parse the octet; every value is valid.
            pub fn from_byte(b: u8) -> Self {
                Self {
                    index: b >> 4,
                    algorithm: Algorithm::from_nibble(b),
                }
            }

            /// The octet.
            pub fn to_byte(self) -> u8 {
                (self.index & 0x0F) << 4 | self.algorithm.nibble()
            }
        }
    };
}

key_octet!(Kic, "Key and algorithm identifier for ciphering (KIc).");
key_octet!(Kid, "Key and algorithm identifier for the checksum (KID).");

/// The two keys a TAR's key set holds. Lengths are checked against the algorithm named in the
/// packet when the keys are used; [`KeySet::new`] checks them up front.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct KeySet {
    /// Ciphering key.
    pub kic_key: Vec<u8>,
    /// Checksum key.
    pub kid_key: Vec<u8>,
}

impl KeySet {
    /// A key set whose lengths are checked against the algorithms it will be used with.
    pub fn new(kic: Kic, kic_key: &[u8], kid: Kid, kid_key: &[u8]) -> Result<Self, OtaError> {
        kic.algorithm.check_key(KeyRole::Kic, kic_key)?;
        kid.algorithm.check_key(KeyRole::Kid, kid_key)?;
        Ok(KeySet {
            kic_key: kic_key.to_vec(),
            kid_key: kid_key.to_vec(),
        })
    }
}

/// Keys never reach logs.
impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("kic_key", &format_args!("<{} octets>", self.kic_key.len()))
            .field("kid_key", &format_args!("<{} octets>", self.kid_key.len()))
            .finish()
    }
}

/// Where a receiver finds the keys of an incoming command packet. `None` means the TAR (or key
/// index) is unknown, answered with [`super::ResponseStatus::TarUnknown`].
pub trait KeyLookup {
    /// The key set for this header's TAR, KIc and KID.
    fn key_set(&self, header: &CommandHeader) -> Option<KeySet>;
}

/// A single key set answers for every TAR (tools, tests).
impl KeyLookup for KeySet {
    fn key_set(&self, _header: &CommandHeader) -> Option<KeySet> {
        Some(self.clone())
    }
}

impl<F: Fn(&CommandHeader) -> Option<KeySet>> KeyLookup for F {
    fn key_set(&self, header: &CommandHeader) -> Option<KeySet> {
        self(header)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_key_octet_round_trips() {
        for b in 0..=255u8 {
            assert_eq!(Kic::from_byte(b).to_byte(), b);
            assert_eq!(Kid::from_byte(b).to_byte(), b);
        }
    }

    #[test]
    fn pysim_key_octets_name_index_and_algorithm() {
        assert_eq!(Kic::from_byte(0x35), Kic::new(3, Algorithm::TripleDes2Key));
        assert_eq!(Kid::from_byte(0x22), Kid::new(2, Algorithm::Aes));
        assert_eq!(Kic::from_byte(0x39).algorithm, Algorithm::TripleDes3Key);
        assert_eq!(Kic::from_byte(0x11).algorithm, Algorithm::Des);
        assert_eq!(Kic::from_byte(0x13).algorithm, Algorithm::Proprietary(3));
        assert_eq!(Kic::from_byte(0x16).algorithm, Algorithm::Reserved(6));
        assert_eq!(Kic::from_byte(0x10).algorithm, Algorithm::Implicit(0));
    }

    #[test]
    fn key_lengths_are_checked_per_algorithm() {
        let tdes2 = Kic::new(1, Algorithm::TripleDes2Key);
        let aes = Kid::new(1, Algorithm::Aes);
        assert!(KeySet::new(tdes2, &[0; 16], aes, &[0; 32]).is_ok());
        assert_eq!(
            KeySet::new(tdes2, &[0; 24], aes, &[0; 16]),
            Err(OtaError::WrongKeyLength {
                role: KeyRole::Kic,
                algorithm: Algorithm::TripleDes2Key,
                got: 24
            })
        );
        assert!(matches!(
            KeySet::new(tdes2, &[0; 16], aes, &[0; 20]),
            Err(OtaError::WrongKeyLength {
                role: KeyRole::Kid,
                ..
            })
        ));
        assert!(matches!(
            KeySet::new(
                Kic::new(1, Algorithm::TripleDes3Key),
                &[0; 16],
                aes,
                &[0; 16]
            ),
            Err(OtaError::WrongKeyLength { .. })
        ));
    }

    #[test]
    fn single_des_and_proprietary_algorithms_are_refused() {
        let aes = Kid::new(1, Algorithm::Aes);
        assert_eq!(
            KeySet::new(Kic::new(1, Algorithm::Des), &[0; 8], aes, &[0; 16]),
            Err(OtaError::UnsupportedAlgorithm {
                role: KeyRole::Kic,
                algorithm: Algorithm::Des
            })
        );
        assert!(matches!(
            KeySet::new(
                Kic::new(1, Algorithm::Aes),
                &[0; 16],
                Kid::from_byte(0x13),
                &[0; 16]
            ),
            Err(OtaError::UnsupportedAlgorithm {
                role: KeyRole::Kid,
                ..
            })
        ));
    }

    #[test]
    fn key_set_debug_hides_the_keys() {
        let ks = KeySet {
            kic_key: vec![0xAB; 16],
            kid_key: vec![0xCD; 16],
        };
        let s = format!("{ks:?}");
        assert!(
            !s.contains("171") && !s.contains("ab") && !s.contains("AB"),
            "{s}"
        );
    }
}
