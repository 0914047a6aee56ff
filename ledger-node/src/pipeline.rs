//! Between the gRPC handlers and the disk.
//!
//! An append is decided under the ledger lock ([`Ledger::prepare`]) and, still under the
//! lock, queued to the committer, so the queue's order is the order events were sequenced
//! (a site's seq n is always written before seq n+1). The committer is one thread: it takes
//! every job waiting (up to the group limit), writes them to the log under one fdatasync,
//! indexes them, and only then answers all of them (group commit). A slot in the bounded
//! queue is reserved before deciding, so a full queue refuses an append before any state
//! changes.
//!
//! If the disk fails, the in-memory state is ahead of the log: the node answers every
//! waiting and later append with an error, stops, and rebuilds from the log on restart.

use crate::ledger::{AppendError, Ledger, Outcome, Prepared, Receipt};
use crate::store::{Record, Store};
use ledger_core::{Coi, Event, Timestamp};
use proto::convert::AppendDraft;
use std::sync::atomic::{AtomicBool, Ordering};
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
    pub position: u64,
    pub event: Event,
}

struct Job {
    prepared: Vec<Prepared>,
    reply: oneshot::Sender<Result<(), String>>,
}

/// The append path and the shared state behind the gRPC service.
#[derive(Clone)]
pub struct Pipeline {
    ledger: Arc<Mutex<Ledger>>,
    store: Arc<Store>,
    jobs: mpsc::Sender<Job>,
    committed: broadcast::Sender<Arc<Committed>>,
    stopped: Arc<AtomicBool>,
    queue_depth: usize,
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
    /// Starts the committer thread. It ends when every `Pipeline` clone is dropped and the
    /// queue is drained; join the returned handle to wait for the last fdatasync.
    pub fn start(
        ledger: Ledger,
        store: Arc<Store>,
        queue_depth: usize,
        group_max: usize,
        shutdown: CancellationToken,
    ) -> (Pipeline, std::thread::JoinHandle<()>) {
        let ledger = Arc::new(Mutex::new(ledger));
        let (tx, rx) = mpsc::channel(queue_depth);
        let (committed, _) = broadcast::channel(WATCH_BROADCAST_CAPACITY);
        let stopped = Arc::new(AtomicBool::new(false));
        let committer = Committer {
            rx,
            store: store.clone(),
            ledger: ledger.clone(),
            committed: committed.clone(),
            stopped: stopped.clone(),
            group_max,
            shutdown,
        };
        let handle = std::thread::Builder::new()
            .name("committer".into())
            .spawn(move || committer.run())
            .expect("spawning the committer thread");
        (
            Pipeline {
                ledger,
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

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Committed>> {
        self.committed.subscribe()
    }

    /// Appends drafts in order; each gets its own answer, once durable.
    pub async fn append(&self, drafts: Vec<AppendDraft>) -> Vec<Result<Receipt, AppendError>> {
        let n = drafts.len();
        if self.stopped.load(Ordering::Acquire) {
            return (0..n).map(|_| Err(AppendError::Stopped)).collect();
        }
        let permit = match self.jobs.try_reserve() {
            Ok(p) => p,
            Err(mpsc::error::TrySendError::Full(())) => {
                return (0..n)
                    .map(|_| {
                        Err(AppendError::QueueFull {
                            depth: self.queue_depth,
                        })
                    })
                    .collect()
            }
            Err(mpsc::error::TrySendError::Closed(())) => {
                return (0..n).map(|_| Err(AppendError::Stopped)).collect()
            }
        };
        let now = now();
        let mut results: Vec<Option<Result<Receipt, AppendError>>> = Vec::with_capacity(n);
        let mut prepared = Vec::new();
        let mut slots = Vec::new();
        let (reply, answer) = oneshot::channel();
        {
            let mut ledger = self.ledger();
            for draft in drafts {
                match ledger.prepare(draft, now, &self.store) {
                    Ok(Outcome::New(p)) => {
                        slots.push((results.len(), p.receipt.clone()));
                        results.push(None);
                        prepared.push(*p);
                    }
                    Ok(Outcome::Duplicate(r)) => results.push(Some(Ok(r))),
                    Err(e) => results.push(Some(Err(e))),
                }
            }
            if prepared.is_empty() {
                drop(permit);
            } else {
                // Sent under the lock: queue order is sequencing order.
                permit.send(Job { prepared, reply });
            }
        }
        if !slots.is_empty() {
            let outcome = answer
                .await
                .unwrap_or_else(|_| Err("the committer stopped".into()));
            for (i, receipt) in slots {
                results[i] = Some(match &outcome {
                    Ok(()) => Ok(receipt),
                    Err(e) => Err(AppendError::CommitFailed { reason: e.clone() }),
                });
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(AppendError::Stopped)))
            .collect()
    }
}

struct Committer {
    rx: mpsc::Receiver<Job>,
    store: Arc<Store>,
    ledger: Arc<Mutex<Ledger>>,
    committed: broadcast::Sender<Arc<Committed>>,
    stopped: Arc<AtomicBool>,
    group_max: usize,
    shutdown: CancellationToken,
}

impl Committer {
    fn run(mut self) {
        while let Some(first) = self.rx.blocking_recv() {
            let mut n = first.prepared.len();
            let mut jobs = vec![first];
            while n < self.group_max {
                match self.rx.try_recv() {
                    Ok(job) => {
                        n += job.prepared.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            if self.stopped.load(Ordering::Acquire) {
                for job in jobs {
                    let _ = job
                        .reply
                        .send(Err("the node stopped after a storage failure".into()));
                }
                continue;
            }
            let mut records: Vec<Record> = Vec::with_capacity(n);
            let mut meta = Vec::with_capacity(n);
            let mut replies = Vec::with_capacity(jobs.len());
            for job in jobs {
                for p in job.prepared {
                    meta.push((
                        p.coi,
                        p.position,
                        p.receipt.site,
                        p.record.request_id.clone(),
                    ));
                    records.push(p.record);
                }
                replies.push(job.reply);
            }
            let started = std::time::Instant::now();
            match self.store.commit(&records) {
                Ok(()) => {
                    COMMIT_STATS.n_commits.fetch_add(1, Ordering::Relaxed);
                    COMMIT_STATS
                        .n_events
                        .fetch_add(records.len() as u64, Ordering::Relaxed);
                    metrics::counter!("ledger_commits_total").increment(1);
                    metrics::histogram!("ledger_commit_group_events").record(records.len() as f64);
                    metrics::histogram!("ledger_commit_seconds")
                        .record(started.elapsed().as_secs_f64());
                    self.ledger
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .committed(&meta);
                    for reply in replies {
                        let _ = reply.send(Ok(()));
                    }
                    for (record, (coi, position, _, _)) in records.into_iter().zip(meta) {
                        // No receiver is fine: nobody is watching.
                        let _ = self.committed.send(Arc::new(Committed {
                            coi,
                            position,
                            event: record.event,
                        }));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "storage failure: refusing all further appends and shutting down; restart the node to rebuild from the log");
                    self.stopped.store(true, Ordering::Release);
                    self.shutdown.cancel();
                    for reply in replies {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
        }
    }
}
