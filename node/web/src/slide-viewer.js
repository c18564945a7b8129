// slide-viewer.js: owns the viewer page ("/view/{slide_id}"): the OpenSeadragon deep-zoom viewer
// over one slide's tiles, the side panel with the slide's metadata and label/overview images, the
// scale bar, and the tile statistics that the browser test reads (window.slidemeshStats).
// Opened with ?referral={id}, it also shows that referral's marks (annotation-layer.js).

import { marksPanel } from './annotation-layer.js';
import { ApiError, cacheWholeSlide, getAccessHistory, getSlide, newReferralPath, postWanted } from './api.js';
import { h, metaRows, notice } from './dom.js';
import { formatAcquired, formatBytes, formatCount, formatDimensions, formatSpacing, slideTitle } from './format.js';
import { createTileSource, pyramidLevels, wantedRegion } from './tile-source.js';

/** How the API's `origin` values read to a person; unknown values are shown as sent. */
const ORIGINS = {
  local: 'On this node (original)',
  replica: 'Replica on this node',
  shared: 'Shared with this trust; tiles stream from peers',
};

/** Where OpenSeadragon's button images are served (node/build.rs embeds them there). */
const OSD_IMAGES = '/assets/osd-images/';

/**
 * Tile statistics, shared with tests and the status line. 404s are counted apart from failures:
 * sparse DICOM pyramids legitimately lack tiles outside the tissue, and those render as blank.
 */
function newStats() {
  return { tilesLoaded: 0, tilesFailed: 0, tilesMissing: 0, byLevel: {}, finestLevel: null };
}

/** Round a length in µm down to 1, 2 or 5 × 10^k so the scale bar shows a round number. */
function niceLength(um) {
  const power = 10 ** Math.floor(Math.log10(um));
  const mantissa = um / power;
  return (mantissa >= 5 ? 5 : mantissa >= 2 ? 2 : 1) * power;
}

/** Keep the scale bar ~100–250 CSS px long, labelled in µm or mm. */
function updateScaleBar(viewer, bar, mmPerPixel) {
  const item = viewer.world.getItemAt(0);
  if (!item) return;
  // Screen (CSS) pixels per full-resolution image pixel at the current, animated zoom.
  const screenPerImage = item.viewportToImageZoom(viewer.viewport.getZoom(true));
  if (!(screenPerImage > 0)) return;
  const umPerScreenPx = (mmPerPixel * 1000) / screenPerImage;
  const length = niceLength(umPerScreenPx * 250);
  bar.querySelector('.scale-bar__rule').style.width = `${(length / umPerScreenPx).toFixed(1)}px`;
  bar.querySelector('.scale-bar__label').textContent = length >= 1000 ? `${length / 1000} mm` : `${length} µm`;
  bar.hidden = false;
}

/** Column (x) spacing of level 0 in mm; DICOM PixelSpacing is [row, column]. */
function spacingMm(slide) {
  const spacing = slide.pixel_spacing_mm ?? pyramidLevels(slide)[0]?.pixel_spacing_mm;
  const x = Array.isArray(spacing) ? (spacing[1] ?? spacing[0]) : null;
  return Number.isFinite(x) && x > 0 ? x : null;
}

function levelTable(slide) {
  const levels = pyramidLevels(slide);
  const head = h('tr', {}, ['Level', 'Size (px)', 'Tile', 'Scale'].map((name) => h('th', { scope: 'col' }, name)));
  const rows = levels.map((l) => h('tr', {},
    h('td', {}, String(l.index)),
    h('td', {}, `${formatCount(l.width)} × ${formatCount(l.height)}`),
    h('td', {}, `${l.tile_width}×${l.tile_height}`),
    h('td', {}, Number.isFinite(l.downsample) ? `${Number(l.downsample.toFixed(2))}×` : '')));
  return h('details', { class: 'panel-details' },
    h('summary', {}, `Pyramid levels (${levels.length})`),
    h('table', { class: 'levels' }, h('thead', {}, head), h('tbody', {}, rows)));
}

