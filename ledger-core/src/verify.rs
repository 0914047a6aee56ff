//! The chain verifier: `verify(events, trust, options) -> Verdict`.
//!
//! Order of work, each step over the deduplicated events (input order and duplicates never
//! change the outcome):
//!
//! 1. Trust: keep the certificates and revocations the anchor signed for this network.
//! 2. Admission: an event is *admitted* (its content may be judged) when it belongs to the
//!    network, a certificate binds its key to its author at its recorded time, no
//!    revocation covers that time, and its signature verifies strictly. Events that are
//!    not admitted are reported and stay in the graph as nodes, but decide nothing.
//! 3. Feeds: forks (one author, one seq, two admitted events), prev-hash links where the
//!    previous event is present, gaps when the scope says feeds are whole.
//! 4. Graph: dangling parents; causal order = parents + feed order, computed as vector
//!    clocks over a deterministic topological order; a cycle is a finding.
//! 5. Clock: recorded time going backwards against the feed, a parent or its own scan time
//!    by more than the tolerance.
//! 6. The projection fold in causal order (see [`crate::projection`]), then the exporter's
//!    statement of heads and any checkpoints.
//!
//! Timestamps never decide causal order; they only feed the clock and stability checks.

use crate::causal::ClockIndex;
use crate::crypto::PublicKey;
use crate::event::Event;
use crate::finding::{Code, Finding, Severity};
use crate::ids::{Coi, EventId, NetworkId, Seq, SiteId};
use crate::projection::{CausalOrder, Policy, Projection, Status};
use crate::time::Timestamp;
use crate::trust::{Certificate, Checkpoint, Revocation, Role};
use std::collections::{BTreeMap, BinaryHeap, HashMap};

/// Whether whole feeds are present (judge gaps) or only one COI's share of them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Scope {
    /// A COI export: each feed holds only this patient's seqs, so gaps are expected.
    CoiExport,
    /// Whole feeds (a site's own store, a fixture whose feeds hold only one journey).
    WholeFeeds,
}

/// What the verifier trusts: the anchor key and the records it signed.
#[derive(Clone, Debug)]
pub struct Trust {
    pub anchor: PublicKey,
    pub network: NetworkId,
    pub certificates: Vec<Certificate>,
    pub revocations: Vec<Revocation>,
}

/// How to verify.
#[derive(Clone, Debug)]
pub struct Options {
    pub scope: Scope,
    pub policy: Policy,
    /// The chain being verified; when absent, the COI of the collection (or of the first
    /// event in causal order).
    pub coi: Option<Coi>,
    /// The exporter's signed statement of the COI's heads at export time.
    pub heads: Option<Vec<EventId>>,
    pub checkpoints: Vec<Checkpoint>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            scope: Scope::CoiExport,
            policy: Policy::default(),
            coi: None,
            heads: None,
            checkpoints: Vec::new(),
        }
    }
}

/// The outcome in one word.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum VerdictKind {
    /// Every check passed; no finding.
    Intact,
    /// At least one finding proves a break.
    Broken,
    /// No break proven, but evidence is missing.
    Incomplete,
    /// The evidence cannot be checked against the anchor the verifier trusts: no verdict
    /// on the chain at all (see [`Severity::Unverifiable`]).
    Unverifiable,
}

impl VerdictKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictKind::Intact => "intact",
            VerdictKind::Broken => "broken",
            VerdictKind::Incomplete => "incomplete",
            VerdictKind::Unverifiable => "unverifiable",
        }
    }

    pub fn parse(text: &str) -> Option<VerdictKind> {
        [
            VerdictKind::Intact,
            VerdictKind::Broken,
            VerdictKind::Incomplete,
            VerdictKind::Unverifiable,
        ]
        .into_iter()
        .find(|v| v.as_str() == text)
    }

    /// A proven break first (an altered bundle is broken whatever the anchor), then
    /// "cannot be checked", then missing evidence.
    pub fn from_findings(findings: &[Finding]) -> VerdictKind {
        if findings.iter().any(|f| f.severity() == Severity::Break) {
            VerdictKind::Broken
        } else if findings
            .iter()
            .any(|f| f.severity() == Severity::Unverifiable)
        {
            VerdictKind::Unverifiable
        } else if findings.is_empty() {
            VerdictKind::Intact
        } else {
            VerdictKind::Incomplete
        }
    }
}

