//! The card's reassembly of concatenated command packets. The handset (ME) passes every
//! SMS-PP segment to the card in its own ENVELOPE (SMS-PP DOWNLOAD), unchanged; the card's
//! toolkit framework links the segments by (originator, concatenation reference) and hands the
//! whole secured packet to the OTA layer once every part is in (the model of TS 31.115 §4.3 /
//! TS 31.130's formatted SMS-PP envelope).
//!
//! Data flow: `Applet::envelope` decodes a [`DeliverSegment`](crate::cat::tpdu::DeliverSegment)
//! and calls [`Reassembly::feed`]; [`Fed::Complete`] carries the packet on to the OTA layer.
//!
//! Bounds, because segments come from the network: at most [`MAX_PENDING`] messages in
//! progress (a new one evicts the oldest), at most [`MAX_SEGMENTS`] segments each of at most
//! 140 octets, and a message still incomplete [`REASSEMBLY_TIMEOUT_MS`] after its first segment
//! is forgotten (checked on the virtual clock at every APDU: the card has no clock of its own).
//! Segments may arrive in any order; a repeated segment is ignored. A segment that disagrees with
//! what is stored under its reference (another total, another content for a number already
//! held) means the gateway reused the reference: the old message is dropped and a new one starts.
//! The joining itself is the shared reassembler's ([`crate::udh::Reassembler`]) with this policy;
//! the card adds its own checks on each segment.

use crate::cat::tpdu::{Concat, PacketIei, MAX_SEGMENTS, MAX_USER_DATA};
use crate::cat::Address;
use crate::handset::VirtualInstant;
use crate::udh::{self, Duplicates, Limits, Moment, Reassembler};

/// Concatenated messages the card keeps in progress at once.
pub const MAX_PENDING: usize = 2;
/// How long an incomplete message is kept after its first segment arrived, ms.
pub const REASSEMBLY_TIMEOUT_MS: u64 = 60_000;

/// The card's policy on the shared reassembler.
const LIMITS: Limits = Limits {
    max_pending: MAX_PENDING,
    max_parts: MAX_SEGMENTS,
    max_age_ms: Some(REASSEMBLY_TIMEOUT_MS),
    duplicates: Duplicates::RestartOnConflict,
};

impl Moment for VirtualInstant {
    fn millis_since(self, earlier: Self) -> u64 {
        self.as_millis().saturating_sub(earlier.as_millis())
    }
}

/// What became of one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fed {
    /// The last missing segment arrived: the whole secured packet (from CPL on).
    Complete(Vec<u8>),
    /// Stored; more segments are awaited.
    Waiting,
    /// The same segment was already stored: ignored.
    Duplicate,
    /// Not usable (too many segments, bad segment number, first segment without `70 00`,
    /// oversized part): dropped, nothing else changes.
    Refused(&'static str),
}

/// Messages in progress on one card.
#[derive(Debug, Clone)]
pub struct Reassembly {
    parts: Reassembler<Address, VirtualInstant, Vec<u8>>,
}

impl Default for Reassembly {
    fn default() -> Self {
        Reassembly {
            parts: Reassembler::new(LIMITS),
        }
    }
}

impl Reassembly {
    /// Messages in progress.
    pub fn pending(&self) -> usize {
        self.parts.pending()
    }

    /// Forget messages whose first segment is older than the timeout.
    pub fn expire(&mut self, now: VirtualInstant) {
        self.parts.expire(now);
    }

