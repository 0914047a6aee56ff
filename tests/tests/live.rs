//! The present, as a site system sees it over gRPC against the real `ledger-node` binary:
//! alerts raised from the node's verified chains and its clock (a deadline crossing, a
//! shipment past its lane's limit, an excursion left without disposition, a break on a live
//! chain) and cleared by the event that resolves them; the worklist sorted by urgency and
//! filtered by site; and `Subscribe`, which resumes after a SIGKILL with every event
//! exactly once. Times are real: journeys are appended a little before "now", with
//! thresholds configured in seconds, and every wait has a deadline.

use proto::v1 as pb;
use proto::v1::ledger_service_client::LedgerServiceClient;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tests::Node;
use tokio_stream::StreamExt as _;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request};

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

fn ms_of(t: &Option<prost_types::Timestamp>) -> i64 {
    let t = t.as_ref().expect("timestamp set");
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

struct Api {
    client: LedgerServiceClient<Channel>,
}

fn with_token<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    let v: MetadataValue<_> = format!("Bearer {token}").parse().expect("ascii token");
    r.metadata_mut().insert("authorization", v);
    r
}

impl Api {
    async fn connect(node: &Node) -> Api {
        let channel = Channel::from_shared(node.addr.clone())
            .expect("uri")
            .connect()
            .await
            .expect("connect to node");
        Api {
            client: LedgerServiceClient::new(channel),
        }
    }

    async fn append(
        &mut self,
        (token, site): (&str, &str),
        id: &str,
        coi: &str,
        at: i64,
        meaning: pb::SignatureMeaning,
        kind: pb::event_body::Kind,
    ) -> pb::AppendReceipt {
        let r = pb::AppendRequest {
            request_id: id.into(),
            site_id: site.into(),
            coi: coi.into(),
            occurred_time: ts(at),
            signer: Some(pb::Signer {
                operator_id: "op.one".into(),
                printed_name: "Op One".into(),
                meaning: meaning as i32,
            }),
            body: Some(pb::EventBody { kind: Some(kind) }),
        };
        self.client
            .append(with_token(r, token))
            .await
            .unwrap_or_else(|s| panic!("append {id}: {s:?}"))
            .into_inner()
            .receipt
            .expect("receipt")
    }

    /// Opens WatchAlerts on a node with no open alert: the first message must be the
    /// snapshot, and empty.
    async fn watch_alerts_from_empty(
        &mut self,
        token: &str,
    ) -> tonic::Streaming<pb::WatchAlertsResponse> {
        let mut watch = self
            .client
            .watch_alerts(with_token(pb::WatchAlertsRequest::default(), token))
            .await
            .expect("WatchAlerts")
            .into_inner();
        let first = watch.next().await.expect("a message").expect("ok");
        assert!(first.is_snapshot);
        assert!(first.snapshot.is_empty(), "{:?}", first.snapshot);
        watch
    }

    async fn alerts(&mut self, token: &str, include_cleared: bool) -> Vec<pb::Alert> {
        self.client
            .list_alerts(with_token(
                pb::ListAlertsRequest {
                    include_cleared,
                    ..pb::ListAlertsRequest::default()
                },
                token,
            ))
            .await
            .expect("ListAlerts")
            .into_inner()
            .alerts
    }
}

fn collection(unit: &str, deadline: i64) -> pb::event_body::Kind {
    pb::event_body::Kind::Collection(pb::Collection {
        units: vec![pb::NewUnit {
            unit_id: unit.into(),
            stability_deadline: ts(deadline),
            temp_min_centi_celsius: 200,
            temp_max_centi_celsius: 800,
        }],
        dins: vec![],
    })
}

const P: pb::SignatureMeaning = pb::SignatureMeaning::Performed;
const A: pb::SignatureMeaning = pb::SignatureMeaning::Approved;

/// A node whose alert thresholds are seconds, not hours.
fn start_node(dir: &std::path::Path) -> Node {
    let cfg = dir.join("node.toml");
    std::fs::write(
        &cfg,
        "[alerts]\ndeadline_near_ms = 600000\ndeadline_imminent_ms = 300000\nexcursion_grace_ms = 2000\ntransit_default_ms = 2000\nsite_silence_ms = 600000\n",
    )
    .expect("write config");
    let cfg = cfg.to_str().expect("utf-8 path").to_owned();
    Node::start(&dir.join("data"), &["--config", &cfg]).expect("node starts")
}

