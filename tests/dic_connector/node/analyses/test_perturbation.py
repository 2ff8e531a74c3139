"""Cell-key perturbation under MPC against the plaintext reference: the noise lookup, the
record and cell keys, and count, frequency, contingency, histogram and prevalence with the
setting on (each opened count c + v, v the table's lookup of the true count and the cell
key of exactly its rows; suppression as without perturbation) and off."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.proportion import proportion_confint

from dic_connector.errors import ConfigError
from dic_connector.node.analyses.base import Inputs
from dic_connector.node.analyses.contingency import Contingency
from dic_connector.node.analyses.count import Count, CountTrue
from dic_connector.node.analyses.disclosure import Rules
from dic_connector.node.analyses.fisher import Fisher
from dic_connector.node.analyses.frequency import Frequency
from dic_connector.node.analyses.histogram import Histogram
from dic_connector.node.analyses.median import Median
from dic_connector.node.analyses.perturbation import (
    PairSecrets,
    Perturbation,
    noise,
    record_keys,
)
from dic_connector.node.analyses.prevalence import Prevalence, shown_cell, wilson
from dic_connector.node.analyses.ptable import KEY_BITS, CellKeyParams, PTable, count_ptable
from mpc.ring import as_ring, to_signed
from mpc.session import Session, run_local
from mpc.sharing import AShare, components, reconstruct, share
from tests.dic_connector.node.analyses import reference
from tests.dic_connector.node.analyses.support import (
    Case,
    Segments,
    Table,
    cases,
    observed,
    run,
)

PARAMS = CellKeyParams(3, 2.0, 1)
TABLE = count_ptable(PARAMS)
LOW = (1 << KEY_BITS) - 1
#: The secret of each pair of parties (j - 1, j), by j: it seeds component x_j of the keys.
SECRETS = {j: os.urandom(32) for j in range(3)}


def secrets_of(party: int, pairs: dict[int, bytes] = SECRETS) -> PairSecrets:
    return PairSecrets(party, pairs[party], pairs[(party + 1) % 3])


def plain_keys(contributors: tuple[str, ...], rows: tuple[int, ...],
               pairs: dict[int, bytes] = SECRETS) -> np.ndarray:
    views = [record_keys(secrets_of(p, pairs), contributors, rows) for p in range(3)]
    return reconstruct(*views)


def mpc_noise(counts: list[int], keys: list[int], table: PTable = TABLE) -> list[int]:
    c, k = share(as_ring(np.asarray(counts, dtype=np.int64))), share(
        np.asarray(keys, dtype=np.uint64))

    async def program(s: Session, x: AShare, y: AShare) -> AShare:
        return await noise(s, x, y, table)

    out = asyncio.run(run_local(program, c, k))
    return [int(v) for v in to_signed(reconstruct(*out))]


# -- the lookup ------------------------------------------------------------------------


def test_noise_matches_the_plaintext_lookup_at_every_boundary() -> None:
    """Every count class (0, 1..js, js + 1, the shared row and far above it), every key
    at, just below and just above each threshold, with bit 63 of the word clear and set."""
    counts, keys = [], []
    for count in (0, 1, 2, 3, 4, 5, 6, 7, 100, 10 ** 6, 1 << 40):
        row = TABLE.row(count)
        edges = {0, 1, LOW}
        for t in row.thresholds[:-1]:
            edges |= {max(0, t - 1), t, min(LOW, t + 1)}
        for key in sorted(edges):
            for top in (0, 1 << KEY_BITS):
                counts.append(count)
                keys.append(key | top)
    got = mpc_noise(counts, keys)
    expected = [TABLE.noise(c, k & LOW) for c, k in zip(counts, keys, strict=True)]
    assert got == expected


@pytest.mark.parametrize("params", [CellKeyParams(1, 0.5), CellKeyParams(2, 1.0),
                                    CellKeyParams(5, 4.0, 3)])
def test_noise_matches_on_random_cells(params: CellKeyParams) -> None:
    table = count_ptable(params)
    rng = np.random.default_rng(params.max_noise)
    counts = [int(c) for c in rng.integers(0, params.shared_row + 3, 400)]
    keys = [int(k) for k in rng.integers(0, 1 << 64, 400, dtype=np.uint64)]
    got = mpc_noise(counts, keys, table)
    assert got == [table.noise(c, k & LOW) for c, k in zip(counts, keys, strict=True)]
    assert all(abs(v) <= params.max_noise for v in got)
    assert all(c + v >= 0 and not 1 <= c + v <= params.js
               for c, v in zip(counts, got, strict=True) if c > 0)


def test_no_noise_for_no_cell() -> None:
    assert mpc_noise([], []) == []


# -- record keys -----------------------------------------------------------------------


def test_record_keys_are_consistent_deterministic_and_per_version() -> None:
    contributors, rows = ("d1/v1", "d2/v1"), (5, 7)
    views = [record_keys(secrets_of(p), contributors, rows) for p in range(3)]
    components(*views)  # every component is held twice, with equal copies
    keys = reconstruct(*views)
    assert keys.shape == (12,) and len(set(keys.tolist())) == 12
    assert np.array_equal(keys, plain_keys(contributors, rows))  # re-derived, the same
    other = plain_keys(("d1/v2", "d2/v1"), rows)  # a new version of d1: new keys
    assert not np.array_equal(other[:5], keys[:5]) and np.array_equal(other[5:], keys[5:])


def test_a_party_alone_cannot_tell_the_keys() -> None:
    """Party 0 holds components 0 and 1; the secret of pair (1, 2), which seeds component 2,
    changes every key without changing anything party 0 holds."""
    contributors, rows = ("d/v",), (6,)
    changed = {**SECRETS, 2: os.urandom(32)}
    mine = record_keys(secrets_of(0), contributors, rows)
    again = record_keys(secrets_of(0, changed), contributors, rows)
    assert np.array_equal(mine.a, again.a) and np.array_equal(mine.b, again.b)
    assert not np.array_equal(plain_keys(contributors, rows, changed),
                              plain_keys(contributors, rows))
    assert "bytes" not in repr(secrets_of(0)) and repr(secrets_of(0)) == "PairSecrets(party=0)"


# -- analyses --------------------------------------------------------------------------


class KeyedTable(Table):
    """A table whose parties also hold record keys (as a node derives them)."""

    def inputs(self, segments: Segments | None = None) -> list[Inputs]:
        out = super().inputs(segments)
        contributors = tuple(f"dataset-{i}/v1" for i in range(len(out[0].segments)))
        rows = tuple(n for _, n in out[0].segments)
        # (no ledger contributors: the releases of the three parties are then comparable)
        return [dataclasses.replace(x, record_keys=record_keys(secrets_of(p), contributors,
                                                               rows))
                for p, x in enumerate(out)]


def keys_of(segments: Segments) -> np.ndarray:
    """The record keys a KeyedTable's parties hold, reconstructed."""
    return plain_keys(tuple(f"dataset-{i}/v1" for i in range(len(segments))),
                      tuple(n for _, n in segments))


