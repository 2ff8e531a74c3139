"""The connector's job, end to end: source -> cohort table -> shares on three nodes.

One call of :func:`share_cohort` is what a hospital's connector does on a schedule or after
a FHIR Subscription notification (DESIGN.md section 2 and 7), with no person in the loop:

1. **pull** the items of a :class:`~dic_connector.sources.base.Source` (FHIR REST search,
   Bulk ``$export``, an NDJSON directory, or a SQL query) as a stream, ``chunk_size`` at a
   time;
2. **map** each chunk through the declarative
   :class:`~dic_connector.mapping.cohort.CohortMapping` with a
   :class:`~dic_connector.mapping.CohortBuilder`: every view runs over the chunk's resources
   of its type (or the chunk *is* the rows of a SQL mapping's query), its rows are kept and
   the chunk is dropped; when the stream ends, the view rows are joined into the raw table,
   held by column (one list of values per mapping column, no dict per patient), and the
   rows of ``excluded`` patients (consent withdrawn, an opt-out list) are dropped and
   counted. A source of NDJSON lines (an NDJSON directory, a Bulk export) is read as raw
   lines; beyond the first :data:`PARALLEL_AFTER` of them (a small cohort is done before
   worker processes would have started) they are parsed and mapped by :data:`WORKERS`
   worker processes (:mod:`.parallel`), a read block at a time, and only the compact view
   rows come back, kept in stream order: the same table as in this process, on both cores;
3. **validate** every value against its typed column
   (:func:`~dic_connector.encoding.validate_columns`, a column at a time): rows breaking a
   ``reject_row`` rule are dropped and *counted* per (column, value class, rule); a
   ``fail_dataset`` rule stops the run before anything leaves the process. A value of the
   wrong type breaks a rule ``type: ...`` like an out-of-range one breaks ``max``, also
   when a view could not compute its cell from it (the views run with ``invalid_values``),
   so one bad value costs its row, not the site's upload (``mappings/README.md``);
4. **encode** the clean columns (:func:`~dic_connector.encoding.encode_columns`): one int64
   array per typed column (fixed point, day offsets, the level index of a categorical) and
   the manifest of the matrix columns; the matrix itself is not laid out;
5. **upload** (:meth:`~dic_connector.connector.upload.Uploader.upload_columns`): the matrix
   columns (value, one-hot and ``__present`` columns) are produced one at a time as the
   uploader takes them; each is split into three replicated shares and zeroed, node i
   receives only its pair, and a two-phase commit makes the new version visible on all
   three nodes or on none. Under a delta plan (:mod:`.delta`) only the rows the previous
   version lacks are shared this way (taken from copies of the matrix columns, so that
   the whole table is still there for a full upload if the nodes refuse the delta).

Memory. Pulling and mapping interleave, so the resources in memory are at most one chunk
(with worker processes: none in this process beyond the first :data:`PARALLEL_AFTER` lines,
at most ``2 * WORKERS + 1`` read blocks of raw lines in flight, and one block's resources
in each worker, a process of its own whose memory does not grow with the cohort):
what grows with the cohort is the flattened view rows (a few short values per patient and
view), then the raw and clean columns (a reference per patient and column, the distinct
values shared), then the encoded arrays (8 bytes per patient and typed column). The matrix
(8 bytes per patient and matrix column) never exists whole, nor do its shares: the uploader
holds a few matrix columns' share pairs at a time (16 bytes per row and node each). Each
stage's input is released as soon as the stage has consumed it, so the peak is the join
(view rows and raw columns) or validation (raw and typed columns), whichever is larger.
``on_stage`` is called with "pull" once when the stream starts and with "map" once when it
has ended and the join starts, then with "validate", "encode" and "upload";
:attr:`PipelineReport.stage_seconds` counts the time spent *in* each stage, so "pull" is
the time waiting for the source and "map" includes the views run over every chunk while
pulling (with worker processes, "pull" is reading the lines and "map" the wait for the
workers' rows, which parse and map meanwhile, and the join).

Plaintext lifetime. Resources, raw and clean columns and the encoded arrays exist only
inside the call: each chunk is cleared once its views have run, the view rows once joined,
the raw columns once validated, the clean ones once encoded; each matrix column is zeroed
by the uploader right after sharing, each encoded array once its last matrix column has
been produced, and whatever is left is zeroed or cleared here on every exit path
(including failures before sharing). Worker processes are started with ``spawn`` (fresh
interpreters: nothing of this process's memory is copied into them), receive raw lines
and send back view rows through pipes (nothing is written to disk), hold one read block's
resources at a time, and end with the call: after a complete pull they exit, on a failure
or a cancellation they are terminated, before the call returns or raises. Python cannot
promise that no copy of a value survives in freed memory, but nothing this module returns
or keeps refers to row-level data. What comes back, :class:`PipelineReport`, holds counts
and names only, so it may be logged and shown.

Failures of steps 1-4 (:class:`~dic_connector.errors.SourceError`,
:class:`~dic_connector.errors.MappingError`, raised in a worker process or here alike, with
the same type and message,
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

import asyncio
import math
import os
import time
import uuid
from collections import deque
from collections.abc import (
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from dic_connector.connector import parallel
from dic_connector.connector.delta import UploadPlan
from dic_connector.connector.parallel import MapPool
from dic_connector.connector.upload import Uploader
from dic_connector.encoding import encode_columns, validate_columns
from dic_connector.encoding.encode import EncodedColumns, EncodedTable
from dic_connector.errors import DeltaRefused, PipelineError
from dic_connector.mapping import CohortBuilder, CohortMapping
from dic_connector.mapping.assemble import AssembledTable, paused_gc
from dic_connector.mapping.columns import DateRule, NumericRule
from dic_connector.sources.base import Item, Source
from dic_connector.sources.ndjson import iter_batch

#: the stages of a run, in order, as ``on_stage`` names them
STAGES = ("pull", "map", "validate", "encode", "upload")
#: bytes of one value's share pair on a node: two elements of Z_2^64
SHARE_PAIR_BYTES = 16


@dataclass(frozen=True)
class PipelineReport:
    """What one connector run did, in counts and names only (safe to log and print)."""

    site: str
    dataset: str
    mapping: str
    #: items (FHIR resources or SQL rows) read from the source
    resources_read: int
    #: rows assembled, one per patient of the anchor view (or of the query), before exclusion
    patients: int
    #: rows dropped by ``reject_row`` rules
    rows_rejected: int
    #: rows shared to the nodes (``patients - patients_excluded - rows_rejected``)
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
    #: rows dropped before validation because their patient key was ``excluded``
    patients_excluded: int = 0
    #: stage (:data:`STAGES`) -> wall seconds spent in it
    stage_seconds: Mapping[str, float] = field(default_factory=dict)
    #: share bytes sent to each node: 16 (a pair of ring elements) x rows sent x columns
    bytes_per_node: int = 0
    #: a delta version's base (:mod:`.delta`; None: every row was shared)
    delta_base: uuid.UUID | None = None
    #: rows whose shares were sent (a delta version's fresh rows; else ``rows_shared``)
    rows_sent: int = 0
    #: why the nodes refused a planned delta version, which was then sent in full
    delta_refused: str = ""

    def summary(self) -> str:
        """One line for progress output: counts only."""
        line = (f"{self.site}: {self.resources_read} resources -> {self.patients} patients, "
                + (f"{self.patients_excluded} excluded, " if self.patients_excluded else "")
                + f"{self.rows_rejected} rejected, {self.rows_shared} rows x {self.columns} "
                f"columns shared as version {self.version_id} ({self.seconds:.2f} s)")
        if self.rejected:
            causes = ", ".join(f"{column}: {value_class} ({rule}) x{n}"
                               for (column, value_class, rule), n in sorted(self.rejected.items()))
            line += f"; rejected for {causes}"
        return line


def upload_manifest(encoded: EncodedTable | EncodedColumns, mapping: CohortMapping
                    ) -> dict[str, Any]:
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


class StageClock:
    """Wall seconds spent in each of :data:`STAGES`, and the ``on_stage`` call as one starts."""

    def __init__(self, on_stage: Callable[[str], None] | None) -> None:
        self.on_stage = on_stage
        self.seconds = dict.fromkeys(STAGES, 0.0)

    def start(self, stage: str) -> None:
        """Announce ``stage`` (its time is counted by :meth:`timing`)."""
        if self.on_stage is not None:
            self.on_stage(stage)

    @contextmanager
    def timing(self, stage: str) -> Iterator[None]:
        """Add the time spent in the ``with`` block to ``stage``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - started


