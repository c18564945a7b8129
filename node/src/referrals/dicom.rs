//! An answered referral's annotations on one slide as a DICOM Microscopy Bulk Simple
//! Annotations instance (PS3.3 A.87), so other DICOM software (viewers, archives, image
//! analysis) reads the specialist's marks: one annotation group per mark (its text as the
//! group's label and description, its length or area in micrometres as a measurement), 2D
//! coordinates in the total pixel matrix of the slide's full-resolution image, in the slide's
//! own study, with the patient and specimen copied from that image.
//!
//! Both sides of a referral build the same instance from the same signed opinion and the
//! owner's signed manifest: its UIDs derive from the referral and the slide, its dates from
//! when the answer was given, so nothing about it needs storing or sending.

use anyhow::{Context, bail};
use dicom_core::Tag;
use dicom_core::value::PrimitiveValue;
use dicom_dictionary_std::{tags, uids};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{FileDicomObject, InMemDicomObject};
use slidemesh_protocol::annotation::{Measure, Spacing};
use slidemesh_protocol::{Annotation, Opinion, Referral, Shape, SlideId, SlideManifest};

use crate::dicom_build::{Code, DataSet};
use crate::store::referrals::StoredReferral;

/// The SOP class written.
pub const ANN_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.91.1";
const WSI_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.77.1.6";

/// What a specialist's mark is (CID 7150 category, CID 7151 type): an abnormal structure,
/// a lesion. The form does not ask for a finer code per mark yet.
const CATEGORY: Code = Code::new("49755003", "SCT", "Morphologically Abnormal Structure");
const PROPERTY: Code = Code::new("52988006", "SCT", "Lesion");
const LENGTH: Code = Code::new("410668003", "SCT", "Length");
const AREA: Code = Code::new("42798000", "SCT", "Area");
const MICROMETRE: Code = Code::new("um", "UCUM", "micrometer");
const SQUARE_MICROMETRE: Code = Code::new("um2", "UCUM", "square micrometer");

/// What the annotation instance copies from the slide's image: patient, study and specimen
/// (so it files with the case, and validators find the modules the IOD expects).
const COPIED: &[Tag] = &[
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::ISSUER_OF_PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::STUDY_ID,
    tags::ACCESSION_NUMBER,
    tags::STUDY_DESCRIPTION,
    tags::CONTAINER_IDENTIFIER,
    tags::ISSUER_OF_THE_CONTAINER_IDENTIFIER_SEQUENCE,
    tags::CONTAINER_TYPE_CODE_SEQUENCE,
    tags::SPECIMEN_DESCRIPTION_SEQUENCE,
];

/// The UIDs of the annotation series and instance for `referral`'s marks on `slide`:
/// `2.25.` and a 128-bit number derived from both, the same at both trusts.
pub fn uids(referral: &Referral, slide: &SlideId) -> (String, String) {
    let derive = |what: &str| {
        let mut h = blake3::Hasher::new_derive_key("slidemesh annotation uid v1");
        h.update(referral.id.as_bytes());
        h.update(slide.as_bytes());
        h.update(what.as_bytes());
        let mut bytes: [u8; 16] = h.finalize().as_bytes()[..16].try_into().expect("16 bytes");
        // A name-based UUID (version 8, RFC 9562 variant), as PS3.5 B.2 wants under 2.25.
        bytes[6] = (bytes[6] & 0x0f) | 0x80;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        format!("2.25.{}", u128::from_be_bytes(bytes))
    };
    (derive("series"), derive("instance"))
}

