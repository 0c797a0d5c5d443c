// Single sign-on in the system's headless Chromium, through a real OpenID Provider's own pages
// (tests/oidc/provider.mjs). Two modes:
//
//   node sso.mjs web <kca url> <out dir> <login>
//     Signs in to the kca web UI with "Sign in with single sign-on", then from the signed-in page:
//     GET /v1/me, a POST without the CSRF header (must be 403), a kubeconfig for cluster `dev`
//     (written to <out dir>/kubeconfig.yaml), cluster `hidden` (must be 403), the session
//     cookie (written to <out dir>/session-cookie.txt), and signs out through the UI.
//
//   node sso.mjs device <verification uri> <out dir> <login>
//     Approves a device sign-in (kca login) at the provider.
//
//   node sso.mjs outsider <kca url> <out dir> <login>
//     Signs in as a person no access rule of cluster `dev` admits: 403 there, only `hidden` listed.
//
//   node sso.mjs refused <kca url> <out dir> <login>
//     Signs in as a person whose claims kca refuses (a hostile e-mail): kca's page says so.
//
//   node sso.mjs loopback <kca sign-in url> <out dir> <login>
//     Signs in through kca and the provider until kca login's loopback listener has its code.
//
// KCA_CERT and IDP_CERT name the two servers' certificates (pinned, not every TLS error ignored).
// Exits 0 on success, 1 with the failed step and a screenshot otherwise.

import assert from 'node:assert/strict';
import { X509Certificate, createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium } from 'playwright-core';

const [mode, target, outArg, login = 'alice'] = process.argv.slice(2);
if (!['web', 'device', 'loopback', 'outsider', 'refused'].includes(mode) || !target || !outArg) {
  console.error('usage: node sso.mjs web|device|loopback|outsider|refused <url> <out dir> [login]');
  process.exit(2);
}
const outDir = resolve(outArg);
mkdirSync(outDir, { recursive: true });

const pin = (path) => {
  const spki = new X509Certificate(readFileSync(path)).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('base64');
};
const pins = [process.env.KCA_CERT, process.env.IDP_CERT].filter(Boolean).map(pin).join(',');

const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'kca-sso-')), {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--no-first-run', '--disable-quic', '--disable-sync',
    `--ignore-certificate-errors-spki-list=${pins}`,
  ],
  viewport: { width: 1280, height: 900 },
});
// No network but loopback (the provider's pages ask for a web font).
await context.route('**/*', (route) => {
  const url = new URL(route.request().url());
  return url.hostname === '127.0.0.1' ? route.continue() : route.abort('blockedbyclient');
});
const page = context.pages()[0] ?? (await context.newPage());
let shot = 0;
const screenshot = (name) => page.screenshot({ path: join(outDir, `${String(++shot).padStart(2, '0')}-${name}.png`) });

/** Go through the provider's pages (user code, login, consent) until `done()` says so. */
async function approveAtProvider(done) {
  for (let step = 0; step < 20; step++) {
    await page.waitForLoadState('load');
    if (await done()) return;
    const loginField = page.locator('input[name=login]');
    const continueButton = page.locator('button[type=submit][autofocus], button.login-submit, button[form="op.deviceConfirmForm"]:not([name=abort])').first();
    if (await loginField.count()) {
      await screenshot('provider-login');
      await loginField.fill(login);
      await page.locator('input[name=password]').fill('any password');
      await page.locator('button[type=submit]').first().click();
    } else if (await continueButton.count()) {
      await screenshot('provider-continue');
      await continueButton.click();
    }
    await page.waitForTimeout(300);
  }
  throw new Error(`the provider's pages did not finish the sign-in (at ${page.url()})`);
}

async function call(method, path, { csrf = true, accept = 'application/json', body } = {}) {
  return page.evaluate(async ({ method, path, csrf, accept, body }) => {
    const headers = { Accept: accept };
    const cookie = document.cookie.split(';').map((c) => c.trim()).find((c) => c.startsWith('kca_csrf='));
    if (csrf && cookie) headers['X-CSRF-Token'] = cookie.slice('kca_csrf='.length);
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(path, { method, headers, credentials: 'same-origin', body: body === undefined ? undefined : JSON.stringify(body) });
    return { status: response.status, text: await response.text() };
  }, { method, path, csrf, accept, body });
}

