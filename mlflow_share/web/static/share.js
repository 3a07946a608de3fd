// Shared by the /share/ pages: API calls with the session's CSRF token, safe DOM building,
// the navigation bar. No data is ever put into innerHTML: text goes through textContent.
"use strict";

const Share = (() => {
  const API = "/api/2.0/mlflow-share";

  let session = null;  // {user, is_admin, teams, csrf_token}, from GET /share/session

  async function me() {
    if (session === null) {
      session = await call("GET", "/share/session");
      // Team names are data: "constructor" must not find Object's own properties.
      session.teams = Object.assign(Object.create(null), session.teams);
    }
    return session;
  }

  async function call(method, path, body) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") headers["X-CSRF-Token"] = (await me()).csrf_token || "";
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path.startsWith("/") ? path : `${API}/${path}`, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401) {
      window.location.assign(`/share/login?next=${encodeURIComponent(location.pathname + location.search)}`);
      throw new Error("Your session has ended.");
    }
    const text = await response.text();
    let data = {};
    try { data = text ? JSON.parse(text) : {}; } catch (e) { data = { message: text }; }
    if (!response.ok) {
      const error = new Error(data.message || `${response.status} ${response.statusText}`);
      error.status = response.status;
      error.code = data.error_code;
      throw error;
    }
    return data;
  }

  // el("tr", {class: "x", dataset: {team: "a"}}, child, "text", ...)
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function showError(target, error) {
    target.replaceChildren(el("p", { class: "error", role: "alert" }, error.message || String(error)));
  }

  async function logout() {
    await fetch("/share/logout", { method: "POST", credentials: "same-origin",
                                   headers: { "X-CSRF-Token": (await me()).csrf_token || "" } });
    window.location.assign("/share/login");
  }

  // The side bar: MLflow's own sections (its UI is a hash-routed page at /) and the
  // /share/ pages, in MLflow's order and look, so the two read as one product.
  const MLFLOW_LINKS = [["/#/", "Home"], ["/#/experiments", "Experiments"], ["/#/models", "Models"]];
  const SHARE_LINKS = [["", "Model sharing"], ["access", "Access control"], ["monitoring", "Monitoring"]];

  async function nav(active) {
    const who = await me();
    const link = (href, label, current) => el("li", {}, el("a", {
      href, class: current ? "active" : undefined, "aria-current": current ? "page" : undefined }, label));
    const bar = el("aside", { class: "sidebar" },
      el("a", { class: "brand", href: "/", "aria-label": "MLflow home" }, "mlflow",
         el("span", { class: "brand-share" }, "share")),
      el("nav", { "aria-label": "MLflow" },
        el("ul", {}, MLFLOW_LINKS.map(([href, label]) => link(href, label, false)))),
      el("p", { class: "sidebar-heading", id: "sidebar-share" }, "Sharing"),
      el("nav", { "aria-labelledby": "sidebar-share" },
        el("ul", {}, SHARE_LINKS.map(([path, label]) => link(`/share/${path}`, label, path === active)))),
      el("span", { class: "spacer" }),
      el("div", { class: "account" },
        el("span", { class: "avatar", "aria-hidden": "true" }, (who.user || "?").slice(0, 1).toUpperCase()),
        el("span", { class: "me", id: "me", title: who.is_admin ? "org admin" : "" }, who.user),
        el("button", { type: "button", id: "logout", onclick: logout }, "Log out")));
    document.body.classList.add("app");
    document.body.prepend(bar);
    return who;
  }

  const time = (ms) => (ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "");

  return { call, el, showError, nav, me, time, API };
})();
