"""Arithmetic protocols on replicated shares: products, truncation, input and opening.

Notation: party i holds (x_i, x_(i+1)) of x = x_0 + x_1 + x_2 (mod 2^64).

- **Local** (no communication): x + y, x - y, -x, c * x, x + c: see :class:`~mpc.sharing.AShare`.
- **Multiplication**, 1 round (Araki et al., CCS 2016, §2.2): party i computes
  z_i = x_i y_i + x_i y_(i+1) + x_(i+1) y_i + alpha_i, a 3-out-of-3 sharing of xy
  re-randomised by the zero-sharing alpha, and sends z_i to party i - 1, which then holds
  (z_(i-1), z_i). Each party sends one ring element per product.
- **Dot product**, 1 round, one element sent per dot product whatever its length
  (ABY3 §5.1): the 3-out-of-3 shares are summed locally before the single reshare.
- **Truncation** by 2^d of a replicated sharing, 1 round, 1 message (ABY3 §5.1.1,
  "share truncation" Pi_trunc1, adapted to our indexing): party 0 computes
  A = x_0 + x_1 and y_0 = (A >> d) - r with r known to parties 0 and 1, and sends y_0 to
  party 2; y_1 = r; y_2 = x_2 >> d (arithmetic shifts, known to parties 1 and 2).
  **Error bound.** For a signed x with |x| < 2^l, since x_2 is uniform,
  y = floor(x / 2^d) + e with e in {-1, 0} except with probability at most (|x| + 1) / 2^64
  per element, when the result is off by about 2^(64-d) ("wrap"). With l = 40 (e.g. values
  below 2^24 with f = 16 fractional bits) that is below 2^-24 per element: callers choose
  formats with headroom. ``mul_fixed`` = multiplication then truncation, 2 rounds.
- **Input** by a party p that knows x (1 round, 1 message to one party): x_(p+1) from the
  PRG p shares with p + 1, x_(p+2) from the common PRG, and x_p = x - x_(p+1) - x_(p+2)
  sent to party p + 2.
- **Opening** to all (1 round, each party sends one element per value to its successor) or to
  one party p (party p - 1 sends it x_(p-1)). Opening is a disclosure: the analysis layer calls
  these only on values its disclosure rules allow.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mpc import ring
from mpc.errors import ProtocolError
from mpc.ring import RingArray, as_ring
from mpc.session import Session
from mpc.sharing import AShare, prev_party


def _local_product(x: AShare, y: AShare) -> RingArray:
    """x_i y_i + x_i y_(i+1) + x_(i+1) y_i = x_i (y_i + y_(i+1)) + x_(i+1) y_i: party i's
    additive share of xy (3-out-of-3), in two fresh arrays (at 10^6 elements allocating
    and faulting in temporaries costs more than the arithmetic)."""
    product: RingArray = np.add(y.a, y.b)
    product *= x.a
    other = np.multiply(x.b, y.a)
    product += other
    return product


async def reshare(s: Session, z: RingArray) -> AShare:
    """Turn a 3-out-of-3 sharing (party i holds z_i) into a replicated one (1 round).

    The caller must have re-randomised z with a zero-sharing.
    """
    return AShare(s.party, z, await s.sendrecv_round(s.prev, z, s.next))


async def mul(s: Session, x: AShare, y: AShare) -> AShare:
    """Elementwise x * y mod 2^64 (1 round)."""
    if x.shape != y.shape:
        raise ProtocolError(f"mul needs equal shapes, got {x.shape} and {y.shape}")
    return await reshare(s, s.rand.add_zero_share(_local_product(x, y)))


async def square(s: Session, x: AShare) -> AShare:
    """x^2 mod 2^64 (1 round)."""
    return await mul(s, x, x)


async def dot(s: Session, x: AShare, y: AShare) -> AShare:
    """sum(x * y) over the last axis, mod 2^64 (1 round, one element per dot product)."""
    if x.shape != y.shape:
        raise ProtocolError(f"dot needs equal shapes, got {x.shape} and {y.shape}")
    z = np.sum(_local_product(x, y), axis=-1, dtype=np.uint64)
    z = np.asarray(z, dtype=np.uint64) + s.rand.zero_share(np.shape(z))
    return await reshare(s, np.asarray(z, dtype=np.uint64))


async def segment_dot(s: Session, x: AShare, y: AShare, lengths: Sequence[int]) -> AShare:
    """Per segment of the last axis (consecutive runs of ``lengths`` elements, which sum to
    its size), sum(x * y) mod 2^64: shape ``x.shape[:-1] + (len(lengths),)``. One round, one
    element per segment sum (the per-site form of :func:`dot`)."""
    if x.shape != y.shape:
        raise ProtocolError(f"segment_dot needs equal shapes, got {x.shape} and {y.shape}")
    if sum(lengths) != x.shape[-1] or any(n < 0 for n in lengths):
        raise ProtocolError(f"segments of {list(lengths)} elements do not cover "
                            f"{x.shape[-1]}")
    product = _local_product(x, y)
    z = ring.segment_sums(product, lengths)
    z = z + s.rand.zero_share(z.shape)
    return await reshare(s, np.asarray(z, dtype=np.uint64))


def _shift_signed(x: RingArray, d: int) -> RingArray:
    return (x.view(np.int64) >> np.int64(d)).view(np.uint64)


async def trunc(s: Session, x: AShare, d: int) -> AShare:
    """Shares of floor(x / 2^d) + e, e in {-1, 0}, for signed x (1 round; see module doc)."""
    if not 0 < d < 64:
        raise ProtocolError(f"truncation by 2^{d} is not defined; need 0 < d < 64")
    pair01 = s.rand.pair_prg(1 if s.party == 0 else 0) if s.party in (0, 1) else None
    if s.party == 0:
        assert pair01 is not None
        r = pair01.ring(x.shape)
        y0 = _shift_signed(x.a + x.b, d) - r
        await s.send_round(2, y0)
        return AShare(0, y0, r)
    if s.party == 1:
        assert pair01 is not None
        r = pair01.ring(x.shape)
        s.idle_round()
        return AShare(1, r, _shift_signed(x.b, d))
    return AShare(2, _shift_signed(x.a, d), await s.recv_round(0, x.shape))


async def mul_fixed(s: Session, x: AShare, y: AShare, frac_bits: int) -> AShare:
    """Fixed-point product of two values with ``frac_bits`` fractional bits (2 rounds)."""
    return await trunc(s, await mul(s, x, y), frac_bits)


async def input_from(s: Session, owner: int, values: RingArray | None,
                     shape: tuple[int, ...]) -> AShare:
    """Secret-share ``values`` known only to party ``owner`` (1 round, one message).

    With p the owner: x_(p+1) comes from the PRG of parties p and p+1; x_(p+2), which both
    other parties hold, from the common PRG; x_p = x - x_(p+1) - x_(p+2) goes to party p+2.
    Party p+1 sees two uniform values; party p+2 sees x_(p+2) and x_p, masked by x_(p+1).
    """
    if s.party == owner:
        if values is None or tuple(np.shape(values)) != tuple(shape):
            raise ProtocolError(f"input owner must supply values of shape {shape}")
        x_next = s.rand.next.ring(shape)
        x_common = s.rand.common.ring(shape)
        x_own = as_ring(values) - x_next - x_common
        await s.send_round(s.prev, x_own)
        return AShare(s.party, x_own, x_next)
    if s.party == (owner + 1) % 3:  # holds (x_(p+1), x_(p+2))
        x_p1 = s.rand.prev.ring(shape)
        x_p2 = s.rand.common.ring(shape)
        s.idle_round()
        return AShare(s.party, x_p1, x_p2)
    x_p2 = s.rand.common.ring(shape)  # party p+2 holds (x_(p+2), x_p)
    return AShare(s.party, x_p2, await s.recv_round(owner, shape))


async def open_(s: Session, x: AShare) -> RingArray:
    """Reveal x to all three parties (1 round). A disclosure: see the module doc."""
    s.reveal("arithmetic", x.shape)
    return x.a + x.b + await s.sendrecv_round(s.next, x.a, s.prev)


async def open_to(s: Session, x: AShare, party: int) -> RingArray | None:
    """Reveal x to ``party`` only (1 round); the others get None. A disclosure."""
    s.reveal("arithmetic", x.shape, (party,))
    sender = prev_party(party)
    if s.party == party:
        return x.a + x.b + await s.recv_round(sender, x.shape)
    if s.party == sender:
        await s.send_round(party, x.a)
    else:
        s.idle_round()
    return None


def sum_(x: AShare) -> AShare:
    """Shares of the sum of all elements (local)."""
    return x.sum()
