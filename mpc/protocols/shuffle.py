"""Oblivious shuffle of replicated shares: three re-sharing passes, one per pair of parties.

The resharing-based three-party shuffle of Araki, Furukawa, Ohara, Pinkas, Rosemarin,
Tsuchida, "Secure Graph Analysis at Scale", CCS 2021 (also the shuffle underlying Asharov et
al., "Efficient Secure Three-Party Sorting with Applications to Data Analysis and Heavy
Hitters", CCS 2022), semi-honest version.

A pass for the pair (A, B = A + 1), with C = A + 2 left out:

1. The pair holds a two-out-of-two sharing of x without C: s_A = x_A + x_(A+1) (party A)
   and s_B = x_(A+2) (party B).
2. Both draw the permutation pi_AB and masks r, y_(A+1) from the PRG they share (no
   communication) and permute their shares row-wise.
3. New components: y_(A+1) (the pair's PRG), y_A = pi(s_A) + r - y_(A+1) (A sends it to C),
   y_(A+2) = pi(s_B) - r (B sends it to C). C receives two uniform values (masked by r and
   y_(A+1), which it does not know); A and B receive nothing.

Passes for (0, 1), (1, 2), (2, 0) compose pi = pi_20 o pi_12 o pi_01. Each party knows
exactly two of the three permutations; the third is uniform and independent of its view,
so to every single party the composed permutation is uniform (what the sort in
:mod:`mpc.protocols.sort` relies on). Rows of a 2-D share are permuted together, so several
columns stay aligned.

**Cost**: 3 rounds; per pass two parties each send one word per shared element.
Nothing is opened.
"""

from __future__ import annotations

from mpc.errors import ProtocolError
from mpc.session import Session
from mpc.sharing import AShare, next_party, prev_party

PASSES = (0, 1, 2)


async def _pass(s: Session, x: AShare, a: int) -> AShare:
    """One re-sharing pass by the pair (a, a + 1); party a + 2 only receives."""
    b, c = next_party(a), prev_party(a)
    n = x.shape[0]
    step = s.next_step()
    if s.party == c:
        y_a = await s.recv_ring(a, step, x.shape)
        y_c = await s.recv_ring(b, step, x.shape)
        return AShare(c, y_c, y_a)
    prg = s.rand.next if s.party == a else s.rand.prev
    perm = prg.permutation(n)
    r, y_b = prg.ring((2, *x.shape))
    if s.party == a:
        y_a = (x.a + x.b)[perm] + r - y_b
        await s.send(c, y_a, step)
        return AShare(a, y_a, y_b)
    y_c = x.b[perm] - r
    await s.send(c, y_c, step)
    return AShare(b, y_b, y_c)


async def shuffle(s: Session, x: AShare) -> AShare:
    """Shares of the rows of x under a permutation no single party knows (3 rounds).

    ``x`` has shape (n,) or (n, columns); all columns get the same permutation.
    """
    if len(x.shape) not in (1, 2):
        raise ProtocolError(f"shuffle takes a column or a table of columns, got shape {x.shape}")
    for a in PASSES:
        x = await _pass(s, x, a)
    return x
