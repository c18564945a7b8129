//! slidemesh-protocol: the data every slidemesh node must agree on, byte for byte.
//!
//! Layout:
//! - [`ids`]: content ids (`TileId`, `SlideId`, `ObjectId`), BLAKE3 digests shown as hex.
//! - [`trust`]: `TrustCode`, an NHS ODS organisation code naming a member trust.
//! - [`canonical`]: the versioned canonical encoding used for everything hashed or signed.
//! - [`manifest`]: `SlideManifest`, a slide's levels, tiles and metadata, and its signed form.
//! - [`consent`]: a slide's recorded consent and the owner's signed consent statement
//!   (its policy text, that consent and the grants that hold), which replicas decide with.
//! - [`deidentified`]: the owner's signed statement that a de-identified manifest is a view
//!   of a slide, made for one project.
//! - [`annotation`]: the marks a specialist draws on a referral's slides, and what they
//!   measure.
//! - [`query`]: research queries (a grouped count over slide records), their text and JSON
//!   forms and their evaluation, the same at every site.
//! - [`referral`]: a signed referral of a case's slides to another trust for an opinion,
//!   and the signed updates (delivered, opened, answered, ...) both sides keep.
//! - [`sign`]: node signing keys and the domain-separated signatures over canonical bytes.
//! - [`roster`]: the federation's signed, versioned membership list (k-of-n changes).
//! - [`grant`]: an owner's signed permission for another trust to view a slide, and its
//!   revocation (which counts only when signed by the grant's issuer).
//! - [`user`]: the person behind a request and their role, as their trust's node names them.
//! - [`wire`]: protocol names, control messages and the tile stream's framing.
//!
//! Architecture invariant: this crate does no I/O and knows nothing of tokio, libp2p, redb
//! or DICOM parsing. It is the API boundary between nodes: changing how a type encodes
//! changes every id, so such changes bump the canonical version.

pub mod annotation;
pub mod audit;
pub mod canonical;
pub mod consent;
pub mod deidentified;
pub mod grant;
pub mod ids;
pub mod manifest;
pub mod query;
pub mod referral;
pub mod roster;
pub mod sign;
pub mod trust;
pub mod user;
pub mod wire;

pub use annotation::{Annotation, Point, Shape};
pub use canonical::{CANONICAL_VERSION, CanonicalError};
pub use deidentified::{DeidentifiedView, SignedDeidentifiedView};
pub use grant::{Action, Grant, GrantError, Purpose, Revocation, SignedGrant, SignedRevocation};
pub use ids::{GrantId, IdParseError, ObjectId, ReferralId, RosterId, SlideId, TileId};
pub use manifest::{
    AssociatedImage, AssociatedKind, DimensionOrganization, InstanceMeta, InstanceRole, Level,
    ManifestError, OpticalPath, SignedManifest, SlideManifest, TilePosition,
};
pub use referral::{
    Claim, Directory, Offer, OfferOutcome, Opinion, QueueEntry, Recipient, Referral,
    ReferralUpdate, SignedClaim, SignedDirectory, SignedOffer, SignedOfferOutcome, SignedReferral,
    SignedReferralUpdate, SpecialistEntry, Step, Urgency,
};
pub use roster::{Member, Roster, RosterError, RosterSignature, SignedRoster};
pub use sign::{NodeKey, NodePublicKey, SignatureError, Signed, Statement, StatementError};
pub use trust::{COOPERATIVE_TRUSTS, TrustCode, TrustCodeError};
pub use user::{UserClaim, UserClaimError};
