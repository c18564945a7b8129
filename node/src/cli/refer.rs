//! `slidemesh refer`, `offer` and `referrals`: refer slides to another trust for an opinion
//! from the node's host, offer a case to the co-operative's shared queue, and list, show or
//! withdraw referrals.
//!
//! Like `share`, the operator acts for the trust itself: the referral names no referring
//! person unless `--by` does, and no policy decision is asked for (the web UI and API decide
//! `refer` for every person). The running node delivers what these commands queue within a
//! second; a referral's steps by people (open, answer, close) are taken in the web UI.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use slidemesh_protocol::{Recipient, ReferralId, SlideId, Step, TrustCode, Urgency, UserClaim};

use crate::context::NodeContext;
use crate::datadir::DataDir;
use crate::referrals::{NewReferral, Party};
use crate::store::now_unix;

#[derive(Debug, Args)]
pub struct ReferArgs {
    /// The case's slides (ids as `slidemesh slides` lists them), all held by this node
    #[arg(required = true)]
    slides: Vec<String>,
    /// The ODS code of the trust to refer to
    #[arg(long, value_name = "ODS")]
    to: String,
    /// A sub-specialty queue there (breast, gi, skin, haematopathology, ...)
    #[arg(
        long,
        conflicts_with = "specialist",
        required_unless_present = "specialist"
    )]
    queue: Option<String>,
    /// A named specialist there (their account at that trust)
    #[arg(long)]
    specialist: Option<String>,
    /// The clinical question
    #[arg(long)]
    question: String,
    /// routine, urgent or two-week-wait
    #[arg(long, default_value = "routine")]
    urgency: String,
    /// A file with the relevant report text
    #[arg(long, value_name = "FILE")]
    report: Option<std::path::PathBuf>,
    /// When the referral and its grants end: a duration (14d) or a date
    #[arg(long, value_name = "TIME", default_value = "28d")]
    until: String,
    /// The referring pathologist's account, when the operator refers for one
    #[arg(long, value_name = "ACCOUNT")]
    by: Option<String>,
    /// Print the referral as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct OfferArgs {
    /// The case's slides, all held by this node
    #[arg(required = true)]
    slides: Vec<String>,
    /// The sub-specialty queue of the co-operative (breast, gi, skin, ...)
    #[arg(long)]
    queue: String,
    /// The clinical question
    #[arg(long)]
    question: String,
    /// routine, urgent or two-week-wait
    #[arg(long, default_value = "routine")]
    urgency: String,
    /// When the offer ends: a duration (14d) or a date
    #[arg(long, value_name = "TIME", default_value = "14d")]
    until: String,
}

#[derive(Debug, Args)]
pub struct ReferralsArgs {
    #[command(subcommand)]
    command: Option<ReferralsCommand>,
    /// Only received (inbox) or only sent referrals
    #[arg(long = "box", value_name = "inbox|sent")]
    which: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum ReferralsCommand {
    /// One referral in full, with its history and opinion (JSON)
    Show { id: String },
    /// Withdraw a referral this trust sent: its grants are revoked at once here
    Withdraw { id: String },
    /// Answer a referral this trust received, on the trust's own account (a person answers
    /// in the web UI)
    Answer {
        id: String,
        /// The opinion
        #[arg(long)]
        text: String,
        /// The diagnosis as a SNOMED CT concept id
        #[arg(long, value_name = "SCTID")]
        diagnosis: Option<String>,
        /// The diagnosis in words
        #[arg(long, default_value = "")]
        display: String,
        /// Marks on the slides: a JSON array as the API takes (`[{"slide": ID, "shape":
        /// "point|line|rectangle|polygon", "points": [[x, y], ...], "text": ...}]`)
        #[arg(long, value_name = "FILE")]
        marks: Option<std::path::PathBuf>,
    },
    /// Close an answered referral this trust sent: its grants are revoked at once here
    Close { id: String },
}

fn party(node: &NodeContext) -> Party<'_> {
    Party {
        store: &node.store,
        trust: &node.config.node.trust,
        key: &node.key,
    }
}

pub fn refer(data: DataDir, args: ReferArgs) -> Result<()> {
    let node = NodeContext::open(data)?;
    let now = now_unix();
    let slides = parse_slides(&args.slides)?;
    let to: TrustCode = args.to.parse()?;
    let urgency: Urgency = args.urgency.parse().map_err(anyhow::Error::msg)?;
    let expires_at = super::share::parse_until(&args.until, now)?;
    if expires_at <= now {
        bail!("--until {} is in the past", args.until);
    }
    let report = match &args.report {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read report {}", path.display()))?,
        None => String::new(),
    };
    let recipient = match (args.queue, args.specialist) {
        (Some(q), _) => Recipient::Queue(q),
        (None, Some(s)) => Recipient::Specialist(s),
        (None, None) => bail!("name a --queue or a --specialist"),
    };
    let referrer = args
        .by
        .map(|by| UserClaim::new(by, "pathologist"))
        .transpose()?;
    let (roster, _) = node
        .store
        .current_roster()?
        .context("this node has no roster; join a federation first")?;
    let stored = party(&node).send(
        &roster,
        referrer.as_ref(),
        NewReferral {
            to,
            recipient,
            slides,
            question: args.question,
            urgency,
            report,
            expires_at,
            purpose: slidemesh_protocol::Purpose::SecondOpinion,
            nonce: None,
        },
        now,
    )?;
    if args.json {
        println!("{}", crate::api::referrals::referral_json(&stored, now));
    } else {
        println!(
            "referral {} of {} slide(s) to {} ({}); the running node delivers it",
            stored.referral.id,
            stored.referral.slides.len(),
            stored.referral.to,
            stored.referral.urgency
        );
    }
    Ok(())
}

