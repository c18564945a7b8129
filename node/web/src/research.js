// research.js: owns the research page ("/research"): a query builder (conditions and the
// fields to count by, written into the query's text form, which can also be typed), the
// question asked of every member at once, and the answer: each site's status (answered,
// refused, failed, timed out, unreachable) so a partial answer is never taken for a whole
// one, a table of the released counts by group and site, and a bar chart of the same
// (Chart.js, window.Chart). Counts are as each site released them: small totals as "<n",
// small groups left out, every count moved a little by the site's noise. Below it, a cohort
// for an approved project: the same query's conditions select slides at every other member
// that approved the project, each listed with its site, the patient's pseudonym and its
// labels (the query's count-by fields), and opened in the viewer de-identified.

import { ApiError, buildCohort, getCohort, researchQuery } from './api.js';
import { h, notice } from './dom.js';

/** The fields a query counts over, as the node names them. */
export const FIELDS = [
  { name: 'trust', label: 'Trust' },
  { name: 'stain', label: 'Stain' },
  { name: 'anatomic_site', label: 'Anatomic site' },
  { name: 'specimen', label: 'Specimen type' },
  { name: 'diagnosis', label: 'Diagnosis (SNOMED CT)' },
  { name: 'grade', label: 'Grade', numeric: true },
  { name: 'year', label: 'Year', numeric: true },
  { name: 'age_band', label: 'Age band', numeric: true },
  { name: 'sex', label: 'Sex' },
  { name: 'scanner', label: 'Scanner' },
];

const OPERATORS = [
  { op: '=', label: 'is' },
  { op: '!=', label: 'is not' },
  { op: '<', label: 'less than' },
  { op: '<=', label: 'at most' },
  { op: '>', label: 'more than' },
  { op: '>=', label: 'at least' },
  { op: 'in', label: 'one of (a, b, ...)' },
  { op: 'between', label: 'between (a, b)' },
  { op: 'under', label: 'is or is below (SNOMED CT)' },
];

/** At most this many fields to count by (the node's limit). */
export const MAX_GROUP_BY = 4;

const STATUS_TEXT = {
  answered: 'Answered',
  refused: 'Refused',
  failed: 'Failed',
  'timed out': 'Timed out',
  unreachable: 'Unreachable',
};

/** Numbers the node reads as numbers: no leading zero, at most 18 digits. */
const NUMBER = /^-?(0|[1-9]\d{0,17})$/;

/**
 * A value as the query language reads it: a number bare when the field holds numbers (year,
 * grade, age band), anything else quoted, so a code such as "0123" stays that text.
 */
export function literal(value, numeric = false) {
  const text = String(value).trim();
  if (numeric && NUMBER.test(text)) return text;
  return `"${text.replace(/["\\]/g, (c) => `\\${c}`)}"`;
}

const NUMERIC = new Set(FIELDS.filter((f) => f.numeric).map((f) => f.name));

/**
 * The text form of a query built from conditions ([{ field, op, value }], values of `in` and
 * `between` comma-separated) and the fields to count by. Conditions without a value are left
 * out.
 */
export function buildQuery(conditions, groupBy) {
  const parts = conditions
    .filter((c) => c.field && c.op && String(c.value ?? '').trim() !== '')
    .map(({ field, op, value }) => {
      const numeric = NUMERIC.has(field);
      const lit = (v) => literal(v, numeric);
      const values = String(value).split(',').map((v) => v.trim()).filter(Boolean);
      if (op === 'in') return `${field} in (${values.map(lit).join(', ')})`;
      if (op === 'between') return `${field} between ${lit(values[0] ?? '')} and ${lit(values[1] ?? values[0] ?? '')}`;
      return `${field} ${op} ${lit(value)}`;
    });
  let text = 'count';
  if (parts.length) text += ` where ${parts.join(' and ')}`;
  if (groupBy.length) text += ` by ${groupBy.join(', ')}`;
  return text;
}

/** A group's key as a label: "GRADE 2 · CORE BIOPSY", "(none)" where the slides had none. */
export function keyLabel(groupBy, key) {
  if (!groupBy.length) return 'All slides';
  return groupBy.map((f) => (key?.[f] == null ? '(none)' : String(key[f]))).join(' · ');
}

