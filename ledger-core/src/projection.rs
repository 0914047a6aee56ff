//! The state of one chain of identity, folded from its events in causal order.
//!
//! This is the one fold: the verifier runs it over a whole chain and keeps the findings;
//! a node runs it over its stored chain to answer "who holds this unit now" and to refuse
//! an append that the fold would flag. It is pure and deterministic: the same events in
//! the same order give the same state and the same findings.
//!
//! # Rules (DESIGN.md "The rules the verifier applies")
//!
//! - Custody: the creator of a unit (collection, transformation output, reassignment) holds
//!   it. Dispatching a shipper puts every unit packed in it in transit to the named site;
//!   the receipt that matches (same shipper, from the dispatching site, dispatch in its
//!   causal past) hands custody to the receipt's author. Acting events (label
//!   verification, pack, unpack, dispatch, receipt, store, retrieve, manufacturing step,
//!   transformation, administration, destruction) must come from the custodian, and every
//!   two acting events on one unit must be causally ordered. Records (condition record,
//!   disposition, QC decisions, reassignment, correction, note) need no custody.
//! - Facts vs permissions: a physical fact is folded even when it breaks a rule (a receipt
//!   by the wrong site still moves the unit to that site), so one break is reported once
//!   instead of cascading. A permission (QC release, accepting disposition) that the
//!   signer's role or meaning does not allow is reported and does not count.
//! - Condition: an excursion (flagged, or a reading/min/max outside the unit's range) must
//!   have an accepting disposition in the causal past of the unit's next movement
//!   (dispatch, consumption in a transformation, administration). Moving after the
//!   stability deadline (judged at the scan time) is a finding; storing or destroying is
//!   not. Drug product (transformation outputs and reassigned units) needs a QC release in
//!   the causal past of its dispatch or administration, and every hold or reject in that
//!   past must precede the release.

use crate::event::{Body, Event, Meaning, NewUnit};
use crate::finding::{Code, Finding};
use crate::ids::{Coi, EventId, ShipperId, SiteId, UnitId};
use crate::time::{Millis, Timestamp};
use crate::trust::Role;
use std::collections::{BTreeMap, HashMap};

/// Answers causal-order questions about the events folded so far.
pub trait CausalOrder {
    /// Whether `a` is in the causal past of `b`. False when `a == b`.
    fn precedes(&self, a: EventId, b: EventId) -> bool;
    /// Whether the event is in the evidence (judged or not).
    fn contains(&self, id: EventId) -> bool;
    /// A short description ("dispatch by depot-1 (seq 4)") for messages, when known.
    fn label(&self, _id: EventId) -> Option<String> {
        None
    }
}

/// "event 1a2b3c4d5e6f (dispatch by depot-1 (seq 4))", or just the short id.
fn describe(order: &dyn CausalOrder, id: EventId) -> String {
    match order.label(id) {
        Some(l) => format!("event {} ({l})", id.short()),
        None => format!("event {}", id.short()),
    }
}

/// The description [`CausalOrder::label`] implementations use.
pub fn event_label(e: &Event) -> String {
    label(e)
}

/// Network policy the rules depend on.
#[derive(Clone, Debug)]
pub struct Policy {
    /// How far a recorded time may go backwards before it is a finding.
    pub clock_tolerance: Millis,
    /// Distinct approvers a reassignment needs (one of them QA).
    pub reassignment_approvals_min: usize,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            clock_tolerance: Millis(5 * 60_000),
            reassignment_approvals_min: 2,
        }
    }
}

/// Where a chain stands, from its units' states.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Status {
    /// No event folded yet.
    Empty,
    Collected,
    InTransit,
    InManufacturing,
    AwaitingQc,
    Released,
    Administered,
    Destroyed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Empty => "empty",
            Status::Collected => "collected",
            Status::InTransit => "in_transit",
            Status::InManufacturing => "in_manufacturing",
            Status::AwaitingQc => "awaiting_qc",
            Status::Released => "released",
            Status::Administered => "administered",
            Status::Destroyed => "destroyed",
        }
    }

    /// Every status, in the order a chain moves through them.
    pub const ALL: [Status; 8] = [
        Status::Empty,
        Status::Collected,
        Status::InTransit,
        Status::InManufacturing,
        Status::AwaitingQc,
        Status::Released,
        Status::Administered,
        Status::Destroyed,
    ];

    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// Who answers for a unit right now.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Custody {
    Held {
        site: SiteId,
    },
    InTransit {
        from: SiteId,
        to: SiteId,
        shipper: ShipperId,
        dispatch: EventId,
        /// The dispatch's scan time: when the unit left `from`.
        since: Timestamp,
    },
    Consumed {
        by: EventId,
    },
    Administered {
        by: EventId,
    },
    Destroyed {
        by: EventId,
    },
}

