// Small inline-SVG charts for the /share/ pages: line charts over time and bar charts (over
// time or by category), with axes, gridlines, labels and a legend. No dependencies, no
// innerHTML: every node is built with createElementNS and text goes through textContent.
//
// Every drawn data point (a line's circle, a bar's rect) carries data-series, data-x (ms since
// the epoch for time axes, the category otherwise) and data-value, and a <title> that reads
// "series · x: value" (the browser shows it on hover; tests read it).
"use strict";

const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#0b64d8", "#d4570b", "#1a7f37", "#8250df", "#c0262d", "#0f8a8a",
                   "#9a6700", "#bf3989", "#57606a", "#3b82f6"];
  const W = 600, H = 260, M = { top: 14, right: 16, bottom: 38, left: 56 };

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== undefined && value !== null) node.setAttribute(key, String(value));
    }
    for (const child of children) {
      if (child !== undefined && child !== null) {
        node.append(child instanceof Node ? child : document.createTextNode(String(child)));
      }
    }
    return node;
  }

  const color = (index) => PALETTE[index % PALETTE.length];

  // 1, 2, 5 x 10^n steps giving about `count` ticks from 0 (or min) to max.
  function niceTicks(min, max, count, integer) {
    if (!(max > min)) max = min + 1;
    const raw = (max - min) / Math.max(1, count);
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    let step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
    if (integer) step = Math.max(1, Math.ceil(step));
    const first = Math.floor(min / step) * step;
    const ticks = [];
    for (let v = first; v <= max + step * 1e-9; v += step) ticks.push(+v.toPrecision(12));
    if (ticks[ticks.length - 1] < max) ticks.push(+(ticks[ticks.length - 1] + step).toPrecision(12));
    return ticks;
  }

  function formatNumber(value) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    const abs = Math.abs(value);
    if (abs >= 1e6) return `${+(value / 1e6).toFixed(2)}M`;
    if (abs >= 1e4) return `${+(value / 1e3).toFixed(1)}k`;
    if (Number.isInteger(value)) return String(value);
    return String(+value.toFixed(abs < 1 ? 3 : abs < 100 ? 2 : 1));
  }

  const pad = (n) => String(n).padStart(2, "0");
  // Times are shown in UTC, like the rest of the pages (Share.time).
  function formatTime(ms, span) {
    const d = new Date(ms);
    const hm = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
    const md = `${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
    if (span === undefined) return `${d.getUTCFullYear()}-${md} ${hm} UTC`;
    return span > 86400000 ? `${md} ${hm}` : hm;
  }

  function legend(series) {
    return Share.el("div", { class: "legend" }, ...series.map((s, i) => {
      const swatch = svg("svg", { width: 12, height: 12, viewBox: "0 0 12 12", "aria-hidden": "true" },
        svg("rect", { x: 1, y: 1, width: 10, height: 10, rx: 2, fill: s.color || color(i) }));
      return Share.el("span", { class: "legend-item", dataset: { series: s.name } }, swatch, s.name);
    }));
  }

  function frame(title, description) {
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title,
                              preserveAspectRatio: "xMidYMid meet" });
    root.append(svg("title", {}, description || title));
    return root;
  }

  function yAxis(root, ticks, scaleY, label) {
    const group = svg("g", { class: "y-axis" });
    for (const tick of ticks) {
      const y = scaleY(tick);
      group.append(svg("line", { x1: M.left, x2: W - M.right, y1: y, y2: y, stroke: "#e3e8ee",
                                 "stroke-width": 1, class: "grid" }));
      group.append(svg("text", { x: M.left - 6, y: y + 4, "text-anchor": "end", class: "tick" },
                       formatNumber(tick)));
    }
    group.append(svg("line", { x1: M.left, x2: M.left, y1: M.top, y2: H - M.bottom,
                               stroke: "#59636e", class: "axis" }));
    if (label) {
      group.append(svg("text", { x: 12, y: M.top + (H - M.top - M.bottom) / 2, "text-anchor": "middle",
                                 transform: `rotate(-90 12 ${M.top + (H - M.top - M.bottom) / 2})`,
                                 class: "axis-label" }, label));
    }
    root.append(group);
  }

  function xAxisLine(root) {
    root.append(svg("line", { x1: M.left, x2: W - M.right, y1: H - M.bottom, y2: H - M.bottom,
                              stroke: "#59636e", class: "axis" }));
  }

  function timeTicks(min, max, count) {
    if (max <= min) return [min];
    const steps = [60e3, 120e3, 300e3, 600e3, 900e3, 1800e3, 3600e3, 7200e3, 3 * 3600e3,
                   6 * 3600e3, 12 * 3600e3, 86400e3, 2 * 86400e3, 7 * 86400e3, 30 * 86400e3];
    const step = steps.find((s) => (max - min) / s <= count) || steps[steps.length - 1];
    const ticks = [];
    for (let t = Math.ceil(min / step) * step; t <= max; t += step) ticks.push(t);
    return ticks.length ? ticks : [min];
  }

  function point(series, x, value, xText, valueText) {
    return {
      "data-series": series, "data-x": x, "data-value": value,
      title: `${series} · ${xText}: ${valueText === undefined ? formatNumber(value) : valueText}`,
    };
  }

  function empty(title, message) {
    return Share.el("figure", { class: "chart empty", dataset: { chart: title } },
      Share.el("figcaption", {}, title),
      Share.el("p", { class: "muted" }, message || "No data in this range."));
  }

  // series: [{name, color?, points: [{x: ms, y: number|null}]}]; a null y breaks the line there.
  // options: title, yLabel, unit (after values in titles), integer (whole-number ticks), emptyText.
  function line(options) {
    const { title, series, yLabel, unit = "", integer = false } = options;
    const all = series.flatMap((s) => s.points.filter((p) => p.y !== null && p.y !== undefined));
    if (!all.length) return empty(title, options.emptyText);
    const xs = series.flatMap((s) => s.points.map((p) => p.x));
    let xMin = Math.min(...xs), xMax = Math.max(...xs);
    if (xMin === xMax) { xMin -= 60e3; xMax += 60e3; }
    const yTicks = niceTicks(0, Math.max(...all.map((p) => p.y)), 5, integer);
    const yMax = yTicks[yTicks.length - 1] || 1;
    const sx = (x) => M.left + ((x - xMin) / (xMax - xMin)) * (W - M.left - M.right);
    const sy = (y) => H - M.bottom - (y / yMax) * (H - M.top - M.bottom);
    const root = frame(title, `${title}: ${series.map((s) => s.name).join(", ")}`);
    yAxis(root, yTicks, sy, yLabel);
    xAxisLine(root);
    const span = xMax - xMin;
    for (const tick of timeTicks(xMin, xMax, 7)) {
      root.append(svg("text", { x: sx(tick), y: H - M.bottom + 16, "text-anchor": "middle",
                                class: "tick" }, formatTime(tick, span)));
    }
    root.append(svg("text", { x: W - M.right, y: H - 4, "text-anchor": "end", class: "axis-label" },
                    "time (UTC)"));
    const most = Math.max(...series.map((s) => s.points.length));
    const radius = most > 60 ? 2 : most > 30 ? 2.5 : 3.5;
    series.forEach((s, index) => {
      const stroke = s.color || color(index);
      const group = svg("g", { class: "series", "data-series": s.name });
      let path = "";
      let pen = false;
      for (const p of s.points) {
        if (p.y === null || p.y === undefined) { pen = false; continue; }
        path += `${pen ? "L" : "M"}${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`;
        pen = true;
      }
      group.append(svg("path", { d: path, fill: "none", stroke, "stroke-width": 2,
                                 "stroke-linejoin": "round" }));
      for (const p of s.points) {
        if (p.y === null || p.y === undefined) continue;
        const info = point(s.name, p.x, p.y, formatTime(p.x), `${formatNumber(p.y)}${unit}`);
        const dot = svg("circle", { cx: sx(p.x).toFixed(1), cy: sy(p.y).toFixed(1), r: radius,
                                    fill: stroke, class: "point", "data-series": info["data-series"],
                                    "data-x": info["data-x"], "data-value": info["data-value"] });
        dot.append(svg("title", {}, info.title));
        group.append(dot);
      }
      root.append(group);
    });
    return Share.el("figure", { class: "chart", dataset: { chart: title } },
      Share.el("figcaption", {}, title), root, legend(series));
  }

  // Grouped bars. categories: the x values in order (ms for a time axis, else strings);
  // series: [{name, values: Map|object x -> number}]. options.time: x values are times.
  function bar(options) {
    const { title, series, categories, yLabel, time = false, unit = "", integer = false } = options;
    const values = series.flatMap((s) => categories.map((c) => valueOf(s, c)));
    if (!categories.length || !values.some((v) => v)) return empty(title, options.emptyText);
    const yTicks = niceTicks(0, Math.max(...values), 5, integer);
    const yMax = yTicks[yTicks.length - 1] || 1;
    const sy = (y) => H - M.bottom - (y / yMax) * (H - M.top - M.bottom);
    const band = (W - M.left - M.right) / categories.length;
    const inner = band * 0.8;
    const barWidth = Math.max(1, Math.min(inner / series.length, 44));
    const groupWidth = barWidth * series.length;
    const root = frame(title, `${title}: ${series.map((s) => s.name).join(", ")}`);
    yAxis(root, yTicks, sy, yLabel);
    xAxisLine(root);
    const span = time ? categories[categories.length - 1] - categories[0] : 0;
    const labelEvery = Math.max(1, Math.ceil(categories.length / 8));
    categories.forEach((c, i) => {
      if (i % labelEvery) return;
      root.append(svg("text", { x: M.left + band * i + band / 2, y: H - M.bottom + 16,
                                "text-anchor": "middle", class: "tick" },
                      time ? formatTime(c, span) : String(c)));
    });
    if (time) {
      root.append(svg("text", { x: W - M.right, y: H - 4, "text-anchor": "end", class: "axis-label" },
                      "time (UTC)"));
    }
    series.forEach((s, index) => {
      const fill = s.color || color(index);
      const group = svg("g", { class: "series", "data-series": s.name });
      categories.forEach((c, i) => {
        const v = valueOf(s, c);
        if (!v) return;  // nothing to draw (and nothing to inspect) for a zero
        const x = M.left + band * i + (band - groupWidth) / 2 + barWidth * index;
        const info = point(s.name, c, v, time ? formatTime(c) : String(c), `${formatNumber(v)}${unit}`);
        const rect = svg("rect", { x: x.toFixed(1), y: sy(v).toFixed(1), width: barWidth.toFixed(1),
                                   height: Math.max(0.5, sy(0) - sy(v)).toFixed(1), fill,
                                   class: "bar", "data-series": info["data-series"],
                                   "data-x": info["data-x"], "data-value": info["data-value"] });
        rect.append(svg("title", {}, info.title));
        group.append(rect);
      });
      root.append(group);
    });
    return Share.el("figure", { class: "chart", dataset: { chart: title } },
      Share.el("figcaption", {}, title), root, legend(series));
  }

  function valueOf(s, c) {
    const v = s.values instanceof Map ? s.values.get(c) : s.values[c];
    return typeof v === "number" && Number.isFinite(v) ? v : 0;
  }

  return { line, bar, color, formatNumber, formatTime, niceTicks };
})();
