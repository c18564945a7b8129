//! Cohorts for approved projects across real nodes (issue 18). RR8 approves project "REC
//! 26/YH/0042" for RAE; RAE's cohort request then gets RR8's consenting invasive carcinomas
//! (an opted-out patient left out) as research grants with per-project pseudonyms and
//! grade labels, opened de-identified; RCF, which approved nothing, refuses. `slidemesh
//! cohort fetch` pulls the tiles into a dataset folder with a manifest, every tile verified;
//! a fetch killed part way and run again gives the same bytes as one never interrupted.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use slidemesh_e2e::federation::federation;
use slidemesh_e2e::research_site as site;
use slidemesh_e2e::{Node, SMALL, consent_sidecars, files_under, run, run_ok, synth, wait_until};

const PROJECT: &str = "REC 26/YH/0042";

fn build(node: &Node, query: &str) -> Value {
    let response = node.post(
        "/api/v1/research/cohorts",
        &[("content-type", "application/json")],
        json!({ "project": PROJECT, "query": query })
            .to_string()
            .as_bytes(),
    );
    let body: Value = serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&response.body)));
    assert_eq!(response.status, 200, "{body:#}");
    body
}

fn members(node: &Node) -> Vec<Value> {
    let path = format!(
        "/api/v1/research/cohorts?project={}",
        PROJECT.replace(' ', "%20").replace('/', "%2F")
    );
    node.get_json(&path)["members"].as_array().unwrap().clone()
}

/// Every file under `dir` with its bytes, by path relative to `dir`.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    files_under(dir)
        .unwrap()
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (
                p.strip_prefix(dir).unwrap().to_string_lossy().into_owned(),
                bytes,
            )
        })
        .collect()
}

fn fetch_cmd(node: &Node, out: &Path, extra: &[&str]) -> std::process::Command {
    let mut cmd = node.cmd();
    cmd.args(["cohort", "fetch", "--project", PROJECT, "--out"])
        .arg(out)
        .args(extra);
    cmd
}

