"""Every recipe of the analyses catalogue end to end, at the pilot's size and at 10^5 rows.

Issue 14's acceptance: each statistic of the catalogue timed as a researcher sees it, next to
the LMU/Gemelli pilot's Sharemind figures (PILOT.md, Ballhausen et al., npj Digit Med 7:280,
2024, Table 3: 0.38-0.96 s per statistic on 48 rows; the target here is < 200 ms), and at
10^5 pooled rows, with the node processes' peak memory.

Three real node processes (``dic node serve``, SQLite, mutual TLS on 127.0.0.1, standing
policies of both owners; :mod:`_deployment`, shared with ``coordination.py``). For each
``--rows`` size each of the two sites uploads one table (:data:`SPEC`: numeric age and BMI,
a follow-up time in months and a boolean death event for survival and log-rank, a 3-level
categorical ECOG, booleans smoker and diabetes, and sex, zip code and age group for
prevalence). Its ECOG, event and smoker columns follow a fixed pattern (then rows are
shuffled), so that at 24 rows per site every cell of their tables holds at least k = 5
pooled rows and the recipes open their results instead of refusing them; the other columns
are drawn from a seeded generator.

The :data:`REGISTRY` lists (label, analysis name, parameters[, pooled-row limit]): every
recipe of the catalogue, and the recipes other branches add (histogram, prevalence,
linear_regression, cox_regression), each one line. A recipe the catalogue does not know
(:func:`~dic_connector.node.analyses.catalog.catalog`) is skipped with a note in
``not_in_catalogue``; one whose limit the pooled rows exceed (Spearman's
``MAX_SPEARMAN_ROWS``, log-rank's ``MAX_ROWS``) is skipped for that size with the reason;
every other entry is checked against the table's manifest before any node starts.

Per size and recipe, each the median over ``--repeat`` submissions (default 3 when the
pooled table has fewer than 10^4 rows, else 1; one unmeasured count first warms the nodes):

* ``ms``: from a signed request's submission at node 1 (the client's clock) until the last
  of the three nodes audited ``result.open`` (the result stored, the request completed
  there; one machine, one clock): replication, agreement, loading and decrypting shares,
  the MPC program, storing the result (``ms_all``: the samples);
* ``compute_ms``: the part of it after the last node's ``compute.start`` (all three in the
  session): shares, release ledger, MPC, result; the rest is coordination;
* ``observed_ms``: until the researcher's client saw it end on all three (it polls every
  50 ms, node 1 alone until it has ended there: each poll costs the nodes CPU time);
* ``node_cpu_ms``: the CPU time the three node processes used meanwhile, polls and idle
  coordination ticks included (``node_idle_cpu_ms_per_s`` per size: what the idle nodes
  use); on a busy machine a steadier figure than wall time;
* ``status``: ``completed`` (opened), ``refused`` (completed, but disclosure control
  opened nothing; ``reason``) or the request's end status when it did not complete
  (``failed``, ``rejected``: then ``error`` and ``reason``; listed in ``errors``).

* ``legs_ms``: when the last node audited each step (:data:`LEGS`), from submission;
* ``peak_rss_mib``: the largest ``VmHWM`` of the three node processes over the recipe's
  submissions (reset before them).

Per size: ``peak_rss_mib``, each node process's peak over the size, and
``upload_peak_rss_mib`` over the upload (both sites). The tables hold the typed columns
the recipes read (``columns``): with ``--only`` a large table shares no more.

Progress lines go to stderr; the last line of stdout is one JSON object. Usage:
``.venv/bin/python benchmarks/analyses.py [--rows 24 50000] [--repeat N]
[--only count,median] [--coordination-interval-s 0.05] [--json-only] [--profile DIR]``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _harness  # noqa: F401  (this checkout's dic_connector, not the virtualenv's)
import numpy as np
import numpy.typing as npt
from _deployment import WAIT_S, BenchNodes, audit_times, bench_nodes, environment, ms

from dic_connector.client.views import ENDED
from dic_connector.dev.deployment import NODE_NAMES
from dic_connector.dev.synthetic.phame import ZIP_CODES
from dic_connector.node.analyses import catalog as catalogue
from dic_connector.node.analyses.correlation import MAX_SPEARMAN_ROWS
from dic_connector.node.analyses.cox import MAX_ROWS as MAX_COX_ROWS
from dic_connector.node.analyses.logrank import MAX_ROWS as MAX_LOGRANK_ROWS
from dic_connector.node.analyses.manifest import parse_manifest
from dic_connector.vocabulary import RequestStatus

SEX_LEVELS = ("female", "male")
AGE_GROUPS = ("18-34", "35-49", "50-64", "65-79", "80+")
AGE_GROUP_STARTS = (35, 50, 65, 80)
ZIP_LEVELS = ZIP_CODES[:10]


@dataclass(frozen=True)
class Column:
    """One typed column of the benchmark table: ``kind`` numeric (``scale`` decimals,
    declared range), boolean or categorical (``levels``)."""

    name: str
    kind: str
    scale: int = 0
    minimum: float | None = None
    maximum: float | None = None
    levels: tuple[str, ...] = ()

    def manifest(self) -> list[dict[str, Any]]:
        """Its manifest entries, as the connector's encoder writes them."""
        entry: dict[str, Any] = {"name": self.name, "kind": self.kind, "column": self.name,
                                 "scale": self.scale}
        if self.kind == "numeric":
            return [{**entry, "minimum": self.minimum, "maximum": self.maximum}]
        if self.kind == "boolean":
            return [entry]
        return [{**entry, "levels": list(self.levels)},
                *({"name": f"{self.name}={v}", "kind": "one_hot", "column": self.name,
                   "scale": 0, "level": v} for v in self.levels)]


