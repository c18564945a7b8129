// dicomweb-viewer.test.mjs: a third-party DICOMweb viewer (dicom-microscopy-viewer, from npm)
// renders a slide from a slidemesh node's /dicomweb in headless Chromium, as a hospital would
// deploy it: the viewer page comes from its own origin (a small static server started here), so
// every request to the node is cross-origin and needs the node's CORS.
//
// Checks: series metadata, frames at every level down to full resolution after zooming in, the
// overview and label images (rendered PNG), every request to the node answered 200, no frame
// failing to decode, and a canvas that shows an image rather than a blank or flat area.
//
// Environment: SLIDEMESH_DICOMWEB (e.g. http://127.0.0.1:8080/dicomweb), SLIDEMESH_STUDY,
// SLIDEMESH_SERIES, SLIDEMESH_ARTIFACTS (screenshot folder), CHROMIUM_PATH; optionally
// SLIDEMESH_ANN_SERIES and SLIDEMESH_ANN_MARKS (an annotation series and its mark count).
// Exit status 0 when every check passes; otherwise each failure is printed as "FAIL: ...".

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const DICOMWEB = (process.env.SLIDEMESH_DICOMWEB ?? '').replace(/\/+$/, '');
const STUDY = process.env.SLIDEMESH_STUDY ?? '';
const SERIES = process.env.SLIDEMESH_SERIES ?? '';
// Optional: an annotation series of the study and how many marks it holds; the viewer must
// draw every one over the slide.
const ANN_SERIES = process.env.SLIDEMESH_ANN_SERIES ?? '';
const ANN_MARKS = Number(process.env.SLIDEMESH_ANN_MARKS ?? 0);
const ARTIFACTS = path.resolve(process.env.SLIDEMESH_ARTIFACTS || 'artifacts');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const TIMEOUT_MS = 60_000;

const failures = [];
const fail = (message) => failures.push(message);

