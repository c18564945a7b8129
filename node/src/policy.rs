//! The grant half of consent: does the requester hold a valid, unexpired, unrevoked grant
//! signed by the slide owner's roster key, naming the requester's trust, for this slide?
//! Default deny. The owner's written policy ([`crate::consent`]) then decides whether the
//! grant's purpose is acceptable for the slide's recorded consent; the federation calls both
//! for every manifest and every tile batch.

use slidemesh_protocol::{Action, Grant, Roster, SignedGrant, SlideId, TrustCode};

use crate::store::Store;

/// Checks `signed` lets `requester` do `action` on `slide` at `now`. `Err` says why not.
pub fn check_grant(
    store: &Store,
    roster: &Roster,
    requester: &TrustCode,
    slide: &SlideId,
    signed: &SignedGrant,
    action: Action,
    now: u64,
) -> Result<Grant, String> {
    let grant: Grant = signed
        .verify()
        .map_err(|e| format!("grant does not verify: {e}"))?;
    let owner = roster
        .member(&grant.owner)
        .ok_or_else(|| format!("grant owner {} is not a member", grant.owner))?;
    if owner.node != signed.signer {
        return Err(format!(
            "grant is not signed by {}'s node key on the roster",
            grant.owner
        ));
    }
    if !grant.covers(slide, requester, action, now) {
        return Err(format!(
            "grant {} does not cover {requester} for this slide now",
            signed.id()
        ));
    }
    match store.is_revoked(&signed.id()) {
        Ok(false) => Ok(grant),
        Ok(true) => Err(format!("grant {} was revoked", signed.id())),
        Err(e) => Err(format!("cannot check revocations: {e}")),
    }
}
