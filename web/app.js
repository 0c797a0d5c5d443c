// The kca web UI: sign in, clusters and their CAs, issuing kubeconfigs, listing and revoking
// certificates, rotating and retiring CAs, cluster settings, component certificates, the audit
// trail and API tokens. Hash routes (#/clusters/prod/issue) keep it one static page with no server routes.

import { api, ApiError, can, csrfToken, decodeToken, download, etagOf, hooks, keepEtag, listAll, listUpTo, saveBlob, seg, session } from './api.js';
import { announce, chipInput, clearErrors, formatDuration, h, parseDuration, relative, showError, timeEl, view } from './ui.js';

const REASONS = [
  ['unspecified', 'unspecified'],
  ['keyCompromise', 'keyCompromise — the private key leaked'],
  ['cACompromise', 'cACompromise — the CA key leaked'],
  ['affiliationChanged', 'affiliationChanged — the user changed role or team'],
  ['superseded', 'superseded — replaced by a new certificate'],
  ['cessationOfOperation', 'cessationOfOperation — no longer needed'],
  ['privilegeWithdrawn', 'privilegeWithdrawn — access taken away'],
];
const TTL_PRESETS = [['1 h', 3600], ['8 h', 28800], ['24 h', 86400]];
// What each scope lets the UI do, to say so beside who is signed in.
const ABILITIES = [
  ['read', 'list'],
  ['clusters:write', 'create clusters'],
  ['kubeconfigs:issue', 'issue kubeconfigs'],
  ['certificates:revoke', 'revoke'],
  ['admin', 'administer (CAs, component certificates, audit, tokens)'],
];
const SCOPES = ['read', 'kubeconfigs:issue', 'certificates:issue', 'certificates:revoke', 'clusters:write', 'admin'];
// Leaf certificates expiring within this many days are flagged on the cluster list and overview.
const SOON_DAYS = 7;

const main = document.getElementById('main');
let claims = null; // decoded token, for display and to hide what the token cannot do
let person = null; // the single sign-on identity (GET /v1/me) when signed in through it
let clusterNames = null; // every cluster name, for the issue form's select; null = not loaded
let objectUrl = null; // the issued kubeconfig's Blob URL, released when replaced

// ---- Session -----------------------------------------------------------------------------------

function showSession() {
  const signedIn = !!claims;
  document.getElementById('nav').hidden = !signedIn;
  document.getElementById('whoami').hidden = !signedIn;
  // Admin pages are offered only to admins; the server refuses everyone else all the same.
  document.getElementById('nav-audit').hidden = !can(claims, 'admin');
  document.getElementById('nav-tokens').hidden = !can(claims, 'admin');
  if (!signedIn) return;
  document.getElementById('who-sub').textContent = claims.sub;
  const clusters = claims.clusters.includes('*') ? 'all clusters' : claims.clusters.join(', ');
  document.getElementById('who-scopes').textContent = `${claims.scopes.join(', ')} on ${clusters}`;
  const abilities = ABILITIES.filter(([scope]) => can(claims, scope)).map(([, what]) => what);
  document.getElementById('who-can').textContent = abilities.length ? `may ${abilities.join(', ')}` : 'may do nothing here';
  document.getElementById('who-exp').textContent = claims.exp ? `${person ? 'session' : 'token'} expires ${relative(new Date(claims.exp * 1000).toISOString())}` : '';
  if (person) {
    document.getElementById('who-scopes').textContent =
      `signed in through ${person.iss}; identity provider groups: ${person.idp_groups.join(', ') || 'none'}`;
    document.getElementById('who-can').textContent = 'may issue kubeconfigs for yourself';
  }
}

function signOut(message) {
  // A single sign-on session is revoked on the server (the cookie alone cannot be forgotten here).
  if (person && csrfToken()) api('POST', '/auth/logout').catch(() => {});
  person = null;
  session.signOut();
  claims = null;
  clusterNames = null;
  showSession();
  location.hash = '#/signin';
  if (message) announce(message);
}

// Only a session in use is ended; a token refused at sign-in is reported by the sign-in form.
hooks.unauthorized = (detail) => { if (claims) signOut(`Signed out: ${detail}`); };
document.getElementById('sign-out').addEventListener('click', () => signOut('Signed out.'));

function signInView() {
  const { fragment } = view('tpl-signin');
  const form = fragment.querySelector('form');
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form);
    const token = form.querySelector('textarea').value.trim();
    let decoded;
    try {
      decoded = decodeToken(token);
    } catch (err) {
      return showError(form, 'token', `Not a token: ${err.message}`);
    }
    session.signIn(token);
    try {
      // Ask the server before going on: it alone knows whether the token is valid.
      await api('GET', '/v1/clusters?limit=1');
    } catch (err) {
      if (err.status === 401 || err.status === 0) {
        session.signOut();
        return showError(form, 'token', err.message);
      }
      // 403: valid, but without the read scope. Signed in all the same.
    }
    claims = decoded;
    await refreshMe();
    showSession();
    location.hash = '#/clusters';
  });
  return fragment;
}

// ---- Clusters ----------------------------------------------------------------------------------

function labelChips(labels) {
  return h('ul', { class: 'labels', 'aria-label': 'Labels' },
    Object.entries(labels).map(([k, v]) => h('li', { class: 'label' }, `${k}=${v}`)));
}

function policySummary(policy) {
  return `TTL ${formatDuration(policy.min_ttl_seconds)}–${formatDuration(policy.max_ttl_seconds)}, groups ${policy.allowed_groups.join(', ')}`;
}

function clustersView() {
  const { fragment, refs } = view('tpl-clusters');
  const search = fragment.getElementById('cluster-search');
  let clusters = [];

  const render = () => {
    // "env=prod" matches a label exactly; anything else matches a name or a label as a substring.
    const q = search.value.trim().toLowerCase();
    const shown = clusters.filter((c) => {
      const labels = Object.entries(c.labels).map(([k, v]) => `${k}=${v}`.toLowerCase());
      return !q || c.name.includes(q) || (q.includes('=') ? labels.includes(q) : labels.some((l) => l.includes(q)));
    });
    refs.rows.replaceChildren(...shown.map((c) => h('tr', {},
      h('th', { scope: 'row' }, h('a', { href: `#/clusters/${seg(c.name)}` }, c.name)),
      h('td', { class: 'mono' }, c.server),
      h('td', {}, labelChips(c.labels)),
      h('td', {}, policySummary(c.policy)),
      h('td', {}, expiryCell(c)),
      h('td', {}, timeEl(c.created_at)))));
    refs.count.textContent = q ? `${shown.length} of ${clusters.length}` : `${clusters.length}`;
    refs.empty.hidden = shown.length > 0;
    refs.empty.textContent = clusters.length ? 'No cluster matches the search.' : 'No clusters yet.';
  };
  search.addEventListener('input', render);

  if (can(claims, 'clusters:write')) {
    const form = fragment.getElementById('create-form');
    form.addEventListener('submit', (event) => { event.preventDefault(); createCluster(form); });
  } else {
    refs.create.remove();
  }

  listAll('/v1/clusters?limit=100').then((items) => {
    clusters = items;
    clusterNames = items.map((c) => c.name);
    render();
  }, (err) => { refs.error.textContent = err.message; });
  return fragment;
}

