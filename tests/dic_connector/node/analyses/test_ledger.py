"""Which sums over contributors releases together make derivable (the audit-expert test),
checked against brute force over small rational combinations, and the shares of them."""

from __future__ import annotations

import asyncio
import itertools
from fractions import Fraction
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dic_connector.node.analyses.base import Analysis, Inputs
from dic_connector.node.analyses.count import Count
from dic_connector.node.analyses.disclosure import Release, Rules
from dic_connector.node.analyses.frequency import Frequency
from dic_connector.node.analyses.ledger import (
    MAX_UNIVERSE,
    Ledger,
    Released,
    newly_derivable,
)
from mpc.ring import as_ring
from mpc.session import Session, run_local
from mpc.sharing import AShare, reconstruct, share
from tests.dic_connector.node.analyses.support import Table

F = frozenset


def test_pooled_then_per_site_exposes_the_other_site() -> None:
    assert newly_derivable([F({"tm", "tr"})], F({"tm"})) == [F({"tr"})]
    assert newly_derivable([F({"tm"})], F({"tm", "tr"})) == [F({"tr"})]


def test_what_already_followed_exposes_nothing_new() -> None:
    assert newly_derivable([], F({"tm", "tr"})) == []
    assert newly_derivable([F({"tm", "tr"}), F({"tm"})], F({"tr"})) == []
    assert newly_derivable([F({"tm", "tr"})], F({"tm", "tr"})) == []


def test_three_pairs_expose_every_site() -> None:
    out = newly_derivable([F({"a", "b"}), F({"b", "c"})], F({"a", "c"}))
    assert sorted(map(sorted, out)) == [["a"], ["a", "b", "c"], ["b"], ["c"]]


def test_a_large_universe_falls_back_to_every_single_contributor() -> None:
    sites = [f"s{i}" for i in range(MAX_UNIVERSE + 1)]
    assert newly_derivable([F(sites[:-1])], F(sites[1:])) == [F({s}) for s in sorted(sites)]


def _span_contains(vectors: list[tuple[int, ...]], target: tuple[int, ...]) -> bool:
    """Brute force: target = sum of c_i v_i with c_i in {-2, -1, -1/2, 0, 1/2, 1, 2}."""
    coefficients = [Fraction(c, 2) for c in (-4, -2, -1, 0, 1, 2, 4)]
    for cs in itertools.product(coefficients, repeat=len(vectors)):
        if all(sum(c * v[i] for c, v in zip(cs, vectors, strict=True)) == t
               for i, t in enumerate(target)):
            return True
    return False


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sets(st.sampled_from("abcd"), min_size=1), max_size=2),
       st.sets(st.sampled_from("abcd"), min_size=1))
def test_derivable_sets_agree_with_brute_force(released: list[set[str]], new: set[str]) -> None:
    universe = sorted(set(new).union(*released))
    vec = lambda members: tuple(int(s in members) for s in universe)  # noqa: E731
    old = [vec(m) for m in released]
    expected = []
    for size in range(1, len(universe) + 1):
        for members in itertools.combinations(universe, size):
            t = vec(members)
            if set(members) != new and _span_contains([*old, vec(new)], t) \
                    and not _span_contains(old, t):
                expected.append(F(members))
    assert sorted(map(sorted, newly_derivable([F(m) for m in released], F(new)))) == \
        sorted(map(sorted, expected))


def test_derived_sums_take_shares_from_the_ledger_and_the_release() -> None:
    # an earlier release of cell g=a over tm (3) and tr (2), opened; now tm alone (3)
    pooled = [share(as_ring(np.array([[3, 7], [2, 9]], dtype=np.int64)))]
    current = share(as_ring(np.array([3], dtype=np.int64)))
    sums = []
    for party in range(3):
        ledger = Ledger((Released("r1", ("g=a", "g=b"), (True, True), ("tm/v1", "tr/v1"),
                                  pooled[0][party]),))
        sums.append(ledger.derived_sums("g=a", ["tm/v1"], current[party]))
    assert [d.contributors for d in sums[0]] == [F({"tr/v1"})]
    values: list[AShare] = [s[0].value for s in sums]
    assert reconstruct(*values).tolist() == [2]
    # a release over other contributors only adds sums of two checked ones: nothing to check
    other = Ledger((Released("r0", ("g=a",), (True,), ("ts/v1", "tu/v1"),
                             share(as_ring(np.array([[6], [1]], dtype=np.int64)))[0]),))
    assert other.derived_sums("g=a", ["tm/v1"], current[0]) == []
    # a cell the earlier release did not open exposes nothing
    closed = Ledger((Released("r1", ("g=a",), (False,), ("tm/v1", "tr/v1"),
                              share(as_ring(np.array([[3], [2]], dtype=np.int64)))[0]),))
    assert closed.derived_sums("g=a", ["tm/v1"], current[0]) == []


