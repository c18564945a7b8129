//! `slidemesh project`: the research projects this trust approved, each for one member
//! trust (what a cohort request from that trust is answered on). `slidemesh cohort`: an
//! approved project's cohort asked of every member through the running node (`build`), as
//! kept here (`list`), and pulled into a dataset folder (`fetch`, [`super::dataset`]).

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;
use slidemesh_protocol::TrustCode;
use slidemesh_protocol::query::Field;

use super::running::RunningNode;
use super::share::parse_until;
use crate::context::NodeContext;
use crate::datadir::DataDir;
use crate::research::cohort::check_project;
use crate::store::cohorts::ProjectApproval;
use crate::store::now_unix;

#[derive(Debug, Args)]
pub struct ProjectArgs {
    #[command(subcommand)]
    command: ProjectCommand,
}

#[derive(Debug, Subcommand)]
enum ProjectCommand {
    /// Approve a research project for a member trust: its cohort requests are answered
    /// with this trust's matching slides that its policy allows (action `receive_cohort`),
    /// each as a research grant for the project, de-identified with the project's
    /// pseudonyms. Approving again replaces the end date and the limit.
    Approve {
        /// The project's ethics approval reference, e.g. "REC 26/YH/0042"
        reference: String,
        /// The member trust whose researchers run the project (ODS code)
        #[arg(long)]
        trust: TrustCode,
        /// When the approval and the grants made under it end: 90d, 12h or 2027-06-30
        /// (approving again with another end revokes the grants already made)
        #[arg(long)]
        until: String,
        /// Most slides the project is given in all
        #[arg(long, default_value_t = 1000)]
        max_slides: u32,
        /// The fields a cohort may be selected or labelled by (what becomes known of each
        /// pseudonym; age band, sex and scanner only when the approval says so)
        #[arg(long, value_delimiter = ',', default_value = DEFAULT_FIELDS)]
        fields: Vec<String>,
    },
    /// End a project's approval: no more cohorts, and every grant made for it revoked.
    End {
        reference: String,
        #[arg(long)]
        trust: TrustCode,
    },
    /// The approvals recorded.
    List,
}

/// Fields a project may select and label by unless its approval says otherwise: none
/// narrower than the study's year about the patient.
const DEFAULT_FIELDS: &str = "trust,stain,anatomic_site,specimen,diagnosis,grade,year";

