// referrals.js: owns the referral pages: the co-operative's shared reporting queue
// ("/referrals/queue": each queue's depth and turnaround, offered cases to claim), the inbox
// and sent list ("/referrals"), the form that
// refers a case's slides to another trust ("/referrals/new"), the one that offers a case to the
// shared queue ("/referrals/offer"), and one referral with its history,
// the opinion, and the steps the person may take ("/referrals/{id}": open is recorded when a
// received referral is first shown; answer, with the marks drawn on its slides in the viewer;
// close or withdraw at the referring trust). Every
// control is a native form element with a visible label, so the flow works by keyboard alone.

import {
  ApiError, claimOffer, getDirectory, getOffers, getReferral, listReferrals, listSlides, newReferralPath, referralPath, referralStep,
  sendOffer, sendReferral, viewerPath,
} from './api.js';
import { h, metaRows, notice } from './dom.js';
import { shortId, slideTitle } from './format.js';
import { loadDrafts, saveDrafts } from './marks.js';

const URGENCY = {
  routine: 'Routine',
  urgent: 'Urgent',
  'two-week-wait': 'Two-week wait (suspected cancer)',
};

const STATUS = {
  sent: 'Sent',
  delivered: 'Delivered',
  opened: 'Opened',
  answered: 'Answered',
  closed: 'Closed',
  expired: 'Expired',
  withdrawn: 'Withdrawn',
};

const timeFormat = new Intl.DateTimeFormat('en-GB', { dateStyle: 'medium', timeStyle: 'short' });

function when(unixSeconds) {
  return Number.isFinite(unixSeconds) ? timeFormat.format(new Date(unixSeconds * 1000)) : '';
}

