// The impersonation graph: who can obtain the credentials of the project's accounts, directly or through other
// accounts, groups and delegation, from one call (GET /keyless/v1/projects/{project}:impersonationGraph).
// Principals, groups, accounts and projects are nodes; grants are edges (dashed when conditional); a group's
// members and a project's accounts are dotted edges. A click on a node highlights the paths through it. A graph
// too large to draw at once is drawn around one node (its paths, nearest first, at most MAX_DRAWN nodes), chosen
// with the search box; the page says so. The drawn grants are listed below the drawing.

import {call, enc} from "./api.js";
import {clear, h, table} from "./dom.js";

export const MAX_DRAWN = 150;  // nodes drawn at once; a larger graph is drawn around one node
const MAX_SUGGESTIONS = 12;
const MAX_UNEXPLORED_NAMED = 20;

function plural(count, word) {
  return `${count.toLocaleString()} ${word}${count === 1 ? "" : "s"}`;
}

function label(id) {
  return id.replace(/^serviceAccount:/, "");
}

// The answer's nodes and edges, with each node's edges in and out. A grant on a project reaches each of its
// accounts: a "contains" edge from the project's node to each account of it in the graph carries that.
export function buildGraph(answer) {
  const nodes = (answer.nodes || []).map((n) => ({id: n.id, kind: n.kind, project: n.project || ""}));
  const roles = answer.roles || [];
  const conditions = answer.conditions || [];
  const edges = [];
  for (const e of answer.edges || []) {
    const role = roles[e.role] || {name: "?", permissions: []};
    const condition = e.condition === undefined ? null : conditions[e.condition] || {};
    edges.push({source: e.source, target: e.target, kind: "grant", role: role.name, permissions: role.permissions,
      conditional: condition !== null, condition: condition ? (condition.title || condition.expression || "") : ""});
  }
  for (const e of answer.memberships || []) edges.push({source: e.source, target: e.target, kind: "member"});
  const projectNode = new Map();
  nodes.forEach((n, i) => { if (n.kind === "project") projectNode.set(n.project, i); });
  nodes.forEach((n, i) => {
    if (n.kind === "serviceAccount" && projectNode.has(n.project)) {
      edges.push({source: projectNode.get(n.project), target: i, kind: "contains"});
    }
  });
  const into = nodes.map(() => []);
  const out = nodes.map(() => []);
  edges.forEach((e, i) => { out[e.source].push(i); into[e.target].push(i); });
  const index = new Map(nodes.map((n, i) => [n.id, i]));
  return {nodes, edges, into, out, index, unexplored: answer.unexplored || []};
}

// The nodes on paths through `centre` (who can become it, whom it can become), nearest first, at most `limit`.
export function neighbourhood(graph, centre, limit = MAX_DRAWN) {
  const distance = new Map([[centre, 0]]);
  let frontier = [[centre, "in"], [centre, "out"]];
  let complete = true;
  while (frontier.length) {
    const next = [];
    for (const [node, way] of frontier) {
      for (const i of (way === "in" ? graph.into : graph.out)[node]) {
        const other = way === "in" ? graph.edges[i].source : graph.edges[i].target;
        if (distance.has(other)) continue;
        if (distance.size >= limit) {
          complete = false;
          continue;
        }
        distance.set(other, distance.get(node) + 1);
        next.push([other, way]);
      }
    }
    frontier = next;
  }
  return {distance, complete};
}

// Where to start on a large graph: the account of the project that the most grants name.
function busiestAccount(graph, project) {
  let best = -1;
  let most = -1;
  graph.nodes.forEach((n, i) => {
    if (n.kind !== "serviceAccount" || n.project !== project) return;
    if (graph.into[i].length > most) {
      best = i;
      most = graph.into[i].length;
    }
  });
  return best;
}

