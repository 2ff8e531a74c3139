"""Division by secret positive integers against exact rationals, on three loopback parties:
the one-hot of the leading bit at its boundaries (powers of two, 2^low, 2^high - 1, 0),
quotients of negative, zero and largest numerators within the documented error, one
divisor (n = 1), a zero divisor giving 0, empty batches, and the round count."""

from __future__ import annotations

import asyncio
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc.errors import ProtocolError
from mpc.protocols import divide
from mpc.ring import as_ring, to_signed
from mpc.session import Session, run_local
from mpc.sharing import AShare, reconstruct, share


def run_divide(num: np.ndarray, den: np.ndarray, low: int, high: int, ratio_bits: int,
               frac_bits: int) -> tuple[np.ndarray, int]:
    async def program(s: Session, v: AShare, x: AShare) -> Any:
        before = s.steps
        out = await divide.divide(s, v, x, low, high, ratio_bits, frac_bits)
        return out, s.steps - before

    got = asyncio.run(run_local(program, share(as_ring(num.astype(np.int64))),
                                share(as_ring(den.astype(np.int64)))))
    rounds = {g[1] for g in got}
    assert len(rounds) == 1
    return to_signed(reconstruct(*(g[0] for g in got))), rounds.pop()


def error_bound(quotient: Fraction, r: int, frac_bits: int) -> float:
    """The module doc's bound: (|v / x| + 1) 2^-(r - 2) + 2^-f."""
    return (abs(float(quotient)) + 1) * 2.0 ** -(r - 2) + 2.0**-frac_bits


def test_the_leading_one_hot_at_its_boundaries() -> None:
    low, high = 3, 12
    values = np.array([0, 1, 7, 8, 9, 15, 16, 1023, 1024, 2047, 4095], dtype=np.int64)

    async def program(s: Session, x: AShare) -> Any:
        return await divide.leading_one_hot(s, x, low, high)

    got = asyncio.run(run_local(program, share(as_ring(values))))
    h = to_signed(reconstruct(*got))
    assert h.shape == (high - low, values.size)
    for i, v in enumerate(values.tolist()):
        expected = [0] * (high - low)
        if v >= 1 << low:
            expected[v.bit_length() - 1 - low] = 1
        assert h[:, i].tolist() == expected, v


@settings(max_examples=8, deadline=None)
@given(st.integers(1, 4), st.integers(1, 3), st.integers(0, 2**32 - 1),
       st.sampled_from([(0, 6, 20), (12, 40, 20), (5, 30, 16)]))
def test_quotients_within_the_documented_error(m: int, q: int, seed: int,
                                               case: tuple[int, int, int]) -> None:
    ratio_bits, high, frac_bits = case
    low = 4
    rng = np.random.default_rng(seed)
    den = rng.integers(1 << low, 1 << high, m, dtype=np.int64)
    den[0] = (1 << low) if m > 1 else den[0]  # the smallest divisor
    if m > 2:
        den[1] = (1 << high) - 1  # the largest
        den[2] = 0  # no divisor: quotient 0
    limit = (den.astype(object) << ratio_bits)
    num = np.array([[int(rng.integers(-(1 << 62), 1 << 62)) % (2 * int(limit[i]) + 1)
                     - int(limit[i]) for _ in range(q)] for i in range(m)], dtype=np.int64)
    num[den == 0] = 0
    num[0, 0] = int(limit[0])  # the largest numerator the ratio admits
    if q > 1:
        num[0, 1] = -int(limit[0])
    got, rounds = run_divide(num, den, low, high, ratio_bits, frac_bits)
    r = divide.r_bits_for(ratio_bits)
    assert rounds == (80 if high - 1 > r - 1 else 72)  # no shift when all k <= r - 1
    for i in range(m):
        for j in range(q):
            if den[i] == 0:
                assert got[i, j] == 0
                continue
            exact = Fraction(int(num[i, j]), int(den[i]))
            assert abs(got[i, j] / 2.0**frac_bits - float(exact)) <= error_bound(
                exact, r, frac_bits), (num[i, j], den[i])


def test_one_divisor_negatives_and_zero_numerators() -> None:
    num = np.array([[-(3 << 20), 0, 5 << 20, -1]], dtype=np.int64)
    den = np.array([3 << 10], dtype=np.int64)
    got, _ = run_divide(num, den, 8, 30, 12, 20)
    expected = [-(1 << 10), 0, 5 * (1 << 10) / 3, -1 / (3 << 10)]
    assert got.shape == (1, 4)
    assert np.abs(got[0] / 2.0**20 - np.array(expected)).max() <= 2 * error_bound(
        Fraction(5 << 10, 3), divide.r_bits_for(12), 20)
    assert got[0, 1] == 0


def test_a_divisor_below_2_low_counts_as_zero() -> None:
    got, _ = run_divide(np.array([[5], [0]], dtype=np.int64), np.array([5, 0]), 4, 10, 2, 8)
    assert got.tolist() == [[0], [0]]


def test_empty_batches_and_bad_arguments() -> None:
    async def program(s: Session, v: AShare, x: AShare) -> Any:
        return await divide.divide(s, v, x, 0, 8, 0, 8)

    empty = asyncio.run(run_local(program, share(as_ring(np.zeros((0, 2), dtype=np.int64))),
                                  share(as_ring(np.zeros(0, dtype=np.int64)))))
    assert empty[0].shape == (0, 2)
    with pytest.raises(ProtocolError, match="ratio of 2\\^50"):
        divide.r_bits_for(50)
    with pytest.raises(ProtocolError, match="fractional bits needs at most"):
        run_divide(np.ones((1, 1)), np.ones(1), 0, 8, 20, 60)
    with pytest.raises(ProtocolError, match="need 0 <= low < high <= 62"):
        run_divide(np.ones((1, 1)), np.ones(1), 8, 8, 0, 8)
    with pytest.raises(ProtocolError, match="divisors of shape"):
        run_divide(np.ones((2, 1)), np.ones(1), 0, 8, 0, 8)
