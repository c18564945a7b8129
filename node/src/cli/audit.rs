//! `slidemesh audit show|verify|export|checkpoint`: the node's audit trail of consent
//! decisions (as owner) and accesses (as requester).

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;
use slidemesh_protocol::{SlideId, TrustCode};

use crate::audit::{AuditEntry, Side, export};
use crate::context::NodeContext;
use crate::datadir::DataDir;

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    which: Which,
}

#[derive(Debug, Subcommand)]
enum Which {
    /// List entries, newest last, optionally filtered.
    Show {
        #[command(flatten)]
        filter: Filter,
        #[arg(long)]
        json: bool,
    },
    /// Recompute the Merkle tree from the entries and check every signed checkpoint.
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// Print entries as a FHIR R4 Bundle of AuditEvent resources (for the trust's SIEM).
    Export {
        #[command(flatten)]
        filter: Filter,
    },
    /// Sign a checkpoint of the log now (the running node signs one every minute).
    Checkpoint,
}

#[derive(Debug, Args)]
struct Filter {
    /// Only entries with this peer trust (ODS code)
    #[arg(long, value_name = "ODS")]
    peer: Option<String>,
    /// Only entries about this slide
    #[arg(long)]
    slide: Option<String>,
    /// Only entries with this purpose
    #[arg(long)]
    purpose: Option<String>,
    /// Only entries naming this person: `RAE/jsmith` (account at a trust), or `jsmith` at
    /// any trust; any role
    #[arg(long)]
    user: Option<String>,
    /// Only entries since this time: a duration ago (24h, 7d) or a date (2026-11-01)
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
}

impl Filter {
    fn apply(
        &self,
        node_trust: &TrustCode,
        entries: Vec<(u64, AuditEntry)>,
    ) -> Result<Vec<(u64, AuditEntry)>> {
        let person = self.user.as_deref().map(|u| match u.split_once('/') {
            Some((trust, account)) => (Some(trust), account),
            None => (None, u),
        });
        // Entries name a person as "account (role)"; their trust is the requester: the peer
        // when this node served or was told of a peer's referral step, this node's otherwise.
        let names = |e: &AuditEntry, (trust, account): (Option<&str>, &str)| {
            let their_trust = match e.side {
                Side::Served | Side::ReferralNotice => e.peer.as_str(),
                Side::Received | Side::Gateway | Side::ReferralStep => node_trust.as_str(),
            };
            e.user
                .as_deref()
                .is_some_and(|named| named.split(" (").next() == Some(account))
                && trust.is_none_or(|t| t.eq_ignore_ascii_case(their_trust))
        };
        let slide: Option<SlideId> = match &self.slide {
            Some(s) => Some(
                s.parse()
                    .map_err(|e| anyhow::anyhow!("invalid slide id {s:?}: {e}"))?,
            ),
            None => None,
        };
        let now = crate::store::now_unix();
        let since = match &self.since {
            Some(t) => match humantime::parse_duration(t) {
                Ok(d) => Some(now.saturating_sub(d.as_secs())),
                Err(_) => Some(
                    crate::ingest::consent::parse_date(t)
                        .map_err(anyhow::Error::msg)?
                        .saturating_sub(86_399),
                ),
            },
            None => None,
        };
        Ok(entries
            .into_iter()
            .filter(|(_, e)| {
                self.peer.as_deref().is_none_or(|p| e.peer.as_str() == p)
                    && slide.is_none_or(|s| e.slide == s)
                    && self.purpose.as_deref().is_none_or(|p| e.purpose == p)
                    && person.is_none_or(|p| names(e, p))
                    && since.is_none_or(|t| e.time >= t)
            })
            .collect())
    }
}

pub fn run(data: DataDir, args: AuditArgs) -> Result<()> {
    let node = NodeContext::open(data)?;
    match args.which {
        Which::Show { filter, json } => {
            let entries = filter.apply(&node.config.node.trust, node.store.audit_entries()?)?;
            for (seq, e) in &entries {
                if json {
                    // A received access shows the server's receipt kept with it.
                    let receipt = node
                        .store
                        .audit_receipt(*seq)?
                        .map(|signed| crate::audit::receipt_json(&signed));
                    println!(
                        "{}",
                        json!({
                            "seq": seq,
                            "leaf": hex::encode(e.leaf()),
                            "entry": e,
                            "receipt": receipt,
                        })
                    );
                } else {
                    let time = humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(e.time),
                    );
                    println!(
                        "{seq:>6} {time} {:?} {}{} {} {} {} {} {} [{}]",
                        e.side,
                        e.peer,
                        e.user
                            .as_deref()
                            .map(|u| format!(" {u}"))
                            .unwrap_or_default(),
                        e.purpose,
                        e.action,
                        e.slide,
                        e.what,
                        if e.allowed { "ALLOW" } else { "DENY" },
                        e.rules.join(", ")
                    );
                }
            }
            Ok(())
        }
        Which::Verify { json } => {
            let v = node.store.verify_audit(&node.key.public())?;
            if json {
                println!("{}", serde_json::to_string(&v)?);
            } else {
                println!(
                    "{} entries, {} signed checkpoints ({} co-signatures)",
                    v.entries, v.checkpoints, v.cosignatures
                );
                for p in &v.problems {
                    println!("PROBLEM: {p}");
                }
            }
            if !v.problems.is_empty() {
                bail!(
                    "the audit log does not verify ({} problems)",
                    v.problems.len()
                );
            }
            if !json {
                println!("ok: every checkpoint matches the entries it covers");
            }
            Ok(())
        }
        Which::Export { filter } => {
            let entries = filter.apply(&node.config.node.trust, node.store.audit_entries()?)?;
            let bundle = export::fhir_bundle(node.config.node.trust.as_str(), &entries);
            println!("{}", serde_json::to_string_pretty(&bundle)?);
            Ok(())
        }
        Which::Checkpoint => {
            match node
                .store
                .audit_checkpoint(&node.config.node.trust, &node.key)?
            {
                Some(signed) => {
                    let c = signed.verify()?;
                    println!(
                        "checkpoint of {} entries, root {}",
                        c.size,
                        hex::encode(c.root)
                    );
                }
                None => println!("nothing new since the last checkpoint"),
            }
            Ok(())
        }
    }
}