// ---- Expiry at a glance ----------------------------------------------------------------------------

const DAY = 86400 * 1000;

/** ok, soon (within `soonDays`) or urgent (expired or within a day), for a badge. */
function expiryState(iso, soonDays) {
  const left = Date.parse(iso) - Date.now();
  return left < DAY ? 'urgent' : left < soonDays * DAY ? 'soon' : 'ok';
}

/** The generation of any CA of the cluster that expires first. */
function earliestCa(cluster) {
  return [...cluster.authorities].sort((a, b) => Date.parse(a.not_after) - Date.parse(b.not_after))[0];
}

/** A badge for an expiry: its state in words (never by colour alone) and the relative time. */
function expiryBadge(iso, soonDays, what) {
  const state = expiryState(iso, soonDays);
  const word = { ok: 'ok', soon: 'soon', urgent: Date.parse(iso) < Date.now() ? 'expired' : 'urgent' }[state];
  return h('span', { class: 'expiry', 'data-state': state },
    h('span', { class: `badge ${state}` }, word), ' ', what, ' ', timeEl(iso));
}

/** How many unexpired, unrevoked certificates of the cluster expire within `days` ("500+" past a page). */
async function expiringCount(clusterName, days) {
  const page = await api('GET', `/v1/clusters/${seg(clusterName)}/certificates?expiring_within=${days}d&limit=500`);
  return page.next_cursor ? `${page.items.length}+` : String(page.items.length);
}

function leafBadge(count, days) {
  const state = count === '0' ? 'ok' : 'soon';
  return h('span', { class: 'expiry', 'data-state': state },
    h('span', { class: `badge ${state}` }, state === 'ok' ? 'ok' : 'soon'),
    ` ${count === '0' ? 'no' : count} certificate${count === '1' ? '' : 's'} expiring within ${days} d`);
}

/** The cluster list's expiry cell: the first CA to expire, and leaves expiring soon. */
function expiryCell(cluster) {
  const ca = earliestCa(cluster);
  const leaves = h('div', { class: 'muted', 'data-ref': 'leaves' }, '…');
  expiringCount(cluster.name, SOON_DAYS).then(
    (count) => leaves.replaceChildren(leafBadge(count, SOON_DAYS)),
    () => leaves.replaceChildren());
  return h('div', { 'data-expiry': cluster.name },
    ca ? h('div', {}, expiryBadge(ca.not_after, 90, `${ca.kind} CA`)) : null, leaves);
}

/** Build the create request from the form; local mistakes are shown without asking the server. */
async function createCluster(form) {
  clearErrors(form);
  const value = (id) => form.querySelector(`#${id}`).value.trim();
  const body = { name: value('c-name'), server: value('c-server'), key_algorithm: value('c-alg') };
  const policy = {};
  try {
    const labels = {};
    for (const pair of value('c-labels').split(',').map((s) => s.trim()).filter(Boolean)) {
      const at = pair.indexOf('=');
      if (at < 1) throw Object.assign(new Error(`“${pair}” is not key=value.`), { field: 'labels' });
      labels[pair.slice(0, at).trim()] = pair.slice(at + 1).trim();
    }
    body.labels = labels;
    for (const [id, key] of [['p-default', 'default_ttl_seconds'], ['p-min', 'min_ttl_seconds'], ['p-max', 'max_ttl_seconds']]) {
      try {
        const seconds = parseDuration(value(id));
        if (seconds != null) policy[key] = seconds;
      } catch (err) {
        throw Object.assign(err, { field: `policy.${key}` });
      }
    }
  } catch (err) {
    return showError(form, err.field, err.message);
  }
  if (value('p-groups')) policy.max_groups = Number(value('p-groups'));
  const allowed = value('p-allowed').split(',').map((s) => s.trim()).filter(Boolean);
  if (allowed.length) policy.allowed_groups = allowed;
  if (form.querySelector('#p-masters').checked) policy.allow_system_masters = true;
  body.policy = policy;
  try {
    const cluster = await api('POST', '/v1/clusters', body);
    clusterNames = null;
    announce(`Cluster ${cluster.name} created.`);
    location.hash = `#/clusters/${seg(cluster.name)}`;
  } catch (err) {
    showError(form, err.field, err.message);
  }
}

// ---- One cluster ---------------------------------------------------------------------------------

/** The cluster page: a header, tabs, and the tab's body filled in by `tab`. */
function clusterView(name, tab) {
  const { fragment, refs } = view('tpl-cluster');
  refs.title.textContent = name;
  for (const link of refs.tabs.querySelectorAll('a')) {
    link.href = `#/clusters/${seg(name)}/${link.dataset.tab}`;
    if (link.dataset.tab === tab) link.setAttribute('aria-current', 'page');
    if (link.dataset.tab === 'issue' && !can(claims, 'kubeconfigs:issue')) link.remove();
  }
  api('GET', `/v1/clusters/${seg(name)}`).then((cluster) => {
    refs.server.textContent = cluster.server;
    refs.server.after(labelChips(cluster.labels));
    const body = {
      overview: overviewTab, issue: issueTab, certificates: certificatesTab, components: componentsTab,
      authorities: authoritiesTab, settings: settingsTab,
    }[tab];
    refs.body.replaceChildren(body(cluster));
  }, (err) => { refs.error.textContent = err.message; });
  return fragment;
}