/** "3 h", "2 d": how long ago a referral was sent. */
export function formatAge(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return '';
  if (seconds < 3600) return `${Math.max(1, Math.round(seconds / 60))} min`;
  if (seconds < 86400 * 2) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} d`;
}

function recipientText(recipient) {
  if (recipient?.specialist) return `Dr ${recipient.specialist}`;
  if (recipient?.queue) return `${recipient.queue} queue`;
  return '';
}

function urgencyTag(urgency) {
  return h('span', { class: `tag tag--urgency tag--${urgency}` }, URGENCY[urgency] ?? urgency);
}

function statusTag(status) {
  return h('span', { class: `tag tag--status tag--${status}` }, STATUS[status] ?? status);
}

function pageShell(root, title) {
  document.title = `${title} · slidemesh`;
  document.getElementById('nav-referrals')?.setAttribute('aria-current', 'page');
  const page = h('div', { class: 'page' }, h('h1', {}, title));
  root.replaceChildren(page);
  return page;
}

function failed(page, what, err) {
  console.error(err);
  const forbidden = err instanceof ApiError && (err.status === 403 || err.status === 404);
  page.append(notice('error', `${what} could not be loaded.`, String(err.detail || err.message || err),
    forbidden ? 'Your role may not allow it, or it is no longer shared with this trust.' : 'Reload the page to try again.'));
}

function referralTable(id, caption, referrals, direction) {
  if (!referrals.length) {
    return notice('empty', direction === 'received' ? 'No referrals received.' : 'No referrals sent.');
  }
  const other = direction === 'received' ? 'From' : 'To';
  const head = h('tr', {}, ['Urgency', other, 'Question', 'For', 'Sent', 'Status'].map((c) => h('th', { scope: 'col' }, c)));
  const rows = referrals.map((r) => h('tr', { 'data-referral-id': r.id },
    h('td', {}, urgencyTag(r.urgency)),
    h('td', {}, direction === 'received' ? r.from : r.to),
    h('td', {}, h('a', { href: referralPath(r.id) }, r.question)),
    h('td', {}, recipientText(r.recipient)),
    h('td', {}, h('span', { title: when(r.sent_at) }, `${formatAge(r.age_secs)} ago`)),
    h('td', {}, statusTag(r.status))));
  return h('table', { class: 'referrals', id },
    h('caption', { class: 'visually-hidden' }, caption),
    h('thead', {}, head), h('tbody', {}, rows));
}

/** Urgent first, then the oldest: the order a reporting pathologist works through. */
export function byPriority(a, b) {
  const rank = { 'two-week-wait': 0, urgent: 1, routine: 2 };
  const open = (r) => (['closed', 'expired', 'withdrawn'].includes(r.status) ? 1 : 0);
  return open(a) - open(b) || (rank[a.urgency] ?? 3) - (rank[b.urgency] ?? 3) || a.sent_at - b.sent_at;
}

/** "/referrals": the inbox and what this trust sent. */
export async function renderReferralList(root) {
  const page = pageShell(root, 'Referrals');
  page.append(h('p', {}, h('a', { class: 'button', href: newReferralPath() }, 'Refer a case'), ' ',
    h('a', { href: '/referrals/queue' }, 'Shared reporting queue')));
  let referrals;
  try {
    referrals = await listReferrals();
  } catch (err) {
    failed(page, 'The referrals', err);
    return;
  }
  const received = referrals.filter((r) => r.direction === 'received').sort(byPriority);
  const sent = referrals.filter((r) => r.direction === 'sent').sort(byPriority);
  page.append(
    h('section', { class: 'referral-section', 'aria-labelledby': 'inbox-heading' },
      h('h2', { id: 'inbox-heading' }, 'Inbox ', h('span', { class: 'count' }, String(received.length))),
      referralTable('inbox', 'Referrals received, most urgent first', received, 'received')),
    h('section', { class: 'referral-section', 'aria-labelledby': 'sent-heading' },
      h('h2', { id: 'sent-heading' }, 'Sent ', h('span', { class: 'count' }, String(sent.length))),
      referralTable('sent', 'Referrals sent, most urgent first', sent, 'sent')));
}

function field(id, label, control, hint) {
  return h('div', { class: 'field' },
    h('label', { for: id }, label),
    hint ? h('p', { class: 'field__hint', id: `${id}-hint` }, hint) : null,
    control);
}

/**
 * Submits a case form (a referral or an offer): at least one slide and every `required`
 * field ([name, what to say when empty]) first, then `send(data, value)`; says what is
 * missing, or why it was not sent.
 */
function onCaseSubmit(form, { buttonId, error, what, required, send }) {
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const value = (name) => String(data.get(name) ?? '').trim();
    const problems = [];
    if (!data.getAll('slides').length) problems.push('Choose at least one slide.');
    for (const [name, message] of required) if (!value(name)) problems.push(message);
    if (problems.length) {
      error.replaceChildren(notice('error', `The ${what} is not complete.`, ...problems));
      return;
    }
    const button = form.querySelector(`#${buttonId}`);
    button.disabled = true;
    try {
      await send(data, value);
    } catch (err) {
      button.disabled = false;
      error.replaceChildren(notice('error', `The ${what} was not sent.`, String(err.detail || err.message || err)));
    }
  });
}

/** The node and this trust's own slides, or null (the failure shown on `page`). */
async function ownSlides(page, nodePromise) {
  try {
    const [node, slides] = await Promise.all([nodePromise, listSlides()]);
    return { node, ours: slides.filter((s) => node && s.owner === node.trust) };
  } catch (err) {
    failed(page, 'The slides', err);
    return null;
  }
}

/** The case's slides to choose from: this trust's own, `ticked` chosen already. */
function slideChoices(ours, ticked) {
  return h('fieldset', {}, h('legend', {}, 'Slides of the case'), ours.map((s) => h('div', { class: 'check' },
    h('input', { type: 'checkbox', id: `slide-${s.slide_id}`, name: 'slides', value: s.slide_id, checked: s.slide_id === ticked }),
    h('label', { for: `slide-${s.slide_id}` }, `${slideTitle(s)} · ${s.container_id ?? shortId(s.slide_id)}`))));
}

/**
 * "/referrals/offer": offers a case of this trust to the co-operative's shared reporting queue
 * for a sub-specialty (any member with capacity claims it); `?slide=` ticks that slide.
 */
