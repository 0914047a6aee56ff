//! The store on its own: CPU per event of writing groups to the log (with their fdatasync)
//! and of indexing them in sled, and the store's size on disk and the process RSS after.
//!
//! `cargo bench -p ledger-node --bench store [-- EVENTS]` (default 200,000 events in groups
//! of 32, the group size of a busy node). The events are notes signed by one site and spread
//! round-robin over chains of 100 events, as many clients appending to their own chains
//! interleave them. `SLED_CACHE_MIB` sets the index cache (default: the node's default).

mod common;
use common::dir_bytes;

use ledger_core::{
    Body, Coi, EventId, Meaning, NetworkId, OperatorId, SecretKey, Seq, Signer, SiteId, Timestamp,
    UnsignedEvent,
};
use ledger_node::store::{Record, Store, StoreConfig};
use std::time::{Duration, Instant};

// The node's allocator, so RSS means what it means in the node.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const GROUP: usize = 32;
const CHAIN_EVENTS: usize = 100;

/// Signs `n` notes of one site's feed, round-robin over `n / CHAIN_EVENTS` chains.
fn events(n: usize) -> anyhow::Result<(Vec<Record>, Coi)> {
    let key = SecretKey::from_seed(&[7; 32]);
    let site = SiteId::parse("clinic-a")?;
    let network = NetworkId::parse("bench-net")?;
    let n_chains = n.div_ceil(CHAIN_EVENTS).max(1);
    let cois: Vec<Coi> = (0..n_chains)
        .map(|i| {
            Coi::parse(&format!(
                "CHA999926{}{:05}",
                char::from(b'A' + (i / 100_000) as u8),
                i % 100_000
            ))
        })
        .collect::<Result<_, _>>()?;
    let mut heads: Vec<Option<EventId>> = vec![None; n_chains];
    let mut prev = None;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let c = i % n_chains;
        let t = Timestamp(1_772_438_400_000 + i as i64);
        let event = UnsignedEvent {
            network: network.clone(),
            author: site.clone(),
            seq: Seq(i as u64 + 1),
            prev,
            key: key.public(),
            coi: cois[c].clone(),
            parents: heads[c].into_iter().collect(),
            occurred_at: t,
            recorded_at: t,
            signer: Signer {
                operator: OperatorId::parse("op.bench")?,
                printed_name: "Bench Operator".to_owned(),
                meaning: Meaning::Performed,
            },
            body: Body::Note {
                text: "temperature log reviewed, within range".to_owned(),
            },
        }
        .sign(&key);
        prev = Some(event.id());
        heads[c] = Some(event.id());
        out.push(Record {
            event,
            request_id: Some(format!("request-{i:08}")),
        });
    }
    Ok((out, cois[0].clone()))
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(200_000);
    let (records, first_coi) = events(n)?;
    let dir = tempfile::tempdir()?;
    let cfg = StoreConfig {
        dir: dir.path().join("store"),
        sled_cache_bytes: std::env::var("SLED_CACHE_MIB")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(ledger_node::config::SLED_CACHE_MIB_DEFAULT)
            << 20,
        preallocate: true,
    };
    let rss_before = rss_mib();
    let (store, _) = Store::open(&cfg, |_| {})?;
    let (mut t_write, mut t_index) = (Duration::ZERO, Duration::ZERO);
    for group in records.chunks(GROUP) {
        let t = Instant::now();
        let written = store.write(group)?;
        t_write += t.elapsed();
        let t = Instant::now();
        store.index(group, &written)?;
        t_index += t.elapsed();
    }
    let per_event = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!(
        "store: {n} events in groups of {GROUP}: write + fdatasync {:.1} µs/event, index {:.1} µs/event",
        per_event(t_write),
        per_event(t_index)
    );
    println!(
        "store: RSS grew {:.1} MiB while writing and indexing",
        rss_mib() - rss_before
    );
    let t = Instant::now();
    let chain = store.chain(&first_coi, 0, n)?;
    let elapsed = t.elapsed();
    println!(
        "store: read a chain back ({} events): {:.1} µs/event",
        chain.len(),
        elapsed.as_secs_f64() * 1e6 / chain.len().max(1) as f64
    );
    drop(chain);
    println!(
        "store: RSS grew {:.1} MiB; on disk {:.1} MiB (log + index)",
        rss_mib() - rss_before,
        dir_bytes(&cfg.dir) as f64 / (1 << 20) as f64
    );
    Ok(())
}
