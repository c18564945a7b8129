//! DICOM encoding of one synthetic instance: the VL Whole Slide Microscopy Image IOD
//! attributes as a `dicom_object::InMemDicomObject`, and writing it as a Part 10 file
//! with the JPEG Baseline transfer syntax. All encoding is done by dicom-object.
//!
//! Value representations come from the standard dictionary rather than being spelled
//! out here, so an attribute can never be written with the wrong VR.

use std::path::Path;

use anyhow::Context;
use dicom_core::value::{PixelFragmentSequence, PrimitiveValue, Value};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use dicom_object::mem::InMemElement;
use dicom_object::meta::FileMetaTableBuilder;
use slidemesh_node::dicom_build::{DataSet, IMPLEMENTATION_CLASS_UID};

use super::encode::Encapsulated;
use super::icc;
use super::meta::{Code, SlideMeta};

/// Implementation Version Name (at most 16 characters).
const IMPLEMENTATION_VERSION_NAME: &str = "SLIDEMESH_SYNTH";

/// Which of the four WSI image flavours an instance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFlavor {
    /// A pyramid level.
    Volume,
    /// The slide label.
    Label,
    /// The whole glass at low resolution.
    Overview,
    /// The whole scanned area fitting in about 512 px.
    Thumbnail,
}

/// Everything that differs between the instances of one slide.
pub(crate) struct InstanceDesc {
    pub flavor: ImageFlavor,
    /// Pyramid level for volumes (decides ORIGINAL vs DERIVED).
    pub level: u32,
    pub instance_number: u32,
    pub sop_instance_uid: String,
    pub total_columns: u32,
    pub total_rows: u32,
    pub tile_columns: u32,
    pub tile_rows: u32,
    pub frames: u32,
    pub pixel_spacing_mm: f64,
    /// Slide coordinates (X, Y) in mm of the top-left corner of the image.
    pub origin_mm: (f64, f64),
    /// Physical size of what the image shows, width x height in mm.
    pub imaged_mm: (f64, f64),
    pub pixels: Encapsulated,
}

impl InstanceDesc {
    /// Image Type / Frame Type: four values per PS3.3 C.8.12.4.1.1.
    fn image_type(&self) -> [&'static str; 4] {
        match self.flavor {
            ImageFlavor::Volume if self.level == 0 => ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"],
            ImageFlavor::Volume => ["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED"],
            ImageFlavor::Label => ["ORIGINAL", "PRIMARY", "LABEL", "NONE"],
            ImageFlavor::Overview => ["ORIGINAL", "PRIMARY", "OVERVIEW", "NONE"],
            ImageFlavor::Thumbnail => ["DERIVED", "PRIMARY", "THUMBNAIL", "RESAMPLED"],
        }
    }
}

/// A content item of a specimen preparation step (TID 8001).
fn content_item(name: Code, value: ContentValue) -> InMemDicomObject {
    let mut b = DataSet::new();
    b.seq(tags::CONCEPT_NAME_CODE_SEQUENCE, vec![name.item()]);
    match value {
        ContentValue::Text(text) => {
            b.str(tags::VALUE_TYPE, "TEXT").str(tags::TEXT_VALUE, &text);
        }
        ContentValue::Code(c) => {
            b.str(tags::VALUE_TYPE, "CODE")
                .seq(tags::CONCEPT_CODE_SEQUENCE, vec![c.item()]);
        }
    }
    b.build()
}

enum ContentValue {
    Text(String),
    Code(Code),
}

