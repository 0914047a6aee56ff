//! Between the gRPC handlers and the disk.
//!
//! An append is decided under the ledger lock ([`Ledger::prepare`]) and, still under the
//! lock, queued to the committer, so the queue's order is the order events were sequenced
//! (a site's seq n is always written before seq n+1). The committer is one thread: it takes
//! every job waiting (up to the group limit), writes them to the log under one fdatasync,
//! and then answers all of them (group commit): the log is the durability point. An
//! indexer thread then indexes each group in write order and only after that makes it
//! visible (readers' committed marks, the retry check's request ids, watchers), so the
//! next group's write and sync overlap the previous group's index. A slot in the bounded
//! queue is reserved before deciding, so a full queue refuses an append before any state
//! changes. An `AppendBatch` is decided in chunks, each queued under the lock, so a long
//! batch never holds the lock for long.
//!
//! A lone appender does not go through the committer: when nothing is queued or being
//! written and the last group was a single append, the gRPC worker that decided the append
//! takes the *write turn* (still under the ledger lock, so order is kept) and writes and
//! syncs the event itself. That saves two thread wake-ups per append, which on a small
//! virtual machine cost as much as the rest of the node's work. The worker blocks for one
//! fdatasync at most, and only when no other append is waiting for the disk.
//!
//! If the disk fails, the in-memory state is ahead of the log: the node answers every
//! waiting and later append with an error, stops, and rebuilds from the log on restart.

use crate::ledger::{AppendError, Done, Ingest, Ledger, Looked, Outcome, Prepared, Receipt};
use crate::store::{Record, Store};
use ledger_core::{Coi, Event, RequestDigest, Timestamp};
use proto::convert::AppendDraft;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Totals since start, for metrics and benchmarks: group commits and events committed.
#[derive(Debug, Default)]
pub struct CommitStats {
    pub n_commits: std::sync::atomic::AtomicU64,
    pub n_events: std::sync::atomic::AtomicU64,
}

/// The process-wide commit totals (one node per process).
pub static COMMIT_STATS: CommitStats = CommitStats {
    n_commits: std::sync::atomic::AtomicU64::new(0),
    n_events: std::sync::atomic::AtomicU64::new(0),
};

/// Capacity of the committed-event broadcast that feeds watchers.
pub const WATCH_BROADCAST_CAPACITY: usize = 8192;

/// A committed event, as watchers see it.
#[derive(Debug)]
pub struct Committed {
    pub coi: Coi,
    /// 1-based position in the chain.
    pub position: u64,
    /// 1-based position in the store (log order, across chains); 0 for a record the store
    /// skipped as a repeat of one it holds.
    pub store_position: u64,
    pub event: Event,
}

struct Job {
    prepared: Vec<Prepared>,
    reply: oneshot::Sender<Result<(), String>>,
}

/// What the committer's queue carries.
enum Msg {
    Job(Job),
    /// Take no more jobs; write those already queued, then end (see [`Pipeline::close`]).
    Close,
}

/// The append path and the shared state behind the gRPC service.
#[derive(Clone)]
pub struct Pipeline {
    writer: Arc<Writer>,
    indexed_groups: tokio::sync::watch::Receiver<u64>,
    ledger: Arc<Mutex<Ledger>>,
    /// [`Ledger::indexed_epoch`], read before a request id is looked up outside the lock.
    indexed_epoch: Arc<AtomicU64>,
    store: Arc<Store>,
    jobs: mpsc::Sender<Msg>,
    committed: broadcast::Sender<Arc<Committed>>,
    stopped: Arc<AtomicBool>,
    queue_depth: usize,
}

