//! `bench ingest`: wall time of `slidemesh ingest` over one generated slide, beside `b3sum`
//! hashing the same files (both with a warm page cache, so the comparison is of the work
//! each does, not of the disk), their runs alternating.
//!
//! Two in-process floors explain the ratio: the same files hashed whole on all cores (what
//! b3sum computes, without its process and mapping costs), and every frame hashed on its
//! own on all cores (the tile ids ingest cannot skip: a tile id is BLAKE3 of the frame's
//! bytes). Their ratio is what hashing 30 KB inputs one by one costs over one long input.

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

    // Runs alternate (b3sum, then each ingest) so that a machine that speeds up or slows
    // down during the benchmark moves reference and subject alike.
    let modes = ["link", "copy"];
    let mut b3 = Vec::new();
    let mut ingest: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for i in 0..args.runs {
        let t = Instant::now();
        run_ok(Command::new("b3sum").args(&files))?;
        b3.push(t.elapsed().as_secs_f64());
        for (keep, times) in modes.iter().zip(&mut ingest) {
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
    }
    let mut results = vec![("b3sum (reference)".to_string(), median(&mut b3))];
    for (keep, mut times) in modes.iter().zip(ingest) {
        results.push((
            format!("slidemesh ingest --keep {keep}"),
            median(&mut times),
        ));
    }

    let floors = hashing_floors(&files, args.runs)?;
    results.extend(floors);

    let reference = results[0].1;
    println!(
        "ingest of one slide: {} files, {:.1} MiB, warm page cache, median of {} alternating runs",
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

/// One frame's (offset, length) fragments in its file.
type FrameRanges = Vec<(u64, u32)>;

/// The two in-process hashing floors (median seconds each), from memory, all cores.
fn hashing_floors(files: &[PathBuf], runs: usize) -> Result<Vec<(String, f64)>> {
    // Frame ranges come from the node's own scanner (not timed).
    let mut loaded: Vec<(Vec<u8>, Vec<FrameRanges>)> = Vec::new();
    for file in files {
        let scanned = slidemesh_node::ingest::dicom::scan_file(file)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let ranges = scanned.frames.into_iter().map(|f| f.ranges).collect();
        loaded.push((std::fs::read(file)?, ranges));
    }
    let frames: Vec<(usize, &[(u64, u32)])> = loaded
        .iter()
        .enumerate()
        .flat_map(|(i, (_, frames))| frames.iter().map(move |r| (i, r.as_slice())))
        .collect();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());

    let mut whole = Vec::new();
    let mut per_frame = Vec::new();
    let mut check = 0u64;
    for _ in 0..runs {
        let t = Instant::now();
        for (bytes, _) in &loaded {
            check ^= blake3::Hasher::new()
                .update_rayon(bytes)
                .finalize()
                .as_bytes()[0] as u64;
        }
        whole.push(t.elapsed().as_secs_f64());

        let t = Instant::now();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let hashed = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    let mut local = 0u64;
                    loop {
                        let start = next.fetch_add(64, std::sync::atomic::Ordering::Relaxed);
                        let Some(batch) = frames.get(start..(start + 64).min(frames.len())) else {
                            break;
                        };
                        if batch.is_empty() {
                            break;
                        }
                        for (file, ranges) in batch {
                            let bytes = &loaded[*file].0;
                            let mut hasher = blake3::Hasher::new();
                            for &(offset, len) in *ranges {
                                hasher.update(
                                    &bytes[offset as usize..offset as usize + len as usize],
                                );
                            }
                            local ^= hasher.finalize().as_bytes()[0] as u64;
                        }
                    }
                    hashed.fetch_xor(local, std::sync::atomic::Ordering::Relaxed);
                });
            }
        });
        per_frame.push(t.elapsed().as_secs_f64());
        check ^= hashed.into_inner();
    }
    // Keeps the hashing from being optimised away.
    std::hint::black_box(check);
    Ok(vec![
        (
            "floor: files hashed whole, in process, all cores".to_string(),
            median(&mut whole),
        ),
        (
            format!(
                "floor: {} frames hashed one by one, in process, all cores",
                frames.len()
            ),
            median(&mut per_frame),
        ),
    ])
}
