//! `SlideManifest`: what a slide is, in a form every node hashes and verifies the same way.
//!
//! A manifest lists the slide's pyramid levels (largest first), each level's tile grid and
//! the id of every tile in DICOM frame order, the associated LABEL / OVERVIEW / THUMBNAIL
//! images, the optical paths, and for each DICOM instance its metadata as canonical DICOM
//! JSON (without bulk data) plus the id of the original file. It says nothing about where a
//! node keeps the bytes: byte offsets are node-local and live in the node's store.
//!
//! The slide id is BLAKE3 of the manifest's canonical encoding. The owning node signs those
//! same bytes; a [`SignedManifest`] carries bytes, signer and signature so that any node can
//! check it without trusting whoever relayed it.

use serde::{Deserialize, Serialize};

use crate::canonical::{self, CanonicalError};
use crate::ids::{ObjectId, SlideId, TileId};
use crate::sign::{NodeKey, NodePublicKey, SignatureError};
use crate::trust::TrustCode;

/// Signature domain for manifests. The owner signs the slide id (BLAKE3 of the canonical
/// bytes), not the bytes themselves: the id already commits to every byte, and ed25519 over
/// a megabyte-sized manifest would hash it twice with SHA-512 at a fraction of BLAKE3's speed.
pub const MANIFEST_DOMAIN: &str = "slidemesh/slide-id/v1";

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    #[error("manifest encoding: {0}")]
    Encoding(#[from] CanonicalError),
    #[error("manifest signature: {0}")]
    Signature(#[from] SignatureError),
    #[error("inconsistent manifest: {0}")]
    Inconsistent(String),
}

/// How a level's frames cover its tile grid (DICOM Dimension Organization Type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DimensionOrganization {
    /// Every grid position has a frame, in the order column, row, focal plane, optical path.
    TiledFull,
    /// Frames carry explicit positions; grid positions without a frame are empty.
    TiledSparse,
}

/// Where a frame of a sparse level sits in the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TilePosition {
    pub col: u32,
    pub row: u32,
    pub focal_plane: u32,
    pub optical_path: u32,
}

/// One pyramid level: one VOLUME instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Level {
    /// Total pixel matrix size of this level.
    pub width: u32,
    pub height: u32,
    /// Frame size; edge tiles are full-size frames padded by the scanner.
    pub tile_width: u32,
    pub tile_height: u32,
    /// (row spacing, column spacing) in millimetres, when the instance states it.
    pub pixel_spacing_mm: Option<[f64; 2]>,
    pub focal_planes: u32,
    pub optical_paths: u32,
    pub organization: DimensionOrganization,
    /// Tile ids in DICOM frame order.
    pub tiles: Vec<TileId>,
    /// For `TiledSparse`, one position per tile; empty for `TiledFull`.
    pub positions: Vec<TilePosition>,
    /// The SOP Instance UIDs holding this level, in frame order: one, or the parts of a
    /// concatenation.
    pub instance_uids: Vec<String>,
}

impl Level {
    pub fn cols(&self) -> u32 {
        self.width.div_ceil(self.tile_width.max(1))
    }

    pub fn rows(&self) -> u32 {
        self.height.div_ceil(self.tile_height.max(1))
    }

    /// The tile at a grid position in the first focal plane and optical path, if present.
    pub fn tile_at(&self, col: u32, row: u32) -> Option<TileId> {
        if col >= self.cols() || row >= self.rows() {
            return None;
        }
        match self.organization {
            DimensionOrganization::TiledFull => {
                let frame = row as usize * self.cols() as usize + col as usize;
                self.tiles.get(frame).copied()
            }
            DimensionOrganization::TiledSparse => self
                .positions
                .iter()
                .position(|p| {
                    p.col == col && p.row == row && p.focal_plane == 0 && p.optical_path == 0
                })
                .and_then(|i| self.tiles.get(i).copied()),
        }
    }

