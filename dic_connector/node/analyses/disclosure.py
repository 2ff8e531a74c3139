"""Disclosure control under MPC: threshold checks, guarded openings, range checks.

Every opening an analysis performs goes through this module, so what can be opened is
decided in one place:

- :func:`at_least` compares shared counts with the public ``min_cell_count`` k and opens
  **only the comparison bits** [count >= k] (to the three nodes): the sign bit of
  count - k as a 64-bit signed integer, computed by the bit-sliced MSB circuit of
  :func:`mpc.protocols.compare.sign_bits` (ABY3 §5.3 "local split" + a carry tree,
  7 rounds) and opened with :func:`mpc.protocols.boolean.open_bool` (1 round). Counts
  lie in [0, rows] and k < 2^62, so count - k is far inside the 64-bit domain.
- :func:`open_allowed` then opens, with :func:`mpc.protocols.arith.open_` (1 round, all
  three nodes), only the values whose bit allowed it; a suppressed value is never part of
  any message that could reconstruct it. When nothing is allowed it sends nothing.
- :func:`all_within` opens one bit: whether *every* element of a shared column lies in a
  public range [low, high]. It protects computations whose correctness depends on a value
  range that the manifest does not declare (the 64-bit sum of a mean, the key width of a
  sort). Exact for every 64-bit x: with y = x - low (mod 2^64) and w = high - low + 1
  (1 <= w <= 2^63), x is in range iff y < w as unsigned integers, iff msb(y) = 0 and
  msb(y - w) = 1 (when msb(y) = 0, y - w lies in [-2^63, 2^63) as a signed integer). Both
  MSBs come from one batched circuit, one AND gives the in-range bits (Araki et al.
  CCS 2016, §2.2 over GF(2)), their complements are summed arithmetically
  (:func:`mpc.protocols.bits.b2a_sum`, 2 rounds) and a zero test on the count
  (:func:`mpc.protocols.compare.zero_bits`) is the only thing opened: the number of
  out-of-range values stays secret. About 7 + 1 + 2 + 4..7 + 1 rounds.

Suppressed cells are shown to the researcher as ``"<k"`` with k substituted (``"<5"``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from dic_connector.errors import ConfigError
from mpc.protocols import arith, bits, boolean, compare
from mpc.protocols.sort import index_bits
from mpc.ring import to_signed
from mpc.session import Session
from mpc.sharing import AShare, concat

#: Largest min_cell_count accepted (keeps count - k inside the comparison domain).
MAX_MIN_CELL_COUNT = 1 << 62

BoolArray = npt.NDArray[np.bool_]


def check_min_cell_count(k: int) -> int:
    """k itself, or :class:`ConfigError` when it is not an integer in [1, 2^62)."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k < MAX_MIN_CELL_COUNT:
        raise ConfigError(f"min_cell_count must be an integer >= 1, got {k!r}")
    return int(k)


def suppressed(k: int) -> str:
    """How a suppressed count is shown: ``"<k"`` with k substituted, e.g. ``"<5"``."""
    return f"<{k}"


def public_share(party: int, values: npt.ArrayLike) -> AShare:
    """A sharing of public integers (party 0 and 2 hold them in x_0), no communication."""
    arr = np.asarray(values, dtype=np.int64)
    zero = np.zeros(arr.shape, dtype=np.uint64)
    return AShare(party, zero, zero).add_public(arr.view(np.uint64))


async def at_least(s: Session, counts: AShare, k: int) -> BoolArray:
    """Open, for each shared count, the bit [count >= k] (to the three nodes; 8 rounds).

    ``counts`` is one-dimensional; nothing but these bits is opened.
    """
    k = check_min_cell_count(k)
    if counts.shape[0] == 0:
        return np.zeros(0, dtype=np.bool_)
    below = await compare.sign_bits(s, counts - k, 64)
    opened = await boolean.open_bool(s, below)
    return np.asarray((opened & np.uint64(1)) == 0, dtype=np.bool_)


async def open_allowed(s: Session, values: AShare, allowed: BoolArray) -> list[int]:
    """Open the values (signed) whose ``allowed`` bit is set, in order; no others.

    ``allowed`` is public (an output of :func:`at_least` or a conjunction of such), so
    every party selects the same elements. One round, or none when nothing is allowed.
    """
    index = np.flatnonzero(allowed)
    if index.size == 0:
        return []
    opened = await arith.open_(s, values[index])
    return [int(v) for v in to_signed(opened)]


def overflow_bound(rows: int) -> int:
    """B = 2^(63 - b), b = bits of rows - 1: the sum of ``rows`` values in [-B, B - 1]
    lies in [-2^63, 2^63), so it never wraps the ring."""
    return 1 << (63 - index_bits(max(rows, 1)))


async def all_within(s: Session, x: AShare, low: int, high: int) -> bool:
    """Open one bit: whether every element of ``x`` (signed) lies in [low, high].

    See the module docstring for the circuit; requires 1 <= high - low + 1 <= 2^63.
    """
    width = high - low + 1
    if not 1 <= width <= 1 << 63:
        raise ValueError(f"range [{low}, {high}] is empty or wider than 2^63")
    n = x.shape[0]
    if n == 0:
        return True
    y = x - low
    msbs = await compare.sign_bits(s, concat([y, y - width]), 64)
    inside = await boolean.and_(s, msbs[:n] ^ 1, msbs[n:])
    outside = await bits.b2a_sum(s, inside ^ 1, axis=0)
    is_zero = await compare.zero_bits(s, outside.reshape(1), max(1, n.bit_length()))
    opened = await boolean.open_bool(s, is_zero)
    return bool(opened[0] & np.uint64(1))
