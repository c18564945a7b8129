//! The grant half of a decision: does a grant, signed by the slide owner's roster key, let
//! this requesting trust act on this slide now? Pure: the caller says whether the grant was
//! revoked (it reads that from its store) and hands in the roster it holds.

use slidemesh_protocol::{Action, Grant, GrantId, Roster, SignedGrant, SlideId, TrustCode};

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

/// What a grant check needs besides the grant: who asks, for which slide of which owner,
/// under which roster, at what time, and whether the grant was revoked (`Err`: the store
/// could not say, which is a failure to decide, never a refusal).
pub struct GrantQuestion<'a> {
    pub roster: &'a Roster,
    pub requester: &'a TrustCode,
    pub slide: &'a SlideId,
    pub owner: &'a TrustCode,
    pub now: u64,
    pub revoked: Result<bool, String>,
}

/// Checks `signed` lets `question.requester` view `question.slide`. Default deny: the
/// grant must verify, be issued by the slide's owner (never to itself), be signed by the
/// owner's node key on the roster, cover this requester, slide and time, and not be revoked.
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
    if !grant.covers(slide, requester, Action::View, *now) {
        return Err(denied(format!(
            "grant {} does not cover {requester} for this slide now",
            signed.id()
        )));
    }
    match &question.revoked {
        Ok(false) => Ok(CheckedGrant {
            id: signed.id(),
            grant,
        }),
        Ok(true) => Err(denied(format!("grant {} was revoked", signed.id()))),
        Err(e) => Err(Refusal::Failed(format!("cannot check revocations: {e}"))),
    }
}
