//! The authenticator's application protocol: the request the gateway puts in the data of a
//! secured command packet addressed to TAR `4D 43 41` ('MCA'), and the answer the card puts in
//! the data of the proof of receipt it sends back by SMS-SUBMIT. The byte layout is specified in
//! `docs/stk-applet-protocol.md`; this file is the one implementation of it, used by the card
//! (decode request, encode answer) and by the gateway (encode request, decode and verify answer).

use aes::Aes128;
use cmac::{Cmac, Mac};
use subtle::ConstantTimeEq;
use thiserror::Error;

/// The applet's Toolkit Application Reference: ASCII "MCA".
pub const TAR: [u8; 3] = [0x4D, 0x43, 0x41];
/// The only protocol version this card speaks.
pub const VERSION: u8 = 0x01;
/// Message type of a request (gateway to card).
pub const MSG_AUTH_REQUEST: u8 = 0x01;
/// Message type of an answer (card to gateway).
pub const MSG_AUTH_ANSWER: u8 = 0x81;
/// Length of the transaction id.
pub const TXID_LEN: usize = 8;
/// Length of the challenge.
pub const CHALLENGE_LEN: usize = 16;
/// Length of the card's MAC in an answer (full AES-CMAC).
pub const MAC_LEN: usize = 16;
/// Length of the fixed request header, before the TLVs.
pub const REQUEST_HEADER_LEN: usize = 30;
/// Length of an encoded answer.
pub const ANSWER_LEN: usize = 12 + MAC_LEN;
/// Upper bound on a whole request, so the card's buffer has a fixed size. Below the sum of the
/// field maxima on purpose: its secured packet (AES, CC: 10 + 384 = 394 octets) must fit 3
/// concatenated SMS (400 octets).
pub const MAX_REQUEST_LEN: usize = 370;
/// Bounds on the expiry, in seconds.
pub const MIN_EXPIRY_SECS: u16 = 10;
/// See [`MIN_EXPIRY_SECS`].
pub const MAX_EXPIRY_SECS: u16 = 600;

/// TLV tags of the request body.
pub mod tag {
    /// Relying-party (service) name, mandatory.
    pub const RP_NAME: u8 = 0x01;
    /// Consent text, mandatory.
    pub const CONSENT: u8 = 0x02;
    /// Binding / verification code, optional.
    pub const BINDING_CODE: u8 = 0x03;
    /// Question shown by GET INKEY / GET INPUT, optional (the card has a default).
    pub const QUESTION: u8 = 0x04;
    /// Tags at or above this value must be understood: an unknown one is an error.
    pub const CRITICAL_FROM: u8 = 0x80;
}

/// Maximum value lengths in octets, by tag.
/// (32 UCS2 characters: "Urząd Gminy Warszawa-Bemowo" is 27).
pub const MAX_RP_NAME: usize = 64;
/// See [`MAX_RP_NAME`].
/// (120 UCS2 characters: a Polish consent sentence with the RP name in it).
pub const MAX_CONSENT: usize = 240;
/// See [`MAX_RP_NAME`].
pub const MAX_BINDING_CODE: usize = 16;
/// See [`MAX_RP_NAME`].
pub const MAX_QUESTION: usize = 32;

