//! The store against real sled in temp dirs: what comes back after commits, reopens, torn
//! and damaged tails, lost or stale indexes, and rebuilds.
//!
//! Method: every test keeps a reference `Vec<Record>` of what was committed and compares the
//! store's complete observable state (`answers`: every lookup over a fixed universe of ids,
//! feed positions, request ids, units and chains) with what the reference implies
//! (`expected`). Crashes are simulated the way they look on disk: bytes of a record written
//! past the last synced one (whole, cut short, or damaged) with an index that never saw it.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns: a panic is a test failure with a location"
)]

use ledger_core::{
    Approval, Body, Coi, Event, EventId, Meaning, NetworkId, NewUnit, OperatorId, SecretKey, Seq,
    Signer, SiteId, Timestamp, UnitId, UnsignedEvent,
};
use ledger_node::store::{
    CorruptDetail, OpenReport, Record, Store, StoreConfig, StoreError, COMMIT_RECORDS_MAX,
    PAYLOAD_BYTES_MAX,
};
use proptest::prelude::*;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A store whose log file ends at its last record, so tests can tear records at the end of
/// the file. [`preallocated`] is the node's configuration.
fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        dir: dir.join("store"),
        sled_cache_bytes: 4 * 1024 * 1024,
        preallocate: false,
    }
}

/// A store whose log keeps zeros ahead of its last record, as the node runs it.
fn preallocated(dir: &Path) -> StoreConfig {
    StoreConfig {
        preallocate: true,
        ..config(dir)
    }
}

/// Where the log's records end (before any preallocated zeros).
fn log_end(cfg: &StoreConfig) -> u64 {
    ledger_node::store::scan_log(&cfg.dir, |_, _| {})
        .unwrap()
        .valid_end
}

fn file_len(cfg: &StoreConfig) -> u64 {
    std::fs::metadata(log_path(cfg)).unwrap().len()
}

fn log_path(cfg: &StoreConfig) -> PathBuf {
    cfg.dir.join("events.log")
}

fn index_path(cfg: &StoreConfig) -> PathBuf {
    cfg.dir.join("index")
}

/// Opens the store and returns what `visit` saw.
fn open(cfg: &StoreConfig) -> (Store, OpenReport, Vec<Record>) {
    let mut seen = Vec::new();
    let (store, report) = Store::open(cfg, |r| seen.push(r.clone())).unwrap();
    (store, report, seen)
}

fn open_err(cfg: &StoreConfig) -> StoreError {
    match Store::open(cfg, |_| {}) {
        Ok(_) => panic!("open succeeded, expected an error"),
        Err(e) => e,
    }
}

fn rec(event: &Event, request_id: Option<&str>) -> Record {
    Record {
        event: event.clone(),
        request_id: request_id.map(str::to_owned),
    }
}

fn ids(records: &[Record]) -> Vec<EventId> {
    records.iter().map(|r| r.event.id()).collect()
}

/// Events from three sites about three patients, with every body that creates units
/// (collection, transformation, reassignment), a fork (two events at one feed position) and
/// notes. Signed with throwaway keys; the store does not judge, it only has to decode them.
fn pool() -> &'static [Event] {
    static POOL: OnceLock<Vec<Event>> = OnceLock::new();
    POOL.get_or_init(|| {
        let network = NetworkId::parse("store-test").unwrap();
        let sites: Vec<(SiteId, SecretKey)> = ["clinic-a", "depot-1", "mfg-1"]
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    SiteId::parse(s).unwrap(),
                    SecretKey::from_seed(&[i as u8 + 1; 32]),
                )
            })
            .collect();
        let cois: Vec<Coi> = ["CHA999926AAA001", "CHA999926AAA002", "CHB123426XYZ999"]
            .iter()
            .map(|c| Coi::parse(c).unwrap())
            .collect();
        let unit = |s: &str| UnitId::parse(s).unwrap();
        let new_unit = |s: &str| NewUnit {
            unit: unit(s),
            stability_deadline: Timestamp(1_900_000_000_000),
            temp_min_centi: -19_000,
            temp_max_centi: -15_000,
        };
        let mut heads: Vec<(u64, Option<EventId>)> = vec![(0, None); sites.len()];
        let mut events = Vec::new();
        let mut make = |site: usize, coi: usize, body: Body, fork: bool| {
            let (seq, prev) = if fork {
                // Same position as the site's latest event: an equivocation.
                let (seq, _) = heads[site];
                let prev = events
                    .iter()
                    .rev()
                    .find(|e: &&Event| e.author() == &sites[site].0 && e.seq().0 == seq - 1)
                    .map(|e| e.id());
                (seq, prev)
            } else {
                (heads[site].0 + 1, heads[site].1)
            };
            let event = UnsignedEvent {
                network: network.clone(),
                author: sites[site].0.clone(),
                seq: Seq(seq),
                prev,
                key: sites[site].1.public(),
                coi: cois[coi].clone(),
                parents: Vec::new(),
                occurred_at: Timestamp(1_800_000_000_000 + events.len() as i64),
                recorded_at: Timestamp(1_800_000_000_000 + events.len() as i64),
                signer: Signer {
                    operator: OperatorId::parse("op-1").unwrap(),
                    printed_name: "A. Operator".into(),
                    meaning: Meaning::Performed,
                },
                body,
            }
            .sign(&sites[site].1);
            if !fork {
                heads[site] = (seq, Some(event.id()));
            }
            events.push(event);
        };
        let note = |t: &str| Body::Note { text: t.into() };
        make(
            0,
            0,
            Body::Collection {
                units: vec![new_unit("BAG-A1")],
                dins: Vec::new(),
            },
            false,
        );
        make(
            0,
            1,
            Body::Collection {
                units: vec![new_unit("BAG-B1"), new_unit("BAG-B2")],
                dins: Vec::new(),
            },
            false,
        );
        make(1, 0, note("received"), false);
        make(0, 0, note("fork source"), false);
        make(0, 0, note("the other branch of a fork"), true);
        make(
            2,
            0,
            Body::Transformation {
                inputs: vec![unit("BAG-A1")],
                outputs: vec![new_unit("DP-A1"), new_unit("DP-A2")],
            },
            false,
        );
        make(
            2,
            2,
            Body::Collection {
                units: vec![new_unit("BAG-C1")],
                dins: Vec::new(),
            },
            false,
        );
        make(
            2,
            2,
            Body::Reassignment {
                from_coi: cois[0].clone(),
                units: vec![new_unit("DP-A2")],
                reason: "backup lot".into(),
                approvals: vec![Approval {
                    operator: OperatorId::parse("qa-1").unwrap(),
                    printed_name: "Q. A.".into(),
                    qa: true,
                }],
            },
            false,
        );
        for i in 0..12 {
            make(
                i % 3,
                i % 3,
                note(&format!("note {i} {}", "x".repeat(i * 7))),
                false,
            );
        }
        events
    })
}

