//! A thousand tampered copies of a valid bundle, each of which must be caught: bytes
//! flipped, inserted or cut, events dropped, reordered, duplicated or added, keys swapped,
//! a forged certificate. Every one is checked with the offline verifier (never intact, never
//! a panic); every tenth also through the `ledger verify-bundle` binary (never exit 0, never
//! a panic).
//!
//! Two attackers: one without any key (every change to the file must break the exporter's
//! signature or the framing: verdict broken, exit 1), and one who holds the exporter's key
//! and re-signs the altered bundle (the checks inside must still refuse to call it intact).

use ledger_core::bundle::{verify_bundle, Bundle, BundleDraft, BundleOptions};
use ledger_core::{CertificateDraft, Event, SecretKey, Timestamp, VerdictKind};
use std::process::Command;

const N_MUTATIONS: usize = 1000;
const CLI_EVERY: usize = 10;

/// A small deterministic generator (xorshift64*), so a failure names a reproducible case.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

struct Original {
    bytes: Vec<u8>,
    bundle: Bundle,
    exporter: SecretKey,
    anchor: ledger_core::PublicKey,
}

fn original() -> Original {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/journeys/valid/weather-reroute.toml");
    let text = std::fs::read_to_string(path).expect("journey");
    let built = fixtures::build(&text).expect("journey builds");
    let bundle = Bundle::from_bytes(&built.bundle).expect("bundle decodes");
    let exporter = (1..=4)
        .map(|g| fixtures::keys::site(&built.network, &bundle.exporter, g))
        .find(|k| k.public() == bundle.exporter_key)
        .expect("the exporter's TEST-ONLY key");
    let report = verify_bundle(&built.bundle, &built.anchor, &BundleOptions::default());
    assert_eq!(
        report.verdict.kind,
        VerdictKind::Intact,
        "{:?}",
        report.verdict.findings
    );
    Original {
        bytes: built.bundle,
        bundle,
        exporter,
        anchor: built.anchor,
    }
}

/// Re-encodes a bundle with altered parts, signed by `key`.
fn resign(b: &Bundle, events: Vec<&[u8]>, certificates: Vec<&[u8]>, key: &SecretKey) -> Vec<u8> {
    BundleDraft {
        network: &b.network,
        coi: &b.coi,
        exported_at: b.exported_at,
        exporter: &b.exporter,
        heads: b.heads.clone(),
        events,
        certificates,
        revocations: b.revocations.iter().map(|r| r.bytes()).collect(),
        checkpoints: b.checkpoints.iter().map(|c| c.bytes()).collect(),
        anchor: b.anchor,
    }
    .sign(key)
}

