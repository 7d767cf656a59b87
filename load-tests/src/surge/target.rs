//! The gateway as the driver sees it: start an authorization, long-poll its view. [`Target`] is
//! the seam; [`HttpTarget`] speaks the native north API (docs/api.md) over keep-alive
//! HTTP/1.1 (hyper-util's pooled client), to an in-process gateway on loopback or a running one.
//! [`scrape`] reads a Prometheus text endpoint for the SMPP figures.

use std::time::Duration;

use axum::http::{header, Method, Request, StatusCode, Uri};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

/// One start request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartParams {
    /// International digits, no `+`.
    pub msisdn: String,
    pub loa3: bool,
    pub client_name: String,
    pub expiry_secs: Option<u64>,
    /// Where the gateway POSTs the terminal view.
    pub callback_url: Option<String>,
}

/// What the gateway answered a start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartOutcome {
    /// 201 (or 200 for a repeated idempotency key): the authorization's id.
    Started { id: String },
    /// Refused: the JSON `error` code (`overloaded`, `already_in_progress` ...), or
    /// `http_<status>` when the body had none.
    Refused { code: String },
}

/// The part of an authorization's view the driver needs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct Observed {
    /// `pending` or `terminal`.
    pub state: String,
    /// Pending step (`created`, `routed`, `prompted`, `answered`).
    pub step: Option<String>,
    /// Terminal status.
    pub status: Option<String>,
    pub reason: Option<String>,
    pub gateway_ms: Option<u64>,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub operator: Option<String>,
}

impl Observed {
    pub fn is_terminal(&self) -> bool {
        self.state == "terminal"
    }
}

/// A transport or protocol failure talking to the gateway.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("bad gateway URL `{0}`")]
    Url(String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("unexpected answer {status}: {body}")]
    Unexpected { status: u16, body: String },
    #[error("answer is not the expected JSON: {0}")]
    Json(String),
}

/// The system under test.
pub trait Target: Send + Sync + 'static {
    fn start(&self, params: StartParams) -> BoxFuture<'_, Result<StartOutcome, TargetError>>;
    /// The view, long-polled for up to `wait` (whole seconds; 0 answers at once).
    fn poll<'a>(
        &'a self,
        id: &'a str,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Observed, TargetError>>;
}

/// The native API over HTTP/1.1.
#[derive(Clone)]
pub struct HttpTarget {
    base: String,
    token: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl std::fmt::Debug for HttpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTarget")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// A pooled keep-alive client; each long-poll holds one connection, so the pool is wide.
pub fn http_client() -> Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(4096)
        .build(connector)
}

impl HttpTarget {
    /// `base` like `http://127.0.0.1:8080` (no trailing path); `token` the bearer token.
    pub fn new(base: &str, token: &str) -> Result<Self, TargetError> {
        let base = base.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") || base.parse::<Uri>().is_err() {
            return Err(TargetError::Url(base));
        }
        Ok(Self {
            base,
            token: token.to_owned(),
            client: http_client(),
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(StatusCode, Bytes), TargetError> {
        let uri = format!("{}{}", self.base, path);
        let mut req = Request::builder()
            .method(method)
            .uri(&uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|_| TargetError::Url(uri))?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| TargetError::Http(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| TargetError::Http(e.to_string()))?
            .to_bytes();
        Ok((status, bytes))
    }
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

/// The JSON body of a start.
pub fn start_body(p: &StartParams) -> String {
    let mut v = serde_json::json!({
        "msisdn": format!("+{}", p.msisdn),
        "loa": if p.loa3 { 3 } else { 2 },
        "client_name": p.client_name,
    });
    if let Some(obj) = v.as_object_mut() {
        if let Some(e) = p.expiry_secs {
            obj.insert("expiry_secs".into(), e.into());
        }
        if let Some(url) = &p.callback_url {
            obj.insert("callback_url".into(), url.as_str().into());
        }
    }
    v.to_string()
}

/// A refusal's code from its status and body.
pub fn refusal_code(status: StatusCode, body: &[u8]) -> String {
    serde_json::from_slice::<ErrorBody>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| format!("http_{}", status.as_u16()))
}

impl Target for HttpTarget {
    fn start(&self, params: StartParams) -> BoxFuture<'_, Result<StartOutcome, TargetError>> {
        Box::pin(async move {
            let (status, body) = self
                .send(
                    Method::POST,
                    "/v1/authorizations",
                    Some(start_body(&params)),
                )
                .await?;
            if status.is_success() {
                let v: IdOnly =
                    serde_json::from_slice(&body).map_err(|e| TargetError::Json(e.to_string()))?;
                Ok(StartOutcome::Started { id: v.id })
            } else {
                Ok(StartOutcome::Refused {
                    code: refusal_code(status, &body),
                })
            }
        })
    }

    fn poll<'a>(
        &'a self,
        id: &'a str,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Observed, TargetError>> {
        Box::pin(async move {
            let path = format!("/v1/authorizations/{id}?wait={}", wait.as_secs());
            let (status, body) = self.send(Method::GET, &path, None).await?;
            if status != StatusCode::OK {
                return Err(TargetError::Unexpected {
                    status: status.as_u16(),
                    body: String::from_utf8_lossy(&body).chars().take(200).collect(),
                });
            }
            serde_json::from_slice(&body).map_err(|e| TargetError::Json(e.to_string()))
        })
    }
}