def cell_key(keys: np.ndarray, member: np.ndarray) -> int:
    return int(np.sum(keys[member.astype(bool)], dtype=np.uint64)) & LOW


RULES = Rules.of(3, perturbation=PARAMS)


def test_count_opens_the_perturbed_n() -> None:
    values = [1, None, 2, 3, None, 4, 5, 6, 7, 8, None, 9, 10]
    table = KeyedTable().numeric("x", values)
    segments: Segments = (("a", 6), ("b", 7))
    release, seen = observed(Count(), table, {"column": "x"}, RULES, segments)
    present = np.array([v is not None for v in values])
    n = int(present.sum())
    expected = n + TABLE.noise(n, cell_key(keys_of(segments), present))
    assert release.aggregates == {"n": expected, "perturbed": PARAMS.as_json()}
    assert seen.arith_values == [expected]  # only n + v is opened, never n
    assert "perturbed" in release.transcript[-1].name
    assert "cell-key perturbation" in release.transcript[-1].rule
    # the same request again: the same noise; averaging does not remove it
    again, _ = observed(Count(), table, {"column": "x"}, RULES, segments)
    assert again.aggregates == release.aggregates


def test_the_same_rows_get_the_same_noise_whatever_the_request() -> None:
    """A filter that keeps exactly the present rows gives the same cell, so the same n + v;
    a filter dropping one row gives a different cell key."""
    values = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]
    table = KeyedTable().numeric("x", values, present=True)
    keys = keys_of((("site", 20),))
    base = run(Count(), table, {"column": "x"}, Rules.of(1, perturbation=PARAMS))
    same = run(Count(), table, {"column": "x", "filter": {"op": ">=", "column": "x", "value": 1}},
               Rules.of(1, perturbation=PARAMS))
    assert base == same
    fewer = run(Count(), table, {"column": "x", "filter": {"op": ">=", "column": "x", "value": 2}},
                Rules.of(1, perturbation=PARAMS))
    member = np.array(values) >= 2
    assert fewer["n"] == 19 + TABLE.noise(19, cell_key(keys, member))


