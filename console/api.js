// The console's only way to read or change anything: the admin API, with
// the bearer token the operator entered (kept in this tab's sessionStorage).

const KEY = 'hookrelay.adminToken';

/** Why a call failed: `unreachable`, `unauthorized`, `closed` or `failed`. */
export class ApiError extends Error {
  constructor(kind, status, message) {
    super(message);
    this.kind = kind;
    this.status = status;
  }
}

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(value) {
  sessionStorage.setItem(KEY, value);
}

export function forgetToken() {
  sessionStorage.removeItem(KEY);
}

/** Calls `/api/v1/<path>`; resolves to the JSON answer or throws ApiError. */
export async function api(path, { method = 'GET', body } = {}) {
  const headers = { Accept: 'application/json', Authorization: `Bearer ${token() || ''}` };
  const init = { method, headers, cache: 'no-store', credentials: 'omit', redirect: 'error' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  let data = null;
  try {
    response = await fetch(`/api/v1/${path}`, init);
    const text = await response.text();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
  } catch (e) {
    throw new ApiError('unreachable', 0,
      `The admin API could not be reached (${e && e.message ? e.message : e}).`);
  }
  if (response.ok) {
    return data;
  }
  const said = data && typeof data.error === 'string' ? data.error : response.statusText;
  if (response.status === 401) {
    throw new ApiError('unauthorized', 401, 'The admin API refused the token (401 Unauthorized).');
  }
  if (response.status === 403) {
    throw new ApiError('closed', 403, `The admin API is closed (403): ${said}`);
  }
  const problems = data && Array.isArray(data.problems) ? ` (${data.problems.join('; ')})` : '';
  throw new ApiError('failed', response.status,
    `The admin API answered ${response.status}: ${said}${problems}`);
}

/** `a=1&b=2` from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') {
      q.set(k, String(v));
    }
  }
  const text = q.toString();
  return text ? `?${text}` : '';
}
