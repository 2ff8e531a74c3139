"""Segmented broadcast against plaintext: every row gets its segment's first value."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from mpc.errors import ProtocolError
from mpc.protocols import scan
from mpc.ring import as_ring, to_signed
from mpc.session import Session, run_local
from mpc.sharing import AShare, reconstruct, share


def plain(starts: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = values.copy()
    for j in range(1, len(values)):
        if not starts[j]:
            out[j] = out[j - 1]
    return out


async def _broadcast(s: Session, f: AShare, a: AShare, b: AShare) -> Any:
    before = s.steps
    out = await scan.broadcast_from_starts(s, f, [a, b])
    return out, s.steps - before


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 100])
def test_each_row_gets_its_segment_start(n: int) -> None:
    rng = np.random.default_rng(n)
    starts = rng.integers(0, 2, n)
    starts[0] = 1
    a, b = rng.integers(-(10**12), 10**12, n), rng.integers(0, 50, n)
    results = run_local(_broadcast, share(as_ring(starts)), share(as_ring(a)), share(as_ring(b)))
    got = asyncio.run(results)
    rounds = max(1, (n - 1).bit_length()) if n > 1 else 0
    assert {r[1] for r in got} == {rounds}
    for column, values in enumerate((a, b)):
        out = to_signed(reconstruct(*(r[0][column] for r in got)))
        assert out.tolist() == plain(starts, values).tolist()


def test_shapes_must_agree() -> None:
    async def bad(s: Session, f: AShare, a: AShare) -> Any:
        return await scan.broadcast_from_starts(s, f, [a[:2]])

    with pytest.raises(ProtocolError, match="one-dimensional"):
        asyncio.run(
            run_local(
                bad,
                share(as_ring(np.ones(3, dtype=np.int64))),
                share(as_ring(np.ones(3, dtype=np.int64))),
            )
        )
