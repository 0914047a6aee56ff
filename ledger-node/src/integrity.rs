//! `ledger-node verify-store`: the operator's integrity check of a whole local store. Walks
//! the event log without changing it and checks every record (length, CRC, canonical
//! decoding), every event (admitted by the network's trust: certificate, revocation,
//! signature), every feed (contiguous from seq 1, each event naming its predecessor, no
//! event stored twice) and, when the node is stopped, every index key against an index
//! rebuilt from the log.

use crate::network::Network;
use crate::store::{self, IndexCheck, StoreConfig};
use ledger_core::{Admission, EventId, FeedState, SiteId, Trust};
use std::collections::{BTreeMap, HashSet};

/// What the check found.
#[derive(Debug)]
pub struct StoreCheck {
    pub n_events: u64,
    pub log_bytes: u64,
    pub n_feeds: usize,
    pub n_chains: usize,
    /// Defects of the store: each one means the store does not hold what it should.
    pub problems: Vec<String>,
    /// Facts the store keeps as evidence, not defects (equivocation proofs, a torn tail
    /// the node cuts at its next start).
    pub notes: Vec<String>,
    /// The index comparison, or why it was not made.
    pub index: Result<IndexCheck, String>,
}

impl StoreCheck {
    /// No problem in what was checked (an index the running node held is not checked, and
    /// says so, but is not a problem).
    pub fn clean(&self) -> bool {
        self.problems.is_empty() && self.index.as_ref().map_or(true, |i| i.n_mismatches == 0)
    }
}

const PROBLEMS_SHOWN: usize = 100;

/// Checks the store in `cfg.dir` against the network's trust. `scratch` is an empty
/// directory for the rebuilt index.
///
/// # Errors
/// When the log cannot be read at all (missing, not a log, I/O).
pub fn verify_store(
    cfg: &StoreConfig,
    network: &Network,
    scratch: &std::path::Path,
) -> Result<StoreCheck, store::StoreError> {
    let (admission, bad_trust) = Admission::new(&Trust {
        anchor: network.anchor,
        network: network.id.clone(),
        certificates: network.certificates.clone(),
        revocations: network.revocations.clone(),
    });
    let mut check = StoreCheck {
        n_events: 0,
        log_bytes: 0,
        n_feeds: 0,
        n_chains: 0,
        problems: Vec::new(),
        notes: Vec::new(),
        index: Err(String::new()),
    };
    for f in bad_trust {
        check
            .problems
            .push(format!("network directory: {}", f.message));
    }
    let mut feeds: BTreeMap<SiteId, FeedState> = BTreeMap::new();
    let mut seen: HashSet<EventId> = HashSet::new();
    let mut chains: HashSet<ledger_core::Coi> = HashSet::new();
    let mut n_problems = 0usize;
    let mut problem = |check: &mut StoreCheck, text: String| {
        n_problems += 1;
        if check.problems.len() < PROBLEMS_SHOWN {
            check.problems.push(text);
        }
    };
    let mut pending: Vec<String> = Vec::new();
    let scan = store::scan_log(&cfg.dir, |record, offset| {
        let e = &record.event;
        let id = e.id();
        let what = format!(
            "{} seq {} ({}, at log offset {offset})",
            e.author(),
            e.seq(),
            id.short()
        );
        chains.insert(e.coi().clone());
        if !seen.insert(id) {
            pending.push(format!("{what} is stored twice"));
            return;
        }
        if let Err(f) = admission.admit(e) {
            pending.push(format!("{what}: {} ({})", f.message, f.code));
        }
        let feed = feeds.entry(e.author().clone()).or_default();
        let seq = e.seq().0;
        if seq <= feed.seq {
            pending.push(format!("note: {what} is a second event for a seq already held: proof that {} equivocated, kept as evidence", e.author()));
        } else if seq > feed.seq + 1 {
            pending.push(format!(
                "{what} follows seq {}: seqs {}..{} are missing from the feed",
                feed.seq,
                feed.seq + 1,
                seq - 1
            ));
            feed.seq = seq;
            feed.head = Some(id);
        } else if e.prev() != feed.head {
            pending.push(format!("{what} does not name the feed's seq {} as its previous event: the hash chain is broken", feed.seq));
            feed.seq = seq;
            feed.head = Some(id);
        } else {
            feed.seq = seq;
            feed.head = Some(id);
        }
    })?;
    for p in pending {
        match p.strip_prefix("note: ") {
            Some(n) => check.notes.push(n.to_owned()),
            None => problem(&mut check, p),
        }
    }
    if n_problems > PROBLEMS_SHOWN {
        check
            .problems
            .push(format!("... and {} more", n_problems - PROBLEMS_SHOWN));
    }
    if let Some((offset, reason)) = &scan.bad {
        let n_bytes = scan.file_len - scan.valid_end;
        if scan.bad_is_torn_write {
            check.notes.push(format!(
                "the log ends with {n_bytes} bytes that are not a complete record (at offset {offset}: {reason}): an interrupted write, which the node cuts at its next start unless its index shows them acknowledged"
            ));
        } else {
            check.problems.push(format!(
                "the log is damaged at offset {offset} ({reason}): that record is all there but wrong, which no interrupted write leaves, so it and the {n_bytes} bytes after it may be acknowledged events; the node will not start on this log: restore it from a backup or from a replica"
            ));
        }
    }
    check.n_events = scan.n_records;
    check.log_bytes = scan.valid_end;
    check.n_feeds = feeds.len();
    check.n_chains = chains.len();
    check.index = match store::check_index(cfg, scratch) {
        Ok(i) => Ok(i),
        Err(e) if e.held_by_another_process() => Err(
            "not checked: a running node holds the index (stop it to check the index too)"
                .to_owned(),
        ),
        Err(e) => Err(format!("not checked: {e}")),
    };
    Ok(check)
}
