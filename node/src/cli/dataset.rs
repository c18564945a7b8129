//! `slidemesh cohort fetch`: an approved project's cohort pulled into a dataset folder for
//! training, through the running node (which fetches each tile from its owner under the
//! project's research grant, verifies and caches it, and audits it on both sides).
//!
//! The folder: `SITE/PATIENT/VIEW/L<level>/<col>_<row>.<ext>` for each tile of the chosen
//! level (`VIEW`: the first 16 hex digits of the slide's de-identified view id, `PATIENT`:
//! the patient's pseudonym in the project), and `manifest.csv` with one row per tile
//! (pseudonym, site, view, labels, level, column, row, path, BLAKE3). Every tile is checked
//! against its content address before it is kept, written to a `.part` file and renamed, so
//! a killed fetch leaves only whole, verified tiles; a rerun keeps those (hashing them
//! again) and fetches the rest, and gives the same bytes as a fetch never interrupted. The
//! manifest is written last, only when every tile is there: a folder with `manifest.csv`
//! is complete. Requests are paced (`--rate`) so the owners' own viewers are not starved.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use futures::StreamExt;
use governor::{Quota, RateLimiter};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use slidemesh_protocol::{SlideId, SlideManifest, TileId};

use super::cohort::cohort_path;
use super::running::RunningNode;

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The project's ethics approval reference (its cohort must have been built here)
    #[arg(long)]
    pub project: String,
    /// The dataset folder (made if missing; a rerun into it resumes)
    #[arg(long)]
    pub out: PathBuf,
    /// Pyramid level, 0 being full resolution; a slide with fewer levels gives its smallest
    #[arg(long, default_value_t = 0)]
    pub level: usize,
    /// Most tiles asked for per second, over all sites (in chunks of at most 256)
    #[arg(long, default_value_t = 100)]
    pub rate: u32,
    /// Tiles asked for at once
    #[arg(long, default_value_t = 8)]
    pub parallel: usize,
    /// Seconds to wait for a cohort slide the node has not opened yet
    #[arg(long, default_value_t = 120)]
    pub wait_secs: u64,
}

/// One tile of the dataset.
struct Tile {
    slide: SlideId,
    id: TileId,
    /// Relative to the dataset folder.
    path: String,
}

/// One cohort slide as the dataset lists it.
struct Slide {
    site: String,
    patient: String,
    view: String,
    labels: Vec<(String, String)>,
    level: usize,
    /// (col, row, tile index in `tiles`)
    grid: Vec<(u32, u32, usize)>,
}

/// Tries per tile before the fetch gives up on it (a rerun tries again).
const TRIES: u32 = 3;
/// Most tiles the node is asked to fetch into its cache at once.
const CHUNK: usize = 256;

