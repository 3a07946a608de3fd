// mlflow-share in MLflow's own UI (served in its index.html, after MLflow's bundle):
// 1. the side bar gets a "Sharing" group with links to the /share/ pages, in MLflow's own
//    look (the new links copy the classes of MLflow's "Experiments" link);
// 2. for users who are not org admins, the UI's entries for features that only org admins
//    may use on this server (the AI gateway, LLM connections and webhooks settings, the
//    assistant, the demo data buttons: policy/routes.py ADMIN_ONLY_*) are hidden, so the UI
//    advertises nothing that would only answer 403. The server still decides every call.
// MLflow has no extension API: both are placed against anchors found in the rendered page and
// do nothing when they are missing. No data goes through innerHTML.
"use strict";

(() => {
  if (window.__mlflowShareUiNav) return;
  window.__mlflowShareUiNav = true;

  const GROUP_ID = "mlflow-share-nav";
  const HIDDEN = "data-mlflow-share-admin-only";
  const LINKS = [["/share/", "Model sharing"], ["/share/access", "Access control"],
                 ["/share/monitoring", "Monitoring"]];
  // What only org admins may use (their routes are admin-only on the server).
  const ADMIN_ONLY_ROUTES = ["#/gateway", "#/settings/llm-connections", "#/settings/webhooks"];
  const ADMIN_ONLY_SELECTORS = [
    "[data-assistant-ui]", '[data-component-id^="mlflow.assistant"]',
    '[data-component-id="mlflow.home.demo-banner.launch"]',
    '[data-component-id="mlflow.settings.demo.clear-all-button"]',
  ];

  let isAdmin = null;  // unknown until /share/session answers
  fetch("/share/session", { credentials: "same-origin", cache: "no-store",
                            headers: { Accept: "application/json" } })
    .then((response) => (response.ok ? response.json() : null))
    .then((session) => { isAdmin = Boolean(session && session.is_admin); schedule(); }, () => {});

  function text(tag, attrs, value) {
    const node = document.createElement(tag);
    for (const [key, v] of Object.entries(attrs)) node.setAttribute(key, v);
    node.textContent = value;
    return node;
  }

  function addLinks() {
    if (document.getElementById(GROUP_ID)) return;
    const model = document.querySelector('aside nav a[href="#/experiments"]');
    const item = model && model.closest("li");
    const list = item && item.parentElement;
    if (!list || list.tagName !== "UL") return;
    const group = document.createElement("li");
    group.id = GROUP_ID;
    group.append(text("div", { class: "mlflow-share-nav-heading", id: `${GROUP_ID}-heading` }, "Sharing"));
    const links = document.createElement("ul");
    links.setAttribute("aria-labelledby", `${GROUP_ID}-heading`);
    links.className = list.className;
    for (const [href, label] of LINKS) {
      const li = document.createElement("li");
      const a = text("a", { href, class: model.className }, label);
      li.append(a);
      links.append(li);
    }
    group.append(links);
    list.append(group);
  }

  function conceal(node) {
    if (node.hasAttribute(HIDDEN)) return;
    node.setAttribute(HIDDEN, "");
    node.style.setProperty("display", "none", "important");
  }

  function hideAdminOnly() {
    if (isAdmin !== false) return;  // admins, or not known yet
    for (const route of ADMIN_ONLY_ROUTES) {
      for (const link of document.querySelectorAll(`a[href^="${route}"]`)) conceal(link.closest("li") || link);
    }
    for (const node of document.querySelectorAll(ADMIN_ONLY_SELECTORS.join(","))) {
      // A card whose one button this is goes with it (its text only explains the button).
      const card = node.parentElement;
      const alone = node.matches("button") && card && card !== document.body &&
        card.querySelectorAll("button").length === 1 && !card.querySelector("aside, main, nav, h1, h2");
      conceal(alone ? card : node);
    }
  }

  let scheduled = false;
  function run() {
    if (!scheduled) return;
    scheduled = false;
    try { addLinks(); hideAdminOnly(); } catch (error) { console.warn("mlflow-share navigation:", error); }
  }
  function schedule() {
    if (scheduled) return;
    scheduled = true;
    window.requestAnimationFrame(run);
    window.setTimeout(run, 200);
  }
  new MutationObserver(schedule).observe(document.getElementById("root") || document.body,
                                         { childList: true, subtree: true });
  schedule();
})();
