//! The typed gRPC client of a ledger node (ledger.v1).
//!
//! Owns: the connection, the bearer token on every call, a timeout on every call, bounded
//! retries of appends, and turning the node's answers into checked types (event ids, COIs,
//! timestamps, events decoded from their signed bytes). An answer that breaks the contract
//! is an [`Error::BadResponse`], never repaired.
//!
//! Does not: verify signatures or chains (the node's `VerifyChain` or `ledger verify-bundle`
//! do), choose request ids (the caller does, so a retry is recognisably the same request),
//! print anything, or read the environment.
//!
//! Retries: only `append` and `append_batch` retry, and only on UNAVAILABLE and
//! DEADLINE_EXCEEDED (or a local timeout), always with the same request ids, so the node
//! answers a retry of a stored append with the original receipt instead of storing it twice.

use backon::{ExponentialBuilder, Retryable};
use ledger_core::kpi::{Durations, Period};
use ledger_core::VerdictKind;
use ledger_core::{
    Coi, Event, EventId, Millis, NetworkId, PublicKey, Role, Seq, SiteId, Status, Timestamp,
};
use proto::convert::{duration_from_wire, timestamp_to_wire};
use proto::convert::{status_from_wire, status_to_wire, timestamp_from_wire, verdict_from_wire};
use proto::convert::{ConvertError, REQUEST_ID_MAX};
use proto::v1 as pb;
use proto::v1::ledger_service_client::LedgerServiceClient;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_stream::{Stream, StreamExt};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

/// Time a call may take before it fails with [`Error::Timeout`], unless configured.
pub const CALL_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Time to establish the connection, unless configured.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Retries of an append after the first attempt, unless configured.
pub const APPEND_RETRIES_MAX_DEFAULT: usize = 4;
/// Wait before the first retry; each further wait doubles, up to [`BACKOFF_MAX_DEFAULT`].
pub const BACKOFF_FIRST_DEFAULT: Duration = Duration::from_millis(200);
pub const BACKOFF_MAX_DEFAULT: Duration = Duration::from_secs(5);
/// Largest message the client decodes: a page of `CHAIN_PAGE_EVENTS` events of up to
/// 64 KiB each.
pub const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Events asked for per `GetChain` page.
pub const CHAIN_PAGE_EVENTS: u16 = 1000;
/// Most events `chain` collects before it gives up (the bundle limit).
pub const CHAIN_EVENTS_MAX: usize = ledger_core::bundle::BUNDLE_EVENTS_MAX;
/// Largest bundle `export` accepts (the bundle limit).
pub const EXPORT_BYTES_MAX: u64 = ledger_core::bundle::BUNDLE_BYTES_MAX as u64;

/// Why a call failed. Variants keep the gRPC code and the node's message where there is
/// one, so a caller (the CLI's exit codes) can decide what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{endpoint}: not a node address: {reason} (expected a URL like http://127.0.0.1:50051)"
    )]
    InvalidEndpoint { endpoint: String, reason: String },
    #[error("the token cannot be sent: a token is visible ASCII without spaces")]
    InvalidToken,
    #[error("{endpoint}: node unreachable: {reason}; check the address and that the node runs")]
    Unreachable { endpoint: String, reason: String },
    #[error("{endpoint}: no answer within {after:?}")]
    Timeout { endpoint: String, after: Duration },
    /// A retried call (an append) whose last attempt timed out: `after` bounds each
    /// attempt, not the call, so the message says how many there were and how long they
    /// all took.
    #[error(
        "{endpoint}: no answer within {after:?} on {} ({:.1}s in all)",
        attempts_timed_out(*.n_timeouts, *.n_attempts),
        .elapsed.as_secs_f64()
    )]
    TimeoutRetried {
        endpoint: String,
        after: Duration,
        n_attempts: usize,
        n_timeouts: usize,
        elapsed: Duration,
    },
    /// The node refused the call; sending it again unchanged gives the same answer.
    #[error("node refused the call ({}): {message}", code_name(*.code))]
    Rejected { code: Code, message: String },
    /// The node could not serve the call (internal error, unsupported call, ...).
    #[error("node failed ({}): {message}", code_name(*.code))]
    Failed { code: Code, message: String },
    /// The node's answer breaks the ledger.v1 contract.
    #[error("node answer is malformed: {field}: {reason}")]
    BadResponse { field: String, reason: String },
    #[error("export: the node announced {announced} bytes but sent {received}")]
    ExportLength { announced: u64, received: u64 },
    #[error("{what}: {n} is more than the {max} this client accepts")]
    TooLarge {
        what: &'static str,
        n: u64,
        max: u64,
    },
    #[error("export: cannot write the bundle: {0}")]
    Write(#[source] std::io::Error),
}

impl Error {
    /// Classifies a status once: which codes are the caller's to fix, which mean the node is
    /// out of reach, which are the node's own failure.
    pub fn from_status(endpoint: &str, after: Duration, status: &tonic::Status) -> Error {
        // tonic enforces a request's `grpc-timeout` on the client side as well and reports it
        // as CANCELLED ("Timeout expired"); it is the call timeout all the same.
        if status.code() == Code::Cancelled && caused_by_timeout(status) {
            return Error::Timeout {
                endpoint: endpoint.to_owned(),
                after,
            };
        }
        // A connection that broke before the answer (a node stopping or killed mid-call)
        // comes back as UNKNOWN, but it is the node out of reach like UNAVAILABLE: whether
        // the call took effect is unknown, and a retry with the same request id tells.
        if status.code() == Code::Unknown && connection_broke(status) {
            return Error::Unreachable {
                endpoint: endpoint.to_owned(),
                reason: format!(
                    "the connection broke before the answer ({}); whether the call took effect is unknown: an append sent again with the same request id is stored at most once",
                    status_reason(status)
                ),
            };
        }
        Error::from_code(endpoint, after, status.code(), &status_reason(status))
    }

    fn from_code(endpoint: &str, after: Duration, code: Code, message: &str) -> Error {
        let message = message.to_owned();
        match code {
            Code::Unavailable => Error::Unreachable {
                endpoint: endpoint.to_owned(),
                reason: message,
            },
            Code::DeadlineExceeded => Error::Timeout {
                endpoint: endpoint.to_owned(),
                after,
            },
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::NotFound
            | Code::ResourceExhausted
            | Code::AlreadyExists
            | Code::OutOfRange => Error::Rejected { code, message },
            Code::Ok
            | Code::Cancelled
            | Code::Unknown
            | Code::Aborted
            | Code::Unimplemented
            | Code::Internal
            | Code::DataLoss => Error::Failed { code, message },
        }
    }

    /// Whether sending the same request again may succeed: the node was out of reach or
    /// did not answer in time.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. } | Error::Timeout { .. } | Error::TimeoutRetried { .. } => {
                true
            }
            Error::InvalidEndpoint { .. }
            | Error::InvalidToken
            | Error::Rejected { .. }
            | Error::Failed { .. }
            | Error::BadResponse { .. }
            | Error::ExportLength { .. }
            | Error::TooLarge { .. }
            | Error::Write(_) => false,
        }
    }
}

