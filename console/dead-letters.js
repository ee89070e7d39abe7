// Dead letters: filter by route and subscriber, select some (or all of one
// subscriber), replay or delete them after a confirmation.

import { api, query } from './api.js';
import { h, table, state, when, confirmAction } from './dom.js';

const LIMIT = 100;
const MAX_LIMIT = 1000;

function lastAttempt(d) {
  const a = d.history[d.history.length - 1];
  if (!a) return h('span', { class: 'muted' }, 'none');
  return [a.status !== undefined ? `HTTP ${a.status}` : (a.error || 'error'), ' · ', when(a.at_ms)];
}

export function deadLettersPage(ctx) {
  const p = ctx.params;
  const routeName = p.get('route') || '';
  const subscriberName = p.get('subscriber') || '';
  const limit = Math.min(Math.max(Math.trunc(Number(p.get('limit'))) || LIMIT, 1), MAX_LIMIT);
  let stopped = false;
  let letters = [];
  const selected = new Set();

  const routes = h('select', { id: 'dl-route', 'aria-label': 'Route' }, h('option', { value: '' }, 'all routes'));
  const subscribers = h('select', { id: 'dl-subscriber', 'aria-label': 'Subscriber' }, h('option', { value: '' }, 'all subscribers'));
  const filter = () => ctx.go(`#/dead-letters${query({ route: routes.value, subscriber: subscribers.value })}`);
  routes.addEventListener('change', () => {
    subscribers.value = '';
    filter();
  });
  subscribers.addEventListener('change', filter);

  const count = h('span', { id: 'selected-count', class: 'muted' }, 'none selected');
  const replaySel = h('button', { id: 'replay-selected', type: 'button', disabled: true }, 'Replay selected');
  const deleteSel = h('button', { id: 'delete-selected', type: 'button', class: 'danger', disabled: true }, 'Delete selected');
  const one = routeName && subscriberName;
  const replayAll = one ? h('button', { id: 'replay-all', type: 'button' }, `Replay all of ${routeName}/${subscriberName}`) : null;
  const deleteAll = one ? h('button', { id: 'delete-all', type: 'button', class: 'danger' }, `Delete all of ${routeName}/${subscriberName}`) : null;
  const body = h('div');
  ctx.main.replaceChildren(
    h('div', { class: 'title' }, h('h1', {}, 'Dead letters')),
    h('p', { class: 'muted' }, 'Deliveries given up (410 Gone, or retries exhausted). A replay puts them back to pending with a fresh retry schedule; a delete drops them for good.'),
    h('div', { class: 'filters' }, routes, subscribers),
    h('div', { class: 'actions' }, replaySel, deleteSel, count, replayAll, deleteAll),
    body);

  function refreshSelection() {
    const n = selected.size;
    count.textContent = n ? `${n} selected` : 'none selected';
    replaySel.disabled = n === 0;
    deleteSel.disabled = n === 0;
    for (const box of body.querySelectorAll('input[data-id]')) {
      box.checked = selected.has(box.dataset.id);
    }
    const all = body.querySelector('#select-all');
    if (all) {
      all.checked = letters.length > 0 && selected.size === letters.length;
      all.indeterminate = selected.size > 0 && selected.size < letters.length;
    }
  }

  async function act(kind, selector, what) {
    const verb = kind === 'replay' ? 'Replay' : 'Delete';
    const text = kind === 'replay'
      ? `Replay ${what}? They go back to pending and are delivered again with a fresh retry schedule.`
      : `Delete ${what}? They are dropped for good and never delivered.`;
    if (!(await confirmAction(text, verb))) return;
    try {
      const answer = await api(`dead-letters/${kind}`, { method: 'POST', body: selector });
      ctx.ok();
      const n = kind === 'replay' ? answer.requeued : answer.deleted;
      const asked = selector.ids ? selector.ids.length : null;
      let message = `${kind === 'replay' ? 'Requeued' : 'Deleted'} ${n} dead letter${n === 1 ? '' : 's'}`;
      if (asked !== null && n < asked) {
        message += ` of ${asked} selected (the others were no longer dead letters)`;
      }
      ctx.notice(`${message}.`);
      selected.clear();
      await load();
    } catch (e) {
      ctx.fail(e);
    }
  }

  replaySel.addEventListener('click', () => act('replay', { ids: [...selected] }, `${selected.size} selected dead letter${selected.size === 1 ? '' : 's'}`));
  deleteSel.addEventListener('click', () => act('delete', { ids: [...selected] }, `${selected.size} selected dead letter${selected.size === 1 ? '' : 's'}`));
  if (one) {
    const selector = { route: routeName, subscriber: subscriberName };
    replayAll.addEventListener('click', () => act('replay', selector, `every dead letter of ${routeName}/${subscriberName}`));
    deleteAll.addEventListener('click', () => act('delete', selector, `every dead letter of ${routeName}/${subscriberName}`));
  }

  // The filter choices: every (route, subscriber) the store or config has.
  api('subscribers').then((data) => {
    const rows = data.subscribers || [];
    const names = [...new Set(rows.map((s) => s.route))].sort();
    if (routeName && !names.includes(routeName)) names.push(routeName);
    for (const name of names) {
      routes.appendChild(h('option', { value: name, selected: name === routeName }, name));
    }
    const subs = [...new Set(rows.filter((s) => !routeName || s.route === routeName).map((s) => s.subscriber))].sort();
    if (subscriberName && !subs.includes(subscriberName)) subs.push(subscriberName);
    for (const name of subs) {
      subscribers.appendChild(h('option', { value: name, selected: name === subscriberName }, name));
    }
  }).catch(() => {});

  function draw() {
    if (letters.length === 0) {
      const scope = [routeName, subscriberName].filter(Boolean).join('/');
      body.replaceChildren(state('empty', 'No dead letters.',
        scope ? `Nothing was given up for ${scope}.` : 'Every delivery so far was delivered or is still being retried.'));
      if (replayAll) replayAll.disabled = true;
      if (deleteAll) deleteAll.disabled = true;
      refreshSelection();
      return;
    }
    if (replayAll) replayAll.disabled = false;
    if (deleteAll) deleteAll.disabled = false;
    const all = h('input', { type: 'checkbox', id: 'select-all', 'aria-label': 'Select all shown' });
    all.addEventListener('change', () => {
      selected.clear();
      if (all.checked) for (const d of letters) selected.add(d.id);
      refreshSelection();
    });
    const rows = letters.map((d) => {
      const box = h('input', { type: 'checkbox', 'data-id': d.id, 'aria-label': `Select ${d.id}` });
      box.addEventListener('change', () => {
        if (box.checked) selected.add(d.id); else selected.delete(d.id);
        refreshSelection();
      });
      return h('tr', { 'data-id': d.id, 'data-subscriber': d.subscriber },
        h('td', {}, box),
        h('td', {}, h('a', { class: 'mono', href: `#/event/${encodeURIComponent(d.event_id)}` }, d.event_id)),
        h('td', {}, d.route),
        h('td', {}, d.subscriber),
        h('td', { class: 'num' }, String(d.attempts)),
        h('td', { class: 'error-text' }, d.dead_reason || ''),
        h('td', {}, lastAttempt(d)),
        h('td', {}, when(d.updated_ms)));
    });
    const more = letters.length >= limit && limit < MAX_LIMIT
      ? h('p', {}, `The newest ${limit} are shown. `,
        h('a', { href: `#/dead-letters${query({ route: routeName, subscriber: subscriberName, limit: MAX_LIMIT })}` }, `Show up to ${MAX_LIMIT}`))
      : null;
    body.replaceChildren(h('div', {},
      table([all, 'Event', 'Route', 'Subscriber', 'Attempts', 'Reason', 'Last attempt', 'Dead since'],
        rows, { id: 'dead-letters', class: 'wide' }),
      more));
    refreshSelection();
  }

  async function load() {
    try {
      const data = await api(`dead-letters${query({ route: routeName, subscriber: subscriberName, limit })}`);
      if (stopped) return;
      ctx.ok();
      letters = data.dead_letters || [];
      for (const id of [...selected]) {
        if (!letters.some((d) => d.id === id)) selected.delete(id);
      }
      draw();
    } catch (e) {
      if (!stopped) ctx.fail(e, body);
    }
  }
  load();
  return () => {
    stopped = true;
  };
}
