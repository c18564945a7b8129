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
//! Cost matters (a 1 GiB slide is ~7 Gpx over all levels), so `Field::render_into` works
//! a row at a time: the slowly varying quantities come from a coarse lattice, the
//! arithmetic stages run over arrays the compiler vectorises, fibre noise caches its
//! lattice cell, glass pixels skip the tissue lookups, and each nucleus is drawn over
//! the pixels it can reach instead of every pixel testing four candidates.
//! `Sampler::sample` is the same definition one pixel at a time; a test holds the two
//! equal bit for bit.

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

/// `v` limited to [lo, hi] with plain min/max (`f32::clamp` also checks its bounds and
/// was measurable in the per-pixel path).
#[inline(always)]
fn limit(v: f32, lo: f32, hi: f32) -> f32 {
    v.max(lo).min(hi)
}

#[inline]
fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Floor as an integer without a libm call (x86-64 baseline has no SSE4.1 `roundss`, so
/// `f32::floor` is a function call, and it ran twice per noise sample).
#[inline(always)]
fn floor_i32(v: f32) -> i32 {
    let i = v as i32;
    if (i as f32) > v { i - 1 } else { i }
}

/// 2-D value noise in [0, 1] with its own seed and (possibly anisotropic) wavelength.
///
/// Pixels are sampled along rows, so the noise caches the lattice cell's corner values
/// and their blend for the current row: most samples are one smoothstep and one lerp.
/// The cache holds pure functions of (cell, y), so results never depend on call order.
struct Noise {
    seed: u32,
    fx: f32,
    fy: f32,
    /// Lattice column and the exact y of the cached row blend.
    kx: i32,
    row_y: f32,
    /// Corner values blended along y for the current row: left and right edge.
    left: f32,
    right: f32,
    /// Lattice cell whose corners are cached.
    corner_key: (i32, i32),
    corners: [f32; 4],
}

impl Noise {
    fn new(seed: u32, wavelength_x: f32, wavelength_y: f32) -> Self {
        Noise {
            seed,
            fx: 1.0 / wavelength_x,
            fy: 1.0 / wavelength_y,
            kx: i32::MIN,
            row_y: f32::NAN,
            left: 0.0,
            right: 0.0,
            corner_key: (i32::MIN, i32::MIN),
            corners: [0.0; 4],
        }
    }

    #[inline(always)]
    fn at(&mut self, x: f32, y: f32) -> f32 {
        let px = x * self.fx;
        let kx = floor_i32(px);
        // NaN never compares equal, so the first sample always refills.
        if kx != self.kx || y != self.row_y {
            self.refill(kx, y);
        }
        let tx = px - kx as f32;
        self.left + (self.right - self.left) * (tx * tx * (3.0 - 2.0 * tx))
    }

    #[inline(never)]
    fn refill(&mut self, kx: i32, y: f32) {
        let py = y * self.fy;
        let ky = floor_i32(py);
        if (kx, ky) != self.corner_key {
            self.corner_key = (kx, ky);
            self.corners = [
                unit(hash2(self.seed, kx, ky)),
                unit(hash2(self.seed, kx.wrapping_add(1), ky)),
                unit(hash2(self.seed, kx, ky.wrapping_add(1))),
                unit(hash2(self.seed, kx.wrapping_add(1), ky.wrapping_add(1))),
            ];
        }
        let ty = py - ky as f32;
        let sy = ty * ty * (3.0 - 2.0 * ty);
        let [c00, c10, c01, c11] = self.corners;
        self.left = lerp(c00, c01, sy);
        self.right = lerp(c10, c11, sy);
        self.kx = kx;
        self.row_y = y;
    }
}

/// One nucleus candidate of the jittered grid: an ellipse with its own size, angle and
/// darkness, drawn or not as a whole depending on the cellularity at its centre.
#[derive(Clone, Copy)]
struct Nucleus {
    key: (i32, i32),
    cx: f32,
    cy: f32,
    /// Quadratic form of the ellipse: q = a*dx^2 + 2b*dx*dy + c*dy^2, q = 1 on the edge.
    qa: f32,
    qb: f32,
    qc: f32,
    /// Semi-major axis: pixels farther than this are surely outside.
    reach: f32,
    /// Semi-minor axis in pixels: converts the normalised edge distance into pixels.
    minor: f32,
    /// Drawn when a uniform draw falls below the cellularity at the centre, so denser
    /// regions show more nuclei. Decided per nucleus, never per pixel: a pixel-level
    /// decision would cut nuclei in half along lines of equal cellularity.
    drawn: bool,
    /// 0 = pale vesicular nucleus, 1 = dark lymphocyte-like nucleus.
    dark: f32,
}

impl Nucleus {
    fn compute(seed: u32, kx: i32, ky: i32, probe: &mut CellProbe) -> Self {
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
            reach: major,
            minor,
            drawn: u(6) < probe.cell_at(cx, cy),
            // Small nuclei are dark (lymphocytes), large ones paler (epithelium).
            dark: (0.95 - 0.6 * size + 0.25 * (u(7) - 0.5)).clamp(0.0, 1.0),
        }
    }
}

