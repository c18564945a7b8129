//! Reading one DICOM WSI file: its metadata, and where each frame's bytes lie in the file.
//!
//! [`super::header`] first checks every length the header declares against the file (so a
//! crafted header cannot make anything allocate gigabytes), then dicom-object parses the
//! data set up to Pixel Data (small, never pixel data) for the metadata. Every number that
//! later sizes memory (frame count, tile grid, offset tables, native frame size) is checked
//! here against the grid and against what the pixel data can hold; [`super::frames`] then
//! finds and hashes the frames.
//!
//! This module knows nothing of the store or of slides; it turns a path into a
//! [`InstanceRecord`] or an [`InstanceError`] that names the file and the problem.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use dicom_core::Tag;

use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};

use super::frames::{self, ExtendedOffsets};
use super::header::{self, Layout};
use crate::store::instance::{ImageFlavor, InstanceRecord};
use slidemesh_protocol::{AssociatedKind, DimensionOrganization, OpticalPath, TilePosition};

/// SOP Class UID of VL Whole Slide Microscopy Image Storage.
pub const WSI_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.77.1.6";
/// The most frames one instance may declare. The largest real levels have a few hundred
/// thousand tiles (z-stacks a few million); each frame costs about 100 bytes of memory
/// while it is indexed.
pub const MAX_FRAMES: u32 = 1 << 24;
/// The most tile positions a level's grid may have (columns x rows x focal planes x
/// optical paths): a million by a million pixels in 256-pixel tiles is 15 million.
pub const MAX_GRID_TILES: u64 = 1 << 28;

/// Why a file could not be indexed. Every variant names what is wrong in words an operator
/// can act on; the path is added by [`InstanceError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    #[error("cannot read file: {0}")]
    Io(#[from] io::Error),
    #[error("not a DICOM file or unreadable header: {0}")]
    NotDicom(String),
    #[error("file is truncated: it ends inside {0}")]
    Truncated(&'static str),
    #[error(
        "not a whole-slide image: SOP class {found} (expected VL Whole Slide Microscopy Image Storage {WSI_SOP_CLASS})"
    )]
    WrongSopClass { found: String },
    #[error("missing required attribute {0}")]
    MissingAttribute(&'static str),
    #[error("invalid attribute {name}: {problem}")]
    InvalidAttribute { name: &'static str, problem: String },
    #[error("unsupported transfer syntax {0}: frames cannot be indexed by byte position")]
    UnsupportedTransferSyntax(String),
    #[error("NumberOfFrames says {declared} but the pixel data holds {found} frames")]
    FrameCountMismatch { declared: u32, found: usize },
    #[error("malformed pixel data: {0}")]
    MalformedPixelData(String),
    #[error(
        "{attribute} declares a value of {len} bytes but only {left} bytes follow in the file (truncated or crafted)"
    )]
    ValueBeyondFile {
        attribute: String,
        len: u64,
        left: u64,
    },
    #[error(
        "{attribute} declares a value of {len} bytes; at most {limit} are accepted before pixel data"
    )]
    ValueTooLarge {
        attribute: String,
        len: u64,
        limit: u64,
    },
    #[error("the header before PixelData is larger than {limit} bytes")]
    HeaderTooLarge { limit: u64 },
    #[error("{attribute} nests sequences deeper than {limit} levels")]
    NestedTooDeep { attribute: String, limit: usize },
    #[error("NumberOfFrames says {declared}, but {problem}")]
    ImplausibleFrameCount { declared: u32, problem: String },
    #[error("{table} lists {entries} frames but NumberOfFrames says {declared}")]
    OffsetTableMismatch {
        table: &'static str,
        entries: u64,
        declared: u32,
    },
}

/// A [`ScanError`] with the file it happened in.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {error}")]
pub struct InstanceError {
    pub path: PathBuf,
    #[source]
    pub error: ScanError,
}

/// Reads and indexes one file.
pub fn scan_file(path: &Path) -> Result<InstanceRecord, InstanceError> {
    scan(path).map_err(|error| InstanceError {
        path: path.to_path_buf(),
        error,
    })
}

/// A file's header, checked by [`header::check`] and then parsed by dicom-object up to
/// Pixel Data, with the file still open.
pub struct CheckedHeader {
    pub file: File,
    pub layout: Layout,
    pub object: DefaultDicomObject,
}

/// Opens `path` and parses its header, never letting the header's declared lengths size an
/// allocation before they are checked against the file.
pub fn open_header(path: &Path) -> Result<CheckedHeader, ScanError> {
    let file = File::open(path)?;
    let layout = header::check(&file)?;
    let object = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| classify_open_error(path, e))?;
    Ok(CheckedHeader {
        file,
        layout,
        object,
    })
}

