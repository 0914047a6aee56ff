//! The offline tools on a 10,000-event chain, against the core verifier in the same run:
//!
//! - `ledger verify-bundle FILE --anchor KEY` as a process (read, decode, verify, print)
//!   against `verify_bundle` on the same bytes in this process: the CLI must add nothing
//!   heavy (target: within 1.2x);
//! - `ledger report FILE --anchor KEY --out x.html`: under 2 s and a file under 10 MiB.
//!
//! Run: `cargo bench -p ledger-client --bench cli` (`-- --quick` for 3 rounds instead of 5).
//! Each figure is the best of the rounds. The bundle is the synthetic journey of
//! `fixtures::synth`, signed with TEST-ONLY keys.

use ledger_core::bundle::{verify_bundle, BundleOptions};
use ledger_core::VerdictKind;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const EVENTS: usize = 10_000;

fn best<F: FnMut() -> Duration>(rounds: usize, mut f: F) -> Duration {
    (0..rounds).map(|_| f()).min().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn run(bin: &str, args: &[&str]) -> Duration {
    let t = Instant::now();
    let out = Command::new(bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{bin}: {e}"));
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "{bin} {args:?}: exit {:?}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 3 } else { 5 };
    let bin = env!("CARGO_BIN_EXE_ledger");
    let dir = tempfile::tempdir().expect("temp dir");
    let synth = fixtures::synth::synth(EVENTS);
    let bytes = synth.bundle();
    let bundle = dir.path().join("chain.bundle");
    let anchor = dir.path().join("anchor.pub");
    let report = dir.path().join("report.html");
    std::fs::write(&bundle, &bytes).expect("write bundle");
    std::fs::write(&anchor, format!("{}\n", synth.anchor.to_hex())).expect("write anchor");

    let opts = BundleOptions::default();
    let core = best(rounds, || {
        let t = Instant::now();
        let r = verify_bundle(&bytes, &synth.anchor, &opts);
        let took = t.elapsed();
        assert_eq!(
            r.verdict.kind,
            VerdictKind::Intact,
            "{:?}",
            r.verdict.findings
        );
        took
    });
    let cli = best(rounds, || {
        run(
            bin,
            &["verify-bundle", path(&bundle), "--anchor", path(&anchor)],
        )
    });
    let cli_json = best(rounds, || {
        run(
            bin,
            &[
                "verify-bundle",
                path(&bundle),
                "--anchor",
                path(&anchor),
                "--output",
                "json",
            ],
        )
    });
    let rep = best(rounds, || {
        run(
            bin,
            &[
                "report",
                path(&bundle),
                "--anchor",
                path(&anchor),
                "--out",
                path(&report),
            ],
        )
    });
    let html_bytes = std::fs::metadata(&report).expect("report written").len();

    println!(
        "offline tools, {EVENTS} events ({:.1} MiB bundle), best of {rounds}",
        bytes.len() as f64 / 1048576.0
    );
    println!(
        "  core verify_bundle (in process)        {:>8.1} ms",
        ms(core)
    );
    println!(
        "  ledger verify-bundle (process)         {:>8.1} ms   ratio {:.2}  (target <= 1.20)",
        ms(cli),
        cli.as_secs_f64() / core.as_secs_f64()
    );
    println!(
        "  ledger verify-bundle --output json     {:>8.1} ms   ratio {:.2}  (target <= 1.20)",
        ms(cli_json),
        cli_json.as_secs_f64() / core.as_secs_f64()
    );
    println!(
        "  ledger report                          {:>8.1} ms   (target < 2000 ms), {:.2} MiB (target < 10 MiB)",
        ms(rep),
        html_bytes as f64 / 1048576.0
    );
}
