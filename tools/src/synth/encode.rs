//! Pixels to encapsulated frames: JPEG baseline encoding of tiles on all cores, splitting
//! frames into fragments, and the Basic / Extended offset tables that locate them.
//!
//! Knows nothing of DICOM attributes; `dicom` turns an [`Encapsulated`] into elements.

use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};
use jpeg_encoder::{ColorType, Encoder, SamplingFactor};

use super::field::Field;
use super::spec::OffsetTableKind;

/// Size of an item header (tag + length) in encapsulated pixel data.
const ITEM_HEADER: u64 = 8;

/// Encode RGB8 pixels as a baseline JPEG with 4:2:0 chroma subsampling, as scanners do.
/// The colour space is YCbCr (JFIF), hence Photometric Interpretation YBR_FULL_422.
pub(crate) fn encode_jpeg(
    rgb: &[u8],
    width: u32,
    height: u32,
    quality: u8,
) -> anyhow::Result<Vec<u8>> {
    let (w, h) = (
        u16::try_from(width).context("jpeg width exceeds 65535")?,
        u16::try_from(height).context("jpeg height exceeds 65535")?,
    );
    let mut out = Vec::with_capacity(rgb.len() / 8);
    let mut encoder = Encoder::new(&mut out, quality);
    // Set explicitly: the encoder's default depends on the quality (4:4:4 from 90 up),
    // and the photometric interpretation must match what is really in the stream.
    encoder.set_sampling_factor(SamplingFactor::F_2_2);
    encoder
        .encode(rgb, w, h, ColorType::Rgb)
        .with_context(|| format!("encoding a {width}x{height} jpeg frame"))?;
    Ok(out)
}

/// A tile's index in TILED_FULL order and its JPEG bytes.
type EncodedTile = (usize, Vec<u8>);

/// Render and encode every tile of one pyramid level, `tile` x `tile` pixels each, in
/// TILED_FULL order (row by row, left to right), using `threads` worker threads.
/// Edge tiles are full-size frames; the part outside the level is the field continued.
pub(crate) fn encode_level_tiles(
    field: &Field,
    downsample: u32,
    tiles_across: u32,
    tiles_down: u32,
    tile: u32,
    quality: u8,
    threads: usize,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let count = tiles_across as usize * tiles_down as usize;
    let next = AtomicUsize::new(0);
    let threads = threads.clamp(1, count.max(1));
    let results: Vec<anyhow::Result<Vec<EncodedTile>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    let mut rgb = Vec::new();
                    // Tiles are handed out one at a time so a slow tile never idles a core.
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= count {
                            return Ok(done);
                        }
                        let (tx, ty) = (index as u32 % tiles_across, index as u32 / tiles_across);
                        field.render_into(
                            downsample as f32,
                            tx * tile,
                            ty * tile,
                            tile,
                            tile,
                            &mut rgb,
                        );
                        let jpeg = encode_jpeg(&rgb, tile, tile, quality)
                            .with_context(|| format!("tile {tx},{ty}"))?;
                        done.push((index, jpeg));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a tile encoder thread panicked")))
            })
            .collect()
    });
    let mut frames = vec![Vec::new(); count];
    for batch in results {
        for (index, jpeg) in batch? {
            frames[index] = jpeg;
        }
    }
    Ok(frames)
}

/// Encapsulated pixel data ready to become DICOM elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Encapsulated {
    /// Basic Offset Table values (empty unless the kind is `Basic`).
    pub basic_offsets: Vec<u32>,
    /// Extended Offset Table and its lengths (only for the kind `Extended`).
    pub extended: Option<(Vec<u64>, Vec<u64>)>,
    /// Fragment item values in order, each of even length.
    pub fragments: Vec<Vec<u8>>,
}

impl Encapsulated {
    /// Total bytes of the fragment items including their 8-byte headers.
    pub fn item_bytes(&self) -> u64 {
        self.fragments
            .iter()
            .map(|f| f.len() as u64 + ITEM_HEADER)
            .sum()
    }
}

