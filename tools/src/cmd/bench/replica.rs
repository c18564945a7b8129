//! `bench replica`: time to a full replica of one slide (`slidemesh share --replicate`:
//! the replica's background loop fetches, verifies and pins every tile), beside the
//! whole-slide fetch of the same slide into the same node's cache (`POST
//! /api/v1/slides/{id}/cache`), between two real nodes over loopback or with WAN delay.
//!
//! The replica is measured at the loop's configured pace and unpaced (a pace far above the
//! link's); each from an empty cache. Time runs from the grant's issue at the owner to the
//! replica reporting every tile held (polled every 50 ms), so it includes the grant's
//! delivery and the manifest's fetch, which the reference does not pay.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::Value;

use super::cached_slide;
use super::federation::restart_empty;
use super::pair::{get_json, init_pair, link_pair, serve, wait_for_shared};
use super::procs::{sibling, wait_http};
use slidemesh_testnet::setup::{first_slide, output, share, slidemesh, status};

#[derive(Debug, Args)]
pub struct ReplicaBench {
    /// Size of the generated slide (200MB of 256 px tiles is about 20,000 tiles)
    #[arg(long, default_value = "200MB", value_parser = crate::cmd::synth::parse_byte_size)]
    size: u64,
    /// The replica loop's pace for the paced run, tiles per second (the node's default)
    #[arg(long, default_value_t = 2000)]
    pace: u32,
    /// Round-trip delay added between the nodes in ms (relays in front of each node)
    #[arg(long, default_value_t = 0)]
    delay_ms: u32,
    /// Working folder for the slide and node data
    #[arg(long, default_value = "target/bench")]
    work: PathBuf,
}

pub fn run(args: ReplicaBench) -> Result<()> {
    std::fs::create_dir_all(&args.work)?;
    let work = std::fs::canonicalize(&args.work)?;
    let run_dir = work.join("replica-run");
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(&run_dir)?;
    let bin = sibling("slidemesh")?;
    let slide_dir = cached_slide(&work, args.size, 256, 3)?;

    let (owner, grantee) = init_pair(&bin, &run_dir)?;
    status(slidemesh(&bin, &owner.data).arg("ingest").arg(&slide_dir))?;
    let slide = first_slide(&bin, &owner.data)?.context("the owner holds the slide")?;
    let pair = link_pair(&bin, &run_dir, (owner, grantee), args.delay_ms, false)?;
    let (owner, grantee) = (&pair.owner, &pair.grantee);
    let set_pace = |pace: u32| -> Result<()> {
        let path = grantee.data.join("config.toml");
        let text = std::fs::read_to_string(&path)?;
        let edited: String = text
            .lines()
            .map(|l| {
                if l.starts_with("replica_tiles_per_sec") {
                    format!("replica_tiles_per_sec = {pace}")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&path, edited + "\n")?;
        Ok(())
    };
    set_pace(args.pace)?;
    let _owner_node = serve(&bin, &owner.data, &owner.http)?;
    let mut grantee_node = serve(&bin, &grantee.data, &grantee.http)?;
    let base = format!("http://{}", grantee.http);
    wait_http(&format!("{base}/api/v1/node"), Duration::from_secs(20))?;

    // The reference: the slide shared for viewing, fetched whole into the cache.
    share(&bin, &owner.data, &slide, "RAE", "benchmark")?;
    wait_for_shared(&base, &slide)?;
    grantee_node = restart_empty(&bin, grantee, grantee_node, &base)?;
    let answer: Value = ureq::post(&format!("{base}/api/v1/slides/{slide}/cache"))
        .timeout(Duration::from_secs(1200))
        .call()
        .context("whole-slide fetch")?
        .into_json()?;
    let whole_tiles = answer["fetched"].as_u64().unwrap_or(0);
    let whole_secs = answer["seconds"].as_f64().unwrap_or(f64::NAN);
    eprintln!("whole-slide fetch: {whole_tiles} tiles in {whole_secs:.2} s");

    // The replica, paced as configured, then unpaced (a fresh grant each, empty cache).
    let mut rows = Vec::new();
    for pace in [args.pace, 1_000_000] {
        drop(grantee_node);
        set_pace(pace)?;
        let _ = std::fs::remove_dir_all(grantee.data.join("cache"));
        grantee_node = restart_empty(
            &bin,
            grantee,
            serve(&bin, &grantee.data, &grantee.http)?,
            &base,
        )?;
        let started = Instant::now();
        let out = output(slidemesh(&bin, &owner.data).args([
            "share",
            &slide,
            "--with",
            "RAE",
            "--purpose",
            "direct-care",
            "--until",
            "1d",
            "--replicate",
            "--json",
        ]))?;
        let grant: Value = serde_json::from_str(&out)?;
        let grant = grant["grant_id"]
            .as_str()
            .context("a grant id")?
            .to_string();
        let deadline = Instant::now() + Duration::from_secs(1800);
        let tiles = loop {
            let state = get_json(&format!("{base}/api/v1/replicas"))
                .map(|v| v["held"][0].clone())
                .unwrap_or(Value::Null);
            if state["state"] == "complete" {
                break state["tiles"].as_u64().unwrap_or(0);
            }
            if Instant::now() > deadline {
                bail!("the replica did not complete: {state}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let secs = started.elapsed().as_secs_f64();
        eprintln!("replica at {pace} tiles/s: {tiles} tiles in {secs:.2} s");
        rows.push((pace, tiles, secs));
        // Released before the next run.
        status(slidemesh(&bin, &owner.data).args(["revoke", &grant]))?;
    }
    drop(grantee_node);

    println!();
    println!(
        "## bench replica: {:.0} MB slide, {}",
        args.size as f64 / 1e6,
        if args.delay_ms > 0 {
            format!("{} ms round trip added", args.delay_ms)
        } else {
            "loopback".into()
        }
    );
    println!();
    println!("| what | tiles | seconds | tiles/s | ratio to whole-slide fetch |");
    println!("| --- | --- | --- | --- | --- |");
    let whole_tps = whole_tiles as f64 / whole_secs;
    for (pace, tiles, secs) in rows {
        let tps = tiles as f64 / secs;
        let label = if pace >= 1_000_000 {
            "full replica, unpaced (grant issued to every tile pinned)".to_string()
        } else {
            format!("full replica at the loop's pace of {pace} tiles/s")
        };
        println!(
            "| {label} | {tiles} | {secs:.2} | {tps:.0} | {:.2}x |",
            tps / whole_tps
        );
    }
    println!(
        "| whole-slide fetch into the cache (reference) | {whole_tiles} | {whole_secs:.2} | {whole_tps:.0} | 1.00x |"
    );
    Ok(())
}
