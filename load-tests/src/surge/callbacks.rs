//! The relying party's side of callbacks: a receiver on loopback the gateway POSTs terminal
//! views to, remembering what each authorization's callbacks said, so a run can compare them
//! with what GET says.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::target::Observed;

/// What one callback said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackSeen {
    pub event_id: String,
    pub status: String,
    pub reason: String,
}

#[derive(Deserialize)]
struct Body {
    id: String,
    #[serde(default)]
    event_id: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    gateway_ms: Option<u64>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    operator: Option<String>,
}

type Calls = Arc<Mutex<HashMap<String, Vec<CallbackSeen>>>>;

/// Told of every well-formed callback: the authorization id and its view.
pub type CallbackSink = Arc<dyn Fn(&str, Observed) + Send + Sync>;

/// What the receiver does with a callback: remember it (verification), hand it on (following
/// by callback), or both.
#[derive(Clone)]
struct Handling {
    calls: Option<Calls>,
    malformed: Arc<Mutex<u64>>,
    sink: Arc<std::sync::OnceLock<CallbackSink>>,
}

/// The receiver; stops when dropped.
pub struct CallbackReceiver {
    addr: SocketAddr,
    calls: Calls,
    malformed: Arc<Mutex<u64>>,
    sink: Arc<std::sync::OnceLock<CallbackSink>>,
    stop: CancellationToken,
}

impl std::fmt::Debug for CallbackReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackReceiver")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl CallbackReceiver {
    /// A receiver that remembers every callback (for verification).
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(true).await
    }

    /// A receiver that remembers callbacks only when `record` (a run following a million
    /// authorizations by callback keeps nothing per callback but what [`Self::set_sink`] does).
    pub async fn start_with(record: bool) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the callback receiver")?;
        let addr = listener.local_addr()?;
        let calls: Calls = Arc::default();
        let malformed = Arc::new(Mutex::new(0u64));
        let sink = Arc::new(std::sync::OnceLock::new());
        let app = Router::new()
            .route("/callback", post(receive))
            .with_state(Handling {
                calls: record.then(|| calls.clone()),
                malformed: malformed.clone(),
                sink: sink.clone(),
            });
        let stop = CancellationToken::new();
        let until = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { until.cancelled().await })
                .await;
        });
        Ok(Self {
            addr,
            calls,
            malformed,
            sink,
            stop,
        })
    }

    /// Hands every well-formed callback to `sink` from now on (set once).
    pub fn set_sink(&self, sink: CallbackSink) {
        let _ = self.sink.set(sink);
    }

    /// The URL to give as `callback_url`.
    pub fn url(&self) -> String {
        format!("http://{}/callback", self.addr)
    }

    /// Callbacks received so far, by authorization id.
    pub fn calls(&self) -> HashMap<String, Vec<CallbackSeen>> {
        lock(&self.calls).clone()
    }

    /// Whether every id in `ids` has had at least one callback.
    pub fn has_all<'a>(&self, mut ids: impl Iterator<Item = &'a String>) -> bool {
        let calls = lock(&self.calls);
        ids.all(|id| calls.contains_key(id))
    }

    /// Bodies that were not a terminal view.
    pub fn malformed(&self) -> u64 {
        *lock(&self.malformed)
    }
}

impl Drop for CallbackReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn receive(State(handling): State<Handling>, body: axum::body::Bytes) -> StatusCode {
    match serde_json::from_slice::<Body>(&body) {
        Ok(b) => {
            if let Some(sink) = handling.sink.get() {
                let view = Observed {
                    state: b.state.clone().unwrap_or_default(),
                    step: None,
                    status: b.status.clone(),
                    reason: b.reason.clone(),
                    gateway_ms: b.gateway_ms,
                    channel: b.channel.clone(),
                    operator: b.operator.clone(),
                };
                sink(&b.id, view);
            }
            if let Some(calls) = &handling.calls {
                let seen = CallbackSeen {
                    event_id: b.event_id,
                    status: b.status.unwrap_or_default(),
                    reason: b.reason.unwrap_or_default(),
                };
                lock(calls).entry(b.id).or_default().push(seen);
            }
            StatusCode::OK
        }
        Err(_) => {
            *lock(&handling.malformed) += 1;
            // A 4xx the gateway does not retry: it would only send the same body again.
            StatusCode::UNPROCESSABLE_ENTITY
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::Request;
    use bytes::Bytes;
    use http_body_util::Full;

    async fn post(url: &str, body: &str) -> u16 {
        let client = crate::surge::target::http_client();
        let req = Request::post(url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        client.request(req).await.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn callbacks_are_kept_by_id_and_bad_bodies_refused() {
        let r = CallbackReceiver::start().await.unwrap();
        let body = r#"{"event_id":"a:callback","id":"a","state":"terminal","status":"approved","reason":"user_approved"}"#;
        assert_eq!(post(&r.url(), body).await, 200);
        assert_eq!(post(&r.url(), body).await, 200);
        assert_eq!(post(&r.url(), "not json").await, 422);
        let calls = r.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls["a"].len(), 2);
        assert_eq!(
            calls["a"][0],
            CallbackSeen {
                event_id: "a:callback".into(),
                status: "approved".into(),
                reason: "user_approved".into(),
            }
        );
        assert!(r.has_all(["a".to_owned()].iter()));
        assert!(!r.has_all(["a".to_owned(), "b".to_owned()].iter()));
        assert_eq!(r.malformed(), 1);
    }
}
