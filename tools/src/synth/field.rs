//! The procedural H&E tissue field: one continuous image per (seed, slide size) that
//! every pyramid level, the thumbnail and the overview sample, so they all agree.
//!
//! A level-n pixel is the field sampled at the centre of its 2^n x 2^n block of level-0
//! pixels, with detail finer than the pixel footprint faded to its mean (like a mipmap),
//! so a lower level looks like a downsampled higher one instead of aliasing noise.
//!
//! Everything is a pure function of (seed, slide size, position, footprint). The per-
//! thread caches below only remember values that are themselves pure functions of their
//! key, which is why [`render_region`](super::render_region) reproduces the generator's
//! pixels exactly. Only IEEE-exact float operations (+ - * / sqrt floor) are used, no
//! transcendental functions, so the pixels are the same on every platform.
//!
//! Cost matters (a 1 GiB slide is ~4 Gpx): lattice noise caches its corner values, the
//! background skips all tissue work, and nuclei are looked up in the 2x2 nearest cells.

/// Side of the jittered grid cell that holds at most one nucleus, in level-0 pixels
/// (44 px = 11 µm at 0.25 µm/px: the spacing of densely packed cells).
const NUCLEUS_CELL: f32 = 44.0;
/// Mean area fraction covered by nuclei at cellularity 1 (pi * E[a*b] / cell^2), used
/// where nuclei are smaller than a pixel.
const NUCLEUS_MEAN_COVER: f32 = 0.14;

const BACKGROUND: [f32; 3] = [243.0, 242.0, 246.0];
const EOSIN_LIGHT: [f32; 3] = [246.0, 208.0, 230.0];
const EOSIN_DARK: [f32; 3] = [208.0, 104.0, 163.0];
const HAEM_LIGHT: [f32; 3] = [148.0, 96.0, 176.0];
const HAEM_DARK: [f32; 3] = [58.0, 30.0, 108.0];

/// Murmur3-style finaliser: a cheap 32-bit mix with good avalanche.
#[inline]
fn mix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x7feb_352d);
    h ^= h >> 15;
    h = h.wrapping_mul(0x846c_a68b);
    h ^ (h >> 16)
}

/// Hash of a lattice point under a per-component seed.
#[inline]
fn hash2(seed: u32, x: i32, y: i32) -> u32 {
    mix32((x as u32).wrapping_mul(0x9e37_79b1) ^ mix32((y as u32) ^ seed))
}

/// A hash as a float in [0, 1).
#[inline]
fn unit(h: u32) -> f32 {
    (h >> 8) as f32 * (1.0 / 16_777_216.0)
}

#[inline]
fn lerp(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}

#[inline]
fn lerp3(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [
        lerp(a[0], b[0], t),
        lerp(a[1], b[1], t),
        lerp(a[2], b[2], t),
    ]
}

#[inline]
fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// 2-D value noise in [0, 1] with its own seed and (possibly anisotropic) wavelength.
/// Remembers the four corner values of the last lattice cell: consecutive pixels usually
/// fall in the same cell, so most samples cost no hashing.
struct Noise {
    seed: u32,
    fx: f32,
    fy: f32,
    key: (i32, i32),
    corners: [f32; 4],
}

impl Noise {
    fn new(seed: u32, wavelength_x: f32, wavelength_y: f32) -> Self {
        Noise {
            seed,
            fx: 1.0 / wavelength_x,
            fy: 1.0 / wavelength_y,
            key: (i32::MIN, i32::MIN),
            corners: [0.0; 4],
        }
    }

    #[inline]
    fn at(&mut self, x: f32, y: f32) -> f32 {
        let px = x * self.fx;
        let py = y * self.fy;
        let gx = px.floor();
        let gy = py.floor();
        let key = (gx as i32, gy as i32);
        if key != self.key {
            let (kx, ky) = key;
            self.key = key;
            self.corners = [
                unit(hash2(self.seed, kx, ky)),
                unit(hash2(self.seed, kx.wrapping_add(1), ky)),
                unit(hash2(self.seed, kx, ky.wrapping_add(1))),
                unit(hash2(self.seed, kx.wrapping_add(1), ky.wrapping_add(1))),
            ];
        }
        let tx = px - gx;
        let ty = py - gy;
        let sx = tx * tx * (3.0 - 2.0 * tx);
        let sy = ty * ty * (3.0 - 2.0 * ty);
        let [c00, c10, c01, c11] = self.corners;
        lerp(lerp(c00, c10, sx), lerp(c01, c11, sx), sy)
    }
}

