//! `/metrics` of the simulated SMSC: its [`SmscStats`] counters and its open binds, as
//! OpenMetrics text with the `smsc_sim_` prefix.
//!
//! Nothing is counted twice: a [`Collector`] reads the atomics and the bind registry at each
//! scrape, so the SMSC's hot paths stay as they are. [`serve`] runs a small axum server for it
//! on the SMSC's task tracker, stopped by its cancellation token; the load tests and
//! `smsc-sim --metrics-listen` use it so that Prometheus can scrape both sides of a run.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::http::header;
use axum::routing::get;
use axum::Router;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::server::Shared;
use super::stats::SmscStats;

/// Content type of the exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug)]
struct SmscCollector {
    shared: Arc<Shared>,
}

/// Counter name (without `_total`), help, and the field it reads.
type CounterDef = (&'static str, &'static str, fn(&SmscStats) -> u64);

const COUNTERS: &[CounterDef] = &[
    ("submits", "submit_sm accepted (answered ESME_ROK)", |s| {
        s.submits.load(Ordering::Relaxed)
    }),
    ("throttled", "submit_sm answered ESME_RTHROTTLED", |s| {
        s.throttled.load(Ordering::Relaxed)
    }),
    (
        "queue_full",
        "submit_sm answered ESME_RMSGQFUL (network queue full)",
        |s| s.queue_full.load(Ordering::Relaxed),
    ),
    (
        "receipts",
        "Delivery receipts acknowledged by an ESME",
        |s| s.receipts.load(Ordering::Relaxed),
    ),
    (
        "mo_delivered",
        "MO deliver_sm acknowledged by an ESME",
        |s| s.mo_delivered.load(Ordering::Relaxed),
    ),
    (
        "deliver_retries",
        "deliver_sm attempts repeated after an error or a timeout",
        |s| s.deliver_retries.load(Ordering::Relaxed),
    ),
    (
        "deliver_failed",
        "deliver_sm given up or dropped for lack of queue room",
        |s| s.deliver_failed.load(Ordering::Relaxed),
    ),
    ("generic_nacks", "generic_nack sent", |s| {
        s.nacks.load(Ordering::Relaxed)
    }),
    ("binds_accepted", "Successful binds since start", |s| {
        s.binds_total.load(Ordering::Relaxed)
    }),
    (
        "bind_failures",
        "Binds refused (authentication, bind limit)",
        |s| s.bind_failures.load(Ordering::Relaxed),
    ),
];

impl Collector for SmscCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, read) in COUNTERS {
            let counter = ConstCounter::new(read(&self.shared.stats));
            let m = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(m)?;
        }
        let mut family = encoder.encode_descriptor(
            "binds",
            "Binds open now, by account (system_id) and bind type",
            None,
            MetricType::Gauge,
        )?;
        for (account, kind, n) in self.shared.registry.open_binds() {
            let labels = [("account", account), ("kind", kind.as_str().to_owned())];
            let m = family.encode_family(&labels)?;
            ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX)).encode(m)?;
        }
        Ok(())
    }
}

/// A registry holding the SMSC's metrics under `smsc_sim_`.
pub(crate) fn registry(shared: Arc<Shared>) -> Registry {
    let mut registry = Registry::with_prefix("smsc_sim");
    registry.register_collector(Box::new(SmscCollector { shared }));
    registry
}

/// OpenMetrics text of `registry`.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
        out.push_str("# EOF\n");
    }
    out
}

/// `GET /metrics` over `registry`.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                (
                    [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
                    encode(&registry),
                )
            }
        }),
    )
}

/// Listens on `addr` and serves `/metrics` until `cancel` fires; returns the bound address.
pub(crate) async fn serve(
    registry: Registry,
    addr: SocketAddr,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = router(Arc::new(registry));
    tracker.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "SMSC metrics server failed");
        }
    });
    Ok(local)
}
