//! Slides made by a tool nobody here wrote: Debian's OrthancWSIDicomizer turns an image into
//! a DICOM WSI pyramid (JPEG 2000, JPEG, or uncompressed; per-frame positions, no Image
//! Type). The node must ingest, verify and serve each, and for the uncompressed pyramid the
//! served level-0 tiles must be exactly the pixels handed to the dicomizer.

use std::path::Path;
use std::process::Command;

use slidemesh_e2e::{Node, bin, run, run_ok};

const WIDTH: usize = 1000;
const HEIGHT: usize = 700;
const TILE: usize = 256;

/// Writes a PNG (which OrthancWSIDicomizer reads) with the generator's pixels.
fn source_image(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
    let raw = dir.join("region.rgb");
    run_ok(
        Command::new(bin("slidemesh-tools"))
            .args([
                "dump-region",
                "--seed",
                "8",
                "--width",
                "4000",
                "--height",
                "3000",
                "--x",
                "1500",
                "--y",
                "1200",
                "--w",
                &WIDTH.to_string(),
                "--h",
                &HEIGHT.to_string(),
                "--out",
            ])
            .arg(&raw),
    );
    let pixels = std::fs::read(&raw).unwrap();
    let path = dir.join("region.png");
    let file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut encoder = png::Encoder::new(file, WIDTH as u32, HEIGHT as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .unwrap()
        .write_image_data(&pixels)
        .unwrap();
    (path, pixels)
}

fn dicomize(input: &Path, out: &Path, compression: &str) {
    std::fs::create_dir_all(out).unwrap();
    let result = run(Command::new("OrthancWSIDicomizer")
        .args([
            "--compression",
            compression,
            "--tile-width",
            "256",
            "--tile-height",
            "256",
            "--pyramid",
            "1",
            "--max-size",
            "0",
            "--folder",
        ])
        .arg(out)
        .arg(input));
    assert!(
        result.status.success(),
        "OrthancWSIDicomizer failed (install it with apt-get install orthanc-wsi; scripts/setup does): {}",
        String::from_utf8_lossy(&result.stderr)
    );
}

#[test]
fn orthanc_wsi_dicomizer_output_ingests_verifies_and_serves() {
    let work = tempfile::tempdir().unwrap();
    let (ppm, pixels) = source_image(work.path());
    for (compression, media_type) in [
        ("none", "application/octet-stream"),
        ("jpeg2000", "image/jp2"),
        ("jpeg", "image/jpeg"),
    ] {
        let out = work.path().join(compression);
        dicomize(&ppm, &out, compression);
        let mut node = Node::init("RR8");
        let (code, report) = node.ingest(&[&out]);
        assert_eq!(code, 0, "{compression}: {report:#}");
        assert!(
            run(node.cmd().arg("verify")).status.success(),
            "{compression}: verify"
        );
        let id = report["slides"][0]["slide_id"]
            .as_str()
            .unwrap()
            .to_string();
        node.serve();
        let detail = node.get_json(&format!("/api/v1/slides/{id}"));
        assert_eq!(
            detail["levels"][0]["width"], WIDTH,
            "{compression}: {detail:#}"
        );
        assert_eq!(detail["levels"][0]["height"], HEIGHT);
        let cols = WIDTH.div_ceil(TILE);
        let rows = HEIGHT.div_ceil(TILE);
        for row in 0..rows {
            for col in 0..cols {
                let r = node.get(&format!("/api/v1/slides/{id}/levels/0/tiles/{col}/{row}"));
                assert_eq!(r.status, 200, "{compression} tile {col},{row}");
                assert_eq!(r.header("content-type"), Some(media_type));
                if compression != "none" {
                    continue;
                }
                // Uncompressed: the tile is 256x256 RGB; inside the image it must equal the
                // source pixels byte for byte.
                assert_eq!(r.body.len(), TILE * TILE * 3);
                for y in 0..TILE.min(HEIGHT - row * TILE) {
                    let w = TILE.min(WIDTH - col * TILE);
                    let src = ((row * TILE + y) * WIDTH + col * TILE) * 3;
                    assert_eq!(
                        &r.body[y * TILE * 3..(y * TILE + w) * 3],
                        &pixels[src..src + w * 3],
                        "tile {col},{row} line {y} differs from the source image"
                    );
                }
            }
        }
    }
}
