//! SMS-PP data download over SMPP: secured command packets out, proofs of receipt back.
//!
//! Outgoing, [`build_submits`] wraps a secured command packet (TS 31.115) in one or more
//! `submit_sm` with `protocol_id` 0x7F (SIM data download), `data_coding` 0xF6 (8-bit,
//! class 2) and UDHI set; the user data starts with the command-packet IEI `70 00`, and a
//! packet longer than 137 octets is split with the 8-bit concatenation IEI `00` (IEI 0x70 in
//! the first segment, after the concatenation IE).
//!
//! Incoming, the card's answer arrives as an ordinary MO `deliver_sm` (PID 0x7F, UDH with the
//! response-packet IEI `71 00`, maybe concatenated). [`Reassembler::push`] collects segments per
//! (MSISDN, reference) with a bound on pending messages and an age limit, and returns the
//! response packet without the UDH (its CC covers the header `02 71 00`: prepend it again).

use sim_applet_model::cat::tpdu::command_segments;
use std::collections::HashMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use rusmpp::{
    pdus::{DeliverSm, SubmitSm},
    types::{COctetString, OctetString},
    values::{DataCoding, EsmClass, Npi, Ton},
};

/// Errors of the SMS-PP transport.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmsPpError {
    /// The packet needs more segments than a card reassembles
    /// ([`sim_applet_model::cat::tpdu::MAX_SEGMENTS`]).
    #[error("secured packet of {len} octets needs more SMS segments than a card reassembles")]
    TooLong { len: usize },
    /// An address does not fit its field.
    #[error("field `{field}` is invalid")]
    BadField { field: &'static str },
    /// Not a SIM data download answer (PID or UDHI missing).
    #[error("deliver_sm is not an SMS-PP answer (protocol_id 0x{pid:02X}, esm_class 0x{esm:02X})")]
    NotSmsPp { pid: u8, esm: u8 },
    /// The UDH is malformed.
    #[error("malformed UDH at offset {at}")]
    BadUdh { at: usize },
}

fn submit(dest: &str, src: &str, ud: Vec<u8>) -> Result<SubmitSm, SmsPpError> {
    Ok(SubmitSm::builder()
        .source_addr_ton(Ton::Unknown)
        .source_addr_npi(Npi::Unknown)
        .source_addr(
            COctetString::from_str(src).map_err(|_| SmsPpError::BadField {
                field: "source_addr",
            })?,
        )
        .dest_addr_ton(Ton::International)
        .dest_addr_npi(Npi::Isdn)
        .destination_addr(
            COctetString::from_str(dest).map_err(|_| SmsPpError::BadField {
                field: "destination_addr",
            })?,
        )
        .esm_class(EsmClass::from(0x40))
        .protocol_id(0x7F)
        .data_coding(DataCoding::from(0xF6))
        .short_message(OctetString::from_vec(ud).map_err(|_| SmsPpError::BadField {
            field: "short_message",
        })?)
        .build())
}

/// `submit_sm`s carrying `packet` (a secured command packet from CPL on) to `dest`;
/// `reference` is the concatenation reference used when it needs several SMS.
pub fn build_submits(
    dest: &str,
    src: &str,
    packet: &[u8],
    reference: u8,
) -> Result<Vec<SubmitSm>, SmsPpError> {
    // One segmentation for both sides: the card model reassembles what this layout produces.
    let segments = command_segments(packet, reference)
        .map_err(|_| SmsPpError::TooLong { len: packet.len() })?;
    segments
        .into_iter()
        .map(|ud| submit(dest, src, ud))
        .collect()
}

#[derive(Debug)]
struct Partial {
    started: Instant,
    parts: Vec<Option<Vec<u8>>>,
}

/// Collects SMS-PP answers, concatenated or not, with bounded state.
#[derive(Debug)]
pub struct Reassembler {
    max_pending: usize,
    max_age: Duration,
    pending: HashMap<(String, u16), Partial>,
}