/** What a released cell says: a number, "<n", or null when the site did not list it. */
function cellValue(cell) {
  if (!cell) return null;
  if (typeof cell.count === 'number') return { text: String(cell.count), count: cell.count };
  if (typeof cell.below === 'number') return { text: `<${cell.below}`, count: null };
  return null;
}

/**
 * The answer as a table: groups (in the order the sites released them), the sites that
 * answered, and each group's value at each site and combined.
 */
export function tableOf(answer) {
  const groupBy = answer.group_by ?? [];
  // Rows are keyed by the values themselves (a label such as "(none)" could also be a value).
  const keyOf = (key) => JSON.stringify(groupBy.map((f) => key?.[f] ?? null));
  const answered = (answer.sites ?? []).filter((s) => s.status === 'answered');
  const rows = new Map();
  for (const site of answered) {
    for (const cell of site.cells ?? []) {
      const id = keyOf(cell.key);
      if (!rows.has(id)) rows.set(id, { label: keyLabel(groupBy, cell.key), bySite: new Map() });
      rows.get(id).bySite.set(site.trust, cellValue(cell));
    }
  }
  const combined = new Map((answer.combined ?? []).map((c) => [keyOf(c.key), c]));
  return {
    groupBy,
    sites: answered.map((s) => ({ trust: s.trust, unlistedBelow: s.unlisted_below ?? null })),
    rows: [...rows.entries()].map(([id, row]) => ({ ...row, combined: combined.get(id) ?? null })),
  };
}

/** "412", "412 + <10 at RAE": the combined count over the answering sites. */
export function combinedText(combined) {
  if (!combined) return '';
  const below = combined.below_at ?? [];
  if (!below.length) return String(combined.count);
  return `${combined.count} + <n at ${below.join(', ')}`;
}

function field(id, label, control, hint) {
  return h('div', { class: 'field' },
    h('label', { for: id }, label),
    hint ? h('p', { class: 'field__hint', id: `${id}-hint` }, hint) : null,
    control);
}

function select(attrs, options, selected) {
  return h('select', attrs, options.map(([value, text]) => h('option', { value, selected: value === selected }, text)));
}

/** One condition row of the builder. */
function conditionRow(index, condition, onChange, onRemove) {
  const id = `condition-${index}`;
  return h('div', { class: 'condition', role: 'group', 'aria-label': `Condition ${index + 1}` },
    h('label', { class: 'visually-hidden', for: `${id}-field` }, `Condition ${index + 1}: field`),
    select({ id: `${id}-field`, onchange: (e) => onChange({ ...condition, field: e.target.value }) },
      FIELDS.map((f) => [f.name, f.label]), condition.field),
    h('label', { class: 'visually-hidden', for: `${id}-op` }, `Condition ${index + 1}: test`),
    select({ id: `${id}-op`, onchange: (e) => onChange({ ...condition, op: e.target.value }) },
      OPERATORS.map((o) => [o.op, o.label]), condition.op),
    h('label', { class: 'visually-hidden', for: `${id}-value` }, `Condition ${index + 1}: value`),
    h('input', {
      id: `${id}-value`, type: 'text', value: condition.value ?? '', autocomplete: 'off', spellcheck: 'false',
      oninput: (e) => onChange({ ...condition, value: e.target.value }),
    }),
    h('button', { type: 'button', class: 'button button--secondary', onclick: onRemove }, 'Remove',
      h('span', { class: 'visually-hidden' }, ` condition ${index + 1}`)));
}

/** Each site's status, with why it did not answer. */
function statusList(answer) {
  return h('ul', { class: 'site-statuses', id: 'site-statuses' },
    (answer.sites ?? []).map((site) => h('li', { class: 'site-status', 'data-trust': site.trust, 'data-status': site.status },
      h('span', { class: 'site-status__trust' }, site.trust), ' ',
      h('span', { class: `tag tag--site-${site.status.replace(' ', '-')}` }, STATUS_TEXT[site.status] ?? site.status),
      site.reason ? h('span', { class: 'site-status__reason' }, ` ${site.reason}`) : null,
      site.status === 'answered' && site.unlisted_below != null
        ? h('span', { class: 'site-status__reason' }, ` Groups below ${site.unlisted_below} not listed.`)
        : null)));
}

