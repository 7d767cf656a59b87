//! Admission by capacity, sans IO: may a new authorization start on this operator now, given
//! what its binds carry and what already waits for them?
//!
//! A start is admitted only when its prompt is expected to leave within
//! [`AdmissionPolicy::max_prompt_wait`] (and early enough to leave the user
//! [`AdmissionPolicy::min_answer_time`] before the authorization expires). The expected wait is
//! what waits ahead of the prompt over what the operator's bound binds carry per second:
//! `(waiting + 1) / capacity`, where `waiting` is the larger of the submissions queued in the
//! binds and the admitted prompts not yet accepted by the SMSC (the latter counts prompts still
//! on their way to a bind, so a burst of starts cannot all pass on the same empty queue), and
//! `capacity` is the sum of each bound bind's paced rate (or its window over its round trip,
//! when that is lower). The queue is also kept under half of the binds' room, so a submission
//! of an admitted authorization never finds a bind queue full.
//!
//! A refusal carries a `Retry-After`: the time the queue needs to drain down to what the policy
//! admits, at least a second; with no bind up, the caller's default.

use std::time::Duration;

/// What one operator's binds carry now, as admission sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OperatorLoad {
    /// Submissions handed to the binds and not yet written.
    pub waiting_submits: usize,
    /// Submits per second the bound binds carry together; `Some(0.0)`: no bind is up;
    /// `None`: not known yet (binds still binding for the first time, or no round trip yet).
    pub capacity: Option<f64>,
    /// Submissions the binds can hold in their queues together.
    pub queue_room: usize,
}

/// An operator's admission settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionPolicy {
    /// Longest expected wait of a new prompt in the binds' queues.
    pub max_prompt_wait: Duration,
    /// Time the user must have left when the prompt goes out; a prompt that would leave later
    /// is not sent, and a start whose prompt is expected to is not admitted.
    pub min_answer_time: Duration,
}

impl Default for AdmissionPolicy {
    fn default() -> Self {
        Self {
            max_prompt_wait: Duration::from_secs(2),
            min_answer_time: Duration::from_secs(3),
        }
    }
}

/// Why a start was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No bind of the operator is up.
    NoBind,
    /// The prompt would wait longer than the policy allows.
    QueueTooLong,
}

impl Refusal {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NoBind => "no_bind",
            Refusal::QueueTooLong => "queue_too_long",
        }
    }
}

/// The verdict on one start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admission {
    /// Start it; the expected wait of its prompt (`None`: not known yet).
    Admit { expected_wait: Option<Duration> },
    /// Refuse it; try again after `retry_after` (`None`: the caller's default).
    Refuse {
        why: Refusal,
        retry_after: Option<Duration>,
    },
}

/// Longest `Retry-After` given: beyond it the estimate means little.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Judges one start of an authorization that expires after `expiry`, with `awaiting_prompts`
/// admitted prompts not yet accepted by the SMSC.
pub fn judge(
    policy: &AdmissionPolicy,
    load: &OperatorLoad,
    awaiting_prompts: usize,
    expiry: Duration,
) -> Admission {
    let waiting = load.waiting_submits.max(awaiting_prompts);
    if waiting.saturating_add(1).saturating_mul(2) > load.queue_room.max(1) {
        // Whatever the rate says, the queues must keep room for the admitted ones' next steps.
        let retry_after = load
            .capacity
            .filter(|c| *c > 0.0)
            .map(|c| wait_for(waiting.saturating_sub(load.queue_room / 2), c));
        return Admission::Refuse {
            why: Refusal::QueueTooLong,
            retry_after: retry_after.map(clamp_retry),
        };
    }
    let capacity = match load.capacity {
        None => {
            return Admission::Admit {
                expected_wait: None,
            }
        }
        Some(c) if c <= 0.0 => {
            return Admission::Refuse {
                why: Refusal::NoBind,
                retry_after: None,
            }
        }
        Some(c) => c,
    };
    let limit = policy
        .max_prompt_wait
        .min(expiry.saturating_sub(policy.min_answer_time));
    let expected_wait = wait_for(waiting.saturating_add(1), capacity);
    if expected_wait <= limit {
        return Admission::Admit {
            expected_wait: Some(expected_wait),
        };
    }
    Admission::Refuse {
        why: Refusal::QueueTooLong,
        retry_after: Some(clamp_retry(expected_wait.saturating_sub(limit))),
    }
}

