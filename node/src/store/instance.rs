//! The store's record of one DICOM instance (`instances_v1`): its identity, geometry, where
//! each frame's bytes lie in the original file, and its metadata as DICOM JSON. Ingest's
//! scanner fills it; the store keeps and reads it; nothing here reads files.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use slidemesh_protocol::{
    AssociatedKind, DimensionOrganization, ObjectId, OpticalPath, TileId, TilePosition,
};

/// What kind of image an instance holds (Image Type value 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageFlavor {
    Volume,
    Associated(AssociatedKind),
}

/// Where one frame's bytes are: one range per fragment (almost always exactly one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameRef {
    pub tile: TileId,
    /// (absolute file offset, length) of each fragment value, in order.
    pub ranges: Vec<(u64, u32)>,
}

/// One stored instance: what the scanner read from its file, as the store keeps it
/// (`instances_v1`, postcard) and ingest, the API and DICOMweb read it back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub path: PathBuf,
    pub object: ObjectId,
    pub file_len: u64,
    pub sop_instance_uid: String,
    pub series_uid: String,
    pub study_uid: String,
    pub frame_of_reference_uid: Option<String>,
    pub transfer_syntax_uid: String,
    pub flavor: ImageFlavor,
    pub width: u32,
    pub height: u32,
    pub tile_width: u32,
    pub tile_height: u32,
    pub pixel_spacing_mm: Option<[f64; 2]>,
    pub focal_planes: u32,
    pub optical_paths: u32,
    pub organization: DimensionOrganization,
    /// Concatenation UID when this instance is one part of a level split over files.
    pub concatenation_uid: Option<String>,
    /// Concatenation Frame Offset Number: frames of the level before this part's first.
    pub concatenation_offset: u32,
    pub frames: Vec<FrameRef>,
    /// Grid positions, one per frame, for TILED_SPARSE; empty for TILED_FULL.
    pub positions: Vec<TilePosition>,
    pub optical_path_list: Vec<OpticalPath>,
    /// Canonical DICOM JSON of the data set without pixel data.
    pub metadata_json: String,
}

/// The media type of a tile (one frame's bytes) in a given transfer syntax, as DICOMweb
/// names them.
pub fn tile_media_type(transfer_syntax_uid: &str) -> &'static str {
    match transfer_syntax_uid {
        "1.2.840.10008.1.2.4.50"
        | "1.2.840.10008.1.2.4.51"
        | "1.2.840.10008.1.2.4.57"
        | "1.2.840.10008.1.2.4.70" => "image/jpeg",
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => "image/jls",
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => "image/jp2",
        "1.2.840.10008.1.2.4.201" | "1.2.840.10008.1.2.4.202" | "1.2.840.10008.1.2.4.203" => {
            "image/jphc"
        }
        "1.2.840.10008.1.2.5" => "image/dicom-rle",
        _ => "application/octet-stream",
    }
}
