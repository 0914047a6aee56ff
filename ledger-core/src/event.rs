//! The custody event: model, canonical bytes, signing and decoding.
//!
//! # Bytes
//!
//! An event is the CBOR array `signed = [unsigned, signature]` where `signature` is a
//! 64-byte byte string and `unsigned` is this fixed-order array (every integer in its
//! shortest head, every length definite, no maps, no floats, no tags):
//!
//! | idx | field        | CBOR                                     |
//! |-----|--------------|------------------------------------------|
//! | 0   | format       | uint, always 1                           |
//! | 1   | network      | text, [`NetworkId`]                      |
//! | 2   | author       | text, [`SiteId`] of the signing site     |
//! | 3   | seq          | uint >= 1, the author's feed position    |
//! | 4   | prev         | bstr(32) id of the author's seq-1 event; null iff seq = 1 |
//! | 5   | key          | bstr(32) Ed25519 public key that signed  |
//! | 6   | coi          | text, canonical 15-character COI         |
//! | 7   | parents      | array of bstr(32), strictly ascending    |
//! | 8   | occurred_at  | int, ms since the Unix epoch (scan time) |
//! | 9   | recorded_at  | int, ms since the Unix epoch (signing)   |
//! | 10  | signer       | `[operator text, printed_name text, meaning uint]` |
//! | 11  | body         | `[kind uint, fields...]`, see [`Body`]   |
//!
//! The signature is Ed25519 over `b"ledger.v1.event\0" || unsigned`. The event id is
//! SHA-256 over all of `signed`. Because `signed` is the one-byte array head `0x82`,
//! then `unsigned`, then the two-byte head `0x58 0x40` and the 64 signature bytes, the
//! unsigned bytes are recovered as a slice of the signed bytes, never re-encoded.
//!
//! The Part 11 signature manifestation (who, printed name, when, meaning) is inside the
//! signed bytes: operator and printed name in `signer`, the time in `recorded_at`, the
//! meaning in `signer[2]`. No patient name, birth date or record number has a field: the
//! COI is the only link to the patient.

use crate::cbor::{self, item_array, item_text, shape, DecodeError, Fields};
use crate::crypto::{self, PublicKey, SecretKey, Signature, TAG_EVENT};
use crate::ids::{Coi, Din, EventId, NetworkId, OperatorId, Seq, ShipperId, SiteId, UnitId};
use crate::time::Timestamp;
use ciborium::value::Value;

/// The only event format this crate writes.
pub const EVENT_FORMAT: u64 = 1;
/// Largest signed event, well under NATS's 1 MiB payload and gRPC's 4 MiB message.
pub const EVENT_BYTES_MAX: usize = 64 * 1024;
pub const PARENTS_MAX: usize = 32;
pub const UNITS_PER_EVENT_MAX: usize = 64;
pub const DINS_MAX: usize = 16;
pub const READINGS_MAX: usize = 1024;
pub const APPROVALS_MAX: usize = 8;
/// Free text (reasons, notes, locations, step names, printed names).
pub const TEXT_BYTES_MAX: usize = 1024;

/// The first character in `text` that a writer must not put into free text: a control
/// character (escape sequences can erase a line and print a false verdict on an auditor's
/// terminal; line breaks forge lines in listings) or a bidirectional-formatting character
/// (which reorders what is shown). Events read back are not checked: what was signed
/// stays verifiable; renderers escape it.
pub fn unprintable(text: &str) -> Option<char> {
    text.chars().find(|&c| is_unprintable(c))
}

/// Whether `c` is one of the characters [`unprintable`] looks for.
pub fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// The first unit `body` creates (a collection's units, a transformation's outputs) whose
/// stability deadline is not after `occurred_at`, the moment it was created, with its index
/// in that list. Such a unit is expired from its first event, and every later movement of
/// it would be a `condition.stability_expired` break: a writer almost always meant another
/// time (a time zone, or the collection time typed into the deadline). Checked on append
/// only; the decoder still reads events that hold one, so what was signed stays verifiable.
pub fn expired_at_creation(body: &Body, occurred_at: Timestamp) -> Option<(usize, &NewUnit)> {
    let created = match body {
        Body::Collection { units, .. } => units.as_slice(),
        Body::Transformation { outputs, .. } => outputs.as_slice(),
        // A reassignment carries units that exist already; their deadlines are copies.
        _ => &[],
    };
    created
        .iter()
        .enumerate()
        .find(|(_, n)| n.stability_deadline <= occurred_at)
}

const WHAT: &str = "event";

/// The meaning of a signature (21 CFR 11.50(a)(3)).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Meaning {
    Performed,
    Verified,
    Approved,
}

impl Meaning {
    fn code(self) -> u64 {
        match self {
            Meaning::Performed => 1,
            Meaning::Verified => 2,
            Meaning::Approved => 3,
        }
    }

    fn from_code(code: u64) -> Option<Meaning> {
        match code {
            1 => Some(Meaning::Performed),
            2 => Some(Meaning::Verified),
            3 => Some(Meaning::Approved),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Meaning::Performed => "performed",
            Meaning::Verified => "verified",
            Meaning::Approved => "approved",
        }
    }

    pub fn parse(text: &str) -> Option<Meaning> {
        [Meaning::Performed, Meaning::Verified, Meaning::Approved]
            .into_iter()
            .find(|m| m.as_str() == text)
    }
}

/// Who signed and what the signature means.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Signer {
    pub operator: OperatorId,
    pub printed_name: String,
    pub meaning: Meaning,
}

/// A unit brought into existence by a collection, transformation or reassignment, with the
/// limits the chain of condition is judged against.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NewUnit {
    pub unit: UnitId,
    pub stability_deadline: Timestamp,
    /// Allowed temperature range in hundredths of a degree Celsius (integers: no floats in
    /// signed bytes).
    pub temp_min_centi: i32,
    pub temp_max_centi: i32,
}

