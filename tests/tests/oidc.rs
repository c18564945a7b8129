//! Sign-on at the trust's OpenID provider (`[users] from = "oidc"`): a real provider
//! (oidc-provider, `tests/oidc/provider.mjs`, on loopback) with two people whose roles are in
//! a `roles` claim, and a node registered at it as a client. Without a session the API
//! answers 401 and the UI's pages go to sign in; the sign-in carries state, nonce and a PKCE
//! challenge; in headless Chromium (`tests/browser/signon.test.mjs`) a pathologist signs in,
//! views a slide, is named in its access history, is refused a POST without the session's
//! CSRF token, signs out (her session is gone); a student signs in and is refused the slide,
//! which is for clinical care only. The node's audit log names both. A provider that cannot
//! be reached refuses `serve` at start, saying which.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use slidemesh_e2e::{Node, Response, SMALL, free_port, run_ok, run_signon_test, synth};

const CLIENT_ID: &str = "slidemesh";
const CLIENT_SECRET: &str = "a-test-oidc-client-secret-5d1a8e0c";

/// The test's OpenID provider: `node tests/oidc/provider.mjs`, killed when dropped.
struct Provider {
    child: Child,
    issuer: String,
}

impl Provider {
    /// Starts it with the node's client registered: `base` is the node's URL.
    fn start(base: &str) -> Provider {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oidc");
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "tests/oidc/node_modules is missing: run scripts/setup (the README's test command \
             does)"
        );
        let mut child = Command::new("node")
            .arg("provider.mjs")
            .current_dir(&dir)
            .env("OIDC_CLIENT_ID", CLIENT_ID)
            .env("OIDC_CLIENT_SECRET", CLIENT_SECRET)
            .env("OIDC_REDIRECT_URI", format!("{base}/auth/callback"))
            .env(
                "OIDC_POST_LOGOUT_REDIRECT_URI",
                format!("{base}/signed-out"),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run node (Node.js) for the OpenID provider");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let issuer = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(issuer) = line.strip_prefix("oidc-provider issuer ") {
                        break issuer.trim().to_string();
                    }
                }
                other => {
                    let _ = child.kill();
                    panic!("the OpenID provider did not start: {other:?}");
                }
            }
        };
        // Keep reading its stdout so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Provider { child, issuer }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn body(r: &Response) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// GET without following redirects.
fn get_here(url: &str, headers: &[(&str, &str)]) -> (u16, Option<String>, Vec<String>, String) {
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let mut request = agent.get(url);
    for (k, v) in headers {
        request = request.set(k, v);
    }
    let response = match request.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{url}: {e}"),
    };
    let location = response.header("location").map(str::to_string);
    let cookies = response
        .all("set-cookie")
        .into_iter()
        .map(str::to_string)
        .collect();
    let status = response.status();
    (
        status,
        location,
        cookies,
        response.into_string().unwrap_or_default(),
    )
}