#[test]
fn an_approved_projects_cohort_is_released_opened_de_identified_and_fetched_resumably() {
    let mut fed = federation(&["RR8", "RAE", "RCF"]);
    let work = tempfile::tempdir().unwrap();

    // RR8: six cases with research consent; its LIMS says four invasive carcinomas (grades
    // 2, 2, 3, 3), a fifth whose patient opted out, and one DCIS.
    let dir = work.path().join("rr8");
    let generated = synth(&dir, &[SMALL, &["--count", "6", "--seed", "1850"]].concat());
    consent_sidecars(&dir, r#"{"codes": ["GRU"]}"#);
    let (code, report) = fed.nodes[0].ingest(&[&dir]);
    assert_eq!(code, 0, "{report}");
    let cases: Vec<Value> = generated
        .iter()
        .enumerate()
        .map(|(i, slide)| {
            let grade = [2, 2, 3, 3, 2, 2][i];
            json!({
                "accession": slide["accession_number"],
                "diagnoses": [if i == 5 { "399935008" } else { "413448000" }],
                "grade": grade,
                "opted_out": i == 4,
            })
        })
        .collect();
    let lims = work.path().join("lims.json");
    std::fs::write(&lims, Value::Array(cases).to_string()).unwrap();
    run_ok(fed.nodes[0].cmd().arg("annotate-lims").arg(&lims));
    let patient_ids: Vec<String> = generated
        .iter()
        .map(|g| g["patient_id"].as_str().unwrap_or_default().to_string())
        .collect();
    for node in &mut fed.nodes {
        node.serve();
    }
    let rae = &fed.nodes[1];
    let query = "count where diagnosis = 413448000 by grade";

    // Before RR8 approves the project, it releases nothing; RCF never approves it.
    let mut before = Value::Null;
    wait_until(Duration::from_secs(30), || {
        before = build(rae, query);
        site(&before, "RR8")["status"] != "unreachable"
            && site(&before, "RCF")["status"] != "unreachable"
    })
    .unwrap_or_else(|_| panic!("members never reached: {before:#}"));
    assert_eq!(site(&before, "RR8")["status"], "refused", "{before:#}");
    assert!(
        site(&before, "RR8")["reason"]
            .as_str()
            .unwrap()
            .contains("no approval of project"),
        "{before:#}"
    );
    assert_eq!(before["complete"], false);

    // RR8 approves it for RAE (the running node reads the approval from the store).
    let said = run_ok(fed.nodes[0].cmd().args([
        "project",
        "approve",
        PROJECT,
        "--trust",
        "RAE",
        "--until",
        "30d",
        "--max-slides",
        "50",
    ]));
    assert!(said.contains("approved for RAE"), "{said}");
    let built = build(rae, query);
    assert_eq!(site(&built, "RR8")["status"], "answered", "{built:#}");
    assert_eq!(site(&built, "RR8")["slides"], 4, "{built:#}");
    assert_eq!(site(&built, "RCF")["status"], "refused", "{built:#}");
    assert_eq!(built["labels"], json!(["grade"]));

    // The cohort: four slides, pseudonyms not patient ids, graded as the LIMS says, each
    // opened (its manifest fetched) de-identified for the project.
    let listed = members(rae);
    assert_eq!(listed.len(), 4, "{listed:#?}");
    let mut grades: Vec<i64> = listed
        .iter()
        .map(|m| m["labels"]["grade"].as_i64().unwrap())
        .collect();
    grades.sort();
    assert_eq!(grades, [2, 2, 3, 3]);
    for m in &listed {
        assert_eq!(m["site"], "RR8");
        let patient = m["patient"].as_str().unwrap();
        assert!(patient.starts_with("SMP"), "{m}");
        assert!(
            !patient_ids
                .iter()
                .any(|id| !id.is_empty() && patient.contains(id.as_str()))
        );
    }
    wait_until(Duration::from_secs(30), || {
        members(rae).iter().all(|m| m["opened"] == true)
    })
    .expect("every cohort slide opened");
    for m in &listed {
        let slide = m["slide"].as_str().unwrap();
        let manifest = rae.get_json(&format!("/api/v1/slides/{slide}/manifest"));
        assert_eq!(manifest["deidentified_project"], PROJECT);
        let text = manifest.to_string();
        for id in &patient_ids {
            if !id.is_empty() {
                assert!(
                    !text.contains(id.as_str()),
                    "patient id {id} in a cohort manifest"
                );
            }
        }
        let detail = rae.get_json(&format!("/api/v1/slides/{slide}"));
        assert_eq!(detail["label_url"], Value::Null, "{detail:#}");
        assert_eq!(detail["overview_url"], Value::Null, "{detail:#}");
        assert_eq!(detail["deidentified"]["project"], PROJECT);
    }
    // Asking again hands out the same grants, not new ones.
    build(rae, query);
    let again = members(rae);
    let grants = |ms: &[Value]| {
        let mut g: Vec<String> = ms.iter().map(|m| m["grant"].to_string()).collect();
        g.sort();
        g
    };
    assert_eq!(grants(&again), grants(&listed));

    // The research page builds the same cohort and opens a slide de-identified.
    let url = rae.url.clone().unwrap();
    let shots =
        slidemesh_e2e::run_cohort_browser_test(&url, (PROJECT, query), ("RR8", 4), "RCF", "cohort");
    assert!(shots.join("cohort.png").is_file());
    assert_eq!(
        grants(&members(rae)),
        grants(&listed),
        "the page's build reused them"
    );

    // The whole cohort at full resolution, uninterrupted.
    let whole = work.path().join("whole");
    let said = run_ok(&mut fetch_cmd(rae, &whole, &["--rate", "1000"]));
    assert!(
        said.contains("192 tiles of 4 slides from 1 sites"),
        "{said}"
    );
    let csv = std::fs::read_to_string(whole.join("manifest.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "patient,site,view,grade,level,col,row,path,blake3"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 4 * 48);
    for row in &rows {
        let bytes = std::fs::read(whole.join(row[7])).unwrap();
        assert_eq!(blake3::hash(&bytes).to_hex().as_str(), row[8], "{row:?}");
        assert!(row[7].starts_with(&format!("RR8/{}/", row[0])), "{row:?}");
        assert!(["2", "3"].contains(&row[3]), "{row:?}");
    }

    // Interrupted: slowly, killed once a few tiles are in, then run again.
    let resumed = work.path().join("resumed");
    let mut slow = fetch_cmd(rae, &resumed, &["--rate", "10", "--parallel", "1"]);
    let mut child = slow
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(60), || {
        files_under(&resumed).unwrap().len() >= 10
    })
    .expect("the slow fetch wrote tiles");
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = files_under(&resumed).unwrap().len();
    assert!(partial < 192, "the fetch finished before it was killed");
    assert!(!resumed.join("manifest.csv").exists());
    let said = run_ok(&mut fetch_cmd(rae, &resumed, &["--rate", "1000"]));
    assert!(said.contains("already there"), "{said}");
    assert_eq!(tree(&resumed), tree(&whole), "resumed dataset differs");

    // A tile damaged on disk is fetched again on the next run.
    let damaged = resumed.join(rows[0][7]);
    std::fs::write(&damaged, b"not a tile").unwrap();
    run_ok(&mut fetch_cmd(rae, &resumed, &["--rate", "1000"]));
    assert_eq!(tree(&resumed), tree(&whole));

    // A field the approval does not allow (age band and sex narrow down the patient) is
    // refused, as a label or as a filter: selecting by a value says each slide has it.
    for query in [
        "count where diagnosis = 413448000 by age_band",
        "count where sex = \"F\"",
    ] {
        let narrowed = build(rae, query);
        let refusal = site(&narrowed, "RR8");
        assert_eq!(refusal["status"], "refused", "{narrowed:#}");
        assert!(
            refusal["reason"]
                .as_str()
                .unwrap()
                .contains("allows selecting and labelling by"),
            "{narrowed:#}"
        );
    }

    // The LIMS now says the four patients opted out: the next cohort has none of them, and
    // their slides' tiles not yet fetched are refused at RR8 (after its decisions' brief
    // memo), whatever grant RAE holds.
    let opted_out: Vec<Value> = generated
        .iter()
        .take(4)
        .map(|slide| {
            json!({
                "accession": slide["accession_number"],
                "diagnoses": ["413448000"],
                "opted_out": true,
            })
        })
        .collect();
    std::fs::write(&lims, Value::Array(opted_out).to_string()).unwrap();
    run_ok(fed.nodes[0].cmd().arg("annotate-lims").arg(&lims));
    std::thread::sleep(Duration::from_secs(6));
    // (The last slide listed: the browser test opened the first, and its viewer cached
    // tiles of every level.)
    let last = listed[3]["slide"].as_str().unwrap();
    let tile = rae.get(&format!("/api/v1/slides/{last}/levels/1/tiles/0/0"));
    assert_ne!(tile.status, 200, "an opted-out patient's tile was served");
    let after = build(rae, query);
    assert_eq!(site(&after, "RR8")["slides"], 0, "{after:#}");

    // Both sides' audit logs hold the cohort: RR8 served it (and the refusal before the
    // approval), RAE received it.
    let entries = |node: &Node| -> Vec<Value> {
        run_ok(node.cmd().args(["audit", "show", "--json"]))
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["entry"].clone())
            .filter(|e| e["action"] == "receive_cohort")
            .collect()
    };
    let served = entries(&fed.nodes[0]);
    assert!(served.iter().any(|e| e["side"] == "served"
        && e["allowed"] == true
        && e["what"].as_str().unwrap().contains("4 slides released")));
    assert!(served.iter().any(|e| e["allowed"] == false));
    let received = entries(rae);
    assert!(
        received
            .iter()
            .any(|e| e["side"] == "received" && e["peer"] == "RR8")
    );

    // An ended approval releases nothing more, and its grants are revoked.
    let said = run_ok(
        fed.nodes[0]
            .cmd()
            .args(["project", "end", PROJECT, "--trust", "RAE"]),
    );
    assert!(said.contains("4 grants revoked"), "{said}");
    let ended = build(rae, query);
    assert_eq!(site(&ended, "RR8")["status"], "refused", "{ended:#}");

    // Without the running node the fetch says so.
    fed.nodes[1].stop();
    let out = run(&mut fetch_cmd(&fed.nodes[1], &whole, &[]));
    assert!(!out.status.success());
}