/// One approver of a reassignment; `qa` marks a quality-assurance approver.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Approval {
    pub operator: OperatorId,
    pub printed_name: String,
    pub qa: bool,
}

/// A second person who witnessed a destruction.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Witness {
    pub operator: OperatorId,
    pub printed_name: String,
}

/// One temperature reading, hundredths of a degree Celsius.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Reading {
    pub at: Timestamp,
    pub temp_centi: i32,
}

/// The body of an event: what happened. The comment on each variant gives its kind code
/// (the first element of the body array), the remaining fields in order, and its GS1
/// EPCIS 2.0 mapping (see [`Body::epcis`]).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Body {
    /// 1: `[units [new_unit], dins [text]]`, new_unit = `[unit, deadline, tmin, tmax]`.
    Collection { units: Vec<NewUnit>, dins: Vec<Din> },
    /// 2: `[unit, scanned_coi]`.
    LabelVerification { unit: UnitId, scanned_coi: Coi },
    /// 3: `[shipper, units [text], seal text]`.
    Pack {
        shipper: ShipperId,
        units: Vec<UnitId>,
        seal: String,
    },
    /// 4: `[shipper]`: every unit packed in it comes out.
    Unpack { shipper: ShipperId },
    /// 5: `[shipper, to site]`.
    Dispatch { shipper: ShipperId, to: SiteId },
    /// 6: `[shipper, from site, seal_intact bool, scanned_coi]`.
    Receipt {
        shipper: ShipperId,
        from: SiteId,
        seal_intact: bool,
        scanned_coi: Coi,
    },
    /// 7: `[unit, location text]`.
    Store { unit: UnitId, location: String },
    /// 8: `[unit, location text]`.
    Retrieve { unit: UnitId, location: String },
    /// 9: `[units [text], step text]`.
    ManufacturingStep { units: Vec<UnitId>, step: String },
    /// 10: `[inputs [text], outputs [new_unit]]`: inputs are consumed.
    Transformation {
        inputs: Vec<UnitId>,
        outputs: Vec<NewUnit>,
    },
    /// 11: `[units [text], readings [[at, temp]], min, max, excursion bool]`.
    ConditionRecord {
        units: Vec<UnitId>,
        readings: Vec<Reading>,
        min_centi: i32,
        max_centi: i32,
        excursion: bool,
    },
    /// 12: `[condition_event bstr(32), accepted bool, reason text]`.
    ExcursionDisposition {
        condition: EventId,
        accepted: bool,
        reason: String,
    },
    /// 13: `[units [text], reason text]`.
    QcHold { units: Vec<UnitId>, reason: String },
    /// 14: `[units [text]]`.
    QcRelease { units: Vec<UnitId> },
    /// 15: `[units [text], reason text]`.
    QcReject { units: Vec<UnitId>, reason: String },
    /// 16: `[unit, scanned_coi]`: the unit is consumed.
    Administration { unit: UnitId, scanned_coi: Coi },
    /// 17: `[unit, reason text, witness null | [operator, printed_name]]`.
    Destruction {
        unit: UnitId,
        reason: String,
        witness: Option<Witness>,
    },
    /// 18: `[from_coi, units [new_unit], reason, approvals [[operator, name, qa bool]]]`:
    /// governance-approved re-allocation of units from another COI into this one.
    Reassignment {
        from_coi: Coi,
        units: Vec<NewUnit>,
        reason: String,
        approvals: Vec<Approval>,
    },
    /// 19: `[target bstr(32), reason text]`: nothing is edited; this points at the record
    /// it corrects.
    Correction { target: EventId, reason: String },
    /// 20: `[text]`.
    Note { text: String },
    /// A kind code this version does not know (a newer writer). Kept byte-exact so the
    /// signature still verifies; reported as unknown, never as tampering.
    Unknown(UnknownBody),
}

/// A body of an unknown kind, kept as read.
#[derive(Clone, PartialEq, Debug)]
pub struct UnknownBody {
    kind: u64,
    value: Value,
}

impl Eq for UnknownBody {}

impl UnknownBody {
    /// A body of kind `kind` with one text field, as a newer writer might produce.
    ///
    /// # Panics
    /// If `kind` is one this version knows (1 to 20): that would not be unknown.
    pub fn new(kind: u64, text: &str) -> UnknownBody {
        assert!(kind > 20, "kind {kind} is a known body kind");
        UnknownBody {
            kind,
            value: Value::Array(vec![cbor::uint(kind), cbor::text(text)]),
        }
    }

    pub fn kind(&self) -> u64 {
        self.kind
    }
}

/// GS1 EPCIS 2.0 event type for a body.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EpcisType {
    Object,
    Aggregation,
    Transformation,
}

impl Body {
    pub fn kind_code(&self) -> u64 {
        match self {
            Body::Collection { .. } => 1,
            Body::LabelVerification { .. } => 2,
            Body::Pack { .. } => 3,
            Body::Unpack { .. } => 4,
            Body::Dispatch { .. } => 5,
            Body::Receipt { .. } => 6,
            Body::Store { .. } => 7,
            Body::Retrieve { .. } => 8,
            Body::ManufacturingStep { .. } => 9,
            Body::Transformation { .. } => 10,
            Body::ConditionRecord { .. } => 11,
            Body::ExcursionDisposition { .. } => 12,
            Body::QcHold { .. } => 13,
            Body::QcRelease { .. } => 14,
            Body::QcReject { .. } => 15,
            Body::Administration { .. } => 16,
            Body::Destruction { .. } => 17,
            Body::Reassignment { .. } => 18,
            Body::Correction { .. } => 19,
            Body::Note { .. } => 20,
            Body::Unknown(u) => u.kind,
        }
    }

