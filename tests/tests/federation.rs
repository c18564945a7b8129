//! Scenario tests of the federation: real node processes talking libp2p over loopback.
//!
//! - remote view: a slide shared by its owner appears at the grantee and its tiles arrive
//!   byte-identical, verified, cached; the viewer keeps working while an unrelated member
//!   is down.
//! - consent: a member without a grant gets nothing, a non-member cannot even connect, and
//!   a revocation takes effect at the owner at once.
//! - corruption: a source that sends wrong bytes is detected and bypassed.
//! - expiry: when a grant ends, the grantee's own node stops showing the slide, cached
//!   tiles included, without being told.
//! - opt-out: when the owner records the national data opt-out for a research-shared
//!   slide, the grantee's node stops serving it to its users (the trust itself included),
//!   empties its cache, and does not keep asking.
//! - copies: a grantee's cache serves a third trust under the owner's signed rules while
//!   the owner is down; and a copy holder that never received a revocation (it was down
//!   while it travelled) refuses the revoked grant from its next refresh of the owner's
//!   statement on, and stops using the slide itself once its own grant is revoked.

use std::time::Duration;

use serde_json::Value;
use slidemesh_e2e::federation::{federation, share, share_for, share_until, wait_for_shared};
use slidemesh_e2e::{Node, bin, run, run_ok, wait_until};

/// The probe's JSON outcome when `as_node` asks `target` for the slide under the grant
/// held in `grant_from`'s store.
fn probe(target: &Node, as_node: Option<&Node>, slide: &str, grant_from: &Node) -> Value {
    let addr = target.tcp_multiaddr();
    let mut cmd = std::process::Command::new(bin("slidemesh-tools"));
    cmd.args(["probe", "--peer", &addr, "--slide", slide, "--tiles", "4"])
        .arg("--grant-from")
        .arg(&grant_from.data);
    if let Some(n) = as_node {
        cmd.arg("--as-node").arg(&n.data);
    }
    serde_json::from_str(&run_ok(&mut cmd)).expect("probe prints JSON")
}

/// All tile URLs of the slide's levels, as the owner's API lists them.
fn tile_paths(owner: &Node, slide: &str) -> Vec<String> {
    let detail = owner.get_json(&format!("/api/v1/slides/{slide}"));
    let mut out = Vec::new();
    for level in detail["levels"].as_array().unwrap() {
        let i = level["index"].as_u64().unwrap();
        for row in 0..level["rows"].as_u64().unwrap() {
            for col in 0..level["cols"].as_u64().unwrap() {
                out.push(format!(
                    "/api/v1/slides/{slide}/levels/{i}/tiles/{col}/{row}"
                ));
            }
        }
    }
    out
}

