//! Memory per authorization in flight: the resident set of the driver (this process) and of
//! the gateway child (`--gateway-process`) sampled every second, against the in-flight count.
//! The figure is the growth from the baseline (sampled once the system is up, before the
//! first arrival: the subscriber registry, the store's cache and the simulated handsets are
//! fixed costs) to the sample with the most authorizations in flight, over that count.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::workload::{lock, Shared};

/// Fewest authorizations in flight for a figure per authorization.
pub const MIN_IN_FLIGHT: u64 = 10_000;

/// How often the resident sets are sampled.
const PERIOD: Duration = Duration::from_secs(1);

/// The resident set now (`VmRSS`) of process `pid` (`"self"` or a number), bytes.
pub fn resident_bytes(pid: &str) -> Option<u64> {
    super::report::status_bytes(pid, "VmRSS")
}

/// One sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MemorySample {
    pub in_flight: u64,
    pub driver_rss_bytes: u64,
    /// The gateway child's, when it runs in one.
    pub gateway_rss_bytes: Option<u64>,
}

/// The report's `memory`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryFigures {
    /// Before the first arrival.
    pub baseline: MemorySample,
    /// The sample with the most authorizations in flight.
    pub at_peak: MemorySample,
    /// Growth of the driver's resident set per authorization in flight at the peak.
    pub driver_bytes_per_in_flight: Option<f64>,
    /// ... of the gateway child's (with `--gateway-process`).
    pub gateway_bytes_per_in_flight: Option<f64>,
}

impl MemoryFigures {
    fn from_samples(baseline: MemorySample, at_peak: MemorySample) -> Self {
        // Below this many the growth is the allocator's and the runtime's noise.
        let per = |now: u64, before: u64| {
            (at_peak.in_flight >= MIN_IN_FLIGHT)
                .then(|| (now.saturating_sub(before) as f64 / at_peak.in_flight as f64).round())
        };
        Self {
            baseline,
            at_peak,
            driver_bytes_per_in_flight: per(at_peak.driver_rss_bytes, baseline.driver_rss_bytes),
            gateway_bytes_per_in_flight: match (
                at_peak.gateway_rss_bytes,
                baseline.gateway_rss_bytes,
            ) {
                (Some(now), Some(before)) => per(now, before),
                _ => None,
            },
        }
    }
}

/// Samples until `stop`; the figures then.
pub(super) async fn sample(
    shared: Arc<Shared>,
    gateway_pid: Option<u32>,
    stop: CancellationToken,
) -> MemoryFigures {
    let take = |in_flight: u64| MemorySample {
        in_flight,
        driver_rss_bytes: resident_bytes("self").unwrap_or(0),
        gateway_rss_bytes: gateway_pid.and_then(|p| resident_bytes(&p.to_string())),
    };
    let baseline = take(0);
    let mut at_peak = baseline;
    let mut tick = tokio::time::interval(PERIOD);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let in_flight = lock(&shared.rec).in_flight;
        if in_flight > at_peak.in_flight {
            at_peak = take(in_flight);
        }
    }
    MemoryFigures::from_samples(baseline, at_peak)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_over_the_peak_count_and_none_without_a_gateway_child() {
        let base = MemorySample {
            in_flight: 0,
            driver_rss_bytes: 1_000,
            gateway_rss_bytes: None,
        };
        let peak = MemorySample {
            in_flight: 10_000,
            driver_rss_bytes: 5_001_000,
            gateway_rss_bytes: None,
        };
        let f = MemoryFigures::from_samples(base, peak);
        assert_eq!(f.driver_bytes_per_in_flight, Some(500.0));
        let few = MemorySample {
            in_flight: 16,
            ..peak
        };
        assert_eq!(
            MemoryFigures::from_samples(base, few).driver_bytes_per_in_flight,
            None
        );
        assert_eq!(f.gateway_bytes_per_in_flight, None);
        assert!(resident_bytes("self").is_some_and(|b| b > 0));
    }
}
