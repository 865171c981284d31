// A local OpenID Connect provider for Tollgate's end-to-end tests and demo.
//
// It runs the real `oidc-provider` package on 127.0.0.1 with one public
// client, `tollgate-cli` (no client secret, so PKCE S256 is required), and
// accepts any login name with any password through the package's
// development login and consent pages.
//
// Usage: node server.mjs [--port N] [--redirect-ports 8400,8401]
//
// Settings (each flag wins over its environment variable):
//   --port, OIDC_PORT                    port to listen on; 0 (the default)
//                                        binds a free port
//   --redirect-ports, OIDC_REDIRECT_PORTS comma-separated callback ports; the
//                                        client gets http://127.0.0.1:<p>/callback
//                                        for each. Without any, the client is a
//                                        native app and any loopback port works
//                                        (RFC 8252, section 7.3).
//   OIDC_GROUPS                          JSON map from login (or email) to a list
//                                        of group names for the `groups` claim
//   OIDC_ID_TOKEN_TTL                    ID token lifetime in seconds (3600)
//   OIDC_ACCESS_TOKEN_TTL                access token lifetime in seconds (3600)
//   OIDC_REFRESH_TOKEN_TTL               refresh token lifetime in seconds (1209600)
//   OIDC_CLIENT_ID                       client id (tollgate-cli)
//   OIDC_DEVICE_CODE_TTL                 device code lifetime in seconds (600)
//   OIDC_DEVICE_INTERVAL                 the polling `interval` in seconds that
//                                        the device authorization response
//                                        announces; unset, it announces none
//                                        and clients use 5 (RFC 8628)
//   OIDC_DEVICE_ENFORCE_INTERVAL         `1` sends `slow_down` for a device code
//                                        poll that comes sooner than the
//                                        interval after the device authorization
//                                        or the previous poll, and adds 5 s to
//                                        that code's interval each time
//                                        (RFC 8628, section 3.5)
//
// Test-only endpoints, outside the OpenID Connect routes:
//   GET  /__stats                 request counts as JSON (see `emptyStats`)
//   POST /__stats/reset           sets every count back to zero
//   POST /__device-code-ttl?seconds=N
//                                 sets the lifetime of device codes issued
//                                 from now on
//   GET  /__issued-tokens         every access, ID and refresh token that the
//                                 token endpoint returned, as a JSON list, so
//                                 tests can check that no log contains one
//   GET  /__issued-device-codes   every device code the device authorization
//                                 endpoint returned, as a JSON list, for the
//                                 same check
//   POST /__revoke-refresh-tokens revokes every refresh token issued so far,
//                                 or only the account's with `?sub=LOGIN`, so
//                                 a later refresh gets `invalid_grant`
//
// Once listening it prints `ready http://127.0.0.1:<port>` on stdout. State
// lives in memory and ends with the process.

import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import http from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const DEVICE_CODE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

// The polling interval clients use when the provider announces none.
const DEFAULT_DEVICE_INTERVAL = 5;

// How much each `slow_down` adds to a device code's interval.
const SLOW_DOWN_STEP = 5;

// The largest token request body the interval check reads.
const MAX_TOKEN_BODY = 56 * 1024;

function fail(message) {
  process.stderr.write(`oidc: ${message}\n`);
  process.exit(2);
}

function parseSeconds(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') {
    return fallback;
  }
  const value = Number(raw);
  if (!Number.isInteger(value) || value <= 0) {
    fail(`invalid ${name}=${JSON.stringify(raw)}: expected a positive number of seconds`);
  }
  return value;
}

function parseFlag(name) {
  const raw = process.env[name];
  if (raw === undefined || raw === '' || raw === '0') {
    return false;
  }
  if (raw !== '1') {
    fail(`invalid ${name}=${JSON.stringify(raw)}: expected 1 (on) or 0 (off)`);
  }
  return true;
}

function parsePort(label, raw) {
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0 || value > 65535) {
    fail(`invalid ${label} ${JSON.stringify(raw)}: expected a port number from 0 to 65535`);
  }
  return value;
}

