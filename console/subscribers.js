// Subscribers: one row per (route, subscriber), refreshed every few seconds.

import { api, query } from './api.js';
import { h, badge, table, state, when, time } from './dom.js';

/** How often the page asks again, in ms. */
export const REFRESH_MS = 3000;

const CIRCUIT = { closed: 'ok', open: 'bad', half_open: 'warn' };

function row(s) {
  const deadLink = s.dead_letters > 0
    ? h('a', { href: `#/dead-letters${query({ route: s.route, subscriber: s.subscriber })}` },
      String(s.dead_letters))
    : '0';
  const name = [h('span', { class: 'name' }, s.subscriber)];
  if (!s.configured) {
    name.push(' ', badge('warn', `not configured: ${s.orphaned} orphaned`,
      { title: 'Pending deliveries of a subscriber missing from the config: they wait until it returns or an operator resolves them (POST /api/v1/orphans/resolve).' }));
  }
  const lastError = s.last_error
    ? [h('span', { class: 'error-text' }, s.last_error), h('br'), when(s.last_error_ms)]
    : h('span', { class: 'muted' }, 'none');
  return h('tr', { 'data-route': s.route, 'data-subscriber': s.subscriber },
    h('td', {}, s.route),
    h('td', {}, name),
    h('td', { 'data-field': 'circuit' },
      badge(CIRCUIT[s.circuit] || 'warn', s.circuit.replace('_', '-'))),
    h('td', { class: 'num', 'data-field': 'pending' }, String(s.pending)),
    h('td', { class: 'num', 'data-field': 'in_flight' }, String(s.in_flight)),
    h('td', { class: 'num', 'data-field': 'dead_letters' }, deadLink),
    h('td', { class: 'num', 'data-field': 'delivered_5m' }, String(s.delivered_5m)),
    h('td', { class: 'num', 'data-field': 'failed_5m' },
      s.failed_5m > 0 ? h('span', { class: 'error-text' }, String(s.failed_5m)) : '0'),
    h('td', { 'data-field': 'last_error' }, lastError),
    h('td', { 'data-field': 'last_success' }, when(s.last_success_ms)));
}

export function subscribersPage(ctx) {
  let timer = null;
  let stopped = false;
  let drawn = false;
  const stamp = h('span', { class: 'muted', id: 'updated' });
  const body = h('div');
  ctx.main.replaceChildren(
    h('div', { class: 'title' }, h('h1', {}, 'Subscribers'), stamp),
    h('p', { class: 'muted' },
      'Pending and dead letters come from the store (all replicas); circuit, in flight and the last 5 minutes are this instance\'s. Refreshes every few seconds.'),
    body);

  async function load() {
    try {
      const data = await api('subscribers');
      if (stopped) return;
      ctx.ok();
      const rows = data.subscribers || [];
      body.replaceChildren(rows.length === 0
        ? state('empty', 'No subscribers.',
          'Neither the config nor the store has any subscriber. Add routes[].subscribers to the config and reload (SIGHUP or POST /api/v1/reload).')
        : table(['Route', 'Subscriber', 'Circuit', 'Pending', 'In flight', 'Dead letters',
          'Delivered 5 min', 'Failed 5 min', 'Last error', 'Last success'],
        rows.map(row), { id: 'subscribers', class: 'wide' }));
      stamp.textContent = `Updated ${time(Date.now())}`;
      drawn = true;
    } catch (e) {
      if (stopped) return;
      ctx.fail(e, drawn ? null : body);
      if (e.kind === 'unauthorized') return;
    }
    if (!stopped) {
      timer = setTimeout(load, REFRESH_MS);
    }
  }
  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
