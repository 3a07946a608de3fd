// The access control dashboard: teams and members, who has access to a model or experiment
// (and why, or why not), users and service accounts, API tokens, and the audit log with its
// chain verification. Every change goes through the JSON API (which decides and audits it);
// the page only shows what the caller's role lets them use, asks before anything destructive
// (in place: the button gives way to "Confirm …" and "Cancel"), and shows the server's
// answer when it refuses.
"use strict";

(() => {
  const { el } = Share;
  const $ = (id) => document.getElementById(id);
  const ROLES = ["viewer", "engineer", "maintainer"];
  const PERMISSIONS = ["read", "execute", "write", "manage"];
  const ACTIONS = ["read", "execute", "write", "manage"];  // what access/explain answers about
  let who = null;
  let knownTeams = [];

  const ok = (target, text) => target.replaceChildren(el("p", { class: "ok" }, text));
  const fail = (target, error) => Share.showError(target, error);
  const muted = (text) => el("p", { class: "muted" }, text);
  const table = (headers, rows, attrs) => el("table", attrs || {},
    el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows));
  const datalist = (id, values) => $(id).replaceChildren(
    ...[...new Set(values)].sort().map((v) => el("option", { value: v })));
  const canManageTeam = (team) => who.is_admin || who.teams[team] === "maintainer";
  const badge = (text, extra) => el("span", { class: `badge ${extra || ""}`.trim() }, text);
  const KINDS = { registered_model: "registered model", experiment: "experiment" };
  const kindName = (kind) => KINDS[kind] || String(kind || "").replace(/_/g, " ");
  // Unlike el, replaceChildren writes null as "null": leave the absent parts out.
  const show = (target, ...parts) => target.replaceChildren(...parts.filter((p) => p !== null && p !== undefined && p !== false));

  function busy(button, work) {
    return async (...args) => {
      if (button) button.disabled = true;
      try { await work(...args); } finally { if (button) button.disabled = false; }
    };
  }

  // A destructive action asks first, in place: the button gives way to "Confirm …" (which
  // runs it) and "Cancel" (or Escape), with any input the action needs in between.
  // run(fields) resolves once done; a failure is shown in `status` and the button comes back.
  function confirming({ label, confirmLabel, className, ariaLabel, status, run, fields = [] }) {
    const start = el("button", { type: "button", class: `danger ${className}`, "aria-label": ariaLabel }, label);
    const yes = el("button", { type: "button", class: "danger confirm-yes" }, confirmLabel);
    const no = el("button", { type: "button", class: "confirm-no" }, "Cancel");
    const box = el("span", { class: "confirm", role: "group", "aria-label": ariaLabel || label, hidden: true },
                   ...fields, yes, no);
    const close = () => {
      box.hidden = true; start.hidden = false; yes.disabled = false; no.disabled = false;
      for (const field of fields) field.value = "";
      start.focus();
    };
    start.addEventListener("click", () => {
      start.hidden = true; box.hidden = false;
      (fields[0] || yes).focus();
    });
    no.addEventListener("click", close);
    box.addEventListener("keydown", (event) => { if (event.key === "Escape") close(); });
    const confirm = async () => {
      if (fields.some((field) => !field.reportValidity())) return;
      yes.disabled = true; no.disabled = true;
      try {
        await run(fields.map((field) => field.value));
      } catch (error) {
        close();
        fail(status, error);
      }
    };
    yes.addEventListener("click", confirm);
    for (const field of fields) {
      field.addEventListener("keydown", (event) => {
        if (event.key === "Enter") { event.preventDefault(); confirm(); }
      });
    }
    return el("span", { class: "confirmable" }, start, box);
  }

  // --- teams --------------------------------------------------------------------------------
  async function loadTeams() {
    try {
      const { teams } = await Share.call("GET", "teams");
      knownTeams = teams.map((t) => t.name);
      datalist("team-names", knownTeams);
      fillTeamFilter();
      $("teams").replaceChildren(...(teams.length ? teams.map(teamCard)
        : [muted(who.is_admin ? "No teams yet." : "You are not a member of any team.")]));
    } catch (error) {
      fail($("teams"), error);
    }
  }

  function teamCard(team) {
    const manage = canManageTeam(team.name);
    const status = el("div", { class: "team-status", role: "status" });
    const rows = team.members.map((m) => el("tr", { dataset: { user: m.user, role: m.role } },
      el("td", { class: "user" }, m.user),
      el("td", { class: "role" }, badge(m.role, `role-${m.role}`)),
      manage ? el("td", { class: "actions" }, confirming({
        label: "Remove", confirmLabel: "Confirm remove", className: "remove-member",
        ariaLabel: `Remove ${m.user} from ${team.name}`, status,
        run: async () => {
          await Share.call("DELETE", "teams/members", { team: team.name, user: m.user });
          await Promise.all([loadTeams(), loadUsers()]);
        } })) : null));
    const members = rows.length ? table(["Member", "Role", ...(manage ? [""] : [])], rows,
                                        { class: "members" }) : muted("No members.");
    let form = null;
    if (manage) {
      const user = el("input", { name: "user", list: "user-names", required: true,
                                 placeholder: "user name", class: "member-user" });
      const role = el("select", { name: "role", class: "member-role" },
        ...ROLES.map((r) => el("option", { value: r, selected: r === "engineer" }, r)));
      const button = el("button", { type: "submit", class: "primary" }, "Add or change role");
      form = el("form", { class: "inline add-member" },
        el("label", {}, "User", user), el("label", {}, "Role", role), button);
      form.addEventListener("submit", busy(button, async (event) => {
        event.preventDefault();
        try {
          await Share.call("POST", "teams/members", { team: team.name, user: user.value.trim(),
                                                      role: role.value });
          await Promise.all([loadTeams(), loadUsers()]);
        } catch (error) { fail(status, error); }
      }));
    }
    const mine = who.teams[team.name];
    return el("div", { class: "team-card", dataset: { team: team.name } },
      el("h3", {}, team.name, mine ? badge(`you: ${mine}`) : null),
      members, form, status);
  }

  async function createTeam(event) {
    event.preventDefault();
    const name = $("team-create-name").value.trim();
    try {
      await Share.call("POST", "teams", { name });
      $("team-create-name").value = "";
      ok($("teams-status"), `Team ${name} created.`);
      await loadTeams();
    } catch (error) { fail($("teams-status"), error); }
  }

  // --- who has access -----------------------------------------------------------------------
  function resourceBody(grant) {
    return grant.kind === "experiment" ? { experiment_id: grant.resource_id }
      : { model: grant.name };
  }

  function revokeGrant(grant, after, status) {
    return confirming({
      label: "Revoke", confirmLabel: "Confirm revoke", className: "revoke-grant",
      ariaLabel: `Revoke ${grant.permission} of ${grant.team} on ${grant.name || grant.resource_id}`,
      status,
      run: async () => {
        await Share.call("DELETE", "grants", { ...resourceBody(grant), team: grant.team,
                                               permission: grant.permission });
        await after();
      } });
  }

  // The admins' list of every direct grant (GET grants).
  async function loadAllGrants() {
    if (!who.is_admin) return;
    const target = $("grants-all");
    try {
      const { grants } = await Share.call("GET", "grants");
      const status = el("div", { role: "status" });
      const rows = grants.map((g) => el("tr", { dataset: { team: g.team, permission: g.permission,
                                                           resource: g.name || g.resource_id } },
        el("td", { class: "resource" }, `${kindName(g.kind)} `, el("strong", {}, g.name || g.resource_id)),
        el("td", { class: "team" }, g.team),
        el("td", { class: "permission" }, badge(g.permission)),
        el("td", {}, g.granted_by || ""),
        el("td", {}, Share.time(g.granted_at)),
        el("td", { class: "actions" }, (g.kind === "experiment" || g.name)
          ? revokeGrant(g, async () => { await loadAllGrants(); await refreshLookup(); }, status)
          : null)));
      target.replaceChildren(grants.length
        ? table(["Resource", "Team", "Permission", "Granted by", "Granted at (UTC)", ""], rows,
                { id: "grants-all-table" })
        : muted("No direct grants."), status);
    } catch (error) { fail(target, error); }
  }

  function describeVia(route) {
    if (route.via === "owner") return [badge("owner", "via-owner"), " owns it"];
    if (route.via === "grant") return ["direct grant ", badge(route.permission, "via-grant")];
    const parts = ["sharing package ", el("code", { class: "package-id" }, route.package_id), " ",
                   badge(route.permission, "via-package")];
    const details = [];
    if (route.versions) details.push(`version${route.versions.length === 1 ? "" : "s"} ${route.versions.join(", ")}`);
    details.push(route.expires_at ? `until ${Share.time(route.expires_at)} UTC` : "no expiry");
    return [...parts, el("span", { class: "muted via-detail" }, ` · ${details.join(" · ")}`)];
  }

  let lastLookup = null;  // {kind, resource, version}: redrawn after a change

  async function refreshLookup() {
    if (lastLookup) await showAccess(lastLookup);
  }

  function lookupQuery({ kind, resource, version }) {
    const query = new URLSearchParams(kind === "experiment" ? { experiment_id: resource } : { model: resource });
    if (version && kind === "model") query.set("version", version);
    return query;
  }

  async function lookupAccess(event) {
    if (event) event.preventDefault();
    const kind = $("grant-kind").value;
    const resource = $("grant-resource").value.trim();
    if (!resource) return;
    await showAccess({ kind, resource, version: $("grant-version").value.trim() });
  }

  async function showAccess(lookup) {
    const { kind, resource, version } = lookup;
    lastLookup = lookup;
    const target = $("grants-model");
    const query = lookupQuery(lookup);
    const mine = new URLSearchParams(query);
    mine.set("user", who.user);
    mine.set("action", "manage");
    target.dataset.state = "loading";
    try {
      // Whether the caller manages it is the decision point's own answer.
      const [access, manage] = await Promise.all([
        Share.call("GET", `access?${query}`),
        Share.call("GET", `access/explain?${mine}`).catch(() => ({ allowed: false }))]);
      const canManage = Boolean(manage.allowed);
      const status = el("div", { role: "status" });
      const label = kind === "model" ? "Registered model" : "Experiment";
      const rows = access.teams.map((route) => el("tr", { dataset: {
          team: route.team, via: route.via, permission: route.permission || "owner",
          package: route.package_id || "" } },
        el("td", { class: "team" }, route.team),
        el("td", { class: "via" }, ...describeVia(route)),
        el("td", { class: "actions-allowed" }, ...route.actions.map((a) => badge(a, "action"))),
        el("td", { class: "granted-by" }, route.granted_by || ""),
        canManage ? el("td", { class: "actions" }, route.via === "grant"
          ? revokeGrant({ kind, name: kind === "model" ? resource : null, resource_id: resource,
                          team: route.team, permission: route.permission },
                        async () => { await refreshLookup(); await loadAllGrants(); }, status)
          : null) : null));
      show(target,
        el("p", {}, `${label} `, el("strong", {}, resource),
           version && kind === "model" ? ` (version ${version})` : "", " is owned by ",
           el("strong", { class: "owner-team" }, access.owner_team || "no team"), "."),
        table(["Team", "Through", "May", "Granted by", ...(canManage ? [""] : [])], rows,
              { class: "grants access" }),
        access.admins && access.admins.length
          ? el("p", { id: "access-admins", class: "admins" }, "Org administrators, who may do everything: ",
               ...access.admins.flatMap((a, i) => [i ? ", " : "", el("span", { class: "admin" }, a)]))
          : null,
        canManage ? null : muted("You see the owner and your own teams' access; the resource's managers see every team's."),
        canManage ? grantForm(kind, resource, status) : null,
        explainForm(lookup),
        status);
      target.dataset.state = "ready";
    } catch (error) {
      fail(target, error.status === 403
        ? new Error(`You may not see who has access to ${resource}: ${error.message}`) : error);
      target.dataset.state = "error";
    }
  }

  function grantForm(kind, resource, status) {
    const team = el("input", { name: "team", list: "team-names", required: true, placeholder: "team" });
    const permission = el("select", { name: "permission" },
      ...PERMISSIONS.map((p) => el("option", { value: p }, p)));
    const button = el("button", { type: "submit", class: "primary" }, "Grant");
    const form = el("form", { class: "inline grant-create" },
      el("label", {}, "Grant team", team), el("label", {}, "Permission", permission), button);
    const key = kind === "experiment" ? { experiment_id: resource } : { model: resource };
    form.addEventListener("submit", busy(button, async (event) => {
      event.preventDefault();
      try {
        await Share.call("POST", "grants", { ...key, team: team.value.trim(),
                                             permission: permission.value });
        await refreshLookup();
        await loadAllGrants();
      } catch (error) { fail(status, error); }
    }));
    return form;
  }

  // "Why may (or may not) this user do this?": the decision point's answer and its reasons.
  function explainForm(lookup) {
    const user = el("input", { name: "user", list: "user-names", required: true, value: who.user,
                               class: "explain-user" });
    const action = el("select", { name: "action", class: "explain-action" },
      ...ACTIONS.map((a) => el("option", { value: a }, a)));
    const button = el("button", { type: "submit" }, "Explain");
    const result = el("div", { class: "explain-result", role: "status", "aria-live": "polite" });
    const form = el("form", { class: "inline explain" },
      el("label", {}, "User", user), el("label", {}, "Action", action), button);
    form.addEventListener("submit", busy(button, async (event) => {
      event.preventDefault();
      const query = lookupQuery(lookup);
      query.set("user", user.value.trim());
      query.set("action", action.value);
      try {
        const answer = await Share.call("GET", `access/explain?${query}`);
        const verb = answer.allowed ? "may" : "may not";
        const through = answer.allowed && answer.via
          ? ` (through ${answer.via.via === "admin" ? "being an org admin"
            : answer.via.via === "owner" ? `${answer.via.team}, the owner`
            : answer.via.via === "grant" ? `${answer.via.team}'s direct grant`
            : `${answer.via.team}'s sharing package ${answer.via.package_id}`})` : "";
        show(result,
          el("p", { class: `verdict ${answer.allowed ? "ok" : "error"}`,
                    dataset: { allowed: String(answer.allowed) } },
             answer.allowed ? "✔ " : "✘ ", el("strong", {}, answer.user), ` ${verb} ${answer.action} `,
             el("strong", {}, lookup.resource),
             answer.version ? ` version ${answer.version}` : "", `${through}.`),
          answer.reasons && answer.reasons.length
            ? el("ul", { class: "reasons" }, ...answer.reasons.map((r) => el("li", {}, r))) : null);
      } catch (error) {
        fail(result, error.status === 403
          ? new Error(`Only the resource's managers and org admins may ask about someone else: ${error.message}`)
          : error);
      }
    }));
    return el("div", { class: "explain-box" },
      el("h3", {}, "Why may someone do it, or not?"), form, result);
  }

  async function loadModelNames() {
    try {
      const data = await Share.call("GET", "/api/2.0/mlflow/registered-models/search?max_results=500");
      datalist("model-names", (data.registered_models || []).map((m) => m.name));
    } catch (error) { /* the lists are conveniences only */ }
  }

  // --- users (org admins) ----------------------------------------------------------------------
  async function afterUserChange() {
    await Promise.all([loadUsers(), loadTeams(), loadTokens()]);
  }

  function userActions(u) {
    const status = $("users-status");
    const actions = [el("button", { type: "button", class: "token-for",
      onclick: () => { $("token-user").value = u.name; $("token-description").focus(); } }, "New token…")];
    if (u.name === who.user) return actions;  // the server refuses to disable or delete yourself
    if (u.disabled_at) {
      actions.push(el("button", { type: "button", class: "enable-user",
        onclick: busy(null, async () => {
          try {
            await Share.call("POST", "users/enable", { name: u.name });
            ok(status, `${u.name} is enabled again.`);
            await afterUserChange();
          } catch (error) { fail(status, error); }
        }) }, "Enable"));
    } else {
      actions.push(confirming({
        label: "Disable", confirmLabel: "Confirm disable", className: "disable-user",
        ariaLabel: `Disable ${u.name}`, status,
        run: async () => {
          await Share.call("POST", "users/disable", { name: u.name });
          ok(status, `${u.name} is disabled: their passwords, tokens and sessions no longer work.`);
          await afterUserChange();
        } }));
    }
    if (!u.is_service_account) {
      const password = el("input", { type: "password", class: "new-password", required: true,
                                     minlength: 12, autocomplete: "new-password",
                                     placeholder: "new password", "aria-label": `New password for ${u.name}` });
      actions.push(confirming({
        label: "Reset password…", confirmLabel: "Confirm reset", className: "reset-password",
        ariaLabel: `Reset the password of ${u.name}`, status, fields: [password],
        run: async ([value]) => {
          await Share.call("POST", "users/password", { name: u.name, password: value });
          ok(status, `${u.name}'s password is reset; their browser sessions ended.`);
          await loadUsers();
        } }));
    }
    actions.push(confirming({
      label: "Delete", confirmLabel: "Confirm delete", className: "delete-user",
      ariaLabel: `Delete ${u.name}`, status,
      run: async () => {
        await Share.call("DELETE", "users", { name: u.name });
        ok(status, `${u.name} is deleted, with their tokens and memberships.`);
        await afterUserChange();
      } }));
    return actions;
  }

  async function loadUsers() {
    if (!who.is_admin) return;
    try {
      const [{ users }, { teams }] = await Promise.all([Share.call("GET", "users"),
                                                       Share.call("GET", "teams")]);
      const memberships = Object.create(null);
      for (const t of teams) for (const m of t.members) {
        (memberships[m.user] = memberships[m.user] || []).push(`${t.name}: ${m.role}`);
      }
      datalist("user-names", users.map((u) => u.name));
      $("users").replaceChildren(table(["Name", "Kind", "Status", "Teams", "Created (UTC)", ""],
        users.map((u) => el("tr", { dataset: { user: u.name, status: u.disabled_at ? "disabled" : "active" } },
          el("td", { class: "user" }, u.name),
          el("td", { class: "kind" }, u.is_admin ? badge("org admin") : null,
             u.is_service_account ? badge("service account") : null,
             !u.is_admin && !u.is_service_account ? "user" : null),
          el("td", { class: "status" }, u.disabled_at
            ? [badge("disabled", "revoked"), el("span", { class: "muted" }, ` since ${Share.time(u.disabled_at)}`)]
            : badge("active", "active")),
          el("td", {}, (memberships[u.name] || []).join(", ")),
          el("td", {}, Share.time(u.created_at)),
          el("td", { class: "actions" }, ...userActions(u)))),
        { id: "users-table" }));
    } catch (error) { fail($("users"), error); }
  }

  async function createUser(event) {
    event.preventDefault();
    const name = $("user-create-name").value.trim();
    const body = { name, service_account: $("user-create-sa").checked };
    if ($("user-create-password").value) body.password = $("user-create-password").value;
    try {
      await Share.call("POST", "users", body);
      $("user-create").reset();
      ok($("users-status"), `${body.service_account ? "Service account" : "User"} ${name} created.`);
      await loadUsers();
    } catch (error) { fail($("users-status"), error); }
  }

  // --- tokens -------------------------------------------------------------------------------
  function tokenStatus(t) {
    if (t.revoked_at) return "revoked";
    if (t.expires_at && t.expires_at <= Date.now()) return "expired";
    return "active";
  }

  async function loadTokens() {
    const target = $("tokens");
    const user = who.is_admin ? $("token-filter-user").value.trim() : "";
    try {
      const { tokens } = await Share.call("GET", `tokens${user ? `?${new URLSearchParams({ user })}` : ""}`);
      tokens.sort((a, b) => b.created_at - a.created_at);
      target.replaceChildren(tokens.length ? table(
        ["Token ID", "User", "Description", "Created (UTC)", "Expires (UTC)", "Status", ""],
        tokens.map((t) => {
          const state = tokenStatus(t);
          return el("tr", { dataset: { tokenId: t.token_id, user: t.user, status: state } },
            el("td", {}, el("code", {}, t.token_id)),
            el("td", { class: "user" }, t.user),
            el("td", { class: "description" }, t.description || ""),
            el("td", {}, Share.time(t.created_at)),
            el("td", {}, t.expires_at ? Share.time(t.expires_at) : "never"),
            el("td", { class: "status" }, badge(state, state)),
            el("td", { class: "actions" }, state === "active" ? confirming({
              label: "Revoke", confirmLabel: "Confirm revoke", className: "revoke-token",
              ariaLabel: `Revoke token ${t.token_id} of ${t.user}`, status: $("tokens-status"),
              run: async () => {
                await Share.call("DELETE", "tokens", { token_id: t.token_id });
                ok($("tokens-status"), `Token ${t.token_id} revoked: clients using it stop working at once.`);
                await loadTokens();
              } }) : null));
        }), { id: "tokens-table" }) : muted("No tokens."));
    } catch (error) { fail(target, error); }
  }

  async function createToken(event) {
    event.preventDefault();
    const body = { user: who.is_admin ? ($("token-user").value.trim() || who.user) : who.user };
    const description = $("token-description").value.trim();
    if (description) body.description = description;
    if ($("token-expires").value) body.expires_in_days = Number($("token-expires").value);
    const box = $("new-token");
    try {
      const issued = await Share.call("POST", "tokens", body);
      const value = el("code", { id: "new-token-value" }, issued.token);
      const copy = el("button", { type: "button", onclick: async () => {
        try { await navigator.clipboard.writeText(issued.token); copy.textContent = "Copied"; }
        catch (error) {  // no clipboard (plain http): select it for Ctrl+C
          const range = document.createRange(); range.selectNodeContents(value);
          const selection = getSelection(); selection.removeAllRanges(); selection.addRange(range);
          copy.textContent = "Selected: press Ctrl+C";
        }
      } }, "Copy");
      box.replaceChildren(el("div", { class: "token-once", dataset: { tokenId: issued.token_id } },
        el("p", {}, el("strong", {}, `New token for ${issued.user}`),
           ` (ID ${issued.token_id}${issued.expires_at ? `, expires ${Share.time(issued.expires_at)} UTC` : ""}).`),
        el("p", { class: "warning" }, "Copy it now: it is shown only this once and cannot be retrieved later."),
        el("p", {}, value, " ", copy, " ",
           el("button", { type: "button", id: "new-token-dismiss",
                          onclick: () => box.replaceChildren() }, "Done, hide it"))));
      $("token-description").value = "";
      $("token-expires").value = "";
      await loadTokens();
    } catch (error) { fail(box, error); }
  }

  // --- audit log ----------------------------------------------------------------------------
  const audit = { tokens: [""], page: 0 };

  function fillTeamFilter() {
    const select = $("audit-team");
    const current = select.value;
    const teams = who.is_admin ? knownTeams
      : Object.entries(who.teams).filter(([, role]) => role === "maintainer").map(([t]) => t);
    select.replaceChildren(el("option", { value: "" }, who.is_admin ? "any" : "any of mine"),
      ...teams.map((t) => el("option", { value: t, selected: t === current }, t)));
  }

  function utcMs(value) {
    if (!value) return null;
    const ms = Date.parse(`${value.length === 16 ? `${value}:00` : value}Z`);
    return Number.isNaN(ms) ? null : ms;
  }

  function auditQuery() {
    const query = new URLSearchParams({ max_results: $("audit-page-size").value, order: "desc" });
    for (const name of ["principal", "team", "resource", "action"]) {
      const value = $(`audit-${name}`).value.trim();
      if (value) query.set(name, value);
    }
    const since = utcMs($("audit-from").value), until = utcMs($("audit-to").value);
    if (since !== null) query.set("since", String(since));
    if (until !== null) query.set("until", String(until));
    const token = audit.tokens[audit.page];
    if (token) query.set("page_token", token);
    return query;
  }

  // Text that may break after its separators (dots, slashes, underscores), nowhere else.
  function breakable(text, separators = /([./_:])/) {
    return String(text).split(separators).flatMap((part, i) => (i % 2 ? [part, el("wbr", {})] : [part]));
  }

  // An event's details as a small definition list; nested lists and objects fold away.
  function fields(value, depth = 0) {
    if (value === null || value === undefined) return el("span", { class: "muted" }, "none");
    if (typeof value !== "object") return String(value);
    if (depth > 3) return el("code", {}, JSON.stringify(value));
    if (Array.isArray(value)) {
      if (value.every((v) => v === null || typeof v !== "object")) return value.map(String).join(", ");
      return el("ol", { class: "fields" }, ...value.map((v) => el("li", {}, fields(v, depth + 1))));
    }
    return el("dl", { class: "fields" }, ...Object.entries(value).flatMap(([key, v]) => {
      const nested = v !== null && typeof v === "object" && (Array.isArray(v) ? v.some((x) => x !== null && typeof x === "object") : true);
      const count = Array.isArray(v) ? `${v.length} item${v.length === 1 ? "" : "s"}` : `${Object.keys(v || {}).length} fields`;
      return [el("dt", {}, key),
              el("dd", { dataset: { field: key } }, nested && depth === 0
                ? el("details", {}, el("summary", {}, count), fields(v, depth + 1))
                : fields(v, depth + 1))];
    }));
  }

  // Every refusal reads "deny", whichever layer refused (the decision point, a view's own
  // check, the gateway).
  const shownDecision = (e) => (e.decision === "deny" || e.decision === "denied"
    || e.status === 401 || e.status === 403 ? "deny" : e.decision || "");

  function auditRow(e) {
    const [date, time] = Share.time(e.ts).split(" ");
    const details = e.details && typeof e.details === "object" && Object.keys(e.details).length
      ? fields(e.details) : null;
    const decision = shownDecision(e);
    const resource = e.resource_name || e.resource_id;
    const requestId = e.request_id || "";
    return el("tr", { dataset: { seq: e.seq, principal: e.principal, action: e.action,
                                 storedAction: e.stored_action || e.action, decision } },
      el("td", { class: "ts" }, el("span", { class: "date" }, date), el("span", { class: "time" }, time),
         el("span", { class: "seq muted", title: "sequence number in the chain" }, `#${e.seq}`)),
      el("td", { class: "principal" }, breakable(e.principal)),
      el("td", { class: "action", title: e.stored_action || e.action }, breakable(e.action)),
      el("td", { class: "resource" },
         resource ? [el("span", { class: "muted kind" }, `${kindName(e.resource_kind)} `),
                     el("span", { class: "name" }, breakable(resource))] : null,
         e.owner_team ? el("span", { class: "owner", title: "owner team" }, e.owner_team) : null),
      el("td", { class: "decision" }, badge(decision, `decision-${decision}`),
         e.status === null || e.status === undefined ? null : el("span", { class: "status" }, String(e.status))),
      el("td", { class: "request" },
         el("span", { class: "route" }, e.method ? `${e.method} ` : "", breakable(e.route || "", /([/?&=_.])/)),
         requestId ? el("code", { class: "request-id", title: `request ID ${requestId}`,
                                  dataset: { requestId } },
                        requestId.length > 8 ? `${requestId.slice(0, 8)}…` : requestId) : null),
      el("td", { class: "details" }, details));
  }

  async function loadAudit() {
    const target = $("audit"), status = $("audit-status"), pager = $("audit-pager");
    target.dataset.state = "loading";
    try {
      const data = await Share.call("GET", `audit/events?${auditQuery()}`);
      const events = data.events || [];
      const actions = new Set([...$("action-names").options].map((o) => o.value));
      for (const e of events) actions.add(e.action);
      datalist("action-names", [...actions]);
      target.replaceChildren(events.length
        ? table(["Time (UTC)", "Principal", "Action", "Resource", "Decision", "Request", "Details"],
                events.map(auditRow), { id: "audit-table" })
        : muted("No events match these filters."));
      status.replaceChildren(el("p", { class: "muted" }, events.length
        ? `Page ${audit.page + 1}: events ${events[0].seq}–${events[events.length - 1].seq}, newest first.`
        : ""));
      // Newest first: the first page is pinned to the head it showed, so "previous" comes
      // back to the same events even though reading the log adds events.
      if (audit.page === 0 && !audit.tokens[0] && events.length) {
        audit.tokens[0] = btoa(String(events[0].seq + 1));
      }
      audit.tokens.length = audit.page + 1;
      if (data.next_page_token) audit.tokens.push(data.next_page_token);
      const previous = el("button", { type: "button", id: "audit-prev", disabled: audit.page === 0,
        onclick: () => { audit.page -= 1; loadAudit(); } }, "← Previous page");
      const next = el("button", { type: "button", id: "audit-next", disabled: !data.next_page_token,
        onclick: () => { audit.page += 1; loadAudit(); } }, "Next page →");
      pager.replaceChildren(...(audit.page === 0 && !data.next_page_token ? [] : [previous, next]));
      target.dataset.state = "ready";
    } catch (error) {
      pager.replaceChildren();
      status.replaceChildren();
      if (error.status === 403) {
        target.replaceChildren(el("p", { class: "muted", id: "audit-denied" },
          `The audit log is not open to you: ${error.message}`));
      } else {
        fail(target, error);
      }
      target.dataset.state = "error";
    }
  }

  function searchAudit(event) {
    if (event) event.preventDefault();
    audit.tokens = [""];
    audit.page = 0;
    return loadAudit();
  }

  async function verifyChain() {
    const target = $("audit-verify");
    const again = el("button", { type: "button", id: "audit-verify-again", onclick: verifyChain },
                     "Verify again");
    target.replaceChildren(el("p", { class: "chain", id: "chain-status", dataset: { state: "checking" } },
                              "Verifying the audit chain…"));
    try {
      const result = await Share.call("GET", "audit/verify");
      const line = result.ok
        ? el("p", { class: "chain ok", id: "chain-status",
                    dataset: { state: "intact", events: result.events, headSeq: result.head_seq } },
             `✔ Chain intact: ${result.events} events`, el("span", { class: "muted" },
               ` (head seq ${result.head_seq}, hash ${String(result.head_hash).slice(0, 16)}…)`), " ", again)
        : el("p", { class: "chain error", id: "chain-status", role: "alert",
                    dataset: { state: "broken", events: result.events,
                               firstBadSeq: result.first_bad_seq ?? "" } },
             `✘ Chain broken at seq ${result.first_bad_seq}: ${result.problem || "hash mismatch"}`,
             el("span", { class: "muted" }, ` (${result.events} events checked)`), " ", again);
      target.replaceChildren(line);
    } catch (error) {
      target.replaceChildren(el("p", { class: "error", id: "chain-status", role: "alert",
                                       dataset: { state: "error" } },
                                `Could not verify the chain: ${error.message}`), again);
    }
  }

  // --- start --------------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", async () => {
    who = await Share.nav("access");
    const roles = Object.entries(who.teams).map(([t, r]) => `${t} (${r})`).join(", ");
    $("whoami").textContent = who.is_admin
      ? `Signed in as ${who.user}, org administrator: you manage every team, grant, user and token.`
      : `Signed in as ${who.user}${roles ? `, member of ${roles}` : ""}.`;
    // What a role cannot use is not shown (the server decides all the same).
    const canReadAudit = who.is_admin || Object.values(who.teams).includes("maintainer");
    $("team-create").hidden = !who.is_admin;
    $("users-section").hidden = !who.is_admin;
    $("grants-all-wrap").hidden = !who.is_admin;
    $("token-filter").hidden = !who.is_admin;
    $("token-user-label").hidden = !who.is_admin;  // anyone else's tokens are their own
    $("audit-section").hidden = !canReadAudit;
    $("audit-verify").hidden = !who.is_admin;
    const tokenUser = $("token-user");
    tokenUser.value = who.user;
    if (!who.is_admin) { tokenUser.readOnly = true; tokenUser.removeAttribute("list"); }

    $("team-create").addEventListener("submit", createTeam);
    $("grant-lookup").addEventListener("submit", lookupAccess);
    $("grant-kind").addEventListener("change", () => {
      const model = $("grant-kind").value === "model";
      if (model) $("grant-resource").setAttribute("list", "model-names");
      else $("grant-resource").removeAttribute("list");
      $("grant-version-label").hidden = !model;
    });
    $("user-create").addEventListener("submit", createUser);
    $("token-create").addEventListener("submit", createToken);
    $("token-filter").addEventListener("submit", (event) => { event.preventDefault(); loadTokens(); });
    $("audit-filters").addEventListener("submit", searchAudit);
    $("audit-last-hour").addEventListener("click", () => {
      $("audit-from").value = new Date(Date.now() - 3600e3).toISOString().slice(0, 19);
      $("audit-to").value = "";
      searchAudit();
    });
    $("audit-reset").addEventListener("click", () => { $("audit-filters").reset(); searchAudit(); });
    if (!who.is_admin) datalist("user-names", [who.user]);

    await loadTeams();
    await Promise.all([loadUsers(), loadTokens(), loadAllGrants(), loadModelNames()]);
    if (canReadAudit) await searchAudit();
    if (who.is_admin) await verifyChain();
    document.body.dataset.ready = "true";
  });
})();
