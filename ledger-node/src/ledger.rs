//! In-memory chain state and the append decision.
//!
//! [`Ledger`] holds, per chain, the projection fold, the causal-order index, the heads and
//! the committed length; per local site, the feed head. It is rebuilt at start from the
//! event log. [`Ledger::prepare`] turns a checked request into a signed event or a refusal:
//! the decision itself is ledger-core's fold; this module only sequences and signs.
//!
//! Refusal policy: an append that the fold would report as a break is refused with the
//! finding's sentence, except two findings that *report an observation* and must be
//! recorded because they are the truth the chain exists to keep: a seal found broken at
//! receipt (`custody.seal_broken`) and a scan that did not match (`identity.coi_mismatch`
//! on a label verification or a receipt).
//!
//! Readers see only committed events (positions up to `committed`); the projection and
//! heads may run ahead by the appends in flight, which are durable within milliseconds or
//! make the node stop (see `pipeline`).

use crate::network::LocalSite;
use crate::store::{Record, Store, StoreError};
use ledger_core::{
    Body, CausalOrder, ClockIndex, Code, Coi, Event, EventId, Finding, NetworkId, Policy,
    Projection, Role, Seq, SiteId, Timestamp, UnsignedEvent,
};
use proto::convert::AppendDraft;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Why an append was refused. Mapped to a gRPC status once, in `grpc::status`.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("this node does not sign for site {site}")]
    NotLocalSite { site: SiteId },
    #[error("chain {coi} does not exist yet: its first event must be a collection (or an approved reassignment)")]
    NoCollection { coi: Coi },
    #[error("{}", refused_message(.findings))]
    Refused { findings: Vec<Finding> },
    #[error("the event would be {n_bytes} bytes, more than the limit of {max}")]
    TooLarge { n_bytes: usize, max: usize },
    #[error("occurred_time {occurred} is after this node's clock ({recorded}) by more than the clock tolerance: a scan cannot be recorded before it happens; check the scanner's clock")]
    ScanInFuture {
        occurred: Timestamp,
        recorded: Timestamp,
    },
    #[error("the same request id is still being written; retry in a moment")]
    InFlight,
    #[error("too many appends are waiting for the disk ({depth} queued); retry with backoff")]
    QueueFull { depth: usize },
    #[error("the node stopped accepting appends after a storage failure; restart it")]
    Stopped,
    #[error("the event could not be written: {reason}; the node is stopping, restart it")]
    CommitFailed { reason: String },
    #[error("storage: {0}")]
    Storage(#[from] StoreError),
}

fn refused_message(findings: &[Finding]) -> String {
    let sentences: Vec<String> = findings
        .iter()
        .map(|f| format!("{}: {}", f.code, f.message))
        .collect();
    format!("refused, the chain would break: {}", sentences.join("; "))
}

/// What an append produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub event_id: EventId,
    pub site: SiteId,
    pub seq: Seq,
    pub recorded_at: Timestamp,
    pub duplicate: bool,
}

/// An accepted append: the record to write and where it lands.
#[derive(Debug)]
pub struct Prepared {
    pub record: Record,
    pub receipt: Receipt,
    pub coi: Coi,
    pub position: u64,
    /// Set by the committer once the event's group is fdatasynced; until then a retry of
    /// its request id must not be answered.
    pub durable: Arc<AtomicBool>,
}

#[derive(Debug)]
pub enum Outcome {
    /// A new event to commit.
    New(Box<Prepared>),
    /// A retry of a request already appended (committed or in flight).
    Duplicate(Receipt),
}

struct Feed {
    key: ledger_core::SecretKey,
    seq: u64,
    head: Option<EventId>,
    last_recorded: Timestamp,
}

/// One chain's state.
pub struct Chain {
    pub projection: Projection,
    /// The causal-order index, one entry per event. `None` once dropped to bound memory
    /// (see [`Ledger::trim`]); rebuilt from the store before the chain is judged again.
    clocks: Option<ClockIndex>,
    /// When the chain was last judged, in [`Ledger`] ticks (for choosing what to drop).
    last_used: u64,
    pub heads: BTreeSet<EventId>,
    /// Positions assigned (committed or in flight).
    pub len: u64,
    /// Positions durable and visible to readers.
    pub committed: u64,
    pub last_event_at: Timestamp,
    /// Findings the fold reported on stored events (replicated or recorded observations).
    pub findings: Vec<Finding>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("len", &self.len)
            .field("committed", &self.committed)
            .field("heads", &self.heads.len())
            .finish()
    }
}