fn scan(path: &Path) -> Result<InstanceRecord, ScanError> {
    let CheckedHeader {
        file,
        layout,
        object: header,
    } = open_header(path)?;
    let ts_uid = layout.ts_uid.clone();
    let ts = layout.ts;
    let obj: &InMemDicomObject = &header;

    let sop_class = text(obj, tags::SOP_CLASS_UID, "SOPClassUID")?;
    if sop_class != WSI_SOP_CLASS {
        return Err(ScanError::WrongSopClass { found: sop_class });
    }
    // Image Type is Type 1 for WSI, but some converters (OrthancWSIDicomizer among them)
    // leave it out; their instances are pyramid levels, so a missing value means VOLUME.
    let image_type: Vec<String> = match obj.get(tags::IMAGE_TYPE) {
        Some(e) => e
            .to_multi_str()
            .map_err(|e| invalid("ImageType", e))?
            .to_vec(),
        None => {
            tracing::warn!(path = %path.display(), "no ImageType; treating the instance as a pyramid level (VOLUME)");
            vec!["DERIVED".into(), "PRIMARY".into(), "VOLUME".into()]
        }
    };
    let flavor = match image_type
        .get(2)
        .map(|s| s.trim().to_ascii_uppercase())
        .as_deref()
    {
        Some("VOLUME") => ImageFlavor::Volume,
        Some("LABEL") => ImageFlavor::Associated(AssociatedKind::Label),
        Some("OVERVIEW") => ImageFlavor::Associated(AssociatedKind::Overview),
        Some("THUMBNAIL") => ImageFlavor::Associated(AssociatedKind::Thumbnail),
        other => {
            return Err(ScanError::InvalidAttribute {
                name: "ImageType",
                problem: format!(
                    "value 3 is {other:?}; expected VOLUME, LABEL, OVERVIEW or THUMBNAIL"
                ),
            });
        }
    };
    let tile_height: u32 = int(obj, tags::ROWS, "Rows")?;
    let tile_width: u32 = int(obj, tags::COLUMNS, "Columns")?;
    // Rows and Columns are 16-bit (US); a larger value can only come from a lying VR.
    for (name, value) in [("Rows", tile_height), ("Columns", tile_width)] {
        if value > u32::from(u16::MAX) {
            return Err(ScanError::InvalidAttribute {
                name,
                problem: format!("{value} is more than 65535 (an unsigned 16-bit value)"),
            });
        }
    }
    let frames_declared: u32 = int_or(obj, tags::NUMBER_OF_FRAMES, "NumberOfFrames", 1)?;
    if frames_declared == 0 {
        return Err(ScanError::InvalidAttribute {
            name: "NumberOfFrames",
            problem: "zero frames".into(),
        });
    }
    if frames_declared > MAX_FRAMES {
        return Err(ScanError::ImplausibleFrameCount {
            declared: frames_declared,
            problem: format!("at most {MAX_FRAMES} frames per instance are accepted"),
        });
    }
    let width: u32 = int_or(
        obj,
        tags::TOTAL_PIXEL_MATRIX_COLUMNS,
        "TotalPixelMatrixColumns",
        tile_width,
    )?;
    let height: u32 = int_or(
        obj,
        tags::TOTAL_PIXEL_MATRIX_ROWS,
        "TotalPixelMatrixRows",
        tile_height,
    )?;
    if tile_width == 0 || tile_height == 0 || width == 0 || height == 0 {
        return Err(ScanError::InvalidAttribute {
            name: "Rows/Columns",
            problem: "zero image size".into(),
        });
    }
    let has_frame_positions = obj
        .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|e| e.items())
        .and_then(|items| items.first())
        .is_some_and(|item| item.get(tags::PLANE_POSITION_SLIDE_SEQUENCE).is_some());
    let organization = match opt_text(obj, tags::DIMENSION_ORGANIZATION_TYPE).as_deref() {
        Some("TILED_SPARSE") => DimensionOrganization::TiledSparse,
        Some("TILED_FULL") => DimensionOrganization::TiledFull,
        // Without the attribute, per-frame positions (as OrthancWSIDicomizer writes them)
        // say where each frame goes; otherwise frames fill the grid in order.
        None | Some("") if has_frame_positions => DimensionOrganization::TiledSparse,
        None | Some("") => DimensionOrganization::TiledFull,
        // A single-frame image (labels, small thumbnails) is trivially a full grid.
        Some(_) if frames_declared == 1 => DimensionOrganization::TiledFull,
        Some(other) => {
            return Err(ScanError::InvalidAttribute {
                name: "DimensionOrganizationType",
                problem: format!("{other} is not supported; expected TILED_FULL or TILED_SPARSE"),
            });
        }
    };
    let focal_planes: u32 = int_or(
        obj,
        tags::TOTAL_PIXEL_MATRIX_FOCAL_PLANES,
        "TotalPixelMatrixFocalPlanes",
        1,
    )?;
    let optical_path_list = optical_paths(obj);
    let optical_paths: u32 = int_or(
        obj,
        tags::NUMBER_OF_OPTICAL_PATHS,
        "NumberOfOpticalPaths",
        optical_path_list.len().max(1) as u32,
    )?;
    let concatenation_offset = int_or(
        obj,
        tags::CONCATENATION_FRAME_OFFSET_NUMBER,
        "ConcatenationFrameOffsetNumber",
        0,
    )?;
    check_grid(
        frames_declared,
        concatenation_offset,
        [width, height],
        [tile_width, tile_height],
        [focal_planes, optical_paths],
    )?;
    let positions = match organization {
        DimensionOrganization::TiledFull => Vec::new(),
        DimensionOrganization::TiledSparse => sparse_positions(
            obj,
            tile_width,
            tile_height,
            &optical_path_list,
            frames_declared,
        )?,
    };

    let native_frame_len = if ts.is_encapsulated_pixel_data() {
        None
    } else {
        let samples: u32 = int(obj, tags::SAMPLES_PER_PIXEL, "SamplesPerPixel")?;
        let bits: u32 = int(obj, tags::BITS_ALLOCATED, "BitsAllocated")?;
        if !(1..=4).contains(&samples) {
            return Err(invalid(
                "SamplesPerPixel",
                format!("{samples}; expected 1 to 4"),
            ));
        }
        if !matches!(bits, 1 | 8 | 16 | 32 | 64) {
            return Err(invalid(
                "BitsAllocated",
                format!("{bits}; expected 1, 8, 16, 32 or 64"),
            ));
        }
        Some((tile_width as u64 * tile_height as u64 * samples as u64 * bits as u64).div_ceil(8))
    };
    let extended_offsets = extended_offset_table(obj, frames_declared)?;
    let plan = frames::FramePlan {
        frames_declared,
        native_frame_len,
        extended_offsets,
    };

    let file_len = layout.file_len;
    let (frames, object) = frames::index(&file, layout.pixel_data, &plan)?;
    if frames.len() != frames_declared as usize {
        return Err(ScanError::FrameCountMismatch {
            declared: frames_declared,
            found: frames.len(),
        });
    }

    let metadata_json = canonical_json(obj)?;
    Ok(InstanceRecord {
        path: path.to_path_buf(),
        object,
        file_len,
        sop_instance_uid: text(obj, tags::SOP_INSTANCE_UID, "SOPInstanceUID")?,
        series_uid: text(obj, tags::SERIES_INSTANCE_UID, "SeriesInstanceUID")?,
        study_uid: text(obj, tags::STUDY_INSTANCE_UID, "StudyInstanceUID")?,
        frame_of_reference_uid: opt_text(obj, tags::FRAME_OF_REFERENCE_UID),
        transfer_syntax_uid: ts_uid,
        flavor,
        width,
        height,
        tile_width,
        tile_height,
        pixel_spacing_mm: pixel_spacing(obj),
        focal_planes,
        optical_paths,
        organization,
        concatenation_uid: opt_text(obj, tags::CONCATENATION_UID).filter(|s| !s.is_empty()),
        concatenation_offset,
        frames,
        positions,
        optical_path_list,
        metadata_json,
    })
}

