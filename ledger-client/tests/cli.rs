//! The `ledger` binary as a user runs it: build a fixture bundle, write the anchor, verify
//! it, and check the exit code and output for intact, broken, unreadable and usage errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ledger(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(args)
        .output()
        .expect("run ledger")
}

fn journey(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/journeys")
        .join(name)
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let anchor = dir.path().join("anchor.pub");
        let out = ledger(&["fixture", "anchor", "--out", anchor.to_str().expect("utf8")]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Setup { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir
            .path()
            .join(name)
            .to_str()
            .expect("utf8")
            .to_owned()
    }

    fn build(&self, journey_file: &str, out: &str) {
        let o = ledger(&[
            "fixture",
            "build",
            journey(journey_file).to_str().expect("utf8"),
            "--out",
            &self.path(out),
        ]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    fn verify(&self, bundle: &str, extra: &[&str]) -> Output {
        let mut args = vec![
            "verify-bundle".to_owned(),
            self.path(bundle),
            "--anchor".into(),
            self.path("anchor.pub"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        ledger(&refs)
    }
}

#[test]
fn intact_bundle_exits_0_with_json_verdict() {
    let s = Setup::new();
    s.build("valid/standard.toml", "std.bundle");
    let out = s.verify("std.bundle", &["--output", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["verdict"], "intact");
    assert_eq!(doc["status"], "administered");
    assert_eq!(doc["coi"], "CHA999926ABC123");
    assert_eq!(doc["findings"].as_array().map(Vec::len), Some(0));
    let text = s.verify("std.bundle", &[]);
    assert!(String::from_utf8_lossy(&text.stdout).starts_with("INTACT"));
}

/// Runs `ledger` with standard output a pipe whose reading end is already closed, as in
/// `ledger verify-bundle ... | head -0`: every write fails with a broken pipe.
fn ledger_into_closed_pipe(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(args)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run ledger")
}

#[test]
fn a_closed_pipe_neither_panics_nor_changes_the_exit_code() {
    let s = Setup::new();
    s.build("valid/standard.toml", "std.bundle");
    let bytes = std::fs::read(s.path("std.bundle")).expect("read");
    std::fs::write(s.path("cut.bundle"), &bytes[..bytes.len() / 2]).expect("write");
    for (bundle, code) in [("std.bundle", 0), ("cut.bundle", 1)] {
        for output in ["text", "json"] {
            let (b, a) = (s.path(bundle), s.path("anchor.pub"));
            let out =
                ledger_into_closed_pipe(&["verify-bundle", &b, "--anchor", &a, "--output", output]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(code), "{bundle} {output}: {stderr}");
            assert_eq!(stderr, "", "{bundle} {output}");
        }
    }
}

/// Runs `ledger` with standard error (and, with `stdout_too`, standard output) a pipe
/// whose reading end is already closed, as in `ledger replay ... 2>&1 | head -0`.
fn ledger_with_closed_stderr(args: &[&str], stdout_too: bool) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let stdout = if stdout_too {
        std::process::Stdio::from(writer.try_clone().expect("clone the pipe"))
    } else {
        std::process::Stdio::piped()
    };
    Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(args)
        .env_remove("LEDGER_NODE")
        .env_remove("LEDGER_TOKEN")
        .stdout(stdout)
        .stderr(writer)
        .output()
        .expect("run ledger")
}

#[test]
fn a_closed_stderr_neither_panics_nor_changes_the_exit_code() {
    let s = Setup::new();
    s.build("valid/standard.toml", "std.bundle");
    let bytes = std::fs::read(s.path("std.bundle")).expect("read");
    std::fs::write(s.path("cut.bundle"), &bytes[..bytes.len() / 2]).expect("write");
    std::fs::write(s.path("t.token"), "tok\n").expect("write");
    // A port that was free a moment ago; nothing listens on it now.
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let refused = format!("http://{refused}");
    let (missing, token) = (s.path("missing.token"), s.path("t.token"));
    let (cut, anchor, out) = (s.path("cut.bundle"), s.path("anchor.pub"), s.path("a.pub"));
    let cases: [(&[&str], i32); 5] = [
        (&["chain", "CHA999926ABC123", "--token-file", &missing], 3),
        (&["node-info"], 2),
        (
            &["node-info", "--node", &refused, "--token-file", &token],
            3,
        ),
        (&["epcis", &cut, "--anchor", &anchor], 1),
        (&["fixture", "anchor", "--out", &out], 0),
    ];
    for (args, code) in cases {
        for stdout_too in [false, true] {
            let run = ledger_with_closed_stderr(args, stdout_too);
            assert_eq!(
                run.status.code(),
                Some(code),
                "{args:?} (stdout closed too: {stdout_too}): stdout {}",
                String::from_utf8_lossy(&run.stdout)
            );
        }
    }
}
#[test]
fn truncated_bundle_exits_1_with_malformed_finding() {
    let s = Setup::new();
    s.build("valid/standard.toml", "std.bundle");
    let bytes = std::fs::read(s.path("std.bundle")).expect("read");
    std::fs::write(s.path("cut.bundle"), &bytes[..bytes.len() / 2]).expect("write");
    let out = s.verify("cut.bundle", &["--output", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["verdict"], "broken");
    assert_eq!(doc["findings"][0]["code"], "bundle.malformed");
}

#[test]
fn a_file_that_is_not_a_bundle_exits_1() {
    let s = Setup::new();
    std::fs::write(s.path("notes.txt"), b"this is not a bundle\n").expect("write");
    let out = s.verify("notes.txt", &["--output", "json"]);
    assert_eq!(out.status.code(), Some(1));
}

/// A file over the largest bundle is refused before it is read: exit 3, the file named,
/// and the process never holds it (a sparse 1 GiB file, and /dev/zero, which never ends).
#[test]
fn a_file_over_the_bundle_limit_is_refused_before_it_is_read() {
    let s = Setup::new();
    let big = s.path("huge.bundle");
    std::fs::File::create(&big)
        .and_then(|f| f.set_len(1 << 30))
        .expect("sparse file");
    let anchor = s.path("any-anchor.pub");
    std::fs::write(&anchor, "ab".repeat(32)).expect("anchor file");
    for file in [big.as_str(), "/dev/zero"] {
        let out = ledger(&["verify-bundle", file, "--anchor", &anchor]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{file}: {stderr}");
        assert!(
            stderr.contains(file) && stderr.contains("more than the 268435456 bytes (256 MiB)"),
            "{stderr}"
        );
    }
}

#[test]
fn missing_file_exits_3_and_bad_usage_exits_2() {
    let s = Setup::new();
    let out = s.verify("absent.bundle", &[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("absent.bundle"));
    assert_eq!(ledger(&["verify-bundle"]).status.code(), Some(2));
    assert_eq!(ledger(&["no-such-command"]).status.code(), Some(2));
    std::fs::write(s.path("bad-anchor"), b"xyz").expect("write");
    s.build("valid/standard.toml", "std.bundle");
    let out = ledger(&[
        "verify-bundle",
        &s.path("std.bundle"),
        "--anchor",
        &s.path("bad-anchor"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("64 hex digits"));
}

#[test]
fn invalid_journey_file_exits_2_naming_the_problem() {
    let s = Setup::new();
    std::fs::write(s.path("j.toml"), "name = 'x'\nbogus_key = 1\n").expect("write");
    let out = ledger(&[
        "fixture",
        "build",
        &s.path("j.toml"),
        "--out",
        &s.path("x.bundle"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bogus_key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn synthetic_bundle_verifies_intact() {
    let s = Setup::new();
    let o = ledger(&[
        "fixture",
        "synth",
        "--events",
        "500",
        "--out",
        &s.path("synth.bundle"),
    ]);
    assert_eq!(o.status.code(), Some(0));
    let out = s.verify("synth.bundle", &["--whole-feeds", "--output", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        ledger(&["fixture", "synth", "--events", "0", "--out", &s.path("z")])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn usage_errors_under_output_json_are_json_on_stdout_with_exit_code_2() {
    let o = ledger(&["verify", "NOT-A-COI", "--output", "json"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is JSON");
    assert_eq!(doc["exit_code"], 2);
    let error = doc["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("invalid value 'NOT-A-COI' for '<COI>'"),
        "{doc}"
    );
    // Without it, the usage error stays text on stderr.
    let o = ledger(&["verify", "NOT-A-COI"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid value 'NOT-A-COI'"));
}

#[test]
fn errors_under_output_json_are_json_on_stdout_with_the_same_exit_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("absent.bundle");
    let anchor = dir.path().join("anchor.pub");
    std::fs::write(&anchor, "00".repeat(32)).expect("anchor");
    let o = ledger(&[
        "verify-bundle",
        missing.to_str().expect("utf8"),
        "--anchor",
        anchor.to_str().expect("utf8"),
        "--output",
        "json",
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is JSON");
    assert_eq!(doc["exit_code"], 3);
    assert!(
        doc["error"]
            .as_str()
            .is_some_and(|e| e.contains("absent.bundle")),
        "{doc}"
    );
    // The same error as text goes to stderr.
    let o = ledger(&[
        "verify-bundle",
        missing.to_str().expect("utf8"),
        "--anchor",
        anchor.to_str().expect("utf8"),
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(o.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&o.stderr).starts_with("ledger: "),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The subcommands `ledger --help` lists, and theirs.
fn subcommands(prefix: &[&str]) -> Vec<String> {
    let mut args: Vec<&str> = prefix.to_vec();
    args.push("--help");
    let o = ledger(&args);
    assert_eq!(o.status.code(), Some(0), "{args:?}");
    let help = String::from_utf8_lossy(&o.stdout).into_owned();
    help.split("Commands:")
        .nth(1)
        .map(|list| {
            list.lines()
                .skip(1)
                .take_while(|l| !l.trim().is_empty())
                .filter_map(|l| l.split_whitespace().next())
                .filter(|c| *c != "help")
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_command_has_help_that_says_what_it_does_without_colour_codes() {
    let top = subcommands(&[]);
    for expected in [
        "verify-bundle",
        "report",
        "epcis",
        "network",
        "export",
        "replay",
    ] {
        assert!(
            top.iter().any(|c| c == expected),
            "{expected} missing from {top:?}"
        );
    }
    let mut checked = 0;
    for command in &top {
        let nested = subcommands(&[command.as_str()]);
        let mut paths = vec![vec![command.as_str()]];
        paths.extend(nested.iter().map(|n| vec![command.as_str(), n.as_str()]));
        for path in paths {
            let mut args = path.clone();
            args.push("--help");
            let o = Command::new(env!("CARGO_BIN_EXE_ledger"))
                .args(&args)
                .env("NO_COLOR", "1")
                .output()
                .expect("run ledger");
            let help = String::from_utf8_lossy(&o.stdout);
            assert_eq!(o.status.code(), Some(0), "{args:?}");
            assert!(help.contains("Usage: ledger"), "{args:?}: {help}");
            assert!(
                !help.contains('\u{1b}'),
                "{args:?}: colour codes under NO_COLOR"
            );
            // A first line that says what the command does, not just its name.
            let first = help.lines().next().unwrap_or("");
            assert!(first.split_whitespace().count() >= 3, "{args:?}: {first:?}");
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} help pages");
}

#[test]
fn report_and_epcis_speak_json_when_asked() {
    let s = Setup::new();
    s.build("valid/standard.toml", "std.bundle");
    let html = s.path("r.html");
    // Runs `ledger report` with --output json and returns the document it printed.
    let report = |anchor: &str| {
        let o = ledger(&[
            "report",
            &s.path("std.bundle"),
            "--anchor",
            anchor,
            "--out",
            &html,
            "--output",
            "json",
        ]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&o.stdout).expect("json")
    };
    let doc = report(&s.path("anchor.pub"));
    assert_eq!(doc["verdict"], "intact");
    assert_eq!(doc["written"], html.as_str());
    assert_eq!(
        doc["bytes"].as_u64(),
        std::fs::metadata(&html).ok().map(|m| m.len())
    );
    // The anchor as a fingerprint: the bundle carries the key, which must hash to it.
    let key_hex = std::fs::read_to_string(s.path("anchor.pub")).expect("anchor");
    let key = ledger_core::EventId::from_hex(key_hex.trim()).expect("hex key");
    let fingerprint = ledger_core::PublicKey(key.0).fingerprint();
    let doc = report(&fingerprint);
    assert_eq!(doc["anchor_fingerprint"], fingerprint.as_str());
    // Runs `ledger epcis` with --out and --output json and returns the document it printed.
    let bundle = s.path("std.bundle");
    let epcis = |extra: &[&str], out: &str| {
        let mut args = vec!["epcis", bundle.as_str()];
        args.extend_from_slice(extra);
        args.extend(["--out", out, "--output", "json"]);
        let o = ledger(&args);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&o.stdout).expect("json")
    };
    let doc = epcis(&["--anchor", &fingerprint], &s.path("v.jsonld"));
    assert_eq!(doc["verified"], true);
    let jsonld = s.path("c.jsonld");
    let doc = epcis(&[], &jsonld);
    assert_eq!(doc["written"], jsonld.as_str());
    assert_eq!(doc["verified"], false);
    // Not a bundle: exit 1, and the error is JSON on stdout.
    let junk = s.path("junk.bundle");
    std::fs::write(&junk, b"not a bundle").expect("write");
    for args in [
        vec![
            "report",
            junk.as_str(),
            "--out",
            html.as_str(),
            "--output",
            "json",
        ],
        vec!["epcis", junk.as_str(), "--output", "json"],
    ] {
        let o = ledger(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        assert_eq!(doc["exit_code"], 1, "{args:?}");
        assert!(
            doc["error"]
                .as_str()
                .is_some_and(|e| e.contains("junk.bundle")),
            "{doc}"
        );
    }
}

/// The CBOR head of major type `major` with argument `n` (shortest form, as canonical
/// CBOR has it).
fn cbor_head(major: u8, n: u64) -> Vec<u8> {
    let m = major << 5;
    match n {
        0..=23 => vec![m | n as u8],
        24..=0xff => vec![m | 24, n as u8],
        0x100..=0xffff => [vec![m | 25], (n as u16).to_be_bytes().to_vec()].concat(),
        0x1_0000..=0xffff_ffff => [vec![m | 26], (n as u32).to_be_bytes().to_vec()].concat(),
        _ => [vec![m | 27], n.to_be_bytes().to_vec()].concat(),
    }
}

/// A 1 MB bundle (format 2) whose one million event entries are empty byte strings,
/// naming the anchor `anchor`.
fn million_empty_entries(anchor: [u8; 32]) -> Vec<u8> {
    let text = |s: &str| [cbor_head(3, s.len() as u64), s.as_bytes().to_vec()].concat();
    let bytes = |b: &[u8]| [cbor_head(2, b.len() as u64), b.to_vec()].concat();
    let n = 1_000_000;
    let mut body = cbor_head(4, 12);
    body.extend(cbor_head(0, 2));
    body.extend(text("dev-net"));
    body.extend(text("CHA999926ABC123"));
    body.extend(cbor_head(0, 1000));
    body.extend(text("clinic-a"));
    body.extend(bytes(&[0x11; 32]));
    body.extend(cbor_head(4, 0));
    body.extend(cbor_head(4, n));
    body.extend(std::iter::repeat_n(0x40, n as usize));
    for _ in 0..3 {
        body.extend(cbor_head(4, 0));
    }
    body.extend(bytes(&anchor));
    [cbor_head(4, 2), body, bytes(&[0x33; 64])].concat()
}

/// A file of a million broken parts costs one summary line, not a million findings: under
/// a 512 MiB address-space limit (util-linux `prlimit`, installed by scripts/setup) both
/// commands finish, and what they print stays small.
#[test]
fn a_million_broken_parts_stay_within_512_mib_and_a_small_output() {
    let s = Setup::new();
    let file = s.path("million.bundle");
    std::fs::write(&file, million_empty_entries([0x22; 32])).expect("write");
    let anchor = s.path("anchor-22.pub");
    std::fs::write(&anchor, "22".repeat(32)).expect("anchor");
    let limited = |args: &[&str]| {
        Command::new("prlimit")
            .arg(format!("--as={}", 512u64 << 20))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_ledger"))
            .args(args)
            .output()
            .expect("prlimit")
    };
    let out = limited(&[
        "verify-bundle",
        &file,
        "--anchor",
        &anchor,
        "--output",
        "json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.len() < 1 << 20,
        "{} bytes printed",
        out.stdout.len()
    );
    assert!(
        stdout.contains("and 999950 more parts that do not decode"),
        "{stdout}"
    );
    let page = s.path("million.html");
    let out = limited(&["report", &file, "--anchor", &anchor, "--out", &page]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let len = std::fs::metadata(&page).expect("page").len();
    assert!(len < 1 << 20, "a {len}-byte page");
}
