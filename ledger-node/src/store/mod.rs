//! The node's durable store: an append-only, checksummed event log that is the only
//! durability point, and a sled index that is derived from it and can be rebuilt at any time.
//!
//! What it owns: `<dir>/events.log` (format in `store/log.rs`) and `<dir>/index/` (trees in
//! `store/index.rs`). What it deliberately does not do: judge events (that is ledger-core, called
//! by the node before it commits), or hold chain state in memory (the node rebuilds that
//! from the records [`Store::open`] hands to its `visit` callback).
//!
//! # Durability argument
//!
//! - **What is durable when [`Store::commit`] returns `Ok`.** Every record of the batch was
//!   written to the log and one `fdatasync` (`File::sync_data`) on the log returned after
//!   the write; only then is the batch indexed in sled and `Ok` returned. `fdatasync` also
//!   flushes the file size (when a commit first writes zeros ahead of the log, they are
//!   made durable by the same `fdatasync`), and the log's directory entry was made durable
//!   when the log was created (the header is written and synced under a temporary name,
//!   renamed into place, and the directory fsynced). sled is never relied on for
//!   durability: its `flush()` on Linux is only `sync_file_range`, and its background
//!   fsync runs every 500 ms.
//! - **Why a crash cannot lose an acknowledged record.** Acknowledged records are in the
//!   synced log. The index may lag the log by any number of transactions after a crash;
//!   each index transaction carries the log offset it brings the index to ("applied"), so
//!   [`Store::open`] replays exactly the log records past that offset. An index that is
//!   missing, of another format, or that does not line up with a record boundary of this
//!   log is cleared and rebuilt from the whole log.
//! - **Why a crash cannot expose a half-written record.** Each record carries its length
//!   and a CRC-32 of its payload, and the payload must decode as an event
//!   (`Event::from_bytes`, which also rejects non-canonical bytes). A crash during a write
//!   leaves, after the last synced record, some subset of the new batch's pages (with
//!   zeros or stale bytes in between): the first record there that is short, has an
//!   impossible length, a wrong CRC or an undecodable payload ends the valid log. Zeros
//!   end it cleanly only when nothing but zeros follows them to the end of the file
//!   (preallocated space, see `store/log.rs`).
//!   [`Store::open`] cuts the file there (and fdatasyncs the cut) before anything new is
//!   appended, so later records never sit behind garbage. A failed write or fsync poisons
//!   the store for the rest of the process ([`StoreError::Poisoned`]): after a failed
//!   fsync the page cache cannot be trusted, so only a restart (which re-reads the disk)
//!   may continue.
//! - **What is never cut.** Only unacknowledged bytes can be torn. If the first bad record
//!   lies before the index's applied offset (the index only ever learns of synced
//!   records), the damage is inside acknowledged data: cutting it would drop events whose
//!   sequence numbers the node would then sign again, a fork of its own feed. Open refuses
//!   with [`StoreError::Corrupt`] instead, as it does when the tail to cut is longer than
//!   one commit can ever write ([`COMMIT_BYTES_MAX`]). The index can lag the log by its
//!   last unsynced transactions (or be gone), so the bad record itself must also look
//!   torn: a disk writes whole sectors, so an interrupted write leaves a record that runs
//!   past the end of the file, a zero header, or a sector inside the record still zero
//!   (`log::torn_write`). A record that is all there but wrong (bit rot, a flipped byte)
//!   is refused ([`CorruptDetail::NotTorn`]) wherever it lies, and so is damage below
//!   the applied offset of the index that `rebuild-index` replaces. Only what looks torn
//!   is cut (with a warning).
//!
//! Idempotency: [`Store::commit`] skips a record whose event id is already stored (or
//! repeated earlier in the same batch), both in the log and in the index, so an event is
//! stored once and has one chain position. Concurrency: `commit` and the readers may run
//! on different threads; commits serialise on the log's mutex, and readers see each
//! committed batch all at once or not at all (one sled transaction per batch).

mod index;
mod log;
mod maintain;

pub use maintain::{
    backup, check_index, restore, scan_log, BackupReport, IndexCheck, LogScan, RestoreError,
    BACKUP_MANIFEST,
};

use index::{Applied, Index};
use ledger_core::event::EVENT_BYTES_MAX;
use ledger_core::{Coi, Event, EventId, Seq, SiteId, UnitId};
use log::{Loc, LogWriter, Scanner, Step};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Longest request id a record can hold (the API allows fewer; this bounds the format).
pub const REQUEST_ID_BYTES_MAX: usize = 256;
/// Largest record payload: kind, request id length, request id, event.
pub const PAYLOAD_BYTES_MAX: usize = 1 + 2 + REQUEST_ID_BYTES_MAX + EVENT_BYTES_MAX;
/// Largest record on disk, framing included.
pub const RECORD_BYTES_MAX: usize = log::FRAME_HEADER_LEN + PAYLOAD_BYTES_MAX;
/// Most records in one [`Store::commit`].
pub const COMMIT_RECORDS_MAX: usize = 100_000;
/// Most log bytes one [`Store::commit`] writes. It also bounds the tail open() may cut:
/// a crash can only tear what one commit was writing.
pub const COMMIT_BYTES_MAX: usize = 512 * 1024 * 1024;
/// The longest tail a crash can leave after the last durable record: one commit, and the
/// zeros preallocated after it (rounded up to a page).
const TORN_TAIL_BYTES_MAX: u64 = COMMIT_BYTES_MAX as u64 + log::LOG_PREALLOCATE_BYTES + 4096;
/// Records per index transaction when open() replays the log.
const REPLAY_BATCH_RECORDS: usize = 1024;
const INDEX_DIR: &str = "index";

