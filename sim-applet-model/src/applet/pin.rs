//! The PIN object on the card: a 4-8 digit PIN with a try counter (3), a PUK (8 digits) with its
//! own counter (10) that unblocks the PIN and sets a new one. Comparisons are constant time and
//! the counter is decremented before comparing, as real cards do so that pulling the card out
//! mid-check cannot give a free try. Nothing here returns the PIN.

use subtle::ConstantTimeEq;
use thiserror::Error;

/// PIN tries before the PIN blocks.
pub const PIN_TRIES: u8 = 3;
/// PUK tries before the PUK (and so the card) locks for good.
pub const PUK_TRIES: u8 = 10;
/// PIN length bounds.
pub const PIN_MIN: usize = 4;
/// See [`PIN_MIN`].
pub const PIN_MAX: usize = 8;
/// PUK length.
pub const PUK_LEN: usize = 8;

/// Errors of the PIN object.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PinError {
    #[error("PIN must be {PIN_MIN}..={PIN_MAX} ASCII digits, got {len} octets")]
    InvalidPin { len: usize },
    #[error("PUK must be {PUK_LEN} ASCII digits")]
    InvalidPuk,
    #[error("wrong PUK, {tries_left} tries left")]
    WrongPuk { tries_left: u8 },
    #[error("PUK blocked")]
    PukBlocked,
}

/// A PIN or PUK value: ASCII digits, padded with 0xFF to 8 so comparisons take one time.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Pin {
    digits: [u8; PIN_MAX],
    len: u8,
}

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets never reach logs, also not through a derived Debug.
        write!(f, "Pin(****)")
    }
}

impl Pin {
    /// "0000", for paths that cannot fail but must not panic either.
    pub(crate) const FALLBACK: Pin = Pin {
        digits: [b'0', b'0', b'0', b'0', 0xFF, 0xFF, 0xFF, 0xFF],
        len: 4,
    };

    /// A PIN of 4-8 ASCII digits.
    pub fn new(digits: &[u8]) -> Result<Self, PinError> {
        Self::with_bounds(digits, PIN_MIN, PIN_MAX)
            .ok_or(PinError::InvalidPin { len: digits.len() })
    }

    /// A PUK of exactly 8 ASCII digits.
    pub fn new_puk(digits: &[u8]) -> Result<Self, PinError> {
        Self::with_bounds(digits, PUK_LEN, PUK_LEN).ok_or(PinError::InvalidPuk)
    }

    fn with_bounds(digits: &[u8], min: usize, max: usize) -> Option<Self> {
        if digits.len() < min || digits.len() > max || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let mut d = [0xFF; PIN_MAX];
        d[..digits.len()].copy_from_slice(digits);
        Some(Pin {
            digits: d,
            len: digits.len() as u8,
        })
    }

    /// The digits, for the card's persistent state and for the simulated user who knows them.
    pub fn digits(&self) -> &[u8] {
        &self.digits[..usize::from(self.len)]
    }

    /// Constant-time comparison with a candidate of any length (over-long candidates never match).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let mut padded = [0xFF; PIN_MAX];
        let n = candidate.len().min(PIN_MAX);
        padded[..n].copy_from_slice(&candidate[..n]);
        let len_ok = (candidate.len() as u64).ct_eq(&u64::from(self.len));
        bool::from(padded.ct_eq(&self.digits) & len_ok)
    }
}

/// Result of one PIN verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinCheck {
    /// Correct; the counter is back at [`PIN_TRIES`].
    Correct,
    /// Wrong, with tries left.
    Wrong { tries_left: u8 },
    /// Wrong and the PIN is now blocked, or was already blocked (the candidate was not compared).
    Blocked { just_now: bool },
}

/// The PIN object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinObject {
    pin: Pin,
    puk: Pin,
    pin_tries_left: u8,
    puk_tries_left: u8,
}

impl PinObject {
    /// A fresh object with full counters.
    pub fn new(pin: Pin, puk: Pin) -> Self {
        PinObject {
            pin,
            puk,
            pin_tries_left: PIN_TRIES,
            puk_tries_left: PUK_TRIES,
        }
    }

    /// Rebuild from persisted values (counters are clamped to their maxima).
    pub fn restore(pin: Pin, puk: Pin, pin_tries_left: u8, puk_tries_left: u8) -> Self {
        PinObject {
            pin,
            puk,
            pin_tries_left: pin_tries_left.min(PIN_TRIES),
            puk_tries_left: puk_tries_left.min(PUK_TRIES),
        }
    }

    /// Verify a candidate.
    pub fn verify(&mut self, candidate: &[u8]) -> PinCheck {
        if self.pin_tries_left == 0 {
            return PinCheck::Blocked { just_now: false };
        }
        self.pin_tries_left -= 1;
        if self.pin.matches(candidate) {
            self.pin_tries_left = PIN_TRIES;
            PinCheck::Correct
        } else if self.pin_tries_left == 0 {
            PinCheck::Blocked { just_now: true }
        } else {
            PinCheck::Wrong {
                tries_left: self.pin_tries_left,
            }
        }
    }

