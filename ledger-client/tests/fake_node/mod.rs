//! A scripted ledger.v1 server on a loopback port, standing in for the node until
//! ledger-node exists (then `tests/` runs the client against the real binary). It answers
//! from a [`Script`] and records what it saw (authorization headers, request ids).

#![allow(dead_code)] // each test binary uses a different part

use proto::v1 as pb;
use proto::v1::ledger_service_server::{LedgerService, LedgerServiceServer};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tonic::{Code, Request, Response, Status};

/// What the scripted node does and what it saw.
#[derive(Default)]
pub struct Script {
    /// Answer this many appends with UNAVAILABLE before storing.
    pub unavailable_first: usize,
    /// Refuse every append with this status.
    pub refuse: Option<Status>,
    /// Never answer `GetNodeInfo`.
    pub hang: bool,
    pub export_chunks: Vec<Vec<u8>>,
    pub export_total: u64,
    pub events: Vec<pb::Event>,
    pub watch_positions: Vec<u64>,
    pub seen_auth: Vec<String>,
    pub seen_request_ids: Vec<String>,
    /// Request ids stored, to answer a repeat with the original receipt.
    pub stored: HashSet<String>,
    /// (authorization, site_id) of every stored append, in order.
    pub stored_as: Vec<(String, String)>,
}

#[derive(Clone, Default)]
pub struct Fake(pub Arc<Mutex<Script>>);

impl Fake {
    fn saw<T>(&self, req: &Request<T>) {
        let auth = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("<none>")
            .to_owned();
        self.0.lock().expect("script lock").seen_auth.push(auth);
    }
}

pub fn receipt(request_id: &str) -> pb::AppendReceipt {
    pb::AppendReceipt {
        event_id: hex::encode(ledger_core::crypto::sha256(request_id.as_bytes())),
        site_id: "clinic-a".into(),
        seq: 1,
        recorded_time: Some(prost_types::Timestamp {
            seconds: 1_772_438_400,
            nanos: 0,
        }),
        duplicate: false,
    }
}

type Chunks = tokio_stream::Iter<std::vec::IntoIter<Result<pb::ExportChainResponse, Status>>>;
type Watched = tokio_stream::Iter<std::vec::IntoIter<Result<pb::WatchChainResponse, Status>>>;

#[tonic::async_trait]
impl LedgerService for Fake {
    async fn append(
        &self,
        req: Request<pb::AppendRequest>,
    ) -> Result<Response<pb::AppendResponse>, Status> {
        self.saw(&req);
        let mut s = self.0.lock().expect("script lock");
        let id = req.get_ref().request_id.clone();
        s.seen_request_ids.push(id.clone());
        if let Some(status) = &s.refuse {
            return Err(status.clone());
        }
        if s.unavailable_first > 0 {
            s.unavailable_first -= 1;
            return Err(Status::unavailable("committer busy"));
        }
        let duplicate = !s.stored.insert(id.clone());
        if !duplicate {
            let auth = s.seen_auth.last().cloned().unwrap_or_default();
            let site = req.get_ref().site_id.clone();
            s.stored_as.push((auth, site));
        }
        Ok(Response::new(pb::AppendResponse {
            receipt: Some(pb::AppendReceipt {
                site_id: req.get_ref().site_id.clone(),
                duplicate,
                ..receipt(&id)
            }),
        }))
    }

    async fn append_batch(
        &self,
        req: Request<pb::AppendBatchRequest>,
    ) -> Result<Response<pb::AppendBatchResponse>, Status> {
        self.saw(&req);
        let results = req
            .get_ref()
            .requests
            .iter()
            .map(|r| pb::AppendBatchResult {
                result: Some(if r.site_id == "clinic-a" {
                    pb::append_batch_result::Result::Receipt(receipt(&r.request_id))
                } else {
                    pb::append_batch_result::Result::Error(pb::AppendError {
                        code: Code::PermissionDenied as i32,
                        message: format!("this token may not append as {}", r.site_id),
                    })
                }),
            })
            .collect();
        Ok(Response::new(pb::AppendBatchResponse { results }))
    }

    async fn get_chain(
        &self,
        req: Request<pb::GetChainRequest>,
    ) -> Result<Response<pb::GetChainResponse>, Status> {
        self.saw(&req);
        // Two events per page, so `chain` has to follow page tokens.
        let s = self.0.lock().expect("script lock");
        let from: usize = req.get_ref().page_token.parse().unwrap_or(0);
        let to = (from + 2).min(s.events.len());
        Ok(Response::new(pb::GetChainResponse {
            events: s.events[from..to].to_vec(),
            next_page_token: if to < s.events.len() {
                to.to_string()
            } else {
                String::new()
            },
        }))
    }

