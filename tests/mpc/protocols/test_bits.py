"""A2B, MSB, bit injection and B2A against plaintext, on three loopback parties."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc.errors import ProtocolError
from mpc.protocols import bits
from mpc.protocols.boolean import BShare, reconstruct_bool, share_bool
from mpc.ring import as_ring
from mpc.session import Session, run_local
from mpc.sharing import AShare, reconstruct, share

ring_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
EDGES = [0, 1, 2**63, 2**64 - 1, 2**63 - 1, 2**32, -(2**32), -1]


def run(program: Any, *args: Any) -> list[Any]:
    return asyncio.run(run_local(program, *args))


async def _a2b(s: Session, x: AShare) -> Any:
    before = s.steps
    return await bits.a2b(s, x), s.steps - before


@settings(max_examples=25, deadline=None)
@given(st.lists(ring_ints, max_size=30))
def test_a2b_equals_plaintext_in_seven_rounds(values: list[int]) -> None:
    x = as_ring(values + EDGES)
    results = run(_a2b, share(x))
    assert np.array_equal(reconstruct_bool(*(r[0] for r in results)), x)
    assert {r[1] for r in results} == {7}


async def _msb(s: Session, x: AShare, k: int) -> Any:
    before = s.steps
    return await bits.msb(s, x, k), s.steps - before


@pytest.mark.parametrize("k", [2, 3, 7, 16, 33, 63, 64])
def test_msb_of_low_bits(k: int) -> None:
    rng = np.random.default_rng(k)
    x = np.concatenate([rng.integers(0, 2**64, 100, dtype=np.uint64), as_ring(EDGES),
                        as_ring([2**k - 1, 2**(k - 1), 2**(k - 1) - 1])])
    results = run(_msb, share(x), [k] * 3)
    expected = (x >> np.uint64(k - 1)) & np.uint64(1)
    assert np.array_equal(reconstruct_bool(*(r[0] for r in results)), expected)
    assert {r[1] for r in results} == {1 + bits.carry_rounds(k)}


def test_msb_keeps_shape() -> None:
    x = as_ring(np.arange(-6, 6).reshape(3, 4))
    out = run(_msb, share(x), [64] * 3)
    assert np.array_equal(reconstruct_bool(*(r[0] for r in out)),
                          (np.arange(-6, 6) < 0).reshape(3, 4).astype(np.uint64))


async def _gp(s: Session, x: AShare) -> Any:
    u, v = bits.split_sum(x)
    return await bits.generate_propagate(s, u, v, x.shape)


def test_generate_propagate_and_split() -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 2**64, 50, dtype=np.uint64)
    views = share(x)
    u = views[0].a + views[0].b
    v = views[1].b
    results = run(_gp, views)
    assert np.array_equal(reconstruct_bool(*(r[0] for r in results)), u & v)
    assert np.array_equal(reconstruct_bool(*(r[1] for r in results)), u ^ v)


async def _inject(s: Session, b: BShare) -> Any:
    before = s.steps
    return await bits.inject(s, b), s.steps - before


def test_inject_uses_bit_zero_in_one_round() -> None:
    rng = np.random.default_rng(2)
    words = rng.integers(0, 2**64, 200, dtype=np.uint64)
    results = run(_inject, share_bool(words))
    assert np.array_equal(reconstruct(*(r[0] for r in results)), words & np.uint64(1))
    assert {r[1] for r in results} == {1}


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), max_size=20))
def test_b2a_round_trip(values: list[int]) -> None:
    words = np.array([*values, 0, 2**64 - 1, 2**63], dtype=np.uint64)

    async def program(s: Session, x: BShare) -> AShare:
        return await bits.b2a(s, x)

    assert np.array_equal(reconstruct(*run(program, share_bool(words))), words)


@pytest.mark.parametrize("shape,axis", [((0,), 0), ((1,), 0), ((300,), 0), ((40, 3), 0),
                                        ((4, 5), 1)])
def test_b2a_sum(shape: tuple[int, ...], axis: int) -> None:
    rng = np.random.default_rng(len(shape))
    words = rng.integers(0, 2**64, shape, dtype=np.uint64)

    async def program(s: Session, b: BShare) -> Any:
        before = s.steps
        return await bits.b2a_sum(s, b, axis), s.steps - before

    results = run(program, share_bool(words))
    expected = np.sum(words & np.uint64(1), axis=axis, dtype=np.uint64)
    assert np.array_equal(reconstruct(*(r[0] for r in results)), expected)
    assert {r[1] for r in results} == {2}


def test_carry_rounds() -> None:
    assert [bits.carry_rounds(k) for k in (2, 3, 4, 5, 16, 17, 33, 64)] == [0, 1, 2, 2, 4, 4,
                                                                           5, 6]


@pytest.mark.parametrize("k", [2, 5, 17, 45, 64])
@pytest.mark.parametrize("n", [1, 31, 33, 257])
def test_msb_compacting_tree_at_awkward_sizes(k: int, n: int) -> None:
    """Sizes that are not multiples of the packing (64 // K values per word, halved words
    per tree level) must come out in the right order."""
    rng = np.random.default_rng(n * 100 + k)
    x = rng.integers(0, 2**64, n, dtype=np.uint64)
    results = run(_msb, share(x), [k] * 3)
    expected = (x >> np.uint64(k - 1)) & np.uint64(1)
    assert np.array_equal(reconstruct_bool(*(r[0] for r in results)), expected)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(-(2**50) + 1, 2**50 - 1), max_size=30), st.integers(1, 50))
def test_trunc_exact_is_floor_division_in_eight_rounds(values: list[int], d: int) -> None:
    edge = 2 ** min(d, 49)
    x = np.array([*values, 0, 1, -1, 2**50 - 1, -(2**50) + 1, edge, -edge], dtype=np.int64)

    async def program(s: Session, shared: AShare) -> tuple[AShare, int]:
        before = s.steps
        return await bits.trunc_exact(s, shared, d, 50), s.steps - before

    results = run(program, share(as_ring(x)))
    got = reconstruct(*(r[0] for r in results)).view(np.int64)
    assert got.tolist() == [v >> d for v in x.tolist()]
    assert {r[1] for r in results} == {8}


def test_trunc_exact_and_b2a_refuse_undefined_widths() -> None:
    async def program(s: Session, shared: AShare) -> AShare:
        return await bits.trunc_exact(s, shared, 10, 63)

    with pytest.raises(ProtocolError, match="need 0 < d <= magnitude_bits <= 62"):
        run(program, share(as_ring([1])))


def test_trunc_exact_in_chunks_of_injected_bits() -> None:
    """Above TRUNC_CHUNK_BITS injected bits the B2A runs in chunks (one round each)."""
    width = 56 + 1 - 30
    n = bits.TRUNC_CHUNK_BITS // width + 7  # two chunks
    x = np.random.default_rng(5).integers(-(2**55), 2**55, n, dtype=np.int64)

    async def program(s: Session, shared: AShare) -> tuple[AShare, int]:
        before = s.steps
        return await bits.trunc_exact(s, shared, 30, 56), s.steps - before

    results = run(program, share(as_ring(x)))
    got = reconstruct(*(r[0] for r in results)).view(np.int64)
    assert np.array_equal(got, x >> 30)
    assert {r[1] for r in results} == {9}