let step = 'start';
try {
  if (mode === 'web') {
    step = 'open kca';
    await page.goto(target);
    await page.locator('#sso-sign-in').waitFor();
    await screenshot('kca-sign-in');
    step = 'sign in with single sign-on';
    await page.locator('#sso-sign-in').click();
    await approveAtProvider(async () => page.url().startsWith(target) && (await page.locator('#who-sub').isVisible()));
    await page.locator('#who-sub').waitFor();
    const who = await page.locator('#who-sub').textContent();
    assert.equal(who, `oidc:${login}@example.com`);
    await screenshot('kca-signed-in');

    step = 'GET /v1/me';
    const me = await call('GET', '/v1/me');
    assert.equal(me.status, 200, me.text);
    const meBody = JSON.parse(me.text);
    assert.equal(meBody.person.user, `oidc:${login}@example.com`);
    assert.equal(meBody.session_cookie, true);
    writeFileSync(join(outDir, 'me.json'), me.text);

    step = 'a POST without the CSRF header is refused';
    const forged = await call('POST', '/v1/clusters/dev/kubeconfigs', { csrf: false, body: {} });
    assert.equal(forged.status, 403, forged.text);
    assert.match(forged.text, /X-CSRF-Token/);

    step = 'issue a kubeconfig for myself';
    const issued = await call('POST', '/v1/clusters/dev/kubeconfigs', { accept: 'application/yaml', body: {} });
    assert.equal(issued.status, 201, issued.text);
    writeFileSync(join(outDir, 'kubeconfig.yaml'), issued.text, { mode: 0o600 });

    step = 'someone else\'s name is refused';
    const other = await call('POST', '/v1/clusters/dev/kubeconfigs', { body: { user: 'admin' } });
    assert.equal(other.status, 403, other.text);

    step = 'a cluster with no matching rule is invisible';
    const hidden = await call('POST', '/v1/clusters/hidden/kubeconfigs', { body: {} });
    assert.equal(hidden.status, 403, hidden.text);
    const list = JSON.parse((await call('GET', '/v1/clusters')).text);
    assert.deepEqual(list.items.map((c) => c.name), ['dev']);

    step = 'the issue form, in the UI';
    await page.goto(`${target}/#/clusters/dev/issue`);
    await page.locator('#i-user').waitFor();
    assert.equal(await page.locator('#i-user').inputValue(), `oidc:${login}@example.com`);
    assert.equal(await page.locator('#i-user').getAttribute('readonly'), '');
    await screenshot('kca-issue-form');

    step = 'sign out';
    const cookies = await context.cookies(target);
    const session = cookies.find((c) => c.name === 'kca_session');
    assert.ok(session, 'a kca_session cookie');
    assert.equal(session.httpOnly, true);
    assert.equal(session.secure, true);
    assert.equal(session.sameSite, 'Strict');
    writeFileSync(join(outDir, 'session-cookie.txt'), session.value, { mode: 0o600 });
    await page.locator('#sign-out').click();
    await page.locator('#signin-token').waitFor();
    // The revocation is asked for as the page signs out; wait until the server has it.
    for (let i = 0; i < 50 && (await call('GET', '/v1/me')).status !== 401; i++) await page.waitForTimeout(100);
    assert.equal((await call('GET', '/v1/me')).status, 401);
    await screenshot('kca-signed-out');
  } else if (mode === 'outsider') {
    step = 'sign in as a person no rule of dev admits';
    await page.goto(target);
    await page.locator('#sso-sign-in').click();
    await approveAtProvider(async () => page.url().startsWith(target) && (await page.locator('#who-sub').isVisible()));
    const refused = await call('POST', '/v1/clusters/dev/kubeconfigs', { body: {} });
    assert.equal(refused.status, 403, refused.text);
    assert.match(refused.text, /no access rule of cluster/);
    const list = JSON.parse((await call('GET', '/v1/clusters')).text);
    assert.deepEqual(list.items.map((c) => c.name), ['hidden']);
    const issued = await call('POST', '/v1/clusters/hidden/kubeconfigs', { body: {} });
    assert.equal(issued.status, 201, issued.text);
    await screenshot('kca-outsider');
  } else if (mode === 'refused') {
    step = 'sign in with claims kca refuses';
    await page.goto(target);
    await page.locator('#sso-sign-in').click();
    await approveAtProvider(async () => page.url().startsWith(`${target}/auth/callback`));
    assert.equal(await page.locator('h1').textContent(), 'You may not use kca');
    assert.match(await page.locator('#sso-message').textContent(), /user name cannot be used/);
    await screenshot('kca-refused-claims');
  } else if (mode === 'loopback') {
    step = 'sign in for kca login (loopback redirect)';
    await page.goto(target);
    await approveAtProvider(async () => page.url().startsWith('http://127.0.0.1:') &&
      (await page.locator('body').textContent()).includes('Signed in to kca'));
    await screenshot('cli-loopback-signed-in');
  } else {
    step = 'approve the device sign-in';
    await page.goto(target);
    await approveAtProvider(async () => (await page.title()) === 'Sign-in Success');
    await screenshot('provider-device-approved');
  }
  console.log(`sso.mjs ${mode}: ok`);
  await context.close();
} catch (err) {
  console.error(`sso.mjs ${mode}: failed at "${step}": ${err.stack ?? err}`);
  console.error(`page: ${page.url()}`);
  await page.screenshot({ path: join(outDir, 'failure.png') }).catch(() => {});
  await context.close();
  process.exit(1);
}
