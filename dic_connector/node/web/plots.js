// Plots of opened aggregates, drawn as SVG in plain JavaScript (no library).
//
// - barChart: a frequency result {"levels": {level: count | "<k" | "suppressed"}}; a level
//   that was not opened gets no bar, only its label, so nothing is drawn that was not opened.
// - survivalChart: a Kaplan-Meier result {"groups": [{"group", "n", "times", "survival",
//   "median", "median_ci", and where released "survival_ci", "at_risk"}]}, each group a
//   right-continuous step function starting at S(0) = 1 and known only at the requested
//   times, held until the next one (Kaplan & Meier, JASA 53:457, 1958); a withheld S(t) is
//   a gap, its pointwise CI a shaded band, the numbers at risk a row under the axes.
//
// Each chart records its plot area and axis ranges in data-* attributes, so a test can map
// the drawn coordinates back to data.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 560;
const HEIGHT = 300;
const MARGIN = { left: 56, right: 16, top: 16, bottom: 48 };
const COLOURS = ["#1f5fa8", "#c0392b", "#27864a", "#8e44ad", "#d27b0c", "#2c7f8f"];

function el(name, attributes = {}, text = null) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

function frame(kind, xMax, yMax) {
  const plot = { x: MARGIN.left, y: MARGIN.top, w: WIDTH - MARGIN.left - MARGIN.right,
    h: HEIGHT - MARGIN.top - MARGIN.bottom };
  const svg = el("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, width: WIDTH, height: HEIGHT,
    class: `chart ${kind}`, role: "img", "data-plot": `${plot.x},${plot.y},${plot.w},${plot.h}`,
    "data-x-max": xMax, "data-y-max": yMax });
  svg.appendChild(el("rect", { x: plot.x, y: plot.y, width: plot.w, height: plot.h,
    fill: "#ffffff", stroke: "#9aa5b1" }));
  return { svg, plot };
}

function niceTicks(max, count = 5) {
  if (max <= 0) return [0];
  const raw = max / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
  const ticks = [];
  for (let t = 0; t <= max + 1e-9; t += step) ticks.push(Number(t.toFixed(10)));
  return ticks;
}

/** SVG bar chart of a frequency result's levels. */
export function barChart(levels, title = "") {
  const entries = Object.entries(levels);
  const counts = entries.map(([, v]) => (typeof v === "number" ? v : 0));
  const yMax = Math.max(1, ...counts) * 1.1;
  const { svg, plot } = frame("bars", entries.length, yMax);
  const y = (v) => plot.y + plot.h - (v / yMax) * plot.h;
  for (const tick of niceTicks(yMax)) {
    svg.appendChild(el("line", { x1: plot.x - 4, x2: plot.x, y1: y(tick), y2: y(tick),
      stroke: "#555" }));
    svg.appendChild(el("text", { x: plot.x - 6, y: y(tick) + 4, "text-anchor": "end",
      "font-size": 11 }, String(tick)));
  }
  const slot = plot.w / Math.max(1, entries.length);
  entries.forEach(([level, value], i) => {
    const cx = plot.x + slot * (i + 0.5);
    if (typeof value === "number") {
      svg.appendChild(el("rect", { x: cx - slot * 0.35, y: y(value), width: slot * 0.7,
        height: plot.y + plot.h - y(value), fill: COLOURS[0], class: "bar",
        "data-level": level, "data-count": value }));
      svg.appendChild(el("text", { x: cx, y: y(value) - 4, "text-anchor": "middle",
        "font-size": 12 }, String(value)));
    } else {
      svg.appendChild(el("text", { x: cx, y: plot.y + plot.h - 6, "text-anchor": "middle",
        "font-size": 12, fill: "#777", class: "withheld", "data-level": level }, value));
    }
    svg.appendChild(el("text", { x: cx, y: plot.y + plot.h + 18, "text-anchor": "middle",
      "font-size": 12 }, level));
  });
  if (title) {
    svg.appendChild(el("text", { x: plot.x + plot.w / 2, y: HEIGHT - 8, "text-anchor": "middle",
      "font-size": 12 }, title));
  }
  svg.appendChild(el("text", { x: 14, y: plot.y + plot.h / 2, "text-anchor": "middle",
    "font-size": 12, transform: `rotate(-90 14 ${plot.y + plot.h / 2})` }, "count"));
  return svg;
}

/** A group's released points in time order: [[t, S(t) | null, [lower, upper] | null,
 * at risk | null], ...] (the result lists them in the order the researcher asked). */