def test_count_v2_perturbs_the_true_rows() -> None:
    flags = [True, False, True, True, None, True, True, False, True, True, True, False,
             None, None, False]
    table = KeyedTable().boolean("flag", flags)
    got = run(CountTrue(), table, {"column": "flag"}, RULES)
    true = np.array([f is True for f in flags])
    keys = keys_of((("site", len(flags)),))
    assert got == {"n": 8 + TABLE.noise(8, cell_key(keys, true)), "perturbed": PARAMS.as_json()}


def test_a_public_n_is_not_perturbed() -> None:
    """Without a missing-value indicator n is the public row count."""
    table = KeyedTable().numeric("x", list(range(9)), present=False)
    assert run(Count(), table, {"column": "x"}, RULES) == {"n": 9}


LEVELS = [f"l{i}" for i in range(12)]


def test_frequency_perturbs_each_allowed_cell_independently() -> None:
    """Twelve levels with the same count 10 get the noise of twelve different cell keys
    (not one draw for all); a level below k stays suppressed, and the secondary suppression
    it needs (its 2 rows are below k) hides the first smallest true count, l0: the checks are
    made on the true counts."""
    values: list[str | None] = [lvl for lvl in LEVELS[:11] for _ in range(10)]
    values += ["l11"] * 2 + [None] * 4
    table = KeyedTable().categorical("g", LEVELS, values)
    segments: Segments = (("a", 60), ("b", len(values) - 60))
    release, seen = observed(Frequency(), table, {"column": "g"}, RULES, segments)
    keys = keys_of(segments)
    shown = release.aggregates["levels"]
    expected: dict[str, int | str] = {}
    for level in LEVELS[:11]:
        member = np.array([v == level for v in values])
        expected[level] = 10 + TABLE.noise(10, cell_key(keys, member))
    expected["l0"], expected["l11"] = "suppressed", "<3"
    assert shown == expected
    assert len({shown[lvl] for lvl in LEVELS[1:11]}) > 1
    assert release.aggregates["perturbed"] == PARAMS.as_json()
    assert sorted(seen.arith_values) == sorted(v for v in shown.values() if isinstance(v, int))


def test_frequency_of_a_boolean_with_a_filter() -> None:
    flags = [True] * 9 + [False] * 7 + [None] * 3 + [True] * 5
    table = KeyedTable().boolean("flag", flags).numeric("x", list(range(len(flags))))
    keys = keys_of((("site", len(flags)),))
    below = {"op": "<", "column": "x", "value": 20}
    got = run(Frequency(), table, {"column": "flag", "filter": below},
              Rules.of(3, perturbation=PARAMS))
    x = np.arange(len(flags))
    cells = {"false": np.array([f is False for f in flags]) & (x < 20),
             "true": np.array([f is True for f in flags]) & (x < 20)}
    expected = {level: int(m.sum()) + TABLE.noise(int(m.sum()), cell_key(keys, m))
                for level, m in cells.items()}
    assert got["levels"] == expected


def test_off_by_default_exact_results() -> None:
    values = [1, None, 2, 3, None, 4, 5, 6, 7, 8]
    table = KeyedTable().numeric("x", values)
    assert run(Count(), table, {"column": "x"}, 2) == {"n": 8}
    categories = ["a"] * 6 + ["b"] * 4
    freq = KeyedTable().categorical("g", ["a", "b"], categories)
    assert run(Frequency(), freq, {"column": "g"}, 3) == {
        "levels": {"a": 6, "b": 4}, "min_cell_count": 3}


def test_perturbation_without_record_keys_fails_loudly() -> None:
    table = Table().numeric("x", [1, None, 2, 3, 4, 5])
    with pytest.raises(ConfigError, match="record keys"):
        run(Count(), table, {"column": "x"}, Rules.of(1, perturbation=PARAMS))


def test_a_result_states_the_table() -> None:
    got: dict[str, Any] = run(Count(), KeyedTable().numeric("x", [1, None, 2, 3, 4]),
                              {"column": "x"}, Rules.of(1, perturbation=PARAMS))
    assert got["perturbed"] == {"method": "cellkey", "D": 3, "V": 2.0, "js": 1}


