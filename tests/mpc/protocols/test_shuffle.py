"""Oblivious shuffle: output is a permutation, columns stay aligned, and the permutation is
uniform overall and from each single party's point of view."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import numpy as np
import pytest
from scipy import stats

from mpc.errors import ProtocolError
from mpc.prg import Prg
from mpc.protocols import arith, shuffle
from mpc.ring import as_ring, to_signed
from mpc.session import Session, run_local
from mpc.sharing import AShare, reconstruct, share


def run(program: Any, *args: Any) -> list[Any]:
    return asyncio.run(run_local(program, *args))


async def _shuffle(s: Session, x: AShare) -> Any:
    before = s.steps
    return await shuffle.shuffle(s, x), s.steps - before


@pytest.mark.parametrize("n", [0, 1, 2, 17, 500])
def test_output_is_a_row_permutation_of_the_input(n: int) -> None:
    rng = np.random.default_rng(n)
    table = np.stack([np.arange(n), rng.integers(-10**9, 10**9, n), np.full(n, -3)], axis=1)
    results = run(_shuffle, share(as_ring(table)))
    out = to_signed(reconstruct(*(r[0] for r in results)))
    assert {r[1] for r in results} == {3}
    assert out.shape == table.shape
    order = out[:, 0]
    assert sorted(order.tolist()) == list(range(n))
    assert np.array_equal(out, table[order])  # rows moved together


def test_single_column_and_bad_shape() -> None:
    x = np.array([5, -1, 5, 2**40])
    out = to_signed(reconstruct(*(r[0] for r in run(_shuffle, share(as_ring(x))))))
    assert sorted(out.tolist()) == sorted(x.tolist())
    with pytest.raises(ProtocolError, match="column or a table"):
        run(_shuffle, share(as_ring(np.zeros((2, 2, 2), dtype=np.int64))))


#: For a given bias the chi-square statistic grows linearly with the number of runs, and its
#: critical value at p < 1e-9 is about twice that at p < 1e-4 (44.8 vs 21.1 for 3 degrees of
#: freedom, 67.3 vs 33.1 for 12): 1440 runs at 1e-9 detect what 720 runs did at 1e-4.
RUNS = 1440
N = 4
#: Threshold of each chi-square test below. The permutations come from session keys agreed
#: with fresh X25519 keys and os.urandom, which no test can fix without a backdoor into the
#: engine, so the test stays random and the threshold is its false-failure probability.
P_FALSE_FAILURE = 1e-9


def test_permutation_uniform_overall_and_to_each_party(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chi-square tests over many shuffles of n = 4.

    Overall: the final position of element 0 is uniform. Per party i: the pass whose
    permutation party i does not know (pass i + 1, by the pair excluding i) moves element 0
    from position q to position r; given q (which party i can follow through the passes it
    knows), r must be uniform, so what party i knows (its two permutations) says nothing
    about where element 0 ends up.

    Four chi-square tests at p < 1e-9 each. The exact multinomial tail beyond that threshold
    is at most about twice the chi-square one at counts like these (enumerated exactly: 4
    cells of 180 and of 720 samples, 2.1e-9 and 1.3e-9; 4 rows of 180 with 12 degrees of
    freedom, 1.3e-9; larger counts only bring it closer), so the test fails by chance with
    probability below 1e-8 per run. The input sharing has a fixed key; only the session's
    randomness is left.
    """
    drawn: dict[int, list[np.ndarray]] = defaultdict(list)
    original = Prg.permutation

    def recording(self: Prg, n: int) -> np.ndarray:
        perm = original(self, n)
        drawn[id(self)].append(perm)
        return perm

    monkeypatch.setattr(Prg, "permutation", recording)

    async def program(s: Session, x: AShare) -> Any:
        finals = []
        for _ in range(RUNS):
            finals.append(await arith.open_(s, await shuffle.shuffle(s, x)))
        return finals, drawn[id(s.rand.next)], drawn[id(s.rand.prev)]

    results = run(program, share(as_ring(np.arange(N)), prg=Prg(bytes(range(32)))))
    finals = [f.astype(np.int64) for f in results[0][0]]
    final_pos = np.array([int(np.flatnonzero(f == 0)[0]) for f in finals])
    assert stats.chisquare(np.bincount(final_pos, minlength=N)).pvalue > P_FALSE_FAILURE

    # pass t (pair t, t+1) applies perm p_t: out = in[p_t]; element at position q moves to
    # the position j with p_t[j] = q.
    passes = [results[0][1], results[1][1], results[2][1]]  # pass t drawn from party t's next
    for party in range(3):
        unknown = (party + 1) % 3
        # party i drew pass i (as first of the pair) and pass i - 1 (as second), not pass i + 1
        assert np.array_equal(np.array(results[party][2]), np.array(passes[(party - 1) % 3]))
        cells = np.zeros((N, N), dtype=np.int64)
        for run_index in range(RUNS):
            pos = 0
            for t in range(unknown):
                pos = int(np.flatnonzero(passes[t][run_index] == pos)[0])
            after = int(np.flatnonzero(passes[unknown][run_index] == pos)[0])
            cells[pos, after] += 1
        seen = cells.sum(axis=1) > 0
        observed = cells[seen]
        expected = np.repeat(observed.sum(axis=1, keepdims=True) / N, N, axis=1)
        # row totals are given (one constraint per row): rows * (N - 1) degrees of freedom
        test = stats.chisquare(observed.ravel(), expected.ravel(), ddof=len(observed) - 1)
        assert test.pvalue > P_FALSE_FAILURE
    # the passes compose to the opened permutation
    for run_index in (0, RUNS - 1):
        composed = passes[0][run_index][passes[1][run_index][passes[2][run_index]]]
        assert np.array_equal(finals[run_index], composed)
