'use strict';
// new GoogleAuth({scopes}) with GOOGLE_APPLICATION_CREDENTIALS naming an external_account file (workload
// identity federation): the library reads the subject token from the file's credential source, exchanges it at the
// file's token_url (keyless's STS) and, when the file names one, impersonates the account at its
// service_account_impersonation_url.
//
// usage: node external_account.js
// env: GOOGLE_APPLICATION_CREDENTIALS, KEYLESS_URL; optionally REFUSED_FILE (a file whose subject token the
//      provider's attribute condition refuses).

const fs = require('fs');
const {GoogleAuth} = require('google-auth-library');
const c = require('./_common');

const file = JSON.parse(fs.readFileSync(c.env('GOOGLE_APPLICATION_CREDENTIALS'), 'utf8'));
if (file.type !== 'external_account') throw new Error(`GOOGLE_APPLICATION_CREDENTIALS is a ${file.type} file`);

const steps = [
  ['getAccessToken', async () => {
    const auth = new GoogleAuth({scopes: [c.CLOUD]});
    const client = await auth.getClient();
    const {token} = await client.getAccessToken();
    return {client: client.constructor.name, tokeninfo: await c.tokeninfo(token)};
  }],
];

if (process.env.REFUSED_FILE) {
  steps.push(['refused', async () =>
    c.expectError(new GoogleAuth({keyFilename: process.env.REFUSED_FILE, scopes: [c.CLOUD]}).getAccessToken())]);
}

c.run(steps);
