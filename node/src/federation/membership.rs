//! Membership: the roster in force and who each connected peer speaks for.
//!
//! Plain state, no I/O: the roster loops ([`super::tasks`]) decide which version to adopt
//! and hand it here; the answering and fetching sides only look members up. Lookups by
//! PeerId are answered from a table built once per adopted version, not by deriving every
//! member's PeerId on every request.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use libp2p::{Multiaddr, PeerId};
use slidemesh_protocol::{NodePublicKey, Roster, TrustCode};

use crate::net::identity;

/// Addresses to dial member trusts at instead of their roster entries'.
pub type PeerAddresses = HashMap<TrustCode, Vec<Multiaddr>>;

/// One adopted roster version and the lookups derived from it.
struct Members {
    roster: Arc<Roster>,
    trust_by_peer: HashMap<PeerId, TrustCode>,
    peer_by_trust: HashMap<TrustCode, PeerId>,
}

impl Members {
    fn of(roster: Roster) -> Self {
        let peers: Vec<(PeerId, TrustCode)> = roster
            .members
            .iter()
            .filter_map(|m| Some((identity::peer_id(&m.node)?, m.trust.clone())))
            .collect();
        Self {
            trust_by_peer: peers.iter().cloned().collect(),
            peer_by_trust: peers.into_iter().map(|(p, t)| (t, p)).collect(),
            roster: Arc::new(roster),
        }
    }
}

/// The roster in force (none until this node joined a federation) and the addresses
/// config names for some members (`network.peer_addresses`, `serve --peer-address`).
pub struct Membership {
    current: RwLock<Option<Arc<Members>>>,
    configured: PeerAddresses,
}

impl Membership {
    pub fn new(roster: Option<Roster>, configured: PeerAddresses) -> Self {
        Self {
            current: RwLock::new(roster.map(|r| Arc::new(Members::of(r)))),
            configured,
        }
    }

    fn members(&self) -> Option<Arc<Members>> {
        self.current.read().ok().and_then(|m| m.clone())
    }

    /// The roster in force.
    pub fn roster(&self) -> Option<Arc<Roster>> {
        self.members().map(|m| m.roster.clone())
    }

    /// Puts `roster` in force when it is newer than the one in force (the caller verified
    /// it is a valid successor); says whether it did.
    pub fn adopt(&self, roster: Roster) -> bool {
        let Ok(mut current) = self.current.write() else {
            return false;
        };
        if current
            .as_ref()
            .is_some_and(|m| m.roster.version >= roster.version)
        {
            return false;
        }
        *current = Some(Arc::new(Members::of(roster)));
        true
    }

    /// The member trust a connected peer speaks for.
    pub fn trust_of(&self, peer: &PeerId) -> Option<TrustCode> {
        self.members()?.trust_by_peer.get(peer).cloned()
    }

    /// The PeerId of a member trust's node.
    pub fn peer_of(&self, trust: &TrustCode) -> Option<PeerId> {
        self.members()?.peer_by_trust.get(trust).copied()
    }

    /// The roster key of a member trust's node.
    pub fn node_key_of(&self, trust: &TrustCode) -> Option<NodePublicKey> {
        self.roster()?.member(trust).map(|m| m.node)
    }

    /// The members' PeerIds and the addresses to dial them at, as the network's member
    /// gate needs them: the roster's, unless config names others for that trust.
    pub fn dial_table(&self) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let Some(members) = self.members() else {
            return Vec::new();
        };
        members
            .roster
            .members
            .iter()
            .filter_map(|m| {
                let peer = *members.peer_by_trust.get(&m.trust)?;
                let addrs = match self.configured.get(&m.trust) {
                    Some(addrs) => addrs.clone(),
                    None => m.addrs.iter().filter_map(|a| a.parse().ok()).collect(),
                };
                Some((peer, addrs))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use slidemesh_protocol::NodeKey;
    use slidemesh_protocol::roster::Member;

    use super::*;

    fn member(trust: &str, key: &NodeKey, addr: &str) -> Member {
        Member {
            addrs: vec![addr.to_string()],
            ..crate::testing::member(trust, key)
        }
    }

    fn roster(version: u64, members: Vec<Member>) -> Roster {
        Roster {
            federation: "north".into(),
            version,
            quorum: 1,
            members,
            issued_at: 1,
        }
    }

    #[test]
    fn looks_members_up_both_ways_and_only_in_the_roster_in_force() {
        let (a, b, c) = (
            NodeKey::generate(),
            NodeKey::generate(),
            NodeKey::generate(),
        );
        let peer = |k: &NodeKey| identity::peer_id(&k.public()).unwrap();
        let rae: TrustCode = "RAE".parse().unwrap();
        let rr8: TrustCode = "RR8".parse().unwrap();
        let rwa: TrustCode = "RWA".parse().unwrap();
        let membership = Membership::new(None, PeerAddresses::new());
        assert_eq!(membership.trust_of(&peer(&a)), None);
        assert!(membership.dial_table().is_empty());
        assert!(membership.roster().is_none());

        let v1 = roster(
            1,
            vec![
                member("RAE", &a, "/ip4/127.0.0.1/tcp/1"),
                member("RR8", &b, "/ip4/127.0.0.1/tcp/2"),
            ],
        );
        assert!(membership.adopt(v1.clone()));
        assert_eq!(membership.trust_of(&peer(&a)), Some(rae.clone()));
        assert_eq!(membership.peer_of(&rr8), Some(peer(&b)));
        assert_eq!(membership.node_key_of(&rae), Some(a.public()));
        assert_eq!(membership.trust_of(&peer(&c)), None);

        // An older or equal version is not adopted over a newer one.
        assert!(!membership.adopt(v1));
        let v2 = roster(
            2,
            vec![
                member("RAE", &a, "/ip4/127.0.0.1/tcp/1"),
                member("RWA", &c, "/ip4/127.0.0.1/tcp/3"),
            ],
        );
        assert!(membership.adopt(v2.clone()));
        assert!(!membership.adopt(roster(1, v2.members.clone())));
        assert_eq!(membership.roster().map(|r| r.version), Some(2));
        // RR8 left: its node is no longer a member, RWA's is.
        assert_eq!(membership.trust_of(&peer(&b)), None);
        assert_eq!(membership.peer_of(&rr8), None);
        assert_eq!(membership.trust_of(&peer(&c)), Some(rwa));
    }

    #[test]
    fn configured_addresses_replace_a_members_roster_addresses() {
        let (a, b) = (NodeKey::generate(), NodeKey::generate());
        let rr8: TrustCode = "RR8".parse().unwrap();
        let elsewhere: Multiaddr = "/ip4/10.0.0.9/tcp/7400".parse().unwrap();
        let membership = Membership::new(
            Some(roster(
                1,
                vec![
                    member("RAE", &a, "/ip4/127.0.0.1/tcp/1"),
                    member("RR8", &b, "/ip4/127.0.0.1/tcp/2"),
                ],
            )),
            PeerAddresses::from([(rr8, vec![elsewhere.clone()])]),
        );
        let table: HashMap<PeerId, Vec<Multiaddr>> = membership.dial_table().into_iter().collect();
        let peer = |k: &NodeKey| identity::peer_id(&k.public()).unwrap();
        assert_eq!(
            table[&peer(&a)],
            vec!["/ip4/127.0.0.1/tcp/1".parse::<Multiaddr>().unwrap()]
        );
        assert_eq!(table[&peer(&b)], vec![elsewhere]);
    }
}
