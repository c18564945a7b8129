//! What to generate: `SynthSpec` (the full description of one synthetic slide), its
//! validation, the pyramid geometry it implies, and sizing a slide from a byte budget.
//!
//! A spec is plain data and fully determines the output: the same spec gives
//! byte-identical files on every run and every machine.

use anyhow::{Context, bail, ensure};
use serde::{Deserialize, Serialize};

use super::encode::encode_jpeg;
use super::field::Field;

/// Level-0 pixel spacing in millimetres (0.25 µm/px, a typical 40x scan).
pub const LEVEL0_PIXEL_SPACING_MM: f64 = 0.000_25;

/// Largest level-0 side accepted. 2^20 px is 26 cm at 0.25 µm/px, far beyond a 75 mm
/// glass slide; the limit keeps level geometry and frame counts well inside `u32`.
pub const MAX_SIDE: u32 = 1 << 20;

/// How the frame positions inside the encapsulated Pixel Data are announced.
///
/// Scanners in the wild produce all three, and a node's ingest must handle each, so the
/// generator can produce each on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OffsetTableKind {
    /// A Basic Offset Table with one 32-bit offset per frame (the common case). Cannot
    /// address more than 4 GiB of pixel data in one instance.
    #[default]
    Basic,
    /// An empty Basic Offset Table: readers must walk the fragment items.
    Empty,
    /// An empty Basic Offset Table plus Extended Offset Table (7FE0,0001) and Extended
    /// Offset Table Lengths (7FE0,0002), 64-bit. DICOM allows this only with one fragment
    /// per frame (PS3.3 C.7.6.3.1.8).
    Extended,
}

impl OffsetTableKind {
    /// The lowercase name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            OffsetTableKind::Basic => "basic",
            OffsetTableKind::Empty => "empty",
            OffsetTableKind::Extended => "extended",
        }
    }
}

/// Full description of one synthetic slide. Every field influences the output bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SynthSpec {
    /// Seeds the tissue layout, the patient and specimen data and every UID.
    pub seed: u64,
    /// Level-0 width in pixels (along the slide's long axis).
    pub width: u32,
    /// Level-0 height in pixels.
    pub height: u32,
    /// Tile (frame) side in pixels; 256 or 512 in practice, any multiple of 16 accepted.
    pub tile_size: u32,
    /// JPEG quality 1..=100 of every tile and associated image.
    pub jpeg_quality: u8,
    /// Number of pyramid levels; `None` halves until a level fits in one tile.
    pub levels: Option<u32>,
    /// NHS ODS code of the owning trust; names the institution in the metadata.
    pub trust_ods: String,
    /// How frame positions are announced in the pixel data.
    pub offset_table: OffsetTableKind,
    /// Fragments per frame: 1 normally; 2 exercises readers that must join fragments.
    pub fragments_per_frame: u32,
}

/// Geometry of one pyramid level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelGeometry {
    /// Level index, 0 = full resolution.
    pub level: u32,
    /// Level-0 pixels per level pixel along each axis (2^level).
    pub downsample: u32,
    /// Width in pixels (TotalPixelMatrixColumns).
    pub width: u32,
    /// Height in pixels (TotalPixelMatrixRows).
    pub height: u32,
    /// Tiles per row.
    pub tiles_across: u32,
    /// Tile rows.
    pub tiles_down: u32,
}

impl LevelGeometry {
    /// Number of frames (tiles) in this level.
    pub fn frames(&self) -> u32 {
        self.tiles_across * self.tiles_down
    }
}

impl SynthSpec {
    /// A spec with the given seed and level-0 size and defaults for everything else:
    /// 256 px tiles, quality 80, automatic levels, Leeds (RR8), basic offset table, one
    /// fragment per frame.
    pub fn new(seed: u64, width: u32, height: u32) -> Self {
        SynthSpec {
            seed,
            width,
            height,
            tile_size: 256,
            jpeg_quality: 80,
            levels: None,
            trust_ods: "RR8".to_string(),
            offset_table: OffsetTableKind::Basic,
            fragments_per_frame: 1,
        }
    }

    /// A spec whose generated slide is close to `bytes` in total (all instances), with the
    /// default options and the given tile size. See [`SynthSpec::fit_to_bytes`].
    pub fn for_target_bytes(seed: u64, bytes: u64, tile_size: u32) -> anyhow::Result<Self> {
        let mut spec = SynthSpec::new(seed, tile_size, tile_size);
        spec.tile_size = tile_size;
        spec.fit_to_bytes(bytes)?;
        Ok(spec)
    }

