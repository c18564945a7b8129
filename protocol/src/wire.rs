//! What nodes say to each other: protocol names, control messages and the tile stream's
//! framing. Encoding is postcard (the node's codecs add a length prefix and cap every read
//! at the limits below); this module does no I/O.
//!
//! Tile stream (`/slidemesh/tiles/5`): a long-lived stream carrying any number of batches,
//! requests pipelined, answers in the order of the requests.
//! - server, once when it accepts the stream: [`TILE_SESSION_READY`]. A stream that ends
//!   before it was never served (the server refused or dropped it) and may be retried.
//! - requester, per batch: `u32` little-endian length, then postcard([`TileRequest`]).
//! - server, per batch: either one `Denied` or `Failed` status byte (nothing else for that
//!   batch), or
//!   for each requested tile in order one status byte ([`TileStatus`]); for `Ok` a `u32`
//!   little-endian length and the tile's bytes follow; after the last tile, a `u32`
//!   little-endian length and postcard(`Option<`[`SignedReceipt`]`>`): the server's receipt
//!   for the batch, sent once its decision is committed to its audit log (`None` when the
//!   log could not be written in time).
//!
//! The requester hashes every tile and compares it with the id it asked for before it
//! uses or caches it; a server is never trusted with content.

use serde::{Deserialize, Serialize};

use crate::audit::{SignedCheckpoint, SignedReceipt};
use crate::consent::SignedConsentStatement;
use crate::deidentified::SignedDeidentifiedView;

use crate::grant::{SignedGrant, SignedRevocation};
use crate::ids::{SlideId, TileId};
use crate::manifest::SignedManifest;
use crate::referral::{
    SignedClaim, SignedDirectory, SignedOffer, SignedOfferOutcome, SignedReferral,
    SignedReferralUpdate,
};
use crate::roster::SignedRoster;
use crate::user::UserClaim;

/// Request-response protocol for manifests, grants, revocations and rosters (2: receipts,
/// consent statements, de-identified views, refreshes; 3: a nonce per manifest request;
/// 4: referrals and their updates, claims of offered cases; 5: opinions carry annotations).
pub const CONTROL_PROTOCOL: &str = "/slidemesh/control/5";
/// Stream protocol for batches of tiles (2: several batches per stream, in order; 3: a
/// receipt after each batch; 4: the user who asked; 5: a nonce per request).
pub const TILES_PROTOCOL: &str = "/slidemesh/tiles/5";
/// Stream protocol a node uses, once connected to a member, to push a few hundred KiB of
/// filler the peer reads and acknowledges: the connection's congestion window grows before
/// the first tiles travel (framing: u64 LE length, the bytes; answer: one byte).
pub const WARM_UP_PROTOCOL: &str = "/slidemesh/warm-up/1";
/// Most filler bytes a node accepts on one warm-up stream.
pub const MAX_WARM_UP_BYTES: u64 = 8 << 20;
/// The byte that acknowledges a warm-up.
pub const WARM_UP_DONE: u8 = 0x57;
/// Kademlia protocol name: private to the federation, so the node never joins a public DHT.
pub const KAD_PROTOCOL: &str = "/slidemesh/kad/1";
/// Identify protocol version string.
pub const IDENTIFY_VERSION: &str = "slidemesh/1";
/// Gossipsub topic for federation-wide announcements.
pub const ANNOUNCE_TOPIC: &str = "slidemesh/announce/v1";

