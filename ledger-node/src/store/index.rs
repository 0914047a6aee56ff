//! The sled index over the log: lookups by id, feed position, chain position, request id
//! and unit. Everything here can be thrown away and rebuilt from the log.
//!
//! Trees (keys are raw bytes; integers big-endian so that byte order is numeric order):
//!
//! ```text
//! events     event id (32)                      -> the event's signed bytes
//! feeds      site | 0x00 | seq u64 BE           -> event id (first event stored at that seq)
//! chains     coi (15) | position u64 BE         -> event id; positions 1, 2, 3, ... in log order
//! chain_len  coi                                -> u64 BE, the last position
//! requests   site | 0x00 | request id           -> event id (first event stored with it)
//! units      unit                               -> coi of the event that last created it
//! meta       "applied"                          -> index format u32 BE | log offset u64 BE
//!                                                  | records u64 BE
//! ```
//!
//! Site ids never contain 0x00 and a COI is always 15 bytes, so every key decomposes in one
//! way. Each call to [`Index::apply`] is one sled transaction over all trees, including the
//! new applied offset: after a crash sled comes back with some prefix of those
//! transactions, so "indexed" is always exactly "the log up to the applied offset".

use super::{Record, StoreError};
use ledger_core::{Body, Coi, Event, EventId, Seq, SiteId, UnitId};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{Batch, Transactional, Tree};
use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::path::{Path, PathBuf};

/// Bumped when the trees' layout changes; an index of another format is rebuilt.
const INDEX_FORMAT: u32 = 1;
const APPLIED_KEY: &[u8] = b"applied";
const TREE_NAMES: [&str; 7] = [
    "meta",
    "events",
    "feeds",
    "chains",
    "chain_len",
    "requests",
    "units",
];

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
    meta: Tree,
    events: Tree,
    feeds: Tree,
    chains: Tree,
    chain_len: Tree,
    requests: Tree,
    units: Tree,
}

