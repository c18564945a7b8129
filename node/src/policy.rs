//! The grant half of consent: does the requester hold a valid, unexpired, unrevoked grant
//! signed by the slide owner's roster key, naming the requester's trust, for this slide?
//! Default deny. The owner's written policy ([`crate::consent`]) then decides whether the
//! grant's purpose is acceptable for the slide's recorded consent; the federation calls both
//! for every manifest and every tile batch.

use slidemesh_protocol::{Action, Grant, Roster, SignedGrant, SlideId, TrustCode};

use crate::store::Store;

/// Why a peer's request was not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The grant or the policy says no: asking again as is gets the same answer.
    Denied(String),
    /// This node could not decide (its store failed): the requester should ask again
    /// later, and must not take it for the owner's refusal.
    Failed(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Denied(reason) | Self::Failed(reason) => f.write_str(reason),
        }
    }
}

impl From<Refusal> for String {
    fn from(refusal: Refusal) -> Self {
        refusal.to_string()
    }
}

/// Checks `signed` lets `requester` do `action` on `slide`, owned by `slide_owner`, at
/// `now`. `Err` says why not: `Denied` by the grant, or `Failed` when the store could not
/// be read.
#[allow(clippy::too_many_arguments)]
pub fn check_grant(
    store: &Store,
    roster: &Roster,
    requester: &TrustCode,
    slide: &SlideId,
    slide_owner: &TrustCode,
    signed: &SignedGrant,
    action: Action,
    now: u64,
) -> Result<Grant, Refusal> {
    let denied = Refusal::Denied;
    let grant: Grant = signed
        .verify()
        .map_err(|e| denied(format!("grant does not verify: {e}")))?;
    // Only the slide's owner grants access to it, and never to itself: a member signing a
    // grant for someone else's slide (or for itself) is refused whatever it says.
    if grant.owner != *slide_owner {
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
    if !grant.covers(slide, requester, action, now) {
        return Err(denied(format!(
            "grant {} does not cover {requester} for this slide now",
            signed.id()
        )));
    }
    match store.is_revoked(&signed.id()) {
        Ok(false) => Ok(grant),
        Ok(true) => Err(denied(format!("grant {} was revoked", signed.id()))),
        Err(e) => Err(Refusal::Failed(format!("cannot check revocations: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use slidemesh_protocol::{Member, NodeKey, Purpose};

    use super::*;

    fn member(trust: &str, key: &NodeKey) -> Member {
        Member {
            trust: trust.parse().unwrap(),
            name: trust.into(),
            node: key.public(),
            addrs: vec![],
        }
    }

    fn grant(owner: &str, grantee: &str, slide: SlideId) -> Grant {
        Grant {
            slide,
            owner: owner.parse().unwrap(),
            grantee: grantee.parse().unwrap(),
            action: Action::View,
            purpose: Purpose::DirectCare,
            reference: None,
            issued_at: 1_800_000_000,
            expires_at: 1_800_003_600,
        }
    }

    /// Signs without `SignedGrant::sign`'s own checks, as a dishonest member could.
    fn forged(grant: &Grant, key: &NodeKey) -> SignedGrant {
        let bytes = slidemesh_protocol::canonical::encode(grant);
        let signature = key
            .sign(
                slidemesh_protocol::grant::GRANT_DOMAIN,
                slidemesh_protocol::GrantId::of(&bytes).as_bytes(),
            )
            .to_vec();
        SignedGrant {
            bytes,
            signer: key.public(),
            signature,
        }
    }

    #[test]
    fn only_the_slides_owner_grants_and_never_to_itself() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.redb")).unwrap();
        let (leeds, bradford) = (NodeKey::generate(), NodeKey::generate());
        let roster = Roster {
            federation: "test".into(),
            version: 1,
            quorum: 1,
            members: vec![member("RAE", &bradford), member("RR8", &leeds)],
            issued_at: 1_800_000_000,
        };
        let slide = SlideId::of(b"a slide of Leeds");
        let owner: TrustCode = "RR8".parse().unwrap();
        let bradford_trust: TrustCode = "RAE".parse().unwrap();
        let now = 1_800_000_100;
        let check = |signed: &SignedGrant| {
            check_grant(
                &store,
                &roster,
                &bradford_trust,
                &slide,
                &owner,
                signed,
                Action::View,
                now,
            )
        };
        // Leeds's own grant to Bradford is good.
        let honest = SignedGrant::sign(&grant("RR8", "RAE", slide), &leeds).unwrap();
        assert!(check(&honest).is_ok());
        // Bradford granting itself Leeds's slide, as owner, is refused.
        let own = forged(&grant("RAE", "RAE", slide), &bradford);
        let reason = check(&own).unwrap_err().to_string();
        assert!(reason.contains("belongs to RR8"), "{reason}");
        // So is Leeds "granting" a slide to itself, whoever asks.
        let to_itself = forged(&grant("RR8", "RR8", slide), &leeds);
        let leeds_asks = check_grant(
            &store,
            &roster,
            &owner,
            &slide,
            &owner,
            &to_itself,
            Action::View,
            now,
        );
        assert!(leeds_asks.unwrap_err().to_string().contains("to itself"));
    }
}