/// What writes to the log: the committer thread, or a gRPC worker holding the write turn.
struct Writer {
    store: Arc<Store>,
    /// Held by whoever writes a group, from before its write until it is handed to the
    /// indexer, so groups reach the log and the indexer in sequencing order.
    turn: Mutex<()>,
    /// Jobs sent to the committer and not yet written (incremented under the ledger lock
    /// when sending): an append may be written directly only when this is zero.
    queued: AtomicUsize,
    /// Events in the last group written.
    last_group: AtomicUsize,
    /// Groups made durable (incremented before their appends are answered) and groups
    /// indexed and visible: a read waits until the second reaches the first as it was when
    /// the read began, so an answered append is always visible to a later read.
    durable_groups: Arc<std::sync::atomic::AtomicU64>,
    /// Taken by the committer when it ends, which ends the indexer after its last group.
    index_tx: Mutex<Option<std::sync::mpsc::Sender<Durable>>>,
    /// Readers waiting for the index ask the indexer to stop gathering.
    hurry: Arc<Hurry>,
    backlog: Arc<Backlog>,
    stopped: Arc<AtomicBool>,
    shutdown: CancellationToken,
}

/// Events of one group, taken apart for the log, the indexer and the retry check.
struct Group {
    records: Vec<Record>,
    meta: Vec<Done>,
    flags: Vec<Arc<AtomicBool>>,
}

impl Group {
    fn of(prepared: impl IntoIterator<Item = Prepared>) -> Group {
        let mut g = Group {
            records: Vec::new(),
            meta: Vec::new(),
            flags: Vec::new(),
        };
        for p in prepared {
            g.meta.push(Done {
                coi: p.coi,
                position: p.position,
                site: p.receipt.site,
                seq: p.receipt.seq,
                request_id: p.record.request_id.clone(),
            });
            g.records.push(p.record);
            g.flags.push(p.durable);
        }
        g
    }
}

impl Writer {
    /// Writes and syncs one group, then answers (`answer`) and hands it to the indexer.
    /// The caller holds the write turn and has counted the group in the backlog.
    ///
    /// # Errors
    /// The storage failure, as text for the appends waiting on it; the node is stopping.
    fn write_group(&self, group: Group, answer: impl FnOnce()) -> Result<(), String> {
        let n = group.records.len();
        let started = std::time::Instant::now();
        match self.store.write(&group.records) {
            Ok(written) => {
                COMMIT_STATS.n_commits.fetch_add(1, Ordering::Relaxed);
                COMMIT_STATS.n_events.fetch_add(n as u64, Ordering::Relaxed);
                metrics::counter!("ledger_commits_total").increment(1);
                metrics::histogram!("ledger_commit_group_events").record(n as f64);
                metrics::histogram!("ledger_commit_seconds")
                    .record(started.elapsed().as_secs_f64());
                self.last_group.store(n, Ordering::Relaxed);
                // Durable: the log is fdatasynced. Answer now; the index follows.
                for flag in &group.flags {
                    flag.store(true, Ordering::Release);
                }
                // Before any answer, so a read that follows an answer waits for this group.
                self.durable_groups.fetch_add(1, Ordering::AcqRel);
                answer();
                let sent = self
                    .index_tx
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .is_some_and(|tx| {
                        tx.send(Durable {
                            records: group.records,
                            meta: group.meta,
                            written,
                        })
                        .is_ok()
                    });
                if !sent {
                    // The indexer stopped after a failure it already reported.
                    self.backlog.release(n as u64);
                    self.stopped.store(true, Ordering::Release);
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "storage failure: refusing all further appends and shutting down; restart the node to rebuild from the log");
                self.backlog.release(n as u64);
                self.stopped.store(true, Ordering::Release);
                self.shutdown.cancel();
                Err(e.to_string())
            }
        }
    }
}

/// An append that will be written by the worker that decided it: the write turn is held.
struct Direct<'a> {
    group: Group,
    _turn: MutexGuard<'a, ()>,
}

/// Where the answer for a decided chunk comes from.
enum Pending<'a> {
    /// Nothing to write (duplicates and refusals only).
    Nothing,
    /// The committer answers on this channel.
    Queued(oneshot::Receiver<Result<(), String>>),
    /// The caller writes it now (see [`Pipeline::append_chunk`]).
    Direct(Direct<'a>),
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("queue_depth", &self.queue_depth)
            .finish()
    }
}