function resultTable(model) {
  return h('table', { class: 'referrals research-table', id: 'research-table' },
    h('caption', { class: 'visually-hidden' }, 'Released counts by group and site'),
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, model.groupBy.length ? model.groupBy.join(', ') : 'Group'),
      model.sites.map((s) => h('th', { scope: 'col' }, s.trust)),
      h('th', { scope: 'col' }, 'All answering sites'))),
    h('tbody', {}, model.rows.map((row) => h('tr', {},
      h('th', { scope: 'row' }, row.label),
      model.sites.map((s) => {
        const value = row.bySite.get(s.trust);
        return h('td', { 'data-trust': s.trust }, value ? value.text
          : h('span', { title: s.unlistedBelow != null ? `not listed: fewer than ${s.unlistedBelow}, or none` : 'none' }, '–'));
      }),
      h('td', {}, combinedText(row.combined))))));
}

/** Site colours for the chart, NHS-like and each at least 4.5:1 against white. */
const SITE_COLOURS = ['#005eb8', '#007f3b', '#8a1538', '#a15600', '#330072', '#00756d', '#425563', '#ae2573'];

let chart = null;

/** The bar chart of the table: one bar per site per group (suppressed and unlisted as gaps). */
function drawChart(canvas, model) {
  if (chart) {
    chart.destroy();
    chart = null;
  }
  if (typeof window.Chart !== 'function') return;
  chart = new window.Chart(canvas, {
    type: 'bar',
    data: {
      labels: model.rows.map((r) => r.label),
      datasets: model.sites.map((s, i) => ({
        label: s.trust,
        data: model.rows.map((r) => r.bySite.get(s.trust)?.count ?? null),
        backgroundColor: SITE_COLOURS[i % SITE_COLOURS.length],
      })),
    },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      plugins: { legend: { position: 'bottom' }, title: { display: true, text: 'Released counts by site' } },
      scales: { y: { beginAtZero: true, title: { display: true, text: 'Slides' } } },
    },
  });
}

function showAnswer(out, answer) {
  const model = tableOf(answer);
  const missing = (answer.sites ?? []).filter((s) => s.status !== 'answered');
  const canvas = h('canvas', {
    id: 'research-chart', role: 'img',
    'aria-label': 'Bar chart of the released counts by group and site; the table above has the same figures.',
  });
  // replaceChildren would show null as text and an array as its string: spread, filtered.
  out.replaceChildren(
    h('h2', { id: 'answer-heading' }, 'Answer'),
    h('p', {}, 'Asked as ', h('code', { id: 'asked-query' }, answer.query)),
    answer.complete
      ? notice('info', 'Every member answered.')
      : notice('error', 'Partial answer',
        `Not answered by ${missing.map((s) => `${s.trust} (${STATUS_TEXT[s.status] ?? s.status})`).join(', ')}: these sites' slides are not in the figures below.`),
    h('h3', {}, 'Sites'),
    statusList(answer),
    ...(model.sites.length ? [h('h3', {}, 'Counts'), resultTable(model), h('div', { class: 'research-chart' }, canvas)] : []));
  if (model.sites.length) drawChart(canvas, model);
}

/** A cohort's members as table rows: [{ site, patient, labels: text, slide, opened }]. */
export function cohortRows(cohort, labels) {
  return (cohort.members ?? []).map((m) => ({
    site: m.site,
    patient: m.patient,
    labels: labels.map((name) => `${name} ${m.labels?.[name] ?? '–'}`).join(', '),
    slide: m.slide,
    opened: m.opened === true,
  }));
}

/** The shell command that pulls a project's cohort into a dataset folder. */
export function fetchCommand(project) {
  return `slidemesh cohort fetch --project '${project.replace(/'/g, "'\\''")}' --out ./dataset --level 0`;
}

