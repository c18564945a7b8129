//! `bench referrals`: two real nodes, Leeds (RR8) referring to Bradford (RAE), over loopback
//! or with a round-trip delay added by relays ([`super::pair`]).
//!
//! - Sent to visible: a referral sent over Leeds's API (`POST /api/v1/referrals`) until it is
//!   listed in Bradford's inbox (`GET /api/v1/referrals?box=inbox`, polled every 2 ms): its
//!   grant, the slide's manifest and consent statement, and the referral itself cross the
//!   link. p50 and p99, beside the reference measured on the same link in the same run: one
//!   uncached tile of the referred slide fetched through Bradford's API, each far from the
//!   last (one round trip to Leeds and back), so the ratio says how many such round trips a
//!   referral costs.
//! - Outage: Bradford stopped, referrals sent, Bradford started again after `--outage-secs`:
//!   the time from its API answering to every referral listed, and whether each arrived
//!   exactly once (one referral in the inbox, one delivery in Leeds's history).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};

use super::cached_slide;
use super::pair::{get_json, init_pair, link_pair, serve, wait_for};
use super::procs::{sibling, wait_http};
use slidemesh_testnet::setup::{first_slide, slidemesh, status};

#[derive(Debug, Args)]
pub struct ReferralsBench {
    /// Referrals timed from sent to visible
    #[arg(long, default_value_t = 50)]
    referrals: usize,
    /// Round-trip delay added between the nodes in ms (relays in front of each node)
    #[arg(long, default_value_t = 0)]
    delay_ms: u32,
    /// Referrals sent while the receiver is down
    #[arg(long, default_value_t = 20)]
    outage_referrals: usize,
    /// How long the receiver stays down, in seconds
    #[arg(long, default_value_t = 30)]
    outage_secs: u64,
    /// Working folder for the slide and node data
    #[arg(long, default_value = "target/bench")]
    work: std::path::PathBuf,
}

/// The `q` quantile of sorted `v` (nearest rank).
fn quantile(v: &[f64], q: f64) -> f64 {
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

fn post_json(url: &str, body: &Value) -> Result<Value> {
    match ureq::post(url)
        .timeout(Duration::from_secs(30))
        .send_json(body.clone())
    {
        Ok(r) => Ok(r.into_json()?),
        Err(ureq::Error::Status(code, r)) => bail!("{url} answered {code}: {}", r.into_string()?),
        Err(e) => Err(e).with_context(|| format!("POST {url}")),
    }
}

/// The ids in a node's inbox.
fn inbox(base: &str) -> Result<Vec<String>> {
    let list = get_json(&format!("{base}/api/v1/referrals?box=inbox"))?;
    Ok(list["referrals"]
        .as_array()
        .context("referrals")?
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_string))
        .collect())
}