function readSettings() {
  const { values } = parseArgs({
    options: {
      port: { type: 'string' },
      'redirect-ports': { type: 'string' },
    },
  });

  const port = parsePort('port', values.port ?? process.env.OIDC_PORT ?? '0');

  const redirectList = values['redirect-ports'] ?? process.env.OIDC_REDIRECT_PORTS ?? '';
  const redirectPorts = redirectList
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '')
    .map((item) => parsePort('redirect port', item));

  let groups = {};
  if (process.env.OIDC_GROUPS) {
    try {
      groups = JSON.parse(process.env.OIDC_GROUPS);
    } catch (error) {
      fail(`invalid OIDC_GROUPS: ${error.message}; expected JSON like {"alice": ["admins"]}`);
    }
    if (typeof groups !== 'object' || groups === null || Array.isArray(groups)) {
      fail('invalid OIDC_GROUPS: expected a JSON object mapping a login to a list of groups');
    }
  }

  return {
    port,
    redirectPorts,
    groups,
    clientId: process.env.OIDC_CLIENT_ID || 'tollgate-cli',
    idTokenTtl: parseSeconds('OIDC_ID_TOKEN_TTL', 3600),
    accessTokenTtl: parseSeconds('OIDC_ACCESS_TOKEN_TTL', 3600),
    refreshTokenTtl: parseSeconds('OIDC_REFRESH_TOKEN_TTL', 14 * 24 * 3600),
    deviceCodeTtl: parseSeconds('OIDC_DEVICE_CODE_TTL', 600),
    deviceInterval: parseSeconds('OIDC_DEVICE_INTERVAL', null),
    enforceDeviceInterval: parseFlag('OIDC_DEVICE_ENFORCE_INTERVAL'),
  };
}

function emptyStats() {
  return {
    // GET or POST /auth: one per login a client starts.
    authorization_requests: 0,
    // POST /token, by grant_type, whatever the outcome.
    token_requests: {},
    // POST /token responses with an error status, by grant_type.
    token_errors: {},
    // POST /device/auth: one per device flow a client starts.
    device_authorization_requests: 0,
    // Login and consent pages shown, by prompt name (`login`, `consent`).
    interactions: {},
    // Device code polls of the token endpoint in order, keyed by a fingerprint
    // of the device code (the first 16 hex digits of its SHA-256). Each poll
    // has its arrival time in milliseconds since the Unix epoch and its
    // outcome: the OAuth error code, or `tokens`.
    device_polls: {},
  };
}

// Builds the account for a login name: `sub` is the login, the email is the
// login when it contains `@`, else `<login>@example.com`.
function accountFor(login, groupsByLogin) {
  const email = login.includes('@') ? login : `${login}@example.com`;
  const groups = groupsByLogin[login] ?? groupsByLogin[email] ?? [];
  return {
    accountId: login,
    async claims() {
      return { sub: login, email, email_verified: true, groups };
    },
  };
}

function signingKeys() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { keys: [{ ...jwk, use: 'sig', alg: 'RS256', kid: randomBytes(8).toString('hex') }] };
}

function clientMetadata(settings, port) {
  const common = {
    client_id: settings.clientId,
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code', 'refresh_token', DEVICE_CODE_GRANT],
    response_types: ['code'],
    scope: 'openid email offline_access groups',
  };
  if (settings.redirectPorts.length === 0) {
    // A native client may use any port on the loopback address.
    return {
      ...common,
      application_type: 'native',
      redirect_uris: [`http://127.0.0.1:${port}/callback`],
    };
  }
  return {
    ...common,
    application_type: 'web',
    redirect_uris: settings.redirectPorts.map((p) => `http://127.0.0.1:${p}/callback`),
  };
}

