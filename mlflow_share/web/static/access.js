// The access control dashboard: teams and members, grants, users and service accounts, API
// tokens, and the audit log with its chain verification. Every change goes through the JSON API
// (which decides and audits it); the page only offers what the caller's role allows and shows
// the server's answer when it refuses.
"use strict";

(() => {
  const { el } = Share;
  const $ = (id) => document.getElementById(id);
  const ROLES = ["viewer", "engineer", "maintainer"];
  const PERMISSIONS = ["read", "execute", "write", "manage"];
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

  function busy(button, work) {
    return async (...args) => {
      if (button) button.disabled = true;
      try { await work(...args); } finally { if (button) button.disabled = false; }
    };
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
      el("td", { class: "role" }, el("span", { class: `badge role-${m.role}` }, m.role)),
      manage ? el("td", {}, el("button", {
        type: "button", class: "danger remove-member", "aria-label": `Remove ${m.user} from ${team.name}`,
        onclick: async (event) => {
          if (!window.confirm(`Remove ${m.user} from ${team.name}?`)) return;
          event.target.disabled = true;
          try {
            await Share.call("DELETE", "teams/members", { team: team.name, user: m.user });
            await Promise.all([loadTeams(), loadUsers()]);
          } catch (error) { event.target.disabled = false; fail(status, error); }
        } }, "Remove")) : null));
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
      el("h3", {}, team.name, mine ? el("span", { class: "badge" }, `you: ${mine}`) : null),
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

  // --- grants -------------------------------------------------------------------------------
  function resourceBody(grant) {
    return grant.kind === "experiment" ? { experiment_id: grant.resource_id }
      : { model: grant.name };
  }

  function grantRows(grants, after, status, showResource) {
    return grants.map((g) => el("tr", { dataset: { team: g.team, permission: g.permission,
                                                   resource: g.name || g.resource_id } },
      showResource ? el("td", { class: "resource" }, `${g.kind} `, el("strong", {}, g.name || g.resource_id)) : null,
      el("td", { class: "team" }, g.team),
      el("td", { class: "permission" }, el("span", { class: "badge" }, g.permission)),
      el("td", {}, g.granted_by || ""),
      el("td", {}, Share.time(g.granted_at)),
      el("td", {}, (g.kind === "experiment" || g.name) ? el("button", {
        type: "button", class: "danger revoke-grant",
        onclick: async (event) => {
          if (!window.confirm(`Revoke ${g.permission} of ${g.team} on ${g.name || g.resource_id}?`)) return;
          event.target.disabled = true;
          try {
            await Share.call("DELETE", "grants", { ...resourceBody(g), team: g.team,
                                                   permission: g.permission });
            await after();
          } catch (error) { event.target.disabled = false; fail(status, error); }
        } }, "Revoke") : null)));
  }

  async function loadAllGrants() {
    if (!who.is_admin) return;
    const target = $("grants-all");
    try {
      const { grants } = await Share.call("GET", "grants");
      const status = el("div", { role: "status" });
      target.replaceChildren(grants.length
        ? table(["Resource", "Team", "Permission", "Granted by", "Granted at (UTC)", ""],
                grantRows(grants, loadAllGrants, status, true), { id: "grants-all-table" })
        : muted("No grants."), status);
    } catch (error) { fail(target, error); }
  }

  async function lookupGrants(event) {
    if (event) event.preventDefault();
    const kind = $("grant-kind").value;
    const resource = $("grant-resource").value.trim();
    const target = $("grants-model");
    if (!resource) return;
    const key = kind === "experiment" ? { experiment_id: resource } : { model: resource };
    try {
      const data = await Share.call("GET", `grants?${new URLSearchParams(key)}`);
      const status = el("div", { role: "status" });
      const reload = async () => { await lookupGrants(); await loadAllGrants(); };
      const team = el("input", { name: "team", list: "team-names", required: true, placeholder: "team" });
      const permission = el("select", { name: "permission" },
        ...PERMISSIONS.map((p) => el("option", { value: p }, p)));
      const button = el("button", { type: "submit", class: "primary" }, "Grant");
      const form = el("form", { class: "inline grant-create" },
        el("label", {}, "Team", team), el("label", {}, "Permission", permission), button);
      form.addEventListener("submit", busy(button, async (submit) => {
        submit.preventDefault();
        try {
          await Share.call("POST", "grants", { ...key, team: team.value.trim(),
                                               permission: permission.value });
          await reload();
        } catch (error) { fail(status, error); }
      }));
      const grants = data.grants.map((g) => ({ ...g, name: g.name || (kind === "model" ? resource : null) }));
      target.replaceChildren(
        el("p", {}, `${kind === "model" ? "Registered model" : "Experiment"} `,
           el("strong", {}, resource), " is owned by ",
           el("strong", { class: "owner-team" }, data.owner_team || "no team"), "."),
        grants.length ? table(["Team", "Permission", "Granted by", "Granted at (UTC)", ""],
                              grantRows(grants, reload, status, false), { class: "grants" })
          : muted("No other team has a grant on it."),
        (who.is_admin || who.teams[data.owner_team] === "maintainer") ? form : null, status);
    } catch (error) {
      fail(target, error.status === 403
        ? new Error(`You may not see the grants of ${resource}: ${error.message}`) : error);
    }
  }

  async function loadModelNames() {
    try {
      const data = await Share.call("GET", "/api/2.0/mlflow/registered-models/search?max_results=500");
      datalist("model-names", (data.registered_models || []).map((m) => m.name));
    } catch (error) { /* the lists are conveniences only */ }
  }

  // --- users --------------------------------------------------------------------------------
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
      $("users").replaceChildren(table(["Name", "Kind", "Teams", "Created (UTC)", ""],
        users.map((u) => el("tr", { dataset: { user: u.name } },
          el("td", { class: "user" }, u.name),
          el("td", { class: "kind" }, u.is_admin ? el("span", { class: "badge" }, "org admin") : null,
             u.is_service_account ? el("span", { class: "badge" }, "service account") : null,
             !u.is_admin && !u.is_service_account ? "user" : null),
          el("td", {}, (memberships[u.name] || []).join(", ")),
          el("td", {}, Share.time(u.created_at)),
          el("td", {}, el("button", { type: "button", class: "token-for",
                                      onclick: () => { $("token-user").value = u.name; $("token-description").focus(); } },
                          "New token…")))),
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
            el("td", { class: "status" }, el("span", { class: `badge ${state}` }, state)),
            el("td", {}, state === "active" ? el("button", {
              type: "button", class: "danger revoke-token",
              onclick: async (event) => {
                if (!window.confirm(`Revoke token ${t.token_id} of ${t.user}? Clients using it stop working at once.`)) return;
                event.target.disabled = true;
                try {
                  await Share.call("DELETE", "tokens", { token_id: t.token_id });
                  ok($("tokens-status"), `Token ${t.token_id} revoked.`);
                  await loadTokens();
                } catch (error) { event.target.disabled = false; fail($("tokens-status"), error); }
              } }, "Revoke") : null));
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

  function describeResource(e) {
    if (!e.resource_kind && !e.resource_name && !e.resource_id) return "";
    return `${e.resource_kind || ""} ${e.resource_name || e.resource_id || ""}`.trim();
  }

  function auditRow(e) {
    const details = e.details && typeof e.details === "object" && Object.keys(e.details).length
      ? el("details", {}, el("summary", {}, "details"),
           el("pre", {}, JSON.stringify(e.details, null, 2))) : null;
    return el("tr", { dataset: { seq: e.seq, principal: e.principal, action: e.action,
                                 decision: e.decision } },
      el("td", { class: "seq num" }, String(e.seq)),
      el("td", { class: "ts" }, Share.time(e.ts)),
      el("td", { class: "principal" }, e.principal),
      el("td", { class: "action" }, e.action),
      el("td", { class: "route" }, [e.method, e.route].filter(Boolean).join(" ")),
      el("td", { class: "resource" }, describeResource(e)),
      el("td", { class: "owner" }, e.owner_team || ""),
      el("td", { class: "decision" }, el("span", { class: `badge decision-${e.decision}` }, e.decision)),
      el("td", { class: "status num" }, e.status === null || e.status === undefined ? "" : String(e.status)),
      el("td", {}, details));
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
        ? table(["Seq", "Time (UTC)", "Principal", "Action", "Request", "Resource", "Owner team",
                 "Decision", "Status", ""], events.map(auditRow), { id: "audit-table" })
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
    if (!who.is_admin) {
      target.replaceChildren(muted("Verifying the audit chain is for org administrators."));
      return;
    }
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
                                error.status === 403 ? "Verifying the audit chain is for org administrators."
                                  : `Could not verify the chain: ${error.message}`), again);
    }
  }

  // --- start --------------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", async () => {
    who = await Share.nav("access");
    const roles = Object.entries(who.teams).map(([t, r]) => `${t} (${r})`).join(", ");
    $("whoami").textContent = who.is_admin
      ? `Signed in as ${who.user}, org administrator: you manage every team, grant, user and token.`
      : `Signed in as ${who.user}${roles ? `, member of ${roles}` : ""}.`;
    $("team-create").hidden = !who.is_admin;
    $("users-section").hidden = !who.is_admin;
    $("grants-all-wrap").hidden = !who.is_admin;
    $("token-filter").hidden = !who.is_admin;
    const tokenUser = $("token-user");
    tokenUser.value = who.user;
    if (!who.is_admin) { tokenUser.readOnly = true; tokenUser.removeAttribute("list"); }

    $("team-create").addEventListener("submit", createTeam);
    $("grant-lookup").addEventListener("submit", lookupGrants);
    $("grant-kind").addEventListener("change", () => {
      const model = $("grant-kind").value === "model";
      if (model) $("grant-resource").setAttribute("list", "model-names");
      else $("grant-resource").removeAttribute("list");
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
    const canReadAudit = who.is_admin || Object.values(who.teams).includes("maintainer");
    if (!canReadAudit) $("audit-filters").hidden = true;
    if (!who.is_admin) datalist("user-names", [who.user]);

    await loadTeams();
    await Promise.all([loadUsers(), loadTokens(), loadAllGrants(), loadModelNames()]);
    if (canReadAudit) await searchAudit();
    else $("audit").replaceChildren(el("p", { class: "muted", id: "audit-denied" },
      "The audit log is open to org administrators and team maintainers (for their teams' resources)."));
    await verifyChain();
    document.body.dataset.ready = "true";
  });
})();
