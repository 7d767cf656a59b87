//! Chaos as a first-class run: a plan of faults at chosen seconds of the run, carried out while
//! the workload goes on, and what each did.
//!
//! The plan is a comma-separated list of `ACTION@SECONDS[:ARGUMENT]`:
//!
//! | action | argument | what happens |
//! |---|---|---|
//! | `kill-gateway` | - | SIGKILL of the gateway process, restarted at once on the same store and addresses |
//! | `smsc-outage` | seconds (5) | the in-process SMSC drops every bind and closes new connections for that long |
//! | `throttle-storm` | seconds (5) | every `submit_sm` answered ESME_RTHROTTLED for that long |
//! | `malformed` | count (10) | that many malformed PDUs sent to the gateway's binds |
//!
//! A run with a plan also checks results twice over (see `verify`): `duplicates` must be 0
//! next to `lost`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ChaosAction {
    KillGateway,
    SmscOutage(Duration),
    ThrottleStorm(Duration),
    Malformed(u32),
}

impl ChaosAction {
    pub fn name(&self) -> &'static str {
        match self {
            Self::KillGateway => "kill-gateway",
            Self::SmscOutage(_) => "smsc-outage",
            Self::ThrottleStorm(_) => "throttle-storm",
            Self::Malformed(_) => "malformed",
        }
    }

    /// Whether the action needs the SMSC run by surge.
    pub fn needs_smsc(&self) -> bool {
        !matches!(self, Self::KillGateway)
    }
}

/// One planned fault: `action` at `at` after the run's start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChaosEvent {
    pub at: Duration,
    pub action: ChaosAction,
}

/// What one planned fault did, for the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChaosRecord {
    pub action: String,
    /// Seconds from the run's start: planned and actual.
    pub planned_s: f64,
    pub at_s: f64,
    /// `done`, `skipped (run over)` or the error.
    pub outcome: String,
    /// For `kill-gateway`: milliseconds from the kill until the new process was ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
}

/// Parses a plan like `kill-gateway@20,smsc-outage@35:5,throttle-storm@50:3,malformed@60:20`;
/// the events come back in time order. Errors name the bad item.
pub fn parse_plan(text: &str) -> Result<Vec<ChaosEvent>, String> {
    let mut plan = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (action, rest) = item
            .split_once('@')
            .ok_or_else(|| format!("`{item}`: expected ACTION@SECONDS[:ARGUMENT]"))?;
        let (at, argument) = match rest.split_once(':') {
            Some((at, arg)) => (at, Some(arg)),
            None => (rest, None),
        };
        let at: f64 = at
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite() && *s >= 0.0 && *s <= 86_400.0)
            .ok_or_else(|| format!("`{item}`: the time must be seconds from 0 to 86400"))?;
        let seconds = |default: f64| -> Result<Duration, String> {
            let s = match argument {
                Some(a) => a
                    .parse::<f64>()
                    .map_err(|_| format!("`{item}`: the argument must be a duration in seconds"))?,
                None => default,
            };
            if !(s > 0.0 && s <= 3_600.0) {
                return Err(format!("`{item}`: the duration must be in (0, 3600] s"));
            }
            Ok(Duration::from_secs_f64(s))
        };
        let action = match action {
            "kill-gateway" => {
                if argument.is_some() {
                    return Err(format!("`{item}`: kill-gateway takes no argument"));
                }
                ChaosAction::KillGateway
            }
            "smsc-outage" => ChaosAction::SmscOutage(seconds(5.0)?),
            "throttle-storm" => ChaosAction::ThrottleStorm(seconds(5.0)?),
            "malformed" => {
                let n = match argument {
                    Some(a) => a
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=100_000).contains(n))
                        .ok_or_else(|| format!("`{item}`: the count must be 1..=100000"))?,
                    None => 10,
                };
                ChaosAction::Malformed(n)
            }
            other => {
                return Err(format!(
                    "`{item}`: unknown action `{other}` (kill-gateway, smsc-outage, \
                     throttle-storm, malformed)"
                ))
            }
        };
        plan.push(ChaosEvent {
            at: Duration::from_secs_f64(at),
            action,
        });
    }
    plan.sort_by_key(|e| e.at);
    Ok(plan)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_parses_in_time_order_with_defaults() {
        let plan =
            parse_plan("smsc-outage@35:2.5, kill-gateway@20,malformed@60,throttle-storm@50:3")
                .unwrap();
        assert_eq!(
            plan,
            vec![
                ChaosEvent {
                    at: Duration::from_secs(20),
                    action: ChaosAction::KillGateway
                },
                ChaosEvent {
                    at: Duration::from_secs(35),
                    action: ChaosAction::SmscOutage(Duration::from_millis(2500))
                },
                ChaosEvent {
                    at: Duration::from_secs(50),
                    action: ChaosAction::ThrottleStorm(Duration::from_secs(3))
                },
                ChaosEvent {
                    at: Duration::from_secs(60),
                    action: ChaosAction::Malformed(10)
                },
            ]
        );
        assert!(parse_plan("").unwrap().is_empty());
    }

    #[test]
    fn bad_items_are_named() {
        for (text, needle) in [
            ("kill-gateway", "ACTION@SECONDS"),
            ("reboot@3", "unknown action `reboot`"),
            ("smsc-outage@x", "time must be seconds"),
            ("smsc-outage@3:0", "duration must be"),
            ("malformed@3:0", "count must be"),
            ("kill-gateway@3:1", "takes no argument"),
            ("throttle-storm@-1", "time must be seconds"),
        ] {
            let e = parse_plan(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
            assert!(e.contains(text.split(',').next().unwrap()), "{text}: {e}");
        }
    }
}
