//! `ledger epcis`: a bundle's chain as a GS1 EPCIS 2.0 JSON-LD document (`EPCISDocument`).
//!
//! The rendering is a function of the bundle alone: the same bundle gives the same bytes
//! (`creationDate` is the bundle's `exported_at`, events come in causal order whatever the
//! bundle's order, every object is built in a fixed order). Verifying is separate and optional (`--anchor`); this module never decides
//! whether the evidence holds, it only says what the events record.
//!
//! # Mapping
//!
//! Every distinct event of the bundle becomes exactly one EPCIS event. Type and business
//! step come from [`Body::epcis`]; a step that is not a CBV 2.0 business step (the EPCIS
//! 2.0 JSON schema accepts CBV steps only by their short names, and any other URI outside
//! the CBV namespace) is written as `urn:ledger:bizstep:<step>`.
//!
//! | body | EPCIS event | action | disposition | objects |
//! |---|---|---|---|---|
//! | collection | ObjectEvent | ADD | `active` | `epcList` = new units; `ilmd` = deadlines, temperature ranges, DINs |
//! | label_verification | ObjectEvent | OBSERVE | `conformant`, or `non_conformant` when the scanned COI differs | the unit |
//! | pack | AggregationEvent | ADD | `container_closed` | `parentID` = shipper, `childEPCs` = units |
//! | unpack | AggregationEvent | DELETE | `container_open` | `parentID` = shipper (no children: all come out) |
//! | dispatch | ObjectEvent | OBSERVE | `in_transit` | the shipper; source and destination sites |
//! | receipt | ObjectEvent | OBSERVE | `in_progress`; `non_conformant` if the seal was broken; `mismatch_instance` if the scanned COI differs | the shipper |
//! | store, retrieve | ObjectEvent | OBSERVE | none | the unit; the location text in `ledger:location` |
//! | manufacturing_step | ObjectEvent | OBSERVE | `in_progress` | the units; the step in `ledger:process` |
//! | transformation | TransformationEvent | (none) | `active` | `inputEPCList`, `outputEPCList`, `ilmd` for the outputs |
//! | condition_record | ObjectEvent | OBSERVE | none | the units; `sensorElementList` with the readings |
//! | excursion_disposition | ObjectEvent | OBSERVE | `conformant` (accepted) / `non_conformant` | the condition record's units |
//! | qc_hold | ObjectEvent | OBSERVE | `unavailable` | the units |
//! | qc_release | ObjectEvent | OBSERVE | `conformant` | the units |
//! | qc_reject | ObjectEvent | OBSERVE | `non_conformant` | the units |
//! | administration | ObjectEvent | OBSERVE | `dispensed` | the unit |
//! | destruction | ObjectEvent | DELETE | `destroyed` | the unit |
//! | reassignment | ObjectEvent | ADD | `active` | the new units, `ilmd` as for a collection |
//! | correction | the corrected event again, with `errorDeclaration` | as the original | as the original | as the original |
//! | note, unknown kinds | ObjectEvent | OBSERVE | none | none (`epcList` is empty) |
//!
//! A correction follows EPCIS 2.0 error declaration: the corrected original stays in the
//! list as it was signed, and the correction is a copy of it (same `eventID`) whose
//! `recordTime` is the correction's and whose `errorDeclaration` has the correction's scan
//! time as `declarationTime`, reason `incorrect_data`, and `correctiveEventIDs` naming the
//! correction's own event id; who corrected and why go in the declaration's `ledger:`
//! fields. A correction whose target is not in the bundle (or is itself a correction) is an
//! ObjectEvent with `ledger:corrects` instead.
//!
//! Identifiers: `eventID` is `ni:///sha-256;<event id>?ver=CBV2.0` (the ledger event id is
//! already the SHA-256 of the signed event; it is not the CBV 2.0 event hash of the EPCIS
//! rendering). Units, shippers and sites are private URNs `urn:ledger:unit:<id>`,
//! `urn:ledger:shipper:<id>`, `urn:ledger:site:<id>` (their alphabet, letters, digits and
//! `- _ . :`, needs no escaping). The author site is `readPoint` and, except where the
//! objects leave it (dispatch, administration, destruction), `bizLocation`. Times are UTC
//! (`eventTimeZoneOffset` `+00:00`): `eventTime` is the scan time, `recordTime` the signing
//! time.
//!
//! Ledger fields EPCIS has no place for go in `ledger:` extension fields (the prefix is
//! declared in `@context`): `ledger:coi`, `ledger:site`, `ledger:seq`, `ledger:kind`,
//! `ledger:signer` (operator, printed name, meaning), and each body's own fields. The COI
//! is the only patient link, as in the ledger itself: no patient data exists to leak.

