//! `bench ingest`: wall time of `slidemesh ingest` over one generated slide, beside `b3sum`
//! hashing the same files (both with a warm page cache, so the comparison is of the work
//! each does, not of the disk).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use super::procs::{init_node, require_tool, run_ok, sibling};
use super::{cached_slide, median, slide_files};

#[derive(Debug, Args)]
pub struct IngestBench {
    /// Slide size to generate and ingest
    #[arg(long, default_value = "1GiB", value_parser = crate::cmd::synth::parse_byte_size)]
    size: u64,
    /// Repetitions of each measurement (the median is reported)
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Working folder for generated slides and node data (same file system, so `link` works)
    #[arg(long, default_value = "target/bench")]
    work: PathBuf,
}

pub fn run(args: IngestBench) -> Result<()> {
    require_tool("b3sum", "b3sum")?;
    let slidemesh = sibling("slidemesh")?;
    std::fs::create_dir_all(&args.work)?;
    let slide = cached_slide(&args.work, args.size, 512, 1)?;
    let files = slide_files(&slide)?;
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    // Warm the page cache for both tools.
    run_ok(Command::new("b3sum").args(&files))?;

    let mut b3 = Vec::new();
    for _ in 0..args.runs {
        let t = Instant::now();
        run_ok(Command::new("b3sum").args(&files))?;
        b3.push(t.elapsed().as_secs_f64());
    }
    let mut results = vec![("b3sum (reference)".to_string(), median(&mut b3))];
    for keep in ["link", "copy"] {
        let mut times = Vec::new();
        for i in 0..args.runs {
            let data = args.work.join(format!("ingest-node-{keep}-{i}"));
            init_node(&slidemesh, &data)?;
            let t = Instant::now();
            let report = run_ok(
                Command::new(&slidemesh)
                    .arg("--data")
                    .arg(&data)
                    .args(["ingest", "--json", "--keep", keep])
                    .arg(&slide),
            )?;
            times.push(t.elapsed().as_secs_f64());
            let report: serde_json::Value =
                serde_json::from_str(&report).context("ingest report")?;
            anyhow::ensure!(
                report["slides"].as_array().map(Vec::len) == Some(1),
                "ingest did not add the slide: {report}"
            );
            let _ = std::fs::remove_dir_all(&data);
        }
        results.push((
            format!("slidemesh ingest --keep {keep}"),
            median(&mut times),
        ));
    }

    let reference = results[0].1;
    println!(
        "ingest of one slide: {} files, {:.1} MiB, warm page cache, median of {} runs",
        files.len(),
        bytes as f64 / 1048576.0,
        args.runs
    );
    println!("| what | wall time (s) | MiB/s | ratio to b3sum |");
    println!("| --- | ---: | ---: | ---: |");
    for (name, secs) in &results {
        println!(
            "| {name} | {secs:.3} | {:.0} | {:.2}x |",
            bytes as f64 / 1048576.0 / secs,
            secs / reference
        );
    }
    Ok(())
}
