//! `bench federation`: two real nodes, an owner and a grantee, over loopback, or with WAN
//! delay added by a TCP relay in front of each node ([`link_relay`]).
//!
//! - Whole-slide fetch: every tile of a slide from the owner into the grantee's empty cache,
//!   each verified (`POST /api/v1/slides/{id}/cache`), tiles/s, against `sendme` (iroh)
//!   moving the same tiles as files between two local processes.
//! - Time to first screen: the slide detail plus the first ~40 tiles of a viewport from the
//!   grantee's API with an empty cache, fetched six at a time like a browser; p50 and p99.
//!   The manifest itself arrived with the grant (before anyone opened the slide), so it is
//!   not a network round trip here.
//! - Peak RSS of both nodes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::Value;

use super::cached_slide;
use super::median;
use super::pair::{get_json, init_pair, link_pair, serve, wait_for, wait_for_shared};
use super::procs::{Server, sibling, wait_http};
use slidemesh_testnet::setup::{MemberSpec, first_slide, share, slidemesh, status};

#[derive(Debug, Args)]
pub struct FederationBench {
    /// Slide size to generate (200MB of 256 px tiles is about 20,000 tiles)
    #[arg(long, default_value = "200MB", value_parser = crate::cmd::synth::parse_byte_size)]
    size: u64,
    /// Whole-slide fetches (and sendme transfers) to take the median of
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// First-screen measurements (each with an empty cache)
    #[arg(long, default_value_t = 20)]
    screens: usize,
    /// Round-trip delay added between the nodes in ms, by relays in front of each node (UDP
    /// for QUIC, TCP for the fallback; works without root; this machine's kernel has no
    /// netem)
    #[arg(long, default_value_t = 0)]
    delay_ms: u32,
    /// Skip the sendme reference
    #[arg(long)]
    no_sendme: bool,
    /// Connect the nodes over TCP (Noise, Yamux) only, instead of QUIC first
    #[arg(long)]
    tcp: bool,
    /// The nodes' connection warm-up, in bytes (config `network.warm_up_bytes`; default
    /// the nodes' own, 1 MiB); 0 turns it off, and each first screen then starts on a
    /// connection still in slow start
    #[arg(long)]
    warm_up_bytes: Option<u64>,
    /// Ask for each screen's tiles one by one only, without first naming the screen's
    /// region (`POST .../wanted`), which the web viewer does when it opens a slide or
    /// zooms and pans
    #[arg(long)]
    no_wanted: bool,
    /// Path of the sendme binary [default: sendme on PATH, else
    /// /var/cache/slidemesh-bench/bin/sendme]
    #[arg(long)]
    sendme: Option<PathBuf>,
    /// Working folder for the slide and node data
    #[arg(long, default_value = "target/bench")]
    work: PathBuf,
}

