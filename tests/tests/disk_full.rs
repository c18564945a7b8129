//! A full disk during ingest: the failing slide is reported as such, nothing of it is left
//! behind, and the slides already held keep verifying and serving.
//!
//! The node's data directory lives on a small tmpfs mounted for the test, so this test needs
//! root (CI and the project's machines run as root).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use slidemesh_e2e::{SMALL, bin, files_under, run, run_ok, synth};

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
