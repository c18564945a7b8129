//! De-identification of a slide's manifest for purposes that must not receive the patient's
//! identity (research, education, and whatever else the owner's policy withholds the label
//! for).
//!
//! The metadata is rewritten per the DICOM PS3.15 Basic Application Level Confidentiality
//! Profile (Table E.1-1 actions: remove, empty, dummy, replace UID), applied at every
//! nesting depth, with private attributes removed. Identifiers are replaced by **per-project
//! pseudonyms**: a keyed BLAKE3 hash under a key derived from the owner's node key and the
//! project, so the same patient, specimen or UID gets the same pseudonym in every slide of
//! one project (results can be joined within a study) and unrelated ones in two projects
//! (patients cannot be matched across studies by their pseudonyms without the owner's
//! key). The LABEL and OVERVIEW images are dropped, and any other associated image that
//! says it shows the label or burned-in text: the label carries identifiers in its pixels.
//!
//! What stays the same, and so links views of one slide to each other (not to a patient):
//! tile ids, since pixels are content and the tiles are the same bytes in every view, and
//! the slide id grants name. A de-identified view hides who the patient is; it does not
//! hide that two projects looked at the same slide.
//!
//! One deliberate difference from the Basic Profile's letter: the Specimen Preparation
//! Sequence is cleaned rather than emptied (its text values become pseudonyms, its dates
//! dummies, its coded steps stay), so a researcher still sees the stain. Where the profile would empty or remove an attribute the WSI IOD requires
//! (Content Date, Acquisition DateTime, Device Serial Number, Container Identifier, Specimen
//! Identifier) it is replaced by a dummy, so a rebuilt instance stays conformant.

use anyhow::Context as _;
use serde_json::{Map, Value, json};
use slidemesh_protocol::{AssociatedKind, InstanceRole, NodeKey, ObjectId, SlideManifest};

use crate::dicom_json::{self, PATIENT_ID, PATIENT_NAME};

/// The key derivation context for pseudonym keys. Changing it changes every pseudonym.
const PSEUDONYM_CONTEXT: &str = "slidemesh 2026-11 per-project pseudonyms v1";

/// What the profile does to one attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Treatment {
    /// X: the attribute is removed.
    Remove,
    /// Z: kept with no value.
    Empty,
    /// D: a dummy of the same VR (dates and times a fixed dummy, text a pseudonym).
    Dummy,
    /// U: a UID replaced by the project's pseudonymous UID.
    Uid,
    /// Patient's Name and ID: both become the patient's per-project pseudonym.
    Patient,
}

