//! Real `nats-server` processes for tests: JetStream on, 127.0.0.1 only, free ports and a
//! temporary store directory of their own.
//!
//! Each server runs under a small `sh` wrapper that holds a pipe from this process. When the
//! pipe closes (the test ended, or was killed, even by SIGKILL) the wrapper stops the server,
//! so no test leaves one running. The wrapper waits for the server and exits with it, so
//! "the wrapper has exited" means "the server has exited and been reaped": signals go to the
//! real server pid, and its exit is seen at once (a server that dies while starting fails the
//! start immediately, with its output).
//!
//! Readiness is polled, never slept for: the server's "Server is ready" line, then its
//! monitoring endpoint `/healthz?js-enabled-only=true`, and for a cluster `/jsz` until
//! JetStream names a meta leader.

use anyhow::{bail, Context};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server (or a cluster) may take to become ready.
pub const READY_DEADLINE: Duration = Duration::from_secs(20);
/// How long [`NatsServer::stop`] waits after SIGTERM before it sends SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often readiness and exit are polled.
const POLL: Duration = Duration::from_millis(20);

/// The nats-server binary: `NATS_SERVER_BIN` if set, else the one `scripts/setup` installs
/// in `<workspace>/.tools/nats/bin`, else `nats-server` on the PATH.
pub fn nats_server_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        let p = PathBuf::from(p);
        // A bare name is looked up on the PATH when spawned; a path must exist.
        if p.components().count() > 1 && !p.is_file() {
            bail!(
                "NATS_SERVER_BIN is {}, which is not a file (unset it to use the one scripts/setup installs)",
                p.display()
            );
        }
        return Ok(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the tests crate has no parent directory")?;
    let installed = root.join(".tools/nats/bin/nats-server");
    if installed.is_file() {
        return Ok(installed);
    }
    let on_path = Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if on_path.is_ok_and(|s| s.success()) {
        return Ok(PathBuf::from("nats-server"));
    }
    bail!(
        "nats-server is missing: run scripts/setup (it installs nats-server 2.10+ into {}), \
         or set NATS_SERVER_BIN",
        installed.display()
    )
}

/// `k` distinct free ports on 127.0.0.1. The listeners are all held until every port is
/// chosen, so the same port is never handed out twice; another process may still take one
/// before the server binds it, which [`NatsServer::start`] and [`NatsCluster::start`] retry.
fn free_ports(k: usize) -> anyhow::Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..k)
        .map(|_| TcpListener::bind("127.0.0.1:0").context("finding a free port"))
        .collect::<anyhow::Result<_>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// True when a start failed because a chosen port was taken in the meantime.
fn port_was_taken(e: &anyhow::Error) -> bool {
    format!("{e:#}").contains("address already in use")
}

/// How many times a start picks fresh ports after losing one to another process.
const START_TRIES: usize = 3;

/// The wrapper. `$1` is the binary, `$2` the log file, the rest the server's arguments. It
/// prints the server's pid, then waits for the server; a watcher in the background stops the
/// server (SIGTERM, SIGKILL 10 s later) when standard input reaches end of file, that is when
/// the test process closes its end of the pipe or dies. The wrapper ends the watcher when the
/// server exits, so the watcher never signals a pid that was reused.
const WRAPPER: &str = r#"
bin="$1"; log="$2"; shift 2
"$bin" "$@" >>"$log" 2>&1 </dev/null &
p=$!
echo "$p"
exec 3<&0
(
  read -r _ <&3 || true
  kill "$p" 2>/dev/null || exit 0
  n=0
  while [ "$n" -lt 100 ]; do
    sleep 0.1
    kill -0 "$p" 2>/dev/null || exit 0
    n=$((n + 1))
  done
  kill -9 "$p" 2>/dev/null
) >/dev/null 2>&1 &
w=$!
exec 3<&-
wait "$p"
s=$?
kill "$w" 2>/dev/null
exit "$s"
"#;

/// One nats-server process under its wrapper.
#[derive(Debug)]
struct Process {
    wrapper: Child,
    /// This process's end of the wrapper's standard input; closing it stops the server.
    pipe: Option<ChildStdin>,
    /// The nats-server's own pid.
    pid: u32,
    log: PathBuf,
    /// Where this run's output starts in `log` (the log keeps earlier runs too).
    log_from: u64,
}

