//! Referrals between two real nodes, Leeds (RR8) referring a case to Bradford (RAE), both
//! behind their trusts' sign-on proxies: sent by a pathologist in one, seen in the other's
//! inbox, opened and answered with a coded opinion, the answer seen where it was asked;
//! people without the role refused at both ends; store and forward across the receiver's
//! outage and the sender's restart, exactly once; withdrawal revoking the grants; expiry.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use slidemesh_e2e::federation::federation;
use slidemesh_e2e::{Node, PROXY_SECRET, PROXY_SECRET_HEADER, run_ok, run_refused, wait_until};

fn person(user: &'static str, role: &'static str) -> [(&'static str, &'static str); 4] {
    [
        ("x-slidemesh-user", user),
        ("x-slidemesh-role", role),
        (PROXY_SECRET_HEADER, PROXY_SECRET),
        ("content-type", "application/json"),
    ]
}

/// Validates a DiagnosticReport (argv[1]) with fhir.resources and prints what it read.
const FHIR_CHECK: &str = r#"
import sys
from fhir.resources.diagnosticreport import DiagnosticReport
r = DiagnosticReport.model_validate_json(sys.argv[1])
print(r.get_resource_type(), r.status, r.conclusionCode[0].coding[0].code)
"#;

/// A note longer than a DICOM label, with characters outside ASCII.
const LONG_NOTE: &str = "Comedonecrosis – the pathologist’s focus; grade 3 nuclei throughout the duct, extending to the margin";

/// Reads an annotation instance (argv[1]) with highdicom; prints its study and, per group,
/// label, graphic type, vertices and measurements, as JSON.
const ANN_CHECK: &str = r#"
import json, sys
import highdicom as hd, pydicom
ann = hd.ann.MicroscopyBulkSimpleAnnotations.from_dataset(pydicom.dcmread(sys.argv[1]))
groups = []
for g in ann.get_annotation_groups():
    (points,) = g.get_graphic_data(ann.annotation_coordinate_type)
    names, values, units = g.get_measurements()
    groups.append({
        "label": g.label, "type": g.graphic_type.value, "description": g.get("AnnotationGroupDescription"),
        "points": [[float(x), float(y)] for x, y in points],
        "measurements": [{"name": n.meaning, "unit": u.value, "value": float(values[0, j])}
                         for j, (n, u) in enumerate(zip(names, units))],
    })
print(json.dumps({"study": ann.StudyInstanceUID, "groups": groups}))
"#;

fn body(r: &slidemesh_e2e::Response) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

fn json_of(r: &slidemesh_e2e::Response) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", body(r)))
}

/// The referrals `who` sees in `node`'s box.
fn listed(node: &Node, which: &str, who: &[(&str, &str)]) -> Vec<Value> {
    let r = node.get_with(&format!("/api/v1/referrals?box={which}"), who);
    assert_eq!(r.status, 200, "{}", body(&r));
    json_of(&r)["referrals"].as_array().unwrap().clone()
}

fn statuses(referral: &Value) -> Vec<String> {
    referral["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap().to_string())
        .collect()
}

fn audit_actions(node: &Node) -> Vec<String> {
    run_ok(node.cmd().args(["audit", "show", "--json"]))
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["entry"]["action"].to_string())
        .collect()
}

