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
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use slidemesh_protocol::COOPERATIVE_TRUSTS;
use slidemesh_tools::synth::{self, SynthSpec};

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
    let slidemesh = exe.parent().context("executable folder")?.join("slidemesh");
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
    let sm = |m: &Member| {
        let mut c = Command::new(&slidemesh);
        c.arg("--data").arg(&m.data);
        c
    };
    // Identities and slides.
    for (i, m) in members.iter().enumerate() {
        if !m.data.join("config.toml").exists() {
            let port = args.p2p_port + i as u16;
            status(sm(m).args([
                "init",
                "--trust",
                m.trust,
                "--http",
                &m.http,
                "--p2p",
                &format!("/ip4/127.0.0.1/udp/{port}/quic-v1"),
                "--p2p",
                &format!("/ip4/127.0.0.1/tcp/{port}"),
            ]))?;
        }
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
    let roster = dir.join("roster.json");
    if !dir.join("roster.published").exists() {
        let quorum = (2 * members.len()).div_ceil(3).max(1);
        let mut create = sm(&members[0]);
        create.args([
            "federation",
            "create",
            "--name",
            "Yorkshire pathology co-operative",
        ]);
        create
            .args(["--quorum", &quorum.to_string(), "--out"])
            .arg(&roster);
        for m in &members {
            let entry = dir.join(format!("{}.member.json", m.trust));
            let out = output(sm(m).args(["federation", "member"]))?;
            std::fs::write(&entry, out)?;
            create.arg("--member").arg(&entry);
        }
        status(&mut create)?;
        for m in members.iter().take(quorum).skip(1) {
            status(sm(m).args(["federation", "sign"]).arg(&roster))?;
        }
        for m in &members {
            status(sm(m).args(["federation", "publish"]).arg(&roster))?;
        }
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
            let slides: serde_json::Value =
                serde_json::from_str(&output(sm(m).args(["slides", "--json"]))?)?;
            let Some(slide) = slides
                .as_array()
                .and_then(|a| a.first())
                .or_else(|| slides["slides"].as_array().and_then(|a| a.first()))
                .and_then(|s| s["slide_id"].as_str())
                .map(str::to_string)
            else {
                continue;
            };
            status(sm(m).args([
                "share",
                &slide,
                "--with",
                next.trust,
                "--purpose",
                "second-opinion",
                "--until",
                "30d",
                "--reference",
                &format!("REF-{}-{}", m.trust, next.trust),
            ]))?;
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

fn status(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}