    /// Stable snake_case name, used in fixtures, reports and the API.
    /// [`Body::kind_name`] of every known kind, in kind-code order.
    pub const KIND_NAMES: &'static [&'static str] = &[
        "collection",
        "label_verification",
        "pack",
        "unpack",
        "dispatch",
        "receipt",
        "store",
        "retrieve",
        "manufacturing_step",
        "transformation",
        "condition_record",
        "excursion_disposition",
        "qc_hold",
        "qc_release",
        "qc_reject",
        "administration",
        "destruction",
        "reassignment",
        "correction",
        "note",
    ];

    pub fn kind_name(&self) -> &'static str {
        match self {
            Body::Collection { .. } => "collection",
            Body::LabelVerification { .. } => "label_verification",
            Body::Pack { .. } => "pack",
            Body::Unpack { .. } => "unpack",
            Body::Dispatch { .. } => "dispatch",
            Body::Receipt { .. } => "receipt",
            Body::Store { .. } => "store",
            Body::Retrieve { .. } => "retrieve",
            Body::ManufacturingStep { .. } => "manufacturing_step",
            Body::Transformation { .. } => "transformation",
            Body::ConditionRecord { .. } => "condition_record",
            Body::ExcursionDisposition { .. } => "excursion_disposition",
            Body::QcHold { .. } => "qc_hold",
            Body::QcRelease { .. } => "qc_release",
            Body::QcReject { .. } => "qc_reject",
            Body::Administration { .. } => "administration",
            Body::Destruction { .. } => "destruction",
            Body::Reassignment { .. } => "reassignment",
            Body::Correction { .. } => "correction",
            Body::Note { .. } => "note",
            Body::Unknown(_) => "unknown",
        }
    }

    /// The EPCIS 2.0 event type and CBV 2.0 business step. CBV has no "transforming"
    /// step, so a transformation is `commissioning` (its outputs come into being); label
    /// verification is `inspecting`; QC decisions and dispositions are `inspecting` with a
    /// disposition; a correction becomes an `errorDeclaration` on the corrected event.
    /// Taking a unit out of storage has no CBV step either (`picking` means picking for an
    /// order): `retrieving` is a private step, written `urn:ledger:bizstep:retrieving`.
    pub fn epcis(&self) -> (EpcisType, &'static str) {
        use EpcisType::*;
        match self {
            Body::Collection { .. } => (Object, "commissioning"),
            Body::LabelVerification { .. } => (Object, "inspecting"),
            Body::Pack { .. } => (Aggregation, "packing"),
            Body::Unpack { .. } => (Aggregation, "unpacking"),
            Body::Dispatch { .. } => (Object, "shipping"),
            Body::Receipt { .. } => (Object, "receiving"),
            Body::Store { .. } => (Object, "storing"),
            Body::Retrieve { .. } => (Object, "retrieving"),
            Body::ManufacturingStep { .. } => (Object, "assembling"),
            Body::Transformation { .. } => (Transformation, "commissioning"),
            Body::ConditionRecord { .. } => (Object, "sensor_reporting"),
            Body::ExcursionDisposition { .. } => (Object, "inspecting"),
            Body::QcHold { .. } => (Object, "holding"),
            Body::QcRelease { .. } => (Object, "inspecting"),
            Body::QcReject { .. } => (Object, "inspecting"),
            Body::Administration { .. } => (Object, "dispensing"),
            Body::Destruction { .. } => (Object, "destroying"),
            Body::Reassignment { .. } => (Object, "commissioning"),
            Body::Correction { .. } => (Object, "inspecting"),
            Body::Note { .. } => (Object, "inspecting"),
            Body::Unknown(_) => (Object, "inspecting"),
        }
    }

    fn encode(&self) -> Value {
        use cbor::{bytes, int, text, uint};
        let units = |us: &[UnitId]| Value::Array(us.iter().map(|u| text(u.as_str())).collect());
        let new_units = |us: &[NewUnit]| {
            Value::Array(
                us.iter()
                    .map(|n| {
                        Value::Array(vec![
                            text(n.unit.as_str()),
                            int(n.stability_deadline.0),
                            int(i64::from(n.temp_min_centi)),
                            int(i64::from(n.temp_max_centi)),
                        ])
                    })
                    .collect(),
            )
        };
        let mut fields = vec![uint(self.kind_code())];
        match self {
            Body::Collection { units: us, dins } => {
                fields.push(new_units(us));
                fields.push(Value::Array(
                    dins.iter().map(|d| text(d.as_str())).collect(),
                ));
            }
            Body::LabelVerification { unit, scanned_coi }
            | Body::Administration { unit, scanned_coi } => {
                fields.push(text(unit.as_str()));
                fields.push(text(scanned_coi.as_str()));
            }
            Body::Pack {
                shipper,
                units: us,
                seal,
            } => {
                fields.push(text(shipper.as_str()));
                fields.push(units(us));
                fields.push(text(seal));
            }
            Body::Unpack { shipper } => fields.push(text(shipper.as_str())),
            Body::Dispatch { shipper, to } => {
                fields.push(text(shipper.as_str()));
                fields.push(text(to.as_str()));
            }
            Body::Receipt {
                shipper,
                from,
                seal_intact,
                scanned_coi,
            } => {
                fields.push(text(shipper.as_str()));
                fields.push(text(from.as_str()));
                fields.push(Value::Bool(*seal_intact));
                fields.push(text(scanned_coi.as_str()));
            }
            Body::Store { unit, location } | Body::Retrieve { unit, location } => {
                fields.push(text(unit.as_str()));
                fields.push(text(location));
            }
            Body::ManufacturingStep { units: us, step } => {
                fields.push(units(us));
                fields.push(text(step));
            }
            Body::Transformation { inputs, outputs } => {
                fields.push(units(inputs));
                fields.push(new_units(outputs));
            }
            Body::ConditionRecord {
                units: us,
                readings,
                min_centi,
                max_centi,
                excursion,
            } => {
                fields.push(units(us));
                fields.push(Value::Array(
                    readings
                        .iter()
                        .map(|r| Value::Array(vec![int(r.at.0), int(i64::from(r.temp_centi))]))
                        .collect(),
                ));
                fields.push(int(i64::from(*min_centi)));
                fields.push(int(i64::from(*max_centi)));
                fields.push(Value::Bool(*excursion));
            }
            Body::ExcursionDisposition {
                condition,
                accepted,
                reason,
            } => {
                fields.push(bytes(&condition.0));
                fields.push(Value::Bool(*accepted));
                fields.push(text(reason));
            }
            Body::QcHold { units: us, reason } | Body::QcReject { units: us, reason } => {
                fields.push(units(us));
                fields.push(text(reason));
            }
            Body::QcRelease { units: us } => fields.push(units(us)),
            Body::Destruction {
                unit,
                reason,
                witness,
            } => {
                fields.push(text(unit.as_str()));
                fields.push(text(reason));
                fields.push(match witness {
                    None => Value::Null,
                    Some(w) => Value::Array(vec![text(w.operator.as_str()), text(&w.printed_name)]),
                });
            }
            Body::Reassignment {
                from_coi,
                units: us,
                reason,
                approvals,
            } => {
                fields.push(text(from_coi.as_str()));
                fields.push(new_units(us));
                fields.push(text(reason));
                fields.push(Value::Array(
                    approvals
                        .iter()
                        .map(|a| {
                            Value::Array(vec![
                                text(a.operator.as_str()),
                                text(&a.printed_name),
                                Value::Bool(a.qa),
                            ])
                        })
                        .collect(),
                ));
            }
            Body::Correction { target, reason } => {
                fields.push(bytes(&target.0));
                fields.push(text(reason));
            }
            Body::Note { text: t } => fields.push(text(t)),
            Body::Unknown(u) => return u.value.clone(),
        }
        Value::Array(fields)
    }

    fn decode(value: Value) -> Result<Body, DecodeError> {
        let Value::Array(items) = value else {
            return Err(shape(WHAT, "body must be an array"));
        };
        let kind = match items.first() {
            Some(Value::Integer(i)) => u64::try_from(*i)
                .map_err(|_| shape(WHAT, "body kind must be a non-negative integer"))?,
            _ => return Err(shape(WHAT, "body must start with its kind code")),
        };
        let n_fields = match kind {
            1 => 3,
            2 | 16 => 3,
            3 => 4,
            4 => 2,
            5 => 3,
            6 => 5,
            7 | 8 => 3,
            9 | 10 => 3,
            11 => 6,
            12 => 4,
            13 | 15 => 3,
            14 => 2,
            17 => 4,
            18 => 5,
            19 => 3,
            20 => 2,
            _ => {
                return Ok(Body::Unknown(UnknownBody {
                    kind,
                    value: Value::Array(items),
                }))
            }
        };
        let mut f = Fields::new(WHAT, Value::Array(items), n_fields)?;
        f.u64("body.kind")?;
        let body = match kind {
            1 => Body::Collection {
                units: new_units(&mut f, "collection.units")?,
                dins: f
                    .list("collection.dins", DINS_MAX)?
                    .into_iter()
                    .map(|v| din(item_text(WHAT, "collection.dins", v)?))
                    .collect::<Result<_, _>>()?,
            },
            2 => Body::LabelVerification {
                unit: unit_id(&mut f, "unit")?,
                scanned_coi: coi(&mut f, "scanned_coi")?,
            },
            3 => Body::Pack {
                shipper: shipper_id(&mut f)?,
                units: unit_list(&mut f, "pack.units")?,
                seal: free_text(&mut f, "pack.seal")?,
            },
            4 => Body::Unpack {
                shipper: shipper_id(&mut f)?,
            },
            5 => Body::Dispatch {
                shipper: shipper_id(&mut f)?,
                to: site_id(&mut f, "dispatch.to")?,
            },
            6 => Body::Receipt {
                shipper: shipper_id(&mut f)?,
                from: site_id(&mut f, "receipt.from")?,
                seal_intact: f.bool("receipt.seal_intact")?,
                scanned_coi: coi(&mut f, "scanned_coi")?,
            },
            7 => Body::Store {
                unit: unit_id(&mut f, "unit")?,
                location: free_text(&mut f, "location")?,
            },
            8 => Body::Retrieve {
                unit: unit_id(&mut f, "unit")?,
                location: free_text(&mut f, "location")?,
            },
            9 => Body::ManufacturingStep {
                units: unit_list(&mut f, "manufacturing_step.units")?,
                step: free_text(&mut f, "manufacturing_step.step")?,
            },
            10 => Body::Transformation {
                inputs: unit_list(&mut f, "transformation.inputs")?,
                outputs: new_units(&mut f, "transformation.outputs")?,
            },
            11 => {
                let units = unit_list(&mut f, "condition_record.units")?;
                let readings = f
                    .list("condition_record.readings", READINGS_MAX)?
                    .into_iter()
                    .map(|v| {
                        let mut r = Fields::new(WHAT, v, 2)?;
                        let reading = Reading {
                            at: Timestamp(r.i64("reading.at")?),
                            temp_centi: r.i32("reading.temp")?,
                        };
                        r.end()?;
                        Ok(reading)
                    })
                    .collect::<Result<Vec<_>, DecodeError>>()?;
                let min_centi = f.i32("condition_record.min")?;
                let max_centi = f.i32("condition_record.max")?;
                if min_centi > max_centi {
                    return Err(shape(
                        WHAT,
                        "condition_record.min is above condition_record.max",
                    ));
                }
                Body::ConditionRecord {
                    units,
                    readings,
                    min_centi,
                    max_centi,
                    excursion: f.bool("condition_record.excursion")?,
                }
            }
            12 => Body::ExcursionDisposition {
                condition: EventId(f.array("excursion_disposition.condition")?),
                accepted: f.bool("excursion_disposition.accepted")?,
                reason: free_text(&mut f, "excursion_disposition.reason")?,
            },
            13 => Body::QcHold {
                units: unit_list(&mut f, "qc_hold.units")?,
                reason: free_text(&mut f, "qc_hold.reason")?,
            },
            14 => Body::QcRelease {
                units: unit_list(&mut f, "qc_release.units")?,
            },
            15 => Body::QcReject {
                units: unit_list(&mut f, "qc_reject.units")?,
                reason: free_text(&mut f, "qc_reject.reason")?,
            },
            16 => Body::Administration {
                unit: unit_id(&mut f, "unit")?,
                scanned_coi: coi(&mut f, "scanned_coi")?,
            },
            17 => Body::Destruction {
                unit: unit_id(&mut f, "unit")?,
                reason: free_text(&mut f, "destruction.reason")?,
                witness: match f.optional("destruction.witness")? {
                    None => None,
                    Some(v) => {
                        let mut w = Fields::new(WHAT, v, 2)?;
                        let witness = Witness {
                            operator: operator_id(w.text("witness.operator", 64)?)?,
                            printed_name: w.text("witness.printed_name", TEXT_BYTES_MAX)?,
                        };
                        w.end()?;
                        Some(witness)
                    }
                },
            },
            18 => Body::Reassignment {
                from_coi: coi(&mut f, "reassignment.from_coi")?,
                units: new_units(&mut f, "reassignment.units")?,
                reason: free_text(&mut f, "reassignment.reason")?,
                approvals: f
                    .list("reassignment.approvals", APPROVALS_MAX)?
                    .into_iter()
                    .map(|v| {
                        let mut a = Fields::new(WHAT, v, 3)?;
                        let approval = Approval {
                            operator: operator_id(a.text("approval.operator", 64)?)?,
                            printed_name: a.text("approval.printed_name", TEXT_BYTES_MAX)?,
                            qa: a.bool("approval.qa")?,
                        };
                        a.end()?;
                        Ok(approval)
                    })
                    .collect::<Result<_, DecodeError>>()?,
            },
            19 => Body::Correction {
                target: EventId(f.array("correction.target")?),
                reason: free_text(&mut f, "correction.reason")?,
            },
            20 => Body::Note {
                text: free_text(&mut f, "note.text")?,
            },
            _ => unreachable!("kind {kind} was routed to Unknown above"),
        };
        f.end()?;
        body.check_shape()?;
        Ok(body)
    }

    /// Checks a body built from outside (an API request) against the rules the decoder
    /// enforces: limits on list lengths and text, non-empty unit lists, distinct units,
    /// ordered temperature ranges, and no unknown kind. A body that passes encodes to bytes
    /// that decode again.
    ///
    /// # Errors
    /// [`DecodeError::Shape`] naming the field.
    pub fn validate(&self) -> Result<(), DecodeError> {
        if let Body::Unknown(u) = self {
            return Err(shape(
                WHAT,
                format!("body kind {} cannot be written by this version", u.kind()),
            ));
        }
        // Re-decoding our own encoding applies every limit in one place.
        Body::decode(self.encode()).map(|_| ())
    }

    /// Structural rules every writer must keep (not ledger semantics: those are findings).
    fn check_shape(&self) -> Result<(), DecodeError> {
        fn distinct<'a, T: Ord + 'a>(
            what: &str,
            items: impl Iterator<Item = &'a T>,
        ) -> Result<(), DecodeError> {
            let mut seen = std::collections::BTreeSet::new();
            for item in items {
                if !seen.insert(item) {
                    return Err(shape(WHAT, format!("{what} lists the same unit twice")));
                }
            }
            Ok(())
        }
        fn non_empty<T>(what: &str, items: &[T]) -> Result<(), DecodeError> {
            if items.is_empty() {
                return Err(shape(WHAT, format!("{what} must not be empty")));
            }
            Ok(())
        }
        fn ranges(what: &str, units: &[NewUnit]) -> Result<(), DecodeError> {
            for n in units {
                if n.temp_min_centi > n.temp_max_centi {
                    return Err(shape(
                        WHAT,
                        format!(
                            "{what}: unit {} has its minimum temperature above its maximum",
                            n.unit
                        ),
                    ));
                }
            }
            distinct(what, units.iter().map(|n| &n.unit))
        }
        match self {
            Body::Collection { units, .. } => {
                non_empty("collection.units", units)?;
                ranges("collection.units", units)
            }
            Body::Pack { units, .. } => {
                non_empty("pack.units", units)?;
                distinct("pack.units", units.iter())
            }
            Body::ManufacturingStep { units, .. }
            | Body::QcHold { units, .. }
            | Body::QcRelease { units }
            | Body::QcReject { units, .. }
            | Body::ConditionRecord { units, .. } => {
                non_empty("units", units)?;
                distinct("units", units.iter())
            }
            Body::Transformation { inputs, outputs } => {
                non_empty("transformation.inputs", inputs)?;
                non_empty("transformation.outputs", outputs)?;
                distinct("transformation.inputs", inputs.iter())?;
                ranges("transformation.outputs", outputs)
            }
            Body::Reassignment { units, .. } => {
                non_empty("reassignment.units", units)?;
                ranges("reassignment.units", units)
            }
            _ => Ok(()),
        }
    }
}

