//! Crash safety of ingest: a `slidemesh ingest` killed with SIGKILL at any moment leaves the
//! slide either fully present and verifiable or absent, and a re-run completes it.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use slidemesh_e2e::{Node, run, run_ok, synth};

fn slides(node: &Node) -> Vec<Value> {
    let out = run_ok(node.cmd().args(["slides", "--json"]));
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn ingest_killed_at_any_moment_leaves_slide_whole_or_absent() {
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("slide");
    // ~3,000 level-0 tiles: long enough that the kills land at different stages.
    synth(
        &input,
        &[
            "--width", "12288", "--height", "8192", "--tile", "256", "--seed", "5",
        ],
    );
    let mut outcomes = Vec::new();
    for delay_ms in [0u64, 10, 30, 60, 120, 250, 500] {
        let node = Node::init("RXF");
        let mut child = node
            .cmd()
            .args(["ingest", "--keep", "copy", "--json"])
            .arg(&input)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL: no chance to clean up
        let status = child.wait().unwrap();

        let present = slides(&node);
        assert!(present.len() <= 1, "at most the one slide: {present:#?}");
        // Whatever is there verifies tile by tile.
        let verify = run(node.cmd().args(["verify", "--json"]));
        assert!(
            verify.status.success(),
            "after kill at {delay_ms} ms: {}",
            String::from_utf8_lossy(&verify.stdout)
        );
        outcomes.push((delay_ms, status.success(), present.len()));

        // Re-running finishes the job, and the result verifies.
        let (code, report) = node.ingest(&[&input]);
        assert_eq!(code, 0, "{report:#}");
        assert_eq!(slides(&node).len(), 1);
        assert!(run(node.cmd().arg("verify")).status.success());
        // A later serve sweeps staging leftovers of the killed process.
        let mut node = node;
        node.serve();
        node.stop();
        assert!(
            slidemesh_e2e::files_under(&node.data.join("tmp"))
                .unwrap()
                .is_empty()
        );
    }
    // The kills must have hit both before and after the commit for this test to mean much.
    assert!(
        outcomes.iter().any(|o| o.2 == 0),
        "no kill landed before the commit: {outcomes:?}"
    );
    eprintln!("kill outcomes (delay ms, exited normally, slides present): {outcomes:?}");
}
