//! `ledger epcis` against the GS1 EPCIS 2.0 JSON schema (`fixtures/epcis/`, draft-07).
//!
//! Every valid fixture journey is built into a bundle and rendered; the document must pass
//! the schema with `format` assertions on (so extension keys must be URIs and identifiers
//! well-formed URIs, not just strings). The same validator must accept GS1's own examples
//! and reject a document with a wrong field, so a pass means something. One journey's
//! mapping is then checked field by field, and the binary's output, determinism and exit
//! codes are checked as a user sees them.

use ledger_client::cli::epcis;
use ledger_core::{Body, Bundle, EventId};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The EPCIS 2.0 schema as draft-07 (its `$schema`), asserting `format`.
fn validator(formats: bool) -> jsonschema::Validator {
    let schema = read_json(&fixtures_dir().join("epcis/EPCIS-JSON-Schema.json"));
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    jsonschema::draft7::options()
        .should_validate_formats(formats)
        .build(&schema)
        .expect("the EPCIS schema compiles")
}

fn schema_errors(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

fn built(journey: &str) -> fixtures::Built {
    let path = fixtures_dir().join("journeys").join(journey);
    let text = std::fs::read_to_string(&path).expect("journey");
    fixtures::build(&text).unwrap_or_else(|e| panic!("{journey}: {e}"))
}

fn bundle(built: &fixtures::Built) -> Bundle {
    Bundle::from_bytes(&built.bundle).expect("a built journey is a bundle")
}

fn events(doc: &Value) -> &Vec<Value> {
    doc["epcisBody"]["eventList"]
        .as_array()
        .expect("epcisBody.eventList")
}

#[test]
fn gs1_examples_validate_and_a_wrong_document_does_not() {
    let lenient = validator(false);
    let strict = validator(true);
    let mut n_examples = 0;
    for entry in std::fs::read_dir(fixtures_dir().join("epcis/examples")).expect("examples") {
        let path = entry.expect("entry").path();
        let doc = read_json(&path);
        assert_eq!(
            schema_errors(&lenient, &doc),
            Vec::<String>::new(),
            "{}",
            path.display()
        );
        // GS1's examples name the document with a JSON-LD blank node, which is not an RFC
        // 3986 URI: that one value is all the strict validator objects to.
        assert_eq!(
            schema_errors(&strict, &doc),
            vec![r#"/id: "_:document1" is not a "uri""#],
            "{}",
            path.display()
        );
        n_examples += 1;
    }
    assert_eq!(n_examples, 4);

    let good = epcis::document(&bundle(&built("valid/standard.toml")));
    assert_eq!(schema_errors(&strict, &good), Vec::<String>::new());
    for (pointer, value) in [
        (
            "/epcisBody/eventList/0/bizStep",
            json!("urn:epcglobal:cbv:bizstep:commissioning"),
        ),
        ("/epcisBody/eventList/0/action", json!("CREATE")),
        ("/epcisBody/eventList/0/eventTimeZoneOffset", json!("Z")),
        ("/epcisBody/eventList/0/epcList", json!(["not a uri"])),
        (
            "/epcisBody/eventList/0/signer",
            json!("an extension key without a prefix"),
        ),
        ("/schemaVersion", json!("two")),
    ] {
        let mut bad = good.clone();
        match bad.pointer_mut(pointer) {
            Some(slot) => *slot = value,
            None => {
                let (parent, key) = pointer.rsplit_once('/').expect("pointer");
                bad.pointer_mut(parent).expect("parent")[key] = value;
            }
        }
        assert!(!strict.is_valid(&bad), "{pointer} should be refused");
    }
}

#[test]
fn every_valid_journey_renders_to_a_schema_valid_document() {
    let strict = validator(true);
    let mut n_journeys = 0;
    for entry in std::fs::read_dir(fixtures_dir().join("journeys/valid")).expect("journeys") {
        let path = entry.expect("entry").path();
        let name = format!(
            "valid/{}",
            path.file_name().expect("name").to_string_lossy()
        );
        let bundle = bundle(&built(&name));
        let doc = epcis::document(&bundle);
        assert_eq!(schema_errors(&strict, &doc), Vec::<String>::new(), "{name}");
        assert_eq!(events(&doc).len(), bundle.events.len(), "{name}");
        let n_corrections = bundle
            .events
            .iter()
            .filter(|e| matches!(e.body(), Body::Correction { .. }))
            .count();
        let n_declarations = events(&doc)
            .iter()
            .filter(|e| e.get("errorDeclaration").is_some())
            .count();
        assert_eq!(n_declarations, n_corrections, "{name}");
        n_journeys += 1;
    }
    assert_eq!(n_journeys, 12);
}

/// The EPCIS event rendered for a journey step (its own, not an error declaration).
fn rendered<'a>(doc: &'a Value, built: &fixtures::Built, step: &str) -> &'a Value {
    let id = step_id(built, step);
    let uri = epcis::event_uri(id);
    let found: Vec<&Value> = events(doc)
        .iter()
        .filter(|e| e["eventID"] == uri.as_str() && e.get("errorDeclaration").is_none())
        .collect();
    assert_eq!(found.len(), 1, "step {step}");
    found[0]
}