/// Largest control message either side reads (a manifest of a very large slide fits).
pub const MAX_CONTROL_MESSAGE: usize = 64 << 20;
/// Largest tile request header.
pub const MAX_TILE_REQUEST: usize = 1 << 20;
/// Most tile ids in one batch.
pub const MAX_TILES_PER_REQUEST: usize = 4096;
/// Largest single tile a requester accepts.
pub const MAX_TILE_BYTES: u32 = 64 << 20;
/// Largest receipt a requester reads after a batch.
pub const MAX_RECEIPT: usize = 64 << 10;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlRequest {
    /// The signed manifest of a slide, under a grant (which travels with the request, so
    /// any node holding the slide can check it without asking the owner).
    Manifest {
        slide: SlideId,
        grant: SignedGrant,
        /// The requester holds the manifest already and asks again for the owner's current
        /// rules (audited as a refresh, not as a new viewing).
        refresh: bool,
        /// Fresh for every request ([`ControlRequest::manifest`]) and named in the serving
        /// node's audit entry ([`request_tag`]), so its receipt answers this request only.
        nonce: [u8; 16],
    },
    /// The owner hands a new grant to its grantee.
    DeliverGrant(SignedGrant),
    /// The owner withdraws a grant.
    DeliverRevocation(SignedRevocation),
    /// Every roster version newer than `version` the server holds, oldest first.
    RosterAfter { version: u64 },
    /// A member asks the server to co-sign its audit log checkpoint. `proof` shows the
    /// checkpoint extends the last one the server co-signed for that log (`since` entries);
    /// empty when the server never co-signed one.
    Cosign {
        checkpoint: SignedCheckpoint,
        since: u64,
        proof: Vec<crate::audit::Hash>,
    },
    /// The referring trust hands a referral to the trust it refers to (after the grants it
    /// names, which travel first on the same ordered queue).
    DeliverReferral(SignedReferral),
    /// A step of a referral, from the trust that took it to the other side.
    DeliverReferralUpdate(SignedReferralUpdate),
    /// A member claims a case another offered to the co-operative's queue (answered
    /// `Accepted` when it is the first claim, `Denied` naming the taker otherwise).
    ClaimOffer(SignedClaim),
    /// A research query's grouped counts over the server's own slides, released under its
    /// own policy and disclosure control (answered `Counts`, or `Denied` naming why).
    Query(crate::query::QueryRequest),
    /// An approved project's cohort from the server's own slides (answered `Cohort`, or
    /// `Denied` naming why).
    Cohort(crate::query::CohortRequest),
}

/// Why a request was not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The grant or the policy says no: asking again as is gets the same answer.
    Denied(String),
    /// This node could not decide (its store or audit log failed): the requester should ask
    /// again later, and must not take it for the owner's refusal.
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

impl From<Refusal> for ControlResponse {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Denied(reason) => ControlResponse::Denied { reason },
            Refusal::Failed(reason) => ControlResponse::Failed { reason },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlResponse {
    /// The slide's manifest, with the owner's consent statement for it (what a node that
    /// serves the slide's tiles to others decides with) and the server's receipt.
    Manifest {
        manifest: SignedManifest,
        consent: Option<SignedConsentStatement>,
        receipt: Option<SignedReceipt>,
    },
    Accepted,
    Rosters(Vec<SignedRoster>),
    /// Policy said no. The reason is for logs; it names no patient data.
    Denied {
        reason: String,
    },
    NotFound,
    Failed {
        reason: String,
    },
    /// The server's co-signature over the checkpoint's bytes.
    Cosignature(Vec<u8>),
    /// The server co-signed a checkpoint of `since` entries that the new one does not extend
    /// (or it co-signed a bigger one): the log was rewritten or forked.
    Inconsistent {
        since: u64,
        reason: String,
    },
    /// The slide's de-identified view, sent instead of its manifest when the grant's
    /// purpose does not allow the patient's identity to leave the owner.
    DeidentifiedManifest {
        manifest: SignedManifest,
        view: SignedDeidentifiedView,
        consent: Option<SignedConsentStatement>,
        receipt: Option<SignedReceipt>,
    },
    /// A research query's counts as the server released them.
    Counts(crate::query::ReleasedCounts),
    /// An approved project's cohort as the server released it.
    Cohort(Vec<crate::query::CohortMember>),
}

/// Gossiped to every member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Announcement {
    Roster(SignedRoster),
    Revocation(SignedRevocation),
    /// A trust's referral directory, announced when its node starts and every few minutes.
    Directory(SignedDirectory),
    /// A case offered to the co-operative's queue, announced while it is open.
    Offer(SignedOffer),
    /// Who took an offered case (or that it is off the queue), announced by its offerer.
    OfferOutcome(SignedOfferOutcome),
}

