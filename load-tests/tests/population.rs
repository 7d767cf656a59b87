//! The handset population behind the simulated SMSC, through real sockets: USSD push answered
//! with the session echoed, an STK request approved by the card, an unknown MSISDN refused.
#![allow(clippy::unwrap_used)]

mod common;

use std::str::FromStr;
use std::time::Instant;

use common::*;
use load_tests::smsc::network::{HandsetNetwork, PopulationConfig};
use load_tests::smsc::population::ERR_UNKNOWN_SUBSCRIBER;
use load_tests::smsc::{self, SmscHandle};
use rusmpp::pdus::SubmitSm;
use rusmpp::tlvs::TlvValue;
use rusmpp::types::{COctetString, OctetString};
use rusmpp::values::{DataCoding, EsmClass, Npi, RegisteredDelivery, Ton, UssdServiceOp};
use rusmpp::CommandStatus;
use sim_applet_model::applet::gateway::{build_request_sms, open_answer_sms, verify_answer};
use sim_applet_model::applet::protocol::{AuthRequest, Loa, Outcome};
use sim_applet_model::applet::state::CardSecrets;
use sim_applet_model::handset::user::UserParams;

const SEED: u64 = 77;
const BASE: u64 = 48_600_000_000;
const SIZE: u32 = 1000;
const GW_NUMBER: &str = "48500100100";

/// Users who always approve, with think times compressed 1000-fold: seconds become ms.
fn population() -> (HandsetNetwork, PopulationConfig) {
    let config = PopulationConfig {
        size: SIZE,
        seed: SEED,
        msisdn_base: BASE,
        time_compression: 1000.0,
        user: UserParams {
            p_ignore: 0.0,
            p_deny: 0.0,
            p_wrong_pin: 0.0,
            ..UserParams::default()
        },
        ..PopulationConfig::default()
    };
    let net = HandsetNetwork::new(config.clone(), Instant::now()).unwrap();
    (net, config)
}

async fn start_population() -> (SmscHandle, Vec<bool>) {
    let (net, _) = population();
    let applets = (0..SIZE)
        .map(|i| net.handset(i).unwrap().has_applet())
        .collect();
    let smsc = smsc::start(config(), Box::new(net)).await.unwrap();
    (smsc, applets)
}

/// Waits for the next `deliver_sm` that is not a delivery receipt.
async fn next_mo(esme: &mut Esme) -> rusmpp::pdus::DeliverSm {
    loop {
        let d = esme.next_deliver(CommandStatus::EsmeRok).await;
        if u8::from(d.esm_class) & 0x3C != 0x04 {
            return d;
        }
    }
}

#[tokio::test]
async fn a_ussd_push_is_answered_with_the_session_key_echoed() {
    let (smsc, _) = start_population().await;
    let mut esme = Esme::bound(smsc.local_addr(), Kind::Trx).await;
    let msisdn = (BASE + 42).to_string();
    let resp = esme
        .request(
            ussd_request(&msisdn, "Gov.pl: log in? 1 Yes 2 No", 9),
            &mut Vec::new(),
        )
        .await;
    assert_eq!(resp.status(), CommandStatus::EsmeRok);
    let mo = next_mo(&mut esme).await;
    assert_eq!(mo.source_addr.to_string(), msisdn);
    assert_eq!(mo.destination_addr.to_string(), "*123#");
    assert_eq!(mo.short_message().as_ref(), b"1");
    assert_eq!(
        tlv(&mo, |v| matches!(v, TlvValue::UssdServiceOp(_))),
        Some(TlvValue::UssdServiceOp(UssdServiceOp::UssrConfirm))
    );
    let Some(TlvValue::ItsSessionInfo(info)) =
        tlv(&mo, |v| matches!(v, TlvValue::ItsSessionInfo(_)))
    else {
        panic!("no its_session_info in {mo:?}");
    };
    assert_eq!(info.session_number, 9);
    assert_eq!(
        info.sequence_number & 1,
        0,
        "no end bit on the handset's answer"
    );
    smsc.shutdown().await;
}