/// The verifier's answer.
#[derive(Debug)]
pub struct Verdict {
    pub kind: VerdictKind,
    pub status: Status,
    pub coi: Option<Coi>,
    pub findings: Vec<Finding>,
    /// Distinct events examined (after removing duplicates).
    pub n_events: usize,
    /// The chain's state after the fold of admitted events.
    pub projection: Option<Projection>,
    /// Events in the causal order the fold used.
    pub order: Vec<EventId>,
}

/// The trust records the anchor signed for one network, indexed to admit events one at a
/// time. The verifier and a replica receiving events by replication use these same rules.
#[derive(Clone, Debug)]
pub struct Admission {
    network: NetworkId,
    certs: HashMap<(SiteId, PublicKey), Vec<Certificate>>,
    /// The earliest time each (site, key) is revoked from.
    revoked: HashMap<(SiteId, PublicKey), Timestamp>,
    /// Certified keys, parsed once (`None`: not a valid Ed25519 point).
    keys: HashMap<PublicKey, Option<ed25519_dalek::VerifyingKey>>,
}

impl Admission {
    /// Keeps the certificates and revocations the anchor signed for this network; the
    /// others are returned as `integrity.bad_certificate` findings.
    pub fn new(trust: &Trust) -> (Admission, Vec<Finding>) {
        let mut findings = Vec::new();
        let mut certs: HashMap<(SiteId, PublicKey), Vec<Certificate>> = HashMap::new();
        for c in &trust.certificates {
            if c.network != trust.network || !c.signed_by(&trust.anchor) {
                findings.push(Finding::new(
                    Code::BadCertificate,
                    Vec::new(),
                    format!("the certificate for site {} (key {}) is not signed by this network's anchor; it was ignored", c.site, &c.key.to_hex()[..16]),
                ));
                continue;
            }
            certs
                .entry((c.site.clone(), c.key))
                .or_default()
                .push(c.clone());
        }
        let mut revoked: HashMap<(SiteId, PublicKey), Timestamp> = HashMap::new();
        for r in &trust.revocations {
            if r.network != trust.network || !r.signed_by(&trust.anchor) {
                findings.push(Finding::new(
                    Code::BadCertificate,
                    Vec::new(),
                    format!("the revocation for site {} is not signed by this network's anchor; it was ignored", r.site),
                ));
                continue;
            }
            let t = revoked
                .entry((r.site.clone(), r.key))
                .or_insert(r.effective_from);
            *t = (*t).min(r.effective_from);
        }
        let keys = certs.keys().map(|(_, k)| (*k, k.verifying_key())).collect();
        (
            Admission {
                network: trust.network.clone(),
                certs,
                revoked,
                keys,
            },
            findings,
        )
    }

    /// Admits an event whose content may then be judged: it belongs to the network, a
    /// certificate binds its key to its author at its recorded time, no revocation covers
    /// that time, and its signature verifies strictly. Otherwise the finding says why not.
    ///
    /// # Errors
    /// The `integrity.*` finding naming the event and the reason.
    pub fn admit(&self, e: &Event) -> Result<Role, Finding> {
        self.refusal(e).map_err(|why| refusal_finding(e, why))
    }

    fn refusal(&self, e: &Event) -> Result<Role, Refusal> {
        if e.network() != &self.network {
            return Err(Refusal::WrongNetwork);
        }
        let site_key = (e.author().clone(), *e.key());
        let Some(cs) = self.certs.get(&site_key) else {
            return Err(Refusal::UnknownKey);
        };
        let at = e.recorded_at();
        let Some(cert) = cs.iter().find(|c| c.valid_at(at)) else {
            return Err(Refusal::Expired);
        };
        if self.revoked.get(&site_key).is_some_and(|from| *from <= at) {
            return Err(Refusal::Revoked);
        }
        match self.keys.get(e.key()) {
            Some(Some(k)) if e.signature_valid(k) => Ok(cert.role),
            _ => Err(Refusal::BadSignature),
        }
    }