export async function renderNewOffer(root, nodePromise) {
  const page = pageShell(root, 'Offer a case to the shared queue');
  const loaded = await ownSlides(page, nodePromise);
  if (!loaded) return;
  const { ours } = loaded;
  if (!ours.length) {
    page.append(notice('empty', 'Nothing to offer yet.', 'This trust has no slides of its own on this node.'));
    return;
  }
  const ticked = new URLSearchParams(window.location.search).get('slide');
  const error = h('div', { id: 'offer-error', 'aria-live': 'assertive' });
  const form = h('form', { class: 'referral-form', id: 'offer-form', novalidate: true },
    slideChoices(ours, ticked),
    field('queue', 'Queue', h('input', {
      id: 'queue', name: 'queue', required: true, autocomplete: 'off', list: 'queue-options', 'aria-describedby': 'queue-hint',
    }), 'The sub-specialty, as the members\u2019 directories name it: breast, gi, skin, haematopathology…'),
    h('datalist', { id: 'queue-options' }),
    field('urgency', 'Urgency', h('select', { id: 'urgency', name: 'urgency' },
      Object.entries(URGENCY).map(([value, text]) => h('option', { value }, text)))),
    field('question', 'Summary for the members', h('textarea', { id: 'question', name: 'question', rows: 3, required: true, 'aria-describedby': 'question-hint' }),
      'Every member reads this: no patient identifiers. The trust that takes the case gets the slides and the report.'),
    field('report', 'Report so far (optional; only for the trust that takes it)', h('textarea', { id: 'report', name: 'report', rows: 6 })),
    error,
    h('button', { type: 'submit', class: 'button', id: 'send-offer' }, 'Offer the case'));
  getDirectory().then((trusts) => {
    const names = [...new Set(trusts.flatMap((t) => (t.queues ?? []).map((q) => q.name)))].sort();
    form.querySelector('#queue-options').replaceChildren(...names.map((name) => h('option', { value: name })));
  }).catch(() => null);
  onCaseSubmit(form, {
    buttonId: 'send-offer',
    error,
    what: 'offer',
    required: [['queue', 'Name the queue.'], ['question', 'Write a summary of the case.']],
    send: async (data, value) => {
      await sendOffer({
        queue: value('queue'), slides: data.getAll('slides'), question: value('question'), urgency: data.get('urgency'), report: String(data.get('report') ?? ''),
      });
      window.location.assign('/referrals/queue');
    },
  });
  page.append(form);
}

/** "/referrals/new": the referral form; `?slide=` ticks that slide. */
export async function renderNewReferral(root, nodePromise) {
  const page = pageShell(root, 'Refer a case');
  const loaded = await ownSlides(page, nodePromise);
  if (!loaded) return;
  const { node, ours } = loaded;
  const ticked = new URLSearchParams(window.location.search).get('slide');
  const members = (node?.members ?? []).filter((m) => m.trust !== node?.trust);
  if (!ours.length || !members.length) {
    page.append(notice('empty', 'Nothing to refer yet.',
      !ours.length ? 'This trust has no slides of its own on this node.' : 'This node is not in a federation with other trusts.'));
    return;
  }
  const error = h('div', { id: 'referral-error', 'aria-live': 'assertive' });
  const form = h('form', { class: 'referral-form', id: 'referral-form', novalidate: true },
    slideChoices(ours, ticked),
    field('to', 'Refer to', h('select', { id: 'to', name: 'to', required: true },
      members.map((m) => h('option', { value: m.trust }, `${m.name} (${m.trust})`)))),
    h('fieldset', {}, h('legend', {}, 'For'),
      h('div', { class: 'check' }, h('input', { type: 'radio', id: 'for-queue', name: 'for', value: 'queue', checked: true }),
        h('label', { for: 'for-queue' }, 'A sub-specialty queue')),
      h('div', { class: 'check' }, h('input', { type: 'radio', id: 'for-specialist', name: 'for', value: 'specialist' }),
        h('label', { for: 'for-specialist' }, 'A named specialist')),
      field('recipient', 'Queue or specialist', h('input', {
        id: 'recipient', name: 'recipient', required: true, autocomplete: 'off', list: 'recipient-options', 'aria-describedby': 'recipient-hint',
      }), 'A queue such as breast, gi, skin or haematopathology; or the specialist’s account at that trust.'),
      h('datalist', { id: 'recipient-options' })),
    field('urgency', 'Urgency', h('select', { id: 'urgency', name: 'urgency' },
      Object.entries(URGENCY).map(([value, text]) => h('option', { value }, text)))),
    field('question', 'Clinical question', h('textarea', { id: 'question', name: 'question', rows: 3, required: true })),
    field('report', 'Report so far (optional)', h('textarea', { id: 'report', name: 'report', rows: 6 })),
    error,
    h('button', { type: 'submit', class: 'button', id: 'send-referral' }, 'Send referral'));
  // What the chosen trust's directory offers for the chosen kind of recipient.
  const directory = getDirectory().catch(() => []);
  const offer = async () => {
    const trust = form.querySelector('#to').value;
    const kind = form.querySelector('input[name="for"]:checked')?.value;
    const entry = (await directory).find((d) => d.trust === trust);
    const options = kind === 'specialist'
      ? (entry?.specialists ?? []).map((s) => [s.account, `${s.name}${s.covered_by ? ` (cover: ${s.covered_by})` : ''}`])
      : (entry?.queues ?? []).map((q) => [q.name, q.title]);
    form.querySelector('#recipient-options').replaceChildren(...options.map(([value, label]) => h('option', { value }, label)));
  };
  form.addEventListener('change', (event) => {
    if (event.target.id === 'to' || event.target.name === 'for') offer();
  });
  offer();
  onCaseSubmit(form, {
    buttonId: 'send-referral',
    error,
    what: 'referral',
    required: [['recipient', 'Name a queue or a specialist.'], ['question', 'Write the clinical question.']],
    send: async (data, value) => {
      const sent = await sendReferral({
        to: data.get('to'),
        recipient: { [data.get('for')]: value('recipient') },
        slides: data.getAll('slides'),
        question: value('question'),
        urgency: data.get('urgency'),
        report: String(data.get('report') ?? ''),
      });
      window.location.assign(referralPath(sent.id));
    },
  });
  page.append(form);
}

