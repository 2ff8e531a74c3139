// A result as the researcher reads it: tables of the opened aggregates and, for the shapes
// we plot, a chart (plots.js). Only what the result holds is shown: it holds only what
// disclosure control opened.

import { barChart, groupName, kmPoints, survivalChart } from "./plots.js";

function node(tag, text = null) {
  const element = document.createElement(tag);
  if (text !== null) element.textContent = text;
  return element;
}

function cell(value) {
  if (value === null || value === undefined) return "";
  if (Array.isArray(value)) return value.map(cell).join(", ");
  if (typeof value === "object") {
    return Object.entries(value).map(([k, v]) => `${k} ${cell(v)}`).join("; ");
  }
  return String(value);
}

function table(headers, rows) {
  const t = node("table");
  t.className = "result";
  const head = t.createTHead().insertRow();
  for (const h of headers) head.appendChild(node("th", h));
  const body = t.createTBody();
  for (const r of rows) {
    const tr = body.insertRow();
    for (const v of r) tr.appendChild(node("td", cell(v)));
  }
  return t;
}

/** Render `aggregates` (a result) into the result section: a table and, where it has a
 * shape we plot, a chart. */
export function renderResult(aggregates, title = "") {
  document.getElementById("result").hidden = false;
  document.getElementById("result-title").textContent = title;
  const tables = document.getElementById("result-table");
  const chart = document.getElementById("chart");
  tables.replaceChildren();
  chart.replaceChildren();
  const shown = new Set(["levels", "groups"]);
  if (Array.isArray(aggregates.probabilities) && Array.isArray(aggregates.quantiles)) {
    tables.appendChild(table(["probability", "quantile"], aggregates.probabilities.map(
      (p, i) => [p, aggregates.quantiles[i]])));
    shown.add("probabilities").add("quantiles");
  }
  if (Array.isArray(aggregates.coefficients)) {  // linear and logistic regression
    tables.appendChild(table(["term", "estimate", "SE", "t / z", "p"],
      aggregates.coefficients.map(
        (c) => [c.term, c.estimate, c.se ?? c.reason ?? "", c.t ?? c.z, c.p])));
    shown.add("coefficients");
  }
  const scalars = Object.entries(aggregates).filter(([k]) => !shown.has(k));
  if (aggregates.levels) {
    tables.appendChild(table(["level", "count"], Object.entries(aggregates.levels)));
    chart.appendChild(barChart(aggregates.levels, title));
  }
  if (Array.isArray(aggregates.groups)) {
    const groups = aggregates.groups;
    const interval = (ci) => (Array.isArray(ci) && ci.some((v) => v !== null)
      ? ci.map((v) => (v === null ? "not reached" : String(v))).join(" – ") : "");
    const median = (g) => (g.suppressed ? `not released (${g.reason ?? "disclosure control"})`
      : g.median === null || g.median === undefined ? "not reached" : g.median);
    const summary = table(["group", "n", "median", "median CI"], groups.map(
      (g) => [groupName(g), g.n, median(g), interval(g.median_ci)]));
    summary.classList.add("survival-medians");
    tables.appendChild(summary);
    const curves = groups.filter((g) => !g.suppressed && Array.isArray(g.times)
      && Array.isArray(g.survival));
    const withCi = curves.some((g) => Array.isArray(g.survival_ci));
    const withRisk = curves.some((g) => Array.isArray(g.at_risk));
    const rows = curves.flatMap((g) => kmPoints(g).map(([t, sv, ci, atRisk]) => [
      groupName(g), t, sv === null ? "withheld" : Number(sv.toFixed(4)),
      ...(withCi ? [Array.isArray(ci) ? interval(ci) : ""] : []),
      ...(withRisk ? [atRisk === null ? "withheld" : atRisk] : [])]));
    if (rows.length) {
      const times = table(["group", "t", "S(t)", ...(withCi ? ["S(t) CI"] : []),
        ...(withRisk ? ["at risk"] : [])], rows);
      times.classList.add("survival-times");
      tables.appendChild(times);
    }
    if (curves.length) chart.appendChild(survivalChart(groups, aggregates.time ?? "time"));
  }
  if (scalars.length) tables.appendChild(table(["", "value"], scalars));
}
