//! Grants: an owning trust's signed statement that another trust may act on one slide, for
//! one purpose, until a time. And revocations, the owner's signed withdrawal of a grant.
//!
//! A grant is checked by whoever serves the slide (default deny): the signature must be by
//! the node key the roster lists for the grant's owner, the requester's trust must be the
//! grantee, the slide and action must match, the time must be inside the grant's window, and
//! the grant must not be revoked. This module checks everything that needs no roster or store
//! ([`Grant::covers`]); the node does the rest.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::canonical::{self, CanonicalError};
use crate::ids::{GrantId, SlideId};
use crate::sign::{NodeKey, NodePublicKey, SignatureError};
use crate::trust::TrustCode;

/// Signature domain for grants.
pub const GRANT_DOMAIN: &str = "slidemesh/grant/v1";
/// Signature domain for revocations.
pub const REVOCATION_DOMAIN: &str = "slidemesh/revocation/v1";

/// Why a grant or revocation was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GrantError {
    #[error("grant encoding: {0}")]
    Encoding(#[from] CanonicalError),
    #[error("grant signature: {0}")]
    Signature(#[from] SignatureError),
    #[error("grant is inconsistent: {0}")]
    Inconsistent(String),
    #[error("revocation not by the grant's issuer: {0}")]
    NotIssuer(String),
}

/// Why a person may see a slide. The co-operative's information-governance categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Purpose {
    DirectCare,
    SecondOpinion,
    Mdt,
    Research,
    Education,
    AuditQa,
}

impl Purpose {
    pub const ALL: [Purpose; 6] = [
        Purpose::DirectCare,
        Purpose::SecondOpinion,
        Purpose::Mdt,
        Purpose::Research,
        Purpose::Education,
        Purpose::AuditQa,
    ];

    /// Purposes that never receive the patient's identity, whatever a trust's policy says:
    /// their users get a de-identified view of the slide's metadata and no label images.
    pub fn requires_deidentification(self) -> bool {
        matches!(self, Purpose::Research | Purpose::Education)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::DirectCare => "direct-care",
            Purpose::SecondOpinion => "second-opinion",
            Purpose::Mdt => "mdt",
            Purpose::Research => "research",
            Purpose::Education => "education",
            Purpose::AuditQa => "audit-qa",
        }
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Purpose {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Purpose::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Purpose::ALL.iter().map(|p| p.as_str()).collect();
                format!(
                    "unknown purpose {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// What a grant allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Read the manifest and tiles: remote viewing.
    View,
    /// Hold a full copy of the slide (identified manifest, every tile, the owner's signed
    /// rules) to serve other grantees while the owner cannot: a replica. It lets the
    /// grantee's own people see nothing; they need a `View` grant of their own.
    Replicate,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::View => "view",
            Action::Replicate => "replicate",
        }
    }
}

/// The statement the owner signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub slide: SlideId,
    /// The trust that owns the slide and signs the grant.
    pub owner: TrustCode,
    /// The trust allowed to act.
    pub grantee: TrustCode,
    pub action: Action,
    pub purpose: Purpose,
    /// Free text the owner attaches, e.g. a referral number.
    pub reference: Option<String>,
    /// Seconds since the Unix epoch.
    pub issued_at: u64,
    /// Seconds since the Unix epoch; the grant covers nothing from this time on.
    pub expires_at: u64,
}

impl Grant {
    /// Whether this grant lets `requester` do `action` on `slide` at `now`. Signature,
    /// signer and revocation are the caller's to check.
    pub fn covers(&self, slide: &SlideId, requester: &TrustCode, action: Action, now: u64) -> bool {
        &self.slide == slide
            && &self.grantee == requester
            && self.action == action
            && self.issued_at <= now.saturating_add(CLOCK_SKEW_SECS)
            && now < self.expires_at
    }
}

/// How far ahead of a verifier's clock an issuer's may be before a fresh grant is refused.
pub const CLOCK_SKEW_SECS: u64 = 300;

