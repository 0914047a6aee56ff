//! The `LedgerService` implementation.

use super::auth::{self, authenticate, authorize, charge, Access, RateLimiter};
use super::status;
use crate::alerts::{Board, Held};
use crate::config::Limits;
use crate::network::{Network, Principal};
use crate::pipeline::Pipeline;
use crate::worklist;
use ledger_core::bundle::BundleDraft;
use ledger_core::{
    AlertPolicy, Checkpoint, Coi, Event, EventId, Options, Policy, Scope, SiteId, Trust,
};
use proto::convert::{self, AppendDraft};
use proto::v1 as pb;
use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Events per GetChain page by default and at most.
pub const CHAIN_PAGE_DEFAULT: usize = 1000;
pub const CHAIN_PAGE_MAX: usize = 5000;
/// Chains per ListChains page by default and at most.
pub const LIST_PAGE_DEFAULT: usize = 100;
pub const LIST_PAGE_MAX: usize = 1000;
/// Largest chain verified or exported in one call.
pub const CHAIN_EVENTS_MAX: u64 = 1_000_000;
/// Export chunk size: well under gRPC's 4 MiB message limit.
pub const EXPORT_CHUNK_BYTES: usize = 1024 * 1024;
/// Events a watcher may fall behind before it is re-read from the store.
pub const WATCH_QUEUE: usize = 1024;
/// Messages queued per Subscribe or WatchAlerts stream: with each message at most one
/// event (under 64 KiB) or one snapshot, this bounds what a stalled reader holds in memory
/// by bytes; past it the stream reads from the log again when the reader resumes.
pub const STREAM_QUEUE: usize = 16;
/// Events read from the log per Subscribe catch-up page, and the bytes read at a time.
pub const SUBSCRIBE_PAGE: usize = 512;
/// Messages queued for one Subscribe stream.
pub const SUBSCRIBE_QUEUE: usize = 256;
pub const SUBSCRIBE_READ_BYTES: usize = 256 * 1024;
/// Most alerts in one WatchAlerts snapshot (the most urgent).
pub const ALERT_SNAPSHOT_MAX: usize = 10_000;
/// Most entries in each Subscribe filter list.
pub const SUBSCRIBE_FILTER_MAX: usize = 1000;

pub struct LedgerApi {
    pipeline: Pipeline,
    network: Arc<Network>,
    limits: Limits,
    policy: Policy,
    /// The lane transit limits KPIs judge late handoffs by; the same policy as the alerts'.
    alert_policy: AlertPolicy,
    board: Arc<Board>,
    limiter: RateLimiter,
    shutdown: tokio_util::sync::CancellationToken,
}

impl std::fmt::Debug for LedgerApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerApi")
            .field("network", &self.network.id)
            .finish()
    }
}

impl LedgerApi {
    pub fn new(
        pipeline: Pipeline,
        network: Arc<Network>,
        limits: Limits,
        policy: Policy,
        board: Arc<Board>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> LedgerApi {
        let limiter = RateLimiter::new(limits.calls_per_second_per_token);
        LedgerApi {
            pipeline,
            network,
            limits,
            policy,
            alert_policy: AlertPolicy::default(),
            board,
            limiter,
            shutdown,
        }
    }

    /// The alert policy GetKpis judges late handoffs with (lane transit limits); pass the
    /// one the alert engine runs with, so a KPI never contradicts an alert. Default:
    /// [`AlertPolicy::default`].
    pub fn with_alert_policy(mut self, alert_policy: AlertPolicy) -> Self {
        self.alert_policy = alert_policy;
        self
    }

    /// Every read: the caller may read, and every append answered before this call is
    /// visible to it.
    async fn begin_read<T>(&self, req: &Request<T>) -> Result<Principal, Status> {
        let principal = authorize(&self.network, &self.limiter, req, Access::Read, 1)?;
        self.pipeline
            .caught_up()
            .await
            .map_err(|e| status::append_error(&e))?;
        Ok(principal)
    }

    /// A check a stream makes before each message it sends: whether its token still names
    /// the same caller, so a token revoked by a reload (SIGHUP) reads nothing more.
    fn revoked_check<T>(
        &self,
        req: &Request<T>,
        principal: Principal,
    ) -> Result<impl Fn() -> Option<Status> + Send + 'static, Status> {
        let token = auth::bearer(req)?.to_owned();
        let network = self.network.clone();
        Ok(move || {
            (network.principal(&token).as_ref() != Some(&principal)).then(|| {
                Status::unauthenticated(
                    "the token this stream was opened with is no longer accepted by this node; open it again with a current token",
                )
            })
        })
    }