    /// Whether a checkpoint counts: of this network, signed by its key, and that key
    /// certified for the site (and not revoked) when the checkpoint was signed.
    pub fn checkpoint_trusted(&self, cp: &Checkpoint) -> bool {
        let site_key = (cp.site.clone(), cp.key);
        cp.network == self.network
            && cp.signature_valid()
            && self
                .certs
                .get(&site_key)
                .is_some_and(|cs| cs.iter().any(|c| c.valid_at(cp.at)))
            && self.revoked.get(&site_key).is_none_or(|from| *from > cp.at)
    }
}

/// Why an event was not admitted.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Refusal {
    WrongNetwork,
    UnknownKey,
    Expired,
    Revoked,
    BadSignature,
}

/// The verifier's view of causal order: the clock index plus the events, for labels.
struct Evidence<'a> {
    clocks: ClockIndex,
    evs: &'a [&'a Event],
    index: &'a HashMap<EventId, usize>,
}

impl CausalOrder for Evidence<'_> {
    fn precedes(&self, a: EventId, b: EventId) -> bool {
        self.clocks.precedes(a, b)
    }

    fn contains(&self, id: EventId) -> bool {
        self.index.contains_key(&id)
    }

    fn label(&self, id: EventId) -> Option<String> {
        self.index
            .get(&id)
            .map(|&i| crate::projection::event_label(self.evs[i]))
    }
}

