//! The node's edge, where a hospital network meets it: identity headers count only from the
//! trust's sign-on proxy (its address and its secret); a node without sign-on refuses to
//! listen beyond loopback; storing slides over STOW-RS needs an ingest role; settings that
//! would admit anyone refuse to start, each with a message saying what to configure; a
//! client gets only its share of the server (connections, slow heads, requests at once,
//! STOW-RS body sizes: `[http.limits]`); a node
//! without sign-on answers only under loopback names (a web page's DNS-rebound name is
//! refused); every response carries the security headers; HTTPS with a certificate
//! replaced while serving.

use std::sync::Arc;
use std::time::Duration;

use slidemesh_e2e::{
    Node, PROXY_SECRET, PROXY_SECRET_HEADER, Response, SMALL, instance_files, synth, wait_until,
};

const USER: (&str, &str) = ("x-slidemesh-user", "jsmith");
const PATHOLOGIST: (&str, &str) = ("x-slidemesh-role", "pathologist");
const SECRET: (&str, &str) = (PROXY_SECRET_HEADER, PROXY_SECRET);

fn body(r: &Response) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

#[test]
fn identity_headers_count_only_from_the_sign_on_proxy_with_its_secret() {
    let mut node = Node::init("RR8");
    // The tests' client, on loopback, stands for the proxy.
    node.behind_proxy("[\"127.0.0.1\"]");
    node.serve();
    let r = node.get_with("/api/v1/slides", &[USER, PATHOLOGIST, SECRET]);
    assert_eq!(r.status, 200, "{}", body(&r));
    // Without the secret, or with a wrong one, a name is not believed even from the proxy's
    // address: whoever shares the host could write the headers.
    let r = node.get_with("/api/v1/slides", &[USER, PATHOLOGIST]);
    assert_eq!(r.status, 403, "{}", body(&r));
    assert!(body(&r).contains("sign-on proxy only"), "{}", body(&r));
    let wrong = (PROXY_SECRET_HEADER, "a-test-sign-on-proxy-secret-0f3e9c");
    assert_eq!(
        node.get_with("/api/v1/slides", &[USER, PATHOLOGIST, wrong])
            .status,
        403
    );
    // Refused before anything else: even a malformed name gets 403, not 400, from a stranger.
    assert_eq!(node.get_with("/api/v1/slides", &[USER]).status, 403);
    // Naming no one is still 401 (a person is required), and monitoring still gets its answer.
    assert_eq!(node.get("/api/v1/slides").status, 401);
    assert_eq!(node.get("/api/v1/node").status, 200);
    node.stop();

    // The same request from an address that is not the proxy's: refused, secret or not.
    node.edit_config(
        "proxy_addresses = [\"127.0.0.1\"]",
        "proxy_addresses = [\"10.1.2.0/24\"]",
    );
    node.serve();
    let r = node.get_with("/api/v1/slides", &[USER, PATHOLOGIST, SECRET]);
    assert_eq!(r.status, 403, "{}", body(&r));
    assert!(
        body(&r).contains("not from a proxy address"),
        "{}",
        body(&r)
    );
    assert_eq!(node.get("/api/v1/node").status, 200);
}

