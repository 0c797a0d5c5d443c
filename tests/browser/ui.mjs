// End-to-end test of the kca web UI in the system's headless Chromium, driven by playwright-core
// (which downloads no browser). It signs in, creates a cluster, downloads its CA files, issues a
// kubeconfig (and checks it with kubectl), sees policy refusals next to their fields, revokes; edits
// the cluster settings, issues a component certificate (and parses the downloaded files), rotates
// and retires a CA, filters and pages the audit trail, mints and revokes an API token, reads the
// expiry at a glance; and checks that /docs renders with every request off 127.0.0.1 blocked. Screenshots go to OUT_DIR.
//
//   KCA_TOKEN=<admin token> node ui.mjs <kca url> <server cert pem> [out dir]
//
// Exits 0 on success, 1 with the failed step and a screenshot (failure.png) otherwise.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate, createHash, createPrivateKey, createPublicKey } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium } from 'playwright-core';

const [base = process.env.KCA_URL, certPath = process.env.KCA_CA_CERT, outArg = process.env.KCA_OUT_DIR] =
  process.argv.slice(2);
const token = process.env.KCA_TOKEN;
if (!base || !certPath || !token) {
  console.error('usage: KCA_TOKEN=<admin token> node ui.mjs <kca url> <server cert pem> [out dir]');
  process.exit(2);
}
const outDir = resolve(outArg ?? 'browser-output');
mkdirSync(outDir, { recursive: true });
const kubectl = process.env.KUBECTL ?? '/usr/bin/kubectl';

const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
  "base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
const CLUSTER = 'e2e-web';
const SERVER = 'https://k8s.e2e.test:6443';
const SERVER2 = 'https://k8s2.e2e.test:6443';

// Trust exactly the server's certificate (by its key), rather than ignoring every TLS error.
// Chromium honours this flag with a --user-data-dir, which launchPersistentContext gives it.
const spki = new X509Certificate(readFileSync(certPath)).publicKey.export({ type: 'spki', format: 'der' });
const pin = createHash('sha256').update(spki).digest('base64');

const profile = mkdtempSync(join(tmpdir(), 'kca-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--no-first-run', '--disable-quic', '--disable-sync',
    `--ignore-certificate-errors-spki-list=${pin}`,
  ],
  acceptDownloads: true,
  viewport: { width: 1280, height: 900 },
});

// No network: every request not to 127.0.0.1 is refused, and listed.
const blocked = [];
await context.route('**/*', (route) => {
  const url = new URL(route.request().url());
  if (url.hostname === '127.0.0.1') return route.continue();
  blocked.push(url.href);
  return route.abort('blockedbyclient');
});