function historyList(referral) {
  return h('ol', { class: 'history' }, referral.history.map((step) => h('li', {},
    statusTag(step.status), ' ', h('time', { datetime: new Date(step.at * 1000).toISOString() }, when(step.at)),
    ' · ', step.by, step.user ? ` · ${step.user}` : '')));
}

/** The viewer page of one of a referral's slides, with the referral's marks. */
function markedSlidePath(referral, slideId) {
  return `${viewerPath(slideId)}?referral=${encodeURIComponent(referral.id)}`;
}

function opinionBlock(referral) {
  const { opinion } = referral;
  if (!opinion) return null;
  const marks = opinion.annotations ?? [];
  const onSlides = referral.slides.filter((id) => marks.some((m) => m.slide === id));
  return h('section', { class: 'opinion', 'aria-labelledby': 'opinion-heading' },
    h('h2', { id: 'opinion-heading' }, 'Opinion'),
    h('dl', { class: 'meta' }, metaRows([
      ['Diagnosis', opinion.diagnosis ? `${opinion.diagnosis.display || ''} (SNOMED CT ${opinion.diagnosis.code})`.trim() : null],
      ['By', opinion.author ?? 'the receiving trust'],
      ['Marks', marks.length ? `${marks.length} on ${onSlides.length} slide${onSlides.length === 1 ? '' : 's'}` : null],
    ])),
    h('p', { class: 'opinion__text' }, opinion.text),
    onSlides.length ? h('ul', { class: 'opinion__marks' }, onSlides.map((id) => h('li', {},
      h('a', { href: markedSlidePath(referral, id), class: 'opinion__marks-link' }, `See the marks on slide ${shortId(id)}`),
      ' · ',
      h('a', { href: `/api/v1/referrals/${encodeURIComponent(referral.id)}/annotations/${encodeURIComponent(id)}`, download: `annotations-${shortId(id)}.dcm` },
        'DICOM annotations file')))) : null);
}

