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

// ---- Concatenated requests (docs/stk-applet-protocol.md §6) ----

const POLISH_CONSENT: &str = "mDokumenty: potwierdź udostępnienie danych dowodu osobistego dla: Urząd Gminy Warszawa-Bemowo. Podaj PIN";
const POLISH_RP: &str = "Urząd Gminy Warszawa-Bemowo";

fn polish_request(txid: u8) -> AuthRequest {
    let ucs2 = |s: &str| sim_applet_model::text::ucs2_encode(s).unwrap();
    AuthRequest {
        txid: [txid; 8],
        challenge: [0x5A ^ txid; 16],
        loa: Loa::Loa3,
        expiry_secs: 300,
        encoding: TextEncoding::Ucs2,
        rp_name: ucs2(POLISH_RP),
        consent: ucs2(POLISH_CONSENT),
        binding_code: ucs2("4821"),
        question: None,
    }
}

/// Deliver `order` (0-based segment indexes) to the handset at `now`, then run it.
fn deliver(h: &mut Handset, sms: &[Vec<u8>], order: &[usize], now: u64) -> Vec<MoMessage> {
    for &i in order {
        h.handle_mt_sms_pp(VirtualInstant(now), &mt(sms[i].clone()));
    }
    run(h, VirtualInstant(now)).0
}

fn answer_of(h: &Handset, mo: &[MoMessage], counter: u64, req: &AuthRequest) -> Outcome {
    assert_eq!(mo.len(), 1, "{mo:?}");
    let MoMessage::Sms(s) = &mo[0] else {
        panic!("{mo:?}")
    };
    let secrets = h.card_secrets();
    let reply = open_answer_sms(&secrets, &s.user_data).unwrap();
    verify_answer(&secrets, &reply, counter, &req.txid, &req.challenge).unwrap()
}

#[test]
fn polish_consent_in_three_concatenated_sms_is_approved_with_the_pin() {
    let mut h = handset(approve_all());
    let req = polish_request(1);
    let sms = build_request_sms(&h.card_secrets(), 1, &req, 0x2A).unwrap();
    assert_eq!(sms.len(), 3);
    assert_eq!(
        &sms[0][..8],
        &[0x07, 0x00, 0x03, 0x2A, 0x03, 0x01, 0x70, 0x00]
    );
    assert_eq!(&sms[1][..6], &[0x05, 0x00, 0x03, 0x2A, 0x03, 0x02]);
    assert_eq!(&sms[2][..6], &[0x05, 0x00, 0x03, 0x2A, 0x03, 0x03]);
    assert!(sms.iter().all(|s| s.len() <= 140));

    // Nothing is shown before the last segment.
    h.handle_mt_sms_pp(VirtualInstant(1_000), &mt(sms[0].clone()));
    h.handle_mt_sms_pp(VirtualInstant(1_000), &mt(sms[1].clone()));
    assert!(h.is_idle());
    assert_eq!(h.card_mut().unwrap().pending_concatenations(), 1);
    let mo = deliver(&mut h, &sms, &[2], 1_000);
    assert_eq!(
        answer_of(&h, &mo, 1, &req),
        Outcome::Approved { loa: Loa::Loa3 }
    );
    assert_eq!(h.card_mut().unwrap().pending_concatenations(), 0);
    assert_eq!(h.card_state().unwrap().pin_tries_left, 3);
}

#[test]
fn concatenated_segments_out_of_order_work() {
    let mut h = handset(approve_all());
    let req = polish_request(2);
    let sms = build_request_sms(&h.card_secrets(), 1, &req, 7).unwrap();
    let mo = deliver(&mut h, &sms, &[2, 0, 1], 1_000);
    assert_eq!(
        answer_of(&h, &mo, 1, &req),
        Outcome::Approved { loa: Loa::Loa3 }
    );
}

#[test]
fn duplicate_segments_are_harmless() {
    let mut h = handset(approve_all());
    let req = polish_request(3);
    let sms = build_request_sms(&h.card_secrets(), 1, &req, 9).unwrap();
    let mo = deliver(&mut h, &sms, &[0, 0, 1, 1, 0, 2], 1_000);
    assert_eq!(
        answer_of(&h, &mo, 1, &req),
        Outcome::Approved { loa: Loa::Loa3 }
    );
    // A late copy after completion starts a message that never completes: no second prompt.
    let mo = deliver(&mut h, &sms, &[2], 200_000);
    assert!(mo.is_empty(), "{mo:?}");
    assert!(h.is_idle());
}