def test_contingency_perturbs_each_cell_of_its_rows() -> None:
    """A 3 x 2 table with missing values and a filter (one every row passes, so none is
    suppressed for its complement): each opened cell is its count plus
    the noise of the keys of exactly its rows; totals are sums of the perturbed cells."""
    rng = np.random.default_rng(5)
    g = [str(v) for v in rng.choice(["a", "b", "c"], 90)]
    h: list[bool | None] = [bool(v) for v in rng.integers(0, 2, 90)]
    h[3] = h[10] = h[40] = None
    x = list(range(90))
    table = (KeyedTable().categorical("g", ["a", "b", "c"], g).boolean("h", h)
             .numeric("x", x))
    segments: Segments = (("a", 50), ("b", 40))
    parameters = {"row": "g", "col": "h", "filter": {"op": ">=", "column": "x", "value": 0},
                  "disclose_excluded": True}
    release, seen = observed(Contingency(), table, parameters, Rules.of(3, perturbation=PARAMS),
                             segments)
    got = release.aggregates
    keys = keys_of(segments)
    member_rows = (np.array(x) >= 0) & np.array([v is not None for v in h])
    expected = []
    for level in ("a", "b", "c"):
        line = []
        for flag in (False, True):
            member = member_rows & (np.array(g) == level) & np.array([v is flag for v in h])
            count = int(member.sum())
            line.append(count + TABLE.noise(count, cell_key(keys, member)))
        expected.append(line)
    assert got["cells"] == expected
    assert got["total"] == sum(map(sum, expected))
    assert got["perturbed"] == PARAMS.as_json()
    assert sorted(seen.arith_values) == sorted(v for line in expected for v in line)


def test_recipes_that_do_not_perturb_are_refused_unless_allowed() -> None:
    """median's exact n would undo the noise of count on the same rows: refused (nothing
    opened) while counts are perturbed, unless the setting allows exact statistics (mean
    and summary perturb their n and sums: test_magnitude.py)."""
    table = KeyedTable().numeric("x", [1, None, 2, 3, 4, 5, 6, 7, None, None])
    release, seen = observed(Median(), table, {"column": "x"},
                             Rules.of(2, perturbation=PARAMS))
    assert release.refused and "perturbation.allow_exact" in release.aggregates["reason"]
    assert seen.openings == []
    allowed = dataclasses.replace(PARAMS, allow_exact=True)
    assert run(Median(), table, {"column": "x"}, Rules.of(2, perturbation=allowed))["n"] == 7
    fisher = KeyedTable().boolean("a", [True, False] * 10).boolean("b", [True] * 10 + [False] * 10)
    assert run(Fisher(), fisher, {"row": "a", "col": "b"},
               Rules.of(2, perturbation=PARAMS))["suppressed"] is True


@pytest.mark.parametrize("batch", [1, 40, 1 << 23])
def test_table_keys_match_the_plaintext_in_every_batching(batch: int) -> None:
    rng = np.random.default_rng(batch)
    n, r, c = 40, 3, 4
    rows_of = np.eye(r, dtype=np.int64)[rng.integers(0, r, n)].T
    cols_of = np.eye(c, dtype=np.int64)[rng.integers(0, c, n)].T
    member = rng.integers(0, 2, n)
    keys = rng.integers(0, 1 << 64, n, dtype=np.uint64)
    shared = [share(as_ring(v)) for v in (rows_of, cols_of, member)] + [share(keys)]

    async def program(s: Session, a: AShare, b: AShare, q: AShare, k: AShare) -> AShare:
        return await Perturbation(TABLE, k).table_keys(s, a, b, q, batch_elements=batch)

    got = reconstruct(*asyncio.run(run_local(program, *shared)))
    expected = [int(np.sum(keys[(rows_of[i] * cols_of[j] * member).astype(bool)],
                           dtype=np.uint64)) for i in range(r) for j in range(c)]
    assert got.tolist() == expected