impl Nucleus {
    /// Cover this nucleus gives the pixel at `x` (with `dy` = pixel y - centre y), kept
    /// in `st` if it beats what earlier candidates gave; darker at the rim.
    #[inline(always)]
    fn shade(&self, x: f32, dy: f32, soft: f32, lod: &Lod, st: &mut Structure) {
        if !self.drawn {
            return;
        }
        let dx = x - self.cx;
        let reach = self.reach + soft;
        if dx * dx + dy * dy > reach * reach {
            return;
        }
        let r = (self.qa * dx * dx + 2.0 * self.qb * dx * dy + self.qc * dy * dy).sqrt();
        let c = limit((1.0 - r) * self.minor * lod.inv_soft + 0.5, 0.0, 1.0);
        if c > st.cover {
            st.cover = c;
            st.dark = self.dark + 0.2 * lod.detail * (r.min(1.0) - 0.5);
        }
    }
}

/// Evaluates the cellularity at nucleus centres, directly from the noise (the same
/// formula as the per-pixel cellularity, without the lattice).
struct CellProbe {
    holes: [Noise; 2],
    region: Noise,
    cellularity: Noise,
}

impl CellProbe {
    fn cell_at(&mut self, x: f32, y: f32) -> f32 {
        let holes = 0.65 * self.holes[0].at(x, y) + 0.35 * self.holes[1].at(x, y);
        cellularity(self.cellularity.at(x, y), self.region.at(x, y), holes)
    }
}

/// Probability that a nucleus is drawn: the cellularity noise, raised in stain-dense
/// regions and along the rims of holes (glands are lined with epithelium).
#[inline(always)]
fn cellularity(cell: f32, region: f32, holes: f32) -> f32 {
    let lining = LINING.at(holes - (0.67 + 0.1 * region));
    limit(
        (cell - 0.3) * 2.2 + 0.25 * region + 0.8 * lining,
        0.04,
        0.97,
    )
}

/// Direct-mapped cache of nucleus candidates keyed by cell.
struct NucleusCache {
    seed: u32,
    probe: CellProbe,
    slots: [Nucleus; 64],
}

impl NucleusCache {
    fn new(seed: u32, mut probe: CellProbe) -> Self {
        let mut empty = Nucleus::compute(seed, 0, 0, &mut probe);
        empty.key = (i32::MIN, i32::MIN);
        NucleusCache {
            seed,
            probe,
            slots: [empty; 64],
        }
    }

    #[inline(always)]
    fn get(&mut self, kx: i32, ky: i32) -> &Nucleus {
        // 32 columns by 2 rows: a row of pixels needs two rows of cells, and a tile row
        // up to 32 columns of them, so rendering a tile never evicts what it still needs.
        let slot = ((kx & 31) | ((ky & 1) << 5)) as usize;
        if self.slots[slot].key != (kx, ky) {
            self.slots[slot] = Nucleus::compute(self.seed, kx, ky, &mut self.probe);
        }
        &self.slots[slot]
    }
}

/// Spacing, in level-0 pixels, of the lattice on which the slowly varying quantities
/// (tissue mask, holes, region, cellularity, fibre orientation and waviness) are
/// evaluated. Between lattice points they are bilinearly interpolated: they vary over
/// 140 px or more, so nothing visible is lost, and it makes the per-pixel cost a few
/// multiply-adds instead of nine noise evaluations.
const LATTICE: f32 = 16.0;