    fn check(&self, what: &str) -> Result<(), ManifestError> {
        let bad = |msg: String| Err(ManifestError::Inconsistent(format!("{what}: {msg}")));
        if self.width == 0 || self.height == 0 || self.tile_width == 0 || self.tile_height == 0 {
            return bad("zero size".into());
        }
        match self.organization {
            DimensionOrganization::TiledFull => {
                // Checked: a peer's manifest may claim a grid whose size does not fit in
                // u64, which must be refused, not wrapped to a count that happens to match.
                let expected = [
                    self.rows() as u64,
                    self.focal_planes.max(1) as u64,
                    self.optical_paths.max(1) as u64,
                ]
                .into_iter()
                .try_fold(self.cols() as u64, |n, factor| n.checked_mul(factor));
                let Some(expected) = expected else {
                    return bad("a tile grid too large to count".into());
                };
                if self.tiles.len() as u64 != expected {
                    return bad(format!(
                        "{} tiles for a full grid of {expected}",
                        self.tiles.len()
                    ));
                }
                if !self.positions.is_empty() {
                    return bad("positions given for a TILED_FULL level".into());
                }
            }
            DimensionOrganization::TiledSparse => {
                if self.positions.len() != self.tiles.len() {
                    return bad(format!(
                        "{} positions for {} tiles",
                        self.positions.len(),
                        self.tiles.len()
                    ));
                }
                if let Some(p) = self
                    .positions
                    .iter()
                    .find(|p| p.col >= self.cols() || p.row >= self.rows())
                {
                    return bad(format!(
                        "tile position ({}, {}) outside the grid",
                        p.col, p.row
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Which associated (non-pyramid) image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AssociatedKind {
    /// The slide label: usually carries patient identifiers.
    Label,
    /// A low-magnification photo of the whole glass slide, label included.
    Overview,
    /// A small rendering of the tissue for lists.
    Thumbnail,
}

impl AssociatedKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Label => "label",
            Self::Overview => "overview",
            Self::Thumbnail => "thumbnail",
        }
    }
}

/// A LABEL, OVERVIEW or THUMBNAIL instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssociatedImage {
    pub kind: AssociatedKind,
    pub width: u32,
    pub height: u32,
    pub tile_width: u32,
    pub tile_height: u32,
    /// Frame ids in order; a single-frame image has one.
    pub tiles: Vec<TileId>,
    pub instance_uid: String,
}

/// An optical path of the slide (brightfield slides have one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpticalPath {
    pub identifier: String,
    pub description: Option<String>,
}

/// What an instance contributes to the slide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceRole {
    /// A pyramid level, by index into [`SlideManifest::levels`].
    Level(u32),
    Associated(AssociatedKind),
}

/// One DICOM instance of the slide and its original file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceMeta {
    pub sop_instance_uid: String,
    pub role: InstanceRole,
    pub transfer_syntax_uid: String,
    /// BLAKE3 of the original file, as kept unchanged in the owner's object store.
    pub object: ObjectId,
    pub file_len: u64,
    /// The instance's data set (file meta excluded) in the DICOM JSON model, bulk data
    /// omitted, keys sorted: canonical so that the slide id is stable.
    pub metadata_json: String,
}

/// A whole slide: one DICOM series of VL Whole Slide Microscopy instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlideManifest {
    /// The trust that owns the slide and signs this manifest.
    pub owner: TrustCode,
    pub study_uid: String,
    pub series_uid: String,
    pub frame_of_reference_uid: Option<String>,
    /// Pyramid levels, largest (full resolution) first.
    pub levels: Vec<Level>,
    /// Associated images, sorted by kind then instance UID.
    pub associated: Vec<AssociatedImage>,
    pub optical_paths: Vec<OpticalPath>,
    /// Instances sorted by SOP Instance UID.
    pub instances: Vec<InstanceMeta>,
}

impl SlideManifest {
    /// The canonical bytes that are hashed and signed.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        canonical::encode(self)
    }

    /// The slide id: BLAKE3 of the canonical bytes.
    pub fn slide_id(&self) -> SlideId {
        SlideId::of(&self.canonical_bytes())
    }

    /// Every tile id of the slide (levels then associated images), duplicates included.
    pub fn all_tiles(&self) -> impl Iterator<Item = &TileId> {
        self.levels
            .iter()
            .flat_map(|l| l.tiles.iter())
            .chain(self.associated.iter().flat_map(|a| a.tiles.iter()))
    }

    pub fn associated(&self, kind: AssociatedKind) -> Option<&AssociatedImage> {
        self.associated.iter().find(|a| a.kind == kind)
    }

    /// Checks the structural invariants a node relies on before it serves or caches a slide.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.levels.is_empty() {
            return Err(ManifestError::Inconsistent("no pyramid levels".into()));
        }
        for (i, level) in self.levels.iter().enumerate() {
            level.check(&format!("level {i}"))?;
        }
        if self.levels.windows(2).any(|w| w[0].width < w[1].width) {
            return Err(ManifestError::Inconsistent(
                "levels not ordered largest first".into(),
            ));
        }
        for image in &self.associated {
            if image.tiles.is_empty() {
                return Err(ManifestError::Inconsistent(format!(
                    "{} image has no frames",
                    image.kind.as_str()
                )));
            }
        }
        if self
            .instances
            .windows(2)
            .any(|w| w[0].sop_instance_uid >= w[1].sop_instance_uid)
        {
            return Err(ManifestError::Inconsistent(
                "instances not sorted and unique".into(),
            ));
        }
        Ok(())
    }
}

/// A manifest as published by its owner: canonical bytes, the signer's key and signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignedManifest {
    /// Decoded as one slice (a 20,000-tile manifest is about 650 KB); encoded exactly as a
    /// plain `Vec<u8>` would be.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
    pub signer: NodePublicKey,
    pub signature: Vec<u8>,
}

impl SignedManifest {
    /// Signs `manifest` with the owner's node key.
    pub fn sign(manifest: &SlideManifest, key: &NodeKey) -> Self {
        let bytes = manifest.canonical_bytes();
        let signature = key
            .sign(MANIFEST_DOMAIN, SlideId::of(&bytes).as_bytes())
            .to_vec();
        Self {
            bytes,
            signer: key.public(),
            signature,
        }
    }

