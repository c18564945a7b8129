//! Indexer tests over small DICOM files written here with dicom-object: every offset-table
//! form, multi-fragment frames, native pixel data, each kind of bad input, and hostile
//! headers whose numbers would size gigabytes of memory if they were believed.

use std::path::Path;

use dicom_core::value::{DataSetSequence, PixelFragmentSequence};
use dicom_core::{DataElement, PrimitiveValue, VR, dicom_value};
use dicom_object::FileMetaTableBuilder;

use super::*;
use crate::store::instance::tile_media_type;
use slidemesh_protocol::TileId;

const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

/// Fake JPEG codestreams: SOI marker then distinct bytes, even length like real fragments.
fn fake_jpeg(i: usize, len: usize) -> Vec<u8> {
    let mut v = vec![0xFF, 0xD8];
    v.extend((0..len - 2).map(|k| ((i * 31 + k * 7) % 251) as u8));
    v
}

enum Offsets {
    Basic,
    Empty,
    Extended,
}

fn base_object(frames: u32, sop_class: &str) -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    let mut put = |tag, vr, value: PrimitiveValue| obj.put(DataElement::new(tag, vr, value));
    put(tags::SOP_CLASS_UID, VR::UI, sop_class.into());
    put(tags::SOP_INSTANCE_UID, VR::UI, "2.25.100".into());
    put(tags::STUDY_INSTANCE_UID, VR::UI, "2.25.1".into());
    put(tags::SERIES_INSTANCE_UID, VR::UI, "2.25.2".into());
    put(
        tags::IMAGE_TYPE,
        VR::CS,
        dicom_value!(Strs, ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]),
    );
    put(tags::ROWS, VR::US, PrimitiveValue::from(16u16));
    put(tags::COLUMNS, VR::US, PrimitiveValue::from(16u16));
    put(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(3u16));
    put(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(8u16));
    put(tags::NUMBER_OF_FRAMES, VR::IS, frames.to_string().into());
    put(
        tags::TOTAL_PIXEL_MATRIX_COLUMNS,
        VR::UL,
        PrimitiveValue::from(16 * frames),
    );
    put(
        tags::TOTAL_PIXEL_MATRIX_ROWS,
        VR::UL,
        PrimitiveValue::from(16u32),
    );
    put(
        tags::DIMENSION_ORGANIZATION_TYPE,
        VR::CS,
        "TILED_FULL".into(),
    );
    obj
}

/// Writes an encapsulated file with `frames` frames of `per_frame` fragments each; returns
/// the path and each frame's expected bytes.
fn write_encapsulated(
    dir: &Path,
    frames: usize,
    per_frame: usize,
    offsets: Offsets,
) -> (std::path::PathBuf, Vec<Vec<u8>>) {
    let mut obj = base_object(frames as u32, WSI_SOP_CLASS);
    let mut fragments: Vec<Vec<u8>> = Vec::new();
    let mut expected = Vec::new();
    let mut starts = Vec::new();
    let mut lengths = Vec::new();
    let mut pos = 0u64;
    for f in 0..frames {
        starts.push(pos);
        let mut frame = Vec::new();
        for p in 0..per_frame {
            let bytes = if p == 0 {
                fake_jpeg(f, 40 + 2 * f)
            } else {
                vec![p as u8; 10]
            };
            pos += 8 + bytes.len() as u64;
            frame.extend_from_slice(&bytes);
            fragments.push(bytes);
        }
        lengths.push(frame.len() as u64);
        expected.push(frame);
    }
    let bot: Vec<u32> = match offsets {
        Offsets::Basic => starts.iter().map(|s| *s as u32).collect(),
        _ => vec![],
    };
    if let Offsets::Extended = offsets {
        let enc = |v: &[u64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        obj.put(DataElement::new(
            tags::EXTENDED_OFFSET_TABLE,
            VR::OV,
            PrimitiveValue::from(enc(&starts)),
        ));
        obj.put(DataElement::new(
            tags::EXTENDED_OFFSET_TABLE_LENGTHS,
            VR::OV,
            PrimitiveValue::from(enc(&lengths)),
        ));
    }
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PixelFragmentSequence::new(bot, fragments),
    ));
    let path = dir.join("enc.dcm");
    write(obj, JPEG_BASELINE, &path);
    (path, expected)
}

