"""Secret matrix products and the Newton-Schulz inverse against numpy, on three loopback
parties: exact floors of products, the inverse of random well-conditioned SPD matrices
within the fixed-point error, p = 1 and the identity, the failure mode of a (near-)singular
matrix, and the public bound on the iterates' entries."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc.errors import ProtocolError
from mpc.protocols import linalg
from mpc.ring import as_ring, to_signed
from mpc.session import Session, run_local
from mpc.sharing import AShare, reconstruct, share

F = 20


def encode(m: np.ndarray, frac_bits: int = F) -> np.ndarray:
    return as_ring(np.rint(m * 2.0**frac_bits).astype(np.int64))


def decode(views: list[AShare], frac_bits: int = F) -> np.ndarray:
    return to_signed(reconstruct(*views)).astype(np.float64) / 2.0**frac_bits


def inverse(a: np.ndarray, bound: float, iterations: int) -> tuple[np.ndarray, np.ndarray, int]:
    """X_K, I - A X_K and the rounds taken."""

    async def program(s: Session, x: AShare) -> Any:
        before = s.steps
        inv = await linalg.newton_schulz(s, x, bound, F, iterations)
        return inv, await linalg.residual(s, x, inv, F), s.steps - before

    got = asyncio.run(run_local(program, share(encode(a))))
    rounds = {g[2] for g in got}
    assert len(rounds) == 1
    return decode([g[0] for g in got]), decode([g[1] for g in got]), rounds.pop()


@st.composite
def spd(draw: st.DrawFn, max_size: int = 5, condition: float = 20.0) -> np.ndarray:
    """A random symmetric positive definite matrix with unit diagonal scale: Q diag(l) Q'
    with eigenvalues in [1, condition], scaled so that the largest is at most p."""
    p = draw(st.integers(1, max_size))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(p, p)))
    eigen = rng.uniform(1.0, condition, p)
    eigen[0] = 1.0
    eigen[-1] = condition if p > 1 else 1.0
    a = (q * eigen) @ q.T
    return np.asarray(a * (p / condition), dtype=np.float64)


@settings(max_examples=12, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), st.integers(0, 2**32 - 1),
       st.sampled_from([0, 8, 20]))
def test_matmul_is_the_exact_floor(m: int, k: int, n: int, seed: int, frac_bits: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(-(2**30), 2**30, (m, k), dtype=np.int64)
    y = rng.integers(-(2**30), 2**30, (k, n), dtype=np.int64)
    x[0, 0], y[0, 0] = -(2**30), 2**30 - 1  # an edge: the most negative product

    async def program(s: Session, a: AShare, b: AShare) -> Any:
        before = s.steps
        return await linalg.matmul(s, a, b, frac_bits), s.steps - before

    got = asyncio.run(run_local(program, share(as_ring(x)), share(as_ring(y))))
    exact = [[sum(int(x[i, j]) * int(y[j, c]) for j in range(k)) >> frac_bits
              for c in range(n)] for i in range(m)]
    assert to_signed(reconstruct(*(g[0] for g in got))).tolist() == exact
    assert {g[1] for g in got} == {1 if frac_bits == 0 else 9}


def test_matmul_checks_shapes() -> None:
    async def program(s: Session, a: AShare) -> Any:
        return await linalg.matmul(s, a, a, F)

    with pytest.raises(ProtocolError, match=r"\(m, k\) and \(k, n\)"):
        asyncio.run(run_local(program, share(as_ring(np.zeros((2, 3), dtype=np.int64)))))


@settings(max_examples=10, deadline=None)
@given(spd())
def test_newton_schulz_matches_numpy_inverse(a: np.ndarray) -> None:
    p = a.shape[0]
    condition = float(np.linalg.cond(a))
    bound = float(p)
    iterations = linalg.iterations_for(bound / float(np.linalg.eigvalsh(a).min()), F)
    got, residual, rounds = inverse(a, bound, iterations)
    expected = np.linalg.inv(a)
    # fixed point: a relative error of about kappa 2^-f (module doc), with room
    scale = float(np.abs(expected).max())
    assert np.abs(got - expected).max() <= 8 * condition * p * 2.0**-F * max(scale, 1.0)
    assert np.abs(residual).max() <= 8 * p * 2.0**-F * max(condition, 1.0)
    assert rounds == 18 * iterations + 9


def test_p_equal_one_and_the_identity() -> None:
    got, residual, _ = inverse(np.array([[0.25]]), 1.0, linalg.iterations_for(4.0, F))
    assert got[0, 0] == pytest.approx(4.0, abs=4 * 2.0**-F * 4)
    eye, residual, _ = inverse(np.eye(3), 3.0, linalg.iterations_for(3.0, F))
    assert np.abs(eye - np.eye(3)).max() <= 4 * 2.0**-F
    assert np.abs(residual).max() <= 4 * 2.0**-F


def test_a_singular_matrix_does_not_converge_and_stays_bounded() -> None:
    """The documented failure mode: along a null direction the residual stays 1, and
    the iterate grows only as 2^k / L (no wrap)."""
    v = np.array([1.0, -1.0, 0.5])
    a = np.outer(v, v) / np.dot(v, v) * 2 + np.diag([0.0, 0.0, 0.0])  # rank one
    a[2, 2] += 1.0  # now rank two, still singular
    a = (a + a.T) / 2
    assert np.linalg.matrix_rank(a) < 3
    iterations = 12
    got, residual, _ = inverse(a, 3.0, iterations)
    assert np.abs(residual).max() > 0.5
    assert np.abs(got).max() <= linalg.inverse_bound(3.0, iterations)


def test_a_near_singular_matrix_converges_only_with_enough_iterations() -> None:
    a = np.array([[1.0, 0.999], [0.999, 1.0]])  # lambda_min = 0.001, L / lambda_min = 2000
    few = inverse(a, 2.0, 8)
    assert np.abs(few[1]).max() > 0.1
    enough = linalg.iterations_for(2.0 / 0.001, F)
    got, residual, _ = inverse(a, 2.0, enough)
    assert np.abs(residual).max() < 2.0**-12
    assert got == pytest.approx(np.linalg.inv(a), rel=2e-3)


def test_iteration_counts_and_headroom() -> None:
    assert linalg.iterations_for(1.0, F) == 1
    assert linalg.iterations_for(2.0, F) == 5  # 0.5^(2^5) <= 2^-22 < 0.5^(2^4)
    assert linalg.iterations_for(4290.0, 20) == 16
    assert linalg.iterations_for(4310.0, 20) == 17
    linalg.check_headroom(20, 16)
    linalg.check_headroom(21, 17)
    with pytest.raises(ProtocolError, match="may overflow"):
        linalg.check_headroom(22, 17)
    with pytest.raises(ProtocolError, match="not defined"):
        linalg.check_headroom(8, 9)
    with pytest.raises(ValueError):
        linalg.iterations_for(0.5, F)