// CSP violations, from the page's own event (init scripts run outside the page's CSP) and from
// the console; other console errors and uncaught exceptions too.
const violations = [];
const consoleErrors = [];
await context.exposeBinding('__kcaCspViolation', ({ page }, text) => violations.push(`${page.url()}: ${text}`));
await context.addInitScript(() => {
  document.addEventListener('securitypolicyviolation', (e) =>
    window.__kcaCspViolation(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'} at ${e.sourceFile}:${e.lineNumber}`));
});
const page = context.pages()[0] ?? (await context.newPage());
page.setDefaultTimeout(15_000);
page.on('console', (msg) => {
  if (msg.type() === 'error') consoleErrors.push({ url: page.url(), text: msg.text() });
});
page.on('pageerror', (err) => consoleErrors.push({ url: page.url(), text: `uncaught: ${err.message}` }));

let shots = 0;
const shot = async (name) => {
  const path = join(outDir, `${String(++shots).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`  screenshot ${path}`);
};
let current = '';
const step = (name) => {
  current = name;
  console.log(`step: ${name}`);
};

/** Wait until the locator's text matches `re`; fail with the text it had. */
async function expectText(locator, re, timeout = 10_000) {
  const deadline = Date.now() + timeout;
  let text = '';
  while (Date.now() < deadline) {
    text = (await locator.count()) ? ((await locator.first().textContent()) ?? '') : '';
    if (re.test(text)) return text;
    await page.waitForTimeout(100);
  }
  throw new Error(`expected ${locator} to match ${re}, it reads ${JSON.stringify(text)}`);
}

/** Click `trigger` and save the download it starts; answers [suggested name, content]. */
async function downloadFrom(trigger) {
  const [download] = await Promise.all([page.waitForEvent('download'), trigger.click()]);
  const path = join(outDir, download.suggestedFilename());
  await download.saveAs(path);
  return [download.suggestedFilename(), readFileSync(path, 'utf8'), path];
}

const rowOf = (serial) => page.locator(`tbody tr[data-serial="${serial}"]`);

/** A request from the page (same origin, so the server's certificate is already trusted). */
async function apiFromPage(method, path, body, bearer) {
  return page.evaluate(async ([method, path, body, bearer]) => {
    const response = await fetch(path, {
      method,
      headers: { Authorization: `Bearer ${bearer ?? sessionStorage.getItem('kca.token')}`, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    return { status: response.status, body: text ? JSON.parse(text) : null };
  }, [method, path, body, bearer]);
}

try {
  step('the page is served with its content type, validators and CSP');
  const response = await page.goto(`${base}/`);
  assert.equal(response.status(), 200);
  const headers = response.headers();
  assert.equal(headers['content-security-policy'], CSP);
  assert.match(headers['content-type'], /^text\/html/);
  assert.equal(headers['cache-control'], 'no-cache');
  assert.ok(headers.etag, 'an ETag');

  step('keyboard: on a fresh load Tab reaches the skip link first, and focus is visible');
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  await shot('sign-in');
  await page.keyboard.press('Tab');
  const focused = await page.evaluate(() => ({
    text: document.activeElement.textContent,
    outline: getComputedStyle(document.activeElement).outlineStyle,
  }));
  assert.equal(focused.text, 'Skip to content');
  assert.equal(focused.outline, 'solid');

  step('sign in: a malformed token is refused next to the field, a real one signs in');
  await page.getByLabel('Access token').fill('not-a-token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expectText(page.locator('#signin-token-error'), /not a JWT/);
  await page.getByLabel('Access token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Clusters' }).waitFor();
  await expectText(page.locator('#who-sub'), /^tester$/);
  await expectText(page.locator('#who-scopes'), /admin on all clusters/);
  await expectText(page.locator('#who-can'), /may list, create clusters, issue kubeconfigs, revoke/);
  await expectText(page.locator('#who-exp'), /token expires in \d+ min/);
  assert.ok(!page.url().includes(token), 'the token is not in the URL');
  assert.deepEqual(await context.cookies(), [], 'no cookies');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('kca.token')), token);

  step('create a cluster: a server refusal shows next to its field, then it is created');
  await page.getByText('Create a cluster').click();
  await page.getByLabel('Name', { exact: true }).fill('Not_A_Label');
  await page.getByLabel('API server URL').fill(SERVER);
  await page.getByRole('textbox', { name: 'Labels' }).fill('env=e2e, team=web');
  await page.getByLabel('Maximum TTL').fill('8h');
  await page.getByLabel('Maximum groups').fill('4');
  await page.getByLabel('Allowed groups').fill('dev, ops, team-*');
  await page.getByRole('button', { name: 'Create cluster' }).click();
  await expectText(page.locator('.field[data-field="name"] .field-error'), /DNS label/);
  assert.equal(await page.getByLabel('Name', { exact: true }).getAttribute('aria-invalid'), 'true');
  await shot('create-cluster-refused');
  await page.getByLabel('Name', { exact: true }).fill(CLUSTER);
  await page.getByRole('button', { name: 'Create cluster' }).click();
  await page.getByRole('heading', { name: CLUSTER }).waitFor();

  step('the overview shows the five CAs with fingerprints and expiry');
  const caRows = page.locator('#ov-cas-h + .scroll tbody tr');
  await expectText(page.locator('#ov-cas-h + .scroll tbody'), /aggregation/);
  assert.equal(await caRows.count(), 5);
  const kinds = await caRows.locator('th').allTextContents();
  assert.deepEqual([...kinds].sort(), ['aggregation', 'control-plane', 'etcd', 'kubelet', 'operators']);
  for (const fingerprint of await caRows.locator('.fingerprint').allTextContents()) {
    assert.match(fingerprint, /^[0-9A-Fa-f:]{32,}$/);
  }
  for (const expiry of await caRows.locator('time').allTextContents()) assert.match(expiry, /^in \d+ d$/);
  await expectText(page.locator('.pairs'), /Maximum TTL8 h/);
  await shot('cluster-overview');

  step('download CA bundles, CRLs and the proxy bundles');
  let [name, text] = await downloadFrom(page.getByRole('button', { name: `Download ${CLUSTER}-operators-ca.pem` }));
  assert.equal(name, `${CLUSTER}-operators-ca.pem`);
  assert.match(text, /^-----BEGIN CERTIFICATE-----/);
  [name, text] = await downloadFrom(page.getByRole('button', { name: `Download ${CLUSTER}-etcd-crl.pem` }));
  assert.match(text, /^-----BEGIN X509 CRL-----/);
  [name, text] = await downloadFrom(page.getByRole('button', { name: `Download ${CLUSTER}-client-ca.pem` }));
  assert.ok(text.split('BEGIN CERTIFICATE').length - 1 >= 3, 'the client CAs');
  [name, text] = await downloadFrom(page.getByRole('button', { name: `Download ${CLUSTER}-client-crl.pem` }));
  assert.match(text, /BEGIN X509 CRL/);
  [name, text] = await downloadFrom(page.getByRole('button', { name: `Download ${CLUSTER}-revoked.map` }));
  assert.equal(text, '', 'nothing revoked yet');

  step('the cluster list finds the cluster by name and by label');
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Clusters' }).click();
  await page.getByRole('link', { name: CLUSTER }).waitFor();
  await page.getByLabel('Search').fill('team=web');
  await page.getByRole('link', { name: CLUSTER }).waitFor();
  await shot('clusters');
  await page.getByLabel('Search').fill('env=prod');
  await expectText(page.locator('[data-ref=empty]'), /No cluster matches/);
  await page.getByLabel('Search').fill('');
  await page.getByRole('link', { name: CLUSTER }).click();

  step('issue: chips, then a TTL above the cluster maximum is refused next to the TTL');
  await page.getByRole('link', { name: 'Issue kubeconfig' }).click();
  await page.getByRole('heading', { name: 'Issue a kubeconfig' }).waitFor();
  assert.equal(await page.getByLabel('Cluster', { exact: true }).inputValue(), CLUSTER);
  await page.getByLabel('User', { exact: true }).fill('alice');
  const groupInput = page.getByLabel('Groups', { exact: true });
  for (const group of ['dev', 'ops', 'oops']) {
    await groupInput.fill(group);
    await groupInput.press('Enter');
  }
  await page.getByRole('button', { name: 'Remove group oops' }).click();
  assert.deepEqual(await page.locator('.chip > span').allTextContents(), ['dev', 'ops']);
  assert.ok(await page.getByLabel('24 h (outside policy)').isDisabled(), 'a preset above the maximum is disabled');
  await page.getByLabel('Custom lifetime').fill('12h');
  await page.getByRole('button', { name: 'Issue kubeconfig' }).click();
  await expectText(page.locator('fieldset[data-field="ttl_seconds"] .field-error'), /at most 28800 seconds/);
  assert.equal(await page.getByLabel('Custom lifetime').getAttribute('aria-invalid'), 'true');
  await shot('issue-refused-ttl');

  step('a group outside allowed_groups is refused next to the groups, on its chip');
  await groupInput.fill('admins');
  await groupInput.press('Enter');
  await page.getByLabel('8 h', { exact: true }).check();
  await page.getByRole('button', { name: 'Issue kubeconfig' }).click();
  await expectText(page.locator('.field[data-field="groups"] .field-error'), /"admins" matches none of the cluster's allowed_groups/);
  assert.equal(await page.locator('.chip.invalid > span').textContent(), 'admins');
  await expectText(page.locator('fieldset[data-field="ttl_seconds"] .field-error'), /^$/);
  await shot('issue-refused-group');

  step('issue a kubeconfig and check the download with kubectl');
  await page.getByRole('button', { name: 'Remove group admins' }).click();
  await page.getByRole('button', { name: 'Issue kubeconfig' }).click();
  await page.getByRole('heading', { name: 'Kubeconfig issued' }).waitFor();
  const aliceSerial = await page.locator('[data-ref=facts] code').textContent();
  assert.match(aliceSerial, /^[0-9A-F]+$/);
  await expectText(page.locator('[data-ref=facts] time'), /^in [78] h$/);
  let path;
  [name, text, path] = await downloadFrom(page.getByRole('link', { name: /^Download kubeconfig/ }));
  assert.equal(name, `kubeconfig-${CLUSTER}-alice.yaml`);
  const config = JSON.parse(execFileSync(kubectl, ['config', 'view', '--raw', '--kubeconfig', path, '-o', 'json'], { encoding: 'utf8' }));
  assert.equal(config.clusters[0].cluster.server, SERVER);
  assert.equal(config.users[0].name, 'alice');
  assert.ok(config.users[0].user['client-certificate-data'] && config.users[0].user['client-key-data'], 'the credential');
  const raw = execFileSync(kubectl, ['config', 'view', '--raw', '--kubeconfig', path], { encoding: 'utf8' });
  assert.match(raw, /client-key-data: /);
  console.log(`  kubectl config view --raw parses ${path}`);
  await shot('issued');

  step('issue a second one, for bob, at the default TTL');
  await page.getByLabel('User', { exact: true }).fill('bob');
  await page.getByLabel('Default (1 h)').check();
  await page.getByRole('button', { name: 'Issue kubeconfig' }).click();
  await expectText(page.locator('[data-ref=facts]'), /bob/);
  const bobSerial = await page.locator('[data-ref=facts] code').textContent();

  step('the certificates list shows both, expiry relative');
  await page.getByRole('link', { name: 'Certificates', exact: true }).click();
  await rowOf(aliceSerial).waitFor();
  await rowOf(bobSerial).waitFor();
  await expectText(rowOf(aliceSerial).locator('time'), /^in [78] h$/);
  await expectText(rowOf(bobSerial).locator('time'), /^in (59|60) min$/);
  await shot('certificates');

  step('Escape cancels the revoke dialog');
  await rowOf(bobSerial).getByRole('button', { name: `Revoke ${bobSerial}` }).click();
  await page.getByRole('dialog').waitFor();
  await page.keyboard.press('Escape');
  await page.getByRole('dialog').waitFor({ state: 'hidden' });
  await expectText(rowOf(bobSerial).locator('.badge'), /^active$/);

  step('revoke alice\'s certificate with a reason, after confirmation');
  await rowOf(aliceSerial).getByRole('button', { name: `Revoke ${aliceSerial}` }).click();
  const dialog = page.getByRole('dialog', { name: `Revoke ${aliceSerial}?` });
  await dialog.waitFor();
  await dialog.getByLabel('Reason').selectOption('keyCompromise');
  await shot('revoke-dialog');
  await dialog.getByRole('button', { name: 'Revoke' }).click();
  await expectText(rowOf(aliceSerial).locator('td:nth-child(5)'), /revoked keyCompromise/);
  await expectText(page.locator('#toast'), /revoked \(keyCompromise\)/);

  step('the revoked filter shows it, the active filter does not');
  await page.getByLabel('Status').selectOption('revoked');
  await page.getByRole('button', { name: 'Apply' }).click();
  // The list re-renders when the answer arrives: wait for bob's row to go, then check alice's.
  await rowOf(bobSerial).waitFor({ state: 'detached' });
  await rowOf(aliceSerial).waitFor();
  await shot('certificates-revoked');
  await page.getByLabel('Status').selectOption('active');
  await page.getByRole('button', { name: 'Apply' }).click();
  await rowOf(aliceSerial).waitFor({ state: 'detached' });
  await rowOf(bobSerial).waitFor();

  step('revoke every certificate of bob');
  await page.locator('#ru-user').fill('bob');
  await page.locator('#ru-reason').selectOption('superseded');
  await page.getByRole('button', { name: 'Revoke all…' }).click();
  const bobDialog = page.getByRole('dialog', { name: 'Revoke every certificate of bob?' });
  assert.equal(await bobDialog.getByLabel('Reason').inputValue(), 'superseded', 'the form\'s reason is carried over');
  await bobDialog.getByRole('button', { name: 'Revoke' }).click();
  await expectText(page.locator('#toast'), /1 certificate of bob revoked/);
  await expectText(page.locator('[data-ref=empty]'), /No certificates match/);
  await page.locator('#f-user').fill('bob');
  await page.getByLabel('Status').selectOption('revoked');
  await page.getByRole('button', { name: 'Apply' }).click();
  await expectText(rowOf(bobSerial).locator('td:nth-child(5)'), /revoked superseded/);

  step('the revoked map lists both serials');
  await page.getByRole('link', { name: 'Overview' }).click();
  [name, text] = await downloadFrom(page.getByRole('button', { name: `Download ${CLUSTER}-revoked.map` }));
  assert.match(text, new RegExp(`^${aliceSerial} keyCompromise$`, 'm'));
  assert.match(text, new RegExp(`^${bobSerial} superseded$`, 'm'));

  step('settings: a field refused by the server shows next to it, then the change is saved');
  await page.getByRole('link', { name: 'Settings' }).click();
  await page.getByRole('heading', { name: 'Cluster settings' }).waitFor();
  assert.equal(await page.getByLabel('API server URL', { exact: true }).inputValue(), SERVER);
  assert.equal(await page.getByLabel('Maximum TTL', { exact: true }).inputValue(), '8h');
  await page.getByLabel('Allowed component profiles', { exact: true }).fill('no-such-profile, scheduler');
  await page.getByRole('button', { name: 'Save changes' }).click();
  await expectText(page.locator('.field[data-field="policy.allowed_profiles"] .field-error'), /no-such-profile|profile/);
  assert.equal(await page.getByLabel('Allowed component profiles', { exact: true }).getAttribute('aria-invalid'), 'true');
  await shot('settings-refused');
  await page.getByLabel('Allowed component profiles', { exact: true }).fill('scheduler');
  await page.getByLabel('API server URL', { exact: true }).fill(SERVER2);
  await page.getByRole('textbox', { name: 'Labels' }).fill('env=e2e, tier=gold');
  await page.getByLabel('Maximum TTL', { exact: true }).fill('12h');
  await page.getByRole('button', { name: 'Add an access rule' }).click();
  await page.getByLabel('Identity provider group').fill('platform');
  await page.getByLabel('Kubernetes groups').fill('team-platform, ops');
  await page.getByRole('button', { name: 'Save changes' }).click();
  await expectText(page.locator('#toast'), /Settings of e2e-web saved/);
  assert.equal(await page.getByLabel('Maximum TTL', { exact: true }).inputValue(), '12h');
  assert.equal(await page.getByLabel('Kubernetes groups').inputValue(), 'team-platform, ops');
  assert.equal(await page.getByRole('textbox', { name: 'Labels' }).inputValue(), 'env=e2e, tier=gold');
  await shot('settings');
  const saved = await apiFromPage('GET', `/v1/clusters/${CLUSTER}`);
  assert.equal(saved.body.server, SERVER2);
  assert.deepEqual(saved.body.labels, { env: 'e2e', tier: 'gold' }, 'team removed, tier added');
  assert.equal(saved.body.policy.max_ttl_seconds, 43200);
  assert.deepEqual(saved.body.policy.allowed_profiles, ['scheduler']);
  assert.deepEqual(saved.body.policy.access_rules, [{ idp_group: 'platform', groups: ['team-platform', 'ops'] }]);

  step('settings: a save over someone else\'s change is refused (If-Match), and theirs is kept');
  const theirs = await apiFromPage('PATCH', `/v1/clusters/${CLUSTER}`, { labels: { env: 'e2e', tier: 'silver' } });
  assert.equal(theirs.status, 200);
  await page.getByLabel('Maximum TTL', { exact: true }).fill('10h');
  await page.getByRole('button', { name: 'Save changes' }).click();
  await expectText(page.locator('#settings-form .form-error'), /Someone changed this cluster/);
  const kept = await apiFromPage('GET', `/v1/clusters/${CLUSTER}`);
  assert.deepEqual(kept.body.labels, { env: 'e2e', tier: 'silver' });
  assert.equal(kept.body.policy.max_ttl_seconds, 43200, 'the stale save changed nothing');
  await shot('settings-conflict');

  step('component certificates: issue one, download certificate and key once, parse them');
  await page.getByRole('link', { name: 'Component certificates' }).click();
  await page.getByRole('heading', { name: 'Issue a component certificate' }).waitFor();
  // The profiles arrive after the page (GET /v1/profiles): wait for them, then the first allowed
  // one is selected.
  await page.locator('#k-profile option[value="scheduler"]').waitFor({ state: 'attached' });
  assert.equal(await page.getByLabel('Profile', { exact: true }).inputValue(), 'scheduler');
  assert.ok(await page.locator('#k-profile option[value="etcd-peer"]').isDisabled(), 'a profile the cluster does not allow is disabled');
  assert.equal(await page.getByLabel('Common name', { exact: true }).inputValue(), 'system:kube-scheduler');
  await page.getByLabel('Lifetime', { exact: true }).fill('2d');
  await page.getByRole('button', { name: 'Issue certificate' }).click();
  await page.getByRole('heading', { name: 'Certificate issued' }).waitFor();
  const componentSerial = await page.locator('[data-ref=facts] code[data-serial]').textContent();
  let crtPath, keyPath;
  [name, text, crtPath] = await downloadFrom(page.getByRole('link', { name: /^Download .*\.crt$/ }).first());
  assert.equal(name, `${CLUSTER}-scheduler-${componentSerial}.crt`);
  const component = new X509Certificate(readFileSync(crtPath));
  assert.match(component.subject, /CN=system:kube-scheduler/);
  assert.equal(component.serialNumber.replace(/^0+/, ''), componentSerial.replace(/^0+/, ''));
  [name, text, keyPath] = await downloadFrom(page.getByRole('link', { name: /^Download .*\.key$/ }));
  const key = createPrivateKey(readFileSync(keyPath));
  assert.equal(
    createPublicKey(key).export({ type: 'spki', format: 'der' }).toString('hex'),
    component.publicKey.export({ type: 'spki', format: 'der' }).toString('hex'),
    'the key is the certificate\'s');
  console.log(`  ${name}: the key matches the certificate ${componentSerial}`);
  await rowOf(componentSerial).waitFor();
  await shot('component-issued');
  [name, text] = await downloadFrom(rowOf(componentSerial).getByRole('button', { name: `Download certificate ${componentSerial}` }));
  assert.equal(new X509Certificate(text).fingerprint256, component.fingerprint256, 'the listed certificate is the same');
  assert.ok(!text.includes('PRIVATE KEY'), 'the list offers no key');

  step('authorities: rotate the operators CA, after an explanation (Escape cancels first)');
  // A kubeconfig signed by generation 1, which retiring it must revoke.
  const carol = await apiFromPage('POST', `/v1/clusters/${CLUSTER}/kubeconfigs`, { user: 'carol' });
  assert.equal(carol.status, 201);
  await page.getByRole('link', { name: 'Authorities' }).click();
  const genRow = (kind, generation) => page.locator(`tbody tr[data-kind="${kind}"][data-generation="${generation}"]`);
  await genRow('operators', 1).waitFor();
  assert.equal(await page.locator('tbody tr[data-kind]').count(), 5);
  await expectText(genRow('operators', 1).locator('.badge').first(), /^active$/);
  await page.getByRole('button', { name: 'Rotate the operators CA' }).click();
  const rotateDialog = page.getByRole('dialog', { name: `Rotate the operators CA of ${CLUSTER}?` });
  await rotateDialog.waitFor();
  await expectText(rotateDialog, /stays trusted in the CA bundle/);
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Cancel', 'the safe choice has the focus');
  await page.keyboard.press('Escape');
  await rotateDialog.waitFor({ state: 'hidden' });
  assert.equal(await genRow('operators', 2).count(), 0, 'cancelled: no rotation');
  await page.getByRole('button', { name: 'Rotate the operators CA' }).click();
  await rotateDialog.waitFor();
  await shot('rotate-dialog');
  await rotateDialog.getByRole('button', { name: 'Rotate' }).click();
  await genRow('operators', 2).waitFor();
  await expectText(genRow('operators', 2).locator('.badge').first(), /^active$/);
  await expectText(genRow('operators', 1).locator('.badge').first(), /^retiring$/);
  await expectText(page.locator('#toast'), /generation 2 signs/);
  await shot('authorities-rotated');

  step('retire generation 1: the dialog counts the certificates it revokes');
  await page.getByRole('button', { name: 'Retire operators generation 1' }).click();
  const retireDialog = page.getByRole('dialog', { name: 'Retire generation 1 of the operators CA?' });
  await retireDialog.waitFor();
  await expectText(retireDialog, /1 unexpired, unrevoked certificate it signed is revoked .* crl-sync/);
  await shot('retire-dialog');
  await retireDialog.getByRole('button', { name: 'Retire' }).click();
  await genRow('operators', 1).waitFor({ state: 'detached' });
  await expectText(page.locator('#toast'), /retired; 1 certificate revoked/);
  const carolNow = await apiFromPage('GET', `/v1/clusters/${CLUSTER}/certificates/${carol.body.serial}`);
  assert.equal(carolNow.body.status, 'revoked');

  step('audit trail: filter by cluster and action, then page through everything');
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Audit trail' }).click();
  await page.getByRole('heading', { name: 'Audit trail' }).waitFor();
  await page.locator('#a-cluster option[value="e2e-web"]').waitFor({ state: 'attached' });
  await page.getByLabel('Cluster', { exact: true }).selectOption(CLUSTER);
  await page.getByLabel('Action', { exact: true }).fill('authority.*');
  await page.getByRole('button', { name: 'Apply' }).click();
  await expectText(page.locator('[data-ref=position]'), /^Page 1: 2 events\.$/);
  assert.deepEqual(await page.locator('tbody td code').allTextContents(), ['authority.retire', 'authority.rotate']);
  await shot('audit-filtered');
  await page.getByLabel('Action', { exact: true }).fill('');
  await page.getByLabel('Cluster', { exact: true }).selectOption('');
  await page.getByLabel('Since', { exact: true }).fill('2000-01-01T00:00:00');
  await page.getByLabel('Per page', { exact: true }).selectOption('10');
  await page.getByRole('button', { name: 'Apply' }).click();
  await expectText(page.locator('[data-ref=position]'), /^Page 1: 10 events, more on the next page\.$/);
  const firstIds = await page.locator('tbody tr[data-id]').evaluateAll((rows) => rows.map((r) => Number(r.dataset.id)));
  await page.getByRole('button', { name: 'Next page' }).click();
  await expectText(page.locator('[data-ref=position]'), /^Page 2: /);
  const secondIds = await page.locator('tbody tr[data-id]').evaluateAll((rows) => rows.map((r) => Number(r.dataset.id)));
  assert.ok(secondIds.length > 0 && Math.max(...secondIds) < Math.min(...firstIds), `page 2 continues page 1: ${firstIds} then ${secondIds}`);
  assert.equal(await page.evaluate(() => document.activeElement.tagName), 'H1', 'focus back on the heading');
  await shot('audit-page-2');
  await page.getByLabel('Until', { exact: true }).fill('2000-01-02T00:00:00');
  await page.getByRole('button', { name: 'Apply' }).click();
  await expectText(page.locator('[data-ref=empty]'), /No event matches/);

  step('API tokens: mint one (shown once), list it, revoke it');
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'API tokens' }).click();
  await page.getByRole('heading', { name: 'Mint a token' }).waitFor();
  await page.getByLabel('Subject', { exact: true }).fill('ci-e2e');
  await page.getByLabel('Clusters', { exact: true }).fill(CLUSTER);
  await page.getByLabel('Lifetime', { exact: true }).fill('30m');
  await page.getByLabel('kubeconfigs:issue', { exact: true }).check();
  await page.getByRole('button', { name: 'Mint token' }).click();
  await page.getByRole('heading', { name: 'Token minted' }).waitFor();
  const minted = await page.getByLabel('The token, shown this once', { exact: true }).inputValue();
  assert.equal(minted.split('.').length, 3, 'a JWT');
  assert.equal((await apiFromPage('GET', `/v1/clusters/${CLUSTER}`, undefined, minted)).status, 200, 'the minted token works');
  await page.getByRole('button', { name: 'Copy token' }).click();
  await expectText(page.locator('#toast'), /Token copied|Copy refused/);
  const tokenRow = page.locator('tbody tr', { hasText: 'ci-e2e' });
  await tokenRow.waitFor();
  await expectText(tokenRow, /read, kubeconfigs:issue/);
  await expectText(tokenRow, new RegExp(CLUSTER));
  assert.ok(!(await page.locator('table').textContent()).includes(minted), 'the list never shows a token');
  await shot('tokens-minted');
  await tokenRow.getByRole('button', { name: /^Revoke the token of ci-e2e/ }).click();
  const tokenDialog = page.getByRole('dialog', { name: 'Revoke the token of ci-e2e?' });
  await tokenDialog.getByRole('button', { name: 'Revoke' }).click();
  await expectText(tokenRow.locator('.badge'), /^revoked$/);
  assert.equal((await apiFromPage('GET', `/v1/clusters/${CLUSTER}`, undefined, minted)).status, 401, 'refused once revoked');
  await shot('tokens-revoked');
  // A read-only token, to see the pages without their admin controls below.
  await page.getByLabel('Subject', { exact: true }).fill('viewer');
  await page.getByLabel('Clusters', { exact: true }).fill('');
  await page.getByLabel('kubeconfigs:issue', { exact: true }).uncheck();
  await page.getByRole('button', { name: 'Mint token' }).click();
  await expectText(page.locator('#toast'), /Token for viewer minted/);
  const viewer = await page.getByLabel('The token, shown this once', { exact: true }).inputValue();
  assert.notEqual(viewer, minted);

  step('expiry at a glance: the cluster list and the overview flag the certificate expiring within 7 days');
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Clusters' }).click();
  const expiry = page.locator(`[data-expiry="${CLUSTER}"]`);
  await expectText(expiry, /1 certificate expiring within 7 d/);
  await expectText(expiry.locator('.expiry').first(), /^ok .* CA in \d+ d$/);
  assert.equal(await expiry.locator('.expiry[data-state=soon]').count(), 1);
  await shot('clusters-expiry');
  await page.getByRole('link', { name: CLUSTER }).click();
  await expectText(page.locator('#ov-expiry-h + .pairs'), /First CA to expire.*Within 7 days.*1 certificate expiring within 7 d.*Within 30 days/);
  await shot('cluster-expiry');

  step('sign out forgets the token');
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('kca.token')), null);

  step('a read-only token sees the pages without their admin controls (the server refuses them anyway)');
  await page.getByLabel('Access token').fill(viewer);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Clusters' }).waitFor();
  await expectText(page.locator('#who-scopes'), /^read on all clusters$/);
  assert.ok(await page.locator('#nav-audit').isHidden() && await page.locator('#nav-tokens').isHidden(), 'no admin pages offered');
  await page.goto(`${base}/#/clusters/${CLUSTER}/authorities`);
  await genRow('operators', 2).waitFor();
  assert.equal(await page.getByRole('button', { name: /^(Rotate|Retire)/ }).count(), 0, 'no rotate or retire');
  await page.getByText('Rotating and retiring need an admin token').waitFor();
  await page.getByRole('link', { name: 'Settings' }).click();
  await page.getByRole('heading', { name: 'Cluster settings' }).waitFor();
  assert.ok(await page.getByRole('button', { name: 'Save changes' }).isDisabled());
  assert.ok(await page.getByLabel('API server URL', { exact: true }).isDisabled());
  await page.getByRole('link', { name: 'Component certificates' }).click();
  await expectText(page.locator('#component-form .form-error'), /needs an admin token/);
  assert.ok(await page.getByRole('button', { name: 'Issue certificate' }).isDisabled());
  await rowOf(componentSerial).waitFor();
  await shot('read-only-components');
  await page.goto(`${base}/#/audit`);
  await expectText(page.locator('[data-ref=empty]'), /needs an admin token/);
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();

  step('no CSP violation and no unexpected console error on the UI pages');
  assert.deepEqual(violations, [], 'CSP violations');
  const uiErrors = consoleErrors.filter((e) => !e.url.includes('/docs'));
  // Chromium logs every 4xx answer; the refusals this test provokes are the only ones expected.
  // (401: the revoked token, refused on purpose; 412: the stale settings save.)
  const unexpected = uiErrors.filter((e) => !/Failed to load resource: the server responded with a status of (401|403|412|422)/.test(e.text));
  assert.deepEqual(unexpected, [], 'console errors');
  assert.ok(!uiErrors.some((e) => /Content Security Policy|Refused to/.test(e.text)), 'CSP messages');
  const uiBlocked = [...blocked];
  assert.deepEqual(uiBlocked, [], 'the UI made requests off 127.0.0.1');

  step('/docs renders the API with every request off 127.0.0.1 blocked');
  await page.goto(`${base}/docs/`);
  const docsPath = page.locator('.opblock-summary-path[data-path="/v1/clusters"]').first();
  await docsPath.waitFor({ state: 'visible', timeout: 20_000 });
  assert.equal((await docsPath.innerText()).replace(/\u200b/g, ''), '/v1/clusters');
  await page.getByText('A private certificate authority for Kubernetes clusters.').waitFor();
  await shot('docs');
  console.log(`  requests blocked while on /docs: ${blocked.length ? blocked.join(', ') : 'none'}`);

  console.log(`ok: ${shots} screenshots in ${outDir}`);
} catch (err) {
  console.error(`FAILED at step "${current}": ${err.stack ?? err}`);
  if (consoleErrors.length) console.error(`console errors: ${JSON.stringify(consoleErrors, null, 1)}`);
  if (violations.length) console.error(`CSP violations: ${violations.join('\n')}`);
  if (blocked.length) console.error(`blocked requests: ${blocked.join(', ')}`);
  await page.screenshot({ path: join(outDir, 'failure.png'), fullPage: true }).catch(() => {});
  console.error(`  screenshot ${join(outDir, 'failure.png')}`);
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
