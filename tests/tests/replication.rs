//! Replication over a real nats-server between real node processes: three nodes (clinic,
//! depot, manufacturer) converge to the identical set of events through a partition, a
//! crash between disk and publish and a crash while consuming; a forged second event for a
//! used (site, seq) is detected and reported by every node; garbage on the subjects is
//! rejected without being stored or stopping the consumer.

use ledger_client::client::{AppendReceipt, Client};
use ledger_core::{Coi, Event, EventId, SecretKey, UnsignedEvent};
use proto::v1 as pb;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tests::nats::NatsServer;
use tests::Node;

/// Which sites each of the three nodes signs for.
const NODE_SITES: [&[&str]; 3] = [
    &["clinic-a", "clinic-s"],
    &["depot-1", "depot-2"],
    &["mfg-1", "lab-1"],
];
const CONVERGE: Duration = Duration::from_secs(30);
const T0: i64 = 1_772_438_400; // 2026-03-02T08:00:00Z

struct Net {
    nats: NatsServer,
    nodes: Vec<Node>,
    dirs: Vec<PathBuf>,
    _tmp: tempfile::TempDir,
}

fn node_args<'a>(nats: &'a str, network: Option<&'a str>, sites: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--nats-url", nats];
    if let Some(n) = network {
        args.extend(["--network-dir", n]);
    }
    for s in sites {
        args.extend(["--site", s]);
    }
    args
}

impl Net {
    async fn start() -> Net {
        let tmp = tempfile::tempdir().expect("temp dir");
        let nats = NatsServer::start().expect("nats-server starts");
        let dirs: Vec<PathBuf> = (0..3)
            .map(|i| tmp.path().join(format!("node{i}")))
            .collect();
        let mut net = Net {
            nats,
            nodes: Vec::new(),
            dirs,
            _tmp: tmp,
        };
        for i in 0..3 {
            let node = net.start_node(i);
            net.nodes.push(node);
        }
        net
    }

    fn network_dir(&self) -> PathBuf {
        self.dirs[0].join("network")
    }

    /// Starts (or restarts) node `i` on its data dir; node 0 created the network.
    fn start_node(&self, i: usize) -> Node {
        let url = self.nats.url();
        let network = self.network_dir();
        let network = network.to_str().expect("utf-8 path").to_owned();
        let args = node_args(&url, (i > 0).then_some(network.as_str()), NODE_SITES[i]);
        Node::start(&self.dirs[i], &args).expect("node starts")
    }

    fn token(&self, name: &str) -> String {
        std::fs::read_to_string(
            self.network_dir()
                .join("tokens")
                .join(format!("{name}.token")),
        )
        .expect("token file")
        .trim()
        .to_owned()
    }

    async fn client(&self, i: usize, token: &str) -> Client {
        Client::connect(&self.nodes[i].addr, self.token(token))
            .await
            .expect("client connects")
    }

