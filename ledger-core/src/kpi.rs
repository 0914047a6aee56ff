//! Partner KPIs over a period, computed from verified chains only.
//!
//! This module owns the figures partners (sponsors, manufacturers, couriers, clinics) ask
//! of the ledger: vein-to-vein time, how long units stay at each site, how long each lane's
//! handoffs take and how many run late, how often a site or a lane sees a temperature
//! excursion, and how many findings each site's events drew. It takes chains that were
//! already verified (their events in causal order and the verifier's findings) and returns
//! numbers. It does not verify, read a clock, or serialize: the caller verifies, picks the
//! period, and the node or the CLI renders the [`KpiReport`].
//!
//! # Which time
//!
//! Every clock here runs on the events' scan time, [`Event::occurred_at`]: when the thing
//! happened. The signing time ([`Event::recorded_at`]) is not used: a site that was offline
//! records hours after it scanned (normal, never a finding), and a handoff or a stay is a
//! physical span. This is the time the custody fold, the stability checks and the alerts
//! use too, so a KPI never contradicts an alert (`Custody::InTransit::since` is the
//! dispatch's scan time).
//!
//! # Which chains
//!
//! - A chain takes part in a period when at least one of its events was scanned in the
//!   period. Every figure below is counted at some event of the chain (an administration,
//!   the end of a stay, a receipt, a condition record, the event a finding concerns), so a
//!   chain with no event in the period could not add anything; it is left out of every
//!   count, including `chains_broken`.
//! - **Broken chains are reported apart, never averaged in.** A chain whose findings hold a
//!   break (a finding whose [`Finding::severity`] is `Break`: the verdict the verifier gives
//!   is `broken`) adds nothing to any time or rate figure; its COI is listed in
//!   [`KpiReport::chains_broken`]. Its findings still count in the per-site findings: that
//!   figure is about findings.
//! - A chain with findings that are all `Missing` (verdict `incomplete`: evidence absent,
//!   nothing proven wrong) is counted in every figure, like an intact chain, and also in
//!   [`KpiReport::chains_incomplete`], so a reader knows how many counted chains had gaps.
//!   Leaving them out would make figures depend on replication lag; averaging them in
//!   silently would hide the gap.
//! - Figures come from the same fold the verifier and the node use ([`Projection`]), run
//!   again over the chain's events: custody moves exactly as the verifier judged it.
//!
//! # The period
//!
//! A [`Period`] is half-open, `[from, to)`: an event scanned exactly at `from` is in it, one
//! scanned exactly at `to` is not, so consecutive periods count everything once.
//!
//! # The figures
//!
//! - **Vein-to-vein** (one sample per chain): from the chain's collection (the earliest
//!   collection scan time) to its first administration (the earliest administration scan
//!   time), counted when that administration was scanned in the period. A chain opened by
//!   a reassignment has no collection of its own and gives no sample.
//! - **Dwell per site** (one sample per unit and stay): a stay begins when the site gets
//!   custody of a unit (it created the unit: collection, transformation output,
//!   reassignment; or it received it) and ends when custody leaves it (dispatch,
//!   consumption by a transformation, administration, destruction). Counted when the stay
//!   ends in the period. Two bags that travel together are two samples. Packing, storing
//!   and manufacturing steps do not end a stay.
//! - **Handoff per lane** (one sample per dispatch and its receipt, however many units the
//!   shipper held): from the dispatch's scan time to the matching receipt's, on the lane
//!   (dispatching site, site named as taker). Counted when the receipt is in the period.
//! - **Late handoffs**: handoffs counted above that took strictly longer than the lane's
//!   limit, [`AlertPolicy::transit_limit`] (the lane's own limit, else `transit_default`).
//!   A handoff of exactly the limit is not late, matching the alert, which a receipt at
//!   that instant clears.
//! - **Excursion rate per lane**: of the handoffs counted above, how many had an excursion
//!   *while in transit*: a condition record that is an excursion for one of the shipper's
//!   units (the verifier's rule: flagged, or min, max or a reading outside the unit's
//!   allowed range) whose instant (below) lies in `[dispatch, receipt)`. When the record
//!   was made does not matter: a courier's logger is usually read at receipt, after the
//!   fact.
//! - **Excursion rate per site**: of the condition records whose instant lies in a stay at
//!   the site (the site held the unit then), how many were excursions. A record counts
//!   once per site even when it names several units; it counts in the period its own scan
//!   time falls in. Records whose instant is in transit count for the lane, not for the
//!   site that happened to read the logger; records whose instant is before the unit was
//!   created or after it left the chain count nowhere. We place records by where the unit
//!   *was*, not by who signed them, because condition records need no custody: the author
//!   of a transit log is usually the receiving site, which had nothing to do with the
//!   excursion.
//! - **A condition record's instant**, for one unit: if it is an excursion for that unit,
//!   its earliest reading outside the unit's range; otherwise (or when the excursion is
//!   only flagged, or only its min or max is outside) its earliest reading; with no
//!   readings, its scan time. Stays and transits are half-open too: an instant equal to a
//!   receipt's scan time is at the receiving site.
//! - **Findings per site**, by code, from every chain taking part, broken ones included:
//!   a finding belongs to the site that authored the first event it names (the event it
//!   concerns; for integrity findings that is the author the event claims), counted when
//!   that event was scanned in the period. A finding that names no event of the chain (a
//!   missing stated head, a chain with no collection, a bad certificate) belongs to no
//!   site and is counted in [`KpiReport::findings_unplaced`] for chains taking part.
//!
//! # Numbers
//!
//! Durations are exact over all samples (no sketches): see [`Durations`]. A span whose end
//! was scanned before its start (a mistyped scan time, which the verifier does not judge)
//! is kept as a negative sample, not clipped, so it shows in `min`. Output is
//! deterministic: sites and lanes in id order, findings in code order.

use crate::alert::AlertPolicy;
use crate::causal::ClockIndex;
use crate::event::{Body, Event, Reading};
use crate::finding::{Code, Finding};
use crate::ids::{Coi, EventId, SiteId, UnitId};
use crate::projection::{Custody, Policy, Projection, UnitState};
use crate::time::{Millis, Timestamp};
use crate::verify::VerdictKind;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// What the KPI computation refuses.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum KpiError {
    /// `to` is not after `from`.
    #[error("period from {from} to {to} is empty: `to` must be after `from`")]
    EmptyPeriod { from: Timestamp, to: Timestamp },
    /// The same COI was passed twice; its figures would count twice.
    #[error("chain {coi} was given twice: pass each chain once, with all its events")]
    DuplicateChain { coi: Coi },
    /// A span between two scan times does not fit in a signed 64-bit count of
    /// milliseconds (a scan time hundreds of millions of years off).
    #[error("chain {coi}: the span from {start} to {end} (ending at event {event}) does not fit in milliseconds; check that event's scan time")]
    SpanOutOfRange {
        coi: Coi,
        event: EventId,
        start: Timestamp,
        end: Timestamp,
    },
}

/// A half-open period `[from, to)`, never empty.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Period {
    from: Timestamp,
    to: Timestamp,
}