/// Where the store lives and how much memory its index may cache.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub dir: PathBuf,
    pub sled_cache_bytes: u64,
    /// Keep zeros written ahead of the log's last record, so a commit's `fdatasync` never
    /// has to make a new file size durable too (see `store/log.rs`). The node always does;
    /// tests of the byte format turn it off to tear records at the file's end.
    pub preallocate: bool,
}

/// One durable record: an event, and the client request id that appended it (None for
/// events that arrived by replication).
#[derive(Debug, Clone)]
pub struct Record {
    pub event: Event,
    pub request_id: Option<String>,
}

impl Record {
    /// Bytes this record takes in the log, framing included (for callers that bound a
    /// commit by [`COMMIT_BYTES_MAX`]).
    pub fn log_bytes(&self) -> usize {
        log::FRAME_HEADER_LEN
            + 1
            + 2
            + self.request_id.as_ref().map_or(0, String::len)
            + self.event.bytes().len()
    }
}

/// What [`Store::open`] found and did.
#[derive(Debug, Default)]
pub struct OpenReport {
    /// Records in the log after open.
    pub n_records: u64,
    /// Length of the log after open, header included.
    pub log_bytes: u64,
    /// Bytes of torn or invalid tail removed from the end of the log.
    pub cut_bytes: u64,
    /// Records replayed into the index.
    pub reindexed: u64,
}

/// Why the first invalid record of the log is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRecord {
    #[error("record is cut short ({n_bytes} bytes left, {needed} needed)")]
    Truncated { n_bytes: u64, needed: u64 },
    #[error("record length {n_bytes} is impossible")]
    Length { n_bytes: u64 },
    #[error("crc mismatch (stored {stored:08x}, computed {computed:08x})")]
    Crc { stored: u32, computed: u32 },
    #[error("unknown record kind {kind}")]
    UnknownKind { kind: u8 },
    #[error("request id length {n_bytes} is impossible")]
    RequestIdLength { n_bytes: usize },
    #[error("request id is not UTF-8")]
    RequestIdNotUtf8,
    #[error("event does not decode: {reason}")]
    Event { reason: String },
}

/// Whether an I/O error says the disk (or a file size limit) has no room.
fn is_full(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::StorageFull | ErrorKind::FileTooLarge | ErrorKind::QuotaExceeded
    )
}

const FULL_ADVICE: &str =
    "the disk is full (or a file size limit was reached): free space, then restart the node";

fn io_advice(e: &std::io::Error) -> &'static str {
    if is_full(e) {
        FULL_ADVICE
    } else {
        "check the disk and the permissions on the data directory"
    }
}

/// Whether sled could not open the index because another process holds its lock. sled
/// says so only in the text of an I/O error of kind Other (sled is pinned at 0.34).
fn held_elsewhere(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// What an operator should do about a sled error: a full disk, a store held by another
/// process and a damaged index need different things.
fn sled_advice(e: &sled::Error) -> &'static str {
    match e {
        sled::Error::Io(io) if is_full(io) => FULL_ADVICE,
        e if held_elsewhere(e) => {
            "another process holds this store: if another node runs on it, stop that node"
        }
        sled::Error::Io(_) => {
            "check the disk and the permissions on the data directory, then restart the node, which rebuilds the index from the log"
        }
        _ => "stop the node and run `ledger-node rebuild-index`",
    }
}

impl StoreError {
    /// The index is held by another process (a running node): nothing was read or changed.
    pub fn held_by_another_process(&self) -> bool {
        matches!(self, StoreError::Sled { source, .. } if held_elsewhere(source))
    }
}

/// The disk or the index is wrong, or a commit broke a limit. Ledger-level problems are
/// not here: they are decided before anything reaches the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {}: {source}; {}", path.display(), io_advice(source))]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("index {}: {source}; {}", path.display(), sled_advice(source))]
    Sled {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error(
        "index tree {tree}, key {key}: {reason}; stop the node and run `ledger-node rebuild-index`"
    )]
    IndexCorrupt {
        tree: &'static str,
        key: String,
        reason: String,
    },
    #[error("{} at offset {offset}, where the index points: {reason}; stop the node and run `ledger-node rebuild-index` (if that fails too, the log is damaged: restore it from a backup or a replica)", path.display())]
    LogRecordUnreadable {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("{} is not an event log ({n_bytes} bytes, no valid header); point the node at the right data directory", path.display())]
    NotALog { path: PathBuf, n_bytes: u64 },
    #[error("{} has log format {version}, this build reads format {supported}; run a matching ledger-node", path.display())]
    LogFormat {
        path: PathBuf,
        version: u32,
        supported: u32,
    },
    #[error("{} is damaged at offset {offset} ({reason}) and {detail}; nothing was changed: restore the log from a backup or from a replica", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: BadRecord,
        detail: CorruptDetail,
    },
    #[error("{} ends at offset {log_end} but its index holds records up to offset {index_end}: the log lost acknowledged events (restored from an older backup?); restore the newer log, or delete {} to accept the loss", path.display(), index.display())]
    LogBehindIndex {
        path: PathBuf,
        index: PathBuf,
        log_end: u64,
        index_end: u64,
    },
    #[error("event {event}: request id of {n_bytes} bytes, must be 1 to {max}")]
    RequestIdInvalid {
        event: EventId,
        n_bytes: usize,
        max: usize,
    },
    #[error("event {event}: record of {n_bytes} bytes exceeds the limit of {max}")]
    RecordTooLarge {
        event: EventId,
        n_bytes: usize,
        max: usize,
    },
    #[error("commit of {n_records} records ({n_bytes} bytes) exceeds the limits of {records_max} records and {bytes_max} bytes; commit smaller groups")]
    CommitTooLarge {
        n_records: usize,
        n_bytes: usize,
        records_max: usize,
        bytes_max: usize,
    },
    #[error("an earlier write to {} failed; the store takes no more commits: restart the node (it re-reads the log from disk)", path.display())]
    Poisoned { path: PathBuf },
}