    fn coi(&self, field: &str, text: &str) -> Result<Coi, Status> {
        if text.is_empty() {
            return Err(Status::invalid_argument(format!("{field}: is required")));
        }
        Coi::parse(text).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
    }

    /// The chain's committed length, or NOT_FOUND.
    fn committed(&self, coi: &Coi) -> Result<u64, Status> {
        match self.pipeline.ledger().chain(coi) {
            Some(c) if c.committed > 0 => Ok(c.committed),
            _ => Err(Status::not_found(format!(
                "chain {coi} is not on this node"
            ))),
        }
    }

    /// All committed events of a chain, read off the async runtime.
    async fn chain_events(&self, coi: &Coi) -> Result<Vec<Event>, Status> {
        let n = self.committed(coi)?;
        if n > CHAIN_EVENTS_MAX {
            return Err(Status::resource_exhausted(format!(
                "chain {coi} has {n} events, more than {CHAIN_EVENTS_MAX} per call"
            )));
        }
        let store = self.pipeline.store().clone();
        let coi = coi.clone();
        tokio::task::spawn_blocking(move || store.chain(&coi, 0, n as usize))
            .await
            .map_err(|e| Status::internal(format!("reading the chain: {e}")))?
            .map(|v| v.into_iter().map(|(_, e)| e).collect())
            .map_err(|e| status::store_error(&e))
    }

    /// The proof of any equivocation touching these events: the other events signed for
    /// the same (site, seq), added to `events`, and the conflicting checkpoints, returned.
    /// With them a verifier (here, or offline from an export) reports the fork itself.
    /// The first site this node signs for whose key may sign now: a bundle signed with a
    /// revoked or expired key would verify as broken everywhere.
    fn exporting_site(
        &self,
        at: ledger_core::Timestamp,
    ) -> Result<&crate::network::LocalSite, Status> {
        let mut why = Vec::new();
        for site in &self.network.local_sites {
            match site.standing.check(at) {
                Ok(()) => return Ok(site),
                Err(reason) => why.push(reason),
            }
        }
        Err(Status::failed_precondition(if why.is_empty() {
            "this node signs for no site, so it cannot sign an export".to_owned()
        } else {
            format!(
                "no key of this node may sign an export now: {}",
                why.join("; ")
            )
        }))
    }

    async fn add_fork_evidence(&self, events: &mut Vec<Event>) -> Result<Vec<Checkpoint>, Status> {
        let (forks, checkpoints) = {
            let ledger = self.pipeline.ledger();
            if ledger.forks().is_empty() && ledger.conflicting_checkpoints().is_empty() {
                return Ok(Vec::new());
            }
            let positions: std::collections::BTreeSet<(SiteId, u64)> = events
                .iter()
                .map(|e| (e.author().clone(), e.seq().0))
                .collect();
            let forks: Vec<(SiteId, u64, Vec<EventId>)> = positions
                .iter()
                .filter_map(|k| {
                    ledger
                        .forks()
                        .get(k)
                        .map(|ids| (k.0.clone(), k.1, ids.clone()))
                })
                .collect();
            let checkpoints: Vec<Checkpoint> = positions
                .iter()
                .filter_map(|k| ledger.conflicting_checkpoints().get(k))
                .flatten()
                .cloned()
                .collect();
            (forks, checkpoints)
        };
        if forks.is_empty() {
            return Ok(checkpoints);
        }
        let store = self.pipeline.store().clone();
        let have: std::collections::HashSet<EventId> = events.iter().map(Event::id).collect();
        let extra = tokio::task::spawn_blocking(move || {
            let mut extra = Vec::new();
            for (site, seq, ids) in forks {
                if let Some(held) = store.feed_record(&site, ledger_core::Seq(seq))? {
                    extra.push(held);
                }
                for id in ids {
                    if let Some(e) = store.find(&site, ledger_core::Seq(seq), &id)? {
                        extra.push(e);
                    }
                }
            }
            Ok::<_, crate::store::StoreError>(extra)
        })
        .await
        .map_err(|e| Status::internal(format!("reading fork evidence: {e}")))?
        .map_err(|e| status::store_error(&e))?;
        for e in extra {
            if !have.contains(&e.id()) && !events.iter().any(|x| x.id() == e.id()) {
                events.push(e);
            }
        }
        Ok(checkpoints)
    }