fn unit_id(f: &mut Fields, field: &str) -> Result<UnitId, DecodeError> {
    let what = f.what();
    UnitId::parse(&f.text(field, 64)?).map_err(|e| shape(what, e.to_string()))
}

fn shipper_id(f: &mut Fields) -> Result<ShipperId, DecodeError> {
    let what = f.what();
    ShipperId::parse(&f.text("shipper", 64)?).map_err(|e| shape(what, e.to_string()))
}

fn site_id(f: &mut Fields, field: &str) -> Result<SiteId, DecodeError> {
    let what = f.what();
    SiteId::parse(&f.text(field, 64)?).map_err(|e| shape(what, e.to_string()))
}

fn coi(f: &mut Fields, field: &str) -> Result<Coi, DecodeError> {
    let what = f.what();
    let text = f.text(field, 32)?;
    let coi = Coi::parse(&text).map_err(|e| shape(what, e.to_string()))?;
    // Only the canonical form may be signed: a prefix or check character would be a second
    // spelling of the same identifier.
    if coi.as_str() != text {
        return Err(shape(what, format!("{field} must be in canonical form (15 characters, no &/ prefix or check character)")));
    }
    Ok(coi)
}

fn din(text: String) -> Result<Din, DecodeError> {
    let din = Din::parse(&text).map_err(|e| shape(WHAT, e.to_string()))?;
    if din.as_str() != text {
        return Err(shape(
            WHAT,
            "collection.dins must hold 13-character DINs without check character",
        ));
    }
    Ok(din)
}