fn step_id(built: &fixtures::Built, step: &str) -> EventId {
    let ids: Vec<EventId> = built
        .step_of
        .iter()
        .filter(|(_, s)| s.as_str() == step)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(ids.len(), 1, "step {step}");
    ids[0]
}

#[test]
fn correction_journey_maps_each_kind_as_documented() {
    let built = built("valid/correction-and-notes.toml");
    let bundle = bundle(&built);
    let doc = epcis::document(&bundle);
    assert_eq!(events(&doc).len(), 22);
    assert_eq!(events(&doc).len(), bundle.events.len());
    assert_eq!(doc["type"], "EPCISDocument");
    assert_eq!(doc["schemaVersion"], "2.0");
    assert_eq!(doc["creationDate"], bundle.exported_at.to_string());
    assert_eq!(doc["@context"][0], epcis::EPCIS_CONTEXT);
    assert_eq!(doc["@context"][1]["ledger"], epcis::LEDGER_NAMESPACE);

    let collect = rendered(&doc, &built, "collect");
    assert_eq!(collect["type"], "ObjectEvent");
    assert_eq!(collect["action"], "ADD");
    assert_eq!(collect["bizStep"], "commissioning");
    assert_eq!(collect["disposition"], "active");
    assert_eq!(collect["epcList"], json!(["urn:ledger:unit:APH-1"]));
    assert_eq!(collect["eventTime"], "2026-11-16T08:00:00Z");
    assert_eq!(collect["eventTimeZoneOffset"], "+00:00");
    assert_eq!(collect["readPoint"]["id"], "urn:ledger:site:clinic-a");
    assert_eq!(collect["ledger:coi"], "CHM327926CN0418");
    assert_eq!(collect["ledger:seq"], 1);
    assert_eq!(
        collect["ledger:signer"],
        json!({ "ledger:operator": "nurse.eriksen", "ledger:printedName": "T. Eriksen RN", "ledger:meaning": "performed" })
    );
    assert_eq!(
        collect["ilmd"],
        json!({
            "ledger:units": [{
                "ledger:unit": "urn:ledger:unit:APH-1",
                "ledger:stabilityDeadline": "2026-11-19T08:00:00Z",
                "ledger:temperatureMinCelsius": 2.0,
                "ledger:temperatureMaxCelsius": 8.0,
            }],
            "ledger:dins": ["M327926004181"],
        })
    );

    let pack = rendered(&doc, &built, "pack");
    assert_eq!(pack["type"], "AggregationEvent");
    assert_eq!(pack["action"], "ADD");
    assert_eq!(pack["bizStep"], "packing");
    assert_eq!(pack["parentID"], "urn:ledger:shipper:SHP-3279");
    assert_eq!(pack["childEPCs"], json!(["urn:ledger:unit:APH-1"]));

    let dispatch = rendered(&doc, &built, "dispatch");
    assert_eq!(dispatch["bizStep"], "shipping");
    assert_eq!(dispatch["disposition"], "in_transit");
    assert_eq!(
        dispatch["destinationList"],
        json!([{ "type": "possessing_party", "destination": "urn:ledger:site:mfg-1" }])
    );
    assert!(dispatch.get("bizLocation").is_none());

    let log = rendered(&doc, &built, "transit-log");
    assert_eq!(log["bizStep"], "sensor_reporting");
    let reports = &log["sensorElementList"][0]["sensorReport"];
    assert_eq!(
        reports[0],
        json!({ "type": "gs1:Temperature", "uom": "CEL", "minValue": 4.2, "maxValue": 5.3 })
    );
    let readings: Vec<(&Value, &Value)> = reports
        .as_array()
        .expect("reports")
        .iter()
        .skip(1)
        .map(|r| (&r["time"], &r["value"]))
        .collect();
    assert_eq!(
        readings,
        vec![
            (&json!("2026-11-16T10:00:00Z"), &json!(4.2)),
            (&json!("2026-11-16T18:00:00Z"), &json!(4.8)),
            (&json!("2026-11-17T02:00:00Z"), &json!(5.3)),
        ]
    );

    let transduce = rendered(&doc, &built, "transduce");
    assert_eq!(transduce["type"], "TransformationEvent");
    assert_eq!(transduce["bizStep"], "commissioning");
    assert_eq!(transduce["inputEPCList"], json!(["urn:ledger:unit:APH-1"]));
    assert_eq!(transduce["outputEPCList"], json!(["urn:ledger:unit:DP-1"]));

    // CBV 2.0 has no step for taking a unit out of storage.
    let retrieve = rendered(&doc, &built, "retrieve");
    assert_eq!(retrieve["bizStep"], "urn:ledger:bizstep:retrieving");

    let release = rendered(&doc, &built, "release");
    assert_eq!(release["bizStep"], "inspecting");
    assert_eq!(release["disposition"], "conformant");
    assert_eq!(rendered(&doc, &built, "infuse")["disposition"], "dispensed");

    // The original stays as signed; the correction is a copy of it with an error
    // declaration whose corrective event is the correction.
    let original = rendered(&doc, &built, "cryostore");
    assert_eq!(original["ledger:location"], "LN2-DEWAR-6 rack 3");
    let target_uri = epcis::event_uri(step_id(&built, "cryostore"));
    let correction_uri = epcis::event_uri(step_id(&built, "correct-location"));
    let declarations: Vec<&Value> = events(&doc)
        .iter()
        .filter(|e| e.get("errorDeclaration").is_some())
        .collect();
    assert_eq!(declarations.len(), 1);
    let declared = declarations[0];
    assert_eq!(declared["eventID"], target_uri.as_str());
    assert_eq!(declared["eventTime"], original["eventTime"]);
    assert_eq!(declared["epcList"], original["epcList"]);
    assert_eq!(declared["recordTime"], "2026-11-25T10:00:00Z");
    let declaration = &declared["errorDeclaration"];
    assert_eq!(declaration["declarationTime"], "2026-11-25T10:00:00Z");
    assert_eq!(declaration["reason"], "incorrect_data");
    assert_eq!(declaration["correctiveEventIDs"], json!([correction_uri]));
    assert!(declaration["ledger:reason"]
        .as_str()
        .expect("reason")
        .starts_with("Storage location mis-keyed"));
    assert_eq!(
        declaration["ledger:signer"]["ledger:operator"],
        "prod.schultz"
    );
    let position = |uri: &str, declared: bool| {
        events(&doc)
            .iter()
            .position(|e| e["eventID"] == uri && e.get("errorDeclaration").is_some() == declared)
            .expect("position")
    };
    assert!(position(&target_uri, false) < position(&target_uri, true));
}