/// One mutation: its name, the bytes, and whether only the exporter's key could make it
/// (then the verdict must not be intact; otherwise it must be broken).
fn mutate(o: &Original, rng: &mut Rng, i: usize) -> (String, Vec<u8>, bool) {
    let b = &o.bundle;
    let events: Vec<&[u8]> = b.events.iter().map(Event::bytes).collect();
    let certs: Vec<&[u8]> = b.certificates.iter().map(|c| c.bytes()).collect();
    let stranger = SecretKey::from_seed(&[0x5a; 32]);
    let n = events.len();
    match i % 10 {
        0..=2 => {
            let mut bytes = o.bytes.clone();
            let flips = 1 + rng.below(4);
            for _ in 0..flips {
                let at = rng.below(bytes.len());
                bytes[at] ^= 1 + rng.below(255) as u8;
            }
            (format!("flip {flips} byte(s)"), bytes, false)
        }
        3 => {
            let mut bytes = o.bytes.clone();
            let at = rng.below(bytes.len());
            bytes.truncate(at);
            (format!("truncate at {at}"), bytes, false)
        }
        4 => {
            let mut bytes = o.bytes.clone();
            let at = rng.below(bytes.len() + 1);
            bytes.insert(at, rng.next() as u8);
            (format!("insert a byte at {at}"), bytes, false)
        }
        5 => {
            // Structural changes keep the exporter's name but cannot carry its signature:
            // signed by a stranger, or the original signature kept.
            let mut ev = events.clone();
            let what = match rng.below(3) {
                0 => {
                    let k = rng.below(n);
                    ev.remove(k);
                    format!("drop event {k}")
                }
                1 => {
                    ev.swap(rng.below(n), rng.below(n));
                    ev.reverse();
                    "reorder events".to_owned()
                }
                _ => {
                    let k = rng.below(n);
                    ev.push(events[k]);
                    format!("duplicate event {k}")
                }
            };
            if rng.below(2) == 0 {
                (
                    format!("{what}, signed by a stranger"),
                    resign(b, ev, certs, &stranger),
                    false,
                )
            } else {
                let mut bytes = resign(b, ev, certs, &stranger);
                // Put the original signature back (the last 64 bytes of both).
                let sig_at = bytes.len() - 64;
                bytes[sig_at..].copy_from_slice(&o.bytes[o.bytes.len() - 64..]);
                (format!("{what}, original signature"), bytes, false)
            }
        }
        6 => {
            // An event whose signing key is swapped for another site's: its signature no
            // longer matches (the exporter re-signs the bundle).
            let k = rng.below(n);
            let mut unsigned = b.events[k].unsigned().clone();
            let others: Vec<&Event> = b
                .events
                .iter()
                .filter(|e| e.key() != b.events[k].key())
                .collect();
            let other = others[rng.below(others.len())];
            unsigned.key = *other.key();
            let forged = unsigned.with_signature(*b.events[k].signature());
            let mut ev: Vec<Vec<u8>> = events.iter().map(|e| e.to_vec()).collect();
            ev[k] = forged.bytes().to_vec();
            let refs = ev.iter().map(Vec::as_slice).collect();
            (
                format!("swap the key of event {k}"),
                resign(b, refs, certs, &o.exporter),
                true,
            )
        }
        7 => {
            // A certificate for a site's key forged by a rogue anchor.
            let k = rng.below(b.certificates.len());
            let c = &b.certificates[k];
            let forged = CertificateDraft {
                network: c.network.clone(),
                site: c.site.clone(),
                role: c.role,
                key: stranger.public(),
                valid_from: Timestamp(0),
                valid_until: Timestamp(i64::MAX / 2),
            }
            .sign(&fixtures::keys::rogue_anchor(&b.network));
            let mut cs: Vec<&[u8]> = certs.clone();
            cs[k] = forged.bytes();
            // ... and an event of that site signed with the key the forged certificate names.
            let template = b
                .events
                .iter()
                .find(|e| e.author() == &c.site)
                .unwrap_or(&b.events[0]);
            let mut unsigned = template.unsigned().clone();
            unsigned.author = c.site.clone();
            unsigned.key = stranger.public();
            let added = unsigned.sign(&stranger);
            let mut ev = events.clone();
            ev.push(added.bytes());
            (
                format!("forge certificate {k}"),
                resign(b, ev, cs, &o.exporter),
                true,
            )
        }
        8 => {
            // An event added from nowhere: signed by a key no certificate names.
            let template = &b.events[rng.below(n)];
            let mut unsigned = template.unsigned().clone();
            unsigned.key = stranger.public();
            let added = unsigned.sign(&stranger);
            let mut ev = events.clone();
            ev.push(added.bytes());
            (
                "add an event signed by an unknown key".to_owned(),
                resign(b, ev, certs, &o.exporter),
                true,
            )
        }
        _ => {
            // A middle event dropped by someone holding the exporter's key: later events
            // still name it.
            let named: std::collections::HashSet<_> = b
                .events
                .iter()
                .flat_map(|e| e.parents().iter().copied())
                .collect();
            let candidates: Vec<usize> = (0..n)
                .filter(|&k| named.contains(&b.events[k].id()))
                .collect();
            let k = candidates[rng.below(candidates.len())];
            let mut ev = events.clone();
            ev.remove(k);
            (
                format!("drop event {k}, which later events name, and re-sign"),
                resign(b, ev, certs, &o.exporter),
                true,
            )
        }
    }
}

#[test]
fn a_thousand_tampered_bundles_are_all_caught() {
    let o = original();
    let dir = tempfile::tempdir().expect("tempdir");
    let anchor_file = dir.path().join("anchor.pub");
    std::fs::write(&anchor_file, o.anchor.to_hex()).expect("anchor file");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut cli_runs = 0;
    for i in 0..N_MUTATIONS {
        let (what, bytes, keyed) = mutate(&o, &mut rng, i);
        assert!(bytes != o.bytes, "mutation {i} ({what}) changed nothing");
        let report = verify_bundle(&bytes, &o.anchor, &BundleOptions::default());
        let kind = report.verdict.kind;
        if keyed {
            assert_ne!(
                kind,
                VerdictKind::Intact,
                "mutation {i} ({what}) passed as intact"
            );
        } else {
            assert_eq!(
                kind,
                VerdictKind::Broken,
                "mutation {i} ({what}): {:?}",
                report.verdict.findings
            );
        }
        if i % CLI_EVERY == 0 {
            cli_runs += 1;
            let file = dir.path().join("tampered.bundle");
            std::fs::write(&file, &bytes).expect("write");
            let out = Command::new(env!("CARGO_BIN_EXE_ledger"))
                .args([
                    "verify-bundle",
                    file.to_str().expect("utf8"),
                    "--anchor",
                    anchor_file.to_str().expect("utf8"),
                ])
                .output()
                .expect("run ledger");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !stderr.contains("panicked"),
                "mutation {i} ({what}): {stderr}"
            );
            let want = match kind {
                VerdictKind::Broken => 1,
                VerdictKind::Incomplete => 4,
                VerdictKind::Unverifiable => 5,
                VerdictKind::Intact => 0,
            };
            assert_eq!(
                out.status.code(),
                Some(want),
                "mutation {i} ({what}): {stderr}"
            );
            assert_ne!(out.status.code(), Some(0), "mutation {i} ({what}) exited 0");
        }
    }
    assert_eq!(cli_runs, N_MUTATIONS / CLI_EVERY);
}