function policyPairs(dl, policy) {
  const pairs = [
    ['Default TTL', formatDuration(policy.default_ttl_seconds)],
    ['Minimum TTL', formatDuration(policy.min_ttl_seconds)],
    ['Maximum TTL', formatDuration(policy.max_ttl_seconds)],
    ['Maximum groups', String(policy.max_groups)],
    ['Allowed groups', policy.allowed_groups.join(', ') || 'none'],
    ['system:masters', policy.allow_system_masters ? 'allowed (admin tokens)' : 'refused'],
  ];
  dl.replaceChildren(...pairs.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

function downloadButton(label, path, filename) {
  return h('button', {
    type: 'button',
    class: 'small',
    'aria-label': `Download ${filename}`,
    onclick: () => download(path, filename).then(() => announce(`Downloaded ${filename}.`), (err) => announce(err.message)),
  }, label);
}

function overviewTab(cluster) {
  const { fragment, refs } = view('tpl-overview');
  const c = seg(cluster.name);
  policyPairs(refs.policy, cluster.policy);
  const ca = earliestCa(cluster);
  const leaves = (days) => {
    const dd = h('dd', {}, '…');
    expiringCount(cluster.name, days).then((count) => dd.replaceChildren(leafBadge(count, days)), (err) => { dd.textContent = err.message; });
    return dd;
  };
  refs.expiry.replaceChildren(
    h('dt', {}, 'First CA to expire'),
    h('dd', {}, ca ? expiryBadge(ca.not_after, 90, `${ca.kind} generation ${ca.generation}`) : 'none'),
    h('dt', {}, `Within ${SOON_DAYS} days`), leaves(SOON_DAYS),
    h('dt', {}, 'Within 30 days'), leaves(30));
  api('GET', `/v1/clusters/${c}/authorities`).then((authorities) => {
    refs.cas.replaceChildren(...authorities.map((a) => h('tr', {},
      h('th', { scope: 'row' }, a.kind),
      h('td', {}, String(a.generation)),
      h('td', {}, h('code', { class: 'fingerprint' }, a.fingerprint_sha256)),
      h('td', {}, timeEl(a.not_after)),
      h('td', {}, h('div', { class: 'buttons' },
        downloadButton('ca.pem', `/v1/clusters/${c}/authorities/${a.kind}/ca.pem`, `${cluster.name}-${a.kind}-ca.pem`),
        downloadButton('crl.pem', `/v1/clusters/${c}/authorities/${a.kind}/crl.pem`, `${cluster.name}-${a.kind}-crl.pem`))))));
  }, (err) => announce(err.message));
  refs.bundles.append(
    downloadButton('client-ca.pem', `/v1/clusters/${c}/client-ca.pem`, `${cluster.name}-client-ca.pem`),
    downloadButton('client-crl.pem', `/v1/clusters/${c}/client-crl.pem`, `${cluster.name}-client-crl.pem`),
    downloadButton('revoked.map', `/v1/clusters/${c}/revoked.map`, `${cluster.name}-revoked.map`));
  return fragment;
}

// ---- Issue ---------------------------------------------------------------------------------------------

function issueTab(cluster) {
  const { fragment, refs } = view('tpl-issue');
  const form = fragment.getElementById('issue-form');
  const policy = cluster.policy;
  policyPairs(refs.policy, policy);

  // The cluster select switches to that cluster's issue page (and so its policy).
  const select = form.querySelector('#i-cluster');
  const fillClusters = (names) => select.replaceChildren(...[...new Set([cluster.name, ...names])].sort()
    .map((n) => h('option', { value: n, selected: n === cluster.name }, n)));
  fillClusters(clusterNames ?? []);
  if (!clusterNames) listAll('/v1/clusters?limit=100').then((items) => { clusterNames = items.map((c) => c.name); fillClusters(clusterNames); }, () => {});
  select.addEventListener('change', () => { location.hash = `#/clusters/${seg(select.value)}/issue`; });

  const groups = chipInput(refs.chips, form.querySelector('#i-group'));
  if (person) {
    // A person's certificate is always theirs, with groups from the cluster's access rules.
    const user = form.querySelector('#i-user');
    user.value = person.user;
    user.readOnly = true;
    user.required = false;
    form.querySelector('#i-user-hint').textContent =
      'Your own name (single sign-on); groups come from the access rules your identity provider groups match (leave empty for all of the first rule).';
  }

  // Presets outside the policy cannot succeed, so they are offered disabled; a custom value is
  // sent as typed and the server's refusal explains the bound.
  const presets = [[`Default (${formatDuration(policy.default_ttl_seconds)})`, null], ...TTL_PRESETS, ['Custom', 'custom']];
  refs.presets.replaceChildren(...presets.map(([label, seconds], i) => {
    const id = `i-ttl-${i}`;
    const outside = typeof seconds === 'number' && (seconds < policy.min_ttl_seconds || seconds > policy.max_ttl_seconds);
    return h('span', { class: 'radio' },
      h('input', { type: 'radio', name: 'ttl', id, value: seconds ?? '', checked: i === 0, disabled: outside }),
      h('label', { for: id }, outside ? `${label} (outside policy)` : label));
  }));
  const custom = form.querySelector('#i-ttl');
  // Typing a custom value selects "Custom", so keyboard users need not go back to the radios.
  custom.addEventListener('input', () => { form.querySelector('input[value=custom]').checked = true; });
  form.querySelector('#i-ttl-hint').textContent =
    `Policy: ${formatDuration(policy.min_ttl_seconds)} to ${formatDuration(policy.max_ttl_seconds)}, default ${formatDuration(policy.default_ttl_seconds)}; at most ${policy.max_groups} groups matching ${policy.allowed_groups.join(', ')}.`;

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form);
    const body = { groups: groups() };
    if (!person) body.user = form.querySelector('#i-user').value.trim();
    const choice = form.querySelector('input[name=ttl]:checked').value;
    try {
      const seconds = choice === 'custom' ? parseDuration(custom.value) : choice ? Number(choice) : null;
      if (choice === 'custom' && seconds == null) throw new Error('Type a lifetime, e.g. 2h.');
      if (seconds != null) body.ttl_seconds = seconds;
    } catch (err) {
      return showError(form, 'ttl_seconds', err.message);
    }
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      const issued = await api('POST', `/v1/clusters/${seg(cluster.name)}/kubeconfigs`, body);
      showIssued(refs, cluster.name, body, issued);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      showError(form, err.field, err.message);
    } finally {
      button.disabled = false;
    }
  });
  return fragment;
}

function showIssued(refs, clusterName, request, issued) {
  const filename = `kubeconfig-${clusterName}-${request.user ?? person?.user}.yaml`;
  if (objectUrl) URL.revokeObjectURL(objectUrl);
  objectUrl = URL.createObjectURL(new Blob([issued.kubeconfig], { type: 'application/yaml' }));
  refs.download.href = objectUrl;
  refs.download.download = filename;
  refs.download.textContent = `Download ${filename}`;
  refs.facts.replaceChildren(
    h('dt', {}, 'Serial'), h('dd', {}, h('code', { 'data-serial': issued.serial }, issued.serial)),
    h('dt', {}, 'User'), h('dd', {}, request.user ?? person?.user),
    h('dt', {}, 'Groups'), h('dd', {}, request.groups.join(', ') || 'none'),
    h('dt', {}, 'Expires'), h('dd', {}, timeEl(issued.not_after), ` (${new Date(issued.not_after).toLocaleString()})`));
  refs.result.hidden = false;
  announce(`Kubeconfig issued for ${request.user ?? person?.user}, serial ${issued.serial}.`);
  refs.download.focus();
}

// ---- Certificates ---------------------------------------------------------------------------------------