impl Custody {
    /// How the unit left the chain for good, and the event that did it.
    pub fn gone(&self) -> Option<(&'static str, EventId)> {
        match self {
            Custody::Consumed { by } => Some(("consumed", *by)),
            Custody::Administered { by } => Some(("administered", *by)),
            Custody::Destroyed { by } => Some(("destroyed", *by)),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum QcDecision {
    Hold,
    Release,
    Reject,
}

/// One unit's state.
#[derive(Clone, Debug)]
pub struct UnitState {
    pub unit: UnitId,
    /// The COI the unit belongs to; every scan must equal it exactly.
    pub coi: Coi,
    pub created_by: EventId,
    /// Transformation outputs and reassigned units: they need QC release to move.
    pub drug_product: bool,
    pub custody: Custody,
    pub packed_in: Option<ShipperId>,
    pub location: Option<String>,
    pub stability_deadline: Timestamp,
    pub temp_min_centi: i32,
    pub temp_max_centi: i32,
    pub qc: Vec<(EventId, QcDecision)>,
    /// Excursion records not yet judged at a movement.
    pub excursions_pending: Vec<EventId>,
    /// Every excursion ever recorded for this unit.
    pub excursions: Vec<EventId>,
    /// Movements (dispatch, consumption, administration) with their scan times.
    pub movements: Vec<(EventId, Timestamp)>,
    /// The last acting event; the next one must have it in its causal past.
    pub last_act: EventId,
}

impl UnitState {
    /// The site that holds the unit, if anyone does.
    pub fn custodian(&self) -> Option<&SiteId> {
        match &self.custody {
            Custody::Held { site } => Some(site),
            _ => None,
        }
    }

    /// Whether the latest QC decision the unit has is a standing release.
    pub fn released(&self) -> bool {
        matches!(self.qc.last(), Some((_, QcDecision::Release)))
    }
}

#[derive(Clone, Debug, Default)]
struct ShipperState {
    units: Vec<UnitId>,
    seal: String,
    holder: Option<SiteId>,
    /// The dispatch that put it in transit: (event, from, to).
    dispatch: Option<(EventId, SiteId, SiteId)>,
}

#[derive(Clone)]
struct Excursion {
    units: Vec<UnitId>,
    /// When the excursion began: the earliest reading, or the record's scan time.
    began: Timestamp,
    /// The condition record's scan time: when the excursion became known.
    recorded: Timestamp,
}

/// An excursion that no accepting quality disposition covers yet (see
/// [`Projection::undisposed_excursions`]).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct OpenExcursion {
    /// The condition record.
    pub condition: EventId,
    /// Its units that are still live.
    pub units: Vec<UnitId>,
    pub began: Timestamp,
    pub recorded: Timestamp,
    /// A disposition rejected it (the units must not move on).
    pub rejected: bool,
}

/// The folded state of one COI.
#[derive(Debug, Clone)]
pub struct Projection {
    coi: Coi,
    collections: Vec<EventId>,
    reassignments: Vec<EventId>,
    units: BTreeMap<UnitId, UnitState>,
    shippers: BTreeMap<ShipperId, ShipperState>,
    excursions: HashMap<EventId, Excursion>,
    /// Dispositions by condition record: (disposition, accepted).
    dispositions: HashMap<EventId, Vec<(EventId, bool)>>,
    corrections: Vec<(EventId, EventId)>,
    roles: BTreeMap<SiteId, Role>,
    n_events: usize,
    first_at: Option<Timestamp>,
    last_at: Option<Timestamp>,
}

impl std::fmt::Debug for Excursion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Excursion")
            .field("units", &self.units)
            .finish()
    }
}

fn label(e: &Event) -> String {
    format!(
        "{} by {} (seq {})",
        e.body().kind_name(),
        e.author(),
        e.seq()
    )
}

fn role_name(role: Option<Role>) -> &'static str {
    role.map_or("unknown", Role::as_str)
}

impl Projection {
    pub fn new(coi: Coi) -> Projection {
        Projection {
            coi,
            collections: Vec::new(),
            reassignments: Vec::new(),
            units: BTreeMap::new(),
            shippers: BTreeMap::new(),
            excursions: HashMap::new(),
            dispositions: HashMap::new(),
            corrections: Vec::new(),
            roles: BTreeMap::new(),
            n_events: 0,
            first_at: None,
            last_at: None,
        }
    }