/// The condition records of a journey's document, with their summary sensor report.
fn condition_summaries(doc: &Value) -> Vec<(&Value, &Value)> {
    events(doc)
        .iter()
        .filter(|e| e["ledger:kind"] == "condition_record")
        .map(|e| (e, &e["sensorElementList"][0]["sensorReport"][0]))
        .collect()
}

#[test]
fn an_excursion_the_record_declares_is_an_alarm_and_a_disposition_names_its_units() {
    // The alarm is what the record declares, not the renderer's judgement of the readings:
    // this journey's readings leave the range but the record declares no excursion.
    let doc = epcis::document(&bundle(&built("valid/excursion-disposed.toml")));
    let summaries = condition_summaries(&doc);
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0].0["ledger:excursion"], false);
    assert_eq!(summaries[0].1["maxValue"], 9.4);
    assert!(summaries[0].1.get("exception").is_none());
    let dispositions: Vec<&Value> = events(&doc)
        .iter()
        .filter(|e| e["ledger:kind"] == "excursion_disposition")
        .collect();
    assert_eq!(dispositions.len(), 1);
    let d = dispositions[0];
    assert_eq!(d["ledger:condition"], summaries[0].0["eventID"]);
    assert_eq!(d["epcList"], json!(["urn:ledger:unit:APH-1"]));
    assert_eq!(d["disposition"], "conformant");

    // Rendering does not judge the chain: a broken journey renders too.
    let flagged = built("broken/excursion-flagged-undisposed-dispatch.toml");
    let doc = epcis::document(&bundle(&flagged));
    assert_eq!(schema_errors(&validator(true), &doc), Vec::<String>::new());
    let alarms: Vec<&Value> = condition_summaries(&doc)
        .into_iter()
        .filter(|(e, _)| e["ledger:excursion"] == true)
        .map(|(_, summary)| &summary["exception"])
        .collect();
    assert_eq!(alarms, vec![&json!("ALARM_CONDITION")]);
}