    /// Unblock with the PUK and set a new PIN (also works on a PIN that is not blocked).
    pub fn unblock_with_puk(&mut self, puk: &[u8], new_pin: &[u8]) -> Result<(), PinError> {
        if self.puk_tries_left == 0 {
            return Err(PinError::PukBlocked);
        }
        let new_pin = Pin::new(new_pin)?;
        self.puk_tries_left -= 1;
        if !self.puk.matches(puk) {
            return if self.puk_tries_left == 0 {
                Err(PinError::PukBlocked)
            } else {
                Err(PinError::WrongPuk {
                    tries_left: self.puk_tries_left,
                })
            };
        }
        self.puk_tries_left = PUK_TRIES;
        self.pin = new_pin;
        self.pin_tries_left = PIN_TRIES;
        Ok(())
    }

    /// True once the PIN try counter is zero.
    pub fn is_blocked(&self) -> bool {
        self.pin_tries_left == 0
    }

    /// True once the PUK try counter is zero: no way back.
    pub fn is_puk_blocked(&self) -> bool {
        self.puk_tries_left == 0
    }

    /// Tries left before the PIN blocks.
    pub fn pin_tries_left(&self) -> u8 {
        self.pin_tries_left
    }

    /// Tries left before the PUK blocks.
    pub fn puk_tries_left(&self) -> u8 {
        self.puk_tries_left
    }

    /// The current PIN, for persistence.
    pub fn pin(&self) -> &Pin {
        &self.pin
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn obj() -> PinObject {
        PinObject::new(
            Pin::new(b"1234").unwrap(),
            Pin::new_puk(b"12345678").unwrap(),
        )
    }

    #[test]
    fn correct_pin_resets_counter() {
        let mut p = obj();
        assert_eq!(p.verify(b"0000"), PinCheck::Wrong { tries_left: 2 });
        assert_eq!(p.verify(b"1234"), PinCheck::Correct);
        assert_eq!(p.pin_tries_left(), PIN_TRIES);
    }

    #[test]
    fn three_wrong_pins_block_the_pin() {
        let mut p = obj();
        assert_eq!(p.verify(b"1111"), PinCheck::Wrong { tries_left: 2 });
        assert_eq!(p.verify(b"2222"), PinCheck::Wrong { tries_left: 1 });
        assert_eq!(p.verify(b"3333"), PinCheck::Blocked { just_now: true });
        assert!(p.is_blocked());
        assert_eq!(p.verify(b"1234"), PinCheck::Blocked { just_now: false });
    }

    #[test]
    fn prefix_or_longer_candidates_do_not_match() {
        let p = Pin::new(b"1234").unwrap();
        assert!(!p.matches(b"123"));
        assert!(!p.matches(b"12345"));
        assert!(!p.matches(b"1234\xFF"));
        assert!(!p.matches(b""));
        assert!(!p.matches(&[b'1'; 300]));
        assert!(p.matches(b"1234"));
    }

    #[test]
    fn puk_unblocks_and_sets_new_pin() {
        let mut p = obj();
        for _ in 0..3 {
            p.verify(b"9999");
        }
        assert!(p.is_blocked());
        assert_eq!(
            p.unblock_with_puk(b"00000000", b"5678"),
            Err(PinError::WrongPuk { tries_left: 9 })
        );
        p.unblock_with_puk(b"12345678", b"5678").unwrap();
        assert!(!p.is_blocked());
        assert_eq!(p.verify(b"1234"), PinCheck::Wrong { tries_left: 2 });
        assert_eq!(p.verify(b"5678"), PinCheck::Correct);
    }

    #[test]
    fn ten_wrong_puks_lock_for_good() {
        let mut p = obj();
        for _ in 0..9 {
            assert!(matches!(
                p.unblock_with_puk(b"00000000", b"5678"),
                Err(PinError::WrongPuk { .. })
            ));
        }
        assert_eq!(
            p.unblock_with_puk(b"00000000", b"5678"),
            Err(PinError::PukBlocked)
        );
        assert_eq!(
            p.unblock_with_puk(b"12345678", b"5678"),
            Err(PinError::PukBlocked)
        );
    }

    #[test]
    fn invalid_new_pin_costs_no_puk_try() {
        let mut p = obj();
        assert_eq!(
            p.unblock_with_puk(b"12345678", b"12a4"),
            Err(PinError::InvalidPin { len: 4 })
        );
        assert_eq!(p.puk_tries_left(), PUK_TRIES);
    }

    #[test]
    fn debug_does_not_show_digits() {
        assert_eq!(format!("{:?}", Pin::new(b"1234").unwrap()), "Pin(****)");
    }
}