/// One nucleus candidate of the jittered grid: an ellipse with its own size, angle and
/// darkness. Whether it is drawn depends on the local cellularity (see `presence`).
#[derive(Clone, Copy)]
struct Nucleus {
    key: (i32, i32),
    cx: f32,
    cy: f32,
    /// Quadratic form of the ellipse: q = a*dx^2 + 2b*dx*dy + c*dy^2, q = 1 on the edge.
    qa: f32,
    qb: f32,
    qc: f32,
    /// Squared semi-major axis: pixels farther than this are surely outside.
    reach2: f32,
    /// Semi-minor axis in pixels: converts the normalised edge distance into pixels.
    minor: f32,
    /// Drawn when presence < local cellularity, so denser regions show more nuclei.
    presence: f32,
    /// 0 = pale vesicular nucleus, 1 = dark lymphocyte-like nucleus.
    dark: f32,
}

impl Nucleus {
    fn compute(seed: u32, kx: i32, ky: i32) -> Self {
        let h = hash2(seed, kx, ky);
        let u = |salt: u32| unit(mix32(h ^ salt.wrapping_mul(0x9e37_79b9)));
        // Centres stay 0.15 cell inside their cell and the semi-major axis is at most
        // 0.34 cell, so a pixel can only be covered by a nucleus of one of its 2x2 nearest
        // cells (the others are at least 0.65 cell away).
        let cx = (kx as f32 + 0.15 + 0.7 * u(1)) * NUCLEUS_CELL;
        let cy = (ky as f32 + 0.15 + 0.7 * u(2)) * NUCLEUS_CELL;
        let size = u(3);
        let major = NUCLEUS_CELL * (0.17 + 0.17 * size);
        let minor = major * (0.55 + 0.4 * u(4));
        // Rotation from a rational parametrisation of the half circle: exact float ops
        // instead of sin/cos keep the pixels identical across platforms.
        let t = 2.0 * u(5) - 1.0;
        let n = 1.0 + t * t;
        let (c, s) = ((1.0 - t * t) / n, 2.0 * t / n);
        let (ia, ib) = (1.0 / (major * major), 1.0 / (minor * minor));
        Nucleus {
            key: (kx, ky),
            cx,
            cy,
            qa: c * c * ia + s * s * ib,
            qb: c * s * (ia - ib),
            qc: s * s * ia + c * c * ib,
            reach2: major * major,
            minor,
            presence: u(6),
            // Small nuclei are dark (lymphocytes), large ones paler (epithelium).
            dark: (0.95 - 0.6 * size + 0.25 * (u(7) - 0.5)).clamp(0.0, 1.0),
        }
    }
}

/// Direct-mapped cache of nucleus candidates keyed by cell.
struct NucleusCache {
    seed: u32,
    slots: [Nucleus; 16],
}

impl NucleusCache {
    fn new(seed: u32) -> Self {
        let mut empty = Nucleus::compute(seed, 0, 0);
        empty.key = (i32::MIN, i32::MIN);
        NucleusCache {
            seed,
            slots: [empty; 16],
        }
    }

    #[inline]
    fn get(&mut self, kx: i32, ky: i32) -> Nucleus {
        let slot = ((kx & 3) | ((ky & 3) << 2)) as usize;
        if self.slots[slot].key != (kx, ky) {
            self.slots[slot] = Nucleus::compute(self.seed, kx, ky);
        }
        self.slots[slot]
    }
}

/// The immutable description of one slide's field. Cheap to create; sample it through a
/// [`Sampler`], one per thread.
#[derive(Debug, Clone)]
pub(crate) struct Field {
    seed: u32,
    width: f32,
    height: f32,
    /// Wavelength of the tissue-island noise: islands scale with the slide so a small test
    /// slide still shows tissue, background and edges.
    island: f32,
    /// Per-slide stain variation (stain batches differ), as an RGB offset.
    stain_shift: [f32; 3],
}

impl Field {
    pub(crate) fn new(seed: u64, width: u32, height: u32) -> Self {
        let s = mix32((seed as u32) ^ mix32((seed >> 32) as u32 ^ 0x5eed_5eed));
        let v = |salt: u32| unit(mix32(s ^ salt)) - 0.5;
        Field {
            seed: s,
            width: width.max(1) as f32,
            height: height.max(1) as f32,
            island: (width.min(height).max(64) as f32) * 0.45,
            stain_shift: [10.0 * v(11), 14.0 * v(12), 10.0 * v(13)],
        }
    }

    fn component_seed(&self, k: u32) -> u32 {
        mix32(self.seed ^ k.wrapping_mul(0x85eb_ca6b))
    }

