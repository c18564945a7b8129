//! Harness for end-to-end tests: real `slidemesh` and `slidemesh-tools` processes, real
//! data directories, real HTTP on loopback (port 0, so tests run in parallel).
//!
//! The binaries are found beside the test executable (`target/<profile>/`), so
//! `cargo build --workspace --bins` must run first; the README's test command does that.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Path of a workspace binary built in the same profile as this test.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins` (the README's test command does)",
        path.display()
    );
    path
}

/// The Python interpreter with the independent readers (wsidicom, pydicom, pillow, numpy,
/// dicomweb-client): the project's `.venv` (made by `scripts/setup`) unless
/// `SLIDEMESH_PYTHON` names another. Missing is a failure, not a skip: these tests are the
/// proof that other software reads what we write and serve.
pub fn python() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let python = std::env::var_os("SLIDEMESH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            assert!(
                venv.is_file(),
                "no Python with wsidicom: run scripts/setup (it creates .venv), or set \
                 SLIDEMESH_PYTHON to a Python with wsidicom, pillow, numpy and dicomweb-client"
            );
            venv
        });
    let probe = run(Command::new(&python).args([
        "-c",
        "import wsidicom, PIL, numpy, pydicom, dicomweb_client",
    ]));
    assert!(
        probe.status.success(),
        "{} cannot import wsidicom/pillow/numpy/dicomweb-client: run scripts/setup\n{}",
        python.display(),
        String::from_utf8_lossy(&probe.stderr)
    );
    python
}

/// Runs `tests/python/check_wsidicom.py`, which opens a generated slide with wsidicom and
/// compares its pixels with the generator's. `generated` is what `synth --json` printed for
/// the slide; `source` is the slide directory, or `--dicomweb URL`.
pub fn wsidicom_check(generated: &Value, work: &Path, source: &[&std::ffi::OsStr]) -> Output {
    let manifest = work.join(format!(
        "check-{}.json",
        generated["series_uid"].as_str().unwrap_or("slide")
    ));
    std::fs::write(&manifest, generated.to_string()).expect("write manifest");
    run(Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("python/check_wsidicom.py"))
        .arg("--tools")
        .arg(bin("slidemesh-tools"))
        .arg("--manifest")
        .arg(&manifest)
        .args(source))
}

/// A dcmtk tool, failing clearly when dcmtk is not installed.
pub fn dcmtk(tool: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} (dcmtk) is missing: run scripts/setup, or apt-get install dcmtk"
    );
    Command::new(tool)
}

/// The AE title the tests' scanner calls from (listed in `[dimse] calling_ae_titles`).
pub const SCANNER_AE: &str = "SCANNER1";

/// dcmtk's `storescu` pushing `files` from [`SCANNER_AE`] to a node's DICOM receiver at
/// `host`:`port`, proposing the files' own transfer syntax; its output, success or not.
pub fn storescu(host: &str, port: &str, files: &[impl AsRef<std::ffi::OsStr>]) -> Output {
    run(dcmtk("storescu")
        .args([
            "-R",
            "-xy",
            "-aet",
            SCANNER_AE,
            "-aec",
            "SLIDEMESH",
            host,
            port,
        ])
        .args(files))
}

/// Runs a command to completion, failing with its output if it could not start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command that must fail, returning what it said on stderr.
pub fn run_refused(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        !out.status.success(),
        "{cmd:?} succeeded but should have been refused\nstdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a command that must succeed, returning its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Generates synthetic slides with `slidemesh-tools synth` (with `--count K` one folder
/// per slide); returns the tool's JSON line for each slide.
pub fn synth(out: &Path, extra: &[&str]) -> Vec<Value> {
    let stdout = run_ok(
        Command::new(bin("slidemesh-tools"))
            .arg("synth")
            .arg("--out")
            .arg(out)
            .arg("--json")
            .args(extra),
    );
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("synth printed invalid JSON ({e}): {l}"))
        })
        .collect()
}

