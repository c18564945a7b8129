// annotation-layer.js: owns the marks of a referral on the viewer page
// ("/view/{slide_id}?referral={id}"). At the receiving trust, before the opinion is sent, the
// specialist draws points, lines, rectangles and polygons with Annotorious (the SVG layer for
// OpenSeadragon, from npm), writes a note for each and sees what it measures; the marks wait in
// this tab (sessionStorage) until the opinion is sent from the referral page. Once answered, both
// trusts see the opinion's marks here, read-only.
//
// Drawing needs a pointer (the library has no keyboard drawing); notes and deleting a mark are
// native form controls, so everything but the drawing itself works by keyboard.

import { getReferral, referralPath } from './api.js';
import { h, notice } from './dom.js';
import {
  SHAPE_NAMES, annotationFromMark, formatMeasure, loadDrafts, markFromAnnotation, measure, saveDrafts,
} from './marks.js';

/** Annotorious's tool names for our shapes (point and line come from its selector pack). */
const TOOLS = [['point', 'point'], ['line', 'line'], ['rectangle', 'rect'], ['polygon', 'polygon']];
const FINAL = ['closed', 'expired', 'withdrawn'];

/** Whether every vertex lies on the full-resolution image (the node refuses marks off it). */
function insideSlide(mark, slide) {
  const base = slide.levels?.[0] ?? slide;
  const [w, h] = [base.width, base.height];
  if (!(w > 0 && h > 0)) return true;
  return mark.points.every(([x, y]) => x >= 0 && y >= 0 && x <= w && y <= h);
}

function markLabel(mark, index, spacing) {
  const size = formatMeasure(measure(mark, spacing));
  return `${SHAPE_NAMES[mark.shape] ?? mark.shape} ${index + 1}${size ? ` · ${size}` : ''}`;
}

/**
 * The marks panel for `referralId` over `viewer` showing `slide`; resolves to the panel
 * element (a notice when the referral cannot be read or the library did not load).
 */
