"""Comparison, equality, selection, minimum and maximum on shared arrays.

All functions are elementwise over whole arrays and return **arithmetic** 0/1 shares, usable
directly as filters (multiply) and in sums (counts). The ``*_bits`` variants return the
boolean 0/1 shares before injection, for callers that open comparison bits or combine them.

**Domain.** ``less_than(x, y, bits=k)`` is the sign bit of (x - y) mod 2^k, so it is correct
when x - y, as an integer, lies in [-2^(k-1), 2^(k-1)): for the default k = 64, whenever
|x - y| < 2^63, e.g. any two signed values in [-2^62, 2^62). ``equals(x, y, bits=k)`` tests
x - y = 0 mod 2^k, exact when |x - y| < 2^k (always for k = 64). A declared smaller k
(e.g. ages, category codes) gives fewer rounds and packs 64 // K values per word
(K = next power of two >= k).

**Rounds and data** (k = 64; see :mod:`mpc.protocols.bits`):

- ``less_than`` / ``less_than_public``: 1 (generate/propagate via 3-party OT)
  + ceil(log2(k-1)) (carry tree; 6) + 1 (bit injection) = **8 rounds**; k = 16: 6 rounds.
  Party 0 sends about 9 words per comparison, parties 1 and 2 about 6.
- ``equals`` / ``equals_public``: party 0 knows u = d_0 + d_1 and parties 1, 2 know
  v = -d_2 for d = x - y, and d = 0 iff u = v: 1 round to share u ^ v, log2(K) rounds of
  an AND tree over the K bits of each field (6), 1 injection = **8 rounds**; k = 4 (ten
  levels): 4 rounds. This "split" test replaces the generic bit decomposition + OR tree
  (14 rounds). The tree halves its words every level: about 5 words from party 0 and 3
  from the others per test at k = 64, 64 / K times fewer for small k.
- ``select(b, x, y)`` = y + b (x - y): 1 round.
- ``min_`` / ``max_``: tournament, ceil(log2 n) levels of (less_than + select) = 9 rounds
  per level, along the last axis. An empty axis is a :class:`~mpc.errors.ProtocolError`.

Nothing is opened. Elementwise functions accept empty arrays and return empty results.
"""

from __future__ import annotations

import numpy as np

from mpc.errors import ProtocolError
from mpc.protocols import arith
from mpc.protocols.bits import inject, input_xor, msb, split_sum
from mpc.protocols.boolean import BShare, and_, field_mask, field_width, pack
from mpc.session import Session
from mpc.sharing import AShare, Public, concat


def _check_bits(bits: int, low: int = 1) -> None:
    if not low <= bits <= 64:
        raise ProtocolError(f"comparison width must be in [{low}, 64] bits, got {bits}")


def _same_shape(x: AShare, y: AShare, what: str) -> None:
    if x.shape != y.shape:
        raise ProtocolError(f"{what} needs equal shapes, got {x.shape} and {y.shape}")


async def sign_bits(s: Session, d: AShare, bits: int = 64) -> BShare:
    """Boolean 0/1 shares of [d < 0] for d read as a signed ``bits``-bit integer."""
    _check_bits(bits, 2)
    return await msb(s, d, bits)


def _clear_bit_mask(b: int) -> np.uint64:
    """Positions whose index has bit b clear."""
    return np.uint64(sum(1 << q for q in range(64) if not (q >> b) & 1))


