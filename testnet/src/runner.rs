//! The testnet (`slidemesh-testnet`): the co-operative on one machine. Starts N real `slidemesh`
//! node processes (default six, one per co-operative trust) with their own identities, a
//! co-signed roster, a generated slide each and a few grants, and prints each node's web UI.
//!
//! Idempotent like the demo: identities, slides, roster and grants are made on the first run
//! only (markers in the folder); later runs start serving at once. Ctrl-C stops every node.
//!
//! Links: unless `--direct-links`, every path from one node to another runs through a relay
//! in this process ([`link_relay`]: each node dials its peers at their relays, given with
//! `serve --peer-address`), so a link can be cut, healed, delayed and made lossy while the
//! nodes run. This is the no-root fallback the issue asks for; network namespaces with
//! `tc netem` are not used because this machine's kernel has no netem. Links carry TCP
//! (QUIC still listens, but peers dial the relays), and with `--quic-links` QUIC as well,
//! through a UDP relay per direction under the same link conditions.
//!
//! Faults on command: while it runs, type on stdin (see [`faults`]): `kill`, `restart`,
//! `pause`, `resume` a trust's node; `cut`, `heal` the link between two trusts; `delay` it
//! (round trip, ms) and make it lossy (`loss`, percent); `links` and `status` show the state.
//! Each command answers with one line, so scripts and tests can drive the testnet.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use slidemesh_protocol::COOPERATIVE_TRUSTS;

use crate::link_relay::{Link, Relays};
use crate::setup::{
    MemberSpec, demo_queues, first_slide, init_member, make_roster, refer, share, slidemesh,
    status, write_demo_directory,
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
    /// Let nodes dial each other directly (QUIC first) instead of through this process's
    /// link relays; links then cannot be cut, delayed or made lossy
    #[arg(long)]
    direct_links: bool,
    /// Relay QUIC too (a UDP relay per direction, dialled first), not only TCP: faults then
    /// reach the transport the nodes prefer. A cut QUIC link is noticed at QUIC's idle
    /// timeout, not at once as a closed TCP connection is
    #[arg(long, conflicts_with = "direct_links")]
    quic_links: bool,
}

struct Member {
    trust: &'static str,
    name: &'static str,
    data: PathBuf,
    http: String,
    /// `serve --peer-address` flags: this node's peers at their relays.
    peer_addresses: Vec<String>,
}

/// The relays between every pair of nodes; `links[(i, j)]` with i < j controls both
/// directions of the link between members i and j.
struct Links {
    _relays: Relays,
    links: std::collections::BTreeMap<(usize, usize), Link>,
}

impl Links {
    /// A relay for each direction of each pair; sets every member's `peer_addresses`.
    fn start(members: &mut [Member], p2p_port: u16, quic: bool) -> Result<Self> {
        let relays = Relays::start()?;
        let mut links = std::collections::BTreeMap::new();
        let port = |i: usize| p2p_port + i as u16;
        for i in 0..members.len() {
            for j in 0..members.len() {
                if i == j {
                    continue;
                }
                let link: &Link = links.entry((i.min(j), i.max(j))).or_insert_with(Link::new);
                let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], port(j)));
                if quic {
                    // QUIC sends from its listening port, so only node i's datagrams pass.
                    let relay = relays.udp_relay_from(upstream, link, Some(port(i)))?;
                    members[i].peer_addresses.push(format!(
                        "{}=/ip4/127.0.0.1/udp/{}/quic-v1",
                        members[j].trust,
                        relay.port()
                    ));
                }
                let relay = relays.relay_from(upstream, link, Some(port(i)))?;
                members[i].peer_addresses.push(format!(
                    "{}=/ip4/127.0.0.1/tcp/{}",
                    members[j].trust,
                    relay.port()
                ));
            }
        }
        Ok(Self {
            _relays: relays,
            links,
        })
    }

    fn get(&self, a: usize, b: usize) -> Option<&Link> {
        self.links.get(&(a.min(b), a.max(b)))
    }
}

/// Synthetic slide records each member gets for research queries.
const RESEARCH_RECORDS: usize = 20_000;

