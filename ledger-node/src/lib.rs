//! The custody ledger node: a thin shell of I/O around ledger-core.
//!
//! - [`store`]: the durable event log and the sled index rebuilt from it.
//! - [`config`]: configuration (file, env, flags), validated once.
//! - [`network`]: the site keys, certificates and tokens the node signs and checks with.
//! - [`ledger`]: in-memory chain state and the append decision (validate, sequence, sign).
//! - [`pipeline`]: the bounded queue and the group-commit thread between gRPC and disk.
//! - [`grpc`]: the ledger.v1 service, auth and the status mapping.
//!
//! Architecture invariants: only the committer thread writes to the store; chain state
//! changes only under the ledger lock; every decision about ledger semantics is a call
//! into ledger-core.

pub mod alerts;
pub mod config;
pub mod grpc;
pub mod integrity;
pub mod kpi;
pub mod ledger;
pub mod network;
pub mod pipeline;
pub mod replication;
pub mod store;
pub mod web;
pub mod worklist;

use anyhow::Context;
use config::Config;
use ledger_core::{Millis, NetworkId, Policy, SiteId};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Loads (or, the first time, creates) the network the node works in.
pub fn load_network(cfg: &Config) -> anyhow::Result<network::Network> {
    let dir = cfg.network_dir();
    if cfg.network_dir.is_none() {
        let id = NetworkId::parse(&cfg.dev_network_id)?;
        // A new network over a store that already holds events would sign onto feeds that
        // other keys began: the store's own network directory is missing, not new.
        if network::dev_network_pending(&dir)? {
            let mut n_events = 0u64;
            if cfg.store_dir().join("events.log").exists() {
                store::scan_log(&cfg.store_dir(), |_, _| n_events += 1)?;
            }
            if n_events > 0 {
                anyhow::bail!(
                    "there is no network directory at {}, but the store at {} holds {n_events} events: they were signed under a network whose directory is missing here, and a new development network would have other keys; put that network directory back (or pass --network-dir)",
                    dir.display(),
                    cfg.store_dir().display()
                );
            }
        }
        if let Some(created) = network::create_dev(&dir, &id, pipeline::now())? {
            for path in &created.removed {
                tracing::info!(path = %path.display(), "removed what an interrupted first start left");
            }
            tracing::warn!(
                dir = %created.dir.display(),
                anchor_fingerprint = %created.anchor_fingerprint,
                tokens = %created.token_dir.display(),
                "created a DEVELOPMENT network with fresh random keys; its anchor key sits next to the node's data: never use it for real patients"
            );
        }
    }
    let sites: Vec<SiteId> = cfg
        .sites
        .iter()
        .map(|s| SiteId::parse(s))
        .collect::<Result<_, _>>()?;
    Ok(network::load(&dir, &sites)?)
}

/// Loads the network the node works in; never creates one (for maintenance commands,
/// which must not leave keys behind on a mistyped path).
pub fn open_network(cfg: &Config) -> anyhow::Result<network::Network> {
    let dir = cfg.network_dir();
    if !dir.join("anchor.pub").exists() {
        anyhow::bail!(
            "there is no network at {} (no anchor.pub): check --data-dir (or pass --network-dir); this command never creates a network",
            dir.display()
        );
    }
    load_network(cfg)
}

/// Checks, while the store is replayed at start, that the events this node's sites signed
/// were signed in this network with keys its anchor certified for them: a store written
/// under another network (or a network directory whose keys were replaced) must not have
/// its feeds continued with other keys.
#[derive(Debug)]
struct StoreBelongs {
    network: NetworkId,
    keys: std::collections::HashMap<SiteId, Vec<ledger_core::PublicKey>>,
    first_stranger: Option<String>,
}

