//! A trust's node end to end: init, ingest generated slides, serve them over HTTP, and check
//! every tile against its content address.

use std::collections::HashSet;
use std::path::Path;

use serde_json::Value;
use slidemesh_e2e::{Node, SMALL, files_under, run, synth};

fn ingest_ok(node: &Node, paths: &[&Path]) -> Value {
    let (code, report) = node.ingest(paths);
    assert_eq!(code, 0, "ingest failed: {report:#}");
    report
}

#[test]
fn ingested_slides_are_served_by_content_address() {
    let work = tempfile::tempdir().unwrap();
    let slides = work.path().join("slides");
    synth(&slides, &[SMALL, &["--count", "2", "--seed", "7"]].concat());
    let mut node = Node::init("RR8");

    let report = ingest_ok(&node, &[&slides]);
    assert_eq!(report["slides"].as_array().unwrap().len(), 2, "{report:#}");
    assert!(
        report["slides"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "added")
    );

    // Re-ingesting the same files is a no-op that says so.
    let again = ingest_ok(&node, &[&slides]);
    assert!(
        again["slides"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "already_present"),
        "{again:#}"
    );
    assert_eq!(
        report["slides"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| &s["slide_id"])
            .collect::<Vec<_>>(),
        again["slides"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| &s["slide_id"])
            .collect::<Vec<_>>(),
        "same files, same slide ids"
    );

    node.serve();
    let node_info = node.get_json("/api/v1/node");
    assert_eq!(node_info["trust"], "RR8");
    let list = node.get_json("/api/v1/slides");
    let listed = list["slides"].as_array().unwrap();
    assert_eq!(listed.len(), 2);

    for summary in listed {
        let id = summary["slide_id"].as_str().unwrap();
        assert_eq!(summary["owner"], "RR8");
        assert_eq!(summary["stain"], "H&E", "{summary:#}");
        let detail = node.get_json(&format!("/api/v1/slides/{id}"));
        let levels = detail["levels"].as_array().unwrap();
        assert!(levels.len() >= 3, "pyramid levels: {detail:#}");
        assert_eq!(levels[0]["width"], 2048);

        // Every tile of every level: served bytes hash to the manifest's tile id.
        let manifest = node.get_json(&format!("/api/v1/slides/{id}/manifest"));
        assert_eq!(manifest["slide_id"], id);
        for (index, level) in manifest["manifest"]["levels"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let cols = levels[index]["cols"].as_u64().unwrap();
            let tiles = level["tiles"].as_array().unwrap();
            for (frame, tile_id) in tiles.iter().enumerate() {
                let (col, row) = (frame as u64 % cols, frame as u64 / cols);
                let r = node.get(&format!(
                    "/api/v1/slides/{id}/levels/{index}/tiles/{col}/{row}"
                ));
                assert_eq!(r.status, 200);
                assert_eq!(r.header("content-type"), Some("image/jpeg"));
                assert_eq!(
                    blake3::hash(&r.body).to_hex().as_str(),
                    tile_id.as_str().unwrap()
                );
                assert_eq!(
                    r.header("etag"),
                    Some(format!("\"{}\"", tile_id.as_str().unwrap()).as_str())
                );
                assert!(r.header("cache-control").unwrap().contains("immutable"));
            }
        }
        let thumb = node.get(&format!("/api/v1/slides/{id}/thumbnail"));
        assert_eq!(thumb.status, 200);
        assert_eq!(&thumb.body[..2], &[0xFF, 0xD8], "thumbnail is a JPEG");
    }

    // By tile id, with conditional requests.
    let id = listed[0]["slide_id"].as_str().unwrap();
    let manifest = node.get_json(&format!("/api/v1/slides/{id}/manifest"));
    let tile = manifest["manifest"]["levels"][0]["tiles"][5]
        .as_str()
        .unwrap();
    let r = node.get(&format!("/api/v1/slides/{id}/tiles/{tile}"));
    assert_eq!(r.status, 200);
    assert_eq!(blake3::hash(&r.body).to_hex().as_str(), tile);
    let etag = r.header("etag").unwrap().to_string();
    assert_eq!(
        node.get_with(
            &format!("/api/v1/slides/{id}/tiles/{tile}"),
            &[("If-None-Match", &etag)]
        )
        .status,
        304
    );

    // Unknown and malformed ids.
    let unknown = "0".repeat(64);
    assert_eq!(
        node.get(&format!("/api/v1/slides/{id}/tiles/{unknown}"))
            .status,
        404
    );
    assert_eq!(node.get(&format!("/api/v1/slides/{unknown}")).status, 404);
    let bad = node.get(&format!("/api/v1/slides/{id}/tiles/not-a-tile-id"));
    assert_eq!(bad.status, 400);
    assert!(String::from_utf8_lossy(&bad.body).contains("malformed tile id"));
    assert_eq!(
        node.get(&format!("/api/v1/slides/{id}/levels/0/tiles/999/0"))
            .status,
        404
    );
    assert_eq!(
        node.get(&format!("/api/v1/slides/{id}/levels/99/tiles/0/0"))
            .status,
        404
    );
    assert_eq!(
        node.get(&format!("/api/v1/slides/{id}/levels/x/tiles/0/0"))
            .status,
        400
    );

    // The web UI and its OpenSeadragon bundle are served by the node itself.
    let index = node.get("/");
    assert_eq!(index.status, 200);
    assert!(
        index
            .header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(node.get(&format!("/view/{id}")).status, 200);
    assert_eq!(node.get("/assets/openseadragon.min.js").status, 200);

    assert!(node.stop().unwrap().success(), "graceful shutdown exits 0");
}

#[test]
fn offset_table_variants_and_split_fragments_give_identical_tiles() {
    // The same pixels stored with a Basic, an empty, and an Extended Offset Table, and with
    // each frame split into two fragments: each layout is indexed by its own rules, and the
    // tile ids (BLAKE3 of the frame bytes) must come out identical.
    let work = tempfile::tempdir().unwrap();
    let mut level_tiles: Vec<(String, Value)> = Vec::new();
    for (name, args) in [
        ("basic", vec!["--offset-table", "basic"]),
        ("empty", vec!["--offset-table", "empty"]),
        ("extended", vec!["--offset-table", "extended"]),
        (
            "split",
            vec!["--offset-table", "basic", "--fragments-per-frame", "2"],
        ),
        (
            "split-empty",
            vec!["--offset-table", "empty", "--fragments-per-frame", "2"],
        ),
    ] {
        let dir = work.path().join(name);
        synth(&dir, &[SMALL, &["--seed", "3"], &args[..]].concat());
        let mut node = Node::init("RAE");
        let report = ingest_ok(&node, &[&dir]);
        let id = report["slides"][0]["slide_id"]
            .as_str()
            .unwrap()
            .to_string();
        node.serve();
        let manifest = node.get_json(&format!("/api/v1/slides/{id}/manifest"));
        let tiles: Vec<Value> = manifest["manifest"]["levels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["tiles"].clone())
            .collect();
        level_tiles.push((name.to_string(), Value::Array(tiles)));
    }
    let (first_name, first) = &level_tiles[0];
    for (name, tiles) in &level_tiles[1..] {
        assert_eq!(
            tiles, first,
            "{name} and {first_name} index to different tiles"
        );
    }
}

#[test]
fn a_folder_with_bad_files_ingests_the_good_slides_and_names_the_rest() {
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("incoming");
    synth(&input.join("good"), SMALL);
    let bad_source = work.path().join("bad-source");
    synth(&bad_source, &[SMALL, &["--seed", "99"]].concat());
    std::fs::create_dir_all(input.join("bad")).unwrap();
    // A truncated level file from another slide, a text file, and an empty file.
    let level_file = files_under(&bad_source)
        .unwrap()
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let bytes = std::fs::read(&level_file).unwrap();
    std::fs::write(
        input.join("bad/truncated.dcm"),
        &bytes[..bytes.len() * 2 / 3],
    )
    .unwrap();
    std::fs::write(input.join("bad/readme.txt"), "not dicom").unwrap();
    std::fs::write(input.join("bad/empty.dcm"), b"").unwrap();

    let node = Node::init("RCD");
    let (code, report) = node.ingest(&[&input]);
    assert_eq!(code, 2, "partial failure exits 2: {report:#}");
    assert_eq!(
        report["slides"].as_array().unwrap().len(),
        1,
        "the good slide is ingested: {report:#}"
    );
    let failures = report["failures"].as_array().unwrap();
    let failed: HashSet<String> = failures
        .iter()
        .filter_map(|f| f["path"].as_str())
        .map(|p| {
            Path::new(p)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for name in ["truncated.dcm", "readme.txt", "empty.dcm"] {
        assert!(failed.contains(name), "{name} reported: {failures:#?}");
    }
    let truncated = failures
        .iter()
        .find(|f| f["path"].as_str().unwrap().ends_with("truncated.dcm"))
        .unwrap();
    assert!(
        truncated["error"].as_str().unwrap().contains("truncated"),
        "{truncated:#}"
    );
    // The store references only the good slide's files: nothing of the bad ones was kept.
    let good_files = files_under(&input.join("good")).unwrap().len();
    assert_eq!(
        files_under(&node.data.join("objects")).unwrap().len(),
        good_files
    );
    assert!(files_under(&node.data.join("tmp")).unwrap().is_empty());
}

#[test]
fn uninitialised_directory_is_refused_with_a_way_forward() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(std::process::Command::new(slidemesh_e2e::bin("slidemesh"))
        .arg("--data")
        .arg(dir.path().join("nothing"))
        .arg("slides"));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not a slidemesh data directory") && stderr.contains("slidemesh init"),
        "{stderr}"
    );
}

#[test]
fn ingest_while_serving_shows_new_slides_without_restart() {
    let work = tempfile::tempdir().unwrap();
    let mut node = Node::init("RWY");
    node.serve();
    assert_eq!(
        node.get_json("/api/v1/slides")["slides"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let dir = work.path().join("s");
    synth(&dir, SMALL);
    let report = ingest_ok(&node, &[&dir]);
    let id = report["slides"][0]["slide_id"]
        .as_str()
        .unwrap()
        .to_string();
    let list = node.get_json("/api/v1/slides");
    assert_eq!(list["slides"][0]["slide_id"], id.as_str());
    assert_eq!(
        node.get(&format!("/api/v1/slides/{id}/levels/0/tiles/0/0"))
            .status,
        200
    );
}
