//! Criterion benchmarks of the SMPP PDU layer (`sim_applet_model::smpp::pdu`).
//!
//! Each PDU the gateway exchanges on the hot path is built once, then timed through
//! [`encode_command`] (command to framed bytes) and [`decode_frame`] (framed bytes to command,
//! including the TLV-area check). The nack path times [`decode_frame`] on frames it must refuse:
//! a `ussd_service_op` TLV with a wrong length and an unknown `command_id`.
//! Results and the command to reproduce them are in `docs/BENCHMARKS.md`.

use std::hint::black_box;
use std::str::FromStr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sim_applet_model::smpp::pdu::{decode_frame, encode_command, Decoded};
use sim_applet_model::smpp::rusmpp::{
    pdus::{DeliverSm, SubmitSm, SubmitSmResp},
    tlvs::{MessageDeliveryRequestTlvValue, MessageSubmissionRequestTlvValue},
    types::{COctetString, OctetString},
    values::{ItsSessionInfo, Npi, ServiceType, Ton, UssdServiceOp},
    Command, CommandStatus, Pdu,
};

/// The consent prompt the gateway pushes: USSR request with its session info.
fn ussd_submit_sm() -> Command {
    let sm = SubmitSm::builder()
        .service_type(ServiceType::new(
            COctetString::from_str("USSD").expect("static"),
        ))
        .source_addr(COctetString::from_str("*123#").expect("static"))
        .dest_addr_ton(Ton::International)
        .dest_addr_npi(Npi::Isdn)
        .destination_addr(COctetString::from_str("48600100200").expect("static"))
        .short_message(
            OctetString::from_str("Approve login to Example? 1=yes 2=no").expect("static"),
        )
        .tlvs(vec![
            MessageSubmissionRequestTlvValue::UssdServiceOp(UssdServiceOp::UssrRequest),
            MessageSubmissionRequestTlvValue::ItsSessionInfo(ItsSessionInfo::new(7, 2)),
        ])
        .build();
    Command::new(CommandStatus::EsmeRok, 0x0102_0304, sm)
}

fn submit_sm_resp() -> Command {
    let resp = SubmitSmResp::builder()
        .message_id(COctetString::from_str("4f2a9c01").expect("static"))
        .build();
    Command::new(CommandStatus::EsmeRok, 0x0102_0304, resp)
}

/// The user's answer coming back: USSR confirm on the same session.
fn ussd_deliver_sm() -> Command {
    let dsm = DeliverSm::builder()
        .service_type(ServiceType::new(
            COctetString::from_str("USSD").expect("static"),
        ))
        .source_addr_ton(Ton::International)
        .source_addr_npi(Npi::Isdn)
        .source_addr(COctetString::from_str("48600100200").expect("static"))
        .destination_addr(COctetString::from_str("*123#").expect("static"))
        .short_message(OctetString::from_str("1").expect("static"))
        .tlvs(vec![
            MessageDeliveryRequestTlvValue::UssdServiceOp(UssdServiceOp::UssrConfirm),
            MessageDeliveryRequestTlvValue::ItsSessionInfo(ItsSessionInfo::new(7, 3)),
        ])
        .build();
    Command::new(CommandStatus::EsmeRok, 77, dsm)
}

fn enquire_link() -> Command {
    Command::new(CommandStatus::EsmeRok, 9, Pdu::EnquireLink)
}

fn cases() -> Vec<(&'static str, Command)> {
    vec![
        ("submit_sm_ussd", ussd_submit_sm()),
        ("submit_sm_resp", submit_sm_resp()),
        ("deliver_sm_ussd", ussd_deliver_sm()),
        ("enquire_link", enquire_link()),
    ]
}

fn bench_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for (name, cmd) in cases() {
        let len = encode_command(&cmd).len();
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(name, |b| b.iter(|| encode_command(black_box(&cmd))));
    }
    group.finish();
}

fn bench_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for (name, cmd) in cases() {
        let frame = encode_command(&cmd);
        // A benchmark of the wrong path would be worthless: check the frame decodes back.
        assert_eq!(decode_frame(&frame), Decoded::Pdu(cmd), "{name}");
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_function(name, |b| b.iter(|| decode_frame(black_box(&frame))));
    }
    group.finish();
}

fn bench_nack(c: &mut Criterion) {
    // A valid USSD submit_sm followed by a second ussd_service_op claiming 2 octets.
    let mut bad_tlv = encode_command(&ussd_submit_sm()).to_vec();
    bad_tlv.extend_from_slice(&[0x05, 0x01, 0x00, 0x02, 0x02, 0x00]);
    let len = u32::try_from(bad_tlv.len()).expect("small frame");
    bad_tlv[..4].copy_from_slice(&len.to_be_bytes());
    let unknown_id = [0, 0, 0, 16, 0, 0, 0x77, 0x77, 0, 0, 0, 0, 0, 0, 1, 2];
    for (frame, status) in [
        (&bad_tlv[..], CommandStatus::EsmeRinvtlvlen),
        (&unknown_id[..], CommandStatus::EsmeRinvcmdid),
    ] {
        match decode_frame(frame) {
            Decoded::Nack { status: s, .. } => assert_eq!(s, status),
            Decoded::Pdu(c) => panic!("expected a nack, decoded {c:?}"),
        }
    }

    let mut group = c.benchmark_group("decode_frame_nack");
    group.bench_function("ussd_service_op_bad_length", |b| {
        b.iter(|| decode_frame(black_box(&bad_tlv)))
    });
    group.bench_function("unknown_command_id", |b| {
        b.iter(|| decode_frame(black_box(&unknown_id)))
    });
    group.finish();
}

criterion_group!(benches, bench_encode, bench_decode, bench_nack);
criterion_main!(benches);
