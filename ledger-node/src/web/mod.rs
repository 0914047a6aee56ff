//! The node's web page: the worklist, open alerts, each patient's chain as the report
//! shows it, and partner KPIs, for the clinic coordinator and the supply-chain lead.
//!
//! Read-only, served on its own listener (`[http]`), behind the same role tokens as the
//! gRPC API: a token typed once into the sign-in form is kept in an HttpOnly, SameSite=Strict
//! cookie, or a program sends `Authorization: Bearer`. Every request checks the token
//! against the node's current set, so a token dropped by a SIGHUP reload reads nothing more.
//!
//! Invariants:
//! - Without an accepted token the answer is the sign-in page (401) and holds no data.
//! - Every value reaches HTML through askama's escaping; no template uses `safe`.
//! - Nothing is fetched from elsewhere: CSS and the one script are served by the node, and
//!   the CSP (`default-src 'none'`) forbids anything else; the report's inline style is
//!   allowed by its hash only.
//! - The static view works with JavaScript off; the script only refreshes it when the
//!   live channel (`/live`, server-sent events) says something changed.
//! - A live channel holds at most one pending message whatever its reader does, so a
//!   stalled page cannot grow the node's memory; their number is capped.
//! - Everything shown comes from the node's verified state (the worklist rows, the board
//!   of alerts, the verifier's verdict on the chain's own export bundle).

mod pages;

use pages::RenderPage;

use crate::alerts::{Board, Held};
use crate::grpc::service::LedgerApi;
use crate::network::{Network, Principal};
use crate::pipeline::Pipeline;
use crate::worklist;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use ledger_core::{Coi, SiteId, Status, Timestamp};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The cookie that carries the token.
pub const COOKIE: &str = "ledger_token";
/// Rows on one worklist page.
pub const WORKLIST_PAGE: usize = 200;
/// Open alerts listed above the worklist (the most urgent).
pub const ALERTS_SHOWN: usize = 50;

const APP_CSS: &str = include_str!("../../static/app.css");
const LIVE_JS: &str = include_str!("../../static/live.js");

/// Everything the page reads, shared by every request.
pub struct Web {
    pub api: Arc<LedgerApi>,
    pub pipeline: Pipeline,
    pub network: Arc<Network>,
    pub board: Arc<Board>,
    pub alert_policy: ledger_core::AlertPolicy,
    pub live: Arc<Semaphore>,
    pub shutdown: CancellationToken,
}

impl std::fmt::Debug for Web {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Web")
            .field("network", &self.network.id)
            .finish()
    }
}

type Shared = Arc<Web>;

/// The page's routes, with the security headers on every answer.
pub fn router(web: Shared) -> Router {
    Router::new()
        .route("/", get(worklist_page))
        .route("/chains/{coi}", get(chain_page))
        .route("/kpi", get(kpi_page))
        .route("/live", get(live))
        .route("/signin", get(signin_form).post(signin))
        .route("/signout", post(signout))
        .route("/static/app.css", get(css))
        .route("/static/live.js", get(js))
        .fallback(not_found)
        .layer(axum::middleware::map_response(secure_headers))
        .with_state(web)
}

/// Serves the page until `shutdown`.
///
/// # Errors
/// When the server fails (the listener is already bound).
pub async fn serve(
    listener: tokio::net::TcpListener,
    web: Shared,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(web))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// The default policy: nothing but the node's own CSS and script, no framing, forms only
/// to the node. A page that needs more (the report's inline style) sets its own.
fn csp(style_hash: Option<&str>) -> String {
    let style = match style_hash {
        Some(h) => format!("'self' 'sha256-{h}'"),
        None => "'self'".to_owned(),
    };
    format!(
        "default-src 'none'; style-src {style}; script-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
}

async fn secure_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        if let Ok(v) = HeaderValue::from_str(&csp(None)) {
            h.insert(header::CONTENT_SECURITY_POLICY, v);
        }
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        // Patient data: never kept by a browser or a proxy.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

// ---- Sign-in ---------------------------------------------------------------------------

/// Why a request has no reader: shown on the sign-in page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoReader {
    NoToken,
    Refused,
}

