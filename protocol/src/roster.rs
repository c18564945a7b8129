//! The federation roster: which trusts are members, and which node key speaks for each.
//!
//! A roster is versioned. Version 1 (the genesis) is valid when at least `quorum` of its own
//! members signed it. Every later version is valid only when it is exactly one version newer
//! than the roster a node holds and is signed by at least `quorum` of *that* roster's
//! members, with that roster's quorum: admitting or removing a member needs k of the current
//! n, so no single party controls membership. Signatures are over the roster id (BLAKE3 of
//! the canonical bytes) in the `slidemesh/roster/v1` domain; signing is additive, so members
//! co-sign one by one and the signed form is published once enough have.
//!
//! Addresses are kept as multiaddr strings: this crate knows nothing of libp2p.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::canonical::{self, CanonicalError};
use crate::ids::RosterId;
use crate::sign::{NodeKey, NodePublicKey, SignatureError};
use crate::trust::TrustCode;

/// Signature domain for roster versions.
pub const ROSTER_DOMAIN: &str = "slidemesh/roster/v1";

/// Why a roster was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RosterError {
    #[error("roster encoding: {0}")]
    Encoding(#[from] CanonicalError),
    #[error("roster is inconsistent: {0}")]
    Inconsistent(String),
    #[error("roster signature by {signer}: {source}")]
    Signature {
        signer: NodePublicKey,
        source: SignatureError,
    },
    #[error("roster signed by {signer}, who is not a member of the signing roster")]
    NotAMember { signer: NodePublicKey },
    #[error("roster version {version} has {have} valid member signatures; {need} are needed")]
    Quorum {
        version: u64,
        have: usize,
        need: usize,
    },
    #[error("roster is for federation {found:?}, not {expected:?}")]
    Federation { expected: String, found: String },
    #[error("roster version {found} does not follow version {current}")]
    NotNext { current: u64, found: u64 },
}

/// One member trust and its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub trust: TrustCode,
    /// Display name, e.g. "Leeds Teaching Hospitals".
    pub name: String,
    /// The node's public key; the node's libp2p PeerId is derived from it.
    pub node: NodePublicKey,
    /// Where the node listens, as multiaddr strings. Peers dial these.
    pub addrs: Vec<String>,
}

/// One version of the membership list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roster {
    /// The federation's name; a roster for another federation is never a successor.
    pub federation: String,
    /// 1 for the genesis, then +1 per change.
    pub version: u64,
    /// How many current members must sign the next version (k of n).
    pub quorum: u32,
    /// Sorted by trust code; trust codes and node keys are unique.
    pub members: Vec<Member>,
    /// Seconds since the Unix epoch.
    pub issued_at: u64,
}

impl Roster {
    /// Checks the invariants every valid roster holds, whoever signed it.
    pub fn validate(&self) -> Result<(), RosterError> {
        let bad = |m: String| Err(RosterError::Inconsistent(m));
        if self.federation.trim().is_empty() {
            return bad("empty federation name".into());
        }
        if self.version == 0 {
            return bad("version 0 (the first version is 1)".into());
        }
        if self.members.is_empty() {
            return bad("no members".into());
        }
        if self.quorum == 0 || self.quorum as usize > self.members.len() {
            return bad(format!(
                "quorum {} must be between 1 and the {} members",
                self.quorum,
                self.members.len()
            ));
        }
        if self.members.windows(2).any(|w| w[0].trust >= w[1].trust) {
            return bad("members not sorted by trust code, or a trust listed twice".into());
        }
        let keys: BTreeSet<_> = self.members.iter().map(|m| m.node).collect();
        if keys.len() != self.members.len() {
            return bad("one node key listed for two trusts".into());
        }
        Ok(())
    }

    pub fn member_by_key(&self, node: &NodePublicKey) -> Option<&Member> {
        self.members.iter().find(|m| &m.node == node)
    }

    pub fn member(&self, trust: &TrustCode) -> Option<&Member> {
        self.members.iter().find(|m| &m.trust == trust)
    }

    /// The canonical bytes of this version, unsigned.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        canonical::encode(self)
    }

    /// Sorts members into canonical order (by trust code).
    pub fn normalise(&mut self) {
        self.members.sort_by(|a, b| a.trust.cmp(&b.trust));
    }
}

/// One member's signature over a roster version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterSignature {
    pub signer: NodePublicKey,
    pub signature: Vec<u8>,
}

/// A roster version with the signatures gathered so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRoster {
    pub bytes: Vec<u8>,
    pub signatures: Vec<RosterSignature>,
}

impl SignedRoster {
    /// A proposal: the roster's canonical bytes and no signatures yet.
    pub fn propose(roster: &Roster) -> Result<Self, RosterError> {
        roster.validate()?;
        Ok(Self {
            bytes: roster.canonical_bytes(),
            signatures: Vec::new(),
        })
    }

    pub fn id(&self) -> RosterId {
        RosterId::of(&self.bytes)
    }

    /// Decodes and validates the roster, without looking at signatures.
    pub fn roster(&self) -> Result<Roster, RosterError> {
        let roster: Roster = canonical::decode(&self.bytes)?;
        roster.validate()?;
        Ok(roster)
    }

    /// Adds (or replaces) `key`'s signature.
    pub fn cosign(&mut self, key: &NodeKey) {
        let signer = key.public();
        let signature = key.sign(ROSTER_DOMAIN, self.id().as_bytes()).to_vec();
        self.signatures.retain(|s| s.signer != signer);
        self.signatures.push(RosterSignature { signer, signature });
        self.signatures.sort_by_key(|s| s.signer);
    }

