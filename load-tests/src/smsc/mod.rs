//! The simulated SMSC: an SMPP server standing in for an operator's SMSC and USSD gateway.
//!
//! Data flow: ESMEs connect to [`server`] (accept loop, connection limit); each connection
//! authenticates through the [`bind`] registry, submits MT that [`throttle`] may refuse and
//! [`faults`] may disturb, and gets receipts and MO as `deliver_sm` within its window. Accepted
//! MT go, converted by [`pdus`], to the sans-IO [`network`]: the [`EchoNetwork`] that answers
//! every USSD request alike, or the seeded handset [`population`] (handsets, SIM applets and
//! users from `sim-applet-model`), whose answers come back as MO for any receiver bind of the
//! account.
//! [`config`] holds the settings and the TOML loader; [`stats`] the counters, which
//! [`metrics`] exposes on `/metrics` for Prometheus. A running server is controlled through
//! [`SmscHandle`].
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use load_tests::smsc::{start, AccountConfig, EchoNetwork, Fault, SmscConfig};
//! let config = SmscConfig::new("127.0.0.1:0".parse().unwrap(), AccountConfig::new("gw", "secret"));
//! let smsc = start(config, Box::new(EchoNetwork::default())).await?;
//! println!("listening on {}", smsc.local_addr());
//! smsc.inject(Fault::ThrottleStorm(std::time::Duration::from_secs(5)));
//! smsc.shutdown().await;
//! # Ok(()) }
//! ```

pub mod bind;
pub mod config;
pub mod faults;
pub mod framing;
pub mod metrics;
pub mod network;
pub mod pdus;
pub mod population;
pub mod server;
pub mod stats;
pub mod throttle;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use bind::{BindError, BoundAs};
pub use config::{AccountConfig, ConfigError, SmscConfig};
pub use faults::Fault;
pub use network::{
    Address, EchoConfig, EchoNetwork, MoMessage, MtMessage, MtOutcome, Network, SmFields,
};
pub use stats::{SmscStats, StatsSnapshot};

/// Starts an SMSC on `config.listen` with `network` behind it.
pub async fn start(config: SmscConfig, network: Box<dyn Network>) -> std::io::Result<SmscHandle> {
    let r = server::start(config, network).await?;
    Ok(SmscHandle {
        shared: r.shared,
        local_addr: r.local_addr,
        cancel: r.cancel,
        tracker: r.tracker,
    })
}

/// Control of a running SMSC. Dropping it does not stop the server; call
/// [`shutdown`](SmscHandle::shutdown) or cancel [`cancel_token`](SmscHandle::cancel_token).
#[derive(Debug)]
pub struct SmscHandle {
    shared: Arc<server::Shared>,
    local_addr: SocketAddr,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

/// Why [`SmscHandle::deliver_mo`] did not take a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoError {
    #[error("no account `{0}`")]
    UnknownAccount(String),
}

impl SmscHandle {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The live counters.
    pub fn stats(&self) -> &SmscStats {
        &self.shared.stats
    }

    /// OpenMetrics text of the counters and open binds (`smsc_sim_` prefix).
    pub fn encode_metrics(&self) -> String {
        metrics::encode(&metrics::registry(self.shared.clone()))
    }

    /// Serves `GET /metrics` on `addr` until shutdown; returns the address actually bound.
    pub async fn serve_metrics(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        metrics::serve(
            metrics::registry(self.shared.clone()),
            addr,
            self.cancel.clone(),
            &self.tracker,
        )
        .await
    }

    /// Injects a fault now.
    pub fn inject(&self, fault: Fault) {
        match &fault {
            Fault::DropBinds { system_id } => {
                let n = self.shared.registry.drop_binds(system_id.as_deref());
                tracing::info!(binds = n, "fault: dropping binds");
            }
            Fault::Outage(_) => {
                // Refuse first, so a bind dropped now cannot come straight back.
                self.shared
                    .faults
                    .apply(tokio::time::Instant::now().into_std(), &fault);
                let n = self.shared.registry.drop_binds(None);
                tracing::info!(binds = n, "fault: SMSC outage, binds dropped");
            }
            _ => self
                .shared
                .faults
                .apply(tokio::time::Instant::now().into_std(), &fault),
        }
    }

    /// Delivers an MO message to the account's receivers, as if a handset had sent it.
    pub fn deliver_mo(&self, system_id: &str, mo: &MoMessage) -> Result<(), MoError> {
        if !self.shared.registry.has_account(system_id) {
            return Err(MoError::UnknownAccount(system_id.to_owned()));
        }
        server::deliver_mo(&self.shared, system_id, mo);
        Ok(())
    }

    /// The root token: cancelling it starts the same graceful shutdown as
    /// [`shutdown`](SmscHandle::shutdown).
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Unbinds every bind, closes the connections and stops all tasks. Waits at most the
    /// response timeout plus one second; tasks still running then are left to finish alone.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.close();
        let limit = self.shared.config.response_timeout + Duration::from_secs(1);
        if tokio::time::timeout(limit, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("SMSC shutdown exceeded its time limit");
        }
    }

    /// Waits until the server has stopped (after the token was cancelled elsewhere).
    pub async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}
