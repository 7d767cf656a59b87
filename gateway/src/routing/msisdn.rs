//! MSISDN parsing and normalisation, and the masked form used in logs.
//!
//! Numbers arrive in many spellings (`+48 600 100 200`, `0048600100200`, the OIDC
//! `login_hint` form `MSISDN:48600100200`, `tel:+48...`); [`Msisdn::parse`] reduces them all
//! to E.164 digits without the `+`, which is the only form routing, the subscriber registry
//! and the store key on. National forms (a single leading `0`) are refused: the gateway serves
//! several countries and cannot guess the country code.

use std::fmt;

use thiserror::Error;

/// Fewest digits of an international number we accept (country code plus a short number).
pub const MSISDN_MIN_DIGITS: usize = 6;
/// Most digits of an E.164 number.
pub const MSISDN_MAX_DIGITS: usize = 15;

/// Why a string is not an MSISDN.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MsisdnError {
    /// Nothing left after removing prefixes and separators.
    #[error("MSISDN is empty")]
    Empty,
    /// A character that is neither a digit nor an allowed separator.
    #[error("MSISDN has invalid character {ch:?} at offset {at}")]
    InvalidChar { ch: char, at: usize },
    /// National form (leading `0`): the country code is unknown.
    #[error("MSISDN in national form (leading 0); give the country code")]
    NationalForm,
    /// Fewer than [`MSISDN_MIN_DIGITS`] digits.
    #[error("MSISDN has {len} digits, fewer than {MSISDN_MIN_DIGITS}")]
    TooShort { len: usize },
    /// More than [`MSISDN_MAX_DIGITS`] digits.
    #[error("MSISDN has {len} digits, more than {MSISDN_MAX_DIGITS}")]
    TooLong { len: usize },
}

/// An international number in E.164 form without `+`: 6 to 15 ASCII digits, first digit 1-9.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Msisdn(String);

impl Msisdn {
    /// Normalise `input`: optional `MSISDN:` / `tel:` scheme (any case), optional `+` or `00`
    /// international prefix, separators (space, `-`, `.`, `(`, `)`) dropped.
    pub fn parse(input: &str) -> Result<Self, MsisdnError> {
        let trimmed = input.trim();
        let mut rest = trimmed;
        for scheme in ["msisdn:", "tel:"] {
            if rest.len() >= scheme.len()
                && rest.is_char_boundary(scheme.len())
                && rest[..scheme.len()].eq_ignore_ascii_case(scheme)
            {
                rest = rest[scheme.len()..].trim_start();
                break;
            }
        }
        let offset = trimmed.len() - rest.len();
        let mut digits = String::with_capacity(MSISDN_MAX_DIGITS);
        let mut plus = false;
        for (i, ch) in rest.char_indices() {
            match ch {
                '0'..='9' => {
                    if digits.len() >= MSISDN_MAX_DIGITS + 2 {
                        // Bound the work on hostile input; the length check below reports it.
                        return Err(MsisdnError::TooLong {
                            len: digits.len() + 1,
                        });
                    }
                    digits.push(ch);
                }
                '+' if i == 0 => plus = true,
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return Err(MsisdnError::InvalidChar { ch, at: offset + i }),
            }
        }
        let digits = if plus {
            digits.as_str()
        } else if let Some(intl) = digits.strip_prefix("00") {
            intl
        } else if digits.starts_with('0') {
            return Err(MsisdnError::NationalForm);
        } else {
            digits.as_str()
        };
        if digits.is_empty() {
            return Err(MsisdnError::Empty);
        }
        if digits.starts_with('0') {
            return Err(MsisdnError::NationalForm);
        }
        if digits.len() < MSISDN_MIN_DIGITS {
            return Err(MsisdnError::TooShort { len: digits.len() });
        }
        if digits.len() > MSISDN_MAX_DIGITS {
            return Err(MsisdnError::TooLong { len: digits.len() });
        }
        Ok(Msisdn(digits.to_owned()))
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The number as an integer (unique, since the first digit is never 0): a compact key for
    /// tables of millions of numbers.
    pub fn as_u64(&self) -> u64 {
        self.0
            .bytes()
            .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'))
    }

    /// The number from [`Msisdn::as_u64`].
    pub fn from_u64(value: u64) -> Result<Self, MsisdnError> {
        Self::parse(&value.to_string())
    }

    /// The form to write in logs.
    pub fn masked(&self) -> MaskedMsisdn<'_> {
        MaskedMsisdn(&self.0)
    }
}