/// Errors decoding or checking a request or an answer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtocolError {
    #[error("{field} truncated at offset {at}")]
    Truncated { field: &'static str, at: usize },
    #[error("message of {len} octets exceeds the {max}-octet limit")]
    TooLong { len: usize, max: usize },
    #[error("unsupported protocol version 0x{version:02x} at offset 0")]
    UnsupportedVersion { version: u8 },
    #[error("unexpected message type 0x{value:02x} at offset 1")]
    UnexpectedMessageType { value: u8 },
    #[error("invalid LoA 0x{value:02x} at offset 26")]
    InvalidLoa { value: u8 },
    #[error("expiry of {secs} s at offset 27 is outside {MIN_EXPIRY_SECS}..={MAX_EXPIRY_SECS}")]
    InvalidExpiry { secs: u16 },
    #[error("unknown text encoding 0x{value:02x} at offset 29")]
    UnknownEncoding { value: u8 },
    #[error("{field} of {len} octets at offset {at} exceeds {max}")]
    FieldTooLong {
        field: &'static str,
        len: usize,
        max: usize,
        at: usize,
    },
    #[error("{field} at offset {at} is not valid for the text encoding")]
    BadText { field: &'static str, at: usize },
    #[error("mandatory field {field} missing")]
    MissingField { field: &'static str },
    #[error("field tag 0x{tag:02x} repeated at offset {at}")]
    DuplicateField { tag: u8, at: usize },
    #[error("unknown critical field tag 0x{tag:02x} at offset {at}")]
    UnknownCriticalField { tag: u8, at: usize },
    #[error("unknown outcome 0x{value:02x} at offset 10")]
    UnknownOutcome { value: u8 },
    #[error("card MAC does not verify")]
    MacMismatch,
}

/// Level of assurance asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Loa {
    /// Yes/No confirmation (Mobile Connect "Authorise").
    Loa2,
    /// PIN checked on the card (Mobile Connect "Authorise Plus").
    Loa3,
}

impl Loa {
    /// Wire value.
    pub fn to_byte(self) -> u8 {
        match self {
            Loa::Loa2 => 2,
            Loa::Loa3 => 3,
        }
    }
}

/// The encoding of every text field of one request. The card copies the octets into CAT text
/// strings as they are, so it never transcodes; the value is the CAT text-string DCS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextEncoding {
    /// GSM 7-bit default alphabet, one septet per octet (CAT DCS 0x04).
    Gsm7Unpacked,
    /// UCS2 big-endian (CAT DCS 0x08).
    Ucs2,
}

impl TextEncoding {
    /// The CAT text string data coding scheme octet.
    pub fn dcs(self) -> u8 {
        match self {
            TextEncoding::Gsm7Unpacked => 0x04,
            TextEncoding::Ucs2 => 0x08,
        }
    }

    /// Parse a DCS octet.
    pub fn from_dcs(value: u8) -> Option<Self> {
        match value {
            0x04 => Some(TextEncoding::Gsm7Unpacked),
            0x08 => Some(TextEncoding::Ucs2),
            _ => None,
        }
    }

    /// Encode a string made of ASCII letters, digits, space and `?:.!` (the card's own fixed
    /// words) without a table: those code points are the same in GSM 7-bit and ASCII.
    pub fn encode_ascii(self, text: &str) -> Vec<u8> {
        let safe = |b: u8| b.is_ascii_alphanumeric() || b" ?:.!,".contains(&b);
        match self {
            TextEncoding::Gsm7Unpacked => text.bytes().filter(|b| safe(*b)).collect(),
            TextEncoding::Ucs2 => text
                .bytes()
                .filter(|b| safe(*b))
                .flat_map(|b| [0x00, b])
                .collect(),
        }
    }

    /// The line feed in this encoding.
    pub fn line_feed(self) -> &'static [u8] {
        match self {
            TextEncoding::Gsm7Unpacked => &[0x0A],
            TextEncoding::Ucs2 => &[0x00, 0x0A],
        }
    }

    fn valid(self, bytes: &[u8]) -> bool {
        match self {
            TextEncoding::Gsm7Unpacked => bytes.iter().all(|b| *b < 0x80),
            TextEncoding::Ucs2 => bytes.len() % 2 == 0,
        }
    }
}

/// An authentication request, gateway to card. Text fields hold octets in `encoding`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest {
    pub txid: [u8; TXID_LEN],
    pub challenge: [u8; CHALLENGE_LEN],
    pub loa: Loa,
    /// Seconds from the card's reception of the request after which the answer is "no response".
    pub expiry_secs: u16,
    pub encoding: TextEncoding,
    pub rp_name: Vec<u8>,
    pub consent: Vec<u8>,
    pub binding_code: Vec<u8>,
    pub question: Option<Vec<u8>>,
}

