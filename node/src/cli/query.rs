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
    use slidemesh_protocol::query::Field;
    let lims: Vec<&str> = query
        .fields()
        .into_iter()
        .filter(|f| matches!(f, Field::Diagnosis | Field::Grade | Field::Specimen))
        .map(Field::name)
        .collect();
    if !lims.is_empty() {
        anyhow::bail!(
            "{} come from the LIMS sidecar, which this node does not hold yet (not built); \
             query by trust, stain, anatomic_site, year, age_band, sex or scanner",
            lims.join(", ")
        );
    }
    let node = NodeContext::open(data)?;
    let mut facts = Vec::new();
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
        facts.push(crate::research::facts(&summary, &manifest));
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
        "{} of this node's own slides read; other sites are not asked yet (no fan-out), \
         and no disclosure control is applied",
        facts.len()
    );
    Ok(())
}