fn operator_id(text: String) -> Result<OperatorId, DecodeError> {
    OperatorId::parse(&text).map_err(|e| shape(WHAT, e.to_string()))
}

fn free_text(f: &mut Fields, field: &str) -> Result<String, DecodeError> {
    f.text(field, TEXT_BYTES_MAX)
}

fn unit_list(f: &mut Fields, field: &str) -> Result<Vec<UnitId>, DecodeError> {
    f.list(field, UNITS_PER_EVENT_MAX)?
        .into_iter()
        .map(|v| UnitId::parse(&item_text(WHAT, field, v)?).map_err(|e| shape(WHAT, e.to_string())))
        .collect()
}

fn new_units(f: &mut Fields, field: &str) -> Result<Vec<NewUnit>, DecodeError> {
    f.list(field, UNITS_PER_EVENT_MAX)?
        .into_iter()
        .map(|v| {
            let mut n = Fields::new(WHAT, v, 4)?;
            let unit = NewUnit {
                unit: UnitId::parse(&n.text("unit", 64)?)
                    .map_err(|e| shape(WHAT, e.to_string()))?,
                stability_deadline: Timestamp(n.i64("stability_deadline")?),
                temp_min_centi: n.i32("temp_min")?,
                temp_max_centi: n.i32("temp_max")?,
            };
            n.end()?;
            Ok(unit)
        })
        .collect()
}