/** Serves the page and the viewer's files from another origin than the node's. */
function startStaticServer() {
  const roots = [
    ['/dmv/', path.join(here, 'node_modules/dicom-microscopy-viewer/dist/')],
    ['/dwc/', path.join(here, 'node_modules/dicomweb-client/build/')],
    ['/', path.join(here, 'dicomweb-viewer/')],
  ];
  const types = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm' };
  const server = http.createServer((req, res) => {
    const { pathname } = new URL(req.url, 'http://page');
    const [prefix, dir] = roots.find(([p]) => pathname.startsWith(p));
    const file = path.normalize(path.join(dir, decodeURIComponent(pathname.slice(prefix.length)) || 'index.html'));
    if (!file.startsWith(dir) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404);
      res.end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': types[path.extname(file)] || 'application/octet-stream' });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

/** Pixel statistics of a PNG screenshot, computed in the page. */
async function imageStats(page, png) {
  return page.evaluate(async (b64) => {
    const bitmap = await createImageBitmap(await (await fetch(`data:image/png;base64,${b64}`)).blob());
    const ctx = new OffscreenCanvas(bitmap.width, bitmap.height).getContext('2d');
    ctx.drawImage(bitmap, 0, 0);
    const d = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
    const colours = new Set();
    let sum = 0;
    let sum2 = 0;
    let lit = 0;
    const n = d.length / 4;
    for (let i = 0; i < d.length; i += 4) {
      const luma = 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
      sum += luma;
      sum2 += luma * luma;
      if (d[i] + d[i + 1] + d[i + 2] > 30) lit++;
      colours.add(((d[i] >> 3) << 10) | ((d[i + 1] >> 3) << 5) | (d[i + 2] >> 3));
    }
    const mean = sum / n;
    return { colours: colours.size, lumaStd: Math.sqrt(sum2 / n - mean * mean), litFraction: lit / n };
  }, png.toString('base64'));
}

async function main() {
  if (!DICOMWEB || !STUDY || !SERIES) {
    fail('set SLIDEMESH_DICOMWEB, SLIDEMESH_STUDY and SLIDEMESH_SERIES');
    return;
  }
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const started = Date.now();
  const server = await startStaticServer();
  const page_url = `http://127.0.0.1:${server.address().port}/index.html?dicomweb=${encodeURIComponent(DICOMWEB)}&study=${STUDY}&series=${SERIES}${ANN_SERIES ? `&ann=${ANN_SERIES}` : ''}`;
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // The viewer draws with WebGL: software rendering, no GPU.
    args: ['--no-sandbox', '--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--ignore-gpu-blocklist'],
  });
  const requests = [];
  const consoleErrors = [];
  try {
    const context = await browser.newContext({ viewport: { width: 820, height: 940 } });
    const page = await context.newPage();
    page.on('pageerror', (e) => consoleErrors.push(e.message));
    page.on('console', (m) => m.type() === 'error' && consoleErrors.push(m.text()));
    const record = async (req, failed) => {
      if (!req.url().startsWith(DICOMWEB)) return;
      const response = failed ? null : await req.response().catch(() => null);
      requests.push({
        method: req.method(),
        path: req.url().slice(DICOMWEB.length),
        status: failed ? `failed (${req.failure()?.errorText})` : response?.status(),
      });
    };
    context.on('requestfinished', (req) => record(req, false));
    context.on('requestfailed', (req) => record(req, true));

    await page.goto(page_url, { waitUntil: 'load' });
    const deadline = started + TIMEOUT_MS;
    // Tile loading is done when every started frame has ended and nothing new began for 1 s.
    const settled = async (atLeast) => {
      let last = -1;
      let since = Date.now();
      for (;;) {
        const state = await page.evaluate(() => window.__dmv);
        if (state.state === 'failed') return state;
        if (state.framesEnded !== last || state.framesStarted !== state.framesEnded) {
          last = state.framesEnded;
          since = Date.now();
        }
        if (state.framesEnded >= atLeast && Date.now() - since > 1000) return state;
        if (Date.now() > deadline) {
          fail(`tiles still loading after ${TIMEOUT_MS / 1000} s: ${JSON.stringify(state)}`);
          return state;
        }
        await page.waitForTimeout(200);
      }
    };
    let state = await settled(1);
    const firstScreen = state.framesEnded;
    if (ANN_SERIES) {
      // Marks are drawn for the screen the viewer shows (at full resolution only those whose
      // first vertex is on screen, so this is checked before zooming in).
      for (let i = 0; i < 50 && (await page.evaluate(() => window.__dmv.annotationFeatures)) < ANN_MARKS; i++) {
        await page.waitForTimeout(200);
      }
      state = await page.evaluate(() => window.__dmv);
      await page.screenshot({ path: path.join(ARTIFACTS, 'dicomweb-viewer-annotations.png') });
      if (state.state !== 'rendered') throw new Error(`page ${state.state}: ${state.error}`);
      if (state.annotationGroups.length !== ANN_MARKS) fail(`${state.annotationGroups.length} annotation groups, expected ${ANN_MARKS}`);
      if (state.annotationFeatures !== ANN_MARKS) fail(`${state.annotationFeatures} marks drawn, expected ${ANN_MARKS}`);
      for (const e of state.annotationErrors) fail(`annotation loading: ${e}`);
      console.log(`annotations: ${state.annotationFeatures} marks drawn in groups ${state.annotationGroups.map((g) => g.label).join(', ')}`);
    }
    await page.screenshot({ path: path.join(ARTIFACTS, 'dicomweb-viewer-first.png') });
    // The full-resolution level: the VOLUME instance with the widest pixel matrix.
    const metadataUrl = `${DICOMWEB}/studies/${STUDY}/series/${SERIES}/metadata`;
    const instances = await (await fetch(metadataUrl, { headers: { accept: 'application/dicom+json' } })).json();
    const width = (i) => i['00480006']?.Value?.[0] ?? 0;
    const volumes = instances.filter((i) => i['00080008']?.Value?.[2] === 'VOLUME');
    const level0 = volumes.reduce((a, b) => (width(b) > width(a) ? b : a))['00080018'].Value[0];
    const level0Fetched = () => requests.some((r) => r.status === 200 && r.path.includes(`/instances/${level0}/frames/`));
    if (state.state === 'rendered') {
      // Zoom in with the mouse wheel over the centre of the slide until the viewer asks for
      // full-resolution tiles.
      const box = await (await page.$('#viewport')).boundingBox();
      await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
      for (let i = 0; i < 12 && !level0Fetched(); i++) {
        await page.mouse.wheel(0, -300);
        await page.waitForTimeout(400);
      }
      state = await settled(firstScreen + 1);
    }
    await page.waitForTimeout(500);
    const shot = await (await page.$('#viewport')).screenshot({ path: path.join(ARTIFACTS, 'dicomweb-viewer-zoomed.png') });
    const stats = await imageStats(page, shot);
    const overview = await imageStats(page, await (await page.$('#overview')).screenshot());

    const metadata = requests.find((r) => r.path.endsWith('/metadata'));
    if (!metadata) fail('the viewer never asked for the series metadata');
    const frames = requests.filter((r) => /\/frames\/\d/.test(r.path));
    const rendered = requests.filter((r) => r.path.endsWith('/rendered'));
    for (const r of requests.filter((r) => r.status !== 200)) fail(`${r.method} ${r.path} answered ${r.status}`);
    if (state.state !== 'rendered') fail(`page ${state.state}: ${state.error}`);
    if (frames.length === 0) fail('the viewer fetched no frames');
    if (state.framesErrored > 0) fail(`${state.framesErrored} frames failed: ${state.frameErrors.join('; ')}`);
    if (state.framesEnded <= firstScreen) fail('zooming in loaded no further tiles');
    if (!level0Fetched()) fail('zooming in never reached full-resolution tiles');
    if (rendered.length < 2) fail(`overview and label were not both fetched as rendered images (${rendered.length})`);
    if (stats.colours < 50 || stats.lumaStd < 5 || stats.litFraction < 0.2) fail(`the slide view looks blank: ${JSON.stringify(stats)}`);
    if (overview.colours < 20 || overview.lumaStd < 5) fail(`the overview looks blank: ${JSON.stringify(overview)}`);
    // dicom-microscopy-viewer draws POINT annotations on an OpenLayers WebGL layer made with
    // hit detection off, then hit-tests it as the pointer moves; OpenLayers says so on the
    // console each time. That is the viewer's own doing, whatever the data.
    const viewerOwn = /forEachFeatureAtCoordinate` cannot be used on a WebGL layer if the hit detection logic has been disabled/;
    for (const e of consoleErrors.filter((m) => !(ANN_SERIES && viewerOwn.test(m)))) fail(`browser error: ${e}`);
    console.log(`${frames.length} frame requests, ${rendered.length} rendered images, ${state.framesEnded} tiles decoded, ` +
      `view ${JSON.stringify(stats)}, ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } finally {
    await browser.close();
    server.close();
  }
}

main()
  .catch((e) => fail(e.stack || String(e)))
  .finally(() => {
    for (const f of failures) console.error(`FAIL: ${f}`);
    process.exitCode = failures.length ? 1 : 0;
  });