/// Whether `status` stands for a connection that was reset, aborted or closed under the
/// call (an I/O error of that kind somewhere in its sources).
fn connection_broke(status: &tonic::Status) -> bool {
    use std::io::ErrorKind;
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
                    | ErrorKind::UnexpectedEof
            ) {
                return true;
            }
        }
        source = e.source();
    }
    false
}

/// "each of 5 attempts", or "3 of 5 attempts" when the others failed another way.
fn attempts_timed_out(n_timeouts: usize, n_attempts: usize) -> String {
    if n_timeouts == n_attempts {
        format!("each of {n_attempts} attempts")
    } else {
        format!("{n_timeouts} of {n_attempts} attempts")
    }
}

/// The canonical gRPC name of a code (`FAILED_PRECONDITION`), as people search for it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn caused_by_timeout(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(s) = source {
        if s.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// The node's message, or for a transport failure (empty or generic message) the chain of
/// causes, which is where "connection refused" lives.
fn status_reason(status: &tonic::Status) -> String {
    let mut reason = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(s) = source {
        let text = s.to_string();
        if !reason.contains(&text) {
            if !reason.is_empty() {
                reason.push_str(": ");
            }
            reason.push_str(&text);
        }
        source = s.source();
    }
    reason
}

/// An error and its causes, each said once (transport errors repeat their cause's text).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut reason = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !reason.contains(&text) {
            reason.push_str(": ");
            reason.push_str(&text);
        }
        source = s.source();
    }
    reason
}

fn bad(e: ConvertError) -> Error {
    Error::BadResponse {
        field: e.field,
        reason: e.reason,
    }
}

fn bad_field(field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::BadResponse {
        field: field.into(),
        reason: reason.into(),
    }
}

/// How the client waits and retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Each call (and, for a stream, opening it and each export chunk) must answer within this.
    pub call_timeout: Duration,
    pub connect_timeout: Duration,
    /// Retries of an append after the first attempt (0: no retry).
    pub append_retries_max: usize,
    pub backoff_first: Duration,
    pub backoff_max: Duration,
    /// PEM certificate of the CA that signed the node's TLS certificate; needed for an
    /// `https://` endpoint (the node is identified by the URL's host name).
    pub ca_certificate: Option<Vec<u8>>,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            call_timeout: CALL_TIMEOUT_DEFAULT,
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            append_retries_max: APPEND_RETRIES_MAX_DEFAULT,
            backoff_first: BACKOFF_FIRST_DEFAULT,
            backoff_max: BACKOFF_MAX_DEFAULT,
            ca_certificate: None,
        }
    }
}

/// Adds `authorization: Bearer <token>` to every call. `Debug` never shows the token.
#[derive(Clone)]
pub struct BearerAuth {
    header: MetadataValue<Ascii>,
}

impl BearerAuth {
    /// # Errors
    /// [`Error::InvalidToken`] when the token is empty or cannot be a header value.
    pub fn new(token: &str) -> Result<BearerAuth, Error> {
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::InvalidToken);
        }
        let mut header: MetadataValue<Ascii> = format!("Bearer {token}")
            .parse()
            .map_err(|_| Error::InvalidToken)?;
        header.set_sensitive(true);
        Ok(BearerAuth { header })
    }
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerAuth(<redacted>)")
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut()
            .insert("authorization", self.header.clone());
        Ok(req)
    }
}

type Rpc = LedgerServiceClient<InterceptedService<Channel, BearerAuth>>;

/// A connection to one node, acting with one token. Cheap to clone; clones share the
/// connection.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    rpc: Rpc,
    endpoint: String,
    cfg: ClientConfig,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// Where an appended event landed, as checked values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendReceipt {
    pub event_id: EventId,
    pub site: SiteId,
    pub seq: Seq,
    pub recorded_at: Timestamp,
    /// This answers a retry of a request id the node had already stored.
    pub duplicate: bool,
}

/// A finding as the node reports it. The code stays text: a newer node may know codes
/// this client does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFinding {
    pub code: String,
    pub events: Vec<EventId>,
    pub message: String,
    pub depends_on_missing: bool,
}

/// The node's verdict on a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub verdict: VerdictKind,
    pub status: Status,
    pub findings: Vec<NodeFinding>,
    pub n_events: u64,
}

/// One event from `watch`, with its 1-based position in the chain as the node stores it.
#[derive(Debug, Clone)]
pub struct Watched {
    pub position: u64,
    pub event: Event,
}

/// An opaque continuation token from a previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageToken(String);

impl PageToken {
    /// `None` for an empty token (there is no next page).
    pub fn new(text: String) -> Option<PageToken> {
        (!text.is_empty()).then_some(PageToken(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    pub coi: Coi,
    pub status: Status,
    /// Sites holding a live unit of the chain now.
    pub custodians: Vec<SiteId>,
    pub next_stability_deadline: Option<Timestamp>,
    pub n_events: u64,
    pub n_open_findings: u32,
    pub last_event_at: Option<Timestamp>,
    pub n_flagged_units: u32,
    pub n_open_alerts: u32,
    /// Where each live unit is.
    pub places: Vec<UnitPlace>,
}

/// Where a live unit is: held (`site`, maybe at a `location`) or in transit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitPlace {
    pub unit: String,
    pub site: Option<SiteId>,
    pub location: Option<String>,
    /// (from, to, since) while in transit.
    pub transit: Option<(SiteId, SiteId, Timestamp)>,
    pub stability_deadline: Option<Timestamp>,
}

/// What a worklist asks the node for ([`Client::worklist`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainsQuery {
    pub status: Option<Status>,
    pub page_size: Option<u16>,
    pub page_token: Option<PageToken>,
    /// Most urgent first (overdue, then least time left) instead of by COI.
    pub by_deadline: bool,
    pub site: Option<SiteId>,
    pub needs_action: bool,
    pub live_only: bool,
}

/// An alert as the node reports it (kinds are `ledger_core::AlertKind` names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertItem {
    pub kind: String,
    pub critical: bool,
    pub coi: Option<Coi>,
    pub unit: Option<String>,
    pub site: Option<SiteId>,
    pub event: Option<EventId>,
    pub message: String,
    pub since: Option<Timestamp>,
    pub raised: Option<Timestamp>,
    pub cleared: Option<Timestamp>,
}

/// One message of an alert watch: a snapshot of the open alerts, or one change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertUpdate {
    Snapshot(Vec<AlertItem>),
    Change(AlertItem),
}

