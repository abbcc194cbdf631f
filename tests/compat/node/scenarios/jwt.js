'use strict';
// new JWT({email, key}) from a service-account key file -> getAccessToken / fetchIdToken.
//
// (Not `new JWT({keyFile})`: in 10.9.1 the vendored gtoken copies `email` into `iss` before it reads the
// key file, so that form sends an assertion without `iss`, which Google refuses as well.)
//
// The vendored gtoken always POSTs to https://oauth2.googleapis.com/token (the key file's token_uri is
// ignored) with an assertion whose header is {"alg":"RS256"} only (no kid), so this runs through HTTPS_PROXY.
// env: KEYLESS_URL, SOURCE_KEY, SOURCE, AUDIENCE (+ the proxy environment)

const crypto = require('crypto');
const fs = require('fs');
const {JWT} = require('google-auth-library');
const c = require('./_common');

const info = JSON.parse(fs.readFileSync(c.env('SOURCE_KEY'), 'utf8'));
const fromFile = extra => new JWT({email: info.client_email, key: info.private_key, keyId: info.private_key_id,
  ...extra});
const audience = c.env('AUDIENCE');

c.run([
  ['getAccessToken', async () => {
    const client = fromFile({scopes: [c.CLOUD]});
    const {token} = await client.getAccessToken();
    return {expiryDate: client.credentials.expiry_date, now: Date.now(), tokeninfo: await c.tokeninfo(token)};
  }],
  ['fetchIdToken', async () => {
    // No scopes: what GoogleAuth.getIdTokenClient builds from a service-account file.
    const token = await fromFile({}).fetchIdToken(audience);
    return {header: c.decodeJwt(token).header, payload: await c.verifyIdToken(token, audience)};
  }],
  ['unknownKey', async () => {
    // A key keyless never issued, claiming to be the source account: the grant must be refused.
    const {privateKey} = crypto.generateKeyPairSync('rsa', {modulusLength: 2048});
    const key = privateKey.export({type: 'pkcs8', format: 'pem'});
    return c.expectError(new JWT({email: info.client_email, key, scopes: [c.CLOUD]}).getAccessToken());
  }],
]);
