//! End to end: the gateway builds a secured request, a handset (or a bare APDU driver) runs the
//! card's dialog, and the gateway opens and verifies the card's answer.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use sim_applet_model::applet::gateway::{
    build_request_sms, open_answer_sms, verify_answer, GatewayError,
};
use sim_applet_model::applet::pin::Pin;
use sim_applet_model::applet::protocol::{
    answer_mac_input, AuthRequest, DenyReason, Loa, Outcome, TextEncoding,
};
use sim_applet_model::applet::state::{AppletState, CardSecrets};
use sim_applet_model::applet::Applet;
use sim_applet_model::cat::tpdu::SecuredSubmit;
use sim_applet_model::cat::{
    Address, Apdu, ApduResponse, Command, ProactiveCommand, ResultCode, SmsPpDownload, StatusWord,
    TerminalResponse, TextString,
};
use sim_applet_model::handset::user::UserParams;
use sim_applet_model::handset::{Handset, HandsetParams, MoMessage, MtSms, VirtualInstant};
use sim_applet_model::ota::ResponseStatus;

const GW: &str = "48500100200";

fn request(loa: Loa, txid: u8) -> AuthRequest {
    AuthRequest {
        txid: [txid; 8],
        challenge: [0xC0 | txid; 16],
        loa,
        expiry_secs: 120,
        encoding: TextEncoding::Gsm7Unpacked,
        rp_name: b"mObywatel".to_vec(),
        consent: b"Login to ePUAP".to_vec(),
        binding_code: b"4821".to_vec(),
        question: None,
    }
}

fn mt(ud: Vec<u8>) -> MtSms {
    MtSms {
        originator: GW.into(),
        protocol_id: 0x7F,
        data_coding: 0xF6,
        user_data: ud,
    }
}

/// Run a handset until it has nothing left to do; return the MO messages.
fn run(h: &mut Handset, mut now: VirtualInstant) -> (Vec<MoMessage>, VirtualInstant) {
    let mut out = Vec::new();
    for _ in 0..100 {
        while let Some(m) = h.poll_mo() {
            out.push(m);
        }
        match h.poll_timeout() {
            Some(t) => {
                now = now.max(t);
                h.handle_timeout(now);
            }
            None => break,
        }
    }
    while let Some(m) = h.poll_mo() {
        out.push(m);
    }
    (out, now)
}

fn handset(user: UserParams) -> Handset {
    let params = Arc::new(HandsetParams {
        population_seed: 77,
        user,
        ..HandsetParams::default()
    });
    Handset::new(params, 5, true)
}

fn approve_all() -> UserParams {
    UserParams {
        p_ignore: 0.0,
        p_deny: 0.0,
        p_wrong_pin: 0.0,
        ..UserParams::default()
    }
}

fn handset_round_trip(h: &mut Handset, counter: u64, req: &AuthRequest) -> Outcome {
    let secrets = h.card_secrets();
    let sms = build_request_sms(&secrets, counter, req, 0).unwrap();
    assert_eq!(sms.len(), 1);
    h.handle_mt_sms_pp(VirtualInstant(1_000), &mt(sms[0].clone()));
    let (mo, _) = run(h, VirtualInstant(1_000));
    assert_eq!(mo.len(), 1, "{mo:?}");
    let MoMessage::Sms(s) = &mo[0] else {
        panic!("{mo:?}")
    };
    assert_eq!(
        (s.protocol_id, s.data_coding, s.udhi, s.destination.as_str()),
        (0x7F, 0xF6, true, GW)
    );
    assert_eq!(&s.user_data[..3], &[0x02, 0x71, 0x00]);
    let reply = open_answer_sms(&secrets, &s.user_data).unwrap();
    verify_answer(&secrets, &reply, counter, &req.txid, &req.challenge).unwrap()
}

#[test]
fn loa2_approve_through_a_handset() {
    let mut h = handset(approve_all());
    assert_eq!(
        handset_round_trip(&mut h, 1, &request(Loa::Loa2, 1)),
        Outcome::Approved { loa: Loa::Loa2 }
    );
    assert!(h.is_idle());
}