/// Debug is masked too, so a `{:?}` of a struct holding a number does not leak it.
impl fmt::Debug for Msisdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Msisdn({})", self.masked())
    }
}

/// An MSISDN for logs: the country code and operator prefix and the last three digits stay
/// (enough to tell numbers apart while debugging), the middle becomes `*` (e.g.
/// `48600***200`). At least three digits are always hidden.
#[derive(Clone, Copy)]
pub struct MaskedMsisdn<'a>(&'a str);

impl fmt::Display for MaskedMsisdn<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HIDDEN_MIN: usize = 3;
        let len = self.0.len();
        let shown = len.saturating_sub(HIDDEN_MIN);
        let tail = 3.min(shown / 2);
        let head = 5.min(shown - tail);
        let hidden = len - head - tail;
        f.write_str(&self.0[..head])?;
        for _ in 0..hidden {
            f.write_str("*")?;
        }
        f.write_str(&self.0[len - tail..])
    }
}

impl fmt::Debug for MaskedMsisdn<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn international_spellings_normalise_to_the_same_digits() {
        for s in [
            "48600100200",
            "+48600100200",
            "0048600100200",
            "+48 600-100-200",
            "MSISDN:48600100200",
            "msisdn:+48600100200",
            "tel:+48 (600) 100.200",
            "  48600100200 ",
        ] {
            assert_eq!(Msisdn::parse(s).unwrap().as_str(), "48600100200", "{s}");
        }
    }

    #[test]
    fn national_form_and_junk_are_refused() {
        assert_eq!(Msisdn::parse("0600100200"), Err(MsisdnError::NationalForm));
        assert_eq!(Msisdn::parse("+0600100200"), Err(MsisdnError::NationalForm));
        assert_eq!(
            Msisdn::parse("4860010x200"),
            Err(MsisdnError::InvalidChar { ch: 'x', at: 7 })
        );
        assert_eq!(
            Msisdn::parse("MSISDN:48+600"),
            Err(MsisdnError::InvalidChar { ch: '+', at: 9 })
        );
        assert_eq!(Msisdn::parse("+"), Err(MsisdnError::Empty));
        assert_eq!(Msisdn::parse(""), Err(MsisdnError::Empty));
        assert_eq!(
            Msisdn::parse("48123"),
            Err(MsisdnError::TooShort { len: 5 })
        );
        assert!(matches!(
            Msisdn::parse("4860010020012345"),
            Err(MsisdnError::TooLong { .. })
        ));
        assert!(matches!(
            Msisdn::parse(&"9".repeat(10_000)),
            Err(MsisdnError::TooLong { .. })
        ));
    }

    #[test]
    fn u64_form_round_trips() {
        let m = Msisdn::parse("48600100200").unwrap();
        assert_eq!(m.as_u64(), 48_600_100_200);
        assert_eq!(Msisdn::from_u64(48_600_100_200).unwrap(), m);
    }

    #[test]
    fn masking_hides_the_middle_digits() {
        let m = Msisdn::parse("48600100200").unwrap();
        assert_eq!(m.masked().to_string(), "48600***200");
        assert_eq!(format!("{m:?}"), "Msisdn(48600***200)");
        let long = Msisdn::parse("491701234567890").unwrap();
        assert_eq!(long.masked().to_string(), "49170*******890");
        let short = Msisdn::parse("123456").unwrap();
        assert_eq!(short.masked().to_string(), "12***6");
        for s in ["123456", "1234567", "12345678", "48600100200"] {
            let m = Msisdn::parse(s).unwrap();
            let masked = m.masked().to_string();
            assert_eq!(masked.len(), s.len());
            assert!(masked.matches('*').count() >= 3, "{masked}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = Msisdn::parse(&s);
        }
    }
}