impl Period {
    /// # Errors
    /// [`KpiError::EmptyPeriod`] unless `from < to`.
    pub fn new(from: Timestamp, to: Timestamp) -> Result<Period, KpiError> {
        if from < to {
            Ok(Period { from, to })
        } else {
            Err(KpiError::EmptyPeriod { from, to })
        }
    }

    /// The first instant in the period.
    pub fn from(&self) -> Timestamp {
        self.from
    }

    /// The first instant after the period.
    pub fn to(&self) -> Timestamp {
        self.to
    }

    /// Whether `t` is in `[from, to)`.
    pub fn contains(&self, t: Timestamp) -> bool {
        self.from <= t && t < self.to
    }
}

/// One verified chain: what [`compute`] reads.
#[derive(Clone, Copy, Debug)]
pub struct ChainInput<'a> {
    pub coi: &'a Coi,
    /// The chain's events in causal order, as the verifier folded them
    /// ([`crate::Verdict::order`]). An event given twice is folded once.
    pub events: &'a [Event],
    /// Every finding the verifier reported for the chain.
    pub findings: &'a [Finding],
}

/// Exact summary of a set of time spans.
///
/// Percentiles are nearest-rank: over the `n` samples sorted ascending, the p-th percentile
/// is the sample at rank `ceil(p * n / 100)` (1-based). So `median` is the lower middle
/// sample when `n` is even, and every figure is a sample that occurred, never an
/// interpolation. `mean` is the exact mean rounded down to a whole millisecond.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Durations {
    pub count: u64,
    pub min: Millis,
    pub median: Millis,
    pub p90: Millis,
    pub max: Millis,
    pub mean: Millis,
}

impl Durations {
    /// The summary of `samples` (any order); `None` when there are none.
    pub fn of(samples: &[Millis]) -> Option<Durations> {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let (&min, &max) = (sorted.first()?, sorted.last()?);
        let n = sorted.len();
        let rank = |p: usize| sorted[(p * n).div_ceil(100).max(1) - 1];
        let sum: i128 = sorted.iter().map(|m| i128::from(m.0)).sum();
        // The floor of a mean lies between the smallest and the largest sample.
        let mean =
            i64::try_from(sum.div_euclid(n as i128)).expect("a mean lies between min and max");
        Some(Durations {
            count: n as u64,
            min,
            median: rank(50),
            p90: rank(90),
            max,
            mean: Millis(mean),
        })
    }
}

/// The figures of one site.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SiteKpi {
    pub site: SiteId,
    /// Stays of units at the site that ended in the period.
    pub dwell: Option<Durations>,
    /// Condition records made in the period about units the site held at the record's
    /// instant.
    pub condition_records: u64,
    /// How many of `condition_records` were excursions.
    pub excursions: u64,
    /// Findings whose event the site authored, scanned in the period, by code.
    pub findings: BTreeMap<Code, u64>,
}

/// The figures of one lane (dispatching site, site named as taker).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct LaneKpi {
    pub from: SiteId,
    pub to: SiteId,
    /// The lane's transit limit from the alert policy.
    pub limit: Millis,
    /// Handoffs whose receipt was scanned in the period.
    pub handoff: Option<Durations>,
    /// How many of those took longer than `limit`.
    pub late: u64,
    /// How many of those had an excursion while in transit.
    pub with_excursion: u64,
}

/// The KPIs of a period. See the module documentation for each definition.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct KpiReport {
    pub period: Period,
    /// Chains taking part whose figures are counted (intact or incomplete).
    pub chains_counted: u64,
    /// How many of `chains_counted` have only `Missing` findings.
    pub chains_incomplete: u64,
    /// Chains taking part that have a break: left out of every time and rate figure.
    /// Sorted.
    pub chains_broken: Vec<Coi>,
    pub vein_to_vein: Option<Durations>,
    /// Sites with any figure, sorted by site.
    pub sites: Vec<SiteKpi>,
    /// Lanes with a handoff in the period, sorted by (from, to).
    pub lanes: Vec<LaneKpi>,
    /// Findings of chains taking part that name no event of their chain, by code.
    pub findings_unplaced: BTreeMap<Code, u64>,
}

/// Computes the KPIs of `period` over verified `chains`.
///
/// # Errors
/// [`KpiError::DuplicateChain`] when a COI comes twice; [`KpiError::SpanOutOfRange`] when a
/// counted span does not fit in milliseconds.
pub fn compute<'a>(
    chains: impl IntoIterator<Item = ChainInput<'a>>,
    period: Period,
    policy: &AlertPolicy,
) -> Result<KpiReport, KpiError> {
    let mut seen: BTreeSet<&Coi> = BTreeSet::new();
    let mut totals = Totals::default();
    for chain in chains {
        if !seen.insert(chain.coi) {
            return Err(KpiError::DuplicateChain {
                coi: chain.coi.clone(),
            });
        }
        if !chain
            .events
            .iter()
            .any(|e| period.contains(e.occurred_at()))
        {
            continue;
        }
        totals.add_findings(&chain, period);
        match VerdictKind::from_findings(chain.findings) {
            VerdictKind::Broken => {
                totals.broken.push(chain.coi.clone());
                continue;
            }
            VerdictKind::Incomplete => totals.incomplete += 1,
            // A node's findings never say that; counted as it stands.
            VerdictKind::Intact | VerdictKind::Unverifiable => {}
        }
        totals.counted += 1;
        let timeline = Timeline::fold(chain.coi, chain.events);
        totals.add_timeline(chain.coi, &timeline, period, policy)?;
    }
    Ok(totals.report(period, policy))
}

/// Where a unit was during one segment of its journey.
#[derive(Clone, Debug)]
enum Place {
    /// Held by a site.
    Site(SiteId),
    /// In transit; once a receipt ends it, the (dispatch, receipt) pair.
    Transit { handoff: Option<(EventId, EventId)> },
}

/// One stretch of a unit's custody, `[start, end)`; `end` is the event that ended it.
#[derive(Clone, Debug)]
struct Segment {
    place: Place,
    start: Timestamp,
    end: Option<(EventId, Timestamp)>,
}

impl Segment {
    fn covers(&self, t: Timestamp) -> bool {
        self.start <= t && self.end.is_none_or(|(_, end)| t < end)
    }
}

#[derive(Clone, Debug)]
struct Handoff {
    from: SiteId,
    to: SiteId,
    since: Timestamp,
    received: Timestamp,
}

/// One unit named by one condition record.
#[derive(Clone, Debug)]
struct RecordSample {
    record: EventId,
    /// The record's scan time (decides the period).
    scanned: Timestamp,
    unit: UnitId,
    /// Where the record is placed in the unit's journey (see the module docs).
    instant: Timestamp,
    excursion: bool,
}

/// What one chain's fold shows over time.
#[derive(Debug, Default)]
struct Timeline {
    segments: BTreeMap<UnitId, Vec<Segment>>,
    handoffs: BTreeMap<(EventId, EventId), Handoff>,
    records: Vec<RecordSample>,
    collected: Option<Timestamp>,
    administered: Option<(Timestamp, EventId)>,
}