impl Chain {
    fn new(coi: Coi) -> Chain {
        Chain {
            projection: Projection::new(coi),
            clocks: Some(ClockIndex::new()),
            last_used: 0,
            heads: BTreeSet::new(),
            len: 0,
            committed: 0,
            last_event_at: Timestamp(i64::MIN),
            findings: Vec::new(),
        }
    }

    /// Folds an event into a copy of the projection; returns the copy and its findings.
    /// The clocks must be loaded ([`Ledger::load_clocks`]).
    fn judge(
        &mut self,
        e: &Event,
        feed_prev: Option<EventId>,
        role: Option<Role>,
        policy: &Policy,
    ) -> (Projection, Vec<Finding>) {
        let clocks = self
            .clocks
            .as_mut()
            .expect("clocks are loaded before a chain is judged");
        clocks.insert(e, feed_prev);
        let mut next = self.projection.clone();
        let mut findings = Vec::new();
        next.apply(e, role, &*clocks, policy, &mut findings);
        (next, findings)
    }

    fn n_clock_entries(&self) -> usize {
        self.clocks.as_ref().map_or(0, ClockIndex::len)
    }

    fn accept(&mut self, e: &Event, projection: Projection, findings: Vec<Finding>) -> u64 {
        self.projection = projection;
        for p in e.parents() {
            self.heads.remove(p);
        }
        self.heads.insert(e.id());
        self.len += 1;
        self.last_event_at = self.last_event_at.max(e.occurred_at());
        self.findings.extend(findings);
        self.len
    }
}

/// Whether a finding reports an observation the chain must record (see module docs).
fn must_record(f: &Finding, e: &Event) -> bool {
    match f.code {
        Code::SealBroken => true,
        Code::CoiMismatch => matches!(
            e.body(),
            Body::LabelVerification { .. } | Body::Receipt { .. }
        ),
        _ => false,
    }
}

/// All in-memory state of the node's chains.
pub struct Ledger {
    network: NetworkId,
    policy: Policy,
    roles: BTreeMap<SiteId, Role>,
    feeds: BTreeMap<SiteId, Feed>,
    chains: HashMap<Coi, Chain>,
    /// Appends in flight: (site, request id) -> receipt, until committed.
    in_flight: HashMap<(SiteId, String), (Receipt, Arc<AtomicBool>)>,
    n_events: u64,
    /// Causal-clock entries held over all chains, and how many [`Ledger::trim`] allows.
    clock_entries: usize,
    clock_budget: usize,
    tick: u64,
    /// [`Ledger::tick`] at the last trim, and the clock entries it left.
    last_trim_tick: u64,
    entries_after_trim: usize,
}

/// Clock entries kept for idle chains by default: ~100 B each, so ~5 MiB (chains in use
/// keep theirs regardless).
pub const CLOCK_BUDGET_DEFAULT: usize = 50_000;

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("network", &self.network)
            .field("chains", &self.chains.len())
            .field("n_events", &self.n_events)
            .finish()
    }
}

impl Ledger {
    pub fn new(
        network: NetworkId,
        policy: Policy,
        roles: BTreeMap<SiteId, Role>,
        sites: Vec<LocalSite>,
    ) -> Ledger {
        let feeds = sites
            .into_iter()
            .map(|s| {
                (
                    s.id,
                    Feed {
                        key: s.key,
                        seq: 0,
                        head: None,
                        last_recorded: Timestamp(i64::MIN),
                    },
                )
            })
            .collect();
        Ledger {
            network,
            policy,
            roles,
            feeds,
            chains: HashMap::new(),
            in_flight: HashMap::new(),
            n_events: 0,
            clock_entries: 0,
            clock_budget: CLOCK_BUDGET_DEFAULT,
            // Chains replayed at start-up keep last_used 0: idle, before any trim.
            tick: 1,
            last_trim_tick: 1,
            entries_after_trim: 0,
        }
    }

    /// Sets how many causal-clock entries [`Ledger::trim`] keeps (at least one chain's
    /// worth is always loaded while it is judged).
    pub fn set_clock_budget(&mut self, entries: usize) {
        self.clock_budget = entries;
    }

    /// Causal-clock entries in memory.
    pub fn clock_entries(&self) -> usize {
        self.clock_entries
    }

