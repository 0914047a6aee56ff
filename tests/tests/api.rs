//! The node's gRPC API as a client sees it, against the real `ledger-node` binary: every
//! kind of bad input gets its precise status code and a message naming what was wrong, and
//! nothing is written; a retried request id returns the original receipt (also when it
//! races the index); reads answer NOT_FOUND for unknown chains. Uses the generated client directly, so it checks the wire
//! contract rather than our client library.

use proto::v1 as pb;
use proto::v1::ledger_service_client::LedgerServiceClient;
use tests::Node;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request};

const COI: &str = "CHA999926ABC123";

fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

const T0: i64 = 1_772_438_400; // 2026-03-02T08:00:00Z

fn signer(meaning: pb::SignatureMeaning) -> Option<pb::Signer> {
    Some(pb::Signer {
        operator_id: "op.one".into(),
        printed_name: "Op One".into(),
        meaning: meaning as i32,
    })
}

fn req(id: &str, site: &str, at: i64, kind: pb::event_body::Kind) -> pb::AppendRequest {
    pb::AppendRequest {
        request_id: id.into(),
        site_id: site.into(),
        coi: COI.into(),
        occurred_time: ts(at),
        signer: signer(pb::SignatureMeaning::Performed),
        body: Some(pb::EventBody { kind: Some(kind) }),
    }
}

fn collection() -> pb::event_body::Kind {
    pb::event_body::Kind::Collection(pb::Collection {
        units: vec![pb::NewUnit {
            unit_id: "APH-1".into(),
            stability_deadline: ts(T0 + 72 * 3600),
            temp_min_centi_celsius: 200,
            temp_max_centi_celsius: 800,
        }],
        dins: vec!["A999926123456".into()],
    })
}

struct Api {
    client: LedgerServiceClient<Channel>,
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

    fn with_token<T>(msg: T, token: Option<&str>) -> Request<T> {
        let mut r = Request::new(msg);
        if let Some(t) = token {
            let v: MetadataValue<_> = format!("Bearer {t}").parse().expect("ascii token");
            r.metadata_mut().insert("authorization", v);
        }
        r
    }

    async fn append(
        &mut self,
        token: Option<&str>,
        r: pb::AppendRequest,
    ) -> Result<pb::AppendReceipt, tonic::Status> {
        self.client
            .append(Self::with_token(r, token))
            .await
            .map(|resp| resp.into_inner().receipt.expect("receipt"))
    }

    async fn event_count(&mut self, token: &str) -> u64 {
        self.client
            .get_node_info(Self::with_token(pb::GetNodeInfoRequest {}, Some(token)))
            .await
            .expect("node info")
            .into_inner()
            .event_count
    }
}

