// The monitoring dashboard: who calls a registered model through the gateway, how often, how
// fast and how often it fails, from GET usage?model=NAME[&since=MS] (rows per version, team and
// minute: requests, errors, latency_sum_ms, p50_ms, p95_ms, p99_ms).
"use strict";

(() => {
  const { el } = Share;
  const BUCKETS = [60e3, 5 * 60e3, 15 * 60e3, 3600e3, 3 * 3600e3, 6 * 3600e3, 86400e3];
  const MAX_POINTS = 120;
  const $ = (id) => document.getElementById(id);
  const vname = (version) => `v${version}`;

  async function listModels() {
    // Every registered model the caller may read (the server filters the search).
    const names = [];
    let token;
    for (let page = 0; page < 10; page += 1) {
      const query = new URLSearchParams({ max_results: "500" });
      if (token) query.set("page_token", token);
      const data = await Share.call("GET", `/api/2.0/mlflow/registered-models/search?${query}`);
      for (const model of data.registered_models || []) names.push(model.name);
      token = data.next_page_token;
      if (!token) break;
    }
    return names.sort((a, b) => a.localeCompare(b));
  }

  function fillPicker(names, current) {
    const picker = $("model-picker");
    const all = current && !names.includes(current) ? [current, ...names] : names;
    picker.replaceChildren(
      el("option", { value: "", selected: !current }, all.length ? "Choose a model…" : "No models"),
      ...all.map((name) => el("option", { value: name, selected: name === current }, name)));
  }

  // --- aggregation --------------------------------------------------------------------------
  function bucketSize(rows) {
    if (!rows.length) return 60e3;
    const minutes = rows.map((r) => r.minute);
    const span = Math.max(...minutes) - Math.min(...minutes) + 60e3;
    return BUCKETS.find((size) => span / size <= MAX_POINTS) || BUCKETS[BUCKETS.length - 1];
  }

  function aggregate(rows) {
    const size = bucketSize(rows);
    const at = (row) => Math.floor(row.minute / size) * size;
    const buckets = [];
    if (rows.length) {
      const first = Math.min(...rows.map(at)), last = Math.max(...rows.map(at));
      for (let t = first; t <= last; t += size) buckets.push(t);
    }
    const teams = new Map(), versions = new Map();
    const latency = new Map(buckets.map((b) => [b, { ok: 0, sum: 0, p50w: 0, p50n: 0, p95: null, p99: null }]));
    const blank = (extra) => ({ requests: 0, errors: 0, ok: 0, sum: 0, p50w: 0, p50n: 0, p95: null, p99: null,
                                first: null, last: null, byBucket: new Map(), errBucket: new Map(),
                                others: new Set(), ...extra });
    for (const row of rows) {
      const bucket = at(row);
      const ok = Math.max(0, row.requests - row.errors);
      for (const [map, key, other] of [[teams, row.team, vname(row.version)],
                                       [versions, row.version, row.team]]) {
        if (!map.has(key)) map.set(key, blank());
        const item = map.get(key);
        item.requests += row.requests;
        item.errors += row.errors;
        item.ok += ok;
        item.sum += row.latency_sum_ms || 0;
        if (row.p50_ms !== null && ok) { item.p50w += row.p50_ms * ok; item.p50n += ok; }
        if (row.p95_ms !== null && row.p95_ms !== undefined) item.p95 = Math.max(item.p95 ?? 0, row.p95_ms);
        if (row.p99_ms !== null) item.p99 = Math.max(item.p99 ?? 0, row.p99_ms);
        item.first = item.first === null ? row.minute : Math.min(item.first, row.minute);
        item.last = item.last === null ? row.minute : Math.max(item.last, row.minute);
        item.byBucket.set(bucket, (item.byBucket.get(bucket) || 0) + row.requests);
        item.errBucket.set(bucket, (item.errBucket.get(bucket) || 0) + row.errors);
        item.others.add(other);
      }
      const l = latency.get(bucket);
      l.ok += ok;
      l.sum += row.latency_sum_ms || 0;
      if (row.p50_ms !== null && ok) { l.p50w += row.p50_ms * ok; l.p50n += ok; }
      if (row.p95_ms !== null && row.p95_ms !== undefined) l.p95 = Math.max(l.p95 ?? 0, row.p95_ms);
      if (row.p99_ms !== null) l.p99 = Math.max(l.p99 ?? 0, row.p99_ms);
    }
    return { size, buckets, teams, versions, latency };
  }

  const p50Of = (x) => (x.p50n ? x.p50w / x.p50n : null);
  const meanOf = (x) => (x.ok ? x.sum / x.ok : null);
  const ms = (value) => (value === null || value === undefined ? "–" : `${Charts.formatNumber(value)} ms`);
  const pct = (part, whole) => (whole ? `${((100 * part) / whole).toFixed(1)}%` : "–");
  const sizeText = (size) => (size >= 86400e3 ? `${size / 86400e3} d` : size >= 3600e3
    ? `${size / 3600e3} h` : `${size / 60e3} min`);

  // --- rendering ----------------------------------------------------------------------------
  function kpis(data) {
    let requests = 0, errors = 0, ok = 0, sum = 0, p50w = 0, p50n = 0, p95 = null, p99 = null;
    for (const v of data.versions.values()) {
      requests += v.requests; errors += v.errors; ok += v.ok; sum += v.sum;
      p50w += v.p50w; p50n += v.p50n;
      if (v.p95 !== null) p95 = Math.max(p95 ?? 0, v.p95);
      if (v.p99 !== null) p99 = Math.max(p99 ?? 0, v.p99);
    }
    const items = [["requests", "Requests", Charts.formatNumber(requests)],
                   ["errors", "Errors", `${Charts.formatNumber(errors)} (${pct(errors, requests)})`],
                   ["teams", "Consuming teams", String(data.teams.size)],
                   ["versions", "Versions called", String(data.versions.size)],
                   ["p50", "p50 latency", ms(p50n ? p50w / p50n : null)],
                   ["mean", "Mean latency", ms(ok ? sum / ok : null)],
                   ["p95", "p95 latency (worst minute)", ms(p95)],
                   ["p99", "p99 latency (worst minute)", ms(p99)]];
    $("kpis").replaceChildren(...items.map(([key, label, value]) =>
      el("div", { class: "kpi", dataset: { kpi: key } },
        el("span", { class: "kpi-value" }, value), el("span", { class: "kpi-label" }, label))));
  }

  const NUMERIC = new Set(["Requests", "Successful", "Errors", "Error rate", "p50", "Mean",
                           "p95 (worst minute)", "p99 (worst minute)"]);
  const header = (h) => el("th", { class: NUMERIC.has(h) ? "num" : undefined }, h);

  function teamTable(data) {
    const rows = [...data.teams.entries()].sort((a, b) => b[1].requests - a[1].requests);
    return el("table", { id: "summary-teams" },
      el("thead", {}, el("tr", {}, ...["Team", "Requests", "Successful", "Errors", "Error rate",
                                       "Versions", "First call", "Last call"].map(header))),
      el("tbody", {}, ...rows.map(([team, t]) => el("tr", { dataset: { team } },
        el("td", { class: "team" }, team),
        el("td", { class: "requests num" }, String(t.requests)),
        el("td", { class: "successful num" }, String(t.ok)),
        el("td", { class: "errors num" }, String(t.errors)),
        el("td", { class: "error-rate num" }, pct(t.errors, t.requests)),
        el("td", { class: "versions" }, [...t.others].sort().join(", ")),
        el("td", { class: "first" }, Share.time(t.first)),
        el("td", { class: "last" }, Share.time(t.last + 60e3 - 1))))));
  }

  function versionTable(data) {
    const rows = [...data.versions.entries()].sort((a, b) => Number(a[0]) - Number(b[0]));
    return el("table", { id: "summary-versions" },
      el("thead", {}, el("tr", {}, ...["Version", "Requests", "Errors", "Teams", "p50",
                                       "Mean", "p95 (worst minute)", "p99 (worst minute)"].map(header))),
      el("tbody", {}, ...rows.map(([version, v]) => el("tr", { dataset: { version } },
        el("td", { class: "version" }, vname(version)),
        el("td", { class: "requests num" }, String(v.requests)),
        el("td", { class: "errors num" }, String(v.errors)),
        el("td", { class: "teams" }, [...v.others].sort().join(", ")),
        el("td", { class: "p50 num", dataset: { value: p50Of(v) ?? "" } }, ms(p50Of(v))),
        el("td", { class: "mean num", dataset: { value: meanOf(v) ?? "" } }, ms(meanOf(v))),
        el("td", { class: "p95 num", dataset: { value: v.p95 ?? "" } }, ms(v.p95)),
        el("td", { class: "p99 num", dataset: { value: v.p99 ?? "" } }, ms(v.p99))))));
  }

  const byName = (a, b) => String(a[0]).localeCompare(String(b[0]), undefined, { numeric: true });

  // One color per team (and per version) in every chart, whatever else a chart leaves out.
  function colors(map) {
    return new Map([...map.keys()].sort((a, b) => byName([a], [b])).map((k, i) => [k, Charts.color(i)]));
  }

  function overTime(map, label, buckets) {
    const color = colors(map);
    return [...map.entries()].sort(byName)
      .map(([key, item]) => ({ name: label(key), color: color.get(key),
                               points: buckets.map((b) => ({ x: b, y: item.byBucket.get(b) || 0 })) }));
  }

  function render(model, rows) {
    const data = aggregate(rows);
    const per = sizeText(data.size);
    kpis(data);
    $("summary-teams-wrap").replaceChildren(teamTable(data));
    $("summary-versions-wrap").replaceChildren(versionTable(data));
    const teamsByRequests = [...data.teams.entries()].sort((a, b) => b[1].requests - a[1].requests);
    $("chart-team-totals").replaceChildren(Charts.bar({
      title: "Requests per consuming team", yLabel: "requests", integer: true,
      categories: teamsByRequests.map(([team]) => team),
      series: [{ name: "successful", color: "#1a7f37",
                 values: Object.fromEntries(teamsByRequests.map(([team, t]) => [team, t.ok])) },
               { name: "errors", color: "#c0262d",
                 values: Object.fromEntries(teamsByRequests.map(([team, t]) => [team, t.errors])) }],
    }));
    $("chart-team-requests").replaceChildren(Charts.line({
      title: `Requests per team (per ${per})`, yLabel: "requests", integer: true,
      series: overTime(data.teams, (team) => team, data.buckets) }));
    $("chart-version-requests").replaceChildren(Charts.line({
      title: `Requests per version (per ${per})`, yLabel: "requests", integer: true,
      series: overTime(data.versions, vname, data.buckets) }));
    const lat = data.buckets.map((b) => [b, data.latency.get(b)]);
    $("chart-latency").replaceChildren(Charts.line({
      title: `Latency of successful calls, ms (per ${per})`, yLabel: "ms", unit: " ms",
      emptyText: "No successful calls in this range.",
      series: [
        { name: "p50", points: lat.map(([x, l]) => ({ x, y: p50Of(l) })) },
        { name: "mean", points: lat.map(([x, l]) => ({ x, y: meanOf(l) })) },
        { name: "p95", points: lat.map(([x, l]) => ({ x, y: l.p95 })) },
        { name: "p99", points: lat.map(([x, l]) => ({ x, y: l.p99 })) },
      ] }));
    $("latency-note").textContent = data.size > 60e3
      ? `Each point covers ${per}: p50 is the per-minute medians weighted by calls, p95 and ` +
        "p99 the worst minute's."
      : "Per minute, as the gateway records them (p50, p95, p99), and the mean.";
    const teamColor = colors(data.teams);
    const errorTeams = [...data.teams.entries()].filter(([, t]) => t.errors > 0).sort(byName);
    $("chart-errors").replaceChildren(Charts.bar({
      title: `Failed calls (status ≥ 400) per team (per ${per})`, yLabel: "errors", time: true, integer: true,
      categories: data.buckets, emptyText: "No failed calls in this range.",
      series: errorTeams.map(([team, t]) => ({ name: team, color: teamColor.get(team),
                                               values: t.errBucket })) }));
    $("dashboard").hidden = false;
    $("dashboard").dataset.model = model;
    $("dashboard").dataset.rows = String(rows.length);
  }

  // --- wiring -------------------------------------------------------------------------------
  function selected() {
    return { model: $("model-picker").value, range: $("range").value };
  }

  let generation = 0;  // the latest load wins: an older answer never draws over a newer one

  async function load() {
    const mine = ++generation;
    const { model, range } = selected();
    const status = $("status");
    const dashboard = $("dashboard");
    const url = new URL(location.href);
    if (model) url.searchParams.set("model", model); else url.searchParams.delete("model");
    url.searchParams.set("range", range);
    history.replaceState(null, "", url);
    dashboard.dataset.state = "loading";
    if (!model) {
      dashboard.hidden = true;
      status.replaceChildren(el("p", { class: "muted" }, "Choose a registered model."));
      dashboard.dataset.state = "idle";
      return;
    }
    status.replaceChildren(el("p", { class: "muted" }, `Loading usage of ${model}…`));
    const query = new URLSearchParams({ model });
    if (range !== "all") query.set("since", String(Math.floor((Date.now() - Number(range)) / 60e3) * 60e3));
    try {
      const data = await Share.call("GET", `usage?${query}`);
      if (mine !== generation) return;
      const rows = data.usage || [];
      status.replaceChildren(rows.length ? el("p", { class: "muted" },
        `${model}: ${rows.length} minute rows, updated ${Share.time(Date.now())} UTC.`)
        : el("p", { class: "muted" }, `No gateway calls of ${model} in this range.`));
      render(model, rows);
      dashboard.dataset.state = "ready";
    } catch (error) {
      if (mine !== generation) return;
      dashboard.hidden = true;
      const message = error.status === 403
        ? `You may not see the usage of ${model}: it needs read permission on the model.`
        : error.status === 404 ? `No registered model named ${model}.` : error.message;
      Share.showError(status, new Error(message));
      dashboard.dataset.state = "error";
    }
  }

  document.addEventListener("DOMContentLoaded", async () => {
    await Share.nav("monitoring");
    const params = new URLSearchParams(location.search);
    const current = params.get("model") || "";
    const range = params.get("range");
    if (range && [...$("range").options].some((o) => o.value === range)) $("range").value = range;
    $("picker").addEventListener("submit", (event) => { event.preventDefault(); load(); });
    $("model-picker").addEventListener("change", load);
    $("range").addEventListener("change", load);
    $("refresh").addEventListener("click", load);
    try {
      fillPicker(await listModels(), current);
    } catch (error) {
      fillPicker([], current);
      Share.showError($("status"), error);
    }
    await load();
  });
})();
