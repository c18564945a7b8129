//! A referral in two real browsers: Leeds (RR8) refers a case to Bradford (RAE), both
//! behind their sign-on proxies; headless Chromium at tablet size sends it by keyboard in
//! Leeds's web UI, a second one answers it in Bradford's, the first sees the opinion; every
//! page passes axe-core (WCAG 2.2 A and AA). Screenshots go to
//! $SLIDEMESH_ARTIFACTS/referral.

use slidemesh_e2e::federation::federation;
use slidemesh_e2e::{PROXY_SECRET, PROXY_SECRET_HEADER, run_referral_browser_test};

/// Leeds's pathologist, as its sign-on proxy names her.
const JSMITH: &[(&str, &str)] = &[
    ("x-slidemesh-user", "jsmith"),
    ("x-slidemesh-role", "pathologist"),
    (PROXY_SECRET_HEADER, PROXY_SECRET),
    ("content-type", "application/json"),
];

#[test]
fn a_referral_is_sent_and_answered_in_two_browsers() {
    let mut fed = federation(&["RR8", "RAE"]);
    for node in fed.nodes.iter_mut() {
        node.behind_proxy("[\"127.0.0.1\"]");
        node.serve();
    }
    let from = fed.nodes[0].url.clone().unwrap();
    let to = fed.nodes[1].url.clone().unwrap();
    let artifacts = run_referral_browser_test(&from, &to, &fed.slide, "referral");
    for shot in [
        "referral-form.png",
        "inbox-1024x768.png",
        "opinion-seen.png",
    ] {
        assert!(artifacts.join(shot).is_file(), "{shot} missing");
    }
    // The answer is in the referring trust's store too, not only on its page.
    let shown = slidemesh_e2e::run_ok(fed.nodes[0].cmd().args(["referrals", "--json"]));
    assert!(shown.contains("\"answered\""), "{shown}");
    // The claim made in the browser took the offered case: Leeds referred it to Bradford.
    slidemesh_e2e::wait_until(std::time::Duration::from_secs(30), || {
        let r = fed.nodes[0].get_with("/api/v1/offers", JSMITH);
        serde_json::from_slice::<serde_json::Value>(&r.body)
            .is_ok_and(|offers| offers["offers"][0]["taken_by"] == "RAE")
    })
    .expect("the claimed case is Bradford's");
}
