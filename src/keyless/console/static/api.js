// The public API, called with the signed-in user's bearer token (kept in sessionStorage, never in a cookie).

const TOKEN = "keyless.console.token";

export class ApiError extends Error {
  constructor(status, body) {
    const error = body && typeof body.error === "object" ? body.error : null;
    const message = error ? error.message : (body && (body.error_description || body.error)) || `HTTP ${status}`;
    super(String(message));
    this.status = status;
    this.code = error ? error.status : (body && body.error) || "";
    this.body = body;
  }
}

export function session() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(TOKEN) || "null");
    if (saved && typeof saved.token === "string" && saved.expires > Date.now()) return saved;
  } catch (_) { /* an unreadable entry is no session */ }
  return null;
}

export function saveSession(token, expiresIn, email) {
  sessionStorage.setItem(TOKEN, JSON.stringify({token, email, expires: Date.now() + (expiresIn - 30) * 1000}));
}

export function dropSession() {
  sessionStorage.removeItem(TOKEN);
}

// A request of the API; answers the parsed JSON body, throws ApiError otherwise. A 401 ends the session.
export async function call(method, path, body = undefined, query = undefined) {
  const current = session();
  const headers = {};
  if (current) headers.Authorization = `Bearer ${current.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") params.append(k, v);
    const text = params.toString();
    if (text) url += (url.includes("?") ? "&" : "?") + text;
  }
  const response = await fetch(url, {method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit", cache: "no-store"});
  let parsed = null;
  const text = await response.text();
  if (text) {
    try { parsed = JSON.parse(text); } catch (_) { parsed = {error: {message: text.slice(0, 200)}}; }
  }
  if (!response.ok) {
    if (response.status === 401 && current) {
      dropSession();
      window.dispatchEvent(new Event("keyless-signed-out"));
    }
    throw new ApiError(response.status, parsed);
  }
  return parsed || {};
}

// Every page of a list (items under `field`), at most `limit` items.
export async function listAll(path, field, query = {}, limit = 2000) {
  const out = [];
  let pageToken = "";
  do {
    const page = await call("GET", path, undefined, {...query, pageToken});
    out.push(...(page[field] || []));
    pageToken = page.nextPageToken || "";
  } while (pageToken && out.length < limit);
  return out;
}

export const enc = encodeURIComponent;
