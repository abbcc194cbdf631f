// The impersonation graph: who can obtain the credentials of the project's accounts, directly or through other
// accounts and delegation (GET /keyless/v1/serviceAccounts/{account}:whoCanImpersonate for each account).
// Principals and accounts are nodes, grants are edges (dashed when conditional); a click on a node highlights
// the paths through it. The same grants are listed below the drawing.

import {call, enc, listAll} from "./api.js";
import {clear, h, table} from "./dom.js";

const MAX_ACCOUNTS = 300;
const PARALLEL = 6;

async function eachLimited(items, fn) {
  const queue = [...items];
  await Promise.all(Array.from({length: Math.min(PARALLEL, queue.length)}, async () => {
    while (queue.length) await fn(queue.shift());
  }));
}

function kindOf(member) {
  const kind = member.split(":")[0];
  return ["user", "serviceAccount", "group", "principal", "principalSet", "domain"].includes(kind) ? kind : "other";
}

export async function render({root, project}) {
  const accounts = (await listAll(`/v1/projects/${enc(project)}/serviceAccounts`, "accounts", {pageSize: 100}))
    .slice(0, MAX_ACCOUNTS);
  const nodes = new Map();
  const edges = new Map();
  const problems = [];
  const addNode = (id, extra = {}) => {
    if (!nodes.has(id)) nodes.set(id, {id, label: id.replace(/^serviceAccount:/, ""), kind: kindOf(id), ...extra});
  };
  for (const a of accounts) addNode(`serviceAccount:${a.email}`, {inProject: true});
  await eachLimited(accounts, async (a) => {
    try {
      const found = await call("GET", `/keyless/v1/serviceAccounts/${enc(a.email)}:whoCanImpersonate`);
      for (const p of found.principals || []) {
        for (const e of p.path || []) {
          const source = e.principal;
          const target = `serviceAccount:${e.serviceAccount}`;
          addNode(source);
          addNode(target);
          const conditional = Boolean(e.condition);
          const id = `${source}|${target}|${e.role}|${conditional ? JSON.stringify(e.condition) : ""}`;
          edges.set(id, {id, source, target, role: e.role, conditional,
            condition: e.condition ? (e.condition.title || e.condition.expression) : "", via: e.via || "",
            on: e.attachedResourceFullName || ""});
        }
      }
    } catch (err) {
      problems.push(`${a.email}: ${err.message}`);
    }
  });

  const box = h("div", {id: "graph", role: "img", "aria-label": "impersonation graph"});
  const detail = h("div", {id: "graph-detail"}, h("p", {className: "muted"},
    "Click a node to highlight every path through it; click the background to clear."));
  const list = [...edges.values()].sort((x, y) => (x.target + x.source).localeCompare(y.target + y.source));
  root.append(h("h1", {}, `Impersonation graph of ${project}`),
    h("p", {className: "legend"}, "Arrows point from who can act to the account whose credentials it can obtain. ",
      "Dashed: the grant has a condition. Grants on the project reach every account in it."),
    problems.length ? h("div", {className: "banner"}, `Some accounts could not be explored: ${problems.join("; ")}`) : "",
    h("div", {className: "graph-wrap"}, box, detail),
    h("h2", {}, "Grants"),
    list.length ? table(["Principal", "Can obtain credentials of", "Role", "Condition", "Via"], list.map((e) =>
      h("tr", {className: "edge", dataset: {source: e.source, target: e.target, role: e.role,
        conditional: String(e.conditional)}},
      h("td", {}, e.source), h("td", {}, e.target.replace(/^serviceAccount:/, "")), h("td", {}, h("code", {}, e.role)),
      h("td", {}, e.conditional ? h("span", {className: "pill cond"}, e.condition) : ""),
      h("td", {}, e.via || (e.on.includes("/serviceAccounts/") ? "" : e.on)))))
      : h("p", {className: "muted", id: "no-grants"}, "Nobody can obtain the credentials of these accounts."));

  if (!nodes.size) return;
  const {default: cytoscape} = await import("./cytoscape.esm.min.js");
  const cy = cytoscape({
    container: box,
    elements: [...[...nodes.values()].map((data) => ({data})), ...list.map((data) => ({data}))],
    layout: {name: nodes.size > 60 ? "grid" : "cose", animate: false, padding: 20},
    wheelSensitivity: 0.3,
    maxZoom: 1.6,
    minZoom: 0.1,
    style: [
      {selector: "node", style: {"label": "data(label)", "font-size": 11, "text-valign": "bottom", "text-margin-y": 4,
        "background-color": "#1a73e8", "width": 18, "height": 18, "color": "#202124"}},
      {selector: 'node[kind = "serviceAccount"]', style: {"shape": "round-rectangle", "background-color": "#188038"}},
      {selector: 'node[kind = "group"]', style: {"shape": "diamond", "background-color": "#a142f4"}},
      {selector: 'node[kind = "principal"], node[kind = "principalSet"]', style: {"shape": "hexagon", "background-color": "#e37400"}},
      {selector: "edge", style: {"width": 1.5, "curve-style": "bezier", "target-arrow-shape": "triangle",
        "line-color": "#9aa0a6", "target-arrow-color": "#9aa0a6"}},
      {selector: "edge[?conditional]", style: {"line-style": "dashed", "line-color": "#e37400", "target-arrow-color": "#e37400"}},
      {selector: ".faded", style: {"opacity": 0.15}},
      {selector: "edge.highlighted", style: {"line-color": "#d93025", "target-arrow-color": "#d93025", "width": 3}},
      {selector: "node.highlighted", style: {"background-color": "#d93025"}},
    ],
  });
  cy.on("tap", "node", (event) => {
    const node = event.target;
    const paths = node.predecessors().union(node.successors()).union(node);
    cy.elements().removeClass("highlighted").addClass("faded");
    paths.removeClass("faded").addClass("highlighted");
    const into = node.predecessors("node").map((n) => n.id()).sort();
    const out = node.successors("node").map((n) => n.id()).sort();
    clear(detail, h("h2", {id: "selected-node"}, node.id()),
      h("p", {}, h("strong", {}, "Can obtain its credentials: "), into.length ? into.join(", ") : "nobody"),
      h("p", {}, h("strong", {}, "Whose credentials it can obtain: "), out.length ? out.join(", ") : "none"));
    root.dataset.selected = node.id();
  });
  cy.on("tap", (event) => {
    if (event.target === cy) {
      cy.elements().removeClass("faded highlighted");
      delete root.dataset.selected;
    }
  });
  box.cy = cy;  // for the browser test, which clicks where a node is drawn
  root.dataset.nodes = String(cy.nodes().length);
  root.dataset.edges = String(cy.edges().length);
}


