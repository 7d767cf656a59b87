//! The gateway as an HTTPS client: the callback client every delivery goes through (native
//! callbacks and Keycloak callbacks, from the outbox) against a real rustls receiver with the
//! test-only certificates of `tests/fixtures/tls`. A receiver whose certificate chains to the
//! configured CA gets the callback; one the client does not trust is refused with the TLS
//! reason in the failure; plain http is refused unless allowed.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use gateway::api::jwt::{JwksSource, JwtConfig, JwtVerifier};
use gateway::callback::{CallbackClient, Delivery, GiveUpReason, RetryPolicy};
use gateway::outbound::OutboundSettings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

/// One request as the receiver saw it.
#[derive(Debug)]
struct Received {
    head: String,
    body: String,
}

/// An HTTPS receiver on a free loopback port answering every POST with 204; what it received
/// comes out of the channel.
async fn https_receiver() -> (u16, mpsc::UnboundedReceiver<Received>) {
    https_server("HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".into())
        .await
}

/// An HTTPS server on a free loopback port answering every request with `response`.
async fn https_server(response: String) -> (u16, mpsc::UnboundedReceiver<Received>) {
    let config =
        gateway::tls::tls_server_config(&fixture("server.pem"), &fixture("server.key")).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, tx, response) = (acceptor.clone(), tx.clone(), response.clone());
            tokio::spawn(async move {
                // A client that refuses our certificate ends the handshake: nothing to serve.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut raw = Vec::new();
                let mut buf = [0u8; 4096];
                let (head, body) = loop {
                    let n = tls.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    raw.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&raw).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if body.len() >= length {
                            break (head.to_owned(), body.to_owned());
                        }
                    }
                };
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
                let _ = tx.send(Received { head, body });
            });
        }
    });
    (port, rx)
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 2,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(50),
        attempt_timeout: Duration::from_secs(2),
    }
}

fn trusting(ca: &str) -> CallbackClient {
    CallbackClient::new(
        policy(),
        &OutboundSettings {
            ca_files: vec![fixture(ca)],
            allow_http: false,
            without_system_roots: true,
            targets: Vec::new(),
        },
    )
    .unwrap()
}

fn deadline() -> Option<Instant> {
    Some(Instant::now() + Duration::from_secs(10))
}