function buildProvider(settings, issuer, port, state) {
  const { stats, refreshTokens, issuedTokens } = state;
  const provider = new Provider(issuer, {
    clients: [clientMetadata(settings, port)],
    jwks: signingKeys(),
    cookies: { keys: [randomBytes(32).toString('hex')] },
    scopes: ['openid', 'email', 'offline_access', 'groups'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    // Put the scope claims (email, groups) into the ID token itself, since
    // the Tollgate backend reads them from there and never calls userinfo.
    conformIdTokenClaims: false,
    features: {
      devInteractions: { enabled: true },
      deviceFlow: { enabled: true },
      revocation: { enabled: true },
    },
    pkce: { required: () => true },
    // oidc-provider drops `offline_access` from the granted scopes unless the
    // authorization request also contains `prompt=consent`, which real clients
    // do not send. Issue a refresh token on every exchange instead, and keep
    // it valid after the browser session ends.
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    expiresWithSession: async () => false,
    ttl: {
      AccessToken: settings.accessTokenTtl,
      IdToken: settings.idTokenTtl,
      RefreshToken: settings.refreshTokenTtl,
      AuthorizationCode: 300,
      DeviceCode: () => state.deviceCodeTtl,
      Grant: settings.refreshTokenTtl,
      Interaction: 3600,
      Session: 14 * 24 * 3600,
    },
    async findAccount(_ctx, sub) {
      return accountFor(sub, settings.groups);
    },
  });

  provider.on('refresh_token.saved', (token) => {
    refreshTokens.set(token.jti, token.accountId);
  });
  provider.on('interaction.started', (_ctx, prompt) => {
    stats.interactions[prompt.name] = (stats.interactions[prompt.name] ?? 0) + 1;
  });
  provider.on('server_error', (_ctx, error) => {
    process.stderr.write(`oidc: server error: ${error.stack ?? error}\n`);
  });

  // Counts requests by route once oidc-provider has parsed them, and
  // records device code polls, including those the interval check rejected.
  provider.use(async (ctx, next) => {
    const arrived = Date.now();
    await next();
    const slowDown = ctx.state.slowDown;
    const route = slowDown ? 'token' : ctx.oidc?.route;
    const params = slowDown ? slowDown.params : ctx.oidc?.params;
    if (route === 'authorization') {
      stats.authorization_requests += 1;
    } else if (route === 'device_authorization') {
      stats.device_authorization_requests += 1;
      if (ctx.status === 200 && typeof ctx.body?.device_code === 'string') {
        if (settings.deviceInterval !== null) {
          ctx.body.interval = settings.deviceInterval;
        }
        state.issuedDeviceCodes.push(ctx.body.device_code);
        state.deviceCodes.set(fingerprint(ctx.body.device_code), {
          lastRequest: arrived,
          interval: settings.deviceInterval ?? DEFAULT_DEVICE_INTERVAL,
        });
      }
    } else if (route === 'token') {
      const grant = params?.grant_type ?? 'unknown';
      stats.token_requests[grant] = (stats.token_requests[grant] ?? 0) + 1;
      if (ctx.status >= 400) {
        stats.token_errors[grant] = (stats.token_errors[grant] ?? 0) + 1;
      }
      if (grant === DEVICE_CODE_GRANT && typeof params.device_code === 'string') {
        const key = fingerprint(params.device_code);
        const outcome = ctx.status === 200 ? 'tokens' : (ctx.body?.error ?? `HTTP ${ctx.status}`);
        (stats.device_polls[key] ??= []).push({ at_ms: arrived, outcome });
      }
      for (const kind of ['access_token', 'id_token', 'refresh_token']) {
        if (typeof ctx.body?.[kind] === 'string') {
          issuedTokens.push(ctx.body[kind]);
        }
      }
    }
  });

  if (settings.enforceDeviceInterval) {
    provider.use(deviceIntervalCheck(state));
  }

  return provider;
}

// Returns a short, stable name for a device code that does not reveal it.
function fingerprint(deviceCode) {
  return createHash('sha256').update(deviceCode).digest('hex').slice(0, 16);
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req.iterator({ destroyOnReturn: false })) {
    size += chunk.length;
    if (size > MAX_TOKEN_BODY) {
      throw new Error(`token request body larger than ${MAX_TOKEN_BODY} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

// Sends `slow_down` (RFC 8628, section 3.5) for a device code poll that
// comes sooner than the code's interval after the device authorization or
// the previous poll, and adds 5 s to that code's interval. Other token
// requests pass through with the body it read in `req.body`, where
// oidc-provider finds it (and prints a warning once on stderr).
function deviceIntervalCheck(state) {
  return async (ctx, next) => {
    if (ctx.method !== 'POST' || ctx.path !== '/token'
      || !ctx.is('application/x-www-form-urlencoded')) {
      return next();
    }
    const arrived = Date.now();
    const text = await readBody(ctx.req);
    ctx.req.body = text;
    const params = Object.fromEntries(new URLSearchParams(text));
    if (params.grant_type !== DEVICE_CODE_GRANT || typeof params.device_code !== 'string') {
      return next();
    }
    const code = state.deviceCodes.get(fingerprint(params.device_code));
    if (code === undefined) {
      return next();
    }
    const early = arrived - code.lastRequest < code.interval * 1000;
    code.lastRequest = arrived;
    if (!early) {
      return next();
    }
    code.interval += SLOW_DOWN_STEP;
    ctx.state.slowDown = { params };
    ctx.status = 400;
    ctx.set('cache-control', 'no-store');
    ctx.body = {
      error: 'slow_down',
      error_description: `poll at most every ${code.interval} seconds`,
    };
    return undefined;
  };
}

// Destroys the stored refresh tokens of one account, or of all when `sub`
// is null, and returns how many were destroyed.
async function revokeRefreshTokens(provider, refreshTokens, sub) {
  let revoked = 0;
  for (const [jti, accountId] of [...refreshTokens]) {
    if (sub !== null && accountId !== sub) {
      continue;
    }
    const token = await provider.RefreshToken.find(jti, { ignoreExpiration: true });
    if (token) {
      await token.destroy();
      revoked += 1;
    }
    refreshTokens.delete(jti);
  }
  return revoked;
}

function sendJson(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(`${JSON.stringify(body)}\n`);
}

async function handleTestRoute(req, res, url, state) {
  if (url.pathname === '/__stats' && req.method === 'GET') {
    sendJson(res, 200, state.stats);
  } else if (url.pathname === '/__stats/reset' && req.method === 'POST') {
    Object.assign(state.stats, emptyStats());
    sendJson(res, 200, state.stats);
  } else if (url.pathname === '/__device-code-ttl' && req.method === 'POST') {
    const seconds = Number(url.searchParams.get('seconds'));
    if (!Number.isInteger(seconds) || seconds <= 0) {
      sendJson(res, 400, {
        error: 'invalid_request',
        message: `seconds=${url.searchParams.get('seconds')} is not a positive whole number`,
      });
      return;
    }
    state.deviceCodeTtl = seconds;
    sendJson(res, 200, { device_code_ttl: seconds });
  } else if (url.pathname === '/__issued-tokens' && req.method === 'GET') {
    sendJson(res, 200, state.issuedTokens);
  } else if (url.pathname === '/__issued-device-codes' && req.method === 'GET') {
    sendJson(res, 200, state.issuedDeviceCodes);
  } else if (url.pathname === '/__revoke-refresh-tokens' && req.method === 'POST') {
    const sub = url.searchParams.get('sub');
    const revoked = await revokeRefreshTokens(state.provider, state.refreshTokens, sub);
    sendJson(res, 200, { revoked });
  } else {
    sendJson(res, 404, { error: 'not_found', message: `no test route ${req.method} ${url.pathname}` });
  }
}

async function main() {
  const settings = readSettings();
  const state = {
    stats: emptyStats(),
    refreshTokens: new Map(),
    issuedTokens: [],
    issuedDeviceCodes: [],
    // Interval-check state per device code fingerprint.
    deviceCodes: new Map(),
    deviceCodeTtl: settings.deviceCodeTtl,
    provider: null,
    handler: null,
  };

  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    if (url.pathname.startsWith('/__')) {
      handleTestRoute(req, res, url, state).catch((error) => {
        process.stderr.write(`oidc: test route ${url.pathname} failed: ${error.stack ?? error}\n`);
        sendJson(res, 500, { error: 'server_error', message: String(error) });
      });
      return;
    }
    state.handler(req, res);
  });

  // Listen first, so that port 0 resolves to the real port before the issuer
  // URL (which contains it) is fixed. No request is served before then.
  server.on('error', (error) => fail(`cannot listen on 127.0.0.1:${settings.port}: ${error.message}`));
  await new Promise((resolve) => server.listen(settings.port, '127.0.0.1', resolve));
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;

  state.provider = buildProvider(settings, issuer, port, state);
  state.handler = state.provider.callback();

  const stop = () => {
    server.closeAllConnections();
    server.close(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);

  process.stdout.write(`ready ${issuer}\n`);
}

main().catch((error) => fail(error.stack ?? String(error)));