use super::exit::{self, CliError};
use super::{out, read, render, write};
use ledger_core::bundle::{verify_bundle_trusting, BundleOptions};
use ledger_core::event::EpcisType;
use ledger_core::{
    Body, Bundle, Event, EventId, NewUnit, Reading, ShipperId, SiteId, Timestamp, UnitId,
    VerdictKind,
};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::ExitCode;

/// The GS1 EPCIS 2.0 JSON-LD context.
pub const EPCIS_CONTEXT: &str = "https://ref.gs1.org/standards/epcis/epcis-context.jsonld";
/// The IRI the `ledger:` prefix of extension fields expands to.
pub const LEDGER_NAMESPACE: &str = "urn:ledger:epcis:";

/// The CBV 2.0 business steps, by the short names the EPCIS 2.0 JSON schema enumerates.
const CBV_BIZ_STEPS: &[&str] = &[
    "accepting",
    "arriving",
    "assembling",
    "collecting",
    "commissioning",
    "consigning",
    "creating_class_instance",
    "cycle_counting",
    "decommissioning",
    "departing",
    "destroying",
    "disassembling",
    "dispensing",
    "encoding",
    "entering_exiting",
    "holding",
    "inspecting",
    "installing",
    "killing",
    "loading",
    "other",
    "packing",
    "picking",
    "receiving",
    "removing",
    "repackaging",
    "repairing",
    "replacing",
    "reserving",
    "retail_selling",
    "shipping",
    "staging_outbound",
    "stock_taking",
    "stocking",
    "storing",
    "transporting",
    "unloading",
    "unpacking",
    "void_shipping",
    "sensor_reporting",
    "sampling",
];

