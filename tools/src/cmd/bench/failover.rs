//! `bench failover`: a viewer's tile latency at a grantee before, during and after its
//! slide's owner fails, with a replica of the slide at a third member. Three real nodes:
//! the owner (RR8) holds one generated slide, names RCD a replica (waited for until
//! complete) and shares the slide with RAE for a second opinion. A viewer at RAE asks for
//! tiles it has not fetched before (full resolution, in the slide's order), `--parallel` at
//! once as a browser does; each tile's time is measured from request to last byte.
//! Phases: `before` (owner up), `during` (owner killed with SIGKILL just before), `after`
//! (owner serving again). The reference is the `before` phase of the same run.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

use super::cached_slide;
use super::pair::{get_json, init_members, link_members, serve, wait_for, wait_for_shared};
use super::procs::{sibling, wait_http};
use slidemesh_testnet::setup::{first_slide, output, share, slidemesh, status};

#[derive(Debug, Args)]
pub struct FailoverBench {
    /// Size of the generated slide (200MB of 256 px tiles is about 20,000 tiles)
    #[arg(long, default_value = "200MB", value_parser = crate::cmd::synth::parse_byte_size)]
    size: u64,
    /// Tiles the viewer asks for in each phase
    #[arg(long, default_value_t = 600)]
    tiles: usize,
    /// Tiles asked at once (a browser's connections to one host)
    #[arg(long, default_value_t = 6)]
    parallel: usize,
    /// Round-trip delay added between the nodes in ms (relays in front of each node)
    #[arg(long, default_value_t = 0)]
    delay_ms: u32,
    /// Working folder for the slide and node data
    #[arg(long, default_value = "target/bench")]
    work: PathBuf,
}

pub fn run(args: FailoverBench) -> Result<()> {
    std::fs::create_dir_all(&args.work)?;
    let work = std::fs::canonicalize(&args.work)?;
    let run_dir = work.join("failover-run");
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(&run_dir)?;
    let bin = sibling("slidemesh")?;
    let slide_dir = cached_slide(&work, args.size, 256, 3)?;

    let members = init_members(&bin, &run_dir, &["RR8", "RAE", "RCD"])?;
    status(
        slidemesh(&bin, &members[0].data)
            .arg("ingest")
            .arg(&slide_dir),
    )?;
    let slide = first_slide(&bin, &members[0].data)?.context("the owner holds the slide")?;
    let linked = link_members(&bin, &run_dir, members, args.delay_ms, false)?;
    let (owner, viewer, replica) = (&linked.members[0], &linked.members[1], &linked.members[2]);
    let mut owner_node = Some(serve(&bin, &owner.data, &owner.http)?);
    let _viewer_node = serve(&bin, &viewer.data, &viewer.http)?;
    let _replica_node = serve(&bin, &replica.data, &replica.http)?;
    let base = format!("http://{}", viewer.http);
    let replica_base = format!("http://{}", replica.http);
    wait_http(&format!("{base}/api/v1/node"), Duration::from_secs(20))?;
    wait_http(
        &format!("{replica_base}/api/v1/node"),
        Duration::from_secs(20),
    )?;

    output(slidemesh(&bin, &owner.data).args([
        "share",
        &slide,
        "--with",
        "RCD",
        "--purpose",
        "direct-care",
        "--until",
        "1d",
        "--replicate",
    ]))?;
    wait_for(Duration::from_secs(600), || {
        get_json(&format!("{replica_base}/api/v1/replicas"))
            .is_ok_and(|v| v["held"][0]["state"] == "complete")
    })
    .context("the replica did not complete")?;
    share(&bin, &owner.data, &slide, "RAE", "benchmark")?;
    wait_for_shared(&base, &slide)?;
    // The replica has fetched the owner's statement listing RAE's grant (sent at once).
    std::thread::sleep(Duration::from_secs(2));

    let manifest = get_json(&format!("{base}/api/v1/slides/{slide}/manifest"))?;
    let tiles: Vec<String> = manifest["manifest"]["levels"][0]["tiles"]
        .as_array()
        .context("level 0 tiles")?
        .iter()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    if tiles.len() < 3 * args.tiles {
        bail!(
            "the slide has {} tiles at full resolution; --tiles {} needs three times that",
            tiles.len(),
            args.tiles
        );
    }
    let phase = |which: &[String]| -> Result<(Vec<f64>, usize)> {
        let url = |t: &String| format!("{base}/api/v1/slides/{slide}/tiles/{t}");
        let mut latencies = Vec::new();
        let mut failed = 0;
        for group in which.chunks(args.parallel.max(1)) {
            let handles: Vec<_> = group
                .iter()
                .map(|t| {
                    let url = url(t);
                    std::thread::spawn(move || {
                        let started = Instant::now();
                        let ok = ureq::get(&url)
                            .timeout(Duration::from_secs(60))
                            .call()
                            .ok()
                            .and_then(|r| {
                                let mut body = Vec::new();
                                std::io::Read::read_to_end(&mut r.into_reader(), &mut body).ok()?;
                                Some(body)
                            });
                        (started.elapsed().as_secs_f64() * 1000.0, ok.is_some())
                    })
                })
                .collect();
            for h in handles {
                let (ms, ok) = h
                    .join()
                    .map_err(|_| anyhow::anyhow!("a viewer thread panicked"))?;
                latencies.push(ms);
                if !ok {
                    failed += 1;
                }
            }
        }
        latencies.sort_by(f64::total_cmp);
        Ok((latencies, failed))
    };
    let n = args.tiles;
    let before = phase(&tiles[..n])?;
    // The owner is lost.
    if let Some(mut node) = owner_node.take() {
        let _ = node.child.kill();
        let _ = node.child.wait();
        std::mem::forget(node);
    }
    let during = phase(&tiles[n..2 * n])?;
    owner_node = Some(serve(&bin, &owner.data, &owner.http)?);
    wait_http(
        &format!("http://{}/api/v1/node", owner.http),
        Duration::from_secs(20),
    )?;
    // Reconnected, and past any backoff of the owner (it is probed again within a minute).
    std::thread::sleep(Duration::from_secs(5));
    let after = phase(&tiles[2 * n..3 * n])?;
    drop(owner_node);

    let pct = |v: &[f64], p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    println!();
    println!(
        "## bench failover: {} tiles per phase, {} at once, {}",
        n,
        args.parallel,
        if args.delay_ms > 0 {
            format!("{} ms round trip added", args.delay_ms)
        } else {
            "loopback".into()
        }
    );
    println!();
    println!("| phase | p50 ms | p99 ms | max ms | failed | p99 ratio to before |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let p99_before = pct(&before.0, 0.99);
    for (name, (lat, failed)) in [
        ("before: owner up (reference)", &before),
        ("during: owner killed, replica serves", &during),
        ("after: owner serving again", &after),
    ] {
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {failed} | {:.2}x |",
            pct(lat, 0.5),
            pct(lat, 0.99),
            lat.last().copied().unwrap_or(f64::NAN),
            pct(lat, 0.99) / p99_before
        );
    }
    Ok(())
}
