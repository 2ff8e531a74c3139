"""Delta versions on a node: a version composed as ``base[keep]`` followed by fresh rows.

The connector may send a new dataset version as a *delta* on the dataset's newest committed
version (``dic_connector.connector.delta``): its manifest carries ::

    "delta": {"base": "<base version id>", "keep": [[start, stop], ...]}

the runs of base row positions to keep (ascending, disjoint), and each column's upload
holds this node's share pairs of the fresh rows only (16 bytes per fresh row). The node
builds each column of the new version from its own pair of the base's column: ``x_i`` and
``x_(i+1)`` both become ``base[keep] || fresh``, so the three nodes' pairs still form a
replicated sharing (every node takes the same positions) of the rows the connector meant.
Nothing else changes: the composed column is sealed under the new version's own key like
any uploaded one, and prepare, commit, abort and the stale-upload cleanup are the full
upload's (:mod:`dic_connector.node.api.uploads`), so a delta version is visible on all
three nodes or on none, and a failed or abandoned one leaves the base in use.

:func:`check_delta` is what ``begin`` enforces: the base is a committed version of the same
dataset here (a node that lost it, or never committed it, refuses with 404/409 and the
connector sends the version in full), its manifest has the same columns, the runs lie in
the base and the kept rows fit the declared row count; and when the manifest declares its
lineage against the base, the declared counts must be the delta's own (``removed`` = base
rows not kept, ``added`` = fresh rows), so the difference the nodes' lineage rule and
release ledger reason about is the one actually sent. :func:`compose` is the copy itself.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import numpy.typing as npt

from dic_connector.errors import ConflictError
from dic_connector.node.store.enums import VersionState
from dic_connector.node.store.models import DatasetVersion

#: Bytes of one row's share pair.
PAIR_BYTES = 16


def delta_section(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest's ``delta`` section, None for a full version."""
    section = manifest.get("delta")
    return section if isinstance(section, dict) else None


def keep_positions(runs: list[list[int]], base_rows: int) -> npt.NDArray[np.int64]:
    """The base positions the runs ``[start, stop)`` name, ascending; ConflictError unless
    the runs are ascending, disjoint, non-empty and inside the base's ``base_rows``."""
    end = 0
    for i, run in enumerate(runs):
        if len(run) != 2:
            raise ConflictError(f"delta: keep[{i}] must be [start, stop]")
        start, stop = run
        if start < end or stop <= start or stop > base_rows:
            raise ConflictError(f"delta: keep[{i}] = [{start}, {stop}] is not an ascending, "
                                f"disjoint run of positions in the base's {base_rows} rows")
        end = stop
    if not runs:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in runs])


def kept_rows(manifest: dict[str, Any]) -> int:
    """How many base rows a delta manifest keeps (0 for a full version)."""
    section = delta_section(manifest)
    return 0 if section is None else sum(b - a for a, b in section["keep"])


def check_delta(manifest: dict[str, Any], row_count: int, dataset_id: uuid.UUID,
                base: DatasetVersion) -> None:
    """ConflictError unless a version of ``dataset_id`` with ``manifest`` and ``row_count``
    may be composed on ``base`` (see the module docstring)."""
    section = delta_section(manifest)
    if section is None:
        raise ConflictError("not a delta version: its manifest has no 'delta' section")
    if base.dataset_id != dataset_id:
        raise ConflictError(f"delta: base {base.id} is a version of another dataset")
    if base.state is not VersionState.COMMITTED:
        raise ConflictError(f"delta: base {base.id} is {base.state.value} here, not "
                            "committed; send the version in full")
    if base.manifest.get("columns") != manifest.get("columns"):
        raise ConflictError(f"delta: base {base.id} has other columns; send the version in "
                            "full")
    kept = keep_positions(section["keep"], base.row_count).shape[0]
    if kept > row_count:
        raise ConflictError(f"delta: keeps {kept} base rows, more than the version's "
                            f"{row_count}")
    for entry in manifest.get("lineage", {}).get("previous", []):
        if entry["version_id"] == str(base.id) and (
                entry["removed"], entry["added"]) != (base.row_count - kept, row_count - kept):
            raise ConflictError(
                f"delta: the declared lineage against base {base.id} (removed "
                f"{entry['removed']}, added {entry['added']}) is not the delta's (removed "
                f"{base.row_count - kept}, added {row_count - kept})")


def compose(base_pair: bytes, base_rows: int, keep: npt.NDArray[np.int64],
            fresh_pair: bytes) -> bytes:
    """A column's share pair ``x_i || x_(i+1)`` (each little-endian uint64 per row) of
    ``base[keep]`` followed by the fresh rows, from the base's pair and the fresh rows'."""
    if len(base_pair) != PAIR_BYTES * base_rows:
        raise ConflictError(f"delta: the base column holds {len(base_pair)} bytes, not "
                            f"{PAIR_BYTES * base_rows}")
    if len(fresh_pair) % PAIR_BYTES:
        raise ConflictError("delta: a fresh share pair is a whole number of rows")
    base = np.frombuffer(base_pair, dtype="<u8").reshape(2, base_rows)
    fresh = np.frombuffer(fresh_pair, dtype="<u8").reshape(2, -1)
    return np.concatenate([base[:, keep], fresh], axis=1).tobytes()
