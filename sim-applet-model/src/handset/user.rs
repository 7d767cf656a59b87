//! The simulated user: a parametric, seeded model of how people answer a consent prompt. One
//! intent is drawn per dialog (approve, deny, ignore); each screen then costs a log-normal think
//! time; each PIN entry may be mistyped. Defaults follow the figures in protocol-notes §6: a push
//! approval takes ~8 s on average, 4-5 % are never completed, ~1-2 % are denied, 1-3 % of PIN
//! entries are wrong.

use super::rng::SplitMix64;

/// Parameters of the user model (shared by a whole population).
#[derive(Debug, Clone, PartialEq)]
pub struct UserParams {
    /// Mean time to read the consent screen and clear it (DISPLAY TEXT), ms.
    pub read_mean_ms: f64,
    /// Mean time to answer Yes/No (GET INKEY) or a USSD menu, ms.
    pub decide_mean_ms: f64,
    /// Mean time to type a PIN (GET INPUT, or a PIN over USSD), ms.
    pub pin_entry_mean_ms: f64,
    /// Shape of the log-normal think times (sigma of the underlying normal).
    pub sigma: f64,
    /// Floor of any think time, ms: nobody answers faster.
    pub min_action_ms: u64,
    /// Probability a dialog is never answered.
    pub p_ignore: f64,
    /// Probability the user refuses.
    pub p_deny: f64,
    /// Probability each PIN entry is wrong.
    pub p_wrong_pin: f64,
}

impl Default for UserParams {
    fn default() -> Self {
        UserParams {
            // 5 s + 3 s: ~8 s from push to answer for a Yes/No, as for push approvals.
            read_mean_ms: 5_000.0,
            decide_mean_ms: 3_000.0,
            pin_entry_mean_ms: 5_000.0,
            sigma: 0.6,
            min_action_ms: 700,
            p_ignore: 0.045,
            p_deny: 0.015,
            p_wrong_pin: 0.02,
        }
    }
}

/// What the user means to do with one dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    Approve,
    Deny,
    Ignore,
}

/// Kinds of screen, each with its own think-time mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Read,
    Decide,
    EnterPin,
}

impl UserParams {
    /// Draw the intent of one dialog.
    pub fn draw_intent(&self, rng: &mut SplitMix64) -> Intent {
        let u = rng.next_f64();
        if u < self.p_ignore {
            Intent::Ignore
        } else if u < self.p_ignore + self.p_deny {
            Intent::Deny
        } else {
            Intent::Approve
        }
    }

    /// Draw a think time in ms for one screen.
    pub fn draw_delay_ms(&self, rng: &mut SplitMix64, step: Step) -> u64 {
        let mean = match step {
            Step::Read => self.read_mean_ms,
            Step::Decide => self.decide_mean_ms,
            Step::EnterPin => self.pin_entry_mean_ms,
        };
        let ms = rng.next_lognormal(mean, self.sigma);
        // Cap at a day so a silly sigma cannot overflow the clock.
        (ms.min(86_400_000.0) as u64).max(self.min_action_ms)
    }

    /// The digits the user types for a PIN they know: usually right, sometimes one digit off.
    pub fn type_pin(&self, rng: &mut SplitMix64, pin: &[u8]) -> Vec<u8> {
        let mut typed = pin.to_vec();
        if rng.next_f64() < self.p_wrong_pin && !typed.is_empty() {
            let i = rng.below(typed.len() as u32) as usize;
            // Shift the digit by 1..=9 so the result is always a different digit.
            let d = typed[i].wrapping_sub(b'0') % 10;
            typed[i] = b'0' + (d + 1 + rng.below(9) as u8) % 10;
        }
        typed
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn default_intents_match_the_figures() {
        let p = UserParams::default();
        let mut r = SplitMix64::new(11);
        let n = 100_000;
        let (mut ign, mut deny) = (0, 0);
        for _ in 0..n {
            match p.draw_intent(&mut r) {
                Intent::Ignore => ign += 1,
                Intent::Deny => deny += 1,
                Intent::Approve => {}
            }
        }
        let (fi, fd) = (ign as f64 / n as f64, deny as f64 / n as f64);
        assert!((0.04..0.05).contains(&fi), "ignore {fi}");
        assert!((0.01..0.02).contains(&fd), "deny {fd}");
    }

    #[test]
    fn yes_no_takes_about_eight_seconds() {
        let p = UserParams::default();
        let mut r = SplitMix64::new(5);
        let n = 50_000;
        let total: u64 = (0..n)
            .map(|_| p.draw_delay_ms(&mut r, Step::Read) + p.draw_delay_ms(&mut r, Step::Decide))
            .sum();
        let mean = total as f64 / n as f64;
        assert!((7_500.0..8_600.0).contains(&mean), "mean {mean}");
    }

    #[test]
    fn a_mistyped_pin_differs() {
        let p = UserParams {
            p_wrong_pin: 1.0,
            ..UserParams::default()
        };
        let mut r = SplitMix64::new(1);
        for _ in 0..1000 {
            let t = p.type_pin(&mut r, b"4821");
            assert_ne!(t, b"4821");
            assert_eq!(t.len(), 4);
            assert!(t.iter().all(u8::is_ascii_digit));
        }
    }
}
