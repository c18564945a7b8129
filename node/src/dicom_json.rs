//! Reading and writing attributes in the DICOM JSON model (PS3.18 F.2): an object keyed by
//! 8-digit upper-case hex tags, each element `{"vr": .., "Value": [..]}`. Manifests keep
//! instance metadata in this model; ingest reads summaries from it and DICOMweb serves it.

use serde_json::{Map, Value, json};

pub const SOP_CLASS_UID: &str = "00080016";
pub const SOP_INSTANCE_UID: &str = "00080018";
pub const STUDY_DATE: &str = "00080020";
pub const STUDY_TIME: &str = "00080030";
pub const ACCESSION_NUMBER: &str = "00080050";
pub const INSTANCE_AVAILABILITY: &str = "00080056";
pub const MODALITIES_IN_STUDY: &str = "00080061";
pub const MODALITY: &str = "00080060";
pub const REFERRING_PHYSICIAN_NAME: &str = "00080090";
pub const STUDY_DESCRIPTION: &str = "00081030";
pub const SERIES_DESCRIPTION: &str = "0008103E";
pub const RETRIEVE_URL: &str = "00081190";
pub const AVAILABLE_TRANSFER_SYNTAX_UID: &str = "00083002";
pub const PATIENT_NAME: &str = "00100010";
pub const PATIENT_ID: &str = "00100020";
pub const PATIENT_BIRTH_DATE: &str = "00100030";
pub const PATIENT_SEX: &str = "00100040";
pub const STUDY_INSTANCE_UID: &str = "0020000D";
pub const SERIES_INSTANCE_UID: &str = "0020000E";
pub const STUDY_ID: &str = "00200010";
pub const SERIES_NUMBER: &str = "00200011";
pub const INSTANCE_NUMBER: &str = "00200013";
pub const NUMBER_OF_STUDY_RELATED_SERIES: &str = "00201206";
pub const NUMBER_OF_STUDY_RELATED_INSTANCES: &str = "00201208";
pub const NUMBER_OF_SERIES_RELATED_INSTANCES: &str = "00201209";
pub const NUMBER_OF_FRAMES: &str = "00280008";
pub const ROWS: &str = "00280010";
pub const COLUMNS: &str = "00280011";
pub const IMAGE_TYPE: &str = "00080008";
pub const PIXEL_DATA: &str = "7FE00010";

/// The element's values as strings: person names by their alphabetic form, numbers as
/// written in JSON. Empty when the element is absent or has no value.
pub fn strings(object: &Map<String, Value>, tag: &str) -> Vec<String> {
    let Some(values) = object
        .get(tag)
        .and_then(|e| e.get("Value"))
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    values.iter().filter_map(value_string).collect()
}

/// One value as a string: a person name by its alphabetic form, a number as written.
pub fn value_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(o) => o
            .get("Alphabetic")
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}

/// The element's VR as written, if present.
pub fn vr<'a>(object: &'a Map<String, Value>, tag: &str) -> Option<&'a str> {
    object.get(tag)?.get("vr")?.as_str()
}

pub fn first_u64(object: &Map<String, Value>, tag: &str) -> Option<u64> {
    let first = object.get(tag)?.get("Value")?.as_array()?.first()?;
    first
        .as_u64()
        .or_else(|| first.as_str().and_then(|s| s.trim().parse().ok()))
}

/// Sets an element to string values (UI, CS, DA, ...), or to no value when `values` is
/// empty.
pub fn set_strings(object: &mut Map<String, Value>, tag: &str, vr: &str, values: &[&str]) {
    let mut element = json!({ "vr": vr });
    if !values.is_empty() {
        element["Value"] = json!(values);
    }
    object.insert(tag.to_string(), element);
}

/// Sets an integer element (IS, US, UL).
pub fn set_number(object: &mut Map<String, Value>, tag: &str, vr: &str, value: u64) {
    object.insert(tag.to_string(), json!({ "vr": vr, "Value": [value] }));
}

/// Copies the named elements from `source`, where present.
pub fn copy(target: &mut Map<String, Value>, source: &Map<String, Value>, tags: &[&str]) {
    for tag in tags {
        if let Some(element) = source.get(*tag) {
            target.insert((*tag).to_string(), element.clone());
        }
    }
}
