//! Node append figures, each printed next to a bare ceiling measured in the same run, as a
//! ratio with ok/MISSED against its target:
//! `cargo bench -p ledger-node --bench append` (full run, about three minutes), or with
//! `-- --quick` (or `BENCH_QUICK=1`) for short windows and no memory figure while developing;
//! `-- --only-memory` runs the memory figure alone.
//!
//! Ceilings: (a) `UnsignedEvent::sign` (encode + hash + sign) on every core; (b) bare
//! `write` + `fdatasync` of a ~300-byte record appended to a file on the file system that
//! holds the node's data; (c) p50 of a gRPC health check round trip to the running node;
//! (d) 64 clients calling that health check in a loop, each on its own connection: the
//! bare unary rate that figure 2's one-event calls can at most reach on these cores.
//!
//! Figures: 64 concurrent clients appending one event per call (durable appends/s, events
//! per fdatasync); AppendBatch uploads (events/s); one client appending in sequence
//! (appends/s, p50 latency); VerifyChain on a 10,000-event chain vs `ledger_core::verify`
//! in-process on the same events; in the full run, the node's RSS after 1,000,000 events.
//!
//! The node runs as its own process: the real binary (cargo builds it with the bench profile
//! for this target, `CARGO_BIN_EXE_ledger-node`), with its Prometheus endpoint on, as
//! deployed. That keeps the metrics cost on the hot path in the figures, makes RSS mean the
//! node's memory alone, and gives events per fdatasync (and the time spent in
//! `Store::commit`) from `ledger_commits_total`, `ledger_commit_group_events` and
//! `ledger_commit_seconds`.
//!
//! The machine may be shared. Clients and node share its cores, so every load figure
//! prints where the CPU went: node threads, this process's clients, and everything else
//! on the machine (from `/proc/stat`), which should read ~0 for a clean run. Ceilings are
//! the best of several short rounds, which only makes the targets stricter; the fdatasync
//! ceiling alternates with the sequential-append figure, round by round, because disk
//! latency swings tenfold with other tenants' writes and both should see the same disk.
//!
//! Every append answer is checked one by one: only OK answers count; any other answer is
//! tallied by status code and printed. Each client writes its own chains (one opened by a
//! collection, then notes and store/retrieve of the collected unit by its custodian), so
//! every request is valid and a refusal means the node, not the load, is wrong.

mod common;
use common::dir_bytes;

use anyhow::{bail, ensure, Context};
use ledger_core::{
    Body, Coi, EventId, Meaning, NetworkId, OperatorId, Options, Scope, SecretKey, Seq, Signer,
    SiteId, Timestamp, Trust, UnsignedEvent, VerdictKind,
};
use proto::v1 as pb;
use proto::v1::ledger_service_client::LedgerServiceClient;
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::Request;

/// Concurrent single-event appenders in figure 2.
const N_CONCURRENT_CLIENTS: usize = 64;
/// AppendBatch uploaders and events per call in figure 3.
const N_BATCH_CLIENTS: usize = 8;
const BATCH_EVENTS: usize = 100;
/// Figure 5's chain length and the node's largest AppendBatch (config default).
const VERIFY_CHAIN_EVENTS: usize = 10_000;
const APPEND_BATCH_MAX: usize = 1000;
/// GetChain's largest page (`CHAIN_PAGE_MAX` in the service).
const CHAIN_PAGE_MAX: i32 = 5000;
/// Figure 6: events in the node, spread over chains of a patient journey's order of length.
const MEMORY_EVENTS: usize = 1_000_000;
/// A smaller upload while profiling (`BENCH_MEMORY_EVENTS`); the figure needs the default.
fn memory_events() -> usize {
    std::env::var("BENCH_MEMORY_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MEMORY_EVENTS)
}
const MEMORY_CHAIN_EVENTS: usize = 100;
/// Idle time before the memory figure's second reading.
const MEMORY_SETTLE: Duration = Duration::from_secs(15);
const MEMORY_UPLOADERS: usize = 8;
/// Timings taken as the best of several rounds, as in the core benchmark.
const ROUNDS: usize = 5;
/// Bytes of the bare fdatasync ceiling's record: about one event record of this load.
const BARE_RECORD_BYTES: usize = 300;
/// Health checks for the round-trip ceiling, after a warm-up.
const ROUND_TRIPS: usize = 3000;
const ROUND_TRIPS_WARMUP: usize = 300;
/// Every client call; a call this slow is a failure, not a data point.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const NODE_START_DEADLINE: Duration = Duration::from_secs(60);
const NODE_STOP_DEADLINE: Duration = Duration::from_secs(60);
/// Linux reports thread CPU times in clock ticks of 1/100 s (USER_HZ) on every architecture.
const USER_HZ: f64 = 100.0;
/// Clinic sites of the development network: only a clinic may record a collection. Two
/// tokens so the per-token rate limit (100,000 calls or events per second) is never the cap.
const CLINICS: [&str; 2] = ["clinic-a", "clinic-s"];

#[derive(Debug, Clone, Copy)]
struct Mode {
    quick: bool,
    /// `--only-memory`: just figure 6.
    only_memory: bool,
}

impl Mode {
    fn from_env() -> Mode {
        let quick = std::env::args().any(|a| a == "--quick")
            || std::env::var("BENCH_QUICK").is_ok_and(|v| v != "0" && !v.is_empty());
        let only_memory = std::env::args().any(|a| a == "--only-memory");
        Mode { quick, only_memory }
    }

    fn name(self) -> &'static str {
        if self.quick {
            "quick"
        } else {
            "full"
        }
    }

    /// One round of the signing ceiling.
    fn round_window(self) -> Duration {
        Duration::from_millis(if self.quick { 300 } else { 1000 })
    }

    /// One round of the fdatasync ceiling, and of the sequential appender after it.
    fn io_round_window(self) -> Duration {
        Duration::from_millis(if self.quick { 600 } else { 2000 })
    }

    /// How long each load figure runs.
    fn load_window(self) -> Duration {
        Duration::from_secs(if self.quick { 3 } else { 10 })
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

fn best<T>(mut f: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<(Duration, T)> {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let out = f()?;
        best = best.min(t.elapsed());
        last = Some(out);
    }
    Ok((best, last.context("at least one round")?))
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

/// CPU used so far by a process, in total and per thread name.
#[derive(Debug, Clone, Default)]
struct CpuSample {
    total: u64,
    by_thread: BTreeMap<String, u64>,
}

fn cpu_sample(pid: &str) -> CpuSample {
    let total = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| stat_ticks(&s))
        .map_or(0, |(_, t)| t);
    let mut by_thread = BTreeMap::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Some((comm, ticks)) = std::fs::read_to_string(task.path().join("stat"))
                .ok()
                .and_then(|s| stat_ticks(&s))
            {
                *by_thread.entry(comm).or_insert(0) += ticks;
            }
        }
    }
    CpuSample { total, by_thread }
}

