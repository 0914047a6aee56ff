//! The `ledger` command line: offline bundle verification and fixture tools (no node), and
//! the commands that talk to a node through [`crate::client`] ([`remote`]).

pub mod epcis;
pub mod exit;
mod kpi;
pub mod network;
mod out;
mod progress;
mod remote;
mod render;
mod replace_file;
pub mod replay;
pub mod report;
pub mod step_file;

use clap::{Args, Parser, Subcommand, ValueEnum};
use exit::CliError;
use ledger_core::bundle::{verify_bundle_trusting, AnchorTrust, BundleOptions};
use ledger_core::{Coi, Fingerprint, NetworkId, Policy, PublicKey, Scope, Status};
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

/// Where the node is and how long a call may take.
#[derive(Debug, Args)]
struct NodeArgs {
    /// The node's gRPC address.
    #[arg(
        long,
        env = "LEDGER_NODE",
        value_name = "URL",
        default_value = "http://127.0.0.1:50051"
    )]
    node: String,
    /// Seconds each call may take. This bounds each attempt: `append` and `replay` try an
    /// append again (a few times, with a growing pause) when it times out or the node is
    /// unreachable, so they can take several times this before giving up.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
    /// PEM file of the CA that signed the node's TLS certificate (for an https:// node).
    #[arg(long, env = "LEDGER_CA_FILE", value_name = "FILE")]
    ca_file: Option<PathBuf>,
}

/// The bearer token this command acts with.
#[derive(Debug, Args)]
struct TokenArgs {
    /// File holding the site's bearer token (or set LEDGER_TOKEN to the token itself).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The token itself. Hidden: a token on the command line shows in the process list, so
    /// it comes from LEDGER_TOKEN or --token-file.
    #[arg(long, env = "LEDGER_TOKEN", hide = true, hide_env_values = true, value_parser = parse_token)]
    token: Option<Token>,
}

/// A bearer token from the environment; `Debug` never shows it.
#[derive(Clone)]
struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

fn parse_site_node(text: &str) -> Result<(String, String), String> {
    let (site, url) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not SITE=URL"))?;
    ledger_core::SiteId::parse(site).map_err(|e| e.to_string())?;
    if url.is_empty() {
        return Err(format!("{text:?}: the URL is empty"));
    }
    Ok((site.to_owned(), url.to_owned()))
}

/// `--anchor`: the anchor's public key in a file, or its fingerprint as `ledger network
/// info` prints it (`sha256:` and 64 hex digits).
#[derive(Debug, Clone)]
pub enum AnchorArg {
    File(PathBuf),
    Fingerprint(Fingerprint),
}

impl AnchorArg {
    /// Reads the key file, if it is one.
    ///
    /// # Errors
    /// [`CliError::Unreadable`] or [`CliError::Usage`] when the file holds no key.
    pub fn resolve(&self) -> Result<AnchorTrust, CliError> {
        match self {
            AnchorArg::File(path) => read_anchor(path).map(AnchorTrust::Key),
            AnchorArg::Fingerprint(fp) => Ok(AnchorTrust::Fingerprint(*fp)),
        }
    }
}

fn parse_anchor_arg(text: &str) -> Result<AnchorArg, String> {
    let prefix = Fingerprint::PREFIX;
    if text
        .get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
    {
        return Fingerprint::parse(text).map(AnchorArg::Fingerprint).ok_or_else(|| {
            format!("a fingerprint is {prefix} and 64 hex digits, as `ledger network info` prints it")
        });
    }
    if text.is_empty() {
        return Err("give a key file or a fingerprint (sha256:...)".to_owned());
    }
    Ok(AnchorArg::File(PathBuf::from(text)))
}

fn parse_network_id(text: &str) -> Result<NetworkId, String> {
    NetworkId::parse(text).map_err(|e| e.to_string())
}

fn parse_site(text: &str) -> Result<ledger_core::SiteId, String> {
    ledger_core::SiteId::parse(text).map_err(|e| e.to_string())
}

fn parse_fingerprint(text: &str) -> Result<Fingerprint, String> {
    Fingerprint::parse(text).ok_or_else(|| {
        format!(
            "a fingerprint is {} and 64 hex digits, as `ledger network info` prints it",
            Fingerprint::PREFIX
        )
    })
}

fn parse_token(text: &str) -> Result<Token, String> {
    Ok(Token(text.trim().to_owned()))
}

fn parse_coi(text: &str) -> Result<Coi, String> {
    Coi::parse(text).map_err(|e| e.to_string())
}

fn parse_time(text: &str) -> Result<ledger_core::Timestamp, String> {
    ledger_core::Timestamp::parse_rfc3339(text)
        .ok_or_else(|| "expected an RFC 3339 UTC time like 2026-03-02T08:00:00Z".to_owned())
}