#[test]
fn the_rendering_ignores_bundle_order_and_duplicates() {
    let built = built("valid/split-and-pool.toml");
    let mut bundle = bundle(&built);
    let doc = epcis::document(&bundle);
    bundle.events.reverse();
    let again = bundle.events[0].clone();
    bundle.events.push(again);
    assert_eq!(epcis::document(&bundle), doc);
}

fn ledger(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(args)
        .output()
        .expect("run ledger")
}

#[track_caller]
fn check_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_binary_writes_the_same_document_every_time_and_refuses_what_is_not_a_bundle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name).to_str().expect("utf8").to_owned();
    let journey = fixtures_dir().join("journeys/valid/standard.toml");
    let journey = journey.to_str().expect("utf8");
    check_exit(
        &ledger(&["fixture", "build", journey, "--out", &path("std.bundle")]),
        0,
    );
    check_exit(
        &ledger(&["fixture", "anchor", "--out", &path("anchor.pub")]),
        0,
    );

    let stdout = ledger(&["epcis", &path("std.bundle")]);
    check_exit(&stdout, 0);
    let written = ledger(&["epcis", &path("std.bundle"), "--out", &path("a.jsonld")]);
    check_exit(&written, 0);
    assert!(String::from_utf8_lossy(&written.stderr).contains("not verified"));
    let verified = ledger(&[
        "epcis",
        &path("std.bundle"),
        "--anchor",
        &path("anchor.pub"),
        "--out",
        &path("b.jsonld"),
    ]);
    check_exit(&verified, 0);
    let a = std::fs::read(path("a.jsonld")).expect("a");
    assert_eq!(a, stdout.stdout);
    assert_eq!(a, std::fs::read(path("b.jsonld")).expect("b"));
    let bundle_bytes = std::fs::read(path("std.bundle")).expect("bundle");
    let doc = epcis::document(&Bundle::from_bytes(&bundle_bytes).expect("bundle"));
    assert_eq!(serde_json::from_slice::<Value>(&a).expect("json"), doc);

    // Not a bundle: exit 1 like verify-bundle, a message, nothing written, no panic.
    std::fs::write(path("cut.bundle"), &bundle_bytes[..bundle_bytes.len() / 2]).expect("cut");
    for (file, anchor) in [
        (journey.to_owned(), false),
        (path("cut.bundle"), false),
        (path("cut.bundle"), true),
    ] {
        let (none, anchor_path) = (path("none.jsonld"), path("anchor.pub"));
        let mut args = vec!["epcis", &file, "--out", &none];
        if anchor {
            args.extend(["--anchor", &anchor_path]);
        }
        let out = ledger(&args);
        check_exit(&out, 1);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("no EPCIS document written"),
            "{file}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{file}: {stderr}");
        assert!(!dir.path().join("none.jsonld").exists(), "{file}");
    }

    // A chain the anchor finds broken is not rendered when verification was asked for.
    let broken = fixtures_dir().join("journeys/broken/seal-broken.toml");
    check_exit(
        &ledger(&[
            "fixture",
            "build",
            broken.to_str().expect("utf8"),
            "--out",
            &path("seal.bundle"),
        ]),
        0,
    );
    let out = ledger(&[
        "epcis",
        &path("seal.bundle"),
        "--anchor",
        &path("anchor.pub"),
        "--out",
        &path("none.jsonld"),
    ]);
    check_exit(&out, 1);
    assert!(!dir.path().join("none.jsonld").exists());
    check_exit(
        &ledger(&["epcis", &path("seal.bundle"), "--out", &path("seal.jsonld")]),
        0,
    );
    let seal = read_json(&dir.path().join("seal.jsonld"));
    let receipts: Vec<&Value> = events(&seal)
        .iter()
        .filter(|e| e["ledger:sealIntact"] == false)
        .collect();
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0]["disposition"], "non_conformant");

    check_exit(&ledger(&["epcis", &path("missing.bundle")]), 3);
    check_exit(&ledger(&["epcis"]), 2);
}
