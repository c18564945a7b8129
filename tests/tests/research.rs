//! Research queries at one real node (issue 18, first step): `slidemesh query` counts the
//! node's own slides, grouped, and the counts agree with what pydicom reads from the same
//! generated files; a malformed query is refused with a caret under the offending token.

use std::collections::BTreeMap;

use serde_json::Value;
use slidemesh_e2e::{Node, SMALL, run_ok, synth};

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
    let node = Node::init("RR8");
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

    // A filter that matches nothing counts nothing; one on the stain every slide has, all.
    let none = run_ok(
        node.cmd()
            .args(["query", "count where year < 1900", "--json"]),
    );
    let row: Value = serde_json::from_str(none.trim()).unwrap();
    assert_eq!(row["count"].as_u64(), Some(0), "{none}");
    // LIMS fields are not held yet: refused, saying so.
    let lims = node
        .cmd()
        .args(["query", "count by diagnosis"])
        .output()
        .unwrap();
    assert!(!lims.status.success());
    assert!(String::from_utf8_lossy(&lims.stderr).contains("LIMS sidecar"));
    let all = run_ok(
        node.cmd()
            .args(["query", "count where stain = \"h&e\"", "--json"]),
    );
    let row: Value = serde_json::from_str(all.trim()).unwrap();
    assert_eq!(row["count"].as_u64(), Some(4), "{all}");

    let refused = node
        .cmd()
        .args(["query", "count where stian = HE"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("            ^^^^^"), "{said}");
    assert!(said.contains("expected a field"), "{said}");
}
