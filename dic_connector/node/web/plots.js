// Plots of opened aggregates, drawn as SVG in plain JavaScript (no library).
//
// - barChart: a frequency result {"levels": {level: count | "<k" | "suppressed"}}; a level
//   that was not opened gets no bar, only its label, so nothing is drawn that was not opened.
// - survivalChart: a Kaplan-Meier result {"groups": [{"group", "n", "times", "survival",
//   "median", "median_ci"}]}, each group a right-continuous step function starting at
//   S(0) = 1 and dropping at each event time (Kaplan & Meier, JASA 53:457, 1958).
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

/** The vertices of a Kaplan-Meier step curve: (0, 1), then at each time a horizontal
 * segment to it and a vertical drop to its survival. */
export function stepVertices(times, survival) {
  const out = [[0, 1]];
  let last = 1;
  times.forEach((t, i) => {
    out.push([t, last]);
    out.push([t, survival[i]]);
    last = survival[i];
  });
  return out;
}

/** SVG Kaplan-Meier curves, one step line per group, with the median in the legend. */
export function survivalChart(groups, xLabel = "time") {
  const tMax = Math.max(1, ...groups.flatMap((g) => g.times)) * 1.05;
  const { svg, plot } = frame("survival", tMax, 1);
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
  groups.forEach((group, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const vertices = stepVertices(group.times, group.survival);
    const d = vertices.map(([t, s], j) => `${j ? "L" : "M"}${x(t).toFixed(2)},${y(s).toFixed(2)}`)
      .join(" ");
    svg.appendChild(el("path", { d, fill: "none", stroke: colour, "stroke-width": 2,
      class: "curve", "data-group": group.group }));
    const ly = plot.y + 16 + i * 16;
    svg.appendChild(el("line", { x1: plot.x + plot.w - 200, x2: plot.x + plot.w - 180, y1: ly - 4,
      y2: ly - 4, stroke: colour, "stroke-width": 2 }));
    const median = group.median === null || group.median === undefined ? "not reached"
      : String(group.median);
    svg.appendChild(el("text", { x: plot.x + plot.w - 175, y: ly, "font-size": 11 },
      `${group.group} (n = ${group.n}, median ${median})`));
  });
  return svg;
}
