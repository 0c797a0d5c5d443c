// The kca JSON API as the UI uses it: the token, requests with `Authorization: Bearer`, problem+json
// errors, cursor pagination and authenticated downloads.

const TOKEN_KEY = 'kca.token';

// sessionStorage: the token lives as long as the tab, is never written to a cookie (so it is never
// sent without our say) and never put in a URL (so it cannot leak through history or logs).
export const session = {
  token: () => sessionStorage.getItem(TOKEN_KEY),
  signIn: (token) => sessionStorage.setItem(TOKEN_KEY, token),
  signOut: () => sessionStorage.removeItem(TOKEN_KEY),
};

/** Called when the server answers 401: the token expired or was refused. Set by the app. */
export const hooks = { unauthorized: (_detail) => {} };

/** A failed request, carrying the RFC 9457 problem the server answered. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.field = problem.field ?? null;
    this.rule = problem.rule ?? null;
  }
}

/** The CSRF token of the single sign-on session (the `kca_csrf` cookie), or null. */
export function csrfToken() {
  const entry = document.cookie.split(';').map((c) => c.trim()).find((c) => c.startsWith('kca_csrf='));
  return entry ? entry.slice('kca_csrf='.length) : null;
}

async function send(method, path, body, accept, ifMatch) {
  const headers = { Accept: accept };
  if (ifMatch) headers['If-Match'] = ifMatch;
  const token = session.token();
  if (token) headers.Authorization = `Bearer ${token}`;
  // Without a pasted token, the single sign-on session cookie authenticates; every call that
  // changes something proves it comes from this page with the CSRF token.
  const csrf = token ? null : csrfToken();
  if (csrf && method !== 'GET' && method !== 'HEAD') headers['X-CSRF-Token'] = csrf;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: token ? 'omit' : 'same-origin',
    });
  } catch (err) {
    throw new ApiError(0, { detail: `The server could not be reached (${err.message}).` });
  }
  if (response.ok) return response;
  let problem;
  try {
    problem = await response.json();
  } catch {
    problem = { detail: `${response.status} ${response.statusText}` };
  }
  const error = new ApiError(response.status, problem);
  if (response.status === 401) hooks.unauthorized(error.message);
  throw error;
}

// The ETag each answered object came with (a cluster's version), for `If-Match` on a later change.
const etags = new WeakMap();

/** The ETag `object` was answered with, or null. */
export const etagOf = (object) => etags.get(object) ?? null;

/** Carry `source`'s ETag over to `target` (an object updated in place from a newer answer). */
export function keepEtag(target, source) {
  const etag = etagOf(source);
  if (etag) etags.set(target, etag);
}

/**
 * A JSON request; answers the parsed body (null for 204). `ifMatch`: change only if the resource
 * is still at this ETag (the server answers 412 otherwise), so two people editing at once cannot
 * silently overwrite each other.
 */
export async function api(method, path, body, { ifMatch } = {}) {
  const response = await send(method, path, body, 'application/json', ifMatch);
  if (response.status === 204) return null;
  const parsed = await response.json();
  const etag = response.headers.get('ETag');
  if (etag && parsed && typeof parsed === 'object') etags.set(parsed, etag);
  return parsed;
}

/**
 * The items of a paginated list, following `next_cursor` for at most `maxPages` pages (a cluster
 * may hold millions of certificates); `complete` says whether the list ended within them.
 */
export async function listUpTo(path, maxPages) {
  const items = [];
  let cursor = null;
  let pages = 0;
  do {
    const sep = path.includes('?') ? '&' : '?';
    const page = await api('GET', cursor ? `${path}${sep}cursor=${encodeURIComponent(cursor)}` : path);
    items.push(...page.items);
    cursor = page.next_cursor;
    pages += 1;
  } while (cursor && pages < maxPages);
  return { items, complete: !cursor };
}

/** Every item of a paginated list whose length is bounded (clusters, tokens). */
export async function listAll(path) {
  return (await listUpTo(path, Infinity)).items;
}

/** Fetch a file with the token (public reads may be off) and hand it to the browser as a download. */
export async function download(path, filename) {
  const response = await send('GET', path, undefined, '*/*');
  saveBlob(await response.blob(), filename);
}

/** Save a Blob under `filename` through a temporary link. */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = document.createElement('a');
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  // The click starts the download synchronously; the URL may go once this task is done.
  setTimeout(() => URL.revokeObjectURL(url), 0);
}

/** A path segment, escaped. */
export const seg = (value) => encodeURIComponent(value);

/**
 * The claims of a JWT, read for display only (who, which scopes, until when): the signature is not
 * and cannot be checked here. The server checks every request.
 */
export function decodeToken(token) {
  const parts = token.split('.');
  if (parts.length !== 3) throw new Error('This is not a JWT (expected three dot-separated parts).');
  const base64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
  const bytes = Uint8Array.from(atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, '=')), (c) => c.charCodeAt(0));
  const claims = JSON.parse(new TextDecoder().decode(bytes));
  return {
    sub: String(claims.sub ?? '?'),
    scopes: Array.isArray(claims.scopes) ? claims.scopes.map(String) : [],
    clusters: Array.isArray(claims.clusters) ? claims.clusters.map(String) : [],
    exp: typeof claims.exp === 'number' ? claims.exp : null,
  };
}

/** Whether decoded claims carry `scope` (admin carries all). */
export const can = (claims, scope) => !!claims && (claims.scopes.includes('admin') || claims.scopes.includes(scope));