impl Timeline {
    /// Folds the events in the given order and records every change of custody.
    ///
    /// Roles are not passed to the fold: they decide permissions, which the verifier has
    /// judged already. Custody and excursions, all this reads, do not depend on them; the
    /// fold's own findings are dropped for the same reason.
    fn fold(coi: &Coi, events: &[Event]) -> Timeline {
        let mut t = Timeline::default();
        let mut p = Projection::new(coi.clone());
        let mut clocks = ClockIndex::new();
        let mut feed_last: HashMap<&SiteId, EventId> = HashMap::new();
        let mut folded: HashSet<EventId> = HashSet::new();
        let policy = Policy::default();
        let mut dropped = Vec::new();
        for e in events {
            if !folded.insert(e.id()) {
                continue;
            }
            let before: BTreeMap<UnitId, Custody> = p
                .units()
                .map(|u| (u.unit.clone(), u.custody.clone()))
                .collect();
            clocks.insert(e, feed_last.get(e.author()).copied());
            feed_last.insert(e.author(), e.id());
            p.apply(e, None, &clocks, &policy, &mut dropped);
            dropped.clear();
            for u in p.units() {
                let old = before.get(&u.unit);
                if old != Some(&u.custody) {
                    t.observe(&u.unit, old, &u.custody, e);
                }
            }
            match e.body() {
                Body::Collection { .. } => {
                    let at = e.occurred_at();
                    t.collected = Some(t.collected.map_or(at, |c| c.min(at)));
                }
                Body::Administration { .. } => {
                    let first = (e.occurred_at(), e.id());
                    t.administered = Some(t.administered.map_or(first, |a| a.min(first)));
                }
                Body::ConditionRecord {
                    units, readings, ..
                } => {
                    let named: BTreeSet<&UnitId> = units.iter().collect();
                    for state in named.into_iter().filter_map(|u| p.unit(u)) {
                        let excursion = state.excursions.contains(&e.id());
                        t.records.push(RecordSample {
                            record: e.id(),
                            scanned: e.occurred_at(),
                            unit: state.unit.clone(),
                            instant: instant(e, readings, state, excursion),
                            excursion,
                        });
                    }
                }
                _ => {}
            }
        }
        t
    }

    /// A unit's custody changed from `old` to `new` at `e`.
    fn observe(&mut self, unit: &UnitId, old: Option<&Custody>, new: &Custody, e: &Event) {
        let at = e.occurred_at();
        let segments = self.segments.entry(unit.clone()).or_default();
        if let Some(open) = segments.last_mut().filter(|s| s.end.is_none()) {
            open.end = Some((e.id(), at));
            if let (
                Some(Custody::InTransit {
                    from,
                    to,
                    dispatch,
                    since,
                    ..
                }),
                Custody::Held { .. },
                Body::Receipt { .. },
            ) = (old, new, e.body())
            {
                let key = (*dispatch, e.id());
                open.place = Place::Transit { handoff: Some(key) };
                self.handoffs.entry(key).or_insert_with(|| Handoff {
                    from: from.clone(),
                    to: to.clone(),
                    since: *since,
                    received: at,
                });
            }
        }
        match new {
            Custody::Held { site } => segments.push(Segment {
                place: Place::Site(site.clone()),
                start: at,
                end: None,
            }),
            Custody::InTransit { since, .. } => segments.push(Segment {
                place: Place::Transit { handoff: None },
                start: *since,
                end: None,
            }),
            Custody::Consumed { .. } | Custody::Administered { .. } | Custody::Destroyed { .. } => {
            }
        }
    }

    /// The segment of `unit`'s journey that holds `t` (the first, should scan times make
    /// two overlap).
    fn place_at(&self, unit: &UnitId, t: Timestamp) -> Option<&Place> {
        self.segments
            .get(unit)?
            .iter()
            .find(|s| s.covers(t))
            .map(|s| &s.place)
    }
}

/// Where a condition record sits in `unit`'s journey (see the module docs).
fn instant(e: &Event, readings: &[Reading], unit: &UnitState, excursion: bool) -> Timestamp {
    let outside =
        |r: &&Reading| r.temp_centi < unit.temp_min_centi || r.temp_centi > unit.temp_max_centi;
    let first_outside = readings.iter().filter(outside).map(|r| r.at).min();
    match first_outside.filter(|_| excursion) {
        Some(t) => t,
        None => readings
            .iter()
            .map(|r| r.at)
            .min()
            .unwrap_or(e.occurred_at()),
    }
}

fn span(coi: &Coi, event: EventId, start: Timestamp, end: Timestamp) -> Result<Millis, KpiError> {
    end.0
        .checked_sub(start.0)
        .map(Millis)
        .ok_or_else(|| KpiError::SpanOutOfRange {
            coi: coi.clone(),
            event,
            start,
            end,
        })
}

#[derive(Debug, Default)]
struct SiteTotals {
    dwell: Vec<Millis>,
    condition_records: u64,
    excursions: u64,
    findings: BTreeMap<Code, u64>,
}

#[derive(Debug, Default)]
struct LaneTotals {
    handoffs: Vec<Millis>,
    late: u64,
    with_excursion: u64,
}

#[derive(Debug, Default)]
struct Totals {
    counted: u64,
    incomplete: u64,
    broken: Vec<Coi>,
    vein_to_vein: Vec<Millis>,
    sites: BTreeMap<SiteId, SiteTotals>,
    lanes: BTreeMap<(SiteId, SiteId), LaneTotals>,
    findings_unplaced: BTreeMap<Code, u64>,
}

impl Totals {
    fn add_findings(&mut self, chain: &ChainInput<'_>, period: Period) {
        if chain.findings.is_empty() {
            return;
        }
        let by_id: HashMap<EventId, &Event> = chain.events.iter().map(|e| (e.id(), e)).collect();
        for f in chain.findings {
            match f.events.first().and_then(|id| by_id.get(id)) {
                Some(e) if period.contains(e.occurred_at()) => {
                    let site = self.sites.entry(e.author().clone()).or_default();
                    *site.findings.entry(f.code).or_default() += 1;
                }
                Some(_) => {}
                None => *self.findings_unplaced.entry(f.code).or_default() += 1,
            }
        }
    }

