//! The alert board: which alerts are open now, raised and cleared as chains change and as
//! time passes.
//!
//! What decides is ledger-core (`ledger_core::alert`): given a chain's projection, its
//! findings and an instant, it says which alerts hold. This module owns the clock and the
//! bookkeeping: it judges a chain again when one of its events is committed and when its
//! next alert change falls due, diffs the answer against the alerts it holds, stamps raise
//! and clear times, and publishes each change (watchers, a log line, gauges by kind).
//!
//! Invariants:
//! - An alert is raised once and cleared once per key: a key that holds again after a clear
//!   is a new alert with a new raise time.
//! - Judging happens at most [`TICK`] after a due time or a commit, so an alert is raised
//!   within a second of the append or of the deadline crossing.
//! - Memory is bounded by the open alerts (at most a few per live unit) plus
//!   [`CLEARED_KEPT`] cleared ones; the change broadcast is bounded and a watcher that
//!   falls behind is sent a fresh snapshot (`grpc::service`), never buffered.

use crate::pipeline::{now, Pipeline};
use ledger_core::alert::{self, ForkSeen};
use ledger_core::{Alert, AlertKind, AlertPolicy, AlertSeverity, Coi, SiteId, Timestamp};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// How often due times are checked.
pub const TICK: Duration = Duration::from_millis(200);
/// Cleared alerts kept for ListAlerts.
pub const CLEARED_KEPT: usize = 1000;
/// Changes a watcher may fall behind before it is sent a snapshot again.
pub const CHANGES_CAPACITY: usize = 4096;
/// Sites (forks, silence) are judged again at least this often.
const SITE_JUDGEMENT_EVERY: Duration = Duration::from_secs(1);
/// Chains judged under one hold of the ledger lock.
const JUDGE_CHUNK: usize = 512;

/// An alert with the node's raise and clear times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub alert: Alert,
    pub raised: Timestamp,
    pub cleared: Option<Timestamp>,
}

impl Held {
    /// Most urgent first: critical before warning, then the oldest condition.
    pub fn urgency(&self) -> (std::cmp::Reverse<AlertSeverity>, Timestamp) {
        (
            std::cmp::Reverse(self.alert.key.kind.severity()),
            self.alert.since,
        )
    }
}

#[derive(Default)]
struct State {
    by_chain: HashMap<Coi, Vec<Held>>,
    sites: Vec<Held>,
    cleared: VecDeque<Held>,
    counts: BTreeMap<AlertKind, i64>,
}

/// The open alerts, shared by the engine (writer) and the API and page (readers).
pub struct Board {
    state: Mutex<State>,
    changes: broadcast::Sender<Arc<Held>>,
}

impl std::fmt::Debug for Board {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Board").finish_non_exhaustive()
    }
}

impl Default for Board {
    fn default() -> Board {
        Board::new()
    }
}