/// Verifies a set of events against the trust it is given.
///
/// Never panics on any input: every defect of the evidence is a [`Finding`].
pub fn verify(events: &[Event], trust: &Trust, options: &Options) -> Verdict {
    let mut findings = Vec::new();

    // 1. Trust records.
    let (admission, trust_findings) = Admission::new(trust);
    findings.extend(trust_findings);

    // Deduplicate by id; sort by id so input order never matters.
    let mut by_id: BTreeMap<EventId, &Event> = BTreeMap::new();
    for e in events {
        by_id.entry(e.id()).or_insert(e);
    }
    let evs: Vec<&Event> = by_id.values().copied().collect();
    let n = evs.len();

    // 2. Admission.
    let mut role: Vec<Option<Role>> = vec![None; n];
    for (i, e) in evs.iter().enumerate() {
        match admission.admit(e) {
            Ok(r) => role[i] = Some(r),
            Err(finding) => findings.push(finding),
        }
    }

    // 3. Feeds.
    let mut feeds: BTreeMap<(&SiteId, Seq), Vec<usize>> = BTreeMap::new();
    for (i, e) in evs.iter().enumerate() {
        feeds.entry((e.author(), e.seq())).or_default().push(i);
    }
    for ((site, seq), idxs) in &feeds {
        let admitted: Vec<usize> = idxs
            .iter()
            .copied()
            .filter(|&i| role[i].is_some())
            .collect();
        if admitted.len() > 1 {
            findings.push(Finding::new(
                Code::FeedFork,
                admitted.iter().map(|&i| evs[i].id()).collect(),
                format!("site {site} signed {} different events as seq {seq}: its feed forks (equivocation)", admitted.len()),
            ));
        }
    }
    let mut prev_present: HashMap<usize, usize> = HashMap::new(); // event -> nearest earlier event in its feed
    {
        let mut last: Option<(&SiteId, Seq, Vec<usize>)> = None;
        for ((site, seq), idxs) in &feeds {
            if let Some((lsite, lseq, lidxs)) = &last {
                if lsite == site {
                    for &i in idxs {
                        if let Some(&p) = lidxs.first() {
                            prev_present.insert(i, p);
                        }
                        let e = evs[i];
                        if lseq.0 + 1 == seq.0 {
                            if lidxs.len() == 1
                                && role[i].is_some()
                                && e.prev() != Some(evs[lidxs[0]].id())
                            {
                                findings.push(Finding::new(
                                    Code::HashMismatch,
                                    vec![e.id(), evs[lidxs[0]].id()],
                                    format!(
                                        "site {site} seq {seq} names a previous event that is not its seq {lseq} ({}): the feed's hash chain is broken",
                                        evs[lidxs[0]].id().short()
                                    ),
                                ));
                            }
                        } else if options.scope == Scope::WholeFeeds && role[i].is_some() {
                            findings.push(Finding::new(
                                Code::FeedGap,
                                vec![e.id()],
                                format!(
                                    "site {site}'s feed is missing seqs {}..{} before seq {seq}",
                                    lseq.0 + 1,
                                    seq.0 - 1
                                ),
                            ));
                        }
                    }
                } else if options.scope == Scope::WholeFeeds && seq.0 > 1 {
                    feed_start_gap(&mut findings, &evs, idxs, &role, site, *seq);
                }
            } else if options.scope == Scope::WholeFeeds && seq.0 > 1 {
                feed_start_gap(&mut findings, &evs, idxs, &role, site, *seq);
            }
            last = Some((site, *seq, idxs.clone()));
        }
    }

    let index: HashMap<EventId, usize> = evs.iter().enumerate().map(|(i, e)| (e.id(), i)).collect();
    // A prev naming a present event that is not the author's seq n-1 is a broken link even
    // when seq n-1 itself is absent (when it is present, the check above judged it).
    for (i, e) in evs.iter().enumerate() {
        let (Some(p), Some(_)) = (e.prev(), role[i]) else {
            continue;
        };
        if feeds.contains_key(&(e.author(), Seq(e.seq().0 - 1))) {
            continue;
        }
        if let Some(&pi) = index.get(&p) {
            let pe = evs[pi];
            if pe.author() != e.author() || pe.seq().0 + 1 != e.seq().0 {
                findings.push(Finding::new(
                    Code::HashMismatch,
                    vec![e.id(), pe.id()],
                    format!(
                        "site {} seq {} names as its previous event {}, which is {}'s seq {}, not seq {}: the feed's hash chain is broken",
                        e.author(),
                        e.seq(),
                        pe.id().short(),
                        pe.author(),
                        pe.seq(),
                        e.seq().0 - 1
                    ),
                ));
            }
        }
    }

    // 4. Graph.
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut indegree = vec![0usize; n];
    for (i, e) in evs.iter().enumerate() {
        for p in e.parents() {
            match index.get(p) {
                Some(&pi) => {
                    children[pi].push(i);
                    indegree[i] += 1;
                }
                None => findings.push(Finding::new(
                    Code::DanglingParent,
                    vec![e.id(), *p],
                    format!(
                        "{} by {} (seq {}) names parent {}, which is not in the evidence",
                        e.body().kind_name(),
                        e.author(),
                        e.seq(),
                        p.short()
                    ),
                )),
            }
        }
        if let Some(&pi) = prev_present.get(&i) {
            children[pi].push(i);
            indegree[i] += 1;
        }
    }
    // Kahn's algorithm; ties broken by (recorded time, id) so the order is deterministic.
    let mut ready: BinaryHeap<std::cmp::Reverse<(Timestamp, EventId, usize)>> = BinaryHeap::new();
    for i in 0..n {
        if indegree[i] == 0 {
            ready.push(std::cmp::Reverse((evs[i].recorded_at(), evs[i].id(), i)));
        }
    }
    let mut order: Vec<usize> = Vec::with_capacity(n);
    let mut placed = vec![false; n];
    while let Some(std::cmp::Reverse((_, _, i))) = ready.pop() {
        order.push(i);
        placed[i] = true;
        for &c in &children[i] {
            indegree[c] -= 1;
            if indegree[c] == 0 {
                ready.push(std::cmp::Reverse((evs[c].recorded_at(), evs[c].id(), c)));
            }
        }
    }
    if order.len() < n {
        let stuck: Vec<usize> = (0..n).filter(|&i| !placed[i]).collect();
        findings.push(Finding::new(
            Code::CausalCycle,
            stuck.iter().map(|&i| evs[i].id()).collect(),
            format!("{} events contradict each other's order (parents against feed order); they were judged in recorded-time order", stuck.len()),
        ));
        let mut stuck = stuck;
        stuck.sort_by_key(|&i| (evs[i].recorded_at(), evs[i].id()));
        order.extend(stuck);
    }

    // Vector clocks in that order.
    let mut clocks = ClockIndex::new();
    for &i in &order {
        clocks.insert(evs[i], prev_present.get(&i).map(|&p| evs[p].id()));
    }
    let evidence = Evidence {
        clocks,
        evs: &evs,
        index: &index,
    };

    // 5. Clock.
    let tol = options.policy.clock_tolerance;
    for (i, e) in evs.iter().enumerate() {
        if role[i].is_none() {
            continue;
        }
        let rec = e.recorded_at();
        let mut against: Vec<(&str, Timestamp, Option<EventId>)> =
            vec![("its own scan time", e.occurred_at(), None)];
        if let Some(&p) = prev_present.get(&i) {
            against.push((
                "the previous event in its feed",
                evs[p].recorded_at(),
                Some(evs[p].id()),
            ));
        }
        for p in e.parents() {
            if let Some(&pi) = index.get(p) {
                against.push(("a parent", evs[pi].recorded_at(), Some(*p)));
            }
        }
        if let Some((what, t, other)) = against.into_iter().find(|(_, t, _)| rec < t.minus(tol)) {
            let mut ids = vec![e.id()];
            ids.extend(other);
            findings.push(Finding::new(
                Code::ClockBackwards,
                ids,
                format!(
                    "{} by {} (seq {}) was recorded at {rec}, earlier than {what} ({t}) by more than the {tol} tolerance",
                    e.body().kind_name(),
                    e.author(),
                    e.seq()
                ),
            ));
        }
    }

    // 6. The fold.
    let coi = options.coi.clone().or_else(|| {
        order
            .iter()
            .map(|&i| evs[i])
            .find(|e| matches!(e.body(), crate::event::Body::Collection { .. }))
            .or_else(|| order.first().map(|&i| evs[i]))
            .map(|e| e.coi().clone())
    });
    // An event is tainted when its causal past lacks evidence: a dangling parent, a feed
    // gap (where feeds are whole), or a predecessor that is itself tainted or could not be
    // admitted. Absence findings on tainted events cannot prove a break.
    let mut tainted = vec![false; n];
    for &i in &order {
        let e = evs[i];
        let mut t = e.parents().iter().any(|p| !index.contains_key(p));
        if options.scope == Scope::WholeFeeds {
            t |= match prev_present.get(&i) {
                Some(&p) => evs[p].seq().0 + 1 != e.seq().0,
                None => e.seq().0 > 1,
            };
        }
        let preds = e
            .parents()
            .iter()
            .filter_map(|p| index.get(p).copied())
            .chain(prev_present.get(&i).copied());
        for p in preds {
            t |= tainted[p] || role[p].is_none();
        }
        tainted[i] = t;
    }
    let any_missing = tainted.iter().any(|&t| t) || role.iter().any(Option::is_none);
    let mut projection = coi.clone().map(Projection::new);
    if let Some(p) = projection.as_mut() {
        let mut fold_findings = Vec::new();
        for &i in &order {
            if let Some(r) = role[i] {
                p.apply(
                    evs[i],
                    Some(r),
                    &evidence,
                    &options.policy,
                    &mut fold_findings,
                );
            }
        }
        p.finish(&evidence, &mut fold_findings);
        for f in &mut fold_findings {
            if !f.code.asserts_absence() {
                continue;
            }
            let judged_tainted = match f.events.first() {
                Some(id) => index.get(id).is_some_and(|&i| tainted[i]),
                None => any_missing,
            };
            if judged_tainted {
                f.depends_on_missing = true;
                f.message.push_str(" (judged without evidence missing from its causal past, which may hold what is missing here)");
            }
        }
        findings.append(&mut fold_findings);
    }
    if let Some(heads) = &options.heads {
        for h in heads {
            if !index.contains_key(h) {
                findings.push(Finding::new(
                    Code::MissingHead,
                    vec![*h],
                    format!("the exporter stated event {} as a head of this chain, but it is not in the evidence", h.short()),
                ));
            }
        }
    }
    // Checkpoints: each (site, seq) the trusted checkpoints speak of gets at most one
    // finding, whichever contradiction shows it: two heads stated, a present event other
    // than the stated head, or the stated head present at another position.
    let mut stated: BTreeMap<(&SiteId, Seq), std::collections::BTreeSet<EventId>> = BTreeMap::new();
    for cp in &options.checkpoints {
        // A checkpoint counts only if the site's key was trusted when it was signed.
        if admission.checkpoint_trusted(cp) {
            stated
                .entry((&cp.site, cp.seq))
                .or_default()
                .insert(cp.head);
        }
    }
    for ((site, seq), heads) in &stated {
        let present: Vec<EventId> = feeds
            .get(&(*site, *seq))
            .into_iter()
            .flatten()
            .filter(|&&i| role[i].is_some())
            .map(|&i| evs[i].id())
            .collect();
        if heads.len() > 1 {
            let mut ids: Vec<EventId> = heads.iter().copied().collect();
            ids.extend(present.iter().filter(|id| !heads.contains(id)));
            findings.push(Finding::new(
                Code::FeedFork,
                ids,
                format!("site {site} signed checkpoints naming {} different events as its seq {seq}: equivocation", heads.len()),
            ));
            continue;
        }
        let Some(&head) = heads.first() else { continue };
        if let Some(&other) = present.iter().find(|&&id| id != head) {
            findings.push(Finding::new(
                Code::FeedFork,
                vec![other, head],
                format!("site {site} signed a checkpoint naming {} as its seq {seq}, but signed event {} for that seq: equivocation", head.short(), other.short()),
            ));
        } else if let Some(&hi) = index.get(&head) {
            let he = evs[hi];
            if he.author() != *site || he.seq() != *seq {
                findings.push(Finding::new(
                    Code::FeedFork,
                    vec![he.id()],
                    format!("site {site} signed a checkpoint naming event {} as its seq {seq}, but that event is {}'s seq {}: equivocation", he.id().short(), he.author(), he.seq()),
                ));
            }
        }
    }

    let kind = VerdictKind::from_findings(&findings);
    let status = projection
        .as_ref()
        .map_or(Status::Empty, Projection::status);
    Verdict {
        kind,
        status,
        coi,
        findings,
        n_events: n,
        projection,
        order: order.iter().map(|&i| evs[i].id()).collect(),
    }
}