#[track_caller]
fn check(result: Result<pb::AppendReceipt, tonic::Status>, code: Code, words: &str) {
    match result {
        Ok(r) => panic!("expected {code:?} ({words}), got a receipt {r:?}"),
        Err(s) => {
            assert_eq!(s.code(), code, "message: {}", s.message());
            assert!(
                s.message().contains(words),
                "message '{}' lacks '{words}'",
                s.message()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_precise_status_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &[]).expect("node starts");
    let clinic = node.token("clinic-a").expect("token");
    let mfg = node.token("mfg-1").expect("token");
    let auditor = node.token("auditor").expect("token");
    let mut api = Api::connect(&node).await;

    // A good first event, then the same request id again: same event, flagged duplicate.
    let first = api
        .append(Some(&clinic), req("c-1", "clinic-a", T0, collection()))
        .await
        .expect("collection appended");
    assert_eq!(first.seq, 1);
    assert!(!first.duplicate);
    let again = api
        .append(Some(&clinic), req("c-1", "clinic-a", T0, collection()))
        .await
        .expect("retry answered");
    assert_eq!(again.event_id, first.event_id);
    assert!(again.duplicate);
    let n = api.event_count(&auditor).await;
    assert_eq!(n, 1);
    // The same request id for another event is refused, not answered with the first
    // receipt (that would drop this scan without a word).
    let other = req(
        "c-1",
        "clinic-a",
        T0 + 60,
        pb::event_body::Kind::Note(pb::Note {
            text: "another scan".into(),
        }),
    );
    check(
        api.append(Some(&clinic), other).await,
        Code::AlreadyExists,
        &format!(
            "request id c-1 was already used for another event (site clinic-a, seq 1, event {}",
            first.event_id
        ),
    );
    let mut later = req("c-1", "clinic-a", T0, collection());
    later.occurred_time = ts(T0 + 1);
    check(
        api.append(Some(&clinic), later).await,
        Code::AlreadyExists,
        "a new event needs a new request id",
    );
    assert_eq!(api.event_count(&auditor).await, 1);

    let note = |id: &str, site: &str| {
        req(
            id,
            site,
            T0 + 60,
            pb::event_body::Kind::Note(pb::Note { text: "x".into() }),
        )
    };

    // Authentication and permission.
    check(
        api.append(None, note("n-1", "clinic-a")).await,
        Code::Unauthenticated,
        "authorization",
    );
    check(
        api.append(Some("not-a-real-token"), note("n-2", "clinic-a"))
            .await,
        Code::Unauthenticated,
        "unknown token",
    );
    check(
        api.append(Some(&mfg), note("n-3", "clinic-a")).await,
        Code::PermissionDenied,
        "may not append as site clinic-a",
    );
    check(
        api.append(Some(&auditor), note("n-4", "clinic-a")).await,
        Code::PermissionDenied,
        "may read but not append",
    );

    // Malformed fields.
    let mut r = note("n-5", "clinic-a");
    r.coi = "CHA999926ABC12".into();
    check(
        api.append(Some(&clinic), r).await,
        Code::InvalidArgument,
        "coi",
    );
    let mut r = note("n-6", "clinic-a");
    r.signer = Some(pb::Signer {
        operator_id: "op".into(),
        printed_name: "Op".into(),
        meaning: 17,
    });
    check(
        api.append(Some(&clinic), r).await,
        Code::InvalidArgument,
        "signer.meaning: 17 is not a known signature meaning",
    );
    let mut r = note("n-7", "clinic-a");
    r.body = None;
    check(
        api.append(Some(&clinic), r).await,
        Code::InvalidArgument,
        "body",
    );
    let mut r = note("bad id with spaces", "clinic-a");
    r.occurred_time = ts(T0);
    check(
        api.append(Some(&clinic), r).await,
        Code::InvalidArgument,
        "request_id",
    );
    let r = req(
        "n-8",
        "clinic-a",
        T0,
        pb::event_body::Kind::Note(pb::Note {
            text: "x".repeat(5000),
        }),
    );
    check(
        api.append(Some(&clinic), r).await,
        Code::InvalidArgument,
        "more than 1024",
    );
    let r = req(
        "n-9",
        "clinic-a",
        T0,
        pb::event_body::Kind::Store(pb::Store {
            unit_id: "APH 1".into(),
            location: "f".into(),
        }),
    );
    check(
        api.append(Some(&clinic), r).await,
        Code::InvalidArgument,
        "body.store.unit_id",
    );

    // Text that would show an auditor's terminal something else than what was signed.
    let mut r = note("n-12", "clinic-a");
    r.signer = Some(pb::Signer {
        operator_id: "op".into(),
        printed_name: "K. Kim\u{1b}[2K\r\u{1b}[32mINTACT\u{1b}[0m".into(),
        meaning: pb::SignatureMeaning::Performed as i32,
    });
    check(
        api.append(Some(&clinic), r).await,
        Code::InvalidArgument,
        "signer.printed_name: holds the character U+001B; free text may hold no control characters",
    );
    let r = req(
        "n-13",
        "clinic-a",
        T0,
        pb::event_body::Kind::Note(pb::Note {
            text: "rtl\u{202e}gnp.exe".into(),
        }),
    );
    check(
        api.append(Some(&clinic), r).await,
        Code::InvalidArgument,
        "body.note.text: holds the character U+202E",
    );

    // A collection whose bag would be expired when it is collected (the deadline typed
    // in another time zone): one second before the scan.
    let mut expired = req("n-14", "clinic-a", T0, collection());
    if let Some(pb::EventBody {
        kind: Some(pb::event_body::Kind::Collection(c)),
    }) = expired.body.as_mut()
    {
        c.units[0].stability_deadline = ts(T0 - 1);
    }
    check(
        api.append(Some(&clinic), expired).await,
        Code::InvalidArgument,
        "body.collection.units[0].stability_deadline: 2026-03-02T07:59:59Z is not after occurred_time 2026-03-02T08:00:00Z: unit APH-1 would be expired when it is created",
    );

    // A scan from the future (the scanner's clock is wrong).
    let r = req(
        "n-11",
        "clinic-a",
        T0 + 10 * 365 * 86_400,
        pb::event_body::Kind::Note(pb::Note { text: "x".into() }),
    );
    check(
        api.append(Some(&clinic), r).await,
        Code::InvalidArgument,
        "cannot be recorded before it happens",
    );

    // Oversized request message.
    let r = req(
        "n-10",
        "clinic-a",
        T0,
        pb::event_body::Kind::Note(pb::Note {
            text: "x".repeat(5 * 1024 * 1024),
        }),
    );
    check(
        api.append(Some(&clinic), r).await,
        Code::ResourceExhausted,
        "",
    );

    // Appends that would break the chain.
    let r = req(
        "b-1",
        "mfg-1",
        T0 + 3600,
        pb::event_body::Kind::Receipt(pb::Receipt {
            shipper_id: "SHP-1".into(),
            from_site_id: "clinic-a".into(),
            seal_intact: true,
            scanned_coi: COI.into(),
        }),
    );
    check(
        api.append(Some(&mfg), r).await,
        Code::FailedPrecondition,
        "custody.receipt_without_dispatch",
    );
    let r = req(
        "b-2",
        "mfg-1",
        T0 + 3600,
        pb::event_body::Kind::Store(pb::Store {
            unit_id: "APH-1".into(),
            location: "fridge".into(),
        }),
    );
    check(
        api.append(Some(&mfg), r).await,
        Code::FailedPrecondition,
        "custody.not_custodian",
    );
    let mut r = req(
        "b-3",
        "clinic-a",
        T0 + 3600,
        pb::event_body::Kind::QcRelease(pb::QcRelease {
            unit_ids: vec!["APH-1".into()],
        }),
    );
    r.signer = signer(pb::SignatureMeaning::Approved);
    check(
        api.append(Some(&clinic), r).await,
        Code::FailedPrecondition,
        "authority.role_not_permitted",
    );
    let mut r = note("b-4", "clinic-a");
    r.coi = "CHB123426XK0001".into();
    check(
        api.append(Some(&clinic), r).await,
        Code::FailedPrecondition,
        "does not exist yet",
    );
    let r = req(
        "b-5",
        "clinic-a",
        T0 + 60,
        pb::event_body::Kind::Store(pb::Store {
            unit_id: "BAG-9".into(),
            location: "fridge".into(),
        }),
    );
    check(
        api.append(Some(&clinic), r).await,
        Code::FailedPrecondition,
        "identity.unit_without_provenance",
    );

    // Nothing above was written; the chain is still one intact event.
    assert_eq!(api.event_count(&auditor).await, 1);
    let v = api
        .client
        .verify_chain(Api::with_token(
            pb::VerifyChainRequest { coi: COI.into() },
            Some(&auditor),
        ))
        .await
        .expect("verify")
        .into_inner();
    assert_eq!(v.verdict, pb::Verdict::Intact as i32, "{:?}", v.findings);
    assert_eq!(v.event_count, 1);

    // An observation the chain must keep is recorded, not refused: a scan that did not match.
    let r = req(
        "lv-1",
        "clinic-a",
        T0 + 120,
        pb::event_body::Kind::LabelVerification(pb::LabelVerification {
            unit_id: "APH-1".into(),
            scanned_coi: "CHB123426XK0001".into(),
        }),
    );
    api.append(Some(&clinic), r)
        .await
        .expect("a mismatching scan is recorded");
    let v = api
        .client
        .verify_chain(Api::with_token(
            pb::VerifyChainRequest { coi: COI.into() },
            Some(&auditor),
        ))
        .await
        .expect("verify")
        .into_inner();
    assert_eq!(v.verdict, pb::Verdict::Broken as i32);
    assert_eq!(
        v.findings
            .iter()
            .map(|f| f.code.as_str())
            .collect::<Vec<_>>(),
        vec!["identity.coi_mismatch"]
    );

    // Reads of unknown chains.
    let e = api
        .client
        .get_chain(Api::with_token(
            pb::GetChainRequest {
                coi: "CHB123426XK0001".into(),
                ..Default::default()
            },
            Some(&auditor),
        ))
        .await
        .expect_err("unknown chain");
    assert_eq!(e.code(), Code::NotFound);
    let e = api
        .client
        .verify_chain(Api::with_token(
            pb::VerifyChainRequest {
                coi: "nonsense".into(),
            },
            Some(&auditor),
        ))
        .await
        .expect_err("bad coi");
    assert_eq!(e.code(), Code::InvalidArgument);

    // A batch from an unknown caller is refused for who is asking, whatever its size.
    for n in [0, 1001] {
        let batch = pb::AppendBatchRequest {
            requests: (0..n)
                .map(|i| note(&format!("u-{i}"), "clinic-a"))
                .collect(),
        };
        let e = api
            .client
            .append_batch(Api::with_token(batch, Some("not-a-real-token")))
            .await
            .expect_err("unknown caller");
        assert_eq!(
            e.code(),
            Code::Unauthenticated,
            "{n} requests: {}",
            e.message()
        );
    }
    let e = api
        .client
        .append_batch(Api::with_token(
            pb::AppendBatchRequest { requests: vec![] },
            Some(&clinic),
        ))
        .await
        .expect_err("empty batch");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "requests: is empty");

    // Watching from past the chain's end (two events now) says so instead of waiting.
    let watched = api
        .client
        .watch_chain(Api::with_token(
            pb::WatchChainRequest {
                coi: COI.into(),
                from_position: 3,
            },
            Some(&auditor),
        ))
        .await;
    let Err(e) = watched else {
        panic!("a position past the end must be refused, not watched");
    };
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.message(),
        format!(
            "from_position: 3 is beyond the end of chain {COI} (2 events); resume from at most 2"
        )
    );
    assert_eq!(api.event_count(&auditor).await, 2);
}