/// Reads the wall clock; the only place the node decides what time it is.
pub fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Timestamp(ms)
}

impl Pipeline {
    /// Starts the committer thread. It ends when every `Pipeline` clone is dropped, or after
    /// [`Pipeline::close`], once the queue is drained; join the returned handle to wait for
    /// the last fdatasync.
    pub fn start(
        ledger: Ledger,
        store: Arc<Store>,
        queue_depth: usize,
        group_max: usize,
        shutdown: CancellationToken,
    ) -> (Pipeline, std::thread::JoinHandle<()>) {
        let indexed_epoch = ledger.indexed_epoch();
        let ledger = Arc::new(Mutex::new(ledger));
        let (tx, rx) = mpsc::channel(queue_depth);
        let (committed, _) = broadcast::channel(WATCH_BROADCAST_CAPACITY);
        let stopped = Arc::new(AtomicBool::new(false));
        let durable_groups = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (indexed_tx, indexed_groups) = tokio::sync::watch::channel(0u64);
        // Unbounded as a channel: the backlog bounds it (in events, so also in groups).
        let (index_tx, index_rx) = std::sync::mpsc::channel::<Durable>();
        let hurry = Arc::new(Hurry::default());
        let backlog = Arc::new(Backlog::default());
        let indexer = Indexer {
            backlog: backlog.clone(),
            rx: index_rx,
            hurry: hurry.clone(),
            store: store.clone(),
            ledger: ledger.clone(),
            committed: committed.clone(),
            stopped: stopped.clone(),
            shutdown: shutdown.clone(),
            indexed_groups: indexed_tx,
        };
        let indexer = std::thread::Builder::new()
            .name("indexer".into())
            .spawn(move || indexer.run())
            .expect("spawning the indexer thread");
        let writer = Arc::new(Writer {
            store: store.clone(),
            turn: Mutex::new(()),
            queued: AtomicUsize::new(0),
            last_group: AtomicUsize::new(0),
            durable_groups,
            index_tx: Mutex::new(Some(index_tx)),
            hurry,
            backlog,
            stopped: stopped.clone(),
            shutdown,
        });
        let committer = Committer {
            rx,
            writer: writer.clone(),
            group_max,
            indexer: Some(indexer),
        };
        let handle = std::thread::Builder::new()
            .name("committer".into())
            .spawn(move || committer.run())
            .expect("spawning the committer thread");
        (
            Pipeline {
                writer,
                indexed_groups,
                ledger,
                indexed_epoch,
                store,
                jobs: tx,
                committed,
                stopped,
                queue_depth,
            },
            handle,
        )
    }

    /// The ledger state, for readers. Hold the guard briefly and never across an await.
    pub fn ledger(&self) -> MutexGuard<'_, Ledger> {
        // A panic while holding the lock is a bug that already stopped an append; the state
        // it guards is still the last consistent one we built, so keep serving reads.
        self.ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Stops taking appends (later ones are refused) and lets the committer end once it has
    /// written every append already queued. For a stopping node whose gRPC connections may
    /// outlive the server (a client holding a stream open keeps its clone of the service).
    pub async fn close(&self) {
        // Fails only when the committer has already ended.
        let _ = self.jobs.send(Msg::Close).await;
    }