/// Tells a non-DICOM file from a truncated one, since dicom-object reports both as read errors.
fn classify_open_error(path: &Path, e: dicom_object::ReadError) -> ScanError {
    let mut magic = [0u8; 132];
    let is_dicom = File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map(|_| &magic[128..132] == b"DICM")
        .unwrap_or(false);
    if !is_dicom {
        return ScanError::NotDicom(
            "no DICM marker at byte 128 (is it a DICOM Part 10 file?)".into(),
        );
    }
    if error_chain_has_eof(&e) {
        return ScanError::Truncated("the header");
    }
    ScanError::NotDicom(error_chain(&e))
}

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

pub(super) fn error_chain_has_eof(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = current {
        if let Some(io) = err.downcast_ref::<io::Error>()
            && io.kind() == io::ErrorKind::UnexpectedEof
        {
            return true;
        }
        current = err.source();
    }
    // Some decoders report a short read only in their message.
    let text = error_chain(e).to_ascii_lowercase();
    text.contains("unexpected end") || text.contains("failed to fill whole buffer")
}

fn invalid(name: &'static str, e: impl std::fmt::Display) -> ScanError {
    ScanError::InvalidAttribute {
        name,
        problem: e.to_string(),
    }
}

fn text(obj: &InMemDicomObject, tag: Tag, name: &'static str) -> Result<String, ScanError> {
    opt_text(obj, tag)
        .filter(|s| !s.is_empty())
        .ok_or(ScanError::MissingAttribute(name))
}

