//! The native JSON API: start an authorization, read it (long-poll), cancel it; health checks
//! and the OpenAPI document.
//!
//! Data flow of a start: [`AuthenticatedClient`] (token, then rate) -> content type -> body
//! (bounded by `max_body_bytes`) -> [`parse_start`] (JSON object, unknown fields refused,
//! each field typed and checked) -> [`StartRequest`] with the client id from the token ->
//! [`AuthorizationService::start`](crate::authorization::service::AuthorizationService::start) ->
//! 201 + `Location`, or 200 when the same `Idempotency-Key` returned the same authorization.
//!
//! [`ROUTES`] is the one list of native routes: [`routes`] builds the router from it and the
//! tests check it against the checked-in OpenAPI document, so neither can drift.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Map, Value};

use super::auth::AuthenticatedClient;
use super::error::ApiError;
use super::{openapi, ApiOptions, ApiState};
use crate::authorization::service::{AuthorizationView, Loa, StartRequest};

/// Path of the authorization collection.
pub const AUTHORIZATIONS: &str = "/v1/authorizations";
/// Path of one authorization.
pub const AUTHORIZATION: &str = "/v1/authorizations/{id}";
/// Path that cancels one authorization.
pub const AUTHORIZATION_CANCEL: &str = "/v1/authorizations/{id}/cancel";

/// Every native route as `(method, path)`; [`routes`] serves exactly these.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", AUTHORIZATIONS),
    ("GET", AUTHORIZATION),
    ("POST", AUTHORIZATION_CANCEL),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", openapi::PATH),
];

/// Longest client name, consent text, binding message, callback URL, idempotency key, id
/// (characters). The channel shortens texts to what a screen takes; these only bound input.
const MAX_CLIENT_NAME: usize = 100;
const MAX_CONSENT_TEXT: usize = 1000;
const MAX_BINDING_MESSAGE: usize = 100;
const MAX_CALLBACK_URL: usize = 2048;
const MAX_IDEMPOTENCY_KEY: usize = 255;
const MAX_ID: usize = 128;

/// Fields a start body may have; anything else is `unknown_field`.
const START_FIELDS: &[&str] = &[
    "msisdn",
    "login_hint",
    "loa",
    "client_name",
    "consent_text",
    "binding_message",
    "expiry_secs",
    "callback_url",
];

fn handler_for(method: &str, path: &str, options: &ApiOptions) -> Option<MethodRouter<ApiState>> {
    Some(match (method, path) {
        ("POST", AUTHORIZATIONS) => {
            post(start).layer(DefaultBodyLimit::max(options.max_body_bytes))
        }
        ("GET", AUTHORIZATION) => get(read),
        ("POST", AUTHORIZATION_CANCEL) => {
            post(cancel).layer(DefaultBodyLimit::max(options.max_body_bytes))
        }
        ("GET", "/healthz") => get(healthz),
        ("GET", "/readyz") => get(readyz),
        ("GET", openapi::PATH) => get(openapi::serve_yaml),
        _ => return None,
    })
}

/// The native routes, built from [`ROUTES`].
pub fn routes(options: &ApiOptions) -> Router<ApiState> {
    ROUTES
        .iter()
        .filter_map(|(method, path)| Some((*path, handler_for(method, path, options)?)))
        .fold(Router::new(), |router, (path, handler)| {
            router.route(path, handler)
        })
}

/// `(client, key)` -> id, and the insertion order for eviction.
type KeyMemory = (
    HashMap<(String, String), String>,
    VecDeque<(String, String)>,
);

/// Remembers which `(client, Idempotency-Key)` gave which id, to answer a retry with 200. The
/// oldest pairs are forgotten past the capacity; a forgotten retry gets 201 with the same id.
#[derive(Debug)]
pub(crate) struct SeenKeys {
    capacity: usize,
    inner: Mutex<KeyMemory>,
}

