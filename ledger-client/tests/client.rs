//! The typed client over real gRPC, against the scripted node in `fake_node`. Checks what only shows on the wire: the bearer header on every
//! call, retries that keep the request id, bounded attempts, call timeouts, export length
//! checks, events decoded from their signed bytes, watch position gaps.
//!
//! Nothing here sleeps to synchronise: a slow node is a handler that never answers, and the
//! client's own timeout ends the wait.

mod fake_node;

use fake_node::{receipt, serve, Fake};
use ledger_client::client::{Client, ClientConfig, Error};
use ledger_core::Coi;
use proto::v1 as pb;
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::{Code, Status};

fn fast() -> ClientConfig {
    ClientConfig {
        call_timeout: Duration::from_secs(5),
        backoff_first: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
        append_retries_max: 3,
        ..ClientConfig::default()
    }
}

async fn client(fake: &Fake, cfg: ClientConfig) -> Client {
    let endpoint = serve(fake.clone()).await;
    Client::connect_with(&endpoint, "tok-clinic-a".into(), cfg)
        .await
        .expect("connect to the scripted node")
}

fn request(request_id: &str) -> pb::AppendRequest {
    pb::AppendRequest {
        request_id: request_id.into(),
        site_id: "clinic-a".into(),
        coi: "CHA999926ABC123".into(),
        ..pb::AppendRequest::default()
    }
}

fn coi() -> Coi {
    Coi::parse("CHA999926ABC123").expect("a valid COI")
}

#[tokio::test]
async fn append_retries_unavailable_with_the_same_request_id() {
    let fake = Fake::default();
    fake.0.lock().unwrap().unavailable_first = 2;
    let c = client(&fake, fast()).await;
    let r = c.append(request("scan-1")).await.unwrap();
    assert_eq!(r.event_id.to_hex(), receipt("scan-1").event_id);
    let s = fake.0.lock().unwrap();
    assert_eq!(s.seen_request_ids, ["scan-1", "scan-1", "scan-1"]);
    assert_eq!(s.seen_auth, ["Bearer tok-clinic-a"; 3]);
}

#[tokio::test]
async fn append_retries_are_bounded() {
    let fake = Fake::default();
    fake.0.lock().unwrap().unavailable_first = 100;
    let c = client(&fake, fast()).await;
    let e = c.append(request("scan-1")).await.unwrap_err();
    assert!(matches!(e, Error::Unreachable { .. }), "{e}");
    assert_eq!(fake.0.lock().unwrap().seen_request_ids.len(), 4);
}

