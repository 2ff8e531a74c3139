"""Ring arithmetic and fixed-point encoding at the edges."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpc.errors import EncodingError
from mpc.ring import (
    SIGNED_MAX,
    SIGNED_MIN,
    FixedPoint,
    as_ring,
    encode_int,
    segment_sums,
    to_signed,
)

EDGES = [0, 1, -1, 2**63 - 1, -(2**63), 2**62, -(2**62)]


def test_as_ring_twos_complement_edges() -> None:
    assert as_ring([-1])[0] == np.uint64(2**64 - 1)
    assert as_ring([2**63])[0] == np.uint64(2**63)  # Python int beyond int64 is reduced
    assert as_ring([2**64 - 1])[0] == np.uint64(2**64 - 1)
    assert list(to_signed(as_ring(EDGES))) == EDGES


@given(st.lists(st.integers(min_value=SIGNED_MIN, max_value=SIGNED_MAX), max_size=50))
def test_signed_round_trip(values: list[int]) -> None:
    assert list(to_signed(as_ring(np.array(values, dtype=np.int64)))) == values


@given(st.integers(), st.integers())
def test_ring_add_mul_are_mod_2_64(a: int, b: int) -> None:
    x, y = as_ring([a]), as_ring([b])
    assert int((x + y)[0]) == (a + b) % 2**64
    assert int((x * y)[0]) == (a * b) % 2**64


@pytest.mark.parametrize("value,expected", [(0.5, 32768), (-0.5, -32768), (1 / 3, 21845),
                                            (2.0**-17, 0), (3 * 2.0**-17, 2), (-1e-9, 0)])
def test_fixed_point_rounding(value: float, expected: int) -> None:
    fp = FixedPoint(16)
    assert int(to_signed(fp.encode([value]))[0]) == expected


@given(st.lists(st.floats(min_value=-1e9, max_value=1e9), max_size=30),
       st.integers(min_value=0, max_value=30))
def test_fixed_point_round_trip_within_half_ulp(values: list[float], f: int) -> None:
    fp = FixedPoint(f, -1e9, 1e9)
    decoded = fp.decode(fp.encode(values))
    assert np.all(np.abs(decoded - np.array(values)) <= 2.0 ** -(f + 1) + 1e-9 * 0)


def test_encoding_error_names_column_row_and_range_not_value() -> None:
    fp = FixedPoint(8, low=0, high=120)
    with pytest.raises(EncodingError) as info:
        fp.encode([30, 40, 123.456], column="age")
    err = info.value
    assert (err.column, err.row, err.low, err.high) == ("age", 2, 0, 120)
    assert "above the maximum" in str(err) and "'age'" in str(err) and "row 2" in str(err)
    assert "123" not in str(err) and "123" not in repr(err)
    assert err.value == 123.456


@pytest.mark.parametrize("bad,problem", [(float("nan"), "not a finite number"),
                                         (float("inf"), "not a finite number"),
                                         (-5.0, "below the minimum")])
def test_encoding_rejects_non_finite_and_low(bad: float, problem: str) -> None:
    with pytest.raises(EncodingError, match=problem):
        FixedPoint(8, low=0, high=10).encode([1.0, bad], column="x")


def test_fixed_point_range_must_fit_ring() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        FixedPoint(32, low=0, high=2.0**31)
    FixedPoint(32, low=0, high=2.0**30)


def test_encode_int_edges_and_errors() -> None:
    assert list(to_signed(encode_int([SIGNED_MIN, 0, SIGNED_MAX], SIGNED_MIN, SIGNED_MAX))) == [
        SIGNED_MIN, 0, SIGNED_MAX]
    with pytest.raises(EncodingError, match=r"row 1.*below the minimum"):
        encode_int([0, -1], 0, 10, column="count")
    with pytest.raises(EncodingError, match="not an integer"):
        encode_int([1.5], 0, 10)
    with pytest.raises(EncodingError, match="above the maximum"):
        encode_int([2**70], 0, 10)


@pytest.mark.parametrize("f", [0, 8, 16, 32, 48, 62])
def test_default_range_fits_every_frac_bits(f: int) -> None:
    fp = FixedPoint(f)
    low, high = fp.bounds
    assert low == -(2.0 ** (63 - f))
    encoded = fp.encode([low, 0.0, high * 0.5])
    assert fp.decode(encoded)[0] == low
    assert fp.decode(fp.encode([high]))[0] > 0  # the upper bound itself does not wrap


@given(lengths=st.lists(st.integers(0, 6), min_size=1, max_size=5),
       width=st.integers(1, 3), data=st.data())
def test_segment_sums_wrap_mod_2_64_and_give_0_for_empty_runs(
        lengths: list[int], width: int, data: st.DataObject) -> None:
    n = sum(lengths)
    edge = st.sampled_from([0, 1, 2**63, 2**64 - 1]) | st.integers(0, 2**64 - 1)
    values = data.draw(st.lists(edge, min_size=width * n, max_size=width * n))
    x = np.array(values, dtype=np.uint64).reshape(width, n)
    sums = segment_sums(x, lengths)
    assert sums.shape == (width, len(lengths)) and sums.dtype == np.uint64
    start = 0
    for i, length in enumerate(lengths):
        for row in range(width):
            expected = sum(int(v) for v in x[row, start:start + length]) % 2**64
            assert int(sums[row, i]) == expected
        start += length
    assert segment_sums(x[0], lengths).tolist() == sums[0].tolist()  # one axis
