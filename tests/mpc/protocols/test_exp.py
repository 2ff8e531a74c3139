"""The exponential of bounded fixed-point shares against numpy, on three loopback parties:
random x in [-L, L] within the documented relative error, the boundaries (-L, L, 0,
integers, just below integers), one element (n = 1), an empty array, the round count, and
the headroom check."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc.errors import ProtocolError
from mpc.protocols import exp
from mpc.ring import as_ring, to_signed
from mpc.session import Session, run_local
from mpc.sharing import AShare, reconstruct, share

F = 20
OUT = 22


def run_exp(values: np.ndarray, limit: int) -> tuple[np.ndarray, int]:
    async def program(s: Session, x: AShare) -> Any:
        before = s.steps
        return await exp.exp(s, x, limit, F, OUT), s.steps - before

    got = asyncio.run(run_local(program, share(as_ring(values.astype(np.int64)))))
    rounds = {g[1] for g in got}
    assert len(rounds) == 1
    return to_signed(reconstruct(*(g[0] for g in got))) / 2.0**OUT, rounds.pop()


def relative_bound(limit: int) -> float:
    """The module doc's error: interpolant, floors, e^j's rounding, the last unit."""
    return 9.3e-8 + 4 * math.e * 2.0**-F + math.exp(limit) * 2.0**-exp.SCALE_BITS


def test_the_interpolant_of_e_t_on_0_1() -> None:
    a = np.array(exp.coefficients(40), dtype=np.float64) / 2.0**40
    t = np.linspace(0, 1, 10_001)
    approx = np.polynomial.polynomial.polyval(t, a)
    assert np.abs(approx / np.exp(t) - 1).max() < 9.3e-8


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([1, 6, 7]))
def test_random_values_within_the_documented_error(seed: int, limit: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(-limit << F, (limit << F) + 1, 40, dtype=np.int64)
    got, rounds = run_exp(x, limit)
    expected = np.exp(x / 2.0**F)
    assert rounds == 8 + 9 * exp.DEGREE + 9
    assert np.abs(got / expected - 1).max() <= relative_bound(limit) + 2.0**-OUT / expected.min()


def test_the_boundaries() -> None:
    limit = 6
    one = 1 << F
    x = np.array([-limit * one, limit * one, 0, one, -one, 3 * one - 1, -2 * one - 1, 1, -1],
                 dtype=np.int64)
    got, _ = run_exp(x, limit)
    expected = np.exp(x / 2.0**F)
    assert np.abs(got / expected - 1).max() <= relative_bound(limit) + 2.0**-OUT / expected.min()
    single, _ = run_exp(np.array([one // 2], dtype=np.int64), 1)
    assert single[0] == pytest.approx(math.exp(0.5), rel=relative_bound(1))


def test_an_empty_array_and_the_headroom() -> None:
    got, rounds = run_exp(np.zeros(0, dtype=np.int64), 3)
    assert got.shape == (0,) and rounds == 0
    with pytest.raises(ProtocolError, match="may overflow"):
        exp.check_range(8, F, OUT)
    with pytest.raises(ProtocolError, match="not defined"):
        exp.check_range(0, F, OUT)