fn opt_text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s: Cow<'_, str>| s.trim_end_matches(['\0', ' ']).trim().to_string())
}

fn int(obj: &InMemDicomObject, tag: Tag, name: &'static str) -> Result<u32, ScanError> {
    obj.get(tag)
        .ok_or(ScanError::MissingAttribute(name))?
        .to_int::<u32>()
        .map_err(|e| invalid(name, e))
}

fn int_or(
    obj: &InMemDicomObject,
    tag: Tag,
    name: &'static str,
    default: u32,
) -> Result<u32, ScanError> {
    match obj.get(tag) {
        None => Ok(default),
        Some(e) => e.to_int::<u32>().map_err(|err| invalid(name, err)),
    }
}

fn pixel_spacing(obj: &InMemDicomObject) -> Option<[f64; 2]> {
    let shared = obj
        .get(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)?
        .items()?
        .first()?;
    let measures = shared
        .get(tags::PIXEL_MEASURES_SEQUENCE)?
        .items()?
        .first()?;
    let spacing = measures.get(tags::PIXEL_SPACING)?.to_multi_float64().ok()?;
    match spacing.as_slice() {
        [row, col] if row.is_finite() && col.is_finite() => Some([*row, *col]),
        _ => None,
    }
}

fn optical_paths(obj: &InMemDicomObject) -> Vec<OpticalPath> {
    let Some(items) = obj.get(tags::OPTICAL_PATH_SEQUENCE).and_then(|e| e.items()) else {
        return Vec::new();
    };
    items
        .iter()
        .map(|item| OpticalPath {
            identifier: opt_text(item, tags::OPTICAL_PATH_IDENTIFIER).unwrap_or_default(),
            description: opt_text(item, tags::OPTICAL_PATH_DESCRIPTION).filter(|s| !s.is_empty()),
        })
        .collect()
}

/// Frame positions of a TILED_SPARSE instance from its per-frame functional groups.
fn sparse_positions(
    obj: &InMemDicomObject,
    tile_width: u32,
    tile_height: u32,
    paths: &[OpticalPath],
    frames: u32,
) -> Result<Vec<TilePosition>, ScanError> {
    let groups = obj
        .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|e| e.items())
        .ok_or(ScanError::MissingAttribute(
            "PerFrameFunctionalGroupsSequence (required for TILED_SPARSE)",
        ))?;
    if groups.len() != frames as usize {
        return Err(ScanError::InvalidAttribute {
            name: "PerFrameFunctionalGroupsSequence",
            problem: format!("{} items for {frames} frames", groups.len()),
        });
    }
    // Focal planes are numbered by ascending Z offset; optical paths by their order in the
    // Optical Path Sequence.
    let mut z_values: Vec<f64> = Vec::new();
    let mut raw = Vec::with_capacity(groups.len());
    for (i, group) in groups.iter().enumerate() {
        let plane = group
            .get(tags::PLANE_POSITION_SLIDE_SEQUENCE)
            .and_then(|e| e.items())
            .and_then(|items| items.first())
            .ok_or(ScanError::MissingAttribute("PlanePositionSlideSequence"))?;
        let column: u32 = int(
            plane,
            tags::COLUMN_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX,
            "ColumnPositionInTotalImagePixelMatrix",
        )?;
        let row: u32 = int(
            plane,
            tags::ROW_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX,
            "RowPositionInTotalImagePixelMatrix",
        )?;
        if column == 0 || row == 0 {
            return Err(invalid(
                "PlanePositionSlideSequence",
                format!("frame {} has a zero (1-based) position", i + 1),
            ));
        }
        let z = plane
            .get(tags::Z_OFFSET_IN_SLIDE_COORDINATE_SYSTEM)
            .and_then(|e| e.to_float64().ok())
            .unwrap_or(0.0);
        if !z_values.contains(&z) {
            z_values.push(z);
        }
        let path_id = group
            .get(tags::OPTICAL_PATH_IDENTIFICATION_SEQUENCE)
            .and_then(|e| e.items())
            .and_then(|items| items.first())
            .and_then(|item| opt_text(item, tags::OPTICAL_PATH_IDENTIFIER));
        raw.push((column - 1, row - 1, z, path_id));
    }
    z_values.sort_by(f64::total_cmp);
    Ok(raw
        .into_iter()
        .map(|(column, row, z, path_id)| TilePosition {
            col: column / tile_width,
            row: row / tile_height,
            focal_plane: z_values.iter().position(|v| *v == z).unwrap_or(0) as u32,
            optical_path: path_id
                .and_then(|id| paths.iter().position(|p| p.identifier == id))
                .unwrap_or(0) as u32,
        })
        .collect())
}

