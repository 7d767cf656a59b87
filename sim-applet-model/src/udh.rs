//! The SMS user data header (TS 23.040 §9.2.3.24) and the joining of concatenated messages:
//! one parser and one bounded reassembler for every reader in the workspace (SMS text, the
//! card's SMS-PP download, the gateway's proofs of receipt, the simulated SMSC).
//!
//! Data flow: user data with TP-UDHI set goes to [`parse`], which walks the information
//! elements in any order and returns what the reader needs: the concatenation element
//! ([`Concat`]), the secured-packet element ([`PacketIei`], TS 31.115) and where the body
//! starts. A part of a concatenated message then goes to a [`Reassembler`], which holds parts
//! per (sender key, reference) and hands back the parts in order once the last one is in.
//!
//! The reassembler's policy is a parameter ([`Limits`]): how many messages may be in progress
//! (a new one evicts the oldest, so a flood of first parts cannot grow memory), how many parts
//! a message may have, how long an incomplete one is kept, and what a repeated part means
//! ([`Duplicates`]). Time is the caller's: any [`Moment`] (a `std::time::Instant`, the
//! handset's virtual clock, or `()` where age does not matter).

use std::collections::HashMap;
use std::hash::Hash;

/// Information element: 8-bit reference concatenation.
pub const IEI_CONCAT_8: u8 = 0x00;
/// Information element: 16-bit reference concatenation.
pub const IEI_CONCAT_16: u8 = 0x08;
/// Information element: command packet (TS 31.115).
pub const IEI_COMMAND_PACKET: u8 = 0x70;
/// Information element: response packet (TS 31.115).
pub const IEI_RESPONSE_PACKET: u8 = 0x71;

/// The concatenation element of one part (TS 23.040 IEI 00 or 08).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Concat {
    /// Reference shared by all parts of one message (8-bit IEI 00 or 16-bit IEI 08).
    pub reference: u16,
    /// Number of parts, 1..=255.
    pub total: u8,
    /// This part's number, 1..=total.
    pub seq: u8,
}

impl Concat {
    /// The element when it is meaningful: TS 23.040 says a total of 0 or a number outside
    /// 1..=total voids it.
    pub fn new(reference: u16, total: u8, seq: u8) -> Option<Concat> {
        (total != 0 && seq != 0 && seq <= total).then_some(Concat {
            reference,
            total,
            seq,
        })
    }

    /// The 8-bit reference form, `00 03 ref total seq` (the reference's low octet).
    pub fn encode_8bit(&self) -> [u8; 5] {
        [
            IEI_CONCAT_8,
            3,
            (self.reference & 0xFF) as u8,
            self.total,
            self.seq,
        ]
    }
}

/// The element that says the user data is a secured packet (TS 31.115).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketIei {
    /// 0x70: command packet.
    Command,
    /// 0x71: response packet.
    Response,
}

impl PacketIei {
    /// The element's identifier.
    pub fn octet(self) -> u8 {
        match self {
            PacketIei::Command => IEI_COMMAND_PACKET,
            PacketIei::Response => IEI_RESPONSE_PACKET,
        }
    }
}

/// What a user data header says about the user data that follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserDataHeader {
    /// The concatenation element, if present and meaningful. A repeated element: the last
    /// meaningful one counts; one of the wrong length is ignored like any element the receiver
    /// cannot use (TS 23.040 §9.2.3.24).
    pub concat: Option<Concat>,
    /// The `70 00` / `71 00` element, if present (only the first part carries it).
    pub packet: Option<PacketIei>,
    /// Octets of the header, its length octet included: the body starts here.
    pub body_at: usize,
}

/// A header that cannot be walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UdhError {
    /// The user data is empty: no TP-UDHL.
    #[error("user data header missing")]
    Missing,
    /// TP-UDHL says more octets than the user data has.
    #[error("user data header of {declared} octets in {available} octets of user data")]
    LongerThanUserData { declared: usize, available: usize },
    /// An information element runs past the end of the header.
    #[error("information element at offset {at} runs past the user data header")]
    TruncatedElement { at: usize },
}