impl SeenKeys {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new((HashMap::new(), VecDeque::new())),
        }
    }

    /// Record that `key` of `client` gave `id`; true if it had already given that same id.
    fn record(&self, client: &str, key: &str, id: &str) -> bool {
        if self.capacity == 0 {
            return false;
        }
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (map, order) = &mut *guard;
        let k = (client.to_owned(), key.to_owned());
        if let Some(known) = map.get(&k) {
            return known == id;
        }
        while map.len() >= self.capacity {
            match order.pop_front() {
                Some(old) => {
                    map.remove(&old);
                }
                None => break,
            }
        }
        map.insert(k.clone(), id.to_owned());
        order.push_back(k);
        false
    }
}

/// A validated start body (the client id comes from the token, the key from a header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartBody {
    /// E.164 digits without '+'.
    pub msisdn: String,
    /// LoA asked for.
    pub loa: Loa,
    /// Relying party name.
    pub client_name: String,
    /// Consent text (built from the client name when absent).
    pub consent_text: String,
    /// Binding message.
    pub binding_message: Option<String>,
    /// Lifetime.
    pub expiry: Duration,
    /// Callback URL.
    pub callback_url: Option<String>,
}

fn wrong_type(field: &str, expected: &str) -> ApiError {
    ApiError::bad_request("wrong_type", format!("field `{field}` must be {expected}"))
}

fn opt_str<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(wrong_type(field, "a string")),
    }
}

/// A display text: not blank, bounded, no control characters (they would reach the handset).
fn text_field(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    let invalid =
        |why: String| ApiError::bad_request("invalid_field", format!("field `{field}`: {why}"));
    if value.trim().is_empty() {
        return Err(invalid("must not be blank".into()));
    }
    if value.chars().count() > max {
        return Err(invalid(format!("longer than {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid("contains control characters".into()));
    }
    Ok(value.to_owned())
}

/// An MSISDN in international format: optional '+', 8 to 15 digits, no leading 0.
pub fn parse_msisdn(raw: &str) -> Option<String> {
    let digits = raw.strip_prefix('+').unwrap_or(raw);
    let ok = (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    ok.then(|| digits.to_owned())
}

/// A Mobile Connect style `login_hint`: `MSISDN:<number>` (prefix case-insensitive).
pub fn parse_login_hint(raw: &str) -> Result<String, ApiError> {
    let number = raw
        .split_once(':')
        .filter(|(kind, _)| kind.eq_ignore_ascii_case("msisdn"))
        .map(|(_, number)| number)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_login_hint",
                "login_hint must be `MSISDN:<international number>`",
            )
        })?;
    parse_msisdn(number).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_msisdn",
            "login_hint: the MSISDN must be 8 to 15 digits in international format",
        )
    })
}

fn parse_loa(value: Option<&Value>) -> Result<Loa, ApiError> {
    let invalid = || ApiError::bad_request("invalid_loa", "field `loa` must be 2 or 3");
    match value {
        None | Some(Value::Null) => Err(ApiError::bad_request(
            "missing_field",
            "field `loa` is required",
        )),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(2) => Ok(Loa::Loa2),
            Some(3) => Ok(Loa::Loa3),
            _ => Err(invalid()),
        },
        Some(Value::String(s)) => match s.as_str() {
            "2" => Ok(Loa::Loa2),
            "3" => Ok(Loa::Loa3),
            _ => Err(invalid()),
        },
        Some(_) => Err(wrong_type("loa", "the number 2 or 3")),
    }
}

fn parse_expiry(value: Option<&Value>, options: &ApiOptions) -> Result<Duration, ApiError> {
    let range = || {
        ApiError::bad_request(
            "invalid_expiry",
            format!(
                "field `expiry_secs` must be between {} and {}",
                options.min_expiry.as_secs(),
                options.max_expiry.as_secs()
            ),
        )
    };
    match value {
        None | Some(Value::Null) => Ok(options.default_expiry),
        Some(Value::Number(n)) => {
            let secs = n.as_u64().ok_or_else(range)?;
            let d = Duration::from_secs(secs);
            if d < options.min_expiry || d > options.max_expiry {
                return Err(range());
            }
            Ok(d)
        }
        Some(_) => Err(wrong_type("expiry_secs", "an integer (seconds)")),
    }
}

