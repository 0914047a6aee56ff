//! Replication over NATS JetStream: every node holds every site's feed.
//!
//! - **Publish.** The event log is the outbox: a local site's events past its outbox mark
//!   (the last seq NATS acknowledged) are published in seq order to
//!   `ledger.v1.<network>.events.<site>`, each with its event id as `Nats-Msg-Id`, so a
//!   republish after a crash or a lost acknowledgement never adds a second copy within the
//!   stream's duplicate window (and receivers store by id anyway). Only durable events are
//!   published: the publisher reads them from the index, which follows the fdatasync.
//! - **Consume.** One durable pull consumer per node reads every feed's subject. Each
//!   event is decoded, admitted (certificate, revocation, strict signature:
//!   [`ledger_core::Admission`]), placed in its author's feed ([`ledger_core::place`]) and
//!   stored through the same committer as local appends; the message is acknowledged only
//!   after the fdatasync. JetStream's acknowledgement is never taken as durability: each
//!   node's own disk is the truth, and a receiver checks everything it receives.
//! - **Repair.** An event past a gap is not stored (feeds are held contiguously); its
//!   message is negatively acknowledged with a delay while the missing range is asked for
//!   by request/reply on `ledger.v1.<network>.repair.<site>`, which any node holding the
//!   range answers.
//! - **Checkpoints.** Each node periodically signs "site S's seq n is event h" for its
//!   published feeds. A second event for a held seq, or a checkpoint naming another head,
//!   is proof of equivocation: both are kept (the event in the log, the checkpoint in
//!   `evidence/`), the feed is frozen, a metric and an error log are raised, and the
//!   chains involved report `integrity.feed_fork`.
//! - **Learning its own feed.** A node whose store holds nothing of a site's feed (new or
//!   restored) signs nothing for it until NATS told it the feed's latest seq and it holds
//!   the feed up to there; otherwise it would sign a seq the network already has.
//!
//! NATS being down never stops local appends: the outbox just grows and drains in order
//! on reconnection.

use crate::config::NatsConfig;
use crate::network::Network;
use crate::pipeline::{Ingested, Pipeline};
use crate::store::Store;
use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, stream, AckKind};
use bytes::Bytes;
use ledger_core::{Admission, Checkpoint, Event, EventId, Role, Seq, SiteId, Trust};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;

/// Events published before their acknowledgements are awaited.
const PUBLISH_WINDOW: usize = 256;
/// Messages handled as one batch (one admission pass, one commit).
const CONSUME_BATCH: usize = 1024;
/// How long a batch waits to fill once it has a message.
const CONSUME_BATCH_WAIT: Duration = Duration::from_millis(2);
/// Redelivery delay for an event that cannot be placed yet (gap, missing parent).
const RETRY_DELAY: Duration = Duration::from_millis(500);
/// Most events in one repair answer, and most bytes (NATS's default payload limit is 1 MiB).
const REPAIR_EVENTS_MAX: u64 = 512;
const REPAIR_BYTES_MAX: usize = 768 * 1024;
const REPAIR_TIMEOUT: Duration = Duration::from_secs(3);
/// A file in the store directory that makes the node learn every local feed from the
/// network before signing (written when a store is restored from a backup).
pub const RESYNC_MARKER: &str = "resync-required";

/// What stage one made of one message.
enum Verdict {
    Reject { reason: &'static str, why: String },
    Held,
    Event(Box<Event>, Role),
    Checkpoint(Box<Checkpoint>),
}

/// A batch's messages that still need storing, in order.
#[derive(Default)]
struct Admitted {
    events: Vec<(jetstream::Message, Event, Role)>,
    checkpoints: Vec<(jetstream::Message, Checkpoint)>,
}

/// The subjects of one network.
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
}

/// A site id as one subject token (site ids may hold '.', which separates tokens).
pub fn token(site: &SiteId) -> String {
    site.as_str().replace('.', "%2E")
}

impl Subjects {
    pub fn new(network: &ledger_core::NetworkId) -> Subjects {
        Subjects {
            prefix: format!("ledger.v1.{}", network.as_str().replace('.', "%2E")),
        }
    }

    pub fn events(&self, site: &SiteId) -> String {
        format!("{}.events.{}", self.prefix, token(site))
    }

    pub fn checkpoints(&self, site: &SiteId) -> String {
        format!("{}.checkpoints.{}", self.prefix, token(site))
    }

    pub fn repair(&self, site: &SiteId) -> String {
        format!("{}.repair.{}", self.prefix, token(site))
    }

    /// Alert raises and clears about a site, as JSON, for hospital and MES systems (core
    /// NATS, not kept in the stream).
    pub fn alerts(&self, site: &SiteId) -> String {
        format!("{}.alerts.{}", self.prefix, token(site))
    }

    /// Alerts about no one site (a broken chain).
    pub fn network_alerts(&self) -> String {
        format!("{}.network-alerts", self.prefix)
    }

    /// Liveness: each node's latest signed checkpoint of each of its feeds, published
    /// every checkpoint interval on core NATS (not kept in the stream).
    pub fn heartbeat(&self, site: &SiteId) -> String {
        format!("{}.heartbeat.{}", self.prefix, token(site))
    }

    fn all(&self, kind: &str) -> String {
        format!("{}.{kind}.*", self.prefix)
    }

    /// `(kind, site token)` of a subject of this network.
    fn parse<'a>(&self, subject: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('.')?;
        let (kind, site) = rest.split_once('.')?;
        (!site.contains('.')).then_some((kind, site))
    }
}

/// The default stream name for a network.
pub fn default_stream(network: &ledger_core::NetworkId) -> String {
    let name: String = network
        .as_str()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("LEDGER_{name}")
}

