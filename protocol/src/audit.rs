//! The audit log's verifiable structure: an append-only Merkle tree in the shape of RFC 6962
//! (Certificate Transparency), with BLAKE3 in place of SHA-256, and signed checkpoints.
//!
//! - leaf hash `BLAKE3(0x00 || entry)`, interior `BLAKE3(0x01 || left || right)`;
//! - the tree over `n` leaves splits at the largest power of two below `n` (RFC 6962 2.1);
//! - a consistency proof shows the tree of size `m` is a prefix of the tree of size `n`
//!   (RFC 6962 2.1.2), which is what stops a trust from rewriting or forking its log once a
//!   peer has seen (and co-signed) a checkpoint.
//!
//! Also here, because they cross between nodes: the log's entry ([`AuditEntry`], whose
//! canonical bytes are the leaves) and the serving node's signed **receipt** for an access
//! ([`SignedReceipt`]): the entries it appended for the request, with their positions in its
//! log, so the requester can keep proof that the server recorded what it served.
//!
//! Pure functions over leaf hashes; storage is the node's business.

use serde::{Deserialize, Serialize};

use crate::canonical;
use crate::ids::{GrantId, SlideId};
use crate::sign::{NodeKey, NodePublicKey, SignatureError, Signed, Statement};
use crate::trust::TrustCode;

/// Signature domain of checkpoints (the log's own and co-signatures alike).
pub const CHECKPOINT_DOMAIN: &str = "slidemesh/audit-checkpoint/v1";
/// Signature domain of receipts.
pub const RECEIPT_DOMAIN: &str = "slidemesh/audit-receipt/v1";

/// Which side of an access the log's node was on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// A peer asked this node; this node decided.
    Served,
    /// This node asked a peer and was answered.
    Received,
    /// One of this node's own people asked for a slide another trust shared; this node
    /// decided, with the owner's signed rules. (`peer` is the owner.)
    Gateway,
    /// A step of a referral this node's trust took (sent, opened, answered, withdrawn...),
    /// one entry per slide the referral names (`peer` the other trust, `action` the step,
    /// `what` the referral's id).
    ReferralStep,
    /// A step of a referral the other trust took and told this node of (`peer` that trust).
    ReferralNotice,
}

/// One audited access. No patient data: ids, codes and names of rules only. Its canonical
/// encoding is the log's leaf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Unix seconds.
    pub time: u64,
    pub side: Side,
    /// The other trust: the requester when served, the source when received.
    pub peer: TrustCode,
    pub peer_id: String,
    /// The person, when the request names one.
    pub user: Option<String>,
    pub purpose: String,
    pub slide: SlideId,
    /// view, fetch_tiles, see_label, ...
    pub action: String,
    /// What crossed: "manifest", "12 tiles".
    pub what: String,
    pub allowed: bool,
    /// The `@id`s of the deciding rules, or why it was refused before the policy ran. On
    /// the receiving side, the server's deciding rules as its receipt states them.
    pub rules: Vec<String>,
    /// BLAKE3 of the policy text that decided (on the receiving side, the server's, from
    /// its receipt; empty without one).
    pub policy_hash: String,
    pub grant: Option<GrantId>,
}

impl AuditEntry {
    /// The entry's leaf hash in a log.
    pub fn leaf(&self) -> Hash {
        leaf_hash(&canonical::encode(self))
    }
}

/// What a serving node appended to its log for one request: each entry with its sequence
/// number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The serving trust, whose log holds the entries.
    pub log: TrustCode,
    pub entries: Vec<(u64, AuditEntry)>,
}

impl Statement for Receipt {
    const DOMAIN: &'static str = RECEIPT_DOMAIN;
}

/// A [`Receipt`] signed by the serving node's key.
pub type SignedReceipt = Signed<Receipt>;

pub type Hash = [u8; 32];

pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[0]);
    h.update(entry);
    *h.finalize().as_bytes()
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[1]);
    h.update(left);
    h.update(right);
    *h.finalize().as_bytes()
}

/// The largest power of two strictly below `n` (n >= 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// The Merkle tree hash of `leaves` (RFC 6962 MTH); the empty tree hashes the empty string.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => *blake3::hash(b"").as_bytes(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The consistency proof from the tree of the first `m` leaves to the tree of all of them
/// (RFC 6962 PROOF(m, D[n])).
pub fn consistency_proof(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    fn subproof(m: usize, leaves: &[Hash], complete: bool, out: &mut Vec<Hash>) {
        let n = leaves.len();
        if m == n {
            if !complete {
                out.push(root(leaves));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            subproof(m, &leaves[..k], complete, out);
            out.push(root(&leaves[k..]));
        } else {
            subproof(m - k, &leaves[k..], false, out);
            out.push(root(&leaves[..k]));
        }
    }
    let mut out = Vec::new();
    if m > 0 && m < leaves.len() {
        subproof(m, leaves, true, &mut out);
    }
    out
}

/// Checks that `new_root` (size `n`) extends `old_root` (size `m`) by `proof`
/// (the verification algorithm of RFC 9162 2.1.4.2).
pub fn verify_consistency(
    m: u64,
    n: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if m == n {
        return proof.is_empty() && old_root == new_root;
    }
    if m == 0 || m > n {
        return m == 0 && proof.is_empty();
    }
    let mut path: Vec<Hash> = proof.to_vec();
    // If m is a power of two, the old root is the first node of the path.
    if m.is_power_of_two() {
        path.insert(0, *old_root);
    }
    let (mut fn_, mut sn) = (m - 1, n - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && &fr == old_root && &sr == new_root
}

/// A log's state at one size, as its node states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The trust whose node keeps the log.
    pub log: TrustCode,
    pub size: u64,
    pub root: Hash,
    /// Unix seconds.
    pub time: u64,
}

/// A checkpoint signed by the log's node, and co-signed by peers that checked it extends
/// what they saw before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCheckpoint {
    pub bytes: Vec<u8>,
    pub signer: NodePublicKey,
    pub signature: Vec<u8>,
    /// (co-signing trust, its node key, signature over the same bytes).
    pub cosignatures: Vec<(TrustCode, NodePublicKey, Vec<u8>)>,
}

