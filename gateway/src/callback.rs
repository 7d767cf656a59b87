//! Outgoing HTTP callbacks: POST a JSON body, with an optional bearer token, until the receiver
//! takes it, gives a final refusal, or time runs out.
//!
//! Used by the Keycloak CIBA channel (the result goes to Keycloak's callback endpoint) and by
//! the authorization manager for the native API's optional `callback_url`. A caller builds one
//! [`CallbackClient`] (it holds a pooled hyper client) and calls [`CallbackClient::post_json`]
//! per delivery; the answer is a typed [`Delivery`]: delivered with the receiver's status, or
//! given up with a [`GiveUpReason`].
//!
//! The decisions are plain functions so they are tested without sockets: [`classify`] says
//! whether an HTTP status is success, worth retrying, or final; [`RetryPolicy::backoff`] gives
//! the wait before attempt `n`. The connection is HTTPS (rustls, the system's roots plus the
//! configured CA files: [`crate::outbound`]); plain `http://` only where `[outbound]
//! allow_http` allows it.

use std::time::Duration;

use axum::http::{header, HeaderValue, Method, Request, StatusCode, Uri};
use bytes::Bytes;
use http_body_util::Full;
use tokio::time::Instant;

use crate::outbound::{self, OutboundClient, OutboundSettings};
use crate::tls::TlsSetupError;

/// How hard to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// Wait before the second attempt; doubles after each failure.
    pub initial_backoff: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
    /// Longest time one attempt may take (connect, send, status line).
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            attempt_timeout: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `failed_attempt` (1-based): `initial * 2^(n-1)`,
    /// capped at `max_backoff`. No jitter: callbacks of one gateway are spread by the users'
    /// answer times already, and a fixed schedule keeps the tests exact.
    pub fn backoff(&self, failed_attempt: u32) -> Duration {
        let shift = failed_attempt.saturating_sub(1).min(20);
        self.initial_backoff
            .saturating_mul(1u32 << shift)
            .min(self.max_backoff)
    }
}

/// What one HTTP status means for a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// The receiver took it (2xx).
    Success,
    /// Try again later (5xx, 408, 429).
    Retry,
    /// The receiver refused for good (403 and the other 3xx/4xx): retrying cannot help.
    Final,
}

/// Classify a receiver's HTTP status.
pub fn classify(status: StatusCode) -> StatusClass {
    if status.is_success() {
        StatusClass::Success
    } else if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        StatusClass::Retry
    } else {
        StatusClass::Final
    }
}

/// Why a delivery was abandoned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GiveUpReason {
    /// The request cannot be built: not an absolute `https://` URL (or `http://` where allowed),
    /// or a bearer that is no valid header.
    #[error("cannot send the callback: {0}")]
    Unsendable(String),
    /// The receiver answered with a final refusal (e.g. 403).
    #[error("receiver refused with HTTP {status}")]
    Refused {
        /// Its status.
        status: u16,
    },
    /// The deadline passed (or the next attempt could not start before it).
    #[error("deadline passed after {attempts} attempt(s); last failure: {last}")]
    DeadlinePassed {
        /// Attempts made.
        attempts: u32,
        /// The last failure seen ("none" when no attempt could start).
        last: String,
    },
    /// Every attempt failed with a retryable outcome.
    #[error("{attempts} attempt(s) failed; last failure: {last}")]
    AttemptsExhausted {
        /// Attempts made.
        attempts: u32,
        /// The last failure seen.
        last: String,
    },
}

/// The result of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The receiver answered 2xx.
    Delivered {
        /// Its status.
        status: u16,
        /// Attempts it took.
        attempts: u32,
    },
    /// Abandoned.
    GaveUp {
        /// Why.
        reason: GiveUpReason,
    },
}

impl Delivery {
    /// Delivered?
    pub fn is_delivered(&self) -> bool {
        matches!(self, Delivery::Delivered { .. })
    }
}

