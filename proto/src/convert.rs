//! Conversions between ledger.v1 wire messages and ledger-core types, written once for the
//! node and the client.
//!
//! Wire -> core is where outside input becomes checked types: every identifier is parsed,
//! every limit applied, and an error names the field path (`body.pack.unit_ids[2]`) and
//! what is wrong with it. Core -> wire cannot fail.
//!
//! Timestamps: the ledger keeps milliseconds; a wire timestamp's sub-millisecond part is
//! dropped (floor), never rounded up past the instant it names.

use crate::v1 as pb;
use ledger_core::bundle::BundleReport;
use ledger_core::kpi::{Durations, KpiReport, Period};
use ledger_core::{
    Approval, Body, Code, Coi, Din, Event, EventId, Finding, Meaning, Millis, NewUnit, OperatorId,
    Reading, ShipperId, Signer, SiteId, Status, Timestamp, UnitId, VerdictKind, Witness,
};
use std::collections::BTreeMap;

/// A wire field that is missing or wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConvertError {
    pub field: String,
    pub reason: String,
}

/// Free text from a request, refused if it holds a character that can make a terminal,
/// a report or an export show something other than what was signed.
fn text(field: &str, s: &str) -> Result<String, ConvertError> {
    match ledger_core::event::unprintable(s) {
        Some(c) => Err(err(
            field,
            format!(
                "holds the character U+{:04X}; free text may hold no control characters (line breaks and tabs included) and no bidirectional-formatting characters, which can make a terminal or a report show something other than what was signed",
                u32::from(c)
            ),
        )),
        None => Ok(s.to_owned()),
    }
}

fn err(field: impl Into<String>, reason: impl Into<String>) -> ConvertError {
    ConvertError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Longest request id a client may choose.
pub const REQUEST_ID_MAX: usize = 64;

/// An append request as checked domain values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendDraft {
    pub request_id: String,
    pub site: SiteId,
    pub coi: Coi,
    pub occurred_at: Timestamp,
    pub signer: Signer,
    pub body: Body,
}