function answerForm(referral, onDone) {
  const error = h('div', { 'aria-live': 'assertive' });
  // Only marks on this referral's slides go with it.
  const draftsNow = () => loadDrafts(window.sessionStorage, referral.id).filter((m) => referral.slides.includes(m.slide));
  const drafts = draftsNow();
  const marked = referral.slides.filter((id) => drafts.some((m) => m.slide === id));
  const form = h('form', { class: 'referral-form', id: 'answer-form', novalidate: true },
    h('h2', {}, 'Your opinion'),
    field('opinion-text', 'Opinion', h('textarea', { id: 'opinion-text', name: 'text', rows: 6, required: true })),
    field('diagnosis-code', 'Diagnosis, SNOMED CT concept id (optional)',
      h('input', { id: 'diagnosis-code', name: 'code', inputmode: 'numeric', autocomplete: 'off', 'aria-describedby': 'diagnosis-code-hint' }),
      'For example 399935008 (ductal carcinoma in situ of breast).'),
    field('diagnosis-display', 'Diagnosis, as words', h('input', { id: 'diagnosis-display', name: 'display', autocomplete: 'off' })),
    h('p', { class: 'answer-marks', id: 'answer-marks' }, drafts.length
      ? `${drafts.length} mark${drafts.length === 1 ? '' : 's'} on ${marked.length} slide${marked.length === 1 ? '' : 's'} will be sent with the opinion.`
      : 'No marks drawn. To mark a slide, open it from the list of slides above.'),
    error,
    h('button', { type: 'submit', class: 'button', id: 'send-answer' }, 'Send opinion'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const text = String(data.get('text') ?? '').trim();
    const code = String(data.get('code') ?? '').trim();
    if (!text) {
      error.replaceChildren(notice('error', 'Write the opinion first.'));
      return;
    }
    const body = { text };
    if (code) body.diagnosis = { code, display: String(data.get('display') ?? '').trim() };
    body.annotations = draftsNow().map(({ slide, shape, points, text: note }) => ({ slide, shape, points, text: note ?? '' }));
    try {
      const answered = await referralStep(referral.id, 'answer', body);
      saveDrafts(window.sessionStorage, referral.id, []);
      onDone(answered);
    } catch (err) {
      error.replaceChildren(notice('error', 'The opinion was not sent.', String(err.detail || err.message || err)));
    }
  });
  return form;
}

function stepButton(id, label, referral, step, onDone, confirmText) {
  return h('button', {
    type: 'button',
    class: 'button button--secondary',
    id,
    onclick: async (event) => {
      if (confirmText && !window.confirm(confirmText)) return;
      event.target.disabled = true;
      try {
        onDone(await referralStep(referral.id, step));
      } catch (err) {
        event.target.disabled = false;
        event.target.after(notice('error', `Could not ${label.toLowerCase()}.`, String(err.detail || err.message || err)));
      }
    },
  }, label);
}

const FINAL = ['closed', 'expired', 'withdrawn'];

function showReferral(page, referral) {
  const received = referral.direction === 'received';
  const rerender = (next) => {
    page.replaceChildren(page.firstChild);
    showReferral(page, next);
    page.querySelector('h2')?.focus?.();
  };
  const slides = h('ul', { class: 'referral-slides' }, referral.slides.map((id) => h('li', {},
    h('a', { href: markedSlidePath(referral, id) }, `Slide ${shortId(id)}`))));
  const actions = [];
  if (!FINAL.includes(referral.status)) {
    if (received) {
      actions.push(answerForm(referral, rerender));
    } else {
      if (referral.status === 'answered') actions.push(stepButton('close-referral', 'Close referral', referral, 'close', rerender));
      actions.push(stepButton('withdraw-referral', 'Withdraw referral', referral, 'withdraw', rerender,
        'Withdraw this referral? The other trust will no longer see its slides.'));
    }
  }
  page.append(
    h('p', { class: 'referral-summary' }, urgencyTag(referral.urgency), ' ', statusTag(referral.status)),
    h('dl', { class: 'meta' }, metaRows([
      ['From', `${referral.from}${referral.referrer ? ` · ${referral.referrer}` : ''}`],
      ['To', `${referral.to} · ${recipientText(referral.recipient)}`],
      ['Sent', when(referral.sent_at)],
      ['Ends', when(referral.expires_at)],
    ])),
    h('section', { 'aria-labelledby': 'question-heading' },
      h('h2', { id: 'question-heading' }, 'Question'), h('p', { class: 'referral-question' }, referral.question),
      referral.report ? h('details', { class: 'panel-details' }, h('summary', {}, 'Report so far'), h('p', { class: 'referral-report' }, referral.report)) : null),
    h('section', { 'aria-labelledby': 'slides-heading' }, h('h2', { id: 'slides-heading' }, 'Slides'), slides),
    opinionBlock(referral),
    ...actions,
    h('section', { 'aria-labelledby': 'history-heading' }, h('h2', { id: 'history-heading' }, 'History'), historyList(referral)));
}

