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
4. **Selection from a sample** (Floyd, Rivest, "Expected time bounds for selection",
   CACM 18(3), 1975, with opened comparisons in place of plain ones). Random pivots cost
   k comparisons per element per level and about 4 n (median) to 7 n (quartiles) in all.
   A segment of m >= SAMPLE_SELECT_MIN elements with few wanted ranks instead draws a
   uniform sample of ~(2 m)^(2/3) members (public randomness), selects from it, by the
   same protocol, two pivots bracketing each wanted rank (its expected rank in the
   sample -/+ WINDOW_SIGMAS standard deviations), and places every member among those few
   sorted pivots by a binary search weighted by the expected bucket sizes: one opened
   comparison with one pivot per member and step, ~1.5 per member for the median and
   ~2.75 for quartiles. Only the narrow windows (~m^(2/3) members) holding the wanted ranks
   continue; a rank that fell outside its window is still in some bucket, which continues
   instead (correct always, slower with probability ~10^-4). Comparisons run in batches of
   COMPARISON_CHUNK, so a level's working memory does not grow with n.
5. From SHUFFLE_COMPOSITE_ONLY_MIN rows on, selection shuffles the composites alone and
   recovers the selected keys as floor(composite / 2^b) by exact truncation.

**What it reveals.** Every opened bit is [y_p < y_e] for two positions of the shuffled
array, i.e. a function of sigma, the permutation that sorts the shuffled composites, and of
the public pivot choices (and of positions chosen from earlier opened bits, as the
sample's pivots and the binary search steps are). With distinct composites
sigma = rank o pi^-1 where rank is fixed by the data and pi is uniform and unknown to
each party, so sigma is a uniform permutation
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
8 for 64-bit comparisons, per batch of COMPARISON_CHUNK comparisons; a sampled step adds
the sample's levels and one level per binary search step; exact truncation 8 rounds; the
interpolation is local. Measured on loopback parties: the median of 10^6 rows opens 1.9
comparison bits per row where random pivots opened 3.9; quartiles 3.5.

Quantiles are R type 7 (Hyndman, Fan, 1996; ``numpy.quantile(method="linear")``):
h = (n - 1) p, q = x_(floor h) +
(h - floor h)(x_(ceil h) - x_(floor h)); the weight is rounded to ``weight_bits`` bits and
the result is returned *without* truncation, as shares of q * 2^weight_bits (fixed-point with
weight_bits more fractional bits than x), so it is exact up to the weight's rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from mpc.errors import ProtocolError
from mpc.protocols.bits import trunc_exact
from mpc.protocols.boolean import open_bool
from mpc.protocols.compare import less_than_bits
from mpc.protocols.shuffle import shuffle
from mpc.session import Session
from mpc.sharing import AShare

#: Comparisons per level never need to go below this (latency dominates small levels) ...
MIN_COMPARISONS_PER_LEVEL = 1 << 15
#: ... and may be this many per active element (more pivots, fewer levels).
COMPARISONS_PER_ELEMENT = 3
#: Segments at least this large, with at most SAMPLED_TARGETS wanted ranks, are narrowed by
#: pivots selected from a random sample (Floyd, Rivest, CACM 18(3), 1975) instead of random
#: pivots compared with every member.
SAMPLE_SELECT_MIN = 1 << 16
SAMPLED_TARGETS = 32
#: Half-width of the window around a target's expected rank in the sample, in standard
#: deviations of that rank (the target falls outside with probability ~ 6e-5 per side, and
#: is then found, a little later, in the larger bucket it fell in).
WINDOW_SIGMAS = 4.0
#: Most comparisons in one batch (8 rounds each): bounds a level's working memory, and at
#: 2^18 (2 MiB per array) the batch's arrays stay in cache: at 10^6 rows 2^18 took 25 %
#: less CPU and 35 % less peak memory than 2^20.
COMPARISON_CHUNK = 1 << 18
#: From this many rows on, select_ranks and quantiles shuffle the composite keys alone and
#: recover the selected keys by exact truncation (8 rounds) instead of shuffling the keys.
SHUFFLE_COMPOSITE_ONLY_MIN = 1 << 16

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
    return await shuffle(s, _table([keys, _composite(keys, b), *payload])), key_bits + b + 1


def _composite(keys: AShare, b: int) -> AShare:
    """keys * 2^b + row index (local)."""
    return (keys * (1 << b)).add_public(np.arange(keys.shape[0], dtype=np.uint64))


async def _order_statistics(s: Session, x: AShare, ranks: IntArray, key_bits: int) -> AShare:
    """x_(r) for each rank r. Small inputs shuffle (key, composite) and read the key at the
    selected positions; from SHUFFLE_COMPOSITE_ONLY_MIN rows on only the composite is
    shuffled (half the shuffle's work and memory) and the keys of the few selected rows are
    floor(composite / 2^b), exactly (:func:`~mpc.protocols.bits.trunc_exact`, 8 rounds;
    the composite is a signed key_bits + b bit integer)."""
    if len(x.shape) != 1:
        raise ProtocolError(f"keys must be one column, got shape {x.shape}")
    n = x.shape[0]
    b = _check(n, key_bits)
    if n < SHUFFLE_COMPOSITE_ONLY_MIN:
        table, bits = await _prepare(s, x, key_bits)
        return table[await ranked_positions(s, table[:, 1], ranks, bits), 0]
    composite = await shuffle(s, _composite(x, b))
    picked = composite[await ranked_positions(s, composite, ranks, key_bits + b + 1)]
    del composite
    if picked.shape[0] == 0:
        return picked
    return await trunc_exact(s, picked, b, key_bits + b - 1)


async def ranked_positions(s: Session, keys: AShare, ranks: IntArray, bits: int) -> IntArray:
    """Positions (in ``keys``) of the elements of the given ranks (0 = smallest).

    ``keys`` must be distinct and already shuffled: comparison bits are opened (module doc).
    """
    n = keys.shape[0]
    targets = np.unique(ranks)
    found = np.full(n, -1, dtype=np.int64)  # found[r] = position of rank r, once known
    await _select(s, keys, [(np.arange(n, dtype=np.int64), 0)], targets, found, bits)
    return found[ranks]


Segment = tuple[IntArray, int]  # members (positions in keys) and the rank of the smallest


def _targets_in(targets: IntArray, base: int, size: int) -> IntArray:
    return targets[np.searchsorted(targets, base):np.searchsorted(targets, base + size)]


async def _select(s: Session, keys: AShare, segments: list[Segment], targets: IntArray,
                  found: IntArray, bits: int) -> None:
    """Set ``found[t]`` to the position of rank t for every target t in a segment."""
    while segments:
        sampled = [g for g in segments if g[0].shape[0] >= max(2, SAMPLE_SELECT_MIN)
                   and _targets_in(targets, g[1], g[0].shape[0]).shape[0] <= SAMPLED_TARGETS]
        others = [g for g in segments if not any(g is h for h in sampled)]
        if others:
            await _quickselect(s, keys, others, targets, found, bits)
        segments = await _narrow(s, keys, sampled, targets, found, bits) if sampled else []


async def _opened_less(s: Session, keys: AShare, left: IntArray, right: IntArray,
                       bits: int) -> npt.NDArray[np.bool_]:
    """The opened bits [keys[left] < keys[right]], in batches of COMPARISON_CHUNK."""
    out = np.empty(left.shape[0], dtype=np.bool_)
    for i in range(0, left.shape[0], COMPARISON_CHUNK):
        lt = await less_than_bits(s, keys[left[i:i + COMPARISON_CHUNK]],
                                  keys[right[i:i + COMPARISON_CHUNK]], bits)
        opened = await open_bool(s, lt)
        out[i:i + opened.shape[0]] = (opened & np.uint64(1)).astype(np.bool_)
    return out


async def _quickselect(s: Session, keys: AShare, segments: list[Segment], targets: IntArray,
                       found: IntArray, bits: int) -> None:
    """Multi-pivot quickselect / sample sort (module doc) on several segments at once."""
    members = np.concatenate([g[0] for g in segments])
    size = np.array([g[0].shape[0] for g in segments], dtype=np.int64)
    base = np.array([g[1] for g in segments], dtype=np.int64)
    seg_of = np.repeat(np.arange(len(segments), dtype=np.int64), size)
    while True:
        single = size == 1
        found[base[single]] = members[single[seg_of]]
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
        opened = await _opened_less(s, keys, pivots[piv_idx], members[mem_idx], bits)
        below = np.bincount(mem_idx, weights=opened, minlength=m).astype(np.int64)
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


def _sample_ranks(m: int, sample: int, local: IntArray) -> IntArray:
    """Ranks, in a uniform sample of ``sample`` of the ``m`` members, of pivots bracketing
    each local target rank: its expected rank in the sample -/+ WINDOW_SIGMAS standard
    deviations (hypergeometric, bounded by the binomial's), and one more on each side.
    Ranks outside the sample are dropped (no pivot on that side)."""
    p = (local + 0.5) / m
    mean = p * sample
    spread = WINDOW_SIGMAS * np.sqrt(sample * p * (1 - p)) + 1
    ranks = np.concatenate([np.floor(mean - spread), np.ceil(mean + spread)]).astype(np.int64)
    return np.unique(ranks[(ranks >= 0) & (ranks < sample)])


def _search_table(weights: npt.NDArray[np.float64]) -> IntArray:
    """For buckets 0..K with expected sizes ``weights``: table[lo, hi] = the pivot p in
    [lo, hi) that splits buckets lo..hi most evenly by weight (bucket j lies between pivots
    j - 1 and j), so that elements of large buckets settle after few comparisons."""
    buckets = weights.shape[0]
    cum = np.concatenate([[0.0], np.cumsum(weights)])
    table = np.zeros((buckets, buckets), dtype=np.int64)
    for lo in range(buckets):
        for hi in range(lo + 1, buckets):
            p = np.arange(lo, hi)
            table[lo, hi] = lo + int(np.argmin(np.abs(2 * cum[p + 1] - cum[lo] - cum[hi + 1])))
    return table


async def _narrow(s: Session, keys: AShare, segments: list[Segment], targets: IntArray,
                  found: IntArray, bits: int) -> list[Segment]:
    """One step of sample selection on each segment: select pivots bracketing its targets
    from a random sample of about (2 m)^(2/3) members (one selection for all segments'
    samples), place every member among its segment's pivots by a weighted binary search
    (each step one opened comparison with one pivot per member, all segments batched), and
    return the buckets holding targets that no pivot hit, without their pivot. About 1.5
    comparisons per member for one target, 2.75 for three, where random pivots cost 4 and 7.
    """
    plans: list[tuple[IntArray, int, IntArray, IntArray, IntArray]] = []
    for members, base in segments:
        m = members.shape[0]
        local = _targets_in(targets, base, m) - base
        size = min(m, int(np.ceil((2.0 * m) ** (2 / 3))))
        order = np.argpartition(s.rand.common.ring(m), size - 1)[:size]
        picked = members[np.sort(order)]
        ranks = _sample_ranks(m, size, local)
        if ranks.shape[0] == 0:  # a tiny sample: its median still guarantees progress
            ranks = np.array([size // 2], dtype=np.int64)
        plans.append((members, base, picked, ranks, local))
    # the pivots of every segment, by one selection on the samples side by side
    bases = np.cumsum([0] + [p[2].shape[0] for p in plans])
    in_sample = np.full(int(bases[-1]), -1, dtype=np.int64)
    await _select(s, keys, [(p[2], int(b)) for p, b in zip(plans, bases, strict=False)],
                  np.concatenate([p[3] + b for p, b in zip(plans, bases, strict=False)]),
                  in_sample, bits)
    pivot_lists = [in_sample[p[3] + b] for p, b in zip(plans, bases, strict=False)]
    tables = [_search_table(np.diff(np.concatenate([[-1], p[3], [p[2].shape[0]]]))
                            .astype(np.float64)) for p in plans]
    pivots = np.concatenate(pivot_lists)
    pivot_offset = np.cumsum([0] + [r.shape[0] for r in pivot_lists])
    # binary search of every member among its segment's pivots: bucket j holds the
    # members above pivot j - 1 and up to pivot j (which is its largest); the steps run in
    # batches of COMPARISON_CHUNK members, so only lo, hi and the active set span all m
    everyone = plans[0][0] if len(plans) == 1 else np.concatenate([p[0] for p in plans])
    seg_of = np.repeat(np.arange(len(plans), dtype=np.int32),
                       [p[0].shape[0] for p in plans])
    lo = np.zeros(everyone.shape[0], dtype=np.int32)
    hi = np.array([r.shape[0] for r in pivot_lists], dtype=np.int32)[seg_of]
    while True:
        active = np.flatnonzero(lo < hi)
        if active.shape[0] == 0:
            break
        for i in range(0, active.shape[0], COMPARISON_CHUNK):
            batch = active[i:i + COMPARISON_CHUNK]
            seg, a_lo, a_hi = seg_of[batch], lo[batch], hi[batch]
            split = np.empty(batch.shape[0], dtype=np.int32)
            for g, table in enumerate(tables):
                mine = seg == g
                split[mine] = table[a_lo[mine], a_hi[mine]]
            above = await _opened_less(s, keys, pivots[pivot_offset[seg] + split],
                                       everyone[batch], bits)
            lo[batch] = np.where(above, split + 1, a_lo)
            hi[batch] = np.where(above, a_hi, split)
        del active
    # buckets holding targets; a target that is a bucket's largest element is its pivot
    windows: list[Segment] = []
    for g, (members, base, _, ranks, local) in enumerate(plans):
        bucket = lo if len(plans) == 1 else lo[seg_of == g]
        counts = np.bincount(bucket, minlength=ranks.shape[0] + 1)
        ends = np.cumsum(counts)
        for j in np.unique(np.searchsorted(ends, local, side="right")):
            begin, end = int(ends[j] - counts[j]), int(ends[j])
            mine = local[(local >= begin) & (local < end)]
            inside = members[bucket == j]
            if j < ranks.shape[0]:
                pivot = pivot_lists[g][j]
                if mine[-1] == end - 1:
                    found[base + end - 1] = pivot
                    mine = mine[:-1]
                inside = inside[inside != pivot]
            if mine.shape[0]:
                windows.append((inside, base + begin))
    return windows


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
    return await _order_statistics(s, x, wanted, key_bits)


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
    picked = await _order_statistics(s, x, np.concatenate([lo, hi]), key_bits)
    low, high = picked[:len(lo)], picked[len(lo):]
    return low * (1 << weight_bits) + (high - low) * weights


async def median(s: Session, x: AShare, key_bits: int = 40, weight_bits: int = 16) -> AShare:
    """The median (R type 7), as shares of median * 2^weight_bits."""
    return await quantiles(s, x, [0.5], key_bits, weight_bits)
