//! `slidemesh share`, `revoke` and `grants`: consent to another trust viewing a slide.
//!
//! The grant is signed with this node's key and committed together with an outbox entry;
//! the running node delivers it to the grantee's node (retrying while that node is down).
//! A revocation is effective here the moment it commits: the serving node reads the
//! revocation table on every manifest and tile batch request. It is signed with this
//! node's key, which must be the trust's key on the roster: other members count a
//! revocation only when the grant's issuer signed it.

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;
use slidemesh_protocol::wire::ControlRequest;
use slidemesh_protocol::{
    Action, Grant, GrantId, Purpose, Revocation, SignedGrant, SignedRevocation, SlideId, TrustCode,
};

use crate::context::NodeContext;
use crate::datadir::DataDir;
use crate::store::federation::{OutboxItem, StoredGrant};
use crate::store::now_unix;

#[derive(Debug, Args)]
pub struct ShareArgs {
    /// The slide id (see `slidemesh slides`)
    slide: String,
    /// The ODS code of the trust to share with
    #[arg(long = "with", value_name = "ODS")]
    with: String,
    /// direct-care, second-opinion, mdt, research, education or audit-qa
    #[arg(long)]
    purpose: String,
    /// When the grant ends: a duration from now (7d, 12h) or a date/time (2026-12-31,
    /// 2026-12-31T17:00:00Z)
    #[arg(long, value_name = "TIME")]
    until: String,
    /// Free text kept with the grant: a referral number for care, the ethics approval or
    /// study reference for research. For research and education it also names the project
    /// the slide's pseudonyms are made for: grants with the same reference see the same
    /// patient under the same pseudonym; a grant without one is a project of its own
    #[arg(long)]
    reference: Option<String>,
    /// Name the trust a replica of the slide (a `replicate` grant, for a care purpose):
    /// its node fetches and keeps the whole slide with this trust's signed rules, and serves
    /// the slide's other grantees while this node cannot. Its own people see nothing under
    /// it; they need a grant of their own
    #[arg(long)]
    replicate: bool,
    /// Print the grant as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The grant id printed by `share` or listed by `grants`
    grant: String,
}

#[derive(Debug, Args)]
pub struct GrantsArgs {
    #[arg(long)]
    json: bool,
}

/// Parses `--until` into seconds since the epoch.
pub(super) fn parse_until(text: &str, now: u64) -> Result<u64> {
    if let Ok(d) = humantime::parse_duration(text) {
        return Ok(now + d.as_secs());
    }
    crate::ingest::consent::parse_date(text)
        .map_err(|e| anyhow::anyhow!("{e}, or a duration (7d, 12h)"))
}

pub fn share(data: DataDir, args: ShareArgs) -> Result<()> {
    let node = NodeContext::open(data)?;
    let slide: SlideId = args
        .slide
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid slide id {:?}: {e}", args.slide))?;
    let grantee: TrustCode = args.with.parse()?;
    let purpose: Purpose = args.purpose.parse().map_err(anyhow::Error::msg)?;
    let now = now_unix();
    let expires_at = parse_until(&args.until, now)?;
    if expires_at <= now {
        bail!("--until {} is in the past", args.until);
    }
    let owner = node.config.node.trust.clone();
    if node.store.slide(&slide)?.is_none() {
        bail!("slide {slide} is not held by this node (only an owner shares its slides)");
    }
    let (roster, _) = node
        .store
        .current_roster()?
        .context("this node has no roster; join a federation first")?;
    if roster.member(&grantee).is_none() {
        bail!("{grantee} is not a member of {}", roster.federation);
    }
    let action = if args.replicate {
        if !matches!(
            purpose,
            Purpose::DirectCare | Purpose::SecondOpinion | Purpose::Mdt
        ) {
            bail!(
                "a replica holds the identified slide for care: --replicate takes --purpose \
                 direct-care, second-opinion or mdt, not {purpose}"
            );
        }
        Action::Replicate
    } else {
        Action::View
    };
    let grant = Grant {
        slide,
        owner: owner.clone(),
        grantee: grantee.clone(),
        action,
        purpose,
        reference: args.reference,
        issued_at: now,
        expires_at,
    };
    let signed = SignedGrant::sign(&grant, &node.key)?;
    let id = signed.id();
    node.store.put_grant(
        &StoredGrant {
            signed: signed.clone(),
            grant: grant.clone(),
            issued_here: true,
            stored_at: now,
        },
        Some(OutboxItem {
            to: grantee.clone(),
            message: ControlRequest::DeliverGrant(signed),
            created_at: now,
        }),
    )?;
    if args.json {
        println!("{}", json!({ "grant_id": id, "grant": grant }));
    } else {
        println!(
            "granted {grantee} {} of {slide} for {purpose} until {}; grant {id}",
            action.as_str(),
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(expires_at)
            )
        );
        println!("the running node delivers it to {grantee}'s node");
    }
    Ok(())
}

