"""``frequency`` v1: a frequency table of a categorical column, each cell checked against k.

The encoder stores a categorical as one 0/1 column per declared level (``<col>=<level>``),
so count_l is a sum of shares, local in replicated sharing (Araki et al. CCS 2016; ABY3 §3).
With a missing-value indicator the counts are <onehot_l, present>, all levels in one dot
product round (ABY3 §5.1, one ring element per level): the encoder already zeroes the
one-hot columns of missing rows, and the product enforces it whatever the encoding.

Disclosure control (:mod:`dic_connector.node.analyses.disclosure`): every count is compared
with the public k under MPC ([count_l >= k], 64-bit sign bits, ABY3 §5.3) in one batch; the
L comparison bits are opened to the three nodes, then only the counts >= k are opened (one
round; no round when none is). A count below k is never opened, *including zero*: a level
with no row shows ``"<k"`` like a level with 1..k-1 rows, so structural zeros (a level that
cannot occur at a site) are not revealed either.

Limitation (v1): no secondary (complementary) suppression. The table does not open its
total, but a researcher who learns the total elsewhere (``count`` on the same column and
datasets) can subtract the opened cells; with exactly one suppressed level that recovers
its count. Policies that allow both analyses on the same data should keep this in mind.

Result: ``{"levels": {level: count or "<k"}, "min_cell_count": k}``, levels in declared order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from dic_connector.node.analyses.base import (
    Analysis,
    ColumnInfo,
    Inputs,
    column_parameters,
    one_hot_columns,
    present_column,
)
from dic_connector.node.analyses.disclosure import (
    at_least,
    check_min_cell_count,
    open_allowed,
    suppressed,
)
from mpc.protocols import arith
from mpc.session import Session
from mpc.sharing import AShare


async def level_counts(s: Session, inputs: Inputs, info: ColumnInfo) -> AShare:
    """Shares of the count of each level over present rows, shape (L,)."""
    columns = [inputs.share(name) for name in one_hot_columns(info)]
    onehot = AShare(s.party, np.stack([c.a for c in columns]), np.stack([c.b for c in columns]))
    present = present_column(inputs.manifest, info.name)
    if present is None:
        return onehot.sum(axis=1)
    flag = inputs.share(present)
    shape = onehot.shape
    wide = AShare(s.party, np.broadcast_to(flag.a, shape), np.broadcast_to(flag.b, shape))
    return await arith.dot(s, onehot, wide)


class Frequency(Analysis):
    name: ClassVar[str] = "frequency"
    version: ClassVar[str] = "1"
    summary: ClassVar[str] = ("Frequency table of a categorical column (count per declared "
                              "level), pooled over the pinned datasets, each count "
                              "suppressed below min_cell_count.")
    discloses: ClassVar[str] = (
        "To the three nodes: for each declared level, one bit, whether its count (rows where "
        "the column is present and equals the level) is >= k, the min_cell_count. Then "
        "exactly the counts that are >= k, to the three nodes and then to the researcher. "
        "Counts below k, zero included, are never opened; the researcher sees them as '<k'. "
        "The total and the number of missing values are not opened.")
    parameters_schema: ClassVar[dict[str, Any]] = column_parameters(
        "a categorical typed column")
    column_kinds: ClassVar[frozenset[str]] = frozenset({"categorical"})

    def value_columns(self, info: ColumnInfo, manifest: Mapping[str, ColumnInfo]) -> list[str]:
        return one_hot_columns(info)

    async def run(self, session: Session, inputs: Inputs, parameters: dict[str, Any],
                  min_cell_count: int) -> dict[str, Any]:
        k = check_min_cell_count(min_cell_count)
        self.validate(parameters, inputs.manifest)
        info = self.typed_column(parameters, inputs.manifest)
        if not info.levels:
            return {"levels": {}, "min_cell_count": k}
        counts = await level_counts(session, inputs, info)
        allowed = await at_least(session, counts, k)
        opened = iter(await open_allowed(session, counts, allowed))
        levels: dict[str, int | str] = {
            level: next(opened) if ok else suppressed(k)
            for level, ok in zip(info.levels, allowed, strict=True)}
        return {"levels": levels, "min_cell_count": k}
