//! What the card keeps: provisioned secrets ([`CardSecrets`]: OTA keys, the answer-MAC key, the
//! initial PIN and the PUK) and the non-volatile state security depends on ([`AppletState`]:
//! last accepted OTA counter, PIN and PUK try counters, current PIN), with a fixed 18-octet
//! encoding so a store can keep it durable.

use thiserror::Error;

use super::pin::{Pin, PinObject, PIN_MAX, PIN_TRIES, PUK_TRIES};
use crate::handset::rng::{derive_seed, SplitMix64};

/// Secrets provisioned into one card.
#[derive(Clone, PartialEq, Eq)]
pub struct CardSecrets {
    /// AES-128 ciphering key of the applet's OTA key set (KIc `12`).
    pub kic_key: [u8; 16],
    /// AES-128 CMAC key of the applet's OTA key set (KID `12`).
    pub kid_key: [u8; 16],
    /// AES-128 key of the answer MAC, distinct from the OTA keys.
    pub k_auth: [u8; 16],
    /// PIN set at issuance.
    pub initial_pin: Pin,
    /// PUK.
    pub puk: Pin,
}

impl std::fmt::Debug for CardSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardSecrets(<redacted>)")
    }
}

/// Streams of [`derive_seed`] used for card secrets (user behaviour uses others).
const STREAM_KEYS: u64 = 0x4B45_5953;

impl CardSecrets {
    /// The secrets of simulated card `index` of population `seed`: the gateway's provisioning in
    /// load tests derives the same, so no key table of a million cards is needed.
    pub fn derive(seed: u64, index: u64) -> Self {
        let mut rng = SplitMix64::new(derive_seed(seed, index, STREAM_KEYS));
        let mut key = || {
            let mut k = [0u8; 16];
            rng.fill(&mut k);
            k
        };
        let (kic_key, kid_key, k_auth) = (key(), key(), key());
        let mut rng = SplitMix64::new(derive_seed(seed, index, STREAM_KEYS + 1));
        let mut digits = |n: usize| {
            (0..n)
                .map(|_| b'0' + rng.below(10) as u8)
                .collect::<Vec<u8>>()
        };
        let pin = digits(4);
        let puk = digits(8);
        CardSecrets {
            kic_key,
            kid_key,
            k_auth,
            // Both are built from ASCII digits of valid lengths.
            initial_pin: Pin::new(&pin).unwrap_or(Pin::FALLBACK),
            puk: Pin::new_puk(&puk).unwrap_or(Pin::FALLBACK),
        }
    }
}

/// Errors importing [`AppletState`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StateError {
    #[error("applet state is {len} octets, expected {expected}")]
    Length { len: usize, expected: usize },
    #[error("applet state format version 0x{version:02x} at offset 0 is not supported")]
    Version { version: u8 },
    #[error("applet state field {field} at offset {at} is invalid")]
    Field { field: &'static str, at: usize },
}

/// The card's non-volatile state that protects its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppletState {
    /// Last OTA counter accepted for the applet's key set.
    pub last_counter: u64,
    pub pin_tries_left: u8,
    pub puk_tries_left: u8,
    /// Current PIN (differs from the initial one after a PUK unblock).
    pub pin: Pin,
}

impl AppletState {
    /// Length of [`AppletState::to_bytes`].
    pub const LEN: usize = 18;
    const FORMAT: u8 = 1;

    /// The state of a card fresh from issuance.
    pub fn fresh(secrets: &CardSecrets) -> Self {
        AppletState {
            last_counter: 0,
            pin_tries_left: PIN_TRIES,
            puk_tries_left: PUK_TRIES,
            pin: secrets.initial_pin,
        }
    }

    /// `format(1) counter(5) pin_tries(1) puk_tries(1) pin_len(1) pin(8, FF-padded) crc-free pad(1)`.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[0] = Self::FORMAT;
        out[1..6].copy_from_slice(&self.last_counter.to_be_bytes()[3..]);
        out[6] = self.pin_tries_left;
        out[7] = self.puk_tries_left;
        let d = self.pin.digits();
        out[8] = d.len() as u8;
        out[9..17].fill(0xFF);
        out[9..9 + d.len()].copy_from_slice(d);
        out
    }

    /// Parse [`AppletState::to_bytes`].
    pub fn from_bytes(b: &[u8]) -> Result<Self, StateError> {
        if b.len() != Self::LEN {
            return Err(StateError::Length {
                len: b.len(),
                expected: Self::LEN,
            });
        }
        if b[0] != Self::FORMAT {
            return Err(StateError::Version { version: b[0] });
        }
        let last_counter = b[1..6].iter().fold(0u64, |acc, x| acc << 8 | u64::from(*x));
        if b[6] > PIN_TRIES {
            return Err(StateError::Field {
                field: "pin_tries_left",
                at: 6,
            });
        }
        if b[7] > PUK_TRIES {
            return Err(StateError::Field {
                field: "puk_tries_left",
                at: 7,
            });
        }
        let len = usize::from(b[8]);
        if len > PIN_MAX {
            return Err(StateError::Field {
                field: "pin_len",
                at: 8,
            });
        }
        let pin = Pin::new(&b[9..9 + len]).map_err(|_| StateError::Field {
            field: "pin",
            at: 9,
        })?;
        Ok(AppletState {
            last_counter,
            pin_tries_left: b[6],
            puk_tries_left: b[7],
            pin,
        })
    }

    pub(crate) fn pin_object(&self, secrets: &CardSecrets) -> PinObject {
        PinObject::restore(
            self.pin,
            secrets.puk,
            self.pin_tries_left,
            self.puk_tries_left,
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_18_octets() {
        let s = CardSecrets::derive(1, 2);
        let mut st = AppletState::fresh(&s);
        st.last_counter = 0x01_0203_0405;
        st.pin_tries_left = 1;
        let b = st.to_bytes();
        assert_eq!(b.len(), 18);
        assert_eq!(&b[..6], &[1, 1, 2, 3, 4, 5]);
        assert_eq!(AppletState::from_bytes(&b).unwrap(), st);
    }

    #[test]
    fn corrupt_state_is_refused_with_field() {
        let st = AppletState::fresh(&CardSecrets::derive(1, 2));
        let mut b = st.to_bytes();
        b[6] = 9;
        assert_eq!(
            AppletState::from_bytes(&b),
            Err(StateError::Field {
                field: "pin_tries_left",
                at: 6
            })
        );
        assert!(AppletState::from_bytes(&b[..5]).is_err());
    }

    #[test]
    fn derived_secrets_are_stable_and_distinct() {
        let a = CardSecrets::derive(9, 1);
        assert_eq!(a, CardSecrets::derive(9, 1));
        let b = CardSecrets::derive(9, 2);
        assert_ne!(a.k_auth, b.k_auth);
        assert_ne!(a.kic_key, a.kid_key);
        assert_ne!(a.kid_key, a.k_auth);
        assert_eq!(a.initial_pin.digits().len(), 4);
        assert_eq!(a.puk.digits().len(), 8);
    }

    proptest::proptest! {
        #[test]
        fn state_import_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..40)) {
            let _ = AppletState::from_bytes(&bytes);
        }
    }
}
