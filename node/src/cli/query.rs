//! `slidemesh query`: a research query answered by this node over its own slides, exactly
//! as it answers a member (its policy's `query` decision, its disclosure control and the
//! requester's budget, here the trust's own; audited). With `--network`, asked of every
//! member through the running node (`serve.json` says where; `POST
//! /api/v1/research/query`, as the web UI's research page does), each site's status shown.

use anyhow::Result;
use clap::Args;
use slidemesh_protocol::query::{Query, QueryError, Released};

use super::running::RunningNode;
use crate::consent::PolicyHandle;
use crate::context::NodeContext;
use crate::datadir::DataDir;
use crate::research::answer::{self, Asker, Site};

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The query, e.g. `count where stain = "H&E" and year between 2022 and 2024 by
    /// anatomic_site`
    pub text: String,
    /// One JSON object per group: `{"groups": {...}, "count": N}`, or `"below": N` for a
    /// suppressed count (with --network: the node's whole answer)
    #[arg(long)]
    pub json: bool,
    /// Ask every member through this node's running server, not only this node's slides
    /// (the server must act for the trust: `[users] from = "none"`, from this machine)
    #[arg(long)]
    pub network: bool,
}

/// Asks every member through the running node and prints each site and the counts.
fn ask_network(data: &DataDir, text: &str, json: bool) -> Result<()> {
    let node = RunningNode::find(data)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer = runtime.block_on(node.json(
        reqwest::Method::POST,
        "/api/v1/research/query",
        Some(&serde_json::json!({ "query": text })),
    ))?;
    if json {
        println!("{answer}");
        return Ok(());
    }
    super::running::print_sites(&answer);
    println!();
    let by: Vec<&str> = answer["group_by"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str())
        .collect();
    println!(
        "{}count over the sites that answered",
        by.iter().map(|h| format!("{h}\t")).collect::<String>()
    );
    for row in answer["combined"].as_array().into_iter().flatten() {
        let key: String = by
            .iter()
            .map(|f| match &row["key"][*f] {
                serde_json::Value::Null => "(none)\t".to_string(),
                serde_json::Value::String(s) => format!("{s}\t"),
                v => format!("{v}\t"),
            })
            .collect();
        let below: Vec<&str> = row["below_at"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str())
            .collect();
        let extra = if below.is_empty() {
            String::new()
        } else {
            format!(" (+ fewer than the threshold at {})", below.join(", "))
        };
        println!("{key}{}{extra}", row["count"]);
    }
    if answer["complete"] != true {
        eprintln!("partial answer: not every member answered (see above)");
    }
    Ok(())
}

pub fn run(data: DataDir, args: QueryArgs) -> Result<()> {
    let query: Query = args
        .text
        .parse()
        .map_err(|e: QueryError| anyhow::anyhow!("not a query:\n{}", e.render(&args.text)))?;
    let text = query
        .canonical()
        .map_err(|e| anyhow::anyhow!("not a query: {e}"))?;
    if args.network {
        return ask_network(&data, &text, args.json);
    }
    let node = NodeContext::open(data)?;
    let policy = PolicyHandle::load(node.data.policy_path())?.current();
    let roster = node.store.current_roster()?.map(|(roster, _)| roster);
    let trust = node.config.node.trust.clone();
    let hierarchy =
        crate::research::snomed::Hierarchy::configured(&node.config.research, node.data.root())?;
    let rules = answer::SiteRules::from_config(&node.config.research, &node.key, hierarchy);
    let answered = answer::answer(
        &Site {
            store: &node.store,
            index: &Default::default(),
            policy: &policy,
            roster: roster.as_ref(),
            trust: &trust,
            rules: &rules,
        },
        &Asker {
            trust: &trust,
            peer_id: "",
            user: None,
            ethics: None,
        },
        &query,
        &text,
        crate::store::now_unix(),
    );
    node.store.append_audit_entries(&[answered.entry])?;
    let released = answered
        .outcome
        .map_err(|refusal| anyhow::anyhow!("not answered: {refusal}"))?;
    let show = |c: Released| match c {
        Released::Count(n) => n.to_string(),
        Released::Below(n) => format!("<{n}"),
    };
    if args.json {
        for cell in &released.cells {
            let groups = crate::research::key_json(&query.group_by, &cell.key);
            let row = match cell.count {
                Released::Count(n) => serde_json::json!({ "groups": groups, "count": n }),
                Released::Below(n) => serde_json::json!({ "groups": groups, "below": n }),
            };
            println!("{row}");
        }
        return Ok(());
    }
    let header: Vec<&str> = query.group_by.iter().map(|f| f.name()).collect();
    println!(
        "{}count",
        header.iter().map(|h| format!("{h}\t")).collect::<String>()
    );
    for cell in &released.cells {
        println!(
            "{}{}",
            cell.key
                .iter()
                .map(|v| format!("{}\t", v.as_deref().unwrap_or("(none)")))
                .collect::<String>(),
            show(cell.count)
        );
    }
    eprintln!(
        "{trust}'s own slides only, as it answers members: counts below {} shown as \"<{}\", \
         each count moved by at most {} (the same for the same slides). Ask every member \
         with --network.",
        released.min_cell, released.min_cell, released.noise
    );
    Ok(())
}