impl Reassembler {
    /// At most `max_pending` incomplete messages, each kept at most `max_age`.
    pub fn new(max_pending: usize, max_age: Duration) -> Self {
        Self {
            max_pending,
            max_age,
            pending: HashMap::new(),
        }
    }

    /// Incomplete messages held.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Drops incomplete messages older than `max_age`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let max_age = self.max_age;
        self.pending
            .retain(|_, p| now.saturating_duration_since(p.started) < max_age);
    }

    /// Feeds one `deliver_sm`; returns the whole response packet once complete.
    pub fn push(
        &mut self,
        now: Instant,
        deliver: &DeliverSm,
    ) -> Result<Option<Vec<u8>>, SmsPpError> {
        let esm = u8::from(deliver.esm_class);
        if deliver.protocol_id != 0x7F || esm & 0x40 == 0 {
            return Err(SmsPpError::NotSmsPp {
                pid: deliver.protocol_id,
                esm,
            });
        }
        let ud = deliver.short_message().as_ref();
        let udhl = usize::from(*ud.first().ok_or(SmsPpError::BadUdh { at: 0 })?);
        let udh = ud.get(1..1 + udhl).ok_or(SmsPpError::BadUdh { at: 0 })?;
        let payload = &ud[1 + udhl..];
        let mut concat = None;
        let mut i = 0;
        while i < udh.len() {
            let iei = udh[i];
            let len = usize::from(*udh.get(i + 1).ok_or(SmsPpError::BadUdh { at: 1 + i })?);
            let data = udh
                .get(i + 2..i + 2 + len)
                .ok_or(SmsPpError::BadUdh { at: 1 + i })?;
            match (iei, data) {
                (0x00, [r, total, seq]) => concat = Some((u16::from(*r), *total, *seq)),
                (0x08, [r1, r2, total, seq]) => {
                    concat = Some((u16::from_be_bytes([*r1, *r2]), *total, *seq))
                }
                (0x00 | 0x08, _) => return Err(SmsPpError::BadUdh { at: 1 + i }),
                _ => {}
            }
            i += 2 + len;
        }
        let Some((reference, total, seq)) = concat else {
            return Ok(Some(payload.to_vec()));
        };
        if total == 0 || seq == 0 || seq > total {
            return Err(SmsPpError::BadUdh { at: 1 });
        }
        let key = (deliver.source_addr.to_string(), reference);
        if !self.pending.contains_key(&key) && self.pending.len() >= self.max_pending {
            // Evict the oldest: a flood of first segments must not grow memory.
            if let Some(oldest) = self
                .pending
                .iter()
                .min_by_key(|(_, p)| p.started)
                .map(|(k, _)| k.clone())
            {
                self.pending.remove(&oldest);
            }
        }
        let entry = self.pending.entry(key.clone()).or_insert_with(|| Partial {
            started: now,
            parts: vec![None; usize::from(total)],
        });
        if entry.parts.len() != usize::from(total) {
            return Err(SmsPpError::BadUdh { at: 1 });
        }
        entry.parts[usize::from(seq) - 1] = Some(payload.to_vec());
        if entry.parts.iter().all(Option::is_some) {
            let whole = self
                .pending
                .remove(&key)
                .map(|p| p.parts.into_iter().flatten().flatten().collect());
            return Ok(whole);
        }
        Ok(None)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn deliver(ud: Vec<u8>) -> DeliverSm {
        DeliverSm::builder()
            .source_addr(COctetString::from_str("48600100200").unwrap())
            .esm_class(EsmClass::from(0x40))
            .protocol_id(0x7F)
            .data_coding(DataCoding::from(0xF6))
            .short_message(OctetString::from_vec(ud).unwrap())
            .build()
    }

    #[test]
    fn short_packet_is_one_sms_with_the_command_header() {
        let packet = [0xAB; 137];
        let sms = build_submits("486", "OTA", &packet, 1).unwrap();
        assert_eq!(sms.len(), 1);
        let ud = sms[0].short_message().as_ref();
        assert_eq!(&ud[..3], &[0x02, 0x70, 0x00]);
        assert_eq!(ud.len(), 140);
        assert_eq!(sms[0].protocol_id, 0x7F);
        assert_eq!(u8::from(sms[0].data_coding), 0xF6);
        assert_eq!(u8::from(sms[0].esm_class), 0x40);
    }

    #[test]
    fn long_packet_is_concatenated_with_0x70_in_the_first_segment() {
        let packet: Vec<u8> = (0..300u16).map(|i| i as u8).collect();
        let sms = build_submits("486", "OTA", &packet, 9).unwrap();
        assert_eq!(sms.len(), 3);
        let first = sms[0].short_message().as_ref();
        assert_eq!(&first[..8], &[0x07, 0x00, 0x03, 9, 3, 1, 0x70, 0x00]);
        let second = sms[1].short_message().as_ref();
        assert_eq!(&second[..6], &[0x05, 0x00, 0x03, 9, 3, 2]);
        let mut joined = first[8..].to_vec();
        joined.extend_from_slice(&second[6..]);
        joined.extend_from_slice(&sms[2].short_message().as_ref()[6..]);
        assert_eq!(joined, packet);
        assert!(sms.iter().all(|s| s.short_message().as_ref().len() <= 140));
    }

    #[test]
    fn single_por_is_returned_without_the_udh() {
        let por =
            hex::decode("001c12b000118bb989492c632529326a2f4681feb37c825bc9021c9f6d0b").unwrap();
        let mut ud = vec![0x02, 0x71, 0x00];
        ud.extend_from_slice(&por);
        let mut r = Reassembler::new(4, Duration::from_secs(60));
        assert_eq!(r.push(Instant::now(), &deliver(ud)).unwrap(), Some(por));
    }

    #[test]
    fn concatenated_por_is_reassembled_in_any_order() {
        let t0 = Instant::now();
        let mut r = Reassembler::new(4, Duration::from_secs(60));
        let p2 = deliver(vec![0x05, 0x00, 0x03, 7, 2, 2, 0xCC, 0xDD]);
        let p1 = deliver(vec![0x07, 0x00, 0x03, 7, 2, 1, 0x71, 0x00, 0xAA, 0xBB]);
        assert_eq!(r.push(t0, &p2).unwrap(), None);
        assert_eq!(r.pending(), 1);
        assert_eq!(r.push(t0, &p1).unwrap(), Some(vec![0xAA, 0xBB, 0xCC, 0xDD]));
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn pending_messages_are_bounded_and_expire() {
        let t0 = Instant::now();
        let mut r = Reassembler::new(2, Duration::from_secs(10));
        for reference in 0..5u8 {
            r.push(t0, &deliver(vec![0x05, 0x00, 0x03, reference, 2, 1, 0x00]))
                .unwrap();
        }
        assert_eq!(r.pending(), 2);
        r.handle_timeout(t0 + Duration::from_secs(10));
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn non_smspp_deliver_is_refused() {
        let d = DeliverSm::builder().build();
        assert!(matches!(
            Reassembler::new(1, Duration::from_secs(1)).push(Instant::now(), &d),
            Err(SmsPpError::NotSmsPp { .. })
        ));
    }

    #[test]
    fn truncated_udh_is_an_error_not_a_panic() {
        let mut r = Reassembler::new(1, Duration::from_secs(1));
        assert!(r
            .push(Instant::now(), &deliver(vec![0x09, 0x00, 0x03]))
            .is_err());
        assert!(r
            .push(Instant::now(), &deliver(vec![0x03, 0x00, 0x05, 1]))
            .is_err());
        assert!(r.push(Instant::now(), &deliver(vec![])).is_err());
    }
}
