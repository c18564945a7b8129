//! `slidemesh-tools synth`: generate one or more synthetic slides into a directory.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use slidemesh_tools::synth::{self, OffsetTableKind, SynthSpec};

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output directory. With --count above 1 each slide goes to DIR/seed-<N>/.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Seed of the first slide; slide i of --count uses seed N+i.
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,
    /// Approximate total size per slide, e.g. 20MB, 500MiB, 1GiB (default 20MB).
    #[arg(long, value_name = "SIZE", value_parser = parse_byte_size, conflicts_with_all = ["width", "height"])]
    size: Option<u64>,
    /// Level-0 width in pixels (with --height, instead of --size).
    #[arg(long, value_name = "PX", requires = "height")]
    width: Option<u32>,
    /// Level-0 height in pixels (with --width, instead of --size).
    #[arg(long, value_name = "PX", requires = "width")]
    height: Option<u32>,
    /// Tile size in pixels.
    #[arg(long, value_name = "PX", default_value_t = 256)]
    tile: u32,
    /// JPEG quality 1..=100.
    #[arg(long, default_value_t = 80)]
    quality: u8,
    /// Number of pyramid levels (default: halve until a level fits in one tile).
    #[arg(long)]
    levels: Option<u32>,
    /// NHS ODS code of the owning trust (RR8, RAE, RCD, RWY, RXF, RCF or any other).
    #[arg(long, value_name = "ODS", default_value = "RR8")]
    trust: String,
    /// How frame positions are announced in the pixel data.
    #[arg(long, value_enum, default_value_t = OffsetTable::Basic)]
    offset_table: OffsetTable,
    /// Fragments per frame (2 exercises readers that must join fragments).
    #[arg(long, value_name = "N", default_value_t = 1)]
    fragments_per_frame: u32,
    /// Number of slides, with seeds N, N+1, ...
    #[arg(long, value_name = "K", default_value_t = 1)]
    count: u32,
    /// Encoder threads (default: all cores). Does not change the output.
    #[arg(long)]
    threads: Option<usize>,
    /// Print one JSON object per slide (see `GeneratedSlide`) instead of a summary line.
    #[arg(long)]
    json: bool,
    /// Also write the LIMS's word on each generated case to FILE, as `slidemesh
    /// annotate-lims` reads it (diagnosis, grade, specimen, consent, opt-out; deterministic
    /// from the seed): the ground truth research queries over these slides must agree with
    #[arg(long, value_name = "FILE")]
    lims: Option<std::path::PathBuf>,
}

/// The LIMS's entry for the case of the slide with `seed` and accession `accession`: a
/// breast pathology mix (invasive carcinoma graded 1 to 3, DCIS, benign), core biopsies and
/// excisions, mostly consented to research, a few opted out.
fn lims_case(seed: u64, accession: &str) -> serde_json::Value {
    // SplitMix64 over the seed: the same case for the same slide on every run.
    let mut state = seed ^ 0x6c69_6d73_6361_7365; // "limscase"
    let mut next = |n: u64| {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    };
    let (diagnosis, grade) = match next(10) {
        0..=5 => ("413448000", Some(1 + next(3))),
        6 | 7 => ("399935008", None),
        _ => ("9846003", None),
    };
    let specimen = if next(10) < 6 {
        "core biopsy"
    } else {
        "excision"
    };
    let consent = match next(20) {
        0..=13 => "GRU",
        14..=16 => "HMB",
        _ => "CC",
    };
    serde_json::json!({
        "accession": accession,
        "diagnoses": [diagnosis],
        "grade": grade,
        "specimen": specimen,
        "consent": [consent],
        "opted_out": next(20) == 0,
    })
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OffsetTable {
    Basic,
    Empty,
    Extended,
}

impl From<OffsetTable> for OffsetTableKind {
    fn from(v: OffsetTable) -> Self {
        match v {
            OffsetTable::Basic => OffsetTableKind::Basic,
            OffsetTable::Empty => OffsetTableKind::Empty,
            OffsetTable::Extended => OffsetTableKind::Extended,
        }
    }
}

/// Parse sizes like `20MB`, `1.5GB`, `500MiB`, `1GiB`, `4096` (bytes). Decimal units are
/// powers of 1000, binary (`KiB`, `MiB`, `GiB`, `TiB`) powers of 1024.
pub fn parse_byte_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().map_err(|_| {
        format!("invalid size {s:?}: expected a number with a unit, like 20MB or 1GiB")
    })?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "tb" | "t" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0f64.powi(4),
        other => {
            return Err(format!(
                "invalid size unit {other:?} in {s:?}: use B, KB, MB, GB, KiB, MiB or GiB"
            ));
        }
    };
    let bytes = number * factor;
    if !(1.0..=1e14).contains(&bytes) {
        return Err(format!("size {s:?} is out of range: use 1 byte to 100 TB"));
    }
    Ok(bytes.round() as u64)
}