impl Process {
    fn spawn(args: &[String], log: &Path) -> anyhow::Result<Process> {
        let bin = nats_server_bin()?;
        let log_from = std::fs::metadata(log).map(|m| m.len()).unwrap_or(0);
        let mut wrapper = Command::new("sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg("nats-server-wrapper")
            .arg(&bin)
            .arg(log)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning sh for the nats-server wrapper")?;
        let out = wrapper.stdout.take().context("wrapper stdout")?;
        let mut line = String::new();
        let read = BufReader::new(out).read_line(&mut line);
        let pipe = wrapper.stdin.take();
        let mut p = Process {
            wrapper,
            pipe,
            pid: 0,
            log: log.to_owned(),
            log_from,
        };
        read.context("reading the nats-server pid from its wrapper")?;
        match line.trim().parse() {
            Ok(pid) => p.pid = pid,
            Err(_) => bail!("the nats-server wrapper printed {line:?}, not a pid"),
        }
        Ok(p)
    }

    /// The server's output since this run started.
    fn output(&self) -> String {
        let all = std::fs::read(&self.log).unwrap_or_default();
        let from = usize::try_from(self.log_from)
            .unwrap_or(usize::MAX)
            .min(all.len());
        String::from_utf8_lossy(&all[from..]).into_owned()
    }

    /// Whether the server has exited (its wrapper exits with it, after reaping it).
    fn exited(&mut self) -> bool {
        !matches!(self.wrapper.try_wait(), Ok(None))
    }

    fn signal(&mut self, sig: &str) {
        // Only while the wrapper runs: until then the pid is the server's (alive or not yet
        // reaped), never a reused one.
        if !self.exited() {
            let _ = Command::new("kill")
                .args([sig, &self.pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Waits up to `limit` for the server to exit; true if it did.
    fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.exited() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(POLL);
        }
    }

    /// SIGTERM, then SIGKILL if the server has not exited after [`STOP_GRACE`].
    fn stop(&mut self) {
        self.signal("-TERM");
        if !self.wait_exit(STOP_GRACE) {
            self.kill();
        }
        self.reap();
    }

    /// SIGKILL, as a crash.
    fn kill(&mut self) {
        self.signal("-KILL");
        self.reap();
    }

    fn reap(&mut self) {
        // The server is dead or being killed: wait for the wrapper (it ends its watcher), then
        // close the pipe.
        let _ = self.wrapper.wait();
        self.pipe = None;
    }

    /// Polls until the server is ready: it logged "Server is ready", its monitoring endpoint
    /// reports JetStream healthy and, with `meta_leader`, JetStream names a meta leader.
    fn wait_ready(
        &mut self,
        monitor_port: u16,
        meta_leader: bool,
        deadline: Instant,
    ) -> anyhow::Result<()> {
        let mut logged = false;
        let mut healthy = false;
        loop {
            if self.exited() {
                let status = self.wrapper.try_wait().ok().flatten();
                bail!(
                    "nats-server exited while starting ({}); its output:\n{}",
                    status.map_or_else(|| "unknown status".to_owned(), |s| s.to_string()),
                    self.output()
                );
            }
            logged = logged || self.output().contains("Server is ready");
            healthy = healthy
                || (logged
                    && http_get(monitor_port, "/healthz?js-enabled-only=true")
                        .is_some_and(|(code, _)| code == 200));
            if healthy
                && (!meta_leader
                    || http_get(monitor_port, "/jsz").is_some_and(|(code, body)| {
                        code == 200 && jsz_meta_leader(&body).is_some()
                    }))
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let what = if !logged {
                    "did not log \"Server is ready\""
                } else if !healthy {
                    "did not report JetStream healthy on /healthz"
                } else {
                    "did not report a JetStream meta leader on /jsz"
                };
                let out = self.output();
                self.kill();
                bail!("nats-server {what} within {READY_DEADLINE:?}; its output:\n{out}");
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A tiny HTTP/1.0 GET against the monitoring port on 127.0.0.1: the status code and body,
/// or None if the server does not answer (yet).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

/// `meta_cluster.leader` from a `/jsz` answer, if it names one.
fn jsz_meta_leader(body: &str) -> Option<String> {
    let start = body.find("\"meta_cluster\"")?;
    let open = start + body[start..].find('{')?;
    // The meta_cluster object only: its replicas are objects too, so count braces.
    let mut depth = 0usize;
    let mut end = None;
    for (i, ch) in body[open..].char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    end = Some(open + i);
                    break;
                }
            }
            _ => {}
        }
    }
    let object = &body[open..end?];
    let after = &object[object.find("\"leader\"")? + "\"leader\"".len()..];
    let value = after
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    let name = &value[..value.find('"')?];
    (!name.is_empty()).then(|| name.to_owned())
}

/// A single nats-server with JetStream on 127.0.0.1. Dropping it kills the server and
/// removes its store.
#[derive(Debug)]
pub struct NatsServer {
    // Declared before `dir`: the server dies before its store is removed.
    process: Option<Process>,
    port: u16,
    monitor_port: u16,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server on a free port with its own store and waits until JetStream is ready.
    pub fn start() -> anyhow::Result<NatsServer> {
        let dir = tempfile::Builder::new()
            .prefix("nats-")
            .tempdir()
            .context("creating the nats-server temp dir")?;
        let mut tries = 0;
        loop {
            tries += 1;
            let ports = free_ports(2)?;
            let (port, monitor_port) = (ports[0], ports[1]);
            let args = NatsServer::args(port, monitor_port, &dir.path().join("js"));
            match NatsServer::launch(&args, &dir.path().join("nats.log"), monitor_port) {
                Ok(p) => {
                    return Ok(NatsServer {
                        process: Some(p),
                        port,
                        monitor_port,
                        dir,
                    })
                }
                Err(e) if tries < START_TRIES && port_was_taken(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn args(port: u16, monitor_port: u16, store: &Path) -> Vec<String> {
        vec![
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            // The monitoring listener binds the same host as the clients' one (127.0.0.1).
            "-m".into(),
            monitor_port.to_string(),
            "-js".into(),
            "--store_dir".into(),
            store.display().to_string(),
        ]
    }

    fn launch(args: &[String], log: &Path, monitor_port: u16) -> anyhow::Result<Process> {
        let deadline = Instant::now() + READY_DEADLINE;
        let mut p = Process::spawn(args, log)?;
        p.wait_ready(monitor_port, false, deadline)?;
        Ok(p)
    }

    /// `nats://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port; it stays the same across [`NatsServer::restart`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The HTTP monitoring port (`/varz`, `/jsz`, `/healthz`) on 127.0.0.1.
    pub fn monitor_port(&self) -> u16 {
        self.monitor_port
    }

    /// The JetStream store directory; it survives [`NatsServer::stop`] and restarts.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("js")
    }

    /// The nats-server's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.pid)
    }

    /// Whether the server is running (false after stop or kill, or if it died).
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(|p| !p.exited())
    }

    /// Everything the server has logged, over all its runs.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }

    /// SIGTERM and wait for the server to exit (SIGKILL after [`STOP_GRACE`]). The store
    /// stays for [`NatsServer::restart`]. Does nothing if it is not running.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop();
        }
    }

    /// SIGKILL, as a crash, and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Stops the server if it runs and starts it again on the same port with the same store,
    /// so JetStream data survives; waits until it is ready.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let args = NatsServer::args(self.port, self.monitor_port, &self.store_dir());
        let log = self.dir.path().join("nats.log");
        self.process = Some(NatsServer::launch(&args, &log, self.monitor_port)?);
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One member of a [`NatsCluster`].
#[derive(Debug)]
struct Member {
    process: Option<Process>,
    port: u16,
    monitor_port: u16,
    args: Vec<String>,
    log: PathBuf,
}

/// A JetStream cluster of nats-servers on 127.0.0.1, named `n0`, `n1`, ... Dropping it kills
/// every member and removes their stores.
#[derive(Debug)]
pub struct NatsCluster {
    // Declared before `dir`: the servers die before their stores are removed.
    members: Vec<Member>,
    dir: tempfile::TempDir,
}

/// The `cluster_name` every member shares.
pub const CLUSTER_NAME: &str = "ledger-test";

impl NatsCluster {
    /// Starts `n` servers (`n0`..) routed to each other and waits until every one is ready
    /// and JetStream has elected a meta leader.
    pub fn start(n: usize) -> anyhow::Result<NatsCluster> {
        if n == 0 {
            bail!("a NATS cluster needs at least one member");
        }
        let mut tries = 0;
        loop {
            tries += 1;
            match NatsCluster::try_start(n) {
                Ok(c) => return Ok(c),
                Err(e) if tries < START_TRIES && port_was_taken(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn try_start(n: usize) -> anyhow::Result<NatsCluster> {
        let dir = tempfile::Builder::new()
            .prefix("nats-cluster-")
            .tempdir()
            .context("creating the nats cluster temp dir")?;
        // Per member: client, monitoring and cluster (route) port.
        let ports = free_ports(3 * n)?;
        let route = |i: usize| format!("nats://127.0.0.1:{}", ports[3 * i + 2]);
        let routes: Vec<String> = (0..n).map(route).collect();
        let members = (0..n)
            .map(|i| Member {
                process: None,
                port: ports[3 * i],
                monitor_port: ports[3 * i + 1],
                args: vec![
                    "-a".into(),
                    "127.0.0.1".into(),
                    "-p".into(),
                    ports[3 * i].to_string(),
                    "-m".into(),
                    ports[3 * i + 1].to_string(),
                    "-n".into(),
                    format!("n{i}"),
                    "-js".into(),
                    "--store_dir".into(),
                    dir.path().join(format!("js{i}")).display().to_string(),
                    "--cluster_name".into(),
                    CLUSTER_NAME.into(),
                    "--cluster".into(),
                    route(i),
                    // A member ignores the route to itself.
                    "--routes".into(),
                    routes.join(","),
                ],
                log: dir.path().join(format!("n{i}.log")),
            })
            .collect();
        let mut c = NatsCluster { members, dir };
        // All at once: the meta leader is elected once a quorum is routed.
        let deadline = Instant::now() + READY_DEADLINE;
        for m in &mut c.members {
            m.process = Some(Process::spawn(&m.args, &m.log)?);
        }
        for i in 0..n {
            c.wait_member(i, deadline)
                .with_context(|| format!("cluster member n{i}"))?;
        }
        Ok(c)
    }

    fn wait_member(&mut self, i: usize, deadline: Instant) -> anyhow::Result<()> {
        let m = &mut self.members[i];
        let p = m.process.as_mut().context("member is not running")?;
        p.wait_ready(m.monitor_port, true, deadline)
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// False: a cluster has at least one member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Every member's client URL, `n0` first.
    pub fn urls(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.url(i)).collect()
    }

    /// Member `i`'s client URL.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.members[i].port)
    }

    /// Member `i`'s HTTP monitoring port on 127.0.0.1.
    pub fn monitor_port(&self, i: usize) -> u16 {
        self.members[i].monitor_port
    }

    /// Member `i`'s server name (`n<i>`), as JetStream reports leaders and peers.
    pub fn name(&self, i: usize) -> String {
        format!("n{i}")
    }

    /// The member with server name `name` (as in a stream's `cluster.leader`).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        name.strip_prefix('n')?
            .parse()
            .ok()
            .filter(|&i| i < self.members.len())
    }

    /// Member `i`'s JetStream store directory; it survives stops and restarts.
    pub fn store_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("js{i}"))
    }

    /// Member `i`'s nats-server pid while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].process.as_ref().map(|p| p.pid)
    }

    /// Everything member `i` has logged, over all its runs.
    pub fn output(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].log).unwrap_or_default()
    }

    /// The meta leader's server name as member `i` sees it, if it answers and knows one.
    pub fn meta_leader(&self, i: usize) -> Option<String> {
        let (code, body) = http_get(self.members[i].monitor_port, "/jsz")?;
        if code != 200 {
            return None;
        }
        jsz_meta_leader(&body)
    }

    /// SIGTERM member `i` and wait for it to exit (SIGKILL after [`STOP_GRACE`]); its store
    /// stays for [`NatsCluster::restart_one`].
    pub fn stop_one(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].process.take() {
            p.stop();
        }
    }

    /// SIGKILL member `i`, as a crash.
    pub fn kill_one(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].process.take() {
            p.kill();
        }
    }

    /// Stops member `i` if it runs and starts it again with the same ports and store; waits
    /// until it is ready and sees a meta leader.
    pub fn restart_one(&mut self, i: usize) -> anyhow::Result<()> {
        self.stop_one(i);
        let deadline = Instant::now() + READY_DEADLINE;
        let m = &mut self.members[i];
        m.process = Some(Process::spawn(&m.args, &m.log)?);
        self.wait_member(i, deadline)
            .with_context(|| format!("cluster member n{i} restarting"))
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill_one(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::jsz_meta_leader;

    #[test]
    fn the_meta_leader_is_read_from_the_meta_cluster_object_only() {
        let with = r#"{"streams": 0, "meta_cluster": {"name": "t", "leader": "n1", "peer": "x",
            "replicas": [{"name": "n2", "current": true}]}}"#;
        assert_eq!(jsz_meta_leader(with).as_deref(), Some("n1"));
        let without = r#"{"meta_cluster": {"name": "t", "replicas": [{"name": "n2"}]},
            "other": {"leader": "n9"}}"#;
        assert_eq!(jsz_meta_leader(without), None);
        assert_eq!(jsz_meta_leader(r#"{"meta_cluster": {"leader": ""}}"#), None);
        assert_eq!(jsz_meta_leader(r#"{"streams": 0}"#), None);
    }
}