/// The header naming the event a callback delivers (stable across redeliveries).
pub const EVENT_ID_HEADER: &str = "event-id";

/// A pooled HTTP/1.1 client that delivers JSON callbacks under a [`RetryPolicy`].
#[derive(Clone)]
pub struct CallbackClient {
    http: OutboundClient<Full<Bytes>>,
    policy: RetryPolicy,
    allow_http: bool,
}

impl std::fmt::Debug for CallbackClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackClient")
            .field("policy", &self.policy)
            .field("allow_http", &self.allow_http)
            .finish_non_exhaustive()
    }
}

impl CallbackClient {
    /// A client with its own connection pool, trusting what `outbound` says.
    pub fn new(policy: RetryPolicy, outbound: &OutboundSettings) -> Result<Self, TlsSetupError> {
        let http = outbound::client(outbound, policy.attempt_timeout)?;
        Ok(Self {
            http,
            policy,
            allow_http: outbound.allow_http,
        })
    }

    /// The same connections and trust under another policy.
    pub fn with_policy(&self, policy: RetryPolicy) -> Self {
        Self {
            http: self.http.clone(),
            policy,
            allow_http: self.allow_http,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// POST `body` (already serialized JSON) to `url` with `Authorization: Bearer <bearer>` when
    /// given, retrying transport failures and retryable statuses with exponential back-off,
    /// never starting an attempt at or after `deadline` and never letting one run past it.
    pub async fn post_json(
        &self,
        url: &str,
        bearer: Option<&str>,
        body: Bytes,
        deadline: Option<Instant>,
    ) -> Delivery {
        self.post_event(url, bearer, None, body, deadline).await
    }

    /// [`CallbackClient::post_json`] of one event: every attempt carries `Event-Id: <event_id>`
    /// (the same on redeliveries, so the receiver can drop duplicates).
    pub async fn post_event(
        &self,
        url: &str,
        bearer: Option<&str>,
        event_id: Option<&str>,
        body: Bytes,
        deadline: Option<Instant>,
    ) -> Delivery {
        let event = match event_id.map(HeaderValue::try_from) {
            None => None,
            Some(Ok(v)) => Some(v),
            Some(Err(_)) => {
                return Delivery::GaveUp {
                    reason: GiveUpReason::Unsendable("event id is not a valid header".into()),
                }
            }
        };
        let uri = match parse_uri(url, self.allow_http) {
            Ok(uri) => uri,
            Err(reason) => return Delivery::GaveUp { reason },
        };
        let auth = match bearer.map(|t| HeaderValue::try_from(format!("Bearer {t}"))) {
            None => None,
            Some(Ok(v)) => Some(v),
            Some(Err(_)) => {
                return Delivery::GaveUp {
                    reason: GiveUpReason::Unsendable("bearer token is not a valid header".into()),
                }
            }
        };
        let max_attempts = self.policy.max_attempts.max(1);
        let mut last = String::from("none");
        let mut attempts = 0u32;
        while attempts < max_attempts {
            let mut budget = self.policy.attempt_timeout;
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Delivery::GaveUp {
                        reason: GiveUpReason::DeadlinePassed { attempts, last },
                    };
                }
                budget = budget.min(left);
            }
            attempts += 1;
            let mut req = Request::builder()
                .method(Method::POST)
                .uri(uri.clone())
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::ACCEPT, "application/json");
            if let Some(auth) = &auth {
                req = req.header(header::AUTHORIZATION, auth.clone());
            }
            if let Some(event) = &event {
                req = req.header(EVENT_ID_HEADER, event.clone());
            }
            let req = match req.body(Full::new(body.clone())) {
                Ok(req) => req,
                Err(e) => {
                    return Delivery::GaveUp {
                        reason: GiveUpReason::Unsendable(e.to_string()),
                    }
                }
            };
            match tokio::time::timeout(budget, self.http.request(req)).await {
                Ok(Ok(resp)) => {
                    let status = resp.status();
                    // The body is not needed; dropping the response frees the connection
                    // (hyper discards an unread body of a keep-alive connection).
                    drop(resp);
                    match classify(status) {
                        StatusClass::Success => {
                            return Delivery::Delivered {
                                status: status.as_u16(),
                                attempts,
                            }
                        }
                        StatusClass::Final => {
                            return Delivery::GaveUp {
                                reason: GiveUpReason::Refused {
                                    status: status.as_u16(),
                                },
                            }
                        }
                        StatusClass::Retry => last = format!("HTTP {}", status.as_u16()),
                    }
                }
                Ok(Err(e)) => last = format!("transport: {}", outbound::error_chain(&e)),
                Err(_) => last = format!("no answer within {budget:?}"),
            }
            if attempts >= max_attempts {
                break;
            }
            let wait = self.policy.backoff(attempts);
            if let Some(deadline) = deadline {
                if Instant::now() + wait >= deadline {
                    return Delivery::GaveUp {
                        reason: GiveUpReason::DeadlinePassed { attempts, last },
                    };
                }
            }
            tokio::time::sleep(wait).await;
        }
        Delivery::GaveUp {
            reason: GiveUpReason::AttemptsExhausted { attempts, last },
        }
    }
}