/// The token a request carries: `Authorization: Bearer` first, then the cookie.
fn token_of(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        if let Some(t) = v.to_str().ok().and_then(|s| s.strip_prefix("Bearer ")) {
            return Some(t.trim().to_owned());
        }
    }
    for v in headers.get_all(header::COOKIE) {
        let Ok(text) = v.to_str() else { continue };
        for part in text.split(';') {
            if let Some((k, val)) = part.trim().split_once('=') {
                if k == COOKIE && !val.is_empty() {
                    return Some(val.to_owned());
                }
            }
        }
    }
    None
}

fn reader(web: &Web, headers: &HeaderMap) -> Result<Principal, NoReader> {
    let token = token_of(headers).ok_or(NoReader::NoToken)?;
    web.network.principal(&token).ok_or(NoReader::Refused)
}

/// Where to go after signing in: a path on this page only (never another origin).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/".to_owned(),
    }
}

fn signin_page(status: StatusCode, why: Option<NoReader>, next: &str) -> Response {
    let message = match why {
        None | Some(NoReader::NoToken) => None,
        Some(NoReader::Refused) => Some(
            "That token is not accepted by this node (unknown, or withdrawn since). Ask your administrator for a current one.",
        ),
    };
    html(
        status,
        pages::SignIn {
            message,
            next: next.to_owned(),
        }
        .render_page(),
    )
}

/// A page that needs a reader: the sign-in page (401) when there is none.
macro_rules! signed_in {
    ($web:expr, $headers:expr, $next:expr) => {
        match reader(&$web, &$headers) {
            Ok(p) => p,
            Err(why) => return signin_page(StatusCode::UNAUTHORIZED, Some(why), $next),
        }
    };
}

#[derive(Debug, serde::Deserialize)]
struct SignInQuery {
    next: Option<String>,
}

async fn signin_form(
    State(web): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<SignInQuery>,
) -> Response {
    let next = safe_next(q.next.as_deref());
    if reader(&web, &headers).is_ok() {
        return Redirect::to(&next).into_response();
    }
    signin_page(StatusCode::OK, None, &next)
}

#[derive(Debug, serde::Deserialize)]
struct SignInForm {
    token: String,
    next: Option<String>,
}

async fn signin(State(web): State<Shared>, Form(f): Form<SignInForm>) -> Response {
    let next = safe_next(f.next.as_deref());
    let token = f.token.trim();
    // A cookie value cannot hold spaces, quotes, commas, semicolons or backslashes; no
    // token this node issues does.
    let cookie_safe = !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b',' | b';' | b'\\'));
    if !cookie_safe || web.network.principal(token).is_none() {
        return signin_page(StatusCode::UNAUTHORIZED, Some(NoReader::Refused), &next);
    }
    let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
    let mut res = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

async fn signout() -> Response {
    let mut res = Redirect::to("/signin").into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("ledger_token=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    res
}

// ---- Pages -----------------------------------------------------------------------------

fn html(status: StatusCode, body: Result<String, askama::Error>) -> Response {
    match body {
        Ok(b) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            b,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the page could not be rendered: {e}"),
        )
            .into_response(),
    }
}

fn error_page(status: StatusCode, message: String) -> Response {
    html(
        status,
        pages::ErrorPage {
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or(""),
            message,
        }
        .render_page(),
    )
}

async fn not_found() -> Response {
    error_page(StatusCode::NOT_FOUND, "There is no such page.".to_owned())
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        APP_CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        LIVE_JS,
    )
        .into_response()
}

/// A query string's fields; an empty field counts as absent (what an HTML form sends).
#[derive(Debug)]
struct Fields(HashMap<String, String>);

impl Fields {
    fn new(q: HashMap<String, String>, allowed: &[&str]) -> Result<Fields, String> {
        if let Some(k) = q.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(format!(
                "{k}: is not a filter of this page (it takes {})",
                allowed.join(", ")
            ));
        }
        Ok(Fields(
            q.into_iter().filter(|(_, v)| !v.is_empty()).collect(),
        ))
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }
}

/// The worklist's filters, parsed from the query string.
#[derive(Debug, Default)]
pub struct WorklistFilter {
    pub site: Option<SiteId>,
    pub status: Option<Status>,
    pub needs_action: bool,
    /// Every chain, not only live ones.
    pub all: bool,
    pub after: Option<worklist::Cursor>,
}

