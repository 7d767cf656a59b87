//! The subscriber registry: for each MSISDN, whether the SIM carries our applet, its TAR and
//! OTA key set (KIc/KID octets and keys), and the USSD PIN verifier.
//!
//! Data flow: `gateway provision` ([`provision`]) writes a subscriber file from a population
//! seed; at start the gateway loads it (or generates the same records in memory from
//! `[subscribers.generate]`) into a [`SubscriberRegistry`], looked up by [`Msisdn`]. The
//! simulated network in `load-tests` derives its handsets from the same seed with
//! [`has_applet`] and `CardSecrets::derive` (both in `sim-applet-model`), so both sides agree without sharing a table.
//!
//! Mutable per-subscriber state (OTA counter, PIN failures, lockout) lives in the store, with
//! its lockout rule (`store::LockoutPolicy`).
//!
//! - [`verifier`]: salted, peppered HMAC-SHA256 PIN verifiers, constant-time check.
//! - [`provision`]: record generation, the subscriber file format (JSON lines, mode 0600).

pub mod provision;
pub mod verifier;

use std::collections::HashMap;

pub use sim_applet_model::handset::population::has_applet;

use crate::routing::Msisdn;

pub use provision::{ProvisionError, SubscriberRecord};
pub use verifier::{Pepper, PinVerifier};

/// Subscribers by MSISDN.
#[derive(Debug, Default)]
pub struct SubscriberRegistry {
    by_msisdn: HashMap<u64, SubscriberRecord>,
}

impl SubscriberRegistry {
    /// A registry of these records (a later duplicate MSISDN replaces an earlier one; the
    /// file loader refuses duplicates before this).
    pub fn from_records(records: impl IntoIterator<Item = SubscriberRecord>) -> Self {
        SubscriberRegistry {
            by_msisdn: records
                .into_iter()
                .map(|r| (r.msisdn.as_u64(), r))
                .collect(),
        }
    }

    /// The record of a number.
    pub fn get(&self, msisdn: &Msisdn) -> Option<&SubscriberRecord> {
        self.by_msisdn.get(&msisdn.as_u64())
    }

    /// Number of subscribers.
    pub fn len(&self) -> usize {
        self.by_msisdn.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_msisdn.is_empty()
    }
}