    fn add_timeline(
        &mut self,
        coi: &Coi,
        t: &Timeline,
        period: Period,
        policy: &AlertPolicy,
    ) -> Result<(), KpiError> {
        if let (Some(collected), Some((administered, by))) = (t.collected, t.administered) {
            if period.contains(administered) {
                self.vein_to_vein
                    .push(span(coi, by, collected, administered)?);
            }
        }
        for segment in t.segments.values().flatten() {
            if let (Place::Site(site), Some((by, end))) = (&segment.place, segment.end) {
                if period.contains(end) {
                    let dwell = span(coi, by, segment.start, end)?;
                    self.sites
                        .entry(site.clone())
                        .or_default()
                        .dwell
                        .push(dwell);
                }
            }
        }
        // A record counts once per site, as an excursion if it is one for any unit placed
        // there; a handoff once, whichever of its units had the excursion.
        let mut site_records: BTreeMap<(EventId, &SiteId), bool> = BTreeMap::new();
        let mut excursion_handoffs: BTreeSet<(EventId, EventId)> = BTreeSet::new();
        for r in &t.records {
            match t.place_at(&r.unit, r.instant) {
                Some(Place::Site(site)) if period.contains(r.scanned) => {
                    *site_records.entry((r.record, site)).or_default() |= r.excursion;
                }
                Some(Place::Transit { handoff: Some(key) }) if r.excursion => {
                    excursion_handoffs.insert(*key);
                }
                _ => {}
            }
        }
        for ((_, site), excursion) in site_records {
            let totals = self.sites.entry(site.clone()).or_default();
            totals.condition_records += 1;
            totals.excursions += u64::from(excursion);
        }
        for (key, h) in &t.handoffs {
            if !period.contains(h.received) {
                continue;
            }
            let took = span(coi, key.1, h.since, h.received)?;
            let lane = self
                .lanes
                .entry((h.from.clone(), h.to.clone()))
                .or_default();
            lane.handoffs.push(took);
            lane.late += u64::from(took > policy.transit_limit(&h.from, &h.to));
            lane.with_excursion += u64::from(excursion_handoffs.contains(key));
        }
        Ok(())
    }

    fn report(mut self, period: Period, policy: &AlertPolicy) -> KpiReport {
        self.broken.sort();
        KpiReport {
            period,
            chains_counted: self.counted,
            chains_incomplete: self.incomplete,
            chains_broken: self.broken,
            vein_to_vein: Durations::of(&self.vein_to_vein),
            sites: self
                .sites
                .into_iter()
                .map(|(site, s)| SiteKpi {
                    site,
                    dwell: Durations::of(&s.dwell),
                    condition_records: s.condition_records,
                    excursions: s.excursions,
                    findings: s.findings,
                })
                .collect(),
            lanes: self
                .lanes
                .into_iter()
                .map(|((from, to), l)| LaneKpi {
                    limit: policy.transit_limit(&from, &to),
                    handoff: Durations::of(&l.handoffs),
                    late: l.late,
                    with_excursion: l.with_excursion,
                    from,
                    to,
                })
                .collect(),
            findings_unplaced: self.findings_unplaced,
        }
    }
}

#[cfg(test)]
mod tests {
    //! Four small journeys built by hand, signed and folded with the verifier's fold (so
    //! their findings are real), then the KPIs asserted against figures worked out in the
    //! comments. Times are scan times from T0 = 2026-03-02T08:00:00Z, written
    //! `d+h:m` (days, hours, minutes after T0).
    use super::*;
    use crate::event::{Meaning, NewUnit, Signer, UnknownBody, UnsignedEvent};
    use crate::ids::{NetworkId, OperatorId, Seq, ShipperId};
    use crate::trust::Role;
    use crate::SecretKey;

    const M: i64 = Millis::MINUTE.0;
    const H: i64 = Millis::HOUR.0;
    const D: i64 = 24 * H;

    fn t0() -> Timestamp {
        Timestamp::from_utc(2026, 3, 2, 8, 0, 0, 0).expect("a real date")
    }

    /// `days`, `hours` and `minutes` after T0.
    fn at(days: i64, hours: i64, minutes: i64) -> Timestamp {
        t0().plus(Millis(days * D + hours * H + minutes * M))
    }

    fn site(s: &str) -> SiteId {
        SiteId::parse(s).expect("test site")
    }

    fn unit(u: &str) -> UnitId {
        UnitId::parse(u).expect("test unit")
    }

    fn shipper(s: &str) -> ShipperId {
        ShipperId::parse(s).expect("test shipper")
    }

    fn coi(seq: &str) -> Coi {
        Coi::parse(&format!("CHA999926{seq}")).expect("test coi")
    }

    fn reading(at: Timestamp, celsius_centi: i32) -> Reading {
        Reading {
            at,
            temp_centi: celsius_centi,
        }
    }

    /// A fresh apheresis bag (2 to 8 °C) or drug product (-196 to -150 °C).
    fn new_unit(id: &str, deadline: Timestamp) -> NewUnit {
        let cryo = id.starts_with("DP");
        NewUnit {
            unit: unit(id),
            stability_deadline: deadline,
            temp_min_centi: if cryo { -19_600 } else { 200 },
            temp_max_centi: if cryo { -15_000 } else { 800 },
        }
    }

    /// One chain, folded as it is built with the verifier's fold and real roles, so its
    /// findings are the ones verification would report. Each site signs its own feed.
    struct Chain {
        coi: Coi,
        events: Vec<Event>,
        findings: Vec<Finding>,
        p: Projection,
        clocks: ClockIndex,
        feeds: BTreeMap<String, (u64, Option<EventId>)>,
    }

    impl Chain {
        fn new(seq: &str) -> Chain {
            Chain {
                coi: coi(seq),
                events: Vec::new(),
                findings: Vec::new(),
                p: Projection::new(coi(seq)),
                clocks: ClockIndex::new(),
                feeds: BTreeMap::new(),
            }
        }

        fn add(&mut self, author: &str, at: Timestamp, body: Body) -> EventId {
            // TEST-ONLY key, derived from the site name.
            let mut seed = [0u8; 32];
            seed[..author.len()].copy_from_slice(author.as_bytes());
            let key = SecretKey::from_seed(&seed);
            let (seq, prev) = self.feeds.get(author).copied().unwrap_or((0, None));
            let meaning = match body {
                Body::ExcursionDisposition { .. } | Body::QcRelease { .. } => Meaning::Approved,
                _ => Meaning::Performed,
            };
            let e = UnsignedEvent {
                network: NetworkId::parse("kpi-test").expect("test network"),
                author: site(author),
                seq: Seq(seq + 1),
                prev,
                key: key.public(),
                coi: self.coi.clone(),
                parents: self.events.last().map(Event::id).into_iter().collect(),
                occurred_at: at,
                recorded_at: at,
                signer: Signer {
                    operator: OperatorId::parse("op.test").expect("test operator"),
                    printed_name: "Test Operator".into(),
                    meaning,
                },
                body,
            }
            .sign(&key);
            self.feeds
                .insert(author.to_owned(), (seq + 1, Some(e.id())));
            let role = if author.starts_with("clinic") {
                Role::Clinic
            } else {
                Role::Manufacturer
            };
            self.clocks.insert(&e, prev);
            self.p.apply(
                &e,
                Some(role),
                &self.clocks,
                &Policy::default(),
                &mut self.findings,
            );
            let id = e.id();
            self.events.push(e);
            id
        }

        /// Runs the whole-chain checks; call once, after the last event.
        fn finish(mut self) -> Chain {
            self.p.finish(&self.clocks, &mut self.findings);
            self
        }

        fn codes(&self) -> Vec<Code> {
            self.findings.iter().map(|f| f.code).collect()
        }

        fn input(&self) -> ChainInput<'_> {
            ChainInput {
                coi: &self.coi,
                events: &self.events,
                findings: &self.findings,
            }
        }