/// Why a damaged log is not cut (see [`StoreError::Corrupt`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorruptDetail {
    #[error("the index shows records committed up to offset {index_end}, so the damage is in acknowledged events")]
    InsideCommitted { index_end: u64 },
    #[error("{cut_bytes} bytes follow it, more than one commit writes ({max}), so it is not a torn write")]
    TailTooLong { cut_bytes: u64, max: u64 },
    #[error("that record is all there but wrong, which no interrupted write leaves (it leaves unwritten sectors), so it and the {after_bytes} bytes after it may be acknowledged events")]
    NotTorn { after_bytes: u64 },
}

/// What [`Store::write`] made durable, for [`Store::index`]: which of the records were new
/// (by position in the slice written) and the log position after them.
#[derive(Debug)]
pub struct Written {
    /// Positions in the written slice of the records that were new, and where each landed.
    new: Vec<(usize, Loc)>,
    applied: Option<Applied>,
}

impl Written {
    /// The store positions (1-based record numbers in log order) of the written slice's
    /// records, by their index in that slice; `None` for a record skipped as a repeat.
    pub fn store_positions(&self) -> HashMap<usize, u64> {
        let Some(applied) = self.applied else {
            return HashMap::new();
        };
        let first = applied.n_records - self.new.len() as u64 + 1;
        self.new
            .iter()
            .enumerate()
            .map(|(k, (i, _))| (*i, first + k as u64))
            .collect()
    }
}

/// Every this many records, the store keeps the log offset of the next one, so that a
/// read from a store position starts near it ([`Store::records_after`]).
pub const POSITION_STRIDE: u64 = 256;

/// Events with their store positions, and where the next page starts.
pub type Page = (Vec<(u64, Event)>, Option<LogCursor>);

/// Where the record after store position `position` starts in the log: returned by
/// [`Store::records_after`] so the next page starts there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogCursor {
    position: u64,
    offset: u64,
}

/// Log offsets of store positions 1, 1 + stride, 1 + 2 stride, ..., and where the visible
/// (indexed) log ends.
#[derive(Debug, Default)]
struct Positions {
    marks: Vec<u64>,
    n_visible: u64,
    visible_end: u64,
}

/// The event log and its index. `Send + Sync`: one committer thread writes (and one
/// indexer indexes, in write order) while any number of threads read.
#[derive(Debug)]
pub struct Store {
    log: Mutex<LogWriter>,
    /// A read handle on the log for lookups (`pread`, no lock): records behind the index's
    /// applied offset never change.
    reader: File,
    log_path: PathBuf,
    index: Index,
    n_events: AtomicU64,
    /// Events written but not yet indexed (appends are answered before the index), so
    /// that a repeat arriving in between is still recognised and never logged twice.
    unindexed: Mutex<HashSet<EventId>>,
    /// The highest seq of any record in the log, per author (taken only while the log lock
    /// is held). A record above its author's top cannot be in the log yet, so the repeat
    /// check in [`Store::write`] reads the index only for records at or below it: a new
    /// append never waits for a sled read, which blocks while the indexer applies a batch.
    tops: Mutex<HashMap<SiteId, u64>>,
    /// Where store positions lie in the log (for [`Store::records_after`]).
    positions: std::sync::RwLock<Positions>,
}

