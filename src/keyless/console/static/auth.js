// Sign-in: the authorization-code flow with PKCE at keyless's sign-in page (the one gcloud auth login uses), as
// the public client "keyless-console". The code comes back to /console/ and is exchanged at /token.

import {dropSession, saveSession, session} from "./api.js";

const CLIENT_ID = "keyless-console";
const SCOPES = "openid email https://www.googleapis.com/auth/cloud-platform";
const PENDING = "keyless.console.pending";

function redirectUri() {
  return `${location.origin}/console/`;
}

function randomText(bytes) {
  return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
}

function base64url(bytes) {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export async function startSignIn() {
  const verifier = randomText(48);
  const state = randomText(24);
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  sessionStorage.setItem(PENDING, JSON.stringify({verifier, state, hash: location.hash || "#/projects"}));
  const params = new URLSearchParams({client_id: CLIENT_ID, redirect_uri: redirectUri(), response_type: "code",
    scope: SCOPES, state, code_challenge: base64url(new Uint8Array(digest)), code_challenge_method: "S256",
    access_type: "online"});
  location.assign(`/o/oauth2/auth?${params}`);
}

// The end of a sign-in: the code in this page's URL, exchanged for a token. Answers the hash to show, or null
// when this load is not the end of a sign-in. Throws on a refused or forged answer.
export async function finishSignIn() {
  const query = new URLSearchParams(location.search);
  if (!query.has("code") && !query.has("error")) return null;
  const pending = JSON.parse(sessionStorage.getItem(PENDING) || "null");
  sessionStorage.removeItem(PENDING);
  history.replaceState(null, "", `/console/${pending ? pending.hash : "#/projects"}`);
  if (query.has("error")) throw new Error(query.get("error_description") || query.get("error"));
  if (!pending || query.get("state") !== pending.state) throw new Error("This sign-in was not started here: sign in again.");
  const response = await fetch("/token", {method: "POST", credentials: "omit", cache: "no-store",
    headers: {"Content-Type": "application/x-www-form-urlencoded"},
    body: new URLSearchParams({grant_type: "authorization_code", code: query.get("code"), client_id: CLIENT_ID,
      redirect_uri: redirectUri(), code_verifier: pending.verifier})});
  const body = await response.json().catch(() => ({}));
  if (!response.ok || typeof body.access_token !== "string") {
    throw new Error(body.error_description || body.error || `sign-in failed (HTTP ${response.status})`);
  }
  saveSession(body.access_token, Number(body.expires_in) || 3600, emailOf(body.id_token));
  return pending.hash;
}

// The email claim of the ID token the token endpoint answered with (shown only; the API checks the token).
function emailOf(idToken) {
  try {
    const part = idToken.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part)).email || "";
  } catch (_) {
    return "";
  }
}

export async function signOut() {
  const current = session();
  dropSession();
  if (current) {
    await fetch("/revoke", {method: "POST", credentials: "omit",
      headers: {"Content-Type": "application/x-www-form-urlencoded"},
      body: new URLSearchParams({token: current.token})}).catch(() => undefined);
  }
}