/// What an append request asks the node to record, apart from what the node adds (feed
/// position, links, time of recording). A retry under the same request id must ask for the
/// same thing; a request id used again for something else is refused, never answered with
/// the first event's receipt (that would silently drop the second scan).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct RequestDigest(pub [u8; 32]);

impl RequestDigest {
    pub fn of(coi: &Coi, occurred_at: Timestamp, signer: &Signer, body: &Body) -> RequestDigest {
        use cbor::{int, text, uint};
        let value = Value::Array(vec![
            text("ledger.v1.request"),
            text(coi.as_str()),
            int(occurred_at.0),
            Value::Array(vec![
                text(signer.operator.as_str()),
                text(&signer.printed_name),
                uint(signer.meaning.code()),
            ]),
            body.encode(),
        ]);
        RequestDigest(crypto::sha256(&cbor::encode(&value)))
    }
}

/// An event before signing: everything in the signed bytes except the signature.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct UnsignedEvent {
    pub network: NetworkId,
    pub author: SiteId,
    pub seq: Seq,
    pub prev: Option<EventId>,
    pub key: PublicKey,
    pub coi: Coi,
    /// Kept sorted and without duplicates by [`UnsignedEvent::to_bytes`].
    pub parents: Vec<EventId>,
    pub occurred_at: Timestamp,
    pub recorded_at: Timestamp,
    pub signer: Signer,
    pub body: Body,
}

impl UnsignedEvent {
    fn encode(&self) -> Value {
        use cbor::{bytes, int, text, uint};
        let mut parents = self.parents.clone();
        parents.sort();
        parents.dedup();
        Value::Array(vec![
            uint(EVENT_FORMAT),
            text(self.network.as_str()),
            text(self.author.as_str()),
            uint(self.seq.0),
            match &self.prev {
                None => Value::Null,
                Some(p) => bytes(&p.0),
            },
            bytes(&self.key.0),
            text(self.coi.as_str()),
            Value::Array(parents.iter().map(|p| bytes(&p.0)).collect()),
            int(self.occurred_at.0),
            int(self.recorded_at.0),
            Value::Array(vec![
                text(self.signer.operator.as_str()),
                text(&self.signer.printed_name),
                uint(self.signer.meaning.code()),
            ]),
            self.body.encode(),
        ])
    }

    /// The canonical unsigned bytes (what the signature covers after the tag).
    pub fn to_bytes(&self) -> Vec<u8> {
        cbor::encode(&self.encode())
    }

