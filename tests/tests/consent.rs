//! The access matrix, against real nodes: the owner (Leeds) serves a slide under its default
//! cedar policy; a probe speaking the real protocol as Bradford's node asks for the manifest,
//! level tiles and the label image under grants of every purpose, while the owner's recorded
//! consent for the slide changes between columns (`slidemesh consent`, effective at once).
//! Every cell asserts exactly what was served: the manifest (identified, or the owner's
//! de-identified view with per-project pseudonyms) and tiles, the label, or nothing.

use std::collections::BTreeMap;

use serde_json::Value;
use slidemesh_e2e::federation::{federation, share_for};
use slidemesh_e2e::{Node, bin, run_ok};

/// What a cell expects: the identified manifest and level tiles (`V`) or the de-identified
/// view and level tiles (`P`, for pseudonymised), the label tile (`L`).
fn outcome(probe: &Value) -> String {
    let manifest = probe["manifest"]["outcome"] == "manifest";
    let pseudonymised = !probe["manifest"]["deidentified"].is_null();
    let tiles = probe["tiles"]["received"].as_u64() == Some(4);
    let label = probe["label"]["received"].as_u64() == Some(1);
    assert_eq!(
        manifest, tiles,
        "manifest and tiles decided differently: {probe}"
    );
    format!(
        "{}{}",
        match (manifest, pseudonymised) {
            (false, _) => "-",
            (true, false) => "V",
            (true, true) => "P",
        },
        if label { "L" } else { "-" }
    )
}

#[test]
fn the_access_matrix_holds_on_real_nodes() {
    let mut fed = federation(&["RR8", "RAE"]);
    let slide = fed.slide.clone();
    // Only the owner serves: the probe is Bradford (its key), with grants from the owner.
    fed.nodes[0].serve();
    let (owner, bradford) = (&fed.nodes[0], &fed.nodes[1]);

    let rows: Vec<(&str, &str, Option<&str>)> = vec![
        ("direct care", "direct-care", None),
        ("second opinion", "second-opinion", Some("REF-2026-0042")),
        ("MDT", "mdt", None),
        ("research, no ethics ref", "research", None),
        ("research, ethics ref", "research", Some("REC 24/YH/0001")),
        ("education", "education", None),
        ("audit/QA", "audit-qa", None),
        ("second opinion, revoked", "second-opinion", None),
    ];
    let grants: Vec<String> = rows
        .iter()
        .map(|(_, purpose, reference)| share_for(owner, &slide, "RAE", purpose, *reference))
        .collect();
    run_ok(owner.cmd().args(["revoke", grants.last().unwrap()]));

    // Columns: the slide's recorded consent.
    let columns: Vec<(&str, Vec<&str>)> = vec![
        (
            "care only (CC)",
            vec!["--codes", "CC", "--opt-out", "no", "--expires", "never"],
        ),
        ("GRU", vec!["--codes", "GRU"]),
        ("GRU, opted out", vec!["--codes", "GRU", "--opt-out", "yes"]),
        ("HMB+IRB", vec!["--codes", "HMB,IRB", "--opt-out", "no"]),
        (
            "GRU, consent ended",
            vec!["--codes", "GRU", "--expires", "2020-01-01"],
        ),
    ];
    // Expected, row by row, one cell per column: V = manifest and tiles, L = label image.
    let expected: BTreeMap<&str, [&str; 5]> = BTreeMap::from([
        ("direct care", ["VL", "VL", "VL", "VL", "VL"]),
        ("second opinion", ["VL", "VL", "VL", "VL", "VL"]),
        ("MDT", ["VL", "VL", "VL", "VL", "VL"]),
        ("research, no ethics ref", ["--", "P-", "--", "--", "--"]),
        ("research, ethics ref", ["--", "P-", "--", "P-", "--"]),
        ("education", ["--", "P-", "--", "--", "--"]),
        // The default policy shows audit/QA no label, so no identity in the metadata either.
        ("audit/QA", ["P-", "P-", "P-", "P-", "--"]),
        ("second opinion, revoked", ["--", "--", "--", "--", "--"]),
    ]);

    let peer = owner.tcp_multiaddr();
    let mut mismatches = Vec::new();
    let mut table = String::new();
    // The patient id each row's manifest carried, per column: the owner's own in identified
    // manifests, a pseudonym per project in de-identified ones.
    let mut patient_ids: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (c, (column, args)) in columns.iter().enumerate() {
        run_ok(owner.cmd().arg("consent").arg(&slide).args(args));
        let mut probe = std::process::Command::new(bin("slidemesh-tools"));
        probe
            .args([
                "probe", "--peer", &peer, "--slide", &slide, "--tiles", "4", "--label",
            ])
            .arg("--as-node")
            .arg(&bradford.data)
            .arg("--grant-from")
            .arg(&owner.data)
            .arg("--tiles-from")
            .arg(&owner.data);
        for g in &grants {
            probe.args(["--grant", g]);
        }
        let out = run_ok(&mut probe);
        let lines: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).expect("probe prints JSON lines"))
            .collect();
        assert_eq!(lines.len(), rows.len(), "{out}");
        for ((row, _, _), line) in rows.iter().zip(&lines) {
            let got = outcome(line);
            let want = expected[row][c];
            table.push_str(&format!("{row:>26} | {column:<20} | {got} (want {want})\n"));
            if got != want {
                mismatches.push(format!("{row} / {column}: got {got}, want {want}: {line}"));
            }
            if let Some(id) = line["manifest"]["patient_id"].as_str() {
                patient_ids.entry(row).or_default().push(id.to_string());
            }
            if got.starts_with('P') && line["manifest"]["lists_label"] != false {
                mismatches.push(format!(
                    "{row} / {column}: the view lists the label: {line}"
                ));
            }
        }
    }
    println!("{table}");
    assert!(
        mismatches.is_empty(),
        "cells that differ from the table:\n{}",
        mismatches.join("\n")
    );

    // Pseudonyms: one per row (a row is one grant, so one project) across every column,
    // none equal to the patient's own id, and no two projects sharing one.
    let identified = &patient_ids["direct care"][0];
    let mut pseudonyms = Vec::new();
    for (row, ids) in &patient_ids {
        assert!(ids.windows(2).all(|w| w[0] == w[1]), "{row}: {ids:?}");
        if ["direct care", "second opinion", "MDT"].contains(row) {
            assert_eq!(&ids[0], identified, "{row} is not identified");
        } else {
            assert_ne!(&ids[0], identified, "{row} carries the patient's own id");
            assert!(ids[0].starts_with("SMP"), "{row}: {}", ids[0]);
            pseudonyms.push(ids[0].clone());
        }
    }
    assert_eq!(pseudonyms.len(), 4, "{patient_ids:?}");
    pseudonyms.sort();
    pseudonyms.dedup();
    assert_eq!(
        pseudonyms.len(),
        4,
        "two projects share a pseudonym: {patient_ids:?}"
    );

    // Every decision is in the owner's audit log: three requests per cell at least
    // (manifest, tiles, label), with the deciding rule and the policy's hash.
    let cells = rows.len() * columns.len();
    let mut entries: Vec<Value> = Vec::new();
    slidemesh_e2e::wait_until(std::time::Duration::from_secs(10), || {
        entries = run_ok(owner.cmd().args(["audit", "show", "--json"]))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        entries.len() >= 3 * cells
    })
    .unwrap_or_else(|_| panic!("{} audit entries for {cells} cells", entries.len()));
    // The opt-out is built in for research and teaching (whatever a policy says), so the
    // policy's own opt-out rule is not what decides them.
    let opted_out = entries
        .iter()
        .filter(|e| {
            e["entry"]["rules"][0]
                .as_str()
                .is_some_and(|r| r.starts_with("built-in: the patient opted out"))
        })
        .count();
    assert!(opted_out >= 2, "opt-out denials not audited");
    assert!(entries.iter().all(|e| e["entry"]["peer"] == "RAE"));
    assert!(
        entries.iter().any(|e| e["entry"]["rules"][0]
            .as_str()
            .unwrap_or("")
            .contains("revoked")),
        "the revoked grant's refusals are not audited"
    );
    run_ok(owner.cmd().args(["audit", "checkpoint"]));
    let verified = run_ok(owner.cmd().args(["audit", "verify"]));
    assert!(verified.contains("ok:"), "{verified}");
    let bundle: Value = serde_json::from_str(&run_ok(owner.cmd().args([
        "audit",
        "export",
        "--purpose",
        "research",
    ])))
    .unwrap();
    let events = bundle["entry"].as_array().unwrap();
    assert!(!events.is_empty());
    assert!(
        events
            .iter()
            .all(|e| e["resource"]["resourceType"] == "AuditEvent"
                && e["resource"]["purposeOfEvent"][0]["coding"][0]["code"] == "research")
    );
}

