// Projects: the ones the user may see, and a new one (the creator becomes its owner).

import {call} from "./api.js";
import {go, refreshProjects, state} from "./app.js";
import {errorBanner, field, formValues, h, table, toast} from "./dom.js";

export async function render({root}) {
  const body = await call("GET", "/v1/projects", undefined, {pageSize: 500});
  const projects = body.projects || [];
  const use = (id) => { state.project = id; go("#/accounts"); };
  const created = h("div");
  const form = h("form", {className: "inline", id: "create-project", onsubmit: async (event) => {
    event.preventDefault();
    const {projectId} = formValues(form);
    try {
      await call("POST", "/keyless/v1/projects", {projectId});
      toast(`Created project ${projectId}.`);
      await refreshProjects();
      state.project = projectId;
      go("#/projects");
    } catch (err) {
      created.replaceChildren(errorBanner(err));
    }
  }}, field("New project id", h("input", {name: "projectId", required: true, placeholder: "my-project"})),
  h("button", {type: "submit"}, "Create project"));
  root.append(h("h1", {}, "Projects"),
    table(["Project", "Number", "State", ""], projects.map((p) => h("tr", {dataset: {project: p.projectId}},
      h("td", {}, p.projectId), h("td", {}, p.projectNumber || ""), h("td", {}, p.lifecycleState || ""),
      h("td", {}, h("button", {type: "button", onclick: () => use(p.projectId)},
        p.projectId === state.project ? "Selected" : "Open"))))),
    h("h2", {}, "Create a project"), form, created);
}