/// The Specimen module's description of the one specimen on the slide: identifiers,
/// H&E staining (hematoxylin and water-soluble eosin, SNOMED CT) and the anatomic site.
fn specimen_description(meta: &SlideMeta) -> InMemDicomObject {
    let using_substance = Code::new("424361007", "SCT", "Using substance");
    let staining_step = DataSet::new()
        .seq(
            tags::SPECIMEN_PREPARATION_STEP_CONTENT_ITEM_SEQUENCE,
            vec![
                content_item(
                    Code::new("121041", "DCM", "Specimen Identifier"),
                    ContentValue::Text(meta.specimen_id.clone()),
                ),
                content_item(
                    Code::new("111701", "DCM", "Processing type"),
                    ContentValue::Code(Code::new("127790008", "SCT", "Staining")),
                ),
                content_item(
                    using_substance,
                    ContentValue::Code(Code::new("12710003", "SCT", "hematoxylin stain")),
                ),
                content_item(
                    using_substance,
                    ContentValue::Code(Code::new("36879007", "SCT", "water soluble eosin stain")),
                ),
            ],
        )
        .build();
    DataSet::new()
        .str(tags::SPECIMEN_IDENTIFIER, &meta.specimen_id)
        .seq(tags::ISSUER_OF_THE_SPECIMEN_IDENTIFIER_SEQUENCE, vec![])
        .str(tags::SPECIMEN_UID, &meta.specimen_uid)
        .str(
            tags::SPECIMEN_SHORT_DESCRIPTION,
            &format!("{} tissue, H&E", meta.site.meaning),
        )
        .seq(tags::SPECIMEN_PREPARATION_SEQUENCE, vec![staining_step])
        .seq(
            tags::PRIMARY_ANATOMIC_STRUCTURE_SEQUENCE,
            vec![meta.site.item()],
        )
        .build()
}

/// The one optical path: brightfield, full-spectrum illumination, 40x objective, sRGB.
fn optical_path() -> InMemDicomObject {
    DataSet::new()
        .str(tags::OPTICAL_PATH_IDENTIFIER, "1")
        .str(tags::OPTICAL_PATH_DESCRIPTION, "Brightfield")
        .seq(
            tags::ILLUMINATION_TYPE_CODE_SEQUENCE,
            vec![Code::new("111744", "DCM", "Brightfield illumination").item()],
        )
        .seq(
            tags::ILLUMINATION_COLOR_CODE_SEQUENCE,
            vec![Code::new("414298005", "SCT", "Full Spectrum").item()],
        )
        .ds(tags::OBJECTIVE_LENS_POWER, &[40.0])
        // The pixels are generated as sRGB; say so, for colour-managed viewers.
        .put(
            tags::ICC_PROFILE,
            PrimitiveValue::U8(icc::srgb_profile().into()),
        )
        .str(tags::COLOR_SPACE, "SRGB")
        .build()
}