    /// Whether a write to the log or the index failed: the node then refuses appends and
    /// stops, and only a restart (which rebuilds from the log) serves again.
    pub fn failed(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Waits until every group durable now is visible to readers (normally well under a
    /// millisecond: one index batch). Call before reading.
    ///
    /// # Errors
    /// When the node stopped after a storage failure, or the index does not catch up
    /// within [`CATCH_UP_DEADLINE`].
    pub async fn caught_up(&self) -> Result<(), AppendError> {
        let target = self.writer.durable_groups.load(Ordering::Acquire);
        let mut rx = self.indexed_groups.clone();
        if *rx.borrow() < target {
            // The indexer may be gathering a bigger batch; this read wants it now.
            self.writer.hurry.ask();
        }
        let caught_up = tokio::time::timeout(CATCH_UP_DEADLINE, rx.wait_for(|v| *v >= target))
            .await
            .is_ok_and(|r| r.is_ok());
        if caught_up {
            Ok(())
        } else if self.stopped.load(Ordering::Acquire) {
            Err(AppendError::Stopped)
        } else {
            Err(AppendError::IndexBehind {
                waited_s: CATCH_UP_DEADLINE.as_secs(),
            })
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Committed>> {
        self.committed.subscribe()
    }

    /// Appends drafts in order; each gets its own answer, once durable.
    pub async fn append(&self, drafts: Vec<AppendDraft>) -> Vec<Result<Receipt, AppendError>> {
        if drafts.len() <= PREPARE_CHUNK {
            let (results, outcome) = match self.append_chunk(drafts) {
                (results, Ok(outcome)) => (results, outcome),
                (results, Err(answer)) => (results, Self::answered(answer).await),
            };
            return Self::finish(results, &outcome);
        }
        let mut out = Vec::with_capacity(drafts.len());
        let mut drafts = drafts.into_iter().peekable();
        let mut pending = Vec::new();
        while drafts.peek().is_some() {
            let chunk: Vec<AppendDraft> = drafts.by_ref().take(PREPARE_CHUNK).collect();
            let (results, answer) = match self.prepare_chunk(chunk, false) {
                (results, Pending::Queued(answer)) => (results, Some(answer)),
                (results, _) => (results, None),
            };
            pending.push((results, answer));
        }
        for (results, answer) in pending {
            let outcome = match answer {
                Some(answer) => Self::answered(answer).await,
                None => Ok(()),
            };
            out.extend(Self::finish(results, &outcome));
        }
        out
    }

    /// Decides one chunk and, when it may, writes and syncs it on the calling thread (which
    /// never awaits while it holds the write turn). Returns the decisions, and the outcome
    /// of the write or the channel the committer answers on.
    #[allow(clippy::type_complexity)]
    fn append_chunk(
        &self,
        drafts: Vec<AppendDraft>,
    ) -> (
        Vec<Result<Option<Receipt>, AppendError>>,
        Result<Result<(), String>, oneshot::Receiver<Result<(), String>>>,
    ) {
        let (results, pending) = self.prepare_chunk(drafts, true);
        let outcome = match pending {
            Pending::Nothing => Ok(Ok(())),
            Pending::Direct(direct) => Ok(self.writer.write_group(direct.group, || {})),
            Pending::Queued(answer) => Err(answer),
        };
        (results, outcome)
    }

    /// Decides one chunk under the lock and queues it, or (when `direct_ok` and nothing
    /// else is waiting for the disk) takes the write turn for the caller to write it.
    /// Returns the decisions and where their durability answer comes from.
    fn prepare_chunk(
        &self,
        drafts: Vec<AppendDraft>,
        direct_ok: bool,
    ) -> (Vec<Result<Option<Receipt>, AppendError>>, Pending<'_>) {
        let n = drafts.len();
        if self.stopped.load(Ordering::Acquire) {
            return (
                (0..n).map(|_| Err(AppendError::Stopped)).collect(),
                Pending::Nothing,
            );
        }
        let permit = match self.jobs.try_reserve() {
            Ok(p) => p,
            Err(mpsc::error::TrySendError::Full(())) => {
                return (
                    (0..n)
                        .map(|_| {
                            Err(AppendError::QueueFull {
                                depth: self.queue_depth,
                            })
                        })
                        .collect(),
                    Pending::Nothing,
                )
            }
            // Closed by `close` (a stopping node), or the committer ended after a failure.
            Err(mpsc::error::TrySendError::Closed(())) => {
                let e = || {
                    if self.stopped.load(Ordering::Acquire) {
                        AppendError::Stopped
                    } else {
                        AppendError::Closing
                    }
                };
                return ((0..n).map(|_| Err(e())).collect(), Pending::Nothing);
            }
        };
        // Retries are found in the store before the lock (see `Looked`).
        let looked: Vec<_> = drafts
            .iter()
            .map(|d| {
                let digest = RequestDigest::of(&d.coi, d.occurred_at, &d.signer, &d.body);
                Looked::ask(&self.store, &self.indexed_epoch, &d.site, &d.request_id)
                    .map(|looked| (looked, digest))
            })
            .collect();
        let now = now();
        let mut results = Vec::with_capacity(n);
        let mut prepared = Vec::new();
        let mut ledger = self.ledger();
        for (draft, looked) in drafts.into_iter().zip(looked) {
            let decided = match looked {
                Ok((looked, digest)) => ledger.prepare(draft, looked, digest, now, &self.store),
                Err(e) => Err(e.into()),
            };
            match decided {
                Ok(Outcome::New(p)) => {
                    // A fresh receipt (duplicate = false) is answered once its group is durable.
                    results.push(Ok(Some(p.receipt.clone())));
                    prepared.push(*p);
                }
                Ok(Outcome::Duplicate(r)) => results.push(Ok(Some(r))),
                Err(e) => results.push(Err(e)),
            }
        }
        if prepared.is_empty() {
            drop(ledger);
            drop(permit);
            return (results, Pending::Nothing);
        }
        if direct_ok {
            if let Some(turn) = self.direct_turn(prepared.len()) {
                // Taken under the ledger lock: nothing sequenced later can be written first.
                drop(ledger);
                drop(permit);
                return (
                    results,
                    Pending::Direct(Direct {
                        group: Group::of(prepared),
                        _turn: turn,
                    }),
                );
            }
        }
        let (reply, answer) = oneshot::channel();
        // Sent under the lock: queue order is sequencing order.
        self.writer.queued.fetch_add(1, Ordering::AcqRel);
        permit.send(Msg::Job(Job { prepared, reply }));
        drop(ledger);
        (results, Pending::Queued(answer))
    }

    /// The write turn for `n` events decided by the caller, if they may be written directly:
    /// nothing queued for the committer or being written, the last group a single event
    /// (under concurrent load the committer's groups share one sync among many appends),
    /// and room in the index backlog. Call under the ledger lock.
    fn direct_turn(&self, n: usize) -> Option<MutexGuard<'_, ()>> {
        let w = &self.writer;
        if w.queued.load(Ordering::Acquire) != 0 || w.last_group.load(Ordering::Relaxed) > 1 {
            return None;
        }
        let turn = match w.turn.try_lock() {
            Ok(turn) => turn,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        w.backlog.try_acquire(n as u64).then_some(turn)
    }

    async fn answered(answer: oneshot::Receiver<Result<(), String>>) -> Result<(), String> {
        answer
            .await
            .unwrap_or_else(|_| Err("the committer stopped".into()))
    }

    fn finish(
        results: Vec<Result<Option<Receipt>, AppendError>>,
        outcome: &Result<(), String>,
    ) -> Vec<Result<Receipt, AppendError>> {
        results
            .into_iter()
            .map(|r| match r {
                Ok(Some(receipt)) if !receipt.duplicate => match outcome {
                    Ok(()) => Ok(receipt),
                    Err(e) => Err(AppendError::CommitFailed { reason: e.clone() }),
                },
                Ok(Some(receipt)) => Ok(receipt),
                Ok(None) => Err(AppendError::Stopped),
                Err(e) => Err(e),
            })
            .collect()
    }
}

/// What became of an event received by replication.
#[derive(Debug)]
pub enum Ingested {
    /// Durable now (`fork`: stored as evidence of equivocation, with the id held there).
    Stored {
        fork: Option<ledger_core::EventId>,
    },
    Duplicate,
    Gap {
        from: u64,
        to: u64,
    },
    MissingParents {
        missing: Vec<ledger_core::EventId>,
    },
    Rejected {
        reason: String,
    },
    /// The store failed; the node is stopping.
    Failed {
        reason: String,
    },
}

impl Pipeline {
    /// Stores events received by replication (each already admitted), in order, and
    /// answers once the new ones are durable. Waits for room in the queue rather than
    /// refusing: replication can always come back later, but should not spin.
    pub async fn ingest(&self, events: Vec<(Event, ledger_core::Role)>) -> Vec<Ingested> {
        let mut out = Vec::with_capacity(events.len());
        let mut pending = Vec::new();
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            let chunk: Vec<(Event, ledger_core::Role)> =
                events.by_ref().take(INGEST_CHUNK).collect();
            let permit = match self.jobs.reserve().await {
                Ok(p) => p,
                Err(_) => {
                    out.extend(chunk.iter().map(|_| Ingested::Failed {
                        reason: "the node is stopping".into(),
                    }));
                    continue;
                }
            };
            if self.stopped.load(Ordering::Acquire) {
                out.extend(chunk.iter().map(|_| Ingested::Failed {
                    reason: "the node stopped after a storage failure".into(),
                }));
                continue;
            }
            let mut results = Vec::with_capacity(chunk.len());
            let mut prepared = Vec::new();
            {
                let mut ledger = self.ledger();
                for (event, role) in chunk {
                    let r = match ledger.ingest(event, role, &self.store) {
                        Ok(Ingest::New(p)) => {
                            prepared.push(*p);
                            Ingested::Stored { fork: None }
                        }
                        Ok(Ingest::Fork { prepared: p, held }) => {
                            prepared.push(*p);
                            Ingested::Stored { fork: Some(held) }
                        }
                        Ok(Ingest::Duplicate) => Ingested::Duplicate,
                        Ok(Ingest::Gap { from, to }) => Ingested::Gap { from, to },
                        Ok(Ingest::MissingParents { missing }) => {
                            Ingested::MissingParents { missing }
                        }
                        Ok(Ingest::Rejected { reason }) => Ingested::Rejected { reason },
                        Err(e) => Ingested::Failed {
                            reason: e.to_string(),
                        },
                    };
                    results.push(r);
                }
                if prepared.is_empty() {
                    drop(permit);
                } else {
                    let (reply, answer) = oneshot::channel();
                    // Sent under the lock: queue order is sequencing order.
                    self.writer.queued.fetch_add(1, Ordering::AcqRel);
                    permit.send(Msg::Job(Job { prepared, reply }));
                    pending.push((results.len(), answer));
                }
            }
            out.extend(results);
        }
        // Stored results are true only once their group is durable.
        let mut failed: Option<String> = None;
        for (_, answer) in pending {
            let outcome = answer
                .await
                .unwrap_or_else(|_| Err("the committer stopped".into()));
            if let Err(e) = outcome {
                failed = Some(e);
            }
        }
        if let Some(reason) = failed {
            for r in &mut out {
                if matches!(r, Ingested::Stored { .. }) {
                    *r = Ingested::Failed {
                        reason: reason.clone(),
                    };
                }
            }
        }
        out
    }
}

/// Replicated events decided under one hold of the ledger lock.
pub const INGEST_CHUNK: usize = 256;

/// How long a read waits for the index to catch up with durable appends.
pub const CATCH_UP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Drafts decided under one hold of the ledger lock (an `AppendBatch` is split into chunks
/// of this size so appends from other clients interleave).
pub const PREPARE_CHUNK: usize = 32;

struct Committer {
    rx: mpsc::Receiver<Msg>,
    writer: Arc<Writer>,
    group_max: usize,
    indexer: Option<std::thread::JoinHandle<()>>,
}

/// A durable group on its way to the index.
struct Durable {
    records: Vec<Record>,
    meta: Vec<Done>,
    written: crate::store::Written,
}

/// Events durable but not yet indexed before the committer waits for the indexer. Appends
/// are answered at durability, so without this bound a fast uploader would fill memory
/// with groups the index has not caught up with (a single larger group still passes when
/// nothing is waiting).
const INDEX_BACKLOG_EVENTS: u64 = 8192;

/// Events handed to the indexer and not yet indexed, shared by the committer (which waits
/// on it) and the indexer (which releases it).
#[derive(Default)]
struct Backlog {
    events: Mutex<u64>,
    released: std::sync::Condvar,
}

impl Backlog {
    /// Waits until `n` more events fit (or the backlog is empty), then counts them.
    fn acquire(&self, n: u64) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        while *events > 0 && *events + n > INDEX_BACKLOG_EVENTS {
            events = self
                .released
                .wait(events)
                .unwrap_or_else(|p| p.into_inner());
        }
        *events += n;
    }

    /// Counts `n` more events if they fit now (or the backlog is empty).
    fn try_acquire(&self, n: u64) -> bool {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if *events > 0 && *events + n > INDEX_BACKLOG_EVENTS {
            return false;
        }
        *events += n;
        true
    }

    fn release(&self, n: u64) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        *events = events.saturating_sub(n);
        self.released.notify_all();
    }
}

/// A group smaller than this waits up to [`GATHER_WAIT`] for more appends, when the
/// previous group showed concurrent appenders.
const GATHER_EVENTS: usize = 16;
const GATHER_WAIT: std::time::Duration = std::time::Duration::from_micros(200);

impl Committer {
    /// Takes the jobs already queued, up to the group limit.
    fn gather(&mut self, jobs: &mut Vec<Job>, n: &mut usize) {
        while *n < self.group_max {
            match self.rx.try_recv() {
                Ok(Msg::Job(job)) => {
                    *n += job.prepared.len();
                    jobs.push(job);
                }
                // Jobs already queued still come out of a closed channel.
                Ok(Msg::Close) => self.rx.close(),
                Err(_) => break,
            }
        }
    }

    fn run(mut self) {
        let w = self.writer.clone();
        // Ends when every sender is gone, or after `Close` once the queue is empty.
        while let Some(msg) = self.rx.blocking_recv() {
            let first = match msg {
                Msg::Job(job) => job,
                Msg::Close => {
                    self.rx.close();
                    continue;
                }
            };
            let mut n = first.prepared.len();
            let mut jobs = vec![first];
            self.gather(&mut jobs, &mut n);
            // Under concurrent load a group that is still small waits a moment for the
            // appends being decided right now: one fdatasync then serves them all, and the
            // wait costs less than the sync it saves. A lone appender never waits.
            if n < GATHER_EVENTS && w.last_group.load(Ordering::Relaxed) > 1 {
                std::thread::sleep(GATHER_WAIT);
                self.gather(&mut jobs, &mut n);
            }
            let n_jobs = jobs.len();
            let mut replies = Vec::with_capacity(n_jobs);
            let group = Group::of(jobs.into_iter().flat_map(|job| {
                replies.push(job.reply);
                job.prepared
            }));
            let outcome = if w.stopped.load(Ordering::Acquire) {
                Err("the node stopped after a storage failure".to_owned())
            } else {
                w.backlog.acquire(n as u64);
                let _turn = w.turn.lock().unwrap_or_else(|p| p.into_inner());
                w.write_group(group, || {
                    for reply in replies.drain(..) {
                        let _ = reply.send(Ok(()));
                    }
                })
            };
            w.queued.fetch_sub(n_jobs, Ordering::AcqRel);
            if let Err(e) = outcome {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
        drop(w.index_tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(indexer) = self.indexer.take() {
            if indexer.join().is_err() {
                tracing::error!("the indexer thread panicked");
            }
        }
    }
}

/// Indexes durable groups in write order, then makes them visible: readers' committed
/// marks, the retry check's request ids, and watchers.
struct Indexer {
    rx: std::sync::mpsc::Receiver<Durable>,
    hurry: Arc<Hurry>,
    store: Arc<Store>,
    ledger: Arc<Mutex<Ledger>>,
    committed: broadcast::Sender<Arc<Committed>>,
    stopped: Arc<AtomicBool>,
    shutdown: CancellationToken,
    indexed_groups: tokio::sync::watch::Sender<u64>,
    backlog: Arc<Backlog>,
}

/// Durable groups indexed in one sled batch when the indexer has fallen behind.
const INDEX_BATCH_GROUPS: usize = 16;

/// An index batch smaller than this waits up to [`INDEX_GATHER_WAIT`] for more groups,
/// unless a reader is waiting for it.
const INDEX_GATHER_EVENTS: usize = 64;
const INDEX_GATHER_WAIT: std::time::Duration = std::time::Duration::from_millis(2);

/// A read's request that the indexer index what it holds now instead of gathering more.
#[derive(Default)]
struct Hurry {
    asked: Mutex<bool>,
    cv: std::sync::Condvar,
}

impl Hurry {
    fn ask(&self) {
        *self.asked.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cv.notify_one();
    }

    /// Waits until asked or `timeout` passed; clears the request.
    fn wait(&self, timeout: std::time::Duration) {
        let asked = self.asked.lock().unwrap_or_else(|p| p.into_inner());
        let (mut asked, _) = self
            .cv
            .wait_timeout_while(asked, timeout, |asked| !*asked)
            .unwrap_or_else(|p| p.into_inner());
        *asked = false;
    }
}

impl Indexer {
    fn gather(&self, groups: &mut Vec<Durable>) {
        while groups.len() < INDEX_BATCH_GROUPS {
            match self.rx.try_recv() {
                Ok(g) => groups.push(g),
                Err(_) => break,
            }
        }
    }

    fn run(self) {
        while let Ok(first) = self.rx.recv() {
            let mut groups = vec![first];
            self.gather(&mut groups);
            // sled spends roughly the same on a batch of one event as on one of hundreds,
            // and its I/O threads wake per batch: small groups wait a moment to share one.
            // Appends are already answered; a read that waits for them cuts the wait short.
            // (A condition variable rather than the channel: groups sent meanwhile must not
            // wake this thread one by one.)
            if groups.iter().map(|g| g.records.len()).sum::<usize>() < INDEX_GATHER_EVENTS {
                self.hurry.wait(INDEX_GATHER_WAIT);
                self.gather(&mut groups);
            }
            let refs: Vec<(&[Record], &crate::store::Written)> = groups
                .iter()
                .map(|g| (g.records.as_slice(), &g.written))
                .collect();
            let n_events: u64 = groups.iter().map(|g| g.records.len() as u64).sum();
            if let Err(e) = self.store.index_groups(&refs) {
                tracing::error!(error = %e, "index failure: the events are durable in the log but not indexed; shutting down, a restart replays them");
                self.stopped.store(true, Ordering::Release);
                self.shutdown.cancel();
                // Dropping the receiver makes the committer's next send fail; never leave
                // it waiting for room.
                self.backlog.release(u64::MAX);
                return;
            }
            self.backlog.release(n_events);
            {
                let mut ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
                for g in &groups {
                    ledger.committed(&g.meta);
                }
            }
            let n_groups = groups.len() as u64;
            for group in groups {
                let store_positions = group.written.store_positions();
                for (i, (record, done)) in group.records.into_iter().zip(group.meta).enumerate() {
                    // No receiver is fine: nobody is watching.
                    let _ = self.committed.send(Arc::new(Committed {
                        coi: done.coi,
                        position: done.position,
                        store_position: store_positions.get(&i).copied().unwrap_or(0),
                        event: record.event,
                    }));
                }
            }
            self.indexed_groups.send_modify(|v| *v += n_groups);
        }
    }
}
