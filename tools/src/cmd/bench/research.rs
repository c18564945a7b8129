//! `bench research`: grouped count queries over the co-operative's slide records.
//!
//! Each site gets `--records` synthetic slide records (`slidemesh-tools records`: facts and
//! the LIMS's word on each case, deterministic from the trust), written straight into its
//! store as ingest and `annotate-lims` would leave them (no DICOM files: what is measured is
//! the query, not ingest).
//!
//! - One node, in process: the query answered from the in-memory index (the running node's
//!   path: budget charged, every consent decided, counted, released exactly; only the audit
//!   entry is not written) beside the same answer with the index rebuilt from the store first
//!   (a full scan: what a node without the in-memory index reads per query), and beside
//!   SQLite (Python's sqlite3, in memory, without and with an index on the filtered columns)
//!   running the same query over the same records, which also checks the counts.
//! - The co-operative: `--sites` real nodes (`slidemesh serve`, one roster, default
//!   disclosure control), the query asked over one node's API of every member (`POST
//!   /api/v1/research/query`), p50 and p99 from sent to the whole answer, beside SQLite
//!   running it over all sites' records in one indexed table (the central database the
//!   co-operative does without). `--delay-ms` puts a relay with that round trip in front of
//!   every node. Every timed query is distinct, so each is charged to the sites' budgets.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};
use slidemesh_node::consent::{DEFAULT_POLICY, Policy};
use slidemesh_node::research::answer::{self, Asker, Site, SiteRules};
use slidemesh_node::research::disclosure::Disclosure;
use slidemesh_node::research::index::FactsIndex;
use slidemesh_node::store::Store;
use slidemesh_protocol::TrustCode;
use slidemesh_protocol::query::{Query, Released};

use super::pair::{init_members, link_members, serve, wait_for};
use super::procs::{sibling, wait_http};
use crate::cmd::records::{Record, add_to_node, records};

#[derive(Debug, Args)]
pub struct ResearchBench {
    /// Slide records per site
    #[arg(long, default_value_t = 200_000)]
    records: usize,
    /// Member nodes (the co-operative has six)
    #[arg(long, default_value_t = 6)]
    sites: usize,
    /// Queries timed end to end (and in process)
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Round-trip delay added in front of every node, in ms (relays)
    #[arg(long, default_value_t = 0)]
    delay_ms: u32,
    /// Working folder for the node data
    #[arg(long, default_value = "target/bench")]
    work: std::path::PathBuf,
}

/// The co-operative's trusts, in order.
const TRUSTS: [&str; 6] = ["RR8", "RAE", "RCD", "RWY", "RXF", "RCF"];

/// The query measured: the issue's example, with the lower age bound varied and an upper
/// year bound no record reaches, so every query is new to the answering sites (charged to
/// the budget, one write each) while the work of counting stays the same.
fn query_text(i: usize) -> String {
    format!(
        "count where anatomic_site = Breast and diagnosis = 413448000 and year between 2022 \
         and 2024 and age_band >= {} and year < {} by trust, grade",
        20 + (i % 7) * 10,
        3000 + i
    )
}

/// The same query in SQL over the table [`write_csv`] fills (consent and opt-out as the
/// default policy and the built-in opt-out rule read them; each generated record has one
/// upper-case consent code and one diagnosis, so plain equality is the node's reading).
fn sql(i: usize) -> String {
    format!(
        "SELECT trust, grade, COUNT(*) FROM r WHERE anatomic_site = 'Breast' AND diagnosis = \
         '413448000' AND year BETWEEN 2022 AND 2024 AND age_band >= {} AND year < {} AND \
         opted_out = 0 AND consent IN ('GRU', 'HMB') GROUP BY trust, grade",
        20 + (i % 7) * 10,
        3000 + i
    )
}

/// Appends a site's records to the CSV the SQLite reference loads.
fn write_csv(out: &mut impl std::io::Write, records: &[Record]) -> Result<()> {
    for r in records {
        let f = &r.facts;
        writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{}",
            f.trust.as_ref().map(TrustCode::as_str).unwrap_or(""),
            f.stain.as_deref().unwrap_or(""),
            f.anatomic_site.as_deref().unwrap_or(""),
            f.year.unwrap_or_default(),
            f.age_band.unwrap_or_default(),
            f.sex.as_deref().unwrap_or(""),
            r.lims.diagnoses.first().map(String::as_str).unwrap_or(""),
            r.lims.grade.map(|g| g.to_string()).unwrap_or_default(),
            r.lims.specimen.as_deref().unwrap_or(""),
            r.lims.consent.first().map(String::as_str).unwrap_or(""),
            u8::from(r.lims.opted_out),
        )?;
    }
    Ok(())
}

