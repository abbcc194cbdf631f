// The Policy Troubleshooter (POST /v3/iam:troubleshoot) and the chain explanation
// (POST /keyless/v1/iam:troubleshootChain) as forms. An audit entry's "Explain" opens this page with its query.

import {call} from "./api.js";
import {clear, errorBanner, field, formValues, h, table} from "./dom.js";

const V3 = "/v3/iam:troubleshoot";
const CHAIN = "/keyless/v1/iam:troubleshootChain";
const METHODS = ["generateAccessToken", "generateIdToken", "signBlob", "signJwt"];

function stateText(value) {
  return String(value || "").replace(/^(ALLOW_ACCESS_STATE_|MEMBERSHIP_|ROLE_PERMISSION_)/, "");
}

function bindings(policy) {
  const rows = (policy.bindingExplanations || []).map((b) => h("tr", {},
    h("td", {className: `state-${stateText(b.allowAccessState)}`}, stateText(b.allowAccessState)),
    h("td", {}, h("code", {}, b.role)),
    h("td", {}, stateText(b.rolePermission)),
    h("td", {}, Object.entries(b.memberships || {}).map(([m, v]) => h("div", {}, `${m}: ${stateText(v.membership)}`))),
    h("td", {}, b.condition ? [h("code", {}, b.condition.expression), " → ",
      b.conditionExplanation ? JSON.stringify(b.conditionExplanation.value ?? b.conditionExplanation.errors) : "?"] : "")));
  return h("div", {}, h("h3", {}, `${policy.fullResourceName} `,
    h("span", {className: `state-${stateText(policy.allowAccessState)}`}, stateText(policy.allowAccessState))),
  rows.length ? table(["Access", "Role", "Role has the permission", "Members", "Condition"], rows)
    : h("p", {className: "muted"}, "No bindings."));
}

function showAccess(out, body) {
  const allow = body.allowPolicyExplanation || {};
  clear(out, h("p", {id: "overall"}, "Overall: ",
    h("strong", {className: `state-${body.overallAccessState}`}, body.overallAccessState)),
  (allow.explainedPolicies || []).map(bindings));
}

function showChain(out, body) {
  clear(out, h("p", {id: "chain-overall"}, "Overall: ",
    h("strong", {className: `state-${body.overallAccessState}`}, body.overallAccessState),
    body.failingHop ? ` (hop ${body.failingHop} fails)` : ""),
  (body.hops || []).map((hop) => h("div", {className: "hop", dataset: {hop: String(hop.hop)}},
    h("h3", {}, `Hop ${hop.hop}: ${hop.principal} → ${hop.serviceAccount} (${hop.permission}) `,
      h("span", {className: `state-${hop.overallAccessState}`}, hop.overallAccessState)),
    h("p", {}, hop.summary || ""),
    ((hop.allowPolicyExplanation || {}).explainedPolicies || []).map(bindings))));
}

export async function render({root, params}) {
  const accessOut = h("div", {id: "access-result"});
  const chainOut = h("div", {id: "chain-result"});
  const access = h("form", {className: "stack", id: "troubleshoot-form", onsubmit: async (event) => {
    event.preventDefault();
    const v = formValues(access);
    clear(accessOut, h("p", {className: "muted"}, "Explaining…"));
    try {
      showAccess(accessOut, await call("POST", V3, {accessTuple: {principal: v.principal,
        fullResourceName: v.fullResourceName, permission: v.permission}}));
    } catch (err) {
      clear(accessOut, errorBanner(err));
    }
  }},
  field("Principal (an email)", h("input", {name: "principal", id: "ts-principal", required: true})),
  field("Full resource name", h("input", {name: "fullResourceName", id: "ts-resource", required: true,
    placeholder: "//iam.googleapis.com/projects/P/serviceAccounts/EMAIL"})),
  field("Permission", h("input", {name: "permission", id: "ts-permission", required: true,
    value: "iam.serviceAccounts.getAccessToken"})),
  h("div", {}, h("button", {type: "submit", className: "primary", id: "ts-submit"}, "Troubleshoot")));

  const chain = h("form", {className: "stack", id: "chain-form", onsubmit: async (event) => {
    event.preventDefault();
    const v = formValues(chain);
    clear(chainOut, h("p", {className: "muted"}, "Explaining…"));
    const delegates = v.delegates.split(/[\s,]+/).filter(Boolean)
      .map((d) => d.includes("/") ? d : `projects/-/serviceAccounts/${d}`);
    try {
      showChain(chainOut, await call("POST", CHAIN, {principal: v.principal, delegates,
        serviceAccount: v.serviceAccount, method: v.method}));
    } catch (err) {
      clear(chainOut, errorBanner(err));
    }
  }},
  field("Caller (an email)", h("input", {name: "principal", id: "chain-principal", required: true})),
  field("Delegates, in order (emails, optional)", h("input", {name: "delegates", id: "chain-delegates"})),
  field("Target service account", h("input", {name: "serviceAccount", id: "chain-account", required: true})),
  field("Method", h("select", {name: "method", id: "chain-method"}, METHODS.map((m) => h("option", {value: m}, m)))),
  h("div", {}, h("button", {type: "submit", className: "primary", id: "chain-submit"}, "Explain the chain")));

  root.append(h("h1", {}, "Troubleshoot access"),
    h("h2", {}, "Why is a permission granted or denied? (Policy Troubleshooter)"), access, accessOut,
    h("h2", {}, "Which hop of a credentials call fails? (delegation chain)"), chain, chainOut);

  // An audit entry's query: only the two explaining APIs, with the fields their forms have.
  let query = null;
  try { query = JSON.parse(params.get("q") || "null"); } catch (_) { query = null; }
  if (query && query.path === V3 && query.body && query.body.accessTuple) {
    const t = query.body.accessTuple;
    access.elements.principal.value = t.principal || "";
    access.elements.fullResourceName.value = t.fullResourceName || "";
    access.elements.permission.value = t.permission || "";
    access.requestSubmit();
  } else if (query && query.path === CHAIN && query.body) {
    const b = query.body;
    chain.elements.principal.value = b.principal || "";
    chain.elements.delegates.value = (b.delegates || []).join(", ");
    chain.elements.serviceAccount.value = b.serviceAccount || "";
    if (METHODS.includes(b.method)) chain.elements.method.value = b.method;
    chain.requestSubmit();
  }
}