export function kmPoints(group) {
  const ci = Array.isArray(group.survival_ci) ? group.survival_ci : [];
  const atRisk = Array.isArray(group.at_risk) ? group.at_risk : [];
  return group.times.map((t, i) => [Number(t), group.survival[i] ?? null, ci[i] ?? null,
    atRisk[i] ?? null]).sort((a, b) => a[0] - b[0]);
}

/** The pieces of a Kaplan-Meier step curve: from (0, 1), at each released time a
 * horizontal segment to it and a vertical drop to its S(t). A withheld S(t) (null) ends
 * the piece at that time, and the next released time starts a new one at its own S(t):
 * the curve between them is unknown, so it is a gap, never a drop to 0. */
export function stepPieces(times, survival) {
  const pieces = [];
  let piece = [[0, 1]];
  let last = 1;
  times.forEach((t, i) => {
    const s = survival[i];
    if (s === null || s === undefined) {
      if (piece.length) {
        if (last !== null) piece.push([t, last]);
        pieces.push(piece);
      }
      piece = [];
      last = null;
      return;
    }
    if (last !== null) piece.push([t, last]);
    piece.push([t, s]);
    last = s;
  });
  if (piece.length) pieces.push(piece);
  return pieces;
}

/** The vertices of a step curve's pieces, one list (the curve when nothing is withheld). */
export function stepVertices(times, survival) {
  return stepPieces(times, survival).flat();
}

/** A group as the chart names it: its label, or "all" for the pooled curve (no groups). */
export function groupName(group) {
  return group.group === null || group.group === undefined ? "all" : String(group.group);
}

function interval(ci) {
  if (!Array.isArray(ci) || ci.every((v) => v === null)) return "";
  const [lower, upper] = ci;
  return `CI ${lower === null ? "?" : lower}–${upper === null ? "not reached" : upper}`;
}

const AT_RISK_ROW = 16;

/** SVG Kaplan-Meier curves, one step line per group (gaps where S(t) is withheld), its
 * pointwise confidence band shaded where the result has `survival_ci` (each interval held
 * until the next time, like the curve), the median and its interval in the legend, and the
 * numbers at risk in rows under the axes where it has `at_risk`. Refused groups are named
 * in the legend only. */