/// Runs `ledger epcis`: reads the bundle, verifies it first when `anchor` is given, and
/// writes the document to `out_path` or standard output.
///
/// A file that is not a bundle, or holds parts that do not decode, writes nothing and
/// exits 1 like `verify-bundle` (whose verdict for it is `bundle.malformed`); so does a
/// chain that `--anchor` finds broken (4 when incomplete).
///
/// # Errors
/// [`CliError::Unreadable`] when a file cannot be read, [`CliError::Usage`] for an anchor
/// file that holds no key, [`CliError::Unwritable`] when the output cannot be written.
pub(super) fn run(
    bundle_path: &Path,
    out_path: Option<&Path>,
    anchor: Option<&super::AnchorArg>,
    output: super::Output,
) -> Result<ExitCode, CliError> {
    let json = output == super::Output::Json;
    let anchor = anchor.map(super::AnchorArg::resolve).transpose()?;
    let bytes = read(bundle_path)?;
    let bundle = match anchor {
        Some(anchor) => {
            let working = super::progress::spinner(format!("verifying {}", bundle_path.display()));
            let report = verify_bundle_trusting(&bytes, &anchor, &BundleOptions::default());
            working.finish_and_clear();
            if report.verdict.kind != VerdictKind::Intact {
                if json {
                    out::println(render::verdict_json(&report, &anchor));
                } else {
                    out::eprint(render::verdict_text(&report, &anchor));
                }
                out::eprintln(format_args!(
                    "ledger: {}: the chain is not intact; no EPCIS document written",
                    bundle_path.display()
                ));
                return Ok(exit::for_verdict(report.verdict.kind));
            }
            report
                .bundle
                .expect("an intact verdict comes from a decoded bundle")
        }
        None => match decode(&bytes) {
            Ok(bundle) => bundle,
            Err(reason) => {
                let message = format!(
                    "{}: {reason}; no EPCIS document written",
                    bundle_path.display()
                );
                let code = exit::code_for_verdict(VerdictKind::Broken);
                if json {
                    out::println(json!({ "error": message, "exit_code": code }).to_string());
                } else {
                    out::eprintln(format_args!("ledger: {message}"));
                }
                return Ok(ExitCode::from(code));
            }
        },
    };
    let mut text = serde_json::to_string_pretty(&document(&bundle))
        .expect("a JSON value with string keys always serializes");
    text.push('\n');
    match out_path {
        None => out::print(text),
        Some(path) => {
            write(path, text.as_bytes())?;
            if json {
                out::println(
                    json!({
                        "written": path.display().to_string(),
                        "epcis_events": distinct_events(&bundle.events),
                        "coi": bundle.coi.as_str(),
                        "verified": anchor.is_some(),
                    })
                    .to_string(),
                );
                return Ok(ExitCode::SUCCESS);
            }
            out::eprintln(format_args!(
                "wrote {} ({} EPCIS events, chain {}, exported by {} at {}{})",
                path.display(),
                distinct_events(&bundle.events),
                bundle.coi,
                bundle.exporter,
                bundle.exported_at,
                if anchor.is_some() {
                    ", verified intact"
                } else {
                    ", not verified: give --anchor to verify first"
                }
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Decodes a bundle without verifying it, refusing one with parts that do not decode: a
/// document silently missing events would misstate the chain. The error says why, for a
/// person.
fn decode(bytes: &[u8]) -> Result<Bundle, String> {
    let bundle = Bundle::from_bytes(bytes).map_err(|e| {
        format!(
            "not a ledger bundle ({e}); give a file written by `ledger export` or `ledger fixture build`"
        )
    })?;
    if let Some(first) = bundle.defects.first() {
        return Err(format!(
            "{} part(s) of the bundle do not decode (first: {first}); check it with `ledger verify-bundle`",
            bundle.defects.len()
        ));
    }
    Ok(bundle)
}

fn distinct_events(events: &[Event]) -> usize {
    events.iter().map(Event::id).collect::<BTreeSet<_>>().len()
}

/// The EPCIS 2.0 document for a bundle's events (see the module docs for the mapping).
pub fn document(bundle: &Bundle) -> Value {
    let by_id: HashMap<EventId, &Event> = bundle.events.iter().map(|e| (e.id(), e)).collect();
    let event_list: Vec<Value> = causal_order(&bundle.events)
        .into_iter()
        .map(|e| epcis_event(e, &by_id))
        .collect();
    json!({
        "@context": [EPCIS_CONTEXT, { "ledger": LEDGER_NAMESPACE }],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": bundle.exported_at.to_string(),
        "ledger:coi": bundle.coi.as_str(),
        "ledger:network": bundle.network.as_str(),
        "ledger:exporter": bundle.exporter.as_str(),
        "epcisBody": { "eventList": event_list },
    })
}

/// The distinct events in causal order (parents and each author's feed order), ties broken
/// by recorded time and then id as the verifier does, so the order never depends on the
/// bundle's. Events caught in a cycle (only in tampered evidence) follow in the same
/// tie-break order.
fn causal_order(events: &[Event]) -> Vec<&Event> {
    let by_id: BTreeMap<EventId, &Event> = events.iter().map(|e| (e.id(), e)).collect();
    let mut successors: HashMap<EventId, Vec<EventId>> = HashMap::new();
    let mut n_preds: HashMap<EventId, usize> = by_id.keys().map(|id| (*id, 0)).collect();
    let mut edge = |from: EventId, to: EventId| {
        successors.entry(from).or_default().push(to);
        *n_preds.entry(to).or_default() += 1;
    };
    for e in by_id.values() {
        for p in e.parents() {
            if by_id.contains_key(p) {
                edge(*p, e.id());
            }
        }
    }
    let mut feeds: BTreeMap<&SiteId, Vec<&Event>> = BTreeMap::new();
    for e in by_id.values() {
        feeds.entry(e.author()).or_default().push(e);
    }
    for feed in feeds.values_mut() {
        feed.sort_by_key(|e| (e.seq(), e.id()));
        for pair in feed.windows(2) {
            edge(pair[0].id(), pair[1].id());
        }
    }
    let key = |id: &EventId| (by_id[id].recorded_at(), *id);
    let mut ready: BTreeSet<(Timestamp, EventId)> = n_preds
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(id, _)| key(id))
        .collect();
    let mut order = Vec::with_capacity(by_id.len());
    while let Some((_, id)) = ready.pop_first() {
        order.push(by_id[&id]);
        for next in successors.get(&id).map(Vec::as_slice).unwrap_or_default() {
            let n = n_preds
                .get_mut(next)
                .expect("every edge ends at a known event");
            *n -= 1;
            if *n == 0 {
                ready.insert(key(next));
            }
        }
    }
    if order.len() < by_id.len() {
        let placed: BTreeSet<EventId> = order.iter().map(|e| e.id()).collect();
        let mut stuck: Vec<&Event> = by_id
            .values()
            .filter(|e| !placed.contains(&e.id()))
            .copied()
            .collect();
        stuck.sort_by_key(|e| (e.recorded_at(), e.id()));
        order.extend(stuck);
    }
    assert_eq!(
        order.len(),
        by_id.len(),
        "every event is placed exactly once"
    );
    order
}

/// `ni:///sha-256;<hex>?ver=CBV2.0` for a ledger event id.
pub fn event_uri(id: EventId) -> String {
    format!("ni:///sha-256;{}?ver=CBV2.0", id.to_hex())
}

pub fn unit_uri(unit: &UnitId) -> String {
    format!("urn:ledger:unit:{unit}")
}

pub fn shipper_uri(shipper: &ShipperId) -> String {
    format!("urn:ledger:shipper:{shipper}")
}

pub fn site_uri(site: &SiteId) -> String {
    format!("urn:ledger:site:{site}")
}

/// The `bizStep` value for a step name from [`Body::epcis`].
pub fn biz_step(step: &str) -> String {
    if CBV_BIZ_STEPS.contains(&step) {
        step.to_owned()
    } else {
        format!("urn:ledger:bizstep:{step}")
    }
}

fn epcis_event(e: &Event, by_id: &HashMap<EventId, &Event>) -> Value {
    if let Body::Correction { target, reason } = e.body() {
        if let Some(original) = by_id.get(target) {
            if !matches!(original.body(), Body::Correction { .. }) {
                return error_declaration(e, original, by_id, reason);
            }
        }
    }
    Value::Object(plain_event(e, by_id))
}

/// The corrected event again, as EPCIS 2.0 declares an error: every field as in the
/// original but `recordTime` and `errorDeclaration`.
fn error_declaration(
    correction: &Event,
    original: &Event,
    by_id: &HashMap<EventId, &Event>,
    reason: &str,
) -> Value {
    let mut ev = plain_event(original, by_id);
    ev.insert(
        "recordTime".into(),
        json!(correction.recorded_at().to_string()),
    );
    ev.insert(
        "errorDeclaration".into(),
        json!({
            "declarationTime": correction.occurred_at().to_string(),
            "reason": "incorrect_data",
            "correctiveEventIDs": [event_uri(correction.id())],
            "ledger:reason": reason,
            "ledger:site": correction.author().as_str(),
            "ledger:seq": correction.seq().0,
            "ledger:signer": signer(correction),
        }),
    );
    Value::Object(ev)
}

fn signer(e: &Event) -> Value {
    let s = e.signer();
    json!({
        "ledger:operator": s.operator.as_str(),
        "ledger:printedName": s.printed_name,
        "ledger:meaning": s.meaning.as_str(),
    })
}

fn units(us: &[UnitId]) -> Value {
    Value::Array(us.iter().map(|u| json!(unit_uri(u))).collect())
}

fn celsius(centi: i32) -> Value {
    json!(f64::from(centi) / 100.0)
}

/// Instance/lot master data for units that come into being: what each must be kept within.
fn new_units_ilmd(us: &[NewUnit]) -> Map<String, Value> {
    let mut ilmd = Map::new();
    ilmd.insert(
        "ledger:units".into(),
        Value::Array(
            us.iter()
                .map(|n| {
                    json!({
                        "ledger:unit": unit_uri(&n.unit),
                        "ledger:stabilityDeadline": n.stability_deadline.to_string(),
                        "ledger:temperatureMinCelsius": celsius(n.temp_min_centi),
                        "ledger:temperatureMaxCelsius": celsius(n.temp_max_centi),
                    })
                })
                .collect(),
        ),
    );
    ilmd
}

fn new_unit_ids(us: &[NewUnit]) -> Value {
    Value::Array(us.iter().map(|n| json!(unit_uri(&n.unit))).collect())
}

/// One sensor element: a summary report (the body's min and max, flagged as an alarm when
/// the record declares an excursion) followed by one report per reading.
fn sensor_elements(readings: &[Reading], min_centi: i32, max_centi: i32, excursion: bool) -> Value {
    let mut summary = json!({
        "type": "gs1:Temperature",
        "uom": "CEL",
        "minValue": celsius(min_centi),
        "maxValue": celsius(max_centi),
    });
    if excursion {
        summary["exception"] = json!("ALARM_CONDITION");
    }
    let mut reports = vec![summary];
    reports.extend(readings.iter().map(|r| {
        json!({
            "type": "gs1:Temperature",
            "uom": "CEL",
            "time": r.at.to_string(),
            "value": celsius(r.temp_centi),
        })
    }));
    let mut element = json!({ "sensorReport": reports });
    let times = readings.iter().map(|r| r.at);
    if let (Some(start), Some(end)) = (times.clone().min(), times.max()) {
        element["sensorMetadata"] = json!({
            "startTime": start.to_string(),
            "endTime": end.to_string(),
        });
    }
    json!([element])
}

/// An event rendered on its own (no error declaration).
fn plain_event(e: &Event, by_id: &HashMap<EventId, &Event>) -> Map<String, Value> {
    let (epcis_type, step) = e.body().epcis();
    let site = site_uri(e.author());
    let mut ev = Map::new();
    let mut set = |k: &str, v: Value| {
        ev.insert(k.to_owned(), v);
    };
    set(
        "type",
        json!(match epcis_type {
            EpcisType::Object => "ObjectEvent",
            EpcisType::Aggregation => "AggregationEvent",
            EpcisType::Transformation => "TransformationEvent",
        }),
    );
    set("eventID", json!(event_uri(e.id())));
    set("eventTime", json!(e.occurred_at().to_string()));
    set("recordTime", json!(e.recorded_at().to_string()));
    set("eventTimeZoneOffset", json!("+00:00"));
    set("bizStep", json!(biz_step(step)));
    set("readPoint", json!({ "id": site }));
    set("ledger:kind", json!(e.body().kind_name()));
    set("ledger:coi", json!(e.coi().as_str()));
    set("ledger:site", json!(e.author().as_str()));
    set("ledger:seq", json!(e.seq().0));
    set("ledger:signer", signer(e));
    let mut at_site = true;
    let observe = json!("OBSERVE");
    let scanned = |coi: &ledger_core::Coi| coi == e.coi();
    match e.body() {
        Body::Collection { units: us, dins } => {
            set("action", json!("ADD"));
            set("epcList", new_unit_ids(us));
            set("disposition", json!("active"));
            let mut ilmd = new_units_ilmd(us);
            ilmd.insert(
                "ledger:dins".into(),
                Value::Array(dins.iter().map(|d| json!(d.as_str())).collect()),
            );
            set("ilmd", Value::Object(ilmd));
        }
        Body::LabelVerification { unit, scanned_coi } => {
            set("action", observe);
            set("epcList", json!([unit_uri(unit)]));
            set(
                "disposition",
                json!(if scanned(scanned_coi) {
                    "conformant"
                } else {
                    "non_conformant"
                }),
            );
            set("ledger:scannedCoi", json!(scanned_coi.as_str()));
        }
        Body::Pack {
            shipper,
            units: us,
            seal,
        } => {
            set("action", json!("ADD"));
            set("parentID", json!(shipper_uri(shipper)));
            set("childEPCs", units(us));
            set("disposition", json!("container_closed"));
            set("ledger:seal", json!(seal));
        }
        Body::Unpack { shipper } => {
            set("action", json!("DELETE"));
            set("parentID", json!(shipper_uri(shipper)));
            set("disposition", json!("container_open"));
        }
        Body::Dispatch { shipper, to } => {
            at_site = false;
            set("action", observe);
            set("epcList", json!([shipper_uri(shipper)]));
            set("disposition", json!("in_transit"));
            set(
                "sourceList",
                json!([{ "type": "possessing_party", "source": site }]),
            );
            set(
                "destinationList",
                json!([{ "type": "possessing_party", "destination": site_uri(to) }]),
            );
        }
        Body::Receipt {
            shipper,
            from,
            seal_intact,
            scanned_coi,
        } => {
            set("action", observe);
            set("epcList", json!([shipper_uri(shipper)]));
            let disposition = if !scanned(scanned_coi) {
                "mismatch_instance"
            } else if !seal_intact {
                "non_conformant"
            } else {
                "in_progress"
            };
            set("disposition", json!(disposition));
            set(
                "sourceList",
                json!([{ "type": "possessing_party", "source": site_uri(from) }]),
            );
            set(
                "destinationList",
                json!([{ "type": "possessing_party", "destination": site }]),
            );
            set("ledger:sealIntact", json!(seal_intact));
            set("ledger:scannedCoi", json!(scanned_coi.as_str()));
        }
        Body::Store { unit, location } | Body::Retrieve { unit, location } => {
            set("action", observe);
            set("epcList", json!([unit_uri(unit)]));
            set("ledger:location", json!(location));
        }
        Body::ManufacturingStep { units: us, step } => {
            set("action", observe);
            set("epcList", units(us));
            set("disposition", json!("in_progress"));
            set("ledger:process", json!(step));
        }
        Body::Transformation { inputs, outputs } => {
            set("inputEPCList", units(inputs));
            set("outputEPCList", new_unit_ids(outputs));
            set("disposition", json!("active"));
            set("ilmd", Value::Object(new_units_ilmd(outputs)));
        }
        Body::ConditionRecord {
            units: us,
            readings,
            min_centi,
            max_centi,
            excursion,
        } => {
            set("action", observe);
            set("epcList", units(us));
            set(
                "sensorElementList",
                sensor_elements(readings, *min_centi, *max_centi, *excursion),
            );
            set("ledger:excursion", json!(excursion));
        }
        Body::ExcursionDisposition {
            condition,
            accepted,
            reason,
        } => {
            set("action", observe);
            // The disposition names the objects only through the condition record.
            let condition_units = match by_id.get(condition).map(|c| c.body()) {
                Some(Body::ConditionRecord { units: us, .. }) => units(us),
                _ => json!([]),
            };
            set("epcList", condition_units);
            set(
                "disposition",
                json!(if *accepted {
                    "conformant"
                } else {
                    "non_conformant"
                }),
            );
            set("ledger:condition", json!(event_uri(*condition)));
            set("ledger:accepted", json!(accepted));
            set("ledger:reason", json!(reason));
        }
        Body::QcHold { units: us, reason } => {
            set("action", observe);
            set("epcList", units(us));
            set("disposition", json!("unavailable"));
            set("ledger:reason", json!(reason));
        }
        Body::QcRelease { units: us } => {
            set("action", observe);
            set("epcList", units(us));
            set("disposition", json!("conformant"));
        }
        Body::QcReject { units: us, reason } => {
            set("action", observe);
            set("epcList", units(us));
            set("disposition", json!("non_conformant"));
            set("ledger:reason", json!(reason));
        }
        Body::Administration { unit, scanned_coi } => {
            at_site = false;
            set("action", observe);
            set("epcList", json!([unit_uri(unit)]));
            set("disposition", json!("dispensed"));
            set("ledger:scannedCoi", json!(scanned_coi.as_str()));
        }
        Body::Destruction {
            unit,
            reason,
            witness,
        } => {
            at_site = false;
            set("action", json!("DELETE"));
            set("epcList", json!([unit_uri(unit)]));
            set("disposition", json!("destroyed"));
            set("ledger:reason", json!(reason));
            if let Some(w) = witness {
                set(
                    "ledger:witness",
                    json!({
                        "ledger:operator": w.operator.as_str(),
                        "ledger:printedName": w.printed_name,
                    }),
                );
            }
        }
        Body::Reassignment {
            from_coi,
            units: us,
            reason,
            approvals,
        } => {
            set("action", json!("ADD"));
            set("epcList", new_unit_ids(us));
            set("disposition", json!("active"));
            set("ilmd", Value::Object(new_units_ilmd(us)));
            set("ledger:fromCoi", json!(from_coi.as_str()));
            set("ledger:reason", json!(reason));
            set(
                "ledger:approvals",
                Value::Array(
                    approvals
                        .iter()
                        .map(|a| {
                            json!({
                                "ledger:operator": a.operator.as_str(),
                                "ledger:printedName": a.printed_name,
                                "ledger:qa": a.qa,
                            })
                        })
                        .collect(),
                ),
            );
        }
        Body::Correction { target, reason } => {
            // Only when the corrected event is not in the bundle (see `epcis_event`).
            set("action", observe);
            set("epcList", json!([]));
            set("ledger:corrects", json!(event_uri(*target)));
            set("ledger:reason", json!(reason));
        }
        Body::Note { text } => {
            set("action", observe);
            set("epcList", json!([]));
            set("ledger:text", json!(text));
        }
        Body::Unknown(u) => {
            set("action", observe);
            set("epcList", json!([]));
            set("ledger:kindCode", json!(u.kind()));
        }
    }
    if at_site {
        set("bizLocation", json!({ "id": site }));
    }
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_outside_cbv_get_a_private_uri() {
        assert_eq!(biz_step("commissioning"), "commissioning");
        assert_eq!(biz_step("sensor_reporting"), "sensor_reporting");
        assert_eq!(biz_step("retrieving"), "urn:ledger:bizstep:retrieving");
    }

    #[test]
    fn temperatures_are_exact_decimals() {
        assert_eq!(celsius(420).to_string(), "4.2");
        assert_eq!(celsius(-19600).to_string(), "-196.0");
        assert_eq!(celsius(-5).to_string(), "-0.05");
    }
}
