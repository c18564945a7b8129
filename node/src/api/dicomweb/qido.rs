//! QIDO-RS (PS3.18 10.6): searching studies, series and instances.
//!
//! A query is a list of attribute filters (by keyword or tag) plus `includefield`, `limit`,
//! `offset` and `fuzzymatching`. Each candidate is a full record (the representative
//! instance's data set plus computed attributes such as the number of related instances);
//! filters match against that record, and the answer carries the level's default attributes,
//! the matched ones and those asked for with `includefield`.

use std::collections::BTreeSet;
use std::sync::Arc;

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_dictionary_std::StandardDataDictionary;
use serde_json::{Map, Value};

use super::super::ApiError;
use super::catalogue::{InstanceEntry, SeriesEntry};
use super::urls::Urls;
use crate::dicom_json::{self as json, *};

/// Attributes a study result carries by default.
const STUDY_DEFAULTS: &[&str] = &[
    STUDY_DATE,
    STUDY_TIME,
    ACCESSION_NUMBER,
    INSTANCE_AVAILABILITY,
    MODALITIES_IN_STUDY,
    REFERRING_PHYSICIAN_NAME,
    STUDY_DESCRIPTION,
    RETRIEVE_URL,
    PATIENT_NAME,
    PATIENT_ID,
    PATIENT_BIRTH_DATE,
    PATIENT_SEX,
    STUDY_INSTANCE_UID,
    STUDY_ID,
    NUMBER_OF_STUDY_RELATED_SERIES,
    NUMBER_OF_STUDY_RELATED_INSTANCES,
];

/// Attributes a series result carries by default.
const SERIES_DEFAULTS: &[&str] = &[
    MODALITY,
    SERIES_DESCRIPTION,
    RETRIEVE_URL,
    STUDY_INSTANCE_UID,
    SERIES_INSTANCE_UID,
    SERIES_NUMBER,
    NUMBER_OF_SERIES_RELATED_INSTANCES,
    INSTANCE_AVAILABILITY,
];

/// Attributes an instance result carries by default.
const INSTANCE_DEFAULTS: &[&str] = &[
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    INSTANCE_AVAILABILITY,
    RETRIEVE_URL,
    STUDY_INSTANCE_UID,
    SERIES_INSTANCE_UID,
    INSTANCE_NUMBER,
    ROWS,
    COLUMNS,
    NUMBER_OF_FRAMES,
    IMAGE_TYPE,
    AVAILABLE_TRANSFER_SYNTAX_UID,
];

/// A candidate result and the attributes its level answers with by default.
type Record = (Map<String, Value>, &'static [&'static str]);

/// Which kind of resource a query returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Study,
    Series,
    Instance,
}

/// A parsed query.
#[derive(Debug, Default)]
pub struct Query {
    filters: Vec<Filter>,
    include_all: bool,
    include: BTreeSet<String>,
    limit: Option<usize>,
    offset: usize,
    fuzzy: bool,
}

#[derive(Debug)]
struct Filter {
    tag: String,
    /// A repeated key is an OR of its values.
    patterns: Vec<String>,
}

impl Query {
    /// Parses the query string's pairs. Unknown attribute names and malformed numbers are
    /// refused with a message naming them.
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, ApiError> {
        let mut query = Query::default();
        for (key, value) in pairs {
            match key.as_str() {
                "includefield" => {
                    for field in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                        if field == "all" {
                            query.include_all = true;
                        } else {
                            query.include.insert(tag_of(field)?);
                        }
                    }
                }
                "limit" => query.limit = Some(number("limit", value)?),
                "offset" => query.offset = number("offset", value)?,
                "fuzzymatching" => query.fuzzy = value == "true",
                // Accepted and ignored: the answer is always JSON.
                "format" | "charset" => {}
                key => {
                    let tag = tag_of(key)?;
                    match query.filters.iter_mut().find(|f| f.tag == tag) {
                        Some(filter) => filter.patterns.push(value.clone()),
                        None => query.filters.push(Filter {
                            tag,
                            patterns: vec![value.clone()],
                        }),
                    }
                }
            }
        }
        Ok(query)
    }

    /// Whether a record passes every filter.
    fn matches(&self, record: &Map<String, Value>) -> bool {
        self.filters.iter().all(|f| {
            let vr = dictionary_vr(&f.tag)
                .or_else(|| json::vr(record, &f.tag).map(str::to_string))
                .unwrap_or_default();
            let values = json::strings(record, &f.tag);
            f.patterns
                .iter()
                .any(|p| matches(&values, &vr, p, self.fuzzy))
        })
    }

    /// The record cut down to what the answer carries.
    fn project(&self, record: Map<String, Value>, defaults: &[&str]) -> Map<String, Value> {
        if self.include_all {
            return record;
        }
        record
            .into_iter()
            .filter(|(tag, _)| {
                defaults.contains(&tag.as_str())
                    || self.include.contains(tag)
                    || self.filters.iter().any(|f| &f.tag == tag)
            })
            .collect()
    }

    /// Runs the query over the catalogue at `level`, optionally within one study and series.
    pub fn run(
        &self,
        catalogue: &[Arc<SeriesEntry>],
        level: Level,
        study: Option<&str>,
        series: Option<&str>,
        urls: &Urls,
    ) -> Vec<Value> {
        let in_scope = catalogue.iter().filter(|s| {
            study.is_none_or(|u| s.study_uid == u) && series.is_none_or(|u| s.series_uid == u)
        });
        let records: Box<dyn Iterator<Item = Record>> = match level {
            Level::Study => {
                let mut studies: Vec<&str> = in_scope.map(|s| s.study_uid.as_str()).collect();
                studies.dedup();
                Box::new(studies.into_iter().map(|uid| {
                    let members: Vec<&Arc<SeriesEntry>> =
                        catalogue.iter().filter(|s| s.study_uid == uid).collect();
                    (study_record(&members, urls), STUDY_DEFAULTS)
                }))
            }
            Level::Series => Box::new(in_scope.map(|s| {
                let siblings = catalogue.iter().filter(|o| o.study_uid == s.study_uid);
                let mut record = study_record(&siblings.collect::<Vec<_>>(), urls);
                record.extend(series_record(s, urls));
                (record, SERIES_DEFAULTS)
            })),
            Level::Instance => Box::new(in_scope.flat_map(|s| {
                s.instances
                    .iter()
                    .map(move |i| (instance_record(s, i, urls), INSTANCE_DEFAULTS))
            })),
        };
        records
            .filter(|(record, _)| self.matches(record))
            .skip(self.offset)
            .take(self.limit.unwrap_or(usize::MAX))
            .map(|(record, defaults)| Value::Object(self.project(record, defaults)))
            .collect()
    }
}

