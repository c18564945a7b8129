// api.js: owns every HTTP call the UI makes to the node's JSON API (/api/v1/..., /auth/...) and
// the tile URL scheme. Views call these functions and never build API URLs themselves. When people
// sign on at the node itself ([users] from = "oidc"), every POST carries the session's CSRF token
// (X-CSRF-Token, from /auth/me), and an answer saying the session is gone sends the page to sign in.

/** A non-2xx answer from the node, keeping the status so views can tell "not found" from "broken". */
export class ApiError extends Error {
  constructor(url, status, detail) {
    super(`${url} answered ${status}${detail ? `: ${detail}` : ''}`);
    this.name = 'ApiError';
    this.url = url;
    this.status = status;
    this.detail = detail;
  }
}

/** What an error answer says: the node's JSON `error`, else the start of the body. */
async function errorDetail(res) {
  const text = await res.text().catch(() => '');
  try {
    const message = JSON.parse(text)?.error;
    if (typeof message === 'string') return message.slice(0, 400);
  } catch { /* not JSON */ }
  return text.slice(0, 200);
}

/** The session's CSRF token, once /auth/me has said it; sent with every POST. */
let csrfToken = null;

/** Where the browser goes to sign in, coming back to the page it is on now. */
export function signInUrl() {
  return `/auth/login?next=${encodeURIComponent(window.location.pathname + window.location.search)}`;
}

/**
 * A 401 that names a sign-in (the node signs people on itself and this browser's session ended or
 * never was): go there. Other 401s (behind a sign-on proxy) are errors like any other.
 */
async function signInIfAsked(res) {
  if (res.status !== 401) return;
  const body = await res.clone().json().catch(() => null);
  if (body?.login) window.location.assign(signInUrl());
}

async function getJson(url) {
  const res = await fetch(url, { headers: { Accept: 'application/json' } });
  if (!res.ok) {
    await signInIfAsked(res);
    throw new ApiError(url, res.status, await errorDetail(res));
  }
  return res.json();
}