impl StoreBelongs {
    fn new(network: &network::Network) -> StoreBelongs {
        let mut keys: std::collections::HashMap<SiteId, Vec<ledger_core::PublicKey>> =
            std::collections::HashMap::new();
        for site in &network.local_sites {
            keys.insert(
                site.id.clone(),
                network
                    .certificates
                    .iter()
                    .filter(|c| c.site == site.id)
                    .map(|c| c.key)
                    .collect(),
            );
        }
        StoreBelongs {
            network: network.id.clone(),
            keys,
            first_stranger: None,
        }
    }

    fn visit(&mut self, e: &ledger_core::Event) {
        if self.first_stranger.is_some() {
            return;
        }
        if e.network() != &self.network {
            self.first_stranger = Some(format!(
                "{} seq {} belongs to network {}, not {}",
                e.author(),
                e.seq(),
                e.network(),
                self.network
            ));
        } else if let Some(keys) = self.keys.get(e.author()) {
            if !keys.contains(e.key()) {
                self.first_stranger = Some(format!(
                    "{} seq {} is signed by key {}, which network {}'s anchor never certified for {}",
                    e.author(),
                    e.seq(),
                    e.key().fingerprint(),
                    self.network,
                    e.author()
                ));
            }
        }
    }
}

/// `# HELP` lines for the metrics an operator alerts on.
fn describe_metrics() {
    metrics::describe_counter!(
        "ledger_appends_total",
        "Appends answered, by result: ok (a retry answered with its original receipt too) or the status code of a refusal"
    );
    metrics::describe_histogram!(
        "ledger_append_seconds",
        metrics::Unit::Seconds,
        "Time from an append's arrival to its durable answer"
    );
    metrics::describe_histogram!(
        "ledger_commit_group_events",
        metrics::Unit::Count,
        "Events made durable by one fdatasync of the event log (group commit)"
    );
    metrics::describe_histogram!(
        "ledger_commit_seconds",
        metrics::Unit::Seconds,
        "Time to write and fdatasync one commit group"
    );
    metrics::describe_counter!("ledger_verify_total", "VerifyChain calls, by verdict");
}

pub fn policy(cfg: &Config) -> Policy {
    Policy {
        clock_tolerance: Millis(cfg.clock_tolerance_ms),
        ..Policy::default()
    }
}