/// Checks the frame count against the tile grid it fills, and the grid's size itself: a
/// TILED_FULL level has exactly one frame per grid position, a TILED_SPARSE one at most, and
/// a part of a concatenation fills positions from its frame offset on.
fn check_grid(
    frames: u32,
    concatenation_offset: u32,
    [width, height]: [u32; 2],
    [tile_width, tile_height]: [u32; 2],
    [focal_planes, optical_paths]: [u32; 2],
) -> Result<(), ScanError> {
    let cols = u64::from(width.div_ceil(tile_width));
    let rows = u64::from(height.div_ceil(tile_height));
    let grid = u128::from(cols)
        * u128::from(rows)
        * u128::from(focal_planes.max(1))
        * u128::from(optical_paths.max(1));
    if grid > u128::from(MAX_GRID_TILES) {
        return Err(ScanError::InvalidAttribute {
            name: "TotalPixelMatrixColumns/TotalPixelMatrixRows",
            problem: format!(
                "{width}x{height} pixels in {tile_width}x{tile_height} tiles, {} focal planes and {} optical paths make {grid} tile positions; at most {MAX_GRID_TILES} are accepted",
                focal_planes.max(1),
                optical_paths.max(1)
            ),
        });
    }
    let last = u128::from(concatenation_offset) + u128::from(frames);
    if last > grid {
        let part = if concatenation_offset > 0 {
            format!(" after ConcatenationFrameOffsetNumber {concatenation_offset}")
        } else {
            String::new()
        };
        return Err(ScanError::ImplausibleFrameCount {
            declared: frames,
            problem: format!(
                "its tile grid ({cols}x{rows} tiles of {tile_width}x{tile_height} over {width}x{height} pixels, {} focal planes, {} optical paths) has only {grid} positions{part}",
                focal_planes.max(1),
                optical_paths.max(1)
            ),
        });
    }
    Ok(())
}

/// Reads the Extended Offset Table, if present; it must list every frame.
fn extended_offset_table(
    obj: &InMemDicomObject,
    frames_declared: u32,
) -> Result<Option<ExtendedOffsets>, ScanError> {
    let (Some(offsets), Some(lengths)) = (
        obj.get(tags::EXTENDED_OFFSET_TABLE),
        obj.get(tags::EXTENDED_OFFSET_TABLE_LENGTHS),
    ) else {
        return Ok(None);
    };
    let read = |e: &dicom_object::mem::InMemElement, name| -> Result<Vec<u64>, ScanError> {
        let bytes = e.to_bytes().map_err(|err| invalid(name, err))?;
        if bytes.len() % 8 != 0 {
            return Err(invalid(name, "length is not a multiple of 8"));
        }
        Ok(bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect())
    };
    // Each table is at most header::MAX_ELEMENT bytes (checked before it was read).
    let offsets = read(offsets, "ExtendedOffsetTable")?;
    let lengths = read(lengths, "ExtendedOffsetTableLengths")?;
    for (entries, table) in [
        (offsets.len(), "ExtendedOffsetTable"),
        (lengths.len(), "ExtendedOffsetTableLengths"),
    ] {
        if entries as u64 != u64::from(frames_declared) {
            return Err(ScanError::OffsetTableMismatch {
                table,
                entries: entries as u64,
                declared: frames_declared,
            });
        }
    }
    if offsets.len() != lengths.len() {
        return Err(invalid(
            "ExtendedOffsetTableLengths",
            "not as many entries as ExtendedOffsetTable",
        ));
    }
    Ok(Some((offsets, lengths)))
}

/// The data set as canonical DICOM JSON: dicom-json's model, keys sorted (serde_json's
/// default map is ordered), no insignificant whitespace.
fn canonical_json(obj: &InMemDicomObject) -> Result<String, ScanError> {
    let value = dicom_json::to_value(obj)
        .map_err(|e| invalid("data set", format!("cannot convert to DICOM JSON: {e}")))?;
    serde_json::to_string(&value).map_err(|e| invalid("data set", e))
}

#[cfg(test)]
mod tests;
