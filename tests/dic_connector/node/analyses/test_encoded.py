"""The catalogue on a table encoded by the real encoder (mapping -> validate -> encode).

Several analyses run in one session, as a node may batch them, over two sites; each release
is compared with the plaintext reference of the rules and with numpy, and the transcripts
with the independent spy.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dic_connector.encoding.encode import encode_table
from dic_connector.encoding.validate import validate_rows
from dic_connector.mapping.cohort import CohortMapping, loads_mapping
from dic_connector.node.analyses.base import Inputs
from dic_connector.node.analyses.catalog import catalog
from dic_connector.node.analyses.disclosure import Release, Rules
from dic_connector.node.analyses.manifest import parse_manifest
from mpc.ring import as_ring
from mpc.session import Session, run_local
from mpc.sharing import share
from tests.dic_connector.node.analyses import reference
from tests.dic_connector.node.analyses.support import (
    Opened,
    Segments,
    assert_transcript_matches,
    spying,
)

MAPPING = """\
format: dic-cohort/1
name: enc
query: {sql: "SELECT * FROM t", key: pid}
columns:
  - {name: patient_key, kind: patient_key, source: pid}
  - {name: dose, kind: numeric, source: dose, unit: Gy, scale: 2, missing: indicator}
  - {name: gender, kind: categorical, source: gender, levels: [male, female, other]}
  - {name: response, kind: categorical, source: response, levels: [CR, PR, SD, PD],
     missing: indicator}
"""


@pytest.fixture(scope="module")
def mapping() -> CohortMapping:
    return loads_mapping(MAPPING, "enc.yaml")


def shared_inputs(rows: list[dict[str, Any]], mapping: CohortMapping,
                  sites: tuple[tuple[str, int], ...]) -> list[Inputs]:
    clean, _, _ = validate_rows(rows, mapping)
    assert len(clean) == len(rows)
    enc = encode_table(clean, mapping)
    manifest = parse_manifest(enc.manifest())
    views = {name: share(as_ring(enc.column(name).copy())) for name in enc.names}
    return [Inputs({n: v[i] for n, v in views.items()}, manifest, sites) for i in range(3)]


def run_all(inputs: list[Inputs], requests: list[tuple[str, dict[str, Any]]],
            rules: Rules) -> tuple[list[Release], Opened]:
    analyses = catalog()

    async def program(s: Session, mine: Inputs) -> list[Release]:
        # one session, several analyses in sequence, as a node may batch them
        return [await analyses[name].run(s, mine, params, rules) for name, params in requests]

    with spying() as seen:
        results: list[list[Release]] = asyncio.run(run_local(program, inputs))
    assert results[0] == results[1] == results[2]
    assert_transcript_matches([o for r in results[0] for o in r.transcript], seen)
    return results[0], seen


row = st.fixed_dictionaries({
    "dose": st.none() | st.decimals(Decimal("-50"), Decimal("80"), places=2),
    "gender": st.sampled_from(["male", "female", "other"]),
    "response": st.none() | st.sampled_from(["CR", "PR", "SD", "PD"]),
})


def _expect(got: Release, expected: reference.Expected, segments: Segments,
            rules: Rules) -> None:
    if expected.refusal is not None:
        assert got.aggregates["suppressed"] is True
        assert reference.reason_matches(got.aggregates["reason"], expected.refusal, segments,
                                        rules)
    else:
        assert got.aggregates == expected.aggregates


@settings(max_examples=15, deadline=None)
@given(st.lists(row, min_size=1, max_size=25), st.integers(1, 5), st.integers(0, 25))
def test_catalogue_on_encoded_table(mapping: CohortMapping, rows: list[dict[str, Any]],
                                    k: int, cut: int) -> None:
    rows = [{"patient_key": str(i), **r} for i, r in enumerate(rows)]
    cut %= len(rows) + 1
    sites: Segments = (("lmu", cut), ("gemelli", len(rows) - cut))
    rules = Rules(k, 1)
    requests = [("count", {}), ("count", {"column": "dose"}), ("mean", {"column": "dose"}),
                ("median", {"column": "dose"}), ("frequency", {"column": "gender"}),
                ("frequency", {"column": "response"})]
    out, seen = run_all(shared_inputs(rows, mapping, sites), requests, rules)

    dose = [None if r["dose"] is None else int(Decimal(r["dose"]).scaleb(2)) for r in rows]
    gender = [r["gender"] for r in rows]
    response = [r["response"] for r in rows]
    expected = [
        reference.count(None, sites, rules, indicator=False),
        reference.count(dose, sites, rules, indicator=True),
        reference.mean(dose, 2, sites, rules, indicator=True),
        reference.median(dose, 2, sites, rules, indicator=True),
        reference.frequency(gender, ["male", "female", "other"], sites, rules, False),
        reference.frequency(response, ["CR", "PR", "SD", "PD"], sites, rules, True),
    ]
    for got, want in zip(out, expected, strict=True):
        _expect(got, want, sites, rules)
    assert [(o.kind, list(o.values or ())) for o in seen.openings
            if not o.where.startswith("mpc.protocols.sort.")] == [
        opening for want in expected for opening in want.openings]
    doses = [float(d) for d in (r["dose"] for r in rows) if d is not None]
    if expected[2].refusal is None:  # numpy cross-check of the statistics
        assert Decimal(out[2].aggregates["sum"]) == sum(
            (Decimal(r["dose"]) for r in rows if r["dose"] is not None), Decimal(0))
        assert out[2].aggregates["mean"] == pytest.approx(float(np.mean(doses)))
        assert out[3].aggregates["median"] == pytest.approx(float(np.median(doses)),
                                                           abs=1e-9)


def test_min_subset_size_refuses_a_small_site(mapping: CohortMapping) -> None:
    rows = [{"patient_key": str(i), "dose": Decimal(i), "gender": "male", "response": "CR"}
            for i in range(12)]
    sites: Segments = (("lmu", 2), ("gemelli", 10))
    out, seen = run_all(shared_inputs(rows, mapping, sites),
                        [("count", {"column": "dose"}), ("frequency", {"column": "gender"})],
                        Rules.of(5))
    assert seen.arith == []
    for got in out:
        assert got.aggregates["suppressed"] is True and "'lmu'" in got.aggregates["reason"]


def test_columns_read_from_a_real_manifest(mapping: CohortMapping) -> None:
    rows = [{"patient_key": "1", "dose": Decimal("1.5"), "gender": "male", "response": None}]
    manifest = shared_inputs(rows, mapping, (("s", 1),))[0].manifest
    analyses = catalog()
    assert analyses["count"].columns({"column": "dose"}, manifest) == ["dose__present"]
    assert analyses["count"].columns({"column": "gender"}, manifest) == []
    assert analyses["mean"].columns({"column": "dose"}, manifest) == ["dose", "dose__present"]
    assert analyses["median"].columns({"column": "dose"}, manifest) == ["dose",
                                                                       "dose__present"]
    assert analyses["frequency"].columns({"column": "response"}, manifest) == [
        "response=CR", "response=PR", "response=SD", "response=PD", "response__present"]
    assert {manifest[c].column for c in analyses["frequency"].columns(
        {"column": "gender"}, manifest)} == {"gender"}