export async function render({root, project, params}) {
  const answer = await call("GET", `/keyless/v1/projects/${enc(project)}:impersonationGraph`);
  const graph = buildGraph(answer);
  const grants = graph.edges.filter((e) => e.kind === "grant").length;
  const bounded = graph.nodes.length > MAX_DRAWN;

  const box = h("div", {id: "graph", role: "img", "aria-label": "impersonation graph"});
  const detail = h("div", {id: "graph-detail"});
  const bounds = h("p", {id: "graph-bounds", className: "muted"});
  const listing = h("div", {id: "graph-grants"});
  const search = h("input", {id: "graph-search", type: "search", placeholder: "principal, group or account",
    autocomplete: "off", "aria-label": "find a node"});
  const suggestions = h("div", {id: "graph-suggestions"});
  const unexplored = graph.unexplored;
  root.append(h("h1", {}, `Impersonation graph of ${project}`),
    h("p", {className: "legend"}, "Arrows point from who can act to the account whose credentials it can obtain. ",
      "Dashed: conditional. Dotted: a group's member to the group, a project to its accounts (a grant on a project ",
      "reaches each)."),
    unexplored.length ? h("div", {className: "banner", id: "graph-unexplored"},
      `Policies you may not read were left out (${unexplored.length}): `,
      unexplored.slice(0, MAX_UNEXPLORED_NAMED).join(", "),
      unexplored.length > MAX_UNEXPLORED_NAMED ? ", …" : "") : "",
    h("div", {className: "graph-wrap"}, box, h("div", {},
      h("form", {id: "graph-find", onsubmit: (event) => {
        event.preventDefault();
        const found = graph.index.get(search.value.trim()) ?? match(search.value)[0];
        if (found !== undefined) find(found);
      }}, search, " ", h("button", {type: "submit"}, "Show"), suggestions),
      bounds, detail)),
    h("h2", {}, "Grants"),
    listing);
  root.dataset.total = String(graph.nodes.length);
  root.dataset.grants = String(grants);

  function match(text) {
    const needle = text.trim().toLowerCase();
    if (!needle) return [];
    const out = [];
    for (let i = 0; i < graph.nodes.length && out.length < MAX_SUGGESTIONS; i++) {
      if (graph.nodes[i].id.toLowerCase().includes(needle)) out.push(i);
    }
    return out;
  }
  search.addEventListener("input", () => {
    clear(suggestions, match(search.value).map((i) => h("button", {type: "button", className: "suggestion",
      onclick: () => { search.value = graph.nodes[i].id; clear(suggestions); find(i); }}, label(graph.nodes[i].id))));
  });

  const {default: cytoscape} = await import("./cytoscape.esm.min.js");
  let cy = null;

  function draw(drawn, centre) {
    const kept = [...graph.edges.keys()].filter((i) => drawn.has(graph.edges[i].source) && drawn.has(graph.edges[i].target));
    const elements = [
      ...[...drawn.keys()].map((i) => ({data: {id: graph.nodes[i].id, label: label(graph.nodes[i].id),
        kind: graph.nodes[i].kind, distance: drawn.get(i)}})),
      ...kept.map((i) => {
        const e = graph.edges[i];
        return {data: {id: `e${i}`, source: graph.nodes[e.source].id, target: graph.nodes[e.target].id, kind: e.kind,
          role: e.role || "", conditional: Boolean(e.conditional)}};
      }),
    ];
    // The table first: a scroll bar it brings narrows the drawing's box, which cytoscape measures when created.
    list(kept.filter((i) => graph.edges[i].kind === "grant"));
    if (cy) cy.destroy();
    const far = Math.max(0, ...drawn.values());
    cy = cytoscape({
      container: box,
      elements,
      layout: centre === null
        ? {name: drawn.size > 60 ? "grid" : "cose", animate: false, padding: 20}
        : {name: "concentric", animate: false, padding: 20, minNodeSpacing: 12,
          concentric: (n) => far - n.data("distance"), levelWidth: () => 1},
      wheelSensitivity: 0.3,
      maxZoom: 1.6,
      minZoom: 0.1,
      style: [
        {selector: "node", style: {"label": "data(label)", "font-size": 11, "text-valign": "bottom", "text-margin-y": 4,
          "background-color": "#1a73e8", "width": 18, "height": 18, "color": "#202124"}},
        {selector: 'node[kind = "serviceAccount"]', style: {"shape": "round-rectangle", "background-color": "#188038"}},
        {selector: 'node[kind = "group"]', style: {"shape": "diamond", "background-color": "#a142f4"}},
        {selector: 'node[kind = "project"]', style: {"shape": "barrel", "background-color": "#5f6368", "width": 26}},
        {selector: 'node[kind = "principal"], node[kind = "principalSet"]', style: {"shape": "hexagon", "background-color": "#e37400"}},
        {selector: "edge", style: {"width": 1.5, "curve-style": "bezier", "target-arrow-shape": "triangle",
          "line-color": "#9aa0a6", "target-arrow-color": "#9aa0a6"}},
        {selector: "edge[?conditional]", style: {"line-style": "dashed", "line-color": "#e37400", "target-arrow-color": "#e37400"}},
        {selector: 'edge[kind = "member"], edge[kind = "contains"]', style: {"line-style": "dotted", "width": 1}},
        {selector: ".faded", style: {"opacity": 0.15}},
        {selector: "edge.highlighted", style: {"line-color": "#d93025", "target-arrow-color": "#d93025", "width": 3}},
        {selector: "node.highlighted", style: {"background-color": "#d93025"}},
      ],
    });
    cy.on("tap", "node", (event) => select(event.target));
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

  function select(node) {
    const paths = node.predecessors().union(node.successors()).union(node);
    cy.elements().removeClass("highlighted").addClass("faded");
    paths.removeClass("faded").addClass("highlighted");
    const names = (nodes) => nodes.filter((n) => n.data("kind") !== "project").map((n) => n.id()).sort();
    const into = names(node.predecessors("node"));
    const out = names(node.successors("node"));
    const i = graph.index.get(node.id());
    clear(detail, h("h2", {id: "selected-node"}, node.id()),
      h("p", {}, h("strong", {}, "Can obtain its credentials: "), into.length ? into.join(", ") : "nobody"),
      h("p", {}, h("strong", {}, "Whose credentials it can obtain: "), out.length ? out.join(", ") : "none"),
      bounded ? h("p", {className: "muted"}, "Among the nodes drawn. ",
        h("button", {type: "button", id: "graph-recentre", onclick: () => show(i)}, "Draw around this node")) : "");
    root.dataset.selected = node.id();
  }

  function list(shown) {
    const rows = shown.map((i) => graph.edges[i]).sort((x, y) =>
      (graph.nodes[x.target].id + graph.nodes[x.source].id).localeCompare(graph.nodes[y.target].id + graph.nodes[y.source].id));
    clear(listing, rows.length ? table(["Principal", "Can obtain credentials of", "Role", "Condition"], rows.map((e) => {
      const source = graph.nodes[e.source];
      const target = graph.nodes[e.target];
      return h("tr", {className: "edge", dataset: {source: source.id, target: target.id, role: e.role,
        conditional: String(e.conditional)}},
      h("td", {}, source.id),
      h("td", {}, target.kind === "project" ? `every account of ${target.id}` : label(target.id)),
      h("td", {}, h("code", {}, e.role), e.permissions.length === 1 ? h("span", {className: "muted"}, ` (${e.permissions[0]})`) : ""),
      h("td", {}, e.conditional ? h("span", {className: "pill cond"}, e.condition) : ""));
    })) : h("p", {className: "muted", id: "no-grants"}, bounded
      ? "No grant among the nodes drawn." : "Nobody can obtain the credentials of these accounts."));
  }

  // A node searched for: drawn around in a large graph, selected in one drawn whole.
  function find(i) {
    if (bounded) show(i);
    else select(cy.getElementById(graph.nodes[i].id));
  }

  // A large graph: the paths through one node, nearest first.
  function show(centre) {
    const {distance, complete} = neighbourhood(graph, centre);
    clear(bounds, `This graph has ${plural(graph.nodes.length, "node")} and ${plural(grants, "grant")}: `,
      `too many to draw at once. Drawn: the paths through ${graph.nodes[centre].id}, `,
      complete ? `${plural(distance.size, "node")}.` : `its nearest ${distance.size} nodes (more are connected).`,
      " Search for another principal, group or account above, or click a node and draw around it.");
    root.dataset.centre = graph.nodes[centre].id;
    draw(distance, centre);
    const node = cy.getElementById(graph.nodes[centre].id);
    if (node.nonempty()) select(node);
  }

  if (!graph.nodes.length) {
    list([]);
    return;
  }
  if (!bounded) {
    clear(bounds, `${plural(graph.nodes.length, "node")}, ${plural(grants, "grant")}: the whole graph is drawn.`);
    draw(new Map(graph.nodes.map((_, i) => [i, 0])), null);
    return;
  }
  const asked = params && params.get("node") ? graph.index.get(params.get("node")) : undefined;
  const start = asked ?? busiestAccount(graph, project);
  show(start >= 0 ? start : 0);
}