fn write(obj: InMemDicomObject, ts: &str, path: &Path) {
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(ts)
                .media_storage_sop_class_uid(WSI_SOP_CLASS)
                .media_storage_sop_instance_uid("2.25.100"),
        )
        .unwrap();
    file.write_to_file(path).unwrap();
}

fn check_frames(path: &Path, scanned: &InstanceRecord, expected: &[Vec<u8>]) {
    let file = std::fs::read(path).unwrap();
    assert_eq!(scanned.frames.len(), expected.len());
    for (frame, bytes) in scanned.frames.iter().zip(expected) {
        assert_eq!(
            frame.tile,
            TileId::of(bytes),
            "tile id is BLAKE3 of the frame bytes"
        );
        let mut read = Vec::new();
        for &(offset, len) in &frame.ranges {
            read.extend_from_slice(&file[offset as usize..offset as usize + len as usize]);
        }
        assert_eq!(&read, bytes, "ranges point at the frame bytes");
    }
    // The object id commits to every byte: change any one (in the header, an item header,
    // a frame, the last byte) and the file either no longer indexes or gets another id.
    let rescan = scan_file(path).unwrap();
    assert_eq!(rescan.object, scanned.object, "object id is deterministic");
    let first_frame = scanned.frames[0].ranges[0].0 as usize;
    for at in [150, first_frame - 3, first_frame + 1, file.len() - 1] {
        let mut changed = file.clone();
        changed[at] ^= 0x01;
        let other = path.with_extension(format!("flip{at}"));
        std::fs::write(&other, &changed).unwrap();
        if let Ok(s) = scan_file(&other) {
            assert_ne!(
                s.object, scanned.object,
                "flipping byte {at} must change the object id"
            );
        }
    }
}

#[test]
fn basic_offset_table() {
    let dir = tempfile::tempdir().unwrap();
    let (path, expected) = write_encapsulated(dir.path(), 5, 1, Offsets::Basic);
    let scanned = scan_file(&path).unwrap();
    check_frames(&path, &scanned, &expected);
    assert_eq!(
        (scanned.width, scanned.height, scanned.tile_width),
        (80, 16, 16)
    );
    assert_eq!(scanned.flavor, ImageFlavor::Volume);
    assert!(scanned.metadata_json.contains("\"00080016\""));
    assert!(
        !scanned.metadata_json.contains("7FE00010"),
        "no pixel data in metadata"
    );
}

#[test]
fn empty_offset_table_with_multi_fragment_frames() {
    let dir = tempfile::tempdir().unwrap();
    let (path, expected) = write_encapsulated(dir.path(), 4, 3, Offsets::Empty);
    let scanned = scan_file(&path).unwrap();
    check_frames(&path, &scanned, &expected);
    assert_eq!(scanned.frames[0].ranges.len(), 3);
}

#[test]
fn basic_offset_table_with_multi_fragment_frames() {
    let dir = tempfile::tempdir().unwrap();
    let (path, expected) = write_encapsulated(dir.path(), 3, 2, Offsets::Basic);
    check_frames(&path, &scan_file(&path).unwrap(), &expected);
}

#[test]
fn extended_offset_table() {
    let dir = tempfile::tempdir().unwrap();
    let (path, expected) = write_encapsulated(dir.path(), 6, 2, Offsets::Extended);
    check_frames(&path, &scan_file(&path).unwrap(), &expected);
}