/// The slowly varying quantities at one position.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Slow {
    /// Tissue mask before thresholding.
    mask: f32,
    /// Hole (fat, lumen) noise before thresholding.
    holes: f32,
    /// Regional variation of stain intensity and hole threshold.
    region: f32,
    /// Cellularity noise.
    cell: f32,
    /// Selects horizontal or vertical fibres.
    orient: f32,
    /// Sideways displacement of fibres (waviness).
    warp: f32,
}

impl Slow {
    #[inline(always)]
    fn lerp(a: &Slow, b: &Slow, t: f32) -> Slow {
        Slow {
            mask: lerp(a.mask, b.mask, t),
            holes: lerp(a.holes, b.holes, t),
            region: lerp(a.region, b.region, t),
            cell: lerp(a.cell, b.cell, t),
            orient: lerp(a.orient, b.orient, t),
            warp: lerp(a.warp, b.warp, t),
        }
    }
}

/// Per-pixel quantities derived by plain arithmetic from [`Slow`] and the grain hash.
#[derive(Debug, Clone, Copy)]
struct Pre {
    /// Tissue opacity: 0 on bare glass and in holes.
    alpha: f32,
    region: f32,
    /// Probability that a nucleus candidate is drawn.
    cell: f32,
    /// Weight of the vertical fibre family (0 = horizontal only).
    vertical: f32,
    /// Fibre displacement in level-0 pixels.
    warp: f32,
    /// Uniform random number of this pixel (grain).
    g: f32,
    /// A second, centred random number (fine granular texture).
    fine: f32,
}

/// What the per-pixel lookups find: fibre noise and the nucleus covering the pixel.
#[derive(Debug, Clone, Copy)]
struct Structure {
    fibre: f32,
    cover: f32,
    dark: f32,
}

/// Stand-in where there is no tissue: any finite values give the same colour there.
const NO_STRUCTURE: Structure = Structure {
    fibre: 0.5,
    cover: 0.0,
    dark: 0.6,
};

/// Hash of a pixel centre for the grain: a pure function of where the pixel is, so
/// regions rendered separately agree; `salt` gives each level its own grain.
#[inline(always)]
fn grain_hash(seed: u32, salt: u32, x: f32, y: f32) -> u32 {
    mix32(
        ((x * 2.0) as i32 as u32).wrapping_mul(0x9e37_79b1)
            ^ ((y * 2.0) as i32 as u32).wrapping_mul(0x85eb_ca77)
            ^ seed
            ^ salt,
    )
}

/// Stage 1 of shading (branch-free, vectorises over a row).
#[inline(always)]
fn prepare(lod: &Lod, s: &Slow, hash: u32) -> Pre {
    // Holes: fat cells and gland lumens, whose rims are lined with nuclei.
    let h = s.holes - (0.67 + 0.1 * s.region);
    let alpha = lod.tissue_edge.at(s.mask) * (1.0 - lod.hole_edge.at(h));
    Pre {
        alpha,
        region: s.region,
        cell: cellularity(s.cell, s.region, s.holes),
        vertical: ORIENT.at(s.orient),
        warp: 70.0 * s.warp,
        g: unit(hash),
        fine: (hash & 0xff) as f32 * (1.0 / 256.0) - 0.5,
    }
}

/// Stage 3 of shading (branch-free, vectorises over a row): the pixel's colour.
#[inline(always)]
fn composite(shift: [f32; 3], lod: &Lod, p: &Pre, s: &Structure) -> [f32; 3] {
    // Stroma: eosin pink; a fibre is a ridge (a zero crossing) of noise stretched along
    // it. Detail finer than the pixel fades to its mean.
    let ridge = 1.0 - (2.0 * s.fibre - 1.0).abs();
    let texture = lerp(0.45, ridge * ridge + 0.5 * p.fine, lod.detail);
    let k = limit(0.12 + 0.35 * p.region + 0.6 * texture, 0.0, 1.0);
    let stroma = lerp3(EOSIN_LIGHT, EOSIN_DARK, k);
    // Nuclei: haematoxylin purple, granular chromatin; where nuclei are smaller than a
    // pixel only their mean cover remains.
    let cover = lerp(s.cover, p.cell * NUCLEUS_MEAN_COVER, lod.nuclei);
    let dark = lerp(s.dark, 0.6, lod.nuclei) + 0.35 * lod.detail * p.fine;
    let nucleus = lerp3(HAEM_LIGHT, HAEM_DARK, limit(dark, 0.0, 1.0));
    let tissue = lerp3(stroma, nucleus, cover * 0.92);
    let c = lerp3(BACKGROUND, tissue, p.alpha);
    // Tissue scatters more light than bare glass: stronger grain where it is.
    let grain = (p.g - 0.5) * (5.0 + 5.0 * p.alpha) * lod.grain;
    std::array::from_fn(|k| c[k] + shift[k] * p.alpha + grain)
}

