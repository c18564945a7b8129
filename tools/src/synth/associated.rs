//! The associated images and the slide geometry they share with the pyramid: where the
//! scanned area sits on the 75 x 25 mm glass, the LABEL (text and a 2-D code drawn on a
//! paper label) and the OVERVIEW (the whole glass: label plus tissue seen from above).
//!
//! Slide coordinates follow DICOM's slide coordinate system in millimetres with Image
//! Orientation (Slide) 0\-1\0\-1\0\0: moving right in an image decreases Y, moving down
//! decreases X. The label occupies Y 50..75, the scanned area is centred in Y 0..50.

use super::field::Field;
use super::meta::SlideMeta;
use super::spec::{LEVEL0_PIXEL_SPACING_MM, SynthSpec};

/// Glass slide size in mm: long axis (Y, image columns) and short axis (X, image rows).
pub(crate) const GLASS_LONG_MM: f64 = 75.0;
pub(crate) const GLASS_SHORT_MM: f64 = 25.0;
/// The label covers the last 25 mm of the long axis.
pub(crate) const LABEL_MM: f64 = 25.0;
/// Label image side in pixels; the overview uses the same pixel spacing, so the label
/// appears in the overview pixel for pixel.
pub(crate) const LABEL_PX: u32 = 512;
/// Overview image size: the whole glass at the label's pixel spacing.
pub(crate) const OVERVIEW_COLUMNS: u32 = 1536;
pub(crate) const OVERVIEW_ROWS: u32 = 512;
/// Pixel spacing of label and overview in mm (75 / 1536, exact in binary).
pub(crate) const ASSOCIATED_SPACING_MM: f64 = GLASS_LONG_MM / OVERVIEW_COLUMNS as f64;

/// Slide coordinates (X, Y) in mm of the top-left corner of the scanned area: centred
/// across the glass and in the 50 mm that the label leaves free.
pub(crate) fn volume_origin_mm(spec: &SynthSpec) -> (f64, f64) {
    let width_mm = spec.width as f64 * LEVEL0_PIXEL_SPACING_MM;
    let height_mm = spec.height as f64 * LEVEL0_PIXEL_SPACING_MM;
    (
        GLASS_SHORT_MM / 2.0 + height_mm / 2.0,
        (GLASS_LONG_MM - LABEL_MM) / 2.0 + width_mm / 2.0,
    )
}

/// Slide coordinates (X, Y) in mm of the top-left corner of the label and overview
/// images: the corner of the glass.
pub(crate) fn glass_origin_mm() -> (f64, f64) {
    (GLASS_SHORT_MM, GLASS_LONG_MM)
}

/// 5x7 bitmap glyphs, one byte per row, bit 4 = leftmost column.
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e],
        '1' => [0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e],
        '2' => [0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f],
        '3' => [0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e],
        '4' => [0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02],
        '5' => [0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e],
        '6' => [0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e],
        '7' => [0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e],
        '9' => [0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c],
        'A' => [0x0e, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11],
        'B' => [0x1e, 0x11, 0x11, 0x1e, 0x11, 0x11, 0x1e],
        'C' => [0x0e, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0e],
        'D' => [0x1c, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1c],
        'E' => [0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x1f],
        'F' => [0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x10],
        'G' => [0x0e, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0f],
        'H' => [0x11, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11],
        'I' => [0x0e, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0c],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1f],
        'M' => [0x11, 0x1b, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e],
        'P' => [0x1e, 0x11, 0x11, 0x1e, 0x10, 0x10, 0x10],
        'Q' => [0x0e, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0d],
        'R' => [0x1e, 0x11, 0x11, 0x1e, 0x14, 0x12, 0x11],
        'S' => [0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e],
        'T' => [0x1f, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0a, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0a],
        'X' => [0x11, 0x11, 0x0a, 0x04, 0x0a, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0a, 0x04, 0x04, 0x04],
        'Z' => [0x1f, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1f],
        '-' => [0x00, 0x00, 0x00, 0x1f, 0x00, 0x00, 0x00],
        '&' => [0x0c, 0x12, 0x14, 0x08, 0x15, 0x12, 0x0d],
        '/' => [0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x0c],
        ':' => [0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x0c, 0x00],
        ' ' => [0x00; 7],
        _ => [0x1f, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1f],
    }
}

/// An RGB8 raster with simple drawing operations.
pub(crate) struct Canvas {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

impl Canvas {
    fn new(width: u32, height: u32, colour: [u8; 3]) -> Self {
        Canvas {
            width,
            height,
            rgb: colour.repeat(width as usize * height as usize),
        }
    }

    fn fill(&mut self, x: u32, y: u32, w: u32, h: u32, colour: [u8; 3]) {
        for row in y..(y + h).min(self.height) {
            for col in x..(x + w).min(self.width) {
                let i = (row as usize * self.width as usize + col as usize) * 3;
                self.rgb[i..i + 3].copy_from_slice(&colour);
            }
        }
    }