impl AuthRequest {
    /// Build a request from Rust strings, choosing GSM 7-bit when every text fits it and UCS2
    /// otherwise (one encoding for all fields, so the card can join them without transcoding).
    #[allow(clippy::too_many_arguments)] // one per protocol field; a builder would add nothing
    pub fn from_text(
        txid: [u8; TXID_LEN],
        challenge: [u8; CHALLENGE_LEN],
        loa: Loa,
        expiry_secs: u16,
        rp_name: &str,
        consent: &str,
        binding_code: &str,
        question: Option<&str>,
    ) -> Result<Self, crate::text::TextError> {
        type Encoder = fn(&str) -> Result<Vec<u8>, crate::text::TextError>;
        let all = [Some(rp_name), Some(consent), Some(binding_code), question];
        let gsm = all
            .iter()
            .flatten()
            .all(|t| crate::text::gsm7_encode(t).is_ok());
        let (encoding, enc): (TextEncoding, Encoder) = if gsm {
            (TextEncoding::Gsm7Unpacked, crate::text::gsm7_encode)
        } else {
            (TextEncoding::Ucs2, crate::text::ucs2_encode)
        };
        Ok(AuthRequest {
            txid,
            challenge,
            loa,
            expiry_secs,
            encoding,
            rp_name: enc(rp_name)?,
            consent: enc(consent)?,
            binding_code: enc(binding_code)?,
            question: question.map(enc).transpose()?,
        })
    }

    /// Encode. Fails if a field exceeds its bound (the gateway must shorten the text).
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut out =
            Vec::with_capacity(REQUEST_HEADER_LEN + 8 + self.rp_name.len() + self.consent.len());
        out.push(VERSION);
        out.push(MSG_AUTH_REQUEST);
        out.extend_from_slice(&self.txid);
        out.extend_from_slice(&self.challenge);
        out.push(self.loa.to_byte());
        if !(MIN_EXPIRY_SECS..=MAX_EXPIRY_SECS).contains(&self.expiry_secs) {
            return Err(ProtocolError::InvalidExpiry {
                secs: self.expiry_secs,
            });
        }
        out.extend_from_slice(&self.expiry_secs.to_be_bytes());
        out.push(self.encoding.dcs());
        let fields: [(u8, &'static str, Option<&[u8]>, usize); 4] = [
            (tag::RP_NAME, "rp_name", Some(&self.rp_name), MAX_RP_NAME),
            (tag::CONSENT, "consent", Some(&self.consent), MAX_CONSENT),
            (
                tag::BINDING_CODE,
                "binding_code",
                (!self.binding_code.is_empty()).then_some(&self.binding_code[..]),
                MAX_BINDING_CODE,
            ),
            (
                tag::QUESTION,
                "question",
                self.question.as_deref(),
                MAX_QUESTION,
            ),
        ];
        for (t, field, value, max) in fields {
            let Some(value) = value else { continue };
            if value.len() > max {
                return Err(ProtocolError::FieldTooLong {
                    field,
                    len: value.len(),
                    max,
                    at: out.len(),
                });
            }
            if !self.encoding.valid(value) {
                return Err(ProtocolError::BadText {
                    field,
                    at: out.len(),
                });
            }
            out.push(t);
            out.push(value.len() as u8);
            out.extend_from_slice(value);
        }
        if out.len() > MAX_REQUEST_LEN {
            return Err(ProtocolError::TooLong {
                len: out.len(),
                max: MAX_REQUEST_LEN,
            });
        }
        Ok(out)
    }

