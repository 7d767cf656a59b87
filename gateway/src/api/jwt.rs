//! Verification of the bearer JWTs an OIDC provider (Keycloak) signs with its realm keys.
//!
//! Data flow: [`JwtVerifier::load`] reads the realm's JWKS (a file, or an `http://` URL such as
//! `{realm}/protocol/openid-connect/certs`) into a key set indexed by `kid`.
//! [`JwtVerifier::verify`] reads the token header, picks the key by `kid`, checks the signature
//! (RS256 and ES256 by default), `iss`, `aud`, `exp` (with a small leeway) and the presence of
//! `jti`, and returns the claims the caller needs as a [`VerifiedToken`].
//!
//! Key rotation: a token naming a `kid` the set does not hold makes the verifier reload the
//! JWKS once, at most once per `min_reload_interval` (so tokens with made-up `kid`s cannot make
//! the gateway hammer the provider), then look again. Every refusal is a [`JwtError`] variant
//! that says what was wrong, never echoing the token.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::http::{Method, Request, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Largest JWKS document read (a realm has a handful of keys, each well under 4 KiB).
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Most keys kept from one JWKS.
const MAX_KEYS: usize = 64;
/// Longest accepted token (Keycloak's bearer is about 1 KiB).
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Time allowed to fetch a JWKS by URL.
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// What a token must carry to be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// Expected `iss`: the realm URL, e.g. `https://kc.example/realms/gov`.
    pub issuer: String,
    /// Accepted `aud` values (Keycloak's channel token has `aud` = the realm URL).
    pub audience: Vec<String>,
    /// Clock skew tolerated on `exp`.
    pub leeway: Duration,
    /// Signature algorithms accepted.
    pub algorithms: Vec<Algorithm>,
    /// Shortest time between two JWKS reloads caused by unknown `kid`s.
    pub min_reload_interval: Duration,
}

impl JwtConfig {
    /// Keycloak's defaults for a realm URL: `aud` = `iss` = the realm URL, RS256 and ES256,
    /// 10 s leeway, reload at most every 30 s.
    pub fn for_realm(realm_url: &str) -> Self {
        let realm = realm_url.trim_end_matches('/').to_string();
        Self {
            issuer: realm.clone(),
            audience: vec![realm],
            leeway: Duration::from_secs(10),
            algorithms: vec![Algorithm::RS256, Algorithm::ES256],
            min_reload_interval: Duration::from_secs(30),
        }
    }
}

/// Where the realm's public keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A JWKS JSON file (re-read on rotation).
    File(PathBuf),
    /// An `https://` URL serving the JWKS (`http://` only where `[outbound] allow_http`).
    Url(String),
    /// A fixed JWKS document (tests, or keys pinned in the configuration); never reloaded.
    Inline(String),
}