fn number(what: &str, raw: &str) -> Result<usize, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::bad_request(format!("{what} must be a whole number, not {raw:?}")))
}

/// An attribute named by keyword (`PatientID`) or tag (`00100020`), as an upper-case tag.
fn tag_of(name: &str) -> Result<String, ApiError> {
    if name.len() == 8 && name.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(name.to_ascii_uppercase());
    }
    if name.contains('.') {
        return Err(ApiError::bad_request(format!(
            "matching inside sequences ({name:?}) is not supported"
        )));
    }
    StandardDataDictionary
        .by_name(name)
        .map(|e| {
            let tag = e.tag();
            format!("{:04X}{:04X}", tag.group(), tag.element())
        })
        .ok_or_else(|| ApiError::bad_request(format!("unknown attribute {name:?} in the query")))
}

fn dictionary_vr(tag: &str) -> Option<String> {
    let group = u16::from_str_radix(tag.get(..4)?, 16).ok()?;
    let element = u16::from_str_radix(tag.get(4..)?, 16).ok()?;
    match StandardDataDictionary
        .by_tag(dicom_core::Tag(group, element))?
        .vr()
    {
        VirtualVr::Exact(vr) => Some(vr.to_string().to_string()),
        _ => None,
    }
}

/// PS3.4 C.2.2.2 matching of one attribute's values against a query value.
fn matches(values: &[String], vr: &str, pattern: &str, fuzzy: bool) -> bool {
    // Universal matching: an empty query value matches everything.
    if pattern.is_empty() || pattern == "*" {
        return true;
    }
    let alternatives: Vec<&str> = match vr {
        "UI" => pattern.split([',', '\\']).map(str::trim).collect(),
        _ => pattern.split('\\').collect(),
    };
    alternatives.iter().any(|alt| {
        values.iter().any(|value| match vr {
            "UI" => value == alt,
            "DA" | "TM" | "DT" if alt.contains('-') => in_range(value, alt),
            "PN" if fuzzy => name_matches(value, alt),
            _ => wildcard(value.as_bytes(), alt.as_bytes(), false),
        })
    })
}

/// A `from-to` range; either end may be open. Dates and times compare as text, which
/// orders them correctly for DICOM's fixed-width forms.
fn in_range(value: &str, range: &str) -> bool {
    let (from, to) = range.split_once('-').unwrap_or((range, range));
    let value = value.trim();
    (from.is_empty() || value >= from.trim())
        && (to.is_empty()
            || value
                .get(..to.trim().len().min(value.len()))
                .unwrap_or(value)
                <= to.trim())
}

/// Fuzzy person-name matching: case-insensitive, and any name component may match
/// (a query `smith` finds `Smith^John`).
fn name_matches(value: &str, pattern: &str) -> bool {
    let pattern = pattern.as_bytes();
    wildcard(value.as_bytes(), pattern, true)
        || value.split(['^', ' ']).any(|part| {
            wildcard(part.as_bytes(), pattern, true) || {
                let mut with_star = pattern.to_vec();
                with_star.push(b'*');
                wildcard(part.as_bytes(), &with_star, true)
            }
        })
}