/// A grant as delivered: canonical bytes, signer and signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedGrant {
    pub bytes: Vec<u8>,
    pub signer: NodePublicKey,
    pub signature: Vec<u8>,
}

impl SignedGrant {
    pub fn sign(grant: &Grant, key: &NodeKey) -> Result<Self, GrantError> {
        if grant.owner == grant.grantee {
            return Err(GrantError::Inconsistent(
                "a trust does not need a grant for its own slides".into(),
            ));
        }
        if grant.expires_at <= grant.issued_at {
            return Err(GrantError::Inconsistent(
                "the grant expires before it is issued".into(),
            ));
        }
        let bytes = canonical::encode(grant);
        let signature = key
            .sign(GRANT_DOMAIN, GrantId::of(&bytes).as_bytes())
            .to_vec();
        Ok(Self {
            bytes,
            signer: key.public(),
            signature,
        })
    }

    pub fn id(&self) -> GrantId {
        GrantId::of(&self.bytes)
    }

    /// Checks the signature and decodes. Whether the signer speaks for `grant.owner` is the
    /// caller's question (it needs the roster).
    pub fn verify(&self) -> Result<Grant, GrantError> {
        self.signer
            .verify(GRANT_DOMAIN, self.id().as_bytes(), &self.signature)?;
        Ok(canonical::decode(&self.bytes)?)
    }
}

/// The owner's withdrawal of a grant. Effective at the owner at once; delivered to the
/// grantee and announced to the federation so replicas stop serving under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub grant: GrantId,
    pub owner: TrustCode,
    pub revoked_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRevocation {
    pub bytes: Vec<u8>,
    pub signer: NodePublicKey,
    pub signature: Vec<u8>,
}

impl SignedRevocation {
    pub fn sign(revocation: &Revocation, key: &NodeKey) -> Self {
        let bytes = canonical::encode(revocation);
        let signature = key
            .sign(REVOCATION_DOMAIN, blake3::hash(&bytes).as_bytes())
            .to_vec();
        Self {
            bytes,
            signer: key.public(),
            signature,
        }
    }

    /// Checks the signature and decodes. Whether the signer issued the grant it names is
    /// the caller's question ([`Self::verify_by_issuer`] answers it given the grant).
    pub fn verify(&self) -> Result<Revocation, GrantError> {
        self.signer.verify(
            REVOCATION_DOMAIN,
            blake3::hash(&self.bytes).as_bytes(),
            &self.signature,
        )?;
        Ok(canonical::decode(&self.bytes)?)
    }