const REQUEST_IDS: [&str; 4] = ["req-1", "req-2", "req-3", "a-longer-request-id-0123456789"];

/// Everything a reader can ask, over a fixed universe of keys.
#[derive(Debug, PartialEq, Eq)]
struct Answers {
    n_events: u64,
    events: Vec<Option<Vec<u8>>>,
    feeds: Vec<Option<EventId>>,
    chains: Vec<(u64, Vec<(u64, EventId)>)>,
    requests: Vec<Option<EventId>>,
    units: Vec<Option<Coi>>,
}

struct Universe {
    events: Vec<Event>,
    sites: Vec<SiteId>,
    cois: Vec<Coi>,
    units: Vec<UnitId>,
}

impl Universe {
    fn of(events: &[Event]) -> Universe {
        let mut sites: Vec<SiteId> = events.iter().map(|e| e.author().clone()).collect();
        sites.sort();
        sites.dedup();
        let mut cois: Vec<Coi> = events.iter().map(|e| e.coi().clone()).collect();
        cois.push(Coi::parse("CHZ999926NOPE00").unwrap());
        cois.sort();
        cois.dedup();
        let mut units: Vec<UnitId> = events
            .iter()
            .flat_map(|e| created(e).into_iter().cloned())
            .collect();
        units.push(UnitId::parse("NO-SUCH-UNIT").unwrap());
        units.sort();
        units.dedup();
        Universe {
            events: events.to_vec(),
            sites,
            cois,
            units,
        }
    }

    fn feed_keys(&self) -> Vec<(SiteId, Seq)> {
        let mut keys: Vec<(SiteId, Seq)> = self
            .events
            .iter()
            .map(|e| (e.author().clone(), e.seq()))
            .collect();
        keys.extend(self.sites.iter().map(|s| (s.clone(), Seq(10_000))));
        keys.sort();
        keys.dedup();
        keys
    }

    fn request_keys(&self) -> Vec<(SiteId, &'static str)> {
        self.sites
            .iter()
            .flat_map(|s| REQUEST_IDS.iter().map(move |r| (s.clone(), *r)))
            .collect()
    }
}

fn created(e: &Event) -> Vec<&UnitId> {
    match e.body() {
        Body::Collection { units, .. } | Body::Reassignment { units, .. } => {
            units.iter().map(|u| &u.unit).collect()
        }
        Body::Transformation { outputs, .. } => outputs.iter().map(|u| &u.unit).collect(),
        _ => Vec::new(),
    }
}

fn answers(store: &Store, u: &Universe) -> Answers {
    Answers {
        n_events: store.n_events(),
        events: u
            .events
            .iter()
            .map(|e| {
                store
                    .find(e.author(), e.seq(), &e.id())
                    .unwrap()
                    .map(|e| e.bytes().to_vec())
            })
            .collect(),
        feeds: u
            .feed_keys()
            .iter()
            .map(|(s, q)| store.feed_event(s, *q).unwrap())
            .collect(),
        chains: u
            .cois
            .iter()
            .map(|c| {
                let chain: Vec<(u64, EventId)> = store
                    .chain(c, 0, usize::MAX)
                    .unwrap()
                    .into_iter()
                    .map(|(p, e)| (p, e.id()))
                    .collect();
                // Paging gives the same sequence as one read.
                let mut paged = Vec::new();
                loop {
                    let after = paged.last().map_or(0, |(p, _)| *p);
                    let page = store.chain(c, after, 2).unwrap();
                    if page.is_empty() {
                        break;
                    }
                    paged.extend(page.into_iter().map(|(p, e)| (p, e.id())));
                }
                assert_eq!(paged, chain, "paged read of {c}");
                (store.chain_len(c).unwrap(), chain)
            })
            .collect(),
        requests: u
            .request_keys()
            .iter()
            .map(|(s, r)| store.request(s, r).unwrap())
            .collect(),
        units: u.units.iter().map(|x| store.unit_coi(x).unwrap()).collect(),
    }
}

/// What the store must answer after committing exactly `log` (deduplicated, in order).
fn expected(log: &[Record], u: &Universe) -> Answers {
    let first = |f: &dyn Fn(&Record) -> bool| log.iter().find(|r| f(r)).map(|r| r.event.id());
    Answers {
        n_events: log.len() as u64,
        events: u
            .events
            .iter()
            .map(|e| {
                log.iter()
                    .find(|r| r.event.id() == e.id())
                    .map(|r| r.event.bytes().to_vec())
            })
            .collect(),
        feeds: u
            .feed_keys()
            .iter()
            .map(|(s, q)| first(&|r| r.event.author() == s && r.event.seq() == *q))
            .collect(),
        chains: u
            .cois
            .iter()
            .map(|c| {
                let chain: Vec<(u64, EventId)> = log
                    .iter()
                    .filter(|r| r.event.coi() == c)
                    .enumerate()
                    .map(|(i, r)| (i as u64 + 1, r.event.id()))
                    .collect();
                (chain.len() as u64, chain)
            })
            .collect(),
        requests: u
            .request_keys()
            .iter()
            .map(|(s, q)| first(&|r| r.event.author() == s && r.request_id.as_deref() == Some(*q)))
            .collect(),
        units: u
            .units
            .iter()
            .map(|x| {
                log.iter()
                    .rev()
                    .find(|r| created(&r.event).contains(&x))
                    .map(|r| r.event.coi().clone())
            })
            .collect(),
    }
}