impl WorklistFilter {
    /// # Errors
    /// A sentence naming the field that is wrong.
    fn parse(q: HashMap<String, String>) -> Result<WorklistFilter, String> {
        let f = Fields::new(q, &["site", "status", "needs_action", "show", "after"])?;
        let site = f
            .get("site")
            .map(|s| SiteId::parse(s).map_err(|e| format!("site: {e}")))
            .transpose()?;
        let status = f
            .get("status")
            .map(|s| {
                Status::parse(s).ok_or_else(|| {
                    format!("status: {s:?} is not a chain status (collected, in_transit, in_manufacturing, awaiting_qc, released, administered, destroyed)")
                })
            })
            .transpose()?;
        let needs_action = match f.get("needs_action") {
            None => false,
            Some("1" | "on" | "true") => true,
            Some(other) => return Err(format!("needs_action: {other:?} is not 1 or on")),
        };
        let all = match f.get("show") {
            None | Some("live") => false,
            Some("all") => true,
            Some(other) => return Err(format!("show: {other:?} is not live or all")),
        };
        let after = f
            .get("after")
            .map(|t| {
                worklist::Cursor::parse(t, worklist::Sort::Deadline)
                    .map_err(|e| format!("after: {e}"))
            })
            .transpose()?;
        Ok(WorklistFilter {
            site,
            status,
            needs_action,
            all,
            after,
        })
    }

    /// The query string of this filter with another page cursor.
    fn query_string(&self, after: Option<&worklist::Cursor>) -> String {
        let mut parts = Vec::new();
        if let Some(s) = &self.site {
            parts.push(format!("site={}", pct(s.as_str())));
        }
        if let Some(s) = self.status {
            parts.push(format!("status={}", s.as_str()));
        }
        if self.needs_action {
            parts.push("needs_action=1".to_owned());
        }
        if self.all {
            parts.push("show=all".to_owned());
        }
        if let Some(c) = after {
            parts.push(format!("after={}", pct(&c.to_token())));
        }
        parts.join("&")
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Waits until every append answered before this request is visible, as the gRPC reads do.
async fn caught_up(web: &Web) -> Result<(), Response> {
    web.pipeline.caught_up().await.map_err(|e| {
        error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("This node cannot answer now: {e}"),
        )
    })
}

async fn worklist_page(
    State(web): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let who = signed_in!(web, headers, "/");
    let filter = match WorklistFilter::parse(q) {
        Ok(f) => f,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, e),
    };
    if let Err(res) = caught_up(&web).await {
        return res;
    }
    let now = crate::pipeline::now();
    let query = worklist::Query {
        status: filter.status,
        site: filter.site.clone(),
        needs_action: filter.needs_action,
        live_only: !filter.all,
        sort: worklist::Sort::Deadline,
        after: filter.after.clone(),
        limit: WORKLIST_PAGE,
    };
    let counts = web.board.counts_by_chain();
    let (rows, next) = {
        let ledger = web.pipeline.ledger();
        worklist::rows(&ledger, &counts, &query)
    };
    let mut alerts: Vec<Held> = web.board.open();
    alerts.sort_by_key(Held::urgency);
    let n_alerts = alerts.len();
    alerts.truncate(ALERTS_SHOWN);
    let sites: Vec<String> = web.network.roles().keys().map(|s| s.to_string()).collect();
    let page = pages::Worklist::new(pages::WorklistInput {
        who: &who,
        node_sites: &web.network.local_sites,
        now,
        imminent: web.alert_policy.deadline_imminent,
        filter: &filter,
        rows: &rows,
        next_query: next.as_ref().map(|c| filter.query_string(Some(c))),
        first_query: filter.after.is_some().then(|| filter.query_string(None)),
        alerts: &alerts,
        n_alerts,
        sites: &sites,
    });
    html(StatusCode::OK, page.render_page())
}

