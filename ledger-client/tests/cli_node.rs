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

/// A fixture bundle (TEST-ONLY keys) and the anchor that verifies it, in `dir`.
fn fixture_bundle(dir: &Dir) -> Vec<u8> {
    let bundle = format!("{}/fixture.bundle", dir.path());
    let anchor = format!("{}/anchor.pub", dir.path());
    let journey = journey("valid/standard.toml");
    let built = ledger(&[
        "fixture",
        "build",
        journey.to_str().expect("utf8"),
        "--out",
        &bundle,
    ]);
    check_exit(&built, 0, "");
    check_exit(&ledger(&["fixture", "anchor", "--out", &anchor]), 0, "");
    std::fs::read(&bundle).expect("read the bundle")
}

/// A fake node that exports `bundle` in chunks, announcing `total` bytes.
async fn exporting(bundle: &[u8], total: u64) -> (Fake, String) {
    let fake = Fake::default();
    {
        let mut s = fake.0.lock().expect("lock");
        s.export_chunks = bundle.chunks(1000).map(<[u8]>::to_vec).collect();
        s.export_total = total;
    }
    let node = serve(fake.clone()).await;
    (fake, node)
}

async fn export_to(node: &str, token: &str, out: &str) -> Output {
    ledger_async(
        [
            "export",
            "CHA999926ABC123",
            "--out",
            out,
            "--node",
            node,
            "--token-file",
            token,
        ]
        .map(String::from)
        .to_vec(),
    )
    .await
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn export_replaces_a_regular_file_with_the_whole_bundle() {
    let dir = Dir::new();
    let bundle = fixture_bundle(&dir);
    let (_fake, node) = exporting(&bundle, bundle.len() as u64).await;
    let token = dir.write("t.token", "tok\n");
    let out = dir.write("chain.bundle", "an older file");
    let run = export_to(&node, &token, &out).await;
    check_exit(&run, 0, &format!("wrote {out} ({} bytes", bundle.len()));
    assert_eq!(std::fs::read(&out).expect("read"), bundle);
    let anchor = format!("{}/anchor.pub", dir.path());
    check_exit(
        &ledger(&["verify-bundle", &out, "--anchor", &anchor]),
        0,
        "",
    );
    let expected = ["anchor.pub", "chain.bundle", "fixture.bundle", "t.token"];
    assert_eq!(names(dir.0.path()), expected, "no temporary file is left");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_export_leaves_the_old_file_and_nothing_else() {
    let dir = Dir::new();
    let bundle = fixture_bundle(&dir);
    // The node announces one byte more than it sends.
    let (_fake, node) = exporting(&bundle, bundle.len() as u64 + 1).await;
    let token = dir.write("t.token", "tok\n");
    let out = dir.write("chain.bundle", "an older file");
    let run = export_to(&node, &token, &out).await;
    let announced = bundle.len() + 1;
    let message = format!("announced {announced} bytes but sent {}", bundle.len());
    check_exit(&run, 3, &message);
    assert_eq!(
        std::fs::read_to_string(&out).expect("read"),
        "an older file"
    );
    let expected = ["anchor.pub", "chain.bundle", "fixture.bundle", "t.token"];
    assert_eq!(names(dir.0.path()), expected, "no temporary file is left");
}

#[tokio::test(flavor = "multi_thread")]
async fn export_refuses_an_out_that_is_no_regular_file_before_fetching() {
    let dir = Dir::new();
    let (fake, node) = exporting(b"never asked for", 15).await;
    let token = dir.write("t.token", "tok\n");
    std::fs::create_dir(dir.0.path().join("sub")).expect("mkdir");
    let fifo = format!("{}/fifo", dir.path());
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo {fifo}");
    let sub = format!("{}/sub", dir.path());
    let refusals = [
        (sub.clone(), format!("{sub}: is a directory, which would be replaced by a regular file; give the path of the file to write")),
        (format!("{sub}/"), format!("{sub}/: names a directory; give the path of the file to write")),
        (fifo.clone(), format!("{fifo}: is a fifo, which would be replaced by a regular file; give the path of the file to write")),
        (format!("{sub}/none/x.bundle"), format!("{sub}/none/x.bundle: the directory {sub}/none does not exist; create it first")),
    ];
    for (out, message) in refusals {
        let run = export_to(&node, &token, &out).await;
        check_exit(&run, 2, &format!("ledger: {message}\n"));
    }
    use std::os::unix::fs::FileTypeExt;
    let kind = std::fs::metadata(&fifo).expect("stat the fifo").file_type();
    assert!(kind.is_fifo(), "the fifo is still a fifo: {kind:?}");
    assert_eq!(names(dir.0.path()), ["fifo", "sub", "t.token"]);
    assert!(names(&dir.0.path().join("sub")).is_empty());
    let asked = fake.0.lock().expect("lock").seen_auth.len();
    assert_eq!(asked, 0, "nothing was fetched");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_next_page_hint_repeats_the_filter() {
    let node = serve(Fake::default()).await;
    let dir = Dir::new();
    let token = dir.write("t.token", "tok\n");
    let cases: [(&[&str], &str); 4] = [
        (&[], "more: ledger chains --page-token p2"),
        (
            &["--status", "administered"],
            "more: ledger chains --status administered --page-token p2",
        ),
        (
            &["--page-size", "2"],
            "more: ledger chains --page-size 2 --page-token p2",
        ),
        (
            &[
                "--status",
                "administered",
                "--page-size",
                "2",
                "--page-token",
                "p1",
            ],
            "more: ledger chains --status administered --page-size 2 --page-token p2",
        ),
    ];
    for (filter, hint) in cases {
        let mut args: Vec<String> = ["chains", "--node", &node, "--token-file", &token]
            .map(String::from)
            .to_vec();
        args.extend(filter.iter().map(|a| a.to_string()));
        let run = ledger_async(args).await;
        check_exit(&run, 0, "");
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert_eq!(stdout.lines().last(), Some(hint), "{filter:?}: {stdout}");
    }
}

#[test]
fn an_append_that_never_gets_an_answer_says_how_long_it_tried() {
    // The kernel accepts connections into the backlog, and nothing ever reads or answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let node = format!("http://{}", silent.local_addr().expect("addr"));
    let dir = Dir::new();
    let token = dir.write("t.token", "tok\n");
    let step = dir.write("step.toml", STEP);
    let run = ledger(&[
        "append",
        &step,
        "--node",
        &node,
        "--token-file",
        &token,
        "--timeout",
        "1",
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(3), "stderr: {stderr}");
    let prefix = format!("ledger: {node}: no answer within 1s on each of 5 attempts (");
    let elapsed = stderr
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix("s in all)\n"))
        .and_then(|secs| secs.parse::<f64>().ok());
    // Five attempts of a second each, and the pauses between them.
    assert!(
        elapsed.is_some_and(|secs| (5.0..60.0).contains(&secs)),
        "stderr: {stderr}"
    );
    drop(silent);
}
