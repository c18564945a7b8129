//! Assembling a slide: the scanned instances of one series become a `SlideManifest` and a
//! `SlideSummary`. Pure functions; nothing here reads files or touches the store.

use serde_json::Value;
use slidemesh_protocol::{
    AssociatedImage, InstanceMeta, InstanceRole, Level, OpticalPath, SlideManifest, TrustCode,
};

use crate::store::instance::{ImageFlavor, InstanceRecord};
use crate::store::{Origin, SlideSummary};

/// Why a series cannot become a slide.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AssembleError {
    #[error("series {series} has no VOLUME instance (only label, overview or thumbnail images)")]
    NoPyramid { series: String },
    #[error(
        "series {series} has two VOLUME instances of {width}x{height} ({a} and {b}) that are not parts of one concatenation"
    )]
    SplitLevel {
        series: String,
        width: u32,
        height: u32,
        a: String,
        b: String,
    },
    #[error("series {series}: instances disagree on {what}")]
    Inconsistent { series: String, what: &'static str },
    #[error("series {series}: {detail}")]
    Invalid { series: String, detail: String },
}

/// Builds the manifest of one series from all its instances (in any order, no duplicates).
pub fn assemble(
    owner: &TrustCode,
    instances: &[&InstanceRecord],
) -> Result<SlideManifest, AssembleError> {
    let first = instances.first().ok_or_else(|| AssembleError::Invalid {
        series: String::new(),
        detail: "no instances".into(),
    })?;
    let series = first.series_uid.clone();
    if instances.iter().any(|i| i.study_uid != first.study_uid) {
        return Err(AssembleError::Inconsistent {
            series,
            what: "StudyInstanceUID",
        });
    }

    let mut volumes: Vec<&InstanceRecord> = instances
        .iter()
        .copied()
        .filter(|i| i.flavor == ImageFlavor::Volume)
        .collect();
    if volumes.is_empty() {
        return Err(AssembleError::NoPyramid { series });
    }
    // Largest level first; ties broken by UID so the order never depends on input order.
    volumes.sort_by(|a, b| {
        (b.width as u64 * b.height as u64)
            .cmp(&(a.width as u64 * a.height as u64))
            .then_with(|| a.sop_instance_uid.cmp(&b.sop_instance_uid))
    });
    // Instances of equal size are one level split over several files (a DICOM
    // concatenation, as converters write when they cap file sizes).
    let mut groups: Vec<Vec<&InstanceRecord>> = Vec::new();
    for v in volumes {
        match groups.last_mut() {
            Some(group) if group[0].width == v.width && group[0].height == v.height => {
                group.push(v)
            }
            _ => groups.push(vec![v]),
        }
    }
    let levels: Vec<Level> = groups
        .iter_mut()
        .map(|group| merge_level(&series, group))
        .collect::<Result<_, _>>()?;
    let level_of = |uid: &str| {
        levels
            .iter()
            .position(|l| l.instance_uids.iter().any(|u| u == uid))
            .unwrap_or(0) as u32
    };

    let mut associated: Vec<AssociatedImage> = instances
        .iter()
        .filter_map(|i| match i.flavor {
            ImageFlavor::Associated(kind) => Some(AssociatedImage {
                kind,
                width: i.width,
                height: i.height,
                tile_width: i.tile_width,
                tile_height: i.tile_height,
                tiles: i.frames.iter().map(|f| f.tile).collect(),
                instance_uid: i.sop_instance_uid.clone(),
            }),
            ImageFlavor::Volume => None,
        })
        .collect();
    associated.sort_by(|a, b| {
        a.kind
            .cmp(&b.kind)
            .then_with(|| a.instance_uid.cmp(&b.instance_uid))
    });

    let mut optical_paths: Vec<OpticalPath> = Vec::new();
    for path in groups
        .iter()
        .flatten()
        .flat_map(|v| v.optical_path_list.iter())
    {
        if !optical_paths
            .iter()
            .any(|p| p.identifier == path.identifier)
        {
            optical_paths.push(path.clone());
        }
    }

    let mut metas: Vec<InstanceMeta> = instances
        .iter()
        .map(|i| InstanceMeta {
            sop_instance_uid: i.sop_instance_uid.clone(),
            role: match i.flavor {
                ImageFlavor::Volume => InstanceRole::Level(level_of(&i.sop_instance_uid)),
                ImageFlavor::Associated(kind) => InstanceRole::Associated(kind),
            },
            transfer_syntax_uid: i.transfer_syntax_uid.clone(),
            object: i.object,
            file_len: i.file_len,
            metadata_json: i.metadata_json.clone(),
        })
        .collect();
    metas.sort_by(|a, b| a.sop_instance_uid.cmp(&b.sop_instance_uid));

    let manifest = SlideManifest {
        owner: owner.clone(),
        study_uid: first.study_uid.clone(),
        series_uid: series.clone(),
        frame_of_reference_uid: groups[0][0].frame_of_reference_uid.clone(),
        levels,
        associated,
        optical_paths,
        instances: metas,
    };
    manifest.validate().map_err(|e| AssembleError::Invalid {
        series,
        detail: e.to_string(),
    })?;
    Ok(manifest)
}