/// Walks the header at the start of `ud` (TP-UDHI set). Elements in any order; unknown ones
/// are skipped. Offsets in errors count from the TP-UDHL octet.
pub fn parse(ud: &[u8]) -> Result<UserDataHeader, UdhError> {
    let (&udhl, after) = ud.split_first().ok_or(UdhError::Missing)?;
    let header = after
        .get(..usize::from(udhl))
        .ok_or(UdhError::LongerThanUserData {
            declared: usize::from(udhl),
            available: after.len(),
        })?;
    let mut out = UserDataHeader {
        concat: None,
        packet: None,
        body_at: 1 + header.len(),
    };
    let mut rest = header;
    while !rest.is_empty() {
        let at = 1 + header.len() - rest.len();
        let [iei, len, tail @ ..] = rest else {
            return Err(UdhError::TruncatedElement { at });
        };
        let data = tail
            .get(..usize::from(*len))
            .ok_or(UdhError::TruncatedElement { at })?;
        match (*iei, data) {
            (IEI_COMMAND_PACKET, []) => out.packet = Some(PacketIei::Command),
            (IEI_RESPONSE_PACKET, []) => out.packet = Some(PacketIei::Response),
            (IEI_CONCAT_8, &[reference, total, seq]) => {
                if let Some(c) = Concat::new(u16::from(reference), total, seq) {
                    out.concat = Some(c);
                }
            }
            (IEI_CONCAT_16, &[hi, lo, total, seq]) => {
                if let Some(c) = Concat::new(u16::from_be_bytes([hi, lo]), total, seq) {
                    out.concat = Some(c);
                }
            }
            _ => {}
        }
        rest = &tail[data.len()..];
    }
    Ok(out)
}

/// A point in time as the reassembler's caller counts it.
pub trait Moment: Copy + Ord {
    /// Milliseconds from `earlier` to `self`, 0 if `earlier` is later.
    fn millis_since(self, earlier: Self) -> u64;
}

impl Moment for std::time::Instant {
    fn millis_since(self, earlier: Self) -> u64 {
        u64::try_from(self.saturating_duration_since(earlier).as_millis()).unwrap_or(u64::MAX)
    }
}

/// No clock: messages never age (bound by count only).
impl Moment for () {
    fn millis_since(self, _earlier: Self) -> u64 {
        0
    }
}

/// What a repeated part number means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duplicates {
    /// The later copy replaces the earlier (a network retransmission may correct a part).
    Replace,
    /// An identical copy is ignored; a different one means the sender reused the reference
    /// before the old message completed: the old one is dropped and a new one starts.
    RestartOnConflict,
}

/// The reassembler's bounds and policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Messages in progress at once (at least 1); a new one evicts the oldest.
    pub max_pending: usize,
    /// Most parts one message may have; more is refused.
    pub max_parts: u8,
    /// An incomplete message is dropped this long after its first part; `None`: never.
    pub max_age_ms: Option<u64>,
    /// What a repeated part number means.
    pub duplicates: Duplicates,
}

/// What became of one part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fed<P> {
    /// The last missing part arrived: every part, in order.
    Complete(Vec<P>),
    /// Stored; more parts are awaited.
    Waiting,
    /// The same part was already held: ignored.
    Duplicate,
    /// More parts than [`Limits::max_parts`]: dropped, nothing else changes.
    TooManyParts,
    /// A part number of 0 or above the total (a [`Concat`] not made by [`Concat::new`]):
    /// dropped, nothing else changes.
    BadPartNumber,
}

#[derive(Clone)]
struct Partial<M, P> {
    started: M,
    total: u8,
    parts: Vec<Option<P>>,
}

/// Joins concatenated parts per (sender key, reference), with bounded state.
#[derive(Clone)]
pub struct Reassembler<K, M, P> {
    limits: Limits,
    pending: HashMap<(K, u16), Partial<M, P>>,
    evicted: u64,
}

impl<K, M, P> std::fmt::Debug for Reassembler<K, M, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reassembler")
            .field("limits", &self.limits)
            .field("pending", &self.pending.len())
            .field("evicted", &self.evicted)
            .finish()
    }
}

impl<K: Eq + Hash + Clone, M: Moment, P: PartialEq> Reassembler<K, M, P> {
    /// An empty reassembler with these limits.
    pub fn new(limits: Limits) -> Self {
        Reassembler {
            limits: Limits {
                max_pending: limits.max_pending.max(1),
                ..limits
            },
            pending: HashMap::new(),
            evicted: 0,
        }
    }

    /// Incomplete messages held.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Incomplete messages dropped to make room for newer ones.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Drops incomplete messages older than [`Limits::max_age_ms`] at `now`.
    pub fn expire(&mut self, now: M) {
        if let Some(max_age) = self.limits.max_age_ms {
            self.pending
                .retain(|_, p| now.millis_since(p.started) < max_age);
        }
    }

