'use strict';
// googleapis discovery clients: google.iamcredentials({version: 'v1'}) and google.iam({version: 'v1'}).
//
// usage: node googleapis.js rootUrl|proxy
//   rootUrl: `rootUrl: KEYLESS_URL + '/'` on both clients; the auth client is the owner's UserRefreshClient
//            with its `endpoints` at keyless; no proxy in the environment.
//   proxy:   default https://iamcredentials.googleapis.com/ and https://iam.googleapis.com/ through HTTPS_PROXY.
// env: KEYLESS_URL, OWNER_FILE, TARGET, DENIED, AUDIENCE

const {google} = require('googleapis');
const c = require('./_common');

const route = process.argv[2];
if (!['rootUrl', 'proxy'].includes(route)) throw new Error(`unknown route ${route}`);
const auth = c.ownerClient({endpoints: route === 'rootUrl'});
// A fresh object per client: googleapis consumes `version` from the options it is given.
const options = () => ({version: 'v1', auth, ...(route === 'rootUrl' ? {rootUrl: `${c.KEYLESS_URL()}/`} : {})});
const iamcredentials = google.iamcredentials(options());
const iam = google.iam(options());

const target = c.env('TARGET');
const name = `projects/-/serviceAccounts/${target}`;
const audience = c.env('AUDIENCE');
const blob = 'keyless node googleapis signBlob';

c.run([
  ['generateAccessToken', async () => {
    const res = await iamcredentials.projects.serviceAccounts.generateAccessToken({
      name, requestBody: {scope: [c.CLOUD], lifetime: '300s'}});
    return {url: res.config.url.toString(), expireTime: res.data.expireTime, now: Date.now(),
      tokeninfo: await c.tokeninfo(res.data.accessToken)};
  }],
  ['generateIdToken', async () => {
    const res = await iamcredentials.projects.serviceAccounts.generateIdToken({
      name, requestBody: {audience, includeEmail: true}});
    return {payload: await c.verifyIdToken(res.data.token, audience)};
  }],
  ['signBlob', async () => {
    const res = await iamcredentials.projects.serviceAccounts.signBlob({
      name, requestBody: {payload: Buffer.from(blob).toString('base64')}});
    return {keyId: res.data.keyId, ...await c.verifySignature(target, blob, res.data.signedBlob, res.data.keyId)};
  }],
  ['signJwt', async () => {
    const now = Math.floor(Date.now() / 1000);
    const claims = {iss: target, sub: target, aud: 'https://aud.example.com/jwt', iat: now, exp: now + 600};
    const res = await iamcredentials.projects.serviceAccounts.signJwt({
      name, requestBody: {payload: JSON.stringify(claims)}});
    const [h, p, s] = res.data.signedJwt.split('.');
    const check = await c.verifySignature(target, `${h}.${p}`, Buffer.from(s, 'base64url').toString('base64'),
      res.data.keyId);
    return {keyId: res.data.keyId, ...c.decodeJwt(res.data.signedJwt), sent: claims, ...check};
  }],
  ['denied', async () => c.expectError(iamcredentials.projects.serviceAccounts.generateAccessToken({
    name: `projects/-/serviceAccounts/${c.env('DENIED')}`, requestBody: {scope: [c.CLOUD]}}))],
  ['iamGet', async () => {
    const res = await iam.projects.serviceAccounts.get({name});
    return {url: res.config.url.toString(), ...res.data};
  }],
  ['iamList', async () => {
    const res = await iam.projects.serviceAccounts.list({name: 'projects/keyless-dev', pageSize: 100});
    return {emails: (res.data.accounts || []).map(a => a.email)};
  }],
  ['iamGetIamPolicy', async () => {
    const res = await iam.projects.serviceAccounts.getIamPolicy({
      resource: name, 'options.requestedPolicyVersion': 3});
    return res.data;
  }],
]);
