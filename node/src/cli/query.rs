//! `slidemesh query`: a research query's grouped counts over this node's own slides.

use anyhow::{Context, Result};
use clap::Args;
use slidemesh_protocol::query::{Query, Value};

use crate::context::NodeContext;
use crate::datadir::DataDir;
use crate::store::Origin;

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The query, e.g. `count where stain = "H&E" and year between 2022 and 2024 by
    /// anatomic_site`
    pub text: String,
    /// One JSON object per group
    #[arg(long)]
    pub json: bool,
}

pub fn run(data: DataDir, args: QueryArgs) -> Result<()> {
    let query: Query = args
        .text
        .parse()
        .map_err(|e: slidemesh_protocol::query::QueryError| {
            anyhow::anyhow!("not a query:\n{}", e.render(&args.text))
        })?;
    let node = NodeContext::open(data)?;
    let lims = node.store.lims()?;
    let mut facts = Vec::new();
    let mut opted_out = 0;
    for (id, summary) in node.store.summaries()? {
        if summary.origin != Origin::Local {
            continue;
        }
        let record = node
            .store
            .slide(&id)?
            .with_context(|| format!("slide {id} listed but not stored"))?;
        let manifest = record
            .signed
            .verify()
            .with_context(|| format!("stored manifest of {id} does not verify"))?;
        let slide = crate::research::facts(&summary, &manifest, &lims);
        // A patient who opted out of research is never counted.
        if slide.opted_out {
            opted_out += 1;
            continue;
        }
        facts.push(slide);
    }
    let counts = query.count(&facts, &crate::research::is_a);
    let show = |v: &Option<Value>| {
        v.as_ref().map_or("(none)".to_string(), |v| match v {
            Value::Text(t) => t.clone(),
            Value::Number(n) => n.to_string(),
        })
    };
    if args.json {
        for (key, n) in &counts {
            let groups: serde_json::Map<String, serde_json::Value> = query
                .group_by
                .iter()
                .zip(key)
                .map(|(f, v)| {
                    (
                        f.name().to_string(),
                        serde_json::to_value(v).unwrap_or_default(),
                    )
                })
                .collect();
            println!("{}", serde_json::json!({ "groups": groups, "count": n }));
        }
        return Ok(());
    }
    let header: Vec<&str> = query.group_by.iter().map(|f| f.name()).collect();
    println!(
        "{}count",
        header.iter().map(|h| format!("{h}\t")).collect::<String>()
    );
    for (key, n) in &counts {
        println!(
            "{}{n}",
            key.iter()
                .map(|v| format!("{}\t", show(v)))
                .collect::<String>()
        );
    }
    eprintln!(
        "{} of this node's own slides counted ({opted_out} left out: their patients opted \
         out); other sites are not asked yet (no fan-out), and no disclosure control is \
         applied",
        facts.len()
    );
    Ok(())
}