async fn chain_page(
    State(web): State<Shared>,
    headers: HeaderMap,
    Path(coi): Path<String>,
) -> Response {
    // Back to the worklist after signing in: the sign-in page holds no COI, not even in
    // its return path.
    signed_in!(web, headers, "/");
    let coi = match Coi::parse(&coi) {
        Ok(c) => c,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, format!("coi: {e}")),
    };
    if let Err(res) = caught_up(&web).await {
        return res;
    }
    let bundle = match web.api.export_bundle(&coi).await {
        Ok(b) => b,
        Err(s) => {
            let status = match s.code() {
                tonic::Code::NotFound => StatusCode::NOT_FOUND,
                tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
                tonic::Code::ResourceExhausted => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            return error_page(status, s.message().to_owned());
        }
    };
    let anchor = web.network.anchor;
    let now = crate::pipeline::now();
    let signers: Vec<String> = web
        .network
        .local_sites
        .iter()
        .map(|s| s.id.to_string())
        .collect();
    let coi_text = coi.to_string();
    let rendered = tokio::task::spawn_blocking(move || {
        let checked = ledger_report::check(
            &bundle,
            Some(ledger_core::AnchorTrust::Key(anchor)),
            ledger_core::Scope::CoiExport,
        )
        .map_err(|e| e.to_string())?;
        let frame = ledger_report::Frame {
            links: vec![
                ("Worklist".to_owned(), "/".to_owned()),
                ("KPIs".to_owned(), "/kpi".to_owned()),
            ],
            note: Some(format!(
                "Verified by this node ({}) against the network's anchor at {now}; this page follows new events as they are stored.",
                signers.join(", ")
            )),
            script_src: Some(format!("/static/live.js?coi={}", pct(&coi_text))),
        };
        checked.to_html_framed(&frame).map_err(|e| e.to_string())
    })
    .await;
    let page = match rendered {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the chain's report could not be made: {e}"),
            )
        }
        Err(e) => {
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the chain's report could not be made: {e}"),
            )
        }
    };
    let policy = csp(Some(&REPORT_STYLE_HASH));
    let mut res = html(StatusCode::OK, Ok(page));
    if let Ok(v) = HeaderValue::from_str(&policy) {
        res.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
    res
}