/// The file of every instance of a slide `synth` generated.
pub fn instance_files(generated: &Value) -> Vec<String> {
    generated["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| i["path"].as_str().expect("path").to_string())
        .collect()
}

/// A small slide (48 level-0 tiles, 4 levels, label/overview/thumbnail) for fast tests.
pub const SMALL: &[&str] = &["--width", "2048", "--height", "1536", "--tile", "256"];

/// Writes the LIMS's consent sidecar (`consent.json`, read at ingest) into every folder
/// under `dir` holding DICOM files: `record` applies to every series there.
pub fn consent_sidecars(dir: &Path, record: &str) {
    let mut folders = std::collections::BTreeSet::new();
    for file in files_under(dir).expect("generated files") {
        if file.extension().is_some_and(|e| e == "dcm") {
            folders.insert(file.parent().expect("a folder").to_path_buf());
        }
    }
    for folder in folders {
        std::fs::write(folder.join("consent.json"), record).expect("write consent.json");
    }
}

/// The secret the tests' stand-in for a sign-on proxy sends ([`Node::behind_proxy`]).
pub const PROXY_SECRET: &str = "a-test-sign-on-proxy-secret-0f3e9b";
/// The header it sends it in (the node's default).
pub const PROXY_SECRET_HEADER: &str = "x-slidemesh-proxy-secret";

/// One node: a data directory and, once started, its `serve` process.
pub struct Node {
    _dir: tempfile::TempDir,
    pub data: PathBuf,
    pub url: Option<String>,
    server: Option<Child>,
}

impl Node {
    /// A freshly initialised node for `trust`, listening for peers on free loopback ports.
    pub fn init(trust: &str) -> Node {
        Self::init_with(
            trust,
            &[
                "--p2p",
                "/ip4/127.0.0.1/udp/0/quic-v1",
                "--p2p",
                "/ip4/127.0.0.1/tcp/0",
            ],
        )
    }

    /// A node whose peers can dial it at a fixed loopback port (QUIC and TCP), as a roster
    /// entry needs.
    pub fn init_peer(trust: &str) -> Node {
        let port = free_port();
        let quic = format!("/ip4/127.0.0.1/udp/{port}/quic-v1");
        let tcp = format!("/ip4/127.0.0.1/tcp/{port}");
        Self::init_with(trust, &["--p2p", &quic, "--p2p", &tcp])
    }

    /// A node whose data directory is `data` (on a file system the test mounted, say).
    pub fn init_at(trust: &str, data: PathBuf) -> Node {
        Self::init_in(trust, Some(data), &[])
    }

    fn init_with(trust: &str, extra: &[&str]) -> Node {
        Self::init_in(trust, None, extra)
    }

    fn init_in(trust: &str, data: Option<PathBuf>, extra: &[&str]) -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = data.unwrap_or_else(|| dir.path().join("node"));
        let node = Node {
            _dir: dir,
            data,
            url: None,
            server: None,
        };
        run_ok(
            node.cmd()
                .args(["init", "--trust", trust, "--http", "127.0.0.1:0"])
                .args(extra),
        );
        node
    }

    /// The peer id the running server wrote to `serve.json`.
    pub fn peer_id(&self) -> String {
        let info: Value = serde_json::from_slice(
            &std::fs::read(self.data.join("serve.json")).expect("serve.json of a running node"),
        )
        .expect("serve.json is JSON");
        info["peer_id"].as_str().expect("peer_id").to_string()
    }

    /// The node's TCP libp2p address (from its config) with its peer id, for dialling it.
    pub fn tcp_multiaddr(&self) -> String {
        let config = std::fs::read_to_string(self.data.join("config.toml")).expect("config.toml");
        let at = config.find("/tcp/").expect("a tcp listen address");
        let port: String = config[at + 5..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        format!("/ip4/127.0.0.1/tcp/{port}/p2p/{}", self.peer_id())
    }

    /// What is left in the node's staging folder (`tmp/`): empty once every ingest, STOW-RS
    /// request and DICOM association has finished.
    pub fn staging_leftovers(&self) -> Vec<std::ffi::OsString> {
        std::fs::read_dir(self.data.join("tmp"))
            .expect("tmp/ of the node")
            .flatten()
            .map(|e| e.file_name())
            .collect()
    }

    /// `slidemesh --data <this node>`.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(bin("slidemesh"));
        cmd.arg("--data").arg(&self.data);
        cmd
    }

    /// `slidemesh ingest --json PATHS`: exit code and parsed report.
    pub fn ingest(&self, paths: &[&Path]) -> (i32, Value) {
        let out = run(self.cmd().arg("ingest").arg("--json").args(paths));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "ingest printed invalid JSON ({e}):\n{stdout}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), report)
    }

    /// Starts `slidemesh serve` on a free loopback port and waits until it answers.
    pub fn serve(&mut self) -> String {
        self.serve_env(&[])
    }

    /// `serve` with extra environment variables (fault switches).
    pub fn serve_env(&mut self, env: &[(&str, &str)]) -> String {
        self.serve_with(env, &[])
    }

    /// `serve` with extra environment variables and arguments.
    pub fn serve_with(&mut self, env: &[(&str, &str)], args: &[&str]) -> String {
        let args = [&["--http", "127.0.0.1:0"], args].concat();
        let url = self.start(env, &args);
        wait_until(Duration::from_secs(10), || {
            ureq::get(&format!("{url}/api/v1/node")).call().is_ok()
        })
        .expect("server answers");
        url
    }

    /// `serve` on a fixed address (`ADDR:PORT`: URLs registered elsewhere, such as an OpenID
    /// provider's redirect URL, name it) and waits until it answers.
    pub fn serve_on(&mut self, http: &str) -> String {
        let url = self.start(&[], &["--http", http]);
        wait_until(Duration::from_secs(10), || {
            ureq::get(&format!("{url}/api/v1/node")).call().is_ok()
        })
        .expect("server answers");
        url
    }

    /// `serve` over HTTPS (`[http] tls_cert` and `tls_key` set): waits until `agent`, which
    /// trusts the node's certificate, gets an answer.
    pub fn serve_https(&mut self, agent: &ureq::Agent) -> String {
        let url = self.start(&[], &["--http", "127.0.0.1:0"]);
        assert!(url.starts_with("https://"), "not served over TLS: {url}");
        wait_until(Duration::from_secs(10), || {
            agent.get(&format!("{url}/api/v1/node")).call().is_ok()
        })
        .expect("server answers over HTTPS");
        url
    }

    /// `slidemesh serve ARGS`, expected to refuse to start: its error output.
    pub fn serve_refused(&self, args: &[&str]) -> String {
        let mut child = self
            .cmd()
            .arg("serve")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn slidemesh serve");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for serve") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("slidemesh serve {args:?} started instead of refusing");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = child.wait_with_output().expect("serve output");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !status.success(),
            "slidemesh serve {args:?} exited 0:\n{stderr}"
        );
        assert!(
            out.stdout.is_empty(),
            "slidemesh serve {args:?} printed {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
        stderr
    }

    /// Puts the node behind the trust's sign-on proxy (`[users] from = "proxy"`): the proxy
    /// connects from `proxy_addresses` (a TOML list; the tests' client is on loopback) and
    /// sends [`PROXY_SECRET`], kept in the data directory's `proxy-secret`.
    pub fn behind_proxy(&self, proxy_addresses: &str) {
        let secret = self.data.join("proxy-secret");
        std::fs::write(&secret, format!("{PROXY_SECRET}\n")).expect("write proxy-secret");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600))
            .expect("chmod proxy-secret");
        self.edit_config("from = \"none\"", "from = \"proxy\"");
        self.edit_config(
            "proxy_addresses = []",
            &format!("proxy_addresses = {proxy_addresses}"),
        );
        self.edit_config(
            "proxy_secret_file = \"\"",
            "proxy_secret_file = \"proxy-secret\"",
        );
    }

    /// Starts `slidemesh serve ARGS` and returns the URL of its banner, without waiting for
    /// an answer.
    fn start(&mut self, env: &[(&str, &str)], args: &[&str]) -> String {
        let mut child = self
            .cmd()
            .arg("serve")
            .args(args)
            .envs(env.iter().copied())
            .env(
                "RUST_LOG",
                std::env::var("SLIDEMESH_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn slidemesh serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read serve banner");
        let url = line
            .trim()
            .strip_prefix("slidemesh serving ")
            .unwrap_or_else(|| panic!("unexpected banner {line:?}"))
            .to_string();
        self.server = Some(child);
        self.url = Some(url.clone());
        url
    }

    /// Freezes the running server (SIGSTOP: a hung site; connections stay open, nothing is
    /// answered) or thaws it (SIGCONT).
    pub fn freeze(&self, frozen: bool) {
        let child = self.server.as_ref().expect("the node is serving");
        let status = Command::new("kill")
            .arg(if frozen { "-STOP" } else { "-CONT" })
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Kills the server (SIGKILL: a site lost mid-work, nothing flushed) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.server.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    /// Replaces one line of `config.toml` (as `init` wrote it) before the node starts.
    pub fn edit_config(&self, line: &str, replacement: &str) {
        let path = self.data.join("config.toml");
        let config = std::fs::read_to_string(&path).expect("config.toml");
        assert!(
            config.contains(line),
            "config.toml has no {line:?}:\n{config}"
        );
        std::fs::write(&path, config.replace(line, replacement)).expect("write config.toml");
    }

    /// The tile ids of each pyramid level of a slide, from its manifest.
    pub fn level_tiles(&self, slide: &str) -> Vec<Value> {
        self.get_json(&format!("/api/v1/slides/{slide}/manifest"))["manifest"]["levels"]
            .as_array()
            .expect("levels")
            .iter()
            .map(|l| l["tiles"].clone())
            .collect()
    }

    /// What the running server wrote to `serve.json` (addresses, pid, peer id).
    pub fn serve_info(&self) -> Value {
        let text = std::fs::read_to_string(self.data.join("serve.json")).expect("serve.json");
        serde_json::from_str(&text).expect("serve.json is JSON")
    }

    fn base(&self) -> &str {
        self.url.as_deref().expect("node is serving")
    }

    /// GET a path; any status is returned, not raised.
    pub fn get(&self, path: &str) -> Response {
        get(&format!("{}{path}", self.base()), &[])
    }

    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        get(&format!("{}{path}", self.base()), headers)
    }

    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        post(&format!("{}{path}", self.base()), headers, body)
    }

    pub fn get_json(&self, path: &str) -> Value {
        let r = self.get(path);
        assert_eq!(
            r.status,
            200,
            "GET {path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("GET {path}: invalid JSON: {e}"))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A port free on loopback for both TCP and UDP right now.
pub fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let port = tcp.local_addr().expect("addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// An HTTP response, whatever its status.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The payloads of a `multipart/related` body (part headers stripped), checking it is
    /// multipart and properly closed.
    pub fn multipart_parts(&self) -> Vec<Vec<u8>> {
        let content_type = self.header("content-type").expect("content type");
        assert!(
            content_type.starts_with("multipart/related"),
            "not multipart: {content_type}"
        );
        let boundary = content_type
            .split(';')
            .find_map(|p| p.trim().strip_prefix("boundary="))
            .expect("boundary")
            .trim_matches('"');
        // A delimiter is CRLF "--" boundary; the body is read as if it began after a CRLF so
        // the first one looks like the others.
        let delimiter = format!("\r\n--{boundary}");
        let mut body = b"\r\n".to_vec();
        body.extend_from_slice(&self.body);
        let find = |from: usize| {
            body[from..]
                .windows(delimiter.len())
                .position(|w| w == delimiter.as_bytes())
                .map(|p| p + from)
        };
        let mut out = Vec::new();
        let mut at = find(0).expect("first delimiter");
        while let Some(next) = find(at + delimiter.len()) {
            let part = &body[at + delimiter.len()..next];
            let headers_end = part
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .expect("part headers end")
                + 4;
            out.push(part[headers_end..].to_vec());
            at = next;
        }
        assert!(
            body[at + delimiter.len()..].starts_with(b"--"),
            "no closing delimiter"
        );
        out
    }
}

pub fn get(url: &str, headers: &[(&str, &str)]) -> Response {
    send(ureq::get(url), headers, None)
}

/// POSTs `body`; any status is returned, not raised.
pub fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    send(ureq::post(url), headers, Some(body))
}

fn send(mut req: ureq::Request, headers: &[(&str, &str)], body: Option<&[u8]>) -> Response {
    let url = req.url().to_string();
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let result = match body {
        Some(body) => req.send_bytes(body),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{url}: {e}"),
    };
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .map(|n| {
            let v = resp.header(&n).unwrap_or_default().to_string();
            (n, v)
        })
        .collect();
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut body).expect("read body");
    Response {
        status,
        headers,
        body,
    }
}

