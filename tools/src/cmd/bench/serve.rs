//! `bench serve`: random tiles over keep-alive HTTP, driven by `wrk`, against three servers
//! holding the same slide:
//!
//! - the slidemesh node (`GET /api/v1/tiles/{id}`: redb lookup + one `pread`);
//! - nginx serving the same tile bytes as static files (the ceiling for static serving);
//! - Orthanc with its DICOMweb plugin serving the same frames by WADO-RS
//!   (`.../frames/{n}`, stored transfer syntax, no transcoding).
//!
//! All three get the same request mix (the level-0 tiles in random order), connections,
//! duration and client, on this machine, in one run. The node's peak RSS is reported.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::Value;

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

struct Load {
    name: String,
    connections: u32,
    requests_per_sec: f64,
    mib_per_sec: f64,
    p99_ms: Option<f64>,
    errors: String,
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
        .map(|&i| format!("/api/v1/tiles/{}", tiles[i]))
        .collect();
    loads.push(wrk(
        (args.connections, args.duration),
        &run_dir,
        "slidemesh node",
        &node_url,
        &node_paths,
        None,
    )?);
    let node_rss = node.peak_rss();

    // nginx over the same bytes as static files.
    let nginx_loads = nginx(&args, &run_dir, &node_url, &tiles, &order);
    match nginx_loads {
        Ok(load) => loads.push(load),
        Err(e) => eprintln!("nginx skipped: {e:#}"),
    }
    drop(node);

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
    if let Some(rss) = node_rss {
        println!("slidemesh node peak RSS: {:.1} MiB", rss as f64 / 1048576.0);
    }
    Ok(())
}

/// "0.52x" or "4120x": two decimals where they matter.
fn ratio(ours: f64, theirs: f64) -> String {
    if theirs <= 0.0 {
        return "no request completed".into();
    }
    let r = ours / theirs;
    if r < 10.0 {
        format!("{r:.2}x")
    } else {
        format!("{r:.0}x")
    }
}

/// A fixed pseudo-random permutation, so every server sees the same request order.
fn shuffled(n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for i in (1..n).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        v.swap(i, (state % (i as u64 + 1)) as usize);
    }
    v
}

/// Runs wrk over `paths` (cycled in order by each thread) and parses its summary.
fn wrk(
    (connections, duration): (u32, u32),
    dir: &Path,
    name: &str,
    base: &str,
    paths: &[String],
    header: Option<&str>,
) -> Result<Load> {
    let script = dir.join(format!("{}.lua", name.replace(' ', "-")));
    let mut lua = String::from("local paths = {\n");
    for p in paths {
        writeln!(lua, "  {p:?},")?;
    }
    lua.push_str(
        "}\nlocal i = 0\nsetup = function(thread) thread:set(\"offset\", math.random(#paths)) end\n\
         init = function() i = (offset or 0) end\n\
         request = function() i = (i % #paths) + 1; return wrk.format(\"GET\", paths[i]) end\n\
         done = function(summary, latency, requests) io.write(string.format(\"P99_US %d\\n\", latency:percentile(99))) end\n",
    );
    std::fs::write(&script, lua)?;
    // One wrk invocation; a long timeout so that slow servers are measured, not counted
    // as errors.
    let load = |seconds: u32| {
        let mut cmd = Command::new("wrk");
        cmd.args([
            "-t",
            &connections.min(2).to_string(),
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
        ])
        .args(["--timeout", "30s", "-s"])
        .arg(&script)
        .arg(base);
        if let Some(h) = header {
            cmd.args(["-H", h]);
        }
        cmd
    };
    // Warm-up pass so every server starts with its caches (and the page cache) warm.
    run_ok(&mut load(2))?;
    let mut cmd = load(duration);
    let out = run_ok(&mut cmd)?;
    let field = |prefix: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()))
    };
    let requests_per_sec: f64 = field("Requests/sec:")
        .context("wrk printed no Requests/sec")?
        .parse()?;
    let transfer = field("Transfer/sec:").unwrap_or_default();
    let mib_per_sec = parse_rate(&transfer);
    let p99_ms = field("P99_US")
        .and_then(|v| v.parse::<f64>().ok())
        .map(|us| us / 1000.0);
    let errors = out
        .lines()
        .filter(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
        .map(|l| l.trim().to_string())
        .collect::<Vec<_>>()
        .join("; ");
    Ok(Load {
        name: name.to_string(),
        connections,
        requests_per_sec,
        mib_per_sec,
        p99_ms,
        errors: if errors.is_empty() {
            "none".into()
        } else {
            errors
        },
    })
}

