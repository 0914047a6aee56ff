//! `ledger kpi` end to end, against the real `ledger-node` binary: fixture journeys are
//! replayed through `ledger replay` at known starts in the past, then `ledger kpi --output
//! json` is asked for two periods, and the figures must equal the ones worked out by hand
//! from the journey files (the arithmetic is written next to each number). A broken journey
//! (a seal found broken at receipt, which the node records) shares a lane with a valid one:
//! it must be listed and add nothing to that lane. Bad periods are refused: by the CLI
//! before it calls (exit 2, naming the flag), and by the node over gRPC (INVALID_ARGUMENT
//! naming the field).

use proto::v1 as pb;
use proto::v1::ledger_service_client::LedgerServiceClient;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tests::{bin, output_text as text, Node};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// The COI the broken journey is replayed under: its file shares standard's.
const BROKEN_COI: &str = "CHA999926SB0001";

fn ledger(node_addr: &str, args: &[&str]) -> Output {
    Command::new(bin("ledger").expect("ledger binary"))
        .args(args)
        .env("LEDGER_NODE", node_addr)
        .env_remove("LEDGER_TOKEN")
        .output()
        .expect("run ledger")
}

fn journey(dir: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/journeys")
        .join(dir)
        .join(format!("{name}.toml"))
}

/// Midnight UTC, `days` days before today.
fn midnight_days_ago(days: i64) -> ledger_core::Timestamp {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    ledger_core::Timestamp(now.div_euclid(DAY) * DAY - days * DAY)
}

/// The `YYYY-MM-DD` of a timestamp.
fn day_of(t: ledger_core::Timestamp) -> String {
    t.to_string()[..10].to_owned()
}

fn replay(node: &Node, path: &Path, start: ledger_core::Timestamp) {
    let tokens = node.token_dir();
    let o = ledger(
        &node.addr,
        &[
            "replay",
            path.to_str().expect("utf8"),
            "--tokens",
            tokens.to_str().expect("utf8"),
            "--start",
            &start.to_string(),
            "--output",
            "json",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "replay {}\n{}",
        path.display(),
        text(&o)
    );
}

fn kpi(node: &Node, args: &[&str]) -> Output {
    let auditor = node.token_dir().join("auditor.token");
    let mut all = vec!["kpi", "--token-file", auditor.to_str().expect("utf8")];
    all.extend_from_slice(args);
    ledger(&node.addr, &all)
}

fn kpi_json(node: &Node, from: &str, to: &str) -> Value {
    let o = kpi(node, &["--from", from, "--to", to, "--output", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("kpi json: {e}\n{}", text(&o)))
}

/// A duration summary as `ledger kpi --output json` prints it, from its samples in ms.
fn spans(samples: &[i64]) -> Value {
    let mut s = samples.to_vec();
    s.sort_unstable();
    let n = s.len();
    // Nearest rank: the p-th percentile is the sample at rank ceil(p * n / 100).
    let rank = |p: usize| s[(p * n).div_ceil(100) - 1];
    json!({
        "count": n,
        "min_ms": s[0],
        "median_ms": rank(50),
        "p90_ms": rank(90),
        "max_ms": s[n - 1],
        "mean_ms": s.iter().sum::<i64>().div_euclid(n as i64),
    })
}

fn lane<'a>(report: &'a Value, from: &str, to: &str) -> &'a Value {
    report["lanes"]
        .as_array()
        .expect("lanes")
        .iter()
        .find(|l| l["from"] == from && l["to"] == to)
        .unwrap_or_else(|| panic!("no lane {from} -> {to} in {report}"))
}

fn site<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["sites"]
        .as_array()
        .expect("sites")
        .iter()
        .find(|s| s["site"] == id)
        .unwrap_or_else(|| panic!("no site {id} in {report}"))
}