/// Loads the CSV into an in-memory SQLite table (with an index on the filtered columns when
/// argv[3] says "index") and runs the queries: the times in ms and the counts of the first.
const SQLITE: &str = r#"
import csv, json, sqlite3, sys, time
db = sqlite3.connect(":memory:")
db.execute("CREATE TABLE r (trust TEXT, stain TEXT, anatomic_site TEXT, year INT, age_band INT, sex TEXT, diagnosis TEXT, grade INT, specimen TEXT, consent TEXT, opted_out INT)")
with open(sys.argv[1]) as f:
    db.executemany("INSERT INTO r VALUES (?,?,?,?,?,?,?,?,?,?,?)", ((*row[:7], int(row[7]) if row[7] else None, *row[8:]) for row in csv.reader(f)))
if sys.argv[3] == "index":
    db.execute("CREATE INDEX r_filter ON r (anatomic_site, diagnosis, year)")
    db.execute("ANALYZE")
queries = json.loads(sys.argv[2])
times, first = [], None
for q in queries:
    t = time.perf_counter()
    rows = db.execute(q).fetchall()
    times.append((time.perf_counter() - t) * 1000)
    if first is None:
        first = rows
print(json.dumps({"ms": times, "counts": first}))
"#;

fn sqlite(python: &Path, csv: &Path, runs: usize, index: bool) -> Result<(Vec<f64>, Value)> {
    let queries: Vec<String> = (0..runs).map(sql).collect();
    let out = std::process::Command::new(python)
        .args(["-c", SQLITE])
        .arg(csv)
        .arg(serde_json::to_string(&queries)?)
        .arg(if index { "index" } else { "scan" })
        .output()
        .context("run python3 for the SQLite reference")?;
    if !out.status.success() {
        bail!(
            "SQLite reference failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let ms = v["ms"]
        .as_array()
        .context("times")?
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    Ok((ms, v["counts"].clone()))
}

/// p50 and p99 of `v` (nearest rank), sorting it.
fn percentiles(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99))
}

/// Exact counts by (trust, grade).
type Counts = BTreeMap<(String, String), u64>;