/// Round a colour channel to a byte (the value is clamped first, so the integer
/// conversions cannot saturate differently).
#[inline(always)]
fn to_byte(v: f32) -> u8 {
    limit(v + 0.5, 0.0, 255.0) as i32 as u8
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

    fn holes_noise(&self) -> [Noise; 2] {
        [
            Noise::new(self.component_seed(5), 420.0, 420.0),
            Noise::new(self.component_seed(6), 150.0, 150.0),
        ]
    }

    fn region_noise(&self) -> Noise {
        let wavelength = (self.island / 3.0).max(500.0);
        Noise::new(self.component_seed(7), wavelength, wavelength)
    }

    fn cellularity_noise(&self) -> Noise {
        Noise::new(self.component_seed(8), 1600.0, 1600.0)
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
            holes: self.holes_noise(),
            region: self.region_noise(),
            cellularity: self.cellularity_noise(),
            warp: Noise::new(s(9), 140.0, 140.0),
            orient: Noise::new(s(10), 700.0, 700.0),
            fibre_h: Noise::new(s(11), 60.0, 9.0),
            fibre_v: Noise::new(s(12), 9.0, 60.0),
            nuclei: NucleusCache::new(
                s(13),
                CellProbe {
                    holes: self.holes_noise(),
                    region: self.region_noise(),
                    cellularity: self.cellularity_noise(),
                },
            ),
            grain_seed: s(14),
        }
    }

    /// Render a `w` x `h` region of the level with the given downsample (level-0 pixels
    /// per output pixel), top-left output pixel (`x`, `y`), into `out` as RGB8.
    ///
    /// Gives exactly [`Sampler::sample`] at every pixel centre, but a row at a time: the
    /// lattice work is shared between pixels, and the arithmetic stages run over arrays
    /// (structure of arrays) so the compiler vectorises them.
    pub(crate) fn render_into(
        &self,
        downsample: f32,
        x: u32,
        y: u32,
        w: u32,
        h: u32,
        out: &mut Vec<u8>,
    ) {
        out.clear();
        if w == 0 || h == 0 {
            return;
        }
        out.resize(w as usize * h as usize * 3, 0);
        let mut sampler = self.sampler();
        let lod = Lod::new(self, downsample);
        let centre = |i: u32| (i as f32 + 0.5) * downsample;
        let n = w as usize;
        let xs: Vec<f32> = (x..x + w).map(centre).collect();
        let mut slow = vec![NO_SLOW; n];
        let mut pre = vec![NO_PRE; n];
        let mut structure = vec![NO_STRUCTURE; n];
        let mut colour = vec![[0.0f32; 3]; n];
        let mut rounded = vec![[0u8; 3]; n];

        // Lattice bookkeeping for small downsamples: each pixel's lattice column and its
        // position in it never change from row to row.
        let inv = 1.0 / LATTICE;
        let lattice = downsample < LATTICE;
        let kx0 = floor_i32(xs[0] * inv);
        let kx1 = floor_i32(xs[n - 1] * inv) + 1;
        let (cols, txs): (Vec<usize>, Vec<f32>) = xs
            .iter()
            .map(|&fx| {
                let kx = floor_i32(fx * inv);
                ((kx - kx0) as usize, fx * inv - kx as f32)
            })
            .unzip();
        let columns = if lattice { (kx1 - kx0 + 1) as usize } else { 0 };
        // Each pixel's first nucleus-grid column (see `Sampler::nuclei_at`).
        let nkx0: Vec<i32> = xs
            .iter()
            .map(|&fx| floor_i32(fx * (1.0 / NUCLEUS_CELL) - 0.5))
            .collect();
        let (nkx_lo, nkx_hi) = (nkx0[0], nkx0[n - 1] + 1);
        let mut upper: Vec<Slow> = Vec::with_capacity(columns);
        let mut lower: Vec<Slow> = Vec::with_capacity(columns);
        let mut blended = vec![NO_SLOW; columns];
        let mut lattice_row = i32::MIN;
        let fill = |s: &mut Sampler<'_>, row: &mut Vec<Slow>, ky: i32| {
            row.clear();
            let ly = ky as f32 * LATTICE;
            row.extend((kx0..=kx1).map(|kx| s.slow_at(kx as f32 * LATTICE, ly)));
        };

        for (j, row_out) in (y..y + h).zip(out.chunks_exact_mut(n * 3)) {
            let fy = centre(j);
            // Stage 0: the slow quantities at every pixel of the row.
            if lattice {
                let ky = floor_i32(fy * inv);
                let ty = fy * inv - ky as f32;
                if ky != lattice_row {
                    if ky == lattice_row.wrapping_add(1) {
                        std::mem::swap(&mut upper, &mut lower);
                    } else {
                        fill(&mut sampler, &mut upper, ky);
                    }
                    fill(&mut sampler, &mut lower, ky + 1);
                    lattice_row = ky;
                }
                for (b, (u, l)) in blended.iter_mut().zip(upper.iter().zip(&lower)) {
                    *b = Slow::lerp(u, l, ty);
                }
                for ((s, &c), &tx) in slow.iter_mut().zip(&cols).zip(&txs) {
                    *s = Slow::lerp(&blended[c], &blended[c + 1], tx);
                }
            } else {
                for (s, &fx) in slow.iter_mut().zip(&xs) {
                    *s = sampler.slow_at(fx, fy);
                }
            }
            // Stage 1: per-pixel arithmetic (vectorised).
            let seed = sampler.grain_seed;
            for ((p, s), &fx) in pre.iter_mut().zip(&slow).zip(&xs) {
                *p = prepare(&lod, s, grain_hash(seed, lod.salt, fx, fy));
            }
            // Stage 2: fibre lookups, only where there is tissue.
            for ((st, p), &fx) in structure.iter_mut().zip(&pre).zip(&xs) {
                *st = NO_STRUCTURE;
                if p.alpha > 0.0 {
                    st.fibre = sampler.fibre_at(fx, fy, p);
                }
            }
            // Stage 2b: nuclei, nucleus by nucleus over the pixels each one can reach
            // (cheaper than asking every pixel about four candidates). The same
            // candidates, in the same order, as `Sampler::nuclei_at`.
            if lod.nuclei < 1.0 {
                let ky0 = floor_i32(fy * (1.0 / NUCLEUS_CELL) - 0.5);
                for ky in [ky0, ky0 + 1] {
                    for kx in nkx_lo..=nkx_hi {
                        let nucleus = *sampler.nuclei.get(kx, ky);
                        let dy = fy - nucleus.cy;
                        let reach = nucleus.reach + lod.soft;
                        if dy * dy > reach * reach {
                            continue;
                        }
                        // Pixels whose centre may lie within reach (one spare each side).
                        let lo = floor_i32((nucleus.cx - reach) / downsample - 0.5) - x as i32 - 1;
                        let hi = floor_i32((nucleus.cx + reach) / downsample - 0.5) - x as i32 + 2;
                        let lo = lo.max(0) as usize;
                        let hi = (hi.max(0) as usize).min(n);
                        for i in lo..hi {
                            if kx != nkx0[i] && kx != nkx0[i] + 1 {
                                continue;
                            }
                            let p = &pre[i];
                            if p.alpha > 0.0 {
                                nucleus.shade(xs[i], dy, lod.soft, &lod, &mut structure[i]);
                            }
                        }
                    }
                }
            }
            // Stage 3: colour (vectorised), then interleaved into RGB bytes.
            for (((c, p), st), r) in colour
                .iter_mut()
                .zip(&pre)
                .zip(&structure)
                .zip(&mut rounded)
            {
                *c = composite(self.stain_shift, &lod, p, st);
                *r = c.map(to_byte);
            }
            for (px, r) in row_out.chunks_exact_mut(3).zip(&rounded) {
                px.copy_from_slice(r);
            }
        }
    }
}

