//! The commands that talk to a node. Each connects, makes its calls through
//! [`crate::client::Client`], prints, and returns an exit code; errors go back to
//! [`super::exit`] to be mapped once.

use super::exit::{self, CliError};
use super::replace_file::Replacement;
use super::replay::{Replay, ReplayError};
use super::step_file::{append_request, parse_step_file};
use super::{out, read_text, render, unreadable, NodeArgs, Output, TokenArgs};
use crate::client::{AlertUpdate, ChainsQuery, Client, ClientConfig, Watched};
use ledger_core::{Coi, Millis, SiteId, Timestamp};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
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

pub(super) async fn kpi(
    period: ledger_core::kpi::Period,
    node: &NodeArgs,
    token: &TokenArgs,
    output: super::kpi::KpiOutput,
) -> Result<ExitCode, CliError> {
    let kpis = connect(node, token).await?.kpis(period).await?;
    match output {
        super::kpi::KpiOutput::Text => out::print(super::kpi::text(&kpis)),
        super::kpi::KpiOutput::Json => print_json(super::kpi::json(&kpis)),
        super::kpi::KpiOutput::Csv => out::print(super::kpi::csv(&kpis)),
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

/// Checks `--out` before anything is fetched, then writes the bundle beside it under a
/// name of this run's own and gives it the name `--out` only once every byte arrived and
/// is synced (see [`Replacement`]), so a failed export never leaves a file that looks like
/// a bundle, nor a half-written one in place of the old file.
pub(super) async fn export(
    coi: &Coi,
    out: &Path,
    node: &NodeArgs,
    token: &TokenArgs,
    output: Output,
) -> Result<ExitCode, CliError> {
    let replacement = Replacement::begin(out)?;
    let client = connect(node, token).await?;
    let mut file = tokio::io::BufWriter::new(tokio::fs::File::from_std(replacement.file()?));
    let receiving = super::progress::bytes(format!("exporting {coi}"));
    let exported = client
        .export(coi, receiving.wrap_async_write(&mut file))
        .await;
    receiving.finish_and_clear();
    // Dropping `replacement` on an error removes the temporary file.
    let n_bytes = exported.map_err(|e| match e {
        crate::client::Error::Write(e) => CliError::Unwritable {
            path: replacement.target().display().to_string(),
            reason: e.to_string(),
        },
        other => CliError::Node(other),
    })?;
    drop(file);
    replacement.commit()?;
    match output {
        Output::Json => print_json(serde_json::json!({
            "path": out.display().to_string(),
            "coi": coi.as_str(),
            "n_bytes": n_bytes,
        })),
        Output::Text => out::eprintln(format_args!(
            "wrote {} ({n_bytes} bytes, chain {coi}); check it offline with `ledger verify-bundle {} --anchor ANCHOR`",
            out.display(),
            out.display()
        )),
    }
    Ok(ExitCode::SUCCESS)
}

/// Hands each item of a stream to `print` until the node ends the stream (exit 0), an item
/// is an error, stdout closes, or the user presses Ctrl-C (exit 0).
async fn follow<T>(
    mut items: impl tokio_stream::Stream<Item = Result<T, crate::client::Error>> + Unpin,
    mut print: impl FnMut(T),
) -> Result<ExitCode, CliError> {
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => return Ok(ExitCode::SUCCESS),
            next = items.next() => match next {
                None => return Ok(ExitCode::SUCCESS),
                Some(item) => {
                    print(item?);
                    if out::closed() {
                        return Ok(ExitCode::SUCCESS);
                    }
                }
            },
        }
    }
}

/// Prints a chain's events as they come (see [`follow`]).
pub(super) async fn watch(
    coi: &Coi,
    from_position: u64,
    node: &NodeArgs,
    token: &TokenArgs,
    output: Output,
) -> Result<ExitCode, CliError> {
    let client = connect(node, token).await?;
    let events = client.watch(coi, from_position).await?;
    follow(events, |w| match output {
        Output::Json => print_json(render::event_json(&w.event, Some(w.position))),
        Output::Text => out::println(render::watched_text(&w)),
    })
    .await
}

pub(super) async fn chains(
    query: ChainsQuery,
    node: &NodeArgs,
    token: &TokenArgs,
    output: Output,
) -> Result<ExitCode, CliError> {
    let client = connect(node, token).await?;
    let page = client.worklist(&query).await?;
    match output {
        Output::Json => print_json(render::chains_json(&page)),
        Output::Text => out::print(render::chains_text(&page, &query, now())),
    }
    Ok(ExitCode::SUCCESS)
}

/// This machine's clock, for "time left" columns.
fn now() -> Timestamp {
    Timestamp(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_millis()).ok())
            .unwrap_or(0),
    )
}

