//! `slidemesh annotate-lims FILE`: records what the trust's LIMS says of its cases
//! (diagnosis codes, grade, specimen type, consent codes, opt-out), for research queries.
//! The file is a JSON array of cases keyed by accession number, or a CSV export with a
//! header row (`accession,diagnoses,grade,specimen,consent,opted_out`; several codes in one
//! cell separated by `;`, opt-out as yes/no, true/false or 1/0); either is checked whole
//! before anything is stored, and a case given again replaces its earlier entry.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Deserialize;

use crate::context::NodeContext;
use crate::datadir::DataDir;
use crate::store::lims::LimsEntry;

#[derive(Debug, Args)]
pub struct LimsArgs {
    /// A JSON array: `[{"accession": "RR823H78398", "diagnoses": ["413448000"], "grade": 2,
    /// "specimen": "core biopsy", "consent": ["GRU"], "opted_out": false}, ...]`, or a CSV
    /// file (name ending .csv) with the header `accession,diagnoses,grade,specimen,consent,
    /// opted_out` and codes separated by `;`
    pub file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    accession: String,
    #[serde(default)]
    diagnoses: Vec<String>,
    grade: Option<i64>,
    specimen: Option<String>,
    #[serde(default)]
    consent: Vec<String>,
    #[serde(default)]
    opted_out: bool,
}

/// Most cases in one file.
const MAX_CASES: usize = 1_000_000;

fn checked(index: usize, case: Case) -> Result<(String, LimsEntry)> {
    let at = || format!("case {} ({:?})", index + 1, case.accession);
    let text_ok = |t: &str| !t.is_empty() && t.len() <= 64 && !t.chars().any(char::is_control);
    if !text_ok(case.accession.trim()) {
        bail!(
            "case {}: the accession number must be 1 to 64 characters",
            index + 1
        );
    }
    if let Some(bad) = case
        .diagnoses
        .iter()
        .find(|c| !slidemesh_protocol::referral::is_sctid(c))
    {
        bail!("{}: {bad:?} is not a SNOMED CT concept id", at());
    }
    if case.grade.is_some_and(|g| !(0..=10).contains(&g)) {
        bail!(
            "{}: grade {} is not 0 to 10",
            at(),
            case.grade.unwrap_or_default()
        );
    }
    if case.specimen.as_deref().is_some_and(|s| !text_ok(s))
        || case.consent.iter().any(|c| !text_ok(c))
    {
        bail!(
            "{}: specimen and consent codes are 1 to 64 characters",
            at()
        );
    }
    Ok((
        case.accession.trim().to_string(),
        LimsEntry {
            diagnoses: case.diagnoses,
            grade: case.grade,
            specimen: case.specimen,
            consent: case.consent,
            opted_out: case.opted_out,
        },
    ))
}

/// One row of the CSV form: the same fields, codes joined by `;`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CsvRow {
    accession: String,
    #[serde(default)]
    diagnoses: String,
    #[serde(default)]
    grade: String,
    #[serde(default)]
    specimen: String,
    #[serde(default)]
    consent: String,
    #[serde(default)]
    opted_out: String,
}

