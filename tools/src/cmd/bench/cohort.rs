//! `bench cohort`: an approved project's cohort pulled into a dataset folder, beside the
//! whole-slide fetch, between two real nodes (an owner and a researcher's node) over
//! loopback or with WAN delay added by relays.
//!
//! The owner ingests `--slides` generated slides with research consent and approves a
//! project for the grantee, plus one more slide without it, shared for a second opinion
//! (not in the cohort). Measured, each run into an empty cache and an empty folder:
//! - the cohort: `slidemesh cohort fetch --level 0` (every tile through the grantee's API,
//!   fetched from the owner under the project's grants, verified by the node and again by
//!   the command, written as files with manifest.csv), tiles/s;
//! - the reference: the shared slide's whole-slide fetch into the grantee's cache (`POST
//!   /api/v1/slides/{id}/cache`), tiles/s.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::Value;

use super::federation::restart_empty;
use super::pair::{init_pair, link_pair, serve, wait_for, wait_for_shared};
use super::procs::{sibling, wait_http};
use super::{cached_slide, median, slide_files};
use slidemesh_testnet::setup::{first_slide, output, share, slidemesh, status};

const PROJECT: &str = "REC 26/YH/0042";

#[derive(Debug, Args)]
pub struct CohortBench {
    /// Slides in the cohort
    #[arg(long, default_value_t = 6)]
    slides: u64,
    /// Size of each generated slide (20MB of 256 px tiles is about 2,000 tiles)
    #[arg(long, default_value = "20MB", value_parser = crate::cmd::synth::parse_byte_size)]
    size: u64,
    /// Size of the reference slide fetched whole
    #[arg(long, default_value = "100MB", value_parser = crate::cmd::synth::parse_byte_size)]
    reference_size: u64,
    /// Runs of each to take the median of
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Tiles the cohort fetch asks for at once
    #[arg(long, default_value_t = 8)]
    parallel: usize,
    /// Round-trip delay added between the nodes in ms (relays in front of each node)
    #[arg(long, default_value_t = 0)]
    delay_ms: u32,
    /// Working folder for the slides and node data
    #[arg(long, default_value = "target/bench")]
    work: PathBuf,
    /// The folder the dataset is written in (as its subfolder `slidemesh-cohort-dataset`,
    /// removed before each run) [default: the working folder]
    #[arg(long)]
    dataset: Option<PathBuf>,
}

