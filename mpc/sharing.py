"""Replicated additive secret sharing for three parties over Z_2^64.

A secret x is split as x = x_0 + x_1 + x_2 (mod 2^64) with x_0, x_1 uniform; party i holds the
pair (x_i, x_{i+1}), indices mod 3 (Araki, Furukawa, Lindell, Nof, Ohara, CCS 2016, §2; ABY3
§3). Any two parties can reconstruct; any single party sees two uniform, independent ring
elements, which tell it nothing about x. The redundancy (x_{i+1} is held by parties i and
i+1) lets :func:`reconstruct` check consistency.

:class:`AShare` is one party's local view. Linear operations on it are local and free:
sums and differences of shares, multiplication by a public integer, and adding a public
constant (which only the holders of x_0, parties 0 and 2, apply). Arrays inside a share are
never modified in place: a share may alias arrays that were sent to or received from peers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from mpc.errors import ShareError
from mpc.prg import Prg
from mpc.ring import RingArray, as_ring

N_PARTIES = 3

Public = int | np.integer[Any] | npt.NDArray[Any]


def next_party(i: int) -> int:
    return (i + 1) % N_PARTIES


def prev_party(i: int) -> int:
    return (i - 1) % N_PARTIES


def public_ring(c: Public) -> RingArray:
    """A public constant as a ring array (0-d for scalars: numpy ufuncs on arrays wrap mod
    2^64 silently, while numpy *scalar* arithmetic warns on overflow)."""
    if isinstance(c, np.ndarray):
        return as_ring(c)
    return np.array(int(c) % (1 << 64), dtype=np.uint64)


@dataclass(frozen=True, eq=False)
class SharePair:
    """Party ``party``'s pair of components of a replicated sharing: ``a`` = x_party,
    ``b`` = x_(party+1). Subclasses fix the group: + mod 2^64 (:class:`AShare`) or bitwise
    XOR (``protocols.boolean.BShare``)."""

    party: int
    a: RingArray
    b: RingArray

    def __post_init__(self) -> None:
        # reductions of 1-d arrays give numpy scalars; keep 0-d arrays (see public_ring)
        object.__setattr__(self, "a", np.asarray(self.a, dtype=np.uint64))
        object.__setattr__(self, "b", np.asarray(self.b, dtype=np.uint64))
        if self.a.shape != self.b.shape:
            raise ShareError(f"share components differ in shape: {self.a.shape} vs {self.b.shape}")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.a.shape)

    def __len__(self) -> int:
        return len(self.a)

    def _check(self, other: SharePair) -> None:
        if other.party != self.party:
            raise ShareError(f"shares of party {self.party} and party {other.party} combined")

    def __getitem__(self, index: Any) -> Self:
        return type(self)(self.party, self.a[index], self.b[index])

    def reshape(self, *shape: int) -> Self:
        return type(self)(self.party, self.a.reshape(*shape), self.b.reshape(*shape))

    def to_bytes(self) -> bytes:
        """The pair as ``a || b``, little-endian uint64 (what a node stores for a column)."""
        return (np.ascontiguousarray(self.a, dtype="<u8").tobytes()
                + np.ascontiguousarray(self.b, dtype="<u8").tobytes())

    @classmethod
    def from_bytes(cls, party: int, data: bytes, length: int) -> Self:
        """Inverse of :meth:`to_bytes` for a 1-d share of ``length`` elements."""
        if len(data) != 16 * length:
            raise ShareError(f"a share pair of {length} elements is {16 * length} bytes, "
                             f"got {len(data)}")
        both = np.frombuffer(data, dtype="<u8").astype(np.uint64)
        return cls(party, both[:length], both[length:])


@dataclass(frozen=True, eq=False)
class AShare(SharePair):
    """Party ``party``'s view of an arithmetic sharing (x = x_0 + x_1 + x_2 mod 2^64)."""

    def __add__(self, other: AShare | Public) -> AShare:
        if isinstance(other, AShare):
            self._check(other)
            return AShare(self.party, self.a + other.a, self.b + other.b)
        return self.add_public(other)

    __radd__ = __add__

    def __sub__(self, other: AShare | Public) -> AShare:
        if isinstance(other, AShare):
            self._check(other)
            return AShare(self.party, self.a - other.a, self.b - other.b)
        return self.add_public(np.uint64(0) - public_ring(other))

    def __rsub__(self, other: Public) -> AShare:
        return (-self).add_public(other)

    def __neg__(self) -> AShare:
        zero = np.uint64(0)
        return AShare(self.party, zero - self.a, zero - self.b)

    def __mul__(self, c: Public) -> AShare:
        """Multiplication by a public integer (or an array of them), mod 2^64."""
        if isinstance(c, AShare):
            raise ShareError("share x share products need a protocol: use protocols.arith.mul")
        k = public_ring(c)
        return AShare(self.party, self.a * k, self.b * k)

    __rmul__ = __mul__

    def add_public(self, c: Public) -> AShare:
        """x + c for public c: only x_0 absorbs c, held by party 0 (as a) and party 2 (as b)."""
        k = public_ring(c)
        if np.broadcast_shapes(self.a.shape, k.shape) == self.a.shape:
            # components that do not absorb c are shared, not copied (never modified)
            return AShare(self.party, self.a + k if self.party == 0 else self.a,
                          self.b + k if self.party == 2 else self.b)
        none = k * np.uint64(0)  # same broadcast shape on every party
        a = self.a + (k if self.party == 0 else none)
        b = self.b + (k if self.party == 2 else none)
        return AShare(self.party, a, b)

    def sum(self, axis: int | None = None) -> AShare:
        """Sum of the shared elements (local): shares of sum(x)."""
        return AShare(self.party, np.asarray(np.sum(self.a, axis=axis, dtype=np.uint64)),
                      np.asarray(np.sum(self.b, axis=axis, dtype=np.uint64)))


