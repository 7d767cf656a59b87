//! Binds: authentication, the per-account bind limit, and delivery to an account's receivers.
//!
//! A connection asks the [`Registry`] to bind; on success it gets a [`BindTicket`] with its own
//! bounded queue of [`Delivery`] (receipts and MO) and a kill switch (the drop-bind fault).
//! Anything that produces a `deliver_sm` for an account calls [`Registry::dispatch`], which
//! picks the account's receiver-capable binds round robin; when none is bound or all queues are
//! full the delivery waits in a bounded per-account backlog, handed out when a receiver binds or
//! a bind makes room ([`Registry::refill`]). A closing bind returns what it still holds with
//! [`Registry::unregister`], and it is dispatched again to the other binds.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use rusmpp::pdus::DeliverSm;
use rusmpp::CommandStatus;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::config::AccountConfig;

/// What an ESME bound as (the three bind types of SMPP); named apart from the gateway's own
/// `BindKind`, which says what it binds as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoundAs {
    Transmitter,
    Receiver,
    Transceiver,
}

impl BoundAs {
    /// The SMPP name of the bind type (metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transmitter => "transmitter",
            Self::Receiver => "receiver",
            Self::Transceiver => "transceiver",
        }
    }

    pub fn can_submit(self) -> bool {
        matches!(self, Self::Transmitter | Self::Transceiver)
    }

    pub fn can_receive(self) -> bool {
        matches!(self, Self::Receiver | Self::Transceiver)
    }
}

/// Why a bind was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    #[error("unknown system_id")]
    UnknownSystemId,
    #[error("wrong password")]
    WrongPassword,
    #[error("account already has its maximum of {max} binds")]
    TooManyBinds { max: usize },
}

impl BindError {
    /// The `command_status` of the bind response. An unknown system id gets the generic
    /// ESME_RBINDFAIL so a scan cannot tell which ids exist from the status alone.
    pub fn status(&self) -> CommandStatus {
        match self {
            Self::UnknownSystemId | Self::TooManyBinds { .. } => CommandStatus::EsmeRbindfail,
            Self::WrongPassword => CommandStatus::EsmeRinvpaswd,
        }
    }
}

/// What a `deliver_sm` carries, so its acknowledgement can be counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryKind {
    Receipt,
    Mo,
}

/// One `deliver_sm` on its way to an account.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub kind: DeliveryKind,
    pub pdu: DeliverSm,
    /// Attempts made so far.
    pub attempts: u32,
}

/// Where a dispatched delivery went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatched {
    ToBind,
    Backlogged,
    /// No room anywhere; the delivery is lost.
    Dropped,
    UnknownAccount,
}

/// A granted bind.
#[derive(Debug)]
pub struct BindTicket {
    pub bind_id: u64,
    pub system_id: String,
    pub kind: BoundAs,
    pub throttle_tps: Option<u32>,
    /// Deliveries for this bind (empty forever for transmitters).
    pub deliveries: mpsc::Receiver<Delivery>,
    /// Cancelled when the bind must be dropped without unbind.
    pub kill: CancellationToken,
}

#[derive(Debug)]
struct BindEntry {
    bind_id: u64,
    kind: BoundAs,
    tx: mpsc::Sender<Delivery>,
    kill: CancellationToken,
}

#[derive(Debug)]
struct AccountState {
    config: AccountConfig,
    binds: Vec<BindEntry>,
    next_rr: usize,
    backlog: VecDeque<Delivery>,
}

#[derive(Debug)]
struct Inner {
    accounts: HashMap<String, AccountState>,
    next_bind_id: u64,
}

/// All accounts and their live binds.
#[derive(Debug)]
pub struct Registry {
    inner: Mutex<Inner>,
    queue_per_bind: usize,
    backlog_capacity: usize,
}

