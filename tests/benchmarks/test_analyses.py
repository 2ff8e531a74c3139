"""``benchmarks/analyses.py`` without node processes: its registry covers the catalogue and
fits its table, the table's cells are large enough to open at the pilot's size, and the
latency is read right from audit times (the end-to-end run itself is the benchmark)."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest

from dic_connector.errors import AnalysisError
from dic_connector.node.analyses.catalog import catalog, get_analysis
from dic_connector.node.analyses.manifest import parse_manifest
from dic_connector.node.coordination.verify import policy_columns
from dic_connector.vocabulary import RequestStatus

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import _harness

        yield _harness.load_module(BENCHMARKS / "analyses.py", "bench_analyses")
    finally:
        sys.path.remove(str(BENCHMARKS))
        sys.modules.pop("bench_analyses", None)


def test_the_registry_has_every_recipe_of_the_catalogue(bench: ModuleType) -> None:
    assert set(catalog()) <= {recipe.analysis for recipe in bench.REGISTRY}
    labels = [recipe.label for recipe in bench.REGISTRY]
    assert len(labels) == len(set(labels))


def test_known_entries_fit_the_table_and_unknown_ones_are_skipped(bench: ModuleType) -> None:
    recipes, missing = bench.plan(None)
    known = catalog()
    assert [r.label for r, _ in recipes] == [r.label for r in bench.REGISTRY
                                             if r.analysis in known]
    assert all(version == known[r.analysis].version for r, version in recipes)
    assert set(missing) == {r.label for r in bench.REGISTRY if r.analysis not in known}
    assert all("not in the catalogue" in note for note in missing.values())
    chosen, _ = bench.plan(["median", "count_smoker"])
    assert [r.label for r, _ in chosen] == ["count_smoker", "median_age"]


def test_a_registry_entry_that_does_not_fit_the_table_is_refused(
        bench: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = bench.Recipe("median_ecog", "median", {"column": "ecog"})
    monkeypatch.setattr(bench, "REGISTRY", (*bench.REGISTRY, wrong))
    with pytest.raises(AnalysisError, match="ecog"):
        bench.plan(None)


def test_the_table_matches_its_manifest_and_opens_at_the_pilots_size(
        bench: ModuleType) -> None:
    names = [entry["name"] for entry in bench.MANIFEST["columns"]]
    sites = [bench.table(24, seed) for seed in (0, 1)]
    assert all(t.shape == (24, len(names)) for t in sites)
    pooled = np.vstack(sites)
    col = {name: pooled[:, j] for j, name in enumerate(names)}
    for column in bench.SPEC:
        for index, level in enumerate(column.levels):  # one-hot = the level index
            assert np.array_equal(col[f"{column.name}={level}"], col[column.name] == index)
    for site in sites:  # each site contributes >= k = 5 rows to each smoker group
        assert np.bincount(site[:, names.index("smoker")]).min() >= 5
    for a, b in (("ecog", "event_death"), ("ecog", "smoker"), ("smoker", "event_death")):
        cells = np.unique(np.column_stack([col[a], col[b]]), axis=0, return_counts=True)[1]
        assert len(cells) == (3 if a == "ecog" else 2) * 2 and cells.min() >= 5
    assert col["age"].min() >= 18 and col["age"].max() <= 120
    assert np.array_equal(bench.table(24, 0), sites[0])  # seeded


def test_latency_runs_to_the_last_nodes_result(bench: ModuleType) -> None:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def at(ms: float) -> dt.datetime:
        return t0 + dt.timedelta(milliseconds=ms)

    times = {"node-1 request.submit": at(5)}
    for i, (start, opened) in enumerate(((100, 300), (120, 310), (110, 450))):
        times[f"node-{i} compute.start"] = at(start)
        times[f"node-{i} result.open"] = at(opened)
    assert bench.latency(times, t0) == (450.0, 330.0)
    del times["node-2 result.open"]
    assert all(math.isnan(v) for v in bench.latency(times, t0))


def test_a_recipe_over_its_row_limit_is_skipped(bench: ModuleType) -> None:
    limits = {r.label: r.max_rows for r in bench.REGISTRY if r.max_rows is not None}
    assert set(limits) >= {"correlation_spearman", "logrank_by_smoker"}
    spearman = next(r for r in bench.REGISTRY if r.label == "correlation_spearman")
    assert spearman.over_limit(48) is None
    assert spearman.over_limit(spearman.max_rows) is None
    assert "at most 32,768 rows; 100,000 pooled" in spearman.over_limit(100_000)
    assert bench.Recipe("count", "count").over_limit(10**9) is None
    cox = next(r for r in bench.REGISTRY if r.label == "cox_regression_death")
    assert cox.over_limit(48) is None
    assert "measured up to 20,000 rows (about 20 s" in cox.over_limit(100_000)


def test_the_tables_hold_the_columns_the_recipes_read(bench: ModuleType) -> None:
    recipes, _ = bench.plan(["survival", "count"])
    spec = bench.columns_read(recipes)
    assert [c.name for c in spec] == ["age", "follow_up", "event_death", "smoker"]
    names = [entry["name"] for entry in bench.MANIFEST["columns"]]
    part = [entry["name"] for entry in bench.manifest_of(spec)["columns"]]
    full = bench.table(30, 3)
    assert np.array_equal(bench.table(30, 3, spec), full[:, [names.index(n) for n in part]])
    everything, _ = bench.plan(None)
    assert {c.name for c in bench.columns_read(everything)} >= {
        "age", "bmi", "follow_up", "event_death", "ecog", "smoker"}


def test_legs_are_timed_by_the_last_node(bench: ModuleType) -> None:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    times = {"node-1 request.submit": t0 + dt.timedelta(milliseconds=4),
             "node-0 request.submit": t0 + dt.timedelta(milliseconds=40),
             "node-2 request.submit": t0 + dt.timedelta(milliseconds=90),
             "node-0 result.open": t0 + dt.timedelta(milliseconds=700)}
    assert bench.legs(times, t0) == {"replicated": 90.0, "opened": 700.0}


class _Alice:
    """What result_status asks of a researcher: a request's status, its result."""

    def __init__(self, status: RequestStatus, aggregates: dict[str, object]) -> None:
        self.state = SimpleNamespace(status=status, status_reason="the MPC session broke")
        self.aggregates = aggregates

    async def status(self, request_id: str) -> SimpleNamespace:
        return self.state

    async def result(self, request_id: str, nodes: tuple[int, ...]) -> SimpleNamespace:
        return SimpleNamespace(aggregates=self.aggregates)


