//! `ledger append STEP.toml`: one custody step, written like a journey's `[[step]]` but with
//! top-level keys, turned into an `AppendRequest`.
//!
//! ```toml
//! coi = "CHA999926ABC123"
//! site = "clinic-a"
//! kind = "pack"
//! at = "2026-03-02T09:00:00Z"      # RFC 3339 UTC; offsets in the body count from here
//! operator = "nurse.kim"           # required: the Part 11 signature manifestation
//! name = "K. Kim RN"               # required
//! shipper = "SHP-1"
//! units = ["BAG-1"]
//! seal = "SEAL-1"
//! # request_id = "..."             # optional; default: derived from the step's content
//! ```
//!
//! The step-to-body conversion is the journey builder's ([`fixtures::build::step_body`]) and
//! the body-to-wire one is proto's ([`proto::convert::body_to_wire`]); this module adds only
//! what differs for a live node: `condition` and `target` are event ids in hex (there are no
//! step names), the node decides feed position, parents, key and recorded time (so those
//! fixture keys are refused), and the finished request passes the same wire check the node
//! makes ([`proto::convert::AppendDraft`]) before anything is sent.
//!
//! The default request id is a hash of the request's content, so running the same file
//! again (after a timeout, say) is answered with the original receipt, never a second event.

use crate::client::derive_request_id;
use fixtures::build::{step_body, step_signer};
use fixtures::journey::StepToml;
use fixtures::JourneyError;
use ledger_core::{Coi, EventId, Timestamp};
use proto::convert::{body_to_wire, meaning_to_wire, timestamp_to_wire, AppendDraft, ConvertError};
use proto::v1 as pb;