export async function marksPanel(viewer, slide, referralId) {
  let referral;
  try {
    referral = await getReferral(referralId);
  } catch (err) {
    return notice('error', 'The referral could not be loaded.', String(err.detail || err.message || err));
  }
  const back = h('a', { class: 'back-link', href: referralPath(referral.id) }, '← Back to the referral');
  const OSD = window.OpenSeadragon;
  if (!OSD?.Annotorious) {
    return h('section', { class: 'marks' }, back, notice('error', 'The annotation library failed to load.', 'Reload the page.'));
  }
  const slideId = slide.slide_id;
  const spacing = slide.pixel_spacing_mm;
  const editable = referral.direction === 'received' && !referral.opinion && !FINAL.includes(referral.status)
    && referral.slides.includes(slideId);
  let drafts = editable ? loadDrafts(window.sessionStorage, referral.id) : [];
  const shown = editable
    ? drafts.filter((m) => m.slide === slideId)
    : (referral.opinion?.annotations ?? []).filter((m) => m.slide === slideId);

  // No library editor (the notes are ours) and no selecting a drawn shape: a mark is changed
  // by deleting it and drawing it again.
  const anno = OSD.Annotorious(viewer, { disableEditor: true, disableSelect: true, readOnly: !editable });
  window.slidemeshMarks = anno;
  anno.setAnnotations(shown.map((m, i) => annotationFromMark(m, m.id ?? `#mark-${i + 1}`)));

  const list = h('ol', { class: 'marks__list', id: 'marks-list' });
  const status = h('p', { class: 'marks__status', role: 'status' });
  const empty = h('p', { class: 'marks__empty' }, editable ? 'No marks on this slide yet.' : 'No marks on this slide.');
  const persist = () => saveDrafts(window.sessionStorage, referral.id, drafts);
  const ours = () => drafts.filter((m) => m.slide === slideId);
  const renderList = () => {
    const marks = editable ? ours() : shown;
    list.replaceChildren(...marks.map((mark, i) => {
      const label = markLabel(mark, i, spacing);
      if (!editable) {
        return h('li', { class: 'marks__item' }, h('span', { class: 'marks__name' }, label),
          mark.text ? h('span', { class: 'marks__text' }, ` – ${mark.text}`) : null);
      }
      const noteId = `mark-note-${i + 1}`;
      return h('li', { class: 'marks__item' },
        h('label', { class: 'marks__name', for: noteId }, `${label}, note`),
        h('input', {
          id: noteId,
          class: 'marks__note',
          value: mark.text ?? '',
          // The node takes 1024 bytes of UTF-8: 250 characters fit in any script.
          maxlength: 250,
          autocomplete: 'off',
          onchange: (event) => {
            mark.text = event.target.value.trim();
            persist();
          },
        }),
        h('button', {
          type: 'button',
          class: 'button button--secondary button--small',
          'aria-label': `Delete ${label}`,
          onclick: () => {
            anno.removeAnnotation(mark.id);
            drafts = drafts.filter((m) => m !== mark);
            persist();
            renderList();
            status.textContent = `${label} deleted.`;
          },
        }, 'Delete'));
    }));
    empty.hidden = marks.length > 0;
    list.hidden = marks.length === 0;
  };

  let toolbar = null;
  if (editable) {
    window.Annotorious?.SelectorPack?.(anno, { tools: ['point', 'line'] });
    const buttons = TOOLS.map(([shape, tool]) => h('button', {
      type: 'button',
      class: 'button button--secondary button--small marks__tool',
      id: `tool-${shape}`,
      'aria-pressed': 'false',
      onclick: (event) => {
        anno.setDrawingTool(tool);
        anno.setDrawingEnabled(true);
        for (const b of buttons) b.setAttribute('aria-pressed', String(b === event.currentTarget));
        status.textContent = `Draw a ${shape} on the slide${shape === 'polygon' ? ' (double-click to finish)' : ''}.`;
      },
    }, SHAPE_NAMES[shape]));
    const idle = () => buttons.forEach((b) => b.setAttribute('aria-pressed', 'false'));
    toolbar = h('div', { class: 'marks__tools', role: 'group', 'aria-label': 'Drawing tools' }, buttons);
    // The library's own editor is off (the notes are ours): a drawn shape is saved at once.
    anno.on('createSelection', async (selection) => {
      await anno.updateSelected(selection, true);
      anno.cancelSelected();
      // Annotorious 2.7 keeps the shape just drawn as the hovered one, and its handler for the
      // pointer leaving the viewer then fails on it (it is the editor, not an SVG element);
      // forgetting it is what the handler itself would have done.
      const layer = anno._app?.current?.annotationLayer;
      if (layer?.hoveredShape && typeof layer.hoveredShape.getAttribute !== 'function') layer.hoveredShape = null;
    });
    anno.on('createAnnotation', (annotation) => {
      idle();
      const mark = markFromAnnotation(annotation, slideId);
      if (!mark || !insideSlide(mark, slide)) {
        anno.removeAnnotation(annotation);
        status.textContent = mark
          ? 'That shape runs off the slide; draw it inside the image.'
          : 'That shape could not be kept; draw it again.';
        return;
      }
      drafts.push({ id: annotation.id, ...mark });
      persist();
      renderList();
      status.textContent = `${markLabel(mark, ours().length - 1, spacing)} added; write its note below.`;
    });
  }
  renderList();
  return h('section', { class: 'marks', 'aria-labelledby': 'marks-heading' },
    back,
    h('h2', { id: 'marks-heading' }, editable ? 'Your marks for this referral' : 'Marks with the opinion'),
    editable ? h('p', { class: 'marks__hint' }, 'Choose a shape, then draw it on the slide with the mouse or a finger. The marks are sent with your opinion.') : null,
    toolbar,
    status,
    empty,
    list);
}
