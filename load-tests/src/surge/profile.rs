//! The daily load curve: 24 hourly shares read from a CSV, turned into an arrival rate at any
//! second of the day.
//!
//! The CSV has a header and one row per hour (`hour,...,renewals_in_hour,...`); only the hour
//! and its renewal count matter, and the counts are normalised into shares so a file of counts
//! from another day works unchanged. The rate is piecewise linear between hour midpoints (the
//! hourly mean sits at the middle of its hour; the curve wraps from 23:30 to 00:30), scaled so
//! the whole day integrates to the requested number of renewals.

/// The shipped profile of 31 October 2023 (800 000 renewals).
pub const SHIPPED_CSV: &str = include_str!("../../data/load-profile-31oct2023.csv");
/// Renewals on that day.
pub const DAY_RENEWALS: f64 = 800_000.0;
/// Seconds in the profile's day.
pub const DAY_SECS: f64 = 86_400.0;

/// Why a profile file was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProfileError {
    #[error("line {line}: no `{column}` column in the header")]
    MissingColumn { line: usize, column: &'static str },
    #[error("line {line}: field `{field}` is not a number: {value:?}")]
    NotANumber {
        line: usize,
        field: &'static str,
        value: String,
    },
    #[error("line {line}: hour {hour} is not in 0..=23 or repeats")]
    BadHour { line: usize, hour: i64 },
    #[error("line {line}: `renewals_in_hour` {value} is negative or not finite")]
    BadCount { line: usize, value: f64 },
    #[error("the profile has {0} hours, needs all 24")]
    MissingHours(usize),
    #[error("the profile's day has no renewals")]
    Empty,
}

/// The shape of a day: each hour's share of its renewals (summing to 1).
#[derive(Debug, Clone, PartialEq)]
pub struct DailyProfile {
    shares: [f64; 24],
}

impl DailyProfile {
    /// The shipped 31 October 2023 curve.
    pub fn shipped() -> Self {
        match Self::from_csv(SHIPPED_CSV) {
            Ok(p) => p,
            // The file is compiled in and checked by a unit test; a flat day keeps this total.
            Err(_) => Self::flat(),
        }
    }

    /// The same load every hour.
    pub fn flat() -> Self {
        Self {
            shares: [1.0 / 24.0; 24],
        }
    }

