//! The sled index over the log: lookups by id, feed position, chain position, request id
//! and unit. Everything here can be thrown away and rebuilt from the log.
//!
//! One sled tree, `index`; each key starts with a byte that says what it indexes (integers
//! big-endian so that byte order is numeric order). Values point into the log ([`Loc`]:
//! offset u64 BE | frame length u32 BE) rather than copying events, so the index stays a
//! small fraction of the log and a read is one sled lookup plus one `pread`.
//!
//! ```text
//! 'f' | site | 0x00 | seq u64 BE           -> Loc (first event stored at that seq)
//! 'x' | event id (32)                      -> Loc of a later event at a used feed position
//!                                             (a fork: kept as evidence)
//! 'c' | coi (15) | position u64 BE         -> Loc; positions 1, 2, 3, ... in log order
//! 'l' | coi                                -> u64 BE, the last position
//! 'r' | site | 0x00 | request id           -> Loc (first event stored with it)
//! 'u' | unit                               -> coi of the event that last created it
//! 'm' | "applied"                          -> index format u32 BE | log offset u64 BE
//!                                             | records u64 BE
//! 'p' | site                               -> u64 BE: the outbox mark, the last seq of
//!                                             the site's feed that NATS acknowledged
//! ```
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
/// one tree per kind of key and a copy of every event; format 2 a key per event id.
const INDEX_FORMAT: u32 = 3;
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

fn feed_key(site: &SiteId, seq: Seq) -> Vec<u8> {
    key(
        FEED,
        &[site.as_str().as_bytes(), &[0], &seq.0.to_be_bytes()],
    )
}

fn chain_key(coi: &Coi, position: u64) -> Vec<u8> {
    key(CHAIN, &[coi.as_str().as_bytes(), &position.to_be_bytes()])
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
        // Feed positions and forks taken by this batch: position -> first id there.
        let mut feed_ids: HashMap<Vec<u8>, EventId> = HashMap::new();
        let mut fork_ids: HashSet<EventId> = HashSet::new();
        let mut request_keys: HashSet<Vec<u8>> = HashSet::new();
        let mut n_indexed = 0u64;
        for (record, at) in records {
            let e = &record.event;
            let id = e.id();
            let at = at.to_bytes();
            let fk = feed_key(e.author(), e.seq());
            // The first event stored at a feed position keeps it; a second one is a fork,
            // stored (as evidence) and reachable by its id and chain, not by position.
            let first_there = match feed_ids.get(&fk) {
                Some(first) => Some(*first),
                None => self
                    .get(&fk)?
                    .map(|v| loc(&fk, &v))
                    .transpose()?
                    .map(id_at)
                    .transpose()?,
            };
            match first_there {
                None => {
                    batch.insert(fk.as_slice(), &at);
                    feed_ids.insert(fk, id);
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
                    batch.insert(xk, &at);
                    fork_ids.insert(id);
                }
            }
            let len = match lens.get(e.coi()) {
                Some(n) => *n,
                None => self.chain_len(e.coi())?,
            };
            let position = len + 1;
            lens.insert(e.coi(), position);
            batch.insert(chain_key(e.coi(), position), &at);
            if let Some(rid) = &record.request_id {
                let rk = request_key(e.author(), rid);
                if !request_keys.contains(&rk) && !self.contains(&rk)? {
                    batch.insert(rk.as_slice(), &at);
                    request_keys.insert(rk);
                }
            }
            for unit in created_units(e.body()) {
                batch.insert(unit_key(unit), e.coi().as_str().as_bytes());
            }
            n_indexed += 1;
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

    /// Where a forked event (not the first at its feed position) sits.
    pub(super) fn fork(&self, id: &EventId) -> Result<Option<Loc>, StoreError> {
        let k = fork_key(id);
        self.get(&k)?.map(|v| loc(&k, &v)).transpose()
    }

    pub(super) fn feed_event(&self, site: &SiteId, seq: Seq) -> Result<Option<Loc>, StoreError> {
        let k = feed_key(site, seq);
        self.get(&k)?.map(|v| loc(&k, &v)).transpose()
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
        let mut out: Vec<(u64, Loc)> = Vec::new();
        for item in self
            .tree
            .range(chain_key(coi, first)..=chain_key(coi, u64::MAX))
            .take(limit)
        {
            let (key, value) = item.map_err(|e| self.sled_error(e))?;
            let position = u64_be(&key, &key[key.len().saturating_sub(8)..])?;
            let expected = out.last().map_or(first, |(p, _)| p + 1);
            if position != expected {
                return Err(corrupt(
                    &key,
                    format!("chain position {position} where {expected} should be"),
                ));
            }
            out.push((position, loc(&key, &value)?));
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
                let (site, seq) = rest.split_at(rest.len() - 9);
                format!("feed {} seq {}", text(site), be(&seq[1..]).unwrap_or(0))
            }
            Some(&CHAIN) if rest.len() == 15 + 8 => {
                format!(
                    "chain {} position {}",
                    text(&rest[..15]),
                    be(&rest[15..]).unwrap_or(0)
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
