"""The attacks a researcher would try, reproduced through ``Analysis.run`` and shown to fail.

1. **Pooling differencing.** A 1-row dataset version pooled with a 24-row one: the pooled
   release minus the 24-row release would give the single row away. The pooled request is
   refused, naming the small site, and opens no value; the 24-row one alone is released.
2. **Complements.** ``count()`` is public (N). ``count(column)`` with 2 missing values
   would give their number (N - n), so it is refused. In the pilot's local-control table
   (CR 10, PR 13, SD 19, PD 4, 2 missing, k = 5) PD shows ``<5`` and CR, the smallest opened
   cell, is suppressed too: neither ``count(column)`` nor N minus the opened cells recovers
   PD. The researcher's inference is made exhaustively: every hidden table consistent with
   all the releases, by the plaintext reference.
3. **Openings.** A count below k is never opened (the spy sees every opening); an analysis
   whose ``compute`` opens anything by itself (``arith.open_``, ``open_to``,
   ``boolean.open_bool``) is refused before any share is sent; a gate cannot be forged,
   widened (narrowing with a longer mask) or rewritten, and the query set's gate opens one
   value, not a column.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pytest

from dic_connector.node.analyses.base import Analysis, Inputs, column_parameters
from dic_connector.node.analyses.count import Count
from dic_connector.node.analyses.disclosure import Disclosure, Gate, QuerySet, Rules
from dic_connector.node.analyses.frequency import Frequency
from dic_connector.node.analyses.manifest import ColumnInfo
from dic_connector.node.analyses.mean import Mean
from dic_connector.node.analyses.median import Median
from mpc.errors import ProtocolError
from mpc.protocols import arith, boolean
from tests.dic_connector.node.analyses import reference
from tests.dic_connector.node.analyses.support import (
    Segments,
    Table,
    assert_transcript_matches,
    observed,
    spy_openings,
)

RULES = Rules.of(5)
LEVELS = ["CR", "PR", "SD", "PD"]


# -- 1. pooling differencing -----------------------------------------------------------

#: The single patient of site "tiny", then the 24 of site "big".
TINY_VALUE, TINY_LEVEL = 97, "PD"
BIG_VALUES = [40 + (7 * i) % 23 for i in range(24)]
BIG_LEVELS = [LEVELS[i % 3] for i in range(24)]  # no PD at "big"
POOLED: Segments = (("tiny", 1), ("big", 24))
ALONE: Segments = (("big", 24),)


def _tables(indicator: bool) -> tuple[Table, Table]:
    pooled = (Table().numeric("x", [TINY_VALUE, *BIG_VALUES], present=indicator)
              .categorical("r", LEVELS, [TINY_LEVEL, *BIG_LEVELS], present=indicator))
    alone = (Table().numeric("x", BIG_VALUES, present=indicator)
             .categorical("r", LEVELS, BIG_LEVELS, present=indicator))
    return pooled, alone


@pytest.mark.parametrize("indicator", [True, False], ids=["shared sizes", "public sizes"])
@pytest.mark.parametrize("analysis, parameters", [
    (Count(), {}), (Count(), {"column": "x"}), (Mean(), {"column": "x"}),
    (Median(), {"column": "x"}), (Frequency(), {"column": "r"})],
    ids=["count()", "count(x)", "mean", "median", "frequency"])
def test_a_one_row_site_pooled_with_24_rows_is_refused(
        analysis: Analysis, parameters: dict[str, Any], indicator: bool) -> None:
    pooled, alone = _tables(indicator)
    refused, seen = observed(analysis, pooled, parameters, RULES, POOLED)
    assert refused.aggregates["suppressed"] is True
    reason = refused.aggregates["reason"]
    assert "'tiny'" in reason and "'big'" not in reason and "min_subset_size" in reason
    assert seen.arith == [] and seen.sort_bits == 0  # no value of any kind was opened
    shared = indicator and "column" in parameters  # count() counts rows: sizes are public
    assert [o.kind for o in refused.transcript] == (["bits"] if shared else [])
    released = observed(analysis, alone, parameters, RULES, ALONE)[0].aggregates
    assert "suppressed" not in released
    # what differencing would have needed from the pooled release is not there
    if "sum" in released:
        assert "sum" not in refused.aggregates
    if "levels" in released:
        assert released["levels"]["PD"] == "<5" and "levels" not in refused.aggregates


def test_the_differencing_the_refusal_prevents() -> None:
    """With min_subset_size lowered to 1 (a weaker rule set), the pooled mean is released
    and the single patient's value is recovered exactly: the rule is what stops it."""
    pooled, alone = _tables(indicator=True)
    weak = Rules(5, 1)
    both = observed(Mean(), pooled, {"column": "x"}, weak, POOLED)[0].aggregates
    big = observed(Mean(), alone, {"column": "x"}, weak, ALONE)[0].aggregates
    assert int(both["sum"]) - int(big["sum"]) == TINY_VALUE
    refused = observed(Mean(), pooled, {"column": "x"}, RULES, POOLED)[0].aggregates
    assert set(refused) == {"suppressed", "reason"}