/// The default durable consumer name: one per node, from the sites it signs for.
pub fn default_consumer(network: &Network) -> String {
    let mut sites: Vec<String> = network
        .local_sites
        .iter()
        .map(|s| {
            s.id.as_str()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        })
        .collect();
    sites.sort();
    let name = format!("node_{}", sites.join("_"));
    name.chars().take(120).collect()
}

fn count_rejected(reason: &'static str) {
    metrics::counter!("ledger_replication_rejected_total", "reason" => reason).increment(1);
}

fn count_received(outcome: &'static str) {
    metrics::counter!("ledger_replication_received_total", "outcome" => outcome).increment(1);
}

/// State shared by the replication tasks.
struct Shared {
    client: async_nats::Client,
    js: jetstream::Context,
    subjects: Subjects,
    stream_name: String,
    replicas: usize,
    consumer_name: String,
    checkpoint_interval: Duration,
    network: Arc<Network>,
    admission: Admission,
    /// Site token -> site, for every certified site.
    sites_by_token: HashMap<String, SiteId>,
    pipeline: Pipeline,
    evidence_dir: PathBuf,
    store_dir: PathBuf,
    shutdown: CancellationToken,
    /// Sites whose gap is being repaired right now.
    repairing: Arc<Mutex<HashSet<SiteId>>>,
    /// The highest seq each site's trusted checkpoints stated.
    checkpoint_seqs: Mutex<HashMap<SiteId, u64>>,
    /// Set when the store is empty or restored: the durable consumer on the server has
    /// acknowledged events this store no longer holds, so it is deleted and recreated from
    /// the stream's start once.
    reset_consumer: std::sync::atomic::AtomicBool,
    /// When each site was last heard from, for `site_silent` alerts.
    heard: Arc<crate::alerts::Heard>,
}

/// Before the node serves: stops signing for local sites whose feed must first be learned
/// from the network, and loads the checkpoints kept as evidence.
///
/// # Errors
/// When the evidence directory cannot be read.
pub fn prepare(
    ledger: &mut crate::ledger::Ledger,
    network: &Network,
    store: &Store,
    store_dir: &Path,
) -> anyhow::Result<()> {
    let resync = store_dir.join(RESYNC_MARKER).exists();
    for site in &network.local_sites {
        if resync || ledger.feed_state(&site.id).seq == 0 {
            ledger.set_learning(&site.id, true);
            tracing::warn!(site = %site.id, "site {} signs nothing until this node has learned its feed's latest seq from the network ({})", site.id, if resync { "the store was restored" } else { "the store holds none of its events" });
        }
    }
    let (admission, _) = Admission::new(&trust(network));
    for cp in load_evidence(&store_dir.join("evidence"))? {
        if admission.checkpoint_trusted(&cp) {
            ledger.check_checkpoint(&cp, store)?;
        }
    }
    Ok(())
}

fn trust(network: &Network) -> Trust {
    Trust {
        anchor: network.anchor,
        network: network.id.clone(),
        certificates: network.certificates.clone(),
        revocations: network.revocations.clone(),
    }
}

/// Connects (in the background: the node works offline until NATS answers) and starts the
/// replication tasks. They end when `shutdown` is cancelled.
///
/// # Errors
/// When a credentials, token or TLS file cannot be read.
pub async fn start(
    cfg: &NatsConfig,
    network: Arc<Network>,
    pipeline: Pipeline,
    store_dir: PathBuf,
    heard: Arc<crate::alerts::Heard>,
    board: Arc<crate::alerts::Board>,
    shutdown: CancellationToken,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let reset_consumer = pipeline.store().n_events() == 0 || store_dir.join(RESYNC_MARKER).exists();
    let client = connect(cfg, &network).await?;
    let js = match &cfg.domain {
        Some(d) => jetstream::with_domain(client.clone(), d),
        None => jetstream::new(client.clone()),
    };
    let (admission, bad) = Admission::new(&trust(&network));
    for f in bad {
        tracing::warn!(code = %f.code, "{}", f.message);
    }
    let sites_by_token = network
        .certificates
        .iter()
        .map(|c| (token(&c.site), c.site.clone()))
        .collect();
    let shared = Arc::new(Shared {
        client,
        js,
        subjects: Subjects::new(&network.id),
        stream_name: cfg
            .stream
            .clone()
            .unwrap_or_else(|| default_stream(&network.id)),
        replicas: cfg.replicas,
        consumer_name: cfg
            .consumer
            .clone()
            .unwrap_or_else(|| default_consumer(&network)),
        checkpoint_interval: Duration::from_millis(cfg.checkpoint_interval_ms),
        admission,
        sites_by_token,
        pipeline,
        evidence_dir: store_dir.join("evidence"),
        store_dir,
        shutdown,
        network,
        repairing: Arc::new(Mutex::new(HashSet::new())),
        checkpoint_seqs: Mutex::new(HashMap::new()),
        reset_consumer: std::sync::atomic::AtomicBool::new(reset_consumer),
        heard,
    });
    tracing::info!(stream = %shared.stream_name, consumer = %shared.consumer_name, urls = ?cfg.urls, "replicating over NATS JetStream");
    let tasks = vec![
        tokio::spawn(shared.clone().publish_loop()),
        tokio::spawn(shared.clone().consume_loop()),
        tokio::spawn(shared.clone().answer_repairs()),
        tokio::spawn(shared.clone().checkpoint_loop()),
        tokio::spawn(shared.clone().learn_feeds()),
        tokio::spawn(shared.clone().hear_heartbeats()),
        tokio::spawn(shared.clone().publish_alerts(board)),
    ];
    Ok(tasks)
}

