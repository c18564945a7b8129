// research.test.mjs: owns the browser check of the research page at tablet size (1024x768):
// a researcher builds a query with the form (a condition and the fields to count by, which
// write the query's text), asks every member, and sees each site's status, the counts by
// group and site in a table and the same in a bar chart (Chart.js); a malformed query typed
// by hand shows the node's caret under the offending token. The page passes axe-core with no
// WCAG 2.0/2.1/2.2 A or AA violation and runs under the node's Content-Security-Policy.
//   SLIDEMESH_URL: the node asked (its trust runs no sign-on: requests act for the trust)
//   SLIDEMESH_TRUSTS: the members expected to answer, comma-separated
//   SLIDEMESH_DOWN: a member expected not to answer (down)

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { assertAccessible } from './axe.mjs';
import { launchChromium, tabletPage } from './chromium.mjs';

const URL = (process.env.SLIDEMESH_URL ?? '').replace(/\/+$/, '');
const TRUSTS = (process.env.SLIDEMESH_TRUSTS ?? '').split(',').filter(Boolean);
const DOWN = process.env.SLIDEMESH_DOWN ?? '';
const ARTIFACTS = resolve(process.env.SLIDEMESH_ARTIFACTS || 'artifacts');
const WAIT_MS = 30_000;

let browser;
let page;
const pageErrors = [];

describe('the research page', () => {
  before(async () => {
    assert.ok(URL && TRUSTS.length && DOWN, 'SLIDEMESH_URL, SLIDEMESH_TRUSTS and SLIDEMESH_DOWN are required');
    await mkdir(ARTIFACTS, { recursive: true });
    browser = await launchChromium();
    page = await tabletPage(browser, pageErrors);
  });

  after(async () => {
    await browser?.close();
  });

  it('builds a query, asks every member, and shows each site, a table and a chart', async () => {
    await page.goto(`${URL}/research`, { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#query-text', { timeout: WAIT_MS });
    await assertAccessible(page, 'research form');
    // Changing a condition by keyboard keeps the focus where it is.
    await page.focus('#condition-0-op');
    await page.keyboard.press('ArrowDown');
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'condition-0-op');
    await page.selectOption('#condition-0-field', 'stain');
    await page.selectOption('#condition-0-op', '=');
    await page.fill('#condition-0-value', 'H&E');
    await page.check('#by-sex');
    assert.equal(await page.inputValue('#query-text'), 'count where stain = "H&E" by trust, sex');
    await page.click('#ask');
    await page.waitForSelector('#research-table, #research-answer .notice--error, #research-answer .notice--info', { timeout: WAIT_MS });
    if (!(await page.$('#research-table'))) {
      await page.screenshot({ path: resolve(ARTIFACTS, 'failure-research-answer.png'), fullPage: true });
      assert.fail(`no table: ${await page.textContent('#research-answer')}`);
    }
    const statuses = await page.$$eval('#site-statuses li', (items) => Object.fromEntries(
      items.map((li) => [li.dataset.trust, li.dataset.status])));
    for (const trust of TRUSTS) assert.equal(statuses[trust], 'answered', JSON.stringify(statuses));
    assert.ok(['unreachable', 'timed out'].includes(statuses[DOWN]), JSON.stringify(statuses));
    assert.match(await page.textContent('#research-answer'), /Partial answer/);
    const columns = await page.$$eval('#research-table thead th', (ths) => ths.map((th) => th.textContent));
    for (const trust of TRUSTS) assert.ok(columns.includes(trust), columns.join('|'));
    const rows = await page.$$eval('#research-table tbody tr', (trs) => trs.length);
    assert.ok(rows >= 1, 'at least one group');
    // The chart: one dataset per answering site, drawn on the canvas.
    const chart = await page.evaluate(() => {
      const c = window.Chart?.getChart('research-chart');
      const canvas = document.getElementById('research-chart');
      const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
      let painted = 0;
      for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted += 1;
      return { datasets: c?.data.datasets.map((d) => d.label), bars: c?.data.datasets.flatMap((d) => d.data).filter((v) => v != null).length, painted };
    });
    assert.deepEqual([...chart.datasets].sort(), [...TRUSTS].sort(), JSON.stringify(chart));
    assert.ok(chart.bars >= 1 && chart.painted > 1000, JSON.stringify(chart));
    await page.screenshot({ path: resolve(ARTIFACTS, 'research-answer.png'), fullPage: true });
    await assertAccessible(page, 'research answer');
  });

  it('shows where a hand-typed query is wrong', async () => {
    await page.fill('#query-text', 'count where stian = HE');
    await page.click('#ask');
    await page.waitForSelector('#query-error', { timeout: WAIT_MS });
    const error = await page.textContent('#query-error');
    assert.match(error, /\n\s+\^{5}/, error);
    assert.match(error, /expected a field/, error);
    await assertAccessible(page, 'query error');
    assert.deepEqual(pageErrors, [], 'no page errors or CSP violations');
  });
});
