//! Operating the node: SIGTERM finishes the appends in flight and exits 0 with nothing lost,
//! also when whatever read its log has gone away, and a health watch held open learns of
//! the stop and cannot hold it up;
//! WatchChain streams a chain from any position and then each new event as it is stored;
//! the Prometheus endpoint counts appends; SIGHUP reads the token files again.

use proto::v1 as pb;
use proto::v1::ledger_service_client::LedgerServiceClient;
use std::io::{Read, Write};
use tests::Node;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::Request;
use tonic_health::pb::health_check_response::ServingStatus;

const COI: &str = "CHA999926ABC123";
const T0: i64 = 1_772_438_400;

fn authed<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    r
}

fn append_req(id: &str, body: pb::event_body::Kind, at: i64) -> pb::AppendRequest {
    pb::AppendRequest {
        request_id: id.into(),
        site_id: "clinic-a".into(),
        coi: COI.into(),
        occurred_time: Some(prost_types::Timestamp {
            seconds: at,
            nanos: 0,
        }),
        signer: Some(pb::Signer {
            operator_id: "op.one".into(),
            printed_name: "Op One".into(),
            meaning: pb::SignatureMeaning::Performed as i32,
        }),
        body: Some(pb::EventBody { kind: Some(body) }),
    }
}

fn collection() -> pb::event_body::Kind {
    pb::event_body::Kind::Collection(pb::Collection {
        units: vec![pb::NewUnit {
            unit_id: "APH-1".into(),
            stability_deadline: Some(prost_types::Timestamp {
                seconds: T0 + 72 * 3600,
                nanos: 0,
            }),
            temp_min_centi_celsius: 200,
            temp_max_centi_celsius: 800,
        }],
        dins: vec![],
    })
}

fn note(i: usize) -> pb::event_body::Kind {
    pb::event_body::Kind::Note(pb::Note {
        text: format!("note {i}"),
    })
}

/// Opens a WatchChain stream on the test chain from `from_position`, as `token`.
async fn open_watch(
    c: &mut LedgerServiceClient<Channel>,
    from_position: u64,
    token: &str,
) -> tonic::Streaming<pb::WatchChainResponse> {
    c.watch_chain(authed(
        pb::WatchChainRequest {
            coi: COI.into(),
            from_position,
        },
        token,
    ))
    .await
    .expect("watch")
    .into_inner()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_appends_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Node::start(dir.path(), &[]).expect("node");
    let token = node.token("clinic-a").expect("token");
    let mut c = client(&node).await;
    c.append(authed(append_req("c", collection(), T0), &token))
        .await
        .expect("collection");
    // Many appends in flight, then SIGTERM while they run.
    let mut tasks = Vec::new();
    for i in 0..200 {
        let mut c = c.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            c.append(authed(
                append_req(&format!("n-{i}"), note(i), T0 + 60),
                &token,
            ))
            .await
            .map(|r| r.into_inner().receipt.map(|r| r.event_id))
        }));
    }
    let code = node.stop().expect("stop");
    assert_eq!(code, Some(0), "a clean shutdown exits 0");
    let mut acked = Vec::new();
    for t in tasks {
        if let Ok(Ok(Some(id))) = t.await {
            acked.push(id);
        }
    }
    let node = Node::start(dir.path(), &[]).expect("restart");
    let auditor = node.token("auditor").expect("token");
    let mut c = client(&node).await;
    let mut stored = std::collections::HashSet::new();
    let mut token_page = String::new();
    loop {
        let page = c
            .get_chain(authed(
                pb::GetChainRequest {
                    coi: COI.into(),
                    page_size: 5000,
                    page_token: token_page.clone(),
                },
                &auditor,
            ))
            .await
            .expect("chain")
            .into_inner();
        stored.extend(page.events.into_iter().map(|e| e.event_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token_page = page.next_page_token;
    }
    for id in &acked {
        assert!(
            stored.contains(id),
            "acknowledged event {id} is missing after a clean shutdown"
        );
    }
    let v = c
        .verify_chain(authed(pb::VerifyChainRequest { coi: COI.into() }, &auditor))
        .await
        .expect("verify")
        .into_inner();
    assert_eq!(v.verdict, pb::Verdict::Intact as i32, "{:?}", v.findings);
}

#[test]
fn closing_stdin_stops_a_node_started_with_stop_on_stdin_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The harness starts every node with --stop-on-stdin-close and holds the pipe.
    let mut node = Node::start(dir.path(), &[]).expect("node");
    assert_eq!(node.close_stdin().expect("exit"), Some(0));
}