    pub fn slide_id(&self) -> SlideId {
        SlideId::of(&self.bytes)
    }

    /// Verifies the signature and decodes and validates the manifest. Whether the signer
    /// may speak for `manifest.owner` is the caller's question (it needs the roster).
    pub fn verify(&self) -> Result<SlideManifest, ManifestError> {
        self.signer
            .verify(MANIFEST_DOMAIN, self.slide_id().as_bytes(), &self.signature)?;
        let manifest: SlideManifest = canonical::decode(&self.bytes)?;
        manifest.validate()?;
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_manifest_bytes_encode_as_a_plain_byte_vector_would() {
        #[derive(Serialize)]
        struct Plain<'a> {
            bytes: &'a Vec<u8>,
            signer: &'a NodePublicKey,
            signature: &'a Vec<u8>,
        }
        let signed = SignedManifest::sign(&sample(), &NodeKey::generate());
        let plain = Plain {
            bytes: &signed.bytes,
            signer: &signed.signer,
            signature: &signed.signature,
        };
        assert_eq!(
            postcard::to_allocvec(&signed).unwrap(),
            postcard::to_allocvec(&plain).unwrap()
        );
        assert_eq!(
            serde_json::to_string(&signed).unwrap(),
            serde_json::to_string(&plain).unwrap()
        );
        let back: SignedManifest =
            postcard::from_bytes(&postcard::to_allocvec(&plain).unwrap()).unwrap();
        assert_eq!(back, signed);
    }

    pub(crate) fn sample() -> SlideManifest {
        let tiles: Vec<TileId> = (0..6u8).map(|i| TileId::of(&[i])).collect();
        SlideManifest {
            owner: "RR8".parse().unwrap(),
            study_uid: "2.25.1".into(),
            series_uid: "2.25.2".into(),
            frame_of_reference_uid: Some("2.25.3".into()),
            levels: vec![Level {
                width: 600,
                height: 400,
                tile_width: 256,
                tile_height: 256,
                pixel_spacing_mm: Some([0.00025, 0.00025]),
                focal_planes: 1,
                optical_paths: 1,
                organization: DimensionOrganization::TiledFull,
                tiles,
                positions: vec![],
                instance_uids: vec!["2.25.4".into()],
            }],
            associated: vec![],
            optical_paths: vec![OpticalPath {
                identifier: "1".into(),
                description: None,
            }],
            instances: vec![],
        }
    }

    #[test]
    fn slide_id_is_stable_and_content_sensitive() {
        let a = sample();
        assert_eq!(a.slide_id(), sample().slide_id());
        let mut b = sample();
        b.levels[0].tiles.swap(0, 1);
        assert_ne!(a.slide_id(), b.slide_id());
    }

    #[test]
    fn tile_grid_lookup() {
        let m = sample();
        let level = &m.levels[0];
        assert_eq!((level.cols(), level.rows()), (3, 2));
        assert_eq!(level.tile_at(1, 1), Some(TileId::of(&[4])));
        assert_eq!(level.tile_at(3, 0), None);
    }

    #[test]
    fn signed_manifest_verifies_and_detects_tampering() {
        let key = NodeKey::generate();
        let signed = SignedManifest::sign(&sample(), &key);
        assert_eq!(signed.verify().unwrap(), sample());
        assert_eq!(signed.slide_id(), sample().slide_id());
        let mut tampered = signed.clone();
        let last = tampered.bytes.len() - 1;
        tampered.bytes[last] ^= 1;
        assert!(matches!(
            tampered.verify(),
            Err(ManifestError::Signature(_))
        ));
        let mut other_signer = signed;
        other_signer.signer = NodeKey::generate().public();
        assert!(other_signer.verify().is_err());
    }

    #[test]
    fn validate_refuses_incomplete_grids() {
        let mut m = sample();
        m.levels[0].tiles.pop();
        assert!(matches!(m.validate(), Err(ManifestError::Inconsistent(_))));
    }

    /// Found by `fuzz/fuzz_targets/canonical.rs` (`fuzz/regressions/canonical/`): a level
    /// of 2^31 x 2^31 one-pixel tiles in four focal planes, a grid of 2^64 tiles, overflowed
    /// the count (a panic with overflow checks, a count wrapped to 0 without).
    #[test]
    fn a_grid_too_large_to_count_is_refused() {
        let bytes =
            hex::decode("020352523800000001ffffffff0fffffffff0f010100020100000000000000").unwrap();
        let manifest: SlideManifest = crate::canonical::decode(&bytes).unwrap();
        assert!(matches!(
            manifest.validate(),
            Err(ManifestError::Inconsistent(why)) if why.contains("too large to count")
        ));
    }

    #[test]
    fn json_form_uses_hex_ids() {
        let json = serde_json::to_value(sample()).unwrap();
        let first = json["levels"][0]["tiles"][0].as_str().unwrap();
        assert_eq!(first, TileId::of(&[0]).to_string());
    }
}