@pytest.mark.parametrize(("status", "aggregates", "expected"), [
    (RequestStatus.COMPLETED, {"n": 48}, {"status": "completed"}),
    (RequestStatus.COMPLETED, {"suppressed": True, "reason": "n < k"},
     {"status": "refused", "reason": "n < k"}),
    (RequestStatus.FAILED, {}, {"status": "failed", "error": True,
                                "reason": "the MPC session broke"}),
])
def test_a_result_is_completed_refused_or_an_error(
        bench: ModuleType, status: RequestStatus, aggregates: dict[str, object],
        expected: dict[str, object]) -> None:
    fake = SimpleNamespace(alice=_Alice(status, aggregates))
    assert asyncio.run(bench.result_status(fake, "r")) == expected


def test_a_standing_policy_names_every_column_each_recipe_reads(bench: ModuleType) -> None:
    """What a data owner's policy must list (``policy_columns``) covers the typed columns
    every recipe of the registry reads, so no recipe slips under a policy on fewer columns
    (prevalence's case definition did, before ``numerator`` was a column key)."""
    manifest = parse_manifest(bench.MANIFEST["columns"])
    recipes, _ = bench.plan(None)
    for recipe, version in recipes:
        analysis = get_analysis(recipe.analysis, version)
        read = set(analysis.typed_columns(dict(recipe.parameters), manifest))
        assert read <= set(policy_columns(dict(recipe.parameters))), recipe.label
