//! The `ledger` command line.

pub mod exit;
mod render;

use clap::{Parser, Subcommand, ValueEnum};
use exit::CliError;
use ledger_core::bundle::{verify_bundle, BundleOptions};
use ledger_core::{NetworkId, Policy, PublicKey, Scope};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "ledger", version, about = "Chain-of-custody ledger for patient-specific therapies", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Output {
    /// A readable table.
    Text,
    /// One JSON document on stdout.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Verify an exported bundle offline: no node, no network, only the anchor key.
    ///
    /// Exit codes: 0 intact, 1 broken, 4 incomplete, 2 usage error, 3 file unreadable.
    VerifyBundle {
        /// The bundle file (from `ledger export` or `ledger fixture build`).
        bundle: PathBuf,
        /// File holding the network's anchor public key (64 hex digits).
        #[arg(long)]
        anchor: PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
        /// Judge feed gaps too: only for bundles whose feeds hold nothing but this chain
        /// (fixtures). A node's export holds each site's feed only in part.
        #[arg(long)]
        whole_feeds: bool,
    },
    /// Fixture tools: TEST-ONLY keys, for tests, benchmarks and demos.
    #[command(subcommand)]
    Fixture(FixtureCommand),
}

#[derive(Debug, Subcommand)]
enum FixtureCommand {
    /// Build a journey file into a signed bundle (TEST-ONLY keys).
    Build {
        /// A journey file (fixtures/journeys/...).
        journey: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write the TEST-ONLY anchor public key of a fixture network.
    Anchor {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "fixture-net")]
        network: String,
    },
    /// Write a long valid synthetic journey as a bundle (for benchmarks).
    Synth {
        #[arg(long)]
        events: usize,
        #[arg(long)]
        out: PathBuf,
    },
}

/// Runs the CLI and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // clap prints help/version with exit 0 and usage errors with exit 2.
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("ledger: {err}");
            exit::for_error(&err)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::VerifyBundle {
            bundle,
            anchor,
            output,
            whole_feeds,
        } => {
            let anchor = read_anchor(&anchor)?;
            let bytes = read(&bundle)?;
            let opts = BundleOptions {
                policy: Policy::default(),
                scope: if whole_feeds {
                    Scope::WholeFeeds
                } else {
                    Scope::CoiExport
                },
            };
            let report = verify_bundle(&bytes, &anchor, &opts);
            match output {
                Output::Json => println!("{}", render::verdict_json(&report)),
                Output::Text => print!("{}", render::verdict_text(&report, &anchor)),
            }
            Ok(exit::for_verdict(report.verdict.kind))
        }
        Command::Fixture(FixtureCommand::Build { journey, out }) => {
            let text = std::fs::read_to_string(&journey).map_err(|e| unreadable(&journey, e))?;
            let built = fixtures::build(&text)
                .map_err(|e| CliError::Usage(format!("{}: {e}", journey.display())))?;
            write(&out, &built.bundle)?;
            eprintln!(
                "wrote {} ({} events, chain {}, TEST-ONLY keys)",
                out.display(),
                built.events.len(),
                built.coi
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Fixture(FixtureCommand::Anchor { out, network }) => {
            let network = NetworkId::parse(&network).map_err(|e| CliError::Usage(e.to_string()))?;
            let anchor = fixtures::keys::anchor(&network).public();
            write(&out, format!("{}\n", anchor.to_hex()).as_bytes())?;
            eprintln!(
                "wrote {} (TEST-ONLY anchor of network {network}, fingerprint {})",
                out.display(),
                anchor.fingerprint()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Fixture(FixtureCommand::Synth { events, out }) => {
            if events == 0 || events > ledger_core::bundle::BUNDLE_EVENTS_MAX {
                return Err(CliError::Usage(format!(
                    "--events must be between 1 and {}",
                    ledger_core::bundle::BUNDLE_EVENTS_MAX
                )));
            }
            let synth = fixtures::synth::synth(events);
            write(&out, &synth.bundle())?;
            eprintln!(
                "wrote {} ({events} events, chain {}, TEST-ONLY keys)",
                out.display(),
                synth.coi
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn unreadable(path: &Path, err: std::io::Error) -> CliError {
    CliError::Unreadable {
        path: path.display().to_string(),
        reason: err.to_string(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| unreadable(path, e))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    std::fs::write(path, bytes).map_err(|e| CliError::Unwritable {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Reads an anchor key file: 64 hex digits, surrounding white space ignored.
fn read_anchor(path: &Path) -> Result<PublicKey, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| unreadable(path, e))?;
    parse_anchor(text.trim()).ok_or_else(|| CliError::Usage(format!("{}: an anchor key file must hold the anchor's public key as 64 hex digits (see `ledger fixture anchor`)", path.display())))
}

fn parse_anchor(text: &str) -> Option<PublicKey> {
    let id = ledger_core::EventId::from_hex(text).ok()?;
    Some(PublicKey(id.0))
}
