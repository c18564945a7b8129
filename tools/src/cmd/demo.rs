//! `slidemesh-tools demo`: a local slidemesh node with generated slides and the web UI, for
//! the README's main command. Idempotent: slides are generated and the node initialised on
//! the first run only; later runs reuse them and start serving at once.
//!
//! The node is the real `slidemesh` binary (init, ingest, serve as separate processes, as
//! an operator would run them); the final `serve` replaces this process so Ctrl-C stops it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;
use slidemesh_tools::synth::{self, SynthSpec};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Folder for the demo's node and generated slides (kept between runs)
    #[arg(long, default_value = "demo-data")]
    dir: PathBuf,
    /// How many slides to generate on the first run
    #[arg(long, default_value_t = 4)]
    slides: u64,
    /// Address of the web UI
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR:PORT")]
    http: String,
    /// The demo node's trust (NHS ODS code)
    #[arg(long, default_value = "RR8")]
    trust: String,
}

pub fn run(args: DemoArgs) -> Result<()> {
    let exe = std::env::current_exe()?;
    let slidemesh = exe.parent().context("executable folder")?.join("slidemesh");
    if !slidemesh.is_file() {
        bail!(
            "{} not found: build with `cargo build --workspace --bins` (scripts/demo does)",
            slidemesh.display()
        );
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let node = args.dir.join("node");
    let slides = args.dir.join("slides");

    if !node.join("config.toml").exists() {
        status(Command::new(&slidemesh).arg("--data").arg(&node).args([
            "init",
            "--trust",
            &args.trust,
            "--http",
            &args.http,
        ]))?;
    }
    for i in 0..args.slides {
        let seed = 1 + i;
        generate(
            &args.dir,
            &slides,
            seed,
            &args.trust,
            15_000_000 * (1 + i % 3),
        )?;
    }
    // Ingest is idempotent: on later runs it reports every slide as already present.
    let ingest = Command::new(&slidemesh)
        .arg("--data")
        .arg(&node)
        .arg("ingest")
        .arg(&slides)
        .status()?;
    if !ingest.success() {
        bail!("ingest of the demo slides failed ({ingest})");
    }
    eprintln!("starting the node; open the URL below in a browser (Ctrl-C to stop)");
    let error = Command::new(&slidemesh)
        .arg("--data")
        .arg(&node)
        .args(["serve", "--http", &args.http])
        // A lone demo node talks to no peers: keep its p2p ports on loopback and free.
        .args([
            "--p2p",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "--p2p",
            "/ip4/127.0.0.1/tcp/0",
        ])
        .exec();
    Err(error).context("cannot start slidemesh serve")
}

/// Generates one slide unless a previous run completed it.
fn generate(demo: &Path, slides: &Path, seed: u64, trust: &str, bytes: u64) -> Result<()> {
    let dir = slides.join(format!("seed-{seed}"));
    // The marker stays outside the slides folder, which holds only DICOM files.
    let done = demo.join(format!("seed-{seed}.generated"));
    if done.exists() {
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "generating synthetic slide {seed} ({:.0} MB)...",
        bytes as f64 / 1e6
    );
    let mut spec = SynthSpec::new(seed, 1, 1);
    spec.trust_ods = trust.to_string();
    spec.fit_to_bytes(bytes)?;
    synth::generate_slide(&spec, &dir)?;
    std::fs::write(&done, b"")?;
    Ok(())
}

fn status(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}