/** Ask for confirmation and a reason in the <dialog>; answers the reason, or null if cancelled. */
function confirmRevoke(title, text, reason = 'unspecified') {
  const dialog = document.getElementById('confirm');
  dialog.querySelector('#confirm-h').textContent = title;
  dialog.querySelector('#confirm-text').textContent = text;
  dialog.querySelector('#confirm-reason').value = reason;
  dialog.returnValue = '';
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => {
      resolve(dialog.returnValue === 'confirm' ? dialog.querySelector('#confirm-reason').value : null);
    }, { once: true });
  });
}

function certificatesTab(cluster) {
  const { fragment, refs } = view('tpl-certificates');
  const c = seg(cluster.name);
  const filter = fragment.getElementById('cert-filter');
  let cursor = null;

  const row = (cert) => h('tr', { 'data-serial': cert.serial },
    h('td', {}, h('code', { class: 'serial', title: cert.serial }, cert.serial)),
    h('td', {}, cert.common_name),
    h('td', {}, cert.groups.join(', ')),
    h('td', {}, timeEl(cert.not_after)),
    h('td', {}, h('span', { class: `badge ${cert.status}` }, cert.status),
      cert.revocation_reason ? h('span', { class: 'muted' }, ` ${cert.revocation_reason}`) : null),
    h('td', {}, cert.issued_by),
    h('td', {}, cert.status === 'active' && can(claims, 'certificates:revoke')
      ? h('button', { type: 'button', class: 'small danger', 'aria-label': `Revoke ${cert.serial}`, onclick: () => revokeOne(cert) }, 'Revoke')
      : null));

  const load = async (more) => {
    const query = new URLSearchParams({ limit: '50' });
    const user = filter.querySelector('#f-user').value.trim();
    const status = filter.querySelector('#f-status').value;
    if (user) query.set('user', user);
    if (status) query.set('status', status);
    if (more && cursor) query.set('cursor', cursor);
    try {
      const page = await api('GET', `/v1/clusters/${c}/certificates?${query}`);
      const rows = page.items.map(row);
      if (more) refs.rows.append(...rows); else refs.rows.replaceChildren(...rows);
      cursor = page.next_cursor;
      refs.more.hidden = !cursor;
      refs.empty.hidden = refs.rows.children.length > 0;
    } catch (err) {
      announce(err.message);
    }
  };

  const revokeOne = async (cert) => {
    const reason = await confirmRevoke(`Revoke ${cert.serial}?`,
      `The certificate of ${cert.common_name} stops working at the proxy as soon as it reloads the CRL. This cannot be undone.`);
    if (!reason) return;
    try {
      await api('POST', `/v1/clusters/${c}/certificates/${seg(cert.serial)}/revoke`, { reason });
      announce(`Certificate ${cert.serial} revoked (${reason}).`);
      await load(false);
    } catch (err) {
      announce(err.message);
    }
  };

  filter.addEventListener('submit', (event) => { event.preventDefault(); load(false); });
  refs.more.addEventListener('click', () => load(true));
  for (const select of fragment.querySelectorAll('[data-reasons]')) fillReasons(select);

  const byUser = fragment.getElementById('revoke-user-form');
  if (!can(claims, 'certificates:revoke')) refs['revoke-user'].remove();
  byUser.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(byUser);
    const user = byUser.querySelector('#ru-user').value.trim();
    if (!user) return showError(byUser, 'user', 'Name the user whose certificates to revoke.');
    // The dialog starts from the form's reason and has the last word.
    const reason = await confirmRevoke(`Revoke every certificate of ${user}?`,
      `Every unexpired certificate of ${user} in ${cluster.name} is revoked. This cannot be undone.`,
      byUser.querySelector('#ru-reason').value);
    if (!reason) return;
    try {
      const { serials } = await api('POST', `/v1/clusters/${c}/revocations`, { user, reason });
      byUser.querySelector('.form-error').textContent = '';
      announce(`${serials.length} certificate${serials.length === 1 ? '' : 's'} of ${user} revoked.`);
      await load(false);
    } catch (err) {
      showError(byUser, err.field, err.message);
    }
  });
  load(false);
  return fragment;
}

function fillReasons(select) {
  select.replaceChildren(...REASONS.map(([value, label]) => h('option', { value }, label)));
}

// ---- Confirmation ----------------------------------------------------------------------------------

/**
 * Ask before an action that cannot be undone, in the <dialog> (Escape or Cancel answer false).
 * `paragraphs` spell out the consequences; `ok` labels the confirming button.
 */
function confirmAction(title, paragraphs, ok) {
  const dialog = document.getElementById('confirm-action');
  dialog.querySelector('#ca-h').textContent = title;
  dialog.querySelector('#ca-text').replaceChildren(...paragraphs.map((text) => h('p', {}, text)));
  dialog.querySelector('#ca-ok').textContent = ok;
  dialog.returnValue = '';
  dialog.showModal();
  // The safe choice has the focus: Enter alone never confirms.
  dialog.querySelector('button[value=cancel]').focus();
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'confirm'), { once: true });
  });
}

/** A comma-separated list → its trimmed, non-empty items. */
const splitList = (text) => text.split(',').map((s) => s.trim()).filter(Boolean);

/** "k=v, k2=v2" → an object; throws (with `field`) on a pair without "=". */
function parseLabels(text, field) {
  const labels = {};
  for (const pair of splitList(text)) {
    const at = pair.indexOf('=');
    if (at < 1) throw Object.assign(new Error(`“${pair}” is not key=value.`), { field });
    labels[pair.slice(0, at).trim()] = pair.slice(at + 1).trim();
  }
  return labels;
}

/** A Blob download link (the content is already here, e.g. a key shown once). */
function blobLink(content, filename, type = 'application/x-pem-file') {
  const url = URL.createObjectURL(new Blob([content], { type }));
  return h('a', { class: 'button', href: url, download: filename, 'data-url': url }, `Download ${filename}`);
}

// ---- Authorities -----------------------------------------------------------------------------------

