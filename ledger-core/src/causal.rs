//! Causal order as vector clocks, built incrementally.
//!
//! Causal order is the transitive closure of `parents` plus each author's feed order. Each
//! event gets a clock: for every site, the highest seq of that site's feed it knows. `a`
//! precedes `b` exactly when `b`'s clock for `a`'s site reaches `a`'s seq (feed order makes
//! every earlier seq of a site known once a later one is). Events must be inserted after
//! their parents and feed predecessor; absent ones (not in the evidence) are skipped, which
//! only loses what they alone would have carried.
//!
//! Memory: one entry per event with a clock as long as the number of sites known when it
//! was inserted (later sites read as 0).

use crate::event::Event;
use crate::ids::{EventId, SiteId};
use crate::projection::CausalOrder;
use std::collections::HashMap;

#[derive(Debug)]
struct Entry {
    site: u32,
    seq: u64,
    clock: Box<[u64]>,
}

/// An incrementally built causal-order index.
#[derive(Debug, Default)]
pub struct ClockIndex {
    sites: HashMap<SiteId, u32>,
    entries: HashMap<EventId, Entry>,
}

impl ClockIndex {
    pub fn new() -> ClockIndex {
        ClockIndex::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds `e`. `feed_prev` is the nearest earlier event of the same author that is in the
    /// evidence (for a complete feed, the event `e.prev()` names). Inserting an event twice
    /// keeps the first.
    pub fn insert(&mut self, e: &Event, feed_prev: Option<EventId>) {
        if self.entries.contains_key(&e.id()) {
            return;
        }
        let next = self.sites.len() as u32;
        let site = *self.sites.entry(e.author().clone()).or_insert(next);
        let mut clock = vec![0u64; self.sites.len()];
        for p in e.parents().iter().copied().chain(feed_prev) {
            if let Some(entry) = self.entries.get(&p) {
                for (slot, v) in clock.iter_mut().zip(entry.clock.iter()) {
                    *slot = (*slot).max(*v);
                }
            }
        }
        let own = &mut clock[site as usize];
        *own = (*own).max(e.seq().0);
        self.entries.insert(
            e.id(),
            Entry {
                site,
                seq: e.seq().0,
                clock: clock.into_boxed_slice(),
            },
        );
    }

    /// Forgets `id` (an event that was inserted to be judged and then refused).
    pub fn remove(&mut self, id: EventId) {
        self.entries.remove(&id);
    }
}

impl CausalOrder for ClockIndex {
    fn precedes(&self, a: EventId, b: EventId) -> bool {
        if a == b {
            return false;
        }
        match (self.entries.get(&a), self.entries.get(&b)) {
            (Some(ea), Some(eb)) => eb.clock.get(ea.site as usize).is_some_and(|v| *v >= ea.seq),
            _ => false,
        }
    }

    fn contains(&self, id: EventId) -> bool {
        self.entries.contains_key(&id)
    }
}