async fn connect(cfg: &NatsConfig, network: &Network) -> anyhow::Result<async_nats::Client> {
    let sites: Vec<&str> = network.local_sites.iter().map(|s| s.id.as_str()).collect();
    let mut opts = async_nats::ConnectOptions::new()
        .name(format!("ledger-node {}", sites.join(",")))
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("NATS connected"),
                async_nats::Event::Disconnected => {
                    tracing::warn!("NATS disconnected: appends go on locally and are published on reconnection")
                }
                other => tracing::info!(event = %other, "NATS"),
            }
        });
    if let Some(path) = &cfg.token_file {
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("reading nats.token_file {}", path.display()))?;
        opts = opts.token(token.trim().to_owned());
    }
    if let Some(path) = &cfg.creds_file {
        opts = opts
            .credentials_file(path)
            .await
            .with_context(|| format!("reading nats.creds_file {}", path.display()))?;
    }
    if cfg.tls_required {
        opts = opts.require_tls(true);
    }
    if let Some(ca) = &cfg.tls_ca_file {
        opts = opts.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&cfg.tls_cert_file, &cfg.tls_key_file) {
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    let addrs: Vec<async_nats::ServerAddr> = cfg
        .urls
        .iter()
        .map(|u| u.parse().with_context(|| format!("nats.urls: {u:?}")))
        .collect::<anyhow::Result<_>>()?;
    opts.connect(addrs)
        .await
        .context("starting the NATS connection")
}

/// Waits `delay` or until shutdown; `false` on shutdown.
async fn pause(shutdown: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

/// Exponential backoff for a task's retries: 100 ms doubling to 5 s.
#[derive(Debug)]
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(Duration::from_millis(100))
    }
    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
        d
    }
    fn reset(&mut self) {
        self.0 = Duration::from_millis(100);
    }
}

impl Shared {
    fn store(&self) -> &Arc<Store> {
        self.pipeline.store()
    }

    async fn ensure_stream(&self) -> anyhow::Result<stream::Stream> {
        let config = stream::Config {
            name: self.stream_name.clone(),
            subjects: vec![
                self.subjects.all("events"),
                self.subjects.all("checkpoints"),
            ],
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            allow_direct: true,
            ..Default::default()
        };
        self.js
            .get_or_create_stream(config)
            .await
            .with_context(|| format!("getting or creating stream {}", self.stream_name))
    }

    // ---- publish ----

    async fn publish_loop(self: Arc<Self>) {
        let mut wake = self.pipeline.subscribe();
        let mut backoff = Backoff::new();
        let mut failing = false;
        let mut stream_ready = false;
        loop {
            if !stream_ready {
                match self.ensure_stream().await {
                    Ok(_) => stream_ready = true,
                    Err(e) => {
                        if !failing {
                            tracing::warn!(error = %format!("{e:#}"), "NATS: the stream is not reachable yet; events stay in the local outbox");
                            failing = true;
                        }
                        if !pause(&self.shutdown, backoff.next()).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            match self.publish_pending().await {
                Ok(n) => {
                    if failing {
                        tracing::info!("NATS: publishing again");
                        failing = false;
                    }
                    backoff.reset();
                    if n > 0 {
                        continue;
                    }
                    tokio::select! {
                        () = self.shutdown.cancelled() => return,
                        _ = wake.recv() => {}
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %format!("{e:#}"), "NATS: publishing failed; events stay in the local outbox and are published on reconnection");
                        failing = true;
                    }
                    if !pause(&self.shutdown, backoff.next()).await {
                        return;
                    }
                }
            }
        }
    }

    /// Publishes one window of each local feed past its outbox mark; returns how many.
    async fn publish_pending(&self) -> anyhow::Result<usize> {
        let mut total = 0;
        for site in &self.network.local_sites {
            let store = self.store().clone();
            let id = site.id.clone();
            let (mark, events) = tokio::task::spawn_blocking(move || {
                let mark = store.outbox_mark(&id)?;
                let mut events = Vec::new();
                for seq in mark + 1..=mark + PUBLISH_WINDOW as u64 {
                    match store.feed_record(&id, Seq(seq))? {
                        Some(e) => events.push(e),
                        None => break,
                    }
                }
                Ok::<_, crate::store::StoreError>((mark, events))
            })
            .await??;
            let held = self.pipeline.ledger().feed_state(&site.id).seq;
            metrics::gauge!("ledger_replication_outbox_events", "site" => site.id.to_string())
                .set(held.saturating_sub(mark) as f64);
            if events.is_empty() {
                continue;
            }
            let subject = self.subjects.events(&site.id);
            let mut acks = Vec::with_capacity(events.len());
            for e in &events {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", e.id().to_string().as_str());
                let ack = self
                    .js
                    .publish_with_headers(
                        subject.clone(),
                        headers,
                        Bytes::copy_from_slice(e.bytes()),
                    )
                    .await
                    .context("publishing an event")?;
                acks.push((e.seq().0, ack));
            }
            let mut published = mark;
            let mut result = Ok(());
            for (seq, ack) in acks {
                match ack.await {
                    Ok(_) => published = seq,
                    Err(e) => {
                        result = Err(anyhow::Error::new(e)
                            .context("waiting for the stream's acknowledgement"));
                        break;
                    }
                }
            }
            if published > mark {
                metrics::counter!("ledger_replication_published_total").increment(published - mark);
                total += (published - mark) as usize;
                let store = self.store().clone();
                let id = site.id.clone();
                tokio::task::spawn_blocking(move || store.set_outbox_mark(&id, published))
                    .await??;
            }
            result?;
        }
        Ok(total)
    }

    // ---- consume ----

    async fn consume_loop(self: Arc<Self>) {
        let mut backoff = Backoff::new();
        let mut failing = false;
        loop {
            let messages = match self.open_consumer().await {
                Ok(m) => {
                    if failing {
                        tracing::info!("NATS: consuming again");
                        failing = false;
                    }
                    backoff.reset();
                    m
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %format!("{e:#}"), "NATS: cannot consume yet; retrying");
                        failing = true;
                    }
                    if !pause(&self.shutdown, backoff.next()).await {
                        return;
                    }
                    continue;
                }
            };
            let batches = messages.chunks_timeout(CONSUME_BATCH, CONSUME_BATCH_WAIT);
            tokio::pin!(batches);
            // Admission of the next batch overlaps the commit of this one; stage two takes
            // batches in order, so feeds are still stored in stream order.
            let (to_store, mut stored_rx) = tokio::sync::mpsc::channel::<Admitted>(1);
            let stage_two = {
                let this = self.clone();
                tokio::spawn(async move {
                    while let Some(batch) = stored_rx.recv().await {
                        this.store_batch(batch).await;
                    }
                })
            };
            loop {
                let batch = tokio::select! {
                    () = self.shutdown.cancelled() => return,
                    b = batches.next() => b,
                };
                let Some(batch) = batch else { break };
                let mut ok = Vec::with_capacity(batch.len());
                let mut broken = false;
                for m in batch {
                    match m {
                        Ok(m) => ok.push(m),
                        Err(e) => {
                            tracing::debug!(error = %e, "NATS: message stream error");
                            broken = true;
                        }
                    }
                }
                if !ok.is_empty() {
                    let admitted = self.admit_batch(ok).await;
                    if to_store.send(admitted).await.is_err() {
                        break;
                    }
                }
                if broken {
                    break;
                }
            }
            drop(to_store);
            let _ = stage_two.await;
            if !pause(&self.shutdown, backoff.next()).await {
                return;
            }
        }
    }