def concat(shares: Sequence[AShare], axis: int = 0) -> AShare:
    """Concatenate shares of one party (batching several columns into one round)."""
    if not shares:
        raise ShareError("nothing to concatenate")
    party = shares[0].party
    for s in shares:
        if s.party != party:
            raise ShareError("cannot concatenate shares of different parties")
    return AShare(party, np.concatenate([s.a for s in shares], axis=axis),
                  np.concatenate([s.b for s in shares], axis=axis))


def share(x: npt.ArrayLike, prg: Prg | None = None) -> tuple[AShare, AShare, AShare]:
    """Split ring elements ``x`` into the three parties' views (the dealer's operation).

    x_0 and x_1 are uniform from ``prg`` (a fresh CSPRNG-keyed AES-CTR stream by default);
    x_2 = x - x_0 - x_1.
    """
    xr = as_ring(x)
    prg = prg or Prg.fresh()
    x0 = prg.ring(xr.shape)
    x1 = prg.ring(xr.shape)
    x2 = xr - x0 - x1
    comps = (x0, x1, x2)
    return tuple(AShare(i, comps[i], comps[(i + 1) % 3]) for i in range(3))  # type: ignore[return-value]


def components(*views: SharePair) -> dict[int, RingArray]:
    """x_0, x_1, x_2 from the views of two or three distinct parties, checking that every
    component held twice has equal copies. Raises :class:`ShareError` on any mismatch."""
    if len(views) < 2:
        raise ShareError("reconstruction needs the views of at least two parties")
    if len({v.party for v in views}) != len(views):
        raise ShareError("the same party's view was given twice")
    comps: dict[int, RingArray] = {}
    for v in views:
        for idx, arr in ((v.party, v.a), ((v.party + 1) % 3, v.b)):
            if idx in comps:
                if comps[idx].shape != arr.shape or not np.array_equal(comps[idx], arr):
                    raise ShareError(f"inconsistent copies of share component x_{idx}")
            else:
                comps[idx] = arr
    return comps


def reconstruct(*views: AShare) -> RingArray:
    """x = x_0 + x_1 + x_2 from two or three distinct parties' views (checked)."""
    comps = components(*views)
    return np.asarray(comps[0] + comps[1] + comps[2], dtype=np.uint64)
