//! The node key as a libp2p identity: the same ed25519 key signs manifests and grants and
//! authenticates the node's connections, so a roster entry's key *is* its PeerId.

use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey, ed25519};
use slidemesh_protocol::{NodeKey, NodePublicKey};

/// The libp2p keypair of a node key.
pub fn keypair(key: &NodeKey) -> Keypair {
    let mut secret = key.secret_bytes();
    // An ed25519 secret is any 32 bytes, so this cannot fail for a NodeKey.
    Keypair::ed25519_from_bytes(&mut secret).expect("a 32-byte ed25519 secret is always valid")
}

/// The PeerId of a node public key, or `None` if the bytes are not a valid ed25519 point.
pub fn peer_id(key: &NodePublicKey) -> Option<PeerId> {
    let public = ed25519::PublicKey::try_from_bytes(key.as_bytes()).ok()?;
    Some(PeerId::from_public_key(&PublicKey::from(public)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_key_and_libp2p_identity_agree() {
        let key = NodeKey::generate();
        assert_eq!(
            keypair(&key).public().to_peer_id(),
            peer_id(&key.public()).unwrap()
        );
    }
}
