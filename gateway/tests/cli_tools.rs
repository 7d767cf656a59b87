//! The operator tools, run as an operator runs them: the real binary, its stdout and exit code,
//! on the published pySim vectors (osmocom pySim `tests/unittests/test_ota.py`).

use std::process::{Command, Output};

const KIC_3DES: &str = "300102030405060708090a0b0c0d0e0f";
const KID_3DES: &str = "301102030405060708090a0b0c0d0e0f";
const CMD_3DES: &str = "00201506193535b00011ae733256918d050b87c94fbfe12e4dc402f262c41cf67f2f";
const KIC_AES: &str = "200102030405060708090a0b0c0d0e0f";
const KID_AES: &str = "201102030405060708090a0b0c0d0e0f";
const CMD_AES: &str =
    "00281506192222b00011e87cceebb2d93083011ce294f93fc4d8de80da1abae8c37ca3e72ec4432e5058";
const POR_3DES: &str = "027100001c12b000118bb989492c632529326a2f4681feb37c825bc9021c9f6d0b";

fn gateway(args: &[&str]) -> (String, i32) {
    let Output { status, stdout, .. } = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(args)
        .output()
        .expect("the gateway binary runs");
    (
        String::from_utf8(stdout).expect("stdout is UTF-8"),
        status.code().expect("exit code"),
    )
}

/// Flip one bit of the hex string's octet at `index`.
fn flip_bit(hex_str: &str, index: usize) -> String {
    let mut bytes = hex::decode(hex_str).expect("hex");
    bytes[index] ^= 0x01;
    hex::encode(bytes)
}

#[test]
fn decodes_the_3des_vector_fields_and_reports_a_valid_cc() {
    let (out, code) = gateway(&[
        "ota", "decode", "--kic", KIC_3DES, "--kid", KID_3DES, CMD_3DES,
    ]);
    assert_eq!(code, 0, "{out}");
    for line in [
        "SPI:   06 19",
        "KIc:   35",
        "TAR:   b0 00 11",
        "PCNTR: 3",
        "CC:    04 ce ae d7 4c 10 2a 01 (valid)",
        "data:  00 a4 00 04 02 3f 00 (7 octets)",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
}

#[test]
fn decodes_the_aes_vector_with_a_valid_cc() {
    let (out, code) = gateway(&["ota", "decode", "--kic", KIC_AES, "--kid", KID_AES, CMD_AES]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("CC:    ec ba b1 f8 f5 55 02 c5 (valid)"),
        "{out}"
    );
    assert!(out.contains("PCNTR: 11"), "{out}");
    assert!(out.contains("data:  00 a4 00 04 02 3f 00"), "{out}");
}

#[test]
fn a_flipped_bit_anywhere_is_a_cc_failure_or_a_named_error_never_a_crash() {
    let len = CMD_3DES.len() / 2;
    for index in 0..len {
        let (out, code) = gateway(&[
            "ota",
            "decode",
            "--kic",
            KIC_3DES,
            "--kid",
            KID_3DES,
            &flip_bit(CMD_3DES, index),
        ]);
        assert_eq!(
            code, 2,
            "octet {index}: expected exit 2, got {code}:\n{out}"
        );
        assert!(
            out.contains("INVALID"),
            "octet {index}: no INVALID verdict:\n{out}"
        );
    }
}

#[test]
fn decodes_the_3des_proof_of_receipt() {
    let (out, code) = gateway(&[
        "ota",
        "decode",
        "--kic",
        KIC_3DES,
        "--kid",
        KID_3DES,
        "--spi",
        "0619",
        "--kic-octet",
        "35",
        "--kid-octet",
        "35",
        POR_3DES,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("RSC:   00"), "{out}");
    assert!(out.contains("data:  01 61 32 (3 octets)"), "{out}");
    assert!(out.contains("(valid)"), "{out}");
}

#[test]
fn encodes_the_aes_vector_byte_for_byte() {
    let (out, code) = gateway(&[
        "ota",
        "encode",
        "--kic",
        KIC_AES,
        "--kid",
        KID_AES,
        "--spi",
        "0619",
        "--kic-octet",
        "22",
        "--kid-octet",
        "22",
        "--tar",
        "b00011",
        "00a40004023f00",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("hex:   {CMD_AES}")), "{out}");
}

#[test]
fn a_polish_consent_text_goes_out_as_ucs2_in_two_segments() {
    let text = "mDokumenty: potwierdź udostępnienie danych dowodu osobistego dla: Urząd Gminy Warszawa-Bemowo. Podaj PIN";
    let (out, code) = gateway(&["text", "encode", "--reference", "66", text]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("encoding: UCS2 (104 characters"), "{out}");
    assert!(out.contains("SMS: 2 segment(s)"), "{out}");
    assert!(
        out.contains("segment 1/2: DCS 08, UDL 140, UDH 05 00 03 42 02 01"),
        "{out}"
    );
    assert!(
        out.contains("segment 2/2: DCS 08, UDL 80, UDH 05 00 03 42 02 02"),
        "{out}"
    );
}

#[test]
fn an_ascii_text_goes_out_as_gsm_7_bit() {
    let (out, code) = gateway(&["text", "encode", "hellohello"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("encoding: GSM 7-bit"), "{out}");
    assert!(out.contains("user data: e8329bfd4697d9ec37"), "{out}");
    assert!(out.contains("USSD: CBS DCS 0f"), "{out}");
}

#[test]
fn bad_hex_is_a_clear_error() {
    let (_, code) = gateway(&["ota", "decode", "--kic", "zz", "--kid", KID_3DES, CMD_3DES]);
    assert_eq!(code, 1);
}
