//! Ciphering (CBC, zero IV) and the cryptographic checksum (3DES CBC-MAC, AES-CMAC truncated to
//! 8 octets), dispatched on the KIc/KID algorithm and the key length. The primitives are the
//! RustCrypto crates; this file only chooses between them.

use aes::{Aes128, Aes192, Aes256};
use cipher::block_padding::NoPadding;
use cipher::{BlockCipher, BlockDecryptMut, BlockEncryptMut, KeyInit, KeyIvInit};
use cmac::{Cmac, Mac};
use des::{TdesEde2, TdesEde3};
use subtle::ConstantTimeEq;

use super::error::OtaError;
use super::keys::{Algorithm, KeyRole, Kic, Kid};

/// Length of the cryptographic checksum in command and response packets.
pub const CC_LEN: usize = 8;

/// A checksum comparison, for tools that report both values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CcCheck {
    /// The checksum computed over the packet.
    pub computed: [u8; CC_LEN],
    /// The checksum found in the packet.
    pub received: [u8; CC_LEN],
    /// Whether they match (compared in constant time).
    pub valid: bool,
}

fn cbc_encrypt<C>(key: &[u8], buf: &mut [u8]) -> Result<(), ()>
where
    C: BlockEncryptMut + BlockCipher + KeyInit,
{
    let iv = cipher::Block::<C>::default();
    let enc = cbc::Encryptor::<C>::new_from_slices(key, &iv).map_err(|_| ())?;
    let len = buf.len();
    enc.encrypt_padded_mut::<NoPadding>(buf, len)
        .map(|_| ())
        .map_err(|_| ())
}

fn cbc_decrypt<C>(key: &[u8], buf: &mut [u8]) -> Result<(), ()>
where
    C: BlockDecryptMut + BlockCipher + KeyInit,
{
    let iv = cipher::Block::<C>::default();
    let dec = cbc::Decryptor::<C>::new_from_slices(key, &iv).map_err(|_| ())?;
    dec.decrypt_padded_mut::<NoPadding>(buf)
        .map(|_| ())
        .map_err(|_| ())
}

fn wrong_key(role: KeyRole, algorithm: Algorithm, key: &[u8]) -> OtaError {
    OtaError::WrongKeyLength {
        role,
        algorithm,
        got: key.len(),
    }
}

/// The block size the KIc algorithm ciphers with, or why it cannot be used.
pub(crate) fn kic_block_size(kic: Kic) -> Result<usize, OtaError> {
    kic.algorithm
        .block_size()
        .ok_or(OtaError::UnsupportedAlgorithm {
            role: KeyRole::Kic,
            algorithm: kic.algorithm,
        })
}

/// Cipher `buf` (a whole number of blocks) in place.
pub(crate) fn encrypt(kic: Kic, key: &[u8], buf: &mut [u8]) -> Result<(), OtaError> {
    let alg = kic.algorithm;
    alg.check_key(KeyRole::Kic, key)?;
    let r = match (alg, key.len()) {
        (Algorithm::TripleDes2Key, _) => cbc_encrypt::<TdesEde2>(key, buf),
        (Algorithm::TripleDes3Key, _) => cbc_encrypt::<TdesEde3>(key, buf),
        (Algorithm::Aes, 16) => cbc_encrypt::<Aes128>(key, buf),
        (Algorithm::Aes, 24) => cbc_encrypt::<Aes192>(key, buf),
        (Algorithm::Aes, _) => cbc_encrypt::<Aes256>(key, buf),
        _ => Err(()),
    };
    r.map_err(|()| wrong_key(KeyRole::Kic, alg, key))
}

/// Decipher `buf` (a whole number of blocks) in place.
pub(crate) fn decrypt(kic: Kic, key: &[u8], buf: &mut [u8]) -> Result<(), OtaError> {
    let alg = kic.algorithm;
    alg.check_key(KeyRole::Kic, key)?;
    let r = match (alg, key.len()) {
        (Algorithm::TripleDes2Key, _) => cbc_decrypt::<TdesEde2>(key, buf),
        (Algorithm::TripleDes3Key, _) => cbc_decrypt::<TdesEde3>(key, buf),
        (Algorithm::Aes, 16) => cbc_decrypt::<Aes128>(key, buf),
        (Algorithm::Aes, 24) => cbc_decrypt::<Aes192>(key, buf),
        (Algorithm::Aes, _) => cbc_decrypt::<Aes256>(key, buf),
        _ => Err(()),
    };
    r.map_err(|()| wrong_key(KeyRole::Kic, alg, key))
}

/// CBC-MAC: the last block of CBC (zero IV) over the input zero-padded to the block; the
/// padding is only for the computation and is never sent.
fn cbc_mac<C>(key: &[u8], parts: &[&[u8]]) -> Result<[u8; CC_LEN], ()>
where
    C: BlockEncryptMut + BlockCipher + KeyInit,
{
    let bs = C::block_size();
    let mut buf: Vec<u8> = parts.concat();
    let padded = buf.len().div_ceil(bs).max(1) * bs;
    buf.resize(padded, 0);
    cbc_encrypt::<C>(key, &mut buf)?;
    let mut out = [0u8; CC_LEN];
    out.copy_from_slice(&buf[padded - CC_LEN..]);
    Ok(out)
}