#[test]
fn consent_arrives_with_the_slide_from_the_lims_sidecar() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("slide");
    slidemesh_e2e::synth(&dir, slidemesh_e2e::SMALL);
    std::fs::write(
        dir.join("consent.json"),
        r#"{"codes": ["hmb", "IRB"], "opted_out": true, "expires": "2031-03-31"}"#,
    )
    .unwrap();
    let node = Node::init("RR8");
    let (code, report) = node.ingest(&[&dir]);
    assert_eq!(
        code, 0,
        "the sidecar must not be taken for a bad DICOM file: {report}"
    );
    let slide = report["slides"][0]["slide_id"].as_str().unwrap();
    let consent: Value =
        serde_json::from_str(&run_ok(node.cmd().args(["consent", slide, "--json"]))).unwrap();
    assert_eq!(
        consent["consent"]["codes"],
        serde_json::json!(["HMB", "IRB"])
    );
    assert_eq!(consent["consent"]["opted_out"], true);
    // The policy sees it: research is refused (opted out), care is not.
    let research = run_ok(node.cmd().args([
        "policy",
        "test",
        "--trust",
        "RAE",
        "--purpose",
        "research",
        "--slide",
        slide,
        "--reference",
        "REC 1",
    ]));
    assert!(
        research.starts_with("DENY") && research.contains("national-data-opt-out"),
        "{research}"
    );
    let care = run_ok(node.cmd().args([
        "policy",
        "test",
        "--trust",
        "RAE",
        "--purpose",
        "direct-care",
        "--slide",
        slide,
    ]));
    assert!(care.starts_with("ALLOW"), "{care}");

    // A malformed sidecar stops the series whole, naming the file.
    let bad = tmp.path().join("bad");
    slidemesh_e2e::synth(&bad, &["--seed", "4", "--width", "1024", "--height", "768"]);
    std::fs::write(bad.join("consent.json"), r#"{"codes": ["NOPE"]}"#).unwrap();
    let (code, report) = node.ingest(&[&bad]);
    assert_eq!(code, 2, "{report}");
    assert!(report.to_string().contains("NOPE"), "{report}");
}