    async fn verify_chain(
        &self,
        req: Request<pb::VerifyChainRequest>,
    ) -> Result<Response<pb::VerifyChainResponse>, Status> {
        self.saw(&req);
        Err(Status::not_found(format!(
            "chain {} has no events on this node",
            req.get_ref().coi
        )))
    }

    type ExportChainStream = Chunks;

    async fn export_chain(
        &self,
        req: Request<pb::ExportChainRequest>,
    ) -> Result<Response<Chunks>, Status> {
        self.saw(&req);
        let s = self.0.lock().expect("script lock");
        let chunks: Vec<_> = s
            .export_chunks
            .iter()
            .map(|c| {
                Ok(pb::ExportChainResponse {
                    chunk: c.clone(),
                    total_bytes: s.export_total,
                })
            })
            .collect();
        Ok(Response::new(tokio_stream::iter(chunks)))
    }

    type WatchChainStream = Watched;

    async fn watch_chain(
        &self,
        req: Request<pb::WatchChainRequest>,
    ) -> Result<Response<Watched>, Status> {
        self.saw(&req);
        let s = self.0.lock().expect("script lock");
        let items: Vec<_> = s
            .watch_positions
            .iter()
            .map(|p| {
                Ok(pb::WatchChainResponse {
                    event: Some(s.events[0].clone()),
                    position: *p,
                })
            })
            .collect();
        Ok(Response::new(tokio_stream::iter(items)))
    }

    async fn list_chains(
        &self,
        req: Request<pb::ListChainsRequest>,
    ) -> Result<Response<pb::ListChainsResponse>, Status> {
        self.saw(&req);
        Ok(Response::new(pb::ListChainsResponse {
            chains: vec![pb::ChainSummary {
                coi: "CHA999926ABC123".into(),
                status: pb::ChainStatus::InTransit as i32,
                custodian_site_ids: vec!["depot-1".into()],
                next_stability_deadline: None,
                event_count: 5,
                open_finding_count: 0,
                last_event_time: None,
                flagged_unit_count: 1,
                ..pb::ChainSummary::default()
            }],
            next_page_token: "p2".into(),
        }))
    }

    async fn list_alerts(
        &self,
        req: Request<pb::ListAlertsRequest>,
    ) -> Result<Response<pb::ListAlertsResponse>, Status> {
        self.saw(&req);
        Ok(Response::new(pb::ListAlertsResponse::default()))
    }

    type WatchAlertsStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<pb::WatchAlertsResponse, Status>>>;

    async fn watch_alerts(
        &self,
        req: Request<pb::WatchAlertsRequest>,
    ) -> Result<Response<Self::WatchAlertsStream>, Status> {
        self.saw(&req);
        Ok(Response::new(tokio_stream::iter(Vec::new())))
    }

    type SubscribeStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<pb::SubscribeResponse, Status>>>;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        self.saw(&req);
        Ok(Response::new(tokio_stream::iter(Vec::new())))
    }

    async fn get_kpis(
        &self,
        req: Request<pb::GetKpisRequest>,
    ) -> Result<Response<pb::GetKpisResponse>, Status> {
        self.saw(&req);
        Err(Status::unimplemented("the scripted node computes no KPIs"))
    }

    async fn get_node_info(
        &self,
        req: Request<pb::GetNodeInfoRequest>,
    ) -> Result<Response<pb::GetNodeInfoResponse>, Status> {
        self.saw(&req);
        if self.0.lock().expect("script lock").hang {
            std::future::pending::<()>().await;
        }
        Ok(Response::new(pb::GetNodeInfoResponse {
            network_id: "fixture-net".into(),
            anchor_fingerprint: "ab12".into(),
            sites: vec![pb::SiteInfo {
                site_id: "clinic-a".into(),
                role: "clinic".into(),
                public_key: "cd".repeat(32),
                feed_seq: 0,
                feed_head_event_id: String::new(),
            }],
            version: "0.0.0".into(),
            event_count: 0,
        }))
    }
}

/// Serves `fake` on a free loopback port; the server task ends with the test's runtime.
pub async fn serve(fake: Fake) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(LedgerServiceServer::new(fake))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}
