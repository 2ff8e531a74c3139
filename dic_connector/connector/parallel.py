"""Parsing and mapping NDJSON lines in worker processes (the pipeline's "pull" and "map").

Parsing a resource's JSON and running the views over it are nearly all of the CPU time of
a large NDJSON pull, and one Python process uses one core. :class:`MapPool` runs them in
``workers`` processes (started with ``spawn``: a fresh interpreter that inherits none of
the parent's memory, so no plaintext of the parent is copied into it): each task is one
:class:`~dic_connector.sources.base.LineBatch` of raw lines, sent through a pipe; the
worker parses and checks it (:func:`~dic_connector.sources.ndjson.iter_batch`), runs the
mapping's views (:meth:`~dic_connector.mapping.CohortBuilder.run_views_by_column`) and sends back
only the compact view rows, by column (a column's repeated strings shared within the
batch, so each is pickled once) and the count of resources per type. The resources exist only in the
worker, for one batch; nothing is written to disk.

Errors raised on purpose in a worker (:class:`~dic_connector.errors.DicError`: a
``SourceError`` naming file and line, a ``MappingError``) come back as their type, ``args``
and attributes and are raised again in the parent as the same exception, without the
worker's traceback. :meth:`MapPool.close` ends the workers: it lets them exit after a
complete run and terminates them otherwise (a failure, a cancellation), so no worker
outlives the call that started it.

As with any ``spawn`` of :mod:`multiprocessing`, a worker imports the program's main
module (as ``__mp_main__``) before it starts: the ``dic`` command and the benchmarks guard
their entry point with ``if __name__ == "__main__"``, as a script calling the pipeline
must.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any, cast

from dic_connector.errors import DicError
from dic_connector.mapping import CohortBuilder, CohortMapping
from dic_connector.sources.base import LineBatch
from dic_connector.sources.ndjson import iter_batch

#: view name -> compact rows of a batch by column, resource type -> resources parsed
Mapped = tuple[dict[str, list[tuple[Any, ...]]], dict[str, int]]
#: a DicError raised in a worker: its class, args and attributes
_Failure = tuple[type[DicError], tuple[Any, ...], dict[str, Any]]

#: The worker process's compiled views. A module global on purpose: it lives in the worker
#: process only (set by the pool's initializer, read by each task), which is how
#: ProcessPoolExecutor hands per-process state to its tasks.
_builder: CohortBuilder | None = None


def _start_worker(mapping: CohortMapping) -> None:
    """Worker initializer: compile the views once; no cyclic GC (the rows are acyclic)."""
    global _builder
    gc.disable()
    _builder = CohortBuilder(mapping)


def _map_batch(batch: LineBatch) -> Mapped | _Failure:
    """Worker task: parse ``batch`` and run the views over it (a DicError is returned)."""
    assert _builder is not None
    try:
        resources = list(iter_batch(batch))
        counts: dict[str, int] = {}
        for resource in resources:
            rtype = resource["resourceType"]
            counts[rtype] = counts.get(rtype, 0) + 1
        rows = _builder.run_views_by_column(resources)
        resources.clear()
        return rows, counts
    except DicError as exc:
        return type(exc), exc.args, dict(vars(exc))


def _raise(failure: _Failure) -> None:
    cls, args, attributes = failure
    exc = cls.__new__(cls)
    exc.args = args
    vars(exc).update(attributes)
    raise exc


class MapPool:
    """``workers`` processes mapping :class:`LineBatch` es for one mapping."""

    def __init__(self, mapping: CohortMapping, workers: int) -> None:
        self._executor = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker, initargs=(mapping,))

    def submit(self, batch: LineBatch) -> asyncio.Future[Mapped | _Failure]:
        """Start mapping ``batch``; await :func:`result` of the returned future."""
        return asyncio.wrap_future(self._executor.submit(_map_batch, batch))

    def close(self, *, complete: bool) -> None:
        """End the workers: wait for them to exit after a complete run, else terminate."""
        if complete:
            self._executor.shutdown(wait=True)
            return
        # ProcessPoolExecutor (3.11) has no public way to stop busy workers. SIGTERM ends a
        # worker whatever it is doing (no handler is installed); the executor's own thread
        # then finds the pool broken, reaps the processes and exits, and is joined here.
        processes = list((getattr(self._executor, "_processes", None) or {}).values())
        for process in processes:
            process.terminate()
        for process in processes:
            process.join()
        # A worker killed while it wrote a result leaves part of a message in the result
        # pipe, and the executor's thread would wait for the rest forever: this process
        # holds the pipe's write end too (seen under load: shutdown hung 300 s). With
        # every worker gone, closing that end turns the wait into an EOF, which the
        # thread takes for a broken pool, and it ends.
        result_queue = getattr(self._executor, "_result_queue", None)
        writer = getattr(result_queue, "_writer", None)
        if writer is not None:
            writer.close()
        self._executor.shutdown(wait=True, cancel_futures=True)


def result(value: Mapped | _Failure) -> Mapped:
    """A worker's answer, or its error raised here."""
    if len(value) == 3:
        _raise(value)
    return cast(Mapped, value)