    /// A sampler with fresh caches.
    pub(crate) fn sampler(&self) -> Sampler<'_> {
        let s = |k| self.component_seed(k);
        let isl = self.island;
        Sampler {
            field: self,
            mask: [
                Noise::new(s(1), isl, isl),
                Noise::new(s(2), isl / 2.3, isl / 2.3),
                Noise::new(s(3), isl / 5.1, isl / 5.1),
            ],
            ragged: Noise::new(s(4), 260.0, 260.0),
            holes: [
                Noise::new(s(5), 420.0, 420.0),
                Noise::new(s(6), 150.0, 150.0),
            ],
            region: Noise::new(s(7), (isl / 3.0).max(500.0), (isl / 3.0).max(500.0)),
            cellularity: Noise::new(s(8), 1600.0, 1600.0),
            warp: Noise::new(s(9), 180.0, 180.0),
            orient: Noise::new(s(10), 700.0, 700.0),
            fibre_h: Noise::new(s(11), 70.0, 7.0),
            fibre_v: Noise::new(s(12), 7.0, 70.0),
            nuclei: NucleusCache::new(s(13)),
            grain_seed: s(14),
        }
    }

    /// Render a `w` x `h` region of the level with the given downsample (level-0 pixels
    /// per output pixel), top-left output pixel (`x`, `y`), into `out` as RGB8.
    pub(crate) fn render_into(
        &self,
        downsample: f32,
        x: u32,
        y: u32,
        w: u32,
        h: u32,
        out: &mut Vec<u8>,
    ) {
        let mut sampler = self.sampler();
        out.clear();
        out.reserve(w as usize * h as usize * 3);
        for j in 0..h {
            let fy = ((y + j) as f32 + 0.5) * downsample;
            for i in 0..w {
                let fx = ((x + i) as f32 + 0.5) * downsample;
                out.extend_from_slice(&sampler.sample(fx, fy, downsample));
            }
        }
    }
}

/// Samples a [`Field`]; holds the caches, so create one per thread.
pub(crate) struct Sampler<'a> {
    field: &'a Field,
    mask: [Noise; 3],
    ragged: Noise,
    holes: [Noise; 2],
    region: Noise,
    cellularity: Noise,
    warp: Noise,
    orient: Noise,
    fibre_h: Noise,
    fibre_v: Noise,
    nuclei: NucleusCache,
    grain_seed: u32,
}