/// Busy ticks of the whole machine (every process and the kernel), from `/proc/stat`.
fn system_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: everything but idle and iowait.
    [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| v.get(i)).sum()
}

/// CPU used so far by the node, this process and the whole machine.
#[derive(Debug, Clone)]
struct CpuSnapshot {
    node: CpuSample,
    bench: CpuSample,
    system_busy: u64,
}

impl CpuSnapshot {
    fn take(node_pid: &str) -> CpuSnapshot {
        CpuSnapshot {
            node: cpu_sample(node_pid),
            bench: cpu_sample("self"),
            system_busy: system_busy_ticks(),
        }
    }
}

/// Where the CPU went between two snapshots, in cores.
#[derive(Debug, Clone)]
struct CpuSplit {
    node_cores: f64,
    node_threads: Vec<(String, f64)>,
    bench_cores: f64,
    /// Everything else on the machine: other processes and kernel work not charged to ours.
    other_cores: f64,
}

/// A thread's name without a trailing worker number (`sled-io-3` -> `sled-io`).
fn thread_group(name: &str) -> String {
    name.trim_end_matches(|c: char| c.is_ascii_digit())
        .trim_end_matches('-')
        .to_owned()
}

impl CpuSplit {
    fn between(before: &CpuSnapshot, after: &CpuSnapshot, elapsed: Duration) -> CpuSplit {
        let cores = |ticks: u64| ticks as f64 / USER_HZ / elapsed.as_secs_f64();
        let mut groups: BTreeMap<String, u64> = BTreeMap::new();
        for (name, ticks) in &after.node.by_thread {
            let was = before.node.by_thread.get(name).copied().unwrap_or(0);
            *groups.entry(thread_group(name)).or_insert(0) += ticks.saturating_sub(was);
        }
        let mut node_threads: Vec<(String, f64)> = groups
            .into_iter()
            .map(|(name, ticks)| (name, cores(ticks)))
            .filter(|(_, c)| *c >= 0.01)
            .collect();
        node_threads.sort_by(|a, b| b.1.total_cmp(&a.1));
        let node = after.node.total.saturating_sub(before.node.total);
        let bench = after.bench.total.saturating_sub(before.bench.total);
        let system = after.system_busy.saturating_sub(before.system_busy);
        CpuSplit {
            node_cores: cores(node),
            node_threads,
            bench_cores: cores(bench),
            other_cores: cores(system.saturating_sub(node + bench)),
        }
    }
}

impl std::fmt::Display for CpuSplit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let threads: Vec<String> = self
            .node_threads
            .iter()
            .map(|(n, c)| format!("{n} {c:.2}"))
            .collect();
        write!(
            f,
            "cpu of {} cores: node {:.2} ({}), bench clients {:.2}, everything else on the machine {:.2}",
            cores(),
            self.node_cores,
            threads.join(", "),
            self.bench_cores,
            self.other_cores
        )
    }
}

// --- Ceilings ----------------------------------------------------------------------------

/// A note event of the shape the node signs for this load: one parent, a prev link, a note.
fn template_event(key: &SecretKey) -> anyhow::Result<UnsignedEvent> {
    let now = Timestamp(1_772_438_400_000);
    Ok(UnsignedEvent {
        network: NetworkId::parse("dev-net")?,
        author: SiteId::parse("clinic-a")?,
        seq: Seq(2),
        prev: Some(EventId([1; 32])),
        key: key.public(),
        coi: Coi::parse("CHA999926X00000")?,
        parents: vec![EventId([2; 32])],
        occurred_at: now,
        recorded_at: now,
        signer: Signer {
            operator: OperatorId::parse("op.bench")?,
            printed_name: "Bench Operator".to_owned(),
            meaning: Meaning::Performed,
        },
        body: Body::Note {
            text: note_text(0).to_owned(),
        },
    })
}

