//! `ledger report`: the HTML page a person reads instead of a verdict line.
//!
//! How: every fixture journey (valid and broken) is built with TEST-ONLY keys and rendered
//! in process, and the page is checked against what the journey file expects: the verdict
//! word, every finding code (each with its anchor, each event it names on a flagged row),
//! and one row per event. Event text that looks like markup must come out escaped, and no
//! page may load anything or run anything. The `ledger` binary is run as a user runs it for
//! exit codes and files; headless Chromium renders pages to check what a browser shows and
//! to leave screenshots in `target/report-screenshots/` for review. A 10,000-event chain is
//! rendered to check the page stays under 10 MiB (the time is printed, not asserted).

use ledger_client::cli::report::{self, Checked};
use ledger_core::{AnchorTrust, PublicKey, Scope};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn ledger(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(args)
        .output()
        .expect("run ledger")
}

fn journeys(dir: &str) -> Vec<PathBuf> {
    let dir = fixtures::data_dir().join("journeys").join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

fn build(path: &Path) -> fixtures::Built {
    let text = std::fs::read_to_string(path).expect("read journey");
    fixtures::build(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn render(checked: &Checked) -> String {
    checked.to_html().expect("render")
}

/// What every page must be, whatever it shows: self-contained, with nothing to run.
#[track_caller]
fn assert_self_contained(name: &str, html: &str) {
    let lower = html.to_ascii_lowercase();
    // Markup in event text is escaped, so these can only be real tags and attributes.
    for banned in [
        "<script", "<link", "<iframe", "<object", "<embed", "<img", " src=\"", "@import",
    ] {
        assert!(
            !lower.contains(banned),
            "{name}: the page contains {banned:?}"
        );
    }
    for (i, _) in lower.match_indices("href=\"") {
        let target = &lower[i + 6..];
        assert!(
            target.starts_with('#'),
            "{name}: a link leaves the page: {}",
            &target[..target.len().min(60)]
        );
    }
    for (i, _) in lower.match_indices("url(") {
        assert!(
            lower[i + 4..].starts_with('#'),
            "{name}: a CSS url() leaves the page"
        );
    }
}

/// Renders one journey and checks the page against the journey's expectations.
#[track_caller]
fn check_journey(path: &Path) {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("?")
        .to_owned();
    let built = build(path);
    let checked = match report::check(
        &built.bundle,
        Some(AnchorTrust::Key(built.anchor)),
        built.scope,
    ) {
        Ok(c) => c,
        Err(e) => {
            // Only a file that is not a bundle at all has no page; the journey must say so.
            assert_eq!(built.expect.verdict, "broken", "{name}: {e}");
            assert!(
                built
                    .expect
                    .findings
                    .iter()
                    .any(|f| f.code == "bundle.malformed"),
                "{name}: not a bundle ({e}) but the journey does not expect bundle.malformed"
            );
            assert!(
                e.to_string().starts_with("bundle.malformed: "),
                "{name}: {e}"
            );
            return;
        }
    };
    let html = render(&checked);
    assert_self_contained(&name, &html);
    let verdict = checked.verdict();
    let word = built.expect.verdict.to_ascii_uppercase();
    assert!(
        html.contains(&format!("<span class=\"word\">{word}</span>")),
        "{name}: the verdict {word} is not at the top"
    );
    for f in &built.expect.findings {
        assert!(
            html.contains(&f.code),
            "{name}: finding {} is not on the page",
            f.code
        );
    }
    assert_eq!(
        html.matches("<tr id=\"ev-").count(),
        verdict.n_events,
        "{name}: one row per event"
    );
    assert_eq!(verdict.order.len(), verdict.n_events, "{name}");
    for (k, f) in verdict.findings.iter().enumerate() {
        assert!(
            html.contains(&format!("<li id=\"f-{}\">", k + 1)),
            "{name}: finding {k} has no anchor"
        );
        for id in &f.events {
            if let Some(i) = verdict.order.iter().position(|o| o == id) {
                let row = format!("<tr id=\"ev-{}\" class=\"flag", i + 1);
                assert!(
                    html.contains(&row),
                    "{name}: row {} of {} is not flagged",
                    i + 1,
                    f.code
                );
                assert!(
                    html.contains(&format!("href=\"#ev-{}\"", i + 1)),
                    "{name}: no link to row {}",
                    i + 1
                );
            }
        }
    }
    assert!(
        html.contains(&built.anchor.fingerprint()),
        "{name}: the anchor fingerprint used is not shown"
    );
    assert!(!html.contains("anchor was NOT checked"), "{name}");
}

#[test]
fn every_valid_journey_renders_intact_with_one_row_per_event() {
    let files = journeys("valid");
    assert!(files.len() >= 10, "{} valid journeys", files.len());
    for path in files {
        check_journey(&path);
    }
}

#[test]
fn every_broken_journey_renders_its_verdict_and_every_finding() {
    let files = journeys("broken");
    assert!(files.len() >= 50, "{} broken journeys", files.len());
    for path in files {
        check_journey(&path);
    }
}

/// Event text that looks like markup, in a note, a printed name and a location.
const MARKUP_JOURNEY: &str = r#"
name = "markup-in-event-text"
description = "Free text fields holding HTML"
coi = "CHA999926ABC123"
start = "2026-03-02T08:00:00Z"

[sites]
clinic-a = "clinic"

[[step]]
id = "collect"
site = "clinic-a"
at = "+0h"
kind = "collection"
operator = "nurse.kim"
name = "<b>K. Kim</b> & \"co\""
creates = [{ unit = "APH-1", deadline = "+72h", temp = [2.0, 8.0] }]

[[step]]
id = "note"
site = "clinic-a"
at = "+10m"
kind = "note"
text = "<script>alert(1)</script>"

[[step]]
id = "store"
site = "clinic-a"
at = "+20m"
kind = "store"
unit = "APH-1"
location = "\"><img src=x onerror=alert(2)>"

[expect]
verdict = "intact"
status = "collected"
"#;

#[test]
fn event_text_is_escaped() {
    let built = fixtures::build(MARKUP_JOURNEY).expect("journey builds");
    let checked = report::check(
        &built.bundle,
        Some(AnchorTrust::Key(built.anchor)),
        built.scope,
    )
    .expect("bundle");
    let html = render(&checked);
    assert_self_contained("markup", &html);
    assert!(!html.contains("<script>alert(1)</script>"));
    assert!(
        html.contains("&#60;script&#62;alert(1)&#60;/script&#62;")
            || html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "the note is not shown escaped"
    );
    assert!(!html.contains("<b>K. Kim</b>"));
    assert!(!html.contains("<img src=x"));
    assert!(!html.contains("\"><img"));
}

#[test]
fn without_an_anchor_the_page_says_the_anchor_was_not_checked() {
    let built = build(&fixtures::data_dir().join("journeys/valid/standard.toml"));
    let checked = report::check(&built.bundle, None, built.scope).expect("bundle");
    let html = render(&checked);
    assert!(html.contains("The anchor was NOT checked."));
    assert!(html.contains("checked only against the certificates it carries"));
    // The bundle names its anchor; the page shows it as named, not as checked.
    assert!(html.contains("and the anchor key it names"));
    assert!(!html.contains("(SHA-256 fingerprint of the anchor public key)"));
    // The signatures are still checked: against the carried certificates the honest chain
    // passes, yet the page never reads intact (or green) without an anchor.
    assert_eq!(checked.verdict().kind.as_str(), "intact");
    assert!(html.contains("<span class=\"word\">UNVERIFIED</span>"));
    assert!(html.contains("class=\"verdict unverified\""));
    assert!(!html.contains("<span class=\"word\">INTACT</span>"));

    // A certificate the anchor never issued is a finding with the anchor, and without one
    // too: the bundle names its anchor, and the rogue certificate is not signed by it.
    let rogue = build(&fixtures::data_dir().join("journeys/broken/rogue-certificate.toml"));
    let anchored = render(
        &report::check(
            &rogue.bundle,
            Some(AnchorTrust::Key(rogue.anchor)),
            rogue.scope,
        )
        .expect("bundle"),
    );
    assert!(anchored.contains("integrity.bad_certificate"));
    let unanchored = render(&report::check(&rogue.bundle, None, rogue.scope).expect("bundle"));
    assert!(unanchored.contains("integrity.bad_certificate"));
    assert!(unanchored.contains("The anchor was NOT checked."));
    assert!(
        unanchored.contains(&rogue.anchor.fingerprint()),
        "the named anchor is shown"
    );

    // Breaks the bundle shows by itself are found without an anchor too.
    let bad = build(&fixtures::data_dir().join("journeys/broken/bad-signature.toml"));
    let unanchored = render(&report::check(&bad.bundle, None, bad.scope).expect("bundle"));
    assert!(unanchored.contains("integrity.bad_signature"));
    assert!(unanchored.contains("<span class=\"word\">BROKEN</span>"));
}

struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        let dir = Dir {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        let o = ledger(&["fixture", "anchor", "--out", &dir.path("anchor.pub")]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        dir
    }

    fn path(&self, name: &str) -> String {
        self.dir
            .path()
            .join(name)
            .to_str()
            .expect("utf8")
            .to_owned()
    }

    fn build(&self, journey: &str, out: &str) {
        let journey = fixtures::data_dir().join("journeys").join(journey);
        let o = ledger(&[
            "fixture",
            "build",
            journey.to_str().expect("utf8"),
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

    /// `ledger report BUNDLE --out HTML --anchor anchor.pub --whole-feeds`.
    fn report(&self, bundle: &str, html: &str) -> Output {
        ledger(&[
            "report",
            &self.path(bundle),
            "--out",
            &self.path(html),
            "--anchor",
            &self.path("anchor.pub"),
            "--whole-feeds",
        ])
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).expect("read report")
    }
}

#[test]
fn the_command_writes_the_page_and_exits_0_whatever_the_verdict() {
    let d = Dir::new();
    d.build("valid/standard.toml", "std.bundle");
    d.build("broken/excursion-undisposed.toml", "exc.bundle");
    d.build("broken/dropped-middle-event.toml", "gap.bundle");
    for (bundle, word) in [
        ("std.bundle", "INTACT"),
        ("exc.bundle", "BROKEN"),
        ("gap.bundle", "INCOMPLETE"),
    ] {
        let html = format!("{bundle}.html");
        let o = d.report(bundle, &html);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{bundle}: {stderr}");
        assert!(
            stderr.contains(&format!("wrote {}", d.path(&html))),
            "{stderr}"
        );
        assert!(
            d.read(&html)
                .contains(&format!("<span class=\"word\">{word}</span>")),
            "{bundle}"
        );
    }
    let help = ledger(&["report", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout)
        .contains("0 the report was written, whatever the verdict"));
}

#[test]
fn bad_input_gets_the_exit_codes_of_verify_bundle_and_no_page() {
    let d = Dir::new();
    std::fs::write(d.path("notes.txt"), b"this is not a bundle\n").expect("write");
    let o = d.report("notes.txt", "notes.html");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("notes.txt: bundle.malformed: the file is not a readable bundle"),
        "{stderr}"
    );
    assert!(!Path::new(&d.path("notes.html")).exists());
    // Same without an anchor.
    let o = ledger(&[
        "report",
        &d.path("notes.txt"),
        "--out",
        &d.path("notes.html"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!Path::new(&d.path("notes.html")).exists());

    let o = d.report("absent.bundle", "absent.html");
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("absent.bundle"));

    d.build("valid/standard.toml", "std.bundle");
    std::fs::write(d.path("bad-anchor"), b"xyz").expect("write");
    let o = ledger(&[
        "report",
        &d.path("std.bundle"),
        "--out",
        &d.path("x.html"),
        "--anchor",
        &d.path("bad-anchor"),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("64 hex digits"));
    assert_eq!(
        ledger(&["report", &d.path("std.bundle")]).status.code(),
        Some(2),
        "--out is required"
    );

    let o = d.report("std.bundle", "no-such-dir/x.html");
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot write"));
}

// ---- In a browser -------------------------------------------------------------------------

/// How long one headless Chromium run may take before the test fails.
const CHROMIUM_DEADLINE: Duration = Duration::from_secs(120);

/// Runs headless Chromium on `args` plus the page, and returns its standard output. Fails
/// (never skips) when Chromium is missing.
fn chromium(profile: &Path, page: &Path, args: &[String]) -> String {
    let mut child = match Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a hung run can be ended with every helper it started.
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("chromium is not installed: run scripts/setup (it installs Debian's chromium)")
        }
        Err(e) => panic!("cannot start chromium: {e}"),
    };
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        let _ = tx.send(out);
    });
    let err_reader = std::thread::spawn(move || {
        let mut err = Vec::new();
        let _ = stderr.read_to_end(&mut err);
        err
    });
    let out = match rx.recv_timeout(CHROMIUM_DEADLINE) {
        Ok(out) => out,
        Err(_) => {
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.wait();
            panic!(
                "chromium did not finish rendering {} within {CHROMIUM_DEADLINE:?}",
                page.display()
            );
        }
    };
    let status = child.wait().expect("wait for chromium");
    let err = err_reader.join().unwrap_or_default();
    assert!(
        status.success(),
        "chromium failed ({status}): {}",
        String::from_utf8_lossy(&err)
    );
    String::from_utf8_lossy(&out).into_owned()
}

fn screenshot_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is <target>/tmp.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .to_owned();
    let dir = target.join("report-screenshots");
    std::fs::create_dir_all(&dir).expect("create screenshot dir");
    dir
}

/// Renders `bundle_bytes` to a page, then checks what Chromium shows of it and writes a
/// screenshot `target/report-screenshots/<name>.png`. Returns the rendered DOM.
fn check_in_browser(
    name: &str,
    bundle: &[u8],
    anchor: &PublicKey,
    scope: Scope,
    expect: &[&str],
) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let page = dir.path().join(format!("{name}.html"));
    let checked = report::check(bundle, Some(AnchorTrust::Key(*anchor)), scope).expect("bundle");
    std::fs::write(&page, render(&checked)).expect("write page");
    let dom = chromium(
        &dir.path().join("profile-dom"),
        &page,
        &["--dump-dom".to_owned()],
    );
    for text in expect {
        assert!(
            dom.contains(text),
            "{name}: the rendered page does not show {text:?}"
        );
    }
    assert!(
        !dom.to_ascii_lowercase().contains("<script"),
        "{name}: a script element in the DOM"
    );
    let png = screenshot_dir().join(format!("{name}.png"));
    let _ = std::fs::remove_file(&png);
    chromium(
        &dir.path().join("profile-shot"),
        &page,
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1400,2000".to_owned(),
        ],
    );
    let bytes = std::fs::read(&png)
        .unwrap_or_else(|e| panic!("{name}: no screenshot at {}: {e}", png.display()));
    assert!(
        bytes.len() > 10_000 && bytes.starts_with(b"\x89PNG"),
        "{name}: {} is not a PNG of a page ({} bytes)",
        png.display(),
        bytes.len()
    );
    println!("{name}: screenshot {}", png.display());
    dom
}