impl Board {
    pub fn new() -> Board {
        Board {
            state: Mutex::new(State::default()),
            changes: broadcast::channel(CHANGES_CAPACITY).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every open alert, most urgent first.
    pub fn open(&self) -> Vec<Held> {
        open_in(&self.lock())
    }

    /// The alerts cleared most recently, newest first.
    pub fn cleared(&self) -> Vec<Held> {
        self.lock().cleared.iter().rev().cloned().collect()
    }

    /// Open alerts per chain (for worklists).
    pub fn counts_by_chain(&self) -> HashMap<Coi, usize> {
        self.lock()
            .by_chain
            .iter()
            .map(|(c, v)| (c.clone(), v.len()))
            .collect()
    }

    /// The open alerts and a receiver of every change after them, taken together so that
    /// nothing falls between the two.
    pub fn watch(&self) -> (Vec<Held>, broadcast::Receiver<Arc<Held>>) {
        // Changes are sent under the lock (see `replace`): a receiver made under it sees
        // exactly the changes after this snapshot.
        let state = self.lock();
        (open_in(&state), self.changes.subscribe())
    }

    /// Replaces what is held for `coi` (or, with `None`, for the sites) by `judged`.
    fn replace(&self, coi: Option<&Coi>, judged: Vec<Alert>, at: Timestamp) {
        let mut state = self.lock();
        let held = match coi {
            Some(c) => state.by_chain.remove(c).unwrap_or_default(),
            None => std::mem::take(&mut state.sites),
        };
        let before: Vec<Alert> = held.iter().map(|h| h.alert.clone()).collect();
        let (raised, cleared) = alert::diff(&before, &judged);
        let raised: Vec<Alert> = raised.into_iter().cloned().collect();
        let cleared_keys: HashSet<_> = cleared.iter().map(|a| a.key.clone()).collect();
        let mut changes = Vec::new();
        let mut kept = Vec::with_capacity(judged.len());
        for h in held {
            if cleared_keys.contains(&h.alert.key) {
                let done = Held {
                    cleared: Some(at),
                    ..h
                };
                *state.counts.entry(done.alert.key.kind).or_default() -= 1;
                tracing::info!(kind = %done.alert.key.kind, coi = ?done.alert.key.coi.as_ref().map(ToString::to_string), unit = ?done.alert.key.unit.as_ref().map(ToString::to_string), site = ?done.alert.key.site.as_ref().map(ToString::to_string), "alert cleared: {}", done.alert.message);
                state.cleared.push_back(done.clone());
                if state.cleared.len() > CLEARED_KEPT {
                    state.cleared.pop_front();
                }
                changes.push(done);
            } else {
                // Still holds: keep the raise time, take the newer sentence (time left).
                let now_text = judged
                    .iter()
                    .find(|a| a.key == h.alert.key)
                    .map(|a| a.message.clone());
                let mut h = h;
                if let Some(m) = now_text {
                    h.alert.message = m;
                }
                kept.push(h);
            }
        }
        for a in raised {
            let h = Held {
                alert: a,
                raised: at,
                cleared: None,
            };
            *state.counts.entry(h.alert.key.kind).or_default() += 1;
            match h.alert.key.kind.severity() {
                AlertSeverity::Critical => {
                    tracing::error!(kind = %h.alert.key.kind, coi = ?h.alert.key.coi.as_ref().map(ToString::to_string), unit = ?h.alert.key.unit.as_ref().map(ToString::to_string), site = ?h.alert.key.site.as_ref().map(ToString::to_string), since = %h.alert.since, "ALERT raised: {}", h.alert.message)
                }
                AlertSeverity::Warning => {
                    tracing::warn!(kind = %h.alert.key.kind, coi = ?h.alert.key.coi.as_ref().map(ToString::to_string), unit = ?h.alert.key.unit.as_ref().map(ToString::to_string), site = ?h.alert.key.site.as_ref().map(ToString::to_string), since = %h.alert.since, "alert raised: {}", h.alert.message)
                }
            }
            changes.push(h.clone());
            kept.push(h);
        }
        kept.sort_by(|a, b| a.alert.key.cmp(&b.alert.key));
        if !kept.is_empty() {
            match coi {
                Some(c) => {
                    state.by_chain.insert(c.clone(), kept);
                }
                None => state.sites = kept,
            }
        }
        if !changes.is_empty() {
            for (kind, n) in &state.counts {
                metrics::gauge!("ledger_alerts_open", "kind" => kind.as_str()).set(*n as f64);
            }
        }
        // Sent under the lock, so a watcher's snapshot and its changes never overlap.
        for h in changes {
            let _ = self.changes.send(Arc::new(h));
        }
    }
}

/// Every open alert in `state`, most urgent first.
fn open_in(state: &State) -> Vec<Held> {
    let mut all: Vec<Held> = state
        .by_chain
        .values()
        .flatten()
        .chain(state.sites.iter())
        .cloned()
        .collect();
    all.sort_by(|a, b| (a.urgency(), &a.alert.key).cmp(&(b.urgency(), &b.alert.key)));
    all
}

/// When each remote site was last heard from (anything received by replication), and the
/// forks this node has proof of.
#[derive(Debug, Default)]
pub struct Heard {
    sites: Mutex<BTreeMap<SiteId, Timestamp>>,
}

impl Heard {
    /// Starts the clock for sites not heard from yet: silence is counted from `at`.
    pub fn expect(&self, site: &SiteId, at: Timestamp) {
        self.sites
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(site.clone())
            .or_insert(at);
    }

    pub fn heard(&self, site: &SiteId, at: Timestamp) {
        let mut sites = self.sites.lock().unwrap_or_else(|p| p.into_inner());
        let t = sites.entry(site.clone()).or_insert(at);
        *t = (*t).max(at);
    }

    fn snapshot(&self) -> Vec<(SiteId, Timestamp)> {
        self.sites
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(s, t)| (s.clone(), *t))
            .collect()
    }
}

/// Keeps the board up to date until `shutdown`: judges every chain at start, then each
/// chain again when one of its events is committed or its next change falls due.
pub async fn run(
    board: Arc<Board>,
    pipeline: Pipeline,
    policy: AlertPolicy,
    heard: Arc<Heard>,
    shutdown: CancellationToken,
) {
    let mut committed = pipeline.subscribe();
    let mut dirty: HashSet<Coi> = pipeline.ledger().chains().keys().cloned().collect();
    let mut due: BTreeSet<(Timestamp, Coi)> = BTreeSet::new();
    let mut due_of: HashMap<Coi, Timestamp> = HashMap::new();
    let mut forks_seen: BTreeMap<(SiteId, u64), Timestamp> = BTreeMap::new();
    let mut last_site_judgement: Option<std::time::Instant> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let at = now();
        if !dirty.is_empty() {
            let mut list: Vec<Coi> = dirty.drain().collect();
            list.sort();
            for chunk in list.chunks(JUDGE_CHUNK) {
                let judged: Vec<(Coi, Vec<Alert>, Option<Timestamp>)> = {
                    let ledger = pipeline.ledger();
                    chunk
                        .iter()
                        .map(|coi| match ledger.chain(coi).filter(|c| c.committed > 0) {
                            Some(c) => (
                                coi.clone(),
                                alert::chain_alerts(&c.projection, &c.findings, at, &policy),
                                alert::next_alert_change(&c.projection, at, &policy),
                            ),
                            None => (coi.clone(), Vec::new(), None),
                        })
                        .collect()
                };
                for (coi, alerts, next) in judged {
                    if let Some(old) = due_of.remove(&coi) {
                        due.remove(&(old, coi.clone()));
                    }
                    if let Some(t) = next {
                        due.insert((t, coi.clone()));
                        due_of.insert(coi.clone(), t);
                    }
                    board.replace(Some(&coi), alerts, at);
                }
            }
        }
        // Forks and silent sites: cheap, judged on a new fork and at least once a second
        // (heard times move without a commit: heartbeats).
        let forks: Vec<(SiteId, u64)> = pipeline.ledger().forks().keys().cloned().collect();
        let new_fork = forks.iter().any(|k| !forks_seen.contains_key(k));
        if new_fork || last_site_judgement.is_none_or(|t| t.elapsed() >= SITE_JUDGEMENT_EVERY) {
            last_site_judgement = Some(std::time::Instant::now());
            for k in forks {
                forks_seen.entry(k).or_insert(at);
            }
            let seen: Vec<ForkSeen> = forks_seen
                .iter()
                .map(|((site, seq), t)| ForkSeen {
                    site: site.clone(),
                    seq: *seq,
                    at: *t,
                })
                .collect();
            board.replace(
                None,
                alert::site_alerts(&seen, &heard.snapshot(), at, &policy),
                at,
            );
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            msg = committed.recv() => match msg {
                Ok(c) => {
                    dirty.insert(c.coi.clone());
                    // Take whatever else is waiting: one judgement per chain per round.
                    loop {
                        match committed.try_recv() {
                            Ok(c) => { dirty.insert(c.coi.clone()); }
                            Err(broadcast::error::TryRecvError::Lagged(_)) => {
                                dirty.extend(pipeline.ledger().chains().keys().cloned());
                            }
                            Err(_) => break,
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    dirty.extend(pipeline.ledger().chains().keys().cloned());
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick() => {
                let at = now();
                while let Some((t, coi)) = due.first().cloned() {
                    if t > at {
                        break;
                    }
                    due.remove(&(t, coi.clone()));
                    due_of.remove(&coi);
                    dirty.insert(coi);
                }
            }
        }
    }
}
