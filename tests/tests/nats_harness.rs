//! The nats-server harness (`tests::nats`) against real servers and a real client: a single
//! server deduplicates by `Nats-Msg-Id` and keeps a file stream across a restart, a
//! three-member cluster acknowledges a replicated publish with a member down, and no server
//! outlives its handle or a killed test process.

use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::{self, context::PublishAckFuture, publish::PublishAck, stream};
use async_nats::HeaderMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tests::nats::{NatsCluster, NatsServer, STOP_GRACE};

fn with_msg_id(id: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(NATS_MESSAGE_ID, id);
    h
}

/// Whether a process runs: it has a /proc entry and is not a zombie waiting to be reaped.
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Polls `f` until it holds or `limit` passes.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_deduplicates_by_msg_id_and_keeps_a_file_stream_across_a_restart() {
    let mut server = NatsServer::start().expect("nats-server starts");
    let js = jetstream::new(async_nats::connect(server.url()).await.expect("connects"));
    js.create_stream(stream::Config {
        name: "HARNESS".into(),
        subjects: vec!["harness.>".into()],
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .expect("stream created");

    // Ten publishes; the eighth repeats the third's id.
    let ids = ["m0", "m1", "m2", "m3", "m4", "m5", "m6", "m2", "m7", "m8"];
    let mut acks: Vec<PublishAck> = Vec::new();
    for (k, id) in ids.iter().enumerate() {
        let ack: PublishAckFuture = js
            .publish_with_headers(
                format!("harness.{k}"),
                with_msg_id(id),
                format!("payload {k}").into(),
            )
            .await
            .expect("published");
        acks.push(ack.await.expect("acknowledged"));
    }
    let duplicates: Vec<usize> = (0..acks.len()).filter(|&k| acks[k].duplicate).collect();
    assert_eq!(
        duplicates,
        [7],
        "only the repeated id is a duplicate: {acks:?}"
    );
    let sequences: Vec<u64> = acks
        .iter()
        .filter(|a| !a.duplicate)
        .map(|a| a.sequence)
        .collect();
    assert_eq!(sequences, (1..=9).collect::<Vec<u64>>());
    let info = js
        .get_stream("HARNESS")
        .await
        .expect("stream")
        .get_info()
        .await
        .expect("info");
    assert_eq!(info.state.messages, 9);

    let before = server.pid().expect("running");
    server.restart().expect("nats-server restarts");
    let after = server.pid().expect("running again");
    assert_ne!(before, after, "restart starts a new process");
    assert!(!running(before), "the old nats-server {before} still runs");

    let js = jetstream::new(async_nats::connect(server.url()).await.expect("reconnects"));
    let stream = js.get_stream("HARNESS").await.expect("the stream survived");
    let info = stream.get_info().await.expect("info");
    assert_eq!((info.state.messages, info.state.last_sequence), (9, 9));
    // Each stored message is the first publish with its id, in order.
    let kept = (0..ids.len()).filter(|&k| k != 7);
    for (seq, k) in (1..=9u64).zip(kept) {
        let m = stream.get_raw_message(seq).await.expect("stored message");
        assert_eq!(m.subject.as_str(), format!("harness.{k}"));
        assert_eq!(&m.payload[..], format!("payload {k}").as_bytes());
        assert_eq!(
            m.headers.get(NATS_MESSAGE_ID).map(|v| v.as_str()),
            Some(ids[k])
        );
    }
    // Deduplication state survives the restart too.
    let again = js
        .publish_with_headers("harness.again", with_msg_id("m5"), "again".into())
        .await
        .expect("published")
        .await
        .expect("acknowledged");
    assert!(
        again.duplicate,
        "an id seen before the restart is a duplicate after it: {again:?}"
    );
    assert_eq!(stream.get_info().await.expect("info").state.messages, 9);
}

/// Publishes (same id on every try, so a retry cannot store twice) until acknowledged.
async fn publish_until_acked(
    js: &jetstream::Context,
    subject: &str,
    id: &str,
    limit: Duration,
) -> PublishAck {
    let deadline = Instant::now() + limit;
    loop {
        let attempt = async {
            js.publish_with_headers(subject.to_owned(), with_msg_id(id), id.to_owned().into())
                .await?
                .await
                .map_err(anyhow::Error::from)
        };
        match attempt.await {
            Ok(ack) => return ack,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "{subject} not acknowledged within {limit:?}: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_member_cluster_acknowledges_with_the_stream_leader_down() {
    let started = Instant::now();
    let mut cluster = NatsCluster::start(3).expect("nats cluster starts");
    let ready = started.elapsed();
    for i in 0..3 {
        assert!(
            cluster.meta_leader(i).is_some(),
            "n{i} knows no meta leader"
        );
    }
    let client = async_nats::ConnectOptions::new()
        .connect(cluster.urls())
        .await
        .expect("connects");
    let mut js = jetstream::new(client);
    // Placing a three-replica stream takes a meta-leader round and three stores; on a
    // loaded 2-core machine that passed 2 s.
    js.set_timeout(Duration::from_secs(20));
    let stream = js
        .create_stream(stream::Config {
            name: "HARNESS3".into(),
            subjects: vec!["harness3.>".into()],
            storage: stream::StorageType::File,
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .expect("replicated stream created");
    // Short, so a publish lost in a failover is retried soon.
    js.set_timeout(Duration::from_secs(2));
    let first = publish_until_acked(&js, "harness3.a", "a", Duration::from_secs(5)).await;
    assert_eq!((first.sequence, first.duplicate), (1, false));

    let info = stream.get_info().await.expect("info");
    let cluster_info = info
        .cluster
        .expect("a replicated stream reports its cluster");
    assert_eq!(
        cluster_info.replicas.len(),
        2,
        "two followers: {cluster_info:?}"
    );
    let leader = cluster_info.leader.expect("a stream leader");
    let down = cluster.index_of(&leader).expect("the leader is a member");
    let stopping = Instant::now();
    cluster.stop_one(down);
    let stopped = stopping.elapsed();
    assert!(
        stopped < STOP_GRACE,
        "SIGTERM did not stop {leader} (took {stopped:?})"
    );

    let failing_over = Instant::now();
    let second = publish_until_acked(&js, "harness3.b", "b", Duration::from_secs(10)).await;
    let failover = failing_over.elapsed();
    assert_eq!(second.sequence, 2, "{second:?}");
    let info = stream.get_info().await.expect("info");
    assert_eq!(info.state.messages, 2);
    let new_leader = info
        .cluster
        .and_then(|c| c.leader)
        .expect("a new stream leader");
    assert_ne!(new_leader, leader);

    let restarting = Instant::now();
    cluster.restart_one(down).expect("the member restarts");
    let restarted = restarting.elapsed();
    assert!(cluster.pid(down).is_some());

    // A crash (SIGKILL) of the new leader: no leadership handover, the others elect one.
    let crashed = cluster
        .index_of(&new_leader)
        .expect("the leader is a member");
    cluster.kill_one(crashed);
    let electing = Instant::now();
    let third = publish_until_acked(&js, "harness3.c", "c", Duration::from_secs(15)).await;
    let election = electing.elapsed();
    assert_eq!(third.sequence, 3, "{third:?}");
    assert_eq!(stream.get_info().await.expect("info").state.messages, 3);
    eprintln!(
        "cluster ready in {ready:?}; {leader} stopped in {stopped:?}; acknowledged again after \
         {failover:?}; restarted in {restarted:?}; acknowledged {election:?} after {new_leader} crashed"
    );
}

#[test]
fn stop_kill_and_drop_leave_no_server_running() {
    let mut server = NatsServer::start().expect("nats-server starts");
    let port = server.port();
    let first = server.pid().expect("running");
    assert!(running(first) && port_open(port));

    let stopping = Instant::now();
    server.stop();
    assert!(
        stopping.elapsed() < STOP_GRACE,
        "SIGTERM did not stop the server: it took {:?}",
        stopping.elapsed()
    );
    assert!(!running(first), "stop left nats-server {first} running");
    assert!(!port_open(port) && !server.is_running() && server.pid().is_none());
    server.stop(); // stopping a stopped server does nothing

    server.restart().expect("restarts after stop");
    assert_eq!(server.port(), port);
    let second = server.pid().expect("running");
    assert!(running(second) && port_open(port));
    server.kill();
    assert!(!running(second), "kill left nats-server {second} running");
    assert!(!port_open(port));

    server.restart().expect("restarts after kill");
    let third = server.pid().expect("running");
    let store = server.store_dir();
    assert!(
        store.join("jetstream").is_dir(),
        "no JetStream store in {}",
        store.display()
    );
    drop(server);
    assert!(!running(third), "drop left nats-server {third} running");
    assert!(!store.exists(), "drop left the store {}", store.display());
}

#[test]
fn a_killed_test_process_leaves_no_server_running() {
    // A process holding a server the way a test does (`tests/src/bin/hold-nats-server.rs`).
    let mut helper = Command::new(env!("CARGO_BIN_EXE_hold-nats-server"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("helper starts");
    let out = BufReader::new(helper.stdout.take().expect("stdout"));
    let mut server = None;
    for line in out.lines() {
        let line = line.expect("helper output");
        if let Some(rest) = line.strip_prefix("NATS-SERVER ") {
            let mut parts = rest
                .split_whitespace()
                .map(|s| s.parse::<u32>().expect("number"));
            server = parts.next().zip(parts.next());
            break;
        }
    }
    let Some((pid, port)) = server else {
        let _ = helper.kill();
        panic!("the helper never reported its server: {:?}", helper.wait());
    };
    let port = u16::try_from(port).expect("port");
    assert!(running(pid) && port_open(port));
    // SIGKILL: no destructor runs in the helper.
    helper.kill().expect("helper killed");
    helper.wait().expect("helper reaped");
    assert!(
        eventually(Duration::from_secs(5), || !running(pid)),
        "nats-server {pid} outlived the killed test process"
    );
    assert!(!port_open(port));
}
