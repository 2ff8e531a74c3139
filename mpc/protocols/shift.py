"""Exact arithmetic right shift of shared integers: floor(x / 2^d), by bit decomposition.

:func:`mpc.protocols.arith.trunc` (ABY3 §5.1.1) is one round but probabilistic: it is off by
about 2^(64-d) with probability (|x| + 1) / 2^64 per element, which rules it out for long
columns of large values. :func:`shift_right` is exact for every signed 64-bit x:

1. **A2B** (:func:`mpc.protocols.bits.a2b`, ABY3 §5.3, 7 rounds): XOR shares of the
   two's-complement word of x.
2. **Shift** each XOR component arithmetically by d (local): every bit of the result is a
   copy of one bit of x, so shifting the components shifts the shared word, sign fill
   included, and gives XOR shares of floor(x / 2^d).
3. **Back to arithmetic shares** (bit injection, :func:`mpc.protocols.bits.inject`, 1
   round) of only the ``bits`` low bits: a result y known to satisfy -2^(bits-1) <= y <
   2^(bits-1) is sum_(i < bits-1) 2^i y_i - 2^(bits-1) y_(bits-1) (two's complement in
   ``bits`` bits).

8 rounds; party 0 sends about 2 words per injected bit. Nothing is opened. ``d`` may also be
an array of shifts, one per element (0 <= d_i < 64, 0 leaving the element as it is): the
shift of step 2 is elementwise, so elements scaled by different public powers of two share
the rounds (the fixed-point rescaling of :mod:`mpc.protocols.linalg`'s callers).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from mpc.errors import ProtocolError
from mpc.protocols.bits import a2b, inject
from mpc.protocols.boolean import BShare
from mpc.session import Session
from mpc.sharing import AShare

ONE = np.uint64(1)


async def shift_right(s: Session, x: AShare, d: int | npt.NDArray[np.int64],
                      bits: int = 64) -> AShare:
    """Shares of floor(x / 2^d) for signed x, exact; the caller guarantees that the result
    fits ``bits`` signed bits (``bits`` bit injections per element). ``d``: one shift, or
    one per element of ``x`` (an integer array of its shape, each in [0, 64))."""
    if isinstance(d, np.ndarray):
        shifts = np.asarray(d, dtype=np.int64)
        if shifts.shape != x.shape or (shifts.size and not (shifts.min() >= 0
                                                            and shifts.max() < 64)):
            raise ProtocolError(f"shifts of shape {shifts.shape} for shares of shape "
                                f"{x.shape}; each must lie in [0, 64)")
    elif not 0 < d < 64:
        raise ProtocolError(f"shift by {d} into {bits} bits is not defined")
    else:
        shifts = np.full(x.shape, d, dtype=np.int64)
    if not 1 <= bits <= 64:
        raise ProtocolError(f"shift by {d} into {bits} bits is not defined")
    words = await a2b(s, x)

    def shifted(part: np.ndarray) -> np.ndarray:
        return np.asarray(part.view(np.int64) >> shifts).view(np.uint64)

    positions = np.arange(bits, dtype=np.uint64)
    a, b = shifted(words.a)[..., None] >> positions, shifted(words.b)[..., None] >> positions
    injected = await inject(s, BShare(x.party, a & ONE, b & ONE))
    weights = ONE << positions
    weights[-1] = np.negative(weights[-1:])[0]  # the sign bit of a `bits`-bit word: -2^(bits-1)
    return AShare(
        x.party,
        np.sum(injected.a * weights, axis=-1, dtype=np.uint64),
        np.sum(injected.b * weights, axis=-1, dtype=np.uint64),
    )
