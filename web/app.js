// The kca web UI: sign in, clusters and their CAs, issuing kubeconfigs, listing and revoking
// certificates. Hash routes (#/clusters/prod/issue) keep it one static page with no server routes.

import { api, ApiError, can, csrfToken, decodeToken, download, hooks, listAll, seg, session } from './api.js';
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
];

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
    const body = { overview: overviewTab, issue: issueTab, certificates: certificatesTab }[tab];
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
    const tab = ['overview', 'issue', 'certificates'].includes(parts[2]) ? parts[2] : 'overview';
    render(clusterView(parts[1], tab), `${parts[1]} · ${tab}`);
  } else if (parts[0] === 'clusters') {
    render(clustersView(), 'Clusters');
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

// A reload keeps the session: the token is still in sessionStorage, or the single sign-on
// session cookie still works (GET /v1/me tells).
async function restoreSession() {
  const stored = session.token();
  if (stored) {
    try { claims = decodeToken(stored); } catch { session.signOut(); }
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