function authoritiesTab(cluster) {
  const { fragment, refs } = view('tpl-authorities');
  const c = seg(cluster.name);
  const admin = can(claims, 'admin');
  refs.readonly.hidden = admin;
  const heading = fragment.getElementById('au-h');
  heading.tabIndex = -1;

  const load = async () => {
    const authorities = await api('GET', `/v1/clusters/${c}/authorities`);
    refs.rows.replaceChildren(...authorities.flatMap((a) => a.generations.map((g) => h('tr', { 'data-kind': a.kind, 'data-generation': g.generation },
      h('th', { scope: 'row' }, a.kind),
      h('td', {}, String(g.generation)),
      h('td', {}, h('span', { class: `badge ${g.state}` }, g.state)),
      h('td', {}, expiryBadge(g.not_after, 90, '')),
      h('td', {}, h('code', { class: 'fingerprint' }, g.fingerprint_sha256)),
      h('td', {}, admin ? h('div', { class: 'buttons' },
        g.state === 'active' ? h('button', { type: 'button', class: 'small', 'aria-label': `Rotate the ${a.kind} CA`, onclick: () => rotate(a, g) }, 'Rotate…') : null,
        g.state === 'retiring' ? h('button', { type: 'button', class: 'small danger', 'aria-label': `Retire ${a.kind} generation ${g.generation}`, onclick: () => retire(a, g) }, 'Retire…') : null) : null)))));
  };
  const reload = () => load().then(() => heading.focus(), (err) => announce(err.message));

  const rotate = async (a, g) => {
    const ok = await confirmAction(`Rotate the ${a.kind} CA of ${cluster.name}?`, [
      `A new generation (${g.generation + 1}), with a new key, becomes the signer: every ${a.kind} certificate issued from now on is signed by it.`,
      `Generation ${g.generation} becomes retiring: it signs nothing new but stays trusted in the CA bundle (ca.pem, and client-ca.pem for client CAs) with its CRL, so what it signed keeps working until you retire it.`,
      'Distribute the new bundle to everything that trusts this CA, re-issue its certificates, then retire the old generation.',
    ], 'Rotate');
    if (!ok) return;
    try {
      const rotated = await api('POST', `/v1/clusters/${c}/authorities/${seg(a.kind)}/rotate`);
      announce(`The ${a.kind} CA rotated: generation ${rotated.generation} signs.`);
    } catch (err) {
      announce(err.message);
    }
    reload();
  };

  const retire = async (a, g) => {
    // How many live certificates the generation vouches for: the list tells kind and generation.
    // Counted over the newest 10 pages at most: past them the dialog says "at least".
    let count = null;
    let atLeast = false;
    try {
      const active = await listUpTo(`/v1/clusters/${c}/certificates?status=active&limit=500`, 10);
      count = active.items.filter((cert) => cert.kind === a.kind && cert.generation === g.generation).length;
      atLeast = !active.complete;
    } catch {
      // Without the read scope the count is unknown; the consequence is spelled out all the same.
    }
    const signed = count == null
      ? 'Every unexpired certificate it signed'
      : `${atLeast ? 'At least ' : ''}${count} unexpired, unrevoked certificate${count === 1 ? '' : 's'} it signed`;
    const ok = await confirmAction(`Retire generation ${g.generation} of the ${a.kind} CA?`, [
      `Generation ${g.generation} leaves every CA bundle and CRL: nothing it signed verifies any more.`,
      `${signed} ${count === 1 ? 'is' : 'are'} revoked (cessationOfOperation) and cut off at the proxy once it has reloaded the CRL and revoked map (kca crl-sync).`,
      'This cannot be undone.',
    ], 'Retire');
    if (!ok) return;
    try {
      await api('POST', `/v1/clusters/${c}/authorities/${seg(a.kind)}/generations/${g.generation}/retire`, { force: true });
      announce(`Generation ${g.generation} of the ${a.kind} CA retired${count ? `; ${atLeast ? 'at least ' : ''}${count} certificate${count === 1 ? '' : 's'} revoked` : ''}.`);
    } catch (err) {
      announce(err.message);
    }
    reload();
  };

  load().catch((err) => announce(err.message));
  return fragment;
}

// ---- Settings --------------------------------------------------------------------------------------

const DURATION_FIELDS = [
  ['s-default', 'default_ttl_seconds'], ['s-min', 'min_ttl_seconds'], ['s-max', 'max_ttl_seconds'],
  ['s-cmax', 'component_max_ttl_seconds'],
];
const LIST_FIELDS = [
  ['s-allowed', 'allowed_groups'], ['s-pgroups', 'allowed_privileged_groups'], ['s-pusers', 'allowed_privileged_users'],
  ['s-profiles', 'allowed_profiles'], ['s-cpnames', 'control_plane_names'], ['s-nodes', 'node_names'],
];

let ruleIds = 0;

