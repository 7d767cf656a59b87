//! The gateway as an HTTP client (native callbacks, Keycloak callbacks, the realm's JWKS):
//! HTTP/1.1 over rustls, trusting the system's roots plus the CA files the configuration adds,
//! with plain `http://` refused unless the configuration allows it (tests, a loopback sidecar).
//!
//! One place builds the connector, so every outgoing call gets the same trust and the same
//! scheme rule; [`check_scheme`] is the rule as a plain function, for the callers that refuse a
//! URL before they queue anything.

use std::path::PathBuf;
use std::time::Duration;

use axum::http::Uri;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::tls::{crypto_provider, load_pem_certs, TlsSetupError};

/// Trust and scheme settings of every outgoing HTTP call (`[outbound]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundSettings {
    /// PEM files of CA certificates trusted beside the system's roots (a private CA of the
    /// OIDC provider or of a relying party).
    pub ca_files: Vec<PathBuf>,
    /// Whether plain `http://` targets are allowed (off: only `https://`).
    pub allow_http: bool,
    /// Skip the system's roots (trust only `ca_files`): for tests that must prove a certificate
    /// from an unknown CA is refused on a machine whose roots are not under their control.
    pub without_system_roots: bool,
}

/// The client type every outgoing call uses.
pub type OutboundClient<B> = Client<HttpsConnector<HttpConnector>, B>;

/// Builds a pooled client under `settings`; `connect_timeout` bounds the TCP connect. Fails
/// only when a configured CA file cannot be read or holds no certificate.
pub fn client<B>(
    settings: &OutboundSettings,
    connect_timeout: Duration,
) -> Result<OutboundClient<B>, TlsSetupError>
where
    B: axum::body::HttpBody + Send + 'static,
    B::Data: Send,
{
    client_with_roots(roots(settings)?, settings.allow_http, connect_timeout)
}

/// The trust anchors `settings` ask for.
fn roots(settings: &OutboundSettings) -> Result<RootCertStore, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    if !settings.without_system_roots {
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::warn!(%error, "a system root certificate could not be read");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        tracing::debug!(added, ignored, "system roots loaded for outgoing HTTPS");
    }
    for file in &settings.ca_files {
        for cert in load_pem_certs(file)? {
            roots.add(cert)?;
        }
    }
    Ok(roots)
}

/// A client trusting `roots`.
fn client_with_roots<B>(
    roots: RootCertStore,
    allow_http: bool,
    connect_timeout: Duration,
) -> Result<OutboundClient<B>, TlsSetupError>
where
    B: axum::body::HttpBody + Send + 'static,
    B::Data: Send,
{
    let config = ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    let builder = HttpsConnectorBuilder::new().with_tls_config(config);
    let connector = if allow_http {
        builder.https_or_http().enable_http1().wrap_connector(http)
    } else {
        builder.https_only().enable_http1().wrap_connector(http)
    };
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// An error with its causes, `outer: inner: innermost`: the client's own error says only
/// "client error (Connect)", the cause says which certificate was refused and why.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    text
}

/// Whether `uri` may be called: absolute, with a host, `https://` (or `http://` when allowed).
pub fn check_scheme(uri: &Uri, allow_http: bool) -> Result<(), String> {
    match (uri.scheme_str(), uri.host()) {
        (Some("https"), Some(_)) => Ok(()),
        (Some("http"), Some(_)) if allow_http => Ok(()),
        (Some("http"), Some(_)) => Err(
            "plain http:// is refused (https:// only; `[outbound] allow_http = true` allows it)"
                .into(),
        ),
        _ => Err("the URL must be absolute https://".into()),
    }
}

/// Whether `url` is allowed by a client's callback allow-list: an entry that is a URL prefix
/// (`https://rp.example/cb/`) must start the URL; a bare host name (`rp.example`) must equal its
/// host. An empty list allows nothing.
pub fn callback_allowed(url: &Uri, allow: &[String]) -> bool {
    let text = url.to_string();
    let host = url.host().unwrap_or_default();
    allow.iter().any(|entry| {
        if entry.contains("://") {
            // A prefix that ends mid-host must not match a longer host: `https://rp.example`
            // must not allow `https://rp.example.evil/`.
            text.starts_with(entry.as_str())
                && (entry.ends_with('/')
                    || matches!(
                        text.as_bytes().get(entry.len()),
                        None | Some(b'/' | b':' | b'?')
                    ))
        } else {
            host.eq_ignore_ascii_case(entry)
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn https_is_allowed_and_http_only_when_the_setting_says_so() {
        assert!(check_scheme(&uri("https://rp.example/cb"), false).is_ok());
        assert!(check_scheme(&uri("http://rp.example/cb"), false).is_err());
        assert!(check_scheme(&uri("http://127.0.0.1:9/cb"), true).is_ok());
        assert!(check_scheme(&uri("/relative"), true).is_err());
        assert!(check_scheme(&uri("ftp://rp.example/x"), true).is_err());
    }

    #[test]
    fn allow_list_entries_are_prefixes_or_hosts_and_a_prefix_never_matches_a_longer_host() {
        let allow = vec![
            "https://rp.example/callbacks/".to_owned(),
            "https://other.example".to_owned(),
            "bank.example".to_owned(),
        ];
        assert!(callback_allowed(
            &uri("https://rp.example/callbacks/1"),
            &allow
        ));
        assert!(!callback_allowed(&uri("https://rp.example/admin"), &allow));
        assert!(callback_allowed(&uri("https://other.example/x"), &allow));
        assert!(callback_allowed(
            &uri("https://other.example:8443/x"),
            &allow
        ));
        assert!(!callback_allowed(
            &uri("https://other.example.evil/x"),
            &allow
        ));
        assert!(callback_allowed(&uri("https://BANK.example/any"), &allow));
        assert!(!callback_allowed(
            &uri("https://169.254.169.254/latest"),
            &allow
        ));
        assert!(!callback_allowed(
            &uri("https://rp.example/callbacks/1"),
            &[]
        ));
    }
}
