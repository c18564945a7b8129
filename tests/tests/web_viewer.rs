//! The web UI in a real browser: headless Chromium (driven by playwright-core through
//! tests/browser/viewer.test.mjs) opens a real node's slide list, opens a slide in the
//! OpenSeadragon viewer, zooms to full resolution, and checks tiles loaded and rendered.
//! Screenshots are kept in $SLIDEMESH_ARTIFACTS (default target/test-artifacts).

use slidemesh_e2e::{Node, run_viewer_test, synth};

#[test]
fn viewer_opens_zooms_and_renders_tiles_in_headless_chromium() {
    let work = tempfile::tempdir().unwrap();
    synth(
        &work.path().join("slide"),
        &[
            "--width", "6000", "--height", "4000", "--tile", "256", "--seed", "11",
        ],
    );
    let mut node = Node::init("RR8");
    let (code, report) = node.ingest(&[&work.path().join("slide")]);
    assert_eq!(code, 0, "{report:#}");
    let url = node.serve();

    let artifacts = run_viewer_test(&url, None, "");
    assert!(
        artifacts.join("viewer-zoomed.png").is_file(),
        "screenshot kept"
    );
}