# -- through the analyses: a researcher differencing two releases -------------------------



K = 5


class Nodes:
    """Three parties that keep a release ledger between requests, as three nodes do."""

    def __init__(self) -> None:
        self.ledgers: list[list[Released]] = [[], [], []]

    def run(self, analysis: Analysis, table: Table, parameters: dict[str, Any],
            sites: tuple[tuple[str, int], ...]) -> dict[str, Any]:
        inputs = table.inputs(sites)
        contributors = tuple(f"{site}/v1" for site, _ in sites)
        views = [Inputs(i.columns, i.manifest, i.segments, contributors) for i in inputs]

        async def program(s: Session, mine: Inputs) -> Release:
            return await analysis.run(s, mine, parameters, Rules.of(K),
                                      Ledger(tuple(self.ledgers[s.party])))

        releases: list[Release] = asyncio.run(run_local(program, views))
        assert releases[0].aggregates == releases[1].aggregates == releases[2].aggregates
        for party, release in enumerate(releases):
            if release.recorded is not None and any(release.recorded.opened):
                self.ledgers[party].append(Released(
                    f"r{len(self.ledgers[party])}", release.recorded.cells,
                    release.recorded.opened, contributors, release.recorded.counts))
        return releases[0].aggregates


def _pilot_like() -> Table:
    """tm: 30 rows with 12 a, 18 b; tr: 10 rows with 8 a, 2 b (tr's b is below k)."""
    return Table().categorical("g", ["a", "b"], ["a"] * 12 + ["b"] * 18 + ["a"] * 8 + ["b"] * 2)


def test_pooled_minus_per_site_cannot_recover_a_small_cell() -> None:
    nodes = Nodes()
    both = (("tm", 30), ("tr", 10))
    pooled = nodes.run(Frequency(), _pilot_like(), {"column": "g"}, both)
    assert pooled["levels"] == {"a": 20, "b": 20}
    alone = Table().categorical("g", ["a", "b"], ["a"] * 12 + ["b"] * 18)
    per_site = nodes.run(Frequency(), alone, {"column": "g"}, (("tm", 30),))
    # 20 - 18 would give tr's b = 2: b is withheld; a (20 - 12 = 8 >= k) is released
    assert per_site["levels"] == {"a": 12, "b": "suppressed"}


def test_without_the_ledger_the_same_two_releases_give_the_small_cell_away() -> None:
    first = Nodes()
    first.run(Frequency(), _pilot_like(), {"column": "g"}, (("tm", 30), ("tr", 10)))
    fresh = Nodes()  # a node that forgot its releases
    alone = Table().categorical("g", ["a", "b"], ["a"] * 12 + ["b"] * 18)
    assert fresh.run(Frequency(), alone, {"column": "g"}, (("tm", 30),))["levels"]["b"] == 18


def test_pooled_minus_per_site_cannot_recover_a_sites_missing_values() -> None:
    # A: 10 rows, 2 missing; B: 24 rows, 5 missing (each complement alone is fine or >= k)
    values = [1] * 8 + [None] * 2 + [1] * 19 + [None] * 5
    nodes = Nodes()
    b_alone = Table().numeric("x", [1] * 19 + [None] * 5)
    assert nodes.run(Count(), b_alone, {"column": "x"}, (("B", 24),)) == {"n": 19}
    pooled = nodes.run(Count(), Table().numeric("x", values), {"column": "x"},
                       (("A", 10), ("B", 24)))
    assert pooled["suppressed"] and "release ledger" in pooled["reason"]
    assert "'A'" in pooled["reason"]


def test_a_fully_opened_table_records_and_guards_the_missing_values() -> None:
    # B alone: every cell opened, so 24 minus their sum opens B's 5 missing values
    nodes = Nodes()
    b_values = ["a"] * 10 + ["b"] * 9 + [None] * 5
    b_alone = nodes.run(Frequency(), Table().categorical("g", ["a", "b"], b_values),
                        {"column": "g"}, (("B", 24),))
    assert b_alone["levels"] == {"a": 10, "b": 9}
    assert "g__missing" in nodes.ledgers[0][0].cells
    # A + B fully opened would give A's 2 missing values (pooled minus B; A's cells, 6
    # and 7, are safe themselves): one cell is withheld instead, the smallest
    a_values = ["a"] * 7 + ["b"] * 6 + [None] * 2
    pooled = nodes.run(Frequency(), Table().categorical("g", ["a", "b"], a_values + b_values),
                       {"column": "g"}, (("A", 15), ("B", 24)))
    assert pooled["levels"] == {"a": 17, "b": "suppressed"}