    /// Decode a request. Trailing octets after the last TLV are not allowed (they would be
    /// cipher padding, which the OTA layer has already removed using PCNTR).
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        if bytes.len() > MAX_REQUEST_LEN {
            return Err(ProtocolError::TooLong {
                len: bytes.len(),
                max: MAX_REQUEST_LEN,
            });
        }
        let version = *bytes.first().ok_or(ProtocolError::Truncated {
            field: "version",
            at: 0,
        })?;
        if version != VERSION {
            return Err(ProtocolError::UnsupportedVersion { version });
        }
        let mtype = *bytes.get(1).ok_or(ProtocolError::Truncated {
            field: "message type",
            at: 1,
        })?;
        if mtype != MSG_AUTH_REQUEST {
            return Err(ProtocolError::UnexpectedMessageType { value: mtype });
        }
        let txid: [u8; TXID_LEN] = take_array(bytes, 2, "transaction id")?;
        let challenge: [u8; CHALLENGE_LEN] = take_array(bytes, 10, "challenge")?;
        let loa = match *bytes.get(26).ok_or(ProtocolError::Truncated {
            field: "loa",
            at: 26,
        })? {
            2 => Loa::Loa2,
            3 => Loa::Loa3,
            value => return Err(ProtocolError::InvalidLoa { value }),
        };
        let expiry_secs = u16::from_be_bytes(take_array(bytes, 27, "expiry")?);
        if !(MIN_EXPIRY_SECS..=MAX_EXPIRY_SECS).contains(&expiry_secs) {
            return Err(ProtocolError::InvalidExpiry { secs: expiry_secs });
        }
        let dcs = *bytes.get(29).ok_or(ProtocolError::Truncated {
            field: "text encoding",
            at: 29,
        })?;
        let encoding =
            TextEncoding::from_dcs(dcs).ok_or(ProtocolError::UnknownEncoding { value: dcs })?;

        let mut rp_name = None;
        let mut consent = None;
        let mut binding_code = None;
        let mut question = None;
        let mut at = REQUEST_HEADER_LEN;
        while at < bytes.len() {
            let t = bytes[at];
            let len = *bytes.get(at + 1).ok_or(ProtocolError::Truncated {
                field: "TLV length",
                at: at + 1,
            })? as usize;
            let value = bytes
                .get(at + 2..at + 2 + len)
                .ok_or(ProtocolError::Truncated {
                    field: "TLV value",
                    at: at + 2,
                })?;
            let (slot, field, max) = match t {
                tag::RP_NAME => (&mut rp_name, "rp_name", MAX_RP_NAME),
                tag::CONSENT => (&mut consent, "consent", MAX_CONSENT),
                tag::BINDING_CODE => (&mut binding_code, "binding_code", MAX_BINDING_CODE),
                tag::QUESTION => (&mut question, "question", MAX_QUESTION),
                t if t >= tag::CRITICAL_FROM => {
                    return Err(ProtocolError::UnknownCriticalField { tag: t, at })
                }
                _ => {
                    // Forward compatibility: a later gateway may add fields an older card ignores.
                    at += 2 + len;
                    continue;
                }
            };
            if slot.is_some() {
                return Err(ProtocolError::DuplicateField { tag: t, at });
            }
            if len > max {
                return Err(ProtocolError::FieldTooLong {
                    field,
                    len,
                    max,
                    at,
                });
            }
            if !encoding.valid(value) {
                return Err(ProtocolError::BadText { field, at: at + 2 });
            }
            *slot = Some(value.to_vec());
            at += 2 + len;
        }
        Ok(AuthRequest {
            txid,
            challenge,
            loa,
            expiry_secs,
            encoding,
            rp_name: rp_name.ok_or(ProtocolError::MissingField { field: "rp_name" })?,
            consent: consent.ok_or(ProtocolError::MissingField { field: "consent" })?,
            binding_code: binding_code.unwrap_or_default(),
            question,
        })
    }

    /// The transaction id of a request that may not decode, for an error answer: the id is at a
    /// fixed offset so a card can echo it even when a later field is wrong.
    pub fn peek_txid(bytes: &[u8]) -> Option<[u8; TXID_LEN]> {
        take_array(bytes, 2, "transaction id").ok()
    }
}

fn take_array<const N: usize>(
    bytes: &[u8],
    at: usize,
    field: &'static str,
) -> Result<[u8; N], ProtocolError> {
    bytes
        .get(at..at + N)
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or(ProtocolError::Truncated { field, at })
}

/// Why a request ended in an error answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request did not decode.
    MalformedRequest,
    /// The request's version is not 1.
    UnsupportedVersion,
    /// The request carries a critical field this card does not know.
    UnsupportedField,
    /// The handset could not run the dialog (terminal busy, command not understood ...).
    TerminalFailure,
    /// The PUK is blocked too: the card needs replacing.
    CardLocked,
    /// Another code not known to this version.
    Other(u8),
}