    pub fn coi(&self) -> &Coi {
        &self.coi
    }

    pub fn units(&self) -> impl Iterator<Item = &UnitState> {
        self.units.values()
    }

    pub fn unit(&self, unit: &UnitId) -> Option<&UnitState> {
        self.units.get(unit)
    }

    pub fn n_events(&self) -> usize {
        self.n_events
    }

    /// Earliest and latest scan time folded.
    pub fn span(&self) -> Option<(Timestamp, Timestamp)> {
        Some((self.first_at?, self.last_at?))
    }

    /// The earliest stability deadline among units still live (not consumed, administered
    /// or destroyed).
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.units
            .values()
            .filter(|u| u.custody.gone().is_none())
            .map(|u| u.stability_deadline)
            .min()
    }

    /// Excursions of live units with no accepting disposition, oldest record first.
    pub fn undisposed_excursions(&self) -> Vec<OpenExcursion> {
        let mut open: Vec<OpenExcursion> = self
            .excursions
            .iter()
            .filter_map(|(id, x)| {
                let dispositions = self.dispositions.get(id).map(Vec::as_slice).unwrap_or(&[]);
                if dispositions.iter().any(|(_, accepted)| *accepted) {
                    return None;
                }
                let units: Vec<UnitId> = x
                    .units
                    .iter()
                    .filter(|u| {
                        self.units
                            .get(*u)
                            .is_some_and(|s| s.custody.gone().is_none())
                    })
                    .cloned()
                    .collect();
                (!units.is_empty()).then_some(OpenExcursion {
                    condition: *id,
                    units,
                    began: x.began,
                    recorded: x.recorded,
                    rejected: !dispositions.is_empty(),
                })
            })
            .collect();
        open.sort_by_key(|a| (a.recorded, a.condition));
        open
    }

    /// Whether any unit of the chain is still live (not consumed, administered or
    /// destroyed).
    pub fn is_live(&self) -> bool {
        self.units.values().any(|u| u.custody.gone().is_none())
    }

    /// Corrections as (correction event, corrected event).
    pub fn corrections(&self) -> &[(EventId, EventId)] {
        &self.corrections
    }

    /// Folds one event. `role` is the author's role from its certificate (None when the
    /// key is not trusted; such events should not be folded at all). `order` must know
    /// every event folded so far and this one.
    pub fn apply(
        &mut self,
        e: &Event,
        role: Option<Role>,
        order: &dyn CausalOrder,
        policy: &Policy,
        out: &mut Vec<Finding>,
    ) {
        self.n_events += 1;
        let at = e.occurred_at();
        self.first_at = Some(self.first_at.map_or(at, |t| t.min(at)));
        self.last_at = Some(self.last_at.map_or(at, |t| t.max(at)));
        if let Some(r) = role {
            self.roles.insert(e.author().clone(), r);
        }
        let mut cx = Cx {
            p: self,
            e,
            role,
            order,
            policy,
            out,
        };
        cx.apply();
    }

    /// Findings that only the whole chain can show (run after the last event).
    ///
    /// An excursion never judged at a movement (recorded after the unit had already moved
    /// on, or concurrently with it) is still a finding when the unit moved at or after the
    /// excursion began and no accepting disposition exists anywhere: the record came too
    /// late for anyone to have dispositioned it before the move.
    pub fn finish(&self, order: &dyn CausalOrder, out: &mut Vec<Finding>) {
        for unit in self.units.values() {
            for x in &unit.excursions_pending {
                let Some(excursion) = self.excursions.get(x) else {
                    continue;
                };
                let Some((moved, at)) =
                    unit.movements.iter().find(|(_, at)| *at >= excursion.began)
                else {
                    continue;
                };
                let dispositions = self.dispositions.get(x).map(Vec::as_slice).unwrap_or(&[]);
                if dispositions.iter().any(|(_, accepted)| *accepted) {
                    continue;
                }
                if let Some((d, _)) = dispositions.first() {
                    let msg = format!(
                        "unit {} moved on at {at} although its excursion ({}) was rejected",
                        unit.unit,
                        describe(order, *x)
                    );
                    out.push(Finding::new(
                        Code::ExcursionRejected,
                        vec![*moved, *x, *d],
                        msg,
                    ));
                } else {
                    let msg = format!(
                        "unit {} moved on ({}) at {at}, after its temperature excursion began at {}, and the excursion ({}) never had an accepting quality disposition",
                        unit.unit,
                        describe(order, *moved),
                        excursion.began,
                        describe(order, *x)
                    );
                    out.push(Finding::new(
                        Code::ExcursionUndisposed,
                        vec![*moved, *x],
                        msg,
                    ));
                }
            }
        }
        if self.n_events > 0 && self.collections.is_empty() && self.reassignments.is_empty() {
            out.push(Finding::new(
                Code::NoCollection,
                Vec::new(),
                format!(
                    "chain {} has no collection event: no unit in it can be traced to the patient",
                    self.coi
                ),
            ));
        }
    }

    pub fn status(&self) -> Status {
        if self.n_events == 0 || self.units.is_empty() {
            return Status::Empty;
        }
        let live: Vec<&UnitState> = self
            .units
            .values()
            .filter(|u| u.custody.gone().is_none())
            .collect();
        if live.is_empty() {
            let administered = self
                .units
                .values()
                .any(|u| matches!(u.custody, Custody::Administered { .. }));
            return if administered {
                Status::Administered
            } else {
                Status::Destroyed
            };
        }
        if live
            .iter()
            .any(|u| matches!(u.custody, Custody::InTransit { .. }))
        {
            return Status::InTransit;
        }
        let products: Vec<&&UnitState> = live.iter().filter(|u| u.drug_product).collect();
        if products.iter().any(|u| u.released()) {
            return Status::Released;
        }
        if !products.is_empty() {
            return Status::AwaitingQc;
        }
        let at_manufacturer = live.iter().any(|u| {
            u.custodian()
                .and_then(|s| self.roles.get(s))
                .is_some_and(|r| matches!(r, Role::Manufacturer | Role::Lab))
        });
        if at_manufacturer {
            Status::InManufacturing
        } else {
            Status::Collected
        }
    }
}

