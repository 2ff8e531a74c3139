"""Division by a secret positive integer: normalisation by a secret power of two, then Newton.

Fixed-point Newton reciprocals from a *public* bound (X_0 = 1 / L) need about log2(L / x)
iterations and as many bits of headroom, which a 64-bit ring does not have when x ranges
over 2^30 (a Cox risk-set sum over one row or over 10^5). As Catrina and Saxena (FC 2010,
their reciprocal) and Aly and Smart (ACNS 2019, "Norm") do, x is first scaled into [1/2, 1) by a
secret power of two, where a fixed number of Newton steps suffices:

1. **Leading bit**: for x in {0} u [2^low, 2^high) (public bounds), the bits c_k =
   [x >= 2^k] for k = low..high-1 (one batched comparison circuit,
   :func:`mpc.protocols.compare.greater_equal_public`, 8 rounds) give the one-hot
   h_k = c_k - c_(k+1) of k = floor(log2 x) (local); all h_k are 0 when x < 2^low.
2. **Scale**: every value v divided by x (x itself, and a batch of numerators per x) is
   scaled to v' = sum_k h_k v 2^(M - k), M = ``r_bits`` - 1: v 2^(M - k) is a public
   multiple for k <= M and an exact right shift by k - M otherwise
   (:func:`mpc.protocols.shift.shift_right`, one call for every k: 8 rounds), then one
   multiplication round and a local sum. So x' = floor(x 2^(M-k)) lies in [2^M, 2^(M+1)):
   x' / 2^r in [1/2, 1) with r = ``r_bits`` fractional bits, and v' / x' = v / x to within
   one unit of 2^-M relative to x (the floors).
3. **Reciprocal** (Newton's iteration for 1 / x): y_0 = 3 - 2 x (the chord of 1 / x
   through x = 1/2 and 1: |1 - x y_0| <= 1/8 on [1/2, 1], local), y <- y (2 - x y),
   :data:`NEWTON_STEPS` = 3 steps (|1 - x y| <= 8^-8 = 2^-24 before rounding), each two
   products and two exact shifts (18 rounds). y_0 <= 2 and every later iterate lies below
   1 / x (1 - x y_(k+1) = (1 - x y_k)^2 >= 0), so y <= 2 2^r.
4. **Quotient**: q = v' y / 2^(2 r - f) (one product, one exact shift): v / x with ``f``
   fractional bits.

**Domain and headroom.** The caller states |v| <= 2^R x (``ratio_bits`` = R); then |v'| <
2^(R + r) and |v' y| < 2^(R + 2 r + 1), which stays inside the signed ring for r =
min(:data:`MAX_R_BITS`, (61 - R) // 2) (:func:`r_bits_for`). A numerator beyond the stated
ratio wraps (the caller must check what it relies on). x = 0 (or any x < 2^low) gives
x' = v' = 0 and q = 0 (y doubles each step from y_0 = 3: bounded). The products for the
wrong k are multiplied by h_k = 0 and vanish exactly, whatever they wrapped to.

**Error**: |q / 2^f - v / x| <= (|v / x| + 1) 2^-(r - 2) + 2^-f (the floors of step 2,
y's rounding and the final floor).

**Cost**: 8 + 9 + 3 * 18 + 9 = 80 rounds whatever the batch (72 when high <= r: no
shift in step 2); the comparison circuit takes
high - low comparisons per divisor, the shift (high - low) (q + 1) bit decompositions per
divisor with q numerators. Nothing is opened.
"""

from __future__ import annotations

import numpy as np

from mpc.errors import ProtocolError
from mpc.protocols import arith, compare
from mpc.protocols.shift import shift_right
from mpc.session import Session
from mpc.sharing import AShare, concat

#: Newton steps of the reciprocal on [1/2, 1).
NEWTON_STEPS = 3
#: Most fractional bits of the normalised divisor.
MAX_R_BITS = 24


