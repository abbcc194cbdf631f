'use strict';
// Compute / ADC on GCE through gcp-metadata, pointed at keyless's metadata server.
//
// usage: node gce.js host|ip|proxy
//   host:  GCE_METADATA_HOST=127.0.0.1:PORT only; GoogleAuth.sign gets the `endpoint` argument (keyless).
//   ip:    GCE_METADATA_IP=127.0.0.1:PORT only; same.
//   proxy: the whole `keyless env` (metadata variables + HTTPS_PROXY); GoogleAuth.sign uses its default
//          https://iamcredentials.googleapis.com endpoint through the proxy.
// env: KEYLESS_URL, ATTACHED, TARGET, AUDIENCE

const {Compute, GoogleAuth, Impersonated} = require('google-auth-library');
const c = require('./_common');

const route = process.argv[2];
if (!['host', 'ip', 'proxy'].includes(route)) throw new Error(`unknown route ${route}`);
const attached = c.env('ATTACHED');
const audience = c.env('AUDIENCE');
const blob = 'keyless node GoogleAuth.sign';

c.run([
  ['adc', async () => {
    const auth = new GoogleAuth();
    const client = await auth.getClient();
    const {token} = await client.getAccessToken();
    return {
      client: client.constructor.name,
      projectId: await auth.getProjectId(),
      universeDomain: await auth.getUniverseDomain(),
      clientEmail: (await auth.getCredentials()).client_email,
      tokeninfo: await c.tokeninfo(token),
    };
  }],
  ['computeGetAccessToken', async () => {
    const client = new Compute({scopes: [c.CLOUD]});
    const {token} = await client.getAccessToken();
    return {expiryDate: client.credentials.expiry_date, now: Date.now(), tokeninfo: await c.tokeninfo(token)};
  }],
  ['getIdTokenClient', async () => {
    const idClient = await new GoogleAuth().getIdTokenClient(audience);
    const headers = await idClient.getRequestHeaders();
    const token = (headers.get('authorization') || '').replace(/^Bearer /, '');
    return {header: c.decodeJwt(token).header, payload: await c.verifyIdToken(token, audience)};
  }],
  ['sign', async () => {
    const auth = new GoogleAuth();
    const endpoint = route === 'proxy' ? undefined : `${c.KEYLESS_URL()}/v1/projects/-/serviceAccounts/`;
    const signature = await auth.sign(blob, endpoint);
    return c.verifySignature(attached, blob, signature);
  }],
  ['impersonateFromCompute', async () => {
    // The attached account as the source of an Impersonated client (endpoint option, or default + proxy).
    const options = {sourceClient: new Compute(), targetPrincipal: c.env('TARGET'), targetScopes: [c.CLOUD]};
    if (route !== 'proxy') options.endpoint = c.KEYLESS_URL();
    const {token} = await new Impersonated(options).getAccessToken();
    return {tokeninfo: await c.tokeninfo(token)};
  }],
]);
