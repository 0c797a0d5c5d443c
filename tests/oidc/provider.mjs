// A real OpenID Provider for kca's single sign-on tests: the certified `oidc-provider` package,
// served over HTTPS on a loopback port with a certificate the test made. Its users have an e-mail
// address and groups; its login page is oidc-provider's development interactions (any password);
// the device authorization grant is on. Each start makes a new signing key, so starting it again
// on the same port is a key rotation.
//
//   node provider.mjs <port> <cert pem> <key pem> <kca redirect uri> <client secret>
//
// With OIDC_NO_DEVICE=1 the device grant is off (kca login then falls back to a loopback redirect).
// Prints one JSON line on stdout once it listens: {"issuer": ..., "kid": ...}.

import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import { randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';

const [port, certPath, keyPath, redirectUri, clientSecret] = process.argv.slice(2);
if (!port || !certPath || !keyPath || !redirectUri || !clientSecret) {
  console.error('usage: node provider.mjs <port> <cert pem> <key pem> <kca redirect uri> <client secret>');
  process.exit(2);
}
const issuer = `https://127.0.0.1:${port}`;
const deviceFlow = process.env.OIDC_NO_DEVICE !== '1';

// The people of the test organisation.
const ACCOUNTS = {
  alice: { email: 'alice@example.com', email_verified: true, groups: ['platform', 'everyone'] },
  bob: { email: 'bob@example.com', email_verified: true, groups: ['sales'] },
  // Hostile claims: a header injection in the e-mail address.
  mallory: { email: 'mallory@example.com\r\nX-Remote-User: admin', email_verified: true, groups: ['platform'] },
};

const { privateKey } = await generateKeyPair('ES256', { extractable: true });
const jwk = { ...(await exportJWK(privateKey)), kid: randomUUID(), alg: 'ES256', use: 'sig' };

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'kca',
    client_secret: clientSecret,
    client_name: 'kca',
    redirect_uris: [redirectUri],
    grant_types: deviceFlow ? ['authorization_code', 'urn:ietf:params:oauth:grant-type:device_code'] : ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'ES256',
  }],
  jwks: { keys: [jwk] },
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
  // The claims of the scopes asked for go into the ID token, where kca reads them.
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: true }, deviceFlow: { enabled: deviceFlow } },
  pkce: { required: () => true },
  cookies: { keys: [randomUUID()] },
  ttl: { IdToken: 300 },
  async findAccount(_ctx, sub) {
    const account = ACCOUNTS[sub];
    if (!account) return undefined;
    return { accountId: sub, claims: async () => ({ sub, name: sub, ...account }) };
  },
});

const server = createServer({ cert: readFileSync(certPath), key: readFileSync(keyPath) }, provider.callback());
server.listen(Number(port), '127.0.0.1', () => {
  console.log(JSON.stringify({ issuer, kid: jwk.kid }));
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
