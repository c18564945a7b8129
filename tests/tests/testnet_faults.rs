//! Link faults in a running testnet: `slidemesh-testnet` with three real nodes whose
//! links run through its relays, driven on stdin as an operator would. Cutting the link
//! between an owner and a grantee stops remote viewing with a clear error; healing it
//! brings it back without restarting anything; a delayed link still delivers verified
//! tiles, and the delay is really there. A revocation made while the grantee is cut off
//! reaches it when its links heal; with only the owner's link cut, it arrives by way of
//! another member.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use serde_json::Value;
use slidemesh_e2e::{bin, get, run_ok, wait_until};

/// `len` consecutive ports free for TCP and UDP on loopback (the testnet numbers its
/// nodes' ports from a base), below Linux's ephemeral range (32768 and up), where the
/// testnet's relays and every outgoing connection take their ports.
fn free_port_run(len: u16) -> u16 {
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id();
    'search: loop {
        // A cheap xorshift: tests running at once start from different places.
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let base = 20000 + (seed % 12000) as u16;
        for port in base..base + len {
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_err()
                || std::net::UdpSocket::bind(("127.0.0.1", port)).is_err()
            {
                continue 'search;
            }
        }
        return base;
    }
}

struct Testnet {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Testnet {
    fn start(dir: &std::path::Path, http: u16, p2p: u16) -> Testnet {
        Self::start_with(dir, http, p2p, &[])
    }

    fn start_with(dir: &std::path::Path, http: u16, p2p: u16, extra: &[&str]) -> Testnet {
        let mut child = Command::new(bin("slidemesh-testnet"))
            .arg("--dir")
            .arg(dir)
            .args(["--nodes", "3"])
            .args(["--http-port", &http.to_string()])
            .args(["--p2p-port", &p2p.to_string()])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the testnet");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("testnet: {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut net = Testnet {
            child,
            stdin,
            lines,
        };
        net.expect(
            "links between nodes run through relays",
            Duration::from_secs(600),
        );
        net
    }

    /// Waits for a line starting with `prefix`.
    fn expect(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(e) => panic!("the testnet never printed {prefix:?}: {e}"),
            }
        }
    }

    /// Types a fault command and waits for its answer.
    fn command(&mut self, command: &str, answer: &str) {
        writeln!(self.stdin, "{command}").expect("write to the testnet");
        self.stdin.flush().expect("flush");
        self.expect(answer, Duration::from_secs(30));
    }
}

