//! `slidemesh-testnet`: starts the co-operative's nodes on this machine (see
//! [`slidemesh_testnet::runner`]).

use clap::Parser;
use slidemesh_testnet::runner::{self, TestnetArgs};

/// The slidemesh co-operative on this machine: real nodes, a co-signed roster, generated
/// slides, grants, and faults on command.
#[derive(Debug, Parser)]
#[command(name = "slidemesh-testnet", version, about)]
struct Cli {
    #[command(flatten)]
    args: TestnetArgs,
}

fn main() -> anyhow::Result<()> {
    runner::run(Cli::parse().args)
}
