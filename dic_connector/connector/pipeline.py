"""The connector's job, end to end: source -> cohort table -> shares on three nodes.

One call of :func:`share_cohort` is what a hospital's connector does on a schedule or after
a FHIR Subscription notification (DESIGN.md section 2 and 7), with no person in the loop:

1. **pull** every item of a :class:`~dic_connector.sources.base.Source` (FHIR REST search,
   Bulk ``$export``, an NDJSON directory, or a SQL query);
2. **map** them to one raw row per patient through the declarative
   :class:`~dic_connector.mapping.cohort.CohortMapping`
   (:func:`~dic_connector.mapping.build_cohort` over FHIR resources, or
   :func:`~dic_connector.mapping.assemble_rows` over the rows of a SQL mapping's query);
3. **validate** every value against its typed column
   (:func:`~dic_connector.mapping.validate_rows`): rows breaking a ``reject_row`` rule are
   dropped and *counted* per (column, value class, rule); a ``fail_dataset`` rule stops the
   run before anything leaves the process;
4. **encode** the clean rows as a fixed-point int64 matrix with its manifest
   (:func:`~dic_connector.mapping.encode_table`);
5. **share** it (:meth:`~dic_connector.connector.upload.Uploader.upload`): each column is
   split into three replicated shares, node i receives only its pair, and a two-phase
   commit makes the new version visible on all three nodes or on none.

Plaintext lifetime. Resources, raw rows and clean rows exist only inside the call: the
lists (and the row dicts the mapping built) are cleared as soon as the next stage has
consumed them, the matrix is
zeroed by the uploader right after sharing, and zeroed here again on every exit path
(including failures before sharing). Python cannot promise that no copy of a value
survives in freed memory, but nothing this module returns or keeps refers to row-level
data. What comes back, :class:`PipelineReport`, holds counts and names only, so it may be
logged and shown.

Failures of steps 1-4 (:class:`~dic_connector.errors.SourceError`,
:class:`~dic_connector.errors.MappingError`,
:class:`~dic_connector.errors.DataValidationError`, or :class:`PipelineError` when no row
survives validation) are raised before any node is contacted, so such a run uploads
nothing. Upload failures are those of :mod:`.upload` (aborted everywhere, or a commit in
doubt named in a :class:`~dic_connector.errors.CoordinationError`).

The manifest sent with the shares is the encoder's, plus the declared ``minimum`` and
``maximum`` of numeric and date columns (in the column's unit), widened outwards to whole
numbers: validation has enforced them on every shared row, so analyses may rely on them
instead of checking a safe range under MPC (see
:class:`dic_connector.node.analyses.base.ColumnInfo`). Whole numbers because the nodes compare
manifests as canonical JSON, which has no floats; a wider range is still a true bound.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dic_connector.connector.upload import Uploader
from dic_connector.encoding import encode_table, validate_rows
from dic_connector.encoding.encode import EncodedTable
from dic_connector.errors import PipelineError
from dic_connector.mapping import CohortMapping, assemble_rows, build_cohort
from dic_connector.mapping.cohort import QUERY_VIEW
from dic_connector.mapping.columns import DateRule, NumericRule
from dic_connector.sources.base import Item, Source


@dataclass(frozen=True)
class PipelineReport:
    """What one connector run did, in counts and names only (safe to log and print)."""

    site: str
    dataset: str
    mapping: str
    #: items (FHIR resources or SQL rows) read from the source
    resources_read: int
    #: rows assembled, one per patient of the anchor view (or of the query)
    patients: int
    #: rows dropped by ``reject_row`` rules
    rows_rejected: int
    #: rows shared to the nodes (``patients - rows_rejected``)
    rows_shared: int
    #: matrix columns shared (value, one-hot and ``__present`` columns)
    columns: int
    #: the committed version, the same id on all three nodes
    version_id: uuid.UUID
    #: view rows whose patient key matched no patient (dropped when assembling)
    orphan_rows: int = 0
    #: (column, value class, rule) -> rows rejected for it; a row may count under several
    rejected: Mapping[tuple[str, str, str], int] = field(default_factory=dict)
    #: typed column -> rows kept with the value missing (``missing: indicator``)
    missing_kept: Mapping[str, int] = field(default_factory=dict)
    #: wall time of the whole run
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for progress output: counts only."""
        line = (f"{self.site}: {self.resources_read} resources -> {self.patients} patients, "
                f"{self.rows_rejected} rejected, {self.rows_shared} rows x {self.columns} "
                f"columns shared as version {self.version_id} ({self.seconds:.2f} s)")
        if self.rejected:
            causes = ", ".join(f"{column}: {value_class} ({rule}) x{n}"
                               for (column, value_class, rule), n in sorted(self.rejected.items()))
            line += f"; rejected for {causes}"
        return line


