//! The grant half of a decision: does a grant, signed by the slide owner's roster key, let
//! this requesting trust act on this slide now? Pure: the caller hands in the revocations
//! its store holds for the grant (whoever signed them), the roster, and, when this node is
//! not the slide's owner, the grants the owner's latest signed consent statement lists as
//! holding.
//!
//! Two rules live here, once:
//! - a revocation counts only when signed by the grant's issuer (the roster key of the
//!   trust that signed the grant, the slide's owner); any other revokes nothing;
//! - away from the owner, a grant the owner's latest statement does not list is refused,
//!   whether or not its revocation ever arrived ([`listed_by_owner`]).

use slidemesh_protocol::{
    Grant, GrantId, Roster, SignedGrant, SignedRevocation, SlideId, TrustCode,
};

use super::Refusal;

/// A grant that passed [`check_grant`]: callers that decide many times under the same grant
/// keep this rather than verify its signature again (the revocation state is as of the
/// check; keep it only briefly).
#[derive(Debug, Clone)]
pub struct CheckedGrant {
    id: GrantId,
    grant: Grant,
}

impl CheckedGrant {
    pub fn id(&self) -> GrantId {
        self.id
    }

    pub fn grant(&self) -> &Grant {
        &self.grant
    }
}

/// The grants the slide owner's latest signed consent statement lists as holding, and
/// when it was issued (for the refusal's reason).
#[derive(Debug, Clone, Copy)]
pub struct OwnersList<'a> {
    pub grants: &'a [GrantId],
    pub issued_at: u64,
}

/// What a grant check needs besides the grant: who asks, for which slide of which owner,
/// under which roster, at what time; the revocations this node holds for the grant (`Err`:
/// the store could not say, which is a failure to decide, never a refusal); and, away from
/// the owner, the owner's list of grants that hold.
pub struct GrantQuestion<'a> {
    pub roster: &'a Roster,
    pub requester: &'a TrustCode,
    pub slide: &'a SlideId,
    pub owner: &'a TrustCode,
    pub now: u64,
    pub revocations: Result<Vec<SignedRevocation>, String>,
    /// `None` at the slide's owner (its own store of revocations is the whole truth);
    /// elsewhere the owner's latest statement's list.
    pub listed: Option<OwnersList<'a>>,
}

/// Checks `signed` lets `question.requester` view `question.slide`. Default deny: the
/// grant must verify, be issued by the slide's owner (never to itself), be signed by the
/// owner's node key on the roster, cover this requester, slide and time, not be revoked by
/// its issuer, and, away from the owner, be listed in the owner's latest statement.
pub fn check_grant(
    signed: &SignedGrant,
    question: &GrantQuestion<'_>,
) -> Result<CheckedGrant, Refusal> {
    let denied = Refusal::Denied;
    let GrantQuestion {
        roster,
        requester,
        slide,
        owner: slide_owner,
        now,
        ..
    } = question;
    let grant: Grant = signed
        .verify()
        .map_err(|e| denied(format!("grant does not verify: {e}")))?;
    // Only the slide's owner grants access to it, and never to itself: a member signing a
    // grant for someone else's slide (or for itself) is refused whatever it says.
    if grant.owner != **slide_owner {
        return Err(denied(format!(
            "grant is issued by {}, but slide {slide} belongs to {slide_owner}",
            grant.owner
        )));
    }
    if grant.owner == grant.grantee {
        return Err(denied(
            "a grant from a trust to itself grants nothing".into(),
        ));
    }
    let owner = roster
        .member(&grant.owner)
        .ok_or_else(|| denied(format!("grant owner {} is not a member", grant.owner)))?;
    if owner.node != signed.signer {
        return Err(denied(format!(
            "grant is not signed by {}'s node key on the roster",
            grant.owner
        )));
    }
    let id = signed.id();
    // Whether the grant's action fits what is asked is `decide`'s question (its replica
    // rule); here the grant must hold for what it says it is.
    if !grant.covers(slide, requester, grant.action, *now) {
        return Err(denied(format!(
            "grant {id} does not cover {requester} for this slide now"
        )));
    }
    let revocations = question
        .revocations
        .as_ref()
        .map_err(|e| Refusal::Failed(format!("cannot check revocations: {e}")))?;
    if revoked_by_issuer(&id, &grant, revocations, roster) {
        return Err(denied(format!("grant {id} was revoked")));
    }
    listed_by_owner(&id, question.listed, slide)?;
    Ok(CheckedGrant { id, grant })
}

/// Whether one of `revocations` withdraws grant `id` (whose statement is `grant`): only one
/// signed by the node key `roster` lists for the grant's issuer counts.
pub fn revoked_by_issuer(
    id: &GrantId,
    grant: &Grant,
    revocations: &[SignedRevocation],
    roster: &Roster,
) -> bool {
    let Some(issuer) = roster.member(&grant.owner) else {
        return false;
    };
    revocations
        .iter()
        .any(|r| r.verify_by_issuer(id, grant, &issuer.node).is_ok())
}

/// Away from the slide's owner, a grant holds only while the owner's latest signed
/// statement lists it: a revocation that never arrived here (this node was down, or cut
/// off, while it travelled) holds from the next statement on. `None`: this node is the
/// owner, whose store decides.
pub fn listed_by_owner(
    id: &GrantId,
    listed: Option<OwnersList<'_>>,
    slide: &SlideId,
) -> Result<(), Refusal> {
    match listed {
        Some(list) if !list.grants.contains(id) => Err(Refusal::Denied(format!(
            "grant {id} is not among the grants the owner's consent statement for slide \
             {slide} (issued {}) lists as holding: revoked, expired, or newer than the statement",
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(list.issued_at)
            )
        ))),
        _ => Ok(()),
    }
}
