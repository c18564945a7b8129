//! `slidemesh scrub`: the scrub's last report, or with `--now` a pass at once with a
//! progress bar. With the node serving, the running node scrubs (and repairs corrupt tiles
//! of this trust's originals from its replicas or other copies); with it stopped, this
//! command scrubs the data directory itself, which finds and reports but cannot repair
//! (repairs need the network). Either way a corrupt original becomes suspect: its tiles
//! are checked on every read and never served corrupt.
//!
//! Exit status: 0 when nothing is left unrepaired, 2 otherwise.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::running::RunningNode;
use crate::context::NodeContext;
use crate::datadir::DataDir;
use crate::scrub::{self, Finding, ScrubProgress, ScrubReport, ScrubState};
use crate::store::cache::TileCache;

#[derive(Debug, Args)]
pub struct ScrubArgs {
    /// Run a pass now, as fast as the disk goes, and wait for it (else: show the last)
    #[arg(long)]
    now: bool,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(data: DataDir, args: ScrubArgs) -> Result<()> {
    let report = match RunningNode::find(&data) {
        Ok(node) => match through_running_node(&node, &args) {
            Ok(report) => report,
            // serve.json left by a node that did not stop cleanly: nobody answers.
            Err(e) if unreachable(&e) => offline(data, &args)?,
            Err(e) => return Err(e),
        },
        Err(_) => offline(data, &args)?,
    };
    let Some(report) = report else {
        println!("no scrub pass has run yet; `slidemesh scrub --now` runs one");
        return Ok(());
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", describe(&report));
    }
    if report.unresolved() > 0 {
        std::process::exit(2);
    }
    Ok(())
}

/// Whether the error is that nothing answered at the node's address.
fn unreachable(error: &anyhow::Error) -> bool {
    error.chain().any(|c| {
        c.downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_connect)
    })
}

fn bar(json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// The running node's last report, or a pass it runs now (followed until it ends).
fn through_running_node(node: &RunningNode, args: &ScrubArgs) -> Result<Option<ScrubReport>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let status = || node.json(reqwest::Method::GET, "/api/v1/scrub", None);
        let before = status().await?;
        if !args.now {
            return Ok(serde_json::from_value(before["last"].clone()).ok());
        }
        // The pass running now, if any, or the one started here, ends this count.
        let passes = before["progress"]["passes"].as_u64().unwrap_or(0);
        if before["progress"]["running"] != true {
            node.json(
                reqwest::Method::POST,
                "/api/v1/scrub",
                Some(&serde_json::json!({})),
            )
            .await
            .context("cannot start a scrub pass")?;
        }
        let bar = bar(args.json);
        bar.set_message("originals, then cached tiles");
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = status().await?;
            let progress = &now["progress"];
            bar.set_length(progress["total_bytes"].as_u64().unwrap_or(0));
            bar.set_position(progress["done_bytes"].as_u64().unwrap_or(0));
            if progress["passes"].as_u64().unwrap_or(0) > passes {
                bar.finish_and_clear();
                return Ok(serde_json::from_value(now["last"].clone()).ok());
            }
        }
    })
}

/// A pass over a stopped node's data directory: finds and reports, marks corrupt
/// originals suspect for the next `serve`, repairs nothing.
fn offline(data: DataDir, args: &ScrubArgs) -> Result<Option<ScrubReport>> {
    let state_path = ScrubState::path(data.root());
    let mut state = ScrubState::load(&state_path);
    if !args.now {
        return Ok(state.last);
    }
    let node = NodeContext::open(data.clone())?;
    let started = std::time::Instant::now();
    let mut report = ScrubReport {
        started_at: crate::store::now_unix(),
        ..Default::default()
    };
    let progress = ScrubProgress::default();
    let bar = bar(args.json);
    let cache = TileCache::open(&data.cache_dir(), node.config.network.cache_bytes)
        .context("cannot open the tile cache (is the node serving?)")?;
    let stats = cache.stats();
    progress
        .total_bytes
        .store(stats.bytes + stats.pinned.bytes, Ordering::SeqCst);
    let (count, bytes, _, damaged) = std::thread::scope(|scope| {
        let hashing = scope
            .spawn(|| scrub::scrub_originals(&node.store, &node.objects, 0, &progress, |_| {}));
        while !hashing.is_finished() {
            bar.set_length(progress.total_bytes.load(Ordering::SeqCst));
            bar.set_position(progress.done_bytes.load(Ordering::SeqCst));
            std::thread::sleep(Duration::from_millis(100));
        }
        hashing.join().expect("the scrub thread panicked")
    })?;
    report.originals = count;
    report.original_bytes = bytes;
    let mut suspects = Vec::new();
    for damage in damaged {
        suspects.push(damage.object);
        report.findings.push(Finding {
            what: "original".into(),
            id: damage.object.to_string(),
            detail: if damage.tiles.is_empty() {
                damage.describe()
            } else {
                format!(
                    "{}: not served; the running node repairs them from a replica or another copy",
                    damage.describe()
                )
            },
            repaired: false,
        });
    }
    let (tiles, cached_bytes, dropped) = cache.scrub(|n| {
        bar.inc(n);
    })?;
    bar.finish_and_clear();
    report.cached_tiles = tiles;
    report.cached_bytes = cached_bytes;
    for tile in dropped {
        report.findings.push(Finding {
            what: "cached tile".into(),
            id: tile.to_string(),
            detail: "did not hash to its id: dropped; fetched again when next needed".into(),
            repaired: true,
        });
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.finished_at = Some(crate::store::now_unix());
    state.suspects = suspects;
    state.last = Some(report.clone());
    state
        .save(&state_path)
        .with_context(|| format!("cannot save {}", state_path.display()))?;
    Ok(Some(report))
}

/// The report as a person reads it.
fn describe(report: &ScrubReport) -> String {
    let mut out = format!(
        "scrubbed {} originals ({:.1} MB) and {} cached tiles ({:.1} MB) in {:.1} s: {} finding(s), {} unrepaired\n",
        report.originals,
        report.original_bytes as f64 / 1e6,
        report.cached_tiles,
        report.cached_bytes as f64 / 1e6,
        report.seconds,
        report.findings.len(),
        report.unresolved()
    );
    for f in &report.findings {
        out.push_str(&format!(
            "  {} {} {}: {}\n",
            if f.repaired { "repaired" } else { "PROBLEM" },
            f.what,
            f.id,
            f.detail
        ));
    }
    out
}