/// Split frames into fragments and compute the offset tables.
///
/// Item values must have even length (PS3.5 7.1), so an odd frame gets one trailing zero
/// byte after the JPEG end-of-image marker, which decoders ignore. Offsets count from the
/// first byte of the first fragment item after the Basic Offset Table item (PS3.5 A.4).
pub(crate) fn encapsulate(
    frames: Vec<Vec<u8>>,
    kind: OffsetTableKind,
    fragments_per_frame: u32,
) -> anyhow::Result<Encapsulated> {
    if kind == OffsetTableKind::Extended && fragments_per_frame != 1 {
        bail!("an extended offset table requires one fragment per frame");
    }
    let per = fragments_per_frame.max(1) as usize;
    let mut fragments = Vec::with_capacity(frames.len() * per);
    let mut offsets = Vec::with_capacity(frames.len());
    let mut lengths = Vec::with_capacity(frames.len());
    let mut position = 0u64;
    for mut frame in frames {
        if frame.len() % 2 == 1 {
            frame.push(0);
        }
        offsets.push(position);
        lengths.push(frame.len() as u64);
        // Cut at even positions so every fragment keeps an even length.
        let cuts: Vec<usize> = (0..=per).map(|i| (frame.len() * i / per) & !1).collect();
        if per == 1 {
            position += frame.len() as u64 + ITEM_HEADER;
            fragments.push(frame);
            continue;
        }
        for pair in cuts.windows(2) {
            let piece = frame[pair[0]..pair[1]].to_vec();
            if piece.is_empty() {
                bail!(
                    "a {} byte frame cannot be split into {per} fragments",
                    frame.len()
                );
            }
            position += piece.len() as u64 + ITEM_HEADER;
            fragments.push(piece);
        }
    }
    let mut out = Encapsulated {
        basic_offsets: Vec::new(),
        extended: None,
        fragments,
    };
    match kind {
        OffsetTableKind::Basic => {
            out.basic_offsets = offsets
                .iter()
                .map(|&o| u32::try_from(o))
                .collect::<Result<_, _>>()
                .map_err(|_| {
                    anyhow::anyhow!(
                        "pixel data of {position} bytes is too large for a basic offset \
                         table (32-bit offsets); use --offset-table extended"
                    )
                })?;
        }
        OffsetTableKind::Empty => {}
        OffsetTableKind::Extended => out.extended = Some((offsets, lengths)),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_offsets_count_item_headers_and_padding() {
        let frames = vec![vec![1u8; 11], vec![2u8; 20], vec![3u8; 5]];
        let e = encapsulate(frames.clone(), OffsetTableKind::Basic, 1).unwrap();
        assert_eq!(e.basic_offsets, vec![0, 20, 48]);
        assert_eq!(e.fragments[0].len(), 12);
        assert_eq!(e.fragments[0][11], 0);
        assert!(e.extended.is_none());
        assert_eq!(e.item_bytes(), 20 + 28 + 14);

        let e = encapsulate(frames.clone(), OffsetTableKind::Basic, 2).unwrap();
        assert_eq!(e.fragments.len(), 6);
        assert!(
            e.fragments
                .iter()
                .all(|f| f.len() % 2 == 0 && !f.is_empty())
        );
        // Frame 1 starts after both items of frame 0: 6+8 + 6+8.
        assert_eq!(e.basic_offsets, vec![0, 28, 64]);
        let joined: Vec<u8> = e.fragments[2..4].concat();
        assert_eq!(joined, frames[1]);

        let e = encapsulate(frames, OffsetTableKind::Extended, 1).unwrap();
        assert!(e.basic_offsets.is_empty());
        assert_eq!(e.extended, Some((vec![0, 20, 48], vec![12, 20, 6])));
    }

    #[test]
    fn jpeg_is_baseline_with_420_subsampling() {
        let rgb = vec![128u8; 32 * 16 * 3];
        let jpeg = encode_jpeg(&rgb, 32, 16, 80).unwrap();
        assert_eq!(&jpeg[..2], &[0xff, 0xd8]);
        assert_eq!(&jpeg[jpeg.len() - 2..], &[0xff, 0xd9]);
        // SOF0 (baseline) with component 1 sampled 2x2.
        let sof = jpeg.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
        assert_eq!(jpeg[sof + 11], 0x22);
    }
}
