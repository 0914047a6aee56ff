//! The operator's tools on a real store: `ledger-node backup` while the node runs,
//! `verify-store` on a sound store (running and stopped) and on a damaged one, and
//! `ledger-node restore` into a new data directory that then verifies clean and serves the
//! same chain, and `ledger-node rebuild-index` on a stopped node, which gives the same
//! answers. Bad input: a restore into a store that is not empty, and a backup that was
//! altered, are refused with exit code 2 before anything is written; a rebuild of a store
//! its node holds is refused with exit code 1.

use std::path::Path;
use std::process::{Command, Output};
use tests::{bin, output_text as text, Node};

const JOURNEY: &str = "weather-reroute";
const COI: &str = "CHB204126WX0007";

fn node_cmd(data_dir: &Path, extra: &[&str], args: &[&str]) -> Output {
    Command::new(bin("ledger-node").expect("ledger-node binary"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .args(args)
        .output()
        .expect("run ledger-node")
}

fn ledger(node: &Node, args: &[&str]) -> Output {
    Command::new(bin("ledger").expect("ledger binary"))
        .args(args)
        .env("LEDGER_NODE", &node.addr)
        .output()
        .expect("run ledger")
}

fn verify_on(node: &Node, token_dir: &Path) -> serde_json::Value {
    let auditor = token_dir.join("auditor.token");
    let o = ledger(
        node,
        &[
            "verify",
            COI,
            "--token-file",
            auditor.to_str().expect("utf8"),
            "--output",
            "json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    serde_json::from_slice(&o.stdout).expect("json")
}

/// A node on `data` with the journey replayed and verified intact: the node, its token
/// directory and the verification.
fn replayed(data: &Path) -> (Node, std::path::PathBuf, serde_json::Value) {
    let node = Node::start(data, &[]).expect("node starts");
    let journey = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/journeys/valid")
        .join(format!("{JOURNEY}.toml"));
    let tokens = node.token_dir();
    let o = ledger(
        &node,
        &[
            "replay",
            journey.to_str().expect("utf8"),
            "--tokens",
            tokens.to_str().expect("utf8"),
            "--start",
            "2026-10-01T08:00:00Z",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let before = verify_on(&node, &tokens);
    assert_eq!(before["verdict"], "intact");
    (node, tokens, before)
}

#[test]
fn backup_while_running_restore_and_verify_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("site");
    let (mut node, tokens, before) = replayed(&data);

    // Backup and check while the node runs.
    let backup = tmp.path().join("backup");
    let o = node_cmd(&data, &[], &["backup", backup.to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("19 events"),
        "{}",
        text(&o)
    );
    let o = node_cmd(&data, &[], &["verify-store", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(report["sound"], true, "{report}");
    assert_eq!(report["events"], 19);
    assert!(
        report["index_not_checked"]
            .as_str()
            .is_some_and(|s| s.contains("running node")),
        "{report}"
    );
    // A second backup into the same place is refused.
    let o = node_cmd(&data, &[], &["backup", backup.to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("already there"),
        "{}",
        text(&o)
    );
    node.stop().expect("node stops");

    // Stopped: the index is compared too.
    let o = node_cmd(&data, &[], &["verify-store", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(report["sound"], true, "{report}");
    assert!(
        report["index_keys_checked"]
            .as_u64()
            .is_some_and(|n| n > 19),
        "{report}"
    );
    assert_eq!(report["index_mismatches"], 0);

    // Restore into a new data directory: it verifies clean and serves the same chain.
    let network = data.join("network");
    let net_args = ["--network-dir", network.to_str().expect("utf8")];
    let restored = tmp.path().join("restored");
    let o = node_cmd(
        &restored,
        &net_args,
        &["restore", backup.to_str().expect("utf8")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("SOUND"),
        "{}",
        text(&o)
    );
    assert!(
        restored.join("store/resync-required").exists(),
        "the restored store is not marked for resync"
    );
    // Not into a store that holds events.
    let o = node_cmd(
        &restored,
        &net_args,
        &["restore", backup.to_str().expect("utf8")],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("already holds events"),
        "{}",
        text(&o)
    );
    let mut node = Node::start(&restored, &net_args).expect("restored node starts");
    let after = verify_on(&node, &tokens);
    assert_eq!(after["verdict"], "intact");
    assert_eq!(after["n_events"], before["n_events"]);
    node.stop().expect("node stops");

    // An altered backup is refused before anything is written.
    let log = backup.join("events.log");
    let mut bytes = std::fs::read(&log).expect("backup log");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&log, &bytes).expect("alter backup");
    let fresh = tmp.path().join("fresh");
    let o = node_cmd(
        &fresh,
        &net_args,
        &["restore", backup.to_str().expect("utf8")],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not match its manifest"),
        "{}",
        text(&o)
    );
    assert!(
        !fresh.join("store/events.log").exists(),
        "a refused restore wrote a log"
    );

    // Damage inside the original store's log is found (the index knows records the log no
    // longer yields).
    let log = data.join("store/events.log");
    let mut bytes = std::fs::read(&log).expect("store log");
    // The middle of the records, not of the zeros the node keeps written ahead of them.
    let records_end = bytes
        .iter()
        .rposition(|&b| b != 0)
        .expect("a log with records");
    let mid = records_end / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&log, &bytes).expect("damage log");
    let o = node_cmd(&data, &[], &["verify-store"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("PROBLEMS FOUND") && out.contains("in the index but not implied by the log"),
        "{}",
        text(&o)
    );
}

/// `ledger-node rebuild-index` refuses a store its node holds, and on a stopped node
/// rebuilds an index that checks clean against the log and gives the same answers.
#[test]
fn rebuild_index_refuses_a_running_node_and_gives_the_same_answers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("site");
    let (mut node, tokens, before) = replayed(&data);

    // The running node holds the store: nothing is touched.
    let o = node_cmd(&data, &[], &["rebuild-index"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(o.stdout.is_empty(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(
            "another process holds this store: if another node runs on it, stop that node"
        ),
        "{}",
        text(&o)
    );
    node.stop().expect("node stops");

    let o = node_cmd(&data, &[], &["rebuild-index"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "index rebuilt from the log: 19 events"
    );
    let o = node_cmd(&data, &[], &["verify-store", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(report["sound"], true, "{report}");
    assert_eq!(report["index_mismatches"], 0);

    let node = Node::start(&data, &[]).expect("node restarts");
    let after = verify_on(&node, &tokens);
    assert_eq!(after, before);
}

/// A node serves a store only with the network it was written under: not with another
/// network directory (whose keys would continue the store's feeds), not with a new
/// development network when the store's own directory is missing. Maintenance commands on
/// a mistyped data directory refuse and leave nothing behind (no keys, no empty store), and
/// a restore refuses without the backup's network rather than making a new one.
#[test]
fn a_store_is_served_only_with_its_own_network_and_maintenance_never_creates_one() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (d1, d2) = (tmp.path().join("one"), tmp.path().join("two"));
    let (mut node, _, _) = replayed(&d1);
    assert_eq!(node.stop().expect("stop"), Some(0));
    let mut other = Node::start(&d2, &[]).expect("second node starts");
    assert_eq!(other.stop().expect("stop"), Some(0));
    let run = |data: &Path, extra: &[&str]| {
        let mut args = vec!["--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        node_cmd(
            data,
            &args,
            &["run", "--no-metrics", "--no-http", "--stop-on-stdin-close"],
        )
    };

    // Another network's directory: refused before anything is signed.
    let foreign = d2.join("network");
    let o = run(&d1, &["--network-dir", foreign.to_str().expect("utf8")]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("was not written under the network at")
            && out.contains("which network dev-net's anchor never certified"),
        "{out}"
    );

    // The store's own network directory missing: no new development network over it.
    std::fs::rename(d1.join("network"), tmp.path().join("moved")).expect("move network");
    let o = run(&d1, &[]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("there is no network directory at") && out.contains("holds 19 events"),
        "{out}"
    );
    assert!(!d1.join("network").exists(), "no network was created");
    std::fs::rename(tmp.path().join("moved"), d1.join("network")).expect("move back");

    // Mistyped data directories: refused, and nothing created.
    let missing = tmp.path().join("typo");
    for cmd in ["verify-store", "rebuild-index"] {
        let o = node_cmd(&missing, &[], &[cmd]);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {out}");
        assert!(
            out.contains("check --data-dir"),
            "{cmd} says what to check: {out}"
        );
        assert!(!missing.exists(), "{cmd} created {}", missing.display());
    }

    // A restore with no network directory refuses instead of making one.
    let backup = tmp.path().join("backup");
    let o = node_cmd(&d1, &[], &["backup", backup.to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let fresh = tmp.path().join("fresh");
    let o = node_cmd(&fresh, &[], &["restore", backup.to_str().expect("utf8")]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains("restore needs the network the backup was written under"),
        "{out}"
    );
    assert!(!fresh.join("network").exists() && !fresh.join("store").exists());

    // With its own network the store is served as before.
    let mut node = Node::start(&d1, &[]).expect("node starts on its own network");
    assert_eq!(node.stop().expect("stop"), Some(0));
}
