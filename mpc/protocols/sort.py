"""Shuffle-then-sort, selection by rank, quantiles (R type 7) and the median.

Sorting secret data with a comparison sort whose comparison results are *opened* is safe
once the data has been obliviously shuffled and the keys are distinct (Hamada, Kikuchi,
Chida, Ikarashi, Takahashi, "Practically efficient multi-party sorting protocols from
comparison sort algorithms", ICISC 2012; Asharov et al., CCS 2022):

1. **Distinct keys.** Key x_i becomes the composite x_i * 2^b + i, b = bits of n - 1, with i
   the *original* row index, so equal keys are ordered by input position (the sort is
   stable) and all composites differ. The index is shared along with the key and is
   shuffled with it, so after the shuffle no party knows which index a row carries.
2. **Shuffle** (:mod:`mpc.protocols.shuffle`) the rows (key, composite, payload...).
   To every single party the permutation pi is uniform.
3. **Sort with opened comparison bits.** A vectorised sample sort / quickselect: every
   level, each active segment of the shuffled array picks k random pivots (public
   randomness from the common PRG; k = 1 gives quickselect with a random pivot, k = size-1
   compares all pairs), all elements of all segments are compared with their segment's
   pivots in one batched ``less_than`` and the bits are opened. Elements with the same
   number of smaller pivots form a sub-segment; each pivot becomes a singleton (it is the
   largest of its sub-segment), which guarantees progress. Only segments holding a
   requested rank continue. k grows as segments shrink (a comparison budget per level), so
   n = 48 takes one level and n = 10^5 a handful.

**What it reveals.** Every opened bit is [y_p < y_e] for two positions of the shuffled
array, i.e. a function of sigma, the permutation that sorts the shuffled composites, and of
the public pivot choices. With distinct composites sigma = rank o pi^-1 where rank is fixed
by the data and pi is uniform and unknown to each party, so sigma is a uniform permutation
independent of the data: the transcript can be simulated from n alone. The positions
finally selected are positions in the shuffled array, equally uninformative. Without the
index trick the outcomes would depend on which values are equal ([a < b] = [b < a] = 0
shows a tie), leaking equalities; comparisons of an *unshuffled* array would leak the
order of the input.

**Domain.** Keys are signed ``key_bits``-bit integers (fixed-point values included; see
:func:`key_bits_for`), with key_bits + b <= 63; comparisons run on key_bits + b + 1 bits.
A width that cannot fit raises :class:`~mpc.errors.ProtocolError`, as does an empty input.
The keys themselves are secret and cannot be checked: a key outside the declared width
gives a wrong order, and the opened bits may then betray that it is out of range. The
declared width must come from the column's encoding range, which the data owner's encoder
enforces (:class:`~mpc.ring.FixedPoint`).

**Cost**: shuffle 3 rounds; each level 1 + ceil(log2(key_bits + b)) + 1 (open) rounds,
8 for 64-bit comparisons; the interpolation is local. Quantiles are R type 7 (Hyndman, Fan,
1996; ``numpy.quantile(method="linear")``): h = (n - 1) p, q = x_(floor h) +
(h - floor h)(x_(ceil h) - x_(floor h)); the weight is rounded to ``weight_bits`` bits and
the result is returned *without* truncation, as shares of q * 2^weight_bits (fixed-point with
weight_bits more fractional bits than x), so it is exact up to the weight's rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from mpc.errors import ProtocolError
from mpc.protocols.boolean import open_bool
from mpc.protocols.compare import less_than_bits
from mpc.protocols.shuffle import shuffle
from mpc.session import Session
from mpc.sharing import AShare

#: Comparisons per level never need to go below this (latency dominates small levels) ...
MIN_COMPARISONS_PER_LEVEL = 1 << 15
#: ... and may be this many per active element (more pivots, fewer levels).
COMPARISONS_PER_ELEMENT = 3

IntArray = npt.NDArray[np.int64]


def key_bits_for(low: int, high: int) -> int:
    """The smallest k with -2^(k-1) <= low and high < 2^(k-1), for encoded (ring-integer)
    bounds, e.g. ``key_bits_for(round(fp.low * fp.scale), round(fp.high * fp.scale))``."""
    if low > high:
        raise ProtocolError(f"empty key range [{low}, {high}]")
    k = 1
    while not (-(1 << (k - 1)) <= low and high < (1 << (k - 1))):
        k += 1
    return k


def index_bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


def _check(n: int, key_bits: int) -> int:
    if n == 0:
        raise ProtocolError("sorting or selecting by rank needs at least one element")
    b = index_bits(n)
    if key_bits < 1 or key_bits + b > 63:
        raise ProtocolError(f"keys of {key_bits} bits and {n} rows need {key_bits + b} "
                            f"bits with the row index; at most 63 are available")
    return b


def _table(columns: Sequence[AShare]) -> AShare:
    party = columns[0].party
    return AShare(party, np.stack([c.a for c in columns], axis=1),
                  np.stack([c.b for c in columns], axis=1))


async def _prepare(s: Session, keys: AShare, key_bits: int,
                   payload: Sequence[AShare] = ()) -> tuple[AShare, int]:
    """Shuffled table (key, composite, payload...) and the comparison width."""
    if len(keys.shape) != 1:
        raise ProtocolError(f"keys must be one column, got shape {keys.shape}")
    n = keys.shape[0]
    b = _check(n, key_bits)
    composite = (keys * (1 << b)).add_public(np.arange(n, dtype=np.uint64))
    return await shuffle(s, _table([keys, composite, *payload])), key_bits + b + 1


async def ranked_positions(s: Session, keys: AShare, ranks: IntArray, bits: int) -> IntArray:
    """Positions (in ``keys``) of the elements of the given ranks (0 = smallest).

    ``keys`` must be distinct and already shuffled: comparison bits are opened (module doc).
    """
    n = keys.shape[0]
    targets = np.unique(ranks)
    found = np.full(n, -1, dtype=np.int64)  # found[r] = position of rank r, once known
    members = np.arange(n, dtype=np.int64)
    seg_of = np.zeros(n, dtype=np.int64)
    base = np.zeros(1, dtype=np.int64)
    size = np.array([n], dtype=np.int64)
    while True:
        single = size == 1
        found[base[single]] = members[np.isin(seg_of, np.flatnonzero(single))]
        hits = np.searchsorted(targets, base + size) - np.searchsorted(targets, base)
        active = (size > 1) & (hits > 0)
        if not active.any():
            break
        keep = active[seg_of]
        members, old = members[keep], seg_of[keep]
        relabel = np.cumsum(active) - 1
        seg_of, base, size = relabel[old], base[active], size[active]
        m = members.shape[0]
        per = max(1, max(MIN_COMPARISONS_PER_LEVEL, COMPARISONS_PER_ELEMENT * m) // m)
        k = np.minimum(size - 1, per)
        start = np.cumsum(size) - size  # members are grouped by segment
        # random pivots: the k first members of each segment in a public random order
        order = np.lexsort((s.rand.common.ring(m), seg_of))
        is_pivot = (np.arange(m) - start[seg_of[order]]) < k[seg_of[order]]
        pivots = members[order[is_pivot]]
        pivot_start = np.cumsum(k) - k
        reps = k[seg_of]
        total = int(reps.sum())
        mem_idx = np.repeat(np.arange(m), reps)
        offset = np.arange(total) - np.repeat(np.cumsum(reps) - reps, reps)
        piv_idx = np.repeat(pivot_start[seg_of], reps) + offset
        lt = await less_than_bits(s, keys[pivots[piv_idx]], keys[members[mem_idx]], bits)
        opened = (await open_bool(s, lt)) & np.uint64(1)
        below = np.bincount(mem_idx, weights=opened.astype(np.float64),
                            minlength=m).astype(np.int64)
        pivot_flag = np.zeros(m, dtype=np.int64)
        pivot_flag[order[is_pivot]] = 1
        label = seg_of * (2 * per + 2) + 2 * below + pivot_flag
        labels, inverse, counts = np.unique(label, return_inverse=True, return_counts=True)
        parent = labels // (2 * per + 2)
        before = np.cumsum(counts) - counts
        first = np.searchsorted(parent, parent, side="left")
        base = base[parent] + before - before[first]
        size = counts.astype(np.int64)
        resort = np.argsort(inverse, kind="stable")
        members, seg_of = members[resort], inverse[resort].astype(np.int64)
    return found[ranks]


async def sort(s: Session, keys: AShare, payload: Sequence[AShare] = (),
               key_bits: int = 40) -> tuple[AShare, list[AShare]]:
    """Keys in ascending order (stable: ties keep input order) and payload columns in the
    same order. Shuffle + full sample sort; see the module doc for what is revealed."""
    table, bits = await _prepare(s, keys, key_bits, payload)
    n = keys.shape[0]
    positions = await ranked_positions(s, table[:, 1], np.arange(n, dtype=np.int64), bits)
    rows = table[positions]
    return rows[:, 0], [rows[:, 2 + j] for j in range(len(payload))]


async def select_ranks(s: Session, x: AShare, ranks: Sequence[int] | IntArray,
                       key_bits: int = 40) -> AShare:
    """The order statistics x_(r) for 0-based ranks r (shuffle + quickselect)."""
    n = x.shape[0] if x.shape else 0
    wanted = np.asarray(ranks, dtype=np.int64)
    if n and (wanted.min(initial=0) < 0 or wanted.max(initial=0) >= n):
        raise ProtocolError(f"ranks must lie in [0, {n - 1}]")
    table, bits = await _prepare(s, x, key_bits)
    return table[await ranked_positions(s, table[:, 1], wanted, bits), 0]


def type7_weights(n: int, probs: Sequence[float], weight_bits: int
                  ) -> tuple[IntArray, IntArray, npt.NDArray[np.uint64]]:
    """Lower and upper ranks and the weights round((h - floor h) 2^weight_bits), h = (n-1)p."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 1 or p.size == 0 or not np.all((p >= 0) & (p <= 1)):
        raise ProtocolError("probabilities must be a non-empty list of numbers in [0, 1]")
    h = (n - 1) * p
    lo = np.floor(h).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    weights = np.rint((h - lo) * float(1 << weight_bits)).astype(np.uint64)
    return lo, hi, weights


async def quantiles(s: Session, x: AShare, probs: Sequence[float], key_bits: int = 40,
                    weight_bits: int = 16) -> AShare:
    """R type 7 quantiles, as shares of q * 2^weight_bits (see the module doc).

    For x in fixed point with f fractional bits, decode the opened result with
    f + weight_bits fractional bits.
    """
    n = x.shape[0] if x.shape else 0
    _check(n, key_bits)
    if weight_bits < 0 or key_bits + weight_bits > 63:
        raise ProtocolError(f"{key_bits}-bit keys with {weight_bits} weight bits overflow "
                            "the ring (need key_bits + weight_bits <= 63)")
    lo, hi, weights = type7_weights(n, probs, weight_bits)
    table, bits = await _prepare(s, x, key_bits)
    ranks = np.concatenate([lo, hi])
    picked = table[await ranked_positions(s, table[:, 1], ranks, bits), 0]
    low, high = picked[:len(lo)], picked[len(lo):]
    return low * (1 << weight_bits) + (high - low) * weights


async def median(s: Session, x: AShare, key_bits: int = 40, weight_bits: int = 16) -> AShare:
    """The median (R type 7), as shares of median * 2^weight_bits."""
    return await quantiles(s, x, [0.5], key_bits, weight_bits)
