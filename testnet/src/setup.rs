//! Setting up members of a federation with the real `slidemesh` CLI, as operators would:
//! `init` with fixed peer addresses, member entries, a roster proposed by the first member,
//! co-signed up to its quorum and published everywhere, and grants. Shared by `testnet`
//! and the federation benchmark.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// One member node to create.
pub struct MemberSpec {
    pub trust: String,
    pub data: PathBuf,
    /// HTTP address, ADDR:PORT.
    pub http: String,
    /// IPv4 address and port peers dial (QUIC and TCP on the same port).
    pub p2p_ip: String,
    pub p2p_port: u16,
}

/// `slidemesh --data DIR`.
pub fn slidemesh(bin: &Path, data: &Path) -> Command {
    let mut c = Command::new(bin);
    c.arg("--data").arg(data);
    c
}

/// Initialises the member's node unless it already exists.
pub fn init_member(bin: &Path, m: &MemberSpec) -> Result<()> {
    if m.data.join("config.toml").exists() {
        return Ok(());
    }
    let (ip, port) = (&m.p2p_ip, m.p2p_port);
    status(slidemesh(bin, &m.data).args([
        "init",
        "--trust",
        &m.trust,
        "--http",
        &m.http,
        "--p2p",
        &format!("/ip4/{ip}/udp/{port}/quic-v1"),
        "--p2p",
        &format!("/ip4/{ip}/tcp/{port}"),
    ]))
}

/// Proposes a genesis roster from every member's entry (by the first member), co-signs it
/// up to `quorum` and publishes it on every node.
pub fn make_roster(
    bin: &Path,
    name: &str,
    members: &[&Path],
    quorum: usize,
    work: &Path,
) -> Result<PathBuf> {
    make_roster_with_addrs(bin, name, members, &[], quorum, work)
}

/// [`make_roster`], with the addresses peers dial given for some members (`addrs[i]` for
/// member i, when present and non-empty) instead of their configured listen addresses: a
/// relay in front of a node, say.
pub fn make_roster_with_addrs(
    bin: &Path,
    name: &str,
    members: &[&Path],
    addrs: &[Vec<String>],
    quorum: usize,
    work: &Path,
) -> Result<PathBuf> {
    let roster = work.join("roster.json");
    let mut create = slidemesh(bin, members[0]);
    create.args(["federation", "create", "--name", name]);
    create
        .args(["--quorum", &quorum.to_string(), "--out"])
        .arg(&roster);
    for (i, data) in members.iter().enumerate() {
        let entry = work.join(format!("member-{i}.json"));
        let mut member = slidemesh(bin, data);
        member.args(["federation", "member"]);
        for addr in addrs.get(i).into_iter().flatten() {
            member.args(["--addr", addr]);
        }
        std::fs::write(&entry, output(&mut member)?)?;
        create.arg("--member").arg(&entry);
    }
    status(&mut create)?;
    for data in members.iter().take(quorum).skip(1) {
        status(
            slidemesh(bin, data)
                .args(["federation", "sign"])
                .arg(&roster),
        )?;
    }
    for data in members {
        status(
            slidemesh(bin, data)
                .args(["federation", "publish"])
                .arg(&roster),
        )?;
    }
    Ok(roster)
}

/// `slidemesh share` from `owner`; returns the grant id.
pub fn share(bin: &Path, owner: &Path, slide: &str, with: &str, reference: &str) -> Result<String> {
    let out = output(slidemesh(bin, owner).args([
        "share",
        slide,
        "--with",
        with,
        "--purpose",
        "second-opinion",
        "--until",
        "30d",
        "--reference",
        reference,
        "--json",
    ]))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v["grant_id"]
        .as_str()
        .map(str::to_string)
        .context("share printed no grant id")
}

/// The sub-specialty queues of the co-operative's demo directories, two per trust.
const QUEUES: [(&str, &str); 6] = [
    ("breast", "Breast pathology"),
    ("gi", "Gastrointestinal pathology"),
    ("skin", "Dermatopathology"),
    ("haematopathology", "Haematopathology"),
    ("gynae", "Gynaecological pathology"),
    ("uropath", "Urological pathology"),
];

/// The demo's queue names for the `i`th member: two of [`QUEUES`].
pub fn demo_queues(i: usize) -> [&'static str; 2] {
    [QUEUES[i % 6].0, QUEUES[(i + 1) % 6].0]
}

/// Writes the `i`th member's referral directory into its config (on a freshly initialised
/// node only): its two queues, and two specialists who report them and cover each other.
pub fn write_demo_directory(data: &Path, i: usize) -> Result<()> {
    let path = data.join("config.toml");
    let config = std::fs::read_to_string(&path)?;
    if !config.contains("\nqueues = []\n") {
        return Ok(());
    }
    let [a, b] = demo_queues(i);
    let title = |q: &'static str| QUEUES.iter().find(|(n, _)| *n == q).map_or(q, |(_, t)| *t);
    let queues = format!(
        "queues = [{{ name = \"{a}\", title = \"{}\" }}, {{ name = \"{b}\", title = \"{}\" }}]",
        title(a),
        title(b)
    );
    let specialists = format!(
        "specialists = [{{ account = \"{a}-lead\", name = \"Consultant, {a}\", queues = [\"{a}\"], \
         covered_by = \"{b}-lead\" }}, {{ account = \"{b}-lead\", name = \"Consultant, {b}\", \
         queues = [\"{b}\"], covered_by = \"{a}-lead\" }}]"
    );
    let config = config
        .replace("\nqueues = []\n", &format!("\n{queues}\n"))
        .replace("\nspecialists = []\n", &format!("\n{specialists}\n"));
    std::fs::write(&path, config)?;
    Ok(())
}

/// `slidemesh refer` from `owner` of `slide` to `queue` at `to`; returns the referral id.
pub fn refer(
    bin: &Path,
    owner: &Path,
    slide: &str,
    to: &str,
    queue: &str,
    question: &str,
    urgency: &str,
) -> Result<String> {
    let out = output(slidemesh(bin, owner).args([
        "refer",
        slide,
        "--to",
        to,
        "--queue",
        queue,
        "--question",
        question,
        "--urgency",
        urgency,
        "--until",
        "14d",
        "--json",
    ]))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v["id"]
        .as_str()
        .map(str::to_string)
        .context("refer printed no referral id")
}

/// The id of the first slide a node holds.
pub fn first_slide(bin: &Path, data: &Path) -> Result<Option<String>> {
    let slides: serde_json::Value =
        serde_json::from_str(&output(slidemesh(bin, data).args(["slides", "--json"]))?)?;
    Ok(slides
        .as_array()
        .and_then(|a| a.first())
        .and_then(|s| s["slide_id"].as_str())
        .map(str::to_string))
}

pub fn status(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

pub fn output(cmd: &mut Command) -> Result<String> {
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
