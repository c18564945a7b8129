// research.test.mjs: the research page's pure parts: the builder's query text (checked
// against the node's parser by the end-to-end tests), and how an answer becomes a table, and a cohort's rows.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildQuery, cohortRows, combinedText, fetchCommand, keyLabel, literal, tableOf } from '../src/research.js';

test('values are bare numbers for numeric fields, quoted text otherwise', () => {
  assert.equal(literal('2024', true), '2024');
  assert.equal(literal(' -3 ', true), '-3');
  assert.equal(literal('2024'), '"2024"', 'a text field keeps digits as text');
  assert.equal(literal('H&E'), '"H&E"');
  assert.equal(literal('say "hi" \\ bye'), '"say \\"hi\\" \\\\ bye"');
  assert.equal(literal('0123', true), '"0123"', 'a leading zero is not a number the node reads back');
  assert.equal(literal('1'.repeat(19), true), `"${'1'.repeat(19)}"`, 'too long for a number: text');
});

test('the builder writes the text form', () => {
  assert.equal(buildQuery([], []), 'count');
  assert.equal(buildQuery([{ field: 'stain', op: '=', value: '' }], ['trust']), 'count by trust');
  assert.equal(
    buildQuery([
      { field: 'stain', op: '=', value: 'H&E' },
      { field: 'year', op: 'between', value: '2022, 2024' },
      { field: 'grade', op: 'in', value: '2,3' },
      { field: 'diagnosis', op: 'under', value: '413448000' },
    ], ['trust', 'grade']),
    'count where stain = "H&E" and year between 2022 and 2024 and grade in (2, 3) and diagnosis under "413448000" by trust, grade',
  );
});

test('an answer becomes a table by group and answering site', () => {
  const answer = {
    group_by: ['grade'],
    complete: false,
    sites: [
      { trust: 'RR8', status: 'answered', min_cell: 3, unlisted_below: 3, cells: [
        { key: { grade: 2 }, count: 5 }, { key: { grade: 3 }, count: 6 },
      ] },
      { trust: 'RAE', status: 'answered', min_cell: 10, unlisted_below: 10, cells: [{ key: { grade: null }, count: 12 }] },
      { trust: 'RCF', status: 'refused', reason: 'no' },
    ],
    combined: [
      { key: { grade: null }, count: 12, below_at: [] },
      { key: { grade: 2 }, count: 5, below_at: [] },
      { key: { grade: 3 }, count: 6, below_at: ['RAE'] },
    ],
  };
  const model = tableOf(answer);
  assert.deepEqual(model.sites.map((s) => s.trust), ['RR8', 'RAE'], 'only answering sites are columns');
  assert.deepEqual(model.rows.map((r) => r.label), ['2', '3', '(none)']);
  assert.equal(model.rows[0].bySite.get('RR8').text, '5');
  assert.equal(model.rows[0].bySite.get('RAE'), undefined, 'not listed there');
  assert.equal(combinedText(model.rows[1].combined), '6 + <n at RAE');
  assert.equal(keyLabel([], {}), 'All slides');
  // A value that reads like the no-value label is still its own row.
  const clash = tableOf({
    group_by: ['specimen'],
    sites: [{ trust: 'RR8', status: 'answered', cells: [{ key: { specimen: null }, count: 12 }, { key: { specimen: '(none)' }, count: 30 }] }],
    combined: [],
  });
  assert.equal(clash.rows.length, 2);
  assert.deepEqual(clash.rows.map((r) => r.bySite.get('RR8').text), ['12', '30']);
  const total = tableOf({ group_by: [], sites: [{ trust: 'RR8', status: 'answered', cells: [{ key: {}, below: 10 }] }], combined: [] });
  assert.equal(total.rows[0].bySite.get('RR8').text, '<10');
  assert.equal(total.rows[0].bySite.get('RR8').count, null, 'a suppressed count is no bar');
});

test('a cohort lists each slide with its site, pseudonym and labels in the query\'s order', () => {
  const rows = cohortRows({
    members: [
      { site: 'RR8', slide: 'ab', patient: 'SMP1', labels: { grade: 2, diagnosis: '413448000' }, opened: true },
      { site: 'RCF', slide: 'cd', patient: 'SMP2', labels: { grade: null }, opened: false },
    ],
  }, ['diagnosis', 'grade']);
  assert.deepEqual(rows, [
    { site: 'RR8', patient: 'SMP1', labels: 'diagnosis 413448000, grade 2', slide: 'ab', opened: true },
    { site: 'RCF', patient: 'SMP2', labels: 'diagnosis –, grade –', slide: 'cd', opened: false },
  ]);
  assert.deepEqual(cohortRows({}, []), []);
});

test('the fetch command quotes the project for a shell', () => {
  assert.equal(fetchCommand('REC 26/YH/0042'), "slidemesh cohort fetch --project 'REC 26/YH/0042' --out ./dataset --level 0");
  assert.equal(fetchCommand("it's"), "slidemesh cohort fetch --project 'it'\\''s' --out ./dataset --level 0");
});