function settingsTab(cluster) {
  const { fragment, refs } = view('tpl-settings');
  const form = fragment.getElementById('settings-form');
  const field = (id) => form.querySelector(`#${id}`);
  const policy = cluster.policy;
  const writable = can(claims, 'clusters:write');
  const admin = can(claims, 'admin');
  refs.readonly.hidden = writable && admin;

  field('s-server').value = cluster.server;
  field('s-labels').value = Object.entries(cluster.labels).map(([k, v]) => `${k}=${v}`).join(', ');
  for (const [id, key] of DURATION_FIELDS) field(id).value = formatDuration(policy[key]).replace(' ', '');
  field('s-groups').value = String(policy.max_groups);
  for (const [id, key] of LIST_FIELDS) field(id).value = (policy[key] ?? []).join(', ');
  field('s-masters').checked = !!policy.allow_system_masters;
  api('GET', '/v1/profiles').then((profiles) => {
    refs['profiles-hint'].textContent = `Admin tokens only. Profiles: ${profiles.map((p) => p.name).join(', ')}.`;
  }, () => {});

  // Access rules: one row each, with its own fields (errors name them: policy.access_rules[0].groups).
  const addRule = (rule = { idp_group: '', groups: [], max_ttl_seconds: null }) => {
    const n = ++ruleIds;
    const input = (name, label, value) => h('div', { class: 'field', 'data-field': name },
      h('label', { for: `r${n}-${name.split('.').pop()}`, 'data-text': label }, label),
      h('input', { id: `r${n}-${name.split('.').pop()}`, value, autocomplete: 'off', spellcheck: 'false', 'data-rule': name.split('.').pop(), disabled: !admin }),
      h('p', { class: 'field-error', 'aria-live': 'polite' }));
    const li = h('li', { class: 'rule' },
      input('idp_group', 'Identity provider group', rule.idp_group),
      input('groups', 'Kubernetes groups', rule.groups.join(', ')),
      input('max_ttl_seconds', 'Maximum TTL', rule.max_ttl_seconds ? formatDuration(rule.max_ttl_seconds).replace(' ', '') : ''),
      h('button', { type: 'button', class: 'small danger', disabled: !admin, onclick: () => { li.remove(); numberRules(); refs['add-rule'].focus(); } }, 'Remove'));
    refs.rules.append(li);
    numberRules();
    return li;
  };
  // The rows' data-field follow their position, which is what the server's errors name.
  const numberRules = () => [...refs.rules.children].forEach((li, i) => {
    li.querySelector('button').setAttribute('aria-label', `Remove access rule ${i + 1}`);
    for (const box of li.querySelectorAll('.field')) {
      box.dataset.field = `policy.access_rules[${i}].${box.querySelector('input').dataset.rule}`;
      const label = box.querySelector('label');
      label.textContent = `${label.dataset.text} (rule ${i + 1})`;
    }
  });
  for (const rule of policy.access_rules ?? []) addRule(rule);
  refs['add-rule'].addEventListener('click', () => addRule().querySelector('input').focus());

  for (const el of form.querySelectorAll('[data-admin]')) el.disabled = !admin;
  if (!writable) for (const el of form.querySelectorAll('input, select, button')) el.disabled = true;

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form);
    const patch = {};
    const changes = {};
    try {
      const server = field('s-server').value.trim();
      if (server !== cluster.server) patch.server = server;
      // A merge patch: labels given are set, labels left out are removed (null).
      const labels = parseLabels(field('s-labels').value, 'labels');
      const labelPatch = {};
      for (const key of Object.keys(cluster.labels)) if (!(key in labels)) labelPatch[key] = null;
      for (const [key, value] of Object.entries(labels)) if (cluster.labels[key] !== value) labelPatch[key] = value;
      if (Object.keys(labelPatch).length) patch.labels = labelPatch;
      for (const [id, key] of DURATION_FIELDS) {
        try {
          const seconds = parseDuration(field(id).value);
          if (seconds != null && seconds !== policy[key]) changes[key] = seconds;
        } catch (err) {
          throw Object.assign(err, { field: `policy.${key}` });
        }
      }
      const groups = Number(field('s-groups').value);
      if (field('s-groups').value.trim() && groups !== policy.max_groups) changes.max_groups = groups;
      for (const [id, key] of LIST_FIELDS) {
        const list = splitList(field(id).value);
        if (JSON.stringify(list) !== JSON.stringify(policy[key] ?? [])) changes[key] = list;
      }
      if (field('s-masters').checked !== !!policy.allow_system_masters) changes.allow_system_masters = field('s-masters').checked;
      const rules = [...refs.rules.children].map((li, i) => {
        const value = (name) => li.querySelector(`[data-rule=${name}]`).value.trim();
        const rule = { idp_group: value('idp_group'), groups: splitList(value('groups')) };
        try {
          const ttl = parseDuration(value('max_ttl_seconds'));
          if (ttl != null) rule.max_ttl_seconds = ttl;
        } catch (err) {
          throw Object.assign(err, { field: `policy.access_rules[${i}].max_ttl_seconds` });
        }
        return rule;
      });
      const current = (policy.access_rules ?? []).map((r) => ({ idp_group: r.idp_group, groups: r.groups, ...(r.max_ttl_seconds ? { max_ttl_seconds: r.max_ttl_seconds } : {}) }));
      if (JSON.stringify(rules) !== JSON.stringify(current)) changes.access_rules = rules;
    } catch (err) {
      return showError(form, err.field, err.message);
    }
    if (Object.keys(changes).length) patch.policy = changes;
    if (!Object.keys(patch).length) {
      form.querySelector('.form-error').textContent = 'Nothing changed.';
      return;
    }
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      const updated = await api('PATCH', `/v1/clusters/${seg(cluster.name)}`, patch, { ifMatch: etagOf(cluster) });
      Object.assign(cluster, updated);
      keepEtag(cluster, updated);
      announce(`Settings of ${cluster.name} saved.`);
      // Show what the server kept (it may normalise), from the updated cluster.
      main.querySelector('[data-ref=body]').replaceChildren(settingsTab(cluster));
      main.querySelector('#settings-form h2').tabIndex = -1;
      main.querySelector('#settings-form h2').focus();
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      if (err.status === 412) {
        showError(form, null, 'Someone changed this cluster since the page loaded; nothing was saved. Reload the page to see their change, then edit again.');
      } else {
        showError(form, err.field, err.message);
      }
    } finally {
      button.disabled = false;
    }
  });
  return fragment;
}

// ---- Component certificates ------------------------------------------------------------------------

function describeProfile(p) {
  const cn = { fixed: `CN always ${p.common_name.value}`, default: `CN ${p.common_name.value} unless given`, node: 'CN system:node:<node name>, given' }[p.common_name.rule];
  const sans = { forbidden: 'no SANs', required: 'SANs required', kubernetes: 'the Kubernetes service names, plus any given' }[p.subject_alt_names];
  return `Signed by the ${p.authority} CA; ${p.extended_key_usages.join(' + ')}; ${cn}; ${sans}; ${formatDuration(p.default_ttl_seconds)} by default.`;
}

