// app.js: owns start-up: shows the node's identity and who is signed in (with a sign-out button
// when the node signs people on itself) in the header, and picks the view from location.pathname:
// "/" (or "/index.html") is the slide list, "/view/{slide_id}" the viewer, "/referrals",
// "/referrals/new", "/referrals/queue" and "/referrals/{id}" the referral pages, "/research" the
// research query page, "/health" the health page, "/signed-out" the page after signing
// out, anything else "not found". Views link to each other with ordinary links (full
// page loads), so every view starts on a clean page and the server needs only an index.html
// fallback.

import { getMe, getNode, signInUrl, signOut } from './api.js';
import { h, notice } from './dom.js';
import { renderNewOffer, renderNewReferral, renderQueue, renderReferral, renderReferralList } from './referrals.js';
import { renderHealth } from './health.js';
import { renderResearch } from './research.js';
import { renderSlideList } from './slide-list.js';
import { renderViewer } from './slide-viewer.js';

/** Parse a pathname into { view, slideId? }. */
export function route(pathname) {
  if (pathname === '/' || pathname === '/index.html') return { view: 'list' };
  const match = /^\/view\/([^/]+)\/?$/.exec(pathname);
  if (match) return { view: 'viewer', slideId: decodeURIComponent(match[1]) };
  if (pathname === '/signed-out') return { view: 'signed-out' };
  if (pathname === '/referrals' || pathname === '/referrals/') return { view: 'referrals' };
  if (pathname === '/referrals/new') return { view: 'new-referral' };
  if (pathname === '/research' || pathname === '/research/') return { view: 'research' };
  if (pathname === '/health' || pathname === '/health/') return { view: 'health' };
  if (pathname === '/referrals/queue') return { view: 'queue' };
  if (pathname === '/referrals/offer') return { view: 'new-offer' };
  const referral = /^\/referrals\/([^/]+)\/?$/.exec(pathname);
  if (referral) return { view: 'referral', referralId: decodeURIComponent(referral[1]) };
  return { view: 'not-found' };
}

/** Who is signed in, and a sign-out button when the node keeps the session. */
function showMe(me) {
  const el = document.getElementById('signed-in');
  if (!el || !me?.user) return;
  const button = me.logout
    ? h('button', {
      type: 'button',
      class: 'signed-in__out',
      id: 'sign-out',
      onclick: async () => {
        button.disabled = true;
        window.location.assign(await signOut());
      },
    }, 'Sign out')
    : null;
  // replaceChildren would show a missing button as the text "null".
  el.replaceChildren(...[
    h('span', { class: 'signed-in__who', title: `Signed in at ${me.trust}` },
      h('span', { class: 'signed-in__user' }, me.user), ' · ', h('span', { class: 'signed-in__role' }, me.role)),
    button,
  ].filter(Boolean));
  el.hidden = false;
}

function renderSignedOut(root) {
  document.title = 'Signed out · slidemesh';
  root.replaceChildren(h('div', { class: 'page' }, h('h1', {}, 'You have signed out'),
    notice('info', null, h('p', {}, 'Your session on this node has ended. ',
      h('a', { href: '/auth/login?next=%2F', id: 'sign-in-again' }, 'Sign in again'), '.'))));
}

function showNode(node) {
  const el = document.getElementById('node-id');
  if (!el) return;
  if (!node) {
    el.textContent = 'Node identity unavailable';
    return;
  }
  el.replaceChildren(
    h('span', { class: 'node-id__name' }, node.trust_name ?? node.trust),
    h('span', { class: 'node-id__code', title: `NHS ODS code; node ${node.peer_id ?? ''} v${node.version ?? '?'}` }, node.trust));
}

function main() {
  const root = document.getElementById('app');
  // The node info is only decoration for the views, so a failure yields null instead of an error page.
  const nodePromise = getNode().catch((err) => {
    console.warn('node info unavailable:', err);
    return null;
  });
  nodePromise.then(showNode);

  const where = route(window.location.pathname);
  if (where.view === 'signed-out') {
    renderSignedOut(root);
    return;
  }
  // Who this browser acts for; without a session where the node signs people on, getMe sends the
  // page to sign in. Any other failure leaves the header without a name.
  getMe().then(showMe).catch((err) => console.warn('who is signed in is unknown:', err));

  if (where.view === 'list') {
    document.getElementById('nav-slides')?.setAttribute('aria-current', 'page');
    renderSlideList(root, nodePromise);
  } else if (where.view === 'viewer') {
    renderViewer(root, where.slideId, nodePromise);
  } else if (where.view === 'referrals') {
    renderReferralList(root);
  } else if (where.view === 'queue') {
    renderQueue(root);
  } else if (where.view === 'new-referral') {
    renderNewReferral(root, nodePromise);
  } else if (where.view === 'new-offer') {
    renderNewOffer(root, nodePromise);
  } else if (where.view === 'referral') {
    renderReferral(root, where.referralId);
  } else if (where.view === 'research') {
    renderResearch(root);
  } else if (where.view === 'health') {
    renderHealth(root);
  } else {
    document.title = 'Page not found · slidemesh';
    root.replaceChildren(h('div', { class: 'page' }, h('h1', {}, 'Page not found'),
      notice('info', null, h('p', {}, 'There is nothing at this address. ', h('a', { href: '/' }, 'Go to the slide list'), '.'))));
  }
}

main();
