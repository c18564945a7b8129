//! Research queries at this node: what each of its own slides says, as the fields a
//! [`slidemesh_protocol::query::Query`] counts over ([`SlideFacts`]), taken from the slide's
//! summary and its full-resolution image's DICOM attributes.
//!
//! The LIMS's word on the case (diagnosis codes, grade, specimen type, opt-out; table
//! `lims_v1`, written by `slidemesh annotate-lims`) is joined on the slide's accession
//! number; a patient who opted out is never counted.
//!
//! Status: the facts are read from each slide's stored manifest when asked (a full scan);
//! the redb index filled at ingest, the fan-out to members and disclosure control are not
//! built yet.

use serde_json::Value as Json;
use slidemesh_protocol::query::{Field, Record, Value};
use slidemesh_protocol::{SlideManifest, TrustCode};

use std::collections::HashMap;

use crate::dicom_json;
use crate::store::SlideSummary;
use crate::store::lims::LimsEntry;

/// One slide as a research query sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlideFacts {
    pub trust: Option<TrustCode>,
    pub stain: Option<String>,
    pub anatomic_site: Option<String>,
    pub year: Option<i64>,
    /// The decade of age at the study, as its first year (40 for 40 to 49).
    pub age_band: Option<i64>,
    pub sex: Option<String>,
    /// Manufacturer and model.
    pub scanner: Option<String>,
    /// From the LIMS entry of the slide's accession number, when there is one.
    pub diagnoses: Vec<String>,
    pub grade: Option<i64>,
    pub specimen: Option<String>,
    /// Never counted for research.
    pub opted_out: bool,
}

impl Record for SlideFacts {
    fn values(&self, field: Field) -> Vec<Value> {
        let text = |v: &Option<String>| v.iter().map(|s| Value::Text(s.clone())).collect();
        match field {
            Field::Trust => self
                .trust
                .iter()
                .map(|t| Value::Text(t.to_string()))
                .collect(),
            Field::Stain => text(&self.stain),
            Field::AnatomicSite => text(&self.anatomic_site),
            Field::Year => self.year.iter().map(|y| Value::Number(*y)).collect(),
            Field::AgeBand => self.age_band.iter().map(|a| Value::Number(*a)).collect(),
            Field::Sex => text(&self.sex),
            Field::Scanner => text(&self.scanner),
            Field::Specimen => text(&self.specimen),
            Field::Diagnosis => self
                .diagnoses
                .iter()
                .map(|d| Value::Text(d.clone()))
                .collect(),
            Field::Grade => self.grade.iter().map(|g| Value::Number(*g)).collect(),
        }
    }
}

/// The facts of a slide from its summary, its manifest and the LIMS entries by accession.
pub fn facts(
    summary: &SlideSummary,
    manifest: &SlideManifest,
    lims: &HashMap<String, LimsEntry>,
) -> SlideFacts {
    let base: Json = manifest
        .levels
        .first()
        .and_then(|l| l.instance_uids.first())
        .and_then(|uid| {
            manifest
                .instances
                .iter()
                .find(|i| &i.sop_instance_uid == uid)
        })
        .and_then(|i| serde_json::from_str(&i.metadata_json).ok())
        .unwrap_or(Json::Null);
    let first = |tag: &str| {
        base.as_object()
            .and_then(|o| dicom_json::strings(o, tag).into_iter().next())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let study_date = first(dicom_json::STUDY_DATE);
    let year = study_date
        .as_deref()
        .and_then(|d| d.get(..4))
        .and_then(|y| y.parse().ok());
    let age_band = match (study_date.as_deref(), first(dicom_json::PATIENT_BIRTH_DATE)) {
        (Some(study), Some(birth)) => age_years(&birth, study).map(|a| a / 10 * 10),
        _ => None,
    };
    let scanner = match (first("00080070"), first("00081090")) {
        (Some(make), Some(model)) => Some(format!("{make} {model}")),
        (make, model) => make.or(model),
    };
    let case = first(dicom_json::ACCESSION_NUMBER).and_then(|a| lims.get(&a));
    SlideFacts {
        diagnoses: case.map(|c| c.diagnoses.clone()).unwrap_or_default(),
        grade: case.and_then(|c| c.grade),
        specimen: case.and_then(|c| c.specimen.clone()),
        opted_out: case.is_some_and(|c| c.opted_out),
        trust: Some(summary.owner.clone()),
        stain: summary.stain.clone(),
        anatomic_site: summary.anatomic_site.clone(),
        year,
        age_band,
        sex: first(dicom_json::PATIENT_SEX),
        scanner,
    }
}

/// Whole years between two DICOM dates (YYYYMMDD).
fn age_years(birth: &str, on: &str) -> Option<i64> {
    let parse = |d: &str| -> Option<(i64, i64)> {
        let y = d.get(..4)?.parse().ok()?;
        let md = d.get(4..8)?.parse().ok()?;
        Some((y, md))
    };
    let ((by, bmd), (oy, omd)) = (parse(birth)?, parse(on)?);
    let age = oy - by - i64::from(omd < bmd);
    (0..=130).contains(&age).then_some(age)
}

/// The SNOMED CT hierarchy this node knows: for now only a code itself (no LIMS codes are
/// held yet, so `under` matches equal codes only).
pub fn is_a(code: &str, ancestor: &str) -> bool {
    code == ancestor
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_count_whole_years_at_the_study() {
        assert_eq!(age_years("19870214", "20230319"), Some(36));
        assert_eq!(age_years("19870320", "20230319"), Some(35));
        assert_eq!(age_years("1987", "20230319"), None);
        assert_eq!(age_years("20250101", "20230319"), None);
    }
}
