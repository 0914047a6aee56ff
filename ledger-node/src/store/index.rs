//! The sled index over the log: lookups by id, feed position, chain position, request id
//! and unit. Everything here can be thrown away and rebuilt from the log.
//!
//! One sled tree, `index`; each key starts with a byte that says what it indexes (integers
//! big-endian so that byte order is numeric order). Values point into the log ([`Loc`]:
//! offset u64 BE | frame length u32 BE) rather than copying events, so the index stays a
//! small fraction of the log and a read is one sled lookup plus one `pread`.
//!
//! ```text
//! 'f' | site | 0x00 | run u64 BE           -> slots: Loc of the first event stored at each
//!                                             seq of the run
//! 'x' | event id (32)                      -> Loc of a later event at a used feed position
//!                                             (a fork: kept as evidence)
//! 'c' | coi (15) | run u64 BE              -> slots: Loc of each chain position of the run;
//!                                             positions 1, 2, 3, ... in log order
//! 'l' | coi                                -> u64 BE, the last position
//! 'r' | site | 0x00 | request id           -> Loc (first event stored with it)
//! 'u' | unit                               -> coi of the event that last created it
//! 'm' | "applied"                          -> index format u32 BE | log offset u64 BE
//!                                             | records u64 BE
//! 'p' | site                               -> u64 BE: the outbox mark, the last seq of
//!                                             the site's feed that NATS acknowledged
//! ```
//!
//! Feed seqs and chain positions are kept in *runs* of [`RUN`] consecutive numbers, one key
//! per run (seq or position n is slot (n - 1) mod [`RUN`] of run (n - 1) / [`RUN`]). The
//! value is the run's slots from the first up to the last one used, [`Loc::BYTES`] each; an
//! all-zero slot is empty (no record has length 0). An upload of a hundred events on one
//! chain thus costs sled a handful of keys instead of two hundred: sled's cost is per key
//! inserted (each insert copies the leaf it changes), far more than per byte. Runs are
//! aligned to the numbers, not to the batches that wrote them, so an index rebuilt from the
//! log in different batches has exactly the same keys and values.
//!
//! The outbox mark is the one key that is not derived from the log. Losing it (a crash
//! within sled's fsync interval, an index rebuild) only republishes events, which every
//! receiver stores idempotently by id.
//!
//! An event is found by its feed position, where its id is compared with the record's;
//! there is no key per event id, because random ids spread over the whole tree cost sled
//! a third of its indexing time and a sixth of its memory. Site ids never contain 0x00
//! and a COI is always 15 bytes, so every key decomposes in one way. Each call to [`Index::apply`] is one sled batch (atomic, one tree), including the
//! new applied offset: after a crash sled comes back with some prefix of those batches, so
//! "indexed" is always exactly "the log up to the applied offset".

use super::log::Loc;
use super::{Record, StoreError};
use backon::{BlockingRetryable, ExponentialBuilder};
use ledger_core::{Body, Coi, EventId, Seq, SiteId, UnitId};
use sled::{Batch, Tree};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bumped when the layout changes; an index of another format is rebuilt. Format 1 had
/// one tree per kind of key and a copy of every event; format 2 a key per event id; format
/// 3 a key per feed seq and per chain position.
const INDEX_FORMAT: u32 = 4;
/// Feed seqs and chain positions per key.
const RUN: u64 = 32;
const TREE: &str = "index";
/// Trees of earlier formats, dropped when the index is cleared.
const LEGACY_TREES: [&str; 7] = [
    "meta",
    "events",
    "feeds",
    "chains",
    "chain_len",
    "requests",
    "units",
];
const FORK: u8 = b'x';
const FEED: u8 = b'f';
const CHAIN: u8 = b'c';
const CHAIN_LEN: u8 = b'l';
const REQUEST: u8 = b'r';
const UNIT: u8 = b'u';
const APPLIED_KEY: &[u8] = b"mapplied";
const OUTBOX: u8 = b'p';

/// How far the index has followed the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Applied {
    /// Log offset just after the last indexed record.
    pub offset: u64,
    /// Records in the log before `offset`.
    pub n_records: u64,
}

#[derive(Debug)]
pub(super) struct Index {
    path: PathBuf,
    db: sled::Db,
    tree: Tree,
}

