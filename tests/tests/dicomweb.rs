//! DICOMweb against independent clients and by the standard's rules.
//!
//! - wsidicom (through its DICOMweb client) opens a slide from the owner's node and from a
//!   grantee's node (tiles streamed from the owner), reads regions, label, overview and
//!   thumbnail, and the pixels match what the generator encoded; dicomweb-client's QIDO-RS
//!   searches find the slide by the usual matching (`tests/python/check_wsidicom.py`).
//! - dicom-microscopy-viewer (npm), served from its own origin, renders a slide shared with
//!   the node in headless Chromium, overview and label included (CORS, rendered PNG).
//! - WADO-RS details: frames are the stored bytes, whole instances are the original files,
//!   unavailable transfer syntaxes are 406, bad frame lists 400/404, links follow the Host
//!   the client used, rendered thumbnails, CORS only for configured origins.

use serde_json::Value;
use slidemesh_e2e::federation::{federation, share, wait_for_shared};
use slidemesh_e2e::{Node, Response, SMALL, instance_files, synth, wsidicom_check};

fn check_through_dicomweb(generated: &Value, base: &str, work: &std::path::Path, what: &str) {
    let url = format!("{base}/dicomweb");
    let out = wsidicom_check(generated, work, &["--dicomweb".as_ref(), url.as_ref()]);
    assert!(
        out.status.success(),
        "{what}: wsidicom through DICOMweb failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn wsidicom_reads_local_and_shared_slides_through_dicomweb() {
    let mut fed = federation(&["RR8", "RAE"]);
    for node in fed.nodes.iter_mut() {
        // Checkpoint and co-sign audit logs every second rather than every minute.
        node.edit_config("audit_checkpoint_secs = 60", "audit_checkpoint_secs = 1");
        node.serve();
    }
    let owner = fed.nodes[0].url.clone().unwrap();
    check_through_dicomweb(&fed.generated, &owner, fed.work.path(), "local");

    // Before the grant, Bradford's DICOMweb knows nothing of the slide.
    let study = fed.generated["study_uid"].as_str().unwrap();
    let before = fed.nodes[1].get(&format!("/dicomweb/studies?StudyInstanceUID={study}"));
    assert_eq!(before.status, 200);
    assert_eq!(json(&before), Value::Array(vec![]));

    share(&fed.nodes[0], &fed.slide, "RAE");
    wait_for_shared(&fed.nodes[1], &fed.slide);
    let grantee = fed.nodes[1].url.clone().unwrap();
    check_through_dicomweb(&fed.generated, &grantee, fed.work.path(), "shared");
    let cached = fed.nodes[1].get_json("/api/v1/network")["cache"]["tiles"]
        .as_u64()
        .unwrap();
    assert!(cached > 0, "the grantee served frames without fetching any");
    // Each access is on both sides' audit logs: the owner's decisions, the grantee's receipts.
    let log = |node: &Node| -> Vec<Value> {
        slidemesh_e2e::run_ok(node.cmd().args(["audit", "show", "--json"]))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    slidemesh_e2e::wait_until(std::time::Duration::from_secs(10), || {
        log(&fed.nodes[1])
            .iter()
            .any(|e| e["entry"]["side"] == "received" && e["entry"]["action"] == "fetch_tiles")
    })
    .expect("the grantee logs the tiles it received");
    assert!(
        log(&fed.nodes[0])
            .iter()
            .any(|e| e["entry"]["side"] == "served"
                && e["entry"]["peer"] == "RAE"
                && e["entry"]["allowed"] == true)
    );

    // Whole instances of the shared slide, rebuilt by the grantee from the signed metadata
    // and verified frames, are DICOM files that ingest into a fresh node with exactly the
    // owner's frames.
    let series = fed.generated["series_uid"].as_str().unwrap();
    let retrieved = fed.nodes[1].get(&format!("/dicomweb/studies/{study}/series/{series}"));
    assert_eq!(
        retrieved.status,
        200,
        "{}",
        String::from_utf8_lossy(&retrieved.body)
    );
    let files = retrieved.multipart_parts();
    assert_eq!(
        files.len(),
        fed.generated["instances"].as_array().unwrap().len()
    );
    let rebuilt = fed.work.path().join("rebuilt");
    std::fs::create_dir_all(&rebuilt).unwrap();
    for (i, bytes) in files.iter().enumerate() {
        std::fs::write(rebuilt.join(format!("{i}.dcm")), bytes).unwrap();
    }
    let mut fresh = Node::init("RWY");
    let (code, report) = fresh.ingest(&[&rebuilt]);
    assert_eq!(code, 0, "rebuilt instances do not ingest: {report}");
    fresh.serve();
    let id = report["slides"][0]["slide_id"].as_str().unwrap();
    assert_eq!(fresh.level_tiles(id), fed.nodes[0].level_tiles(&fed.slide));
}

fn json(r: &Response) -> Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("invalid JSON ({e}): {}", String::from_utf8_lossy(&r.body)))
}