/// Several gateway nodes behind one [`Target`]: starts go round the nodes in turn, and an
/// authorization is polled on the node its id hashes to, so most polls ask a node that did not
/// start it (what a load balancer in front of the nodes does).
pub struct MultiTarget {
    nodes: Vec<HttpTarget>,
    next: std::sync::atomic::AtomicUsize,
}

impl MultiTarget {
    /// One node per API address.
    pub fn new(addrs: &[std::net::SocketAddr], token: &str) -> Result<Self, TargetError> {
        if addrs.is_empty() {
            return Err(TargetError::Url("no gateway node".into()));
        }
        let nodes = addrs
            .iter()
            .map(|a| HttpTarget::new(&format!("http://{a}"), token))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            nodes,
            next: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    fn polled_on(&self, id: &str) -> &HttpTarget {
        let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        &self.nodes[(h % self.nodes.len() as u64) as usize]
    }
}

impl Target for MultiTarget {
    fn start(&self, params: StartParams) -> BoxFuture<'_, Result<StartOutcome, TargetError>> {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.nodes.len();
        self.nodes[i].start(params)
    }

    fn poll<'a>(
        &'a self,
        id: &'a str,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Observed, TargetError>> {
        self.polled_on(id).poll(id, wait)
    }
}

/// Fetches a Prometheus text page (`http://host:port/metrics`).
pub async fn scrape(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
) -> Result<String, TargetError> {
    let req = Request::builder()
        .uri(url)
        .body(Full::new(Bytes::new()))
        .map_err(|_| TargetError::Url(url.to_owned()))?;
    let resp = client
        .request(req)
        .await
        .map_err(|e| TargetError::Http(e.to_string()))?;
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| TargetError::Http(e.to_string()))?
        .to_bytes();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Sum of the samples of metric `name` whose labels contain every `label="value"` pair of
/// `labels`; `None` when none is present.
pub fn metric_sum_where(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    let kept: String = text
        .lines()
        .filter(|l| l.starts_with(name) && wanted.iter().all(|w| l.contains(w.as_str())))
        .collect::<Vec<_>>()
        .join("\n");
    metric_sum(&kept, name)
}

/// Sum of every sample of metric `name` (any labels) in a Prometheus text page; `None` when
/// the metric is absent.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = false;
    let mut sum = 0.0;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let value = if rest.starts_with('{') {
            rest.rfind('}').map(|i| &rest[i + 1..])
        } else {
            Some(rest)
        };
        if let Some(v) = value
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
        {
            sum += v;
            found = true;
        }
    }
    found.then_some(sum)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn start_body_has_the_plus_and_the_loa() {
        let b = start_body(&StartParams {
            msisdn: "48600000001".into(),
            loa3: true,
            client_name: "Surge".into(),
            expiry_secs: Some(15),
            callback_url: Some("http://127.0.0.1:9/callback".into()),
        });
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["msisdn"], "+48600000001");
        assert_eq!(v["loa"], 3);
        assert_eq!(v["expiry_secs"], 15);
        assert_eq!(v["callback_url"], "http://127.0.0.1:9/callback");
    }

    #[test]
    fn refusal_code_comes_from_the_json_body_or_the_status() {
        assert_eq!(
            refusal_code(
                StatusCode::SERVICE_UNAVAILABLE,
                br#"{"error":"overloaded","message":"x"}"#
            ),
            "overloaded"
        );
        assert_eq!(refusal_code(StatusCode::BAD_GATEWAY, b"<html>"), "http_502");
    }

    #[test]
    fn terminal_view_parses() {
        let v: Observed = serde_json::from_str(
            r#"{"id":"x","state":"terminal","status":"approved","reason":"user_approved",
                "loa_requested":"2","gateway_ms":412,"created_at_ms":1}"#,
        )
        .unwrap();
        assert!(v.is_terminal());
        assert_eq!(v.status.as_deref(), Some("approved"));
        assert_eq!(v.gateway_ms, Some(412));
    }

    #[test]
    fn metric_sum_adds_every_labelled_sample_and_skips_longer_names() {
        let text = "# TYPE smpp_window_occupancy gauge\n\
            smpp_window_occupancy{operator=\"a\",bind=\"0\"} 3\n\
            smpp_window_occupancy{operator=\"a\",bind=\"1\"} 4\n\
            smpp_window_occupancy_other 100\n\
            smpp_throttles_total{operator=\"a\"} 2\n";
        assert_eq!(metric_sum(text, "smpp_window_occupancy"), Some(7.0));
        assert_eq!(metric_sum(text, "smpp_throttles_total"), Some(2.0));
        assert_eq!(metric_sum(text, "smpp_missing"), None);
    }

    #[test]
    fn only_plain_http_urls_are_taken() {
        assert!(HttpTarget::new("http://127.0.0.1:8080/", "t").is_ok());
        assert!(HttpTarget::new("ftp://x", "t").is_err());
    }
}
