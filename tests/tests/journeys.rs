//! End to end, as a site integrator, an auditor and a regulator would: start the real node
//! binary, replay every valid fixture journey through the `ledger` CLI (each step appended
//! as the site that performs it, with that site's token), verify each chain over gRPC,
//! export it, and verify the exported bundle offline with `ledger verify-bundle` against
//! the network's anchor key. Every chain must be intact with zero findings, on the node and
//! offline, and a second replay must be answered with the original receipts.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tests::{bin, output_text as text, Node};

fn ledger(node: &Node, args: &[&str]) -> Output {
    Command::new(bin("ledger").expect("ledger binary"))
        .args(args)
        .env("LEDGER_NODE", &node.addr)
        .env_remove("LEDGER_TOKEN")
        .output()
        .expect("run ledger")
}

fn valid_journeys() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/journeys/valid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("journeys")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

/// An RFC 3339 time `days` before now: replayed journeys must lie in the node's past.
fn days_ago(days: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let t = ledger_core::Timestamp((now - days * 86_400_000) / 1000 * 1000);
    t.to_string()
}

#[test]
fn every_valid_journey_replays_verifies_and_exports_intact() {
    let dir = tempfile::tempdir().expect("tempdir");
    // No causal clocks kept for idle chains: every append rebuilds its chain's clocks from
    // the store, so a rebuild that lost causal order would refuse a valid step here.
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "[limits]\nchain_clock_entries = 0\n").expect("write config");
    let config = config.to_str().expect("utf8");
    let node = Node::start(&dir.path().join("data"), &["--config", config]).expect("node starts");
    let tokens = node.token_dir();
    let tokens = tokens.to_str().expect("utf8");
    let auditor = node.token_dir().join("auditor.token");
    let regulator = node.token_dir().join("regulator.token");
    let anchor = node.anchor_file();
    let start = days_ago(60);
    let journeys = valid_journeys();
    assert!(
        journeys.len() >= 12,
        "only {} valid journeys",
        journeys.len()
    );
    for path in &journeys {
        let name = path.file_stem().and_then(|s| s.to_str()).expect("name");
        let built =
            fixtures::build(&std::fs::read_to_string(path).expect("read")).expect("journey builds");
        let coi = built.coi.to_string();
        let p = path.to_str().expect("utf8");

        let o = ledger(
            &node,
            &[
                "replay", p, "--tokens", tokens, "--start", &start, "--output", "json",
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{name}: replay\n{}", text(&o));

        let o = ledger(
            &node,
            &[
                "verify",
                &coi,
                "--token-file",
                auditor.to_str().expect("utf8"),
                "--output",
                "json",
            ],
        );
        assert_eq!(
            o.status.code(),
            Some(0),
            "{name}: verify on the node\n{}",
            text(&o)
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("verify json");
        assert_eq!(v["verdict"], "intact", "{name}: {v}");
        assert_eq!(
            v["findings"].as_array().map(Vec::len),
            Some(0),
            "{name}: {v}"
        );
        assert_eq!(
            v["status"],
            built.expect.status.clone().unwrap_or_default().as_str(),
            "{name}: status on the node differs from the journey's"
        );

        let bundle = dir.path().join(format!("{name}.bundle"));
        let b = bundle.to_str().expect("utf8");
        let o = ledger(
            &node,
            &[
                "export",
                &coi,
                "--out",
                b,
                "--token-file",
                regulator.to_str().expect("utf8"),
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{name}: export\n{}", text(&o));

        // Offline: no node address, only the file and the anchor key.
        let o = Command::new(bin("ledger").expect("ledger"))
            .args([
                "verify-bundle",
                b,
                "--anchor",
                anchor.to_str().expect("utf8"),
                "--output",
                "json",
            ])
            .env_remove("LEDGER_NODE")
            .output()
            .expect("run");
        assert_eq!(
            o.status.code(),
            Some(0),
            "{name}: offline verification\n{}",
            text(&o)
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("verify-bundle json");
        assert_eq!(v["verdict"], "intact", "{name}: {v}");
        assert_eq!(
            v["findings"].as_array().map(Vec::len),
            Some(0),
            "{name}: {v}"
        );
        assert_eq!(v["coi"], coi.as_str());
    }

    // Replaying again writes nothing new: every receipt is the original.
    let first = &journeys[0];
    let o = ledger(
        &node,
        &[
            "replay",
            first.to_str().expect("utf8"),
            "--tokens",
            tokens,
            "--start",
            &start,
            "--output",
            "json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("\"duplicate\":true") || out.contains("\"duplicate\": true"),
        "second replay was not answered from the original receipts:\n{out}"
    );
    assert!(
        !out.contains("\"duplicate\":false") && !out.contains("\"duplicate\": false"),
        "second replay appended new events:\n{out}"
    );
}