#: items read in this process before the rest of a large NDJSON source goes to worker
#: processes (:mod:`.parallel`): starting them costs more than mapping a small cohort
PARALLEL_AFTER = 100_000
#: worker processes parsing and mapping NDJSON lines (0: everything in this process)
WORKERS = 2 if (os.cpu_count() or 1) > 1 else 0


async def pull_and_map(source: Source, mapping: CohortMapping, clock: StageClock,
                       chunk_size: int, *, workers: int | None = None,
                       parallel_after: int | None = None) -> AssembledTable:
    """Stream ``source`` into a :class:`~dic_connector.mapping.CohortBuilder`, ``chunk_size``
    items at a time, and join: the raw rows, one per patient ("pull" and "map" of ``clock``).

    Each chunk is cleared once its views have run; on a failure the view rows kept so far
    are released too. The cyclic garbage collector is paused throughout
    (:func:`~dic_connector.mapping.assemble.paused_gc`): parsed resources and view rows hold
    no reference cycles and are freed by reference counting, while the collections their
    allocations trigger would traverse every live view row again and again (a third of the
    pull's time at 10^5 patients).

    A source of NDJSON lines (:attr:`~dic_connector.sources.base.Source.delivers_lines`:
    an NDJSON directory, a Bulk export) under a mapping of views is read as raw lines
    instead; once ``parallel_after`` lines (default :data:`PARALLEL_AFTER`) have been parsed
    and mapped here, the rest is parsed and mapped by ``workers`` processes (default
    :data:`WORKERS`; 0: none), see :func:`_pull_lines`.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    workers = WORKERS if workers is None else workers
    if workers > 0 and source.delivers_lines and mapping.query is None:
        return await _pull_lines(source, mapping, clock, chunk_size, workers,
                                 PARALLEL_AFTER if parallel_after is None else parallel_after)
    builder = CohortBuilder(mapping)
    chunk: list[Item] = []
    clock.start("pull")
    try:
        with paused_gc():
            stream = source.stream()
            started = time.perf_counter()
            async for item in stream:
                chunk.append(item)
                if len(chunk) >= chunk_size:
                    clock.seconds["pull"] += time.perf_counter() - started
                    with clock.timing("map"):
                        builder.add(chunk)
                        chunk.clear()
                    started = time.perf_counter()
            clock.seconds["pull"] += time.perf_counter() - started
            clock.start("map")
            with clock.timing("map"):
                builder.add(chunk)
                chunk.clear()
                return builder.finish()
    finally:
        chunk.clear()
        builder.discard()


async def _pull_lines(source: Source, mapping: CohortMapping, clock: StageClock,
                      chunk_size: int, workers: int, parallel_after: int) -> AssembledTable:
    """:func:`pull_and_map` over the source's :class:`~dic_connector.sources.base.LineBatch`
    es: the first ``parallel_after`` lines parsed here, ``chunk_size`` resources mapped at a
    time; then every batch (one read block of a file) sent to a :class:`.parallel.MapPool`
    of ``workers`` processes, at most ``2 * workers + 1`` in flight, and the view rows they
    return kept in batch order, so the result equals the in-process one.

    "pull" is the time waiting for the source's lines (and parsing the first ones), "map"
    the rest (waiting for the workers' rows, keeping them, the join). A source failure is
    raised after the batches before it have come back (the error of an earlier line wins,
    as when reading in order); the workers end on every exit path (:meth:`MapPool.close`).
    """
    builder = CohortBuilder(mapping)
    chunk: list[Item] = []
    pool: MapPool | None = None
    pending: deque[asyncio.Future[Any]] = deque()
    depth = 2 * workers + 1
    seen = 0
    batches = source.line_batches()

    def keep(answer: Any) -> None:
        rows, counts = parallel.result(answer)
        builder.add_columns(rows, sum(counts.values()))
        source.record_items(counts)

    clock.start("pull")
    try:
        with paused_gc():
            while True:
                started = time.perf_counter()
                try:
                    batch = await anext(batches)
                except StopAsyncIteration:
                    break
                except Exception:
                    with clock.timing("map"):
                        while pending:  # an earlier line's error comes first
                            keep(await pending.popleft())
                    raise
                finally:
                    clock.seconds["pull"] += time.perf_counter() - started
                if pool is None and seen < parallel_after:
                    with clock.timing("pull"):
                        counts: dict[str, int] = {}
                        for resource in iter_batch(batch):
                            chunk.append(resource)
                            rtype = resource["resourceType"]
                            counts[rtype] = counts.get(rtype, 0) + 1
                        source.record_items(counts)
                        seen += len(batch.lines)
                    if len(chunk) >= chunk_size:
                        with clock.timing("map"):
                            builder.add(chunk)
                            chunk.clear()
                    continue
                with clock.timing("map"):
                    if pool is None:
                        builder.add(chunk)
                        chunk.clear()
                        pool = MapPool(mapping, workers)
                    pending.append(pool.submit(batch))
                    del batch
                    while len(pending) >= depth:
                        keep(await pending.popleft())
            clock.start("map")
            with clock.timing("map"):
                while pending:
                    keep(await pending.popleft())
                if pool is not None:
                    pool.close(complete=True)
                    pool = None
                builder.add(chunk)
                chunk.clear()
                return builder.finish()
    finally:
        if pool is not None:
            pool.close(complete=False)
        for future in pending:
            future.cancel()
        chunk.clear()
        builder.discard()
        close = getattr(batches, "aclose", None)
        if close is not None:
            await close()


#: The manifest's ``lineage`` section for a table given as its matrix columns (each a new
#: array the callee zeroes once used), their names and the number of rows.
DeclareFn = Callable[[Iterable[npt.NDArray[np.int64]], Sequence[str], int],
                     dict[str, Any] | None]
#: How the version is sent (:mod:`.delta`), decided once ``declare`` has seen its rows;
#: None: in full, in table order.
PlanFn = Callable[[], UploadPlan | None]
#: Exclusions decided once the cohort is assembled: called with the cohort's patient keys,
#: returns the keys to drop (consent under opt-in needs to know who is in the cohort).
ExcludeFn = Callable[[frozenset[str]], Awaitable[Collection[str]]]


async def decide_exclusions(table: AssembledTable, mapping: CohortMapping,
                            excluded: Collection[str] | ExcludeFn) -> Collection[str]:
    """The keys to drop: ``excluded`` itself, or what it answers for the cohort's keys."""
    if not callable(excluded):
        return excluded
    keys = table.columns.get(mapping.patient_key.name, [])
    return await excluded(frozenset(str(key) for key in keys if key is not None))


def exclude(table: AssembledTable, mapping: CohortMapping, excluded: Collection[str]
            ) -> tuple[AssembledTable, int]:
    """``table`` without the rows whose patient key is in ``excluded``; the number dropped.

    The columns are filtered in place (the returned table shares them with ``table``)."""
    if not excluded:
        return table, 0
    keys = excluded if isinstance(excluded, set | frozenset) else frozenset(excluded)
    column = table.columns.get(mapping.patient_key.name, [None] * table.count)
    kept = [pos for pos, key in enumerate(column) if key not in keys]
    dropped = table.count - len(kept)
    if dropped:
        for values in table.columns.values():
            values[:] = [values[pos] for pos in kept]
    return replace(table, count=len(kept)), dropped


async def share_cohort(source: Source, mapping: CohortMapping, uploader: Uploader,
                       dataset: str, *,
                       excluded: Collection[str] | ExcludeFn = frozenset(),
                       declare: DeclareFn | None = None,
                       plan: PlanFn | None = None,
                       on_stage: Callable[[str], None] | None = None,
                       on_patients: Callable[[Sequence[Any]], None] | None = None,
                       allow_empty: bool = False,
                       chunk_size: int = 5000) -> PipelineReport:
    """Pull ``source``, map, validate, encode and share it as a new version of ``dataset``.

    The caller owns ``source`` (opens and closes it); ``uploader`` names the site and holds
    its connector certificate. ``excluded`` are patient keys (the mapping's ``patient_key``
    column: the Patient's ``getResourceKey()`` for a FHIR mapping, the query's key for a SQL
    one) whose rows are dropped right after assembly, e.g. withdrawn consent: they are
    never validated, encoded or shared. ``excluded`` may instead be an :data:`ExcludeFn`,
    awaited with the cohort's keys once it is assembled (before any node is contacted; its
    failure fails the call and nothing is uploaded). ``declare`` is called with the encoded
    table's matrix columns (one pass; each a fresh array to zero once used), their names and
    the row count just before upload, and returns the manifest's ``lineage`` section
    (:mod:`.lineage`; None: the version declares none). ``plan``, called after
    ``declare``, says how to send the version (:class:`~.delta.UploadPlan`: a delta version
    on the newest committed one, sent in full in its row order if the nodes refuse it, or
    in full in a given row order; None: in full, in table order). ``on_stage`` is called
    with each stage's name as it starts (:data:`STAGES`; see the module docstring for
    "pull" and "map"); ``on_patients`` with the patient keys of the rows to share, in table
    row order, before they are encoded (:mod:`.incremental` keeps keyed pseudonyms of them);
    ``allow_empty``: a table without rows is shared (a delta that only removes rows) rather
    than refused;
    ``chunk_size`` items are mapped at a time. Raises before contacting any node when the
    data cannot be mapped or validated (nothing is uploaded then).
    """
    started = time.perf_counter()
    clock = StageClock(on_stage)
    clean: dict[str, list[Any]] = {}
    encoded: EncodedColumns | None = None
    assembled = await pull_and_map(source, mapping, clock, chunk_size)
    try:
        patients = assembled.count
        drop = await decide_exclusions(assembled, mapping, excluded)
        with clock.timing("map"):
            assembled, patients_excluded = exclude(assembled, mapping, drop)
        clock.start("validate")
        try:
            with clock.timing("validate"):
                clean, rows_shared, report, _ = validate_columns(
                    assembled.columns, assembled.count, mapping)
        finally:
            assembled.clear()
        clock.start("encode")
        try:
            if on_patients is not None:
                on_patients(clean[mapping.patient_key.name])
            if not rows_shared and not allow_empty:
                raise PipelineError(
                    f"{uploader.site}: no row of {patients} passed validation of mapping "
                    f"'{mapping.name}' ({patients_excluded} excluded, "
                    f"{report.rows_rejected} rejected); nothing uploaded")
            with clock.timing("encode"):
                encoded = encode_columns(clean, rows_shared, mapping)
        finally:
            _clear_columns(clean)
        manifest = upload_manifest(encoded, mapping)
        lineage = None if declare is None else declare(
            encoded.each_matrix_column(), encoded.names, rows_shared)
        if lineage is not None:  # how this version differs from earlier ones
            manifest["lineage"] = lineage
        columns = len(encoded.columns)
        how = None if plan is None else plan()
        clock.start("upload")
        with clock.timing("upload"):
            version, delta_base, sent, refused = await _send(
                uploader, dataset, rows_shared, encoded, manifest, how)
    finally:
        assembled.clear()
        _clear_columns(clean)
        if encoded is not None:
            encoded.clear()  # already cleared once every column was shared
    return PipelineReport(
        site=uploader.site, dataset=dataset, mapping=mapping.name,
        resources_read=assembled.resources, patients=patients,
        rows_rejected=report.rows_rejected, rows_shared=rows_shared, columns=columns,
        version_id=version, orphan_rows=assembled.orphan_rows, rejected=dict(report.rejected),
        missing_kept=dict(report.missing_kept), seconds=time.perf_counter() - started,
        patients_excluded=patients_excluded, stage_seconds=dict(clock.seconds),
        bytes_per_node=SHARE_PAIR_BYTES * sent * columns, delta_base=delta_base,
        rows_sent=sent, delta_refused=refused)


async def _send(uploader: Uploader, dataset: str, rows: int, encoded: EncodedColumns,
                manifest: dict[str, Any], plan: UploadPlan | None
                ) -> tuple[uuid.UUID, uuid.UUID | None, int, str]:
    """Upload the version as ``plan`` says: the version id, its delta base (None: in
    full), the rows sent, and why a planned delta was refused ("" if it was not)."""
    refused = ""
    if plan is not None and plan.delta is not None:
        delta = plan.delta
        try:  # each_matrix_column leaves the table whole for a full upload after a refusal
            version = await uploader.upload_delta(
                dataset, int(delta.keep.shape[0] + delta.fresh.shape[0]),
                int(delta.fresh.shape[0]),
                (_taken(column, delta.fresh) for column in encoded.each_matrix_column()),
                manifest | {"delta": delta.section()})
            return version, delta.base, int(delta.fresh.shape[0]), ""
        except DeltaRefused as exc:  # the base is gone or differs on some node
            if not plan.full_fallback:  # the table is not the whole version
                raise
            refused = str(exc)
    columns: Iterable[npt.NDArray[np.int64]] = encoded.matrix_columns()
    if plan is not None:
        order = plan.order
        columns = (_taken(column, order) for column in columns)
    version = await uploader.upload_columns(dataset, rows, columns, manifest)
    return version, None, rows, refused


def _taken(column: npt.NDArray[np.int64], rows: npt.NDArray[np.int64]
           ) -> npt.NDArray[np.int64]:
    """``column[rows]`` (a new array); ``column`` zeroed."""
    try:
        return column[rows]
    finally:
        column.fill(0)


def _clear_columns(columns: dict[str, list[Any]]) -> None:
    """Drop the references a table held by column keeps (values and the lists)."""
    for values in columns.values():
        values.clear()
    columns.clear()
