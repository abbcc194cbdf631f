'use strict';
// UserRefreshClient / OAuth2Client: refresh-token grant, getTokenInfo, verifyIdToken.
//
// usage: node user_refresh.js endpoints|proxy
//   endpoints: `new UserRefreshClient({..., endpoints: {oauth2TokenUrl, tokenInfoUrl, ...CertsUrl}})` at keyless.
//   proxy:     Google's default URLs (oauth2.googleapis.com, www.googleapis.com) through HTTPS_PROXY.
// env: KEYLESS_URL, OWNER_FILE, TARGET, AUDIENCE

const fs = require('fs');
const {OAuth2Client} = require('google-auth-library');
const c = require('./_common');

const route = process.argv[2];
if (!['endpoints', 'proxy'].includes(route)) throw new Error(`unknown route ${route}`);
const endpoints = route === 'endpoints';
const target = c.env('TARGET');
const audience = c.env('AUDIENCE');
const client = c.ownerClient({endpoints});

// An ID token for `target`, minted straight from keyless with the owner's token.
async function mintIdToken(aud) {
  const {token} = await client.getAccessToken();
  const {status, body} = await c.keylessJson(`/v1/projects/-/serviceAccounts/${target}:generateIdToken`, {
    method: 'POST',
    headers: {authorization: `Bearer ${token}`, 'content-type': 'application/json'},
    body: JSON.stringify({audience: aud, includeEmail: true}),
  });
  if (status !== 200) throw new Error(`generateIdToken: ${status} ${JSON.stringify(body)}`);
  return body.token;
}

c.run([
  ['tokenUrl', async () => client.endpoints.oauth2TokenUrl.toString()],
  ['refresh', async () => {
    const {token} = await client.getAccessToken();
    const headers = await client.getRequestHeaders();
    // The token as a Bearer on keyless, through the library's own authorized request.
    const res = await client.request({url: `${c.KEYLESS_URL()}/v1/projects/keyless-dev/serviceAccounts/${target}`});
    return {
      authorization: headers.get('authorization') === `Bearer ${token}`,
      expiryDate: client.credentials.expiry_date,
      now: Date.now(),
      tokeninfo: await c.tokeninfo(token),
      getServiceAccount: {status: res.status, email: res.data.email},
    };
  }],
  ['oauth2ClientRefresh', async () => {
    // The base OAuth2Client with only a refresh token set, as an app that stored one would use it.
    const info = JSON.parse(fs.readFileSync(c.env('OWNER_FILE'), 'utf8'));
    const base = new OAuth2Client({
      clientId: info.client_id,
      clientSecret: info.client_secret,
      ...(endpoints ? {endpoints: {oauth2TokenUrl: `${c.KEYLESS_URL()}/token`}} : {}),
    });
    base.setCredentials({refresh_token: info.refresh_token});
    const {token} = await base.getAccessToken();
    return {tokeninfo: await c.tokeninfo(token)};
  }],
  ['getTokenInfo', async () => {
    const {token} = await client.getAccessToken();
    const info = await client.getTokenInfo(token);
    return {...info, now: Date.now()};
  }],
  ['getTokenInfoInvalid', async () => c.expectError(client.getTokenInfo('ya29.not-a-keyless-token'))],
  ['verifyIdToken', async () => {
    const idToken = await mintIdToken(audience);
    const ticket = await client.verifyIdToken({idToken, audience});
    return {payload: ticket.getPayload(), userId: ticket.getUserId()};
  }],
  ['verifyIdTokenWrongAudience', async () => {
    const idToken = await mintIdToken('https://someone-else.example.com');
    return c.expectError(client.verifyIdToken({idToken, audience}));
  }],
  ['verifyIdTokenTampered', async () => {
    const [h, p, s] = (await mintIdToken(audience)).split('.');
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
    claims.email = 'mallory@example.com';
    const forged = [h, Buffer.from(JSON.stringify(claims)).toString('base64url'), s].join('.');
    return c.expectError(client.verifyIdToken({idToken: forged, audience}));
  }],
]);