fn sms_pp(dest: &str, ud: &[u8], receipt: bool) -> SubmitSm {
    SubmitSm::builder()
        .source_addr_ton(Ton::International)
        .source_addr_npi(Npi::Isdn)
        .source_addr(COctetString::from_str(GW_NUMBER).unwrap())
        .dest_addr_ton(Ton::International)
        .dest_addr_npi(Npi::Isdn)
        .destination_addr(COctetString::from_str(dest).unwrap())
        .esm_class(EsmClass::from(0x40))
        .protocol_id(0x7F)
        .data_coding(DataCoding::from(0xF6))
        .registered_delivery(RegisteredDelivery::from(u8::from(receipt)))
        .short_message(OctetString::from_slice(ud).unwrap())
        .build()
}

#[tokio::test]
async fn an_stk_request_to_an_applet_sim_comes_back_approved() {
    let (smsc, applets) = start_population().await;
    let index = applets.iter().position(|a| *a).unwrap() as u64;
    let msisdn = (BASE + index).to_string();
    // Provisioning by derivation: the gateway side knows only the seed and the MSISDN base.
    let secrets = CardSecrets::derive(SEED, index);
    let req = AuthRequest::from_text(
        *b"tx000001",
        [0x3C; 16],
        Loa::Loa2,
        120,
        "Gov.pl",
        "Login to ePUAP",
        "4821",
        None,
    )
    .unwrap();
    let ud = build_request_sms(&secrets, 1, &req, 0).unwrap().remove(0);
    let mut esme = Esme::bound(smsc.local_addr(), Kind::Trx).await;
    let resp = esme
        .request(sms_pp(&msisdn, &ud, false), &mut Vec::new())
        .await;
    assert_eq!(resp.status(), CommandStatus::EsmeRok);
    let mo = next_mo(&mut esme).await;
    assert_eq!(mo.source_addr.to_string(), msisdn);
    assert_eq!(mo.destination_addr.to_string(), GW_NUMBER);
    assert_eq!(u8::from(mo.esm_class), 0x40);
    assert_eq!(mo.protocol_id, 0x7F);
    assert_eq!(u8::from(mo.data_coding), 0xF6);
    let reply = open_answer_sms(&secrets, mo.short_message().as_ref()).unwrap();
    assert_eq!(
        verify_answer(&secrets, &reply, 1, &req.txid, &req.challenge),
        Ok(Outcome::Approved { loa: Loa::Loa2 })
    );
    smsc.shutdown().await;
}

#[tokio::test]
async fn an_unknown_msisdn_gets_a_failure_receipt() {
    let (smsc, _) = start_population().await;
    let mut esme = Esme::bound(smsc.local_addr(), Kind::Trx).await;
    let outside = (BASE + u64::from(SIZE)).to_string();
    let resp = esme
        .request(sms(&outside, "hello", true), &mut Vec::new())
        .await;
    assert_eq!(resp.status(), CommandStatus::EsmeRok);
    let receipt = esme.next_deliver(CommandStatus::EsmeRok).await;
    assert_eq!(u8::from(receipt.esm_class) & 0x3C, 0x04);
    let text = String::from_utf8_lossy(receipt.short_message().as_ref()).into_owned();
    assert!(text.contains("stat:UNDELIV"), "{text}");
    assert!(
        text.contains(&format!("err:{ERR_UNKNOWN_SUBSCRIBER:03}")),
        "{text}"
    );
    smsc.shutdown().await;
}

#[tokio::test]
async fn sms_pp_to_a_sim_without_the_applet_gets_a_failure_receipt() {
    let (smsc, applets) = start_population().await;
    let index = applets.iter().position(|a| !*a).unwrap() as u64;
    let mut esme = Esme::bound(smsc.local_addr(), Kind::Trx).await;
    let resp = esme
        .request(
            sms_pp(&(BASE + index).to_string(), &[2, 0x70, 0], true),
            &mut Vec::new(),
        )
        .await;
    assert_eq!(resp.status(), CommandStatus::EsmeRok);
    let receipt = esme.next_deliver(CommandStatus::EsmeRok).await;
    let text = String::from_utf8_lossy(receipt.short_message().as_ref()).into_owned();
    assert!(text.contains("stat:UNDELIV"), "{text}");
    smsc.shutdown().await;
}
