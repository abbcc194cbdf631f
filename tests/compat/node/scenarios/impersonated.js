'use strict';
// new Impersonated({sourceClient, targetPrincipal, endpoint}) -> getAccessToken / sign / fetchIdToken.
//
// usage: node impersonated.js endpoint|proxy
//   endpoint: the source is a UserRefreshClient whose `endpoints` option points at keyless, and the
//             Impersonated client gets `endpoint: KEYLESS_URL`; no proxy in the environment.
//   proxy:    both clients keep Google's default URLs and reach keyless through HTTPS_PROXY.
// env: KEYLESS_URL, OWNER_FILE, TARGET, DENIED, AUDIENCE

const {Impersonated} = require('google-auth-library');
const c = require('./_common');

const route = process.argv[2];
if (!['endpoint', 'proxy'].includes(route)) throw new Error(`unknown route ${route}`);
const viaOptions = route === 'endpoint';

function impersonate(targetPrincipal) {
  const options = {
    sourceClient: c.ownerClient({endpoints: viaOptions}),
    targetPrincipal,
    targetScopes: [c.CLOUD],
    lifetime: 600,
  };
  if (viaOptions) options.endpoint = c.KEYLESS_URL();
  return new Impersonated(options);
}

const target = c.env('TARGET');
const audience = c.env('AUDIENCE');
const blob = 'keyless node impersonated sign';

c.run([
  ['endpoint', async () => impersonate(target).endpoint],
  ['getAccessToken', async () => {
    const client = impersonate(target);
    const {token} = await client.getAccessToken();
    const info = await c.tokeninfo(token);
    return {expiryDate: client.credentials.expiry_date, now: Date.now(), tokeninfo: info};
  }],
  ['sign', async () => {
    const signed = await impersonate(target).sign(blob);
    const check = await c.verifySignature(target, blob, signed.signedBlob, signed.keyId);
    return {keyId: signed.keyId, ...check};
  }],
  ['fetchIdToken', async () => {
    const token = await impersonate(target).fetchIdToken(audience);
    return {header: c.decodeJwt(token).header, payload: await c.verifyIdToken(token, audience)};
  }],
  ['deniedGetAccessToken', async () => c.expectError(impersonate(c.env('DENIED')).getAccessToken())],
  ['deniedSign', async () => c.expectError(impersonate(c.env('DENIED')).sign(blob))],
  ['deniedFetchIdToken', async () => c.expectError(impersonate(c.env('DENIED')).fetchIdToken(audience))],
]);
