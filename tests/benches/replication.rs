//! Replication figures on this machine: a real nats-server and release-built nodes on
//! loopback. Prints each figure against its target, measured in the same run:
//!
//! - latency from the append's answer at node A to the event being stored, verified and
//!   visible at node B (B's WatchChain), p50 and p99;
//! - sustained: A's standalone append rate (16 clients), then appends at fractions of it
//!   (32 paced clients) for a while, sampling how many events B lags behind; the lag is bounded when it does
//!   not grow from the first third of the run to the last;
//! - catch-up: B is stopped while 100,000 events are appended at A, then started; its
//!   rate of storing them against the core verifier's rate on the same events.
//!
//! `cargo bench -p tests --bench replication [-- --quick]` (`--quick`: shorter runs).

use anyhow::Context;
use ledger_client::client::Client;
use ledger_core::{Coi, Event};
use proto::v1 as pb;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tests::nats::NatsServer;
use tests::Node;
use tokio_stream::StreamExt;

const T0: i64 = 1_772_438_400;
const CATCH_UP_EVENTS: usize = 100_000;
const CATCH_UP_CHAINS: usize = 100;

fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

fn coi(tag: char, i: usize) -> Coi {
    Coi::parse(&format!("CHA999926{tag}{i:05}")).expect("coi")
}

fn request(rid: String, coi: &Coi, kind: pb::event_body::Kind) -> pb::AppendRequest {
    pb::AppendRequest {
        request_id: rid,
        site_id: "clinic-a".into(),
        coi: coi.to_string(),
        occurred_time: ts(T0),
        signer: Some(pb::Signer {
            operator_id: "op.one".into(),
            printed_name: "Op One".into(),
            meaning: pb::SignatureMeaning::Performed as i32,
        }),
        body: Some(pb::EventBody { kind: Some(kind) }),
    }
}

fn collection(tag: char, i: usize) -> pb::event_body::Kind {
    pb::event_body::Kind::Collection(pb::Collection {
        units: vec![pb::NewUnit {
            unit_id: format!("APH-{tag}{i}"),
            stability_deadline: ts(T0 + 72 * 3600),
            temp_min_centi_celsius: 200,
            temp_max_centi_celsius: 800,
        }],
        dins: vec![format!("A999926{}{i:05}", u32::from(tag) % 9 + 1)],
    })
}

fn note(text: String) -> pb::event_body::Kind {
    pb::event_body::Kind::Note(pb::Note { text })
}

fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort_unstable();
    let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[i.min(samples.len() - 1)]
}

struct Bench {
    nats: NatsServer,
    dir: tempfile::TempDir,
}

impl Bench {
    fn network(&self) -> std::path::PathBuf {
        self.dir.path().join("a/network")
    }

    fn node(&self, name: &str, sites: &[&str], nats: bool) -> anyhow::Result<Node> {
        let url = self.nats.url();
        let network = self.network().display().to_string();
        let mut args: Vec<&str> = Vec::new();
        if nats {
            args.extend(["--nats-url", url.as_str()]);
        }
        if name != "a" {
            args.extend(["--network-dir", network.as_str()]);
        }
        for s in sites {
            args.extend(["--site", s]);
        }
        Node::start(&self.dir.path().join(name), &args)
    }

    async fn client(&self, node: &Node, token: &str) -> anyhow::Result<Client> {
        let t = std::fs::read_to_string(self.network().join(format!("tokens/{token}.token")))?;
        Ok(Client::connect(&node.addr, t.trim().to_owned()).await?)
    }
}

async fn n_events(c: &Client) -> anyhow::Result<u64> {
    Ok(c.node_info().await?.n_events)
}

