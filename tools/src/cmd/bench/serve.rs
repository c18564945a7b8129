//! `bench serve`: random tiles over keep-alive HTTP, driven by `wrk`, against three servers
//! holding the same slide:
//!
//! - the slidemesh node (`GET /api/v1/slides/{slide}/tiles/{id}`: redb lookup + one `pread`);
//! - nginx serving the same tile bytes as static files (the ceiling for static serving);
//! - Orthanc with its DICOMweb plugin serving the same frames by WADO-RS
//!   (`.../frames/{n}`, stored transfer syntax, no transcoding).
//!
//! All three get the same request mix (the level-0 tiles in random order), connections,
//! duration and client, on this machine, in one run. The node's peak RSS is reported.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::Value;

use super::load::{FRAMES_ACCEPT, Load, ratio, shuffled, wrk};
use super::orthanc::Orthanc;
use super::procs::{Server, free_port, init_node, require_tool, run_ok, sibling, wait_http};
use super::{cached_slide, slide_files};

#[derive(Debug, Args)]
pub struct ServeBench {
    /// Slide size to generate and serve
    #[arg(long, default_value = "200MB", value_parser = crate::cmd::synth::parse_byte_size)]
    size: u64,
    /// Seconds of load per server
    #[arg(long, default_value_t = 10)]
    duration: u32,
    /// Concurrent keep-alive connections
    #[arg(long, default_value_t = 32)]
    connections: u32,
    /// Skip Orthanc (it is slow to load a large slide)
    #[arg(long)]
    no_orthanc: bool,
    /// Connections for Orthanc: it parses the whole instance per frame (about a second for
    /// a large level), so many connections only queue up past the test's end
    #[arg(long, default_value_t = 4)]
    orthanc_connections: u32,
    /// Seconds of load for Orthanc
    #[arg(long, default_value_t = 30)]
    orthanc_duration: u32,
    /// Working folder for the slide, node data and server files
    #[arg(long, default_value = "target/bench")]
    work: PathBuf,
}

