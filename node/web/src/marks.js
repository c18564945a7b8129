// marks.js: the specialist's marks on a slide (point, line, rectangle, polygon, each with a
// note) as plain values: converting between the node's form ({ slide, shape, points, text },
// points as [x, y] in the full-resolution pixel matrix, a rectangle as two corners) and the
// W3C annotations Annotorious draws and returns, and what a mark measures in micrometres.
// No DOM here, so node --test checks it (node/web/test/marks.test.mjs).
//
// The node computes the recorded measurements itself (into the DICOM annotation instance);
// the figures here are what the specialist sees while drawing, from the same geometry.

const FRAGMENT = /^xywh=pixel:([-\d.e]+),([-\d.e]+),([-\d.e]+),([-\d.e]+)$/;

function num(text) {
  return Math.round(Number(text) * 100) / 100;
}

/** The vertices of an SVG selector's polygon (`points="x,y x,y"`) or line (`x1 y1 x2 y2`). */
function svgShape(svg) {
  const polygon = /<polygon[^>]*\bpoints=["']([^"']*)["']/.exec(svg);
  if (polygon) {
    const points = polygon[1].trim().split(/\s+/).map((pair) => pair.split(',').map(num));
    // The polygon tool repeats its last vertex on the closing double-click; a polygon
    // closes itself, so a repeated first vertex goes too.
    const distinct = points.filter((p, i) => i === 0 || p[0] !== points[i - 1][0] || p[1] !== points[i - 1][1]);
    const [first] = distinct;
    const last = distinct[distinct.length - 1];
    if (distinct.length > 1 && first[0] === last[0] && first[1] === last[1]) distinct.pop();
    return { shape: 'polygon', points: distinct };
  }
  const attr = (name) => num(new RegExp(`\\b${name}=["']([^"']*)["']`).exec(svg)?.[1]);
  if (/<line\b/.test(svg)) {
    return { shape: 'line', points: [[attr('x1'), attr('y1')], [attr('x2'), attr('y2')]] };
  }
  return null;
}

/** The note of a W3C annotation: its first commenting body. */
function noteOf(annotation) {
  const bodies = Array.isArray(annotation.body) ? annotation.body : [];
  return bodies.find((b) => b.purpose === 'commenting')?.value ?? '';
}

/** A W3C annotation from Annotorious as a mark on `slide`; null for a shape we do not keep. */
export function markFromAnnotation(annotation, slide) {
  const selector = [].concat(annotation?.target?.selector ?? [])[0];
  if (!selector) return null;
  let geometry = null;
  if (selector.type === 'FragmentSelector') {
    const m = FRAGMENT.exec(selector.value ?? '');
    if (!m) return null;
    const [x, y, w, hgt] = m.slice(1).map(num);
    geometry = w === 0 && hgt === 0
      ? { shape: 'point', points: [[x, y]] }
      : { shape: 'rectangle', points: [[x, y], [num(x + w), num(y + hgt)]] };
  } else if (selector.type === 'SvgSelector') {
    geometry = svgShape(selector.value ?? '');
  }
  if (!geometry || geometry.points.some(([x, y]) => !Number.isFinite(x) || !Number.isFinite(y))) return null;
  if (geometry.shape === 'polygon' && geometry.points.length < 3) return null;
  return { slide, ...geometry, text: noteOf(annotation) };
}

