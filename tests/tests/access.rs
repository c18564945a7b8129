//! Who may see what, decided in one place: every route of the node's HTTP API that shows a
//! slide's content decides for the requester first. The route table comes from the node's
//! own router (`slidemesh_node::api::route_table`), so a route added without a decision
//! fails here: with a policy that lets this trust's own node see nothing, every content
//! route answers 403 (never the slide), lists are empty; with the default policy, every one
//! answers, and the views are in the node's audit log.

use std::time::Duration;

use serde_json::Value;
use slidemesh_e2e::{Node, SMALL, synth, wait_until};
use slidemesh_node::api::{Exposure, route_table};

/// A policy that permits nothing (a valid policy needs one rule).
const NOTHING: &str = r#"@id("nothing") forbid (principal, action, resource);"#;

struct Ids {
    slide: String,
    tile: String,
    study: String,
    series: String,
    instance: String,
    /// A single-frame instance (the slide's thumbnail or overview image), for the routes
    /// that render an instance whole.
    single: String,
}

/// The route's path with its parameters filled in for the slide.
fn fill(path: &str, ids: &Ids) -> String {
    let renders_whole = path.contains("{instance}")
        && (path.ends_with("/rendered") || path.ends_with("/thumbnail"));
    let path = if renders_whole {
        path.replace("{instance}", &ids.single)
    } else {
        path.to_string()
    };
    path.replace("{slide_id}", &ids.slide)
        .replace("{tile_id}", &ids.tile)
        .replace("{image}", "thumbnail")
        .replace("{level}", "0")
        .replace("{col}", "0")
        .replace("{row}", "0")
        .replace("{study}", &ids.study)
        .replace("{series}", &ids.series)
        .replace("{instance}", &ids.instance)
        .replace("{frames}", "1")
        .replace("{tag}", "7FE00010")
}

/// Requests every content route; returns (method path, status) for each.
fn content_statuses(node: &Node, ids: &Ids) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for route in route_table() {
        for (method, exposure) in &route.methods {
            if *exposure != Exposure::Content {
                continue;
            }
            let path = fill(&route.path, ids);
            let status = match method.as_str() {
                "GET" => node.get(&path).status,
                "POST" => {
                    let body = br#"{"cols": [0, 0], "rows": [0, 0]}"#;
                    node.post(&path, &[("content-type", "application/json")], body)
                        .status
                }
                other => panic!("route {path} has a method this test does not know: {other}"),
            };
            out.push((format!("{method} {path}"), status));
        }
    }
    out
}

#[test]
fn every_content_route_decides_for_the_requester() {
    let work = tempfile::tempdir().unwrap();
    let slides = work.path().join("slides");
    synth(&slides, &[SMALL, &["--seed", "31"]].concat());
    let mut node = Node::init("RR8");
    let (code, report) = node.ingest(&[&slides]);
    assert_eq!(code, 0, "{report:#}");
    let policy = node.data.join("policy.cedar");
    std::fs::write(&policy, NOTHING).unwrap();
    node.serve();

    // The slide's id, from the store with the CLI (the API shows nothing now).
    let listed: Value = serde_json::from_str(&slidemesh_e2e::run_ok(
        node.cmd().args(["slides", "--json"]),
    ))
    .unwrap();
    let slide_id = listed[0]["slide_id"].as_str().unwrap().to_string();
    let ids = ids_of(&node, &slide_id, &policy);

    let statuses = content_statuses(&node, &ids);
    assert!(statuses.len() >= 20, "too few content routes: {statuses:?}");
    let leaked: Vec<_> = statuses.iter().filter(|(_, s)| *s != 403).collect();
    assert!(
        leaked.is_empty(),
        "content routes that did not refuse a requester the policy refuses: {leaked:?}"
    );
    // Lists and searches show nothing of it either.
    let list = node.get_json("/api/v1/slides");
    assert_eq!(list["slides"].as_array().unwrap().len(), 0, "{list:#}");
    let studies: Value = serde_json::from_slice(&node.get("/dicomweb/studies").body).unwrap();
    assert_eq!(studies.as_array().unwrap().len(), 0, "{studies:#}");

    // The default policy lets the trust's own node see its slides: every route answers.
    std::fs::write(
        &policy,
        include_str!("../../node/src/consent/default.cedar"),
    )
    .unwrap();
    wait_until(Duration::from_secs(15), || {
        node.get(&format!("/api/v1/slides/{slide_id}")).status == 200
    })
    .expect("the node picks up the new policy");
    let statuses = content_statuses(&node, &ids);
    let refused: Vec<_> = statuses
        .iter()
        .filter(|(_, s)| !(200..300).contains(s))
        .collect();
    assert!(
        refused.is_empty(),
        "content routes that did not answer an allowed requester: {refused:?}"
    );
    // Each view is in the audit log, as the trust itself (no person named here).
    let history = node.get_json(&format!("/api/v1/slides/{slide_id}/access"));
    let entries = history["entries"].as_array().unwrap();
    for action in ["view", "fetch_tiles"] {
        assert!(
            entries
                .iter()
                .any(|e| e["side"] == "gateway" && e["action"] == action && e["allowed"] == true),
            "no allowed {action} in the slide's history: {history:#}"
        );
    }
    assert!(
        entries
            .iter()
            .any(|e| e["side"] == "gateway" && e["allowed"] == false),
        "the refusals are in the history too: {history:#}"
    );
}

/// The ids every route needs: read with the policy briefly allowing the node, then closed
/// again (the node reloads its policy within a second; decisions are memoised 5 s).
fn ids_of(node: &Node, slide_id: &str, policy: &std::path::Path) -> Ids {
    std::fs::write(policy, include_str!("../../node/src/consent/default.cedar")).unwrap();
    wait_until(Duration::from_secs(15), || {
        node.get(&format!("/api/v1/slides/{slide_id}/manifest"))
            .status
            == 200
    })
    .expect("the node picks up the default policy");
    let manifest = node.get_json(&format!("/api/v1/slides/{slide_id}/manifest"));
    let detail = node.get_json(&format!("/api/v1/slides/{slide_id}"));
    let level = &manifest["manifest"]["levels"][0];
    let ids = Ids {
        slide: slide_id.to_string(),
        tile: level["tiles"][0].as_str().unwrap().to_string(),
        study: detail["study_uid"].as_str().unwrap().to_string(),
        series: detail["series_uid"].as_str().unwrap().to_string(),
        instance: level["instance_uids"][0].as_str().unwrap().to_string(),
        single: manifest["manifest"]["associated"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["kind"] != "label" && a["tiles"].as_array().unwrap().len() == 1)
            .expect("the synthetic slide has a single-frame thumbnail or overview")["instance_uid"]
            .as_str()
            .unwrap()
            .to_string(),
    };
    std::fs::write(policy, NOTHING).unwrap();
    wait_until(Duration::from_secs(15), || {
        node.get(&format!("/api/v1/slides/{slide_id}")).status == 403
    })
    .expect("the node picks up the closed policy");
    ids
}
