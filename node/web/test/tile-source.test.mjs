// tile-source.test.mjs: owns the unit tests of the DICOM pyramid -> OpenSeadragon mapping
// (src/tile-source.js), run without a browser against a minimal stand-in for OpenSeadragon's
// Point, Rect and TileSource. Run: `npm test` in node/web.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createTileSource, pyramidLevels, wantedRegion } from '../src/tile-source.js';

// Just enough of OpenSeadragon: the real TileSource copies the options (our overrides) onto itself.
const OSD = {
  Point: class { constructor(x, y) { this.x = x; this.y = y; } },
  Rect: class { constructor(x, y, width, height) { Object.assign(this, { x, y, width, height }); } },
  TileSource: function TileSource(options) { Object.assign(this, options); },
};

function level(index, width, height, tile, extra = {}) {
  return { index, width, height, tile_width: tile, tile_height: tile,
    cols: Math.ceil(width / tile), rows: Math.ceil(height / tile), ...extra };
}

// Not powers of two, rounded sizes, different tile sizes per level, listed out of order.
const SLIDE = {
  slide_id: 'ab'.repeat(32),
  levels: [
    level(2, 2500, 1875, 256),
    level(0, 40000, 30000, 512),
    level(3, 625, 469, 256),
    level(1, 10000, 7500, 256),
  ],
};

const EPS = 1e-12;

test('levels are ordered largest first and invalid ones dropped', () => {
  const levels = pyramidLevels({ levels: [...SLIDE.levels, { index: 9, width: 0, height: 5, tile_width: 1, tile_height: 1 }, null] });
  assert.deepEqual(levels.map((l) => l.index), [0, 1, 2, 3]);
});

test('a slide without levels is refused', () => {
  assert.throws(() => createTileSource(OSD, { slide_id: 'x', levels: [] }), /no pyramid levels/);
});

test('OpenSeadragon levels map onto DICOM levels, smallest first', () => {
  const source = createTileSource(OSD, SLIDE);
  assert.equal(source.minLevel, 0);
  assert.equal(source.maxLevel, 3);
  assert.deepEqual([0, 1, 2, 3].map((l) => source.dicomLevel(l)), [3, 2, 1, 0]);
  assert.equal(source.getLevelScale(3), 1);
  assert.equal(source.getLevelScale(0), 625 / 40000);
  assert.equal(source.getTileWidth(3), 512);
  assert.equal(source.getTileWidth(2), 256);
  assert.deepEqual(source.getNumTiles(3), new OSD.Point(79, 59));
  assert.deepEqual(source.getNumTiles(0), new OSD.Point(3, 2));
  assert.equal(source.getTileUrl(3, 4, 5), `/api/v1/slides/${SLIDE.slide_id}/levels/0/tiles/4/5`);
  assert.equal(source.getTileUrl(0, 2, 1), `/api/v1/slides/${SLIDE.slide_id}/levels/3/tiles/2/1`);
});

test('tiles of every level cover the whole image exactly, edge tiles cropped', () => {
  const source = createTileSource(OSD, SLIDE);
  const yExtent = 30000 / 40000;
  for (let osdLevel = 0; osdLevel <= source.maxLevel; osdLevel += 1) {
    const { x: cols, y: rows } = source.getNumTiles(osdLevel);
    const last = source.getTileBounds(osdLevel, cols - 1, rows - 1);
    assert.ok(Math.abs(last.x + last.width - 1) < EPS, `level ${osdLevel} ends at x=1`);
    assert.ok(Math.abs(last.y + last.height - yExtent) < EPS, `level ${osdLevel} ends at y=height/width`);
    // Neighbouring tiles meet without gaps or overlaps.
    const a = source.getTileBounds(osdLevel, 0, 0);
    assert.equal(a.x, 0);
    assert.equal(a.y, 0);
    if (cols > 1) assert.ok(Math.abs(source.getTileBounds(osdLevel, 1, 0).x - a.width) < EPS);
    if (rows > 1) assert.ok(Math.abs(source.getTileBounds(osdLevel, 0, 1).y - a.height) < EPS);
    // Source (pixel) bounds crop the padding of edge frames.
    const lvl = pyramidLevels(SLIDE)[source.maxLevel - osdLevel];
    const src = source.getTileBounds(osdLevel, cols - 1, rows - 1, true);
    assert.equal(src.width, lvl.width - (cols - 1) * lvl.tile_width);
    assert.equal(src.height, lvl.height - (rows - 1) * lvl.tile_height);
  }
});

test('getTileAtPoint finds the tile whose bounds contain the point', () => {
  const source = createTileSource(OSD, SLIDE);
  const points = [[0, 0], [0.5, 0.3], [0.999, 0.7499], [1, 0.75], [0.123456, 0.654321]];
  for (let osdLevel = 0; osdLevel <= source.maxLevel; osdLevel += 1) {
    for (const [x, y] of points) {
      const tile = source.getTileAtPoint(osdLevel, new OSD.Point(x, y));
      const b = source.getTileBounds(osdLevel, tile.x, tile.y);
      assert.ok(x >= b.x - EPS && x <= b.x + b.width + EPS, `x=${x} in tile ${tile.x} of level ${osdLevel}`);
      assert.ok(y >= b.y - EPS && y <= b.y + b.height + EPS, `y=${y} in tile ${tile.y} of level ${osdLevel}`);
    }
  }
});

test('the wanted region is the coarsest level at least as fine as the screen, clamped', () => {
  // Zoom 0.25 screen px per full-resolution px: level 1 (10000 px wide, scale 0.25) is the
  // coarsest that is still sharp. The rectangle 0..8000 x 4000..12000 in full pixels is
  // 0..2000 x 1000..3000 at level 1: columns 0..7, rows 3..11 of 256 px tiles.
  assert.deepEqual(wantedRegion(SLIDE, { x: 0, y: 4000, width: 8000, height: 8000 }, 0.25),
    { level: 1, cols: [0, 7], rows: [3, 11] });
  // Zoomed out beyond the coarsest level: that level, the whole of it.
  assert.deepEqual(wantedRegion(SLIDE, { x: -5000, y: -5000, width: 60000, height: 50000 }, 0.001),
    { level: 3, cols: [0, 2], rows: [0, 1] });
  // Magnified past full resolution: level 0.
  assert.equal(wantedRegion(SLIDE, { x: 100, y: 100, width: 500, height: 300 }, 2).level, 0);
  // Nothing of the image on screen.
  assert.equal(wantedRegion(SLIDE, { x: 50000, y: 0, width: 100, height: 100 }, 1), null);
});