/// The cases of a CSV export, each row read as the JSON form's case.
fn csv_cases(text: &str) -> Result<Vec<Case>> {
    let codes = |cell: &str| -> Vec<String> {
        cell.split(';')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut cases = Vec::new();
    for (i, row) in reader.deserialize::<CsvRow>().enumerate() {
        let line = i + 2;
        let row = row.with_context(|| format!("row {line} (line {line} of the file)"))?;
        let grade = match row.grade.as_str() {
            "" => None,
            g => Some(
                g.parse()
                    .with_context(|| format!("row {line}: grade {g:?} is not a whole number"))?,
            ),
        };
        let opted_out = match row.opted_out.to_ascii_lowercase().as_str() {
            "" | "no" | "false" | "0" => false,
            "yes" | "true" | "1" => true,
            other => bail!("row {line}: opted_out {other:?} is not yes or no"),
        };
        cases.push(Case {
            accession: row.accession,
            diagnoses: codes(&row.diagnoses),
            grade,
            specimen: Some(row.specimen).filter(|s| !s.is_empty()),
            consent: codes(&row.consent),
            opted_out,
        });
        if cases.len() > MAX_CASES {
            bail!("more than {MAX_CASES} cases in one file");
        }
    }
    Ok(cases)
}

pub fn run(data: DataDir, args: LimsArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let is_csv = args
        .file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let cases: Vec<Case> = if is_csv {
        csv_cases(&text)
            .with_context(|| format!("{} is not a LIMS CSV export", args.file.display()))?
    } else {
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JSON array of cases", args.file.display()))?
    };
    if cases.len() > MAX_CASES {
        bail!("{} cases; at most {MAX_CASES} per file", cases.len());
    }
    let entries = cases
        .into_iter()
        .enumerate()
        .map(|(i, c)| checked(i, c))
        .collect::<Result<Vec<_>>>()?;
    let node = NodeContext::open(data)?;
    node.store.put_lims(&entries)?;
    println!(
        "recorded {} case(s) from the LIMS; research queries count them from now on",
        entries.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(json: serde_json::Value) -> Case {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn cases_are_checked_and_say_which_one_is_wrong() {
        let ok = checked(
            0,
            case(
                serde_json::json!({"accession": " RR8-1 ", "diagnoses": ["413448000"], "grade": 2}),
            ),
        )
        .unwrap();
        assert_eq!(ok.0, "RR8-1");
        assert_eq!(ok.1.grade, Some(2));
        for (json, says) in [
            (
                serde_json::json!({"accession": ""}),
                "case 3: the accession",
            ),
            (
                serde_json::json!({"accession": "A", "diagnoses": ["413448001"]}),
                "not a SNOMED CT",
            ),
            (
                serde_json::json!({"accession": "A", "grade": 11}),
                "grade 11",
            ),
            (
                serde_json::json!({"accession": "A", "consent": [""]}),
                "consent codes",
            ),
        ] {
            let e = checked(2, case(json)).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
        assert!(
            serde_json::from_value::<Case>(serde_json::json!({"accession": "A", "stage": 2}))
                .is_err()
        );
    }

    #[test]
    fn the_csv_form_reads_as_the_json_form() {
        let cases = csv_cases(
            "accession,diagnoses,grade,specimen,consent,opted_out\n\
             RR8-1, 413448000 ; 399935008 ,2,core biopsy,GRU;IRB,no\n\
             RR8-2,,,,,YES\n\
             \"RR8,3\",399935008,,\"excision, wide\",HMB,0\n",
        )
        .unwrap();
        let entries: Vec<(String, LimsEntry)> = cases
            .into_iter()
            .enumerate()
            .map(|(i, c)| checked(i, c).unwrap())
            .collect();
        assert_eq!(entries[0].0, "RR8-1");
        assert_eq!(entries[0].1.diagnoses, ["413448000", "399935008"]);
        assert_eq!(entries[0].1.grade, Some(2));
        assert_eq!(entries[0].1.consent, ["GRU", "IRB"]);
        assert!(!entries[0].1.opted_out);
        assert_eq!(
            entries[1].1,
            LimsEntry {
                opted_out: true,
                ..Default::default()
            }
        );
        assert_eq!(entries[2].0, "RR8,3");
        assert_eq!(entries[2].1.specimen.as_deref(), Some("excision, wide"));
        for (text, says) in [
            ("accession,grade\nA,two\n", "row 2: grade"),
            ("accession,opted_out\nA,maybe\n", "opted_out"),
            ("accession,stage\nA,2\n", "row 2"),
            ("diagnoses\n413448000\n", "row 2"),
        ] {
            let e = format!("{:#}", csv_cases(text).unwrap_err());
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }
}