    /// Signs the event.
    ///
    /// # Panics
    /// If `key` is not the key named in the event, or the event breaks a structural rule
    /// (seq 0, prev present on seq 1 or absent after it): both are programmer errors in the
    /// writer, and signing them would put a record in the ledger that can never verify.
    pub fn sign(self, key: &SecretKey) -> Event {
        assert_eq!(
            key.public(),
            self.key,
            "signing key differs from the key named in the event"
        );
        assert!(self.seq.0 >= 1, "feed seq starts at 1");
        assert_eq!(
            self.seq.0 == 1,
            self.prev.is_none(),
            "prev must be absent exactly at seq 1 (seq {})",
            self.seq
        );
        let unsigned = self.encode();
        let unsigned_bytes = cbor::encode(&unsigned);
        let signature = key.sign(TAG_EVENT, &unsigned_bytes);
        let signed = cbor::encode(&Value::Array(vec![unsigned, cbor::bytes(&signature.0)]));
        let mut event = Event::from_parts(self, signature, signed);
        // Pair assertion: what we wrote must read back as itself.
        debug_assert_eq!(
            Event::from_bytes(&event.bytes).as_ref().map(|e| e.id),
            Ok(event.id)
        );
        event.unsigned.parents.sort();
        event.unsigned.parents.dedup();
        event
    }
}

impl UnsignedEvent {
    /// Assembles an event from a signature made elsewhere (a hardware signer, or a test
    /// that needs an event whose signature does not match). Nothing is checked: the
    /// verifier judges the result like any event read from outside.
    pub fn with_signature(self, signature: Signature) -> Event {
        let signed = cbor::encode(&Value::Array(vec![
            self.encode(),
            cbor::bytes(&signature.0),
        ]));
        let mut event = Event::from_parts(self, signature, signed);
        event.unsigned.parents.sort();
        event.unsigned.parents.dedup();
        event
    }
}

/// A signed event with its id and the exact bytes it was read from or written as.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Event {
    unsigned: UnsignedEvent,
    signature: Signature,
    id: EventId,
    bytes: Vec<u8>,
}

/// Length of the trailing `0x58 0x40 || signature` in the signed bytes.
const SIGNATURE_TAIL: usize = 2 + 64;

impl Event {
    fn from_parts(unsigned: UnsignedEvent, signature: Signature, bytes: Vec<u8>) -> Event {
        let id = EventId(crypto::sha256(&bytes));
        Event {
            unsigned,
            signature,
            id,
            bytes,
        }
    }

    /// Decodes signed bytes. Checks the shape and canonical form only; whether the
    /// signature verifies, and against which certificate, is the verifier's job.
    ///
    /// # Errors
    /// [`DecodeError`] naming what is wrong.
    pub fn from_bytes(bytes: &[u8]) -> Result<Event, DecodeError> {
        let value = cbor::decode_canonical(WHAT, bytes, EVENT_BYTES_MAX)?;
        let mut outer = Fields::new(WHAT, value, 2)?;
        let mut f = Fields::new(WHAT, outer.next("unsigned")?, 12)?;
        let signature = Signature(outer.array("signature")?);
        outer.end()?;
        let format = f.u64("format")?;
        if format != EVENT_FORMAT {
            return Err(shape(
                WHAT,
                format!(
                    "format {format} is not supported (this build reads format {EVENT_FORMAT})"
                ),
            ));
        }
        let network =
            NetworkId::parse(&f.text("network", 64)?).map_err(|e| shape(WHAT, e.to_string()))?;
        let author = site_id(&mut f, "author")?;
        let seq = Seq(f.u64("seq")?);
        if seq.0 == 0 {
            return Err(shape(WHAT, "seq must be 1 or more"));
        }
        let prev = match f.optional("prev")? {
            None => None,
            Some(v) => Some(EventId(item_array(WHAT, "prev", v)?)),
        };
        if (seq.0 == 1) != prev.is_none() {
            return Err(shape(WHAT, "prev must be null exactly when seq is 1"));
        }
        let key = PublicKey(f.array("key")?);
        let coi = coi(&mut f, "coi")?;
        let parents = f
            .list("parents", PARENTS_MAX)?
            .into_iter()
            .map(|v| item_array(WHAT, "parents", v).map(EventId))
            .collect::<Result<Vec<_>, _>>()?;
        if parents.windows(2).any(|w| w[0] >= w[1]) {
            return Err(shape(WHAT, "parents must be strictly ascending"));
        }
        let occurred_at = Timestamp(f.i64("occurred_at")?);
        let recorded_at = Timestamp(f.i64("recorded_at")?);
        let mut s = Fields::new(WHAT, f.next("signer")?, 3)?;
        let signer = Signer {
            operator: operator_id(s.text("signer.operator", 64)?)?,
            printed_name: s.text("signer.printed_name", TEXT_BYTES_MAX)?,
            meaning: Meaning::from_code(s.u64("signer.meaning")?).ok_or_else(|| {
                shape(
                    WHAT,
                    "signer.meaning must be 1 (performed), 2 (verified) or 3 (approved)",
                )
            })?,
        };
        s.end()?;
        let body = Body::decode(f.next("body")?)?;
        f.end()?;
        let unsigned = UnsignedEvent {
            network,
            author,
            seq,
            prev,
            key,
            coi,
            parents,
            occurred_at,
            recorded_at,
            signer,
            body,
        };
        Ok(Event::from_parts(unsigned, signature, bytes.to_vec()))
    }