#[test]
fn shared_slide_is_viewed_remotely_and_consent_is_enforced() {
    let mut fed = federation(&["RR8", "RAE", "RCD"]);
    for node in fed.nodes.iter_mut() {
        node.serve();
    }
    let slide = fed.slide.clone();
    let (owner, grantee) = (&fed.nodes[0], &fed.nodes[1]);

    // Before any grant the would-be grantee sees nothing.
    assert_eq!(grantee.get(&format!("/api/v1/slides/{slide}")).status, 404);

    let grant = share(owner, &slide, "RAE");
    wait_for_shared(grantee, &slide);

    // The grantee's API serves the remote slide like a local one, byte for byte.
    let detail = grantee.get_json(&format!("/api/v1/slides/{slide}"));
    assert_eq!(detail["owner"], "RR8");
    let paths = tile_paths(owner, &slide);
    assert!(paths.len() > 20);

    // Naming a screen's region (as the web viewer does when it zooms or pans) fetches its
    // tiles into the grantee's cache before any of them is asked for.
    let cached = |node: &Node| {
        node.get_json("/api/v1/network")["cache"]["tiles"]
            .as_u64()
            .unwrap()
    };
    let before = cached(grantee);
    let json = [("content-type", "application/json")];
    let wanted = format!("/api/v1/slides/{slide}/levels/0/wanted");
    let named = grantee.post(&wanted, &json, br#"{"cols":[0,1],"rows":[0,1]}"#);
    assert_eq!(
        named.status,
        202,
        "{}",
        String::from_utf8_lossy(&named.body)
    );
    wait_until(Duration::from_secs(20), || cached(grantee) >= before + 4)
        .expect("the named region's four tiles are fetched and cached");
    // A region outside the level is refused; the owner has nothing to fetch for its own.
    let outside = grantee.post(&wanted, &json, br#"{"cols":[9999,9999],"rows":[0,0]}"#);
    assert_eq!(outside.status, 400);
    let backwards = grantee.post(&wanted, &json, br#"{"cols":[1,0],"rows":[0,0]}"#);
    assert_eq!(backwards.status, 400);
    assert_eq!(
        owner
            .post(&wanted, &json, br#"{"cols":[0,0],"rows":[0,0]}"#)
            .status,
        202
    );
    // The unrelated member going down changes nothing for the viewer.
    fed.nodes[2].stop();
    let (owner, grantee) = (&fed.nodes[0], &fed.nodes[1]);
    for path in &paths {
        let remote = grantee.get(path);
        assert_eq!(
            remote.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&remote.body)
        );
        assert_eq!(
            remote.body,
            owner.get(path).body,
            "{path} differs from the owner's"
        );
    }
    let status = grantee.get_json("/api/v1/network");
    let cached_tiles = status["cache"]["tiles"].as_u64().unwrap();
    assert!(cached_tiles >= paths.len() as u64 / 2, "{status}");
    // The cache survives a restart of the grantee's node, every tile of it (prefetch may
    // still add some before the stop).
    fed.nodes[1].stop();
    fed.nodes[1].serve();
    let (owner, grantee) = (&fed.nodes[0], &fed.nodes[1]);
    let status = grantee.get_json("/api/v1/network");
    assert!(
        status["cache"]["tiles"].as_u64().unwrap() >= cached_tiles,
        "{cached_tiles} tiles were cached before the restart: {status}"
    );

    // A member without a grant gets nothing: not with the grantee's grant either.
    let stolen = probe(owner, Some(&fed.nodes[2]), &slide, grantee);
    assert_eq!(stolen["manifest"]["outcome"], "denied", "{stolen}");
    assert!(
        stolen["tiles"]["received"] == 0
            && stolen["tiles"]["error"]
                .as_str()
                .unwrap()
                .contains("refused"),
        "{stolen}"
    );
    // The grantee itself is allowed (so the denials above are the policy, not the probe).
    let allowed = probe(owner, Some(grantee), &slide, grantee);
    assert_eq!(allowed["manifest"]["outcome"], "manifest", "{allowed}");
    assert_eq!(allowed["tiles"]["received"], 4, "{allowed}");
    // Each answer came with the owner's signed receipt for its audit entries.
    assert_eq!(allowed["manifest"]["receipt"]["log"], "RR8", "{allowed}");
    assert_eq!(
        allowed["tiles"]["receipt"]["decisions"][0]["action"], "fetch_tiles",
        "{allowed}"
    );
    // Both sides recorded the viewer's fetches: every receipt the grantee keeps names an
    // entry in the owner's log, leaf for leaf.
    let log = |node: &Node| -> Vec<Value> {
        run_ok(node.cmd().args(["audit", "show", "--json"]))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let owner_log = log(owner);
    let kept: Vec<Value> = log(grantee)
        .into_iter()
        .filter(|e| e["entry"]["side"] == "received")
        .collect();
    assert!(
        kept.iter().any(|e| e["entry"]["action"] == "fetch_tiles"),
        "{kept:?}"
    );
    for received in &kept {
        let receipt = &received["receipt"];
        assert_eq!(receipt["log"], "RR8", "no receipt kept: {received}");
        for decision in receipt["decisions"].as_array().unwrap() {
            let seq = decision["seq"].as_u64().unwrap();
            let theirs = owner_log
                .iter()
                .find(|e| e["seq"] == seq)
                .unwrap_or_else(|| panic!("owner has no entry {seq}"));
            assert_eq!(theirs["leaf"], decision["leaf"], "{theirs} vs {received}");
            assert_eq!(theirs["entry"]["peer"], "RAE");
        }
        // The grantee's entry records the owner's decision: its rules and policy hash.
        assert!(
            !received["entry"]["policy_hash"]
                .as_str()
                .unwrap()
                .is_empty()
        );
    }
    // A non-member cannot even connect, however often it tries; and being refused never
    // crashes the one asking (a lazily negotiated tile stream once panicked when its
    // refusal raced the request being written).
    for _ in 0..40 {
        let stranger = probe(owner, None, &slide, grantee);
        assert_eq!(stranger["manifest"]["outcome"], "error", "{stranger}");
    }

    // Revocation: effective at the owner at once, then the grantee forgets the slide.
    run_ok(owner.cmd().args(["revoke", &grant]));
    let after = probe(owner, Some(grantee), &slide, grantee);
    assert_eq!(after["manifest"]["outcome"], "denied", "{after}");
    assert!(
        after["manifest"]["reason"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
    wait_until(Duration::from_secs(30), || {
        grantee.get(&format!("/api/v1/slides/{slide}")).status == 404
    })
    .expect("the grantee drops a revoked slide");
}

#[test]
fn corrupted_tiles_are_detected_and_fetched_from_another_source() {
    let mut fed = federation(&["RR8", "RAE", "RCD"]);
    let slide = fed.slide.clone();
    fed.nodes[1].serve();
    // RCD's copy serves only grants its latest statement from the owner lists, so it
    // refreshes that statement every second.
    fed.nodes[2].edit_config("consent_refresh_secs = 600", "consent_refresh_secs = 1");
    fed.nodes[2].serve();
    // The owner first serves honestly so that RCD can cache the slide and become a source.
    fed.nodes[0].serve();
    share(&fed.nodes[0], &slide, "RCD");
    wait_for_shared(&fed.nodes[2], &slide);
    let paths = tile_paths(&fed.nodes[0], &slide);
    let expected: Vec<Vec<u8>> = paths.iter().map(|p| fed.nodes[0].get(p).body).collect();
    for path in &paths {
        assert_eq!(fed.nodes[2].get(path).status, 200);
    }
    // Now the owner turns bad: every tile it sends has a flipped byte.
    fed.nodes[0].stop();
    fed.nodes[0].serve_env(&[("SLIDEMESH_FAULT_CORRUPT_TILES", "1")]);
    let grant = share(&fed.nodes[0], &slide, "RAE");
    wait_for_shared(&fed.nodes[1], &slide);
    wait_until(Duration::from_secs(30), || {
        probe_grant(&fed.nodes[2], &fed.nodes[1], &slide, &grant, &fed.nodes[0])["tiles"]
            ["received"]
            == 4
    })
    .expect("RCD's copy serves RAE's grant once its statement lists it");
    for (path, want) in paths.iter().zip(&expected) {
        let got = fed.nodes[1].get(path);
        assert_eq!(
            got.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&got.body)
        );
        assert_eq!(&got.body, want, "{path}: the grantee served wrong bytes");
    }
}

#[test]
fn a_member_admitted_by_quorum_spreads_to_running_nodes_and_can_be_shared_with() {
    let mut fed = federation(&["RR8", "RAE", "RCD"]);
    for node in fed.nodes.iter_mut() {
        node.serve();
    }
    let mut newcomer = Node::init_peer("RWY");
    let entry = fed.work.path().join("RWY.json");
    std::fs::write(
        &entry,
        run_ok(newcomer.cmd().args(["federation", "member"])),
    )
    .unwrap();
    let next = fed.work.path().join("next.json");
    run_ok(
        fed.nodes[0]
            .cmd()
            .args(["federation", "propose", "--add"])
            .arg(&entry)
            .arg("--out")
            .arg(&next),
    );
    // The proposer's own signature is one of the two the current roster needs.
    let early = run(fed.nodes[0]
        .cmd()
        .args(["federation", "publish"])
        .arg(&next));
    assert!(!early.status.success(), "published below quorum");
    run_ok(fed.nodes[1].cmd().args(["federation", "sign"]).arg(&next));
    run_ok(
        fed.nodes[0]
            .cmd()
            .args(["federation", "publish"])
            .arg(&next),
    );
    // The other running members adopt version 2 from the network, not from the operator.
    for node in &fed.nodes[1..] {
        wait_until(Duration::from_secs(40), || {
            node.get_json("/api/v1/network")["roster_version"] == 2
        })
        .expect("a running member adopts the new roster version");
    }
    // The newcomer starts from the same two versions and can be shared with at once.
    let genesis = fed.work.path().join("roster.json");
    run_ok(newcomer.cmd().args(["federation", "publish"]).arg(&genesis));
    run_ok(newcomer.cmd().args(["federation", "publish"]).arg(&next));
    newcomer.serve();
    share(&fed.nodes[0], &fed.slide, "RWY");
    wait_for_shared(&newcomer, &fed.slide);
}

#[test]
fn an_expired_grant_ends_viewing_at_the_grantee_even_from_its_cache() {
    let mut fed = federation(&["RR8", "RAE"]);
    for node in fed.nodes.iter_mut() {
        node.serve();
    }
    let slide = fed.slide.clone();
    let (owner, grantee) = (&fed.nodes[0], &fed.nodes[1]);
    share_until(owner, &slide, "RAE", "second-opinion", None, "20s");
    wait_for_shared(grantee, &slide);
    let path = tile_paths(owner, &slide).pop().expect("a tile");
    let before = grantee.get(&path);
    assert_eq!(
        before.status,
        200,
        "{}",
        String::from_utf8_lossy(&before.body)
    );
    assert_eq!(before.body, owner.get(&path).body);

    // The tile is in the grantee's cache now, and the owner is still up; neither matters
    // once the grant's time is over: the tile is refused (403, saying why) until the
    // node's sweep withdraws the slide, then the slide is gone (404).
    let mut refused = None;
    wait_until(Duration::from_secs(60), || {
        let r = grantee.get(&path);
        let done = r.status != 200;
        refused = Some(r);
        done
    })
    .expect("the grantee refuses the tile once the grant expired");
    let refused = refused.unwrap();
    let reason = String::from_utf8_lossy(&refused.body);
    match refused.status {
        403 => assert!(reason.contains("expired"), "{reason}"),
        404 => {}
        other => panic!("an expired grant's tile answered {other}: {reason}"),
    }
    assert!(
        owner.get(&path).status == 200,
        "the owner still serves its own users"
    );
    wait_until(Duration::from_secs(30), || {
        grantee.get(&format!("/api/v1/slides/{slide}")).status == 404
    })
    .expect("the expired slide leaves the grantee's list");
}

#[test]
fn an_owners_opt_out_ends_a_research_share_at_the_grantee_cache_included() {
    let mut fed = federation(&["RR8", "RAE"]);
    // The grantee asks for the owner's current rules every 2 s: a refusal then waits at
    // least that long before it is asked again.
    fed.nodes[1].edit_config("consent_refresh_secs = 600", "consent_refresh_secs = 2");
    for node in fed.nodes.iter_mut() {
        node.serve();
    }
    let slide = fed.slide.clone();
    let (owner, grantee) = (&fed.nodes[0], &fed.nodes[1]);
    run_ok(
        owner
            .cmd()
            .args(["consent", &slide, "--codes", "GRU", "--opt-out", "no"]),
    );
    slidemesh_e2e::federation::share_for(owner, &slide, "RAE", "research", None);
    wait_for_shared(grantee, &slide);
    // The grantee's users (here the trust itself: `[users] from = "none"`) view tiles,
    // which the grantee caches.
    let paths: Vec<String> = tile_paths(owner, &slide).into_iter().take(4).collect();
    for path in &paths {
        let r = grantee.get(path);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    let cached = |node: &Node| node.get_json("/api/v1/network")["cache"]["tiles"].as_u64();
    wait_until(Duration::from_secs(10), || {
        cached(grantee).unwrap_or(0) >= 4
    })
    .unwrap_or_else(|_| {
        panic!(
            "the viewed tiles are not cached: {}",
            grantee.get_json("/api/v1/network")
        )
    });

    // The patient opts out: the owner's next answer to the grantee's refresh refuses, and
    // the slide ends there, cached tiles included.
    run_ok(
        owner
            .cmd()
            .args(["consent", &slide, "--codes", "GRU", "--opt-out", "yes"]),
    );
    wait_until(Duration::from_secs(60), || {
        grantee.get(&format!("/api/v1/slides/{slide}")).status == 404
    })
    .expect("the opted-out slide leaves the grantee");
    for path in &paths {
        let r = grantee.get(path);
        assert!(
            r.status == 404 || r.status == 403,
            "a cached tile of an opted-out slide answered {}",
            r.status
        );
    }
    let listed = grantee.get_json("/api/v1/slides");
    assert!(
        !listed.to_string().contains(&slide),
        "still listed: {listed}"
    );
    assert_eq!(cached(grantee), Some(0), "the slide's tiles left the cache");

    // The grantee does not keep asking: over the next ten seconds (twenty polls at the
    // old 500 ms rate) the owner's log gains at most one more refusal for it.
    let refusals = || {
        run_ok(owner.cmd().args(["audit", "show", "--json"]))
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|e| e["entry"]["peer"] == "RAE" && e["entry"]["allowed"] == false)
            .count()
    };
    let before = refusals();
    assert!(before >= 1, "the owner logged its refusal");
    std::thread::sleep(Duration::from_secs(10));
    let after = refusals();
    assert!(
        after <= before + 1,
        "the owner logged {} more refusals in 10 s",
        after - before
    );
}

/// The patient's id in a manifest as `/api/v1/slides/{id}/manifest` serves it: from the
/// full-resolution level's instance.
fn patient_id_in(manifest: &Value) -> String {
    let m = &manifest["manifest"];
    let uid = &m["levels"][0]["instance_uids"][0];
    let instance = m["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| &i["sop_instance_uid"] == uid)
        .expect("the level's instance");
    let data: Value = serde_json::from_str(instance["metadata_json"].as_str().unwrap()).unwrap();
    data["00100020"]["Value"][0].as_str().unwrap().to_string()
}

#[test]
fn a_research_grant_gets_a_deidentified_view_that_still_views_and_speaks_dicomweb() {
    let mut fed = federation(&["RR8", "RAE"]);
    for node in fed.nodes.iter_mut() {
        node.serve();
    }
    let slide = fed.slide.clone();
    let (owner, grantee) = (&fed.nodes[0], &fed.nodes[1]);
    // Research needs research consent (the default records clinical care only).
    run_ok(owner.cmd().args(["consent", &slide, "--codes", "GRU"]));
    slidemesh_e2e::federation::share_for(owner, &slide, "RAE", "research", Some("REC 26/YH/0042"));
    wait_for_shared(grantee, &slide);

    let identified = owner.get_json(&format!("/api/v1/slides/{slide}/manifest"));
    let view = grantee.get_json(&format!("/api/v1/slides/{slide}/manifest"));
    let patient = patient_id_in(&identified);
    let study = identified["manifest"]["study_uid"].as_str().unwrap();
    let view_text = view.to_string();
    for secret in [patient.as_str(), study] {
        assert!(!view_text.contains(secret), "{secret} reached the grantee");
    }
    assert!(patient_id_in(&view).starts_with("SMP"), "{view}");
    assert_eq!(view["deidentified_project"], "REC 26/YH/0042");
    assert_ne!(view["manifest_id"], view["slide_id"]);

    // The viewer's data: marked de-identified, no label or overview, tiles as the owner's.
    let detail = grantee.get_json(&format!("/api/v1/slides/{slide}"));
    assert_eq!(
        detail["deidentified"]["project"], "REC 26/YH/0042",
        "{detail}"
    );
    assert!(detail["label_url"].is_null() && detail["overview_url"].is_null());
    // Asking anyway is refused by the label rule (decided before anything is looked up).
    let label = grantee.get(&format!("/api/v1/slides/{slide}/label"));
    assert_eq!(
        label.status,
        403,
        "{}",
        String::from_utf8_lossy(&label.body)
    );
    let path = tile_paths(owner, &slide).pop().unwrap();
    let tile = grantee.get(&path);
    assert_eq!(tile.status, 200, "{}", String::from_utf8_lossy(&tile.body));
    assert_eq!(tile.body, owner.get(&path).body);

    // DICOMweb at the grantee finds the study by its pseudonyms only, and serves frames.
    let pseudonym = patient_id_in(&view);
    let by_patient = grantee.get_json(&format!("/dicomweb/studies?PatientID={pseudonym}"));
    let found = by_patient.as_array().unwrap();
    assert_eq!(found.len(), 1, "{by_patient}");
    assert_eq!(
        found[0]["00100010"]["Value"][0]["Alphabetic"],
        pseudonym.as_str()
    );
    assert_eq!(
        grantee.get_json(&format!("/dicomweb/studies?PatientID={patient}")),
        Value::Array(vec![])
    );
    let m = &view["manifest"];
    let (view_study, series) = (&m["study_uid"], &m["series_uid"]);
    let instance = m["levels"][0]["instance_uids"][0].as_str().unwrap();
    let frame = grantee.get(&format!(
        "/dicomweb/studies/{}/series/{}/instances/{instance}/frames/1",
        view_study.as_str().unwrap(),
        series.as_str().unwrap()
    ));
    assert_eq!(
        frame.status,
        200,
        "{}",
        String::from_utf8_lossy(&frame.body)
    );
    let metadata = grantee.get(&format!(
        "/dicomweb/studies/{}/series/{}/metadata",
        view_study.as_str().unwrap(),
        series.as_str().unwrap()
    ));
    assert_eq!(metadata.status, 200);
    let metadata = String::from_utf8_lossy(&metadata.body);
    assert!(!metadata.contains(&patient) && !metadata.contains(study));
    assert!(
        metadata.contains("\"00120062\""),
        "Patient Identity Removed is missing"
    );
}

/// The probe's JSON outcome when `as_node` asks `target` for the first tiles of the slide
/// under one grant, the tile ids taken from `tiles_from`'s store.
fn probe_grant(
    target: &Node,
    as_node: &Node,
    slide: &str,
    grant: &str,
    tiles_from: &Node,
) -> Value {
    let mut cmd = std::process::Command::new(bin("slidemesh-tools"));
    cmd.args(["probe", "--peer", &target.tcp_multiaddr(), "--slide", slide])
        .args(["--tiles", "4", "--grant", grant])
        .arg("--as-node")
        .arg(&as_node.data)
        .arg("--grant-from")
        .arg(&as_node.data)
        .arg("--tiles-from")
        .arg(&tiles_from.data);
    serde_json::from_str(&run_ok(&mut cmd)).expect("probe prints JSON")
}

#[test]
fn a_copy_serves_others_under_the_owners_rules_while_the_owner_is_down() {
    let mut fed = federation(&["RR8", "RAE", "RCD"]);
    fed.nodes[0].serve();
    // Bradford's copy serves only grants its latest statement from the owner lists:
    // Harrogate's, issued after Bradford's first fetch, once Bradford has refreshed it.
    fed.nodes[1].edit_config("consent_refresh_secs = 600", "consent_refresh_secs = 1");
    fed.nodes[1].serve();
    // Harrogate refreshes its shared slides' manifests every second, so it asks again while
    // the owner is down.
    fed.nodes[2].edit_config("consent_refresh_secs = 600", "consent_refresh_secs = 1");
    fed.nodes[2].serve();
    let slide = fed.slide.clone();
    let (owner, bradford, harrogate) = (&fed.nodes[0], &fed.nodes[1], &fed.nodes[2]);
    // Research use of this slide needs an ethics approval (DUO IRB).
    run_ok(owner.cmd().args(["consent", &slide, "--codes", "HMB,IRB"]));
    // Bradford views the whole slide, so its cache holds every tile.
    share(owner, &slide, "RAE");
    wait_for_shared(bradford, &slide);
    for path in tile_paths(owner, &slide) {
        assert_eq!(bradford.get(&path).status, 200, "{path}");
    }
    // Harrogate holds a second-opinion grant, and a research grant without the ethics
    // approval the owner's policy requires.
    let care = share(owner, &slide, "RCD");
    let research = share_for(owner, &slide, "RCD", "research", None);
    wait_for_shared(harrogate, &slide);
    wait_until(Duration::from_secs(30), || {
        probe_grant(bradford, harrogate, &slide, &care, owner)["tiles"]["received"] == 4
    })
    .expect("Bradford's copy, refreshed, serves Harrogate's grant");
    // Bradford's own policy would allow anything: a copy must not decide with it.
    std::fs::write(
        bradford.data.join("policy.cedar"),
        "@id(\"anything-goes\")\npermit(principal, action, resource);\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));

    fed.nodes[0].stop();
    let (owner, bradford, harrogate) = (&fed.nodes[0], &fed.nodes[1], &fed.nodes[2]);
    let allowed = probe_grant(bradford, harrogate, &slide, &care, owner);
    assert_eq!(allowed["tiles"]["received"], 4, "{allowed}");
    // The copy also relays the owner's signed manifest (the probe checks its signature).
    assert_eq!(allowed["manifest"]["outcome"], "manifest", "{allowed}");
    assert_eq!(allowed["manifest"]["receipt"]["log"], "RAE", "{allowed}");
    // The receipt is the copy's: it decided, and it logged the decision.
    assert_eq!(allowed["tiles"]["receipt"]["log"], "RAE", "{allowed}");
    let refused = probe_grant(bradford, harrogate, &slide, &research, owner);
    assert_eq!(refused["tiles"]["received"], 0, "{refused}");
    // Nor does it relay anything for research: only the owner can make that view.
    assert_ne!(refused["manifest"]["outcome"], "manifest", "{refused}");
    // Harrogate's own node, finding the owner down, got the manifest from Bradford's copy
    // (through the DHT) and logged it with Bradford's receipt.
    let from_copy = |node: &Node| {
        run_ok(node.cmd().args(["audit", "show", "--json"]))
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .any(|e| {
                e["entry"]["side"] == "received"
                    && e["entry"]["action"] == "view"
                    && e["entry"]["peer"] == "RAE"
                    && e["receipt"]["log"] == "RAE"
                    // Audited as a refresh of a manifest it held, not a new viewing.
                    && e["entry"]["what"]
                        .as_str()
                        .is_some_and(|w| w.contains("(refresh)"))
            })
    };
    wait_until(Duration::from_secs(30), || from_copy(harrogate))
        .expect("the grantee fetched the manifest from a copy while the owner was down");
    let denials: Vec<Value> = run_ok(bradford.cmd().args(["audit", "show", "--json"]))
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["entry"]["side"] == "served" && e["entry"]["allowed"] == false)
        .collect();
    assert!(
        denials
            .iter()
            .any(|e| e["entry"]["rules"][0] == "ethics-approval-required"
                && e["entry"]["purpose"] == "research"),
        "the copy did not refuse by the owner's rule: {denials:?}"
    );
}

/// `slidemesh grants --json` at `node`: the state of grant `id` there ("active",
/// "revoked", "expired"), or None when the node does not hold it.
fn grant_state(node: &Node, id: &str) -> Option<String> {
    let grants: Value = serde_json::from_str(&run_ok(node.cmd().args(["grants", "--json"])))
        .expect("grants prints JSON");
    grants
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["grant_id"] == id)
        .map(|g| g["state"].as_str().unwrap().to_string())
}

/// Issue 15, revocations that hold. Leeds owns the slide; Bradford holds a copy (its cache
/// has every tile) and serves Harrogate from it; Bradford is down while Leeds revokes.
///
/// What keeps the revocation from Bradford: it restarts with
/// `SLIDEMESH_FAULT_DROP_REVOCATIONS`, so every revocation message that reaches it (the
/// owner's outbox retries delivery, and the revocation is announced on gossipsub again
/// every 15 s until its grantee acknowledges) is dropped unread, before anything is
/// stored. What this proves: a node holding no revocation still refuses, from the owner's
/// consent statement (refreshed every second here) alone. It does not prove the network
/// itself could not deliver the message; the fault switch stands for that.
///
/// First Harrogate's grant is revoked: Bradford refuses it with the statement's reason
/// (a stored revocation would have been named as such), keeps serving Harrogate's other
/// grant, and keeps showing the slide to its own users, whose grant still holds. Then
/// Bradford's own grant is revoked: the owner refuses Bradford's refresh, and Bradford
/// ends the slide (its own users refused, cache included) and stops serving Harrogate from
/// it, while its own store still says the grant is active, because the revocation never
/// reached it.
#[test]
fn a_copy_holder_that_missed_the_revocation_refuses_by_the_owners_statement() {
    let mut fed = federation(&["RR8", "RAE", "RCD"]);
    for node in &fed.nodes[1..] {
        node.edit_config("consent_refresh_secs = 600", "consent_refresh_secs = 1");
    }
    for node in fed.nodes.iter_mut() {
        node.serve();
    }
    let slide = fed.slide.clone();
    let (owner, bradford, harrogate) = (&fed.nodes[0], &fed.nodes[1], &fed.nodes[2]);
    let for_bradford = share(owner, &slide, "RAE");
    wait_for_shared(bradford, &slide);
    let tiles = tile_paths(owner, &slide);
    for path in &tiles {
        assert_eq!(bradford.get(path).status, 200, "{path}");
    }
    // Two grants for Harrogate: one to revoke, one that stays.
    let revoked_first = share(owner, &slide, "RCD");
    let kept = share_for(owner, &slide, "RCD", "mdt", None);
    wait_for_shared(harrogate, &slide);
    for grant in [&revoked_first, &kept] {
        wait_until(Duration::from_secs(30), || {
            probe_grant(bradford, harrogate, &slide, grant, owner)["tiles"]["received"] == 4
        })
        .expect("Bradford's copy serves Harrogate once its statement lists the grant");
    }

    // Harrogate's first grant is revoked while Bradford is down.
    fed.nodes[1].stop();
    let (owner, harrogate) = (&fed.nodes[0], &fed.nodes[2]);
    run_ok(owner.cmd().args(["revoke", &revoked_first]));
    wait_until(Duration::from_secs(30), || {
        grant_state(harrogate, &revoked_first).as_deref() == Some("revoked")
    })
    .expect("the grantee itself received the revocation");
    let restarted = std::time::Instant::now();
    fed.nodes[1].serve_env(&[("SLIDEMESH_FAULT_DROP_REVOCATIONS", "1")]);
    let (owner, bradford, harrogate) = (&fed.nodes[0], &fed.nodes[1], &fed.nodes[2]);
    let mut last = Value::Null;
    wait_until(Duration::from_secs(20), || {
        last = probe_grant(bradford, harrogate, &slide, &revoked_first, owner);
        last["tiles"]["received"] == 0
            && last["manifest"]["outcome"] == "denied"
            && last["manifest"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("not among the grants"))
    })
    .unwrap_or_else(|_| panic!("the copy still serves the revoked grant: {last}"));
    eprintln!(
        "copy refused the revoked grant {:?} after its restart",
        restarted.elapsed()
    );
    // Refused by the owner's list, not by a revocation of its own: a stored revocation by
    // the issuer is checked first and would have been named.
    assert!(
        !last["manifest"]["reason"]
            .as_str()
            .unwrap()
            .contains("was revoked"),
        "{last}"
    );
    let still = probe_grant(bradford, harrogate, &slide, &kept, owner);
    assert_eq!(still["tiles"]["received"], 4, "{still}");
    for path in tiles.iter().take(4) {
        assert_eq!(bradford.get(path).status, 200, "{path}");
    }

    // Now Bradford's own grant, again while it is down.
    fed.nodes[1].stop();
    run_ok(fed.nodes[0].cmd().args(["revoke", &for_bradford]));
    let restarted = std::time::Instant::now();
    fed.nodes[1].serve_env(&[("SLIDEMESH_FAULT_DROP_REVOCATIONS", "1")]);
    let (owner, bradford, harrogate) = (&fed.nodes[0], &fed.nodes[1], &fed.nodes[2]);
    wait_until(Duration::from_secs(20), || {
        bradford.get(&format!("/api/v1/slides/{slide}")).status == 404
    })
    .expect("Bradford stops showing the slide to its own users");
    eprintln!(
        "copy holder ended the slide {:?} after its restart",
        restarted.elapsed()
    );
    for path in tiles.iter().take(4) {
        assert_ne!(bradford.get(path).status, 200, "{path} from the cache");
    }
    let gone = probe_grant(bradford, harrogate, &slide, &kept, owner);
    assert_eq!(gone["tiles"]["received"], 0, "{gone}");
    // The revocation of its own grant never reached Bradford's store.
    assert_eq!(
        grant_state(bradford, &for_bradford).as_deref(),
        Some("active")
    );
}