fn wait_for(submissions: usize, capacity: f64) -> Duration {
    Duration::from_secs_f64((submissions as f64 / capacity).min(MAX_RETRY_AFTER.as_secs_f64()))
}

fn clamp_retry(wait: Duration) -> Duration {
    // Whole seconds, as `Retry-After` carries them, rounded up.
    Duration::from_secs(wait.as_secs_f64().ceil() as u64)
        .clamp(Duration::from_secs(1), MAX_RETRY_AFTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(waiting: usize, capacity: Option<f64>) -> OperatorLoad {
        OperatorLoad {
            waiting_submits: waiting,
            capacity,
            queue_room: 2000,
        }
    }

    const EXPIRY: Duration = Duration::from_secs(60);

    #[test]
    fn admits_while_the_prompt_leaves_within_the_policy_wait() {
        let policy = AdmissionPolicy::default();
        // 200/s: 399 ahead means the new one leaves after 2.0 s, the limit.
        assert!(matches!(
            judge(&policy, &load(399, Some(200.0)), 0, EXPIRY),
            Admission::Admit { expected_wait: Some(w) } if w == Duration::from_secs(2)
        ));
        assert_eq!(
            judge(&policy, &load(400, Some(200.0)), 0, EXPIRY),
            Admission::Refuse {
                why: Refusal::QueueTooLong,
                retry_after: Some(Duration::from_secs(1))
            }
        );
    }

    #[test]
    fn prompts_on_their_way_count_as_waiting() {
        let policy = AdmissionPolicy::default();
        assert!(matches!(
            judge(&policy, &load(0, Some(100.0)), 250, EXPIRY),
            Admission::Refuse {
                why: Refusal::QueueTooLong,
                ..
            }
        ));
    }

    #[test]
    fn retry_after_is_the_drain_time_beyond_the_limit_in_whole_seconds() {
        let policy = AdmissionPolicy::default();
        // 10/s and 100 ahead: 10.1 s, 8.1 s over the limit: 9 s.
        assert_eq!(
            judge(&policy, &load(100, Some(10.0)), 0, EXPIRY),
            Admission::Refuse {
                why: Refusal::QueueTooLong,
                retry_after: Some(Duration::from_secs(9))
            }
        );
    }

    #[test]
    fn a_short_expiry_leaves_the_user_the_minimum_answer_time() {
        let policy = AdmissionPolicy::default();
        // 4 s to live, 3 s kept for the user: the prompt must leave within 1 s.
        let short = Duration::from_secs(4);
        assert!(matches!(
            judge(&policy, &load(150, Some(100.0)), 0, short),
            Admission::Refuse { .. }
        ));
        assert!(matches!(
            judge(&policy, &load(50, Some(100.0)), 0, short),
            Admission::Admit { .. }
        ));
    }

    #[test]
    fn no_bind_up_refuses_with_the_default_retry() {
        assert_eq!(
            judge(&AdmissionPolicy::default(), &load(0, Some(0.0)), 0, EXPIRY),
            Admission::Refuse {
                why: Refusal::NoBind,
                retry_after: None
            }
        );
    }

    #[test]
    fn unknown_capacity_admits_until_half_the_queue_room() {
        let policy = AdmissionPolicy::default();
        assert!(matches!(
            judge(&policy, &load(998, None), 0, EXPIRY),
            Admission::Admit {
                expected_wait: None
            }
        ));
        assert!(matches!(
            judge(&policy, &load(1000, None), 0, EXPIRY),
            Admission::Refuse {
                why: Refusal::QueueTooLong,
                retry_after: None
            }
        ));
        // A fast bind does not lift the room limit either.
        assert!(matches!(
            judge(&policy, &load(1000, Some(100_000.0)), 0, EXPIRY),
            Admission::Refuse {
                why: Refusal::QueueTooLong,
                ..
            }
        ));
    }
}