pub fn timestamp_to_wire(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.0.div_euclid(1000),
        nanos: (t.0.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn timestamp_from_wire(
    field: &str,
    t: Option<&prost_types::Timestamp>,
) -> Result<Timestamp, ConvertError> {
    let t = t.ok_or_else(|| err(field, "is required"))?;
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(err(field, "nanos must be between 0 and 999,999,999"));
    }
    // 0001-01-01 to 9999-12-31, as google.protobuf.Timestamp defines.
    if !(-62_135_596_800..=253_402_300_799).contains(&t.seconds) {
        return Err(err(field, "is outside 0001-01-01 to 9999-12-31"));
    }
    Ok(Timestamp(t.seconds * 1000 + i64::from(t.nanos / 1_000_000)))
}

fn parse<T, E: std::fmt::Display>(
    field: &str,
    text: &str,
    f: impl Fn(&str) -> Result<T, E>,
) -> Result<T, ConvertError> {
    if text.is_empty() {
        return Err(err(field, "is required"));
    }
    f(text).map_err(|e| err(field, e.to_string()))
}

fn unit(field: &str, text: &str) -> Result<UnitId, ConvertError> {
    parse(field, text, UnitId::parse)
}

fn units(field: &str, list: &[String]) -> Result<Vec<UnitId>, ConvertError> {
    list.iter()
        .enumerate()
        .map(|(i, u)| unit(&format!("{field}[{i}]"), u))
        .collect()
}

fn shipper(field: &str, text: &str) -> Result<ShipperId, ConvertError> {
    parse(field, text, ShipperId::parse)
}

fn site(field: &str, text: &str) -> Result<SiteId, ConvertError> {
    parse(field, text, SiteId::parse)
}

fn coi(field: &str, text: &str) -> Result<Coi, ConvertError> {
    parse(field, text, Coi::parse)
}

fn operator(field: &str, text: &str) -> Result<OperatorId, ConvertError> {
    parse(field, text, OperatorId::parse)
}

fn event_id(field: &str, text: &str) -> Result<EventId, ConvertError> {
    parse(field, text, EventId::from_hex)
}

fn new_units(field: &str, list: &[pb::NewUnit]) -> Result<Vec<NewUnit>, ConvertError> {
    list.iter()
        .enumerate()
        .map(|(i, n)| {
            let f = format!("{field}[{i}]");
            Ok(NewUnit {
                unit: unit(&format!("{f}.unit_id"), &n.unit_id)?,
                stability_deadline: timestamp_from_wire(
                    &format!("{f}.stability_deadline"),
                    n.stability_deadline.as_ref(),
                )?,
                temp_min_centi: n.temp_min_centi_celsius,
                temp_max_centi: n.temp_max_centi_celsius,
            })
        })
        .collect()
}

pub fn meaning_from_wire(field: &str, m: i32) -> Result<Meaning, ConvertError> {
    match pb::SignatureMeaning::try_from(m) {
        Ok(pb::SignatureMeaning::Performed) => Ok(Meaning::Performed),
        Ok(pb::SignatureMeaning::Verified) => Ok(Meaning::Verified),
        Ok(pb::SignatureMeaning::Approved) => Ok(Meaning::Approved),
        Ok(pb::SignatureMeaning::Unspecified) => {
            Err(err(field, "is required (performed, verified or approved)"))
        }
        Err(_) => Err(err(field, format!("{m} is not a known signature meaning"))),
    }
}

pub fn meaning_to_wire(m: Meaning) -> pb::SignatureMeaning {
    match m {
        Meaning::Performed => pb::SignatureMeaning::Performed,
        Meaning::Verified => pb::SignatureMeaning::Verified,
        Meaning::Approved => pb::SignatureMeaning::Approved,
    }
}

/// Converts a wire body; `field` is the path prefix for errors (`body`).
pub fn body_from_wire(field: &str, body: Option<&pb::EventBody>) -> Result<Body, ConvertError> {
    use pb::event_body::Kind;
    let kind = body
        .and_then(|b| b.kind.as_ref())
        .ok_or_else(|| err(field, "is required: set exactly one event kind"))?;
    let body = match kind {
        Kind::Collection(c) => Body::Collection {
            units: new_units(&format!("{field}.collection.units"), &c.units)?,
            dins: c
                .dins
                .iter()
                .enumerate()
                .map(|(i, d)| parse(&format!("{field}.collection.dins[{i}]"), d, Din::parse))
                .collect::<Result<_, _>>()?,
        },
        Kind::LabelVerification(l) => Body::LabelVerification {
            unit: unit(&format!("{field}.label_verification.unit_id"), &l.unit_id)?,
            scanned_coi: coi(
                &format!("{field}.label_verification.scanned_coi"),
                &l.scanned_coi,
            )?,
        },
        Kind::Pack(p) => Body::Pack {
            shipper: shipper(&format!("{field}.pack.shipper_id"), &p.shipper_id)?,
            units: units(&format!("{field}.pack.unit_ids"), &p.unit_ids)?,
            seal: text(&format!("{field}.pack.seal"), &p.seal)?,
        },
        Kind::Unpack(u) => Body::Unpack {
            shipper: shipper(&format!("{field}.unpack.shipper_id"), &u.shipper_id)?,
        },
        Kind::Dispatch(d) => Body::Dispatch {
            shipper: shipper(&format!("{field}.dispatch.shipper_id"), &d.shipper_id)?,
            to: site(&format!("{field}.dispatch.to_site_id"), &d.to_site_id)?,
        },
        Kind::Receipt(r) => Body::Receipt {
            shipper: shipper(&format!("{field}.receipt.shipper_id"), &r.shipper_id)?,
            from: site(&format!("{field}.receipt.from_site_id"), &r.from_site_id)?,
            seal_intact: r.seal_intact,
            scanned_coi: coi(&format!("{field}.receipt.scanned_coi"), &r.scanned_coi)?,
        },
        Kind::Store(s) => Body::Store {
            unit: unit(&format!("{field}.store.unit_id"), &s.unit_id)?,
            location: text(&format!("{field}.store.location"), &s.location)?,
        },
        Kind::Retrieve(r) => Body::Retrieve {
            unit: unit(&format!("{field}.retrieve.unit_id"), &r.unit_id)?,
            location: text(&format!("{field}.retrieve.location"), &r.location)?,
        },
        Kind::ManufacturingStep(m) => Body::ManufacturingStep {
            units: units(&format!("{field}.manufacturing_step.unit_ids"), &m.unit_ids)?,
            step: text(&format!("{field}.manufacturing_step.step"), &m.step)?,
        },
        Kind::Transformation(t) => Body::Transformation {
            inputs: units(
                &format!("{field}.transformation.input_unit_ids"),
                &t.input_unit_ids,
            )?,
            outputs: new_units(&format!("{field}.transformation.outputs"), &t.outputs)?,
        },
        Kind::ConditionRecord(c) => Body::ConditionRecord {
            units: units(&format!("{field}.condition_record.unit_ids"), &c.unit_ids)?,
            readings: c
                .readings
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    Ok(Reading {
                        at: timestamp_from_wire(
                            &format!("{field}.condition_record.readings[{i}].time"),
                            r.time.as_ref(),
                        )?,
                        temp_centi: r.temp_centi_celsius,
                    })
                })
                .collect::<Result<_, ConvertError>>()?,
            min_centi: c.min_centi_celsius,
            max_centi: c.max_centi_celsius,
            excursion: c.excursion,
        },
        Kind::ExcursionDisposition(d) => Body::ExcursionDisposition {
            condition: event_id(
                &format!("{field}.excursion_disposition.condition_event_id"),
                &d.condition_event_id,
            )?,
            accepted: d.accepted,
            reason: text(&format!("{field}.excursion_disposition.reason"), &d.reason)?,
        },
        Kind::QcHold(q) => Body::QcHold {
            units: units(&format!("{field}.qc_hold.unit_ids"), &q.unit_ids)?,
            reason: text(&format!("{field}.qc_hold.reason"), &q.reason)?,
        },
        Kind::QcRelease(q) => Body::QcRelease {
            units: units(&format!("{field}.qc_release.unit_ids"), &q.unit_ids)?,
        },
        Kind::QcReject(q) => Body::QcReject {
            units: units(&format!("{field}.qc_reject.unit_ids"), &q.unit_ids)?,
            reason: text(&format!("{field}.qc_reject.reason"), &q.reason)?,
        },
        Kind::Administration(a) => Body::Administration {
            unit: unit(&format!("{field}.administration.unit_id"), &a.unit_id)?,
            scanned_coi: coi(
                &format!("{field}.administration.scanned_coi"),
                &a.scanned_coi,
            )?,
        },
        Kind::Destruction(d) => Body::Destruction {
            unit: unit(&format!("{field}.destruction.unit_id"), &d.unit_id)?,
            reason: text(&format!("{field}.destruction.reason"), &d.reason)?,
            witness: match &d.witness {
                None => None,
                Some(w) => Some(Witness {
                    operator: operator(
                        &format!("{field}.destruction.witness.operator_id"),
                        &w.operator_id,
                    )?,
                    printed_name: text(
                        &format!("{field}.destruction.witness.printed_name"),
                        &w.printed_name,
                    )?,
                }),
            },
        },
        Kind::Reassignment(r) => Body::Reassignment {
            from_coi: coi(&format!("{field}.reassignment.from_coi"), &r.from_coi)?,
            units: new_units(&format!("{field}.reassignment.units"), &r.units)?,
            reason: text(&format!("{field}.reassignment.reason"), &r.reason)?,
            approvals: r
                .approvals
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    Ok(Approval {
                        operator: operator(
                            &format!("{field}.reassignment.approvals[{i}].operator_id"),
                            &a.operator_id,
                        )?,
                        printed_name: text(
                            &format!("{field}.reassignment.approvals[{i}].printed_name"),
                            &a.printed_name,
                        )?,
                        qa: a.qa,
                    })
                })
                .collect::<Result<_, ConvertError>>()?,
        },
        Kind::Correction(c) => Body::Correction {
            target: event_id(
                &format!("{field}.correction.target_event_id"),
                &c.target_event_id,
            )?,
            reason: text(&format!("{field}.correction.reason"), &c.reason)?,
        },
        Kind::Note(n) => Body::Note {
            text: text(&format!("{field}.note.text"), &n.text)?,
        },
        Kind::Unknown(_) => {
            return Err(err(
                format!("{field}.unknown"),
                "cannot be appended: it only describes stored events of a newer kind",
            ))
        }
    };
    body.validate().map_err(|e| err(field, shape_reason(&e)))?;
    Ok(body)
}

