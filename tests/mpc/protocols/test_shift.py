"""Exact right shift against numpy's floor division, at the edges of the domain."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from mpc.errors import ProtocolError
from mpc.protocols.shift import shift_right
from mpc.ring import as_ring, to_signed
from mpc.session import Session, run_local
from mpc.sharing import AShare, reconstruct, share


def run(x: np.ndarray, d: int | np.ndarray, bits: int) -> tuple[np.ndarray, set[int]]:
    async def program(s: Session, v: AShare) -> Any:
        before = s.steps
        return await shift_right(s, v, d, bits), s.steps - before

    got = asyncio.run(run_local(program, share(as_ring(x))))
    return to_signed(reconstruct(*(g[0] for g in got))), {g[1] for g in got}


@pytest.mark.parametrize("d, bits", [(1, 64), (16, 40), (30, 33), (63, 2)])
def test_matches_floor_division(d: int, bits: int) -> None:
    rng = np.random.default_rng(d)
    low, high = -(1 << (bits - 1 + d)), (1 << (bits - 1 + d)) - 1
    low, high = max(low, -(1 << 63)), min(high, (1 << 63) - 1)
    edges = [min(max(v, low), high) for v in (0, 1, -1, low, high, (1 << d) - 1, -(1 << d), 1 << d)]
    x = np.array(
        edges + rng.integers(low, high, 200, dtype=np.int64, endpoint=True).tolist(), dtype=np.int64
    )
    got, rounds = run(x, d, bits)
    assert got.tolist() == (x >> d).tolist()
    assert rounds == {8}


def test_shapes_and_domain() -> None:
    got, _ = run(np.arange(-6, 6, dtype=np.int64).reshape(3, 4), 2, 8)
    assert got.tolist() == (np.arange(-6, 6).reshape(3, 4) >> 2).tolist()
    with pytest.raises(ProtocolError):
        run(np.zeros(2, dtype=np.int64), 0, 64)


def test_per_element_shifts_share_the_rounds() -> None:
    rng = np.random.default_rng(7)
    x = rng.integers(-(1 << 62), 1 << 62, 64, dtype=np.int64)
    shifts = rng.integers(0, 64, 64, dtype=np.int64)
    shifts[:3] = [0, 63, 1]
    got, rounds = run(x, shifts, 64)
    assert got.tolist() == [int(v) >> int(d) for v, d in zip(x, shifts, strict=True)]
    assert rounds == {8}
    for bad in (np.array([0, 64], dtype=np.int64), np.array([-1, 0], dtype=np.int64),
                np.zeros(3, dtype=np.int64)):
        with pytest.raises(ProtocolError, match="shifts of shape"):
            run(np.zeros(2, dtype=np.int64), bad, 64)