#[test]
fn settings_that_would_admit_anyone_refuse_to_start_and_say_what_to_configure() {
    let node = Node::init("RR8");
    // A DICOM receiver must name the senders it admits: an AE title is only a stated name.
    let refused = node.serve_refused(&["--http", "127.0.0.1:0", "--dimse", "127.0.0.1:0"]);
    assert!(
        refused.contains("calling_ae_titles") && refused.contains("SCANNER1"),
        "{refused}"
    );
    // Without sign-on every request acts as the trust: loopback only, HTTP and DICOM alike.
    let refused = node.serve_refused(&["--http", "0.0.0.0:0"]);
    assert!(
        refused.contains("without sign-on") && refused.contains("from = \"proxy\""),
        "{refused}"
    );
    node.edit_config(
        "calling_ae_titles = []",
        "calling_ae_titles = [\"SCANNER1\"]",
    );
    let refused = node.serve_refused(&["--http", "127.0.0.1:0", "--dimse", "0.0.0.0:0"]);
    assert!(refused.contains("refusing to receive DICOM"), "{refused}");

    // The sign-on proxy must be named by address and by secret.
    node.edit_config("from = \"none\"", "from = \"proxy\"");
    let refused = node.serve_refused(&["--http", "127.0.0.1:0"]);
    assert!(refused.contains("needs proxy_addresses"), "{refused}");
    node.edit_config("proxy_addresses = []", "proxy_addresses = [\"127.0.0.1\"]");
    let refused = node.serve_refused(&["--http", "127.0.0.1:0"]);
    assert!(refused.contains("needs proxy_secret_file"), "{refused}");
    node.edit_config(
        "proxy_secret_file = \"\"",
        "proxy_secret_file = \"proxy-secret\"",
    );
    let refused = node.serve_refused(&["--http", "127.0.0.1:0"]);
    assert!(
        refused.contains("cannot read [users] proxy_secret_file"),
        "{refused}"
    );
    std::fs::write(node.data.join("proxy-secret"), "short\n").unwrap();
    let refused = node.serve_refused(&["--http", "127.0.0.1:0"]);
    assert!(refused.contains("fewer than 16"), "{refused}");
    // With sign-on, any web page calling the node with its users' cookies is refused.
    std::fs::write(node.data.join("proxy-secret"), PROXY_SECRET).unwrap();
    node.edit_config("cors_origins = []", "cors_origins = [\"*\"]");
    let refused = node.serve_refused(&["--http", "127.0.0.1:0"]);
    assert!(refused.contains("cors_origins"), "{refused}");
}

/// A `multipart/related` STOW-RS body holding `files`.
fn stow_body(files: &[String]) -> (String, Vec<u8>) {
    let parts: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    multipart(&parts)
}

/// A STOW-RS body of `parts` and its content type.
fn multipart(parts: &[Vec<u8>]) -> (String, Vec<u8>) {
    let boundary = "edge-test-boundary-51c2";
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(part);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (
        format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
        body,
    )
}

#[test]
fn storing_over_stow_rs_needs_an_ingest_role() {
    let tmp = tempfile::tempdir().unwrap();
    let generated = synth(&tmp.path().join("slide"), SMALL).remove(0);
    let (content_type, stow) = stow_body(&instance_files(&generated));
    let mut node = Node::init("RR8");
    node.behind_proxy("[\"127.0.0.1\"]");
    node.serve();
    let store = |who: &[(&str, &str)]| {
        let headers = [&[("Content-Type", content_type.as_str())], who].concat();
        node.post("/dicomweb/studies", &headers, &stow)
    };
    // Refusals come before the body is read, so a client that asks first (`Expect:
    // 100-continue`, as curl does for large uploads) is told without sending the slide.
    let refused = |who: &[(&str, &str)]| {
        let headers = [&[("Content-Type", content_type.as_str())], who].concat();
        ask_before_sending(
            node.url.as_deref().unwrap(),
            "/dicomweb/studies",
            &headers,
            stow.len(),
        )
    };
    // A pathologist views slides but does not store them.
    let (status, answer) = refused(&[USER, PATHOLOGIST, SECRET]);
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("ingest_roles"), "{answer}");
    assert_eq!(refused(&[]).0, 401);
    assert_eq!(refused(&[USER, ("x-slidemesh-role", "lab")]).0, 403);
    let slides = |node: &Node| node.get_with("/api/v1/slides", &[USER, PATHOLOGIST, SECRET]);
    let listed: serde_json::Value = serde_json::from_slice(&slides(&node).body).unwrap();
    assert_eq!(listed["slides"].as_array().unwrap().len(), 0, "{listed}");
    // The scanner's service account has the lab role.
    let r = store(&[
        ("x-slidemesh-user", "scanner-1"),
        ("x-slidemesh-role", "lab"),
        SECRET,
    ]);
    assert_eq!(r.status, 200, "{}", body(&r));
    let listed: serde_json::Value = serde_json::from_slice(&slides(&node).body).unwrap();
    assert_eq!(listed["slides"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["slides"][0]["series_uid"], generated["series_uid"]);
    assert!(node.staging_leftovers().is_empty());
}

