// viewer.test.mjs: owns the headless-browser check of the node's web UI, run as a person would use
// it: open the slide list, see real thumbnails, open a slide, watch tiles load, zoom in to a deeper
// pyramid level, and check that what is drawn is an image rather than a blank canvas.
//
// Runs against a node that is already up:
//   SLIDEMESH_URL=http://127.0.0.1:8080 node --test viewer.test.mjs
// Optional: SLIDEMESH_ARTIFACTS (screenshot folder, default ./artifacts), SLIDEMESH_SLIDE_ID (open
// this slide instead of the first card with a thumbnail), CHROMIUM_PATH (default /usr/bin/chromium).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { launchChromium } from './chromium.mjs';

const BASE_URL = (process.env.SLIDEMESH_URL ?? '').replace(/\/+$/, '');
const ARTIFACTS = resolve(process.env.SLIDEMESH_ARTIFACTS || 'artifacts');
const WANTED_SLIDE = process.env.SLIDEMESH_SLIDE_ID || null;
const WAIT_MS = 30_000;

let browser;
let page;
/** Uncaught page errors and failed asset requests, asserted empty at the end. */
const pageErrors = [];
const badAssets = [];
/** What the node's Content-Security-Policy blocked (Chromium reports it on the console). */
const cspViolations = [];
/** Set when a step fails, so later steps (which depend on it) skip instead of piling up errors. */
let broken = false;

async function screenshot(name, options = {}) {
  const path = resolve(ARTIFACTS, name);
  await page.screenshot({ path, ...options });
  return path;
}

/** Run a step; on failure mark the run broken and keep a screenshot of the moment. */
function step(name, fn) {
  it(name, async (t) => {
    if (broken) {
      t.skip('an earlier step failed');
      return;
    }
    try {
      await fn(t);
    } catch (err) {
      broken = true;
      const safe = name.replace(/[^a-z0-9]+/gi, '-').toLowerCase();
      const shot = await screenshot(`failure-${safe}.png`, { fullPage: true }).catch(() => null);
      if (shot) t.diagnostic(`screenshot at failure: ${shot}`);
      for (const e of pageErrors) t.diagnostic(`page error: ${e}`);
      for (const a of badAssets) t.diagnostic(`asset: ${a}`);
      throw err;
    }
  });
}

/**
 * Measure what the viewer has drawn: reads OpenSeadragon's drawer canvas in the page. When
 * `findTissue` is set, also returns the CSS-pixel centre of the most "stained" block, so the
 * zoom step can aim at tissue rather than empty glass.
 */
function sampleCanvas(findTissue = false) {
  return page.evaluate((findTissue) => {
    const source = window.slidemeshViewer.drawer.canvas;
    // Copy into a fresh 2D canvas so this works whatever drawer (2D or WebGL) produced it.
    const copy = document.createElement('canvas');
    copy.width = source.width;
    copy.height = source.height;
    const ctx = copy.getContext('2d', { willReadFrequently: true });
    ctx.drawImage(source, 0, 0);
    const { data, width, height } = ctx.getImageData(0, 0, copy.width, copy.height);
    let painted = 0;
    let stained = 0;
    let sum = 0;
    let sumSq = 0;
    const block = 32;
    const blocksX = Math.ceil(width / block);
    const blockScore = new Float64Array(blocksX * Math.ceil(height / block));
    for (let y = 0; y < height; y += 1) {
      for (let x = 0; x < width; x += 1) {
        const i = (y * width + x) * 4;
        if (data[i + 3] === 0) continue; // nothing drawn here
        painted += 1;
        const lum = 0.2126 * data[i] + 0.7152 * data[i + 1] + 0.0722 * data[i + 2];
        sum += lum;
        sumSq += lum * lum;
        if (Math.min(data[i], data[i + 1], data[i + 2]) < 225) {
          stained += 1;
          blockScore[Math.floor(y / block) * blocksX + Math.floor(x / block)] += 1;
        }
      }
    }
    const mean = painted ? sum / painted : 0;
    const stddev = painted ? Math.sqrt(Math.max(0, sumSq / painted - mean * mean)) : 0;
    let tissue = null;
    if (findTissue) {
      let best = -1;
      blockScore.forEach((score, i) => {
        if (score > best) {
          best = score;
          tissue = { x: ((i % blocksX) + 0.5) * block, y: (Math.floor(i / blocksX) + 0.5) * block };
        }
      });
      const ratio = source.width / source.clientWidth || 1; // canvas pixels per CSS pixel
      if (tissue) tissue = { x: tissue.x / ratio, y: tissue.y / ratio };
    }
    const total = width * height;
    return { width, height, paintedFraction: painted / total, stainedFraction: stained / total, stddev, tissue };
  }, findTissue);
}

