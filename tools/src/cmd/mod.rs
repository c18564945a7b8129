//! The subcommands of `slidemesh-tools`, one module each; `Command` lists them.

mod bench;
mod demo;
mod dump_region;
mod probe;
pub mod records;
mod synth;

use clap::{Parser, Subcommand};

/// slidemesh operator and test tools.
#[derive(Debug, Parser)]
#[command(name = "slidemesh-tools", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate synthetic DICOM whole-slide images.
    Synth(synth::SynthArgs),
    /// Run a local demo node with generated slides and the web UI.
    Demo(demo::DemoArgs),
    /// Benchmarks against reference tools measured in the same run.
    Bench(bench::BenchArgs),
    /// Write the exact pixels the generator encoded for a region, as raw RGB8.
    DumpRegion(dump_region::DumpRegionArgs),
    /// Speak the federation protocols to one node as a chosen peer; print the outcome.
    Probe(probe::ProbeArgs),
    /// Add synthetic slide records (facts and LIMS entries, no images) for research queries.
    Records(records::RecordsArgs),
}

impl Command {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Synth(args) => synth::run(args),
            Command::DumpRegion(args) => dump_region::run(args),
            Command::Bench(args) => bench::run(args),
            Command::Demo(args) => demo::run(args),
            Command::Probe(args) => probe::run(args),
            Command::Records(args) => records::run(args),
        }
    }
}