    /// Reads a profile CSV (header with `hour` and `renewals_in_hour`).
    pub fn from_csv(text: &str) -> Result<Self, ProfileError> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        let (header_no, header) = lines.next().ok_or(ProfileError::MissingHours(0))?;
        let columns: Vec<&str> = header.split(',').map(str::trim).collect();
        let find = |column: &'static str| {
            columns
                .iter()
                .position(|c| *c == column)
                .ok_or(ProfileError::MissingColumn {
                    line: header_no + 1,
                    column,
                })
        };
        let hour_col = find("hour")?;
        let count_col = find("renewals_in_hour")?;
        let mut counts = [None::<f64>; 24];
        for (no, line) in lines {
            let line_no = no + 1;
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let get = |col: usize, field: &'static str| -> Result<f64, ProfileError> {
                let raw = fields.get(col).copied().unwrap_or("");
                raw.parse::<f64>().map_err(|_| ProfileError::NotANumber {
                    line: line_no,
                    field,
                    value: raw.to_owned(),
                })
            };
            let hour = get(hour_col, "hour")?;
            let count = get(count_col, "renewals_in_hour")?;
            if hour.fract() != 0.0 || !(0.0..24.0).contains(&hour) {
                return Err(ProfileError::BadHour {
                    line: line_no,
                    hour: hour as i64,
                });
            }
            let slot = &mut counts[hour as usize];
            if slot.is_some() {
                return Err(ProfileError::BadHour {
                    line: line_no,
                    hour: hour as i64,
                });
            }
            if !(count.is_finite() && count >= 0.0) {
                return Err(ProfileError::BadCount {
                    line: line_no,
                    value: count,
                });
            }
            *slot = Some(count);
        }
        let present = counts.iter().filter(|c| c.is_some()).count();
        if present != 24 {
            return Err(ProfileError::MissingHours(present));
        }
        let total: f64 = counts.iter().flatten().sum();
        if total <= 0.0 {
            return Err(ProfileError::Empty);
        }
        let mut shares = [0.0; 24];
        for (s, c) in shares.iter_mut().zip(counts.iter().flatten()) {
            *s = c / total;
        }
        Ok(Self { shares })
    }

    /// Share of the day's renewals in `hour` (0..24).
    pub fn share(&self, hour: usize) -> f64 {
        self.shares[hour % 24]
    }

    /// Renewals per second at `t` seconds of the day when the day carries `day_total`:
    /// interpolated between hour midpoints.
    pub fn rate_at(&self, t: f64, day_total: f64) -> f64 {
        let t = t.rem_euclid(DAY_SECS);
        // Position relative to the midpoints: hour h's midpoint is at (h + 0.5) * 3600.
        let x = t / 3600.0 - 0.5;
        let lo = x.floor();
        let frac = x - lo;
        let a = self.shares[(lo as i64).rem_euclid(24) as usize];
        let b = self.shares[((lo as i64) + 1).rem_euclid(24) as usize];
        let share = a + (b - a) * frac;
        share * day_total / 3600.0
    }

    /// Highest rate of the day (at an hour midpoint), per second.
    pub fn peak_rate(&self, day_total: f64) -> f64 {
        self.shares.iter().copied().fold(0.0, f64::max) * day_total / 3600.0
    }

    /// Expected renewals between `from` and `to` seconds of the day (trapezoid sums, 60 s
    /// steps; exact enough for a piecewise-linear curve with breaks on half hours).
    pub fn expected_between(&self, from: f64, to: f64, day_total: f64) -> f64 {
        if to <= from {
            return 0.0;
        }
        let step = 60.0;
        let mut t = from;
        let mut sum = 0.0;
        while t < to {
            let next = (t + step).min(to);
            sum += (self.rate_at(t, day_total) + self.rate_at(next, day_total)) / 2.0 * (next - t);
            t = next;
        }
        sum
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn shipped_profile_parses_with_its_evening_peak_at_20() {
        let p = DailyProfile::from_csv(SHIPPED_CSV).unwrap();
        let peak = (0..24)
            .max_by(|a, b| p.share(*a).total_cmp(&p.share(*b)))
            .unwrap();
        assert_eq!(peak, 20);
        assert!((p.share(20) - 0.0768).abs() < 0.001);
        let sum: f64 = (0..24).map(|h| p.share(h)).sum();
        assert!((sum - 1.0).abs() < 1e-9);
    }

    #[test]
    fn whole_day_integrates_to_the_day_total() {
        let p = DailyProfile::shipped();
        let n = p.expected_between(0.0, DAY_SECS, DAY_RENEWALS);
        assert!((n - DAY_RENEWALS).abs() < 1.0, "{n}");
    }

    #[test]
    fn rate_at_an_hour_midpoint_is_that_hours_mean() {
        let p = DailyProfile::shipped();
        // 20:30: the peak hour's mean, ~17.08/s in the CSV.
        let r = p.rate_at(20.5 * 3600.0, DAY_RENEWALS);
        assert!((r - 17.08).abs() < 0.05, "{r}");
    }

    #[test]
    fn rate_is_interpolated_between_midpoints_and_wraps_midnight() {
        let p = DailyProfile::shipped();
        let at_21 = p.rate_at(21.0 * 3600.0, DAY_RENEWALS);
        let mid =
            (p.rate_at(20.5 * 3600.0, DAY_RENEWALS) + p.rate_at(21.5 * 3600.0, DAY_RENEWALS)) / 2.0;
        assert!((at_21 - mid).abs() < 1e-9);
        let midnight = p.rate_at(0.0, DAY_RENEWALS);
        let expect = (p.share(23) + p.share(0)) / 2.0 * DAY_RENEWALS / 3600.0;
        assert!((midnight - expect).abs() < 1e-9);
    }

    #[test]
    fn missing_hours_and_bad_numbers_are_refused_with_the_line() {
        assert_eq!(
            DailyProfile::from_csv("hour,renewals_in_hour\n0,5\n"),
            Err(ProfileError::MissingHours(1))
        );
        assert!(matches!(
            DailyProfile::from_csv("hour,renewals_in_hour\n0,x\n"),
            Err(ProfileError::NotANumber { line: 2, .. })
        ));
        assert!(matches!(
            DailyProfile::from_csv("hour,count\n0,1\n"),
            Err(ProfileError::MissingColumn { line: 1, .. })
        ));
        assert!(matches!(
            DailyProfile::from_csv("hour,renewals_in_hour\n24,1\n"),
            Err(ProfileError::BadHour { line: 2, hour: 24 })
        ));
    }
}