const NO_SLOW: Slow = Slow {
    mask: 0.0,
    holes: 0.0,
    region: 0.0,
    cell: 0.0,
    orient: 0.0,
    warp: 0.0,
};

const NO_PRE: Pre = Pre {
    alpha: 0.0,
    region: 0.0,
    cell: 0.0,
    vertical: 0.0,
    warp: 0.0,
    g: 0.0,
    fine: 0.0,
};

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
    /// pixels along each axis. This is the definition of the field, one pixel at a time;
    /// `Field::render_into` is a faster route to the same numbers.
    pub(crate) fn sample(&mut self, x: f32, y: f32, footprint: f32) -> [u8; 3] {
        let slow = if footprint < LATTICE {
            // Bilinear between the four surrounding lattice points, blending along y
            // first, exactly as `render_into` does.
            let inv = 1.0 / LATTICE;
            let (kx, ky) = (floor_i32(x * inv), floor_i32(y * inv));
            let (tx, ty) = (x * inv - kx as f32, y * inv - ky as f32);
            let (x0, x1) = (kx as f32 * LATTICE, (kx + 1) as f32 * LATTICE);
            let (y0, y1) = (ky as f32 * LATTICE, (ky + 1) as f32 * LATTICE);
            let (s00, s01) = (self.slow_at(x0, y0), self.slow_at(x0, y1));
            let (s10, s11) = (self.slow_at(x1, y0), self.slow_at(x1, y1));
            Slow::lerp(&Slow::lerp(&s00, &s01, ty), &Slow::lerp(&s10, &s11, ty), tx)
        } else {
            // Pixels this large sample the slow quantities directly.
            self.slow_at(x, y)
        };
        let lod = Lod::new(self.field, footprint);
        let p = prepare(&lod, &slow, grain_hash(self.grain_seed, lod.salt, x, y));
        let st = if p.alpha > 0.0 {
            self.structure(x, y, &lod, &p)
        } else {
            NO_STRUCTURE
        };
        composite(self.field.stain_shift, &lod, &p, &st).map(to_byte)
    }

    /// The slowly varying quantities at a level-0 position.
    fn slow_at(&mut self, x: f32, y: f32) -> Slow {
        let f = self.field;
        // Tissue islands: low-frequency noise, pushed up in the middle of the slide and
        // down near its border so tissue sits on the glass like a real section.
        let rx = x / f.width * 2.0 - 1.0;
        let ry = y / f.height * 2.0 - 1.0;
        let mut m =
            0.5 * self.mask[0].at(x, y) + 0.3 * self.mask[1].at(x, y) + 0.2 * self.mask[2].at(x, y);
        m += 0.38 * (1.0 - (rx * rx + ry * ry));
        let (rx2, ry2) = (rx * rx, ry * ry);
        // A rounded-rectangle border (superellipse) keeps the outline organic.
        m -= 0.9 * smoothstep(0.3, 1.0, rx2 * rx2 + ry2 * ry2);
        m += 0.07 * (self.ragged.at(x, y) - 0.5);
        Slow {
            mask: m,
            holes: 0.65 * self.holes[0].at(x, y) + 0.35 * self.holes[1].at(x, y),
            region: self.region.at(x, y),
            cell: self.cellularity.at(x, y),
            orient: self.orient.at(x, y),
            warp: self.warp.at(x, y),
        }
    }

    /// Stage 2 of shading for one pixel: fibre noise and the nucleus covering it.
    fn structure(&mut self, x: f32, y: f32, lod: &Lod, p: &Pre) -> Structure {
        let mut st = NO_STRUCTURE;
        st.fibre = self.fibre_at(x, y, p);
        self.nuclei_at(x, y, lod, &mut st);
        st
    }

    /// Collagen fibre noise: horizontal and vertical families, displaced sideways.
    #[inline(always)]
    fn fibre_at(&mut self, x: f32, y: f32, p: &Pre) -> f32 {
        let t = p.vertical;
        let mut fibre = 0.0;
        if t < 1.0 {
            fibre += (1.0 - t) * self.fibre_h.at(x, y + p.warp);
        }
        if t > 0.0 {
            fibre += t * self.fibre_v.at(x + p.warp, y);
        }
        fibre
    }

    /// Nuclei are ellipses on a jittered grid; a pixel considers the candidates of its
    /// 2x2 nearest grid cells, drawn where the local cellularity allows.
    fn nuclei_at(&mut self, x: f32, y: f32, lod: &Lod, st: &mut Structure) {
        if lod.nuclei >= 1.0 {
            return;
        }
        let kx0 = floor_i32(x * (1.0 / NUCLEUS_CELL) - 0.5);
        let ky0 = floor_i32(y * (1.0 / NUCLEUS_CELL) - 0.5);
        for (kx, ky) in [
            (kx0, ky0),
            (kx0 + 1, ky0),
            (kx0, ky0 + 1),
            (kx0 + 1, ky0 + 1),
        ] {
            let nucleus = *self.nuclei.get(kx, ky);
            let dy = y - nucleus.cy;
            let reach = nucleus.reach + lod.soft;
            if dy * dy > reach * reach {
                continue;
            }
            nucleus.shade(x, dy, lod.soft, lod, st);
        }
    }
}