#[tokio::test]
async fn a_refused_append_is_not_retried_and_keeps_code_and_message() {
    let fake = Fake::default();
    fake.0.lock().unwrap().refuse = Some(Status::failed_precondition(
        "clinic-a does not hold BAG-1; record its receipt first",
    ));
    let c = client(&fake, fast()).await;
    match c.append(request("scan-1")).await {
        Err(Error::Rejected { code, message }) => {
            assert_eq!(code, Code::FailedPrecondition);
            assert_eq!(
                message,
                "clinic-a does not hold BAG-1; record its receipt first"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(fake.0.lock().unwrap().seen_request_ids.len(), 1);
}

#[tokio::test]
async fn a_node_that_does_not_answer_times_out() {
    let fake = Fake::default();
    fake.0.lock().unwrap().hang = true;
    let cfg = ClientConfig {
        call_timeout: Duration::from_millis(200),
        ..fast()
    };
    let c = client(&fake, cfg).await;
    let e = c.node_info().await.unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
}

#[tokio::test]
async fn no_node_is_unreachable() {
    // A port that was free a moment ago; nothing listens on it now.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let e = Client::connect(&format!("http://{addr}"), "t".into())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unreachable { .. }), "{e}");
}

#[tokio::test]
async fn batches_answer_each_request() {
    let fake = Fake::default();
    let c = client(&fake, fast()).await;
    let mut other = request("scan-2");
    other.site_id = "mfg-1".into();
    let results = c
        .append_batch(vec![request("scan-1"), other])
        .await
        .unwrap();
    assert!(results[0].is_ok());
    assert!(
        matches!(
            &results[1],
            Err(Error::Rejected {
                code: Code::PermissionDenied,
                ..
            })
        ),
        "{:?}",
        results[1]
    );
}

#[tokio::test]
async fn export_concatenates_chunks_and_checks_the_length() {
    let fake = Fake::default();
    {
        let mut s = fake.0.lock().unwrap();
        s.export_chunks = vec![b"abc".to_vec(), b"defg".to_vec()];
        s.export_total = 7;
    }
    let c = client(&fake, fast()).await;
    let mut out = Vec::new();
    assert_eq!(c.export(&coi(), &mut out).await.unwrap(), 7);
    assert_eq!(out, b"abcdefg");

    fake.0.lock().unwrap().export_total = 8;
    let e = c.export(&coi(), &mut Vec::new()).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::ExportLength {
                announced: 8,
                received: 7
            }
        ),
        "{e}"
    );
}

fn journey_events() -> Vec<pb::Event> {
    let text = std::fs::read_to_string(fixtures::data_dir().join("journeys/valid/standard.toml"))
        .expect("read the standard journey");
    fixtures::build(&text)
        .expect("build the standard journey")
        .events
        .iter()
        .map(proto::convert::event_to_wire)
        .collect()
}

#[tokio::test]
async fn chain_follows_pages_and_decodes_signed_bytes() {
    let fake = Fake::default();
    let events = journey_events();
    fake.0.lock().unwrap().events = events.clone();
    let c = client(&fake, fast()).await;
    let got = c.chain(&coi()).await.unwrap();
    let ids: Vec<String> = got.iter().map(|e| e.id().to_hex()).collect();
    let expected: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(ids, expected);

    // An event whose claimed id is not the hash of its bytes is refused.
    fake.0.lock().unwrap().events[3].event_id = events[4].event_id.clone();
    let e = c.chain(&coi()).await.unwrap_err();
    assert!(
        e.to_string().contains("events[1].event_id"),
        "page 2, second event: {e}"
    );
}

#[tokio::test]
async fn watch_reports_a_gap_in_positions() {
    let fake = Fake::default();
    {
        let mut s = fake.0.lock().unwrap();
        s.events = journey_events();
        s.watch_positions = vec![4, 5, 7];
    }
    let c = client(&fake, fast()).await;
    let items: Vec<_> = c.watch(&coi(), 3).await.unwrap().collect().await;
    assert!(items[0].as_ref().is_ok_and(|w| w.position == 4));
    assert!(items[1].as_ref().is_ok_and(|w| w.position == 5));
    let e = items[2].as_ref().unwrap_err();
    assert!(e.to_string().contains("7 where 6 was next"), "{e}");
}

#[tokio::test]
async fn reads_are_typed() {
    let fake = Fake::default();
    let c = client(&fake, fast()).await;
    let page = c
        .chains(Some(ledger_core::Status::InTransit), Some(10), None)
        .await
        .unwrap();
    assert_eq!(page.chains[0].status, ledger_core::Status::InTransit);
    assert_eq!(page.next_page_token.unwrap().as_str(), "p2");
    let info = c.node_info().await.unwrap();
    assert_eq!(info.sites[0].feed_head, None);
    let e = c.verify(&coi()).await.unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Rejected {
                code: Code::NotFound,
                ..
            }
        ),
        "{e}"
    );
    // A second site's token over the same connection.
    let other = c.with_token("tok-mfg-1").unwrap();
    other.node_info().await.unwrap();
    let seen = fake.0.lock().unwrap().seen_auth.clone();
    assert_eq!(seen.last().map(String::as_str), Some("Bearer tok-mfg-1"));
}
