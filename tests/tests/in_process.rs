//! A node started in this test's own process (`slidemesh_node::server`, as `slidemesh
//! serve` starts it): it serves, and its drain stops every listener, ends the audit writer
//! and lets go of the node's files, so the same data directory can be served again at once,
//! with every view of the first run in its audit log; a start that is refused leaves
//! nothing behind.

use std::net::TcpListener;
use std::path::Path;

use serde_json::Value;
use slidemesh_e2e::{Node, SMALL, synth};
use slidemesh_node::context::NodeContext;
use slidemesh_node::datadir::DataDir;
use slidemesh_node::server::{self, RunningNode, Settings};
use slidemesh_node::store::cache::TileCache;

fn start(runtime: &tokio::runtime::Runtime, data: &Path, dimse: bool) -> RunningNode {
    let mut node = NodeContext::open(DataDir::new(data)).expect("open the node's data");
    let mut settings = Settings::from_config(&node.config).expect("settings from config");
    if dimse {
        node.config.dimse.calling_ae_titles = vec!["SCANNER".into()];
        settings.dimse = Some("127.0.0.1:0".into());
    }
    runtime
        .block_on(server::start(node, settings))
        .unwrap_or_else(|e| panic!("the node does not start in-process: {e:#}"))
}

#[test]
fn a_node_run_in_process_drains_and_lets_go_of_its_files_and_ports() {
    let work = tempfile::tempdir().unwrap();
    synth(work.path(), SMALL);
    let mut node = Node::init("RR8");
    let (code, report) = node.ingest(&[work.path()]);
    assert_eq!(code, 0, "{report:#}");
    let slide = report["slides"][0]["slide_id"]
        .as_str()
        .unwrap()
        .to_string();
    let runtime = tokio::runtime::Runtime::new().unwrap();

    let running = start(&runtime, &node.data, true);
    let (http, dimse) = (
        running.started.http,
        running.started.dimse.expect("DICOM port"),
    );
    node.url = Some(running.started.url.clone());
    assert!(node.data.join("serve.json").exists());
    let tile = node.level_tiles(&slide)[0][0].as_str().unwrap().to_string();
    let answer = node.get(&format!("/api/v1/slides/{slide}/tiles/{tile}"));
    assert_eq!(answer.status, 200);
    runtime
        .block_on(running.stop())
        .expect("the node stops cleanly");

    // Nothing of the first run is left holding the node: serve.json is gone, the HTTP and
    // DICOM ports are free, and the tile cache opens (it is open in one place at a time,
    // and only the node's federation services hold it).
    assert!(!node.data.join("serve.json").exists());
    TcpListener::bind(http).expect("the HTTP port is free after stop");
    TcpListener::bind(dimse).expect("the DICOM port is free after stop");
    let cache = TileCache::open(&node.data.join("cache"), 1 << 20);
    assert!(
        cache.is_ok(),
        "the tile cache is still held after stop: {:?}",
        cache.err()
    );
    drop(cache);

    // Served again from the same data: the first run's views are in the audit log.
    let running = start(&runtime, &node.data, false);
    node.url = Some(running.started.url.clone());
    let history = node.get_json(&format!("/api/v1/slides/{slide}/access"));
    let logged = |action: &str| {
        history["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e: &Value| {
                e["side"] == "gateway" && e["action"] == action && e["allowed"] == true
            })
    };
    assert!(
        logged("view") && logged("fetch_tiles"),
        "the first run's views are in the log: {history:#}"
    );
    runtime.block_on(running.stop()).unwrap();

    // A node that cannot start (its HTTP address is taken) leaves nothing running either.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let node_context = NodeContext::open(DataDir::new(&node.data)).unwrap();
    let mut settings = Settings::from_config(&node_context.config).unwrap();
    settings.http = taken.local_addr().unwrap();
    let refused = runtime.block_on(server::start(node_context, settings));
    let why = format!("{:#}", refused.err().expect("the taken address is refused"));
    assert!(why.contains("cannot listen"), "{why}");
    let cache = TileCache::open(&node.data.join("cache"), 1 << 20);
    assert!(
        cache.is_ok(),
        "the tile cache is held after a refused start: {:?}",
        cache.err()
    );
}
