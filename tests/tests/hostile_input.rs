//! What a running node does with files crafted to hurt it or to change what it holds.
//!
//! - Headers whose numbers would size gigabytes of memory (four billion frames, a 100,000
//!   pixel tile, a 4-billion-pixel-square matrix, element and fragment lengths past the end
//!   of the file), sent by STOW-RS: each is refused with a reason naming the attribute, the
//!   node's memory stays small, and it goes on serving the slide it holds.
//! - Consent and identity: a LABEL instance received for a care-only slide, carrying
//!   research consent (GRU) in its Consent for Clinical Trial Use Sequence, leaves the
//!   recorded consent as it was; a new slide received with it gets none; an instance with
//!   another patient's identity is refused, by STOW-RS and by `slidemesh ingest` alike.
//!   Files the operator ingests still bring their DICOM consent where none is recorded.

use std::path::{Path, PathBuf};

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use serde_json::Value;
use slidemesh_e2e::{Node, Response, SMALL, instance_files, run_ok, synth};

const BOUNDARY: &str = "hostile-input-5c1e";

/// POSTs DICOM files to `/dicomweb/studies` as one STOW-RS request.
fn stow(node: &Node, files: &[&[u8]]) -> Response {
    let mut body = Vec::new();
    for file in files {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(file);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    let content_type =
        format!("multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}");
    node.post(
        "/dicomweb/studies",
        &[("Content-Type", content_type.as_str())],
        &body,
    )
}

/// A copy of `from` changed by `edit`, written to `to`; returns its bytes.
fn edited(from: &str, to: &Path, edit: impl FnOnce(&mut InMemDicomObject)) -> Vec<u8> {
    let mut obj = dicom_object::open_file(from).expect("a generated file opens");
    edit(&mut obj);
    obj.write_to_file(to).expect("write the edited file");
    std::fs::read(to).unwrap()
}

fn put(obj: &mut InMemDicomObject, tag: dicom_core::Tag, vr: VR, value: PrimitiveValue) {
    obj.put(DataElement::new(tag, vr, value));
}

/// Replaces the 4 bytes after the first occurrence of `marker` (and `skip` bytes more).
fn patched(mut bytes: Vec<u8>, marker: &[u8], skip: usize, value: u32) -> Vec<u8> {
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("marker in file")
        + marker.len()
        + skip;
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    bytes
}

/// The generated instance of a flavour with the fewest bytes.
fn smallest(generated: &Value, flavor: &str) -> String {
    generated["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["flavor"] == flavor)
        .min_by_key(|i| {
            std::fs::metadata(i["path"].as_str().unwrap())
                .unwrap()
                .len()
        })
        .unwrap_or_else(|| panic!("no {flavor} instance in {generated}"))["path"]
        .as_str()
        .unwrap()
        .to_string()
}

fn slides(node: &Node) -> Vec<Value> {
    node.get_json("/api/v1/slides")["slides"]
        .as_array()
        .unwrap()
        .clone()
}

/// The server's peak memory (VmHWM), in bytes.
fn peak_memory(node: &Node) -> u64 {
    let pid = node.serve_info()["pid"]
        .as_u64()
        .expect("pid in serve.json");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

/// Asserts the STOW-RS answer refused every part as not understood, and its warning
/// names `needle`.
fn assert_refused(what: &str, answer: &Response, needle: &str) {
    let body = String::from_utf8_lossy(&answer.body);
    assert_eq!(answer.status, 409, "{what}: {body}");
    let json: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(
        json["00081198"]["Value"][0]["00081197"]["Value"][0], 0xC000,
        "{what}: {json}"
    );
    assert!(
        json.get("00081199").is_none(),
        "{what}: nothing stored: {json}"
    );
    let warning = answer.header("warning").unwrap_or_default();
    assert!(
        warning.contains(needle),
        "{what}: the refusal names {needle}: {warning}"
    );
}

#[test]
fn crafted_headers_sent_by_stow_rs_are_refused_and_the_node_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let generated = synth(&tmp.path().join("slide"), SMALL).remove(0);
    let mut node = Node::init("RR8");
    let (code, report) = node.ingest(&[&tmp.path().join("slide")]);
    assert_eq!(code, 0, "{report}");
    let slide = report["slides"][0]["slide_id"]
        .as_str()
        .unwrap()
        .to_string();
    node.serve();
    let tile = node.level_tiles(&slide)[0][0].as_str().unwrap().to_string();
    let before = node.get(&format!("/api/v1/slides/{slide}/tiles/{tile}"));
    assert_eq!(before.status, 200);

    let level = smallest(&generated, "volume");
    let out = |name: &str| -> PathBuf { tmp.path().join(name) };
    let mut hostile: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "four billion frames",
            edited(&level, &out("frames.dcm"), |o| {
                put(o, tags::NUMBER_OF_FRAMES, VR::IS, "4294967295".into())
            }),
            "NumberOfFrames",
        ),
        (
            "a tile of 100,000 rows",
            edited(&level, &out("rows.dcm"), |o| {
                put(o, tags::ROWS, VR::UL, PrimitiveValue::from(100_000u32))
            }),
            "Rows",
        ),
        (
            "a pixel matrix of 4 billion squared",
            edited(&level, &out("matrix.dcm"), |o| {
                put(
                    o,
                    tags::TOTAL_PIXEL_MATRIX_COLUMNS,
                    VR::UL,
                    PrimitiveValue::from(u32::MAX),
                );
                put(
                    o,
                    tags::TOTAL_PIXEL_MATRIX_ROWS,
                    VR::UL,
                    PrimitiveValue::from(u32::MAX),
                );
            }),
            "TotalPixelMatrix",
        ),
    ];
    let original = std::fs::read(&level).unwrap();
    // The ICC profile (OB, inside the Optical Path Sequence) claims nearly 4 GiB.
    hostile.push((
        "an element longer than the file",
        patched(
            original.clone(),
            b"\x28\x00\x00\x20OB\x00\x00",
            0,
            0xFFFF_FFF0,
        ),
        "ICCProfile",
    ));
    // The first fragment after the Basic Offset Table claims 2 GiB (the pixel data lies
    // about its length); the offset table item's own length says where it starts.
    let pixel_data = b"\xE0\x7F\x10\x00OB\x00\x00\xFF\xFF\xFF\xFF\xFE\xFF\x00\xE0";
    let at = original
        .windows(pixel_data.len())
        .position(|w| w == pixel_data)
        .expect("encapsulated pixel data")
        + pixel_data.len();
    let bot_len = u32::from_le_bytes(original[at..at + 4].try_into().unwrap()) as usize;
    hostile.push((
        "a fragment longer than any tile",
        patched(original.clone(), pixel_data, 4 + bot_len + 4, 0x7FFF_FFF0),
        "fragment",
    ));

    for (what, bytes, needle) in &hostile {
        let answer = stow(&node, &[bytes]);
        assert_refused(what, &answer, needle);
        // Still serving, the same tile, the same bytes.
        let again = node.get(&format!("/api/v1/slides/{slide}/tiles/{tile}"));
        assert_eq!(again.status, 200, "{what}: the node stopped serving");
        assert_eq!(again.body, before.body, "{what}");
    }
    // All of them in one request: each part refused, nothing stored.
    let all: Vec<&[u8]> = hostile.iter().map(|(_, b, _)| b.as_slice()).collect();
    let answer = stow(&node, &all);
    assert_eq!(answer.status, 409);
    let json: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(
        json["00081198"]["Value"].as_array().unwrap().len(),
        hostile.len()
    );
    assert_eq!(slides(&node).len(), 1);
    assert!(node.staging_leftovers().is_empty());
    // Nothing was sized by the lies: the server never grew anywhere near a gigabyte.
    let peak = peak_memory(&node);
    assert!(peak < 1 << 30, "server peak memory {peak} bytes");
}

