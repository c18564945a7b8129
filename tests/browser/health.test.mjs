// health.test.mjs: owns the browser check of the health page at tablet size (1024x768) on a
// node holding a replica: every other member is listed as connected, the replica is listed
// complete with its tiles held, and the scrub's section is there. The page passes axe-core
// with no WCAG 2.0/2.1/2.2 A or AA violation and runs under the node's Content-Security-Policy.
//   SLIDEMESH_URL: the node (its trust runs no sign-on: requests act for the trust, the
//     node's operator)
//   SLIDEMESH_MEMBERS: the other members expected connected, comma-separated
//   SLIDEMESH_SLIDE: the slide it holds a replica of

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { assertAccessible } from './axe.mjs';
import { launchChromium, tabletPage } from './chromium.mjs';

const URL = (process.env.SLIDEMESH_URL ?? '').replace(/\/+$/, '');
const MEMBERS = (process.env.SLIDEMESH_MEMBERS ?? '').split(',').filter(Boolean);
const SLIDE = process.env.SLIDEMESH_SLIDE ?? '';
const ARTIFACTS = resolve(process.env.SLIDEMESH_ARTIFACTS || 'artifacts');
const WAIT_MS = 30_000;

let browser;
let page;
const pageErrors = [];

describe('the health page', () => {
  before(async () => {
    assert.ok(URL && MEMBERS.length && SLIDE, 'SLIDEMESH_URL, SLIDEMESH_MEMBERS and SLIDEMESH_SLIDE are required');
    await mkdir(ARTIFACTS, { recursive: true });
    browser = await launchChromium();
    page = await tabletPage(browser, pageErrors);
  });

  after(async () => {
    await browser?.close();
  });

  it('shows each member connected, the replica complete and the scrub', async () => {
    await page.goto(`${URL}/health`, { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#members-table', { timeout: WAIT_MS });
    for (const trust of MEMBERS) {
      const state = await page.textContent(`#members-table tr[data-trust="${trust}"] .tag`);
      assert.equal(state?.trim(), 'Connected', `${trust}: ${state}`);
    }
    const row = await page.waitForSelector(`#replicas-table tr[data-slide="${SLIDE}"]`, { timeout: WAIT_MS });
    const text = await row.textContent();
    assert.match(text, /complete/, text);
    assert.match(text, /\(100\.0%\)/, text);
    assert.match(await page.textContent('#scrub-last'), /pass/);
    assert.equal(await page.getAttribute('#nav-health', 'aria-current'), 'page');
    await assertAccessible(page, 'health page');
    await page.screenshot({ path: resolve(ARTIFACTS, 'health.png'), fullPage: true });
    assert.deepEqual(pageErrors, [], `page errors: ${pageErrors.join('; ')}`);
  });
});
