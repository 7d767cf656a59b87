//! The north API over HTTP (axum): what relying parties and the OIDC provider call.
//!
//! Data flow: a request enters [`router`]; [`auth::AuthenticatedClient`] checks the bearer
//! token (constant time) and the client's token bucket ([`limits`]); the handler in [`native`]
//! validates the JSON body or query, calls the [`AuthorizationService`] and answers with the
//! [`AuthorizationView`](crate::authorization::service::AuthorizationView). Every refusal, from axum
//! or from the service, becomes one [`error::ApiError`] with a JSON body
//! `{"error": "snake_case_code", "message": "..."}`; the mapping lives in [`error`] only.
//!
//! Other north endpoints (Keycloak CIBA, `/metrics`) plug in without this module knowing their
//! types: they build a `Router<ApiState>` (using [`ApiState`] and the
//! [`auth::AuthenticatedClient`] extractor, or `.with_state(their_state)` for their own) and
//! the serve wiring passes it as `extra_routes` to [`router`]:
//!
//! ```text
//! let extra = keycloak_state.map(|k| api::keycloak::routes(k));
//! let app = api::router(api_state, extra);
//! ```
//!
//! - [`native`]: the native JSON API (start, get with long-poll, cancel) and health checks.
//! - [`auth`]: client registry and bearer-token extractor.
//! - [`limits`]: per-client token buckets.
//! - [`error`]: the error body and the HTTP status of every refusal.
//! - [`keycloak`], [`jwt`]: the Keycloak CIBA endpoint (its own state; merged as an extra router).
//! - [`openapi`]: the served OpenAPI document (checked in as `docs/openapi.yaml`).

pub mod auth;
pub mod error;
pub mod jwt;
pub mod keycloak;
pub mod limits;
pub mod native;
pub mod openapi;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;

use crate::authorization::service::AuthorizationService;
use crate::secret::Secret;

pub use auth::{AuthenticatedClient, ClientRegistry};
pub use error::ApiError;
pub use limits::ClientRateLimiter;

/// One API client: its id, bearer token and rate limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCredential {
    /// Client id (logs, metrics, and the owner of its authorizations).
    pub id: String,
    /// Bearer token.
    pub token: Secret,
    /// Sustained requests per second (token bucket refill).
    pub rate_per_sec: u32,
    /// Bucket capacity: requests allowed at once after a quiet period.
    pub burst: u32,
    /// Where its `callback_url`s may point: URL prefixes (`https://rp.example/cb/`) or host
    /// names (`rp.example`). Empty: the client cannot ask for callbacks.
    pub callback_allow: Vec<String>,
}

/// Settings of the north API (the serve wiring maps `[api]` and `[policy]` onto them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiOptions {
    /// Clients allowed to call.
    pub clients: Vec<ClientCredential>,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Longest long-poll (`?wait=` above it is lowered to it).
    pub max_wait: Duration,
    /// Expiry used when the request gives none.
    pub default_expiry: Duration,
    /// Shortest expiry a request may ask for.
    pub min_expiry: Duration,
    /// Longest expiry a request may ask for.
    pub max_expiry: Duration,
    /// How many `(client, Idempotency-Key)` pairs are remembered to answer a retry with 200
    /// instead of 201 (the service itself owns the idempotency; this only picks the status).
    pub idempotency_memory: usize,
    /// Whether `callback_url` may be plain `http://` (`[outbound] allow_http`).
    pub allow_http_callbacks: bool,
}

impl Default for ApiOptions {
    fn default() -> Self {
        Self {
            clients: Vec::new(),
            max_body_bytes: 16 * 1024,
            max_wait: Duration::from_secs(60),
            default_expiry: Duration::from_secs(120),
            min_expiry: Duration::from_secs(10),
            max_expiry: Duration::from_secs(600),
            idempotency_memory: 100_000,
            allow_http_callbacks: false,
        }
    }
}

/// Monotonic clock of the rate limiter (tests freeze it).
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// Shared state of every north handler, the native ones and those plugged in.
#[derive(Clone)]
pub struct ApiState {
    /// The authorization layer.
    pub service: Arc<dyn AuthorizationService>,
    /// Who may call, by token.
    pub clients: Arc<ClientRegistry>,
    /// Per-client token buckets.
    pub limiter: Arc<ClientRateLimiter>,
    /// Limits and defaults.
    pub options: Arc<ApiOptions>,
    /// Recently seen idempotency keys (picks 200 vs 201).
    pub(crate) seen_keys: Arc<native::SeenKeys>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("clients", &self.clients)
            .field("options.max_body_bytes", &self.options.max_body_bytes)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// State over a service, with the real monotonic clock.
    pub fn new(service: Arc<dyn AuthorizationService>, options: ApiOptions) -> Self {
        Self::with_clock(service, options, Arc::new(Instant::now))
    }

    /// State with the rate limiter's clock given (tests).
    pub fn with_clock(
        service: Arc<dyn AuthorizationService>,
        options: ApiOptions,
        clock: Clock,
    ) -> Self {
        let clients = ClientRegistry::new(&options.clients);
        let limiter = ClientRateLimiter::new(&options.clients, clock);
        let seen_keys = native::SeenKeys::new(options.idempotency_memory);
        Self {
            service,
            clients: Arc::new(clients),
            limiter: Arc::new(limiter),
            options: Arc::new(options),
            seen_keys: Arc::new(seen_keys),
        }
    }
}

/// The whole north API: the native routes, `extra_routes` (Keycloak, metrics ...) merged in,
/// JSON 404 and 405 answers for everything else.
///
/// `extra_routes` must not repeat a native path (axum panics on overlapping routes at build
/// time, which a test of the wiring catches).
pub fn router(state: ApiState, extra_routes: Option<Router<ApiState>>) -> Router {
    let mut app = native::routes(&state.options);
    if let Some(extra) = extra_routes {
        app = app.merge(extra);
    }
    app.fallback(error::not_found_fallback)
        .method_not_allowed_fallback(error::method_not_allowed_fallback)
        .with_state(state)
}