/// How a unit moves on; the checks differ (see [`Cx::movement`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Movement {
    Dispatch,
    Consumption,
    Administration,
}

/// The context of folding one event.
struct Cx<'a> {
    p: &'a mut Projection,
    e: &'a Event,
    role: Option<Role>,
    order: &'a dyn CausalOrder,
    policy: &'a Policy,
    out: &'a mut Vec<Finding>,
}

impl Cx<'_> {
    fn find(&mut self, code: Code, events: Vec<EventId>, message: String) {
        self.out.push(Finding::new(code, events, message));
    }

    fn apply(&mut self) {
        let e = self.e;
        if e.coi() != &self.p.coi {
            let msg = format!(
                "{} belongs to chain {}, not to chain {}",
                label(e),
                e.coi(),
                self.p.coi
            );
            self.find(Code::CoiMismatch, vec![e.id()], msg);
            return;
        }
        match e.body().clone() {
            Body::Collection { units, .. } => {
                self.require_role(&[Role::Clinic], "record a collection");
                if let Some(first) = self.p.collections.first().copied() {
                    let msg = format!(
                        "chain {} has a second collection ({}); a chain has exactly one",
                        self.p.coi,
                        label(e)
                    );
                    self.find(Code::DuplicateCollection, vec![e.id(), first], msg);
                }
                self.p.collections.push(e.id());
                self.create(&units, false);
            }
            Body::LabelVerification { unit, scanned_coi } => {
                if self.act(&unit) {
                    self.check_scan(&unit, &scanned_coi, "label verification");
                }
            }
            Body::Pack {
                shipper,
                units,
                seal,
            } => {
                if let Some(s) = self.p.shippers.get(&shipper) {
                    if s.dispatch.is_some() {
                        let msg = format!(
                            "{} packs into shipper {shipper}, which is in transit",
                            label(e)
                        );
                        self.find(Code::NotCustodian, vec![e.id()], msg);
                        return;
                    }
                }
                let mut packed = Vec::new();
                for u in &units {
                    if self.act(u) {
                        packed.push(u.clone());
                    }
                }
                for u in &packed {
                    if let Some(state) = self.p.units.get_mut(u) {
                        state.packed_in = Some(shipper.clone());
                    }
                }
                let s = self.p.shippers.entry(shipper).or_default();
                s.units.retain(|u| !packed.contains(u));
                s.units.extend(packed);
                s.seal = seal;
                s.holder = Some(e.author().clone());
            }
            Body::Unpack { shipper } => {
                let Some(units) = self.shipper_units(&shipper) else {
                    return;
                };
                for u in &units {
                    if self.act(u) {
                        if let Some(state) = self.p.units.get_mut(u) {
                            state.packed_in = None;
                        }
                    }
                }
                if let Some(s) = self.p.shippers.get_mut(&shipper) {
                    s.units.clear();
                }
            }
            Body::Dispatch { shipper, to } => {
                let Some(units) = self.shipper_units(&shipper) else {
                    return;
                };
                for u in &units {
                    if self.act(u) {
                        self.movement(u, Movement::Dispatch);
                    }
                }
                let from = e.author().clone();
                for u in &units {
                    if let Some(state) = self.p.units.get_mut(u) {
                        if state.custody.gone().is_none() {
                            state.custody = Custody::InTransit {
                                from: from.clone(),
                                to: to.clone(),
                                shipper: shipper.clone(),
                                dispatch: e.id(),
                                since: e.occurred_at(),
                            };
                        }
                    }
                }
                if let Some(s) = self.p.shippers.get_mut(&shipper) {
                    s.dispatch = Some((e.id(), from, to));
                }
            }
            Body::Receipt {
                shipper,
                from,
                seal_intact,
                scanned_coi,
            } => self.receipt(shipper, from, seal_intact, scanned_coi),
            Body::Store { unit, location } | Body::Retrieve { unit, location } => {
                if self.act(&unit) {
                    if let Some(state) = self.p.units.get_mut(&unit) {
                        state.location = Some(location);
                    }
                }
            }
            Body::ManufacturingStep { units, .. } => {
                for u in &units {
                    self.act(u);
                }
            }
            Body::Transformation { inputs, outputs } => {
                self.require_role(&[Role::Manufacturer, Role::Lab], "transform units");
                for u in &inputs {
                    if self.act(u) {
                        self.movement(u, Movement::Consumption);
                        if let Some(state) = self.p.units.get_mut(u) {
                            state.custody = Custody::Consumed { by: e.id() };
                            state.packed_in = None;
                        }
                    }
                }
                self.create(&outputs, true);
            }
            Body::ConditionRecord {
                units,
                readings,
                min_centi,
                max_centi,
                excursion,
            } => {
                let mut excursion_units = Vec::new();
                for u in &units {
                    let Some(state) = self.p.units.get(u) else {
                        self.no_provenance(u);
                        continue;
                    };
                    let (lo, hi) = (state.temp_min_centi, state.temp_max_centi);
                    let outside = min_centi < lo
                        || max_centi > hi
                        || readings
                            .iter()
                            .any(|r| r.temp_centi < lo || r.temp_centi > hi);
                    if excursion || outside {
                        excursion_units.push(u.clone());
                    }
                }
                for u in &excursion_units {
                    if let Some(state) = self.p.units.get_mut(u) {
                        state.excursions_pending.push(e.id());
                        state.excursions.push(e.id());
                    }
                }
                if !excursion_units.is_empty() {
                    let began = readings
                        .iter()
                        .map(|r| r.at)
                        .min()
                        .unwrap_or(e.occurred_at())
                        .min(e.occurred_at());
                    self.p.excursions.insert(
                        e.id(),
                        Excursion {
                            units: excursion_units,
                            began,
                            recorded: e.occurred_at(),
                        },
                    );
                }
            }
            Body::ExcursionDisposition {
                condition,
                accepted,
                ..
            } => {
                let permitted = self
                    .require_approval(&[Role::Manufacturer, Role::Lab], "disposition an excursion");
                if !self.order.contains(condition) {
                    let msg = format!(
                        "{} disposes of condition record {}, which is not in the evidence",
                        label(e),
                        condition.short()
                    );
                    self.find(Code::DanglingReference, vec![e.id()], msg);
                    return;
                }
                if permitted {
                    self.p
                        .dispositions
                        .entry(condition)
                        .or_default()
                        .push((e.id(), accepted));
                }
            }
            Body::QcHold { units, .. } => self.qc(&units, QcDecision::Hold),
            Body::QcRelease { units } => self.qc(&units, QcDecision::Release),
            Body::QcReject { units, .. } => self.qc(&units, QcDecision::Reject),
            Body::Administration { unit, scanned_coi } => {
                self.require_role(&[Role::Clinic], "administer");
                if self.act(&unit) {
                    self.movement(&unit, Movement::Administration);
                    let owner = self.p.units.get(&unit).map(|s| s.coi.clone());
                    if let Some(owner) = owner {
                        if owner != scanned_coi {
                            let msg = format!(
                                "unit {unit} of chain {owner} was administered to the patient with COI {scanned_coi} without an approved reassignment"
                            );
                            self.find(Code::AdministeredToOtherCoi, vec![e.id()], msg);
                        }
                    }
                    if let Some(state) = self.p.units.get_mut(&unit) {
                        state.custody = Custody::Administered { by: e.id() };
                        state.packed_in = None;
                    }
                }
            }
            Body::Destruction { unit, .. } => {
                if self.act(&unit) {
                    if let Some(state) = self.p.units.get_mut(&unit) {
                        state.custody = Custody::Destroyed { by: e.id() };
                        state.packed_in = None;
                    }
                }
            }
            Body::Reassignment {
                from_coi,
                units,
                approvals,
                ..
            } => {
                self.require_approval(&[Role::Manufacturer, Role::Lab], "reassign units");
                let mut approvers: Vec<_> = approvals.iter().map(|a| &a.operator).collect();
                approvers.sort();
                approvers.dedup();
                let has_qa = approvals.iter().any(|a| a.qa);
                let min = self.policy.reassignment_approvals_min;
                if approvers.len() < min || !has_qa {
                    let msg = format!(
                        "reassignment of {} unit(s) from chain {from_coi} has {} distinct approver(s){}; policy needs at least {min}, one of them QA",
                        units.len(),
                        approvers.len(),
                        if has_qa { "" } else { " and no QA approver" }
                    );
                    self.find(Code::ReassignmentUnapproved, vec![e.id()], msg);
                }
                self.p.reassignments.push(e.id());
                self.create(&units, true);
            }
            Body::Correction { target, .. } => {
                if !self.order.contains(target) {
                    let msg = format!(
                        "{} corrects event {}, which is not in the evidence",
                        label(e),
                        target.short()
                    );
                    self.find(Code::DanglingReference, vec![e.id()], msg);
                    return;
                }
                self.p.corrections.push((e.id(), target));
            }
            Body::Note { .. } => {}
            Body::Unknown(u) => {
                let msg = format!(
                    "{} has body kind {}, which this version does not know; it was not judged (update the verifier)",
                    label(e),
                    u.kind()
                );
                self.find(Code::UnknownBodyKind, vec![e.id()], msg);
            }
        }
    }

    fn require_role(&mut self, allowed: &[Role], what: &str) -> bool {
        let ok = self.role.is_some_and(|r| allowed.contains(&r));
        if !ok {
            let names: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
            let msg = format!(
                "{}: a {} site may not {what}; only {} sites may",
                label(self.e),
                role_name(self.role),
                names.join(" or ")
            );
            self.find(Code::RolePermitted, vec![self.e.id()], msg);
        }
        ok
    }

    /// Role check plus the signature meaning "approved"; returns whether the decision counts.
    fn require_approval(&mut self, allowed: &[Role], what: &str) -> bool {
        let role_ok = self.require_role(allowed, what);
        let meaning = self.e.signer().meaning;
        let meaning_ok = meaning == Meaning::Approved;
        if !meaning_ok {
            let msg = format!(
                "{}: the decision was signed with the meaning '{}' by {}; it must be signed 'approved'",
                label(self.e),
                meaning.as_str(),
                self.e.signer().operator
            );
            self.find(Code::ApprovalRequired, vec![self.e.id()], msg);
        }
        role_ok && meaning_ok
    }

    fn create(&mut self, units: &[NewUnit], drug_product: bool) {
        let e = self.e;
        for n in units {
            if let Some(existing) = self.p.units.get(&n.unit) {
                let msg = format!(
                    "{} creates unit {}, which already exists (created by event {})",
                    label(e),
                    n.unit,
                    existing.created_by.short()
                );
                let first = existing.created_by;
                self.find(Code::UnitReused, vec![e.id(), first], msg);
                continue;
            }
            self.p.units.insert(
                n.unit.clone(),
                UnitState {
                    unit: n.unit.clone(),
                    coi: e.coi().clone(),
                    created_by: e.id(),
                    drug_product,
                    custody: Custody::Held {
                        site: e.author().clone(),
                    },
                    packed_in: None,
                    location: None,
                    stability_deadline: n.stability_deadline,
                    temp_min_centi: n.temp_min_centi,
                    temp_max_centi: n.temp_max_centi,
                    qc: Vec::new(),
                    excursions_pending: Vec::new(),
                    excursions: Vec::new(),
                    movements: Vec::new(),
                    last_act: e.id(),
                },
            );
        }
    }

    fn no_provenance(&mut self, unit: &UnitId) {
        let msg = format!("{} names unit {unit}, which no collection, transformation or reassignment in this chain created", label(self.e));
        self.find(Code::UnitWithoutProvenance, vec![self.e.id()], msg);
    }

    /// The checks every acting event makes on a unit: it exists, it is not gone, the author
    /// holds it, and the previous action on it is in this event's causal past. Returns
    /// whether the unit exists and is live (so the caller may change its state).
    fn act(&mut self, unit: &UnitId) -> bool {
        let e = self.e;
        let Some(state) = self.p.units.get(unit) else {
            self.no_provenance(unit);
            return false;
        };
        if let Some((how, by)) = state.custody.gone() {
            let msg = format!("{} acts on unit {unit}, which was already {how}", label(e));
            self.find(Code::UnitReused, vec![e.id(), by], msg);
            return false;
        }
        let last = state.last_act;
        let custody = state.custody.clone();
        if last != e.id() && !self.order.precedes(last, e.id()) {
            let msg = format!(
                "{} and {} both act on unit {unit} without either knowing of the other",
                label(e),
                describe(self.order, last)
            );
            self.find(Code::ConcurrentActions, vec![e.id(), last], msg);
        }
        match custody {
            Custody::Held { site } if &site == e.author() => {}
            Custody::Held { site } => {
                let msg = format!("{} acts on unit {unit}, but {site} holds it", label(e));
                self.find(Code::NotCustodian, vec![e.id()], msg);
            }
            Custody::InTransit { to, .. } => {
                let msg = format!(
                    "{} acts on unit {unit} while it is in transit to {to} and not yet received",
                    label(e)
                );
                self.find(Code::NotCustodian, vec![e.id()], msg);
            }
            Custody::Consumed { .. } | Custody::Administered { .. } | Custody::Destroyed { .. } => {
                unreachable!("gone units returned above")
            }
        }
        if let Some(state) = self.p.units.get_mut(unit) {
            state.last_act = e.id();
        }
        true
    }

    fn check_scan(&mut self, unit: &UnitId, scanned: &Coi, what: &str) {
        let Some(owner) = self.p.units.get(unit).map(|s| s.coi.clone()) else {
            return;
        };
        if &owner != scanned {
            let msg = format!("{what} of unit {unit} scanned COI {scanned}, but the unit belongs to chain {owner}");
            self.find(Code::CoiMismatch, vec![self.e.id()], msg);
        }
    }

    /// The units in a shipper, or a finding when the shipper holds none.
    fn shipper_units(&mut self, shipper: &ShipperId) -> Option<Vec<UnitId>> {
        match self.p.shippers.get(shipper) {
            Some(s) if !s.units.is_empty() => Some(s.units.clone()),
            _ => {
                let msg = format!(
                    "{} names shipper {shipper}, which holds no packed unit of this chain",
                    label(self.e)
                );
                self.find(Code::NotCustodian, vec![self.e.id()], msg);
                None
            }
        }
    }

    /// Checks made when a unit moves on: stability deadline and excursions always; QC
    /// release only when it leaves (dispatch) or reaches the patient (administration).
    /// Consuming an unreleased intermediate inside manufacturing is normal.
    fn movement(&mut self, unit: &UnitId, movement: Movement) {
        let e = self.e;
        let Some(state) = self.p.units.get(unit) else {
            return;
        };
        let deadline = state.stability_deadline;
        let pending = state.excursions_pending.clone();
        if e.occurred_at() > deadline {
            let late = Millis(e.occurred_at().0 - deadline.0);
            let msg = format!(
                "unit {unit} moved ({}) at {}, {late} after its stability deadline {deadline}",
                e.body().kind_name(),
                e.occurred_at(),
            );
            self.find(Code::StabilityExpired, vec![e.id()], msg);
        }
        let mut still_pending = Vec::new();
        for x in pending {
            if !self.order.precedes(x, e.id()) {
                still_pending.push(x);
                continue;
            }
            let dispositions = self.p.dispositions.get(&x).cloned().unwrap_or_default();
            let known: Vec<(EventId, bool)> = dispositions
                .into_iter()
                .filter(|(d, _)| self.order.precedes(*d, e.id()))
                .collect();
            if known.iter().any(|(_, accepted)| *accepted) {
                continue;
            }
            if let Some((d, _)) = known.first() {
                let msg = format!(
                    "unit {unit} moved on ({}) although its excursion (event {}) was rejected",
                    label(e),
                    x.short()
                );
                self.find(Code::ExcursionRejected, vec![e.id(), x, *d], msg);
            } else {
                let msg = format!(
                    "unit {unit} moved on ({}) before its temperature excursion (event {}) had an accepting quality disposition",
                    label(e),
                    x.short()
                );
                self.find(Code::ExcursionUndisposed, vec![e.id(), x], msg);
            }
        }
        let Some(state) = self.p.units.get_mut(unit) else {
            return;
        };
        state.excursions_pending = still_pending;
        state.movements.push((e.id(), e.occurred_at()));
        if state.drug_product && movement != Movement::Consumption {
            let known: Vec<(EventId, QcDecision)> = state
                .qc
                .iter()
                .copied()
                .filter(|(d, _)| self.order.precedes(*d, e.id()))
                .collect();
            let standing = known.iter().any(|(r, decision)| {
                *decision == QcDecision::Release
                    && known.iter().all(|(h, other)| {
                        *other == QcDecision::Release || self.order.precedes(*h, *r)
                    })
            });
            if !standing {
                let msg = if known.iter().any(|(_, d)| *d == QcDecision::Release) {
                    format!("drug product unit {unit} moved on ({}) after its QC release was followed by a hold or reject", label(e))
                } else {
                    format!(
                        "drug product unit {unit} moved on ({}) without a QC release",
                        label(e)
                    )
                };
                self.find(Code::QcReleaseMissing, vec![e.id()], msg);
            }
        }
    }

    fn qc(&mut self, units: &[UnitId], decision: QcDecision) {
        let counts = self.require_approval(&[Role::Manufacturer, Role::Lab], "make QC decisions");
        for u in units {
            match self.p.units.get_mut(u) {
                None => self.no_provenance(u),
                Some(state) if counts => state.qc.push((self.e.id(), decision)),
                Some(_) => {}
            }
        }
    }

    fn receipt(&mut self, shipper: ShipperId, from: SiteId, seal_intact: bool, scanned: Coi) {
        let e = self.e;
        let state = self.p.shippers.get(&shipper).cloned();
        let Some(state) = state.filter(|s| !s.units.is_empty()) else {
            let msg = format!(
                "{} receives shipper {shipper} from {from}, but no dispatch of it is known",
                label(e)
            );
            self.find(Code::ReceiptWithoutDispatch, vec![e.id()], msg);
            return;
        };
        let matched = match &state.dispatch {
            Some((d, sender, _)) => *sender == from && self.order.precedes(*d, e.id()),
            None => false,
        };
        if !matched {
            let msg = match &state.dispatch {
                Some((d, sender, _)) if *sender != from => format!(
                    "{} receives shipper {shipper} from {from}, but it was dispatched by {sender} (event {})",
                    label(e),
                    d.short()
                ),
                Some((d, ..)) => format!(
                    "{} receives shipper {shipper} without its dispatch (event {}) in the receipt's causal past",
                    label(e),
                    d.short()
                ),
                None => format!("{} receives shipper {shipper} from {from}, but it was never dispatched", label(e)),
            };
            self.find(Code::ReceiptWithoutDispatch, vec![e.id()], msg);
        } else if let Some((d, _, to)) = &state.dispatch {
            if to != e.author() {
                let msg = format!(
                    "shipper {shipper} was dispatched to {to} but received by {}",
                    e.author()
                );
                self.find(Code::WrongRecipient, vec![e.id(), *d], msg);
            }
        }
        if !seal_intact {
            let msg = format!(
                "{} found the seal of shipper {shipper} broken (seal {})",
                label(e),
                state.seal
            );
            self.find(Code::SealBroken, vec![e.id()], msg);
        }
        let mut scan_checked = false;
        for u in &state.units {
            let Some(unit) = self.p.units.get(u) else {
                continue;
            };
            if let Some((how, by)) = unit.custody.gone() {
                let msg = format!("{} receives unit {u}, which was already {how}", label(e));
                self.find(Code::UnitReused, vec![e.id(), by], msg);
                continue;
            }
            let last = unit.last_act;
            if matched && !self.order.precedes(last, e.id()) {
                let msg = format!(
                    "{} and event {} both act on unit {u} without either knowing of the other",
                    label(e),
                    last.short()
                );
                self.find(Code::ConcurrentActions, vec![e.id(), last], msg);
            }
            if !scan_checked {
                // One scan covers the shipper: report a mismatch once, not per unit.
                scan_checked = true;
                self.check_scan(u, &scanned, "receipt");
            }
            if let Some(unit) = self.p.units.get_mut(u) {
                // The receipt is a fact: whoever signed it has the shipper now.
                unit.custody = Custody::Held {
                    site: e.author().clone(),
                };
                unit.last_act = e.id();
            }
        }
        if let Some(s) = self.p.shippers.get_mut(&shipper) {
            s.dispatch = None;
            s.holder = Some(e.author().clone());
        }
    }
}
