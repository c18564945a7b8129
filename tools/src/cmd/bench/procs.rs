//! Process helpers for benchmarks: locating our binaries, starting servers on free
//! loopback ports, waiting for them, and reading their peak memory.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A binary of this workspace, built beside `slidemesh-tools`.
pub fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.parent().context("executable has a folder")?.join(name);
    if !path.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release --workspace --bins`",
            path.display()
        );
    }
    Ok(path)
}

/// Fails with an install hint when an external tool is missing.
pub fn require_tool(name: &str, debian_package: &str) -> Result<()> {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .stdout(Stdio::null())
        .status()?
        .success();
    if !found {
        bail!("{name} is not installed: apt-get install {debian_package}");
    }
    Ok(())
}

/// A free TCP port on loopback (bound then released; fine for a benchmark on this machine).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Polls `url` until it answers (any status) or `timeout` passes.
pub fn wait_http(url: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match ureq::get(url).timeout(Duration::from_secs(2)).call() {
            Ok(_) | Err(ureq::Error::Status(..)) => return Ok(()),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    bail!("{url} did not answer within {timeout:?}")
}

/// A child process killed when dropped.
pub struct Server {
    pub child: Child,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident set size (VmHWM) in bytes, from /proc.
    pub fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command, failing with its stderr if it fails.
pub fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A fresh node in `data` (removed first) for trust RR8.
pub fn init_node(slidemesh: &std::path::Path, data: &std::path::Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(data);
    run_ok(
        Command::new(slidemesh)
            .arg("--data")
            .arg(data)
            .args(["init", "--trust", "RR8"])
            // A benchmark node has no peers: keep its p2p ports on loopback and free.
            .args([
                "--p2p",
                "/ip4/127.0.0.1/udp/0/quic-v1",
                "--p2p",
                "/ip4/127.0.0.1/tcp/0",
            ]),
    )?;
    Ok(())
}