/// The in-process comparison at one site: times with the index and with a full scan (ms),
/// and the exact counts.
fn one_node(data: &Path, trust: &TrustCode, runs: usize) -> Result<(Vec<f64>, Vec<f64>, Counts)> {
    let store = Store::open(&data.join("store.redb"))?;
    let policy = Policy::from_text(DEFAULT_POLICY)?;
    // Exact counts (no suppression, no noise), so they can be checked against SQLite's.
    let rules = SiteRules {
        disclosure: Disclosure::with_secret(0, 0, [7; 32]),
        budget: u32::MAX,
        trust_budget: u32::MAX,
        window_secs: 86_400,
        hierarchy: Default::default(),
    };
    let ask = |index: &FactsIndex, i: usize| -> Result<Vec<(Vec<Option<String>>, Released)>> {
        let text = query_text(i);
        let query: Query = text.parse()?;
        let answered = answer::answer(
            &Site {
                store: &store,
                index,
                policy: &policy,
                roster: None,
                trust,
                rules: &rules,
            },
            &Asker {
                trust,
                peer_id: "",
                user: None,
                ethics: None,
            },
            &query,
            &text,
            slidemesh_node::store::now_unix(),
        );
        let released = answered
            .outcome
            .map_err(|e| anyhow::anyhow!("refused: {e}"))?;
        Ok(released
            .cells
            .into_iter()
            .map(|c| (c.key, c.count))
            .collect())
    };
    let warm = FactsIndex::default();
    let first = ask(&warm, 0)?;
    let mut indexed = Vec::with_capacity(runs);
    for i in 0..runs {
        let t = Instant::now();
        ask(&warm, i)?;
        indexed.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let mut scanned = Vec::new();
    for i in 0..runs.min(20) {
        let t = Instant::now();
        ask(&FactsIndex::default(), i)?;
        scanned.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let counts = first
        .into_iter()
        .map(|(key, count)| {
            let n = match count {
                Released::Count(n) => n,
                Released::Below(_) => 0,
            };
            let k = |i: usize| key.get(i).cloned().flatten().unwrap_or_default();
            ((k(0), k(1)), n)
        })
        .collect();
    Ok((indexed, scanned, counts))
}

fn post_query(base: &str, text: &str) -> Result<Value> {
    match ureq::post(&format!("{base}/api/v1/research/query"))
        .timeout(Duration::from_secs(30))
        .send_json(json!({ "query": text }))
    {
        Ok(r) => Ok(r.into_json()?),
        Err(ureq::Error::Status(code, r)) => bail!("query answered {code}: {}", r.into_string()?),
        Err(e) => Err(e).context("POST /api/v1/research/query"),
    }
}

pub fn run(args: ResearchBench) -> Result<()> {
    if !(1..=TRUSTS.len()).contains(&args.sites) {
        bail!("--sites is 1 to {}", TRUSTS.len());
    }
    let python = std::env::var_os("SLIDEMESH_PYTHON")
        .map_or_else(|| "python3".into(), std::path::PathBuf::from);
    std::fs::create_dir_all(&args.work)?;
    let work = std::fs::canonicalize(&args.work)?;
    let run_dir = work.join("research-run");
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(&run_dir)?;
    let bin = sibling("slidemesh")?;
    let trusts = &TRUSTS[..args.sites];
    let members = init_members(&bin, &run_dir, trusts)?;

    let started = Instant::now();
    let one_csv = run_dir.join("one-site.csv");
    let all_csv = run_dir.join("all-sites.csv");
    let mut all = std::io::BufWriter::new(std::fs::File::create(&all_csv)?);
    for (i, m) in members.iter().enumerate() {
        let records = records(&m.trust, args.records);
        add_to_node(&m.data, &records)?;
        write_csv(&mut all, &records)?;
        if i == 0 {
            let mut one = std::io::BufWriter::new(std::fs::File::create(&one_csv)?);
            write_csv(&mut one, &records)?;
            one.flush()?;
        }
        let config = m.data.join("config.toml");
        let text = std::fs::read_to_string(&config)?
            .replace("budget = 200", "budget = 1000000")
            .replace("trust_budget = 1000", "trust_budget = 1000000");
        std::fs::write(&config, text)?;
    }
    all.flush()?;
    drop(all);
    eprintln!(
        "{} sites x {} records written in {:.1} s",
        args.sites,
        args.records,
        started.elapsed().as_secs_f64()
    );

    // One node, in process.
    let trust: TrustCode = trusts[0].parse()?;
    let (mut indexed, mut scanned, ours) = one_node(&members[0].data, &trust, args.queries)?;
    let (mut lite, lite_counts) = sqlite(&python, &one_csv, args.queries, false)?;
    let (mut lite_indexed, _) = sqlite(&python, &one_csv, args.queries, true)?;
    let theirs: Counts = lite_counts
        .as_array()
        .context("SQLite counts")?
        .iter()
        .map(|row| {
            let grade = row[1].as_i64().map(|g| g.to_string()).unwrap_or_default();
            (
                (row[0].as_str().unwrap_or("").to_string(), grade),
                row[2].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let (i50, i99) = percentiles(&mut indexed);
    let (s50, s99) = percentiles(&mut scanned);
    let (l50, l99) = percentiles(&mut lite);
    let (x50, x99) = percentiles(&mut lite_indexed);
    println!(
        "one site, {} records, in process ({} queries):",
        args.records, args.queries
    );
    println!("  in-memory index        p50 {i50:8.2} ms  p99 {i99:8.2} ms");
    println!(
        "  full scan of the store p50 {s50:8.2} ms  p99 {s99:8.2} ms  ({:.1}x the index, {} runs)",
        s50 / i50,
        scanned.len()
    );
    println!(
        "  SQLite (in memory)     p50 {l50:8.2} ms  p99 {l99:8.2} ms  (index / SQLite {:.2}x)",
        i50 / l50
    );
    println!(
        "  SQLite with an index   p50 {x50:8.2} ms  p99 {x99:8.2} ms  (index / SQLite {:.2}x)",
        i50 / x50
    );
    println!(
        "  counts agree with SQLite: {}",
        if ours == theirs { "yes" } else { "NO" }
    );
    if ours != theirs {
        println!("    ours {ours:?}\n    SQLite {theirs:?}");
    }

    // The co-operative over its network.
    let linked = link_members(&bin, &run_dir, members, args.delay_ms, false)?;
    let mut servers = Vec::new();
    for m in &linked.members {
        servers.push(serve(&bin, &m.data, &m.http)?);
    }
    for m in &linked.members {
        wait_http(
            &format!("http://{}/api/v1/node", m.http),
            Duration::from_secs(60),
        )?;
    }
    let base = format!("http://{}", linked.members[0].http);
    wait_for(Duration::from_secs(90), || {
        post_query(&base, &query_text(0))
            .map(|a| a["complete"] == true)
            .unwrap_or(false)
    })
    .context("every member answers")?;
    let mut e2e = Vec::with_capacity(args.queries);
    let mut incomplete = 0;
    for i in 0..args.queries {
        let t = Instant::now();
        let answer = post_query(&base, &query_text(i))?;
        e2e.push(t.elapsed().as_secs_f64() * 1000.0);
        if answer["complete"] != true {
            incomplete += 1;
        }
    }
    let (mut central, _) = sqlite(&python, &all_csv, args.queries, true)?;
    let (e50, e99) = percentiles(&mut e2e);
    let (c50, c99) = percentiles(&mut central);
    let link = if args.delay_ms > 0 {
        format!("{} ms round trip", args.delay_ms)
    } else {
        "loopback".to_string()
    };
    println!(
        "{} sites x {} records, over {link} ({} queries from {}'s API):",
        args.sites, args.records, args.queries, trusts[0]
    );
    println!(
        "  every site asked, answer p50 {e50:8.2} ms  p99 {e99:8.2} ms  ({incomplete} partial)"
    );
    println!(
        "  SQLite, all records in one indexed table p50 {c50:8.2} ms  p99 {c99:8.2} ms  (federated / central {:.1}x)",
        e50 / c50
    );
    drop(servers);
    Ok(())
}
