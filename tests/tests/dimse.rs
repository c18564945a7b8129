//! DIMSE with a real, independent toolkit: dcmtk's `echoscu` and `storescu` associate with
//! a node's C-ECHO/C-STORE SCP. Only the configured AE titles get in; a slide pushed by
//! `storescu` is ingested when the association is released, with exactly the frames the
//! same files give through `slidemesh ingest`.

use slidemesh_e2e::{Node, SMALL, dcmtk, instance_files, run, storescu, synth};

#[test]
fn dcmtk_echoes_and_pushes_a_slide_that_is_ingested() {
    let tmp = tempfile::tempdir().unwrap();
    let slide_dir = tmp.path().join("slide");
    let generated = synth(&slide_dir, SMALL).remove(0);
    let files = instance_files(&generated);

    let mut node = Node::init("RR8");
    let config_path = node.data.join("config.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    assert!(config.contains("calling_ae_titles = []"), "{config}");
    std::fs::write(
        &config_path,
        config.replace(
            "calling_ae_titles = []",
            "calling_ae_titles = [\"SCANNER1\"]",
        ),
    )
    .unwrap();
    node.serve_with(&[], &["--dimse", "127.0.0.1:0"]);
    let info = node.serve_info();
    let address = info["dimse"].as_str().expect("dimse address in serve.json");
    let (host, port) = address.rsplit_once(':').unwrap();
    assert_eq!(info["ae_title"], "SLIDEMESH");

    let echo = |calling: &str, called: &str| {
        run(dcmtk("echoscu").args(["-aet", calling, "-aec", called, host, port]))
            .status
            .success()
    };
    assert!(
        echo("SCANNER1", "SLIDEMESH"),
        "C-ECHO from a listed scanner"
    );
    assert!(
        !echo("SCANNER1", "OTHERNODE"),
        "another called AE title was accepted"
    );
    assert!(
        !echo("INTRUDER", "SLIDEMESH"),
        "an unlisted calling AE title was accepted"
    );

    // Push the slide: the files' own transfer syntax (JPEG baseline) is proposed.
    let pushed = storescu(host, port, &files);
    assert!(
        pushed.status.success(),
        "storescu failed:\n{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    slidemesh_e2e::wait_until(std::time::Duration::from_secs(20), || {
        !node.get_json("/api/v1/slides")["slides"]
            .as_array()
            .unwrap()
            .is_empty()
    })
    .expect("the pushed slide is ingested after the association is released");
    let slides = node.get_json("/api/v1/slides")["slides"].clone();
    assert_eq!(slides.as_array().unwrap().len(), 1, "{slides}");
    assert_eq!(slides[0]["series_uid"], generated["series_uid"]);
    let received_id = slides[0]["slide_id"].as_str().unwrap();
    let received =
        node.get_json(&format!("/api/v1/slides/{received_id}/manifest"))["manifest"].clone();
    assert_eq!(received["instances"].as_array().unwrap().len(), files.len());

    // The same files through the CLI give the same frames (tile ids), level by level.
    let mut reference = Node::init("RR8");
    let (code, report) = reference.ingest(&[&slide_dir]);
    assert_eq!(code, 0, "{report}");
    reference.serve();
    let id = report["slides"][0]["slide_id"].as_str().unwrap();
    assert_eq!(node.level_tiles(received_id), reference.level_tiles(id));

    // Nothing is left in staging.
    let leftovers = node.staging_leftovers();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
}

/// `[dimse]` limits: associations over `max_associations` are closed as they arrive (a
/// connection that never associates holds its place until it goes), and an association
/// sending more than `max_bytes_per_association` is aborted; the receiver keeps serving.
#[test]
fn a_sender_gets_only_its_share_of_the_dicom_receiver() {
    let tmp = tempfile::tempdir().unwrap();
    let generated = synth(&tmp.path().join("slide"), SMALL).remove(0);
    let files = instance_files(&generated);
    let mut node = Node::init("RR8");
    node.edit_config(
        "calling_ae_titles = []",
        "calling_ae_titles = [\"SCANNER1\"]",
    );
    node.edit_config("max_associations = 16", "max_associations = 1");
    node.edit_config(
        "max_bytes_per_association = 68719476736",
        "max_bytes_per_association = 20000",
    );
    node.serve_with(&[], &["--dimse", "127.0.0.1:0"]);
    let address = node.serve_info()["dimse"].as_str().unwrap().to_string();
    let (host, port) = address.rsplit_once(':').unwrap();
    let echo = || {
        run(dcmtk("echoscu").args(["-aet", "SCANNER1", "-aec", "SLIDEMESH", host, port]))
            .status
            .success()
    };
    assert!(echo(), "C-ECHO within the limits");

    // A connection that never associates holds the one place: once it is seen to stay
    // open (the echo's association may still be ending, and take the place first).
    let holder = (0..20)
        .find_map(|_| {
            let mut holder = std::net::TcpStream::connect(&address).unwrap();
            holder
                .set_read_timeout(Some(std::time::Duration::from_millis(300)))
                .unwrap();
            let mut byte = [0u8; 1];
            let open = matches!(
                std::io::Read::read(&mut holder, &mut byte),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
            );
            open.then_some(holder)
        })
        .expect("a connection takes the receiver's one place");
    assert!(!echo(), "a second association while one is in progress");
    drop(holder);
    slidemesh_e2e::wait_until(std::time::Duration::from_secs(10), echo)
        .expect("the receiver takes associations again once the first goes");

    // The echo that found the place free may not have left it yet when storescu asks: an
    // association refused up front is asked again (the assertion below is about the one
    // that is accepted).
    let mut pushed = storescu(host, port, &files);
    for _ in 0..10 {
        if !String::from_utf8_lossy(&pushed.stderr).contains("Association Request Failed") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        pushed = storescu(host, port, &files);
    }
    assert!(
        !pushed.status.success(),
        "an association over max_bytes_per_association completed"
    );
    let said = String::from_utf8_lossy(&pushed.stderr);
    // Associated, then cut off while storing (dcmtk sees the abort, or a broken pipe when
    // the node closed first): not refused up front for another reason.
    assert!(said.contains("Store Failed"), "storescu: {said}");
    assert!(echo(), "the receiver keeps serving after aborting one");
}