/// The annotation instance of `opinion`'s marks on `slide` (whose signed manifest is
/// `manifest`), answered at `answered_at`; `None` when the opinion marks nothing there.
pub fn annotation_instance(
    referral: &Referral,
    opinion: &Opinion,
    answered_at: u64,
    slide: &SlideId,
    manifest: &SlideManifest,
) -> anyhow::Result<Option<FileDicomObject<InMemDicomObject>>> {
    let marks: Vec<&Annotation> = opinion
        .annotations
        .iter()
        .filter(|a| &a.slide == slide)
        .collect();
    if marks.is_empty() {
        return Ok(None);
    }
    let base = manifest
        .levels
        .first()
        .context("the slide has no pyramid level")?;
    let image_uid = base
        .instance_uids
        .first()
        .context("the slide's full-resolution level has no instance")?;
    if let Some(i) = marks.iter().position(|a| !a.fits(base.width, base.height)) {
        bail!(
            "annotation {} lies outside the slide's {} x {} pixel matrix",
            i + 1,
            base.width,
            base.height
        );
    }
    let image = manifest
        .instances
        .iter()
        .find(|i| &i.sop_instance_uid == image_uid)
        .context("the manifest lists no metadata for its full-resolution image")?;
    let source: InMemDicomObject = dicom_json::from_str(&image.metadata_json)
        .context("the full-resolution image's metadata is not DICOM JSON")?;
    let spacing = base.pixel_spacing_mm.and_then(Spacing::from_dicom);
    let (series_uid, instance_uid) = uids(referral, slide);
    let (date, time) = dicom_date_time(answered_at);

    let mut ds = DataSet::new();
    for &tag in COPIED {
        if let Some(e) = source.element_opt(tag).ok().flatten() {
            ds.element(e.clone());
        }
    }
    let reference = || {
        DataSet::new()
            .str(tags::REFERENCED_SOP_CLASS_UID, WSI_SOP_CLASS)
            .str(tags::REFERENCED_SOP_INSTANCE_UID, image_uid)
            .build()
    };
    // Notes are free text in any script: UTF-8, whatever the slide's own character set (the
    // copied values are text already, decoded from its DICOM JSON).
    ds.str(tags::SPECIFIC_CHARACTER_SET, "ISO_IR 192")
        .str(tags::SOP_CLASS_UID, ANN_SOP_CLASS)
        .str(tags::SOP_INSTANCE_UID, &instance_uid)
        .str(tags::INSTANCE_CREATION_DATE, &date)
        .str(tags::INSTANCE_CREATION_TIME, &time)
        .str(tags::STUDY_INSTANCE_UID, &manifest.study_uid)
        .str(tags::MODALITY, "ANN")
        .str(tags::SERIES_INSTANCE_UID, &series_uid)
        .int_str(tags::SERIES_NUMBER, 900)
        .str(
            tags::SERIES_DESCRIPTION,
            &format!("Opinion from {}", referral.to),
        )
        .str(tags::MANUFACTURER, "slidemesh")
        .str(tags::MANUFACTURER_MODEL_NAME, "slidemesh node")
        // The answering trust's node made it: its ODS code identifies the device.
        .str(tags::DEVICE_SERIAL_NUMBER, referral.to.as_str())
        .str(tags::SOFTWARE_VERSIONS, env!("CARGO_PKG_VERSION"))
        .int_str(tags::INSTANCE_NUMBER, 1)
        .str(tags::CONTENT_LABEL, "OPINION")
        .str(
            tags::CONTENT_DESCRIPTION,
            &format!("Second opinion marks from {}", referral.to),
        )
        .str(tags::CONTENT_DATE, &date)
        .str(tags::CONTENT_TIME, &time)
        .str(tags::ANNOTATION_COORDINATE_TYPE, "2D")
        .str(tags::PIXEL_ORIGIN_INTERPRETATION, "VOLUME")
        .seq(tags::REFERENCED_IMAGE_SEQUENCE, vec![reference()])
        .seq(
            tags::REFERENCED_SERIES_SEQUENCE,
            vec![
                DataSet::new()
                    .str(tags::SERIES_INSTANCE_UID, &manifest.series_uid)
                    .seq(tags::REFERENCED_INSTANCE_SEQUENCE, vec![reference()])
                    .build(),
            ],
        );
    // Type 2: empty when the trust's node answered on its own account. An account name is
    // no person name: PN's separators are blanked.
    match &opinion.author {
        Some(author) => ds.str(
            tags::CONTENT_CREATOR_NAME,
            &author
                .id
                .chars()
                .map(|c| {
                    if matches!(c, '\\' | '^' | '=') {
                        ' '
                    } else {
                        c
                    }
                })
                .take(64)
                .collect::<String>(),
        ),
        None => ds.empty(tags::CONTENT_CREATOR_NAME),
    };
    let groups = marks
        .iter()
        .enumerate()
        .map(|(i, mark)| group(&instance_uid, i, mark, spacing))
        .collect();
    ds.seq(tags::ANNOTATION_GROUP_SEQUENCE, groups);

    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
        .media_storage_sop_class_uid(ANN_SOP_CLASS)
        .media_storage_sop_instance_uid(&instance_uid)
        .implementation_class_uid(crate::dicom_build::IMPLEMENTATION_CLASS_UID)
        .implementation_version_name("SLIDEMESH_NODE");
    Ok(Some(
        ds.build()
            .with_meta(meta)
            .context("building the annotation instance's file meta")?,
    ))
}