/// `ledger-node run` on `dir` with `extra` flags, its log (stderr) piped to the test, for
/// tests that read the log themselves ([`Node`] reads it for the rest).
fn spawn_node(dir: &std::path::Path, extra: &[&str]) -> std::process::Child {
    use std::process::{Command, Stdio};
    Command::new(tests::bin("ledger-node").expect("binary"))
        .arg("run")
        .args(extra)
        .args([
            "--no-metrics",
            "--no-http",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir)
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ledger-node")
}

/// A node with the given shutdown grace, and health watches of `services` each past their
/// first answer, SERVING.
async fn watched_node(
    dir: &std::path::Path,
    grace_ms: u64,
    services: &[&str],
) -> (
    Node,
    Vec<tonic::Streaming<tonic_health::pb::HealthCheckResponse>>,
) {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let config = dir.join("node.toml");
    std::fs::write(
        &config,
        format!("[limits]\nshutdown_grace_ms = {grace_ms}\n"),
    )
    .expect("config");
    let node = Node::start(
        &dir.join("data"),
        &["--config", config.to_str().expect("utf-8 path")],
    )
    .expect("node");
    let channel = Channel::from_shared(node.addr.clone())
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel);
    let mut watches = Vec::new();
    for service in services {
        let mut watch = health
            .watch(HealthCheckRequest {
                service: (*service).to_owned(),
            })
            .await
            .expect("watch")
            .into_inner();
        let first = watch.message().await.expect("a status").expect("a status");
        assert_eq!(first.status(), ServingStatus::Serving, "{service:?}");
        watches.push(watch);
    }
    (node, watches)
}

/// A second SIGTERM does not wait out the shutdown grace (here ten minutes) for a health
/// watch held open: the node closes it and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_cuts_the_shutdown_grace_short() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut node, mut watches) = watched_node(dir.path(), 600_000, &[""]).await;
    let watch = &mut watches[0];
    let pid = node.pid().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let next = watch.message().await.expect("a status").expect("a status");
    assert_eq!(next.status(), ServingStatus::NotServing);
    // The second SIGTERM; `stop` waits at most 30 s for the exit.
    let stopped = tokio::task::spawn_blocking(move || node.stop())
        .await
        .expect("join")
        .expect("the node stops after a second SIGTERM");
    assert_eq!(stopped, Some(0));
    drop(watches);
}

/// Every client connection takes a descriptor: the node raises its open-files soft limit,
/// here started at 64, to the hard limit.
#[test]
fn the_node_raises_its_open_files_limit_to_the_hard_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Node::start_with_prlimit(dir.path(), &[], "--nofile=64:").expect("node");
    let pid = node.pid().expect("pid");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("an open files line");
    let fields: Vec<u64> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let [soft, hard] = fields[..] else {
        panic!("{line}")
    };
    assert!(hard > 64, "the hard limit must allow more than 64: {line}");
    assert_eq!(soft, hard, "{line}");
    assert_eq!(node.stop().expect("the node stops"), Some(0));
}

/// A second node on a store a running node holds is refused with exit code 1, and its last
/// line says why and what to do, each once.
#[test]
fn a_second_node_on_the_same_store_is_refused_and_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut first = Node::start(dir.path(), &[]).expect("node");
    let second = spawn_node(dir.path(), &[])
        .wait_with_output()
        .expect("second node");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("ledger-node: index "), "{stderr}");
    assert!(
        last.ends_with(
            "; another process holds this store: if another node runs on it, stop that node"
        ),
        "{stderr}"
    );
    assert_eq!(
        last.matches("could not acquire lock").count(),
        1,
        "{stderr}"
    );
    assert_eq!(first.stop().expect("the first node stops"), Some(0));
}

#[test]
fn sigterm_stops_the_node_after_its_log_reader_is_gone() {
    use std::io::BufRead;
    use std::process::Command;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = spawn_node(dir.path(), &[]);
    let mut log = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    while !line.contains("listening on") {
        line.clear();
        let n = log.read_line(&mut line).expect("read the node's log");
        assert!(n > 0, "the node exited before listening");
    }
    // The log collector goes away: every later log line meets a closed pipe.
    drop(log);
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    assert_eq!(
        tests::wait_exit(child).expect("the node exits within 30 s of SIGTERM"),
        Some(0),
        "the node must stop cleanly on SIGTERM with its log pipe closed"
    );
}