pub async fn fetch(node: &RunningNode, args: FetchArgs) -> Result<()> {
    if args.rate == 0 || args.parallel == 0 {
        bail!("--rate and --parallel are at least 1");
    }
    let cohort = node
        .json(reqwest::Method::GET, &cohort_path(&args.project), None)
        .await?;
    let mut members: Vec<&Value> = cohort["members"].as_array().into_iter().flatten().collect();
    if members.is_empty() {
        bail!(
            "project {:?} has no cohort at this node: run `slidemesh cohort build` first",
            args.project
        );
    }
    let text = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
    members.sort_by_key(|m| (text(m, "site"), text(m, "patient"), text(m, "slide")));
    // Label columns: every label any site gave, in the order first seen.
    let mut label_names: Vec<String> = Vec::new();
    for m in &members {
        for name in m["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            if !label_names.contains(name) {
                label_names.push(name.clone());
            }
        }
    }
    let mut slides = Vec::new();
    let mut tiles = Vec::new();
    let mut left_out = 0usize;
    // One wait for every slide still opening, not one each.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait_secs);
    for m in &members {
        let slide: SlideId = text(m, "slide")
            .parse()
            .map_err(|e| anyhow::anyhow!("the node listed a malformed slide id: {e}"))?;
        let (manifest, view) = match opened_manifest(node, &slide, &args.project, deadline).await? {
            Opened::View(manifest, view) => (manifest, view),
            Opened::Not(why) => {
                eprintln!("slide {slide} of {}: {why}: left out", text(m, "site"));
                left_out += 1;
                continue;
            }
        };
        let level = args.level.min(manifest.levels.len().saturating_sub(1));
        let grid_level = manifest
            .levels
            .get(level)
            .with_context(|| format!("slide {slide} has no levels"))?;
        let ext = extension(&manifest, level);
        let site = component(&text(m, "site"));
        let patient = component(&text(m, "patient"));
        let view = view.get(..16).unwrap_or(&view).to_string();
        let labels = label_names
            .iter()
            .map(|name| {
                let value = match &m["labels"][name] {
                    Value::Null => String::new(),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (name.clone(), value)
            })
            .collect();
        let mut grid = Vec::new();
        for row in 0..grid_level.rows() {
            for col in 0..grid_level.cols() {
                if let Some(id) = grid_level.tile_at(col, row) {
                    grid.push((col, row, tiles.len()));
                    tiles.push(Tile {
                        slide,
                        id,
                        path: format!("{site}/{patient}/{view}/L{level}/{col}_{row}.{ext}"),
                    });
                }
            }
        }
        slides.push(Slide {
            site,
            patient,
            view,
            labels,
            level,
            grid,
        });
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot make {}", args.out.display()))?;
    // A manifest says the folder is complete: not while this run has not finished.
    match std::fs::remove_file(args.out.join("manifest.csv")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).context("cannot remove the earlier manifest.csv");
        }
        _ => {}
    }
    // What a previous run left: kept when it still hashes to its id.
    let out = args.out.clone();
    let present: Vec<bool> = tokio::task::spawn_blocking({
        let checks: Vec<(PathBuf, TileId)> =
            tiles.iter().map(|t| (out.join(&t.path), t.id)).collect();
        move || {
            checks
                .iter()
                .map(|(path, id)| std::fs::read(path).is_ok_and(|b| TileId::of(&b) == *id))
                .collect()
        }
    })
    .await?;
    let had = present.iter().filter(|p| **p).count();
    let bar = ProgressBar::new(tiles.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} tiles ({per_sec}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(had as u64);
    // Tiles are asked for a chunk at a time: the node fetches a chunk from its owner in
    // batches into its cache (as it does a whole slide), then each tile is read from the
    // node, checked and written. The pace counts tiles, a chunk's worth at once.
    let chunk = (args.rate as usize).clamp(1, CHUNK);
    let pace = RateLimiter::direct(
        Quota::per_second(NonZeroU32::new(args.rate).expect("checked above"))
            .allow_burst(NonZeroU32::new(chunk as u32).expect("at least 1")),
    );
    let missing: Vec<&Tile> = tiles
        .iter()
        .zip(&present)
        .filter(|(_, p)| !**p)
        .map(|(t, _)| t)
        .collect();
    let chunks: Vec<&[&Tile]> = missing
        .chunk_by(|a, b| a.slide == b.slide)
        .flat_map(|same_slide| same_slide.chunks(chunk))
        .collect();
    let failures: Vec<String> = futures::stream::iter(chunks)
        .map(|tiles| {
            let (pace, bar, out) = (&pace, &bar, &args.out);
            async move {
                let n = NonZeroU32::new(tiles.len() as u32).expect("chunks are not empty");
                pace.until_n_ready(n).await.expect("a chunk fits the burst");
                // A chunk the node could not fetch whole is fetched tile by tile below.
                if let Err(e) = node
                    .json(
                        reqwest::Method::POST,
                        &format!("/api/v1/slides/{}/cache", tiles[0].slide),
                        Some(&serde_json::json!({
                            "tiles": tiles.iter().map(|t| t.id.to_string()).collect::<Vec<_>>(),
                        })),
                    )
                    .await
                {
                    bar.suspend(|| {
                        eprintln!(
                            "slide {}: a chunk was not fetched in one go ({e:#}); asking tile by tile",
                            tiles[0].slide
                        )
                    });
                }
                futures::stream::iter(tiles.iter().copied())
                    .map(|tile| async move {
                        let mut last = None;
                        for attempt in 0..TRIES {
                            if attempt > 0 {
                                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                            }
                            match fetch_tile(node, tile, out).await {
                                Ok(()) => {
                                    bar.inc(1);
                                    return None;
                                }
                                Err(e) => last = Some(format!("{}: {e:#}", tile.path)),
                            }
                        }
                        last
                    })
                    .buffer_unordered(args.parallel)
                    .filter_map(|failed| async move { failed })
                    .collect::<Vec<String>>()
                    .await
            }
        })
        .buffered(2)
        .flat_map(futures::stream::iter)
        .collect()
        .await;
    bar.finish_and_clear();
    if let Some(first) = failures.first() {
        bail!(
            "{} of {} tiles could not be fetched (first: {first}); run the same command \
             again to fetch the rest (manifest.csv is written once every tile is there)",
            failures.len(),
            tiles.len()
        );
    }
    if slides.is_empty() {
        bail!("no slide of the cohort is open here as the project's de-identified view");
    }
    let manifest = write_manifest(&args.out, &label_names, &slides, &tiles)?;
    println!(
        "{} tiles of {} slides from {} sites in {} ({} fetched, {} already there{}); manifest {}",
        tiles.len(),
        slides.len(),
        {
            let mut sites: Vec<&str> = slides.iter().map(|s| s.site.as_str()).collect();
            sites.dedup();
            sites.len()
        },
        args.out.display(),
        tiles.len() - had,
        had,
        if left_out > 0 {
            format!("; {left_out} slides left out")
        } else {
            String::new()
        },
        manifest.display()
    );
    Ok(())
}

/// A cohort slide as the node holds it.
enum Opened {
    /// Its de-identified view for the project, and the view's id.
    View(Box<SlideManifest>, String),
    /// Not to be fetched: held under another grant, or no longer given (why).
    Not(String),
}

