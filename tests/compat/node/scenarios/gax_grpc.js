'use strict';
// @google-cloud/iam-credentials IAMCredentialsClient() with no options at all: its default gRPC transport
// (grpc-js) to iamcredentials.googleapis.com:443, through the interception proxy that `keyless env` names
// (grpc-js reads grpc_proxy / https_proxy, and its roots from GRPC_DEFAULT_SSL_ROOTS_FILE_PATH).
//
// usage: node gax_grpc.js
// env: what `keyless env` prints, GOOGLE_APPLICATION_CREDENTIALS (the owner's authorized_user file),
//      KEYLESS_URL, TARGET, DENIED

const {IAMCredentialsClient} = require('@google-cloud/iam-credentials');
const c = require('./_common');

const client = new IAMCredentialsClient();
const target = c.env('TARGET');
const name = `projects/-/serviceAccounts/${target}`;
const blob = 'keyless node gax gRPC signBlob';

c.run([
  ['generateAccessToken', async () => {
    const [res] = await client.generateAccessToken({name, scope: [c.CLOUD], lifetime: {seconds: 300}});
    return {expireTime: {seconds: Number(res.expireTime.seconds)}, now: Date.now(),
      tokeninfo: await c.tokeninfo(res.accessToken)};
  }],
  ['signBlob', async () => {
    const [res] = await client.signBlob({name, payload: Buffer.from(blob)});
    const signature = Buffer.from(res.signedBlob).toString('base64');
    return {keyId: res.keyId, ...await c.verifySignature(target, blob, signature, res.keyId)};
  }],
  ['denied', async () => {
    let value;
    try {
      value = await client.generateAccessToken({name: `projects/-/serviceAccounts/${c.env('DENIED')}`,
        scope: [c.CLOUD]});
    } catch (err) {  // a google-gax GoogleError: the gRPC status and the ErrorInfo of its details
      return {rejected: {code: err.code, message: err.message, reason: err.reason, domain: err.domain,
        metadata: err.errorInfoMetadata}};
    }
    throw new Error(`expected an error, got ${JSON.stringify(value)}`);
  }],
]).finally(() => client.close());
