//! `bench dicomweb`: the node's DICOMweb against Orthanc + orthanc-dicomweb, on the same
//! slide, with the same clients, in one run:
//!
//! - STOW-RS: the whole slide in one `multipart/related` request, time until answered;
//! - WADO-RS frames: level-0 frames in a fixed pseudo-random order with `wrk`, one frame per
//!   request and eight per request (a row of a viewport), in the stored syntax;
//! - QIDO-RS: sequential query latency (p50/p99) for a study search and an instance list.
//!
//! Before any load, one frame from each server is checked to be the same bytes.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::Value;

use super::load::{FRAMES_ACCEPT, Load, ratio, shuffled, wrk};
use super::orthanc::Orthanc;
use super::procs::{Server, free_port, init_node, sibling, wait_http};
use super::{cached_slide, median, slide_files};

#[derive(Debug, Args)]
pub struct DicomwebBench {
    /// Slide size to generate and serve
    #[arg(long, default_value = "200MB", value_parser = crate::cmd::synth::parse_byte_size)]
    size: u64,
    /// Concurrent keep-alive connections, the same for both servers
    #[arg(long, default_value_t = 4)]
    connections: u32,
    /// Seconds of frame load on the node
    #[arg(long, default_value_t = 10)]
    duration: u32,
    /// Seconds of frame load on Orthanc (it is slow per frame on large instances, so it
    /// gets longer to complete enough requests to measure)
    #[arg(long, default_value_t = 30)]
    orthanc_duration: u32,
    /// QIDO-RS requests per query and server
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Working folder for the slide and server files
    #[arg(long, default_value = "target/bench")]
    work: PathBuf,
}

/// Where a server's DICOMweb lives and what the slide is called there.
struct Target {
    name: &'static str,
    /// Base URL of the server (for wrk) and the DICOMweb prefix on it.
    url: String,
    prefix: &'static str,
    duration: u32,
}