/// An event of a store-wide subscription, or (event `None`) a progress mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribed {
    pub position: u64,
    pub event: Option<Event>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainsPage {
    pub chains: Vec<ChainSummary>,
    pub next_page_token: Option<PageToken>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSite {
    pub site: SiteId,
    pub role: Role,
    pub public_key: PublicKey,
    pub feed_seq: Seq,
    /// `None` while the site's feed is empty.
    pub feed_head: Option<EventId>,
}

/// The KPIs of a period as the node computed them (definitions: `ledger_core::kpi`).
/// Finding codes stay text: a newer node may know codes this client does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kpis {
    pub period: Period,
    /// When the node computed them (its clock).
    pub computed_at: Timestamp,
    /// Chains with an event in the period whose figures are counted (intact or incomplete).
    pub n_chains_counted: u64,
    /// How many of those are incomplete.
    pub n_chains_incomplete: u64,
    /// Chains with an event in the period that have a break, left out of every time and
    /// rate figure. Sorted.
    pub chains_broken: Vec<Coi>,
    pub vein_to_vein: Option<Durations>,
    /// In site order.
    pub sites: Vec<SiteKpis>,
    /// In (from, to) order.
    pub lanes: Vec<LaneKpis>,
    /// Findings that name no event of their chain, in code order.
    pub findings_unplaced: Vec<FindingCount>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteKpis {
    pub site: SiteId,
    /// Stays at the site that ended in the period.
    pub dwell: Option<Durations>,
    pub n_condition_records: u64,
    /// How many of the condition records were excursions.
    pub n_excursions: u64,
    /// In code order.
    pub findings: Vec<FindingCount>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneKpis {
    pub from: SiteId,
    pub to: SiteId,
    /// The lane's transit limit on the node.
    pub limit: Millis,
    /// Handoffs whose receipt was scanned in the period.
    pub handoff: Option<Durations>,
    /// How many handoffs took longer than `limit`.
    pub n_late: u64,
    /// How many handoffs had an excursion in transit.
    pub n_with_excursion: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindingCount {
    /// `family.name`: lower-case ASCII letters, digits, `_` and one `.`.
    pub code: String,
    pub n: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub network: NetworkId,
    pub anchor_fingerprint: String,
    pub sites: Vec<NodeSite>,
    pub version: String,
    pub n_events: u64,
}

impl Client {
    /// Connects with the default [`ClientConfig`].
    ///
    /// # Errors
    /// [`Error::InvalidEndpoint`], [`Error::InvalidToken`], [`Error::Unreachable`].
    pub async fn connect(endpoint: &str, token: String) -> Result<Client, Error> {
        Client::connect_with(endpoint, token, ClientConfig::default()).await
    }

    /// # Errors
    /// [`Error::InvalidEndpoint`] for an address that is not an `http://` URL,
    /// [`Error::InvalidToken`], [`Error::Unreachable`] when no connection can be made
    /// within the connect timeout.
    pub async fn connect_with(
        endpoint: &str,
        token: String,
        cfg: ClientConfig,
    ) -> Result<Client, Error> {
        let auth = BearerAuth::new(&token)?;
        // No channel-wide timeout: it would also cut long streams (watch, a large export);
        // each call gets its own in `call`.
        let target = parse_endpoint(endpoint, cfg.ca_certificate.as_deref())?
            .connect_timeout(cfg.connect_timeout);
        let channel = target.connect().await.map_err(|e| Error::Unreachable {
            endpoint: endpoint.to_owned(),
            reason: error_chain(&e),
        })?;
        Ok(Client {
            rpc: rpc(channel.clone(), auth),
            channel,
            endpoint: endpoint.to_owned(),
            cfg,
        })
    }

    /// The same connection acting with another token (another site's).
    ///
    /// # Errors
    /// [`Error::InvalidToken`].
    pub fn with_token(&self, token: &str) -> Result<Client, Error> {
        Ok(Client {
            rpc: rpc(self.channel.clone(), BearerAuth::new(token)?),
            channel: self.channel.clone(),
            endpoint: self.endpoint.clone(),
            cfg: self.cfg.clone(),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A unary request. It carries the deadline (`grpc-timeout`) too, so the node can stop
    /// working on a call the client has given up on.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        req.set_timeout(self.cfg.call_timeout);
        req
    }

    /// A server-streaming request: no `grpc-timeout`, which would bound the whole stream;
    /// the client bounds opening it (and, for export, each chunk) instead.
    fn stream_request<T>(&self, message: T) -> tonic::Request<T> {
        tonic::Request::new(message)
    }

    fn status(&self, status: &tonic::Status) -> Error {
        Error::from_status(&self.endpoint, self.cfg.call_timeout, status)
    }

    fn timeout(&self) -> Error {
        Error::Timeout {
            endpoint: self.endpoint.clone(),
            after: self.cfg.call_timeout,
        }
    }

    /// Runs one unary call (or opens a stream) under the call timeout.
    async fn call<T>(
        &self,
        fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.cfg.call_timeout, fut).await {
            Err(_) => Err(self.timeout()),
            Ok(Err(status)) => Err(self.status(&status)),
            Ok(Ok(response)) => Ok(response.into_inner()),
        }
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.cfg.backoff_first)
            .with_max_delay(self.cfg.backoff_max)
            .with_max_times(self.cfg.append_retries_max)
            .with_jitter()
    }

    /// Appends one event. Retries on UNAVAILABLE and DEADLINE_EXCEEDED with the same
    /// request (so the same request id), at most `append_retries_max` times with
    /// exponential backoff; the node answers a retry of a stored request with the original
    /// receipt (`duplicate` set).
    ///
    /// # Errors
    /// [`Error::Rejected`] with the node's code and message for a refused append; the last
    /// transient error when every attempt failed; [`Error::BadResponse`].
    pub async fn append(&self, req: pb::AppendRequest) -> Result<AppendReceipt, Error> {
        self.retried(|| async {
            let mut rpc = self.rpc.clone();
            let answer = self.call(rpc.append(self.request(req.clone()))).await?;
            let receipt = answer
                .receipt
                .as_ref()
                .ok_or_else(|| bad_field("receipt", "is missing"))?;
            receipt_from_wire("receipt", receipt)
        })
        .await
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retries run out. A last
    /// error that is a timeout after several attempts becomes [`Error::TimeoutRetried`]:
    /// "no answer within 3s" after 20 s of retrying would mislead.
    async fn retried<T, Fut>(&self, mut attempt: impl FnMut() -> Fut) -> Result<T, Error>
    where
        Fut: Future<Output = Result<T, Error>>,
    {
        let started = tokio::time::Instant::now();
        // Atomics rather than cells: the future must stay Send for callers that spawn it.
        let n_attempts = AtomicUsize::new(0);
        let n_timeouts = AtomicUsize::new(0);
        let (n_attempts, n_timeouts) = (&n_attempts, &n_timeouts);
        let result = (|| {
            let answer = attempt();
            async move {
                n_attempts.fetch_add(1, Ordering::Relaxed);
                let answer = answer.await;
                if let Err(Error::Timeout { .. }) = answer {
                    n_timeouts.fetch_add(1, Ordering::Relaxed);
                }
                answer
            }
        })
        .retry(self.backoff())
        .when(Error::is_transient)
        .await;
        match result {
            Err(Error::Timeout { endpoint, after }) if n_attempts.load(Ordering::Relaxed) > 1 => {
                Err(Error::TimeoutRetried {
                    endpoint,
                    after,
                    n_attempts: n_attempts.load(Ordering::Relaxed),
                    n_timeouts: n_timeouts.load(Ordering::Relaxed),
                    elapsed: started.elapsed(),
                })
            }
            other => other,
        }
    }

    /// Appends scans buffered while offline, in order; each answered on its own (a refused
    /// one does not stop the ones after it). Retried like [`Client::append`]: every request
    /// keeps its request id, so a retry never stores anything twice.
    ///
    /// # Errors
    /// The call's error (the per-request ones are in the list); [`Error::BadResponse`] when
    /// the node does not answer each request exactly once.
    pub async fn append_batch(
        &self,
        reqs: Vec<pb::AppendRequest>,
    ) -> Result<Vec<Result<AppendReceipt, Error>>, Error> {
        let batch = pb::AppendBatchRequest { requests: reqs };
        let n_requests = batch.requests.len();
        let answer = self
            .retried(|| async {
                let mut rpc = self.rpc.clone();
                self.call(rpc.append_batch(self.request(batch.clone())))
                    .await
            })
            .await?;
        if answer.results.len() != n_requests {
            return Err(bad_field(
                "results",
                format!("{} results for {n_requests} requests", answer.results.len()),
            ));
        }
        answer
            .results
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let field = format!("results[{i}]");
                match &r.result {
                    None => Err(bad_field(field, "has neither receipt nor error")),
                    Some(pb::append_batch_result::Result::Receipt(receipt)) => {
                        Ok(receipt_from_wire(&format!("{field}.receipt"), receipt))
                    }
                    Some(pb::append_batch_result::Result::Error(e)) => Ok(Err(Error::from_code(
                        &self.endpoint,
                        self.cfg.call_timeout,
                        Code::from(e.code),
                        &e.message,
                    ))),
                }
            })
            .collect()
    }

    /// One page of a chain's events, in causal order; `None` as the token asks for the first.
    ///
    /// # Errors
    /// The call's error; [`Error::BadResponse`] for an event whose signed bytes do not
    /// decode or do not hash to its event id.
    pub async fn chain_page(
        &self,
        coi: &Coi,
        page_size: u16,
        page_token: Option<&PageToken>,
    ) -> Result<(Vec<Event>, Option<PageToken>), Error> {
        let mut rpc = self.rpc.clone();
        let answer = self
            .call(rpc.get_chain(self.request(pb::GetChainRequest {
                coi: coi.to_string(),
                page_size: i32::from(page_size),
                page_token: page_token.map(|t| t.0.clone()).unwrap_or_default(),
            })))
            .await?;
        let events = answer
            .events
            .iter()
            .enumerate()
            .map(|(i, e)| event_from_wire(&format!("events[{i}]"), e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((events, PageToken::new(answer.next_page_token)))
    }

    /// A chain's events in causal order, every page.
    ///
    /// # Errors
    /// As [`Client::chain_page`]; [`Error::TooLarge`] past [`CHAIN_EVENTS_MAX`] events;
    /// [`Error::BadResponse`] when the node hands back the token it was given (it would
    /// never end).
    pub async fn chain(&self, coi: &Coi) -> Result<Vec<Event>, Error> {
        let mut events = Vec::new();
        let mut token: Option<PageToken> = None;
        loop {
            let (page, next) = self
                .chain_page(coi, CHAIN_PAGE_EVENTS, token.as_ref())
                .await?;
            events.extend(page);
            if events.len() > CHAIN_EVENTS_MAX {
                return Err(Error::TooLarge {
                    what: "chain events",
                    n: events.len() as u64,
                    max: CHAIN_EVENTS_MAX as u64,
                });
            }
            match next {
                None => return Ok(events),
                Some(next) if Some(&next) == token.as_ref() => {
                    return Err(bad_field(
                        "next_page_token",
                        "repeats the token of the page it answers",
                    ))
                }
                Some(next) => token = Some(next),
            }
        }
    }

    /// Runs the node's verifier over a chain as the node holds it.
    ///
    /// # Errors
    /// The call's error; [`Error::BadResponse`] for an unset verdict or status.
    pub async fn verify(&self, coi: &Coi) -> Result<Verification, Error> {
        let mut rpc = self.rpc.clone();
        let answer = self
            .call(rpc.verify_chain(self.request(pb::VerifyChainRequest {
                coi: coi.to_string(),
            })))
            .await?;
        let verdict = verdict_from_wire(answer.verdict)
            .ok_or_else(|| bad_field("verdict", format!("{} is not a verdict", answer.verdict)))?;
        let status = status_from_wire("status", answer.status)
            .map_err(bad)?
            .ok_or_else(|| bad_field("status", "is unspecified"))?;
        let findings = answer
            .findings
            .iter()
            .enumerate()
            .map(|(i, f)| {
                Ok(NodeFinding {
                    code: f.code.clone(),
                    events: f
                        .event_ids
                        .iter()
                        .enumerate()
                        .map(|(j, id)| event_id(&format!("findings[{i}].event_ids[{j}]"), id))
                        .collect::<Result<_, _>>()?,
                    message: f.message.clone(),
                    depends_on_missing: f.depends_on_missing,
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok(Verification {
            verdict,
            status,
            findings,
            n_events: answer.event_count,
        })
    }

    /// Streams a chain's signed bundle into `out`, chunk by chunk, and returns its size.
    /// Each chunk must arrive within the call timeout. `out` is flushed at the end; on an
    /// error it holds a partial bundle, which the caller must discard.
    ///
    /// # Errors
    /// The call's error; [`Error::ExportLength`] when the bytes received differ from the
    /// announced `total_bytes`; [`Error::TooLarge`] past [`EXPORT_BYTES_MAX`];
    /// [`Error::Write`].
    pub async fn export(&self, coi: &Coi, mut out: impl AsyncWrite + Unpin) -> Result<u64, Error> {
        let mut rpc = self.rpc.clone();
        let mut stream = self
            .call(
                rpc.export_chain(self.stream_request(pb::ExportChainRequest {
                    coi: coi.to_string(),
                })),
            )
            .await?;
        let mut announced: Option<u64> = None;
        let mut received: u64 = 0;
        loop {
            let chunk = match tokio::time::timeout(self.cfg.call_timeout, stream.message()).await {
                Err(_) => return Err(self.timeout()),
                Ok(Err(status)) => return Err(self.status(&status)),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => chunk,
            };
            let total = *announced.get_or_insert(chunk.total_bytes);
            if total > EXPORT_BYTES_MAX {
                return Err(Error::TooLarge {
                    what: "export bytes",
                    n: total,
                    max: EXPORT_BYTES_MAX,
                });
            }
            if chunk.total_bytes != total {
                return Err(bad_field(
                    "total_bytes",
                    format!("changed from {total} to {} mid-stream", chunk.total_bytes),
                ));
            }
            received = received.saturating_add(chunk.chunk.len() as u64);
            if received > total {
                return Err(Error::ExportLength {
                    announced: total,
                    received,
                });
            }
            out.write_all(&chunk.chunk).await.map_err(Error::Write)?;
        }
        let announced = announced.ok_or_else(|| bad_field("chunk", "the node sent none"))?;
        if received != announced {
            return Err(Error::ExportLength {
                announced,
                received,
            });
        }
        out.flush().await.map_err(Error::Write)?;
        Ok(received)
    }

    /// Streams a chain's events after the first `from_position`, then each new one as the
    /// node stores it. Opening the stream is under the call timeout; waiting for the next
    /// event is not (a chain can be quiet for days). A gap in positions is an error item: an
    /// event would otherwise go unseen.
    ///
    /// # Errors
    /// The call's error when the stream cannot be opened; items carry later errors.
    pub async fn watch(
        &self,
        coi: &Coi,
        from_position: u64,
    ) -> Result<impl Stream<Item = Result<Watched, Error>> + Send + Unpin + 'static, Error> {
        let mut rpc = self.rpc.clone();
        let stream = self
            .call(rpc.watch_chain(self.stream_request(pb::WatchChainRequest {
                coi: coi.to_string(),
                from_position,
            })))
            .await?;
        let endpoint = self.endpoint.clone();
        let after = self.cfg.call_timeout;
        let mut position_expected = from_position.saturating_add(1);
        Ok(stream.map(move |item| {
            let item = item.map_err(|s| Error::from_status(&endpoint, after, &s))?;
            if item.position != position_expected {
                return Err(bad_field(
                    "position",
                    format!(
                        "{} where {position_expected} was next; watch again with --from {}",
                        item.position,
                        position_expected - 1
                    ),
                ));
            }
            position_expected += 1;
            let event = item
                .event
                .as_ref()
                .ok_or_else(|| bad_field("event", "is missing"))?;
            Ok(Watched {
                position: item.position,
                event: event_from_wire("event", event)?,
            })
        }))
    }

    /// One page of the chains this node holds, optionally only those with `status`.
    /// `page_size` `None` leaves the size to the node (it caps it at 1000).
    ///
    /// # Errors
    /// The call's error; [`Error::BadResponse`].
    pub async fn chains(
        &self,
        status: Option<Status>,
        page_size: Option<u16>,
        page_token: Option<&PageToken>,
    ) -> Result<ChainsPage, Error> {
        self.worklist(&ChainsQuery {
            status,
            page_size,
            page_token: page_token.cloned(),
            ..ChainsQuery::default()
        })
        .await
    }

    /// One page of chains as `q` filters and sorts them.
    ///
    /// # Errors
    /// The call's error; [`Error::BadResponse`].
    pub async fn worklist(&self, q: &ChainsQuery) -> Result<ChainsPage, Error> {
        let mut rpc = self.rpc.clone();
        let answer = self
            .call(
                rpc.list_chains(
                    self.request(pb::ListChainsRequest {
                        status: q
                            .status
                            .map_or(pb::ChainStatus::Unspecified, status_to_wire)
                            as i32,
                        page_size: q.page_size.map_or(0, i32::from),
                        page_token: q
                            .page_token
                            .as_ref()
                            .map(|t| t.0.clone())
                            .unwrap_or_default(),
                        sort: if q.by_deadline {
                            pb::ChainSort::Deadline
                        } else {
                            pb::ChainSort::Coi
                        } as i32,
                        site_id: q.site.as_ref().map(ToString::to_string).unwrap_or_default(),
                        needs_action: q.needs_action,
                        live_only: q.live_only,
                    }),
                ),
            )
            .await?;
        let chains = answer
            .chains
            .iter()
            .enumerate()
            .map(|(i, c)| summary_from_wire(&format!("chains[{i}]"), c))
            .collect::<Result<_, _>>()?;
        Ok(ChainsPage {
            chains,
            next_page_token: PageToken::new(answer.next_page_token),
        })
    }

    /// The node's open alerts, most urgent first, and with `include_cleared` the recently
    /// cleared ones after them.
    ///
    /// # Errors
    /// The call's error; [`Error::BadResponse`].
    pub async fn alerts(&self, include_cleared: bool) -> Result<Vec<AlertItem>, Error> {
        let mut rpc = self.rpc.clone();
        let answer = self
            .call(rpc.list_alerts(self.request(pb::ListAlertsRequest {
                include_cleared,
                ..pb::ListAlertsRequest::default()
            })))
            .await?;
        answer
            .alerts
            .iter()
            .enumerate()
            .map(|(i, a)| alert_from_wire(&format!("alerts[{i}]"), a))
            .collect()
    }

    /// The open alerts as a snapshot, then each raise and clear (a new snapshot after the
    /// watcher fell behind).
    ///
    /// # Errors
    /// The call's error when the stream cannot be opened; items carry later errors.
    pub async fn watch_alerts(
        &self,
    ) -> Result<impl Stream<Item = Result<AlertUpdate, Error>> + Send + Unpin + 'static, Error>
    {
        let mut rpc = self.rpc.clone();
        let stream = self
            .call(rpc.watch_alerts(self.stream_request(pb::WatchAlertsRequest::default())))
            .await?;
        let endpoint = self.endpoint.clone();
        let after = self.cfg.call_timeout;
        Ok(stream.map(move |item| {
            let item = item.map_err(|s| Error::from_status(&endpoint, after, &s))?;
            if item.is_snapshot {
                return Ok(AlertUpdate::Snapshot(
                    item.snapshot
                        .iter()
                        .enumerate()
                        .map(|(i, a)| alert_from_wire(&format!("snapshot[{i}]"), a))
                        .collect::<Result<_, _>>()?,
                ));
            }
            let change = item
                .change
                .as_ref()
                .ok_or_else(|| bad_field("change", "is missing"))?;
            Ok(AlertUpdate::Change(alert_from_wire("change", change)?))
        }))
    }

    /// Every event the node stores, in store order, after position `from_position`, then
    /// each new one. Positions only grow; an item that goes backwards is an error.
    ///
    /// # Errors
    /// The call's error when the stream cannot be opened; items carry later errors.
    pub async fn subscribe(
        &self,
        from_position: u64,
        sites: &[SiteId],
        kinds: &[String],
        cois: &[Coi],
    ) -> Result<impl Stream<Item = Result<Subscribed, Error>> + Send + Unpin + 'static, Error> {
        let mut rpc = self.rpc.clone();
        let stream = self
            .call(rpc.subscribe(self.stream_request(pb::SubscribeRequest {
                from_position,
                site_ids: sites.iter().map(ToString::to_string).collect(),
                kinds: kinds.to_vec(),
                cois: cois.iter().map(ToString::to_string).collect(),
            })))
            .await?;
        let endpoint = self.endpoint.clone();
        let after = self.cfg.call_timeout;
        let mut last = from_position;
        Ok(stream.map(move |item| {
            let item = item.map_err(|s| Error::from_status(&endpoint, after, &s))?;
            let moved = if item.event.is_some() {
                item.position > last
            } else {
                item.position >= last
            };
            if !moved {
                return Err(bad_field(
                    "position",
                    format!("{} after {last}: positions only grow", item.position),
                ));
            }
            last = item.position;
            Ok(Subscribed {
                position: item.position,
                event: item
                    .event
                    .as_ref()
                    .map(|e| event_from_wire("event", e))
                    .transpose()?,
            })
        }))
    }

    /// The KPIs of `period` over the chains the node holds.
    ///
    /// # Errors
    /// The call's error; [`Error::BadResponse`] for an answer that is not a report of
    /// `period` or whose figures contradict each other.
    pub async fn kpis(&self, period: Period) -> Result<Kpis, Error> {
        let mut rpc = self.rpc.clone();
        let answer = self
            .call(rpc.get_kpis(self.request(pb::GetKpisRequest {
                start_time: Some(timestamp_to_wire(period.from())),
                end_time: Some(timestamp_to_wire(period.to())),
            })))
            .await?;
        kpis_from_wire(&answer, period)
    }

    /// Describes the node: network, sites it signs for, feed heads, version.
    ///
    /// # Errors
    /// The call's error; [`Error::BadResponse`].
    pub async fn node_info(&self) -> Result<NodeInfo, Error> {
        let mut rpc = self.rpc.clone();
        let answer = self
            .call(rpc.get_node_info(self.request(pb::GetNodeInfoRequest {})))
            .await?;
        node_info_from_wire(&answer)
    }
}

fn rpc(channel: Channel, auth: BearerAuth) -> Rpc {
    LedgerServiceClient::with_interceptor(channel, auth)
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
}

/// Accepts `http://host:port`, or `https://host:port` with the CA certificate that signed
/// the node's certificate (the host name is checked against it). A bare `host:port` is
/// refused rather than guessed at.
fn parse_endpoint(endpoint: &str, ca_certificate: Option<&[u8]>) -> Result<Endpoint, Error> {
    let invalid = |reason: &str| Error::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let https = endpoint.starts_with("https://");
    if !https && !endpoint.starts_with("http://") {
        return Err(invalid("it must start with http:// or https://"));
    }
    let target =
        Endpoint::from_shared(endpoint.to_owned()).map_err(|e| invalid(&error_chain(&e)))?;
    if !https {
        return Ok(target);
    }
    let ca = ca_certificate.ok_or_else(|| invalid("https needs the CA certificate that signed the node's certificate (--ca-file or LEDGER_CA_FILE)"))?;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca));
    target
        .tls_config(tls)
        .map_err(|e| invalid(&error_chain(&e)))
}

fn event_id(field: &str, text: &str) -> Result<EventId, Error> {
    EventId::from_hex(text).map_err(|e| bad_field(field, e.to_string()))
}

fn site_id(field: &str, text: &str) -> Result<SiteId, Error> {
    SiteId::parse(text).map_err(|e| bad_field(field, e.to_string()))
}

fn receipt_from_wire(field: &str, r: &pb::AppendReceipt) -> Result<AppendReceipt, Error> {
    Ok(AppendReceipt {
        event_id: event_id(&format!("{field}.event_id"), &r.event_id)?,
        site: site_id(&format!("{field}.site_id"), &r.site_id)?,
        seq: match r.seq {
            0 => return Err(bad_field(format!("{field}.seq"), "must be 1 or more")),
            n => Seq(n),
        },
        recorded_at: timestamp_from_wire(
            &format!("{field}.recorded_time"),
            r.recorded_time.as_ref(),
        )
        .map_err(bad)?,
        duplicate: r.duplicate,
    })
}

/// Decodes the signed bytes (the event itself) and checks that they are the event the
/// answer names; the other wire fields are a convenience copy and are not trusted.
fn event_from_wire(field: &str, e: &pb::Event) -> Result<Event, Error> {
    let claimed = event_id(&format!("{field}.event_id"), &e.event_id)?;
    let event = Event::from_bytes(&e.signed_bytes)
        .map_err(|err| bad_field(format!("{field}.signed_bytes"), err.to_string()))?;
    if event.id() != claimed {
        return Err(bad_field(
            format!("{field}.event_id"),
            format!(
                "names {} but the signed bytes hash to {}",
                claimed.short(),
                event.id().short()
            ),
        ));
    }
    Ok(event)
}

fn optional_time(
    field: &str,
    t: Option<&prost_types::Timestamp>,
) -> Result<Option<Timestamp>, Error> {
    t.map(|t| timestamp_from_wire(field, Some(t)).map_err(bad))
        .transpose()
}

fn summary_from_wire(field: &str, c: &pb::ChainSummary) -> Result<ChainSummary, Error> {
    Ok(ChainSummary {
        coi: Coi::parse(&c.coi).map_err(|e| bad_field(format!("{field}.coi"), e.to_string()))?,
        status: status_from_wire(&format!("{field}.status"), c.status)
            .map_err(bad)?
            .ok_or_else(|| bad_field(format!("{field}.status"), "is unspecified"))?,
        custodians: c
            .custodian_site_ids
            .iter()
            .enumerate()
            .map(|(i, s)| site_id(&format!("{field}.custodian_site_ids[{i}]"), s))
            .collect::<Result<_, _>>()?,
        next_stability_deadline: optional_time(
            &format!("{field}.next_stability_deadline"),
            c.next_stability_deadline.as_ref(),
        )?,
        n_events: c.event_count,
        n_open_findings: c.open_finding_count,
        last_event_at: optional_time(
            &format!("{field}.last_event_time"),
            c.last_event_time.as_ref(),
        )?,
        n_flagged_units: c.flagged_unit_count,
        n_open_alerts: c.open_alert_count,
        places: c
            .places
            .iter()
            .enumerate()
            .map(|(i, p)| place_from_wire(&format!("{field}.places[{i}]"), p))
            .collect::<Result<_, _>>()?,
    })
}

fn place_from_wire(field: &str, p: &pb::UnitPlace) -> Result<UnitPlace, Error> {
    let opt_site = |name: &str, s: &str| {
        (!s.is_empty())
            .then(|| site_id(&format!("{field}.{name}"), s))
            .transpose()
    };
    let transit = match (
        opt_site("from_site_id", &p.from_site_id)?,
        opt_site("to_site_id", &p.to_site_id)?,
    ) {
        (Some(from), Some(to)) => Some((
            from,
            to,
            optional_time(
                &format!("{field}.in_transit_since"),
                p.in_transit_since.as_ref(),
            )?
            .ok_or_else(|| bad_field(format!("{field}.in_transit_since"), "is missing"))?,
        )),
        _ => None,
    };
    Ok(UnitPlace {
        unit: p.unit_id.clone(),
        site: opt_site("site_id", &p.site_id)?,
        location: (!p.location.is_empty()).then(|| p.location.clone()),
        transit,
        stability_deadline: optional_time(
            &format!("{field}.stability_deadline"),
            p.stability_deadline.as_ref(),
        )?,
    })
}

fn alert_from_wire(field: &str, a: &pb::Alert) -> Result<AlertItem, Error> {
    Ok(AlertItem {
        kind: a.kind.clone(),
        critical: a.severity == pb::AlertSeverity::Critical as i32,
        coi: (!a.coi.is_empty())
            .then(|| Coi::parse(&a.coi))
            .transpose()
            .map_err(|e| bad_field(format!("{field}.coi"), e.to_string()))?,
        unit: (!a.unit_id.is_empty()).then(|| a.unit_id.clone()),
        site: (!a.site_id.is_empty())
            .then(|| site_id(&format!("{field}.site_id"), &a.site_id))
            .transpose()?,
        event: (!a.event_id.is_empty())
            .then(|| EventId::from_hex(&a.event_id))
            .transpose()
            .map_err(|e| bad_field(format!("{field}.event_id"), e.to_string()))?,
        message: a.message.clone(),
        since: optional_time(&format!("{field}.since_time"), a.since_time.as_ref())?,
        raised: optional_time(&format!("{field}.raised_time"), a.raised_time.as_ref())?,
        cleared: optional_time(&format!("{field}.cleared_time"), a.cleared_time.as_ref())?,
    })
}

fn durations_from_wire(field: &str, d: &pb::DurationStats) -> Result<Durations, Error> {
    let span = |name: &str, v: Option<&prost_types::Duration>| {
        duration_from_wire(&format!("{field}.{name}"), v).map_err(bad)
    };
    let d = Durations {
        count: d.count,
        min: span("min", d.min.as_ref())?,
        median: span("median", d.median.as_ref())?,
        p90: span("p90", d.p90.as_ref())?,
        max: span("max", d.max.as_ref())?,
        mean: span("mean", d.mean.as_ref())?,
    };
    if d.count == 0 {
        return Err(bad_field(
            format!("{field}.count"),
            "is 0; a figure with no span is left unset",
        ));
    }
    if !(d.min <= d.median && d.median <= d.p90 && d.p90 <= d.max) {
        return Err(bad_field(
            field,
            format!(
                "min {} <= median {} <= p90 {} <= max {} does not hold",
                d.min.0, d.median.0, d.p90.0, d.max.0
            ),
        ));
    }
    if !(d.min <= d.mean && d.mean <= d.max) {
        return Err(bad_field(
            format!("{field}.mean"),
            format!("{} is not between min and max", d.mean.0),
        ));
    }
    Ok(d)
}

fn optional_durations(
    field: &str,
    d: Option<&pb::DurationStats>,
) -> Result<Option<Durations>, Error> {
    d.map(|d| durations_from_wire(field, d)).transpose()
}

/// A count that is part of a whole: at most `whole`.
fn part_of(field: &str, part: u64, whole: u64, what: &str) -> Result<u64, Error> {
    if part > whole {
        return Err(bad_field(
            field,
            format!("{part} is more than the {whole} {what}"),
        ));
    }
    Ok(part)
}

fn finding_counts_from_wire(
    field: &str,
    list: &[pb::FindingCount],
) -> Result<Vec<FindingCount>, Error> {
    list.iter()
        .enumerate()
        .map(|(i, f)| {
            // Codes are printed as they come and name CSV metrics: only what a code is made of.
            let well_formed = f.code.split_once('.').is_some_and(|(family, name)| {
                [family, name].iter().all(|part| {
                    !part.is_empty()
                        && part
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                })
            });
            if !well_formed {
                return Err(bad_field(
                    format!("{field}[{i}].code"),
                    format!("{:?} is not a finding code (family.name)", f.code),
                ));
            }
            Ok(FindingCount {
                code: f.code.clone(),
                n: f.count,
            })
        })
        .collect()
}

fn kpis_from_wire(r: &pb::GetKpisResponse, asked: Period) -> Result<Kpis, Error> {
    let from = timestamp_from_wire("start_time", r.start_time.as_ref()).map_err(bad)?;
    let to = timestamp_from_wire("end_time", r.end_time.as_ref()).map_err(bad)?;
    if (from, to) != (asked.from(), asked.to()) {
        return Err(bad_field(
            "start_time",
            format!(
                "the answer is for {from} to {to}, not the period asked, {} to {}",
                asked.from(),
                asked.to()
            ),
        ));
    }
    let sites = r
        .sites
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let field = format!("sites[{i}]");
            Ok(SiteKpis {
                site: site_id(&format!("{field}.site_id"), &s.site_id)?,
                dwell: optional_durations(&format!("{field}.dwell"), s.dwell.as_ref())?,
                n_condition_records: s.condition_records,
                n_excursions: part_of(
                    &format!("{field}.excursions"),
                    s.excursions,
                    s.condition_records,
                    "condition records",
                )?,
                findings: finding_counts_from_wire(&format!("{field}.findings"), &s.findings)?,
            })
        })
        .collect::<Result<_, Error>>()?;
    let lanes = r
        .lanes
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let field = format!("lanes[{i}]");
            let handoff = optional_durations(&format!("{field}.handoff"), l.handoff.as_ref())?;
            let n_handoffs = handoff.map_or(0, |h| h.count);
            Ok(LaneKpis {
                from: site_id(&format!("{field}.from_site_id"), &l.from_site_id)?,
                to: site_id(&format!("{field}.to_site_id"), &l.to_site_id)?,
                limit: duration_from_wire(&format!("{field}.limit"), l.limit.as_ref())
                    .map_err(bad)?,
                handoff,
                n_late: part_of(&format!("{field}.late"), l.late, n_handoffs, "handoffs")?,
                n_with_excursion: part_of(
                    &format!("{field}.with_excursion"),
                    l.with_excursion,
                    n_handoffs,
                    "handoffs",
                )?,
            })
        })
        .collect::<Result<_, Error>>()?;
    Ok(Kpis {
        period: asked,
        computed_at: timestamp_from_wire("computed_time", r.computed_time.as_ref()).map_err(bad)?,
        n_chains_counted: r.chains_counted,
        n_chains_incomplete: part_of(
            "chains_incomplete",
            r.chains_incomplete,
            r.chains_counted,
            "chains counted",
        )?,
        chains_broken: r
            .broken_cois
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Coi::parse(c).map_err(|e| bad_field(format!("broken_cois[{i}]"), e.to_string()))
            })
            .collect::<Result<_, _>>()?,
        vein_to_vein: optional_durations("vein_to_vein", r.vein_to_vein.as_ref())?,
        sites,
        lanes,
        findings_unplaced: finding_counts_from_wire("findings_unplaced", &r.findings_unplaced)?,
    })
}