    async fn open_consumer(&self) -> anyhow::Result<consumer::pull::Stream> {
        let stream = self.ensure_stream().await?;
        let config = consumer::pull::Config {
            durable_name: Some(self.consumer_name.clone()),
            filter_subjects: vec![
                self.subjects.all("events"),
                self.subjects.all("checkpoints"),
            ],
            ack_policy: consumer::AckPolicy::Explicit,
            // A message delivered to a node that died comes back after this; a gap it left
            // is usually repaired sooner (see `handle_checkpoint`).
            ack_wait: Duration::from_secs(10),
            max_ack_pending: 20_000,
            max_deliver: -1,
            ..Default::default()
        };
        if self
            .reset_consumer
            .load(std::sync::atomic::Ordering::Acquire)
        {
            match stream.delete_consumer(&self.consumer_name).await {
                Ok(_) => {
                    tracing::info!(consumer = %self.consumer_name, "the store is new or restored: reading the stream from its start")
                }
                Err(e)
                    if matches!(e.kind(), stream::ConsumerErrorKind::JetStream(ref j)
                        if j.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND) => {}
                Err(e) => return Err(anyhow::Error::new(e).context("resetting the consumer")),
            }
            self.reset_consumer
                .store(false, std::sync::atomic::Ordering::Release);
        }
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(&self.consumer_name, config)
            .await
            .with_context(|| format!("getting or creating consumer {}", self.consumer_name))?;
        consumer
            .stream()
            .max_messages_per_batch(CONSUME_BATCH)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .context("reading the consumer's messages")
    }

    /// Stage one of a batch, off the async runtime: decodes every message, recognises events
    /// already held (redeliveries, a node's own events coming back) without checking their
    /// signatures again, and admits the rest on both cores. Acknowledges what needs no
    /// storing; returns the rest, in order, for [`Shared::store_batch`].
    async fn admit_batch(self: &Arc<Self>, batch: Vec<jetstream::Message>) -> Admitted {
        let this = self.clone();
        let (batch, verdicts) = tokio::task::spawn_blocking(move || {
            let verdicts = this.judge_messages(&batch);
            (batch, verdicts)
        })
        .await
        .unwrap_or_else(|_| (Vec::new(), Vec::new()));
        let mut out = Admitted::default();
        for (m, verdict) in batch.into_iter().zip(verdicts) {
            match verdict {
                Verdict::Reject { reason, why } => self.reject(&m, reason, &why).await,
                Verdict::Held => {
                    count_received("duplicate");
                    ack(&m, AckKind::Ack).await;
                }
                Verdict::Event(e, role) => {
                    self.heard.heard(e.author(), crate::pipeline::now());
                    out.events.push((m, *e, role));
                }
                Verdict::Checkpoint(cp) => out.checkpoints.push((m, *cp)),
            }
        }
        out
    }

    fn judge_messages(&self, batch: &[jetstream::Message]) -> Vec<Verdict> {
        let mut verdicts: Vec<Verdict> = batch.iter().map(|m| self.decode(m)).collect();
        {
            let ledger = self.pipeline.ledger();
            for v in &mut verdicts {
                if let Verdict::Event(e, _) = v {
                    if ledger.holds(e, self.store()).unwrap_or(false) {
                        *v = Verdict::Held;
                    }
                }
            }
        }
        let to_admit: Vec<(usize, Event)> = verdicts
            .iter_mut()
            .enumerate()
            .filter_map(|(i, v)| match std::mem::replace(v, Verdict::Held) {
                Verdict::Event(e, _) => Some((i, *e)),
                other => {
                    *v = other;
                    None
                }
            })
            .collect();
        let (positions, events): (Vec<usize>, Vec<Event>) = to_admit.into_iter().unzip();
        for (i, verdict) in positions
            .into_iter()
            .zip(admit_all(&self.admission, events))
        {
            verdicts[i] = match verdict {
                Ok((e, role)) => Verdict::Event(Box::new(e), role),
                Err(finding) => Verdict::Reject {
                    reason: match finding.code {
                        ledger_core::Code::WrongNetwork => "wrong_network",
                        ledger_core::Code::UnknownKey => "unknown_key",
                        ledger_core::Code::KeyExpired => "key_expired",
                        ledger_core::Code::KeyRevoked => "key_revoked",
                        _ => "bad_signature",
                    },
                    why: finding.message,
                },
            };
        }
        verdicts
    }

