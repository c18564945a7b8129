//! Plain values the unit tests of several modules build alike.

use slidemesh_protocol::{Member, NodeKey};

/// A roster member for `trust` whose node has `key`, with no addresses.
pub(crate) fn member(trust: &str, key: &NodeKey) -> Member {
    Member {
        trust: trust.parse().unwrap(),
        name: trust.into(),
        node: key.public(),
        addrs: vec![],
    }
}
