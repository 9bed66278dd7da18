// GitLab's OAuth token endpoint, played by panva/oidc-provider, for cairn's VCS tests.
//
// GitLab (Doorkeeper) rotates refresh tokens on every refresh, kills the old pair at once and
// lets exactly one of several concurrent refreshes win (it locks the token row). This server
// reproduces that with a "GitLab-like" adapter (default) or oidc-provider's own reuse detection
// (--strict: a replayed refresh token revokes the whole grant). See
// /work/shared/reference/runs-agents-vcs.md §3.2-3.3 and tests/support/vcs/README.md.
//
// Routes: /oauth/authorize (auto-login of the user + consent), /oauth/token.
// Test-only admin JSON endpoints (loopback, no auth), under /_admin/:
//   GET  stats[?client_id=]   token POSTs (total, by grant type), ok and invalid_grant counts
//   POST stats/reset
//   POST clients {client_id, client_secret, redirect_uris}   register a confidential client
//   POST revoke [{client_id}]  revoke every grant (of one client)
//   POST fail-next {n, mode: "500" | "hang" | "lost"}
//   POST config {delay_ms?, access_ttl?}
//   POST check {token}        is this access token active? (the fake forge asks)
//   POST grant {client_id, scope}   mint a fresh pair without a browser
//
// Arguments: --port N (required), --strict, --delay-ms N, --access-ttl S,
//   --clients JSON (list of {client_id, client_secret, redirect_uris}).
// Prints "listening <url>" on stdout when it accepts connections.

import http from 'node:http';
import { parseArgs } from 'node:util';
import * as querystring from 'node:querystring';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    strict: { type: 'boolean', default: false },
    'delay-ms': { type: 'string', default: '0' },
    'access-ttl': { type: 'string', default: '7200' },
    clients: { type: 'string', default: '[]' },
    user: { type: 'string', default: 'alice' },
  },
});
if (!args.port) {
  console.error('usage: node gitlab.mjs --port N [--strict] [--delay-ms N] [--access-ttl S] [--clients JSON]');
  process.exit(2);
}
const port = Number(args.port);
const issuer = `http://127.0.0.1:${port}`;
const strict = args.strict;
const user = args.user;
let delayMs = Number(args['delay-ms']);
let accessTtl = Number(args['access-ttl']);
const SCOPES = ['api', 'read_api', 'read_user', 'read_repository', 'write_repository', 'openid', 'profile', 'email'];
const DOORKEEPER_INVALID_GRANT = 'The provided authorization grant is invalid, expired, revoked, '
  + 'does not match the redirection URI used in the authorization request, or was issued to '
  + 'another client.';

// ---- storage: oidc-provider's memory adapter, plus GitLab's refresh semantics ----------------
const store = new Map(); // `${model}:${id}` -> { payload, expiresAt }
const grantIndex = new Map(); // grantId -> Set of store keys

function live(key) {
  const entry = store.get(key);
  if (!entry) return undefined;
  if (entry.expiresAt && entry.expiresAt < Date.now()) {
    store.delete(key);
    return undefined;
  }
  return entry;
}

function destroyGrant(grantId) {
  for (const key of grantIndex.get(grantId) ?? []) store.delete(key);
  grantIndex.delete(grantId);
}

class Adapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    store.set(key, { payload, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : undefined });
    if (payload.grantId) {
      if (!grantIndex.has(payload.grantId)) grantIndex.set(payload.grantId, new Set());
      grantIndex.get(payload.grantId).add(key);
    }
  }

  async find(id) {
    return live(this.key(id))?.payload;
  }

  async findByUserCode() {
    return undefined;
  }

  async findByUid(uid) {
    for (const [key, entry] of store) {
      if (key.startsWith(`${this.model}:`) && entry.payload.uid === uid) return entry.payload;
    }
    return undefined;
  }

  async consume(id) {
    const entry = live(this.key(id));
    if (!entry) return;
    if (!strict && this.model === 'RefreshToken') {
      // Doorkeeper revokes the used refresh token and its access token; the grant's earlier
      // access tokens die with it (GitLab: "invalidates the existing access_token and
      // refresh_token"). The new pair is created after this returns.
      store.delete(this.key(id));
      const { grantId } = entry.payload;
      for (const key of grantIndex.get(grantId) ?? []) {
        if (key.startsWith('AccessToken:')) store.delete(key);
      }
      return;
    }
    entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    destroyGrant(grantId);
  }
}

