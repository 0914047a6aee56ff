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
    Body, CausalOrder, Checkpoint, ClockIndex, Code, Coi, Event, EventId, FeedState, Finding,
    NetworkId, Placement, Policy, Projection, RequestDigest, Role, Seq, SiteId, Timestamp,
    UnsignedEvent,
};
use proto::convert::AppendDraft;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    #[error("request id {request_id} was already used for another event (site {site}, seq {seq}, event {event_id}): a retry must send exactly the same event, and a new event needs a new request id")]
    RequestIdReused {
        request_id: String,
        site: SiteId,
        seq: Seq,
        event_id: EventId,
    },
    #[error("site {site} does not sign yet: this node holds its feed up to seq {held} and is still learning the feed's latest seq from the network (a new or restored store must not sign a seq the network already has); it signs again once NATS answers")]
    FeedNotLearned { site: SiteId, held: u64 },
    #[error("this node cannot sign for site {site} now: {reason}")]
    KeyNotUsable { site: SiteId, reason: String },
    #[error("too many appends are waiting for the disk ({depth} queued); retry with backoff")]
    QueueFull { depth: usize },
    #[error("the node stopped accepting appends after a storage failure; restart it")]
    Stopped,
    #[error("the node is stopping; retry with the same request id once it is back")]
    Closing,
    #[error(
        "the node's index has not caught up with the appends it answered after {waited_s} s; retry"
    )]
    IndexBehind { waited_s: u64 },
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

/// What the store said about a request id, asked before taking the ledger lock: a sled
/// read can block for milliseconds while the indexer applies a batch, and under the lock
/// it would stop every other append.
#[derive(Debug)]
pub enum Looked {
    /// Indexed already: a retry (answered with the original receipt) if it asks for the
    /// same as the original request.
    Found(Receipt, RequestDigest),
    /// Not indexed when asked; `epoch` is [`Ledger::indexed_epoch`] read just before
    /// asking, so the ledger can tell whether a request was indexed (and left `in_flight`)
    /// since.
    Absent { epoch: u64 },
}

impl Looked {
    /// Asks the store about `(site, request_id)`; read `epoch` first (see [`Looked::Absent`]).
    ///
    /// # Errors
    /// [`StoreError`] reading the index or the log.
    pub fn ask(
        store: &Store,
        epoch: &AtomicU64,
        site: &SiteId,
        request_id: &str,
    ) -> Result<Looked, StoreError> {
        let epoch = epoch.load(Ordering::Acquire);
        Ok(match store.request_event(site, request_id)? {
            Some(e) => Looked::Found(Receipt::retry_of(&e), e.request_digest()),
            None => Looked::Absent { epoch },
        })
    }
}

impl Receipt {
    /// The answer to a retry of the request that appended `e`.
    fn retry_of(e: &Event) -> Receipt {
        Receipt {
            event_id: e.id(),
            site: e.author().clone(),
            seq: e.seq(),
            recorded_at: e.recorded_at(),
            duplicate: true,
        }
    }
}

/// Request ids indexed recently, kept so that a lookup made before the ledger lock
/// ([`Looked::Absent`]) is still conclusive when the indexer ran in between. Bounded: an
/// append whose lookup is older than what is kept asks the store again under the lock.
const RECENT_REQUESTS_MAX: usize = 8192;

#[derive(Debug, Default)]
struct Recent {
    receipts: HashMap<(SiteId, String), (Receipt, RequestDigest)>,
    /// In the order indexed, with the epoch that indexed them.
    order: VecDeque<(u64, (SiteId, String))>,
    /// Every request indexed at this epoch or later is in `receipts`.
    complete_from: u64,
}

impl Recent {
    fn insert(&mut self, epoch: u64, key: (SiteId, String), known: (Receipt, RequestDigest)) {
        self.receipts.insert(key.clone(), known);
        self.order.push_back((epoch, key));
        while self.order.len() > RECENT_REQUESTS_MAX {
            let Some((dropped, _)) = self.order.front() else {
                break;
            };
            // Whole epochs only: `complete_from` must stay true.
            let dropped = *dropped;
            while self.order.front().is_some_and(|(e, _)| *e == dropped) {
                if let Some((_, key)) = self.order.pop_front() {
                    self.receipts.remove(&key);
                }
            }
            self.complete_from = dropped + 1;
        }
    }
}

