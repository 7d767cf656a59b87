//! North API: requests by route, method and status class, their latency (RED), and requests
//! refused before reaching the authorization layer, by reason.
//!
//! The serve wiring wraps the API router with [`track`]:
//!
//! ```text
//! let app = api::router(state, Some(exposition.routes(&cfg.metrics.path)))
//!     .layer(axum::middleware::from_fn_with_state(metrics.api.clone(), metrics::api::track));
//! ```
//!
//! The `route` label is axum's matched route template (`/v1/authorizations/{id}`), never the
//! raw path, so ids in paths never become label values; unmatched requests are `unmatched`.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::time::Instant;

use super::{label_enum, seconds, MACHINE_LATENCY_BUCKETS};

label_enum! {
    /// HTTP method, from a fixed table.
    pub enum HttpMethod {
        /// GET.
        Get => "GET",
        /// POST.
        Post => "POST",
        /// PUT.
        Put => "PUT",
        /// DELETE.
        Delete => "DELETE",
        /// PATCH.
        Patch => "PATCH",
        /// HEAD.
        Head => "HEAD",
        /// Anything else.
        Other => "other",
    }
}

impl HttpMethod {
    /// The table entry of `method`.
    pub fn of(method: &Method) -> Self {
        match *method {
            Method::GET => Self::Get,
            Method::POST => Self::Post,
            Method::PUT => Self::Put,
            Method::DELETE => Self::Delete,
            Method::PATCH => Self::Patch,
            Method::HEAD => Self::Head,
            _ => Self::Other,
        }
    }
}

label_enum! {
    /// Class of an HTTP status.
    pub enum StatusClass {
        /// 1xx.
        Informational => "1xx",
        /// 2xx.
        Success => "2xx",
        /// 3xx.
        Redirection => "3xx",
        /// 4xx.
        ClientError => "4xx",
        /// 5xx.
        ServerError => "5xx",
    }
}

impl StatusClass {
    /// The class of status code `code`.
    pub fn of(code: u16) -> Self {
        match code {
            0..=199 => Self::Informational,
            200..=299 => Self::Success,
            300..=399 => Self::Redirection,
            400..=499 => Self::ClientError,
            _ => Self::ServerError,
        }
    }
}

label_enum! {
    /// Why a request was refused before an authorization started.
    pub enum RejectReason {
        /// The client's token bucket was empty (429).
        RateLimit => "rate_limit",
        /// Admission control: too many authorizations in flight, or one already running for
        /// the subscriber (503/409).
        Admission => "admission",
        /// Missing or wrong bearer token (401).
        Auth => "auth",
        /// The request body or query did not validate (400/422).
        Invalid => "invalid",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: HttpMethod,
    status_class: StatusClass,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DurationLabels {
    route: String,
    method: HttpMethod,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RejectLabels {
    reason: RejectReason,
}

/// North API metrics.
#[derive(Debug)]
pub struct ApiMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<DurationLabels, Histogram>,
    rejected: Vec<Counter>,
}

impl ApiMetrics {
    /// Registers the API families.
    pub fn new(registry: &mut Registry) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<DurationLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(MACHINE_LATENCY_BUCKETS)
        });
        let rejected_family = Family::<RejectLabels, Counter>::default();
        registry.register(
            "api_requests",
            "North API requests by matched route, method and status class",
            requests.clone(),
        );
        registry.register(
            "api_request_duration_seconds",
            "North API request latency (long-polls included) by matched route and method",
            duration.clone(),
        );
        registry.register(
            "api_rejected",
            "Requests refused before an authorization started, by reason",
            rejected_family.clone(),
        );
        let rejected = RejectReason::ALL
            .iter()
            .map(|&reason| rejected_family.get_or_create_owned(&RejectLabels { reason }))
            .collect();
        Self {
            requests,
            duration,
            rejected,
        }
    }

    /// One request on `route` (a route template) ended with `status` after `elapsed`.
    pub fn observe_request(
        &self,
        route: &str,
        method: HttpMethod,
        status: u16,
        elapsed: std::time::Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method,
                status_class: StatusClass::of(status),
            })
            .inc();
        self.duration
            .get_or_create(&DurationLabels {
                route: route.to_owned(),
                method,
            })
            .observe(seconds(elapsed));
    }

    /// A request was refused for `reason`.
    pub fn rejected(&self, reason: RejectReason) {
        self.rejected[reason as usize].inc();
    }

    /// Refusals so far for `reason`.
    pub fn rejected_count(&self, reason: RejectReason) -> u64 {
        self.rejected[reason as usize].get()
    }
}

/// axum middleware recording every request in `metrics` (see the module docs). Refusals are
/// counted here too, so handlers need not report them: 401 as [`RejectReason::Auth`], 429 as
/// [`RejectReason::RateLimit`], and on the routes that start authorizations 503 as
/// [`RejectReason::Admission`] and 400/413/415 as [`RejectReason::Invalid`].
pub async fn track(
    State(metrics): State<Arc<ApiMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = HttpMethod::of(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let starts = route == "/v1/authorizations" || route.starts_with("/keycloak");
    match status {
        401 => metrics.rejected(RejectReason::Auth),
        429 => metrics.rejected(RejectReason::RateLimit),
        503 if starts => metrics.rejected(RejectReason::Admission),
        400 | 413 | 415 if starts => metrics.rejected(RejectReason::Invalid),
        _ => {}
    }
    metrics.observe_request(&route, method, status, started.elapsed());
    response
}
