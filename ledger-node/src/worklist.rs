//! The worklist: chains with where their units are, their next deadline and what is open
//! on them, filtered and sorted by urgency. One query serves `ListChains` and the web page,
//! so both show the same rows in the same order.
//!
//! Rows are built from the node's chain state (the projections of its verified, committed
//! chains) under the ledger lock, and nothing here decides ledger semantics: status, custody
//! and deadlines come from ledger-core's fold.

use crate::ledger::Ledger;
use ledger_core::{Coi, Custody, SiteId, Status, Timestamp};
use std::collections::HashMap;

/// Where one live unit is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Held {
        site: SiteId,
        location: Option<String>,
    },
    InTransit {
        from: SiteId,
        to: SiteId,
        since: Timestamp,
    },
}

#[derive(Debug, Clone)]
pub struct UnitRow {
    pub unit: String,
    pub place: Place,
    pub stability_deadline: Timestamp,
}

/// One chain as a worklist shows it.
#[derive(Debug, Clone)]
pub struct Row {
    pub coi: Coi,
    pub status: Status,
    pub live: bool,
    /// Live units only.
    pub units: Vec<UnitRow>,
    pub next_deadline: Option<Timestamp>,
    pub n_events: u64,
    pub n_findings: usize,
    pub last_event_at: Timestamp,
    pub n_flagged: usize,
    pub n_alerts: usize,
}

impl Row {
    pub fn needs_action(&self) -> bool {
        self.n_alerts > 0 || self.n_findings > 0
    }

    /// Sites holding a live unit now.
    pub fn custodians(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .units
            .iter()
            .filter_map(|u| match &u.place {
                Place::Held { site, .. } => Some(site.to_string()),
                Place::InTransit { .. } => None,
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }

    fn touches(&self, site: &SiteId) -> bool {
        self.units.iter().any(|u| match &u.place {
            Place::Held { site: s, .. } => s == site,
            Place::InTransit { from, to, .. } => from == site || to == site,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    #[default]
    Coi,
    /// Overdue first, then least time left; chains with no live unit last.
    Deadline,
}

/// Where a page ends: the sort key of its last row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cursor {
    Coi(Coi),
    Deadline(i64, Coi),
}

impl Cursor {
    /// The page token: the COI alone for the COI sort (as before sorts existed), and
    /// `d.<ms>.<coi>` for the deadline sort.
    pub fn to_token(&self) -> String {
        match self {
            Cursor::Coi(c) => c.to_string(),
            Cursor::Deadline(ms, c) => format!("d.{ms}.{c}"),
        }
    }

    /// # Errors
    /// A sentence saying what is wrong with the token.
    pub fn parse(token: &str, sort: Sort) -> Result<Cursor, String> {
        let bad = || {
            format!("{token:?} is not a page token of this listing; pass the next_page_token of the previous page unchanged, with the same sort")
        };
        match sort {
            Sort::Coi => Coi::parse(token).map(Cursor::Coi).map_err(|_| bad()),
            Sort::Deadline => {
                let rest = token.strip_prefix("d.").ok_or_else(bad)?;
                let (ms, coi) = rest.split_once('.').ok_or_else(bad)?;
                let ms: i64 = ms.parse().map_err(|_| bad())?;
                let coi = Coi::parse(coi).map_err(|_| bad())?;
                Ok(Cursor::Deadline(ms, coi))
            }
        }
    }
}

/// Which rows, in which order.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub status: Option<Status>,
    pub site: Option<SiteId>,
    pub needs_action: bool,
    pub live_only: bool,
    pub sort: Sort,
    pub after: Option<Cursor>,
    pub limit: usize,
}

fn cursor(row: &Row, sort: Sort) -> Cursor {
    match sort {
        Sort::Coi => Cursor::Coi(row.coi.clone()),
        Sort::Deadline => {
            Cursor::Deadline(row.next_deadline.map_or(i64::MAX, |t| t.0), row.coi.clone())
        }
    }
}

/// One chain's row.
pub fn row(ledger: &Ledger, coi: &Coi, n_alerts: usize) -> Option<Row> {
    let chain = ledger.chain(coi).filter(|c| c.committed > 0)?;
    let p = &chain.projection;
    let units: Vec<UnitRow> = p
        .units()
        .filter_map(|u| {
            let place = match &u.custody {
                Custody::Held { site } => Place::Held {
                    site: site.clone(),
                    location: u.location.clone(),
                },
                Custody::InTransit {
                    from, to, since, ..
                } => Place::InTransit {
                    from: from.clone(),
                    to: to.clone(),
                    since: *since,
                },
                _ => return None,
            };
            Some(UnitRow {
                unit: u.unit.to_string(),
                place,
                stability_deadline: u.stability_deadline,
            })
        })
        .collect();
    let n_flagged = p
        .units()
        .filter(|u| {
            matches!(u.custody, Custody::InTransit { .. }) || !u.excursions_pending.is_empty()
        })
        .count();
    Some(Row {
        coi: coi.clone(),
        status: p.status(),
        live: !units.is_empty(),
        units,
        next_deadline: p.next_deadline(),
        n_events: chain.committed,
        n_findings: chain.findings.len(),
        last_event_at: chain.last_event_at,
        n_flagged,
        n_alerts,
    })
}

/// The rows `q` asks for, and the cursor of the next page when there is one.
pub fn rows(
    ledger: &Ledger,
    alerts: &HashMap<Coi, usize>,
    q: &Query,
) -> (Vec<Row>, Option<Cursor>) {
    let mut all: Vec<Row> = ledger
        .chains()
        .keys()
        .filter_map(|coi| row(ledger, coi, alerts.get(coi).copied().unwrap_or(0)))
        .filter(|r| q.status.is_none_or(|s| s == r.status))
        .filter(|r| !q.live_only || r.live)
        .filter(|r| !q.needs_action || r.needs_action())
        .filter(|r| q.site.as_ref().is_none_or(|s| r.touches(s)))
        .collect();
    all.sort_by_cached_key(|r| cursor(r, q.sort));
    let start = match &q.after {
        None => 0,
        Some(after) => all.partition_point(|r| cursor(r, q.sort) <= *after),
    };
    let mut page: Vec<Row> = all.drain(start..).collect();
    let next = if page.len() > q.limit {
        page.truncate(q.limit);
        page.last().map(|r| cursor(r, q.sort))
    } else {
        None
    };
    (page, next)
}