    /// Drops the causal clocks of the least recently used chains until at most three
    /// quarters of the budget is held, when the budget is exceeded. Only chains with
    /// nothing in flight are trimmed, so the store holds every event a rebuild needs, and
    /// only chains not used since the previous trim: a chain being appended to keeps its
    /// clocks even when active chains alone exceed the budget (rebuilding them on every
    /// append would cost far more than the memory). A trim scans every chain, so it runs
    /// again only once the clocks grew by a quarter of the budget. A budget of 0 keeps
    /// no idle chain's clocks.
    pub fn trim(&mut self) {
        if self.clock_entries <= self.clock_budget
            || self.clock_entries < self.entries_after_trim + self.clock_budget / 4
        {
            return;
        }
        let cutoff = if self.clock_budget == 0 {
            u64::MAX
        } else {
            self.last_trim_tick
        };
        let target = self.clock_budget / 4 * 3;
        let mut idle: Vec<(u64, &Coi)> = self
            .chains
            .iter()
            .filter(|(_, c)| c.clocks.is_some() && c.len == c.committed && c.last_used < cutoff)
            .map(|(coi, c)| (c.last_used, coi))
            .collect();
        idle.sort_unstable();
        let victims: Vec<Coi> = idle.into_iter().map(|(_, coi)| coi.clone()).collect();
        for coi in victims {
            if self.clock_entries <= target {
                break;
            }
            if let Some(chain) = self.chains.get_mut(&coi) {
                self.clock_entries -= chain.n_clock_entries();
                chain.clocks = None;
            }
        }
        self.last_trim_tick = self.tick;
        self.entries_after_trim = self.clock_entries;
    }

    /// Makes sure `coi`'s clocks are in memory (rebuilding them from the store in log order,
    /// as [`Ledger::replay`] built them) and marks the chain used.
    fn load_clocks(&mut self, coi: &Coi, store: &Store) -> Result<(), StoreError> {
        self.tick += 1;
        let Some(chain) = self.chains.get_mut(coi) else {
            return Ok(());
        };
        chain.last_used = self.tick;
        if chain.clocks.is_some() {
            return Ok(());
        }
        let events = store.chain(coi, 0, usize::MAX)?;
        // Pair assertion: a chain is trimmed only when all of it is committed (indexed).
        assert_eq!(
            events.len() as u64,
            chain.committed,
            "chain {coi}: the store holds {} events, the ledger committed {}",
            events.len(),
            chain.committed
        );
        let mut clocks = ClockIndex::new();
        for (_, e) in &events {
            let feed_prev = e.prev().filter(|p| clocks.contains(*p));
            clocks.insert(e, feed_prev);
        }
        self.clock_entries += clocks.len();
        chain.clocks = Some(clocks);
        Ok(())
    }

    pub fn chains(&self) -> &HashMap<Coi, Chain> {
        &self.chains
    }

    pub fn chain(&self, coi: &Coi) -> Option<&Chain> {
        self.chains.get(coi)
    }

    /// Events committed and visible to readers.
    pub fn n_events(&self) -> u64 {
        self.n_events
    }

    /// Feed heads of the local sites: (site, seq, head).
    pub fn feed_heads(&self) -> impl Iterator<Item = (&SiteId, u64, Option<EventId>)> {
        self.feeds.iter().map(|(s, f)| (s, f.seq, f.head))
    }

    /// Folds a stored event at start-up (already durable, so it is committed).
    pub fn replay(&mut self, record: &Record) {
        let e = &record.event;
        let role = self.roles.get(e.author()).copied();
        let chain = self
            .chains
            .entry(e.coi().clone())
            .or_insert_with(|| Chain::new(e.coi().clone()));
        let feed_prev = e
            .prev()
            .filter(|p| chain.clocks.as_ref().is_some_and(|c| c.contains(*p)));
        let before = chain.n_clock_entries();
        let (projection, findings) = chain.judge(e, feed_prev, role, &self.policy);
        self.clock_entries += chain.n_clock_entries() - before;
        let position = chain.accept(e, projection, findings);
        chain.committed = position;
        if let Some(feed) = self.feeds.get_mut(e.author()) {
            // Pair assertion: our own feed in the log is contiguous and in order.
            assert_eq!(
                e.seq().0,
                feed.seq + 1,
                "log holds {} seq {} after seq {}",
                e.author(),
                e.seq(),
                feed.seq
            );
            feed.seq = e.seq().0;
            feed.head = Some(e.id());
            feed.last_recorded = feed.last_recorded.max(e.recorded_at());
        }
        self.n_events += 1;
    }