/** A mark as the W3C annotation Annotorious draws (id given, so it can be found again). */
export function annotationFromMark(mark, id) {
  const [first] = mark.points;
  let selector;
  let renderedVia;
  if (mark.shape === 'point') {
    selector = { type: 'FragmentSelector', conformsTo: 'http://www.w3.org/TR/media-frags/', value: `xywh=pixel:${first[0]},${first[1]},0,0` };
    renderedVia = { name: 'point' };
  } else if (mark.shape === 'rectangle') {
    const [a, b] = mark.points;
    selector = { type: 'FragmentSelector', conformsTo: 'http://www.w3.org/TR/media-frags/', value: `xywh=pixel:${a[0]},${a[1]},${b[0] - a[0]},${b[1] - a[1]}` };
  } else if (mark.shape === 'polygon') {
    selector = { type: 'SvgSelector', value: `<svg><polygon points="${mark.points.map((p) => p.join(',')).join(' ')}"></polygon></svg>` };
  } else {
    // The line tool draws one segment; a longer line from elsewhere shows first to last.
    const last = mark.points[mark.points.length - 1];
    selector = { type: 'SvgSelector', value: `<svg><line x1="${first[0]}" y1="${first[1]}" x2="${last[0]}" y2="${last[1]}"></line></svg>` };
    renderedVia = { name: 'line' };
  }
  return {
    '@context': 'http://www.w3.org/ns/anno.jsonld',
    type: 'Annotation',
    id,
    body: mark.text ? [{ type: 'TextualBody', purpose: 'commenting', value: mark.text }] : [],
    target: { selector, ...(renderedVia ? { renderedVia } : {}) },
  };
}

/**
 * What a mark measures with the slide's pixel spacing ([row, column] mm, as DICOM gives it):
 * { kind: 'length', um } for a line, { kind: 'area', um2 } for a rectangle or polygon, null
 * for a point or an unknown spacing.
 */
export function measure(mark, spacingMm) {
  const [rowMm, colMm] = Array.isArray(spacingMm) ? [spacingMm[0], spacingMm[1] ?? spacingMm[0]] : [];
  if (!(rowMm > 0 && colMm > 0)) return null;
  const p = mark.points;
  if (mark.shape === 'line') {
    let mm = 0;
    for (let i = 1; i < p.length; i++) mm += Math.hypot((p[i][0] - p[i - 1][0]) * colMm, (p[i][1] - p[i - 1][1]) * rowMm);
    return { kind: 'length', um: mm * 1000 };
  }
  if (mark.shape === 'rectangle' || mark.shape === 'polygon') {
    const v = mark.shape === 'rectangle' ? [p[0], [p[1][0], p[0][1]], p[1], [p[0][0], p[1][1]]] : p;
    let twice = 0;
    for (let i = 0; i < v.length; i++) {
      const [a, b] = [v[i], v[(i + 1) % v.length]];
      twice += a[0] * b[1] - b[0] * a[1];
    }
    return { kind: 'area', um2: (Math.abs(twice) / 2) * colMm * rowMm * 1e6 };
  }
  return null;
}

const number = new Intl.NumberFormat('en-GB', { maximumSignificantDigits: 4 });

/** A measurement as a person reads it: "1,234 µm", "0.52 mm²". */
export function formatMeasure(m) {
  if (!m) return '';
  if (m.kind === 'length') return m.um >= 1000 ? `${number.format(m.um / 1000)} mm` : `${number.format(m.um)} µm`;
  return m.um2 >= 1e6 ? `${number.format(m.um2 / 1e6)} mm²` : `${number.format(m.um2)} µm²`;
}

export const SHAPE_NAMES = { point: 'Point', line: 'Line', rectangle: 'Rectangle', polygon: 'Polygon' };

/** Where a referral's unsent marks wait (this tab only) until the opinion is sent. */
export function draftKey(referralId) {
  return `slidemesh.marks.${referralId}`;
}

/** The unsent marks of a referral: [{ id, slide, shape, points, text }]. */
export function loadDrafts(storage, referralId) {
  try {
    const marks = JSON.parse(storage.getItem(draftKey(referralId)) ?? '[]');
    return Array.isArray(marks) ? marks : [];
  } catch {
    return [];
  }
}

export function saveDrafts(storage, referralId, marks) {
  if (marks.length) storage.setItem(draftKey(referralId), JSON.stringify(marks));
  else storage.removeItem(draftKey(referralId));
}