#[test]
fn native_pixel_data() {
    let dir = tempfile::tempdir().unwrap();
    let frames = 3usize;
    let frame_len = 16 * 16 * 3;
    let pixels: Vec<u8> = (0..frames * frame_len).map(|i| (i % 253) as u8).collect();
    let mut obj = base_object(frames as u32, WSI_SOP_CLASS);
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::from(pixels.clone()),
    ));
    let path = dir.path().join("native.dcm");
    write(obj, EXPLICIT_LE, &path);
    let expected: Vec<Vec<u8>> = pixels.chunks(frame_len).map(<[u8]>::to_vec).collect();
    let scanned = scan_file(&path).unwrap();
    check_frames(&path, &scanned, &expected);
    assert_eq!(
        tile_media_type(&scanned.transfer_syntax_uid),
        "application/octet-stream"
    );
}

#[test]
fn truncated_files_are_named_as_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_encapsulated(dir.path(), 5, 1, Offsets::Basic);
    let full = std::fs::read(&path).unwrap();
    for cut in [full.len() - 1, full.len() - 30, full.len() / 2, 200] {
        let short = dir.path().join(format!("cut{cut}.dcm"));
        std::fs::write(&short, &full[..cut]).unwrap();
        let err = scan_file(&short).unwrap_err();
        assert!(
            err.to_string().contains(&short.display().to_string()),
            "error names the file: {err}"
        );
        assert!(
            matches!(
                err.error,
                ScanError::Truncated(_)
                    | ScanError::NotDicom(_)
                    | ScanError::MalformedPixelData(_)
                    | ScanError::ValueBeyondFile { .. }
            ),
            "cut at {cut}: {err}"
        );
        assert!(
            !matches!(err.error, ScanError::FrameCountMismatch { .. }),
            "cut at {cut}: {err}"
        );
    }
}

#[test]
fn not_dicom() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "this is not an image").unwrap();
    assert!(matches!(
        scan_file(&path).unwrap_err().error,
        ScanError::NotDicom(_)
    ));
}

#[test]
fn wrong_sop_class() {
    let dir = tempfile::tempdir().unwrap();
    let mut obj = base_object(1, "1.2.840.10008.5.1.4.1.1.2");
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PixelFragmentSequence::new(vec![], vec![fake_jpeg(0, 20)]),
    ));
    let path = dir.path().join("ct.dcm");
    write(obj, JPEG_BASELINE, &path);
    let err = scan_file(&path).unwrap_err();
    assert!(
        matches!(err.error, ScanError::WrongSopClass { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("1.2.840.10008.5.1.4.1.1.2"));
}

#[test]
fn frame_count_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let mut obj = base_object(3, WSI_SOP_CLASS);
    let fragments: Vec<Vec<u8>> = (0..2).map(|i| fake_jpeg(i, 20)).collect();
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PixelFragmentSequence::new(vec![], fragments),
    ));
    let path = dir.path().join("short.dcm");
    write(obj, JPEG_BASELINE, &path);
    assert!(matches!(
        scan_file(&path).unwrap_err().error,
        ScanError::FrameCountMismatch {
            declared: 3,
            found: 2
        }
    ));
}

#[test]
fn missing_required_attribute() {
    let dir = tempfile::tempdir().unwrap();
    let mut obj = base_object(1, WSI_SOP_CLASS);
    obj.remove_element(tags::SERIES_INSTANCE_UID);
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PixelFragmentSequence::new(vec![], vec![fake_jpeg(0, 20)]),
    ));
    let path = dir.path().join("noseries.dcm");
    write(obj, JPEG_BASELINE, &path);
    let err = scan_file(&path).unwrap_err();
    assert!(
        matches!(err.error, ScanError::MissingAttribute("SeriesInstanceUID")),
        "{err}"
    );
}

