//! slidemesh-protocol: the data every slidemesh node must agree on, byte for byte.
//!
//! Layout:
//! - [`ids`]: content ids (`TileId`, `SlideId`, `ObjectId`), BLAKE3 digests shown as hex.
//! - [`trust`]: `TrustCode`, an NHS ODS organisation code naming a member trust.
//! - [`canonical`]: the versioned canonical encoding used for everything hashed or signed.
//! - [`manifest`]: `SlideManifest`, a slide's levels, tiles and metadata, and its signed form.
//! - [`sign`]: node signing keys and the domain-separated signatures over canonical bytes.
//!
//! Architecture invariant: this crate does no I/O and knows nothing of tokio, libp2p, redb
//! or DICOM parsing. It is the API boundary between nodes: changing how a type encodes
//! changes every id, so such changes bump the canonical version.

pub mod canonical;
pub mod ids;
pub mod manifest;
pub mod sign;
pub mod trust;

pub use canonical::{CANONICAL_VERSION, CanonicalError};
pub use ids::{IdParseError, ObjectId, SlideId, TileId};
pub use manifest::{
    AssociatedImage, AssociatedKind, DimensionOrganization, InstanceMeta, InstanceRole, Level,
    ManifestError, OpticalPath, SignedManifest, SlideManifest, TilePosition,
};
pub use sign::{NodeKey, NodePublicKey, SignatureError};
pub use trust::{COOPERATIVE_TRUSTS, TrustCode, TrustCodeError};
