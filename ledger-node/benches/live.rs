//! Figures of a node at work, as a reader of its worklist, its alerts and its event stream
//! sees them, each printed with its target and ok/MISSED:
//! `cargo bench -p ledger-node --bench live` (full run, a few minutes after the build), or
//! with `-- --quick` (or `BENCH_QUICK=1`) for smaller sizes while developing.
//!
//! 1. The worklist page with `LIVE_CHAINS` live COIs in the store (each chain a collection
//!    of one unit whose stability deadline lies 1 to 40 days ahead, in an order unrelated
//!    to the COI, then 29 more events by its custodian): `GET /` as the auditor (the page
//!    sorts every live chain by urgency and shows the first 200), time to the first byte
//!    and to the end of the page, and the node's RSS while it serves it; `ListChains`
//!    sorted by deadline, live chains only, first page of 100. Ceiling: `GET
//!    /static/app.css` on the same listener (no token, no ledger).
//! 2. Alert latency, on a `WatchAlerts` stream opened as the auditor: (a) a collection
//!    whose deadline is inside `deadline_near_ms`, appended one at a time, to its
//!    `deadline_near` raise (from the append's answer, and from its sending); (b)
//!    collections whose deadlines fall over the next ten seconds, from each deadline to its
//!    `deadline_overdue` raise. Ceiling: p50 of a bare gRPC health check round trip.
//! 3. Subscribe catch-up: a fresh node given `CATCHUP_EVENTS` events (AppendBatch of 1,000,
//!    several uploaders, chains of 100), stopped and started again; the rate at which it
//!    reads its own store at start (`events` / `seconds` of its "store opened" line) is the
//!    ceiling for `Subscribe` from position 0 as the auditor, counted to the last event.
//!
//! Figures 1 and 2 share one node (figure 2's chains are added after figure 1 is measured);
//! figure 3 has its own data directory. The node is the real binary built with the bench
//! profile (`CARGO_BIN_EXE_ledger-node`), as its own process, metrics off; its alert
//! thresholds come from a config file written here (`DEADLINE_NEAR_MS`,
//! `DEADLINE_IMMINENT_MS`). Clients and node share the machine's cores.
//!
//! Every append answer is checked: the chains are valid (a collection by a clinic, then
//! store, retrieve and notes by that clinic), so a refusal means the node is wrong, and the
//! benchmark stops.

mod common;
use common::dir_bytes;

use anyhow::{bail, ensure, Context};
use proto::v1 as pb;
use proto::v1::ledger_service_client::LedgerServiceClient;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::Request;

/// Figure 1: live chains, and events in each (a collection, then 29 by its custodian).
const LIVE_CHAINS: usize = 10_000;
const LIVE_CHAINS_QUICK: usize = 2_000;
const LIVE_CHAIN_EVENTS: usize = 30;
/// Stability deadlines of figure 1's chains: this far ahead at least, spread over the span.
const LIVE_DEADLINE_MIN: Duration = Duration::from_secs(86_400);
const LIVE_DEADLINE_SPAN_S: u64 = 39 * 86_400;
/// Rows the worklist page shows (`WORKLIST_PAGE` in the web module).
const WORKLIST_ROWS: usize = 200;
/// Timed page loads and ListChains calls, after a few untimed ones.
const PAGE_REQUESTS: usize = 30;
const LIST_REQUESTS: usize = 30;
const WARMUP_REQUESTS: usize = 3;
const LIST_PAGE_SIZE: i32 = 100;
/// Idle time after an upload before a measurement: the alert engine judges the new chains
/// and the allocator returns the pages freed by the upload.
const SETTLE: Duration = Duration::from_secs(5);

/// The node's alert thresholds (written to its config file).
const DEADLINE_NEAR_MS: u64 = 3_600_000;
const DEADLINE_IMMINENT_MS: u64 = 600_000;
/// Figure 2(a): collections appended one at a time, deadline this far ahead (near, not
/// imminent).
const NEAR_APPENDS: usize = 200;
const NEAR_APPENDS_QUICK: usize = 50;
const NEAR_DEADLINE_AHEAD: Duration = Duration::from_secs(1800);
/// Figure 2(b): collections whose deadlines fall between FIRST and FIRST + SPAN from now.
const CROSSINGS: usize = 100;
const CROSSINGS_QUICK: usize = 30;
const CROSSING_FIRST: Duration = Duration::from_secs(2);
const CROSSING_SPAN: Duration = Duration::from_secs(8);
/// An alert later than this is counted as missing.
const ALERT_WAIT: Duration = Duration::from_secs(10);

/// Figure 3: events in the store, chains of 100, uploaded by several clients.
const CATCHUP_EVENTS: usize = 1_000_000;
const CATCHUP_EVENTS_QUICK: usize = 200_000;
const CATCHUP_CHAIN_EVENTS: usize = 100;
const UPLOADERS: usize = 8;
/// The node's largest AppendBatch (config default).
const APPEND_BATCH_MAX: usize = 1000;

/// Health checks for the round-trip ceiling, after a warm-up.
const ROUND_TRIPS: usize = 1000;
const ROUND_TRIPS_WARMUP: usize = 100;
/// Every unary call; a call this slow is a failure, not a data point.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const NODE_START_DEADLINE: Duration = Duration::from_secs(120);
const NODE_STOP_DEADLINE: Duration = Duration::from_secs(60);
/// Linux reports process CPU times in clock ticks of 1/100 s (USER_HZ).
const USER_HZ: f64 = 100.0;
/// Clinic sites of the development network: only a clinic may record a collection. Two
/// tokens so the per-token rate limit is never the cap.
const CLINICS: [&str; 2] = ["clinic-a", "clinic-s"];

#[derive(Debug, Clone, Copy)]
struct Mode {
    quick: bool,
}

impl Mode {
    fn from_env() -> Mode {
        let quick = std::env::args().any(|a| a == "--quick")
            || std::env::var("BENCH_QUICK").is_ok_and(|v| v != "0" && !v.is_empty());
        Mode { quick }
    }

