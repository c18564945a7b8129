//! `slidemesh query`: a research query answered by this node over its own slides, exactly
//! as it answers a member (its policy's `query` decision, its disclosure control and the
//! requester's budget, here the trust's own; audited). Asking every member at once is the
//! running node's: `POST /api/v1/research/query`, or the web UI's research page.

use anyhow::Result;
use clap::Args;
use slidemesh_protocol::query::{Query, QueryError, Released};

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
    /// suppressed count
    #[arg(long)]
    pub json: bool,
}

pub fn run(data: DataDir, args: QueryArgs) -> Result<()> {
    let query: Query = args
        .text
        .parse()
        .map_err(|e: QueryError| anyhow::anyhow!("not a query:\n{}", e.render(&args.text)))?;
    let text = query
        .canonical()
        .map_err(|e| anyhow::anyhow!("not a query: {e}"))?;
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
         each count moved by at most {} (the same for the same query). Ask every member \
         through the running node (POST /api/v1/research/query).",
        released.min_cell, released.min_cell, released.noise
    );
    Ok(())
}
