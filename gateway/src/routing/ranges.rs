//! Number ranges of operators and the longest-prefix table built from them.
//!
//! A range is written in configuration either as a prefix (`"48600"`: every number starting
//! with those digits) or as an inclusive block of equal-length numbers
//! (`"48600000000..48600499999"`). Blocks are decomposed into the smallest set of prefixes that
//! covers them exactly, so one [`PrefixTable`] answers both kinds with a longest-prefix
//! lookup: at most [`MSISDN_MAX_DIGITS`] hash probes per number, whatever the table size.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use thiserror::Error;

use super::msisdn::{Msisdn, MSISDN_MAX_DIGITS};
use super::OperatorId;

/// Why a range is not valid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RangeError {
    #[error("number range is empty")]
    Empty,
    #[error("number range {text:?} has a non-digit at offset {at}")]
    NotDigits { text: String, at: usize },
    #[error("number range {text:?} starts with 0: write E.164 without '+' or '00'")]
    LeadingZero { text: String },
    #[error("number range {text:?} is longer than {MSISDN_MAX_DIGITS} digits")]
    TooLong { text: String },
    #[error("range bounds {from:?}..{to:?} differ in length")]
    LengthMismatch { from: String, to: String },
    #[error("range start {from:?} is above its end {to:?}")]
    Reversed { from: String, to: String },
}

/// A block of numbers belonging to one operator.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum NumberRange {
    /// Every number starting with these digits.
    Prefix(String),
    /// Every number from `from` to `to` inclusive (same length), and longer numbers
    /// starting with one of them.
    Block { from: String, to: String },
}

fn check_digits(text: &str) -> Result<(), RangeError> {
    if text.is_empty() {
        return Err(RangeError::Empty);
    }
    if let Some(at) = text.bytes().position(|b| !b.is_ascii_digit()) {
        return Err(RangeError::NotDigits {
            text: text.into(),
            at,
        });
    }
    if text.starts_with('0') {
        return Err(RangeError::LeadingZero { text: text.into() });
    }
    if text.len() > MSISDN_MAX_DIGITS {
        return Err(RangeError::TooLong { text: text.into() });
    }
    Ok(())
}

impl FromStr for NumberRange {
    type Err = RangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        match s.split_once("..") {
            None => {
                check_digits(s)?;
                Ok(NumberRange::Prefix(s.into()))
            }
            Some((from, to)) => {
                let (from, to) = (from.trim(), to.trim());
                check_digits(from)?;
                check_digits(to)?;
                if from.len() != to.len() {
                    return Err(RangeError::LengthMismatch {
                        from: from.into(),
                        to: to.into(),
                    });
                }
                // Equal-length digit strings compare like the numbers.
                if from > to {
                    return Err(RangeError::Reversed {
                        from: from.into(),
                        to: to.into(),
                    });
                }
                Ok(NumberRange::Block {
                    from: from.into(),
                    to: to.into(),
                })
            }
        }
    }
}

impl TryFrom<String> for NumberRange {
    type Error = RangeError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl fmt::Display for NumberRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NumberRange::Prefix(p) => f.write_str(p),
            NumberRange::Block { from, to } => write!(f, "{from}..{to}"),
        }
    }
}

impl NumberRange {
    /// The prefixes that cover exactly this range.
    pub fn to_prefixes(&self) -> Vec<String> {
        match self {
            NumberRange::Prefix(p) => vec![p.clone()],
            NumberRange::Block { from, to } => {
                let mut out = Vec::new();
                let mut prefix = String::with_capacity(from.len());
                cover(from.as_bytes(), to.as_bytes(), &mut prefix, &mut out);
                out
            }
        }
    }
}

/// Push the prefixes (after `prefix`) covering `lo..=hi`, both of the same length.
fn cover(lo: &[u8], hi: &[u8], prefix: &mut String, out: &mut Vec<String>) {
    if lo.iter().all(|&d| d == b'0') && hi.iter().all(|&d| d == b'9') {
        out.push(prefix.clone());
        return;
    }
    let (a, b) = (lo[0], hi[0]);
    let n = lo.len() - 1;
    let nines = vec![b'9'; n];
    let zeros = vec![b'0'; n];
    if a == b {
        prefix.push(char::from(a));
        cover(&lo[1..], &hi[1..], prefix, out);
        prefix.pop();
        return;
    }
    prefix.push(char::from(a));
    cover(&lo[1..], &nines, prefix, out);
    prefix.pop();
    for d in a + 1..b {
        prefix.push(char::from(d));
        out.push(prefix.clone());
        prefix.pop();
    }
    prefix.push(char::from(b));
    cover(&zeros, &hi[1..], prefix, out);
    prefix.pop();
}

/// Two operators claim the same prefix: the table cannot choose.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("prefix {prefix} is claimed by operators {first} and {second}")]
pub struct DuplicatePrefix {
    pub prefix: String,
    pub first: OperatorId,
    pub second: OperatorId,
}

/// Longest-prefix table from number prefixes to operators. A more specific prefix wins over
/// a shorter one, so a block carved out of another operator's range can be expressed;
/// configuration validation refuses such overlaps between operators all the same, since
/// regulators allocate disjoint blocks and exceptions belong in the portability file.
#[derive(Debug, Clone, Default)]
pub struct PrefixTable {
    entries: HashMap<String, OperatorId>,
    longest: usize,
}