pub fn revoke(data: DataDir, args: RevokeArgs) -> Result<()> {
    let node = NodeContext::open(data)?;
    let id: GrantId = args
        .grant
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid grant id {:?}: {e}", args.grant))?;
    let stored = node
        .store
        .grant(&id)?
        .with_context(|| format!("no grant {id} here"))?;
    revoke_issued(&node, &stored)?;
    println!(
        "revoked grant {id}: {} can no longer {} {} (effective now at this node)",
        stored.grant.grantee,
        stored.grant.action.as_str(),
        stored.grant.slide
    );
    Ok(())
}

/// Revokes a grant this node issued: signed with its key (which must be the issuer's key on
/// the roster, or other members would ignore it), recorded here at once, and queued for the
/// grantee's node.
pub(super) fn revoke_issued(node: &NodeContext, stored: &StoredGrant) -> Result<()> {
    let id = stored.signed.id();
    if !stored.issued_here {
        bail!(
            "grant {id} was issued by {}; only its owner can revoke it",
            stored.grant.owner
        );
    }
    // Others count a revocation only when the grant's issuer signs it with its roster key.
    if let Some((roster, _)) = node.store.current_roster()?
        && roster.member(&stored.grant.owner).map(|m| m.node) != Some(node.key.public())
    {
        bail!(
            "this node's key is not {}'s key on roster version {}, so other members would \
             ignore a revocation it signs; revoke from the node the roster lists",
            stored.grant.owner,
            roster.version
        );
    }
    let now = now_unix();
    let signed = SignedRevocation::sign(
        &Revocation {
            grant: id,
            owner: stored.grant.owner.clone(),
            revoked_at: now,
        },
        &node.key,
    );
    node.store.put_revocation(
        &id,
        &signed.clone(),
        Some(OutboxItem {
            to: stored.grant.grantee.clone(),
            message: ControlRequest::DeliverRevocation(signed),
            created_at: now,
        }),
    )?;
    Ok(())
}

pub fn grants(data: DataDir, args: GrantsArgs) -> Result<()> {
    let node = NodeContext::open(data)?;
    let now = now_unix();
    let roster = node.store.current_roster()?.map(|(r, _)| r);
    let mut rows = Vec::new();
    for g in node.store.grants()? {
        let id = g.signed.id();
        // Only the issuer's revocation counts (one signed by another member is kept, and
        // ignored).
        let revocations = node.store.revocations(&id)?;
        let revoked = roster.as_ref().is_some_and(|roster| {
            crate::access::grant::revoked_by_issuer(&id, &g.grant, &revocations, roster)
        });
        let state = if revoked {
            "revoked"
        } else if g.grant.expires_at <= now {
            "expired"
        } else {
            "active"
        };
        rows.push(json!({
            "grant_id": id,
            "direction": if g.issued_here { "issued" } else { "received" },
            "state": state,
            "grant": g.grant,
        }));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for r in rows {
            println!(
                "{} {} {} {} -> {} {} {} {}",
                r["grant_id"].as_str().unwrap_or(""),
                r["direction"].as_str().unwrap_or(""),
                r["state"].as_str().unwrap_or(""),
                r["grant"]["owner"].as_str().unwrap_or(""),
                r["grant"]["grantee"].as_str().unwrap_or(""),
                r["grant"]["action"].as_str().unwrap_or(""),
                r["grant"]["slide"].as_str().unwrap_or(""),
                r["grant"]["purpose"].as_str().unwrap_or(""),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_accepts_durations_and_dates() {
        assert_eq!(parse_until("7d", 1000).unwrap(), 1000 + 7 * 86400);
        assert_eq!(parse_until("1970-01-02", 0).unwrap(), 86400 + 86399);
        assert!(parse_until("next tuesday", 0).is_err());
    }
}
