//! Metrics scraped by a real Prometheus (Debian's `prometheus`, issue 19): two nodes, a
//! slide shared from RR8 to RAE and viewed at RAE; Prometheus scrapes both nodes'
//! `/metrics` and its query API then shows the tiles RAE fetched from RR8 (with their
//! latency), the tiles RR8 served RAE, the decisions each logged, and both nodes up and
//! connected. A refused request shows as a refused decision.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use slidemesh_e2e::federation::{federation, share, wait_for_shared};
use slidemesh_e2e::{free_port, get, wait_until};

/// The bearer token both nodes serve their metrics for.
const TOKEN: &str = "a-prometheus-scrape-token-7c1e";

/// Prometheus scraping `targets` every second, its data in `dir`; stopped when dropped.
struct Prometheus {
    child: Child,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(dir: &Path, targets: &[(&str, &str)]) -> Prometheus {
        let config = dir.join("prometheus.yml");
        let jobs: String = targets
            .iter()
            .map(|(trust, address)| {
                format!(
                    "  - job_name: {trust}\n    scrape_interval: 1s\n    authorization:\n      type: Bearer\n      credentials: {TOKEN}\n    static_configs:\n      - targets: ['{address}']\n"
                )
            })
            .collect();
        std::fs::write(&config, format!("scrape_configs:\n{jobs}")).unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run prometheus (Debian's package; scripts/setup installs it)");
        let prometheus = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        wait_until(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && get(&format!("{}/-/ready", prometheus.url), &[]).status == 200
        })
        .expect("Prometheus starts and is ready");
        prometheus
    }

    /// The instant vector of `query`: each series' labels and value.
    fn query(&self, query: &str) -> Vec<(Value, f64)> {
        let mut url = format!("{}/api/v1/query?query=", self.url);
        url.extend(query.bytes().map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        }));
        let response = get(&url, &[]);
        if response.status != 200 {
            return Vec::new();
        }
        let body: Value = serde_json::from_slice(&response.body).unwrap_or_default();
        body["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let value = r["value"][1]
                    .as_str()
                    .unwrap_or("NaN")
                    .parse()
                    .unwrap_or(f64::NAN);
                (r["metric"].clone(), value)
            })
            .collect()
    }

    /// Waits until `query` has a series for which `holds` holds; that series' value.
    fn wait_for(&self, query: &str, holds: impl Fn(&Value, f64) -> bool) -> f64 {
        let mut seen = Vec::new();
        let mut found = None;
        wait_until(Duration::from_secs(60), || {
            seen = self.query(query);
            found = seen
                .iter()
                .find(|(labels, v)| holds(labels, *v))
                .map(|s| s.1);
            found.is_some()
        })
        .unwrap_or_else(|_| panic!("Prometheus never showed {query} as expected: {seen:?}"));
        found.unwrap()
    }
}

#[test]
fn a_real_prometheus_scrapes_what_each_node_served_fetched_and_decided() {
    let mut fed = federation(&["RR8", "RAE"]);
    let slide = fed.slide.clone();
    for node in &fed.nodes {
        node.edit_config(
            "metrics_token = \"\"",
            &format!("metrics_token = \"{TOKEN}\""),
        );
    }
    fed.nodes[0].serve();
    fed.nodes[1].serve();
    let grant = share(&fed.nodes[0], &slide, "RAE");
    wait_for_shared(&fed.nodes[1], &slide);
    // RAE views the slide: its whole coarsest level, fetched from RR8.
    let rae = &fed.nodes[1];
    let detail = rae.get_json(&format!("/api/v1/slides/{slide}"));
    let levels = detail["levels"].as_array().unwrap();
    let coarsest = levels.last().unwrap();
    let index = coarsest["index"].as_u64().unwrap();
    let mut viewed = 0;
    for row in 0..coarsest["rows"].as_u64().unwrap() {
        for col in 0..coarsest["cols"].as_u64().unwrap() {
            let tile = rae.get(&format!(
                "/api/v1/slides/{slide}/levels/{index}/tiles/{col}/{row}"
            ));
            assert_eq!(tile.status, 200);
            viewed += 1;
        }
    }
    // Only a scraper with the token reads them.
    let metrics_url = format!("{}/metrics", fed.nodes[0].url.clone().unwrap());
    assert_eq!(get(&metrics_url, &[]).status, 401);
    assert_eq!(
        get(&metrics_url, &[("authorization", "Bearer not-the-token")]).status,
        401
    );
    let bearer = format!("Bearer {TOKEN}");
    let text = get(&metrics_url, &[("authorization", bearer.as_str())]);
    assert_eq!(text.status, 200);
    assert!(
        text.header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        text.header("content-type")
    );

    let dir = tempfile::tempdir().unwrap();
    let address = |n: usize| {
        fed.nodes[n]
            .url
            .clone()
            .unwrap()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string()
    };
    let (rr8, rae_address) = (address(0), address(1));
    let prometheus = Prometheus::start(dir.path(), &[("RR8", &rr8), ("RAE", &rae_address)]);

    // Both targets up.
    for job in ["RR8", "RAE"] {
        prometheus.wait_for(&format!("up{{job=\"{job}\"}}"), |_, v| v == 1.0);
        prometheus.wait_for(
            &format!("slidemesh_peers_connected{{job=\"{job}\"}}"),
            |_, v| v >= 1.0,
        );
    }
    // RAE fetched the tiles it showed from RR8 (at least those: prefetch may add more) and
    // timed the batches; RR8 served RAE as many or more.
    let fetched = prometheus.wait_for(
        "slidemesh_peer_tiles_fetched_total{job=\"RAE\",peer=\"RR8\"}",
        |_, v| v >= viewed as f64,
    );
    prometheus.wait_for(
        "slidemesh_peer_tiles_served_total{job=\"RR8\",peer=\"RAE\"}",
        |_, v| v >= fetched,
    );
    prometheus.wait_for(
        "slidemesh_peer_fetch_seconds_count{job=\"RAE\",peer=\"RR8\"}",
        |_, v| v >= 1.0,
    );
    prometheus.wait_for(
        "slidemesh_tiles_served_total{job=\"RAE\",source=\"peer\"}",
        |_, v| v >= 1.0,
    );
    // Each side's decisions, as its audit log committed them: RR8 decided RAE's fetches
    // (served), RAE decided for its own people (local) and recorded RR8's answers.
    prometheus.wait_for(
        "slidemesh_decisions_total{job=\"RR8\",side=\"served\",action=\"fetch_tiles\",outcome=\"allowed\"}",
        |_, v| v >= 1.0,
    );
    prometheus.wait_for(
        "slidemesh_decisions_total{job=\"RAE\",side=\"received\",action=\"fetch_tiles\"}",
        |_, v| v >= 1.0,
    );
    prometheus.wait_for("slidemesh_audit_entries_total{job=\"RR8\"}", |_, v| {
        v >= 1.0
    });

    // RR8 revokes the grant: RAE's next tile is refused (by RR8, or by RAE once the
    // revocation reached it), and the refusal is counted.
    slidemesh_e2e::run_ok(fed.nodes[0].cmd().args(["revoke", &grant]));
    let refused = rae.get(&format!("/api/v1/slides/{slide}/levels/0/tiles/0/0"));
    assert_ne!(refused.status, 200);
    prometheus.wait_for(
        "sum(slidemesh_decisions_total{outcome=\"refused\"})",
        |_, v| v >= 1.0,
    );
}