/// Revokes every grant made for `approval`'s project that still holds; how many, or which
/// could not be (each is tried).
fn revoke_project_grants(node: &NodeContext, approval: &ProjectApproval) -> Result<usize> {
    let roster = node.store.current_roster()?.map(|(roster, _)| roster);
    let now = now_unix();
    let mut revoked = 0;
    let mut failed = Vec::new();
    for (_, id) in node.store.project_grants(approval)? {
        let Some(stored) = node.store.grant(&id)? else {
            continue;
        };
        let revocations = node.store.revocations(&id)?;
        let already = roster.as_ref().is_some_and(|roster| {
            crate::access::grant::revoked_by_issuer(&id, &stored.grant, &revocations, roster)
        });
        if !already && stored.grant.expires_at > now {
            match super::share::revoke_issued(node, &stored) {
                Ok(()) => revoked += 1,
                Err(e) => failed.push(format!("grant {id}: {e:#}")),
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "{revoked} grants of project {:?} revoked, {} not: {}",
            approval.reference,
            failed.len(),
            failed.join("; ")
        );
    }
    Ok(revoked)
}

pub fn project(data: DataDir, args: ProjectArgs) -> Result<()> {
    let node = NodeContext::open(data)?;
    let now = now_unix();
    match args.command {
        ProjectCommand::Approve {
            reference,
            trust,
            until,
            max_slides,
            fields,
        } => {
            let fields = fields
                .iter()
                .map(|name| {
                    Field::parse(name.trim())
                        .with_context(|| format!("--fields: {name:?} is not a field a query names"))
                })
                .collect::<Result<Vec<Field>>>()?;
            let reference = reference.trim().to_string();
            check_project(&reference).map_err(anyhow::Error::msg)?;
            if trust == node.config.node.trust {
                bail!("a trust's own researchers need no approval of their own trust's slides");
            }
            let expires_at = parse_until(&until, now)?;
            if expires_at <= now {
                bail!("--until {until} is in the past");
            }
            if max_slides == 0 || max_slides as usize > slidemesh_protocol::query::MAX_COHORT {
                bail!(
                    "--max-slides is 1 to {}",
                    slidemesh_protocol::query::MAX_COHORT
                );
            }
            // Grants made under an earlier approval with another end would outlive it, or
            // end before it: revoked (once the new approval is in force, so none is made
            // under the old one meanwhile), and made again as the project asks.
            let earlier = node.store.project(&trust, &reference)?;
            node.store.put_project(&ProjectApproval {
                reference: reference.clone(),
                trust: trust.clone(),
                approved_at: now,
                expires_at,
                max_slides,
                fields,
            })?;
            let revoked = match earlier {
                Some(earlier) if earlier.expires_at != expires_at => {
                    revoke_project_grants(&node, &earlier)?
                }
                _ => 0,
            };
            if revoked > 0 {
                println!("{revoked} grants made under the earlier approval revoked");
            }
            println!(
                "project {reference:?} approved for {trust} until {} (at most {max_slides} slides \
                 in all)",
                date(expires_at)
            );
        }
        ProjectCommand::End { reference, trust } => {
            let Some(mut approval) = node.store.project(&trust, reference.trim())? else {
                bail!("no approval of project {reference:?} for {trust} is recorded");
            };
            // Ended first, so no grant is made under it while its grants are revoked.
            let in_force = approval.clone();
            approval.expires_at = approval.expires_at.min(now);
            node.store.put_project(&approval)?;
            let revoked = revoke_project_grants(&node, &in_force)?;
            println!("project {reference:?} for {trust}: approval ended, {revoked} grants revoked");
        }
        ProjectCommand::List => {
            for a in node.store.projects()? {
                let state = if a.expires_at > now {
                    "approved"
                } else {
                    "ended"
                };
                let fields: Vec<&str> = a.fields.iter().map(|f| f.name()).collect();
                println!(
                    "{}\t{}\t{state} until {}\tmax {} slides\tfields {}",
                    a.trust,
                    a.reference,
                    date(a.expires_at),
                    a.max_slides,
                    fields.join(",")
                );
            }
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct CohortArgs {
    #[command(subcommand)]
    command: CohortCommand,
}

#[derive(Debug, Subcommand)]
enum CohortCommand {
    /// Ask every other member for the project's cohort through the running node: the
    /// slides matching the query's conditions (its `by` fields become each slide's labels)
    /// that each site approved the project for. This trust's own slides are not included.
    Build {
        /// The project's ethics approval reference, as the sites approved it
        #[arg(long)]
        project: String,
        /// e.g. `count where diagnosis = 413448000 and stain = "H&E" by grade`
        query: String,
        /// The node's whole answer as JSON
        #[arg(long)]
        json: bool,
    },
    /// The project's cohort as this node keeps it: site, patient pseudonym, labels, slide.
    List {
        #[arg(long)]
        project: String,
        /// The node's whole answer as JSON
        #[arg(long)]
        json: bool,
    },
    /// Pull the cohort's tiles at one level into a dataset folder, with manifest.csv
    /// (pseudonym, site, labels, tile path, BLAKE3). Each tile is verified against its id;
    /// a rerun keeps the tiles already there and fetches the rest (resumable); the rate is
    /// limited so the owners' viewers are not starved.
    Fetch(super::dataset::FetchArgs),
}

pub fn cohort(data: DataDir, args: CohortArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let node = RunningNode::find(&data)?;
    match args.command {
        CohortCommand::Build {
            project,
            query,
            json,
        } => {
            let answer = runtime.block_on(node.json(
                reqwest::Method::POST,
                "/api/v1/research/cohorts",
                Some(&json!({ "project": project, "query": query })),
            ))?;
            if json {
                println!("{answer}");
                return Ok(());
            }
            super::running::print_sites(&answer);
            println!(
                "cohort for project {project}: {} slides",
                answer["slides"].as_u64().unwrap_or(0)
            );
            if answer["complete"] != true {
                eprintln!("partial cohort: not every member answered (see above)");
            }
            Ok(())
        }
        CohortCommand::List { project, json } => {
            let answer =
                runtime.block_on(node.json(reqwest::Method::GET, &cohort_path(&project), None))?;
            if json {
                println!("{answer}");
                return Ok(());
            }
            for m in answer["members"].as_array().into_iter().flatten() {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    m["site"].as_str().unwrap_or("?"),
                    m["patient"].as_str().unwrap_or("?"),
                    m["labels"],
                    m["slide"].as_str().unwrap_or("?"),
                    if m["opened"] == true {
                        "open"
                    } else {
                        "not yet open"
                    }
                );
            }
            Ok(())
        }
        CohortCommand::Fetch(args) => runtime
            .block_on(super::dataset::fetch(&node, args))
            .context("cohort fetch"),
    }
}

/// The API path of a project's cohort.
pub(super) fn cohort_path(project: &str) -> String {
    let mut url = reqwest::Url::parse("http://node/api/v1/research/cohorts").expect("a valid URL");
    url.query_pairs_mut().append_pair("project", project);
    format!("{}?{}", url.path(), url.query().unwrap_or_default())
}

fn date(unix: u64) -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix))
}