/// The slide's manifest as the node holds it, de-identified for the project, waiting until
/// `deadline` while the node is still opening it.
async fn opened_manifest(
    node: &RunningNode,
    slide: &SlideId,
    project: &str,
    deadline: tokio::time::Instant,
) -> Result<Opened> {
    let path = format!("/api/v1/slides/{slide}/manifest");
    let body = loop {
        match node.json(reqwest::Method::GET, &path, None).await {
            Ok(body) => break body,
            // Not held yet (the node is still opening it), or the owner not reachable now:
            // asked again until the wait is over.
            Err(e)
                if matches!(super::running::refused_status(&e), Some(404 | 502 | 503))
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            // Refused (an opt-out, a revoked grant since the cohort was built): the rest of
            // the cohort is still fetched.
            Err(e) if super::running::refused_status(&e) == Some(403) => {
                return Ok(Opened::Not(format!(
                    "no longer given ({e}); build the cohort again to drop it"
                )));
            }
            Err(e) => return Err(e.context(format!("slide {slide} is not open at this node"))),
        }
    };
    if body["deidentified_project"] != project {
        return Ok(Opened::Not(
            "held here under another grant (its view is not the project's de-identified one)"
                .into(),
        ));
    }
    let manifest: SlideManifest = serde_json::from_value(body["manifest"].clone())
        .with_context(|| format!("slide {slide}'s manifest"))?;
    let view = body["manifest_id"]
        .as_str()
        .with_context(|| format!("slide {slide}'s manifest has no id"))?
        .to_string();
    Ok(Opened::View(Box::new(manifest), view))
}

/// Fetches one tile, checks it against its id and keeps it (written whole, then renamed).
async fn fetch_tile(node: &RunningNode, tile: &Tile, out: &Path) -> Result<()> {
    let bytes = node
        .bytes(&format!("/api/v1/slides/{}/tiles/{}", tile.slide, tile.id))
        .await?;
    if TileId::of(&bytes) != tile.id {
        bail!(
            "the bytes received do not hash to the tile's id {}",
            tile.id
        );
    }
    let path = out.join(&tile.path);
    tokio::task::spawn_blocking(move || -> Result<()> {
        let dir = path.parent().context("a tile path has a folder")?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot make {}", dir.display()))?;
        let part = path.with_extension("part");
        std::fs::write(&part, &bytes)
            .with_context(|| format!("cannot write {}", part.display()))?;
        std::fs::rename(&part, &path)
            .with_context(|| format!("cannot move {} into place", path.display()))
    })
    .await?
}

/// Writes `manifest.csv` (through a temporary file, so it appears whole).
fn write_manifest(
    out: &Path,
    label_names: &[String],
    slides: &[Slide],
    tiles: &[Tile],
) -> Result<PathBuf> {
    let path = out.join("manifest.csv");
    let part = out.join("manifest.csv.part");
    let mut csv = csv::Writer::from_path(&part)
        .with_context(|| format!("cannot write {}", part.display()))?;
    let mut header: Vec<&str> = vec!["patient", "site", "view"];
    header.extend(label_names.iter().map(String::as_str));
    header.extend(["level", "col", "row", "path", "blake3"]);
    csv.write_record(&header)?;
    for slide in slides {
        for &(col, row, at) in &slide.grid {
            let tile = &tiles[at];
            let mut record = vec![
                slide.patient.clone(),
                slide.site.clone(),
                slide.view.clone(),
            ];
            record.extend(slide.labels.iter().map(|(_, v)| v.clone()));
            record.extend([
                slide.level.to_string(),
                col.to_string(),
                row.to_string(),
                tile.path.clone(),
                tile.id.to_string(),
            ]);
            csv.write_record(&record)?;
        }
    }
    csv.flush()?;
    drop(csv);
    std::fs::rename(&part, &path)
        .with_context(|| format!("cannot move {} into place", path.display()))?;
    Ok(path)
}

/// The file extension of a level's tiles, from its transfer syntax.
fn extension(manifest: &SlideManifest, level: usize) -> &'static str {
    let syntax = manifest.levels[level]
        .instance_uids
        .first()
        .and_then(|uid| {
            manifest
                .instances
                .iter()
                .find(|i| &i.sop_instance_uid == uid)
        })
        .map(|i| i.transfer_syntax_uid.as_str())
        .unwrap_or_default();
    match crate::store::instance::tile_media_type(syntax) {
        "image/jpeg" => "jpg",
        "image/jp2" => "j2k",
        "image/jls" => "jls",
        "image/jphc" => "jph",
        _ => "bin",
    }
}

/// A path component from a name a site gave: kept when plainly safe, else its hash.
fn component(name: &str) -> String {
    let plain = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if plain {
        name.to_string()
    } else {
        format!("x{}", &blake3::hash(name.as_bytes()).to_hex()[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_sites_never_leave_the_dataset_folder() {
        assert_eq!(component("SMP0123ABCD"), "SMP0123ABCD");
        for hostile in ["../etc", "a/b", "", ".", "..", "x y", &"a".repeat(65)] {
            let safe = component(hostile);
            assert!(
                safe.starts_with('x') && safe.len() == 17,
                "{hostile:?} -> {safe}"
            );
        }
    }
}
