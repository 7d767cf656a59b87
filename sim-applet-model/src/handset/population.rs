//! What a seeded population is, shared by the gateway's provisioning and the simulated network:
//! subscriber `index` of population `seed` has the applet by [`has_applet`], its card keys by
//! `CardSecrets::derive`, its user by `UserParams`. Both sides derive the same answers from the
//! seed, so neither needs the other's table.

use super::rng::derive_seed;

/// Stream of `derive_seed` for applet presence (card keys and user behaviour use others).
const STREAM_APPLET: u64 = 0x4150_504C;

/// Whether subscriber `index` of population `seed` has the applet, for an applet share in
/// [0, 1]: a pure function of its arguments, shared by the gateway's provisioning and the
/// simulated network (`load-tests`), so both agree on who can be reached by STK.
pub fn has_applet(seed: u64, index: u64, share: f64) -> bool {
    if share.is_nan() || share <= 0.0 {
        return false;
    }
    if share >= 1.0 {
        return true;
    }
    let u = (derive_seed(seed, index, STREAM_APPLET) >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
    u < share
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applet_presence_is_deterministic_and_follows_the_share() {
        let n = 20_000u64;
        let with = (0..n).filter(|&i| has_applet(42, i, 0.7)).count() as f64 / n as f64;
        assert!((with - 0.7).abs() < 0.02, "{with}");
        for i in 0..100 {
            assert_eq!(has_applet(42, i, 0.7), has_applet(42, i, 0.7));
            assert!(!has_applet(42, i, 0.0));
            assert!(has_applet(42, i, 1.0));
            // A larger share only adds subscribers.
            if has_applet(42, i, 0.3) {
                assert!(has_applet(42, i, 0.7));
            }
        }
        let differ = (0..100).any(|i| has_applet(1, i, 0.5) != has_applet(2, i, 0.5));
        assert!(differ);
    }
}
