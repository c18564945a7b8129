//! Background loops of a serving node:
//! - roster: picks up versions the CLI published into the store, pulls newer versions from
//!   members, and keeps the network's member gate in step; announces what it adopted.
//! - outbox: delivers grants and revocations to their grantees until acknowledged, and
//!   announces revocations on gossipsub so they also travel around a broken link.
//! - shared slides: fetches manifests for received grants that have none yet, and
//!   withdraws those whose grant expired.

use std::sync::Arc;
use std::time::Duration;

use slidemesh_protocol::wire::{Announcement, ControlRequest, ControlResponse};
use slidemesh_protocol::{RosterError, SignedRoster};
use tracing::{debug, info, warn};

use super::Federation;

/// How often the store is checked for work the CLI left (rosters, outbox).
const POLL_EVERY: Duration = Duration::from_millis(500);
/// How often members are asked for newer roster versions.
const ROSTER_PULL_EVERY: Duration = Duration::from_secs(10);

/// Runs the loops until the runtime stops.
pub async fn run(fed: Arc<Federation>) {
    let mut poll = tokio::time::interval(POLL_EVERY);
    let mut pull = tokio::time::interval(ROSTER_PULL_EVERY);
    let mut checkpoint = tokio::time::interval(checkpoint_every());
    checkpoint.tick().await;
    let mut announced = 0u64;
    let mut gossiped = std::collections::HashMap::new();
    if let Some(roster) = fed.roster() {
        apply_members(&fed, &roster).await;
    }
    provide_local_slides(&fed).await;
    loop {
        tokio::select! {
            _ = poll.tick() => {
                adopt_stored_roster(&fed, &mut announced).await;
                deliver_outbox(&fed, &mut gossiped).await;
                review_received_grants(&fed).await;
            }
            _ = pull.tick() => pull_rosters(&fed).await,
            _ = checkpoint.tick() => checkpoint_and_cosign(&fed).await,
        }
    }
}