impl SignedCheckpoint {
    pub fn sign(checkpoint: &Checkpoint, key: &NodeKey) -> Self {
        let bytes = canonical::encode(checkpoint);
        let signature = key.sign(CHECKPOINT_DOMAIN, &bytes).to_vec();
        Self {
            bytes,
            signer: key.public(),
            signature,
            cosignatures: Vec::new(),
        }
    }

    /// Verifies the log's signature and every co-signature, and decodes.
    pub fn verify(&self) -> Result<Checkpoint, SignatureError> {
        self.signer
            .verify(CHECKPOINT_DOMAIN, &self.bytes, &self.signature)?;
        for (_, key, signature) in &self.cosignatures {
            key.verify(CHECKPOINT_DOMAIN, &self.bytes, signature)?;
        }
        canonical::decode(&self.bytes).map_err(|_| SignatureError::Invalid)
    }

    /// Adds a peer's co-signature (after it checked consistency with what it saw).
    pub fn cosign(&mut self, trust: TrustCode, key: &NodeKey) {
        let signature = key.sign(CHECKPOINT_DOMAIN, &self.bytes).to_vec();
        self.cosignatures.push((trust, key.public(), signature));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_verify_and_detect_tampering() {
        let key = NodeKey::generate();
        let entry = AuditEntry {
            time: 1_800_000_000,
            side: Side::Served,
            peer: "RAE".parse().unwrap(),
            peer_id: "12D3KooW".into(),
            user: None,
            purpose: "second-opinion".into(),
            slide: SlideId::of(b"slide"),
            action: "fetch_tiles".into(),
            what: "40 tiles".into(),
            allowed: true,
            rules: vec!["care-purposes".into()],
            policy_hash: "ab".into(),
            grant: None,
        };
        let receipt = Receipt {
            log: "RR8".parse().unwrap(),
            entries: vec![(41, entry)],
        };
        let signed = SignedReceipt::sign(&receipt, &key);
        assert_eq!(signed.verify().unwrap(), receipt);
        let mut tampered = signed.clone();
        let last = tampered.bytes.len() - 1;
        tampered.bytes[last] ^= 1;
        assert!(tampered.verify().is_err());
        let mut other = signed;
        other.signer = NodeKey::generate().public();
        assert!(other.verify().is_err());
    }

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(&(i as u64).to_le_bytes()))
            .collect()
    }

    #[test]
    fn roots_split_like_rfc6962() {
        let l = leaves(3);
        assert_eq!(root(&l), node_hash(&node_hash(&l[0], &l[1]), &l[2]));
        assert_eq!(root(&l[..1]), l[0]);
    }

    #[test]
    fn every_prefix_is_provably_consistent() {
        let all = leaves(23);
        for n in 1..=all.len() {
            for m in 1..=n {
                let proof = consistency_proof(m, &all[..n]);
                assert!(
                    verify_consistency(
                        m as u64,
                        n as u64,
                        &root(&all[..m]),
                        &root(&all[..n]),
                        &proof
                    ),
                    "m={m} n={n}"
                );
            }
        }
    }

    #[test]
    fn a_rewritten_or_forked_log_fails_the_proof() {
        let honest = leaves(12);
        let mut forked = honest.clone();
        forked[3] = leaf_hash(b"rewritten entry");
        let old_root = root(&honest[..7]);
        let proof = consistency_proof(7, &forked);
        assert!(!verify_consistency(
            7,
            12,
            &old_root,
            &root(&forked),
            &proof
        ));
        // A proof for the honest log does not vouch for another new root.
        let proof = consistency_proof(7, &honest);
        assert!(!verify_consistency(
            7,
            12,
            &old_root,
            &root(&forked),
            &proof
        ));
    }

    #[test]
    fn checkpoints_verify_with_cosignatures() {
        let (log, peer) = (NodeKey::generate(), NodeKey::generate());
        let checkpoint = Checkpoint {
            log: "RR8".parse().unwrap(),
            size: 3,
            root: root(&leaves(3)),
            time: 1,
        };
        let mut signed = SignedCheckpoint::sign(&checkpoint, &log);
        signed.cosign("RAE".parse().unwrap(), &peer);
        assert_eq!(signed.verify().unwrap(), checkpoint);
        signed.bytes[0] ^= 1;
        assert!(signed.verify().is_err());
    }
}