/// Ceiling (a): events signed per second on `n_threads` threads, each signing its own
/// copies of the template with a fresh seq (so no two are the same bytes).
fn sign_ceiling(window: Duration, n_threads: usize) -> anyhow::Result<f64> {
    let key = SecretKey::from_seed(&[7; 32]);
    let template = template_event(&key)?;
    let started = Instant::now();
    let deadline = started + window;
    let total: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n_threads)
            .map(|_| {
                let template = template.clone();
                let key = &key;
                s.spawn(move || {
                    let mut n = 0u64;
                    loop {
                        for _ in 0..32 {
                            let mut u = template.clone();
                            u.seq = Seq(n + 2);
                            std::hint::black_box(u.sign(key));
                            n += 1;
                        }
                        if Instant::now() >= deadline {
                            return n;
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("signing thread"))
            .sum()
    });
    Ok(per_second(total, started.elapsed()))
}

/// Ceiling (b): appends of a ~300-byte record each made durable by its own fdatasync, as
/// the node's log does it (write at the end, then `sync_data`). Returns (rate, p50).
fn fdatasync_ceiling(dir: &Path, window: Duration) -> anyhow::Result<(f64, Duration)> {
    let path = dir.join("bare-fdatasync.log");
    let mut file = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let record = [0x5a_u8; BARE_RECORD_BYTES];
    let mut latencies = Vec::new();
    let started = Instant::now();
    while started.elapsed() < window {
        let t = Instant::now();
        file.write_all(&record)?;
        file.sync_data()?;
        latencies.push(t.elapsed());
    }
    let rate = per_second(latencies.len() as u64, started.elapsed());
    drop(file);
    std::fs::remove_file(&path)?;
    Ok((rate, quantile(&mut latencies, 0.5)))
}

// --- The node process --------------------------------------------------------------------

/// The last lines the node wrote, and every warning or error it logged.
#[derive(Debug, Default)]
struct NodeLog {
    tail: VecDeque<String>,
    problems: Vec<String>,
}

/// A running `ledger-node` process; killed if still running when dropped.
#[derive(Debug)]
struct NodeProcess {
    child: Option<Child>,
    pid: String,
    grpc_uri: String,
    metrics_addr: SocketAddr,
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

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl NodeProcess {
    /// Starts the node on a free gRPC port with metrics on another, and waits for its
    /// "listening on" line.
    fn start(data_dir: &Path) -> anyhow::Result<NodeProcess> {
        let metrics_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
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
            .args(["--listen", "127.0.0.1:0", "--no-http"])
            .arg("--metrics-listen")
            .arg(metrics_addr.to_string())
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
                // The first start creates a development network and says so: expected here.
                if (line.contains(" WARN ") && !line.contains("DEVELOPMENT network"))
                    || line.contains(" ERROR ")
                {
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
            metrics_addr,
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
        Ok(node)
    }

    fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    fn problems(&self) -> Vec<String> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.problems.clone()
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

    /// Group-commit totals from the node's Prometheus endpoint.
    fn commit_counters(&self) -> anyhow::Result<CommitCounters> {
        let mut s = TcpStream::connect_timeout(&self.metrics_addr, Duration::from_secs(5))
            .with_context(|| format!("connecting to the metrics endpoint {}", self.metrics_addr))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        // HTTP/1.0: the answer is the body up to the close, never chunked.
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .context("metrics answer without a body")?;
        let value = |name: &str| -> f64 {
            body.lines()
                .filter_map(|l| l.strip_prefix(name))
                .filter_map(|rest| rest.strip_prefix(' '))
                .filter_map(|v| v.trim().parse::<f64>().ok())
                .sum()
        };
        Ok(CommitCounters {
            n_commits: value("ledger_commits_total"),
            n_events: value("ledger_commit_group_events_sum"),
            commit_seconds: value("ledger_commit_seconds_sum"),
        })
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

#[derive(Debug, Clone, Copy, Default)]
struct CommitCounters {
    n_commits: f64,
    n_events: f64,
    /// Seconds the committer spent in `Store::commit` (write, fdatasync, sled index).
    commit_seconds: f64,
}

impl CommitCounters {
    fn events_per_commit_since(&self, before: &CommitCounters) -> (f64, f64, f64) {
        let n_commits = self.n_commits - before.n_commits;
        let n_events = self.n_events - before.n_events;
        let per = if n_commits > 0.0 {
            n_events / n_commits
        } else {
            0.0
        };
        (n_events, n_commits, per)
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
    async fn connect(uri: &str, token: &str) -> anyhow::Result<Client> {
        let channel = Channel::from_shared(uri.to_owned())?
            .timeout(CALL_TIMEOUT)
            .connect()
            .await
            .with_context(|| format!("connecting to {uri}"))?;
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
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
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

    fn collection(&mut self) -> pb::AppendRequest {
        let deadline = prost_types::Timestamp {
            seconds: now_wire().seconds + 30 * 86_400,
            nanos: 0,
        };
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

/// Connects `n` clients, client i as clinic i mod 2, each with its chain opened by a
/// collection (outside any measured window).
async fn clients_with_chains(
    node: &NodeProcess,
    phase: char,
    n: usize,
) -> anyhow::Result<Vec<(Client, ChainWriter)>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let site = CLINICS[i % CLINICS.len()];
        let mut client = Client::connect(&node.grpc_uri, &node.token(site)?).await?;
        let mut chain = ChainWriter::new(phase, i, site);
        client
            .append(chain.collection())
            .await
            .with_context(|| format!("opening chain {} as {site}", chain.coi))?;
        out.push((client, chain));
    }
    Ok(out)
}

/// What a load phase produced.
#[derive(Debug)]
struct Load {
    n_ok: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    refusals: Refusals,
    counters_before: CommitCounters,
    counters_after: CommitCounters,
    cpu: CpuSplit,
}

impl Load {
    fn rate(&self) -> f64 {
        per_second(self.n_ok, self.elapsed)
    }
}

/// Runs one task per client until `window` has passed; each task calls `step` in a loop,
/// which returns (OK events, refusals) of one call.
async fn run_load<F, Fut>(
    node: &NodeProcess,
    clients: Vec<(Client, ChainWriter)>,
    window: Duration,
    step: F,
) -> anyhow::Result<(Load, Vec<(Client, ChainWriter)>)>
where
    F: Fn(Client, ChainWriter) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = (Client, ChainWriter, u64, Refusals)> + Send + 'static,
{
    let counters_before = node.commit_counters()?;
    let cpu_before = CpuSnapshot::take(&node.pid);
    let started = Instant::now();
    let deadline = started + window;
    let mut tasks = tokio::task::JoinSet::new();
    for (client, chain) in clients {
        let step = step.clone();
        tasks.spawn(async move {
            let (mut client, mut chain) = (client, chain);
            let mut n_ok = 0;
            let mut refusals = Refusals::default();
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let (c, w, ok, refused) = step(client, chain).await;
                (client, chain) = (c, w);
                latencies.push(t.elapsed());
                n_ok += ok;
                refusals.merge(refused);
            }
            (client, chain, n_ok, latencies, refusals)
        });
    }
    let mut load = Load {
        n_ok: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        refusals: Refusals::default(),
        counters_before,
        counters_after: counters_before,
        cpu: CpuSplit::between(&cpu_before, &cpu_before, window),
    };
    let mut clients = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (client, chain, n_ok, latencies, refusals) =
            joined.context("a client task panicked")?;
        clients.push((client, chain));
        load.n_ok += n_ok;
        load.latencies.extend(latencies);
        load.refusals.merge(refusals);
    }
    load.elapsed = started.elapsed();
    load.cpu = CpuSplit::between(&cpu_before, &CpuSnapshot::take(&node.pid), load.elapsed);
    load.counters_after = node.commit_counters()?;
    Ok((load, clients))
}

async fn append_one(
    mut client: Client,
    mut chain: ChainWriter,
) -> (Client, ChainWriter, u64, Refusals) {
    let mut refusals = Refusals::default();
    let ok = match client.append(chain.next()).await {
        Ok(_) => 1,
        Err(s) => {
            refusals.add(s.code(), s.message());
            0
        }
    };
    (client, chain, ok, refusals)
}

async fn append_batch(
    mut client: Client,
    mut chain: ChainWriter,
) -> (Client, ChainWriter, u64, Refusals) {
    let requests: Vec<pb::AppendRequest> = (0..BATCH_EVENTS).map(|_| chain.next()).collect();
    let mut refusals = Refusals::default();
    let ok = match client.append_batch(requests).await {
        Ok(results) => refusals.count_batch(&results),
        Err(s) => {
            for _ in 0..BATCH_EVENTS {
                refusals.add(s.code(), s.message());
            }
            0
        }
    };
    (client, chain, ok, refusals)
}

fn print_load(name: &str, load: &mut Load) {
    let p50 = quantile(&mut load.latencies, 0.5);
    let p99 = quantile(&mut load.latencies, 0.99);
    println!(
        "{name}: {} OK events in {:.2} s = {:.0}/s; call latency p50 {:.2} ms, p99 {:.2} ms",
        load.n_ok,
        load.elapsed.as_secs_f64(),
        load.rate(),
        ms(p50),
        ms(p99)
    );
    let (n_events, n_commits, per) = load
        .counters_after
        .events_per_commit_since(&load.counters_before);
    let commit_seconds = load.counters_after.commit_seconds - load.counters_before.commit_seconds;
    println!(
        "  group commit: {n_events:.0} events in {n_commits:.0} fdatasyncs = {per:.1} events/fdatasync; Store::commit (write + fdatasync + index) {:.2} ms per group = {:.0} us per event, busy {:.0}% of the window",
        1e3 * commit_seconds / n_commits.max(1.0),
        1e6 * commit_seconds / n_events.max(1.0),
        100.0 * commit_seconds / load.elapsed.as_secs_f64()
    );
    println!("  {}", load.cpu);
    // CPU seconds per OK event: what a target in events/s on these cores has to fit into.
    let per_event_us = |cores: f64| 1e6 * cores / load.rate().max(1e-9);
    let threads: Vec<String> = load
        .cpu
        .node_threads
        .iter()
        .map(|(n, c)| format!("{n} {:.0}", per_event_us(*c)))
        .collect();
    println!(
        "  cpu per OK event: node {:.0} us ({}), bench clients {:.0} us",
        per_event_us(load.cpu.node_cores),
        threads.join(", "),
        per_event_us(load.cpu.bench_cores)
    );
    println!("  {}", load.refusals.describe());
}

// --- Figures -----------------------------------------------------------------------------

/// Ceiling (c): p50 of a grpc.health.v1 Check from one client (no auth, no ledger lock).
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

/// Ceiling (d): `N_CONCURRENT_CLIENTS` clients, each on its own connection as in figure 2,
/// calling grpc.health.v1 Check in a loop for `window`: the rate of a bare unary call
/// (no auth, no decoding of an event, no ledger lock, no disk) on these cores. No handler
/// can answer one-event calls faster than this, so figure 2's ratio to (a) can reach at
/// most (d)/(a) on this machine.
async fn unary_ceiling(node: &NodeProcess, window: Duration) -> anyhow::Result<(f64, CpuSplit)> {
    let mut clients = Vec::with_capacity(N_CONCURRENT_CLIENTS);
    for _ in 0..N_CONCURRENT_CLIENTS {
        let channel = Channel::from_shared(node.grpc_uri.clone())?
            .timeout(CALL_TIMEOUT)
            .connect()
            .await?;
        clients.push(tonic_health::pb::health_client::HealthClient::new(channel));
    }
    let cpu_before = CpuSnapshot::take(&node.pid);
    let started = Instant::now();
    let deadline = started + window;
    let mut tasks = tokio::task::JoinSet::new();
    for mut health in clients {
        tasks.spawn(async move {
            let mut n_ok: u64 = 0;
            while Instant::now() < deadline {
                health
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await?;
                n_ok += 1;
            }
            Ok::<u64, tonic::Status>(n_ok)
        });
    }
    let mut n_ok = 0;
    while let Some(joined) = tasks.join_next().await {
        n_ok += joined
            .context("a health client task panicked")?
            .context("health check")?;
    }
    let elapsed = started.elapsed();
    let cpu = CpuSplit::between(&cpu_before, &CpuSnapshot::take(&node.pid), elapsed);
    Ok((per_second(n_ok, elapsed), cpu))
}

/// Figure 5: appends a chain of `VERIFY_CHAIN_EVENTS` through AppendBatch; returns its COI.
async fn build_long_chain(node: &NodeProcess) -> anyhow::Result<String> {
    let site = CLINICS[0];
    let mut client = Client::connect(&node.grpc_uri, &node.token(site)?).await?;
    let mut chain = ChainWriter::new('V', 0, site);
    let mut requests = Vec::with_capacity(VERIFY_CHAIN_EVENTS);
    requests.push(chain.collection());
    while requests.len() < VERIFY_CHAIN_EVENTS {
        requests.push(chain.next());
    }
    let mut refusals = Refusals::default();
    let mut n_ok = 0;
    for batch in requests.chunks(APPEND_BATCH_MAX) {
        n_ok += refusals.count_batch(&client.append_batch(batch.to_vec()).await?);
    }
    ensure!(
        n_ok as usize == VERIFY_CHAIN_EVENTS && refusals.total() == 0,
        "building the {VERIFY_CHAIN_EVENTS}-event chain: {n_ok} OK; {}",
        refusals.describe()
    );
    Ok(chain.coi)
}

async fn verify_chain_rpc(
    client: &mut Client,
    coi: &str,
) -> anyhow::Result<pb::VerifyChainResponse> {
    let req = client.request(pb::VerifyChainRequest {
        coi: coi.to_owned(),
    });
    Ok(client.api.verify_chain(req).await?.into_inner())
}

async fn fetch_chain(client: &mut Client, coi: &str) -> anyhow::Result<Vec<ledger_core::Event>> {
    let mut events = Vec::new();
    let mut page_token = String::new();
    loop {
        let req = client.request(pb::GetChainRequest {
            coi: coi.to_owned(),
            page_size: CHAIN_PAGE_MAX,
            page_token: page_token.clone(),
        });
        let page = client.api.get_chain(req).await?.into_inner();
        for e in page.events {
            events.push(
                ledger_core::Event::from_bytes(&e.signed_bytes)
                    .map_err(|err| anyhow::anyhow!("event {}: {err}", e.event_id))?,
            );
        }
        if page.next_page_token.is_empty() {
            return Ok(events);
        }
        page_token = page.next_page_token;
    }
}

/// Figure 6: uploads `MEMORY_EVENTS` events into chains of `MEMORY_CHAIN_EVENTS` through
/// AppendBatch calls of `APPEND_BATCH_MAX` requests (whole chains, collection first).
async fn upload_million(node: &NodeProcess) -> anyhow::Result<(u64, Refusals, Duration)> {
    assert_eq!(
        APPEND_BATCH_MAX % MEMORY_CHAIN_EVENTS,
        0,
        "batches hold whole chains"
    );
    let n_chains = memory_events() / MEMORY_CHAIN_EVENTS;
    let chains_per_batch = APPEND_BATCH_MAX / MEMORY_CHAIN_EVENTS;
    let n_batches = n_chains / chains_per_batch;
    let next_batch = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for u in 0..MEMORY_UPLOADERS {
        let site = CLINICS[u % CLINICS.len()];
        let client = Client::connect(&node.grpc_uri, &node.token(site)?).await?;
        let next_batch = next_batch.clone();
        let pid = node.pid.clone();
        tasks.spawn(async move {
            let mut client = client;
            let mut n_ok = 0u64;
            let mut refusals = Refusals::default();
            loop {
                let b = next_batch.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if b >= n_batches {
                    return Ok::<_, anyhow::Error>((n_ok, refusals));
                }
                let mut requests = Vec::with_capacity(APPEND_BATCH_MAX);
                for c in 0..chains_per_batch {
                    let mut chain = ChainWriter::new('M', b * chains_per_batch + c, site);
                    requests.push(chain.collection());
                    requests.extend((1..MEMORY_CHAIN_EVENTS).map(|_| chain.next()));
                }
                match client.append_batch(requests).await {
                    Ok(results) => n_ok += refusals.count_batch(&results),
                    Err(s) => {
                        for _ in 0..APPEND_BATCH_MAX {
                            refusals.add(s.code(), s.message());
                        }
                    }
                }
                if (b + 1).is_multiple_of((n_batches / 10).max(1)) {
                    println!(
                        "  batch {} of {n_batches} answered after {:.0} s; node RSS {:.1} MiB",
                        b + 1,
                        started.elapsed().as_secs_f64(),
                        status_kib(&pid, "VmRSS:").unwrap_or(0) as f64 / 1024.0
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
    Ok((n_ok, refusals, started.elapsed()))
}

/// Figure 6: a fresh node's RSS after `MEMORY_EVENTS` appended events.
fn memory_figure(
    root: &Path,
    runtime: &tokio::runtime::Runtime,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut node = NodeProcess::start(&root.join("memory-node"))?;
    let (rss_start, _) = node.memory_kib()?;
    println!(
        "memory: fresh node RSS {:.1} MiB; uploading {} events ({} chains of {MEMORY_CHAIN_EVENTS}, AppendBatch of {APPEND_BATCH_MAX}, {MEMORY_UPLOADERS} uploaders)",
        rss_start as f64 / 1024.0,
        memory_events(),
        memory_events() / MEMORY_CHAIN_EVENTS
    );
    let (n_ok, refusals, took) = runtime.block_on(upload_million(&node))?;
    let (rss, hwm) = node.memory_kib()?;
    let store_dir = node.data_dir.join("store");
    println!(
        "memory: {n_ok} events acknowledged in {:.0} s ({:.0}/s); node RSS {:.1} MiB (peak {:.1} MiB); store on disk {:.0} MiB (log + index)",
        took.as_secs_f64(),
        per_second(n_ok, took),
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        dir_bytes(&store_dir) as f64 / 1_048_576.0
    );
    println!("  {}", refusals.describe());
    // The node is idle now: what it still holds once the allocator has returned the pages
    // freed by the upload (jemalloc purges them within its 10 s decay) is its memory for
    // 1,000,000 events; both values are printed.
    std::thread::sleep(MEMORY_SETTLE);
    let (settled, _) = node.memory_kib()?;
    let part = |name: &str| status_kib(&node.pid, name).unwrap_or(0) as f64 / 1024.0;
    println!(
        "memory: node RSS {:.1} MiB after {} s idle (anonymous {:.1}, file-backed {:.1})",
        settled as f64 / 1024.0,
        MEMORY_SETTLE.as_secs(),
        part("RssAnon:"),
        part("RssFile:")
    );
    let settled_mib = settled as f64 / 1024.0;
    report.row(
        "node RSS after 1,000,000 events",
        format!(
            "{settled_mib:.1} MiB idle ({:.1} at the last answer, peak {:.1})",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        ),
        "—".into(),
        "—".into(),
        "< 200 MiB",
        Some(
            settled_mib < 200.0
                && n_ok as usize == MEMORY_EVENTS
                && memory_events() == MEMORY_EVENTS,
        ),
    );
    let more = node.problems();
    node.stop()?;
    for p in more {
        println!("node (memory run) logged: {p}");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mode = Mode::from_env();
    let n_cores = cores();
    let root = tempfile::Builder::new()
        .prefix("ledger-append-bench-")
        .tempdir()
        .context("creating the benchmark directory")?;
    println!("node appends benchmark, {} mode", mode.name());
    println!("machine: {}", machine());
    println!("machine load at start: {}", machine_load());
    println!(
        "data directory: {} ({})",
        root.path().display(),
        fs_type(root.path())
    );
    println!(
        "node: {} as its own process, default configuration (sled cache {} MiB), metrics on",
        env!("CARGO_BIN_EXE_ledger-node"),
        ledger_node::config::SLED_CACHE_MIB_DEFAULT
    );
    println!(
        "NOTE: the benchmark's clients and the node share the same {n_cores} cores; the CPU split is printed per figure"
    );
    let mut report = Report::default();
    if mode.only_memory {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        memory_figure(root.path(), &runtime, &mut report)?;
        report.print();
        return Ok(());
    }

    // --- Ceiling (a), before the node exists --------------------------------------------
    // Best of several short windows: the round least disturbed by other work on a shared
    // machine. A higher ceiling only makes the targets stricter.
    let mut sign_rate: f64 = 0.0;
    let mut sign_rate_one: f64 = 0.0;
    for _ in 0..ROUNDS {
        sign_rate_one = sign_rate_one.max(sign_ceiling(mode.round_window(), 1)?);
        sign_rate = sign_rate.max(sign_ceiling(mode.round_window(), n_cores)?);
    }
    println!(
        "ceiling (a): UnsignedEvent::sign on {n_cores} threads: {sign_rate:.0} events/s (one thread: {sign_rate_one:.0}/s, {:.1} us/event)",
        1e6 / sign_rate_one
    );

    let mut node = NodeProcess::start(&root.path().join("node"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    // --- Ceiling (c) ----------------------------------------------------------------------
    let rtt_p50 = runtime.block_on(round_trip_ceiling(&node))?;
    println!(
        "ceiling (c): gRPC health check round trip, one client: p50 {:.0} us",
        us(rtt_p50)
    );

    // --- Ceiling (b) and figure 4, one client in sequence, in alternating rounds ----------
    // fdatasync latency on a shared disk swings by 10x with other tenants' writes (their
    // journal commits are ours to wait for), so the ceiling and the figure take turns, and
    // each keeps its best round. First of the load figures, so nothing else is queued.
    let mut sync_best: Option<(f64, Duration)> = None;
    let mut seq_best: Option<Load> = None;
    let mut seq_clients = runtime.block_on(clients_with_chains(&node, 'S', 1))?;
    for round in 1..=ROUNDS {
        let (rate, p50) = fdatasync_ceiling(root.path(), mode.io_round_window())?;
        let (mut load, clients) = runtime.block_on(run_load(
            &node,
            seq_clients,
            mode.io_round_window(),
            append_one,
        ))?;
        seq_clients = clients;
        let load_p50 = quantile(&mut load.latencies, 0.5);
        println!(
            "round {round}: bare write + fdatasync {rate:.0}/s (mean {:.0} us, p50 {:.0} us); 1 client in sequence {:.0} appends/s (p50 {:.0} us, {} non-OK)",
            1e6 / rate,
            us(p50),
            load.rate(),
            us(load_p50),
            load.refusals.total()
        );
        if sync_best.is_none_or(|(r, _)| rate > r) {
            sync_best = Some((rate, p50));
        }
        if seq_best.as_ref().is_none_or(|b| load.rate() > b.rate()) {
            seq_best = Some(load);
        }
    }
    let (sync_rate, sync_p50) = sync_best.context("at least one round")?;
    let mut seq_load = seq_best.context("at least one round")?;
    println!(
        "ceiling (b): write {BARE_RECORD_BYTES} B + fdatasync, best round: {sync_rate:.0}/s (mean {:.0} us, p50 {:.0} us)",
        1e6 / sync_rate,
        us(sync_p50)
    );
    print_load("sequential appends (1 client), best round", &mut seq_load);
    let seq_rate = seq_load.rate();
    let seq_p50 = quantile(&mut seq_load.latencies, 0.5);
    let latency_bound =
        Duration::from_secs_f64(1.0 / sync_rate) + rtt_p50 + Duration::from_micros(200);

    // --- Ceiling (d), just before figure 2 on the same cores -------------------------------
    let (unary_rate, unary_cpu) = runtime.block_on(unary_ceiling(&node, mode.load_window()))?;
    println!(
        "ceiling (d): {N_CONCURRENT_CLIENTS} clients, bare unary gRPC (health Check): {unary_rate:.0} calls/s = {:.2} of (a)",
        unary_rate / sign_rate
    );
    println!("  {unary_cpu}");
    println!(
        "  cpu per call: node {:.0} us, bench clients {:.0} us",
        1e6 * unary_cpu.node_cores / unary_rate.max(1e-9),
        1e6 * unary_cpu.bench_cores / unary_rate.max(1e-9)
    );

    // --- Figure 2: 64 concurrent single-event appenders -----------------------------------
    let (mut conc, _) = runtime.block_on(async {
        let clients = clients_with_chains(&node, 'W', N_CONCURRENT_CLIENTS).await?;
        run_load(&node, clients, mode.load_window(), append_one).await
    })?;
    print_load(
        &format!("concurrent appends ({N_CONCURRENT_CLIENTS} clients, one event per call)"),
        &mut conc,
    );
    let conc_rate = conc.rate();
    println!(
        "  against (d): {:.2} of the bare unary rate on the same cores",
        conc_rate / unary_rate.max(1e-9)
    );
    let (_, _, conc_per_sync) = conc
        .counters_after
        .events_per_commit_since(&conc.counters_before);

    // --- Figure 3: AppendBatch uploads ------------------------------------------------------
    let (mut batch, _) = runtime.block_on(async {
        let clients = clients_with_chains(&node, 'B', N_BATCH_CLIENTS).await?;
        run_load(&node, clients, mode.load_window(), append_batch).await
    })?;
    print_load(
        &format!("AppendBatch ({N_BATCH_CLIENTS} clients, {BATCH_EVENTS} events per call)"),
        &mut batch,
    );
    let batch_rate = batch.rate();
    // The target as CPU: the node and clients measured per event in this figure, at the
    // target's rate. More than the machine's cores means the target cannot be met by
    // overlapping work better, only by spending less CPU per event.
    let batch_target = 0.5 * sign_rate;
    let batch_cpu_per_event = (batch.cpu.node_cores + batch.cpu.bench_cores) / batch_rate.max(1e-9);
    println!(
        "  at the target (0.5 of (a) = {batch_target:.0} events/s) this figure's CPU per event ({:.0} us, node and clients) needs {:.2} cores of {n_cores}; one feed's signatures alone need {:.2} of one core (one thread signs {sign_rate_one:.0}/s)",
        1e6 * batch_cpu_per_event,
        batch_target * batch_cpu_per_event,
        batch_target / sign_rate_one
    );

    // --- Figure 5: VerifyChain vs in-process verify -----------------------------------------
    let (verify_coi, mut auditor) = runtime.block_on(async {
        let coi = build_long_chain(&node).await?;
        let auditor = Client::connect(&node.grpc_uri, &node.token("auditor")?).await?;
        anyhow::Ok((coi, auditor))
    })?;
    let (node_verify, answer) =
        best(|| runtime.block_on(verify_chain_rpc(&mut auditor, &verify_coi)))?;
    let events = runtime.block_on(fetch_chain(&mut auditor, &verify_coi))?;
    ensure!(
        events.len() == VERIFY_CHAIN_EVENTS,
        "GetChain returned {} events, expected {VERIFY_CHAIN_EVENTS}",
        events.len()
    );
    let network = ledger_node::network::load(&node.data_dir.join("network"), &[])?;
    let trust = Trust {
        anchor: network.anchor,
        network: network.id.clone(),
        certificates: network.certificates.clone(),
        revocations: network.revocations.clone(),
    };
    let options = Options {
        scope: Scope::CoiExport,
        policy: ledger_node::policy(&ledger_node::config::Config::default()),
        coi: Some(Coi::parse(&verify_coi)?),
        heads: None,
        checkpoints: Vec::new(),
    };
    let (local_verify, verdict) = best(|| Ok(ledger_core::verify(&events, &trust, &options)))?;
    let event_bytes: usize = events.iter().map(|e| e.bytes().len()).sum();
    println!(
        "verify: chain of {} events ({:.0} B/event signed): VerifyChain best {:.1} ms ({:?}, {} events), in-process verify best {:.1} ms ({:?}, {} events)",
        events.len(),
        event_bytes as f64 / events.len() as f64,
        ms(node_verify),
        pb::Verdict::try_from(answer.verdict).unwrap_or(pb::Verdict::Unspecified),
        answer.event_count,
        ms(local_verify),
        verdict.kind,
        verdict.n_events
    );
    ensure!(
        verdict.kind == VerdictKind::Intact && answer.verdict == pb::Verdict::Intact as i32,
        "the benchmark chain must verify intact: node {:?}, in-process {:?} {:?}",
        answer.verdict,
        verdict.kind,
        verdict.findings.first()
    );
    drop((events, verdict));
    let problems = node.problems();
    node.stop()?;

    // --- Report figures 1-5 -----------------------------------------------------------------
    report.row(
        "(a) ceiling: encode+hash+sign, all cores",
        format!("{sign_rate:.0} events/s"),
        "—".into(),
        "—".into(),
        "—",
        None,
    );
    report.row(
        "(b) ceiling: write 300 B + fdatasync",
        format!("{sync_rate:.0}/s ({:.0} µs)", 1e6 / sync_rate),
        "—".into(),
        "—".into(),
        "—",
        None,
    );
    report.row(
        "(c) ceiling: gRPC health check p50",
        format!("{:.0} µs", us(rtt_p50)),
        "—".into(),
        "—".into(),
        "—",
        None,
    );
    report.row(
        &format!("(d) ceiling: {N_CONCURRENT_CLIENTS} clients, bare unary gRPC calls/s"),
        format!("{unary_rate:.0}/s"),
        format!("(a) {sign_rate:.0}/s"),
        format!("{:.2}", unary_rate / sign_rate),
        "—",
        None,
    );
    let conc_ratio = conc_rate / sign_rate;
    report.row(
        "64 clients, Append: durable appends/s",
        format!("{conc_rate:.0}/s"),
        format!("(a) {sign_rate:.0}/s"),
        format!("{conc_ratio:.2}"),
        ">= 20,000/s and >= 0.25",
        Some(conc_rate >= 20_000.0 && conc_ratio >= 0.25 && conc.refusals.total() == 0),
    );
    report.row(
        "64 clients, Append: events per fdatasync",
        format!("{conc_per_sync:.1}"),
        "—".into(),
        "—".into(),
        ">= 8",
        Some(conc_per_sync >= 8.0),
    );
    let batch_ratio = batch_rate / sign_rate;
    report.row(
        &format!("AppendBatch ({N_BATCH_CLIENTS} clients x {BATCH_EVENTS}/call): events/s"),
        format!("{batch_rate:.0}/s"),
        format!("(a) {sign_rate:.0}/s"),
        format!("{batch_ratio:.2}"),
        ">= 0.5",
        Some(batch_ratio >= 0.5 && batch.refusals.total() == 0),
    );
    let seq_ratio = seq_rate / sync_rate;
    report.row(
        "1 client in sequence: appends/s",
        format!("{seq_rate:.0}/s"),
        format!("(b) {sync_rate:.0}/s"),
        format!("{seq_ratio:.2}"),
        ">= 0.5",
        Some(seq_ratio >= 0.5 && seq_load.refusals.total() == 0),
    );
    report.row(
        "1 client in sequence: p50 latency",
        format!("{:.0} µs", us(seq_p50)),
        format!("1/(b) + (c) + 200 µs = {:.0} µs", us(latency_bound)),
        format!("{:.2}", seq_p50.as_secs_f64() / latency_bound.as_secs_f64()),
        "<= 1.0",
        Some(seq_p50 <= latency_bound),
    );
    let verify_ratio = node_verify.as_secs_f64() / local_verify.as_secs_f64();
    report.row(
        "VerifyChain, 10,000-event chain",
        format!("{:.1} ms", ms(node_verify)),
        format!("in-process verify {:.1} ms", ms(local_verify)),
        format!("{verify_ratio:.2}"),
        "<= 1.5",
        Some(verify_ratio <= 1.5),
    );

    // --- Figure 6: memory after 1,000,000 events (full mode) ------------------------------
    if mode.quick {
        println!("memory figure: skipped in quick mode (it appends {MEMORY_EVENTS} events)");
    } else {
        memory_figure(root.path(), &runtime, &mut report)?;
    }
    drop(runtime);

    for p in problems {
        println!("node logged: {p}");
    }
    println!("machine load at end: {}", machine_load());
    report.print();
    Ok(())
}
