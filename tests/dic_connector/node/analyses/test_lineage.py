"""The version lineage rule: declared differences parsed and checked, the decision against
the ledger, and version differencing as a researcher would try it through the analyses (on
three loopback parties): refused, while the same two releases without the rule give the
withdrawn patient's age and response away."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import numpy as np
import pytest

from dic_connector.errors import AnalysisError
from dic_connector.node.analyses.base import Analysis, Inputs
from dic_connector.node.analyses.count import Count
from dic_connector.node.analyses.disclosure import Release, Rules
from dic_connector.node.analyses.frequency import Frequency
from dic_connector.node.analyses.ledger import Ledger, Released
from dic_connector.node.analyses.lineage import (
    VersionDifference,
    declared_differences,
    merge_differences,
    version_refusal,
)
from dic_connector.node.analyses.mean import Mean
from dic_connector.node.analyses.median import Median
from mpc.session import Session, run_local
from mpc.sharing import AShare
from tests.dic_connector.node.analyses.support import Table

V1, V2, V3 = (str(uuid.UUID(int=i)) for i in (1, 2, 3))
D = "d-tm"


def entry(columns: tuple[str, ...], *contributors: str) -> Released:
    empty = AShare(0, np.zeros((len(contributors), 0), np.uint64),
                   np.zeros((len(contributors), 0), np.uint64))
    return Released("r", (), (), contributors, empty, columns)


def test_declarations_are_parsed_into_unordered_pairs() -> None:
    manifest = {"columns": [], "lineage": {"previous": [
        {"version_id": V1, "removed": 3, "added": 0}, {"version_id": V2, "removed": 0,
                                                       "added": 9}]}}
    out = declared_differences(V3, manifest)
    assert out == {frozenset({V1, V3}): VersionDifference(3, 0),
                   frozenset({V2, V3}): VersionDifference(0, 9)}
    assert declared_differences(V3, {"columns": []}) == {}
    first = merge_differences([out, {frozenset({V1, V3}): VersionDifference(8, 8)}])
    assert first[frozenset({V1, V3})] == VersionDifference(3, 0)


@pytest.mark.parametrize("lineage, message", [
    ([], "must be an object with a list 'previous'"),
    ({"previous": [1]}, r"previous\[0\] must be an object"),
    ({"previous": [{"version_id": V3, "removed": 0, "added": 0}]}, "another version"),
    ({"previous": [{"version_id": V1, "removed": -1, "added": 0}]}, r"\.removed must be"),
    ({"previous": [{"version_id": V1, "removed": 0, "added": True}]}, r"\.added must be"),
])
def test_malformed_declarations_name_the_entry(lineage: Any, message: str) -> None:
    with pytest.raises(AnalysisError, match=message):
        declared_differences(V3, {"columns": [], "lineage": lineage})


@pytest.mark.parametrize("difference, refused", [
    (VersionDifference(0, 0), False),   # the same rows (a re-pull without changes)
    (VersionDifference(1, 0), True),    # one patient withdrew
    (VersionDifference(0, 4), True),    # four patients added
    (VersionDifference(12, 1), True),   # many left, one arrived: the arrival is singled out
    (VersionDifference(5, 0), False),
    (VersionDifference(5, 7), False),
    (None, True),                       # nobody declared
])
def test_the_rule(difference: VersionDifference | None, refused: bool) -> None:
    ledger = Ledger((entry(("age",), f"{D}/{V1}", f"d-tr/{V1}"),))
    differences = {} if difference is None else {frozenset({V1, V2}): difference}
    reason = version_refusal(ledger, [f"{D}/{V2}"], ["age"], differences, 5,
                             {f"{D}/{V2}": "tm"})
    assert (reason is not None) == refused
    if reason is not None:
        assert "'age'" in reason and "'tm'" in reason and "version lineage" in reason


def test_only_the_same_columns_of_other_versions_of_the_same_dataset_count() -> None:
    ledger = Ledger((entry(("age", "dose"), f"{D}/{V1}"),))
    small = {frozenset({V1, V2}): VersionDifference(1, 0)}
    assert version_refusal(ledger, [f"{D}/{V2}"], ["ecog"], small, 5) is None
    assert version_refusal(ledger, [f"{D}/{V1}"], ["age"], small, 5) is None  # same version
    assert version_refusal(ledger, [f"other/{V2}"], ["age"], small, 5) is None
    assert version_refusal(ledger, [f"{D}/{V2}"], [], small, 5) is None  # count(): public N
    assert version_refusal(None, [f"{D}/{V2}"], ["age"], small, 5) is None
    reason = version_refusal(ledger, [f"{D}/{V2}"], ["dose", "age"], small, 5)
    assert reason is not None and "'age' (and 1 more)" in reason


# -- through the analyses -------------------------------------------------------------

AGES = [40 + (7 * i) % 37 for i in range(30)]
RESPONSE = [["CR", "PR", "SD"][i % 3] for i in range(30)]
WITHDRAWN = 0  # the patient who leaves between the versions: age 40, CR


class Lineage:
    """Three parties that keep a ledger, with a dataset shared in versions (``age`` has a
    missing-value indicator, so ``count(age)`` is a statistic, not the public row count)."""

    def __init__(self) -> None:
        self.ledgers: list[list[Released]] = [[], [], []]
        self.differences: dict[frozenset[str], VersionDifference] = {}

    def run(self, analysis: Analysis, version: str, rows: list[int],
            parameters: dict[str, Any], rules: Rules, ledger: bool = True) -> Release:
        table = (Table().numeric("age", [AGES[i] for i in rows], present=True)
                 .categorical("response", ["CR", "PR", "SD"], [RESPONSE[i] for i in rows]))
        contributors = (f"{D}/{version}",)
        views = [Inputs(i.columns, i.manifest, i.segments, contributors, self.differences)
                 for i in table.inputs((("tm", len(rows)),))]

        async def program(s: Session, mine: Inputs) -> Release:
            return await analysis.run(s, mine, parameters, rules,
                                      Ledger(tuple(self.ledgers[s.party])) if ledger else None)

        releases: list[Release] = asyncio.run(run_local(program, views))
        assert releases[0].aggregates == releases[1].aggregates == releases[2].aggregates
        for party, release in enumerate(releases):
            if not release.refused:
                recorded = release.recorded
                self.ledgers[party].append(Released(
                    f"r{len(self.ledgers[party])}", recorded.cells if recorded else (),
                    recorded.opened if recorded else (), contributors,
                    recorded.counts if recorded else AShare(
                        party, np.zeros((1, 0), np.uint64), np.zeros((1, 0), np.uint64)),
                    tuple(analysis.typed_columns(parameters, views[party].manifest))))
        return releases[0]


EVERYONE = list(range(30))
REMAINING = [i for i in EVERYONE if i != WITHDRAWN]


@pytest.mark.parametrize("analysis, column", [
    (Mean(), "age"), (Count(), "age"), (Median(), "age"), (Frequency(), "response")])
def test_version_differencing_is_refused(analysis: Analysis, column: str) -> None:
    nodes = Lineage()
    nodes.differences[frozenset({V1, V2})] = VersionDifference(1, 0)
    first = nodes.run(analysis, V1, EVERYONE, {"column": column}, Rules.of(5))
    assert not first.refused
    second = nodes.run(analysis, V2, REMAINING, {"column": column}, Rules.of(5))
    assert second.refused and "version lineage" in second.aggregates["reason"]
    assert second.transcript == ()  # decided on public information: nothing opened


def test_without_the_rule_the_two_releases_give_the_patient_away() -> None:
    nodes = Lineage()  # no ledger: every release is judged alone
    rules = Rules.of(5)
    mean = [nodes.run(Mean(), v, rows, {"column": "age"}, rules, ledger=False).aggregates
            for v, rows in ((V1, EVERYONE), (V2, REMAINING))]
    assert int(mean[0]["sum"]) - int(mean[1]["sum"]) == AGES[WITHDRAWN] == 40
    table = [nodes.run(Frequency(), v, rows, {"column": "response"}, rules,
                       ledger=False).aggregates["levels"]
             for v, rows in ((V1, EVERYONE), (V2, REMAINING))]
    assert [lv for lv in table[0] if table[0][lv] != table[1][lv]] == [RESPONSE[WITHDRAWN]]


def test_enough_changed_rows_release_again() -> None:
    nodes = Lineage()
    later = EVERYONE[6:]  # six patients left
    nodes.differences[frozenset({V1, V3})] = VersionDifference(6, 0)
    nodes.run(Mean(), V1, EVERYONE, {"column": "age"}, Rules.of(5))
    again = nodes.run(Mean(), V3, later, {"column": "age"}, Rules.of(5))
    assert not again.refused and int(again.aggregates["sum"]) == sum(AGES[i] for i in later)
