// An account's keys: list, create (the key file is offered once, as a download), disable, enable, delete.

import {call, enc, listAll} from "./api.js";
import {go} from "./app.js";
import {clear, errorBanner, field, h, table, toast} from "./dom.js";

export async function render({root, params, project}) {
  const accounts = await listAll(`/v1/projects/${enc(project)}/serviceAccounts`, "accounts", {pageSize: 100});
  const email = params.get("account") || (accounts[0] && accounts[0].email) || "";
  const picker = h("select", {id: "key-account", onchange: (e) => go(`#/keys?account=${enc(e.target.value)}`)},
    accounts.map((a) => h("option", {value: a.email, selected: a.email === email}, a.email)));
  root.append(h("h1", {}, "Keys"), h("form", {className: "inline"}, field("Service account", picker)));
  if (!email) {
    root.append(h("p", {className: "muted"}, "No service accounts in this project."));
    return;
  }
  const base = `/v1/projects/-/serviceAccounts/${enc(email)}/keys`;
  const message = h("div");
  const again = () => go(`#/keys?account=${enc(email)}&t=${Date.now()}`);
  const act = async (what, fn) => {
    try { await fn(); toast(what); again(); } catch (err) { clear(message, errorBanner(err)); }
  };
  const keys = (await call("GET", base)).keys || [];
  const rows = keys.map((k) => {
    const id = k.name.split("/").pop();
    const path = `${base}/${enc(id)}`;
    const user = k.keyType === "USER_MANAGED";
    return h("tr", {dataset: {key: id}}, h("td", {}, h("code", {}, id)), h("td", {}, k.keyType || ""),
      h("td", {}, k.validAfterTime || ""), h("td", {}, k.validBeforeTime || ""),
      h("td", {}, k.disabled ? "disabled" : "enabled"),
      h("td", {}, !user ? h("span", {className: "muted"}, "managed by keyless") : [
        k.disabled
          ? h("button", {type: "button", onclick: () => act("Key enabled.", () => call("POST", `${path}:enable`, {}))}, "Enable")
          : h("button", {type: "button", onclick: () => act("Key disabled.", () => call("POST", `${path}:disable`, {}))}, "Disable"),
        " ",
        h("button", {type: "button", className: "danger", onclick: () => {
          if (confirm(`Delete key ${id}?`)) act("Key deleted.", () => call("DELETE", path));
        }}, "Delete")]));
  });
  const download = h("p");
  const create = h("button", {type: "button", id: "create-key", className: "primary", onclick: async () => {
    try {
      const key = await call("POST", base, {});
      const blob = new Blob([atob(key.privateKeyData)], {type: "application/json"});
      const id = key.name.split("/").pop();
      clear(download, "Created key ", h("code", {}, id), ": ",
        h("a", {href: URL.createObjectURL(blob), download: `${email.split("@")[0]}-${id.slice(0, 8)}.json`},
          "download its key file"), " (shown once).");
    } catch (err) {
      clear(message, errorBanner(err));
    }
  }}, "Create key");
  root.append(message, table(["Key id", "Type", "Valid after", "Valid before", "State", ""], rows),
    h("h2", {}, "New key"), create, download);
}
