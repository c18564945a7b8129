//! Co-signing of audit checkpoints between members, so no trust can rewrite or fork its log
//! unseen: a member co-signs another's checkpoint only after checking, by a consistency
//! proof, that it extends the last checkpoint of that log it co-signed. A log that was
//! rewritten cannot produce such a proof, and the member refuses, saying so.

use slidemesh_protocol::audit::{CHECKPOINT_DOMAIN, Hash, SignedCheckpoint, verify_consistency};
use slidemesh_protocol::wire::ControlResponse;
use slidemesh_protocol::{NodeKey, NodePublicKey, TrustCode};

use crate::store::Store;

/// Decides whether to co-sign `signed`, the checkpoint of `log` whose node key on the
/// roster is `log_key`, extending the one of `since` entries by `proof`.
pub fn answer(
    store: &Store,
    key: &NodeKey,
    log: &TrustCode,
    log_key: &NodePublicKey,
    signed: &SignedCheckpoint,
    since: u64,
    proof: &[Hash],
) -> ControlResponse {
    let refuse = |reason: String| ControlResponse::Denied { reason };
    if signed.signer != *log_key {
        return refuse(format!(
            "checkpoint not signed by {log}'s node key on the roster"
        ));
    }
    let checkpoint = match signed.verify() {
        Ok(c) => c,
        Err(e) => return refuse(format!("checkpoint does not verify: {e}")),
    };
    if checkpoint.log != *log {
        return refuse(format!(
            "checkpoint of {}'s log sent by {log}",
            checkpoint.log
        ));
    }
    let last = match store.last_cosigned(log) {
        Ok(l) => l,
        Err(e) => {
            return ControlResponse::Failed {
                reason: e.to_string(),
            };
        }
    };
    if let Some(last) = &last {
        if since != last.size || checkpoint.size < last.size {
            return ControlResponse::Inconsistent {
                since: last.size,
                reason: format!(
                    "the last checkpoint of {log} co-signed here has {} entries",
                    last.size
                ),
            };
        }
        if !verify_consistency(
            last.size,
            checkpoint.size,
            &last.root,
            &checkpoint.root,
            proof,
        ) {
            tracing::error!(%log, since = last.size, size = checkpoint.size, "audit log of a member does not extend what it showed before: rewritten or forked");
            return ControlResponse::Inconsistent {
                since: last.size,
                reason: format!(
                    "checkpoint of {} entries does not extend the one of {} entries co-signed \
                     here: the log was rewritten or forked",
                    checkpoint.size, last.size
                ),
            };
        }
    }
    if let Err(e) = store.put_cosigned(&checkpoint) {
        return ControlResponse::Failed {
            reason: e.to_string(),
        };
    }
    ControlResponse::Cosignature(key.sign(CHECKPOINT_DOMAIN, &signed.bytes).to_vec())
}

#[cfg(test)]
mod tests {
    use slidemesh_protocol::audit::{Checkpoint, consistency_proof, leaf_hash, root};

    use super::*;

    fn signed(log: &NodeKey, leaves: &[Hash]) -> SignedCheckpoint {
        SignedCheckpoint::sign(
            &Checkpoint {
                log: "RR8".parse().unwrap(),
                size: leaves.len() as u64,
                root: root(leaves),
                time: 0,
            },
            log,
        )
    }

    #[test]
    fn cosigns_extensions_and_refuses_forks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.redb")).unwrap();
        let (me, log) = (NodeKey::generate(), NodeKey::generate());
        let trust: TrustCode = "RR8".parse().unwrap();
        let leaves: Vec<Hash> = (0..10u8).map(|i| leaf_hash(&[i])).collect();
        // This node (`me`) is asked to co-sign checkpoints of RR8's log.
        let ask = |checkpoint: &SignedCheckpoint, since: u64, proof: &[Hash]| {
            answer(&store, &me, &trust, &log.public(), checkpoint, since, proof)
        };
        let first = signed(&log, &leaves[..4]);
        let answer1 = ask(&first, 0, &[]);
        let ControlResponse::Cosignature(sig) = answer1 else {
            panic!("{answer1:?}")
        };
        me.public()
            .verify(CHECKPOINT_DOMAIN, &first.bytes, &sig)
            .unwrap();
        let second = signed(&log, &leaves);
        let proof = consistency_proof(4, &leaves);
        assert!(matches!(
            ask(&second, 4, &proof),
            ControlResponse::Cosignature(_)
        ));
        // A rewritten history of 12 entries cannot prove it extends the 10 co-signed.
        let mut forked = leaves.clone();
        forked[2] = leaf_hash(b"rewritten");
        forked.extend([leaf_hash(b"a"), leaf_hash(b"b")]);
        let proof = consistency_proof(10, &forked);
        assert!(matches!(
            ask(&signed(&log, &forked), 10, &proof),
            ControlResponse::Inconsistent { since: 10, .. }
        ));
        // Signed by someone else's key: refused.
        let stranger = NodeKey::generate();
        assert!(matches!(
            ask(&signed(&stranger, &leaves), 10, &[]),
            ControlResponse::Denied { .. }
        ));
    }
}