fn shape_reason(e: &ledger_core::cbor::DecodeError) -> String {
    match e {
        ledger_core::cbor::DecodeError::Shape { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

impl TryFrom<&pb::AppendRequest> for AppendDraft {
    type Error = ConvertError;

    fn try_from(r: &pb::AppendRequest) -> Result<AppendDraft, ConvertError> {
        if r.request_id.is_empty()
            || r.request_id.len() > REQUEST_ID_MAX
            || !r
                .request_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        {
            return Err(err(
                "request_id",
                format!("must be 1 to {REQUEST_ID_MAX} characters of A-Z a-z 0-9 - _ . :"),
            ));
        }
        let signer = r
            .signer
            .as_ref()
            .ok_or_else(|| err("signer", "is required"))?;
        if signer.printed_name.is_empty() {
            return Err(err(
                "signer.printed_name",
                "is required (Part 11: the signer's printed name)",
            ));
        }
        if signer.printed_name.len() > ledger_core::event::TEXT_BYTES_MAX {
            return Err(err("signer.printed_name", "is too long"));
        }
        let occurred_at = timestamp_from_wire("occurred_time", r.occurred_time.as_ref())?;
        let body = body_from_wire("body", r.body.as_ref())?;
        if let Some((idx, n)) = ledger_core::event::expired_at_creation(&body, occurred_at) {
            let list = match body {
                Body::Transformation { .. } => "transformation.outputs",
                _ => "collection.units",
            };
            return Err(err(
                format!("body.{list}[{idx}].stability_deadline"),
                format!(
                    "{} is not after occurred_time {occurred_at}: unit {} would be expired when it is created (check the deadline's time zone)",
                    n.stability_deadline, n.unit
                ),
            ));
        }
        Ok(AppendDraft {
            request_id: r.request_id.clone(),
            site: site("site_id", &r.site_id)?,
            coi: coi("coi", &r.coi)?,
            occurred_at,
            signer: Signer {
                operator: operator("signer.operator_id", &signer.operator_id)?,
                printed_name: text("signer.printed_name", &signer.printed_name)?,
                meaning: meaning_from_wire("signer.meaning", signer.meaning)?,
            },
            body,
        })
    }
}

fn new_units_to_wire(list: &[NewUnit]) -> Vec<pb::NewUnit> {
    list.iter()
        .map(|n| pb::NewUnit {
            unit_id: n.unit.to_string(),
            stability_deadline: Some(timestamp_to_wire(n.stability_deadline)),
            temp_min_centi_celsius: n.temp_min_centi,
            temp_max_centi_celsius: n.temp_max_centi,
        })
        .collect()
}

fn ids(list: &[UnitId]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

pub fn body_to_wire(body: &Body) -> pb::EventBody {
    use pb::event_body::Kind;
    let kind = match body {
        Body::Collection { units, dins } => Kind::Collection(pb::Collection {
            units: new_units_to_wire(units),
            dins: dins.iter().map(ToString::to_string).collect(),
        }),
        Body::LabelVerification { unit, scanned_coi } => {
            Kind::LabelVerification(pb::LabelVerification {
                unit_id: unit.to_string(),
                scanned_coi: scanned_coi.to_string(),
            })
        }
        Body::Pack {
            shipper,
            units,
            seal,
        } => Kind::Pack(pb::Pack {
            shipper_id: shipper.to_string(),
            unit_ids: ids(units),
            seal: seal.clone(),
        }),
        Body::Unpack { shipper } => Kind::Unpack(pb::Unpack {
            shipper_id: shipper.to_string(),
        }),
        Body::Dispatch { shipper, to } => Kind::Dispatch(pb::Dispatch {
            shipper_id: shipper.to_string(),
            to_site_id: to.to_string(),
        }),
        Body::Receipt {
            shipper,
            from,
            seal_intact,
            scanned_coi,
        } => Kind::Receipt(pb::Receipt {
            shipper_id: shipper.to_string(),
            from_site_id: from.to_string(),
            seal_intact: *seal_intact,
            scanned_coi: scanned_coi.to_string(),
        }),
        Body::Store { unit, location } => Kind::Store(pb::Store {
            unit_id: unit.to_string(),
            location: location.clone(),
        }),
        Body::Retrieve { unit, location } => Kind::Retrieve(pb::Retrieve {
            unit_id: unit.to_string(),
            location: location.clone(),
        }),
        Body::ManufacturingStep { units, step } => Kind::ManufacturingStep(pb::ManufacturingStep {
            unit_ids: ids(units),
            step: step.clone(),
        }),
        Body::Transformation { inputs, outputs } => Kind::Transformation(pb::Transformation {
            input_unit_ids: ids(inputs),
            outputs: new_units_to_wire(outputs),
        }),
        Body::ConditionRecord {
            units,
            readings,
            min_centi,
            max_centi,
            excursion,
        } => Kind::ConditionRecord(pb::ConditionRecord {
            unit_ids: ids(units),
            readings: readings
                .iter()
                .map(|r| pb::Reading {
                    time: Some(timestamp_to_wire(r.at)),
                    temp_centi_celsius: r.temp_centi,
                })
                .collect(),
            min_centi_celsius: *min_centi,
            max_centi_celsius: *max_centi,
            excursion: *excursion,
        }),
        Body::ExcursionDisposition {
            condition,
            accepted,
            reason,
        } => Kind::ExcursionDisposition(pb::ExcursionDisposition {
            condition_event_id: condition.to_hex(),
            accepted: *accepted,
            reason: reason.clone(),
        }),
        Body::QcHold { units, reason } => Kind::QcHold(pb::QcHold {
            unit_ids: ids(units),
            reason: reason.clone(),
        }),
        Body::QcRelease { units } => Kind::QcRelease(pb::QcRelease {
            unit_ids: ids(units),
        }),
        Body::QcReject { units, reason } => Kind::QcReject(pb::QcReject {
            unit_ids: ids(units),
            reason: reason.clone(),
        }),
        Body::Administration { unit, scanned_coi } => Kind::Administration(pb::Administration {
            unit_id: unit.to_string(),
            scanned_coi: scanned_coi.to_string(),
        }),
        Body::Destruction {
            unit,
            reason,
            witness,
        } => Kind::Destruction(pb::Destruction {
            unit_id: unit.to_string(),
            reason: reason.clone(),
            witness: witness.as_ref().map(|w| pb::Person {
                operator_id: w.operator.to_string(),
                printed_name: w.printed_name.clone(),
            }),
        }),
        Body::Reassignment {
            from_coi,
            units,
            reason,
            approvals,
        } => Kind::Reassignment(pb::Reassignment {
            from_coi: from_coi.to_string(),
            units: new_units_to_wire(units),
            reason: reason.clone(),
            approvals: approvals
                .iter()
                .map(|a| pb::Approval {
                    operator_id: a.operator.to_string(),
                    printed_name: a.printed_name.clone(),
                    qa: a.qa,
                })
                .collect(),
        }),
        Body::Correction { target, reason } => Kind::Correction(pb::Correction {
            target_event_id: target.to_hex(),
            reason: reason.clone(),
        }),
        Body::Note { text } => Kind::Note(pb::Note { text: text.clone() }),
        Body::Unknown(u) => Kind::Unknown(pb::UnknownBody { kind: u.kind() }),
    };
    pb::EventBody { kind: Some(kind) }
}

pub fn event_to_wire(e: &Event) -> pb::Event {
    pb::Event {
        event_id: e.id().to_hex(),
        network_id: e.network().to_string(),
        site_id: e.author().to_string(),
        seq: e.seq().0,
        prev_event_id: e.prev().map(|p| p.to_hex()).unwrap_or_default(),
        public_key: e.key().to_hex(),
        coi: e.coi().to_string(),
        parent_event_ids: e.parents().iter().map(EventId::to_hex).collect(),
        occurred_time: Some(timestamp_to_wire(e.occurred_at())),
        recorded_time: Some(timestamp_to_wire(e.recorded_at())),
        signer: Some(pb::Signer {
            operator_id: e.signer().operator.to_string(),
            printed_name: e.signer().printed_name.clone(),
            meaning: meaning_to_wire(e.signer().meaning) as i32,
        }),
        body: Some(body_to_wire(e.body())),
        signed_bytes: e.bytes().to_vec(),
    }
}

pub fn status_to_wire(s: Status) -> pb::ChainStatus {
    match s {
        Status::Empty => pb::ChainStatus::Empty,
        Status::Collected => pb::ChainStatus::Collected,
        Status::InTransit => pb::ChainStatus::InTransit,
        Status::InManufacturing => pb::ChainStatus::InManufacturing,
        Status::AwaitingQc => pb::ChainStatus::AwaitingQc,
        Status::Released => pb::ChainStatus::Released,
        Status::Administered => pb::ChainStatus::Administered,
        Status::Destroyed => pb::ChainStatus::Destroyed,
    }
}

/// `None` for `UNSPECIFIED` (meaning "any"); an error for a value this version does not know.
pub fn status_from_wire(field: &str, s: i32) -> Result<Option<Status>, ConvertError> {
    Ok(Some(
        match pb::ChainStatus::try_from(s)
            .map_err(|_| err(field, format!("{s} is not a known chain status")))?
        {
            pb::ChainStatus::Unspecified => return Ok(None),
            pb::ChainStatus::Empty => Status::Empty,
            pb::ChainStatus::Collected => Status::Collected,
            pb::ChainStatus::InTransit => Status::InTransit,
            pb::ChainStatus::InManufacturing => Status::InManufacturing,
            pb::ChainStatus::AwaitingQc => Status::AwaitingQc,
            pb::ChainStatus::Released => Status::Released,
            pb::ChainStatus::Administered => Status::Administered,
            pb::ChainStatus::Destroyed => Status::Destroyed,
        },
    ))
}

pub fn verdict_to_wire(v: VerdictKind) -> pb::Verdict {
    match v {
        VerdictKind::Intact => pb::Verdict::Intact,
        VerdictKind::Broken => pb::Verdict::Broken,
        VerdictKind::Incomplete => pb::Verdict::Incomplete,
        VerdictKind::Unverifiable => pb::Verdict::Unverifiable,
    }
}

pub fn verdict_from_wire(v: i32) -> Option<VerdictKind> {
    match pb::Verdict::try_from(v).ok()? {
        pb::Verdict::Intact => Some(VerdictKind::Intact),
        pb::Verdict::Broken => Some(VerdictKind::Broken),
        pb::Verdict::Incomplete => Some(VerdictKind::Incomplete),
        pb::Verdict::Unverifiable => Some(VerdictKind::Unverifiable),
        pb::Verdict::Unspecified => None,
    }
}

pub fn finding_to_wire(f: &Finding) -> pb::Finding {
    pb::Finding {
        code: f.code.as_str().to_owned(),
        event_ids: f.events.iter().map(EventId::to_hex).collect(),
        message: f.message.clone(),
        depends_on_missing: f.depends_on_missing,
    }
}

pub fn verify_response(report: &BundleReport) -> pb::VerifyChainResponse {
    let v = &report.verdict;
    pb::VerifyChainResponse {
        verdict: verdict_to_wire(v.kind) as i32,
        status: status_to_wire(v.status) as i32,
        findings: v.findings.iter().map(finding_to_wire).collect(),
        event_count: v.n_events as u64,
    }
}

/// An alert as the node holds it: raised at `raised`, cleared at `cleared` (None: open).
pub fn alert_to_wire(
    a: &ledger_core::Alert,
    raised: Timestamp,
    cleared: Option<Timestamp>,
) -> pb::Alert {
    pb::Alert {
        kind: a.key.kind.as_str().to_owned(),
        severity: match a.key.kind.severity() {
            ledger_core::AlertSeverity::Warning => pb::AlertSeverity::Warning,
            ledger_core::AlertSeverity::Critical => pb::AlertSeverity::Critical,
        } as i32,
        coi: a
            .key
            .coi
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        unit_id: a
            .key
            .unit
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        site_id: a
            .key
            .site
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        event_id: a.key.event.map(|e| e.to_hex()).unwrap_or_default(),
        message: a.message.clone(),
        since_time: Some(timestamp_to_wire(a.since)),
        raised_time: Some(timestamp_to_wire(raised)),
        cleared_time: cleared.map(timestamp_to_wire),
    }
}

/// An alert kind filter: empty means any.
///
/// # Errors
/// A name that is not an alert kind.
pub fn alert_kind_from_wire(
    field: &str,
    s: &str,
) -> Result<Option<ledger_core::AlertKind>, ConvertError> {
    if s.is_empty() {
        return Ok(None);
    }
    ledger_core::AlertKind::parse(s).map(Some).ok_or_else(|| {
        let names: Vec<&str> = ledger_core::AlertKind::ALL
            .iter()
            .map(|k| k.as_str())
            .collect();
        err(
            field,
            format!(
                "{s:?} is not an alert kind; use one of {}",
                names.join(", ")
            ),
        )
    })
}

/// A span as a wire duration: whole seconds and the rest in nanoseconds, both of the
/// span's sign, as google.protobuf.Duration requires.
pub fn duration_to_wire(d: Millis) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.0 / 1000,
        nanos: (d.0 % 1000 * 1_000_000) as i32,
    }
}

/// A wire duration as whole milliseconds (the sub-millisecond part dropped, floor).
///
/// # Errors
/// A missing duration, nanos out of range or of the other sign than seconds, or a span that
/// does not fit in milliseconds.
pub fn duration_from_wire(
    field: &str,
    d: Option<&prost_types::Duration>,
) -> Result<Millis, ConvertError> {
    let d = d.ok_or_else(|| err(field, "is required"))?;
    if !(-999_999_999..=999_999_999).contains(&d.nanos) {
        return Err(err(
            field,
            "nanos must be between -999,999,999 and 999,999,999",
        ));
    }
    if (d.seconds > 0 && d.nanos < 0) || (d.seconds < 0 && d.nanos > 0) {
        return Err(err(field, "seconds and nanos must have the same sign"));
    }
    d.seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(i64::from(d.nanos).div_euclid(1_000_000)))
        .map(Millis)
        .ok_or_else(|| err(field, "does not fit in milliseconds"))
}

/// The period a GetKpis request asks for.
///
/// # Errors
/// A missing or malformed `start_time` or `end_time`, or an `end_time` not after
/// `start_time` (the error names `end_time`).
pub fn kpi_period_from_wire(r: &pb::GetKpisRequest) -> Result<Period, ConvertError> {
    let from = timestamp_from_wire("start_time", r.start_time.as_ref())?;
    let to = timestamp_from_wire("end_time", r.end_time.as_ref())?;
    Period::new(from, to).map_err(|_| {
        err(
            "end_time",
            format!("{to} is not after start_time {from}: the period [start_time, end_time) would be empty"),
        )
    })
}

pub fn durations_to_wire(d: &Durations) -> pb::DurationStats {
    pb::DurationStats {
        count: d.count,
        min: Some(duration_to_wire(d.min)),
        median: Some(duration_to_wire(d.median)),
        p90: Some(duration_to_wire(d.p90)),
        max: Some(duration_to_wire(d.max)),
        mean: Some(duration_to_wire(d.mean)),
    }
}

fn finding_counts_to_wire(counts: &BTreeMap<Code, u64>) -> Vec<pb::FindingCount> {
    counts
        .iter()
        .map(|(code, n)| pb::FindingCount {
            code: code.as_str().to_owned(),
            count: *n,
        })
        .collect()
}

/// A KPI report as GetKpis answers it, computed at `computed_at` (the node's clock).
pub fn kpis_to_wire(r: &KpiReport, computed_at: Timestamp) -> pb::GetKpisResponse {
    pb::GetKpisResponse {
        start_time: Some(timestamp_to_wire(r.period.from())),
        end_time: Some(timestamp_to_wire(r.period.to())),
        computed_time: Some(timestamp_to_wire(computed_at)),
        chains_counted: r.chains_counted,
        chains_incomplete: r.chains_incomplete,
        broken_cois: r.chains_broken.iter().map(ToString::to_string).collect(),
        vein_to_vein: r.vein_to_vein.as_ref().map(durations_to_wire),
        sites: r
            .sites
            .iter()
            .map(|s| pb::SiteKpi {
                site_id: s.site.to_string(),
                dwell: s.dwell.as_ref().map(durations_to_wire),
                condition_records: s.condition_records,
                excursions: s.excursions,
                findings: finding_counts_to_wire(&s.findings),
            })
            .collect(),
        lanes: r
            .lanes
            .iter()
            .map(|l| pb::LaneKpi {
                from_site_id: l.from.to_string(),
                to_site_id: l.to.to_string(),
                limit: Some(duration_to_wire(l.limit)),
                handoff: l.handoff.as_ref().map(durations_to_wire),
                late: l.late,
                with_excursion: l.with_excursion,
            })
            .collect(),
        findings_unplaced: finding_counts_to_wire(&r.findings_unplaced),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> pb::AppendRequest {
        pb::AppendRequest {
            request_id: "r-1".into(),
            site_id: "clinic-a".into(),
            coi: "CHA999926ABC123".into(),
            occurred_time: Some(prost_types::Timestamp {
                seconds: 1_772_438_400,
                nanos: 123_456_789,
            }),
            signer: Some(pb::Signer {
                operator_id: "nurse.kim".into(),
                printed_name: "K. Kim".into(),
                meaning: pb::SignatureMeaning::Performed as i32,
            }),
            body: Some(pb::EventBody {
                kind: Some(pb::event_body::Kind::Pack(pb::Pack {
                    shipper_id: "SHP-1".into(),
                    unit_ids: vec!["BAG-1".into()],
                    seal: "S-1".into(),
                })),
            }),
        }
    }

    #[track_caller]
    fn check_err(r: pb::AppendRequest, field: &str, reason: &str) {
        let e = AppendDraft::try_from(&r).expect_err("must be refused");
        assert_eq!(e.field, field, "{e}");
        assert!(e.reason.contains(reason), "{e}");
    }

    #[test]
    fn a_good_request_converts_and_round_trips_its_body() {
        let d = AppendDraft::try_from(&request()).unwrap();
        assert_eq!(d.occurred_at, Timestamp(1_772_438_400_123));
        assert_eq!(body_to_wire(&d.body), request().body.unwrap());
    }

    #[test]
    fn errors_name_the_field() {
        let mut r = request();
        r.coi = "CHA999926ABC12".into();
        check_err(r, "coi", "15 characters");
        let mut r = request();
        r.request_id = String::new();
        check_err(r, "request_id", "1 to 64");
        let mut r = request();
        r.signer.as_mut().unwrap().meaning = 0;
        check_err(r, "signer.meaning", "required");
        let mut r = request();
        r.signer.as_mut().unwrap().meaning = 17;
        check_err(r, "signer.meaning", "17 is not a known");
        let mut r = request();
        r.body = None;
        check_err(r, "body", "exactly one");
        let mut r = request();
        r.body = Some(pb::EventBody {
            kind: Some(pb::event_body::Kind::Pack(pb::Pack {
                shipper_id: "SHP-1".into(),
                unit_ids: vec!["BAG-1".into(), "bad unit".into()],
                seal: String::new(),
            })),
        });
        check_err(r, "body.pack.unit_ids[1]", "may hold only");
        let mut r = request();
        r.body = Some(pb::EventBody {
            kind: Some(pb::event_body::Kind::Pack(pb::Pack {
                shipper_id: "SHP-1".into(),
                unit_ids: vec![],
                seal: String::new(),
            })),
        });
        check_err(r, "body", "must not be empty");
        let mut r = request();
        r.occurred_time = None;
        check_err(r, "occurred_time", "required");
        let mut r = request();
        r.body = Some(pb::EventBody {
            kind: Some(pb::event_body::Kind::Note(pb::Note {
                text: "x".repeat(5000),
            })),
        });
        check_err(r, "body", "more than 1024");
    }

    #[test]
    fn durations_round_trip_with_one_sign() {
        for ms in [0, 1, 999, 1000, 1500, -1, -1500, i64::MAX, i64::MIN] {
            let wire = duration_to_wire(Millis(ms));
            assert!(
                (wire.seconds >= 0 && wire.nanos >= 0) || (wire.seconds <= 0 && wire.nanos <= 0),
                "{ms}: {wire:?}"
            );
            assert_eq!(duration_from_wire("d", Some(&wire)), Ok(Millis(ms)));
        }
        let d = |seconds, nanos| prost_types::Duration { seconds, nanos };
        assert!(duration_from_wire("d", Some(&d(1, -1))).is_err());
        assert!(duration_from_wire("d", Some(&d(0, 1_000_000_000))).is_err());
        assert!(duration_from_wire("d", Some(&d(i64::MAX, 0))).is_err());
        assert_eq!(
            duration_from_wire("d", None).unwrap_err().reason,
            "is required"
        );
    }

    #[test]
    fn a_kpi_period_needs_both_ends_in_order() {
        let at = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
        let request = |start_time, end_time| pb::GetKpisRequest {
            start_time,
            end_time,
        };
        let p = kpi_period_from_wire(&request(at(10), at(20))).expect("a period");
        assert_eq!((p.from(), p.to()), (Timestamp(10_000), Timestamp(20_000)));
        let e = kpi_period_from_wire(&request(None, at(20))).unwrap_err();
        assert_eq!(e.to_string(), "start_time: is required");
        let e = kpi_period_from_wire(&request(at(10), None)).unwrap_err();
        assert_eq!(e.to_string(), "end_time: is required");
        for end in [10, 9] {
            let e = kpi_period_from_wire(&request(at(10), at(end))).unwrap_err();
            assert_eq!(e.field, "end_time", "{e}");
        }
    }

    #[test]
    fn a_collection_expired_at_its_own_scan_is_refused() {
        let collection = |deadline_nanos: i32| {
            let mut r = request();
            r.body = Some(pb::EventBody {
                kind: Some(pb::event_body::Kind::Collection(pb::Collection {
                    units: vec![pb::NewUnit {
                        unit_id: "BAG-1".into(),
                        // occurred_time is 1_772_438_400 s and 123 ms.
                        stability_deadline: Some(prost_types::Timestamp {
                            seconds: 1_772_438_400,
                            nanos: deadline_nanos,
                        }),
                        temp_min_centi_celsius: -15_000,
                        temp_max_centi_celsius: -12_000,
                    }],
                    dins: Vec::new(),
                })),
            });
            r
        };
        assert!(AppendDraft::try_from(&collection(124_000_000)).is_ok());
        check_err(
            collection(123_000_000),
            "body.collection.units[0].stability_deadline",
            "is not after occurred_time",
        );
        check_err(
            collection(0),
            "body.collection.units[0].stability_deadline",
            "unit BAG-1 would be expired when it is created",
        );
    }
}
