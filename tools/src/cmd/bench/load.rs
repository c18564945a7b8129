//! Load generation shared by the HTTP benchmarks: `wrk` over a fixed list of paths, its
//! summary parsed, and the ratio printed beside each reference.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use super::procs::run_ok;

/// What DICOMweb clients send for frames in whatever syntax is stored.
pub const FRAMES_ACCEPT: &str =
    "multipart/related; type=\"application/octet-stream\"; transfer-syntax=*";

/// One server's figures under `wrk`.
pub struct Load {
    pub name: String,
    pub connections: u32,
    pub requests_per_sec: f64,
    pub mib_per_sec: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub errors: String,
}

/// "0.52x" or "4120x": two decimals where they matter.
pub fn ratio(ours: f64, theirs: f64) -> String {
    if theirs <= 0.0 {
        return "no request completed".into();
    }
    let r = ours / theirs;
    if r < 10.0 {
        format!("{r:.2}x")
    } else {
        format!("{r:.0}x")
    }
}

/// A fixed pseudo-random permutation, so every server sees the same request order.
pub fn shuffled(n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for i in (1..n).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        v.swap(i, (state % (i as u64 + 1)) as usize);
    }
    v
}

/// Runs wrk over `paths` (cycled in order by each thread) and parses its summary.
pub fn wrk(
    (connections, duration): (u32, u32),
    dir: &Path,
    name: &str,
    base: &str,
    paths: &[String],
    headers: &[&str],
) -> Result<Load> {
    let script = dir.join(format!("{}.lua", name.replace(' ', "-")));
    let mut lua = String::from("local paths = {\n");
    for p in paths {
        writeln!(lua, "  {p:?},")?;
    }
    lua.push_str(
        "}\nlocal i = 0\nsetup = function(thread) thread:set(\"offset\", math.random(#paths)) end\n\
         init = function() i = (offset or 0) end\n\
         request = function() i = (i % #paths) + 1; return wrk.format(\"GET\", paths[i]) end\n\
         done = function(summary, latency, requests) io.write(string.format(\"P50_US %d\\nP99_US %d\\n\", latency:percentile(50), latency:percentile(99))) end\n",
    );
    std::fs::write(&script, lua)?;
    // One wrk invocation; a long timeout so that slow servers are measured, not counted
    // as errors.
    let load = |seconds: u32| {
        let mut cmd = Command::new("wrk");
        cmd.args([
            "-t",
            &connections.min(2).to_string(),
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
        ])
        .args(["--timeout", "30s", "-s"])
        .arg(&script)
        .arg(base);
        for h in headers {
            cmd.args(["-H", h]);
        }
        cmd
    };
    // Warm-up pass so every server starts with its caches (and the page cache) warm.
    run_ok(&mut load(2))?;
    let mut cmd = load(duration);
    let out = run_ok(&mut cmd)?;
    let field = |prefix: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()))
    };
    let requests_per_sec: f64 = field("Requests/sec:")
        .context("wrk printed no Requests/sec")?
        .parse()?;
    let transfer = field("Transfer/sec:").unwrap_or_default();
    let mib_per_sec = parse_rate(&transfer);
    let ms = |name: &str| {
        field(name)
            .and_then(|v| v.parse::<f64>().ok())
            .map(|us| us / 1000.0)
    };
    let (p50_ms, p99_ms) = (ms("P50_US"), ms("P99_US"));
    let errors = out
        .lines()
        .filter(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
        .map(|l| l.trim().to_string())
        .collect::<Vec<_>>()
        .join("; ");
    Ok(Load {
        name: name.to_string(),
        connections,
        requests_per_sec,
        mib_per_sec,
        p50_ms,
        p99_ms,
        errors: if errors.is_empty() {
            "none".into()
        } else {
            errors
        },
    })
}

/// wrk's "12.34MB" transfer rate in MiB/s (wrk uses binary units).
fn parse_rate(s: &str) -> f64 {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().unwrap_or(0.0);
    match unit {
        "GB" => n * 1024.0,
        "MB" => n,
        "KB" => n / 1024.0,
        "B" => n / 1048576.0,
        _ => 0.0,
    }
}