    /// Draw `text` with its top-left corner at (x, y), each font pixel `scale` px square.
    fn text(&mut self, x: u32, y: u32, scale: u32, text: &str, colour: [u8; 3]) {
        for (n, c) in text.chars().enumerate() {
            let gx = x + n as u32 * 6 * scale;
            for (row, bits) in glyph(c.to_ascii_uppercase()).iter().enumerate() {
                for col in 0..5u32 {
                    if bits & (0x10 >> col) != 0 {
                        self.fill(
                            gx + col * scale,
                            y + row as u32 * scale,
                            scale,
                            scale,
                            colour,
                        );
                    }
                }
            }
        }
    }
}

/// Format a DICOM DA (YYYYMMDD) as DD/MM/YYYY, as a UK lab label would.
fn uk_date(da: &str) -> String {
    if da.len() == 8 {
        format!("{}/{}/{}", &da[6..8], &da[4..6], &da[0..4])
    } else {
        da.to_string()
    }
}

/// The LABEL image: a printed slide label with the trust, stain, accession and block
/// numbers in text, and a 2-D matrix code standing in for the barcode.
pub(crate) fn render_label(meta: &SlideMeta) -> Canvas {
    let paper = [250, 249, 244];
    let ink = [24, 24, 36];
    let mut c = Canvas::new(LABEL_PX, LABEL_PX, paper);
    // A coloured header band, as many labs print per-site label stock.
    c.fill(0, 0, LABEL_PX, 56, [36, 78, 150]);
    c.text(
        16,
        14,
        4,
        &format!("{} H&E", meta.trust_ods),
        [250, 250, 250],
    );
    c.text(16, 76, 3, &meta.accession_number, ink);
    c.text(16, 110, 3, &meta.container_id, ink);
    c.text(16, 144, 3, meta.site.meaning, ink);
    c.text(16, 178, 3, &uk_date(&meta.study_date), ink);
    c.text(16, 212, 2, "SYNTHETIC - NOT A PATIENT", [170, 30, 30]);

    // Data-matrix-like code: solid L finder on the left and bottom, alternating timing
    // pattern on the top and right, data modules from a hash of the container id.
    let modules = 20u32;
    let m = 11u32;
    let (ox, oy) = (16u32, LABEL_PX - 16 - modules * m);
    let mut state = meta
        .container_id
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
    for row in 0..modules {
        for col in 0..modules {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let on = if col == 0 || row == modules - 1 {
                true
            } else if row == 0 || col == modules - 1 {
                (row + col) % 2 == 0
            } else {
                (state >> 61) & 1 == 1
            };
            if on {
                c.fill(ox + col * m, oy + row * m, m, m, ink);
            }
        }
    }
    // A strip of 1-D bars to the right of the matrix.
    let mut x = ox + modules * m + 24;
    while x < LABEL_PX - 24 {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        let bar = 2 + ((state >> 60) as u32 % 4) * 2;
        c.fill(x, oy + 40, bar, modules * m - 40, ink);
        x += bar + 3 + ((state >> 56) as u32 % 4) * 2;
    }
    c
}

/// The OVERVIEW image: the whole glass at low resolution, label on the left, tissue from
/// the same field as the pyramid, seen through grey glass.
pub(crate) fn render_overview(spec: &SynthSpec, field: &Field, label: &Canvas) -> Canvas {
    let glass = [206.0f32, 212.0, 214.0];
    let mut c = Canvas::new(OVERVIEW_COLUMNS, OVERVIEW_ROWS, [206, 212, 214]);
    let sp = ASSOCIATED_SPACING_MM;
    let (x0, y0) = volume_origin_mm(spec);
    let (gx, gy) = glass_origin_mm();
    let footprint = (sp / LEVEL0_PIXEL_SPACING_MM) as f32;
    let mut sampler = field.sampler();
    for r in 0..OVERVIEW_ROWS {
        for col in 0..OVERVIEW_COLUMNS {
            let i = (r as usize * OVERVIEW_COLUMNS as usize + col as usize) * 3;
            if col < LABEL_PX && r < LABEL_PX {
                let j = (r as usize * LABEL_PX as usize + col as usize) * 3;
                c.rgb[i..i + 3].copy_from_slice(&label.rgb[j..j + 3]);
                continue;
            }
            // Pixel centre in slide coordinates, then in level-0 pixels of the volume.
            let sx = gx - (r as f64 + 0.5) * sp;
            let sy = gy - (col as f64 + 0.5) * sp;
            let vc = (y0 - sy) / LEVEL0_PIXEL_SPACING_MM;
            let vr = (x0 - sx) / LEVEL0_PIXEL_SPACING_MM;
            let mut px = glass;
            if vc >= 0.0 && vr >= 0.0 && vc < spec.width as f64 && vr < spec.height as f64 {
                let t = sampler.sample(vc as f32, vr as f32, footprint);
                px = std::array::from_fn(|k| glass[k] * (t[k] as f32 / 246.0).min(1.0));
            }
            // Darker rim where the glass edge refracts the light.
            if !(3..OVERVIEW_ROWS - 3).contains(&r) || col >= OVERVIEW_COLUMNS - 3 {
                px = [150.0, 156.0, 160.0];
            }
            for (out, v) in c.rgb[i..i + 3].iter_mut().zip(px) {
                *out = (v + 0.5) as u8;
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_has_ink_and_paper() {
        let meta = SlideMeta::from_spec(&SynthSpec::new(4, 2000, 1500)).unwrap();
        let label = render_label(&meta);
        assert_eq!(label.rgb.len(), (LABEL_PX * LABEL_PX * 3) as usize);
        let dark = label.rgb.chunks(3).filter(|p| p[0] < 60).count();
        let light = label.rgb.chunks(3).filter(|p| p[0] > 240).count();
        assert!(dark > 10_000 && light > 50_000, "dark {dark} light {light}");
    }

    #[test]
    fn scanned_area_sits_between_label_and_glass_end() {
        let spec = SynthSpec::new(4, 40_000, 30_000);
        let (x, y) = volume_origin_mm(&spec);
        assert!((x - 16.25).abs() < 1e-9);
        assert!((y - 30.0).abs() < 1e-9);
    }
}