#[track_caller]
fn check(store: &Store, log: &[Record], u: &Universe) {
    assert_eq!(answers(store, u), expected(log, u));
}

/// The records of `pool()` with request ids on some of them (never two for one site and id).
fn pool_records() -> Vec<Record> {
    pool()
        .iter()
        .enumerate()
        .map(|(i, e)| {
            rec(
                e,
                if i % 3 == 2 {
                    None
                } else {
                    Some(REQUEST_IDS[i % REQUEST_IDS.len()])
                },
            )
        })
        .collect::<Vec<_>>()
        .into_iter()
        .scan(HashSet::new(), |used, mut r| {
            if let Some(q) = &r.request_id {
                if !used.insert((r.event.author().clone(), q.clone())) {
                    r.request_id = None;
                }
            }
            Some(r)
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A synthetic journey of `n` events, each as a record with its own request id.
fn synth_records(n: usize) -> (fixtures::synth::Synth, Vec<Record>) {
    let synth = fixtures::synth::synth(n);
    let records = synth
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| rec(e, Some(&format!("req-{i}"))))
        .collect();
    (synth, records)
}

/// The framed bytes `records` take in the log: commit them to a scratch store and read them
/// back from its log, so the tests never restate the format.
fn framed(records: &[Record]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (store, ..) = open(&cfg);
    let header_len = std::fs::metadata(log_path(&cfg)).unwrap().len() as usize;
    store.commit(records).unwrap();
    drop(store);
    std::fs::read(log_path(&cfg)).unwrap()[header_len..].to_vec()
}

/// Writes `bytes` right after the log's last record, as a write the crash interrupted
/// would have (over preallocated zeros, if there are any).
/// A store in `dir` holding every pool record, closed: its config, the records, the log.
fn committed_pool(dir: &Path) -> (StoreConfig, Vec<Record>, Vec<u8>) {
    let cfg = config(dir);
    let records = pool_records();
    let (store, ..) = open(&cfg);
    store.commit(&records).unwrap();
    drop(store);
    let log = std::fs::read(log_path(&cfg)).unwrap();
    (cfg, records, log)
}

fn append_raw(cfg: &StoreConfig, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let at = log_end(cfg);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(log_path(cfg))
        .unwrap();
    f.write_all_at(bytes, at).unwrap();
}

#[test]
fn commit_then_reopen_gives_back_everything_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let records = pool_records();
    let u = Universe::of(pool());
    let (store, report, seen) = open(&cfg);
    assert_eq!(
        (
            report.n_records,
            report.cut_bytes,
            report.reindexed,
            seen.len()
        ),
        (0, 0, 0, 0)
    );
    check(&store, &[], &u);
    store.commit(&records[..5]).unwrap();
    store.commit(&records[5..6]).unwrap();
    store.commit(&records[6..]).unwrap();
    check(&store, &records, &u);
    let log_len = std::fs::metadata(log_path(&cfg)).unwrap().len();
    drop(store);

    let (store, report, seen) = open(&cfg);
    assert_eq!(ids(&seen), ids(&records));
    assert_eq!(
        seen.iter()
            .map(|r| r.request_id.clone())
            .collect::<Vec<_>>(),
        records
            .iter()
            .map(|r| r.request_id.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        (
            report.n_records,
            report.log_bytes,
            report.cut_bytes,
            report.reindexed
        ),
        (records.len() as u64, log_len, 0, 0)
    );
    check(&store, &records, &u);
    // The fork keeps the feed position of the event stored first, and both are stored.
    let (first, second) = (&pool()[3], &pool()[4]);
    assert_eq!(
        (first.author(), first.seq()),
        (second.author(), second.seq())
    );
    assert_eq!(
        store.feed_event(first.author(), first.seq()).unwrap(),
        Some(first.id())
    );
    assert_eq!(
        store
            .find(second.author(), second.seq(), &second.id())
            .unwrap()
            .map(|e| e.id()),
        Some(second.id())
    );
    // A reassignment moves a unit to the reassigning chain.
    assert_eq!(
        store.unit_coi(&UnitId::parse("DP-A2").unwrap()).unwrap(),
        Some(pool()[7].coi().clone())
    );
    assert_eq!(
        store.unit_coi(&UnitId::parse("DP-A1").unwrap()).unwrap(),
        Some(pool()[5].coi().clone())
    );
}

#[test]
fn synthetic_journey_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (synth, records) = synth_records(200);
    let u = Universe::of(&synth.events);
    let (store, ..) = open(&cfg);
    for batch in records.chunks(37) {
        store.commit(batch).unwrap();
    }
    check(&store, &records, &u);
    assert_eq!(
        store
            .chain(&synth.coi, 150, 10)
            .unwrap()
            .iter()
            .map(|(p, e)| (*p, e.id()))
            .collect::<Vec<_>>(),
        (151..=160)
            .map(|p| (p, records[p as usize - 1].event.id()))
            .collect::<Vec<_>>()
    );
    assert_eq!(store.chain(&synth.coi, 200, 10).unwrap().len(), 0);
    assert_eq!(store.chain(&synth.coi, u64::MAX, 10).unwrap().len(), 0);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(
            store
                .request(r.event.author(), &format!("req-{i}"))
                .unwrap(),
            Some(r.event.id())
        );
    }
    drop(store);
    let (store, _, seen) = open(&cfg);
    assert_eq!(ids(&seen), ids(&records));
    check(&store, &records, &u);
}

