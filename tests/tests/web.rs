//! The node's web page against the real `ledger-node` binary: sign-in with the API's
//! tokens (and none of the data before it), the worklist by urgency with its filters,
//! the chain page with the verifier's verdict, the live channel, security headers, and bad
//! input. A real browser (headless Chromium over WebDriver) checks what a person sees: the
//! order, the overdue mark, a live update within a second of an append, the verdict, and
//! the static view with JavaScript off. Screenshots go to `target/web-screenshots/`.

use proto::v1 as pb;
use proto::v1::ledger_service_client::LedgerServiceClient;
use sha2::Digest as _;
use std::io::BufRead as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tests::Node;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::Request;

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

/// A node with the page on a free port and alert windows of minutes.
fn start_node(dir: &std::path::Path) -> (Node, String) {
    let cfg = dir.join("node.toml");
    std::fs::write(
        &cfg,
        "[alerts]\ndeadline_near_ms = 600000\ndeadline_imminent_ms = 300000\n",
    )
    .expect("write config");
    let cfg = cfg.to_str().expect("utf-8 path").to_owned();
    let node = Node::start(
        &dir.join("data"),
        &["--config", &cfg, "--http-listen", "127.0.0.1:0"],
    )
    .expect("node starts");
    let web = node.web.clone().expect("the node says where its page is");
    (node, web)
}

async fn client(node: &Node) -> LedgerServiceClient<Channel> {
    LedgerServiceClient::new(
        Channel::from_shared(node.addr.clone())
            .expect("uri")
            .connect()
            .await
            .expect("connect"),
    )
}

fn with_token<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    let v: MetadataValue<_> = format!("Bearer {token}").parse().expect("ascii token");
    r.metadata_mut().insert("authorization", v);
    r
}

async fn append(
    api: &mut LedgerServiceClient<Channel>,
    token: &str,
    id: &str,
    coi: &str,
    at: i64,
    kind: pb::event_body::Kind,
) {
    let r = pb::AppendRequest {
        request_id: id.into(),
        site_id: "clinic-a".into(),
        coi: coi.into(),
        occurred_time: ts(at),
        signer: Some(pb::Signer {
            operator_id: "op.one".into(),
            printed_name: "Op One".into(),
            meaning: pb::SignatureMeaning::Performed as i32,
        }),
        body: Some(pb::EventBody { kind: Some(kind) }),
    };
    api.append(with_token(r, token))
        .await
        .unwrap_or_else(|s| panic!("append {id}: {s:?}"));
}

fn collection(deadline: i64) -> pb::event_body::Kind {
    pb::event_body::Kind::Collection(pb::Collection {
        units: vec![pb::NewUnit {
            unit_id: "APH-1".into(),
            stability_deadline: ts(deadline),
            temp_min_centi_celsius: 200,
            temp_max_centi_celsius: 800,
        }],
        dins: vec![],
    })
}

fn note(text: &str) -> pb::event_body::Kind {
    pb::event_body::Kind::Note(pb::Note { text: text.into() })
}

/// Three live chains: one overdue, one due within the 5-minute window, one far off.
const OVERDUE: &str = "CHA999926WEB001";
const SOON: &str = "CHA999926WEB002";
const FAR: &str = "CHA999926WEB003";

async fn three_chains(node: &Node) -> LedgerServiceClient<Channel> {
    let clinic = node.token("clinic-a").expect("token");
    let mut api = client(node).await;
    let t = now_s();
    append(
        &mut api,
        &clinic,
        "w-far",
        FAR,
        t - 60,
        collection(t + 40 * 86_400),
    )
    .await;
    append(
        &mut api,
        &clinic,
        "w-soon",
        SOON,
        t - 60,
        collection(t + 200),
    )
    .await;
    append(
        &mut api,
        &clinic,
        "w-over",
        OVERDUE,
        t - 7200,
        collection(t - 3600),
    )
    .await;
    api
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

struct Page {
    status: u16,
    headers: ureq::http::HeaderMap,
    body: String,
}

fn get(url: &str, cookie: Option<&str>) -> Page {
    let mut req = agent().get(url);
    if let Some(c) = cookie {
        req = req.header("Cookie", c);
    }
    let mut res = req.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    Page {
        status: res.status().as_u16(),
        headers: res.headers().clone(),
        body: res.body_mut().read_to_string().expect("body"),
    }
}

fn header<'a>(p: &'a Page, name: &str) -> &'a str {
    p.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Signs in through the form; returns the cookie pair the browser would send back.