pub fn run(args: DicomwebBench) -> Result<()> {
    std::fs::create_dir_all(&args.work)?;
    let work = std::fs::canonicalize(&args.work)?;
    let slide = cached_slide(&work, args.size, 256, 2)?;
    let files = slide_files(&slide)?;
    let run_dir = work.join("dicomweb-run");
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(&run_dir)?;
    let body = multipart(&files)?;
    eprintln!(
        "{} files, {:.1} MB in one STOW-RS request",
        files.len(),
        body.1.len() as f64 / 1e6
    );

    // The node, empty, then the slide through STOW-RS.
    let slidemesh = sibling("slidemesh")?;
    let data = run_dir.join("node");
    init_node(&slidemesh, &data)?;
    let port = free_port()?;
    let _node = Server {
        child: Command::new(&slidemesh)
            .arg("--data")
            .arg(&data)
            .args(["serve", "--http", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?,
    };
    let node = Target {
        name: "slidemesh node",
        url: format!("http://127.0.0.1:{port}"),
        prefix: "/dicomweb",
        duration: args.duration,
    };
    wait_http(
        &format!("{}/api/v1/node", node.url),
        Duration::from_secs(20),
    )?;
    let node_stow = stow(&node, &body)?;

    let orthanc = Orthanc::start(&run_dir.join("orthanc"))?;
    let reference = Target {
        name: "Orthanc 1.10 + DICOMweb 1.7",
        url: orthanc.url.clone(),
        prefix: "/dicom-web",
        duration: args.orthanc_duration,
    };
    let orthanc_stow = stow(&reference, &body)?;

    // The slide's identity and level-0 instance, from the node's manifest.
    let list: Value = ureq::get(&format!("{}/api/v1/slides", node.url))
        .call()?
        .into_json()?;
    let slide_id = list["slides"][0]["slide_id"]
        .as_str()
        .context("the node lists the stored slide")?;
    let manifest: Value = ureq::get(&format!("{}/api/v1/slides/{slide_id}/manifest", node.url))
        .call()?
        .into_json()?;
    let m = &manifest["manifest"];
    let (study, series) = (
        m["study_uid"].as_str().context("study")?,
        m["series_uid"].as_str().context("series")?,
    );
    let level0 = &m["levels"][0];
    let instance = level0["instance_uids"][0].as_str().context("instance")?;
    let frames = level0["tiles"].as_array().context("tiles")?.len();
    let patient = m["instances"][0]["metadata_json"]
        .as_str()
        .and_then(|j| serde_json::from_str::<Value>(j).ok())
        .and_then(|j| j["00100020"]["Value"][0].as_str().map(str::to_string))
        .context("patient id")?;
    let frames_path = format!("/studies/{study}/series/{series}/instances/{instance}/frames");

    // Same bytes from both before any timing.
    let a = first_part(&get_frames(&node, &frames_path, "1")?)?;
    let b = first_part(&get_frames(&reference, &frames_path, "1")?)?;
    if a != b {
        bail!(
            "frame 1 differs between the node and Orthanc ({} vs {} bytes)",
            a.len(),
            b.len()
        );
    }

    let order = shuffled(frames);
    let single: Vec<String> = order.iter().map(|&i| (i + 1).to_string()).collect();
    let batches: Vec<String> = order
        .iter()
        .map(|&i| {
            let first = i.min(frames.saturating_sub(8));
            (first + 1..=first + 8.min(frames))
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    let mut rows = Vec::new();
    for (label, lists, per_request) in [("1 frame", &single, 1.0), ("8 frames", &batches, 8.0)] {
        for target in [&node, &reference] {
            let paths: Vec<String> = lists
                .iter()
                .map(|l| format!("{}{frames_path}/{l}", target.prefix))
                .collect();
            let load = wrk(
                (args.connections, target.duration),
                &run_dir,
                &format!("{} {label}", target.name),
                &target.url,
                &paths,
                &[&format!("Accept: {FRAMES_ACCEPT}")],
            )?;
            rows.push((label, per_request, load));
        }
    }

    let queries = [
        (
            "studies by PatientID",
            format!("/studies?PatientID={patient}"),
        ),
        (
            "instances of the series",
            format!("/studies/{study}/series/{series}/instances"),
        ),
    ];
    let mut latencies = Vec::new();
    for (label, path) in &queries {
        for target in [&node, &reference] {
            latencies.push((*label, target.name, qido(target, path, args.queries)?));
        }
    }

    println!(
        "one {:.0} MB slide ({} files, {frames} level-0 frames of 256 px JPEG), same machine, same run, same clients",
        args.size as f64 / 1e6,
        files.len()
    );
    println!();
    println!("| STOW-RS, whole slide in one request | seconds | slidemesh / this |");
    println!("| --- | ---: | ---: |");
    println!(
        "| slidemesh node | {:.2} | 1.00x |",
        node_stow.as_secs_f64()
    );
    println!(
        "| {} | {:.2} | {} |",
        reference.name,
        orthanc_stow.as_secs_f64(),
        ratio(orthanc_stow.as_secs_f64(), node_stow.as_secs_f64())
    );
    println!();
    println!(
        "| WADO-RS level-0 frames, wrk, {} connections | frames/request | frames/s | MiB/s | p99 (ms) | slidemesh / this | errors |",
        args.connections
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | --- |");
    for pair in rows.chunks(2) {
        let ours = pair[0].2.requests_per_sec * pair[0].1;
        for (label, per_request, load) in pair {
            print_frames(label, *per_request, load, ours);
        }
    }
    println!();
    println!(
        "| QIDO-RS, {} sequential requests | server | p50 (ms) | p99 (ms) | slidemesh / this (p50) |",
        args.queries
    );
    println!("| --- | --- | ---: | ---: | ---: |");
    for pair in latencies.chunks(2) {
        let ours = pair[0].2.0;
        for (label, name, (p50, p99)) in pair {
            println!(
                "| {label} | {name} | {p50:.2} | {p99:.2} | {} |",
                ratio(*p50, ours)
            );
        }
    }
    drop(orthanc);
    Ok(())
}

fn print_frames(label: &str, per_request: f64, load: &Load, ours: f64) {
    let frames = load.requests_per_sec * per_request;
    println!(
        "| {} ({label}) | {per_request:.0} | {frames:.1} | {:.1} | {} | {} | {} |",
        load.name.trim_end_matches(&format!(" {label}")),
        load.mib_per_sec,
        load.p99_ms
            .map(|v| format!("{v:.2}"))
            .unwrap_or_else(|| "-".into()),
        ratio(ours, frames),
        load.errors
    );
}

/// The slide's files as one `multipart/related; type="application/dicom"` body.
fn multipart(files: &[PathBuf]) -> Result<(String, Vec<u8>)> {
    let boundary = "slidemesh-bench-2f8d0c4e9a";
    let mut body = Vec::new();
    for file in files {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(&std::fs::read(file)?);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    Ok((
        format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
        body,
    ))
}

fn stow(target: &Target, (content_type, body): &(String, Vec<u8>)) -> Result<Duration> {
    let started = Instant::now();
    let response = ureq::post(&format!("{}{}/studies", target.url, target.prefix))
        .set("Content-Type", content_type)
        .set("Accept", "application/dicom+json")
        .timeout(Duration::from_secs(600))
        .send_bytes(body)
        .with_context(|| format!("STOW-RS to {}", target.name))?;
    let elapsed = started.elapsed();
    let answer: Value = response.into_json()?;
    let failed = answer["00081198"]["Value"].as_array().map_or(0, Vec::len);
    if failed > 0 {
        bail!("{} failed to store some instances: {answer}", target.name);
    }
    Ok(elapsed)
}

fn get_frames(target: &Target, frames_path: &str, list: &str) -> Result<(String, Vec<u8>)> {
    let response = ureq::get(&format!(
        "{}{}{frames_path}/{list}",
        target.url, target.prefix
    ))
    .set("Accept", FRAMES_ACCEPT)
    .call()
    .with_context(|| format!("frames from {}", target.name))?;
    let content_type = response
        .header("Content-Type")
        .unwrap_or_default()
        .to_string();
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut response.into_reader(), &mut body)?;
    Ok((content_type, body))
}

/// The payload of the first part of a multipart response.
fn first_part((content_type, body): &(String, Vec<u8>)) -> Result<Vec<u8>> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .context("multipart response without a boundary")?
        .trim_matches('"');
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let delimiter = format!("--{boundary}");
    let start = find(body, delimiter.as_bytes()).context("no first part")? + delimiter.len();
    let headers_end = find(&body[start..], b"\r\n\r\n").context("no part headers")? + start + 4;
    let end = find(&body[headers_end..], format!("\r\n{delimiter}").as_bytes())
        .context("no part end")?
        + headers_end;
    Ok(body[headers_end..end].to_vec())
}

/// p50 and p99 latency in ms of `count` sequential requests over one keep-alive agent.
fn qido(target: &Target, path: &str, count: usize) -> Result<(f64, f64)> {
    let agent = ureq::AgentBuilder::new().build();
    let url = format!("{}{}{path}", target.url, target.prefix);
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let response = agent
            .get(&url)
            .set("Accept", "application/dicom+json")
            .call()
            .with_context(|| format!("QIDO-RS {path} on {}", target.name))?;
        let results: Value = response.into_json()?;
        if results.as_array().is_none_or(|a| a.is_empty()) {
            bail!("{} found nothing for {path}", target.name);
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let p99 = {
        let mut sorted = times.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)]
    };
    Ok((median(&mut times), p99))
}
