"""Group-by counts over categorical columns with declared levels: one-hot, then sum.

A categorical column holds one of L declared integer levels per row (the connector encodes
closed level lists and range-checks them, DESIGN.md §3). The frequency table is
count_l = sum_i [x_i = level_l]: the (n, L) one-hot matrix of the column followed by a
column sum. Because every x_i lies in [min level, max level], x_i - min < 2^k with
k = bitlength(max - min), so everything can be computed mod 2^k exactly. Two ways to get
the one-hot matrix (:func:`one_hots`, which batches several columns):

- **Rotation** (dense levels, at most ``ROTATE_SLACK`` x L slots 2^k, e.g. 100 levels in
  128 slots; :func:`rotates`): x - min mod 2^k = u + v with u known to party 0 and v to
  parties 1 and 2 (the local split of :mod:`mpc.protocols.bits`, ABY3 §5.3), and the
  one-hot of u + v is the unit vector e_u rotated by v. Party 0 sends party 2 e_u masked
  by R (R drawn with party 1); parties 1 and 2, who both hold v, rotate R and the masked
  vector by v and so hold additive shares of the one-hot, turned into replicated shares
  in one more round between them. 2 rounds, no comparison circuit; the result is
  arithmetic at once (no bit injection). The idea is that of lookups in a table rotated
  by a masked offset (one-time truth tables, Ishai et al., TCC 2013; TinyTable, Damgard et
  al., CRYPTO 2017); here the offset is a share both rotating parties hold, so it needs
  neither a mask nor preprocessing.
- **Zero test** (sparse levels such as [5, 1000]): an (n, L) equality of k-bit fields
  against the public levels, 64 // K per word (K = next power of two >= k), a
  1 + log2 K round AND tree (:mod:`mpc.protocols.compare`), then bit injection (1 round)
  or, for plain counts, the sum of the bits straight from the boolean shares
  (:func:`~mpc.protocols.bits.b2a_sum`, 2 rounds).

- :func:`count_by`: one-hot and a column sum, local after rotation: 2 rounds per chunk of
  rows for dense levels.
- ``weights`` (optional, both functions): sum_i w_i [x_i = l] instead of counts, for a
  0/1 filter (``count_by(zip, levels, weights=diabetes)``) or per-group sums of a column.
  Weights of shape (n, W) give W such tables from one set of one-hots (a leading axis of
  W): the one-hots, the costly part, are shared by every weight vector.
- :func:`count_by2`: contingency table over two columns. Both one-hot matrices in one
  batch; the table is ox^T oy, a matrix product whose cross terms are computed locally (as
  in a dot product, ABY3 §5.1) and reshared once for all chunks: "product of one-hots" in
  a single multiplication round over Lx * Ly cells. 2 + 1 rounds for dense levels (one
  more per chunk with ``weights``).

Values outside the declared range alias (x = level + 2^k counts as that level): the
declared levels are part of the column's contract. Rows are processed in chunks of about
``CHUNK_CELLS`` cells (slots 2^k per dense column; messages of ~10^6 words, a pitfall met
while prototyping), so memory is bounded by the chunk, not the column. An empty column or
an empty or repeated level list is a :class:`~mpc.errors.ProtocolError`. Outputs are
shares of the counts; opening them is the analysis layer's disclosure decision.

**Security** of the rotation (passive adversary corrupting one of the three parties, the
model of Araki et al., CCS 2016, and ABY3, Mohassel and Rindal, CCS 2018; second review,
issue 14). Per row and dense column (2^k slots, L levels, place_l = level_l - min): R
(2^k words) and y_1 (L words) are drawn from the PRG of parties 0 and 1, y_0 (L words)
from that of parties 0 and 2; every draw is fresh (one PRG call per batch, disjoint
slices per column, and :mod:`mpc.prg` never repeats a counter, so no two columns or
chunks share a mask). A'' denotes the slots (place_l - v) mod 2^k of A. Round 1: party
0 sends party 2 Z = e_u - R, party 1 sends party 2 alpha = R'' - y_1; round 2: party 2
sends party 1 beta = Z'' - y_0. The output is x_0 = y_0, x_1 = y_1, x_2 = alpha + beta
= onehot - y_0 - y_1: a fresh replicated sharing, since its free components y_0, y_1 are
fresh draws (no further zero-sharing is needed). Views: *party 0* receives nothing (its
input shares, draws and outputs (y_0, y_1) are independent of the data). *Party 1*
receives only beta, masked by y_0, which it does not hold and which appears nowhere else
in its view: uniform on Z_2^64 and independent of everything else it holds; a simulator
given its output (y_1, x_2) sets beta = x_2 - alpha. *Party 2* receives Z, uniform
because R is uniform on all 2^k slots, unknown to party 2 and used once, and alpha,
uniform and independent of Z because y_1 is fresh and unknown to party 2 (alpha's slots
of R also appear in Z, hence the separate mask); a simulator given its output (x_2, y_0)
draws Z uniformly and sets alpha = x_2 - (Z'' - y_0). Every draw is made alike by its
two holders (same call, same size, same order) and none masks a message to a party that
holds it. Rotations are mod 2^k throughout (split_sum reduces u and v mod 2^k; indices
place - v are masked with 2^k - 1), exact because 2^k divides 2^64; a value outside the
declared levels only moves the 1 of e_u, which R hides like any other position. (The
first version also rotated e_u by a t drawn by parties 0 and 1 and had party 1 send
party 2 v - t; party 2 holds v, so that message only told it t and hid nothing; it was
dropped, one word per row less.) ``tests/mpc/protocols/test_groupby.py`` checks these
views (with a party's own shares fixed, its view of two different inputs spans the same
affine space of low bits, in which draws and received words are independent; the high
bits of received words are uniform), and that the check fails when a mask is dropped or
one draw serves two columns. The
zero-test path is the circuits of :mod:`mpc.protocols.compare` and
:mod:`mpc.protocols.bits`, whose own docstrings give their views.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

import numpy as np
import numpy.typing as npt

from mpc.errors import ProtocolError
from mpc.prg import Prg
from mpc.protocols.arith import mul
from mpc.protocols.bits import b2a_sum, inject, split_sum
from mpc.protocols.compare import zero_bits
from mpc.ring import RingArray
from mpc.session import Session
from mpc.sharing import AShare

#: Cells (rows x levels) per chunk: bounds message sizes and memory.
CHUNK_CELLS = 1 << 21
#: A column's one-hot comes from the rotation protocol when its 2^k slots are at most
#: this many times its levels (or at most ``ROTATE_MIN_SLOTS``); otherwise (sparse levels
#: such as [5, 1000]) from the zero test.
ROTATE_SLACK = 2
#: See ``ROTATE_SLACK``.
ROTATE_MIN_SLOTS = 16


def level_bits(levels: Sequence[int]) -> int:
    """Bits k with max(levels) - min(levels) < 2^k (equality mod 2^k is then exact)."""
    if len(levels) == 0:
        raise ProtocolError("a categorical column needs at least one declared level")
    if len(set(levels)) != len(levels):
        raise ProtocolError("declared levels must be distinct")
    return max(1, (max(levels) - min(levels)).bit_length())


def _levels_array(levels: Sequence[int]) -> RingArray:
    return np.array([int(v) % (1 << 64) for v in levels], dtype=np.uint64)


def _check_column(x: AShare) -> int:
    if len(x.shape) != 1:
        raise ProtocolError(f"a group-by column must be one-dimensional, got {x.shape}")
    if x.shape[0] == 0:
        raise ProtocolError("group-by over an empty column")
    return x.shape[0]


def _cross(p: AShare, q: AShare) -> RingArray:
    """Party i's 3-out-of-3 share of p^T q for replicated p (n, a) and q (n, b), as in a
    dot product (ABY3 §5.1): p_i q_i + p_i q_(i+1) + p_(i+1) q_i = p_i (q_i + q_(i+1)) +
    p_(i+1) q_i, summed over rows. Two products, as ``einsum`` over rows contiguous in
    memory on int64 views (two's complement products and sums wrap exactly as mod 2^64;
    numpy's unsigned ``@`` has no fast path and is several times slower)."""
    def rows_last(x: RingArray) -> npt.NDArray[np.int64]:
        return np.ascontiguousarray(x.T).view(np.int64)

    first = np.einsum("ir,jr->ij", rows_last(p.a), rows_last(q.a + q.b))
    second = np.einsum("ir,jr->ij", rows_last(p.b), rows_last(q.a))
    return np.asarray((first + second).view(np.uint64), dtype=np.uint64)


async def _reshare(s: Session, local: RingArray) -> AShare:
    """Replicated shares from 3-out-of-3 shares, re-randomised (1 round)."""
    z = local + s.rand.zero_share(local.shape)
    received = await s.sendrecv_round(s.prev, z, s.next)
    return AShare(s.party, z, received)


def _check_weights(weights: AShare | None, n: int) -> int:
    """W for weights of shape (n, W); 0 for none or one vector (n,)."""
    if weights is None:
        return 0
    if weights.shape == (n,):
        return 0
    if len(weights.shape) == 2 and weights.shape[0] == n and weights.shape[1] >= 1:
        return weights.shape[1]
    raise ProtocolError(f"weights must be one value per row ({n}), got {weights.shape}")


def rotates(levels: Sequence[int]) -> bool:
    """Whether :func:`one_hots` builds this column's one-hot by rotation (dense levels: at
    most ``ROTATE_SLACK`` times as many slots 2^k as levels) rather than by zero test."""
    slots = 1 << level_bits(levels)
    return slots <= max(ROTATE_MIN_SLOTS, ROTATE_SLACK * len(levels))


def _draw(prg: Prg, shapes: Sequence[tuple[int, ...]]) -> list[RingArray]:
    """Arrays of the given shapes from one PRG call (both holders split it alike)."""
    return _split(prg.ring(sum(prod(shape) for shape in shapes)), shapes)


def _split(flat: RingArray, shapes: Sequence[tuple[int, ...]]) -> list[RingArray]:
    out, start = [], 0
    for shape in shapes:
        end = start + prod(shape)
        out.append(flat[start:end].reshape(shape))
        start = end
    return out


def _buffer(shapes: Sequence[tuple[int, ...]]) -> tuple[RingArray, list[RingArray]]:
    """One flat message buffer and its views of the given shapes (filled in place, sent
    without a concatenating copy)."""
    flat = np.empty(sum(prod(shape) for shape in shapes), dtype=np.uint64)
    return flat, _split(flat, shapes)


async def _rotate(s: Session, columns: Sequence[tuple[AShare, Sequence[int]]]
                  ) -> list[AShare]:
    """Arithmetic one-hots of dense columns by rotation, 2 rounds for all of them (see
    :func:`one_hots`; the views are in the module docstring, "Security")."""
    n = columns[0][0].shape[0]
    m = len(columns)
    rows = np.arange(n)
    slots, places = [], []
    # u (party 0) or v (parties 1 and 2) of each column, in 0 .. 2^k - 1
    split: list[RingArray] = []
    for x, levels in columns:
        bits = level_bits(levels)
        low = min(levels)
        slots.append(1 << bits)
        # the slot of each declared level: level - min, in 0 .. 2^k - 1
        places.append(np.array([v - low for v in levels], dtype=np.intp))
        part, other = split_sum(x.add_public(-low), bits)
        split.append(part if part is not None else other)  # type: ignore[arg-type]
    masks_r = [(n, w) for w in slots]
    outs = [(n, len(p)) for p in places]
    first, second = s.next_step(), s.next_step()

    def gather(table: RingArray, c: int) -> RingArray:
        """table[i, (place_j - v_i) mod 2^k]: the slots of the declared levels after
        rotating by v (parties 1 and 2)."""
        at = np.subtract(places[c][None, :], split[c].astype(np.intp)[:, None])
        np.bitwise_and(at, slots[c] - 1, out=at)
        return np.asarray(np.take_along_axis(table, at, axis=1), dtype=np.uint64)

    def draw_pair(prg: Prg) -> tuple[list[RingArray], list[RingArray]]:
        """R and y_1 (parties 0 and 1 draw them alike, in one call)."""
        both = _draw(prg, [*masks_r, *outs])
        return both[:m], both[m:]

    if s.party == 0:
        r, y1 = draw_pair(s.rand.next)
        y0 = _draw(s.rand.prev, outs)
        z_flat, z = _buffer(masks_r)
        for c in range(m):
            np.subtract(np.uint64(0), r[c], out=z[c])
            z[c][rows, split[c].astype(np.intp)] += np.uint64(1)
        await s.send(2, z_flat, first)
        return [AShare(0, y0[c], y1[c]) for c in range(m)]
    if s.party == 1:
        r, y1 = draw_pair(s.rand.prev)
        alpha_flat, alpha = _buffer(outs)
        for c in range(m):
            np.subtract(gather(r[c], c), y1[c], out=alpha[c])
        await s.send(2, alpha_flat, first)
        beta = _split(await s.recv_ring(2, second, alpha_flat.shape), outs)
        return [AShare(1, y1[c], alpha[c] + beta[c]) for c in range(m)]
    y0 = _draw(s.rand.next, outs)
    z = _split(await s.recv_ring(0, first, (sum(n * w for w in slots),)), masks_r)
    beta_flat, beta = _buffer(outs)
    for c in range(m):
        np.subtract(gather(z[c], c), y0[c], out=beta[c])
    await s.send(1, beta_flat, second)
    alpha = _split(await s.recv_ring(1, first, beta_flat.shape), outs)
    return [AShare(2, alpha[c] + beta[c], y0[c]) for c in range(m)]


async def one_hots(s: Session, columns: Sequence[tuple[AShare, Sequence[int]]]
                   ) -> list[AShare]:
    """Arithmetic shares of each column's one-hot matrix, shape (n, L): entry (i, l) is
    [x_i = level_l]; all columns of the same length n, in one batch.

    Dense columns (:func:`rotates`) by **rotation**, 2 rounds, no comparison: with
    y = x - min mod 2^k = u + v (u known to party 0, v to parties 1 and 2, the local split
    of :mod:`mpc.protocols.bits`), the one-hot of y is the unit vector e_u rotated by v.
    Parties 0 and 1 draw a mask R of 2^k slots; party 0 sends Z = e_u - R to party 2.
    Rotated by v, R (party 1) and Z (party 2) are additive shares of e_(u+v). The
    replicated shares are y_0 and y_1 from party 0's pairwise PRGs (with parties 2 and 1),
    y_2 = e_y - y_0 - y_1: party 1 sends party 2 R' - y_1 (in round 1, it needs nothing
    received), party 2 sends party 1 Z' - y_0 (R', Z' the rotated slots of the declared
    levels), and both add them. Party 2 sees Z (masked by R) and R' - y_1 (masked by
    y_1), party 1 a value masked by y_0, party 0 nothing (module docstring, "Security").
    2^k words per row from party 0 to party 2, L each way between parties 1 and 2.

    Sparse columns by one batched zero test on k-bit fields and a bit injection
    (1 + log2 K + 1 rounds), as in :func:`count_by`.
    """
    if not columns:
        return []
    n = _check_column(columns[0][0])
    for x, _ in columns:
        if _check_column(x) != n:
            raise ProtocolError(f"group-by columns differ in length: {(n,)} and {x.shape}")
    dense = [c for c, (_, levels) in enumerate(columns) if rotates(levels)]
    sparse = [c for c in range(len(columns)) if c not in dense]
    out: dict[int, AShare] = {}
    if dense:
        for c, onehot in zip(dense, await _rotate(s, [columns[c] for c in dense]),
                             strict=True):
            out[c] = onehot
    if sparse:
        bits = max(level_bits(columns[c][1]) for c in sparse)
        diffs = [columns[c][0].reshape(-1, 1) - _levels_array(columns[c][1]) for c in sparse]
        both = AShare(s.party, np.concatenate([d.a for d in diffs], axis=1),
                      np.concatenate([d.b for d in diffs], axis=1))
        injected = await inject(s, await zero_bits(s, both, bits))
        start = 0
        for c in sparse:
            width = len(columns[c][1])
            out[c] = injected[:, start:start + width]
            start += width
    return [out[c] for c in range(len(columns))]


def _slots(levels: Sequence[int]) -> int:
    """Cells one row of a column costs in a chunk (2^k for rotation, L for zero test)."""
    return (1 << level_bits(levels)) if rotates(levels) else len(levels)


async def count_by(s: Session, x: AShare, levels: Sequence[int],
                   weights: AShare | None = None) -> AShare:
    """Shares of the frequency table (one count per declared level).

    With ``weights`` (arithmetic shares, one per row) the result is sum_i w_i [x_i = l]:
    a 0/1 filter gives filtered counts, a value column per-level sums. That path takes
    one product per cell, reshared once at the end. Weights of shape (n, W): W tables,
    shape (W, len(levels)), from the same one-hots and rounds.

    Dense levels: the one-hot by rotation (:func:`one_hots`, 2 rounds) and a local column
    sum. Sparse levels: zero test and the sum of the one-hot bits straight from the boolean
    shares (:func:`~mpc.protocols.bits.b2a_sum`).
    """
    n = _check_column(x)
    many = _check_weights(weights, n)
    bits = level_bits(levels)
    dense = rotates(levels)
    codes = _levels_array(levels)
    rows = max(1, CHUNK_CELLS // _slots(levels))
    total: AShare | None = None
    local = np.zeros((many or 1, len(levels)), dtype=np.uint64)
    for start in range(0, n, rows):
        if weights is None and not dense:
            chunk = x[start:start + rows].reshape(-1, 1)
            counts = await b2a_sum(s, await zero_bits(s, chunk - codes, bits), axis=0)
            total = counts if total is None else total + counts
            continue
        (onehot,) = await one_hots(s, [(x[start:start + rows], levels)])
        if weights is None:
            counts = AShare(s.party, np.sum(onehot.a, axis=0, dtype=np.uint64),
                            np.sum(onehot.b, axis=0, dtype=np.uint64))
            total = counts if total is None else total + counts
        else:
            w = weights[start:start + rows].reshape(onehot.shape[0], many or 1)
            local = local + _cross(w, onehot)
    if weights is not None:
        shared = await _reshare(s, local)
        return shared if many else shared.reshape(len(levels))
    assert total is not None
    return total


async def count_by2(s: Session, x: AShare, levels_x: Sequence[int], y: AShare,
                    levels_y: Sequence[int], weights: AShare | None = None) -> AShare:
    """Shares of the contingency table, shape (len(levels_x), len(levels_y)).

    Both one-hot matrices in one batch (:func:`one_hots`), then the local cross product,
    reshared once for all chunks. ``weights`` as in :func:`count_by` costs one more
    multiplication round per chunk; weights of shape (n, W) give W tables, shape (W,
    len(levels_x), len(levels_y)), from the same one-hots and rounds (the product round
    carries W times the elements).
    """
    n = _check_column(x)
    if y.shape != x.shape:
        raise ProtocolError(f"group-by columns differ in length: {x.shape} and {y.shape}")
    many = _check_weights(weights, n)
    width = many or 1
    lx, ly = len(levels_x), len(levels_y)
    rows = max(1, CHUNK_CELLS // (_slots(levels_x) + width * _slots(levels_y)))
    local = np.zeros((lx, width * ly), dtype=np.uint64)
    for start in range(0, n, rows):
        ox, oy = await one_hots(s, [(x[start:start + rows], levels_x),
                                    (y[start:start + rows], levels_y)])
        if weights is not None:
            w = weights[start:start + rows].reshape(ox.shape[0], width)
            # (rows, W ly): weight j times every level of y, weight-major
            wide = AShare(s.party, np.repeat(w.a, ly, axis=1), np.repeat(w.b, ly, axis=1))
            oy = await mul(s, AShare(s.party, np.tile(oy.a, (1, width)),
                                     np.tile(oy.b, (1, width))), wide)
        local = local + _cross(ox, oy)
    table = await _reshare(s, local)
    if not many:
        return table
    return AShare(s.party, table.a.reshape(lx, width, ly).transpose(1, 0, 2).copy(),
                  table.b.reshape(lx, width, ly).transpose(1, 0, 2).copy())