export function survivalChart(groups, xLabel = "time") {
  const drawn = groups.filter((g) => !g.suppressed && Array.isArray(g.times)
    && Array.isArray(g.survival));
  const refused = groups.filter((g) => !drawn.includes(g));
  const atRiskRows = drawn.filter((g) => Array.isArray(g.at_risk)
    && g.at_risk.length === g.times.length && g.times.length > 0);
  const extra = atRiskRows.length ? AT_RISK_ROW * (atRiskRows.length + 1) + 8 : 0;
  const tMax = Math.max(1, ...drawn.flatMap((g) => g.times.map(Number))) * 1.05;
  const { svg, plot } = frame("survival", tMax, 1);
  if (extra) {
    svg.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT + extra}`);
    svg.setAttribute("height", HEIGHT + extra);
  }
  const x = (t) => plot.x + (t / tMax) * plot.w;
  const y = (s) => plot.y + plot.h - s * plot.h;
  for (const tick of niceTicks(tMax)) {
    svg.appendChild(el("line", { x1: x(tick), x2: x(tick), y1: plot.y + plot.h,
      y2: plot.y + plot.h + 4, stroke: "#555" }));
    svg.appendChild(el("text", { x: x(tick), y: plot.y + plot.h + 16, "text-anchor": "middle",
      "font-size": 11 }, String(tick)));
  }
  for (const tick of [0, 0.25, 0.5, 0.75, 1]) {
    svg.appendChild(el("line", { x1: plot.x, x2: plot.x + plot.w, y1: y(tick), y2: y(tick),
      stroke: "#e3e7eb" }));
    svg.appendChild(el("text", { x: plot.x - 6, y: y(tick) + 4, "text-anchor": "end",
      "font-size": 11 }, tick.toFixed(2)));
  }
  svg.appendChild(el("text", { x: plot.x + plot.w / 2, y: HEIGHT - 8, "text-anchor": "middle",
    "font-size": 12 }, xLabel));
  svg.appendChild(el("text", { x: 14, y: plot.y + plot.h / 2, "text-anchor": "middle",
    "font-size": 12, transform: `rotate(-90 14 ${plot.y + plot.h / 2})` }, "survival"));
  svg.appendChild(el("line", { x1: plot.x, x2: plot.x + plot.w, y1: y(0.5), y2: y(0.5),
    stroke: "#9aa5b1", "stroke-dasharray": "4 4", class: "median-line" }));
  const path = (vertices) => vertices.map(([t, s], j) =>
    `${j ? "L" : "M"}${x(t).toFixed(2)},${y(s).toFixed(2)}`).join(" ");
  drawn.forEach((group, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const points = kmPoints(group);
    const rectangles = [];
    points.forEach(([t, , ci], j) => {
      if (!Array.isArray(ci) || j + 1 >= points.length) return;  // the last: no next time
      const [lower, upper] = ci.map(Number);
      const next = points[j + 1][0];
      rectangles.push(`${path([[t, upper], [next, upper], [next, lower], [t, lower]])} Z`);
    });
    if (rectangles.length) {
      svg.appendChild(el("path", { d: rectangles.join(" "), fill: colour, "fill-opacity": 0.18,
        stroke: "none", class: "band", "data-group": groupName(group) }));
    }
    const pieces = stepPieces(points.map((p) => p[0]), points.map((p) => p[1]));
    svg.appendChild(el("path", { d: pieces.map(path).join(" "), fill: "none", stroke: colour,
      "stroke-width": 2, class: "curve", "data-group": groupName(group) }));
    for (const [t, s] of points) {  // the released points themselves
      if (s === null) continue;
      svg.appendChild(el("circle", { cx: x(t).toFixed(2), cy: y(s).toFixed(2), r: 2.5,
        fill: colour, class: "point", "data-group": groupName(group), "data-time": t,
        "data-survival": s }));
    }
    if (group.median !== null && group.median !== undefined) {  // S = 1/2 first reached
      const m = Number(group.median);
      if (Array.isArray(group.median_ci) && group.median_ci.some((v) => v !== null)) {
        const [lower, upper] = group.median_ci;
        const end = upper ?? Math.max(m, ...points.map((p) => p[0]));
        svg.appendChild(el("line", { x1: x(lower ?? m), x2: x(end), y1: y(0.5), y2: y(0.5),
          stroke: colour, "stroke-width": 5, "stroke-opacity": 0.35, class: "median-ci",
          "data-group": groupName(group) }));
      }
      svg.appendChild(el("line", { x1: x(m), x2: x(m), y1: y(0), y2: y(0.5), stroke: colour,
        "stroke-dasharray": "2 3", class: "median", "data-group": groupName(group),
        "data-median": m }));
    }
    const ly = plot.y + 16 + i * 16;
    svg.appendChild(el("line", { x1: plot.x + plot.w - 290, x2: plot.x + plot.w - 270,
      y1: ly - 4, y2: ly - 4, stroke: colour, "stroke-width": 2 }));
    const median = group.median === null || group.median === undefined ? "not reached"
      : String(group.median);
    const ci = interval(group.median_ci);
    svg.appendChild(el("text", { x: plot.x + plot.w - 265, y: ly, "font-size": 11,
      class: "legend" }, `${groupName(group)} (n = ${group.n}, median ${median}${ci ? `, ${ci}` : ""})`));
  });
  refused.forEach((group, i) => {
    svg.appendChild(el("text", { x: plot.x + plot.w - 265, y: plot.y + 16 + (drawn.length + i) * 16,
      "font-size": 11, fill: "#777", class: "legend refused" },
    `${groupName(group)}: not released`));
  });
  if (atRiskRows.length) {
    const top = HEIGHT + 4;
    svg.appendChild(el("text", { x: 4, y: top + AT_RISK_ROW - 4, "font-size": 11,
      "font-weight": "bold" }, "Number at risk"));
    atRiskRows.forEach((group, row) => {
      const colour = COLOURS[drawn.indexOf(group) % COLOURS.length];
      const ry = top + AT_RISK_ROW * (row + 2) - 4;
      svg.appendChild(el("text", { x: plot.x - 6, y: ry, "text-anchor": "end",
        "font-size": 11, fill: colour }, groupName(group)));
      for (const [t, , , count] of kmPoints(group)) {
        svg.appendChild(el("text", { x: x(t), y: ry, "text-anchor": "middle", "font-size": 11,
          fill: colour, class: "at-risk", "data-group": groupName(group), "data-time": t,
          "data-count": count === null ? "" : count }, count === null ? "–" : String(count)));
      }
    });
  }
  return svg;
}