    /// Checks this revokes the grant `id` (whose statement is `grant`) on behalf of its
    /// issuer: the signature verifies, the revocation names that grant and the grant's
    /// owner, and it is signed by `issuer_key`, the node key the roster lists for the
    /// grant's owner. Anything else revokes nothing.
    pub fn verify_by_issuer(
        &self,
        id: &GrantId,
        grant: &Grant,
        issuer_key: &NodePublicKey,
    ) -> Result<Revocation, GrantError> {
        let revocation = self.verify()?;
        if revocation.grant != *id {
            return Err(GrantError::NotIssuer(format!(
                "it names grant {}, not {id}",
                revocation.grant
            )));
        }
        if revocation.owner != grant.owner {
            return Err(GrantError::NotIssuer(format!(
                "it is made in the name of {}, but grant {id} was issued by {}",
                revocation.owner, grant.owner
            )));
        }
        if self.signer != *issuer_key {
            return Err(GrantError::NotIssuer(format!(
                "it is not signed by {}'s node key on the roster",
                grant.owner
            )));
        }
        Ok(revocation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        Grant {
            slide: SlideId::of(b"slide"),
            owner: "RR8".parse().unwrap(),
            grantee: "RAE".parse().unwrap(),
            action: Action::View,
            purpose: Purpose::SecondOpinion,
            reference: Some("REF-1".into()),
            issued_at: 1_000,
            expires_at: 2_000,
        }
    }

    #[test]
    fn covers_only_grantee_slide_and_window() {
        let g = grant();
        let rae: TrustCode = "RAE".parse().unwrap();
        let rcd: TrustCode = "RCD".parse().unwrap();
        assert!(g.covers(&g.slide, &rae, Action::View, 1_500));
        assert!(!g.covers(&g.slide, &rcd, Action::View, 1_500));
        assert!(!g.covers(&SlideId::of(b"other"), &rae, Action::View, 1_500));
        assert!(!g.covers(&g.slide, &rae, Action::View, 2_000));
        assert!(!g.covers(&g.slide, &rae, Action::View, 600));
        // A grant covers only its own action: a view grant never replicates.
        assert!(!g.covers(&g.slide, &rae, Action::Replicate, 1_500));
    }

    #[test]
    fn signed_grant_round_trips_and_detects_tampering() {
        let key = NodeKey::generate();
        let signed = SignedGrant::sign(&grant(), &key).unwrap();
        assert_eq!(signed.verify().unwrap(), grant());
        let mut tampered = signed.clone();
        let last = tampered.bytes.len() - 1;
        tampered.bytes[last] ^= 1;
        assert!(tampered.verify().is_err());
        let mut self_grant = grant();
        self_grant.grantee = self_grant.owner.clone();
        assert!(SignedGrant::sign(&self_grant, &key).is_err());
    }

    #[test]
    fn revocation_round_trips() {
        let key = NodeKey::generate();
        let r = Revocation {
            grant: GrantId::of(b"g"),
            owner: "RR8".parse().unwrap(),
            revoked_at: 5,
        };
        let signed = SignedRevocation::sign(&r, &key);
        assert_eq!(signed.verify().unwrap(), r);
        let mut bad = signed.clone();
        bad.signature[0] ^= 1;
        assert!(bad.verify().is_err());
    }

    /// Only the grant's issuer revokes it: another member's signature (in its own name or in
    /// the owner's) revokes nothing, nor does the owner's revocation of another grant.
    #[test]
    fn only_the_issuers_revocation_counts() {
        let (leeds, bradford) = (NodeKey::generate(), NodeKey::generate());
        let g = grant();
        let id = SignedGrant::sign(&g, &leeds).unwrap().id();
        let revoke = |owner: &str, grant: GrantId, key: &NodeKey| {
            SignedRevocation::sign(
                &Revocation {
                    grant,
                    owner: owner.parse().unwrap(),
                    revoked_at: 1_500,
                },
                key,
            )
        };
        let by_issuer = revoke("RR8", id, &leeds);
        assert_eq!(
            by_issuer
                .verify_by_issuer(&id, &g, &leeds.public())
                .unwrap()
                .grant,
            id
        );
        // Bradford, a member, in its own name and in Leeds's.
        for claimed in ["RAE", "RR8"] {
            let forged = revoke(claimed, id, &bradford);
            assert!(
                forged.verify().is_ok(),
                "a valid signature, by the wrong key"
            );
            let refused = forged
                .verify_by_issuer(&id, &g, &leeds.public())
                .unwrap_err();
            assert!(matches!(refused, GrantError::NotIssuer(_)), "{refused}");
        }
        // The issuer's revocation of another grant does not revoke this one.
        let other = revoke("RR8", GrantId::of(b"another grant"), &leeds);
        assert!(other.verify_by_issuer(&id, &g, &leeds.public()).is_err());
        // Nor does a tampered one.
        let mut tampered = by_issuer.clone();
        tampered.signature[0] ^= 1;
        assert!(tampered.verify_by_issuer(&id, &g, &leeds.public()).is_err());
    }

    #[test]
    fn purposes_parse() {
        for p in Purpose::ALL {
            assert_eq!(p.as_str().parse::<Purpose>().unwrap(), p);
        }
        assert!("marketing".parse::<Purpose>().is_err());
    }
}
