//! The synthetic slide generator: deterministic DICOM WSI slides with tissue-like H&E
//! content, for tests, demos and benchmarks.
//!
//! Layout:
//! - `spec`: [`SynthSpec`], what to generate, its validation and pyramid geometry.
//! - `field`: the procedural tissue field every image of a slide is sampled from.
//! - `associated`: slide geometry on the glass, LABEL and OVERVIEW rendering.
//! - `meta`: patient, study, specimen and UIDs derived from the seed.
//! - `encode`: JPEG tiles on all cores, fragments and offset tables.
//! - `icc`: the sRGB ICC profile carried in the optical path.
//! - `dicom`: the WSI data set and writing it as a Part 10 file.
//!
//! [`generate_slide`] writes one file per instance; [`render_region`] gives the exact
//! pixels the generator encoded (before JPEG) so tests can compare decoded images with
//! the truth.

mod associated;
mod dicom;
mod encode;
mod field;
mod icc;
mod meta;
mod spec;

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

pub use dicom::ImageFlavor;
pub use spec::{LEVEL0_PIXEL_SPACING_MM, LevelGeometry, MAX_SIDE, OffsetTableKind, SynthSpec};

use associated::{
    ASSOCIATED_SPACING_MM, GLASS_LONG_MM, GLASS_SHORT_MM, LABEL_MM, LABEL_PX, OVERVIEW_COLUMNS,
    OVERVIEW_ROWS,
};
use dicom::InstanceDesc;
use encode::{encapsulate, encode_jpeg, encode_level_tiles};
use field::Field;
use meta::SlideMeta;

/// One written DICOM instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratedInstance {
    /// Volume (pyramid level), label, overview or thumbnail.
    pub flavor: ImageFlavor,
    /// Pyramid level for volumes; `None` for the associated images.
    pub level: Option<u32>,
    /// Where the file was written.
    pub path: PathBuf,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// TotalPixelMatrixColumns.
    pub width: u32,
    /// TotalPixelMatrixRows.
    pub height: u32,
    /// Frame size (Columns x Rows).
    pub tile_width: u32,
    /// Frame height.
    pub tile_height: u32,
    /// NumberOfFrames.
    pub frames: u32,
    /// Pixel spacing in mm.
    pub pixel_spacing_mm: f64,
    /// Level-0 pixels per image pixel (volumes and thumbnail; 0 for label/overview,
    /// which do not show the scanned area at a whole-pixel scale).
    pub downsample: u32,
    /// File size in bytes.
    pub bytes: u64,
}

/// The result of [`generate_slide`]: everything a test needs to know about the files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratedSlide {
    /// The spec the slide was generated from (reproduces it exactly).
    pub spec: SynthSpec,
    /// StudyInstanceUID shared by all instances.
    pub study_uid: String,
    /// SeriesInstanceUID shared by all instances: the slide's identity in DICOM.
    pub series_uid: String,
    /// FrameOfReferenceUID shared by all instances.
    pub frame_of_reference_uid: String,
    /// PatientID (NHS test-range number).
    pub patient_id: String,
    /// AccessionNumber.
    pub accession_number: String,
    /// Pyramid level geometry, level 0 first.
    pub levels: Vec<LevelGeometry>,
    /// Downsample of the thumbnail relative to level 0.
    pub thumbnail_downsample: u32,
    /// Every written file: levels in order, then label, overview, thumbnail.
    pub instances: Vec<GeneratedInstance>,
    /// Sum of all file sizes.
    pub total_bytes: u64,
    /// Sum of NumberOfFrames over all instances.
    pub total_frames: u64,
}

/// Generate one slide into `out_dir` (created if missing): one file per pyramid level
/// (`level-<n>.dcm`), plus `label.dcm`, `overview.dcm` and `thumbnail.dcm`.
///
/// Deterministic: the same spec writes byte-identical files. Tiles are encoded on all
/// available cores.
pub fn generate_slide(spec: &SynthSpec, out_dir: &Path) -> anyhow::Result<GeneratedSlide> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    generate_slide_with_threads(spec, out_dir, threads)
}

