"""Checks that a party's view of a protocol does not depend on the data (semi-honest
simulation, Lindell, "How to simulate it", 2017, def. 7.1 specialised to perfect privacy).

A party's **view** of a run is its randomness (every PRG draw, from the PRG shared with the
next party and from the one shared with the previous party), every word it receives and its
output shares. With its own input shares fixed (:func:`fixing`), and so everything else of
the input fixed too, every word of the view is its inputs' constants plus PRG words
combined by XOR (boolean messages) or by addition mod 2^64 (arithmetic ones). In both, the
**low bit** of each word is an affine function over GF(2) of uniform bits, so the low bits
of the view are uniform on an affine subspace. Two such distributions are equal exactly when
the subspaces are, which a few more runs than their dimension determine: each further run
halves the chance of missing a direction, :data:`RUNS_BEYOND` beyond the dimension leave
a false failure below 2^-40. The checks (:func:`defects`):

(0) both holders of a pairwise PRG make the same draws, so a party's draws are all it can
    compute from its keys;
(1) draws and received words together have full rank: every received word is uniform and
    independent of the party's own randomness (nothing unmasks it);
(2) the affine hulls of the whole views (outputs included) for the two inputs are equal;
(3) the top four bits of the received words are uniform (chi-square).

A dropped mask, one draw used twice (two columns, two chunks) or a mask its receiver holds
breaks (1) or (2) whenever the data it leaks differ between the two inputs. Only low bits
are tested (high bits of arithmetic words carry, so they are not affine in the draws): a
leak confined to high bits of boolean words would pass (1)-(2), not (3) unless it is
large. Used by ``test_groupby`` (rotation one-hots) and ``test_compare`` (comparison and
equality circuits, bit injection).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from mpc.channels import Delivery, LoopbackNetwork
from mpc.prg import Prg
from mpc.ring import as_ring
from mpc.session import Session, run_local
from mpc.sharing import AShare

#: Runs beyond the dimension of the view: a direction of the subspace is missed with
#: probability below 2^-RUNS_BEYOND.
RUNS_BEYOND = 40
#: False-failure probability of the chi-square test (3).
VIEW_P = 1e-9

Drawn = dict[int, list[np.ndarray]]
#: One run of the protocol on a party's inputs: the output shares (anything with .a, .b).
RunOnce = Callable[[Session, Any], Awaitable[Sequence[Any]]]
#: A party's inputs with that party's own shares fixed by a seed: (party, seed) -> the
#: three parties' inputs.
Fixing = Callable[[int, int], Sequence[Any]]


def fixing(party: int, values: Sequence[int], seed: int) -> tuple[AShare, AShare, AShare]:
    """Shares of ``values`` whose pair held by ``party`` depends on ``seed`` alone."""
    x = as_ring(np.array(values, dtype=np.int64))
    rng = np.random.default_rng(seed)
    comps = {party: rng.integers(0, 1 << 64, x.shape, dtype=np.uint64),
             (party + 1) % 3: rng.integers(0, 1 << 64, x.shape, dtype=np.uint64)}
    comps[(party + 2) % 3] = x - comps[party] - comps[(party + 1) % 3]
    return tuple(AShare(i, comps[i], comps[(i + 1) % 3]) for i in range(3))  # type: ignore[return-value]


@dataclass(frozen=True)
class View:
    """One party's view of many runs, one row per run (the same words in the same order):
    its draws from the PRG shared with the next and with the previous party, the words it
    received, its output shares."""

    next_drawn: np.ndarray
    prev_drawn: np.ndarray
    received: np.ndarray
    outputs: np.ndarray

    @property
    def drawn(self) -> np.ndarray:
        return np.concatenate([self.next_drawn, self.prev_drawn], axis=1)


def recording(monkeypatch: Any) -> Drawn:
    """Record every PRG draw from now on (:meth:`~mpc.prg.Prg.ring` and
    :meth:`~mpc.prg.Prg.keystream`), by PRG object (the ``drawn`` fixture of
    ``tests/mpc/protocols/conftest.py``)."""
    record: Drawn = defaultdict(list)
    original_ring, original_keystream = Prg.ring, Prg.keystream

    def ring(self: Prg, shape: int | tuple[int, ...]) -> np.ndarray:
        out = original_ring(self, shape)
        record[id(self)].append(out.copy())
        return out

    def keystream(self: Prg, count: int) -> Iterator[np.ndarray]:
        # the same values as ring(count), handed out in pieces of one reused buffer: each
        # piece is copied into this call's record as it is handed out (every caller folds
        # the whole keystream before the view is read)
        drawn = np.zeros(count, dtype=np.uint64)
        record[id(self)].append(drawn)
        pieces = original_keystream(self, count)  # counted at once, as the original

        def copying() -> Iterator[np.ndarray]:
            at = 0
            for piece in pieces:
                drawn[at:at + piece.size] = piece
                at += piece.size
                yield piece

        return copying()

    monkeypatch.setattr(Prg, "ring", ring)
    monkeypatch.setattr(Prg, "keystream", keystream)
    return record


def views(drawn: Drawn, run_once: RunOnce, inputs: Sequence[Any], runs: int) -> list[View]:
    """The three parties' views of ``runs`` runs of ``run_once`` on the same ``inputs`` (one
    per party), all in one session (fresh draws every run)."""
    async def program(s: Session, mine_in: Any) -> list[tuple[int, int, list[list[Any]]]]:
        mine = (drawn[id(s.rand.next)], drawn[id(s.rand.prev)])
        out = []
        for _ in range(runs):
            start, marks = s.steps, [len(d) for d in mine]
            outputs = await run_once(s, mine_in)
            out.append((start, s.steps, [mine[0][marks[0]:], mine[1][marks[1]:],
                                         [w for o in outputs for w in (o.a, o.b)]]))
        return out

    network = LoopbackNetwork()
    transcript = network.record()
    results = asyncio.run(run_local(program, list(inputs), network=network))
    received: dict[tuple[int, int], list[Delivery]] = defaultdict(list)
    for d in transcript:
        received[d.receiver, d.step].append(d)

    def rows(words: list[list[Any]]) -> np.ndarray:
        return np.stack([np.concatenate([np.ravel(w) for w in [np.zeros(0, np.uint64), *run]])
                         for run in words])

    out = []
    for party in range(3):
        got = [[d.payload for step in range(start + 1, end + 1)
                for d in sorted(received[party, step], key=lambda d: d.sender)]
               for start, end, _ in results[party]]
        held = [[r[2][k] for r in results[party]] for k in range(3)]
        out.append(View(rows(held[0]), rows(held[1]), rows(got), rows(held[2])))
    return out


def rank2(bits: np.ndarray) -> int:
    """Rank over GF(2) of a 0/1 matrix (Gaussian elimination)."""
    m = bits.astype(bool)
    rank = 0
    for col in range(m.shape[1]):
        below = np.flatnonzero(m[rank:, col])
        if below.size == 0:
            continue
        m[[rank, rank + below[0]]] = m[[rank + below[0], rank]]
        others = np.flatnonzero(m[:, col])
        m[others[others != rank]] ^= m[rank]
        rank += 1
        if rank == m.shape[0]:
            break
    return rank


def low(words: np.ndarray) -> np.ndarray:
    return (words & np.uint64(1)).astype(bool)


def affine_rank(*blocks: np.ndarray) -> int:
    """Dimension of the affine hull over GF(2) of the rows of all blocks."""
    rows = np.concatenate(blocks)
    return rank2(rows ^ rows[0])


def dimension(drawn: Drawn, run_once: RunOnce, inputs: Sequence[Any]) -> list[int]:
    """Per party, the words of one run's view that should be uniform: draws and received."""
    return [v.drawn.shape[1] + v.received.shape[1] for v in views(drawn, run_once, inputs, 1)]


