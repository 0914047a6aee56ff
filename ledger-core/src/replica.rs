//! What a replica does with an event another node sends it: where the event stands in its
//! author's feed as far as this replica holds it.
//!
//! A replica stores each author's feed contiguously (seq 1, 2, 3, ... in order, each naming
//! the previous one's id), so "as far as it holds it" is one number and one id per author.
//! The receiving node asks [`place`] before it stores anything; admission (certificate and
//! signature) is [`crate::verify::Admission`]'s, checked first.

use crate::event::Event;
use crate::ids::{EventId, Seq};

/// How much of one author's feed a replica holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct FeedState {
    /// The highest seq held; every seq below it is held too (0: none).
    pub seq: u64,
    /// The id of the event at `seq`.
    pub head: Option<EventId>,
    /// Set once the author was caught signing two events for one seq: the feed is frozen at
    /// the seq it had reached then, and nothing past it is accepted.
    pub frozen_at: Option<u64>,
}

/// Where an incoming event stands.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Placement {
    /// The next event of the feed: store it.
    Next,
    /// Already held (same id at that seq).
    Duplicate,
    /// A different event for a seq already held: proof that the author equivocated.
    /// `held` is the event this replica holds there.
    Fork { held: EventId },
    /// Seqs `from..=to` are missing before this event: repair them first.
    Gap { from: u64, to: u64 },
    /// The next seq, but its previous-event link does not name the event held at the seq
    /// before: the author's hash chain is broken (or it forked at an earlier seq).
    BrokenLink { expected: Option<EventId> },
    /// The feed is frozen after an equivocation and this event lies past the freeze.
    Frozen { at: u64 },
}

/// Places `e` in its author's feed. `held_at(seq)` answers which event the replica holds at
/// a seq at or below `feed.seq` (`None` only if it lost it, which the caller treats as a
/// repair like a gap).
pub fn place(feed: &FeedState, e: &Event, held_at: impl Fn(Seq) -> Option<EventId>) -> Placement {
    let seq = e.seq().0;
    let id = e.id();
    if seq <= feed.seq {
        return match held_at(e.seq()) {
            Some(held) if held == id => Placement::Duplicate,
            Some(held) => Placement::Fork { held },
            None => Placement::Gap { from: seq, to: seq },
        };
    }
    if let Some(at) = feed.frozen_at {
        return Placement::Frozen { at };
    }
    if seq > feed.seq + 1 {
        return Placement::Gap {
            from: feed.seq + 1,
            to: seq - 1,
        };
    }
    if e.prev() != feed.head {
        return Placement::BrokenLink {
            expected: feed.head,
        };
    }
    Placement::Next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;
    use crate::event::{Body, Meaning, Signer, UnsignedEvent};
    use crate::ids::{Coi, NetworkId, OperatorId, SiteId};
    use crate::time::Timestamp;

    fn event(seq: u64, prev: Option<EventId>, note: &str) -> Event {
        let key = SecretKey::from_seed(&[7; 32]);
        UnsignedEvent {
            network: NetworkId::parse("net-test").expect("network id"),
            author: SiteId::parse("depot-1").expect("site id"),
            seq: Seq(seq),
            prev,
            key: key.public(),
            coi: Coi::parse("CHA999926ABC123").expect("coi"),
            parents: Vec::new(),
            occurred_at: Timestamp(1_700_000_000_000),
            recorded_at: Timestamp(1_700_000_000_000),
            signer: Signer {
                operator: OperatorId::parse("op-1").expect("operator"),
                printed_name: "Op One".to_owned(),
                meaning: Meaning::Performed,
            },
            body: Body::Note {
                text: note.to_owned(),
            },
        }
        .sign(&key)
    }

    #[test]
    fn next_duplicate_fork_gap_broken_frozen() {
        let e1 = event(1, None, "one");
        let e2 = event(2, Some(e1.id()), "two");
        let e2_forged = event(2, Some(e1.id()), "two, rewritten");
        let e3_bad_link = event(3, Some(e1.id()), "three");
        let e5 = event(5, Some(e1.id()), "five");
        let empty = FeedState::default();
        let none = |_: Seq| None;
        assert_eq!(place(&empty, &e1, none), Placement::Next);
        assert_eq!(place(&empty, &e2, none), Placement::Gap { from: 1, to: 1 });
        let held = FeedState {
            seq: 2,
            head: Some(e2.id()),
            frozen_at: None,
        };
        let held_at = |s: Seq| match s.0 {
            1 => Some(e1.id()),
            2 => Some(e2.id()),
            _ => None,
        };
        assert_eq!(place(&held, &e2, held_at), Placement::Duplicate);
        assert_eq!(place(&held, &e1, held_at), Placement::Duplicate);
        assert_eq!(
            place(&held, &e2_forged, held_at),
            Placement::Fork { held: e2.id() }
        );
        assert_eq!(
            place(&held, &e3_bad_link, held_at),
            Placement::BrokenLink {
                expected: Some(e2.id())
            }
        );
        assert_eq!(
            place(&held, &e5, held_at),
            Placement::Gap { from: 3, to: 4 }
        );
        // A seq the replica should hold but cannot find is repaired like a gap.
        assert_eq!(
            place(&held, &e2, |_| None),
            Placement::Gap { from: 2, to: 2 }
        );
        let frozen = FeedState {
            frozen_at: Some(2),
            ..held
        };
        assert_eq!(
            place(&frozen, &e3_bad_link, held_at),
            Placement::Frozen { at: 2 }
        );
        // Below the freeze, evidence of further forks is still recognised.
        assert_eq!(
            place(&frozen, &e2_forged, held_at),
            Placement::Fork { held: e2.id() }
        );
    }
}