impl ErrorCode {
    /// Wire value (the answer's detail octet).
    pub fn to_byte(self) -> u8 {
        match self {
            ErrorCode::MalformedRequest => 0x01,
            ErrorCode::UnsupportedVersion => 0x02,
            ErrorCode::UnsupportedField => 0x03,
            ErrorCode::TerminalFailure => 0x04,
            ErrorCode::CardLocked => 0x05,
            ErrorCode::Other(v) => v,
        }
    }

    /// Parse a detail octet.
    pub fn from_byte(v: u8) -> Self {
        match v {
            0x01 => ErrorCode::MalformedRequest,
            0x02 => ErrorCode::UnsupportedVersion,
            0x03 => ErrorCode::UnsupportedField,
            0x04 => ErrorCode::TerminalFailure,
            0x05 => ErrorCode::CardLocked,
            v => ErrorCode::Other(v),
        }
    }

    /// The error answer for a request that failed to decode.
    pub fn for_decode_error(e: &ProtocolError) -> Self {
        match e {
            ProtocolError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            ProtocolError::UnknownCriticalField { .. } => ErrorCode::UnsupportedField,
            _ => ErrorCode::MalformedRequest,
        }
    }
}

/// How a transaction ended, with its detail octet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The user confirmed: by Yes (LoA2) or by a PIN the card verified (LoA3).
    Approved { loa: Loa },
    /// The user said No, or ended the session.
    Denied { reason: DenyReason },
    /// The user did not answer within the handset's timer or the request's expiry.
    NoResponse { expired: bool },
    /// The PIN is blocked; `now` is true when this request's wrong PINs blocked it.
    PinBlocked { now: bool },
    /// Something else went wrong.
    Error(ErrorCode),
}

/// Why a transaction was denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// GET INKEY answered No.
    UserSaidNo,
    /// TERMINAL RESPONSE 10 (session terminated by user) or 11 (backward move).
    SessionTerminated,
}

impl Outcome {
    /// The (outcome, detail) octets.
    pub fn to_bytes(self) -> [u8; 2] {
        match self {
            Outcome::Approved { loa } => [0x00, loa.to_byte()],
            Outcome::Denied {
                reason: DenyReason::UserSaidNo,
            } => [0x01, 0x00],
            Outcome::Denied {
                reason: DenyReason::SessionTerminated,
            } => [0x01, 0x01],
            Outcome::NoResponse { expired } => [0x02, u8::from(expired)],
            Outcome::PinBlocked { now } => [0x03, u8::from(now)],
            Outcome::Error(code) => [0x04, code.to_byte()],
        }
    }

    /// Parse (outcome, detail); unknown details of known outcomes map to the nearest meaning.
    pub fn from_bytes(outcome: u8, detail: u8) -> Result<Self, ProtocolError> {
        Ok(match outcome {
            0x00 => Outcome::Approved {
                loa: if detail == 3 { Loa::Loa3 } else { Loa::Loa2 },
            },
            0x01 => Outcome::Denied {
                reason: if detail == 0 {
                    DenyReason::UserSaidNo
                } else {
                    DenyReason::SessionTerminated
                },
            },
            0x02 => Outcome::NoResponse {
                expired: detail != 0,
            },
            0x03 => Outcome::PinBlocked { now: detail != 0 },
            0x04 => Outcome::Error(ErrorCode::from_byte(detail)),
            value => return Err(ProtocolError::UnknownOutcome { value }),
        })
    }
}

/// The card's answer, carried in the data of the PoR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthAnswer {
    pub txid: [u8; TXID_LEN],
    pub outcome: Outcome,
    pub mac: [u8; MAC_LEN],
}

impl AuthAnswer {
    /// Build and MAC an answer on the card. `counter` is the CNTR of the command packet that
    /// carried the request (echoed in the PoR too); `challenge` is zeros when the request did
    /// not decode.
    pub fn new_signed(
        k_auth: &[u8; 16],
        counter: [u8; 5],
        txid: [u8; TXID_LEN],
        challenge: &[u8; CHALLENGE_LEN],
        outcome: Outcome,
    ) -> Self {
        let mac = answer_mac(k_auth, counter, &txid, challenge, outcome);
        AuthAnswer { txid, outcome, mac }
    }