struct Feed {
    key: ledger_core::SecretKey,
    standing: ledger_core::KeyStanding,
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

    /// Takes a fork's second event as evidence: it has a chain position (the store indexes
    /// it there) but changes neither the projection nor the heads, so nothing ever builds
    /// on it.
    fn accept_evidence(&mut self, finding: Finding) -> u64 {
        self.len += 1;
        self.push_finding(finding);
        self.len
    }

    fn push_finding(&mut self, finding: Finding) {
        if !self.findings.contains(&finding) {
            self.findings.push(finding);
        }
    }
}

/// The finding that reports a fork, on the chains of both events.
fn fork_finding(site: &SiteId, seq: u64, ids: Vec<EventId>) -> Finding {
    Finding::new(
        Code::FeedFork,
        ids,
        format!("site {site} signed different events as seq {seq}: its feed forks (equivocation); this node keeps both as proof and accepts nothing from that feed past seq {seq}"),
    )
}

/// What [`Ledger::ingest`] decided about an event received by replication.
#[derive(Debug)]
pub enum Ingest {
    /// The next event of its feed: commit it.
    New(Box<Prepared>),
    /// A second event for a seq already held: commit it as evidence of equivocation.
    Fork {
        prepared: Box<Prepared>,
        held: EventId,
    },
    /// Held already.
    Duplicate,
    /// Cannot be placed yet: its feed has a gap (`from..=to`) or a parent has not arrived.
    /// Nothing changed; offer it again later.
    Gap {
        from: u64,
        to: u64,
    },
    MissingParents {
        missing: Vec<EventId>,
    },
    /// Never acceptable: a broken hash link, or past a frozen fork.
    Rejected {
        reason: String,
    },
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
    in_flight: HashMap<(SiteId, String), (Receipt, RequestDigest, Arc<AtomicBool>)>,
    /// Calls of [`Ledger::committed`] so far (also readable without the lock).
    indexed_epoch: Arc<AtomicU64>,
    recent: Recent,
    /// Feeds of the sites this node does not sign for, as far as it holds them.
    remote: HashMap<SiteId, FeedState>,
    /// Feed positions decided but not yet indexed: (site, seq) -> (event, chain), so a
    /// repeat or a fork is told apart before the store can answer.
    feed_in_flight: HashMap<(SiteId, u64), (EventId, Coi)>,
    /// Forks seen: (site, seq) -> the ids stored as evidence (besides the event held there).
    forks: BTreeMap<(SiteId, u64), Vec<EventId>>,
    /// Feeds frozen after an equivocation: site -> the seq past which nothing is accepted.
    frozen: HashMap<SiteId, u64>,
    /// Trusted checkpoints that contradict an event held at their (site, seq).
    conflicting_checkpoints: BTreeMap<(SiteId, u64), Vec<Checkpoint>>,
    /// Local sites that must not sign until their feed's latest seq is learned from the
    /// network (a new or restored store).
    learning: BTreeSet<SiteId>,
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
                        standing: s.standing,
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
            indexed_epoch: Arc::new(AtomicU64::new(0)),
            recent: Recent::default(),
            remote: HashMap::new(),
            feed_in_flight: HashMap::new(),
            forks: BTreeMap::new(),
            frozen: HashMap::new(),
            conflicting_checkpoints: BTreeMap::new(),
            learning: BTreeSet::new(),
            n_events: 0,
            clock_entries: 0,
            clock_budget: CLOCK_BUDGET_DEFAULT,
            // Chains replayed at start-up keep last_used 0: idle, before any trim.
            tick: 1,
            last_trim_tick: 1,
            entries_after_trim: 0,
        }
    }

    /// The count of [`Ledger::committed`] calls, for [`Looked::ask`] without the lock.
    pub fn indexed_epoch(&self) -> Arc<AtomicU64> {
        self.indexed_epoch.clone()
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

    /// Folds a stored event at start-up (already durable, so it is committed). The log holds
    /// every author's feed contiguously, in order; an event at a seq already seen is a
    /// fork's evidence and is replayed as such.
    pub fn replay(&mut self, record: &Record) {
        let e = &record.event;
        let state = self.feed_state(e.author());
        if e.seq().0 <= state.seq {
            self.n_events += 1;
            self.note_fork(e, state.seq);
            let chain = self
                .chains
                .entry(e.coi().clone())
                .or_insert_with(|| Chain::new(e.coi().clone()));
            let finding = fork_finding(e.author(), e.seq().0, vec![e.id()]);
            chain.committed = chain.accept_evidence(finding);
            return;
        }
        // Pair assertion: every feed in the log is contiguous and in order (the append path
        // sequences local feeds; `ingest` stores replicated ones only in order).
        assert_eq!(
            e.seq().0,
            state.seq + 1,
            "log holds {} seq {} after seq {}",
            e.author(),
            e.seq(),
            state.seq
        );
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
        self.advance_feed(e);
        self.n_events += 1;
    }

    /// After start-up replay: puts each fork's finding on the chain of the event held at
    /// the forked seq too (replay saw only the evidence).
    ///
    /// # Errors
    /// [`StoreError`] reading the held events.
    pub fn resolve_forks(&mut self, store: &Store) -> Result<(), StoreError> {
        let forks: Vec<((SiteId, u64), Vec<EventId>)> = self
            .forks
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for ((site, seq), evidence) in forks {
            let Some(held) = store.feed_event(&site, Seq(seq))? else {
                continue;
            };
            let Some(event) = store.find(&site, Seq(seq), &held)? else {
                continue;
            };
            let mut ids = vec![held];
            ids.extend(evidence);
            if let Some(chain) = self.chains.get_mut(event.coi()) {
                chain.push_finding(fork_finding(&site, seq, ids));
            }
        }
        Ok(())
    }

    /// How much of `site`'s feed this node holds (decided, committed or in flight).
    pub fn feed_state(&self, site: &SiteId) -> FeedState {
        let frozen_at = self.frozen.get(site).copied();
        match self.feeds.get(site) {
            Some(f) => FeedState {
                seq: f.seq,
                head: f.head,
                frozen_at,
            },
            None => FeedState {
                frozen_at,
                ..self.remote.get(site).copied().unwrap_or_default()
            },
        }
    }

    /// Every author's feed as held: local sites and the others.
    pub fn feed_states(&self) -> BTreeMap<SiteId, FeedState> {
        let mut out: BTreeMap<SiteId, FeedState> = self
            .remote
            .keys()
            .chain(self.feeds.keys())
            .map(|s| (s.clone(), self.feed_state(s)))
            .collect();
        out.retain(|_, f| f.seq > 0);
        out
    }

    fn advance_feed(&mut self, e: &Event) {
        if let Some(feed) = self.feeds.get_mut(e.author()) {
            feed.seq = e.seq().0;
            feed.head = Some(e.id());
            feed.last_recorded = feed.last_recorded.max(e.recorded_at());
        } else {
            let f = self.remote.entry(e.author().clone()).or_default();
            f.seq = e.seq().0;
            f.head = Some(e.id());
        }
    }

    /// Records a fork's evidence and freezes the feed where it stands.
    fn note_fork(&mut self, e: &Event, held_seq: u64) {
        self.forks
            .entry((e.author().clone(), e.seq().0))
            .or_default()
            .push(e.id());
        self.frozen.entry(e.author().clone()).or_insert(held_seq);
    }

    /// The event held at a position at or below the feed's seq.
    fn held_at(
        &self,
        site: &SiteId,
        seq: Seq,
        store: &Store,
    ) -> Result<Option<EventId>, StoreError> {
        if let Some((id, _)) = self.feed_in_flight.get(&(site.clone(), seq.0)) {
            return Ok(Some(*id));
        }
        store.feed_event(site, seq)
    }

    /// Whether this exact event is held already (at its feed position, or as a fork's
    /// evidence), so a redelivery needs no signature check.
    ///
    /// # Errors
    /// [`StoreError`] reading the store.
    pub fn holds(&self, e: &Event, store: &Store) -> Result<bool, StoreError> {
        if e.seq().0 > self.feed_state(e.author()).seq {
            return Ok(false);
        }
        let id = e.id();
        if self.held_at(e.author(), e.seq(), store)? == Some(id) {
            return Ok(true);
        }
        Ok(self
            .forks
            .get(&(e.author().clone(), e.seq().0))
            .is_some_and(|ids| ids.contains(&id)))
    }

    /// Forks seen, (site, seq) -> evidence ids.
    pub fn forks(&self) -> &BTreeMap<(SiteId, u64), Vec<EventId>> {
        &self.forks
    }

    /// Trusted checkpoints that contradict a held event.
    pub fn conflicting_checkpoints(&self) -> &BTreeMap<(SiteId, u64), Vec<Checkpoint>> {
        &self.conflicting_checkpoints
    }

    /// Compares a trusted checkpoint with the event held at its (site, seq). Returns the
    /// held event when they disagree (the checkpoint is then kept as proof of equivocation,
    /// the feed frozen, and the finding put on the held event's chain); `None` when they
    /// agree, when nothing is held there yet, or when this contradiction is already known.
    ///
    /// # Errors
    /// [`StoreError`] reading the held event.
    pub fn check_checkpoint(
        &mut self,
        cp: &Checkpoint,
        store: &Store,
    ) -> Result<Option<Event>, StoreError> {
        let state = self.feed_state(&cp.site);
        if cp.seq.0 > state.seq {
            return Ok(None);
        }
        let Some(held) = self.held_at(&cp.site, cp.seq, store)? else {
            return Ok(None);
        };
        if held == cp.head {
            return Ok(None);
        }
        let known = self
            .conflicting_checkpoints
            .entry((cp.site.clone(), cp.seq.0))
            .or_default();
        if known.iter().any(|k| k.bytes() == cp.bytes()) {
            return Ok(None);
        }
        known.push(cp.clone());
        self.frozen.entry(cp.site.clone()).or_insert(state.seq);
        let Some(event) = store.find(&cp.site, cp.seq, &held)? else {
            return Ok(None);
        };
        if let Some(chain) = self.chains.get_mut(event.coi()) {
            chain.push_finding(Finding::new(
                Code::FeedFork,
                vec![held, cp.head],
                format!("site {} signed a checkpoint naming {} as its seq {}, but this node holds event {} there: equivocation", cp.site, cp.head.short(), cp.seq, held.short()),
            ));
        }
        Ok(Some(event))
    }

    /// Stops (`true`) or allows signing for a local site until its feed is learned.
    pub fn set_learning(&mut self, site: &SiteId, learning: bool) {
        if learning {
            self.learning.insert(site.clone());
        } else {
            self.learning.remove(site);
        }
    }

    pub fn is_learning(&self, site: &SiteId) -> bool {
        self.learning.contains(site)
    }

    /// Decides an event received by replication, already admitted (network, certificate,
    /// signature: [`ledger_core::Admission`]). The fold judges it but never refuses it: it
    /// is another site's signed record, and its findings are kept with the chain.
    ///
    /// # Errors
    /// [`StoreError`] reading what is held.
    pub fn ingest(
        &mut self,
        event: Event,
        role: Role,
        store: &Store,
    ) -> Result<Ingest, StoreError> {
        let site = event.author().clone();
        let state = self.feed_state(&site);
        let held = if event.seq().0 <= state.seq {
            self.held_at(&site, event.seq(), store)?
        } else {
            None
        };
        match ledger_core::place(&state, &event, |_| held) {
            Placement::Duplicate => Ok(Ingest::Duplicate),
            Placement::Gap { from, to } => Ok(Ingest::Gap { from, to }),
            Placement::Frozen { at } => Ok(Ingest::Rejected {
                reason: format!("site {site}'s feed is frozen at seq {at} after an equivocation; seq {} is not accepted", event.seq()),
            }),
            Placement::BrokenLink { expected } => Ok(Ingest::Rejected {
                reason: format!(
                    "seq {} names {} as its previous event, but this node holds {} as seq {}: the feed's hash chain is broken",
                    event.seq(),
                    event.prev().map_or("none".to_owned(), |p| p.short()),
                    expected.map_or("none".to_owned(), |p| p.short()),
                    state.seq
                ),
            }),
            Placement::Fork { held } => {
                let id = event.id();
                let already = self
                    .forks
                    .get(&(site.clone(), event.seq().0))
                    .is_some_and(|ids| ids.contains(&id));
                if already || store.find(&site, event.seq(), &id)?.is_some() {
                    return Ok(Ingest::Duplicate);
                }
                let seq = event.seq().0;
                self.note_fork(&event, state.seq);
                let finding = fork_finding(&site, seq, vec![held, id]);
                let held_coi = match self.feed_in_flight.get(&(site.clone(), seq)) {
                    Some((_, coi)) => Some(coi.clone()),
                    None => store.find(&site, event.seq(), &held)?.map(|e| e.coi().clone()),
                };
                if let Some(chain) = held_coi.and_then(|c| self.chains.get_mut(&c)) {
                    chain.push_finding(finding.clone());
                }
                let coi = event.coi().clone();
                let chain = self
                    .chains
                    .entry(coi.clone())
                    .or_insert_with(|| Chain::new(coi.clone()));
                let position = chain.accept_evidence(finding);
                let prepared = self.replicated(event, coi, position);
                Ok(Ingest::Fork {
                    prepared: Box::new(prepared),
                    held,
                })
            }
            Placement::Next => {
                let coi = event.coi().clone();
                self.load_clocks(&coi, store)?;
                let missing: Vec<EventId> = match self.chains.get(&coi) {
                    Some(chain) => event
                        .parents()
                        .iter()
                        .filter(|p| !chain.clocks.as_ref().is_some_and(|c| c.contains(**p)))
                        .copied()
                        .collect(),
                    None => event.parents().to_vec(),
                };
                if !missing.is_empty() {
                    return Ok(Ingest::MissingParents { missing });
                }
                let chain = self
                    .chains
                    .entry(coi.clone())
                    .or_insert_with(|| Chain::new(coi.clone()));
                chain.last_used = self.tick;
                let feed_prev = event
                    .prev()
                    .filter(|p| chain.clocks.as_ref().is_some_and(|c| c.contains(*p)));
                let before = chain.n_clock_entries();
                let (projection, findings) = chain.judge(&event, feed_prev, Some(role), &self.policy);
                self.clock_entries += chain.n_clock_entries() - before;
                let position = chain.accept(&event, projection, findings);
                self.advance_feed(&event);
                Ok(Ingest::New(Box::new(self.replicated(event, coi, position))))
            }
        }
    }

    /// A replicated event ready for the committer.
    fn replicated(&mut self, event: Event, coi: Coi, position: u64) -> Prepared {
        self.feed_in_flight.insert(
            (event.author().clone(), event.seq().0),
            (event.id(), coi.clone()),
        );
        Prepared {
            receipt: Receipt {
                event_id: event.id(),
                site: event.author().clone(),
                seq: event.seq(),
                recorded_at: event.recorded_at(),
                duplicate: false,
            },
            record: Record {
                event,
                request_id: None,
            },
            coi,
            position,
            durable: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Decides an append: a retry, a refusal, or a signed event ready to commit. On
    /// success the state already includes the event (so the next append builds on it).
    /// `looked` is what [`Looked::ask`] found for the request id before the lock, and
    /// `digest` the draft's [`RequestDigest`] (also computed before the lock).
    ///
    /// # Errors
    /// [`AppendError`] saying what is wrong; nothing changes then.
    pub fn prepare(
        &mut self,
        draft: AppendDraft,
        looked: Looked,
        digest: RequestDigest,
        now: Timestamp,
        store: &Store,
    ) -> Result<Outcome, AppendError> {
        let key = (draft.site.clone(), draft.request_id.clone());
        // A request id used again for another event: answering with the first receipt would
        // drop this scan without a word.
        let reused = |original: &Receipt| AppendError::RequestIdReused {
            request_id: draft.request_id.clone(),
            site: original.site.clone(),
            seq: original.seq,
            event_id: original.event_id,
        };
        if let Some((receipt, was, durable)) = self.in_flight.get(&key) {
            if *was != digest {
                return Err(reused(receipt));
            }
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
        // Not in flight now, so if it was ever appended it is indexed: in the store, and in
        // `recent` if that happened since the caller's lookup.
        let indexed_since = |epoch: u64| -> Result<Option<(Receipt, RequestDigest)>, AppendError> {
            if let Some(r) = self.recent.receipts.get(&key) {
                return Ok(Some(r.clone()));
            }
            let now = self.indexed_epoch.load(Ordering::Relaxed);
            if now == epoch || self.recent.complete_from <= epoch + 1 {
                return Ok(None);
            }
            Ok(store
                .request_event(&draft.site, &draft.request_id)?
                .map(|e| (Receipt::retry_of(&e), e.request_digest())))
        };
        let found = match looked {
            Looked::Found(r, was) => Some((r, was)),
            Looked::Absent { epoch } => indexed_since(epoch)?,
        };
        if let Some((receipt, was)) = found {
            if was != digest {
                return Err(reused(&receipt));
            }
            return Ok(Outcome::Duplicate(receipt));
        }
        let Some(feed) = self.feeds.get(&draft.site) else {
            return Err(AppendError::NotLocalSite { site: draft.site });
        };
        if self.learning.contains(&draft.site) {
            return Err(AppendError::FeedNotLearned {
                held: feed.seq,
                site: draft.site,
            });
        }
        let is_opening = matches!(
            draft.body,
            Body::Collection { .. } | Body::Reassignment { .. }
        );
        if !self.chains.contains_key(&draft.coi) && !is_opening {
            return Err(AppendError::NoCollection { coi: draft.coi });
        }
        // A feed's recorded times never go backwards, whatever the wall clock does.
        let recorded_at = now.max(feed.last_recorded);
        // Every verifier would reject an event signed outside the key's certificate or after
        // its revocation: refuse it rather than write a break.
        if let Err(reason) = feed.standing.check(recorded_at) {
            return Err(AppendError::KeyNotUsable {
                site: draft.site,
                reason,
            });
        }
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
            .insert(key, (receipt.clone(), digest, durable.clone()));
        self.feed_in_flight.insert(
            (draft.site.clone(), event.seq().0),
            (event.id(), draft.coi.clone()),
        );
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

    /// Marks committed events visible and forgets their in-flight request ids and feed
    /// positions.
    pub fn committed(&mut self, done: &[Done]) {
        self.n_events += done.len() as u64;
        // Under the lock, so an append that takes it later sees the new epoch.
        let epoch = self.indexed_epoch.fetch_add(1, Ordering::AcqRel) + 1;
        for d in done {
            if let Some(chain) = self.chains.get_mut(&d.coi) {
                chain.committed = chain.committed.max(d.position);
            }
            if let Some(rid) = &d.request_id {
                let key = (d.site.clone(), rid.clone());
                if let Some((receipt, digest, _)) = self.in_flight.remove(&key) {
                    let receipt = Receipt {
                        duplicate: true,
                        ..receipt
                    };
                    self.recent.insert(epoch, key, (receipt, digest));
                }
            }
            self.feed_in_flight.remove(&(d.site.clone(), d.seq.0));
        }
        self.trim();
    }
}

/// An event the committer made durable: where it sits, and what to forget once indexed.
#[derive(Debug, Clone)]
pub struct Done {
    pub coi: Coi,
    pub position: u64,
    pub site: SiteId,
    pub seq: Seq,
    pub request_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(n: u64) -> (Receipt, RequestDigest) {
        let receipt = Receipt {
            event_id: EventId([n as u8; 32]),
            site: SiteId::parse("clinic-a").expect("site id"),
            seq: Seq(n),
            recorded_at: Timestamp(0),
            duplicate: true,
        };
        (receipt, RequestDigest([n as u8; 32]))
    }

    fn key(n: usize) -> (SiteId, String) {
        (
            SiteId::parse("clinic-a").expect("site id"),
            format!("r-{n}"),
        )
    }

    #[test]
    fn recent_requests_drop_whole_epochs_and_say_from_where_they_are_complete() {
        let mut recent = Recent::default();
        // Epoch 1 holds three requests, then one per epoch.
        for n in 0..3 {
            recent.insert(1, key(n), receipt(n as u64));
        }
        let mut n = 3;
        while recent.order.len() < RECENT_REQUESTS_MAX {
            recent.insert(n as u64, key(n), receipt(n as u64));
            n += 1;
        }
        assert_eq!(recent.complete_from, 0);
        assert!(recent.receipts.contains_key(&key(0)));
        // One more: the whole of epoch 1 goes, not only its first request.
        recent.insert(n as u64, key(n), receipt(n as u64));
        assert_eq!(recent.complete_from, 2);
        assert_eq!(recent.order.len(), RECENT_REQUESTS_MAX - 2);
        assert_eq!(recent.receipts.len(), RECENT_REQUESTS_MAX - 2);
        for gone in 0..3 {
            assert!(!recent.receipts.contains_key(&key(gone)), "r-{gone} kept");
        }
        assert_eq!(recent.receipts.get(&key(3)), Some(&receipt(3)));
        assert_eq!(recent.receipts.get(&key(n)), Some(&receipt(n as u64)));
    }
}
