"""The :class:`Source` interface: where cohort data comes from, as one async stream.

A source yields *items* — FHIR resources as plain ``dict`` (parsed with :mod:`json`, not with
model classes, for speed) or SQL rows as ``dict`` keyed by column label — one at a time, so that
the pipeline above never holds a whole export in memory. Each source counts what it has
delivered in a :class:`Progress`, read at any time from ``source.progress`` or pushed to an
``on_progress`` callback after every page, file chunk or row batch.

Sources own network or database resources; use them as async context managers::

    async with FhirRestSource(config) as source:
        async for resource in source.stream():
            ...

Every failure is raised as :class:`~dic_connector.errors.SourceError` (or a subclass), never as
a transport library's exception, and never with a row-level value in its message.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar

T = TypeVar("T")

#: One FHIR resource or one SQL row.
Item = dict[str, Any]



@dataclass(frozen=True)
class LineBatch:
    """Consecutive NDJSON lines of one file, not yet parsed, and the checks they are due.

    Picklable (bytes and strings), so a batch may be parsed in another process; the
    checks need no state of the source. Line counts and the manifest's ``count`` are the
    source's business (it checks them when the file ends); :func:`iter_batch` does the rest.
    """

    #: the file as error messages name it
    origin: str
    #: line number (1-based, blank lines not counted) of ``lines[0]`` in the file
    first: int
    lines: list[bytes]
    #: the type every resource must have (the manifest's ``type``), or None
    expected_type: str | None = None
    #: only these resource types are kept (all when empty); the others are skipped
    wanted: frozenset[str] = field(default_factory=frozenset)
    validate: bool = False
    #: what validation errors name (default: ``"<origin> line <n>"``)
    validate_label: str | None = None

@dataclass(frozen=True)
class Progress:
    """How far a source has come; immutable snapshots, replaced as the stream advances."""

    #: items (resources or rows) yielded so far
    items: int = 0
    #: pages (REST), files (Bulk/NDJSON) or batches (SQL) completed so far
    units: int = 0
    #: bytes received over the wire or read from disk, where known
    bytes: int = 0
    #: total items the source announced (Bundle.total, manifest counts), if it did
    expected: int | None = None
    #: per resource type (or ``"row"``) item counts
    by_type: tuple[tuple[str, int], ...] = field(default_factory=tuple)
    #: free-text phase, e.g. ``"polling"`` or the server's ``X-Progress``
    phase: str = ""

    def count(self, kind: str) -> int:
        return dict(self.by_type).get(kind, 0)


ProgressCallback = Callable[[Progress], None]


class ProgressTracker:
    """Mutable counter behind a source's :class:`Progress` snapshots."""

    def __init__(self, callback: ProgressCallback | None = None) -> None:
        self._callback = callback
        self._snapshot = Progress()
        self._by_type: dict[str, int] = {}

    @property
    def snapshot(self) -> Progress:
        return self._snapshot

    def item(self, kind: str) -> None:
        self._by_type[kind] = self._by_type.get(kind, 0) + 1

    def items(self, counts: Mapping[str, int]) -> None:
        """Count several items per kind at once (no notification; see :meth:`update`)."""
        for kind, n in counts.items():
            self._by_type[kind] = self._by_type.get(kind, 0) + n

    def update(self, *, units: int = 0, nbytes: int = 0, expected: int | None = None,
               phase: str | None = None) -> None:
        """Close a unit of work (page, file, batch) and notify the callback."""
        s = self._snapshot
        self._snapshot = replace(
            s, items=sum(self._by_type.values()), units=s.units + units, bytes=s.bytes + nbytes,
            expected=expected if expected is not None else s.expected,
            by_type=tuple(sorted(self._by_type.items())),
            phase=phase if phase is not None else s.phase)
        if self._callback is not None:
            self._callback(self._snapshot)


class Source(ABC):
    """An async stream of resources or rows with progress; one implementation per kind."""

    #: short name of the kind, as used in configuration (``fhir-rest``, ``fhir-bulk``, ...)
    kind: ClassVar[str]

    def __init__(self, on_progress: ProgressCallback | None = None) -> None:
        self._tracker = ProgressTracker(on_progress)

    @property
    def progress(self) -> Progress:
        return self._tracker.snapshot

    @abstractmethod
    def stream(self) -> AsyncIterator[Item]:
        """Yield every item once; raises :class:`~dic_connector.errors.SourceError`."""

    #: whether :meth:`line_batches` delivers the items as unparsed NDJSON lines
    delivers_lines: ClassVar[bool] = False

    def line_batches(self) -> AsyncIterator[LineBatch]:
        """The items of :meth:`stream` as unparsed NDJSON lines, for a source reading NDJSON
        (:attr:`delivers_lines`): :func:`~dic_connector.sources.ndjson.iter_batch` of the
        batches, in order, yields what :meth:`stream` would, with the same errors. The
        consumer reports the items it parsed with :meth:`record_items`."""
        raise NotImplementedError(f"a {self.kind} source does not deliver NDJSON lines")

    def record_items(self, counts: Mapping[str, int]) -> None:
        """Count items parsed elsewhere from :meth:`line_batches` (per resource type)."""
        self._tracker.items(counts)
        self._tracker.update()

    async def aclose(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Release connections and files."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()


async def merge_streams(streams: Sequence[AsyncIterator[T]], max_parallel: int,
                        buffer: int = 1000) -> AsyncIterator[T]:
    """Items of several streams interleaved, at most ``max_parallel`` running at once.

    A bounded queue keeps memory flat when the consumer is slower than the producers. The
    first exception of any stream is raised to the consumer; the other streams are cancelled
    (also when the consumer stops early).
    """
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=buffer)
    gate = asyncio.Semaphore(max_parallel)

    async def pump(stream: AsyncIterator[T]) -> None:
        async with gate:
            try:
                async for item in stream:
                    await queue.put(("item", item))
            except Exception as exc:
                await queue.put(("error", exc))
                return
            finally:
                with contextlib.suppress(Exception):
                    await stream.aclose()  # type: ignore[attr-defined]
        await queue.put(("done", None))

    tasks = [asyncio.ensure_future(pump(s)) for s in streams]
    running = len(tasks)
    try:
        while running:
            kind, value = await queue.get()
            if kind == "item":
                yield value
            elif kind == "done":
                running -= 1
            else:
                raise value
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