/// POSTs headers announcing a `length`-byte body with `Expect: 100-continue`, and returns the
/// node's first answer (status and body) without sending the body: a refusal, unless the node
/// says 100 Continue.
fn ask_before_sending(
    base: &str,
    path: &str,
    headers: &[(&str, &str)],
    length: usize,
) -> (u16, String) {
    use std::io::{BufRead, BufReader, Read, Write};
    let host = base.strip_prefix("http://").unwrap();
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\nExpect: 100-continue\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line {line:?}"));
    let mut content_length = 0;
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            content_length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body).unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The security headers every response carries, whatever answers it.
fn assert_secured(r: &Response, what: &str) {
    let csp = r
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no Content-Security-Policy"));
    for directive in [
        "default-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ] {
        assert!(csp.contains(directive), "{what}: {csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{what}: {csp}"
    );
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{what}");
}

/// Without sign-on every request acts as the trust, so a page that made its own name
/// resolve to 127.0.0.1 (DNS rebinding) must not get answers: only loopback names are.
#[test]
fn without_sign_on_only_loopback_names_are_answered() {
    let mut node = Node::init("RR8");
    let url = node.serve();
    let port = url.rsplit(':').next().unwrap().to_string();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "LOCALHOST".to_string(),
    ] {
        let r = node.get_with("/api/v1/slides", &[("host", &host)]);
        assert_eq!(r.status, 200, "Host {host}: {}", body(&r));
    }
    for host in [
        format!("rebound.example:{port}"),
        "10.0.0.5".to_string(),
        format!("127.0.0.1.rebound.example:{port}"),
    ] {
        let r = node.get_with("/api/v1/slides", &[("host", &host)]);
        assert_eq!(r.status, 421, "Host {host}: {}", body(&r));
        assert!(body(&r).contains("localhost"), "{}", body(&r));
    }
    // The web UI too: the page itself is not handed to a rebound name.
    let r = node.get_with("/", &[("host", "rebound.example")]);
    assert_eq!(r.status, 421);
}

#[test]
fn every_response_carries_the_security_headers() {
    let mut node = Node::init("RR8");
    node.behind_proxy("[\"127.0.0.1\"]");
    node.serve();
    let person = [USER, PATHOLOGIST, SECRET];
    let answers = [
        ("the web UI", node.get_with("/", &person), 200),
        ("a viewer page", node.get_with("/view/abc", &person), 200),
        ("a UI asset", node.get_with("/assets/app.js", &person), 200),
        ("the API", node.get_with("/api/v1/slides", &person), 200),
        ("monitoring", node.get("/api/v1/node"), 200),
        (
            "an unknown API path",
            node.get_with("/api/v1/nothing", &person),
            404,
        ),
        ("DICOMweb", node.get_with("/dicomweb/studies", &person), 200),
        ("an anonymous request", node.get("/api/v1/slides"), 401),
        (
            "a refused name",
            node.get_with("/api/v1/slides", &[USER, PATHOLOGIST]),
            403,
        ),
    ];
    for (what, r, status) in &answers {
        assert_eq!(r.status, *status, "{what}: {}", body(r));
        assert_secured(r, what);
        // HSTS only when the node serves TLS itself (see below).
        assert_eq!(r.header("strict-transport-security"), None, "{what}");
    }
}