    fn name(self) -> &'static str {
        if self.quick {
            "quick"
        } else {
            "full"
        }
    }

    fn pick(self, full: usize, quick: usize) -> usize {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

// --- Output ------------------------------------------------------------------------------

/// One row of the closing table.
#[derive(Debug)]
struct Row {
    figure: String,
    measured: String,
    ceiling: String,
    ratio: String,
    target: String,
    ok: Option<bool>,
}

#[derive(Debug, Default)]
struct Report {
    rows: Vec<Row>,
}

impl Report {
    fn row(
        &mut self,
        figure: &str,
        measured: String,
        ceiling: String,
        ratio: String,
        target: &str,
        ok: Option<bool>,
    ) {
        let verdict = match ok {
            Some(true) => "ok",
            Some(false) => "MISSED",
            None => "",
        };
        println!("  => {figure}: {measured} | ceiling {ceiling} | ratio {ratio} | target {target}  {verdict}");
        self.rows.push(Row {
            figure: figure.to_owned(),
            measured,
            ceiling,
            ratio,
            target: target.to_owned(),
            ok,
        });
    }

    fn print(&self) {
        println!();
        println!("| figure | measured | ceiling (same run) | ratio | target | |");
        println!("|---|---|---|---|---|---|");
        for r in &self.rows {
            let verdict = match r.ok {
                Some(true) => "ok",
                Some(false) => "MISSED",
                None => "",
            };
            println!(
                "| {} | {} | {} | {} | {} | {verdict} |",
                r.figure, r.measured, r.ceiling, r.ratio, r.target
            );
        }
        let missed = self.rows.iter().filter(|r| r.ok == Some(false)).count();
        println!();
        if missed == 0 {
            println!("all targets met");
        } else {
            println!("SOME TARGETS MISSED ({missed})");
        }
    }
}

fn per_second(n: u64, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The value at quantile `q` of `samples` (sorted here).
fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let idx = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[idx]
}

// --- Machine and process accounting -------------------------------------------------------

/// The machine's load: run-queue averages and, where the kernel has PSI, the share of the
/// last minute in which some runnable task waited for a CPU.
fn machine_load() -> String {
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned());
    let pressure = std::fs::read_to_string("/proc/pressure/cpu")
        .ok()
        .and_then(|p| {
            p.lines()
                .find(|l| l.starts_with("some"))
                .and_then(|l| l.split_whitespace().find(|f| f.starts_with("avg60=")))
                .map(|f| {
                    format!(
                        "; cpu pressure (tasks waiting for a CPU) {}% of the last minute",
                        &f[6..]
                    )
                })
        })
        .unwrap_or_default();
    format!("load average {load}{pressure}")
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU", str::trim)
        .to_owned();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    format!(
        "{} x {model}, {:.1} GiB RAM, {}",
        cores(),
        mem_kib as f64 / 1_048_576.0,
        std::env::consts::ARCH
    )
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The file system type holding `path` (longest matching mount point).
fn fs_type(path: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_dev, mount, kind) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(mount)
                .then(|| (mount.len(), kind.to_owned()))
        })
        .max()
        .map_or_else(|| "unknown".to_owned(), |(_, kind)| kind)
}

// --- The node process --------------------------------------------------------------------

/// The last lines the node wrote, every warning or error it logged (alert raises apart),
/// its "store opened" line and its web page's address.
#[derive(Debug, Default)]
struct NodeLog {
    tail: VecDeque<String>,
    problems: Vec<String>,
    store_opened: Option<String>,
    web_addr: Option<SocketAddr>,
}

/// A running `ledger-node` process; killed if still running when dropped.
#[derive(Debug)]
struct NodeProcess {
    child: Option<Child>,
    pid: String,
    grpc_uri: String,
    /// The web page's address, when it is served.
    web_addr: Option<SocketAddr>,
    data_dir: PathBuf,
    log: Arc<Mutex<NodeLog>>,
}

