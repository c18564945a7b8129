//! Research queries at one real node (issue 18, first steps): `slidemesh query` counts the
//! node's own slides, grouped, and the counts agree with what pydicom reads from the same
//! generated files; the LIMS's diagnoses and grades (`slidemesh annotate-lims`) join on
//! accession number (from JSON and from a CSV export), a malformed LIMS file is refused
//! whole, an opted-out patient is never counted, `under` follows the trust's SNOMED CT
//! relationship file; a malformed query is refused with a caret under the offending token.

use std::collections::BTreeMap;

use serde_json::Value;
use slidemesh_e2e::{Node, SMALL, consent_sidecars, run_ok, run_refused, synth};

/// Prints "year sex" of a DICOM file (argv[1]) as pydicom reads it.
const TRUTH: &str = r#"
import sys, pydicom
d = pydicom.dcmread(sys.argv[1], stop_before_pixels=True)
print(str(d.StudyDate)[:4], d.PatientSex)
"#;

#[test]
fn counts_by_year_and_sex_match_the_files_and_bad_queries_say_where() {
    let dir = tempfile::tempdir().unwrap();
    let slides = dir.path().join("slides");
    let generated = synth(
        &slides,
        &[SMALL, &["--count", "4", "--seed", "18"]].concat(),
    );
    // The patients consented to research (the LIMS's sidecar, read at ingest); without it
    // the default policy lets no slide be counted.
    consent_sidecars(&slides, r#"{"codes": ["GRU"]}"#);
    let node = Node::init("RR8");
    // Exact counts: this test checks counting, not disclosure control.
    node.edit_config("min_cell = 10", "min_cell = 0");
    node.edit_config("noise = 2", "noise = 0");
    let (code, report) = node.ingest(&[&slides]);
    assert_eq!(code, 0, "{report}");

    let mut truth: BTreeMap<(String, String), u64> = BTreeMap::new();
    for slide in &generated {
        let level0 = slide["instances"][0]["path"].as_str().unwrap();
        let out =
            run_ok(std::process::Command::new(slidemesh_e2e::python()).args(["-c", TRUTH, level0]));
        let mut parts = out.split_whitespace().map(str::to_string);
        let key = (parts.next().unwrap(), parts.next().unwrap());
        *truth.entry(key).or_default() += 1;
    }

    let out = run_ok(node.cmd().args(["query", "count by year, sex", "--json"]));
    let mut counted: BTreeMap<(String, String), u64> = BTreeMap::new();
    for line in out.lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        let year = row["groups"]["year"].as_i64().unwrap().to_string();
        let sex = row["groups"]["sex"].as_str().unwrap().to_string();
        counted.insert((year, sex), row["count"].as_u64().unwrap());
    }
    assert_eq!(counted, truth);

    // A filter that matches nothing counts 0.
    let none = run_ok(
        node.cmd()
            .args(["query", "count where year < 1900", "--json"]),
    );
    let row: Value = serde_json::from_str(none.trim()).unwrap();
    assert_eq!(row["count"].as_u64(), Some(0), "{none}");
    // The LIMS's word, joined on accession number: two invasive carcinomas (grades 2 and
    // 3), one DCIS whose patient opted out of research, one case the LIMS does not list.
    let accession = |i: usize| {
        generated[i]["accession_number"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let cases = serde_json::json!([
        {"accession": accession(0), "diagnoses": ["413448000"], "grade": 2, "specimen": "core biopsy"},
        {"accession": accession(1), "diagnoses": ["413448000"], "grade": 3, "specimen": "excision"},
        {"accession": accession(2), "diagnoses": ["399935008"], "opted_out": true},
    ]);
    let bad = serde_json::json!([
        {"accession": accession(3), "diagnoses": ["413448001"]},
    ]);
    let bad_file = dir.path().join("bad-lims.json");
    std::fs::write(&bad_file, bad.to_string()).unwrap();
    let said = run_refused(node.cmd().arg("annotate-lims").arg(&bad_file));
    assert!(said.contains("case 1"), "{said}");
    let file = dir.path().join("lims.json");
    std::fs::write(&file, cases.to_string()).unwrap();
    run_ok(node.cmd().arg("annotate-lims").arg(&file));
    let graded = run_ok(node.cmd().args([
        "query",
        "count where diagnosis = 413448000 by grade",
        "--json",
    ]));
    let rows: Vec<Value> = graded
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by_grade: BTreeMap<i64, u64> = rows
        .iter()
        .map(|r| {
            (
                r["groups"]["grade"].as_i64().unwrap(),
                r["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(by_grade, BTreeMap::from([(2, 1), (3, 1)]), "{graded}");
    // The opted-out patient's slide is never counted, whatever the query.
    let total = run_ok(node.cmd().args(["query", "count", "--json"]));
    let row: Value = serde_json::from_str(total.trim()).unwrap();
    assert_eq!(row["count"].as_u64(), Some(3), "{total}");
    let dcis = run_ok(
        node.cmd()
            .args(["query", "count where diagnosis = 399935008", "--json"]),
    );
    let row: Value = serde_json::from_str(dcis.trim()).unwrap();
    assert_eq!(row["count"].as_u64(), Some(0), "{dcis}");
    let all = run_ok(
        node.cmd()
            .args(["query", "count where stain = \"h&e\"", "--json"]),
    );
    let row: Value = serde_json::from_str(all.trim()).unwrap();
    // Every slide is H&E; the opted-out patient's is not counted.
    assert_eq!(row["count"].as_u64(), Some(3), "{all}");

    // The LIMS's CSV export reads the same way: the fourth case, graded 1, joins.
    let csv = dir.path().join("lims.csv");
    std::fs::write(
        &csv,
        format!(
            "accession,diagnoses,grade,specimen,consent,opted_out\n{},413448000,1,core biopsy,,no\n",
            accession(3)
        ),
    )
    .unwrap();
    run_ok(node.cmd().arg("annotate-lims").arg(&csv));
    let graded = run_ok(node.cmd().args([
        "query",
        "count where diagnosis = 413448000 by grade",
        "--json",
    ]));
    let grades: Vec<i64> = graded
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["groups"]["grade"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(grades, [1, 2, 3], "{graded}");

    // `under` reads the trust's SNOMED CT hierarchy: with none, a parent concept matches
    // nothing; with the release's relationship rows (here: invasive carcinoma is a malignant
    // neoplasm of breast, 254837009), it matches the three graded cases.
    let under = || {
        let out =
            run_ok(
                node.cmd()
                    .args(["query", "count where diagnosis under 254837009", "--json"]),
            );
        serde_json::from_str::<Value>(out.trim()).unwrap()["count"].as_u64()
    };
    assert_eq!(under(), Some(0));
    std::fs::write(
        node.data.join("snomed-is-a.txt"),
        "id\teffectiveTime\tactive\tmoduleId\tsourceId\tdestinationId\trelationshipGroup\t\
         typeId\tcharacteristicTypeId\tmodifierId\n\
         1\t20250101\t1\t900000000000207008\t413448000\t254837009\t0\t116680003\t\
         900000000000011006\t900000000000451002\n",
    )
    .unwrap();
    node.edit_config(
        "snomed_hierarchy = \"\"",
        "snomed_hierarchy = \"snomed-is-a.txt\"",
    );
    assert_eq!(under(), Some(3));

    let said = run_refused(node.cmd().args(["query", "count where stian = HE"]));
    assert!(said.contains("            ^^^^^"), "{said}");
    assert!(said.contains("expected a field"), "{said}");
}

#[test]
fn the_generators_lims_sidecar_is_the_ground_truth_queries_agree_with() {
    let dir = tempfile::tempdir().unwrap();
    let slides = dir.path().join("slides");
    let lims = dir.path().join("lims.json");
    let mut extra: Vec<String> = ["--count", "8", "--seed", "1830", "--lims"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    extra.push(lims.display().to_string());
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    synth(&slides, &[SMALL, &extra].concat());
    // No consent sidecar: the LIMS's consent codes are the cases' consent.
    let node = Node::init("RR8");
    node.edit_config("min_cell = 10", "min_cell = 0");
    node.edit_config("noise = 2", "noise = 0");
    let (code, report) = node.ingest(&[&slides]);
    assert_eq!(code, 0, "{report}");
    run_ok(node.cmd().arg("annotate-lims").arg(&lims));

    // The truth, from the file: consented to research (GRU or HMB) and not opted out.
    let cases: Vec<Value> = serde_json::from_slice(&std::fs::read(&lims).unwrap()).unwrap();
    assert_eq!(cases.len(), 8);
    let mut truth: BTreeMap<(String, String), u64> = BTreeMap::new();
    for case in &cases {
        let consented = ["GRU", "HMB"].contains(&case["consent"][0].as_str().unwrap());
        if consented && case["opted_out"] == false {
            let diagnosis = case["diagnoses"][0].as_str().unwrap().to_string();
            *truth
                .entry((diagnosis, case["grade"].to_string()))
                .or_default() += 1;
        }
    }
    // Not vacuous: some cases count, and some (clinical care only, opted out) do not.
    let counted_cases: u64 = truth.values().sum();
    assert!((3..8).contains(&counted_cases), "{truth:?}");
    let out = run_ok(
        node.cmd()
            .args(["query", "count by diagnosis, grade", "--json"]),
    );
    let counted: BTreeMap<(String, String), u64> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|row| {
            let key = (
                row["groups"]["diagnosis"].as_str().unwrap().to_string(),
                row["groups"]["grade"].to_string(),
            );
            (key, row["count"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(counted, truth, "{out}");
}