    /// Decides an append: a retry, a refusal, or a signed event ready to commit. On
    /// success the state already includes the event (so the next append builds on it).
    ///
    /// # Errors
    /// [`AppendError`] saying what is wrong; nothing changes then.
    pub fn prepare(
        &mut self,
        draft: AppendDraft,
        now: Timestamp,
        store: &Store,
    ) -> Result<Outcome, AppendError> {
        let key = (draft.site.clone(), draft.request_id.clone());
        if let Some((receipt, durable)) = self.in_flight.get(&key) {
            // Durable but not yet indexed: the original receipt is a true answer. Before the
            // sync it is not (an answer must never precede durability).
            if durable.load(Ordering::Acquire) {
                return Ok(Outcome::Duplicate(Receipt {
                    duplicate: true,
                    ..receipt.clone()
                }));
            }
            return Err(AppendError::InFlight);
        }
        if let Some(e) = store.request_event(&draft.site, &draft.request_id)? {
            return Ok(Outcome::Duplicate(Receipt {
                event_id: e.id(),
                site: e.author().clone(),
                seq: e.seq(),
                recorded_at: e.recorded_at(),
                duplicate: true,
            }));
        }
        let Some(feed) = self.feeds.get(&draft.site) else {
            return Err(AppendError::NotLocalSite { site: draft.site });
        };
        let is_opening = matches!(
            draft.body,
            Body::Collection { .. } | Body::Reassignment { .. }
        );
        if !self.chains.contains_key(&draft.coi) && !is_opening {
            return Err(AppendError::NoCollection { coi: draft.coi });
        }
        // A feed's recorded times never go backwards, whatever the wall clock does.
        let recorded_at = now.max(feed.last_recorded);
        // The verifier would report it as the clock going backwards; refuse it instead.
        if draft.occurred_at > recorded_at.plus(self.policy.clock_tolerance) {
            return Err(AppendError::ScanInFuture {
                occurred: draft.occurred_at,
                recorded: recorded_at,
            });
        }
        let parents: Vec<EventId> = self
            .chains
            .get(&draft.coi)
            .map(|c| c.heads.iter().copied().collect())
            .unwrap_or_default();
        let unsigned = UnsignedEvent {
            network: self.network.clone(),
            author: draft.site.clone(),
            seq: Seq(feed.seq + 1),
            prev: feed.head,
            key: feed.key.public(),
            coi: draft.coi.clone(),
            parents,
            occurred_at: draft.occurred_at,
            recorded_at,
            signer: draft.signer,
            body: draft.body,
        };
        let event = unsigned.sign(&feed.key);
        // Request limits keep events far below this; the check guards the log's framing.
        if event.bytes().len() > ledger_core::event::EVENT_BYTES_MAX {
            return Err(AppendError::TooLarge {
                n_bytes: event.bytes().len(),
                max: ledger_core::event::EVENT_BYTES_MAX,
            });
        }
        let role = self.roles.get(&draft.site).copied();
        let feed_head = feed.head;
        self.load_clocks(&draft.coi, store)?;
        let chain = self
            .chains
            .entry(draft.coi.clone())
            .or_insert_with(|| Chain::new(draft.coi.clone()));
        chain.last_used = self.tick;
        let before = chain.n_clock_entries();
        let (projection, findings) = chain.judge(&event, feed_head, role, &self.policy);
        self.clock_entries += chain.n_clock_entries() - before;
        let refused: Vec<Finding> = findings
            .iter()
            .filter(|f| !must_record(f, &event))
            .cloned()
            .collect();
        if !refused.is_empty() {
            let before = chain.n_clock_entries();
            if let Some(clocks) = chain.clocks.as_mut() {
                clocks.remove(event.id());
            }
            self.clock_entries -= before - chain.n_clock_entries();
            if chain.len == 0 {
                self.chains.remove(&draft.coi);
            }
            return Err(AppendError::Refused { findings: refused });
        }
        let position = chain.accept(&event, projection, findings);
        let feed = self
            .feeds
            .get_mut(&draft.site)
            .expect("feed looked up above");
        feed.seq += 1;
        feed.head = Some(event.id());
        feed.last_recorded = recorded_at;
        let receipt = Receipt {
            event_id: event.id(),
            site: draft.site.clone(),
            seq: event.seq(),
            recorded_at,
            duplicate: false,
        };
        let durable = Arc::new(AtomicBool::new(false));
        self.in_flight
            .insert(key, (receipt.clone(), durable.clone()));
        Ok(Outcome::New(Box::new(Prepared {
            record: Record {
                event,
                request_id: Some(draft.request_id),
            },
            receipt,
            coi: draft.coi,
            position,
            durable,
        })))
    }

    /// Marks committed appends visible and forgets their in-flight request ids.
    pub fn committed(&mut self, done: &[(Coi, u64, SiteId, Option<String>)]) {
        self.n_events += done.len() as u64;
        for (coi, position, site, request_id) in done {
            if let Some(chain) = self.chains.get_mut(coi) {
                chain.committed = chain.committed.max(*position);
            }
            if let Some(rid) = request_id {
                self.in_flight.remove(&(site.clone(), rid.clone()));
            }
        }
        self.trim();
    }
}
