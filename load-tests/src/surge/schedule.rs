//! The arrival schedule of an open workload: when each authorization is due, for whom and at
//! which LoA, all decided before the run from the seed.
//!
//! Arrivals are a non-homogeneous Poisson process around the [`DailyProfile`] curve (thinning:
//! candidates at the window's peak rate, each kept with probability rate(t) / peak), over a
//! window of the day, then compressed in time: profile second `t` happens `t / compress` real
//! seconds after the run starts. Subscribers are taken from the population in a seeded
//! permutation (`index = (offset + n * stride) mod size`, `stride` coprime to `size`), so no
//! MSISDN is asked twice while the run offers at most `size` authorizations, and the gateway's
//! one-prompt-per-subscriber rule does not turn load into 409s.

use std::time::Duration;

use super::profile::{DailyProfile, DAY_SECS};

/// A small seeded generator (SplitMix64): reproducible runs without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5EED_5EED_5EED_5EED)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Exponential with the given rate (mean 1 / rate).
    pub fn exponential(&mut self, rate: f64) -> f64 {
        -(1.0 - self.uniform()).ln() / rate
    }
}

/// What the schedule is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleConfig {
    /// Renewals of the whole (unscaled) day.
    pub day_renewals: f64,
    /// Fraction of the day's renewals to offer.
    pub scale: f64,
    /// Profile seconds per real second.
    pub compress: f64,
    /// Window of the day replayed, profile seconds `[from, to)`.
    pub window_secs: (f64, f64),
    /// Share of authorizations asking for LoA 3 (PIN); the rest LoA 2.
    pub loa3_share: f64,
    /// Population size (subscribers are drawn from `0..size`).
    pub population: u32,
    pub seed: u64,
    /// Stop scheduling after this many real seconds, if set.
    pub duration_limit: Option<Duration>,
}

/// One scheduled authorization.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    /// Sequence number in the run.
    pub n: u64,
    /// When it is due, real time after the run starts.
    pub at: Duration,
    /// Population index of the subscriber (MSISDN = base + index).
    pub index: u32,
    /// LoA 3 (PIN) rather than LoA 2.
    pub loa3: bool,
}

/// Why a schedule cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    #[error("`scale` {0} must be above 0 and finite")]
    Scale(f64),
    #[error("`compress` {0} must be above 0 and finite")]
    Compress(f64),
    #[error("window {0}..{1} s is empty or outside the day")]
    Window(f64, f64),
    #[error("`loa3_share` {0} is not in 0.0..=1.0")]
    LoaShare(f64),
    #[error("the population is empty")]
    Population,
}

/// Builds the whole schedule, sorted by `at`.
pub fn build(profile: &DailyProfile, c: &ScheduleConfig) -> Result<Vec<Arrival>, ScheduleError> {
    if !(c.scale.is_finite() && c.scale > 0.0) {
        return Err(ScheduleError::Scale(c.scale));
    }
    if !(c.compress.is_finite() && c.compress > 0.0) {
        return Err(ScheduleError::Compress(c.compress));
    }
    let (from, to) = c.window_secs;
    if !(from >= 0.0 && to <= DAY_SECS && from < to) {
        return Err(ScheduleError::Window(from, to));
    }
    if !(0.0..=1.0).contains(&c.loa3_share) {
        return Err(ScheduleError::LoaShare(c.loa3_share));
    }
    if c.population == 0 {
        return Err(ScheduleError::Population);
    }
    let total = c.day_renewals * c.scale;
    // The curve is piecewise linear, so its maximum over the window is at an end or a midpoint.
    let mut peak = profile.rate_at(from, total).max(profile.rate_at(to, total));
    let mut h = (from / 3600.0 - 0.5).ceil();
    while (h + 0.5) * 3600.0 < to {
        peak = peak.max(profile.rate_at((h + 0.5) * 3600.0, total));
        h += 1.0;
    }
    if peak <= 0.0 {
        return Ok(Vec::new());
    }
    let mut rng = Rng::new(c.seed);
    let mut picker = Permutation::new(c.population, &mut rng);
    let mut out = Vec::new();
    let mut t = from;
    let limit = c.duration_limit.map(|d| d.as_secs_f64());
    loop {
        t += rng.exponential(peak);
        if t >= to {
            break;
        }
        let real = (t - from) / c.compress;
        if limit.is_some_and(|l| real >= l) {
            break;
        }
        let keep = rng.uniform() < profile.rate_at(t, total) / peak;
        if !keep {
            continue;
        }
        let loa3 = rng.uniform() < c.loa3_share;
        let n = out.len() as u64;
        out.push(Arrival {
            n,
            at: Duration::from_secs_f64(real),
            index: picker.next(),
            loa3,
        });
    }
    Ok(out)
}

/// Parses `--window-hours` (`19-21` = 19:00 to 21:00, `0-24` the whole day) into seconds.
pub fn parse_window_hours(s: &str) -> Result<(f64, f64), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("window `{s}`: expected FROM-TO in hours, e.g. 19-21"))?;
    let parse = |x: &str| {
        x.trim()
            .parse::<f64>()
            .map_err(|_| format!("window `{s}`: `{x}` is not a number of hours"))
    };
    let (a, b) = (parse(a)?, parse(b)?);
    if !((0.0..24.0).contains(&a) && a < b && b <= 24.0) {
        return Err(format!("window `{s}`: needs 0 <= FROM < TO <= 24"));
    }
    Ok((a * 3600.0, b * 3600.0))
}

