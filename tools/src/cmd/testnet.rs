//! `slidemesh-tools testnet`: the co-operative on one machine. Starts N real `slidemesh`
//! node processes (default six, one per co-operative trust) with their own identities, a
//! co-signed roster, a generated slide each and a few grants, and prints each node's web UI.
//!
//! Idempotent like the demo: identities, slides, roster and grants are made on the first run
//! only (markers in the folder); later runs start serving at once. Ctrl-C stops every node.
//!
//! Not yet here (issue 3): fault commands (kill/pause/cut/delay) beyond the fault switch
//! `SLIDEMESH_FAULT_CORRUPT_TILES` that tests use; network namespaces with netem.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use slidemesh_protocol::COOPERATIVE_TRUSTS;
use slidemesh_tools::synth::{self, SynthSpec};

use super::federation_setup::{
    MemberSpec, first_slide, init_member, make_roster, share, slidemesh, status,
};

#[derive(Debug, Args)]
pub struct TestnetArgs {
    /// Folder for the nodes, slides and roster (kept between runs)
    #[arg(long, default_value = "testnet-data")]
    dir: PathBuf,
    /// How many nodes (1 to 6), named after the co-operative's trusts in order
    #[arg(long, default_value_t = 6)]
    nodes: usize,
    /// HTTP port of the first node's web UI; node i uses this + i
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// libp2p port of the first node (QUIC and TCP, loopback); node i uses this + i
    #[arg(long, default_value_t = 7401)]
    p2p_port: u16,
}

struct Member {
    trust: &'static str,
    name: &'static str,
    data: PathBuf,
    http: String,
}

pub fn run(args: TestnetArgs) -> Result<()> {
    if !(1..=COOPERATIVE_TRUSTS.len()).contains(&args.nodes) {
        bail!("--nodes must be between 1 and {}", COOPERATIVE_TRUSTS.len());
    }
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("executable folder")?.join("slidemesh");
    std::fs::create_dir_all(&args.dir)?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let members: Vec<Member> = COOPERATIVE_TRUSTS[..args.nodes]
        .iter()
        .enumerate()
        .map(|(i, (trust, name))| Member {
            trust,
            name,
            data: dir.join(trust),
            http: format!("127.0.0.1:{}", args.http_port + i as u16),
        })
        .collect();
    let sm = |m: &Member| slidemesh(&bin, &m.data);
    // Identities and slides.
    for (i, m) in members.iter().enumerate() {
        init_member(
            &bin,
            &MemberSpec {
                trust: m.trust.to_string(),
                data: m.data.clone(),
                http: m.http.clone(),
                p2p_ip: "127.0.0.1".into(),
                p2p_port: args.p2p_port + i as u16,
            },
        )?;
        let slides = dir.join("slides").join(m.trust);
        let marker = dir.join(format!("{}.ingested", m.trust));
        if !marker.exists() {
            eprintln!(
                "generating and ingesting a slide for {} ({})...",
                m.name, m.trust
            );
            let mut spec = SynthSpec::new(i as u64 + 1, 1, 1);
            spec.trust_ods = m.trust.to_string();
            spec.fit_to_bytes(8_000_000 + 4_000_000 * (i as u64 % 3))?;
            let _ = std::fs::remove_dir_all(&slides);
            synth::generate_slide(&spec, &slides)?;
            status(sm(m).arg("ingest").arg(&slides))?;
            std::fs::write(&marker, b"")?;
        }
    }
    // The roster: proposed by the first trust, co-signed by a two-thirds quorum.
    if !dir.join("roster.published").exists() {
        let quorum = (2 * members.len()).div_ceil(3).max(1);
        let datas: Vec<&std::path::Path> = members.iter().map(|m| m.data.as_path()).collect();
        make_roster(
            &bin,
            "Yorkshire pathology co-operative",
            &datas,
            quorum,
            &dir,
        )?;
        std::fs::write(dir.join("roster.published"), b"")?;
    }
    // Serve.
    let mut children: Vec<Child> = Vec::new();
    for m in &members {
        let log = std::fs::File::create(dir.join(format!("{}.log", m.trust)))?;
        let child = sm(m)
            .arg("serve")
            .env("RUST_LOG", "info,libp2p=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}'s node", m.trust))?;
        children.push(child);
    }
    for m in &members {
        wait_http(&m.http)?;
    }
    // Grants: each trust asks the next for a second opinion on its slide.
    if members.len() > 1 && !dir.join("grants.made").exists() {
        for (i, m) in members.iter().enumerate() {
            let next = &members[(i + 1) % members.len()];
            if let Some(slide) = first_slide(&bin, &m.data)? {
                let reference = format!("REF-{}-{}", m.trust, next.trust);
                share(&bin, &m.data, &slide, next.trust, &reference)?;
            }
        }
        std::fs::write(dir.join("grants.made"), b"")?;
    }
    println!(
        "slidemesh testnet: {} nodes (logs in {})",
        members.len(),
        dir.display()
    );
    for m in &members {
        println!("  {:<4} {:<45} http://{}", m.trust, m.name, m.http);
    }
    println!("each trust shared one slide with the next; Ctrl-C stops every node");
    for mut child in children {
        let _ = child.wait();
    }
    Ok(())
}

fn wait_http(addr: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if ureq::get(&format!("http://{addr}/api/v1/node"))
            .call()
            .is_ok()
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the node at {addr} did not start (see its log)")
}
