//! Every refusal of the north API, as one type with its HTTP status and JSON body.
//!
//! Handlers and extractors return [`ApiError`]; service errors ([`StartError`],
//! [`LookupError`]) are mapped here and nowhere else. The body is always
//! `{"error": "snake_case_code", "message": "human readable"}`; `Retry-After` goes with 429 and
//! 503, `WWW-Authenticate: Bearer` with 401. Messages never echo a token, and internal failures
//! are logged but answered with a generic message.

use std::time::Duration;

use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::authorization::service::{LookupError, StartError};

/// A refusal: status, machine code, message and the headers that go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable code (snake_case, listed in `docs/api.md`).
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// `Retry-After` (whole seconds, rounded up).
    pub retry_after: Option<Duration>,
    /// `WWW-Authenticate` value (401 only).
    pub www_authenticate: Option<&'static str>,
}

/// The JSON body of every error answer.
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

impl ApiError {
    /// An error without extra headers.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            www_authenticate: None,
        }
    }

    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401: no token, or a token no client has.
    pub fn unauthorized(token_given: bool) -> Self {
        let (message, challenge) = if token_given {
            (
                "the bearer token is not valid",
                r#"Bearer error="invalid_token""#,
            )
        } else {
            ("a bearer token is required", "Bearer")
        };
        Self {
            www_authenticate: Some(challenge),
            ..Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
        }
    }

    /// 429 from the API's own per-client limiter or the service.
    pub fn rate_limited(retry_after: Duration) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "this client exceeded its request rate",
            )
        }
    }

    /// 404 for an authorization id this client does not have.
    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such authorization for this client",
        )
    }

    /// 500; the detail goes to the log, not to the caller.
    pub fn internal(detail: &str) -> Self {
        tracing::error!(detail, "internal error answered with 500");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error, see the gateway log",
        )
    }
}

impl From<StartError> for ApiError {
    fn from(err: StartError) -> Self {
        match err {
            StartError::Invalid(msg) => ApiError::bad_request("invalid_request", msg),
            StartError::UnknownSubscriber => ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_subscriber",
                "no operator serves this number or no such subscriber",
            ),
            StartError::AlreadyInProgress => ApiError::new(
                StatusCode::CONFLICT,
                "already_in_progress",
                "an authorization is already in progress for this subscriber",
            ),
            StartError::RateLimited { retry_after } => ApiError::rate_limited(retry_after),
            StartError::NoCapacity { retry_after } => ApiError {
                retry_after: Some(retry_after),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_capacity",
                    "the operator's SMSC cannot take this prompt in time now, retry later",
                )
            },
            StartError::Overloaded { retry_after } => ApiError {
                retry_after: Some(retry_after),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "the gateway is at its in-flight limit, retry later",
                )
            },
            StartError::StoreUnavailable { retry_after } => ApiError {
                retry_after: Some(retry_after),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the gateway's store cannot be reached, retry later",
                )
            },
            StartError::Policy(msg) => ApiError::new(StatusCode::FORBIDDEN, "policy_refused", msg),
            StartError::Internal(detail) => ApiError::internal(&detail),
        }
    }
}

impl From<LookupError> for ApiError {
    fn from(err: LookupError) -> Self {
        match err {
            LookupError::NotFound => ApiError::not_found(),
            LookupError::Internal(detail) => ApiError::internal(&detail),
        }
    }
}

/// Whole seconds for `Retry-After`: rounded up, at least 1 (0 would invite a busy loop), at
/// most a day (a bucket that never refills says `Duration::MAX`).
pub fn retry_after_secs(d: Duration) -> u64 {
    let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    secs.clamp(1, 86_400)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code,
            message: &self.message,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(d) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs(d)));
        }
        if let Some(challenge) = self.www_authenticate {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// Router fallback: no route has this path.
pub async fn not_found_fallback() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// Router fallback: the path exists, not with this method (axum adds `Allow`).
pub async fn method_not_allowed_fallback(method: Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("method {method} is not allowed on this route"),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(10)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_secs(Duration::MAX), 86_400);
    }

    #[test]
    fn every_start_error_has_its_status() {
        let cases = [
            (StartError::Invalid("x".into()), 400, "invalid_request"),
            (StartError::UnknownSubscriber, 404, "unknown_subscriber"),
            (StartError::AlreadyInProgress, 409, "already_in_progress"),
            (
                StartError::RateLimited {
                    retry_after: Duration::from_secs(2),
                },
                429,
                "rate_limited",
            ),
            (
                StartError::Overloaded {
                    retry_after: Duration::from_secs(2),
                },
                503,
                "overloaded",
            ),
            (
                StartError::NoCapacity {
                    retry_after: Duration::from_secs(3),
                },
                503,
                "no_capacity",
            ),
            (
                StartError::StoreUnavailable {
                    retry_after: Duration::from_secs(1),
                },
                503,
                "store_unavailable",
            ),
            (StartError::Policy("loa3".into()), 403, "policy_refused"),
            (StartError::Internal("disk".into()), 500, "internal"),
        ];
        for (err, status, code) in cases {
            let api = ApiError::from(err);
            assert_eq!(api.status.as_u16(), status, "{code}");
            assert_eq!(api.code, code);
        }
    }

    #[test]
    fn internal_detail_is_not_answered() {
        let api = ApiError::from(LookupError::Internal("redb: /secret/path".into()));
        assert!(!api.message.contains("secret"));
    }
}