#[test]
fn duplicates_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let records = pool_records();
    let u = Universe::of(pool());
    let (store, ..) = open(&cfg);
    store.commit(&records[..4]).unwrap();
    let len = std::fs::metadata(log_path(&cfg)).unwrap().len();
    // Already stored: nothing is written at all.
    store.commit(&records[2..4]).unwrap();
    assert_eq!(std::fs::metadata(log_path(&cfg)).unwrap().len(), len);
    // Repeated inside a batch, and mixed with stored ones: the new ones only, once each.
    let batch = vec![
        records[1].clone(),
        records[4].clone(),
        records[4].clone(),
        records[5].clone(),
        records[0].clone(),
    ];
    store.commit(&batch).unwrap();
    check(&store, &records[..6], &u);
    drop(store);
    let (store, _, seen) = open(&cfg);
    assert_eq!(ids(&seen), ids(&records[..6]));
    check(&store, &records[..6], &u);
    // After a restart too (the store learns each author's top seq from its scan).
    let len = std::fs::metadata(log_path(&cfg)).unwrap().len();
    store.commit(&records[..6]).unwrap();
    assert_eq!(std::fs::metadata(log_path(&cfg)).unwrap().len(), len);
    check(&store, &records[..6], &u);
}

#[test]
fn a_repeat_written_before_the_first_is_indexed_is_stored_once() {
    // The node answers at the write and indexes after: a retry or a replicated copy can
    // reach the log between the two.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let records = pool_records();
    let u = Universe::of(pool());
    let (store, ..) = open(&cfg);
    let first = store.write(&records[..3]).unwrap();
    let len = std::fs::metadata(log_path(&cfg)).unwrap().len();
    let again = store.write(&records[1..4]).unwrap();
    // Only records[3] is new: one record more in the log.
    assert_eq!(
        std::fs::metadata(log_path(&cfg)).unwrap().len(),
        len + records[3].log_bytes() as u64
    );
    store.index(&records[..3], &first).unwrap();
    store.index(&records[1..4], &again).unwrap();
    check(&store, &records[..4], &u);
    drop(store);
    let (store, _, seen) = open(&cfg);
    assert_eq!(ids(&seen), ids(&records[..4]));
    check(&store, &records[..4], &u);
}

#[test]
fn limits_are_typed_errors_and_leave_the_store_usable() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let records = pool_records();
    let (store, ..) = open(&cfg);
    let long = rec(&pool()[0], Some(&"r".repeat(257)));
    match store.commit(&[long]) {
        Err(StoreError::RequestIdInvalid {
            n_bytes: 257,
            max: 256,
            ..
        }) => {}
        other => panic!("expected RequestIdInvalid, got {other:?}"),
    }
    match store.commit(&[rec(&pool()[0], Some(""))]) {
        Err(StoreError::RequestIdInvalid { n_bytes: 0, .. }) => {}
        other => panic!("expected RequestIdInvalid, got {other:?}"),
    }
    let too_many = vec![records[0].clone(); COMMIT_RECORDS_MAX + 1];
    match store.commit(&too_many) {
        Err(StoreError::CommitTooLarge { n_records, .. }) => {
            assert_eq!(n_records, COMMIT_RECORDS_MAX + 1)
        }
        other => panic!("expected CommitTooLarge, got {other:?}"),
    }
    assert_eq!(
        std::fs::metadata(log_path(&cfg)).unwrap().len(),
        12,
        "nothing written"
    );
    store.commit(&records).unwrap();
    check(&store, &records, &Universe::of(pool()));
}

/// A crash while the last record was being written, simulated at every length of it: the
/// index has all records but the last (it is only told after the fdatasync), and the log has
/// the last record cut short at `cut`.
#[test]
fn a_torn_last_record_is_cut_at_every_length() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (synth, records) = synth_records(6);
    let u = Universe::of(&synth.events);
    let (last, done) = records.split_last().unwrap();
    let last_frame = framed(std::slice::from_ref(last));
    assert!(
        last_frame.len() > 200,
        "a realistic record: {} bytes",
        last_frame.len()
    );
    let (store, ..) = open(&cfg);
    store.commit(done).unwrap();
    drop(store);
    let good_len = std::fs::metadata(log_path(&cfg)).unwrap().len();
    for cut in 1..last_frame.len() {
        append_raw(&cfg, &last_frame[..cut]);
        let (store, report, seen) = open(&cfg);
        assert_eq!(ids(&seen), ids(done), "cut at {cut}");
        assert_eq!(
            (
                report.n_records,
                report.log_bytes,
                report.cut_bytes,
                report.reindexed
            ),
            (done.len() as u64, good_len, cut as u64, 0),
            "cut at {cut}"
        );
        assert_eq!(
            std::fs::metadata(log_path(&cfg)).unwrap().len(),
            good_len,
            "cut at {cut}"
        );
        if cut % 97 == 1 {
            check(&store, done, &u);
        }
    }
    // The whole record, never indexed (the crash came after the fdatasync): replayed.
    append_raw(&cfg, &last_frame);
    let (store, report, seen) = open(&cfg);
    assert_eq!(ids(&seen), ids(&records));
    assert_eq!((report.cut_bytes, report.reindexed), (0, 1));
    check(&store, &records, &u);
    drop(store);
    // And the log goes on cleanly after a cut.
    let dir2 = tempfile::tempdir().unwrap();
    let cfg2 = config(dir2.path());
    let (store, ..) = open(&cfg2);
    store.commit(done).unwrap();
    drop(store);
    append_raw(&cfg2, &last_frame[..last_frame.len() / 2]);
    let (store, report, _) = open(&cfg2);
    assert_eq!(report.cut_bytes, (last_frame.len() / 2) as u64);
    store.commit(std::slice::from_ref(last)).unwrap();
    check(&store, &records, &u);
    drop(store);
    let (store, report, seen) = open(&cfg2);
    assert_eq!(ids(&seen), ids(&records));
    assert_eq!((report.cut_bytes, report.reindexed), (0, 0));
    check(&store, &records, &u);
}

