//! Part 10 files for instances of shared slides. The owner keeps the original files; a
//! grantee has the instance's data set (in the signed manifest, bulk pixel data left out)
//! and its frames (verified tiles), which is everything a DICOM file holds. The rebuilt
//! file has the same attributes and the same frame bytes; what differs from the owner's
//! file is the encoding around them (file meta, offset tables), which is why a rebuilt
//! instance is not the owner's object and has no object id.

use dicom_core::value::{PixelFragmentSequence, Value as DicomValue};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use serde_json::Value;

use super::catalogue::InstanceEntry;

/// The instance as a Part 10 file, frames in order.
pub fn part10(instance: &InstanceEntry, frames: Vec<Vec<u8>>) -> Result<Vec<u8>, String> {
    let ts = TransferSyntaxRegistry
        .get(&instance.transfer_syntax_uid)
        .ok_or_else(|| format!("unknown transfer syntax {}", instance.transfer_syntax_uid))?;
    let mut metadata = instance.metadata.clone();
    // Offset tables describe the owner's byte layout, not this file's.
    metadata.remove("7FE00001");
    metadata.remove("7FE00002");
    let mut object: InMemDicomObject =
        dicom_json::from_value(Value::Object(metadata)).map_err(|e| {
            format!(
                "metadata of {} is not a data set: {e}",
                instance.sop_instance_uid
            )
        })?;
    let pixel_data = if ts.is_encapsulated_pixel_data() {
        // One fragment per frame and an empty basic offset table: valid for every
        // encapsulated syntax, and what readers handle best.
        DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            DicomValue::PixelSequence(PixelFragmentSequence::new(Vec::<u32>::new(), frames)),
        )
    } else {
        let bits: u16 = object
            .element(tags::BITS_ALLOCATED)
            .ok()
            .and_then(|e| e.to_int().ok())
            .unwrap_or(8);
        let vr = if bits > 8 { VR::OW } else { VR::OB };
        DataElement::new(tags::PIXEL_DATA, vr, PrimitiveValue::from(frames.concat()))
    };
    object.put(pixel_data);
    let sop_class = object
        .element(tags::SOP_CLASS_UID)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches('\0').to_string())
        .ok_or_else(|| {
            format!(
                "instance {} has no SOP Class UID",
                instance.sop_instance_uid
            )
        })?;
    let file = object
        .with_meta(
            FileMetaTableBuilder::new()
                .media_storage_sop_class_uid(sop_class)
                .media_storage_sop_instance_uid(instance.sop_instance_uid.as_str())
                .transfer_syntax(instance.transfer_syntax_uid.as_str()),
        )
        .map_err(|e| format!("cannot build file meta: {e}"))?;
    let mut bytes = Vec::new();
    file.write_all(&mut bytes)
        .map_err(|e| format!("cannot encode instance {}: {e}", instance.sop_instance_uid))?;
    Ok(bytes)
}