pub(super) async fn alerts(
    watch: bool,
    include_cleared: bool,
    node: &NodeArgs,
    token: &TokenArgs,
    output: Output,
) -> Result<ExitCode, CliError> {
    let client = connect(node, token).await?;
    if !watch {
        let alerts = client.alerts(include_cleared).await?;
        match output {
            Output::Json => print_json(render::alerts_json(&alerts)),
            Output::Text => out::print(render::alerts_text(&alerts)),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let updates = client.watch_alerts().await?;
    follow(updates, |update| match (update, output) {
        (AlertUpdate::Snapshot(all), Output::Json) => print_json(render::alerts_json(&all)),
        (AlertUpdate::Snapshot(all), Output::Text) => out::print(render::alerts_text(&all)),
        (AlertUpdate::Change(a), Output::Json) => print_json(render::alert_json(&a).to_string()),
        (AlertUpdate::Change(a), Output::Text) => out::println(render::alert_change_text(&a)),
    })
    .await
}

pub(super) async fn subscribe(
    from: u64,
    sites: &[SiteId],
    kinds: &[String],
    cois: &[Coi],
    node: &NodeArgs,
    token: &TokenArgs,
    output: Output,
) -> Result<ExitCode, CliError> {
    let client = connect(node, token).await?;
    let events = client.subscribe(from, sites, kinds, cois).await?;
    follow(events, |s| {
        // Progress marks (no event) only move the position a resume would start from.
        let Some(event) = s.event else { return };
        let w = Watched {
            position: s.position,
            event,
        };
        match output {
            Output::Json => print_json(render::event_json(&w.event, Some(w.position))),
            Output::Text => out::println(render::watched_text(&w)),
        }
    })
    .await
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

/// Waits until the node behind `client` holds every event in `ids` of chain `coi`.
async fn wait_until_held(
    client: &Client,
    coi: &ledger_core::Coi,
    ids: &[ledger_core::EventId],
    within: Duration,
) -> Result<(), crate::client::Error> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let held: std::collections::HashSet<ledger_core::EventId> = match client.chain(coi).await {
            Ok(events) => events.iter().map(ledger_core::Event::id).collect(),
            Err(crate::client::Error::Rejected {
                code: tonic::Code::NotFound,
                ..
            }) => Default::default(),
            Err(e) => return Err(e),
        };
        if ids.iter().all(|id| held.contains(id)) {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(crate::client::Error::Failed {
                code: tonic::Code::DeadlineExceeded,
                message: format!(
                    "the node holds {} of the chain's {} earlier events after {within:?}: is replication between the nodes running?",
                    ids.iter().filter(|id| held.contains(id)).count(),
                    ids.len()
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads every site's token before the first append, so a missing token file cannot stop
/// a replay half way.
pub(super) async fn replay(
    journey: &Path,
    tokens: &Path,
    start: Option<Timestamp>,
    site_nodes: &[(String, String)],
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
        out::eprintln(format_args!("note: {note}"));
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
        out::eprintln(format_args!("note: {note}"));
    }
    let first_site = site_tokens.iter().next().ok_or_else(|| {
        CliError::Usage(format!("{}: the journey has no steps", journey.display()))
    })?;
    let client = Client::connect_with(&node.node, first_site.1.clone(), config(node)?).await?;
    let mut nodes: BTreeMap<String, Client> = BTreeMap::new();
    nodes.insert(node.node.clone(), client.clone());
    for (_, url) in site_nodes {
        if !nodes.contains_key(url) {
            let c = Client::connect_with(url, first_site.1.clone(), config(node)?).await?;
            nodes.insert(url.clone(), c);
        }
    }
    // site -> (node URL, client with the site's token)
    let mut clients = BTreeMap::new();
    for (site, token) in &site_tokens {
        let url = site_nodes
            .iter()
            .rev()
            .find(|(s, _)| s == site)
            .map_or(node.node.as_str(), |(_, u)| u.as_str());
        let base = nodes.get(url).unwrap_or(&client);
        clients.insert(site.clone(), (url.to_owned(), base.with_token(token)?));
    }
    let clients = &clients;
    let coi = plan.coi().clone();
    let wait_for = Duration::from_secs(node.timeout);
    // The events appended so far and the node the last step went to: a step for a site on
    // another node waits until replication brought it the chain so far.
    let appended = std::cell::RefCell::new((Vec::<ledger_core::EventId>::new(), String::new()));
    let appended = &appended;
    let done = plan
        .run(
            |site, req| {
                let coi = coi.clone();
                async move {
                    // Every site of the plan got a client above.
                    let Some((url, c)) = clients.get(&site) else {
                        unreachable!("no client for site {site}")
                    };
                    let (ids, last) = appended.borrow().clone();
                    if !ids.is_empty() && *url != last {
                        wait_until_held(c, &coi, &ids, wait_for).await?;
                    }
                    appended.borrow_mut().1 = url.clone();
                    c.append(req).await
                }
            },
            |r| {
                appended.borrow_mut().0.push(r.receipt.event_id);
                match output {
                    Output::Json => print_json(render::replayed_json(r)),
                    Output::Text => out::println(render::replayed_text(r)),
                }
            },
        )
        .await?;
    if output == Output::Text {
        out::eprintln(format_args!(
            "replayed {} ({} steps) as chain {}",
            plan.name(),
            done.len(),
            plan.coi()
        ));
    }
    Ok(ExitCode::SUCCESS)
}
