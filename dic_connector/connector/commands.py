"""What ``dic connector ...`` does: serve, pull, migrate, token.

- ``serve``: migrate the state database (unless told not to), then run
  :func:`~.service.create_app` until SIGTERM/SIGINT, logging JSON lines to stderr.
- ``pull``: one run of each dataset that is due (``--now``: of each, due or not; datasets
  with a ``manual`` trigger always run, since ``pull`` is their trigger), in the
  foreground, with a progress bar (rich) on a terminal and one plain line per stage
  otherwise. The exit code says what failed first: 0 all succeeded, 3 a source, 4 the mapping
  or validation, 5 the nodes (upload, commit), 1 anything else; configuration errors are 2
  (raised before any run).
- ``migrate``: Alembic upgrade of the state database.
- ``token``: a new operator token for ``/v1``, and the SHA-256 the config holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import secrets
import signal
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any

from dic_connector.connector.config import ConnectorConfig, DatasetConfig, TriggerKind
from dic_connector.connector.logs import configure_json_logging
from dic_connector.connector.runs import Runner, RunOutcome
from dic_connector.connector.schedule import next_due
from dic_connector.connector.state import StateStore
from dic_connector.errors import (
    CoordinationError,
    DataValidationError,
    MappingError,
    PipelineError,
    SourceError,
)
from dic_connector.sources import Progress

EXIT_OK, EXIT_OTHER, EXIT_SOURCE, EXIT_MAPPING, EXIT_NODES = 0, 1, 3, 4, 5


def exit_code(error: BaseException | None) -> int:
    """The ``pull`` exit code for a run's error (see the module docstring)."""
    if error is None:
        return EXIT_OK
    if isinstance(error, SourceError):
        return EXIT_SOURCE
    if isinstance(error, MappingError | DataValidationError | PipelineError):
        return EXIT_MAPPING
    if isinstance(error, CoordinationError):
        return EXIT_NODES
    return EXIT_OTHER


def new_token() -> tuple[str, str]:
    """A random operator token and its SHA-256 (hex), for ``operator_token_sha256``."""
    token = secrets.token_urlsafe(32)
    return token, hashlib.sha256(token.encode()).hexdigest()


async def migrate(config: ConnectorConfig) -> str:
    state = StateStore(config.state_database_url)
    try:
        return await state.migrate()
    finally:
        await state.close()


async def serve(config: ConnectorConfig, *, auto_migrate: bool = True) -> None:
    from aiohttp import web

    from dic_connector.connector.service import create_app

    configure_json_logging()
    if auto_migrate:
        await migrate(config)
    runner = web.AppRunner(create_app(config))
    await runner.setup()
    await web.TCPSite(runner, config.listen_host, config.listen_port).start()
    print(f"connector {config.site}: http://{config.listen_host}:{config.listen_port} "
          f"({config.describe()})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
    print(f"connector {config.site}: stopped", flush=True)


class _Lines:
    """Plain progress: one line per stage and a final summary per dataset."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def stage(self, dataset: str) -> Callable[[str], None]:
        return lambda name: print(f"{dataset}: {name}", file=self._out, flush=True)

    def progress(self, dataset: str) -> Callable[[Progress], None] | None:
        return None

    def close(self) -> None:
        pass


class _Bar:
    """A rich progress bar per dataset: stage and items read."""

    def __init__(self, out: IO[str]) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                  TextColumn("{task.completed} items"), TimeElapsedColumn(),
                                  console=Console(file=out), transient=False)
        self._progress.start()
        self._tasks: dict[str, Any] = {}

    def _task(self, dataset: str) -> Any:
        if dataset not in self._tasks:
            self._tasks[dataset] = self._progress.add_task(dataset, total=None)
        return self._tasks[dataset]

    def stage(self, dataset: str) -> Callable[[str], None]:
        task = self._task(dataset)
        return lambda name: self._progress.update(task, description=f"{dataset}: {name}")

    def progress(self, dataset: str) -> Callable[[Progress], None]:
        task = self._task(dataset)

        def update(p: Progress) -> None:
            self._progress.update(task, completed=p.items, total=p.expected)

        return update

    def close(self) -> None:
        self._progress.stop()


def _due(dataset: DatasetConfig, now: dt.datetime, last: dt.datetime | None) -> bool:
    if dataset.trigger.kind is TriggerKind.MANUAL:
        return True
    due = next_due(dataset.trigger, now, last)
    return due is not None and due <= now


async def pull(config: ConnectorConfig, names: Sequence[str] = (), *, now: bool = False,
               out: IO[str] | None = None, auto_migrate: bool = True) -> int:
    """One run of each selected dataset that is due (all with ``now``); the exit code."""
    out = out or sys.stdout
    datasets = [config.dataset(n) for n in names] if names else list(config.datasets)
    state = StateStore(config.state_database_url)
    display = _Bar(out) if out.isatty() else _Lines(out)
    code = EXIT_OK
    try:
        if auto_migrate:
            await state.migrate()
        await state.mark_interrupted()
        runner = Runner(config, state, logger=logging.getLogger("dic_connector.connector"))
        await runner.retry_pending_erasures()
        clock = dt.datetime.now(dt.UTC)
        for dataset in datasets:
            anchor = await state.schedule_anchor(dataset.name)
            if not now and not _due(dataset, clock, anchor):
                print(f"{dataset.name}: not due ({dataset.trigger.describe()}); --now runs it "
                      "anyway", file=out, flush=True)
                continue
            outcome: RunOutcome = await runner.run(
                dataset.name, "pull", on_stage=display.stage(dataset.name),
                on_progress=display.progress(dataset.name))
            print(_summary(outcome), file=out, flush=True)
            if code == EXIT_OK:
                code = exit_code(outcome.error)
    finally:
        display.close()
        await state.close()
    return code


def _summary(outcome: RunOutcome) -> str:
    r = outcome.record
    c = r.counts
    if not outcome.ok:
        return f"{r.dataset}: {r.status.value}: {r.error}"
    line = (f"{r.dataset}: {r.status.value}: {c.resources_read} items -> {c.patients} "
            f"patients, {c.patients_excluded} excluded, {c.rows_rejected} rejected, "
            f"{c.rows_shared} rows x {c.columns} columns shared as version {r.version_id}")
    if r.counts.rejected:
        line += "; " + ", ".join(f"{k} x{n}" for k, n in sorted(r.counts.rejected.items()))
    return line