        fn collect(&mut self, clinic: &str, at: Timestamp, bag: &str, deadline: Timestamp) {
            self.add(
                clinic,
                at,
                Body::Collection {
                    units: vec![new_unit(bag, deadline)],
                    dins: vec![],
                },
            );
        }

        /// Packs `units` into `box_id` and dispatches it, both at `at`.
        fn ship(&mut self, from: &str, at: Timestamp, box_id: &str, units: &[&str], to: &str) {
            self.add(
                from,
                at,
                Body::Pack {
                    shipper: shipper(box_id),
                    units: units.iter().map(|u| unit(u)).collect(),
                    seal: format!("SEAL-{box_id}"),
                },
            );
            self.add(
                from,
                at,
                Body::Dispatch {
                    shipper: shipper(box_id),
                    to: site(to),
                },
            );
        }

        fn receive(&mut self, by: &str, at: Timestamp, box_id: &str, from: &str) -> EventId {
            self.receive_sealed(by, at, box_id, from, true)
        }

        fn receive_sealed(
            &mut self,
            by: &str,
            at: Timestamp,
            box_id: &str,
            from: &str,
            seal_intact: bool,
        ) -> EventId {
            let scanned_coi = self.coi.clone();
            self.add(
                by,
                at,
                Body::Receipt {
                    shipper: shipper(box_id),
                    from: site(from),
                    seal_intact,
                    scanned_coi,
                },
            )
        }

        fn record(
            &mut self,
            by: &str,
            at: Timestamp,
            units: &[&str],
            readings: Vec<Reading>,
            flagged: bool,
        ) -> EventId {
            let temps = readings.iter().map(|r| r.temp_centi);
            let (min, max) = (temps.clone().min(), temps.max());
            self.add(
                by,
                at,
                Body::ConditionRecord {
                    units: units.iter().map(|u| unit(u)).collect(),
                    readings,
                    min_centi: min.unwrap_or(500),
                    max_centi: max.unwrap_or(500),
                    excursion: flagged,
                },
            )
        }

        fn accept(&mut self, by: &str, at: Timestamp, condition: EventId) {
            self.add(
                by,
                at,
                Body::ExcursionDisposition {
                    condition,
                    accepted: true,
                    reason: "within validated stability data".into(),
                },
            );
        }

        fn transform(&mut self, by: &str, at: Timestamp, input: &str, output: &str) {
            self.add(
                by,
                at,
                Body::Transformation {
                    inputs: vec![unit(input)],
                    outputs: vec![new_unit(output, at.plus(Millis(400 * D)))],
                },
            );
        }

        fn release(&mut self, by: &str, at: Timestamp, product: &str) {
            self.add(
                by,
                at,
                Body::QcRelease {
                    units: vec![unit(product)],
                },
            );
        }