/// Polls `check` until it is true or the timeout passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("condition not met within {timeout:?}")
}

/// Every file under a folder, for asserting what a node keeps.
pub fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(files_under(&path)?);
        } else {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Runs the headless-Chromium viewer test (tests/browser/viewer.test.mjs) against the web
/// UI at `url`, opening `slide` (or the first slide with a thumbnail), and fails with its
/// output unless it passed. Screenshots go to `$SLIDEMESH_ARTIFACTS/<folder>` (default
/// target/test-artifacts/<folder>), which is returned.
pub fn run_viewer_test(url: &str, slide: Option<&str>, folder: &str) -> PathBuf {
    let mut env = vec![("SLIDEMESH_URL", url)];
    if let Some(slide) = slide {
        env.push(("SLIDEMESH_SLIDE_ID", slide));
    }
    run_browser_script(&["--test", "viewer.test.mjs"], &env, folder)
}

/// Runs `tests/browser/dicomweb-viewer.test.mjs`: dicom-microscopy-viewer, served from
/// another origin, renders the series from `dicomweb` (a node's `/dicomweb` URL) in
/// headless Chromium. Returns the screenshot folder.
pub fn run_dicomweb_viewer_test(
    dicomweb: &str,
    study: &str,
    series: &str,
    folder: &str,
) -> PathBuf {
    run_dicomweb_viewer_with_annotations(dicomweb, study, series, None, folder)
}

/// [`run_dicomweb_viewer_test`], also drawing annotation series `annotations.0` of the study,
/// which holds `annotations.1` marks: the viewer must draw every one.
pub fn run_dicomweb_viewer_with_annotations(
    dicomweb: &str,
    study: &str,
    series: &str,
    annotations: Option<(&str, usize)>,
    folder: &str,
) -> PathBuf {
    let marks = annotations.map(|(_, n)| n.to_string()).unwrap_or_default();
    let mut env = vec![
        ("SLIDEMESH_DICOMWEB", dicomweb),
        ("SLIDEMESH_STUDY", study),
        ("SLIDEMESH_SERIES", series),
    ];
    if let Some((uid, _)) = annotations {
        env.push(("SLIDEMESH_ANN_SERIES", uid));
        env.push(("SLIDEMESH_ANN_MARKS", &marks));
    }
    run_browser_script(&["dicomweb-viewer.test.mjs"], &env, folder)
}

/// Runs `tests/browser/signon.test.mjs`: people sign on at the OpenID provider at `issuer`
/// and use the node at `url` in headless Chromium (`slide`: a slide for clinical care only).
/// Returns the screenshot folder.
pub fn run_signon_test(url: &str, issuer: &str, slide: &str, folder: &str) -> PathBuf {
    run_browser_script(
        &["--test", "signon.test.mjs"],
        &[
            ("SLIDEMESH_URL", url),
            ("SLIDEMESH_ISSUER", issuer),
            ("SLIDEMESH_SLIDE_ID", slide),
        ],
        folder,
    )
}

/// Runs `tests/browser/referral.test.mjs`: a pathologist at the node at `from` refers
/// `slide` to the node at `to` by keyboard in headless Chromium, a pathologist there answers
/// it in a second browser, and every page passes axe-core. Both nodes sit behind sign-on
/// proxies with [`PROXY_SECRET`]. Returns the screenshot folder.
pub fn run_referral_browser_test(from: &str, to: &str, slide: &str, folder: &str) -> PathBuf {
    run_browser_script(
        &["--test", "referral.test.mjs"],
        &[
            ("SLIDEMESH_URL_FROM", from),
            ("SLIDEMESH_URL_TO", to),
            ("SLIDEMESH_SLIDE_ID", slide),
            ("SLIDEMESH_PROXY_SECRET", PROXY_SECRET),
        ],
        folder,
    )
}

/// Runs `tests/browser/research.test.mjs`: a research query built and asked on the web UI of
/// the node at `url` in headless Chromium; `answering` must answer, `down` must be reported
/// as not answering. Returns the screenshot folder.
pub fn run_research_browser_test(
    url: &str,
    answering: &[&str],
    down: &str,
    folder: &str,
) -> PathBuf {
    run_browser_script(
        &["--test", "research.test.mjs"],
        &[
            ("SLIDEMESH_URL", url),
            ("SLIDEMESH_TRUSTS", &answering.join(",")),
            ("SLIDEMESH_DOWN", down),
        ],
        folder,
    )
}

/// The health page's browser test against the node at `url`: `members` listed connected,
/// the replica of `slide` complete. Returns the screenshot folder.
pub fn run_health_browser_test(url: &str, members: &[&str], slide: &str, folder: &str) -> PathBuf {
    run_browser_script(
        &["--test", "health.test.mjs"],
        &[
            ("SLIDEMESH_URL", url),
            ("SLIDEMESH_MEMBERS", &members.join(",")),
            ("SLIDEMESH_SLIDE", slide),
        ],
        folder,
    )
}

/// One site's part of a research answer (query or cohort) by its trust; fails naming the
/// answer when the site is not in it.
pub fn research_site<'a>(answer: &'a Value, trust: &str) -> &'a Value {
    answer["sites"]
        .as_array()
        .unwrap_or_else(|| panic!("no sites in {answer:#}"))
        .iter()
        .find(|s| s["trust"] == trust)
        .unwrap_or_else(|| panic!("{trust} is not in {answer:#}"))
}