pub fn run(args: ReferralsBench) -> Result<()> {
    std::fs::create_dir_all(&args.work)?;
    let work = std::fs::canonicalize(&args.work)?;
    let slide_dir = cached_slide(&work, 20_000_000, 256, 2)?;
    let run_dir = work.join("referrals-run");
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(&run_dir)?;
    let bin = sibling("slidemesh")?;
    let (leeds, bradford) = init_pair(&bin, &run_dir)?;
    status(slidemesh(&bin, &leeds.data).arg("ingest").arg(&slide_dir))?;
    let slide = first_slide(&bin, &leeds.data)?.context("Leeds holds the slide")?;
    let pair = link_pair(&bin, &run_dir, (leeds, bradford), args.delay_ms, false)?;
    let (leeds, bradford) = (&pair.owner, &pair.grantee);
    let _leeds_node = serve(&bin, &leeds.data, &leeds.http)?;
    let mut bradford_node = Some(serve(&bin, &bradford.data, &bradford.http)?);
    let (from, to) = (
        format!("http://{}", leeds.http),
        format!("http://{}", bradford.http),
    );
    wait_http(&format!("{from}/api/v1/node"), Duration::from_secs(20))?;
    wait_http(&format!("{to}/api/v1/node"), Duration::from_secs(20))?;
    let form = |n: usize| {
        json!({
            "to": "RAE",
            "recipient": {"queue": "breast"},
            "slides": [slide],
            "question": format!("Benchmark case {n}: DCIS or invasive?"),
            "urgency": "urgent",
        })
    };
    // A first referral, untimed: the nodes connect and warm their link up.
    let first = post_json(&format!("{from}/api/v1/referrals"), &form(0))?;
    let first_id = first["id"].as_str().context("referral id")?.to_string();
    wait_for(Duration::from_secs(60), || {
        inbox(&to).is_ok_and(|ids| ids.contains(&first_id))
    })
    .context("the first referral never reached the inbox")?;

    let mut visible = Vec::new();
    for n in 1..=args.referrals {
        let started = Instant::now();
        let sent = post_json(&format!("{from}/api/v1/referrals"), &form(n))?;
        let id = sent["id"].as_str().context("referral id")?.to_string();
        loop {
            if inbox(&to)?.contains(&id) {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("referral {id} did not reach the inbox within a minute");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        visible.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    visible.sort_by(f64::total_cmp);

    // The reference: uncached tiles of the referred slide through Bradford, one at a time,
    // each far from the ones before (a request fetches the screen around it too).
    let detail = get_json(&format!("{to}/api/v1/slides/{slide}"))?;
    let finest = &detail["levels"][0];
    let cols = finest["cols"].as_u64().unwrap_or(1);
    let rows = finest["rows"].as_u64().unwrap_or(1);
    let mut tile_ms = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for i in 0..args.referrals as u64 {
        let (col, row) = ((i * 13) % cols, (i * 11 + i / 7 * 5) % rows);
        if !seen.insert((col / 8, row / 8)) {
            continue;
        }
        let url = format!("{to}/api/v1/slides/{slide}/levels/0/tiles/{col}/{row}");
        let started = Instant::now();
        ureq::get(&url)
            .timeout(Duration::from_secs(30))
            .call()
            .with_context(|| format!("GET {url}"))?;
        tile_ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    if tile_ms.is_empty() {
        bail!("the slide is too small for the tile reference");
    }
    tile_ms.sort_by(f64::total_cmp);

    // Store and forward: Bradford down while referrals are sent, then back.
    drop(bradford_node.take());
    let mut waiting = Vec::new();
    for n in 0..args.outage_referrals {
        let sent = post_json(&format!("{from}/api/v1/referrals"), &form(10_000 + n))?;
        waiting.push(sent["id"].as_str().context("referral id")?.to_string());
    }
    std::thread::sleep(Duration::from_secs(args.outage_secs));
    bradford_node = Some(serve(&bin, &bradford.data, &bradford.http)?);
    wait_http(&format!("{to}/api/v1/node"), Duration::from_secs(20))?;
    let healed = Instant::now();
    wait_for(Duration::from_secs(300), || {
        inbox(&to).is_ok_and(|ids| waiting.iter().all(|w| ids.contains(w)))
    })
    .context("not every referral sent during the outage arrived")?;
    let heal_ms = healed.elapsed().as_secs_f64() * 1000.0;
    // Exactly once: each listed once at Bradford, each delivered once in Leeds's history.
    std::thread::sleep(Duration::from_secs(2));
    let ids = inbox(&to)?;
    let duplicated = waiting
        .iter()
        .filter(|w| ids.iter().filter(|i| i == w).count() != 1)
        .count();
    let mut delivered_twice = 0;
    for w in &waiting {
        let r = get_json(&format!("{from}/api/v1/referrals/{w}"))?;
        let deliveries = r["history"].as_array().map_or(0, |h| {
            h.iter().filter(|s| s["status"] == "delivered").count()
        });
        if deliveries != 1 {
            delivered_twice += 1;
        }
    }
    drop(bradford_node);

    let link = if args.delay_ms > 0 {
        format!("{} ms round trip added (delay relays)", args.delay_ms)
    } else {
        "loopback".to_string()
    };
    println!("referrals: Leeds to Bradford, {link}");
    println!();
    println!("| what | p50 ms | p99 ms | ratio (p50) |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| one uncached tile through the receiver (reference, {} runs) | {:.1} | {:.1} | 1.00x |",
        tile_ms.len(),
        quantile(&tile_ms, 0.5),
        quantile(&tile_ms, 0.99)
    );
    println!(
        "| referral sent to visible in the receiving inbox ({} runs) | {:.1} | {:.1} | {:.2}x |",
        visible.len(),
        quantile(&visible, 0.5),
        quantile(&visible, 0.99),
        quantile(&visible, 0.5) / quantile(&tile_ms, 0.5)
    );
    println!();
    println!(
        "outage of {} s with {} referrals sent: all delivered {:.0} ms after the receiver \
         answered again; {} listed other than once, {} delivered other than once",
        args.outage_secs,
        waiting.len(),
        heal_ms,
        duplicated,
        delivered_twice
    );
    Ok(())
}
