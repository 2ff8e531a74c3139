"""The exponential of bounded fixed-point shares: e^x = e^floor(x) e^(x - floor(x)).

For x with ``f`` fractional bits and |x| <= L (public; callers clamp), as range reduction
in floating-point libraries does (Muller, "Elementary Functions", 3rd ed., ch. 11) and
Aly and Smart (ACNS 2019) under MPC:

1. **Integer part** by comparisons with the public integers: c_j = [x >= j] for j = -L+1
   .. L (one batched circuit, :func:`mpc.protocols.compare.greater_equal_public`, 8
   rounds, 2 L comparisons per element); the one-hot h_j = c_j - c_(j+1) of floor(x)
   (c_(-L) = 1, c_(L+1) = 0; local), and the fraction t = x - floor(x) = x + L - sum_j
   c_j in [0, 1) (local; t = 0 at x = L).
2. **Fraction**: e^t by the degree-:data:`DEGREE` Chebyshev interpolant of e^t on [0, 1]
   in the power basis (relative error 9.3e-8, :func:`coefficients`), evaluated by Horner's
   rule with coefficients at ``f`` bits: one product and one exact shift
   (:func:`mpc.protocols.shift.shift_right`, injecting only the f + 3 bits that a partial
   sum in [0, e 2^f) needs) per degree, 9 rounds each.
3. **Scale**: sum_j h_j round(e^j 2^E) (public weights, local) times e^t, shifted exactly
   to ``out_bits`` fractional bits (one product, one shift). E = :data:`SCALE_BITS`, so the
   product e^(L+1) 2^(E + f) must stay below 2^62: L <= 7 at f = 20 (:func:`check_range`).

**Error** (relative): 9.3e-8 from the interpolant, about 2^-f e from the fraction's
floors and Horner's shifts, e^L 2^-E from e^j's rounding (1e-6 at L = 7) and one unit of
2^-out_bits. 8 + 9 DEGREE + 9 = 71 rounds; nothing is opened.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.polynomial import chebyshev, polynomial

from mpc.errors import ProtocolError
from mpc.protocols import arith, compare
from mpc.protocols.shift import shift_right
from mpc.session import Session
from mpc.sharing import AShare, concat

#: Degree of the interpolant of e^t on [0, 1].
DEGREE = 6
#: Fractional bits of the public e^j.
SCALE_BITS = 30


def coefficients(frac_bits: int) -> list[int]:
    """The power-basis coefficients a_0..a_DEGREE of the Chebyshev interpolant of e^t on
    [0, 1] (at the Chebyshev points of the first kind), at ``frac_bits`` bits."""
    nodes = (np.cos((2 * np.arange(DEGREE + 1) + 1) * np.pi / (2 * DEGREE + 2)) + 1) / 2
    series = chebyshev.Chebyshev.fit(nodes, np.exp(nodes), DEGREE, domain=[0, 1])
    power = series.convert(kind=polynomial.Polynomial, domain=[-1, 1], window=[-1, 1])
    coef = np.asarray(power.coef, dtype=np.float64)
    return [round(float(c) * 2.0**frac_bits) for c in coef]


def check_range(limit: int, frac_bits: int, out_bits: int) -> None:
    """:class:`ProtocolError` unless e^x for |x| <= limit fits the headroom (module doc)."""
    if limit < 1 or frac_bits < 1 or out_bits < 0:
        raise ProtocolError(f"exp on [-{limit}, {limit}] at {frac_bits} fractional bits is "
                            "not defined")
    if (limit + 1) / math.log(2) + SCALE_BITS + frac_bits > 62 or out_bits > SCALE_BITS + frac_bits:
        raise ProtocolError(f"exp on [-{limit}, {limit}] at {frac_bits} fractional bits "
                            f"(out {out_bits}) may overflow the ring")


async def exp(s: Session, x: AShare, limit: int, frac_bits: int, out_bits: int) -> AShare:
    """Shares of e^x with ``out_bits`` fractional bits for x with ``frac_bits`` fractional
    bits and |x| <= ``limit`` (public, an integer; the caller guarantees it). 71 rounds."""
    check_range(limit, frac_bits, out_bits)
    shape = x.shape
    flat = x.reshape(-1)
    m = flat.shape[0]
    if m == 0:
        return x
    one = 1 << frac_bits
    count = 2 * limit
    thresholds = np.repeat(np.arange(-limit + 1, limit + 1, dtype=np.int64) * one, m)
    c = (await compare.greater_equal_public(s, concat([flat] * count), thresholds)
         ).reshape(count, m)
    t = flat.add_public(np.int64(limit * one)) - c.sum(axis=0) * one
    ones = c[:1] * 0 + 1
    below = concat([ones, c])  # c_(-L) .. c_L
    above = concat([c, c[:1] * 0])  # c_(-L+1) .. c_(L+1)
    h = below - above  # one-hot of floor(x) in -L .. L
    weights = np.array([round(math.exp(j) * 2.0**SCALE_BITS) for j in range(-limit, limit + 1)],
                       dtype=np.int64)
    scale = (h * np.ascontiguousarray(np.broadcast_to(weights[:, None], (count + 1, m)))
             ).sum(axis=0)
    a = coefficients(frac_bits)
    acc = flat * 0 + a[-1]
    for coef in reversed(a[:-1]):  # every partial sum of Horner's rule lies in [0, e 2^f)
        acc = (await shift_right(s, await arith.mul(s, acc, t), frac_bits,
                                 frac_bits + 3)).add_public(np.int64(coef))
    product = await arith.mul(s, scale, acc)
    shift = SCALE_BITS + frac_bits - out_bits
    out_width = math.ceil((limit + 1) / math.log(2)) + out_bits + 2  # e^(L+1) 2^out_bits
    out = product if shift == 0 else await shift_right(s, product, shift, min(64, out_width))
    return out.reshape(*shape)
