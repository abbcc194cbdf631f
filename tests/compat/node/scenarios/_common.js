'use strict';
// Shared helpers for the scenario scripts (not a scenario itself).
//
// Every scenario runs a list of named steps; each step's result (or its error) lands in one JSON object
// printed as a single line on stdout. The process exits 1 if any step threw, so a failing step shows up
// both in the exit code and, precisely, in the JSON the pytest side asserts on.
//
// The checks that prove the library really talked to keyless use Node's own fetch straight at KEYLESS_URL
// (loopback, never proxied): tokeninfo for access tokens, the account's published x509 certificates for
// signatures, keyless's /oauth2/v1/certs for ID tokens.

const crypto = require('crypto');
const fs = require('fs');
const {OAuth2Client, UserRefreshClient} = require('google-auth-library');

const CLOUD = 'https://www.googleapis.com/auth/cloud-platform';

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`missing environment variable ${name}`);
  return value;
}

const KEYLESS_URL = () => env('KEYLESS_URL').replace(/\/+$/, '');

function describeError(err) {
  if (!(err instanceof Error)) return {message: String(err)};
  const out = {message: err.message, name: err.name};
  if (err.code !== undefined) out.code = err.code;
  if (err.status !== undefined) out.status = err.status;
  if (err.config && err.config.url) out.url = String(err.config.url);
  const res = err.response;
  if (res) {
    out.httpStatus = res.status;
    out.data = res.data;
  }
  return out;
}

async function run(steps) {
  const result = {};
  let failed = false;
  for (const [name, fn] of steps) {
    try {
      result[name] = await fn(result);
    } catch (err) {
      failed = true;
      result[name] = {error: describeError(err)};
    }
  }
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exitCode = failed ? 1 : 0;
}

// A step whose promise is expected to reject: returns what the library surfaced, fails if it resolved.
async function expectError(promise) {
  let value;
  try {
    value = await promise;
  } catch (err) {
    return {rejected: describeError(err)};
  }
  throw new Error(`expected an error, got ${JSON.stringify(value)}`);
}

async function keylessJson(path, init) {
  const res = await fetch(KEYLESS_URL() + path, init);
  const text = await res.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return {status: res.status, body};
}

// keyless's own view of an access token.
async function tokeninfo(accessToken) {
  return keylessJson(`/oauth2/v3/tokeninfo?access_token=${encodeURIComponent(accessToken)}`);
}

// Verify an RS256 (PKCS#1 v1.5, SHA-256) signature with the account's published certificates.
async function verifySignature(email, data, signatureB64, keyId) {
  const {status, body} = await keylessJson(`/service_accounts/v1/metadata/x509/${encodeURIComponent(email)}`);
  if (status !== 200) throw new Error(`x509 lookup for ${email}: ${status} ${JSON.stringify(body)}`);
  const kids = keyId ? [keyId] : Object.keys(body);
  const signature = Buffer.from(signatureB64, 'base64');
  const verifiedWith = kids.filter(
    kid => body[kid] && crypto.verify('RSA-SHA256', Buffer.from(data), body[kid], signature));
  return {verified: verifiedWith.length > 0, keyId: verifiedWith[0] || null, publishedKids: Object.keys(body)};
}

function decodeJwt(token) {
  const [h, p] = token.split('.');
  return {
    header: JSON.parse(Buffer.from(h, 'base64url').toString()),
    payload: JSON.parse(Buffer.from(p, 'base64url').toString()),
  };
}

// google-auth-library's own verifier, with its certificate URL pointed at keyless.
async function verifyIdToken(idToken, audience) {
  const verifier = new OAuth2Client({
    endpoints: {oauth2FederatedSignonPemCertsUrl: `${KEYLESS_URL()}/oauth2/v1/certs`},
  });
  const ticket = await verifier.verifyIdToken({idToken, audience});
  return ticket.getPayload();
}

// The owner's authorized_user file as a UserRefreshClient; `endpoints` true points its token URLs at keyless.
function ownerClient({endpoints}) {
  const info = JSON.parse(fs.readFileSync(env('OWNER_FILE'), 'utf8'));
  const options = {
    clientId: info.client_id,
    clientSecret: info.client_secret,
    refreshToken: info.refresh_token,
  };
  if (endpoints) {
    options.endpoints = {
      oauth2TokenUrl: `${KEYLESS_URL()}/token`,
      tokenInfoUrl: `${KEYLESS_URL()}/tokeninfo`,
      oauth2FederatedSignonPemCertsUrl: `${KEYLESS_URL()}/oauth2/v1/certs`,
      oauth2FederatedSignonJwkCertsUrl: `${KEYLESS_URL()}/oauth2/v3/certs`,
    };
  }
  return new UserRefreshClient(options);
}

module.exports = {
  CLOUD,
  KEYLESS_URL,
  decodeJwt,
  describeError,
  env,
  expectError,
  keylessJson,
  ownerClient,
  run,
  tokeninfo,
  verifyIdToken,
  verifySignature,
};
