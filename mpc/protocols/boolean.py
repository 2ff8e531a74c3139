"""Boolean replicated sharing of 64-bit words: XOR shares, AND in one round.

A word x is split as x = x_0 ^ x_1 ^ x_2; party i holds (x_i, x_(i+1)) exactly as in the
arithmetic sharing, with XOR in place of addition (Araki et al., CCS 2016, §2, which is
stated for bits and works bitwise on words; ABY3 §3 "binary sharing").

Every operation is *bit-sliced*: one numpy operation on a uint64 array processes all 64
bit positions of every word at once, so a circuit of depth d over 64-bit values costs d
vectorised rounds whatever the number of values. Protocols that only need k < 64 bits per
value pack 64 // K values of K bits into one word (:func:`pack`, K a power of two), which
divides the data sent by 64 / K.

- **Local** (no communication): XOR of shares, XOR/AND with a public word, NOT, logical
  shifts (XOR-linear, applied to both components), indexing and reshaping.
- **AND**, 1 round (Araki et al. CCS 2016, §2.2, over GF(2)^64): party i computes
  z_i = x_i y_i ^ x_i y_(i+1) ^ x_(i+1) y_i ^ alpha_i, with alpha an XOR zero-sharing from
  the pairwise PRGs, and sends z_i to party i - 1. One word sent per word of output.
  :func:`and_many` evaluates several independent ANDs in that single round.
- **Opening** to all (1 round): each party sends x_i to party i + 1. A disclosure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mpc.errors import ProtocolError, ShareError
from mpc.prg import Prg
from mpc.ring import RingArray
from mpc.session import Session
from mpc.sharing import Public, SharePair, components, public_ring

ALL_ONES = np.uint64(0xFFFF_FFFF_FFFF_FFFF)


@dataclass(frozen=True, eq=False)
class BShare(SharePair):
    """Party ``party``'s view of a boolean sharing (x = x_0 ^ x_1 ^ x_2, 64 bits per word)."""

    def __xor__(self, other: BShare | Public) -> BShare:
        if isinstance(other, BShare):
            self._check(other)
            return BShare(self.party, self.a ^ other.a, self.b ^ other.b)
        return self.xor_public(other)

    __rxor__ = __xor__

    def xor_public(self, c: Public) -> BShare:
        """x ^ c: only component x_0 absorbs c (party 0 as ``a``, party 2 as ``b``)."""
        k = public_ring(c)
        none = k & np.uint64(0)
        return BShare(self.party, self.a ^ (k if self.party == 0 else none),
                      self.b ^ (k if self.party == 2 else none))

    def __invert__(self) -> BShare:
        return self.xor_public(ALL_ONES)

    def and_public(self, c: Public) -> BShare:
        """x & c for a public mask c (AND distributes over XOR)."""
        k = public_ring(c)
        return BShare(self.party, self.a & k, self.b & k)

    def __and__(self, c: Public) -> BShare:
        if isinstance(c, BShare):
            raise ShareError("share AND share needs a protocol: use boolean.and_")
        return self.and_public(c)

    def __lshift__(self, k: int) -> BShare:
        s = np.uint64(k)
        return BShare(self.party, self.a << s, self.b << s)

    def shift_and(self, k: int, mask: np.uint64) -> BShare:
        """(x << k) & mask, with one temporary per component."""
        s = np.uint64(k)
        a, b = self.a << s, self.b << s
        a &= mask
        b &= mask
        return BShare(self.party, a, b)

    def __rshift__(self, k: int) -> BShare:
        s = np.uint64(k)
        return BShare(self.party, self.a >> s, self.b >> s)



def share_bool(x: RingArray, prg: Prg | None = None) -> tuple[BShare, BShare, BShare]:
    """Split words x into the three parties' boolean views (the dealer's operation)."""
    words = np.asarray(x, dtype=np.uint64)
    prg = prg or Prg.fresh()
    x0, x1 = prg.ring(words.shape), prg.ring(words.shape)
    comps = (x0, x1, words ^ x0 ^ x1)
    return (BShare(0, comps[0], comps[1]), BShare(1, comps[1], comps[2]),
            BShare(2, comps[2], comps[0]))


def reconstruct_bool(*views: BShare) -> RingArray:
    """x = x_0 ^ x_1 ^ x_2 from two or three distinct parties' views (checked)."""
    comps = components(*views)
    return np.asarray(comps[0] ^ comps[1] ^ comps[2], dtype=np.uint64)


