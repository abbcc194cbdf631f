// Building the page: every piece of data becomes a text node (textContent), never markup.

const PROPS = new Set(["id", "className", "type", "value", "name", "placeholder", "checked", "disabled", "hidden",
  "title", "htmlFor", "rows", "required", "selected", "autocomplete"]);

// h("td", {className: "x"}, "text", child...): strings and numbers are text, null/false are skipped.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "href") el.setAttribute("href", safeHref(value));
    else if (PROPS.has(key)) el[key] = value;
    else if (key.startsWith("aria-") || key === "role" || key === "for" || key === "download") el.setAttribute(key, String(value));
    else throw new Error(`attribute ${key} is not allowed`);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

// Only the console's own routes and object URLs (downloads) are ever linked.
function safeHref(value) {
  const text = String(value);
  return text.startsWith("#/") || text.startsWith("blob:") ? text : "#/";
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function table(headers, rows) {
  return h("table", {}, h("thead", {}, h("tr", {}, headers.map((t) => h("th", {}, t)))), h("tbody", {}, rows));
}

export function field(label, input) {
  return h("label", {}, label, input);
}

let toastTimer = 0;
export function toast(message) {
  const el = document.getElementById("toast");
  el.textContent = message;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.textContent = ""; }, 4000);
}

// The readable text of an API failure (Google's error shape, or OAuth's).
export function describeError(err) {
  if (err && err.status === 409) {
    return "This was changed by someone else since you loaded it. Reload to see the current version, then make "
      + "your change again.";
  }
  return err && err.message ? err.message : String(err);
}

export function errorBanner(err) {
  return h("div", {className: "banner", role: "alert"}, describeError(err));
}

export function formValues(form) {
  return Object.fromEntries(new FormData(form).entries());
}