fn corrupt(tree: &'static str, key: &[u8], reason: impl Into<String>) -> StoreError {
    StoreError::IndexCorrupt {
        tree,
        key: hex(key),
        reason: reason.into(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn feed_key(site: &SiteId, seq: Seq) -> Vec<u8> {
    let mut k = Vec::with_capacity(site.as_str().len() + 9);
    k.extend_from_slice(site.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.0.to_be_bytes());
    k
}

fn chain_key(coi: &Coi, position: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(Coi::LEN + 8);
    k.extend_from_slice(coi.as_str().as_bytes());
    k.extend_from_slice(&position.to_be_bytes());
    k
}

fn request_key(site: &SiteId, request_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(site.as_str().len() + 1 + request_id.len());
    k.extend_from_slice(site.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(request_id.as_bytes());
    k
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

fn event_id(tree: &'static str, key: &[u8], value: &[u8]) -> Result<EventId, StoreError> {
    let bytes: [u8; 32] = value.try_into().map_err(|_| {
        corrupt(
            tree,
            key,
            format!(
                "value is {} bytes, expected a 32-byte event id",
                value.len()
            ),
        )
    })?;
    Ok(EventId(bytes))
}

fn u64_be(tree: &'static str, key: &[u8], value: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = value.try_into().map_err(|_| {
        corrupt(
            tree,
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
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(sled_error)?;
        let tree = |name: &str| db.open_tree(name).map_err(sled_error);
        Ok(Index {
            meta: tree(TREE_NAMES[0])?,
            events: tree(TREE_NAMES[1])?,
            feeds: tree(TREE_NAMES[2])?,
            chains: tree(TREE_NAMES[3])?,
            chain_len: tree(TREE_NAMES[4])?,
            requests: tree(TREE_NAMES[5])?,
            units: tree(TREE_NAMES[6])?,
            path: path.to_path_buf(),
            db,
        })
    }

    fn sled_error(&self, source: sled::Error) -> StoreError {
        StoreError::Sled {
            path: self.path.clone(),
            source,
        }
    }

    /// The applied position, or `None` if the index is empty, half-cleared or of another
    /// format (then it must be [`Index::clear`]ed and rebuilt).
    pub(super) fn applied(&self) -> Result<Option<Applied>, StoreError> {
        let Some(v) = self.meta.get(APPLIED_KEY).map_err(|e| self.sled_error(e))? else {
            return Ok(None);
        };
        if v.len() != 20 || v[..4] != INDEX_FORMAT.to_be_bytes() {
            return Ok(None);
        }
        let offset = u64_be("meta", APPLIED_KEY, &v[4..12])?;
        let n_records = u64_be("meta", APPLIED_KEY, &v[12..20])?;
        Ok(Some(Applied { offset, n_records }))
    }

    /// Empties every tree. The applied offset goes first, so a crash half-way leaves an
    /// index that [`Index::applied`] reports as absent and the next open clears again.
    pub(super) fn clear(&mut self) -> Result<(), StoreError> {
        self.meta
            .remove(APPLIED_KEY)
            .map_err(|e| self.sled_error(e))?;
        for name in TREE_NAMES {
            self.db.drop_tree(name).map_err(|e| self.sled_error(e))?;
        }
        *self = Index {
            meta: self
                .db
                .open_tree(TREE_NAMES[0])
                .map_err(|e| self.sled_error(e))?,
            events: self
                .db
                .open_tree(TREE_NAMES[1])
                .map_err(|e| self.sled_error(e))?,
            feeds: self
                .db
                .open_tree(TREE_NAMES[2])
                .map_err(|e| self.sled_error(e))?,
            chains: self
                .db
                .open_tree(TREE_NAMES[3])
                .map_err(|e| self.sled_error(e))?,
            chain_len: self
                .db
                .open_tree(TREE_NAMES[4])
                .map_err(|e| self.sled_error(e))?,
            requests: self
                .db
                .open_tree(TREE_NAMES[5])
                .map_err(|e| self.sled_error(e))?,
            units: self
                .db
                .open_tree(TREE_NAMES[6])
                .map_err(|e| self.sled_error(e))?,
            path: self.path.clone(),
            db: self.db.clone(),
        };
        Ok(())
    }

    pub(super) fn contains_event(&self, id: &EventId) -> Result<bool, StoreError> {
        self.events
            .contains_key(id.0)
            .map_err(|e| self.sled_error(e))
    }

    /// Indexes `records` (in log order) and moves the applied position to `applied`, in one
    /// transaction. A record whose id is already indexed (or repeated within `records`) is
    /// skipped, so it never gets a second chain position. Returns how many were indexed.
    ///
    /// Only one thread may call this at a time (the store's log mutex sees to it): chain
    /// positions are computed from the lengths read before the transaction.
    pub(super) fn apply(&self, records: &[&Record], applied: Applied) -> Result<u64, StoreError> {
        let mut events = Batch::default();
        let mut feeds = Batch::default();
        let mut chains = Batch::default();
        let mut chain_len = Batch::default();
        let mut requests = Batch::default();
        let mut units = Batch::default();
        let mut meta = Batch::default();
        let mut seen: HashSet<EventId> = HashSet::with_capacity(records.len());
        let mut lens: HashMap<&Coi, u64> = HashMap::new();
        let mut feed_keys: HashSet<Vec<u8>> = HashSet::new();
        let mut request_keys: HashSet<Vec<u8>> = HashSet::new();
        let mut n_indexed = 0u64;
        for record in records {
            let e = &record.event;
            let id = e.id();
            if !seen.insert(id) || self.contains_event(&id)? {
                tracing::warn!(event = %id, "event already indexed; not indexing it again");
                continue;
            }
            events.insert(&id.0, e.bytes());
            let fk = feed_key(e.author(), e.seq());
            // The first event stored at a feed position keeps it; a second one is a fork,
            // stored (as evidence) and reachable by id and chain, but not by feed position.
            if !feed_keys.contains(&fk)
                && !self
                    .feeds
                    .contains_key(&fk)
                    .map_err(|e| self.sled_error(e))?
            {
                feeds.insert(fk.as_slice(), &id.0);
                feed_keys.insert(fk);
            }
            let len = match lens.get(e.coi()) {
                Some(n) => *n,
                None => self.chain_len(e.coi())?,
            };
            let position = len + 1;
            lens.insert(e.coi(), position);
            chains.insert(chain_key(e.coi(), position), &id.0);
            chain_len.insert(e.coi().as_str().as_bytes(), &position.to_be_bytes());
            if let Some(rid) = &record.request_id {
                let rk = request_key(e.author(), rid);
                if !request_keys.contains(&rk)
                    && !self
                        .requests
                        .contains_key(&rk)
                        .map_err(|e| self.sled_error(e))?
                {
                    requests.insert(rk.as_slice(), &id.0);
                    request_keys.insert(rk);
                }
            }
            for unit in created_units(e.body()) {
                units.insert(unit.as_str().as_bytes(), e.coi().as_str().as_bytes());
            }
            n_indexed += 1;
        }
        let mut value = Vec::with_capacity(20);
        value.extend_from_slice(&INDEX_FORMAT.to_be_bytes());
        value.extend_from_slice(&applied.offset.to_be_bytes());
        value.extend_from_slice(&applied.n_records.to_be_bytes());
        meta.insert(APPLIED_KEY, value);
        let trees = (
            &self.meta,
            &self.events,
            &self.feeds,
            &self.chains,
            &self.chain_len,
            &self.requests,
            &self.units,
        );
        let result: Result<(), TransactionError<Infallible>> = trees.transaction(
            |(t_meta, t_events, t_feeds, t_chains, t_chain_len, t_requests, t_units)| {
                t_meta.apply_batch(&meta)?;
                t_events.apply_batch(&events)?;
                t_feeds.apply_batch(&feeds)?;
                t_chains.apply_batch(&chains)?;
                t_chain_len.apply_batch(&chain_len)?;
                t_requests.apply_batch(&requests)?;
                t_units.apply_batch(&units)?;
                Ok::<(), ConflictableTransactionError<Infallible>>(())
            },
        );
        match result {
            Ok(()) => Ok(n_indexed),
            Err(TransactionError::Storage(e)) => Err(self.sled_error(e)),
            Err(TransactionError::Abort(never)) => match never {},
        }
    }

    pub(super) fn event(&self, id: &EventId) -> Result<Option<Event>, StoreError> {
        let Some(bytes) = self.events.get(id.0).map_err(|e| self.sled_error(e))? else {
            return Ok(None);
        };
        let event =
            Event::from_bytes(&bytes).map_err(|e| corrupt("events", &id.0, e.to_string()))?;
        if event.id() != *id {
            return Err(corrupt(
                "events",
                &id.0,
                format!("stored bytes hash to {}", event.id()),
            ));
        }
        Ok(Some(event))
    }

    pub(super) fn feed_event(
        &self,
        site: &SiteId,
        seq: Seq,
    ) -> Result<Option<EventId>, StoreError> {
        let key = feed_key(site, seq);
        match self.feeds.get(&key).map_err(|e| self.sled_error(e))? {
            None => Ok(None),
            Some(v) => event_id("feeds", &key, &v).map(Some),
        }
    }

    pub(super) fn chain(
        &self,
        coi: &Coi,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Event)>, StoreError> {
        let Some(first) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for item in self
            .chains
            .range(chain_key(coi, first)..=chain_key(coi, u64::MAX))
            .take(limit)
        {
            let (key, value) = item.map_err(|e| self.sled_error(e))?;
            let position = u64_be("chains", &key, &key[key.len().saturating_sub(8)..])?;
            let id = event_id("chains", &key, &value)?;
            let event = self.event(&id)?.ok_or_else(|| {
                corrupt(
                    "chains",
                    &key,
                    format!("event {id} is not in the events tree"),
                )
            })?;
            if out.last().is_some_and(|(p, _)| *p + 1 != position)
                || (out.is_empty() && position != first)
            {
                return Err(corrupt(
                    "chains",
                    &key,
                    format!("position {position} does not follow the previous one"),
                ));
            }
            out.push((position, event));
        }
        Ok(out)
    }

    pub(super) fn chain_len(&self, coi: &Coi) -> Result<u64, StoreError> {
        let key = coi.as_str().as_bytes();
        match self.chain_len.get(key).map_err(|e| self.sled_error(e))? {
            None => Ok(0),
            Some(v) => u64_be("chain_len", key, &v),
        }
    }

    pub(super) fn request(
        &self,
        site: &SiteId,
        request_id: &str,
    ) -> Result<Option<EventId>, StoreError> {
        let key = request_key(site, request_id);
        match self.requests.get(&key).map_err(|e| self.sled_error(e))? {
            None => Ok(None),
            Some(v) => event_id("requests", &key, &v).map(Some),
        }
    }

    pub(super) fn unit_coi(&self, unit: &UnitId) -> Result<Option<Coi>, StoreError> {
        let key = unit.as_str().as_bytes();
        match self.units.get(key).map_err(|e| self.sled_error(e))? {
            None => Ok(None),
            Some(v) => {
                let text = std::str::from_utf8(&v)
                    .map_err(|_| corrupt("units", key, "value is not UTF-8"))?;
                Coi::parse(text)
                    .map(Some)
                    .map_err(|e| corrupt("units", key, e.to_string()))
            }
        }
    }
}