# -- 2. complements --------------------------------------------------------------------

PILOT = {"CR": 10, "PR": 13, "SD": 19, "PD": 4}


def _pilot(cells: Mapping[str, int], missing: int) -> list[str | None]:
    return [lv for lv in LEVELS for _ in range(cells[lv])] + [None] * missing


def _releases(values: list[str | None], indicator: bool) -> list[reference.Expected]:
    """What the reference releases for count(), count(response), frequency(response)."""
    segments: Segments = (("pilot", len(values)),)
    return [reference.count(None, segments, RULES, indicator),
            reference.count(values, segments, RULES, indicator),
            reference.frequency(values, LEVELS, segments, RULES, indicator)]


def _consistent_pd(observed_releases: list[reference.Expected], total: int,
                   opened: Mapping[str, int], indicator: bool) -> set[int]:
    """Every PD of a hidden table (CR, PD, missing; the opened cells as released, N rows)
    whose releases are the ones observed: what the researcher can infer about PD."""
    key = [(e.aggregates, e.refusal) for e in observed_releases]
    rest = total - sum(opened.values())
    found = set()
    for pd in range(rest + 1):
        for missing in range(rest - pd + 1) if indicator else [0]:
            cells = {**opened, "PD": pd, "CR": rest - pd - missing}
            candidate = _releases(_pilot(cells, missing), indicator)
            if [(e.aggregates, e.refusal) for e in candidate] == key:
                found.add(pd)
    return found


def test_count_of_all_rows_is_public_and_opens_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    values = _pilot(PILOT, 2)
    seen = spy_openings(monkeypatch)
    got, _ = observed(Count(), Table().categorical("response", LEVELS, values), {}, RULES)
    assert got.aggregates == {"n": 48} and got.transcript == () and seen.openings == []


def test_count_of_a_column_with_two_missing_values_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """N = 48 is public; n = 46 would give the 2 missing values away."""
    values = _pilot(PILOT, 2)
    seen = spy_openings(monkeypatch)
    table = Table().categorical("response", LEVELS, values)
    got, _ = observed(Count(), table, {"column": "response"}, RULES)
    assert_transcript_matches(got.transcript, seen)
    assert got.aggregates["suppressed"] is True
    assert "complement rule" in got.aggregates["reason"]
    assert seen.bits == [[0, 0, 1]] and seen.arith == []  # n = 46 was never opened
    for analysis in (Mean(), Median()):  # the same rule for every analysis that opens n
        numeric = Table().numeric("x", [None if v is None else len(v) for v in values])
        assert "complement rule" in observed(analysis, numeric, {"column": "x"},
                                             RULES)[0].aggregates["reason"]


def test_the_pilot_table_hides_pd_from_every_subtraction(
        monkeypatch: pytest.MonkeyPatch) -> None:
    values = _pilot(PILOT, 2)
    table = Table().categorical("response", LEVELS, values)
    seen = spy_openings(monkeypatch)
    got, _ = observed(Frequency(), table, {"column": "response"}, RULES)
    assert_transcript_matches(got.transcript, seen)
    assert got.aggregates == {"levels": {"CR": "suppressed", "PR": 13, "SD": 19, "PD": "<5"},
                              "min_cell_count": 5}
    assert seen.arith == [[13, 19]]  # PD (4) and CR (10) were never opened
    # N minus the opened cells is CR + PD + missing, not PD
    assert PILOT["CR"] + PILOT["PD"] + 2 == 48 - 13 - 19
    # the releases the researcher has (count(), count(response) refused, the table)
    releases = _releases(values, indicator=True)
    assert [e.aggregates for e in releases] == [{"n": 48}, None, got.aggregates]
    # every PD from 0 to 4 is consistent with all of them
    assert _consistent_pd(releases, 48, {"PR": 13, "SD": 19}, indicator=True) == {
        0, 1, 2, 3, 4}


def test_without_secondary_suppression_pd_would_follow() -> None:
    """The same table without missing values: N = 46 is public, so N minus the four cells
    would be PD. CR is suppressed; PD stays among 1..4 (that it is not 0 follows from the
    suppression itself: an empty PD would have left nothing to protect)."""
    values = _pilot(PILOT, 0)
    table = Table().categorical("response", LEVELS, values)
    got, seen = observed(Frequency(), table, {"column": "response"}, RULES)
    assert got.aggregates["levels"] == {"CR": "suppressed", "PR": 13, "SD": 19, "PD": "<5"}
    assert PILOT["PD"] == 46 - 10 - 13 - 19  # what opening CR would have given away
    assert seen.arith == [[13, 19]]
    releases = _releases(values, indicator=False)
    assert _consistent_pd(releases, 46, {"PR": 13, "SD": 19}, indicator=False) == {1, 2, 3, 4}


# -- 3. openings -----------------------------------------------------------------------


@pytest.mark.parametrize("analysis, parameters", [
    (Count(), {"column": "x"}), (Mean(), {"column": "x"}), (Median(), {"column": "x"}),
    (Frequency(), {"column": "r"})], ids=["count", "mean", "median", "frequency"])
