//! Property tests of the decoders and the verifier's tamper evidence.
//!
//! - Random events round-trip byte-exactly through encode/decode.
//! - Any single-byte change to a signed event, or to a signed bundle, is detected: the
//!   bytes no longer decode, or verification reports a finding.
//! - Random bytes never panic any decoder.
//!
//! Case counts keep the suite fast with optimised dependencies (see the workspace
//! profile); PROPTEST_CASES overrides them for a longer run.

use ledger_core::bundle::{verify_bundle, Bundle, BundleDraft, BundleOptions};
use ledger_core::{
    verify, Body, Certificate, CertificateDraft, Checkpoint, Coi, Event, EventId, Meaning,
    NetworkId, NewUnit, OperatorId, Options, Reading, Revocation, Role, SecretKey, Seq, ShipperId,
    Signer, SiteId, Timestamp, Trust, UnitId, UnsignedEvent, VerdictKind,
};
use proptest::prelude::*;

fn key() -> SecretKey {
    SecretKey::from_seed(&[42; 32])
}

fn anchor() -> SecretKey {
    SecretKey::from_seed(&[7; 32])
}

fn network() -> NetworkId {
    NetworkId::parse("prop-net").expect("fixed")
}

fn site() -> SiteId {
    SiteId::parse("clinic-a").expect("fixed")
}

fn symbol() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._:-]{1,20}"
}

fn coi() -> impl Strategy<Value = Coi> {
    ("[A-NP-Z1-9][0-9]{4}", "[0-9]{2}", "[A-Z0-9]{6}").prop_map(|(fin, yy, seq)| {
        Coi::parse(&format!("CH{fin}{yy}{seq}")).expect("generated to the format")
    })
}

fn unit() -> impl Strategy<Value = UnitId> {
    symbol().prop_map(|s| UnitId::parse(&s).expect("generated"))
}

fn units() -> impl Strategy<Value = Vec<UnitId>> {
    prop::collection::btree_set(symbol(), 1..5).prop_map(|s| {
        s.into_iter()
            .map(|u| UnitId::parse(&u).expect("generated"))
            .collect()
    })
}

fn new_units() -> impl Strategy<Value = Vec<NewUnit>> {
    prop::collection::btree_map(symbol(), (any::<i64>(), -20_000i32..0, 0i32..20_000), 1..4)
        .prop_map(|m| {
            m.into_iter()
                .map(|(u, (deadline, lo, hi))| NewUnit {
                    unit: UnitId::parse(&u).expect("generated"),
                    stability_deadline: Timestamp(deadline),
                    temp_min_centi: lo,
                    temp_max_centi: hi,
                })
                .collect()
        })
}

fn text() -> impl Strategy<Value = String> {
    ".{0,40}"
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        new_units().prop_map(|units| Body::Collection {
            units,
            dins: vec![]
        }),
        (unit(), coi())
            .prop_map(|(unit, scanned_coi)| Body::LabelVerification { unit, scanned_coi }),
        (symbol(), units(), text()).prop_map(|(s, units, seal)| Body::Pack {
            shipper: ShipperId::parse(&s).expect("generated"),
            units,
            seal
        }),
        (symbol(), symbol()).prop_map(|(s, to)| Body::Dispatch {
            shipper: ShipperId::parse(&s).expect("generated"),
            to: SiteId::parse(&to).expect("generated")
        }),
        (symbol(), symbol(), any::<bool>(), coi()).prop_map(
            |(s, from, seal_intact, scanned_coi)| Body::Receipt {
                shipper: ShipperId::parse(&s).expect("generated"),
                from: SiteId::parse(&from).expect("generated"),
                seal_intact,
                scanned_coi
            }
        ),
        (
            units(),
            prop::collection::vec((any::<i64>(), any::<i32>()), 0..5),
            any::<bool>()
        )
            .prop_map(|(units, rs, excursion)| {
                let readings: Vec<Reading> = rs
                    .into_iter()
                    .map(|(at, t)| Reading {
                        at: Timestamp(at),
                        temp_centi: t,
                    })
                    .collect();
                Body::ConditionRecord {
                    units,
                    readings,
                    min_centi: -100,
                    max_centi: 100,
                    excursion,
                }
            }),
        (units(), new_units())
            .prop_map(|(inputs, outputs)| Body::Transformation { inputs, outputs }),
        (any::<[u8; 32]>(), any::<bool>(), text()).prop_map(|(c, accepted, reason)| {
            Body::ExcursionDisposition {
                condition: EventId(c),
                accepted,
                reason,
            }
        }),
        units().prop_map(|units| Body::QcRelease { units }),
        (unit(), coi()).prop_map(|(unit, scanned_coi)| Body::Administration { unit, scanned_coi }),
        text().prop_map(|text| Body::Note { text }),
    ]
}

