//! Counters of the simulated SMSC, shared by every task and read through the handle.
//!
//! Plain atomics, written on the hot path without locks; [`super::metrics`] reads them into the
//! Prometheus registry at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters. Every field counts events since start except `binds`, the binds open now.
#[derive(Debug, Default)]
pub struct SmscStats {
    /// `submit_sm` accepted (answered ESME_ROK).
    pub submits: AtomicU64,
    /// `submit_sm` answered ESME_RTHROTTLED (per-bind throttle or a throttle storm).
    pub throttled: AtomicU64,
    /// Delivery receipts acknowledged by an ESME.
    pub receipts: AtomicU64,
    /// MO `deliver_sm` acknowledged by an ESME.
    pub mo_delivered: AtomicU64,
    /// `deliver_sm` attempts repeated after an error answer or a timeout.
    pub deliver_retries: AtomicU64,
    /// `deliver_sm` given up after the last attempt, or dropped for lack of queue room.
    pub deliver_failed: AtomicU64,
    /// `generic_nack` sent (undecodable frames and the nack fault).
    pub nacks: AtomicU64,
    /// Binds open now.
    pub binds: AtomicU64,
    /// Successful binds since start.
    pub binds_total: AtomicU64,
    /// Binds refused (authentication, bind limit, already bound).
    pub bind_failures: AtomicU64,
    /// `submit_sm` refused with ESME_RMSGQFUL because the network queue was full.
    pub queue_full: AtomicU64,
    /// Connections closed on accept during an outage fault.
    pub outage_refusals: AtomicU64,
    /// Malformed PDUs sent by the malformed-PDU fault, and those the ESME answered (with
    /// `generic_nack` or an error response) on the same bind.
    pub malformed_sent: AtomicU64,
    pub malformed_answered: AtomicU64,
}

/// A copy of [`SmscStats`] at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub submits: u64,
    pub throttled: u64,
    pub receipts: u64,
    pub mo_delivered: u64,
    pub deliver_retries: u64,
    pub deliver_failed: u64,
    pub nacks: u64,
    pub binds: u64,
    pub binds_total: u64,
    pub bind_failures: u64,
    pub queue_full: u64,
    pub outage_refusals: u64,
    pub malformed_sent: u64,
    pub malformed_answered: u64,
}

impl SmscStats {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dec(counter: &AtomicU64) {
        counter.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            submits: g(&self.submits),
            throttled: g(&self.throttled),
            receipts: g(&self.receipts),
            mo_delivered: g(&self.mo_delivered),
            deliver_retries: g(&self.deliver_retries),
            deliver_failed: g(&self.deliver_failed),
            nacks: g(&self.nacks),
            binds: g(&self.binds),
            binds_total: g(&self.binds_total),
            bind_failures: g(&self.bind_failures),
            queue_full: g(&self.queue_full),
            outage_refusals: g(&self.outage_refusals),
            malformed_sent: g(&self.malformed_sent),
            malformed_answered: g(&self.malformed_answered),
        }
    }
}