pub fn run(args: CohortBench) -> Result<()> {
    if args.slides == 0 || args.runs == 0 {
        bail!("--slides and --runs are at least 1");
    }
    std::fs::create_dir_all(&args.work)?;
    let work = std::fs::canonicalize(&args.work)?;
    let run_dir = work.join("cohort-run");
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(&run_dir)?;
    let bin = sibling("slidemesh")?;

    // The cohort's slides, each linked into one folder with a consent sidecar (research
    // consent); the reference slide without one (clinical care only: never in a cohort).
    let consented = run_dir.join("consented");
    std::fs::create_dir_all(&consented)?;
    for seed in 0..args.slides {
        let dir = cached_slide(&work, args.size, 256, 100 + seed)?;
        let into = consented.join(format!("slide-{seed}"));
        std::fs::create_dir_all(&into)?;
        for file in slide_files(&dir)? {
            std::fs::hard_link(&file, into.join(file.file_name().context("a file name")?))
                .or_else(|_| {
                    std::fs::copy(&file, into.join(file.file_name().unwrap())).map(|_| ())
                })?;
        }
        std::fs::write(into.join("consent.json"), r#"{"codes": ["GRU"]}"#)?;
    }
    let reference = cached_slide(&work, args.reference_size, 256, 2)?;

    let (owner, grantee) = init_pair(&bin, &run_dir)?;
    status(slidemesh(&bin, &owner.data).arg("ingest").arg(&reference))?;
    let shared = first_slide(&bin, &owner.data)?.context("the owner holds the slide")?;
    status(slidemesh(&bin, &owner.data).arg("ingest").arg(&consented))?;
    status(slidemesh(&bin, &owner.data).args([
        "project",
        "approve",
        PROJECT,
        "--trust",
        "RAE",
        "--until",
        "30d",
        "--max-slides",
        "10000",
    ]))?;
    let pair = link_pair(&bin, &run_dir, (owner, grantee), args.delay_ms, false)?;
    let (owner, grantee) = (&pair.owner, &pair.grantee);
    let _owner_node = serve(&bin, &owner.data, &owner.http)?;
    let mut grantee_node = serve(&bin, &grantee.data, &grantee.http)?;
    let base = format!("http://{}", grantee.http);
    wait_http(&format!("{base}/api/v1/node"), Duration::from_secs(20))?;
    share(&bin, &owner.data, &shared, "RAE", "benchmark")?;
    wait_for_shared(&base, &shared)?;

    // The cohort: every consented slide (the query selects by stain, which all have).
    let query = "count where stain = \"H&E\"";
    let mut built = Value::Null;
    let mut build_ms = 0.0;
    wait_for(Duration::from_secs(60), || {
        let started = Instant::now();
        built = output(slidemesh(&bin, &grantee.data).args([
            "cohort",
            "build",
            "--project",
            PROJECT,
            query,
            "--json",
        ]))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
        build_ms = started.elapsed().as_secs_f64() * 1000.0;
        built["slides"].as_u64() == Some(args.slides)
    })
    .with_context(|| format!("the cohort was not built: {built}"))?;
    eprintln!(
        "cohort of {} slides built (and opened) in {build_ms:.0} ms",
        args.slides
    );

    let mut cohort_tps = Vec::new();
    let mut cohort_tiles = 0usize;
    let mut whole_tps = Vec::new();
    let mut whole_tiles = 0u64;
    let dataset = args
        .dataset
        .clone()
        .unwrap_or_else(|| run_dir.clone())
        .join("slidemesh-cohort-dataset");
    for run in 0..args.runs {
        grantee_node = restart_empty(&bin, grantee, grantee_node, &base)?;
        let _ = std::fs::remove_dir_all(&dataset);
        let started = Instant::now();
        fetch(&bin, &grantee.data, &dataset, args.parallel)?;
        let secs = started.elapsed().as_secs_f64();
        cohort_tiles = tiles_listed(&dataset)?;
        eprintln!(
            "  cohort fetch {}: {cohort_tiles} tiles in {secs:.2} s",
            run + 1
        );
        cohort_tps.push(cohort_tiles as f64 / secs);

        grantee_node = restart_empty(&bin, grantee, grantee_node, &base)?;
        let answer: Value = ureq::post(&format!("{base}/api/v1/slides/{shared}/cache"))
            .timeout(Duration::from_secs(600))
            .call()
            .context("whole-slide fetch")?
            .into_json()?;
        whole_tiles = answer["fetched"].as_u64().unwrap_or(0);
        let secs = answer["seconds"].as_f64().unwrap_or(f64::NAN);
        eprintln!(
            "  whole-slide fetch {}: {whole_tiles} tiles in {secs:.2} s",
            run + 1
        );
        whole_tps.push(whole_tiles as f64 / secs);
    }
    drop(grantee_node);
    let (cohort, whole) = (median(&mut cohort_tps), median(&mut whole_tps));
    println!();
    println!(
        "## bench cohort: {} slides, {} of delay, median of {} runs",
        args.slides,
        if args.delay_ms > 0 {
            format!("{} ms", args.delay_ms)
        } else {
            "no added".into()
        },
        args.runs
    );
    println!();
    println!("| what | tiles | tiles/s | ratio to whole-slide fetch |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| cohort fetch, level 0, {} at once, into files with manifest.csv | {cohort_tiles} | {cohort:.0} | {:.2}x |",
        args.parallel,
        cohort / whole
    );
    println!(
        "| whole-slide fetch into the grantee's cache (reference) | {whole_tiles} | {whole:.0} | 1.00x |"
    );
    println!(
        "| cohort build ({} slides: grants, de-identified manifests) | | {build_ms:.0} ms | |",
        args.slides
    );
    Ok(())
}

/// `slidemesh cohort fetch` of the project into `out`, unpaced.
fn fetch(bin: &Path, data: &Path, out: &Path, parallel: usize) -> Result<()> {
    let parallel = parallel.to_string();
    status(
        slidemesh(bin, data)
            .args(["cohort", "fetch", "--project", PROJECT, "--out"])
            .arg(out)
            .args(["--level", "0", "--rate", "1000000", "--parallel", &parallel]),
    )
}

/// The tiles `manifest.csv` lists.
fn tiles_listed(dataset: &Path) -> Result<usize> {
    let text = std::fs::read_to_string(dataset.join("manifest.csv"))
        .context("the fetch wrote no manifest.csv")?;
    Ok(text.lines().count().saturating_sub(1))
}
