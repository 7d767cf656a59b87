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

use crate::cat::tpdu::{Concat, PacketIei, MAX_SEGMENTS, MAX_USER_DATA};
use crate::cat::Address;
use crate::handset::VirtualInstant;

/// Concatenated messages the card keeps in progress at once.
pub const MAX_PENDING: usize = 2;
/// How long an incomplete message is kept after its first segment arrived, ms.
pub const REASSEMBLY_TIMEOUT_MS: u64 = 60_000;

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

#[derive(Debug, Clone)]
struct Pending {
    originator: Address,
    reference: u16,
    total: u8,
    started: VirtualInstant,
    parts: [Option<Vec<u8>>; MAX_SEGMENTS as usize],
}

/// Messages in progress on one card.
#[derive(Debug, Clone, Default)]
pub struct Reassembly {
    pending: Vec<Pending>,
}

impl Reassembly {
    /// Messages in progress.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Forget messages whose first segment is older than the timeout.
    pub fn expire(&mut self, now: VirtualInstant) {
        self.pending
            .retain(|p| now < p.started.add_millis(REASSEMBLY_TIMEOUT_MS));
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
        let idx = match self
            .pending
            .iter()
            .position(|p| p.reference == concat.reference && p.originator == *originator)
        {
            Some(i) => i,
            None => {
                if self.pending.len() >= MAX_PENDING {
                    // Evict the oldest: a sender that never completes cannot block new requests.
                    if let Some(oldest) = self
                        .pending
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, p)| p.started)
                        .map(|(i, _)| i)
                    {
                        self.pending.remove(oldest);
                    }
                }
                self.pending.push(Pending {
                    originator: originator.clone(),
                    reference: concat.reference,
                    total: concat.total,
                    started: now,
                    parts: Default::default(),
                });
                self.pending.len() - 1
            }
        };
        let Some(p) = self.pending.get_mut(idx) else {
            return Fed::Refused("internal");
        };
        let seq = usize::from(concat.seq) - 1;
        let stored = p.parts.get(seq).and_then(Option::as_deref);
        if stored == Some(body) && p.total == concat.total {
            return Fed::Duplicate;
        }
        if p.total != concat.total || stored.is_some() {
            // The reference was reused for a new message while the old one was incomplete:
            // the old one cannot complete any more, start over with this segment.
            *p = Pending {
                originator: originator.clone(),
                reference: concat.reference,
                total: concat.total,
                started: now,
                parts: Default::default(),
            };
        }
        let Some(slot) = p.parts.get_mut(seq) else {
            return Fed::Refused("segment number out of range");
        };
        *slot = Some(body.to_vec());
        let n = usize::from(p.total);
        if p.parts.iter().take(n).all(Option::is_some) {
            let p = self.pending.remove(idx);
            let packet = p.parts.into_iter().take(n).flatten().flatten().collect();
            return Fed::Complete(packet);
        }
        Fed::Waiting
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
