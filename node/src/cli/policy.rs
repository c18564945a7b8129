//! `slidemesh policy check|show|test` and `slidemesh consent`: the trust's written consent
//! policy (cedar, in `policy.cedar` beside `config.toml`) and the consent recorded for each
//! of its slides.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;
use slidemesh_protocol::{Purpose, SlideId, TrustCode, UserClaim};

use crate::consent::{ConsentAction, ConsentRequest, DEFAULT_POLICY, Policy, SCHEMA};
use crate::context::NodeContext;
use crate::datadir::DataDir;
use crate::store::consent::SlideConsent;
use crate::store::now_unix;

#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    which: Which,
}

#[derive(Debug, Subcommand)]
enum Which {
    /// Validate a policy file against the schema (default: this node's policy.cedar).
    Check {
        /// A policy file to check before putting it in place
        file: Option<PathBuf>,
    },
    /// Print the policy in force and its hash (or the schema policies are written in).
    Show {
        /// Print the schema instead
        #[arg(long)]
        schema: bool,
    },
    /// Decide one request with the policy and print the decision and the rules that made it.
    Test(TestArgs),
}

#[derive(Debug, Args)]
struct TestArgs {
    /// The requesting trust's ODS code
    #[arg(long, value_name = "ODS")]
    trust: String,
    /// direct-care, second-opinion, mdt, research, education or audit-qa (a grant's), or
    /// own-trust (this trust's own people on its own slides)
    #[arg(long)]
    purpose: String,
    /// A slide this node holds (its recorded consent is used)
    #[arg(long)]
    slide: String,
    #[arg(long, value_enum, default_value = "view")]
    action: ConsentAction,
    /// The grant's reference: a referral for care, an ethics approval for research
    #[arg(long)]
    reference: Option<String>,
    /// A person at the requesting trust (their account name) instead of the trust itself
    #[arg(long, requires = "role")]
    user: Option<String>,
    /// The person's role (pathologist, researcher, student, ...); needs --user
    #[arg(long, requires = "user")]
    role: Option<String>,
    /// Test a policy file instead of the node's
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ConsentArgs {
    /// The slide id
    slide: String,
    /// GA4GH DUO consent codes, comma-separated (e.g. GRU,IRB; CC for clinical care only)
    #[arg(long, value_delimiter = ',')]
    codes: Option<Vec<String>>,
    /// The patient registered an NHS national data opt-out
    #[arg(long, value_name = "yes|no")]
    opt_out: Option<String>,
    /// When consent for secondary use ends: a date (2030-12-31), a duration (365d), or never
    #[arg(long, value_name = "TIME")]
    expires: Option<String>,
    #[arg(long)]
    json: bool,
}

pub fn run(data: DataDir, args: PolicyArgs) -> Result<()> {
    data.require_initialised()?;
    let node_policy = data.policy_path();
    match args.which {
        Which::Check { file } => {
            let path = file.unwrap_or(node_policy);
            let policy = Policy::from_file(&path)
                .with_context(|| format!("{} is not a valid policy", path.display()))?;
            println!(
                "{}: valid ({} rules, hash {})",
                path.display(),
                policy.text().matches("@id(").count(),
                policy.hash()
            );
            Ok(())
        }
        Which::Show { schema: true } => {
            print!("{SCHEMA}");
            Ok(())
        }
        Which::Show { schema: false } => {
            let policy = load(&node_policy)?;
            println!("// {} (hash {})", node_policy.display(), policy.hash());
            print!("{}", policy.text());
            Ok(())
        }
        Which::Test(t) => test(data, node_policy, t),
    }
}

fn load(path: &std::path::Path) -> Result<Policy> {
    if path.exists() {
        Policy::from_file(path).with_context(|| format!("{} is not a valid policy", path.display()))
    } else {
        Ok(Policy::from_text(DEFAULT_POLICY)?)
    }
}

fn test(data: DataDir, node_policy: PathBuf, args: TestArgs) -> Result<()> {
    let policy = load(args.policy.as_deref().unwrap_or(&node_policy))?;
    let node = NodeContext::open(data)?;
    let slide: SlideId = args
        .slide
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid slide id {:?}: {e}", args.slide))?;
    let record = node
        .store
        .slide(&slide)?
        .with_context(|| format!("slide {slide} is not held by this node"))?;
    let manifest = record.signed.verify()?;
    let consent = node.store.slide_consent(&slide, &manifest.series_uid)?;
    let requester: TrustCode = args.trust.parse()?;
    // `own-trust`: this trust's own people on its own slides (no grant).
    let purpose: Option<Purpose> = match args.purpose.as_str() {
        crate::consent::OWN_TRUST_PURPOSE => None,
        other => Some(other.parse().map_err(anyhow::Error::msg)?),
    };
    let user = match (args.user, args.role) {
        (Some(id), Some(role)) => Some(UserClaim::new(id, role)?),
        _ => None,
    };
    let now = now_unix();
    let decision = policy.decide(&ConsentRequest {
        requester: &requester,
        user: user.as_ref(),
        action: args.action,
        slide,
        owner: &manifest.owner,
        consent: &consent,
        purpose,
        reference: args.reference.as_deref(),
        grant_expires: now + 3600,
        now,
    });
    if args.json {
        println!(
            "{}",
            json!({ "decision": decision, "consent": consent_json(&consent) })
        );
    } else {
        println!(
            "{}: {} {} for {} ({})",
            if decision.allowed { "ALLOW" } else { "DENY" },
            match &user {
                Some(user) => format!("{user} at {requester}"),
                None => requester.to_string(),
            },
            args.action.as_str(),
            purpose.map_or(crate::consent::OWN_TRUST_PURPOSE, Purpose::as_str),
            decision.explain()
        );
        println!("slide consent: {}", consent_line(&consent));
        for e in &decision.errors {
            println!("evaluation error: {e}");
        }
        println!("policy hash: {}", decision.policy_hash);
    }
    Ok(())
}

fn consent_json(c: &SlideConsent) -> serde_json::Value {
    json!({ "codes": c.codes, "opted_out": c.opted_out, "expires": c.expires })
}

fn consent_line(c: &SlideConsent) -> String {
    let expires = c
        .expires
        .map(|t| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(t),
            )
            .to_string()
        })
        .unwrap_or_else(|| "never".into());
    format!(
        "codes {}, national data opt-out {}, secondary-use consent ends {expires}",
        c.codes.join(","),
        if c.opted_out { "yes" } else { "no" }
    )
}