function associatedImage(url, caption, className) {
  if (!url) return null;
  const img = h('img', { src: url, alt: `${caption} image of the slide`, decoding: 'async' });
  const figure = h('figure', { class: `assoc ${className}` }, img, h('figcaption', {}, caption));
  img.addEventListener('error', () => figure.remove(), { once: true });
  return figure;
}

function sidePanel(slide, node, tileStatus) {
  const ours = node && slide.owner === node.trust;
  const owner = ours ? `${slide.owner} (this trust)` : slide.owner;
  return h('aside', { class: 'viewer-panel', 'aria-label': 'Slide details' },
    h('a', { class: 'back-link', href: '/' }, '← All slides'),
    h('h1', { class: 'viewer-panel__title' }, slideTitle(slide)),
    h('dl', { class: 'meta' }, metaRows([
      ['Stain', slide.stain],
      ['Anatomic site', slide.anatomic_site],
      ['Specimen ID', slide.container_id],
      ['Acquired', formatAcquired(slide.acquired)],
      ['Owner trust', owner],
      ['Stored', ORIGINS[slide.origin] ?? slide.origin],
      ['De-identified', slide.deidentified ? `by the owner, for project ${slide.deidentified.project}` : null],
      ['Dimensions', formatDimensions(slide.width, slide.height)],
      ['Pixel spacing', formatSpacing(slide.pixel_spacing_mm)],
      ['Size', [formatBytes(slide.bytes), Number.isFinite(slide.tiles) ? `${formatCount(slide.tiles)} tiles` : null].filter(Boolean).join(' · ')],
      ['Slide ID', slide.slide_id, { class: 'mono' }],
    ])),
    h('div', { class: 'assoc-images' },
      associatedImage(slide.label_url, 'Label', 'assoc--label'),
      associatedImage(slide.overview_url, 'Overview', 'assoc--overview')),
    levelTable(slide),
    tileStatus,
    slide.origin === 'shared' ? cacheCopy(slide.slide_id) : null,
    ours ? h('p', {}, h('a', { class: 'button button--secondary', id: 'refer-slide', href: newReferralPath(slide.slide_id) }, 'Refer for an opinion')) : null,
    accessHistory(slide.slide_id, ours));
}

/** For a shared slide: fetch all of it into this node's cache now (e.g. before an MDT meeting). */
function cacheCopy(slideId) {
  const result = h('p', { class: 'status', role: 'status' });
  const button = h('button', {
    type: 'button',
    onclick: async () => {
      button.disabled = true;
      result.textContent = 'Fetching the whole slide…';
      try {
        const done = await cacheWholeSlide(slideId);
        result.textContent = `${formatCount(done.tiles ?? 0)} tiles kept on this node (${formatBytes(done.bytes ?? 0)} fetched).`;
      } catch (err) {
        result.textContent = `The slide could not be fetched: ${err.message ?? err}`;
      } finally {
        button.disabled = false;
      }
    },
  }, 'Keep the whole slide on this node');
  return h('div', { class: 'cache-copy' }, button, result);
}

/** Who had what of this slide and why (the owner's decisions, or this node's own fetches). */
function accessHistory(slideId, ours) {
  const section = h('section', { class: 'access', 'aria-label': 'Access history' },
    h('h2', { class: 'access__title' }, ours ? 'Access by other trusts' : 'Access through this node'),
    h('p', { class: 'status' }, 'Loading…'));
  getAccessHistory(slideId).then((history) => {
    const rows = history.entries.slice(0, 20).map((e) => h('tr', { class: e.allowed ? '' : 'access--denied' },
      h('td', {}, new Date(e.time * 1000).toLocaleString('en-GB')),
      h('td', {}, e.user ? `${e.peer} · ${e.user}` : e.peer),
      h('td', {}, e.purpose),
      h('td', {}, e.action.replace('_', ' ')),
      h('td', { title: e.rules.join(', ') }, e.allowed ? 'allowed' : 'refused')));
    section.replaceChildren(section.firstChild, history.entries.length
      ? h('table', { class: 'access__table' },
        h('thead', {}, h('tr', {}, ['When', 'Trust · person', 'Purpose', 'Action', 'Decision'].map((c) => h('th', {}, c)))),
        h('tbody', {}, rows))
      : h('p', { class: 'status' }, 'No access recorded.'),
      history.total > 20 ? h('p', { class: 'status' }, `${history.total} entries in all (slidemesh audit show).`) : null);
  }).catch((err) => {
    section.replaceChildren(section.firstChild, h('p', { class: 'status' }, `Access history unavailable: ${err.message ?? err}`));
  });
  return section;
}