@settings(max_examples=20, deadline=None)
@given(cases(st.integers(-5, 5), indicator=True))
def test_count_matches_the_reference_with_noise(case: Case) -> None:
    """Over random sites, sizes and rules at their edges: the same refusals and gate bits
    as without perturbation (they are checked on the true n), and where n opens, exactly
    n + v with v the lookup of the present rows' cell key."""
    rules = dataclasses.replace(case.rules, perturbation=PARAMS)
    table = KeyedTable().numeric("x", case.values, present=True)
    got, seen = observed(Count(), table, {"column": "x"}, rules, case.segments)
    expected = reference.count(case.values, case.segments, case.rules, True)
    if expected.aggregates is not None:
        present = np.array([v is not None for v in case.values], dtype=bool)
        n = expected.aggregates["n"]
        v = TABLE.noise(n, cell_key(keys_of(case.segments), present))
        expected = dataclasses.replace(
            expected, aggregates={"n": n + v, "perturbed": PARAMS.as_json()},
            openings=[*expected.openings[:-1], ("values", [n + v])])
    reference.assert_release(got, seen, expected, case.segments, rules)


# -- histogram and prevalence ----------------------------------------------------------


def histogram_members(x: np.ndarray, rows: np.ndarray, breaks: list[int],
                      right: bool = False) -> list[np.ndarray]:
    """The rows of each cell (below, bins [b_i, b_i+1) with the last closed, or (b_i,
    b_i+1] with the first closed, above) among ``rows``, as numpy.histogram bins them."""
    b, last = breaks, len(breaks) - 2
    if right:
        bins = [((x > b[i]) if i > 0 else (x >= b[i])) & (x <= b[i + 1])
                for i in range(last + 1)]
    else:
        bins = [(x >= b[i]) & ((x < b[i + 1]) if i < last else (x <= b[i + 1]))
                for i in range(last + 1)]
    return [m & rows for m in [x < b[0], *bins, x > b[-1]]]


@pytest.mark.parametrize(("right", "bounded"), [(False, False), (True, True)])
def test_histogram_perturbs_n_and_each_allowed_cell(right: bool, bounded: bool) -> None:
    """Missing values, a filter and two sites, both closures, with and without a declared
    range: every opened cell is its true count plus the noise of its rows' cell key; the
    cells hidden (primary and secondary, on the true counts) are those hidden without
    perturbation; n is the n + v that count gives for the same request; the same request
    twice gives the same release."""
    rng = np.random.default_rng(11)
    size = 120
    x = rng.integers(-10, 110, size)
    values: list[int | None] = [int(v) for v in x]
    for i in rng.choice(size, 9, replace=False):
        values[int(i)] = None
    keep = [bool(v) for v in rng.integers(0, 4, size) > 0]
    table = KeyedTable().numeric("x", values, minimum=-10 if bounded else None,
                                 maximum=110 if bounded else None).boolean("f", keep)
    segments: Segments = (("a", 70), ("b", 50))
    breaks = [0, 20, 40, 60, 80, 82, 100]  # (80, 82] holds one or two rows: hidden
    parameters = {"column": "x", "breaks": breaks, "right": right,
                  "filter": {"op": "==", "column": "f", "value": True}}
    exact = run(Histogram(), table, parameters, Rules.of(3), segments)
    rules = Rules.of(3, perturbation=PARAMS)
    release, seen = observed(Histogram(), table, parameters, rules, segments)
    got = release.aggregates
    keys = keys_of(segments)
    rows = np.array([v is not None for v in values]) & np.array(keep)
    members = histogram_members(x, rows, breaks, right)
    true = [int(m.sum()) for m in members]
    expected: list[int | None] = []
    for shown, c, m in zip([exact["below"], *exact["counts"], exact["above"]], true, members,
                           strict=True):
        assert shown is None or shown == c
        expected.append(None if shown is None else c + TABLE.noise(c, cell_key(keys, m)))
    assert [got["below"], *got["counts"], got["above"]] == expected
    assert got.get("suppressed_reasons") == exact.get("suppressed_reasons")
    assert None in expected and any(v is not None for v in expected)  # both kinds happen
    n = int(rows.sum())
    assert got["n"] == n + TABLE.noise(n, cell_key(keys, rows))
    count = {"column": "x", "filter": parameters["filter"]}
    assert run(Count(), table, count, rules, segments)["n"] == got["n"]
    assert got["perturbed"] == PARAMS.as_json() and "perturbed" not in exact
    assert seen.arith == [[got["n"]], [v for v in expected if v is not None]]
    assert observed(Histogram(), table, parameters, rules, segments)[0] == release