impl Sampler<'_> {
    /// The colour at level-0 position (`x`, `y`) for a pixel covering `footprint` level-0
    /// pixels along each axis.
    #[inline]
    pub(crate) fn sample(&mut self, x: f32, y: f32, footprint: f32) -> [u8; 3] {
        let f = self.field;
        // Sensor-like grain, independent per output pixel (a pure function of where the
        // pixel centre is, so regions rendered separately agree).
        let g = unit(hash2(
            self.grain_seed,
            (x * 2.0) as i32,
            (y * 2.0) as i32 ^ footprint.to_bits() as i32,
        ));
        let grain = (g - 0.5) * 5.0;

        // Tissue islands: low-frequency noise, pushed up in the middle of the slide and
        // down near its border so tissue sits on the glass like a real section.
        let rx = x / f.width * 2.0 - 1.0;
        let ry = y / f.height * 2.0 - 1.0;
        let mut m =
            0.5 * self.mask[0].at(x, y) + 0.3 * self.mask[1].at(x, y) + 0.2 * self.mask[2].at(x, y);
        m += 0.3 * (1.0 - (rx * rx + ry * ry));
        m -= 0.6 * smoothstep(0.8, 0.98, rx.abs().max(ry.abs()));
        m += 0.07 * (self.ragged.at(x, y) - 0.5);
        let edge = 0.006 + 0.7 * footprint / f.island;
        let mut alpha = smoothstep(0.56 - edge, 0.56 + edge, m);
        if alpha <= 0.0 {
            return to_rgb(BACKGROUND, grain);
        }

        // Holes: fat cells and gland lumens, whose rims are lined with nuclei.
        let region = self.region.at(x, y);
        let h = 0.65 * self.holes[0].at(x, y) + 0.35 * self.holes[1].at(x, y);
        let hole_level = 0.67 + 0.1 * region;
        let hole_edge = 0.008 + 0.4 * footprint / 420.0;
        alpha *= 1.0 - smoothstep(hole_level - hole_edge, hole_level + hole_edge, h);
        let lining = smoothstep(hole_level - 0.08, hole_level - 0.01, h);

        // Stroma: eosin pink with wavy collagen fibres whose direction varies by region.
        let warp = 60.0 * self.warp.at(x, y);
        let t = smoothstep(0.4, 0.6, self.orient.at(x, y));
        let mut fibre = 0.0;
        if t < 1.0 {
            fibre += (1.0 - t) * self.fibre_h.at(x + warp, y);
        }
        if t > 0.0 {
            fibre += t * self.fibre_v.at(x, y + warp);
        }
        // Fibres are ~5 px wide: fade them out as pixels grow past that.
        let fibre_amp = 1.0 - smoothstep(3.0, 14.0, footprint);
        let fibre = 0.5 + (fibre - 0.5) * fibre_amp;
        let k = (0.3 + 0.35 * region + 1.1 * (fibre - 0.5)).clamp(0.0, 1.0);
        let stroma = lerp3(EOSIN_LIGHT, EOSIN_DARK, k);

        // Nuclei: haematoxylin purple ellipses on a jittered grid, denser in cellular
        // regions and along lumen rims.
        let cell = ((self.cellularity.at(x, y) - 0.3) * 1.6 + 0.8 * lining).clamp(0.05, 0.97);
        let lod = smoothstep(NUCLEUS_CELL * 0.3, NUCLEUS_CELL * 1.2, footprint);
        let mut cover = 0.0f32;
        let mut dark = 0.6f32;
        if lod < 1.0 {
            let gx = x / NUCLEUS_CELL - 0.5;
            let gy = y / NUCLEUS_CELL - 0.5;
            let kx0 = gx.floor() as i32;
            let ky0 = gy.floor() as i32;
            let soft = footprint.max(1.0);
            for (kx, ky) in [
                (kx0, ky0),
                (kx0 + 1, ky0),
                (kx0, ky0 + 1),
                (kx0 + 1, ky0 + 1),
            ] {
                let n = self.nuclei.get(kx, ky);
                if n.presence >= cell {
                    continue;
                }
                let dx = x - n.cx;
                let dy = y - n.cy;
                let reach = n.reach2.sqrt() + soft;
                if dx * dx + dy * dy > reach * reach {
                    continue;
                }
                let q = n.qa * dx * dx + 2.0 * n.qb * dx * dy + n.qc * dy * dy;
                let c = ((1.0 - q.sqrt()) * n.minor / soft + 0.5).clamp(0.0, 1.0);
                if c > cover {
                    cover = c;
                    dark = n.dark;
                }
            }
        }
        let cover = lerp(cover, cell * NUCLEUS_MEAN_COVER, lod);
        let dark = lerp(dark, 0.6, lod);
        // Chromatin texture: the grain, stronger inside nuclei.
        let nucleus = lerp3(
            HAEM_LIGHT,
            HAEM_DARK,
            (dark + 0.12 * (g - 0.5)).clamp(0.0, 1.0),
        );
        let tissue = lerp3(stroma, nucleus, cover * 0.92);

        let mut c = lerp3(BACKGROUND, tissue, alpha);
        for (ch, shift) in c.iter_mut().zip(f.stain_shift) {
            *ch += shift * alpha;
        }
        to_rgb(c, grain)
    }
}

#[inline]
fn to_rgb(c: [f32; 3], grain: f32) -> [u8; 3] {
    let q = |v: f32| (v + grain + 0.5).clamp(0.0, 255.0) as u8;
    [q(c[0]), q(c[1]), q(c[2])]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(field: &Field, d: u32, x: u32, y: u32, w: u32, h: u32) -> Vec<u8> {
        let mut out = Vec::new();
        field.render_into(d as f32, x, y, w, h, &mut out);
        out
    }

    #[test]
    fn regions_agree_whatever_their_origin() {
        // Caches must never change a pixel: a sub-region rendered on its own equals the
        // same pixels cut out of a larger render.
        let field = Field::new(42, 4000, 3000);
        let big = render(&field, 1, 1900, 1400, 200, 100);
        let small = render(&field, 1, 1950, 1430, 60, 40);
        for row in 0..40usize {
            let a = &big[((30 + row) * 200 + 50) * 3..((30 + row) * 200 + 110) * 3];
            let b = &small[row * 60 * 3..(row + 1) * 60 * 3];
            assert_eq!(a, b, "row {row}");
        }
    }

    #[test]
    fn tissue_in_the_middle_background_at_the_corner() {
        let field = Field::new(3, 8000, 6000);
        let corner = render(&field, 1, 0, 0, 64, 64);
        let mean = |px: &[u8]| px.iter().map(|&v| v as f64).sum::<f64>() / px.len() as f64;
        assert!(mean(&corner) > 235.0, "corner should be background");
        // The centre of a slide always holds tissue (the mask is biased up there).
        let centre = render(&field, 4, 1000 - 64, 750 - 64, 128, 128);
        assert!(mean(&centre) < 225.0, "centre should be tissue");
    }
}
