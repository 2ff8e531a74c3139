"""Node-side assembly of a delta version: the composed share pairs of three nodes reconstruct
``base[keep]`` followed by the fresh rows, and ``begin``'s checks refuse a delta whose base
is not committed, of another dataset or columns, whose runs leave the base, or whose
declared lineage against the base is not the delta's own."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest

from dic_connector.errors import ConflictError
from dic_connector.node.store.delta import check_delta, compose, keep_positions, kept_rows
from dic_connector.node.store.enums import VersionState
from dic_connector.node.store.models import DatasetVersion
from mpc.ring import as_ring
from mpc.sharing import AShare, reconstruct, share


def pairs(values: list[int]) -> list[bytes]:
    """Each node's ``x_i || x_(i+1)`` body of a fresh sharing of ``values``."""
    return [np.concatenate([v.a, v.b]).astype("<u8").tobytes()
            for v in share(as_ring(np.array(values, dtype=np.int64)))]


def opened(bodies: list[bytes], rows: int) -> list[int]:
    return [int(v) for v in reconstruct(*(AShare.from_bytes(i, body, rows)
                                          for i, body in enumerate(bodies)))]


def test_composed_pairs_reconstruct_the_kept_then_the_fresh_rows() -> None:
    base = [10, 11, 12, 13, 14, 15]
    fresh = [90, 91]
    keep = keep_positions([[0, 2], [4, 6]], len(base))
    assert keep.tolist() == [0, 1, 4, 5]
    bodies = [compose(b, len(base), keep, f)
              for b, f in zip(pairs(base), pairs(fresh), strict=True)]
    assert opened(bodies, 6) == [10, 11, 14, 15, 90, 91]


def test_an_empty_delta_copies_and_nothing_kept_is_only_fresh() -> None:
    base = [5, 6, 7]
    bodies = [compose(b, 3, keep_positions([[0, 3]], 3), b"") for b in pairs(base)]
    assert opened(bodies, 3) == base
    bodies = [compose(b, 3, keep_positions([], 3), f)
              for b, f in zip(pairs(base), pairs([8]), strict=True)]
    assert opened(bodies, 1) == [8]


@pytest.mark.parametrize("runs", [[[2, 1]], [[0, 2], [1, 3]], [[0, 4]], [[3, 3]], [[0]]])
def test_runs_outside_the_base_or_out_of_order_are_refused(runs: list[list[int]]) -> None:
    with pytest.raises(ConflictError, match=r"keep\[\d\]"):
        keep_positions(runs, 3)


def test_a_base_column_of_another_size_is_refused() -> None:
    with pytest.raises(ConflictError, match="base column holds"):
        compose(b"\0" * 16, 2, keep_positions([[0, 1]], 2), b"")


DATASET = uuid.UUID(int=7)
COLUMNS = [{"name": "age", "kind": "numeric"}]


def base_version(state: VersionState = VersionState.COMMITTED, rows: int = 10,
                 dataset: uuid.UUID = DATASET, columns: Any = COLUMNS) -> DatasetVersion:
    return DatasetVersion(id=uuid.UUID(int=1), dataset_id=dataset, number=1, state=state,
                          manifest={"columns": columns}, row_count=rows)


def manifest(keep: list[list[int]], lineage: tuple[int, int] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"columns": COLUMNS,
                           "delta": {"base": str(uuid.UUID(int=1)), "keep": keep}}
    if lineage is not None:
        out["lineage"] = {"previous": [{"version_id": str(uuid.UUID(int=1)),
                                        "removed": lineage[0], "added": lineage[1]}]}
    return out


def test_a_consistent_delta_passes() -> None:
    check_delta(manifest([[0, 4], [5, 10]], lineage=(1, 2)), 11, DATASET, base_version())
    assert kept_rows(manifest([[0, 4], [5, 10]])) == 9
    assert kept_rows({"columns": COLUMNS}) == 0


@pytest.mark.parametrize(("base", "rows", "lineage", "reason"), [
    (base_version(VersionState.DELETED), 10, None, "is deleted here, not committed"),
    (base_version(VersionState.PREPARED), 10, None, "is prepared here"),
    (base_version(dataset=uuid.UUID(int=8)), 10, None, "another dataset"),
    (base_version(columns=[{"name": "weight"}]), 10, None, "other columns"),
    (base_version(), 8, None, "more than the version's 8"),
    (base_version(), 11, (0, 2), "is not the delta's"),
])
def test_begin_refuses_a_delta_it_cannot_build(base: DatasetVersion, rows: int,
                                               lineage: tuple[int, int] | None,
                                               reason: str) -> None:
    with pytest.raises(ConflictError, match=reason):
        check_delta(manifest([[0, 4], [5, 10]], lineage), rows, DATASET, base)
