//! Whose slide it is: the patient and study attributes every instance of a series must
//! share, and the check that an instance arriving for a stored series does not change them.
//!
//! The attributes are PatientID, PatientName, PatientBirthDate, PatientSex,
//! AccessionNumber and StudyInstanceUID, read from an instance's DICOM JSON (its stored
//! metadata) without building the rest of the document. An instance whose values differ
//! from those already stored for its series (or, for a new series, from the other
//! instances arriving with it) is refused: a received file could otherwise re-label a
//! patient's slide. Errors name the file and the attribute, never the stored value, so a
//! sender cannot learn a stored patient's identity by guessing.

use serde::Deserialize;
use serde_json::Value;

use crate::store::instance::InstanceRecord;

/// One attribute in the DICOM JSON model; only its value is kept.
#[derive(Debug, Default, Deserialize, PartialEq)]
struct Element {
    #[serde(rename = "Value", default)]
    value: Vec<Value>,
}

/// The identifying attributes of one instance (absent and empty are the same).
#[derive(Debug, Default, Deserialize, PartialEq)]
pub struct Identity {
    #[serde(rename = "00100020", default)]
    patient_id: Element,
    #[serde(rename = "00100010", default)]
    patient_name: Element,
    #[serde(rename = "00100030", default)]
    patient_birth_date: Element,
    #[serde(rename = "00100040", default)]
    patient_sex: Element,
    #[serde(rename = "00080050", default)]
    accession_number: Element,
    #[serde(rename = "0020000D", default)]
    study_uid: Element,
}

impl Identity {
    /// The identity in an instance's DICOM JSON (other attributes are skipped unparsed).
    pub fn of(metadata_json: &str) -> Result<Self, String> {
        serde_json::from_str(metadata_json)
            .map_err(|e| format!("cannot read the patient identity from the metadata: {e}"))
    }

    /// The first attribute (by keyword) in which `other` differs, if any.
    pub fn first_difference(&self, other: &Identity) -> Option<&'static str> {
        [
            ("PatientID", &self.patient_id, &other.patient_id),
            ("PatientName", &self.patient_name, &other.patient_name),
            (
                "PatientBirthDate",
                &self.patient_birth_date,
                &other.patient_birth_date,
            ),
            ("PatientSex", &self.patient_sex, &other.patient_sex),
            (
                "AccessionNumber",
                &self.accession_number,
                &other.accession_number,
            ),
            ("StudyInstanceUID", &self.study_uid, &other.study_uid),
        ]
        .into_iter()
        .find(|(_, a, b)| a != b)
        .map(|(name, _, _)| name)
    }
}

/// Checks that every arriving instance has the identity of the series' stored instances,
/// or (for a new series) of the first arriving one. The error names the file and the
/// attribute that differs.
pub fn check_series(
    series_uid: &str,
    stored: &[InstanceRecord],
    arriving: &[&InstanceRecord],
) -> Result<(), String> {
    // Stored instances were checked against each other when they arrived; the one with
    // the least metadata is the cheapest to read.
    let (reference, against) = match stored.iter().min_by_key(|i| i.metadata_json.len()) {
        Some(s) => (
            Identity::of(&s.metadata_json)?,
            "the instances already stored".to_string(),
        ),
        None => match arriving.first() {
            Some(first) => (
                Identity::of(&first.metadata_json)
                    .map_err(|e| format!("{}: {e}", first.path.display()))?,
                format!("{} (same series, same batch)", first.path.display()),
            ),
            None => return Ok(()),
        },
    };
    for instance in arriving {
        let identity = Identity::of(&instance.metadata_json)
            .map_err(|e| format!("{}: {e}", instance.path.display()))?;
        if let Some(attribute) = reference.first_difference(&identity) {
            return Err(format!(
                "{}: {attribute} differs from {against} for series {series_uid}; an instance cannot change a slide's patient identity (refused)",
                instance.path.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORED: &str = r#"{"00080016": {"vr": "UI", "Value": ["1.2"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "DOE^JANE"}]},
        "00100020": {"vr": "LO", "Value": ["9434765919"]},
        "00100030": {"vr": "DA", "Value": ["19700101"]},
        "00100040": {"vr": "CS", "Value": ["F"]},
        "00080050": {"vr": "SH", "Value": ["ACC1"]},
        "0020000D": {"vr": "UI", "Value": ["2.25.1"]},
        "52009230": {"vr": "SQ", "Value": [{"00209113": {"vr": "SQ", "Value": []}}]}}"#;

    #[test]
    fn same_identity_passes_and_each_attribute_is_compared() {
        let stored = Identity::of(STORED).unwrap();
        assert_eq!(
            stored.first_difference(&Identity::of(STORED).unwrap()),
            None
        );
        for (keyword, from, to) in [
            ("PatientID", "9434765919", "1111111111"),
            ("PatientName", "DOE^JANE", "ROE^RICHARD"),
            ("PatientBirthDate", "19700101", "19800101"),
            ("PatientSex", r#"["F"]"#, r#"["M"]"#),
            ("AccessionNumber", "ACC1", "ACC2"),
            ("StudyInstanceUID", "2.25.1", "2.25.9"),
        ] {
            let changed = Identity::of(&STORED.replace(from, to)).unwrap();
            assert_eq!(stored.first_difference(&changed), Some(keyword));
        }
        // An attribute left out differs from one with a value, not from an empty one.
        let without_sex = STORED.replace(r#""00100040": {"vr": "CS", "Value": ["F"]},"#, "");
        assert_eq!(
            stored.first_difference(&Identity::of(&without_sex).unwrap()),
            Some("PatientSex")
        );
        let empty = Identity::of(r#"{"00100040": {"vr": "CS"}}"#).unwrap();
        assert_eq!(empty.first_difference(&Identity::of("{}").unwrap()), None);
    }
}