fn feed_start_gap(
    findings: &mut Vec<Finding>,
    evs: &[&Event],
    idxs: &[usize],
    role: &[Option<Role>],
    site: &SiteId,
    seq: Seq,
) {
    if let Some(&i) = idxs.iter().find(|&&i| role[i].is_some()) {
        findings.push(Finding::new(
            Code::FeedGap,
            vec![evs[i].id()],
            format!(
                "site {site}'s feed is missing seqs 1..{} before seq {seq}",
                seq.0 - 1
            ),
        ));
    }
}

fn refusal_finding(e: &Event, why: Refusal) -> Finding {
    let what = format!(
        "{} by {} (seq {})",
        e.body().kind_name(),
        e.author(),
        e.seq()
    );
    let (code, msg) = match why {
        Refusal::WrongNetwork => (Code::WrongNetwork, format!("{what} belongs to network {}, not this one", e.network())),
        Refusal::UnknownKey => (Code::UnknownKey, format!("{what} is signed with a key that no certificate from the anchor gives to {}", e.author())),
        Refusal::Expired => (Code::KeyExpired, format!("{what} was signed at {} with a key whose certificate was not valid then", e.recorded_at())),
        Refusal::Revoked => (Code::KeyRevoked, format!("{what} was signed at {} with a key revoked before then", e.recorded_at())),
        Refusal::BadSignature => (Code::BadSignature, format!("{what}: the signature does not match the event's bytes (altered after signing, or signed by another key)")),
    };
    Finding::new(code, vec![e.id()], msg)
}