def test_histogram_with_a_public_n_perturbs_only_the_cells() -> None:
    """No missing value and no filter: n is the public row count, shown exact (as count
    shows it); each cell still opens as c + v, with the keys of all its rows."""
    values = [int(v) for v in np.random.default_rng(3).integers(0, 30, 60)]
    table = KeyedTable().numeric("x", values, present=False)
    breaks = [0, 10, 20, 30]
    got = run(Histogram(), table, {"column": "x", "breaks": breaks}, RULES)
    assert got["n"] == 60 == run(Count(), table, {"column": "x"}, RULES)["n"]
    keys = keys_of((("site", 60),))
    members = histogram_members(np.array(values), np.ones(60, dtype=bool), breaks)
    expected = [int(m.sum()) + TABLE.noise(int(m.sum()), cell_key(keys, m)) if m.sum() >= 3
                else None for m in members]
    assert [got["below"], *got["counts"], got["above"]] == expected
    assert got["suppressed_reasons"] == {"below": "<3", "above": "<3"}


def perturbed_cell(d: int, x: int, den_key: int, num_key: int) -> tuple[int, int, float | None,
                                                                          list[float] | None]:
    """The reference of a perturbed prevalence cell: d', x', and the proportion and
    statsmodels' Wilson interval of the clamped min(x', d') / d'."""
    dp, xp = d + TABLE.noise(d, den_key), x + TABLE.noise(x, num_key)
    dc = max(dp, 0)
    xc = min(max(xp, 0), dc)
    if dc == 0:
        return dp, xp, None, None
    low, high = proportion_confint(xc, dc, alpha=0.05, method="wilson")
    return dp, xp, xc / dc, [float(low), float(high)]


def test_prevalence_perturbs_each_denominator_and_numerator() -> None:
    """Two by columns with missing values, a boolean numerator with missing values, a
    population filter and two sites: each opened denominator is d plus the noise of the
    key of the population's rows in the cell, each numerator x plus that of its cases'
    rows; proportions and intervals come from the clamped perturbed counts; the hidden
    cells are those hidden without perturbation; the same request twice is the same."""
    rng = np.random.default_rng(21)
    size = 300
    zips = [str(v) for v in rng.choice(["z1", "z2", "z3"], size)]
    sexes = [str(v) for v in rng.choice(["f", "m"], size)]
    dm: list[bool | None] = [bool(v) for v in rng.random(size) < 0.3]
    zip_or_none: list[str | None] = list(zips)
    for i in rng.choice(size, 6, replace=False):
        zip_or_none[int(i)] = None
    for i in rng.choice(size, 6, replace=False):
        dm[int(i)] = None
    small = 0
    for t in range(size):
        if dm[t] is not None and zips[t] == "z2" and sexes[t] == "m":
            dm[t], small = small < 2, small + 1  # two cases: hidden, with cells to protect it
    keep = [bool(v) for v in rng.random(size) < 0.7]
    table = (KeyedTable().categorical("zip", ["z1", "z2", "z3"], zip_or_none)
             .categorical("sex", ["f", "m"], sexes).boolean("dm", dm).boolean("f", keep))
    segments: Segments = (("a", 170), ("b", 130))
    parameters = {"numerator": "dm", "by": ["zip", "sex"],
                  "filter": {"op": "==", "column": "f", "value": True}}
    exact = run(Prevalence(), table, parameters, Rules.of(3), segments)
    rules = Rules.of(3, perturbation=PARAMS)
    release, seen = observed(Prevalence(), table, parameters, rules, segments)
    got = release.aggregates
    keys = keys_of(segments)
    population = (np.array([z is not None for z in zip_or_none])
                  & np.array([v is not None for v in dm]) & np.array(keep))
    case = np.array([v is True for v in dm])
    opened_den, opened_num = [], []
    for cell, plain in zip(got["cells"], exact["cells"], strict=True):
        assert cell["levels"] == plain["levels"]
        if plain["denominator"] is None:
            assert cell == plain  # hidden as without perturbation
            continue
        member = (population & (np.array(zip_or_none) == cell["levels"][0])
                  & (np.array(sexes) == cell["levels"][1]))
        d, x = int(member.sum()), int((member & case).sum())
        assert (plain["denominator"], plain["numerator"]) == (d, x)
        dp, xp, proportion, ci = perturbed_cell(d, x, cell_key(keys, member),
                                                cell_key(keys, member & case))
        assert (cell["denominator"], cell["numerator"]) == (dp, xp)
        if proportion is None:
            assert cell["proportion"] is None and cell["ci"] is None
        else:
            assert cell["proportion"] == pytest.approx(proportion)
            assert cell["ci"] == pytest.approx(ci, abs=1e-12)
        opened_den.append(dp)
        opened_num.append(xp)
    assert any(c["denominator"] is None for c in got["cells"]) and opened_den
    assert got["perturbed"] == PARAMS.as_json() and "perturbed" not in exact
    assert seen.arith == [opened_den, opened_num]
    assert observed(Prevalence(), table, parameters, rules, segments)[0] == release


