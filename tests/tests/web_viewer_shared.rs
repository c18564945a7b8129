//! Remote viewing in a real browser: the owner (Leeds) shares a slide with Bradford, and
//! headless Chromium opens it in *Bradford's* web UI, zooms in, and checks that tiles
//! streamed from Leeds's node were drawn. Screenshots go to $SLIDEMESH_ARTIFACTS/shared.

use slidemesh_e2e::federation::{federation, share, wait_for_shared};
use slidemesh_e2e::run_viewer_test;

#[test]
fn a_shared_slide_opens_and_renders_in_the_grantees_viewer() {
    let mut fed = federation(&["RR8", "RAE"]);
    for node in fed.nodes.iter_mut() {
        node.serve();
    }
    share(&fed.nodes[0], &fed.slide, "RAE");
    wait_for_shared(&fed.nodes[1], &fed.slide);

    let url = fed.nodes[1].url.clone().unwrap();
    let artifacts = run_viewer_test(&url, Some(&fed.slide), "shared");
    // The tiles the browser drew came from the owner through the grantee's cache.
    let status = fed.nodes[1].get_json("/api/v1/network");
    assert!(
        status["cache"]["tiles"].as_u64().unwrap() > 0,
        "the grantee cached no remote tiles: {status}"
    );
    assert!(artifacts.join("viewer-zoomed.png").is_file());
}