/// Runs the node until `shutdown` is cancelled (or a storage failure cancels it), then
/// finishes the appends in flight and returns. Calls still open after the shutdown grace,
/// or once `hurry` is cancelled, are closed.
///
/// # Errors
/// When the network, the store or the listening socket cannot be opened, and when the node
/// stopped because a write to its log or index failed.
pub async fn run(
    cfg: Config,
    shutdown: CancellationToken,
    hurry: CancellationToken,
) -> anyhow::Result<()> {
    let network = Arc::new(load_network(&cfg)?);
    let store_cfg = cfg.store_config();
    let mut ledger = ledger::Ledger::new(
        network.id.clone(),
        policy(&cfg),
        network.roles(),
        network
            .local_sites
            .iter()
            .map(|s| network::LocalSite {
                id: s.id.clone(),
                role: s.role,
                key: s.key.clone(),
                standing: s.standing.clone(),
            })
            .collect(),
    );
    ledger.set_clock_budget(cfg.limits.chain_clock_entries);
    let started = std::time::Instant::now();
    let mut belongs = StoreBelongs::new(&network);
    let (store, report) = {
        let ledger = &mut ledger;
        let belongs = &mut belongs;
        tokio::task::block_in_place(|| {
            store::Store::open(&store_cfg, |r| {
                belongs.visit(&r.event);
                ledger.replay(r);
            })
        })?
    };
    if let Some(stranger) = belongs.first_stranger {
        anyhow::bail!(
            "the store at {} was not written under the network at {}: {stranger}; point --data-dir and --network-dir at one node's own store and network",
            store_cfg.dir.display(),
            network.dir.display()
        );
    }
    ledger.resolve_forks(&store)?;
    if cfg.nats.is_some() {
        replication::prepare(&mut ledger, &network, &store, &cfg.store_dir())?;
    }
    ledger.trim();
    tracing::info!(
        events = report.n_records,
        log_bytes = report.log_bytes,
        cut_bytes = report.cut_bytes,
        reindexed = report.reindexed,
        chains = ledger.chains().len(),
        seconds = started.elapsed().as_secs_f64(),
        "store opened"
    );
    if report.cut_bytes > 0 {
        tracing::warn!(cut_bytes = report.cut_bytes, "cut an incomplete record from the end of the log (a crash during a write that was never acknowledged)");
    }
    let store = Arc::new(store);
    let (pipeline, committer) = pipeline::Pipeline::start(
        ledger,
        store,
        cfg.limits.append_queue_depth,
        cfg.limits.commit_group_max,
        shutdown.clone(),
    );
    let heard = Arc::new(alerts::Heard::default());
    let board = Arc::new(alerts::Board::new());
    let replication = match &cfg.nats {
        Some(nats) => {
            // Silence is counted from the start for every site this node does not sign for.
            let started_at = pipeline::now();
            for site in network.roles().keys() {
                if !network.local_sites.iter().any(|s| &s.id == site) {
                    heard.expect(site, started_at);
                }
            }
            replication::start(
                nats,
                network.clone(),
                pipeline.clone(),
                cfg.store_dir(),
                heard.clone(),
                board.clone(),
                shutdown.clone(),
            )
            .await?
        }
        None => {
            tracing::info!("no NATS configured: standalone node");
            Vec::new()
        }
    };

    if let Some(addr) = cfg.metrics_listen {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .set_buckets(&[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ])?
            // A count of events, not seconds: with the latency buckets every shared group
            // fell into +Inf and the histogram could not show group commit at work.
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full("ledger_commit_group_events".to_owned()),
                &[
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0,
                ],
            )?
            .install()
            .with_context(|| format!("starting the metrics listener on {addr}"))?;
        describe_metrics();
        tracing::info!(%addr, "metrics listening");
    }

    // Installed before the node says it listens: from then on SIGHUP reloads and never
    // falls to the default action, which would end the process.
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hangups) => {
            tokio::spawn(reload_tokens_on_hangup(
                hangups,
                network.clone(),
                shutdown.clone(),
            ));
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: token files are read at start only");
        }
    }

    tokio::spawn(alerts::run(
        board.clone(),
        pipeline.clone(),
        cfg.alerts.policy(),
        heard.clone(),
        shutdown.clone(),
    ));
    let api = Arc::new(
        grpc::service::LedgerApi::new(
            pipeline.clone(),
            network.clone(),
            cfg.limits.clone(),
            policy(&cfg),
            board.clone(),
            shutdown.clone(),
        )
        .with_alert_policy(cfg.alerts.policy()),
    );
    // Bound before the gRPC listener says it listens, so whoever waits for that line can
    // also read the page's address.
    let web_task = if cfg.http.enabled {
        let listener = tokio::net::TcpListener::bind(cfg.http.listen)
            .await
            .with_context(|| {
                format!(
                    "opening the web page's listener on {} (if another program holds that port, pass --http-listen ADDR, or --no-http to serve no page)",
                    cfg.http.listen
                )
            })?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "web page served at http://{addr}/");
        let web = Arc::new(web::Web {
            api: api.clone(),
            pipeline: pipeline.clone(),
            network: network.clone(),
            board: board.clone(),
            alert_policy: cfg.alerts.policy(),
            live: Arc::new(tokio::sync::Semaphore::new(cfg.http.live_streams_max)),
            shutdown: shutdown.clone(),
        });
        let stop = shutdown.clone();
        Some(tokio::spawn(async move {
            if let Err(e) = web::serve(listener, web, stop).await {
                tracing::error!(error = %e, "the web page's server stopped");
            }
        }))
    } else {
        tracing::info!("web page disabled");
        None
    };
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<proto::v1::ledger_service_server::LedgerServiceServer<grpc::service::LedgerApi>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let service = proto::v1::ledger_service_server::LedgerServiceServer::from_arc(api)
        .max_decoding_message_size(cfg.limits.request_bytes_max)
        .max_encoding_message_size(8 * 1024 * 1024);
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("listening on {}", cfg.listen))?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, network = %network.id, sites = network.local_sites.len(), "ledger node listening on {local}");
    let mut server = tonic::transport::Server::builder();
    if let (Some(cert), Some(key)) = (&cfg.tls_cert_file, &cfg.tls_key_file) {
        let cert_pem = std::fs::read(cert)
            .with_context(|| format!("reading the TLS certificate {}", cert.display()))?;
        let key_pem =
            std::fs::read(key).with_context(|| format!("reading the TLS key {}", key.display()))?;
        server = server
            .tls_config(
                tonic::transport::ServerTlsConfig::new()
                    .identity(tonic::transport::Identity::from_pem(cert_pem, key_pem)),
            )
            .context("configuring TLS")?;
        tracing::info!(cert = %cert.display(), "serving gRPC over TLS");
    }
    let serve = server
        .layer(tower::util::MapResponseLayer::new(
            grpc::status::remap_size_errors,
        ))
        .add_service(health)
        .add_service(reflection)
        .add_service(service)
        .serve_with_incoming_shutdown(
            // Without TCP_NODELAY, Nagle's algorithm and delayed ACKs hold small answers back
            // for ~40 ms on a quiet connection.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown.cancelled(),
        );
    // The server stops taking calls at once but waits for the open ones, and a stream a
    // client keeps open (a health watch) never ends by itself: it gets a grace period.
    // Health watchers and load balancers learn of the stop first.
    let grace = std::time::Duration::from_millis(cfg.limits.shutdown_grace_ms);
    let grace_over = async {
        shutdown.cancelled().await;
        health_reporter
            .set_not_serving::<proto::v1::ledger_service_server::LedgerServiceServer<grpc::service::LedgerApi>>()
            .await;
        health_reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        tokio::select! {
            () = tokio::time::sleep(grace) => {}
            () = hurry.cancelled() => {}
        }
    };
    tokio::select! {
        served = serve => served?,
        () = grace_over => {
            tracing::warn!(grace_ms = cfg.limits.shutdown_grace_ms, "calls still open when the shutdown grace ran out (streams such as health watches): closing them");
        }
    }
    tracing::info!("shutting down: finishing appends in flight");
    if let Some(task) = web_task {
        if tokio::time::timeout(grace, task).await.is_err() {
            tracing::warn!("the web page's server did not stop within the shutdown grace");
        }
    }
    // The replication tasks hold the pipeline; they end on the same cancellation.
    for task in replication {
        if tokio::time::timeout(std::time::Duration::from_secs(10), task)
            .await
            .is_err()
        {
            tracing::warn!("a replication task did not stop within 10 s");
        }
    }
    pipeline.close().await;
    tokio::task::spawn_blocking(move || committer.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the committer thread panicked"))?;
    // After the committer: its last writes may be the ones that failed. A supervisor must
    // see this stop as a failure: restart the node (it rebuilds from the log) once the
    // disk is mended.
    if pipeline.failed() {
        anyhow::bail!("stopped after a storage failure (the error is logged above); every acknowledged append is in the log, and a restart rebuilds the index from it");
    }
    tracing::info!("stopped");
    Ok(())
}

/// On each SIGHUP, reads the network's token files again ([`network::Network::reload_tokens`]):
/// an operator revokes a leaked token by removing or replacing its file, without stopping
/// the node. A set that fails a check is not taken, and the node goes on with the tokens
/// it had.
async fn reload_tokens_on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    network: Arc<network::Network>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            received = hangups.recv() => {
                if received.is_none() {
                    return;
                }
            }
        }
        let dir = network.dir.join("tokens");
        match network.reload_tokens() {
            Ok(n) => {
                tracing::info!(tokens = n, dir = %dir.display(), "SIGHUP: token files read again; {n} tokens accepted")
            }
            Err(e) => {
                tracing::error!(error = %e, dir = %dir.display(), "SIGHUP: token files not taken, the tokens in use are unchanged")
            }
        }
    }
}