/// One level from the instance(s) holding it. Several instances must form one
/// concatenation: TILED_FULL parts are ordered by their frame offset and fill the grid in
/// order; TILED_SPARSE parts carry their own positions.
fn merge_level(series: &str, group: &mut [&InstanceRecord]) -> Result<Level, AssembleError> {
    group.sort_by(|a, b| {
        a.concatenation_offset
            .cmp(&b.concatenation_offset)
            .then_with(|| a.sop_instance_uid.cmp(&b.sop_instance_uid))
    });
    let first = group[0];
    if group.len() > 1 {
        let split = || AssembleError::SplitLevel {
            series: series.to_string(),
            width: first.width,
            height: first.height,
            a: first.sop_instance_uid.clone(),
            b: group[1].sop_instance_uid.clone(),
        };
        if first.concatenation_uid.is_none()
            || group
                .iter()
                .any(|i| i.concatenation_uid != first.concatenation_uid)
            || group.iter().any(|i| i.organization != first.organization)
            || group
                .iter()
                .any(|i| (i.tile_width, i.tile_height) != (first.tile_width, first.tile_height))
        {
            return Err(split());
        }
        // Full-grid parts must follow on from each other without gaps or overlaps.
        let mut next = 0u64;
        for part in group.iter() {
            if first.organization == slidemesh_protocol::DimensionOrganization::TiledFull
                && part.concatenation_offset as u64 != next
            {
                return Err(split());
            }
            next += part.frames.len() as u64;
        }
    }
    Ok(Level {
        width: first.width,
        height: first.height,
        tile_width: first.tile_width,
        tile_height: first.tile_height,
        pixel_spacing_mm: first.pixel_spacing_mm,
        focal_planes: first.focal_planes,
        optical_paths: first.optical_paths,
        organization: first.organization,
        tiles: group
            .iter()
            .flat_map(|i| i.frames.iter().map(|f| f.tile))
            .collect(),
        positions: group
            .iter()
            .flat_map(|i| i.positions.iter().copied())
            .collect(),
        instance_uids: group.iter().map(|i| i.sop_instance_uid.clone()).collect(),
    })
}

/// Extracts the facts lists show from the manifest and the base level's metadata.
pub fn summarise(manifest: &SlideManifest, origin: Origin) -> SlideSummary {
    let base = &manifest.levels[0];
    let base_meta: Value = manifest
        .instances
        .iter()
        .find(|i| base.instance_uids.first() == Some(&i.sop_instance_uid))
        .and_then(|i| serde_json::from_str(&i.metadata_json).ok())
        .unwrap_or(Value::Null);
    let tiles = manifest.all_tiles().count() as u64;
    SlideSummary {
        owner: manifest.owner.clone(),
        origin,
        series_uid: manifest.series_uid.clone(),
        study_uid: manifest.study_uid.clone(),
        container_id: first_string(&base_meta, "00400512"),
        stain: stain(&base_meta),
        anatomic_site: anatomic_site(&base_meta),
        acquired: first_string(&base_meta, "0008002A").map(|dt| format_datetime(&dt)),
        levels: manifest.levels.len() as u32,
        width: base.width,
        height: base.height,
        tiles,
        bytes: manifest.instances.iter().map(|i| i.file_len).sum(),
        has_label: manifest
            .associated(slidemesh_protocol::AssociatedKind::Label)
            .is_some(),
        has_overview: manifest
            .associated(slidemesh_protocol::AssociatedKind::Overview)
            .is_some(),
        has_thumbnail: manifest
            .associated(slidemesh_protocol::AssociatedKind::Thumbnail)
            .is_some(),
    }
}