pub fn run(args: FederationBench) -> Result<()> {
    std::fs::create_dir_all(&args.work)?;
    let work = std::fs::canonicalize(&args.work)?;
    let slide_dir = cached_slide(&work, args.size, 256, 2)?;
    let run_dir = work.join("federation-run");
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(&run_dir)?;
    let bin = sibling("slidemesh")?;

    let (owner, grantee) = init_pair(&bin, &run_dir)?;
    if let Some(bytes) = args.warm_up_bytes {
        for member in [&owner, &grantee] {
            let path = member.data.join("config.toml");
            let config = std::fs::read_to_string(&path)?;
            let edited = config.replace(
                "warm_up_bytes = 1048576",
                &format!("warm_up_bytes = {bytes}"),
            );
            if edited == config {
                bail!("{} has no default warm_up_bytes line", path.display());
            }
            std::fs::write(&path, edited)?;
        }
    }
    status(slidemesh(&bin, &owner.data).arg("ingest").arg(&slide_dir))?;
    let slide = first_slide(&bin, &owner.data)?.context("the owner holds the slide")?;
    let pair = link_pair(&bin, &run_dir, (owner, grantee), args.delay_ms, args.tcp)?;
    let (owner, grantee) = (&pair.owner, &pair.grantee);
    let owner_node = serve(&bin, &owner.data, &owner.http)?;
    let mut grantee_node = serve(&bin, &grantee.data, &grantee.http)?;
    let base = format!("http://{}", grantee.http);
    wait_http(&format!("{base}/api/v1/node"), Duration::from_secs(20))?;
    share(&bin, &owner.data, &slide, "RAE", "benchmark")?;
    wait_for_shared(&base, &slide)?;
    let detail = get_json(&format!("{base}/api/v1/slides/{slide}"))?;
    let total_tiles = detail["tiles"].as_u64().unwrap_or(0);
    eprintln!("slide {slide}: {total_tiles} tiles");

    // Whole-slide fetch, each run into an empty cache.
    let mut ours = Vec::new();
    let mut fetched_tiles = 0u64;
    for run in 0..args.runs {
        if run > 0 {
            grantee_node = restart_empty(&bin, grantee, grantee_node, &base)?;
        }
        settle_disk();
        let answer: Value = match ureq::post(&format!("{base}/api/v1/slides/{slide}/cache"))
            .timeout(Duration::from_secs(600))
            .call()
        {
            Ok(r) => r.into_json()?,
            Err(ureq::Error::Status(code, r)) => {
                bail!("whole-slide fetch failed ({code}): {}", r.into_string()?)
            }
            Err(e) => return Err(e).context("whole-slide fetch"),
        };
        fetched_tiles = answer["fetched"].as_u64().unwrap_or(0);
        let secs = answer["seconds"].as_f64().unwrap_or(f64::NAN);
        eprintln!(
            "  whole-slide fetch {}: {fetched_tiles} tiles in {secs:.2} s",
            run + 1
        );
        ours.push(fetched_tiles as f64 / secs);
    }
    let ours_tps = median(&mut ours);

    // The reference: the same tiles as files, sent with sendme.
    let sendme_tps = if args.no_sendme {
        None
    } else {
        match sendme_reference(&args, &format!("http://{}", owner.http), &slide, &run_dir) {
            Ok(tps) => Some(tps),
            Err(e) => {
                eprintln!("sendme skipped: {e:#}");
                None
            }
        }
    };

    // Time to first screen, each with an empty cache.
    let levels = detail["levels"].as_array().context("levels")?;
    let level = levels
        .iter()
        .rev()
        .find(|l| l["tiles"].as_u64().unwrap_or(0) >= 40)
        .unwrap_or(&levels[0]);
    let (li, cols) = (
        level["index"].as_u64().unwrap_or(0),
        level["cols"].as_u64().unwrap_or(1),
    );
    // The region the web viewer names before asking for tiles: the rows the 40 tiles span.
    let first_region = (
        format!("{base}/api/v1/slides/{slide}/levels/{li}/wanted"),
        serde_json::json!({ "cols": [0, cols.min(40) - 1], "rows": [0, 39 / cols] }),
    );
    let viewport: Vec<String> = (0..40)
        .map(|i| {
            format!(
                "{base}/api/v1/slides/{slide}/levels/{li}/tiles/{}/{}",
                i % cols,
                i / cols
            )
        })
        .collect();
    // A second screen on the now warm connection: 40 tiles in the middle of the level two
    // finer (the next finer one is what prefetch fetches while the user looks), as when a
    // pathologist zooms straight into a region.
    let deep = levels
        .iter()
        .find(|l| l["index"].as_u64() == Some(li.saturating_sub(2)))
        .filter(|_| li >= 2);
    let mut deep_region = (String::new(), Value::Null);
    let deep_viewport: Vec<String> = deep
        .map(|l| {
            let (di, dc, dr) = (
                l["index"].as_u64().unwrap_or(0),
                l["cols"].as_u64().unwrap_or(1),
                l["rows"].as_u64().unwrap_or(1),
            );
            let (c0, r0) = ((dc / 2).saturating_sub(4), (dr / 2).saturating_sub(2));
            deep_region = (
                format!("{base}/api/v1/slides/{slide}/levels/{di}/wanted"),
                serde_json::json!({
                    "cols": [c0, (c0 + 7).min(dc - 1)],
                    "rows": [r0, (r0 + 4).min(dr - 1)],
                }),
            );
            (0..40)
                .map(|i| {
                    format!(
                        "{base}/api/v1/slides/{slide}/levels/{di}/tiles/{}/{}",
                        (c0 + i % 8).min(dc - 1),
                        (r0 + i / 8).min(dr - 1)
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut screens = Vec::new();
    let mut warm_screens = Vec::new();
    let owner_base = format!("http://{}", owner.http);
    let warm_up = args.warm_up_bytes != Some(0);
    for _ in 0..args.screens {
        let warm_ups = warm_ups_done(&owner_base)?;
        grantee_node = restart_empty(&bin, grantee, grantee_node, &base)?;
        if warm_up {
            // As while a user works: the owner's node warmed the new connection up when
            // the grantee's node came back, before anyone opened a slide.
            wait_for(Duration::from_secs(30), || {
                warm_ups_done(&owner_base).is_ok_and(|n| n > warm_ups)
            })
            .context("the owner did not warm the new connection up")?;
        }
        let started = Instant::now();
        get_json(&format!("{base}/api/v1/slides/{slide}"))?;
        let detail_ms = started.elapsed().as_secs_f64() * 1000.0;
        if !args.no_wanted {
            post_wanted(&first_region)?;
        }
        fetch_parallel(&viewport, 6)?;
        screens.push(started.elapsed().as_secs_f64() * 1000.0);
        let mut warm = String::new();
        if !deep_viewport.is_empty() {
            // The user looks at the first screen for a moment; prefetch settles.
            std::thread::sleep(Duration::from_secs(1));
            let started = Instant::now();
            if !args.no_wanted {
                post_wanted(&deep_region)?;
            }
            fetch_parallel(&deep_viewport, 6)?;
            warm_screens.push(started.elapsed().as_secs_f64() * 1000.0);
            warm = format!(
                ", zoomed-in screen {:.1} ms",
                started.elapsed().as_secs_f64() * 1000.0
            );
        }
        eprintln!(
            "  first screen: detail {detail_ms:.1} ms, total {:.1} ms{warm}",
            screens.last().unwrap_or(&0.0)
        );
    }
    screens.sort_by(f64::total_cmp);
    warm_screens.sort_by(f64::total_cmp);
    let p = |v: &[f64], q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];

    let transport = format!(
        "{}{}, {}",
        if args.tcp { "TCP" } else { "QUIC" },
        if args.no_wanted {
            ", tiles asked for one by one"
        } else {
            ", each screen's region named first"
        },
        match args.warm_up_bytes {
            Some(0) => "no warm-up".to_string(),
            Some(bytes) => format!("connections warmed up with {bytes} bytes"),
            None => "connections warmed up (node default)".to_string(),
        }
    );
    let delay = if args.delay_ms > 0 {
        format!(
            "{transport}, {} ms round trip added (delay relays)",
            args.delay_ms
        )
    } else {
        format!("{transport}, loopback")
    };
    println!("federation: owner and grantee nodes, {delay}, slide of {total_tiles} tiles");
    println!();
    println!("| what | tiles/s | ratio to sendme |");
    println!("| --- | ---: | ---: |");
    match sendme_tps {
        Some(s) => {
            println!("| sendme (reference, tiles as files) | {s:.0} | 1.00x |");
            println!(
                "| slidemesh whole-slide fetch, verified, into cache | {ours_tps:.0} | {:.2}x |",
                ours_tps / s
            );
        }
        None => {
            println!("| slidemesh whole-slide fetch, verified, into cache | {ours_tps:.0} | n/a |")
        }
    }
    println!();
    println!(
        "time to first screen (detail + 40 tiles of level {li}, 6 at a time, empty cache, {} runs): p50 {:.1} ms, p99 {:.1} ms",
        screens.len(),
        p(&screens, 0.5),
        p(&screens, 0.99)
    );
    if !warm_screens.is_empty() {
        println!(
            "zoomed-in screen on the warm connection (40 uncached tiles of level {}, 6 at a time): p50 {:.1} ms, p99 {:.1} ms",
            li - 2,
            p(&warm_screens, 0.5),
            p(&warm_screens, 0.99)
        );
    }
    println!(
        "peak RSS: owner {:.1} MiB, grantee {:.1} MiB",
        owner_node.peak_rss().unwrap_or(0) as f64 / 1048576.0,
        grantee_node.peak_rss().unwrap_or(0) as f64 / 1048576.0
    );
    if fetched_tiles == 0 {
        bail!("no tiles were fetched");
    }
    Ok(())
}

/// Stops the grantee, empties its tile cache, starts it again and waits until it is
/// connected to the owner (as it would be while a user works).
pub(super) fn restart_empty(
    bin: &Path,
    grantee: &MemberSpec,
    node: Server,
    base: &str,
) -> Result<Server> {
    drop(node);
    let _ = std::fs::remove_dir_all(grantee.data.join("cache"));
    let node = serve(bin, &grantee.data, &grantee.http)?;
    wait_http(&format!("{base}/api/v1/node"), Duration::from_secs(20))?;
    wait_for(Duration::from_secs(30), || {
        get_json(&format!("{base}/api/v1/network"))
            .map(|v| {
                v["network"]["connected"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
            })
            .unwrap_or(false)
    })
    .context("the grantee did not reconnect to the owner")?;
    Ok(node)
}

/// Names a screen's region to the node, as the web viewer does: the `wanted` URL and the
/// region's columns and rows.
fn post_wanted((url, region): &(String, Value)) -> Result<()> {
    let answer = ureq::post(url).send_json(region);
    match answer {
        Ok(r) if r.status() == 202 => Ok(()),
        Ok(r) => bail!("{url} answered {}", r.status()),
        Err(e) => Err(e).context(url.to_string()),
    }
}

/// Warm-ups a node finished since it started.
fn warm_ups_done(base: &str) -> Result<u64> {
    get_json(&format!("{base}/api/v1/network"))?["network"]["warm_ups_done"]
        .as_u64()
        .context("the network status has no warm_ups_done")
}

/// Flushes dirty pages left by the previous run, so that run's writeback does not land
/// in the next measurement (both sides write ~20,000 small files per run).
fn settle_disk() {
    let _ = Command::new("sync").status();
}

fn fetch_parallel(urls: &[String], connections: usize) -> Result<()> {
    let chunks: Vec<Vec<String>> = (0..connections)
        .map(|c| urls.iter().skip(c).step_by(connections).cloned().collect())
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|urls| {
                s.spawn(move || -> Result<()> {
                    let agent = ureq::AgentBuilder::new().build();
                    for url in urls {
                        let response = agent.get(&url).call().with_context(|| url.clone())?;
                        let mut body = Vec::new();
                        response.into_reader().read_to_end(&mut body)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("fetch thread panicked"))??;
        }
        Ok(())
    })
}

use std::io::Read;

/// Copies the grantee's cached tiles into one folder of files and times `sendme receive`
/// of that folder from a `sendme send` process; returns tiles/s (median of the runs).
/// Without delay only: sendme dials the addresses in its ticket, around the delay relays.
fn sendme_reference(
    args: &FederationBench,
    owner_base: &str,
    slide: &str,
    run_dir: &Path,
) -> Result<f64> {
    if args.delay_ms > 0 {
        bail!(
            "no sendme reference with --delay-ms (it dials its ticket's addresses, around the relays)"
        );
    }
    let sendme = match &args.sendme {
        Some(p) => p.clone(),
        None => which("sendme")
            .unwrap_or_else(|| PathBuf::from("/var/cache/slidemesh-bench/bin/sendme")),
    };
    if !sendme.is_file() {
        bail!(
            "{} not found: cargo install sendme --root /var/cache/slidemesh-bench",
            sendme.display()
        );
    }
    let tiles_dir = run_dir.join("sendme-tiles");
    let _ = std::fs::remove_dir_all(&tiles_dir);
    std::fs::create_dir_all(&tiles_dir)?;
    // The same tiles the whole-slide fetch moved, one file each, from the owner's API.
    let manifest = get_json(&format!("{owner_base}/api/v1/slides/{slide}/manifest"))?;
    let mut ids: Vec<String> = Vec::new();
    for group in ["levels", "associated"] {
        for part in manifest["manifest"][group].as_array().into_iter().flatten() {
            for id in part["tiles"].as_array().into_iter().flatten() {
                ids.extend(id.as_str().map(str::to_string));
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    let agent = ureq::AgentBuilder::new().build();
    for id in &ids {
        let mut bytes = Vec::new();
        agent
            .get(&format!("{owner_base}/api/v1/slides/{slide}/tiles/{id}"))
            .call()
            .with_context(|| format!("tile {id} from the owner"))?
            .into_reader()
            .read_to_end(&mut bytes)?;
        std::fs::write(tiles_dir.join(id), bytes)?;
    }
    let count = ids.len();
    let mut rates = Vec::new();
    for run in 0..args.runs {
        let send_dir = run_dir.join("sendme-send");
        let _ = std::fs::remove_dir_all(&send_dir);
        std::fs::create_dir_all(&send_dir)?;
        let mut sender = Command::new(&sendme)
            // No relays (this machine has no internet): direct addresses only.
            .args([
                "send",
                "--ticket-type",
                "addresses",
                "--relay",
                "disabled",
                "--no-progress",
            ])
            .arg(&tiles_dir)
            .current_dir(&send_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let ticket = read_ticket(sender.stdout.take().context("sendme stdout")?)?;
        let sender = Server { child: sender };
        let recv_dir = run_dir.join(format!("sendme-recv-{run}"));
        let _ = std::fs::remove_dir_all(&recv_dir);
        std::fs::create_dir_all(&recv_dir)?;
        settle_disk();
        let started = Instant::now();
        status(
            Command::new(&sendme)
                .args(["receive", "--relay", "disabled", "--no-progress", &ticket])
                .current_dir(&recv_dir)
                .stderr(Stdio::null()),
        )?;
        let secs = started.elapsed().as_secs_f64();
        drop(sender);
        eprintln!("  sendme {}: {count} tiles in {secs:.2} s", run + 1);
        rates.push(count as f64 / secs);
        let _ = std::fs::remove_dir_all(&recv_dir);
    }
    Ok(median(&mut rates))
}

/// The ticket from `sendme send` output: the first word starting with "blob".
fn read_ticket(stdout: std::process::ChildStdout) -> Result<String> {
    use std::io::BufRead;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(t) = line.split_whitespace().find(|w| w.starts_with("blob")) {
            return Ok(t.to_string());
        }
    }
    bail!("sendme send printed no ticket")
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}