def test_a_count_below_k_is_never_opened(analysis: Analysis, parameters: dict[str, Any],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """n = k - 1 present rows (and k missing ones): no value at all is opened."""
    values: list[int | None] = [11, 12, 13, 14] + [None] * 5
    levels: list[str | None] = ["CR"] * 4 + [None] * 5
    table = Table().numeric("x", values).categorical("r", LEVELS, levels)
    seen = spy_openings(monkeypatch)
    got, _ = observed(analysis, table, parameters, Rules(5, 1))
    assert_transcript_matches(got.transcript, seen)
    assert got.aggregates["suppressed"] is True and "min_cell_count" in got.aggregates["reason"]
    assert seen.arith == [] and seen.sort_bits == 0
    assert [o.kind for o in got.transcript] == ["bits"]


class Leaky(Analysis):
    """A toy analysis that passes the gate and then opens its column by itself."""

    name: ClassVar[str] = "leaky"
    version: ClassVar[str] = "1"
    summary: ClassVar[str] = "opens a column without the disclosure layer"
    discloses: ClassVar[str] = "nothing, it says"
    parameters_schema: ClassVar[dict[str, Any]] = column_parameters("a numeric column")
    column_kinds: ClassVar[frozenset[str]] = frozenset({"numeric"})

    def __init__(self, primitive: str) -> None:
        self.primitive = primitive
        #: (steps, bytes sent per peer) just before and after the attempt, per party
        self.before: dict[int, tuple[int, dict[int, int]]] = {}
        self.after: dict[int, tuple[int, dict[int, int]]] = {}

    async def compute(self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any],
                      query: QuerySet) -> dict[str, Any]:
        s, x = d.session, inputs.share(parameters["column"])
        self.before[s.party] = (s.steps, dict(s.channels.bytes_sent))
        try:
            if self.primitive == "open_":
                opened: Any = await arith.open_(s, x)
            elif self.primitive == "open_to":
                opened = await arith.open_to(s, x, 0)
            else:
                opened = await boolean.open_bool(s, boolean.BShare(x.party, x.a, x.b))
        finally:
            self.after[s.party] = (s.steps, dict(s.channels.bytes_sent))
        return {"column": None if opened is None else opened.tolist()}


@pytest.mark.parametrize("primitive", ["open_", "open_to", "open_bool"])
def test_an_opening_outside_the_layer_is_refused_before_any_share_is_sent(
        primitive: str, monkeypatch: pytest.MonkeyPatch) -> None:
    leaky = Leaky(primitive)
    table = Table().numeric("x", [31, 44, 27, 60, 52, 38])
    seen = spy_openings(monkeypatch)
    with pytest.raises(ProtocolError, match="outside the disclosure layer was refused"):
        observed(leaky, table, {"column": "x"}, RULES)
    assert sorted(leaky.before) == sorted(leaky.after) == [0, 1, 2]
    for party in range(3):
        assert leaky.after[party] == leaky.before[party]  # no step taken, no byte sent
    assert seen.openings == []  # the sizes are public: nothing at all was opened


class Forger(Analysis):
    """A toy analysis that tries to open its column with a gate it made or borrowed."""

    name: ClassVar[str] = "forger"
    version: ClassVar[str] = "1"
    summary: ClassVar[str] = "opens a column with a forged or borrowed gate"
    discloses: ClassVar[str] = "nothing, it says"
    parameters_schema: ClassVar[dict[str, Any]] = column_parameters("a numeric column")
    column_kinds: ClassVar[frozenset[str]] = frozenset({"numeric"})

    def __init__(self, how: str) -> None:
        self.how = how

    def value_columns(self, info: ColumnInfo, manifest: Mapping[str, ColumnInfo]) -> list[str]:
        return [info.name]

    async def compute(self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any],
                      query: QuerySet) -> dict[str, Any]:
        x = inputs.share(parameters["column"])
        gate = query.gate_required()
        if self.how == "forged":
            gate = Gate(object(), "forged", np.ones(x.shape[0], dtype=np.bool_))
        elif self.how == "widened":
            gate = gate.narrowed("widen", np.ones(x.shape[0], dtype=np.bool_))
        elif self.how == "rewritten":
            gate = await d.at_least("values", x, 1000)  # every value is below: all closed
            bits = gate.allowed
            bits.setflags(write=True)
            bits[:] = True
        return {"column": await d.open("column", x, gate)}


@pytest.mark.parametrize("how, error, match", [
    ("forged", TypeError, "cannot be built"),
    ("widened", ProtocolError, "has 1 bits; cannot narrow it with 6"),
    ("query gate", ProtocolError, "has 1 bits for 6 values"),
    ("rewritten", ValueError, "WRITEABLE"),
])
def test_a_gate_cannot_be_forged_or_widened(how: str, error: type[Exception], match: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    table = Table().numeric("x", [31, 44, 27, 60, 52, 38])
    seen = spy_openings(monkeypatch)
    with pytest.raises(error, match=match):
        observed(Forger(how), table, {"column": "x"}, RULES)
    assert seen.arith == []  # only the bits of the at_least check, if any