// ---- the provider ------------------------------------------------------------------------------
const clientDefaults = {
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_post',
};
const staticClients = JSON.parse(args.clients).map((c) => ({ ...clientDefaults, ...c }));

const provider = new Provider(issuer, {
  adapter: Adapter,
  clients: staticClients,
  routes: { authorization: '/oauth/authorize', token: '/oauth/token' },
  scopes: SCOPES,
  claims: { openid: ['sub'] },
  pkce: { required: () => false },
  features: { devInteractions: { enabled: false } },
  rotateRefreshToken: true,
  issueRefreshToken: async () => true,
  ttl: {
    AccessToken: () => accessTtl,
    RefreshToken: 30 * 24 * 3600,
    AuthorizationCode: 600,
    Grant: 365 * 24 * 3600,
    Session: 3600,
    Interaction: 600,
  },
  async findAccount(_ctx, sub) {
    if (sub !== user) return undefined;
    return { accountId: sub, async claims() { return { sub }; } };
  },
  // GitLab asks the user once per application; the test user always agrees.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) {
      const existing = await ctx.oidc.provider.Grant.find(grantId);
      if (existing) {
        existing.addOIDCScope(ctx.oidc.params.scope ?? 'api');
        await existing.save();
        return existing;
      }
    }
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope(ctx.oidc.params.scope ?? 'api');
    await grant.save();
    return grant;
  },
});
provider.on('server_error', (_ctx, err) => console.error('server_error', err));

// ---- stats -------------------------------------------------------------------------------------
const emptyStats = () => ({ token_posts: 0, by_grant_type: {}, ok: 0, invalid_grant: 0 });
let stats = { all: emptyStats(), clients: {} };
function bump(clientId, fn) {
  fn(stats.all);
  if (clientId) {
    stats.clients[clientId] ??= emptyStats();
    fn(stats.clients[clientId]);
  }
}

// GitLab's response shape: created_at (epoch seconds), "Bearer", Doorkeeper's error text.
provider.use(async (ctx, next) => {
  await next();
  if (ctx.path !== '/oauth/token' || ctx.method !== 'POST') return;
  const clientId = ctx.oidc?.client?.clientId ?? ctx.oidc?.params?.client_id;
  if (ctx.status === 200 && ctx.body && typeof ctx.body === 'object') {
    const { id_token: _ignored, ...rest } = ctx.body;
    ctx.body = { ...rest, token_type: 'Bearer', created_at: Math.floor(Date.now() / 1000) };
    bump(clientId, (s) => { s.ok += 1; });
  } else if (ctx.body?.error === 'invalid_grant') {
    ctx.body = { error: 'invalid_grant', error_description: DOORKEEPER_INVALID_GRANT };
    bump(clientId, (s) => { s.invalid_grant += 1; });
  }
});

const handler = provider.callback();

// ---- the token endpoint front: stats, Basic → body, delay, failures, the row lock -------------
let failNext = { n: 0, mode: '500' };
const rowLocks = new Map(); // refresh token -> tail promise (GitLab's `lock!` on the token row)
const hanging = new Set();

function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