    /// Takes one part of a concatenated message from `key` at `now`.
    pub fn push(&mut self, now: M, key: K, concat: Concat, part: P) -> Fed<P> {
        self.expire(now);
        if concat.total > self.limits.max_parts {
            return Fed::TooManyParts;
        }
        let Some(seq) = usize::from(concat.seq)
            .checked_sub(1)
            .filter(|_| concat.seq <= concat.total)
        else {
            return Fed::BadPartNumber;
        };
        let id = (key, concat.reference);
        let restart = match self.pending.get(&id) {
            None => {
                self.make_room();
                true
            }
            Some(p) if p.total != concat.total => true,
            Some(p) => match (
                p.parts.get(seq).and_then(Option::as_ref),
                self.limits.duplicates,
            ) {
                (Some(held), _) if *held == part => return Fed::Duplicate,
                (Some(_), Duplicates::RestartOnConflict) => true,
                _ => false,
            },
        };
        if restart {
            // A new message, or the reference reused for one: the old parts cannot complete.
            let mut parts = Vec::with_capacity(usize::from(concat.total));
            parts.resize_with(usize::from(concat.total), || None);
            self.pending.insert(
                id.clone(),
                Partial {
                    started: now,
                    total: concat.total,
                    parts,
                },
            );
        }
        let Some(p) = self.pending.get_mut(&id) else {
            return Fed::Waiting;
        };
        if let Some(slot) = p.parts.get_mut(seq) {
            *slot = Some(part);
        }
        if p.parts.iter().any(Option::is_none) {
            return Fed::Waiting;
        }
        match self.pending.remove(&id) {
            Some(done) => Fed::Complete(done.parts.into_iter().flatten().collect()),
            None => Fed::Waiting,
        }
    }