/// `slidemesh offer`: offers a case to the co-operative's shared reporting queue; the
/// running node announces it to every member within seconds.
pub fn offer(data: DataDir, args: OfferArgs) -> Result<()> {
    let node = NodeContext::open(data)?;
    let now = now_unix();
    let slides = parse_slides(&args.slides)?;
    let expires_at = super::share::parse_until(&args.until, now)?;
    let stored = party(&node).offer(
        crate::referrals::queue::NewOffer {
            queue: args.queue,
            slides,
            question: args.question,
            urgency: args.urgency.parse().map_err(anyhow::Error::msg)?,
            report: String::new(),
            expires_at,
        },
        now,
    )?;
    println!(
        "offered case {} to the {} queue; the running node announces it to every member",
        stored.offer.id, stored.offer.queue
    );
    Ok(())
}

pub fn referrals(data: DataDir, args: ReferralsArgs) -> Result<()> {
    let node = NodeContext::open(data)?;
    let now = now_unix();
    match args.command {
        Some(ReferralsCommand::Show { id }) => {
            let id = parse_id(&id)?;
            let stored = node
                .store
                .referral(&id)?
                .with_context(|| format!("no referral {id} here"))?;
            println!(
                "{}",
                serde_json::to_string_pretty(&crate::api::referrals::referral_json(&stored, now))?
            );
        }
        Some(ReferralsCommand::Withdraw { id }) => {
            let id = parse_id(&id)?;
            let stored = party(&node).take_step(&id, None, Step::Withdrawn, now)?;
            println!(
                "withdrew referral {id}: {} grant(s) revoked here; the running node tells {}",
                stored.referral.grants.len(),
                stored.referral.to
            );
        }
        Some(ReferralsCommand::Answer {
            id,
            text,
            diagnosis,
            display,
            marks,
        }) => {
            let id = parse_id(&id)?;
            let annotations = match marks {
                None => Vec::new(),
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    let forms: Vec<crate::api::referrals::AnnotationForm> =
                        serde_json::from_str(&text).with_context(|| {
                            format!("{} is not a list of marks", path.display())
                        })?;
                    forms
                        .into_iter()
                        .enumerate()
                        .map(|(i, f)| f.read(i).map_err(|e| anyhow::anyhow!(e.message)))
                        .collect::<Result<_>>()?
                }
            };
            let opinion = slidemesh_protocol::Opinion {
                author: None,
                text,
                diagnosis: diagnosis.map(|code| slidemesh_protocol::referral::Coding {
                    system: slidemesh_protocol::referral::SNOMED_CT.to_string(),
                    code,
                    display,
                }),
                annotations,
            };
            let stored = party(&node).take_step(&id, None, Step::Answered(opinion), now)?;
            println!(
                "answered referral {id}; the running node sends the opinion to {}",
                stored.referral.from
            );
        }
        Some(ReferralsCommand::Close { id }) => {
            let id = parse_id(&id)?;
            let stored = party(&node).take_step(&id, None, Step::Closed, now)?;
            println!(
                "closed referral {id}; the running node tells {}",
                stored.referral.to
            );
        }
        None => {
            let sent = match args.which.as_deref() {
                None => None,
                Some("inbox") => Some(false),
                Some("sent") => Some(true),
                Some(other) => bail!("--box must be inbox or sent, not {other:?}"),
            };
            let all: Vec<_> = node
                .store
                .referrals()?
                .into_iter()
                .filter(|r| sent.is_none_or(|s| r.sent_here == s))
                .collect();
            if args.json {
                for r in &all {
                    println!("{}", crate::api::referrals::referral_json(r, now));
                }
                return Ok(());
            }
            if all.is_empty() {
                println!("no referrals");
            }
            for r in &all {
                let (arrow, other) = if r.sent_here {
                    ("to", &r.referral.to)
                } else {
                    ("from", &r.referral.from)
                };
                let age = humantime::format_duration(std::time::Duration::from_secs(
                    now.saturating_sub(r.referral.sent_at) / 60 * 60,
                ));
                println!(
                    "{}  {arrow} {other}  {:<13} {:<9} {age} ago  {}",
                    r.referral.id,
                    r.referral.urgency.as_str(),
                    r.status.as_str(),
                    r.referral.question.lines().next().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}

fn parse_slides(texts: &[String]) -> Result<Vec<SlideId>> {
    texts
        .iter()
        .map(|s| {
            s.parse::<SlideId>()
                .map_err(|e| anyhow::anyhow!("invalid slide id {s:?}: {e}"))
        })
        .collect()
}

fn parse_id(text: &str) -> Result<ReferralId> {
    text.parse()
        .map_err(|e| anyhow::anyhow!("invalid referral id {text:?}: {e}"))
}