/// `*` matches any run, `?` one character.
fn wildcard(value: &[u8], pattern: &[u8], fold_case: bool) -> bool {
    let eq = |a: u8, b: u8| {
        if fold_case {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (mut v, mut p) = (0, 0);
    let mut resume: Option<(usize, usize)> = None;
    while v < value.len() {
        if p < pattern.len() && (pattern[p] == b'?' || eq(pattern[p], value[v])) {
            v += 1;
            p += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            resume = Some((p, v));
            p += 1;
        } else if let Some((star, at)) = resume {
            p = star + 1;
            v = at + 1;
            resume = Some((star, at + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Study-level record: the first series' representative instance's attributes plus the
/// study's computed ones.
fn study_record(members: &[&Arc<SeriesEntry>], urls: &Urls) -> Map<String, Value> {
    let first = members[0];
    let mut record = first.representative().metadata.clone();
    record.remove(PIXEL_DATA);
    let modalities: BTreeSet<String> = members
        .iter()
        .flat_map(|s| json::strings(&s.representative().metadata, MODALITY))
        .collect();
    let modalities: Vec<&str> = modalities.iter().map(String::as_str).collect();
    set_strings(&mut record, MODALITIES_IN_STUDY, "CS", &modalities);
    set_number(
        &mut record,
        NUMBER_OF_STUDY_RELATED_SERIES,
        "IS",
        members.len() as u64,
    );
    let instances: usize = members.iter().map(|s| s.instances.len()).sum();
    set_number(
        &mut record,
        NUMBER_OF_STUDY_RELATED_INSTANCES,
        "IS",
        instances as u64,
    );
    set_strings(&mut record, INSTANCE_AVAILABILITY, "CS", &["ONLINE"]);
    set_strings(
        &mut record,
        RETRIEVE_URL,
        "UR",
        &[&urls.study(&first.study_uid)],
    );
    record
}

fn series_record(series: &SeriesEntry, urls: &Urls) -> Map<String, Value> {
    let mut record = series.representative().metadata.clone();
    set_number(
        &mut record,
        NUMBER_OF_SERIES_RELATED_INSTANCES,
        "IS",
        series.instances.len() as u64,
    );
    set_strings(&mut record, INSTANCE_AVAILABILITY, "CS", &["ONLINE"]);
    set_strings(
        &mut record,
        RETRIEVE_URL,
        "UR",
        &[&urls.series(&series.study_uid, &series.series_uid)],
    );
    record
}

fn instance_record(
    series: &SeriesEntry,
    instance: &InstanceEntry,
    urls: &Urls,
) -> Map<String, Value> {
    let mut record = instance.metadata.clone();
    set_strings(
        &mut record,
        AVAILABLE_TRANSFER_SYNTAX_UID,
        "UI",
        &[&instance.transfer_syntax_uid],
    );
    set_strings(&mut record, INSTANCE_AVAILABILITY, "CS", &["ONLINE"]);
    set_strings(
        &mut record,
        RETRIEVE_URL,
        "UR",
        &[&urls.instance(
            &series.study_uid,
            &series.series_uid,
            &instance.sop_instance_uid,
        )],
    );
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn wildcards_and_exact_values() {
        assert!(matches(&s(&["CT1234"]), "SH", "CT*", false));
        assert!(matches(&s(&["CT1234"]), "SH", "CT?234", false));
        assert!(!matches(&s(&["CT1234"]), "SH", "ct*", false));
        assert!(matches(&s(&["ABC"]), "LO", "ABC", false));
        assert!(!matches(&s(&["ABCD"]), "LO", "ABC", false));
        assert!(matches(&s(&["a*b"]), "LO", "*", false));
        assert!(!matches(&[], "LO", "x", false));
        assert!(matches(&[], "LO", "", false));
    }

    #[test]
    fn uid_lists_and_date_ranges() {
        assert!(matches(&s(&["1.2.3"]), "UI", "9.9,1.2.3", false));
        assert!(matches(&s(&["1.2.3"]), "UI", "9.9\\1.2.3", false));
        assert!(!matches(&s(&["1.2.3"]), "UI", "1.2", false));
        assert!(matches(&s(&["20240315"]), "DA", "20240101-20241231", false));
        assert!(matches(&s(&["20240315"]), "DA", "20240315-", false));
        assert!(matches(&s(&["20240315"]), "DA", "-20240315", false));
        assert!(!matches(&s(&["20240315"]), "DA", "20240316-", false));
        assert!(matches(&s(&["101500.123"]), "TM", "1000-1100", false));
    }

    #[test]
    fn fuzzy_person_names() {
        let name = s(&["Smith^John"]);
        assert!(matches(&name, "PN", "Smith^John", false));
        assert!(!matches(&name, "PN", "smith", false));
        assert!(matches(&name, "PN", "smith", true));
        assert!(matches(&name, "PN", "jo", true));
        assert!(!matches(&name, "PN", "jones", true));
    }

    #[test]
    fn attribute_names_resolve_to_tags() {
        assert_eq!(tag_of("PatientID").unwrap(), "00100020");
        assert_eq!(tag_of("0020000d").unwrap(), "0020000D");
        assert!(tag_of("PatientNmae").is_err());
        let q = Query::parse(&[
            ("limit".into(), "2".into()),
            ("includefield".into(), "all".into()),
        ])
        .unwrap();
        assert_eq!(q.limit, Some(2));
        assert!(q.include_all);
        assert!(Query::parse(&[("offset".into(), "-1".into())]).is_err());
    }
}