/// Signs the node on at the provider at `issuer`, the client secret in the data directory.
fn sign_on_at(node: &Node, issuer: &str, base: &str) {
    let secret = node.data.join("oidc-client-secret");
    std::fs::write(&secret, format!("{CLIENT_SECRET}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let set = |key: &str, value: &str| {
        node.edit_config(&format!("{key} = \"\""), &format!("{key} = \"{value}\""))
    };
    node.edit_config("from = \"none\"", "from = \"oidc\"");
    set("oidc_issuer", issuer);
    set("oidc_client_id", CLIENT_ID);
    set("oidc_client_secret_file", "oidc-client-secret");
    set("oidc_redirect_url", &format!("{base}/auth/callback"));
    set(
        "oidc_post_logout_redirect_url",
        &format!("{base}/signed-out"),
    );
    node.edit_config(
        "oidc_scopes = [\"openid\", \"profile\"]",
        "oidc_scopes = [\"openid\", \"profile\", \"roles\"]",
    );
}

#[test]
fn people_sign_on_at_the_trusts_openid_provider() {
    let work = tempfile::tempdir().unwrap();
    synth(
        &work.path().join("slide"),
        &[SMALL, &["--seed", "23"]].concat(),
    );
    let mut node = Node::init("RR8");
    let (code, report) = node.ingest(&[&work.path().join("slide")]);
    assert_eq!(code, 0, "{report:#}");
    // No consent recorded: the slide is for clinical care only (students are refused).
    let slide = report["slides"][0]["slide_id"]
        .as_str()
        .unwrap()
        .to_string();

    // The redirect URL registered at the provider names the node's address, so it is fixed.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");

    // A provider that cannot be reached: serve refuses to start and says which.
    let closed = format!("http://127.0.0.1:{}", free_port());
    sign_on_at(&node, &closed, &base);
    let refused = node.serve_refused(&["--http", &format!("127.0.0.1:{port}")]);
    assert!(
        refused.contains("cannot discover the OpenID provider")
            && refused.contains(&closed)
            && refused.contains("oidc_issuer"),
        "{refused}"
    );

    let provider = Provider::start(&base);
    node.edit_config(
        &format!("oidc_issuer = \"{closed}\""),
        &format!("oidc_issuer = \"{}\"", provider.issuer),
    );
    let url = node.serve_on(&format!("127.0.0.1:{port}"));
    assert_eq!(url, base);

    // Without a session: the API says 401 and where to sign in; the UI's pages go there.
    let r = node.get("/api/v1/slides");
    assert_eq!(r.status, 401, "{}", body(&r));
    let answer: Value = serde_json::from_slice(&r.body).unwrap();
    assert!(
        answer["login"]
            .as_str()
            .is_some_and(|l| l.starts_with("/auth/login?next=")),
        "{answer}"
    );
    assert_eq!(node.get(&format!("/api/v1/slides/{slide}")).status, 401);
    assert_eq!(node.get("/auth/me").status, 401);
    let (status, location, _, _) = get_here(&format!("{base}/view/{slide}?z=1"), &[]);
    assert_eq!(status, 303);
    assert_eq!(
        location.as_deref(),
        Some(format!("/auth/login?next=%2Fview%2F{slide}%3Fz%3D1").as_str())
    );
    // Who the node is, its UI's files and the signed-out page need no one.
    assert_eq!(node.get("/api/v1/node").status, 200);
    assert_eq!(node.get("/assets/app.js").status, 200);
    assert_eq!(node.get("/signed-out").status, 200);
    // Nobody names themselves in headers here.
    let r = node.get_with(
        "/api/v1/slides",
        &[
            ("x-slidemesh-user", "jsmith"),
            ("x-slidemesh-role", "pathologist"),
        ],
    );
    assert_eq!(r.status, 403, "{}", body(&r));
    // A made-up session names no one.
    let r = node.get_with("/api/v1/slides", &[("cookie", "slidemesh-session=forged")]);
    assert_eq!(r.status, 401, "{}", body(&r));

    // The sign-in: to the provider's authorization endpoint with state, nonce and PKCE, the
    // state bound to this browser by a cookie.
    let (status, location, cookies, _) = get_here(&format!("{base}/auth/login?next=/"), &[]);
    assert_eq!(status, 303);
    let location = location.expect("a redirect to the provider");
    assert!(location.starts_with(&provider.issuer), "{location}");
    let authorize = ureq::get(&location).request_url().unwrap();
    let params: std::collections::HashMap<&str, &str> =
        authorize.query_pairs().into_iter().collect();
    assert_eq!(params["response_type"], "code");
    assert_eq!(params["client_id"], CLIENT_ID);
    assert_eq!(params["redirect_uri"], format!("{base}/auth/callback"));
    assert_eq!(params["code_challenge_method"], "S256");
    assert!(params["code_challenge"].len() >= 43, "{params:?}");
    assert!(
        params["state"].len() >= 32 && params["nonce"].len() >= 16,
        "{params:?}"
    );
    assert_eq!(params["scope"], "openid profile roles");
    let login_cookie = cookies
        .iter()
        .find(|c| c.starts_with("slidemesh-login="))
        .unwrap_or_else(|| panic!("no login cookie: {cookies:?}"));
    assert!(
        login_cookie.contains(params["state"])
            && login_cookie.contains("HttpOnly")
            && login_cookie.contains("SameSite=Lax"),
        "{login_cookie}"
    );
    // A callback whose state this browser was not given is refused, before any exchange.
    let (status, _, _, text) = get_here(
        &format!("{base}/auth/callback?code=x&state={}", params["state"]),
        &[("cookie", "slidemesh-login=another")],
    );
    assert_eq!(status, 400, "{text}");
    let (status, _, _, text) = get_here(
        &format!("{base}/auth/callback?error=access_denied&state=x"),
        &[],
    );
    assert_eq!(status, 403, "{text}");

    // People, in a real browser.
    run_signon_test(&url, &provider.issuer, &slide, "oidc");

    // The node's audit log names them: her views allowed, his refused.
    let entries: Vec<Value> = run_ok(node.cmd().args(["audit", "show", "--json"]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by = |user: &str, allowed: bool| {
        entries
            .iter()
            .filter(|e| {
                e["entry"]["user"] == user
                    && e["entry"]["allowed"] == allowed
                    && e["entry"]["slide"] == slide.as_str()
            })
            .map(|e| e["entry"]["action"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    let hers = by("jsmith (pathologist)", true);
    assert!(
        hers.iter().any(|a| a == "view") && hers.iter().any(|a| a == "fetch_tiles"),
        "{entries:#?}"
    );
    assert!(!by("akhan (student)", false).is_empty(), "{entries:#?}");
    assert!(by("akhan (student)", true).is_empty(), "{entries:#?}");
    let mine = run_ok(
        node.cmd()
            .args(["audit", "show", "--json", "--user", "RR8/jsmith"]),
    );
    assert!(mine.lines().count() > 0, "{mine}");
}