/// Build the complete data set of one instance.
pub(crate) fn build_instance(meta: &SlideMeta, desc: InstanceDesc) -> InMemDicomObject {
    let image_type = desc.image_type();
    let is_label_like = matches!(desc.flavor, ImageFlavor::Label | ImageFlavor::Overview);
    let yes_no = |b: bool| if b { "YES" } else { "NO" };
    let uncompressed = desc.total_columns as f64 * desc.total_rows as f64 * 3.0;
    let compressed = desc.pixels.item_bytes().max(1) as f64;
    let sp = desc.pixel_spacing_mm;

    let mut b = DataSet::new();
    // SOP Common, Patient, General Study, Series, Frame of Reference, Equipment.
    b.str(
        tags::SOP_CLASS_UID,
        uids::VL_WHOLE_SLIDE_MICROSCOPY_IMAGE_STORAGE,
    )
    .str(tags::SOP_INSTANCE_UID, &desc.sop_instance_uid)
    .str(tags::PATIENT_NAME, &meta.patient_name)
    .str(tags::PATIENT_ID, &meta.patient_id)
    .str(tags::ISSUER_OF_PATIENT_ID, "NHS")
    .str(tags::PATIENT_BIRTH_DATE, &meta.patient_birth_date)
    .str(tags::PATIENT_SEX, meta.patient_sex)
    .str(tags::STUDY_INSTANCE_UID, &meta.study_uid)
    .str(tags::STUDY_DATE, &meta.study_date)
    .str(tags::STUDY_TIME, &meta.study_time)
    .empty(tags::REFERRING_PHYSICIAN_NAME)
    .str(tags::STUDY_ID, &meta.study_id)
    .str(tags::ACCESSION_NUMBER, &meta.accession_number)
    .str(tags::STUDY_DESCRIPTION, "Histopathology (synthetic)")
    .str(tags::MODALITY, "SM")
    .str(tags::SERIES_INSTANCE_UID, &meta.series_uid)
    .int_str(tags::SERIES_NUMBER, 1)
    .str(tags::SERIES_DATE, &meta.study_date)
    .str(tags::SERIES_TIME, &meta.study_time)
    .str(
        tags::SERIES_DESCRIPTION,
        "H&E whole slide image (synthetic)",
    )
    .str(tags::FRAME_OF_REFERENCE_UID, &meta.frame_of_reference_uid)
    .str(tags::POSITION_REFERENCE_INDICATOR, "SLIDE_CORNER")
    .str(tags::MANUFACTURER, "slidemesh synth")
    .str(tags::MANUFACTURER_MODEL_NAME, "synthetic scanner")
    .str(tags::DEVICE_SERIAL_NUMBER, &meta.device_serial)
    .str(
        tags::SOFTWARE_VERSIONS,
        concat!("slidemesh-tools ", env!("CARGO_PKG_VERSION")),
    )
    .str(tags::INSTITUTION_NAME, &meta.institution_name)
    .str(tags::INSTITUTIONAL_DEPARTMENT_NAME, "Cellular Pathology")
    .int_str(tags::INSTANCE_NUMBER, desc.instance_number as u64)
    .str(tags::CONTENT_DATE, &meta.study_date)
    .str(tags::CONTENT_TIME, &meta.study_time)
    .str(tags::ACQUISITION_DATE_TIME, &meta.acquisition_datetime)
    .seq(tags::ACQUISITION_CONTEXT_SEQUENCE, vec![]);

    // Whole Slide Microscopy Image module.
    b.strs(tags::IMAGE_TYPE, &image_type)
        .f32(tags::IMAGED_VOLUME_WIDTH, desc.imaged_mm.0 as f32)
        .f32(tags::IMAGED_VOLUME_HEIGHT, desc.imaged_mm.1 as f32)
        // Depth in µm: a standard 4 µm section.
        .f32(tags::IMAGED_VOLUME_DEPTH, 4.0)
        .u32(tags::TOTAL_PIXEL_MATRIX_COLUMNS, desc.total_columns)
        .u32(tags::TOTAL_PIXEL_MATRIX_ROWS, desc.total_rows)
        .u32(tags::TOTAL_PIXEL_MATRIX_FOCAL_PLANES, 1)
        .seq(
            tags::TOTAL_PIXEL_MATRIX_ORIGIN_SEQUENCE,
            vec![
                DataSet::new()
                    .ds(
                        tags::X_OFFSET_IN_SLIDE_COORDINATE_SYSTEM,
                        &[desc.origin_mm.0],
                    )
                    .ds(
                        tags::Y_OFFSET_IN_SLIDE_COORDINATE_SYSTEM,
                        &[desc.origin_mm.1],
                    )
                    .build(),
            ],
        )
        .ds(
            tags::IMAGE_ORIENTATION_SLIDE,
            &[0.0, -1.0, 0.0, -1.0, 0.0, 0.0],
        )
        .str(tags::VOLUMETRIC_PROPERTIES, "VOLUME")
        .str(tags::SPECIMEN_LABEL_IN_IMAGE, yes_no(is_label_like))
        // The label carries accession and specimen numbers in its pixels.
        .str(tags::BURNED_IN_ANNOTATION, yes_no(is_label_like))
        .str(tags::FOCUS_METHOD, "AUTO")
        .str(tags::EXTENDED_DEPTH_OF_FIELD, "NO")
        .u32(tags::NUMBER_OF_OPTICAL_PATHS, 1)
        .str(tags::DIMENSION_ORGANIZATION_TYPE, "TILED_FULL")
        .str(tags::LOSSY_IMAGE_COMPRESSION, "01")
        .ds(
            tags::LOSSY_IMAGE_COMPRESSION_RATIO,
            &[(uncompressed / compressed * 100.0).round() / 100.0],
        )
        .str(tags::LOSSY_IMAGE_COMPRESSION_METHOD, "ISO_10918_1");

    // Image Pixel module. JPEG baseline with 4:2:0 YCbCr is YBR_FULL_422 (PS3.5 8.2.1).
    b.u16(tags::SAMPLES_PER_PIXEL, 3)
        .str(tags::PHOTOMETRIC_INTERPRETATION, "YBR_FULL_422")
        .u16(tags::PLANAR_CONFIGURATION, 0)
        .int_str(tags::NUMBER_OF_FRAMES, desc.frames as u64)
        .u16(tags::ROWS, desc.tile_rows as u16)
        .u16(tags::COLUMNS, desc.tile_columns as u16)
        .u16(tags::BITS_ALLOCATED, 8)
        .u16(tags::BITS_STORED, 8)
        .u16(tags::HIGH_BIT, 7)
        .u16(tags::PIXEL_REPRESENTATION, 0);

    // Multi-frame Dimension module: TILED_FULL frames are indexed by their position in
    // the total pixel matrix.
    let organization = DataSet::new()
        .str(
            tags::DIMENSION_ORGANIZATION_UID,
            &meta.dimension_organization_uid,
        )
        .build();
    let index = |pointer: Tag, label: &str| {
        DataSet::new()
            .str(
                tags::DIMENSION_ORGANIZATION_UID,
                &meta.dimension_organization_uid,
            )
            .tags(tags::DIMENSION_INDEX_POINTER, &[pointer])
            .tags(
                tags::FUNCTIONAL_GROUP_POINTER,
                &[tags::PLANE_POSITION_SLIDE_SEQUENCE],
            )
            .str(tags::DIMENSION_DESCRIPTION_LABEL, label)
            .build()
    };
    b.seq(tags::DIMENSION_ORGANIZATION_SEQUENCE, vec![organization])
        .seq(
            tags::DIMENSION_INDEX_SEQUENCE,
            vec![
                index(
                    tags::COLUMN_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX,
                    "Column position",
                ),
                index(
                    tags::ROW_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX,
                    "Row position",
                ),
            ],
        );

    // Shared functional groups: spacing, frame type and optical path hold for all frames.
    let shared = DataSet::new()
        .seq(
            tags::PIXEL_MEASURES_SEQUENCE,
            vec![
                DataSet::new()
                    .ds(tags::PIXEL_SPACING, &[sp, sp])
                    .ds(tags::SLICE_THICKNESS, &[0.004])
                    .build(),
            ],
        )
        .seq(
            tags::WHOLE_SLIDE_MICROSCOPY_IMAGE_FRAME_TYPE_SEQUENCE,
            vec![DataSet::new().strs(tags::FRAME_TYPE, &image_type).build()],
        )
        .seq(
            tags::OPTICAL_PATH_IDENTIFICATION_SEQUENCE,
            vec![
                DataSet::new()
                    .str(tags::OPTICAL_PATH_IDENTIFIER, "1")
                    .build(),
            ],
        )
        .build();
    b.seq(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![shared])
        .seq(tags::OPTICAL_PATH_SEQUENCE, vec![optical_path()]);

    // Specimen module.
    b.str(tags::CONTAINER_IDENTIFIER, &meta.container_id)
        .seq(tags::ISSUER_OF_THE_CONTAINER_IDENTIFIER_SEQUENCE, vec![])
        .seq(
            tags::CONTAINER_TYPE_CODE_SEQUENCE,
            vec![Code::new("433466003", "SCT", "Microscope slide").item()],
        )
        .seq(
            tags::SPECIMEN_DESCRIPTION_SEQUENCE,
            vec![specimen_description(meta)],
        );

    // Pixel data, with its offset tables.
    let Encapsulated {
        basic_offsets,
        extended,
        fragments,
    } = desc.pixels;
    if let Some((offsets, lengths)) = extended {
        b.put(
            tags::EXTENDED_OFFSET_TABLE,
            PrimitiveValue::U64(offsets.into()),
        )
        .put(
            tags::EXTENDED_OFFSET_TABLE_LENGTHS,
            PrimitiveValue::U64(lengths.into()),
        );
    }
    b.element(InMemElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        Value::PixelSequence(PixelFragmentSequence::new(basic_offsets, fragments)),
    ));
    b.build()
}

/// Write a data set as a DICOM Part 10 file with the JPEG Baseline transfer syntax.
pub(crate) fn write_instance(obj: InMemDicomObject, path: &Path) -> anyhow::Result<()> {
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(uids::JPEG_BASELINE8_BIT)
                .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
                .implementation_version_name(IMPLEMENTATION_VERSION_NAME),
        )
        .context("building the file meta group")?;
    file.write_to_file(path)
        .with_context(|| format!("writing {}", path.display()))
}