/// Runs the headless-Chromium check of the research page's cohort form
/// (tests/browser/cohort.test.mjs) against the node at `url`: `project`'s cohort of the
/// slides `query` selects, `slides` of them given by `approved`, refused by `refusing`.
pub fn run_cohort_browser_test(
    url: &str,
    (project, query): (&str, &str),
    (approved, slides): (&str, usize),
    refusing: &str,
    folder: &str,
) -> PathBuf {
    run_browser_script(
        &["--test", "cohort.test.mjs"],
        &[
            ("SLIDEMESH_URL", url),
            ("SLIDEMESH_PROJECT", project),
            ("SLIDEMESH_QUERY", query),
            ("SLIDEMESH_APPROVED", approved),
            ("SLIDEMESH_SLIDES", &slides.to_string()),
            ("SLIDEMESH_REFUSING", refusing),
        ],
        folder,
    )
}

/// Runs a Node.js script in `tests/browser` with screenshots going to
/// `$SLIDEMESH_ARTIFACTS/<folder>`; fails the test with its output if it fails.
fn run_browser_script(args: &[&str], env: &[(&str, &str)], folder: &str) -> PathBuf {
    let browser_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir()
            && browser_dir
                .join("node_modules/dicom-microscopy-viewer")
                .is_dir()
            && browser_dir.join("node_modules/axe-core").is_dir(),
        "tests/browser/node_modules is missing or stale: run scripts/setup (the README's test \
         command does)"
    );
    let artifacts = std::env::var("SLIDEMESH_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts")
        })
        .join(folder);
    std::fs::create_dir_all(&artifacts).expect("artifacts folder");
    let out = Command::new("node")
        .args(args)
        .current_dir(&browser_dir)
        .envs(env.iter().copied())
        .env("SLIDEMESH_ARTIFACTS", &artifacts)
        .output()
        .expect("run node (Node.js) for the browser test");
    assert!(
        out.status.success(),
        "browser test failed:\n{}\n{}\nscreenshots in {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        artifacts.display()
    );
    artifacts
}

