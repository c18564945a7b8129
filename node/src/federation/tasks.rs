//! Background loops of a serving node:
//! - roster: picks up versions the CLI published into the store, pulls newer versions from
//!   members, and keeps the network's member gate in step; announces what it adopted.
//! - outbox: delivers grants, revocations and referral messages to their trusts until
//!   acknowledged, each trust's in the order queued, at once when the node queued them
//!   itself (`Holdings::outbox_queued`); announces revocations on gossipsub so they also
//!   travel around a broken link.
//! - referrals: marks those whose end has come expired; announces this trust's directory.
//! - shared slides: fetches manifests for received grants that have none yet, and
//!   withdraws those whose grant expired.
//! - replicas: [`super::replicas::run`], its own loop.

use std::sync::Arc;
use std::time::Duration;

use slidemesh_protocol::wire::{Announcement, ControlRequest, ControlResponse};
use slidemesh_protocol::{RosterError, SignedRoster};
use tracing::{debug, info, warn};

use tokio::sync::mpsc;

use super::{Federation, Followup};
use crate::store::federation::CopyKind;

/// How often the store is checked for work the CLI left (rosters, outbox).
const POLL_EVERY: Duration = Duration::from_millis(500);
/// How often this trust's referral directory, open offers and their outcomes are announced
/// (a member that was away gets them within this).
const DIRECTORY_ANNOUNCE_EVERY: Duration = Duration::from_secs(15);
/// How often referrals are checked for their end.
const REFERRAL_EXPIRY_EVERY: Duration = Duration::from_secs(5);
/// How often members are asked for newer roster versions.
const ROSTER_PULL_EVERY: Duration = Duration::from_secs(10);

/// The periods of the loops that config sets (`[network]` in config.toml).
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// How often a shared slide's manifest and its owner's consent statement are fetched
    /// again, so a copy follows the owner's policy and consent edits (revocations do not
    /// wait for this, they are pushed).
    pub consent_refresh: Duration,
    /// How often the audit log is checkpointed and the members asked to co-sign.
    pub audit_checkpoint: Duration,
    /// How the replicas held here are filled.
    pub replicas: super::replicas::ReplicaSettings,
}

/// Runs the loops until the runtime stops, taking the work peers' answers left
/// ([`Followup`]) as it comes.
pub async fn run(
    fed: Arc<Federation>,
    timings: Timings,
    mut followups: mpsc::UnboundedReceiver<Followup>,
) {
    let mut poll = tokio::time::interval(POLL_EVERY);
    let mut pull = tokio::time::interval(ROSTER_PULL_EVERY);
    let mut checkpoint = tokio::time::interval(timings.audit_checkpoint);
    let mut expiry = tokio::time::interval(REFERRAL_EXPIRY_EVERY);
    let mut directory = tokio::time::interval(DIRECTORY_ANNOUNCE_EVERY);
    checkpoint.tick().await;
    let mut announced = 0u64;
    let mut gossiped = std::collections::HashMap::new();
    let mut manifest_retries = ManifestRetries::default();
    if fed.holdings.membership.roster().is_some() {
        apply_members(&fed).await;
    }
    provide_local_slides(&fed).await;
    // Its own task (a pass may run for long), stopped with these loops.
    let _replicas = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(super::replicas::run(
        fed.clone(),
        timings.replicas,
    )));
    loop {
        tokio::select! {
            _ = poll.tick() => {
                adopt_stored_roster(&fed, &mut announced).await;
                deliver_outbox(&fed, &mut gossiped).await;
                review_received_grants(&fed, timings.consent_refresh, &mut manifest_retries).await;
            }
            _ = fed.holdings.outbox_queued.notified() => deliver_outbox(&fed, &mut gossiped).await,
            _ = expiry.tick() => expire_referrals(&fed).await,
            _ = directory.tick() => announce_referral_statements(&fed).await,
            _ = pull.tick() => pull_rosters(&fed).await,
            Some(followup) = followups.recv() => follow_up(&fed, followup).await,
            _ = checkpoint.tick() => checkpoint_and_cosign(&fed).await,
        }
    }
}