    /// Every node's events, chain by chain, once all hold `want` events; fails after
    /// [`CONVERGE`] with what each holds.
    async fn converged(&self, want: usize) -> Vec<BTreeMap<Coi, Vec<EventId>>> {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let mut all = Vec::new();
            for i in 0..self.nodes.len() {
                all.push(events_of(&self.client(i, "auditor").await).await);
            }
            let counts: Vec<usize> = all.iter().map(|m| m.values().map(Vec::len).sum()).collect();
            if counts.iter().all(|&n| n == want) {
                return all;
            }
            assert!(
                Instant::now() < deadline,
                "nodes hold {counts:?} events after {CONVERGE:?}, want {want} each"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A node's events by chain, in its chain order.
async fn events_of(c: &Client) -> BTreeMap<Coi, Vec<EventId>> {
    let mut out = BTreeMap::new();
    let mut token = None;
    loop {
        let page = c
            .chains(None, Some(1000), token.as_ref())
            .await
            .expect("list chains");
        for chain in &page.chains {
            let events = c.chain(&chain.coi).await.expect("get chain");
            out.insert(chain.coi.clone(), events.iter().map(Event::id).collect());
        }
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => return out,
        }
    }
}

fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

fn coi(i: usize) -> Coi {
    Coi::parse(&format!("CHA9999{:02}R{:05}", 26, i)).expect("coi")
}

fn request(
    rid: &str,
    site: &str,
    coi: &Coi,
    at: i64,
    kind: pb::event_body::Kind,
) -> pb::AppendRequest {
    pb::AppendRequest {
        request_id: rid.into(),
        site_id: site.into(),
        coi: coi.to_string(),
        occurred_time: ts(at),
        signer: Some(pb::Signer {
            operator_id: "op.one".into(),
            printed_name: "Op One".into(),
            meaning: pb::SignatureMeaning::Performed as i32,
        }),
        body: Some(pb::EventBody { kind: Some(kind) }),
    }
}

fn collection(i: usize) -> pb::event_body::Kind {
    pb::event_body::Kind::Collection(pb::Collection {
        units: vec![pb::NewUnit {
            unit_id: format!("APH-R{i}"),
            stability_deadline: ts(T0 + 72 * 3600),
            temp_min_centi_celsius: 200,
            temp_max_centi_celsius: 800,
        }],
        dins: vec![format!("A9999261{i:05}")],
    })
}

fn note(text: &str) -> pb::event_body::Kind {
    pb::event_body::Kind::Note(pb::Note { text: text.into() })
}

/// Opens `n` chains at clinic-a through node 0 and waits until every node holds them.
async fn open_chains(net: &Net, n: usize) -> Vec<AppendReceipt> {
    let clinic = net.client(0, "clinic-a").await;
    let mut receipts = Vec::new();
    for i in 0..n {
        let r = clinic
            .append(request(
                &format!("open-{i}"),
                "clinic-a",
                &coi(i),
                T0 + i as i64,
                collection(i),
            ))
            .await
            .expect("collection appended");
        receipts.push(r);
    }
    net.converged(n).await;
    receipts
}

/// Appends `n` notes to chain `coi` at one site, in sequence; request ids `<tag>-<k>`.
async fn append_notes(
    c: &Client,
    site: &str,
    tag: &str,
    coi: &Coi,
    n: usize,
) -> Vec<AppendReceipt> {
    let mut out = Vec::with_capacity(n);
    for k in 0..n {
        let req = request(
            &format!("{tag}-{k}"),
            site,
            coi,
            T0 + 60,
            note(&format!("{tag} {k}")),
        );
        out.push(c.append(req).await.expect("note appended"));
    }
    out
}

/// Appends `per_site` notes at one site of every node, spread over the chains.
async fn notes_everywhere(
    net: &Net,
    tag: &str,
    per_site: usize,
    chains: usize,
) -> Vec<AppendReceipt> {
    let mut tasks = Vec::new();
    for (i, sites) in NODE_SITES.iter().enumerate() {
        let site = sites[0];
        let c = net.client(i, site).await;
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for k in 0..per_site {
                let r = c
                    .append(request(
                        &format!("{tag}-{site}-{k}"),
                        site,
                        &coi(k % chains),
                        T0 + 3600,
                        note(&format!("{tag} {site} {k}")),
                    ))
                    .await
                    .expect("note appended");
                out.push(r);
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("append task"));
    }
    all
}

/// Every node holds exactly the same events in each chain, none twice, and every
/// acknowledged append among them.
fn assert_identical(all: &[BTreeMap<Coi, Vec<EventId>>], acknowledged: &[AppendReceipt]) {
    for (i, node) in all.iter().enumerate() {
        for (coi, ids) in node {
            let distinct: BTreeSet<&EventId> = ids.iter().collect();
            assert_eq!(
                distinct.len(),
                ids.len(),
                "node {i} holds an event of {coi} twice"
            );
        }
    }
    let sets: Vec<BTreeSet<EventId>> = all
        .iter()
        .map(|m| m.values().flatten().copied().collect())
        .collect();
    for (i, s) in sets.iter().enumerate().skip(1) {
        assert_eq!(s, &sets[0], "node {i} and node 0 hold different events");
    }
    for r in acknowledged {
        assert!(
            sets[0].contains(&r.event_id),
            "acknowledged event {} ({} seq {}) is missing",
            r.event_id,
            r.site,
            r.seq
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sites_converge_through_a_partition() {
    let mut net = Net::start().await;
    let mut acked = open_chains(&net, 4).await;
    acked.extend(notes_everywhere(&net, "before", 20, 4).await);
    // The partition: NATS goes away while every site keeps appending locally.
    net.nats.stop();
    acked.extend(notes_everywhere(&net, "during", 30, 4).await);
    // Nothing crossed while NATS was down: each node holds only what it had plus its own.
    let n0 = events_of(&net.client(0, "auditor").await).await;
    assert_eq!(
        n0.values().map(Vec::len).sum::<usize>(),
        4 + 60 + 30,
        "node 0 learned events while NATS was down"
    );
    net.nats.restart().expect("nats restarts");
    let want = 4 + 3 * 20 + 3 * 30;
    let all = net.converged(want).await;
    assert_identical(&all, &acked);
    // Every node gives the same verdict for every chain.
    for c in 0..4 {
        let mut verdicts = Vec::new();
        for i in 0..3 {
            let v = net
                .client(i, "auditor")
                .await
                .verify(&coi(c))
                .await
                .expect("verify");
            verdicts.push((v.verdict, v.n_events, v.findings.len()));
        }
        assert!(
            verdicts.iter().all(|v| *v == verdicts[0]),
            "verdicts differ for {}: {verdicts:?}",
            coi(c)
        );
        assert_eq!(
            verdicts[0].0,
            ledger_core::VerdictKind::Intact,
            "{}",
            coi(c)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_disk_and_publish_or_while_consuming_loses_nothing() {
    let mut net = Net::start().await;
    let mut acked = open_chains(&net, 2).await;
    // Between disk and publish: with NATS down, appends are durable but unpublished; the
    // node is then killed and restarted with NATS back.
    net.nats.stop();
    acked.extend(notes_everywhere(&net, "unpublished", 25, 2).await);
    net.nodes[1].kill();
    net.nats.restart().expect("nats restarts");
    net.nodes[1] = net.start_node(1);
    let want = 2 + 3 * 25;
    let all = net.converged(want).await;
    assert_identical(&all, &acked);

    // While consuming: node 2 is down while 600 events are appended elsewhere, and is killed
    // again as soon as it has stored some of them.
    net.nodes[2].stop().expect("node 2 stops");
    let clinic = net.client(0, "clinic-a").await;
    let reqs: Vec<pb::AppendRequest> = (0..600)
        .map(|k| {
            request(
                &format!("bulk-{k}"),
                "clinic-a",
                &coi(k % 2),
                T0 + 7200,
                note(&format!("bulk {k}")),
            )
        })
        .collect();
    for chunk in reqs.chunks(200) {
        for r in clinic.append_batch(chunk.to_vec()).await.expect("batch") {
            acked.push(r.expect("bulk append"));
        }
    }
    net.nodes[2] = net.start_node(2);
    let deadline = Instant::now() + CONVERGE;
    loop {
        let n = events_of(&net.client(2, "auditor").await)
            .await
            .values()
            .map(Vec::len)
            .sum::<usize>();
        if n > want {
            break;
        }
        assert!(Instant::now() < deadline, "node 2 stored nothing new");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    net.nodes[2].kill();
    net.nodes[2] = net.start_node(2);
    let all = net.converged(want + 600).await;
    assert_identical(&all, &acked);
}

/// Reads a site's secret key from the network directory (a development network's).
fn site_key(network: &Path, site: &str) -> SecretKey {
    let hex = std::fs::read_to_string(network.join("sites").join(format!("{site}.key")))
        .expect("key file");
    let bytes: Vec<u8> = (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex.trim()[i..i + 2], 16).expect("hex"))
        .collect();
    SecretKey::from_seed(&bytes.try_into().expect("32 bytes"))
}

async fn publish(nats_url: &str, subject: String, payload: Vec<u8>) {
    let client = async_nats::connect(nats_url).await.expect("nats connects");
    let js = async_nats::jetstream::new(client);
    js.publish(subject, payload.into())
        .await
        .expect("publish")
        .await
        .expect("stream acknowledges");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_second_event_for_a_used_seq_is_caught_everywhere() {
    let net = Net::start().await;
    open_chains(&net, 2).await;
    let depot = net.client(1, "depot-1").await;
    append_notes(&depot, "depot-1", "depot", &coi(0), 3).await;
    net.converged(5).await;
    let before: Vec<_> = futures_verdicts(&net, &coi(1)).await;

    // depot-1's key signs a different event as its seq 2 (already used).
    let original = depot
        .chain(&coi(0))
        .await
        .expect("chain")
        .into_iter()
        .find(|e| e.author().as_str() == "depot-1" && e.seq().0 == 2)
        .expect("depot-1 seq 2");
    let mut forged: UnsignedEvent = original.unsigned().clone();
    forged.body = ledger_core::Body::Note {
        text: "rewritten history".into(),
    };
    let forged = forged.sign(&site_key(&net.network_dir(), "depot-1"));
    assert_ne!(forged.id(), original.id());
    publish(
        &net.nats.url(),
        "ledger.v1.dev-net.events.depot-1".into(),
        forged.bytes().to_vec(),
    )
    .await;

    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 0..3 {
        let c = net.client(i, "auditor").await;
        loop {
            let v = c.verify(&coi(0)).await.expect("verify");
            if let Some(f) = v.findings.iter().find(|f| f.code == "integrity.feed_fork") {
                assert_eq!(v.verdict, ledger_core::VerdictKind::Broken);
                assert!(
                    f.events.contains(&original.id()) && f.events.contains(&forged.id()),
                    "node {i}: {f:?}"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} did not report the fork within 10 s: {v:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // And the node raises it: a critical `feed_fork` alert naming the site.
        loop {
            let alerts = c.alerts(false).await.expect("alerts");
            if alerts.iter().any(|a| {
                a.kind == "feed_fork"
                    && a.critical
                    && a.site.as_ref().map(|s| s.as_str()) == Some("depot-1")
            }) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} raised no feed_fork alert within 10 s: {alerts:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let listed = c.chains(None, None, None).await.expect("list").chains;
        let chain = listed
            .iter()
            .find(|s| s.coi == coi(0))
            .expect("chain listed");
        assert!(
            chain.n_open_findings >= 1,
            "node {i} lists no open finding: {chain:?}"
        );
        // The proof is in the export and verifies offline.
        let mut bundle = Vec::new();
        c.export(&coi(0), &mut bundle).await.expect("export");
        let anchor = std::fs::read_to_string(net.network_dir().join("anchor.pub")).expect("anchor");
        let anchor =
            ledger_core::PublicKey(EventId::from_hex(anchor.trim()).expect("anchor key").0);
        let report = ledger_core::verify_bundle(&bundle, &anchor, &Default::default());
        assert!(
            report
                .verdict
                .findings
                .iter()
                .any(|f| f.code == ledger_core::Code::FeedFork),
            "node {i}'s export does not prove the fork"
        );
    }
    // An unaffected chain's verdict is unchanged everywhere.
    assert_eq!(futures_verdicts(&net, &coi(1)).await, before);
}

async fn futures_verdicts(net: &Net, coi: &Coi) -> Vec<(ledger_core::VerdictKind, u64, usize)> {
    let mut out = Vec::new();
    for i in 0..3 {
        let v = net
            .client(i, "auditor")
            .await
            .verify(coi)
            .await
            .expect("verify");
        out.push((v.verdict, v.n_events, v.findings.len()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_subjects_is_rejected_and_never_stored() {
    let mut net = Net::start().await;
    open_chains(&net, 1).await;
    let url = net.nats.url();
    let subject = "ledger.v1.dev-net.events.depot-1".to_owned();
    // Random bytes.
    publish(
        &url,
        subject.clone(),
        (0..200u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect(),
    )
    .await;
    // Valid CBOR of the wrong shape.
    publish(&url, subject.clone(), vec![0x83, 0x01, 0x02, 0x03]).await;
    let template = net
        .client(0, "auditor")
        .await
        .chain(&coi(0))
        .await
        .expect("chain")[0]
        .clone();
    // An event signed by a key no certificate names.
    let mut unknown = template.unsigned().clone();
    unknown.author = ledger_core::SiteId::parse("depot-1").expect("site");
    let stranger = SecretKey::from_seed(&[42; 32]);
    unknown.key = stranger.public();
    publish(
        &url,
        subject.clone(),
        unknown.sign(&stranger).bytes().to_vec(),
    )
    .await;
    // An event of another network, signed by depot-1's real key.
    let mut foreign = template.unsigned().clone();
    foreign.author = ledger_core::SiteId::parse("depot-1").expect("site");
    foreign.network = ledger_core::NetworkId::parse("other-net").expect("network");
    let key = site_key(&net.network_dir(), "depot-1");
    foreign.key = key.public();
    publish(&url, subject, foreign.sign(&key).bytes().to_vec()).await;

    // Each node logs the four rejections, each with its reason, and stores none of them.
    for (i, node) in net.nodes.iter_mut().enumerate() {
        let mut reasons = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while reasons.len() < 4 {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = node
                .log
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("node {i} logged only {reasons:?}"));
            if line.contains("rejected a message") {
                let reason = ["undecodable", "unknown_key", "wrong_network"]
                    .into_iter()
                    .find(|r| line.contains(r))
                    .unwrap_or_else(|| {
                        panic!("node {i}: a rejection with an unexpected reason: {line}")
                    });
                reasons.push(reason);
            }
        }
        reasons.sort_unstable();
        assert_eq!(
            reasons,
            ["undecodable", "undecodable", "unknown_key", "wrong_network"],
            "node {i}"
        );
    }
    // Replication goes on.
    let clinic = net.client(0, "clinic-a").await;
    let r = clinic
        .append(request(
            "after-garbage",
            "clinic-a",
            &coi(0),
            T0 + 60,
            note("still replicating"),
        ))
        .await
        .expect("append");
    let all = net.converged(2).await;
    assert_identical(&all, &[r]);
}

/// Against a three-member JetStream cluster (the hub of a real deployment) with the stream
/// replicated three times: replication goes on while one member is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_member_nats_cluster_keeps_replicating_with_one_member_down() {
    let mut cluster = tests::nats::NatsCluster::start(3).expect("nats cluster starts");
    let tmp = tempfile::tempdir().expect("temp dir");
    let urls = cluster.urls();
    let config = |first: usize| {
        // Each node prefers a different member and may fail over to the others.
        let mut order = urls.clone();
        order.rotate_left(first);
        let path = tmp.path().join(format!("node{first}.toml"));
        let list: Vec<String> = order.iter().map(|u| format!("{u:?}")).collect();
        std::fs::write(
            &path,
            format!(
                "[nats]\nurls = [{}]\nreplicas = 3\ncheckpoint_interval_ms = 500\n",
                list.join(", ")
            ),
        )
        .expect("config");
        path
    };
    let (c0, c1) = (config(0), config(1));
    let dirs = [tmp.path().join("clinic"), tmp.path().join("depot")];
    let clinic_node = Node::start(
        &dirs[0],
        &["--config", c0.to_str().expect("path"), "--site", "clinic-a"],
    )
    .expect("clinic node");
    let network = dirs[0].join("network");
    let network = network.to_str().expect("path");
    let depot_node = Node::start(
        &dirs[1],
        &[
            "--config",
            c1.to_str().expect("path"),
            "--network-dir",
            network,
            "--site",
            "depot-1",
        ],
    )
    .expect("depot node");
    let token = |name: &str| {
        std::fs::read_to_string(dirs[0].join(format!("network/tokens/{name}.token")))
            .expect("token")
            .trim()
            .to_owned()
    };
    let clinic = Client::connect(&clinic_node.addr, token("clinic-a"))
        .await
        .expect("client");
    let auditor_at_depot = Client::connect(&depot_node.addr, token("auditor"))
        .await
        .expect("client");
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    // The node signs once it has learned its (empty) feed from the cluster.
    let first = loop {
        match clinic
            .append(request("c-open", "clinic-a", &coi(0), T0, collection(0)))
            .await
        {
            Ok(r) => break r,
            Err(e) => {
                assert!(Instant::now() < deadline, "clinic node never signed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    acked.push(first);
    cluster.stop_one(2);
    acked.extend(append_notes(&clinic, "clinic-a", "member-down", &coi(0), 20).await);
    let deadline = Instant::now() + CONVERGE;
    loop {
        let held: BTreeSet<EventId> = match auditor_at_depot.chain(&coi(0)).await {
            Ok(events) => events.iter().map(Event::id).collect(),
            Err(_) => BTreeSet::new(),
        };
        if acked.iter().all(|r| held.contains(&r.event_id)) {
            assert_eq!(
                held.len(),
                acked.len(),
                "the depot holds events nobody appended"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the depot holds {} of {} events",
            held.len(),
            acked.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.restart_one(2).expect("member restarts");
}

/// A node whose store is lost (or restored from an old backup) must not sign a seq the
/// network already has: with NATS away it refuses to sign for its site and says why; once
/// NATS is back it learns the feed, catches up, and signs the next seq, no fork.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_store_signs_nothing_until_it_has_learned_its_feed() {
    let mut net = Net::start().await;
    open_chains(&net, 1).await;
    let depot = net.client(1, "depot-1").await;
    append_notes(&depot, "depot-1", "depot", &coi(0), 5).await;
    net.converged(6).await;
    // The depot's node loses its store while NATS is down.
    net.nodes[1].stop().expect("node stops");
    net.nats.stop();
    std::fs::remove_dir_all(net.dirs[1].join("store")).expect("store removed");
    net.nodes[1] = net.start_node(1);
    let no_retry = ledger_client::client::ClientConfig {
        append_retries_max: 0,
        ..Default::default()
    };
    let depot = Client::connect_with(&net.nodes[1].addr, net.token("depot-1"), no_retry)
        .await
        .expect("client connects");
    let refused = depot
        .append(request(
            "d-after",
            "depot-1",
            &coi(0),
            T0 + 120,
            note("after the loss"),
        ))
        .await
        .expect_err("a node that has not learned its feed must not sign");
    let text = refused.to_string();
    assert!(
        text.contains("does not sign yet") && text.contains("learning the feed's latest seq"),
        "{text}"
    );
    net.nats.restart().expect("nats restarts");
    let deadline = Instant::now() + CONVERGE;
    let receipt = loop {
        match depot
            .append(request(
                "d-after",
                "depot-1",
                &coi(0),
                T0 + 120,
                note("after the loss"),
            ))
            .await
        {
            Ok(r) => break r,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "the node never learned its feed: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(
        receipt.seq.0, 6,
        "the first seq after the loss continues the feed"
    );
    let all = net.converged(7).await;
    assert_identical(&all, &[receipt]);
    for i in 0..3 {
        let v = net
            .client(i, "auditor")
            .await
            .verify(&coi(0))
            .await
            .expect("verify");
        assert_eq!(
            v.verdict,
            ledger_core::VerdictKind::Intact,
            "node {i}: {:?}",
            v.findings
        );
    }
}

/// Waits until node `c` has an open `site_silent` alert for `site` (or none, when `open`
/// is false); returns how long that took.
async fn site_silent(c: &Client, site: &str, open: bool, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let alerts = c.alerts(false).await.expect("alerts");
        let is_open = alerts
            .iter()
            .any(|a| a.kind == "site_silent" && a.site.as_ref().map(|s| s.as_str()) == Some(site));
        if is_open == open {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "site_silent for {site} is {} after {within:?}: {alerts:?}",
            if is_open { "still open" } else { "not raised" }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A site whose node stops is reported silent by the others once nothing (event or
/// heartbeat) was heard from it for the configured time, and cleared when it is back;
/// a site that is idle but running is never reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_that_falls_silent_is_reported_and_cleared_when_heard_again() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let nats = NatsServer::start().expect("nats-server starts");
    let url = nats.url();
    let cfg = tmp.path().join("node.toml");
    std::fs::write(
        &cfg,
        "[alerts]\nsite_silence_ms = 3000\n[nats]\ncheckpoint_interval_ms = 500\n",
    )
    .expect("config");
    let cfg = cfg.to_str().expect("utf-8").to_owned();
    let dirs = [tmp.path().join("clinic"), tmp.path().join("depot")];
    let network = dirs[0].join("network");
    let network = network.to_str().expect("utf-8").to_owned();
    let start = |i: usize| {
        let mut args = vec!["--config", cfg.as_str()];
        args.extend(node_args(
            &url,
            (i > 0).then_some(network.as_str()),
            NODE_SITES[i],
        ));
        Node::start(&dirs[i], &args).expect("node starts")
    };
    let clinic_node = start(0);
    let mut depot_node = start(1);
    let auditor = std::fs::read_to_string(dirs[0].join("network/tokens/auditor.token"))
        .expect("token")
        .trim()
        .to_owned();
    let clinic = Client::connect(&clinic_node.addr, auditor)
        .await
        .expect("client");

    // depot-1 signs one event (a heartbeat is a signed checkpoint of the site's feed, so
    // a site is heard between events once its feed has begun).
    let token = |name: &str| {
        std::fs::read_to_string(dirs[0].join(format!("network/tokens/{name}.token")))
            .expect("token")
            .trim()
            .to_owned()
    };
    Client::connect(&clinic_node.addr, token("clinic-a"))
        .await
        .expect("client")
        .append(request("s-0", "clinic-a", &coi(0), T0, collection(0)))
        .await
        .expect("collection");
    let depot = Client::connect(&depot_node.addr, token("depot-1"))
        .await
        .expect("client");
    let deadline = Instant::now() + CONVERGE;
    while let Err(e) = depot
        .append(request(
            "s-1",
            "depot-1",
            &coi(0),
            T0 + 60,
            note("idle from here"),
        ))
        .await
    {
        assert!(Instant::now() < deadline, "depot-1 cannot append: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Nobody signs for mfg-1: silent from the start. depot-1's node is idle but sends
    // heartbeats, so it is never reported.
    site_silent(&clinic, "mfg-1", true, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let alerts = clinic.alerts(false).await.expect("alerts");
    assert!(
        !alerts
            .iter()
            .any(|a| a.kind == "site_silent"
                && a.site.as_ref().map(|s| s.as_str()) == Some("depot-1")),
        "{alerts:?}"
    );

    // depot-1's node stops: reported once 3 s passed without a word from it.
    let stopped = Instant::now();
    depot_node.kill();
    site_silent(&clinic, "depot-1", true, Duration::from_secs(10)).await;
    let took = stopped.elapsed();
    assert!(
        took >= Duration::from_millis(2400),
        "raised after only {took:?}"
    );

    // Back: its first heartbeat clears it.
    depot_node = start(1);
    site_silent(&clinic, "depot-1", false, Duration::from_secs(15)).await;
    drop(depot_node);
}
