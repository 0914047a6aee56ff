//! Partner KPIs over a period, from the node's verified chains (see `ledger_core::kpi`).
//!
//! Owns the I/O around the core computation: which chains to read, reading their committed
//! events from the store off the async runtime, and handing them with the chains' findings
//! to [`ledger_core::kpi::compute`]. Every figure and every rule about which chain counts
//! is the core's; nothing here decides ledger semantics. Serves GetKpis and the web page.
//!
//! Consistency: each chain's committed length and findings are taken together under the
//! ledger lock, in one short pass that reads no disk; the events are then read from the
//! store without the lock, up to that length. A chain that grows meanwhile is counted as
//! it was at the snapshot. Reads do not wait for appends in flight: a caller that must see
//! every append answered before it asked (a gRPC read) waits on `Pipeline::caught_up`
//! first.
//!
//! Limits: a chain longer than [`CHAIN_EVENTS_MAX`] or a period whose chains hold more
//! than [`KPI_EVENTS_MAX`] events in all is refused, naming the limit, rather than read
//! into memory.

use crate::pipeline::Pipeline;
use crate::store::StoreError;
use ledger_core::kpi::{compute, ChainInput, KpiError, KpiReport, Period};
use ledger_core::{AlertPolicy, Coi, Event, EventId, Finding};
use std::collections::HashSet;

/// Most events read from one chain (the limit VerifyChain and ExportChain apply).
pub const CHAIN_EVENTS_MAX: u64 = crate::grpc::service::CHAIN_EVENTS_MAX;
/// Most events read for one report, across its chains: every one is held in memory while
/// the figures are computed.
pub const KPI_EVENTS_MAX: u64 = 2_000_000;

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum KpiFailure {
    #[error("chain {coi} has {n_events} events, more than the {max} a report reads per chain")]
    ChainTooLong { coi: Coi, n_events: u64, max: u64 },
    #[error("the chains with events in the period hold {n_events} events, more than the {max} one report reads; ask for a shorter period")]
    TooManyEvents { n_events: u64, max: u64 },
    #[error("reading chain {coi}: {source}")]
    Store {
        coi: Coi,
        #[source]
        source: StoreError,
    },
    /// The blocking task that reads and computes panicked or was cancelled.
    #[error("the task computing the KPIs ended without an answer: {0}")]
    Task(#[source] tokio::task::JoinError),
    #[error("{0}")]
    Kpi(#[from] KpiError),
}

/// What is taken of one chain under the ledger lock.
struct Snapshot {
    coi: Coi,
    n_committed: u64,
    /// Appends were in flight (assigned positions past `n_committed`).
    in_flight: bool,
    findings: Vec<Finding>,
}

/// The KPIs of `period` over every chain this node holds, judged with `policy` (lane
/// transit limits).
///
/// Chains whose latest scan time is before the period are not read: they cannot have an
/// event in it. Each chain's events are passed in store order, which is causal order (a
/// node stores an event only after its parents).
///
/// # Errors
/// [`KpiFailure::ChainTooLong`] and [`KpiFailure::TooManyEvents`] past the limits;
/// [`KpiFailure::Store`] when the store cannot be read; [`KpiFailure::Kpi`] when the core
/// refuses (a span that does not fit in milliseconds).
pub async fn report(
    pipeline: &Pipeline,
    period: Period,
    policy: &AlertPolicy,
) -> Result<KpiReport, KpiFailure> {
    let snapshots = snapshot(pipeline, period)?;
    let store = pipeline.store().clone();
    let policy = policy.clone();
    tokio::task::spawn_blocking(move || {
        let mut chains: Vec<(Coi, Vec<Event>, Vec<Finding>)> = Vec::with_capacity(snapshots.len());
        for s in snapshots {
            let events: Vec<Event> = store
                .chain(&s.coi, 0, s.n_committed as usize)
                .map_err(|source| KpiFailure::Store {
                    coi: s.coi.clone(),
                    source,
                })?
                .into_iter()
                .map(|(_, e)| e)
                .collect();
            let findings = if s.in_flight {
                committed_findings(s.findings, &events)
            } else {
                s.findings
            };
            chains.push((s.coi, events, findings));
        }
        let inputs = chains.iter().map(|(coi, events, findings)| ChainInput {
            coi,
            events,
            findings,
        });
        Ok(compute(inputs, period, &policy)?)
    })
    .await
    .map_err(KpiFailure::Task)?
}

/// Each chain that may have an event in the period, taken under the ledger lock.
fn snapshot(pipeline: &Pipeline, period: Period) -> Result<Vec<Snapshot>, KpiFailure> {
    let ledger = pipeline.ledger();
    let mut snapshots = Vec::new();
    let mut n_events: u64 = 0;
    for (coi, chain) in ledger.chains() {
        // `last_event_at` is the latest scan time of any event, in flight ones included,
        // so a chain skipped here has no committed event in the period either.
        if chain.committed == 0 || chain.last_event_at < period.from() {
            continue;
        }
        if chain.committed > CHAIN_EVENTS_MAX {
            return Err(KpiFailure::ChainTooLong {
                coi: coi.clone(),
                n_events: chain.committed,
                max: CHAIN_EVENTS_MAX,
            });
        }
        n_events += chain.committed;
        if n_events > KPI_EVENTS_MAX {
            return Err(KpiFailure::TooManyEvents {
                n_events,
                max: KPI_EVENTS_MAX,
            });
        }
        snapshots.push(Snapshot {
            coi: coi.clone(),
            n_committed: chain.committed,
            in_flight: chain.len > chain.committed,
            findings: chain.findings.clone(),
        });
    }
    Ok(snapshots)
}

/// The findings of a chain that had appends in flight at the snapshot, without those that
/// name an event not read (an event in flight, not yet committed): the core would count
/// such a finding as naming no event of the chain.
fn committed_findings(findings: Vec<Finding>, events: &[Event]) -> Vec<Finding> {
    let read: HashSet<EventId> = events.iter().map(Event::id).collect();
    findings
        .into_iter()
        .filter(|f| f.events.iter().all(|id| read.contains(id)))
        .collect()
}