    /// Encode to the 28 octets of the PoR data.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ANSWER_LEN);
        out.push(VERSION);
        out.push(MSG_AUTH_ANSWER);
        out.extend_from_slice(&self.txid);
        out.extend_from_slice(&self.outcome.to_bytes());
        out.extend_from_slice(&self.mac);
        out
    }

    /// Decode. Octets after the MAC are ignored (cipher padding or a later version's additions).
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let version = *bytes.first().ok_or(ProtocolError::Truncated {
            field: "version",
            at: 0,
        })?;
        if version != VERSION {
            return Err(ProtocolError::UnsupportedVersion { version });
        }
        let mtype = *bytes.get(1).ok_or(ProtocolError::Truncated {
            field: "message type",
            at: 1,
        })?;
        if mtype != MSG_AUTH_ANSWER {
            return Err(ProtocolError::UnexpectedMessageType { value: mtype });
        }
        let txid = take_array(bytes, 2, "transaction id")?;
        let [o, d]: [u8; 2] = take_array(bytes, 10, "outcome")?;
        let outcome = Outcome::from_bytes(o, d)?;
        let mac = take_array(bytes, 12, "mac")?;
        Ok(AuthAnswer { txid, outcome, mac })
    }

    /// Gateway side: check the card's MAC against what the gateway sent. Constant time.
    pub fn verify(
        &self,
        k_auth: &[u8; 16],
        counter: [u8; 5],
        challenge: &[u8; CHALLENGE_LEN],
    ) -> Result<(), ProtocolError> {
        // The outcome is MACed in its wire form; an unknown detail that decoded to a nearby
        // meaning re-encodes differently and fails here, which is the safe direction.
        let expected = answer_mac(k_auth, counter, &self.txid, challenge, self.outcome);
        if bool::from(expected.ct_eq(&self.mac)) {
            Ok(())
        } else {
            Err(ProtocolError::MacMismatch)
        }
    }
}

/// The exact MAC input (36 octets): `"MCA" || version || 0x81 || CNTR(5) || txid(8) ||
/// challenge(16) || outcome || detail`.
pub fn answer_mac_input(
    counter: [u8; 5],
    txid: &[u8; TXID_LEN],
    challenge: &[u8; CHALLENGE_LEN],
    outcome: Outcome,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(36);
    m.extend_from_slice(&TAR);
    m.push(VERSION);
    m.push(MSG_AUTH_ANSWER);
    m.extend_from_slice(&counter);
    m.extend_from_slice(txid);
    m.extend_from_slice(challenge);
    m.extend_from_slice(&outcome.to_bytes());
    m
}