    /// Decodes one message and checks it sits on its author's subject. Events come back
    /// as `Verdict::Event` with a placeholder role until admitted.
    fn decode(&self, m: &jetstream::Message) -> Verdict {
        let subject = m.subject.as_str();
        let reject = |reason, why: String| Verdict::Reject { reason, why };
        let Some((kind, site_token)) = self.subjects.parse(subject) else {
            return reject("subject", format!("unexpected subject {subject}"));
        };
        match kind {
            "events" => match Event::from_bytes(&m.payload) {
                Ok(e) if token(e.author()) == site_token => {
                    Verdict::Event(Box::new(e), Role::Clinic)
                }
                Ok(e) => reject(
                    "subject_mismatch",
                    format!("event by {} on subject {subject}", e.author()),
                ),
                Err(e) => reject(
                    "undecodable",
                    format!("not an event ({e}), {} bytes on {subject}", m.payload.len()),
                ),
            },
            "checkpoints" => match Checkpoint::from_bytes(&m.payload) {
                Ok(cp) if token(&cp.site) == site_token => Verdict::Checkpoint(Box::new(cp)),
                Ok(cp) => reject(
                    "subject_mismatch",
                    format!("checkpoint of {} on subject {subject}", cp.site),
                ),
                Err(e) => reject(
                    "undecodable",
                    format!(
                        "not a checkpoint ({e}), {} bytes on {subject}",
                        m.payload.len()
                    ),
                ),
            },
            _ => reject("subject", format!("unexpected subject {subject}")),
        }
    }

    /// Stage two, in batch order: stores the admitted events, acknowledges each once its
    /// event is durable, then handles the checkpoints.
    async fn store_batch(&self, batch: Admitted) {
        if !batch.events.is_empty() {
            self.store_events(batch.events).await;
        }
        for (m, cp) in batch.checkpoints {
            self.handle_checkpoint(&m, cp).await;
        }
    }

    async fn reject(&self, m: &jetstream::Message, reason: &'static str, why: &str) {
        count_rejected(reason);
        tracing::warn!(reason, subject = %m.subject, "replication: rejected a message: {why}");
        if let Err(e) = m.ack_with(AckKind::Term).await {
            tracing::debug!(error = %e, "NATS: terminating a message");
        }
    }

    async fn store_events(&self, events: Vec<(jetstream::Message, Event, Role)>) {
        let mut ingest = Vec::with_capacity(events.len());
        let mut ingest_msgs = Vec::with_capacity(events.len());
        for (m, e, role) in events {
            ingest.push((e, role));
            ingest_msgs.push(m);
        }
        let ids: Vec<(SiteId, u64, EventId)> = ingest
            .iter()
            .map(|(e, _)| (e.author().clone(), e.seq().0, e.id()))
            .collect();
        let results = self.pipeline.ingest(ingest).await;
        let mut gaps: BTreeMap<SiteId, (u64, u64)> = BTreeMap::new();
        for ((m, result), (site, seq, id)) in ingest_msgs.iter().zip(results).zip(ids) {
            match result {
                Ingested::Stored { fork: None } => {
                    count_received("stored");
                    ack(m, AckKind::Ack).await;
                }
                Ingested::Stored { fork: Some(held) } => {
                    count_received("fork");
                    metrics::counter!("ledger_feed_forks_total", "site" => site.to_string())
                        .increment(1);
                    tracing::error!(site = %site, seq, held = %held, evidence = %id, "ALERT: equivocation: site {site} signed two different events as seq {seq}; both are kept as proof and its feed is frozen");
                    ack(m, AckKind::Ack).await;
                }
                Ingested::Duplicate => {
                    count_received("duplicate");
                    ack(m, AckKind::Ack).await;
                }
                Ingested::Gap { from, to } => {
                    count_received("gap");
                    let g = gaps.entry(site).or_insert((from, to));
                    g.0 = g.0.min(from);
                    g.1 = g.1.max(to);
                    ack(m, AckKind::Nak(Some(RETRY_DELAY))).await;
                }
                Ingested::MissingParents { missing } => {
                    count_received("missing_parents");
                    tracing::debug!(site = %site, seq, missing = missing.len(), "replication: parents not here yet; retrying later");
                    ack(m, AckKind::Nak(Some(RETRY_DELAY))).await;
                }
                Ingested::Rejected { reason } => {
                    count_received("rejected");
                    self.reject(m, "feed", &reason).await;
                }
                Ingested::Failed { reason } => {
                    tracing::error!(reason = %reason, "replication: storing failed; the message will be redelivered");
                }
            }
        }
        for (site, (from, to)) in gaps {
            self.spawn_repair(site, from, to);
        }
    }

    async fn handle_checkpoint(&self, m: &jetstream::Message, cp: Checkpoint) {
        if !self.admission.checkpoint_trusted(&cp) {
            self.reject(
                m,
                "checkpoint_untrusted",
                &format!(
                    "checkpoint of {} seq {} is not signed by a key certified for it",
                    cp.site, cp.seq
                ),
            )
            .await;
            return;
        }
        {
            let mut seqs = self
                .checkpoint_seqs
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let s = seqs.entry(cp.site.clone()).or_default();
            *s = (*s).max(cp.seq.0);
        }
        let state = self.pipeline.ledger().feed_state(&cp.site);
        metrics::gauge!("ledger_replication_lag_events", "site" => cp.site.to_string())
            .set(cp.seq.0.saturating_sub(state.seq) as f64);
        // The author's feed is ahead of this node although the stream delivered its events
        // before the checkpoint: they went to a consumer that died, or the stream lost them.
        // Ask for them rather than wait for redelivery.
        if cp.seq.0 > state.seq && state.frozen_at.is_none() {
            self.spawn_repair(cp.site.clone(), state.seq + 1, cp.seq.0);
        }
        let conflict = {
            let mut ledger = self.pipeline.ledger();
            ledger.check_checkpoint(&cp, self.store())
        };
        match conflict {
            Ok(None) => {}
            Ok(Some(held)) => {
                if let Err(e) = save_evidence(&self.evidence_dir, &cp) {
                    tracing::error!(error = %e, "could not keep a checkpoint as evidence");
                }
                metrics::counter!("ledger_feed_forks_total", "site" => cp.site.to_string())
                    .increment(1);
                tracing::error!(site = %cp.site, seq = %cp.seq, held = %held.id(), checkpoint_head = %cp.head, "ALERT: equivocation: site {} signed a checkpoint naming another event as its seq {} than the one this node holds; the checkpoint is kept as proof and the feed is frozen", cp.site, cp.seq);
            }
            Err(e) => {
                tracing::error!(error = %e, "replication: reading the store for a checkpoint failed");
                return;
            }
        }
        ack(m, AckKind::Ack).await;
    }

