//! Research queries across real nodes (issue 18): a query asked at one node reaches every
//! roster member over libp2p, and each site answers under its own rules. RR8 counts exactly
//! (its LIMS's grades, its opted-out patients left out, matching the generated cases), RAE
//! suppresses small cells and adds seeded noise that is the same on every repeat and after
//! a restart, RCF's policy refuses the asker; RR8's per-requester budget runs out; a member
//! that is down is reported as not answering; a malformed query is refused with a caret;
//! both sides' audit logs hold the query.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use slidemesh_e2e::federation::federation;
use slidemesh_e2e::research_site as site;
use slidemesh_e2e::{Node, SMALL, consent_sidecars, run_ok, synth, wait_until};

/// Asks `query` at `node`'s API; the status and the JSON answer.
fn ask(node: &Node, query: &str) -> (u16, Value) {
    let response = node.post(
        "/api/v1/research/query",
        &[("content-type", "application/json")],
        json!({ "query": query }).to_string().as_bytes(),
    );
    let body = serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&response.body)));
    (response.status, body)
}

/// Ingests `count` generated slides at `node`, every patient consenting to research.
fn slides_with_consent(node: &Node, count: usize, seed: u64) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let generated = synth(
        dir.path(),
        &[
            SMALL,
            &["--count", &count.to_string(), "--seed", &seed.to_string()],
        ]
        .concat(),
    );
    consent_sidecars(dir.path(), r#"{"codes": ["GRU"]}"#);
    let (code, report) = node.ingest(&[dir.path()]);
    assert_eq!(code, 0, "{report}");
    generated
}

/// The audit entries of `node` about queries, as JSON.
fn query_entries(node: &Node) -> Vec<Value> {
    run_ok(node.cmd().args(["audit", "show", "--json"]))
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["entry"].clone())
        .filter(|e| e["action"] == "query")
        .collect()
}

