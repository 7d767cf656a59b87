//! The simulated SMSC through real sockets on loopback, driven by a test ESME of our own.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use load_tests::smsc::Fault;
use rusmpp::tlvs::TlvValue;
use rusmpp::values::{ItsSessionInfo, UssdServiceOp};
use rusmpp::{CommandId, CommandStatus, Pdu};

#[tokio::test]
async fn binds_need_the_right_system_id_and_password() {
    let smsc = start(config()).await;
    let addr = smsc.local_addr();
    let mut ok = Esme::connect(addr).await;
    assert_eq!(
        ok.bind_as(Kind::Trx, SYSTEM_ID, PASSWORD).await,
        CommandStatus::EsmeRok
    );
    let mut bad_pw = Esme::connect(addr).await;
    assert_eq!(
        bad_pw.bind_as(Kind::Tx, SYSTEM_ID, "wrong").await,
        CommandStatus::EsmeRinvpaswd
    );
    let mut bad_id = Esme::connect(addr).await;
    assert_eq!(
        bad_id.bind_as(Kind::Rx, "nobody", PASSWORD).await,
        CommandStatus::EsmeRbindfail
    );
    // A refused bind may try again on the same connection.
    assert_eq!(
        bad_pw.bind_as(Kind::Tx, SYSTEM_ID, PASSWORD).await,
        CommandStatus::EsmeRok
    );
    assert_eq!(
        ok.bind_as(Kind::Trx, SYSTEM_ID, PASSWORD).await,
        CommandStatus::EsmeRalybnd
    );
    let s = smsc.stats().snapshot();
    assert_eq!((s.binds, s.binds_total, s.bind_failures), (2, 2, 3));
    smsc.shutdown().await;
}

#[tokio::test]
async fn the_bind_limit_is_enforced_per_account() {
    let mut c = config();
    c.accounts[0].max_binds = 1;
    let smsc = start(c).await;
    let _first = Esme::bound(smsc.local_addr(), Kind::Trx).await;
    let mut second = Esme::connect(smsc.local_addr()).await;
    assert_eq!(
        second.bind_as(Kind::Rx, SYSTEM_ID, PASSWORD).await,
        CommandStatus::EsmeRbindfail
    );
    smsc.shutdown().await;
}

#[tokio::test]
async fn submit_sm_is_answered_with_distinct_message_ids() {
    let smsc = start(config()).await;
    let mut esme = Esme::bound(smsc.local_addr(), Kind::Tx).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let resp = esme
            .request(sms("48600100200", &format!("m{i}"), false), &mut Vec::new())
            .await;
        assert_eq!(resp.status(), CommandStatus::EsmeRok);
        let Some(Pdu::SubmitSmResp(r)) = resp.pdu() else {
            panic!("{resp:?}")
        };
        ids.push(r.message_id().as_str().to_owned());
    }
    // A set, not `dedup`: dedup drops only adjacent repeats, so "a", "b", "a" would pass.
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(
        distinct.len(),
        ids.len(),
        "a message id was reused: {ids:?}"
    );
    assert!(ids.iter().all(|id| !id.is_empty()), "{ids:?}");
    assert_eq!(smsc.stats().snapshot().submits, 3);
    smsc.shutdown().await;
}

#[tokio::test]
async fn a_receiver_may_not_submit() {
    let smsc = start(config()).await;
    let mut esme = Esme::bound(smsc.local_addr(), Kind::Rx).await;
    let resp = esme
        .request(sms("48600100200", "x", false), &mut Vec::new())
        .await;
    assert_eq!(resp.status(), CommandStatus::EsmeRinvbndsts);
    smsc.shutdown().await;
}