/// sled reports a held file lock only as an `Other` I/O error with this text.
fn is_lock_contention(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

fn corrupt(key: &[u8], reason: impl Into<String>) -> StoreError {
    StoreError::IndexCorrupt {
        tree: TREE,
        key: hex(key),
        reason: reason.into(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn key(kind: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + parts.iter().map(|p| p.len()).sum::<usize>());
    k.push(kind);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

fn fork_key(id: &EventId) -> Vec<u8> {
    key(FORK, &[&id.0])
}

/// The run and slot of seq or position `n` (>= 1; 0 is never used and goes with 1's run).
fn run_slot(n: u64) -> (u64, usize) {
    let i = n.saturating_sub(1);
    // The remainder is below RUN, so it fits.
    (i / RUN, (i % RUN) as usize)
}

/// The number at `slot` of `run` (the inverse of [`run_slot`]).
fn run_number(run: u64, slot: usize) -> u64 {
    // Saturating: a damaged key can name any run.
    run.saturating_mul(RUN).saturating_add(slot as u64 + 1)
}

fn feed_key(site: &SiteId, run: u64) -> Vec<u8> {
    key(FEED, &[site.as_str().as_bytes(), &[0], &run.to_be_bytes()])
}

fn chain_key(coi: &Coi, run: u64) -> Vec<u8> {
    key(CHAIN, &[coi.as_str().as_bytes(), &run.to_be_bytes()])
}

/// The location in `slot` of a run's value, if that slot is used.
fn slot_loc(key: &[u8], value: &[u8], slot: usize) -> Result<Option<Loc>, StoreError> {
    if !value.len().is_multiple_of(Loc::BYTES) || value.len() > RUN as usize * Loc::BYTES {
        return Err(corrupt(
            key,
            format!(
                "value is {} bytes, expected at most {RUN} slots of {} bytes",
                value.len(),
                Loc::BYTES
            ),
        ));
    }
    let Some(bytes) = value.get(slot * Loc::BYTES..(slot + 1) * Loc::BYTES) else {
        return Ok(None);
    };
    if bytes.iter().all(|b| *b == 0) {
        return Ok(None);
    }
    loc(key, bytes).map(Some)
}

/// Puts `at` into `slot` of a run's value, growing it with empty slots as needed.
fn set_slot(value: &mut Vec<u8>, slot: usize, at: Loc) {
    let end = (slot + 1) * Loc::BYTES;
    if value.len() < end {
        value.resize(end, 0);
    }
    value[slot * Loc::BYTES..end].copy_from_slice(&at.to_bytes());
}

fn chain_len_key(coi: &Coi) -> Vec<u8> {
    key(CHAIN_LEN, &[coi.as_str().as_bytes()])
}

fn request_key(site: &SiteId, request_id: &str) -> Vec<u8> {
    key(
        REQUEST,
        &[site.as_str().as_bytes(), &[0], request_id.as_bytes()],
    )
}

fn unit_key(unit: &UnitId) -> Vec<u8> {
    key(UNIT, &[unit.as_str().as_bytes()])
}

/// Units an event brings into a chain. Kept next to the index that needs it; the rule is
/// the one stated on [`Body`]: collections, transformation outputs and reassignments
/// create units, and a reassignment moves a unit into the reassigning COI.
fn created_units(body: &Body) -> Vec<&UnitId> {
    match body {
        Body::Collection { units, .. } | Body::Reassignment { units, .. } => {
            units.iter().map(|u| &u.unit).collect()
        }
        Body::Transformation { outputs, .. } => outputs.iter().map(|u| &u.unit).collect(),
        Body::LabelVerification { .. }
        | Body::Pack { .. }
        | Body::Unpack { .. }
        | Body::Dispatch { .. }
        | Body::Receipt { .. }
        | Body::Store { .. }
        | Body::Retrieve { .. }
        | Body::ManufacturingStep { .. }
        | Body::ConditionRecord { .. }
        | Body::ExcursionDisposition { .. }
        | Body::QcHold { .. }
        | Body::QcRelease { .. }
        | Body::QcReject { .. }
        | Body::Administration { .. }
        | Body::Destruction { .. }
        | Body::Correction { .. }
        | Body::Note { .. }
        | Body::Unknown(_) => Vec::new(),
    }
}

fn loc(key: &[u8], value: &[u8]) -> Result<Loc, StoreError> {
    Loc::from_bytes(value).ok_or_else(|| {
        corrupt(
            key,
            format!(
                "value is {} bytes, expected a {}-byte log location",
                value.len(),
                Loc::BYTES
            ),
        )
    })
}

fn u64_be(key: &[u8], value: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = value.try_into().map_err(|_| {
        corrupt(
            key,
            format!("value is {} bytes, expected a u64", value.len()),
        )
    })?;
    Ok(u64::from_be_bytes(bytes))
}

impl Index {
    /// Opens (or creates) the index. sled takes an exclusive lock on its files, which is
    /// also what keeps a second process away from the log.
    pub(super) fn open(path: &Path, cache_bytes: u64) -> Result<Index, StoreError> {
        let sled_error = |source| StoreError::Sled {
            path: path.to_path_buf(),
            source,
        };
        let config = sled::Config::new().path(path).cache_capacity(cache_bytes);
        // A sled instance dropped a moment ago in this process (a rebuild, a reopen) lets
        // go of its file lock only when its background threads finish; another process
        // holding the store keeps it, and gets the error after the retries.
        let db = (|| config.open())
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(10))
                    .with_max_delay(Duration::from_millis(200))
                    .with_max_times(12),
            )
            .when(is_lock_contention)
            .call()
            .map_err(sled_error)?;
        let tree = db.open_tree(TREE).map_err(sled_error)?;
        Ok(Index {
            path: path.to_path_buf(),
            db,
            tree,
        })
    }

    fn sled_error(&self, source: sled::Error) -> StoreError {
        StoreError::Sled {
            path: self.path.clone(),
            source,
        }
    }

    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        self.tree.get(key).map_err(|e| self.sled_error(e))
    }

    fn contains(&self, key: &[u8]) -> Result<bool, StoreError> {
        self.tree.contains_key(key).map_err(|e| self.sled_error(e))
    }

    /// The applied position, or `None` if the index is empty, half-cleared or of another
    /// format (then it must be [`Index::clear`]ed and rebuilt).
    pub(super) fn applied(&self) -> Result<Option<Applied>, StoreError> {
        let Some(v) = self.get(APPLIED_KEY)? else {
            return Ok(None);
        };
        if v.len() != 20 || v[..4] != INDEX_FORMAT.to_be_bytes() {
            return Ok(None);
        }
        let offset = u64_be(APPLIED_KEY, &v[4..12])?;
        let n_records = u64_be(APPLIED_KEY, &v[12..20])?;
        Ok(Some(Applied { offset, n_records }))
    }

    /// Empties the index, and drops the trees of earlier formats. The applied offset goes
    /// first, so a crash half-way leaves an index that [`Index::applied`] reports as absent
    /// and the next open clears again.
    pub(super) fn clear(&mut self) -> Result<(), StoreError> {
        self.tree
            .remove(APPLIED_KEY)
            .map_err(|e| self.sled_error(e))?;
        for name in LEGACY_TREES.iter().copied().chain([TREE]) {
            self.db.drop_tree(name).map_err(|e| self.sled_error(e))?;
        }
        self.tree = self.db.open_tree(TREE).map_err(|e| self.sled_error(e))?;
        Ok(())
    }

    /// Indexes `records` (in log order, each with where it sits in the log) and moves the
    /// applied position to `applied`, in one batch. A record whose event is already
    /// indexed (or repeated within `records`) is skipped, so it never gets a second chain
    /// position. `id_at` reads the id of the event at a location already indexed (to tell
    /// a repeat from a fork at the same feed position). Returns how many were indexed.
    ///
    /// Only one thread may call this at a time (the store sees to it): chain positions are
    /// computed from the lengths read before the batch.
    pub(super) fn apply(
        &self,
        records: &[(&Record, Loc)],
        applied: Applied,
        id_at: &dyn Fn(Loc) -> Result<EventId, StoreError>,
    ) -> Result<u64, StoreError> {
        let mut batch = Batch::default();
        let mut lens: HashMap<&Coi, u64> = HashMap::new();
        // The runs this batch reads or changes, as they will be written; changed ones true.
        let mut runs: HashMap<Vec<u8>, (Vec<u8>, bool)> = HashMap::new();
        // Feed positions taken by this batch: position -> first id there.
        let mut feed_ids: HashMap<(&SiteId, Seq), EventId> = HashMap::new();
        let mut fork_ids: HashSet<EventId> = HashSet::new();
        let mut request_keys: HashSet<Vec<u8>> = HashSet::new();
        let mut n_indexed = 0u64;
        for (record, at) in records {
            let e = &record.event;
            let id = e.id();
            let (run, slot) = run_slot(e.seq().0);
            let fk = feed_key(e.author(), run);
            // The first event stored at a feed position keeps it; a second one is a fork,
            // stored (as evidence) and reachable by its id and chain, not by position.
            let first_there = match feed_ids.get(&(e.author(), e.seq())) {
                Some(first) => Some(*first),
                None => {
                    let (value, _) = self.run_mut(&mut runs, &fk)?;
                    slot_loc(&fk, value, slot)?.map(id_at).transpose()?
                }
            };
            match first_there {
                None => {
                    let (value, changed) = self.run_mut(&mut runs, &fk)?;
                    set_slot(value, slot, *at);
                    *changed = true;
                    feed_ids.insert((e.author(), e.seq()), id);
                }
                Some(first) if first == id => {
                    tracing::warn!(event = %id, "event already indexed; not indexing it again");
                    continue;
                }
                Some(_) => {
                    let xk = fork_key(&id);
                    if fork_ids.contains(&id) || self.contains(&xk)? {
                        tracing::warn!(event = %id, "event already indexed; not indexing it again");
                        continue;
                    }
                    batch.insert(xk, &at.to_bytes());
                    fork_ids.insert(id);
                }
            }
            let len = match lens.get(e.coi()) {
                Some(n) => *n,
                None => self.chain_len(e.coi())?,
            };
            let position = len + 1;
            lens.insert(e.coi(), position);
            let (run, slot) = run_slot(position);
            let (value, changed) = self.run_mut(&mut runs, &chain_key(e.coi(), run))?;
            set_slot(value, slot, *at);
            *changed = true;
            if let Some(rid) = &record.request_id {
                let rk = request_key(e.author(), rid);
                if !request_keys.contains(&rk) && !self.contains(&rk)? {
                    batch.insert(rk.as_slice(), &at.to_bytes());
                    request_keys.insert(rk);
                }
            }
            for unit in created_units(e.body()) {
                batch.insert(unit_key(unit), e.coi().as_str().as_bytes());
            }
            n_indexed += 1;
        }
        for (k, (value, changed)) in runs {
            if changed {
                batch.insert(k, value);
            }
        }
        for (coi, len) in lens {
            batch.insert(chain_len_key(coi), &len.to_be_bytes());
        }
        let mut value = Vec::with_capacity(20);
        value.extend_from_slice(&INDEX_FORMAT.to_be_bytes());
        value.extend_from_slice(&applied.offset.to_be_bytes());
        value.extend_from_slice(&applied.n_records.to_be_bytes());
        batch.insert(APPLIED_KEY, value);
        self.tree
            .apply_batch(batch)
            .map_err(|e| self.sled_error(e))?;
        Ok(n_indexed)
    }

    /// A run's value as this batch has it: loaded from sled the first time it is asked for.
    fn run_mut<'a>(
        &self,
        runs: &'a mut HashMap<Vec<u8>, (Vec<u8>, bool)>,
        key: &[u8],
    ) -> Result<&'a mut (Vec<u8>, bool), StoreError> {
        if !runs.contains_key(key) {
            let stored = self.get(key)?.map(|v| v.to_vec()).unwrap_or_default();
            runs.insert(key.to_vec(), (stored, false));
        }
        runs.get_mut(key)
            .ok_or_else(|| corrupt(key, "run vanished from the batch being built"))
    }

    /// Where a forked event (not the first at its feed position) sits.
    pub(super) fn fork(&self, id: &EventId) -> Result<Option<Loc>, StoreError> {
        let k = fork_key(id);
        self.get(&k)?.map(|v| loc(&k, &v)).transpose()
    }

    pub(super) fn feed_event(&self, site: &SiteId, seq: Seq) -> Result<Option<Loc>, StoreError> {
        if seq.0 == 0 {
            return Ok(None);
        }
        let (run, slot) = run_slot(seq.0);
        let k = feed_key(site, run);
        match self.get(&k)? {
            None => Ok(None),
            Some(v) => slot_loc(&k, &v, slot),
        }
    }

    /// Chain positions after `after`, at most `limit`, with where each event sits.
    pub(super) fn chain(
        &self,
        coi: &Coi,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Loc)>, StoreError> {
        let Some(first) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let (first_run, _) = run_slot(first);
        let mut out: Vec<(u64, Loc)> = Vec::new();
        let mut expected = first;
        for item in self
            .tree
            .range(chain_key(coi, first_run)..=chain_key(coi, u64::MAX))
        {
            if out.len() >= limit {
                break;
            }
            let (key, value) = item.map_err(|e| self.sled_error(e))?;
            let run = u64_be(&key, &key[key.len().saturating_sub(8)..])?;
            for slot in 0..value.len() / Loc::BYTES {
                let position = run_number(run, slot);
                if position < first {
                    continue;
                }
                if out.len() >= limit {
                    break;
                }
                if position != expected {
                    return Err(corrupt(
                        &key,
                        format!("chain position {position} where {expected} should be"),
                    ));
                }
                let Some(at) = slot_loc(&key, &value, slot)? else {
                    return Err(corrupt(
                        &key,
                        format!("chain position {position} is missing"),
                    ));
                };
                out.push((position, at));
                expected += 1;
            }
        }
        Ok(out)
    }

    pub(super) fn chain_len(&self, coi: &Coi) -> Result<u64, StoreError> {
        let k = chain_len_key(coi);
        match self.get(&k)? {
            None => Ok(0),
            Some(v) => u64_be(&k, &v),
        }
    }

    pub(super) fn request(
        &self,
        site: &SiteId,
        request_id: &str,
    ) -> Result<Option<Loc>, StoreError> {
        let k = request_key(site, request_id);
        self.get(&k)?.map(|v| loc(&k, &v)).transpose()
    }

    pub(super) fn unit_coi(&self, unit: &UnitId) -> Result<Option<Coi>, StoreError> {
        let k = unit_key(unit);
        match self.get(&k)? {
            None => Ok(None),
            Some(v) => {
                let text =
                    std::str::from_utf8(&v).map_err(|_| corrupt(&k, "value is not UTF-8"))?;
                Coi::parse(text)
                    .map(Some)
                    .map_err(|e| corrupt(&k, e.to_string()))
            }
        }
    }

    /// The last seq of `site`'s feed that NATS acknowledged (0: none).
    pub(super) fn outbox_mark(&self, site: &SiteId) -> Result<u64, StoreError> {
        let k = key(OUTBOX, &[site.as_str().as_bytes()]);
        self.get(&k)?.map_or(Ok(0), |v| u64_be(&k, &v))
    }

    pub(super) fn set_outbox_mark(&self, site: &SiteId, seq: u64) -> Result<(), StoreError> {
        let k = key(OUTBOX, &[site.as_str().as_bytes()]);
        self.tree
            .insert(k, &seq.to_be_bytes())
            .map_err(|e| self.sled_error(e))?;
        Ok(())
    }

    /// Every key and value, in key order.
    pub(super) fn entries(
        &self,
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> + '_ {
        self.tree.iter().map(move |r| {
            r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(|e| self.sled_error(e))
        })
    }

    /// Whether a key is an outbox mark (not derived from the log).
    pub(super) fn is_outbox_key(key: &[u8]) -> bool {
        key.first() == Some(&OUTBOX)
    }

    /// A key in words, for a report.
    pub(super) fn describe(key: &[u8]) -> String {
        let rest = key.get(1..).unwrap_or_default();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let be = |b: &[u8]| <[u8; 8]>::try_from(b).map(u64::from_be_bytes).ok();
        match key.first() {
            Some(&FEED) if rest.len() > 9 => {
                let (site, run) = rest.split_at(rest.len() - 9);
                let first = run_number(be(&run[1..]).unwrap_or(0), 0);
                format!(
                    "feed {} seqs {first} to {}",
                    text(site),
                    first.saturating_add(RUN - 1)
                )
            }
            Some(&CHAIN) if rest.len() == 15 + 8 => {
                let first = run_number(be(&rest[15..]).unwrap_or(0), 0);
                format!(
                    "chain {} positions {first} to {}",
                    text(&rest[..15]),
                    first.saturating_add(RUN - 1)
                )
            }
            Some(&CHAIN_LEN) => format!("length of chain {}", text(rest)),
            Some(&FORK) => format!("fork evidence {}", hex(rest)),
            Some(&REQUEST) => format!("request id {}", text(rest).replace('\0', "/")),
            Some(&UNIT) => format!("unit {}", text(rest)),
            _ if key == APPLIED_KEY => "the applied log offset".to_owned(),
            _ => format!("0x{}", hex(key)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64) -> Loc {
        Loc { offset, len: 300 }
    }

    #[test]
    fn runs_hold_consecutive_numbers_from_one() {
        assert_eq!(run_slot(1), (0, 0));
        assert_eq!(run_slot(RUN), (0, RUN as usize - 1));
        assert_eq!(run_slot(RUN + 1), (1, 0));
        for n in [1, 2, RUN - 1, RUN, RUN + 1, 5 * RUN, 5 * RUN + 7, u64::MAX] {
            let (run, slot) = run_slot(n);
            assert_eq!(run_number(run, slot), n, "n = {n}");
        }
        assert_eq!(run_number(u64::MAX, 3), u64::MAX);
    }

    #[test]
    fn slots_grow_with_empty_ones_and_bad_values_are_refused() {
        let mut value = Vec::new();
        set_slot(&mut value, 2, at(7));
        assert_eq!(value.len(), 3 * Loc::BYTES);
        assert_eq!(slot_loc(b"k", &value, 0).unwrap(), None);
        assert_eq!(slot_loc(b"k", &value, 2).unwrap(), Some(at(7)));
        assert_eq!(slot_loc(b"k", &value, 3).unwrap(), None);
        set_slot(&mut value, 0, at(1));
        assert_eq!(slot_loc(b"k", &value, 0).unwrap(), Some(at(1)));
        assert_eq!(value.len(), 3 * Loc::BYTES);

        let err = slot_loc(b"k", &value[..13], 0).unwrap_err().to_string();
        assert!(err.contains("value is 13 bytes"), "{err}");
        let too_long = vec![1u8; (RUN as usize + 1) * Loc::BYTES];
        let err = slot_loc(b"k", &too_long, 0).unwrap_err().to_string();
        assert!(err.contains("expected at most 32 slots"), "{err}");
    }

    #[test]
    fn a_chain_with_a_hole_is_reported_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path(), 1 << 20).unwrap();
        let coi = Coi::parse("CHA999926AAA001").unwrap();
        let mut first = Vec::new();
        for slot in 0..RUN as usize {
            set_slot(&mut first, slot, at(100 + slot as u64));
        }
        // Run 1 has positions 33 and 35; 34 is missing.
        let mut second = Vec::new();
        set_slot(&mut second, 0, at(500));
        set_slot(&mut second, 2, at(502));
        index.tree.insert(chain_key(&coi, 0), first).unwrap();
        index.tree.insert(chain_key(&coi, 1), second).unwrap();

        let page = index.chain(&coi, 30, 3).unwrap();
        assert_eq!(page, vec![(31, at(130)), (32, at(131)), (33, at(500))]);
        let err = index.chain(&coi, 30, 10).unwrap_err().to_string();
        assert!(err.contains("chain position 34 is missing"), "{err}");

        // A whole run missing: positions 33 to 64 are not there, 65 is.
        index.tree.remove(chain_key(&coi, 1)).unwrap();
        let mut third = Vec::new();
        set_slot(&mut third, 0, at(900));
        index.tree.insert(chain_key(&coi, 2), third).unwrap();
        let err = index.chain(&coi, 0, 100).unwrap_err().to_string();
        assert!(
            err.contains("chain position 65 where 33 should be"),
            "{err}"
        );
        assert_eq!(
            Index::describe(&chain_key(&coi, 1)),
            "chain CHA999926AAA001 positions 33 to 64"
        );
    }
}