#[tokio::test]
async fn a_callback_reaches_an_https_receiver_whose_certificate_chains_to_the_configured_ca() {
    let (port, mut received) = https_receiver().await;
    let out = trusting("ca.pem")
        .post_event(
            &format!("https://localhost:{port}/cb"),
            Some("kc-token"),
            Some("a1:callback"),
            Bytes::from_static(br#"{"status":"approved"}"#),
            deadline(),
        )
        .await;
    assert_eq!(
        out,
        Delivery::Delivered {
            status: 204,
            attempts: 1
        }
    );
    let got = tokio::time::timeout(Duration::from_secs(5), received.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(got.head.starts_with("POST /cb HTTP/1.1"), "{got:?}");
    let head = got.head.to_ascii_lowercase();
    assert!(head.contains("authorization: bearer kc-token"), "{got:?}");
    assert!(head.contains("event-id: a1:callback"), "{got:?}");
    assert_eq!(got.body, r#"{"status":"approved"}"#);
}

#[tokio::test]
async fn a_receiver_the_client_does_not_trust_is_refused_with_the_tls_reason() {
    let (port, mut received) = https_receiver().await;
    let out = trusting("other-ca.pem")
        .post_json(
            &format!("https://localhost:{port}/cb"),
            None,
            Bytes::from_static(b"{}"),
            deadline(),
        )
        .await;
    match out {
        Delivery::GaveUp {
            reason: GiveUpReason::AttemptsExhausted { attempts, last },
        } => {
            assert_eq!(attempts, 2);
            assert!(
                last.to_ascii_lowercase().contains("certificate"),
                "the failure should name the certificate problem: {last}"
            );
        }
        other => panic!("an untrusted receiver must not get the callback: {other:?}"),
    }
    assert!(received.try_recv().is_err(), "nothing may reach it");
}

#[tokio::test]
async fn plain_http_is_refused_unless_the_configuration_allows_it() {
    let out = trusting("ca.pem")
        .post_json(
            "http://127.0.0.1:9/cb",
            None,
            Bytes::from_static(b"{}"),
            deadline(),
        )
        .await;
    match out {
        Delivery::GaveUp {
            reason: GiveUpReason::Unsendable(why),
        } => assert!(why.contains("plain http"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_realm_keys_are_fetched_over_https_and_an_untrusted_server_is_refused() {
    let doc = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../gateway/tests/fixtures/keycloak/realm.jwks.json"),
    )
    .unwrap();
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{doc}",
        doc.len()
    );
    let (port, _) = https_server(response).await;
    let url = format!("https://localhost:{port}/realms/r/protocol/openid-connect/certs");
    let settings = |ca: &str| OutboundSettings {
        ca_files: vec![fixture(ca)],
        allow_http: false,
        without_system_roots: true,
        targets: Vec::new(),
    };
    let config = || JwtConfig::for_realm("https://localhost/realms/r");
    let verifier = JwtVerifier::load(config(), JwksSource::Url(url.clone()), &settings("ca.pem"))
        .await
        .unwrap();
    assert!(verifier.key_count() >= 1);
    let refused = JwtVerifier::load(config(), JwksSource::Url(url), &settings("other-ca.pem"))
        .await
        .expect_err("keys from a server the gateway does not trust were accepted");
    assert!(
        refused
            .to_string()
            .to_ascii_lowercase()
            .contains("certificate"),
        "{refused}"
    );
    let plain = JwtVerifier::load(
        config(),
        JwksSource::Url("http://127.0.0.1:9/certs".into()),
        &settings("ca.pem"),
    )
    .await
    .expect_err("http JWKS accepted without allow_http");
    assert!(refused.to_string().contains("fetching"), "{refused}");
    assert!(plain.to_string().contains("plain http"), "{plain}");
}

/// A client whose only trust for `host` is the CA file `ca`; `shared` is trusted for every
/// other host.
fn trusting_per_host(shared: &str, host: &str, ca: &str) -> CallbackClient {
    CallbackClient::new(
        policy(),
        &OutboundSettings {
            ca_files: vec![fixture(shared)],
            allow_http: false,
            without_system_roots: true,
            targets: vec![gateway::outbound::TargetTrust {
                host: host.into(),
                ca_file: fixture(ca),
            }],
        },
    )
    .unwrap()
}

#[tokio::test]
async fn a_target_with_its_own_ca_is_reached_through_it_and_the_shared_roots_do_not_stand_in() {
    // Its own CA is the one that signed the receiver: reached, though the shared roots
    // (other-ca) would refuse it.
    let (port, mut received) = https_receiver().await;
    let out = trusting_per_host("other-ca.pem", "LOCALHOST", "ca.pem")
        .post_json(
            &format!("https://localhost:{port}/cb"),
            None,
            Bytes::from_static(b"{}"),
            deadline(),
        )
        .await;
    assert_eq!(
        out,
        Delivery::Delivered {
            status: 204,
            attempts: 1
        }
    );
    assert!(received.recv().await.is_some());

    // Its own CA is another: refused, though the shared roots (ca) would accept it.
    let (port, mut received) = https_receiver().await;
    let out = trusting_per_host("ca.pem", "localhost", "other-ca.pem")
        .post_json(
            &format!("https://localhost:{port}/cb"),
            None,
            Bytes::from_static(b"{}"),
            deadline(),
        )
        .await;
    match out {
        Delivery::GaveUp {
            reason: GiveUpReason::AttemptsExhausted { last, .. },
        } => assert!(
            last.to_ascii_lowercase().contains("certificate"),
            "the failure should name the certificate problem: {last}"
        ),
        other => panic!("the host's own CA did not sign it: {other:?}"),
    }
    assert!(received.try_recv().is_err(), "nothing may reach it");

    // Another host is still judged by the shared roots: the receiver's certificate is for
    // localhost and 127.0.0.1, so reach it by address with the target set for a name.
    let (port, mut received) = https_receiver().await;
    let out = trusting_per_host("ca.pem", "sso.example", "other-ca.pem")
        .post_json(
            &format!("https://127.0.0.1:{port}/cb"),
            None,
            Bytes::from_static(b"{}"),
            deadline(),
        )
        .await;
    assert_eq!(
        out,
        Delivery::Delivered {
            status: 204,
            attempts: 1
        },
        "a host without its own trust uses the shared roots"
    );
    assert!(received.recv().await.is_some());
}