def test_prevalence_of_the_whole_population_agrees_with_count() -> None:
    """No by and no filter: the denominator is the rows where the numerator is present,
    d + v the n that count gives; the numerator the true rows, x + v as count v2 gives;
    the same with the case as a filter. Without missing values the denominator is the
    public row count, shown exact as count shows it."""
    flags: list[bool | None] = [True] * 12 + [False] * 20 + [None] * 4 + [True] * 3
    table = KeyedTable().boolean("dm", flags).numeric("x", list(range(len(flags))))
    got = run(Prevalence(), table, {"numerator": "dm"}, RULES)
    (cell,) = got["cells"]
    assert cell["denominator"] == run(Count(), table, {"column": "dm"}, RULES)["n"]
    assert cell["numerator"] == run(CountTrue(), table, {"column": "dm"}, RULES)["n"]
    keys = keys_of((("site", len(flags)),))
    assert cell["numerator"] == 15 + TABLE.noise(15, cell_key(keys, np.array(
        [f is True for f in flags])))
    public = KeyedTable().boolean("dm", [f is True for f in flags], present=False)
    public.numeric("x", list(range(len(flags))))
    case = {"op": "<", "column": "x", "value": 12}
    (cell,) = run(Prevalence(), public, {"numerator": case}, RULES)["cells"]
    member = np.arange(len(flags)) < 12
    assert cell["denominator"] == len(flags)
    assert cell["numerator"] == 12 + TABLE.noise(12, cell_key(keys, member))
    assert cell["numerator"] == run(Count(), public, {"filter": case}, RULES)["n"]


def test_a_perturbed_cell_shows_a_proportion_in_the_unit_interval() -> None:
    assert shown_cell(["a"], 10, 12) == {"levels": ["a"], "denominator": 10, "numerator": 12,
                                         "proportion": 1.0, "ci": list(wilson(10, 10))}
    assert shown_cell(["a"], 0, 2) == {"levels": ["a"], "denominator": 0, "numerator": 2,
                                       "proportion": None, "ci": None}
    low, high = proportion_confint(0, 7, alpha=0.05, method="wilson")
    assert shown_cell(["a"], 7, -1)["ci"] == pytest.approx([low, high], abs=1e-12)
    assert shown_cell(["a"], None, None)["proportion"] is None


@pytest.mark.parametrize("by", [["zip"], ["zip", "sex", "age"]])
def test_prevalence_keys_over_one_and_three_columns(by: list[str]) -> None:
    """The other group-by paths (one column; three, two of them combined into one code),
    k = 1 so every non-empty cell opens: each cell's d' and x' as the plaintext lookup."""
    rng = np.random.default_rng(len(by))
    size = 120
    levels = {"zip": ["z1", "z2", "z3"], "sex": ["f", "m"], "age": ["young", "old"]}
    columns = {name: [str(v) for v in rng.choice(lv, size)] for name, lv in levels.items()}
    dm = [bool(v) for v in rng.random(size) < 0.4]
    table = KeyedTable().boolean("dm", dm)
    for name in by:
        table.categorical(name, levels[name], columns[name])
    rules = Rules.of(1, perturbation=PARAMS)
    got = run(Prevalence(), table, {"numerator": "dm", "by": by}, rules, (("a", 50), ("b", 70)))
    keys = keys_of((("a", 50), ("b", 70)))
    case = np.array(dm)
    assert len(got["cells"]) == int(np.prod([len(levels[name]) for name in by]))
    for cell in got["cells"]:
        member = np.ones(size, dtype=bool)
        for name, level in zip(by, cell["levels"], strict=True):
            member &= np.array(columns[name]) == level
        d, x = int(member.sum()), int((member & case).sum())
        dp, xp, _, _ = perturbed_cell(d, x, cell_key(keys, member), cell_key(keys, member & case))
        assert (cell["denominator"], cell["numerator"]) == (dp, xp)
