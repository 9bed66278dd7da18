// A real OpenID Provider (panva/oidc-provider) for cairn's relying-party tests.
//
// One confidential client, one user who is logged in without a form, PKCE required, RS256 ID
// tokens. Test-only admin endpoints (loopback, no auth) let a test:
//   POST /admin/rotate           sign with a fresh key from now on (the old one stays published)
//   POST /admin/jwks?fail=1|0    make the JWKS endpoint answer 500 (or recover)
//   GET  /admin/stats            {"jwks_requests": n, "signing_kid": "...", "kids": [...]}
//   POST /admin/stats/reset      zero the counters
//
// Configuration (environment):
//   OP_PORT, OP_CLIENT_ID, OP_CLIENT_SECRET, OP_REDIRECT_URI (comma-separated)   required
//   OP_USER_SUB (alice), OP_USER_EMAIL (alice@example.test), OP_USER_NAME (Alice Example),
//   OP_USER_GROUPS (comma-separated; "platform,readers")
//
// Prints one line "listening <issuer>" on stdout when it accepts connections.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import http from 'node:http';

import Provider from 'oidc-provider';

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) {
    console.error(`missing environment variable ${name}`);
    process.exit(2);
  }
  return value;
};

const port = Number(env('OP_PORT'));
const issuer = `http://127.0.0.1:${port}`;
const client = {
  client_id: env('OP_CLIENT_ID'),
  client_secret: env('OP_CLIENT_SECRET'),
  redirect_uris: env('OP_REDIRECT_URI').split(',').filter(Boolean),
  grant_types: ['authorization_code'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
  id_token_signed_response_alg: 'RS256',
};
const user = {
  sub: env('OP_USER_SUB', 'alice'),
  email: env('OP_USER_EMAIL', 'alice@example.test'),
  name: env('OP_USER_NAME', 'Alice Example'),
  groups: env('OP_USER_GROUPS', 'platform,readers').split(',').filter(Boolean),
};

let keyCounter = 0;
function newSigningKey() {
  keyCounter += 1;
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kid = `op-key-${keyCounter}-${randomBytes(6).toString('hex')}`;
  return { ...privateKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' };
}

// Same cookie keys for every Provider instance, so sessions survive a key rotation.
const cookieKeys = [randomBytes(32).toString('hex')];

function makeProvider(keys) {
  const provider = new Provider(issuer, {
    clients: [client],
    jwks: { keys },
    cookies: { keys: cookieKeys },
    pkce: { required: () => true },
    features: { devInteractions: { enabled: false } },
    enabledJWA: { idTokenSigningAlgValues: ['RS256'] },
    // The user's claims go into the ID token itself (cairn does not call userinfo).
    conformIdTokenClaims: false,
    claims: {
      openid: ['sub', 'groups'],
      email: ['email', 'email_verified'],
      profile: ['name'],
    },
    async findAccount(_ctx, sub) {
      if (sub !== user.sub) return undefined;
      return {
        accountId: sub,
        async claims() {
          return { ...user, email_verified: true };
        },
      };
    },
    // First-party client: grant every requested scope without a consent screen.
    async loadExistingGrant(ctx) {
      const grantId = ctx.oidc.result?.consent?.grantId
        || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) return ctx.oidc.provider.Grant.find(grantId);
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId,
        accountId: ctx.oidc.session.accountId,
      });
      grant.addOIDCScope(ctx.oidc.params.scope ?? 'openid');
      await grant.save();
      return grant;
    },
    ttl: { Session: 3600, Interaction: 600, AuthorizationCode: 600, Grant: 3600 },
  });
  provider.on('server_error', (_ctx, err) => console.error('server_error', err));
  return provider;
}

let keys = [newSigningKey()];
let provider = makeProvider(keys);
let handler = provider.callback();
let jwksFailing = false;
let jwksRequests = 0;

function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

async function admin(req, res, url) {
  if (req.method === 'GET' && url.pathname === '/admin/stats') {
    return json(res, 200, {
      jwks_requests: jwksRequests,
      signing_kid: keys[0].kid,
      kids: keys.map((k) => k.kid),
    });
  }
  if (req.method === 'POST' && url.pathname === '/admin/stats/reset') {
    jwksRequests = 0;
    return json(res, 200, { jwks_requests: 0 });
  }
  if (req.method === 'POST' && url.pathname === '/admin/rotate') {
    // The new key signs from now on (first in the key set); the previous one stays published.
    keys = [newSigningKey(), keys[0]];
    provider = makeProvider(keys);
    handler = provider.callback();
    return json(res, 200, { signing_kid: keys[0].kid, kids: keys.map((k) => k.kid) });
  }
  if (req.method === 'POST' && url.pathname === '/admin/jwks') {
    jwksFailing = url.searchParams.get('fail') === '1';
    return json(res, 200, { failing: jwksFailing });
  }
  return json(res, 404, { error: 'not found' });
}

// The login "form": log the user in and finish the interaction at once.
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const result = details.prompt.name === 'login'
    ? { login: { accountId: user.sub } }
    : {}; // consent is never needed (loadExistingGrant), but finish anything else as is
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, issuer);
  const done = (err) => {
    console.error('request failed', req.method, url.pathname, err);
    if (!res.headersSent) json(res, 500, { error: 'server_error' });
  };
  if (url.pathname.startsWith('/admin/')) {
    admin(req, res, url).catch(done);
    return;
  }
  if (url.pathname.startsWith('/interaction/')) {
    interaction(req, res).catch(done);
    return;
  }
  if (url.pathname === '/jwks') {
    jwksRequests += 1;
    if (jwksFailing) {
      json(res, 500, { error: 'jwks unavailable (test switch)' });
      return;
    }
  }
  handler(req, res);
});

server.listen(port, '127.0.0.1', () => {
  console.log(`listening ${issuer}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