/// Does what an answer to a peer left for the fetching side.
async fn follow_up(fed: &Arc<Federation>, followup: Followup) {
    match followup {
        Followup::FetchManifest(signed) => {
            let this = fed.clone();
            fed.spawn(async move {
                if let Err(e) = this.fetch_manifest(&signed, false).await {
                    warn!(grant = %signed.id(), error = %e, "cannot fetch shared slide's manifest yet");
                }
            });
        }
        Followup::OfferRoster { from, signed } => {
            if let Err(e) = offer_roster(fed, signed).await {
                warn!(peer = %from, error = %e, "announced roster refused");
            }
        }
        Followup::Announce(announcement) => {
            let _ = fed.network.publish(announcement).await;
        }
    }
}

/// Signs a checkpoint when the log grew, then asks every other member to co-sign the
/// newest one, proving it extends the last one each co-signed.
async fn checkpoint_and_cosign(fed: &Arc<Federation>) {
    let f = fed.clone();
    let signed = tokio::task::spawn_blocking(move || {
        f.holdings
            .store
            .audit_checkpoint(&f.holdings.trust, &f.holdings.key)?;
        f.holdings.store.audit_checkpoints()
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
    let Some(roster) = fed.holdings.membership.roster() else {
        return;
    };
    let network = &fed.network;
    for member in roster
        .members
        .iter()
        .filter(|m| m.trust != fed.holdings.trust)
    {
        if latest
            .cosignatures
            .iter()
            .any(|(t, _, _)| *t == member.trust)
        {
            continue;
        }
        let Some(peer) = fed.holdings.membership.peer_of(&member.trust) else {
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
            let proof = match fed.holdings.store.audit_leaves(latest_checkpoint.size) {
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
                            fed.holdings.store.clone(),
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

/// Keeps the network's member gate and dial table in step with the roster in force.
async fn apply_members(fed: &Federation) {
    let _ = fed
        .network
        .set_members(fed.holdings.membership.dial_table())
        .await;
}

async fn provide_local_slides(fed: &Federation) {
    let network = &fed.network;
    let store = fed.holdings.store.clone();
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
    let store = fed.holdings.store.clone();
    let Ok(Ok(Some((roster, signed)))) =
        tokio::task::spawn_blocking(move || store.current_roster()).await
    else {
        return;
    };
    let (version, members) = (roster.version, roster.members.len());
    if fed.holdings.membership.adopt(roster) {
        info!(version, members, "roster adopted");
        apply_members(fed).await;
    }
    if version > *announced {
        let _ = fed.network.publish(Announcement::Roster(signed)).await;
        *announced = version;
    }
}

/// Verifies a roster version offered by a peer against the one in force and stores it.
/// Versions are accepted one at a time, each signed by a quorum of its predecessor.
async fn offer_roster(fed: &Arc<Federation>, signed: SignedRoster) -> Result<(), RosterError> {
    let current = fed.holdings.membership.roster();
    let roster = match &current {
        Some(current) if signed.roster()?.version <= current.version => return Ok(()),
        Some(current) => signed.verify_successor(current)?,
        // A node that joined no federation adopts nothing from the network: the operator
        // publishes the genesis it was given.
        None => return Ok(()),
    };
    let store = fed.holdings.store.clone();
    let version = roster.version;
    let stored = signed.clone();
    match tokio::task::spawn_blocking(move || store.put_roster(version, &stored)).await {
        Ok(Ok(_)) => {
            if fed.holdings.membership.adopt(roster) {
                info!(version, "roster version accepted from a peer");
                apply_members(fed).await;
            }
        }
        Ok(Err(e)) => warn!(error = %e, "cannot store roster"),
        Err(e) => warn!(error = %e, "cannot store roster"),
    }
    Ok(())
}

/// Asks members in turn for roster versions newer than ours, until one has some.
async fn pull_rosters(fed: &Arc<Federation>) {
    let network = &fed.network;
    let Some(roster) = fed.holdings.membership.roster() else {
        return;
    };
    for (peer, _) in fed.holdings.membership.dial_table() {
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
    let network = &fed.network;
    let store = fed.holdings.store.clone();
    let Ok(Ok(items)) = tokio::task::spawn_blocking(move || store.outbox()).await else {
        return;
    };
    let mut outstanding = std::collections::HashSet::new();
    // Each trust's messages go in the order they were queued: once one is not delivered,
    // the rest for that trust wait for the next round (a referral must not arrive before
    // its grants, nor an answer's acknowledgement before the referral).
    let mut held_up = std::collections::HashSet::new();
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
        if held_up.contains(&item.to) {
            continue;
        }
        let Some(peer) = fed.holdings.membership.peer_of(&item.to) else {
            debug!(to = %item.to, "outbox entry for a trust not on the roster; keeping it");
            held_up.insert(item.to.clone());
            continue;
        };
        match network.request(peer, item.message.clone()).await {
            Ok(ControlResponse::Accepted) => {
                info!(to = %item.to, "delivered");
                let store = fed.holdings.store.clone();
                let _ = tokio::task::spawn_blocking(move || store.outbox_done(seq)).await;
            }
            Ok(ControlResponse::Denied { reason }) => {
                // The grantee will never accept it; keeping it would retry forever.
                warn!(to = %item.to, reason, "grantee refused the message; dropping it");
                let holdings = fed.holdings.clone();
                let refused_claim = match &item.message {
                    ControlRequest::ClaimOffer(signed) => signed.verify().ok().map(|c| c.offer),
                    _ => None,
                };
                let _ = tokio::task::spawn_blocking(move || {
                    // A refused claim is said on the offer, and this trust may claim again.
                    if let Some(offer) = refused_claim
                        && let Err(e) = holdings.referral_party().claim_refused(&offer, &reason)
                    {
                        warn!(%offer, error = %e, "cannot record a refused claim");
                    }
                    holdings.store.outbox_done(seq)
                })
                .await;
            }
            Ok(other) => {
                debug!(to = %item.to, answer = ?other, "not delivered yet");
                held_up.insert(item.to.clone());
            }
            Err(e) => {
                debug!(to = %item.to, error = %e, "not delivered yet");
                held_up.insert(item.to.clone());
            }
        }
    }
    gossiped.retain(|grant, _| outstanding.contains(grant));
}

/// Announces this trust's referral directory, its open offers and the outcomes of those
/// taken to every member; finishes offers taken but not yet referred (a crash between).
async fn announce_referral_statements(fed: &Arc<Federation>) {
    let holdings = fed.holdings.clone();
    let found = tokio::task::spawn_blocking(move || {
        let now = crate::store::now_unix();
        if let Some(roster) = holdings.membership.roster()
            && let Err(e) = holdings.referral_party().finish_taken(&roster, now)
        {
            warn!(error = %e, "cannot refer a taken case yet");
        }
        let own = holdings
            .store
            .directories()?
            .into_iter()
            .find(|(_, d)| d.trust == holdings.trust)
            .map(|(signed, _)| signed);
        let offers = holdings.store.offers()?;
        let (open, outcomes) =
            crate::referrals::queue::announcements(&offers, &holdings.trust, now);
        Ok::<_, crate::store::StoreError>((own, open, outcomes))
    })
    .await;
    let Ok(Ok((own, open, outcomes))) = found else {
        return;
    };
    let announcements = own
        .map(Announcement::Directory)
        .into_iter()
        .chain(open.into_iter().map(Announcement::Offer))
        .chain(outcomes.into_iter().map(Announcement::OfferOutcome));
    for announcement in announcements {
        let _ = fed.network.publish(announcement).await;
    }
}

/// Marks expired the referrals whose end has come.
async fn expire_referrals(fed: &Arc<Federation>) {
    let holdings = fed.holdings.clone();
    let done = tokio::task::spawn_blocking(move || {
        holdings
            .referral_party()
            .expire_due(crate::store::now_unix())
    })
    .await;
    match done {
        Ok(Ok(ids)) => {
            for id in ids {
                info!(referral = %id, "referral expired");
            }
        }
        Ok(Err(e)) => warn!(error = %e, "cannot mark expired referrals"),
        Err(_) => {}
    }
}

/// When each received grant's manifest may be asked for again, after a failure.
#[derive(Default)]
struct ManifestRetries(std::collections::HashMap<slidemesh_protocol::GrantId, Retry>);

/// One grant's back-off: not before `next`; `wait` is the last pause.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Retry {
    next: std::time::Instant,
    wait: Duration,
}

/// The first pause after the owner refused, and after it could not be reached.
const REFUSED_FIRST_WAIT: Duration = Duration::from_secs(30);
const UNREACHABLE_FIRST_WAIT: Duration = Duration::from_secs(1);
/// The longest pause after the owner could not be reached (a refusal's is the consent
/// refresh period: the owner is asked as often as its rules are refreshed, no more).
const UNREACHABLE_MAX_WAIT: Duration = Duration::from_secs(15);

/// The next pause after a failure: doubled from the last, between the first and the most
/// for its kind (a refusal waits longer: asking again soon gets the same answer, and each
/// refusal is an entry in the owner's log).
fn next_retry(
    now: std::time::Instant,
    last: Option<Retry>,
    refused: bool,
    refresh: Duration,
) -> Retry {
    let (first, most) = if refused {
        (REFUSED_FIRST_WAIT.min(refresh), refresh)
    } else {
        (UNREACHABLE_FIRST_WAIT, UNREACHABLE_MAX_WAIT)
    };
    let wait = last
        .map_or(first, |r| r.wait.saturating_mul(2))
        .clamp(first, most.max(first));
    Retry {
        next: now + wait,
        wait,
    }
}

/// Received grants: withdraws the slides of expired ones, fetches the manifests not here
/// yet (the owner was down when the grant came), and refreshes those older than
/// `refresh_every`. While the owner is unreachable the last statement stays in
/// force; a grant whose manifest could not be had is asked for again after a back-off
/// ([`next_retry`]).
async fn review_received_grants(
    fed: &Arc<Federation>,
    refresh_every: Duration,
    retries: &mut ManifestRetries,
) {
    let store = fed.holdings.store.clone();
    let Ok(Ok(grants)) = tokio::task::spawn_blocking(move || store.grants()).await else {
        return;
    };
    fed.withdraw_expired(&grants).await;
    let now = crate::store::now_unix();
    retries
        .0
        .retain(|id, _| grants.iter().any(|g| g.signed.id() == *id));
    for stored in grants {
        if stored.issued_here || stored.grant.expires_at <= now {
            continue;
        }
        let slide = stored.grant.slide;
        let id = stored.signed.id();
        if retries
            .0
            .get(&id)
            .is_some_and(|r| r.next > std::time::Instant::now())
        {
            continue;
        }
        let store = fed.holdings.store.clone();
        let fresh_after = now.saturating_sub(refresh_every.as_secs());
        let roster = fed.holdings.membership.roster();
        let grant = stored.grant.clone();
        // None: nothing to do; Some(refresh): fetch, as a refresh when a copy is held.
        let wanted = tokio::task::spawn_blocking(move || {
            let revocations = store.revocations(&id)?;
            let revoked = roster.as_ref().is_some_and(|roster| {
                crate::access::grant::revoked_by_issuer(&id, &grant, &revocations, roster)
            });
            if revoked {
                return Ok::<_, crate::store::StoreError>(None);
            }
            Ok(match store.copy(CopyKind::of(grant.action), &slide)? {
                Some(r) if r.stored_at > fresh_after => None,
                Some(_) => Some(true),
                None => Some(false),
            })
        })
        .await;
        if let Ok(Ok(Some(refresh))) = wanted {
            match fed.fetch_manifest(&stored.signed, refresh).await {
                Ok(()) => {
                    retries.0.remove(&id);
                }
                Err(e) => {
                    let refused = e.downcast_ref::<super::manifests::OwnerRefused>().is_some();
                    let retry = next_retry(
                        std::time::Instant::now(),
                        retries.0.get(&id).copied(),
                        refused,
                        refresh_every,
                    );
                    debug!(%slide, error = %e, retry_in = ?retry.wait, "manifest unavailable");
                    retries.0.insert(id, retry);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_back_off_to_the_refresh_period_and_outages_to_seconds() {
        let now = std::time::Instant::now();
        let refresh = Duration::from_secs(600);
        let mut last = None;
        let mut waits = Vec::new();
        for _ in 0..7 {
            let retry = next_retry(now, last, true, refresh);
            waits.push(retry.wait.as_secs());
            last = Some(retry);
        }
        assert_eq!(waits, vec![30, 60, 120, 240, 480, 600, 600]);
        // About six asks an hour at most once settled, not 7,200 (one per 500 ms poll).
        let mut last = None;
        let mut waits = Vec::new();
        for _ in 0..6 {
            let retry = next_retry(now, last, false, refresh);
            waits.push(retry.wait.as_secs());
            last = Some(retry);
        }
        assert_eq!(waits, vec![1, 2, 4, 8, 15, 15]);
        // A short refresh period (tests) bounds the refusal back-off too.
        let short = next_retry(now, None, true, Duration::from_secs(2));
        assert_eq!(short.wait, Duration::from_secs(2));
        assert_eq!(short.next, now + Duration::from_secs(2));
    }
}
