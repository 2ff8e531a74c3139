"""The connector's state store: run history, watermarks and erasures still owed.

A run is a row from :meth:`StateStore.start_run` (``RUNNING``) to
:meth:`StateStore.finish_run`, which writes its outcome **and** the dataset's new watermarks in
one transaction. A run killed in between (crash, SIGKILL, power) leaves the old watermarks,
so the next run reads the same changes again: runs are idempotent and resumable, never lossy.
A failed run may not move watermarks at all. At start-up the service calls
:meth:`StateStore.mark_interrupted`, which closes the rows a dead process left ``RUNNING``.

Everything stored is a count, a name, a time or a version id (see
:mod:`~dic_connector.connector.state.records`); errors are the project's value-free messages,
cut to :data:`~dic_connector.connector.state.models.ERROR_LENGTH` characters.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.engine import URL, CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from dic_connector.connector.state.migrate import migrations
from dic_connector.connector.state.models import (
    ERROR_LENGTH,
    SUBSCRIPTION_LENGTH,
    TRIGGER_LENGTH,
    WATERMARK_KEY_LENGTH,
    WATERMARK_VALUE_LENGTH,
    Lineage,
    PendingErasure,
    Run,
    SubscriptionEvents,
    Watermark,
)
from dic_connector.connector.state.records import RunCounts, RunRecord, RunStatus
from dic_connector.database.columns import utcnow
from dic_connector.database.engine import create_engine, normalise_url, session_factory
from dic_connector.database.migrate import describe
from dic_connector.errors import ConflictError, NotFoundError, StoreError

__all__ = ["RunCounts", "RunRecord", "RunStatus", "StateStore"]

#: the outcomes after which a run's watermarks may advance
ADVANCING = frozenset({RunStatus.SUCCEEDED, RunStatus.UNCHANGED})


def _cut(error: str | None) -> str | None:
    if error is None or len(error) <= ERROR_LENGTH:
        return error
    return error[: ERROR_LENGTH - 1] + "…"


def _record(run: Run) -> RunRecord:
    counts = RunCounts(
        resources_read=run.resources_read, patients=run.patients,
        patients_excluded=run.patients_excluded, rows_rejected=run.rows_rejected,
        rows_shared=run.rows_shared, columns=run.columns, bytes_per_node=run.bytes_per_node,
        rejected=run.rejected or {})
    return RunRecord(id=run.id, dataset=run.dataset, trigger=run.trigger, status=run.status,
                     started_at=run.started_at, finished_at=run.finished_at, counts=counts,
                     version_id=run.version_id, error=run.error,
                     stage_seconds=run.stage_seconds or {})


def _check_watermarks(watermarks: Mapping[str, str]) -> None:
    for key, value in watermarks.items():
        if not key or len(key) > WATERMARK_KEY_LENGTH:
            raise ConflictError(f"a watermark key has {len(key)} characters; expected 1 to "
                                f"{WATERMARK_KEY_LENGTH}")
        if not isinstance(value, str) or len(value) > WATERMARK_VALUE_LENGTH:
            raise ConflictError(f"watermark {key!r} is not text of at most "
                                f"{WATERMARK_VALUE_LENGTH} characters")


class StateStore:
    """The state database of one connector (SQLite file or PostgreSQL)."""

    def __init__(self, url: str | URL) -> None:
        """A store on ``url`` (``sqlite:///path`` or ``postgresql://...``); no I/O yet."""
        self.url = normalise_url(url)
        self.engine = create_engine(self.url)
        self._sessions = session_factory(self.engine)

    async def close(self) -> None:
        await self.engine.dispose()

    # -- schema ------------------------------------------------------------------------------

    async def migrate(self) -> str:
        """Upgrade the database to the newest revision; returns that revision."""
        environment = migrations()
        await environment.upgrade(self.url)
        revision = await environment.current_revision(self.url)
        if revision is None:
            raise StoreError("the connector state database has no revision after migrating")
        return revision

    async def check_schema(self) -> list[str]:
        """What differs between the database and the models; ``[]`` means ready.

        A database behind the newest revision says so first; then each table, column, index
        or constraint that differs, by name (the node's tables, if any, are ignored).
        """
        environment = migrations()
        current = await environment.current_revision(self.url)
        head = environment.head_revision()
        problems = [] if current == head else [f"revision {current or 'none'} is not head {head}"]
        problems += [describe(d) for d in await environment.schema_diff(self.url)]
        return problems

    # -- watermarks --------------------------------------------------------------------------

    async def watermarks(self, dataset: str) -> dict[str, str]:
        """The dataset's watermarks, key -> value (``{}`` for a dataset never finished)."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(Watermark.key, Watermark.value).where(Watermark.dataset == dataset))
            return {key: value for key, value in rows}

    async def _write_watermarks(self, session: AsyncSession, dataset: str, run_id: int,
                                watermarks: Mapping[str, str]) -> None:
        """Set the given keys of the dataset (others keep theirs) in the caller's transaction."""
        if not watermarks:
            return
        existing = {mark.key: mark for mark in await session.scalars(
            select(Watermark).where(Watermark.dataset == dataset))}
        now = utcnow()
        for key, value in watermarks.items():
            mark = existing.get(key)
            if mark is None:
                session.add(Watermark(dataset=dataset, key=key, value=value, run_id=run_id,
                                      updated_at=now))
            else:
                mark.value, mark.run_id, mark.updated_at = value, run_id, now
        await session.flush()

    # -- lineage -----------------------------------------------------------------------------

    async def lineage(self, dataset: str) -> bytes | None:
        """The dataset's lineage blob (None before its first recorded version)."""
        async with self._sessions() as session:
            row = await session.get(Lineage, dataset)
            return None if row is None else row.state

    async def _write_lineage(self, session: AsyncSession, dataset: str, run_id: int,
                             state: bytes, versions: int) -> None:
        row = await session.get(Lineage, dataset)
        if row is None:
            session.add(Lineage(dataset=dataset, state=state, versions=versions,
                                run_id=run_id, updated_at=utcnow()))
        else:
            row.state, row.versions, row.run_id, row.updated_at = (state, versions, run_id,
                                                                   utcnow())
        await session.flush()

    # -- runs --------------------------------------------------------------------------------

    async def start_run(self, dataset: str, trigger: str) -> int:
        """Record a ``RUNNING`` run of ``dataset`` started now; returns its id."""
        if len(trigger) > TRIGGER_LENGTH:
            raise ConflictError(f"a run trigger has at most {TRIGGER_LENGTH} characters")
        async with self._sessions.begin() as session:
            run = Run(dataset=dataset, trigger=trigger, status=RunStatus.RUNNING,
                      started_at=utcnow(), rejected={}, stage_seconds={})
            session.add(run)
            await session.flush()
            return run.id

    async def finish_run(self, run_id: int, status: RunStatus, *,
                         counts: RunCounts = RunCounts(),  # noqa: B008 (frozen)
                         version_id: uuid.UUID | None = None,
                         error: str | None = None, stage_seconds: Mapping[str, float] = {},
                         watermarks: Mapping[str, str] = {},
                         lineage: tuple[bytes, int] | None = None) -> RunRecord:
        """Close a ``RUNNING`` run with its outcome and move the dataset's watermarks.

        One transaction: the run row, the watermarks and the dataset's ``lineage`` (its
        blob and how many versions it knows) change together or not at all. ``watermarks``
        set the given keys only; both only after ``SUCCEEDED`` or ``UNCHANGED``.
        """
        if status is RunStatus.RUNNING:
            raise ConflictError("a run finishes in a final status, not 'running'")
        if (watermarks or lineage is not None) and status not in ADVANCING:
            raise ConflictError(f"a run that ended '{status}' may not move watermarks or "
                                "lineage")
        _check_watermarks(watermarks)
        async with self._sessions.begin() as session:
            run = await session.get(Run, run_id, with_for_update=True)
            if run is None:
                raise NotFoundError(f"run {run_id} does not exist")
            if run.status is not RunStatus.RUNNING:
                raise ConflictError(f"run {run_id} has already ended '{run.status}'")
            run.status, run.finished_at = status, utcnow()
            run.resources_read, run.patients = counts.resources_read, counts.patients
            run.patients_excluded, run.rows_rejected = (counts.patients_excluded,
                                                        counts.rows_rejected)
            run.rows_shared, run.columns = counts.rows_shared, counts.columns
            run.bytes_per_node, run.rejected = counts.bytes_per_node, dict(counts.rejected)
            run.stage_seconds = {stage: float(s) for stage, s in stage_seconds.items()}
            run.version_id, run.error = version_id, _cut(error)
            await session.flush()
            await self._write_watermarks(session, run.dataset, run_id, watermarks)
            if lineage is not None:
                await self._write_lineage(session, run.dataset, run_id, *lineage)
            return _record(run)

    async def mark_interrupted(self) -> int:
        """Mark every ``RUNNING`` run ``INTERRUPTED``; returns how many.

        Call it when the service starts, before its first run: one connector process owns a
        state database, so a run still ``RUNNING`` then belongs to a process that died.
        """
        async with self._sessions.begin() as session:
            result: CursorResult[Any] = await session.execute(  # type: ignore[assignment]
                update(Run).where(Run.status == RunStatus.RUNNING)
                .values(status=RunStatus.INTERRUPTED, finished_at=utcnow()))
            return int(result.rowcount)

    async def runs(self, dataset: str | None = None, limit: int = 50) -> list[RunRecord]:
        """The newest ``limit`` runs (of ``dataset``, or of all datasets), newest first."""
        query = select(Run).order_by(Run.started_at.desc(), Run.id.desc()).limit(max(limit, 0))
        if dataset is not None:
            query = query.where(Run.dataset == dataset)
        async with self._sessions() as session:
            return [_record(run) for run in await session.scalars(query)]

    async def last_run(self, dataset: str, status: RunStatus | None = None) -> RunRecord | None:
        """The dataset's newest run (with ``status``, if given), or ``None``."""
        query = (select(Run).where(Run.dataset == dataset)
                 .order_by(Run.started_at.desc(), Run.id.desc()).limit(1))
        if status is not None:
            query = query.where(Run.status == status)
        async with self._sessions() as session:
            run = await session.scalar(query)
            return None if run is None else _record(run)

    async def schedule_anchor(self, dataset: str) -> dt.datetime | None:
        """When the dataset's newest run that was not ``INTERRUPTED`` started (``None``: none).

        Schedules count from here: a run cut off by a dying process produced nothing, so
        the next process runs the dataset at once instead of waiting a whole interval.
        """
        query = (select(Run.started_at).where(Run.dataset == dataset,
                                              Run.status != RunStatus.INTERRUPTED)
                 .order_by(Run.started_at.desc(), Run.id.desc()).limit(1))
        async with self._sessions() as session:
            started: dt.datetime | None = await session.scalar(query)
            return started

    # -- erasures ----------------------------------------------------------------------------

    async def add_pending_erasure(self, dataset: str, version_id: uuid.UUID) -> None:
        """Remember that ``version_id`` of ``dataset`` must still be erased (idempotent)."""
        async with self._sessions.begin() as session:
            if await session.get(PendingErasure, (dataset, version_id)) is None:
                session.add(PendingErasure(dataset=dataset, version_id=version_id,
                                           added_at=utcnow()))

    async def pending_erasures(self) -> list[tuple[str, uuid.UUID]]:
        """Every (dataset, version id) still to erase, oldest first."""
        query = select(PendingErasure.dataset, PendingErasure.version_id).order_by(
            PendingErasure.added_at, PendingErasure.dataset, PendingErasure.version_id)
        async with self._sessions() as session:
            return [(dataset, version) for dataset, version in await session.execute(query)]

    async def clear_pending_erasure(self, dataset: str, version_id: uuid.UUID) -> None:
        """Forget an erasure once every node confirmed it (nothing happens if unknown)."""
        async with self._sessions.begin() as session:
            await session.execute(delete(PendingErasure).where(
                PendingErasure.dataset == dataset, PendingErasure.version_id == version_id))

    # -- subscriptions -----------------------------------------------------------------------

    async def subscription_events(self, dataset: str) -> dict[str, tuple[int, list[int]]]:
        """Per Subscription id of ``dataset``: the highest event number seen and the lower
        numbers still missing (``{}`` before the first notification)."""
        query = select(SubscriptionEvents).where(SubscriptionEvents.dataset == dataset)
        async with self._sessions() as session:
            return {row.subscription: (row.highest, list(row.missing or []))
                    for row in await session.scalars(query)}

    async def save_subscription_events(self, dataset: str, subscription: str, highest: int,
                                       missing: list[int]) -> None:
        """Record what has been seen of ``subscription`` (replacing what was recorded)."""
        if not subscription or len(subscription) > SUBSCRIPTION_LENGTH:
            raise ConflictError(f"a subscription id has 1 to {SUBSCRIPTION_LENGTH} characters")
        async with self._sessions.begin() as session:
            row = await session.get(SubscriptionEvents, (dataset, subscription))
            if row is None:
                session.add(SubscriptionEvents(dataset=dataset, subscription=subscription,
                                               highest=highest, missing=list(missing),
                                               updated_at=utcnow()))
            else:
                row.highest, row.missing, row.updated_at = highest, list(missing), utcnow()

    async def forget_subscriptions(self, dataset: str, keep: str) -> int:
        """Drop the numbers of ``dataset``'s subscriptions other than ``keep`` (ones the
        server no longer has, replaced by ``keep``); returns how many."""
        async with self._sessions.begin() as session:
            result: CursorResult[Any] = await session.execute(  # type: ignore[assignment]
                delete(SubscriptionEvents).where(SubscriptionEvents.dataset == dataset,
                                                 SubscriptionEvents.subscription != keep))
            return int(result.rowcount)