fn parse_callback_url(raw: &str) -> Result<String, ApiError> {
    let lower = raw
        .get(..8)
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let scheme_ok = lower.starts_with("https://") || lower.starts_with("http://");
    let ok = scheme_ok
        && raw.len() <= MAX_CALLBACK_URL
        && raw.len() > "http://".len()
        && raw.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(ApiError::bad_request(
            "invalid_callback_url",
            format!("field `callback_url` must be an http(s) URL of at most {MAX_CALLBACK_URL} characters"),
        ))
    }
}

/// A `callback_url` must be one the gateway may call (https, or http where allowed) and within
/// the client's allow-list: an authenticated client cannot make the gateway POST to internal
/// addresses.
fn check_callback_target(url: &str, client: &str, state: &ApiState) -> Result<(), ApiError> {
    let uri: axum::http::Uri = url.parse().map_err(|_| {
        ApiError::bad_request("invalid_callback_url", "field `callback_url` is not a URL")
    })?;
    crate::outbound::check_scheme(&uri, state.options.allow_http_callbacks)
        .map_err(|why| ApiError::bad_request("invalid_callback_url", why))?;
    if !crate::outbound::callback_allowed(&uri, state.clients.callback_allow(client)) {
        return Err(ApiError::bad_request(
            "callback_not_allowed",
            "field `callback_url` is outside this client's allow-list (api.clients.callback_allow)",
        ));
    }
    Ok(())
}

/// Validate a start body: a JSON object with only known fields, each of the right type and
/// within its range.
pub fn parse_start(body: &[u8], options: &ApiOptions) -> Result<StartBody, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    })?;
    let Value::Object(obj) = value else {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the body must be a JSON object",
        ));
    };
    if let Some(unknown) = obj.keys().find(|k| !START_FIELDS.contains(&k.as_str())) {
        // The name is cut so that a huge key is not echoed whole.
        let shown: String = unknown.chars().take(64).collect();
        return Err(ApiError::bad_request(
            "unknown_field",
            format!("unknown field `{shown}`"),
        ));
    }

    let msisdn = match (opt_str(&obj, "msisdn")?, opt_str(&obj, "login_hint")?) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_field",
                "give `msisdn` or `login_hint`, not both",
            ))
        }
        (Some(m), None) => parse_msisdn(m).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_msisdn",
                "field `msisdn` must be 8 to 15 digits in international format",
            )
        })?,
        (None, Some(hint)) => parse_login_hint(hint)?,
        (None, None) => {
            return Err(ApiError::bad_request(
                "missing_field",
                "field `msisdn` (or `login_hint`) is required",
            ))
        }
    };
    let loa = parse_loa(obj.get("loa"))?;
    let client_name = match opt_str(&obj, "client_name")? {
        Some(name) => text_field("client_name", name, MAX_CLIENT_NAME)?,
        None => {
            return Err(ApiError::bad_request(
                "missing_field",
                "field `client_name` is required",
            ))
        }
    };
    let consent_text = match opt_str(&obj, "consent_text")? {
        Some(text) => text_field("consent_text", text, MAX_CONSENT_TEXT)?,
        None => format!("Log in to {client_name}?"),
    };
    let binding_message = opt_str(&obj, "binding_message")?
        .map(|m| text_field("binding_message", m, MAX_BINDING_MESSAGE))
        .transpose()?;
    let expiry = parse_expiry(obj.get("expiry_secs"), options)?;
    let callback_url = opt_str(&obj, "callback_url")?
        .map(parse_callback_url)
        .transpose()?;
    Ok(StartBody {
        msisdn,
        loa,
        client_name,
        consent_text,
        binding_message,
        expiry,
        callback_url,
    })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::bad_request(
            "invalid_idempotency_key",
            format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        )
    };
    let key = value.to_str().map_err(|_| invalid())?;
    let ok = !key.is_empty()
        && key.len() <= MAX_IDEMPOTENCY_KEY
        && key.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(Some(key.to_owned()))
    } else {
        Err(invalid())
    }
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if is_json {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be sent with `Content-Type: application/json`",
        ))
    }
}

