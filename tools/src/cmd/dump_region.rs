//! `slidemesh-tools dump-region`: the generator's reference pixels for a region, as raw
//! RGB8, so independent readers can be checked against the truth.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use slidemesh_tools::synth::{self, SynthSpec};

#[derive(Debug, Args)]
pub struct DumpRegionArgs {
    /// Seed of the slide.
    #[arg(long)]
    seed: u64,
    /// Level-0 width of the slide (the tissue layout scales with it).
    #[arg(long, value_name = "PX")]
    width: u32,
    /// Level-0 height of the slide.
    #[arg(long, value_name = "PX")]
    height: u32,
    /// Level-0 pixels per output pixel: 2^n for level n, or the thumbnail's downsample.
    #[arg(long, default_value_t = 1)]
    downsample: u32,
    /// Left edge of the region in pixels of that image.
    #[arg(long)]
    x: u32,
    /// Top edge of the region.
    #[arg(long)]
    y: u32,
    /// Region width.
    #[arg(long)]
    w: u32,
    /// Region height.
    #[arg(long)]
    h: u32,
    /// Output file: w*h*3 bytes, row-major RGB8, no header.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

pub fn run(args: DumpRegionArgs) -> anyhow::Result<()> {
    let spec = SynthSpec::new(args.seed, args.width, args.height);
    spec.validate()?;
    anyhow::ensure!(
        args.downsample >= 1 && args.w >= 1 && args.h >= 1,
        "region {}x{} at downsample {} is empty: use positive sizes",
        args.w,
        args.h,
        args.downsample
    );
    anyhow::ensure!(
        (args.w as u64) * (args.h as u64) <= 1 << 28,
        "region {}x{} is too large: dump at most 2^28 pixels",
        args.w,
        args.h
    );
    let rgb = synth::render_region(&spec, args.downsample, args.x, args.y, args.w, args.h);
    std::fs::write(&args.out, rgb).with_context(|| format!("writing {}", args.out.display()))
}
