//! `ledger replay JOURNEY.toml --tokens DIR`: appends a fixture journey's steps to a live
//! node, in order, each as the site that performs it.
//!
//! What a node cannot be told is left out and reported as a note: a step's `recorded` time
//! and `parents` (the node records its own time and links to the chain's heads), and the
//! journey's key rotations, revocations and checkpoints (the node's trust configuration).
//! What would forge evidence (`[[tamper]]`, a forced `seq`, `prev`, `network` or signing
//! `key`) makes the journey unreplayable.
//!
//! Step references (`excursion_disposition.condition`, `correction.target`) resolve to the
//! event ids of earlier receipts. Request ids derive from the journey name and step id, so
//! replaying again is answered with the original receipts and stores nothing new.
//!
//! Sans-IO: [`Replay`] plans and builds requests; [`Replay::run`] drives any append
//! function, the CLI's (a [`crate::client::Client`] per site) or a test's.

use crate::client::{self, derive_request_id, AppendReceipt};
use fixtures::build::{parse_time, step_body, step_signer};
use fixtures::journey::{JourneyFile, StepToml};
use fixtures::JourneyError;
use ledger_core::{Coi, EventId, SiteId, Timestamp};
use proto::convert::{body_to_wire, meaning_to_wire, timestamp_to_wire, AppendDraft};
use proto::v1 as pb;
use std::collections::{BTreeSet, HashMap};
use std::future::Future;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{0}")]
    Journey(#[from] JourneyError),
    #[error("cannot replay this journey: {reason}")]
    NotReplayable { reason: String },
    #[error("step '{step}': {source}")]
    Append {
        step: String,
        #[source]
        source: client::Error,
    },
}

fn not_replayable(reason: impl Into<String>) -> ReplayError {
    ReplayError::NotReplayable {
        reason: reason.into(),
    }
}

/// A journey ready to replay.
#[derive(Debug)]
pub struct Replay {
    name: String,
    coi: Coi,
    start: Timestamp,
    steps: Vec<StepToml>,
    notes: Vec<String>,
}

/// One replayed step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    pub step: String,
    pub request_id: String,
    pub receipt: AppendReceipt,
}

impl Replay {
    /// # Errors
    /// [`ReplayError::Journey`] for a file the journey builder would refuse,
    /// [`ReplayError::NotReplayable`] for one that forges evidence.
    pub fn parse(toml_text: &str) -> Result<Replay, ReplayError> {
        let file: JourneyFile = toml::from_str(toml_text).map_err(JourneyError::Toml)?;
        Replay::from_file(file)
    }

    /// Checks the whole journey before anything is sent: every step must build into a
    /// request the node would accept as well-formed, so a bad step 10 cannot leave a
    /// half-replayed chain behind.
    ///
    /// # Errors
    /// As [`Replay::parse`].
    pub fn from_file(file: JourneyFile) -> Result<Replay, ReplayError> {
        if !file.tamper.is_empty() {
            return Err(not_replayable(
                "it has [[tamper]] directives; replay the journeys in fixtures/journeys/valid",
            ));
        }
        let coi = Coi::parse(&file.coi)
            .map_err(|e| not_replayable(format!("coi '{}': {e}", file.coi)))?;
        let start = Timestamp::parse_rfc3339(&file.start).ok_or_else(|| {
            not_replayable("start must be an RFC 3339 UTC time like 2026-03-02T08:00:00Z")
        })?;
        let mut notes = Vec::new();
        if !file.key.is_empty() || !file.revocation.is_empty() || !file.checkpoint.is_empty() {
            notes.push(
                "the journey's [[key]], [[revocation]] and [[checkpoint]] entries are not \
                 replayed: keys and checkpoints are the node's own"
                    .to_owned(),
            );
        }
        let mut ids = BTreeSet::new();
        for s in &file.steps {
            let decided = super::step_file::node_decided(s);
            if let Some(d) = decided.iter().find(|d| d.set && !d.droppable) {
                return Err(not_replayable(format!(
                    "step '{}' forces '{}', which only a fixture builder can forge ({})",
                    s.id, d.key, d.why
                )));
            }
            if !ids.insert(s.id.as_str()) {
                return Err(not_replayable(format!(
                    "step id '{}' is used twice; step ids must be unique",
                    s.id
                )));
            }
            if !file.sites.contains_key(&s.site) {
                return Err(not_replayable(format!(
                    "step '{}': site '{}' is not in [sites]",
                    s.id, s.site
                )));
            }
            SiteId::parse(&s.site)
                .map_err(|e| not_replayable(format!("step '{}': site: {e}", s.id)))?;
            for d in decided.iter().filter(|d| d.set && d.droppable) {
                notes.push(format!(
                    "step '{}': '{}' is not replayed: {}",
                    s.id, d.key, d.why
                ));
            }
        }
        let replay = Replay {
            name: file.name,
            coi,
            start,
            steps: file.steps,
            notes,
        };
        replay.check_all()?;
        Ok(replay)
    }

