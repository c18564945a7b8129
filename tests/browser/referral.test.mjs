// referral.test.mjs: owns the two-browser check of a referral between two trusts' web UIs, at
// tablet size (1024x768): a pathologist at the referring trust fills in the referral form by
// keyboard alone and sends it, and offers another case to the shared queue the same way; a
// pathologist at the receiving trust finds the referral in the inbox, opens
// the referred slide (tiles stream from the referring trust), marks it (a rectangle, a line and
// a point, drawn with the mouse, each with a note), answers with a coded opinion, and claims a
// case the referring trust offered to the shared queue; the first sees the answer on the case
// and the marks on its slide. Every page passes axe-core with no WCAG 2.0/2.1/2.2 A or
// AA violation. Screenshots of each step go to SLIDEMESH_ARTIFACTS.
//
// Both nodes run behind their trust's sign-on proxy; each browser sends what the proxy would
// (the person, their role and the proxy's secret) with every request.
//   SLIDEMESH_URL_FROM, SLIDEMESH_URL_TO: the referring and receiving nodes
//   SLIDEMESH_SLIDE_ID: a slide of the referring trust
//   SLIDEMESH_PROXY_SECRET: the proxy's secret

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { assertAccessible as accessible } from './axe.mjs';
import { launchChromium } from './chromium.mjs';

const FROM = (process.env.SLIDEMESH_URL_FROM ?? '').replace(/\/+$/, '');
const TO = (process.env.SLIDEMESH_URL_TO ?? '').replace(/\/+$/, '');
const SLIDE = process.env.SLIDEMESH_SLIDE_ID ?? '';
const SECRET = process.env.SLIDEMESH_PROXY_SECRET ?? '';
const ARTIFACTS = resolve(process.env.SLIDEMESH_ARTIFACTS || 'artifacts');
const WAIT_MS = 30_000;
const QUESTION = 'Atypical ductal proliferation on core: DCIS or invasive? Please grade.';
const OPINION = 'High-grade DCIS with comedonecrosis; no invasion in the levels examined.';

let browser;
let referrer;
let specialist;
let referralUrl;
const pageErrors = [];
let broken = false;

/** A tablet-sized browser context for one person at one trust. */
async function personAt(user) {
  const context = await browser.newContext({
    viewport: { width: 1024, height: 768 },
    extraHTTPHeaders: {
      'x-slidemesh-user': user,
      'x-slidemesh-role': 'pathologist',
      'x-slidemesh-proxy-secret': SECRET,
    },
  });
  const page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(`${user}: ${e.message}`));
  // The pages run under the node's Content-Security-Policy; anything it blocks fails the test.
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) pageErrors.push(`${user}: CSP: ${m.text()}`);
  });
  return page;
}

async function shot(page, name) {
  await page.screenshot({ path: resolve(ARTIFACTS, name), fullPage: true });
}

/** Presses Tab until the element with `id` has the focus (at most 60 presses). */
async function tabTo(page, id) {
  for (let i = 0; i < 60; i += 1) {
    if (await page.evaluate((want) => document.activeElement?.id === want, id)) return;
    await page.keyboard.press('Tab');
  }
  assert.fail(`#${id} is not reachable with the Tab key`);
}

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
      for (const [who, page] of [['referrer', referrer], ['specialist', specialist]]) {
        if (page) await shot(page, `failure-${safe}-${who}.png`).catch(() => null);
      }
      for (const e of pageErrors) t.diagnostic(`page error: ${e}`);
      throw err;
    }
  });
}