/// A KiB field of `/proc/<pid>/status` (VmRSS:, VmHWM:).
fn status_kib(pid: &str, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

impl NodeProcess {
    /// Starts the node with default settings, no web page and no metrics, on a free gRPC
    /// port, and waits for its "listening on" line.
    fn start(data_dir: &Path) -> anyhow::Result<NodeProcess> {
        NodeProcess::spawn(data_dir, &["--no-http"])
    }

    /// Starts the node with the settings of `config` and its web page on a free port.
    fn start_with_web(data_dir: &Path, config: &Path) -> anyhow::Result<NodeProcess> {
        let config = config.to_str().context("a config path that is not UTF-8")?;
        NodeProcess::spawn(
            data_dir,
            &["--config", config, "--http-listen", "127.0.0.1:0"],
        )
    }

    fn spawn(data_dir: &Path, args: &[&str]) -> anyhow::Result<NodeProcess> {
        // BENCH_NODE_WRAPPER runs the node under a profiler, e.g. "heaptrack -o /tmp/node".
        let wrapper = std::env::var("BENCH_NODE_WRAPPER").unwrap_or_default();
        let mut wrapper = wrapper.split_whitespace();
        let mut cmd = match wrapper.next() {
            Some(program) => {
                let mut cmd = Command::new(program);
                cmd.args(wrapper).arg(env!("CARGO_BIN_EXE_ledger-node"));
                cmd
            }
            None => Command::new(env!("CARGO_BIN_EXE_ledger-node")),
        };
        // The node reads LEDGER_* variables as configuration: start it from defaults only.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("LEDGER_") {
                cmd.env_remove(k);
            }
        }
        // --stop-on-stdin-close with the pipe held here: a killed benchmark leaves no node.
        let mut child = cmd
            .args(["run", "--stop-on-stdin-close"])
            .stdin(Stdio::piped())
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0", "--no-metrics"])
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning ledger-node")?;
        let stderr = child.stderr.take().context("node stderr")?;
        let log = Arc::new(Mutex::new(NodeLog::default()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_log = log.clone();
        std::thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    if let Some(tx) = ready_tx.take() {
                        let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                        let _ = tx.send(addr);
                    }
                }
                let mut log = thread_log.lock().unwrap_or_else(|p| p.into_inner());
                if line.contains("store opened") {
                    log.store_opened = Some(line.clone());
                }
                // Logged before "listening on": the page's address.
                if let Some(rest) = line.split("web page served at http://").nth(1) {
                    log.web_addr = rest.split('/').next().and_then(|a| a.parse().ok());
                }
                // The first start creates a development network and says so, and figure 2
                // raises alerts on purpose (logged as warnings and errors): expected here.
                let expected = line.contains("DEVELOPMENT network")
                    || line.contains("alert raised")
                    || line.contains("ALERT raised");
                if (line.contains(" WARN ") || line.contains(" ERROR ")) && !expected {
                    log.problems.push(line.clone());
                }
                log.tail.push_back(line);
                if log.tail.len() > 40 {
                    log.tail.pop_front();
                }
            }
        });
        let pid = child.id().to_string();
        let mut node = NodeProcess {
            child: Some(child),
            pid,
            grpc_uri: String::new(),
            web_addr: None,
            data_dir: data_dir.to_owned(),
            log,
        };
        match ready_rx.recv_timeout(NODE_START_DEADLINE) {
            Ok(addr) => node.grpc_uri = format!("http://{addr}"),
            Err(_) => bail!(
                "ledger-node did not report 'listening on' within {NODE_START_DEADLINE:?}; its output:\n{}",
                node.log_tail()
            ),
        }
        let web_addr = node.lock_log().web_addr;
        node.web_addr = web_addr;
        Ok(node)
    }

    fn lock_log(&self) -> std::sync::MutexGuard<'_, NodeLog> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn log_tail(&self) -> String {
        self.lock_log()
            .tail
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn problems(&self) -> Vec<String> {
        self.lock_log().problems.clone()
    }

    /// The "store opened" line of this start (logged before "listening on").
    fn store_opened(&self) -> Option<String> {
        self.lock_log().store_opened.clone()
    }

    fn token(&self, name: &str) -> anyhow::Result<String> {
        let p = self
            .data_dir
            .join("network/tokens")
            .join(format!("{name}.token"));
        Ok(std::fs::read_to_string(&p)
            .with_context(|| format!("reading {}", p.display()))?
            .trim()
            .to_owned())
    }

    /// (VmRSS, VmHWM) in KiB.
    fn memory_kib(&self) -> anyhow::Result<(u64, u64)> {
        let field = |name: &str| {
            status_kib(&self.pid, name)
                .with_context(|| format!("no {name} in /proc/{}/status", self.pid))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// SIGTERM, then wait for a clean exit.
    fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(&self.pid)
            .status()
            .context("sending SIGTERM")?;
        ensure!(status.success(), "kill -TERM {} failed", self.pid);
        let deadline = Instant::now() + NODE_STOP_DEADLINE;
        loop {
            if let Some(s) = child.try_wait()? {
                ensure!(s.success(), "the node exited with {s}");
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("the node did not stop within {NODE_STOP_DEADLINE:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// --- Clients and requests ----------------------------------------------------------------

/// One connection (its own HTTP/2 channel) speaking as one token.
#[derive(Debug, Clone)]
struct Client {
    api: LedgerServiceClient<Channel>,
    auth: MetadataValue<Ascii>,
}

impl Client {
    /// A client for unary calls, each limited to `CALL_TIMEOUT`.
    async fn connect(uri: &str, token: &str) -> anyhow::Result<Client> {
        let channel = Channel::from_shared(uri.to_owned())?
            .timeout(CALL_TIMEOUT)
            .connect()
            .await
            .with_context(|| format!("connecting to {uri}"))?;
        Client::on(channel, token)
    }

    /// A client for streams that last longer than any one call may.
    async fn connect_stream(uri: &str, token: &str) -> anyhow::Result<Client> {
        let channel = Channel::from_shared(uri.to_owned())?
            .connect()
            .await
            .with_context(|| format!("connecting to {uri}"))?;
        Client::on(channel, token)
    }

    fn on(channel: Channel, token: &str) -> anyhow::Result<Client> {
        Ok(Client {
            api: LedgerServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024),
            auth: format!("Bearer {token}").parse()?,
        })
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut().insert("authorization", self.auth.clone());
        r
    }

    async fn append(&mut self, r: pb::AppendRequest) -> Result<pb::AppendReceipt, tonic::Status> {
        let req = self.request(r);
        let receipt = self.api.append(req).await?.into_inner().receipt;
        receipt.ok_or_else(|| tonic::Status::internal("an OK append answer without a receipt"))
    }

    async fn append_batch(
        &mut self,
        requests: Vec<pb::AppendRequest>,
    ) -> Result<Vec<pb::AppendBatchResult>, tonic::Status> {
        let n = requests.len();
        let req = self.request(pb::AppendBatchRequest { requests });
        let results = self.api.append_batch(req).await?.into_inner().results;
        if results.len() != n {
            return Err(tonic::Status::internal(format!(
                "{} answers to a batch of {n}",
                results.len()
            )));
        }
        Ok(results)
    }
}

/// Non-OK answers by status code, with the first message of each.
#[derive(Debug, Default)]
struct Refusals {
    by_code: BTreeMap<String, (u64, String)>,
}

impl Refusals {
    fn add(&mut self, code: tonic::Code, message: &str) {
        let e = self
            .by_code
            .entry(format!("{code:?}"))
            .or_insert_with(|| (0, message.to_owned()));
        e.0 += 1;
    }

    fn merge(&mut self, other: Refusals) {
        for (code, (n, msg)) in other.by_code {
            let e = self.by_code.entry(code).or_insert((0, msg));
            e.0 += n;
        }
    }

    fn total(&self) -> u64 {
        self.by_code.values().map(|(n, _)| n).sum()
    }

    /// Counts the answers of a batch: OK receipts, and everything else as a refusal.
    fn count_batch(&mut self, results: &[pb::AppendBatchResult]) -> u64 {
        let mut n_ok = 0;
        for r in results {
            match &r.result {
                Some(pb::append_batch_result::Result::Receipt(_)) => n_ok += 1,
                Some(pb::append_batch_result::Result::Error(e)) => {
                    self.add(tonic::Code::from(e.code), &e.message);
                }
                None => self.add(
                    tonic::Code::Unknown,
                    "a batch result with neither receipt nor error",
                ),
            }
        }
        n_ok
    }

    fn describe(&self) -> String {
        if self.by_code.is_empty() {
            return "non-OK answers: none".to_owned();
        }
        let parts: Vec<String> = self
            .by_code
            .iter()
            .map(|(code, (n, msg))| format!("{n} x {code} (first: {msg})"))
            .collect();
        format!(
            "non-OK answers: {} NOT counted as throughput: {}",
            self.total(),
            parts.join("; ")
        )
    }
}

fn now_wire() -> prost_types::Timestamp {
    wire_time(SystemTime::now())
}

/// A wall-clock instant on the wire, at the millisecond (the ledger's resolution).
fn wire_time(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: (d.subsec_millis() * 1_000_000) as i32,
    }
}

fn note_text(k: u64) -> &'static str {
    const NOTES: [&str; 3] = [
        "label legible, bag intact, no frost on the port; temperature logger attached",
        "courier called ahead; shipper lid seal number checked against the manifest",
        "nurse confirmed patient identity against the chain of identity label",
    ];
    NOTES[(k % NOTES.len() as u64) as usize]
}

/// A COI of one phase: phases use different letters so no two chains of a run share one.
fn coi(phase: char, idx: usize) -> String {
    assert!(phase.is_ascii_uppercase(), "phase {phase} must be A-Z");
    assert!(idx < 100_000, "chain index {idx} needs more than 5 digits");
    format!("CHA999926{phase}{idx:05}")
}

/// Writes one chain as its collecting clinic: a collection, then a repeating note, store,
/// retrieve of the collected unit. Every request is valid in that order.
#[derive(Debug)]
struct ChainWriter {
    coi: String,
    site: String,
    unit: String,
    n_requests: u64,
}

impl ChainWriter {
    fn new(phase: char, idx: usize, site: &str) -> ChainWriter {
        ChainWriter {
            coi: coi(phase, idx),
            site: site.to_owned(),
            unit: format!("BAG-{phase}{idx}"),
            n_requests: 0,
        }
    }

    fn request(&mut self, kind: pb::event_body::Kind) -> pb::AppendRequest {
        self.n_requests += 1;
        pb::AppendRequest {
            request_id: format!("{}-{}", self.coi, self.n_requests),
            site_id: self.site.clone(),
            coi: self.coi.clone(),
            occurred_time: Some(now_wire()),
            signer: Some(pb::Signer {
                operator_id: "op.bench".into(),
                printed_name: "Bench Operator".into(),
                meaning: pb::SignatureMeaning::Performed as i32,
            }),
            body: Some(pb::EventBody { kind: Some(kind) }),
        }
    }

    /// The chain's first event: a collection of one unit with this stability deadline.
    fn collection(&mut self, deadline: SystemTime) -> pb::AppendRequest {
        let deadline = wire_time(deadline);
        let kind = pb::event_body::Kind::Collection(pb::Collection {
            units: vec![pb::NewUnit {
                unit_id: self.unit.clone(),
                stability_deadline: Some(deadline),
                temp_min_centi_celsius: -19_600,
                temp_max_centi_celsius: -15_000,
            }],
            dins: Vec::new(),
        });
        self.request(kind)
    }

    fn next(&mut self) -> pb::AppendRequest {
        let k = self.n_requests;
        let kind = match k % 3 {
            0 => pb::event_body::Kind::Note(pb::Note {
                text: note_text(k / 3).to_owned(),
            }),
            1 => pb::event_body::Kind::Store(pb::Store {
                unit_id: self.unit.clone(),
                location: "LN2 dewar 3, rack B, box 12".into(),
            }),
            _ => pb::event_body::Kind::Retrieve(pb::Retrieve {
                unit_id: self.unit.clone(),
                location: "LN2 dewar 3, rack B, box 12".into(),
            }),
        };
        self.request(kind)
    }
}

/// The alert ceiling: p50 of a grpc.health.v1 Check from one client (no auth, no ledger).
async fn round_trip_ceiling(node: &NodeProcess) -> anyhow::Result<Duration> {
    let channel = Channel::from_shared(node.grpc_uri.clone())?
        .timeout(CALL_TIMEOUT)
        .connect()
        .await?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut latencies = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..ROUND_TRIPS_WARMUP + ROUND_TRIPS {
        let t = Instant::now();
        health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .context("health check")?;
        if i >= ROUND_TRIPS_WARMUP {
            latencies.push(t.elapsed());
        }
    }
    Ok(quantile(&mut latencies, 0.5))
}

/// utime + stime in clock ticks from a `/proc/.../stat` line; the command name may hold
/// spaces and parentheses, so fields are counted from the last ')'.
fn stat_ticks(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After the name: state is field 3 of the line, utime 14 and stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// CPU seconds used so far by a process (`self` or a pid), from `/proc/.../stat`.
fn cpu_seconds(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| stat_ticks(&s))
        .map_or(0.0, |(_, t)| t as f64 / USER_HZ)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The value at quantile `q` of signed samples in milliseconds (sorted here).
fn quantile_ms(samples: &mut [f64], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_unstable_by(f64::total_cmp);
    let idx = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[idx]
}

/// `later - earlier` in milliseconds, negative when `later` came first.
fn signed_ms(later: Instant, earlier: Instant) -> f64 {
    match later.checked_duration_since(earlier) {
        Some(d) => ms(d),
        None => -ms(earlier.duration_since(later)),
    }
}

fn signed_wall_ms(later: SystemTime, earlier: SystemTime) -> f64 {
    match later.duration_since(earlier) {
        Ok(d) => ms(d),
        Err(e) => -ms(e.duration()),
    }
}

/// A wall-clock instant at the millisecond, as the ledger keeps times.
fn wall_ms(t: SystemTime) -> SystemTime {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    SystemTime::UNIX_EPOCH + Duration::from_millis(since.as_millis() as u64)
}

fn from_wire(t: &prost_types::Timestamp) -> Option<SystemTime> {
    let secs = u64::try_from(t.seconds).ok()?;
    let nanos = u32::try_from(t.nanos).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
}

/// The `key=value` field of a log line.
fn log_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
}

// --- Uploads -----------------------------------------------------------------------------

/// Uploads `deadlines.len()` chains of `chain_events` events of phase `phase`, chain i with
/// the stability deadline `deadlines[i]`, through AppendBatch calls of whole chains (at most
/// `APPEND_BATCH_MAX` requests) from `UPLOADERS` clients. Every answer must be OK.
async fn upload(
    node: &NodeProcess,
    phase: char,
    deadlines: Arc<Vec<SystemTime>>,
    chain_events: usize,
) -> anyhow::Result<(u64, Duration)> {
    let n_chains = deadlines.len();
    let chains_per_batch = (APPEND_BATCH_MAX / chain_events).max(1);
    let n_batches = n_chains.div_ceil(chains_per_batch);
    let next_batch = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for u in 0..UPLOADERS {
        let site = CLINICS[u % CLINICS.len()];
        let client = Client::connect(&node.grpc_uri, &node.token(site)?).await?;
        let next_batch = next_batch.clone();
        let deadlines = deadlines.clone();
        let pid = node.pid.clone();
        tasks.spawn(async move {
            let mut client = client;
            let mut n_ok = 0u64;
            let mut refusals = Refusals::default();
            loop {
                let b = next_batch.fetch_add(1, Ordering::Relaxed);
                if b >= n_batches {
                    return Ok::<_, anyhow::Error>((n_ok, refusals));
                }
                let first = b * chains_per_batch;
                let last = (first + chains_per_batch).min(n_chains);
                let mut requests = Vec::with_capacity((last - first) * chain_events);
                for (idx, deadline) in deadlines.iter().enumerate().take(last).skip(first) {
                    let mut chain = ChainWriter::new(phase, idx, site);
                    requests.push(chain.collection(*deadline));
                    requests.extend((1..chain_events).map(|_| chain.next()));
                }
                let n = requests.len();
                match client.append_batch(requests).await {
                    Ok(results) => n_ok += refusals.count_batch(&results),
                    Err(s) => {
                        for _ in 0..n {
                            refusals.add(s.code(), s.message());
                        }
                    }
                }
                if (b + 1).is_multiple_of((n_batches / 10).max(1)) {
                    println!(
                        "  batch {} of {n_batches} answered after {:.0} s; node RSS {:.1} MiB",
                        b + 1,
                        started.elapsed().as_secs_f64(),
                        mib(status_kib(&pid, "VmRSS:").unwrap_or(0))
                    );
                }
            }
        });
    }
    let mut n_ok = 0;
    let mut refusals = Refusals::default();
    while let Some(joined) = tasks.join_next().await {
        let (n, r) = joined.context("an uploader panicked")??;
        n_ok += n;
        refusals.merge(r);
    }
    let elapsed = started.elapsed();
    ensure!(
        refusals.total() == 0 && n_ok as usize == n_chains * chain_events,
        "upload of phase {phase}: {n_ok} OK of {}; {}",
        n_chains * chain_events,
        refusals.describe()
    );
    Ok((n_ok, elapsed))
}

// --- Figure 1: the worklist page ---------------------------------------------------------

/// One HTTP/1.1 answer read to its end over a fresh connection.
#[derive(Debug)]
struct PageLoad {
    /// From before the connect to the first byte of the answer.
    first_byte: Duration,
    /// From before the connect to the end of the answer (the server closes it).
    full: Duration,
    status_line: String,
    body: String,
}

/// `GET path` with a raw request on a new connection, timing the first byte and the end.
fn get_page(addr: SocketAddr, path: &str, token: Option<&str>) -> anyhow::Result<PageLoad> {
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
    let mut buf = vec![0u8; 256 * 1024];
    let mut answer = Vec::new();
    let started = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to the web page at {addr}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(CALL_TIMEOUT))?;
    s.write_all(request.as_bytes())?;
    let n = s.read(&mut buf).context("reading the page's first byte")?;
    let first_byte = started.elapsed();
    ensure!(n > 0, "GET {path}: the connection closed without an answer");
    answer.extend_from_slice(&buf[..n]);
    loop {
        let n = s.read(&mut buf).context("reading the page")?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let full = started.elapsed();
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {path}: an answer without a header end"))?;
    Ok(PageLoad {
        first_byte,
        full,
        status_line: head.lines().next().unwrap_or("").to_owned(),
        body: body.to_owned(),
    })
}

/// The COIs of the worklist's rows, in page order (`data-coi` of each row).
fn page_rows(body: &str) -> Vec<&str> {
    body.split("data-coi=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect()
}

/// Deadlines of figure 1's chains: from `base`, at least a day ahead, spread over 39 days
/// in an order unrelated to the chains' COIs (a multiplicative hash of the index).
fn live_deadlines(base: SystemTime, n: usize) -> Vec<SystemTime> {
    (0..n)
        .map(|i| {
            let h = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20;
            wall_ms(base + LIVE_DEADLINE_MIN + Duration::from_secs(h % LIVE_DEADLINE_SPAN_S))
        })
        .collect()
}

/// Latencies of `n` page loads, after a few untimed ones; checks each answer.
fn time_pages(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    n: usize,
    check: impl Fn(&PageLoad) -> anyhow::Result<()>,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>, usize)> {
    let mut first = Vec::with_capacity(n);
    let mut full = Vec::with_capacity(n);
    let mut bytes = 0;
    for i in 0..WARMUP_REQUESTS + n {
        let page = get_page(addr, path, token)?;
        ensure!(
            page.status_line.starts_with("HTTP/1.1 200"),
            "GET {path}: {}",
            page.status_line
        );
        check(&page)?;
        bytes = page.body.len();
        if i >= WARMUP_REQUESTS {
            first.push(page.first_byte);
            full.push(page.full);
        }
    }
    Ok((first, full, bytes))
}

fn figure_worklist(
    node: &NodeProcess,
    runtime: &tokio::runtime::Runtime,
    mode: Mode,
    report: &mut Report,
) -> anyhow::Result<()> {
    let n_chains = mode.pick(LIVE_CHAINS, LIVE_CHAINS_QUICK);
    let deadlines = live_deadlines(SystemTime::now(), n_chains);
    let most_urgent = deadlines
        .iter()
        .enumerate()
        .map(|(i, d)| (*d, coi('L', i)))
        .min()
        .map(|(_, c)| c)
        .context("at least one chain")?;
    println!(
        "figure 1: uploading {n_chains} live chains of {LIVE_CHAIN_EVENTS} events ({} events; deadlines 1 to 40 days ahead)",
        n_chains * LIVE_CHAIN_EVENTS
    );
    let (n_ok, took) =
        runtime.block_on(upload(node, 'L', Arc::new(deadlines), LIVE_CHAIN_EVENTS))?;
    let (rss_upload, hwm_upload) = node.memory_kib()?;
    println!(
        "  {n_ok} events in {:.1} s ({:.0}/s); node RSS {:.1} MiB (peak {:.1}); store {:.0} MiB on disk",
        took.as_secs_f64(),
        per_second(n_ok, took),
        mib(rss_upload),
        mib(hwm_upload),
        dir_bytes(&node.data_dir.join("store")) as f64 / 1_048_576.0
    );
    std::thread::sleep(SETTLE);
    let web = node.web_addr.context("the node serves no web page")?;
    let auditor = node.token("auditor")?;

    // The ceiling: a static file on the same listener.
    let (mut css_first, mut css_full, _) =
        time_pages(web, "/static/app.css", None, PAGE_REQUESTS, |_| Ok(()))?;
    let css_p50 = quantile(&mut css_first, 0.5);
    println!(
        "ceiling: GET /static/app.css first byte p50 {:.2} ms, whole p50 {:.2} ms",
        ms(css_p50),
        ms(quantile(&mut css_full, 0.5))
    );

    // The page, with the node's peak RSS reset first where the kernel allows it.
    let rss_before = node.memory_kib()?.0;
    let hwm_reset = std::fs::write(format!("/proc/{}/clear_refs", node.pid), "5").is_ok();
    let cpu_before = cpu_seconds(&node.pid);
    let started = Instant::now();
    let (mut first, mut full, bytes) =
        time_pages(web, "/", Some(&auditor), PAGE_REQUESTS, |page| {
            let rows = page_rows(&page.body);
            ensure!(
                rows.len() == WORKLIST_ROWS,
                "the worklist shows {} rows, expected {WORKLIST_ROWS}",
                rows.len()
            );
            ensure!(
                rows.first() == Some(&most_urgent.as_str()),
                "the worklist starts with {:?}, expected the most urgent chain {most_urgent}",
                rows.first()
            );
            Ok(())
        })?;
    let node_cpu_ms =
        1e3 * (cpu_seconds(&node.pid) - cpu_before) / (WARMUP_REQUESTS + PAGE_REQUESTS) as f64;
    let elapsed = started.elapsed();
    let (rss, hwm) = node.memory_kib()?;
    let (first_p50, first_p99, first_max) = (
        quantile(&mut first, 0.5),
        quantile(&mut first, 0.99),
        quantile(&mut first, 1.0),
    );
    let (full_p50, full_p99, full_max) = (
        quantile(&mut full, 0.5),
        quantile(&mut full, 0.99),
        quantile(&mut full, 1.0),
    );
    println!(
        "worklist page GET / ({PAGE_REQUESTS} timed loads in {:.1} s, {bytes} bytes, {WORKLIST_ROWS} rows, first row the most urgent chain {most_urgent}): first byte p50 {:.1} ms p99 {:.1} ms max {:.1} ms; whole page p50 {:.1} ms p99 {:.1} ms max {:.1} ms; node CPU {node_cpu_ms:.1} ms per page",
        elapsed.as_secs_f64(),
        ms(first_p50),
        ms(first_p99),
        ms(first_max),
        ms(full_p50),
        ms(full_p99),
        ms(full_max)
    );
    println!(
        "  node RSS {:.1} MiB before the loads, {:.1} MiB after; VmHWM {:.1} MiB ({})",
        mib(rss_before),
        mib(rss),
        mib(hwm),
        if hwm_reset {
            "peak during the loads: reset through clear_refs first"
        } else {
            "peak since start: clear_refs refused"
        }
    );

    // ListChains, sorted by deadline, live chains only, first page.
    let (mut list, first_coi) = runtime.block_on(async {
        let mut client = Client::connect(&node.grpc_uri, &auditor).await?;
        let mut latencies = Vec::with_capacity(LIST_REQUESTS);
        let mut first_coi = String::new();
        for i in 0..WARMUP_REQUESTS + LIST_REQUESTS {
            let req = client.request(pb::ListChainsRequest {
                page_size: LIST_PAGE_SIZE,
                sort: pb::ChainSort::Deadline as i32,
                live_only: true,
                ..Default::default()
            });
            let t = Instant::now();
            let page = client.api.list_chains(req).await?.into_inner();
            let took = t.elapsed();
            ensure!(
                page.chains.len() == LIST_PAGE_SIZE as usize,
                "ListChains answered {} chains, expected {LIST_PAGE_SIZE}",
                page.chains.len()
            );
            first_coi = page.chains[0].coi.clone();
            if i >= WARMUP_REQUESTS {
                latencies.push(took);
            }
        }
        anyhow::Ok((latencies, first_coi))
    })?;
    ensure!(
        first_coi == most_urgent,
        "ListChains starts with {first_coi}, expected the most urgent chain {most_urgent}"
    );
    let (list_p50, list_p99) = (quantile(&mut list, 0.5), quantile(&mut list, 0.99));
    println!(
        "ListChains (deadline sort, live only, {LIST_PAGE_SIZE} per page), first page: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(list_p50),
        ms(list_p99),
        ms(quantile(&mut list, 1.0))
    );

    let live = format!(
        "{n_chains} live COIs, {} events",
        n_chains * LIVE_CHAIN_EVENTS
    );
    let css = format!("static file first byte p50 {:.2} ms", ms(css_p50));
    report.row(
        &format!("worklist page `GET /`, time to first byte ({live})"),
        format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms(first_p50),
            ms(first_p99),
            ms(first_max)
        ),
        css.clone(),
        format!("{:.0}", first_p50.as_secs_f64() / css_p50.as_secs_f64()),
        "p99 < 300 ms",
        Some(first_p99 < Duration::from_millis(300)),
    );
    report.row(
        "worklist page `GET /`, whole page",
        format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({bytes} bytes)",
            ms(full_p50),
            ms(full_p99),
            ms(full_max)
        ),
        "—".into(),
        "—".into(),
        "p99 < 1 s",
        Some(full_p99 < Duration::from_secs(1)),
    );
    let hwm_what = if hwm_reset {
        "peak during the loads"
    } else {
        "peak since start"
    };
    report.row(
        "node RSS while serving the page",
        format!(
            "VmRSS {:.1} MiB, VmHWM {:.1} MiB ({hwm_what}; {:.1} MiB peak in the upload)",
            mib(rss),
            mib(hwm),
            mib(hwm_upload)
        ),
        "—".into(),
        "—".into(),
        "< 300 MiB",
        Some(rss < 300 * 1024 && (!hwm_reset || hwm < 300 * 1024)),
    );
    report.row(
        "`ListChains` deadline sort, live only, first page of 100",
        format!("p50 {:.1} ms, p99 {:.1} ms", ms(list_p50), ms(list_p99)),
        "—".into(),
        "—".into(),
        "< 300 ms",
        Some(list_p99 < Duration::from_millis(300)),
    );
    Ok(())
}

// --- Figure 2: alert latency -------------------------------------------------------------

/// An alert raise as the watcher received it.
#[derive(Debug, Clone)]
struct Raise {
    coi: String,
    kind: String,
    since: Option<SystemTime>,
    at: Instant,
    wall: SystemTime,
}

/// Opens `WatchAlerts` (all alerts), reads its first message (the snapshot), and forwards
/// every later raise with its arrival time; snapshots after the first (the watcher fell
/// behind and changes were lost) are counted in `resnapshots`.
async fn watch_raises(
    client: &mut Client,
    resnapshots: Arc<AtomicU64>,
) -> anyhow::Result<tokio::sync::mpsc::UnboundedReceiver<Raise>> {
    let req = client.request(pb::WatchAlertsRequest::default());
    let mut stream = client.api.watch_alerts(req).await?.into_inner();
    let first = stream
        .message()
        .await?
        .context("the alert watch ended before its snapshot")?;
    ensure!(
        first.is_snapshot,
        "the alert watch's first message is not a snapshot"
    );
    println!(
        "  WatchAlerts open: snapshot of {} open alerts",
        first.snapshot.len()
    );
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(m)) = stream.message().await {
            let (at, wall) = (Instant::now(), SystemTime::now());
            if m.is_snapshot {
                resnapshots.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let Some(change) = m.change else { continue };
            if change.cleared_time.is_some() {
                continue;
            }
            let raise = Raise {
                since: change.since_time.as_ref().and_then(from_wire),
                coi: change.coi,
                kind: change.kind,
                at,
                wall,
            };
            if tx.send(raise).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// Signed milliseconds: p50, p99, max, as text.
fn describe_ms(samples: &mut [f64]) -> String {
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        quantile_ms(samples, 0.5),
        quantile_ms(samples, 0.99),
        quantile_ms(samples, 1.0)
    )
}

fn figure_alerts(
    node: &NodeProcess,
    runtime: &tokio::runtime::Runtime,
    mode: Mode,
    report: &mut Report,
) -> anyhow::Result<()> {
    let n_near = mode.pick(NEAR_APPENDS, NEAR_APPENDS_QUICK);
    let n_cross = mode.pick(CROSSINGS, CROSSINGS_QUICK);
    let auditor = node.token("auditor")?;
    let site = CLINICS[0];
    let rtt_p50 = runtime.block_on(round_trip_ceiling(node))?;
    println!(
        "ceiling: gRPC health check round trip, one client: p50 {:.0} us",
        us(rtt_p50)
    );
    let resnapshots = Arc::new(AtomicU64::new(0));
    let (mut from_ack, mut from_send, missing_near, mut crossing, missing_cross, early) = runtime
        .block_on(async {
            let mut watcher = Client::connect_stream(&node.grpc_uri, &auditor).await?;
            let mut raises = watch_raises(&mut watcher, resnapshots.clone()).await?;
            let mut client = Client::connect(&node.grpc_uri, &node.token(site)?).await?;

            // (a) one collection at a time, each waiting for its deadline_near raise.
            println!(
                "figure 2(a): {n_near} collections appended one at a time, deadline {} min ahead (near window {} min)",
                NEAR_DEADLINE_AHEAD.as_secs() / 60,
                DEADLINE_NEAR_MS / 60_000
            );
            let mut from_ack = Vec::with_capacity(n_near);
            let mut from_send = Vec::with_capacity(n_near);
            let mut missing_near = 0;
            for i in 0..n_near {
                let mut chain = ChainWriter::new('A', i, site);
                let req = chain.collection(SystemTime::now() + NEAR_DEADLINE_AHEAD);
                let sent = Instant::now();
                client
                    .append(req)
                    .await
                    .with_context(|| format!("appending the collection of {}", chain.coi))?;
                let acked = Instant::now();
                let wait_until = tokio::time::Instant::now() + ALERT_WAIT;
                loop {
                    match tokio::time::timeout_at(wait_until, raises.recv()).await {
                        Ok(Some(r)) if r.coi == chain.coi && r.kind == "deadline_near" => {
                            from_ack.push(signed_ms(r.at, acked));
                            from_send.push(signed_ms(r.at, sent));
                            break;
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => bail!("the alert watch ended"),
                        Err(_) => {
                            missing_near += 1;
                            break;
                        }
                    }
                }
            }

            // (b) deadlines over the next seconds, appended at once, then their crossings.
            let start = SystemTime::now();
            let deadlines: Vec<SystemTime> = (0..n_cross)
                .map(|i| {
                    wall_ms(start + CROSSING_FIRST + CROSSING_SPAN.mul_f64(i as f64 / n_cross as f64))
                })
                .collect();
            println!(
                "figure 2(b): {n_cross} collections in one AppendBatch, deadlines {} s to {} s ahead",
                CROSSING_FIRST.as_secs(),
                (CROSSING_FIRST + CROSSING_SPAN).as_secs()
            );
            let mut want: HashMap<String, SystemTime> = HashMap::new();
            let requests: Vec<pb::AppendRequest> = deadlines
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let mut chain = ChainWriter::new('X', i, site);
                    want.insert(chain.coi.clone(), *d);
                    chain.collection(*d)
                })
                .collect();
            let mut refusals = Refusals::default();
            let n_ok = refusals.count_batch(&client.append_batch(requests).await?);
            ensure!(
                n_ok as usize == n_cross,
                "appending the crossing chains: {n_ok} OK; {}",
                refusals.describe()
            );
            let appended_in = start.elapsed().unwrap_or_default();
            println!("  appended in {:.1} ms", ms(appended_in));
            let last = deadlines.iter().max().copied().unwrap_or(start);
            let wait_until = tokio::time::Instant::now()
                + last.duration_since(SystemTime::now()).unwrap_or_default()
                + ALERT_WAIT;
            let mut crossing = Vec::with_capacity(n_cross);
            let mut early = 0;
            while !want.is_empty() {
                match tokio::time::timeout_at(wait_until, raises.recv()).await {
                    Ok(Some(r)) if r.kind == "deadline_overdue" => {
                        if let Some(deadline) = want.remove(&r.coi) {
                            if r.since != Some(deadline) {
                                println!(
                                    "  note: {} overdue since {:?}, its deadline is {:?}",
                                    r.coi, r.since, deadline
                                );
                            }
                            let late = signed_wall_ms(r.wall, deadline);
                            if late < 0.0 {
                                early += 1;
                            }
                            crossing.push(late);
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => bail!("the alert watch ended"),
                    Err(_) => break,
                }
            }
            drop(watcher);
            anyhow::Ok((from_ack, from_send, missing_near, crossing, want.len(), early))
        })?;
    let lost = resnapshots.load(Ordering::Relaxed);
    println!(
        "alert latency (a), {} raises: from the append's answer {}; from its sending {}; {missing_near} missing",
        from_ack.len(),
        describe_ms(&mut from_ack),
        describe_ms(&mut from_send)
    );
    println!(
        "alert latency (b), {} crossings: from the deadline to the deadline_overdue raise {}; {missing_cross} missing, {early} before the deadline",
        crossing.len(),
        describe_ms(&mut crossing)
    );
    if lost > 0 {
        println!("  the watcher fell behind {lost} times (a fresh snapshot each time)");
    }
    let ceiling = format!("health check p50 {:.2} ms", ms(rtt_p50));
    let ack_p99 = quantile_ms(&mut from_ack, 0.99);
    report.row(
        &format!("alert latency (a): append answered -> `deadline_near` on WatchAlerts ({n_near} appends)"),
        format!(
            "{}; from sending {}",
            describe_ms(&mut from_ack),
            describe_ms(&mut from_send)
        ),
        ceiling.clone(),
        "—".into(),
        "p99 < 1 s",
        Some(ack_p99 < 1000.0 && missing_near == 0 && lost == 0),
    );
    let cross_p99 = quantile_ms(&mut crossing, 0.99);
    report.row(
        &format!("alert latency (b): deadline -> `deadline_overdue` on WatchAlerts ({n_cross} deadlines over 8 s)"),
        describe_ms(&mut crossing),
        ceiling,
        "—".into(),
        "p99 < 1 s",
        Some(cross_p99 < 1000.0 && missing_cross == 0 && early == 0 && lost == 0),
    );
    Ok(())
}

// --- Figure 3: Subscribe catch-up --------------------------------------------------------

fn figure_catchup(
    root: &Path,
    runtime: &tokio::runtime::Runtime,
    mode: Mode,
    report: &mut Report,
) -> anyhow::Result<()> {
    let n_events = mode.pick(CATCHUP_EVENTS, CATCHUP_EVENTS_QUICK);
    let n_chains = n_events / CATCHUP_CHAIN_EVENTS;
    let data_dir = root.join("catchup-node");
    let mut node = NodeProcess::start(&data_dir)?;
    println!(
        "figure 3: a fresh node; uploading {n_events} events ({n_chains} chains of {CATCHUP_CHAIN_EVENTS}, AppendBatch of {APPEND_BATCH_MAX}, {UPLOADERS} uploaders)"
    );
    let deadline = wall_ms(SystemTime::now() + Duration::from_secs(30 * 86_400));
    let (n_ok, took) = runtime.block_on(upload(
        &node,
        'M',
        Arc::new(vec![deadline; n_chains]),
        CATCHUP_CHAIN_EVENTS,
    ))?;
    println!(
        "  {n_ok} events in {:.1} s ({:.0}/s); store {:.0} MiB on disk",
        took.as_secs_f64(),
        per_second(n_ok, took),
        dir_bytes(&data_dir.join("store")) as f64 / 1_048_576.0
    );
    let problems = node.problems();
    node.stop()?;
    drop(node);

    // Start again: the store is read (and the ledger replayed) before the node listens.
    let restarted = Instant::now();
    let mut node = NodeProcess::start(&data_dir)?;
    let listening_after = restarted.elapsed();
    let line = node
        .store_opened()
        .context("the node logged no 'store opened' line")?;
    let opened_events: u64 = log_field(&line, "events")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no events= in {line:?}"))?;
    let opened_seconds: f64 = log_field(&line, "seconds")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no seconds= in {line:?}"))?;
    ensure!(
        opened_events == n_ok,
        "the node opened {opened_events} events, {n_ok} were appended"
    );
    let start_rate = opened_events as f64 / opened_seconds;
    println!(
        "  restart: store opened, {opened_events} events in {opened_seconds:.2} s = {start_rate:.0} events/s; listening {:.2} s after the spawn",
        listening_after.as_secs_f64()
    );

    // Subscribe from the first event to the last.
    let auditor = node.token("auditor")?;
    let cpu_node = cpu_seconds(&node.pid);
    let cpu_self = cpu_seconds("self");
    let (n_seen, n_marks, elapsed) = runtime.block_on(async {
        let mut client = Client::connect_stream(&node.grpc_uri, &auditor).await?;
        let started = Instant::now();
        let req = client.request(pb::SubscribeRequest {
            from_position: 0,
            ..Default::default()
        });
        let mut stream = client.api.subscribe(req).await?.into_inner();
        let (mut n_seen, mut n_marks, mut last) = (0u64, 0u64, 0u64);
        while n_seen < opened_events {
            let m = stream
                .message()
                .await?
                .with_context(|| format!("the Subscribe stream ended after {n_seen} events"))?;
            if m.event.is_some() {
                ensure!(
                    m.position == last + 1,
                    "Subscribe: event at position {} after position {last}",
                    m.position
                );
                last = m.position;
                n_seen += 1;
            } else {
                ensure!(
                    m.position >= last,
                    "Subscribe: a progress mark at {} after position {last}",
                    m.position
                );
                n_marks += 1;
            }
        }
        anyhow::Ok((n_seen, n_marks, started.elapsed()))
    })?;
    let node_cores = (cpu_seconds(&node.pid) - cpu_node) / elapsed.as_secs_f64();
    let self_cores = (cpu_seconds("self") - cpu_self) / elapsed.as_secs_f64();
    let rate = per_second(n_seen, elapsed);
    let (rss, hwm) = node.memory_kib()?;
    println!(
        "  Subscribe from 0: {n_seen} events (positions 1..{n_seen}, no gap, no repeat; {n_marks} progress marks) in {:.2} s = {rate:.0} events/s; cpu: node {node_cores:.2} cores, this process {self_cores:.2}; node RSS {:.1} MiB (peak {:.1})",
        elapsed.as_secs_f64(),
        mib(rss),
        mib(hwm)
    );
    let ratio = rate / start_rate;
    report.row(
        "start-up read of the store (`store opened`)",
        format!("{start_rate:.0} events/s ({opened_events} events in {opened_seconds:.2} s)"),
        "—".into(),
        "—".into(),
        "(the reference)",
        None,
    );
    report.row(
        &format!("`Subscribe` from position 0 to the last of {n_events} events"),
        format!("{rate:.0} events/s ({:.2} s)", elapsed.as_secs_f64()),
        format!("start-up read {start_rate:.0} events/s"),
        format!("{ratio:.2}"),
        ">= 0.5",
        // Judged at the size only.
        (!mode.quick).then_some(ratio >= 0.5),
    );
    let more = node.problems();
    node.stop()?;
    for p in problems.into_iter().chain(more) {
        println!("node (catch-up) logged: {p}");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mode = Mode::from_env();
    let root = tempfile::Builder::new()
        .prefix("ledger-live-bench-")
        .tempdir()
        .context("creating the benchmark directory")?;
    println!("live node benchmark, {} mode", mode.name());
    println!("machine: {}", machine());
    println!("machine load at start: {}", machine_load());
    println!(
        "data directory: {} ({})",
        root.path().display(),
        fs_type(root.path())
    );
    println!(
        "sizes: figure 1 {} live chains x {LIVE_CHAIN_EVENTS} events; figure 2 {} + {} collections; figure 3 {} events{}",
        mode.pick(LIVE_CHAINS, LIVE_CHAINS_QUICK),
        mode.pick(NEAR_APPENDS, NEAR_APPENDS_QUICK),
        mode.pick(CROSSINGS, CROSSINGS_QUICK),
        mode.pick(CATCHUP_EVENTS, CATCHUP_EVENTS_QUICK),
        if mode.quick {
            " (quick: figure 3 is not judged)"
        } else {
            ""
        }
    );
    let config = root.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[alerts]\ndeadline_near_ms = {DEADLINE_NEAR_MS}\ndeadline_imminent_ms = {DEADLINE_IMMINENT_MS}\n"
        ),
    )
    .with_context(|| format!("writing {}", config.display()))?;
    println!(
        "node: {} as its own process, metrics off; alerts deadline_near_ms = {DEADLINE_NEAR_MS}, deadline_imminent_ms = {DEADLINE_IMMINENT_MS}",
        env!("CARGO_BIN_EXE_ledger-node")
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut report = Report::default();

    let mut node = NodeProcess::start_with_web(&root.path().join("live-node"), &config)?;
    figure_worklist(&node, &runtime, mode, &mut report)?;
    figure_alerts(&node, &runtime, mode, &mut report)?;
    let problems = node.problems();
    node.stop()?;
    drop(node);
    for p in problems {
        println!("node (figures 1-2) logged: {p}");
    }
    // Figure 1's store is no longer needed: free its disk before the larger one.
    std::fs::remove_dir_all(root.path().join("live-node"))?;

    figure_catchup(root.path(), &runtime, mode, &mut report)?;
    drop(runtime);
    println!("machine load at end: {}", machine_load());
    report.print();
    Ok(())
}
