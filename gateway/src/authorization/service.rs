//! The contract between the north API (HTTP: native JSON, Keycloak CIBA) and the authorization
//! layer behind it. The API layer only sees [`AuthorizationService`]; the authorization manager
//! implements it, and API tests use a fake.
//!
//! Every authorization ends in exactly one [`TerminalStatus`]; [`AuthorizationView`] is what a
//! relying party reads at any time.

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

/// Level of assurance asked for or achieved (ISO 29115 / Mobile Connect).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Loa {
    /// "Authorise": the user taps OK / Yes.
    #[serde(rename = "2")]
    Loa2,
    /// "Authorise Plus": the user enters a PIN.
    #[serde(rename = "3")]
    Loa3,
}

/// The channel an authorization went out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// Network-initiated USSD dialog.
    Ussd,
    /// Our SIM applet over secured SMS-PP.
    Stk,
}

/// Where an authorization stands before it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingState {
    /// Accepted, not yet routed.
    Created,
    /// Operator and channel chosen.
    Routed,
    /// The prompt is with the handset.
    Prompted,
    /// The user answered; verification under way.
    Answered,
}

/// How an authorization ended. Modelled on Mobile-ID / TS 102 204 results (protocol notes §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminalStatus {
    /// The user approved (OK for LoA2, a verified PIN for LoA3).
    Approved,
    /// The user cancelled or said no.
    Denied,
    /// No answer before the deadline.
    Expired,
    /// The PIN is blocked (card try counter, or the gateway's USSD lockout).
    PinBlocked,
    /// The handset could not be reached (absent, not registered).
    NotReachable,
    /// The network refused or failed the delivery (SMSC error, binds down past the deadline).
    DeliveryError,
    /// The SIM or its applet failed (OTA error, applet error, forged or replayed answer).
    SimError,
    /// Refused before any prompt (unknown subscriber, rate limit, policy).
    Rejected,
    /// Cancelled by the relying party.
    Cancelled,
}

/// Current or final state of one authorization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AuthorizationState {
    /// Not finished.
    Pending {
        /// Step reached.
        step: PendingState,
    },
    /// Finished, with a machine-readable reason (e.g. `user_cancelled`, `no_response`,
    /// `unknown_subscriber`, `smsc_error_0x58`).
    Terminal {
        /// The result.
        status: TerminalStatus,
        /// Why, in snake_case words.
        reason: String,
    },
}

/// What a relying party reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationView {
    /// Opaque id, unguessable.
    pub id: String,
    /// Pending or terminal.
    #[serde(flatten)]
    pub state: AuthorizationState,
    /// LoA asked for.
    pub loa_requested: Loa,
    /// LoA achieved, when approved.
    pub loa_achieved: Option<Loa>,
    /// Channel used, once routed.
    pub channel: Option<ChannelKind>,
    /// Operator name, once routed.
    pub operator: Option<String>,
    /// Unix milliseconds.
    pub created_at_ms: u64,
    /// Unix milliseconds, when terminal.
    pub completed_at_ms: Option<u64>,
    /// Time the gateway itself spent (excluding the user's think time), when known.
    pub gateway_ms: Option<u64>,
    /// For STK approvals: the card's MAC over the transaction (hex), the proof.
    pub proof: Option<String>,
}

/// A request to start an authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartRequest {
    /// Authenticated API client (never from the body).
    pub client_id: String,
    /// Subscriber number, E.164 digits without '+'.
    pub msisdn: String,
    /// LoA asked for.
    pub loa: Loa,
    /// Relying party name shown to the user.
    pub client_name: String,
    /// Consent text shown to the user (the gateway may build it).
    pub consent_text: String,
    /// Binding / verification code shown on both screens.
    pub binding_message: Option<String>,
    /// How long the user has.
    pub expiry: Duration,
    /// Optional URL to POST the terminal view to.
    pub callback_url: Option<String>,
    /// Client-chosen key: a retried start returns the same authorization.
    pub idempotency_key: Option<String>,
    /// Keycloak's callback target and token, when Keycloak asked: stored with the
    /// authorization and called from the outbox when it ends.
    pub keycloak: Option<crate::store::KeycloakFollow>,
}

/// Why a start was refused. The API maps each to an HTTP status (400/404/409/429/503).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// Malformed request.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// No operator serves this number, or no such subscriber.
    #[error("unknown subscriber")]
    UnknownSubscriber,
    /// Another prompt is running for this MSISDN (push-bombing protection).
    #[error("an authorization is already in progress for this subscriber")]
    AlreadyInProgress,
    /// The client exceeded its rate.
    #[error("rate limited")]
    RateLimited {
        /// When to retry.
        retry_after: Duration,
    },
    /// The gateway is at its in-flight cap.
    #[error("overloaded")]
    Overloaded {
        /// When to retry.
        retry_after: Duration,
    },
    /// The subscriber's operator cannot carry the prompt in time now: its binds are down, or
    /// what waits for them would hold this prompt longer than its admission policy allows.
    #[error("no capacity on the operator's binds")]
    NoCapacity {
        /// When to retry: the time the queue needs to drain, in whole seconds.
        retry_after: Duration,
    },
    /// The store cannot take a new authorization now (Redis unreachable, a failed disk).
    #[error("store unavailable")]
    StoreUnavailable {
        /// When to retry.
        retry_after: Duration,
    },
    /// The LoA cannot be reached for this subscriber under the policy (e.g. LoA3 over USSD).
    #[error("policy: {0}")]
    Policy(String),
    /// Storage or internal failure.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Lookup failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// No such id for this client.
    #[error("no such authorization")]
    NotFound,
    /// Storage or internal failure.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The north API's view of the authorization layer.
pub trait AuthorizationService: Send + Sync + 'static {
    /// Start (or, with a known idempotency key, return the existing) authorization. Returns at
    /// once; the phone work is asynchronous.
    fn start(&self, req: StartRequest) -> BoxFuture<'_, Result<AuthorizationView, StartError>>;
    /// [`AuthorizationService::start`], also saying whether the authorization already existed
    /// (a retried idempotency key): `Some(true)` existing, `Some(false)` new, `None` unknown.
    fn start_reporting(
        &self,
        req: StartRequest,
    ) -> BoxFuture<'_, Result<(AuthorizationView, Option<bool>), StartError>> {
        Box::pin(async move { self.start(req).await.map(|view| (view, None)) })
    }
    /// Read the state; with `wait`, long-poll until terminal or until `wait` has passed.
    fn get(
        &self,
        client_id: &str,
        id: &str,
        wait: Option<Duration>,
    ) -> BoxFuture<'_, Result<AuthorizationView, LookupError>>;
    /// Cancel a pending authorization (ends it as `Cancelled`); a terminal one is returned as is.
    fn cancel(
        &self,
        client_id: &str,
        id: &str,
    ) -> BoxFuture<'_, Result<AuthorizationView, LookupError>>;
    /// Ready to serve: binds up and store reachable (for `/readyz`).
    fn readiness(&self) -> Readiness;
}

/// What `/readyz` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// Overall.
    pub ready: bool,
    /// Binds bound / configured, per operator.
    pub binds_up: Vec<(String, usize, usize)>,
    /// The store answered.
    pub store_ok: bool,
}