/// Reads the watch until `pred` holds for a change, or fails after `within`.
async fn next_change(
    stream: &mut tonic::Streaming<pb::WatchAlertsResponse>,
    within: Duration,
    what: &str,
    pred: impl Fn(&pb::Alert) -> bool,
) -> pb::Alert {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let msg = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("no {what} within {within:?}"))
            .expect("stream open")
            .expect("stream ok");
        if let Some(c) = msg.change {
            if pred(&c) {
                return c;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_crossing_raises_overdue_within_a_second_and_destruction_clears_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(dir.path());
    let clinic = node.token("clinic-a").expect("token");
    let auditor = node.token("auditor").expect("token");
    let mut api = Api::connect(&node).await;
    let mut watch = api.watch_alerts_from_empty(&auditor).await;

    let coi = "CHA999926ABC123";
    let t = now_s();
    let deadline = t + 4;
    api.append(
        (&clinic, "clinic-a"),
        "c-1",
        coi,
        t - 1,
        P,
        collection("APH-1", deadline),
    )
    .await;
    // Inside the narrow window at once.
    let imminent = next_change(
        &mut watch,
        Duration::from_secs(5),
        "deadline_imminent",
        |a| a.kind == "deadline_imminent",
    )
    .await;
    assert_eq!(imminent.coi, coi);
    assert_eq!(imminent.unit_id, "APH-1");
    assert_eq!(imminent.site_id, "clinic-a");
    assert_eq!(imminent.severity, pb::AlertSeverity::Critical as i32);
    // Then the crossing: overdue raised (the node stamps when), imminent cleared.
    let overdue = next_change(
        &mut watch,
        Duration::from_secs(10),
        "deadline_overdue",
        |a| a.kind == "deadline_overdue",
    )
    .await;
    assert_eq!(ms_of(&overdue.since_time), deadline * 1000);
    let late_ms = ms_of(&overdue.raised_time) - deadline * 1000;
    assert!(
        (0..1000).contains(&late_ms),
        "deadline_overdue raised {late_ms} ms after the crossing"
    );
    assert!(
        overdue.message.starts_with("OVERDUE: unit APH-1"),
        "{}",
        overdue.message
    );
    let open = api.alerts(&auditor, false).await;
    let kinds: Vec<&str> = open.iter().map(|a| a.kind.as_str()).collect();
    assert_eq!(kinds, ["deadline_overdue"]);

    // Destroying the unit resolves it.
    api.append(
        (&clinic, "clinic-a"),
        "c-2",
        coi,
        now_s(),
        P,
        pb::event_body::Kind::Destruction(pb::Destruction {
            unit_id: "APH-1".into(),
            reason: "expired".into(),
            witness: None,
        }),
    )
    .await;
    let cleared = next_change(&mut watch, Duration::from_secs(5), "the clear", |a| {
        a.kind == "deadline_overdue" && a.cleared_time.is_some()
    })
    .await;
    assert_eq!(cleared.coi, coi);
    assert!(api.alerts(&auditor, false).await.is_empty());
    let all = api.alerts(&auditor, true).await;
    let kinds: Vec<(&str, bool)> = all
        .iter()
        .map(|a| (a.kind.as_str(), a.cleared_time.is_some()))
        .collect();
    assert_eq!(
        kinds,
        [("deadline_overdue", true), ("deadline_imminent", true)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transit_excursion_and_break_alerts_raise_and_clear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(dir.path());
    let clinic = node.token("clinic-a").expect("token");
    let mfg = node.token("mfg-1").expect("token");
    let auditor = node.token("auditor").expect("token");
    let mut api = Api::connect(&node).await;
    let mut watch = api.watch_alerts_from_empty(&auditor).await;

    let coi = "CHA999926ABC123";
    let t = now_s();
    let far = t + 30 * 86_400;
    api.append(
        (&clinic, "clinic-a"),
        "t-1",
        coi,
        t - 10,
        P,
        collection("APH-1", far),
    )
    .await;
    api.append(
        (&clinic, "clinic-a"),
        "t-2",
        coi,
        t - 9,
        P,
        pb::event_body::Kind::Pack(pb::Pack {
            shipper_id: "SHP-1".into(),
            unit_ids: vec!["APH-1".into()],
            seal: "S-1".into(),
        }),
    )
    .await;
    let dispatch = api
        .append(
            (&clinic, "clinic-a"),
            "t-3",
            coi,
            t,
            P,
            pb::event_body::Kind::Dispatch(pb::Dispatch {
                shipper_id: "SHP-1".into(),
                to_site_id: "mfg-1".into(),
            }),
        )
        .await;
    // The lane allows 2 s in this test.
    let late = next_change(
        &mut watch,
        Duration::from_secs(10),
        "transit_overdue",
        |a| a.kind == "transit_overdue",
    )
    .await;
    assert_eq!(late.event_id, dispatch.event_id);
    assert_eq!(late.site_id, "mfg-1");
    assert_eq!(ms_of(&late.since_time), (t + 2) * 1000);
    api.append(
        (&mfg, "mfg-1"),
        "t-4",
        coi,
        now_s(),
        P,
        pb::event_body::Kind::Receipt(pb::Receipt {
            shipper_id: "SHP-1".into(),
            from_site_id: "clinic-a".into(),
            seal_intact: true,
            scanned_coi: coi.into(),
        }),
    )
    .await;
    next_change(&mut watch, Duration::from_secs(5), "transit clear", |a| {
        a.kind == "transit_overdue" && a.cleared_time.is_some()
    })
    .await;

    // An excursion: a reading at 9.4 °C against 2-8 °C, no disposition for 2 s.
    let t = now_s();
    let condition = api
        .append(
            (&mfg, "mfg-1"),
            "t-5",
            coi,
            t,
            P,
            pb::event_body::Kind::ConditionRecord(pb::ConditionRecord {
                unit_ids: vec!["APH-1".into()],
                readings: vec![pb::Reading {
                    time: ts(t - 1),
                    temp_centi_celsius: 940,
                }],
                min_centi_celsius: 400,
                max_centi_celsius: 940,
                excursion: false,
            }),
        )
        .await;
    let x = next_change(
        &mut watch,
        Duration::from_secs(10),
        "excursion_undisposed",
        |a| a.kind == "excursion_undisposed",
    )
    .await;
    assert_eq!(x.event_id, condition.event_id);
    assert_eq!(x.unit_id, "APH-1");
    api.append(
        (&mfg, "mfg-1"),
        "t-6",
        coi,
        now_s(),
        A,
        pb::event_body::Kind::ExcursionDisposition(pb::ExcursionDisposition {
            condition_event_id: condition.event_id.clone(),
            accepted: true,
            reason: "within validated stability data".into(),
        }),
    )
    .await;
    next_change(&mut watch, Duration::from_secs(5), "excursion clear", |a| {
        a.kind == "excursion_undisposed" && a.cleared_time.is_some()
    })
    .await;
    assert!(api.alerts(&auditor, false).await.is_empty());

    // A second chain whose seal is found broken: the node records the observation, and the
    // live chain is flagged at once.
    let coi2 = "CHA999926ABC124";
    let t = now_s();
    api.append(
        (&clinic, "clinic-a"),
        "b-1",
        coi2,
        t - 5,
        P,
        collection("APH-9", far),
    )
    .await;
    api.append(
        (&clinic, "clinic-a"),
        "b-2",
        coi2,
        t - 4,
        P,
        pb::event_body::Kind::Pack(pb::Pack {
            shipper_id: "SHP-9".into(),
            unit_ids: vec!["APH-9".into()],
            seal: "S-9".into(),
        }),
    )
    .await;
    api.append(
        (&clinic, "clinic-a"),
        "b-3",
        coi2,
        t - 3,
        P,
        pb::event_body::Kind::Dispatch(pb::Dispatch {
            shipper_id: "SHP-9".into(),
            to_site_id: "mfg-1".into(),
        }),
    )
    .await;
    api.append(
        (&mfg, "mfg-1"),
        "b-4",
        coi2,
        t - 2,
        P,
        pb::event_body::Kind::Receipt(pb::Receipt {
            shipper_id: "SHP-9".into(),
            from_site_id: "clinic-a".into(),
            seal_intact: false,
            scanned_coi: coi2.into(),
        }),
    )
    .await;
    let broken = next_change(&mut watch, Duration::from_secs(5), "chain_broken", |a| {
        a.kind == "chain_broken"
    })
    .await;
    assert_eq!(broken.coi, coi2);
    assert!(
        broken.message.contains("custody.seal_broken"),
        "{}",
        broken.message
    );

    // A filter that names no alert kind is refused, naming the field.
    let bad = api
        .client
        .list_alerts(with_token(
            pb::ListAlertsRequest {
                kind: "overdue".into(),
                ..pb::ListAlertsRequest::default()
            },
            &auditor,
        ))
        .await
        .expect_err("unknown kind");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message()
            .starts_with("kind: \"overdue\" is not an alert kind"),
        "{}",
        bad.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worklist_sorts_by_deadline_and_filters_by_site_and_action() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(dir.path());
    let clinic = node.token("clinic-a").expect("token");
    let auditor = node.token("auditor").expect("token");
    let mut api = Api::connect(&node).await;
    let t = now_s();
    // Three chains: far deadline (A), overdue in a moment (B), nearer than A (C).
    let chains = [
        ("CHA999926ABC131", t + 40 * 86_400),
        ("CHA999926ABC132", t + 2),
        ("CHA999926ABC133", t + 10 * 86_400),
    ];
    for (i, (coi, deadline)) in chains.iter().enumerate() {
        api.append(
            (&clinic, "clinic-a"),
            &format!("w-{i}"),
            coi,
            t - 1,
            P,
            collection("APH-1", *deadline),
        )
        .await;
    }
    let list =
        |sort: pb::ChainSort, site: &str, needs_action: bool, page_size: i32, token: String| {
            let mut client = api.client.clone();
            let r = with_token(
                pb::ListChainsRequest {
                    sort: sort as i32,
                    site_id: site.into(),
                    needs_action,
                    page_size,
                    page_token: token,
                    live_only: true,
                    ..pb::ListChainsRequest::default()
                },
                &auditor,
            );
            async move { client.list_chains(r).await.map(|r| r.into_inner()) }
        };
    let page = list(pb::ChainSort::Deadline, "", false, 2, String::new())
        .await
        .expect("first page");
    let cois: Vec<&str> = page.chains.iter().map(|c| c.coi.as_str()).collect();
    assert_eq!(cois, ["CHA999926ABC132", "CHA999926ABC133"]);
    let held = &page.chains[0].places[0];
    assert_eq!(
        (held.unit_id.as_str(), held.site_id.as_str()),
        ("APH-1", "clinic-a")
    );
    let rest = list(
        pb::ChainSort::Deadline,
        "",
        false,
        2,
        page.next_page_token.clone(),
    )
    .await
    .expect("second page");
    let cois: Vec<&str> = rest.chains.iter().map(|c| c.coi.as_str()).collect();
    assert_eq!(cois, ["CHA999926ABC131"]);
    assert!(rest.next_page_token.is_empty());
    // Only the chain with an alert needs action (B is inside the 5-minute window).
    let action = list(pb::ChainSort::Deadline, "", true, 10, String::new())
        .await
        .expect("needs action");
    let cois: Vec<&str> = action.chains.iter().map(|c| c.coi.as_str()).collect();
    assert_eq!(cois, ["CHA999926ABC132"]);
    assert_eq!(action.chains[0].open_alert_count, 1);
    // No unit is at depot-1.
    let none = list(pb::ChainSort::Coi, "depot-1", false, 10, String::new())
        .await
        .expect("site filter");
    assert!(none.chains.is_empty());
    let bad = list(
        pb::ChainSort::Deadline,
        "",
        false,
        10,
        "CHA999926ABC131".into(),
    )
    .await
    .expect_err("a COI-sort token under the deadline sort");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message().starts_with("page_token: "),
        "{}",
        bad.message()
    );
    let bad = list(pb::ChainSort::Coi, "Depot 1", false, 10, String::new())
        .await
        .expect_err("a malformed site");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().starts_with("site_id: "), "{}", bad.message());
}

/// Reads `n` events (skipping progress marks) from a subscription.
async fn take_events(
    stream: &mut tonic::Streaming<pb::SubscribeResponse>,
    n: usize,
) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        let msg = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("an event within 20 s")
            .expect("stream open")
            .expect("stream ok");
        if let Some(e) = msg.event {
            out.push((msg.position, e.event_id));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_resumes_after_sigkill_with_every_event_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = start_node(dir.path());
    let clinic = node.token("clinic-a").expect("token");
    let auditor = node.token("auditor").expect("token");
    let mut api = Api::connect(&node).await;
    let t = now_s();
    let cois: Vec<String> = (0..3).map(|i| format!("CHA999926ABC14{i}")).collect();
    let mut appended = Vec::new();
    for (i, coi) in cois.iter().enumerate() {
        let r = api
            .append(
                (&clinic, "clinic-a"),
                &format!("s-c{i}"),
                coi,
                t - 100,
                P,
                collection("APH-1", t + 86_400),
            )
            .await;
        appended.push(r.event_id);
    }
    // Notes, round robin over the chains: 300 events in store order.
    for k in 0..297 {
        let coi = &cois[k % 3];
        let r = api
            .append(
                (&clinic, "clinic-a"),
                &format!("s-n{k}"),
                coi,
                t - 99 + (k as i64 / 10),
                P,
                pb::event_body::Kind::Note(pb::Note {
                    text: format!("note {k}"),
                }),
            )
            .await;
        appended.push(r.event_id);
    }
    let mut stream = api
        .client
        .subscribe(with_token(pb::SubscribeRequest::default(), &auditor))
        .await
        .expect("Subscribe")
        .into_inner();
    let mut got = take_events(&mut stream, 120).await;
    node.kill();
    drop(stream);
    let mut node = Node::start(
        &dir.path().join("data"),
        &[
            "--config",
            dir.path().join("node.toml").to_str().expect("utf-8"),
        ],
    )
    .expect("node restarts");
    let mut api = Api::connect(&node).await;
    let last = got.last().map(|(p, _)| *p).expect("some events");
    let mut stream = api
        .client
        .subscribe(with_token(
            pb::SubscribeRequest {
                from_position: last,
                ..pb::SubscribeRequest::default()
            },
            &auditor,
        ))
        .await
        .expect("Subscribe again")
        .into_inner();
    got.extend(take_events(&mut stream, 180).await);
    // Live: one more event arrives on the open stream.
    let r = api
        .append(
            (&clinic, "clinic-a"),
            "s-live",
            &cois[0],
            now_s(),
            P,
            pb::event_body::Kind::Note(pb::Note {
                text: "live".into(),
            }),
        )
        .await;
    appended.push(r.event_id);
    got.extend(take_events(&mut stream, 1).await);
    let positions: Vec<u64> = got.iter().map(|(p, _)| *p).collect();
    assert_eq!(positions, (1..=301).collect::<Vec<u64>>());
    let ids: Vec<String> = got.into_iter().map(|(_, id)| id).collect();
    assert_eq!(ids, appended);

    // Filters: only the second chain's events, and a kind that does not exist is refused.
    let mut only = api
        .client
        .subscribe(with_token(
            pb::SubscribeRequest {
                cois: vec![cois[1].clone()],
                kinds: vec!["collection".into()],
                ..pb::SubscribeRequest::default()
            },
            &auditor,
        ))
        .await
        .expect("filtered")
        .into_inner();
    let first = take_events(&mut only, 1).await;
    assert_eq!(first, [(2, appended[1].clone())]);
    let bad = api
        .client
        .subscribe(with_token(
            pb::SubscribeRequest {
                kinds: vec!["shipment".into()],
                ..pb::SubscribeRequest::default()
            },
            &auditor,
        ))
        .await
        .expect_err("unknown kind");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message()
            .starts_with("kinds[0]: \"shipment\" is not a body kind"),
        "{}",
        bad.message()
    );
    node.stop().expect("stop");
}