def _owned(a: RingArray) -> RingArray:
    """A fresh PRG output ``a`` if writable (nothing else holds it), else a copy."""
    return a if a.flags.writeable else a.copy()


def xor_zero_share(s: Session, shape: tuple[int, ...]) -> RingArray:
    """alpha_i with alpha_0 ^ alpha_1 ^ alpha_2 = 0, no communication."""
    alpha = _owned(s.rand.next.ring(shape))
    alpha ^= s.rand.prev.ring(shape)
    return alpha


def _and_local(s: Session, x: BShare, y: BShare) -> RingArray:
    """Party i's XOR share of x & y, re-randomised: x_i y_i ^ x_i y_(i+1) ^ x_(i+1) y_i ^ alpha_i.

    Written with in-place operations on fresh temporaries: at 10^6 words the allocations,
    not the bit operations, dominate.
    """
    if x.shape != y.shape:
        raise ProtocolError(f"and_ needs equal shapes, got {x.shape} and {y.shape}")
    z = np.bitwise_xor(y.a, y.b)
    z &= x.a
    t = np.bitwise_and(x.b, y.a)
    z ^= t
    return s.rand.xor_zero_share(z)


async def and_(s: Session, x: BShare, y: BShare) -> BShare:
    """Bitwise x & y of two shared word arrays (1 round)."""
    z = _and_local(s, x, y)
    received = await s.sendrecv_round(s.prev, z, s.next)
    return BShare(s.party, z, received)


async def and_many(s: Session, pairs: Sequence[tuple[BShare, BShare]]) -> list[BShare]:
    """Several independent ANDs in one round: one message carries all output shares."""
    if not pairs:
        return []
    if len(pairs) == 1:
        return [await and_(s, *pairs[0])]
    zs = [_and_local(s, x, y) for x, y in pairs]
    message = np.concatenate([z.ravel() for z in zs])
    received = await s.sendrecv_round(s.prev, message, s.next)
    out: list[BShare] = []
    offset = 0
    for z in zs:
        out.append(BShare(s.party, z, received[offset:offset + z.size].reshape(z.shape)))
        offset += z.size
    return out


async def open_bool(s: Session, x: BShare) -> RingArray:
    """Reveal x to all three parties (1 round). A disclosure."""
    s.reveal("boolean", x.shape)
    received = await s.sendrecv_round(s.next, x.a, s.prev)
    return np.asarray(x.a ^ x.b ^ received, dtype=np.uint64)


def field_width(bits: int) -> int:
    """The smallest power of two K >= bits (K divides 64): the width of a packed field."""
    if not 1 <= bits <= 64:
        raise ProtocolError(f"bit width must be in [1, 64], got {bits}")
    return 1 << (bits - 1).bit_length()


def field_mask(width: int, low: int, high: int) -> np.uint64:
    """A word with bits [low, high) of every ``width``-bit field set."""
    one = ((1 << high) - 1) ^ ((1 << low) - 1)
    word = 0
    for f in range(64 // width):
        word |= one << (f * width)
    return np.uint64(word)


def pack(values: RingArray, width: int) -> RingArray:
    """Pack the low ``width`` bits of each value, 64 // width values per word (zero-padded).

    Values must already be reduced to ``width`` bits. Local and XOR-linear, so it applies to
    each share component separately.
    """
    if width == 64:
        return np.asarray(values, dtype=np.uint64)
    per = 64 // width
    n = values.shape[0]
    words = -(-n // per)
    padded = np.zeros(words * per, dtype=np.uint64)
    padded[:n] = values
    shifts = (np.arange(per, dtype=np.uint64) * np.uint64(width))
    return np.asarray(np.bitwise_or.reduce(padded.reshape(words, per) << shifts, axis=1),
                      dtype=np.uint64)


def unpack_bit(words: RingArray, width: int, bit: int, n: int) -> RingArray:
    """Bit ``bit`` of each packed field, as 0/1 words, for the first ``n`` values."""
    per = 64 // width
    shifts = (np.arange(per, dtype=np.uint64) * np.uint64(width) + np.uint64(bit))
    bits = (words.reshape(-1, 1) >> shifts) & np.uint64(1)
    return np.asarray(bits.reshape(-1)[:n], dtype=np.uint64)


def unpack_bit_share(x: BShare, width: int, bit: int, n: int) -> BShare:
    return BShare(x.party, unpack_bit(x.a, width, bit, n), unpack_bit(x.b, width, bit, n))
