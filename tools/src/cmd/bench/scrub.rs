//! `bench scrub`: `slidemesh scrub --now` over one node's originals, beside `b3sum` hashing
//! the same files, both with a warm page cache and their runs alternating.
//!
//! The node is not serving, so the command scrubs the data directory itself: every
//! original re-hashed as ingest hashed it (each frame's tile id on every core, then the
//! object id over the rest), which is what b3sum's one hash per file is the floor of.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::Value;

use super::procs::{init_node, require_tool, run_ok, sibling};
use super::{cached_slide, median};

#[derive(Debug, Args)]
pub struct ScrubBench {
    /// Slide size to generate and ingest
    #[arg(long, default_value = "1GiB", value_parser = crate::cmd::synth::parse_byte_size)]
    size: u64,
    /// Repetitions of each measurement (the median is reported)
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Working folder for generated slides and node data
    #[arg(long, default_value = "target/bench")]
    work: PathBuf,
}

pub fn run(args: ScrubBench) -> Result<()> {
    require_tool("b3sum", "b3sum")?;
    if args.runs == 0 {
        bail!("--runs is at least 1");
    }
    let slidemesh = sibling("slidemesh")?;
    std::fs::create_dir_all(&args.work)?;
    let slide = cached_slide(&args.work, args.size, 512, 1)?;
    let data = args.work.join("scrub-node");
    init_node(&slidemesh, &data)?;
    run_ok(
        Command::new(&slidemesh)
            .arg("--data")
            .arg(&data)
            .args(["ingest", "--keep", "copy"])
            .arg(&slide),
    )?;
    // The node's own copies of the originals: the files both tools read.
    let files: Vec<PathBuf> = walk(&data.join("objects"))?;
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum();
    run_ok(Command::new("b3sum").args(&files))?;
    let (mut b3, mut scrub) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let t = Instant::now();
        run_ok(Command::new("b3sum").args(&files))?;
        b3.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let out = Command::new(&slidemesh)
            .arg("--data")
            .arg(&data)
            .args(["scrub", "--now", "--json"])
            .output()?;
        let secs = t.elapsed().as_secs_f64();
        let report: Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("scrub said: {}", String::from_utf8_lossy(&out.stderr)))?;
        if !out.status.success() || report["original_bytes"].as_u64() != Some(bytes) {
            bail!("the scrub did not check every original cleanly: {report}");
        }
        scrub.push(secs);
    }
    let (b3, scrub) = (median(&mut b3), median(&mut scrub));
    let mbps = |s: f64| bytes as f64 / 1e6 / s;
    println!();
    println!(
        "## bench scrub: {:.0} MB of originals ({} files), warm page cache, median of {} runs",
        bytes as f64 / 1e6,
        files.len(),
        args.runs
    );
    println!();
    println!("| what | seconds | MB/s | ratio to b3sum |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| `slidemesh scrub --now` (every tile id and object id, the whole command) | {scrub:.3} | {:.0} | {:.2}x |",
        mbps(scrub),
        b3 / scrub
    );
    println!(
        "| `b3sum` over the same files (reference) | {b3:.3} | {:.0} | 1.00x |",
        mbps(b3)
    );
    Ok(())
}

fn walk(dir: &std::path::Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(walk(&path)?);
        } else {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}