/// AES-CMAC truncated to the first [`CC_LEN`] octets. A macro rather than a generic function:
/// the bounds `Cmac<C>` needs are not expressible without naming typenum internals.
macro_rules! cmac_trunc {
    ($cipher:ty, $key:expr, $parts:expr) => {{
        match <Cmac<$cipher> as KeyInit>::new_from_slice($key) {
            Ok(mut mac) => {
                for p in $parts {
                    mac.update(p);
                }
                let full = mac.finalize().into_bytes();
                let mut out = [0u8; CC_LEN];
                out.copy_from_slice(&full[..CC_LEN]);
                Ok(out)
            }
            Err(_) => Err(()),
        }
    }};
}

/// The checksum over the concatenation of `parts`.
pub(crate) fn cc_over(kid: Kid, key: &[u8], parts: &[&[u8]]) -> Result<[u8; CC_LEN], OtaError> {
    let alg = kid.algorithm;
    alg.check_key(KeyRole::Kid, key)?;
    let r = match (alg, key.len()) {
        (Algorithm::TripleDes2Key, _) => cbc_mac::<TdesEde2>(key, parts),
        (Algorithm::TripleDes3Key, _) => cbc_mac::<TdesEde3>(key, parts),
        (Algorithm::Aes, 16) => cmac_trunc!(Aes128, key, parts),
        (Algorithm::Aes, 24) => cmac_trunc!(Aes192, key, parts),
        (Algorithm::Aes, _) => cmac_trunc!(Aes256, key, parts),
        _ => Err(()),
    };
    r.map_err(|()| wrong_key(KeyRole::Kid, alg, key))
}

/// Compare in constant time and keep both values.
pub(crate) fn compare(computed: [u8; CC_LEN], received: [u8; CC_LEN]) -> CcCheck {
    let valid = bool::from(computed.ct_eq(&received));
    CcCheck {
        computed,
        received,
        valid,
    }
}

/// The cryptographic checksum (KID algorithm, key) over `input`, exactly as a packet carries it:
/// `input` is `CPL .. padding` without the CC field for a command, `02 71 00 .. padding` without
/// the CC field for a response.
pub fn compute_cc(kid: Kid, key: &[u8], input: &[u8]) -> Result<[u8; CC_LEN], OtaError> {
    cc_over(kid, key, &[input])
}

/// Compute the checksum over `input` and compare it with `received` in constant time. A
/// `received` that is not [`CC_LEN`] octets is reported as invalid.
pub fn verify_cc(kid: Kid, key: &[u8], input: &[u8], received: &[u8]) -> Result<CcCheck, OtaError> {
    let computed = compute_cc(kid, key, input)?;
    match <[u8; CC_LEN]>::try_from(received) {
        Ok(r) => Ok(compare(computed, r)),
        Err(_) => Ok(CcCheck {
            computed,
            received: [0; CC_LEN],
            valid: false,
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use hex_literal::hex;

    #[test]
    fn aes_cmac_matches_rfc4493_example_2_truncated() {
        // RFC 4493 example 2: AES-128 CMAC of 16 octets.
        let key = hex!("2b7e151628aed2a6abf7158809cf4f3c");
        let msg = hex!("6bc1bee22e409f96e93d7e117393172a");
        let cc = compute_cc(Kid::new(1, Algorithm::Aes), &key, &msg).unwrap();
        assert_eq!(cc, hex!("070a16b46b4d4144"));
    }

    #[test]
    fn tdes_cbc_mac_zero_pads_the_last_block() {
        let key = hex!("301102030405060708090a0b0c0d0e0f");
        let kid = Kid::new(3, Algorithm::TripleDes2Key);
        let short = compute_cc(kid, &key, &[1, 2, 3]).unwrap();
        let padded = compute_cc(kid, &key, &[1, 2, 3, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(short, padded);
    }

    #[test]
    fn cipher_round_trips_for_every_supported_key_length() {
        for (alg, len) in [
            (Algorithm::TripleDes2Key, 16),
            (Algorithm::TripleDes3Key, 24),
            (Algorithm::Aes, 16),
            (Algorithm::Aes, 24),
            (Algorithm::Aes, 32),
        ] {
            let kic = Kic::new(1, alg);
            let key: Vec<u8> = (0..len as u8).collect();
            let plain: Vec<u8> = (0..32u8).collect();
            let mut buf = plain.clone();
            encrypt(kic, &key, &mut buf).unwrap();
            assert_ne!(buf, plain);
            decrypt(kic, &key, &mut buf).unwrap();
            assert_eq!(buf, plain);
        }
    }

    #[test]
    fn verify_cc_reports_both_values() {
        let key = [7u8; 16];
        let kid = Kid::new(1, Algorithm::Aes);
        let good = compute_cc(kid, &key, b"abc").unwrap();
        let check = verify_cc(kid, &key, b"abc", &good).unwrap();
        assert!(check.valid);
        let mut bad = good;
        bad[7] ^= 1;
        let check = verify_cc(kid, &key, b"abc", &bad).unwrap();
        assert!(!check.valid);
        assert_eq!(check.computed, good);
        assert_eq!(check.received, bad);
        assert!(!verify_cc(kid, &key, b"abc", &good[..7]).unwrap().valid);
    }
}