def r_bits_for(ratio_bits: int) -> int:
    """The fractional bits r of the normalised divisor that keep v' y inside the ring for
    |v| <= 2^ratio_bits x (module doc)."""
    if not 0 <= ratio_bits <= 41:
        raise ProtocolError(f"a ratio of 2^{ratio_bits} leaves no headroom for a division "
                            "(need 0 <= ratio_bits <= 41)")
    return min(MAX_R_BITS, (61 - ratio_bits) // 2)


async def leading_one_hot(s: Session, x: AShare, low: int, high: int) -> AShare:
    """Shares of h, shape (high - low,) + x.shape: h_k = 1 iff 2^(low + k) <= x <
    2^(low + k + 1), for x in {0} u [2^low, 2^high) (all 0 below 2^low). One comparison
    circuit (8 rounds)."""
    if not 0 <= low < high <= 62:
        raise ProtocolError(f"leading bit of values in [2^{low}, 2^{high}) is not defined "
                            "(need 0 <= low < high <= 62)")
    width = high - low
    flat = x.reshape(-1)
    m = flat.shape[0]
    wide = concat([flat] * width)
    powers = np.repeat(np.array([1 << k for k in range(low, high)], dtype=np.int64), m)
    above = (await compare.greater_equal_public(s, wide, powers)).reshape(width, m)
    top = concat([above[1:], above[:1] * 0]) if width > 1 else above * 0
    return (above - top).reshape(width, *x.shape)


async def normalised(s: Session, x: AShare, numerators: AShare, low: int, high: int,
                     r: int) -> tuple[AShare, AShare]:
    """(x', v'): x (shape (m,)) scaled into [2^(r-1), 2^r) by a secret power of two, and
    each row of ``numerators`` (shape (m, q)) by the same power (module doc, steps 1-2);
    both 0 where x < 2^low."""
    m = x.shape[0]
    q = numerators.shape[1]
    h = await leading_one_hot(s, x, low, high)  # (width, m)
    width = high - low
    values = concat([x.reshape(m, 1), numerators], axis=1)  # (m, q + 1)
    stacked = concat([values.reshape(1, m, q + 1)] * width)  # (width, m, q + 1)
    ks = np.arange(low, high, dtype=np.int64)
    target = r - 1
    rights = np.broadcast_to(np.maximum(ks - target, 0)[:, None, None],
                             (width, m, q + 1)).copy()
    lefts = np.broadcast_to((np.int64(1) << np.maximum(target - ks, 0))[:, None, None],
                            (width, m, q + 1)).copy()
    if rights.any():
        stacked = await shift_right(s, stacked, rights)
    stacked = stacked * lefts
    wide_h = AShare(h.party, np.ascontiguousarray(np.broadcast_to(h.a[:, :, None],
                                                                  (width, m, q + 1))),
                    np.ascontiguousarray(np.broadcast_to(h.b[:, :, None], (width, m, q + 1))))
    picked = (await arith.mul(s, wide_h, stacked)).sum(axis=0)  # (m, q + 1)
    return picked[:, 0], picked[:, 1:]


async def reciprocal(s: Session, x: AShare, r: int) -> AShare:
    """Shares of y ~ 2^(2 r) / x for x in [2^(r-1), 2^r) (x / 2^r in [1/2, 1)), by
    :data:`NEWTON_STEPS` Newton steps from the linear start (module doc, step 3)."""
    one = 1 << r
    y = (x * -2).add_public(np.int64(3 * one))
    for _ in range(NEWTON_STEPS):
        xy = await shift_right(s, await arith.mul(s, x, y), r)
        y = await shift_right(s, await arith.mul(s, y, (-xy).add_public(np.int64(2 * one))), r)
    return y


async def divide(s: Session, numerators: AShare, x: AShare, low: int, high: int,
                 ratio_bits: int, frac_bits: int) -> AShare:
    """Shares of round-down v / x 2^frac_bits for every numerator v in row i of
    ``numerators`` (shape (m, q)) and the divisor x_i (shape (m,)), with x in {0} u [2^low,
    2^high) and |v| <= 2^ratio_bits x (0 where x < 2^low). 80 rounds (module doc)."""
    if len(x.shape) != 1 or len(numerators.shape) != 2 or numerators.shape[0] != x.shape[0]:
        raise ProtocolError(f"divide needs divisors of shape (m,) and numerators (m, q), got "
                            f"{x.shape} and {numerators.shape}")
    r = r_bits_for(ratio_bits)
    if not 0 <= frac_bits <= 2 * r:
        raise ProtocolError(f"a quotient with {frac_bits} fractional bits needs at most "
                            f"{2 * r} (2 r for ratio 2^{ratio_bits})")
    if x.shape[0] == 0 or numerators.shape[1] == 0:
        return numerators
    x_n, v_n = await normalised(s, x, numerators, low, high, r)
    y = await reciprocal(s, x_n, r)
    m, q = numerators.shape
    wide_y = AShare(y.party, np.ascontiguousarray(np.broadcast_to(y.a[:, None], (m, q))),
                    np.ascontiguousarray(np.broadcast_to(y.b[:, None], (m, q))))
    product = await arith.mul(s, v_n, wide_y)
    shift = 2 * r - frac_bits
    return product if shift == 0 else await shift_right(s, product, shift)