    // ---- repair ----

    /// Asks the network for a feed's missing range, once at a time per site.
    fn spawn_repair(&self, site: SiteId, from: u64, to: u64) {
        if !self
            .repairing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(site.clone())
        {
            return;
        }
        let task = Repair {
            client: self.client.clone(),
            subject: self.subjects.repair(&site),
            pipeline: self.pipeline.clone(),
            admission: self.admission.clone(),
            site,
            from,
            to,
        };
        let repairing = self.repairing.clone();
        tokio::spawn(async move {
            let site = task.site.clone();
            task.run().await;
            repairing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&site);
        });
    }

    async fn answer_repairs(self: Arc<Self>) {
        let mut backoff = Backoff::new();
        loop {
            let mut sub = match self.client.subscribe(self.subjects.all("repair")).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "NATS: cannot subscribe to repair requests; retrying");
                    if !pause(&self.shutdown, backoff.next()).await {
                        return;
                    }
                    continue;
                }
            };
            loop {
                let msg = tokio::select! {
                    () = self.shutdown.cancelled() => return,
                    m = sub.next() => m,
                };
                let Some(msg) = msg else { break };
                let (Some(reply), Some((_, site_token))) =
                    (msg.reply.clone(), self.subjects.parse(msg.subject.as_str()))
                else {
                    continue;
                };
                let Some(site) = self.sites_by_token.get(site_token).cloned() else {
                    continue;
                };
                let Some((from, to)) = parse_range(&msg.payload) else {
                    count_rejected("repair_request");
                    continue;
                };
                let store = self.store().clone();
                let answer =
                    tokio::task::spawn_blocking(move || read_range(&store, &site, from, to)).await;
                match answer {
                    Ok(Ok(frames)) if !frames.is_empty() => {
                        if let Err(e) = self.client.publish(reply, frames.into()).await {
                            tracing::debug!(error = %e, "NATS: answering a repair request");
                        }
                    }
                    // Holding nothing of the range: stay silent so a node that does answers.
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "reading events to answer a repair request")
                    }
                    Err(e) => tracing::warn!(error = %e, "answering a repair request"),
                }
            }
            if !pause(&self.shutdown, backoff.next()).await {
                return;
            }
        }
    }

    // ---- checkpoints ----

    async fn checkpoint_loop(self: Arc<Self>) {
        let mut last: HashMap<SiteId, u64> = HashMap::new();
        loop {
            if !pause(&self.shutdown, self.checkpoint_interval).await {
                return;
            }
            for site in &self.network.local_sites {
                let store = self.store().clone();
                let id = site.id.clone();
                let head = tokio::task::spawn_blocking(move || {
                    let mark = store.outbox_mark(&id)?;
                    if mark == 0 {
                        return Ok(None);
                    }
                    Ok::<_, crate::store::StoreError>(
                        store.feed_event(&id, Seq(mark))?.map(|h| (mark, h)),
                    )
                })
                .await;
                let Ok(Ok(Some((seq, head)))) = head else {
                    continue;
                };
                let cp = Checkpoint::sign(
                    self.network.id.clone(),
                    site.id.clone(),
                    Seq(seq),
                    head,
                    crate::pipeline::now(),
                    &site.key,
                );
                // Best effort: a lost heartbeat only delays a silence alert's clearing.
                let _ = self
                    .client
                    .publish(
                        self.subjects.heartbeat(&site.id),
                        Bytes::copy_from_slice(cp.bytes()),
                    )
                    .await;
                if last.get(&site.id) == Some(&seq) {
                    continue;
                }
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(
                    "Nats-Msg-Id",
                    format!("checkpoint:{}:{seq}", site.id).as_str(),
                );
                let published = match self
                    .js
                    .publish_with_headers(
                        self.subjects.checkpoints(&site.id),
                        headers,
                        Bytes::copy_from_slice(cp.bytes()),
                    )
                    .await
                {
                    Ok(ack) => ack.await.is_ok(),
                    Err(_) => false,
                };
                if published {
                    last.insert(site.id.clone(), seq);
                    metrics::counter!("ledger_replication_checkpoints_published_total")
                        .increment(1);
                }
            }
        }
    }

    /// Publishes every alert this node raises or clears on its site's subject. Best effort
    /// (core NATS): a subscriber that must miss nothing reads `WatchAlerts`.
    async fn publish_alerts(self: Arc<Self>, board: Arc<crate::alerts::Board>) {
        let (_, mut changes) = board.watch();
        loop {
            let held = tokio::select! {
                () = self.shutdown.cancelled() => return,
                msg = changes.recv() => match msg {
                    Ok(h) => h,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "alerts published on NATS fell behind; {n} changes not published");
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            };
            let k = &held.alert.key;
            let subject = match &k.site {
                Some(site) => self.subjects.alerts(site),
                None => self.subjects.network_alerts(),
            };
            let doc = serde_json::json!({
                "kind": k.kind.as_str(),
                "severity": k.kind.severity().as_str(),
                "state": if held.cleared.is_some() { "cleared" } else { "raised" },
                "coi": k.coi.as_ref().map(ToString::to_string),
                "unit": k.unit.as_ref().map(ToString::to_string),
                "site": k.site.as_ref().map(ToString::to_string),
                "event": k.event.map(|e| e.to_hex()),
                "message": held.alert.message,
                "since": held.alert.since.to_string(),
                "raised": held.raised.to_string(),
                "cleared": held.cleared.map(|t| t.to_string()),
            });
            let _ = self
                .client
                .publish(subject, Bytes::from(doc.to_string()))
                .await;
        }
    }

    /// Marks a site heard whenever a trusted heartbeat of it arrives.
    async fn hear_heartbeats(self: Arc<Self>) {
        let mut backoff = Backoff::new();
        loop {
            let subject = format!("{}.heartbeat.*", self.subjects.prefix);
            let mut sub = match self.client.subscribe(subject).await {
                Ok(sub) => sub,
                Err(e) => {
                    tracing::debug!(error = %e, "heartbeat subscription failed; retrying");
                    if !pause(&self.shutdown, backoff.next()).await {
                        return;
                    }
                    continue;
                }
            };
            backoff.reset();
            loop {
                tokio::select! {
                    () = self.shutdown.cancelled() => return,
                    m = sub.next() => {
                        let Some(m) = m else { break };
                        if let Ok(cp) = Checkpoint::from_bytes(&m.payload) {
                            if self.admission.checkpoint_trusted(&cp) && cp.network == self.network.id {
                                self.heard.heard(&cp.site, crate::pipeline::now());
                            }
                        }
                    }
                }
            }
        }
    }

    // ---- learning the local feeds ----

    /// For each local site: asks the stream for the feed's latest event and checkpoint; if
    /// the network is ahead of this node, stops signing for the site until the consumer has
    /// brought the feed up to there.
    async fn learn_feeds(self: Arc<Self>) {
        let mut backoff = Backoff::new();
        let mut waiting_logged = false;
        let stream = loop {
            match self.ensure_stream().await {
                Ok(s) => break s,
                Err(e) => {
                    if !waiting_logged {
                        let learning: Vec<String> = self
                            .network
                            .local_sites
                            .iter()
                            .filter(|s| self.pipeline.ledger().is_learning(&s.id))
                            .map(|s| s.id.to_string())
                            .collect();
                        if !learning.is_empty() {
                            tracing::warn!(sites = ?learning, error = %format!("{e:#}"), "waiting for NATS to learn the latest seq of these sites' feeds; they sign nothing until then");
                        }
                        waiting_logged = true;
                    }
                    if !pause(&self.shutdown, backoff.next()).await {
                        return;
                    }
                }
            }
        };
        for site in &self.network.local_sites {
            let target = loop {
                match self.network_seq(&stream, &site.id).await {
                    Ok(n) => break n,
                    Err(e) => {
                        tracing::warn!(site = %site.id, error = %format!("{e:#}"), "asking NATS for the feed's latest seq; retrying");
                        if !pause(&self.shutdown, backoff.next()).await {
                            return;
                        }
                    }
                }
            };
            let held = self.pipeline.ledger().feed_state(&site.id).seq;
            if target > held {
                self.pipeline.ledger().set_learning(&site.id, true);
                tracing::warn!(site = %site.id, held, network = target, "the network holds site {}'s feed up to seq {target}, this node up to {held}: catching up before signing", site.id);
                loop {
                    if self.pipeline.ledger().feed_state(&site.id).seq >= target {
                        break;
                    }
                    if !pause(&self.shutdown, Duration::from_millis(100)).await {
                        return;
                    }
                }
            }
            let was_learning = {
                let mut ledger = self.pipeline.ledger();
                let was = ledger.is_learning(&site.id);
                ledger.set_learning(&site.id, false);
                was
            };
            if was_learning {
                tracing::info!(site = %site.id, seq = target.max(held), "learned site {}'s feed from the network (latest seq {}); signing", site.id, target.max(held));
            }
        }
        let marker = self.store_dir.join(RESYNC_MARKER);
        if marker.exists() {
            if let Err(e) = std::fs::remove_file(&marker) {
                tracing::warn!(error = %e, path = %marker.display(), "could not remove the resync marker");
            }
        }
    }

    /// The highest seq of `site`'s feed the stream holds: its last event, or its last
    /// trusted checkpoint (the events may have been removed by the stream's limits).
    async fn network_seq(&self, stream: &stream::Stream, site: &SiteId) -> anyhow::Result<u64> {
        let mut seq = 0;
        match stream
            .get_last_raw_message_by_subject(&self.subjects.events(site))
            .await
        {
            Ok(m) => {
                if let Ok(e) = Event::from_bytes(&m.payload) {
                    if e.author() == site && self.admission.admit(&e).is_ok() {
                        seq = e.seq().0;
                    }
                }
            }
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {}
            Err(e) => return Err(anyhow::Error::new(e).context("reading the feed's last event")),
        }
        match stream
            .get_last_raw_message_by_subject(&self.subjects.checkpoints(site))
            .await
        {
            Ok(m) => {
                if let Ok(cp) = Checkpoint::from_bytes(&m.payload) {
                    if cp.site == *site && self.admission.checkpoint_trusted(&cp) {
                        seq = seq.max(cp.seq.0);
                    }
                }
            }
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {}
            Err(e) => {
                return Err(anyhow::Error::new(e).context("reading the feed's last checkpoint"))
            }
        }
        Ok(seq)
    }
}