/// A small federation of real nodes for scenario tests.
pub mod federation {
    use std::time::Duration;

    use serde_json::Value;

    use super::{Node, SMALL, run, run_ok, synth, wait_until};

    /// Members with fixed loopback ports, a co-signed roster (quorum 2), and one slide
    /// ingested at the first (the owner).
    pub struct Federation {
        pub nodes: Vec<Node>,
        /// The slide ingested at the first node (the owner).
        pub slide: String,
        /// What `slidemesh-tools synth --json` said about that slide (UIDs, spec).
        pub generated: Value,
        /// Holds `roster.json` (the genesis) and the member entries.
        pub work: tempfile::TempDir,
    }

    pub fn federation(trusts: &[&str]) -> Federation {
        let work = tempfile::tempdir().unwrap();
        let nodes: Vec<Node> = trusts.iter().map(|t| Node::init_peer(t)).collect();
        let slide_dir = work.path().join("slide");
        let generated = synth(&slide_dir, SMALL).remove(0);
        let (code, report) = nodes[0].ingest(&[&slide_dir]);
        assert_eq!(code, 0, "{report}");
        let slide = report["slides"][0]["slide_id"]
            .as_str()
            .unwrap()
            .to_string();
        let mut members = Vec::new();
        for (node, trust) in nodes.iter().zip(trusts) {
            let path = work.path().join(format!("{trust}.json"));
            std::fs::write(&path, run_ok(node.cmd().args(["federation", "member"]))).unwrap();
            members.push(path);
        }
        let roster = work.path().join("roster.json");
        let mut create = nodes[0].cmd();
        create.args([
            "federation",
            "create",
            "--name",
            "test co-op",
            "--quorum",
            "2",
            "--out",
        ]);
        create.arg(&roster);
        for m in &members {
            create.arg("--member").arg(m);
        }
        run_ok(&mut create);
        // One signature of two: publishing must be refused.
        let early = run(nodes[1].cmd().args(["federation", "publish"]).arg(&roster));
        assert!(
            !early.status.success(),
            "a roster short of its quorum was published"
        );
        run_ok(nodes[1].cmd().args(["federation", "sign"]).arg(&roster));
        for node in &nodes {
            run_ok(node.cmd().args(["federation", "publish"]).arg(&roster));
        }
        Federation {
            nodes,
            slide,
            generated,
            work,
        }
    }