/// A complete last record with one byte flipped, at every position (length, CRC, kind,
/// request id, event), that the index never saw. An interrupted write cannot leave this (a
/// disk writes a sector all or nothing, and the space was zeros), so it is damage to written
/// data that may have been acknowledged (the index lags the log): open refuses and changes
/// nothing. Only a flip that makes the length run past the end of the file reads as a
/// write cut short, and that is cut.
#[test]
fn a_complete_last_record_with_a_flipped_byte_is_refused_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let records = pool_records();
    let u = Universe::of(pool());
    let (last, done) = records.split_last().unwrap();
    let frame = framed(std::slice::from_ref(last));
    let (store, ..) = open(&cfg);
    store.commit(done).unwrap();
    drop(store);
    let good = std::fs::read(log_path(&cfg)).unwrap();
    let good_len = good.len() as u64;
    let (mut n_cut, mut n_refused) = (0, 0);
    for (idx, flip) in
        (0..frame.len())
            .map(|i| (i, 0x01u8))
            .chain([(0, 0x80), (3, 0xff), (8, 0xff)])
    {
        let mut damaged = frame.clone();
        damaged[idx] ^= flip;
        append_raw(&cfg, &damaged);
        let length = u32::from_le_bytes([damaged[0], damaged[1], damaged[2], damaged[3]]) as usize;
        let runs_past_end = (4..=PAYLOAD_BYTES_MAX).contains(&length) && length + 8 > frame.len();
        if runs_past_end {
            n_cut += 1;
            let (store, report, seen) = open(&cfg);
            assert_eq!(ids(&seen), ids(done), "flip at {idx}");
            assert_eq!(
                (report.log_bytes, report.cut_bytes),
                (good_len, frame.len() as u64),
                "flip at {idx}"
            );
            if idx % 50 == 0 {
                check(&store, done, &u);
            }
        } else {
            n_refused += 1;
            match open_err(&cfg) {
                StoreError::Corrupt {
                    detail: CorruptDetail::NotTorn { after_bytes },
                    offset,
                    ..
                } => assert_eq!(
                    (offset, after_bytes),
                    (good_len, frame.len() as u64),
                    "flip at {idx}"
                ),
                other => panic!("flip at {idx}: expected Corrupt NotTorn, got {other:?}"),
            }
            let mut want = good.clone();
            want.extend_from_slice(&damaged);
            assert_eq!(
                std::fs::read(log_path(&cfg)).unwrap(),
                want,
                "flip at {idx}: nothing was cut"
            );
            // Put the log back as it was for the next flip.
            std::fs::write(log_path(&cfg), &good).unwrap();
        }
    }
    assert!(
        n_cut > 0 && n_refused > frame.len() - 8,
        "cut {n_cut}, refused {n_refused}"
    );
    let (store, report, seen) = open(&cfg);
    assert_eq!((ids(&seen), report.cut_bytes), (ids(done), 0));
    check(&store, done, &u);
}

/// A flipped byte in the middle of the log, with acknowledged records after it, and the
/// index gone (or about to be rebuilt): neither a start nor `rebuild-index` nor a backup
/// may treat it as a torn tail and drop the records behind it.
#[test]
fn damage_in_the_middle_is_refused_without_an_index_and_by_rebuild_and_backup() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, records, mut log) = committed_pool(dir.path());
    let ninth = 12 + framed(&records[..8]).len();
    log[ninth + 40] ^= 0x01;
    std::fs::write(log_path(&cfg), &log).unwrap();
    let after = (log.len() - ninth) as u64;

    // rebuild-index: the index it replaces had applied every record.
    match Store::rebuild_index(&cfg) {
        Err(StoreError::Corrupt {
            detail: CorruptDetail::InsideCommitted { index_end },
            offset,
            ..
        }) => assert_eq!((offset, index_end), (ninth as u64, log.len() as u64)),
        other => panic!("expected Corrupt InsideCommitted, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(log_path(&cfg)).unwrap(),
        log,
        "nothing was cut"
    );

    // A start with no index at all: the record is all there, so it is not a torn write.
    std::fs::remove_dir_all(index_path(&cfg)).unwrap();
    match open_err(&cfg) {
        StoreError::Corrupt {
            detail: CorruptDetail::NotTorn { after_bytes },
            offset,
            ..
        } => assert_eq!((offset, after_bytes), (ninth as u64, after)),
        other => panic!("expected Corrupt NotTorn, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(log_path(&cfg)).unwrap(),
        log,
        "nothing was cut"
    );

    // A backup of it is refused rather than a copy of the first eight records.
    let out = dir.path().join("backup");
    match ledger_node::store::backup(&cfg.dir, &out) {
        Err(StoreError::Corrupt {
            detail: CorruptDetail::NotTorn { .. },
            offset,
            ..
        }) => assert_eq!(offset, ninth as u64),
        other => panic!("expected Corrupt NotTorn, got {other:?}"),
    }
    assert!(!out.join("events.log").exists(), "no backup was written");
    let scan = ledger_node::store::scan_log(&cfg.dir, |_, _| {}).unwrap();
    assert_eq!(
        (scan.n_records, scan.bad_is_torn_write),
        (8, false),
        "verify-store's scan sees damage, not a torn write"
    );
}

/// The node's log keeps zeros ahead of its records. They end the log cleanly (a reopen cuts
/// nothing), commits go on over them, and a commit that reaches their end writes more first.
#[test]
fn preallocated_zeros_end_the_log_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = preallocated(dir.path());
    // More than the 1 MiB written ahead at a time.
    let (synth, records) = synth_records(4000);
    let u = Universe::of(&synth.events);
    let (store, ..) = open(&cfg);
    let (first, rest) = records.split_at(10);
    store.commit(first).unwrap();
    drop(store);
    let end = log_end(&cfg);
    let len = file_len(&cfg);
    assert_eq!(
        (len - end >= 1 << 20, len % 4096),
        (true, 0),
        "log ends at {end}, file is {len} bytes"
    );
    let bytes = std::fs::read(log_path(&cfg)).unwrap();
    assert!(bytes[end as usize..].iter().all(|&b| b == 0));
    let (store, report, seen) = open(&cfg);
    assert_eq!(ids(&seen), ids(first));
    assert_eq!(
        (report.log_bytes, report.cut_bytes, report.reindexed),
        (end, 0, 0)
    );
    assert_eq!(file_len(&cfg), len, "open keeps the zeros");
    for batch in rest.chunks(64) {
        store.commit(batch).unwrap();
    }
    check(&store, &records, &u);
    drop(store);
    let end = log_end(&cfg);
    assert!(
        end > len,
        "the records went past the first zeros ({end} <= {len})"
    );
    let (store, report, seen) = open(&cfg);
    assert_eq!(ids(&seen), ids(&records));
    assert_eq!(
        (report.log_bytes, report.cut_bytes, report.reindexed),
        (end, 0, 0)
    );
    check(&store, &records, &u);
    drop(store);
    // The same log opened without preallocation reads the same and goes on.
    let (store, report, seen) = open(&config(dir.path()));
    assert_eq!(ids(&seen), ids(&records));
    assert_eq!(report.cut_bytes, 0);
    check(&store, &records, &u);
}