#[test]
fn missing_segment_shows_nothing_and_the_pending_state_expires() {
    let mut h = handset(approve_all());
    let req = polish_request(4);
    let sms = build_request_sms(&h.card_secrets(), 1, &req, 3).unwrap();
    let mo = deliver(&mut h, &sms, &[0, 2], 1_000);
    assert!(mo.is_empty(), "{mo:?}");
    assert!(h.is_idle());
    assert_eq!(h.poll_timeout(), None);
    assert_eq!(h.card_mut().unwrap().pending_concatenations(), 1);

    // 60 s later the card has forgotten the segments: the next APDU (a new one-SMS request)
    // finds nothing pending, and the late middle segment alone completes nothing.
    let short = request(Loa::Loa2, 5);
    let one = build_request_sms(&h.card_secrets(), 2, &short, 4).unwrap();
    assert_eq!(one.len(), 1);
    let mo = deliver(&mut h, &one, &[0], 61_000);
    assert_eq!(
        answer_of(&h, &mo, 2, &short),
        Outcome::Approved { loa: Loa::Loa2 }
    );
    assert_eq!(h.card_mut().unwrap().pending_concatenations(), 0);
    let mo = deliver(&mut h, &sms, &[1], 200_000);
    assert!(mo.is_empty(), "{mo:?}");
    assert_eq!(h.card_mut().unwrap().pending_concatenations(), 1);
}

#[test]
fn long_text_is_shown_on_two_display_text_pages() {
    let mut card = Card::new();
    let req = polish_request(6);
    let sms = build_request_sms(&card.secrets, 1, &req, 1).unwrap();
    assert!(matches!(card.envelope_ud(0, &sms[1]), Shown::Done));
    assert!(matches!(card.envelope_ud(0, &sms[2]), Shown::Done));
    let c1 = cmd(card.envelope_ud(0, &sms[0]));
    let c2 = cmd(card.tr(1_000, TerminalResponse::new(c1.details(), ResultCode::Ok)));
    let (Command::DisplayText(p1), Command::DisplayText(p2)) = (&c1.command, &c2.command) else {
        panic!("{c1:?} {c2:?}")
    };
    assert!(c1.encode().unwrap().len() <= 255 && c2.encode().unwrap().len() <= 255);
    let shown = format!("{} {}", p1.text.text, p2.text.text);
    assert_eq!(shown, format!("{POLISH_RP}\n{POLISH_CONSENT}\n4821"));
    let c3 = cmd(card.tr(2_000, TerminalResponse::new(c2.details(), ResultCode::Ok)));
    assert!(matches!(c3.command, Command::GetInput(_)), "{c3:?}");
    let pin = user_pin(&card);
    let shown = card.tr(3_000, pin_tr(&c3, &pin));
    let ud = card.take_sms(3_000, shown);
    assert_eq!(
        card.outcome(&ud, 1, &req),
        Outcome::Approved { loa: Loa::Loa3 }
    );
}

#[test]
fn largest_request_takes_three_segments() {
    let req = AuthRequest {
        rp_name: vec![b'r'; 64],
        consent: vec![b'c'; 240],
        binding_code: vec![b'1'; 16],
        question: Some(vec![b'q'; 12]),
        encoding: TextEncoding::Gsm7Unpacked,
        ..polish_request(8)
    };
    assert_eq!(req.encode().unwrap().len(), 370);
    let sms = build_request_sms(&CardSecrets::derive(1, 1), 1, &req, 0).unwrap();
    assert_eq!(sms.len(), 3);
    let mut card = Card::new();
    let sms = build_request_sms(&card.secrets, 1, &req, 0).unwrap();
    assert!(matches!(card.envelope_ud(0, &sms[0]), Shown::Done));
    assert!(matches!(card.envelope_ud(0, &sms[1]), Shown::Done));
    let c = cmd(card.envelope_ud(0, &sms[2]));
    assert!(matches!(c.command, Command::DisplayText(_)), "{c:?}");
}