/// PS3.15 Table E.1-1 for the attributes a whole-slide image can carry (and those a
/// pathology system commonly adds), by tag. Attributes not listed are kept, as the Basic
/// Profile keeps them; private attributes are removed separately.
fn treatment(tag: &str) -> Option<Treatment> {
    use Treatment::*;
    Some(match tag {
        // Patient identity.
        "00100010" | "00100020" => Patient,
        "00100030" | "00100040" => Empty,
        "00100021" | "00100032" | "00100050" | "00100101" | "00100102" | "00101000"
        | "00101001" | "00101002" | "00101005" | "00101010" | "00101020" | "00101030"
        | "00101040" | "00101050" | "00101060" | "00101080" | "00101081" | "00101090"
        | "00102000" | "00102110" | "00102150" | "00102152" | "00102154" | "00102160"
        | "00102180" | "001021A0" | "001021B0" | "001021C0" | "001021D0" | "001021F0"
        | "00102203" | "00102297" | "00102299" | "00104000" => Remove,
        // Study, visit and request: who, where, when, why.
        "00080020" | "00080030" | "00080050" | "00080090" | "00200010" => Empty,
        "00080012" | "00080013" | "00080021" | "00080022" | "00080024" | "00080025"
        | "00080031" | "00080032" | "00080034" | "00080035" | "00080080" | "00080081"
        | "00080082" | "00080092" | "00080094" | "00080096" | "00081010" | "00081030"
        | "0008103E" | "00081040" | "00081048" | "00081049" | "00081050" | "00081052"
        | "00081060" | "00081062" | "00081070" | "00081072" | "00081080" | "00081084"
        | "00081110" | "00081111" | "00081120" | "00082111" | "00181030" | "00181400"
        | "00184000" | "00204000" | "00320012" | "00321032" | "00321033" | "00321060"
        | "00321070" | "00324000" | "00380010" | "00380300" | "00380400" | "00380500"
        | "00384000" | "00400241" | "00400242" | "00400243" | "00400244" | "00400245"
        | "00400250" | "00400251" | "00400253" | "00400254" | "00400275" | "00400280"
        | "00401001" | "00401004" | "00401005" | "00401010" | "00401101" | "00401102"
        | "00401103" | "00401400" | "00402001" | "00402016" | "00402017" | "00402400"
        | "00403001" | "0040A078" | "0040A07A" | "0040A07C" | "0040A730" | "04000550"
        | "04000561" => Remove,
        // Dates and times the WSI IOD requires: a dummy rather than nothing.
        "00080023" | "00080033" | "0008002A" => Dummy,
        // Equipment.
        "00181000" => Dummy,
        "00181009" | "0018100A" | "00181200" | "00181201" | "00181202" | "00500020"
        | "00500021" => Remove,
        // Label text and barcode a converter may copy to every instance, slide and
        // container identifiers and descriptions, pyramid names, comments and reasons.
        "22000002" | "22000005" | "004006FA" | "0040050A" | "0040051A" | "0050001B"
        | "00200027" | "00081088" | "00080201" | "00084000" | "00209158" | "00321030"
        | "00401002" | "0008009D" | "00380014" | "00380060" | "00380061" | "00380062"
        | "00380064" | "00880200" => Remove,
        "0008009C" => Empty,
        // Per-frame and content-item dates and times.
        "00189074" | "00189151" | "0040A120" | "0040A121" | "0040A122" => Dummy,
        // Specimen: identifiers become pseudonyms, free-text descriptions go, issuers (which
        // name the institution) are emptied.
        "00400512" | "00400551" | "0040A160" | "0040A123" => Dummy,
        "00400600" | "00400602" => Remove,
        "00400513" | "00400562" | "00400555" => Empty,
        // UIDs that identify this study, its instances or things about them (Acquisition
        // and Pyramid UIDs are WSI's own).
        "00080017" | "00080019" | "0018100B" | "00041511" | "00080014" | "00080018"
        | "00080058" | "00081155" | "00081195" | "00083010" | "00181002" | "0020000D"
        | "0020000E" | "00200052" | "00200200" | "00200242" | "00209161" | "00209164"
        | "00281199" | "00281214" | "00400554" | "0040A124" | "0040A171" | "0040DB0C"
        | "0040DB0D" | "00620021" | "0070031A" | "00880140" | "30060024" | "300600C2" => Uid,
        _ => return None,
    })
}

/// Per-project pseudonyms from the owner's key. Deterministic: the same owner, project and
/// value always give the same pseudonym.
pub struct Pseudonyms {
    key: [u8; 32],
}

impl Pseudonyms {
    pub fn for_project(owner_key: &NodeKey, project: &str) -> Self {
        let base = owner_key.derive_secret(PSEUDONYM_CONTEXT);
        Self {
            key: *blake3::keyed_hash(&base, project.as_bytes()).as_bytes(),
        }
    }

    fn digest(&self, kind: &str, value: &str) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(kind.as_bytes());
        hasher.update(&[0]);
        hasher.update(value.as_bytes());
        hasher.finalize()
    }

    /// A UID under the 2.25 root (a UUID-sized decimal), at most 44 characters.
    pub fn uid(&self, uid: &str) -> String {
        let digest = self.digest("uid", uid);
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest.as_bytes()[..16]);
        format!("2.25.{}", u128::from_be_bytes(first))
    }

    /// The patient's pseudonym: fits Patient ID (LO) and Patient's Name (PN).
    pub fn patient(&self, patient_id: &str) -> String {
        Self::short("SMP", &self.digest("patient", patient_id))
    }

    /// A pseudonym for any other identifying text; 16 characters, so it fits an SH.
    pub fn text(&self, value: &str) -> String {
        Self::short("SM", &self.digest("text", value))
    }

    fn object(&self, object: &ObjectId) -> ObjectId {
        ObjectId::from(self.digest("object", &object.to_hex()))
    }

    fn short(prefix: &str, digest: &blake3::Hash) -> String {
        let hex = digest.to_hex().to_ascii_uppercase();
        format!("{prefix}{}", &hex[..16 - prefix.len()])
    }
}