/// A Consent for Clinical Trial Use Sequence giving research consent (PUBLIC_RELEASE: GRU).
fn research_consent(obj: &mut InMemDicomObject) {
    let mut item = InMemDicomObject::new_empty();
    item.put(DataElement::new(
        tags::DISTRIBUTION_TYPE,
        VR::CS,
        "PUBLIC_RELEASE",
    ));
    item.put(DataElement::new(
        tags::CONSENT_FOR_DISTRIBUTION_FLAG,
        VR::CS,
        "YES",
    ));
    obj.put(DataElement::new(
        tags::CONSENT_FOR_CLINICAL_TRIAL_USE_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(vec![item]),
    ));
}

/// A copy of the generated `file` as a new instance of its series (UID + `suffix`).
fn new_instance(
    file: &str,
    to: &Path,
    suffix: &str,
    edit: impl FnOnce(&mut InMemDicomObject),
) -> Vec<u8> {
    edited(file, to, |o| {
        let uid = o
            .element(tags::SOP_INSTANCE_UID)
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches('\0')
            .to_string();
        put(
            o,
            tags::SOP_INSTANCE_UID,
            VR::UI,
            format!("{uid}.{suffix}").into(),
        );
        edit(o)
    })
}

fn consent_codes(node: &Node, slide: &str) -> Value {
    let out = run_ok(node.cmd().args(["consent", slide, "--json"]));
    serde_json::from_str::<Value>(&out).unwrap()["consent"]["codes"].clone()
}