/// The CSP hash (base64 of SHA-256) of the report's one inline `<style>` element, whose
/// text ledger-report publishes.
static REPORT_STYLE_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    use sha2::Digest;
    base64(&sha2::Sha256::digest(ledger_report::STYLE.as_bytes()))
});

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        out.push(A[(n >> 18) as usize & 63] as char);
        out.push(A[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            A[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            A[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// A date (`YYYY-MM-DD`, midnight UTC) or an RFC 3339 UTC instant.
fn instant(field: &str, text: &str) -> Result<Timestamp, String> {
    Timestamp::parse_day_or_rfc3339(text).ok_or_else(|| {
        format!("{field}: {text:?} is not a date (YYYY-MM-DD) or a UTC time (YYYY-MM-DDTHH:MM:SSZ)")
    })
}

fn date_of(t: Timestamp) -> String {
    t.to_string().get(..10).unwrap_or_default().to_owned()
}

/// The KPI page's period: `from` and `to` (end excluded), by default the 30 days up to
/// the end of today (UTC).
fn kpi_period(
    q: HashMap<String, String>,
    now: Timestamp,
) -> Result<(ledger_core::kpi::Period, String, String), String> {
    let f = Fields::new(q, &["from", "to"])?;
    let day = 86_400_000;
    let end_of_today = Timestamp((now.0.div_euclid(day) + 1) * day);
    let to = f
        .get("to")
        .map(|t| instant("to", t))
        .transpose()?
        .unwrap_or(end_of_today);
    let from = f
        .get("from")
        .map(|t| instant("from", t))
        .transpose()?
        .unwrap_or(Timestamp(to.0 - 30 * day));
    let period = ledger_core::kpi::Period::new(from, to)
        .map_err(|_| format!("to: {to} is not after from ({from})"))?;
    Ok((period, date_of(from), date_of(to)))
}

async fn kpi_page(
    State(web): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let who = signed_in!(web, headers, "/kpi");
    let now = crate::pipeline::now();
    let (period, from_value, to_value) = match kpi_period(q, now) {
        Ok(p) => p,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, e),
    };
    if let Err(res) = caught_up(&web).await {
        return res;
    }
    match crate::kpi::report(&web.pipeline, period, &web.alert_policy).await {
        Ok(r) => html(
            StatusCode::OK,
            pages::KpiPage::new(&who, &r, from_value, to_value, now).render_page(),
        ),
        Err(e) => error_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("The KPIs of this period could not be computed: {e}"),
        ),
    }
}

// ---- Live channel ----------------------------------------------------------------------

#[derive(Debug, serde::Deserialize)]
struct LiveQuery {
    coi: Option<String>,
}

/// Server-sent events: `change` whenever something the page shows may have changed (a
/// commit, on the page's chain when it names one; an alert raised or cleared; a minute
/// passing, since time left changes too). The page fetches itself again on each.
async fn live(
    State(web): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<LiveQuery>,
) -> Response {
    let Some(token) = token_of(&headers) else {
        return (StatusCode::UNAUTHORIZED, "sign in first").into_response();
    };
    let Some(principal) = web.network.principal(&token) else {
        return (StatusCode::UNAUTHORIZED, "token not accepted").into_response();
    };
    let coi = match q.coi.as_deref().filter(|c| !c.is_empty()).map(Coi::parse) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => return (StatusCode::BAD_REQUEST, format!("coi: {e}")).into_response(),
    };
    let Ok(permit) = web.live.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "30")],
            "too many live pages are open on this node; this page reloads by itself instead",
        )
            .into_response();
    };
    // One slot: a change not yet read already says "fetch again", so more would add
    // nothing, and a stalled reader holds one small message at most.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<SseEvent, std::convert::Infallible>>(1);
    let mut commits = web.pipeline.subscribe();
    let (_, mut alerts) = web.board.watch();
    let network = web.network.clone();
    let shutdown = web.shutdown.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let mut minute = tokio::time::interval(Duration::from_secs(60));
        minute.tick().await;
        loop {
            let changed = tokio::select! {
                () = shutdown.cancelled() => return,
                () = tx.closed() => return,
                _ = minute.tick() => true,
                c = commits.recv() => match c {
                    Ok(c) => coi.as_ref().is_none_or(|x| *x == c.coi),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                a = alerts.recv() => match a {
                    Ok(h) => coi.is_none() || h.alert.key.coi == coi,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            };
            if network.principal(&token).as_ref() != Some(&principal) {
                let _ = tx
                    .send(Ok(SseEvent::default()
                        .event("signed-out")
                        .data("token withdrawn")))
                    .await;
                return;
            }
            if changed {
                // Full: the reader has not taken the last change yet; it will fetch once.
                let _ = tx.try_send(Ok(SseEvent::default().event("change").data("1")));
            }
        }
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// Time left until `deadline` in words, or `OVERDUE` and by how much.
pub fn time_left(deadline: Timestamp, now: Timestamp) -> (bool, String) {
    if deadline <= now {
        (
            true,
            format!("OVERDUE by {}", ledger_core::Millis(now.0 - deadline.0)),
        )
    } else {
        (
            false,
            format!("{} left", ledger_core::Millis(deadline.0 - now.0)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn next_stays_on_this_page() {
        assert_eq!(safe_next(Some("/chains/X")), "/chains/X");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn tokens_come_from_bearer_then_cookie() {
        let mut h = HeaderMap::new();
        assert_eq!(token_of(&h), None);
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; ledger_token=t1; c=d"),
        );
        assert_eq!(token_of(&h).as_deref(), Some("t1"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t2"));
        assert_eq!(token_of(&h).as_deref(), Some("t2"));
    }

    #[test]
    fn filters_name_the_field_that_is_wrong() {
        let q = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>()
        };
        let err = |pairs| WorklistFilter::parse(q(pairs)).err().unwrap_or_default();
        assert!(err(&[("status", "lost")]).starts_with("status: \"lost\""));
        assert!(err(&[("site", "bad site!")]).starts_with("site: "));
        assert!(err(&[("after", "zz")]).starts_with("after: "));
        assert!(err(&[("colour", "red")]).starts_with("colour: is not a filter"));
        assert!(err(&[("needs_action", "maybe")]).starts_with("needs_action: "));
        let ok = WorklistFilter::parse(q(&[("status", ""), ("needs_action", "1")]))
            .expect("empty fields are absent");
        assert!(ok.status.is_none() && ok.needs_action && !ok.all);
    }

    #[test]
    fn time_left_says_overdue_in_words() {
        assert_eq!(
            time_left(Timestamp(0), Timestamp(3_600_000)),
            (true, "OVERDUE by 1h 0m".to_owned())
        );
        assert!(!time_left(Timestamp(3_600_000), Timestamp(0)).0);
    }
}