impl PrefixTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add every prefix of `range` for `operator`. The same prefix twice for one operator is
    /// harmless; for two operators it is refused.
    pub fn insert(
        &mut self,
        range: &NumberRange,
        operator: OperatorId,
    ) -> Result<(), DuplicatePrefix> {
        for prefix in range.to_prefixes() {
            match self.entries.get(&prefix) {
                Some(&existing) if existing != operator => {
                    return Err(DuplicatePrefix {
                        prefix,
                        first: existing,
                        second: operator,
                    })
                }
                Some(_) => {}
                None => {
                    self.longest = self.longest.max(prefix.len());
                    self.entries.insert(prefix, operator);
                }
            }
        }
        Ok(())
    }

    /// The operator of the longest prefix of `msisdn`, if any.
    pub fn lookup(&self, msisdn: &Msisdn) -> Option<OperatorId> {
        let digits = msisdn.as_str();
        (1..=self.longest.min(digits.len()))
            .rev()
            .find_map(|len| self.entries.get(&digits[..len]).copied())
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table has no prefix.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Whether two ranges share a number (one prefix of one is a prefix of one of the other's).
pub fn ranges_overlap(a: &NumberRange, b: &NumberRange) -> bool {
    let pa = a.to_prefixes();
    let pb = b.to_prefixes();
    pa.iter().any(|x| {
        pb.iter()
            .any(|y| x.starts_with(y.as_str()) || y.starts_with(x.as_str()))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn r(s: &str) -> NumberRange {
        s.parse().unwrap()
    }

    fn m(s: &str) -> Msisdn {
        Msisdn::parse(s).unwrap()
    }

    #[test]
    fn block_decomposes_into_exact_prefixes() {
        assert_eq!(r("48600000000..48600999999").to_prefixes(), vec!["48600"]);
        assert_eq!(
            r("48600000000..48602999999").to_prefixes(),
            vec!["48600", "48601", "48602"]
        );
        assert_eq!(r("4860..4860").to_prefixes(), vec!["4860"]);
        assert_eq!(
            r("4815..4832").to_prefixes(),
            vec!["4815", "4816", "4817", "4818", "4819", "482", "4830", "4831", "4832"]
        );
    }

    #[test]
    fn decomposition_covers_exactly_the_block() {
        let range = r("1234..2345");
        let prefixes = range.to_prefixes();
        for n in 1000u32..10000 {
            let s = n.to_string();
            let covered = prefixes.iter().any(|p| s.starts_with(p.as_str()));
            assert_eq!(covered, (1234..=2345).contains(&n), "{n}");
        }
    }

    #[test]
    fn bad_ranges_are_refused() {
        assert!(matches!(
            "486x".parse::<NumberRange>(),
            Err(RangeError::NotDigits { at: 3, .. })
        ));
        assert!(matches!(
            "0486".parse::<NumberRange>(),
            Err(RangeError::LeadingZero { .. })
        ));
        assert!(matches!(
            "4860..486".parse::<NumberRange>(),
            Err(RangeError::LengthMismatch { .. })
        ));
        assert!(matches!(
            "4869..4860".parse::<NumberRange>(),
            Err(RangeError::Reversed { .. })
        ));
        assert!(matches!("".parse::<NumberRange>(), Err(RangeError::Empty)));
        assert!(matches!(
            "1234567890123456".parse::<NumberRange>(),
            Err(RangeError::TooLong { .. })
        ));
    }

    #[test]
    fn longest_prefix_wins() {
        let mut t = PrefixTable::new();
        t.insert(&r("48"), OperatorId(0)).unwrap();
        t.insert(&r("48600"), OperatorId(1)).unwrap();
        t.insert(&r("48600500000..48600599999"), OperatorId(2))
            .unwrap();
        assert_eq!(t.lookup(&m("48500100200")), Some(OperatorId(0)));
        assert_eq!(t.lookup(&m("48600100200")), Some(OperatorId(1)));
        assert_eq!(t.lookup(&m("48600512345")), Some(OperatorId(2)));
        assert_eq!(t.lookup(&m("49600100200")), None);
    }

    #[test]
    fn same_prefix_for_two_operators_is_refused() {
        let mut t = PrefixTable::new();
        t.insert(&r("48600"), OperatorId(0)).unwrap();
        t.insert(&r("48600"), OperatorId(0)).unwrap();
        let err = t
            .insert(&r("48600000000..48600999999"), OperatorId(1))
            .unwrap_err();
        assert_eq!(err.prefix, "48600");
    }

    #[test]
    fn overlap_detects_nesting_and_shared_blocks() {
        assert!(ranges_overlap(&r("48"), &r("48600")));
        assert!(ranges_overlap(
            &r("48600000..48600500"),
            &r("48600400..48600999")
        ));
        assert!(!ranges_overlap(
            &r("48600000..48600499"),
            &r("48600500..48600999")
        ));
        assert!(!ranges_overlap(&r("48600"), &r("48601")));
    }
}
