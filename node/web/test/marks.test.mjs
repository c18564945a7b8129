// marks.test.mjs: converting marks between the node's form and Annotorious's W3C annotations,
// and what they measure.
import test from 'node:test';
import assert from 'node:assert/strict';
import { annotationFromMark, draftKey, formatMeasure, loadDrafts, markFromAnnotation, measure, saveDrafts } from '../src/marks.js';

const SLIDE = 'ab'.repeat(32);
const QUARTER_UM = [0.00025, 0.00025];

test('each shape survives the round trip through a W3C annotation', () => {
  const marks = [
    { slide: SLIDE, shape: 'point', points: [[120.5, 80.25]], text: 'mitosis' },
    { slide: SLIDE, shape: 'line', points: [[10, 10], [310, 410]], text: '' },
    { slide: SLIDE, shape: 'rectangle', points: [[100, 200], [500, 400]], text: 'margin' },
    { slide: SLIDE, shape: 'polygon', points: [[0.5, 0.5], [600, 1], [5, 400]], text: 'DCIS' },
  ];
  for (const mark of marks) {
    assert.deepEqual(markFromAnnotation(annotationFromMark(mark, '#m'), SLIDE), mark);
  }
});

test('what the drawing tools return is read as marks', () => {
  const drawn = (selector, body = []) => ({ id: '#x', body, target: { selector } });
  assert.deepEqual(
    markFromAnnotation(drawn({ type: 'FragmentSelector', value: 'xywh=pixel:252.5,257.5,505,260' }), SLIDE).points,
    [[252.5, 257.5], [757.5, 517.5]]);
  // The polygon tool repeats its last vertex when closed by double-click.
  const polygon = markFromAnnotation(drawn({ type: 'SvgSelector', value: '<svg><polygon points="1000,250 1500,300 1250,750 1250,750"></polygon></svg>' }), SLIDE);
  assert.deepEqual(polygon.points, [[1000, 250], [1500, 300], [1250, 750]]);
  // Two distinct vertices are no polygon.
  assert.equal(markFromAnnotation(drawn({ type: 'SvgSelector', value: '<svg><polygon points="1,1 2,2 2,2"></polygon></svg>' }), SLIDE), null);
  const line = markFromAnnotation(drawn({ type: 'SvgSelector', value: '<svg><line x1="250" y1="750" x2="750" y2="875"></line></svg>' },
    [{ purpose: 'commenting', value: 'width' }]), SLIDE);
  assert.deepEqual(line, { slide: SLIDE, shape: 'line', points: [[250, 750], [750, 875]], text: 'width' });
  assert.equal(markFromAnnotation(drawn({ type: 'SvgSelector', value: '<svg><circle r="3"/></svg>' }), SLIDE), null);
});

test('lines measure length and areas area, in micrometres', () => {
  assert.deepEqual(measure({ shape: 'line', points: [[0, 0], [3000, 4000]] }, QUARTER_UM), { kind: 'length', um: 1250 });
  assert.deepEqual(measure({ shape: 'rectangle', points: [[100, 100], [500, 300]] }, QUARTER_UM), { kind: 'area', um2: 5000 });
  assert.deepEqual(measure({ shape: 'polygon', points: [[0, 0], [0, 40], [40, 40], [40, 0]] }, QUARTER_UM), { kind: 'area', um2: 100 });
  assert.equal(measure({ shape: 'point', points: [[1, 1]] }, QUARTER_UM), null);
  assert.equal(measure({ shape: 'line', points: [[0, 0], [1, 1]] }, null), null);
  assert.equal(formatMeasure({ kind: 'length', um: 1250 }), '1.25 mm');
  assert.equal(formatMeasure({ kind: 'area', um2: 5000 }), '5,000 µm²');
});

test('drafts are kept per referral and cleared when empty', () => {
  const store = new Map();
  const storage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v), removeItem: (k) => store.delete(k) };
  assert.deepEqual(loadDrafts(storage, 'r1'), []);
  saveDrafts(storage, 'r1', [{ id: '#a', slide: SLIDE, shape: 'point', points: [[1, 2]], text: '' }]);
  assert.equal(loadDrafts(storage, 'r1').length, 1);
  assert.deepEqual(loadDrafts(storage, 'r2'), []);
  saveDrafts(storage, 'r1', []);
  assert.equal(store.has(draftKey('r1')), false);
  store.set(draftKey('r3'), 'not json');
  assert.deepEqual(loadDrafts(storage, 'r3'), []);
});