#[test]
fn log_json_writes_one_json_object_per_line() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = spawn_node(dir.path(), &["--stop-on-stdin-close", "--log-json"]);
    let log = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut lines = Vec::new();
    for line in log.lines() {
        let line = line.expect("read the node's log");
        let doc: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        let message = doc["fields"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            doc["level"].is_string() && doc["timestamp"].is_string(),
            "{line}"
        );
        lines.push(message);
        if lines
            .last()
            .is_some_and(|m| m.starts_with("ledger node listening on"))
        {
            // Stop it: the rest of its log (the shutdown) must be JSON too.
            drop(child.stdin.take());
        }
    }
    assert!(
        lines
            .iter()
            .any(|m| m.starts_with("created a DEVELOPMENT network")),
        "{lines:?}"
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some("stopped"),
        "{lines:?}"
    );
    assert_eq!(tests::wait_exit(child).expect("the node exits"), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_from_a_position_then_live() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Node::start(dir.path(), &[]).expect("node");
    let token = node.token("clinic-a").expect("token");
    let mut c = client(&node).await;
    c.append(authed(append_req("c", collection(), T0), &token))
        .await
        .expect("collection");
    for i in 0..3 {
        c.append(authed(
            append_req(&format!("n-{i}"), note(i), T0 + 60),
            &token,
        ))
        .await
        .expect("note");
    }
    let mut stream = open_watch(&mut c, 2, &token).await;
    let mut positions = Vec::new();
    for _ in 0..2 {
        let item = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
            .await
            .expect("backlog in time")
            .expect("item")
            .expect("ok");
        positions.push(item.position);
    }
    assert_eq!(positions, vec![3, 4]);
    // A live append arrives on the open stream.
    let receipt = c
        .append(authed(append_req("live", note(9), T0 + 120), &token))
        .await
        .expect("live append")
        .into_inner()
        .receipt
        .expect("receipt");
    let item = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
        .await
        .expect("live event in time")
        .expect("item")
        .expect("ok");
    assert_eq!(item.position, 5);
    assert_eq!(item.event.map(|e| e.event_id), Some(receipt.event_id));
    // A node that stops ends the stream with UNAVAILABLE and where to resume, not with OK
    // (which would read as "the watch is over").
    let code = tokio::task::block_in_place(|| node.stop()).expect("node stops");
    assert_eq!(code, Some(0));
    let end = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
        .await
        .expect("the stream ends in time")
        .expect("an end status, not a silent end");
    let status = end.expect_err("UNAVAILABLE");
    assert_eq!(
        status.code(),
        tonic::Code::Unavailable,
        "{}",
        status.message()
    );
    assert_eq!(
        status.message(),
        "the node is stopping; resume the watch with from_position 5"
    );
}

/// A client holding a health watch open learns that the node is stopping (NOT_SERVING),
/// and cannot hold the stop up: the node closes the watch when its shutdown grace runs out
/// and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_watch_learns_of_the_stop_and_cannot_hold_it_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The node's overall status ("") and the ledger service's.
    let (mut node, mut watches) =
        watched_node(dir.path(), 300, &["", "ledger.v1.LedgerService"]).await;
    let stopping = tokio::task::spawn_blocking(move || node.stop());
    for watch in &mut watches {
        let next = watch.message().await.expect("a status").expect("a status");
        assert_eq!(next.status(), ServingStatus::NotServing);
    }
    // The watches are still open here: the node must close them itself.
    let stopped = stopping.await.expect("join").expect("the node stops");
    assert_eq!(stopped, Some(0));
    drop(watches);
}

