// The Model Registry portal at /share/: discover the models you may read (with their owner
// team, versions, semantic versions, packages and contacts), create sharing packages, read
// their validation report, edit or withdraw them before they are published, publish and
// revoke them. Every call goes through the JSON API with the session (the server decides and
// audits); data only ever reaches the page as text. The form checks what it can before it
// submits (the server checks again) and is disabled for whoever may write on no model.
// Aliases are read from MLflow's registry as it is now, never from what a package recorded.
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
  const MAX_DAYS = 3650;
  // SemVer 2.0 (semver.org's own expression); the server also refuses +build metadata.
  const SEMVER = new RegExp("^(0|[1-9]\\d*)\\.(0|[1-9]\\d*)\\.(0|[1-9]\\d*)"
    + "(?:-((?:0|[1-9]\\d*|\\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\\.(?:0|[1-9]\\d*|\\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    + "(?:\\+([0-9a-zA-Z-]+(?:\\.[0-9a-zA-Z-]+)*))?$");

  const state = {
    who: null,
    models: [],        // merged summaries, see loadModels (as the filters choose them)
    summaries: new Map(),  // name -> the unfiltered summary (what the caller may do on it)
    aliases: new Map(),    // name -> Map(alias -> version), MLflow's registry as it is now
    packages: [],      // every package the caller may see
    current: null,     // the package whose report is shown
    editing: null,     // the package the form edits (null: the form creates)
    checked: false,    // the form was submitted once: its checks follow each change
  };
  const $ = (id) => document.getElementById(id);

  // -- helpers -------------------------------------------------------------------------------
  const role = (team) => (state.who && team ? state.who.teams[team] : undefined);
  const mayWrite = (team) => state.who.is_admin || role(team) === "engineer" ||
                             role(team) === "maintainer";
  const mayManage = (team) => state.who.is_admin || role(team) === "maintainer";
  // What the server says the caller may do on a model or a package (grants included);
  // the caller's role in the owner team when it has not said.
  function mayWriteModel(name) {
    const summary = state.summaries.get(name);
    if (summary && typeof summary.may_write === "boolean") return summary.may_write;
    return Boolean(summary && summary.owner_team && mayWrite(summary.owner_team));
  }
  const mayEdit = (pkg) => (typeof pkg.may_write === "boolean" ? pkg.may_write
    : mayWrite(pkg.owner_team));
  const mayPublish = (pkg) => (typeof pkg.may_manage === "boolean" ? pkg.may_manage
    : mayManage(pkg.owner_team));
  const UNPUBLISHED = ["validated", "rejected"];

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

  // Where the alias a package was pinned through points now, from MLflow's registry (the
  // package keeps only the alias's name and the versions it pinned).
  function aliasNow(pkg) {
    const known = state.aliases.get(pkg.model);
    if (known) return known.has(pkg.alias) ? known.get(pkg.alias) : null;
    return pkg.alias_version === undefined ? undefined : pkg.alias_version;
  }

  function aliasNote(pkg) {
    if (!pkg.alias) return null;
    const now = aliasNow(pkg);
    if (now === undefined || (now !== null && pkg.versions.includes(String(now)))) {
      return el("span", { class: "alias", dataset: { alias: pkg.alias } }, ` (@${pkg.alias})`);
    }
    return el("span", { class: "alias-moved", dataset: { alias: pkg.alias, aliasNow: now ?? "" } },
      now === null ? ` (pinned through @${pkg.alias}, since deleted)`
        : ` (pinned through @${pkg.alias}, which now points at v${now})`);
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
    const [summaries, all, registry] = await Promise.all([
      call("GET", `models/search?${new URLSearchParams(wanted)}`),
      filtered ? call("GET", "models/search") : null,
      registeredModels(),
    ]);
    state.summaries = new Map(((all || summaries).models || []).map((m) => [m.name, m]));
    state.aliases = new Map(registry.map((m) => [m.name,
      new Map((m.aliases || []).map((a) => [a.alias, String(a.version)]))]));
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
    if (state.current) renderReportAlias(state.current);
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
          + `${p.versions.length > 1 ? "versions" : "version"} ${p.versions.join(", ")}`,
        aliasNote(p), ` · ${teamsText(p)}`,
        p.description ? el("div", {}, p.description) : null,
        p.intended_use ? el("div", {}, el("strong", {}, "Intended use: "), p.intended_use) : null,
        p.limitations ? el("div", {}, el("strong", {}, "Limitations: "), p.limitations) : null,
        p.owner_contact ? el("div", {}, el("strong", {}, "Contact: "), p.owner_contact) : null)))
      : el("p", { class: "muted" }, "No sharing package."));
    if (model.owner_team && mayWriteModel(model.name)) {
      parts.push(el("p", {}, el("button", { type: "button",
        onclick: () => packageModel(model.name) }, "Package a version of this model")));
    }
    cell.replaceChildren(...parts);
  }

  // -- create and edit -----------------------------------------------------------------------
  function packageable() {
    return [...state.summaries.values()].filter((m) => m.owner_team && mayWriteModel(m.name))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  function renderModelChoices() {
    const select = $("pkg-model");
    const previous = select.value;
    const owned = packageable();
    const option = (m) => el("option", { value: m.name }, `${m.name} (${m.owner_team})`);
    const editing = state.editing;
    select.replaceChildren(
      el("option", { value: "" }, owned.length ? "Choose a model…" : "No model to package"),
      ...owned.map(option),
      editing && !owned.some((m) => m.name === editing.model)
        ? el("option", { value: editing.model }, editing.model) : null);
    const form = $("create-package");
    const able = owned.length > 0 || editing !== null;
    form.dataset.state = able ? "ready" : "disabled";
    for (const control of form.elements) {
      control.disabled = !able || (control.id === "pkg-model" && editing !== null);
    }
    $("create-hint").textContent = able ? "" : "You cannot create a sharing package: none of "
      + "your teams may write on a registered model. A model is packaged by the engineers and "
      + "maintainers of its owner team, or of a team granted write on it.";
    const keep = editing ? editing.model : previous;
    if (keep && [...select.options].some((o) => o.value === keep)) {
      select.value = keep;
    } else if (previous) {
      select.value = "";
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

  async function loadVersions(pinned) {
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
      const aliases = [...(state.aliases.get(name) || new Map())];  // the registry, now
      select.replaceChildren(...(versions.length ? versions.map((v) => {
        const tags = Object.fromEntries((v.tags || []).map((t) => [t.key, t.value]));
        const semver = tags["mlflow_share.semver"];
        const label = [`v${v.version}`, semver ? `(${semver})` : "",
          ...aliases.filter(([, to]) => to === String(v.version)).map(([a]) => `@${a}`),
          v.status && v.status !== "READY" ? `[${v.status}]` : "",
          v.creation_timestamp ? `· ${Share.time(Number(v.creation_timestamp))}` : ""]
          .filter(Boolean).join(" ");
        return el("option", { value: String(v.version),
          selected: Array.isArray(pinned) && pinned.includes(String(v.version)) }, label);
      }) : [el("option", { value: "" }, "No versions")]));
    } catch (error) {
      select.replaceChildren(el("option", { value: "" }, "Versions unavailable"));
      fail($("create-error"), error);
    }
    select.dataset.state = "ready";
    if (state.checked) checkForm();
  }

  function packageModel(name) {
    if (state.editing) stopEdit();
    $("pkg-model").value = name;
    loadVersions();
    $("create").scrollIntoView({ behavior: "smooth" });
    $("pkg-semver").focus();
  }

  function teamRow(team, permission) {
    const error = el("p", { class: "field-error", "aria-live": "polite" });
    error.id = `team-error-${Math.random().toString(36).slice(2)}`;
    const row = el("div", { class: "team-row" },
      el("input", { name: "team", list: "known-teams", placeholder: "team name",
        "aria-label": "Target team", autocomplete: "off", value: team || undefined,
        "aria-describedby": error.id }),
      el("select", { name: "permission", "aria-label": "Permission" },
        PERMISSIONS.map((p) => el("option", { value: p, selected: p === permission }, p))),
      el("button", { type: "button", class: "remove-team", "aria-label": "Remove this team",
        onclick: () => {
          if ($("team-rows").children.length > 1) row.remove();
          else row.querySelector("input").value = "";
          if (state.checked) checkForm();
        } }, "Remove"),
      error);
    return row;
  }

  function setTeamRows(teams) {
    const rows = teams.length ? teams.map((t) => teamRow(t.team, t.permission))
      : [teamRow("", "read")];
    $("team-rows").replaceChildren(...rows);
  }

  // A problem next to its field (aria-invalid on the field), or none.
  function mark(field, message, target) {
    const slot = target || $(`${field.id}-error`);
    slot.textContent = message || "";
    if (message) field.setAttribute("aria-invalid", "true");
    else field.removeAttribute("aria-invalid");
    return message ? field : null;
  }

  function semverProblem(text) {
    if (!text) return "";
    if (text.length > 128) return "At most 128 characters.";
    const match = SEMVER.exec(text);
    if (!match) {
      return `"${text}" is not a semantic version: use MAJOR.MINOR.PATCH, e.g. 1.0.0 `
        + "(optionally -rc.1).";
    }
    if (match[5] !== undefined) {
      return `Leave out the build metadata (+${match[5]}): it does not tell versions apart.`;
    }
    return "";
  }

  // Every check the page can make before submitting; each problem shows next to its field.
  // Returns the fields with a problem (the first is focused on submit).
  function checkForm() {
    const bad = [];
    const add = (field) => { if (field) bad.push(field); };
    const model = $("pkg-model");
    add(mark(model, model.value ? "" : "Choose a model."));
    const versions = $("pkg-version");
    const chosen = [...versions.selectedOptions].map((o) => o.value).filter(Boolean);
    add(mark(versions, !model.value || chosen.length ? "" : "Choose a version."));
    const semver = $("pkg-semver");
    add(mark(semver, semverProblem(semver.value.trim())));
    const expires = $("pkg-expires");
    const days = expires.value.trim();
    const number = Number(days);
    const unchanged = state.editing && expires.dataset.initial === days;
    add(mark(expires, (!days && !expires.validity.badInput) || unchanged
      || (Number.isInteger(number) && number >= 1 && number <= MAX_DAYS) ? ""
      : `Expiry must be a whole number of days from 1 to ${MAX_DAYS}.`));

    const owner = (state.summaries.get(model.value) || {}).owner_team
      || (state.editing && state.editing.owner_team);
    const seen = new Set();
    let any = false;
    for (const row of $("team-rows").querySelectorAll(".team-row")) {
      const input = row.querySelector("[name=team]");
      const team = input.value.trim();
      const permission = row.querySelector("[name=permission]").value;
      let problem = "";
      if (team) {
        any = true;
        if (owner && team === owner) {
          problem = `${team} owns this model: a package shares it with other teams.`;
        } else if (seen.has(`${team}\n${permission}`)) {
          problem = `${team} already has ${permission} in this package.`;
        }
        seen.add(`${team}\n${permission}`);
      }
      add(mark(input, problem, row.querySelector(".field-error")));
    }
    const first = $("team-rows").querySelector("[name=team]");
    $("pkg-teams-error").textContent = any ? "" : "Add at least one target team.";
    if (!any) bad.push(first);
    return bad;
  }

  function readForm() {
    const editing = state.editing;
    const body = {
      versions: [...$("pkg-version").selectedOptions].map((o) => o.value).filter(Boolean),
      teams: [],
    };
    if (!editing) body.model = $("pkg-model").value;
    for (const row of $("team-rows").querySelectorAll(".team-row")) {
      const team = row.querySelector("[name=team]").value.trim();
      const permission = row.querySelector("[name=permission]").value;
      if (team) body.teams.push({ team, permission });
    }
    for (const [key, id] of [["semver", "pkg-semver"], ["description", "pkg-description"],
      ["intended_use", "pkg-intended-use"], ["limitations", "pkg-limitations"],
      ["owner_contact", "pkg-contact"]]) {
      const value = $(id).value.trim();
      if (value) body[key] = value;
      else if (editing) body[key] = null;  // an edit clears what was emptied
    }
    const expires = $("pkg-expires");
    const days = expires.value.trim();
    if (editing && expires.dataset.initial === days) {
      // Untouched: the stored expiry stays as it is.
    } else if (days) {
      body.expires_at = Date.now() + Number(days) * DAY_MS;
    } else if (editing) {
      body.expires_at = null;
    }
    return body;
  }

  async function submitPackage(event) {
    event.preventDefault();
    const errors = $("create-error");
    errors.replaceChildren();
    state.checked = true;
    const bad = checkForm();
    if (bad.length) {
      errors.replaceChildren(el("p", { class: "error", role: "alert", id: "form-problems" },
        `${bad.length === 1 ? "One field needs" : `${bad.length} fields need`} a change `
        + "before the package can be submitted."));
      bad[0].focus();
      return;
    }
    const body = readForm();
    const editing = state.editing;
    const button = $("submit-package");
    button.disabled = true;
    $("package-report").replaceChildren(el("p", { class: "muted", id: "validating" },
      "Validating the package…"));
    try {
      const answer = editing
        ? await call("PATCH", `packages/${encodeURIComponent(editing.id)}`, body)
        : await call("POST", "packages", body);
      if (editing) stopEdit();
      showPackage(answer.package);
      await refresh();
    } catch (error) {
      $("package-report").replaceChildren();
      fail(errors, error);
    } finally {
      button.disabled = false;
    }
  }

  function clearChecks() {
    state.checked = false;
    for (const slot of $("create-package").querySelectorAll(".field-error")) slot.textContent = "";
    for (const field of $("create-package").querySelectorAll("[aria-invalid]")) {
      field.removeAttribute("aria-invalid");
    }
    $("create-error").replaceChildren();
  }

  async function startEdit(id) {
    let pkg;
    try {
      pkg = (await call("GET", `packages/${encodeURIComponent(id)}`)).package;
    } catch (error) {
      fail($("portal-error"), error);
      return;
    }
    state.editing = pkg;
    clearChecks();
    const form = $("create-package");
    form.dataset.mode = "edit";
    form.dataset.package = pkg.id;
    $("create-title").textContent = `Edit sharing package ${pkg.id}`;
    $("submit-package").textContent = "Save and validate again";
    $("cancel-edit").hidden = false;
    renderModelChoices();
    $("pkg-model").value = pkg.model;
    const versions = $("pkg-version");
    versions.multiple = pkg.versions.length > 1;
    for (const [id2, key] of [["pkg-semver", "semver"], ["pkg-description", "description"],
      ["pkg-intended-use", "intended_use"], ["pkg-limitations", "limitations"],
      ["pkg-contact", "owner_contact"]]) {
      $(id2).value = pkg[key] || "";
    }
    const expires = $("pkg-expires");
    expires.value = pkg.expires_at
      ? String(Math.max(1, Math.ceil((pkg.expires_at - Date.now()) / DAY_MS))) : "";
    expires.dataset.initial = expires.value;
    $("pkg-expires-now").textContent = pkg.expires_at
      ? `Now expires ${Share.time(pkg.expires_at)}; leave it as it is to keep that.` : "";
    setTeamRows(pkg.teams || []);
    $("create").scrollIntoView({ behavior: "smooth" });
    await loadVersions(pkg.versions);
    $("pkg-semver").focus();
  }

  function stopEdit() {
    state.editing = null;
    clearChecks();
    const form = $("create-package");
    form.reset();
    delete form.dataset.mode;
    delete form.dataset.package;
    $("pkg-version").multiple = false;
    delete $("pkg-expires").dataset.initial;
    $("pkg-expires-now").textContent = "";
    $("create-title").textContent = "Create sharing package";
    $("submit-package").textContent = "Create and validate";
    $("cancel-edit").hidden = true;
    $("pkg-contact").value = state.who.user;
    setTeamRows([]);
    renderModelChoices();
    loadVersions();
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
    if (pkg.status === "validated" && mayPublish(pkg)) {
      actions.append(el("button", { type: "button", class: "primary", id: "publish-package",
        onclick: () => publish(pkg.id) }, "Publish"));
    } else if (pkg.status === "validated") {
      actions.append(el("p", { class: "muted" },
        `Validated. A maintainer of ${pkg.owner_team || "the owner team"} can publish it.`));
    } else if (pkg.status === "rejected") {
      actions.append(el("p", { class: "muted" },
        "Rejected: it cannot be published. Fix the problems (edit the package, or the model "
        + "and validate it again), or withdraw it."));
      if (mayEdit(pkg)) {
        actions.append(el("button", { type: "button", id: "revalidate-package",
          onclick: () => revalidate(pkg.id) }, "Validate again"));
      }
    } else if (pkg.status === "published") {
      actions.append(el("p", { class: "ok" },
        `Published${pkg.published_by ? ` by ${pkg.published_by}` : ""}`
        + `${pkg.published_at ? ` at ${Share.time(pkg.published_at)}` : ""}: `
        + `${teamsText(pkg)} now ${pkg.teams.length > 1 ? "have" : "has"} access.`));
    }
    if (UNPUBLISHED.includes(pkg.status) && mayEdit(pkg)) {
      actions.append(el("button", { type: "button", id: "edit-package",
        onclick: () => startEdit(pkg.id) }, "Edit"));
    }
    $("package-report").replaceChildren(el("div", { class: "report", dataset: { package: pkg.id } },
      el("h3", {}, "Validation report"),
      el("dl", { class: "package-facts" },
        el("dt", {}, "Package"), el("dd", { id: "package-id" }, pkg.id),
        el("dt", {}, "Model"), el("dd", {}, `${pkg.model} · version ${pkg.versions.join(", ")}`,
          el("span", { id: "report-alias" }, aliasNote(pkg))),
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

  function renderReportAlias(pkg) {
    const slot = $("report-alias");
    if (slot && slot.closest(`[data-package="${CSS.escape(pkg.id)}"]`)) {
      slot.replaceChildren(aliasNote(pkg) || "");
    }
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
    const manage = mayPublish(pkg);
    const buttons = [el("button", { type: "button", class: "show-report",
      onclick: () => showReport(pkg.id) }, "Report")];
    if (manage && pkg.status === "validated") {
      buttons.push(el("button", { type: "button", class: "primary publish",
        onclick: (e) => act("publish", pkg.id, e.currentTarget) },
      "Publish"));
    }
    if (UNPUBLISHED.includes(pkg.status) && mayEdit(pkg)) {
      buttons.push(el("button", { type: "button", class: "edit",
        onclick: () => startEdit(pkg.id) }, "Edit"));
      buttons.push(el("button", { type: "button", class: "danger withdraw",
        onclick: (e) => askWithdraw(e.currentTarget.closest("td"), pkg) }, "Withdraw"));
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
      el("td", { class: "versions" }, pkg.versions.map((v) => `v${v}`).join(", "),
        aliasNote(pkg)),
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

  // Withdrawing asks in the row itself: confirm, or cancel to get the buttons back.
  function askWithdraw(cell, pkg) {
    const before = [...cell.childNodes];
    const cancel = el("button", { type: "button", class: "cancel-withdraw",
      onclick: () => cell.replaceChildren(...before) }, "Cancel");
    const confirm = el("button", { type: "button", class: "danger confirm-withdraw",
      onclick: () => withdraw(pkg, confirm, cancel) }, "Withdraw it");
    cell.replaceChildren(el("span", { class: "confirm-withdraw-text", role: "alert" },
      `Withdraw package ${pkg.id}? It is deleted; the audit log keeps its record.`),
    confirm, cancel);
    cancel.focus();
  }

  async function withdraw(pkg, confirm, cancel) {
    confirm.disabled = true;
    cancel.disabled = true;
    try {
      await call("DELETE", `packages/${encodeURIComponent(pkg.id)}`);
      if (state.editing && state.editing.id === pkg.id) stopEdit();
      if (state.current && state.current.id === pkg.id) {
        state.current = null;
        $("package-report").replaceChildren(el("p", { class: "muted", id: "withdrawn" },
          `Package ${pkg.id} was withdrawn.`));
      }
      await refresh();
    } catch (error) {
      fail($("portal-error"), error);
      if (confirm.isConnected) {
        confirm.disabled = false;
        cancel.disabled = false;
      }
    }
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
    setTeamRows([]);
    $("add-team").addEventListener("click", () => {
      const row = teamRow("", "read");
      $("team-rows").append(row);
      row.querySelector("input").focus();
    });
    $("pkg-model").addEventListener("change", () => loadVersions());
    $("create-package").addEventListener("submit", submitPackage);
    for (const kind of ["input", "change"]) {
      $("create-package").addEventListener(kind, () => { if (state.checked) checkForm(); });
    }
    $("cancel-edit").addEventListener("click", () => {
      stopEdit();
      $("create-title").scrollIntoView({ behavior: "smooth" });
    });
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
