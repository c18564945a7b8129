// signon.test.mjs: owns the headless-browser check of signing on at a node whose people sign on at
// the trust's OpenID provider ([users] from = "oidc"), run as people would: an unsigned visit goes
// to the provider's sign-in; a pathologist signs in there, comes back to the slide she asked for,
// sees who she is in the header, and the slide's tiles load; the slide's access history names her;
// a POST without the session's CSRF token is refused; signing out ends the session here (her old
// cookie gets 401) and at the provider; a student then signs in and is refused the care-only slide.
// The signed-out page and the refusal pass axe-core (WCAG 2.x A and AA).
// Every request the browser makes to anywhere but loopback is blocked and fails the test.
//
// Run by tests/tests/oidc.rs against a node and a provider it started:
//   SLIDEMESH_URL=http://127.0.0.1:PORT SLIDEMESH_ISSUER=http://127.0.0.1:PORT2 \
//   SLIDEMESH_SLIDE_ID=<slide> node --test signon.test.mjs
// Optional: SLIDEMESH_ARTIFACTS (screenshot folder, default ./artifacts), CHROMIUM_PATH.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { assertAccessible } from './axe.mjs';
import { launchChromium } from './chromium.mjs';

const BASE_URL = (process.env.SLIDEMESH_URL ?? '').replace(/\/+$/, '');
const ISSUER = (process.env.SLIDEMESH_ISSUER ?? '').replace(/\/+$/, '');
const SLIDE = process.env.SLIDEMESH_SLIDE_ID ?? '';
const ARTIFACTS = resolve(process.env.SLIDEMESH_ARTIFACTS || 'artifacts');
const WAIT_MS = 30_000;
const PATHOLOGIST = { login: 'jsmith', password: 'jsmith-password' };
const STUDENT = { login: 'akhan', password: 'akhan-password' };

let browser;
let context;
let page;
const pageErrors = [];
const cspViolations = [];
/** Requests to anywhere but this machine's loopback, blocked. */
const offsite = [];
let broken = false;
/** The pathologist's session cookie, kept to show it is dead after she signs out. */
let oldSession;

/** axe-core on the page as it is now (see axe.mjs). */
function accessible(name) {
  return assertAccessible(page, name);
}

async function screenshot(name) {
  return page.screenshot({ path: resolve(ARTIFACTS, name), fullPage: true });
}

/** Run a step; on failure mark the run broken and keep a screenshot of the moment. */
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
      await screenshot(`failure-${safe}.png`).catch(() => null);
      t.diagnostic(`at ${page.url()}`);
      for (const e of pageErrors) t.diagnostic(`page error: ${e}`);
      throw err;
    }
  });
}

/** In the page: an API request on this node with the browser's cookies; resolves to { status, body }. */
function fetchInPage(path, init = {}) {
  return page.evaluate(async ({ path, init }) => {
    const res = await fetch(path, init);
    const text = await res.text();
    let body = text;
    try { body = JSON.parse(text); } catch { /* not JSON */ }
    return { status: res.status, body };
  }, { path, init });
}

/** At the provider's sign-in form: sign in as `who` and wait to be back on the node at `back`. */
async function signInAtProvider(who, back) {
  await page.waitForURL((url) => url.href.startsWith(`${ISSUER}/interaction/`), { timeout: WAIT_MS });
  await page.fill('#login', who.login);
  await page.fill('#password', who.password);
  await Promise.all([
    page.waitForURL((url) => url.href === `${BASE_URL}${back}`, { timeout: WAIT_MS }),
    page.click('#sign-in'),
  ]);
}

async function signedInAs() {
  await page.waitForSelector('#signed-in:not([hidden])', { timeout: WAIT_MS });
  return (await page.locator('#signed-in').innerText()).replace(/\s+/g, ' ');
}

