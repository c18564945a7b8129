// provider.mjs: owns the OpenID provider the sign-on test (tests/tests/oidc.rs) signs people on
// at: a real oidc-provider on loopback with one static confidential client, the test's people
// with their roles in a `roles` claim, a plain sign-in form of its own (no page here loads
// anything from elsewhere), consent pre-approved for that one client, and RP-initiated logout.
//
// Run: node provider.mjs, configured by environment:
//   OIDC_REDIRECT_URI              the node's /auth/callback (registered for the client)
//   OIDC_POST_LOGOUT_REDIRECT_URI  where to send the browser after sign-out (registered)
//   OIDC_CLIENT_ID, OIDC_CLIENT_SECRET  the client (defaults: slidemesh, a fixed test secret)
//   OIDC_PORT                      port on 127.0.0.1 (default 0: any free one)
// It prints `oidc-provider issuer http://127.0.0.1:PORT` on stdout once it listens, and
// serves until killed.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

/** The test's people: account, password, display name, roles. */
const PEOPLE = {
  jsmith: { password: 'jsmith-password', name: 'Jane Smith', roles: ['pathologist'] },
  akhan: { password: 'akhan-password', name: 'Ali Khan', roles: ['student'] },
};

const CLIENT_ID = process.env.OIDC_CLIENT_ID || 'slidemesh';
const CLIENT_SECRET = process.env.OIDC_CLIENT_SECRET || 'a-test-oidc-client-secret-5d1a8e0c';
const REDIRECT_URI = process.env.OIDC_REDIRECT_URI;
const POST_LOGOUT_REDIRECT_URI = process.env.OIDC_POST_LOGOUT_REDIRECT_URI;
if (!REDIRECT_URI || !POST_LOGOUT_REDIRECT_URI) {
  console.error('provider.mjs: set OIDC_REDIRECT_URI and OIDC_POST_LOGOUT_REDIRECT_URI');
  process.exit(2);
}

/** Escapes text for HTML. */
function esc(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title></head>
<body><main><h1>${esc(title)}</h1>${body}</main></body></html>`;
}

// A signing key made for this run: the ID tokens' RS256 signatures verify against the JWKS the
// provider publishes from it.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-key-1', use: 'sig', alg: 'RS256' };

const configuration = {
  clients: [{
    client_id: CLIENT_ID,
    client_secret: CLIENT_SECRET,
    redirect_uris: [REDIRECT_URI],
    post_logout_redirect_uris: [POST_LOGOUT_REDIRECT_URI],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    client_name: 'slidemesh node',
  }],
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  // The scope `roles` releases the `roles` claim; `profile` the account name.
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    roles: ['roles'],
  },
  // Claims the scopes release go into the ID token too, not only to the userinfo endpoint.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: {
      enabled: true,
      logoutSource(ctx, form) {
        ctx.body = page('Sign out of the test provider?', `${form}
<button type="submit" form="op.logoutForm" name="logout" value="yes" id="confirm-logout">Yes, sign me out</button>`);
      },
      postLogoutSuccessSource(ctx) {
        ctx.body = page('Signed out', '<p>You are signed out of the test provider.</p>');
      },
    },
  },
  interactions: {
    url: (ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  async findAccount(ctx, id) {
    const person = PEOPLE[id];
    if (!person) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, preferred_username: id, name: person.name, roles: person.roles };
      },
    };
  },
  // The node is the trust's own application: its people are not asked to consent to it.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    if (ctx.oidc.client.clientId !== CLIENT_ID) return undefined;
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid profile roles');
    await grant.save();
    return grant;
  },
  renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Sign-in error', `<pre id="error">${esc(JSON.stringify(out))}</pre>`);
  },
};

const server = createServer();
server.listen(Number(process.env.OIDC_PORT || 0), '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, configuration);
  const oidc = provider.callback();

  /** The sign-in form and its submission, at /interaction/{uid}. */
  async function interaction(req, res, uid) {
    const details = await provider.interactionDetails(req, res);
    if (details.uid !== uid) throw new Error('interaction mismatch');
    if (req.method === 'GET') {
      const failed = new URL(req.url, issuer).searchParams.has('failed');
      res.setHeader('Content-Type', 'text/html; charset=utf-8');
      res.end(page('Sign in to the test provider', `${failed ? '<p id="failed">Wrong account or password.</p>' : ''}
<form method="post" action="/interaction/${esc(uid)}" autocomplete="off">
  <label>Account <input name="login" id="login" required></label>
  <label>Password <input name="password" id="password" type="password" required></label>
  <button type="submit" id="sign-in">Sign in</button>
</form>`));
      return;
    }
    const body = await new Promise((resolve, reject) => {
      let text = '';
      req.setEncoding('utf8');
      req.on('data', (chunk) => { text += chunk; if (text.length > 10_000) req.destroy(); });
      req.on('end', () => resolve(new URLSearchParams(text)));
      req.on('error', reject);
    });
    const login = body.get('login') ?? '';
    const person = Object.hasOwn(PEOPLE, login) ? PEOPLE[login] : null;
    if (!person || person.password !== body.get('password')) {
      res.statusCode = 303;
      res.setHeader('Location', `/interaction/${encodeURIComponent(uid)}?failed=1`);
      res.end();
      return;
    }
    await provider.interactionFinished(req, res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
  }

  server.on('request', (req, res) => {
    const match = /^\/interaction\/([^/?]+)/.exec(req.url);
    if (!match) {
      oidc(req, res);
      return;
    }
    interaction(req, res, decodeURIComponent(match[1])).catch((err) => {
      console.error('interaction failed:', err);
      res.statusCode = 400;
      res.setHeader('Content-Type', 'text/html; charset=utf-8');
      res.end(page('Sign-in error', `<pre>${esc(err.message)}</pre>`));
    });
  });
  console.log(`oidc-provider issuer ${issuer}`);
});