    pub fn id(&self) -> EventId {
        self.id
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes the signature covers (after the tag): a slice of the signed bytes.
    pub fn unsigned_bytes(&self) -> &[u8] {
        &self.bytes[1..self.bytes.len() - SIGNATURE_TAIL]
    }

    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    pub fn unsigned(&self) -> &UnsignedEvent {
        &self.unsigned
    }

    pub fn network(&self) -> &NetworkId {
        &self.unsigned.network
    }
    pub fn author(&self) -> &SiteId {
        &self.unsigned.author
    }
    pub fn seq(&self) -> Seq {
        self.unsigned.seq
    }
    pub fn prev(&self) -> Option<EventId> {
        self.unsigned.prev
    }
    pub fn key(&self) -> &PublicKey {
        &self.unsigned.key
    }
    pub fn coi(&self) -> &Coi {
        &self.unsigned.coi
    }
    pub fn parents(&self) -> &[EventId] {
        &self.unsigned.parents
    }
    pub fn occurred_at(&self) -> Timestamp {
        self.unsigned.occurred_at
    }
    pub fn recorded_at(&self) -> Timestamp {
        self.unsigned.recorded_at
    }
    pub fn signer(&self) -> &Signer {
        &self.unsigned.signer
    }
    pub fn body(&self) -> &Body {
        &self.unsigned.body
    }

    /// The digest of the request this event records (see [`RequestDigest`]).
    pub fn request_digest(&self) -> RequestDigest {
        RequestDigest::of(self.coi(), self.occurred_at(), self.signer(), self.body())
    }

    /// Strict Ed25519 check of the signature against `key`.
    pub fn signature_valid(&self, key: &ed25519_dalek::VerifyingKey) -> bool {
        crypto::verify_with(key, TAG_EVENT, self.unsigned_bytes(), &self.signature)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn free_text_may_not_hold_controls_or_bidi_formatting() {
        assert_eq!(unprintable("K. Kim RN, Zürich, 4 °C, 患者"), None);
        for (text, bad) in [
            ("K. Kim\u{1b}[32mINTACT", '\u{1b}'),
            ("two\nlines", '\n'),
            ("tab\there", '\t'),
            ("nul\0", '\0'),
            ("bell\u{7}", '\u{7}'),
            ("c1\u{9b}31m", '\u{9b}'),
            ("rtl\u{202e}gnp.exe", '\u{202e}'),
            ("isolate\u{2067}x", '\u{2067}'),
            ("mark\u{200f}", '\u{200f}'),
        ] {
            assert_eq!(unprintable(text), Some(bad), "{text:?}");
        }
    }
    use super::*;

    #[test]
    fn a_created_unit_must_expire_after_it_is_created() {
        let unit = |id: &str, deadline: i64| NewUnit {
            unit: UnitId::parse(id).expect("unit id"),
            stability_deadline: Timestamp(deadline),
            temp_min_centi: 200,
            temp_max_centi: 800,
        };
        let collection = |deadline: i64| Body::Collection {
            units: vec![unit("BAG-1", 2_000), unit("BAG-2", deadline)],
            dins: Vec::new(),
        };
        let at = Timestamp(1_000);
        assert_eq!(expired_at_creation(&collection(1_001), at), None);
        let expires_at_scan = collection(1_000);
        let (idx, n) = expired_at_creation(&expires_at_scan, at).expect("equal is expired");
        assert_eq!((idx, n.unit.as_str()), (1, "BAG-2"));
        assert_eq!(
            expired_at_creation(&collection(-5), at).map(|(i, _)| i),
            Some(1)
        );
        let transformation = Body::Transformation {
            inputs: vec![UnitId::parse("BAG-1").expect("unit id")],
            outputs: vec![unit("DP-1", 999)],
        };
        assert_eq!(
            expired_at_creation(&transformation, at).map(|(i, _)| i),
            Some(0)
        );
        // A reassignment moves units that exist: their deadlines are not new.
        let reassignment = Body::Reassignment {
            units: vec![unit("BAG-1", 999)],
            from_coi: Coi::parse("CHA999926ABC123").expect("coi"),
            reason: "re-allocation".into(),
            approvals: Vec::new(),
        };
        assert_eq!(expired_at_creation(&reassignment, at), None);
    }

    fn unsigned(seq: u64, recorded_at: i64) -> UnsignedEvent {
        let key = SecretKey::from_seed(&[7; 32]);
        UnsignedEvent {
            network: NetworkId::parse("net-test").expect("network id"),
            author: SiteId::parse("depot-1").expect("site id"),
            seq: Seq(seq),
            prev: None,
            key: key.public(),
            coi: Coi::parse("CHA999926ABC123").expect("coi"),
            parents: Vec::new(),
            occurred_at: Timestamp(1_700_000_000_000),
            recorded_at: Timestamp(recorded_at),
            signer: Signer {
                operator: OperatorId::parse("op-1").expect("operator"),
                printed_name: "Op One".to_owned(),
                meaning: Meaning::Performed,
            },
            body: Body::Note {
                text: "one".to_owned(),
            },
        }
    }

    #[test]
    fn a_request_digest_covers_what_the_client_sent_and_nothing_the_node_adds() {
        let key = SecretKey::from_seed(&[7; 32]);
        let base = unsigned(1, 1_700_000_000_000);
        let digest = base.clone().sign(&key).request_digest();
        assert_eq!(
            digest,
            RequestDigest::of(&base.coi, base.occurred_at, &base.signer, &base.body)
        );
        // What the node adds may differ between the first event and a retry's view of it.
        let mut placed = unsigned(9, 1_800_000_000_000);
        placed.prev = Some(EventId([3; 32]));
        placed.parents = vec![EventId([4; 32])];
        assert_eq!(placed.sign(&key).request_digest(), digest);
        // What the client sent may not.
        let mut other = base.clone();
        other.coi = Coi::parse("CHA999926ABC124").expect("coi");
        let mut later = base.clone();
        later.occurred_at = Timestamp(1_700_000_000_001);
        let mut signer = base.clone();
        signer.signer.meaning = Meaning::Verified;
        let mut body = base.clone();
        body.body = Body::Note {
            text: "two".to_owned(),
        };
        for changed in [other, later, signer, body] {
            assert_ne!(
                RequestDigest::of(
                    &changed.coi,
                    changed.occurred_at,
                    &changed.signer,
                    &changed.body
                ),
                digest,
                "{changed:?}"
            );
        }
    }
}