/// wrk's "12.34MB" transfer rate in MiB/s (wrk uses binary units).
fn parse_rate(s: &str) -> f64 {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().unwrap_or(0.0);
    match unit {
        "GB" => n * 1024.0,
        "MB" => n,
        "KB" => n / 1024.0,
        "B" => n / 1048576.0,
        _ => 0.0,
    }
}

fn nginx(
    args: &ServeBench,
    dir: &Path,
    node_url: &str,
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
            &mut ureq::get(&format!("{node_url}/api/v1/tiles/{tile}"))
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
        None,
    )
}

fn orthanc(
    args: &ServeBench,
    dir: &Path,
    slide: &Path,
    manifest: &Value,
    order: &[usize],
) -> Result<Load> {
    require_tool("Orthanc", "orthanc orthanc-dicomweb")?;
    let plugin = Path::new("/usr/share/orthanc/plugins/libOrthancDicomWeb.so");
    if !plugin.exists() {
        bail!(
            "{} missing: apt-get install orthanc-dicomweb",
            plugin.display()
        );
    }
    let root = dir.join("orthanc");
    std::fs::create_dir_all(&root)?;
    let port = free_port()?;
    let config = serde_json::json!({
        "Name": "slidemesh-bench",
        "StorageDirectory": root.join("storage"),
        "IndexDirectory": root.join("index"),
        "HttpPort": port,
        "DicomServerEnabled": false,
        "RemoteAccessAllowed": false,
        "AuthenticationEnabled": false,
        "HttpCompressionEnabled": false,
        "Plugins": [plugin],
        "DicomWeb": { "Enable": true, "Root": "/dicom-web/" },
    });
    let conf = root.join("orthanc.json");
    std::fs::write(&conf, serde_json::to_vec_pretty(&config)?)?;
    let _server = Server {
        child: Command::new("Orthanc")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    };
    let url = format!("http://127.0.0.1:{port}");
    wait_http(&format!("{url}/system"), Duration::from_secs(30))?;
    for file in slide_files(slide)? {
        let bytes = std::fs::read(&file)?;
        ureq::post(&format!("{url}/instances"))
            .set("Content-Type", "application/dicom")
            .send_bytes(&bytes)
            .with_context(|| format!("uploading {} to Orthanc", file.display()))?;
    }
    let m = &manifest["manifest"];
    let instance = m["levels"][0]["instance_uids"][0]
        .as_str()
        .context("level 0 instance")?;
    let base = format!(
        "/dicom-web/studies/{}/series/{}/instances/{instance}/frames",
        m["study_uid"].as_str().unwrap_or_default(),
        m["series_uid"].as_str().unwrap_or_default()
    );
    let accept = "Accept: multipart/related; type=\"application/octet-stream\"; transfer-syntax=*";
    // Check one frame is served before loading it.
    let probe = ureq::get(&format!("{url}{base}/1"))
        .set("Accept", accept.trim_start_matches("Accept: "))
        .call()?;
    if probe.status() != 200 {
        bail!("Orthanc answered {} for a frame", probe.status());
    }
    let paths: Vec<String> = order.iter().map(|&i| format!("{base}/{}", i + 1)).collect();
    wrk(
        (args.orthanc_connections, args.orthanc_duration),
        dir,
        "Orthanc DICOMweb frames",
        &url,
        &paths,
        Some(accept),
    )
}
