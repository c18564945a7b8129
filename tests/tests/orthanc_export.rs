//! Files written by an archive nobody here wrote: Orthanc stores a slide, makes an
//! anonymised copy (the research-export workflow: new UIDs, identifying attributes removed,
//! every file re-written by Orthanc) and exports it through its DICOMweb plugin's WADO-RS
//! (`multipart/related` of Part 10 files). Those files must ingest into a node as a slide
//! with exactly the frames of the original files, level by level.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use slidemesh_e2e::{Node, SMALL, free_port, get, instance_files, synth, wait_until};

const ORTHANC: &str = "/usr/sbin/Orthanc";
const DICOMWEB_PLUGIN: &str = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so";

/// Orthanc on a free loopback port with its storage in `dir`; killed when dropped.
struct Orthanc {
    child: Child,
    url: String,
}

impl Orthanc {
    fn start(dir: &Path) -> Orthanc {
        assert!(
            Path::new(ORTHANC).is_file() && Path::new(DICOMWEB_PLUGIN).is_file(),
            "Orthanc and its DICOMweb plugin are missing: run scripts/setup (apt-get install \
             orthanc orthanc-dicomweb)"
        );
        let port = free_port();
        let config = serde_json::json!({
            "Name": "slidemesh-test",
            "StorageDirectory": dir.join("storage"),
            "IndexDirectory": dir.join("index"),
            "HttpPort": port,
            "DicomServerEnabled": false,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": { "Enable": true, "Root": "/dicom-web/" },
        });
        let path = dir.join("orthanc.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let child = Command::new(ORTHANC)
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start Orthanc");
        let url = format!("http://127.0.0.1:{port}");
        let probe = format!("{url}/system");
        wait_until(Duration::from_secs(30), || ureq::get(&probe).call().is_ok())
            .expect("Orthanc answers");
        Orthanc { child, url }
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn files_exported_by_orthanc_ingest_with_the_same_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let generated = synth(&tmp.path().join("slide"), SMALL).remove(0);
    let files: Vec<PathBuf> = instance_files(&generated)
        .into_iter()
        .map(PathBuf::from)
        .collect();
    let orthanc = Orthanc::start(tmp.path());
    let mut orthanc_study = String::new();
    for file in &files {
        let stored = slidemesh_e2e::post(
            &format!("{}/instances", orthanc.url),
            &[("Content-Type", "application/dicom")],
            &std::fs::read(file).unwrap(),
        );
        assert_eq!(stored.status, 200, "Orthanc refused {}", file.display());
        let answer: serde_json::Value = serde_json::from_slice(&stored.body).unwrap();
        orthanc_study = answer["ParentStudy"].as_str().unwrap().to_string();
    }
    let anonymised = slidemesh_e2e::post(
        &format!("{}/studies/{orthanc_study}/anonymize", orthanc.url),
        &[("Content-Type", "application/json")],
        br#"{"Force": true}"#,
    );
    assert_eq!(
        anonymised.status,
        200,
        "{}",
        String::from_utf8_lossy(&anonymised.body)
    );
    let copy: serde_json::Value = serde_json::from_slice(&anonymised.body).unwrap();
    let copy = get(
        &format!("{}/studies/{}", orthanc.url, copy["ID"].as_str().unwrap()),
        &[],
    );
    let copy: serde_json::Value = serde_json::from_slice(&copy.body).unwrap();
    let study = copy["MainDicomTags"]["StudyInstanceUID"].as_str().unwrap();
    assert_ne!(study, generated["study_uid"].as_str().unwrap());
    let exported = get(
        &format!("{}/dicom-web/studies/{study}", orthanc.url),
        &[(
            "Accept",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
        )],
    );
    assert_eq!(
        exported.status,
        200,
        "{}",
        String::from_utf8_lossy(&exported.body)
    );
    let exported = exported.multipart_parts();
    assert_eq!(exported.len(), files.len());
    let export_dir = tmp.path().join("exported");
    std::fs::create_dir_all(&export_dir).unwrap();
    for (i, bytes) in exported.iter().enumerate() {
        std::fs::write(export_dir.join(format!("{i}.dcm")), bytes).unwrap();
    }
    // Orthanc re-encodes the files (its own file meta), so they are not the same objects.
    let originals: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(
        exported.iter().any(|e| !originals.contains(e)),
        "Orthanc returned the files unchanged; this test would prove nothing"
    );

    let mut from_orthanc = Node::init("RR8");
    let (code, report) = from_orthanc.ingest(&[&export_dir]);
    assert_eq!(code, 0, "{report}");
    let mut from_originals = Node::init("RR8");
    let (code, original_report) = from_originals.ingest(&[&tmp.path().join("slide")]);
    assert_eq!(code, 0, "{original_report}");
    from_orthanc.serve();
    from_originals.serve();
    assert_eq!(
        from_orthanc.level_tiles(report["slides"][0]["slide_id"].as_str().unwrap()),
        from_originals.level_tiles(original_report["slides"][0]["slide_id"].as_str().unwrap())
    );
}
