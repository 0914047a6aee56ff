//! A real `nats-server` for tests: JetStream on, 127.0.0.1 only, a free port and its own
//! temporary store directory. The server runs under a small shell wrapper that holds a pipe
//! from this process and kills the server when the pipe closes, so a test that dies (or a
//! handle that drops) never leaves a server running.

use anyhow::{bail, Context};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to say it is ready.
const READY_DEADLINE: Duration = Duration::from_secs(20);

/// The nats-server binary: `NATS_SERVER_BIN`, else the one `scripts/setup` installs in
/// `.tools/nats`, else `nats-server` on the PATH.
pub fn nats_server_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?;
    let installed = root.join(".tools/nats/bin/nats-server");
    if installed.exists() {
        return Ok(installed);
    }
    let on_path = Command::new("nats-server").arg("--version").output();
    if on_path.is_ok_and(|o| o.status.success()) {
        return Ok(PathBuf::from("nats-server"));
    }
    bail!("nats-server is missing: run scripts/setup (it installs nats-server 2.10+ into .tools/nats)")
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// One running nats-server process (under its wrapper).
#[derive(Debug)]
struct Process {
    wrapper: Child,
    /// Closing it makes the wrapper kill the server.
    pipe: Option<ChildStdin>,
    pid: u32,
}

impl Process {
    /// Starts the server with `args`, logging to `log`, and waits until it is ready.
    fn start(args: &[String], log: &Path) -> anyhow::Result<Process> {
        let bin = nats_server_bin()?;
        // Truncate: readiness is read from this run's lines only.
        std::fs::write(log, b"").with_context(|| format!("creating {}", log.display()))?;
        let script = r#"
bin="$1"; log="$2"; shift 2
"$bin" "$@" >>"$log" 2>&1 &
p=$!
echo "$p"
read -r _ || true
kill "$p" 2>/dev/null
wait "$p" 2>/dev/null
"#;
        let mut wrapper = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("nats-wrapper")
            .arg(&bin)
            .arg(log)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning the nats-server wrapper")?;
        let out = wrapper.stdout.take().context("wrapper stdout")?;
        let mut line = String::new();
        BufReader::new(out)
            .read_line(&mut line)
            .context("reading the nats-server pid")?;
        let pid: u32 = line
            .trim()
            .parse()
            .with_context(|| format!("the wrapper printed {line:?}, not a pid"))?;
        let pipe = wrapper.stdin.take();
        let mut p = Process { wrapper, pipe, pid };
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.contains("Server is ready") {
                return Ok(p);
            }
            if !p.alive() || Instant::now() > deadline {
                p.kill();
                bail!("nats-server did not become ready; its output:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn alive(&self) -> bool {
        Command::new("kill")
            .args(["-0", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }

    /// SIGTERM, SIGKILL after 10 s; then the wrapper goes.
    fn stop(mut self) {
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    fn kill(&mut self) {
        if self.alive() {
            self.signal("-KILL");
        }
        if let Some(mut pipe) = self.pipe.take() {
            let _ = pipe.write_all(b"\n");
        }
        let _ = self.wrapper.wait();
        // The wrapper waited for the server; make sure of it before a restart reuses the port.
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A single nats-server with JetStream.
#[derive(Debug)]
pub struct NatsServer {
    process: Option<Process>,
    port: u16,
    dir: tempfile::TempDir,
}

impl NatsServer {
    pub fn start() -> anyhow::Result<NatsServer> {
        let dir = tempfile::tempdir().context("nats temp dir")?;
        let port = free_port()?;
        let mut s = NatsServer {
            process: None,
            port,
            dir,
        };
        s.restart()?;
        Ok(s)
    }

    fn args(&self) -> Vec<String> {
        vec![
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
            "-js".into(),
            "--store_dir".into(),
            self.dir.path().join("js").display().to_string(),
        ]
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (its JetStream data stays for [`NatsServer::restart`]).
    pub fn stop(&mut self) {
        if let Some(p) = self.process.take() {
            p.stop();
        }
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Starts the server again on the same port with the same store.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let log = self.dir.path().join("nats.log");
        self.process = Some(Process::start(&self.args(), &log)?);
        Ok(())
    }
}

/// A JetStream cluster of nats-servers on 127.0.0.1.
#[derive(Debug)]
pub struct NatsCluster {
    processes: Vec<Option<Process>>,
    args: Vec<Vec<String>>,
    ports: Vec<u16>,
    dir: tempfile::TempDir,
}

impl NatsCluster {
    pub fn start(n: usize) -> anyhow::Result<NatsCluster> {
        let dir = tempfile::tempdir().context("nats cluster temp dir")?;
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect::<anyhow::Result<_>>()?;
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect::<anyhow::Result<_>>()?;
        let routes: Vec<String> = cluster_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        let args: Vec<Vec<String>> = (0..n)
            .map(|i| {
                vec![
                    "-a".into(),
                    "127.0.0.1".into(),
                    "-p".into(),
                    ports[i].to_string(),
                    "-n".into(),
                    format!("n{i}"),
                    "-js".into(),
                    "--store_dir".into(),
                    dir.path().join(format!("js{i}")).display().to_string(),
                    "--cluster_name".into(),
                    "ledger-test".into(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{}", cluster_ports[i]),
                    "--routes".into(),
                    routes.join(","),
                ]
            })
            .collect();
        let mut c = NatsCluster {
            processes: Vec::new(),
            args,
            ports,
            dir,
        };
        // Started together: a member waits for its routes before it reports ready.
        for i in 0..n {
            c.processes
                .push(Some(Process::start(&c.args[i], &c.log(i))?));
        }
        Ok(c)
    }

    fn log(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("nats{i}.log"))
    }

    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect()
    }

    pub fn stop_one(&mut self, i: usize) {
        if let Some(p) = self.processes[i].take() {
            p.stop();
        }
    }

    pub fn restart_one(&mut self, i: usize) -> anyhow::Result<()> {
        self.stop_one(i);
        self.processes[i] = Some(Process::start(&self.args[i], &self.log(i))?);
        Ok(())
    }
}
