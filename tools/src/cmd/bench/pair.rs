//! Member nodes for the benchmarks that need a federation (`bench federation`, `bench
//! referrals`: an owner (RR8) and a grantee (RAE); `bench research`: the co-operative's six)
//! initialised on free loopback ports, and their genesis roster, with the round-trip delay
//! between them added by relays in front of each node ([`link_relay`]) when asked for.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use slidemesh_testnet::link_relay;
use slidemesh_testnet::setup::{MemberSpec, init_member, make_roster_with_addrs};

use super::procs::{Server, free_port};

/// The two members and, with a delay, the relays their links cross (kept while they run).
pub struct Pair {
    pub owner: MemberSpec,
    pub grantee: MemberSpec,
    _relays: link_relay::Relays,
}

/// Initialises both members under `run_dir`; their configuration may be edited (or slides
/// ingested) before the roster binds them.
pub fn init_pair(bin: &Path, run_dir: &Path) -> Result<(MemberSpec, MemberSpec)> {
    let mut members = init_members(bin, run_dir, &["RR8", "RAE"])?;
    let grantee = members.pop().context("two members")?;
    let owner = members.pop().context("two members")?;
    Ok((owner, grantee))
}

/// Initialises one member per trust under `run_dir`, on free loopback ports.
pub fn init_members(bin: &Path, run_dir: &Path, trusts: &[&str]) -> Result<Vec<MemberSpec>> {
    trusts
        .iter()
        .map(|trust| {
            let member = MemberSpec {
                trust: trust.to_string(),
                data: run_dir.join(trust),
                http: format!("127.0.0.1:{}", free_port()?),
                p2p_ip: "127.0.0.1".into(),
                p2p_port: free_port()?,
            };
            init_member(bin, &member)?;
            Ok(member)
        })
        .collect()
}

/// Publishes the pair's roster (see [`link_members`]).
pub fn link_pair(
    bin: &Path,
    run_dir: &Path,
    (owner, grantee): (MemberSpec, MemberSpec),
    delay_ms: u32,
    tcp: bool,
) -> Result<Pair> {
    let mut linked = link_members(bin, run_dir, vec![owner, grantee], delay_ms, tcp)?;
    let grantee = linked.members.pop().context("two members")?;
    let owner = linked.members.pop().context("two members")?;
    Ok(Pair {
        owner,
        grantee,
        _relays: linked.relays,
    })
}

/// Members bound by one roster, with the relays their links cross (kept while they run).
pub struct Linked {
    pub members: Vec<MemberSpec>,
    relays: link_relay::Relays,
}

/// Publishes a genesis roster of `members` (quorum 1). With a delay, each node is reachable
/// only through a relay that adds half the round trip per direction, so whichever side
/// dials, the connection crosses one relay (QUIC through a UDP relay first, TCP as the
/// fallback; `tcp`: TCP only).
pub fn link_members(
    bin: &Path,
    run_dir: &Path,
    members: Vec<MemberSpec>,
    delay_ms: u32,
    tcp: bool,
) -> Result<Linked> {
    let relays = link_relay::Relays::start()?;
    let link = link_relay::Link::new();
    link.set_one_way_delay(Duration::from_micros(delay_ms as u64 * 500));
    let addrs = if delay_ms > 0 {
        members
            .iter()
            .map(|m| {
                let upstream = format!("127.0.0.1:{}", m.p2p_port).parse()?;
                let tcp_relay = relays.relay(upstream, &link)?;
                let mut addrs = vec![format!("/ip4/127.0.0.1/tcp/{}", tcp_relay.port())];
                if !tcp {
                    let udp = relays.udp_relay_from(upstream, &link, None)?;
                    addrs.insert(0, format!("/ip4/127.0.0.1/udp/{}/quic-v1", udp.port()));
                }
                Ok(addrs)
            })
            .collect::<Result<Vec<_>>>()?
    } else if tcp {
        members
            .iter()
            .map(|m| vec![format!("/ip4/127.0.0.1/tcp/{}", m.p2p_port)])
            .collect()
    } else {
        Vec::new()
    };
    let datas: Vec<&Path> = members.iter().map(|m| m.data.as_path()).collect();
    make_roster_with_addrs(bin, "benchmark", &datas, &addrs, 1, run_dir)?;
    Ok(Linked { members, relays })
}

/// `slidemesh serve` of the node in `data` on `http` (logs as `SLIDEMESH_BENCH_LOG` says).
pub fn serve(bin: &Path, data: &Path, http: &str) -> Result<Server> {
    let mut cmd = Command::new(bin);
    cmd.arg("--data")
        .arg(data)
        .args(["serve", "--http", http])
        .env(
            "RUST_LOG",
            std::env::var("SLIDEMESH_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null());
    Ok(Server {
        child: cmd.spawn().context("cannot start slidemesh serve")?,
    })
}

pub fn get_json(url: &str) -> Result<Value> {
    Ok(ureq::get(url)
        .timeout(Duration::from_secs(30))
        .call()?
        .into_json()?)
}

/// Polls `check` every 100 ms until it holds, for at most `timeout`.
pub fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("condition not met within {timeout:?}")
}

/// Waits until the node at `base` lists `slide` (shared with it).
pub fn wait_for_shared(base: &str, slide: &str) -> Result<()> {
    wait_for(Duration::from_secs(60), || {
        get_json(&format!("{base}/api/v1/slides"))
            .map(|v| v.to_string().contains(slide))
            .unwrap_or(false)
    })
    .context("the shared slide did not reach the grantee")
}