/// [`generate_slide`] with an explicit number of encoder threads (the output does not
/// depend on it).
pub fn generate_slide_with_threads(
    spec: &SynthSpec,
    out_dir: &Path,
    threads: usize,
) -> anyhow::Result<GeneratedSlide> {
    spec.validate()?;
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("creating output directory {}", out_dir.display()))?;
    let meta = SlideMeta::from_spec(spec)?;
    let field = Field::new(spec.seed, spec.width, spec.height);
    let levels = spec.level_geometry();
    let (volume_x, volume_y) = associated::volume_origin_mm(spec);
    let volume_mm = (
        spec.width as f64 * LEVEL0_PIXEL_SPACING_MM,
        spec.height as f64 * LEVEL0_PIXEL_SPACING_MM,
    );
    let mut instances = Vec::new();
    let mut instance_number = 0;
    let mut write = |name: &str,
                     desc: InstanceDesc,
                     level: Option<u32>,
                     downsample: u32|
     -> anyhow::Result<()> {
        let path = out_dir.join(format!("{name}.dcm"));
        let record = GeneratedInstance {
            flavor: desc.flavor,
            level,
            path: path.clone(),
            sop_instance_uid: desc.sop_instance_uid.clone(),
            width: desc.total_columns,
            height: desc.total_rows,
            tile_width: desc.tile_columns,
            tile_height: desc.tile_rows,
            frames: desc.frames,
            pixel_spacing_mm: desc.pixel_spacing_mm,
            downsample,
            bytes: 0,
        };
        dicom::write_instance(dicom::build_instance(&meta, desc), &path)?;
        let bytes = std::fs::metadata(&path)
            .with_context(|| format!("reading the size of {}", path.display()))?
            .len();
        instances.push(GeneratedInstance { bytes, ..record });
        Ok(())
    };

    for geometry in &levels {
        let name = format!("level-{}", geometry.level);
        let frames = encode_level_tiles(
            &field,
            geometry.downsample,
            geometry.tiles_across,
            geometry.tiles_down,
            spec.tile_size,
            spec.jpeg_quality,
            threads,
        )
        .with_context(|| format!("encoding pyramid level {}", geometry.level))?;
        let pixels = encapsulate(frames, spec.offset_table, spec.fragments_per_frame)
            .with_context(|| format!("encapsulating pyramid level {}", geometry.level))?;
        instance_number += 1;
        let desc = InstanceDesc {
            flavor: ImageFlavor::Volume,
            level: geometry.level,
            instance_number,
            sop_instance_uid: meta.instance_uid(&name),
            total_columns: geometry.width,
            total_rows: geometry.height,
            tile_columns: spec.tile_size,
            tile_rows: spec.tile_size,
            frames: geometry.frames(),
            pixel_spacing_mm: LEVEL0_PIXEL_SPACING_MM * geometry.downsample as f64,
            origin_mm: (volume_x, volume_y),
            imaged_mm: volume_mm,
            pixels,
        };
        write(&name, desc, Some(geometry.level), geometry.downsample)?;
    }

    // The associated images are single frames (each at most 1536 px wide); they differ
    // only in pixels, size and where on the glass they sit.
    let mut single = |flavor: ImageFlavor,
                      name: &str,
                      rgb: &[u8],
                      (w, h): (u32, u32),
                      (pixel_spacing_mm, origin_mm, imaged_mm): (f64, (f64, f64), (f64, f64))|
     -> anyhow::Result<InstanceDesc> {
        let jpeg = encode_jpeg(rgb, w, h, spec.jpeg_quality)
            .with_context(|| format!("encoding the {name}"))?;
        let pixels = encapsulate(vec![jpeg], spec.offset_table, spec.fragments_per_frame)?;
        instance_number += 1;
        Ok(InstanceDesc {
            flavor,
            level: 0,
            instance_number,
            sop_instance_uid: meta.instance_uid(name),
            total_columns: w,
            total_rows: h,
            tile_columns: w,
            tile_rows: h,
            frames: 1,
            pixel_spacing_mm,
            origin_mm,
            imaged_mm,
            pixels,
        })
    };
    let glass_origin = associated::glass_origin_mm();
    let label = associated::render_label(&meta);
    let desc = single(
        ImageFlavor::Label,
        "label",
        &label.rgb,
        (LABEL_PX, LABEL_PX),
        (ASSOCIATED_SPACING_MM, glass_origin, (LABEL_MM, LABEL_MM)),
    )?;
    write("label", desc, None, 0)?;

    let overview = associated::render_overview(spec, &field, &label);
    let desc = single(
        ImageFlavor::Overview,
        "overview",
        &overview.rgb,
        (OVERVIEW_COLUMNS, OVERVIEW_ROWS),
        (
            ASSOCIATED_SPACING_MM,
            glass_origin,
            (GLASS_LONG_MM, GLASS_SHORT_MM),
        ),
    )?;
    write("overview", desc, None, 0)?;

    let d = spec.thumbnail_downsample();
    let (tw, th) = (spec.width.div_ceil(d), spec.height.div_ceil(d));
    let thumb = render_region(spec, d, 0, 0, tw, th);
    let desc = single(
        ImageFlavor::Thumbnail,
        "thumbnail",
        &thumb,
        (tw, th),
        (
            LEVEL0_PIXEL_SPACING_MM * d as f64,
            (volume_x, volume_y),
            volume_mm,
        ),
    )?;
    write("thumbnail", desc, None, d)?;

    Ok(GeneratedSlide {
        spec: spec.clone(),
        study_uid: meta.study_uid.clone(),
        series_uid: meta.series_uid.clone(),
        frame_of_reference_uid: meta.frame_of_reference_uid.clone(),
        patient_id: meta.patient_id.clone(),
        accession_number: meta.accession_number.clone(),
        total_bytes: instances.iter().map(|i| i.bytes).sum(),
        total_frames: instances.iter().map(|i| i.frames as u64).sum(),
        levels,
        thumbnail_downsample: d,
        instances,
    })
}

