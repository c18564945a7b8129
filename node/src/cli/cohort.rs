//! `slidemesh project`: the research projects this trust approved, each for one member
//! trust (what a cohort request from that trust is answered on). `slidemesh cohort`: an
//! approved project's cohort asked of every member through the running node (`build`), as
//! kept here (`list`), and pulled into a dataset folder (`fetch`, [`super::dataset`]).

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use slidemesh_protocol::TrustCode;

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
        /// When the approval (and every grant made under it) ends: 90d, 12h or 2027-06-30
        #[arg(long)]
        until: String,
        /// Most slides one cohort request is given
        #[arg(long, default_value_t = 1000)]
        max_slides: u32,
    },
    /// End a project's approval: no more cohorts (grants already made run to their end
    /// unless revoked with `slidemesh revoke`).
    End {
        reference: String,
        #[arg(long)]
        trust: TrustCode,
    },
    /// The approvals recorded.
    List,
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
        } => {
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
            node.store.put_project(&ProjectApproval {
                reference: reference.clone(),
                trust: trust.clone(),
                approved_at: now,
                expires_at,
                max_slides,
            })?;
            println!(
                "project {reference:?} approved for {trust} until {} (at most {max_slides} slides \
                 a cohort)",
                date(expires_at)
            );
        }
        ProjectCommand::End { reference, trust } => {
            let Some(mut approval) = node.store.project(&trust, reference.trim())? else {
                bail!("no approval of project {reference:?} for {trust} is recorded");
            };
            approval.expires_at = approval.expires_at.min(now);
            node.store.put_project(&approval)?;
            println!("project {reference:?} for {trust}: approval ended");
        }
        ProjectCommand::List => {
            for a in node.store.projects()? {
                let state = if a.expires_at > now {
                    "approved"
                } else {
                    "ended"
                };
                println!(
                    "{}\t{}\t{state} until {}\tmax {} slides",
                    a.trust,
                    a.reference,
                    date(a.expires_at),
                    a.max_slides
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
            for site in answer["sites"].as_array().into_iter().flatten() {
                let trust = site["trust"].as_str().unwrap_or("?");
                let status = site["status"].as_str().unwrap_or("?");
                match (&site["slides"], site["reason"].as_str()) {
                    (Value::Number(n), _) => println!("{trust}\t{status}\t{n} slides"),
                    (_, Some(reason)) => println!("{trust}\t{status}\t{reason}"),
                    _ => println!("{trust}\t{status}"),
                }
            }
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