/// Failures to obtain a usable key set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// The file could not be read.
    #[error("reading JWKS file {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// The URL could not be fetched.
    #[error("fetching JWKS from {url}: {reason}")]
    Fetch {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The HTTPS client could not be set up (a configured CA file).
    #[error("outbound TLS: {0}")]
    Tls(String),
    /// The document is not a JWKS (`{"keys": [...]}`) or is too large.
    #[error("malformed JWKS: {0}")]
    Malformed(String),
    /// No key in the document can verify signatures (only `use: enc` keys, unknown types ...).
    #[error("JWKS holds no usable signing key")]
    NoUsableKeys,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not a compact JWS, bad base64 or JSON, or too long.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `alg` is not one the gateway accepts (or does not fit the key).
    #[error("signature algorithm {0} is not accepted")]
    UnsupportedAlgorithm(String),
    /// No key with this `kid`, even after a reload.
    #[error("no realm key with kid {kid:?}")]
    UnknownKey {
        /// The header's `kid`.
        kid: Option<String>,
    },
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `iss` is not the configured realm.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` does not name us.
    #[error("wrong audience")]
    WrongAudience,
    /// A required claim is absent.
    #[error("missing claim {0}")]
    MissingClaim(String),
    /// The key set could not be reloaded for an unknown `kid`.
    #[error("realm keys unavailable: {0}")]
    Keys(JwksError),
}

/// The claims of an accepted token that the caller uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The token as received (Keycloak wants it back on the callback).
    pub raw: String,
    /// `jti`: Keycloak's auth result id, unique per authentication request.
    pub jti: String,
    /// `sub`: the user id in the realm.
    pub sub: Option<String>,
    /// `azp`: the client that asked (the relying party).
    pub azp: Option<String>,
    /// `exp`, Unix seconds.
    pub exp: u64,
}

#[derive(Debug, Deserialize)]
struct Claims {
    jti: Option<String>,
    sub: Option<String>,
    azp: Option<String>,
    exp: u64,
}

#[derive(Clone)]
struct RealmKey {
    key: DecodingKey,
    /// The JWK's own `alg`, when it names one.
    alg: Option<Algorithm>,
}

#[derive(Clone, Default)]
struct KeySet {
    by_kid: HashMap<String, RealmKey>,
    without_kid: Vec<RealmKey>,
}

impl KeySet {
    fn len(&self) -> usize {
        self.by_kid.len() + self.without_kid.len()
    }

    /// Candidate keys for a header: the one with its `kid`, or every key when it has none.
    fn candidates(&self, kid: Option<&str>) -> Vec<RealmKey> {
        match kid {
            Some(kid) => self.by_kid.get(kid).cloned().into_iter().collect(),
            None => self
                .by_kid
                .values()
                .chain(self.without_kid.iter())
                .cloned()
                .collect(),
        }
    }
}

/// Verifies realm-signed bearer tokens; cheap to share behind an `Arc`.
pub struct JwtVerifier {
    config: JwtConfig,
    source: JwksSource,
    keys: RwLock<Arc<KeySet>>,
    /// When the last reload ran; the lock also makes concurrent reloads one.
    last_reload: tokio::sync::Mutex<Instant>,
    http: crate::outbound::OutboundClient<Empty<Bytes>>,
    allow_http: bool,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("config", &self.config)
            .field("source", &self.source)
            .field("keys", &self.current_keys().len())
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Load the key set once; fails if it cannot be read or holds no signing key.
    pub async fn load(
        config: JwtConfig,
        source: JwksSource,
        outbound: &crate::outbound::OutboundSettings,
    ) -> Result<Self, JwksError> {
        let http = crate::outbound::client(outbound, JWKS_FETCH_TIMEOUT)
            .map_err(|e| JwksError::Tls(e.to_string()))?;
        let keys = fetch_keys(&source, &http, outbound.allow_http).await?;
        Ok(Self {
            config,
            source,
            keys: RwLock::new(Arc::new(keys)),
            last_reload: tokio::sync::Mutex::new(Instant::now()),
            http,
            allow_http: outbound.allow_http,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &JwtConfig {
        &self.config
    }

    /// Number of signing keys held.
    pub fn key_count(&self) -> usize {
        self.current_keys().len()
    }

    fn current_keys(&self) -> Arc<KeySet> {
        // A poisoned lock only means a panic elsewhere while swapping an Arc; the Arc inside
        // is whole either way.
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Re-read the key set now, whatever the rate limit says (operator action, tests).
    pub async fn reload(&self) -> Result<usize, JwksError> {
        let mut last = self.last_reload.lock().await;
        self.reload_locked(&mut last).await
    }

    async fn reload_locked(&self, last: &mut Instant) -> Result<usize, JwksError> {
        *last = Instant::now();
        let keys = fetch_keys(&self.source, &self.http, self.allow_http).await?;
        let n = keys.len();
        *self
            .keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(keys);
        tracing::info!(keys = n, "realm JWKS reloaded");
        Ok(n)
    }

    /// Reload for an unknown `kid` unless one ran within `min_reload_interval`. Returns whether
    /// a reload happened (or another task's reload finished while we waited for the lock).
    async fn reload_for_unknown_kid(&self, kid: Option<&str>) -> Result<bool, JwksError> {
        // Compared as an address only (a raw pointer would make the future !Send).
        let seen_before = Arc::as_ptr(&self.current_keys()) as usize;
        let mut last = self.last_reload.lock().await;
        if Arc::as_ptr(&self.current_keys()) as usize != seen_before {
            return Ok(true);
        }
        if matches!(self.source, JwksSource::Inline(_))
            || last.elapsed() < self.config.min_reload_interval
        {
            return Ok(false);
        }
        tracing::info!(kid = ?kid, "unknown signing key id; reloading the realm JWKS");
        self.reload_locked(&mut last).await.map(|_| true)
    }

    /// Verify a compact JWS and its claims.
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::Malformed(format!(
                "token longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::Json(_) if token_alg_is_unknown(token) => {
                JwtError::UnsupportedAlgorithm("(unknown)".into())
            }
            _ => JwtError::Malformed(e.to_string()),
        })?;
        if !self.config.algorithms.contains(&header.alg) {
            return Err(JwtError::UnsupportedAlgorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.as_deref();
        let mut candidates = self.current_keys().candidates(kid);
        if candidates.is_empty() {
            match self.reload_for_unknown_kid(kid).await {
                Ok(true) => candidates = self.current_keys().candidates(kid),
                Ok(false) => {}
                Err(e) => return Err(JwtError::Keys(e)),
            }
        }
        if candidates.is_empty() {
            return Err(JwtError::UnknownKey {
                kid: header.kid.clone(),
            });
        }
        let validation = self.validation(header.alg);
        let mut last_err = JwtError::BadSignature;
        for candidate in candidates {
            if candidate.alg.is_some_and(|a| a != header.alg) {
                last_err = JwtError::UnsupportedAlgorithm(format!("{:?}", header.alg));
                continue;
            }
            match jsonwebtoken::decode::<Claims>(token, &candidate.key, &validation) {
                Ok(data) => {
                    let claims = data.claims;
                    let jti = claims
                        .jti
                        .filter(|j| !j.is_empty())
                        .ok_or_else(|| JwtError::MissingClaim("jti".into()))?;
                    return Ok(VerifiedToken {
                        raw: token.to_string(),
                        jti,
                        sub: claims.sub,
                        azp: claims.azp,
                        exp: claims.exp,
                    });
                }
                Err(e) => {
                    last_err = map_error(e.kind());
                    // Only a signature mismatch is worth trying the next kid-less key on.
                    if last_err != JwtError::BadSignature {
                        return Err(last_err);
                    }
                }
            }
        }
        Err(last_err)
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.algorithms = vec![alg];
        v.leeway = self.config.leeway.as_secs();
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_issuer(&[self.config.issuer.as_str()]);
        v.set_audience(&self.config.audience);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v
    }
}

/// `decode_header` fails with a JSON error for an `alg` it has no variant for (e.g. `none`):
/// tell that apart from a garbled header so the refusal says what is wrong.
fn token_alg_is_unknown(token: &str) -> bool {
    use base64::Engine as _;
    let Some(head) = token.split('.').next() else {
        return false;
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head) else {
        return false;
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return false;
    };
    value
        .get("alg")
        .and_then(|a| a.as_str())
        .is_some_and(|a| Algorithm::from_str(a).is_err())
}

fn map_error(kind: &ErrorKind) -> JwtError {
    match kind {
        ErrorKind::InvalidSignature => JwtError::BadSignature,
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
        ErrorKind::InvalidAudience => JwtError::WrongAudience,
        ErrorKind::ImmatureSignature => JwtError::Malformed("token not yet valid (nbf)".into()),
        ErrorKind::MissingRequiredClaim(c) => JwtError::MissingClaim(c.clone()),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            JwtError::UnsupportedAlgorithm("does not fit the key".into())
        }
        ErrorKind::Json(e) => JwtError::Malformed(format!("claims: {e}")),
        other => JwtError::Malformed(format!("{other:?}")),
    }
}

async fn fetch_keys(
    source: &JwksSource,
    http: &crate::outbound::OutboundClient<Empty<Bytes>>,
    allow_http: bool,
) -> Result<KeySet, JwksError> {
    let bytes = match source {
        JwksSource::Inline(doc) => Bytes::from(doc.clone().into_bytes()),
        JwksSource::File(path) => {
            let data = tokio::fs::read(path).await.map_err(|e| JwksError::Read {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            if data.len() > MAX_JWKS_BYTES {
                return Err(JwksError::Malformed(format!(
                    "larger than {MAX_JWKS_BYTES} bytes"
                )));
            }
            Bytes::from(data)
        }
        JwksSource::Url(url) => fetch_url(url, http, allow_http).await?,
    };
    parse_jwks(&bytes)
}

async fn fetch_url(
    url: &str,
    http: &crate::outbound::OutboundClient<Empty<Bytes>>,
    allow_http: bool,
) -> Result<Bytes, JwksError> {
    let fail = |reason: String| JwksError::Fetch {
        url: url.to_string(),
        reason,
    };
    let uri: Uri = url.parse().map_err(|e| fail(format!("{e}")))?;
    crate::outbound::check_scheme(&uri, allow_http).map_err(fail)?;
    let req = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .header("accept", "application/json")
        .body(Empty::new())
        .map_err(|e| fail(e.to_string()))?;
    let work = async {
        let resp = http
            .request(req)
            .await
            .map_err(|e| fail(crate::outbound::error_chain(&e)))?;
        if !resp.status().is_success() {
            return Err(fail(format!("HTTP {}", resp.status().as_u16())));
        }
        let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(body.to_bytes())
    };
    tokio::time::timeout(JWKS_FETCH_TIMEOUT, work)
        .await
        .map_err(|_| fail(format!("no answer within {JWKS_FETCH_TIMEOUT:?}")))?
}

/// Parse a JWKS, keeping the signing keys: keys marked `use: enc`, of unknown types or with
/// unknown parameters are skipped one by one (a realm serves RSA-OAEP keys beside its
/// signing keys, and one odd key must not make the whole set unusable).
fn parse_jwks(bytes: &[u8]) -> Result<KeySet, JwksError> {
    #[derive(Deserialize)]
    struct Doc {
        keys: Vec<serde_json::Value>,
    }
    let doc: Doc =
        serde_json::from_slice(bytes).map_err(|e| JwksError::Malformed(e.to_string()))?;
    let mut set = KeySet::default();
    for value in doc.keys.into_iter().take(MAX_KEYS) {
        if value.get("use").and_then(|u| u.as_str()) == Some("enc") {
            continue;
        }
        let alg = match value.get("alg").and_then(|a| a.as_str()) {
            None => None,
            Some(a) => match Algorithm::from_str(a) {
                Ok(alg) => Some(alg),
                // An encryption algorithm (RSA-OAEP ...) without `use`: not a signing key.
                Err(_) => continue,
            },
        };
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        let realm_key = RealmKey { key, alg };
        match jwk.common.key_id {
            Some(kid) => {
                set.by_kid.insert(kid, realm_key);
            }
            None => set.without_kid.push(realm_key),
        }
    }
    if set.len() == 0 {
        return Err(JwksError::NoUsableKeys);
    }
    Ok(set)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // A P-256 public key (RFC 7515 appendix A.3 example key).
    const EC_JWK: &str = r#"{"kty":"EC","crv":"P-256","kid":"ec1","alg":"ES256","use":"sig",
        "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y":"x_FEzRjLgmDAnu9qNlB3GxHSHvNt0L3gTB8gVyBn3vc"}"#;

    #[test]
    fn encryption_keys_and_junk_are_skipped_signing_keys_kept() {
        let doc = format!(
            r#"{{"keys":[{EC_JWK},
              {{"kty":"RSA","kid":"enc1","use":"enc","alg":"RSA-OAEP","n":"AQAB","e":"AQAB"}},
              {{"kty":"RSA","kid":"oaep","alg":"RSA-OAEP","n":"AQAB","e":"AQAB"}},
              {{"kty":"weird"}}]}}"#
        );
        let set = parse_jwks(doc.as_bytes()).unwrap();
        assert_eq!(set.len(), 1);
        assert!(set.by_kid.contains_key("ec1"));
    }

    #[test]
    fn a_jwks_without_signing_keys_is_refused() {
        assert_eq!(
            parse_jwks(br#"{"keys":[]}"#).err(),
            Some(JwksError::NoUsableKeys)
        );
        assert!(matches!(parse_jwks(b"[1,2]"), Err(JwksError::Malformed(_))));
    }

    #[tokio::test]
    async fn garbage_and_alg_none_are_refused_with_a_reason() {
        let doc = format!(r#"{{"keys":[{EC_JWK}]}}"#);
        let v = JwtVerifier::load(
            JwtConfig::for_realm("http://kc/realms/r"),
            JwksSource::Inline(doc),
            &crate::outbound::OutboundSettings::default(),
        )
        .await
        .unwrap();
        assert!(matches!(
            v.verify("not-a-jwt").await,
            Err(JwtError::Malformed(_))
        ));
        // {"alg":"none","typ":"JWT"} . {"jti":"x"} . (no signature)
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJqdGkiOiJ4In0.";
        assert!(matches!(
            v.verify(none).await,
            Err(JwtError::UnsupportedAlgorithm(_))
        ));
        // {"alg":"HS256","kid":"ec1"}: a real algorithm the gateway does not accept.
        let hs = "eyJhbGciOiJIUzI1NiIsImtpZCI6ImVjMSJ9.eyJqdGkiOiJ4In0.c2ln";
        assert!(matches!(
            v.verify(hs).await,
            Err(JwtError::UnsupportedAlgorithm(_))
        ));
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert!(matches!(v.verify(&long).await, Err(JwtError::Malformed(_))));
    }

    #[tokio::test]
    async fn an_unknown_kid_with_an_inline_set_is_not_reloaded() {
        let doc = format!(r#"{{"keys":[{EC_JWK}]}}"#);
        let v = JwtVerifier::load(
            JwtConfig::for_realm("http://kc/realms/r"),
            JwksSource::Inline(doc),
            &crate::outbound::OutboundSettings::default(),
        )
        .await
        .unwrap();
        // {"alg":"ES256","kid":"other"} . {"jti":"x"} . sig
        let t = "eyJhbGciOiJFUzI1NiIsImtpZCI6Im90aGVyIn0.eyJqdGkiOiJ4In0.c2ln";
        assert_eq!(
            v.verify(t).await,
            Err(JwtError::UnknownKey {
                kid: Some("other".into())
            })
        );
    }
}
