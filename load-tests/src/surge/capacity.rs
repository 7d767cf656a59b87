//! Capacity search (`surge --capacity`): run the same slice of the day at rising compression
//! until the gateway's p99 or the error rate crosses its threshold, then narrow the boundary by
//! bisection, and report the highest offered rate that was sustained.
//!
//! The search is written against a `run(compress) -> Step` closure so the logic is tested with
//! a synthetic system; the binary passes a closure that does a whole surge run per step.

use std::future::Future;

use serde::{Deserialize, Serialize};

use super::config::SurgeConfig;

/// Search settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityConfig {
    /// First compression tried.
    pub start_compress: f64,
    /// Each ramp step multiplies the compression by this (> 1).
    pub factor: f64,
    /// Most ramp steps before giving up (the system kept up with everything).
    pub max_steps: u32,
    /// Bisection steps between the last sustained and the first failed compression.
    pub refine_steps: u32,
    /// A step fails when the gateway's p99 exceeds this, ms.
    pub p99_limit_ms: u64,
    /// ... or when the error rate (see [`Step::error_rate`]) exceeds this.
    pub error_rate_limit: f64,
}

impl Default for CapacityConfig {
    fn default() -> Self {
        Self {
            start_compress: 100.0,
            factor: 2.0,
            max_steps: 8,
            refine_steps: 2,
            p99_limit_ms: 2_000,
            error_rate_limit: 0.01,
        }
    }
}

/// What one run at one compression showed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub compress: f64,
    pub offered_per_s: f64,
    pub achieved_per_s: f64,
    /// The gateway's own p99, ms.
    pub gateway_p99_ms: u64,
    /// Refused, failed by the system, or lost, over offered.
    pub error_rate: f64,
    /// Authorizations not accounted for; any makes the step fail.
    pub lost: u64,
    /// Whether the step met both thresholds (filled by the search).
    pub sustained: bool,
}

/// The search's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityResult {
    pub steps: Vec<Step>,
    /// The highest-rate sustained step, if any was.
    pub best: Option<Step>,
    /// Set when even the last ramp step was sustained: the true capacity is higher.
    pub ceiling_not_reached: bool,
}

impl CapacityConfig {
    fn judge(&self, mut s: Step) -> Step {
        s.sustained = s.gateway_p99_ms <= self.p99_limit_ms
            && s.error_rate <= self.error_rate_limit
            && s.lost == 0;
        s
    }
}

/// Runs the search. `run` is called with each compression in turn.
pub async fn search<F, Fut, E>(config: &CapacityConfig, mut run: F) -> Result<CapacityResult, E>
where
    F: FnMut(f64) -> Fut,
    Fut: Future<Output = Result<Step, E>>,
{
    let mut steps = Vec::new();
    let mut compress = config.start_compress;
    let mut last_ok: Option<f64> = None;
    let mut first_fail: Option<f64> = None;
    for _ in 0..config.max_steps.max(1) {
        let step = config.judge(run(compress).await?);
        let ok = step.sustained;
        steps.push(step);
        if ok {
            last_ok = Some(compress);
            compress *= config.factor.max(1.01);
        } else {
            first_fail = Some(compress);
            break;
        }
    }
    if let (Some(mut lo), Some(mut hi)) = (last_ok, first_fail) {
        for _ in 0..config.refine_steps {
            let mid = (lo * hi).sqrt();
            let step = config.judge(run(mid).await?);
            if step.sustained {
                lo = mid;
            } else {
                hi = mid;
            }
            steps.push(step);
        }
    }
    let best = steps
        .iter()
        .filter(|s| s.sustained)
        .max_by(|a, b| a.achieved_per_s.total_cmp(&b.achieved_per_s))
        .cloned();
    Ok(CapacityResult {
        ceiling_not_reached: first_fail.is_none(),
        best,
        steps,
    })
}