#[tokio::test]
async fn registered_delivery_brings_a_receipt_with_the_standard_text() {
    let smsc = start(config()).await;
    let mut esme = Esme::bound(smsc.local_addr(), Kind::Trx).await;
    let mut seen = Vec::new();
    let resp = esme
        .request(sms("48600100200", "hello there", true), &mut seen)
        .await;
    let Some(Pdu::SubmitSmResp(r)) = resp.pdu() else {
        panic!("{resp:?}")
    };
    let id = r.message_id().as_str().to_owned();
    let receipt = match seen.pop() {
        Some(d) => d,
        None => esme.next_deliver(CommandStatus::EsmeRok).await,
    };
    assert_eq!(u8::from(receipt.esm_class), 0x04);
    let text = String::from_utf8(receipt.short_message().as_ref().to_vec()).unwrap();
    let re_prefix = format!("id:{id} sub:001 dlvrd:001 submit date:");
    assert!(text.starts_with(&re_prefix), "{text}");
    assert!(text.contains(" done date:"), "{text}");
    assert!(
        text.ends_with(" stat:DELIVRD err:000 text:hello there"),
        "{text}"
    );
    assert_eq!(receipt.source_addr.as_str(), "48600100200");
    assert_eq!(receipt.destination_addr.as_str(), "4800");
    assert_eq!(
        tlv(&receipt, |v| matches!(v, TlvValue::ReceiptedMessageId(_))),
        Some(TlvValue::ReceiptedMessageId(id.parse().unwrap()))
    );
    // Ask for the SMSC's view once the ESME's deliver_sm_resp has surely been read: an
    // enquire_link round trip orders after it on the same connection.
    let _ = esme.request(Pdu::EnquireLink, &mut Vec::new()).await;
    assert_eq!(smsc.stats().snapshot().receipts, 1);
    smsc.shutdown().await;
}

#[tokio::test]
async fn submits_above_the_tps_are_answered_throttled() {
    let mut c = config();
    c.accounts[0].throttle_tps = Some(3);
    let smsc = start(c).await;
    let mut esme = Esme::bound(smsc.local_addr(), Kind::Tx).await;
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let resp = esme
            .request(sms("48600100200", "x", false), &mut Vec::new())
            .await;
        statuses.push(resp.status());
    }
    let ok = statuses
        .iter()
        .filter(|s| **s == CommandStatus::EsmeRok)
        .count();
    let throttled = statuses.iter().filter(|s| u32::from(**s) == 0x58).count();
    // 3 in the burst; a slow machine may earn a token or two while the loop runs.
    assert!((3..=5).contains(&ok), "{statuses:?}");
    assert_eq!(ok + throttled, 10, "{statuses:?}");
    assert_eq!(statuses[0], CommandStatus::EsmeRok);
    assert_eq!(smsc.stats().snapshot().throttled, throttled as u64);
    smsc.shutdown().await;
}

#[tokio::test]
async fn a_throttle_storm_throttles_every_submit_until_cleared() {
    let smsc = start(config()).await;
    let mut esme = Esme::bound(smsc.local_addr(), Kind::Tx).await;
    smsc.inject(Fault::ThrottleStorm(Duration::from_secs(600)));
    for _ in 0..3 {
        let resp = esme
            .request(sms("48600100200", "x", false), &mut Vec::new())
            .await;
        assert_eq!(resp.status(), CommandStatus::EsmeRthrottled);
    }
    smsc.inject(Fault::Clear);
    let resp = esme
        .request(sms("48600100200", "x", false), &mut Vec::new())
        .await;
    assert_eq!(resp.status(), CommandStatus::EsmeRok);
    smsc.shutdown().await;
}

#[tokio::test]
async fn the_generic_nack_fault_answers_the_next_requests_with_generic_nack() {
    let smsc = start(config()).await;
    let mut esme = Esme::bound(smsc.local_addr(), Kind::Tx).await;
    smsc.inject(Fault::GenericNack { count: 1 });
    let resp = esme
        .request(sms("48600100200", "x", false), &mut Vec::new())
        .await;
    assert_eq!(resp.id(), CommandId::GenericNack);
    let resp = esme
        .request(sms("48600100200", "x", false), &mut Vec::new())
        .await;
    assert_eq!(resp.id(), CommandId::SubmitSmResp);
    smsc.shutdown().await;
}

#[tokio::test]
async fn malformed_pdus_get_generic_nack_and_the_bind_stays_up() {
    let smsc = start(config()).await;
    let mut esme = Esme::bound(smsc.local_addr(), Kind::Trx).await;
    // Unknown command id 0x00000777, sequence number 77.
    esme.write_raw(&[0, 0, 0, 16, 0, 0, 0x07, 0x77, 0, 0, 0, 0, 0, 0, 0, 77])
        .await;
    let nack = esme.recv().await.unwrap();
    assert_eq!(nack.id(), CommandId::GenericNack);
    assert_eq!(nack.sequence_number(), 77);
    assert_eq!(nack.status(), CommandStatus::EsmeRinvcmdid);
    // A submit_sm whose body stops in the middle of source_addr (no NUL), sequence 78.
    let mut frame = vec![0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 78, 0, 1, 1];
    frame.extend_from_slice(b"4800");
    let len = frame.len() as u32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    esme.write_raw(&frame).await;
    let nack = esme.recv().await.unwrap();
    assert_eq!(nack.id(), CommandId::GenericNack);
    assert_eq!(nack.sequence_number(), 78);
    let resp = esme.request(Pdu::EnquireLink, &mut Vec::new()).await;
    assert_eq!(resp.id(), CommandId::EnquireLinkResp);
    let resp = esme
        .request(sms("48600100200", "still here", false), &mut Vec::new())
        .await;
    assert_eq!(resp.status(), CommandStatus::EsmeRok);
    assert_eq!(smsc.stats().snapshot().nacks, 2);
    smsc.shutdown().await;
}

