//! The 5-octet replay counter (CNTR) and the SPI counter policies a receiver applies to it.
//! The receiver keeps the last accepted value itself; this file only judges.

use super::error::{OtaError, ResponseStatus};
use super::spi::CounterPolicy;

/// A 40-bit counter, as carried big-endian in CNTR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Counter(u64);

impl Counter {
    /// The largest value; a key set whose counter reached it is blocked.
    pub const MAX: Counter = Counter(0xFF_FFFF_FFFF);

    /// A counter, if `value` fits in 40 bits.
    pub fn new(value: u64) -> Result<Self, OtaError> {
        if value > Self::MAX.0 {
            Err(OtaError::CounterOutOfRange(value))
        } else {
            Ok(Counter(value))
        }
    }

    /// The value.
    pub fn value(self) -> u64 {
        self.0
    }

    /// Parse the 5 CNTR octets.
    pub fn from_bytes(b: [u8; 5]) -> Self {
        Counter(b.iter().fold(0u64, |acc, &x| acc << 8 | u64::from(x)))
    }

    /// The 5 CNTR octets.
    pub fn to_bytes(self) -> [u8; 5] {
        let b = self.0.to_be_bytes();
        [b[3], b[4], b[5], b[6], b[7]]
    }
}

/// Judge a received counter against the last one accepted for the key set, per the SPI policy
/// (TS 102 225 §5.1.1, status codes of §5.2.2). `NoCounter` and `Present` accept anything.
/// Once the stored counter has reached [`Counter::MAX`] no higher value exists, so a checked
/// policy answers [`ResponseStatus::CounterBlocked`].
pub fn check_counter(
    policy: CounterPolicy,
    last_seen: u64,
    received: u64,
) -> Result<(), ResponseStatus> {
    let max = Counter::MAX.value();
    match policy {
        CounterPolicy::NoCounter | CounterPolicy::Present => Ok(()),
        CounterPolicy::Higher | CounterPolicy::OneHigher if last_seen >= max => {
            Err(ResponseStatus::CounterBlocked)
        }
        _ if received <= last_seen => Err(ResponseStatus::CounterLow),
        _ if received > max => Err(ResponseStatus::CounterHigh),
        CounterPolicy::OneHigher if received != last_seen + 1 => Err(ResponseStatus::CounterHigh),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn counter_is_five_octets_big_endian() {
        let c = Counter::new(0x01_0203_0405).unwrap();
        assert_eq!(c.to_bytes(), [1, 2, 3, 4, 5]);
        assert_eq!(Counter::from_bytes([1, 2, 3, 4, 5]), c);
        assert_eq!(Counter::from_bytes([0xFF; 5]), Counter::MAX);
        assert_eq!(
            Counter::new(0x100_0000_0000),
            Err(OtaError::CounterOutOfRange(0x100_0000_0000))
        );
    }

    #[test]
    fn unchecked_policies_accept_any_counter() {
        for p in [CounterPolicy::NoCounter, CounterPolicy::Present] {
            assert_eq!(check_counter(p, 10, 0), Ok(()));
            assert_eq!(check_counter(p, 10, 10), Ok(()));
            assert_eq!(check_counter(p, 0xFF_FFFF_FFFF, 0), Ok(()));
        }
    }

    #[test]
    fn higher_policy_needs_a_strictly_higher_counter() {
        let p = CounterPolicy::Higher;
        assert_eq!(check_counter(p, 10, 11), Ok(()));
        assert_eq!(check_counter(p, 10, 1000), Ok(()));
        assert_eq!(check_counter(p, 10, 10), Err(ResponseStatus::CounterLow));
        assert_eq!(check_counter(p, 10, 9), Err(ResponseStatus::CounterLow));
        assert_eq!(check_counter(p, 0, 0xFF_FFFF_FFFF), Ok(()));
    }

    #[test]
    fn one_higher_policy_needs_exactly_the_next_counter() {
        let p = CounterPolicy::OneHigher;
        assert_eq!(check_counter(p, 10, 11), Ok(()));
        assert_eq!(check_counter(p, 10, 12), Err(ResponseStatus::CounterHigh));
        assert_eq!(check_counter(p, 10, 10), Err(ResponseStatus::CounterLow));
        assert_eq!(check_counter(p, 0, 1), Ok(()));
    }

    #[test]
    fn a_counter_at_its_maximum_is_blocked() {
        for p in [CounterPolicy::Higher, CounterPolicy::OneHigher] {
            assert_eq!(
                check_counter(p, 0xFF_FFFF_FFFF, 0xFF_FFFF_FFFF),
                Err(ResponseStatus::CounterBlocked)
            );
            assert_eq!(
                check_counter(p, 0xFF_FFFF_FFFF, 3),
                Err(ResponseStatus::CounterBlocked)
            );
            assert_eq!(check_counter(p, 0xFF_FFFF_FFFE, 0xFF_FFFF_FFFF), Ok(()));
        }
    }

    #[test]
    fn a_counter_beyond_forty_bits_is_too_high() {
        assert_eq!(
            check_counter(CounterPolicy::Higher, 5, 1 << 40),
            Err(ResponseStatus::CounterHigh)
        );
    }
}
