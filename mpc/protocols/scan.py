"""Segmented prefix operations: copy each segment's first value to the whole segment.

A column of n rows is cut into segments by shared 0/1 *start* flags f (f_j = 1: row j opens
a new segment). :func:`broadcast_from_starts` gives every row the values of the first row of
its segment, for several columns at once, without opening anything: the segments (e.g. the
ties of a sorted column) stay secret.

**Protocol.** An inclusive Hillis-Steele scan (Hillis and Steele, "Data parallel algorithms",
CACM 29(12), 1986; segmented scans: Blelloch, "Prefix sums and their applications", CMU-CS-
90-190, 1990, §1.2) with the associative operator

    (f, v) (+) (f', v') = (f OR f', v' if f' else v),

i.e. for offset d = 1, 2, 4, ... < n, every row j >= d becomes
v_j <- v_j + (1 - f_j)(v_(j-d) - v_j) and f_j <- f_j + f_(j-d) - f_j f_(j-d). All products of
one step are batched into one multiplication round (Araki et al., CCS 2016), so the cost is
ceil(log2 n) rounds, each multiplying (n - d)(columns + 1) elements. Exact: integer ring
arithmetic, no truncation. Rows before the first start keep the value of row 0's chain
(callers set f_0 = 1).
"""

from __future__ import annotations

from collections.abc import Sequence

from mpc.errors import ProtocolError
from mpc.protocols import arith
from mpc.session import Session
from mpc.sharing import AShare, concat


async def broadcast_from_starts(
    s: Session, starts: AShare, columns: Sequence[AShare]
) -> list[AShare]:
    """Per column, each row's value replaced by that of its segment's first row (see the
    module doc); ``starts`` and every column are one-dimensional of the same length."""
    n = starts.shape[0] if starts.shape else 0
    if len(starts.shape) != 1 or any(c.shape != starts.shape for c in columns):
        raise ProtocolError(
            "broadcast_from_starts needs one-dimensional columns of the "
            f"shape of the start flags {starts.shape}"
        )
    f, values = starts, list(columns)
    d = 1
    while d < n:
        keep = 1 - f[d:]
        left = concat([keep] * len(values) + [f[d:]])
        right = concat([v[:-d] - v[d:] for v in values] + [f[:-d]])
        products = await arith.mul(s, left, right)
        m = n - d
        values = [
            concat([v[:d], v[d:] + products[i * m : (i + 1) * m]]) for i, v in enumerate(values)
        ]
        either = f[d:] + f[:-d] - products[len(values) * m :]
        f = concat([f[:d], either])
        d *= 2
    return values