#[tokio::test]
async fn a_ussd_request_is_answered_by_the_echo_network() {
    let smsc = start(config()).await;
    let mut esme = Esme::bound(smsc.local_addr(), Kind::Trx).await;
    let mut seen = Vec::new();
    let resp = esme
        .request(ussd_request("48600100200", "Approve? 1=yes", 9), &mut seen)
        .await;
    assert_eq!(resp.status(), CommandStatus::EsmeRok);
    let mo = match seen.pop() {
        Some(d) => d,
        None => esme.next_deliver(CommandStatus::EsmeRok).await,
    };
    assert_eq!(mo.short_message().as_ref(), b"1");
    assert_eq!(mo.service_type.value().as_str(), "USSD");
    assert_eq!(mo.source_addr.as_str(), "48600100200");
    assert_eq!(mo.destination_addr.as_str(), "*123#");
    assert_eq!(
        tlv(&mo, |v| matches!(v, TlvValue::UssdServiceOp(_))),
        Some(TlvValue::UssdServiceOp(UssdServiceOp::UssrConfirm))
    );
    assert_eq!(
        tlv(&mo, |v| matches!(v, TlvValue::ItsSessionInfo(_))),
        Some(TlvValue::ItsSessionInfo(ItsSessionInfo::new(9, 0)))
    );
    smsc.shutdown().await;
}

#[tokio::test]
async fn mo_goes_to_another_bind_of_the_same_account() {
    let smsc = start(config()).await;
    let mut tx = Esme::bound(smsc.local_addr(), Kind::Tx).await;
    let mut rx = Esme::bound(smsc.local_addr(), Kind::Rx).await;
    let resp = tx
        .request(ussd_request("48600100201", "Approve?", 3), &mut Vec::new())
        .await;
    assert_eq!(resp.status(), CommandStatus::EsmeRok);
    let mo = rx.next_deliver(CommandStatus::EsmeRok).await;
    assert_eq!(mo.source_addr.as_str(), "48600100201");
    assert_eq!(
        tlv(&mo, |v| matches!(v, TlvValue::UssdServiceOp(_))),
        Some(TlvValue::UssdServiceOp(UssdServiceOp::UssrConfirm))
    );
    let _ = rx.request(Pdu::EnquireLink, &mut Vec::new()).await;
    assert_eq!(smsc.stats().snapshot().mo_delivered, 1);
    smsc.shutdown().await;
}

#[tokio::test]
async fn a_refused_deliver_sm_is_retried() {
    let mut c = config();
    c.mo_retry_delay = Duration::from_millis(5);
    let smsc = start(c).await;
    let mut esme = Esme::bound(smsc.local_addr(), Kind::Trx).await;
    let mut mo = load_tests::smsc::MoMessage {
        sm: load_tests::smsc::SmFields::default(),
    };
    mo.sm.source = load_tests::smsc::Address::international("48600100202");
    mo.sm.destination.addr = "4800".into();
    mo.sm.short_message = b"STOP".to_vec();
    smsc.deliver_mo(SYSTEM_ID, &mo).unwrap();
    let first = esme.next_deliver(CommandStatus::EsmeRxTAppn).await;
    let second = esme.next_deliver(CommandStatus::EsmeRok).await;
    assert_eq!(first, second);
    let _ = esme.request(Pdu::EnquireLink, &mut Vec::new()).await;
    let s = smsc.stats().snapshot();
    assert_eq!((s.deliver_retries, s.mo_delivered), (1, 1));
    smsc.shutdown().await;
}

fn mo_from(msisdn: &str) -> load_tests::smsc::MoMessage {
    let mut mo = load_tests::smsc::MoMessage {
        sm: load_tests::smsc::SmFields::default(),
    };
    mo.sm.source.addr = msisdn.into();
    mo.sm.destination.addr = "4800".into();
    mo
}

