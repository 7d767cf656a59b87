//! Client authentication: per-client bearer tokens.
//!
//! [`ClientRegistry`] keeps the SHA-256 digest of each client's token, never the token, and
//! compares a presented token's digest against every client's in constant time (`subtle`), so
//! neither the position of the first differing byte nor the token's length nor which client
//! matched shows in the timing. [`AuthenticatedClient`] is the axum extractor: bearer token,
//! then the client's token bucket ([`super::limits`]); it fails with 401 (and
//! `WWW-Authenticate: Bearer`) or 429. Tokens are never logged or echoed.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::error::ApiError;
use super::{ApiState, ClientCredential};

/// The configured clients, by token digest.
pub struct ClientRegistry {
    clients: Vec<([u8; 32], String)>,
    /// Each client's callback allow-list, by id.
    callback_allow: std::collections::HashMap<String, Vec<String>>,
}

impl std::fmt::Debug for ClientRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.clients.iter().map(|(_, id)| id.as_str()).collect();
        f.debug_struct("ClientRegistry").field("ids", &ids).finish()
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl ClientRegistry {
    /// Registry of the given clients.
    pub fn new(clients: &[ClientCredential]) -> Self {
        Self {
            clients: clients
                .iter()
                .map(|c| (digest(c.token.expose().as_bytes()), c.id.clone()))
                .collect(),
            callback_allow: clients
                .iter()
                .map(|c| (c.id.clone(), c.callback_allow.clone()))
                .collect(),
        }
    }

    /// Where client `id`'s callbacks may point (empty: nowhere).
    pub fn callback_allow(&self, id: &str) -> &[String] {
        self.callback_allow.get(id).map_or(&[], Vec::as_slice)
    }

    /// The id of the client whose token this is. Every client is compared, whatever matched.
    pub fn authenticate(&self, token: &str) -> Option<&str> {
        let presented = digest(token.as_bytes());
        let mut found = subtle::Choice::from(0u8);
        let mut index = 0u64;
        for (i, (known, _)) in self.clients.iter().enumerate() {
            let hit = known.ct_eq(&presented);
            index.conditional_assign(&(i as u64), hit);
            found |= hit;
        }
        if bool::from(found) {
            usize::try_from(index)
                .ok()
                .and_then(|i| self.clients.get(i))
                .map(|(_, id)| id.as_str())
        } else {
            None
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

/// An authenticated API client within its request rate. Extract it first in a handler so that
/// an unauthenticated request is refused before its body is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedClient {
    /// The client's configured id.
    pub id: String,
}

impl FromRequestParts<ApiState> for AuthenticatedClient {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        // RFC 6750 §3.1: `error="invalid_token"` only when a bearer token was presented; no
        // credential, or one of another scheme, gets the bare challenge.
        let token = bearer_token(parts);
        let id = token
            .and_then(|token| state.clients.authenticate(token))
            .ok_or_else(|| ApiError::unauthorized(token.is_some()))?
            .to_owned();
        if let Err(retry_after) = state.limiter.check(&id) {
            tracing::debug!(client = %id, "per-client rate limit");
            return Err(ApiError::rate_limited(retry_after));
        }
        Ok(AuthenticatedClient { id })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn registry() -> ClientRegistry {
        let client = |id: &str, token: &str| ClientCredential {
            id: id.into(),
            token: Secret::new(token),
            rate_per_sec: 1,
            burst: 1,
            callback_allow: Vec::new(),
        };
        ClientRegistry::new(&[client("rp-a", "token-a"), client("rp-b", "token-b")])
    }

    #[test]
    fn each_token_finds_its_client() {
        let r = registry();
        assert_eq!(r.authenticate("token-a"), Some("rp-a"));
        assert_eq!(r.authenticate("token-b"), Some("rp-b"));
    }

    #[test]
    fn wrong_prefix_or_extension_of_a_token_is_refused() {
        let r = registry();
        for t in ["", "token-", "token-a ", "token-ab", "TOKEN-A", "token-c"] {
            assert_eq!(r.authenticate(t), None, "{t:?}");
        }
    }

    #[test]
    fn the_registry_debug_shows_ids_not_tokens() {
        let shown = format!("{:?}", registry());
        assert!(shown.contains("rp-a"));
        assert!(!shown.contains("token-a"));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_other_schemes_are_not_bearer() {
        let parts = |v: &str| {
            let (parts, ()) = axum::http::Request::builder()
                .header(AUTHORIZATION, v)
                .body(())
                .unwrap()
                .into_parts();
            parts
        };
        assert_eq!(bearer_token(&parts("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&parts("bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&parts("Basic abc")), None);
        assert_eq!(bearer_token(&parts("Bearer ")), None);
        assert_eq!(bearer_token(&parts("Bearerabc")), None);
    }
}