/// Runs the `ledger` CLI against `node` with `token`.
fn ledger_cli(node: &Node, token_file: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(tests::bin("ledger").expect("ledger binary"))
        .args(args)
        .args(["--node", &node.addr])
        .arg("--token-file")
        .arg(token_file)
        .env_remove("LEDGER_NODE")
        .env_remove("LEDGER_TOKEN")
        .output()
        .expect("run ledger")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_marks_an_overdue_unit_and_says_what_each_event_recorded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(dir.path());
    let clinic = node.token("clinic-a").expect("token");
    let mut api = Api::connect(&node).await;
    let t = now_s();
    let coi = "CHA999926ABC151";
    // Collected three hours ago with a deadline an hour ago: live and overdue now.
    api.append(
        (&clinic, "clinic-a"),
        "o-1",
        coi,
        t - 3 * 3600,
        P,
        collection("APH-1", t - 3600),
    )
    .await;
    api.append(
        (&clinic, "clinic-a"),
        "o-2",
        coi,
        t - 2 * 3600,
        P,
        pb::event_body::Kind::Pack(pb::Pack {
            shipper_id: "SHP-7".into(),
            unit_ids: vec!["APH-1".into()],
            seal: "SEAL-77".into(),
        }),
    )
    .await;
    let auditor = node.token_dir().join("auditor.token");
    // The alert is judged within a tick of the append.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let alerts = loop {
        let out = ledger_cli(&node, &auditor, &["alerts"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if text.contains("deadline_overdue") || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(alerts.starts_with("1 open alerts\n"), "{alerts}");
    assert!(alerts.contains("CRITICAL"), "{alerts}");
    assert!(alerts.contains("deadline_overdue"), "{alerts}");

    let out = ledger_cli(
        &node,
        &auditor,
        &["chains", "--sort", "deadline", "--live", "--needs-action"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("1 chains\n"), "{text}");
    assert!(text.contains("OVERDUE 1h"), "{text}");
    let out = ledger_cli(
        &node,
        &auditor,
        &["chains", "--sort", "deadline", "--output", "json"],
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let place = &doc["chains"][0]["places"][0];
    assert_eq!(place["unit"], "APH-1");
    assert_eq!(place["site"], "clinic-a");
    assert_eq!(doc["chains"][0]["n_open_alerts"], 1);

    let out = ledger_cli(&node, &auditor, &["chain", coi, "--output", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("units APH-1 into shipper SHP-7, seal SEAL-77"),
        "{text}"
    );

    let out = ledger_cli(&node, &auditor, &["chains", "--sort", "urgency"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = ledger_cli(&node, &auditor, &["subscribe", "--kind", "shipment"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("kinds[0]: \"shipment\" is not a body kind"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_alerts_watch_prints_a_raise_as_it_happens() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(dir.path());
    let clinic = node.token("clinic-a").expect("token");
    let mut child = std::process::Command::new(tests::bin("ledger").expect("ledger binary"))
        .args(["alerts", "--watch", "--node", &node.addr])
        .arg("--token-file")
        .arg(node.token_dir().join("auditor.token"))
        .env_remove("LEDGER_NODE")
        .env_remove("LEDGER_TOKEN")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ledger alerts --watch");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The snapshot comes first: no alert open.
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the snapshot's first line");
    assert_eq!(first, "0 open alerts");
    let mut api = Api::connect(&node).await;
    let t = now_s();
    api.append(
        (&clinic, "clinic-a"),
        "w-1",
        "CHA999926ABC161",
        t - 60,
        P,
        collection("APH-1", t + 60),
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let raised = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("a RAISED line within 10 s of the append");
        if line.contains(" RAISED ") {
            break line;
        }
    };
    assert!(
        raised.contains("RAISED CRITICAL deadline_imminent CHA999926ABC161: unit APH-1"),
        "{raised}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_replication_each_alert_is_published_on_its_sites_nats_subject() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nats = tests::nats::NatsServer::start().expect("nats-server starts");
    let url = nats.url();
    let client = async_nats::connect(&url).await.expect("nats connects");
    let mut sub = client
        .subscribe("ledger.v1.dev-net.alerts.clinic-a")
        .await
        .expect("subscribe");
    let cfg = dir.path().join("node.toml");
    std::fs::write(&cfg, "[alerts]\ndeadline_imminent_ms = 300000\n").expect("config");
    let node = Node::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().expect("utf-8"), "--nats-url", &url],
    )
    .expect("node starts");
    // A new store signs for a site only once it learned the site's feed from the network.
    node.wait_for_log("learned site clinic-a's feed", Duration::from_secs(20))
        .expect("the node learns its feed from NATS");
    let clinic = node.token("clinic-a").expect("token");
    let mut api = Api::connect(&node).await;
    let t = now_s();
    api.append(
        (&clinic, "clinic-a"),
        "n-1",
        "CHA999926ABC171",
        t - 60,
        P,
        collection("APH-1", t + 120),
    )
    .await;
    let msg = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("an alert on the site's subject within 10 s")
        .expect("subscription open");
    let doc: serde_json::Value = serde_json::from_slice(&msg.payload).expect("json");
    assert_eq!(doc["kind"], "deadline_imminent");
    assert_eq!(doc["state"], "raised");
    assert_eq!(doc["coi"], "CHA999926ABC171");
    assert_eq!(doc["unit"], "APH-1");
    assert_eq!(doc["site"], "clinic-a");
}