/// One mark as its own annotation group (so each keeps its text and its measurement).
fn group(
    instance_uid: &str,
    index: usize,
    mark: &Annotation,
    spacing: Option<Spacing>,
) -> InMemDicomObject {
    let graphic_type = match &mark.shape {
        Shape::Point(_) => "POINT",
        Shape::Line(_) => "POLYLINE",
        Shape::Rectangle { .. } => "RECTANGLE",
        Shape::Polygon(_) => "POLYGON",
    };
    let vertices = mark.shape.vertices();
    let number = index + 1;
    let text = mark.text.trim();
    let label = if text.is_empty() {
        format!("{} {number}", mark.shape.kind())
    } else {
        long_string(text)
    };
    let mut g = DataSet::new();
    g.u16(
        tags::ANNOTATION_GROUP_NUMBER,
        u16::try_from(number).expect("at most MAX_ANNOTATIONS (256) marks"),
    )
    .str(
        tags::ANNOTATION_GROUP_UID,
        &format!("{instance_uid}.{number}"),
    )
    .str(tags::ANNOTATION_GROUP_LABEL, &label)
    .str(tags::ANNOTATION_GROUP_GENERATION_TYPE, "MANUAL")
    .seq(
        tags::ANNOTATION_PROPERTY_CATEGORY_CODE_SEQUENCE,
        vec![CATEGORY.item()],
    )
    .seq(
        tags::ANNOTATION_PROPERTY_TYPE_CODE_SEQUENCE,
        vec![PROPERTY.item()],
    )
    .str(tags::GRAPHIC_TYPE, graphic_type)
    .u32(tags::NUMBER_OF_ANNOTATIONS, 1)
    .str(tags::ANNOTATION_APPLIES_TO_ALL_OPTICAL_PATHS, "YES")
    .put(
        tags::POINT_COORDINATES_DATA,
        PrimitiveValue::F32(vertices.iter().flat_map(|p| [p.x, p.y]).collect()),
    );
    if !text.is_empty() {
        g.str(tags::ANNOTATION_GROUP_DESCRIPTION, text);
    }
    if matches!(mark.shape, Shape::Line(_) | Shape::Polygon(_)) {
        // One annotation in the group: its points start at the first value (1-based).
        g.put(
            tags::LONG_PRIMITIVE_POINT_INDEX_LIST,
            PrimitiveValue::from(1_u32),
        );
    }
    if let Some(measure) = spacing.and_then(|s| mark.shape.measure(s)) {
        let (name, unit, value) = match measure {
            Measure::LengthUm(v) => (LENGTH, MICROMETRE, v),
            Measure::AreaUm2(v) => (AREA, SQUARE_MICROMETRE, v),
        };
        g.seq(
            tags::MEASUREMENTS_SEQUENCE,
            vec![
                DataSet::new()
                    .seq(tags::CONCEPT_NAME_CODE_SEQUENCE, vec![name.item()])
                    .seq(tags::MEASUREMENT_UNITS_CODE_SEQUENCE, vec![unit.item()])
                    .seq(
                        tags::MEASUREMENT_VALUES_SEQUENCE,
                        vec![
                            DataSet::new()
                                .put(
                                    tags::FLOATING_POINT_VALUES,
                                    PrimitiveValue::from(value as f32),
                                )
                                .build(),
                        ],
                    )
                    .build(),
            ],
        );
    }
    g.build()
}

/// Text as a Long String (LO): at most 64 bytes of UTF-8 (validators count bytes, not
/// characters), no backslash (LO's value separator), no control characters; longer text is
/// cut at a character boundary and ends in an ellipsis.
fn long_string(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c == '\\' || c.is_control() { ' ' } else { c })
        .collect();
    if clean.len() <= 64 {
        return clean.trim_end().to_string();
    }
    let mut out = String::new();
    for c in clean.chars() {
        if out.len() + c.len_utf8() > 64 - '…'.len_utf8() {
            break;
        }
        out.push(c);
    }
    format!("{}…", out.trim_end())
}

/// A Unix time as DICOM DA and TM, in UTC.
fn dicom_date_time(unix: u64) -> (String, String) {
    let text = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix),
    )
    .to_string();
    // 2026-12-07T20:05:18Z
    let date = text[..10].replace('-', "");
    let time = text[11..19].replace(':', "");
    (date, time)
}

/// The annotation instance of `stored`'s opinion on `slide` as a DICOM Part 10 file;
/// `None` before the answer, or when it marks nothing on that slide.
pub fn annotation_file(
    stored: &StoredReferral,
    slide: &SlideId,
    manifest: &SlideManifest,
) -> anyhow::Result<Option<Vec<u8>>> {
    let Some((opinion, update)) = &stored.opinion else {
        return Ok(None);
    };
    if !opinion.annotations.iter().any(|a| &a.slide == slide) {
        return Ok(None);
    }
    // When the answer was given, as its signer stated it (the same at both trusts).
    let answered_at = update
        .verify()
        .context("the stored answer does not verify")?
        .at;
    let Some(file) = annotation_instance(&stored.referral, opinion, answered_at, slide, manifest)?
    else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    file.write_all(&mut bytes)
        .context("encoding the annotation instance")?;
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_strings_fit_lo() {
        assert_eq!(long_string("a\\b\tc"), "a b c");
        let long = long_string(&"x".repeat(100));
        assert_eq!(long.len(), 64);
        assert!(long.ends_with('…'));
        // Bytes, not characters: each of these takes two.
        let accented = long_string(&"é".repeat(40));
        assert!(accented.len() <= 64, "{}", accented.len());
        assert_eq!(accented, format!("{}…", "é".repeat(30)));
    }

    #[test]
    fn dates_are_utc_da_and_tm() {
        assert_eq!(
            dicom_date_time(1_796_673_918),
            ("20261207".to_string(), "200518".to_string())
        );
    }
}