function describeStats(stats) {
  const parts = [`${formatCount(stats.tilesLoaded)} tiles loaded`];
  if (stats.finestLevel != null) parts.push(`finest level ${stats.finestLevel}`);
  if (stats.tilesMissing) parts.push(`${formatCount(stats.tilesMissing)} empty`);
  if (stats.tilesFailed) parts.push(`${formatCount(stats.tilesFailed)} failed`);
  return parts.join(' · ');
}

/** Render the viewer for `slideId` into `root`. */
export async function renderViewer(root, slideId, nodePromise) {
  document.body.classList.add('is-viewer');
  document.title = 'Slide · slidemesh';
  root.replaceChildren(h('div', { class: 'page' }, h('p', { class: 'status', role: 'status' }, 'Loading slide…')));

  let node;
  let slide;
  try {
    [node, slide] = await Promise.all([nodePromise, getSlide(slideId)]);
  } catch (err) {
    console.error(err);
    const missing = err instanceof ApiError && err.status === 404;
    const refused = err instanceof ApiError && err.status === 403;
    root.replaceChildren(h('div', { class: 'page' },
      h('a', { class: 'back-link', href: '/' }, '← All slides'),
      missing
        ? notice('error', 'Slide not found.', 'This node has no slide with that id, or it is no longer shared with this trust.')
        : refused
          ? notice('error', 'You may not view this slide.', err.detail || 'The owning trust\u2019s policy does not allow it for your role.')
          : notice('error', 'The slide could not be loaded.', String(err.message ?? err))));
    return;
  }
  if (!window.OpenSeadragon) {
    root.replaceChildren(h('div', { class: 'page' }, notice('error', 'The viewer library failed to load.', 'Reload the page.')));
    return;
  }

  document.title = `${slideTitle(slide)} · slidemesh`;
  const stats = newStats();
  window.slidemeshStats = stats;

  const osdHost = h('div', { class: 'osd', id: 'osd', role: 'application', 'aria-label': `Zoomable image of ${slideTitle(slide)}` });
  const scaleBar = h('div', { class: 'scale-bar', hidden: true, 'aria-hidden': 'true' },
    h('div', { class: 'scale-bar__rule' }), h('span', { class: 'scale-bar__label' }));
  const tileStatus = h('p', { class: 'tile-status' }, 'Loading tiles…');
  const failure = h('div', { class: 'viewer-alert', hidden: true, role: 'alert' });

  root.replaceChildren(h('div', { class: 'viewer-layout' },
    h('section', { class: 'viewer-stage', 'aria-label': 'Slide viewer' }, osdHost, scaleBar, failure),
    sidePanel(slide, node, tileStatus)));

  let source;
  try {
    source = createTileSource(window.OpenSeadragon, slide);
  } catch (err) {
    osdHost.replaceWith(notice('error', 'This slide cannot be displayed.', String(err.message ?? err)));
    return;
  }

  const viewer = window.OpenSeadragon({
    element: osdHost,
    prefixUrl: OSD_IMAGES,
    tileSources: source,
    // The 2D canvas drawer works everywhere, including headless browsers without a GPU, and keeps
    // the drawn pixels readable for the browser test.
    drawer: 'canvas',
    // XHR loading exposes the HTTP status, so a 404 (sparse tile) can be told from a real failure.
    loadTilesWithAjax: true,
    showNavigator: true,
    navigatorPosition: 'TOP_RIGHT',
    // An opaque navigator: the default translucent one shows the zoomed slide through the overview.
    navigatorOpacity: 1,
    navigatorBackground: '#fff',
    navigatorBorderColor: '#d8dde0',
    navigatorDisplayRegionColor: '#005eb8',
    showRotationControl: true,
    // Allow a little magnification past full resolution, as pathologists expect.
    maxZoomPixelRatio: 2,
    visibilityRatio: 0.5,
    animationTime: 0.5,
    timeout: 60000,
    // A single click should not zoom (it is easy to do by accident while reading); double-click does.
    gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true },
  });
  window.slidemeshViewer = viewer;

  // Opened from a referral: its marks (drawn here by the specialist, or shown with the opinion).
  const referralId = new URLSearchParams(window.location.search).get('referral');
  if (referralId) {
    const placeholder = h('p', { class: 'status', role: 'status' }, 'Loading the referral\u2019s marks…');
    root.querySelector('.viewer-panel__title').after(placeholder);
    viewer.addOnceHandler('open', async () => placeholder.replaceWith(await marksPanel(viewer, slide, referralId)));
  }

  const refreshStatus = () => {
    tileStatus.textContent = describeStats(stats);
    if (stats.tilesFailed) {
      failure.textContent = `${formatCount(stats.tilesFailed)} tile${stats.tilesFailed === 1 ? '' : 's'} failed to load; parts of the image may be missing.`;
      failure.hidden = false;
    }
  };
  viewer.addHandler('tile-loaded', (event) => {
    const level = source.dicomLevel(event.tile.level);
    stats.tilesLoaded += 1;
    stats.byLevel[level] = (stats.byLevel[level] ?? 0) + 1;
    stats.finestLevel = stats.finestLevel == null ? level : Math.min(stats.finestLevel, level);
    refreshStatus();
  });
  viewer.addHandler('tile-load-failed', (event) => {
    if (event.tileRequest?.status === 404) stats.tilesMissing += 1;
    else stats.tilesFailed += 1;
    refreshStatus();
  });
  viewer.addHandler('open-failed', (event) => {
    osdHost.replaceWith(notice('error', 'The viewer could not open this slide.', String(event.message ?? '')));
  });

  if (slide.origin === 'shared') announceWantedTiles(viewer, slide);

  const mmPerPixel = spacingMm(slide);
  if (mmPerPixel) {
    const update = () => updateScaleBar(viewer, scaleBar, mmPerPixel);
    viewer.addHandler('open', update);
    viewer.addHandler('animation', update);
    viewer.addHandler('resize', update);
  }
}

/**
 * For a shared slide, tells the node which tiles the screen the viewer is moving to will need
 * (the target of the zoom or pan, not the frames in between), so the node fetches them from the
 * owner in one batch rather than as the browser asks for them six at a time.
 */
function announceWantedTiles(viewer, slide) {
  let timer;
  let last = '';
  const announce = () => {
    const image = viewer.world.getItemAt(0);
    if (!image) return;
    // `false`: where the animation is going, not where it is now.
    const bounds = image.viewportToImageRectangle(viewer.viewport.getBounds(false));
    const zoom = image.viewportToImageZoom(viewer.viewport.getZoom(false)) * (window.devicePixelRatio || 1);
    const region = wantedRegion(slide, bounds, zoom);
    if (!region) return;
    const key = JSON.stringify(region);
    if (key === last) return;
    last = key;
    postWanted(slide.slide_id, region.level, { cols: region.cols, rows: region.rows });
  };
  const soon = () => {
    clearTimeout(timer);
    timer = setTimeout(announce, 30);
  };
  viewer.addHandler('open', announce);
  viewer.addHandler('zoom', soon);
  viewer.addHandler('pan', soon);
  viewer.addHandler('resize', soon);
}
