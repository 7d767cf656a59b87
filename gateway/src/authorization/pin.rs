//! The gateway's check of PINs typed over USSD (LoA3 without the SIM applet): the subscriber's
//! salted, peppered verifier from the registry, with the failure count and lockout kept
//! durably in the store. The channel driver calls [`UssdPinCheck::verify`] once per PIN; the
//! authorization manager refuses to prompt at all while the subscriber is locked.

use std::sync::Arc;

use crate::channel::PinVerifier as ChannelPinVerifier;
use crate::routing::Msisdn;
use crate::store::{LockState, LockoutPolicy, PinAttempt, Store};
use crate::subscribers::{Pepper, SubscriberRegistry};

/// Unix milliseconds now (injected so tests run on their own clock).
pub type UnixClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock as unix milliseconds.
pub fn system_clock() -> UnixClock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    })
}

/// PIN check with lockout.
pub struct UssdPinCheck {
    store: Arc<dyn Store>,
    subscribers: Arc<SubscriberRegistry>,
    pepper: Pepper,
    policy: LockoutPolicy,
    clock: UnixClock,
}

impl std::fmt::Debug for UssdPinCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UssdPinCheck")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl UssdPinCheck {
    pub fn new(
        store: Arc<dyn Store>,
        subscribers: Arc<SubscriberRegistry>,
        pepper: Pepper,
        policy: LockoutPolicy,
        clock: UnixClock,
    ) -> Self {
        Self {
            store,
            subscribers,
            pepper,
            policy,
            clock,
        }
    }
}

#[async_trait::async_trait]
impl ChannelPinVerifier for UssdPinCheck {
    /// Wrong, unknown subscriber, locked, or store trouble: all `false` (fail closed). The
    /// attempt is counted durably before the PIN is checked and the count cleared when it is
    /// right, so a crash in between costs the user one try and never gives an attacker one
    /// more. Runs in its own task, off the operator's driver.
    async fn verify(&self, msisdn: &str, pin: &str) -> bool {
        let Ok(number) = Msisdn::parse(msisdn) else {
            return false;
        };
        let Some(record) = self.subscribers.get(&number) else {
            return false;
        };
        let now = (self.clock)();
        let after = match self
            .store
            .count_pin_attempt(number.as_str(), now, &self.policy)
            .await
        {
            Ok(PinAttempt::Counted(after)) => after,
            Ok(PinAttempt::Refused(_)) => return false,
            Err(e) => {
                tracing::error!(error = %e, "PIN attempt not counted; not checked");
                return false;
            }
        };
        if record.pin.verify(&self.pepper, pin.as_bytes()) {
            if let Err(e) = self.store.reset_pin_failures(number.as_str()).await {
                tracing::error!(error = %e, "PIN failures not reset");
            }
            true
        } else {
            if !matches!(after, LockState::Open { .. }) {
                tracing::info!(msisdn = %number.masked(), "USSD PIN locked");
            }
            false
        }
    }
}