impl Registry {
    pub fn new(accounts: &[AccountConfig], queue_per_bind: usize, backlog_capacity: usize) -> Self {
        let accounts = accounts
            .iter()
            .map(|a| {
                (
                    a.system_id.clone(),
                    AccountState {
                        config: a.clone(),
                        binds: Vec::new(),
                        next_rr: 0,
                        backlog: VecDeque::new(),
                    },
                )
            })
            .collect();
        Self {
            inner: Mutex::new(Inner {
                accounts,
                next_bind_id: 1,
            }),
            queue_per_bind: queue_per_bind.max(1),
            backlog_capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every mutation below leaves the maps consistent at each step, so a poisoned lock is
        // still safe to use.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Authenticates and registers a bind.
    pub fn bind(
        &self,
        system_id: &str,
        password: &[u8],
        kind: BoundAs,
    ) -> Result<BindTicket, BindError> {
        let mut inner = self.lock();
        let bind_id = inner.next_bind_id;
        let Some(account) = inner.accounts.get_mut(system_id) else {
            // Same work as a known id, so timing does not tell ids apart either.
            let _ = constant_time_eq(password, b"\0\0\0\0\0\0\0\0");
            return Err(BindError::UnknownSystemId);
        };
        if !constant_time_eq(password, account.config.password.as_bytes()) {
            return Err(BindError::WrongPassword);
        }
        if account.binds.len() >= account.config.max_binds {
            return Err(BindError::TooManyBinds {
                max: account.config.max_binds,
            });
        }
        let (tx, rx) = mpsc::channel(self.queue_per_bind);
        let kill = CancellationToken::new();
        if kind.can_receive() {
            while let Some(d) = account.backlog.pop_front() {
                if let Err(e) = tx.try_send(d) {
                    let (mpsc::error::TrySendError::Full(d) | mpsc::error::TrySendError::Closed(d)) =
                        e;
                    account.backlog.push_front(d);
                    break;
                }
            }
        }
        account.binds.push(BindEntry {
            bind_id,
            kind,
            tx,
            kill: kill.clone(),
        });
        let throttle_tps = account.config.throttle_tps;
        inner.next_bind_id += 1;
        Ok(BindTicket {
            bind_id,
            system_id: system_id.to_owned(),
            kind,
            throttle_tps,
            deliveries: rx,
            kill,
        })
    }

    /// Removes a bind and dispatches again what it gives back. Returns how many of those were
    /// dropped for lack of room.
    pub fn unregister(&self, system_id: &str, bind_id: u64, leftovers: Vec<Delivery>) -> usize {
        {
            let mut inner = self.lock();
            if let Some(account) = inner.accounts.get_mut(system_id) {
                account.binds.retain(|b| b.bind_id != bind_id);
            }
        }
        leftovers
            .into_iter()
            .filter(|d| self.dispatch(system_id, d.clone()) == Dispatched::Dropped)
            .count()
    }

    /// Sends a delivery to the next receiver-capable bind of the account with room, or to the
    /// backlog.
    pub fn dispatch(&self, system_id: &str, delivery: Delivery) -> Dispatched {
        let mut inner = self.lock();
        let Some(account) = inner.accounts.get_mut(system_id) else {
            return Dispatched::UnknownAccount;
        };
        let n = account.binds.len();
        let mut delivery = delivery;
        // Older deliveries go first: a non-empty backlog means this one queues behind it.
        if account.backlog.is_empty() {
            for i in 0..n {
                let idx = (account.next_rr + i) % n;
                let bind = &account.binds[idx];
                if !bind.kind.can_receive() {
                    continue;
                }
                match bind.tx.try_send(delivery) {
                    Ok(()) => {
                        account.next_rr = (idx + 1) % n;
                        return Dispatched::ToBind;
                    }
                    Err(mpsc::error::TrySendError::Full(d))
                    | Err(mpsc::error::TrySendError::Closed(d)) => delivery = d,
                }
            }
        }
        if account.backlog.len() < self.backlog_capacity {
            account.backlog.push_back(delivery);
            Dispatched::Backlogged
        } else {
            Dispatched::Dropped
        }
    }

    /// Moves backlogged deliveries of the account into this bind's queue while it has room.
    pub fn refill(&self, system_id: &str, bind_id: u64) {
        let mut inner = self.lock();
        let Some(account) = inner.accounts.get_mut(system_id) else {
            return;
        };
        let Some(bind) = account.binds.iter().find(|b| b.bind_id == bind_id) else {
            return;
        };
        if !bind.kind.can_receive() {
            return;
        }
        while let Some(d) = account.backlog.pop_front() {
            if let Err(e) = bind.tx.try_send(d) {
                let (mpsc::error::TrySendError::Full(d) | mpsc::error::TrySendError::Closed(d)) = e;
                account.backlog.push_front(d);
                break;
            }
        }
    }

    /// Fires the kill switch of every bind of `system_id` (all accounts if `None`); returns how
    /// many binds were hit.
    pub fn drop_binds(&self, system_id: Option<&str>) -> usize {
        let inner = self.lock();
        let mut hit = 0;
        for (id, account) in &inner.accounts {
            if system_id.is_some_and(|s| s != id) {
                continue;
            }
            for b in &account.binds {
                b.kill.cancel();
                hit += 1;
            }
        }
        hit
    }

    /// Whether the account exists.
    pub fn has_account(&self, system_id: &str) -> bool {
        self.lock().accounts.contains_key(system_id)
    }

    /// Binds open now per account and kind, every account and kind listed (zeros included),
    /// sorted; read by the metrics endpoint.
    pub fn open_binds(&self) -> Vec<(String, BoundAs, u64)> {
        let inner = self.lock();
        let mut out = Vec::new();
        for (id, account) in &inner.accounts {
            for kind in [
                BoundAs::Transmitter,
                BoundAs::Receiver,
                BoundAs::Transceiver,
            ] {
                let n = account.binds.iter().filter(|b| b.kind == kind).count();
                out.push((id.clone(), kind, n as u64));
            }
        }
        out.sort_by(|a, b| (&a.0, a.1 as u8).cmp(&(&b.0, b.1 as u8)));
        out
    }
}

/// Compares two secrets in time that depends only on the longer length, not on where they
/// differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..n {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn registry(max_binds: usize) -> Registry {
        let mut a = AccountConfig::new("gw", "secret");
        a.max_binds = max_binds;
        Registry::new(&[a], 4, 2)
    }