/// A crash while writing over preallocated zeros. A torn record is cut together with the zeros
/// after it. A complete record behind zeros (a torn write whose first page never reached the
/// disk) is cut too and never read back: new records written over the zeros could line up
/// with it.
#[test]
fn torn_writes_over_preallocated_zeros_are_cut() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = preallocated(dir.path());
    let (synth, records) = synth_records(16);
    let u = Universe::of(&synth.events);
    // Where the next record has a sector boundary inside it, so a crash can tear it.
    let k = (1..records.len() - 1)
        .find(|&k| {
            let end = 12 + framed(&records[..k]).len();
            (end + 1..end + framed(&records[k..=k]).len()).any(|at| at % 512 == 0)
        })
        .unwrap();
    let (done, rest) = records.split_at(k);
    let (a, b) = (&rest[0], &rest[1]);
    let (store, ..) = open(&cfg);
    store.commit(done).unwrap();
    drop(store);
    let end = log_end(&cfg);
    let zeros_after = |cfg: &StoreConfig| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(log_path(cfg))
            .unwrap()
            .set_len(end + (1 << 20))
            .unwrap();
    };
    let frame_a = framed(std::slice::from_ref(a));
    // A crash leaves whole sectors old or new: cuts where a sector starts inside a's bytes.
    let cuts: Vec<usize> = (1..frame_a.len())
        .filter(|cut| (end + *cut as u64).is_multiple_of(512))
        .collect();
    assert!(!cuts.is_empty());
    for cut in cuts {
        zeros_after(&cfg);
        append_raw(&cfg, &frame_a[..cut]);
        let (store, report, seen) = open(&cfg);
        assert_eq!(ids(&seen), ids(done), "cut at {cut}");
        assert_eq!(
            (report.log_bytes, report.cut_bytes, file_len(&cfg)),
            (end, 1 << 20, end),
            "cut at {cut}"
        );
        check(&store, done, &u);
    }
    // b, complete, where it would sit after a: the bytes where a belongs are zeros.
    zeros_after(&cfg);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(log_path(&cfg))
            .unwrap();
        f.write_all_at(&framed(std::slice::from_ref(b)), end + frame_a.len() as u64)
            .unwrap();
    }
    let (store, report, seen) = open(&cfg);
    assert_eq!(ids(&seen), ids(done));
    assert_eq!((report.cut_bytes, file_len(&cfg)), (1 << 20, end));
    // a, written now, ends exactly where b began: b must not come back.
    store.commit(std::slice::from_ref(a)).unwrap();
    drop(store);
    let (store, report, seen) = open(&cfg);
    let mut want = done.to_vec();
    want.push(a.clone());
    assert_eq!(ids(&seen), ids(&want));
    assert_eq!(report.cut_bytes, 0);
    check(&store, &want, &u);
}

/// Damage inside records the index knows were committed is not a torn write: cutting would
/// drop acknowledged events (whose seqs the node would sign again). Open refuses and changes
/// nothing.
#[test]
fn damage_inside_acknowledged_records_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, records, mut log) = committed_pool(dir.path());
    let n = log.len();
    log[n - 10] ^= 0x01;
    std::fs::write(log_path(&cfg), &log).unwrap();
    match open_err(&cfg) {
        StoreError::Corrupt {
            detail: CorruptDetail::InsideCommitted { index_end },
            offset,
            ..
        } => {
            assert_eq!(index_end, n as u64);
            assert_eq!(
                offset,
                (n - framed(&records[records.len() - 1..]).len()) as u64
            );
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(log_path(&cfg)).unwrap(),
        log,
        "nothing was cut"
    );

    // A log that lost acknowledged records (an old backup put back) is refused too.
    log[n - 10] ^= 0x01;
    let short = framed(&records[..records.len() - 2]).len() + 12;
    std::fs::write(log_path(&cfg), &log[..short]).unwrap();
    match open_err(&cfg) {
        StoreError::LogBehindIndex {
            log_end, index_end, ..
        } => assert_eq!((log_end, index_end), (short as u64, n as u64)),
        other => panic!("expected LogBehindIndex, got {other:?}"),
    }
    // Deleting the index is the documented way to accept the loss.
    std::fs::remove_dir_all(index_path(&cfg)).unwrap();
    let (store, report, seen) = open(&cfg);
    assert_eq!(ids(&seen), ids(&records[..records.len() - 2]));
    assert_eq!(report.reindexed, records.len() as u64 - 2);
    check(&store, &records[..records.len() - 2], &Universe::of(pool()));
}

