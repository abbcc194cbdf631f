// IAM policies of the project or of one of its accounts: bindings with their conditions, edited as a
// read-modify-write with the policy's etag. A policy changed meanwhile by someone else is refused (409) and
// said so plainly: nothing is overwritten.

import {call, enc, listAll} from "./api.js";
import {go} from "./app.js";
import {clear, errorBanner, field, formValues, h, table, toast} from "./dom.js";

const ROLES = ["roles/iam.serviceAccountTokenCreator", "roles/iam.serviceAccountUser",
  "roles/iam.serviceAccountOpenIdTokenCreator", "roles/iam.workloadIdentityUser", "roles/iam.serviceAccountAdmin",
  "roles/iam.serviceAccountKeyAdmin", "roles/iam.securityReviewer", "roles/viewer", "roles/editor", "roles/owner"];

export async function render({root, params, project}) {
  const accounts = await listAll(`/v1/projects/${enc(project)}/serviceAccounts`, "accounts", {pageSize: 100});
  const account = params.get("account") || "";
  const resource = account ? `/v1/projects/-/serviceAccounts/${enc(account)}` : `/v1/projects/${enc(project)}`;
  const picker = h("select", {id: "policy-resource",
    onchange: (e) => go(e.target.value ? `#/policies?account=${enc(e.target.value)}` : "#/policies")},
  h("option", {value: ""}, `project ${project}`),
  accounts.map((a) => h("option", {value: a.email, selected: a.email === account}, `service account ${a.email}`)));
  const reload = () => go(`#/policies?${new URLSearchParams({account, t: Date.now()})}`);
  const policy = await call("POST", `${resource}:getIamPolicy`, {options: {requestedPolicyVersion: 3}});
  const message = h("div", {id: "policy-message"});

  // Every change is the loaded policy, changed, sent with the loaded etag.
  const save = async (change, what) => {
    const next = structuredClone(policy);
    next.bindings = next.bindings || [];
    change(next);
    next.bindings = next.bindings.filter((b) => b.members.length);
    if (next.bindings.some((b) => b.condition)) next.version = 3;
    try {
      await call("POST", `${resource}:setIamPolicy`, {policy: next});
      toast(what);
      reload();
    } catch (err) {
      clear(message, errorBanner(err), err.status === 409
        ? h("button", {type: "button", id: "policy-reload", onclick: reload}, "Reload the policy") : null);
    }
  };
  const sameCondition = (a, b) => JSON.stringify(a || null) === JSON.stringify(b || null);

  const rows = (policy.bindings || []).map((b, index) => h("tr", {dataset: {role: b.role}},
    h("td", {}, h("code", {}, b.role)),
    h("td", {}, b.members.map((m) => h("div", {className: "member", dataset: {member: m}}, m, " ",
      h("button", {type: "button", className: "danger", title: `Remove ${m}`, onclick: () => save((next) => {
        next.bindings[index].members = next.bindings[index].members.filter((x) => x !== m);
      }, `Removed ${m} from ${b.role}.`)}, "×")))),
    h("td", {}, b.condition ? [h("span", {className: "pill cond"}, b.condition.title || "condition"), " ",
      h("code", {}, b.condition.expression)] : h("span", {className: "muted"}, "none"))));

  const form = h("form", {className: "stack", id: "add-binding", onsubmit: (event) => {
    event.preventDefault();
    const v = formValues(form);
    const condition = v.expression.trim()
      ? {title: v.title.trim() || "condition", expression: v.expression.trim(), ...(v.description ? {description: v.description} : {})}
      : undefined;
    save((next) => {
      const found = next.bindings.find((b) => b.role === v.role && sameCondition(b.condition, condition));
      if (found) {
        if (!found.members.includes(v.member)) found.members.push(v.member);
      } else {
        next.bindings.push({role: v.role, members: [v.member], ...(condition ? {condition} : {})});
      }
    }, `Granted ${v.role} to ${v.member}.`);
  }},
  field("Role", h("input", {name: "role", required: true, value: ROLES[0], id: "binding-role"})),
  field("Member (user:, serviceAccount:, group:, principal://…)",
    h("input", {name: "member", required: true, id: "binding-member", placeholder: "user:alice@example.com"})),
  field("Condition title (optional)", h("input", {name: "title", id: "binding-title"})),
  field("Condition expression, CEL (optional)", h("textarea", {name: "expression", id: "binding-expression",
    placeholder: 'request.time < timestamp("2030-01-01T00:00:00Z")'})),
  field("Condition description (optional)", h("input", {name: "description"})),
  h("div", {}, h("button", {type: "submit", className: "primary", id: "binding-add"}, "Add binding")));

  root.append(h("h1", {}, "Policies"), h("form", {className: "inline"}, field("Resource", picker)), message,
    h("p", {className: "muted"}, "etag ", h("code", {id: "policy-etag"}, policy.etag || ""), ", version ",
      String(policy.version || 1)),
    rows.length ? table(["Role", "Members", "Condition"], rows) : h("p", {className: "muted"}, "No bindings."),
    h("h2", {}, "Add a binding"), form,
    h("details", {}, h("summary", {}, "The policy as JSON"), h("pre", {}, JSON.stringify(policy, null, 2))));
}