/** A POST with a JSON body (and the session's CSRF token); resolves to the Response. */
async function postJson(url, body) {
  const headers = { 'Content-Type': 'application/json', Accept: 'application/json' };
  if (csrfToken) headers['X-CSRF-Token'] = csrfToken;
  const res = await fetch(url, { method: 'POST', headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (!res.ok) await signInIfAsked(res);
  return res;
}

/**
 * Who this browser acts for: { sign_on: "none" | "proxy" | "oidc", trust, user, role, logout,
 * csrf_token?, expires_in? } (user null: the trust itself). Keeps the CSRF token for later POSTs.
 * Without a session where the node signs people on, the page goes to sign in.
 */
export async function getMe() {
  const me = await getJson('/auth/me');
  csrfToken = me?.csrf_token ?? null;
  return me;
}

/** Ends the session here; resolves to where the browser goes next (the provider's sign-out, or /signed-out). */
export async function signOut() {
  const res = await postJson('/auth/logout');
  const body = await res.json().catch(() => ({}));
  return res.ok && body.redirect ? body.redirect : '/signed-out';
}

/** How this node sees the co-operative: { members, network, cache, roster_version, not_answering }. */
export function getNetwork() {
  return getJson('/api/v1/network');
}

/** Replicas held here and named for this trust's slides (the node operator only). */
export function getReplicas() {
  return getJson('/api/v1/replicas');
}

/** The scrub's progress, last report and suspect originals (the node operator only). */
export function getScrub() {
  return getJson('/api/v1/scrub');
}

/** This node's identity: { trust, trust_name, peer_id, version }. */
export function getNode() {
  return getJson('/api/v1/node');
}

/** Every slide this node can show: its own and those shared with its trust. */
export async function listSlides() {
  const body = await getJson('/api/v1/slides');
  return Array.isArray(body?.slides) ? body.slides : [];
}

/** One slide with its pyramid levels, pixel spacing and label/overview URLs. */
export function getSlide(slideId) {
  return getJson(`/api/v1/slides/${encodeURIComponent(slideId)}`);
}

/** The audit trail about a slide, newest first: { total, entries: [{ time, side, peer, purpose, action, allowed, rules }] }. */
export function getAccessHistory(slideId) {
  return getJson(`/api/v1/slides/${encodeURIComponent(slideId)}/access`);
}

/** URL of one tile; `level` is the DICOM level index (0 = full resolution). */
export function tileUrl(slideId, level, col, row) {
  return `/api/v1/slides/${encodeURIComponent(slideId)}/levels/${level}/tiles/${col}/${row}`;
}

/**
 * Tells the node which tiles of a level the viewer is about to show ({ cols: [first, last],
 * rows: [first, last] }), so a shared slide's tiles come from the owner in one batch. Best
 * effort: a failure only means the tiles come one request at a time.
 */
export function postWanted(slideId, level, region) {
  const url = `/api/v1/slides/${encodeURIComponent(slideId)}/levels/${level}/wanted`;
  return postJson(url, region).catch(() => undefined);
}

/**
 * Fetches every tile of a shared slide into this node's cache now; resolves when done to
 * { tiles, fetched, ... } or rejects with an ApiError.
 */
export async function cacheWholeSlide(slideId) {
  const url = `/api/v1/slides/${encodeURIComponent(slideId)}/cache`;
  const res = await postJson(url);
  if (!res.ok) throw new ApiError(url, res.status, await errorDetail(res));
  return res.json();
}

/** The viewer page of a slide (served by the node as index.html; see app.js). */
export function viewerPath(slideId) {
  return `/view/${encodeURIComponent(slideId)}`;
}

/** The referrals this browser's person may see: `box` is "inbox" (received), "sent" or undefined (both). */
export async function listReferrals(box) {
  const body = await getJson(`/api/v1/referrals${box ? `?box=${encodeURIComponent(box)}` : ''}`);
  return Array.isArray(body?.referrals) ? body.referrals : [];
}

/** One referral with its history and any opinion. */
export function getReferral(id) {
  return getJson(`/api/v1/referrals/${encodeURIComponent(id)}`);
}

/** POSTs and answers the JSON body, or throws an ApiError naming what the node said. */
async function postForJson(url, body) {
  const res = await postJson(url, body);
  if (!res.ok) throw new ApiError(url, res.status, await errorDetail(res));
  return res.json();
}

/**
 * Sends a referral: { to, recipient: { queue } | { specialist }, slides, question, urgency,
 * report, expires_at? }; resolves to the referral as stored.
 */
export function sendReferral(form) {
  return postForJson('/api/v1/referrals', form);
}

/**
 * A step on a referral: "open", "close", "withdraw", or "answer" with
 * { text, diagnosis?: { code, display } }; resolves to the referral after it.
 */
export function referralStep(id, step, body) {
  return postForJson(`/api/v1/referrals/${encodeURIComponent(id)}/${step}`, body);
}

/** The page of one referral, and of the form that sends one (optionally with a slide ticked). */
export function referralPath(id) {
  return `/referrals/${encodeURIComponent(id)}`;
}
export function newReferralPath(slideId) {
  return `/referrals/new${slideId ? `?slide=${encodeURIComponent(slideId)}` : ''}`;
}

/** Every member's referral directory: [{ trust, queues: [{ name, title }], specialists: [{ account, name, queues, covered_by }] }]. */
export async function getDirectory() {
  const body = await getJson('/api/v1/directory');
  return Array.isArray(body?.trusts) ? body.trusts : [];
}

/** The co-operative's reporting queue: { trust (this node's), queues: [{ queue, open, taken, median_wait_secs, median_turnaround_secs }], offers: [...] }. */
export function getOffers() {
  return getJson('/api/v1/offers');
}

/** Offers a case of this trust to the shared queue: { queue, slides, question, urgency, report }. */
export function sendOffer(form) {
  return postForJson('/api/v1/offers', form);
}

/** Claims an offered case for this browser's person; resolves to the offer as it now stands. */
export function claimOffer(id) {
  return postForJson(`/api/v1/offers/${encodeURIComponent(id)}/claim`);
}

/**
 * Asks every member a research query: { query: text or JSON form, ethics? }; resolves to
 * { query, id, group_by, complete, sites: [{ trust, status, reason?, cells?, min_cell?,
 * noise?, unlisted_below? }], combined: [{ key, count, below_at }] }. A malformed query
 * throws an ApiError whose detail draws a caret under the offending token.
 */
export function researchQuery(body) {
  return postForJson('/api/v1/research/query', body);
}

/**
 * Asks every other member for an approved project's cohort: { project, query }; resolves to
 * { project, query, labels, complete, slides, sites: [{ trust, status, slides?, reason? }] }.
 */
export function buildCohort(body) {
  return postForJson('/api/v1/research/cohorts', body);
}

/**
 * A project's cohort as this node keeps it: { project, members: [{ site, slide, patient,
 * labels, grant, opened }] }.
 */
export function getCohort(project) {
  return getJson(`/api/v1/research/cohorts?project=${encodeURIComponent(project)}`);
}