/// A leaked token is revoked without a restart: its file is replaced and the node gets
/// SIGHUP. The old token is then refused and the new one appends, and a watch opened with
/// the old token ends with UNAUTHENTICATED instead of sending the next event; a token set
/// with one file the node cannot accept is not taken, and the tokens in use keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reads_the_token_files_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &[]).expect("node");
    let leaked = node.token("clinic-a").expect("token");
    let mut c = client(&node).await;
    c.append(authed(append_req("c", collection(), T0), &leaked))
        .await
        .expect("collection with the token in use");
    let mut watch = open_watch(&mut c, 0, &leaked).await;
    let mut next_watched = async || {
        tokio::time::timeout(std::time::Duration::from_secs(10), watch.next())
            .await
            .expect("the watch answers in time")
            .expect("the watch is open")
    };
    assert_eq!(next_watched().await.expect("collection").position, 1);

    // The operator's way: the CLI writes a fresh token, then the node gets SIGHUP.
    let network_dir = node.data_dir.join("network");
    let o = std::process::Command::new(tests::bin("ledger").expect("ledger binary"))
        .args(["network", "rotate-token", "clinic-a", "--dir"])
        .arg(&network_dir)
        .output()
        .expect("run ledger");
    assert_eq!(o.status.code(), Some(0), "{}", tests::output_text(&o));
    let fresh = node.token("clinic-a").expect("new token");
    assert_ne!(fresh, leaked);
    // Until the node reads its tokens again, the old token is the one it accepts.
    c.append(authed(append_req("n-0", note(0), T0 + 30), &leaked))
        .await
        .expect("the old token works until SIGHUP");
    assert_eq!(
        next_watched().await.expect("note before SIGHUP").position,
        2
    );
    node.hangup().expect("SIGHUP");
    let line = node
        .wait_for_log("token files read again", std::time::Duration::from_secs(10))
        .expect("reload logged");
    assert!(line.contains("9 tokens accepted"), "{line}");
    let e = c
        .append(authed(append_req("n-1", note(1), T0 + 60), &leaked))
        .await
        .expect_err("the replaced token must be refused");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{}", e.message());
    assert_eq!(e.message(), "unknown token");
    c.append(authed(append_req("n-1", note(1), T0 + 60), &fresh))
        .await
        .expect("append with the new token");
    let e = next_watched()
        .await
        .expect_err("the watch opened with the old token must not send this event");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{}", e.message());
    assert!(
        e.message().contains("no longer accepted"),
        "{}",
        e.message()
    );

    // A second file holding the same token: the set is refused whole.
    let copy = node.token_dir().join("clinic-s.token");
    std::fs::write(&copy, &fresh).expect("duplicate token");
    node.hangup().expect("SIGHUP");
    let line = node
        .wait_for_log("token files not taken", std::time::Duration::from_secs(10))
        .expect("refusal logged");
    assert!(line.contains("clinic-s.token"), "{line}");
    c.append(authed(append_req("n-2", note(2), T0 + 120), &fresh))
        .await
        .expect("the tokens in use are unchanged");
    let e = c
        .append(authed(append_req("n-3", note(3), T0 + 180), &leaked))
        .await
        .expect_err("the replaced token stays refused");
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_appends() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &["--metrics-listen", &addr]).expect("node");
    let token = node.token("clinic-a").expect("token");
    let mut c = client(&node).await;
    c.append(authed(append_req("c", collection(), T0), &token))
        .await
        .expect("collection");
    let mut s = std::net::TcpStream::connect(&addr).expect("metrics endpoint");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("response");
    assert!(
        body.contains("ledger_appends_total{result=\"ok\"} 1"),
        "{body}"
    );
    // A group size, in events: the lone append lands in the first bucket.
    assert!(
        body.contains("ledger_commit_group_events_bucket{le=\"1\"} 1")
            && body.contains("ledger_commit_group_events_bucket{le=\"2\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("# HELP ledger_commit_group_events Events made durable by one fdatasync"),
        "{body}"
    );
}

/// With a certificate configured the node speaks only TLS: our client connects over
/// https with the CA certificate and is answered; a plaintext connection is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_verified_clients_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let cert_file = dir.path().join("node.crt");
    let key_file = dir.path().join("node.key");
    std::fs::write(&cert_file, key.cert.pem()).expect("write cert");
    std::fs::write(&key_file, key.signing_key.serialize_pem()).expect("write key");
    let data = dir.path().join("data");
    let node = Node::start(
        &data,
        &[
            "--tls-cert-file",
            cert_file.to_str().expect("utf8"),
            "--tls-key-file",
            key_file.to_str().expect("utf8"),
        ],
    )
    .expect("node");
    let port = node.addr.rsplit(':').next().expect("port").to_owned();
    let token = node.token("auditor").expect("token");
    let cfg = ledger_client::client::ClientConfig {
        ca_certificate: Some(key.cert.pem().into_bytes()),
        ..Default::default()
    };
    let client = ledger_client::client::Client::connect_with(
        &format!("https://localhost:{port}"),
        token.clone(),
        cfg,
    )
    .await
    .expect("TLS connection");
    let info = client.node_info().await.expect("node info over TLS");
    assert_eq!(info.sites.len(), 6);
    // Plaintext against a TLS port gets no answer.
    let plain = ledger_client::client::Client::connect(&node.addr, token).await;
    let answered = match plain {
        Ok(c) => c.node_info().await.is_ok(),
        Err(_) => false,
    };
    assert!(!answered, "a plaintext client was answered by a TLS node");
    // Without the CA certificate an https endpoint is refused up front, with a reason.
    let Err(e) = ledger_client::client::Client::connect(
        &format!("https://localhost:{port}"),
        "x".repeat(64),
    )
    .await
    else {
        panic!("an https endpoint without a CA certificate was accepted");
    };
    assert!(e.to_string().contains("CA certificate"), "{e}");
}
