//! Each own slide's facts as research queries see them: taken at ingest from its summary
//! and its full-resolution image's DICOM attributes ([`facts`], indexed in
//! `research_facts_v1`), joined when a query runs with the LIMS's word on the case by
//! accession number ([`Case`]).

use serde_json::Value as Json;
use slidemesh_protocol::SlideManifest;
use slidemesh_protocol::query::{Field, Record, Value};

use crate::dicom_json;
use crate::store::SlideSummary;
use crate::store::lims::LimsEntry;
pub use crate::store::research::SlideFacts;

/// A slide's facts with its case's LIMS entry, if the LIMS lists it: one record a query
/// counts.
pub struct Case<'a> {
    pub facts: &'a SlideFacts,
    pub lims: Option<&'a LimsEntry>,
}

impl Record for Case<'_> {
    fn values(&self, field: Field) -> std::borrow::Cow<'_, [Value]> {
        self.owned_values(field).into()
    }
}

impl Case<'_> {
    fn owned_values(&self, field: Field) -> Vec<Value> {
        let text = |v: Option<&String>| v.iter().map(|s| Value::Text((*s).clone())).collect();
        let facts = self.facts;
        match field {
            Field::Trust => facts
                .trust
                .iter()
                .map(|t| Value::Text(t.to_string()))
                .collect(),
            Field::Stain => text(facts.stain.as_ref()),
            Field::AnatomicSite => text(facts.anatomic_site.as_ref()),
            Field::Year => facts.year.iter().map(|y| Value::Number(*y)).collect(),
            Field::AgeBand => facts.age_band.iter().map(|a| Value::Number(*a)).collect(),
            Field::Sex => text(facts.sex.as_ref()),
            Field::Scanner => text(facts.scanner.as_ref()),
            Field::Specimen => text(self.lims.and_then(|c| c.specimen.as_ref())),
            Field::Diagnosis => self
                .lims
                .iter()
                .flat_map(|c| &c.diagnoses)
                .map(|d| Value::Text(d.clone()))
                .collect(),
            Field::Grade => self
                .lims
                .and_then(|c| c.grade)
                .map(Value::Number)
                .into_iter()
                .collect(),
        }
    }
}

/// The facts of an own slide from its summary and manifest (indexed at ingest).
pub fn facts(summary: &SlideSummary, manifest: &SlideManifest) -> SlideFacts {
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
    SlideFacts {
        accession: first(dicom_json::ACCESSION_NUMBER),
        series_uid: summary.series_uid.clone(),
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

/// Indexes every own slide's facts when the store has no index yet (a data directory from
/// before it), in one transaction. Returns how many slides were indexed.
pub fn index_if_missing(store: &crate::store::Store) -> anyhow::Result<Option<usize>> {
    use anyhow::Context as _;
    if store.research_index_exists()? {
        return Ok(None);
    }
    let mut rows = Vec::new();
    for (id, summary) in store.summaries()? {
        if summary.origin != crate::store::Origin::Local {
            continue;
        }
        let record = store
            .slide(&id)?
            .with_context(|| format!("slide {id} listed but not stored"))?;
        let manifest = record
            .signed
            .verify()
            .with_context(|| format!("stored manifest of {id} does not verify"))?;
        rows.push((id, facts(&summary, &manifest)));
    }
    store.create_research_index(&rows)?;
    Ok(Some(rows.len()))
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