#[test]
fn chromium_shows_the_verdict_and_every_finding_of_a_broken_chain() {
    let built = build(&fixtures::data_dir().join("journeys/broken/excursion-undisposed.toml"));
    let codes: Vec<&str> = built
        .expect
        .findings
        .iter()
        .map(|f| f.code.as_str())
        .collect();
    let mut expect = vec!["BROKEN", "the evidence proves a break in the chain"];
    expect.extend(&codes);
    check_in_browser(
        "broken-excursion-undisposed",
        &built.bundle,
        &built.anchor,
        built.scope,
        &expect,
    );

    let built = build(
        &fixtures::data_dir().join("journeys/broken/wrong-recipient-duplicated-reordered.toml"),
    );
    let mut expect = vec!["BROKEN"];
    expect.extend(built.expect.findings.iter().map(|f| f.code.as_str()));
    check_in_browser(
        "broken-wrong-recipient",
        &built.bundle,
        &built.anchor,
        built.scope,
        &expect,
    );
}

#[test]
fn chromium_shows_an_intact_chain_and_escaped_event_text() {
    let built = build(&fixtures::data_dir().join("journeys/valid/excursion-disposed.toml"));
    check_in_browser(
        "intact-excursion-disposed",
        &built.bundle,
        &built.anchor,
        built.scope,
        &["INTACT", "Findings (0)", "EXCURSION", "accepted"],
    );

    let built = fixtures::build(MARKUP_JOURNEY).expect("journey builds");
    // The DOM serializer escapes text again, so the note shows as text, not as an element.
    check_in_browser(
        "markup-in-event-text",
        &built.bundle,
        &built.anchor,
        built.scope,
        &["INTACT", "&lt;script&gt;alert(1)&lt;/script&gt;"],
    );
}

// ---- Size ---------------------------------------------------------------------------------

#[test]
fn a_10000_event_chain_renders_under_10_mib() {
    const PAGE_BYTES_MAX: u64 = 10 * 1024 * 1024;
    let d = Dir::new();
    let synth = fixtures::synth::synth(10_000);
    std::fs::write(d.path("synth.bundle"), synth.bundle()).expect("write bundle");
    let t = Instant::now();
    let o = d.report("synth.bundle", "synth.html");
    let elapsed = t.elapsed();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let size = std::fs::metadata(d.path("synth.html")).expect("page").len();
    println!(
        "10,000-event report: {:.2} s (this build's `ledger`, including reading and verifying), {:.2} MiB",
        elapsed.as_secs_f64(),
        size as f64 / 1_048_576.0
    );
    assert!(size < PAGE_BYTES_MAX, "the page is {size} bytes");
    let html = d.read("synth.html");
    assert_eq!(html.matches("<tr id=\"ev-").count(), 10_000);
    assert!(html.contains("<span class=\"word\">INTACT</span>"));
}
