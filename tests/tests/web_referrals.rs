//! A referral in two real browsers: Leeds (RR8) refers a case to Bradford (RAE), both
//! behind their sign-on proxies; headless Chromium at tablet size sends it by keyboard in
//! Leeds's web UI, a second one answers it in Bradford's, the first sees the opinion; every
//! page passes axe-core (WCAG 2.2 A and AA). Screenshots go to
//! $SLIDEMESH_ARTIFACTS/referral.

use slidemesh_e2e::federation::federation;
use slidemesh_e2e::run_referral_browser_test;

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
}