pub fn run(args: TestnetArgs) -> Result<()> {
    if !(1..=COOPERATIVE_TRUSTS.len()).contains(&args.nodes) {
        bail!("--nodes must be between 1 and {}", COOPERATIVE_TRUSTS.len());
    }
    let exe = std::env::current_exe()?;
    let bin_dir = exe.parent().context("executable folder")?;
    let bin = bin_dir.join("slidemesh");
    let synth = bin_dir.join("slidemesh-tools");
    std::fs::create_dir_all(&args.dir)?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let mut members: Vec<Member> = COOPERATIVE_TRUSTS[..args.nodes]
        .iter()
        .enumerate()
        .map(|(i, (trust, name))| Member {
            trust,
            name,
            data: dir.join(trust),
            http: format!("127.0.0.1:{}", args.http_port + i as u16),
            peer_addresses: Vec::new(),
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
        write_demo_directory(&m.data, i)?;
        let slides = dir.join("slides").join(m.trust);
        let marker = dir.join(format!("{}.ingested", m.trust));
        if !marker.exists() {
            eprintln!(
                "generating and ingesting a slide for {} ({})...",
                m.name, m.trust
            );
            let _ = std::fs::remove_dir_all(&slides);
            let bytes = 8_000_000 + 4_000_000 * (i as u64 % 3);
            status(
                std::process::Command::new(&synth)
                    .arg("synth")
                    .arg("--out")
                    .arg(&slides)
                    .args(["--seed", &(i + 1).to_string()])
                    .args(["--size", &format!("{bytes}B")])
                    .args(["--trust", m.trust]),
            )
            .context("generating the slide with slidemesh-tools synth")?;
            status(sm(m).arg("ingest").arg(&slides))?;
            std::fs::write(&marker, b"")?;
        }
        // Research queries need a trust's worth of cases: synthetic records (facts and
        // LIMS entries, no images) the Research page counts across the co-operative.
        let records = dir.join(format!("{}.records", m.trust));
        if !records.exists() {
            status(
                std::process::Command::new(&synth)
                    .arg("records")
                    .arg("--data")
                    .arg(&m.data)
                    .args(["--count", &RESEARCH_RECORDS.to_string(), "--demo-node"]),
            )
            .context("adding research records with slidemesh-tools records")?;
            std::fs::write(&records, b"")?;
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
    let links = if args.direct_links {
        None
    } else {
        Some(Links::start(&mut members, args.p2p_port, args.quic_links)?)
    };
    // Serve. Every node's pid is remembered so that a SIGTERM to the testnet (from
    // `timeout`, a service manager or `kill`) stops the nodes too, as Ctrl-C does.
    let pids = stop_nodes_on_sigterm()?;
    let start = |m: &Member| -> Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{}.log", m.trust)))?;
        let mut command = sm(m);
        command.arg("serve");
        for address in &m.peer_addresses {
            command.arg("--peer-address").arg(address);
        }
        command
            .env("RUST_LOG", "info,libp2p=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}'s node", m.trust))
            .inspect(|child| {
                if let Ok(mut pids) = pids.lock() {
                    pids.push(child.id());
                }
            })
    };
    // Nodes started are stopped again if the testnet fails part-way (a node that does not
    // start, a share that fails): none is left running without its launcher.
    let mut nodes = Nodes(Vec::new());
    for m in &members {
        nodes.0.push(Some(start(m)?));
    }
    for m in &members {
        wait_http(&m.http).with_context(|| log_tail(&dir.join(format!("{}.log", m.trust))))?;
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
    // Open referrals: each trust refers its slide to the one two along, to a queue there.
    if members.len() > 2 && !dir.join("referrals.made").exists() {
        const CASES: [(&str, &str); 3] = [
            (
                "Atypical ductal proliferation on core: DCIS or invasive? Please grade.",
                "two-week-wait",
            ),
            (
                "Dysplasia in Barrett's segment: low or high grade?",
                "urgent",
            ),
            (
                "Spitzoid lesion in a young adult: benign or atypical?",
                "routine",
            ),
        ];
        for (i, m) in members.iter().enumerate() {
            let j = (i + 2) % members.len();
            if let Some(slide) = first_slide(&bin, &m.data)? {
                let (question, urgency) = CASES[i % CASES.len()];
                refer(
                    &bin,
                    &m.data,
                    &slide,
                    members[j].trust,
                    demo_queues(j)[0],
                    question,
                    urgency,
                )?;
            }
        }
        // And a backlog: the first trust offers its slide's case to the shared gi queue.
        if let Some(slide) = first_slide(&bin, &members[0].data)? {
            status(sm(&members[0]).args([
                "offer",
                &slide,
                "--queue",
                "gi",
                "--question",
                "Backlog: colonic biopsy, please report.",
            ]))?;
        }
        std::fs::write(dir.join("referrals.made"), b"")?;
    }
    println!(
        "slidemesh testnet: {} nodes (logs in {})",
        members.len(),
        dir.display()
    );
    for m in &members {
        println!("  {:<4} {:<45} http://{}", m.trust, m.name, m.http);
    }
    println!(
        "each trust shared one slide with the next and referred it to the one after, and {} \
         offered a case to the shared gi queue (/referrals); Ctrl-C stops every node",
        members[0].trust
    );
    match &links {
        Some(_) => println!(
            "links between nodes run through relays here; faults, typed here:\n  \
             kill|restart|pause|resume TRUST, cut|heal TRUST TRUST, delay TRUST TRUST RTT_MS,\n  \
             loss TRUST TRUST PERCENT, links, status (e.g. `cut RR8 RAE`)"
        ),
        None => println!(
            "faults, typed here: kill|restart|pause|resume TRUST (e.g. `pause RAE`), status \
             (links are direct: --direct-links)"
        ),
    }
    faults(&members, &mut nodes.0, links.as_ref(), start)?;
    for child in nodes.0.iter_mut().flatten() {
        let _ = child.wait();
    }
    Ok(())
}

/// The node processes of a testnet; dropping it stops those still running (SIGTERM, then
/// SIGKILL after a few seconds).
struct Nodes(Vec<Option<Child>>);

impl Drop for Nodes {
    fn drop(&mut self) {
        let mut running: Vec<&mut Child> = self
            .0
            .iter_mut()
            .flatten()
            .filter_map(|c| matches!(c.try_wait(), Ok(None)).then_some(c))
            .collect();
        for child in &running {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && !running.is_empty() {
            running.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
            std::thread::sleep(Duration::from_millis(100));
        }
        for child in running {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads fault commands from stdin until it closes, answering each with one line. Nodes:
/// kill (SIGKILL, no clean shutdown), restart (start a killed node again, or kill and start a
/// running one), pause and resume (SIGSTOP and SIGCONT: the node keeps its connections but
/// answers nothing, as a hung machine would). Links (see [`Links`]): cut, heal, delay,
/// loss, links.
fn faults(
    members: &[Member],
    children: &mut [Option<Child>],
    links: Option<&Links>,
    start: impl Fn(&Member) -> Result<Child>,
) -> Result<()> {
    use std::io::BufRead;
    let find = |trust: &str| {
        let trust = trust.to_ascii_uppercase();
        members.iter().position(|m| m.trust == trust)
    };
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => {}
            ["status"] => {
                for (m, c) in members.iter().zip(children.iter_mut()) {
                    let up = c.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)));
                    println!("  {:<4} {}", m.trust, if up { "running" } else { "down" });
                }
                println!("status: {} nodes", members.len());
            }
            ["links"] => match links {
                Some(links) => {
                    for ((a, b), link) in &links.links {
                        let c = link.conditions();
                        println!(
                            "  {}-{}: {}, round trip +{} ms, loss {}%",
                            members[*a].trust,
                            members[*b].trust,
                            if c.cut { "cut" } else { "up" },
                            (c.one_way * 2).as_millis(),
                            c.loss * 100.0
                        );
                    }
                    println!("links: {}", links.links.len());
                }
                None => println!("links are direct (--direct-links): nothing to show"),
            },
            [verb @ ("cut" | "heal" | "delay" | "loss"), a, b, rest @ ..] => {
                let Some(links) = links else {
                    println!("links are direct (--direct-links): they cannot be {verb}");
                    continue;
                };
                let (Some(i), Some(j)) = (find(a), find(b)) else {
                    println!("no node for {a} or {b}");
                    continue;
                };
                let Some(link) = links.get(i, j) else {
                    println!("{a} and {b} are the same node");
                    continue;
                };
                let (a, b) = (members[i].trust, members[j].trust);
                let value = rest.first().and_then(|v| v.parse::<f64>().ok());
                match (*verb, value) {
                    ("cut", None) => {
                        link.cut();
                        println!("link {a}-{b} cut");
                    }
                    ("heal", None) => {
                        link.heal();
                        println!("link {a}-{b} healed");
                    }
                    ("delay", Some(ms)) if ms >= 0.0 => {
                        link.set_one_way_delay(Duration::from_secs_f64(ms / 2000.0));
                        println!("link {a}-{b} round trip +{ms} ms");
                    }
                    ("loss", Some(percent)) if (0.0..=100.0).contains(&percent) => {
                        link.set_loss(percent / 100.0);
                        println!("link {a}-{b} loss {percent}%");
                    }
                    _ => println!(
                        "usage: cut|heal TRUST TRUST, delay TRUST TRUST RTT_MS, loss TRUST TRUST PERCENT"
                    ),
                }
            }
            [verb @ ("kill" | "restart" | "pause" | "resume"), trust] => {
                let Some(i) = find(trust) else {
                    println!("no node for {trust}");
                    continue;
                };
                node_fault(verb, &members[i], &mut children[i], &start)?;
            }
            _ => println!(
                "unknown command {line:?}: kill|restart|pause|resume TRUST, cut|heal TRUST TRUST, \
                 delay TRUST TRUST RTT_MS, loss TRUST TRUST PERCENT, links, status"
            ),
        }
    }
    Ok(())
}

fn node_fault(
    verb: &str,
    member: &Member,
    child: &mut Option<Child>,
    start: impl Fn(&Member) -> Result<Child>,
) -> Result<()> {
    let trust = member.trust;
    let signal = |c: &Child, sig: &str| {
        let _ = std::process::Command::new("kill")
            .args([sig, &c.id().to_string()])
            .status();
    };
    match verb {
        "kill" => {
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            println!("{trust} killed");
        }
        "restart" => {
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            *child = Some(start(member)?);
            wait_http(&member.http)?;
            println!("{trust} restarted");
        }
        _ => match child {
            Some(c) => {
                signal(c, if verb == "pause" { "-STOP" } else { "-CONT" });
                println!("{trust} {verb}d");
            }
            None => println!("{trust} is down; restart it first"),
        },
    }
    Ok(())
}

/// On SIGTERM, sends SIGTERM to every node started (each shuts down cleanly), waits for
/// them a few seconds, then exits. Ctrl-C needs no help: the terminal signals the whole
/// process group.
fn stop_nodes_on_sigterm() -> Result<std::sync::Arc<std::sync::Mutex<Vec<u32>>>> {
    let pids = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u32>::new()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Registered before any node starts, so no SIGTERM can kill the testnet unhandled.
    let mut terminate = runtime.block_on(async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    })?;
    let watched = pids.clone();
    std::thread::Builder::new()
        .name("testnet-sigterm".into())
        .spawn(move || {
            runtime.block_on(terminate.recv());
            let pids: Vec<u32> = watched.lock().map(|p| p.clone()).unwrap_or_default();
            for pid in &pids {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            // A node that exited is a zombie until reaped: it counts as stopped.
            let running = |pid: &u32| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| {
                        s.rsplit(')')
                            .next()
                            .map(|r| !r.trim_start().starts_with('Z'))
                    })
                    .unwrap_or(false)
            };
            while Instant::now() < deadline && pids.iter().any(running) {
                std::thread::sleep(Duration::from_millis(100));
            }
            eprintln!("testnet: stopped every node (SIGTERM)");
            std::process::exit(0);
        })?;
    Ok(pids)
}

/// The last lines of a node's log, for an error saying why it did not start.
fn log_tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!(
        "{} ends with:\n{}",
        path.display(),
        lines[lines.len().saturating_sub(15)..].join("\n")
    )
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