#[test]
fn loa2_deny_through_a_handset() {
    let mut h = handset(UserParams {
        p_deny: 1.0,
        p_ignore: 0.0,
        ..approve_all()
    });
    assert_eq!(
        handset_round_trip(&mut h, 1, &request(Loa::Loa2, 1)),
        Outcome::Denied {
            reason: DenyReason::UserSaidNo
        }
    );
}

#[test]
fn loa3_correct_pin_through_a_handset() {
    let mut h = handset(approve_all());
    assert_eq!(
        handset_round_trip(&mut h, 1, &request(Loa::Loa3, 1)),
        Outcome::Approved { loa: Loa::Loa3 }
    );
    assert_eq!(h.card_state().unwrap().pin_tries_left, 3);
}

#[test]
fn ignored_prompt_times_out_as_no_response() {
    let mut h = handset(UserParams {
        p_ignore: 1.0,
        ..approve_all()
    });
    assert_eq!(
        handset_round_trip(&mut h, 1, &request(Loa::Loa2, 1)),
        Outcome::NoResponse { expired: false }
    );
}

#[test]
fn wrong_pins_on_a_handset_block_after_three() {
    let mut h = handset(UserParams {
        p_wrong_pin: 1.0,
        ..approve_all()
    });
    assert_eq!(
        handset_round_trip(&mut h, 1, &request(Loa::Loa3, 1)),
        Outcome::PinBlocked { now: true }
    );
    assert_eq!(
        handset_round_trip(&mut h, 2, &request(Loa::Loa3, 2)),
        Outcome::PinBlocked { now: false }
    );
}

// ---- APDU-level driver: the test plays the handset itself ----

struct Card {
    applet: Applet,
    secrets: CardSecrets,
}

/// What the card asked for.
#[derive(Debug)]
enum Shown {
    Command(ProactiveCommand),
    Done,
}

impl Card {
    fn new() -> Self {
        let secrets = CardSecrets::derive(3, 9);
        Card {
            applet: Applet::new(secrets.clone()),
            secrets,
        }
    }

    fn apdu(&mut self, now: u64, apdu: Apdu) -> ApduResponse {
        ApduResponse::decode(
            &self
                .applet
                .process_apdu(VirtualInstant(now), &apdu.encode().unwrap()),
        )
        .unwrap()
    }