function showCohort(out, built, cohort) {
  const rows = cohortRows(cohort, built.labels ?? []);
  const missing = (built.sites ?? []).filter((s) => s.status !== 'answered');
  out.replaceChildren(
    h('h2', { id: 'cohort-heading' }, `Cohort for ${built.project}`),
    built.complete
      ? notice('info', `Every other member answered: ${built.slides} slides.`)
      : notice('error', 'Partial cohort',
        `Not given by ${missing.map((s) => `${s.trust} (${STATUS_TEXT[s.status] ?? s.status})`).join(', ')}.`),
    h('ul', { class: 'site-statuses', id: 'cohort-sites' },
      (built.sites ?? []).map((site) => h('li', { class: 'site-status', 'data-trust': site.trust, 'data-status': site.status },
        h('span', { class: 'site-status__trust' }, site.trust), ' ',
        h('span', { class: `tag tag--site-${site.status.replace(' ', '-')}` }, STATUS_TEXT[site.status] ?? site.status),
        site.status === 'answered' ? h('span', { class: 'site-status__reason' }, ` ${site.slides} slides`) : null,
        site.reason ? h('span', { class: 'site-status__reason' }, ` ${site.reason}`) : null))),
    rows.length
      ? h('table', { class: 'referrals research-table', id: 'cohort-table' },
        h('caption', { class: 'visually-hidden' }, 'Slides of the cohort'),
        h('thead', {}, h('tr', {},
          ['Site', 'Patient (pseudonym)', 'Labels', 'Slide'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, rows.map((r) => h('tr', { 'data-slide': r.slide },
          h('td', {}, r.site),
          h('td', {}, h('code', {}, r.patient)),
          h('td', {}, r.labels),
          h('td', {}, r.opened
            ? h('a', { href: `/view/${encodeURIComponent(r.slide)}`, class: 'cohort-open' }, 'Open (de-identified)')
            : 'Not open yet')))))
      : h('p', {}, 'No slide of this cohort is held here.'),
    h('p', {}, 'Pull the tiles into a dataset folder (verified, resumable) on the node\'s machine with ',
      h('code', { id: 'cohort-fetch-command' }, fetchCommand(built.project)), '.'));
}

export function renderResearch(root) {
  document.title = 'Research · slidemesh';
  document.getElementById('nav-research')?.setAttribute('aria-current', 'page');
  let conditions = [{ field: 'stain', op: '=', value: '' }];
  const groupBy = new Set(['trust']);
  const text = h('textarea', { id: 'query-text', rows: 3, spellcheck: 'false', 'aria-describedby': 'query-text-hint' });
  // Once the query is typed by hand, the builder no longer rewrites it (until asked to).
  const typed = h('p', { class: 'field__hint', id: 'query-typed', 'aria-live': 'polite' });
  let handWritten = false;
  const useBuilder = h('button', {
    type: 'button', class: 'button button--secondary', id: 'use-builder', hidden: true,
    onclick: () => { handWritten = false; write(); },
  }, 'Write the query from the choices above again');
  text.addEventListener('input', () => {
    handWritten = true;
    typed.textContent = 'Typed by hand: the choices above no longer change it.';
    useBuilder.hidden = false;
  });
  const rows = h('div', { class: 'conditions', id: 'conditions' });
  function write() {
    if (handWritten) return;
    text.value = buildQuery(conditions, FIELDS.map((f) => f.name).filter((n) => groupBy.has(n)));
    typed.textContent = '';
    useBuilder.hidden = true;
  }
  // Rows are redrawn only when one is added or removed, so a control keeps the focus while
  // it is being changed (a select fires "change" on every arrow key in some browsers).
  function redraw(focus) {
    rows.replaceChildren(...conditions.map((c, i) => conditionRow(i, c, (next) => {
      conditions[i] = next;
      write();
    }, () => {
      conditions = conditions.filter((_, j) => j !== i);
      write();
      redraw(Math.min(i, conditions.length - 1));
    })));
    if (focus === undefined) return;
    const next = focus >= 0 ? document.getElementById(`condition-${focus}-field`) : null;
    (next ?? document.getElementById('add-condition'))?.focus();
  }
  const full = h('p', { class: 'field__hint', id: 'by-limit', 'aria-live': 'polite' });
  const byBoxes = FIELDS.map((f) => h('input', {
    type: 'checkbox', id: `by-${f.name}`, value: f.name, checked: groupBy.has(f.name),
    onchange: (e) => {
      if (e.target.checked) groupBy.add(f.name); else groupBy.delete(f.name);
      limitBoxes();
      write();
    },
  }));
  // At the limit, the other boxes are disabled, and the page says why.
  function limitBoxes() {
    const atLimit = groupBy.size >= MAX_GROUP_BY;
    for (const box of byBoxes) box.disabled = atLimit && !box.checked;
    full.textContent = atLimit ? `At most ${MAX_GROUP_BY} fields: untick one to choose another.` : '';
  }
  const ethics = h('input', { id: 'ethics', type: 'text', autocomplete: 'off', maxlength: 128 });
  const out = h('section', { class: 'research-answer', id: 'research-answer', 'aria-live': 'polite' });
  const ask = h('button', { type: 'submit', class: 'button', id: 'ask' }, 'Ask every member');
  const form = h('form', {
    class: 'referral-form research-form',
    onsubmit: async (e) => {
      e.preventDefault();
      ask.disabled = true;
      out.replaceChildren(h('p', { class: 'status' }, 'Asking every member…'));
      try {
        const answer = await researchQuery({ query: text.value, ethics: ethics.value.trim() || undefined });
        showAnswer(out, answer);
      } catch (err) {
        const detail = err instanceof ApiError ? err.detail : String(err);
        out.replaceChildren(notice('error', 'The query was not asked.', h('pre', { class: 'query-error', id: 'query-error', tabindex: 0 }, detail)));
      } finally {
        ask.disabled = false;
      }
    },
  },
  h('fieldset', {}, h('legend', {}, 'Conditions (all must hold)'), rows,
    h('button', {
      type: 'button', class: 'button button--secondary', id: 'add-condition',
      onclick: () => { conditions.push({ field: 'year', op: 'between', value: '' }); write(); redraw(conditions.length - 1); },
    }, 'Add condition')),
  h('fieldset', {}, h('legend', {}, `Count by (at most ${MAX_GROUP_BY})`),
    h('div', { class: 'checks' }, FIELDS.map((f, i) => h('label', { class: 'check' }, byBoxes[i], f.label))), full),
  field('query-text', 'Query', text,
    'Written by the choices above, or type it: count where stain = "H&E" and year between 2022 and 2024 by trust, grade'),
  typed, useBuilder,
  field('ethics', 'Ethics approval (optional)', ethics, 'Recorded with the query in every site\'s audit log.'),
  ask);
  const project = h('input', { id: 'project', type: 'text', autocomplete: 'off', maxlength: 128, required: true });
  const cohortOut = h('section', { class: 'research-answer', id: 'cohort-answer', 'aria-live': 'polite' });
  const buildButton = h('button', { type: 'submit', class: 'button', id: 'build-cohort' }, 'Build the cohort');
  const cohortForm = h('form', {
    class: 'referral-form research-form',
    onsubmit: async (e) => {
      e.preventDefault();
      buildButton.disabled = true;
      cohortOut.replaceChildren(h('p', { class: 'status' }, 'Asking every other member…'));
      try {
        const built = await buildCohort({ project: project.value.trim(), query: text.value });
        showCohort(cohortOut, built, await getCohort(built.project));
      } catch (err) {
        const detail = err instanceof ApiError ? err.detail : String(err);
        cohortOut.replaceChildren(notice('error', 'The cohort was not built.', h('pre', { class: 'query-error', tabindex: 0 }, detail)));
      } finally {
        buildButton.disabled = false;
      }
    },
  },
  field('project', 'Approved project (ethics reference)', project,
    'As the sites approved it. The query above selects the slides; its count-by fields label them.'),
  buildButton);
  write();
  redraw();
  limitBoxes();
  root.replaceChildren(h('div', { class: 'page' },
    h('h1', {}, 'Research query'),
    h('p', {}, 'Counts slides across the co-operative. Each trust decides under its own consent policy which of its slides '
      + 'may be counted, and releases its counts under its own disclosure control: small totals show as "<10", small '
      + 'groups are left out, and every count is moved a little by noise that is the same each time you ask.'),
    form, out,
    h('h2', {}, 'Cohort for an approved project'),
    h('p', {}, 'Each other trust that approved the project for this trust gives the slides matching the query that its '
      + 'policy allows, as a research grant: opened de-identified (no label or overview, pseudonyms for the project). '
      + 'This trust\'s own slides are not part of it.'),
    cohortForm, cohortOut));
}