def upload_manifest(encoded: EncodedTable, mapping: CohortMapping) -> dict[str, Any]:
    """The manifest stored with the shares: encoder entries plus declared value ranges."""
    entries = []
    for column in encoded.columns:
        entry = column.as_dict()
        if column.kind in ("numeric", "date"):
            rule = mapping.column(column.column).rule
            if isinstance(rule, NumericRule | DateRule):
                if rule.minimum is not None:
                    entry["minimum"] = math.floor(rule.minimum)
                if rule.maximum is not None:
                    entry["maximum"] = math.ceil(rule.maximum)
        entries.append(entry)
    return {"columns": entries}


async def read_items(source: Source) -> list[Item]:
    """Every item of ``source``, in stream order (the mapping needs all of them at once)."""
    return [item async for item in source.stream()]


def _clear_rows(rows: list[dict[str, Any]]) -> None:
    """Drop the references a list of row dicts holds (values and the dicts themselves)."""
    for row in rows:
        row.clear()
    rows.clear()


async def share_cohort(source: Source, mapping: CohortMapping, uploader: Uploader,
                       dataset: str) -> PipelineReport:
    """Pull ``source``, map, validate, encode and share it as a new version of ``dataset``.

    The caller owns ``source`` (opens and closes it); ``uploader`` names the site and holds
    its connector certificate. Raises before contacting any node when the data cannot be
    mapped or validated (nothing is uploaded then); see the module docstring.
    """
    started = time.perf_counter()
    items = await read_items(source)
    resources_read = len(items)
    encoded: EncodedTable | None = None
    try:
        if mapping.query is not None:
            assembled = assemble_rows(mapping, {QUERY_VIEW: items})
        else:
            assembled = build_cohort(mapping, items)
        items.clear()
        raw = assembled.rows
        patients = len(raw)
        try:
            clean, report, _ = validate_rows(raw, mapping)
        finally:
            _clear_rows(raw)
        try:
            if not clean:
                raise PipelineError(
                    f"{uploader.site}: no row of {patients} passed validation of mapping "
                    f"'{mapping.name}' ({report.rows_rejected} rejected); nothing uploaded")
            encoded = encode_table(clean, mapping)
        finally:
            _clear_rows(clean)
        manifest = upload_manifest(encoded, mapping)
        columns = len(encoded.columns)
        rows_shared = int(encoded.values.shape[0])
        version = await uploader.upload(dataset, encoded.values, manifest)
    finally:
        items.clear()
        if encoded is not None:
            encoded.values.fill(0)  # already zeroed by the uploader once shared
    return PipelineReport(
        site=uploader.site, dataset=dataset, mapping=mapping.name,
        resources_read=resources_read, patients=patients, rows_rejected=report.rows_rejected,
        rows_shared=rows_shared, columns=columns, version_id=version,
        orphan_rows=assembled.orphan_rows, rejected=dict(report.rejected),
        missing_kept=dict(report.missing_kept), seconds=time.perf_counter() - started)