    /// Builds every request with stand-in ids for earlier steps' events and runs the node's
    /// wire check on each.
    fn check_all(&self) -> Result<(), ReplayError> {
        let mut resolved = HashMap::new();
        for (step_idx, s) in self.steps.iter().enumerate() {
            let req = self.request(s, &resolved)?;
            AppendDraft::try_from(&req)
                .map_err(|e| not_replayable(format!("step '{}': {e}", s.id)))?;
            let stand_in = EventId(ledger_core::crypto::sha256(&step_idx.to_be_bytes()));
            resolved.insert(s.id.clone(), stand_in);
        }
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn coi(&self) -> &Coi {
        &self.coi
    }

    pub fn steps(&self) -> &[StepToml] {
        &self.steps
    }

    /// What of the journey is not replayed, for the user to read.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The sites that perform steps (each needs a token).
    pub fn sites(&self) -> BTreeSet<&str> {
        self.steps.iter().map(|s| s.site.as_str()).collect()
    }

    /// Moves the whole journey in time: offsets count from `start` instead of the file's
    /// `start`. A journey whose scans lie in the node's future would otherwise be recorded
    /// before it was scanned (`integrity.clock_backwards`).
    ///
    /// # Errors
    /// As [`Replay::parse`], for a start that moves a time out of range.
    pub fn with_start(mut self, start: Timestamp) -> Result<Replay, ReplayError> {
        self.start = start;
        self.check_all()?;
        Ok(self)
    }

    pub fn start(&self) -> Timestamp {
        self.start
    }

    /// The latest scan time of any step.
    pub fn last_scan_at(&self) -> Timestamp {
        self.steps
            .iter()
            .filter_map(|s| parse_time(self.start, &s.at))
            .max()
            .unwrap_or(self.start)
    }

    /// The step's request id: `replay-` and a hash of the journey name, its start and the
    /// step id. The same journey replayed from the same start gives the same ids, so the node
    /// answers with the original receipts; another start is another set of scans.
    pub fn request_id(&self, step: &StepToml) -> String {
        let start = self.start.to_string();
        derive_request_id(
            "replay",
            &[self.name.as_bytes(), start.as_bytes(), step.id.as_bytes()],
        )
    }

    /// The append request of one step; `resolved` maps earlier step ids to the event ids
    /// their receipts named.
    ///
    /// # Errors
    /// [`ReplayError::Journey`] naming the step, including a reference to a step that has
    /// no receipt yet.
    pub fn request(
        &self,
        step: &StepToml,
        resolved: &HashMap<String, EventId>,
    ) -> Result<pb::AppendRequest, ReplayError> {
        let place = format!("step '{}'", step.id);
        let at = parse_time(self.start, &step.at).ok_or_else(|| JourneyError::Invalid {
            place: place.clone(),
            reason: format!(
                "'{}' is neither an offset like +2h30m nor an RFC 3339 UTC time",
                step.at
            ),
        })?;
        let coi = match &step.coi {
            Some(c) => Coi::parse(c).map_err(|e| JourneyError::Invalid {
                place,
                reason: e.to_string(),
            })?,
            None => self.coi.clone(),
        };
        let signer = step_signer(step)?;
        let body = step_body(step, self.start, &self.coi, &|name| {
            resolved.get(name).copied()
        })?;
        Ok(pb::AppendRequest {
            request_id: self.request_id(step),
            site_id: step.site.clone(),
            coi: coi.to_string(),
            occurred_time: Some(timestamp_to_wire(at)),
            signer: Some(pb::Signer {
                operator_id: signer.operator.to_string(),
                printed_name: signer.printed_name,
                meaning: meaning_to_wire(signer.meaning) as i32,
            }),
            body: Some(body_to_wire(&body)),
        })
    }

    /// Appends every step in order through `append(site, request)`, calling `on_receipt`
    /// after each. Stops at the first failure.
    ///
    /// # Errors
    /// [`ReplayError::Append`] naming the step whose append failed.
    pub async fn run<F, Fut>(
        &self,
        mut append: F,
        mut on_receipt: impl FnMut(&Replayed),
    ) -> Result<Vec<Replayed>, ReplayError>
    where
        F: FnMut(String, pb::AppendRequest) -> Fut,
        Fut: Future<Output = Result<AppendReceipt, client::Error>>,
    {
        let mut resolved = HashMap::new();
        let mut done = Vec::with_capacity(self.steps.len());
        for step in &self.steps {
            let req = self.request(step, &resolved)?;
            let request_id = req.request_id.clone();
            let receipt =
                append(step.site.clone(), req)
                    .await
                    .map_err(|source| ReplayError::Append {
                        step: step.id.clone(),
                        source,
                    })?;
            resolved.insert(step.id.clone(), receipt.event_id);
            let replayed = Replayed {
                step: step.id.clone(),
                request_id,
                receipt,
            };
            on_receipt(&replayed);
            done.push(replayed);
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    //! Replays journeys against an in-memory stand-in that hands out receipts in order, to
    //! check ordering, reference resolution and idempotent request ids without a node.

    use super::*;
    use ledger_core::Seq;
    use std::cell::RefCell;

    fn journey(path: &str) -> Replay {
        let text = std::fs::read_to_string(fixtures::data_dir().join("journeys").join(path))
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        Replay::parse(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// A node stand-in: the event id is a hash of the request id, so a retry gets the same
    /// one; it records every (site, request) it was asked to append.
    #[derive(Default)]
    struct FakeNode {
        appended: RefCell<Vec<(String, pb::AppendRequest)>>,
        refuse_at: Option<usize>,
    }

    impl FakeNode {
        fn append(
            &self,
            site: String,
            req: pb::AppendRequest,
        ) -> impl Future<Output = Result<AppendReceipt, client::Error>> {
            let n = self.appended.borrow().len();
            let answer = if self.refuse_at == Some(n) {
                Err(client::Error::Rejected {
                    code: tonic::Code::FailedPrecondition,
                    message: "not the custodian".into(),
                })
            } else {
                Ok(AppendReceipt {
                    event_id: fake_id(&req.request_id),
                    site: SiteId::parse(&site).unwrap(),
                    seq: Seq(n as u64 + 1),
                    recorded_at: Timestamp(0),
                    duplicate: false,
                })
            };
            if answer.is_ok() {
                self.appended.borrow_mut().push((site, req));
            }
            std::future::ready(answer)
        }
    }

    fn fake_id(request_id: &str) -> EventId {
        EventId(ledger_core::crypto::sha256(request_id.as_bytes()))
    }

    fn block_on<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn replay(r: &Replay, node: &FakeNode) -> Result<Vec<Replayed>, ReplayError> {
        block_on(r.run(|site, req| node.append(site, req), |_| {}))
    }

    fn kind(req: &pb::AppendRequest) -> &pb::event_body::Kind {
        req.body.as_ref().unwrap().kind.as_ref().unwrap()
    }

    #[test]
    fn steps_go_in_order_each_as_its_site() {
        let r = journey("valid/excursion-disposed.toml");
        let node = FakeNode::default();
        let done = replay(&r, &node).unwrap();
        let appended = node.appended.borrow();
        let sent: Vec<(&str, &str)> = appended
            .iter()
            .zip(r.steps())
            .map(|((site, req), step)| {
                assert_eq!(req.request_id, r.request_id(step));
                (site.as_str(), step.id.as_str())
            })
            .collect();
        let expected: Vec<(&str, &str)> = r
            .steps()
            .iter()
            .map(|s| (s.site.as_str(), s.id.as_str()))
            .collect();
        assert_eq!(sent, expected);
        assert_eq!(done.len(), r.steps().len());
        assert_eq!(appended[0].1.coi, "CHD450126EX0031");
    }

    #[test]
    fn references_resolve_to_earlier_receipts() {
        let r = journey("valid/excursion-disposed.toml");
        let node = FakeNode::default();
        let done = replay(&r, &node).unwrap();
        let receipt_of = |step: &str| {
            done.iter()
                .find(|d| d.step == step)
                .unwrap()
                .receipt
                .event_id
        };
        let appended = node.appended.borrow();
        let disposition = appended
            .iter()
            .find_map(|(_, req)| match kind(req) {
                pb::event_body::Kind::ExcursionDisposition(d) => Some(d.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            disposition.condition_event_id,
            receipt_of("transit-log").to_hex()
        );

        let r = journey("valid/correction-and-notes.toml");
        let node = FakeNode::default();
        let done = replay(&r, &node).unwrap();
        let appended = node.appended.borrow();
        let correction = appended
            .iter()
            .find_map(|(_, req)| match kind(req) {
                pb::event_body::Kind::Correction(c) => Some(c.clone()),
                _ => None,
            })
            .unwrap();
        let cryostore = done.iter().find(|d| d.step == "cryostore").unwrap();
        assert_eq!(
            correction.target_event_id,
            cryostore.receipt.event_id.to_hex()
        );
    }

    #[test]
    fn a_reference_to_a_later_step_is_refused_before_anything_is_sent() {
        let text = std::fs::read_to_string(
            fixtures::data_dir().join("journeys/valid/correction-and-notes.toml"),
        )
        .unwrap()
        .replace("target = \"cryostore\"", "target = \"infuse\"");
        let e = Replay::parse(&text).unwrap_err();
        expect_test::expect!["step 'correct-location': target 'infuse' is not an earlier step"]
            .assert_eq(&e.to_string());
    }

    #[test]
    fn replaying_again_sends_the_same_request_ids() {
        let r = journey("valid/standard.toml");
        let (a, b) = (FakeNode::default(), FakeNode::default());
        let first = replay(&r, &a).unwrap();
        let second = replay(&r, &b).unwrap();
        assert_eq!(first, second);
        let ids: BTreeSet<&str> = first.iter().map(|d| d.request_id.as_str()).collect();
        assert_eq!(ids.len(), first.len(), "request ids must differ per step");
    }

    #[test]
    fn another_start_shifts_every_time_and_changes_the_request_ids() {
        let r = journey("valid/standard.toml");
        let start = r.start();
        let ids: Vec<String> = r.steps().iter().map(|s| r.request_id(s)).collect();
        let first = r.request(&r.steps()[0], &HashMap::new()).unwrap();
        let day = ledger_core::Millis(86_400_000);
        let r = r.with_start(start.minus(day)).unwrap();
        let moved = r.request(&r.steps()[0], &HashMap::new()).unwrap();
        let seconds = |req: &pb::AppendRequest| req.occurred_time.as_ref().unwrap().seconds;
        assert_eq!(seconds(&first) - seconds(&moved), 86_400);
        assert!(r
            .steps()
            .iter()
            .zip(&ids)
            .all(|(s, id)| &r.request_id(s) != id));
    }

    #[test]
    fn a_refused_step_stops_the_replay_and_names_the_step() {
        let r = journey("valid/standard.toml");
        let node = FakeNode {
            refuse_at: Some(2),
            ..FakeNode::default()
        };
        let e = replay(&r, &node).unwrap_err();
        expect_test::expect![
            "step 'pack': node refused the call (FAILED_PRECONDITION): not the custodian"
        ]
        .assert_eq(&e.to_string());
        assert_eq!(node.appended.borrow().len(), 2);
    }

    #[test]
    fn every_valid_journey_replays_into_well_formed_requests() {
        let dir = fixtures::data_dir().join("journeys/valid");
        let mut n_journeys = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let r = Replay::parse(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let node = FakeNode::default();
            replay(&r, &node).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for (_, req) in node.appended.borrow().iter() {
                AppendDraft::try_from(req).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
            n_journeys += 1;
        }
        assert!(n_journeys >= 12, "found only {n_journeys} journeys");
    }

    #[test]
    fn forged_evidence_cannot_be_replayed() {
        let broken = fixtures::data_dir().join("journeys/broken");
        for (file, expect) in [
            ("bad-signature.toml", expect_test::expect!["cannot replay this journey: it has [[tamper]] directives; replay the journeys in fixtures/journeys/valid"]),
            ("causal-cycle.toml", expect_test::expect!["cannot replay this journey: step 'bedside-check' forces 'seq', which only a fixture builder can forge (the node assigns the feed position)"]),
        ] {
            let text = std::fs::read_to_string(broken.join(file)).unwrap();
            let e = Replay::parse(&text).unwrap_err();
            expect.assert_eq(&e.to_string());
        }
    }

    #[test]
    fn what_is_not_replayed_is_noted() {
        let r = journey("valid/offline-clinic.toml");
        assert!(
            r.notes()
                .iter()
                .any(|n| n.contains("'recorded' is not replayed")),
            "{:?}",
            r.notes()
        );
    }
}
