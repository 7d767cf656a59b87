//! Keycloak's CIBA "HTTP authentication channel": Keycloak asks the gateway to authenticate a
//! user, the gateway answers 201 at once, pushes the prompt to the phone, and later POSTs the
//! result to Keycloak's callback endpoint. The contract is written down in
//! `docs/keycloak-contract.md`.
//!
//! Data flow: `POST {path}` enters [`routes`]; the bearer JWT is checked by
//! [`JwtVerifier`](super::jwt::JwtVerifier) against the realm keys; the JSON body is parsed into
//! a [`ChannelRequest`]; `login_hint` (Keycloak's username) becomes an MSISDN through the
//! [`SubscriberMap`], `acr_values` a [`Loa`] ([`loa_from_acr_values`]), and the gateway builds the
//! consent text itself ([`render_consent`]). [`AuthorizationService::start`] runs with the
//! token's `jti` as idempotency key and Keycloak's follow state (callback URL, the token as
//! bearer, its `exp`, the earliest callback time) in the request, and the answer is 201. The
//! follow state is stored with the authorization, so the callback `{"status": ...}` is written
//! to the durable outbox with the terminal state and delivered by the authorization layer's
//! [`Outbox`](crate::authorization::Outbox), also after a restart, before the token's `exp`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;

use super::error::ApiError;
use super::jwt::{JwtError, JwtVerifier};
pub use crate::authorization::outbox::{channel_status, ChannelStatus};
use crate::authorization::service::{AuthorizationService, Loa, StartRequest};
use crate::store::KeycloakFollow;

/// Largest request body accepted from Keycloak (its JSON is a few hundred bytes).
const MAX_BODY_BYTES: usize = 16 * 1024;
/// Keycloak's own rule for `binding_message` (BackchannelAuthenticationEndpoint): 1 to 50 of
/// these characters, no spaces.
const BINDING_MAX_CHARS: usize = 50;
/// Longest `login_hint` looked up.
const MAX_LOGIN_HINT: usize = 255;

/// Settings of the Keycloak channel.
#[derive(Debug, Clone)]
pub struct KeycloakConfig {
    /// Route path Keycloak POSTs to (its `httpAuthenticationChannelUri` ends with it).
    pub path: String,
    /// Realm URL, e.g. `http://kc:8080/realms/gov` (the tokens' `iss` and `aud`).
    pub realm_url: String,
    /// Where results go; `None` = `{realm_url}/protocol/openid-connect/ext/ciba/auth/callback`.
    pub callback_url: Option<String>,
    /// The API client the authorizations belong to in the authorization layer.
    pub client_id: String,
    /// Display names of Keycloak clients (`azp`) shown to the user; unknown ones show the id.
    pub client_names: HashMap<String, String>,
    /// LoA when Keycloak sends no `acr_values`.
    pub default_loa: Loa,
    /// Consent text with `{client}` and `{binding}` placeholders.
    pub consent_template: String,
    /// Consent text when there is no binding message (`{client}` only).
    pub consent_template_no_binding: String,
    /// Time kept between the authorization's own expiry and the token's `exp`, for the
    /// callback (the authorization gets `exp - now - margin`, at least half the time left).
    pub callback_margin: Duration,
    /// Earliest callback after the 201: Keycloak stores the request only once our 201 has
    /// returned, so a result POSTed sooner can find nothing and be refused with 403.
    pub callback_min_delay: Duration,
    /// Longest authorization a token may ask for through its `exp` (a signed token with an
    /// `exp` years away must not make a prompt, or the gateway's clock arithmetic, run on).
    pub max_expiry: Duration,
}

impl KeycloakConfig {
    /// Defaults for a realm URL.
    pub fn for_realm(realm_url: &str) -> Self {
        Self {
            path: "/keycloak/ciba".into(),
            realm_url: realm_url.trim_end_matches('/').to_string(),
            callback_url: None,
            client_id: "keycloak".into(),
            client_names: HashMap::new(),
            default_loa: Loa::Loa2,
            consent_template: "{client}: potwierdź logowanie. Kod: {binding}".into(),
            consent_template_no_binding: "{client}: potwierdź logowanie.".into(),
            callback_margin: Duration::from_secs(5),
            callback_min_delay: Duration::from_secs(1),
            max_expiry: Duration::from_secs(600),
        }
    }

    /// The callback URL in force.
    pub fn effective_callback_url(&self) -> String {
        self.callback_url.clone().unwrap_or_else(|| {
            format!(
                "{}/protocol/openid-connect/ext/ciba/auth/callback",
                self.realm_url.trim_end_matches('/')
            )
        })
    }
}

/// Keycloak username -> MSISDN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriberMap {
    by_username: HashMap<String, String>,
    usernames_are_msisdn: bool,
}