/// One batch of tiles of one slide, under one grant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TileRequest {
    pub slide: SlideId,
    pub grant: SignedGrant,
    pub tiles: Vec<TileId>,
    /// The person at the requesting trust whose viewing asked for the batch, when its node
    /// names one; `None` when the trust's node asks on its own behalf (prefetch for no
    /// one in particular, a whole-slide copy made by an operator).
    pub user: Option<UserClaim>,
    /// Fresh for every request ([`TileRequest::new`]), and part of the batch's audit label:
    /// a server cannot answer a repeated batch with the receipt of an earlier one instead
    /// of logging the new access.
    pub nonce: [u8; 16],
}

impl ControlRequest {
    /// A manifest request with a fresh random nonce.
    pub fn manifest(slide: SlideId, grant: SignedGrant, refresh: bool) -> Self {
        Self::Manifest {
            slide,
            grant,
            refresh,
            nonce: fresh_nonce(),
        }
    }
}

/// How audit entries name one request by its nonce (16 hex characters).
pub fn request_tag(nonce: &[u8; 16]) -> String {
    blake3::hash(nonce).to_hex()[..16].to_string()
}

/// A random request nonce.
pub fn fresh_nonce() -> [u8; 16] {
    use rand_core::RngCore;
    let mut nonce = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut nonce);
    nonce
}

impl TileRequest {
    /// A request with a fresh random nonce.
    pub fn new(
        slide: SlideId,
        grant: SignedGrant,
        tiles: Vec<TileId>,
        user: Option<UserClaim>,
    ) -> Self {
        Self {
            slide,
            grant,
            tiles,
            user,
            nonce: fresh_nonce(),
        }
    }

    /// How the serving node describes this batch in its audit entry (and so in its
    /// receipt): the tile count and a digest of the requested ids and the request's nonce,
    /// which ties a receipt to the one request it answers.
    pub fn audit_label(&self) -> String {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.nonce);
        for tile in &self.tiles {
            hasher.update(tile.as_bytes());
        }
        let digest = hasher.finalize().to_hex();
        format!("{} tiles, batch {}", self.tiles.len(), &digest[..16])
    }
}

/// The server's first byte on a tile stream it accepted.
pub const TILE_SESSION_READY: u8 = 0x53;

/// Per-tile status byte on the tile stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TileStatus {
    Ok = 0,
    Missing = 1,
    Denied = 2,
    /// The server could not decide (its store failed): ask again later, or elsewhere. Sent,
    /// like `Denied`, as the only byte of a batch's answer.
    Failed = 3,
}

impl TileStatus {
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::Ok),
            1 => Some(Self::Missing),
            2 => Some(Self::Denied),
            3 => Some(Self::Failed),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Action, Grant, NodeKey, Purpose};

    #[test]
    fn each_request_has_its_own_audit_label() {
        let key = NodeKey::generate();
        let grant = SignedGrant::sign(
            &Grant {
                slide: SlideId::of(b"s"),
                owner: "RR8".parse().unwrap(),
                grantee: "RAE".parse().unwrap(),
                action: Action::View,
                purpose: Purpose::SecondOpinion,
                reference: None,
                issued_at: 1,
                expires_at: 2,
            },
            &key,
        )
        .unwrap();
        let tiles = vec![TileId::of(b"a"), TileId::of(b"b")];
        let first = TileRequest::new(SlideId::of(b"s"), grant.clone(), tiles.clone(), None);
        let again = TileRequest::new(SlideId::of(b"s"), grant, tiles, None);
        assert!(first.audit_label().starts_with("2 tiles, batch "));
        // The same tiles asked for again: a receipt for the first cannot pass for the second.
        assert_ne!(first.audit_label(), again.audit_label());
        assert_eq!(first.audit_label(), first.clone().audit_label());
        // Manifest requests too: each is named by its own tag.
        let tag = |r: &ControlRequest| match r {
            ControlRequest::Manifest { nonce, .. } => request_tag(nonce),
            _ => unreachable!(),
        };
        let grant = first.grant.clone();
        let (a, b) = (
            ControlRequest::manifest(SlideId::of(b"s"), grant.clone(), false),
            ControlRequest::manifest(SlideId::of(b"s"), grant, false),
        );
        assert_eq!(tag(&a).len(), 16);
        assert_ne!(tag(&a), tag(&b));
    }
}
