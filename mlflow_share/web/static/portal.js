// The Model Registry portal at /share/: discover the models you may read (with their owner
// team, versions, semantic versions, packages and contacts), create sharing packages, read
// their validation report, publish and revoke them. Every call goes through the JSON API with
// the session (the server decides and audits); data only ever reaches the page as text.
"use strict";

(() => {
  const { el, call } = Share;
  const MLFLOW = "/api/2.0/mlflow";
  const PERMISSIONS = ["read", "execute", "write"];
  const CHECK_LABELS = {
    metadata: "Metadata (description, contact, semantic version)",
    manifest: "Bytes match the manifest",
    onnx: "ONNX model loads in onnxruntime",
    input_example: "Input example runs and matches the signature",
  };
  const DAY_MS = 86_400_000;

  const state = {
    who: null,
    models: [],        // merged summaries, see loadModels
    packages: [],      // every package the caller may see
    current: null,     // the package whose report is shown
  };
  const $ = (id) => document.getElementById(id);

  // -- helpers -------------------------------------------------------------------------------
  const role = (team) => (state.who && team ? state.who.teams[team] : undefined);
  const mayWrite = (team) => state.who.is_admin || role(team) === "engineer" ||
                             role(team) === "maintainer";
  const mayManage = (team) => state.who.is_admin || role(team) === "maintainer";

  function badge(text, kind, extra) {
    return el("span", { class: `badge ${kind || text}`, ...(extra || {}) }, text);
  }

  function statusBadge(status, id) {
    return badge(status, status, { id, dataset: { status } });
  }

  function fail(target, error) {
    Share.showError(target, error);
  }

  function clearError() {
    $("portal-error").replaceChildren();
  }

  function versionFilter(name) {
    // MLflow's filter grammar: a string in single or double quotes.
    const quote = name.includes("'") ? '"' : "'";
    return `name=${quote}${name}${quote}`;
  }

  function byNewest(a, b) {
    return (b.created_at || 0) - (a.created_at || 0);
  }

  function packagesOf(name) {
    return state.packages.filter((p) => p.model === name).sort(byNewest);
  }

  function contactOf(name) {
    const found = packagesOf(name);
    const published = found.find((p) => p.status === "published" && p.owner_contact);
    const any = found.find((p) => p.owner_contact);
    return (published || any || {}).owner_contact || "";
  }

  function teamsText(pkg) {
    const grouped = Object.create(null);
    for (const { team, permission } of pkg.teams || []) {
      (grouped[team] = grouped[team] || []).push(permission);
    }
    return Object.entries(grouped).map(([team, perms]) => `${team}: ${perms.join(", ")}`)
      .join("; ");
  }

  // -- data ----------------------------------------------------------------------------------
  async function registeredModels() {
    // MLflow's search: already only the models the caller may read.
    const found = [];
    let token = "";
    for (let page = 0; page < 20; page += 1) {
      const query = new URLSearchParams({ max_results: "500" });
      if (token) query.set("page_token", token);
      const answer = await call("GET", `${MLFLOW}/registered-models/search?${query}`);
      found.push(...(answer.registered_models || []));
      token = answer.next_page_token;
      if (!token) break;
    }
    return found;
  }

  function filters() {
    const values = {
      owner_team: $("filter-owner").value, semver: $("filter-semver").value.trim(),
      status: $("filter-status").value, metric: $("filter-metric").value.trim(),
    };
    return Object.fromEntries(Object.entries(values).filter(([, v]) => v));
  }

  async function loadModels() {
    const wanted = filters();
    const filtered = Object.keys(wanted).length > 0;
    const [summaries, registry] = await Promise.all([
      call("GET", `models/search?${new URLSearchParams(wanted)}`),
      registeredModels(),
    ]);
    const stock = new Map(registry.map((m) => [m.name, m]));
    const merged = new Map();
    for (const summary of summaries.models || []) {
      merged.set(summary.name, { ...summary, registry: stock.get(summary.name) || null });
    }
    if (!filtered) {  // models without an owner team in mlflow-share still show
      for (const model of registry) {
        if (!merged.has(model.name)) {
          merged.set(model.name, {
            name: model.name, owner_team: null, description: model.description || "",
            tags: Object.fromEntries((model.tags || []).map((t) => [t.key, t.value])),
            published_semvers: [], validation_status: "none", metrics: {}, registry: model,
          });
        }
      }
    }
    state.models = [...merged.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  async function loadPackages() {
    state.packages = (await call("GET", "packages")).packages || [];
  }

  async function refresh() {
    clearError();
    $("discover").dataset.state = "loading";
    $("packages-section").dataset.state = "loading";
    try {
      await Promise.all([loadModels(), loadPackages()]);
    } catch (error) {
      fail($("portal-error"), error);
    }
    renderModels();
    renderPackages();
    renderModelChoices();
    renderTeamChoices();
    $("discover").dataset.state = "ready";
    $("packages-section").dataset.state = "ready";
  }

  // -- discover ------------------------------------------------------------------------------
  function matchesText(model, text) {
    if (!text) return true;
    const haystack = [model.name, model.owner_team, model.description, contactOf(model.name),
      ...(model.published_semvers || []),
      ...Object.entries(model.tags || {}).map(([k, v]) => `${k}=${v}`)]
      .join("\n").toLowerCase();
    return text.toLowerCase().split(/\s+/).filter(Boolean).every((w) => haystack.includes(w));
  }

  function latestVersions(model) {
    const registry = model.registry;
    const latest = (registry && registry.latest_versions) || [];
    const aliases = (registry && registry.aliases) || [];
    const numbers = latest.length ? [...new Set(latest.map((v) => String(v.version)))]
      : (model.version ? [String(model.version)] : []);
    numbers.sort((a, b) => Number(b) - Number(a));
    return el("span", {},
      numbers.length ? numbers.map((v) => el("span", { class: "version" }, `v${v}`))
        : el("span", { class: "muted" }, "no versions"),
      aliases.map((a) => el("span", { class: "alias", title: `@${a.alias} → v${a.version}` },
        `@${a.alias}`)));
  }

  function ownerCell(model) {
    if (!model.owner_team) return el("td", { class: "muted" }, "—");
    const mine = role(model.owner_team);
    return el("td", {},
      model.owner_team,
      el("div", { class: "muted small" }, mine ? `you: ${mine}`
        : state.who.is_admin ? "you: org admin" : "shared with you"));
  }

  function renderModels() {
    const body = $("models").tBodies[0];
    const text = $("filter-text").value.trim();
    const shown = state.models.filter((m) => matchesText(m, text));
    body.replaceChildren(...shown.map(modelRow));
    if (!shown.length) {
      body.append(el("tr", { class: "empty" }, el("td", { colspan: 8, class: "muted" },
        state.models.length ? "No model matches the search." : "No models you may read.")));
    }
    $("models-count").textContent = `${shown.length} of ${state.models.length} models`;
  }

  function modelRow(model) {
    const semvers = model.published_semvers || [];
    const details = el("button", { type: "button", class: "details-toggle",
      "aria-expanded": "false", onclick: (event) => toggleDetails(event.currentTarget, model) },
      "Details");
    return el("tr", { dataset: { model: model.name } },
      el("td", {}, el("a", { href: `/#/models/${encodeURIComponent(model.name)}`,
        class: "model-name" }, model.name),
      Object.keys(model.tags || {}).length ? el("div", { class: "tags" },
        Object.entries(model.tags).filter(([k]) => !k.startsWith("mlflow")).map(([k, v]) =>
          el("span", { class: "tag" }, v ? `${k}=${v}` : k))) : null),
      ownerCell(model),
      el("td", { class: "description" }, model.description || el("span", { class: "muted" }, "—")),
      el("td", {}, latestVersions(model)),
      el("td", { class: "semvers" }, semvers.length
        ? [...semvers].reverse().map((s) => badge(s, "semver", { dataset: { semver: s } }))
        : el("span", { class: "muted" }, "—")),
      el("td", {}, statusBadge(model.validation_status || "none")),
      el("td", { class: "contact" }, contactOf(model.name) || el("span", { class: "muted" }, "—")),
      el("td", {}, details));
  }

  async function toggleDetails(button, model) {
    const row = button.closest("tr");
    const open = row.nextElementSibling && row.nextElementSibling.classList.contains("detail");
    if (open) {
      row.nextElementSibling.remove();
      button.setAttribute("aria-expanded", "false");
      return;
    }
    button.setAttribute("aria-expanded", "true");
    const cell = el("td", { colspan: 8 }, el("p", { class: "muted" }, "Loading…"));
    row.after(el("tr", { class: "detail", dataset: { detailOf: model.name } }, cell));
    const parts = [];
    if (model.owner_team) {
      try {
        const answer = await call("GET", `semver?${new URLSearchParams({ model: model.name })}`);
        parts.push(el("h3", {}, "Semantic versions"), answer.versions.length
          ? el("ul", { class: "semver-map" }, answer.versions.map((v) =>
            el("li", { dataset: { semver: v.semver } }, `${v.semver} → version ${v.version}`)))
          : el("p", { class: "muted" }, "No published semantic version."));
      } catch (error) {
        parts.push(el("p", { class: "error" }, error.message));
      }
    }
    const metrics = Object.entries(model.metrics || {});
    if (metrics.length) {
      parts.push(el("h3", {}, `Metrics${model.version ? ` (version ${model.version})` : ""}`),
        el("p", {}, metrics.map(([k, v]) => el("span", { class: "metric" }, `${k} = ${v}`))));
    }
    const found = packagesOf(model.name);
    parts.push(el("h3", {}, "Sharing packages"), found.length
      ? el("ul", { class: "package-summaries" }, found.map((p) => el("li", {},
        statusBadge(p.status), ` ${p.semver || "(no semver)"} · `
          + `${p.versions.length > 1 ? "versions" : "version"} ${p.versions.join(", ")}`
          + ` · ${teamsText(p)}`,
        p.description ? el("div", {}, p.description) : null,
        p.intended_use ? el("div", {}, el("strong", {}, "Intended use: "), p.intended_use) : null,
        p.limitations ? el("div", {}, el("strong", {}, "Limitations: "), p.limitations) : null,
        p.owner_contact ? el("div", {}, el("strong", {}, "Contact: "), p.owner_contact) : null)))
      : el("p", { class: "muted" }, "No sharing package."));
    if (model.owner_team && mayWrite(model.owner_team)) {
      parts.push(el("p", {}, el("button", { type: "button",
        onclick: () => packageModel(model.name) }, "Package a version of this model")));
    }
    cell.replaceChildren(...parts);
  }

  // -- create --------------------------------------------------------------------------------
  function renderModelChoices() {
    const select = $("pkg-model");
    const previous = select.value;
    const owned = state.models.filter((m) => m.owner_team && mayWrite(m.owner_team));
    const others = state.models.filter((m) => m.owner_team && !mayWrite(m.owner_team));
    const option = (m) => el("option", { value: m.name }, `${m.name} (${m.owner_team})`);
    select.replaceChildren(
      el("option", { value: "" }, owned.length || others.length ? "Choose a model…"
        : "No model to package"),
      owned.length ? el("optgroup", { label: "Owned by your teams" }, owned.map(option)) : null,
      others.length ? el("optgroup", { label: "Other teams' (needs write permission)" },
        others.map(option)) : null);
    $("create-hint").textContent = owned.length ? ""
      : "You are not an engineer or maintainer of any model's owner team: packaging another "
        + "team's model needs write permission on it.";
    if (previous && state.models.some((m) => m.name === previous)) {
      select.value = previous;
    } else if (previous) {
      loadVersions();
    }
  }

  function renderTeamChoices() {
    const teams = new Set(Object.keys(state.who.teams));
    for (const model of state.models) if (model.owner_team) teams.add(model.owner_team);
    for (const pkg of state.packages) for (const t of pkg.teams || []) teams.add(t.team);
    $("known-teams").replaceChildren(...[...teams].sort().map((t) => el("option", { value: t })));
    const owner = $("filter-owner");
    const chosen = owner.value;
    owner.replaceChildren(el("option", { value: "" }, "Any"),
      ...[...teams].sort().map((t) => el("option", { value: t }, t)));
    owner.value = teams.has(chosen) ? chosen : "";
  }

  async function loadVersions() {
    const name = $("pkg-model").value;
    const select = $("pkg-version");
    select.replaceChildren();
    select.dataset.state = "loading";
    if (!name) {
      select.dataset.state = "ready";
      return;
    }
    try {
      const query = new URLSearchParams({ filter: versionFilter(name), max_results: "1000" });
      const answer = await call("GET", `${MLFLOW}/model-versions/search?${query}`);
      if ($("pkg-model").value !== name) return;  // the choice changed meanwhile
      const versions = (answer.model_versions || []).filter((v) => v.name === name)
        .sort((a, b) => Number(b.version) - Number(a.version));
      select.replaceChildren(...(versions.length ? versions.map((v) => {
        const tags = Object.fromEntries((v.tags || []).map((t) => [t.key, t.value]));
        const semver = tags["mlflow_share.semver"];
        const label = [`v${v.version}`, semver ? `(${semver})` : "",
          v.status && v.status !== "READY" ? `[${v.status}]` : "",
          v.creation_timestamp ? `· ${Share.time(Number(v.creation_timestamp))}` : ""]
          .filter(Boolean).join(" ");
        return el("option", { value: String(v.version) }, label);
      }) : [el("option", { value: "" }, "No versions")]));
    } catch (error) {
      select.replaceChildren(el("option", { value: "" }, "Versions unavailable"));
      fail($("create-error"), error);
    }
    select.dataset.state = "ready";
  }

  function packageModel(name) {
    $("pkg-model").value = name;
    loadVersions();
    $("create").scrollIntoView({ behavior: "smooth" });
    $("pkg-semver").focus();
  }

  function teamRow(team, permission) {
    const row = el("div", { class: "team-row" },
      el("input", { name: "team", list: "known-teams", placeholder: "team name",
        "aria-label": "Target team", autocomplete: "off", value: team || undefined }),
      el("select", { name: "permission", "aria-label": "Permission" },
        PERMISSIONS.map((p) => el("option", { value: p, selected: p === permission }, p))),
      el("button", { type: "button", class: "remove-team", "aria-label": "Remove this team",
        onclick: () => {
          if ($("team-rows").children.length > 1) row.remove();
          else row.querySelector("input").value = "";
        } }, "Remove"));
    return row;
  }

  function readForm() {
    const problems = [];
    const model = $("pkg-model").value;
    const version = $("pkg-version").value;
    if (!model) problems.push("Choose a model.");
    if (!version) problems.push("Choose a version.");
    const teams = [];
    for (const row of $("team-rows").querySelectorAll(".team-row")) {
      const team = row.querySelector("[name=team]").value.trim();
      const permission = row.querySelector("[name=permission]").value;
      if (team) teams.push({ team, permission });
    }
    if (!teams.length) problems.push("Add at least one target team.");
    const body = { model, versions: [version], teams };
    for (const [key, id] of [["semver", "pkg-semver"], ["description", "pkg-description"],
      ["intended_use", "pkg-intended-use"], ["limitations", "pkg-limitations"],
      ["owner_contact", "pkg-contact"]]) {
      const value = $(id).value.trim();
      if (value) body[key] = value;
    }
    const days = $("pkg-expires").value.trim();
    if (days) {
      const number = Number(days);
      if (!Number.isInteger(number) || number < 1 || number > 3650) {
        problems.push("Expiry must be a whole number of days between 1 and 3650.");
      } else {
        body.expires_at = Date.now() + number * DAY_MS;
      }
    }
    return { body, problems };
  }

  async function submitPackage(event) {
    event.preventDefault();
    const errors = $("create-error");
    errors.replaceChildren();
    const { body, problems } = readForm();
    if (problems.length) {
      errors.replaceChildren(el("ul", { class: "error", role: "alert" },
        problems.map((p) => el("li", {}, p))));
      return;
    }
    const button = $("submit-package");
    button.disabled = true;
    $("package-report").replaceChildren(el("p", { class: "muted", id: "validating" },
      "Validating the package…"));
    try {
      const answer = await call("POST", "packages", body);
      showPackage(answer.package);
      await refresh();
    } catch (error) {
      $("package-report").replaceChildren();
      fail(errors, error);
    } finally {
      button.disabled = false;
    }
  }

  // -- the validation report -----------------------------------------------------------------
  function checkDetail(check) {
    if (check.problems && check.problems.length) {
      return el("ul", { class: "problems" }, check.problems.map((p) => el("li", {}, p)));
    }
    if (check.check === "onnx" && check.inputs) {
      const outputs = (check.outputs || []).join(", ");
      return `Loads; inputs ${check.inputs.join(", ")}; outputs ${outputs}.`;
    }
    if (check.check === "manifest" && check.files !== undefined) {
      const count = Array.isArray(check.files) ? check.files.length : check.files;
      return `${count} file(s) verified.`;
    }
    return "Passed.";
  }

  function showPackage(pkg) {
    state.current = pkg;
    const report = pkg.report || { checks: [] };
    const checks = report.checks || [];
    const failed = checks.filter((c) => !c.ok).length;
    const summary = !checks.length ? "No validation report."
      : failed ? `${failed} of ${checks.length} checks failed.`
        : `All ${checks.length} checks passed.`;
    const actions = el("div", { class: "actions", id: "package-actions" });
    if (pkg.status === "validated" && mayManage(pkg.owner_team)) {
      actions.append(el("button", { type: "button", class: "primary", id: "publish-package",
        onclick: () => publish(pkg.id) }, "Publish"));
    } else if (pkg.status === "validated") {
      actions.append(el("p", { class: "muted" },
        `Validated. A maintainer of ${pkg.owner_team || "the owner team"} can publish it.`));
    } else if (pkg.status === "rejected") {
      actions.append(el("p", { class: "muted" },
        "Rejected: it cannot be published. Fix the problems, then create a new package or "
        + "validate this one again."));
      if (mayWrite(pkg.owner_team)) {
        actions.append(el("button", { type: "button", id: "revalidate-package",
          onclick: () => revalidate(pkg.id) }, "Validate again"));
      }
    } else if (pkg.status === "published") {
      actions.append(el("p", { class: "ok" },
        `Published${pkg.published_by ? ` by ${pkg.published_by}` : ""}`
        + `${pkg.published_at ? ` at ${Share.time(pkg.published_at)}` : ""}: `
        + `${teamsText(pkg)} now ${pkg.teams.length > 1 ? "have" : "has"} access.`));
    }
    $("package-report").replaceChildren(el("div", { class: "report", dataset: { package: pkg.id } },
      el("h3", {}, "Validation report"),
      el("dl", { class: "package-facts" },
        el("dt", {}, "Package"), el("dd", { id: "package-id" }, pkg.id),
        el("dt", {}, "Model"), el("dd", {}, `${pkg.model} · version ${pkg.versions.join(", ")}`),
        el("dt", {}, "Semantic version"), el("dd", { id: "package-semver" }, pkg.semver || "—"),
        el("dt", {}, "Target teams"), el("dd", {}, teamsText(pkg)),
        el("dt", {}, "Status"), el("dd", {}, statusBadge(pkg.status, "package-status"))),
      el("p", { id: "report-summary", class: failed ? "error" : "ok" }, summary),
      el("table", { id: "validation-report" },
        el("thead", {}, el("tr", {}, el("th", {}, "Check"), el("th", {}, "Version"),
          el("th", {}, "Result"), el("th", {}, "Details"))),
        el("tbody", {}, checks.map((c) => el("tr", {
          dataset: { check: c.check, version: c.version ?? "", ok: String(Boolean(c.ok)) } },
        el("td", {}, CHECK_LABELS[c.check] || c.check),
        el("td", {}, c.version ?? "package"),
        el("td", {}, badge(c.ok ? "pass" : "fail")),
        el("td", {}, checkDetail(c)))))),
      report.checked_at ? el("p", { class: "muted small" },
        `Checked ${Share.time(report.checked_at)}`) : null,
      actions,
      el("div", { id: "package-error", "aria-live": "polite" })));
  }

  async function act(path, id, button) {
    const errors = $("package-error") || $("portal-error");
    if (button) button.disabled = true;
    try {
      const answer = await call("POST", `packages/${encodeURIComponent(id)}/${path}`);
      const full = answer.package.report === undefined
        ? (await call("GET", `packages/${encodeURIComponent(id)}`)).package : answer.package;
      showPackage(full);
      await refresh();
    } catch (error) {
      // A failed publish may have turned the package rejected: show it as it is now.
      try {
        showPackage((await call("GET", `packages/${encodeURIComponent(id)}`)).package);
        await refresh();
      } catch (ignored) { /* keep what is shown */ }
      fail($("package-error") || errors, error);
    } finally {
      if (button && button.isConnected) button.disabled = false;
    }
  }

  const publish = (id) => act("publish", id, $("publish-package"));
  const revalidate = (id) => act("validate", id, $("revalidate-package"));

  async function showReport(id) {
    try {
      showPackage((await call("GET", `packages/${encodeURIComponent(id)}`)).package);
      $("package-report").scrollIntoView({ behavior: "smooth" });
    } catch (error) {
      fail($("portal-error"), error);
    }
  }

  // -- packages ------------------------------------------------------------------------------
  function renderPackages() {
    const body = $("packages").tBodies[0];
    const sorted = [...state.packages].sort(byNewest);
    body.replaceChildren(...sorted.map(packageRow));
    if (!sorted.length) {
      body.append(el("tr", { class: "empty" }, el("td", { colspan: 9, class: "muted" },
        "No sharing packages yet.")));
    }
  }

  function packageRow(pkg) {
    const manage = mayManage(pkg.owner_team);
    const buttons = [el("button", { type: "button", class: "show-report",
      onclick: () => showReport(pkg.id) }, "Report")];
    if (manage && pkg.status === "validated") {
      buttons.push(el("button", { type: "button", class: "primary publish",
        onclick: (e) => act("publish", pkg.id, e.currentTarget) },
      "Publish"));
    }
    if (manage && (pkg.status === "validated" || pkg.status === "published"
                   || pkg.status === "expired")) {
      buttons.push(el("button", { type: "button", class: "danger revoke",
        onclick: (e) => {
          // eslint-disable-next-line no-alert
          if (window.confirm(`Revoke package ${pkg.id} of ${pkg.model}? `
                             + `${teamsText(pkg)} lose what it gave at once.`)) {
            act("revoke", pkg.id, e.currentTarget);
          }
        } }, "Revoke"));
    }
    return el("tr", { dataset: { package: pkg.id, model: pkg.model || "", status: pkg.status } },
      el("td", {}, pkg.model || el("span", { class: "muted" }, "(deleted)")),
      el("td", {}, pkg.versions.map((v) => `v${v}`).join(", ")
        + (pkg.alias ? ` (@${pkg.alias})` : "")),
      el("td", {}, pkg.semver || el("span", { class: "muted" }, "—")),
      el("td", {}, teamsText(pkg)),
      el("td", {}, statusBadge(pkg.status)),
      el("td", {}, pkg.created_by, el("div", { class: "muted small" }, Share.time(pkg.created_at))),
      el("td", {}, pkg.published_by || "", el("div", { class: "muted small" },
        Share.time(pkg.published_at))),
      el("td", {}, pkg.expires_at ? Share.time(pkg.expires_at)
        : el("span", { class: "muted" }, "never")),
      el("td", { class: "actions" }, buttons));
  }

  // -- start ---------------------------------------------------------------------------------
  async function start() {
    try {
      state.who = await Share.nav("");
    } catch (error) {
      fail($("portal-error"), error);
      return;
    }
    $("pkg-contact").value = state.who.user;
    $("team-rows").append(teamRow("", "read"));
    $("add-team").addEventListener("click", () => {
      const row = teamRow("", "read");
      $("team-rows").append(row);
      row.querySelector("input").focus();
    });
    $("pkg-model").addEventListener("change", loadVersions);
    $("create-package").addEventListener("submit", submitPackage);
    $("model-filters").addEventListener("submit", (event) => {
      event.preventDefault();
      refresh();
    });
    $("reset-filters").addEventListener("click", () => {
      $("model-filters").reset();
      refresh();
    });
    $("filter-text").addEventListener("input", renderModels);
    await refresh();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
