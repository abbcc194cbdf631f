// The audit log (GET /v1/auditLog, the owner's), newest first, with filters; new entries appear live (the
// page asks every two seconds for entries from the newest one's time on, and shows those it has not shown).

import {call, enc} from "./api.js";
import {go} from "./app.js";
import {clear, errorBanner, field, formValues, h} from "./dom.js";

const POLL_MS = 2000;
const PAGE = 50;

function quoted(value) {
  return `"${String(value).replace(/["\s]/g, "")}"`;
}

function filterOf(params) {
  const terms = [];
  if (params.get("account")) terms.push(`account=${quoted(params.get("account"))}`);
  if (params.get("caller")) terms.push(`caller=${quoted(params.get("caller"))}`);
  if (params.get("method")) terms.push(`method=${quoted(params.get("method"))}`);
  if (params.get("denied") === "true" || params.get("denied") === "false") terms.push(`denied=${params.get("denied")}`);
  return terms.join(" AND ");
}

function row(entry, fresh) {
  const p = entry.protoPayload || {};
  const explanation = (p.metadata || {}).explanation || {};
  const denied = entry.severity === "ERROR";
  const labels = (entry.resource || {}).labels || {};
  const troubleshoot = explanation.troubleshoot;
  return h("tr", {className: `entry${denied ? " denied" : ""}${fresh ? " fresh" : ""}`,
    dataset: {insertId: entry.insertId, method: p.methodName || "", denied: String(denied)}},
  h("td", {}, (entry.timestamp || "").replace("T", " ").replace(/\.\d+Z$/, "Z")),
  h("td", {}, p.methodName || ""),
  h("td", {}, (p.authenticationInfo || {}).principalEmail || ""),
  h("td", {}, labels.email_id || p.resourceName || ""),
  h("td", {className: denied ? "error" : "ok"}, denied ? `denied: ${(p.status || {}).message || ""}` : "ok"),
  h("td", {}, explanation.summary || "",
    troubleshoot && typeof troubleshoot.path === "string" ? [" ", h("button", {type: "button", className: "explain",
      onclick: () => go(`#/troubleshoot?q=${enc(JSON.stringify(troubleshoot))}`)}, "Explain")] : ""));
}

export async function render({root, params, onLeave}) {
  const filter = filterOf(params);
  const form = h("form", {className: "inline", id: "audit-filters", onsubmit: (event) => {
    event.preventDefault();
    const v = formValues(form);
    const next = new URLSearchParams();
    for (const k of ["account", "caller", "method", "denied"]) if (v[k]) next.set(k, v[k]);
    go(`#/audit?${next}`);
  }},
  field("Account", h("input", {name: "account", id: "audit-account", value: params.get("account") || "",
    placeholder: "email or unique id"})),
  field("Caller", h("input", {name: "caller", id: "audit-caller", value: params.get("caller") || ""})),
  field("Method", h("input", {name: "method", id: "audit-method", value: params.get("method") || "",
    placeholder: "e.g. GenerateAccessToken"})),
  field("Outcome", h("select", {name: "denied", id: "audit-denied"},
    [["", "any"], ["true", "denied"], ["false", "allowed"]].map(([v, t]) =>
      h("option", {value: v, selected: params.get("denied") === v}, t)))),
  h("button", {type: "submit", className: "primary", id: "audit-apply"}, "Apply"));
  const status = h("p", {className: "muted", id: "audit-status"});
  const body = h("tbody", {id: "audit-rows"});
  root.append(h("h1", {}, "Audit log"), form, status,
    h("table", {}, h("thead", {}, h("tr", {}, ["Time", "Method", "Caller", "Resource", "Outcome", "Why"]
      .map((t) => h("th", {}, t)))), body));

  const first = await call("GET", "/v1/auditLog", undefined, {filter, orderBy: "timestamp desc", pageSize: PAGE});
  const entries = first.entries || [];
  const seen = new Set(entries.map((e) => e.insertId));
  let newest = entries.length ? entries[0].timestamp : "";
  body.append(...entries.map((e) => row(e, false)));
  status.textContent = `${entries.length} newest entries${filter ? ` matching ${filter}` : ""}; new ones appear live.`;

  let timer = 0;
  let stopped = false;
  const poll = async () => {
    if (stopped) return;
    if (!document.hidden) {
      try {
        const since = newest ? `timestamp>=${quoted(newest)}` : "";
        const page = await call("GET", "/v1/auditLog", undefined,
          {filter: [filter, since].filter(Boolean).join(" AND "), orderBy: "timestamp asc", pageSize: 200});
        for (const e of page.entries || []) {
          if (seen.has(e.insertId)) continue;
          seen.add(e.insertId);
          body.prepend(row(e, true));
          if (!newest || e.timestamp > newest) newest = e.timestamp;
        }
        while (body.children.length > 500) body.lastChild.remove();
      } catch (err) {
        if (!stopped) clear(status, errorBanner(err));
      }
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  };
  timer = setTimeout(poll, POLL_MS);
  onLeave(() => { stopped = true; clearTimeout(timer); });

}
