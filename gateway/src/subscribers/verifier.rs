//! The USSD PIN verifier: the gateway never stores a PIN, only `salt` and
//! `HMAC-SHA256(pepper, salt || pin)`. The pepper is a server secret kept out of the
//! subscriber file (environment or its own file), so a leaked file alone does not allow an
//! offline search of the 10^4 four-digit PINs. Comparison is constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use thiserror::Error;

/// Salt length in octets.
pub const SALT_LEN: usize = 16;
/// Verifier length in octets (SHA-256).
pub const MAC_LEN: usize = 32;
/// Shortest pepper accepted.
pub const PEPPER_MIN: usize = 16;

/// The pepper is too short to be a key.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("PIN pepper has {len} octets, fewer than {PEPPER_MIN}")]
pub struct PepperTooShort {
    pub len: usize,
}

/// The server-wide HMAC key of PIN verifiers.
#[derive(Clone)]
pub struct Pepper(Vec<u8>);

impl Pepper {
    /// A pepper of at least [`PEPPER_MIN`] octets.
    pub fn new(bytes: &[u8]) -> Result<Self, PepperTooShort> {
        if bytes.len() < PEPPER_MIN {
            return Err(PepperTooShort { len: bytes.len() });
        }
        Ok(Pepper(bytes.to_vec()))
    }

    fn mac(&self, salt: &[u8; SALT_LEN], pin: &[u8]) -> [u8; MAC_LEN] {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => return [0; MAC_LEN],
        };
        mac.update(salt);
        mac.update(pin);
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for Pepper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pepper(<redacted>)")
    }
}

/// Salt and MAC of one subscriber's USSD PIN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinVerifier {
    pub salt: [u8; SALT_LEN],
    pub mac: [u8; MAC_LEN],
}

impl PinVerifier {
    /// The verifier of `pin` under `pepper` with `salt`.
    pub fn new(pepper: &Pepper, salt: [u8; SALT_LEN], pin: &[u8]) -> Self {
        PinVerifier {
            salt,
            mac: pepper.mac(&salt, pin),
        }
    }

    /// Whether `candidate` is the PIN, as a [`subtle::Choice`] for callers that combine it
    /// with other secret-dependent conditions.
    pub fn verify_ct(&self, pepper: &Pepper, candidate: &[u8]) -> subtle::Choice {
        pepper.mac(&self.salt, candidate).ct_eq(&self.mac)
    }

    /// Whether `candidate` is the PIN (the comparison takes the same time whatever matches).
    pub fn verify(&self, pepper: &Pepper, candidate: &[u8]) -> bool {
        self.verify_ct(pepper, candidate).into()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pepper() -> Pepper {
        Pepper::new(b"0123456789abcdef-test-pepper").unwrap()
    }

    #[test]
    fn right_pin_verifies_and_wrong_ones_do_not() {
        let v = PinVerifier::new(&pepper(), [7; SALT_LEN], b"1234");
        assert!(v.verify(&pepper(), b"1234"));
        assert!(!v.verify(&pepper(), b"1235"));
        assert!(!v.verify(&pepper(), b"12345"));
        assert!(!v.verify(&pepper(), b""));
        assert!(bool::from(v.verify_ct(&pepper(), b"1234")));
    }

    #[test]
    fn verifier_depends_on_salt_and_pepper() {
        let a = PinVerifier::new(&pepper(), [1; SALT_LEN], b"1234");
        let b = PinVerifier::new(&pepper(), [2; SALT_LEN], b"1234");
        assert_ne!(a.mac, b.mac);
        let other = Pepper::new(b"another pepper of 16+ octets").unwrap();
        assert!(!a.verify(&other, b"1234"));
    }

    #[test]
    fn verifier_matches_hmac_sha256_of_salt_and_pin() {
        // RFC 4231 test case 2 splits "what do ya want for nothing?" into salt || pin here,
        // with a key padded past the pepper minimum.
        let p = Pepper(b"Jefe".to_vec());
        let salt: [u8; SALT_LEN] = *b"what do ya want ";
        let v = PinVerifier::new(&p, salt, b"for nothing?");
        assert_eq!(
            hex::encode(v.mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn short_pepper_is_refused() {
        assert_eq!(
            Pepper::new(b"short").unwrap_err(),
            PepperTooShort { len: 5 }
        );
    }
}
