//! A site that hangs (issue 19): RR8's node is frozen (SIGSTOP) while RAE views its shared
//! slide. RAE's first uncached tile waits out one batch timeout and fails; RAE then knows
//! RR8 is not answering (`/api/v1/network`) and fails the next tiles at once, saying so,
//! instead of waiting on RR8 again; once RR8 thaws, the next probe after its backoff
//! finds it and tiles come again.

use std::time::Duration;

use serde_json::Value;
use slidemesh_e2e::federation::{federation, share, wait_for_shared};
use slidemesh_e2e::wait_until;

#[test]
fn a_hung_owner_is_waited_on_once_then_skipped_until_it_answers_again() {
    let mut fed = federation(&["RR8", "RAE"]);
    let slide = fed.slide.clone();
    fed.nodes[0].serve();
    fed.nodes[1].serve();
    share(&fed.nodes[0], &slide, "RAE");
    wait_for_shared(&fed.nodes[1], &slide);
    let rae = &fed.nodes[1];
    let detail = rae.get_json(&format!("/api/v1/slides/{slide}"));
    let level = &detail["levels"][0];
    let (cols, rows) = (
        level["cols"].as_u64().unwrap(),
        level["rows"].as_u64().unwrap(),
    );
    let tile = |col: u64, row: u64| {
        rae.get(&format!(
            "/api/v1/slides/{slide}/levels/0/tiles/{col}/{row}"
        ))
    };
    // Connected, and nothing of level 0 fetched yet (a viewer's prefetch would bring
    // neighbours along).
    wait_until(Duration::from_secs(30), || {
        rae.get_json("/api/v1/network")["network"]["connected"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    })
    .expect("RAE connects to RR8");
    let not_answering = || rae.get_json("/api/v1/network")["not_answering"].clone();
    assert_eq!(not_answering(), Value::Array(vec![]));

    fed.nodes[0].freeze(true);
    let first = tile(cols - 1, rows - 1);
    assert_eq!(
        first.status,
        502,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    let listed = not_answering();
    assert_eq!(listed[0]["trust"], "RR8", "{listed}");
    // The next uncached tile is not waited on: it fails naming RR8 as not answering.
    let next = tile(cols - 2, rows - 1);
    assert_eq!(next.status, 502);
    let said = String::from_utf8_lossy(&next.body).to_string();
    assert!(said.contains("has not answered for"), "{said}");

    // RR8 thaws: once its backoff is over, a probe finds it and tiles come again.
    fed.nodes[0].freeze(false);
    wait_until(Duration::from_secs(120), || {
        tile(cols - 3, rows - 1).status == 200
    })
    .expect("tiles come again once RR8 answers");
    // (The tile reaches its viewer as it arrives; the batch's end clears RR8 a moment later.)
    wait_until(Duration::from_secs(10), || {
        not_answering() == Value::Array(vec![])
    })
    .unwrap_or_else(|_| panic!("RR8 still listed: {}", not_answering()));
}
