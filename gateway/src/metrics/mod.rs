//! Prometheus metrics of the gateway, exposed as OpenMetrics text on `GET /metrics`.
//!
//! Data flow: the serve wiring creates one [`Registry`], calls [`Metrics::new`] once (every
//! component family registers its metric families under the `gateway_` prefix), hands the
//! sub-structs down to the components (`Arc`s, no global registry), and wraps the registry in
//! an [`Exposition`] whose [`Exposition::routes`] serve the scrape endpoint (merged into the
//! north API through its `extra_routes`, or on their own listener from `[metrics] listen`).
//!
//! Components resolve their label handles once, outside hot paths: an SMPP bind gets a
//! [`smpp::BindMetrics`] from [`smpp::SmppMetrics::bind`] when it is configured, an operator a
//! [`authorization::OperatorMetrics`] from [`authorization::AuthorizationMetrics::operator`]; each hot-path call
//! then only indexes an array of pre-registered counters.
//!
//! Labels are bounded by construction: operator and bind names come from the configuration,
//! everything else from the fixed enums in this module tree (unknown SMPP statuses map to
//! `other`). No MSISDN, session id or message id ever becomes a label.
//!
//! - [`api`]: north API requests (RED) and refusals by reason.
//! - [`authorization`]: authorizations started/completed, in flight, latencies, prompts, PINs, OTA.
//! - [`smpp`]: binds, PDUs, statuses, window, round trip, throttles, reconnects, nacks.
//! - [`store`]: store operation latency and errors.
//! - [`callback`]: outgoing callbacks delivered or failed.
//! - [`outbox`]: deliveries owed for ended authorizations (depth, age, outcomes).
//! - [`build`]: build information.

pub mod api;
pub mod authorization;
pub mod build;
pub mod callback;
pub mod outbox;
pub mod smpp;
pub mod store;

use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
pub use prometheus_client::registry::Registry;

/// Content type of the OpenMetrics exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Content type of the classic Prometheus text exposition (for clients that do not ask for
/// OpenMetrics, and for `promtool check metrics`).
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every metric family of the gateway, one sub-struct per component family.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// North API.
    pub api: Arc<api::ApiMetrics>,
    /// Authorizations (the authorization manager and the channels).
    pub authorization: Arc<authorization::AuthorizationMetrics>,
    /// SMPP binds.
    pub smpp: Arc<smpp::SmppMetrics>,
    /// Store.
    pub store: Arc<store::StoreMetrics>,
    /// Outgoing callbacks.
    pub callback: Arc<callback::CallbackMetrics>,
    /// The durable outbox.
    pub outbox: Arc<outbox::OutboxMetrics>,
}

impl Metrics {
    /// Registers every family under the `gateway_` prefix of `registry` (call once per
    /// registry: registering twice duplicates the families in the exposition).
    pub fn new(registry: &mut Registry) -> Self {
        let sub = registry.sub_registry_with_prefix("gateway");
        build::register(sub, &build::BuildInfo::current());
        Self {
            api: Arc::new(api::ApiMetrics::new(sub)),
            authorization: Arc::new(authorization::AuthorizationMetrics::new(sub)),
            smpp: Arc::new(smpp::SmppMetrics::new(sub)),
            store: Arc::new(store::StoreMetrics::new(sub)),
            callback: Arc::new(callback::CallbackMetrics::new(sub)),
            outbox: Arc::new(outbox::OutboxMetrics::new(sub)),
        }
    }

    /// A fresh registry with every family registered, and its exposition.
    pub fn standalone() -> (Self, Exposition) {
        let mut registry = Registry::default();
        let metrics = Self::new(&mut registry);
        (metrics, Exposition::new(registry))
    }
}

/// A finished registry, read by scrapes.
#[derive(Debug, Clone)]
pub struct Exposition {
    registry: Arc<Registry>,
}

impl Exposition {
    /// Wraps a registry whose registrations are done.
    pub fn new(registry: Registry) -> Self {
        Self {
            registry: Arc::new(registry),
        }
    }

    /// The OpenMetrics text, ending with `# EOF`.
    pub fn encode(&self) -> String {
        encode(&self.registry)
    }

    /// The same samples in the classic Prometheus text format 0.0.4.
    pub fn encode_prometheus_text(&self) -> String {
        openmetrics_to_prometheus_text(&self.encode())
    }