/** Tile statistics exposed by the UI (see node/web/src/slide-viewer.js). */
function stats() {
  return page.evaluate(() => ({ ...window.slidemeshStats, byLevel: { ...window.slidemeshStats.byLevel } }));
}

/** Wait until OpenSeadragon reports every tile needed for the current view as loaded. */
async function waitFullyLoaded() {
  await page.waitForFunction(() => {
    const item = window.slidemeshViewer?.world.getItemAt(0);
    return Boolean(item && item.getFullyLoaded() && !window.slidemeshViewer.isAnimating?.());
  }, null, { timeout: WAIT_MS });
}

describe('slidemesh web UI', () => {
  before(async () => {
    assert.ok(BASE_URL, 'set SLIDEMESH_URL to the node\'s base URL, e.g. SLIDEMESH_URL=http://127.0.0.1:8080');
    await mkdir(ARTIFACTS, { recursive: true });
    browser = await launchChromium();
    page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    page.on('pageerror', (err) => pageErrors.push(String(err?.stack ?? err)));
    page.on('response', (res) => {
      if (res.status() >= 400 && new URL(res.url()).pathname.startsWith('/assets/')) {
        badAssets.push(`${res.status()} ${res.url()}`);
      }
    });
    page.on('requestfailed', (req) => {
      if (new URL(req.url()).pathname.startsWith('/assets/')) badAssets.push(`failed ${req.url()}`);
    });
    page.on('console', (m) => {
      if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
    });
  });

  after(async () => {
    await browser?.close();
  });

  let initial;

  step('lists slides with thumbnails that load', async (t) => {
    await page.goto(`${BASE_URL}/`, { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('.slide-card', { timeout: WAIT_MS });
    // Let every thumbnail settle (loaded, or failed and replaced by a placeholder) so the choice
    // of slide below does not depend on which image happened to arrive first.
    await page.waitForFunction(
      () => [...document.querySelectorAll('.slide-card__img')].every((img) => img.complete),
      null,
      { timeout: WAIT_MS },
    );
    const cards = await page.$$eval('.slide-card', (els) => els.map((el) => {
      const img = el.querySelector('.slide-card__img');
      return { id: el.dataset.slideId, thumbnailLoaded: Boolean(img && img.complete && img.naturalWidth > 0) };
    }));
    t.diagnostic(`${cards.length} slide card(s); ${cards.filter((c) => c.thumbnailLoaded).length} with a loaded thumbnail`);
    assert.ok(cards.length >= 1, 'the slide list shows no slide cards');
    assert.ok(await page.locator('#our-slides').count(), 'the "Our slides" section is missing');
    assert.ok(await page.locator('#shared-slides').count(), 'the "Shared with us" section is missing');
    t.diagnostic(`screenshot: ${await screenshot('slide-list.png', { fullPage: true })}`);

    const target = WANTED_SLIDE
      ? cards.find((c) => c.id === WANTED_SLIDE)
      : cards.find((c) => c.thumbnailLoaded);
    assert.ok(target, WANTED_SLIDE ? `slide ${WANTED_SLIDE} is not in the list` : 'no card has a loaded thumbnail');
    await Promise.all([
      page.waitForURL(/\/view\//, { timeout: WAIT_MS }),
      page.click(`.slide-card[data-slide-id="${target.id}"] .slide-card__link`),
    ]);
    t.diagnostic(`opened ${page.url()}`);
  });

  step('opens the viewer and loads tiles', async (t) => {
    await page.waitForFunction(() => window.slidemeshStats?.tilesLoaded > 0, null, { timeout: WAIT_MS });
    await waitFullyLoaded();
    initial = await stats();
    t.diagnostic(`initial view: ${JSON.stringify(initial)}`);
    assert.equal(initial.tilesFailed, 0, 'tiles failed to load in the initial view');
    const drawn = await sampleCanvas(true);
    t.diagnostic(`initial canvas: ${JSON.stringify(drawn)}`);
    assert.ok(drawn.paintedFraction > 0.05, `the viewer drew almost nothing (${(drawn.paintedFraction * 100).toFixed(1)}% of the canvas)`);
    initial.tissue = drawn.tissue;
    t.diagnostic(`screenshot: ${await screenshot('viewer.png')}`);
  });

  step('shows the slide\'s access history', async (t) => {
    // The panel loads the node's audit trail about the slide: a table, or "No access recorded."
    await page.waitForFunction(
      () => document.querySelector('.access table, .access .status:not(:empty)')
        && !document.querySelector('.access')?.textContent.includes('Loading'),
      null, { timeout: WAIT_MS });
    const text = await page.locator('.access').innerText();
    t.diagnostic(`access history: ${text.replace(/\s+/g, ' ').slice(0, 200)}`);
    assert.ok(!text.includes('unavailable'), `access history failed to load: ${text}`);
  });

  step('loads a deeper pyramid level after zooming in', async (t) => {
    const levels = await page.evaluate(() => window.slidemeshViewer.world.getItemAt(0).source.maxLevel + 1);
    // A slide small enough to show at full resolution from the start has nothing deeper to load.
    const deeper = levels > 1 && initial.finestLevel > 0;
    // Zoom to full resolution (one image pixel per screen pixel) centred on the most stained spot.
    await page.evaluate((tissue) => {
      const viewer = window.slidemeshViewer;
      const OSD = window.OpenSeadragon;
      const item = viewer.world.getItemAt(0);
      const centre = tissue
        ? viewer.viewport.pointFromPixel(new OSD.Point(tissue.x, tissue.y))
        : viewer.viewport.getCenter();
      viewer.viewport.zoomTo(item.imageToViewportZoom(1), null, true);
      viewer.viewport.panTo(centre, true);
    }, initial.tissue);
    if (deeper) {
      await page.waitForFunction(
        (before) => window.slidemeshStats.finestLevel < before,
        initial.finestLevel,
        { timeout: WAIT_MS },
      );
    }
    await waitFullyLoaded();
    const zoomed = await stats();
    t.diagnostic(`after zoom (${levels} level(s)): ${JSON.stringify(zoomed)}`);
    assert.ok(zoomed.tilesLoaded > initial.tilesLoaded, 'zooming in loaded no new tiles');
    if (deeper) assert.ok(zoomed.finestLevel < initial.finestLevel, 'zooming in did not reach a finer level');
    assert.equal(zoomed.tilesFailed, 0, `${zoomed.tilesFailed} tile(s) failed to load`);
    t.diagnostic(`screenshot: ${await screenshot('viewer-zoomed.png')}`);
  });

  step('draws an image, not a blank canvas', async (t) => {
    const drawn = await sampleCanvas();
    t.diagnostic(`zoomed canvas: ${JSON.stringify(drawn)}`);
    assert.ok(drawn.paintedFraction > 0.5, `only ${(drawn.paintedFraction * 100).toFixed(1)}% of the canvas is drawn`);
    assert.ok(drawn.stainedFraction > 0.05, `only ${(drawn.stainedFraction * 100).toFixed(1)}% of the canvas is non-white`);
    assert.ok(drawn.stddev > 4, `the drawn image is flat (luminance std dev ${drawn.stddev.toFixed(2)})`);
  });

  step('had no page errors, no missing assets and nothing blocked by its CSP', () => {
    assert.deepEqual(pageErrors, [], 'uncaught errors in the page');
    assert.deepEqual(badAssets, [], 'UI assets that failed to load');
    assert.deepEqual(cspViolations, [], 'what the node\'s Content-Security-Policy blocked');
  });
});