impl Store {
    /// Opens or creates the store in `cfg.dir`.
    ///
    /// Scans the whole log, checking each record's length, CRC and that its event decodes,
    /// and calls `visit` for every valid record in log order. A torn or invalid tail (from
    /// the first bad record on) is cut and reported in [`OpenReport::cut_bytes`]. The index
    /// is brought up to date by replaying the records past its applied offset, or rebuilt
    /// when it does not match the log.
    ///
    /// # Errors
    /// [`StoreError::Io`] and [`StoreError::Sled`] for the disk; [`StoreError::NotALog`],
    /// [`StoreError::LogFormat`]; [`StoreError::Corrupt`] when the damage is not a torn tail
    /// and [`StoreError::LogBehindIndex`] when the log lost records the index has seen
    /// (nothing is cut in both cases).
    pub fn open(
        cfg: &StoreConfig,
        visit: impl FnMut(&Record),
    ) -> Result<(Store, OpenReport), StoreError> {
        let created = !cfg.dir.exists();
        // The node's alone whatever the umask (0700): it holds patients' chains.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&cfg.dir)
            .map_err(|source| StoreError::Io {
                op: "creating",
                path: cfg.dir.clone(),
                source,
            })?;
        if created {
            if let Some(parent) = cfg.dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                log::sync_dir(parent)?;
            }
        }
        // The index first: its lock keeps a second process from touching the log.
        let index = Index::open(&cfg.dir.join(INDEX_DIR), cfg.sled_cache_bytes)?;
        open_with(cfg, index, 0, visit)
    }

    /// Appends records durably and indexes them: [`Store::write`] then [`Store::index`].
    ///
    /// # Errors
    /// As for [`Store::write`] and [`Store::index`].
    pub fn commit(&self, records: &[Record]) -> Result<(), StoreError> {
        let written = self.write(records)?;
        self.index(records, &written)
    }

    /// Appends `records` durably and indexes them.
    ///
    /// Writes them all to the log, makes them durable with one `fdatasync`, and only then
    /// indexes them in one sled transaction (including the new applied offset). Returns
    /// after the `fdatasync`; a crash after it loses nothing, because open() replays the log
    /// into the index. Records whose event id is already stored, or that repeat an earlier
    /// record of the same batch, are skipped (neither logged nor indexed).
    ///
    /// # Errors
    /// [`StoreError::RequestIdInvalid`], [`StoreError::RecordTooLarge`] and
    /// [`StoreError::CommitTooLarge`] before anything is written (the store stays usable).
    /// [`StoreError::Io`] or [`StoreError::Sled`] when writing, syncing or indexing failed:
    /// then the store is poisoned and every later commit returns [`StoreError::Poisoned`].
    /// The batch was not acknowledged, yet some or all of its records may have reached the
    /// disk and come back at the next open (a client retry then finds its request id).
    pub fn write(&self, records: &[Record]) -> Result<Written, StoreError> {
        let mut log = match self.log.lock() {
            Ok(log) => log,
            // A commit panicked half-way (an assertion): the log and the index may disagree.
            Err(poisoned) => {
                return Err(StoreError::Poisoned {
                    path: poisoned.get_ref().path().to_path_buf(),
                })
            }
        };
        if log.failed() {
            return Err(StoreError::Poisoned {
                path: log.path().to_path_buf(),
            });
        }
        if records.len() > COMMIT_RECORDS_MAX {
            let n_bytes = records.iter().map(Record::log_bytes).sum();
            return Err(StoreError::CommitTooLarge {
                n_records: records.len(),
                n_bytes,
                records_max: COMMIT_RECORDS_MAX,
                bytes_max: COMMIT_BYTES_MAX,
            });
        }
        // Held only for the check and again after the sync, never across it: the indexer
        // takes it after every batch. Writes are serialised by the log lock, so no other
        // write can add an id in between.
        let unindexed = self.unindexed.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen = HashSet::with_capacity(records.len());
        // (position in `records`, record): the ticket names records by position.
        let mut new: Vec<(usize, &Record)> = Vec::with_capacity(records.len());
        let mut tops = self.tops.lock().unwrap_or_else(|p| p.into_inner());
        for (i, r) in records.iter().enumerate() {
            let id = r.event.id();
            let (author, seq) = (r.event.author(), r.event.seq());
            let may_be_logged = tops.get(author).is_some_and(|&top| seq.0 <= top);
            if !seen.insert(id)
                || (may_be_logged
                    && (unindexed.contains(&id) || self.find(author, seq, &id)?.is_some()))
            {
                tracing::warn!(event = %id, "commit of an event that is already stored; skipped");
                continue;
            }
            new.push((i, r));
        }
        drop(unindexed);
        if new.is_empty() {
            return Ok(Written {
                new: Vec::new(),
                applied: None,
            });
        }
        let n_bytes: usize = new.iter().map(|(_, r)| r.log_bytes()).sum();
        if n_bytes > COMMIT_BYTES_MAX {
            return Err(StoreError::CommitTooLarge {
                n_records: records.len(),
                n_bytes,
                records_max: COMMIT_RECORDS_MAX,
                bytes_max: COMMIT_BYTES_MAX,
            });
        }
        let before = log.end();
        let mut frames = Vec::with_capacity(n_bytes);
        let mut new_locs = Vec::with_capacity(new.len());
        for &(i, r) in &new {
            debug_assert_eq!(
                Event::from_bytes(r.event.bytes()).map(|e| e.id()).ok(),
                Some(r.event.id()),
                "event bytes must read back as the event"
            );
            let start = frames.len();
            log::encode_record(r, &mut frames)?;
            let len = u32::try_from(frames.len() - start).expect("a record is < 4 GiB");
            let at = Loc {
                offset: before + start as u64,
                len,
            };
            new_locs.push((i, at));
        }
        assert_eq!(
            frames.len(),
            n_bytes,
            "framed {} bytes, Record::log_bytes says {}",
            frames.len(),
            n_bytes
        );
        log.append(&frames, new.len() as u64)?;
        for (_, r) in &new {
            raise_top(&mut tops, &r.event);
        }
        drop(tops);
        self.unindexed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(new.iter().map(|(_, r)| r.event.id()));
        assert_eq!(
            log.end(),
            before + n_bytes as u64,
            "log end moved from {before} by {} bytes, wrote {n_bytes}",
            log.end() - before
        );
        let applied = Applied {
            offset: log.end(),
            n_records: log.n_records(),
        };
        Ok(Written {
            new: new_locs,
            applied: Some(applied),
        })
    }

    /// Indexes records that [`Store::write`] made durable, with the ticket it returned.
    /// Tickets must be indexed in the order they were written (the index records the log
    /// offset it has applied, which only moves forward).
    ///
    /// # Errors
    /// [`StoreError::Sled`]; after a failure the store refuses further writes until a
    /// restart replays the log.
    pub fn index(&self, records: &[Record], written: &Written) -> Result<(), StoreError> {
        self.index_groups(&[(records, written)])
    }

    /// [`Store::index`] for several written groups at once, in write order, as one sled
    /// batch (sled's cost is mostly per batch and per key, so an indexer that fell behind
    /// catches up in fewer, larger batches).
    ///
    /// # Errors
    /// As [`Store::index`].
    pub fn index_groups(&self, groups: &[(&[Record], &Written)]) -> Result<(), StoreError> {
        let mut new: Vec<(&Record, Loc)> = Vec::new();
        let mut applied = None;
        for (records, written) in groups {
            let Some(a) = written.applied else {
                continue;
            };
            let before = new.len();
            new.extend(
                written
                    .new
                    .iter()
                    .filter_map(|&(i, at)| records.get(i).map(|r| (r, at))),
            );
            assert_eq!(
                new.len() - before,
                written.new.len(),
                "the ticket names records that were not passed to index"
            );
            applied = Some(a);
        }
        let Some(applied) = applied else {
            return Ok(());
        };
        match self
            .index
            .apply(&new, applied, &|at| Ok(self.read(at)?.event.id()))
        {
            Ok(n_indexed) => {
                assert_eq!(
                    n_indexed,
                    new.len() as u64,
                    "indexed {n_indexed} of {} new records",
                    new.len()
                );
                let mut unindexed = self.unindexed.lock().unwrap_or_else(|p| p.into_inner());
                for (r, _) in &new {
                    unindexed.remove(&r.event.id());
                }
                {
                    let mut positions = self.positions.write().unwrap_or_else(|p| p.into_inner());
                    for (_, at) in &new {
                        if positions.n_visible.is_multiple_of(POSITION_STRIDE) {
                            positions.marks.push(at.offset);
                        }
                        positions.n_visible += 1;
                        positions.visible_end = at.offset + u64::from(at.len);
                    }
                    // Pair assertion: positions count exactly the records indexed.
                    assert_eq!(
                        positions.n_visible, applied.n_records,
                        "store positions reach {} but the index applied {} records",
                        positions.n_visible, applied.n_records
                    );
                }
                self.n_events.fetch_add(n_indexed, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                // The records are durable but not indexed: later commits would index past
                // them. Refuse until a restart replays them.
                if let Ok(mut log) = self.log.lock() {
                    log.set_failed();
                }
                Err(e)
            }
        }
    }

    fn read(&self, at: Loc) -> Result<Record, StoreError> {
        log::read_at(&self.reader, &self.log_path, at)
    }

    /// The stored event with this id, looked up by its feed position (`site`, `seq`): the
    /// event there, or a fork of it kept as evidence.
    ///
    /// # Errors
    /// [`StoreError::Sled`], [`StoreError::IndexCorrupt`], [`StoreError::Io`] or
    /// [`StoreError::LogRecordUnreadable`] (as for every read below).
    pub fn find(&self, site: &SiteId, seq: Seq, id: &EventId) -> Result<Option<Event>, StoreError> {
        // A fork is indexed only at a position already taken, so an empty position ends it.
        let Some(at) = self.index.feed_event(site, seq)? else {
            return Ok(None);
        };
        let event = self.read(at)?.event;
        if event.id() == *id {
            return Ok(Some(event));
        }
        let Some(at) = self.index.fork(id)? else {
            return Ok(None);
        };
        let event = self.read(at)?.event;
        if event.id() != *id {
            return Err(StoreError::LogRecordUnreadable {
                path: self.log_path.clone(),
                offset: at.offset,
                reason: format!("the index says event {id}, the log holds {}", event.id()),
            });
        }
        Ok(Some(event))
    }

    /// The first event stored at `(site, seq)`.
    ///
    /// # Errors
    /// As for [`Store::event`].
    pub fn feed_event(&self, site: &SiteId, seq: Seq) -> Result<Option<EventId>, StoreError> {
        match self.index.feed_event(site, seq)? {
            None => Ok(None),
            Some(at) => Ok(Some(self.read(at)?.event.id())),
        }
    }

    /// The first event stored at `(site, seq)`, whole.
    ///
    /// # Errors
    /// As for [`Store::find`].
    pub fn feed_record(&self, site: &SiteId, seq: Seq) -> Result<Option<Event>, StoreError> {
        match self.index.feed_event(site, seq)? {
            None => Ok(None),
            Some(at) => Ok(Some(self.read(at)?.event)),
        }
    }

    /// The outbox mark: the last seq of a local site's feed that NATS acknowledged.
    ///
    /// # Errors
    /// [`StoreError::Sled`] or [`StoreError::IndexCorrupt`].
    pub fn outbox_mark(&self, site: &SiteId) -> Result<u64, StoreError> {
        self.index.outbox_mark(site)
    }

    /// Moves the outbox mark (not made durable: losing it only republishes).
    ///
    /// # Errors
    /// [`StoreError::Sled`].
    pub fn set_outbox_mark(&self, site: &SiteId, seq: u64) -> Result<(), StoreError> {
        self.index.set_outbox_mark(site, seq)
    }

    /// Events of a chain in the order they were committed, positions 1-based: those with
    /// position > `after`, at most `limit`.
    ///
    /// # Errors
    /// As for [`Store::event`].
    pub fn chain(
        &self,
        coi: &Coi,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Event)>, StoreError> {
        let locs = self.index.chain(coi, after, limit)?;
        let mut out = Vec::with_capacity(locs.len());
        for (position, at) in locs {
            let event = self.read(at)?.event;
            if event.coi() != coi {
                return Err(StoreError::LogRecordUnreadable {
                    path: self.log_path.clone(),
                    offset: at.offset,
                    reason: format!(
                        "the index puts it at position {position} of chain {coi}, the event is of chain {}",
                        event.coi()
                    ),
                });
            }
            out.push((position, event));
        }
        Ok(out)
    }

    /// Events in store order (the log's order: every chain's events in their chain order),
    /// with their 1-based store positions: those after position `after`, at most `limit`,
    /// and only events the index already holds (acknowledged and visible). Reads about
    /// `bytes` of log at a time. `resume` is the [`LogCursor`] a previous call returned: when
    /// it points just past `after`, reading starts there instead of at the nearest position
    /// mark, so a reader going forward page by page decodes each record once.
    ///
    /// # Errors
    /// [`StoreError::Io`] or [`StoreError::LogRecordUnreadable`].
    pub fn records_after(
        &self,
        after: u64,
        resume: Option<LogCursor>,
        limit: usize,
        bytes: usize,
    ) -> Result<Page, StoreError> {
        let (mut position, mut offset, n_visible, visible_end) = {
            let positions = self.positions.read().unwrap_or_else(|p| p.into_inner());
            if after >= positions.n_visible {
                return Ok((Vec::new(), resume));
            }
            let (position, offset) = match resume {
                Some(c) if c.position == after => (c.position, c.offset),
                _ => {
                    let k = (after / POSITION_STRIDE) as usize;
                    let Some(&offset) = positions.marks.get(k) else {
                        return Ok((Vec::new(), None));
                    };
                    (k as u64 * POSITION_STRIDE, offset)
                }
            };
            (position, offset, positions.n_visible, positions.visible_end)
        };
        let mut out = Vec::new();
        let mut cursor = None;
        while out.len() < limit && position < n_visible {
            let run = log::read_run(&self.reader, &self.log_path, offset, visible_end, bytes)?;
            if run.is_empty() {
                break;
            }
            for (record, end) in run {
                if out.len() >= limit || position >= n_visible {
                    break;
                }
                position += 1;
                offset = end;
                if position > after {
                    out.push((position, record.event));
                    cursor = Some(LogCursor { position, offset });
                }
            }
        }
        Ok((out, cursor))
    }

    /// The number of the last visible store position (events indexed).
    pub fn last_position(&self) -> u64 {
        self.positions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .n_visible
    }

    /// # Errors
    /// [`StoreError::Sled`] or [`StoreError::IndexCorrupt`].
    pub fn chain_len(&self, coi: &Coi) -> Result<u64, StoreError> {
        self.index.chain_len(coi)
    }

    /// Request ids are scoped by site (the event's author): (site, request_id) -> the id of
    /// the first event stored with it.
    ///
    /// # Errors
    /// [`StoreError::Sled`] or [`StoreError::IndexCorrupt`].
    pub fn request(&self, site: &SiteId, request_id: &str) -> Result<Option<EventId>, StoreError> {
        Ok(self.request_event(site, request_id)?.map(|e| e.id()))
    }

    /// The event first stored with `(site, request_id)`, for answering a retry.
    ///
    /// # Errors
    /// As for [`Store::event`].
    pub fn request_event(
        &self,
        site: &SiteId,
        request_id: &str,
    ) -> Result<Option<Event>, StoreError> {
        match self.index.request(site, request_id)? {
            None => Ok(None),
            Some(at) => Ok(Some(self.read(at)?.event)),
        }
    }

    /// Which chain a unit belongs to (set when a collection, transformation or
    /// reassignment creates it; the latest in log order wins).
    ///
    /// # Errors
    /// [`StoreError::Sled`] or [`StoreError::IndexCorrupt`].
    pub fn unit_coi(&self, unit: &UnitId) -> Result<Option<Coi>, StoreError> {
        self.index.unit_coi(unit)
    }

    /// Events in the store (records in the log).
    pub fn n_events(&self) -> u64 {
        self.n_events.load(Ordering::Acquire)
    }

    /// Drops the sled index and rebuilds it from the log (for `ledger-node rebuild-index`).
    /// The rebuilt index gives the same answers as before. A crash half-way leaves an index
    /// the next open rebuilds again.
    ///
    /// # Errors
    /// As [`Store::open`]; [`StoreError::Sled`] also when a running node holds the store.
    pub fn rebuild_index(cfg: &StoreConfig) -> Result<OpenReport, StoreError> {
        let mut index = Index::open(&cfg.dir.join(INDEX_DIR), cfg.sled_cache_bytes)?;
        // What the old index had applied was acknowledged: the rebuild may not cut below it,
        // even though the index it came from is about to go. (An unreadable index gives
        // no floor; the torn-write rule still guards.)
        let floor = match index.applied() {
            Ok(Some(a)) => a.offset,
            Ok(None) | Err(_) => 0,
        };
        index.clear()?;
        let (_store, report) = open_with(cfg, index, floor, |_| {})?;
        Ok(report)
    }
}