/// The de-identified view of `manifest` for one project: UIDs, identifiers and metadata
/// rewritten, LABEL and OVERVIEW images and their instances dropped, instances re-sorted by
/// their new UIDs. The result validates like any manifest.
pub fn deidentify(
    manifest: &SlideManifest,
    pseudonyms: &Pseudonyms,
) -> anyhow::Result<SlideManifest> {
    let uid = |u: &str| pseudonyms.uid(u);
    let shows_label =
        |kind: AssociatedKind| matches!(kind, AssociatedKind::Label | AssociatedKind::Overview);
    // Associated images whose own metadata says they show the label or burned-in text go
    // too, whatever their kind.
    let flagged: std::collections::HashSet<&str> = manifest
        .instances
        .iter()
        .filter(|i| matches!(i.role, InstanceRole::Associated(_)))
        .filter(|i| shows_text(&i.metadata_json))
        .map(|i| i.sop_instance_uid.as_str())
        .collect();
    let mut view = manifest.clone();
    view.study_uid = uid(&manifest.study_uid);
    view.series_uid = uid(&manifest.series_uid);
    view.frame_of_reference_uid = manifest.frame_of_reference_uid.as_deref().map(uid);
    for level in &mut view.levels {
        level.instance_uids = level.instance_uids.iter().map(|u| uid(u)).collect();
    }
    view.associated
        .retain(|a| !shows_label(a.kind) && !flagged.contains(a.instance_uid.as_str()));
    for image in &mut view.associated {
        image.instance_uid = uid(&image.instance_uid);
    }
    view.instances.retain(|i| {
        !matches!(i.role, InstanceRole::Associated(kind) if shows_label(kind))
            && !flagged.contains(i.sop_instance_uid.as_str())
    });
    for instance in &mut view.instances {
        let mut dataset: Map<String, Value> = serde_json::from_str(&instance.metadata_json)
            .with_context(|| {
                format!(
                    "metadata of instance {} is not a DICOM JSON object",
                    instance.sop_instance_uid
                )
            })?;
        deidentify_dataset(&mut dataset, pseudonyms);
        instance.metadata_json = serde_json::to_string(&dataset)?;
        instance.sop_instance_uid = uid(&instance.sop_instance_uid);
        instance.object = pseudonyms.object(&instance.object);
    }
    view.instances
        .sort_by(|a, b| a.sop_instance_uid.cmp(&b.sop_instance_uid));
    view.validate()
        .context("the de-identified manifest is inconsistent")?;
    Ok(view)
}

/// Applies the profile to one instance's data set (DICOM JSON model) and records that it
/// was applied (Patient Identity Removed, De-identification Method and its code).
pub fn deidentify_dataset(dataset: &mut Map<String, Value>, pseudonyms: &Pseudonyms) {
    let patient = patient_of(dataset, pseudonyms);
    apply(dataset, pseudonyms, patient.as_deref());

    dicom_json::set_strings(dataset, "00120062", "CS", &["YES"]);
    dicom_json::set_strings(
        dataset,
        "00120063",
        "LO",
        &["PS3.15 Basic Profile; per-project pseudonyms"],
    );
    dataset.insert(
        "00120064".into(),
        json!({
            "vr": "SQ",
            "Value": [{
                "00080100": { "vr": "SH", "Value": ["113100"] },
                "00080102": { "vr": "SH", "Value": ["DCM"] },
                "00080104": { "vr": "LO", "Value": ["Basic Application Confidentiality Profile"] },
            }],
        }),
    );
    // Dates other than dummies were removed.
    dicom_json::set_strings(dataset, "00280303", "CS", &["REMOVED"]);
}

/// The patient's pseudonym in a data set: Patient's Name and ID share one, made from the
/// ID (the name when there is no ID).
fn patient_of(dataset: &Map<String, Value>, pseudonyms: &Pseudonyms) -> Option<String> {
    dicom_json::strings(dataset, PATIENT_ID)
        .into_iter()
        .chain(dicom_json::strings(dataset, PATIENT_NAME))
        .find(|s| !s.trim().is_empty())
        .map(|id| pseudonyms.patient(&id))
}