    /// Names `replica` a replica of `slide` (a direct-care replicate grant for two hours);
    /// returns the grant id.
    pub fn replicate(owner: &Node, slide: &str, replica: &str) -> String {
        let v: Value = serde_json::from_str(&run_ok(owner.cmd().args([
            "share",
            slide,
            "--with",
            replica,
            "--purpose",
            "direct-care",
            "--until",
            "2h",
            "--replicate",
            "--json",
        ])))
        .unwrap();
        v["grant_id"].as_str().unwrap().to_string()
    }

    /// A second-opinion grant for two hours; returns the grant id.
    pub fn share(owner: &Node, slide: &str, with: &str) -> String {
        share_for(owner, slide, with, "second-opinion", None)
    }

    /// A grant for `purpose` (with an optional reference) for two hours; returns its id.
    pub fn share_for(
        owner: &Node,
        slide: &str,
        with: &str,
        purpose: &str,
        reference: Option<&str>,
    ) -> String {
        share_until(owner, slide, with, purpose, reference, "2h")
    }

    /// A grant for `purpose` ending `until` (a duration such as `20s`, or a date).
    pub fn share_until(
        owner: &Node,
        slide: &str,
        with: &str,
        purpose: &str,
        reference: Option<&str>,
        until: &str,
    ) -> String {
        let mut cmd = owner.cmd();
        cmd.args([
            "share",
            slide,
            "--with",
            with,
            "--purpose",
            purpose,
            "--until",
            until,
            "--json",
        ]);
        if let Some(r) = reference {
            cmd.args(["--reference", r]);
        }
        let v: Value = serde_json::from_str(&run_ok(&mut cmd)).unwrap();
        v["grant_id"].as_str().unwrap().to_string()
    }

    pub fn wait_for_shared(node: &Node, slide: &str) {
        wait_until(Duration::from_secs(30), || {
            node.get_json("/api/v1/slides")["slides"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["slide_id"] == slide && s["origin"] == "shared")
        })
        .expect("the shared slide appears at the grantee");
    }
}
