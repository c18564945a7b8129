//! `slidemesh-tools bench`: benchmarks that print our figures beside a reference tool
//! measured in the same run, as a ratio. Nothing here asserts a time; the figures go to
//! BENCHMARKS.md.
//!
//! - `bench ingest`: `slidemesh ingest` vs `b3sum` over the same files.
//! - `bench serve`: random tiles over keep-alive HTTP with `wrk`: the node vs nginx serving
//!   the same tile bytes as static files, and vs Orthanc + DICOMweb serving the frames.
//! - `bench federation`: whole-slide fetch between two nodes vs `sendme`, time to first
//!   screen of a remote slide, and the nodes' memory.
//! - `bench dicomweb`: the node's DICOMweb vs Orthanc + orthanc-dicomweb on the same slide
//!   and client: frames (single and 8 per request), QIDO-RS latency, STOW-RS ingest time.
//! - `bench consent`: cedar policy decisions per second and per tile batch, beside the
//!   grant signature check every request already pays.
//! - `bench referrals`: a referral from sent to visible in the receiving inbox, beside one
//!   remote tile over the same link; delivery after the receiver's outage.
//! - `bench research`: one node's query index vs a full scan and SQLite; six nodes end to end.
//! - `bench cohort`: an approved project's cohort fetched into a dataset folder, beside the
//!   whole-slide fetch.
//! - `bench replica`: time to a full replica of a slide, beside the whole-slide fetch.
//! - `bench failover`: a viewer's tile latency before, during and after the owner fails.
//! - `bench scrub`: `slidemesh scrub --now` over a node's originals, beside `b3sum`.

mod cohort;
mod consent;
mod dicomweb;
mod failover;
mod federation;
mod ingest;
mod load;
mod orthanc;
mod pair;
mod procs;
mod referrals;
mod replica;
mod research;
mod scrub;
mod serve;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use slidemesh_tools::synth;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    which: Which,
}

#[derive(Debug, Subcommand)]
enum Which {
    /// Ingest throughput vs b3sum over the same files.
    Ingest(ingest::IngestBench),
    /// Tile serving throughput vs nginx (static files) and Orthanc (DICOMweb frames).
    Serve(serve::ServeBench),
    /// Peer to peer: whole-slide fetch vs sendme, time to first screen, node memory.
    Federation(federation::FederationBench),
    /// DICOMweb vs Orthanc on the same slide: frames, QIDO-RS latency, STOW-RS ingest.
    Dicomweb(dicomweb::DicomwebBench),
    /// Consent policy decisions per second and the latency they add to a tile batch.
    Consent(consent::ConsentBench),
    /// Referral sent to visible in the receiving inbox, and delivery after an outage.
    Referrals(referrals::ReferralsBench),
    /// Research queries: one node's index vs a full scan and SQLite; six nodes end to end.
    Research(research::ResearchBench),
    /// An approved project's cohort fetched into a dataset folder vs the whole-slide fetch.
    Cohort(cohort::CohortBench),
    /// Time to a full replica of a slide vs the whole-slide fetch of it.
    Replica(replica::ReplicaBench),
    /// A viewer's tile latency before, during and after the owner fails, with a replica.
    Failover(failover::FailoverBench),
    /// `slidemesh scrub --now` over a node's originals vs b3sum over the same files.
    Scrub(scrub::ScrubBench),
}

pub fn run(args: BenchArgs) -> Result<()> {
    match args.which {
        Which::Ingest(a) => ingest::run(a),
        Which::Serve(a) => serve::run(a),
        Which::Federation(a) => federation::run(a),
        Which::Dicomweb(a) => dicomweb::run(a),
        Which::Consent(a) => consent::run(a),
        Which::Referrals(a) => referrals::run(a),
        Which::Research(a) => research::run(a),
        Which::Cohort(a) => cohort::run(a),
        Which::Replica(a) => replica::run(a),
        Which::Failover(a) => failover::run(a),
        Which::Scrub(a) => scrub::run(a),
    }
}

/// A generated slide for benchmarks, cached between runs under `work` (generation of a
/// large slide takes minutes; the files are deterministic from the spec, so reuse is safe).
fn cached_slide(work: &Path, bytes: u64, tile: u32, seed: u64) -> Result<PathBuf> {
    let dir = work.join(format!("slide-{bytes}-t{tile}-s{seed}"));
    // The marker sits beside the folder, not in it, so the folder holds only DICOM files.
    let done = work.join(format!("slide-{bytes}-t{tile}-s{seed}.complete"));
    if done.exists() {
        return Ok(dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "generating a {:.0} MB slide into {} (cached for later runs)",
        bytes as f64 / 1e6,
        dir.display()
    );
    let mut spec = synth::SynthSpec::new(seed, 1, 1);
    spec.tile_size = tile;
    spec.fit_to_bytes(bytes)?;
    synth::generate_slide(&spec, &dir).with_context(|| format!("generating {}", dir.display()))?;
    std::fs::write(&done, b"")?;
    Ok(dir)
}

/// The DICOM files of a cached slide.
fn slide_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