/** "/referrals/{id}": one referral; a received one is marked opened when first shown. */
export async function renderReferral(root, id) {
  const page = pageShell(root, 'Referral');
  let referral;
  try {
    referral = await getReferral(id);
    if (referral.direction === 'received' && !FINAL.includes(referral.status)
      && !referral.history.some((s) => s.status === 'opened')) {
      referral = await referralStep(id, 'open');
    }
  } catch (err) {
    failed(page, 'The referral', err);
    return;
  }
  showReferral(page, referral);
}

function duration(seconds) {
  return Number.isFinite(seconds) ? formatAge(seconds) : '–';
}

/** "/referrals/queue": the shared reporting queue: figures per queue, offered cases to claim. */
export async function renderQueue(root) {
  const page = pageShell(root, 'Shared reporting queue');
  let data;
  try {
    data = await getOffers();
  } catch (err) {
    failed(page, 'The queue', err);
    return;
  }
  const figures = data.queues ?? [];
  page.append(h('p', {}, h('a', { class: 'button button--secondary', id: 'offer-case', href: '/referrals/offer' }, 'Offer a case of this trust')));
  page.append(h('section', { 'aria-labelledby': 'queues-heading' },
    h('h2', { id: 'queues-heading' }, 'Queues'),
    figures.length
      ? h('table', { class: 'referrals', id: 'queue-figures' },
        h('caption', { class: 'visually-hidden' }, 'Depth and turnaround of each queue'),
        h('thead', {}, h('tr', {}, ['Queue', 'Waiting', 'Taken', 'Median wait to be taken', 'Median turnaround'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, figures.map((q) => h('tr', { 'data-queue': q.queue },
          h('td', {}, q.queue), h('td', {}, String(q.open)), h('td', {}, String(q.taken)),
          h('td', {}, duration(q.median_wait_secs)), h('td', {}, duration(q.median_turnaround_secs))))))
      : notice('empty', 'No cases have been offered yet.')));
  const open = (data.offers ?? []).filter((o) => o.open).sort(byPriority);
  const rows = open.map((o) => {
    const status = h('span', { class: 'claim-status', role: 'status' },
      o.claimed_here_at ? 'Claim sent' : (o.claim_refused ? `Last claim refused: ${o.claim_refused}` : ''));
    // A trust does not claim its own offers.
    const button = o.claimed_here_at || o.from === data.trust ? null : h('button', {
      type: 'button',
      id: `claim-${o.id}`,
      class: 'button button--secondary',
      'aria-label': `Claim the ${o.queue} case from ${o.from}`,
      onclick: async (event) => {
        event.target.disabled = true;
        try {
          await claimOffer(o.id);
          status.textContent = 'Claim sent; the case comes to your inbox if yours was first.';
          event.target.remove();
        } catch (err) {
          event.target.disabled = false;
          status.textContent = String(err.detail || err.message || err);
        }
      },
    }, 'Claim');
    return h('tr', { 'data-offer-id': o.id },
      h('td', {}, urgencyTag(o.urgency)), h('td', {}, o.from), h('td', {}, o.queue),
      h('td', {}, o.question), h('td', {}, `${formatAge(o.age_secs)} ago`),
      h('td', {}, button, ' ', status));
  });
  page.append(h('section', { 'aria-labelledby': 'offers-heading' },
    h('h2', { id: 'offers-heading' }, 'Cases waiting ', h('span', { class: 'count' }, String(open.length))),
    rows.length
      ? h('table', { class: 'referrals', id: 'offers' },
        h('caption', { class: 'visually-hidden' }, 'Cases offered by member trusts, most urgent first'),
        h('thead', {}, h('tr', {}, ['Urgency', 'From', 'Queue', 'Question', 'Offered', 'Claim'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, rows))
      : notice('empty', 'No case is waiting.')));
}
