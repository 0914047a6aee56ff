//! The `ledger` binary's node commands as a user runs them, against the scripted node in
//! `fake_node`: exit codes for an unreachable node, a refused append, a bad step file and a
//! missing token; `replay` appending a journey with each site's token, idempotently.

mod fake_node;

use fake_node::{serve, Fake};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tonic::Status;

/// Runs `ledger` with a clean environment for the variables it reads.
fn ledger(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(args)
        .env_remove("LEDGER_NODE")
        .env_remove("LEDGER_TOKEN")
        .output()
        .expect("run ledger")
}

/// Runs `ledger` off the async runtime that serves the fake node.
async fn ledger_async(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ledger(&args)
    })
    .await
    .expect("ledger runs")
}

fn journey(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/journeys")
        .join(name)
}

#[track_caller]
fn check_exit(out: &Output, code: i32, stderr_has: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(stderr.contains(stderr_has), "stderr: {stderr}");
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().expect("tempdir"))
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.to_str().expect("utf8").to_owned()
    }

    fn path(&self) -> String {
        self.0.path().to_str().expect("utf8").to_owned()
    }
}

const STEP: &str = r#"
coi = "CHA999926ABC123"
site = "clinic-a"
kind = "note"
at = "2026-03-02T09:00:00Z"
operator = "nurse.kim"
name = "K. Kim RN"
text = "courier late"
"#;

#[test]
fn an_unreachable_node_exits_3() {
    let dir = Dir::new();
    let token = dir.write("t.token", "tok\n");
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let out = ledger(&[
        "node-info",
        "--node",
        &format!("http://{addr}"),
        "--token-file",
        &token,
    ]);
    check_exit(&out, 3, "node unreachable");
}

#[test]
fn usage_problems_exit_2_before_any_call() {
    let dir = Dir::new();
    let out = ledger(&["node-info"]);
    check_exit(
        &out,
        2,
        "no token: pass --token-file FILE or set LEDGER_TOKEN",
    );
    let token = dir.write("t.token", "tok\n");
    let step = dir.write("bad.toml", &STEP.replace("text = ", "txt = "));
    let out = ledger(&["append", &step, "--token-file", &token]);
    check_exit(&out, 2, "unknown field `txt`");
    let out = ledger(&[
        "node-info",
        "--node",
        "127.0.0.1:50051",
        "--token-file",
        &token,
    ]);
    check_exit(&out, 2, "must start with http://");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_append_exits_2_with_the_nodes_message() {
    let fake = Fake::default();
    fake.0.lock().expect("lock").refuse = Some(Status::permission_denied(
        "this token may append only as mfg-1",
    ));
    let node = serve(fake).await;
    let dir = Dir::new();
    let token = dir.write("t.token", "tok\n");
    let step = dir.write("step.toml", STEP);
    let out = ledger_async(vec![
        "append".into(),
        step,
        "--node".into(),
        node,
        "--token-file".into(),
        token,
    ])
    .await;
    check_exit(
        &out,
        2,
        "node refused the call (PERMISSION_DENIED): this token may append only as mfg-1",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_appends_each_step_as_its_site_and_is_idempotent() {
    let fake = Fake::default();
    let node = serve(fake.clone()).await;
    let tokens = Dir::new();
    for site in ["clinic-a", "mfg-1", "lab-1"] {
        tokens.write(&format!("{site}.token"), &format!("tok-{site}\n"));
    }
    let file = journey("valid/correction-and-notes.toml")
        .to_str()
        .expect("utf8")
        .to_owned();
    let args = vec![
        "replay".into(),
        file,
        "--tokens".into(),
        tokens.path(),
        "--node".into(),
        node,
        "--output".into(),
        "json".into(),
    ];
    let first = ledger_async(args.clone()).await;
    check_exit(&first, 0, "");
    let receipts: Vec<serde_json::Value> = String::from_utf8_lossy(&first.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(receipts.len(), 22);
    assert_eq!(receipts[0]["step"], "collect");
    assert!(receipts.iter().all(|r| r["duplicate"] == false));
    {
        let s = fake.0.lock().expect("lock");
        assert_eq!(s.stored_as.len(), 22);
        for (auth, site) in &s.stored_as {
            assert_eq!(auth, &format!("Bearer tok-{site}"));
        }
    }

    let second = ledger_async(args).await;
    check_exit(&second, 0, "");
    let again: Vec<serde_json::Value> = String::from_utf8_lossy(&second.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert!(again.iter().all(|r| r["duplicate"] == true));
    let ids = |rs: &[serde_json::Value]| -> Vec<String> {
        rs.iter().map(|r| r["event_id"].to_string()).collect()
    };
    assert_eq!(ids(&receipts), ids(&again));
    assert_eq!(fake.0.lock().expect("lock").stored_as.len(), 22);
}

#[test]
fn replay_needs_every_sites_token_before_it_starts() {
    let tokens = Dir::new();
    tokens.write("clinic-a.token", "tok\n");
    let out = ledger(&[
        "replay",
        journey("valid/correction-and-notes.toml")
            .to_str()
            .expect("utf8"),
        "--tokens",
        &tokens.path(),
        "--node",
        "http://127.0.0.1:9",
    ]);
    check_exit(&out, 3, "no token file for site");
}