#[test]
fn a_lost_or_stale_index_is_replayed_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let records = pool_records();
    let u = Universe::of(pool());
    let snapshot = dir.path().join("index-after-first-batch");
    let (store, ..) = open(&cfg);
    store.commit(&records[..7]).unwrap();
    drop(store);
    copy_dir(&index_path(&cfg), &snapshot);
    let (store, ..) = open(&cfg);
    store.commit(&records[7..12]).unwrap();
    store.commit(&records[12..]).unwrap();
    let before = answers(&store, &u);
    drop(store);

    // Stale: the index as it was after the first batch (sled lost its later writes).
    std::fs::remove_dir_all(index_path(&cfg)).unwrap();
    copy_dir(&snapshot, &index_path(&cfg));
    let (store, report, seen) = open(&cfg);
    assert_eq!(ids(&seen), ids(&records));
    assert_eq!(
        (report.reindexed, report.cut_bytes),
        (records.len() as u64 - 7, 0)
    );
    assert_eq!(answers(&store, &u), before);
    check(&store, &records, &u);
    drop(store);

    // Gone.
    std::fs::remove_dir_all(index_path(&cfg)).unwrap();
    let (store, report, seen) = open(&cfg);
    assert_eq!(ids(&seen), ids(&records));
    assert_eq!(report.reindexed, records.len() as u64);
    assert_eq!(answers(&store, &u), before);
    drop(store);

    // Belonging to another log (it says 7 records end where this log has a different
    // boundary): rebuilt from scratch.
    let other = tempfile::tempdir().unwrap();
    let other_cfg = config(other.path());
    let (store, ..) = open(&other_cfg);
    store.commit(&records[3..9]).unwrap();
    drop(store);
    std::fs::remove_dir_all(index_path(&cfg)).unwrap();
    copy_dir(&index_path(&other_cfg), &index_path(&cfg));
    let (store, report, _) = open(&cfg);
    assert_eq!(report.reindexed, records.len() as u64);
    assert_eq!(answers(&store, &u), before);
}

#[test]
fn rebuild_index_gives_identical_answers() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let synth = fixtures::synth::synth(60);
    let mut records: Vec<Record> = synth.events.iter().map(|e| rec(e, None)).collect();
    records.extend(pool_records());
    let mut all = synth.events.clone();
    all.extend_from_slice(pool());
    let u = Universe::of(&all);
    let (store, ..) = open(&cfg);
    for batch in records.chunks(9) {
        store.commit(batch).unwrap();
    }
    let before = answers(&store, &u);
    drop(store);
    let report = Store::rebuild_index(&cfg).unwrap();
    assert_eq!(
        (report.n_records, report.reindexed, report.cut_bytes),
        (records.len() as u64, records.len() as u64, 0)
    );
    let (store, report, seen) = open(&cfg);
    assert_eq!(report.reindexed, 0);
    assert_eq!(ids(&seen), ids(&records));
    assert_eq!(answers(&store, &u), before);
    check(&store, &records, &u);
    // A running store holds the lock: a rebuild beside it is refused, not interleaved.
    match Store::rebuild_index(&cfg) {
        Err(StoreError::Sled { .. }) => {}
        other => panic!("expected a lock error, got {other:?}"),
    }
    assert_eq!(answers(&store, &u), before);
}

#[test]
fn not_a_log_and_other_formats_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (store, ..) = open(&cfg);
    drop(store);
    let mut header = std::fs::read(log_path(&cfg)).unwrap();
    assert_eq!(header, b"LEDGLOG\n\x01\x00\x00\x00");
    header[8] = 2;
    std::fs::write(log_path(&cfg), &header).unwrap();
    match open_err(&cfg) {
        StoreError::LogFormat {
            version: 2,
            supported: 1,
            ..
        } => {}
        other => panic!("expected LogFormat, got {other:?}"),
    }
    std::fs::write(log_path(&cfg), b"hello").unwrap();
    match open_err(&cfg) {
        StoreError::NotALog { n_bytes: 5, .. } => {}
        other => panic!("expected NotALog, got {other:?}"),
    }
}

/// Readers on other threads while one thread commits: every chain read is a prefix of the
/// final chain (positions 1..n, no hole, every event readable), and it only grows.
#[test]
fn readers_see_whole_batches_while_committing() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let synth = fixtures::synth::synth(300);
    let records: Vec<Record> = synth.events.iter().map(|e| rec(e, None)).collect();
    let (store, ..) = open(&cfg);
    let want: Vec<EventId> = ids(&records);
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let mut last = 0;
                    while last < want.len() {
                        let chain = store.chain(&synth.coi, 0, usize::MAX).unwrap();
                        let got: Vec<EventId> = chain.iter().map(|(_, e)| e.id()).collect();
                        assert_eq!(got, want[..got.len()]);
                        assert!(
                            got.len() >= last,
                            "chain shrank from {last} to {}",
                            got.len()
                        );
                        assert_eq!(got.len() % 10, 0, "a batch of 10 was seen in part");
                        last = got.len();
                    }
                })
            })
            .collect();
        for batch in records.chunks(10) {
            store.commit(batch).unwrap();
        }
        for r in readers {
            r.join().unwrap();
        }
    });
}

#[derive(Debug, Clone)]
enum Op {
    /// Commit these pool records (duplicates allowed) in one batch.
    Commit(Vec<(usize, Option<usize>)>),
    /// Close and reopen.
    Reopen,
    /// A crash in the middle of writing a batch: part of its bytes reach the log.
    TornWrite(Vec<usize>, usize),
    /// Lose the index.
    DropIndex,
}

