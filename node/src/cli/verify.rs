//! `slidemesh verify`: re-read every tile of every slide from the original files and check
//! it against its content id, so an operator can prove the store is intact (after a crash,
//! a disk fault, or a restore from backup).
//!
//! Exit status: 0 when everything verifies, 2 when any tile is missing or corrupt.

use anyhow::Result;
use clap::Args;
use slidemesh_protocol::TileId;

use crate::context::NodeContext;
use crate::datadir::DataDir;
use crate::store::reader::TileReader;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Print a JSON report instead of text
    #[arg(long)]
    json: bool,
}

pub fn run(data: DataDir, args: VerifyArgs) -> Result<()> {
    let node = NodeContext::open(data)?;
    let reader = TileReader::new(node.objects.clone());
    let mut problems: Vec<String> = Vec::new();
    let mut slides = 0usize;
    let mut tiles = 0u64;
    for (id, _) in node.store.summaries()? {
        slides += 1;
        let Some(record) = node.store.slide(&id)? else {
            problems.push(format!("slide {id}: summary without a manifest"));
            continue;
        };
        let manifest = match record.signed.verify() {
            Ok(m) if record.signed.slide_id() == id => m,
            Ok(_) => {
                problems.push(format!("slide {id}: stored under the wrong id"));
                continue;
            }
            Err(e) => {
                problems.push(format!("slide {id}: manifest does not verify: {e}"));
                continue;
            }
        };
        for tile in manifest.all_tiles() {
            tiles += 1;
            if let Err(problem) = check_tile(&node, &reader, tile) {
                problems.push(format!("slide {id}: tile {tile}: {problem}"));
            }
        }
        for instance in &manifest.instances {
            if !node.objects.contains(&instance.object) {
                problems.push(format!(
                    "slide {id}: original file {} of instance {} is missing",
                    instance.object, instance.sop_instance_uid
                ));
            }
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "slides": slides, "tiles": tiles, "problems": problems })
        );
    } else {
        for p in &problems {
            eprintln!("problem: {p}");
        }
        println!(
            "verified {slides} slides, {tiles} tiles: {} problems",
            problems.len()
        );
    }
    if !problems.is_empty() {
        std::process::exit(2);
    }
    Ok(())
}

fn check_tile(node: &NodeContext, reader: &TileReader, tile: &TileId) -> Result<(), String> {
    let location = node
        .store
        .tile_location(tile)
        .map_err(|e| e.to_string())?
        .ok_or("no location in the store")?;
    let bytes = reader.read(&location).map_err(|e| e.to_string())?;
    if TileId::of(&bytes) != *tile {
        return Err(format!(
            "bytes at {:?} in object {} do not hash to the tile id",
            location.ranges, location.object
        ));
    }
    Ok(())
}