/// One repair: asks by request/reply for a feed's seqs `from..=to` until they are held or
/// nobody answers. The events are checked like any received event.
struct Repair {
    client: async_nats::Client,
    subject: String,
    pipeline: Pipeline,
    admission: Admission,
    site: SiteId,
    from: u64,
    to: u64,
}

impl Repair {
    async fn run(self) {
        let mut from = self.from;
        while from <= self.to {
            let request = self
                .client
                .request(self.subject.clone(), range_request(from, self.to).into());
            let reply = match tokio::time::timeout(REPAIR_TIMEOUT, request).await {
                Ok(Ok(reply)) => reply,
                Ok(Err(e)) => {
                    tracing::debug!(site = %self.site, from, to = self.to, error = %e, "repair: no node answered");
                    return;
                }
                Err(_) => {
                    tracing::debug!(site = %self.site, from, to = self.to, "repair: no answer in time");
                    return;
                }
            };
            let Some(events) = parse_frames(&reply.payload) else {
                count_rejected("repair_answer");
                tracing::warn!(site = %self.site, "repair: an answer that is not a list of events");
                return;
            };
            // Only the asked feed, contiguous from `from`.
            let events: Vec<Event> = events
                .into_iter()
                .enumerate()
                .take_while(|(i, e)| e.author() == &self.site && e.seq().0 == from + *i as u64)
                .map(|(_, e)| e)
                .collect();
            let Some(last) = events.last().map(|e| e.seq().0) else {
                return;
            };
            let admission = self.admission.clone();
            let admitted = tokio::task::spawn_blocking(move || admit_all(&admission, events))
                .await
                .unwrap_or_default();
            let mut ok = Vec::new();
            for verdict in admitted {
                match verdict {
                    Ok(pair) => ok.push(pair),
                    Err(finding) => {
                        count_rejected("repair_answer");
                        tracing::warn!(site = %self.site, "repair: {}", finding.message);
                        break;
                    }
                }
            }
            let n = ok.len() as u64;
            let results = self.pipeline.ingest(ok).await;
            let stored = results
                .iter()
                .filter(|r| matches!(r, Ingested::Stored { .. } | Ingested::Duplicate))
                .count() as u64;
            metrics::counter!("ledger_replication_repaired_total").increment(stored);
            tracing::info!(site = %self.site, from, to = last, stored, "repaired a gap in site {}'s feed", self.site);
            if stored < n || n == 0 {
                return;
            }
            from = last + 1;
        }
    }
}

