// Events: the newest first, a page at a time, searchable by event id and
// by the source's own id (a muapi task id); and one event in detail.

import { api, query } from './api.js';
import { h, badge, table, state, when, time, duration, bytes } from './dom.js';
import { REFRESH_MS } from './subscribers.js';

const PAGE = 25;
const EVENT_ID = /^[A-Za-z0-9_-]{22}$/;
const STATE = { delivered: 'ok', pending: 'warn', dead: 'bad', deleted: 'muted' };

function eventLink(id) {
  return h('a', { href: `#/event/${encodeURIComponent(id)}`, class: 'mono' }, id);
}

function deliveries(list) {
  if (!list.length) {
    return h('span', { class: 'muted' }, 'no subscriber matched');
  }
  return list.map((d) => badge(STATE[d.state] || 'muted',
    `${d.subscriber}: ${d.state}${d.attempts ? ` (${d.attempts})` : ''}`,
    { 'data-subscriber': d.subscriber, 'data-delivery-state': d.state }));
}

function row(e) {
  return h('tr', { 'data-event-id': e.event_id },
    h('td', {}, when(e.received_ms)),
    h('td', {}, e.route),
    h('td', {}, eventLink(e.event_id)),
    h('td', { class: 'mono' }, e.source_id || ''),
    h('td', {}, e.status || ''),
    h('td', {}, e.origin),
    h('td', { class: 'num' }, bytes(e.body_len)),
    h('td', { class: 'badges' }, deliveries(e.deliveries)));
}

/** The summary row of an event found by its id. */
function summary(data) {
  const e = data.event;
  return {
    ...e,
    deliveries: (data.deliveries || []).map((d) => ({
      subscriber: d.subscriber, state: d.state, attempts: d.attempts,
    })),
  };
}

export function eventsPage(ctx) {
  const p = ctx.params;
  const q = (p.get('q') || '').trim();
  const routeName = p.get('route') || '';
  const before = p.get('before') || '';
  let stopped = false;

  const input = h('input', {
    id: 'search', type: 'search', name: 'q', value: q, size: 40,
    placeholder: 'event id or source id (muapi task id)', 'aria-label': 'Search',
  });
  const routes = h('select', { id: 'route', name: 'route', 'aria-label': 'Route' },
    h('option', { value: '' }, 'all routes'));
  if (routeName) {
    routes.appendChild(h('option', { value: routeName, selected: true }, routeName));
  }
  const form = h('form', { class: 'filters', role: 'search' },
    input, routes, h('button', { type: 'submit', id: 'search-submit' }, 'Search'),
    q || routeName ? h('a', { href: '#/events', class: 'button quiet' }, 'Clear') : null);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    ctx.go(`#/events${query({ q: input.value.trim(), route: routes.value })}`);
  });
  const body = h('div');
  ctx.main.replaceChildren(h('div', { class: 'title' }, h('h1', {}, 'Events')), form, body);

  // The route list comes from the subscribers' rows (every route with one).
  api('subscribers').then((data) => {
    const names = [...new Set((data.subscribers || []).map((s) => s.route))].sort();
    for (const name of names) {
      if (name !== routeName) routes.appendChild(h('option', { value: name }, name));
    }
  }).catch(() => {});

  async function load() {
    try {
      const found = [];
      let next = null;
      if (q && EVENT_ID.test(q)) {
        try {
          found.push(summary(await api(`events/${encodeURIComponent(q)}`)));
        } catch (e) {
          if (e.status !== 404) throw e;
        }
      }
      const page = await api(`events${query({
        route: routeName, source_id: q, before, limit: PAGE,
      })}`);
      if (stopped) return;
      ctx.ok();
      for (const e of page.events || []) {
        if (!found.some((f) => f.event_id === e.event_id)) found.push(e);
      }
      next = page.next_before || null;
      if (found.length === 0) {
        body.replaceChildren(q
          ? state('empty', 'No event found.',
            'No event has the id or source id ', h('code', {}, q),
            routeName ? ` on route ${routeName}` : '', '.')
          : state('empty', before ? 'No older events.' : 'No events yet.',
            'Callbacks the ingress accepted appear here, newest first.'));
        return;
      }
      const pager = h('div', { class: 'pager' },
        before ? h('a', { class: 'button quiet', href: `#/events${query({ q, route: routeName })}` }, '« Newest') : null,
        next ? h('a', { class: 'button quiet', id: 'older', href: `#/events${query({ q, route: routeName, before: next })}` }, 'Older »') : null);
      body.replaceChildren(
        table(['Received', 'Route', 'Event', 'Source id', 'Status', 'Origin', 'Body', 'Deliveries'],
          found.map(row), { id: 'events', class: 'wide' }),
        pager);
    } catch (e) {
      if (!stopped) ctx.fail(e, body);
    }
  }
  load();
  return () => {
    stopped = true;
  };
}