/// The pseudonym the slide's de-identified view gives its patient (from its first
/// instance; a slide's instances share one patient, which ingest checks).
pub fn patient_pseudonym(
    manifest: &SlideManifest,
    pseudonyms: &Pseudonyms,
) -> anyhow::Result<Option<String>> {
    let Some(first) = manifest.instances.first() else {
        return Ok(None);
    };
    let dataset: Map<String, Value> =
        serde_json::from_str(&first.metadata_json).with_context(|| {
            format!(
                "metadata of instance {} is not a DICOM JSON object",
                first.sop_instance_uid
            )
        })?;
    Ok(patient_of(&dataset, pseudonyms))
}

/// The profile over one data set or sequence item, recursively.
fn apply(dataset: &mut Map<String, Value>, pseudonyms: &Pseudonyms, patient: Option<&str>) {
    dataset.retain(|tag, _| !is_private(tag));
    let tags: Vec<String> = dataset.keys().cloned().collect();
    for tag in tags {
        let Some(element) = dataset.get_mut(&tag).and_then(Value::as_object_mut) else {
            continue;
        };
        let vr = element
            .get("vr")
            .and_then(Value::as_str)
            .unwrap_or("UN")
            .to_string();
        match treatment(&tag) {
            Some(Treatment::Remove) => {
                dataset.remove(&tag);
            }
            Some(Treatment::Empty) => {
                element.remove("Value");
                element.remove("InlineBinary");
                element.remove("BulkDataURI");
            }
            Some(Treatment::Patient) => match patient {
                Some(p) if vr == "PN" => {
                    element.insert("Value".into(), json!([{ "Alphabetic": p }]));
                }
                Some(p) => {
                    element.insert("Value".into(), json!([p]));
                }
                None => {
                    element.remove("Value");
                }
            },
            Some(Treatment::Uid) => map_strings(element, |s| pseudonyms.uid(s)),
            Some(Treatment::Dummy) => match vr.as_str() {
                "DA" => map_strings(element, |_| "19000101".into()),
                "TM" => map_strings(element, |_| "000000".into()),
                "DT" => map_strings(element, |_| "19000101000000".into()),
                "PN" => {
                    let names: Vec<Value> = element
                        .get("Value")
                        .and_then(Value::as_array)
                        .map(|values| {
                            values
                                .iter()
                                .filter_map(dicom_json::value_string)
                                .map(|n| json!({ "Alphabetic": pseudonyms.text(&n) }))
                                .collect()
                        })
                        .unwrap_or_default();
                    element.insert("Value".into(), Value::Array(names));
                }
                _ => map_strings(element, |s| pseudonyms.text(s)),
            },
            None if vr == "SQ" => {
                if let Some(items) = element.get_mut("Value").and_then(Value::as_array_mut) {
                    for item in items.iter_mut().filter_map(Value::as_object_mut) {
                        apply(item, pseudonyms, patient);
                    }
                }
            }
            None => {}
        }
    }
}

/// Whether an instance says its pixels show the specimen label or burned-in text
/// (Specimen Label in Image, Burned In Annotation).
pub fn shows_text(metadata_json: &str) -> bool {
    let Ok(dataset) = serde_json::from_str::<Map<String, Value>>(metadata_json) else {
        // Unreadable metadata: assume the worst.
        return true;
    };
    ["00480010", "00280301"].iter().any(|tag| {
        dicom_json::strings(&dataset, tag)
            .iter()
            .any(|v| v == "YES")
    })
}

/// Replaces each string value of an element.
fn map_strings(element: &mut Map<String, Value>, f: impl Fn(&str) -> String) {
    if let Some(values) = element.get_mut("Value").and_then(Value::as_array_mut) {
        for value in values.iter_mut() {
            if let Some(s) = value.as_str() {
                *value = Value::String(f(s));
            }
        }
    }
}

/// Private attributes (odd group numbers) are removed by the Basic Profile.
fn is_private(tag: &str) -> bool {
    u16::from_str_radix(tag.get(..4).unwrap_or("0000"), 16).is_ok_and(|group| group % 2 == 1)
}

#[cfg(test)]
mod tests;
