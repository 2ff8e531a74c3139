"""Small secret matrices in fixed point: products and the Newton-Schulz inverse.

Matrices are replicated shares of shape (m, k) whose entries are fixed-point numbers with
``f`` fractional bits (Catrina, Saxena FC 2010; ABY3 §5.1.1). Only multiplications and
truncations: no secret division, no comparison, nothing opened.

- :func:`matmul`: X Y for shared (m, k) and (k, n) matrices as m n dot products of length k
  in **one round** (ABY3 §5.1: each party sends one element per dot product), then the
  exact truncation by 2^f of :func:`mpc.protocols.shift.shift_right` (8 rounds). The
  probabilistic one-round truncation (:func:`mpc.protocols.arith.trunc`) is off by about
  2^(64-f) with probability (|x| + 1) / 2^64 per element, which for the 2^50..2^60 sums
  before truncation here would be far too often; the exact shift is used instead. 9 rounds.
- :func:`newton_schulz`: the inverse of a symmetric positive (semi-)definite A with a public
  bound L >= lambda_max(A) (Schulz 1933; Pan, Schreiber, SIAM J. Sci. Stat. Comput. 12,
  1991): X_0 = I / L, X_(k+1) = X_k (2 I - A X_k), for a public, data-independent number of
  iterations K, two products (18 rounds) each.

**Convergence.** X_k is a polynomial in A, so it shares A's eigenvectors; an eigenvalue
lambda of A becomes x_k = (1 - rho^(2^k)) / lambda with rho = 1 - lambda / L in [0, 1): the
residual I - A X_k has eigenvalues rho^(2^k), squared each step. Reaching rho^(2^K) <=
2^-(f+2) takes 2^K >= (f + 2) ln 2 L / lambda_min (:func:`iterations_for`): K = 16 with f =
20 converges for L / lambda_min up to about 4,300. A (near-)singular A does not converge
(the residual stays near 1 along its null space): callers check ||I - A X_K|| under MPC and
open only whether it is small (see ``dic_connector.node.analyses.regression``). Fixed-point
rounding leaves a floor of about lambda_max 2^-f in the residual, and so a relative error of
the inverse of about kappa(A) 2^-f.

**Overflow.** Since 1 - rho^m <= m (1 - rho) = m lambda / L, every eigenvalue of X_k is at
most min(1 / lambda, 2^k / L), also for a singular A: the entries of every iterate are
bounded by 2^K / L, whatever the data, and the entries of the true inverse by 1 /
lambda_min. Rounding of A to f bits may shift its eigenvalues below 0 by at most about k
2^-f (k: the size), where rho is barely above 1 and (1 + 2^-f)^(2^K) stays below 2 for
K <= f: the bound doubles at most. Entry (i, j) of a product before truncation is at most
||A|| ||X|| 2^(2f) <= 2^(K + 1 + 2f), and of X (2 I - A X) at most 2^(K + 3 + 2f) / L;
:func:`check_headroom` requires 2 f + K + 3 <= 62 (K = 16, f = 20: 59).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from mpc.errors import ProtocolError
from mpc.protocols import arith
from mpc.protocols.shift import shift_right
from mpc.session import Session
from mpc.sharing import AShare

#: Bits of headroom below 2^63 that every sum before a truncation keeps.
HEADROOM_BITS = 62


def public_matrix(party: int, values: npt.ArrayLike) -> AShare:
    """A sharing of a public integer matrix (parties 0 and 2 hold it in x_0; local)."""
    arr = np.asarray(values, dtype=np.int64)
    zero = np.zeros(arr.shape, dtype=np.uint64)
    return AShare(party, zero, zero).add_public(arr.view(np.uint64))


def identity(party: int, size: int, value: int) -> AShare:
    """Shares of ``value`` times the size x size identity (public; local)."""
    return public_matrix(party, np.eye(size, dtype=np.int64) * value)


async def matmul(s: Session, x: AShare, y: AShare, frac_bits: int) -> AShare:
    """Shares of X Y for (m, k) and (k, n) shared matrices, truncated exactly by
    2^frac_bits (floor; none for frac_bits = 0). One dot-product round (m n elements sent)
    and 8 rounds of the exact shift. The caller guarantees every entry of X Y before the
    shift lies in the signed ring (module doc)."""
    if len(x.shape) != 2 or len(y.shape) != 2 or x.shape[1] != y.shape[0]:
        raise ProtocolError(f"matmul needs (m, k) and (k, n) matrices, got {x.shape} and "
                            f"{y.shape}")
    m, k = x.shape
    n = y.shape[1]

    def rows(part: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
        return np.ascontiguousarray(np.broadcast_to(part[:, None, :], (m, n, k)))

    def cols(part: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
        return np.ascontiguousarray(np.broadcast_to(part.T[None, :, :], (m, n, k)))

    product = await arith.dot(s, AShare(x.party, rows(x.a), rows(x.b)),
                              AShare(y.party, cols(y.a), cols(y.b)))
    if frac_bits == 0:
        return product
    return await shift_right(s, product, frac_bits)


def iterations_for(ratio: float, frac_bits: int) -> int:
    """The fewest Newton-Schulz iterations after which the residual's eigenvalues are at most
    2^-(frac_bits + 2) for L / lambda_min up to ``ratio`` (module doc)."""
    if ratio < 1:
        raise ValueError(f"L / lambda_min is at least 1, got {ratio}")
    if ratio == 1:
        return 1
    needed = (frac_bits + 2) * math.log(2) / -math.log1p(-1 / ratio)
    return max(1, math.ceil(math.log2(needed)))


def check_headroom(frac_bits: int, iterations: int) -> None:
    """:class:`ProtocolError` unless no sum before a truncation can wrap (module doc)."""
    if frac_bits < 1 or iterations < 1 or iterations > frac_bits:
        raise ProtocolError(f"Newton-Schulz with {iterations} iterations at {frac_bits} "
                            "fractional bits is not defined (need 1 <= K <= f)")
    if 2 * frac_bits + iterations + 3 > HEADROOM_BITS:
        raise ProtocolError(f"Newton-Schulz with {iterations} iterations at {frac_bits} "
                            f"fractional bits may overflow: 2 f + K + 3 = "
                            f"{2 * frac_bits + iterations + 3} > {HEADROOM_BITS}")


def inverse_bound(bound: float, iterations: int) -> float:
    """A public bound on every entry of a Newton-Schulz iterate (module doc): 2^(K+1) / L."""
    return 2.0 ** (iterations + 1) / bound


async def newton_schulz(s: Session, a: AShare, bound: float, frac_bits: int,
                        iterations: int) -> AShare:
    """Shares of X_K, the Newton-Schulz approximation of A^-1 (module doc), for a shared
    symmetric positive semi-definite (p, p) matrix A with ``frac_bits`` fractional bits whose
    largest eigenvalue is at most the public ``bound``. 18 rounds per iteration; nothing is
    opened; the caller checks convergence (:func:`residual`)."""
    if len(a.shape) != 2 or a.shape[0] != a.shape[1]:
        raise ProtocolError(f"newton_schulz needs a square matrix, got {a.shape}")
    if not bound >= 1:  # eigenvalue bounds below 1 would scale X_0 above 1 (more headroom)
        raise ProtocolError(f"the eigenvalue bound must be >= 1, got {bound}")
    check_headroom(frac_bits, iterations)
    p = a.shape[0]
    one = 1 << frac_bits
    x = identity(s.party, p, round(one / bound))
    two = identity(s.party, p, 2 * one)
    for _ in range(iterations):
        ax = await matmul(s, a, x, frac_bits)
        x = await matmul(s, x, two - ax, frac_bits)
    return x


async def residual(s: Session, a: AShare, x: AShare, frac_bits: int) -> AShare:
    """Shares of I - A X (fixed point, one product: 9 rounds)."""
    return identity(s.party, a.shape[0], 1 << frac_bits) - await matmul(s, a, x, frac_bits)
