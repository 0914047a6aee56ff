//! `ledger-node`: parse flags, build the config, run. Exit codes: 0 stopped cleanly,
//! 1 runtime failure, 2 configuration error.

use clap::{Parser, Subcommand};
use ledger_node::config::Config;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

// glibc's malloc keeps freed memory in per-thread arenas: under the node's mix of tokio
// workers, the committer, the indexer and sled's threads that roughly doubled RSS over
// the live heap. jemalloc returns idle pages to the system.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(
    name = "ledger-node",
    version,
    about = "Custody ledger node: durable signed appends over gRPC"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML configuration file (keys as in `Config`; flags and LEDGER_* env override it).
    #[arg(long, global = true, env = "LEDGER_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    flags: Flags,
}

#[derive(Debug, clap::Args, Serialize)]
struct Flags {
    /// Data directory (event log, index, development network).
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    /// gRPC address, e.g. 127.0.0.1:50051 (port 0 picks a free one).
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<SocketAddr>,
    /// Prometheus metrics address.
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_listen: Option<SocketAddr>,
    /// The web page's address, e.g. 127.0.0.1:8080 (port 0 picks a free one).
    #[arg(long, global = true)]
    #[serde(skip)]
    http_listen: Option<SocketAddr>,
    /// Network directory (anchor.pub, certs/, sites/, tokens/).
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    network_dir: Option<PathBuf>,
    /// A site to sign for (repeat); default: every site with a key in the network directory.
    #[arg(long = "site", global = true)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    sites: Vec<String>,
    /// Serve over TLS with this certificate chain (PEM); needs --tls-key-file.
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_cert_file: Option<PathBuf>,
    /// The TLS certificate's private key (PEM).
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_key_file: Option<PathBuf>,
    /// Replicate over NATS JetStream at this server URL (repeat for several); the rest of
    /// the `[nats]` settings come from the config file. Without NATS the node is standalone.
    #[arg(long = "nats-url", global = true)]
    #[serde(skip)]
    nats_urls: Vec<String>,
    /// Log JSON lines.
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    log_json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node (the default).
    Run {
        /// Disable the metrics listener.
        #[arg(long)]
        no_metrics: bool,
        /// Disable the web page (the same as `[http] enabled = false`).
        #[arg(long, conflicts_with = "http_listen")]
        no_http: bool,
        /// Shut down (as on SIGTERM) when standard input reaches its end: a supervisor or
        /// test harness that holds the other end of a pipe then stops the node even if it
        /// dies without cleaning up.
        #[arg(long)]
        stop_on_stdin_close: bool,
    },
    /// Validate the configuration and the network directory, say what is wrong, and exit.
    CheckConfig,
    /// Rebuild the index from the event log (the node must be stopped).
    RebuildIndex,
    /// Check the whole local store: every record, every event's signature and certificate,
    /// every feed, and (with the node stopped) every index key against the log.
    ///
    /// Changes nothing. Exit codes: 0 the store is sound, 1 problems found (each is listed),
    /// 2 configuration error, 3 the store cannot be read.
    VerifyStore {
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Copy the event log to DIR (an empty or new directory), safely while the node runs.
    ///
    /// The copy is every complete record, synced on the node's disk first, with a manifest
    /// (records, bytes, SHA-256). Keys and tokens are not in it: back up the network
    /// directory separately, as the secret it is. Exit codes: 0 written, 2 configuration
    /// error, 3 the store or DIR cannot be read or written.
    Backup {
        /// Where to write the backup.
        dir: PathBuf,
    },
    /// Restore a backup from DIR into this node's (empty) data directory, then check it.
    ///
    /// The index is rebuilt from the log, and the store is marked so that the node, when it
    /// replicates, learns every local feed from the network before signing (a backup may be
    /// behind what the site signed since). Exit codes: 0 restored and sound, 1 restored but
    /// the check found problems, 2 configuration error or not a backup or the store is not
    /// empty, 3 I/O failure.
    Restore {
        /// The backup directory (from `ledger-node backup`).
        dir: PathBuf,
    },
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal; log files and pipes get plain text.
    let color = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    // A log line that cannot be written is dropped. By default tracing-subscriber reports
    // it with eprintln!, which panics when stderr is a closed pipe (a log collector that
    // went away): the thread logging it dies, and a panic in the signal task left the node
    // deaf to SIGTERM.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(color)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Runtime worker threads: two per core, at least four (see where the runtime is built).
fn worker_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, std::num::NonZeroUsize::get)
        .saturating_mul(2)
        .max(4)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let mut cfg = match Config::load(cli.config.as_deref(), &cli.flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ledger-node: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(addr) = cli.flags.http_listen {
        cfg.http.listen = addr;
        cfg.http.enabled = true;
    }
    if !cli.flags.nats_urls.is_empty() {
        cfg.nats.get_or_insert_with(Default::default).urls = cli.flags.nats_urls.clone();
        if let Err(e) = cfg.validate() {
            eprintln!("ledger-node: {e}");
            return ExitCode::from(2);
        }
    }
    init_logs(cfg.log_json);
    match cli.command.unwrap_or(Command::Run {
        no_metrics: false,
        no_http: false,
        stop_on_stdin_close: false,
    }) {
        Command::CheckConfig
            if cfg.network_dir.is_none() && !cfg.network_dir().join("anchor.pub").exists() =>
        {
            // A check changes nothing: the development network is made by the first `run`.
            if let Err(e) = files_readable(&cfg) {
                eprintln!("ledger-node: configuration: {e}");
                return ExitCode::from(2);
            }
            if let Err(e) = ledger_node::network::dev_network_pending(&cfg.network_dir()) {
                eprintln!("ledger-node: {e}");
                return ExitCode::from(2);
            }
            println!("configuration ok: no network at {} yet (the first `run` creates a development network there, with fresh random keys), listens on {}", cfg.network_dir().display(), cfg.listen);
            ExitCode::SUCCESS
        }
        Command::CheckConfig => match files_readable(&cfg)
            .map_err(|e| anyhow::anyhow!("configuration: {e}"))
            .and_then(|()| ledger_node::load_network(&cfg))
        {
            Ok(net) => {
                let replication = match &cfg.nats {
                    Some(n) => format!("replicates over NATS at {}", n.urls.join(", ")),
                    None => "standalone (no NATS)".to_owned(),
                };
                println!("configuration ok: network {} (anchor {}), {} certificates, signs for {} site(s), listens on {}, {replication}", net.id, net.anchor.fingerprint(), net.certificates.len(), net.local_sites.len(), cfg.listen);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ledger-node: {}", explain(&e));
                ExitCode::from(2)
            }
        },
        Command::RebuildIndex => {
            let store_cfg = cfg.store_config();
            let log = store_cfg.dir.join("events.log");
            if !log.exists() {
                eprintln!("ledger-node: there is no event log at {}: nothing to rebuild an index from; check --data-dir", log.display());
                return ExitCode::from(2);
            }
            match ledger_node::store::Store::rebuild_index(&store_cfg) {
                Ok(report) => {
                    println!("index rebuilt from the log: {} events", report.n_records);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ledger-node: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::VerifyStore { json } => verify_store(&cfg, json),
        Command::Backup { dir } => match ledger_node::store::backup(&cfg.store_dir(), &dir) {
            Ok(r) => {
                println!(
                    "backup written to {}: {} events, {} bytes, sha256 {}",
                    r.dir.display(),
                    r.n_records,
                    r.n_bytes,
                    r.sha256
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ledger-node: backup failed: {e}");
                ExitCode::from(3)
            }
        },
        Command::Restore { dir } => {
            // The backup's events are checked against the network they were signed in; a
            // development network made here would have other keys and fail every one.
            if let Err(e) = ledger_node::open_network(&cfg) {
                eprintln!(
                    "ledger-node: {}: restore needs the network the backup was written under",
                    explain(&e)
                );
                return ExitCode::from(2);
            }
            let store_cfg = cfg.store_config();
            match ledger_node::store::restore(
                &dir,
                &store_cfg,
                ledger_node::replication::RESYNC_MARKER,
            ) {
                Ok(report) => {
                    println!(
                        "restored {} events into {}; checking the store",
                        report.n_records,
                        store_cfg.dir.display()
                    );
                    verify_store(&cfg, false)
                }
                Err(ledger_node::store::RestoreError::Store(e)) => {
                    eprintln!("ledger-node: restore failed: {e}");
                    ExitCode::from(3)
                }
                Err(e) => {
                    eprintln!("ledger-node: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Run {
            no_metrics,
            no_http,
            stop_on_stdin_close,
        } => {
            if no_metrics {
                cfg.metrics_listen = None;
            }
            if no_http {
                cfg.http.enabled = false;
            }
            // Every client connection takes a descriptor, and the soft limit a shell or a
            // service manager starts a process with (often 1,024) is far below what the
            // system allows; past it the server's accept loop spins until some are freed.
            match rlimit::increase_nofile_limit(u64::MAX) {
                Ok(n) => tracing::info!(open_files = n, "open files limit"),
                Err(e) => tracing::warn!(error = %e, "could not raise the open files limit"),
            }
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            // An append's handler blocks its worker thread while it waits for the ledger
            // lock or a sled read, and a lone appender's worker for one fdatasync: with one
            // worker per core a blocked worker leaves its core idle under load. Tokio's own
            // TOKIO_WORKER_THREADS, when set, decides instead.
            if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
                builder.worker_threads(worker_threads());
            }
            let runtime = match builder.enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("ledger-node: cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            let shutdown = tokio_util::sync::CancellationToken::new();
            if stop_on_stdin_close {
                let stop = shutdown.clone();
                // A plain thread: tokio's stdin reads block a worker anyway.
                std::thread::spawn(move || {
                    let mut buf = [0u8; 256];
                    while let Ok(n) = std::io::Read::read(&mut std::io::stdin(), &mut buf) {
                        if n == 0 {
                            break;
                        }
                    }
                    tracing::info!("standard input closed: shutting down");
                    stop.cancel();
                });
            }
            let result = runtime.block_on(async {
                let signal = shutdown.clone();
                let hurry = tokio_util::sync::CancellationToken::new();
                let hurry_signal = hurry.clone();
                tokio::spawn(async move {
                    wait_for_signal().await;
                    tracing::info!("signal received");
                    signal.cancel();
                    // An operator who signals again does not want to wait out the grace.
                    wait_for_signal().await;
                    tracing::warn!(
                        "second signal: closing open calls without waiting for the shutdown grace"
                    );
                    hurry_signal.cancel();
                });
                ledger_node::run(cfg, shutdown, hurry).await
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{}", explain(&e));
                    eprintln!("ledger-node: {}", explain(&e));
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// An error and its causes, each said once: most of the node's errors already name their
/// cause in their own message (anyhow's `{:#}` would repeat it).
fn explain(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn verify_store(cfg: &Config, json: bool) -> ExitCode {
    let network = match ledger_node::open_network(cfg) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("ledger-node: {}", explain(&e));
            return ExitCode::from(2);
        }
    };
    let store_cfg = cfg.store_config();
    let scratch = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("ledger-node: cannot create a scratch directory: {e}");
            return ExitCode::from(3);
        }
    };
    let check = match ledger_node::integrity::verify_store(&store_cfg, &network, scratch.path()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ledger-node: cannot read the store: {e}");
            return ExitCode::from(3);
        }
    };
    let (index_keys, n_index_mismatches, index_mismatches, index_note) = match &check.index {
        Ok(i) => (Some(i.n_keys), i.n_mismatches, i.mismatches.clone(), None),
        Err(why) => (None, 0, Vec::new(), Some(why.clone())),
    };
    if json {
        let doc = serde_json::json!({
            "sound": check.clean(),
            "store": store_cfg.dir.display().to_string(),
            "events": check.n_events,
            "log_bytes": check.log_bytes,
            "feeds": check.n_feeds,
            "chains": check.n_chains,
            "problems": check.problems,
            "notes": check.notes,
            "index_keys_checked": index_keys,
            "index_mismatches": n_index_mismatches,
            "index_mismatches_shown": index_mismatches,
            "index_not_checked": index_note,
        });
        println!("{doc}");
    } else {
        println!(
            "{}: {} events in {} feeds and {} chains, {} bytes of log ({})",
            if check.clean() {
                "SOUND"
            } else {
                "PROBLEMS FOUND"
            },
            check.n_events,
            check.n_feeds,
            check.n_chains,
            check.log_bytes,
            store_cfg.dir.display()
        );
        match (&index_keys, &index_note) {
            (Some(n), _) => println!("index: {n} keys compared with an index rebuilt from the log, {n_index_mismatches} mismatch(es)"),
            (None, Some(why)) => println!("index: {why}"),
            (None, None) => {}
        }
        for p in check.problems.iter().chain(&index_mismatches) {
            println!("problem: {p}");
        }
        for n in &check.notes {
            println!("note: {n}");
        }
        if !check.clean() {
            println!("what to do: keep this store as it is (for investigation), restore the latest backup into a new data directory with `ledger-node restore`, and let replication bring it up to date");
        }
    }
    if check.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

/// The files the configuration names (TLS, NATS credentials) exist and can be read: found
/// by `check-config` rather than by a node failing to start or to reach NATS later.
fn files_readable(cfg: &Config) -> Result<(), String> {
    let mut files: Vec<(&str, &PathBuf)> = Vec::new();
    if let Some(f) = &cfg.tls_cert_file {
        files.push(("tls_cert_file", f));
    }
    if let Some(f) = &cfg.tls_key_file {
        files.push(("tls_key_file", f));
    }
    if let Some(n) = &cfg.nats {
        for (key, file) in [
            ("nats.token_file", &n.token_file),
            ("nats.creds_file", &n.creds_file),
            ("nats.tls_ca_file", &n.tls_ca_file),
            ("nats.tls_cert_file", &n.tls_cert_file),
            ("nats.tls_key_file", &n.tls_key_file),
        ] {
            if let Some(f) = file {
                files.push((key, f));
            }
        }
    }
    for (key, file) in files {
        match std::fs::read(file) {
            Ok(bytes) if bytes.is_empty() => {
                return Err(format!("{key}: {} is empty", file.display()));
            }
            Ok(_) => {}
            Err(e) => return Err(format!("{key}: cannot read {}: {e}", file.display())),
        }
    }
    Ok(())
}