/// A certificate authority made for one test.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A server certificate for the node on loopback: (chain PEM, key PEM).
    fn issue(&self) -> (String, String) {
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// An HTTPS client that trusts this CA only.
    fn client(&self) -> ureq::Agent {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        ureq::AgentBuilder::new()
            .tls_config(Arc::new(config))
            .timeout(Duration::from_secs(10))
            .build()
    }
}

/// GET with `agent`: the status and the HSTS header, or the transport error (TLS refused).
fn https_get(agent: &ureq::Agent, url: &str) -> Result<(u16, Option<String>), String> {
    match agent.get(url).call() {
        Ok(r) => Ok((
            r.status(),
            r.header("strict-transport-security").map(String::from),
        )),
        Err(ureq::Error::Status(status, r)) => Ok((
            status,
            r.header("strict-transport-security").map(String::from),
        )),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn https_serves_the_configured_certificate_and_picks_up_a_replaced_one() {
    let mut node = Node::init("RR8");
    node.edit_config("tls_cert = \"\"", "tls_cert = \"tls/cert.pem\"");
    node.edit_config("tls_key = \"\"", "tls_key = \"tls/key.pem\"");
    let tls = node.data.join("tls");
    std::fs::create_dir(&tls).unwrap();
    let write = |(cert, key): &(String, String)| {
        std::fs::write(tls.join("cert.pem"), cert).unwrap();
        std::fs::write(tls.join("key.pem"), key).unwrap();
    };

    // A certificate with another certificate's key does not start.
    let first_ca = Ca::new("slidemesh test CA 1");
    let first = first_ca.issue();
    let other = first_ca.issue();
    write(&(first.0.clone(), other.1.clone()));
    let refused = node.serve_refused(&["--http", "127.0.0.1:0"]);
    assert!(refused.contains("tls_cert"), "{refused}");

    write(&first);
    let client = first_ca.client();
    let url = node.serve_https(&client);
    let (status, hsts) = https_get(&client, &format!("{url}/api/v1/slides")).unwrap();
    assert_eq!(status, 200);
    assert!(
        hsts.is_some_and(|h| h.starts_with("max-age=")),
        "no HSTS over TLS"
    );
    let r = client.get(&format!("{url}/")).call().unwrap();
    assert!(r.header("content-security-policy").is_some());
    // Plain HTTP on the same port gets nothing.
    let plain = url.replacen("https://", "http://", 1);
    assert!(ureq::get(&format!("{plain}/api/v1/node")).call().is_err());

    // The trust renews its certificate (from a new CA here, so the client can tell them
    // apart): new connections get it without a restart.
    let second_ca = Ca::new("slidemesh test CA 2");
    write(&second_ca.issue());
    let renewed = second_ca.client();
    wait_until(Duration::from_secs(15), || {
        https_get(&renewed, &format!("{url}/api/v1/node")).is_ok()
    })
    .expect("the replaced certificate is served");
    let (status, hsts) = https_get(&renewed, &format!("{url}/api/v1/slides")).unwrap();
    assert_eq!(status, 200);
    assert!(hsts.is_some());
    // A client that trusts only the old CA, on a new connection, is now refused.
    assert!(https_get(&first_ca.client(), &format!("{url}/api/v1/node")).is_err());

    // Half-written files leave the last good certificate in use.
    std::fs::write(tls.join("cert.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        https_get(&second_ca.client(), &format!("{url}/api/v1/node"))
            .unwrap()
            .0,
        200
    );
    assert_eq!(node.stop().and_then(|s| s.code()), Some(0));
}

/// Whether the server closed `stream` within `within` (a read returns end of file or an
/// error), having sent nothing.
fn closed_within(stream: &mut std::net::TcpStream, within: Duration) -> bool {
    use std::io::Read;
    stream.set_read_timeout(Some(within)).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// `[http.limits]`: connections over the cap are closed as they arrive, a request head that
/// does not arrive in time closes its connection, requests over the in-flight cap get 503
/// at once, and STOW-RS bodies over their sizes get 413 naming the setting.
#[test]
fn a_client_gets_only_its_share_of_the_http_server() {
    use std::io::Write;
    use std::net::TcpStream;
    let mut node = Node::init("RR8");
    node.edit_config("max_connections = 1024", "max_connections = 4");
    node.edit_config("header_timeout_secs = 30", "header_timeout_secs = 3");
    node.edit_config("max_requests_in_flight = 512", "max_requests_in_flight = 1");
    node.edit_config("stow_max_bytes = 17179869184", "stow_max_bytes = 300000");
    node.edit_config(
        "stow_max_part_bytes = 8589934592",
        "stow_max_part_bytes = 100000",
    );
    let url = node.serve();
    let addr = url.trim_start_matches("http://").to_string();
    // The readiness probe's connection counts until the server has seen it close (once, in
    // CI, it still did when the five below arrived, and two were closed).
    std::thread::sleep(Duration::from_millis(500));

    // Five connections opened (no request yet) under a cap of four: one of them is closed
    // at once. (Which one is the server's tasks' order, not necessarily the last.)
    let mut held: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    held.retain_mut(|c| !closed_within(c, Duration::from_millis(200)));
    assert_eq!(
        held.len(),
        4,
        "one connection over the cap is closed, the others stay"
    );
    // A head that never completes: the connection is closed after the header timeout.
    held[0]
        .write_all(b"GET /api/v1/node HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    assert!(
        closed_within(&mut held[0], Duration::from_secs(8)),
        "a slow request head is cut off"
    );
    held.clear();
    wait_until(Duration::from_secs(5), || {
        node.get("/api/v1/node").status == 200
    })
    .expect("connections are admitted again once others close");
    // A kept-alive connection left idle after its answer is closed too, freeing its place.
    let mut idle = TcpStream::connect(&addr).unwrap();
    idle.write_all(b"GET /api/v1/node HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut answer = [0u8; 4096];
    let read = std::io::Read::read(&mut idle, &mut answer).unwrap();
    assert!(answer[..read].starts_with(b"HTTP/1.1 200"));
    let mut rest = Vec::new();
    idle.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let ended = std::io::Read::read_to_end(&mut idle, &mut rest);
    assert!(
        ended.is_ok(),
        "an idle connection is closed by the server: {ended:?}"
    );

    // STOW-RS bodies over their sizes.
    let (content_type, payload) = multipart(&[vec![0u8; 120_000]]);
    let r = node.post(
        "/dicomweb/studies",
        &[("Content-Type", &content_type)],
        &payload,
    );
    assert_eq!(r.status, 413, "{}", body(&r));
    assert!(body(&r).contains("stow_max_part_bytes"), "{}", body(&r));
    let (content_type, payload) = multipart(&vec![vec![0u8; 90_000]; 4]);
    let r = node.post(
        "/dicomweb/studies",
        &[("Content-Type", &content_type)],
        &payload,
    );
    assert_eq!(r.status, 413, "{}", body(&r));
    assert!(body(&r).contains("stow_max_bytes"), "{}", body(&r));

    // One request in flight (a STOW-RS body still arriving): the next gets 503 at once.
    // (A probe that reaches the server before the STOW-RS request takes its place instead,
    // and the STOW-RS request is the one turned away: then try again.)
    let (content_type, payload) = multipart(&[vec![0u8; 50_000]]);
    let (slow, r) = (0..5)
        .find_map(|_| {
            let mut slow = TcpStream::connect(&addr).unwrap();
            write!(
                slow,
                "POST /dicomweb/studies HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                payload.len()
            )
            .unwrap();
            slow.write_all(&payload[..1000]).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            let r = node.get("/api/v1/slides");
            (r.status == 503).then_some((slow, r))
        })
        .expect("a request while another is in flight gets 503");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(body(&r).contains("max_requests_in_flight"));
    drop(slow);
    wait_until(Duration::from_secs(5), || {
        node.get("/api/v1/slides").status == 200
    })
    .expect("requests are answered again once the slow one ends");
}