#[test]
fn wado_rs_follows_the_standard() {
    let tmp = tempfile::tempdir().unwrap();
    let slide_dir = tmp.path().join("slide");
    let generated = synth(&slide_dir, SMALL).remove(0);
    let mut node = Node::init("RR8");
    // Allow one viewer origin from a browser.
    node.edit_config(
        "cors_origins = []",
        "cors_origins = [\"http://viewer.example\"]",
    );
    let (code, report) = node.ingest(&[&slide_dir]);
    assert_eq!(code, 0, "{report}");
    let slide = report["slides"][0]["slide_id"]
        .as_str()
        .unwrap()
        .to_string();
    node.serve();

    let study = generated["study_uid"].as_str().unwrap();
    let series = generated["series_uid"].as_str().unwrap();
    let level0 = generated["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["flavor"] == "volume" && i["frames"].as_u64().unwrap() > 1)
        .expect("a tiled level");
    let uid = level0["sop_instance_uid"].as_str().unwrap();
    let instance = format!("/dicomweb/studies/{study}/series/{series}/instances/{uid}");

    // Frames: the stored bytes, the same the tile API serves for the manifest's tile ids.
    let manifest = node.get_json(&format!("/api/v1/slides/{slide}/manifest"))["manifest"].clone();
    let level = manifest["levels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["instance_uids"][0] == uid)
        .expect("level of the instance");
    let jpeg = "multipart/related; type=\"image/jpeg\"; transfer-syntax=1.2.840.10008.1.2.4.50";
    let frames = node.get_with(&format!("{instance}/frames/3,1"), &[("Accept", jpeg)]);
    assert_eq!(
        frames.status,
        200,
        "{}",
        String::from_utf8_lossy(&frames.body)
    );
    let got = frames.multipart_parts();
    assert_eq!(got.len(), 2);
    for (bytes, index) in got.iter().zip([2usize, 0]) {
        let tile = level["tiles"][index].as_str().unwrap();
        assert_eq!(
            blake3::hash(bytes).to_hex().as_str(),
            tile,
            "frame {} is not the stored tile",
            index + 1
        );
    }

    // A syntax the node would have to transcode to: 406 naming what it has.
    let j2k = "multipart/related; type=\"image/jp2\"; transfer-syntax=1.2.840.10008.1.2.4.90";
    let refused = node.get_with(&format!("{instance}/frames/1"), &[("Accept", j2k)]);
    assert_eq!(refused.status, 406);
    assert!(
        String::from_utf8_lossy(&refused.body).contains("1.2.840.10008.1.2.4.50"),
        "406 should say which syntax exists"
    );
    assert_eq!(node.get(&format!("{instance}/frames/0")).status, 404);
    assert_eq!(node.get(&format!("{instance}/frames/1,x")).status, 400);
    assert_eq!(node.get(&format!("{instance}/frames/99999")).status, 404);

    // Whole instance: the original file, byte for byte.
    let retrieved = node.get_with(
        &instance,
        &[("Accept", "multipart/related; type=\"application/dicom\"")],
    );
    assert_eq!(retrieved.status, 200);
    let files = retrieved.multipart_parts();
    let original = std::fs::read(level0["path"].as_str().unwrap()).unwrap();
    assert_eq!(files.len(), 1);
    assert!(
        files[0] == original,
        "retrieved instance differs from the original file"
    );
    let series_files = node
        .get(&format!("/dicomweb/studies/{study}/series/{series}"))
        .multipart_parts();
    assert_eq!(
        series_files.len(),
        generated["instances"].as_array().unwrap().len()
    );

    // Metadata: the instance's attributes, pixel data as a link under the Host asked for.
    let metadata = node.get_with(
        &format!("{instance}/metadata"),
        &[("Host", "localhost:8443")],
    );
    assert_eq!(metadata.status, 200);
    assert_eq!(
        metadata.header("content-type"),
        Some("application/dicom+json")
    );
    let metadata = json(&metadata);
    assert_eq!(metadata[0]["00080018"]["Value"][0], uid);
    let bulk = metadata[0]["7FE00010"]["BulkDataURI"].as_str().unwrap();
    assert_eq!(
        bulk,
        format!("http://localhost:8443{instance}/bulkdata/7FE00010")
    );

    // QIDO errors name the problem.
    let typo = node.get("/dicomweb/studies?PatientNmae=X");
    assert_eq!(typo.status, 400);
    assert!(String::from_utf8_lossy(&typo.body).contains("PatientNmae"));
    let xml = node.get_with("/dicomweb/studies", &[("Accept", "application/dicom+xml")]);
    assert_eq!(xml.status, 406);

    // Rendered: the slide's thumbnail as JPEG.
    let thumb = node.get(&format!(
        "/dicomweb/studies/{study}/series/{series}/thumbnail"
    ));
    assert_eq!(thumb.status, 200);
    assert_eq!(thumb.header("content-type"), Some("image/jpeg"));
    assert!(thumb.body.starts_with(&[0xFF, 0xD8]));
    let tiled = node.get(&format!("{instance}/rendered"));
    assert_eq!(
        tiled.status, 406,
        "a tiled level cannot render without decoding"
    );

    // CORS: the configured viewer origin may read; any other origin is not told it may.
    let allowed = node.get_with("/dicomweb/studies", &[("Origin", "http://viewer.example")]);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("http://viewer.example")
    );
    let other = node.get_with("/dicomweb/studies", &[("Origin", "http://evil.example")]);
    assert_eq!(other.header("access-control-allow-origin"), None);
}

#[test]
fn stow_rs_ingests_what_a_client_sends_and_refuses_bad_parts() {
    let tmp = tempfile::tempdir().unwrap();
    let slide_dir = tmp.path().join("slide");
    let generated = synth(&slide_dir, SMALL).remove(0);
    let mut node = Node::init("RR8");
    let base = node.serve();

    // An independent client (dicomweb-client) stores every file of the slide.
    let files = instance_files(&generated);
    let script = "import sys, json, pydicom\n\
                  from dicomweb_client.api import DICOMwebClient\n\
                  c = DICOMwebClient(sys.argv[1])\n\
                  r = c.store_instances([pydicom.dcmread(p) for p in sys.argv[2:]])\n\
                  print(json.dumps({'stored': len(r.get('ReferencedSOPSequence', [])), \
                  'failed': len(r.get('FailedSOPSequence', []))}))";
    let out = slidemesh_e2e::run_ok(
        std::process::Command::new(slidemesh_e2e::python())
            .args(["-c", script, &format!("{base}/dicomweb")])
            .args(&files),
    );
    let counts: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(counts["stored"], files.len(), "{out}");
    assert_eq!(counts["failed"], 0, "{out}");
    let slides = node.get_json("/api/v1/slides")["slides"].clone();
    assert_eq!(slides.as_array().unwrap().len(), 1, "{slides}");
    assert_eq!(slides[0]["series_uid"], generated["series_uid"]);
    let study = generated["study_uid"].as_str().unwrap();
    let found = json(&node.get(&format!("/dicomweb/studies/{study}/instances")));
    assert_eq!(found.as_array().unwrap().len(), files.len());

    // A truncated file is refused with a reason, and nothing of it is stored.
    let other = synth(&tmp.path().join("other"), &["--seed", "9", "--size", "2MB"]).remove(0);
    let level = other["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["flavor"] == "volume")
        .unwrap();
    let whole = std::fs::read(level["path"].as_str().unwrap()).unwrap();
    let truncated = &whole[..whole.len() * 2 / 3];
    let boundary = "test-boundary-7f3a";
    let mut body = format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").into_bytes();
    body.extend_from_slice(truncated);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let content_type =
        format!("multipart/related; type=\"application/dicom\"; boundary={boundary}");
    let refused = node.post(
        "/dicomweb/studies",
        &[("Content-Type", &content_type)],
        &body,
    );
    assert_eq!(
        refused.status,
        409,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    let answer = json(&refused);
    assert_eq!(
        answer["00081198"]["Value"][0]["00081197"]["Value"][0],
        0xC000
    );
    let warning = refused.header("warning").unwrap_or_default().to_string();
    assert!(
        warning.contains("truncated") || warning.contains("end"),
        "{warning}"
    );
    assert_eq!(
        node.get_json("/api/v1/slides")["slides"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // The wrong study in the path: refused as a mismatch.
    let mut good = format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").into_bytes();
    good.extend_from_slice(&whole);
    good.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mismatch = node.post(
        "/dicomweb/studies/1.2.3.4",
        &[("Content-Type", &content_type)],
        &good,
    );
    assert_eq!(mismatch.status, 409);
    assert_eq!(
        json(&mismatch)["00081198"]["Value"][0]["00081197"]["Value"][0],
        0xA900
    );
    // Not multipart at all (a small body: the node answers before reading it).
    let plain = node.post(
        "/dicomweb/studies",
        &[("Content-Type", "application/dicom")],
        &whole[..1024],
    );
    assert_eq!(plain.status, 415);
    // Staging folders are gone once each request is answered.
    let leftovers = node.staging_leftovers();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
}

#[test]
fn a_dicomweb_viewer_renders_a_shared_slide_from_the_grantees_node() {
    let mut fed = federation(&["RR8", "RAE"]);
    // The viewer is served from its own origin (a random port): allow any.
    fed.nodes[1].edit_config("cors_origins = []", "cors_origins = [\"*\"]");
    for node in fed.nodes.iter_mut() {
        node.serve();
    }
    share(&fed.nodes[0], &fed.slide, "RAE");
    wait_for_shared(&fed.nodes[1], &fed.slide);
    let dicomweb = format!("{}/dicomweb", fed.nodes[1].url.clone().unwrap());
    let artifacts = slidemesh_e2e::run_dicomweb_viewer_test(
        &dicomweb,
        fed.generated["study_uid"].as_str().unwrap(),
        fed.generated["series_uid"].as_str().unwrap(),
        "dicomweb-viewer",
    );
    assert!(artifacts.join("dicomweb-viewer-zoomed.png").is_file());
}