fn public_key(field: &str, text: &str) -> Result<PublicKey, Error> {
    let bytes = hex::decode(text).map_err(|e| bad_field(field, e.to_string()))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| bad_field(field, "must be 32 bytes (64 hex digits)"))?;
    Ok(PublicKey(bytes))
}

fn node_info_from_wire(n: &pb::GetNodeInfoResponse) -> Result<NodeInfo, Error> {
    Ok(NodeInfo {
        network: NetworkId::parse(&n.network_id)
            .map_err(|e| bad_field("network_id", e.to_string()))?,
        anchor_fingerprint: n.anchor_fingerprint.clone(),
        sites: n
            .sites
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let field = format!("sites[{i}]");
                Ok(NodeSite {
                    site: site_id(&format!("{field}.site_id"), &s.site_id)?,
                    role: Role::parse(&s.role).ok_or_else(|| {
                        bad_field(
                            format!("{field}.role"),
                            format!("'{}' is not clinic, depot, manufacturer or lab", s.role),
                        )
                    })?,
                    public_key: public_key(&format!("{field}.public_key"), &s.public_key)?,
                    feed_seq: Seq(s.feed_seq),
                    feed_head: match s.feed_head_event_id.as_str() {
                        "" => None,
                        id => Some(event_id(&format!("{field}.feed_head_event_id"), id)?),
                    },
                })
            })
            .collect::<Result<_, Error>>()?,
        version: n.version.clone(),
        n_events: n.event_count,
    })
}