async def zero_bits(s: Session, d: AShare, bits: int = 64) -> BShare:
    """Boolean 0/1 shares of [d = 0 mod 2^bits] (1 + log2(K) rounds).

    AND tree over the K bits of each packed field; after each level only half of the bits
    matter, so two words are interleaved into one ((A & M) ^ ((B & M) << shift), local) and
    the next level ANDs half as many words: 1 + 1/2 + 1/4 + ... words per value in total.
    """
    _check_bits(bits)
    width = field_width(bits)
    levels = width.bit_length() - 1
    per = 64 // width
    flat = d.reshape(-1)
    total = flat.shape[0]
    chunk = per << max(0, levels - 1)
    padded = -(-total // chunk) * chunk
    pad = np.zeros(padded - total, dtype=np.uint64)
    u, v = split_sum(flat, bits)
    mask = np.uint64((1 << bits) - 1)
    u = pack(np.concatenate([u, pad]), width) if u is not None else None
    v = pack(np.concatenate([(np.uint64(0) - v) & mask, pad]), width) if v is not None else None
    words = padded // per
    diff = await input_xor(s, u, v, (words,))
    f = ~diff & field_mask(width, 0, width)  # all bits of the field 1 iff u = -v
    e = np.arange(total, dtype=np.int64)
    word, offset = e // per, (e % per) * width
    for j in range(levels):
        shift = width >> (j + 1)
        f = await and_(s, f, f >> shift)
        if j < levels - 1:
            keep, half = _clear_bit_mask(shift.bit_length() - 1), f.shape[0] // 2
            f = (f[:half] & keep) ^ ((f[half:] & keep) << shift)
            upper = word >= half
            offset = offset + upper.astype(np.int64) * shift
            word = np.where(upper, word - half, word)
    one, position = np.uint64(1), offset.astype(np.uint64)
    return BShare(f.party, ((f.a[word] >> position) & one).reshape(d.shape),
                  ((f.b[word] >> position) & one).reshape(d.shape))


async def less_than_bits(s: Session, x: AShare, y: AShare, bits: int = 64) -> BShare:
    _same_shape(x, y, "less_than")
    return await sign_bits(s, x - y, bits)


async def less_than(s: Session, x: AShare, y: AShare, bits: int = 64) -> AShare:
    """Arithmetic 0/1 shares of [x < y] (signed; domain in the module doc). 8 rounds."""
    return await inject(s, await less_than_bits(s, x, y, bits))


async def less_than_public(s: Session, x: AShare, c: Public, bits: int = 64) -> AShare:
    """Arithmetic 0/1 shares of [x < c] for a public c (scalar or array). 8 rounds."""
    return await inject(s, await sign_bits(s, x - c, bits))


async def greater_equal_public(s: Session, x: AShare, c: Public, bits: int = 64) -> AShare:
    """[x >= c] = 1 - [x < c] (filters such as ``age >= 65``). 8 rounds."""
    return 1 - await less_than_public(s, x, c, bits)


async def equals_bits(s: Session, x: AShare, y: AShare, bits: int = 64) -> BShare:
    _same_shape(x, y, "equals")
    return await zero_bits(s, x - y, bits)


async def equals(s: Session, x: AShare, y: AShare, bits: int = 64) -> AShare:
    """Arithmetic 0/1 shares of [x = y] (8 rounds for 64 bits)."""
    return await inject(s, await equals_bits(s, x, y, bits))


async def equals_public(s: Session, x: AShare, c: Public, bits: int = 64) -> AShare:
    """Arithmetic 0/1 shares of [x = c] for a public c (scalar or broadcastable array)."""
    return await inject(s, await zero_bits(s, x - c, bits))


async def select(s: Session, b: AShare, x: AShare, y: AShare) -> AShare:
    """x where b = 1, y where b = 0, for arithmetic 0/1 shares b (1 round)."""
    _same_shape(x, y, "select")
    _same_shape(b, x, "select")
    return y + await arith.mul(s, b, x - y)


async def _tournament(s: Session, x: AShare, bits: int, want_min: bool) -> AShare:
    if x.shape == () or x.shape[-1] == 0:
        raise ProtocolError("min/max of an empty array is undefined")
    while x.shape[-1] > 1:
        half = x.shape[-1] // 2
        left, right = x[..., 0:2 * half:2], x[..., 1:2 * half:2]
        left_smaller = await less_than(s, left, right, bits)
        if want_min:
            winners = await select(s, left_smaller, left, right)
        else:
            winners = await select(s, left_smaller, right, left)
        if x.shape[-1] % 2:
            winners = concat([winners, x[..., 2 * half:]], axis=-1)
        x = winners
    return x[..., 0]


async def min_(s: Session, x: AShare, bits: int = 64) -> AShare:
    """Minimum along the last axis (ceil(log2 n) levels of 9 rounds)."""
    return await _tournament(s, x, bits, want_min=True)


async def max_(s: Session, x: AShare, bits: int = 64) -> AShare:
    """Maximum along the last axis (ceil(log2 n) levels of 9 rounds)."""
    return await _tournament(s, x, bits, want_min=False)