/// A client we did not write: `buf curl` finds the service through server reflection and
/// calls it with a token; the health service answers SERVING.
/// A retry looks its request id up in the store before the node takes its append lock, and
/// the index may take the original in between (out of the in-flight set, into the store):
/// whatever the moment, a retry gets the original receipt and nothing is appended twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_racing_the_index_get_the_original_receipt() {
    const WRITERS: usize = 8;
    const APPENDS: usize = 300;
    // Retry the append just answered, and ones answered a little and a while before.
    const BACK: [usize; 4] = [0, 1, 3, 20];
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &[]).expect("node starts");
    let clinic = node.token("clinic-a").expect("token");
    let auditor = node.token("auditor").expect("token");
    let mut api = Api::connect(&node).await;
    api.append(Some(&clinic), req("open", "clinic-a", T0, collection()))
        .await
        .expect("collection appended");
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut api = Api::connect(&node).await;
        let clinic = clinic.clone();
        writers.push(tokio::spawn(async move {
            let note = |k: usize| {
                req(
                    &format!("w{w}-{k}"),
                    "clinic-a",
                    T0 + 60,
                    pb::event_body::Kind::Note(pb::Note {
                        text: format!("{w}/{k}"),
                    }),
                )
            };
            let mut originals: Vec<pb::AppendReceipt> = Vec::with_capacity(APPENDS);
            for k in 0..APPENDS {
                let first = api
                    .append(Some(&clinic), note(k))
                    .await
                    .unwrap_or_else(|s| panic!("w{w}-{k}: {s:?}"));
                assert!(!first.duplicate, "w{w}-{k} first send: {first:?}");
                originals.push(first);
                for back in BACK.into_iter().filter(|&b| b <= k) {
                    let again = api
                        .append(Some(&clinic), note(k - back))
                        .await
                        .unwrap_or_else(|s| panic!("retry of w{w}-{}: {s:?}", k - back));
                    let original = &originals[k - back];
                    assert!(
                        again.duplicate
                            && again.event_id == original.event_id
                            && again.seq == original.seq,
                        "retry of w{w}-{} got {again:?}, the original was {original:?}",
                        k - back
                    );
                }
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer task");
    }
    assert_eq!(
        api.event_count(&auditor).await,
        1 + (WRITERS * APPENDS) as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buf_curl_reaches_the_api_through_reflection() {
    let buf =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/node_modules/.bin/buf");
    assert!(
        buf.exists(),
        "{} is missing: run scripts/setup (it installs buf with npm)",
        buf.display()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &[]).expect("node starts");
    let token = node.token("auditor").expect("token");
    let curl = |path: &str, body: &str| {
        let out = std::process::Command::new(&buf)
            .args([
                "curl",
                "--protocol",
                "grpc",
                "--http2-prior-knowledge",
                "-H",
            ])
            .arg(format!("authorization: Bearer {token}"))
            .args(["-d", body])
            .arg(format!("{}/{path}", node.addr))
            .output()
            .expect("run buf curl");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = curl("ledger.v1.LedgerService/GetNodeInfo", "{}");
    assert_eq!(code, Some(0), "{err}");
    let info: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(info["networkId"], "dev-net");
    assert_eq!(info["sites"].as_array().map(Vec::len), Some(6));
    let (code, _, err) = curl(
        "ledger.v1.LedgerService/VerifyChain",
        r#"{"coi":"CHA999926ABC123"}"#,
    );
    assert_ne!(code, Some(0));
    assert!(err.contains("not_found"), "{err}");
    let (code, out, err) = curl("grpc.health.v1.Health/Check", r#"{"service":""}"#);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("SERVING"), "{out}");
}

/// The per-token rate limit refuses what goes over it with RESOURCE_EXHAUSTED, and a
/// refused append writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_refuses_with_resource_exhausted_and_writes_nothing() {
    // Sent as fast as one client can, until five are refused (at most this many).
    const SENT_MAX: usize = 400;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        "[limits]\nappend_batch_max = 10\ncalls_per_second_per_token = 10\n",
    )
    .expect("config");
    let data = dir.path().join("data");
    let node = Node::start(&data, &["--config", config.to_str().expect("utf-8 path")])
        .expect("node starts");
    let clinic = node.token("clinic-a").expect("token");
    let auditor = node.token("auditor").expect("token");
    let mut api = Api::connect(&node).await;
    let mut ok = 0u64;
    let mut refused = 0;
    let started = std::time::Instant::now();
    let mut sent = 0;
    while refused < 5 && sent < SENT_MAX {
        let i = sent;
        sent += 1;
        let r = if i == 0 {
            req("c-1", "clinic-a", T0, collection())
        } else {
            req(
                &format!("n-{i}"),
                "clinic-a",
                T0 + 60,
                pb::event_body::Kind::Note(pb::Note { text: "x".into() }),
            )
        };
        match api.append(Some(&clinic), r).await {
            Ok(_) => ok += 1,
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted, "{}", s.message());
                assert_eq!(
                    s.message(),
                    "rate limit for site clinic-a exceeded; slow down and retry"
                );
                refused += 1;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // A full bucket of 10, and 10 more per second since.
    assert!(
        ok >= 10 && ok as f64 <= 10.0 + 10.0 * elapsed + 1.0,
        "{ok} accepted in {elapsed:.2} s"
    );
    assert_eq!(refused, 5, "{sent} sent, {ok} accepted in {elapsed:.2} s");
    assert_eq!(ok as usize + refused, sent);
    // The auditor's token has its own bucket; only accepted appends were written.
    assert_eq!(api.event_count(&auditor).await, ok);
}

/// ListChains against the real node: pages cover every chain once, the status filter keeps
/// only matching chains, and a token not from a previous page is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_chains_pages_and_filters() {
    const COIS: [&str; 3] = ["CHA999926ABC123", "CHA999926ABC124", "CHA999926ABC125"];
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &[]).expect("node starts");
    let clinic = node.token("clinic-a").expect("token");
    let auditor = node.token("auditor").expect("token");
    let mut api = Api::connect(&node).await;
    for (k, coi) in COIS.iter().enumerate() {
        let mut r = req(
            &format!("c-{k}"),
            "clinic-a",
            T0,
            pb::event_body::Kind::Collection(pb::Collection {
                units: vec![pb::NewUnit {
                    unit_id: format!("APH-{k}"),
                    stability_deadline: ts(T0 + 72 * 3600),
                    temp_min_centi_celsius: 200,
                    temp_max_centi_celsius: 800,
                }],
                dins: vec![],
            }),
        );
        r.coi = (*coi).into();
        api.append(Some(&clinic), r).await.expect("collection");
    }
    let list = |status: pb::ChainStatus, page_size: i32, page_token: String| {
        let mut client = api.client.clone();
        let request = Api::with_token(
            pb::ListChainsRequest {
                status: status as i32,
                page_size,
                page_token,
                ..pb::ListChainsRequest::default()
            },
            Some(&auditor),
        );
        async move { client.list_chains(request).await.map(|r| r.into_inner()) }
    };
    let first = list(pb::ChainStatus::Unspecified, 2, String::new())
        .await
        .expect("first page");
    assert_eq!(first.chains.len(), 2);
    assert!(!first.next_page_token.is_empty());
    let second = list(
        pb::ChainStatus::Unspecified,
        2,
        first.next_page_token.clone(),
    )
    .await
    .expect("second page");
    assert_eq!(second.chains.len(), 1);
    assert_eq!(second.next_page_token, "");
    let mut seen: Vec<&str> = first
        .chains
        .iter()
        .chain(&second.chains)
        .map(|c| c.coi.as_str())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, COIS);
    for c in first.chains.iter().chain(&second.chains) {
        assert_eq!(c.status, pb::ChainStatus::Collected as i32, "{c:?}");
        assert_eq!(c.custodian_site_ids, vec!["clinic-a".to_owned()], "{c:?}");
        assert_eq!(c.event_count, 1);
        assert_eq!(c.next_stability_deadline, ts(T0 + 72 * 3600));
    }

    let collected = list(pb::ChainStatus::Collected, 0, String::new())
        .await
        .expect("collected");
    assert_eq!(collected.chains.len(), 3);
    let released = list(pb::ChainStatus::Released, 0, String::new())
        .await
        .expect("released");
    assert!(released.chains.is_empty(), "{released:?}");

    let e = list(pb::ChainStatus::Unspecified, 2, "not-a-token".into())
        .await
        .expect_err("bad token");
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
}