#[test]
fn kpis_over_replayed_journeys_are_the_figures_worked_out_from_the_journey_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&dir.path().join("data"), &[]).expect("node starts");

    // standard alone, 80 days ago; 40 days later offline-clinic, weather-reroute and the
    // broken seal-broken (under a COI of its own). No journey lasts 16 days, so the first
    // period below holds standard only.
    let a = midnight_days_ago(80).plus(ledger_core::Millis(8 * HOUR));
    let b = midnight_days_ago(40).plus(ledger_core::Millis(8 * HOUR));
    replay(&node, &journey("valid", "standard"), a);
    replay(&node, &journey("valid", "offline-clinic"), b);
    replay(&node, &journey("valid", "weather-reroute"), b);
    let broken = std::fs::read_to_string(journey("broken", "seal-broken"))
        .expect("read seal-broken")
        .replace(
            "coi = \"CHA999926ABC123\"",
            &format!("coi = \"{BROKEN_COI}\""),
        );
    assert!(broken.contains(BROKEN_COI), "the journey's coi line moved");
    let broken_path = dir.path().join("seal-broken.toml");
    std::fs::write(&broken_path, broken).expect("write journey");
    replay(&node, &broken_path, b);

    // The first period, [a's day, a + 30 days): standard's journey only. Its times, from
    // fixtures/journeys/valid/standard.toml (offsets from the start):
    //   collect +0, dispatch (clinic-a -> mfg-1) +1h10m, receive +20h,
    //   transduce (APH-1 -> DP-1) +30h, dispatch-dp (mfg-1 -> clinic-a) +12d3h,
    //   receive-dp +13d, infuse +14d1h10m.
    let from = day_of(a);
    let to = a.plus(ledger_core::Millis(30 * DAY)).to_string();
    let r = kpi_json(&node, &from, &to);
    assert_eq!(r["from"], format!("{from}T00:00:00Z"));
    assert_eq!(r["to"], to);
    assert_eq!(r["chains_counted"], 1, "{r}");
    assert_eq!(r["chains_incomplete"], 0, "{r}");
    assert_eq!(r["chains_broken"], json!([]), "{r}");
    // Vein-to-vein: collect to infuse, 14d 1h 10m = 1,213,800,000 ms.
    let standard_v2v = 14 * DAY + HOUR + 10 * MINUTE;
    assert_eq!(standard_v2v, 1_213_800_000);
    assert_eq!(r["vein_to_vein"], spans(&[standard_v2v]), "{r}");
    // Handoffs: 1h10m -> 20h is 18h 50m; 12d3h -> 13d is 21h. Both within the default
    // 48 h limit, and the transit log's readings (4.1-5.0 C, range 2-8 C) are no excursion.
    let lanes = json!([
        {
            "from": "clinic-a", "to": "mfg-1", "limit_ms": 48 * HOUR,
            "handoff": spans(&[18 * HOUR + 50 * MINUTE]),
            "late": 0, "with_excursion": 0, "excursion_rate": 0.0,
        },
        {
            "from": "mfg-1", "to": "clinic-a", "limit_ms": 48 * HOUR,
            "handoff": spans(&[21 * HOUR]),
            "late": 0, "with_excursion": 0, "excursion_rate": 0.0,
        },
    ]);
    assert_eq!(r["lanes"], lanes, "{r}");
    // Stays: clinic-a held APH-1 from collect to dispatch (1h10m) and DP-1 from receive-dp
    // to infuse (1d 1h 10m); mfg-1 held APH-1 from receive to transduce (10h) and DP-1
    // from transduce to dispatch-dp (12d3h - 30h = 261h). The only condition record's
    // readings lie in transit: it counts for the lane, not for a site.
    let sites = json!([
        {
            "site": "clinic-a",
            "dwell": spans(&[HOUR + 10 * MINUTE, DAY + HOUR + 10 * MINUTE]),
            "condition_records": 0, "excursions": 0, "excursion_rate": null,
            "findings": {},
        },
        {
            "site": "mfg-1",
            "dwell": spans(&[10 * HOUR, 261 * HOUR]),
            "condition_records": 0, "excursions": 0, "excursion_rate": null,
            "findings": {},
        },
    ]);
    assert_eq!(r["sites"], sites, "{r}");

    // The whole span, [a's day, tomorrow): all four chains.
    let tomorrow = day_of(midnight_days_ago(-1));
    let r = kpi_json(&node, &from, &tomorrow);
    // seal-broken is listed and counted in nothing else.
    assert_eq!(r["chains_counted"], 3, "{r}");
    assert_eq!(r["chains_broken"], json!([BROKEN_COI]), "{r}");
    // Vein-to-vein: standard's 14d1h10m and offline-clinic's (collect +0, infuse
    // +14d2h10m) 14d2h10m; weather-reroute ends in manufacturing, and seal-broken's
    // infusion (also 14d1h10m) is left out. Two samples: median rank 1, p90 rank 2.
    let offline_v2v = 14 * DAY + 2 * HOUR + 10 * MINUTE;
    assert_eq!(
        r["vein_to_vein"],
        json!({
            "count": 2,
            "min_ms": 1_213_800_000,
            "median_ms": 1_213_800_000,
            "p90_ms": 1_217_400_000,
            "max_ms": 1_217_400_000,
            "mean_ms": 1_215_600_000,
        }),
        "{r}"
    );
    assert_eq!(r["vein_to_vein"], spans(&[standard_v2v, offline_v2v]));
    // seal-broken dispatched clinic-a -> mfg-1 at +1h10m and received at +20h too: the
    // lane still holds standard's handoff alone.
    assert_eq!(
        lane(&r, "clinic-a", "mfg-1")["handoff"],
        spans(&[18 * HOUR + 50 * MINUTE])
    );
    // weather-reroute's second leg: depot-1 dispatched at +22h40m, depot-2 received at
    // +30h5m: 7h 25m.
    assert_eq!(
        lane(&r, "depot-1", "depot-2")["handoff"],
        spans(&[7 * HOUR + 25 * MINUTE])
    );
    assert_eq!(
        lane(&r, "depot-2", "mfg-1")["handoff"],
        spans(&[6 * HOUR + 30 * MINUTE])
    );
    // A broken chain's findings still count for the site that authored the event: mfg-1
    // signed the receipt that found the seal broken.
    assert_eq!(
        site(&r, "mfg-1")["findings"],
        json!({"custody.seal_broken": 1}),
        "{r}"
    );

    // The same figures as CSV (long format) and as text.
    let o = kpi(
        &node,
        &["--from", &from, "--to", &tomorrow, "--output", "csv"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let csv = String::from_utf8(o.stdout.clone()).expect("utf8");
    let rows: Vec<&str> = csv.split("\r\n").collect();
    assert_eq!(rows[0], "scope,site,from_site,to_site,metric,value");
    for row in [
        "network,,,,chains_counted,3",
        "network,,,,chains_broken,1",
        "network,,,,vein_to_vein_median_ms,1213800000",
        "lane,,depot-1,depot-2,handoff_median_ms,26700000",
        "site,mfg-1,,,findings.custody.seal_broken,1",
    ] {
        assert!(rows.contains(&row), "no row {row} in\n{csv}");
    }
    let o = kpi(&node, &["--from", &from, "--to", &tomorrow]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("broken:        {BROKEN_COI}\n")),
        "{out}"
    );
    assert!(
        out.contains("vein-to-vein:  median 14d 1h, p90 14d 2h, min 14d 1h, max 14d 2h (2 chains)"),
        "{out}"
    );
}

