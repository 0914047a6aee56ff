//! Helpers for end-to-end tests: start the real `ledger-node` binary in a temporary data
//! directory on a free port, wait until it says it listens (never sleep to synchronise),
//! and stop it (SIGTERM, or SIGKILL for crash tests). A node still running when its handle
//! drops is killed, so no test leaves a server behind.

pub mod nats;

use anyhow::{bail, Context};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a node may take to start before the test fails.
pub const START_DEADLINE: Duration = Duration::from_secs(60);

/// The directory holding the workspace's built binaries (target/debug or target/release).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("target directory")
}

pub fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let p = bin_dir().join(name);
    if !p.exists() {
        bail!("{} is missing: build the workspace first (`cargo build --workspace` or `scripts/test`)", p.display());
    }
    Ok(p)
}

/// A running node process.
#[derive(Debug)]
pub struct Node {
    child: Option<Child>,
    pub addr: String,
    /// The web page's base URL (`http://127.0.0.1:PORT`), when started with `--http-listen`.
    pub web: Option<String>,
    pub data_dir: PathBuf,
    /// Lines the node wrote to stderr after it started listening.
    pub log: mpsc::Receiver<String>,
}

impl Node {
    /// Starts `ledger-node run` on a free port with `data_dir`; `extra` adds flags.
    pub fn start(data_dir: &Path, extra: &[&str]) -> anyhow::Result<Node> {
        Node::spawn(Command::new(bin("ledger-node")?), data_dir, extra)
    }

    /// Starts the node as [`Node::start`] does, but no file it writes may grow past
    /// `bytes`: a disk that refuses writes, as a full one does. (`RLIMIT_FSIZE` through
    /// util-linux's `prlimit`, with `SIGXFSZ` ignored so that a write past the limit fails
    /// with `EFBIG` instead of killing the process.)
    pub fn start_with_file_size_limit(
        data_dir: &Path,
        extra: &[&str],
        bytes: u64,
    ) -> anyhow::Result<Node> {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", r#"trap "" XFSZ; exec prlimit --fsize="$0" -- "$@""#])
            .arg(bytes.to_string())
            .arg(bin("ledger-node")?);
        let node = Node::spawn(cmd, data_dir, extra)?;
        // The limit is what makes a test of it meaningful: check that it holds.
        let pid = node.pid().context("node pid")?;
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max file size"))
            .context("no file size limit in /proc/PID/limits")?;
        if line.split_whitespace().nth(3) != Some(bytes.to_string().as_str()) {
            bail!("the node runs without the file size limit of {bytes} bytes: {line}");
        }
        Ok(node)
    }

    /// Starts the node as [`Node::start`] does, under a resource limit set by util-linux's
    /// `prlimit` (`limit` is one of its options, e.g. `--nofile=64:`).
    pub fn start_with_prlimit(
        data_dir: &Path,
        extra: &[&str],
        limit: &str,
    ) -> anyhow::Result<Node> {
        let mut cmd = Command::new("prlimit");
        cmd.args([limit, "--"]).arg(bin("ledger-node")?);
        Node::spawn(cmd, data_dir, extra)
    }

    fn spawn(mut cmd: Command, data_dir: &Path, extra: &[&str]) -> anyhow::Result<Node> {
        // The node stops when this process's end of its stdin closes: even a test that is
        // killed leaves no node running.
        cmd.args(["run", "--stop-on-stdin-close"]);
        if !extra.contains(&"--metrics-listen") {
            cmd.arg("--no-metrics");
        }
        // Every node on its own port: the page's default (8080) would collide.
        if !extra.contains(&"--http-listen") {
            cmd.arg("--no-http");
        }
        let mut child = cmd
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning ledger-node")?;
        let stderr = child.stderr.take().context("node stderr")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + START_DEADLINE;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        let addr = rest
                            .split_whitespace()
                            .next()
                            .unwrap_or("")
                            .trim_matches('"')
                            .to_owned();
                        let web = seen.iter().find_map(|l: &String| {
                            let rest = l.split("web page served at http://").nth(1)?;
                            let a = rest.split(['/', ' ', '"']).next()?;
                            Some(format!("http://{a}"))
                        });
                        return Ok(Node {
                            child: Some(child),
                            addr: format!("http://{addr}"),
                            web,
                            data_dir: data_dir.to_owned(),
                            log: rx,
                        });
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    bail!("ledger-node did not report 'listening on' within {START_DEADLINE:?}; its output:\n{}", seen.join("\n"));
                }
            }
        }
    }

    pub fn token(&self, name: &str) -> anyhow::Result<String> {
        let p = self
            .data_dir
            .join("network/tokens")
            .join(format!("{name}.token"));
        Ok(std::fs::read_to_string(&p)
            .with_context(|| format!("reading {}", p.display()))?
            .trim()
            .to_owned())
    }

    pub fn token_dir(&self) -> PathBuf {
        self.data_dir.join("network/tokens")
    }

    pub fn anchor_file(&self) -> PathBuf {
        self.data_dir.join("network/anchor.pub")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: the crash a power cut looks like to the process.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGHUP: the node reads its token files again.
    pub fn hangup(&self) -> anyhow::Result<()> {
        let pid = self.pid().context("the node has exited")?;
        let status = Command::new("kill")
            .arg("-HUP")
            .arg(pid.to_string())
            .status()
            .context("sending SIGHUP")?;
        if !status.success() {
            bail!("kill -HUP failed");
        }
        Ok(())
    }

    /// Waits up to `within` for a log line that contains `needle`, and returns it.
    pub fn wait_for_log(&self, needle: &str, within: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(line) => seen.push(line),
                Err(_) => bail!(
                    "the node logged no line with '{needle}' within {within:?}; it logged:\n{}",
                    seen.join("\n")
                ),
            }
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit code.
    pub fn stop(&mut self) -> anyhow::Result<Option<i32>> {
        let Some(c) = self.child.as_ref() else {
            return Ok(None);
        };
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .context("sending SIGTERM")?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        self.wait_exit()
    }

    /// Closes the node's standard input (as when the process that started it dies) and
    /// waits for it to exit; returns the exit code.
    pub fn close_stdin(&mut self) -> anyhow::Result<Option<i32>> {
        if let Some(c) = self.child.as_mut() {
            drop(c.stdin.take());
        }
        self.wait_exit()
    }

    /// Waits (up to 30 s) for a node that stops by itself; returns the exit code.
    pub fn wait_exit(&mut self) -> anyhow::Result<Option<i32>> {
        match self.child.take() {
            None => Ok(None),
            Some(c) => wait_exit(c),
        }
    }
}

/// Waits up to 30 s for a node process to exit and returns its exit code; kills it and
/// fails when it does not.
pub fn wait_exit(mut child: Child) -> anyhow::Result<Option<i32>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(s.code());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("node did not stop within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A finished command's exit code and output, for assertion messages.
pub fn output_text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
