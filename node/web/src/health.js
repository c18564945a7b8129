// health.js: owns the health page ("/health"): how this node sees the co-operative now, for
// the people who keep it running. Each other member: connected or not, whether it is skipped
// for tile requests because it stopped answering (and for how long), and how long its last
// batch of tiles took. Then the replicas this node holds for other trusts (tiles held of the
// slide's, bytes, how old the owner's rules it decides with are) and those this trust named
// for its own slides, and the scrub's last pass. Replicas and the scrub are the node
// operator's view: a signed-on person is told so instead. The page refreshes every 5 s.

import { ApiError, getNetwork, getReplicas, getScrub } from './api.js';
import { h, notice } from './dom.js';

const REFRESH_MS = 5000;

/** A member's state as a word and a tag class: answering, not answering, not connected. */
export function memberState(member) {
  if (member.not_answering_secs != null) {
    return { text: `Not answering for ${member.not_answering_secs} s`, tag: 'down' };
  }
  if (member.connected) return { text: 'Connected', tag: 'up' };
  return { text: 'Not connected', tag: 'away' };
}

/** Bytes as people read them. */
export function size(bytes) {
  if (bytes >= 1e9) return `${(bytes / 1e9).toFixed(1)} GB`;
  if (bytes >= 1e6) return `${(bytes / 1e6).toFixed(1)} MB`;
  if (bytes >= 1e3) return `${(bytes / 1e3).toFixed(0)} kB`;
  return `${bytes} B`;
}

/** A replica's progress as text: "1,234 of 2,000 tiles (61.7%)". */
export function progress(replica) {
  const pct = replica.tiles ? (100 * replica.held) / replica.tiles : 0;
  return `${replica.held.toLocaleString('en-GB')} of ${replica.tiles.toLocaleString('en-GB')} tiles (${pct.toFixed(1)}%)`;
}

function membersTable(members) {
  if (!members.length) return notice('info', null, 'This node has no roster yet: no members to show.');
  return h('table', { class: 'referrals health-table', id: 'members-table' },
    h('caption', { class: 'visually-hidden' }, 'Members of the co-operative as this node sees them'),
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, 'Member'),
      h('th', { scope: 'col' }, 'State'),
      h('th', { scope: 'col' }, 'Last tile batch'))),
    h('tbody', {}, members.map((m) => {
      const state = memberState(m);
      return h('tr', { 'data-trust': m.trust },
        h('th', { scope: 'row' }, `${m.name} (${m.trust})`),
        h('td', {}, h('span', { class: `tag tag--health-${state.tag}` }, state.text)),
        h('td', {}, m.last_batch_ms != null ? `${m.last_batch_ms} ms` : '–'));
    })));
}

function replicasSection(replicas) {
  const held = replicas.held ?? [];
  const named = replicas.named ?? [];
  return h('div', {},
    h('h2', {}, 'Replicas held here for other trusts'),
    held.length
      ? h('table', { class: 'referrals health-table', id: 'replicas-table' },
        h('caption', { class: 'visually-hidden' }, 'Replicas held here'),
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col' }, 'Slide'),
          h('th', { scope: 'col' }, 'Owner'),
          h('th', { scope: 'col' }, 'State'),
          h('th', { scope: 'col' }, 'Held'),
          h('th', { scope: 'col' }, 'Owner\u2019s rules'))),
        h('tbody', {}, held.map((r) => h('tr', { 'data-slide': r.slide },
          h('td', {}, h('code', { title: r.slide }, `${r.slide.slice(0, 12)}…`)),
          h('td', {}, r.owner),
          h('td', {}, r.state, r.last_error ? h('div', { class: 'health-table__error' }, r.last_error) : null),
          h('td', {}, `${progress(r)}, ${size(r.bytes)}`),
          h('td', {}, r.lag_secs != null ? `${r.lag_secs} s old` : 'none yet')))))
      : h('p', { id: 'replicas-none' }, 'None.'),
    h('h2', {}, 'Replicas of this trust\u2019s slides'),
    named.length
      ? h('ul', { id: 'replicas-named' }, named.map((r) => h('li', {},
        h('code', { title: r.slide }, `${r.slide.slice(0, 12)}…`), ` at ${r.replica}`)))
      : h('p', {}, 'None named.'));
}

function scrubSection(scrub) {
  const last = scrub.last;
  const suspects = scrub.suspects ?? [];
  return h('div', {},
    h('h2', {}, 'Scrub'),
    scrub.progress?.running ? h('p', {}, 'A pass is running now.') : null,
    last
      ? h('p', { id: 'scrub-last' },
        `Last pass: ${last.originals} originals and ${last.cached_tiles} cached tiles checked, `
        + `${last.findings.length} finding(s), ${last.findings.filter((f) => !f.repaired).length} unrepaired.`)
      : h('p', { id: 'scrub-last' }, 'No pass has run yet.'),
    suspects.length
      ? notice('error', 'Originals found corrupt', `${suspects.length} original(s) are not what their ids name; their tiles are checked on every read and corrupt ones are not served.`)
      : null);
}

/** The operator's part, or why it is not shown. */
async function operatorPart(fetch, render, what) {
  try {
    return render(await fetch());
  } catch (err) {
    if (err instanceof ApiError && (err.status === 403 || err.status === 401)) {
      return notice('info', null, `${what} are the node operator's view (slidemesh on the node's machine).`);
    }
    return notice('error', `${what} unavailable`, err.message);
  }
}

async function refresh(root) {
  let network;
  try {
    network = await getNetwork();
  } catch (err) {
    root.replaceChildren(h('div', { class: 'page' }, h('h1', {}, 'Health'),
      notice('error', 'The node did not answer', err.message)));
    return;
  }
  const [replicas, scrub] = await Promise.all([
    operatorPart(getReplicas, replicasSection, 'Replicas'),
    operatorPart(getScrub, scrubSection, 'The scrub\u2019s reports'),
  ]);
  root.replaceChildren(h('div', { class: 'page' },
    h('h1', {}, 'Health'),
    h('p', {}, `Roster version ${network.roster_version ?? '–'}; tile cache ${size(network.cache?.bytes ?? 0)} `
      + `of ${size(network.cache?.capacity ?? 0)}, replicas ${size(network.cache?.pinned?.bytes ?? 0)}.`),
    h('h2', {}, 'Members'),
    membersTable(network.members ?? []),
    replicas,
    scrub));
}

export function renderHealth(root) {
  document.title = 'Health · slidemesh';
  document.getElementById('nav-health')?.setAttribute('aria-current', 'page');
  refresh(root);
  setInterval(() => refresh(root), REFRESH_MS);
}
