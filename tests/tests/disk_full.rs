//! A full disk during ingest: the failing slide is reported as such, nothing of it is left
//! behind, and the slides already held keep verifying and serving. A full disk under
//! `serve`: no view is answered before its audit entry is on disk; while the log cannot be
//! written views fail (503), and after a restart with room again they are served.
//!
//! The node's data directory lives on a small tmpfs mounted for the test, so this test needs
//! root (CI and the project's machines run as root).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use slidemesh_e2e::{
    Node, PROXY_SECRET, PROXY_SECRET_HEADER, SMALL, bin, files_under, run, run_ok, synth,
};

/// A tmpfs of a few megabytes, unmounted on drop.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(path).unwrap();
        let out = run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path));
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill up and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

#[test]
fn ingest_on_a_full_disk_fails_cleanly_and_keeps_what_was_there() {
    let work = tempfile::tempdir().unwrap();
    let small = work.path().join("small");
    let large = work.path().join("large");
    synth(&small, &[SMALL, &["--seed", "21"]].concat());
    synth(&large, &["--size", "30MB", "--seed", "22"]);
    let disk = SmallDisk::mount(&work.path().join("disk"), "16m");
    let data = disk.path.join("node");
    let node = |args: &[&str]| {
        let mut cmd = Command::new(bin("slidemesh"));
        cmd.arg("--data").arg(&data).args(args);
        cmd
    };
    run_ok(&mut node(&["init", "--trust", "RCF"]));

    let out = run(node(&["ingest", "--json", "--keep", "copy"]).arg(&small));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let out = run(node(&["ingest", "--json", "--keep", "copy"]).arg(&large));
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["slides"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    let errors: Vec<&str> = report["failures"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["error"].as_str())
        .collect();
    assert!(
        errors.iter().any(|e| e.contains("disk full")),
        "the failure says the disk is full: {errors:#?}"
    );

    // Nothing of the failed slide is left: only the first slide's originals, no staging files.
    assert_eq!(
        files_under(&data.join("objects")).unwrap().len(),
        files_under(&small).unwrap().len()
    );
    assert!(files_under(&data.join("tmp")).unwrap().is_empty());
    let listed: Value = serde_json::from_str(&run_ok(&mut node(&["slides", "--json"]))).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(
        run(&mut node(&["verify"])).status.success(),
        "the slide already held still verifies"
    );
}

/// Fills the file system holding `dir` with one file, to the last byte it takes.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    for chunk in [1 << 20, 4096, 1] {
        let block = vec![0u8; chunk];
        while file
            .write_all(&block)
            .and_then(|_| file.sync_data())
            .is_ok()
        {}
    }
    path
}

#[test]
fn a_full_disk_under_serve_never_serves_a_view_it_could_not_log() {
    let work = tempfile::tempdir().unwrap();
    let slides = work.path().join("slides");
    synth(&slides, &[SMALL, &["--seed", "41"]].concat());
    let disk = SmallDisk::mount(&work.path().join("disk"), "24m");
    let mut node = Node::init_at("RCF", disk.path.join("node"));
    let (code, report) = node.ingest(&[&slides]);
    assert_eq!(code, 0, "{report:#}");
    // Views by named people (the trust's sign-on proxy names them): each new person's first
    // view is a new audit entry, so the log keeps growing.
    node.behind_proxy("[\"127.0.0.1\"]");
    node.serve();
    let slide = report["slides"][0]["slide_id"]
        .as_str()
        .unwrap()
        .to_string();
    let view = |node: &Node, person: &str| {
        node.get_with(
            &format!("/api/v1/slides/{slide}/levels/0/tiles/0/0"),
            &[
                (PROXY_SECRET_HEADER, PROXY_SECRET),
                ("x-slidemesh-user", person),
                ("x-slidemesh-role", "pathologist"),
            ],
        )
    };
    assert_eq!(
        view(&node, "before").status,
        200,
        "a view with room on the disk"
    );

    // No room left. The log's file still has free pages for a while (redb reuses them, so
    // a full disk does not stop it at once); new people keep viewing until it must grow.
    let filler = fill(&disk.path);
    let mut served = Vec::new();
    let mut refused = None;
    for i in 0..20_000 {
        let person = format!("p{i}");
        let r = view(&node, &person);
        match r.status {
            200 => served.push(person),
            503 => {
                refused = Some((person, String::from_utf8_lossy(&r.body).into_owned()));
                break;
            }
            other => panic!(
                "a view on a full disk answered {other}: {}",
                String::from_utf8_lossy(&r.body)
            ),
        }
    }
    let (refused, reason) = refused.expect("the log could not grow on the full disk");
    assert!(reason.contains("audit"), "the refusal says why: {reason}");

    // Still failed a moment later (503, or 502 once the store itself reports the failed
    // database): the writer keeps the entry and retries, and nothing it covers is served.
    let still = view(&node, &refused).status;
    assert!(
        (500..600).contains(&still),
        "a retried view answered {still}"
    );

    // Room again. redb refuses every write on a database handle that saw an I/O error
    // ("close and re-open"), so the log recovers with a restart of `serve`, not by itself.
    std::fs::remove_file(&filler).unwrap();
    node.stop();
    node.serve();
    let again = view(&node, &refused);
    assert_eq!(
        again.status,
        200,
        "{}",
        String::from_utf8_lossy(&again.body)
    );
    // Every view answered 200 is in the log, by name.
    let log = run_ok(node.cmd().args(["audit", "show", "--json"]));
    let logged: std::collections::HashSet<String> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["entry"]["allowed"] == true)
        .filter_map(|e| e["entry"]["user"].as_str().map(str::to_string))
        .collect();
    let unlogged: Vec<&String> = served
        .iter()
        .chain([&refused])
        .filter(|p| !logged.contains(&format!("{p} (pathologist)")))
        .collect();
    assert!(
        unlogged.is_empty(),
        "{} views served on the full disk, {} of them not in the log: {:?}",
        served.len(),
        unlogged.len(),
        &unlogged[..unlogged.len().min(5)]
    );
    println!(
        "served {} views on the full disk before the log could not grow",
        served.len()
    );
}