    /// `GET {path}`: OpenMetrics when the client accepts it (Prometheus does), the classic
    /// text format otherwise. Generic over the state so it merges into the north API router.
    pub fn routes<S>(&self, path: &str) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let exposition = self.clone();
        Router::new().route(
            path,
            get(move |headers: HeaderMap| {
                let exposition = exposition.clone();
                async move { exposition.respond(&headers) }
            }),
        )
    }

    fn respond(&self, headers: &HeaderMap) -> Response {
        let wants_openmetrics = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("application/openmetrics-text"));
        let (body, content_type) = if wants_openmetrics {
            (self.encode(), OPENMETRICS_CONTENT_TYPE)
        } else {
            (self.encode_prometheus_text(), PROMETHEUS_TEXT_CONTENT_TYPE)
        };
        (
            [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
            body,
        )
            .into_response()
    }
}

/// OpenMetrics text of `registry`, ending with `# EOF`.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; an encoder error would be a bug in a metric type,
    // and an empty exposition is the safe answer to it.
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
        out.push_str("# EOF\n");
    }
    out
}

/// Rewrites OpenMetrics text into the classic Prometheus text format 0.0.4: counters are
/// described under their `_total` sample name, `info` becomes a gauge named `*_info`, and the
/// `# UNIT` and `# EOF` lines (unknown to the old format) are dropped.
pub fn openmetrics_to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut kinds: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, kind)) = rest.split_once(' ') {
                kinds.insert(name, kind);
            }
        }
    }
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = ["# TYPE ", "# HELP "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            let (name, tail) = match kinds.get(name).copied() {
                Some("counter") => (format!("{name}_total"), tail.to_owned()),
                Some("info") if *prefix == "# TYPE " => {
                    (format!("{name}_info"), "gauge".to_owned())
                }
                Some("info") => (format!("{name}_info"), tail.to_owned()),
                _ => return None,
            };
            Some(format!("{prefix}{name} {tail}"))
        });
        match rewritten {
            Some(l) => out.push_str(l.trim_end()),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Defines a label-value enum with fixed snake_case strings and a table of all variants.
macro_rules! label_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis enum $name { $($(#[$vmeta])* $variant,)+ }

        impl $name {
            /// Every value, in declaration order (index = `self as usize`).
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }
        }

        impl prometheus_client::encoding::EncodeLabelValue for $name {
            fn encode(
                &self,
                encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
            ) -> Result<(), std::fmt::Error> {
                std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    };
}
pub(crate) use label_enum;

/// Seconds of a duration, for histograms.
pub(crate) fn seconds(d: std::time::Duration) -> f64 {
    d.as_secs_f64()
}

/// Buckets of SMPP round trips and other machine latencies: 1 ms to 10 s.
pub const MACHINE_LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Buckets of waits on a human: 0.5 s to 180 s.
pub const USER_LATENCY_BUCKETS: [f64; 12] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0,
];

/// Buckets of store operations: 100 µs to 1 s.
pub const STORE_LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn exposition_ends_with_eof_and_carries_every_family() {
        let (m, exposition) = Metrics::standalone();
        // Families labelled by operator or bind only have series once one is configured.
        let _op = m.authorization.operator("op");
        let _bind = m.smpp.bind("op", "b1");
        let text = exposition.encode();
        assert!(text.ends_with("# EOF\n"), "{text}");
        for family in [
            "gateway_build",
            "gateway_authorizations_started",
            "gateway_smpp_pdus",
            "gateway_store_operation_duration_seconds",
            "gateway_callbacks",
            "gateway_api_rejected",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{family} missing:\n{text}"
            );
        }
    }

    #[test]
    fn prometheus_text_names_counters_by_their_total_sample_and_drops_eof() {
        let om = "# HELP x_requests Requests.\n# TYPE x_requests counter\nx_requests_total 3\n\
                  # TYPE x_build info\nx_build_info{version=\"1\"} 1\n# UNIT x_s seconds\n# EOF\n";
        let text = openmetrics_to_prometheus_text(om);
        assert_eq!(
            text,
            "# HELP x_requests_total Requests.\n# TYPE x_requests_total counter\nx_requests_total 3\n\
             # TYPE x_build_info gauge\nx_build_info{version=\"1\"} 1\n"
        );
    }
}
