// Service accounts of the selected project: list, create, disable or enable, delete.

import {call, enc, listAll} from "./api.js";
import {go} from "./app.js";
import {clear, errorBanner, field, formValues, h, table, toast} from "./dom.js";

export async function render(ctx) {
  const {root, project} = ctx;
  const accounts = await listAll(`/v1/projects/${enc(project)}/serviceAccounts`, "accounts", {pageSize: 100});
  const message = h("div");
  const again = () => go("#/accounts");
  const act = async (what, fn) => {
    try { await fn(); toast(what); again(); } catch (err) { clear(message, errorBanner(err)); }
  };
  const rows = accounts.map((a) => {
    const path = `/v1/projects/-/serviceAccounts/${enc(a.email)}`;
    return h("tr", {dataset: {email: a.email}},
      h("td", {}, a.email), h("td", {}, a.displayName || ""), h("td", {}, a.uniqueId),
      h("td", {}, a.disabled ? h("span", {className: "error"}, "disabled") : "enabled"),
      h("td", {},
        h("button", {type: "button", onclick: () => go(`#/keys?account=${enc(a.email)}`)}, "Keys"), " ",
        h("button", {type: "button", onclick: () => go(`#/policies?account=${enc(a.email)}`)}, "Policy"), " ",
        a.disabled
          ? h("button", {type: "button", className: "enable", onclick: () => act(`Enabled ${a.email}.`,
            () => call("POST", `${path}:enable`, {}))}, "Enable")
          : h("button", {type: "button", className: "disable", onclick: () => act(`Disabled ${a.email}.`,
            () => call("POST", `${path}:disable`, {}))}, "Disable"), " ",
        h("button", {type: "button", className: "danger delete", onclick: () => {
          if (confirm(`Delete ${a.email}? It can be undeleted for 30 days.`)) {
            act(`Deleted ${a.email}.`, () => call("DELETE", path));
          }
        }}, "Delete")));
  });
  const form = h("form", {className: "inline", id: "create-account", onsubmit: async (event) => {
    event.preventDefault();
    const {accountId, displayName} = formValues(form);
    await act(`Created ${accountId}.`, () => call("POST", `/v1/projects/${enc(project)}/serviceAccounts`,
      {accountId, serviceAccount: {displayName}}));
  }},
  field("Account id", h("input", {name: "accountId", required: true, placeholder: "my-robot"})),
  field("Display name", h("input", {name: "displayName"})),
  h("button", {type: "submit", className: "primary"}, "Create service account"));
  root.append(h("h1", {}, `Service accounts of ${project}`), form, message,
    accounts.length ? table(["Email", "Display name", "Unique id", "State", ""], rows)
      : h("p", {className: "muted"}, "No service accounts yet."));
}