#[test]
fn a_period_that_does_not_end_after_it_starts_is_refused() {
    // The CLI refuses before it connects: no node is needed to learn the period is wrong.
    let nowhere = "http://127.0.0.1:9";
    let o = ledger(
        nowhere,
        &[
            "kpi",
            "--from",
            "2026-03-02",
            "--to",
            "2026-03-01T23:59:59Z",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--to must be after --from"), "{}", text(&o));
    let o = ledger(
        nowhere,
        &["kpi", "--from", "2026-03-01", "--to", "2026-03-01"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = ledger(
        nowhere,
        &["kpi", "--from", "yesterday", "--to", "2026-03-01"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--from"),
        "{}",
        text(&o)
    );

    // The node refuses a request without a start, or with an empty period, naming the field.
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&dir.path().join("data"), &[]).expect("node starts");
    let token = node.token("auditor").expect("auditor token");
    let at = |seconds: i64| Some(prost_types::Timestamp { seconds, nanos: 0 });
    let call = |start_time, end_time| {
        let addr = node.addr.clone();
        let token = token.clone();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async move {
                let mut client = LedgerServiceClient::connect(addr).await.expect("connect");
                let mut req = tonic::Request::new(pb::GetKpisRequest {
                    start_time,
                    end_time,
                });
                req.metadata_mut().insert(
                    "authorization",
                    format!("Bearer {token}").parse().expect("ascii token"),
                );
                client.get_kpis(req).await
            })
    };
    let refused = call(None, at(1_772_438_400)).expect_err("no start_time");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert_eq!(refused.message(), "start_time: is required");
    let refused = call(at(1_772_438_400), at(1_772_438_400)).expect_err("empty period");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().starts_with("end_time: "), "{refused:?}");
    // And answers a good one, even over a node with no chain.
    let empty = call(at(1_772_438_400), at(1_772_438_401))
        .expect("a one-second period")
        .into_inner();
    assert_eq!(
        (empty.chains_counted, empty.sites.len(), empty.vein_to_vein),
        (0, 0, None)
    );
}
