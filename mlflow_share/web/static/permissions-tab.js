// mlflow-share's additions to MLflow's own UI (served in its index.html, after MLflow's bundle):
// 1. every same-origin state-changing fetch/XHR of the UI carries the session's CSRF token
//    (X-CSRF-Token), without which the server refuses a cookie-authenticated change; MLflow's
//    Logout request carries its made-up credentials at once (the server ends the session);
// 2. a "Permissions" tab on a registered model's page: the owner team and everyone's effective
//    access (owner, direct grants, published sharing packages; org admins), sharing packages
//    and protected aliases. Maintainers of the owner team and org admins grant and revoke
//    access, protect and unprotect aliases, move them (compare-and-set), roll them back, and
//    request, approve and reject the moves that need a second maintainer. The server decides
//    every change: the tab shows only the controls a user may use, and the server's refusal;
// 3. a lock next to each protected alias in MLflow's own alias tags (model and version pages).
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

  // Who manages the model's access and protected aliases: org admins, maintainers of the owner
  // team and maintainers of a team with a direct manage grant. Only what the tab offers: the
  // server decides every change, and the tab shows its refusal.
  function managesModel(session, access) {
    const teams = Object.assign(Object.create(null), session.teams || {});
    const routes = Array.isArray(access.teams) ? access.teams : [];
    return Boolean(session.is_admin) || teams[access.owner_team] === "maintainer" ||
      routes.some((r) => r.via === "grant" && r.permission === "manage" && teams[r.team] === "maintainer");
  }

  // How a team reaches the model, as a reader names it.
  function through(route) {
    if (route.via === "owner") return "owner team";
    if (route.via === "grant") return `direct grant (${route.permission})`;
    if (route.via === "package") {
      return [`sharing package `, el("code", { class: "mlflow-share-package-id" }, route.package_id || ""),
              ` (${route.permission})`];
    }
    return route.via || "";
  }

  const label = (text, control) => el("label", {}, text, control);
  const versionInput = () => el("input", { type: "number", name: "version", min: 1, step: 1, required: true,
                                           inputmode: "numeric", class: "mlflow-share-version-input" });
  const reasonInput = (required) => el("input", { name: "reason", maxlength: 1000, autocomplete: "off",
                                                  required, class: "mlflow-share-reason-input",
                                                  placeholder: required ? "why (required)" : "why (optional)" });
  const shown = (version) => (version === null || version === undefined ? "(not set)" : String(version));

  // An inline step in place of `host`'s content: a question, its fields, [confirm] [Cancel].
  // Cancel puts the content back; confirming runs `action` (which shows its own errors).
  function inlineStep(host, { question, fields = [], confirm, action }) {
    const before = [...host.childNodes];
    const submit = el("button", { type: "submit", class: "mlflow-share-primary mlflow-share-confirm" }, confirm);
    const cancel = el("button", { type: "button", class: "mlflow-share-cancel", onclick: () => {
      host.replaceChildren(...before);
      const again = host.querySelector("button");
      if (again) again.focus();
    } }, "Cancel");
    const form = el("form", { class: "mlflow-share-inline", "aria-label": question },
      el("span", { class: "mlflow-share-question" }, question), ...fields, submit, cancel);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      submit.disabled = true;
      cancel.disabled = true;
      try {
        await action();
      } finally {
        submit.disabled = false;
        cancel.disabled = false;
      }
    });
    host.replaceChildren(form);
    (form.querySelector("input") || cancel).focus();
  }

  function renderPanel(panel, name) {
    const mine = ++generation;
    const current = () => mine === generation && panel.isConnected && panel.dataset.model === name;
    const status = el("p", { class: "mlflow-share-status", role: "status", "aria-live": "polite" });
    const access = el("section", { class: "mlflow-share-section", id: "mlflow-share-access", "aria-labelledby": "mlflow-share-h-grants" },
      el("h3", { id: "mlflow-share-h-grants" }, "Access"), el("p", { class: "mlflow-share-muted" }, "Loading…"));
    const packages = el("section", { class: "mlflow-share-section", "aria-labelledby": "mlflow-share-h-packages" },
      el("h3", { id: "mlflow-share-h-packages" }, "Sharing packages"), el("p", { class: "mlflow-share-muted" }, "Loading…"));
    const aliases = el("section", { class: "mlflow-share-section", id: "mlflow-share-aliases", "aria-labelledby": "mlflow-share-h-aliases" },
      el("h3", { id: "mlflow-share-h-aliases" }, "Protected aliases"), el("p", { class: "mlflow-share-muted" }, "Loading…"));
    const aliasStatus = el("div", { class: "mlflow-share-status", id: "mlflow-share-alias-status", role: "status",
                                    "aria-live": "polite" });
    panel.replaceChildren(status, access, packages, aliases);
    const fill = (section, ...nodes) => { if (current()) section.replaceChildren(section.firstChild, ...nodes); };
    const q = `?model=${encodeURIComponent(name)}`;

    // -- access: every route to the model (GET access), direct grants revoked here ----------
    // Resolves to {session, canManage}, or null when the page cannot act (an error, another user).
    const showAccess = async (note) => {
      let session;
      let data;
      try {
        [session, data] = await Promise.all([loadSession(), call("GET", `/access${q}`)]);
      } catch (error) {
        fill(access, errorNode(error));
        return null;
      }
      if (!current()) return null;
      if (pageUser !== null && session.user !== pageUser) {
        // Another user logged in in this browser: this page never acts as them.
        fill(access, errorNode(new Error(
          `This browser is now logged in as ${session.user}: reload the page.`)));
        return null;
      }
      status.textContent = note || "";
      const owner = data.owner_team;
      const teams = Object.assign(Object.create(null), session.teams || {});
      const routes = Array.isArray(data.teams) ? data.teams : [];
      const canManage = managesModel(session, data);
      panel.dataset.canManage = String(canManage);

      const revoke = (route) => (event) => inlineStep(event.currentTarget.parentElement, {
        question: `Revoke ${route.permission} from ${route.team}?`,
        confirm: "Confirm",
        action: async () => {
          try {
            await call("DELETE", "/grants", { model: name, team: route.team, permission: route.permission },
                       session.csrf_token);
            await showAccess(`Revoked ${route.permission} from ${route.team}.`);
          } catch (error) {
            if (current()) status.replaceChildren(errorNode(error));
          }
        },
      });
      const rows = routes.map((r) => el("tr", {
        class: "mlflow-share-route",
        dataset: { team: r.team, via: r.via, permission: r.permission || "", package: r.package_id || "" } },
        el("td", { class: "mlflow-share-team" }, r.team),
        el("td", { class: "mlflow-share-through" }, through(r)),
        el("td", { class: "mlflow-share-versions" }, Array.isArray(r.versions) ? r.versions.join(", ") : "all"),
        el("td", { class: "mlflow-share-until" }, r.expires_at ? time(r.expires_at) : "no expiry"),
        el("td", { class: "mlflow-share-may" }, (r.actions || []).join(", ")),
        el("td", { class: "mlflow-share-by" }, r.granted_by || ""),
        canManage ? el("td", { class: "mlflow-share-row-actions" }, r.via === "grant" ? el("button", {
          type: "button", class: "mlflow-share-revoke", onclick: revoke(r),
          "aria-label": `Revoke ${r.permission} from ${r.team}` }, "Revoke") : null) : null));
      const headings = ["Team", "Through", "Versions", "Until", "May", "Granted by"];
      if (canManage) headings.push(el("span", { class: "mlflow-share-sr-only" }, "Actions"));
      const admins = Array.isArray(data.admins) ? data.admins : [];

      const role = session.is_admin ? "org admin" : (teams[owner] ? `${teams[owner]} of ${owner}` : "");
      const nodes = [
        el("p", { class: "mlflow-share-owner" }, "Owner team: ",
          el("strong", { id: "mlflow-share-owner-team" }, owner || "(none)")),
        el("p", { class: "mlflow-share-muted", id: "mlflow-share-access-mode" },
          `${session.user}: `,
          canManage ? `you manage this model's access${role ? ` (${role})` : ""}.`
                    : "read-only (only maintainers of the owner team and org admins change access)."),
        table(`Who has access to ${name}, and through what`, headings, rows, "No team has access."),
        el("p", { class: "mlflow-share-muted", id: "mlflow-share-admins" },
          admins.length ? `Org admins may do everything: ${admins.join(", ")}.` : "Org admins may do everything."),
      ];
      if (canManage) nodes.push(grantForm(session, owner, showAccess));
      fill(access, ...nodes);
      return { session, canManage };
    };

    const grantForm = (session, owner, refresh) => {
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

    // -- protected aliases: protect, move, request, approve, roll back, history --------------
    const ready = showAccess();
    const showAliases = async (note) => {
      let who;
      let data;
      let requests;
      let history;
      try {
        [who, data, requests, history] = await Promise.all([
          ready, call("GET", `/aliases${q}`), call("GET", `/aliases/requests${q}`), call("GET", `/aliases/history${q}`)]);
      } catch (error) {
        fill(aliases, aliasStatus, errorNode(error));
        return;
      }
      if (!current()) return;
      const list = Array.isArray(data.protected) ? data.protected : [];
      markProtected(name, list.map((a) => a.alias));  // the locks in MLflow's own alias tags
      if (note instanceof Error) aliasStatus.replaceChildren(errorNode(note));
      else aliasStatus.textContent = note || "";
      const manage = Boolean(who && who.canManage);
      const admin = Boolean(who && who.session.is_admin);
      const token = who ? who.session.csrf_token : undefined;

      // Send a change; then show the lists as they are now. A refusal shows the server's
      // message; a conflict (the alias moved, the request was decided) shows the new state too.
      const act = async (method, path, body, done) => {
        let answer;
        try {
          answer = await call(method, path, body, token);
        } catch (error) {
          if (error.status === 409) await showAliases(error);
          else if (current()) aliasStatus.replaceChildren(errorNode(error));
          return;
        }
        await showAliases(done(answer));
      };

      const aliasActions = (a, cell) => {
        const buttons = [];
        const button = (text, kind, labelText, onclick) => buttons.push(el("button", {
          type: "button", class: `mlflow-share-${kind}`, "aria-label": labelText, onclick }, text));
        if (!a.require_approval) {
          button("Move…", "move", `Move ${a.alias}`, () => {
            const version = versionInput();
            const reason = reasonInput(false);
            inlineStep(cell, {
              question: `Move ${a.alias} (now ${shown(a.version)}) to`,
              fields: [label("Version ", version), label("Reason ", reason)],
              confirm: "Move",
              action: () => act("POST", "/aliases/move", {
                model: name, alias: a.alias, version: version.value.trim(),
                // compare-and-set: only if it still points where this page showed it
                expected_version: a.version === null || a.version === undefined ? undefined : a.version,
                reason: reason.value.trim() || undefined,
              }, (r) => `Moved ${a.alias} from version ${shown(a.version)} to ${r.version}.`),
            });
          });
          if (a.version !== null && a.version !== undefined) {
            button("Roll back…", "rollback", `Roll back ${a.alias}`, () => {
              const reason = reasonInput(true);
              inlineStep(cell, {
                question: `Roll back ${a.alias} from version ${a.version} to the version before its last move?`,
                fields: [label("Reason ", reason)],
                confirm: "Roll back",
                action: () => act("POST", "/aliases/rollback", { model: name, alias: a.alias, reason: reason.value.trim() },
                                  (r) => `Rolled back ${a.alias} from version ${shown(r.from_version)} to ${r.version}.`),
              });
            });
          }
        } else {
          button("Request move…", "request-move", `Request a move of ${a.alias}`, () => {
            const version = versionInput();
            const reason = reasonInput(true);
            inlineStep(cell, {
              question: `Ask a second maintainer to move ${a.alias} (now ${shown(a.version)}) to`,
              fields: [label("Version ", version), label("Reason ", reason)],
              confirm: "Request",
              action: () => act("POST", "/aliases/requests", {
                model: name, alias: a.alias, version: version.value.trim(), reason: reason.value.trim(),
              }, (r) => `Requested moving ${a.alias} to version ${r.request.to_version}: another maintainer approves or rejects it.`),
            });
          });
        }
        // Lifting a second maintainer's approval is for org admins only (the server says so too).
        if (!a.require_approval || admin) {
          button("Unprotect", "unprotect", `Unprotect ${a.alias}`, () => inlineStep(cell, {
            question: `Unprotect ${a.alias}?`,
            confirm: "Confirm",
            action: () => act("POST", "/aliases/unprotect", { model: name, alias: a.alias },
                              () => `${a.alias} is no longer protected.`),
          }));
        }
        return buttons;
      };

      const rows = list.map((a) => {
        const cell = el("td", { class: "mlflow-share-row-actions" });
        cell.append(...(manage ? aliasActions(a, cell) : []));
        return el("tr", { class: "mlflow-share-alias", dataset: {
          alias: a.alias, version: a.version === null || a.version === undefined ? "" : String(a.version),
          approval: String(Boolean(a.require_approval)) } },
          el("td", { class: "mlflow-share-alias-name" }, a.alias),
          el("td", { class: "mlflow-share-alias-version" }, shown(a.version)),
          el("td", { class: "mlflow-share-alias-rule" },
            a.require_approval ? "with a second maintainer's approval" : "by a maintainer"),
          el("td", {}, a.protected_by || ""),
          el("td", {}, time(a.protected_at)),
          manage ? cell : null);
      });
      const headings = ["Alias", "Version", "Moved", "Protected by", "Since"];
      if (manage) headings.push(el("span", { class: "mlflow-share-sr-only" }, "Actions"));
      const nodes = [
        table(`Protected aliases of ${name}`, headings, rows, "No protected aliases."),
      ];
      if (manage) nodes.push(protectForm(act));
      else {
        nodes.push(el("p", { class: "mlflow-share-muted" },
          "Only maintainers of the owner team and org admins protect and move these aliases."));
      }

      // Move requests: the pending ones first, then the latest decided.
      const asked = (Array.isArray(requests.requests) ? requests.requests : []).slice().reverse();
      asked.sort((x, y) => Number(y.status === "pending") - Number(x.status === "pending"));
      const requestRows = asked.slice(0, 50).map((r) => {
        const cell = el("td", { class: "mlflow-share-row-actions" });
        if (manage && r.status === "pending") {
          cell.append(
            el("button", { type: "button", class: "mlflow-share-approve", "aria-label": `Approve request ${r.id}`,
                           onclick: () => act("POST", `/aliases/requests/${encodeURIComponent(r.id)}/approve`, undefined,
                                              () => `Approved: ${r.alias} now points at version ${r.to_version}.`) },
               "Approve"),
            el("button", { type: "button", class: "mlflow-share-reject", "aria-label": `Reject request ${r.id}`,
                           onclick: () => {
                             const reason = reasonInput(false);
                             inlineStep(cell, {
                               question: `Reject moving ${r.alias} to version ${r.to_version}?`,
                               fields: [label("Reason ", reason)],
                               confirm: "Reject",
                               action: () => act("POST", `/aliases/requests/${encodeURIComponent(r.id)}/reject`,
                                                 { reason: reason.value.trim() || undefined },
                                                 () => `Rejected moving ${r.alias} to version ${r.to_version}.`),
                             });
                           } }, "Reject…"));
        }
        return el("tr", { class: "mlflow-share-request", dataset: { id: r.id, alias: r.alias, status: r.status } },
          el("td", { class: "mlflow-share-request-alias" }, r.alias),
          el("td", { class: "mlflow-share-request-move" }, `${shown(r.from_version)} → ${r.to_version}`),
          el("td", { class: "mlflow-share-request-reason" }, r.reason || ""),
          el("td", { class: "mlflow-share-request-by" }, r.requested_by || ""),
          el("td", {}, time(r.requested_at)),
          el("td", { class: "mlflow-share-request-status" },
            r.status + (r.decided_by ? ` by ${r.decided_by}` : "") + (r.decision ? `: ${r.decision}` : "")),
          manage ? cell : null);
      });
      if (requestRows.length || list.some((a) => a.require_approval)) {
        const requestHeadings = ["Alias", "Move", "Reason", "Requested by", "When", "Status"];
        if (manage) requestHeadings.push(el("span", { class: "mlflow-share-sr-only" }, "Actions"));
        nodes.push(el("h4", { id: "mlflow-share-h-requests" }, "Move requests"),
          el("div", { id: "mlflow-share-requests" },
            table(`Requests to move protected aliases of ${name}`, requestHeadings, requestRows, "No move requests.")));
      }

      // The history of every alias of the model, newest first.
      const moves = (Array.isArray(history.history) ? history.history : []).slice().reverse();
      const LATEST = 50;
      const historyRows = moves.slice(0, LATEST).map((h) => el("tr", { class: "mlflow-share-history", dataset: { alias: h.alias } },
        el("td", {}, time(h.at)),
        el("td", { class: "mlflow-share-history-alias" }, h.alias),
        el("td", { class: "mlflow-share-history-move" },
          `${shown(h.from_version)} → ${h.to_version === null || h.to_version === undefined ? "(deleted)" : h.to_version}`),
        el("td", { class: "mlflow-share-history-by" }, h.principal || ""),
        el("td", { class: "mlflow-share-history-reason" }, h.reason || "")));
      nodes.push(el("h4", { id: "mlflow-share-h-history" }, "History"),
        el("div", { id: "mlflow-share-alias-history" },
          table(`Changes of the aliases of ${name}, newest first`, ["When", "Alias", "Move", "By", "Reason"],
                historyRows, "No alias changes yet."),
          moves.length > LATEST
            ? el("p", { class: "mlflow-share-muted" }, `The latest ${LATEST} of ${moves.length} changes.`) : null));
      fill(aliases, aliasStatus, ...nodes);
    };

    const protectForm = (act) => {
      const alias = el("input", { name: "alias", id: "mlflow-share-protect-alias", required: true, autocomplete: "off",
                                  maxlength: 256, placeholder: "e.g. production" });
      const approval = el("input", { type: "checkbox", name: "require_approval", id: "mlflow-share-protect-approval" });
      const submit = el("button", { type: "submit", class: "mlflow-share-primary" }, "Protect");
      const form = el("form", { class: "mlflow-share-grant-form", id: "mlflow-share-protect-form", "aria-label": "Protect an alias" },
        label("Alias ", alias),
        el("label", { class: "mlflow-share-check" }, approval, " Moves need a second maintainer's approval"),
        submit);
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        const chosen = alias.value.trim();
        if (!chosen) return;
        submit.disabled = true;
        try {
          await act("POST", "/aliases/protect", { model: name, alias: chosen, require_approval: approval.checked },
                    (r) => `Protected ${chosen}${r.require_approval ? ": moves need a second maintainer's approval" : ""}.`);
        } finally {
          submit.disabled = false;
        }
      });
      return form;
    };

    showAliases();
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
  }

  // -- MLflow's own alias tags: a lock on the protected ones ---------------------------------
  // On a model's page and its versions' pages, MLflow shows each alias as a tag titled with
  // the alias and reading "@ alias". A protected one gets a lock after that text (a node of
  // ours, never MLflow's markup changed); nothing happens where no such tag is found.
  const LOCK = "mlflow-share-alias-lock";
  const LOCK_TITLE = "protected alias (mlflow-share)";
  const locks = { model: null, aliases: null, asked: 0 };  // aliases: a Set once known

  function pageModel() {  // the model of a model's page or of one of its versions' pages
    const path = window.location.hash.replace(/^#/, "").split("?")[0];
    const match = /^\/models\/([^/]+)(?:\/versions\/[^/]+)?\/?$/.exec(path);
    if (!match) return null;
    try { return decodeURIComponent(match[1]); } catch (e) { return null; }
  }

  function markProtected(name, names) {
    locks.asked++;  // an answer still on its way is older than this one
    locks.model = name;
    locks.aliases = new Set(names);
    schedule();
  }

  function askProtected(name) {
    const asked = ++locks.asked;
    locks.model = name;
    locks.aliases = null;
    call("GET", `/aliases?model=${encodeURIComponent(name)}`).then((data) => {
      if (asked !== locks.asked) return;
      locks.aliases = new Set((data.protected || []).map((a) => a.alias));
      schedule();
    }, () => {
      if (asked === locks.asked) locks.aliases = new Set();  // not readable: nothing to mark
    });
  }

  // A padlock drawn in SVG (built node by node: no markup parsed, no font needed).
  function lockIcon() {
    const NS = "http://www.w3.org/2000/svg";
    const node = (tag, attrs) => {
      const made = document.createElementNS(NS, tag);
      for (const [key, value] of Object.entries(attrs)) made.setAttribute(key, value);
      return made;
    };
    const svg = node("svg", { viewBox: "0 0 16 16", width: "12", height: "12", "aria-hidden": "true",
                              focusable: "false" });
    svg.append(node("path", { d: "M5 7.5V5a3 3 0 0 1 6 0v2.5", fill: "none", stroke: "currentColor",
                              "stroke-width": "1.8" }),
               node("rect", { x: "3", y: "7", width: "10", height: "8", rx: "1.5", fill: "currentColor" }));
    return svg;
  }

  // The innermost element of an alias tag whose text reads "@ alias", or null.
  function aliasText(tag, alias) {
    const wanted = `@ ${alias}`;
    let found = null;
    for (const node of tag.querySelectorAll("span, div")) {
      if (!node.classList.contains(LOCK) && node.textContent.replace(/\s+/g, " ").trim() === wanted) found = node;
    }
    return found;
  }

  function markAliases() {
    const name = pageModel();
    if (name === null) {
      if (locks.model !== null) { locks.asked++; locks.model = null; locks.aliases = null; }
    } else if (name !== locks.model) {
      askProtected(name);
    }
    const known = name !== null && name === locks.model ? locks.aliases : null;
    const kept = new Set();
    if (known && known.size) {
      for (const tag of document.querySelectorAll('main [title], [role="dialog"] [title]')) {
        const alias = tag.getAttribute("title");
        if (!known.has(alias) || tag.classList.contains(LOCK)) continue;
        const text = aliasText(tag, alias);
        if (!text) continue;
        let lock = text.nextSibling;
        if (!(lock instanceof Element && lock.classList.contains(LOCK) && lock.dataset.alias === alias)) {
          lock = el("span", { class: LOCK, title: LOCK_TITLE, role: "img", "aria-label": LOCK_TITLE,
                              dataset: { alias } }, lockIcon());
          text.after(lock);
        }
        kept.add(lock);
      }
    }
    for (const lock of document.querySelectorAll(`.${LOCK}`)) if (!kept.has(lock)) lock.remove();
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
    try { markAliases(); } catch (error) { console.warn("mlflow-share alias locks:", error); }
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