    fn make_room(&mut self) {
        while self.pending.len() >= self.limits.max_pending {
            let Some(oldest) = self
                .pending
                .iter()
                .min_by_key(|(_, p)| p.started)
                .map(|(id, _)| id.clone())
            else {
                return;
            };
            self.pending.remove(&oldest);
            self.evicted += 1;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(reference: u16, total: u8, seq: u8) -> Concat {
        Concat::new(reference, total, seq).unwrap()
    }

    fn limits(duplicates: Duplicates) -> Limits {
        Limits {
            max_pending: 2,
            max_parts: 4,
            max_age_ms: Some(1_000),
            duplicates,
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    struct Ms(u64);
    impl Moment for Ms {
        fn millis_since(self, earlier: Self) -> u64 {
            self.0.saturating_sub(earlier.0)
        }
    }

    #[test]
    fn elements_are_read_in_any_order_and_unknown_ones_skipped() {
        let ours = parse(&[7, 0x00, 3, 5, 2, 1, 0x70, 0, 0xAA]).unwrap();
        let theirs = parse(&[9, 0x70, 0, 0x24, 0, 0x00, 3, 5, 2, 1, 0xAA]).unwrap();
        let sixteen = parse(&[8, 0x71, 0, 0x08, 4, 1, 5, 2, 1, 0xAA]).unwrap();
        assert_eq!(ours.concat, Some(c(5, 2, 1)));
        assert_eq!(ours.packet, Some(PacketIei::Command));
        assert_eq!(ours.body_at, 8);
        assert_eq!(theirs.concat, ours.concat);
        assert_eq!(theirs.body_at, 10);
        assert_eq!(sixteen.concat, Some(c(0x0105, 2, 1)));
        assert_eq!(sixteen.packet, Some(PacketIei::Response));
    }

    #[test]
    fn void_and_misshapen_concatenation_elements_are_ignored_and_the_last_valid_counts() {
        // seq 0, seq > total, total 0, wrong length: each voids only itself.
        for bad in [[0u8, 3, 1, 2, 0], [0, 3, 1, 2, 3], [0, 3, 1, 0, 0]] {
            let mut ud = vec![5];
            ud.extend_from_slice(&bad);
            assert_eq!(parse(&ud).unwrap().concat, None, "{bad:?}");
        }
        assert_eq!(parse(&[4, 0x00, 2, 1, 2]).unwrap().concat, None);
        let two = parse(&[10, 0x00, 3, 1, 2, 1, 0x00, 3, 9, 3, 2]).unwrap();
        assert_eq!(two.concat, Some(c(9, 3, 2)));
    }

    #[test]
    fn truncated_headers_name_where_they_break() {
        assert_eq!(parse(&[]), Err(UdhError::Missing));
        assert_eq!(
            parse(&[5, 0, 3]),
            Err(UdhError::LongerThanUserData {
                declared: 5,
                available: 2
            })
        );
        assert_eq!(
            parse(&[3, 0x70, 0, 0x00]),
            Err(UdhError::TruncatedElement { at: 3 })
        );
        assert_eq!(
            parse(&[4, 0x00, 3, 1, 2]),
            Err(UdhError::TruncatedElement { at: 1 })
        );
    }

    #[test]
    fn parts_in_any_order_complete_in_sequence_order() {
        let mut r = Reassembler::new(limits(Duplicates::RestartOnConflict));
        assert_eq!(r.push(Ms(0), "a", c(9, 3, 3), "ef"), Fed::Waiting);
        assert_eq!(r.push(Ms(0), "a", c(9, 3, 1), "ab"), Fed::Waiting);
        assert_eq!(r.push(Ms(0), "a", c(9, 3, 1), "ab"), Fed::Duplicate);
        assert_eq!(
            r.push(Ms(0), "a", c(9, 3, 2), "cd"),
            Fed::Complete(vec!["ab", "cd", "ef"])
        );
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn the_same_reference_from_two_senders_is_two_messages() {
        let mut r = Reassembler::new(limits(Duplicates::Replace));
        assert_eq!(r.push(Ms(0), "a", c(1, 2, 1), 1), Fed::Waiting);
        assert_eq!(r.push(Ms(0), "b", c(1, 2, 2), 20), Fed::Waiting);
        assert_eq!(r.push(Ms(0), "a", c(1, 2, 2), 2), Fed::Complete(vec![1, 2]));
        assert_eq!(r.pending(), 1);
    }

    #[test]
    fn a_conflicting_repeat_restarts_or_replaces_as_the_policy_says() {
        let mut restart = Reassembler::new(limits(Duplicates::RestartOnConflict));
        restart.push(Ms(0), "a", c(1, 2, 1), "old");
        assert_eq!(restart.push(Ms(0), "a", c(1, 2, 1), "new"), Fed::Waiting);
        assert_eq!(
            restart.push(Ms(0), "a", c(1, 2, 2), "2"),
            Fed::Complete(vec!["new", "2"])
        );
        let mut replace = Reassembler::new(limits(Duplicates::Replace));
        replace.push(Ms(0), "a", c(1, 3, 1), "old");
        replace.push(Ms(0), "a", c(1, 3, 2), "2");
        assert_eq!(replace.push(Ms(0), "a", c(1, 3, 1), "new"), Fed::Waiting);
        assert_eq!(
            replace.push(Ms(0), "a", c(1, 3, 3), "3"),
            Fed::Complete(vec!["new", "2", "3"])
        );
    }

    #[test]
    fn another_total_under_the_same_reference_starts_a_new_message() {
        let mut r = Reassembler::new(limits(Duplicates::Replace));
        r.push(Ms(0), "a", c(1, 3, 1), "x");
        assert_eq!(r.push(Ms(0), "a", c(1, 2, 2), "b"), Fed::Waiting);
        assert_eq!(
            r.push(Ms(0), "a", c(1, 2, 1), "a"),
            Fed::Complete(vec!["a", "b"])
        );
    }

    #[test]
    fn the_oldest_message_is_evicted_and_counted() {
        let mut r = Reassembler::new(limits(Duplicates::Replace));
        r.push(Ms(0), "a", c(1, 2, 1), 1);
        r.push(Ms(1), "b", c(1, 2, 1), 1);
        r.push(Ms(2), "c", c(1, 2, 1), 1);
        assert_eq!((r.pending(), r.evicted()), (2, 1));
        // "a" was the oldest: its second part now starts afresh.
        assert_eq!(r.push(Ms(3), "a", c(1, 2, 2), 2), Fed::Waiting);
        assert_eq!(r.push(Ms(3), "c", c(1, 2, 2), 2), Fed::Complete(vec![1, 2]));
    }

    #[test]
    fn incomplete_messages_age_out_and_oversized_ones_are_refused() {
        let mut r = Reassembler::new(limits(Duplicates::Replace));
        r.push(Ms(0), "a", c(1, 2, 1), 1);
        r.expire(Ms(999));
        assert_eq!(r.pending(), 1);
        r.expire(Ms(1_000));
        assert_eq!(r.pending(), 0);
        assert_eq!(r.push(Ms(0), "a", c(1, 5, 1), 1), Fed::TooManyParts);
        let forged = Concat {
            reference: 1,
            total: 2,
            seq: 0,
        };
        assert_eq!(r.push(Ms(0), "a", forged, 1), Fed::BadPartNumber);
        assert_eq!(r.pending(), 0);
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_the_body_is_inside_the_user_data(ud in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(h) = parse(&ud) {
                prop_assert!(h.body_at <= ud.len());
            }
        }

        #[test]
        fn every_order_of_the_parts_rebuilds_the_message(n in 1u8..=6, seed in any::<u64>()) {
            let mut order: Vec<u8> = (1..=n).collect();
            let mut s = seed;
            for i in (1..order.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                order.swap(i, (s >> 33) as usize % (i + 1));
            }
            let mut r = Reassembler::new(Limits { max_pending: 1, max_parts: 6, max_age_ms: None, duplicates: Duplicates::Replace });
            let mut last = Fed::Waiting;
            for seq in order {
                last = r.push((), 0u8, c(7, n, seq), seq);
            }
            prop_assert_eq!(last, Fed::Complete((1..=n).collect()));
        }
    }
}