describe('sign-on at the trust\'s OpenID provider', () => {
  before(async () => {
    assert.ok(BASE_URL && ISSUER && SLIDE, 'set SLIDEMESH_URL, SLIDEMESH_ISSUER and SLIDEMESH_SLIDE_ID');
    await mkdir(ARTIFACTS, { recursive: true });
    browser = await launchChromium();
    context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    await context.route('**/*', (route) => {
      const { hostname } = new URL(route.request().url());
      if (['127.0.0.1', 'localhost', '[::1]'].includes(hostname)) return route.continue();
      offsite.push(route.request().url());
      return route.abort();
    });
    page = await context.newPage();
    page.on('pageerror', (err) => pageErrors.push(String(err?.stack ?? err)));
    page.on('console', (m) => {
      if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
    });
  });

  after(async () => {
    await browser?.close();
  });

  step('an unsigned visit to a slide goes to the provider\'s sign-in', async (t) => {
    await page.goto(`${BASE_URL}/view/${SLIDE}`, { waitUntil: 'domcontentloaded' });
    await page.waitForURL((url) => url.href.startsWith(`${ISSUER}/interaction/`), { timeout: WAIT_MS });
    t.diagnostic(`at ${page.url()}`);
    await screenshot('provider-sign-in.png');
  });

  step('a pathologist signs in, comes back to the slide and sees who she is', async (t) => {
    await signInAtProvider(PATHOLOGIST, `/view/${SLIDE}`);
    const who = await signedInAs();
    t.diagnostic(`header: ${who}`);
    assert.match(who, /jsmith · pathologist/);
    assert.ok(await page.locator('#sign-out').isVisible(), 'no sign-out button');
    const cookies = await context.cookies(BASE_URL);
    const session = cookies.find((c) => c.name === 'slidemesh-session');
    assert.ok(session, `no session cookie: ${JSON.stringify(cookies.map((c) => c.name))}`);
    assert.ok(session.httpOnly, 'the session cookie is readable by scripts');
    assert.equal(session.sameSite, 'Lax');
    oldSession = session.value;
  });

  step('the slide\'s tiles load for her', async (t) => {
    await page.waitForFunction(() => window.slidemeshStats?.tilesLoaded > 0, null, { timeout: WAIT_MS });
    const stats = await page.evaluate(() => ({ ...window.slidemeshStats }));
    t.diagnostic(`tiles: ${JSON.stringify(stats)}`);
    assert.equal(stats.tilesFailed, 0, 'tiles failed to load');
    await screenshot('viewer-signed-in.png');
  });

  step('the slide\'s access history names her', async (t) => {
    const history = await fetchInPage(`/api/v1/slides/${SLIDE}/access`);
    assert.equal(history.status, 200, JSON.stringify(history.body));
    const hers = history.body.entries.filter((e) => e.user === 'jsmith (pathologist)' && e.allowed);
    t.diagnostic(`${history.body.entries.length} entries, ${hers.length} hers`);
    assert.ok(hers.length > 0, `no allowed entry names her: ${JSON.stringify(history.body.entries)}`);
    // The viewer's side panel shows it too.
    await page.waitForFunction(
      () => document.querySelector('.access')?.textContent.includes('jsmith (pathologist)'),
      null, { timeout: WAIT_MS });
  });

  step('a POST without the session\'s CSRF token is refused', async () => {
    const path = `/api/v1/slides/${SLIDE}/levels/0/wanted`;
    const body = JSON.stringify({ cols: [0, 0], rows: [0, 0] });
    const headers = { 'Content-Type': 'application/json' };
    const without = await fetchInPage(path, { method: 'POST', headers, body });
    assert.equal(without.status, 403, JSON.stringify(without.body));
    assert.match(String(without.body.error), /CSRF/);
    const wrong = await fetchInPage(path, { method: 'POST', headers: { ...headers, 'X-CSRF-Token': 'guessed' }, body });
    assert.equal(wrong.status, 403);
    const me = await fetchInPage('/auth/me');
    assert.equal(me.status, 200);
    assert.equal(me.body.user, 'jsmith');
    assert.equal(me.body.role, 'pathologist');
    const withToken = await fetchInPage(path, {
      method: 'POST', headers: { ...headers, 'X-CSRF-Token': me.body.csrf_token }, body,
    });
    assert.ok(withToken.status < 300, `with the token: ${withToken.status} ${JSON.stringify(withToken.body)}`);
    // Signing out needs it too: a page elsewhere cannot sign people out either.
    const logout = await fetchInPage('/auth/logout', { method: 'POST' });
    assert.equal(logout.status, 403);
  });

  step('signing out ends the session here and at the provider', async (t) => {
    await page.click('#sign-out');
    // The provider asks to confirm (RP-initiated logout), then sends the browser back.
    await page.waitForURL((url) => url.href.startsWith(`${ISSUER}/`), { timeout: WAIT_MS });
    await Promise.all([
      page.waitForURL(`${BASE_URL}/signed-out`, { timeout: WAIT_MS }),
      page.click('#confirm-logout'),
    ]);
    await page.waitForSelector('#sign-in-again', { timeout: WAIT_MS });
    await screenshot('signed-out.png');
    await accessible('signed-out page');
    const after = await fetchInPage('/api/v1/slides');
    assert.equal(after.status, 401, JSON.stringify(after.body));
    assert.ok(after.body.login?.startsWith('/auth/login'), JSON.stringify(after.body));
    // Her old cookie, sent again, names no one: the session is gone at the node, not only the cookie.
    const replay = await fetch(`${BASE_URL}/api/v1/slides`, { headers: { Cookie: `slidemesh-session=${oldSession}` } });
    t.diagnostic(`old cookie: ${replay.status}`);
    assert.equal(replay.status, 401);
  });

  step('a student signs in and is refused the care-only slide', async (t) => {
    await page.click('#sign-in-again');
    // The provider's session ended too: it asks who is there again.
    await signInAtProvider(STUDENT, '/');
    assert.match(await signedInAs(), /akhan · student/);
    await page.waitForSelector('#our-slides', { timeout: WAIT_MS });
    assert.equal(await page.locator(`.slide-card[data-slide-id="${SLIDE}"]`).count(), 0,
      'the student\'s list shows the care-only slide');
    const detail = await fetchInPage(`/api/v1/slides/${SLIDE}`);
    t.diagnostic(`detail: ${detail.status} ${JSON.stringify(detail.body)}`);
    assert.equal(detail.status, 403);
    const tile = await fetchInPage(`/api/v1/slides/${SLIDE}/levels/0/tiles/0/0`);
    assert.equal(tile.status, 403);
    await page.goto(`${BASE_URL}/view/${SLIDE}`, { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('.notice--error', { timeout: WAIT_MS });
    await screenshot('viewer-refused.png');
    await accessible('refused viewer');
  });

  step('had no page errors, nothing blocked by the CSP and no request off this machine', () => {
    assert.deepEqual(pageErrors, [], 'uncaught errors in the page');
    assert.deepEqual(cspViolations, [], 'what the node\'s Content-Security-Policy blocked');
    assert.deepEqual(offsite, [], 'requests to anywhere but loopback');
  });
});
