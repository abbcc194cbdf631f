'use strict';
// new GoogleAuth({scopes}) with GOOGLE_APPLICATION_CREDENTIALS naming a credentials file.
//
// usage: node adc.js service_account|authorized_user|impersonated_service_account
//   service_account / authorized_user: token calls go to Google's default URLs, through HTTPS_PROXY.
//   impersonated_service_account: the file's source refresh goes through the proxy; its IAM calls go to the
//     file's "endpoint" key when it has one (Node spreads the file into `new Impersonated({...json})`).
// env: GOOGLE_APPLICATION_CREDENTIALS, KEYLESS_URL, TARGET, AUDIENCE;
//      for impersonated_service_account optionally DENIED_FILE (same file, target `denied`) and
//      BOGUS_ENDPOINT_FILE (same file, "endpoint" under a path keyless does not serve).

const fs = require('fs');
const {GoogleAuth} = require('google-auth-library');
const c = require('./_common');

const kind = process.argv[2];
if (!['service_account', 'authorized_user', 'impersonated_service_account'].includes(kind)) throw new Error(`unknown kind ${kind}`);
const file = JSON.parse(fs.readFileSync(c.env('GOOGLE_APPLICATION_CREDENTIALS'), 'utf8'));
if (file.type !== kind) throw new Error(`GOOGLE_APPLICATION_CREDENTIALS is a ${file.type} file, not ${kind}`);
const audience = c.env('AUDIENCE');
const blob = `keyless node ADC ${kind}`;

const steps = [
  ['getAccessToken', async () => {
    const auth = new GoogleAuth({scopes: [c.CLOUD]});
    const client = await auth.getClient();
    const {token} = await client.getAccessToken();
    // The library's own authorized request, at keyless, with that token.
    const res = await client.request({url: `${c.KEYLESS_URL()}/oauth2/v3/tokeninfo`});
    return {
      client: client.constructor.name,
      endpoint: client.endpoint,
      tokeninfo: await c.tokeninfo(token),
      requestTokeninfo: {status: res.status, email: res.data.email},
    };
  }],
];

if (kind !== 'authorized_user') {
  // An authorized_user client has neither an ID-token provider nor a client_email to sign with.
  const signer = kind === 'service_account' ? file.client_email : c.env('TARGET');
  steps.push(
    ['getIdTokenClient', async () => {
      const idClient = await new GoogleAuth().getIdTokenClient(audience);
      const headers = await idClient.getRequestHeaders();
      const token = (headers.get('authorization') || '').replace(/^Bearer /, '');
      return {payload: await c.verifyIdToken(token, audience)};
    }],
    ['sign', async () => {
      const signature = await new GoogleAuth({scopes: [c.CLOUD]}).sign(blob);
      return c.verifySignature(signer, blob, signature);
    }],
  );
}

if (process.env.DENIED_FILE) {
  steps.push(['denied', async () =>
    c.expectError(new GoogleAuth({keyFilename: process.env.DENIED_FILE, scopes: [c.CLOUD]}).getAccessToken())]);
}
if (process.env.BOGUS_ENDPOINT_FILE) {
  steps.push(['bogusEndpoint', async () => {
    const auth = new GoogleAuth({keyFilename: process.env.BOGUS_ENDPOINT_FILE, scopes: [c.CLOUD]});
    return c.expectError(auth.getAccessToken());
  }]);
}

c.run(steps);