#: The typed columns of each site's table, in matrix order.
SPEC: tuple[Column, ...] = (
    Column("age", "numeric", 0, 0, 120),
    Column("bmi", "numeric", 1, 10, 70),
    Column("follow_up", "numeric", 1, 0, 120),
    Column("event_death", "boolean"),
    Column("ecog", "categorical", levels=("0", "1", "2")),
    Column("smoker", "boolean"),
    Column("diabetes", "boolean"),
    Column("sex", "categorical", levels=SEX_LEVELS),
    Column("zip", "categorical", levels=ZIP_LEVELS),
    Column("age_group", "categorical", levels=AGE_GROUPS),
)


def manifest_of(spec: Sequence[Column]) -> dict[str, Any]:
    """The dataset manifest of a table of the typed columns ``spec``."""
    return {"columns": [entry for column in spec for entry in column.manifest()]}


MANIFEST = manifest_of(SPEC)


def table(rows: int, seed: int, spec: Sequence[Column] = SPEC) -> npt.NDArray[np.int64]:
    """One site's table, rows x the matrix columns of ``spec`` (:data:`MANIFEST` for the
    whole :data:`SPEC`), fixed point; the same values whichever columns are laid out.

    ECOG in three equal blocks, the event on every other row and smoking on every other
    pair: every cell of ECOG x event, ECOG x smoker and smoker x event holds rows / 6 or
    rows / 4 rows (at least 4 per site, 8 pooled at 24 rows per site); then a seeded
    shuffle of the rows."""
    rng = np.random.default_rng(seed)
    i = np.arange(rows)
    smoker = (i // 2) % 2
    age = rng.integers(18, 101, rows)
    bmi = np.clip(22 + 0.08 * (age - 50) + 1.5 * smoker + rng.normal(0, 3.5, rows), 15, 50)
    follow_up = np.clip(rng.exponential(24 * (1 - 0.3 * smoker)), 0.1, 60)
    typed = {
        "age": age,
        "bmi": np.rint(bmi * 10),
        "follow_up": np.rint(follow_up * 10),
        "event_death": i % 2,
        "ecog": np.searchsorted([round(rows / 3), round(2 * rows / 3)], i, side="right"),
        "smoker": smoker,
        "diabetes": rng.random(rows) < 0.04 + 0.002 * (age - 18),
        "sex": rng.integers(0, len(SEX_LEVELS), rows),
        "zip": rng.choice(len(ZIP_LEVELS), rows,
                          p=(w := 1 / np.arange(1, len(ZIP_LEVELS) + 1)) / w.sum()),
        "age_group": np.searchsorted(AGE_GROUP_STARTS, age, side="right"),
    }
    order = rng.permutation(rows)
    matrix: list[npt.NDArray[np.int64]] = []
    for column in spec:
        values = np.asarray(typed[column.name], dtype=np.int64)[order]
        matrix.append(values)
        matrix += [(values == level).astype(np.int64) for level in range(len(column.levels))]
    return np.column_stack(matrix)


@dataclass(frozen=True)
class Recipe:
    """One registry entry: what to submit, and the most pooled rows it takes (None: any),
    or is measured at (``why``: the reason, when the limit is the benchmark's, not the
    recipe's)."""

    label: str
    analysis: str
    parameters: dict[str, Any] = field(default_factory=dict)
    max_rows: int | None = None
    why: str | None = None

    def over_limit(self, pooled: int) -> str | None:
        """Why the recipe is not run on ``pooled`` rows (None: it is)."""
        if self.max_rows is None or pooled <= self.max_rows:
            return None
        if self.why is not None:
            return f"{self.analysis} is measured up to {self.max_rows:,} rows ({self.why}); " \
                   f"{pooled:,} pooled"
        return f"{self.analysis} takes at most {self.max_rows:,} rows; {pooled:,} pooled"


PROBABILITIES = ["0.1", "0.25", "0.5", "0.75", "0.9"]
#: cox_regression's per-row exact shifts (six Newton-Raphson iterations) make 10^5 rows
#: take minutes, longer than a submission's wait: measured up to this many pooled rows.
COX_BENCHMARK_ROWS = 20_000
#: Every recipe measured, in order; a new recipe is one line.
REGISTRY: tuple[Recipe, ...] = (
    Recipe("count", "count"),
    Recipe("count_smoker", "count", {"column": "smoker"}),
    Recipe("mean_age", "mean", {"column": "age"}),
    Recipe("mean_age_filtered", "mean",
           {"column": "age", "filter": {"op": ">=", "column": "age", "value": 65}}),
    Recipe("frequency_ecog", "frequency", {"column": "ecog"}),
    Recipe("median_age", "median", {"column": "age"}),
    Recipe("summary_bmi", "summary", {"column": "bmi"}),
    Recipe("quantiles_age", "quantiles", {"column": "age", "probabilities": PROBABILITIES}),
    Recipe("survival_by_smoker", "survival", {"time": "follow_up", "event": "event_death",
                                              "by": "smoker", "times": [12, 24],
                                              "median": True}),
    Recipe("logrank_by_smoker", "logrank",
           {"time": "follow_up", "event": "event_death", "by": "smoker"}, MAX_LOGRANK_ROWS),
    Recipe("contingency_ecog_smoker", "contingency", {"row": "ecog", "col": "smoker"}),
    Recipe("fisher_smoker_death", "fisher", {"row": "smoker", "col": "event_death"}),
    Recipe("chi_square_ecog_death", "chi_square", {"row": "ecog", "col": "event_death"}),
    Recipe("t_test_bmi_by_smoker", "t_test", {"column": "bmi", "by": "smoker"}),
    Recipe("correlation_pearson", "correlation", {"columns": ["age", "bmi"]}),
    Recipe("correlation_spearman", "correlation",
           {"columns": ["age", "bmi"], "method": "spearman"}, MAX_SPEARMAN_ROWS),
    # recipes of other branches (skipped until the catalogue has them)
    Recipe("histogram_age", "histogram",
           {"column": "age", "breaks": [18, 35, 50, 65, 80, 101]}),
    Recipe("prevalence_diabetes", "prevalence",
           {"numerator": "diabetes", "by": ["zip", "sex", "age_group"]}),
    Recipe("linear_regression_bmi", "linear_regression", {"y": "bmi", "x": ["age", "smoker"]}),
    Recipe("logistic_regression_death", "logistic_regression",
           {"y": "event_death", "x": ["age", "bmi"]}),
    Recipe("cox_regression_death", "cox_regression",
           {"time": "follow_up", "event": "event_death", "x": ["age", "smoker"],
            "breaks": [6, 12, 18, 24, 36, 48]}, COX_BENCHMARK_ROWS,
           f"about 20 s per 10^4 rows; the recipe takes {MAX_COX_ROWS:,}"),
)
#: Sharemind on the pilot's 48 rows (PILOT.md, Table 3), in seconds.
SHAREMIND_48_ROWS_S = {"freq": 0.38, "mean": 0.82, "median": 0.85, "quantile": 0.96}
TARGET_48_ROWS_MS = 200.0
#: The nodes' coordination tick (their default is 1 s; coordination.py's 0.05 s)
COORDINATION_INTERVAL_S = 0.05
#: How often the researcher polls (the latency is read from the nodes' audit logs, so
#: polling need not be fast, and polling fast would load the nodes)
POLL_S = 0.05
#: How long the idle nodes' CPU time is measured, per size
IDLE_S = 2.0
#: Below this many pooled rows the default is 3 submissions per recipe, else 1.
REPEAT_BELOW_ROWS = 10_000


def plan(only: Sequence[str] | None) -> tuple[list[tuple[Recipe, str]], dict[str, str]]:
    """The registry entries to run, with the catalogue's newest version of each, and the
    entries skipped because the catalogue lacks them (label -> note). ``only`` keeps the
    entries whose label or analysis name it lists. A known recipe whose parameters do not
    fit the benchmark table is a mistake in the registry: :class:`AnalysisError`."""
    known = catalogue.catalog()
    manifest = parse_manifest(MANIFEST["columns"])
    chosen = [r for r in REGISTRY if not only or r.label in only or r.analysis in only]
    run: list[tuple[Recipe, str]] = []
    missing: dict[str, str] = {}
    for recipe in chosen:
        analysis = known.get(recipe.analysis)
        if analysis is None:
            missing[recipe.label] = (f"analysis '{recipe.analysis}' is not in the catalogue "
                                     "(catalog()); skipped")
            continue
        analysis.validate(dict(recipe.parameters), manifest)
        run.append((recipe, analysis.version))
    return run, missing


def columns_read(recipes: Sequence[tuple[Recipe, str]]) -> tuple[Column, ...]:
    """The typed columns of :data:`SPEC` that ``recipes`` read, in table order (age at
    least): what is uploaded, so that ``--only`` on a large table shares no more than the
    recipes need."""
    manifest = parse_manifest(MANIFEST["columns"])
    read = {"age"}
    for recipe, version in recipes:
        analysis = catalogue.get_analysis(recipe.analysis, version)
        read.update(analysis.typed_columns(dict(recipe.parameters), manifest))
    return tuple(column for column in SPEC if column.name in read)


def say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


async def measure(bench: BenchNodes, rows: int, recipes: Sequence[tuple[Recipe, str]],
                  spec: Sequence[Column], repeat: int, quiet: bool) -> dict[str, Any]:
    """Upload both sites' tables of ``rows`` rows (the columns ``spec``) and time each
    recipe ``repeat`` times."""
    pooled = 2 * rows
    out: dict[str, Any] = {"pooled_rows": pooled, "repeat": repeat, "recipes": {},
                           "skipped": {}}
    out["peak_rss_reset"] = bench.reset_peak_rss()
    started = time.perf_counter()
    datasets = await bench.upload(f"bench_analyses_{rows}",
                                  [table(rows, i, spec) for i in range(2)], manifest_of(spec))
    out["upload_s"] = round(time.perf_counter() - started, 2)
    out["upload_peak_rss_mib"] = bench.peak_rss_mib()
    peaks = dict(out["upload_peak_rss_mib"])
    say(quiet, f"[{rows} rows per site] uploaded {pooled} rows in {out['upload_s']} s")
    study = await bench.alice.create_study(f"benchmark: analyses at {rows} rows per site")
    await submit_and_wait(bench, study.id, datasets, "count", "1", {})  # warm-up, unmeasured
    cpu = bench.cpu_s()
    await asyncio.sleep(IDLE_S)
    out["node_idle_cpu_ms_per_s"] = round(cpu_ms(cpu, bench.cpu_s()) / IDLE_S, 1)
    for recipe, version in recipes:
        too_many = recipe.over_limit(pooled)
        if too_many is not None:
            out["skipped"][recipe.label] = too_many
            say(quiet, f"[{rows} rows per site] {recipe.label}: skipped ({too_many})")
            continue
        entry = await time_recipe(bench, study.id, datasets, recipe, version, repeat)
        rss = bench.peak_rss_mib()
        entry["peak_rss_mib"] = max((v for v in rss.values() if v is not None), default=None)
        peaks = {n: max((v for v in (peaks.get(n), rss[n]) if v is not None), default=None)
                 for n in rss}
        out["recipes"][recipe.label] = entry
        reason = f" ({entry['reason']})" if "reason" in entry else ""
        say(quiet, f"[{rows} rows per site] {recipe.label}: {entry['ms']} ms (compute "
                   f"{entry['compute_ms']} ms, node CPU {entry['node_cpu_ms']} ms) "
                   f"{entry['status']}{reason}")
    out["peak_rss_mib"] = peaks
    say(quiet, f"[{rows} rows per site] peak RSS (MiB): {out['peak_rss_mib']}")
    return out


async def time_recipe(bench: BenchNodes, study_id: str, datasets: Sequence[str],
                      recipe: Recipe, version: str, repeat: int) -> dict[str, Any]:
    """Submit ``recipe`` ``repeat`` times, one after the other: the medians, the legs and
    the outcome (the first that did not complete, if one did not, else the last)."""
    samples: dict[str, list[float]] = {"ms": [], "compute_ms": [], "node_cpu_ms": [],
                                       "observed_ms": []}
    steps: list[dict[str, float]] = []
    outcomes: list[dict[str, Any]] = []
    bench.reset_peak_rss()
    for _ in range(repeat):
        cpu = bench.cpu_s()
        submitted = dt.datetime.now(dt.UTC)
        t0 = time.perf_counter()
        request_id = await submit_and_wait(bench, study_id, datasets, recipe.analysis,
                                           version, recipe.parameters)
        samples["observed_ms"].append(ms(t0))
        samples["node_cpu_ms"].append(cpu_ms(cpu, bench.cpu_s()))
        at = audit_times(bench.directory, request_id)
        done, computed = latency(at, submitted)
        steps.append(legs(at, submitted))
        samples["ms"].append(done)
        samples["compute_ms"].append(computed)
        outcomes.append(await result_status(bench, request_id))
    entry: dict[str, Any] = {"analysis": recipe.analysis, "version": version}
    for key, values in samples.items():
        known = [v for v in values if not np.isnan(v)]
        entry[key] = round(statistics.median(known), 1) if known else None
    entry["legs_ms"] = {leg: round(statistics.median(s[leg] for s in steps), 1)
                        for leg in LEGS if all(leg in s for s in steps)}
    if repeat > 1:
        entry["ms_all"] = samples["ms"]
    others = [o for o in outcomes if o["status"] != "completed"]
    entry.update(others[0] if others else outcomes[-1])
    return entry


def cpu_ms(before: Mapping[str, float | None], after: Mapping[str, float | None]) -> float:
    """The CPU time the three node processes used between two readings, in ms (NaN when
    ``/proc`` did not say)."""
    used = 0.0
    for name, start in before.items():
        end = after.get(name)
        if start is None or end is None:
            return float("nan")
        used += end - start
    return round(used * 1000, 1)


def latency(at: Mapping[str, dt.datetime], submitted: dt.datetime) -> tuple[float, float]:
    """From ``submitted`` to the last node's audited ``result.open`` (the result stored
    and the request completed there), and the part of it from the last node's
    ``compute.start`` (all three in the session): loading and decrypting shares, the
    release ledger, the MPC program, storing the result; in ms, NaN when a node did not
    open a result."""
    starts = [when for step, when in at.items() if step.endswith(" compute.start")]
    opens = [when for step, when in at.items() if step.endswith(" result.open")]
    if len(starts) < len(NODE_NAMES) or len(opens) < len(NODE_NAMES):
        return float("nan"), float("nan")
    return (round((max(opens) - submitted).total_seconds() * 1000, 1),
            round((max(opens) - max(starts)).total_seconds() * 1000, 1))


#: Steps of a request, each timed when the last node that takes it audited it: the request
#: at nodes 0 and 2, approved (by the standing policies) on all three, prepared (the plan
#: agreed by the peers), the session started, the result opened.
LEGS = {"replicated": " request.submit", "approved": " request.approved",
        "prepared": " compute.prepare", "started": " compute.start", "opened": " result.open"}


def legs(at: Mapping[str, dt.datetime], submitted: dt.datetime) -> dict[str, float]:
    """ms from ``submitted`` until each of :data:`LEGS` was audited by the last node that
    audited it (steps no node audited are left out)."""
    out: dict[str, float] = {}
    for leg, action in LEGS.items():
        times = [when for step, when in at.items() if step.endswith(action)]
        if times:
            out[leg] = round((max(times) - submitted).total_seconds() * 1000, 1)
    return out


async def submit_and_wait(bench: BenchNodes, study_id: str, datasets: Sequence[str],
                          analysis: str, version: str, parameters: Mapping[str, Any]) -> str:
    """Submit a signed request at node 1 and wait until it has ended on all three nodes
    (polling node 1 alone until it has ended there: each poll costs the nodes CPU time)."""
    request_id = await bench.alice.submit(study_id, analysis, datasets, parameters,
                                          analysis_version=version)
    await bench.alice.wait(request_id, until=ENDED, nodes=(1,), timeout_s=WAIT_S)
    await bench.alice.wait(request_id, until=ENDED, timeout_s=WAIT_S)
    return request_id


async def result_status(bench: BenchNodes, request_id: str) -> dict[str, Any]:
    """``status`` (completed, refused, or the end status of a request that did not
    complete) and ``reason``, as node 1 reports them."""
    request = await bench.alice.status(request_id)
    assert request is not None  # it has ended there
    if request.status is not RequestStatus.COMPLETED:
        return {"status": request.status.value, "error": True,
                "reason": request.status_reason or "no reason given"}
    aggregates = (await bench.alice.result(request_id, nodes=(1,))).aggregates
    if aggregates.get("suppressed"):
        return {"status": "refused", "reason": str(aggregates.get("reason", ""))}
    return {"status": "completed"}


async def run(rows_list: Sequence[int], directory: Path, repeat: int | None,
              only: Sequence[str] | None, quiet: bool,
              interval_s: float = COORDINATION_INTERVAL_S,
              profile_dir: Path | None = None) -> dict[str, Any]:
    recipes, missing = plan(only)
    spec = columns_read(recipes)
    out: dict[str, Any] = {"benchmark": "analyses", **environment(),
                           "rows_per_site": list(rows_list),
                           "registry": [r.label for r, _ in recipes],
                           "columns": [c.name for c in spec],
                           "not_in_catalogue": missing,
                           "sharemind_48_rows_s": SHAREMIND_48_ROWS_S,
                           "target_48_rows_ms": TARGET_48_ROWS_MS,
                           "coordination_interval_s": interval_s, "sizes": {}}
    for label, note in missing.items():
        say(quiet, f"{label}: {note}")
    async with bench_nodes(directory, {"coordination_interval_s": interval_s},
                           POLL_S, profile_dir) as bench:
        for rows in rows_list:
            reps = repeat or (3 if 2 * rows < REPEAT_BELOW_ROWS else 1)
            started = time.perf_counter()
            size = await measure(bench, rows, recipes, spec, reps, quiet)
            size["total_s"] = round(time.perf_counter() - started, 1)
            out["sizes"][str(rows)] = size
    out["errors"] = [f"{rows}: {label}" for rows, size in out["sizes"].items()
                     for label, entry in size["recipes"].items() if entry.get("error")]
    out["load_average_1min_end"] = environment()["load_average_1min"]
    out["client_peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                       / 1024, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[24, 50_000],
                        help="rows per site (two sites): 24 is the pilot's 48 pooled")
    parser.add_argument("--repeat", type=int, default=None,
                        help="submissions per recipe, the median reported (default 3 below "
                             f"{REPEAT_BELOW_ROWS:,} pooled rows, else 1)")
    parser.add_argument("--only", default=None,
                        help="comma-separated labels or analysis names of the registry")
    parser.add_argument("--coordination-interval-s", type=float,
                        default=COORDINATION_INTERVAL_S, help="the nodes' coordination tick")
    parser.add_argument("--json-only", action="store_true", help="no progress lines")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="run the nodes under cProfile, writing DIR/<node>.prof (the "
                             "upload included; profiling slows them, so the times are not "
                             "comparable)")
    args = parser.parse_args()
    only = [name.strip() for name in args.only.split(",")] if args.only else None
    with tempfile.TemporaryDirectory(prefix="dic-bench-") as directory:
        out = asyncio.run(run(args.rows, Path(directory), args.repeat, only, args.json_only,
                              args.coordination_interval_s, args.profile))
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