    /// A chain's signed export bundle: every committed event, the proof of any fork that
    /// touches them, and the network's certificates and revocations, signed by the first
    /// site of this node whose key may sign now. ExportChain streams it; the web page
    /// renders it through the report.
    ///
    /// # Errors
    /// NOT_FOUND for a chain this node does not hold; FAILED_PRECONDITION when no key of
    /// this node may sign; the store's error otherwise.
    pub async fn export_bundle(&self, coi: &Coi) -> Result<Vec<u8>, Status> {
        let mut events = self.chain_events(coi).await?;
        let exported_at = crate::pipeline::now();
        let site = self.exporting_site(exported_at)?;
        let heads = heads_of(&events);
        let checkpoints = self.add_fork_evidence(&mut events).await?;
        Ok(BundleDraft {
            network: &self.network.id,
            coi,
            exported_at,
            exporter: &site.id,
            heads,
            events: events.iter().map(Event::bytes).collect(),
            certificates: self
                .network
                .certificates
                .iter()
                .map(|c| c.bytes())
                .collect(),
            revocations: self.network.revocations.iter().map(|r| r.bytes()).collect(),
            checkpoints: checkpoints.iter().map(Checkpoint::bytes).collect(),
            anchor: Some(self.network.anchor),
        }
        .sign(&site.key))
    }

    fn trust(&self) -> Trust {
        Trust {
            anchor: self.network.anchor,
            network: self.network.id.clone(),
            certificates: self.network.certificates.clone(),
            revocations: self.network.revocations.clone(),
        }
    }

    fn check_site(principal: &Principal, draft: &AppendDraft) -> Result<(), Status> {
        match principal {
            Principal::Site(site) if *site == draft.site => Ok(()),
            other => Err(Status::permission_denied(format!(
                "{other} may not append as site {}",
                draft.site
            ))),
        }
    }
}

fn receipt_to_wire(r: &crate::ledger::Receipt) -> pb::AppendReceipt {
    pb::AppendReceipt {
        event_id: r.event_id.to_hex(),
        site_id: r.site.to_string(),
        seq: r.seq.0,
        recorded_time: Some(convert::timestamp_to_wire(r.recorded_at)),
        duplicate: r.duplicate,
    }
}

fn count(result: &Result<(), &Status>) {
    let code = match result {
        Ok(()) => "ok".to_owned(),
        Err(s) => format!("{:?}", s.code()),
    };
    metrics::counter!("ledger_appends_total", "result" => code).increment(1);
}

