//! Crash test: the node answers an append only once it is durable, so a SIGKILL at any
//! moment loses nothing it acknowledged and leaves each site's feed contiguous.
//!
//! Each cycle runs several clients concurrently against the real `ledger-node` binary
//! (three per site, for clinic-a and clinic-s; each client owns its chain and appends to it
//! one request at a time: a collection, then notes and store/retrieve of the collected
//! unit), SIGKILLs the node at a random moment, restarts it on the same data directory and
//! checks what came back:
//!
//! - every acknowledged append is there, byte-identical (its signed bytes hash to the
//!   acknowledged event id and decode as an event of that site, seq and chain);
//! - each site's feed is seq 1..n with no gap and no duplicate across all its chains, and
//!   the node's feed head is seq n;
//! - nothing is stored that no client sent, and no request id is stored twice (each
//!   request's body carries its request id, so the stored events name their requests);
//! - every chain verifies intact;
//! - the requests that were in flight at the kill may or may not be there; the test
//!   retries each with its request id and must get the stored event back (duplicate) when
//!   it was there, or a fresh append with the feed's next seq when it was not; a new append
//!   after the restart also gets the next seq.
//!
//! Checked chains are remembered: a cycle re-reads the chains it touched and checks the
//! others by their event count; every tenth cycle and the last re-read everything.
//!
//! `CRASH_SEED` replays a run (the seed is printed first); `CRASH_CYCLES` sets the number
//! of kill/restart cycles (default 20; `scripts/crash-soak` runs 200).
//!
//! A second test makes the disk refuse writes instead: the node runs with no file allowed
//! to grow past a limit just above the store's size, as on a disk that fills up. A write
//! to the log (or the index) then fails; the node must answer the appends waiting on it
//! with an error, refuse later ones, stop by itself with exit code 1 and say why, and the
//! restart must pass the same checks as after a SIGKILL.

use anyhow::{bail, ensure, Context, Result};
use ledger_core::{Body, Event, EventId};
use proto::v1 as pb;
use proto::v1::ledger_service_client::LedgerServiceClient;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tests::Node;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