#[test]
fn sparse_positions_from_per_frame_groups() {
    let dir = tempfile::tempdir().unwrap();
    let mut obj = base_object(2, WSI_SOP_CLASS);
    obj.put(DataElement::new(
        tags::DIMENSION_ORGANIZATION_TYPE,
        VR::CS,
        "TILED_SPARSE",
    ));
    let group = |col: u32, row: u32| {
        let mut plane = InMemDicomObject::new_empty();
        plane.put(DataElement::new(
            tags::COLUMN_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX,
            VR::SL,
            PrimitiveValue::from(col as i32),
        ));
        plane.put(DataElement::new(
            tags::ROW_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX,
            VR::SL,
            PrimitiveValue::from(row as i32),
        ));
        let mut item = InMemDicomObject::new_empty();
        item.put(DataElement::new(
            tags::PLANE_POSITION_SLIDE_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(vec![plane]),
        ));
        item
    };
    obj.put(DataElement::new(
        tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(vec![group(49, 1), group(17, 1)]),
    ));
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PixelFragmentSequence::new(vec![], vec![fake_jpeg(0, 20), fake_jpeg(1, 20)]),
    ));
    let path = dir.path().join("sparse.dcm");
    write(obj, JPEG_BASELINE, &path);
    let scanned = scan_file(&path).unwrap();
    assert_eq!(scanned.organization, DimensionOrganization::TiledSparse);
    let cols: Vec<u32> = scanned.positions.iter().map(|p| p.col).collect();
    assert_eq!(cols, vec![3, 1]);
}

/// A small valid encapsulated instance of `frames` one-fragment frames, changed by `edit`
/// before it is written.
fn write_edited(
    dir: &Path,
    name: &str,
    frames: usize,
    edit: impl FnOnce(&mut InMemDicomObject),
) -> std::path::PathBuf {
    let mut obj = base_object(frames as u32, WSI_SOP_CLASS);
    let fragments: Vec<Vec<u8>> = (0..frames).map(|i| fake_jpeg(i, 20)).collect();
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PixelFragmentSequence::new(vec![], fragments),
    ));
    edit(&mut obj);
    let path = dir.join(name);
    write(obj, JPEG_BASELINE, &path);
    path
}

fn put(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: PrimitiveValue) {
    obj.put(DataElement::new(tag, vr, value));
}

/// Replaces the 4 bytes after the first occurrence of `marker` in the file.
fn patch_after(path: &Path, marker: &[u8], value: u32) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .unwrap_or_else(|| panic!("{marker:02X?} not in {}", path.display()))
        + marker.len();
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

/// The error of scanning `path`, checked to name the file.
fn refusal(path: &Path) -> InstanceError {
    let err = scan_file(path).unwrap_err();
    assert!(
        err.to_string().starts_with(&path.display().to_string()),
        "error names the file: {err}"
    );
    err
}

