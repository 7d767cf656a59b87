//! The gateway configured for TLS on both sides, from its TOML keys: the north API over HTTPS
//! (`[api.tls]`) and its bind to the simulated SMSC over SMPP/TLS (`tls_ca_file`,
//! `tls_server_name`), with the test-only certificates of `tests/fixtures/tls`. A rustls
//! client trusting the test CA gets `/healthz`, then polls `/readyz` until the TLS bind is up;
//! a plain HTTP request to the HTTPS port gets no HTTP answer.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gateway::config::GatewayConfig;
use load_tests::smsc::config::TlsServerSettings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

fn connector() -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in gateway::smpp::bind::load_pem_certs(&fixture("ca.pem")).unwrap() {
        roots.add(cert).unwrap();
    }
    let config =
        rustls::ClientConfig::builder_with_provider(gateway::smpp::bind::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// One HTTPS GET over a fresh connection; (status, body).
async fn https_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector().connect(name, tcp).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    // The server may close without close_notify after `Connection: close`; what came counts.
    let _ = tls.read_to_end(&mut raw).await;
    let text = String::from_utf8(raw).unwrap();
    let status = text[9..12].parse().unwrap();
    let (_, body) = text.split_once("\r\n\r\n").unwrap();
    (status, body.to_owned())
}

fn config(smsc: SocketAddr, dir: &tempfile::TempDir) -> GatewayConfig {
    let pepper = dir.path().join("pepper");
    std::fs::write(&pepper, "api tls test pepper of enough octets").unwrap();
    let text = format!(
        r#"
[api]
listen = "127.0.0.1:0"
[api.tls]
cert = "{cert}"
key = "{key}"
[[api.clients]]
id = "t"
token = "api-tls-token"

[[operators]]
name = "sim"
ranges = ["48600"]
service_code = "*123#"
sms_source_address = "4800"
[[operators.binds]]
address = "{smsc}"
system_id = "{system_id}"
password = "{password}"
tls_ca_file = "{ca}"
tls_server_name = "localhost"

[subscribers]
pepper_file = "{pepper}"
[subscribers.generate]
seed = 1
count = 10
msisdn_base = 48600000000
applet_share = 0.5

[store]
path = "{store}"
"#,
        cert = fixture("server.pem").display(),
        key = fixture("server.key").display(),
        ca = fixture("ca.pem").display(),
        system_id = common::SYSTEM_ID,
        password = common::PASSWORD,
        pepper = pepper.display(),
        store = dir.path().join("store.redb").display(),
    );
    GatewayConfig::from_toml(&text, &[]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_serves_https_and_the_bind_runs_over_tls_from_the_config() {
    let mut smsc_config = common::config();
    smsc_config.tls = Some(TlsServerSettings {
        cert_file: fixture("server.pem"),
        key_file: fixture("server.key"),
    });
    let smsc = common::start(smsc_config).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway::serve::start(config(smsc.local_addr(), &dir))
        .await
        .unwrap();

    let (status, body) = https_get(gw.api_addr, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"ok\""), "{body}");

    // Each poll is a full HTTPS round trip; the bind is normally up within a few of them.
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let (status, body) = https_get(gw.api_addr, "/readyz").await;
        if status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ready: {body}"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(smsc.stats().snapshot().binds, 1);

    // Plain HTTP on the HTTPS port: the handshake fails, no HTTP response comes back.
    let mut plain = TcpStream::connect(gw.api_addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut raw))
        .await
        .unwrap();
    assert!(!raw.starts_with(b"HTTP/"), "{raw:?}");

    gw.shutdown().await;
    smsc.shutdown().await;
}