#[test]
fn a_referral_is_answered_across_trusts_and_only_pathologists_take_part() {
    let mut fed = federation(&["RR8", "RAE"]);
    let slide = fed.slide.clone();
    for node in &fed.nodes {
        node.behind_proxy("[\"127.0.0.1\"]");
    }
    // Bradford's directory: its breast queue and the specialist who reports it.
    fed.nodes[1].edit_config(
        "queues = []",
        r#"queues = [{ name = "breast", title = "Breast pathology" }]"#,
    );
    fed.nodes[1].edit_config(
        "specialists = []",
        r#"specialists = [{ account = "apatel", name = "Dr A Patel", queues = ["breast"] }]"#,
    );
    fed.nodes[0].serve();
    fed.nodes[1].serve();
    let (leeds, bradford) = (&fed.nodes[0], &fed.nodes[1]);
    let jsmith = person("jsmith", "pathologist");
    let apatel = person("apatel", "pathologist");
    let form = json!({
        "to": "RAE",
        "recipient": {"queue": "breast"},
        "slides": [slide],
        "question": "DCIS or invasive carcinoma? Please grade.",
        "urgency": "two-week-wait",
        "report": "Core biopsy, left breast, 2 cores.",
    });

    // Leeds learns Bradford's directory; a queue it does not list is refused.
    wait_until(Duration::from_secs(60), || {
        json_of(&leeds.get_with("/api/v1/directory", &jsmith))["trusts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["trust"] == "RAE" && t["queues"][0]["name"] == "breast")
    })
    .expect("Bradford's directory reaches Leeds");
    let mut elsewhere = form.clone();
    elsewhere["recipient"] = json!({"queue": "neuro"});
    let r = leeds.post(
        "/api/v1/referrals",
        &jsmith,
        elsewhere.to_string().as_bytes(),
    );
    assert_eq!(r.status, 409, "{}", body(&r));
    let refusal = json_of(&r)["error"].as_str().unwrap().to_string();
    assert!(
        refusal.contains("lists no \"neuro\"; it lists: breast"),
        "{refusal}"
    );

    // A student may not refer; a pathologist may.
    let r = leeds.post(
        "/api/v1/referrals",
        &person("akhan", "student"),
        form.to_string().as_bytes(),
    );
    assert_eq!(r.status, 403, "{}", body(&r));
    let sent_at = Instant::now();
    let r = leeds.post("/api/v1/referrals", &jsmith, form.to_string().as_bytes());
    assert_eq!(r.status, 201, "{}", body(&r));
    let sent = json_of(&r);
    let id = sent["id"].as_str().unwrap().to_string();
    assert_eq!(sent["status"], "sent");
    assert_eq!(sent["referrer"], "jsmith (pathologist)");

    // In Bradford's inbox for its pathologists, with the question and the urgency.
    wait_until(Duration::from_secs(30), || {
        !listed(bradford, "inbox", &apatel).is_empty()
    })
    .expect("the referral reaches the receiving inbox");
    let visible_after = sent_at.elapsed();
    eprintln!("referral sent to visible in the receiving inbox: {visible_after:?}");
    let inbox = listed(bradford, "inbox", &apatel);
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0]["id"], id.as_str());
    assert_eq!(inbox[0]["from"], "RR8");
    assert_eq!(inbox[0]["urgency"], "two-week-wait");
    assert_eq!(inbox[0]["question"], form["question"]);
    // Not for a student there: not listed, and refused when asked for by id.
    let student = person("bjones", "student");
    assert!(listed(bradford, "inbox", &student).is_empty());
    let detail = format!("/api/v1/referrals/{id}");
    let r = bradford.get_with(&detail, &student);
    assert_eq!(r.status, 403, "{}", body(&r));
    let r = bradford.post(
        &format!("{detail}/answer"),
        &student,
        br#"{"text": "looks fine"}"#,
    );
    assert_eq!(r.status, 403, "{}", body(&r));

    // The specialist opens it (the slide streams from Leeds) and answers with a code.
    let r = bradford.post(&format!("{detail}/open"), &apatel, b"");
    assert_eq!(r.status, 200, "{}", body(&r));
    let tile = format!("/api/v1/slides/{slide}/levels/0/tiles/0/0");
    let r = bradford.get_with(&tile, &apatel);
    assert_eq!(r.status, 200, "{}", body(&r));
    // Marks in the slide's full-resolution pixels: a note, a measured line, a rectangle and
    // a polygon (the polygon's area is known: a right triangle of 600 x 400 px).
    let base = json_of(&bradford.get_with(&format!("/api/v1/slides/{slide}"), &apatel))["levels"]
        [0]
    .clone();
    let (w, h) = (
        base["width"].as_f64().unwrap(),
        base["height"].as_f64().unwrap(),
    );
    let spacing_um = base["pixel_spacing_mm"][0].as_f64().unwrap() * 1000.0;
    let marks = json!([
        {"slide": slide, "shape": "point", "points": [[w * 0.25, h * 0.25]], "text": LONG_NOTE},
        {"slide": slide, "shape": "line", "points": [[100.5, 100.5], [400.5, 500.5]], "text": "Tumour width"},
        {"slide": slide, "shape": "rectangle", "points": [[w * 0.5, h * 0.5], [w * 0.5 + 200.0, h * 0.5 + 100.0]], "text": ""},
        {"slide": slide, "shape": "polygon", "points": [[10.0, 10.0], [610.0, 10.0], [10.0, 410.0]], "text": "Focus \\ of DCIS"},
    ]);
    let answer = json!({
        "text": "High-grade DCIS with comedonecrosis; no invasion in the levels examined.",
        "diagnosis": {"code": "399935008", "display": "Ductal carcinoma in situ of breast"},
        "annotations": marks,
    });
    // A mark outside the slide is refused, and nothing is answered.
    let mut outside = answer.clone();
    outside["annotations"][0]["points"][0] = json!([w + 10.0, 1.0]);
    let r = bradford.post(
        &format!("{detail}/answer"),
        &apatel,
        outside.to_string().as_bytes(),
    );
    assert_eq!(r.status, 409, "{}", body(&r));
    assert!(
        body(&r).contains("annotation 1: it lies outside"),
        "{}",
        body(&r)
    );
    let r = bradford.post(
        &format!("{detail}/answer"),
        &apatel,
        answer.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", body(&r));
    assert_eq!(json_of(&r)["status"], "answered");
    // An answer coded with a made-up SNOMED CT id is refused (check digit).
    let r = bradford.post(
        &format!("{detail}/answer"),
        &apatel,
        br#"{"text": "x", "diagnosis": {"code": "399935009"}}"#,
    );
    assert_eq!(r.status, 409, "{}", body(&r));

    // Leeds sees the answer on the case, with every step timestamped.
    wait_until(Duration::from_secs(30), || {
        json_of(&leeds.get_with(&detail, &jsmith))["status"] == "answered"
    })
    .expect("the answer reaches the referring trust");
    let at_leeds = json_of(&leeds.get_with(&detail, &jsmith));
    assert_eq!(at_leeds["opinion"]["text"], answer["text"]);
    assert_eq!(at_leeds["opinion"]["diagnosis"]["code"], "399935008");
    assert_eq!(at_leeds["opinion"]["author"], "apatel (pathologist)");
    assert_eq!(
        statuses(&at_leeds),
        ["sent", "delivered", "opened", "answered"]
    );
    // The opinion as a FHIR DiagnosticReport for the LIMS, valid by fhir.resources (R5).
    let r = leeds.get_with(&format!("{detail}/fhir"), &jsmith);
    assert_eq!(r.status, 200, "{}", body(&r));
    let report = json_of(&r);
    assert_eq!(
        report["conclusionCode"][0]["coding"][0]["code"],
        "399935008"
    );
    let checked = slidemesh_e2e::run_ok(
        std::process::Command::new(slidemesh_e2e::python())
            .args(["-c", FHIR_CHECK])
            .arg(r.body.iter().map(|&b| b as char).collect::<String>()),
    );
    assert!(
        checked.contains("DiagnosticReport final 399935008"),
        "{checked}"
    );
    // The marks came with it, and both trusts make the same DICOM annotation instance of
    // them, which highdicom reads back with the same geometry and measurements and
    // dciodvfy finds nothing wrong with.
    assert_eq!(
        at_leeds["opinion"]["annotations"].as_array().unwrap().len(),
        4
    );
    let ann_path = format!("{detail}/annotations/{slide}");
    let r = leeds.get_with(&ann_path, &jsmith);
    assert_eq!(r.status, 200, "{}", body(&r));
    assert_eq!(r.header("content-type"), Some("application/dicom"));
    let at_bradford = bradford.get_with(&ann_path, &apatel);
    assert_eq!(at_bradford.status, 200, "{}", body(&at_bradford));
    assert_eq!(
        r.body, at_bradford.body,
        "both trusts build the same instance"
    );
    assert_eq!(
        leeds
            .get_with(&ann_path, &person("akhan", "student"))
            .status,
        403
    );
    let file = leeds.data.join("annotations.dcm");
    std::fs::write(&file, &r.body).unwrap();
    let read: Value = serde_json::from_str(&run_ok(
        std::process::Command::new(slidemesh_e2e::python())
            .args(["-c", ANN_CHECK])
            .arg(&file),
    ))
    .unwrap();
    assert_eq!(
        read["study"],
        json_of(&leeds.get_with(&format!("/api/v1/slides/{slide}/manifest"), &jsmith))["manifest"]
            ["study_uid"]
    );
    let groups = read["groups"].as_array().unwrap();
    let kinds: Vec<&str> = groups.iter().map(|g| g["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["POINT", "POLYLINE", "RECTANGLE", "POLYGON"]);
    // A long note in any script: the label is as much of it as fits LO's 64 bytes, with an
    // ellipsis, the description all of it.
    let label = groups[0]["label"].as_str().unwrap();
    assert!(label.len() <= 64 && label.ends_with('…'), "{label}");
    assert!(
        LONG_NOTE.starts_with(label.trim_end_matches('…')),
        "{label}"
    );
    assert_eq!(groups[0]["description"], LONG_NOTE);
    assert_eq!(groups[2]["label"], "rectangle 3");
    assert_eq!(groups[3]["label"], "Focus   of DCIS", "LO has no backslash");
    for (group, mark) in groups.iter().zip(marks.as_array().unwrap()) {
        let points = group["points"].as_array().unwrap();
        let sent = mark["points"].as_array().unwrap();
        if mark["shape"] == "rectangle" {
            // Four corners, clockwise from the top left.
            assert_eq!(points[0], sent[0]);
            assert_eq!(points[2], sent[1]);
        } else {
            assert_eq!(points, sent, "{}", mark["shape"]);
        }
    }
    let measured = |i: usize| groups[i]["measurements"][0].clone();
    let close = |a: &Value, b: f64| (a.as_f64().unwrap() - b).abs() / b < 1e-4;
    assert_eq!(measured(1)["unit"], "um");
    assert!(
        close(&measured(1)["value"], 500.0 * spacing_um),
        "{}",
        measured(1)
    );
    assert_eq!(measured(3)["unit"], "um2");
    assert!(
        close(&measured(3)["value"], 120_000.0 * spacing_um * spacing_um),
        "{}",
        measured(3)
    );
    assert!(
        close(&measured(2)["value"], 20_000.0 * spacing_um * spacing_um),
        "{}",
        measured(2)
    );
    assert!(groups[0]["measurements"].as_array().unwrap().is_empty());
    let verdict = std::process::Command::new("dciodvfy")
        .arg(&file)
        .output()
        .unwrap();
    let verdict = String::from_utf8_lossy(&verdict.stderr).into_owned()
        + &String::from_utf8_lossy(&verdict.stdout);
    let errors: Vec<&str> = verdict
        .lines()
        .filter(|l| l.starts_with("Error"))
        // dicom3tools' ANN template checks CommonZCoordinateValue unconditionally, so it
        // reports every 2D group, though the attribute is absent as the standard wants.
        .filter(|l| !l.contains("Only valid for AnnotationCoordinateType of 3D - attribute <CommonZCoordinateValue>"))
        .collect();
    assert!(
        verdict.contains("MicroscopyBulkSimpleAnnotations"),
        "{verdict}"
    );
    assert!(errors.is_empty(), "dciodvfy: {verdict}");
    // Over DICOMweb the marks are a series of the slide's study, for those who may see the
    // referral: not found by a student's search, and refused when asked for by UID.
    let study = read["study"].as_str().unwrap().to_string();
    let ann_search = format!("/dicomweb/studies/{study}/series?Modality=ANN");
    let found = json_of(&leeds.get_with(&ann_search, &jsmith));
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    let ann_series = found[0]["0020000E"]["Value"][0].as_str().unwrap();
    let student = person("akhan", "student");
    let hidden = json_of(&leeds.get_with(&ann_search, &student));
    assert!(hidden.as_array().unwrap().is_empty(), "{hidden}");
    let metadata = format!("/dicomweb/studies/{study}/series/{ann_series}/metadata");
    assert_eq!(leeds.get_with(&metadata, &jsmith).status, 200);
    assert_eq!(leeds.get_with(&metadata, &student).status, 403);
    // The referring side's list is for those who may refer.
    assert_eq!(listed(leeds, "sent", &jsmith).len(), 1);
    assert!(listed(leeds, "sent", &person("akhan", "student")).is_empty());

    // Leeds closes it, which revokes its grants; Bradford records it closed, and its
    // people no longer see the referral or its slides.
    let r = leeds.post(&format!("{detail}/close"), &jsmith, b"");
    assert_eq!(r.status, 200, "{}", body(&r));
    wait_until(Duration::from_secs(30), || {
        run_ok(bradford.cmd().args(["referrals", "show", &id])).contains("\"closed\"")
    })
    .expect("the closing reaches the receiving trust");
    wait_until(Duration::from_secs(30), || {
        bradford.get_with(&detail, &apatel).status == 403
    })
    .expect("a closed referral's slides are no longer shown at the receiver");
    assert!(listed(bradford, "inbox", &apatel).is_empty());

    // A referral to a named specialist is for them (and their cover), not every
    // pathologist there.
    let mut named = form.clone();
    named["recipient"] = json!({"specialist": "apatel"});
    let r = leeds.post("/api/v1/referrals", &jsmith, named.to_string().as_bytes());
    assert_eq!(r.status, 201, "{}", body(&r));
    let named_id = json_of(&r)["id"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(30), || {
        !listed(bradford, "inbox", &apatel).is_empty()
    })
    .expect("the named referral reaches apatel's inbox");
    let colleague = person("cother", "pathologist");
    assert!(listed(bradford, "inbox", &colleague).is_empty());
    let r = bradford.get_with(&format!("/api/v1/referrals/{named_id}"), &colleague);
    assert_eq!(r.status, 403, "{}", body(&r));
    assert!(body(&r).contains("is for apatel"), "{}", body(&r));

    // Both audit logs hold every step, and both logs verify.
    for (node, steps) in [
        (leeds, ["sent", "delivered", "opened", "answered", "closed"]),
        (
            bradford,
            ["sent", "delivered", "opened", "answered", "closed"],
        ),
    ] {
        let actions = audit_actions(node);
        for step in steps {
            assert!(
                actions.contains(&format!("\"referral:{step}\"")),
                "{step} missing from the log: {actions:?}"
            );
        }
        run_ok(node.cmd().args(["audit", "verify"]));
    }
}

/// Refers `slide` from `node`'s command line to Bradford's apatel; returns the referral id.
fn refer(node: &Node, slide: &str, until: &str) -> String {
    let out = run_ok(node.cmd().args([
        "refer",
        slide,
        "--to",
        "RAE",
        "--specialist",
        "apatel",
        "--question",
        "Second opinion on margins, please.",
        "--urgency",
        "urgent",
        "--until",
        until,
        "--json",
    ]));
    serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn referrals_are_stored_and_forwarded_exactly_once_withdrawn_and_expired() {
    let mut fed = federation(&["RR8", "RAE"]);
    let slide = fed.slide.clone();
    fed.nodes[0].serve();
    // Bradford is down while Leeds refers (from its command line) and restarts.
    let first = refer(&fed.nodes[0], &slide, "2h");
    std::thread::sleep(Duration::from_secs(2));
    fed.nodes[0].stop();
    fed.nodes[1].serve();
    std::thread::sleep(Duration::from_secs(1));
    fed.nodes[0].serve();
    let (leeds, bradford) = (&fed.nodes[0], &fed.nodes[1]);
    let detail = format!("/api/v1/referrals/{first}");
    wait_until(Duration::from_secs(60), || {
        json_of(&leeds.get(&detail))["status"] == "delivered"
    })
    .expect("delivered once the receiver is back");
    // Listed once the receiver holds the owner's word that the referral's grants hold (its
    // manifest fetch, which may still be on its way when "delivered" is acknowledged).
    let mut inbox = Vec::new();
    wait_until(Duration::from_secs(30), || {
        inbox = listed(bradford, "inbox", &[]);
        !inbox.is_empty()
    })
    .unwrap_or_else(|_| panic!("the delivered referral is not in the inbox: {inbox:#?}"));
    assert_eq!(inbox.len(), 1, "{inbox:#?}");
    assert_eq!(inbox[0]["recipient"]["specialist"], "apatel");
    // Exactly once: one delivery in each history, one referral in the receiver's store.
    std::thread::sleep(Duration::from_secs(2));
    let at_leeds = json_of(&leeds.get(&detail));
    assert_eq!(statuses(&at_leeds), ["sent", "delivered"]);
    let at_bradford = json_of(&bradford.get(&detail));
    assert_eq!(statuses(&at_bradford), ["sent", "delivered"]);
    let listed_cli = run_ok(
        bradford
            .cmd()
            .args(["referrals", "--box", "inbox", "--json"]),
    );
    assert_eq!(listed_cli.lines().count(), 1, "{listed_cli}");

    // The slide can be viewed under the referral's grant, until Leeds withdraws it.
    let tile = format!("/api/v1/slides/{slide}/levels/0/tiles/0/0");
    wait_until(Duration::from_secs(30), || {
        bradford.get(&tile).status == 200
    })
    .expect("the referred slide is viewable at the receiver");
    run_ok(leeds.cmd().args(["referrals", "withdraw", &first]));
    wait_until(Duration::from_secs(30), || {
        run_ok(bradford.cmd().args(["referrals", "show", &first])).contains("\"withdrawn\"")
    })
    .expect("the withdrawal reaches the receiver");
    wait_until(Duration::from_secs(30), || {
        bradford.get(&tile).status != 200
    })
    .expect("the withdrawn referral's slide is no longer shown");
    let r = bradford.post(
        &format!("{detail}/answer"),
        &[("content-type", "application/json")],
        br#"{"text": "late"}"#,
    );
    // Refused: its slides are no longer held under its grants (403).
    assert_eq!(r.status, 403, "{}", body(&r));

    // A referral whose end comes is marked expired on both sides.
    let second = refer(leeds, &slide, "4s");
    wait_until(Duration::from_secs(30), || {
        run_ok(leeds.cmd().args(["referrals", "show", &second])).contains("\"expired\"")
            && run_ok(bradford.cmd().args(["referrals", "show", &second])).contains("\"expired\"")
    })
    .expect("the referral expires on both sides");
}

/// The co-operative's shared queue: Leeds offers a case; Bradford and Harrogate both claim
/// it at once; exactly one wins, the case is referred to the winner for direct care, and
/// every member sees who took it.
#[test]
fn an_offered_case_is_taken_by_exactly_one_of_two_racing_claims() {
    let mut fed = federation(&["RR8", "RAE", "RCD"]);
    let slide = fed.slide.clone();
    for node in fed.nodes.iter_mut() {
        node.serve();
    }
    let offer = json!({
        "queue": "gi",
        "slides": [slide],
        "question": "Backlog: Barrett's biopsy, dysplasia?",
        "urgency": "routine",
    });
    let (leeds, bradford, harrogate) = (&fed.nodes[0], &fed.nodes[1], &fed.nodes[2]);
    let r = leeds.post(
        "/api/v1/offers",
        &[("content-type", "application/json")],
        offer.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", body(&r));
    let id = json_of(&r)["id"].as_str().unwrap().to_string();
    for node in [bradford, harrogate] {
        wait_until(Duration::from_secs(60), || {
            json_of(&node.get("/api/v1/offers"))["offers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o["id"] == id.as_str() && o["open"] == true)
        })
        .expect("the offer reaches every member");
    }
    let gi = |node: &Node| -> Value {
        json_of(&node.get("/api/v1/offers"))["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["queue"] == "gi")
            .cloned()
            .unwrap()
    };
    assert_eq!(gi(bradford)["open"], 1);
    // Both claim at the same moment.
    let claim = format!("/api/v1/offers/{id}/claim");
    std::thread::scope(|s| {
        for node in [bradford, harrogate] {
            let claim = &claim;
            s.spawn(move || {
                let r = node.post(claim, &[], b"");
                assert_eq!(r.status, 202, "{}", body(&r));
            });
        }
    });
    // The offerer records one taker; every member learns the same one.
    wait_until(Duration::from_secs(60), || {
        [leeds, bradford, harrogate]
            .iter()
            .all(|n| json_of(&n.get("/api/v1/offers"))["offers"][0]["referral"].is_string())
    })
    .expect("every member learns who took the case");
    let takers: Vec<Value> = [leeds, bradford, harrogate]
        .iter()
        .map(|n| json_of(&n.get("/api/v1/offers"))["offers"][0]["taken_by"].clone())
        .collect();
    assert!(takers.iter().all(|t| *t == takers[0]), "{takers:?}");
    let (winner, loser) = if takers[0] == "RAE" {
        (bradford, harrogate)
    } else {
        assert_eq!(takers[0], "RCD");
        (harrogate, bradford)
    };
    // The case is referred to the winner, for direct care, and to no one else.
    wait_until(Duration::from_secs(30), || {
        !listed(winner, "inbox", &[]).is_empty()
    })
    .expect("the winner receives the case");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(listed(winner, "inbox", &[]).len(), 1);
    assert!(listed(loser, "inbox", &[]).is_empty());
    assert_eq!(listed(leeds, "sent", &[]).len(), 1);
    let grants = run_ok(leeds.cmd().args(["grants", "--json"]));
    assert!(grants.contains("direct-care"), "{grants}");
    assert_eq!(gi(leeds)["open"], 0);
    assert_eq!(gi(leeds)["taken"], 1);
    // A claim after the case was taken is refused at once.
    let r = loser.post(&claim, &[], b"");
    assert_eq!(r.status, 409, "{}", body(&r));
}

/// An answered referral's marks (answered from the command line) over DICOMweb: at both trusts an annotation series in the
/// slide's study (found by QIDO, its metadata and instance by WADO-RS, the same file as the
/// API's), which dicom-microscopy-viewer, an independent viewer, draws over the slide.
#[test]
fn a_referrals_marks_are_served_over_dicomweb_and_drawn_by_a_dicom_viewer() {
    let mut fed = federation(&["RR8", "RAE"]);
    let slide = fed.slide.clone();
    // The viewer is served from its own origin (a random port): allow any.
    fed.nodes[0].edit_config("cors_origins = []", "cors_origins = [\"*\"]");
    fed.nodes[0].serve();
    fed.nodes[1].serve();
    let (leeds, bradford) = (&fed.nodes[0], &fed.nodes[1]);
    let id = refer(leeds, &slide, "2h");
    let detail = format!("/api/v1/referrals/{id}");
    wait_until(Duration::from_secs(30), || {
        bradford.get(&detail).status == 200
    })
    .expect("the referral reaches Bradford");
    let marks = json!([
        {"slide": slide, "shape": "point", "points": [[600.5, 400.5]], "text": "Mitosis"},
        {"slide": slide, "shape": "rectangle", "points": [[500.0, 300.0], [900.0, 700.0]], "text": "Focus"},
        {"slide": slide, "shape": "polygon", "points": [[1000.0, 800.0], [1400.0, 820.0], [1200.0, 1200.0]], "text": "DCIS"},
    ]);
    // Answered from Bradford's command line, the marks from a file.
    let file = bradford.data.join("marks.json");
    std::fs::write(&file, marks.to_string()).unwrap();
    let mut outside = marks.clone();
    outside[1]["points"][1] = json!([90_000.0, 700.0]);
    let bad = bradford.data.join("outside.json");
    std::fs::write(&bad, outside.to_string()).unwrap();
    let said = run_refused(
        bradford
            .cmd()
            .args(["referrals", "answer", &id, "--text", "x", "--marks"])
            .arg(&bad),
    );
    assert!(said.contains("annotation 2: it lies outside"), "{said}");
    run_ok(
        bradford
            .cmd()
            .args([
                "referrals",
                "answer",
                &id,
                "--text",
                "Clear margins.",
                "--marks",
            ])
            .arg(&file),
    );
    wait_until(Duration::from_secs(30), || {
        json_of(&leeds.get(&detail))["status"] == "answered"
    })
    .expect("the answer reaches Leeds");

    let manifest =
        json_of(&leeds.get(&format!("/api/v1/slides/{slide}/manifest")))["manifest"].clone();
    let study = manifest["study_uid"].as_str().unwrap().to_string();
    let slide_series = manifest["series_uid"].as_str().unwrap().to_string();
    let api_file = leeds.get(&format!("{detail}/annotations/{slide}")).body;
    let mut ann_series = String::new();
    for node in [leeds, bradford] {
        let found = node.get_with(
            &format!("/dicomweb/studies/{study}/series?Modality=ANN"),
            &[("accept", "application/dicom+json")],
        );
        assert_eq!(found.status, 200, "{}", body(&found));
        let found = json_of(&found);
        assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
        ann_series = found[0]["0020000E"]["Value"][0]
            .as_str()
            .unwrap()
            .to_string();
        let all = json_of(&node.get_with(
            &format!("/dicomweb/studies/{study}/series"),
            &[("accept", "application/dicom+json")],
        ));
        assert_eq!(
            all.as_array().unwrap().len(),
            2,
            "the slide and its marks: {all}"
        );
        let r = node.get_with(
            &format!("/dicomweb/studies/{study}/series/{ann_series}/metadata"),
            &[("accept", "application/dicom+json")],
        );
        assert_eq!(r.status, 200, "{}", body(&r));
        let metadata = json_of(&r);
        assert_eq!(
            metadata[0]["00080016"]["Value"][0],
            "1.2.840.10008.5.1.4.1.1.91.1"
        );
        assert_eq!(
            metadata[0]["006A0002"]["Value"].as_array().unwrap().len(),
            3
        );
        let r = node.get_with(
            &format!("/dicomweb/studies/{study}/series/{ann_series}"),
            &[("accept", "multipart/related; type=\"application/dicom\"")],
        );
        assert_eq!(r.status, 200, "{}", body(&r));
        assert_eq!(
            r.multipart_parts(),
            vec![api_file.clone()],
            "the same file as the API's"
        );
    }
    // An annotation series has no frames, pixel data or thumbnail.
    let ann_instance = json_of(&leeds.get(&format!(
        "/dicomweb/studies/{study}/series/{ann_series}/instances"
    )))[0]["00080018"]["Value"][0]
        .as_str()
        .unwrap()
        .to_string();
    for what in [
        format!("series/{ann_series}/thumbnail"),
        format!("series/{ann_series}/instances/{ann_instance}/frames/1"),
        format!("series/{ann_series}/instances/{ann_instance}/bulkdata/7FE00010"),
    ] {
        let r = leeds.get(&format!("/dicomweb/studies/{study}/{what}"));
        assert_eq!(r.status, 404, "{what}: {}", body(&r));
    }

    let artifacts = slidemesh_e2e::run_dicomweb_viewer_with_annotations(
        &format!("{}/dicomweb", leeds.url.as_deref().unwrap()),
        &study,
        &slide_series,
        Some((&ann_series, 3)),
        "dicomweb-viewer-annotations",
    );
    assert!(artifacts.join("dicomweb-viewer-annotations.png").is_file());
}
