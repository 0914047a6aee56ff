//! The commands that talk to a node. Each connects, makes its calls through
//! [`crate::client::Client`], prints, and returns an exit code; errors go back to
//! [`super::exit`] to be mapped once.

use super::exit::{self, CliError};
use super::replay::{Replay, ReplayError};
use super::step_file::{append_request, parse_step_file};
use super::{out, read_text, render, unreadable, NodeArgs, Output, TokenArgs};
use crate::client::{Client, ClientConfig, PageToken};
use ledger_core::{Coi, Millis, Status, Timestamp};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_stream::StreamExt;

/// Runs one command on a single-threaded runtime: a CLI makes one call at a time.
pub(super) fn block_on(
    command: impl Future<Output = Result<ExitCode, CliError>>,
) -> Result<ExitCode, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?
        .block_on(command)
}

fn config(node: &NodeArgs) -> Result<ClientConfig, CliError> {
    let ca_certificate = match &node.ca_file {
        None => None,
        Some(path) => Some(std::fs::read(path).map_err(|e| CliError::Unreadable {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?),
    };
    Ok(ClientConfig {
        call_timeout: Duration::from_secs(node.timeout),
        ca_certificate,
        ..ClientConfig::default()
    })
}

/// The token: `--token-file` (its content, surrounding white space ignored) wins over
/// `LEDGER_TOKEN`.
fn token(args: &TokenArgs) -> Result<String, CliError> {
    match (&args.token_file, &args.token) {
        (Some(path), _) => read_token(path),
        (None, Some(token)) => Ok(token.0.clone()),
        (None, None) => Err(CliError::Usage(
            "no token: pass --token-file FILE or set LEDGER_TOKEN".into(),
        )),
    }
}

fn read_token(path: &Path) -> Result<String, CliError> {
    let token = read_text(path)?.trim().to_owned();
    if token.is_empty() {
        return Err(CliError::Usage(format!(
            "{}: the token file is empty",
            path.display()
        )));
    }
    Ok(token)
}

async fn connect(node: &NodeArgs, token: &TokenArgs) -> Result<Client, CliError> {
    let token = self::token(token)?;
    Ok(Client::connect_with(&node.node, token, config(node)?).await?)
}

fn print_json(doc: impl std::fmt::Display) {
    out::println(doc);
}

pub(super) async fn append(
    path: &Path,
    node: &NodeArgs,
    token: &TokenArgs,
    output: Output,
) -> Result<ExitCode, CliError> {
    let text = read_text(path)?;
    let name = path
        .file_name()
        .map_or_else(|| "step".to_owned(), |n| n.to_string_lossy().into_owned());
    let usage =
        |e: super::step_file::StepFileError| CliError::Usage(format!("{}: {e}", path.display()));
    let req = append_request(&parse_step_file(&text, &name).map_err(usage)?).map_err(usage)?;
    let request_id = req.request_id.clone();
    let client = connect(node, token).await?;
    let receipt = client.append(req).await?;
    match output {
        Output::Json => print_json(render::receipt_json(&receipt, &request_id)),
        Output::Text => out::println(render::receipt_text(&receipt)),
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn chain(
    coi: &Coi,
    node: &NodeArgs,
    token: &TokenArgs,
    output: Output,
) -> Result<ExitCode, CliError> {
    let events = connect(node, token).await?.chain(coi).await?;
    match output {
        Output::Json => print_json(render::chain_json(&events)),
        Output::Text => out::print(render::chain_text(coi, &events)),
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn verify(
    coi: &Coi,
    node: &NodeArgs,
    token: &TokenArgs,
    output: Output,
) -> Result<ExitCode, CliError> {
    let client = connect(node, token).await?;
    let v = client.verify(coi).await?;
    match output {
        Output::Json => print_json(render::verification_json(coi, &v)),
        Output::Text => out::print(render::verification_text(coi, client.endpoint(), &v)),
    }
    Ok(exit::for_verdict(v.verdict))
}

/// Writes the bundle to `<out>.partial` and renames it into place only once every byte
/// arrived, so a failed export never leaves a file that looks like a bundle.
pub(super) async fn export(
    coi: &Coi,
    out: &Path,
    node: &NodeArgs,
    token: &TokenArgs,
    output: Output,
) -> Result<ExitCode, CliError> {
    let client = connect(node, token).await?;
    let mut partial = out.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let unwritable = |path: &Path, e: std::io::Error| CliError::Unwritable {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let file = tokio::fs::File::create(&partial)
        .await
        .map_err(|e| unwritable(&partial, e))?;
    let mut file = tokio::io::BufWriter::new(file);
    let n_bytes = match client.export(coi, &mut file).await {
        Ok(n) => n,
        Err(e) => {
            drop(file);
            // Best effort: the partial file is garbage either way, and the export error is
            // the one worth reporting.
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e.into());
        }
    };
    file.into_inner()
        .sync_all()
        .await
        .map_err(|e| unwritable(&partial, e))?;
    tokio::fs::rename(&partial, out)
        .await
        .map_err(|e| unwritable(out, e))?;
    match output {
        Output::Json => print_json(serde_json::json!({
            "path": out.display().to_string(),
            "coi": coi.as_str(),
            "n_bytes": n_bytes,
        })),
        Output::Text => eprintln!(
            "wrote {} ({n_bytes} bytes, chain {coi}); check it offline with `ledger verify-bundle {} --anchor ANCHOR`",
            out.display(),
            out.display()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints events as they come until the node ends the stream (exit 0), it fails, or the
/// user presses Ctrl-C (exit 0).
pub(super) async fn watch(
    coi: &Coi,
    from_position: u64,
    node: &NodeArgs,
    token: &TokenArgs,
    output: Output,
) -> Result<ExitCode, CliError> {
    let client = connect(node, token).await?;
    let mut events = client.watch(coi, from_position).await?;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => return Ok(ExitCode::SUCCESS),
            next = events.next() => match next {
                None => return Ok(ExitCode::SUCCESS),
                Some(item) => {
                    let w = item?;
                    match output {
                        Output::Json => print_json(render::event_json(&w.event, Some(w.position))),
                        Output::Text => out::println(render::watched_text(&w)),
                    }
                    if out::closed() {
                        return Ok(ExitCode::SUCCESS);
                    }
                }
            },
        }
    }
}

pub(super) async fn chains(
    status: Option<Status>,
    page_size: Option<u16>,
    page_token: Option<String>,
    node: &NodeArgs,
    token: &TokenArgs,
    output: Output,
) -> Result<ExitCode, CliError> {
    let client = connect(node, token).await?;
    let page_token = page_token.and_then(PageToken::new);
    let page = client
        .chains(status, page_size, page_token.as_ref())
        .await?;
    match output {
        Output::Json => print_json(render::chains_json(&page)),
        Output::Text => out::print(render::chains_text(&page)),
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn node_info(
    node: &NodeArgs,
    token: &TokenArgs,
    output: Output,
) -> Result<ExitCode, CliError> {
    let client = connect(node, token).await?;
    let info = client.node_info().await?;
    match output {
        Output::Json => print_json(render::node_info_json(&info)),
        Output::Text => out::print(render::node_info_text(client.endpoint(), &info)),
    }
    Ok(ExitCode::SUCCESS)
}

/// A journey whose scans lie after this machine's clock would be recorded before it was
/// scanned; says so, with a start that moves the journey into the past.
fn future_note(plan: &Replay) -> Option<String> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())?;
    let now = Timestamp(now_ms);
    let last = plan.last_scan_at();
    if last <= now {
        return None;
    }
    let span = Millis(last.0 - plan.start().0);
    // A whole minute, an hour before the shifted journey would end "now".
    let suggested = Timestamp((now.0 - span.0 - Millis::HOUR.0).div_euclid(60_000) * 60_000);
    Some(format!(
        "the journey's last scan ({last}) is after this machine's clock ({now}): the node \
         will record events before their scan time (integrity.clock_backwards); to replay it \
         in the past, pass --start {suggested} (another start is another set of scans: use \
         a fresh node)"
    ))
}

/// Reads every site's token before the first append, so a missing token file cannot stop
/// a replay half way.
pub(super) async fn replay(
    journey: &Path,
    tokens: &Path,
    start: Option<Timestamp>,
    node: &NodeArgs,
    output: Output,
) -> Result<ExitCode, CliError> {
    let text = read_text(journey)?;
    let usage = |e: ReplayError| match e {
        ReplayError::Append { .. } => CliError::Replay(e),
        other => CliError::Usage(format!("{}: {other}", journey.display())),
    };
    let mut plan = Replay::parse(&text).map_err(usage)?;
    if let Some(start) = start {
        plan = plan.with_start(start).map_err(usage)?;
    }
    if let Some(note) = future_note(&plan) {
        eprintln!("note: {note}");
    }
    let mut site_tokens = BTreeMap::new();
    for site in plan.sites() {
        let path = tokens.join(format!("{site}.token"));
        if !path.is_file() {
            return Err(unreadable(
                &path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("no token file for site {site} (expected {site}.token in the --tokens directory)"),
                ),
            ));
        }
        site_tokens.insert(site.to_owned(), read_token(&path)?);
    }
    for note in plan.notes() {
        eprintln!("note: {note}");
    }
    let first_site = site_tokens.iter().next().ok_or_else(|| {
        CliError::Usage(format!("{}: the journey has no steps", journey.display()))
    })?;
    let client = Client::connect_with(&node.node, first_site.1.clone(), config(node)?).await?;
    let mut clients = BTreeMap::new();
    for (site, token) in &site_tokens {
        clients.insert(site.clone(), client.with_token(token)?);
    }
    let clients = &clients;
    let done = plan
        .run(
            |site, req| async move {
                match clients.get(&site) {
                    Some(c) => c.append(req).await,
                    // Every site of the plan got a client above.
                    None => unreachable!("no client for site {site}"),
                }
            },
            |r| match output {
                Output::Json => print_json(render::replayed_json(r)),
                Output::Text => out::println(render::replayed_text(r)),
            },
        )
        .await?;
    if output == Output::Text {
        eprintln!(
            "replayed {} ({} steps) as chain {}",
            plan.name(),
            done.len(),
            plan.coi()
        );
    }
    Ok(ExitCode::SUCCESS)
}
