//! SMPP over TLS end to end through real sockets: the simulated SMSC serving TLS with the
//! test-only certificates of `tests/fixtures/tls`, the gateway's bind task connecting to it.
//! A bind trusting the right CA binds and gets a submission accepted; one trusting another
//! CA, or checking another name, never binds; a plain TCP ESME on the TLS port never binds.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use gateway::smpp::bind::{self, BindConfig, BindEvent, ConnectError, LinkDown, TlsClientSettings};
use gateway::smpp::session::{SessionConfig, SubmitRequest};
use load_tests::smsc::config::TlsServerSettings;
use load_tests::smsc::SmscHandle;
use rusmpp::pdus::{BindTransceiver, SubmitSm};
use rusmpp::types::COctetString;
use rusmpp::values::{InterfaceVersion, Npi, Ton};
use rusmpp::CommandId;
use tokio::sync::mpsc;
use tokio::time::timeout;

use common::{Esme, PASSWORD, SYSTEM_ID, WAIT};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

async fn tls_smsc() -> SmscHandle {
    let mut config = common::config();
    config.tls = Some(TlsServerSettings {
        cert_file: fixture("server.pem"),
        key_file: fixture("server.key"),
    });
    common::start(config).await
}

fn bind_config(smsc: &SmscHandle, ca: &str, server_name: &str) -> BindConfig {
    let session = SessionConfig {
        system_id: SYSTEM_ID.into(),
        password: PASSWORD.into(),
        ..SessionConfig::default()
    };
    let mut config =
        BindConfig::new(smsc.local_addr().to_string(), session).with_tls(TlsClientSettings {
            ca_file: fixture(ca),
            server_name: server_name.into(),
        });
    config.reconnect_initial = Duration::from_millis(20);
    config.reconnect_max = Duration::from_millis(100);
    config
}

async fn next_event(events: &mut mpsc::Receiver<BindEvent>) -> BindEvent {
    timeout(WAIT, events.recv())
        .await
        .expect("no bind event in time")
        .expect("bind task gone")
}

/// Runs a bind that must not get through: it reports two failed connects in a row (so it
/// backed off and retried) whose reason mentions the handshake, and never `Bound`.
async fn assert_never_binds(config: BindConfig) {
    let (tx, mut events) = mpsc::channel(16);
    let (handle, join) = bind::spawn(config, tx);
    for _ in 0..2 {
        match next_event(&mut events).await {
            BindEvent::Disconnected {
                reason: LinkDown::Connect(ConnectError::Tls(why)),
            } => assert!(why.contains("handshake"), "{why}"),
            other => panic!("expected a failed connect, got {other:?}"),
        }
    }
    handle.unbind().await.unwrap();
    loop {
        match next_event(&mut events).await {
            BindEvent::Stopped => break,
            BindEvent::Disconnected { .. } => {}
            other => panic!("expected the bind to stop, got {other:?}"),
        }
    }
    join.await.unwrap();
}

#[tokio::test]
async fn bind_over_tls_binds_and_a_submission_is_accepted() {
    let smsc = tls_smsc().await;
    let (tx, mut events) = mpsc::channel(16);
    let (handle, join) = bind::spawn(bind_config(&smsc, "ca.pem", "localhost"), tx);
    match next_event(&mut events).await {
        BindEvent::Bound { smsc_system_id } => assert_eq!(smsc_system_id, "SMSCSIM"),
        other => panic!("expected Bound, got {other:?}"),
    }
    let request = SubmitRequest {
        submit_sm: SubmitSm::builder()
            .source_addr(COctetString::from_str("4800").unwrap())
            .destination_addr(COctetString::from_str("48600100200").unwrap())
            .build(),
        deadline: None,
    };
    handle.submit(7, request).await.unwrap();
    match next_event(&mut events).await {
        BindEvent::Accepted { id, message_id } => {
            assert_eq!(id, 7);
            assert!(!message_id.is_empty());
        }
        other => panic!("expected Accepted, got {other:?}"),
    }
    assert_eq!(smsc.stats().snapshot().submits, 1);
    handle.unbind().await.unwrap();
    assert_eq!(next_event(&mut events).await, BindEvent::Stopped);
    join.await.unwrap();
    smsc.shutdown().await;
}

#[tokio::test]
async fn bind_trusting_another_ca_fails_to_connect_and_never_binds() {
    let smsc = tls_smsc().await;
    assert_never_binds(bind_config(&smsc, "other-ca.pem", "localhost")).await;
    assert_eq!(smsc.stats().snapshot().binds_total, 0);
    smsc.shutdown().await;
}

#[tokio::test]
async fn bind_expecting_another_server_name_never_binds() {
    let smsc = tls_smsc().await;
    assert_never_binds(bind_config(&smsc, "ca.pem", "smsc.example.net")).await;
    assert_eq!(smsc.stats().snapshot().binds_total, 0);
    smsc.shutdown().await;
}

#[tokio::test]
async fn plain_tcp_esme_on_the_tls_port_does_not_bind() {
    let smsc = tls_smsc().await;
    let mut esme = Esme::connect(smsc.local_addr()).await;
    esme.send(BindTransceiver::new(
        COctetString::from_str(SYSTEM_ID).unwrap(),
        COctetString::from_str(PASSWORD).unwrap(),
        COctetString::from_str("").unwrap(),
        InterfaceVersion::Smpp3_4,
        Ton::Unknown,
        Npi::Unknown,
        COctetString::from_str("").unwrap(),
    ))
    .await;
    // The SMSC takes the bind for a bad ClientHello: at most a TLS alert, then the close.
    if let Some(cmd) = esme.recv().await {
        assert_ne!(cmd.id(), CommandId::BindTransceiverResp, "{cmd:?}");
    }
    assert_eq!(smsc.stats().snapshot().binds_total, 0);
    smsc.shutdown().await;
}