pub fn run(args: ServeBench) -> Result<()> {
    require_tool("wrk", "wrk")?;
    std::fs::create_dir_all(&args.work)?;
    let work = std::fs::canonicalize(&args.work)?;
    let slide = cached_slide(&work, args.size, 256, 2)?;
    let run_dir = work.join("serve-run");
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(&run_dir)?;

    // The node.
    let slidemesh = sibling("slidemesh")?;
    let data = run_dir.join("node");
    init_node(&slidemesh, &data)?;
    run_ok(
        Command::new(&slidemesh)
            .arg("--data")
            .arg(&data)
            .args(["ingest", "--json"])
            .arg(&slide),
    )?;
    let node_port = free_port()?;
    let node = Server {
        child: Command::new(&slidemesh)
            .arg("--data")
            .arg(&data)
            .args(["serve", "--http", &format!("127.0.0.1:{node_port}")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?,
    };
    let node_url = format!("http://127.0.0.1:{node_port}");
    wait_http(&format!("{node_url}/api/v1/node"), Duration::from_secs(20))?;
    let list: Value = ureq::get(&format!("{node_url}/api/v1/slides"))
        .call()?
        .into_json()?;
    let slide_id = list["slides"][0]["slide_id"]
        .as_str()
        .context("the node lists the slide")?
        .to_string();
    let manifest: Value = ureq::get(&format!("{node_url}/api/v1/slides/{slide_id}/manifest"))
        .call()?
        .into_json()?;
    let level0 = &manifest["manifest"]["levels"][0];
    let tiles: Vec<String> = level0["tiles"]
        .as_array()
        .context("level 0 tiles")?
        .iter()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    let order = shuffled(tiles.len());
    eprintln!("slide {slide_id}: {} level-0 tiles", tiles.len());

    let mut loads = Vec::new();
    let node_paths: Vec<String> = order
        .iter()
        .map(|&i| format!("/api/v1/slides/{slide_id}/tiles/{}", tiles[i]))
        .collect();
    // Every load sends the sign-on proxy's headers, so wrk does the same work in each
    // (without sign-on the node does not read them: `[users] from = "none"` names no one).
    let proxy_headers = proxy_headers();
    let proxy_headers: Vec<&str> = proxy_headers.iter().map(String::as_str).collect();
    loads.push(wrk(
        (args.connections, args.duration),
        &run_dir,
        "slidemesh node",
        &node_url,
        &node_paths,
        &proxy_headers,
    )?);
    let node_rss = node.peak_rss();

    // nginx over the same bytes as static files.
    let tiles_url = format!("{node_url}/api/v1/slides/{slide_id}/tiles");
    let nginx_loads = nginx(&args, &run_dir, &tiles_url, &tiles, &order);
    match nginx_loads {
        Ok(load) => loads.push(load),
        Err(e) => eprintln!("nginx skipped: {e:#}"),
    }
    drop(node);

    // The same node with sign-on: its proxy names a person and role on every request and
    // proves itself with the shared secret, so each tile is decided for that person.
    let signed_on = signed_on_load(&args, &run_dir, &slidemesh, &data, &node_paths);

    if !args.no_orthanc {
        match orthanc(&args, &run_dir, &slide, &manifest, &order) {
            Ok(load) => loads.push(load),
            Err(e) => eprintln!("orthanc skipped: {e:#}"),
        }
    }

    let ours = loads[0].requests_per_sec;
    println!(
        "random level-0 tiles ({} distinct, {:.1} KiB mean) over keep-alive HTTP with wrk (2 threads), same machine, same run",
        tiles.len(),
        loads[0].mib_per_sec * 1024.0 / loads[0].requests_per_sec.max(1.0),
    );
    println!(
        "| server | connections | tiles/s | MiB/s | p99 latency (ms) | slidemesh / this | errors |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | --- |");
    for l in &loads {
        println!(
            "| {} | {} | {:.1} | {:.1} | {} | {} | {} |",
            l.name,
            l.connections,
            l.requests_per_sec,
            l.mib_per_sec,
            l.p99_ms
                .map(|v| format!("{v:.2}"))
                .unwrap_or_else(|| "-".into()),
            ratio(ours, l.requests_per_sec),
            l.errors
        );
    }
    match &signed_on {
        Ok(with) => {
            let without = &loads[0];
            let ms = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
            println!();
            println!(
                "tile requests with sign-on vs without (same node, tiles and load, same run):"
            );
            println!(
                "| requests | tiles/s | p50 (ms) | p99 (ms) | throughput with / without | p50 without / with |"
            );
            println!("| --- | ---: | ---: | ---: | ---: | ---: |");
            for l in [without, with] {
                println!(
                    "| {} | {:.1} | {} | {} | {} | {} |",
                    l.name,
                    l.requests_per_sec,
                    ms(l.p50_ms),
                    ms(l.p99_ms),
                    ratio(l.requests_per_sec, without.requests_per_sec),
                    match (without.p50_ms, l.p50_ms) {
                        (Some(a), Some(b)) => ratio(a, b),
                        _ => "-".into(),
                    }
                );
            }
            if with.errors != "none" {
                println!("signed-on errors: {}", with.errors);
            }
        }
        Err(e) => eprintln!("sign-on load skipped: {e:#}"),
    }
    if let Some(rss) = node_rss {
        println!("slidemesh node peak RSS: {:.1} MiB", rss as f64 / 1048576.0);
    }
    Ok(())
}

/// Restarts the node behind a (pretend) sign-on proxy on loopback, then loads it with the
/// proxy's headers: the shared secret and a pathologist named on every request.
fn signed_on_load(
    args: &ServeBench,
    dir: &Path,
    slidemesh: &Path,
    data: &Path,
    paths: &[String],
) -> Result<Load> {
    let secret = data.join("proxy-secret");
    std::fs::write(&secret, format!("{PROXY_SECRET}\n"))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600))?;
    let config_path = data.join("config.toml");
    let mut config = std::fs::read_to_string(&config_path)?;
    for (from, to) in [
        ("from = \"none\"", "from = \"proxy\""),
        ("proxy_addresses = []", "proxy_addresses = [\"127.0.0.1\"]"),
        (
            "proxy_secret_file = \"\"",
            "proxy_secret_file = \"proxy-secret\"",
        ),
    ] {
        anyhow::ensure!(config.contains(from), "config.toml has no {from:?}");
        config = config.replace(from, to);
    }
    std::fs::write(&config_path, config)?;
    let port = free_port()?;
    let _node = Server {
        child: Command::new(slidemesh)
            .arg("--data")
            .arg(data)
            .args(["serve", "--http", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?,
    };
    let url = format!("http://127.0.0.1:{port}");
    wait_http(&format!("{url}/api/v1/node"), Duration::from_secs(20))?;
    wrk(
        (args.connections, args.duration),
        dir,
        "slidemesh node, signed on",
        &url,
        paths,
        &proxy_headers()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
}

/// The bench's sign-on proxy secret.
const PROXY_SECRET: &str = "bench-proxy-secret-0123456789abcdef";

/// What the sign-on proxy adds to every request: its secret, and the person and role.
fn proxy_headers() -> Vec<String> {
    vec![
        format!("x-slidemesh-proxy-secret: {PROXY_SECRET}"),
        "x-slidemesh-user: jsmith".into(),
        "x-slidemesh-role: pathologist".into(),
    ]
}

fn nginx(
    args: &ServeBench,
    dir: &Path,
    tiles_url: &str,
    tiles: &[String],
    order: &[usize],
) -> Result<Load> {
    require_tool("nginx", "nginx-light")?;
    let root = dir.join("nginx");
    let www = root.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::create_dir_all(root.join("tmp"))?;
    for tile in tiles {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut ureq::get(&format!("{tiles_url}/{tile}"))
                .call()?
                .into_reader(),
            &mut bytes,
        )?;
        std::fs::write(www.join(format!("{tile}.jpg")), bytes)?;
    }
    let port = free_port()?;
    let conf = root.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes auto;\npid {root}/nginx.pid;\nerror_log {root}/error.log warn;\nevents {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_requests 1000000;\n  types {{ image/jpeg jpg; }}\n\
             client_body_temp_path {root}/tmp;\n  proxy_temp_path {root}/tmp;\n  fastcgi_temp_path {root}/tmp;\n  uwsgi_temp_path {root}/tmp;\n  scgi_temp_path {root}/tmp;\n\
             server {{ listen 127.0.0.1:{port}; root {www}; open_file_cache max=100000 inactive=60s; }}\n}}\n",
            root = root.display(),
            www = www.display()
        ),
    )?;
    let _server = Server {
        child: Command::new("nginx")
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stderr(Stdio::null())
            .spawn()?,
    };
    let url = format!("http://127.0.0.1:{port}");
    wait_http(&url, Duration::from_secs(10))?;
    let paths: Vec<String> = order
        .iter()
        .map(|&i| format!("/{}.jpg", tiles[i]))
        .collect();
    wrk(
        (args.connections, args.duration),
        dir,
        "nginx static files",
        &url,
        &paths,
        // The same request headers as the node's loads (nginx ignores them).
        &proxy_headers()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
}