/// The concatenated example of docs/stk-applet-protocol.md §7: the worked example's keys, the
/// Polish request, counter 2, reference 2A.
#[test]
fn concatenated_worked_example_is_the_documented_one() {
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
        expiry_secs: 120,
        ..polish_request(0)
    };
    let app = req.encode().unwrap();
    let sms = build_request_sms(&secrets, 2, &req, 0x2A).unwrap();
    let got: Vec<String> = std::iter::once(hex::encode(&app))
        .chain(sms.iter().map(hex::encode))
        .collect();
    for g in &got {
        println!("{g}");
    }
    assert_eq!(got, CONCAT_EXPECTED);
    let mut card = Card {
        applet: Applet::new(secrets.clone()),
        secrets,
    };
    assert!(matches!(card.envelope_ud(0, &sms[2]), Shown::Done));
    assert!(matches!(card.envelope_ud(0, &sms[1]), Shown::Done));
    let c = cmd(card.envelope_ud(0, &sms[0]));
    assert!(matches!(c.command, Command::DisplayText(_)), "{c:?}");
}

const CONCAT_EXPECTED: [&str; 4] = [
    "01010102030405060708a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a503007808013600550072007a0105006400200047006d0069006e007900200057006100720073007a006100770061002d00420065006d006f0077006f02d0006d0044006f006b0075006d0065006e00740079003a00200070006f007400770069006500720064017a002000750064006f0073007401190070006e00690065006e00690065002000640061006e00790063006800200064006f0077006f006400750020006f0073006f006200690073007400650067006f00200064006c0061003a002000550072007a0105006400200047006d0069006e007900200057006100720073007a006100770061002d00420065006d006f0077006f002e00200050006f00640061006a002000500049004e03080034003800320031",
    "0700032a03017000014815163912124d4341ddd9aa83411b27ca5370e63ee82137aff14eaf6ab9babb967a1c4feb5747ac820b8a1786043f8bc4d7258f6a609b00e07a85ea0270ef9c69b35517a42b700e9a34747e3844df03e94a81a7f8136b4fcc0d04b0c4df1df560cf33a43d4fbc92904177a335005d3c68af1110192c1907a0dac42b049c289d371d49",
    "0500032a03026b4933d328e1633253207e5cbd4c3f25c9727e8957e7cbdd59992a62b5790b756a8f64166d1aa388a7f13fceb54b0df18f8f38ef231d04fa01c7712d5af657529abbf4a6c7db5d4880f234266b6223aaa994e282f41158ce567a59320142644730f9ce83ce144fe42af5d0b8014cacb80a7ee88901ace4ba7ac83a4407af13b36e0ee46f9a20",
    "0500032a03035338707714fc2beb970ab6568379bd321bf939a840010113bba8329147def05ebb35e3c4fa711ed99d7dce3de109340f0de64bbd295b02a4de43514c86ae8a4e",
];

#[test]
fn request_too_long_for_the_protocol_is_refused_by_the_gateway() {
    let mut req = polish_request(7);
    req.consent = vec![0x00; 242];
    assert!(matches!(
        build_request_sms(&CardSecrets::derive(1, 1), 1, &req, 0),
        Err(GatewayError::Protocol(_))
    ));
}

proptest::proptest! {
    #[test]
    fn handset_never_panics_on_arbitrary_segments(
        segs in proptest::collection::vec(
            (0u8..3, 0u8..6, 0u8..6, proptest::bool::ANY, proptest::collection::vec(proptest::num::u8::ANY, 0..140)),
            0..12,
        ),
        step in 0u64..40_000,
    ) {
        let mut h = handset(approve_all());
        for (i, (reference, total, seq, first, body)) in segs.into_iter().enumerate() {
            let mut ud = if first {
                vec![0x07, 0x70, 0x00, 0x00, 0x03, reference, total, seq]
            } else {
                vec![0x05, 0x00, 0x03, reference, total, seq]
            };
            ud.extend_from_slice(&body);
            ud.truncate(140);
            let now = VirtualInstant(i as u64 * step);
            h.handle_mt_sms_pp(now, &mt(ud));
            let _ = run(&mut h, now);
            proptest::prop_assert!(h.card_mut().unwrap().pending_concatenations() <= 2);
        }
    }

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