    /// Take one segment. `iei` is the segment's `70`/`71` element if it had one.
    pub fn feed(
        &mut self,
        now: VirtualInstant,
        originator: &Address,
        concat: Concat,
        iei: Option<PacketIei>,
        body: &[u8],
    ) -> Fed {
        self.expire(now);
        if concat.total > MAX_SEGMENTS {
            return Fed::Refused("more segments than the card reassembles");
        }
        if concat.seq == 0 || concat.seq > concat.total {
            return Fed::Refused("segment number out of range");
        }
        if body.len() > MAX_USER_DATA {
            return Fed::Refused("segment longer than one SMS");
        }
        match (concat.seq, iei) {
            (_, Some(PacketIei::Response)) => return Fed::Refused("response packet element"),
            (1, None) => return Fed::Refused("first segment without the command packet element"),
            _ => {}
        }
        match self
            .parts
            .push(now, originator.clone(), concat, body.to_vec())
        {
            udh::Fed::Complete(parts) => Fed::Complete(parts.concat()),
            udh::Fed::Waiting => Fed::Waiting,
            udh::Fed::Duplicate => Fed::Duplicate,
            udh::Fed::TooManyParts => Fed::Refused("more segments than the card reassembles"),
            udh::Fed::BadPartNumber => Fed::Refused("segment number out of range"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(reference: u16, total: u8, seq: u8) -> Concat {
        Concat {
            reference,
            total,
            seq,
        }
    }

    fn gw() -> Address {
        Address::international("48500100200")
    }

    const CMD: Option<PacketIei> = Some(PacketIei::Command);

    #[test]
    fn segments_in_any_order_complete_in_sequence_order() {
        let mut r = Reassembly::default();
        let t = VirtualInstant(0);
        assert_eq!(r.feed(t, &gw(), c(9, 3, 3), None, b"ef"), Fed::Waiting);
        assert_eq!(r.feed(t, &gw(), c(9, 3, 1), CMD, b"ab"), Fed::Waiting);
        assert_eq!(r.feed(t, &gw(), c(9, 3, 1), CMD, b"ab"), Fed::Duplicate);
        assert_eq!(
            r.feed(t, &gw(), c(9, 3, 2), None, b"cd"),
            Fed::Complete(b"abcdef".to_vec())
        );
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn incomplete_message_expires_and_a_late_segment_starts_afresh() {
        let mut r = Reassembly::default();
        assert_eq!(
            r.feed(VirtualInstant(0), &gw(), c(1, 2, 1), CMD, b"ab"),
            Fed::Waiting
        );
        r.expire(VirtualInstant(REASSEMBLY_TIMEOUT_MS - 1));
        assert_eq!(r.pending(), 1);
        r.expire(VirtualInstant(REASSEMBLY_TIMEOUT_MS));
        assert_eq!(r.pending(), 0);
        assert_eq!(
            r.feed(VirtualInstant(70_000), &gw(), c(1, 2, 2), None, b"cd"),
            Fed::Waiting
        );
    }

    #[test]
    fn oldest_message_is_evicted_beyond_the_bound() {
        let mut r = Reassembly::default();
        for reference in 0..5u16 {
            let t = VirtualInstant(u64::from(reference));
            assert_eq!(
                r.feed(t, &gw(), c(reference, 2, 2), None, b"x"),
                Fed::Waiting
            );
            assert!(r.pending() <= MAX_PENDING);
        }
        // Reference 0 was evicted: its first segment alone does not complete anything.
        assert_eq!(
            r.feed(VirtualInstant(9), &gw(), c(0, 2, 1), CMD, b"y"),
            Fed::Waiting
        );
        // Reference 4 is still there.
        assert_eq!(
            r.feed(VirtualInstant(9), &gw(), c(4, 2, 1), CMD, b"y"),
            Fed::Complete(b"yx".to_vec())
        );
    }

    #[test]
    fn same_reference_from_another_originator_is_another_message() {
        let mut r = Reassembly::default();
        let t = VirtualInstant(0);
        assert_eq!(r.feed(t, &gw(), c(1, 2, 1), CMD, b"a"), Fed::Waiting);
        let other = Address::international("4899");
        assert_eq!(r.feed(t, &other, c(1, 2, 2), None, b"b"), Fed::Waiting);
        assert_eq!(r.pending(), 2);
    }

    #[test]
    fn unusable_segments_are_refused() {
        let mut r = Reassembly::default();
        let t = VirtualInstant(0);
        assert!(matches!(
            r.feed(t, &gw(), c(1, 5, 1), CMD, b"a"),
            Fed::Refused(_)
        ));
        assert!(matches!(
            r.feed(t, &gw(), c(1, 2, 1), None, b"a"),
            Fed::Refused(_)
        ));
        assert_eq!(r.pending(), 0);
        assert!(matches!(
            r.feed(t, &gw(), c(1, 2, 3), None, b"a"),
            Fed::Refused(_)
        ));
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn reused_reference_restarts_the_message() {
        let mut r = Reassembly::default();
        let t = VirtualInstant(0);
        assert_eq!(r.feed(t, &gw(), c(1, 2, 1), CMD, b"old"), Fed::Waiting);
        assert_eq!(r.feed(t, &gw(), c(1, 3, 1), CMD, b"n1"), Fed::Waiting);
        assert_eq!(r.feed(t, &gw(), c(1, 3, 2), None, b"n2"), Fed::Waiting);
        assert_eq!(r.feed(t, &gw(), c(1, 3, 2), None, b"xx"), Fed::Waiting);
        assert_eq!(r.pending(), 1);
        assert_eq!(r.feed(t, &gw(), c(1, 3, 1), CMD, b"m1"), Fed::Waiting);
        assert_eq!(
            r.feed(t, &gw(), c(1, 3, 3), None, b"m3"),
            Fed::Complete(b"m1xxm3".to_vec())
        );
    }

    proptest! {
        #[test]
        fn reassembly_never_panics_and_stays_bounded(
            segs in proptest::collection::vec(
                (0u16..4, 0u8..7, 0u8..7, any::<bool>(), proptest::collection::vec(any::<u8>(), 0..160), 0u64..100_000),
                0..40,
            )
        ) {
            let mut r = Reassembly::default();
            for (reference, total, seq, first, body, t) in segs {
                let iei = first.then_some(PacketIei::Command);
                let fed = r.feed(VirtualInstant(t), &gw(), c(reference, total, seq), iei, &body);
                if let Fed::Complete(p) = fed {
                    prop_assert!(p.len() <= usize::from(MAX_SEGMENTS) * MAX_USER_DATA);
                }
                prop_assert!(r.pending() <= MAX_PENDING);
            }
        }
    }
}
