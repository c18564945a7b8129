//! The web UI in a real browser: headless Chromium (driven by playwright-core through
//! tests/browser/viewer.test.mjs) opens a real node's slide list, opens a slide in the
//! OpenSeadragon viewer, zooms to full resolution, and checks tiles loaded and rendered.
//! Screenshots are kept in $SLIDEMESH_ARTIFACTS (default target/test-artifacts).

use std::path::PathBuf;
use std::process::Command;

use slidemesh_e2e::{Node, synth};

#[test]
fn viewer_opens_zooms_and_renders_tiles_in_headless_chromium() {
    let browser_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "tests/browser/node_modules is missing: run scripts/setup (the README's test command does)"
    );
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

    let artifacts = std::env::var("SLIDEMESH_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts")
        });
    std::fs::create_dir_all(&artifacts).unwrap();
    let out = Command::new("node")
        .arg("--test")
        .arg("viewer.test.mjs")
        .current_dir(&browser_dir)
        .env("SLIDEMESH_URL", &url)
        .env("SLIDEMESH_ARTIFACTS", &artifacts)
        .output()
        .expect("run node (Node.js) for the browser test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser test failed:\n{stdout}\n{}\nscreenshots in {}",
        String::from_utf8_lossy(&out.stderr),
        artifacts.display()
    );
    assert!(
        artifacts.join("viewer-zoomed.png").is_file(),
        "screenshot kept"
    );
}