/** The body as text: JSON pretty-printed, anything else as received. */
function prettyBody(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

/** One delivery's attempts, oldest first, and what comes next. */
function timeline(d) {
  const items = d.history.map((a, i) => {
    const result = a.status !== undefined
      ? badge(a.status >= 200 && a.status < 300 ? 'ok' : 'bad', `HTTP ${a.status}`)
      : badge('bad', 'error');
    const later = d.history[i + 1];
    return h('li', { 'data-attempt': a.attempt },
      h('span', { class: 'when' }, `#${a.attempt} `, when(a.at_ms)),
      ' ', result,
      a.error ? h('span', { class: 'error-text' }, ` ${a.error}`) : null,
      h('span', { class: 'muted' }, ` in ${duration(a.duration_ms)}`),
      later ? h('span', { class: 'muted' }, ` · next attempt at ${time(later.at_ms)}`) : null);
  });
  let end;
  if (d.state === 'pending') {
    end = h('li', { class: 'next', 'data-next': 'pending' },
      'Next attempt due ', when(d.due_ms));
  } else if (d.state === 'delivered') {
    end = h('li', { class: 'next', 'data-next': 'delivered' }, badge('ok', 'delivered'),
      ' ', when(d.updated_ms));
  } else {
    end = h('li', { class: 'next', 'data-next': d.state }, badge(STATE[d.state], d.state),
      d.dead_reason ? h('span', { class: 'error-text' }, ` ${d.dead_reason}`) : null,
      ' ', when(d.updated_ms));
  }
  return h('ol', { class: 'timeline' }, items, end);
}

function delivery(d) {
  const shown = d.history.length < d.attempts
    ? h('p', { class: 'muted' }, `The newest ${d.history.length} of ${d.attempts} attempts.`)
    : null;
  return h('section', { class: 'delivery', 'data-subscriber': d.subscriber, 'data-state': d.state },
    h('h3', {}, d.subscriber, ' ', badge(STATE[d.state] || 'muted', d.state)),
    h('p', { class: 'muted' }, `Delivery ${d.id} · ${d.attempts} attempt${d.attempts === 1 ? '' : 's'} since ${time(d.schedule_start_ms)}`),
    shown,
    d.history.length === 0 && d.state === 'pending'
      ? h('p', {}, 'Not attempted yet; due ', when(d.due_ms))
      : timeline(d));
}

function detail(data) {
  const e = data.event;
  const facts = [
    ['Route', e.route], ['Received', when(e.received_ms)], ['Source id', e.source_id || '—'],
    ['Status', e.status || '—'], ['Origin', e.origin], ['Body', bytes(e.body_len)],
    ['Open deliveries', String(e.open)],
  ];
  const headers = e.headers || [];
  return [
    h('dl', { class: 'facts' }, facts.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
    h('h2', {}, 'Deliveries'),
    data.deliveries.length
      ? data.deliveries.map(delivery)
      : h('p', { class: 'muted' }, 'No subscriber matched this event.'),
    e.pruned
      ? state('empty', 'Details pruned.',
        'This event is older than store.retention: its body, headers and attempts are gone; only its id is kept to recognise duplicates.')
      : [
        h('h2', {}, 'Headers'),
        headers.length
          ? table(['Name', 'Value'], headers.map(([k, v]) => h('tr', {},
            h('td', { class: 'mono' }, k), h('td', { class: 'mono' }, v))), { id: 'headers' })
          : h('p', { class: 'muted' }, 'No headers kept.'),
        h('h2', {}, 'Body'),
        h('pre', { id: 'body', class: 'body' }, e.body === undefined ? '' : prettyBody(e.body)),
      ],
  ];
}

export function eventPage(ctx) {
  const id = ctx.arg || '';
  let stopped = false;
  let timer = null;
  let drawn = false;
  let shown = '';
  const stamp = h('span', { class: 'muted' });
  const body = h('div');
  ctx.main.replaceChildren(
    h('p', {}, h('a', { href: '#/events' }, '« Events')),
    h('div', { class: 'title' }, h('h1', {}, 'Event ', h('span', { class: 'mono', id: 'event-id' }, id)), stamp),
    body);

  async function load() {
    let pending = false;
    try {
      const data = await api(`events/${encodeURIComponent(id)}`);
      if (stopped) return;
      ctx.ok();
      // Redraw only on a change, so a reader's scroll position stays put.
      const seen = JSON.stringify(data);
      if (seen !== shown) {
        body.replaceChildren(...detail(data).flat(2));
        shown = seen;
      }
      stamp.textContent = `Updated ${time(Date.now())}`;
      pending = data.deliveries.some((d) => d.state === 'pending');
      drawn = true;
    } catch (e) {
      if (stopped) return;
      if (e.status === 404) {
        body.replaceChildren(state('empty', 'No such event.',
          'No event has the id ', h('code', {}, id), '. It may never have arrived, or its key outlived idempotency.ttl.'));
        return;
      }
      ctx.fail(e, drawn ? null : body);
      if (e.kind === 'unauthorized') return;
      pending = true;
    }
    // While a delivery is still pending, follow it.
    if (pending && !stopped) {
      timer = setTimeout(load, REFRESH_MS);
    }
  }
  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