fn body_bytes(
    body: Result<Bytes, BytesRejection>,
    options: &ApiOptions,
) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body exceeds {} bytes", options.max_body_bytes),
            )
        } else {
            ApiError::bad_request("invalid_body", "the body could not be read")
        }
    })
}

/// Ids are opaque but URL-safe; anything else cannot exist, so it is not looked up.
fn check_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::not_found())
    }
}

/// The `wait` query parameter (seconds), lowered to `max_wait`; 0 or absent: no long-poll.
pub fn parse_wait(query: Option<&str>, max_wait: Duration) -> Result<Option<Duration>, ApiError> {
    let Some(raw) = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("wait="))
    else {
        return Ok(None);
    };
    if raw.is_empty() || raw.len() > 10 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request(
            "invalid_wait",
            "`wait` must be a whole number of seconds",
        ));
    }
    let secs: u64 = raw
        .parse()
        .map_err(|_| ApiError::bad_request("invalid_wait", "`wait` is out of range"))?;
    Ok((secs > 0).then(|| Duration::from_secs(secs).min(max_wait)))
}

/// A view answered with `Cache-Control: no-store` (it may carry a proof).
fn view_response(status: StatusCode, view: &AuthorizationView, location: bool) -> Response {
    let mut response = (status, Json(view)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if location {
        if let Ok(v) = HeaderValue::from_str(&format!("{AUTHORIZATIONS}/{}", view.id)) {
            headers.insert(header::LOCATION, v);
        }
    }
    response
}

/// Last three digits only: enough to correlate in logs, not enough to identify.
fn masked(msisdn: &str) -> String {
    let tail = msisdn.get(msisdn.len().saturating_sub(3)..).unwrap_or("");
    format!("***{tail}")
}

/// `POST /v1/authorizations`.
async fn start(
    client: AuthenticatedClient,
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let key = idempotency_key(&headers)?;
    let body = body_bytes(body, &state.options)?;
    let valid = parse_start(&body, &state.options)?;
    if let Some(url) = &valid.callback_url {
        check_callback_target(url, &client.id, &state)?;
    }
    let msisdn_log = masked(&valid.msisdn);
    let request = StartRequest {
        client_id: client.id.clone(),
        msisdn: valid.msisdn,
        loa: valid.loa,
        client_name: valid.client_name,
        consent_text: valid.consent_text,
        binding_message: valid.binding_message,
        expiry: valid.expiry,
        callback_url: valid.callback_url,
        idempotency_key: key.clone(),
        keycloak: None,
    };
    let (view, existing) = state
        .service
        .start_reporting(request)
        .await
        .inspect_err(|e| {
            tracing::info!(client = %client.id, msisdn = %msisdn_log, error = %e, "start refused");
        })?;
    // The service knows (it survives restarts); the API's own memory of keys is the fallback
    // for services that cannot tell.
    let remembered = key
        .as_deref()
        .is_some_and(|k| state.seen_keys.record(&client.id, k, &view.id));
    let repeated = existing.unwrap_or(remembered);
    tracing::info!(client = %client.id, msisdn = %msisdn_log, id = %view.id, repeated, "authorization started");
    let status = if repeated {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(view_response(status, &view, true))
}

/// `GET /v1/authorizations/{id}?wait=N`.
async fn read(
    client: AuthenticatedClient,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    check_id(&id)?;
    let wait = parse_wait(query.as_deref(), state.options.max_wait)?;
    let view = state.service.get(&client.id, &id, wait).await?;
    Ok(view_response(StatusCode::OK, &view, false))
}

/// `POST /v1/authorizations/{id}/cancel` (any body is ignored).
async fn cancel(
    client: AuthenticatedClient,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_id(&id)?;
    let view = state.service.cancel(&client.id, &id).await?;
    tracing::info!(client = %client.id, id = %view.id, "cancel asked");
    Ok(view_response(StatusCode::OK, &view, false))
}

/// `GET /healthz`: the process answers.
async fn healthz() -> Json<Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

#[derive(Debug, Serialize)]
struct BindsUp<'a> {
    operator: &'a str,
    up: usize,
    configured: usize,
}

#[derive(Debug, Serialize)]
struct ReadyBody<'a> {
    ready: bool,
    store_ok: bool,
    binds: Vec<BindsUp<'a>>,
}

