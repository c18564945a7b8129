// cohort.test.mjs: owns the browser check of the research page's cohort form at tablet size
// (1024x768): a researcher types an approved project's reference and a query, builds the
// cohort, and sees each other member's status (the site that approved the project with its
// slide count, the one that did not as refused), the slides with their site, pseudonym and
// labels, each linked to the viewer, and the command that fetches them; the viewer opens a
// cohort slide marked de-identified. axe-core finds no WCAG 2.0/2.1/2.2 A or AA violation,
// and nothing breaks the node's Content-Security-Policy.
//   SLIDEMESH_URL: the node asked (its trust runs no sign-on: requests act for the trust)
//   SLIDEMESH_PROJECT: the project's reference; SLIDEMESH_QUERY: the query selecting slides
//   SLIDEMESH_APPROVED: the member that approved it, SLIDEMESH_SLIDES: how many it gives
//   SLIDEMESH_REFUSING: a member that did not approve it

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { assertAccessible } from './axe.mjs';
import { launchChromium, tabletPage } from './chromium.mjs';

const env = (name) => {
  const value = process.env[name];
  assert.ok(value, `${name} is required`);
  return value;
};
const ARTIFACTS = resolve(process.env.SLIDEMESH_ARTIFACTS || 'artifacts');
const WAIT_MS = 60_000;

let browser;
let page;
const pageErrors = [];

describe('the research page builds a cohort', () => {
  before(async () => {
    await mkdir(ARTIFACTS, { recursive: true });
    browser = await launchChromium();
    page = await tabletPage(browser, pageErrors);
  });

  after(async () => {
    await browser?.close();
  });

  it('lists each site, the slides with pseudonyms and labels, and opens one de-identified', async () => {
    const url = env('SLIDEMESH_URL').replace(/\/+$/, '');
    const approved = env('SLIDEMESH_APPROVED');
    const refusing = env('SLIDEMESH_REFUSING');
    const slides = Number(env('SLIDEMESH_SLIDES'));
    await page.goto(`${url}/research`, { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#project', { timeout: WAIT_MS });
    await page.fill('#query-text', env('SLIDEMESH_QUERY'));
    await page.fill('#project', env('SLIDEMESH_PROJECT'));
    await page.click('#build-cohort');
    await page.waitForSelector('#cohort-table, #cohort-answer .notice--error:not(:has(+ #cohort-sites))', { timeout: WAIT_MS });
    if (!(await page.$('#cohort-table'))) {
      await page.screenshot({ path: resolve(ARTIFACTS, 'failure-cohort.png'), fullPage: true });
      assert.fail(`no cohort table: ${await page.textContent('#cohort-answer')}`);
    }
    const statuses = await page.$$eval('#cohort-sites li', (items) => Object.fromEntries(
      items.map((li) => [li.dataset.trust, li.dataset.status])));
    assert.equal(statuses[approved], 'answered', JSON.stringify(statuses));
    assert.equal(statuses[refusing], 'refused', JSON.stringify(statuses));
    assert.match(await page.textContent('#cohort-answer'), /Partial cohort/);
    const rows = await page.$$eval('#cohort-table tbody tr', (trs) => trs.map((tr) => ({
      cells: [...tr.querySelectorAll('td')].map((td) => td.textContent),
      href: tr.querySelector('a.cohort-open')?.getAttribute('href') ?? null,
    })));
    assert.equal(rows.length, slides, JSON.stringify(rows));
    for (const row of rows) {
      assert.equal(row.cells[0], approved);
      assert.match(row.cells[1], /^SMP[0-9A-F]+$/);
      assert.match(row.cells[2], /^grade \d$/);
    }
    assert.match(await page.textContent('#cohort-fetch-command'), /^slidemesh cohort fetch --project '/);
    await page.screenshot({ path: resolve(ARTIFACTS, 'cohort.png'), fullPage: true });
    await assertAccessible(page, 'cohort');

    // A cohort slide opens in the viewer, marked de-identified (its slides may still be
    // opening when the list is drawn: the first one with a link).
    const open = rows.find((r) => r.href);
    assert.ok(open, 'a cohort slide is open');
    await page.goto(`${url}${open.href}`, { waitUntil: 'domcontentloaded' });
    await page.waitForFunction(() => /de-identified/i.test(document.body.textContent), null, { timeout: WAIT_MS });
    await page.screenshot({ path: resolve(ARTIFACTS, 'cohort-slide.png'), fullPage: true });
    assert.deepEqual(pageErrors, [], 'no page errors or CSP violations');
  });
});
