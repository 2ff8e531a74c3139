"""Version differencing: one dataset's versions released on one after the other.

Every run of a hospital's connector shares a new version of its dataset, built from what the
source holds now. Two versions of one dataset overlap in most rows, so the same statistic
released on both gives their difference away: a patient who withdrew consent is exactly
``count(v1) - count(v2)`` and ``sum(v1) - sum(v2)``. The release ledger
(:mod:`.ledger`) treats contributors as disjoint and cannot see this; this module adds the
**version lineage rule**:

    A release that reads typed column c over version w of a dataset is refused when the
    ledger holds a release of c over another version u of the same dataset and the two
    versions differ in between 1 and m - 1 rows on either side (rows of u not in w, rows of
    w not in u), m being ``min_subset_size``; or when nobody declared how they differ.

How two versions differ is declared by the connector that shares them (it holds the rows;
the nodes must not), in the manifest of the newer version: for each earlier version of the
dataset, the number of rows only in the earlier one and only in the newer one, counted from
keyed digests of whole rows (a changed row counts on both sides). Both numbers are needed:
a difference of k added rows and one removed row still singles out the removed one. The
decision uses public information only (the ledger's columns and contributors, the declared
counts; row counts are public anyway), so it opens nothing and every node reaches it alike.

What remains: when both sides hold at least m rows, a statistic's difference is over at
least m rows, yet a single cell of a table may still change by fewer than k (``docs/
disclosure.md``). Bounding that needs the rows that differ as shared indicators, a later
increment.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dic_connector.errors import AnalysisError
from dic_connector.node.analyses.ledger import Ledger

#: The manifest key of a version's declared lineage.
LINEAGE_KEY = "lineage"


@dataclass(frozen=True)
class VersionDifference:
    """How many rows only the older (``only_older``) and only the newer (``only_newer``) of
    two versions of one dataset hold."""

    only_older: int
    only_newer: int

    def smallest_side(self) -> int:
        """The smaller nonzero side (0 when the versions hold the same rows)."""
        sides = [n for n in (self.only_older, self.only_newer) if n]
        return min(sides) if sides else 0


#: unordered pair of version ids (as strings) -> their difference
Differences = Mapping[frozenset[str], VersionDifference]


def declared_differences(version_id: uuid.UUID | str, manifest: Mapping[str, Any]
                         ) -> dict[frozenset[str], VersionDifference]:
    """The differences a version's manifest declares to earlier versions of its dataset.

    ``manifest["lineage"]`` is ``{"previous": [{"version_id": ..., "removed": r, "added": a}]}``
    (``removed``: rows of that earlier version not in this one; ``added``: rows of this one
    not in it). No ``lineage`` key declares nothing. A malformed one is an
    :class:`~dic_connector.errors.AnalysisError` naming the entry.
    """
    raw = manifest.get(LINEAGE_KEY)
    if raw is None:
        return {}
    where = f"dataset version {version_id}: manifest 'lineage'"
    if not isinstance(raw, Mapping) or not isinstance(raw.get("previous"), list):
        raise AnalysisError(f"{where} must be an object with a list 'previous'")
    out: dict[frozenset[str], VersionDifference] = {}
    for i, entry in enumerate(raw["previous"]):
        if not isinstance(entry, Mapping):
            raise AnalysisError(f"{where}: previous[{i}] must be an object")
        other, removed, added = entry.get("version_id"), entry.get("removed"), entry.get("added")
        if not isinstance(other, str) or other == str(version_id):
            raise AnalysisError(f"{where}: previous[{i}].version_id must be another version")
        for name, n in (("removed", removed), ("added", added)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise AnalysisError(f"{where}: previous[{i}].{name} must be a count >= 0")
        assert isinstance(removed, int) and isinstance(added, int)
        out[frozenset({other, str(version_id)})] = VersionDifference(removed, added)
    return out


def merge_differences(declared: Iterable[Mapping[frozenset[str], VersionDifference]]
                      ) -> dict[frozenset[str], VersionDifference]:
    """All versions' declarations together (a pair declared twice keeps the first)."""
    out: dict[frozenset[str], VersionDifference] = {}
    for part in declared:
        for pair, difference in part.items():
            out.setdefault(pair, difference)
    return out


def _split(contributor: str) -> tuple[str, str]:
    dataset, _, version = contributor.partition("/")
    return dataset, version


def version_refusal(ledger: Ledger | None, contributors: Sequence[str],
                    columns: Collection[str], differences: Differences,
                    min_subset_size: int, sites: Mapping[str, str] | None = None
                    ) -> str | None:
    """Why a release reading typed ``columns`` over ``contributors`` (``"<dataset id>/
    <version id>"``) must be refused under the version lineage rule, or None.

    ``differences`` are the declared differences between versions of the contributors'
    datasets (:func:`declared_differences`); ``sites`` names each contributor's site for the
    message. Without a ledger, or for a release reading no column (``count()``: the row
    count is public), nothing is refused.
    """
    if ledger is None or not columns:
        return None
    wanted = set(columns)
    current = {_split(c)[0]: _split(c)[1] for c in contributors}
    for entry in ledger.releases:
        shared = sorted(wanted.intersection(entry.columns))
        if not shared:
            continue
        for earlier in entry.contributors:
            dataset, version = _split(earlier)
            now = current.get(dataset)
            if now is None or now == version:
                continue
            site = (sites or {}).get(f"{dataset}/{now}", dataset)
            difference = differences.get(frozenset({version, now}))
            what = f"'{shared[0]}'" + (f" (and {len(shared) - 1} more)" if len(shared) > 1
                                       else "")
            if difference is None:
                return (f"{what} was released before on version {version} of the dataset "
                        f"of site {site!r}, and nobody declared how version {now} differs "
                        "from it: the difference of the two releases could single out "
                        "patients (version lineage)")
            side = difference.smallest_side()
            if 0 < side < min_subset_size:
                return (f"{what} was released before on version {version} of the dataset "
                        f"of site {site!r}, which differs from version {now} in between 1 and "
                        f"{min_subset_size - 1} rows: the difference of the two releases "
                        "would disclose those rows (version lineage; min_subset_size)")
    return None