#[test]
fn a_frame_count_of_four_billion_is_refused_before_anything_is_sized_by_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_edited(dir.path(), "frames.dcm", 3, |obj| {
        put(obj, tags::NUMBER_OF_FRAMES, VR::IS, "4294967295".into())
    });
    let err = refusal(&path);
    assert!(
        matches!(
            err.error,
            ScanError::ImplausibleFrameCount {
                declared: u32::MAX,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("NumberOfFrames"), "{err}");
    // Zero frames is no image at all.
    let zero = write_edited(dir.path(), "zero.dcm", 3, |obj| {
        put(obj, tags::NUMBER_OF_FRAMES, VR::IS, "0".into())
    });
    assert!(refusal(&zero).to_string().contains("NumberOfFrames"));
}

#[test]
fn frame_counts_are_checked_against_the_tile_grid() {
    let dir = tempfile::tempdir().unwrap();
    // 3 frames of 16x16 fill a 48x16 grid; 100 frames do not fit in it.
    let path = write_edited(dir.path(), "grid.dcm", 3, |obj| {
        put(obj, tags::NUMBER_OF_FRAMES, VR::IS, "100".into())
    });
    let err = refusal(&path);
    assert!(
        matches!(
            err.error,
            ScanError::ImplausibleFrameCount { declared: 100, .. }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("only 3 positions"), "{err}");
    // A concatenation part whose frames run past the end of the grid.
    let part = write_edited(dir.path(), "part.dcm", 3, |obj| {
        put(
            obj,
            tags::CONCATENATION_FRAME_OFFSET_NUMBER,
            VR::UL,
            PrimitiveValue::from(2u32),
        )
    });
    let err = refusal(&part);
    assert!(
        err.to_string().contains("ConcatenationFrameOffsetNumber 2"),
        "{err}"
    );
}

#[test]
fn frame_counts_are_checked_against_what_the_pixel_data_can_hold() {
    let dir = tempfile::tempdir().unwrap();
    // A grid of a million positions makes a million frames plausible by the grid; the
    // three fragments' few bytes cannot hold them (8 bytes of item header each at least).
    let path = write_edited(dir.path(), "room.dcm", 3, |obj| {
        put(obj, tags::NUMBER_OF_FRAMES, VR::IS, "1000000".into());
        put(
            obj,
            tags::TOTAL_PIXEL_MATRIX_COLUMNS,
            VR::UL,
            PrimitiveValue::from(16_000_000u32),
        );
    });
    let err = refusal(&path);
    assert!(
        matches!(
            err.error,
            ScanError::ImplausibleFrameCount {
                declared: 1_000_000,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("8-byte item header"), "{err}");

    // Native pixel data: three frames declared, two frames of bytes.
    let mut obj = base_object(3, WSI_SOP_CLASS);
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::from(vec![7u8; 2 * 16 * 16 * 3]),
    ));
    let native = dir.path().join("native.dcm");
    write(obj, EXPLICIT_LE, &native);
    let err = refusal(&native);
    assert!(
        matches!(
            err.error,
            ScanError::ImplausibleFrameCount { declared: 3, .. }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("only 2 native frames"), "{err}");

    // Native frames of zero bits would make any count fit.
    let mut obj = base_object(3, WSI_SOP_CLASS);
    put(
        &mut obj,
        tags::BITS_ALLOCATED,
        VR::US,
        PrimitiveValue::from(0u16),
    );
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::from(vec![7u8; 16]),
    ));
    let zero_bits = dir.path().join("zero_bits.dcm");
    write(obj, EXPLICIT_LE, &zero_bits);
    assert!(refusal(&zero_bits).to_string().contains("BitsAllocated"));
}

#[test]
fn offset_tables_must_list_the_declared_frames() {
    let dir = tempfile::tempdir().unwrap();
    let mut obj = base_object(3, WSI_SOP_CLASS);
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PixelFragmentSequence::new(
            vec![0u32, 28],
            (0..3).map(|i| fake_jpeg(i, 20)).collect::<Vec<_>>(),
        ),
    ));
    let path = dir.path().join("bot.dcm");
    write(obj, JPEG_BASELINE, &path);
    let err = refusal(&path);
    assert!(
        matches!(
            err.error,
            ScanError::OffsetTableMismatch {
                entries: 2,
                declared: 3,
                ..
            }
        ),
        "{err}"
    );

    let eot = write_edited(dir.path(), "eot.dcm", 3, |obj| {
        let table: Vec<u8> = [0u64, 28].iter().flat_map(|x| x.to_le_bytes()).collect();
        put(
            obj,
            tags::EXTENDED_OFFSET_TABLE,
            VR::OV,
            PrimitiveValue::from(table.clone()),
        );
        put(
            obj,
            tags::EXTENDED_OFFSET_TABLE_LENGTHS,
            VR::OV,
            PrimitiveValue::from(table),
        );
    });
    let err = refusal(&eot);
    assert!(err.to_string().contains("ExtendedOffsetTable"), "{err}");
}