/// A smoothstep over a fixed interval with its reciprocal width precomputed, so the
/// per-pixel cost has no division.
#[derive(Debug, Clone, Copy)]
struct Step {
    lo: f32,
    inv_width: f32,
}

impl Step {
    const fn new(lo: f32, hi: f32) -> Self {
        Step {
            lo,
            inv_width: 1.0 / (hi - lo),
        }
    }

    #[inline(always)]
    fn at(self, v: f32) -> f32 {
        let t = limit((v - self.lo) * self.inv_width, 0.0, 1.0);
        t * t * (3.0 - 2.0 * t)
    }
}

/// Nuclei line the holes: cellularity rises just inside a hole's edge (relative to it).
const LINING: Step = Step::new(-0.07, -0.005);
/// Fibre direction switches between horizontal and vertical families.
const ORIENT: Step = Step::new(0.42, 0.58);

/// Everything that depends only on the pixel footprint, computed once per render.
struct Lod {
    /// Mixed into the grain hash so each level has its own grain.
    salt: u32,
    /// Grain amplitude: a downsampled pixel averages many sensor pixels, so its noise is
    /// smaller (1/sqrt rather than 1/d: resampling and re-encoding add some back).
    grain: f32,
    /// Tissue mask threshold, softer for larger pixels.
    tissue_edge: Step,
    /// Hole edge, relative to the local hole threshold.
    hole_edge: Step,
    /// 1 where fine texture is resolved, 0 where pixels are too large for it.
    detail: f32,
    /// 0 where nuclei are drawn one by one, 1 where only their mean cover remains.
    nuclei: f32,
    /// Antialiasing width of nucleus edges, in level-0 pixels, and its inverse.
    soft: f32,
    inv_soft: f32,
}