/// Parse an absolute `https://` URL (`http://` when allowed).
fn parse_uri(url: &str, allow_http: bool) -> Result<Uri, GiveUpReason> {
    let uri: Uri = url
        .parse()
        .map_err(|e| GiveUpReason::Unsendable(format!("{e}")))?;
    outbound::check_scheme(&uri, allow_http).map_err(GiveUpReason::Unsendable)?;
    Ok(uri)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn success_retry_and_final_statuses_are_told_apart() {
        assert_eq!(classify(StatusCode::OK), StatusClass::Success);
        assert_eq!(classify(StatusCode::CREATED), StatusClass::Success);
        assert_eq!(classify(StatusCode::NO_CONTENT), StatusClass::Success);
        assert_eq!(
            classify(StatusCode::SERVICE_UNAVAILABLE),
            StatusClass::Retry
        );
        assert_eq!(
            classify(StatusCode::INTERNAL_SERVER_ERROR),
            StatusClass::Retry
        );
        assert_eq!(classify(StatusCode::TOO_MANY_REQUESTS), StatusClass::Retry);
        assert_eq!(classify(StatusCode::REQUEST_TIMEOUT), StatusClass::Retry);
        assert_eq!(classify(StatusCode::FORBIDDEN), StatusClass::Final);
        assert_eq!(classify(StatusCode::BAD_REQUEST), StatusClass::Final);
        assert_eq!(classify(StatusCode::NOT_FOUND), StatusClass::Final);
        assert_eq!(classify(StatusCode::FOUND), StatusClass::Final);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(1),
        };
        let waits: Vec<u128> = (1..=6).map(|n| p.backoff(n).as_millis()).collect();
        assert_eq!(waits, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn https_urls_are_accepted_and_http_only_where_allowed() {
        assert!(parse_uri("https://kc.example/cb", false).is_ok());
        assert!(matches!(
            parse_uri("http://127.0.0.1:8080/cb", false),
            Err(GiveUpReason::Unsendable(_))
        ));
        assert!(parse_uri("http://127.0.0.1:8080/cb", true).is_ok());
        assert!(parse_uri("/relative", true).is_err());
        assert!(parse_uri("not a url", true).is_err());
    }

    #[tokio::test]
    async fn an_expired_deadline_gives_up_without_trying() {
        let client =
            CallbackClient::new(RetryPolicy::default(), &OutboundSettings::default()).unwrap();
        let out = client
            .post_json(
                "https://127.0.0.1:9/cb",
                None,
                Bytes::from_static(b"{}"),
                Some(Instant::now()),
            )
            .await;
        assert_eq!(
            out,
            Delivery::GaveUp {
                reason: GiveUpReason::DeadlinePassed {
                    attempts: 0,
                    last: "none".into()
                }
            }
        );
    }
}