/// A mapping file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapFileError {
    /// Unreadable file.
    #[error("reading {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// A line that is not `username msisdn`.
    #[error("line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

impl SubscriberMap {
    /// A map from pairs; when `usernames_are_msisdn`, a username missing from the map that is
    /// itself an E.164 number (`+48600100200` or `48600100200`) is used as the MSISDN.
    pub fn new(pairs: HashMap<String, String>, usernames_are_msisdn: bool) -> Self {
        let by_username = pairs
            .into_iter()
            .filter_map(|(u, m)| normalize_msisdn(&m).map(|m| (u.to_lowercase(), m)))
            .collect();
        Self {
            by_username,
            usernames_are_msisdn,
        }
    }

    /// Parse the mapping file format: one `username msisdn` (or `username,msisdn`) per line,
    /// `#` starts a comment. Usernames compare case-insensitively, as in Keycloak.
    pub fn parse(text: &str, usernames_are_msisdn: bool) -> Result<Self, MapFileError> {
        let mut by_username = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut fields = line
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|f| !f.is_empty());
            let err = |reason: &str| MapFileError::Line {
                line: i + 1,
                reason: reason.into(),
            };
            let (Some(user), Some(number), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(err("expected `username msisdn`"));
            };
            let msisdn = normalize_msisdn(number)
                .ok_or_else(|| err("the MSISDN must be 6 to 15 digits, optionally after '+'"))?;
            if by_username.insert(user.to_lowercase(), msisdn).is_some() {
                return Err(err("username listed twice"));
            }
        }
        Ok(Self {
            by_username,
            usernames_are_msisdn,
        })
    }

    /// Read and parse a mapping file.
    pub fn load(path: &Path, usernames_are_msisdn: bool) -> Result<Self, MapFileError> {
        let text = std::fs::read_to_string(path).map_err(|e| MapFileError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text, usernames_are_msisdn)
    }

    /// The MSISDN (E.164 digits without '+') for a username.
    pub fn msisdn_for(&self, username: &str) -> Option<String> {
        if let Some(m) = self.by_username.get(&username.to_lowercase()) {
            return Some(m.clone());
        }
        if self.usernames_are_msisdn {
            return normalize_msisdn(username);
        }
        None
    }

    /// Entries in the map.
    pub fn len(&self) -> usize {
        self.by_username.len()
    }

    /// No entries?
    pub fn is_empty(&self) -> bool {
        self.by_username.is_empty()
    }
}

/// `+48600100200` or `48600100200` -> `48600100200`; anything else (other characters, fewer
/// than 6 or more than 15 digits, the E.164 maximum) -> `None`.
pub fn normalize_msisdn(s: &str) -> Option<String> {
    let digits = s.strip_prefix('+').unwrap_or(s);
    let ok = (6..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    ok.then(|| digits.to_string())
}

/// `acr_values` that name no level the gateway can deliver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("none of the acr_values {0:?} is a level this gateway supports (1, 2, 3)")]
pub struct UnsupportedAcr(pub String);

/// Pick the LoA for `acr_values` (space-separated, ISO 29115 levels as digits, optionally as
/// `loa2`/`urn:...:loa:2`-style names ending in the digit). The highest level asked for that the
/// gateway supports wins: `3 2` -> LoA3; `1` is served by LoA2 (a stronger level satisfies a
/// weaker request); `4` alone is refused. Absent or empty -> `default`.
pub fn loa_from_acr_values(acr_values: Option<&str>, default: Loa) -> Result<Loa, UnsupportedAcr> {
    let Some(raw) = acr_values.filter(|a| !a.trim().is_empty()) else {
        return Ok(default);
    };
    let mut best: Option<Loa> = None;
    for value in raw.split_whitespace() {
        let level = match value.chars().last().and_then(|c| c.to_digit(10)) {
            Some(d) if value.len() == 1 || value.to_ascii_lowercase().contains("loa") => d,
            _ => continue,
        };
        let loa = match level {
            1 | 2 => Loa::Loa2,
            3 => Loa::Loa3,
            _ => continue,
        };
        best = Some(match best {
            Some(Loa::Loa3) => Loa::Loa3,
            _ => loa,
        });
    }
    best.ok_or_else(|| UnsupportedAcr(raw.to_string()))
}

/// Keycloak's `binding_message` rule: 1..=50 of `[A-Za-z0-9-._+/!?#]`.
pub fn binding_message_is_valid(s: &str) -> bool {
    (1..=BINDING_MAX_CHARS).contains(&s.chars().count())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._+/!?#".contains(c))
}

/// Fill the consent template.
pub fn render_consent(template: &str, client: &str, binding: &str) -> String {
    template
        .replace("{client}", client)
        .replace("{binding}", binding)
}

/// What Keycloak POSTs (`AuthenticationChannelRequest`). Unknown fields are ignored: newer
/// Keycloak versions may add some.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ChannelRequest {
    /// The user's username (`CIBALoginUserResolver.getInfoUsedByAuthentication`).
    pub login_hint: String,
    /// Code shown on both devices.
    #[serde(default)]
    pub binding_message: Option<String>,
    /// The client requires consent.
    #[serde(default)]
    pub is_consent_required: Option<bool>,
    /// Scopes asked for (space-separated).
    #[serde(default)]
    pub scope: Option<String>,
    /// Requested ACR values (space-separated).
    #[serde(default)]
    pub acr_values: Option<String>,
}