fn op() -> impl Strategy<Value = Op> {
    let n = pool().len();
    prop_oneof![
        4 => prop::collection::vec((0..n, prop::option::of(0..REQUEST_IDS.len())), 1..6).prop_map(Op::Commit),
        2 => Just(Op::Reopen),
        1 => (prop::collection::vec(0..n, 1..4), 1usize..2000).prop_map(|(r, cut)| Op::TornWrite(r, cut)),
        1 => Just(Op::DropIndex),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random commits, reopens, torn writes and lost indexes against a `Vec<Record>`:
    /// after every step the store answers exactly what the reference implies.
    #[test]
    fn store_matches_a_vec_model(ops in prop::collection::vec(op(), 1..10), prealloc in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = if prealloc { preallocated(dir.path()) } else { config(dir.path()) };
        let u = Universe::of(pool());
        let mut model: Vec<Record> = Vec::new();
        let (mut store, ..) = open(&cfg);
        for op in ops {
            match op {
                Op::Commit(batch) => {
                    let batch: Vec<Record> = batch.iter().map(|(i, q)| rec(&pool()[*i], q.map(|q| REQUEST_IDS[q]))).collect();
                    store.commit(&batch).unwrap();
                    for r in batch {
                        if !model.iter().any(|m| m.event.id() == r.event.id()) {
                            model.push(r);
                        }
                    }
                }
                Op::Reopen => {
                    drop(store);
                    let (s, report, seen) = open(&cfg);
                    prop_assert_eq!(ids(&seen), ids(&model));
                    prop_assert_eq!((report.cut_bytes, report.reindexed), (0, 0));
                    store = s;
                }
                Op::TornWrite(batch, cut) => {
                    // What the writer could have been writing: new events, each once.
                    let mut batch: Vec<Record> = batch.iter().map(|i| rec(&pool()[*i], None)).collect();
                    batch.retain(|r| !model.iter().any(|m| m.event.id() == r.event.id()));
                    // Each event once, wherever it repeats (dedup_by_key only drops neighbours).
                    let mut seen_ids = std::collections::HashSet::new();
                    batch.retain(|r| seen_ids.insert(r.event.id()));
                    if batch.is_empty() {
                        continue;
                    }
                    drop(store);
                    let bytes = framed(&batch);
                    prop_assert_eq!(bytes.len(), batch.iter().map(Record::log_bytes).sum::<usize>());
                    let end = log_end(&cfg);
                    let cut = cut.min(bytes.len() - 1);
                    // Over preallocated zeros a crash leaves whole sectors old or new (a disk
                    // writes a sector all or nothing); without them, the file just ends.
                    let cut = if prealloc { usize::try_from((end + cut as u64) / 512 * 512).unwrap().saturating_sub(end as usize) } else { cut };
                    if cut == 0 {
                        store = open(&cfg).0;
                        continue;
                    }
                    append_raw(&cfg, &bytes[..cut]);
                    // Everything after the whole records goes: the torn one and any zeros.
                    let tail = file_len(&cfg) - end;
                    // Records complete before the cut were written whole: they are kept (and
                    // indexed, since the crash came before the index heard of them). Over
                    // preallocated zeros, so is a record whose missing bytes are all zeros:
                    // the disk then holds exactly the record.
                    let mut whole = 0;
                    let mut n_whole = 0;
                    for r in &batch {
                        let r_end = whole + r.log_bytes();
                        let missing = &bytes[cut.clamp(whole, r_end)..r_end];
                        let on_disk = end + r_end as u64 <= file_len(&cfg);
                        if r_end > cut && !(on_disk && missing.iter().all(|&b| b == 0)) {
                            break;
                        }
                        whole = r_end;
                        n_whole += 1;
                    }
                    model.extend(batch.into_iter().take(n_whole));
                    let (s, report, seen) = open(&cfg);
                    prop_assert_eq!(ids(&seen), ids(&model));
                    // Cut at a record boundary, only zeros follow: nothing to cut.
                    let cut_bytes = if cut <= whole { 0 } else { tail - whole as u64 };
                    prop_assert_eq!((report.cut_bytes, report.reindexed), (cut_bytes, n_whole as u64));
                    store = s;
                }
                Op::DropIndex => {
                    drop(store);
                    std::fs::remove_dir_all(index_path(&cfg)).unwrap();
                    let (s, report, seen) = open(&cfg);
                    prop_assert_eq!(ids(&seen), ids(&model));
                    prop_assert_eq!(report.reindexed, model.len() as u64);
                    store = s;
                }
            }
            prop_assert_eq!(answers(&store, &u), expected(&model, &u));
        }
    }
}

/// Reading forward by store position, page by page with the cursor each page returns,
/// gives every record once in log order, the same as reading each page from its position
/// alone; a stale cursor is ignored.
#[test]
fn records_after_pages_with_or_without_a_cursor_give_the_log_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (_, records) = synth_records(1_100);
    let (store, ..) = open(&cfg);
    for batch in records.chunks(97) {
        store.commit(batch).unwrap();
    }
    assert_eq!(store.last_position(), 1_100);
    let want: Vec<(u64, EventId)> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (i as u64 + 1, r.event.id()))
        .collect();
    for (limit, bytes) in [(300, 64 * 1024), (256, 1024), (2_000, 1 << 20)] {
        let (mut with, mut without) = (Vec::new(), Vec::new());
        let (mut after, mut cursor) = (0, None);
        loop {
            let (page, next) = store.records_after(after, cursor, limit, bytes).unwrap();
            let Some(&(last, _)) = page.last() else { break };
            assert!(page.len() <= limit);
            with.extend(page.iter().map(|(p, e)| (*p, e.id())));
            let (alone, _) = store.records_after(after, None, limit, bytes).unwrap();
            without.extend(alone.iter().map(|(p, e)| (*p, e.id())));
            after = last;
            cursor = next;
        }
        assert_eq!(with, want, "limit {limit}, bytes {bytes}");
        assert_eq!(without, want, "limit {limit}, bytes {bytes}");
    }
    // A cursor of another position is not used.
    let (_, cursor) = store.records_after(10, None, 5, 4096).unwrap();
    let (page, _) = store.records_after(500, cursor, 3, 4096).unwrap();
    let got: Vec<u64> = page.iter().map(|(p, _)| *p).collect();
    assert_eq!(got, [501, 502, 503]);
}
