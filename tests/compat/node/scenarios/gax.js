'use strict';
// @google-cloud/iam-credentials IAMCredentialsClient with the REST fallback (google-gax `fallback: true`).
//
// usage: node gax.js authClient|credentials
//   authClient:  {fallback, apiEndpoint: '127.0.0.1', port, protocol: 'http', authClient: <owner's
//                UserRefreshClient with endpoints at keyless>}
//   credentials: same endpoint options, `credentials: {client_email, private_key}` of the source key file:
//                gax sends a self-signed JWT (scope claim, no aud, no kid) as the bearer.
// env: KEYLESS_URL, OWNER_FILE, SOURCE_KEY, TARGET, DENIED, AUDIENCE

const fs = require('fs');
const {IAMCredentialsClient} = require('@google-cloud/iam-credentials');
const c = require('./_common');

const mode = process.argv[2];
if (!['authClient', 'credentials'].includes(mode)) throw new Error(`unknown mode ${mode}`);
const url = new URL(c.KEYLESS_URL());
const options = {fallback: true, apiEndpoint: url.hostname, port: Number(url.port), protocol: 'http'};
if (mode === 'authClient') {
  options.authClient = c.ownerClient({endpoints: true});
} else {
  const key = JSON.parse(fs.readFileSync(c.env('SOURCE_KEY'), 'utf8'));
  options.credentials = {client_email: key.client_email, private_key: key.private_key};
}
const client = new IAMCredentialsClient(options);

const target = c.env('TARGET');
const name = `projects/-/serviceAccounts/${target}`;
const audience = c.env('AUDIENCE');
const blob = 'keyless node gax signBlob';

c.run([
  ['generateAccessToken', async () => {
    const [res] = await client.generateAccessToken({name, scope: [c.CLOUD], lifetime: {seconds: 300}});
    return {expireTime: {seconds: Number(res.expireTime.seconds)}, now: Date.now(),
      tokeninfo: await c.tokeninfo(res.accessToken)};
  }],
  ['generateIdToken', async () => {
    const [res] = await client.generateIdToken({name, audience, includeEmail: true});
    return {payload: await c.verifyIdToken(res.token, audience)};
  }],
  ['signBlob', async () => {
    const [res] = await client.signBlob({name, payload: Buffer.from(blob)});
    const signature = Buffer.from(res.signedBlob).toString('base64');
    return {keyId: res.keyId, ...await c.verifySignature(target, blob, signature, res.keyId)};
  }],
  ['signJwt', async () => {
    const now = Math.floor(Date.now() / 1000);
    const claims = {iss: target, sub: target, aud: 'https://aud.example.com/gax', iat: now, exp: now + 600};
    const [res] = await client.signJwt({name, payload: JSON.stringify(claims)});
    const [h, p, s] = res.signedJwt.split('.');
    const check = await c.verifySignature(target, `${h}.${p}`, Buffer.from(s, 'base64url').toString('base64'),
      res.keyId);
    return {keyId: res.keyId, ...c.decodeJwt(res.signedJwt), sent: claims, ...check};
  }],
  ['denied', async () => c.expectError(client.generateAccessToken({
    name: `projects/-/serviceAccounts/${c.env('DENIED')}`, scope: [c.CLOUD]}))],
]);