/// [`Store::open`] once the index (and with it the store's lock) is held.
fn open_with(
    cfg: &StoreConfig,
    mut index: Index,
    committed_floor: u64,
    mut visit: impl FnMut(&Record),
) -> Result<(Store, OpenReport), StoreError> {
    let (file, path, file_len) = log::open_or_create(&cfg.dir)?;
    let reader = File::open(&path).map_err(|source| StoreError::Io {
        op: "opening",
        path: path.clone(),
        source,
    })?;
    let id_at = |at: Loc| Ok(log::read_at(&reader, &path, at)?.event.id());
    let start = Applied {
        offset: log::HEADER_LEN,
        n_records: 0,
    };
    let applied = match index.applied()? {
        Some(a) => a,
        None => {
            // Missing, half-cleared or another format: start from nothing.
            index.clear()?;
            start
        }
    };
    let mut report = OpenReport::default();
    let mut scanner = Scanner::new(&path, file_len)?;
    let mut n_records = 0u64;
    // Whether the index's applied position is a record boundary of this log (with the
    // same number of records before it); from there on, records are replayed.
    let mut in_step = applied == start;
    let mut pending: Vec<(Record, Loc)> = Vec::new();
    let mut tops: HashMap<SiteId, u64> = HashMap::new();
    let mut marks: Vec<u64> = Vec::new();
    let bad = loop {
        let offset = scanner.offset();
        if offset == applied.offset && n_records == applied.n_records {
            in_step = true;
        }
        match scanner.next_record()? {
            Step::End => break None,
            Step::Bad(reason) => break Some((offset, reason)),
            Step::Record { record, end } => {
                visit(&record);
                raise_top(&mut tops, &record.event);
                if n_records.is_multiple_of(POSITION_STRIDE) {
                    marks.push(offset);
                }
                n_records += 1;
                if in_step && end > applied.offset {
                    pending.push((*record, loc_between(offset, end)));
                    if pending.len() == REPLAY_BATCH_RECORDS {
                        report.reindexed += index.apply(
                            &as_refs(&pending),
                            Applied {
                                offset: end,
                                n_records,
                            },
                            &id_at,
                        )?;
                        pending.clear();
                    }
                }
            }
        }
    };
    let valid_end = scanner.offset();
    drop(scanner);
    if let Some((offset, reason)) = bad {
        let cut_bytes = file_len - valid_end;
        if !in_step && applied.offset > valid_end || committed_floor > valid_end {
            return Err(StoreError::Corrupt {
                path,
                offset,
                reason,
                detail: CorruptDetail::InsideCommitted {
                    index_end: applied.offset.max(committed_floor),
                },
            });
        }
        if !log::torn_write(&path, offset, &reason, file_len)? {
            return Err(StoreError::Corrupt {
                path,
                offset,
                reason,
                detail: CorruptDetail::NotTorn {
                    after_bytes: file_len - valid_end,
                },
            });
        }
        if cut_bytes > TORN_TAIL_BYTES_MAX {
            return Err(StoreError::Corrupt {
                path,
                offset,
                reason,
                detail: CorruptDetail::TailTooLong {
                    cut_bytes,
                    max: TORN_TAIL_BYTES_MAX,
                },
            });
        }
        tracing::warn!(log = %path.display(), offset, %reason, cut_bytes, "cutting a torn or invalid tail from the log (a write that was never acknowledged)");
        report.cut_bytes = cut_bytes;
    } else if !in_step && applied.offset > valid_end {
        return Err(StoreError::LogBehindIndex {
            path,
            index: cfg.dir.join(INDEX_DIR),
            log_end: valid_end,
            index_end: applied.offset,
        });
    }
    // Past the valid end there are only zeros (preallocated) or a tail about to be cut.
    let mut writer = LogWriter::new(
        file,
        path.clone(),
        valid_end,
        file_len,
        n_records,
        cfg.preallocate,
    );
    if report.cut_bytes > 0 {
        writer.cut_tail(valid_end)?;
    }
    if in_step {
        if !pending.is_empty() {
            report.reindexed += index.apply(
                &as_refs(&pending),
                Applied {
                    offset: valid_end,
                    n_records,
                },
                &id_at,
            )?;
        }
    } else {
        tracing::warn!(index = %cfg.dir.join(INDEX_DIR).display(), applied_offset = applied.offset, applied_records = applied.n_records, "the index does not match the log; rebuilding it from the log");
        index.clear()?;
        report.reindexed = reindex_all(&index, &path, valid_end, &id_at)?;
    }
    assert_eq!(
        writer.end(),
        valid_end,
        "log writer starts at {} but the valid log ends at {valid_end}",
        writer.end()
    );
    // Pair assertion: what the index says it covers is exactly the log as scanned.
    let covered = index.applied()?.unwrap_or(start);
    assert_eq!(
        covered,
        Applied {
            offset: valid_end,
            n_records
        },
        "index covers {covered:?} after open, log has {n_records} records to offset {valid_end}"
    );
    report.n_records = n_records;
    report.log_bytes = valid_end;
    let store = Store {
        log: Mutex::new(writer),
        reader,
        log_path: path,
        index,
        n_events: AtomicU64::new(n_records),
        unindexed: Mutex::new(HashSet::new()),
        tops: Mutex::new(tops),
        positions: std::sync::RwLock::new(Positions {
            marks,
            n_visible: n_records,
            visible_end: valid_end,
        }),
    };
    Ok((store, report))
}