fn unsigned_event() -> impl Strategy<Value = UnsignedEvent> {
    (
        1u64..1_000_000,
        any::<[u8; 32]>(),
        coi(),
        prop::collection::vec(any::<[u8; 32]>(), 0..4),
        any::<i64>(),
        any::<i64>(),
        symbol(),
        text(),
        1u8..4,
        body(),
    )
        .prop_map(
            |(seq, prev, coi, parents, occurred, recorded, op, name, meaning, body)| {
                UnsignedEvent {
                    network: network(),
                    author: site(),
                    seq: Seq(seq),
                    prev: if seq == 1 { None } else { Some(EventId(prev)) },
                    key: key().public(),
                    coi,
                    parents: parents.into_iter().map(EventId).collect(),
                    occurred_at: Timestamp(occurred),
                    recorded_at: Timestamp(recorded),
                    signer: Signer {
                        operator: OperatorId::parse(&op).expect("generated"),
                        printed_name: name,
                        meaning: match meaning {
                            1 => Meaning::Performed,
                            2 => Meaning::Verified,
                            _ => Meaning::Approved,
                        },
                    },
                    body,
                }
            },
        )
}

fn trust() -> Trust {
    let cert = CertificateDraft {
        network: network(),
        site: site(),
        role: Role::Clinic,
        key: key().public(),
        valid_from: Timestamp(i64::MIN),
        valid_until: Timestamp(i64::MAX),
    }
    .sign(&anchor());
    Trust {
        anchor: anchor().public(),
        network: network(),
        certificates: vec![cert],
        revocations: vec![],
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn events_round_trip_byte_exactly(u in unsigned_event()) {
        let e = u.sign(&key());
        let back = Event::from_bytes(e.bytes()).expect("our own bytes decode");
        prop_assert_eq!(back.bytes(), e.bytes());
        prop_assert_eq!(back.id(), e.id());
        prop_assert_eq!(back.unsigned(), e.unsigned());
        prop_assert!(back.signature_valid(&key().public().verifying_key().expect("key")));
    }

    #[test]
    fn any_single_byte_change_to_an_event_is_detected(u in unsigned_event(), pos in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let e = u.sign(&key());
        let mut bytes = e.bytes().to_vec();
        let i = pos.index(bytes.len());
        bytes[i] ^= xor;
        if let Ok(changed) = Event::from_bytes(&bytes) {
            let verdict = verify(&[changed], &trust(), &Options::default());
            prop_assert!(
                verdict.findings.iter().any(|f| f.code.as_str().starts_with("integrity.")),
                "byte {} changed and verification found no integrity finding", i
            );
        }
    }
}

fn small_bundle() -> (Vec<u8>, ledger_core::PublicKey) {
    let coi = Coi::parse("CHA999926ABC123").expect("fixed");
    let collection = UnsignedEvent {
        network: network(),
        author: site(),
        seq: Seq(1),
        prev: None,
        key: key().public(),
        coi: coi.clone(),
        parents: vec![],
        occurred_at: Timestamp(1_000),
        recorded_at: Timestamp(1_000),
        signer: Signer {
            operator: OperatorId::parse("nurse").expect("fixed"),
            printed_name: "N".into(),
            meaning: Meaning::Performed,
        },
        body: Body::Collection {
            units: vec![NewUnit {
                unit: UnitId::parse("BAG-1").expect("fixed"),
                stability_deadline: Timestamp(10_000_000),
                temp_min_centi: 200,
                temp_max_centi: 800,
            }],
            dins: vec![],
        },
    }
    .sign(&key());
    let store = UnsignedEvent {
        seq: Seq(2),
        prev: Some(collection.id()),
        parents: vec![collection.id()],
        occurred_at: Timestamp(2_000),
        recorded_at: Timestamp(2_000),
        body: Body::Store {
            unit: UnitId::parse("BAG-1").expect("fixed"),
            location: "fridge".into(),
        },
        ..collection.unsigned().clone()
    }
    .sign(&key());
    let t = trust();
    let bundle = BundleDraft {
        network: &network(),
        coi: &coi,
        exported_at: Timestamp(3_000),
        exporter: &site(),
        heads: vec![store.id()],
        events: vec![collection.bytes(), store.bytes()],
        certificates: t.certificates.iter().map(Certificate::bytes).collect(),
        revocations: vec![],
        checkpoints: vec![],
        anchor: Some(anchor().public()),
    }
    .sign(&key());
    (bundle, anchor().public())
}

#[test]
fn a_bundle_without_an_event_of_its_chain_is_never_intact() {
    let t = trust();
    let coi = Coi::parse("CHA999926ABC123").expect("fixed");
    let empty = BundleDraft {
        network: &network(),
        coi: &coi,
        exported_at: Timestamp(3_000),
        exporter: &site(),
        heads: vec![],
        events: vec![],
        certificates: t.certificates.iter().map(Certificate::bytes).collect(),
        revocations: vec![],
        checkpoints: vec![],
        anchor: Some(anchor().public()),
    }
    .sign(&key());
    let report = verify_bundle(&empty, &anchor().public(), &BundleOptions::default());
    assert_eq!(report.verdict.kind, VerdictKind::Incomplete);
    let codes: Vec<&str> = report
        .verdict
        .findings
        .iter()
        .map(|f| f.code.as_str())
        .collect();
    assert_eq!(codes, ["bundle.no_events"]);
}

#[test]
fn the_small_bundle_is_intact() {
    let (bundle, anchor) = small_bundle();
    let report = verify_bundle(&bundle, &anchor, &BundleOptions::default());
    assert_eq!(
        report.verdict.kind,
        VerdictKind::Intact,
        "{:?}",
        report.verdict.findings
    );
}

#[test]
fn a_bundle_verifies_by_the_anchor_fingerprint_and_only_by_the_right_one() {
    use ledger_core::{verify_bundle_trusting, AnchorTrust, Fingerprint};
    let (bundle, anchor) = small_bundle();
    let opts = BundleOptions::default();
    let by_fp = verify_bundle_trusting(
        &bundle,
        &AnchorTrust::Fingerprint(anchor.fingerprint_of()),
        &opts,
    );
    assert_eq!(
        by_fp.verdict.kind,
        VerdictKind::Intact,
        "{:?}",
        by_fp.verdict.findings
    );
    assert_eq!(by_fp.anchor, Some(anchor));
    // The fingerprint as people copy it, with the prefix in capitals and spaces.
    let spaced = anchor.fingerprint().replacen("sha256:", "SHA256: ", 1);
    assert_eq!(Fingerprint::parse(&spaced), Some(anchor.fingerprint_of()));
    assert_eq!(
        Fingerprint::parse(&anchor.to_hex()),
        None,
        "a key is not a fingerprint"
    );

    let other = SecretKey::from_seed(&[42; 32]).public();
    let wrong = verify_bundle_trusting(
        &bundle,
        &AnchorTrust::Fingerprint(other.fingerprint_of()),
        &opts,
    );
    // Another anchor: "cannot be checked", with one finding, never a break per event.
    assert_eq!(wrong.verdict.kind, VerdictKind::Unverifiable);
    let codes = |r: &ledger_core::BundleReport| {
        r.verdict
            .findings
            .iter()
            .map(|f| f.code.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(codes(&wrong), ["bundle.anchor_mismatch"]);
    assert_eq!(wrong.anchor, None);
    let wrong_key = verify_bundle(&bundle, &other, &opts);
    assert_eq!(wrong_key.verdict.kind, VerdictKind::Unverifiable);
    assert_eq!(codes(&wrong_key), ["bundle.anchor_mismatch"]);
    // The anchor's secret key given as if it were the public key: said so.
    let secret = ledger_core::PublicKey([7; 32]);
    let by_secret = verify_bundle(&bundle, &secret, &opts);
    assert_eq!(by_secret.verdict.kind, VerdictKind::Unverifiable);
    assert_eq!(codes(&by_secret), ["bundle.anchor_is_secret"]);
    // Altered after export and checked against another anchor: still broken.
    let mut altered = bundle.clone();
    let last = altered.len() - 40;
    altered[last] ^= 1;
    let r = verify_bundle(&altered, &other, &opts);
    assert_eq!(
        r.verdict.kind,
        VerdictKind::Broken,
        "{:?}",
        r.verdict.findings
    );

    // Unchecked: judged against the anchor the bundle names, and the report says it is not
    // a trusted one.
    let unchecked = verify_bundle_trusting(&bundle, &AnchorTrust::Unchecked, &opts);
    assert_eq!(unchecked.verdict.kind, VerdictKind::Intact);
    assert_eq!(unchecked.anchor, None);
}

#[test]
fn every_single_byte_change_to_a_bundle_is_detected() {
    // Exhaustive over positions (a bundle of two events is small), two flips each.
    let (bundle, anchor) = small_bundle();
    for i in 0..bundle.len() {
        for xor in [0x01u8, 0x80] {
            let mut b = bundle.clone();
            b[i] ^= xor;
            let report = verify_bundle(&b, &anchor, &BundleOptions::default());
            assert_ne!(
                report.verdict.kind,
                VerdictKind::Intact,
                "flipping byte {i} with {xor:#x} went unnoticed"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_a_decoder(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Event::from_bytes(&bytes);
        let _ = Certificate::from_bytes(&bytes);
        let _ = Revocation::from_bytes(&bytes);
        let _ = Checkpoint::from_bytes(&bytes);
        let _ = Bundle::from_bytes(&bytes);
        let _ = verify_bundle(&bytes, &anchor().public(), &BundleOptions::default());
    }

    #[test]
    fn cbor_shaped_garbage_never_panics_a_decoder(head in 0x80u8..0x9c, tail in prop::collection::vec(any::<u8>(), 0..256)) {
        // Arrays are what every record starts with, so aim there for deeper coverage.
        let mut bytes = vec![head];
        bytes.extend(tail);
        let _ = Event::from_bytes(&bytes);
        let _ = Bundle::from_bytes(&bytes);
        let _ = Certificate::from_bytes(&bytes);
    }
}