impl CapacityResult {
    /// Summary lines for stdout.
    pub fn to_text(&self) -> String {
        let mut s = String::from("capacity search\n");
        for st in &self.steps {
            s.push_str(&format!(
                "  x{:<8.1} offered {:>8.2}/s achieved {:>8.2}/s gateway p99 {:>6} ms errors {:>6.2} % lost {} -> {}\n",
                st.compress,
                st.offered_per_s,
                st.achieved_per_s,
                st.gateway_p99_ms,
                st.error_rate * 100.0,
                st.lost,
                if st.sustained { "ok" } else { "over" }
            ));
        }
        match &self.best {
            Some(b) => s.push_str(&format!(
                "  highest sustainable: {:.2}/s (x{:.1}){}\n",
                b.achieved_per_s,
                b.compress,
                if self.ceiling_not_reached {
                    " - ceiling not reached, raise --capacity-steps"
                } else {
                    ""
                }
            )),
            None => s.push_str("  no step was sustained: lower --compress\n"),
        }
        s
    }
}

/// Runs the capacity search over whole surge runs: the same slice of the day at rising
/// compression.
pub async fn capacity_search(
    base: &SurgeConfig,
    config: &CapacityConfig,
) -> anyhow::Result<CapacityResult> {
    let result = search(config, |compress| {
        let c = SurgeConfig {
            compress,
            ..base.clone()
        };
        async move {
            let r = super::workload::run(&c).await?;
            let step = Step {
                compress,
                offered_per_s: r.offered_per_s,
                achieved_per_s: r.achieved_per_s,
                gateway_p99_ms: r.gateway_latency_ms.p99,
                error_rate: r.error_rate(),
                lost: r.lost,
                sustained: false,
            };
            eprintln!(
                "capacity step x{compress:.1}: offered {:.2}/s achieved {:.2}/s gateway p99 {} ms errors {:.2} %",
                step.offered_per_s, step.achieved_per_s, step.gateway_p99_ms, step.error_rate * 100.0
            );
            anyhow::Ok(step)
        }
    })
    .await?;
    Ok(result)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    /// A system that keeps up to `capacity` per second; the rate offered is compress / 10.
    fn system(capacity: f64) -> impl FnMut(f64) -> std::future::Ready<Result<Step, Infallible>> {
        move |compress| {
            let offered = compress / 10.0;
            let over = offered > capacity;
            std::future::ready(Ok(Step {
                compress,
                offered_per_s: offered,
                achieved_per_s: offered.min(capacity),
                gateway_p99_ms: if over { 5_000 } else { 200 },
                error_rate: if over { 0.2 } else { 0.0 },
                lost: 0,
                sustained: false,
            }))
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn ramp_stops_at_the_first_step_over_and_bisects_towards_capacity() {
        let c = CapacityConfig {
            start_compress: 100.0,
            factor: 2.0,
            max_steps: 10,
            refine_steps: 4,
            ..CapacityConfig::default()
        };
        // Capacity 50/s = compress 500: ramp 100, 200, 400 ok, 800 over; bisection in 400..800.
        let r = block_on(search(&c, system(50.0))).unwrap();
        assert_eq!(r.steps.len(), 4 + 4);
        assert!(!r.ceiling_not_reached);
        let best = r.best.unwrap();
        assert!(
            best.achieved_per_s <= 50.0 && best.achieved_per_s > 45.0,
            "{best:?}"
        );
    }

    #[test]
    fn a_system_that_never_breaks_reports_the_ceiling_not_reached() {
        let c = CapacityConfig {
            max_steps: 3,
            ..CapacityConfig::default()
        };
        let r = block_on(search(&c, system(1e9))).unwrap();
        assert_eq!(r.steps.len(), 3);
        assert!(r.ceiling_not_reached);
        assert_eq!(r.best.unwrap().compress, 400.0);
    }

    #[test]
    fn a_lost_authorization_fails_a_step_whatever_the_latency() {
        let c = CapacityConfig::default();
        let s = c.judge(Step {
            compress: 1.0,
            offered_per_s: 1.0,
            achieved_per_s: 1.0,
            gateway_p99_ms: 1,
            error_rate: 0.0,
            lost: 1,
            sustained: true,
        });
        assert!(!s.sustained);
    }

    #[test]
    fn nothing_sustained_gives_no_best() {
        let c = CapacityConfig::default();
        let r = block_on(search(&c, system(0.0))).unwrap();
        assert!(r.best.is_none());
        assert_eq!(r.steps.len(), 1);
    }
}