function componentsTab(cluster) {
  const { fragment, refs } = view('tpl-components');
  const c = seg(cluster.name);
  const form = fragment.getElementById('component-form');
  const select = form.querySelector('#k-profile');
  const cn = form.querySelector('#k-cn');
  const allowed = cluster.policy.allowed_profiles ?? [];
  const admin = can(claims, 'admin');
  let profiles = [];
  let cursor = null;
  const urls = [];

  refs.allowed.textContent = allowed.length
    ? `${allowed.join(', ')}. Every component profile is privileged: only an admin token of this cluster may issue one.`
    : 'None: an admin allows profiles in the cluster settings (allowed component profiles).';

  const showProfile = () => {
    const p = profiles.find((x) => x.name === select.value);
    if (!p) return;
    refs['profile-hint'].textContent = describeProfile(p);
    cn.readOnly = p.common_name.rule === 'fixed';
    cn.value = p.common_name.rule === 'fixed' ? p.common_name.value : '';
    cn.placeholder = p.common_name.rule === 'node' ? 'system:node:worker-1' : p.common_name.value ?? '';
    refs['cn-hint'].textContent = p.common_name.rule === 'node' ? 'system:node: and the node name.' : '';
    refs['san-hint'].textContent = p.subject_alt_names === 'forbidden' ? 'This profile carries no subject alternative names.' : 'Comma-separated.';
    refs['ttl-hint'].textContent = `Default ${formatDuration(p.default_ttl_seconds)}, at most ${formatDuration(Math.min(p.max_ttl_seconds, cluster.policy.component_max_ttl_seconds))}.`;
  };
  select.addEventListener('change', showProfile);

  api('GET', '/v1/profiles').then((list) => {
    profiles = list;
    // Profiles the cluster does not allow cannot succeed: offered disabled, the reason in the label.
    select.replaceChildren(...list.map((p) => h('option', { value: p.name, disabled: !allowed.includes(p.name) },
      allowed.includes(p.name) ? p.name : `${p.name} (not allowed)`)));
    const first = list.find((p) => allowed.includes(p.name));
    if (first) select.value = first.name;
    showProfile();
  }, (err) => announce(err.message));

  if (!admin || !allowed.length) {
    for (const el of form.querySelectorAll('input, select, button')) el.disabled = true;
    form.querySelector('.form-error').textContent = admin
      ? 'This cluster allows no component profile yet.'
      : 'Issuing component certificates needs an admin token of this cluster.';
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form);
    const body = { profile: select.value };
    const value = (id) => form.querySelector(`#${id}`).value.trim();
    if (value('k-cn') && !cn.readOnly) body.common_name = value('k-cn');
    if (value('k-dns')) body.dns_names = splitList(value('k-dns'));
    if (value('k-ips')) body.ip_addresses = splitList(value('k-ips'));
    try {
      const ttl = parseDuration(value('k-ttl'));
      if (ttl != null) body.ttl_seconds = ttl;
    } catch (err) {
      return showError(form, 'ttl_seconds', err.message);
    }
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      const issued = await api('POST', `/v1/clusters/${c}/certificates`, body);
      showComponent(issued);
      load(false);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      showError(form, err.field, err.message);
    } finally {
      button.disabled = false;
    }
  });

  const showComponent = (issued) => {
    for (const url of urls.splice(0)) URL.revokeObjectURL(url);
    const base = `${cluster.name}-${issued.profile}-${issued.serial}`;
    const links = [blobLink(issued.certificate_pem, `${base}.crt`)];
    // The key exists only in this answer: offered now, never again.
    if (issued.private_key_pem) links.push(blobLink(issued.private_key_pem, `${base}.key`));
    links.push(blobLink(issued.ca_pem, `${cluster.name}-${issued.profile}-ca.crt`));
    urls.push(...links.map((a) => a.dataset.url));
    refs.files.replaceChildren(...links);
    refs['key-warning'].hidden = !issued.private_key_pem;
    refs.facts.replaceChildren(
      h('dt', {}, 'Profile'), h('dd', {}, issued.profile),
      h('dt', {}, 'Serial'), h('dd', {}, h('code', { 'data-serial': issued.serial }, issued.serial)),
      h('dt', {}, 'Expires'), h('dd', {}, timeEl(issued.not_after)),
      h('dt', {}, 'SHA-256'), h('dd', {}, h('code', { class: 'fingerprint' }, issued.fingerprint_sha256)));
    refs.result.hidden = false;
    announce(`Certificate ${issued.serial} issued (${issued.profile}).`);
    links[0].focus();
  };

  const row = (cert) => h('tr', { 'data-serial': cert.serial },
    h('td', {}, h('code', { class: 'serial' }, cert.serial)),
    h('td', {}, cert.profile),
    h('td', {}, cert.common_name),
    h('td', {}, timeEl(cert.not_after)),
    h('td', {}, h('span', { class: `badge ${cert.status}` }, cert.status)),
    h('td', {}, h('button', {
      type: 'button', class: 'small', 'aria-label': `Download certificate ${cert.serial}`,
      onclick: () => { saveBlob(new Blob([cert.certificate_pem], { type: 'application/x-pem-file' }), `${cluster.name}-${cert.profile}-${cert.serial}.crt`); announce(`Downloaded certificate ${cert.serial}.`); },
    }, 'certificate.pem')));

  // The list API pages every certificate; kubeconfigs (profile "user") are left to their own tab.
  const load = async (more) => {
    try {
      const query = new URLSearchParams({ limit: '200' });
      if (more && cursor) query.set('cursor', cursor);
      const page = await api('GET', `/v1/clusters/${c}/certificates?${query}`);
      const rows = page.items.filter((cert) => cert.profile !== 'user').map(row);
      if (more) refs.rows.append(...rows); else refs.rows.replaceChildren(...rows);
      cursor = page.next_cursor;
      refs.more.hidden = !cursor;
      refs.empty.hidden = refs.rows.children.length > 0;
    } catch (err) {
      announce(err.message);
    }
  };
  refs.more.addEventListener('click', () => load(true));
  load(false);
  return fragment;
}

// ---- Audit trail -----------------------------------------------------------------------------------

function auditView() {
  const { fragment, refs } = view('tpl-audit');
  const form = fragment.getElementById('audit-filter');
  const select = form.querySelector('#a-cluster');
  const names = new Map(); // cluster id → name, for the table
  const cursors = [null]; // the cursor of each page shown so far; the last is the current page's
  let next = null;

  if (!can(claims, 'admin')) {
    form.remove();
    refs.empty.hidden = false;
    refs.empty.textContent = 'The audit trail needs an admin token.';
    return fragment;
  }
  listAll('/v1/clusters?limit=100').then((items) => {
    for (const c of items) names.set(c.id, c.name);
    select.append(...items.map((c) => h('option', { value: c.name }, c.name)));
  }, () => {});

  const query = () => {
    const q = new URLSearchParams({ limit: form.querySelector('#a-limit').value });
    const value = (id) => form.querySelector(`#${id}`).value.trim();
    if (select.value) q.set('cluster', select.value);
    if (value('a-actor')) q.set('actor', value('a-actor'));
    if (value('a-action')) q.set('action', value('a-action'));
    // datetime-local is the browser's local time; the API takes RFC 3339.
    for (const [id, key] of [['a-since', 'since'], ['a-until', 'until']]) {
      if (value(id)) q.set(key, new Date(value(id)).toISOString());
    }
    return q;
  };

  const load = async (cursor) => {
    clearErrors(form);
    const q = query();
    if (cursor) q.set('cursor', cursor);
    try {
      const page = await api('GET', `/v1/audit?${q}`);
      refs.rows.replaceChildren(...page.items.map((e) => h('tr', { 'data-id': e.id },
        h('td', {}, timeEl(e.at)),
        h('td', {}, e.actor),
        h('td', {}, h('code', {}, e.action)),
        h('td', {}, `${e.object_type}/${e.object_id}`),
        h('td', {}, e.cluster_id ? names.get(e.cluster_id) ?? e.cluster_id : ''),
        h('td', {}, e.remote_addr ?? ''))));
      next = page.next_cursor;
      refs.next.hidden = !next;
      refs.first.hidden = cursors.length < 2;
      refs.empty.hidden = page.items.length > 0;
      refs.position.textContent = `Page ${cursors.length}: ${page.items.length} event${page.items.length === 1 ? '' : 's'}${next ? ', more on the next page' : ''}.`;
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      showError(form, err.field, err.message);
    }
  };

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    cursors.splice(1);
    load(null);
  });
  refs.next.addEventListener('click', () => {
    cursors.push(next);
    load(next).then(() => main.querySelector('h1').focus());
  });
  refs.first.addEventListener('click', () => {
    cursors.splice(1);
    load(null).then(() => main.querySelector('h1').focus());
  });
  load(null);
  return fragment;
}

// ---- API tokens ------------------------------------------------------------------------------------

