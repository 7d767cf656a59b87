//! Outgoing callbacks (Keycloak CIBA results, native `callback_url`): delivered or given up,
//! and how long a delivery took, retries included.
//!
//! The caller of [`crate::callback::CallbackClient::post_json`] records its [`crate::callback::Delivery`]
//! here with [`CallbackMetrics::record`].

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::{label_enum, seconds, MACHINE_LATENCY_BUCKETS};

label_enum! {
    /// How a callback ended.
    pub enum CallbackOutcome {
        /// The receiver took it (2xx).
        Delivered => "delivered",
        /// The receiver refused it for good (4xx other than 408/429).
        Refused => "refused",
        /// Retries ran out or the deadline passed.
        Expired => "expired",
        /// It could not be built (bad URL or token).
        Unsendable => "unsendable",
    }
}

label_enum! {
    /// Who the callback goes to.
    pub enum CallbackTarget {
        /// Keycloak's CIBA callback endpoint.
        Keycloak => "keycloak",
        /// A native API client's `callback_url`.
        Native => "native",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Labels {
    target: CallbackTarget,
    outcome: CallbackOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TargetLabels {
    target: CallbackTarget,
}

/// Callback metrics.
#[derive(Debug)]
pub struct CallbackMetrics {
    /// `[target][outcome]`.
    ended: Vec<Counter>,
    attempts: Vec<Counter>,
    duration: Vec<Histogram>,
}

impl CallbackMetrics {
    /// Registers the callback families.
    pub fn new(registry: &mut Registry) -> Self {
        let ended_family = Family::<Labels, Counter>::default();
        let attempts_family = Family::<TargetLabels, Counter>::default();
        let duration_family = Family::<TargetLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(MACHINE_LATENCY_BUCKETS)
        });
        registry.register(
            "callbacks",
            "Callbacks that ended, by target and outcome (delivered, refused, expired, unsendable)",
            ended_family.clone(),
        );
        registry.register(
            "callback_attempts",
            "HTTP attempts made to deliver callbacks, retries included",
            attempts_family.clone(),
        );
        registry.register(
            "callback_duration_seconds",
            "Time from the first attempt to the end of a callback delivery",
            duration_family.clone(),
        );
        let mut ended = Vec::new();
        let mut attempts = Vec::new();
        let mut duration = Vec::new();
        for &target in CallbackTarget::ALL {
            for &outcome in CallbackOutcome::ALL {
                ended.push(ended_family.get_or_create_owned(&Labels { target, outcome }));
            }
            attempts.push(attempts_family.get_or_create_owned(&TargetLabels { target }));
            duration.push(duration_family.get_or_create_owned(&TargetLabels { target }));
        }
        Self {
            ended,
            attempts,
            duration,
        }
    }

    /// One callback ended after `attempts` HTTP attempts and `elapsed` in all.
    pub fn record(
        &self,
        target: CallbackTarget,
        outcome: CallbackOutcome,
        attempts: u32,
        elapsed: Duration,
    ) {
        let t = target as usize;
        self.ended[t * CallbackOutcome::ALL.len() + outcome as usize].inc();
        self.attempts[t].inc_by(u64::from(attempts));
        self.duration[t].observe(seconds(elapsed));
    }

    /// Delivered callbacks so far for `target` (tests, health summaries).
    pub fn delivered(&self, target: CallbackTarget) -> u64 {
        self.ended
            [target as usize * CallbackOutcome::ALL.len() + CallbackOutcome::Delivered as usize]
            .get()
    }
}