describe('a referral between two trusts in two browsers', () => {
  before(async () => {
    assert.ok(FROM && TO && SLIDE && SECRET, 'SLIDEMESH_URL_FROM, _TO, _SLIDE_ID and _PROXY_SECRET are required');
    await mkdir(ARTIFACTS, { recursive: true });
    browser = await launchChromium();
    referrer = await personAt('jsmith');
    specialist = await personAt('apatel');
  });

  after(async () => {
    await browser?.close();
  });

  step('the slide list and the viewer pass axe-core at tablet size', async () => {
    await referrer.goto(`${FROM}/`, { waitUntil: 'domcontentloaded' });
    await referrer.waitForSelector('.slide-card', { timeout: WAIT_MS });
    await accessible(referrer, 'slide list');
    await referrer.goto(`${FROM}/view/${SLIDE}`, { waitUntil: 'domcontentloaded' });
    await referrer.waitForFunction(() => window.slidemeshStats?.tilesLoaded > 0, null, { timeout: WAIT_MS });
    await shot(referrer, 'viewer-1024x768.png');
    await accessible(referrer, 'viewer');
  });

  step('the referring pathologist fills in and sends the form by keyboard alone', async () => {
    await referrer.goto(`${FROM}/referrals/new?slide=${SLIDE}`, { waitUntil: 'domcontentloaded' });
    await referrer.waitForSelector('#referral-form', { timeout: WAIT_MS });
    await accessible(referrer, 'referral form');
    assert.ok(await referrer.isChecked(`#slide-${SLIDE}`), 'the slide the form was opened for is ticked');
    await tabTo(referrer, 'recipient');
    await referrer.keyboard.type('breast');
    await tabTo(referrer, 'urgency');
    await referrer.keyboard.type('Two');
    assert.equal(await referrer.inputValue('#urgency'), 'two-week-wait');
    await tabTo(referrer, 'question');
    await referrer.keyboard.type(QUESTION);
    await tabTo(referrer, 'report');
    await referrer.keyboard.type('Core biopsy, left breast, 2 cores.');
    await tabTo(referrer, 'send-referral');
    await shot(referrer, 'referral-form.png');
    await referrer.keyboard.press('Enter');
    await referrer.waitForURL(/\/referrals\/[0-9a-f]{64}$/, { timeout: WAIT_MS });
    referralUrl = new URL(referrer.url()).pathname;
    await referrer.waitForSelector('.referral-summary', { timeout: WAIT_MS });
    await shot(referrer, 'referral-sent.png');
    await accessible(referrer, 'sent referral');
  });

  step('the referring pathologist offers a case to the shared queue by keyboard', async () => {
    await referrer.goto(`${FROM}/referrals/queue`, { waitUntil: 'domcontentloaded' });
    await referrer.waitForSelector('#offer-case', { timeout: WAIT_MS });
    await tabTo(referrer, 'offer-case');
    await referrer.keyboard.press('Enter');
    await referrer.waitForSelector('#offer-form', { timeout: WAIT_MS });
    await accessible(referrer, 'offer form');
    await tabTo(referrer, `slide-${SLIDE}`);
    await referrer.keyboard.press('Space');
    await tabTo(referrer, 'queue');
    await referrer.keyboard.type('breast');
    await tabTo(referrer, 'question');
    await referrer.keyboard.type('Backlog: core biopsy, please report.');
    await tabTo(referrer, 'send-offer');
    await shot(referrer, 'offer-form.png');
    await referrer.keyboard.press('Enter');
    await referrer.waitForURL(/\/referrals\/queue$/, { timeout: WAIT_MS });
    await referrer.waitForSelector('#offers', { timeout: WAIT_MS });
    const own = referrer.locator('#offers tbody tr', { hasText: 'Backlog: core biopsy, please report.' });
    assert.equal(await own.count(), 1, 'the offer is listed in the queue');
    assert.equal(await own.locator('button').count(), 0, 'no claim button on this trust\u2019s own offer');
  });

  step('the receiving pathologist finds it in the inbox', async () => {
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      await specialist.goto(`${TO}/referrals`, { waitUntil: 'domcontentloaded' });
      await specialist.waitForSelector('#inbox, .notice', { timeout: WAIT_MS });
      if (await specialist.locator('#inbox tbody tr').count()) break;
      assert.ok(Date.now() < deadline, 'the referral did not reach the inbox');
      await specialist.waitForTimeout(250);
    }
    const row = specialist.locator('#inbox tbody tr').first();
    assert.match(await row.innerText(), /Two-week wait/);
    assert.match(await row.innerText(), /RR8/);
    await shot(specialist, 'inbox-1024x768.png');
    await accessible(specialist, 'inbox');
  });

  step('opens it, views the referred slide and answers with a coded opinion', async () => {
    await specialist.goto(`${TO}${referralUrl}`, { waitUntil: 'domcontentloaded' });
    await specialist.waitForSelector('#answer-form', { timeout: WAIT_MS });
    assert.match(await specialist.locator('.referral-question').innerText(), /DCIS or invasive/);
    await accessible(specialist, 'received referral');
    // The slide streams from the referring trust; the specialist marks it: a rectangle, a
    // line and a point, each with a note.
    await specialist.locator('.referral-slides a').first().click();
    await specialist.waitForFunction(() => window.slidemeshStats?.tilesLoaded > 0, null, { timeout: WAIT_MS });
    await specialist.waitForSelector('#marks-heading', { timeout: WAIT_MS });
    const box = await specialist.locator('#osd').boundingBox();
    const at = (fx, fy) => [box.x + box.width * fx, box.y + box.height * fy];
    const drag = async ([x0, y0], [x1, y1]) => {
      await specialist.mouse.move(x0, y0);
      await specialist.mouse.down();
      await specialist.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, { steps: 5 });
      await specialist.mouse.move(x1, y1, { steps: 5 });
      await specialist.mouse.up();
    };
    const marks = [
      ['rectangle', () => drag(at(0.35, 0.35), at(0.55, 0.5)), 'Focus of comedonecrosis'],
      ['line', () => drag(at(0.3, 0.6), at(0.6, 0.65)), 'Extent of DCIS'],
      ['point', async () => specialist.mouse.click(...at(0.45, 0.42)), 'Mitosis'],
    ];
    for (const [i, [tool, draw, note]] of marks.entries()) {
      await specialist.click(`#tool-${tool}`);
      await draw();
      await specialist.waitForSelector(`#mark-note-${i + 1}`, { timeout: WAIT_MS });
      await specialist.fill(`#mark-note-${i + 1}`, note);
      await specialist.press(`#mark-note-${i + 1}`, 'Tab');
    }
    const listed = await specialist.locator('#marks-list').innerText();
    assert.match(listed, /Rectangle 1 · [\d,.]+ (µm²|mm²)/);
    assert.match(listed, /Line 2 · [\d,.]+ (µm|mm)/);
    await shot(specialist, 'marks-drawn-1024x768.png');
    await accessible(specialist, 'viewer with marks being drawn');
    await specialist.goBack({ waitUntil: 'domcontentloaded' });
    await specialist.waitForSelector('#answer-form', { timeout: WAIT_MS });
    assert.match(await specialist.locator('#answer-marks').innerText(), /3 marks on 1 slide will be sent/);
    await tabTo(specialist, 'opinion-text');
    await specialist.keyboard.type(OPINION);
    await tabTo(specialist, 'diagnosis-code');
    await specialist.keyboard.type('399935008');
    await tabTo(specialist, 'diagnosis-display');
    await specialist.keyboard.type('Ductal carcinoma in situ of breast');
    await tabTo(specialist, 'send-answer');
    await specialist.keyboard.press('Enter');
    await specialist.waitForSelector('.opinion', { timeout: WAIT_MS });
    assert.match(await specialist.locator('.opinion').innerText(), /Marks\s+3 on 1 slide/);
    await shot(specialist, 'answered.png');
    await accessible(specialist, 'answered referral');
  });

  step('the receiving pathologist claims a case from the shared queue by keyboard', async () => {
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      await specialist.goto(`${TO}/referrals/queue`, { waitUntil: 'domcontentloaded' });
      await specialist.waitForSelector('#queue-figures, .notice', { timeout: WAIT_MS });
      if (await specialist.locator('#offers tbody tr').count()) break;
      assert.ok(Date.now() < deadline, 'the offered case did not reach the queue');
      await specialist.waitForTimeout(250);
    }
    await shot(specialist, 'queue-1024x768.png');
    await accessible(specialist, 'shared queue');
    const id = await specialist.locator('#offers tbody tr').first().getAttribute('data-offer-id');
    await tabTo(specialist, `claim-${id}`);
    await specialist.keyboard.press('Enter');
    await specialist.waitForFunction(() => /Claim sent/.test(document.querySelector('#offers .claim-status')?.textContent ?? ''), null, { timeout: WAIT_MS });
  });

  step('the referring pathologist sees the opinion on the case', async () => {
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      await referrer.goto(`${FROM}${referralUrl}`, { waitUntil: 'domcontentloaded' });
      await referrer.waitForSelector('.referral-summary, .notice', { timeout: WAIT_MS });
      if (await referrer.locator('.opinion').count()) break;
      assert.ok(Date.now() < deadline, 'the opinion did not reach the referring trust');
      await referrer.waitForTimeout(250);
    }
    const opinion = await referrer.locator('.opinion').innerText();
    assert.match(opinion, /no invasion/);
    assert.match(opinion, /399935008/);
    assert.match(opinion, /apatel/);
    await shot(referrer, 'opinion-seen.png');
    await accessible(referrer, 'answered referral, referring side');
    // The marks, on the referring trust's own slide, with their notes.
    await referrer.locator('.opinion__marks-link').first().click();
    await referrer.waitForFunction(() => window.slidemeshStats?.tilesLoaded > 0, null, { timeout: WAIT_MS });
    await referrer.waitForFunction(() => document.querySelectorAll('.a9s-annotation').length === 3, null, { timeout: WAIT_MS });
    const seen = await referrer.locator('#marks-list').innerText();
    for (const note of ['Focus of comedonecrosis', 'Extent of DCIS', 'Mitosis']) assert.match(seen, new RegExp(note));
    assert.equal(await referrer.locator('#tool-rectangle').count(), 0, 'the referring side cannot draw');
    await shot(referrer, 'marks-seen-1024x768.png');
    await accessible(referrer, 'viewer with the opinion\u2019s marks');
    assert.deepEqual(pageErrors, []);
  });
});