        fn administer(&mut self, clinic: &str, at: Timestamp, product: &str) {
            let scanned_coi = self.coi.clone();
            self.add(
                clinic,
                at,
                Body::Administration {
                    unit: unit(product),
                    scanned_coi,
                },
            );
        }
    }

    /// Journey A, intact: clinic-a -> mfg-1 -> clinic-a, in-range records only.
    ///
    /// - clinic-a holds APH-A from 0+0:00 to its dispatch at 0+1:00: dwell 1 h.
    /// - clinic-a's own record (reading at 0+0:20) is placed in that stay: a site record.
    /// - lane clinic-a -> mfg-1: 0+1:00 to the receipt at 0+19:00 = 18 h.
    /// - mfg-1's transit log, read at 0+19:05, has its earliest reading at 0+3:00, in
    ///   transit: it counts for the lane (no excursion), not for mfg-1.
    /// - mfg-1 holds APH-A from 0+19:00 to its consumption at 2+0:00: 29 h.
    /// - DP-A is created at 2+0:00 and dispatched at 18+0:00: 16 d = 384 h at mfg-1.
    /// - mfg-1's record on DP-A at 10+0:05 (reading at 10+0:00, -180 °C): a site record.
    /// - lane mfg-1 -> clinic-a: 18+0:00 to 19+0:00 = 24 h.
    /// - clinic-a holds DP-A from 19+0:00 to the infusion at 20+3:00: 27 h.
    /// - vein-to-vein: 0+0:00 to 20+3:00 = 20 d 3 h = 1_738_800_000 ms.
    fn journey_a() -> Chain {
        let mut c = Chain::new("KPI00A");
        c.collect("clinic-a", at(0, 0, 0), "APH-A", at(3, 0, 0));
        c.record(
            "clinic-a",
            at(0, 0, 30),
            &["APH-A"],
            vec![reading(at(0, 0, 20), 450)],
            false,
        );
        c.ship("clinic-a", at(0, 1, 0), "SHP-A1", &["APH-A"], "mfg-1");
        c.receive("mfg-1", at(0, 19, 0), "SHP-A1", "clinic-a");
        c.record(
            "mfg-1",
            at(0, 19, 5),
            &["APH-A"],
            vec![reading(at(0, 3, 0), 400), reading(at(0, 11, 0), 470)],
            false,
        );
        c.add(
            "mfg-1",
            at(0, 19, 15),
            Body::Unpack {
                shipper: shipper("SHP-A1"),
            },
        );
        c.transform("mfg-1", at(2, 0, 0), "APH-A", "DP-A");
        c.record(
            "mfg-1",
            at(10, 0, 5),
            &["DP-A"],
            vec![reading(at(10, 0, 0), -18_000)],
            false,
        );
        c.release("mfg-1", at(12, 0, 0), "DP-A");
        c.ship("mfg-1", at(18, 0, 0), "SHP-A2", &["DP-A"], "clinic-a");
        c.receive("clinic-a", at(19, 0, 0), "SHP-A2", "mfg-1");
        c.administer("clinic-a", at(20, 3, 0), "DP-A");
        c.finish()
    }

    /// Journey B, intact: a late handoff with an excursion in transit, and an excursion at
    /// the manufacturer, both dispositioned before the unit moved on.
    ///
    /// - clinic-b holds APH-B from 1+0:00 to its dispatch at 1+2:00: 2 h.
    /// - lane clinic-b -> mfg-1: 1+2:00 to 2+18:00 = 40 h, over the lane's 36 h: late.
    /// - mfg-1's transit log (read at 2+18:10) starts at 1+1:30, while clinic-b still held
    ///   the bag, but its first reading outside 2-8 °C is 9.5 °C at 1+22:00, in transit:
    ///   the handoff had an excursion. Neither a clinic-b nor an mfg-1 record.
    /// - mfg-1's flagged record at 3+0:00 (no readings: placed at its scan time, while
    ///   mfg-1 held APH-B): an mfg-1 record and an excursion.
    /// - mfg-1 holds APH-B from 2+18:00 to its consumption at 3+6:00: 12 h.
    /// - DP-B from 3+6:00 to its dispatch at 12+0:00: 8 d 18 h = 210 h at mfg-1.
    /// - lane mfg-1 -> clinic-b: 12+0:00 to 13+12:00 = 36 h, exactly the lane's 36 h: not
    ///   late.
    /// - clinic-b holds DP-B from 13+12:00 to the infusion at 14+0:00: 12 h.
    /// - vein-to-vein: 1+0:00 to 14+0:00 = 13 d = 1_123_200_000 ms.
    fn journey_b() -> Chain {
        let mut c = Chain::new("KPI00B");
        c.collect("clinic-b", at(1, 0, 0), "APH-B", at(6, 0, 0));
        c.ship("clinic-b", at(1, 2, 0), "SHP-B1", &["APH-B"], "mfg-1");
        c.receive("mfg-1", at(2, 18, 0), "SHP-B1", "clinic-b");
        let transit = c.record(
            "mfg-1",
            at(2, 18, 10),
            &["APH-B"],
            vec![
                reading(at(1, 1, 30), 450),
                reading(at(1, 7, 0), 400),
                reading(at(1, 22, 0), 950),
                reading(at(2, 10, 0), 500),
            ],
            false,
        );
        c.add(
            "mfg-1",
            at(2, 18, 30),
            Body::Unpack {
                shipper: shipper("SHP-B1"),
            },
        );
        c.accept("mfg-1", at(2, 20, 0), transit);
        let storage = c.record("mfg-1", at(3, 0, 0), &["APH-B"], vec![], true);
        c.accept("mfg-1", at(3, 1, 0), storage);
        c.transform("mfg-1", at(3, 6, 0), "APH-B", "DP-B");
        c.release("mfg-1", at(10, 0, 0), "DP-B");
        c.ship("mfg-1", at(12, 0, 0), "SHP-B2", &["DP-B"], "clinic-b");
        c.receive("clinic-b", at(13, 12, 0), "SHP-B2", "mfg-1");
        c.administer("clinic-b", at(14, 0, 0), "DP-B");
        c.finish()
    }

    /// Journey C, broken: clinic-a dispatches with an undispositioned excursion
    /// (`condition.excursion_undisposed` on clinic-a's dispatch at 2+1:00) and mfg-1 finds
    /// the seal broken (`custody.seal_broken` on mfg-1's receipt at 2+9:00). Were it
    /// counted it would add an 8 h handoff, a 1 h stay at mfg-1, a 1 h stay and an
    /// excursion at clinic-a.
    fn journey_c() -> Chain {
        let mut c = Chain::new("KPI00C");
        c.collect("clinic-a", at(2, 0, 0), "APH-C", at(5, 0, 0));
        c.record("clinic-a", at(2, 0, 30), &["APH-C"], vec![], true);
        c.ship("clinic-a", at(2, 1, 0), "SHP-C1", &["APH-C"], "mfg-1");
        c.receive_sealed("mfg-1", at(2, 9, 0), "SHP-C1", "clinic-a", false);
        c.add(
            "mfg-1",
            at(2, 10, 0),
            Body::Destruction {
                unit: unit("APH-C"),
                reason: "seal broken at receipt".into(),
                witness: None,
            },
        );
        c.finish()
    }

    /// Journey D, incomplete: an event of a kind this version does not know
    /// (`integrity.unknown_body_kind`, Missing) signed by mfg-1 at 6+1:00.
    ///
    /// - clinic-a holds APH-D from 5+0:00 to its dispatch at 5+2:00: 2 h.
    /// - lane clinic-a -> mfg-1: 5+2:00 to 6+0:00 = 22 h.
    /// - mfg-1 still holds APH-D: an open stay, no dwell sample.
    fn journey_d() -> Chain {
        let mut c = Chain::new("KPI00D");
        c.collect("clinic-a", at(5, 0, 0), "APH-D", at(8, 0, 0));
        c.ship("clinic-a", at(5, 2, 0), "SHP-D1", &["APH-D"], "mfg-1");
        c.receive("mfg-1", at(6, 0, 0), "SHP-D1", "clinic-a");
        c.add(
            "mfg-1",
            at(6, 1, 0),
            Body::Unknown(UnknownBody::new(42, "a newer writer's record")),
        );
        c.finish()
    }

    /// Lanes clinic-b -> mfg-1 and mfg-1 -> clinic-b allow 36 h; the others the default
    /// 48 h.
    fn policy() -> AlertPolicy {
        let mut policy = AlertPolicy::default();
        for lane in [("clinic-b", "mfg-1"), ("mfg-1", "clinic-b")] {
            policy
                .transit_lanes
                .insert((site(lane.0), site(lane.1)), Millis(36 * H));
        }
        policy
    }

    fn period(from: Timestamp, to: Timestamp) -> Period {
        Period::new(from, to).expect("a non-empty period")
    }

    fn durations(samples: &[i64]) -> Option<Durations> {
        Durations::of(&samples.iter().map(|&m| Millis(m)).collect::<Vec<_>>())
    }

    fn findings(codes: &[(Code, u64)]) -> BTreeMap<Code, u64> {
        codes.iter().copied().collect()
    }

    #[track_caller]
    fn check(chains: &[&Chain], period: Period, expect: KpiReport) {
        let report = compute(chains.iter().map(|c| c.input()), period, &policy());
        assert_eq!(report, Ok(expect));
    }

    #[test]
    fn the_journeys_are_what_they_claim() {
        assert_eq!(journey_a().codes(), []);
        assert_eq!(journey_b().codes(), []);
        assert_eq!(
            journey_c().codes(),
            [Code::ExcursionUndisposed, Code::SealBroken]
        );
        assert_eq!(journey_d().codes(), [Code::UnknownBodyKind]);
        assert_eq!(
            VerdictKind::from_findings(&journey_d().findings),
            VerdictKind::Incomplete
        );
    }

    #[test]
    fn a_month_of_four_journeys() {
        let (a, b, c, d) = (journey_a(), journey_b(), journey_c(), journey_d());
        let month = period(at(0, 0, 0), at(30, 0, 0));
        check(
            &[&a, &b, &c, &d],
            month,
            KpiReport {
                period: month,
                // A, B and D; D has only a Missing finding.
                chains_counted: 3,
                chains_incomplete: 1,
                chains_broken: vec![coi("KPI00C")],
                // B 13 d, A 20 d 3 h. Nearest rank: median = rank ceil(1.0) = 1 (B),
                // p90 = rank ceil(1.8) = 2 (A); mean (13 d + 20 d 3 h) / 2 = 16 d 13.5 h.
                vein_to_vein: Some(Durations {
                    count: 2,
                    min: Millis(13 * D),
                    median: Millis(13 * D),
                    p90: Millis(20 * D + 3 * H),
                    max: Millis(20 * D + 3 * H),
                    mean: Millis(1_431_000_000),
                }),
                sites: vec![
                    SiteKpi {
                        site: site("clinic-a"),
                        // A: 1 h and 27 h, D: 2 h. Median rank 2 = 2 h, p90 rank
                        // ceil(2.7) = 3 = 27 h, mean 30 h / 3 = 10 h. C's 1 h is out.
                        dwell: Some(Durations {
                            count: 3,
                            min: Millis(H),
                            median: Millis(2 * H),
                            p90: Millis(27 * H),
                            max: Millis(27 * H),
                            mean: Millis(10 * H),
                        }),
                        // A's own in-range record; C's excursion is out.
                        condition_records: 1,
                        excursions: 0,
                        // C is broken, but its findings count here.
                        findings: findings(&[(Code::ExcursionUndisposed, 1)]),
                    },
                    SiteKpi {
                        site: site("clinic-b"),
                        // B: 2 h and 12 h. Median rank 1, p90 rank 2, mean 7 h.
                        dwell: Some(Durations {
                            count: 2,
                            min: Millis(2 * H),
                            median: Millis(2 * H),
                            p90: Millis(12 * H),
                            max: Millis(12 * H),
                            mean: Millis(7 * H),
                        }),
                        condition_records: 0,
                        excursions: 0,
                        findings: BTreeMap::new(),
                    },
                    SiteKpi {
                        site: site("mfg-1"),
                        // 12 h (B), 29 h (A), 210 h (B), 384 h (A); D still there. Median
                        // rank 2 = 29 h, p90 rank ceil(3.6) = 4 = 384 h, mean 635 h / 4 =
                        // 158.75 h = 571_500_000 ms.
                        dwell: Some(Durations {
                            count: 4,
                            min: Millis(12 * H),
                            median: Millis(29 * H),
                            p90: Millis(384 * H),
                            max: Millis(384 * H),
                            mean: Millis(571_500_000),
                        }),
                        // A's DP-A record (in range) and B's flagged storage record; the
                        // two transit logs mfg-1 signed count for their lanes.
                        condition_records: 2,
                        excursions: 1,
                        findings: findings(&[(Code::SealBroken, 1), (Code::UnknownBodyKind, 1)]),
                    },
                ],
                lanes: vec![
                    LaneKpi {
                        from: site("clinic-a"),
                        to: site("mfg-1"),
                        limit: Millis(48 * H),
                        // A 18 h, D 22 h; C's 8 h is out.
                        handoff: Some(Durations {
                            count: 2,
                            min: Millis(18 * H),
                            median: Millis(18 * H),
                            p90: Millis(22 * H),
                            max: Millis(22 * H),
                            mean: Millis(20 * H),
                        }),
                        late: 0,
                        with_excursion: 0,
                    },
                    LaneKpi {
                        from: site("clinic-b"),
                        to: site("mfg-1"),
                        limit: Millis(36 * H),
                        handoff: durations(&[40 * H]),
                        late: 1,
                        with_excursion: 1,
                    },
                    LaneKpi {
                        from: site("mfg-1"),
                        to: site("clinic-a"),
                        limit: Millis(48 * H),
                        handoff: durations(&[24 * H]),
                        late: 0,
                        with_excursion: 0,
                    },
                    LaneKpi {
                        from: site("mfg-1"),
                        to: site("clinic-b"),
                        limit: Millis(36 * H),
                        handoff: durations(&[36 * H]),
                        late: 0,
                        with_excursion: 0,
                    },
                ],
                findings_unplaced: BTreeMap::new(),
            },
        );
    }

    #[test]
    fn vein_to_vein_counts_an_administration_at_from_and_not_at_to() {
        let a = journey_a();
        let infused = at(20, 3, 0);
        let before = compute([a.input()], period(t0(), infused), &policy()).expect("kpis");
        assert_eq!(before.chains_counted, 1);
        assert_eq!(before.vein_to_vein, None);

        // From the infusion on: the vein-to-vein sample and the stay the infusion ended;
        // nothing else of A happened in the period.
        let after = period(infused, at(21, 0, 0));
        check(
            &[&a],
            after,
            KpiReport {
                period: after,
                chains_counted: 1,
                chains_incomplete: 0,
                chains_broken: vec![],
                vein_to_vein: durations(&[20 * D + 3 * H]),
                sites: vec![SiteKpi {
                    site: site("clinic-a"),
                    dwell: durations(&[27 * H]),
                    condition_records: 0,
                    excursions: 0,
                    findings: BTreeMap::new(),
                }],
                lanes: vec![],
                findings_unplaced: BTreeMap::new(),
            },
        );
    }

    #[test]
    fn a_stay_a_handoff_and_a_record_count_in_the_period_of_the_event_that_closes_them() {
        let a = journey_a();
        // [0+19:00, 0+19:05): the receipt at 0+19:00 is in, so the handoff counts; the
        // clinic's stay ended at the dispatch (0+1:00), before the period.
        let receipt = period(at(0, 19, 0), at(0, 19, 5));
        let r = compute([a.input()], receipt, &policy()).expect("kpis");
        assert_eq!(r.lanes.len(), 1);
        assert_eq!(r.lanes[0].handoff, durations(&[18 * H]));
        assert_eq!(r.sites, vec![]);
        // A millisecond later the receipt is out and the transit log (0+19:05) is in, but
        // it counts for no site (its instant is in transit) and the lane's receipt is out.
        let log = period(Timestamp(at(0, 19, 0).0 + 1), at(0, 19, 6));
        let r = compute([a.input()], log, &policy()).expect("kpis");
        assert_eq!((r.chains_counted, r.lanes.len(), r.sites.len()), (1, 0, 0));
        // The clinic's record (0+0:30) counts in the period of its scan time.
        let record = period(at(0, 0, 30), at(0, 0, 31));
        let r = compute([a.input()], record, &policy()).expect("kpis");
        assert_eq!(
            r.sites
                .iter()
                .map(|s| (s.site.as_str(), s.condition_records, s.excursions))
                .collect::<Vec<_>>(),
            [("clinic-a", 1, 0)]
        );
    }

    #[test]
    fn a_handoff_is_late_only_past_the_lane_limit() {
        let b = journey_b();
        let month = period(t0(), at(30, 0, 0));
        let late = |limit: Millis| {
            let mut policy = policy();
            policy
                .transit_lanes
                .insert((site("mfg-1"), site("clinic-b")), limit);
            let r = compute([b.input()], month, &policy).expect("kpis");
            let lane = r
                .lanes
                .iter()
                .find(|l| l.from.as_str() == "mfg-1")
                .expect("the return lane");
            (lane.limit, lane.late)
        };
        // The return handoff took exactly 36 h.
        assert_eq!(late(Millis(36 * H)), (Millis(36 * H), 0));
        assert_eq!(late(Millis(36 * H - 1)), (Millis(36 * H - 1), 1));
        // Without a lane limit the default applies.
        let r = compute([b.input()], month, &AlertPolicy::default()).expect("kpis");
        assert_eq!(
            r.lanes
                .iter()
                .map(|l| (l.limit, l.late))
                .collect::<Vec<_>>(),
            [(Millis(48 * H), 0), (Millis(48 * H), 0)]
        );
    }

    #[test]
    fn a_broken_chain_out_of_the_period_is_not_listed_and_its_findings_do_not_count() {
        let (c, d) = (journey_c(), journey_d());
        // C's events are all before 3+0:00; D's unknown event is at 6+1:00.
        let later = period(at(3, 0, 0), at(30, 0, 0));
        let r = compute([c.input(), d.input()], later, &policy()).expect("kpis");
        assert_eq!(r.chains_broken, vec![]);
        assert_eq!((r.chains_counted, r.chains_incomplete), (1, 1));
        assert_eq!(
            r.sites
                .iter()
                .map(|s| (s.site.as_str(), s.findings.clone()))
                .collect::<Vec<_>>(),
            [
                ("clinic-a", BTreeMap::new()),
                ("mfg-1", findings(&[(Code::UnknownBodyKind, 1)]))
            ]
        );
        // Only C: listed apart, nothing else counted but its findings.
        let early = period(at(2, 0, 0), at(3, 0, 0));
        let r = compute([c.input()], early, &policy()).expect("kpis");
        assert_eq!(r.chains_broken, vec![coi("KPI00C")]);
        assert_eq!((r.chains_counted, r.vein_to_vein), (0, None));
        assert_eq!(r.lanes, vec![]);
        assert!(r.sites.iter().all(|s| s.dwell.is_none()
            && s.condition_records == 0
            && s.findings.values().sum::<u64>() == 1));
    }

    #[test]
    fn a_finding_that_names_no_event_of_the_chain_is_unplaced() {
        let mut a = journey_a();
        a.findings.push(Finding::new(
            Code::MissingHead,
            vec![EventId([9; 32])],
            "stated head absent",
        ));
        a.findings
            .push(Finding::new(Code::BadCertificate, vec![], "rogue"));
        let r = compute([a.input()], period(t0(), at(30, 0, 0)), &policy()).expect("kpis");
        assert_eq!(r.chains_broken, vec![coi("KPI00A")]);
        assert_eq!(
            r.findings_unplaced,
            findings(&[(Code::MissingHead, 1), (Code::BadCertificate, 1)])
        );
        assert_eq!(r.sites, vec![]);
    }

    #[test]
    fn a_break_that_depends_on_missing_evidence_does_not_break_the_chain() {
        let mut a = journey_a();
        let receipt = a.events[4].id();
        let mut f = Finding::new(Code::ReceiptWithoutDispatch, vec![receipt], "no dispatch");
        f.depends_on_missing = true;
        a.findings.push(f);
        let r = compute([a.input()], period(t0(), at(30, 0, 0)), &policy()).expect("kpis");
        assert_eq!((r.chains_counted, r.chains_incomplete), (1, 1));
        assert_eq!(r.vein_to_vein, durations(&[20 * D + 3 * H]));
        let mfg = r
            .sites
            .iter()
            .find(|s| s.site.as_str() == "mfg-1")
            .expect("mfg-1");
        assert_eq!(mfg.findings, findings(&[(Code::ReceiptWithoutDispatch, 1)]));
    }

    #[test]
    fn no_chains_give_an_empty_report() {
        let p = period(t0(), at(1, 0, 0));
        check(
            &[],
            p,
            KpiReport {
                period: p,
                chains_counted: 0,
                chains_incomplete: 0,
                chains_broken: vec![],
                vein_to_vein: None,
                sites: vec![],
                lanes: vec![],
                findings_unplaced: BTreeMap::new(),
            },
        );
        // A chain with no event in the period takes no part.
        let a = journey_a();
        let r = compute([a.input()], period(at(40, 0, 0), at(41, 0, 0)), &policy());
        assert_eq!(r.map(|r| r.chains_counted), Ok(0));
    }

    #[test]
    fn a_period_must_not_be_empty() {
        let t = t0();
        assert_eq!(
            Period::new(t, t),
            Err(KpiError::EmptyPeriod { from: t, to: t })
        );
        let earlier = Timestamp(t.0 - 1);
        assert_eq!(
            Period::new(t, earlier),
            Err(KpiError::EmptyPeriod {
                from: t,
                to: earlier
            })
        );
        let p = Period::new(earlier, t).expect("one millisecond");
        assert!(p.contains(earlier) && !p.contains(t));
        assert_eq!(
            KpiError::EmptyPeriod { from: t, to: t }.to_string(),
            "period from 2026-03-02T08:00:00Z to 2026-03-02T08:00:00Z is empty: `to` must be after `from`"
        );
    }

    #[test]
    fn a_chain_given_twice_is_refused() {
        let a = journey_a();
        let r = compute(
            [a.input(), a.input()],
            period(t0(), at(30, 0, 0)),
            &policy(),
        );
        assert_eq!(r, Err(KpiError::DuplicateChain { coi: coi("KPI00A") }));
    }

    #[test]
    fn an_event_given_twice_is_folded_once() {
        let a = journey_a();
        // The clinic's condition record and the receipt, each right after itself.
        let mut events = a.events.clone();
        events.insert(5, events[4].clone());
        events.insert(2, events[1].clone());
        let twice = ChainInput {
            events: &events,
            ..a.input()
        };
        let month = period(t0(), at(30, 0, 0));
        assert_eq!(
            compute([twice], month, &policy()),
            compute([a.input()], month, &policy())
        );
    }

    #[test]
    fn a_span_that_does_not_fit_in_milliseconds_is_an_error() {
        let mut c = Chain::new("KPI00E");
        c.collect("clinic-a", Timestamp(i64::MIN), "APH-E", at(9, 0, 0));
        c.administer("clinic-a", at(1, 0, 0), "APH-E");
        let r = compute([c.input()], period(t0(), at(2, 0, 0)), &policy());
        assert!(
            matches!(&r, Err(KpiError::SpanOutOfRange { coi: x, start, .. }) if *x == coi("KPI00E") && *start == Timestamp(i64::MIN)),
            "{r:?}"
        );
    }

    #[test]
    fn durations_are_exact_nearest_rank_figures() {
        assert_eq!(Durations::of(&[]), None);
        let one = durations(&[7]).expect("one sample");
        assert_eq!(
            (one.count, one.min, one.median, one.p90, one.max, one.mean),
            (1, Millis(7), Millis(7), Millis(7), Millis(7), Millis(7))
        );
        // 1..=10 in any order: median rank 5, p90 rank 9, mean 5.5 rounded down.
        let ten = durations(&[10, 3, 1, 9, 2, 8, 4, 7, 5, 6]).expect("ten samples");
        assert_eq!(
            (ten.count, ten.min, ten.median, ten.p90, ten.max, ten.mean),
            (10, Millis(1), Millis(5), Millis(9), Millis(10), Millis(5))
        );
        // 1..=11: median rank 6, p90 rank ceil(9.9) = 10.
        let eleven: Vec<i64> = (1..=11).collect();
        let eleven = durations(&eleven).expect("eleven samples");
        assert_eq!(
            (eleven.median, eleven.p90, eleven.mean),
            (Millis(6), Millis(10), Millis(6))
        );
        // A negative span is kept, and the mean rounds down: (-3 + 0) / 2 = -1.5 -> -2.
        let negative = durations(&[0, -3]).expect("two samples");
        assert_eq!(
            (negative.min, negative.median, negative.mean),
            (Millis(-3), Millis(-3), Millis(-2))
        );
        // Extreme samples do not overflow the sum.
        let extreme = durations(&[i64::MAX, i64::MAX]).expect("two samples");
        assert_eq!(extreme.mean, Millis(i64::MAX));
    }
}