async function readBody(req, limit = 64 * 1024) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw new Error('request body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

async function withRowLock(key, fn) {
  if (!key) return fn();
  const previous = rowLocks.get(key) ?? Promise.resolve();
  let release;
  const mine = new Promise((resolve) => { release = resolve; });
  const tail = previous.then(() => mine);
  rowLocks.set(key, tail);
  await previous;
  try {
    return await fn();
  } finally {
    release();
    if (rowLocks.get(key) === tail) rowLocks.delete(key);
  }
}

// Let oidc-provider answer, but capture the answer instead of sending it ("lost" mode).
function swallow(res) {
  return new Proxy(res, {
    get(target, prop) {
      if (prop === 'writeHead' || prop === 'setHeader' || prop === 'removeHeader') return () => {};
      if (prop === 'end') return () => { target.emit('swallowed'); };
      if (prop === 'headersSent') return false;
      const value = Reflect.get(target, prop);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

async function tokenEndpoint(req, res) {
  let raw = await readBody(req);
  const form = querystring.parse(raw);
  const auth = req.headers.authorization;
  if (auth?.startsWith('Basic ')) {
    // GitLab accepts the client credentials in the body or as HTTP Basic; oidc-provider takes
    // one method per client, so move Basic credentials into the body.
    const decoded = Buffer.from(auth.slice(6), 'base64').toString('utf8');
    const sep = decoded.indexOf(':');
    form.client_id = decodeURIComponent(decoded.slice(0, sep));
    form.client_secret = decodeURIComponent(decoded.slice(sep + 1));
    delete req.headers.authorization;
    raw = querystring.stringify(form);
  }
  const clientId = typeof form.client_id === 'string' ? form.client_id : undefined;
  bump(clientId, (s) => {
    s.token_posts += 1;
    const gty = String(form.grant_type ?? 'none');
    s.by_grant_type[gty] = (s.by_grant_type[gty] ?? 0) + 1;
  });
  if (delayMs > 0) await new Promise((resolve) => { setTimeout(resolve, delayMs); });
  let mode;
  if (failNext.n > 0) {
    failNext.n -= 1;
    mode = failNext.mode;
  }
  if (mode === '500') return json(res, 500, { error: 'server_error', error_description: 'test switch' });
  if (mode === 'hang') {
    hanging.add(res);
    setTimeout(() => { hanging.delete(res); res.destroy(); }, 120_000).unref();
    return undefined;
  }
  req.body = raw; // oidc-provider reads an already parsed body from req.body
  req.headers['content-length'] = String(Buffer.byteLength(raw));
  const lockKey = form.grant_type === 'refresh_token' ? String(form.refresh_token ?? '') : '';
  return withRowLock(lockKey, async () => {
    if (mode === 'lost') {
      const fake = swallow(res);
      await new Promise((resolve) => {
        res.once('swallowed', resolve);
        handler(req, fake);
      });
      return json(res, 500, { error: 'server_error', error_description: 'test switch (processed)' });
    }
    await new Promise((resolve) => {
      res.once('finish', resolve);
      res.once('close', resolve);
      handler(req, res);
    });
    return undefined;
  });
}

// ---- admin -------------------------------------------------------------------------------------
async function mintGrant(clientId, scope) {
  const client = await provider.Client.find(clientId);
  if (!client) throw Object.assign(new Error(`unknown client ${clientId}`), { status: 404 });
  const grant = new provider.Grant({ clientId, accountId: user });
  grant.addOIDCScope(scope);
  const grantId = await grant.save();
  const common = { accountId: user, client, grantId, scope, gty: 'authorization_code' };
  const at = new provider.AccessToken({ ...common });
  const rt = new provider.RefreshToken({ ...common, iiat: Math.floor(Date.now() / 1000), rotations: 0 });
  const accessToken = await at.save();
  const refreshToken = await rt.save();
  return {
    access_token: accessToken,
    token_type: 'Bearer',
    expires_in: at.expiration,
    refresh_token: refreshToken,
    scope,
    created_at: Math.floor(Date.now() / 1000),
  };
}

function checkToken(token) {
  const entry = store.get(`AccessToken:${token}`);
  if (!entry) return { active: false, reason: 'revoked' };
  if (entry.expiresAt && entry.expiresAt < Date.now()) return { active: false, reason: 'expired' };
  const p = entry.payload;
  const grant = live(`Grant:${p.grantId}`);
  if (!grant) return { active: false, reason: 'revoked' };
  return {
    active: true,
    user: p.accountId,
    client_id: p.clientId,
    scope: p.scope,
    expires_at: entry.expiresAt ? Math.floor(entry.expiresAt / 1000) : null,
  };
}

async function admin(req, res, url) {
  const route = `${req.method} ${url.pathname.slice('/_admin/'.length)}`;
  const body = req.method === 'POST' ? JSON.parse((await readBody(req)) || '{}') : {};
  switch (route) {
    case 'GET stats': {
      const clientId = url.searchParams.get('client_id');
      return json(res, 200, clientId ? (stats.clients[clientId] ?? emptyStats()) : stats.all);
    }
    case 'POST stats/reset':
      stats = { all: emptyStats(), clients: {} };
      return json(res, 200, stats.all);
    case 'POST clients': {
      const client = { ...clientDefaults, ...body };
      if (!client.client_id || !client.client_secret || !Array.isArray(client.redirect_uris)) {
        return json(res, 400, { error: 'client_id, client_secret and redirect_uris are required' });
      }
      await new Adapter('Client').upsert(client.client_id, client);
      return json(res, 201, { client_id: client.client_id });
    }
    case 'POST revoke': {
      let revoked = 0;
      for (const [key, entry] of [...store]) {
        if (key.startsWith('Grant:') && (!body.client_id || entry.payload.clientId === body.client_id)) {
          destroyGrant(key.slice('Grant:'.length));
          store.delete(key);
          revoked += 1;
        }
      }
      return json(res, 200, { revoked_grants: revoked });
    }
    case 'POST fail-next': {
      const mode = body.mode ?? '500';
      if (!['500', 'hang', 'lost'].includes(mode)) return json(res, 400, { error: `bad mode ${mode}` });
      failNext = { n: Number(body.n ?? 1), mode };
      return json(res, 200, failNext);
    }
    case 'POST config':
      if (body.delay_ms !== undefined) delayMs = Number(body.delay_ms);
      if (body.access_ttl !== undefined) accessTtl = Number(body.access_ttl);
      return json(res, 200, { delay_ms: delayMs, access_ttl: accessTtl, strict });
    case 'POST check':
      return json(res, 200, checkToken(String(body.token ?? '')));
    case 'POST grant':
      return json(res, 201, await mintGrant(String(body.client_id), String(body.scope ?? 'api')));
    default:
      return json(res, 404, { error: `no admin route ${route}` });
  }
}

// The login "form": log the user in and finish the interaction at once.
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const result = details.prompt.name === 'login' ? { login: { accountId: user } } : {};
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, issuer);
  const done = (err) => {
    if (err?.status === 404) return json(res, 404, { error: err.message });
    console.error('request failed', req.method, url.pathname, err);
    if (!res.headersSent) json(res, 500, { error: 'server_error' });
    return undefined;
  };
  if (url.pathname.startsWith('/_admin/')) {
    const remote = req.socket.remoteAddress;
    if (remote !== '127.0.0.1' && remote !== '::1' && remote !== '::ffff:127.0.0.1') {
      return json(res, 403, { error: 'admin endpoints are loopback only' });
    }
    admin(req, res, url).catch(done);
    return undefined;
  }
  if (url.pathname.startsWith('/interaction/')) {
    interaction(req, res).catch(done);
    return undefined;
  }
  if (url.pathname === '/oauth/token' && req.method === 'POST') {
    tokenEndpoint(req, res).catch(done);
    return undefined;
  }
  handler(req, res);
  return undefined;
});

server.listen(port, '127.0.0.1', () => {
  console.log(`listening ${issuer} (${strict ? 'strict' : 'gitlab-like'})`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    for (const res of hanging) res.destroy();
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 500).unref();
  });
}
