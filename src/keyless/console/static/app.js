// The console's shell: sign-in state, the project picker and the pages (each a module loaded when first shown,
// so that the first page needs only this file, api.js, auth.js and dom.js).

import {call, session} from "./api.js";
import {finishSignIn, signOut, startSignIn} from "./auth.js";
import {clear, errorBanner, h} from "./dom.js";

const PAGES = {
  projects: "./page-projects.js", accounts: "./page-accounts.js", keys: "./page-keys.js",
  policies: "./page-policies.js", graph: "./page-graph.js", troubleshoot: "./page-troubleshoot.js",
  audit: "./page-audit.js",
};
const PROJECT = "keyless.console.project";
const $ = (id) => document.getElementById(id);

let leaving = [];  // what the shown page stops when another is shown (the audit log's polling)
let shown = 0;

export const state = {
  projects: [],
  get project() { return sessionStorage.getItem(PROJECT) || (this.projects[0] || ""); },
  set project(value) { sessionStorage.setItem(PROJECT, value); },
};

export function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function parseHash() {
  const [path, query = ""] = (location.hash || "#/projects").slice(2).split("?");
  return {name: path.split("/")[0] || "projects", params: new URLSearchParams(query)};
}

async function loadProjects() {
  const body = await call("GET", "/v1/projects", undefined, {pageSize: 500});
  state.projects = (body.projects || []).map((p) => p.projectId).sort();
  if (!state.projects.includes(sessionStorage.getItem(PROJECT))) sessionStorage.removeItem(PROJECT);
  const select = $("project");
  clear(select, state.projects.map((p) => h("option", {value: p, selected: p === state.project}, p)));
}

export async function refreshProjects() {
  await loadProjects();
}

async function route() {
  for (const stop of leaving) stop();
  leaving = [];
  const current = session();
  $("signed-out").hidden = Boolean(current);
  $("nav").hidden = $("session").hidden = !current;
  const page = $("page");
  if (!current) {
    clear(page);
    return;
  }
  $("who").textContent = current.email || "";
  const {name, params} = parseHash();
  const module = PAGES[name] ? name : "projects";
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === module);
  const ticket = ++shown;
  const root = h("section", {id: `page-${module}`});
  clear(page, root);
  try {
    const {render} = await import(PAGES[module]);
    if (ticket !== shown) return;
    await render({root, params, project: state.project, onLeave: (fn) => leaving.push(fn)});
  } catch (err) {
    if (ticket === shown) root.append(errorBanner(err));
  }
  if (ticket === shown) root.dataset.ready = "true";  // the page has drawn what it loaded
}

async function start() {
  $("sign-in").addEventListener("click", () => startSignIn().catch((err) => { $("sign-in-error").textContent = err.message; }));
  $("sign-out").addEventListener("click", async () => { await signOut(); route(); });
  $("project").addEventListener("change", (event) => { state.project = event.target.value; route(); });
  window.addEventListener("hashchange", route);
  window.addEventListener("keyless-signed-out", () => {
    $("sign-in-error").textContent = "Your session ended: sign in again.";
    route();
  });
  try {
    const hash = await finishSignIn();
    if (hash) location.hash = hash.slice(1) ? hash : "#/projects";
  } catch (err) {
    $("sign-in-error").textContent = err.message;
  }
  if (session()) {
    try { await loadProjects(); } catch (err) { $("sign-in-error").textContent = err.message; }
  }
  await route();
  document.body.dataset.ready = "true";
}

start();