    /// Valid signatures by distinct members of `signing`.
    fn count_signers(&self, signing: &Roster) -> Result<usize, RosterError> {
        let id = self.id();
        let mut signers = BTreeSet::new();
        for s in &self.signatures {
            if signing.member_by_key(&s.signer).is_none() {
                return Err(RosterError::NotAMember { signer: s.signer });
            }
            s.signer
                .verify(ROSTER_DOMAIN, id.as_bytes(), &s.signature)
                .map_err(|source| RosterError::Signature {
                    signer: s.signer,
                    source,
                })?;
            signers.insert(s.signer);
        }
        Ok(signers.len())
    }

    /// Verifies a genesis roster: version 1, signed by a quorum of its own members.
    pub fn verify_genesis(&self) -> Result<Roster, RosterError> {
        let roster = self.roster()?;
        if roster.version != 1 {
            return Err(RosterError::NotNext {
                current: 0,
                found: roster.version,
            });
        }
        self.require_quorum(&roster, &roster)?;
        Ok(roster)
    }

    /// Fails unless a quorum of `signing`'s members signed this version (`proposed`).
    fn require_quorum(&self, proposed: &Roster, signing: &Roster) -> Result<(), RosterError> {
        let have = self.count_signers(signing)?;
        let need = signing.quorum as usize;
        if have < need {
            return Err(RosterError::Quorum {
                version: proposed.version,
                have,
                need,
            });
        }
        Ok(())
    }

    /// Verifies that this version may replace `current`: same federation, the next version,
    /// signed by a quorum of `current`'s members.
    pub fn verify_successor(&self, current: &Roster) -> Result<Roster, RosterError> {
        let roster = self.roster()?;
        if roster.federation != current.federation {
            return Err(RosterError::Federation {
                expected: current.federation.clone(),
                found: roster.federation,
            });
        }
        if roster.version != current.version + 1 {
            return Err(RosterError::NotNext {
                current: current.version,
                found: roster.version,
            });
        }
        self.require_quorum(&roster, current)?;
        Ok(roster)
    }

    /// How many signatures are still needed before this can replace `current` (or, for a
    /// genesis, before it is valid on its own). Invalid signatures count as missing.
    pub fn signatures_missing(&self, current: Option<&Roster>) -> Result<usize, RosterError> {
        let proposed = self.roster()?;
        let signing = current.unwrap_or(&proposed);
        let have = self.count_signers(signing)?;
        Ok((signing.quorum as usize).saturating_sub(have))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(code: &str, key: &NodeKey) -> Member {
        Member {
            trust: code.parse().unwrap(),
            name: code.into(),
            node: key.public(),
            addrs: vec![],
        }
    }

    fn roster(version: u64, quorum: u32, members: Vec<Member>) -> Roster {
        let mut r = Roster {
            federation: "test".into(),
            version,
            quorum,
            members,
            issued_at: 0,
        };
        r.normalise();
        r
    }

    #[test]
    fn genesis_needs_quorum_of_its_members() {
        let keys: Vec<_> = (0..3).map(|_| NodeKey::generate()).collect();
        let r = roster(
            1,
            2,
            vec![
                member("AAA", &keys[0]),
                member("BBB", &keys[1]),
                member("CCC", &keys[2]),
            ],
        );
        let mut signed = SignedRoster::propose(&r).unwrap();
        signed.cosign(&keys[0]);
        assert!(matches!(
            signed.verify_genesis(),
            Err(RosterError::Quorum {
                have: 1,
                need: 2,
                ..
            })
        ));
        signed.cosign(&keys[0]);
        assert_eq!(
            signed.signatures.len(),
            1,
            "re-signing does not double count"
        );
        signed.cosign(&keys[2]);
        assert_eq!(signed.verify_genesis().unwrap(), r);
        let outsider = NodeKey::generate();
        signed.cosign(&outsider);
        assert!(matches!(
            signed.verify_genesis(),
            Err(RosterError::NotAMember { .. })
        ));
    }

    #[test]
    fn successor_needs_quorum_of_current_members() {
        let keys: Vec<_> = (0..4).map(|_| NodeKey::generate()).collect();
        let v1 = roster(1, 2, vec![member("AAA", &keys[0]), member("BBB", &keys[1])]);
        let v2 = roster(
            2,
            2,
            vec![
                member("AAA", &keys[0]),
                member("BBB", &keys[1]),
                member("CCC", &keys[2]),
            ],
        );
        let mut signed = SignedRoster::propose(&v2).unwrap();
        // The newcomer signing for itself does not count: it is not a current member.
        signed.cosign(&keys[2]);
        assert!(signed.verify_successor(&v1).is_err());
        signed.signatures.clear();
        signed.cosign(&keys[0]);
        assert!(matches!(
            signed.verify_successor(&v1),
            Err(RosterError::Quorum { have: 1, .. })
        ));
        signed.cosign(&keys[1]);
        assert_eq!(signed.verify_successor(&v1).unwrap(), v2);
        // Not a successor of itself, and a skipped version is refused.
        assert!(signed.verify_successor(&v2).is_err());
        // Tampering with the bytes breaks every signature.
        let mut tampered = signed.clone();
        let last = tampered.bytes.len() - 1;
        tampered.bytes[last] ^= 1;
        assert!(tampered.verify_successor(&v1).is_err());
    }

    #[test]
    fn invalid_rosters_are_refused() {
        let k = NodeKey::generate();
        let dup = Roster {
            federation: "x".into(),
            version: 1,
            quorum: 1,
            members: vec![member("AAA", &k), member("BBB", &k)],
            issued_at: 0,
        };
        assert!(dup.validate().is_err());
        let mut quorum = roster(1, 2, vec![member("AAA", &k)]);
        assert!(quorum.validate().is_err());
        quorum.quorum = 1;
        assert!(quorum.validate().is_ok());
    }
}
