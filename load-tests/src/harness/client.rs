//! [`ApiClient`]: the gateway's native north API (docs/api.md) for tests, over keep-alive
//! HTTP/1.1 on hyper-util's pooled client. Every answer comes back whole (status, headers,
//! JSON body) so a test can assert on exactly what the API specifies.

use std::time::Duration;

use anyhow::Context;
use axum::http::{header, Method, Request};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use serde_json::Value;

use crate::surge::target::http_client;

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The JSON body (`Null` when there was none or it was not JSON).
    pub body: Value,
}

impl ApiResponse {
    /// A header's value, by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A client of one gateway, with one bearer token.
#[derive(Clone)]
pub struct ApiClient {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    token: String,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// A client of the API at `addr` (`host:port`, plain HTTP) with `token`.
    pub fn new(addr: std::net::SocketAddr, token: impl Into<String>) -> Self {
        Self {
            client: http_client(),
            base: format!("http://{addr}"),
            token: token.into(),
        }
    }

    /// One request with a JSON content type and the client's bearer token, unless `headers`
    /// carry an `Authorization` of their own (a Keycloak token, another scheme).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> anyhow::Result<ApiResponse> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::CONTENT_TYPE, "application/json");
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        {
            req = req.header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = req.body(Full::new(body)).context("building the request")?;
        let resp = self.client.request(req).await.context("HTTP request")?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .context("reading the body")?
            .to_bytes();
        Ok(ApiResponse {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        })
    }

    /// `POST /v1/authorizations`, with an `Idempotency-Key` when given.
    pub async fn start(
        &self,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<ApiResponse> {
        let headers: Vec<(&str, &str)> = idempotency_key
            .map(|k| vec![("idempotency-key", k)])
            .unwrap_or_default();
        self.request(Method::POST, "/v1/authorizations", &headers, Some(body))
            .await
    }

    /// `GET /v1/authorizations/{id}?wait=`, long-polling up to `wait`.
    pub async fn get(&self, id: &str, wait: Duration) -> anyhow::Result<ApiResponse> {
        let path = format!("/v1/authorizations/{id}?wait={}", wait.as_secs());
        self.request(Method::GET, &path, &[], None).await
    }

    /// `POST /v1/authorizations/{id}/cancel`.
    pub async fn cancel(&self, id: &str) -> anyhow::Result<ApiResponse> {
        let path = format!("/v1/authorizations/{id}/cancel");
        self.request(Method::POST, &path, &[], None).await
    }

    /// Long-polls until the authorization is terminal; its view. A non-200 answer is an error.
    /// The caller bounds the time (for example with `tokio::time::timeout`).
    pub async fn until_terminal(&self, id: &str) -> anyhow::Result<Value> {
        loop {
            let r = self.get(id, Duration::from_secs(30)).await?;
            anyhow::ensure!(r.status == 200, "GET {id}: {} {}", r.status, r.body);
            if r.body["state"] == "terminal" {
                return Ok(r.body);
            }
        }
    }
}

/// A start body as the tests and the examples in docs/api.md write it.
pub fn start_body(msisdn: &str, loa: u8, expiry_secs: u64) -> Value {
    serde_json::json!({
        "msisdn": msisdn,
        "loa": loa,
        "client_name": "Portal",
        "binding_message": "AB12",
        "expiry_secs": expiry_secs,
    })
}