function tokensView() {
  const { fragment, refs } = view('tpl-tokens');
  const form = fragment.getElementById('token-form');
  const names = new Map();
  let cursor = null;

  if (!can(claims, 'admin')) {
    form.remove();
    refs.error.textContent = 'Minting, listing and revoking tokens needs an admin token.';
    return fragment;
  }
  refs.scopes.replaceChildren(...SCOPES.map((scope, i) => h('span', { class: 'radio' },
    h('input', { type: 'checkbox', id: `t-scope-${i}`, value: scope, checked: scope === 'read' }),
    h('label', { for: `t-scope-${i}` }, scope))));

  const state = (t) => (t.revoked_at ? 'revoked' : Date.parse(t.expires_at) < Date.now() ? 'expired' : 'active');
  const row = (t) => h('tr', { 'data-token': t.id },
    h('th', { scope: 'row' }, t.subject),
    h('td', {}, t.scopes.join(', ')),
    h('td', {}, t.clusters.map((id) => names.get(id) ?? id).join(', ')),
    h('td', {}, timeEl(t.created_at), h('div', { class: 'muted' }, `by ${t.created_by}`)),
    h('td', {}, timeEl(t.expires_at)),
    h('td', {}, t.last_used_at ? timeEl(t.last_used_at) : 'never'),
    h('td', {}, h('span', { class: `badge ${state(t)}` }, state(t))),
    h('td', {}, state(t) === 'active'
      ? h('button', { type: 'button', class: 'small danger', 'aria-label': `Revoke the token of ${t.subject} (${t.id})`, onclick: () => revoke(t) }, 'Revoke…')
      : null));

  const load = async (more) => {
    try {
      const query = new URLSearchParams({ limit: '100' });
      if (more && cursor) query.set('cursor', cursor);
      const page = await api('GET', `/v1/tokens?${query}`);
      const rows = page.items.map(row);
      if (more) refs.rows.append(...rows); else refs.rows.replaceChildren(...rows);
      cursor = page.next_cursor;
      refs.more.hidden = !cursor;
    } catch (err) {
      refs.error.textContent = err.message;
    }
  };

  const revoke = async (t) => {
    const ok = await confirmAction(`Revoke the token of ${t.subject}?`, [
      `Every replica refuses it on its next request (id ${t.id}). Certificates it issued stay valid until revoked themselves.`,
      'This cannot be undone.',
    ], 'Revoke');
    if (!ok) return;
    try {
      await api('DELETE', `/v1/tokens/${seg(t.id)}`);
      announce(`The token of ${t.subject} revoked.`);
    } catch (err) {
      announce(err.message);
    }
    await load(false);
    main.querySelector('h1').focus();
  };

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form);
    const value = (id) => form.querySelector(`#${id}`).value.trim();
    const body = {
      subject: value('t-subject'),
      scopes: [...form.querySelectorAll('[data-ref=scopes] input:checked')].map((el) => el.value),
    };
    if (!body.subject) return showError(form, 'subject', 'Name who the token speaks for.');
    if (!body.scopes.length) return showError(form, 'scopes', 'Choose at least one scope.');
    if (value('t-clusters')) body.clusters = splitList(value('t-clusters'));
    try {
      const ttl = parseDuration(value('t-ttl'));
      if (ttl != null) body.ttl_seconds = ttl;
    } catch (err) {
      return showError(form, 'ttl_seconds', err.message);
    }
    try {
      const minted = await api('POST', '/v1/tokens', body);
      const box = fragmentResult.querySelector('#t-minted');
      box.value = minted.token;
      refs.result.hidden = false;
      announce(`Token for ${minted.subject} minted: copy it now.`);
      box.focus();
      box.select();
      await load(false);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      showError(form, err.field, err.message);
    }
  });
  const fragmentResult = refs.result;
  refs.copy.addEventListener('click', async () => {
    const box = refs.result.querySelector('#t-minted');
    try {
      await navigator.clipboard.writeText(box.value);
      announce('Token copied.');
    } catch {
      // Clipboard access refused: the token is selected for the keyboard's copy.
      box.focus();
      box.select();
      announce('Copy refused by the browser: the token is selected, press Ctrl+C.');
    }
  });
  refs.more.addEventListener('click', () => load(true));
  listAll('/v1/clusters?limit=100').then((items) => {
    for (const c of items) names.set(c.id, c.name);
  }, () => {}).finally(() => load(false));
  return fragment;
}

// ---- Router ------------------------------------------------------------------------------------------

function route() {
  const hash = location.hash;
  // In-page anchors (the skip link) are not routes.
  if (hash && !hash.startsWith('#/')) return;
  showSession(); // refreshes "token expires in …"
  if (!claims) {
    if (hash !== '#/signin') { location.replace('#/signin'); return; }
    render(signInView(), 'Sign in');
    return;
  }
  const parts = hash.slice(2).split('/').map(decodeURIComponent);
  if (parts[0] === 'clusters' && parts[1]) {
    const tab = ['overview', 'issue', 'certificates', 'components', 'authorities', 'settings'].includes(parts[2]) ? parts[2] : 'overview';
    render(clusterView(parts[1], tab), `${parts[1]} · ${tab}`);
  } else if (parts[0] === 'clusters') {
    render(clustersView(), 'Clusters');
  } else if (parts[0] === 'audit') {
    render(auditView(), 'Audit trail');
  } else if (parts[0] === 'tokens') {
    render(tokensView(), 'API tokens');
  } else {
    location.replace('#/clusters');
  }
}

let firstRender = true;
function render(fragment, title) {
  main.replaceChildren(fragment);
  document.title = `${title} · kca`;
  // After an in-app navigation, move focus to the new page's heading so screen readers announce
  // it; on a real page load the browser's own start (the skip link first) is kept.
  if (!firstRender) main.querySelector('h1')?.focus();
  firstRender = false;
}

// What the server says the token may do (GET /v1/me) replaces what the token claims to, when it
// answers: the UI only reflects it, the server decides every request.
async function refreshMe() {
  try {
    const me = await api('GET', '/v1/me');
    claims = { ...claims, sub: me.subject, scopes: me.scopes, clusters: me.clusters };
  } catch {
    // An older server, or a token without access to /v1/me: the decoded claims stand.
  }
}

// A reload keeps the session: the token is still in sessionStorage, or the single sign-on
// session cookie still works (GET /v1/me tells).
async function restoreSession() {
  const stored = session.token();
  if (stored) {
    try { claims = decodeToken(stored); } catch { session.signOut(); return; }
    await refreshMe();
    return;
  }
  if (!csrfToken()) return;
  try {
    const me = await api('GET', '/v1/me');
    if (me.person) {
      person = me.person;
      claims = { sub: me.subject, scopes: me.scopes, clusters: me.visible_clusters ?? [], exp: Date.parse(me.expires_at) / 1000 };
    }
  } catch {
    // Ended or revoked: the sign-in page offers to sign in again.
  }
}

fillReasons(document.getElementById('confirm-reason'));
restoreSession().then(() => {
  showSession();
  window.addEventListener('hashchange', route);
  route();
});