impl Lod {
    fn new(field: &Field, footprint: f32) -> Self {
        let edge = 0.006 + 0.7 * footprint / field.island;
        let hole = 0.003 + 0.4 * footprint / 420.0;
        let soft = footprint.max(1.0);
        Lod {
            salt: footprint.to_bits(),
            grain: 1.0 / footprint.max(1.0).sqrt(),
            tissue_edge: Step::new(0.56 - edge, 0.56 + edge),
            hole_edge: Step::new(-hole, hole),
            // Fibres are ~5 px wide: fade them out as pixels grow past that.
            detail: 1.0 - smoothstep(2.0, 10.0, footprint),
            nuclei: smoothstep(NUCLEUS_CELL * 0.3, NUCLEUS_CELL * 1.2, footprint),
            soft,
            inv_soft: 1.0 / soft,
        }
    }
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
    fn fast_render_equals_the_definition() {
        // `render_into` shares lattice work, vectorises and draws nuclei one by one; it
        // must still give exactly what `Sampler::sample` defines, at every level, in
        // tissue and across the tissue edge.
        let field = Field::new(77, 5000, 4000);
        let (w, h) = (130u32, 75u32);
        for d in [1u32, 2, 3, 4, 8, 16, 32] {
            for (cx, cy) in [(2500u32, 2000u32), (600, 2000), (2500, 300)] {
                let (x, y) = (
                    (cx / d).saturating_sub(w / 2),
                    (cy / d).saturating_sub(h / 2),
                );
                let fast = render(&field, d, x, y, w, h);
                let mut sampler = field.sampler();
                let mut slow = Vec::new();
                let c = |v: u32| (v as f32 + 0.5) * d as f32;
                for j in y..y + h {
                    for i in x..x + w {
                        slow.extend_from_slice(&sampler.sample(c(i), c(j), d as f32));
                    }
                }
                let first = fast.iter().zip(&slow).position(|(a, b)| a != b);
                assert!(
                    first.is_none(),
                    "downsample {d} at ({x},{y}): byte {first:?} differs"
                );
            }
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
