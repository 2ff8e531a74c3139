"""The catalogue on a table encoded by the real encoder (mapping -> validate -> encode)."""

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
from dic_connector.node.analyses.base import Inputs, parse_manifest
from dic_connector.node.analyses.catalog import catalog
from mpc.ring import as_ring
from mpc.session import Session, run_local
from mpc.sharing import share

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
            k: int) -> list[dict[str, Any]]:
    analyses = catalog()

    async def program(s: Session, mine: Inputs) -> list[dict[str, Any]]:
        # one session, several analyses in sequence, as a node may batch them
        return [await analyses[name].run(s, mine, params, k) for name, params in requests]

    results: list[list[dict[str, Any]]] = asyncio.run(run_local(program, inputs))
    assert results[0] == results[1] == results[2]
    return results[0]


row = st.fixed_dictionaries({
    "dose": st.none() | st.decimals(Decimal("-50"), Decimal("80"), places=2),
    "gender": st.sampled_from(["male", "female", "other"]),
    "response": st.none() | st.sampled_from(["CR", "PR", "SD", "PD"]),
})


@settings(max_examples=15, deadline=None)
@given(st.lists(row, min_size=1, max_size=25), st.integers(1, 5), st.integers(0, 25))
def test_catalogue_on_encoded_table(mapping: CohortMapping, rows: list[dict[str, Any]],
                                    k: int, cut: int) -> None:
    rows = [{"patient_key": str(i), **r} for i, r in enumerate(rows)]
    cut = min(cut, len(rows))
    sites = (("lmu", cut), ("gemelli", len(rows) - cut))
    requests = [("count", {}), ("count", {"column": "dose"}), ("mean", {"column": "dose"}),
                ("median", {"column": "dose"}), ("frequency", {"column": "gender"}),
                ("frequency", {"column": "response"})]
    out = run_all(shared_inputs(rows, mapping, sites), requests, k)

    doses = [Decimal(r["dose"]) for r in rows if r["dose"] is not None]
    small = {"n": f"<{k}", "suppressed": True}
    assert out[0] == ({"n": len(rows)} if len(rows) >= k else small)
    n = len(doses)
    if n < k:
        assert out[1] == out[2] == out[3] == small
    else:
        assert out[1] == {"n": n}
        total = sum(doses, Decimal(0))
        assert out[2]["n"] == n and Decimal(out[2]["sum"]) == total
        assert out[2]["mean"] == pytest.approx(float(np.mean([float(d) for d in doses])))
        assert out[3] == {"n": n, "median": pytest.approx(
            float(np.median([float(d) for d in doses])), abs=1e-9)}
    for result, column, levels in ((out[4], "gender", ["male", "female", "other"]),
                                   (out[5], "response", ["CR", "PR", "SD", "PD"])):
        counts = {lv: sum(r[column] == lv for r in rows) for lv in levels}
        assert result == {"levels": {lv: c if c >= k else f"<{k}" for lv, c in counts.items()},
                          "min_cell_count": k}


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