#[tokio::test]
async fn no_more_than_the_window_of_deliver_sm_is_outstanding() {
    let mut c = config();
    c.window = 2;
    let smsc = start(c).await;
    for i in 0..4 {
        smsc.deliver_mo(SYSTEM_ID, &mo_from(&format!("4860010030{i}")))
            .unwrap();
    }
    let mut esme = Esme::bound(smsc.local_addr(), Kind::Trx).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let cmd = esme.recv().await.unwrap();
        assert_eq!(cmd.id(), CommandId::DeliverSm);
        held.push(cmd.sequence_number());
    }
    // With two unanswered, the next thing on the wire must be our enquire_link's response.
    let ping = esme.send(Pdu::EnquireLink).await;
    let next = esme.recv().await.unwrap();
    assert_eq!(
        (next.id(), next.sequence_number()),
        (CommandId::EnquireLinkResp, ping)
    );
    for seq in held {
        esme.send_command(rusmpp::Command::new(
            CommandStatus::EsmeRok,
            seq,
            rusmpp::pdus::DeliverSmResp::default(),
        ))
        .await;
    }
    for _ in 0..2 {
        esme.next_deliver(CommandStatus::EsmeRok).await;
    }
    let _ = esme.request(Pdu::EnquireLink, &mut Vec::new()).await;
    assert_eq!(smsc.stats().snapshot().mo_delivered, 4);
    smsc.shutdown().await;
}

#[tokio::test]
async fn mo_waits_for_a_receiver_to_bind() {
    let smsc = start(config()).await;
    let mut mo = load_tests::smsc::MoMessage {
        sm: load_tests::smsc::SmFields::default(),
    };
    mo.sm.source.addr = "48600100203".into();
    mo.sm.destination.addr = "4800".into();
    smsc.deliver_mo(SYSTEM_ID, &mo).unwrap();
    let mut rx = Esme::bound(smsc.local_addr(), Kind::Rx).await;
    let d = rx.next_deliver(CommandStatus::EsmeRok).await;
    assert_eq!(d.source_addr.as_str(), "48600100203");
    smsc.shutdown().await;
}

#[tokio::test]
async fn the_drop_bind_fault_closes_the_connection_without_unbind() {
    let smsc = start(config()).await;
    let mut esme = Esme::bound(smsc.local_addr(), Kind::Trx).await;
    smsc.inject(Fault::DropBinds { system_id: None });
    assert!(
        esme.recv().await.is_none(),
        "expected the connection to close"
    );
    // The account's bind slot is free again.
    let _again = Esme::bound(smsc.local_addr(), Kind::Trx).await;
    smsc.shutdown().await;
}

#[tokio::test]
async fn an_idle_bind_gets_enquire_link_from_the_smsc() {
    let mut c = config();
    c.enquire_link_interval = Duration::from_millis(50);
    let smsc = start(c).await;
    let mut esme = Esme::bound(smsc.local_addr(), Kind::Trx).await;
    let ping = esme.recv().await.unwrap();
    assert_eq!(ping.id(), CommandId::EnquireLink);
    smsc.shutdown().await;
}

#[tokio::test]
async fn shutdown_unbinds_every_bind_first() {
    let smsc = start(config()).await;
    let mut esme = Esme::bound(smsc.local_addr(), Kind::Trx).await;
    let stopping = tokio::spawn(smsc.shutdown());
    let unbind = esme.recv().await.unwrap();
    assert_eq!(unbind.id(), CommandId::Unbind);
    esme.send_command(rusmpp::Command::new(
        CommandStatus::EsmeRok,
        unbind.sequence_number(),
        Pdu::UnbindResp,
    ))
    .await;
    assert!(esme.recv().await.is_none());
    stopping.await.unwrap();
}

#[tokio::test]
async fn the_delay_fault_holds_responses_back() {
    let smsc = start(config()).await;
    let mut esme = Esme::bound(smsc.local_addr(), Kind::Tx).await;
    smsc.inject(Fault::DelayResponses(Duration::from_millis(200)));
    let t0 = std::time::Instant::now();
    let resp = esme.request(Pdu::EnquireLink, &mut Vec::new()).await;
    assert_eq!(resp.id(), CommandId::EnquireLinkResp);
    assert!(
        t0.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t0.elapsed()
    );
    smsc.shutdown().await;
}