/// Items of a sequence attribute in the DICOM JSON model.
fn items<'a>(dataset: &'a Value, tag: &str) -> impl Iterator<Item = &'a Value> {
    dataset
        .get(tag)
        .and_then(|e| e.get("Value"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn first_string(dataset: &Value, tag: &str) -> Option<String> {
    let value = dataset.get(tag)?.get("Value")?.as_array()?.first()?;
    crate::dicom_json::value_string(value)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn code_meaning(item: &Value, sequence: &str) -> Option<String> {
    items(item, sequence)
        .next()
        .and_then(|code| first_string(code, "00080104"))
}

/// The staining substances from the specimen preparation steps (SCT 424361007 "Using
/// substance"), shown as "H&E" when both hematoxylin and eosin are used.
fn stain(meta: &Value) -> Option<String> {
    let mut substances = Vec::new();
    for specimen in items(meta, "00400560") {
        for step in items(specimen, "00400610") {
            for content in items(step, "00400612") {
                let concept = items(content, "0040A043")
                    .next()
                    .and_then(|c| first_string(c, "00080100"));
                if concept.as_deref() == Some("424361007")
                    && let Some(meaning) = code_meaning(content, "0040A168")
                    && !substances.contains(&meaning)
                {
                    substances.push(meaning);
                }
            }
        }
    }
    let lower: Vec<String> = substances.iter().map(|s| s.to_lowercase()).collect();
    if lower
        .iter()
        .any(|s| s.contains("hematoxylin") || s.contains("haematoxylin"))
        && lower.iter().any(|s| s.contains("eosin"))
    {
        return Some("H&E".into());
    }
    (!substances.is_empty()).then(|| substances.join(" + "))
}

fn anatomic_site(meta: &Value) -> Option<String> {
    items(meta, "00400560")
        .find_map(|specimen| code_meaning(specimen, "00082228"))
        .or_else(|| code_meaning(meta, "00082218"))
}

/// DICOM DT (YYYYMMDDHHMMSS.FFFFFF&ZZXX) to ISO 8601 for display; other forms unchanged.
fn format_datetime(dt: &str) -> String {
    let digits: String = dt.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.len() >= 12 {
        let sec = if digits.len() >= 14 {
            &digits[12..14]
        } else {
            "00"
        };
        format!(
            "{}-{}-{}T{}:{}:{}",
            &digits[0..4],
            &digits[4..6],
            &digits[6..8],
            &digits[8..10],
            &digits[10..12],
            sec
        )
    } else if digits.len() == 8 {
        format!("{}-{}-{}", &digits[0..4], &digits[4..6], &digits[6..8])
    } else {
        dt.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetime_formats() {
        assert_eq!(format_datetime("20260304101112.123"), "2026-03-04T10:11:12");
        assert_eq!(format_datetime("20260304"), "2026-03-04");
        assert_eq!(format_datetime("odd"), "odd");
    }

    #[test]
    fn stain_from_specimen_preparation() {
        let substance = |meaning: &str| {
            serde_json::json!({
                "0040A043": {"vr": "SQ", "Value": [{"00080100": {"vr": "SH", "Value": ["424361007"]}}]},
                "0040A168": {"vr": "SQ", "Value": [{"00080104": {"vr": "LO", "Value": [meaning]}}]}
            })
        };
        let meta = serde_json::json!({
            "00400560": {"vr": "SQ", "Value": [{
                "00400610": {"vr": "SQ", "Value": [{
                    "00400612": {"vr": "SQ", "Value": [substance("hematoxylin stain"), substance("water soluble eosin stain")]}
                }]},
                "00082228": {"vr": "SQ", "Value": [{"00080104": {"vr": "LO", "Value": ["Breast"]}}]}
            }]}
        });
        assert_eq!(stain(&meta).as_deref(), Some("H&E"));
        assert_eq!(anatomic_site(&meta).as_deref(), Some("Breast"));
    }
}