/// How often the audit log is checkpointed and co-signed: a minute, or
/// `SLIDEMESH_AUDIT_CHECKPOINT_SECS` (tests and the testnet use a shorter period).
fn checkpoint_every() -> Duration {
    std::env::var("SLIDEMESH_AUDIT_CHECKPOINT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(60))
}

/// Signs a checkpoint when the log grew, then asks every other member to co-sign the
/// newest one, proving it extends the last one each co-signed.
async fn checkpoint_and_cosign(fed: &Arc<Federation>) {
    let f = fed.clone();
    let signed = tokio::task::spawn_blocking(move || {
        f.store.audit_checkpoint(&f.trust, &f.key)?;
        f.store.audit_checkpoints()
    })
    .await;
    let checkpoints = match signed {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return warn!(error = %e, "cannot checkpoint the audit log"),
        Err(_) => return,
    };
    let Some(latest) = checkpoints.last().cloned() else {
        return;
    };
    let Ok(latest_checkpoint) = latest.verify() else {
        return;
    };
    let (Some(roster), Some(network)) = (fed.roster(), fed.network().cloned()) else {
        return;
    };
    for member in roster.members.iter().filter(|m| m.trust != fed.trust) {
        if latest
            .cosignatures
            .iter()
            .any(|(t, _, _)| *t == member.trust)
        {
            continue;
        }
        let Some(peer) = fed.peer_of(&member.trust) else {
            continue;
        };
        // The last of our checkpoints this member co-signed, to prove we extend it.
        let mut since = checkpoints
            .iter()
            .rev()
            .find(|c| c.cosignatures.iter().any(|(t, _, _)| *t == member.trust))
            .and_then(|c| c.verify().ok())
            .map(|c| c.size)
            .unwrap_or(0);
        for _ in 0..2 {
            let proof = match fed.store.audit_leaves(latest_checkpoint.size) {
                Ok(leaves) => slidemesh_protocol::audit::consistency_proof(since as usize, &leaves),
                Err(e) => return warn!(error = %e, "cannot read audit leaves"),
            };
            let request = ControlRequest::Cosign {
                checkpoint: latest.clone(),
                since,
                proof,
            };
            match network.request(peer, request).await {
                Ok(ControlResponse::Cosignature(signature)) => {
                    let valid = member
                        .node
                        .verify(
                            slidemesh_protocol::audit::CHECKPOINT_DOMAIN,
                            &latest.bytes,
                            &signature,
                        )
                        .is_ok();
                    if valid {
                        let (store, trust, key, size) = (
                            fed.store.clone(),
                            member.trust.clone(),
                            member.node,
                            latest_checkpoint.size,
                        );
                        let _ = tokio::task::spawn_blocking(move || {
                            store.add_cosignature(size, trust, key, signature)
                        })
                        .await;
                        info!(trust = %member.trust, size = latest_checkpoint.size, "audit checkpoint co-signed");
                    } else {
                        warn!(trust = %member.trust, "co-signature does not verify");
                    }
                    break;
                }
                // The member co-signed another size than we thought (e.g. our record of its
                // co-signature was lost): prove from that one, once.
                Ok(ControlResponse::Inconsistent {
                    since: theirs,
                    reason,
                }) if theirs != since && theirs <= latest_checkpoint.size => {
                    debug!(trust = %member.trust, reason, "retrying co-signing from the member's last");
                    since = theirs;
                }
                Ok(other) => {
                    warn!(trust = %member.trust, answer = ?other, "member did not co-sign the audit checkpoint");
                    break;
                }
                Err(e) => {
                    debug!(trust = %member.trust, error = %e, "cannot reach member for co-signing");
                    break;
                }
            }
        }
    }
}

async fn apply_members(fed: &Federation, roster: &slidemesh_protocol::Roster) {
    if let Some(network) = fed.network() {
        let _ = network.set_members(fed.member_peers(roster)).await;
    }
}

async fn provide_local_slides(fed: &Federation) {
    let Some(network) = fed.network() else { return };
    let store = fed.store.clone();
    let Ok(Ok(slides)) = tokio::task::spawn_blocking(move || store.summaries()).await else {
        return;
    };
    for (id, _) in slides {
        let _ = network.provide(id).await;
    }
}

/// Adopts a roster version newer than the one in force if the store has it (published by
/// the CLI or accepted from a peer), and announces it once.
async fn adopt_stored_roster(fed: &Arc<Federation>, announced: &mut u64) {
    let store = fed.store.clone();
    let Ok(Ok(Some((roster, signed)))) =
        tokio::task::spawn_blocking(move || store.current_roster()).await
    else {
        return;
    };
    let current = fed.roster().map(|r| r.version).unwrap_or(0);
    if roster.version > current {
        info!(
            version = roster.version,
            members = roster.members.len(),
            "roster adopted"
        );
        fed.set_roster(roster.clone());
        apply_members(fed, &roster).await;
    }
    if roster.version > *announced {
        if let Some(network) = fed.network() {
            let _ = network.publish(Announcement::Roster(signed)).await;
        }
        *announced = roster.version;
    }
}

/// Verifies a roster version offered by a peer against the one in force and stores it.
/// Versions are accepted one at a time, each signed by a quorum of its predecessor.
pub async fn offer_roster(fed: &Arc<Federation>, signed: SignedRoster) -> Result<(), RosterError> {
    let current = fed.roster();
    let roster = match &current {
        Some(current) if signed.roster()?.version <= current.version => return Ok(()),
        Some(current) => signed.verify_successor(current)?,
        // A node that joined no federation adopts nothing from the network: the operator
        // publishes the genesis it was given.
        None => return Ok(()),
    };
    let store = fed.store.clone();
    let version = roster.version;
    let stored = signed.clone();
    match tokio::task::spawn_blocking(move || store.put_roster(version, &stored)).await {
        Ok(Ok(_)) => {
            info!(version, "roster version accepted from a peer");
            fed.set_roster(roster.clone());
            apply_members(fed, &roster).await;
        }
        Ok(Err(e)) => warn!(error = %e, "cannot store roster"),
        Err(e) => warn!(error = %e, "cannot store roster"),
    }
    Ok(())
}

/// Asks members in turn for roster versions newer than ours, until one has some.
async fn pull_rosters(fed: &Arc<Federation>) {
    let (Some(network), Some(roster)) = (fed.network(), fed.roster()) else {
        return;
    };
    for (peer, _) in fed.member_peers(&roster) {
        if peer == network.local_peer_id() {
            continue;
        }
        let request = ControlRequest::RosterAfter {
            version: roster.version,
        };
        // A member that has nothing newer may simply not have it yet either: ask the next.
        if let Ok(ControlResponse::Rosters(newer)) = network.request(peer, request).await {
            let mut adopted = false;
            for signed in newer {
                match offer_roster(fed, signed).await {
                    Ok(()) => adopted = true,
                    Err(e) => {
                        warn!(%peer, error = %e, "roster version from peer refused");
                        break;
                    }
                }
            }
            // Nothing adopted: ask the next member (this one may be behind, or lying).
            if adopted {
                return;
            }
        }
    }
}

/// How often a revocation still waiting for its grantee's acknowledgement is announced on
/// gossipsub again: a grantee that was outside every mesh (cut off, restarting) when it was
/// first announced gets it from whichever member it reaches first once it is back.
const REANNOUNCE_EVERY: Duration = Duration::from_secs(15);

async fn deliver_outbox(
    fed: &Arc<Federation>,
    gossiped: &mut std::collections::HashMap<slidemesh_protocol::GrantId, std::time::Instant>,
) {
    let Some(network) = fed.network() else { return };
    let store = fed.store.clone();
    let Ok(Ok(items)) = tokio::task::spawn_blocking(move || store.outbox()).await else {
        return;
    };
    let mut outstanding = std::collections::HashSet::new();
    for (seq, item) in items {
        // A revocation is also announced to every member, at once and again every
        // REANNOUNCE_EVERY, so it reaches the grantee by way of others when the direct path
        // is down; the outbox entry stays until the grantee itself acknowledges it.
        // (Keyed by the revoked grant: outbox sequence numbers are reused once delivered.)
        if let ControlRequest::DeliverRevocation(signed) = &item.message
            && let Ok(revocation) = signed.verify()
        {
            outstanding.insert(revocation.grant);
            let due = gossiped
                .get(&revocation.grant)
                .is_none_or(|last| last.elapsed() >= REANNOUNCE_EVERY);
            if due {
                gossiped.insert(revocation.grant, std::time::Instant::now());
                let _ = network
                    .publish(Announcement::Revocation(signed.clone()))
                    .await;
            }
        }
        let Some(peer) = fed.peer_of(&item.to) else {
            debug!(to = %item.to, "outbox entry for a trust not on the roster; keeping it");
            continue;
        };
        match network.request(peer, item.message.clone()).await {
            Ok(ControlResponse::Accepted) => {
                info!(to = %item.to, "delivered");
                let store = fed.store.clone();
                let _ = tokio::task::spawn_blocking(move || store.outbox_done(seq)).await;
            }
            Ok(ControlResponse::Denied { reason }) => {
                // The grantee will never accept it; keeping it would retry forever.
                warn!(to = %item.to, reason, "grantee refused the message; dropping it");
                let store = fed.store.clone();
                let _ = tokio::task::spawn_blocking(move || store.outbox_done(seq)).await;
            }
            Ok(other) => debug!(to = %item.to, answer = ?other, "not delivered yet"),
            Err(e) => debug!(to = %item.to, error = %e, "not delivered yet"),
        }
    }
    gossiped.retain(|grant, _| outstanding.contains(grant));
}

/// How often a shared slide's manifest and the owner's consent statement are fetched again,
/// so a copy serving others follows the owner's policy and consent edits
/// (`SLIDEMESH_CONSENT_REFRESH_SECS`; revocations do not wait for this, they are pushed).
fn consent_refresh_secs() -> u64 {
    std::env::var("SLIDEMESH_CONSENT_REFRESH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600)
}

/// Received grants: withdraws the slides of expired ones, fetches the manifests not here
/// yet (the owner was down when the grant came), and refreshes those older than
/// [`consent_refresh_secs`]. While the owner is unreachable the last statement stays in force.
async fn review_received_grants(fed: &Arc<Federation>) {
    let store = fed.store.clone();
    let Ok(Ok(grants)) = tokio::task::spawn_blocking(move || store.grants()).await else {
        return;
    };
    fed.withdraw_expired(&grants).await;
    let now = crate::store::now_unix();
    for stored in grants {
        if stored.issued_here || stored.grant.expires_at <= now {
            continue;
        }
        let slide = stored.grant.slide;
        let store = fed.store.clone();
        let id = stored.signed.id();
        let fresh_after = now.saturating_sub(consent_refresh_secs());
        // None: nothing to do; Some(refresh): fetch, as a refresh when a copy is held.
        let wanted = tokio::task::spawn_blocking(move || {
            if store.is_revoked(&id)? {
                return Ok::<_, crate::store::StoreError>(None);
            }
            Ok(match store.remote_slide(&slide)? {
                Some(r) if r.stored_at > fresh_after => None,
                Some(_) => Some(true),
                None => Some(false),
            })
        })
        .await;
        if let Ok(Ok(Some(refresh))) = wanted
            && let Err(e) = fed.fetch_manifest(&stored.signed, refresh).await
        {
            debug!(%slide, error = %e, "manifest still unavailable");
        }
    }
}