/// AES-CMAC (full 16 octets) with the card's authentication key over [`answer_mac_input`].
pub fn answer_mac(
    k_auth: &[u8; 16],
    counter: [u8; 5],
    txid: &[u8; TXID_LEN],
    challenge: &[u8; CHALLENGE_LEN],
    outcome: Outcome,
) -> [u8; MAC_LEN] {
    let mut mac = <Cmac<Aes128> as cmac::digest::KeyInit>::new(k_auth.into());
    mac.update(&answer_mac_input(counter, txid, challenge, outcome));
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample() -> AuthRequest {
        AuthRequest {
            txid: [1, 2, 3, 4, 5, 6, 7, 8],
            challenge: [0xAA; 16],
            loa: Loa::Loa3,
            expiry_secs: 120,
            encoding: TextEncoding::Gsm7Unpacked,
            rp_name: b"mObywatel".to_vec(),
            consent: b"Login to ePUAP".to_vec(),
            binding_code: b"4821".to_vec(),
            question: None,
        }
    }

    #[test]
    fn request_round_trips() {
        let r = sample();
        let bytes = r.encode().unwrap();
        assert_eq!(bytes[..2], [0x01, 0x01]);
        assert_eq!(AuthRequest::decode(&bytes).unwrap(), r);
    }

    #[test]
    fn unknown_optional_tag_is_skipped_and_critical_tag_refused() {
        let mut bytes = sample().encode().unwrap();
        bytes.extend_from_slice(&[0x20, 0x02, 0xAB, 0xCD]);
        assert_eq!(AuthRequest::decode(&bytes).unwrap(), sample());
        let at = bytes.len();
        bytes.extend_from_slice(&[0x90, 0x00]);
        assert_eq!(
            AuthRequest::decode(&bytes),
            Err(ProtocolError::UnknownCriticalField { tag: 0x90, at })
        );
    }

    #[test]
    fn missing_consent_is_refused() {
        let mut bytes = sample().encode().unwrap();
        bytes.truncate(REQUEST_HEADER_LEN + 2 + 9);
        assert_eq!(
            AuthRequest::decode(&bytes),
            Err(ProtocolError::MissingField { field: "consent" })
        );
    }

    #[test]
    fn truncated_tlv_names_offset() {
        let mut bytes = sample().encode().unwrap();
        bytes.truncate(REQUEST_HEADER_LEN + 5);
        assert_eq!(
            AuthRequest::decode(&bytes),
            Err(ProtocolError::Truncated {
                field: "TLV value",
                at: REQUEST_HEADER_LEN + 2
            })
        );
    }

    #[test]
    fn over_long_field_is_refused_both_ways() {
        let mut r = sample();
        r.consent = vec![b'a'; MAX_CONSENT + 1];
        assert!(matches!(
            r.encode(),
            Err(ProtocolError::FieldTooLong {
                field: "consent",
                ..
            })
        ));
    }

    #[test]
    fn answer_mac_verifies_and_detects_tampering() {
        let k = [7u8; 16];
        let ch = [9u8; 16];
        let cntr = [0, 0, 0, 0, 5];
        let a = AuthAnswer::new_signed(&k, cntr, [1; 8], &ch, Outcome::Approved { loa: Loa::Loa3 });
        let bytes = a.encode();
        assert_eq!(bytes.len(), ANSWER_LEN);
        let d = AuthAnswer::decode(&bytes).unwrap();
        assert_eq!(d, a);
        d.verify(&k, cntr, &ch).unwrap();
        assert_eq!(
            d.verify(&k, [0, 0, 0, 0, 6], &ch),
            Err(ProtocolError::MacMismatch)
        );
        let mut flipped = bytes.clone();
        flipped[10] = 0x01; // approved -> denied
        let d2 = AuthAnswer::decode(&flipped).unwrap();
        assert_eq!(d2.verify(&k, cntr, &ch), Err(ProtocolError::MacMismatch));
    }

    #[test]
    fn polish_text_goes_out_as_ucs2_and_ascii_as_gsm() {
        let r = AuthRequest::from_text(
            [0; 8],
            [0; 16],
            Loa::Loa2,
            60,
            "Gov.pl",
            "Zaloguj",
            "12",
            None,
        )
        .unwrap();
        assert_eq!(r.encoding, TextEncoding::Gsm7Unpacked);
        assert_eq!(r.consent, b"Zaloguj");
        let r = AuthRequest::from_text(
            [0; 8],
            [0; 16],
            Loa::Loa2,
            60,
            "Gov.pl",
            "Potwierdź",
            "12",
            None,
        )
        .unwrap();
        assert_eq!(r.encoding, TextEncoding::Ucs2);
        assert_eq!(
            r.rp_name,
            [0, b'G', 0, b'o', 0, b'v', 0, b'.', 0, b'p', 0, b'l']
        );
        assert_eq!(AuthRequest::decode(&r.encode().unwrap()).unwrap(), r);
    }

    #[test]
    fn mac_input_is_36_octets() {
        let m = answer_mac_input(
            [0; 5],
            &[0; 8],
            &[0; 16],
            Outcome::NoResponse { expired: true },
        );
        assert_eq!(m.len(), 36);
        assert_eq!(&m[..5], &[0x4D, 0x43, 0x41, 0x01, 0x81]);
        assert_eq!(&m[34..], &[0x02, 0x01]);
    }

    proptest::proptest! {
        #[test]
        fn request_decoder_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = AuthRequest::decode(&bytes);
            let _ = AuthAnswer::decode(&bytes);
        }
    }
}
