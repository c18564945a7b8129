//! Fixed keys and statements the harnesses check inputs against, and the seed generator
//! builds its seeds from. Everything is derived from constants, so seeds are the same
//! bytes every time they are generated (ed25519 signatures are deterministic).

use std::sync::LazyLock;

use slidemesh_protocol::{
    Action, Grant, GrantId, Member, NodeKey, Purpose, Roster, SignedGrant, SlideId, TileId,
    TrustCode,
};

/// How many fixture keys there are: [`key`] takes 0 to `KEYS - 1`.
pub const KEYS: usize = 4;

/// The fixture node keys. 0 signs everything the signed-here shape signs (and is the
/// owner of the fixture grant); 0, 1 and 2 are the members of [`genesis`]; 3 belongs to
/// no roster (an outsider). Computed once: deriving a public key costs a scalar
/// multiplication, which would otherwise dominate every run.
static FIXTURE_KEYS: LazyLock<[NodeKey; KEYS]> =
    LazyLock::new(|| std::array::from_fn(|i| NodeKey::from_secret_bytes([i as u8 + 1; 32])));

pub fn key(index: usize) -> &'static NodeKey {
    &FIXTURE_KEYS[index % KEYS]
}

/// The key of the signed-here shape.
pub fn signer() -> &'static NodeKey {
    key(0)
}

pub fn trust(code: &str) -> TrustCode {
    code.parse().expect("fixture trust codes are valid")
}

/// The trust codes of [`genesis`]'s members, in the order of their keys.
pub const MEMBERS: [&str; 3] = ["RR8", "RAE", "RCD"];

/// The federation's first roster: three members, two of whom must sign any change. The
/// roster target checks every successor an input proposes against it.
pub fn genesis() -> Roster {
    roster(1, &[0, 1, 2])
}

/// A roster version of the fixture federation with the given fixture keys as members.
pub fn roster(version: u64, keys: &[usize]) -> Roster {
    let mut roster = Roster {
        federation: "fuzz".into(),
        version,
        quorum: 2,
        members: keys
            .iter()
            .map(|&k| Member {
                trust: trust(MEMBERS.get(k).copied().unwrap_or("RXF")),
                name: format!("member {k}"),
                node: key(k).public(),
                addrs: vec![format!("/ip4/127.0.0.1/udp/{}/quic-v1", 4000 + k)],
            })
            .collect(),
        issued_at: 1_800_000_000 + version,
    };
    roster.normalise();
    roster
}

pub fn slide() -> SlideId {
    SlideId::of(b"fuzz fixture slide")
}

/// A grant from [`MEMBERS`]\[0\] (key 0) to [`MEMBERS`]\[1\]: the one revocations are
/// checked against ([`slidemesh_protocol::SignedRevocation::verify_by_issuer`]).
pub fn grant() -> Grant {
    Grant {
        slide: slide(),
        owner: trust(MEMBERS[0]),
        grantee: trust(MEMBERS[1]),
        action: Action::View,
        purpose: Purpose::SecondOpinion,
        reference: Some("REF-1".into()),
        issued_at: 1_800_000_000,
        expires_at: 1_800_086_400,
    }
}

pub fn signed_grant() -> SignedGrant {
    SignedGrant::sign(&grant(), signer()).expect("the fixture grant is consistent")
}

pub fn grant_id() -> GrantId {
    signed_grant().id()
}

/// The bytes of the `index`th tile a requester asks for on the tile stream: the harness
/// asks for tiles whose content it knows, so a peer's answer can be checked against them
/// as the node checks it (by hashing).
pub fn tile_bytes(index: usize) -> Vec<u8> {
    format!("fuzz fixture tile {index}").into_bytes()
}

pub fn tile_id(index: usize) -> TileId {
    TileId::of(&tile_bytes(index))
}