    fn after(&mut self, now: u64, r: ApduResponse) -> Shown {
        match r.sw {
            StatusWord::ProactiveCommandPending(n) => {
                let f = self.apdu(now, Apdu::fetch(n));
                assert_eq!(f.sw, StatusWord::Ok);
                assert_eq!(f.data.len(), usize::from(n));
                Shown::Command(ProactiveCommand::decode(&f.data).unwrap())
            }
            StatusWord::Ok => Shown::Done,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn envelope_ud(&mut self, now: u64, ud: &[u8]) -> Shown {
        let mut tpdu = vec![0x44, 11, 0x91];
        tpdu.extend(Address::international(GW).bcd().unwrap());
        tpdu.extend_from_slice(&[0x7F, 0xF6, 0x32, 0x01, 0x13, 0x02, 0, 0, 0, ud.len() as u8]);
        tpdu.extend_from_slice(ud);
        let env = SmsPpDownload::new(None, tpdu).encode().unwrap();
        let r = self.apdu(now, Apdu::envelope(env));
        self.after(now, r)
    }

    fn tr(&mut self, now: u64, tr: TerminalResponse) -> Shown {
        let r = self.apdu(now, Apdu::terminal_response(tr.encode().unwrap()));
        self.after(now, r)
    }

    /// Take the SEND SHORT MESSAGE, acknowledge it, return the MO user data.
    fn take_sms(&mut self, now: u64, shown: Shown) -> Vec<u8> {
        let Shown::Command(cmd) = shown else {
            panic!("expected SEND SHORT MESSAGE, got {shown:?}")
        };
        let Command::SendShortMessage(s) = &cmd.command else {
            panic!("expected SEND SHORT MESSAGE, got {cmd:?}")
        };
        let submit = SecuredSubmit::decode(&s.tpdu).unwrap();
        assert_eq!(submit.destination.digits, GW);
        assert!(matches!(
            self.tr(now, TerminalResponse::new(cmd.details(), ResultCode::Ok)),
            Shown::Done
        ));
        assert!(!self.applet.is_busy());
        let mut ud = vec![0x02, 0x71, 0x00];
        ud.extend_from_slice(&submit.packet);
        ud
    }

    fn outcome(&self, ud: &[u8], counter: u64, req: &AuthRequest) -> Outcome {
        let reply = open_answer_sms(&self.secrets, ud).unwrap();
        verify_answer(&self.secrets, &reply, counter, &req.txid, &req.challenge).unwrap()
    }

    fn send(&mut self, now: u64, counter: u64, req: &AuthRequest) -> Shown {
        let sms = build_request_sms(&self.secrets, counter, req, 0).unwrap();
        self.envelope_ud(now, &sms[0])
    }
}

fn cmd(shown: Shown) -> ProactiveCommand {
    match shown {
        Shown::Command(c) => c,
        Shown::Done => panic!("no command"),
    }
}

fn pin_tr(c: &ProactiveCommand, pin: &str) -> TerminalResponse {
    TerminalResponse::text(c.details(), TextString::gsm7(pin))
}

fn user_pin(card: &Card) -> String {
    String::from_utf8(card.secrets.initial_pin.digits().to_vec()).unwrap()
}

#[test]
fn display_text_shows_rp_consent_and_binding_code() {
    let mut card = Card::new();
    let c = cmd(card.send(0, 1, &request(Loa::Loa2, 1)));
    let Command::DisplayText(d) = &c.command else {
        panic!("{c:?}")
    };
    assert_eq!(d.text.text, "mObywatel\nLogin to ePUAP\n4821");
    assert!(d.qualifier.wait_for_user_clear && d.qualifier.high_priority);
    let c = cmd(card.tr(1_000, TerminalResponse::new(c.details(), ResultCode::Ok)));
    let Command::GetInkey(k) = &c.command else {
        panic!("{c:?}")
    };
    assert!(k.qualifier.yes_no);
}

#[test]
fn loa3_one_wrong_then_right_pin_asks_again() {
    let mut card = Card::new();
    let req = request(Loa::Loa3, 2);
    let c = cmd(card.send(0, 1, &req));
    let c = cmd(card.tr(1_000, TerminalResponse::new(c.details(), ResultCode::Ok)));
    let Command::GetInput(gi) = &c.command else {
        panic!("{c:?}")
    };
    assert!(gi.qualifier.hidden && !gi.qualifier.alphabet);
    assert_eq!((gi.response_length.min, gi.response_length.max), (4, 8));
    let c = cmd(card.tr(2_000, pin_tr(&c, "99999")));
    let Command::GetInput(gi) = &c.command else {
        panic!("{c:?}")
    };
    assert!(
        gi.text.text.starts_with("Wrong PIN, 2 left."),
        "{}",
        gi.text.text
    );
    let pin = user_pin(&card);
    let shown = card.tr(3_000, pin_tr(&c, &pin));
    let ud = card.take_sms(3_000, shown);
    assert_eq!(
        card.outcome(&ud, 1, &req),
        Outcome::Approved { loa: Loa::Loa3 }
    );
    assert_eq!(card.applet.pin_tries_left(), 3);
}

fn block_pin(card: &mut Card, counter: u64) {
    let req = request(Loa::Loa3, 3);
    let mut c = cmd(card.send(0, counter, &req));
    c = cmd(card.tr(1_000, TerminalResponse::new(c.details(), ResultCode::Ok)));
    for _ in 0..2 {
        c = cmd(card.tr(2_000, pin_tr(&c, "00000000")));
    }
    let shown = card.tr(3_000, pin_tr(&c, "00000000"));
    let ud = card.take_sms(3_000, shown);
    assert_eq!(
        card.outcome(&ud, counter, &req),
        Outcome::PinBlocked { now: true }
    );
}

#[test]
fn three_wrong_pins_block_and_later_requests_are_not_shown() {
    let mut card = Card::new();
    block_pin(&mut card, 1);
    let req = request(Loa::Loa3, 4);
    let shown = card.send(10_000, 2, &req);
    // Straight to the answer: no DISPLAY TEXT.
    let ud = card.take_sms(10_000, shown);
    assert_eq!(
        card.outcome(&ud, 2, &req),
        Outcome::PinBlocked { now: false }
    );
}

#[test]
fn puk_unblocks_and_the_new_pin_works() {
    let mut card = Card::new();
    block_pin(&mut card, 1);
    let puk = card.secrets.puk.digits().to_vec();
    card.applet.unblock_with_puk(&puk, b"246810").unwrap();
    let req = request(Loa::Loa3, 5);
    let c = cmd(card.send(0, 2, &req));
    let c = cmd(card.tr(1_000, TerminalResponse::new(c.details(), ResultCode::Ok)));
    let shown = card.tr(2_000, pin_tr(&c, "246810"));
    let ud = card.take_sms(2_000, shown);
    assert_eq!(
        card.outcome(&ud, 2, &req),
        Outcome::Approved { loa: Loa::Loa3 }
    );
}

#[test]
fn replayed_packet_is_refused_with_counter_low_and_not_shown() {
    let mut card = Card::new();
    let req = request(Loa::Loa2, 6);
    let sms = build_request_sms(&card.secrets, 7, &req, 0).unwrap();
    let c = cmd(card.envelope_ud(0, &sms[0]));
    let c = cmd(card.tr(1_000, TerminalResponse::new(c.details(), ResultCode::Ok)));
    let shown = card.tr(2_000, TerminalResponse::yes_no(c.details(), true));
    let ud = card.take_sms(2_000, shown);
    assert_eq!(
        card.outcome(&ud, 7, &req),
        Outcome::Approved { loa: Loa::Loa2 }
    );

    // The durable state survives a "restart" of the card; the replay still fails.
    let state = AppletState::from_bytes(&card.applet.state().to_bytes()).unwrap();
    card.applet = Applet::restore(card.secrets.clone(), state);
    let shown = card.envelope_ud(5_000, &sms[0]);
    let ud = card.take_sms(5_000, shown);
    let reply = open_answer_sms(&card.secrets, &ud).unwrap();
    assert_eq!(reply.status, ResponseStatus::CounterLow);
    assert_eq!(reply.answer, None);
    assert_eq!(
        verify_answer(&card.secrets, &reply, 7, &req.txid, &req.challenge),
        Err(GatewayError::Rejected {
            status: ResponseStatus::CounterLow
        })
    );
}

#[test]
fn forged_cc_is_refused_and_not_shown() {
    let mut card = Card::new();
    let req = request(Loa::Loa2, 8);
    let mut sms = build_request_sms(&card.secrets, 1, &req, 0).unwrap();
    let last = sms[0].len() - 1;
    sms[0][last] ^= 0x01;
    let shown = card.envelope_ud(0, &sms[0]);
    let ud = card.take_sms(0, shown);
    let reply = open_answer_sms(&card.secrets, &ud).unwrap();
    assert_eq!(reply.status, ResponseStatus::ChecksumFailed);
    assert_eq!(
        card.applet.state().last_counter,
        0,
        "a forged packet must not move the counter"
    );
}

#[test]
fn answer_after_expiry_is_no_response() {
    let mut card = Card::new();
    let req = request(Loa::Loa2, 9); // 120 s
    let c = cmd(card.send(0, 1, &req));
    let shown = card.tr(121_000, TerminalResponse::new(c.details(), ResultCode::Ok));
    let ud = card.take_sms(121_000, shown);
    assert_eq!(
        card.outcome(&ud, 1, &req),
        Outcome::NoResponse { expired: true }
    );
}

#[test]
fn session_terminated_by_user_is_denied() {
    let mut card = Card::new();
    let req = request(Loa::Loa3, 10);
    let c = cmd(card.send(0, 1, &req));
    let shown = card.tr(
        1_000,
        TerminalResponse::new(c.details(), ResultCode::SessionTerminatedByUser),
    );
    let ud = card.take_sms(1_000, shown);
    assert_eq!(
        card.outcome(&ud, 1, &req),
        Outcome::Denied {
            reason: DenyReason::SessionTerminated
        }
    );
}

#[test]
fn envelope_during_a_dialog_gets_toolkit_busy() {
    let mut card = Card::new();
    let _ = cmd(card.send(0, 1, &request(Loa::Loa2, 1)));
    let sms = build_request_sms(&card.secrets, 2, &request(Loa::Loa2, 2), 0).unwrap();
    let mut tpdu = vec![0x44, 11, 0x91];
    tpdu.extend(Address::international(GW).bcd().unwrap());
    tpdu.extend_from_slice(&[0x7F, 0xF6, 0, 0, 0, 0, 0, 0, 0, sms[0].len() as u8]);
    tpdu.extend_from_slice(&sms[0]);
    let env = SmsPpDownload::new(None, tpdu).encode().unwrap();
    assert_eq!(
        card.apdu(0, Apdu::envelope(env)).sw,
        StatusWord::ToolkitBusy
    );
}

#[test]
fn gateway_rejects_an_answer_for_another_challenge() {
    let mut card = Card::new();
    let req = request(Loa::Loa2, 11);
    let c = cmd(card.send(0, 1, &req));
    let c = cmd(card.tr(1_000, TerminalResponse::new(c.details(), ResultCode::Ok)));
    let shown = card.tr(2_000, TerminalResponse::yes_no(c.details(), true));
    let ud = card.take_sms(2_000, shown);
    let reply = open_answer_sms(&card.secrets, &ud).unwrap();
    assert!(verify_answer(&card.secrets, &reply, 1, &req.txid, &[0; 16]).is_err());
    assert!(matches!(
        verify_answer(&card.secrets, &reply, 2, &req.txid, &req.challenge),
        Err(GatewayError::CounterMismatch { .. })
    ));
    let other = CardSecrets::derive(3, 10);
    assert!(
        open_answer_sms(&other, &ud).is_err(),
        "PoR CC with another card's key"
    );
}

/// The worked example of docs/stk-applet-protocol.md §7.
#[test]
fn worked_example_bytes_are_the_documented_ones() {
    let secrets = CardSecrets {
        kic_key: *b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f",
        kid_key: *b"\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f",
        k_auth: *b"\x20\x21\x22\x23\x24\x25\x26\x27\x28\x29\x2a\x2b\x2c\x2d\x2e\x2f",
        initial_pin: Pin::new(b"1234").unwrap(),
        puk: Pin::new_puk(b"12345678").unwrap(),
    };
    let req = AuthRequest {
        txid: *b"\x01\x02\x03\x04\x05\x06\x07\x08",
        challenge: [0xA5; 16],
        loa: Loa::Loa3,
        expiry_secs: 120,
        encoding: TextEncoding::Gsm7Unpacked,
        rp_name: b"Gov.pl".to_vec(),
        consent: b"Login to ePUAP".to_vec(),
        binding_code: b"4821".to_vec(),
        question: None,
    };
    let app = req.encode().unwrap();
    let sms = build_request_sms(&secrets, 1, &req, 0).unwrap();
    let mut card = Card {
        applet: Applet::new(secrets.clone()),
        secrets: secrets.clone(),
    };
    let c = cmd(card.envelope_ud(0, &sms[0]));
    let display = c.encode().unwrap();
    let c = cmd(card.tr(5_000, TerminalResponse::new(c.details(), ResultCode::Ok)));
    let get_input = c.encode().unwrap();
    let tr = pin_tr(&c, "1234").encode().unwrap();
    let shown = card.tr(9_000, pin_tr(&c, "1234"));
    let ud = card.take_sms(9_000, shown);
    let reply = open_answer_sms(&secrets, &ud).unwrap();
    let answer = reply.answer.clone().unwrap().encode();
    assert_eq!(
        verify_answer(&secrets, &reply, 1, &req.txid, &req.challenge),
        Ok(Outcome::Approved { loa: Loa::Loa3 })
    );

    let got = [
        ("request", hex::encode(&app)),
        ("request_sms_user_data", hex::encode(&sms[0])),
        ("display_text", hex::encode(&display)),
        ("get_input", hex::encode(&get_input)),
        ("terminal_response_pin", hex::encode(&tr)),
        (
            "mac_input",
            hex::encode(answer_mac_input(
                [0, 0, 0, 0, 1],
                &req.txid,
                &req.challenge,
                Outcome::Approved { loa: Loa::Loa3 },
            )),
        ),
        ("answer", hex::encode(&answer)),
        ("answer_sms_user_data", hex::encode(&ud)),
    ];
    for (k, v) in &got {
        println!("{k} = {v}");
    }
    let expected: [(&str, &str); 8] = EXPECTED;
    assert_eq!(
        got.map(|(k, v)| (k, v)).to_vec(),
        expected.map(|(k, v)| (k, v.to_string())).to_vec()
    );
}

const EXPECTED: [(&str, &str); 8] = [
    (
        "request",
        "01010102030405060708a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5030078040106476f762e706c020e4c6f67696e20746f206550554150030434383231",
    ),
    (
        "request_sms_user_data",
        "027000005815163912124d4341b233b45f3ee73d1ef6b3765838d1d9773b0d45241027802f00548bbcae459137cc5c29f693a4bc813310eff143b6abded8d8ba818dd33996c5cfb7f653727b14bd9cad82b567be7a7704b6c6e64ce3fe",
    ),
    (
        "display_text",
        "d0268103012181820281028d1b04476f762e706c0a4c6f67696e20746f2065505541500a34383231",
    ),
    (
        "get_input",
        "d0148103022304820281828d050450494e3a91020408",
    ),
    (
        "terminal_response_pin",
        "8103022304820282818301008d050431323334",
    ),
    (
        "mac_input",
        "4d4341018100000000010102030405060708a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a50003",
    ),
    (
        "answer",
        "018101020304050607080003419959e735648455db2f95d4a803468c",
    ),
    (
        "answer_sms_user_data",
        "0271000034124d43413863589183c2277e206c412dc79a64454dcb773263f3a3c0487f7d21ae967f9c1c87a34d422e5f15f1077d8d488fa150",
    ),
];

proptest::proptest! {
    #[test]
    fn applet_never_panics_on_arbitrary_apdus(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
        let mut card = Card::new();
        let _ = card.applet.process_apdu(VirtualInstant(0), &bytes);
    }

    #[test]
    fn applet_never_panics_on_arbitrary_envelope_data(
        data in proptest::collection::vec(proptest::num::u8::ANY, 0..255),
        ins in proptest::sample::select(vec![0xC2u8, 0x12, 0x14]),
    ) {
        let mut card = Card::new();
        let mut apdu = vec![0x80, ins, 0, 0, data.len() as u8];
        apdu.extend_from_slice(&data);
        let _ = card.applet.process_apdu(VirtualInstant(0), &apdu);
    }

    #[test]
    fn applet_never_panics_on_arbitrary_packets_in_a_valid_envelope(
        packet in proptest::collection::vec(proptest::num::u8::ANY, 0..137),
    ) {
        let mut card = Card::new();
        let mut ud = vec![0x02, 0x70, 0x00];
        ud.extend_from_slice(&packet);
        let _ = card.envelope_ud_lenient(&ud);
    }
}

impl Card {
    fn envelope_ud_lenient(&mut self, ud: &[u8]) -> Vec<u8> {
        let mut tpdu = vec![0x44, 11, 0x91];
        tpdu.extend(Address::international(GW).bcd().unwrap());
        tpdu.extend_from_slice(&[0x7F, 0xF6, 0, 0, 0, 0, 0, 0, 0, ud.len() as u8]);
        tpdu.extend_from_slice(ud);
        let env = SmsPpDownload::new(None, tpdu).encode().unwrap();
        self.applet
            .process_apdu(VirtualInstant(0), &Apdu::envelope(env).encode().unwrap())
    }
}