#[test]
fn a_query_reaches_every_member_and_each_site_answers_under_its_own_rules() {
    let mut fed = federation(&["RR8", "RAE", "RCF"]);
    let work = tempfile::tempdir().unwrap();

    // RR8: twelve cases; its LIMS grades ten invasive carcinomas (five of grade 2, five of
    // grade 3; one an excision, the others core biopsies) and says two more patients,
    // graded 2, opted out. Exact counts from 3 up, a
    // budget of 4 distinct queries a day per requester.
    let rr8 = slides_with_consent(&fed.nodes[0], 12, 1800);
    let cases: Vec<Value> = rr8
        .iter()
        .enumerate()
        .map(|(i, slide)| {
            json!({
                "accession": slide["accession_number"],
                "diagnoses": ["413448000"],
                "grade": if (5..10).contains(&i) { 3 } else { 2 },
                "specimen": if i == 5 { "excision" } else { "core biopsy" },
                "opted_out": i >= 10,
            })
        })
        .collect();
    let lims = work.path().join("rr8-lims.json");
    std::fs::write(&lims, Value::Array(cases).to_string()).unwrap();
    run_ok(fed.nodes[0].cmd().arg("annotate-lims").arg(&lims));
    fed.nodes[0].edit_config("min_cell = 10", "min_cell = 3");
    fed.nodes[0].edit_config("noise = 2", "noise = 0");
    fed.nodes[0].edit_config("budget = 200", "budget = 4");
    // RAE: four cases, counts from 2 up, noise up to 3; RCF: three cases, and a policy that
    // answers no query from RAE.
    slides_with_consent(&fed.nodes[1], 4, 1810);
    fed.nodes[1].edit_config("min_cell = 10", "min_cell = 2");
    fed.nodes[1].edit_config("noise = 2", "noise = 3");
    fed.nodes[1].edit_config("deadline_ms = 3000", "deadline_ms = 4000");
    slides_with_consent(&fed.nodes[2], 3, 1820);
    let policy = fed.nodes[2].data.join("policy.cedar");
    let mut text = std::fs::read_to_string(&policy).unwrap();
    text.push_str(
        "\n@id(\"no-queries-from-RAE\")\nforbid (principal in Slidemesh::Trust::\"RAE\", \
         action == Slidemesh::Action::\"query\", resource);\n",
    );
    std::fs::write(&policy, text).unwrap();
    for node in &mut fed.nodes {
        node.serve();
    }
    let asker = &fed.nodes[1];

    // Every member answers once connected (the roster is known at start; connections come
    // up in the background).
    let mut first = Value::Null;
    wait_until(Duration::from_secs(30), || {
        first = ask(asker, "count by grade").1;
        site(&first, "RR8")["status"] == "answered"
            && site(&first, "RCF")["status"] != "unreachable"
    })
    .unwrap_or_else(|_| panic!("RR8 never answered: {first:#}"));
    assert_eq!(
        first["complete"], false,
        "RCF refused, so the answer is partial"
    );
    assert_eq!(first["query"], "count by grade");

    // RR8: exactly the LIMS's grades of consenting patients (the opted-out two and the
    // federation's own slide, with no recorded consent, are not counted).
    let counted: BTreeMap<String, u64> = site(&first, "RR8")["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["key"]["grade"].to_string(), c["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        counted,
        BTreeMap::from([("2".to_string(), 5), ("3".to_string(), 5)]),
        "{first:#}"
    );
    // RCF: refused by its policy, saying so and no more (which rule, and for which slide,
    // stays in RCF's own audit log).
    let rcf = site(&first, "RCF");
    assert_eq!(rcf["status"], "refused", "{first:#}");
    let reason = rcf["reason"].as_str().unwrap();
    assert!(reason.contains("policy allows none"), "{rcf}");
    assert!(!reason.contains("no-queries-from-RAE"), "{rcf}");
    let rcf_log = query_entries(&fed.nodes[2]);
    assert!(
        rcf_log.iter().any(|e| e["allowed"] == false
            && e["rules"][0]
                .as_str()
                .unwrap()
                .contains("no-queries-from-RAE")),
        "RCF's log names the rule: {rcf_log:#?}"
    );
    // RAE's own four slides have no LIMS entry: one group (no grade), moved by at most 3.
    let rae = site(&first, "RAE");
    assert_eq!(rae["status"], "answered", "{first:#}");
    let own = &rae["cells"][0];
    assert_eq!(own["key"]["grade"], Value::Null);
    let noisy = own["count"].as_u64().unwrap();
    assert!((2..=7).contains(&noisy), "{own}");

    // The same query gets the same answer, so repeating it averages nothing away (and it
    // costs RR8's budget nothing).
    let again = ask(asker, "COUNT  BY grade").1;
    assert_eq!(
        site(&again, "RAE"),
        rae,
        "the same noise for the same query"
    );
    assert_eq!(site(&again, "RR8")["cells"], site(&first, "RR8")["cells"]);

    // Small cells: RR8's one excision is fewer than its threshold of 3, so a grouped answer
    // leaves it out (a listed "<3" would say such a case exists) and a total says "below 3",
    // never 1; the nine core biopsies are shown.
    let (status, by_specimen) = ask(asker, "count where diagnosis = 413448000 by specimen");
    assert_eq!(status, 200);
    let rr8 = site(&by_specimen, "RR8");
    assert_eq!(
        rr8["cells"],
        json!([{"key": {"specimen": "CORE BIOPSY"}, "count": 9}]),
        "{by_specimen:#}"
    );
    assert_eq!(rr8["unlisted_below"], 3);
    let (_, excisions) = ask(asker, "count where specimen = excision");
    assert_eq!(
        site(&excisions, "RR8")["cells"],
        json!([{"key": {}, "below": 3}]),
        "{excisions:#}"
    );

    // RR8's budget: 4 distinct queries from RAE a day; the fifth is refused there, and
    // only there.
    let (_, fourth) = ask(asker, "count where year > 1900");
    assert_eq!(site(&fourth, "RR8")["status"], "answered", "{fourth:#}");
    let (_, fifth) = ask(asker, "count where year > 1901");
    let refused = site(&fifth, "RR8");
    assert_eq!(refused["status"], "refused", "{fifth:#}");
    assert!(
        refused["reason"].as_str().unwrap().contains("budget"),
        "{refused}"
    );
    assert_eq!(site(&fifth, "RAE")["status"], "answered");

    // The CLI asks every member through its running node too; a repeat of the first query
    // (free at RR8, whose budget is spent) shows each site and the counts combined.
    let said = run_ok(
        fed.nodes[1]
            .cmd()
            .args(["query", "count by grade", "--network"]),
    );
    assert!(said.contains("RR8\tanswered"), "{said}");
    assert!(said.contains("RCF\trefused"), "{said}");
    assert!(
        said.contains("grade\tcount over the sites that answered"),
        "{said}"
    );
    let as_json: Value = serde_json::from_str(&run_ok(fed.nodes[1].cmd().args([
        "query",
        "count by grade",
        "--network",
        "--json",
    ])))
    .unwrap();
    assert_eq!(site(&as_json, "RR8")["cells"], site(&first, "RR8")["cells"]);

    // A malformed query: 400, with a caret under the offending token.
    let (status, bad) = ask(asker, "count where stian = HE");
    assert_eq!(status, 400, "{bad}");
    let error = bad["error"].as_str().unwrap();
    assert!(
        error.contains("            ^^^^^") && error.contains("expected a field"),
        "{error}"
    );

    // Both sides' audit logs hold the queries: RR8 served RAE's (the refused one too), RAE
    // recorded each site's answer as received.
    let served: Vec<Value> = query_entries(&fed.nodes[0])
        .into_iter()
        .filter(|e| e["side"] == "served" && e["peer"] == "RAE")
        .collect();
    assert!(served.iter().any(|e| {
        e["allowed"] == true
            && e["what"]
                .as_str()
                .unwrap()
                .starts_with("query count by grade")
    }));
    assert!(
        served
            .iter()
            .any(|e| e["allowed"] == false && e["what"].as_str().unwrap().contains("budget"))
    );
    let received = query_entries(asker);
    assert!(
        received
            .iter()
            .any(|e| e["side"] == "received" && e["peer"] == "RCF" && e["allowed"] == false)
    );
    assert!(
        received
            .iter()
            .any(|e| e["side"] == "received" && e["peer"] == "RR8" && e["allowed"] == true)
    );

    // A member that is down is reported as not answering, never as a zero.
    fed.nodes[2].stop();
    let (_, down) = ask(&fed.nodes[1], "count by grade");
    let rcf = site(&down, "RCF");
    assert!(
        rcf["status"] == "unreachable" || rcf["status"] == "timed out",
        "{down:#}"
    );
    assert!(rcf.get("cells").is_none());
    assert_eq!(down["complete"], false);

    // RAE's noise survives its restart: keyed by its node key, not by the process.
    fed.nodes[1].stop();
    fed.nodes[1].serve();
    let (_, restarted) = ask(&fed.nodes[1], "count by grade");
    assert_eq!(
        site(&restarted, "RAE"),
        rae,
        "the same noise after a restart"
    );
}

#[test]
fn the_research_page_asks_every_member_and_shows_sites_table_and_chart() {
    let mut fed = federation(&["RR8", "RAE", "RCF"]);
    for (i, node) in fed.nodes.iter().enumerate().take(2) {
        slides_with_consent(node, 12, 1900 + i as u64 * 10);
        node.edit_config("min_cell = 10", "min_cell = 2");
    }
    for node in &mut fed.nodes {
        node.serve();
    }
    // Both answer once connected; then RCF goes down.
    wait_until(Duration::from_secs(30), || {
        let (_, answer) = ask(&fed.nodes[1], "count where year > 0");
        site(&answer, "RR8")["status"] == "answered"
    })
    .expect("RR8 answers RAE");
    fed.nodes[2].stop();
    let url = fed.nodes[1].url.clone().unwrap();
    let shots = slidemesh_e2e::run_research_browser_test(&url, &["RR8", "RAE"], "RCF", "research");
    assert!(shots.join("research-answer.png").is_file());
}