/// `GET /readyz`: 200 when the service is ready, 503 otherwise, with the details either way.
async fn readyz(State(state): State<ApiState>) -> Response {
    let readiness = state.service.readiness();
    let body = ReadyBody {
        ready: readiness.ready,
        store_ok: readiness.store_ok,
        binds: readiness
            .binds_up
            .iter()
            .map(|(operator, up, configured)| BindsUp {
                operator,
                up: *up,
                configured: *configured,
            })
            .collect(),
    };
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn opts() -> ApiOptions {
        ApiOptions::default()
    }

    fn code(body: &str) -> &'static str {
        parse_start(body.as_bytes(), &opts()).unwrap_err().code
    }

    #[test]
    fn every_listed_route_has_a_handler() {
        for (method, path) in ROUTES {
            assert!(
                handler_for(method, path, &opts()).is_some(),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn a_minimal_body_gets_the_defaults() {
        let b = parse_start(
            br#"{"msisdn":"+48600100200","loa":2,"client_name":"Bank"}"#,
            &opts(),
        )
        .unwrap();
        assert_eq!(b.msisdn, "48600100200");
        assert_eq!(b.loa, Loa::Loa2);
        assert_eq!(b.consent_text, "Log in to Bank?");
        assert_eq!(b.expiry, Duration::from_secs(120));
        assert_eq!(b.binding_message, None);
    }

    #[test]
    fn login_hint_gives_the_msisdn() {
        let b = parse_start(
            br#"{"login_hint":"MSISDN:48600100200","loa":"3","client_name":"Bank","expiry_secs":300,"callback_url":"https://rp.example/cb"}"#,
            &opts(),
        )
        .unwrap();
        assert_eq!(b.msisdn, "48600100200");
        assert_eq!(b.loa, Loa::Loa3);
        assert_eq!(b.expiry, Duration::from_secs(300));
        assert_eq!(b.callback_url.as_deref(), Some("https://rp.example/cb"));
    }

    #[test]
    fn each_bad_body_has_its_code() {
        let cases = [
            ("{", "invalid_json"),
            ("[1]", "invalid_json"),
            (r#"{"loa":2,"client_name":"B"}"#, "missing_field"),
            (
                r#"{"msisdn":"48600100200","client_name":"B"}"#,
                "missing_field",
            ),
            (r#"{"msisdn":"48600100200","loa":2}"#, "missing_field"),
            (
                r#"{"msisdn":48600100200,"loa":2,"client_name":"B"}"#,
                "wrong_type",
            ),
            (
                r#"{"msisdn":"48600100200","loa":true,"client_name":"B"}"#,
                "wrong_type",
            ),
            (
                r#"{"msisdn":"48600100200","loa":2,"client_name":"B","expiry_secs":"60"}"#,
                "wrong_type",
            ),
            (
                r#"{"msisdn":"48600100200","loa":2,"client_name":"B","x":1}"#,
                "unknown_field",
            ),
            (
                r#"{"msisdn":"0600100200","loa":2,"client_name":"B"}"#,
                "invalid_msisdn",
            ),
            (
                r#"{"msisdn":"4860010020a","loa":2,"client_name":"B"}"#,
                "invalid_msisdn",
            ),
            (
                r#"{"msisdn":"1234567","loa":2,"client_name":"B"}"#,
                "invalid_msisdn",
            ),
            (
                r#"{"msisdn":"1234567890123456","loa":2,"client_name":"B"}"#,
                "invalid_msisdn",
            ),
            (
                r#"{"login_hint":"EMAIL:a@b","loa":2,"client_name":"B"}"#,
                "invalid_login_hint",
            ),
            (
                r#"{"login_hint":"MSISDN:12","loa":2,"client_name":"B"}"#,
                "invalid_msisdn",
            ),
            (
                r#"{"msisdn":"48600100200","login_hint":"MSISDN:48600100200","loa":2,"client_name":"B"}"#,
                "invalid_field",
            ),
            (
                r#"{"msisdn":"48600100200","loa":4,"client_name":"B"}"#,
                "invalid_loa",
            ),
            (
                r#"{"msisdn":"48600100200","loa":2.5,"client_name":"B"}"#,
                "invalid_loa",
            ),
            (
                r#"{"msisdn":"48600100200","loa":2,"client_name":"B","expiry_secs":5}"#,
                "invalid_expiry",
            ),
            (
                r#"{"msisdn":"48600100200","loa":2,"client_name":"B","expiry_secs":601}"#,
                "invalid_expiry",
            ),
            (
                r#"{"msisdn":"48600100200","loa":2,"client_name":"B","expiry_secs":-1}"#,
                "invalid_expiry",
            ),
            (
                r#"{"msisdn":"48600100200","loa":2,"client_name":"  "}"#,
                "invalid_field",
            ),
            (
                r#"{"msisdn":"48600100200","loa":2,"client_name":"B\u0007"}"#,
                "invalid_field",
            ),
            (
                r#"{"msisdn":"48600100200","loa":2,"client_name":"B","callback_url":"ftp://x"}"#,
                "invalid_callback_url",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(code(body), expected, "{body}");
        }
    }

    #[test]
    fn wait_is_capped_and_zero_means_no_wait() {
        let max = Duration::from_secs(60);
        assert_eq!(parse_wait(None, max).unwrap(), None);
        assert_eq!(parse_wait(Some("wait=0"), max).unwrap(), None);
        assert_eq!(
            parse_wait(Some("a=b&wait=5"), max).unwrap(),
            Some(Duration::from_secs(5))
        );
        assert_eq!(parse_wait(Some("wait=3600"), max).unwrap(), Some(max));
        for bad in ["wait=", "wait=-1", "wait=1.5", "wait=99999999999"] {
            assert_eq!(
                parse_wait(Some(bad), max).unwrap_err().code,
                "invalid_wait",
                "{bad}"
            );
        }
    }

    #[test]
    fn seen_keys_tell_a_retry_and_forget_the_oldest() {
        let seen = SeenKeys::new(2);
        assert!(!seen.record("c", "k1", "id1"));
        assert!(seen.record("c", "k1", "id1"));
        assert!(!seen.record("other", "k1", "id9"));
        assert!(!seen.record("c", "k2", "id2"));
        // k1 of "c" was the oldest and is forgotten.
        assert!(!seen.record("c", "k1", "id1"));
    }

    #[test]
    fn ids_outside_the_alphabet_are_not_looked_up() {
        assert!(check_id("aB3_-x").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id("a/b").is_err());
        assert!(check_id(&"a".repeat(129)).is_err());
    }

    #[test]
    fn msisdn_is_masked_in_logs() {
        assert_eq!(masked("48600100200"), "***200");
    }
}