/// `slidemesh consent SLIDE [--codes ..] [--opt-out yes|no] [--expires ..]`: shows the
/// slide's recorded consent, or changes it (effective at the next request the node serves).
pub fn consent(data: DataDir, args: ConsentArgs) -> Result<()> {
    let node = NodeContext::open(data)?;
    let slide: SlideId = args
        .slide
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid slide id {:?}: {e}", args.slide))?;
    let record = node.store.slide(&slide)?.with_context(|| {
        format!("slide {slide} is not held by this node (consent is recorded by the owner)")
    })?;
    let series = record.signed.verify()?.series_uid;
    let mut consent = node.store.consent(&series)?;
    let changing = args.codes.is_some() || args.opt_out.is_some() || args.expires.is_some();
    if let Some(codes) = args.codes {
        consent.codes = crate::ingest::consent::normalise(&codes).map_err(anyhow::Error::msg)?;
    }
    if let Some(flag) = args.opt_out {
        consent.opted_out = match flag.as_str() {
            "yes" | "true" => true,
            "no" | "false" => false,
            other => bail!("--opt-out takes yes or no, not {other:?}"),
        };
    }
    if let Some(expires) = args.expires {
        consent.expires = if expires == "never" {
            None
        } else {
            Some(super::share::parse_until(&expires, now_unix())?)
        };
    }
    if changing {
        node.store.put_consent(&series, &consent)?;
    }
    // What decisions use: the recorded consent joined with the LIMS (whose opt-out counts
    // even where this records none).
    let decided = node.store.slide_consent(&slide, &series)?;
    if args.json {
        println!(
            "{}",
            json!({
                "slide_id": slide,
                "series_uid": series,
                "consent": consent_json(&consent),
                "decided_with": consent_json(&decided),
            })
        );
    } else {
        println!("{slide}: {}", consent_line(&consent));
        if decided != consent {
            println!(
                "  decided with (joined with the LIMS's word on the case): {}",
                consent_line(&decided)
            );
        }
    }
    Ok(())
}