#[test]
fn huge_image_sizes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Rows is 16-bit; a 32-bit VR cannot make it larger.
    let rows = write_edited(dir.path(), "rows.dcm", 3, |obj| {
        put(obj, tags::ROWS, VR::UL, PrimitiveValue::from(100_000u32))
    });
    let err = refusal(&rows);
    assert!(
        matches!(err.error, ScanError::InvalidAttribute { name: "Rows", .. }),
        "{err}"
    );
    // A total pixel matrix of 4 billion squared pixels is 10^16 tiles of 16x16.
    let matrix = write_edited(dir.path(), "matrix.dcm", 3, |obj| {
        put(
            obj,
            tags::TOTAL_PIXEL_MATRIX_COLUMNS,
            VR::UL,
            PrimitiveValue::from(u32::MAX),
        );
        put(
            obj,
            tags::TOTAL_PIXEL_MATRIX_ROWS,
            VR::UL,
            PrimitiveValue::from(u32::MAX),
        );
    });
    let err = refusal(&matrix);
    assert!(err.to_string().contains("TotalPixelMatrixColumns"), "{err}");
    assert!(err.to_string().contains("tile positions"), "{err}");
    // Focal planes and optical paths multiply the grid too.
    let planes = write_edited(dir.path(), "planes.dcm", 3, |obj| {
        put(
            obj,
            tags::TOTAL_PIXEL_MATRIX_FOCAL_PLANES,
            VR::UL,
            PrimitiveValue::from(u32::MAX),
        );
        put(
            obj,
            tags::NUMBER_OF_OPTICAL_PATHS,
            VR::UL,
            PrimitiveValue::from(u32::MAX),
        );
    });
    assert!(refusal(&planes).to_string().contains("focal planes"));
}

#[test]
fn element_lengths_are_checked_against_the_file_before_anything_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    // An ICC profile (OB: a 32-bit length) that claims nearly 4 GiB in a file of a few
    // hundred bytes. Believed, dicom-object would zero-fill a 4 GiB buffer for it.
    let path = write_edited(dir.path(), "icc.dcm", 3, |obj| {
        put(
            obj,
            tags::ICC_PROFILE,
            VR::OB,
            PrimitiveValue::from(vec![1u8; 16]),
        )
    });
    patch_after(&path, b"\x28\x00\x00\x20OB\x00\x00", 0xFFFF_FFF0);
    let err = refusal(&path);
    assert!(
        matches!(
            err.error,
            ScanError::ValueBeyondFile {
                len: 0xFFFF_FFF0,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("ICCProfile (0028,2000)"), "{err}");
    // The STOW-RS path reads identities through the same check.
    assert!(
        super::super::incoming::identify(&path)
            .unwrap_err()
            .contains("ICCProfile")
    );

    // Native pixel data longer than the file.
    let mut obj = base_object(1, WSI_SOP_CLASS);
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::from(vec![7u8; 16 * 16 * 3]),
    ));
    let native = dir.path().join("native.dcm");
    write(obj, EXPLICIT_LE, &native);
    patch_after(&native, b"\xE0\x7F\x10\x00OB\x00\x00", 0x7FFF_FFF0);
    let err = refusal(&native);
    assert!(err.to_string().contains("PixelData (7FE0,0010)"), "{err}");

    // The file meta group's own length.
    let meta = write_edited(dir.path(), "meta.dcm", 1, |_| {});
    let mut bytes = std::fs::read(&meta).unwrap();
    bytes[140..144].copy_from_slice(&0xFFFF_0000u32.to_le_bytes());
    std::fs::write(&meta, bytes).unwrap();
    let err = refusal(&meta);
    assert!(
        err.to_string().contains("FileMetaInformationGroupLength"),
        "{err}"
    );
}

#[test]
fn sequences_nested_too_deep_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_edited(dir.path(), "deep.dcm", 1, |obj| {
        let mut inner = InMemDicomObject::new_empty();
        inner.put(DataElement::new(tags::CODE_VALUE, VR::SH, "x"));
        for _ in 0..(header::MAX_DEPTH + 1) {
            let mut outer = InMemDicomObject::new_empty();
            outer.put(DataElement::new(
                tags::CONCEPT_CODE_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(vec![inner]),
            ));
            inner = outer;
        }
        obj.put(DataElement::new(
            tags::SPECIMEN_DESCRIPTION_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(vec![inner]),
        ));
    });
    let err = refusal(&path);
    assert!(
        matches!(err.error, ScanError::NestedTooDeep { .. }),
        "{err}"
    );
}