/// Counts `e` in its author's highest seq in the log.
fn raise_top(tops: &mut HashMap<SiteId, u64>, e: &Event) {
    let top = tops.entry(e.author().clone()).or_insert(0);
    *top = (*top).max(e.seq().0);
}

fn loc_between(start: u64, end: u64) -> Loc {
    Loc {
        offset: start,
        len: u32::try_from(end - start).expect("the scanner bounds a record by RECORD_BYTES_MAX"),
    }
}

fn as_refs(pending: &[(Record, Loc)]) -> Vec<(&Record, Loc)> {
    pending.iter().map(|(r, at)| (r, *at)).collect()
}

/// Replays every record of the log up to `end` into an empty index.
fn reindex_all(
    index: &Index,
    path: &Path,
    end: u64,
    id_at: &dyn Fn(Loc) -> Result<EventId, StoreError>,
) -> Result<u64, StoreError> {
    let mut scanner = Scanner::new(path, end)?;
    let mut pending: Vec<(Record, Loc)> = Vec::new();
    let mut n_records = 0u64;
    let mut n_indexed = 0u64;
    loop {
        let start = scanner.offset();
        let step = scanner.next_record()?;
        let done = matches!(step, Step::End);
        match step {
            Step::Record { record, end } => {
                pending.push((*record, loc_between(start, end)));
                n_records += 1;
            }
            Step::End => {}
            Step::Bad(reason) => {
                // The same bytes scanned clean a moment ago: the disk changed under us.
                return Err(StoreError::Corrupt {
                    path: path.to_path_buf(),
                    offset: scanner.offset(),
                    reason,
                    detail: CorruptDetail::InsideCommitted { index_end: end },
                });
            }
        }
        if pending.len() == REPLAY_BATCH_RECORDS || (done && !pending.is_empty()) {
            n_indexed += index.apply(
                &as_refs(&pending),
                Applied {
                    offset: scanner.offset(),
                    n_records,
                },
                id_at,
            )?;
            pending.clear();
        }
        if done {
            return Ok(n_indexed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    /// A log write that fails leaves nothing of itself behind, and the store refuses every
    /// later write until it is reopened: after a failed write or sync the page cache may
    /// hold bytes that never reach the disk, so only a fresh read of the file is safe.
    #[test]
    fn a_failed_log_write_is_never_read_and_later_writes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            dir: dir.path().join("store"),
            sled_cache_bytes: 4 * 1024 * 1024,
            preallocate: true,
        };
        let records: Vec<Record> = fixtures::synth::synth(30)
            .events
            .iter()
            .enumerate()
            .map(|(i, e)| Record {
                event: e.clone(),
                request_id: Some(format!("req-{i}")),
            })
            .collect();
        let (store, _) = Store::open(&cfg, |_| {}).unwrap();
        store.commit(&records[..10]).unwrap();
        store.log.lock().unwrap().refuse_writes();

        match store.commit(&records[10..20]) {
            Err(StoreError::Io { op: "writing", .. }) => {}
            other => panic!("a write to a log that refuses writes gave {other:?}"),
        }
        match store.commit(&records[20..]) {
            Err(StoreError::Poisoned { .. }) => {}
            other => panic!("a write after a failed one gave {other:?}"),
        }
        drop(store);

        let mut seen = Vec::new();
        let (store, report) = Store::open(&cfg, |r| seen.push(r.event.id())).unwrap();
        let first: Vec<_> = records[..10].iter().map(|r| r.event.id()).collect();
        assert_eq!(seen, first);
        assert_eq!(report.cut_bytes, 0);
        // The store works again after the reopen, from where the last good write ended.
        store.commit(&records[10..20]).unwrap();
        drop(store);
        let mut seen = Vec::new();
        Store::open(&cfg, |r| seen.push(r.event.id())).unwrap();
        let twenty: Vec<_> = records[..20].iter().map(|r| r.event.id()).collect();
        assert_eq!(seen, twenty);
    }

    #[test]
    fn store_errors_say_what_to_do_about_their_cause() {
        let path = PathBuf::from("/data/store/events.log");
        let io = |kind| StoreError::Io {
            op: "writing",
            path: path.clone(),
            source: Error::from(kind),
        };
        let sled = |source| StoreError::Sled {
            path: path.clone(),
            source,
        };
        for kind in [ErrorKind::StorageFull, ErrorKind::FileTooLarge] {
            assert!(io(kind).to_string().ends_with("; the disk is full (or a file size limit was reached): free space, then restart the node"), "{}", io(kind));
            let e = sled(sled::Error::Io(Error::from(kind)));
            assert!(e.to_string().contains("; the disk is full"), "{e}");
        }
        assert!(io(ErrorKind::PermissionDenied)
            .to_string()
            .ends_with("; check the disk and the permissions on the data directory"));
        let locked = sled(sled::Error::Io(Error::other(
            "could not acquire lock on \"/data/store/index/db\": WouldBlock",
        )));
        assert!(
            locked.to_string().ends_with(
                "another process holds this store: if another node runs on it, stop that node"
            ),
            "{locked}"
        );
        let bug = sled(sled::Error::ReportableBug("x".into()));
        assert!(bug
            .to_string()
            .ends_with("stop the node and run `ledger-node rebuild-index`"));
    }
}