/// Request ids derived from names: `<prefix>-` and 40 hex digits of a SHA-256 over the
/// length-prefixed parts, so different part lists never collide by concatenation and the
/// result always satisfies the node's request id rules (at most [`REQUEST_ID_MAX`]
/// characters of `A-Z a-z 0-9 - _ . :`).
///
/// Input to the hash, byte by byte: the tag `ledger.v1.request_id\0`, then for each part its
/// length in bytes as a u64 big-endian, then its UTF-8 bytes.
pub fn derive_request_id(prefix: &str, parts: &[&[u8]]) -> String {
    let mut input = b"ledger.v1.request_id\0".to_vec();
    for p in parts {
        input.extend_from_slice(&(p.len() as u64).to_be_bytes());
        input.extend_from_slice(p);
    }
    let digest = ledger_core::crypto::sha256(&input);
    let id = format!("{prefix}-{}", &hex::encode(digest)[..40]);
    assert!(
        id.len() <= REQUEST_ID_MAX,
        "request id prefix '{prefix}' is too long"
    );
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_class(code: Code, transient: bool, rejected: bool) {
        let e = Error::from_code("http://n", Duration::from_secs(1), code, "why");
        assert_eq!(e.is_transient(), transient, "{code:?}: {e}");
        assert_eq!(
            matches!(e, Error::Rejected { .. }),
            rejected,
            "{code:?}: {e}"
        );
    }

    /// A connection reset under the call (tonic: UNKNOWN with the I/O error as a source)
    /// is the node out of reach, retried with the same request id; any other UNKNOWN is
    /// the node's failure.
    #[test]
    fn a_connection_broken_under_the_call_is_transient() {
        let after = Duration::from_secs(1);
        for kind in [
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::BrokenPipe,
        ] {
            let status = tonic::Status::from_error(Box::new(std::io::Error::new(kind, "gone")));
            assert_eq!(status.code(), Code::Unknown);
            let e = Error::from_status("http://n", after, &status);
            assert!(e.is_transient(), "{kind:?}: {e}");
            assert!(
                e.to_string()
                    .contains("the connection broke before the answer")
                    && e.to_string().contains("same request id"),
                "{e}"
            );
        }
        let other = tonic::Status::from_error(Box::new(std::io::Error::other("disk on fire")));
        let e = Error::from_status("http://n", after, &other);
        assert!(
            !e.is_transient() && matches!(e, Error::Failed { .. }),
            "{e}"
        );
    }

    #[test]
    fn status_codes_are_classified() {
        check_class(Code::Unavailable, true, false);
        check_class(Code::DeadlineExceeded, true, false);
        for code in [
            Code::InvalidArgument,
            Code::FailedPrecondition,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::NotFound,
            Code::ResourceExhausted,
        ] {
            check_class(code, false, true);
        }
        for code in [
            Code::Internal,
            Code::Unknown,
            Code::Unimplemented,
            Code::DataLoss,
        ] {
            check_class(code, false, false);
        }
    }

    #[test]
    fn rejection_keeps_code_and_message() {
        let e = Error::from_status(
            "http://n",
            Duration::from_secs(1),
            &tonic::Status::failed_precondition("clinic-a does not hold BAG-1"),
        );
        assert_eq!(
            e.to_string(),
            "node refused the call (FAILED_PRECONDITION): clinic-a does not hold BAG-1"
        );
    }

    #[test]
    fn tokens_must_be_header_safe_and_never_show() {
        assert!(matches!(BearerAuth::new(""), Err(Error::InvalidToken)));
        assert!(matches!(BearerAuth::new("a b"), Err(Error::InvalidToken)));
        assert!(matches!(BearerAuth::new("tök"), Err(Error::InvalidToken)));
        let auth = BearerAuth::new("s3cret").unwrap();
        assert!(!format!("{auth:?}").contains("s3cret"));
    }

    #[test]
    fn endpoints_need_http() {
        for bad in ["127.0.0.1:50051", "https://node:50051", "", "http://"] {
            assert!(
                matches!(
                    parse_endpoint(bad, None),
                    Err(Error::InvalidEndpoint { .. })
                ),
                "{bad}"
            );
        }
        assert!(parse_endpoint("http://127.0.0.1:50051", None).is_ok());
    }

    #[test]
    fn derived_request_ids_are_stable_valid_and_unambiguous() {
        let a = derive_request_id("replay", &[b"standard", b"collect"]);
        expect_test::expect!["replay-125d283db2dae989a88bc0e7515dc08d318d07fd"].assert_eq(&a);
        assert_ne!(a, derive_request_id("replay", &[b"standar", b"dcollect"]));
        assert_ne!(a, derive_request_id("replay", &[b"standard", b"pack"]));
    }

    /// A KPI answer is a report of the period asked, with figures that agree with each
    /// other; anything else is a malformed answer, never printed.
    #[test]
    fn kpi_answers_are_checked() {
        let at = |s: i64| {
            Some(prost_types::Timestamp {
                seconds: s,
                nanos: 0,
            })
        };
        let span = |ms: i64| Some(proto::convert::duration_to_wire(ledger_core::Millis(ms)));
        let period = Period::new(Timestamp(1_000_000), Timestamp(2_000_000)).unwrap();
        let good = || pb::GetKpisResponse {
            start_time: at(1000),
            end_time: at(2000),
            computed_time: at(3000),
            chains_counted: 2,
            chains_incomplete: 1,
            broken_cois: vec!["CHA999926ABC123".into()],
            vein_to_vein: Some(pb::DurationStats {
                count: 2,
                min: span(10),
                median: span(10),
                p90: span(30),
                max: span(30),
                mean: span(20),
            }),
            sites: vec![pb::SiteKpi {
                site_id: "mfg-1".into(),
                dwell: None,
                condition_records: 2,
                excursions: 1,
                findings: vec![pb::FindingCount {
                    code: "custody.seal_broken".into(),
                    count: 1,
                }],
            }],
            lanes: vec![],
            findings_unplaced: vec![],
        };
        let k = kpis_from_wire(&good(), period).expect("a good answer");
        assert_eq!(
            k.vein_to_vein.map(|d| d.mean),
            Some(ledger_core::Millis(20))
        );
        assert_eq!(k.sites[0].findings[0].code, "custody.seal_broken");

        #[track_caller]
        fn refused(r: pb::GetKpisResponse, period: Period, field: &str) {
            match kpis_from_wire(&r, period) {
                Err(Error::BadResponse { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        let mut r = good();
        r.end_time = at(2001);
        refused(r, period, "start_time");
        let mut r = good();
        r.chains_incomplete = 3;
        refused(r, period, "chains_incomplete");
        let mut r = good();
        r.vein_to_vein.as_mut().unwrap().median = span(31);
        refused(r, period, "vein_to_vein");
        let mut r = good();
        r.vein_to_vein.as_mut().unwrap().count = 0;
        refused(r, period, "vein_to_vein.count");
        let mut r = good();
        r.sites[0].excursions = 3;
        refused(r, period, "sites[0].excursions");
        let mut r = good();
        r.sites[0].findings[0].code = "seal broken,1\n".into();
        refused(r, period, "sites[0].findings[0].code");
        let mut r = good();
        r.broken_cois[0] = "nope".into();
        refused(r, period, "broken_cois[0]");
    }

    #[test]
    fn receipts_are_checked() {
        let good = pb::AppendReceipt {
            event_id: "ab".repeat(32),
            site_id: "clinic-a".into(),
            seq: 3,
            recorded_time: Some(prost_types::Timestamp {
                seconds: 1,
                nanos: 0,
            }),
            duplicate: true,
        };
        let r = receipt_from_wire("receipt", &good).unwrap();
        assert_eq!(
            (r.seq, r.recorded_at, r.duplicate),
            (Seq(3), Timestamp(1000), true)
        );
        let mut short = good.clone();
        short.event_id = "ab".repeat(31);
        let e = receipt_from_wire("receipt", &short).unwrap_err();
        assert!(e.to_string().contains("receipt.event_id"), "{e}");
        let mut no_time = good;
        no_time.recorded_time = None;
        let e = receipt_from_wire("receipt", &no_time).unwrap_err();
        assert!(e.to_string().contains("receipt.recorded_time"), "{e}");
    }
}
