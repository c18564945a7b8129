//! Remote viewing in a real browser: the owner (Leeds) shares a slide with Bradford, and
//! headless Chromium opens it in *Bradford's* web UI, zooms in, and checks that tiles
//! streamed from Leeds's node were drawn. Screenshots go to $SLIDEMESH_ARTIFACTS/shared.

use std::path::PathBuf;
use std::process::Command;

use slidemesh_e2e::federation::{federation, share, wait_for_shared};

#[test]
fn a_shared_slide_opens_and_renders_in_the_grantees_viewer() {
    let browser_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "tests/browser/node_modules is missing: run scripts/setup (the README's test command does)"
    );
    let mut fed = federation(&["RR8", "RAE"]);
    for node in fed.nodes.iter_mut() {
        node.serve();
    }
    share(&fed.nodes[0], &fed.slide, "RAE");
    wait_for_shared(&fed.nodes[1], &fed.slide);

    let artifacts = std::env::var("SLIDEMESH_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts")
        })
        .join("shared");
    std::fs::create_dir_all(&artifacts).unwrap();
    let out = Command::new("node")
        .arg("--test")
        .arg("viewer.test.mjs")
        .current_dir(&browser_dir)
        .env("SLIDEMESH_URL", fed.nodes[1].url.as_deref().unwrap())
        .env("SLIDEMESH_SLIDE_ID", &fed.slide)
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
    // The tiles the browser drew came from the owner through the grantee's cache.
    let status = fed.nodes[1].get_json("/api/v1/network");
    assert!(
        status["cache"]["tiles"].as_u64().unwrap() > 0,
        "the grantee cached no remote tiles: {status}"
    );
    assert!(artifacts.join("viewer-zoomed.png").is_file());
}
