//! `slidemesh ingest PATH...`: index DICOM WSI files into the node, with a progress bar on
//! a terminal, one line per slide, and `--json` for scripts.
//!
//! Exit status: 0 when everything given was ingested (or already present), 2 when some
//! files or series failed (the good slides are still ingested), 1 on a fatal error.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::KeepOriginals;
use crate::context::NodeContext;
use crate::datadir::DataDir;
use crate::ingest::{BatchSource, IngestTarget, Progress, SlideOutcome, SlideStatus, ingest_paths};

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// DICOM files or folders (searched recursively)
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Print one JSON report on stdout instead of text
    #[arg(long)]
    json: bool,
    /// How to keep originals, overriding config.toml's ingest.keep_originals
    #[arg(long, value_enum, value_name = "MODE")]
    keep: Option<KeepOriginals>,
}

/// A terminal progress bar over bytes scanned.
struct Bar {
    bar: ProgressBar,
    frames: std::sync::atomic::AtomicU64,
    started: Instant,
    quiet: bool,
}

impl Progress for Bar {
    fn files_found(&self, files: usize, bytes: u64) {
        self.bar.set_length(bytes);
        self.bar.set_message(format!("0/{files} files"));
    }
    fn file_done(&self, bytes: u64, frames: usize) {
        use std::sync::atomic::Ordering;
        let total = self.frames.fetch_add(frames as u64, Ordering::Relaxed) + frames as u64;
        self.bar.inc(bytes);
        let rate = total as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        self.bar
            .set_message(format!("{total} frames, {rate:.0} frames/s"));
    }
    fn slide_done(&self, outcome: &SlideOutcome) {
        if !self.quiet {
            self.bar.suspend(|| println!("{}", slide_line(outcome)));
        }
    }
}

fn slide_line(o: &SlideOutcome) -> String {
    let status = match o.status {
        SlideStatus::Added => "added".to_string(),
        SlideStatus::AlreadyPresent => "already present, nothing changed".to_string(),
        SlideStatus::Extended => match &o.replaced {
            Some(old) => format!("extended with new instances (replaces {old})"),
            None => "extended".to_string(),
        },
    };
    format!(
        "{}  {}: {} instances, {} levels, {} tiles, {:.1} MB  series {}",
        o.slide_id,
        status,
        o.instances,
        o.levels,
        o.tiles,
        o.bytes as f64 / 1e6,
        o.series_uid
    )
}

pub fn run(data: DataDir, args: IngestArgs) -> Result<()> {
    let node = NodeContext::open(data)?;
    let keep = args.keep.unwrap_or(node.config.ingest.keep_originals);
    let target = IngestTarget {
        owner: &node.config.node.trust,
        key: &node.key,
        store: &node.store,
        objects: &node.objects,
        keep,
        // The operator's own files: the LIMS sidecar beside them is authoritative.
        source: BatchSource::Operator,
    };
    let bar = if std::io::stderr().is_terminal() && !args.json {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}) {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let progress = Bar {
        bar,
        frames: Default::default(),
        started: Instant::now(),
        quiet: args.json,
    };
    let started = Instant::now();
    let report = ingest_paths(&target, &args.paths, &progress);
    progress.bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();

    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["seconds"] = serde_json::json!(elapsed);
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        for failure in &report.failures {
            let place = failure
                .path
                .as_ref()
                .map(|p| p.display().to_string())
                .or_else(|| failure.series_uid.clone())
                .unwrap_or_default();
            eprintln!("error: {place}: {}", failure.error);
        }
        println!(
            "{} slides ({} new), {} files, {:.1} MB in {:.1}s; {} failed",
            report.slides.len(),
            report
                .slides
                .iter()
                .filter(|s| s.status != SlideStatus::AlreadyPresent)
                .count(),
            report.files,
            report.bytes as f64 / 1e6,
            elapsed,
            report.failures.len()
        );
    }
    if !report.failures.is_empty() {
        std::process::exit(2);
    }
    Ok(())
}
