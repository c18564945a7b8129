//! The `slidemesh` operator CLI. Parsing happens in two stages: clap turns arguments into
//! raw flags ([`Cli`]), then each command validates them into settings before acting.
//! One file per command.

mod audit;
mod cohort;
mod dataset;
mod federation;
mod ingest;
mod init;
mod lims;
mod policy;
mod query;
mod refer;
mod replicas;
mod running;
mod scrub;
mod serve;
mod share;
mod slides;
mod verify;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::datadir::DataDir;

/// slidemesh: share digital pathology slides between hospital trusts, peer to peer.
#[derive(Debug, Parser)]
#[command(name = "slidemesh", version, about, long_about = None)]
pub struct Cli {
    /// The node's data directory [default: $XDG_DATA_HOME/slidemesh or ~/.local/share/slidemesh]
    #[arg(long, global = true, env = "SLIDEMESH_DATA", value_name = "DIR")]
    data: Option<PathBuf>,

    /// Log filter, e.g. `info` or `slidemesh_node=debug` (also RUST_LOG)
    #[arg(long, global = true, value_name = "FILTER")]
    log: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a node's data directory: identity key, store, commented config.
    Init(init::InitArgs),
    /// Ingest DICOM whole-slide image files and folders into the node.
    Ingest(ingest::IngestArgs),
    /// Run the node: HTTP API and web UI.
    Serve(serve::ServeArgs),
    /// List the slides this node holds.
    Slides(slides::SlidesArgs),
    /// A research query: this node's own slides as it answers members, or with --network
    /// every member's (partly built: no complementary suppression)
    Query(query::QueryArgs),
    /// Research projects this trust approved for member trusts (what their cohorts are
    /// answered on)
    Project(cohort::ProjectArgs),
    /// An approved project's cohort from the other members: build, list, fetch into a
    /// dataset folder (this trust's own slides are not part of it)
    Cohort(cohort::CohortArgs),
    /// Record what the LIMS says of cases (diagnoses, grade, specimen, consent, opt-out)
    AnnotateLims(lims::LimsArgs),
    /// The scrub: originals and cached tiles re-verified against their ids; `--now` runs a
    /// pass at once (the running node also repairs corrupt tiles from other copies).
    Scrub(scrub::ScrubArgs),
    /// Re-read every tile from the original files and check it against its id.
    Verify(verify::VerifyArgs),
    /// The federation roster: member entries, proposals, co-signing, publishing.
    Federation(federation::FederationArgs),
    /// Let another member trust view one of this node's slides, or hold a replica of it
    /// (signed grant).
    Share(share::ShareArgs),
    /// Replicas held here for other trusts and named for this trust's slides (progress,
    /// bytes, the age of the owner's rules).
    Replicas(replicas::ReplicasArgs),
    /// Withdraw a grant; effective at once at this node.
    Revoke(share::RevokeArgs),
    /// List grants issued and received.
    Grants(share::GrantsArgs),
    /// Refer slides to another trust for an opinion (signed referral and its grants).
    Refer(refer::ReferArgs),
    /// Referrals sent and received: list, show, answer, close, withdraw.
    Referrals(refer::ReferralsArgs),
    /// Offer a case to the co-operative's shared reporting queue (any member may claim it).
    Offer(refer::OfferArgs),
    /// The trust's consent policy (cedar): check, show, test a request against it.
    Policy(policy::PolicyArgs),
    /// Show or set a slide's recorded consent (DUO codes, national data opt-out, end date).
    Consent(policy::ConsentArgs),
    /// The audit trail: show, verify (Merkle log, signed checkpoints), export (FHIR).
    Audit(audit::AuditArgs),
}

impl Cli {
    fn data_dir(&self) -> DataDir {
        DataDir::new(self.data.clone().unwrap_or_else(DataDir::default_root))
    }
}

/// Parses the command line and runs the command.
pub fn run() -> Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log.as_deref(), matches!(cli.command, Command::Serve(_)));
    let data = cli.data_dir();
    match cli.command {
        Command::Init(args) => init::run(&data, args),
        Command::Ingest(args) => ingest::run(data, args),
        Command::Serve(args) => serve::run(data, args),
        Command::Slides(args) => slides::run(data, args),
        Command::Query(args) => query::run(data, args),
        Command::AnnotateLims(args) => lims::run(data, args),
        Command::Project(args) => cohort::project(data, args),
        Command::Cohort(args) => cohort::cohort(data, args),
        Command::Verify(args) => verify::run(data, args),
        Command::Scrub(args) => scrub::run(data, args),
        Command::Federation(args) => federation::run(data, args),
        Command::Share(args) => share::share(data, args),
        Command::Replicas(args) => replicas::run(data, args),
        Command::Revoke(args) => share::revoke(data, args),
        Command::Grants(args) => share::grants(data, args),
        Command::Refer(args) => refer::refer(data, args),
        Command::Referrals(args) => refer::referrals(data, args),
        Command::Offer(args) => refer::offer(data, args),
        Command::Policy(args) => policy::run(data, args),
        Command::Consent(args) => policy::consent(data, args),
        Command::Audit(args) => audit::run(data, args),
    }
}

/// Logs go to stderr so that `--json` output on stdout stays machine-readable. The server
/// logs at info by default; one-shot commands only warn.
fn init_logging(filter: Option<&str>, serving: bool) {
    let default = if serving { "info" } else { "warn" };
    let filter = filter
        .map(str::to_string)
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| default.to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal: log files (the testnet's, a service
        // manager's) get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