impl Drop for Testnet {
    fn drop(&mut self) {
        // SIGTERM: the testnet stops its nodes cleanly before it exits.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Leeds's slide once it reached the node at `base` (shared with it): its id and detail.
fn leeds_slide_at(base: &str) -> (String, Value) {
    let mut shared = None;
    wait_until(Duration::from_secs(60), || {
        shared = slides(base)
            .into_iter()
            .find(|s| s["origin"] == "shared" && s["owner"] == "RR8");
        shared.is_some()
    })
    .expect("Leeds's slide reaches the grantee");
    let slide = shared.unwrap()["slide_id"].as_str().unwrap().to_string();
    let detail = serde_json::from_slice(&get(&format!("{base}/api/v1/slides/{slide}"), &[]).body)
        .expect("slide detail");
    (slide, detail)
}

fn slides(base: &str) -> Vec<Value> {
    let list: Value = serde_json::from_slice(&get(&format!("{base}/api/v1/slides"), &[]).body)
        .expect("slide list");
    list["slides"].as_array().cloned().unwrap_or_default()
}

#[test]
fn cut_heal_and_delay_the_link_between_owner_and_grantee() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (http, p2p) = (free_port_run(3), free_port_run(3));
    let mut net = Testnet::start(dir.path(), http, p2p);
    // Leeds (RR8, node 0) shared its slide with Bradford (RAE, node 1).
    let leeds = format!("http://127.0.0.1:{http}");
    let bradford = format!("http://127.0.0.1:{}", http + 1);
    let (slide, detail) = leeds_slide_at(&bradford);
    let levels = detail["levels"].as_array().expect("levels");
    assert!(
        levels.len() >= 3,
        "a pyramid deep enough to keep prefetch away: {detail}"
    );
    let (cols, rows) = (
        levels[0]["cols"].as_u64().unwrap(),
        levels[0]["rows"].as_u64().unwrap(),
    );
    let tile = |base: &str, level: usize, col: u64, row: u64| {
        get(
            &format!("{base}/api/v1/slides/{slide}/levels/{level}/tiles/{col}/{row}"),
            &[],
        )
    };
    let owners = |level: usize, col: u64, row: u64| {
        let r = tile(&leeds, level, col, row);
        assert_eq!(r.status, 200, "Leeds serves its own tile");
        r.body
    };

    // The link works: the coarsest tile arrives, byte-identical to the owner's.
    let coarsest = levels.len() - 1;
    let first = tile(&bradford, coarsest, 0, 0);
    assert_eq!(first.status, 200);
    assert_eq!(first.body, owners(coarsest, 0, 0));

    // Cut: an uncached tile cannot come from anywhere (no other node holds the slide), and
    // the viewer gets an error saying so, not a hang or wrong bytes.
    net.command("cut RR8 RAE", "link RR8-RAE cut");
    let (far_col, far_row) = (cols - 1, rows - 1);
    let cut = tile(&bradford, 0, far_col, far_row);
    assert!(
        (500..600).contains(&cut.status),
        "a tile across a cut link fails as a gateway error, got {}",
        cut.status
    );
    let why = String::from_utf8_lossy(&cut.body);
    assert!(
        why.contains("error") && why.contains("RR8's node"),
        "the failure says why, naming the source tried: {why}"
    );
    // The cut isolates only that link: Leeds and Bradford still serve their own slides.
    assert_eq!(tile(&leeds, 0, far_col, far_row).status, 200);
    assert!(!slides(&bradford).is_empty());

    // Heal: the nodes reconnect on their own and the same tile arrives intact.
    net.command("heal RR8 RAE", "link RR8-RAE healed");
    let mut healed = None;
    wait_until(Duration::from_secs(30), || {
        let r = tile(&bradford, 0, far_col, far_row);
        let ok = r.status == 200;
        healed = Some(r);
        ok
    })
    .expect("remote viewing works again after the link heals");
    assert_eq!(healed.unwrap().body, owners(0, far_col, far_row));

    // Delay: a 300 ms round trip is added; a tile still arrives verified, and no sooner
    // than one round trip (a lower bound, which a slow machine cannot break).
    net.command("delay RR8 RAE 300", "link RR8-RAE round trip +300 ms");
    let started = Instant::now();
    let delayed = tile(&bradford, 0, 0, rows - 1);
    let took = started.elapsed();
    assert_eq!(delayed.status, 200);
    assert_eq!(delayed.body, owners(0, 0, rows - 1));
    assert!(
        took >= Duration::from_millis(300),
        "a tile over a link with 300 ms round trip came in {took:?}"
    );
    net.command("delay RR8 RAE 0", "link RR8-RAE round trip +0 ms");

    // Partition: Bradford cut off from everyone while Leeds revokes. Bradford keeps the
    // slide (it cannot know), and drops it once its links heal and the revocation, kept in
    // Leeds's outbox, is delivered.
    let leeds = |args: &[&str]| {
        run_ok(
            Command::new(bin("slidemesh"))
                .arg("--data")
                .arg(dir.path().join("RR8"))
                .args(args),
        )
    };
    let listed = || {
        slides(&bradford)
            .iter()
            .any(|s| s["slide_id"] == slide.as_str())
    };
    let grant_to_bradford = || -> String {
        let grants: Value = serde_json::from_str(&leeds(&["grants", "--json"])).unwrap();
        grants
            .as_array()
            .unwrap()
            .iter()
            .find(|g| {
                g["direction"] == "issued"
                    && g["state"] == "active"
                    && g["grant"]["slide"] == slide.as_str()
                    // Leeds also referred the slide to Harrogate (the demo's referrals).
                    && g["grant"]["grantee"] == "RAE"
            })
            .expect("an active grant from Leeds to Bradford")["grant_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    net.command("cut RR8 RAE", "link RR8-RAE cut");
    net.command("cut RCD RAE", "link RCD-RAE cut");
    leeds(&["revoke", &grant_to_bradford()]);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        listed(),
        "an isolated node cannot have heard of the revocation"
    );
    net.command("heal RR8 RAE", "link RR8-RAE healed");
    net.command("heal RCD RAE", "link RCD-RAE healed");
    wait_until(Duration::from_secs(30), || !listed())
        .expect("the revocation arrives once the links heal, and Bradford drops the slide");

    // Around a broken link: Leeds shares again, then revokes while only the Leeds-Bradford
    // link is down. The revocation reaches Bradford through Harrogate (gossipsub), once
    // the healed links have rejoined every node's announcement mesh.
    let nodes: Vec<String> = (0..3)
        .map(|i| format!("http://127.0.0.1:{}", http + i))
        .collect();
    wait_until(Duration::from_secs(60), || {
        nodes.iter().all(|base| {
            let status: Value =
                serde_json::from_slice(&get(&format!("{base}/api/v1/network"), &[]).body)
                    .unwrap_or_default();
            status["network"]["announce_mesh"]
                .as_array()
                .is_some_and(|m| m.len() == 2)
        })
    })
    .expect("the announcement mesh re-forms after the links heal");
    leeds(&[
        "share",
        &slide,
        "--with",
        "RAE",
        "--purpose",
        "second-opinion",
        "--until",
        "2h",
    ]);
    wait_until(Duration::from_secs(30), listed).expect("the new grant reaches Bradford");
    net.command("cut RR8 RAE", "link RR8-RAE cut");
    leeds(&["revoke", &grant_to_bradford()]);
    wait_until(Duration::from_secs(30), || !listed())
        .expect("the revocation travels around the cut link by way of Harrogate");
    net.command("heal RR8 RAE", "link RR8-RAE healed");
    net.command("links", "links: 3");
}

#[test]
fn quic_links_run_through_the_relays_and_obey_delays_and_cuts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (http, p2p) = (free_port_run(3), free_port_run(3));
    let mut net = Testnet::start_with(dir.path(), http, p2p, &["--quic-links"]);
    let leeds = format!("http://127.0.0.1:{http}");
    let bradford = format!("http://127.0.0.1:{}", http + 1);
    let (slide, detail) = leeds_slide_at(&bradford);
    let levels = detail["levels"].as_array().expect("levels");
    let (cols, rows) = (
        levels[0]["cols"].as_u64().unwrap(),
        levels[0]["rows"].as_u64().unwrap(),
    );
    assert!(
        levels.len() >= 3 && cols > 4,
        "tiles beyond prefetch's reach: {detail}"
    );
    let tile = |base: &str, level: usize, col: u64, row: u64| {
        get(
            &format!("{base}/api/v1/slides/{slide}/levels/{level}/tiles/{col}/{row}"),
            &[],
        )
    };
    let coarsest = levels.len() - 1;
    let first = tile(&bradford, coarsest, 0, 0);
    assert_eq!(first.status, 200);
    assert_eq!(first.body, tile(&leeds, coarsest, 0, 0).body);

    // Bradford's connections are QUIC, to the relays (not to the peers' own ports).
    let network: Value =
        serde_json::from_slice(&get(&format!("{bradford}/api/v1/network"), &[]).body).unwrap();
    let connections = network["network"]["connections"].as_array().unwrap();
    let own_ports: Vec<String> = (0..3).map(|i| format!("/udp/{}/", p2p + i)).collect();
    assert!(
        connections.iter().all(|c| {
            let addr = c[1].as_str().unwrap_or("");
            addr.contains("/quic-v1") && !own_ports.iter().any(|p| addr.contains(p.as_str()))
        }),
        "every connection is QUIC through a relay: {connections:?}"
    );
    assert!(!connections.is_empty());

    // Each new connection was warmed up: Bradford pushed the configured filler (1 MiB by
    // default) to every peer it is connected to, and each acknowledged all of it.
    wait_until(Duration::from_secs(30), || {
        let network: Value =
            serde_json::from_slice(&get(&format!("{bradford}/api/v1/network"), &[]).body)
                .unwrap_or_default();
        let connected = network["network"]["connected"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let warmed = network["network"]["warmed_up"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        !connected.is_empty()
            && connected.iter().all(|peer| {
                warmed.iter().any(|w| {
                    w["peer"] == *peer
                        && w["bytes"] == 1_048_576
                        && w["millis"].as_f64().is_some_and(|ms| ms > 0.0)
                })
            })
    })
    .expect("every connection of Bradford's is warmed up");

    // The delay applies to QUIC's datagrams.
    net.command("delay RR8 RAE 300", "link RR8-RAE round trip +300 ms");
    let started = Instant::now();
    let delayed = tile(&bradford, 0, 0, rows - 1);
    let took = started.elapsed();
    assert_eq!(delayed.status, 200);
    assert_eq!(delayed.body, tile(&leeds, 0, 0, rows - 1).body);
    assert!(took >= Duration::from_millis(300), "came in {took:?}");
    net.command("delay RR8 RAE 0", "link RR8-RAE round trip +0 ms");

    // A cut drops every datagram: the tile fails as a gateway error once the fetch times
    // out, and comes back after the heal without restarting anything.
    net.command("cut RR8 RAE", "link RR8-RAE cut");
    let far = |base: &str| tile(base, 0, cols - 1, rows - 1);
    let cut = far(&bradford);
    assert!((500..600).contains(&cut.status), "got {}", cut.status);
    net.command("heal RR8 RAE", "link RR8-RAE healed");
    wait_until(Duration::from_secs(60), || far(&bradford).status == 200)
        .expect("remote viewing works again after the QUIC link heals");
    assert_eq!(far(&bradford).body, far(&leeds).body);
}