/// The Keycloak channel: configuration, token verifier, subscriber map and the authorization
/// layer, which stores Keycloak's follow state and delivers the callback.
pub struct KeycloakChannel {
    config: KeycloakConfig,
    callback_url: String,
    verifier: Arc<JwtVerifier>,
    service: Arc<dyn AuthorizationService>,
    subscribers: SubscriberMap,
}

impl std::fmt::Debug for KeycloakChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeycloakChannel")
            .field("config", &self.config)
            .field("callback_url", &self.callback_url)
            .field("subscribers", &self.subscribers.len())
            .finish_non_exhaustive()
    }
}

impl KeycloakChannel {
    /// Build the channel.
    pub fn new(
        config: KeycloakConfig,
        verifier: Arc<JwtVerifier>,
        subscribers: SubscriberMap,
        service: Arc<dyn AuthorizationService>,
    ) -> Self {
        let callback_url = config.effective_callback_url();
        Self {
            config,
            callback_url,
            verifier,
            service,
            subscribers,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &KeycloakConfig {
        &self.config
    }

    async fn accept(&self, headers: &HeaderMap, body: &[u8]) -> Result<Response, ApiError> {
        let token = bearer(headers).ok_or_else(|| ApiError::unauthorized(false))?;
        let token = self.verifier.verify(token).await.map_err(token_error)?;
        let req: ChannelRequest = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request("invalid_request", format!("body: {e}")))?;
        if let Some(b) = &req.binding_message {
            if !binding_message_is_valid(b) {
                return Err(ApiError::bad_request(
                    "invalid_binding_message",
                    "binding_message must be 1 to 50 of A-Z a-z 0-9 - . _ + / ! ? #",
                ));
            }
        }
        let loa = loa_from_acr_values(req.acr_values.as_deref(), self.config.default_loa)
            .map_err(|e| ApiError::bad_request("unsupported_acr", e.to_string()))?;
        if req.login_hint.is_empty() || req.login_hint.len() > MAX_LOGIN_HINT {
            return Err(ApiError::bad_request(
                "invalid_request",
                "login_hint must be 1 to 255 bytes",
            ));
        }
        let msisdn = self
            .subscribers
            .msisdn_for(&req.login_hint)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_subscriber",
                    "no phone number is known for this user",
                )
            })?;

        let now_unix = unix_now();
        // Clamped: the callback is owed until `exp`, but no authorization runs longer than
        // `max_expiry` (plus the margin for its callback).
        let longest = self.config.max_expiry + self.config.callback_margin;
        let left = Duration::from_secs(token.exp.saturating_sub(now_unix)).min(longest);
        let expiry = left
            .saturating_sub(self.config.callback_margin)
            .max(left / 2);
        let now_ms = now_unix.saturating_mul(1000);
        let follow = KeycloakFollow {
            callback_url: self.callback_url.clone(),
            token: token.raw.clone(),
            deadline_ms: token.exp.saturating_mul(1000),
            not_before_ms: now_ms.saturating_add(
                u64::try_from(self.config.callback_min_delay.as_millis()).unwrap_or(u64::MAX),
            ),
        };

        let client = token
            .azp
            .as_deref()
            .map(|azp| {
                self.config
                    .client_names
                    .get(azp)
                    .cloned()
                    .unwrap_or_else(|| azp.to_string())
            })
            .unwrap_or_else(|| "Keycloak".to_string());
        let consent_text = match &req.binding_message {
            Some(b) => render_consent(&self.config.consent_template, &client, b),
            None => render_consent(&self.config.consent_template_no_binding, &client, ""),
        };
        let start = StartRequest {
            client_id: self.config.client_id.clone(),
            msisdn,
            loa,
            client_name: client,
            consent_text,
            binding_message: req.binding_message.clone(),
            expiry,
            callback_url: None,
            // A repeated request (same `jti`) names the same authorization, called back once.
            idempotency_key: Some(token.jti.clone()),
            keycloak: Some(follow),
        };
        let view = self.service.start(start).await.map_err(ApiError::from)?;
        Ok(accepted(&view.id))
    }
}

