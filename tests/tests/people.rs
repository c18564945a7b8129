//! People, not only trusts: the grantee's node runs behind its trust's sign-on proxy, which
//! names each person and their role in headers. The owner's policy decides per role twice:
//! at the grantee's node, with the owner's signed rules, before anything is shown (cached
//! tiles included), and at the owner, when tiles are fetched for that person. Both audit
//! logs name the person; the grantee keeps the owner's receipt for them.

use std::time::Duration;

use serde_json::Value;
use slidemesh_e2e::federation::{federation, share};
use slidemesh_e2e::{Node, PROXY_SECRET, PROXY_SECRET_HEADER, bin, run_ok, wait_until};

const PATHOLOGIST: &[(&str, &str)] = &[
    ("x-slidemesh-user", "jsmith"),
    ("x-slidemesh-role", "pathologist"),
    (PROXY_SECRET_HEADER, PROXY_SECRET),
];
const STUDENT: &[(&str, &str)] = &[
    ("x-slidemesh-user", "akhan"),
    ("x-slidemesh-role", "student"),
    (PROXY_SECRET_HEADER, PROXY_SECRET),
];

fn log(node: &Node) -> Vec<Value> {
    run_ok(node.cmd().args(["audit", "show", "--json"]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn body(r: &slidemesh_e2e::Response) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

#[test]
fn the_owners_rules_decide_per_person_at_both_ends_and_both_logs_name_them() {
    let mut fed = federation(&["RR8", "RAE"]);
    let slide = fed.slide.clone();
    fed.nodes[1].behind_proxy("[\"127.0.0.1\"]");
    fed.nodes[0].serve();
    // The grantee asks for the owner's current rules every second.
    fed.nodes[1].edit_config("consent_refresh_secs = 600", "consent_refresh_secs = 1");
    fed.nodes[1].serve();
    let (owner, grantee) = (&fed.nodes[0], &fed.nodes[1]);
    share(owner, &slide, "RAE");
    wait_until(Duration::from_secs(30), || {
        grantee
            .get_with(&format!("/api/v1/slides/{slide}"), PATHOLOGIST)
            .status
            == 200
    })
    .expect("the shared slide appears at the grantee");
    // Behind the sign-on proxy nothing is shown to no one in particular.
    let r = grantee.get("/api/v1/slides");
    assert_eq!(r.status, 401, "{}", body(&r));

    let levels = owner.level_tiles(&slide);
    let coarsest = levels.len() - 1;
    let tile = format!("/api/v1/slides/{slide}/levels/{coarsest}/tiles/0/0");
    let label = format!("/api/v1/slides/{slide}/label");
    let detail = format!("/api/v1/slides/{slide}");

    // A pathologist sees the tile and the label (fetched from the owner for her).
    let r = grantee.get_with(&tile, PATHOLOGIST);
    assert_eq!(r.status, 200, "{}", body(&r));
    assert!(r.header("cache-control").unwrap().starts_with("private"));
    let r = grantee.get_with(&label, PATHOLOGIST);
    assert_eq!(r.status, 200, "{}", body(&r));
    // A student may view the slide, but the owner's default policy keeps the label for
    // clinical roles: refused here although the label is in this node's cache.
    assert_eq!(grantee.get_with(&tile, STUDENT).status, 200);
    let r = grantee.get_with(&label, STUDENT);
    assert_eq!(r.status, 403, "{}", body(&r));
    assert!(
        body(&r).contains("label-for-clinical-roles"),
        "{}",
        body(&r)
    );
    // Nor, for the same reason, who the patient is: the detail leaves out the specimen's
    // identifier and the label, the identified manifest is refused, and searches (which
    // answer with the patient's attributes) find nothing.
    let d: Value = serde_json::from_slice(&grantee.get_with(&detail, STUDENT).body).unwrap();
    assert!(
        d["container_id"].is_null() && d["label_url"].is_null(),
        "{d}"
    );
    assert!(d["acquired"].is_null() && d["study_uid"] == "", "{d}");
    let d: Value = serde_json::from_slice(&grantee.get_with(&detail, PATHOLOGIST).body).unwrap();
    assert!(
        d["container_id"].is_string() && d["label_url"].is_string(),
        "{d}"
    );
    let manifest = format!("/api/v1/slides/{slide}/manifest");
    assert_eq!(grantee.get_with(&manifest, STUDENT).status, 403);
    assert_eq!(grantee.get_with(&manifest, PATHOLOGIST).status, 200);
    let found = grantee.get_with("/dicomweb/studies", PATHOLOGIST);
    assert!(body(&found).contains("0020000D"), "{}", body(&found));
    assert_eq!(found.header("cache-control"), Some("private, no-cache"));
    let found = grantee.get_with("/dicomweb/studies", STUDENT);
    assert_eq!(body(&found).trim(), "[]", "{}", body(&found));
    // A malformed name from the proxy is refused, not guessed at.
    let r = grantee.get_with(
        &tile,
        &[
            ("x-slidemesh-user", "jsmith"),
            ("x-slidemesh-role", "Pathologist"),
            (PROXY_SECRET_HEADER, PROXY_SECRET),
        ],
    );
    assert_eq!(r.status, 400, "{}", body(&r));

    // The owner decided for the person too, and says so in its log and its receipts.
    let owner_log = log(owner);
    let served_for = |user: &str, action: &str| {
        owner_log.iter().any(|e| {
            e["entry"]["side"] == "served"
                && e["entry"]["user"] == user
                && e["entry"]["action"] == action
                && e["entry"]["allowed"] == true
        })
    };
    assert!(
        served_for("jsmith (pathologist)", "fetch_tiles"),
        "{owner_log:?}"
    );
    assert!(
        served_for("jsmith (pathologist)", "see_label"),
        "{owner_log:?}"
    );
    // Operators find a person's accesses by account at their trust.
    let by = |user: &str| {
        run_ok(
            owner
                .cmd()
                .args(["audit", "show", "--json", "--user", user]),
        )
        .lines()
        .count()
    };
    assert!(by("RAE/jsmith") > 0 && by("jsmith") == by("RAE/jsmith"));
    assert_eq!(by("RR8/jsmith"), 0);
    let grantee_log = log(grantee);
    let received = grantee_log
        .iter()
        .find(|e| e["entry"]["side"] == "received" && e["entry"]["user"] == "jsmith (pathologist)")
        .unwrap_or_else(|| panic!("no access logged for the pathologist: {grantee_log:?}"));
    assert_eq!(received["receipt"]["log"], "RR8", "{received}");
    let refused = grantee_log
        .iter()
        .find(|e| e["entry"]["side"] == "gateway" && e["entry"]["allowed"] == false)
        .unwrap_or_else(|| panic!("the refusal is not logged: {grantee_log:?}"));
    assert_eq!(refused["entry"]["user"], "akhan (student)");
    assert_eq!(refused["entry"]["action"], "see_label");
    assert_eq!(refused["entry"]["peer"], "RR8");

    // At the owner, the same rule refuses the student's label whoever asks for it.
    let probe = |user: &str, role: &str| -> Value {
        let mut cmd = std::process::Command::new(bin("slidemesh-tools"));
        cmd.args(["probe", "--peer", &owner.tcp_multiaddr(), "--slide", &slide])
            .args(["--tiles", "4", "--label", "--user", user, "--role", role])
            .arg("--as-node")
            .arg(&grantee.data)
            .arg("--grant-from")
            .arg(&grantee.data)
            .arg("--tiles-from")
            .arg(&owner.data);
        serde_json::from_str(&run_ok(&mut cmd)).unwrap()
    };
    let student = probe("akhan", "student");
    assert_eq!(student["tiles"]["received"], 4, "{student}");
    assert_eq!(student["label"]["received"], 0, "{student}");
    assert_eq!(
        student["tiles"]["receipt"]["decisions"][0]["user"], "akhan (student)",
        "{student}"
    );

    // The owner narrows viewing to pathologists. The grantee learns the new rules from the
    // owner's next consent statement and applies them to what it already holds.
    let default = std::fs::read_to_string(owner.data.join("policy.cedar")).unwrap();
    std::fs::write(
        owner.data.join("policy.cedar"),
        format!(
            "{default}\n@id(\"pathologists-only\")\nforbid (principal is Slidemesh::User, action, resource)\nunless {{ principal.role == \"pathologist\" }};\n"
        ),
    )
    .unwrap();
    wait_until(Duration::from_secs(20), || {
        grantee.get_with(&tile, STUDENT).status == 403
    })
    .expect("the student is refused the cached tile under the owner's new rules");
    let r = grantee.get_with(&detail, STUDENT);
    assert_eq!(r.status, 403, "{}", body(&r));
    assert!(body(&r).contains("pathologists-only"), "{}", body(&r));
    assert_eq!(grantee.get_with(&tile, PATHOLOGIST).status, 200);
    assert_eq!(grantee.get_with(&detail, PATHOLOGIST).status, 200);
    let student = probe("akhan", "student");
    assert_eq!(student["tiles"]["received"], 0, "{student}");
    // The owner's log says why.
    let why = log(owner)
        .into_iter()
        .rev()
        .find(|e| e["entry"]["user"] == "akhan (student)" && e["entry"]["allowed"] == false)
        .expect("the owner logged the refusal");
    assert_eq!(why["entry"]["rules"][0], "pathologists-only", "{why}");
    // The student's list no longer shows the slide.
    let listed = grantee.get_with("/api/v1/slides", STUDENT);
    assert!(!body(&listed).contains(&slide), "{}", body(&listed));
    let listed = grantee.get_with("/api/v1/slides", PATHOLOGIST);
    assert!(body(&listed).contains(&slide), "{}", body(&listed));
}