def defects(drawn: Drawn, run_once: RunOnce, fix: Callable[[int, Any], Sequence[Any]],
            first: Any, second: Any, runs: int) -> dict[int, list[str]]:
    """Which checks (module docstring) each party's views of the two inputs fail;
    ``fix(party, data)`` gives the three parties' inputs holding ``data`` with ``party``'s
    own shares the same for both."""
    found: dict[int, list[str]] = {}
    for party in range(3):
        every = [views(drawn, run_once, fix(party, data), runs) for data in (first, second)]
        mine = [e[party] for e in every]
        problems = []
        for e in every:
            after = e[(party + 1) % 3].prev_drawn
            if e[party].next_drawn.shape != after.shape or \
                    not np.array_equal(e[party].next_drawn, after):
                problems.append("draws on the PRG shared with the next party differ")
        for v in mine:
            randomness = v.drawn.shape[1] + v.received.shape[1]
            if affine_rank(np.concatenate([low(v.drawn), low(v.received)], axis=1)) \
                    != randomness:
                problems.append("received words not independent of the party's draws")
            if v.received.size:
                top = np.bincount((v.received >> np.uint64(60)).astype(np.int64).ravel(),
                                  minlength=16)
                if stats.chisquare(top).pvalue < VIEW_P:
                    problems.append("top bits of received words not uniform")
        whole = [np.concatenate([low(v.drawn), low(v.received), low(v.outputs)], axis=1)
                 for v in mine]
        if not affine_rank(whole[0]) == affine_rank(whole[1]) == affine_rank(*whole):
            problems.append("views of the two inputs differ")
        found[party] = problems
    return found
