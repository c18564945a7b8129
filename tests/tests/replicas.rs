//! Replicas (issue 19): Leeds (RR8) names Harrogate (RCD) a replica of its slide; Harrogate's node
//! fetches every tile in the background, verified and pinned, and shows its own people
//! nothing of it. Leeds then shares the slide with Bradford (RAE): Harrogate learns of the new
//! grant at once (Leeds sends Harrogate its grant again, so Harrogate fetches Leeds's statement now).
//! Leeds's node is killed; Bradford's viewer still gets every tile, from Harrogate, each the
//! bytes its id names. One of Leeds's originals rots while it is down: a scrub finds it,
//! the tile is never served corrupt, and the running node's scrub repairs it from
//! Harrogate's replica. Leeds then revokes Harrogate's grant: Harrogate releases the replica.

use std::time::Duration;

use serde_json::Value;
use slidemesh_e2e::federation::{federation, replicate, share, wait_for_shared};
use slidemesh_e2e::{run_ok, wait_until};

fn held(node: &slidemesh_e2e::Node) -> Vec<Value> {
    node.get_json("/api/v1/replicas")["held"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_replica_serves_the_slides_grantees_while_its_owner_is_down() {
    let mut fed = federation(&["RR8", "RAE", "RCD"]);
    let slide = fed.slide.clone();
    // Harrogate checks its replicas every second (a new grant starts one at once anyway).
    fed.nodes[2].edit_config("replica_check_secs = 60", "replica_check_secs = 1");
    fed.nodes[2].edit_config("metrics_token = \"\"", "metrics_token = \"replica-test\"");
    for node in &mut fed.nodes {
        node.serve();
    }
    let replica_grant = replicate(&fed.nodes[0], &slide, "RCD");
    let harrogate = &fed.nodes[2];
    wait_until(Duration::from_secs(60), || {
        held(harrogate)
            .first()
            .is_some_and(|r| r["state"] == "complete")
    })
    .unwrap_or_else(|_| panic!("Harrogate's replica completes: {:?}", held(harrogate)));
    let replica = held(harrogate).remove(0);
    assert_eq!(replica["slide"], slide.as_str());
    assert_eq!(replica["owner"], "RR8");
    let tiles = replica["tiles"].as_u64().unwrap();
    assert!(tiles > 10, "{replica}");
    assert_eq!(replica["held"], tiles, "{replica}");
    assert!(replica["bytes"].as_u64().unwrap() > 0);
    // Pinned, outside the cache's capacity.
    let cache = &harrogate.get_json("/api/v1/network")["cache"];
    assert_eq!(cache["pinned"]["tiles"], tiles, "{cache}");
    // The owner lists the replica it named; the command line shows Harrogate's progress.
    let named = &fed.nodes[0].get_json("/api/v1/replicas")["named"];
    assert_eq!(named[0]["replica"], "RCD", "{named}");
    assert_eq!(named[0]["grant"], replica_grant.as_str());
    let said = run_ok(harrogate.cmd().arg("replicas"));
    assert!(
        said.contains(&format!("{slide} of RR8: complete — {tiles}/{tiles} tiles")),
        "{said}"
    );

    // The health page shows it, in a real browser: members connected, the replica whole.
    wait_until(Duration::from_secs(30), || {
        harrogate.get_json("/api/v1/network")["members"]
            .as_array()
            .is_some_and(|m| m.iter().all(|m| m["connected"] == true))
    })
    .expect("Harrogate sees both members connected");
    slidemesh_e2e::run_health_browser_test(
        harrogate.url.as_deref().unwrap(),
        &["RR8", "RAE"],
        &slide,
        "health",
    );

    // Harrogate's own people see nothing of a slide it holds for others.
    let listed = harrogate.get_json("/api/v1/slides");
    assert!(
        !listed["slides"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["slide_id"] == slide.as_str()),
        "{listed}"
    );
    let detail = harrogate.get(&format!("/api/v1/slides/{slide}"));
    assert!(matches!(detail.status, 403 | 404), "{}", detail.status);
    let first_tile = fed.nodes[0].level_tiles(&slide)[0][0]
        .as_str()
        .unwrap()
        .to_string();
    let tile = harrogate.get(&format!("/api/v1/slides/{slide}/tiles/{first_tile}"));
    assert!(matches!(tile.status, 403 | 404), "{}", tile.status);

    // Bradford's grant comes after Harrogate's replica: Harrogate hears of it from Leeds at once.
    let rules_before = replica["rules_issued_at"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    share(&fed.nodes[0], &slide, "RAE");
    wait_for_shared(&fed.nodes[1], &slide);
    wait_until(Duration::from_secs(30), || {
        held(harrogate)[0]["rules_issued_at"].as_u64().unwrap() > rules_before
    })
    .expect("Harrogate fetches Leeds's statement listing Bradford's grant");
    let bradford = &fed.nodes[1];
    let levels = bradford.level_tiles(&slide);

    // Leeds is lost. Bradford views the whole slide (nothing of it cached there yet).
    fed.nodes[0].kill();
    let bradford = &fed.nodes[1];
    let mut served = 0;
    let mut fetched = std::collections::HashMap::new();
    for level in &levels {
        for id in level.as_array().unwrap() {
            let id = id.as_str().unwrap();
            let r = bradford.get(&format!("/api/v1/slides/{slide}/tiles/{id}"));
            assert_eq!(
                r.status,
                200,
                "tile {id} with Leeds down: {}",
                String::from_utf8_lossy(&r.body)
            );
            assert_eq!(
                blake3::hash(&r.body).to_hex().as_str(),
                id,
                "tile {id} is what its id names"
            );
            served += 1;
            fetched.insert(id.to_string(), r.body);
        }
    }
    assert!(served > 10);
    // Harrogate served them: its replica is still whole, and it counted tiles served to RAE.
    let harrogate = &fed.nodes[2];
    assert_eq!(held(harrogate)[0]["held"], tiles);
    let counted = harrogate.get_with("/metrics", &[("authorization", "Bearer replica-test")]);
    let text = String::from_utf8_lossy(&counted.body);
    let to_bradford = text
        .lines()
        .find_map(|l| l.strip_prefix("slidemesh_peer_tiles_served_total{peer=\"RAE\"} "))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(to_bradford > 0, "Harrogate served Bradford: {text}");

    // Bit rot in one of Leeds's originals while it is down: a scrub of the stopped node
    // finds it (and cannot repair: that needs the network); the tile is then never served
    // corrupt; the running node's scrub repairs it from Harrogate's replica.
    let leeds = &mut fed.nodes[0];
    let tile_id = levels[0][levels[0].as_array().unwrap().len() / 2]
        .as_str()
        .unwrap()
        .to_string();
    let tile_bytes = fetched
        .get(&tile_id)
        .expect("Bradford got the tile")
        .clone();
    let (object, offset) = find_in_objects(&leeds.data, &tile_bytes);
    let before_rot = std::fs::read(&object).unwrap();
    flip_byte(&object, offset + tile_bytes.len() as u64 / 2);
    let offline = slidemesh_e2e::run(leeds.cmd().args(["scrub", "--now", "--json"]));
    assert_eq!(
        offline.status.code(),
        Some(2),
        "unrepaired corruption: exit 2"
    );
    let report: Value = serde_json::from_slice(&offline.stdout).unwrap();
    assert_eq!(report["findings"][0]["what"], "original", "{report}");
    assert_eq!(report["findings"][0]["repaired"], false);
    leeds.serve();
    let served = leeds.get(&format!("/api/v1/slides/{slide}/tiles/{tile_id}"));
    assert_ne!(
        served.status, 200,
        "a tile that failed verification is never served"
    );
    let online = slidemesh_e2e::run(leeds.cmd().args(["scrub", "--now", "--json"]));
    let report: Value = serde_json::from_slice(&online.stdout).unwrap();
    assert_eq!(online.status.code(), Some(0), "{report}");
    let finding = &report["findings"][0];
    assert_eq!(finding["repaired"], true, "{report}");
    assert!(
        finding["detail"].as_str().unwrap().contains("from RCD"),
        "{report}"
    );
    let served = leeds.get(&format!("/api/v1/slides/{slide}/tiles/{tile_id}"));
    assert_eq!(served.status, 200);
    assert_eq!(served.body, tile_bytes);
    assert!(
        std::fs::read(&object).unwrap() == before_rot,
        "the original is byte for byte what it was"
    );

    // Leeds revokes Harrogate's grant: Harrogate releases the replica.
    run_ok(fed.nodes[0].cmd().args(["revoke", &replica_grant]));
    let harrogate = &fed.nodes[2];
    wait_until(Duration::from_secs(60), || held(harrogate).is_empty())
        .unwrap_or_else(|_| panic!("Harrogate releases the replica: {:?}", held(harrogate)));
    wait_until(Duration::from_secs(10), || {
        harrogate.get_json("/api/v1/network")["cache"]["pinned"]["tiles"] == 0
    })
    .expect("nothing pinned once the grant is revoked");
}

/// The original file under `data/objects` holding `bytes`, and where.
fn find_in_objects(data: &std::path::Path, bytes: &[u8]) -> (std::path::PathBuf, u64) {
    for file in slidemesh_e2e::files_under(&data.join("objects")).unwrap() {
        let content = std::fs::read(&file).unwrap();
        if let Some(at) = content.windows(bytes.len()).position(|w| w == bytes) {
            return (file, at as u64);
        }
    }
    panic!("no original holds the tile's bytes in one piece");
}

/// Flips one byte of a read-only original, as a failing disk might.
fn flip_byte(path: &std::path::Path, at: u64) {
    use std::os::unix::fs::{FileExt, PermissionsExt};
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, at).unwrap();
    byte[0] ^= 0x5a;
    file.write_all_at(&byte, at).unwrap();
    file.sync_all().unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444)).unwrap();
}