    fn mo() -> Delivery {
        Delivery {
            kind: DeliveryKind::Mo,
            pdu: DeliverSm::default(),
            attempts: 0,
        }
    }

    #[test]
    fn constant_time_eq_matches_plain_equality() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret\0"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn a_wrong_password_is_refused_with_invpaswd() {
        let r = registry(2);
        let e = r.bind("gw", b"nope", BoundAs::Transceiver).unwrap_err();
        assert_eq!(e, BindError::WrongPassword);
        assert_eq!(e.status(), CommandStatus::EsmeRinvpaswd);
        assert_eq!(
            r.bind("who", b"secret", BoundAs::Transceiver)
                .unwrap_err()
                .status(),
            CommandStatus::EsmeRbindfail
        );
    }

    #[test]
    fn the_bind_limit_is_per_account_and_freed_on_unregister() {
        let r = registry(1);
        let t = r.bind("gw", b"secret", BoundAs::Transmitter).unwrap();
        assert_eq!(
            r.bind("gw", b"secret", BoundAs::Receiver).unwrap_err(),
            BindError::TooManyBinds { max: 1 }
        );
        r.unregister("gw", t.bind_id, Vec::new());
        assert!(r.bind("gw", b"secret", BoundAs::Receiver).is_ok());
    }

    #[test]
    fn deliveries_go_round_robin_to_receivers_only() {
        let r = registry(3);
        let mut tx = r.bind("gw", b"secret", BoundAs::Transmitter).unwrap();
        let mut a = r.bind("gw", b"secret", BoundAs::Receiver).unwrap();
        let mut b = r.bind("gw", b"secret", BoundAs::Transceiver).unwrap();
        for _ in 0..4 {
            assert_eq!(r.dispatch("gw", mo()), Dispatched::ToBind);
        }
        let count =
            |t: &mut BindTicket| std::iter::from_fn(|| t.deliveries.try_recv().ok()).count();
        assert_eq!(count(&mut tx), 0);
        assert_eq!(count(&mut a), 2);
        assert_eq!(count(&mut b), 2);
    }

    #[test]
    fn without_a_receiver_deliveries_wait_and_flow_on_bind() {
        let r = registry(2);
        assert_eq!(r.dispatch("gw", mo()), Dispatched::Backlogged);
        assert_eq!(r.dispatch("gw", mo()), Dispatched::Backlogged);
        assert_eq!(r.dispatch("gw", mo()), Dispatched::Dropped);
        let mut t = r.bind("gw", b"secret", BoundAs::Receiver).unwrap();
        assert!(t.deliveries.try_recv().is_ok());
        assert!(t.deliveries.try_recv().is_ok());
        assert!(t.deliveries.try_recv().is_err());
    }

    #[test]
    fn drop_binds_fires_the_kill_switch_of_the_account_only() {
        let mut other = AccountConfig::new("other", "x");
        other.max_binds = 1;
        let r = Registry::new(&[AccountConfig::new("gw", "secret"), other], 4, 4);
        let a = r.bind("gw", b"secret", BoundAs::Receiver).unwrap();
        let b = r.bind("other", b"x", BoundAs::Receiver).unwrap();
        assert_eq!(r.drop_binds(Some("gw")), 1);
        assert!(a.kill.is_cancelled());
        assert!(!b.kill.is_cancelled());
    }
}