    /// Choose `width` and `height` (aspect 4:3, the shape of a typical scanned area) so
    /// the slide comes out near `bytes`, keeping every other field.
    ///
    /// JPEG size depends on content, so the bytes per tile are measured rather than
    /// assumed: a few sample tiles of level 0 and level 1 are rendered and encoded with
    /// this spec's quality. Expect the result within about 15% of the target.
    pub fn fit_to_bytes(&mut self, bytes: u64) -> anyhow::Result<()> {
        ensure!(bytes > 0, "target size must be positive");
        self.validate_options()?;
        // First guess from a typical 18 KB per 256x256 tile, then one measured correction
        // (the tissue fraction depends on the slide size itself, so the measurement is made
        // on the guessed geometry).
        let mut per_px = 18_000.0 / (256.0 * 256.0);
        for _ in 0..2 {
            let (w, h) = self.dimensions_for(bytes, per_px);
            self.width = w;
            self.height = h;
            per_px = self.measure_bytes_per_level0_pixel();
        }
        let (w, h) = self.dimensions_for(bytes, per_px);
        self.width = w;
        self.height = h;
        Ok(())
    }

    /// Level-0 size for a byte budget given the measured pyramid bytes per level-0 pixel.
    fn dimensions_for(&self, bytes: u64, per_level0_px: f64) -> (u32, u32) {
        // The associated images (label, overview, thumbnail) take roughly 150 KB.
        let budget = (bytes as f64 - 150_000.0).max(bytes as f64 * 0.5);
        let area = budget / per_level0_px.max(1e-6);
        let height = (area * 3.0 / 4.0).sqrt();
        let width = height * 4.0 / 3.0;
        let clamp = |v: f64| (v.round() as u32).clamp(self.tile_size, MAX_SIDE);
        (clamp(width), clamp(height))
    }

    /// Bytes per level-0 pixel of the whole pyramid, estimated from sample tiles spread
    /// over level 0 and level 1 (level 1 costs more per pixel: it carries more detail).
    fn measure_bytes_per_level0_pixel(&self) -> f64 {
        let field = Field::new(self.seed, self.width, self.height);
        let t = self.tile_size;
        let sample = |downsample: u32| -> f64 {
            let (lw, lh) = (
                self.width.div_ceil(downsample),
                self.height.div_ceil(downsample),
            );
            let mut total = 0usize;
            let mut n = 0usize;
            let mut rgb = Vec::new();
            for j in 0..4u32 {
                for i in 0..4u32 {
                    // Centres of a 4x4 grid, snapped to tile boundaries like real tiles.
                    let x = ((lw as u64 * (2 * i as u64 + 1) / 8) as u32 / t) * t;
                    let y = ((lh as u64 * (2 * j as u64 + 1) / 8) as u32 / t) * t;
                    field.render_into(downsample as f32, x, y, t, t, &mut rgb);
                    match encode_jpeg(&rgb, t, t, self.jpeg_quality) {
                        Ok(jpeg) => total += jpeg.len() + 8,
                        Err(_) => continue,
                    }
                    n += 1;
                }
            }
            total as f64 / n.max(1) as f64
        };
        let b0 = sample(1);
        let b1 = sample(2);
        let tile_px = (t as f64) * (t as f64);
        // Level 0 has T tiles, level 1 T/4, level 2 T/16, ...: b0*T + b1*T/3 in total.
        (b0 + b1 / 3.0) / tile_px
    }

