// The console's shell: login, navigation between pages, the error and
// notice banners, and the confirmation dialog.

import { token, setToken, forgetToken } from './api.js';
import { state } from './dom.js';
import { subscribersPage } from './subscribers.js';
import { eventsPage, eventPage } from './events.js';
import { deadLettersPage } from './dead-letters.js';

const pages = {
  subscribers: subscribersPage,
  events: eventsPage,
  event: eventPage,
  'dead-letters': deadLettersPage,
};

const $ = (id) => document.getElementById(id);
let stopPage = null;

/** `#/event/abc?x=1` → { page: 'event', arg: 'abc', params }. */
function route() {
  const hash = location.hash.replace(/^#\/?/, '');
  const [path, search = ''] = hash.split('?', 2);
  const [page, ...rest] = path.split('/');
  let arg = rest.length ? rest.join('/') : null;
  try {
    arg = arg === null ? null : decodeURIComponent(arg);
  } catch {
    // A malformed escape: look the text up as written.
  }
  return { page: pages[page] ? page : 'subscribers', arg, params: new URLSearchParams(search) };
}

function showError(title, text, retry = true) {
  $('error-title').textContent = title;
  $('error-text').textContent = text;
  $('error-retry').hidden = !retry;
  $('error').hidden = false;
}

function clearError() {
  $('error').hidden = true;
}

function showNotice(text) {
  $('notice-text').textContent = text;
  $('notice').hidden = false;
}

function clearNotice() {
  $('notice').hidden = true;
}

/** What each kind of failure tells the operator. */
function describe(err) {
  switch (err.kind) {
    case 'unauthorized':
      return ['Wrong admin token.', `${err.message} Enter the admin.token of this gateway.`];
    case 'closed':
      return ['Admin API closed.',
        `${err.message} The console needs admin.token set in the gateway's config.`];
    case 'unreachable':
      return ['Admin API unreachable.',
        `${err.message} Is hookrelay running, and is this page served by it? Press Retry to try again.`];
    default:
      return ['Request failed.', err.message || String(err)];
  }
}

/**
 * What a page gets: where to draw, the hash's argument and parameters, and
 * how to report a failure or a result.
 */
function context(main, r) {
  return {
    main,
    arg: r.arg,
    params: r.params,
    /** Shows the failure; also in place of `into`'s content when given. */
    fail(err, into = null) {
      const [title, text] = describe(err);
      if (err.kind === 'unauthorized') {
        forgetToken();
        stop();
        showLogin();
        showError(title, text, false);
        return;
      }
      showError(title, text);
      if (into) {
        into.replaceChildren(state('error', title, text));
      }
    },
    /** A call succeeded: any earlier failure is over. */
    ok() {
      clearError();
    },
    notice: showNotice,
    /** Sets the hash's parameters (and so redraws the page). */
    go(hash) {
      if (location.hash === hash) {
        render();
      } else {
        location.hash = hash;
      }
    },
  };
}

function stop() {
  if (stopPage) {
    stopPage();
    stopPage = null;
  }
}

function showLogin() {
  $('nav').hidden = true;
  $('logout').hidden = true;
  $('main').replaceChildren();
  $('login').hidden = false;
  $('token').value = '';
  $('token').focus();
}

function render() {
  stop();
  clearNotice();
  if (!token()) {
    showLogin();
    return;
  }
  $('login').hidden = true;
  $('nav').hidden = false;
  $('logout').hidden = false;
  const r = route();
  const section = r.page === 'event' ? 'events' : r.page;
  for (const a of $('nav').querySelectorAll('a')) {
    if (a.dataset.page === section) {
      a.setAttribute('aria-current', 'page');
    } else {
      a.removeAttribute('aria-current');
    }
  }
  const main = $('main');
  main.replaceChildren(state('loading', 'Loading…'));
  stopPage = pages[r.page](context(main, r)) || null;
}

$('login').addEventListener('submit', (e) => {
  e.preventDefault();
  const value = $('token').value.trim();
  if (!value) {
    return;
  }
  clearError();
  setToken(value);
  render();
});
$('logout').addEventListener('click', () => {
  forgetToken();
  stop();
  clearError();
  showLogin();
});
$('error-retry').addEventListener('click', () => {
  clearError();
  render();
});
$('notice-close').addEventListener('click', clearNotice);
window.addEventListener('hashchange', render);
render();