fn sign_in(web: &str, token: &str) -> String {
    let mut res = agent()
        .post(format!("{web}/signin"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send(format!("token={token}&next=%2F"))
        .expect("POST /signin");
    assert_eq!(
        res.status().as_u16(),
        303,
        "{:?}",
        res.body_mut().read_to_string()
    );
    let set = res
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a cookie")
        .to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/"),
        "{set}"
    );
    set.split(';').next().expect("name=value").to_owned()
}

fn assert_secure(p: &Page) {
    let csp = header(p, "content-security-policy");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("http"), "no outside source: {csp}");
    assert_eq!(header(p, "x-content-type-options"), "nosniff");
    assert_eq!(header(p, "cache-control"), "no-store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_there_is_only_the_sign_in_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, web) = start_node(dir.path());
    three_chains(&node).await;
    for path in ["/", "/?show=all", &format!("/chains/{FAR}"), "/kpi"] {
        let p = get(&format!("{web}{path}"), None);
        assert_eq!(p.status, 401, "{path}");
        assert!(p.body.contains(r#"action="/signin""#), "{path}: {}", p.body);
        for coi in [OVERDUE, SOON, FAR] {
            assert!(!p.body.contains(coi), "{path} shows {coi} without a token");
        }
        assert!(!p.body.contains("clinic-a"), "{path} shows a site");
        assert_secure(&p);
    }
    let live = get(&format!("{web}/live"), None);
    assert_eq!(live.status, 401);

    // A wrong token is refused with a reason, and sets no cookie.
    let mut res = agent()
        .post(format!("{web}/signin"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send("token=not-a-token")
        .expect("POST");
    assert_eq!(res.status().as_u16(), 401);
    assert!(res.headers().get("set-cookie").is_none());
    assert!(res
        .body_mut()
        .read_to_string()
        .expect("body")
        .contains("not accepted by this node"));

    // The auditor's token, typed once, opens the worklist; so does a Bearer header.
    let auditor = node.token("auditor").expect("token");
    let cookie = sign_in(&web, &auditor);
    let p = get(&format!("{web}/"), Some(&cookie));
    assert_eq!(p.status, 200);
    assert!(p.body.contains(FAR), "{}", p.body);
    assert_secure(&p);
    let mut bearer = agent()
        .get(format!("{web}/"))
        .header("Authorization", format!("Bearer {auditor}"))
        .call()
        .expect("GET");
    assert_eq!(bearer.status().as_u16(), 200);
    assert!(bearer
        .body_mut()
        .read_to_string()
        .expect("body")
        .contains(FAR));

    // The token withdrawn and the node told (SIGHUP): the same cookie reads nothing more.
    std::fs::remove_file(node.token_dir().join("auditor.token")).expect("remove token");
    node.hangup().expect("SIGHUP");
    node.wait_for_log("token files read again", Duration::from_secs(10))
        .expect("reloaded");
    let p = get(&format!("{web}/"), Some(&cookie));
    assert_eq!(p.status, 401);
    assert!(!p.body.contains(FAR));
    assert!(p.body.contains("not accepted by this node"), "{}", p.body);
}

/// The rows' COIs in page order, with their `data-deadline`.
fn rows(body: &str) -> Vec<(String, i64)> {
    body.split("<tr class=")
        .skip(1)
        .filter_map(|row| {
            let coi = row.split("data-coi=\"").nth(1)?.split('"').next()?;
            let d = row.split("data-deadline=\"").nth(1)?.split('"').next()?;
            Some((coi.to_owned(), d.parse().unwrap_or(i64::MAX)))
        })
        .collect()
}

fn row_of<'a>(body: &'a str, coi: &str) -> &'a str {
    let start = body
        .find(&format!("data-coi=\"{coi}\""))
        .unwrap_or_else(|| panic!("no row for {coi}"));
    let row = &body[start..];
    &row[..row.find("</tr>").expect("row end")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worklist_shows_urgency_first_and_refuses_bad_filters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, web) = start_node(dir.path());
    let mut api = three_chains(&node).await;
    let clinic = node.token("clinic-a").expect("token");
    let cookie = sign_in(&web, &node.token("auditor").expect("token"));

    // The alert engine judges a chain just after its commit: wait for its overdue alert.
    let deadline = Instant::now() + Duration::from_secs(5);
    let p = loop {
        let p = get(&format!("{web}/"), Some(&cookie));
        assert_eq!(p.status, 200);
        if p.body.contains("deadline_overdue") || Instant::now() > deadline {
            break p;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let order: Vec<String> = rows(&p.body).into_iter().map(|(c, _)| c).collect();
    assert_eq!(order, [OVERDUE, SOON, FAR]);
    let overdue = row_of(&p.body, OVERDUE);
    assert!(
        overdue.starts_with("data-coi")
            && p.body
                .contains(r#"<tr class="overdue" data-coi="CHA999926WEB001""#)
    );
    assert!(
        overdue.contains("<strong>OVERDUE</strong>") && overdue.contains("OVERDUE by 1h 0m"),
        "{overdue}"
    );
    assert!(overdue.contains("held by clinic-a"), "{overdue}");
    assert!(row_of(&p.body, SOON).contains("<strong>DUE SOON</strong>"));
    assert!(!row_of(&p.body, FAR).contains("<strong>"));
    // Its alerts are listed above, most urgent first.
    assert!(p.body.contains("deadline_overdue"), "{}", p.body);

    // Filters: by site (nothing is at depot-1), by status, needs action.
    let p = get(&format!("{web}/?site=depot-1"), Some(&cookie));
    assert_eq!(p.status, 200);
    assert!(rows(&p.body).is_empty() && p.body.contains("No chain matches."));
    let p = get(
        &format!("{web}/?site=clinic-a&status=collected&needs_action=1"),
        Some(&cookie),
    );
    let order: Vec<String> = rows(&p.body).into_iter().map(|(c, _)| c).collect();
    assert_eq!(order, [OVERDUE, SOON]);

    // Bad input: 400 naming the field; a malformed COI 400, an unknown one 404.
    for (path, says) in [
        ("/?status=lost", "is not a chain status"),
        ("/?colour=red", "colour: is not a filter of this page"),
        ("/?site=no%20such%20site", "site: "),
        ("/?after=zz", "after: "),
        ("/chains/NOT-A-COI", "coi: "),
    ] {
        let p = get(&format!("{web}{path}"), Some(&cookie));
        assert_eq!(p.status, 400, "{path}");
        assert!(p.body.contains(says), "{path}: {}", p.body);
    }
    for (path, says) in [
        ("/kpi?from=2026-13-01", "from: "),
        (
            "/kpi?from=2026-12-02&to=2026-12-01",
            "to: 2026-12-01T00:00:00Z is not after from",
        ),
        ("/kpi?period=week", "period: is not a filter of this page"),
    ] {
        let p = get(&format!("{web}{path}"), Some(&cookie));
        assert_eq!(p.status, 400, "{path}");
        assert!(p.body.contains(says), "{path}: {}", p.body);
    }
    let p = get(&format!("{web}/chains/CHA999926WEB099"), Some(&cookie));
    assert_eq!(p.status, 404);
    assert!(p.body.contains("is not on this node"), "{}", p.body);

    // The chain page: the verifier's verdict, the event text escaped, the report's one
    // inline style allowed by its hash and nothing else.
    append(
        &mut api,
        &clinic,
        "w-note",
        FAR,
        now_s() - 30,
        note("<script>alert(1)</script> & more"),
    )
    .await;
    let p = get(&format!("{web}/chains/{FAR}"), Some(&cookie));
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body.contains("INTACT"), "{}", p.body);
    assert!(p
        .body
        .contains("&#60;script&#62;alert(1)&#60;/script&#62; &#38; more"));
    assert!(!p.body.contains("<script>alert(1)"));
    assert_eq!(
        p.body.matches("<script").count(),
        1,
        "only the node's own script"
    );
    assert!(p.body.contains(&format!(
        r#"<script src="/static/live.js?coi={FAR}" defer>"#
    )));
    let csp = header(&p, "content-security-policy");
    let start = p.body.find("<style>").expect("style") + "<style>".len();
    let end = start + p.body[start..].find("</style>").expect("style end");
    let hash = sha2::Sha256::digest(&p.body.as_bytes()[start..end]);
    let b64 = base64(&hash);
    assert!(
        csp.contains(&format!("style-src 'self' 'sha256-{b64}'")),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            out.push(if i <= c.len() {
                A[(n >> shift) as usize & 63] as char
            } else {
                '='
            });
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_channel_says_change_within_a_second_of_an_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, web) = start_node(dir.path());
    let mut api = three_chains(&node).await;
    let clinic = node.token("clinic-a").expect("token");
    let cookie = sign_in(&web, &node.token("auditor").expect("token"));

    // One channel for the whole page, one for another chain's page.
    let open = |query: &str| {
        let res = agent()
            .get(format!("{web}/live{query}"))
            .header("Cookie", &cookie)
            .call()
            .expect("GET /live");
        assert_eq!(res.status().as_u16(), 200);
        assert_eq!(
            res.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        let (tx, rx) = std::sync::mpsc::channel::<(Instant, String)>();
        std::thread::spawn(move || {
            let reader = std::io::BufReader::new(res.into_body().into_reader());
            for line in reader.lines().map_while(Result::ok) {
                if tx.send((Instant::now(), line)).is_err() {
                    return;
                }
            }
        });
        rx
    };
    let all = open("");
    let other = open(&format!("?coi={SOON}"));
    let p = get(&format!("{web}/live?coi=nope"), Some(&cookie));
    assert_eq!(p.status, 400);

    let sent = Instant::now();
    append(
        &mut api,
        &clinic,
        "live-1",
        FAR,
        now_s() - 5,
        note("a scan"),
    )
    .await;
    let acked = Instant::now();
    let seen = loop {
        let (at, line) = all
            .recv_timeout(Duration::from_secs(5))
            .expect("a change on the live channel");
        if line == "event: change" {
            break at;
        }
    };
    let after_ack = seen.saturating_duration_since(acked);
    eprintln!(
        "append acknowledged after {:?}; change on the page's channel {after_ack:?} later",
        acked - sent
    );
    assert!(after_ack < Duration::from_secs(1), "{after_ack:?}");
    // The channel of another chain's page stays quiet (keep-alives are comments).
    while let Ok((_, line)) = other.recv_timeout(Duration::from_millis(300)) {
        assert!(!line.starts_with("event: change"), "{line}");
    }
}

// ---- In a real browser -----------------------------------------------------------------

/// `chromedriver` on a free port, killed with this handle.
struct Driver {
    child: std::process::Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = std::process::Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chromedriver (scripts/setup installs chromium-driver)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

async fn browser(driver: &Driver, javascript: bool) -> fantoccini::Client {
    let mut args = vec![
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ];
    if !javascript {
        args.push("--blink-settings=scriptEnabled=false");
    }
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({ "args": args, "binary": "/usr/bin/chromium" }),
    );
    fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a browser session")
}

fn screenshot_dir() -> std::path::PathBuf {
    let d = tests::bin_dir()
        .parent()
        .expect("target")
        .join("web-screenshots");
    std::fs::create_dir_all(&d).expect("screenshot dir");
    d
}

async fn shoot(b: &fantoccini::Client, name: &str) {
    let png = b.screenshot().await.expect("screenshot");
    std::fs::write(screenshot_dir().join(name), png).expect("write screenshot");
}

async fn sign_in_with_browser(b: &fantoccini::Client, web: &str, token: &str) {
    use fantoccini::Locator;
    b.goto(web).await.expect("open the page");
    b.find(Locator::Id("token"))
        .await
        .expect("token field")
        .send_keys(token)
        .await
        .expect("type the token");
    b.find(Locator::Css("form[action='/signin'] button"))
        .await
        .expect("sign-in button")
        .click()
        .await
        .expect("sign in");
    b.wait()
        .for_element(Locator::Id("worklist"))
        .await
        .expect("the worklist after signing in");
}

/// The rows' COIs in page order (only the three made here: the replayed journey's rows
/// fall wherever its deadlines put them), after checking that deadlines never decrease.
async fn row_order(b: &fantoccini::Client) -> Vec<String> {
    let mut out = Vec::new();
    let mut last = i64::MIN;
    for r in b
        .find_all(fantoccini::Locator::Css("#worklist tbody tr"))
        .await
        .expect("rows")
    {
        let d: i64 = r
            .attr("data-deadline")
            .await
            .expect("attr")
            .and_then(|d| d.parse().ok())
            .unwrap_or(i64::MAX);
        assert!(d >= last, "rows out of deadline order");
        last = d;
        let coi = r.attr("data-coi").await.expect("attr").unwrap_or_default();
        if [OVERDUE, SOON, FAR].contains(&coi.as_str()) {
            out.push(coi);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_the_worklist_is_live_and_the_chain_page_shows_the_verdict() {
    use fantoccini::Locator;
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, web) = start_node(dir.path());
    let mut api = three_chains(&node).await;
    let clinic = node.token("clinic-a").expect("token");
    let auditor = node.token("auditor").expect("token");
    // A fixture journey replayed as its sites would have scanned it, 20 days ago.
    let tokens = node.token_dir();
    let journey = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/journeys/valid/standard.toml");
    let start = {
        let t = now_s() - 20 * 86_400;
        ledger_core::Timestamp(t * 1000).to_string()
    };
    let o = std::process::Command::new(tests::bin("ledger").expect("ledger"))
        .args(["replay", journey.to_str().expect("utf8"), "--tokens"])
        .arg(&tokens)
        .args(["--start", &start])
        .env("LEDGER_NODE", &node.addr)
        .env_remove("LEDGER_TOKEN")
        .output()
        .expect("replay");
    assert_eq!(o.status.code(), Some(0), "{}", tests::output_text(&o));
    let driver = driver();

    // Without a token: the sign-in page, and no COI anywhere in it.
    let b = browser(&driver, true).await;
    b.goto(&web).await.expect("open");
    let html = b.source().await.expect("source");
    assert!(html.contains("Sign in"), "{html}");
    for coi in [OVERDUE, SOON, FAR, "CHA999926ABC123"] {
        assert!(!html.contains(coi), "{coi} shown before sign-in");
    }
    shoot(&b, "signin.png").await;

    sign_in_with_browser(&b, &web, &auditor).await;
    let order = row_order(&b).await;
    assert_eq!(order, [OVERDUE, SOON, FAR]);
    let first = b
        .find(Locator::Css(&format!("#worklist tr[data-coi='{OVERDUE}']")))
        .await
        .expect("the overdue row");
    assert_eq!(
        first.attr("class").await.expect("class").as_deref(),
        Some("overdue")
    );
    let text = first.text().await.expect("text");
    assert!(text.contains("OVERDUE"), "{text}");
    shoot(&b, "worklist.png").await;

    // The page is live: an append shows within a second.
    b.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::XPath(
            "//*[@id='live-state' and starts-with(text(), 'Live')]",
        ))
        .await
        .expect("the live channel opens");
    let events_cell = format!("#worklist tr[data-coi='{FAR}'] td.events");
    let before = b
        .find(Locator::Css(&events_cell))
        .await
        .expect("cell")
        .text()
        .await
        .expect("text");
    assert_eq!(before, "1");
    append(
        &mut api,
        &clinic,
        "browser-1",
        FAR,
        now_s() - 5,
        note("seen by the browser"),
    )
    .await;
    let acked = Instant::now();
    let shown = loop {
        let now_text = match b.find(Locator::Css(&events_cell)).await {
            Ok(cell) => cell.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if now_text == "2" {
            break acked.elapsed();
        }
        assert!(
            acked.elapsed() < Duration::from_secs(5),
            "the append never showed"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    eprintln!("the open page showed the append {shown:?} after it was acknowledged");
    assert!(shown < Duration::from_secs(1), "{shown:?}");
    shoot(&b, "worklist-live.png").await;

    // The chain page: the verdict of the node's verifier.
    b.goto(&format!("{web}/chains/{FAR}"))
        .await
        .expect("chain page");
    let verdict = b
        .find(Locator::Id("verdict"))
        .await
        .expect("verdict")
        .text()
        .await
        .expect("text");
    assert!(verdict.contains("INTACT"), "{verdict}");
    shoot(&b, "chain.png").await;
    b.goto(&format!("{web}/chains/CHA999926ABC123"))
        .await
        .expect("journey page");
    shoot(&b, "chain-journey.png").await;

    // KPIs over the default period (the last 30 days): the journey's one administration.
    b.goto(&format!("{web}/kpi")).await.expect("KPI page");
    let v2v = b
        .find(Locator::Css("#vein-to-vein tbody td"))
        .await
        .expect("vein-to-vein row")
        .text()
        .await
        .expect("text");
    assert_eq!(v2v, "1", "one patient administered in the period");
    shoot(&b, "kpi.png").await;
    b.close().await.expect("close");

    // JavaScript off: the same worklist, the sign-in form works without script.
    let b = browser(&driver, false).await;
    sign_in_with_browser(&b, &web, &auditor).await;
    assert_eq!(row_order(&b).await, [OVERDUE, SOON, FAR]);
    let state = b
        .find(Locator::Id("live-state"))
        .await
        .expect("state")
        .text()
        .await
        .expect("text");
    assert_eq!(state, "This page refreshes itself.", "no script ran");
    shoot(&b, "worklist-no-js.png").await;
    b.close().await.expect("close");
}