    /// Check every field; error messages name the field and the accepted range.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            (1..=MAX_SIDE).contains(&self.width) && (1..=MAX_SIDE).contains(&self.height),
            "slide size {}x{} is out of range: each side must be 1..={MAX_SIDE} px",
            self.width,
            self.height
        );
        self.validate_options()?;
        if let Some(levels) = self.levels {
            let max = self.max_levels();
            ensure!(
                (1..=max).contains(&levels),
                "levels {levels} is out of range: a {}x{} slide has 1..={max} levels",
                self.width,
                self.height
            );
        }
        Ok(())
    }

    /// The checks that do not involve the slide size (used before sizing from bytes).
    fn validate_options(&self) -> anyhow::Result<()> {
        ensure!(
            self.tile_size.is_multiple_of(16) && (64..=4096).contains(&self.tile_size),
            "tile size {} is not supported: use a multiple of 16 in 64..=4096 (256 or 512 \
             are typical)",
            self.tile_size
        );
        ensure!(
            (1..=100).contains(&self.jpeg_quality),
            "jpeg quality {} is out of range: use 1..=100",
            self.jpeg_quality
        );
        ensure!(
            (1..=8).contains(&self.fragments_per_frame),
            "fragments per frame {} is out of range: use 1..=8",
            self.fragments_per_frame
        );
        if self.offset_table == OffsetTableKind::Extended && self.fragments_per_frame != 1 {
            bail!(
                "an extended offset table requires one fragment per frame (DICOM PS3.3 \
                 C.7.6.3.1.8); use --offset-table basic or empty with {} fragments",
                self.fragments_per_frame
            );
        }
        super::meta::institution_for(&self.trust_ods)
            .with_context(|| format!("invalid trust code {:?}", self.trust_ods))?;
        Ok(())
    }

    /// Levels down to a 1x1 image: the most a slide of this size can have.
    fn max_levels(&self) -> u32 {
        let side = self.width.max(self.height);
        32 - (side.max(1) - 1).leading_zeros() + 1
    }

    /// The number of pyramid levels this spec produces.
    pub fn level_count(&self) -> u32 {
        if let Some(levels) = self.levels {
            return levels;
        }
        let mut n = 1;
        let (mut w, mut h) = (self.width, self.height);
        while w > self.tile_size || h > self.tile_size {
            w = w.div_ceil(2);
            h = h.div_ceil(2);
            n += 1;
        }
        n
    }

    /// Geometry of every pyramid level, level 0 first.
    pub fn level_geometry(&self) -> Vec<LevelGeometry> {
        (0..self.level_count())
            .map(|level| {
                let downsample = 1u32 << level;
                let width = self.width.div_ceil(downsample);
                let height = self.height.div_ceil(downsample);
                LevelGeometry {
                    level,
                    downsample,
                    width,
                    height,
                    tiles_across: width.div_ceil(self.tile_size),
                    tiles_down: height.div_ceil(self.tile_size),
                }
            })
            .collect()
    }

    /// Downsample of the THUMBNAIL image: the smallest integer factor at which the whole
    /// slide fits in 512x512 pixels (at least 1).
    pub fn thumbnail_downsample(&self) -> u32 {
        self.width.max(self.height).div_ceil(512).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_halve_until_one_tile() {
        let spec = SynthSpec::new(1, 3000, 1000);
        let levels = spec.level_geometry();
        assert_eq!(levels.len(), 5);
        assert_eq!((levels[0].width, levels[0].height), (3000, 1000));
        assert_eq!((levels[0].tiles_across, levels[0].tiles_down), (12, 4));
        assert_eq!((levels[4].width, levels[4].height), (188, 63));
        assert_eq!(levels[4].frames(), 1);
        assert_eq!(SynthSpec::new(1, 256, 256).level_count(), 1);
        assert_eq!(SynthSpec::new(1, 257, 10).level_count(), 2);
    }

    #[test]
    fn validation_names_the_bad_field() {
        let mut spec = SynthSpec::new(1, 1000, 1000);
        spec.offset_table = OffsetTableKind::Extended;
        spec.fragments_per_frame = 2;
        let err = spec.validate().unwrap_err().to_string();
        assert!(err.contains("one fragment per frame"), "{err}");

        let mut spec = SynthSpec::new(1, 1000, 1000);
        spec.tile_size = 100;
        assert!(
            spec.validate()
                .unwrap_err()
                .to_string()
                .contains("tile size")
        );

        let mut spec = SynthSpec::new(1, 1000, 1000);
        spec.levels = Some(40);
        assert!(spec.validate().unwrap_err().to_string().contains("levels"));
        spec.levels = Some(11);
        spec.validate().unwrap();

        let mut spec = SynthSpec::new(1, 1000, 1000);
        spec.trust_ods = "leeds!".into();
        assert!(spec.validate().is_err());
    }

    #[test]
    fn target_bytes_picks_a_plausible_size() {
        let small = SynthSpec::for_target_bytes(7, 4_000_000, 256).unwrap();
        let large = SynthSpec::for_target_bytes(7, 400_000_000, 256).unwrap();
        small.validate().unwrap();
        // 100x the bytes is about 10x the side.
        let ratio = large.width as f64 / small.width as f64;
        assert!((7.0..14.0).contains(&ratio), "ratio {ratio}");
        assert!(small.width > small.height);
    }
}