const T0: i64 = 1_772_438_400; // 2026-03-02T08:00:00Z
/// The sites appending concurrently (both clinics of the dev network) and the letter
/// their chains' COIs carry.
const SITES: [(&str, char); 2] = [("clinic-a", 'A'), ("clinic-s", 'S')];
const CLIENTS_PER_SITE: usize = 3;
/// A client starts a new chain after this many requests on one (keeps VerifyChain cheap).
const CHAIN_REQUESTS: u32 = 100;
/// The node is killed this long after the clients start appending (ms, half-open range).
const KILL_AFTER_MS: (u64, u64) = (100, 500);
/// The disk test's file size limit: this far above the largest file in the store when the
/// node starts, so some appends succeed first (the log keeps 1 MiB of zeros ahead of its
/// records, so its first extension fits). sled's file usually reaches the limit before
/// the log's second extension does.
const DISK_HEADROOM_BYTES: u64 = 3 << 19;
/// Longest the disk test's clients may append before the disk refuses.
const DISK_FILL_DEADLINE: Duration = Duration::from_secs(120);
/// Every this many cycles (and on the last) the recovered state is re-read in full.
const FULL_CHECK_EVERY: usize = 10;
/// Longest any single call may take before the test calls the node hung.
const CALL_DEADLINE: Duration = Duration::from_secs(20);
/// Chains read at once by a check.
const READ_CONCURRENCY: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_sigkill() {
    let seed = seed();
    let cycles = match std::env::var("CRASH_CYCLES") {
        Ok(s) => s
            .trim()
            .parse::<usize>()
            .expect("CRASH_CYCLES must be a number"),
        Err(_) => 20,
    };
    println!("crash test: seed {seed}, {cycles} cycles (replay with CRASH_SEED={seed})");
    let started = Instant::now();
    if let Err(e) = run(seed, &vec![Plan::Kill; cycles]).await {
        panic!("crash test failed (replay with CRASH_SEED={seed} CRASH_CYCLES={cycles}): {e:#}");
    }
    println!(
        "crash test: seed {seed}, {cycles} cycles passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_a_disk_that_refuses_writes() {
    let seed = seed();
    // Refused twice, with a SIGKILL between: recovery from one failure must leave a store
    // that survives the next.
    let plan = [Plan::DiskRefuses, Plan::Kill, Plan::DiskRefuses];
    if let Err(e) = run(seed, &plan).await {
        panic!("disk test failed (replay with CRASH_SEED={seed}): {e:#}");
    }
}

/// `CRASH_SEED`, or a fresh seed from the clock.
fn seed() -> u64 {
    match std::env::var("CRASH_SEED") {
        Ok(s) => s
            .trim()
            .parse::<u64>()
            .expect("CRASH_SEED must be an unsigned integer"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

/// How a cycle stops the node under load.
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// SIGKILL at a random moment.
    Kill,
    /// Restart the node with a file size limit ([`DISK_HEADROOM_BYTES`] above the store's
    /// largest file) and let the clients append until a write fails and the node stops.
    DiskRefuses,
}

/// SplitMix64: a tiny deterministic generator, so a printed seed replays the run's choices.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn range(&mut self, (lo, hi): (u64, u64)) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

/// A client of the node with one principal's token.
#[derive(Clone)]
struct Api {
    client: LedgerServiceClient<Channel>,
    token: String,
}

impl Api {
    async fn connect(node: &Node, token: &str) -> Result<Api> {
        let channel = Channel::from_shared(node.addr.clone())?
            .connect()
            .await
            .with_context(|| format!("connecting to the node at {}", node.addr))?;
        Ok(Api {
            client: LedgerServiceClient::new(channel),
            token: token.to_owned(),
        })
    }

    fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        let v: MetadataValue<_> = format!("Bearer {}", self.token)
            .parse()
            .expect("tokens are ascii");
        r.metadata_mut().insert("authorization", v);
        r
    }

    async fn append(&mut self, r: pb::AppendRequest) -> Result<Result<pb::AppendReceipt, Status>> {
        let rid = r.request_id.clone();
        let call = self.client.append(self.req(r));
        match tokio::time::timeout(CALL_DEADLINE, call).await {
            Err(_) => bail!("append {rid} got no answer within {CALL_DEADLINE:?}"),
            Ok(Err(s)) => Ok(Err(s)),
            Ok(Ok(resp)) => Ok(Ok(resp
                .into_inner()
                .receipt
                .with_context(|| format!("append {rid}: answer without a receipt"))?)),
        }
    }
}

/// Awaits a read call with a deadline; any error fails the check.
async fn call<T>(
    what: impl std::fmt::Display,
    f: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T> {
    match tokio::time::timeout(CALL_DEADLINE, f).await {
        Err(_) => bail!("{what}: no answer within {CALL_DEADLINE:?}"),
        Ok(Err(s)) => bail!("{what}: {:?}: {}", s.code(), s.message()),
        Ok(Ok(r)) => Ok(r.into_inner()),
    }
}

/// A request sent but not answered: it may or may not be stored.
#[derive(Debug, Clone)]
struct Pending {
    site: String,
    coi: String,
    req: pb::AppendRequest,
}

/// An acknowledged append.
#[derive(Debug, Clone)]
struct Ack {
    rid: String,
    coi: String,
    site: String,
    receipt: pb::AppendReceipt,
}

#[derive(Debug)]
struct OwnChain {
    coi: String,
    unit: String,
    din: String,
    /// Index of the next request on this chain (0 is the collection).
    next: u32,
    stored: bool,
}

/// One client: appends to a chain it alone writes, one request at a time, so its chain is
/// valid whatever happened to its one unanswered request (which is retried after restart
/// before it sends anything else).
#[derive(Debug)]
struct Client {
    site: &'static str,
    letter: char,
    /// Index among its site's clients.
    n: usize,
    rng: SplitMix64,
    chain: Option<OwnChain>,
    n_chains: u32,
    pending: Option<Pending>,
}

impl Client {
    /// The next request, with a body that keeps the chain valid given every earlier
    /// request of this client was applied once.
    fn next_request(&mut self) -> Pending {
        assert!(
            self.pending.is_none(),
            "resolve the unanswered request first"
        );
        if self.chain.as_ref().is_none_or(|c| c.next >= CHAIN_REQUESTS) {
            self.n_chains += 1;
            let coi = format!("CHA999926{}{}{:04}", self.letter, self.n, self.n_chains);
            let site_n = if self.letter == 'A' { 0 } else { 1 };
            self.chain = Some(OwnChain {
                unit: format!("APH-{}", &coi[9..]),
                din: format!(
                    "A999926{:06}",
                    (site_n * CLIENTS_PER_SITE + self.n) as u32 * 10_000 + self.n_chains
                ),
                coi,
                next: 0,
                stored: false,
            });
        }
        let roll = self.rng.next() % 10;
        let c = self.chain.as_mut().expect("chain set above");
        let k = c.next;
        c.next += 1;
        let rid = format!("{}.{k}", c.coi);
        use pb::event_body::Kind;
        let body = if k == 0 {
            Kind::Collection(pb::Collection {
                units: vec![pb::NewUnit {
                    unit_id: c.unit.clone(),
                    stability_deadline: ts(T0 + 30 * 24 * 3600),
                    temp_min_centi_celsius: 200,
                    temp_max_centi_celsius: 800,
                }],
                dins: vec![c.din.clone()],
            })
        } else if roll < 6 {
            Kind::Note(pb::Note { text: rid.clone() })
        } else if c.stored {
            c.stored = false;
            Kind::Retrieve(pb::Retrieve {
                unit_id: c.unit.clone(),
                location: rid.clone(),
            })
        } else {
            c.stored = true;
            Kind::Store(pb::Store {
                unit_id: c.unit.clone(),
                location: rid.clone(),
            })
        };
        Pending {
            site: self.site.to_owned(),
            coi: c.coi.clone(),
            req: pb::AppendRequest {
                request_id: rid,
                site_id: self.site.to_owned(),
                coi: c.coi.clone(),
                occurred_time: ts(T0 + i64::from(k) * 60),
                signer: Some(pb::Signer {
                    operator_id: "op.crash".into(),
                    printed_name: "Crash Test".into(),
                    meaning: pb::SignatureMeaning::Performed as i32,
                }),
                body: Some(pb::EventBody { kind: Some(body) }),
            },
        }
    }

    /// Appends until the node dies; returns the acknowledged appends. The request that was
    /// unanswered at the kill stays in `self.pending`. With `until_refused` the client
    /// instead appends until the node answers an append with an unknown outcome (the disk
    /// refused a write), and keeps that request in `self.pending`.
    async fn run(
        mut self,
        mut api: Api,
        killed: Arc<AtomicBool>,
        until_refused: bool,
    ) -> Result<(Client, Vec<Ack>)> {
        let mut acks = Vec::new();
        while !killed.load(Ordering::SeqCst) {
            let p = self.next_request();
            match api.append(p.req.clone()).await? {
                Ok(receipt) => {
                    ensure!(
                        !receipt.duplicate,
                        "first send of {} answered as a duplicate: {receipt:?}",
                        p.req.request_id
                    );
                    acks.push(Ack {
                        rid: p.req.request_id,
                        coi: p.coi,
                        site: p.site,
                        receipt,
                    });
                }
                Err(s)
                    if (until_refused || killed.load(Ordering::SeqCst)) && unknown_outcome(&s) =>
                {
                    self.pending = Some(p);
                    break;
                }
                Err(s) => bail!(
                    "append {} refused while the node was up: {:?}: {}",
                    p.req.request_id,
                    s.code(),
                    s.message()
                ),
            }
        }
        Ok((self, acks))
    }
}

/// What a client sees when the server dies under its call: the request may or may not
/// have been stored.
fn unknown_outcome(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Internal
    )
}

/// A stored event's request id: every body this test sends names it (a collection is its
/// chain's request 0).
fn request_id_of(e: &Event) -> Result<String> {
    Ok(match e.body() {
        Body::Collection { .. } => format!("{}.0", e.coi()),
        Body::Note { text } => text.clone(),
        Body::Store { location, .. } | Body::Retrieve { location, .. } => location.clone(),
        other => bail!(
            "event {} has a body this test never sends: {}",
            e.id().to_hex(),
            other.kind_name()
        ),
    })
}

/// What earlier checks established and later ones must find unchanged.
#[derive(Debug, Default)]
struct Model {
    /// Chain -> its events in chain order: (request id, event id).
    chains: BTreeMap<String, Vec<(String, String)>>,
    /// Site -> its feed: event ids by seq - 1.
    feeds: BTreeMap<String, Vec<String>>,
}

/// One stored event as a check found it.
#[derive(Debug, Clone)]
struct Found {
    id: String,
    site: String,
    seq: u64,
    coi: String,
}

/// Checks the node's state against the model, the acknowledged appends and the requests
/// whose outcome is unknown; on success records the state in the model and returns the
/// stored events by request id of the chains it read.
async fn check(
    api: &mut Api,
    model: &mut Model,
    acked: &[Ack],
    unknown: &[Pending],
    read_all: bool,
) -> Result<BTreeMap<String, Found>> {
    let info = call(
        "GetNodeInfo",
        api.client.get_node_info(api.req(pb::GetNodeInfoRequest {})),
    )
    .await?;

    // Which chains exist, and how long they are.
    let mut listed: BTreeMap<String, u64> = BTreeMap::new();
    let mut page_token = String::new();
    loop {
        let page = call(
            "ListChains",
            api.client.list_chains(api.req(pb::ListChainsRequest {
                status: 0,
                page_size: 1000,
                page_token: page_token.clone(),
                ..pb::ListChainsRequest::default()
            })),
        )
        .await?;
        for c in page.chains {
            ensure!(
                listed.insert(c.coi.clone(), c.event_count).is_none(),
                "ListChains lists chain {} twice",
                c.coi
            );
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let touched: BTreeSet<&str> = acked
        .iter()
        .map(|a| a.coi.as_str())
        .chain(unknown.iter().map(|p| p.coi.as_str()))
        .collect();
    for coi in listed.keys() {
        ensure!(
            model.chains.contains_key(coi) || touched.contains(coi.as_str()),
            "chain {coi} exists, but no client ever appended to it"
        );
    }
    for coi in model
        .chains
        .keys()
        .map(String::as_str)
        .chain(acked.iter().map(|a| a.coi.as_str()))
    {
        ensure!(
            listed.contains_key(coi),
            "chain {coi} had acknowledged events but is gone after the restart"
        );
    }
    ensure!(
        info.event_count == listed.values().sum::<u64>(),
        "GetNodeInfo counts {} events, the chains listed hold {}",
        info.event_count,
        listed.values().sum::<u64>()
    );

    // Read the chains (concurrently: many chains, each two calls), then check them.
    let mut to_read = BTreeMap::new();
    for (coi, &count) in &listed {
        let before = model.chains.get(coi).map_or(0, Vec::len);
        if read_all || touched.contains(coi.as_str()) {
            to_read.insert(coi.clone(), count);
        } else {
            ensure!(
                count == before as u64,
                "chain {coi} held {before} events and nobody appended to it, now it holds {count}"
            );
        }
    }
    let limit = Arc::new(tokio::sync::Semaphore::new(READ_CONCURRENCY));
    let mut reads = tokio::task::JoinSet::new();
    for coi in to_read.keys() {
        let (mut api, limit, coi) = (api.clone(), limit.clone(), coi.clone());
        reads.spawn(async move {
            let _permit = limit.acquire_owned().await?;
            let read = read_chain(&mut api, &coi).await?;
            anyhow::Ok((coi, read))
        });
    }
    let mut read = BTreeMap::new();
    while let Some(r) = reads.join_next().await {
        let (coi, chain) = r??;
        read.insert(coi, chain);
    }

    // Every event's signed bytes must be the event the node describes.
    let mut stored: BTreeMap<String, Found> = BTreeMap::new();
    let mut chains: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (coi, (events, v)) in &read {
        let count = to_read[coi];
        let before = model.chains.get(coi).map(Vec::as_slice).unwrap_or_default();
        ensure!(
            events.len() as u64 == count,
            "GetChain {coi} returned {} events, ListChains counts {count}",
            events.len()
        );
        let mut now = Vec::with_capacity(events.len());
        for w in events {
            let e = Event::from_bytes(&w.signed_bytes).map_err(|err| {
                anyhow::anyhow!("chain {coi}: event {} does not decode: {err}", w.event_id)
            })?;
            let hash = EventId(ledger_core::crypto::sha256(&w.signed_bytes)).to_hex();
            ensure!(
                hash == w.event_id && e.id().to_hex() == w.event_id,
                "chain {coi}: event {} has signed bytes hashing to {hash}",
                w.event_id
            );
            ensure!(
                e.author().as_str() == w.site_id && e.seq().0 == w.seq && e.coi().as_str() == coi,
                "chain {coi}: event {} says site {} seq {} chain {}, its signed bytes say {} {} {}",
                w.event_id,
                w.site_id,
                w.seq,
                w.coi,
                e.author(),
                e.seq(),
                e.coi()
            );
            let rid = request_id_of(&e)?;
            let found = Found {
                id: w.event_id.clone(),
                site: w.site_id.clone(),
                seq: w.seq,
                coi: coi.clone(),
            };
            if let Some(first) = stored.insert(rid.clone(), found) {
                bail!(
                    "request {rid} is stored twice: events {} and {}",
                    first.id,
                    w.event_id
                );
            }
            now.push((rid, w.event_id.clone()));
        }
        ensure!(
            now.len() >= before.len() && now[..before.len()] == *before,
            "chain {coi} changed: it held {before:?}, now {now:?}"
        );
        ensure!(
            v.verdict == pb::Verdict::Intact as i32
                && v.findings.is_empty()
                && v.event_count == count,
            "chain {coi} does not verify intact: verdict {:?}, {} of {count} events, findings {:?}",
            pb::Verdict::try_from(v.verdict),
            v.event_count,
            v.findings
        );
        chains.insert(coi.clone(), now);
    }

    // Every acknowledged append is there as acknowledged; nothing else is, except requests
    // whose outcome is unknown.
    for a in acked {
        let Some(f) = stored.get(&a.rid) else {
            bail!(
                "acknowledged append {} ({} seq {}, event {}) is lost",
                a.rid,
                a.site,
                a.receipt.seq,
                a.receipt.event_id
            );
        };
        ensure!(
            f.id == a.receipt.event_id
                && f.site == a.site
                && a.receipt.site_id == a.site
                && f.seq == a.receipt.seq
                && f.coi == a.coi,
            "acknowledged append {} was {} {} seq {} in {}; stored as {f:?}",
            a.rid,
            a.receipt.event_id,
            a.receipt.site_id,
            a.receipt.seq,
            a.coi
        );
    }
    let acked_rids: BTreeSet<&str> = acked.iter().map(|a| a.rid.as_str()).collect();
    let unknown_rids: BTreeSet<&str> = unknown.iter().map(|p| p.req.request_id.as_str()).collect();
    for (coi, now) in &chains {
        let before = model.chains.get(coi).map_or(0, Vec::len);
        for (rid, id) in &now[before..] {
            ensure!(
                acked_rids.contains(rid.as_str()) || unknown_rids.contains(rid.as_str()),
                "chain {coi} holds event {id} for request {rid}, which was neither acknowledged nor in flight"
            );
        }
    }

    // Each site's feed: seq 1..n, no gap, no duplicate, the same as before up to the old end.
    let mut feeds = BTreeMap::new();
    for (site, _) in SITES {
        let old = model.feeds.get(site).map(Vec::as_slice).unwrap_or_default();
        let mut by_seq: BTreeMap<u64, &Found> = BTreeMap::new();
        for f in stored.values().filter(|f| f.site == site) {
            if let Some(other) = by_seq.insert(f.seq, f) {
                bail!(
                    "{site} seq {} is taken twice (a fork): event {} in {} and {} in {}",
                    f.seq,
                    other.id,
                    other.coi,
                    f.id,
                    f.coi
                );
            }
        }
        // Events of chains not re-read were checked before and are counted, not read.
        let old_ids: HashSet<&String> = old.iter().collect();
        let unread: usize = listed
            .keys()
            .filter(|c| !chains.contains_key(*c))
            .map(|c| {
                model.chains[c]
                    .iter()
                    .filter(|(_, id)| old_ids.contains(id))
                    .count()
            })
            .sum();
        let n = by_seq
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .max(old.len() as u64);
        ensure!(
            (by_seq.len() + unread) as u64 == n,
            "{site}'s feed has a gap: {} events for seqs 1..={n} (seqs read: {:?})",
            by_seq.len() + unread,
            by_seq.keys().collect::<Vec<_>>()
        );
        let mut feed = old.to_vec();
        for seq in 1..=n {
            match (by_seq.get(&seq), old.get(seq as usize - 1)) {
                (Some(f), Some(id)) => ensure!(
                    f.id == *id,
                    "{site} seq {seq} was event {id}, now it is {}",
                    f.id
                ),
                (Some(f), None) => feed.push(f.id.clone()),
                (None, Some(_)) => {}
                (None, None) => bail!("{site}'s feed has a gap at seq {seq} (it runs to {n})"),
            }
        }
        let head = info
            .sites
            .iter()
            .find(|s| s.site_id == site)
            .with_context(|| format!("GetNodeInfo does not list {site}"))?;
        ensure!(
            head.feed_seq == n
                && head.feed_head_event_id == feed.last().cloned().unwrap_or_default(),
            "{site}'s feed holds seqs 1..={n} ending in {:?}, the node says its head is seq {} {}",
            feed.last(),
            head.feed_seq,
            head.feed_head_event_id
        );
        feeds.insert(site.to_owned(), feed);
    }

    model.chains.extend(chains);
    model.feeds = feeds;
    Ok(stored)
}

/// A chain's events (all pages) and the node's verdict on it.
async fn read_chain(api: &mut Api, coi: &str) -> Result<(Vec<pb::Event>, pb::VerifyChainResponse)> {
    let mut events = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = call(
            format!("GetChain {coi}"),
            api.client.get_chain(api.req(pb::GetChainRequest {
                coi: coi.to_owned(),
                page_size: 1000,
                page_token: page_token.clone(),
            })),
        )
        .await?;
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let verdict = call(
        format!("VerifyChain {coi}"),
        api.client.verify_chain(api.req(pb::VerifyChainRequest {
            coi: coi.to_owned(),
        })),
    )
    .await?;
    Ok((events, verdict))
}

/// Size of the largest file under `dir`.
fn largest_file(dir: &std::path::Path) -> Result<u64> {
    let mut largest = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        largest = largest.max(if meta.is_dir() {
            largest_file(&entry.path())?
        } else {
            meta.len()
        });
    }
    Ok(largest)
}

/// The last lines the node wrote, for a failure report.
fn log_tail(node: &Node) -> String {
    let lines: Vec<String> = node.log.try_iter().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn start(dir: &std::path::Path) -> Result<Node> {
    tokio::task::block_in_place(|| Node::start(dir, &[]))
}

async fn run(seed: u64, plan: &[Plan]) -> Result<()> {
    let cycles = plan.len();
    let dir = tempfile::tempdir()?;
    let mut rng = SplitMix64(seed);
    let mut node = start(dir.path())?;
    let auditor = node.token("auditor")?;
    let mut tokens = BTreeMap::new();
    for (site, _) in SITES {
        tokens.insert(site, node.token(site)?);
    }
    let mut clients: Vec<Client> = Vec::new();
    for (site, letter) in SITES {
        for n in 0..CLIENTS_PER_SITE {
            clients.push(Client {
                site,
                letter,
                n,
                rng: SplitMix64(rng.next()),
                chain: None,
                n_chains: 0,
                pending: None,
            });
        }
    }
    let mut model = Model::default();
    for (cycle, &how) in (1..=cycles).zip(plan) {
        let result = run_cycle(
            cycle,
            cycle % FULL_CHECK_EVERY == 0 || cycle == cycles,
            how,
            &mut rng,
            dir.path(),
            &mut node,
            &auditor,
            &tokens,
            &mut clients,
            &mut model,
        )
        .await;
        if let Err(e) = result {
            bail!(
                "cycle {cycle}: {e:#}\n--- last lines of the node's log ---\n{}",
                log_tail(&node)
            );
        }
    }
    let code = tokio::task::block_in_place(|| node.stop())?;
    ensure!(code == Some(0), "the node exited with {code:?} on SIGTERM");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run_cycle(
    cycle: usize,
    read_all: bool,
    how: Plan,
    rng: &mut SplitMix64,
    dir: &std::path::Path,
    node: &mut Node,
    auditor: &str,
    tokens: &BTreeMap<&str, String>,
    clients: &mut Vec<Client>,
    model: &mut Model,
) -> Result<()> {
    let until_refused = matches!(how, Plan::DiskRefuses);
    let mut limit = 0;
    if until_refused {
        let code = tokio::task::block_in_place(|| node.stop())?;
        ensure!(code == Some(0), "the node exited with {code:?} on SIGTERM");
        limit = largest_file(&dir.join("store"))? + DISK_HEADROOM_BYTES;
        *node = tokio::task::block_in_place(|| Node::start_with_file_size_limit(dir, &[], limit))
            .context("starting the node with a file size limit")?;
    }
    let killed = Arc::new(AtomicBool::new(false));
    let mut apis = Vec::new();
    for c in clients.iter() {
        apis.push(Api::connect(node, &tokens[c.site]).await?);
    }
    let mut tasks = Vec::new();
    for (c, api) in std::mem::take(clients).into_iter().zip(apis) {
        tasks.push(tokio::spawn(c.run(api, killed.clone(), until_refused)));
    }
    let (mut stopped, deadline) = match how {
        Plan::Kill => {
            // The random kill point (not synchronisation: the clients run until the node
            // dies).
            let kill_after = rng.range(KILL_AFTER_MS);
            tokio::time::sleep(Duration::from_millis(kill_after)).await;
            killed.store(true, Ordering::SeqCst);
            tokio::task::block_in_place(|| node.kill());
            (format!("killed after {kill_after} ms"), CALL_DEADLINE)
        }
        // The clients run until the disk refuses.
        Plan::DiskRefuses => (
            format!("disk refused past {limit} bytes"),
            DISK_FILL_DEADLINE,
        ),
    };
    let mut acked = Vec::new();
    for t in tasks {
        let (c, acks) = tokio::time::timeout(deadline, t)
            .await
            .with_context(|| format!("a client did not stop within {deadline:?} ({stopped})"))??
            .context("client")?;
        acked.extend(acks);
        clients.push(c);
    }
    if until_refused {
        let code = tokio::task::block_in_place(|| node.wait_exit())
            .context("the node did not stop by itself after the disk refused a write")?;
        let said: Vec<String> = node.log.try_iter().collect();
        // Which write the disk refused first: sled's file usually grows past the limit
        // before the log's next 1 MiB of zeros does. Either way the node must say that the
        // disk is full.
        let failure = [
            ("index failure", "the index write failed"),
            ("storage failure: refusing", "the log write failed"),
        ]
        .into_iter()
        .find(|(line, _)| {
            said.iter()
                .any(|l| l.contains(line) && l.contains("the disk is full"))
        })
        .map(|(_, what)| what);
        ensure!(
            code == Some(1) && failure.is_some(),
            "after the disk refused a write the node exited with {code:?} (want 1, after logging a failed write and that the disk is full); its log:\n{}",
            said[said.len().saturating_sub(40)..].join("\n")
        );
        stopped = format!("{stopped}: {}", failure.unwrap_or_default());
    }
    let unknown: Vec<Pending> = clients.iter().filter_map(|c| c.pending.clone()).collect();

    let restarting = Instant::now();
    *node = start(dir).context("restarting the node after SIGKILL")?;
    let restart_ms = restarting.elapsed().as_millis();
    let mut reader = Api::connect(node, auditor).await?;
    let stored = check(&mut reader, model, &acked, &unknown, read_all)
        .await
        .context("after restart")?;

    // Retry what was in flight: the stored event comes back, or it is appended now.
    let mut next_seq: BTreeMap<String, u64> = model
        .feeds
        .iter()
        .map(|(s, f)| (s.clone(), f.len() as u64 + 1))
        .collect();
    let mut apis = BTreeMap::new();
    for (site, token) in tokens {
        apis.insert(site.to_string(), Api::connect(node, token).await?);
    }
    let mut after = Vec::new();
    let (mut n_were_stored, mut n_appended) = (0, 0);
    for c in clients.iter_mut() {
        let Some(p) = c.pending.take() else { continue };
        let api = apis.get_mut(&p.site).context("api")?;
        let rid = p.req.request_id.clone();
        let receipt = match api.append(p.req.clone()).await? {
            Ok(r) => r,
            Err(s) => bail!(
                "retry of {rid} after restart: {:?}: {}",
                s.code(),
                s.message()
            ),
        };
        match stored.get(&rid) {
            Some(f) => {
                n_were_stored += 1;
                ensure!(
                    receipt.duplicate && receipt.event_id == f.id && receipt.seq == f.seq,
                    "retry of {rid}, which is stored as {f:?}, answered {receipt:?}"
                );
            }
            None => {
                n_appended += 1;
                let seq = next_seq.get_mut(&p.site).context("site")?;
                ensure!(
                    !receipt.duplicate && receipt.seq == *seq,
                    "retry of {rid}, which was not stored, should append {} seq {seq}; answered {receipt:?}",
                    p.site
                );
                *seq += 1;
            }
        }
        after.push(Ack {
            rid,
            coi: p.coi,
            site: p.site,
            receipt,
        });
    }
    // A new append per site continues its feed.
    for (site, _) in SITES {
        let c = clients
            .iter_mut()
            .find(|c| c.site == site)
            .context("client")?;
        let p = c.next_request();
        let api = apis.get_mut(site).context("api")?;
        let rid = p.req.request_id.clone();
        let receipt = match api.append(p.req.clone()).await? {
            Ok(r) => r,
            Err(s) => bail!(
                "new append {rid} after restart: {:?}: {}",
                s.code(),
                s.message()
            ),
        };
        let seq = next_seq.get_mut(site).context("site")?;
        ensure!(
            !receipt.duplicate && receipt.seq == *seq,
            "new append {rid} after restart should be {site} seq {seq}; answered {receipt:?}"
        );
        *seq += 1;
        after.push(Ack {
            rid,
            coi: p.coi,
            site: p.site,
            receipt,
        });
    }
    check(&mut reader, model, &after, &[], false)
        .await
        .context("after retrying the requests in flight")?;

    println!(
        "cycle {cycle}: {stopped}; {} acknowledged, {} in flight ({n_were_stored} had been stored, {n_appended} appended on retry); restart {restart_ms} ms; feeds {}{}",
        acked.len(),
        unknown.len(),
        model
            .feeds
            .iter()
            .map(|(s, f)| format!("{s}={}", f.len()))
            .collect::<Vec<_>>()
            .join(" "),
        if read_all { "; full re-read" } else { "" }
    );
    Ok(())
}
