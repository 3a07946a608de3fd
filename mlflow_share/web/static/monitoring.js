// The monitoring dashboard: who calls a registered model through the gateway, how often, how
// fast and how often it fails. The numbers (requests, errors, mean, p50, p95, p99: overall, per
// version and per calling team) are the server's, from GET usage/summary?model=NAME[&since=MS]
// [&by=version|team], which adds the calls' latency histograms: percentiles over exactly the
// calls of the range, never averages of per-minute percentiles. The charts over time are drawn
// from GET usage?model=NAME[&since=MS] (rows per version, team and minute: requests, errors,
// latency_sum_ms, p50_ms, p95_ms, p99_ms).
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

  // Per bucket of time, from the rows: requests per team and version, failed calls per team,
  // and the latency points of the chart. Each team's and version's totals are the summary's.
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
    const blank = () => ({ requests: 0, errors: 0, first: null, last: null, byBucket: new Map(),
                           errBucket: new Map(), others: new Set() });
    for (const row of rows) {
      const bucket = at(row);
      const ok = Math.max(0, row.requests - row.errors);
      for (const [map, key, other] of [[teams, row.team, vname(row.version)],
                                       [versions, row.version, row.team]]) {
        if (!map.has(key)) map.set(key, blank());
        const item = map.get(key);
        item.requests += row.requests;
        item.errors += row.errors;
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
  // summary: {all: row|undefined, versions: Map(version -> row), teams: Map(team -> row)}, each
  // row {requests, errors, mean_ms, p50_ms, p95_ms, p99_ms} as the server computed it.
  function kpis(summary) {
    const all = summary.all || { requests: 0, errors: 0, mean_ms: null, p50_ms: null, p95_ms: null, p99_ms: null };
    const items = [["requests", "Requests", Charts.formatNumber(all.requests)],
                   ["errors", "Errors", `${Charts.formatNumber(all.errors)} (${pct(all.errors, all.requests)})`],
                   ["teams", "Consuming teams", String(summary.teams.size)],
                   ["versions", "Versions called", String(summary.versions.size)],
                   ["mean", "Mean latency", ms(all.mean_ms), all.mean_ms],
                   ["p50", "p50 latency", ms(all.p50_ms), all.p50_ms],
                   ["p95", "p95 latency", ms(all.p95_ms), all.p95_ms],
                   ["p99", "p99 latency", ms(all.p99_ms), all.p99_ms]];
    $("kpis").replaceChildren(...items.map(([key, label, value, raw]) =>
      el("div", { class: "kpi", dataset: raw === undefined ? { kpi: key } : { kpi: key, value: raw ?? "" } },
        el("span", { class: "kpi-value" }, value), el("span", { class: "kpi-label" }, label))));
  }

  const LATENCIES = ["Mean (ms)", "p50 (ms)", "p95 (ms)", "p99 (ms)"];
  const NUMERIC = new Set(["Requests", "Successful", "Errors", "Error rate", ...LATENCIES]);
  const header = (h) => el("th", { class: NUMERIC.has(h) ? "num" : undefined }, h);

  function latencyCells(row) {
    return [["mean", row.mean_ms], ["p50", row.p50_ms], ["p95", row.p95_ms], ["p99", row.p99_ms]]
      .map(([name, value]) => el("td", { class: `${name} num`, dataset: { value: value ?? "" },
                                         title: ms(value) }, Charts.formatNumber(value)));
  }

  function teamTable(summary, data) {
    const rows = [...summary.teams.entries()].sort((a, b) => b[1].requests - a[1].requests || byName(a, b));
    return el("table", { id: "summary-teams" },
      el("thead", {}, el("tr", {}, ...["Team", "Requests", "Successful", "Errors", "Error rate",
                                       ...LATENCIES, "Versions", "First call", "Last call"].map(header))),
      el("tbody", {}, ...rows.map(([team, t]) => {
        const seen = data.teams.get(team);
        return el("tr", { dataset: { team } },
          el("td", { class: "team" }, team),
          el("td", { class: "requests num" }, String(t.requests)),
          el("td", { class: "successful num" }, String(t.requests - t.errors)),
          el("td", { class: "errors num" }, String(t.errors)),
          el("td", { class: "error-rate num" }, pct(t.errors, t.requests)),
          ...latencyCells(t),
          el("td", { class: "versions" }, seen ? [...seen.others].sort(byText).join(", ") : ""),
          el("td", { class: "first" }, seen ? Share.time(seen.first) : ""),
          el("td", { class: "last" }, seen ? Share.time(seen.last + 60e3 - 1) : ""));
      })));
  }

  function versionTable(summary, data) {
    const rows = [...summary.versions.entries()].sort((a, b) => Number(a[0]) - Number(b[0]));
    return el("table", { id: "summary-versions" },
      el("thead", {}, el("tr", {}, ...["Version", "Requests", "Errors", "Error rate", ...LATENCIES,
                                       "Teams"].map(header))),
      el("tbody", {}, ...rows.map(([version, v]) => {
        const seen = data.versions.get(version);
        return el("tr", { dataset: { version } },
          el("td", { class: "version" }, vname(version)),
          el("td", { class: "requests num" }, String(v.requests)),
          el("td", { class: "errors num" }, String(v.errors)),
          el("td", { class: "error-rate num" }, pct(v.errors, v.requests)),
          ...latencyCells(v),
          el("td", { class: "teams" }, seen ? [...seen.others].sort(byText).join(", ") : ""));
      })));
  }

  const byText = (a, b) => String(a).localeCompare(String(b), undefined, { numeric: true });
  const byName = (a, b) => byText(a[0], b[0]);

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

  function render(model, rows, summary) {
    const data = aggregate(rows);
    const per = sizeText(data.size);
    kpis(summary);
    $("summary-teams-wrap").replaceChildren(teamTable(summary, data));
    $("summary-versions-wrap").replaceChildren(versionTable(summary, data));
    const teamsByRequests = [...data.teams.entries()].sort((a, b) => b[1].requests - a[1].requests);
    $("chart-team-totals").replaceChildren(Charts.bar({
      title: "Requests per consuming team", yLabel: "requests", integer: true,
      categories: teamsByRequests.map(([team]) => team),
      series: [{ name: "successful", color: "#1a7f37",
                 values: Object.fromEntries(teamsByRequests.map(([team, t]) => [team, t.requests - t.errors])) },
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
    $("latency-note").textContent = "The summary's latencies are over exactly the successful calls " +
      "of the range. " + (data.size > 60e3
      ? `In the chart each point covers ${per}: p50 is the per-minute medians weighted by calls, ` +
        "p95 and p99 the worst minute's."
      : "The chart shows each minute as the gateway recorded it (p50, p95, p99), and the mean.");
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
    const by = (name) => { const q = new URLSearchParams(query); if (name) q.set("by", name); return q; };
    try {
      const [data, all, versions, teams] = await Promise.all([
        Share.call("GET", `usage?${query}`), Share.call("GET", `usage/summary?${by()}`),
        Share.call("GET", `usage/summary?${by("version")}`), Share.call("GET", `usage/summary?${by("team")}`)]);
      if (mine !== generation) return;
      const rows = data.usage || [];
      const summary = { all: all.summary[0],
                        versions: new Map(versions.summary.map((v) => [String(v.version), v])),
                        teams: new Map(teams.summary.map((t) => [String(t.team), t])) };
      status.replaceChildren(rows.length ? el("p", { class: "muted" },
        `${model}: ${rows.length} minute rows, updated ${Share.time(Date.now())} UTC.`)
        : el("p", { class: "muted" }, `No gateway calls of ${model} in this range.`));
      render(model, rows, summary);
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
