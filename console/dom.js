// Building the page. Every string goes into the DOM as a text node or an
// attribute value, never as HTML: bodies, headers and error texts come from
// webhook senders and subscribers and are untrusted.

/**
 * `h('a', { href: '#/x', class: 'c' }, 'text', child)`: an element with
 * attributes (`on…` keys become listeners) and children (strings become
 * text nodes; null and false are skipped; arrays are flattened).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) {
      continue;
    }
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'style') {
      throw new Error('inline styles are not allowed by the page policy');
    } else if (value === true) {
      el.setAttribute(key, '');
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    if (Array.isArray(child)) {
      append(el, child);
    } else if (child instanceof Node) {
      el.appendChild(child);
    } else {
      el.appendChild(document.createTextNode(String(child)));
    }
  }
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

/** Local time `YYYY-MM-DD HH:MM:SS` of a unix-ms time. */
export function time(ms) {
  if (ms === undefined || ms === null) {
    return '—';
  }
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} `
    + `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** `5 s ago`, `in 3 min` … of a unix-ms time. */
export function relative(ms, now = Date.now()) {
  if (ms === undefined || ms === null) {
    return '';
  }
  const diff = Math.round((ms - now) / 1000);
  const abs = Math.abs(diff);
  let text;
  if (abs < 60) text = `${abs} s`;
  else if (abs < 3600) text = `${Math.round(abs / 60)} min`;
  else if (abs < 86400 * 2) text = `${Math.round(abs / 3600)} h`;
  else text = `${Math.round(abs / 86400)} d`;
  return diff <= 0 ? `${text} ago` : `in ${text}`;
}

/** A time with its relative form: `<time>2026-… (5 s ago)</time>`. */
export function when(ms) {
  if (ms === undefined || ms === null) {
    return h('span', { class: 'muted' }, 'never');
  }
  return h('time', { datetime: new Date(ms).toISOString(), title: new Date(ms).toISOString() },
    time(ms), h('span', { class: 'muted' }, ` (${relative(ms)})`));
}

/** `850 ms`, `2.4 s`. */
export function duration(ms) {
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

/** `12 B`, `3.4 KiB` … */
export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** A coloured label: `badge state-dead`. */
export function badge(kind, text, extra = {}) {
  return h('span', { class: `badge ${kind}`, ...extra }, text);
}

/** A table from a header row and body rows (arrays of cells or <tr>s). */
export function table(headers, rows, attrs = {}) {
  return h('table', attrs,
    h('thead', {}, h('tr', {}, headers.map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', {}, rows));
}

/** A big message in place of a page's content (empty or error state). */
export function state(kind, title, ...text) {
  return h('div', { class: `state ${kind}`, 'data-state': kind },
    h('h2', {}, title), text.length ? h('p', {}, ...text) : null);
}

const byId = (id) => document.getElementById(id);

/** Asks before a change; resolves to true when confirmed. */
export function confirmAction(text, ok = 'Confirm') {
  const dialog = byId('confirm');
  byId('confirm-text').textContent = text;
  byId('confirm-ok').textContent = ok;
  return new Promise((resolve) => {
    const done = (answer) => () => {
      byId('confirm-ok').onclick = null;
      byId('confirm-cancel').onclick = null;
      dialog.onclose = null;
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    byId('confirm-ok').onclick = done(true);
    byId('confirm-cancel').onclick = done(false);
    dialog.onclose = done(false);
    dialog.showModal();
  });
}