/// The exact RGB8 pixels (row-major, `w * h * 3` bytes) the generator encodes, before
/// JPEG, for the region (`x`, `y`, `w`, `h`) of the image with the given downsample
/// relative to level 0 (2^n for pyramid level n, [`SynthSpec::thumbnail_downsample`] for
/// the thumbnail).
///
/// Depends only on the spec's seed, width and height: the tissue layout scales with the
/// slide size, so a small test slide still shows tissue, edges and background.
/// Regions may extend past the image; the field continues there.
pub fn render_region(spec: &SynthSpec, downsample: u32, x: u32, y: u32, w: u32, h: u32) -> Vec<u8> {
    let field = Field::new(spec.seed, spec.width, spec.height);
    let mut out = Vec::new();
    field.render_into(downsample.max(1) as f32, x, y, w, h, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("slidemesh-synth-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn small_spec(seed: u64) -> SynthSpec {
        let mut spec = SynthSpec::new(seed, 1100, 700);
        spec.tile_size = 256;
        spec
    }

    #[test]
    fn same_spec_gives_identical_files() {
        let spec = small_spec(11);
        let (a, b) = (temp_dir("det-a"), temp_dir("det-b"));
        let ga = generate_slide_with_threads(&spec, &a, 2).unwrap();
        // A different thread count must not change a byte either.
        let gb = generate_slide_with_threads(&spec, &b, 1).unwrap();
        assert_eq!(ga.instances.len(), gb.instances.len());
        assert_eq!(ga.series_uid, gb.series_uid);
        for (x, y) in ga.instances.iter().zip(&gb.instances) {
            let bx = std::fs::read(&x.path).unwrap();
            let by = std::fs::read(&y.path).unwrap();
            assert!(bx == by, "{} differs", x.path.display());
        }
        let other = generate_slide_with_threads(&small_spec(12), &temp_dir("det-c"), 2).unwrap();
        assert_ne!(other.series_uid, ga.series_uid);
        for dir in [a, b, temp_dir("det-c")] {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    #[test]
    fn slide_has_levels_and_associated_images() {
        let spec = small_spec(5);
        let dir = temp_dir("layout");
        let slide = generate_slide(&spec, &dir).unwrap();
        assert_eq!(slide.levels.len(), 4);
        let flavors: Vec<_> = slide.instances.iter().map(|i| i.flavor).collect();
        assert_eq!(
            flavors,
            [
                ImageFlavor::Volume,
                ImageFlavor::Volume,
                ImageFlavor::Volume,
                ImageFlavor::Volume,
                ImageFlavor::Label,
                ImageFlavor::Overview,
                ImageFlavor::Thumbnail
            ]
        );
        assert_eq!(slide.instances[0].frames, 5 * 3);
        assert_eq!(
            (slide.instances[6].width, slide.instances[6].height),
            (367, 234)
        );
        for i in &slide.instances {
            let obj = dicom_object::open_file(&i.path).unwrap();
            let get = |tag| obj.element(tag).unwrap().to_str().unwrap().to_string();
            use dicom_dictionary_std::tags;
            assert_eq!(get(tags::SERIES_INSTANCE_UID), slide.series_uid);
            assert_eq!(get(tags::SOP_INSTANCE_UID), i.sop_instance_uid);
            assert_eq!(get(tags::NUMBER_OF_FRAMES), i.frames.to_string());
            let pixel = obj.element(tags::PIXEL_DATA).unwrap();
            assert_eq!(pixel.fragments().unwrap().len(), i.frames as usize);
            assert_eq!(obj.meta().transfer_syntax(), "1.2.840.10008.1.2.4.50");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn levels_render_the_same_field() {
        // Level n must look like level 0 box-downsampled by 2^n: same colours in the
        // same places, only less detail.
        let spec = SynthSpec::new(21, 6000, 4500);
        let (x0, y0, size) = (2400u32, 1800u32, 512u32);
        let full = render_region(&spec, 1, x0, y0, size, size);
        for level in 1..=3u32 {
            let d = 1u32 << level;
            let n = size / d;
            let low = render_region(&spec, d, x0 / d, y0 / d, n, n);
            let mut diff = 0.0f64;
            let mut mean_low = [0.0f64; 3];
            let mut mean_box = [0.0f64; 3];
            for j in 0..n {
                for i in 0..n {
                    for c in 0..3 {
                        let mut sum = 0u32;
                        for dy in 0..d {
                            for dx in 0..d {
                                let p = ((j * d + dy) * size + i * d + dx) as usize * 3 + c;
                                sum += full[p] as u32;
                            }
                        }
                        let boxed = sum as f64 / (d * d) as f64;
                        let l = low[(j * n + i) as usize * 3 + c] as f64;
                        diff += (boxed - l).abs();
                        mean_low[c] += l;
                        mean_box[c] += boxed;
                    }
                }
            }
            let px = (n * n) as f64;
            let mad = diff / (px * 3.0);
            assert!(mad < 14.0, "level {level}: mean abs diff {mad}");
            for c in 0..3 {
                let delta = (mean_low[c] - mean_box[c]).abs() / px;
                assert!(
                    delta < 4.0,
                    "level {level} channel {c}: mean differs by {delta}"
                );
            }
        }
    }

    #[test]
    fn offset_tables_read_back_with_dicom_object() {
        use dicom_dictionary_std::tags;
        for (kind, per) in [
            (OffsetTableKind::Basic, 1),
            (OffsetTableKind::Basic, 2),
            (OffsetTableKind::Empty, 2),
            (OffsetTableKind::Extended, 1),
        ] {
            let mut spec = SynthSpec::new(31, 700, 520);
            spec.offset_table = kind;
            spec.fragments_per_frame = per;
            let dir = temp_dir(&format!("ot-{}-{per}", kind.as_str()));
            let slide = generate_slide_with_threads(&spec, &dir, 2).unwrap();
            let level0 = &slide.instances[0];
            let obj = dicom_object::open_file(&level0.path).unwrap();
            let pixel = obj.element(tags::PIXEL_DATA).unwrap().value();
            let fragments = pixel.fragments().unwrap();
            let frames = level0.frames as usize;
            assert_eq!(fragments.len(), frames * per as usize);
            assert!(fragments.iter().all(|f| f.len() % 2 == 0));
            // Where each frame's first item starts, counted from the first fragment item.
            let mut starts = Vec::new();
            let mut position = 0u64;
            for (i, f) in fragments.iter().enumerate() {
                if i % per as usize == 0 {
                    starts.push(position);
                }
                position += f.len() as u64 + 8;
            }
            let bot: Vec<u64> = pixel
                .offset_table()
                .unwrap()
                .iter()
                .map(|&o| o as u64)
                .collect();
            let eot = obj.element(tags::EXTENDED_OFFSET_TABLE).ok();
            match kind {
                OffsetTableKind::Basic => {
                    assert_eq!(bot, starts);
                    assert!(eot.is_none());
                }
                OffsetTableKind::Empty => {
                    assert!(bot.is_empty());
                    assert!(eot.is_none());
                }
                OffsetTableKind::Extended => {
                    assert!(bot.is_empty());
                    let offsets = eot.unwrap().uint64_slice().unwrap().to_vec();
                    assert_eq!(offsets, starts);
                    let lengths = obj
                        .element(tags::EXTENDED_OFFSET_TABLE_LENGTHS)
                        .unwrap()
                        .uint64_slice()
                        .unwrap()
                        .to_vec();
                    let want: Vec<u64> = fragments.iter().map(|f| f.len() as u64).collect();
                    assert_eq!(lengths, want);
                }
            }
            // Every frame is one JPEG: SOI at its start, EOI at its end (before padding).
            for frame in fragments.chunks(per as usize) {
                let bytes: Vec<u8> = frame.concat();
                assert_eq!(&bytes[..2], &[0xff, 0xd8]);
                let end = bytes.len() - usize::from(bytes[bytes.len() - 1] == 0);
                assert_eq!(&bytes[end - 2..end], &[0xff, 0xd9]);
            }
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    #[test]
    fn target_size_is_roughly_met() {
        let spec = SynthSpec::for_target_bytes(17, 2_000_000, 256).unwrap();
        let dir = temp_dir("target-size");
        let slide = generate_slide(&spec, &dir).unwrap();
        let ratio = slide.total_bytes as f64 / 2_000_000.0;
        assert!(
            (0.75..1.25).contains(&ratio),
            "got {} bytes",
            slide.total_bytes
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn region_is_tissue_not_flat() {
        let spec = SynthSpec::new(8, 4000, 3000);
        let px = render_region(&spec, 1, 1872, 1372, 256, 256);
        let mean = px.iter().map(|&v| v as f64).sum::<f64>() / px.len() as f64;
        let var = px.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / px.len() as f64;
        assert!(var.sqrt() > 15.0, "std dev {}", var.sqrt());
        // Pink/purple: red and blue above green on average.
        let avg = |c: usize| px.iter().skip(c).step_by(3).map(|&v| v as f64).sum::<f64>();
        assert!(avg(0) > avg(1) && avg(2) > avg(1));
    }
}