fn accepted(id: &str) -> Response {
    (
        StatusCode::CREATED,
        Json(serde_json::json!({ "authorization_id": id })),
    )
        .into_response()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn token_error(e: JwtError) -> ApiError {
    if let JwtError::Keys(_) = e {
        tracing::error!(error = %e, "realm keys unavailable");
        return ApiError {
            retry_after: Some(Duration::from_secs(5)),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "keys_unavailable",
                "the realm keys cannot be loaded",
            )
        };
    }
    ApiError {
        www_authenticate: Some(r#"Bearer error="invalid_token""#),
        ..ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", e.to_string())
    }
}

async fn ciba_request(
    State(kc): State<Arc<KeycloakChannel>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match kc.accept(&headers, &body).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::info!(
                status = e.status.as_u16(),
                code = e.code,
                "Keycloak request refused"
            );
            e.into_response()
        }
    }
}

/// The Keycloak route (`POST {config.path}`), with its own state applied, so it merges into a
/// router of any state: `api::router(api_state, Some(keycloak::routes(kc)))`.
pub fn routes<S>(kc: Arc<KeycloakChannel>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let path = kc.config.path.clone();
    Router::new()
        .route(&path, post(ciba_request))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(kc)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn highest_supported_acr_wins() {
        assert_eq!(loa_from_acr_values(Some("3 2"), Loa::Loa2), Ok(Loa::Loa3));
        assert_eq!(loa_from_acr_values(Some("2 3"), Loa::Loa2), Ok(Loa::Loa3));
        assert_eq!(loa_from_acr_values(Some("2"), Loa::Loa3), Ok(Loa::Loa2));
        assert_eq!(loa_from_acr_values(Some("1"), Loa::Loa3), Ok(Loa::Loa2));
        assert_eq!(loa_from_acr_values(Some("4 3"), Loa::Loa2), Ok(Loa::Loa3));
        assert_eq!(
            loa_from_acr_values(Some("urn:mc:loa:3"), Loa::Loa2),
            Ok(Loa::Loa3)
        );
        assert_eq!(loa_from_acr_values(None, Loa::Loa3), Ok(Loa::Loa3));
        assert_eq!(loa_from_acr_values(Some("  "), Loa::Loa2), Ok(Loa::Loa2));
    }

    #[test]
    fn acr_values_without_a_supported_level_are_refused() {
        assert!(loa_from_acr_values(Some("4"), Loa::Loa2).is_err());
        assert!(loa_from_acr_values(Some("gold silver"), Loa::Loa2).is_err());
        assert!(loa_from_acr_values(Some("x3"), Loa::Loa2).is_err());
    }

    #[test]
    fn msisdn_mapping_file_and_e164_usernames() {
        let map = SubscriberMap::parse(
            "# Keycloak username -> MSISDN\njan.kowalski +48600100200\nAnna,48600100201 # ok\n\n",
            true,
        )
        .unwrap();
        assert_eq!(
            map.msisdn_for("jan.kowalski").as_deref(),
            Some("48600100200")
        );
        assert_eq!(map.msisdn_for("anna").as_deref(), Some("48600100201"));
        assert_eq!(
            map.msisdn_for("+48600999888").as_deref(),
            Some("48600999888")
        );
        assert_eq!(map.msisdn_for("nobody"), None);
        let strict = SubscriberMap::parse("jan 48600100200", false).unwrap();
        assert_eq!(strict.msisdn_for("+48600999888"), None);
    }

    #[test]
    fn mapping_file_errors_name_the_line() {
        assert_eq!(
            SubscriberMap::parse("a 48600100200\nb\n", false),
            Err(MapFileError::Line {
                line: 2,
                reason: "expected `username msisdn`".into()
            })
        );
        assert!(matches!(
            SubscriberMap::parse("a 12ab", false),
            Err(MapFileError::Line { line: 1, .. })
        ));
        assert!(matches!(
            SubscriberMap::parse("a 48600100200\nA 48600100201", false),
            Err(MapFileError::Line { line: 2, .. })
        ));
    }

    #[test]
    fn binding_messages_follow_keycloaks_rule() {
        assert!(binding_message_is_valid("AB12-xy"));
        assert!(!binding_message_is_valid("with space"));
        assert!(!binding_message_is_valid(""));
        assert!(!binding_message_is_valid(&"a".repeat(51)));
        assert!(!binding_message_is_valid("kod:1"));
    }

    #[test]
    fn consent_text_is_built_from_the_template() {
        assert_eq!(
            render_consent(
                "{client}: potwierdź logowanie. Kod: {binding}",
                "ePUAP",
                "X7Q2"
            ),
            "ePUAP: potwierdź logowanie. Kod: X7Q2"
        );
    }

    #[test]
    fn bearer_is_taken_from_the_authorization_header() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
