// tile-source.js: owns the mapping from a DICOM WSI pyramid (the slide detail JSON) onto an
// OpenSeadragon TileSource. DICOM numbers levels from full resolution (0) downwards and each level
// has its own size and tile grid; OpenSeadragon numbers them from the smallest (0) upwards and by
// default assumes exact powers of two. So every geometry method is overridden here to read the real
// per-level width, height and tile size, and only levels that actually exist are offered.

import { tileUrl } from './api.js';

/**
 * The usable levels of a slide, largest first (so the result index is OpenSeadragon's maxLevel minus
 * its level). Sorting by width rather than trusting `index` order keeps us correct if the API ever
 * lists levels in another order.
 */
export function pyramidLevels(slide) {
  const levels = (Array.isArray(slide?.levels) ? slide.levels : []).filter((l) =>
    [l?.index, l?.width, l?.height, l?.tile_width, l?.tile_height].every((v) => Number.isInteger(v) && v >= 0) &&
    l.width > 0 && l.height > 0 && l.tile_width > 0 && l.tile_height > 0);
  return levels.sort((a, b) => b.width - a.width || a.index - b.index);
}

/** Tile grid of a level; the API sends cols/rows, computed as a fallback. */
function grid(level) {
  return {
    cols: Number.isInteger(level.cols) && level.cols > 0 ? level.cols : Math.ceil(level.width / level.tile_width),
    rows: Number.isInteger(level.rows) && level.rows > 0 ? level.rows : Math.ceil(level.height / level.tile_height),
  };
}

/**
 * The tiles of the level a viewer needs to show `imageRect` (full-resolution pixels) sharply
 * at `zoom` screen pixels per full-resolution pixel: the coarsest level with at least one
 * level pixel per screen pixel, and the columns and rows it covers. `null` if none applies.
 */
export function wantedRegion(slide, imageRect, zoom) {
  const levels = pyramidLevels(slide);
  if (levels.length === 0 || !(zoom > 0)) return null;
  const full = levels[0];
  // Largest first: the last level still at least as fine as the screen.
  let level = levels[0];
  for (const candidate of levels) {
    if (candidate.width / full.width >= zoom) level = candidate;
  }
  const scale = level.width / full.width;
  const { cols, rows } = grid(level);
  const clamp = (v, n) => Math.min(Math.max(v, 0), n - 1);
  const x0 = Math.max(imageRect.x, 0) * scale;
  const y0 = Math.max(imageRect.y, 0) * (level.height / full.height);
  const x1 = (imageRect.x + imageRect.width) * scale;
  const y1 = (imageRect.y + imageRect.height) * (level.height / full.height);
  if (x1 <= 0 || y1 <= 0 || x0 >= level.width || y0 >= level.height) return null;
  return {
    level: level.index,
    cols: [clamp(Math.floor(x0 / level.tile_width), cols), clamp(Math.floor((x1 - 1) / level.tile_width), cols)],
    rows: [clamp(Math.floor(y0 / level.tile_height), rows), clamp(Math.floor((y1 - 1) / level.tile_height), rows)],
  };
}

/**
 * Build the TileSource. `OSD` is the OpenSeadragon namespace (passed in so this module has no
 * global dependency). The returned source also has `dicomLevel(osdLevel)` for statistics.
 */
export function createTileSource(OSD, slide) {
  const levels = pyramidLevels(slide);
  if (levels.length === 0) throw new Error('the slide has no pyramid levels to show');
  const full = levels[0];
  const top = levels.length - 1; // OpenSeadragon's maxLevel
  // OpenSeadragon's normalised coordinates: x in [0, 1] across the image, y in [0, height/width].
  const yExtent = full.height / full.width;
  const at = (osdLevel) => levels[top - osdLevel];

  return new OSD.TileSource({
    width: full.width,
    height: full.height,
    tileWidth: full.tile_width,
    tileHeight: full.tile_height,
    tileOverlap: 0,
    minLevel: 0,
    maxLevel: top,

    dicomLevel(osdLevel) {
      return at(osdLevel)?.index;
    },

    getLevelScale(osdLevel) {
      const level = at(osdLevel);
      return level ? level.width / full.width : NaN;
    },

    getNumTiles(osdLevel) {
      const level = at(osdLevel);
      if (!level) return new OSD.Point(0, 0);
      const { cols, rows } = grid(level);
      return new OSD.Point(cols, rows);
    },

    getTileWidth(osdLevel) {
      return at(osdLevel)?.tile_width ?? full.tile_width;
    },

    getTileHeight(osdLevel) {
      return at(osdLevel)?.tile_height ?? full.tile_height;
    },

    // Pixel ratio of a level is 1/width in normalised units; the default derives it from
    // getLevelScale, which is exact here, so it is not overridden.

    getTileAtPoint(osdLevel, point) {
      const level = at(osdLevel);
      const { cols, rows } = grid(level);
      // Each level is stretched over the whole image, whatever its rounding, so scale per axis.
      const col = Math.floor((point.x * level.width) / level.tile_width);
      const row = Math.floor(((point.y / yExtent) * level.height) / level.tile_height);
      return new OSD.Point(Math.min(Math.max(col, 0), cols - 1), Math.min(Math.max(row, 0), rows - 1));
    },

    getTileBounds(osdLevel, col, row, isSource) {
      const level = at(osdLevel);
      const px = col * level.tile_width;
      const py = row * level.tile_height;
      // DICOM edge frames are padded to the full tile size; only the part inside the level is image.
      const sx = Math.min(level.tile_width, level.width - px);
      const sy = Math.min(level.tile_height, level.height - py);
      if (isSource) return new OSD.Rect(0, 0, sx, sy);
      const fx = 1 / level.width;
      const fy = yExtent / level.height;
      return new OSD.Rect(px * fx, py * fy, sx * fx, sy * fy);
    },

    getTileUrl(osdLevel, col, row) {
      return tileUrl(slide.slide_id, at(osdLevel).index, col, row);
    },
  });
}