async fn ack(m: &jetstream::Message, kind: AckKind) {
    if let Err(e) = m.ack_with(kind).await {
        // The message comes back after the ack wait; storing is idempotent.
        tracing::debug!(error = %e, "NATS: acknowledging a message");
    }
}

/// Admits events on both cores (signature checks dominate a catch-up).
fn admit_all(
    admission: &Admission,
    events: Vec<Event>,
) -> Vec<Result<(Event, Role), ledger_core::Finding>> {
    let check = |e: Event| admission.admit(&e).map(|role| (e, role));
    if events.len() < 64 {
        return events.into_iter().map(check).collect();
    }
    let mut events = events;
    let second = events.split_off(events.len() / 2);
    std::thread::scope(|s| {
        let other = s.spawn(|| second.into_iter().map(check).collect::<Vec<_>>());
        let mut out: Vec<_> = events.into_iter().map(check).collect();
        match other.join() {
            Ok(rest) => out.extend(rest),
            Err(p) => std::panic::resume_unwind(p),
        }
        out
    })
}

fn parse_range(payload: &[u8]) -> Option<(u64, u64)> {
    if payload.len() != 16 {
        return None;
    }
    let from = u64::from_be_bytes(payload[..8].try_into().ok()?);
    let to = u64::from_be_bytes(payload[8..].try_into().ok()?);
    (from >= 1 && from <= to).then_some((from, to))
}

fn range_request(from: u64, to: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&from.to_be_bytes());
    out.extend_from_slice(&to.to_be_bytes());
    out
}

/// Events `from..=to` of a feed as held here, as frames (u32 BE length, event bytes),
/// stopping at the first seq not held and within the answer limits.
fn read_range(
    store: &Store,
    site: &SiteId,
    from: u64,
    to: u64,
) -> Result<Vec<u8>, crate::store::StoreError> {
    let mut out = Vec::new();
    let last = to.min(from.saturating_add(REPAIR_EVENTS_MAX - 1));
    for seq in from..=last {
        let Some(e) = store.feed_record(site, Seq(seq))? else {
            break;
        };
        if out.len() + 4 + e.bytes().len() > REPAIR_BYTES_MAX {
            break;
        }
        out.extend_from_slice(&(e.bytes().len() as u32).to_be_bytes());
        out.extend_from_slice(e.bytes());
    }
    Ok(out)
}

/// Splits a repair answer into events; `None` if the framing is wrong.
fn parse_frames(mut bytes: &[u8]) -> Option<Vec<Event>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 4 {
            return None;
        }
        let n = u32::from_be_bytes(bytes[..4].try_into().ok()?) as usize;
        let body = bytes.get(4..4 + n)?;
        out.push(Event::from_bytes(body).ok()?);
        bytes = &bytes[4 + n..];
    }
    Some(out)
}

/// Keeps a checkpoint that proves equivocation: written under a temporary name, synced,
/// renamed into place (a crash never leaves half a proof).
fn save_evidence(dir: &Path, cp: &Checkpoint) -> std::io::Result<()> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir)?;
    let digest = ledger_core::crypto::sha256(cp.bytes());
    let short: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let name = format!("checkpoint-{}-{}-{short}.cbor", token(&cp.site), cp.seq);
    let path = dir.join(&name);
    if path.exists() {
        return Ok(());
    }
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(cp.bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()
}

fn load_evidence(dir: &Path) -> anyhow::Result<Vec<Checkpoint>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {}", dir.display()))),
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|x| x == "cbor") {
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            match Checkpoint::from_bytes(&bytes) {
                Ok(cp) => out.push(cp),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring an evidence file that is not a checkpoint")
                }
            }
        }
    }
    Ok(out)
}
