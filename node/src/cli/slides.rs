//! `slidemesh slides`: list the slides this node holds.

use anyhow::Result;
use clap::Args;

use crate::context::NodeContext;
use crate::datadir::DataDir;

#[derive(Debug, Args)]
pub struct SlidesArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

pub fn run(data: DataDir, args: SlidesArgs) -> Result<()> {
    let node = NodeContext::open(data)?;
    let summaries = node.store.summaries()?;
    if args.json {
        let rows: Vec<_> = summaries
            .iter()
            .map(|(id, s)| serde_json::json!({ "slide_id": id, "summary": s }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if summaries.is_empty() {
        println!("no slides yet; add some with `slidemesh ingest <path>`");
    }
    for (id, s) in summaries {
        println!(
            "{id}  {}  {}x{}  {} levels  {} tiles  {}  {}",
            s.owner,
            s.width,
            s.height,
            s.levels,
            s.tiles,
            s.stain.as_deref().unwrap_or("-"),
            s.anatomic_site.as_deref().unwrap_or("-"),
        );
    }
    Ok(())
}