/// Build the spec of the slide with the given seed from the flags.
fn spec_for(args: &SynthArgs, seed: u64) -> anyhow::Result<SynthSpec> {
    let mut spec = SynthSpec::new(seed, 1, 1);
    spec.tile_size = args.tile;
    spec.jpeg_quality = args.quality;
    spec.levels = args.levels;
    spec.trust_ods = args.trust.clone();
    spec.offset_table = args.offset_table.into();
    spec.fragments_per_frame = args.fragments_per_frame;
    match (args.width, args.height) {
        (Some(w), Some(h)) => {
            spec.width = w;
            spec.height = h;
        }
        _ => spec.fit_to_bytes(args.size.unwrap_or(20_000_000))?,
    }
    spec.validate()?;
    Ok(spec)
}

pub fn run(args: SynthArgs) -> anyhow::Result<()> {
    if args.count == 0 {
        bail!("--count 0 generates nothing: use --count 1 or more");
    }
    let mut cases = Vec::new();
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    for i in 0..args.count {
        let seed = args
            .seed
            .checked_add(i as u64)
            .context("seed overflows u64: use a smaller --seed")?;
        let spec = spec_for(&args, seed)?;
        let dir = if args.count == 1 {
            args.out.clone()
        } else {
            args.out.join(format!("seed-{seed}"))
        };
        let started = Instant::now();
        let slide =
            synth::generate_slide_with_threads(&spec, &dir, threads).with_context(|| {
                format!(
                    "generating the slide with seed {seed} into {}",
                    dir.display()
                )
            })?;
        let elapsed = started.elapsed().as_secs_f64();
        cases.push(lims_case(seed, &slide.accession_number));
        if args.json {
            println!("{}", serde_json::to_string(&slide)?);
        } else {
            println!(
                "seed {seed} series {} size {}x{} levels {} frames {} bytes {} ({:.1} MB) in {elapsed:.1} s -> {}",
                slide.series_uid,
                spec.width,
                spec.height,
                slide.levels.len(),
                slide.total_frames,
                slide.total_bytes,
                slide.total_bytes as f64 / 1e6,
                dir.display()
            );
        }
    }
    if let Some(path) = &args.lims {
        std::fs::write(path, serde_json::to_string_pretty(&cases)?)
            .with_context(|| format!("writing the LIMS file {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_byte_size;

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_byte_size("20MB"), Ok(20_000_000));
        assert_eq!(parse_byte_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_byte_size("1.5 GB"), Ok(1_500_000_000));
        assert_eq!(parse_byte_size("4096"), Ok(4096));
        assert_eq!(parse_byte_size("200mb"), Ok(200_000_000));
        assert!(parse_byte_size("20 parsecs").is_err());
        assert!(parse_byte_size("MB").is_err());
        assert!(parse_byte_size("0").is_err());
    }
}
