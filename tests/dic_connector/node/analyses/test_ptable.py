"""Cell-key perturbation tables: the properties the method needs (Giessing 2016; ``ptable``),
the maximum-entropy form of each row, and the plaintext lookup at its boundaries."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dic_connector.errors import ConfigError
from dic_connector.node.analyses.ptable import (
    KEY_BITS,
    CellKeyParams,
    PTable,
    count_ptable,
    max_entropy,
)

FULL = 1 << KEY_BITS


@st.composite
def params(draw: st.DrawFn) -> CellKeyParams:
    d = draw(st.integers(1, 8))
    v = draw(st.floats(0.05, 0.75 * d * d - 0.05))
    return CellKeyParams(d, v, draw(st.integers(0, d - 1)))


def check_table(t: PTable) -> None:
    p = t.params
    d, js = p.max_noise, p.js
    assert len(t.rows) == d + js + 2
    assert t.rows[0].noise == (0,) and t.rows[0].probability == (1.0,)  # 0 stays 0
    for i, row in enumerate(t.rows):
        assert row.count == i
        prob = np.asarray(row.probability)
        assert math.isclose(float(prob.sum()), 1.0, abs_tol=1e-12)
        assert (prob >= 0).all()  # (a tiny V underflows far targets to 0)
        assert abs(row.mean) < 1e-9, (i, row.mean)  # unbiased
        assert all(abs(v) <= d for v in row.noise)  # bounded by D
        targets = [i + v for v in row.noise]
        assert all(j >= 0 for j in targets)  # never negative
        assert not any(1 <= j <= js for j in targets), (i, targets)  # js blocks small counts
        assert list(row.noise) == sorted(set(row.noise))
        assert row.variance <= p.variance + 1e-9 or i <= js  # only js rows may need more
        thresholds = np.asarray(row.thresholds, dtype=object)
        assert thresholds[-1] == FULL
        assert all(a <= b for a, b in itertools.pairwise(thresholds))
        # the quantised intervals are the probabilities, up to the rounding of a boundary
        widths = np.diff(np.concatenate([[0], thresholds])).astype(float) / FULL
        assert np.allclose(widths, prob, rtol=1e-14, atol=2.0 ** -58)
        assert abs(float(np.dot(widths, row.noise))) < 1e-13 * d  # still unbiased
    shared = t.rows[-1]
    assert shared.noise == tuple(range(-d, d + 1))
    assert math.isclose(shared.variance, p.variance, rel_tol=1e-9)  # V exactly
    assert t.row(10 ** 9) is shared


@settings(max_examples=40, deadline=None)
@given(params())
def test_every_table_has_the_properties_of_the_method(p: CellKeyParams) -> None:
    check_table(count_ptable(p))


@pytest.mark.parametrize("d, v, js", [(1, 0.5, 0), (2, 1.0, 0), (3, 2.0, 1), (5, 3.0, 2),
                                      (20, 299.0, 19), (20, 0.01, 0)])
def test_tables_at_the_edges_of_the_parameters(d: int, v: float, js: int) -> None:
    check_table(count_ptable(CellKeyParams(d, v, js)))


def test_rows_are_maximum_entropy() -> None:
    """The maximum-entropy distribution under mean and variance constraints is
    p(v) = exp(c + a v + b v^2): log p is exactly a quadratic in v (KKT), which a table
    built by another rule (e.g. a discretised normal, truncated) is not."""
    t = count_ptable(CellKeyParams(4, 2.5, 1))
    for row in t.rows[1:]:
        v = np.asarray(row.noise, dtype=float)
        design = np.stack([np.ones_like(v), v, v * v], axis=1)
        logp = np.log(row.probability)
        fit, *_ = np.linalg.lstsq(design, logp, rcond=None)
        assert np.allclose(design @ fit, logp, atol=1e-8), row
    # and among distributions with the same support, mean and variance, it has the
    # largest entropy: a perturbation along the null space of the constraints lowers it
    row = t.rows[-1]
    p = np.asarray(row.probability)
    v = np.asarray(row.noise, dtype=float)
    constraints = np.stack([np.ones_like(v), v, v * v])
    null = np.linalg.svd(constraints)[2][3:]
    entropy = float(-(p * np.log(p)).sum())
    for direction in null:
        for eps in (1e-3, -1e-3):
            q = p + eps * direction
            assert (q > 0).all()
            assert float(-(q * np.log(q)).sum()) < entropy


def test_max_entropy_solves_asymmetric_supports() -> None:
    p = max_entropy([-2, 1, 2, 3, 4, 5], 4.0)
    v = np.array([-2, 1, 2, 3, 4, 5], dtype=float)
    assert math.isclose(float(p @ v), 0.0, abs_tol=1e-12)
    assert math.isclose(float(p @ (v * v)), 4.0, rel_tol=1e-12)


def test_lookup_at_the_boundaries() -> None:
    t = count_ptable(CellKeyParams(3, 2.0, 1))
    for count in (1, 2, 3, 4, 5, 6, 1000):
        row = t.row(count)
        assert t.noise(count, 0) == row.noise[0]
        assert t.noise(count, FULL - 1) == row.noise[-1]
        for j, threshold in enumerate(row.thresholds[:-1]):
            assert t.noise(count, threshold - 1) == row.noise[j]  # below T_j: v_j
            assert t.noise(count, threshold) == row.noise[j + 1]  # at T_j: the next one
    assert {t.noise(0, k) for k in (0, 1, FULL // 2, FULL - 1)} == {0}
    with pytest.raises(ValueError):
        t.noise(3, FULL)
    with pytest.raises(ValueError):
        t.noise(-1, 0)


def test_lookup_frequencies_follow_the_row() -> None:
    """Uniform cell keys give each noise value with its probability."""
    t = count_ptable(CellKeyParams(2, 1.0))
    keys = np.random.default_rng(7).integers(0, FULL, 20_000, dtype=np.int64)
    row = t.row(50)
    got = np.array([t.noise(50, int(k)) for k in keys])
    for v, p in zip(row.noise, row.probability, strict=True):
        assert abs(float((got == v).mean()) - p) < 0.015


@pytest.mark.parametrize("d, v, js", [(0, 1.0, 0), (3, 0.0, 0), (3, 6.75, 0), (3, 2.0, 3),
                                      (3, 2.0, -1), (True, 1.0, 0), (3, float("nan"), 0),
                                      (21, 1.0, 0)])
def test_bad_parameters_name_the_setting(d: int, v: float, js: int) -> None:
    with pytest.raises(ConfigError, match="perturbation"):
        CellKeyParams(d, v, js)


def test_parameters_from_settings() -> None:
    p = CellKeyParams.from_json({"method": "cellkey", "max_noise": 3, "variance": 2, "js": 1})
    assert p == CellKeyParams(3, 2.0, 1)
    assert p.as_json() == {"method": "cellkey", "D": 3, "V": 2.0, "js": 1}
    assert CellKeyParams.from_json(p.as_json()) == p
    assert CellKeyParams.from_json(p.as_canonical()) == p and p.as_canonical()["V"] == "2.0"
    lenient = CellKeyParams.from_json({**p.as_canonical(), "allow_exact": True})
    assert lenient.allow_exact and not p.allow_exact and lenient.as_json() == p.as_json()
    with pytest.raises(ConfigError, match="allow_exact"):
        CellKeyParams(3, 2.0, 1, "yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"perturbation\.variance"):
        CellKeyParams.from_json({"D": 3, "V": "two"})
    for bad in ({"method": "laplace", "D": 3, "V": 2}, {"D": 3}, {"D": 3, "V": 2, "x": 1}, 3):
        with pytest.raises(ConfigError, match="perturbation"):
            CellKeyParams.from_json(bad)