/// Chain heads among a set of events: those no other event names as a parent.
fn heads_of(events: &[Event]) -> Vec<EventId> {
    let parents: HashSet<EventId> = events
        .iter()
        .flat_map(|e| e.parents().iter().copied())
        .collect();
    events
        .iter()
        .map(Event::id)
        .filter(|id| !parents.contains(id))
        .collect()
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::ledger_service_server::LedgerService for LedgerApi {
    async fn append(
        &self,
        req: Request<pb::AppendRequest>,
    ) -> Result<Response<pb::AppendResponse>, Status> {
        let started = Instant::now();
        let principal = authorize(&self.network, &self.limiter, &req, Access::Append, 1)?;
        let draft = AppendDraft::try_from(req.get_ref()).map_err(|e| status::invalid(&e))?;
        Self::check_site(&principal, &draft)?;
        let result = self
            .pipeline
            .append(vec![draft])
            .await
            .pop()
            .unwrap_or(Err(crate::ledger::AppendError::Stopped));
        let answer = result
            .map(|r| {
                Response::new(pb::AppendResponse {
                    receipt: Some(receipt_to_wire(&r)),
                })
            })
            .map_err(|e| status::append_error(&e));
        count(&answer.as_ref().map(|_| ()));
        metrics::histogram!("ledger_append_seconds").record(started.elapsed().as_secs_f64());
        answer
    }

    async fn append_batch(
        &self,
        req: Request<pb::AppendBatchRequest>,
    ) -> Result<Response<pb::AppendBatchResponse>, Status> {
        let n = req.get_ref().requests.len();
        // Who is asking comes first: an unknown caller learns nothing about the request.
        let principal = authenticate(&self.network, &req, Access::Append)?;
        if n == 0 {
            return Err(Status::invalid_argument("requests: is empty"));
        }
        if n > self.limits.append_batch_max {
            return Err(Status::resource_exhausted(format!(
                "requests: {n} in one batch, more than the limit of {}; split the upload",
                self.limits.append_batch_max
            )));
        }
        charge(&self.limiter, &principal, n)?;
        let mut results: Vec<Option<pb::AppendBatchResult>> = vec![None; n];
        let mut drafts = Vec::new();
        let mut slots = Vec::new();
        for (i, r) in req.get_ref().requests.iter().enumerate() {
            let checked = AppendDraft::try_from(r)
                .map_err(|e| Status::invalid_argument(format!("requests[{i}].{e}")))
                .and_then(|d| Self::check_site(&principal, &d).map(|()| d));
            match checked {
                Ok(d) => {
                    slots.push(i);
                    drafts.push(d);
                }
                Err(s) => results[i] = Some(error_result(&s)),
            }
        }
        let answers = self.pipeline.append(drafts).await;
        for (i, answer) in slots.into_iter().zip(answers) {
            let result = match answer {
                Ok(r) => pb::AppendBatchResult {
                    result: Some(pb::append_batch_result::Result::Receipt(receipt_to_wire(
                        &r,
                    ))),
                },
                Err(e) => error_result(&status::append_error(&e)),
            };
            results[i] = Some(result);
        }
        for r in &results {
            let outcome = match r.as_ref().and_then(|r| r.result.as_ref()) {
                Some(pb::append_batch_result::Result::Receipt(_)) => "ok".to_owned(),
                Some(pb::append_batch_result::Result::Error(e)) => {
                    format!("{:?}", tonic::Code::from(e.code))
                }
                None => "none".to_owned(),
            };
            metrics::counter!("ledger_appends_total", "result" => outcome).increment(1);
        }
        Ok(Response::new(pb::AppendBatchResponse {
            results: results.into_iter().map(Option::unwrap_or_default).collect(),
        }))
    }

    async fn get_chain(
        &self,
        req: Request<pb::GetChainRequest>,
    ) -> Result<Response<pb::GetChainResponse>, Status> {
        self.begin_read(&req).await?;
        let r = req.get_ref();
        let coi = self.coi("coi", &r.coi)?;
        let committed = self.committed(&coi)?;
        let page = match r.page_size {
            0 => CHAIN_PAGE_DEFAULT,
            n if n < 0 => return Err(Status::invalid_argument("page_size: must not be negative")),
            n => (n as usize).min(CHAIN_PAGE_MAX),
        };
        let after: u64 = if r.page_token.is_empty() {
            0
        } else {
            r.page_token.parse().map_err(|_| {
                Status::invalid_argument("page_token: not a token from a previous response")
            })?
        };
        if after > committed {
            return Err(Status::invalid_argument(
                "page_token: beyond the end of the chain",
            ));
        }
        let limit = page.min((committed - after) as usize);
        let store = self.pipeline.store().clone();
        let c = coi.clone();
        let events = tokio::task::spawn_blocking(move || store.chain(&c, after, limit))
            .await
            .map_err(|e| Status::internal(format!("reading the chain: {e}")))?
            .map_err(|e| status::store_error(&e))?;
        let last = events.last().map_or(after, |(p, _)| *p);
        let next_page_token = if last < committed {
            last.to_string()
        } else {
            String::new()
        };
        Ok(Response::new(pb::GetChainResponse {
            events: events
                .iter()
                .map(|(_, e)| convert::event_to_wire(e))
                .collect(),
            next_page_token,
        }))
    }

    async fn verify_chain(
        &self,
        req: Request<pb::VerifyChainRequest>,
    ) -> Result<Response<pb::VerifyChainResponse>, Status> {
        self.begin_read(&req).await?;
        let coi = self.coi("coi", &req.get_ref().coi)?;
        let mut events = self.chain_events(&coi).await?;
        let checkpoints = self.add_fork_evidence(&mut events).await?;
        let trust = self.trust();
        let options = Options {
            scope: Scope::CoiExport,
            policy: self.policy.clone(),
            coi: Some(coi),
            heads: None,
            checkpoints,
        };
        let verdict =
            tokio::task::spawn_blocking(move || ledger_core::verify(&events, &trust, &options))
                .await
                .map_err(|e| Status::internal(format!("verifying: {e}")))?;
        metrics::counter!("ledger_verify_total", "verdict" => verdict.kind.as_str()).increment(1);
        Ok(Response::new(pb::VerifyChainResponse {
            verdict: convert::verdict_to_wire(verdict.kind) as i32,
            status: convert::status_to_wire(verdict.status) as i32,
            findings: verdict
                .findings
                .iter()
                .map(convert::finding_to_wire)
                .collect(),
            event_count: verdict.n_events as u64,
        }))
    }

    type ExportChainStream = BoxStream<pb::ExportChainResponse>;

    async fn export_chain(
        &self,
        req: Request<pb::ExportChainRequest>,
    ) -> Result<Response<Self::ExportChainStream>, Status> {
        self.begin_read(&req).await?;
        let coi = self.coi("coi", &req.get_ref().coi)?;
        let bundle = self.export_bundle(&coi).await?;
        let total = bundle.len() as u64;
        let chunks: Vec<Result<pb::ExportChainResponse, Status>> = bundle
            .chunks(EXPORT_CHUNK_BYTES)
            .map(|c| {
                Ok(pb::ExportChainResponse {
                    chunk: c.to_vec(),
                    total_bytes: total,
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    type WatchChainStream = BoxStream<pb::WatchChainResponse>;

    async fn watch_chain(
        &self,
        req: Request<pb::WatchChainRequest>,
    ) -> Result<Response<Self::WatchChainStream>, Status> {
        let principal = self.begin_read(&req).await?;
        let revoked = self.revoked_check(&req, principal)?;
        let coi = self.coi("coi", &req.get_ref().coi)?;
        let committed = self.committed(&coi)?;
        let from = req.get_ref().from_position;
        // Past the end, the stream would wait for a position the chain may never reach and
        // then skip the events before it.
        if from > committed {
            return Err(Status::invalid_argument(format!(
                "from_position: {from} is beyond the end of chain {coi} ({committed} events); resume from at most {committed}"
            )));
        }
        // Subscribe before reading the backlog so nothing committed in between is missed.
        let mut live = self.pipeline.subscribe();
        let pipeline = self.pipeline.clone();
        let shutdown = self.shutdown.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_QUEUE);
        // Not a normal end of the stream: the watcher must resume elsewhere or later.
        let stopping = |sent: u64| {
            Status::unavailable(format!(
                "the node is stopping; resume the watch with from_position {sent}"
            ))
        };
        tokio::spawn(async move {
            let mut sent = from;
            loop {
                // Catch up from the store to the committed end.
                let committed = pipeline.ledger().chain(&coi).map_or(0, |c| c.committed);
                while sent < committed {
                    let store = pipeline.store().clone();
                    let c = coi.clone();
                    let after = sent;
                    let page = tokio::task::spawn_blocking(move || {
                        store.chain(&c, after, CHAIN_PAGE_DEFAULT)
                    })
                    .await;
                    let events = match page {
                        Ok(Ok(events)) if !events.is_empty() => events,
                        Ok(Err(e)) => {
                            let _ = tx.send(Err(status::store_error(&e))).await;
                            return;
                        }
                        _ => break,
                    };
                    for (position, e) in events {
                        if let Some(refused) = revoked() {
                            let _ = tx.send(Err(refused)).await;
                            return;
                        }
                        if tx
                            .send(Ok(pb::WatchChainResponse {
                                event: Some(convert::event_to_wire(&e)),
                                position,
                            }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                        sent = position;
                    }
                }
                // Then follow live commits until the watcher falls behind (re-read) or leaves.
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => {
                            let _ = tx.send(Err(stopping(sent))).await;
                            return;
                        }
                        msg = live.recv() => match msg {
                            Ok(c) if c.coi == coi && c.position == sent + 1 => {
                                if let Some(refused) = revoked() {
                                    let _ = tx.send(Err(refused)).await;
                                    return;
                                }
                                if tx.send(Ok(pb::WatchChainResponse { event: Some(convert::event_to_wire(&c.event)), position: c.position })).await.is_err() {
                                    return;
                                }
                                sent = c.position;
                            }
                            Ok(c) if c.coi == coi && c.position > sent + 1 => break,
                            Ok(_) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                                let _ = tx.send(Err(stopping(sent))).await;
                                return;
                            }
                        },
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn list_chains(
        &self,
        req: Request<pb::ListChainsRequest>,
    ) -> Result<Response<pb::ListChainsResponse>, Status> {
        self.begin_read(&req).await?;
        let r = req.get_ref();
        let status =
            convert::status_from_wire("status", r.status).map_err(|e| status::invalid(&e))?;
        let limit = match r.page_size {
            0 => LIST_PAGE_DEFAULT,
            n if n < 0 => return Err(Status::invalid_argument("page_size: must not be negative")),
            n => (n as usize).min(LIST_PAGE_MAX),
        };
        let sort = match pb::ChainSort::try_from(r.sort) {
            Ok(pb::ChainSort::Unspecified | pb::ChainSort::Coi) => worklist::Sort::Coi,
            Ok(pb::ChainSort::Deadline) => worklist::Sort::Deadline,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "sort: {} is not a known sort",
                    r.sort
                )))
            }
        };
        let after = if r.page_token.is_empty() {
            None
        } else {
            Some(
                worklist::Cursor::parse(&r.page_token, sort)
                    .map_err(|e| Status::invalid_argument(format!("page_token: {e}")))?,
            )
        };
        let site = if r.site_id.is_empty() {
            None
        } else {
            Some(
                SiteId::parse(&r.site_id)
                    .map_err(|e| Status::invalid_argument(format!("site_id: {e}")))?,
            )
        };
        let query = worklist::Query {
            status,
            site,
            needs_action: r.needs_action,
            live_only: r.live_only,
            sort,
            after,
            limit,
        };
        let alerts = self.board.counts_by_chain();
        let (rows, next) = {
            let ledger = self.pipeline.ledger();
            worklist::rows(&ledger, &alerts, &query)
        };
        let chains = rows.iter().map(summary_to_wire).collect();
        Ok(Response::new(pb::ListChainsResponse {
            chains,
            next_page_token: next.map(|c| c.to_token()).unwrap_or_default(),
        }))
    }

    async fn list_alerts(
        &self,
        req: Request<pb::ListAlertsRequest>,
    ) -> Result<Response<pb::ListAlertsResponse>, Status> {
        self.begin_read(&req).await?;
        let r = req.get_ref();
        let filter = AlertFilter::parse(&r.coi, &r.site_id, &r.kind)?;
        let mut held = self.board.open();
        if r.include_cleared {
            held.extend(self.board.cleared());
        }
        let alerts = held
            .iter()
            .filter(|h| filter.matches(h))
            .map(|h| convert::alert_to_wire(&h.alert, h.raised, h.cleared))
            .collect();
        Ok(Response::new(pb::ListAlertsResponse { alerts }))
    }

    type WatchAlertsStream = BoxStream<pb::WatchAlertsResponse>;

    async fn watch_alerts(
        &self,
        req: Request<pb::WatchAlertsRequest>,
    ) -> Result<Response<Self::WatchAlertsStream>, Status> {
        let principal = self.begin_read(&req).await?;
        let r = req.get_ref();
        let filter = AlertFilter::parse(&r.coi, &r.site_id, &r.kind)?;
        let revoked = self.revoked_check(&req, principal)?;
        let board = self.board.clone();
        let shutdown = self.shutdown.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_QUEUE);
        tokio::spawn(async move {
            loop {
                let (open, mut changes) = board.watch();
                let snapshot: Vec<pb::Alert> = open
                    .iter()
                    .filter(|h| filter.matches(h))
                    .take(ALERT_SNAPSHOT_MAX)
                    .map(|h| convert::alert_to_wire(&h.alert, h.raised, h.cleared))
                    .collect();
                if tx
                    .send(Ok(pb::WatchAlertsResponse {
                        is_snapshot: true,
                        snapshot,
                        change: None,
                    }))
                    .await
                    .is_err()
                {
                    return;
                }
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => {
                            let _ = tx.send(Err(Status::unavailable("the node is stopping; watch the alerts again once it is back"))).await;
                            return;
                        }
                        msg = changes.recv() => match msg {
                            Ok(h) => {
                                if let Some(refused) = revoked() {
                                    let _ = tx.send(Err(refused)).await;
                                    return;
                                }
                                if !filter.matches(&h) {
                                    continue;
                                }
                                let change = convert::alert_to_wire(&h.alert, h.raised, h.cleared);
                                if tx.send(Ok(pb::WatchAlertsResponse { is_snapshot: false, snapshot: Vec::new(), change: Some(change) })).await.is_err() {
                                    return;
                                }
                            }
                            // Fell behind: a fresh snapshot, never an unbounded buffer.
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                        },
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type SubscribeStream = BoxStream<pb::SubscribeResponse>;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let principal = self.begin_read(&req).await?;
        let filter = EventFilter::parse(req.get_ref())?;
        let revoked = self.revoked_check(&req, principal)?;
        let from = req.get_ref().from_position;
        // Subscribe before reading the backlog so nothing committed in between is missed.
        let mut live = self.pipeline.subscribe();
        let pipeline = self.pipeline.clone();
        let shutdown = self.shutdown.clone();
        // A page's worth of queue: the catch-up hands over a page without waking the
        // sender per event; at about 1 KiB an event it still bounds a stalled reader.
        let (tx, rx) = tokio::sync::mpsc::channel(SUBSCRIBE_QUEUE);
        let stopping = |sent: u64| {
            Status::unavailable(format!(
                "the node is stopping; subscribe again with from_position {sent}"
            ))
        };
        tokio::spawn(async move {
            let mut sent = from;
            let mut cursor = None;
            loop {
                // Catch up from the log: a reader that fell behind reads from disk, in pages,
                // never from a buffer that grows with its lag. The next page is read while
                // this one is sent (two pages at most are held).
                let read = |after: u64, cursor| {
                    let store = pipeline.store().clone();
                    tokio::task::spawn_blocking(move || {
                        store.records_after(after, cursor, SUBSCRIBE_PAGE, SUBSCRIBE_READ_BYTES)
                    })
                };
                let mut prefetched = None;
                while sent < pipeline.store().last_position() {
                    let page = match prefetched.take() {
                        Some(next) => next,
                        None => read(sent, cursor),
                    }
                    .await;
                    let events = match page {
                        Ok(Ok((events, next_cursor))) if !events.is_empty() => {
                            cursor = next_cursor;
                            events
                        }
                        Ok(Err(e)) => {
                            let _ = tx.send(Err(status::store_error(&e))).await;
                            return;
                        }
                        _ => break,
                    };
                    if let Some(refused) = revoked() {
                        let _ = tx.send(Err(refused)).await;
                        return;
                    }
                    let last = events.last().map_or(sent, |(p, _)| *p);
                    if last < pipeline.store().last_position() {
                        prefetched = Some(read(last, cursor));
                    }
                    let mut matched = false;
                    for (position, e) in events {
                        if !filter.matches(&e) {
                            continue;
                        }
                        matched = true;
                        if tx
                            .send(Ok(pb::SubscribeResponse {
                                event: Some(convert::event_to_wire(&e)),
                                position,
                            }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    if !matched
                        && tx
                            .send(Ok(pb::SubscribeResponse {
                                event: None,
                                position: last,
                            }))
                            .await
                            .is_err()
                    {
                        return;
                    }
                    sent = last;
                }
                // Then follow live commits until the reader falls behind (back to the log).
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => {
                            let _ = tx.send(Err(stopping(sent))).await;
                            return;
                        }
                        msg = live.recv() => match msg {
                            Ok(c) if c.store_position == 0 || c.store_position <= sent => {}
                            Ok(c) if c.store_position == sent + 1 => {
                                if let Some(refused) = revoked() {
                                    let _ = tx.send(Err(refused)).await;
                                    return;
                                }
                                sent = c.store_position;
                                if !filter.matches(&c.event) {
                                    continue;
                                }
                                if tx.send(Ok(pb::SubscribeResponse { event: Some(convert::event_to_wire(&c.event)), position: c.store_position })).await.is_err() {
                                    return;
                                }
                            }
                            Ok(_) => break,
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                                let _ = tx.send(Err(stopping(sent))).await;
                                return;
                            }
                        },
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get_node_info(
        &self,
        req: Request<pb::GetNodeInfoRequest>,
    ) -> Result<Response<pb::GetNodeInfoResponse>, Status> {
        self.begin_read(&req).await?;
        let ledger = self.pipeline.ledger();
        let sites = self
            .network
            .local_sites
            .iter()
            .map(|s| {
                let (seq, head) = ledger
                    .feed_heads()
                    .find(|(id, _, _)| **id == s.id)
                    .map_or((0, None), |(_, seq, head)| (seq, head));
                pb::SiteInfo {
                    site_id: s.id.to_string(),
                    role: s.role.as_str().to_owned(),
                    public_key: s.key.public().to_hex(),
                    feed_seq: seq,
                    feed_head_event_id: head.map(|h| h.to_hex()).unwrap_or_default(),
                }
            })
            .collect();
        Ok(Response::new(pb::GetNodeInfoResponse {
            network_id: self.network.id.to_string(),
            anchor_fingerprint: self.network.anchor.fingerprint(),
            sites,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            event_count: ledger.n_events(),
        }))
    }

    async fn get_kpis(
        &self,
        req: Request<pb::GetKpisRequest>,
    ) -> Result<Response<pb::GetKpisResponse>, Status> {
        self.begin_read(&req).await?;
        let period =
            convert::kpi_period_from_wire(req.get_ref()).map_err(|e| status::invalid(&e))?;
        let report = crate::kpi::report(&self.pipeline, period, &self.alert_policy)
            .await
            .map_err(|e| status::kpi_failure(&e))?;
        Ok(Response::new(convert::kpis_to_wire(
            &report,
            crate::pipeline::now(),
        )))
    }
}

fn error_result(s: &Status) -> pb::AppendBatchResult {
    pb::AppendBatchResult {
        result: Some(pb::append_batch_result::Result::Error(pb::AppendError {
            code: s.code() as i32,
            message: s.message().to_owned(),
        })),
    }
}

fn summary_to_wire(r: &worklist::Row) -> pb::ChainSummary {
    pb::ChainSummary {
        coi: r.coi.to_string(),
        status: convert::status_to_wire(r.status) as i32,
        custodian_site_ids: r.custodians(),
        next_stability_deadline: r.next_deadline.map(convert::timestamp_to_wire),
        event_count: r.n_events,
        open_finding_count: r.n_findings as u32,
        last_event_time: Some(convert::timestamp_to_wire(r.last_event_at)),
        flagged_unit_count: r.n_flagged as u32,
        places: r
            .units
            .iter()
            .map(|u| {
                let mut place = pb::UnitPlace {
                    unit_id: u.unit.clone(),
                    stability_deadline: Some(convert::timestamp_to_wire(u.stability_deadline)),
                    ..pb::UnitPlace::default()
                };
                match &u.place {
                    worklist::Place::Held { site, location } => {
                        place.site_id = site.to_string();
                        place.location = location.clone().unwrap_or_default();
                    }
                    worklist::Place::InTransit { from, to, since } => {
                        place.from_site_id = from.to_string();
                        place.to_site_id = to.to_string();
                        place.in_transit_since = Some(convert::timestamp_to_wire(*since));
                    }
                }
                place
            })
            .collect(),
        open_alert_count: r.n_alerts as u32,
    }
}

/// Which alerts a caller asked for.
#[derive(Debug, Clone)]
struct AlertFilter {
    coi: Option<Coi>,
    site: Option<SiteId>,
    kind: Option<ledger_core::AlertKind>,
}

impl AlertFilter {
    fn parse(coi: &str, site: &str, kind: &str) -> Result<AlertFilter, Status> {
        Ok(AlertFilter {
            coi: (!coi.is_empty())
                .then(|| Coi::parse(coi))
                .transpose()
                .map_err(|e| Status::invalid_argument(format!("coi: {e}")))?,
            site: (!site.is_empty())
                .then(|| SiteId::parse(site))
                .transpose()
                .map_err(|e| Status::invalid_argument(format!("site_id: {e}")))?,
            kind: convert::alert_kind_from_wire("kind", kind).map_err(|e| status::invalid(&e))?,
        })
    }

    fn matches(&self, h: &Held) -> bool {
        let k = &h.alert.key;
        self.coi.as_ref().is_none_or(|c| k.coi.as_ref() == Some(c))
            && self
                .site
                .as_ref()
                .is_none_or(|s| k.site.as_ref() == Some(s))
            && self.kind.is_none_or(|kind| k.kind == kind)
    }
}

/// Which events a subscriber asked for.
#[derive(Debug, Clone)]
struct EventFilter {
    sites: HashSet<SiteId>,
    kinds: HashSet<String>,
    cois: HashSet<Coi>,
}

impl EventFilter {
    fn parse(r: &pb::SubscribeRequest) -> Result<EventFilter, Status> {
        for (field, n) in [
            ("site_ids", r.site_ids.len()),
            ("kinds", r.kinds.len()),
            ("cois", r.cois.len()),
        ] {
            if n > SUBSCRIBE_FILTER_MAX {
                return Err(Status::invalid_argument(format!(
                    "{field}: {n} entries, more than {SUBSCRIBE_FILTER_MAX}"
                )));
            }
        }
        let mut sites = HashSet::new();
        for (i, s) in r.site_ids.iter().enumerate() {
            sites.insert(
                SiteId::parse(s)
                    .map_err(|e| Status::invalid_argument(format!("site_ids[{i}]: {e}")))?,
            );
        }
        let mut cois = HashSet::new();
        for (i, c) in r.cois.iter().enumerate() {
            cois.insert(
                Coi::parse(c).map_err(|e| Status::invalid_argument(format!("cois[{i}]: {e}")))?,
            );
        }
        let mut kinds = HashSet::new();
        for (i, k) in r.kinds.iter().enumerate() {
            if !ledger_core::Body::KIND_NAMES.contains(&k.as_str()) {
                return Err(Status::invalid_argument(format!(
                    "kinds[{i}]: {k:?} is not a body kind; use one of {}",
                    ledger_core::Body::KIND_NAMES.join(", ")
                )));
            }
            kinds.insert(k.clone());
        }
        Ok(EventFilter { sites, kinds, cois })
    }

    fn matches(&self, e: &Event) -> bool {
        (self.sites.is_empty() || self.sites.contains(e.author()))
            && (self.cois.is_empty() || self.cois.contains(e.coi()))
            && (self.kinds.is_empty() || self.kinds.contains(e.body().kind_name()))
    }
}
