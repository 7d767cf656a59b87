//! The gateway's side of the applet protocol: wrap an [`AuthRequest`] in a secured command
//! packet (one SMS, or concatenated SMS when long) and open the card's answer from an MO SMS:
//! check the PoR's own CC, read RSC and counter, then the card's MAC over the challenge.

use thiserror::Error;

use super::protocol::{AuthAnswer, AuthRequest, Outcome, ProtocolError, CHALLENGE_LEN, TAR};
use super::state::CardSecrets;
use crate::cat::tpdu::{command_segments, MAX_CONCATENATED_PACKET, MAX_SEGMENTS};
use crate::ota::{
    decode_response, Algorithm, ChecksumKind, CommandPacket, Counter, CounterPolicy, KeySet, Kic,
    Kid, OtaError, PorRequired, PorSecurity, ResponseStatus, Spi,
};

/// SPI the gateway sends: CC, ciphered, counter must be higher; PoR required, with CC,
/// ciphered, by SMS-SUBMIT. Octets `16 39`.
pub fn request_spi() -> Spi {
    Spi {
        checksum: ChecksumKind::Cc,
        ciphered: true,
        counter: CounterPolicy::Higher,
        por: PorRequired::Required,
        por_checksum: ChecksumKind::Cc,
        por_ciphered: true,
        por_via_sms_submit: true,
        reserved: [0, 0],
    }
}

/// KIc of the applet's key set: index 1, AES (octet `12`).
pub fn applet_kic() -> Kic {
    Kic::new(1, Algorithm::Aes)
}

/// KID of the applet's key set: index 1, AES-CMAC (octet `12`).
pub fn applet_kid() -> Kid {
    Kid::new(1, Algorithm::Aes)
}

/// The OTA key set of a card's applet.
pub fn applet_key_set(secrets: &CardSecrets) -> KeySet {
    KeySet {
        kic_key: secrets.kic_key.to_vec(),
        kid_key: secrets.kid_key.to_vec(),
    }
}

/// Longest SMS user data.
pub const SMS_USER_DATA_MAX: usize = 140;

/// Why the gateway could not build a request or accept an answer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GatewayError {
    #[error("OTA: {0}")]
    Ota(#[from] OtaError),
    #[error("applet message: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("PoR for TAR {tar:02x?}, not the applet's")]
    WrongTar { tar: [u8; 3] },
    #[error("PoR counter {got} does not match the request's {expected}")]
    CounterMismatch { expected: u64, got: u64 },
    #[error("card refused the command packet with status {status:?}")]
    Rejected { status: ResponseStatus },
    #[error("PoR status OK but it carries no answer")]
    MissingAnswer,
    #[error("command packet of {len} octets does not fit {MAX_SEGMENTS} concatenated SMS ({MAX_CONCATENATED_PACKET} octets)")]
    TooManySegments { len: usize },
}

/// Build the SMS user data (each with its UDH) carrying `request` under counter `counter`: one
/// element when the packet fits one SMS, else 2..=[`MAX_SEGMENTS`] concatenated segments with
/// reference `concat_ref` (see [`split_command_sms`]). Send them all to the same MSISDN; the
/// order does not matter, the card reassembles. A version-1 request (at most
/// [`MAX_REQUEST_LEN`](super::protocol::MAX_REQUEST_LEN) octets) needs at most 3 segments.
pub fn build_request_sms(
    secrets: &CardSecrets,
    counter: u64,
    request: &AuthRequest,
    concat_ref: u8,
) -> Result<Vec<Vec<u8>>, GatewayError> {
    let bytes = build_request_packet(secrets, counter, request)?;
    split_command_sms(&bytes, concat_ref)
}

/// The secured command packet (from CPL on, no UDH) carrying `request`, for a caller that does
/// its own SMS segmentation; [`build_request_sms`] is this plus [`split_command_sms`].
pub fn build_request_packet(
    secrets: &CardSecrets,
    counter: u64,
    request: &AuthRequest,
) -> Result<Vec<u8>, GatewayError> {
    let packet = CommandPacket {
        spi: request_spi(),
        kic: applet_kic(),
        kid: applet_kid(),
        tar: TAR,
        counter: Counter::new(counter)?,
        data: request.encode()?,
    };
    Ok(packet.encode(&applet_key_set(secrets))?)
}

/// Wrap an encoded command packet as SMS user data: `02 70 00 | packet` when it fits one SMS
/// (137 octets), else concatenated: first segment `07 00 03 ref n 1 70 00 | 132 octets`, later
/// ones `05 00 03 ref n k | up to 134 octets`. The gateway should vary `concat_ref` per message
/// to a card (e.g. the low octet of the counter) so segments of two requests never mix.
pub fn split_command_sms(packet: &[u8], concat_ref: u8) -> Result<Vec<Vec<u8>>, GatewayError> {
    if packet.len() > MAX_CONCATENATED_PACKET {
        return Err(GatewayError::TooManySegments { len: packet.len() });
    }
    command_segments(packet, concat_ref)
        .map_err(|_| GatewayError::TooManySegments { len: packet.len() })
}

/// A PoR from the applet, opened but not yet matched to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardReply {
    /// CNTR of the command packet answered: the gateway finds its pending request by it.
    pub counter: u64,
    /// RSC: `PorOk` with an answer, or why the card refused the packet.
    pub status: ResponseStatus,
    /// The applet's answer, present when the status is OK.
    pub answer: Option<AuthAnswer>,
}

/// Open an MO SMS user data (`02 71 00 ...`) from the applet: PoR CC checked with the card's OTA
/// keys. The MAC is checked by [`verify_answer`] once the request is found by the counter.
pub fn open_answer_sms(secrets: &CardSecrets, user_data: &[u8]) -> Result<CardReply, GatewayError> {
    let sec = PorSecurity {
        checksum: ChecksumKind::Cc,
        ciphered: true,
        kic: applet_kic(),
        kid: applet_kid(),
    };
    let decoded = decode_response(user_data, &sec, &applet_key_set(secrets))?;
    let p = decoded.packet;
    if p.tar != TAR {
        return Err(GatewayError::WrongTar { tar: p.tar });
    }
    let answer = if p.status == ResponseStatus::PorOk {
        Some(AuthAnswer::decode(&p.data)?)
    } else {
        None
    };
    Ok(CardReply {
        counter: p.counter.value(),
        status: p.status,
        answer,
    })
}

/// Check a reply against the request it answers; returns the authenticated outcome.
pub fn verify_answer(
    secrets: &CardSecrets,
    reply: &CardReply,
    sent_counter: u64,
    sent_txid: &[u8; 8],
    sent_challenge: &[u8; CHALLENGE_LEN],
) -> Result<Outcome, GatewayError> {
    if reply.counter != sent_counter {
        return Err(GatewayError::CounterMismatch {
            expected: sent_counter,
            got: reply.counter,
        });
    }
    if reply.status != ResponseStatus::PorOk {
        return Err(GatewayError::Rejected {
            status: reply.status,
        });
    }
    let answer = reply.answer.as_ref().ok_or(GatewayError::MissingAnswer)?;
    let cntr = Counter::new(sent_counter)?.to_bytes();
    answer.verify(&secrets.k_auth, cntr, sent_challenge)?;
    if &answer.txid != sent_txid {
        // The MAC covered the txid the card saw; a different one means a mix-up on our side.
        return Err(GatewayError::Protocol(ProtocolError::MacMismatch));
    }
    Ok(answer.outcome)
}
