// mlflow-share's additions to MLflow's own UI (served in its index.html, after MLflow's bundle):
// 1. every same-origin state-changing fetch/XHR of the UI carries the session's CSRF token
//    (X-CSRF-Token), without which the server refuses a cookie-authenticated change; MLflow's
//    Logout request carries its made-up credentials at once (the server ends the session);
// 2. a "Permissions" tab on a registered model's page: owner team, grants (maintainers of the
//    owner team and org admins add and revoke them), sharing packages and protected aliases.
// MLflow has no extension API: the tab is placed next to anchors found in the rendered page and
// does nothing when they are missing. No data ever goes through innerHTML: text only.
"use strict";

(() => {
  if (window.__mlflowSharePermissionsTab) return;
  window.__mlflowSharePermissionsTab = true;

  const API = "/api/2.0/mlflow-share";
  const PERMISSIONS = ["read", "execute", "write", "manage"];
  const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);
  const CSRF_HEADER = "X-CSRF-Token";
  const BAR_ID = "mlflow-share-permissions-tabs";
  const TAB_ID = "mlflow-share-permissions-tab";
  const OVERVIEW_ID = "mlflow-share-overview-tab";
  const PANEL_ID = "mlflow-share-permissions-panel";
  const HIDDEN = "data-mlflow-share-hidden";
  const originalFetch = window.fetch;

  // -- the session and its CSRF token (one page load = one session; never stored) ----------
  let csrf = null;       // Promise<string> of the token, made once, renewed on a CSRF refusal
  let csrfValue = null;  // the same token once known (XMLHttpRequest.send is synchronous)
  let pageUser = null;   // who this page was loaded for

  async function readJson(response) {
    const text = await response.text();
    try { return text ? JSON.parse(text) : {}; } catch (e) { return { message: text.slice(0, 300) }; }
  }

  function apiError(response, data) {
    const error = new Error((data && data.message) || `${response.status} ${response.statusText}`);
    error.status = response.status;
    error.code = data && data.error_code;
    return error;
  }

  function loadSession() {
    const session = originalFetch.call(window, "/share/session", {
      credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" },
    }).then(async (response) => {
      const data = await readJson(response);
      if (!response.ok) throw apiError(response, data);
      return data;
    });
    const token = session.then((data) => {
      if (pageUser === null) pageUser = data.user;
      // Another user's session (a login in another tab): this page's requests get no token.
      csrfValue = data.user === pageUser ? data.csrf_token || "" : "";
      return csrfValue;
    });
    csrf = token;
    token.catch(() => { if (csrf === token) csrf = null; });
    return session;
  }

  function csrfToken() {
    if (csrf === null) loadSession().catch(() => {});
    return csrf.catch(() => "");
  }

  function sameOrigin(url) {
    try { return new URL(String(url), window.location.href).origin === window.location.origin; } catch (e) { return false; }
  }

  function needsToken(method, url) {
    return !SAFE_METHODS.has(String(method || "GET").toUpperCase()) && sameOrigin(url);
  }

  // -- fetch and XMLHttpRequest: add the token to the UI's own state-changing calls ----------
  function isCsrfRefusal(response) {
    if (response.status !== 403) return Promise.resolve(false);
    return response.clone().json().then((data) => /CSRF/.test((data && data.message) || ""), () => false);
  }

  window.fetch = function fetch(input, init) {
    let base;
    let replayable = false;
    try {
      const isRequest = typeof Request !== "undefined" && input instanceof Request;
      const method = (init && init.method) || (isRequest ? input.method : "GET");
      if (!needsToken(method, isRequest ? input.url : input)) return originalFetch.call(window, input, init);
      base = new Headers((init && init.headers) || (isRequest ? input.headers : undefined));
      if (base.has(CSRF_HEADER)) return originalFetch.call(window, input, init);
      // A body that can be sent twice may be retried once if the token was stale (the same
      // user logged in again in another tab); a Request or a stream cannot.
      const body = init && init.body;
      replayable = !isRequest && (body === undefined || body === null || typeof body === "string");
    } catch (e) {
      return originalFetch.call(window, input, init);  // let fetch itself report bad arguments
    }
    const send = (token) => {
      const headers = new Headers(base);
      if (token) headers.set(CSRF_HEADER, token);
      return originalFetch.call(window, input, { ...(init || {}), headers });
    };
    return csrfToken().then(async (token) => {
      const response = await send(token);
      if (!replayable || !(await isCsrfRefusal(response))) return response;
      const fresh = await loadSession().then(() => csrf).catch(() => "");
      return fresh && fresh !== token ? send(fresh) : response;
    });
  };

  if (window.XMLHttpRequest) {
    const proto = window.XMLHttpRequest.prototype;
    const { open, send, setRequestHeader } = proto;
    const pending = new WeakMap();  // xhr -> does it still need the token?
    const loggingOut = new WeakMap();  // xhr -> the made-up credentials of MLflow's Logout
    proto.open = function (method, url, ...rest) {
      pending.set(this, needsToken(method, url));
      // MLflow's Logout asks users/current with made-up credentials, which a browser sends
      // only after a challenge; sent at once, they tell the server to end the session.
      const [, user, password] = rest;
      if (typeof user === "string" && user.startsWith("mlflow-logged-out-") && sameOrigin(url)) {
        loggingOut.set(this, `${user}:${password || ""}`);
      }
      return open.call(this, method, url, ...rest);
    };
    proto.setRequestHeader = function (name, value) {
      if (String(name).toLowerCase() === CSRF_HEADER.toLowerCase()) pending.set(this, false);
      return setRequestHeader.call(this, name, value);
    };
    proto.send = function (body) {
      if (loggingOut.has(this)) {
        try { setRequestHeader.call(this, "Authorization", `Basic ${btoa(loggingOut.get(this))}`); } catch (e) { /* not opened */ }
      }
      if (pending.get(this) && csrfValue) {
        try { setRequestHeader.call(this, CSRF_HEADER, csrfValue); } catch (e) { /* not opened */ }
      }
      return send.call(this, body);
    };
  }
  csrfToken();  // known before the first XMLHttpRequest, usually

  // -- small DOM helpers ----------------------------------------------------------------------
  const { el } = Share;  // share.js, injected just before this script

  const time = (ms) => (typeof ms === "number" && ms > 0
    ? el("time", { datetime: new Date(ms).toISOString() },
      new Date(ms).toISOString().replace("T", " ").slice(0, 16) + " UTC")
    : "");

  async function call(method, path, body, token) {
    const headers = { Accept: "application/json" };
    if (!SAFE_METHODS.has(method)) headers[CSRF_HEADER] = token || (await csrfToken());
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await originalFetch.call(window, API + path, {
      method, headers, credentials: "same-origin", cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await readJson(response);
    if (!response.ok) throw apiError(response, data);
    return data;
  }

  function errorNode(error) {
    const text = error && error.status === 401
      ? "Your session has ended: reload the page to log in again."
      : (error && error.message) || String(error);
    return el("p", { class: "mlflow-share-error", role: "alert" }, text);
  }

  function table(caption, headings, rows, empty) {
    if (!rows.length) return el("p", { class: "mlflow-share-empty" }, empty);
    return el("table", { class: "mlflow-share-table" },
      el("caption", { class: "mlflow-share-sr-only" }, caption),
      el("thead", {}, el("tr", {}, headings.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows));
  }

  // -- the panel ------------------------------------------------------------------------------
  let generation = 0;  // a newer render makes older answers obsolete

  function renderPanel(panel, name) {
    const mine = ++generation;
    const current = () => mine === generation && panel.isConnected && panel.dataset.model === name;
    const status = el("p", { class: "mlflow-share-status", role: "status", "aria-live": "polite" });
    const grants = el("section", { class: "mlflow-share-section", "aria-labelledby": "mlflow-share-h-grants" },
      el("h3", { id: "mlflow-share-h-grants" }, "Access"), el("p", { class: "mlflow-share-muted" }, "Loading…"));
    const packages = el("section", { class: "mlflow-share-section", "aria-labelledby": "mlflow-share-h-packages" },
      el("h3", { id: "mlflow-share-h-packages" }, "Sharing packages"), el("p", { class: "mlflow-share-muted" }, "Loading…"));
    const aliases = el("section", { class: "mlflow-share-section", "aria-labelledby": "mlflow-share-h-aliases" },
      el("h3", { id: "mlflow-share-h-aliases" }, "Protected aliases"), el("p", { class: "mlflow-share-muted" }, "Loading…"));
    panel.replaceChildren(status, grants, packages, aliases);
    const fill = (section, ...nodes) => { if (current()) section.replaceChildren(section.firstChild, ...nodes); };
    const q = `?model=${encodeURIComponent(name)}`;

    const showGrants = async (note) => {
      let session;
      let data;
      try {
        [session, data] = await Promise.all([loadSession(), call("GET", `/grants${q}`)]);
      } catch (error) {
        fill(grants, errorNode(error));
        return;
      }
      if (!current()) return;
      if (pageUser !== null && session.user !== pageUser) {
        // Another user logged in in this browser: this page never acts as them.
        fill(grants, errorNode(new Error(
          `This browser is now logged in as ${session.user}: reload the page.`)));
        return;
      }
      status.textContent = note || "";
      const owner = data.owner_team;
      const teams = Object.assign(Object.create(null), session.teams || {});
      const list = Array.isArray(data.grants) ? data.grants : [];
      const canManage = Boolean(session.is_admin) || teams[owner] === "maintainer" ||
        list.some((g) => g.permission === "manage" && teams[g.team] === "maintainer");
      panel.dataset.canManage = String(canManage);

      const revoke = (grant) => async (event) => {
        const button = event.currentTarget;
        button.disabled = true;
        try {
          await call("DELETE", "/grants", { model: name, team: grant.team, permission: grant.permission },
                     session.csrf_token);
          await showGrants(`Revoked ${grant.permission} from ${grant.team}.`);
        } catch (error) {
          if (current()) status.replaceChildren(errorNode(error));
          button.disabled = false;
        }
      };
      const rows = list.map((g) => el("tr", { class: "mlflow-share-grant", dataset: { team: g.team, permission: g.permission } },
        el("td", { class: "mlflow-share-team" }, g.team),
        el("td", { class: "mlflow-share-permission" }, g.permission),
        el("td", { class: "mlflow-share-since" }, time(g.granted_at)),
        el("td", { class: "mlflow-share-by" }, g.granted_by || ""),
        canManage ? el("td", {}, el("button", {
          type: "button", class: "mlflow-share-revoke", onclick: revoke(g),
          "aria-label": `Revoke ${g.permission} from ${g.team}` }, "Revoke")) : null));
      const headings = ["Team", "Permission", "Since", "Granted by"];
      if (canManage) headings.push(el("span", { class: "mlflow-share-sr-only" }, "Actions"));

      const role = session.is_admin ? "org admin" : (teams[owner] ? `${teams[owner]} of ${owner}` : "");
      const nodes = [
        el("p", { class: "mlflow-share-owner" }, "Owner team: ",
          el("strong", { id: "mlflow-share-owner-team" }, owner || "(none)")),
        el("p", { class: "mlflow-share-muted", id: "mlflow-share-access-mode" },
          `${session.user}: `,
          canManage ? `you manage this model's access${role ? ` (${role})` : ""}.`
                    : "read-only (only maintainers of the owner team and org admins change access)."),
        table(`Teams granted access to ${name}`, headings, rows,
              `No grants: only ${owner || "the owner team"} has access.`),
      ];
      if (canManage) nodes.push(grantForm(session, owner, list, showGrants));
      fill(grants, ...nodes);
    };

    const grantForm = (session, owner, list, refresh) => {
      const team = el("input", { name: "team", id: "mlflow-share-grant-team", required: true, autocomplete: "off",
                                 list: "mlflow-share-team-list", maxlength: 128, placeholder: "team name" });
      const permission = el("select", { name: "permission", id: "mlflow-share-grant-permission" },
        PERMISSIONS.map((p) => el("option", { value: p }, p)));
      const options = el("datalist", { id: "mlflow-share-team-list" });
      const submit = el("button", { type: "submit", class: "mlflow-share-primary" }, "Grant");
      const message = el("div", { class: "mlflow-share-form-message" });
      const form = el("form", { class: "mlflow-share-grant-form", id: "mlflow-share-grant-form", "aria-label": "Grant access" },
        el("label", {}, "Team ", team), options,
        el("label", {}, "Permission ", permission), submit, message);
      // Org admins list every team; others only their own (the name is free text then).
      call("GET", "/teams").then((data) => {
        const names = (data.teams || []).map((t) => t.name).filter((t) => t && t !== owner);
        options.replaceChildren(...names.map((t) => el("option", { value: t })));
      }, () => {});
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        const chosen = team.value.trim();
        if (!chosen) { message.replaceChildren(errorNode(new Error("Name a team."))); return; }
        submit.disabled = true;
        message.replaceChildren();
        try {
          await call("POST", "/grants", { model: name, team: chosen, permission: permission.value },
                     session.csrf_token);
          await refresh(`Granted ${permission.value} to ${chosen}.`);
        } catch (error) {
          message.replaceChildren(errorNode(error));
          submit.disabled = false;
        }
      });
      return form;
    };

    showGrants();
    call("GET", `/packages${q}`).then((data) => {
      const rows = (data.packages || []).map((p) => el("tr", { class: "mlflow-share-package", dataset: { id: p.id, status: p.status } },
        el("td", {}, p.status || ""),
        el("td", {}, (p.versions || []).join(", ")),
        el("td", {}, p.semver || ""),
        el("td", {}, (p.teams || []).map((t) => `${t.team} (${t.permission})`).join(", ")),
        el("td", {}, p.created_by || ""),
        el("td", {}, time(p.published_at || p.created_at)),
        el("td", {}, time(p.expires_at))));
      fill(packages, table(`Sharing packages of ${name}`,
        ["Status", "Versions", "Semver", "Target teams", "Created by", "Since", "Expires"], rows,
        "No sharing packages."));
    }, (error) => fill(packages, errorNode(error)));
    call("GET", `/aliases${q}`).then((data) => {
      const rows = (data.protected || []).map((a) => el("tr", { class: "mlflow-share-alias", dataset: { alias: a.alias } },
        el("td", {}, a.alias),
        el("td", {}, a.require_approval ? "second maintainer" : "maintainer"),
        el("td", {}, a.protected_by || ""),
        el("td", {}, time(a.protected_at))));
      fill(aliases, table(`Protected aliases of ${name}`, ["Alias", "Moved by", "Protected by", "Since"], rows,
        "No protected aliases."));
    }, (error) => fill(aliases, errorNode(error)));
  }

  // -- placing the tab in MLflow's page ------------------------------------------------------
  function routeModel() {
    const path = window.location.hash.replace(/^#/, "").split("?")[0];
    const match = /^\/models\/([^/]+)\/?$/.exec(path);
    if (!match) return null;
    try { return decodeURIComponent(match[1]); } catch (e) { return null; }
  }

  // Where the tab goes: {details, before, parent} or null when this is not (yet) the model's page.
  function anchorFor(name) {
    const main = document.querySelector("main");
    const heading = main && main.querySelector("h2");
    const first = heading && heading.firstChild;
    if (!first || first.nodeType !== Node.TEXT_NODE || first.textContent.trim() !== name.trim()) return null;
    const tags = main.querySelector('[data-testid="tags-section"]');
    const details = tags && tags.parentElement;
    if (details && details.parentElement && main.contains(details) && !details.contains(heading)) {
      return { details, parent: details.parentElement, before: details };
    }
    const header = heading.closest("div");
    const block = header && header.parentElement;
    if (block && block !== main && block.parentElement && main.contains(block)) {
      return { details: null, parent: block.parentElement, before: block.nextSibling };
    }
    return { details: null, parent: main, before: main.firstChild };
  }

  let bar = null;
  let panel = null;
  let hidden = null;  // the element hidden while the Permissions tab is shown

  function unhide() {
    for (const node of document.querySelectorAll(`[${HIDDEN}]`)) node.removeAttribute(HIDDEN);
    hidden = null;
  }

  function remove() {
    if (bar) bar.remove();
    if (panel) panel.remove();
    bar = null;
    panel = null;
    generation++;
    unhide();
  }

  function select(showPermissions, focus) {
    if (!bar || !panel) return;
    const [overviewTab, permissionsTab] = bar.querySelectorAll('[role="tab"]');
    overviewTab.setAttribute("aria-selected", String(!showPermissions));
    permissionsTab.setAttribute("aria-selected", String(showPermissions));
    overviewTab.tabIndex = showPermissions ? -1 : 0;
    permissionsTab.tabIndex = showPermissions ? 0 : -1;
    bar.dataset.selected = showPermissions ? "permissions" : "overview";
    panel.hidden = !showPermissions;
    applyHidden();
    if (focus) (showPermissions ? permissionsTab : overviewTab).focus();
    if (showPermissions) renderPanel(panel, panel.dataset.model);
  }

  function applyHidden() {
    const details = bar && bar.nextElementSibling !== panel ? bar.nextElementSibling : null;
    const target = bar && bar.dataset.selected === "permissions" && details &&
      panel && details.nextElementSibling === panel ? details : null;
    if (target === hidden && (!target || target.hasAttribute(HIDDEN))) return;
    unhide();
    if (target) { target.setAttribute(HIDDEN, ""); hidden = target; }
  }

  function build(name) {
    const onKey = (event) => {
      if (event.key === "ArrowLeft" || event.key === "ArrowRight" || event.key === "Home" || event.key === "End") {
        event.preventDefault();
        select(event.key === "ArrowRight" || event.key === "End", true);
      }
    };
    bar = el("div", { id: BAR_ID, class: "mlflow-share-tabs", role: "tablist", "aria-label": "Model sections",
                      dataset: { model: name, selected: "overview" } },
      el("button", { type: "button", role: "tab", id: OVERVIEW_ID, "aria-selected": "true",
                     class: "mlflow-share-tab", onclick: () => select(false),
                     onkeydown: onKey }, "Overview"),
      el("button", { type: "button", role: "tab", id: TAB_ID, "aria-selected": "false", tabindex: "-1",
                     "aria-controls": PANEL_ID, class: "mlflow-share-tab", onclick: () => select(true),
                     onkeydown: onKey }, "Permissions"));
    panel = el("div", { id: PANEL_ID, class: "mlflow-share-panel", role: "tabpanel",
                        "aria-labelledby": TAB_ID, hidden: true, dataset: { model: name } });
  }

  function ensure() {
    const name = routeModel();
    const anchor = name === null ? null : anchorFor(name);
    if (!anchor) {
      // Leaving the model's page (or it is not rendered yet): take the tab away.
      if (bar && (name === null || bar.dataset.model !== name)) remove();
      return;
    }
    if (bar && bar.dataset.model !== name) remove();
    if (!bar) build(name);
    // (Re)place the bar before the details and the panel after them, moving only if needed.
    if (anchor.details) {
      if (bar.nextElementSibling !== anchor.details) anchor.parent.insertBefore(bar, anchor.details);
      if (anchor.details.nextElementSibling !== panel) anchor.details.after(panel);
    } else if (bar.parentElement !== anchor.parent || bar.nextElementSibling !== panel) {
      anchor.parent.insertBefore(bar, anchor.before);
      bar.after(panel);
    }
    applyHidden();
  }

  // At most one placement per frame; a timer too, since a hidden or throttled page runs no
  // animation frames (whichever comes first places the tab, the other finds nothing to do).
  let scheduled = false;
  function place() {
    if (!scheduled) return;
    scheduled = false;
    try { ensure(); } catch (error) { console.warn("mlflow-share permissions tab:", error); }
  }
  function schedule() {
    if (scheduled) return;
    scheduled = true;
    window.requestAnimationFrame(place);
    window.setTimeout(place, 200);
  }

  for (const method of ["pushState", "replaceState"]) {
    const original = window.history[method];
    window.history[method] = function (...args) {
      const result = original.apply(this, args);
      schedule();
      return result;
    };
  }
  window.addEventListener("popstate", schedule);
  window.addEventListener("hashchange", schedule);
  new MutationObserver(schedule).observe(document.getElementById("root") || document.body,
                                         { childList: true, subtree: true });
  schedule();
})();
