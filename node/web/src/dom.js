// dom.js: owns the small DOM-building helper every view uses. Values always go in as text nodes or
// attributes, never as HTML, because slide metadata comes from DICOM headers written by other
// trusts' scanners and must not be able to inject markup.

/**
 * Create an element: h('a', { class: 'x', href: '/' }, 'text', childNode, [more, children]).
 * Attributes that are null, undefined or false are left out; true becomes an empty attribute.
 * Keys starting with "on" and holding a function become event listeners.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value == null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** A definition list row pair (<div><dt/><dd/></div>); rows without a value are skipped. */
export function metaRows(rows) {
  return rows
    .filter(([, value]) => value != null && value !== '')
    .map(([term, value, attrs]) => h('div', { class: 'meta__row' }, h('dt', {}, term), h('dd', attrs ?? {}, value)));
}

/** Replace a container's content with a notice (kind: info | error | empty). */
export function notice(kind, title, ...body) {
  return h('div', { class: `notice notice--${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    title ? h('p', { class: 'notice__title' }, title) : null,
    ...body.map((text) => (text instanceof Node ? text : h('p', {}, text))));
}