/// A walk through `0..size` visiting each index once per lap.
#[derive(Debug, Clone)]
struct Permutation {
    size: u64,
    stride: u64,
    at: u64,
}

impl Permutation {
    fn new(size: u32, rng: &mut Rng) -> Self {
        let size = u64::from(size);
        let mut stride = (size as f64 * 0.618_033_988_7) as u64 + rng.next_u64() % 97;
        stride = stride.max(1);
        while gcd(stride, size) != 1 {
            stride += 1;
        }
        Self {
            size,
            stride: stride % size.max(1),
            at: rng.next_u64() % size,
        }
    }

    fn next(&mut self) -> u32 {
        let i = self.at;
        self.at = (self.at + self.stride) % self.size;
        // `size` came from a u32, so the index fits.
        u32::try_from(i).unwrap_or(0)
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::surge::profile::DAY_RENEWALS;
    use std::collections::HashSet;

    fn config() -> ScheduleConfig {
        ScheduleConfig {
            day_renewals: DAY_RENEWALS,
            scale: 0.01,
            compress: 1000.0,
            window_secs: (0.0, DAY_SECS),
            loa3_share: 0.3,
            population: 100_000,
            seed: 42,
            duration_limit: None,
        }
    }

    #[test]
    fn a_whole_day_at_one_percent_offers_about_8000() {
        let s = build(&DailyProfile::shipped(), &config()).unwrap();
        // Poisson with mean 8000: sd ~ 89, so 5 sd is 450.
        assert!((s.len() as f64 - 8000.0).abs() < 450.0, "{}", s.len());
        let last = s.last().unwrap().at.as_secs_f64();
        assert!(last > 80.0 && last <= 86.4, "{last}");
        assert!(s.windows(2).all(|w| w[0].at <= w[1].at));
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_does_not() {
        let p = DailyProfile::shipped();
        let a = build(&p, &config()).unwrap();
        let b = build(&p, &config()).unwrap();
        assert_eq!(a, b);
        let c = build(
            &p,
            &ScheduleConfig {
                seed: 43,
                ..config()
            },
        )
        .unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn a_window_offers_its_share_of_the_day() {
        let p = DailyProfile::shipped();
        let c = ScheduleConfig {
            window_secs: parse_window_hours("19-21").unwrap(),
            scale: 0.1,
            ..config()
        };
        let s = build(&p, &c).unwrap();
        let expect = p.expected_between(19.0 * 3600.0, 21.0 * 3600.0, DAY_RENEWALS * 0.1);
        let sd = expect.sqrt();
        assert!(
            (s.len() as f64 - expect).abs() < 5.0 * sd,
            "{} vs {expect}",
            s.len()
        );
        // Real time starts at the window's start.
        assert!(s.last().unwrap().at.as_secs_f64() <= 7200.0 / 1000.0);
    }

    #[test]
    fn arrivals_follow_the_curve_evening_busier_than_night() {
        let s = build(
            &DailyProfile::shipped(),
            &ScheduleConfig {
                scale: 0.1,
                ..config()
            },
        )
        .unwrap();
        let in_hour = |h: f64| {
            s.iter()
                .filter(|a| {
                    let t = a.at.as_secs_f64() * 1000.0 / 3600.0;
                    t >= h && t < h + 1.0
                })
                .count()
        };
        assert!(in_hour(20.0) > 10 * in_hour(3.0));
    }

    #[test]
    fn no_subscriber_is_asked_twice_within_a_lap_of_the_population() {
        let c = ScheduleConfig {
            population: 9_000,
            ..config()
        };
        let s = build(&DailyProfile::shipped(), &c).unwrap();
        let n = s.len().min(9_000);
        let distinct: HashSet<u32> = s[..n].iter().map(|a| a.index).collect();
        assert_eq!(distinct.len(), n);
        assert!(s.iter().all(|a| a.index < 9_000));
    }

    #[test]
    fn loa3_share_is_respected() {
        let s = build(&DailyProfile::shipped(), &config()).unwrap();
        let share = s.iter().filter(|a| a.loa3).count() as f64 / s.len() as f64;
        assert!((share - 0.3).abs() < 0.03, "{share}");
    }

    #[test]
    fn duration_limit_cuts_the_schedule() {
        let c = ScheduleConfig {
            duration_limit: Some(Duration::from_secs(10)),
            ..config()
        };
        let s = build(&DailyProfile::shipped(), &c).unwrap();
        assert!(s.iter().all(|a| a.at < Duration::from_secs(10)));
        assert!(!s.is_empty());
    }

    #[test]
    fn bad_windows_and_factors_are_refused() {
        assert!(parse_window_hours("21-19").is_err());
        assert!(parse_window_hours("x").is_err());
        assert_eq!(parse_window_hours("0-24").unwrap(), (0.0, DAY_SECS));
        let p = DailyProfile::shipped();
        assert_eq!(
            build(
                &p,
                &ScheduleConfig {
                    compress: 0.0,
                    ..config()
                }
            ),
            Err(ScheduleError::Compress(0.0))
        );
        assert_eq!(
            build(
                &p,
                &ScheduleConfig {
                    scale: -1.0,
                    ..config()
                }
            ),
            Err(ScheduleError::Scale(-1.0))
        );
    }
}
