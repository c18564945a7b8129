//! `slidemesh annotate-lims FILE`: records what the trust's LIMS says of its cases
//! (diagnosis codes, grade, specimen type, consent codes, opt-out), for research queries.
//! The file is a JSON array of cases keyed by accession number; it is checked whole before
//! anything is stored, and a case given again replaces its earlier entry.

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
    /// "specimen": "core biopsy", "consent": ["GRU"], "opted_out": false}, ...]`
    pub file: PathBuf,
}

#[derive(Deserialize)]
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

pub fn run(data: DataDir, args: LimsArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let cases: Vec<Case> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a JSON array of cases", args.file.display()))?;
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
}