/// How `ledger chains` sorts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ChainSortArg {
    Coi,
    Deadline,
}

fn parse_status(text: &str) -> Result<Status, String> {
    Status::parse(text).ok_or_else(|| {
        "expected one of: empty, collected, in_transit, in_manufacturing, awaiting_qc, \
         released, administered, destroyed"
            .to_owned()
    })
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Append one custody step to the node, as the step's site.
    ///
    /// STEP.toml holds one step like a journey's [[step]], with top-level keys, plus `coi`
    /// and `at` (RFC 3339 UTC); `operator` and `name` are required. Exit codes: 0 appended,
    /// 2 refused (the node's message is printed) or bad file, 3 node unreachable.
    Append {
        step: PathBuf,
        #[command(flatten)]
        node: NodeArgs,
        #[command(flatten)]
        token: TokenArgs,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// List a chain's events in causal order.
    Chain {
        #[arg(value_parser = parse_coi)]
        coi: Coi,
        #[command(flatten)]
        node: NodeArgs,
        #[command(flatten)]
        token: TokenArgs,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Verify a chain as the node holds it.
    ///
    /// Exit codes: 0 intact, 1 broken, 4 incomplete, 2 refused, 3 node unreachable.
    Verify {
        #[arg(value_parser = parse_coi)]
        coi: Coi,
        #[command(flatten)]
        node: NodeArgs,
        #[command(flatten)]
        token: TokenArgs,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Export a chain's signed bundle, to verify offline with `ledger verify-bundle`.
    Export {
        #[arg(value_parser = parse_coi)]
        coi: Coi,
        /// Where to write the bundle. A regular file already there is replaced, once the
        /// whole bundle arrived; a directory, device, fifo or socket is refused before
        /// anything is fetched.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        node: NodeArgs,
        #[command(flatten)]
        token: TokenArgs,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Print a chain's events, then each new one as the node stores it (Ctrl-C ends).
    Watch {
        #[arg(value_parser = parse_coi)]
        coi: Coi,
        /// Start after this many events of the chain.
        #[arg(long, value_name = "N", default_value_t = 0)]
        from: u64,
        #[command(flatten)]
        node: NodeArgs,
        #[command(flatten)]
        token: TokenArgs,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// List the node's chains with status, custodians and the nearest stability deadline.
    Chains {
        /// Only chains with this status.
        #[arg(long, value_parser = parse_status)]
        status: Option<Status>,
        /// At most this many chains (the node caps it at 1000).
        #[arg(long, value_name = "N")]
        page_size: Option<u16>,
        /// Continue from a previous page.
        #[arg(long, value_name = "TOKEN")]
        page_token: Option<String>,
        /// `deadline`: most urgent first (overdue, then least time left); `coi`: by COI.
        #[arg(long, value_enum, default_value = "coi")]
        sort: ChainSortArg,
        /// Only chains with a live unit held by this site, or in transit to or from it.
        #[arg(long, value_name = "SITE", value_parser = parse_site)]
        site: Option<ledger_core::SiteId>,
        /// Only chains with an open alert or finding.
        #[arg(long)]
        needs_action: bool,
        /// Only chains with a live unit (not administered, consumed or destroyed).
        #[arg(long)]
        live: bool,
        #[command(flatten)]
        node: NodeArgs,
        #[command(flatten)]
        token: TokenArgs,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// List the node's open alerts, most urgent first; `--watch` then prints each raise and
    /// clear as it happens (Ctrl-C ends).
    Alerts {
        #[arg(long)]
        watch: bool,
        /// Also the alerts cleared recently.
        #[arg(long, conflicts_with = "watch")]
        all: bool,
        #[command(flatten)]
        node: NodeArgs,
        #[command(flatten)]
        token: TokenArgs,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Partner KPIs over a period from the node's verified chains: vein-to-vein time, dwell
    /// per site, handoff time per lane, late handoffs, excursion rates, findings per site.
    ///
    /// The period is [--from, --to): --from 2026-03-01 --to 2026-04-01 is March. Every
    /// figure is counted at the scan time of the event that closes it. Broken chains are
    /// listed and left out of every time and rate figure. Exit codes: 0 printed, 2 bad
    /// period or refused, 3 node unreachable.
    Kpi {
        /// The first instant counted: a UTC day (2026-03-01, from its midnight) or an RFC
        /// 3339 UTC time.
        #[arg(long, value_name = "T", value_parser = kpi::parse_instant)]
        from: ledger_core::Timestamp,
        /// The first instant not counted (excluded), after --from; a day or a time as for
        /// --from.
        #[arg(long, value_name = "T", value_parser = kpi::parse_instant)]
        to: ledger_core::Timestamp,
        #[command(flatten)]
        node: NodeArgs,
        #[command(flatten)]
        token: TokenArgs,
        /// `csv`: one figure a row (scope,site,from_site,to_site,metric,value).
        #[arg(long, value_enum, default_value = "text")]
        output: kpi::KpiOutput,
    },
    /// Print every event the node stores, across all chains, in store order, then each new
    /// one (Ctrl-C ends). Resume with `--from` the last position printed.
    Subscribe {
        /// Start after this store position.
        #[arg(long, value_name = "N", default_value_t = 0)]
        from: u64,
        /// Only events authored by these sites.
        #[arg(long = "site", value_name = "SITE", value_parser = parse_site)]
        sites: Vec<ledger_core::SiteId>,
        /// Only events of these body kinds (collection, dispatch, receipt, ...).
        #[arg(long = "kind", value_name = "KIND")]
        kinds: Vec<String>,
        /// Only events of these chains.
        #[arg(long = "coi", value_name = "COI", value_parser = parse_coi)]
        cois: Vec<Coi>,
        #[command(flatten)]
        node: NodeArgs,
        #[command(flatten)]
        token: TokenArgs,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Describe the node: network, sites it signs for, feed heads, version.
    NodeInfo {
        #[command(flatten)]
        node: NodeArgs,
        #[command(flatten)]
        token: TokenArgs,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Append a valid fixture journey's steps to the node, each as its site, in order.
    ///
    /// Each site's token is read from DIR/<site>.token. Replaying again is answered with
    /// the original receipts (request ids derive from the journey name and step id).
    Replay {
        journey: PathBuf,
        /// Directory holding one <site>.token file per site of the journey.
        #[arg(long, value_name = "DIR")]
        tokens: PathBuf,
        /// Count the journey's offsets from this RFC 3339 UTC time instead of its `start`
        /// (to move a journey whose times are in the node's future into the past).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        start: Option<ledger_core::Timestamp>,
        /// Send a site's steps to another node than --node, as SITE=URL (repeat): for sites
        /// served by different nodes that replicate to each other. Before a step goes to a
        /// node other than the previous step's, the replay waits (up to --timeout) until
        /// that node holds the chain's earlier events.
        #[arg(long = "site-node", value_name = "SITE=URL", value_parser = parse_site_node)]
        site_nodes: Vec<(String, String)>,
        #[command(flatten)]
        node: NodeArgs,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Verify an exported bundle offline: no node, no network, only the anchor key.
    ///
    /// Exit codes: 0 intact, 1 broken, 4 incomplete, 5 cannot be checked against the anchor, 2 usage error, 3 file unreadable.
    VerifyBundle {
        /// The bundle file (from `ledger export` or `ledger fixture build`).
        bundle: PathBuf,
        /// The network's anchor: a file holding its public key (64 hex digits), or its
        /// fingerprint as `ledger network info` prints it (sha256:...). Get it from the
        /// network's operator by a channel other than the one the bundle came by.
        #[arg(long, value_name = "KEY_FILE|FINGERPRINT", value_parser = parse_anchor_arg)]
        anchor: AnchorArg,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
        /// Judge feed gaps too: only for bundles whose feeds hold nothing but this chain
        /// (fixtures). A node's export holds each site's feed only in part.
        #[arg(long)]
        whole_feeds: bool,
    },
    /// Render an exported bundle as one self-contained HTML report for people.
    ///
    /// The page shows the verdict in words, a timeline of the journey across sites, every
    /// event in causal order with the findings that concern it, and the certificates,
    /// revocations and checkpoints. It has no script and loads nothing, and prints to PDF.
    /// Without --anchor, signatures are checked only against the certificates the bundle
    /// carries, and the page says the anchor was NOT checked.
    ///
    /// Exit codes: 0 the report was written, whatever the verdict (it is in the report; use
    /// `ledger verify-bundle` for an exit code per verdict), 1 the file is not a bundle
    /// (nothing written), 2 usage error, 3 file unreadable or report unwritable.
    Report {
        /// The bundle file (from `ledger export` or `ledger fixture build`).
        bundle: PathBuf,
        /// Where to write the HTML report.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The network's anchor: a key file (64 hex digits) or its fingerprint (sha256:...).
        #[arg(long, value_name = "KEY_FILE|FINGERPRINT", value_parser = parse_anchor_arg)]
        anchor: Option<AnchorArg>,
        /// Judge feed gaps too: only for bundles whose feeds hold nothing but this chain
        /// (fixtures). A node's export holds each site's feed only in part.
        #[arg(long)]
        whole_feeds: bool,
        /// `json`: print what was written (file, size, verdict) as one JSON document.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Write an exported bundle's chain as a GS1 EPCIS 2.0 JSON-LD document.
    ///
    /// One EPCIS event per ledger event (object, aggregation or transformation event with
    /// its CBV business step and disposition; a correction is an error declaration on the
    /// event it corrects); ledger fields go in `ledger:` extensions. The same bundle always
    /// gives the same bytes (creationDate is the bundle's export time). Without --anchor the
    /// bundle is rendered as it is, unverified.
    ///
    /// Exit codes: 0 written, 1 the file is not a bundle or --anchor finds the chain broken,
    /// 4 --anchor finds it incomplete, 5 it cannot be checked against that anchor (nothing
    /// written for 1, 4 and 5), 2 usage error, 3 file unreadable or unwritable.
    Epcis {
        /// The bundle file (from `ledger export` or `ledger fixture build`).
        bundle: PathBuf,
        /// Where to write the document (JSON-LD); standard output without it.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Verify the bundle against this anchor (a key file of 64 hex digits, or the
        /// fingerprint sha256:...) first and write nothing unless the chain is intact.
        #[arg(long, value_name = "KEY_FILE|FINGERPRINT", value_parser = parse_anchor_arg)]
        anchor: Option<AnchorArg>,
        /// `json`: with --out, print what was written as one JSON document (the EPCIS
        /// document itself is JSON either way); errors and verdicts are JSON too.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Create and run a network's trust: the anchor, site keys and certificates, node
    /// directories, key rotation and revocation.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Fixture tools: TEST-ONLY keys, for tests, benchmarks and demos.
    #[command(subcommand)]
    Fixture(FixtureCommand),
}

#[derive(Debug, Subcommand)]
enum NetworkCommand {
    /// Create a network for real use in DIR: an anchor key, a key and certificate per site,
    /// and one node directory per site (node.toml, keys, tokens).
    ///
    /// DIR/anchor/anchor.key is the anchor's secret: move it offline (only rotate-key and
    /// revoke need it). DIR/trust/ is public: give it, or the anchor fingerprint printed
    /// here, to auditors and regulators. DIR/nodes/SITE/ goes to the machine of that site's
    /// node. Exit codes: 0 created, 2 bad arguments or DIR is not empty, 3 a file
    /// could not be written.
    Init {
        dir: PathBuf,
        /// The sites, as SITE:ROLE separated by commas; roles: clinic, depot, manufacturer,
        /// lab. Example: clinic-a:clinic,depot-1:depot,mfg-1:manufacturer
        #[arg(long, value_name = "SITE:ROLE,...", value_parser = network::parse_sites)]
        sites: network::SiteList,
        /// The network's id (lower case letters, digits and dashes); default: DIR's name.
        #[arg(long, value_name = "ID", value_parser = parse_network_id)]
        network: Option<NetworkId>,
        /// How long the certificates are valid.
        #[arg(long, value_name = "DAYS", default_value_t = 730, value_parser = clap::value_parser!(u32).range(1..=3650))]
        valid_days: u32,
        /// The first node's gRPC port on 127.0.0.1; the next sites get the next ports and
        /// metrics ports are 1000 above.
        #[arg(long, value_name = "PORT", default_value_t = 50051)]
        base_port: u16,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Show a network: its id, the anchor's fingerprint (what `verify-bundle --anchor`
    /// takes), every certificate and revocation, each checked against the anchor.
    ///
    /// DIR is the directory `init` made, or a node's network directory.
    Info {
        dir: PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Give SITE a new key: a new certificate from now, written to DIR/trust and to every
    /// node directory, and the key into the site's node directory (the old key is kept as
    /// *.retired). Restart the nodes to use it; events signed with the old key stay valid.
    RotateKey {
        /// The site, as its certificate names it (e.g. clinic-a).
        #[arg(value_parser = parse_site)]
        site: ledger_core::SiteId,
        /// The directory `ledger network init` made.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The anchor's secret key file; default DIR/anchor/anchor.key.
        #[arg(long, value_name = "FILE")]
        anchor_key: Option<PathBuf>,
        /// How long the new certificate is valid.
        #[arg(long, value_name = "DAYS", default_value_t = 730, value_parser = clap::value_parser!(u32).range(1..=3650))]
        valid_days: u32,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Give NAME (a site, or auditor, regulator, admin) a new bearer token on one node: a
    /// fresh random token replaces DIR/tokens/NAME.token in one rename (mode 0600). The node
    /// accepts it, and stops accepting the old one, when it reads its tokens again (SIGHUP)
    /// or restarts. The token is not printed: give the file's content to NAME's system.
    /// Exit codes: 0 written, 2 bad arguments or DIR holds no tokens/, 3 the file could not
    /// be written.
    RotateToken {
        /// Whose token: a site id (writes as that site), or auditor, regulator, admin.
        #[arg(value_parser = parse_site)]
        name: ledger_core::SiteId,
        /// A node's network directory, the one holding tokens/ (net/nodes/SITE/network
        /// for a network `init` made; ledger-data/network for a development node).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Revoke a key of SITE from a time on: events it signed before stay valid, nothing it
    /// signs from then on is trusted, and a node refuses to sign with it.
    Revoke {
        /// The site, as its certificate names it (e.g. clinic-a).
        #[arg(value_parser = parse_site)]
        site: ledger_core::SiteId,
        /// The directory `ledger network init` made.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// From when (RFC 3339 UTC, e.g. 2026-03-02T08:00:00Z).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        from: ledger_core::Timestamp,
        /// Which key (its fingerprint, sha256:...); needed when the site has several.
        #[arg(long, value_name = "FINGERPRINT", value_parser = parse_fingerprint)]
        key: Option<Fingerprint>,
        /// Why, in words (kept in the record and shown to verifiers).
        #[arg(long)]
        reason: String,
        /// The anchor's secret key file; default DIR/anchor/anchor.key.
        #[arg(long, value_name = "FILE")]
        anchor_key: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
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
            if err.use_stderr() && args_want_json() {
                // The command never parsed, so ask the arguments themselves: a script that
                // asked for JSON gets its usage error as JSON too.
                let detail = err.to_string();
                let first = detail.lines().next().unwrap_or_default();
                out::println(serde_json::json!({
                    "error": first.trim_start_matches("error: "),
                    "exit_code": exit::USAGE,
                }));
                return ExitCode::from(exit::USAGE);
            }
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    let json = wants_json(&cli.command);
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            let code = exit::code_for_error(&err);
            if json {
                // A script that asked for JSON gets its error as JSON too, on stdout where
                // it reads answers; the exit code says it is an error.
                out::println(serde_json::json!({
                    "error": err.to_string(),
                    "exit_code": code,
                }));
            } else {
                out::eprintln(format_args!("ledger: {err}"));
            }
            ExitCode::from(code)
        }
    }
}

/// Whether the raw arguments ask for `--output json` (for errors before they parse).
fn args_want_json() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--output=json")
        || args
            .windows(2)
            .any(|w| w[0] == "--output" && w[1] == "json")
}

/// Whether the command asked for `--output json`.
fn wants_json(command: &Command) -> bool {
    let output = match command {
        Command::Append { output, .. }
        | Command::Chain { output, .. }
        | Command::Verify { output, .. }
        | Command::Export { output, .. }
        | Command::Watch { output, .. }
        | Command::Chains { output, .. }
        | Command::Alerts { output, .. }
        | Command::Subscribe { output, .. }
        | Command::NodeInfo { output, .. }
        | Command::Replay { output, .. }
        | Command::VerifyBundle { output, .. }
        | Command::Report { output, .. }
        | Command::Epcis { output, .. } => *output,
        Command::Kpi { output, .. } => {
            return *output == kpi::KpiOutput::Json;
        }
        Command::Network(
            NetworkCommand::Init { output, .. }
            | NetworkCommand::Info { output, .. }
            | NetworkCommand::RotateKey { output, .. }
            | NetworkCommand::RotateToken { output, .. }
            | NetworkCommand::Revoke { output, .. },
        ) => *output,
        _ => Output::Text,
    };
    output == Output::Json
}

fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Append {
            step,
            node,
            token,
            output,
        } => remote::block_on(remote::append(&step, &node, &token, output)),
        Command::Chain {
            coi,
            node,
            token,
            output,
        } => remote::block_on(remote::chain(&coi, &node, &token, output)),
        Command::Verify {
            coi,
            node,
            token,
            output,
        } => remote::block_on(remote::verify(&coi, &node, &token, output)),
        Command::Export {
            coi,
            out,
            node,
            token,
            output,
        } => remote::block_on(remote::export(&coi, &out, &node, &token, output)),
        Command::Watch {
            coi,
            from,
            node,
            token,
            output,
        } => remote::block_on(remote::watch(&coi, from, &node, &token, output)),
        Command::Chains {
            status,
            page_size,
            page_token,
            sort,
            site,
            needs_action,
            live,
            node,
            token,
            output,
        } => {
            let query = crate::client::ChainsQuery {
                status,
                page_size,
                page_token: page_token.and_then(crate::client::PageToken::new),
                by_deadline: sort == ChainSortArg::Deadline,
                site,
                needs_action,
                live_only: live,
            };
            remote::block_on(remote::chains(query, &node, &token, output))
        }
        Command::Alerts {
            watch,
            all,
            node,
            token,
            output,
        } => remote::block_on(remote::alerts(watch, all, &node, &token, output)),
        Command::Kpi {
            from,
            to,
            node,
            token,
            output,
        } => {
            let period = ledger_core::kpi::Period::new(from, to).map_err(|_| {
                CliError::Usage(format!(
                    "--to must be after --from (the period is [--from, --to)): got --from {from} --to {to}"
                ))
            })?;
            remote::block_on(remote::kpi(period, &node, &token, output))
        }
        Command::Subscribe {
            from,
            sites,
            kinds,
            cois,
            node,
            token,
            output,
        } => remote::block_on(remote::subscribe(
            from, &sites, &kinds, &cois, &node, &token, output,
        )),
        Command::NodeInfo {
            node,
            token,
            output,
        } => remote::block_on(remote::node_info(&node, &token, output)),
        Command::Replay {
            journey,
            tokens,
            start,
            site_nodes,
            node,
            output,
        } => remote::block_on(remote::replay(
            &journey,
            &tokens,
            start,
            &site_nodes,
            &node,
            output,
        )),
        Command::VerifyBundle {
            bundle,
            anchor,
            output,
            whole_feeds,
        } => {
            let anchor = anchor.resolve()?;
            let bytes = read(&bundle)?;
            let working = progress::spinner(format!("verifying {}", bundle.display()));
            let opts = BundleOptions {
                policy: Policy::default(),
                scope: if whole_feeds {
                    Scope::WholeFeeds
                } else {
                    Scope::CoiExport
                },
            };
            let report = verify_bundle_trusting(&bytes, &anchor, &opts);
            working.finish_and_clear();
            match output {
                Output::Json => out::println(render::verdict_json(&report, &anchor)),
                Output::Text => out::print(render::verdict_text(&report, &anchor)),
            }
            Ok(exit::for_verdict(report.verdict.kind))
        }
        Command::Report {
            bundle,
            out,
            anchor,
            whole_feeds,
            output,
        } => report::run(&bundle, &out, anchor.as_ref(), whole_feeds, output),
        Command::Epcis {
            bundle,
            out,
            anchor,
            output,
        } => epcis::run(&bundle, out.as_deref(), anchor.as_ref(), output),
        Command::Network(NetworkCommand::Init {
            dir,
            sites,
            network: id,
            valid_days,
            base_port,
            output,
        }) => {
            let id = match id {
                Some(id) => id,
                None => network::id_from_dir(&dir)?,
            };
            network::init(&dir, &id, &sites.0, valid_days, base_port, output)
        }
        Command::Network(NetworkCommand::Info { dir, output }) => network::info(&dir, output),
        Command::Network(NetworkCommand::RotateKey {
            site,
            dir,
            anchor_key,
            valid_days,
            output,
        }) => network::rotate_key(&dir, &site, anchor_key.as_deref(), valid_days, output),
        Command::Network(NetworkCommand::RotateToken { name, dir, output }) => {
            network::rotate_token(&dir, &name, output)
        }
        Command::Network(NetworkCommand::Revoke {
            site,
            dir,
            from,
            key,
            reason,
            anchor_key,
            output,
        }) => network::revoke(
            &dir,
            &site,
            key.as_ref(),
            from,
            &reason,
            anchor_key.as_deref(),
            output,
        ),
        Command::Fixture(FixtureCommand::Build { journey, out }) => {
            let text = read_text(&journey)?;
            let built = fixtures::build(&text)
                .map_err(|e| CliError::Usage(format!("{}: {e}", journey.display())))?;
            write(&out, &built.bundle)?;
            out::eprintln(format_args!(
                "wrote {} ({} events, chain {}, TEST-ONLY keys)",
                out.display(),
                built.events.len(),
                built.coi
            ));
            Ok(ExitCode::SUCCESS)
        }
        Command::Fixture(FixtureCommand::Anchor { out, network }) => {
            let network = NetworkId::parse(&network).map_err(|e| CliError::Usage(e.to_string()))?;
            let anchor = fixtures::keys::anchor(&network).public();
            write(&out, format!("{}\n", anchor.to_hex()).as_bytes())?;
            out::eprintln(format_args!(
                "wrote {} (TEST-ONLY anchor of network {network}, fingerprint {})",
                out.display(),
                anchor.fingerprint()
            ));
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
            out::eprintln(format_args!(
                "wrote {} ({events} events, chain {}, TEST-ONLY keys)",
                out.display(),
                synth.coi
            ));
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

fn read_text(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| unreadable(path, e))
}

/// Reads a whole input file, refusing one larger than the largest bundle before reading
/// it (and, for a pipe or a device, after reading one byte past the limit): no input makes
/// the CLI hold more than that.
fn read(path: &Path) -> Result<Vec<u8>, CliError> {
    use std::io::Read as _;
    let limit = ledger_core::bundle::BUNDLE_BYTES_MAX as u64;
    let too_large = |n: u64| {
        CliError::Unreadable {
        path: path.display().to_string(),
        reason: format!(
            "it is {}{n} bytes, more than the {limit} bytes (256 MiB) this command reads; no bundle is that large",
            if n > limit { "" } else { "over " }
        ),
    }
    };
    let file = std::fs::File::open(path).map_err(|e| unreadable(path, e))?;
    if let Ok(meta) = file.metadata() {
        if meta.is_file() && meta.len() > limit {
            return Err(too_large(meta.len()));
        }
    }
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(too_large(limit));
    }
    Ok(bytes)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    std::fs::write(path, bytes).map_err(|e| CliError::Unwritable {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Reads an anchor key file: 64 hex digits, surrounding white space ignored.
fn read_anchor(path: &Path) -> Result<PublicKey, CliError> {
    let text = read_text(path)?;
    parse_anchor(text.trim()).ok_or_else(|| {
        CliError::Usage(format!(
            "{}: an anchor key file must hold the anchor's public key as 64 hex digits (the network's trust/anchor.pub); to give the fingerprint `ledger network info` prints instead, pass it itself: --anchor sha256:...",
            path.display()
        ))
    })
}

fn parse_anchor(text: &str) -> Option<PublicKey> {
    let id = ledger_core::EventId::from_hex(text).ok()?;
    Some(PublicKey(id.0))
}

#[cfg(test)]
mod tests {
    //! Argument parsing through clap, as `ledger` sees it, and the error-to-exit-code map.

    use super::*;
    use crate::client;
    use expect_test::{expect, Expect};

    #[track_caller]
    fn check(args: &str, expect: Expect) {
        let out = match Cli::try_parse_from(std::iter::once("ledger").chain(args.split(' '))) {
            Ok(cli) => format!("{:#?}", cli.command),
            Err(e) => format!(
                "error ({:?}): {}",
                e.kind(),
                e.render().to_string().lines().next().unwrap_or("")
            ),
        };
        expect.assert_eq(&out);
    }

    #[test]
    fn remote_commands_parse() {
        check(
            "verify CHA999926ABC123 --node http://10.0.0.7:50051 --token-file t.token --output json",
            expect![[r#"
                Verify {
                    coi: Coi("CHA999926ABC123"),
                    node: NodeArgs {
                        node: "http://10.0.0.7:50051",
                        timeout: 30,
                        ca_file: None,
                    },
                    token: TokenArgs {
                        token_file: Some(
                            "t.token",
                        ),
                        token: None,
                    },
                    output: Json,
                }"#]],
        );
        check(
            "watch CHA999926ABC123 --from 12",
            expect![[r#"
                Watch {
                    coi: Coi("CHA999926ABC123"),
                    from: 12,
                    node: NodeArgs {
                        node: "http://127.0.0.1:50051",
                        timeout: 30,
                        ca_file: None,
                    },
                    token: TokenArgs {
                        token_file: None,
                        token: None,
                    },
                    output: Text,
                }"#]],
        );
        check(
            "chains --status awaiting_qc --page-size 50",
            expect![[r#"
                Chains {
                    status: Some(
                        AwaitingQc,
                    ),
                    page_size: Some(
                        50,
                    ),
                    page_token: None,
                    sort: Coi,
                    site: None,
                    needs_action: false,
                    live: false,
                    node: NodeArgs {
                        node: "http://127.0.0.1:50051",
                        timeout: 30,
                        ca_file: None,
                    },
                    token: TokenArgs {
                        token_file: None,
                        token: None,
                    },
                    output: Text,
                }"#]],
        );
        check(
            "export CHA999926ABC123 --out b.bundle",
            expect![[r#"
                Export {
                    coi: Coi("CHA999926ABC123"),
                    out: "b.bundle",
                    node: NodeArgs {
                        node: "http://127.0.0.1:50051",
                        timeout: 30,
                        ca_file: None,
                    },
                    token: TokenArgs {
                        token_file: None,
                        token: None,
                    },
                    output: Text,
                }"#]],
        );
        check(
            "replay journey.toml --tokens tokens/",
            expect![[r#"
                Replay {
                    journey: "journey.toml",
                    tokens: "tokens/",
                    start: None,
                    site_nodes: [],
                    node: NodeArgs {
                        node: "http://127.0.0.1:50051",
                        timeout: 30,
                        ca_file: None,
                    },
                    output: Text,
                }"#]],
        );
        check(
            "node-info",
            expect![[r#"
                NodeInfo {
                    node: NodeArgs {
                        node: "http://127.0.0.1:50051",
                        timeout: 30,
                        ca_file: None,
                    },
                    token: TokenArgs {
                        token_file: None,
                        token: None,
                    },
                    output: Text,
                }"#]],
        );
        check(
            "kpi --from 2026-03-01 --to 2026-04-01T00:00:00Z --output csv",
            expect![[r#"
                Kpi {
                    from: Timestamp(
                        1772323200000,
                    ),
                    to: Timestamp(
                        1775001600000,
                    ),
                    node: NodeArgs {
                        node: "http://127.0.0.1:50051",
                        timeout: 30,
                        ca_file: None,
                    },
                    token: TokenArgs {
                        token_file: None,
                        token: None,
                    },
                    output: Csv,
                }"#]],
        );
        check(
            "append step.toml --timeout 5",
            expect![[r#"
                Append {
                    step: "step.toml",
                    node: NodeArgs {
                        node: "http://127.0.0.1:50051",
                        timeout: 5,
                        ca_file: None,
                    },
                    token: TokenArgs {
                        token_file: None,
                        token: None,
                    },
                    output: Text,
                }"#]],
        );
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        check("verify NOT-A-COI", expect!["error (ValueValidation): error: invalid value 'NOT-A-COI' for '<COI>': coi 'NOT-A-COI': expected CH + 5-character facility number + 2-digit year + 6-character sequence (15 characters, optionally a check character)"]);
        check("chains --status lost", expect!["error (ValueValidation): error: invalid value 'lost' for '--status <STATUS>': expected one of: empty, collected, in_transit, in_manufacturing, awaiting_qc, released, administered, destroyed"]);
        check("export CHA999926ABC123", expect!["error (MissingRequiredArgument): error: the following required arguments were not provided:"]);
        check("replay journey.toml", expect!["error (MissingRequiredArgument): error: the following required arguments were not provided:"]);
        check(
            "chain CHA999926ABC123 --output yaml",
            expect!["error (InvalidValue): error: invalid value 'yaml' for '--output <OUTPUT>'"],
        );
        check("kpi --from 2026-02-30 --to 2026-03-01", expect!["error (ValueValidation): error: invalid value '2026-02-30' for '--from <T>': expected a UTC day like 2026-03-01 (its midnight) or an RFC 3339 UTC time like 2026-03-01T08:00:00Z"]);
        check("kpi --from 2026-03-01", expect!["error (MissingRequiredArgument): error: the following required arguments were not provided:"]);
        check(
            "kpi --from 2026-03-01 --to 2026-04-01 --output yaml",
            expect!["error (InvalidValue): error: invalid value 'yaml' for '--output <OUTPUT>'"],
        );
        check("node-info --timeout 0", expect!["error (ValueValidation): error: invalid value '0' for '--timeout <SECONDS>': 0 is not in 1..=3600"]);
    }

    #[track_caller]
    fn check_exit(err: client::Error, code: u8) {
        let text = err.to_string();
        assert_eq!(exit::code_for_error(&CliError::Node(err)), code, "{text}");
    }

    #[test]
    fn node_errors_map_to_exit_codes() {
        use tonic::Code;
        let status = |code: Code| {
            client::Error::from_status(
                "http://n",
                std::time::Duration::from_secs(1),
                &tonic::Status::new(code, "why"),
            )
        };
        for code in [
            Code::InvalidArgument,
            Code::FailedPrecondition,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::NotFound,
            Code::ResourceExhausted,
        ] {
            check_exit(status(code), exit::USAGE);
        }
        for code in [Code::Unavailable, Code::DeadlineExceeded, Code::Internal] {
            check_exit(status(code), exit::UNREADABLE);
        }
        check_exit(client::Error::InvalidToken, exit::USAGE);
        check_exit(
            client::Error::ExportLength {
                announced: 10,
                received: 9,
            },
            exit::UNREADABLE,
        );
        let refused = replay::ReplayError::Append {
            step: "pack".into(),
            source: status(Code::PermissionDenied),
        };
        assert_eq!(
            exit::code_for_error(&CliError::Replay(refused)),
            exit::USAGE
        );
        let down = replay::ReplayError::Append {
            step: "pack".into(),
            source: status(Code::Unavailable),
        };
        assert_eq!(
            exit::code_for_error(&CliError::Replay(down)),
            exit::UNREADABLE
        );
    }
}