/// Why a step file cannot become an append.
#[derive(Debug, thiserror::Error)]
pub enum StepFileError {
    #[error("not valid TOML for a step: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("'{key}' is required: {hint}")]
    Missing {
        key: &'static str,
        hint: &'static str,
    },
    #[error("'{key}' cannot be set in a step file: {why}")]
    NodeDecides {
        key: &'static str,
        why: &'static str,
    },
    #[error("'{key}': {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("{0}")]
    Step(#[from] JourneyError),
    /// The request fails the check the node would make.
    #[error("{0}")]
    Request(#[from] ConvertError),
}

/// A parsed step file.
#[derive(Debug, Clone)]
pub struct StepFile {
    pub request_id: Option<String>,
    pub coi: Coi,
    pub at: Timestamp,
    pub step: StepToml,
}

/// Parses a step file. `default_id` names the step in messages when the file has no `id`
/// (the CLI passes the file name).
///
/// # Errors
/// [`StepFileError`] naming the key at fault.
pub fn parse_step_file(text: &str, default_id: &str) -> Result<StepFile, StepFileError> {
    let mut table: toml::Table = text.parse()?;
    let request_id = match table.remove("request_id") {
        None => None,
        Some(toml::Value::String(s)) => Some(s),
        Some(_) => {
            return Err(StepFileError::Invalid {
                key: "request_id",
                reason: "must be a string".into(),
            })
        }
    };
    if !table.contains_key("id") {
        table.insert("id".into(), toml::Value::String(default_id.to_owned()));
    }
    let step: StepToml = toml::Value::Table(table).try_into()?;
    if let Some(d) = node_decided(&step).into_iter().find(|d| d.set) {
        return Err(StepFileError::NodeDecides {
            key: d.key,
            why: d.why,
        });
    }
    let coi_text = step.coi.as_deref().ok_or(StepFileError::Missing {
        key: "coi",
        hint: "the patient's chain-of-identity identifier",
    })?;
    let coi = Coi::parse(coi_text).map_err(|e| StepFileError::Invalid {
        key: "coi",
        reason: e.to_string(),
    })?;
    let at = Timestamp::parse_rfc3339(&step.at).ok_or_else(|| StepFileError::Invalid {
        key: "at",
        reason: format!(
            "'{}' is not an RFC 3339 UTC time like 2026-03-02T08:00:00Z (offsets like +2h \
             exist only in journeys, which have a start)",
            step.at
        ),
    })?;
    if step.operator.is_none() {
        return Err(StepFileError::Missing {
            key: "operator",
            hint: "the signer's user id at the site",
        });
    }
    if step.name.is_none() {
        return Err(StepFileError::Missing {
            key: "name",
            hint: "the signer's printed name (21 CFR 11.50)",
        });
    }
    for (key, value) in [("condition", &step.condition), ("target", &step.target)] {
        if let Some(text) = value {
            EventId::from_hex(text).map_err(|e| StepFileError::Invalid {
                key,
                reason: format!(
                    "'{text}' is not an event id ({e}); name the earlier event by the 64 hex \
                     digits of its receipt"
                ),
            })?;
        }
    }
    Ok(StepFile {
        request_id,
        coi,
        at,
        step,
    })
}

/// The append request for a step file, checked as the node will check it.
///
/// # Errors
/// [`StepFileError::Step`] for a body the journey builder refuses,
/// [`StepFileError::Request`] for a request the node would refuse as malformed.
pub fn append_request(file: &StepFile) -> Result<pb::AppendRequest, StepFileError> {
    let signer = step_signer(&file.step)?;
    // References were checked to be hex in `parse_step_file`.
    let body = step_body(&file.step, file.at, &file.coi, &|text| {
        EventId::from_hex(text).ok()
    })?;
    let mut req = pb::AppendRequest {
        request_id: String::new(),
        site_id: file.step.site.clone(),
        coi: file.coi.to_string(),
        occurred_time: Some(timestamp_to_wire(file.at)),
        signer: Some(pb::Signer {
            operator_id: signer.operator.to_string(),
            printed_name: signer.printed_name,
            meaning: meaning_to_wire(signer.meaning) as i32,
        }),
        body: Some(body_to_wire(&body)),
    };
    req.request_id = match &file.request_id {
        Some(id) => id.clone(),
        None => content_request_id(&req),
    };
    AppendDraft::try_from(&req)?;
    Ok(req)
}

/// `append-` and a hash of the request without its id. Protobuf encoding of these messages
/// is deterministic (no maps, fields in number order), so the same step gives the same id.
fn content_request_id(req: &pb::AppendRequest) -> String {
    let bytes = prost::Message::encode_to_vec(req);
    derive_request_id("append", &[&bytes])
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{expect, Expect};

    #[track_caller]
    fn check(text: &str, expect: Expect) {
        let out = match parse_step_file(text, "step.toml").and_then(|f| append_request(&f)) {
            Ok(req) => format!("{req:#?}"),
            Err(e) => format!("error: {e}"),
        };
        expect.assert_eq(&out);
    }

    const HEAD: &str = r#"
coi = "CHA999926ABC123"
site = "clinic-a"
at = "2026-03-02T09:00:00Z"
operator = "nurse.kim"
name = "K. Kim RN"
"#;

    #[test]
    fn a_pack_step_becomes_a_request() {
        check(
            &format!("{HEAD}kind = \"pack\"\nshipper = \"SHP-1\"\nunits = [\"BAG-1\"]\nseal = \"SEAL-1\"\n"),
            expect![[r#"
                AppendRequest {
                    request_id: "append-feb255ee2d13f4c0558df9a70da9a0979073bd18",
                    site_id: "clinic-a",
                    coi: "CHA999926ABC123",
                    occurred_time: Some(
                        Timestamp {
                            seconds: 1772442000,
                            nanos: 0,
                        },
                    ),
                    signer: Some(
                        Signer {
                            operator_id: "nurse.kim",
                            printed_name: "K. Kim RN",
                            meaning: Performed,
                        },
                    ),
                    body: Some(
                        EventBody {
                            kind: Some(
                                Pack(
                                    Pack {
                                        shipper_id: "SHP-1",
                                        unit_ids: [
                                            "BAG-1",
                                        ],
                                        seal: "SEAL-1",
                                    },
                                ),
                            ),
                        },
                    ),
                }"#]],
        );
    }

    #[test]
    fn offsets_in_the_body_count_from_at() {
        check(
            &format!(
                "{HEAD}kind = \"collection\"\nrequest_id = \"scan-77\"\ncreates = [{{ unit = \"BAG-1\", deadline = \"+72h\", temp = [2.0, 8.0] }}]\n"
            ),
            expect![[r#"
                AppendRequest {
                    request_id: "scan-77",
                    site_id: "clinic-a",
                    coi: "CHA999926ABC123",
                    occurred_time: Some(
                        Timestamp {
                            seconds: 1772442000,
                            nanos: 0,
                        },
                    ),
                    signer: Some(
                        Signer {
                            operator_id: "nurse.kim",
                            printed_name: "K. Kim RN",
                            meaning: Performed,
                        },
                    ),
                    body: Some(
                        EventBody {
                            kind: Some(
                                Collection(
                                    Collection {
                                        units: [
                                            NewUnit {
                                                unit_id: "BAG-1",
                                                stability_deadline: Some(
                                                    Timestamp {
                                                        seconds: 1772701200,
                                                        nanos: 0,
                                                    },
                                                ),
                                                temp_min_centi_celsius: 200,
                                                temp_max_centi_celsius: 800,
                                            },
                                        ],
                                        dins: [],
                                    },
                                ),
                            ),
                        },
                    ),
                }"#]],
        );
    }

    #[test]
    fn references_are_event_ids_in_hex() {
        let id = "ab".repeat(32);
        check(
            &format!("{HEAD}kind = \"correction\"\ntarget = \"{id}\"\nreason = \"mis-keyed\"\n"),
            expect![[r#"
                AppendRequest {
                    request_id: "append-aed78a9240307bf0213648f8c2b4a89f2727c933",
                    site_id: "clinic-a",
                    coi: "CHA999926ABC123",
                    occurred_time: Some(
                        Timestamp {
                            seconds: 1772442000,
                            nanos: 0,
                        },
                    ),
                    signer: Some(
                        Signer {
                            operator_id: "nurse.kim",
                            printed_name: "K. Kim RN",
                            meaning: Performed,
                        },
                    ),
                    body: Some(
                        EventBody {
                            kind: Some(
                                Correction(
                                    Correction {
                                        target_event_id: "abababababababababababababababababababababababababababababababab",
                                        reason: "mis-keyed",
                                    },
                                ),
                            ),
                        },
                    ),
                }"#]],
        );
        check(
            &format!("{HEAD}kind = \"correction\"\ntarget = \"cryostore\"\nreason = \"x\"\n"),
            expect!["error: 'target': 'cryostore' is not an event id (event id 'cryostore': must be 64 hex digits); name the earlier event by the 64 hex digits of its receipt"],
        );
    }

    #[test]
    fn refusals_name_the_key() {
        check(
            &format!("{HEAD}kind = \"note\"\ntext = \"x\"\nseq = 4\n"),
            expect![
                "error: 'seq' cannot be set in a step file: the node assigns the feed position"
            ],
        );
        check(
            &(HEAD.replace("coi = \"CHA999926ABC123\"\n", "") + "kind = \"note\"\ntext = \"x\"\n"),
            expect!["error: 'coi' is required: the patient's chain-of-identity identifier"],
        );
        check(
            &(HEAD.replace("2026-03-02T09:00:00Z", "+2h") + "kind = \"note\"\ntext = \"x\"\n"),
            expect!["error: 'at': '+2h' is not an RFC 3339 UTC time like 2026-03-02T08:00:00Z (offsets like +2h exist only in journeys, which have a start)"],
        );
        check(
            &(HEAD.replace("name = \"K. Kim RN\"\n", "") + "kind = \"note\"\ntext = \"x\"\n"),
            expect!["error: 'name' is required: the signer's printed name (21 CFR 11.50)"],
        );
        check(
            &format!("{HEAD}kind = \"pack\"\nshipper = \"SHP-1\"\n"),
            expect!["error: step 'step.toml': field 'units' is required for kind 'pack'"],
        );
        check(
            &format!("{HEAD}kind = \"note\"\ntxt = \"x\"\n"),
            expect![[r#"
            error: not valid TOML for a step: unknown field `txt`, expected one of `id`, `site`, `kind`, `at`, `recorded`, `operator`, `name`, `meaning`, `parents`, `key`, `seq`, `prev`, `network`, `coi`, `creates`, `dins`, `unit`, `units`, `inputs`, `shipper`, `seal`, `seal_intact`, `to`, `from`, `scanned_coi`, `location`, `process`, `readings`, `min`, `max`, `excursion`, `condition`, `accepted`, `reason`, `witness`, `from_coi`, `approvals`, `target`, `text`, `code`
        "#]],
        );
        check(
            &format!("{HEAD}kind = \"unknown\"\ncode = 40\ntext = \"x\"\n"),
            expect!["error: body.unknown: cannot be appended: it only describes stored events of a newer kind"],
        );
        check(
            &format!("{HEAD}kind = \"note\"\ntext = \"x\"\nrequest_id = \"has space\"\n"),
            expect!["error: request_id: must be 1 to 64 characters of A-Z a-z 0-9 - _ . :"],
        );
    }

    #[test]
    fn the_default_request_id_follows_the_content() {
        let text = format!("{HEAD}kind = \"note\"\ntext = \"x\"\n");
        let id = |t: &str| {
            append_request(&parse_step_file(t, "a.toml").unwrap())
                .unwrap()
                .request_id
        };
        assert_eq!(id(&text), id(&text));
        assert_ne!(id(&text), id(&text.replace("\"x\"", "\"y\"")));
        assert!(id(&text).starts_with("append-"));
    }
}

/// A key of a journey step that a node decides for itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NodeDecided {
    pub key: &'static str,
    /// Whether the step sets it.
    pub set: bool,
    pub why: &'static str,
    /// Whether a replay may drop it (the node's own value serves as well) rather than refuse
    /// the journey (the step forges a feed position or a key).
    pub droppable: bool,
}

/// The keys only a fixture builder can honour, for `append` (refuses them all) and `replay`
/// (drops the droppable ones with a note, refuses the rest).
pub(crate) fn node_decided(step: &StepToml) -> [NodeDecided; 6] {
    let d = |key, set, why, droppable| NodeDecided {
        key,
        set,
        why,
        droppable,
    };
    [
        d(
            "recorded",
            step.recorded.is_some(),
            "the node records its own time",
            true,
        ),
        d(
            "parents",
            step.parents.is_some(),
            "the node links the event to the chain's heads",
            true,
        ),
        d(
            "key",
            step.key.is_some(),
            "the node signs with the site's current key",
            false,
        ),
        d(
            "seq",
            step.seq.is_some(),
            "the node assigns the feed position",
            false,
        ),
        d(
            "prev",
            step.prev.is_some(),
            "the node links the site's previous event",
            false,
        ),
        d(
            "network",
            step.network.is_some(),
            "a node belongs to one network",
            false,
        ),
    ]
}
