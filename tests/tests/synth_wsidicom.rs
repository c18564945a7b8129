//! Independent-reader check of the synthetic slide generator: slides written by
//! `slidemesh-tools synth` are opened with wsidicom (and pydicom) by
//! `tests/python/check_wsidicom.py`, which compares decoded pixels with the generator's
//! reference pixels (`slidemesh-tools dump-region`).
//!
//! Needs a Python with wsidicom, pillow and numpy: the project's `.venv` (made by
//! `scripts/setup`) or `SLIDEMESH_PYTHON`. Missing is a failure, not a skip: these
//! tests are the only proof that other software reads our files.

use std::path::Path;
use std::process::Output;

use serde_json::Value;
use slidemesh_e2e::{synth, wsidicom_check};

/// Run the checker on one slide directory with its manifest.
fn check(slide_dir: &Path, manifest: &Value) -> Output {
    let work = slide_dir.parent().expect("slide dir has a parent");
    wsidicom_check(manifest, work, &[slide_dir.as_os_str()])
}

fn assert_passes(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: check_wsidicom.py failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Generate one small slide (a few MB, 5 levels) with extra `synth` flags.
fn generate(dir: &Path, seed: u64, extra: &[&str]) -> Value {
    let seed = seed.to_string();
    let mut args = vec!["--seed", seed.as_str(), "--size", "3MB"];
    args.extend_from_slice(extra);
    let mut slides = synth(dir, &args);
    assert_eq!(slides.len(), 1, "synth printed {} slides", slides.len());
    slides.remove(0)
}

#[test]
fn extended_offset_table_reads_back() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("extended");
    let slide = generate(&dir, 101, &["--offset-table", "extended"]);
    assert_passes(&check(&dir, &slide), "extended offset table");
}

#[test]
fn fragmented_frames_read_back() {
    // DICOM allows an extended offset table only with one fragment per frame, so frames
    // split in two come with a basic offset table here (and an empty one below).
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("fragmented");
    let slide = generate(&dir, 102, &["--fragments-per-frame", "2", "--tile", "512"]);
    assert_passes(
        &check(&dir, &slide),
        "two fragments per frame, basic offset table",
    );

    let dir = tmp.path().join("fragmented-empty");
    let slide = generate(
        &dir,
        103,
        &["--fragments-per-frame", "2", "--offset-table", "empty"],
    );
    assert_passes(
        &check(&dir, &slide),
        "two fragments per frame, empty offset table",
    );
}

#[test]
fn empty_basic_offset_table_reads_back() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("empty");
    let slide = generate(&dir, 104, &["--offset-table", "empty", "--trust", "RAE"]);
    assert_passes(&check(&dir, &slide), "empty basic offset table");
}

#[test]
fn checker_rejects_pixels_that_do_not_match() {
    // The check must be able to fail: claim the slide came from another seed, so the
    // reference pixels differ from what is in the files.
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("mismatch");
    let mut slide = generate(&dir, 105, &[]);
    slide["spec"]["seed"] = Value::from(999_105u64);
    let out = check(&dir, &slide);
    assert_eq!(
        out.status.code(),
        Some(1),
        "checker should report a pixel mismatch\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("mean absolute difference"), "{stderr}");
}
