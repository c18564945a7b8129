// slide-list.js: owns the slide list page ("/"): fetches /api/v1/slides and shows one card per
// slide, split into the slides this node's trust owns and those other trusts have shared with it.

import { listSlides, viewerPath } from './api.js';
import { h, metaRows, notice } from './dom.js';
import { formatAcquired, formatBytes, formatCount, formatDimensions, shortId, slideTitle } from './format.js';

/** A slide is "ours" when our trust owns it; without node info, fall back to where it is stored. */
export function isOurs(slide, node) {
  return node ? slide.owner === node.trust : slide.origin === 'local';
}

// Newest acquisition first, then by id so the order is stable between reloads.
function byAcquiredDesc(a, b) {
  return String(b.acquired ?? '').localeCompare(String(a.acquired ?? '')) || String(a.slide_id).localeCompare(String(b.slide_id));
}

function thumbnail(slide, title) {
  const placeholder = () => h('div', { class: 'slide-card__noimg' }, 'No thumbnail');
  if (!slide.thumbnail_url) return placeholder();
  const img = h('img', {
    class: 'slide-card__img',
    src: slide.thumbnail_url,
    alt: `Thumbnail of ${title}`,
    decoding: 'async',
  });
  // A broken thumbnail should read as "missing", not as a broken-image icon.
  img.addEventListener('error', () => img.replaceWith(placeholder()), { once: true });
  return img;
}

function slideCard(slide, node) {
  const title = slideTitle(slide);
  const ours = isOurs(slide, node);
  const levels = Number.isFinite(slide.levels) ? `${slide.levels} level${slide.levels === 1 ? '' : 's'}` : null;
  const dims = formatDimensions(slide.width, slide.height);
  const tiles = Number.isFinite(slide.tiles) ? `${formatCount(slide.tiles)} tiles` : null;
  return h('article', { class: 'slide-card', 'data-slide-id': slide.slide_id },
    h('div', { class: 'slide-card__thumb' }, thumbnail(slide, title)),
    h('div', { class: 'slide-card__body' },
      h('h3', { class: 'slide-card__title' },
        // The link is stretched over the whole card by CSS, so the card is one click target while
        // screen readers hear only the title as the link text.
        h('a', { class: 'slide-card__link', href: viewerPath(slide.slide_id) }, title)),
      h('dl', { class: 'meta meta--compact' }, metaRows([
        ['Specimen', slide.container_id],
        ['Acquired', formatAcquired(slide.acquired)],
        ['Owner', ours ? h('span', {}, slide.owner, ' ', h('span', { class: 'tag' }, 'this trust')) : slide.owner],
        ['Identity', slide.deidentified ? h('span', { class: 'tag', title: `Pseudonyms for project ${slide.deidentified.project}` }, 'de-identified') : null],
        ['Pyramid', [levels, dims].filter(Boolean).join(' · ')],
        ['Size', [formatBytes(slide.bytes), tiles].filter(Boolean).join(' · ')],
      ])),
      h('p', { class: 'slide-card__id', title: `Slide id ${slide.slide_id}` }, shortId(slide.slide_id))));
}

function section(id, heading, intro, slides, node, emptyState) {
  const headingId = `${id}-heading`;
  return h('section', { class: 'slide-section', id, 'aria-labelledby': headingId },
    h('div', { class: 'slide-section__head' },
      h('h2', { id: headingId }, heading, ' ', h('span', { class: 'count', 'aria-label': `${slides.length} slides` }, String(slides.length))),
      h('p', { class: 'slide-section__intro' }, intro)),
    slides.length
      ? h('div', { class: 'slide-grid' }, slides.map((s) => slideCard(s, node)))
      : emptyState);
}

/** Render the list into `root`. `nodePromise` resolves to the node info, or null if unavailable. */
export async function renderSlideList(root, nodePromise) {
  document.title = 'Slides · slidemesh';
  const status = h('p', { class: 'status', role: 'status' }, 'Loading slides…');
  root.replaceChildren(h('div', { class: 'page' }, h('h1', {}, 'Slides'), status));

  let node;
  let slides;
  try {
    [node, slides] = await Promise.all([nodePromise, listSlides()]);
  } catch (err) {
    console.error(err);
    status.replaceWith(notice('error', 'The slide list could not be loaded.', String(err.message ?? err),
      'Check that this trust’s slidemesh node is running, then reload the page.'));
    return;
  }

  const ours = slides.filter((s) => isOurs(s, node)).sort(byAcquiredDesc);
  const shared = slides.filter((s) => !isOurs(s, node)).sort(byAcquiredDesc);
  const trust = node ? `${node.trust_name ?? node.trust} (${node.trust})` : 'this trust';

  status.textContent = `${slides.length} slide${slides.length === 1 ? '' : 's'} available.`;
  status.classList.add('visually-hidden');
  root.querySelector('.page').append(
    section('our-slides', 'Our slides', `Scanned at ${trust} and stored on this node.`, ours, node,
      notice('empty', 'No slides on this node yet.', 'Slides ingested into this node will appear here.')),
    section('shared-slides', 'Shared with us', `Slides other trusts in the network have shared with ${trust}.`, shared, node,
      notice('empty', 'Nothing has been shared with this trust yet.',
        'When another trust shares a slide with you (for a second opinion, an MDT or research) it will appear here.')));
}
