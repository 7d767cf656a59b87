//! A small deterministic PRNG (SplitMix64) and the seed derivation that gives every simulated
//! handset its own reproducible stream from (population seed, index) without storing a generator
//! per idle handset. SplitMix64 is enough for a behaviour model; it is not for cryptography.

/// SplitMix64 (Steele, Lea, Flood 2014): one `u64` of state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

/// The SplitMix64 output function, also used on its own to hash seeds together.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed for stream `stream` of handset `index` in population `seed`. Different streams (keys,
/// dialog number n ...) are independent so adding draws to one never shifts another.
pub fn derive_seed(seed: u64, index: u64, stream: u64) -> u64 {
    mix64(
        mix64(seed ^ 0x6D43_4131_5345_4544)
            .wrapping_add(mix64(index.wrapping_add(0x9E37_79B9_7F4A_7C15)))
            ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03),
    )
}

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// Next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.state)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in 0..n (n > 0), by multiply-shift (bias below 2^-32 for small n).
    pub fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * u64::from(n)) >> 32) as u32
    }

    /// Standard normal by Box-Muller.
    pub fn next_normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]: ln is finite
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Log-normal with the given mean and shape sigma (of the underlying normal).
    pub fn next_lognormal(&mut self, mean: f64, sigma: f64) -> f64 {
        let mu = mean.max(f64::MIN_POSITIVE).ln() - sigma * sigma / 2.0;
        (mu + sigma * self.next_normal()).exp()
    }

    /// Fill a buffer.
    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_reference_sequence() {
        // Reference values of SplitMix64 seeded with 1234567 (from the public-domain C code).
        let mut r = SplitMix64::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
    }

    #[test]
    fn lognormal_has_the_requested_mean() {
        let mut r = SplitMix64::new(42);
        let n = 200_000;
        let mean = (0..n).map(|_| r.next_lognormal(8.0, 0.6)).sum::<f64>() / n as f64;
        assert!((mean - 8.0).abs() < 0.1, "mean {mean}");
    }

    #[test]
    fn derived_seeds_differ_by_index_and_stream() {
        assert_ne!(derive_seed(1, 0, 0), derive_seed(1, 1, 0));
        assert_ne!(derive_seed(1, 0, 0), derive_seed(1, 0, 1));
        assert_ne!(derive_seed(1, 0, 0), derive_seed(2, 0, 0));
        assert_eq!(derive_seed(7, 9, 3), derive_seed(7, 9, 3));
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = SplitMix64::new(3);
        assert!((0..10_000).all(|_| r.below(10) < 10));
    }
}