fn orthanc(
    args: &ServeBench,
    dir: &Path,
    slide: &Path,
    manifest: &Value,
    order: &[usize],
) -> Result<Load> {
    let orthanc = Orthanc::start(&dir.join("orthanc"))?;
    orthanc.upload(&slide_files(slide)?)?;
    let m = &manifest["manifest"];
    let instance = m["levels"][0]["instance_uids"][0]
        .as_str()
        .context("level 0 instance")?;
    let base = format!(
        "/dicom-web/studies/{}/series/{}/instances/{instance}/frames",
        m["study_uid"].as_str().unwrap_or_default(),
        m["series_uid"].as_str().unwrap_or_default()
    );
    // Check one frame is served before loading it.
    let probe = ureq::get(&format!("{}{base}/1", orthanc.url))
        .set("Accept", FRAMES_ACCEPT)
        .call()?;
    if probe.status() != 200 {
        bail!("Orthanc answered {} for a frame", probe.status());
    }
    let paths: Vec<String> = order.iter().map(|&i| format!("{base}/{}", i + 1)).collect();
    wrk(
        (args.orthanc_connections, args.orthanc_duration),
        dir,
        "Orthanc DICOMweb frames",
        &orthanc.url,
        &paths,
        &[&format!("Accept: {FRAMES_ACCEPT}")],
    )
}