fn slide_of(node: &Node, series: &str) -> String {
    slides(node)
        .into_iter()
        .find(|s| s["series_uid"] == series)
        .unwrap_or_else(|| panic!("no slide of series {series}"))["slide_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A node holding one generated slide (care-only consent, as ingest records by default):
/// what generated it, its series UID, the node and the slide's id.
fn care_only_slide(tmp: &Path) -> (Value, String, Node, String) {
    let dir = tmp.join("care");
    let generated = synth(&dir, SMALL).remove(0);
    let series = generated["series_uid"].as_str().unwrap().to_string();
    let node = Node::init("RR8");
    let (code, report) = node.ingest(&[&dir]);
    assert_eq!(code, 0, "{report}");
    let slide = report["slides"][0]["slide_id"]
        .as_str()
        .unwrap()
        .to_string();
    (generated, series, node, slide)
}

#[test]
fn received_instances_never_change_consent_or_patient_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let (generated, series, mut node, slide) = care_only_slide(tmp.path());
    assert_eq!(consent_codes(&node, &slide), serde_json::json!(["CC"]));
    node.serve();

    // A LABEL instance of the slide's series carrying research consent: stored (it is a
    // valid instance), but the slide stays care-only.
    let label = smallest(&generated, "label");
    let with_consent = new_instance(&label, &tmp.path().join("consent.dcm"), "7", |o| {
        research_consent(o)
    });
    let answer = stow(&node, &[&with_consent]);
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let extended = slide_of(&node, &series);
    assert_ne!(extended, slide, "the slide gained an instance");
    assert_eq!(consent_codes(&node, &extended), serde_json::json!(["CC"]));
    let research = run_ok(node.cmd().args([
        "policy",
        "test",
        "--trust",
        "RAE",
        "--purpose",
        "research",
        "--slide",
        &extended,
        "--reference",
        "REC 1",
    ]));
    assert!(research.starts_with("DENY"), "{research}");

    // Another patient's instance for the series: refused, naming the attribute (never the
    // stored value), and the slide is unchanged.
    for (attribute, tag, vr, value) in [
        ("PatientID", tags::PATIENT_ID, VR::LO, "1111111111"),
        ("PatientName", tags::PATIENT_NAME, VR::PN, "INTRUDER^EVE"),
        ("AccessionNumber", tags::ACCESSION_NUMBER, VR::SH, "X999"),
    ] {
        let other = new_instance(
            &label,
            &tmp.path().join(format!("{attribute}.dcm")),
            "8",
            |o| put(o, tag, vr, value.into()),
        );
        let answer = stow(&node, &[&other]);
        assert_refused(attribute, &answer, attribute);
        assert_eq!(slide_of(&node, &series), extended, "{attribute}");
    }

    // A new slide received with research consent in every file: no consent is recorded.
    let received = tmp.path().join("received");
    let second = synth(&received, &[SMALL, &["--seed", "21"]].concat()).remove(0);
    let files: Vec<Vec<u8>> = instance_files(&second)
        .iter()
        .map(|f| edited(f, &PathBuf::from(f), research_consent))
        .collect();
    let parts: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
    let answer = stow(&node, &parts);
    assert_eq!(answer.status, 200);
    let second_slide = slide_of(&node, second["series_uid"].as_str().unwrap());
    assert_eq!(
        consent_codes(&node, &second_slide),
        serde_json::json!(["CC"])
    );
    node.stop();

    // The operator's own files: DICOM consent still fills a series with no record...
    let operator = tmp.path().join("operator");
    let third = synth(&operator, &[SMALL, &["--seed", "22"]].concat()).remove(0);
    for f in instance_files(&third) {
        edited(&f, &PathBuf::from(&f), research_consent);
    }
    let (code, report) = node.ingest(&[&operator]);
    assert_eq!(code, 0, "{report}");
    let third_slide = report["slides"][0]["slide_id"].as_str().unwrap();
    assert_eq!(
        consent_codes(&node, third_slide),
        serde_json::json!(["GRU"])
    );
    // ...but another patient's file for a stored series is refused there too.
    let conflicting = tmp.path().join("conflicting");
    std::fs::create_dir(&conflicting).unwrap();
    new_instance(&label, &conflicting.join("label.dcm"), "9", |o| {
        put(o, tags::PATIENT_ID, VR::LO, "2222222222".into())
    });
    let (code, report) = node.ingest(&[&conflicting]);
    assert_eq!(code, 2, "{report}");
    assert!(report.to_string().contains("PatientID differs"), "{report}");
}

#[test]
fn instances_pushed_by_c_store_never_change_consent_or_patient_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let (generated, series, mut node, slide) = care_only_slide(tmp.path());
    node.edit_config(
        "calling_ae_titles = []",
        "calling_ae_titles = [\"SCANNER1\"]",
    );
    node.serve_with(&[], &["--dimse", "127.0.0.1:0"]);
    let address = node.serve_info()["dimse"].as_str().unwrap().to_string();
    let (host, port) = address.rsplit_once(':').unwrap();
    let push = |file: &Path| {
        let out = slidemesh_e2e::storescu(host, port, &[file]);
        assert!(
            out.status.success(),
            "storescu: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let wait_for_change = |from: &str| -> String {
        slidemesh_e2e::wait_until(std::time::Duration::from_secs(20), || {
            slide_of(&node, &series) != from
        })
        .expect("the pushed instance is ingested after the association is released");
        slide_of(&node, &series)
    };

    // Another patient's instance first (acknowledged on receipt, refused by ingest), then
    // in a second association a LABEL with research consent. Batches ingest one at a
    // time, in order: once the second has extended the slide, the first was decided.
    let label = smallest(&generated, "label");
    let intruder = tmp.path().join("intruder.dcm");
    new_instance(&label, &intruder, "8", |o| {
        put(o, tags::PATIENT_ID, VR::LO, "1111111111".into())
    });
    push(&intruder);
    let with_consent = tmp.path().join("consent.dcm");
    new_instance(&label, &with_consent, "7", research_consent);
    push(&with_consent);
    let extended = wait_for_change(&slide);
    assert_eq!(consent_codes(&node, &extended), serde_json::json!(["CC"]));
    let manifest =
        node.get_json(&format!("/api/v1/slides/{extended}/manifest"))["manifest"].clone();
    let uids: Vec<&str> = manifest["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["sop_instance_uid"].as_str().unwrap())
        .collect();
    assert!(uids.iter().any(|u| u.ends_with(".7")), "{uids:?}");
    assert!(
        !uids.iter().any(|u| u.ends_with(".8")),
        "another patient's instance joined the slide: {uids:?}"
    );
    assert!(node.staging_leftovers().is_empty());
}