/// Appends notes from `clients` concurrent clients for `window`, at most `rate` per second
/// in total (None: as fast as they can); returns how many were answered.
async fn load(
    c: &Client,
    chains: &[Coi],
    tag: &str,
    clients: usize,
    window: Duration,
    rate: Option<f64>,
    counter: Arc<AtomicU64>,
) -> anyhow::Result<u64> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..clients {
        let c = c.clone();
        let chains = chains.to_vec();
        let tag = tag.to_owned();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while start.elapsed() < window {
                if let Some(r) = rate {
                    // Each client's share of the rate, paced against the clock.
                    let due = Duration::from_secs_f64(n as f64 * clients as f64 / r);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                }
                let coi = &chains[(k + n as usize) % chains.len()];
                c.append(request(
                    format!("{tag}-{k}-{n}"),
                    coi,
                    note(format!("{tag} {k} {n}")),
                ))
                .await?;
                n += 1;
                counter.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<u64, anyhow::Error>(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total)
}

async fn open_chains(c: &Client, tag: char, n: usize) -> anyhow::Result<Vec<Coi>> {
    let mut out = Vec::new();
    let reqs: Vec<pb::AppendRequest> = (0..n)
        .map(|i| request(format!("open-{tag}-{i}"), &coi(tag, i), collection(tag, i)))
        .collect();
    for chunk in reqs.chunks(500) {
        for r in c.append_batch(chunk.to_vec()).await? {
            r?;
        }
    }
    for i in 0..n {
        out.push(coi(tag, i));
    }
    Ok(out)
}

async fn wait_for(c: &Client, want: u64, within: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        if n_events(c).await? >= want {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(
            start.elapsed() < within,
            "node B holds {} of {want} events after {within:?}",
            n_events(c).await?
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "-p", "ledger-node", "--locked"])
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .status()
            .context("building ledger-node")?;
    anyhow::ensure!(
        status.success(),
        "cargo build --release -p ledger-node failed"
    );
    let bench = Bench {
        nats: NatsServer::start()?,
        dir: tempfile::tempdir()?,
    };
    println!(
        "replication benchmark: nats-server on 127.0.0.1, release nodes, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Standalone rate first (node S, no NATS).
    let window = Duration::from_secs(if quick { 3 } else { 8 });
    let a = bench.node("a", &["clinic-a", "clinic-s"], true)?;
    let s = bench.node("s", &["clinic-a"], false)?;
    let sc = bench.client(&s, "clinic-a").await?;
    let s_chains = open_chains(&sc, 'S', 16).await?;
    let n = load(
        &sc,
        &s_chains,
        "standalone",
        16,
        window,
        None,
        Arc::new(AtomicU64::new(0)),
    )
    .await?;
    let standalone = n as f64 / window.as_secs_f64();
    drop(s);
    println!("standalone append rate (16 clients, one event per call): {standalone:.0}/s");

    let b = bench.node("b", &["depot-1", "depot-2"], true)?;
    let ac = bench.client(&a, "clinic-a").await?;
    let bc = bench.client(&b, "auditor").await?;

    // 1. Latency.
    let chains = open_chains(&ac, 'L', 8).await?;
    wait_for(&bc, 8, Duration::from_secs(30)).await?;
    let n_lat = if quick { 200 } else { 1000 };
    let mut samples = Vec::with_capacity(n_lat);
    for i in 0..n_lat {
        let coi = &chains[i % chains.len()];
        let mut watch = bc.watch(coi, 0).await?;
        let acked = {
            ac.append(request(
                format!("lat-{i}"),
                coi,
                note(format!("latency {i}")),
            ))
            .await?;
            Instant::now()
        };
        // The watch first replays what B holds; wait for the new event.
        let want = format!("latency {i}");
        loop {
            let w = tokio::time::timeout(Duration::from_secs(10), watch.next())
                .await
                .context("no event at B within 10 s")?
                .context("watch ended")??;
            if matches!(w.event.body(), ledger_core::Body::Note { text } if *text == want) {
                samples.push(acked.elapsed());
                break;
            }
        }
    }
    let p50 = quantile(&mut samples, 0.5);
    let p99 = quantile(&mut samples, 0.99);
    println!("latency A answered -> stored and verified at B (n={n_lat}): p50 {:.1} ms, p99 {:.1} ms (target p50 < 50 ms: {})", p50.as_secs_f64() * 1e3, p99.as_secs_f64() * 1e3, if p50 < Duration::from_millis(50) { "met" } else { "MISSED" });

    // 2. Sustained.
    let sustain = Duration::from_secs(if quick { 10 } else { 60 });
    for fraction in [0.5, 0.75, 1.0] {
        let rate = standalone * fraction;
        let sent = Arc::new(AtomicU64::new(0));
        let base_a = n_events(&ac).await?;
        let base_b = n_events(&bc).await?;
        let run = {
            let ac = ac.clone();
            let chains = chains.clone();
            let sent = sent.clone();
            let tag = format!("sustain{fraction}");
            tokio::spawn(
                async move { load(&ac, &chains, &tag, 32, sustain, Some(rate), sent).await },
            )
        };
        let start = Instant::now();
        let mut lags: Vec<(f64, u64)> = Vec::new();
        while start.elapsed() < sustain {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let done = sent.load(Ordering::Relaxed);
            let held = n_events(&bc).await?.saturating_sub(base_b);
            lags.push((start.elapsed().as_secs_f64(), done.saturating_sub(held)));
        }
        let n = run.await??;
        let achieved = n as f64 / sustain.as_secs_f64();
        let third = lags.len() / 3;
        let first = lags[..third.max(1)].iter().map(|l| l.1).max().unwrap_or(0);
        let last = lags[lags.len() - third.max(1)..]
            .iter()
            .map(|l| l.1)
            .max()
            .unwrap_or(0);
        let drain = wait_for(&bc, base_b + n, Duration::from_secs(120)).await?;
        // Bounded: the lag at the end is no more than a second's worth of appends above the
        // start's (noise), i.e. it does not grow with the run's length.
        let bounded = last <= first + achieved as u64;
        println!(
            "sustained at {:.0}% of standalone ({rate:.0}/s asked, {achieved:.0}/s done, {}s): lag max first third {first}, last third {last} events -> {}; drained {:.1} s after the load stopped",
            fraction * 100.0,
            sustain.as_secs(),
            if bounded { "bounded" } else { "GROWING" },
            drain.as_secs_f64()
        );
        let _ = base_a;
        if !bounded {
            break;
        }
    }

    // 3. Catch-up.
    let mut b = b;
    b.stop()?;
    let held_before = {
        // B's count as it stopped (it holds everything appended so far).
        n_events(&ac).await?
    };
    let cu_chains = open_chains(&ac, 'C', CATCH_UP_CHAINS).await?;
    let per_chain = CATCH_UP_EVENTS / CATCH_UP_CHAINS - 1;
    let reqs: Vec<pb::AppendRequest> = (0..per_chain * CATCH_UP_CHAINS)
        .map(|k| {
            request(
                format!("catchup-{k}"),
                &cu_chains[k % CATCH_UP_CHAINS],
                note(format!("catch-up {k}")),
            )
        })
        .collect();
    let upload = Instant::now();
    for chunk in reqs.chunks(1000) {
        for r in ac.append_batch(chunk.to_vec()).await? {
            r?;
        }
    }
    println!(
        "uploaded {} events at A in {:.1} s while B was down",
        CATCH_UP_EVENTS,
        upload.elapsed().as_secs_f64()
    );
    let want = n_events(&ac).await?;
    // Timed from when B serves: opening its store (replaying its log into memory, which
    // grows with everything appended before) is start-up, not catch-up.
    let restart = Instant::now();
    let b = bench.node("b", &["depot-1", "depot-2"], true)?;
    let bc = bench.client(&b, "auditor").await?;
    let started = restart.elapsed();
    let serving = Instant::now();
    let held_at_start = n_events(&bc).await?;
    wait_for(&bc, want, Duration::from_secs(600)).await?;
    let took = serving.elapsed();
    let caught_up = want - held_at_start.max(held_before);
    let catch_up_rate = caught_up as f64 / took.as_secs_f64();
    // The single-node verify rate on the same events: B's VerifyChain over every catch-up chain.
    let verify_start = Instant::now();
    let mut verified = 0u64;
    for c in &cu_chains {
        let v = bc.verify(c).await?;
        verified += v.n_events;
    }
    let verify_rate = verified as f64 / verify_start.elapsed().as_secs_f64();
    let events: Vec<Event> = bc.chain(&cu_chains[0]).await?;
    println!(
        "catch-up: B started in {:.1} s, then stored {caught_up} events in {:.1} s: {catch_up_rate:.0}/s; VerifyChain at B over the same chains: {verify_rate:.0} events/s; ratio {:.2} (target >= 0.5: {})",
        started.as_secs_f64(),
        took.as_secs_f64(),
        catch_up_rate / verify_rate,
        if catch_up_rate >= 0.5 * verify_rate { "met" } else { "MISSED" }
    );
    anyhow::ensure!(
        events.len() == per_chain + 1,
        "chain {} holds {} events at B",
        cu_chains[0],
        events.len()
    );
    drop(a);
    drop(b);
    Ok(())
}
