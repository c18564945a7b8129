// app.js: owns start-up: shows the node's identity in the header and picks the view from
// location.pathname: "/" (or "/index.html") is the slide list, "/view/{slide_id}" the viewer,
// anything else "not found". Views link to each other with ordinary links (full page loads), so
// every view starts on a clean page and the server needs only an index.html fallback.

import { getNode } from './api.js';
import { h, notice } from './dom.js';
import { renderSlideList } from './slide-list.js';
import { renderViewer } from './slide-viewer.js';

/** Parse a pathname into { view, slideId? }. */
export function route(pathname) {
  if (pathname === '/' || pathname === '/index.html') return { view: 'list' };
  const match = /^\/view\/([^/]+)\/?$/.exec(pathname);
  if (match) return { view: 'viewer', slideId: decodeURIComponent(match[1]) };
  return { view: 'not-found' };
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
  if (where.view === 'list') {
    document.getElementById('nav-slides')?.setAttribute('aria-current', 'page');
    renderSlideList(root, nodePromise);
  } else if (where.view === 'viewer') {
    renderViewer(root, where.slideId, nodePromise);
  } else {
    document.title = 'Page not found · slidemesh';
    root.replaceChildren(h('div', { class: 'page' }, h('h1', {}, 'Page not found'),
      notice('info', null, h('p', {}, 'There is nothing at this address. ', h('a', { href: '/' }, 'Go to the slide list'), '.'))));
  }
}

main();
