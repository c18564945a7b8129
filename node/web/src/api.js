// api.js: owns every HTTP call the UI makes to the node's JSON API (/api/v1/...) and the
// tile URL scheme. Views call these functions and never build API URLs themselves.

/** A non-2xx answer from the node, keeping the status so views can tell "not found" from "broken". */
export class ApiError extends Error {
  constructor(url, status, detail) {
    super(`${url} answered ${status}${detail ? `: ${detail}` : ''}`);
    this.name = 'ApiError';
    this.url = url;
    this.status = status;
  }
}

async function getJson(url) {
  const res = await fetch(url, { headers: { Accept: 'application/json' } });
  if (!res.ok) {
    // The body may explain the error (plain text or JSON); keep it short for the message.
    const detail = (await res.text().catch(() => '')).slice(0, 200);
    throw new ApiError(url, res.status, detail);
  }
  return res.json();
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
  return fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(region),
  }).catch(() => undefined);
}

/** The viewer page of a slide (served by the node as index.html; see app.js). */
export function viewerPath(slideId) {
  return `/view/${encodeURIComponent(slideId)}`;
}
