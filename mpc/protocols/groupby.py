"""Group-by counts over categorical columns with declared levels: one-hot, then sum.

A categorical column holds one of L declared integer levels per row (the connector encodes
closed level lists and range-checks them, DESIGN.md §3). The frequency table is
count_l = sum_i [x_i = level_l]: an (n, L) equality against public levels followed by a
column sum. Because every x_i lies in [min level, max level], differences x_i - level_l
have |.| <= D = max - min < 2^k with k = bitlength(D), so equality mod 2^k is exact and the
test runs on k-bit fields, 64 // K per word (K = next power of two >= k): ten levels need
k = 4, sixteen values per word, a 2-round AND tree (:mod:`mpc.protocols.compare`).

- :func:`count_by`: zero test (1 + log2 K rounds) + sum of the one-hot bits straight from
  the boolean shares (:func:`~mpc.protocols.bits.b2a_sum`, 2 rounds, one word per cell
  from party 0 to party 1): 5 rounds for ten levels, per chunk of rows.
- ``weights`` (optional, both functions): sum_i w_i [x_i = l] instead of counts, for a
  0/1 filter (``count_by(zip, levels, weights=diabetes)``) or per-group sums of a column.
  Weights of shape (n, W) give W such tables from one zero test (a leading axis of W):
  the one-hot bits, the costly part, are shared by every weight vector.
- :func:`count_by2`: contingency table over two columns. Both one-hot matrices come from one
  batched zero test and one bit injection; the table is ox^T oy, a matrix product whose
  cross terms are computed locally (as in a dot product, ABY3 §5.1) and reshared once for
  all chunks: "product of one-hots" in a single multiplication round over Lx * Ly cells.
  1 + log2 K + 1 rounds per chunk, plus 1.

Values outside the declared range alias (x = level + 2^k counts as that level): the
declared levels are part of the column's contract. Rows are processed in chunks of about
``CHUNK_CELLS`` cells (messages of ~10^6 words, a pitfall met while prototyping). An empty
column or an empty or repeated level list is a :class:`~mpc.errors.ProtocolError`.
Outputs are shares of the counts; opening them is the analysis layer's disclosure decision.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from mpc.errors import ProtocolError
from mpc.protocols.arith import mul
from mpc.protocols.bits import b2a_sum, inject
from mpc.protocols.compare import zero_bits
from mpc.ring import RingArray
from mpc.session import Session
from mpc.sharing import AShare

#: Cells (rows x levels) per chunk: bounds message sizes and memory.
CHUNK_CELLS = 1 << 21


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


async def count_by(s: Session, x: AShare, levels: Sequence[int],
                   weights: AShare | None = None) -> AShare:
    """Shares of the frequency table (one count per declared level).

    With ``weights`` (arithmetic shares, one per row) the result is sum_i w_i [x_i = l]:
    a 0/1 filter gives filtered counts, a value column per-level sums. That path injects
    the one-hot bits (1 round) and takes one product per cell, reshared once at the end.
    Weights of shape (n, W): W tables, shape (W, len(levels)), in the same rounds.
    """
    n = _check_column(x)
    many = _check_weights(weights, n)
    bits = level_bits(levels)
    codes = _levels_array(levels)
    rows = max(1, CHUNK_CELLS // len(levels))
    total: AShare | None = None
    local = np.zeros((many or 1, len(levels)), dtype=np.uint64)
    for start in range(0, n, rows):
        chunk = x[start:start + rows].reshape(-1, 1)
        onehot = await zero_bits(s, chunk - codes, bits)
        if weights is None:
            counts = await b2a_sum(s, onehot, axis=0)
            total = counts if total is None else total + counts
        else:
            w = weights[start:start + rows].reshape(onehot.shape[0], many or 1)
            local = local + _cross(w, await inject(s, onehot))
    if weights is not None:
        shared = await _reshare(s, local)
        return shared if many else shared.reshape(len(levels))
    assert total is not None
    return total


async def count_by2(s: Session, x: AShare, levels_x: Sequence[int], y: AShare,
                    levels_y: Sequence[int], weights: AShare | None = None) -> AShare:
    """Shares of the contingency table, shape (len(levels_x), len(levels_y)).

    ``weights`` as in :func:`count_by` costs one more multiplication round per chunk;
    weights of shape (n, W) give W tables, shape (W, len(levels_x), len(levels_y)), from
    the same one-hot bits and rounds (the product round carries W times the elements).
    """
    n = _check_column(x)
    if y.shape != x.shape:
        raise ProtocolError(f"group-by columns differ in length: {x.shape} and {y.shape}")
    many = _check_weights(weights, n)
    bits = max(level_bits(levels_x), level_bits(levels_y))
    lx, ly = len(levels_x), len(levels_y)
    width = many or 1
    codes_x, codes_y = _levels_array(levels_x), _levels_array(levels_y)
    rows = max(1, CHUNK_CELLS // (lx + width * ly))
    local = np.zeros((lx, width * ly), dtype=np.uint64)
    for start in range(0, n, rows):
        dx = x[start:start + rows].reshape(-1, 1) - codes_x
        dy = y[start:start + rows].reshape(-1, 1) - codes_y
        both = AShare(s.party, np.concatenate([dx.a, dy.a], axis=1),
                      np.concatenate([dx.b, dy.b], axis=1))
        onehot = await inject(s, await zero_bits(s, both, bits))
        ox, oy = onehot[:, :lx], onehot[:, lx:]
        if weights is not None:
            w = weights[start:start + rows].reshape(onehot.shape[0], width)
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
