"""The state store: runs, watermarks committed with their run, interrupted runs, erasures."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from dic_connector.connector.state.models import ERROR_LENGTH
from dic_connector.connector.state.store import RunCounts, RunStatus, StateStore
from dic_connector.errors import ConfigError, ConflictError, NotFoundError

COUNTS = RunCounts(resources_read=120, patients=24, patients_excluded=2, rows_rejected=3,
                   rows_shared=22, columns=9, bytes_per_node=3_168,
                   rejected={"age/out_of_range/range": 2, "sex/missing/required": 1})


def test_construction_does_no_io_and_refuses_other_databases(tmp_path: Any) -> None:
    StateStore(f"sqlite:///{tmp_path / 'never-created.db'}")
    assert not (tmp_path / "never-created.db").exists()
    with pytest.raises(ConfigError, match="backend 'mysql'"):
        StateStore("mysql://x/y")


async def test_a_run_from_start_to_finish(state: StateStore) -> None:
    version = uuid.uuid4()
    run_id = await state.start_run("adrenal", "schedule")
    running = await state.last_run("adrenal")
    assert running is not None and running.id == run_id
    assert running.status is RunStatus.RUNNING and running.finished_at is None
    assert running.counts == RunCounts() and running.stage_seconds == {}

    record = await state.finish_run(
        run_id, RunStatus.SUCCEEDED, counts=COUNTS, version_id=version,
        stage_seconds={"source": 1.5, "upload": 0.25},
        watermarks={"Patient": "2026-11-30T10:00:00.123+00:00", "bulk": "2026-11-30T10:00:00Z"})
    assert (record.id, record.dataset, record.trigger, record.status) == (
        run_id, "adrenal", "schedule", RunStatus.SUCCEEDED)
    assert record.counts == COUNTS and record.version_id == version and record.error is None
    assert record.stage_seconds == {"source": 1.5, "upload": 0.25}
    assert record.finished_at is not None and record.finished_at >= record.started_at
    assert await state.last_run("adrenal") == record  # what was returned is what was stored
    stored = await state.last_run("adrenal")
    assert stored is not None
    for instant in (stored.started_at, stored.finished_at):
        assert instant is not None and instant.utcoffset() == dt.timedelta(0)
    assert await state.watermarks("adrenal") == {"Patient": "2026-11-30T10:00:00.123+00:00",
                                                 "bulk": "2026-11-30T10:00:00Z"}


async def test_unknown_datasets_have_no_watermarks_and_no_runs(state: StateStore) -> None:
    assert await state.watermarks("nobody") == {}
    assert await state.last_run("nobody") is None
    assert await state.runs("nobody") == []


async def test_watermarks_move_per_key_and_per_dataset(state: StateStore) -> None:
    first = await state.start_run("a", "manual")
    await state.finish_run(first, RunStatus.SUCCEEDED,
                           watermarks={"Patient": "2026-01-01T00:00:00Z",
                                       "Observation": "2026-01-01T00:00:00Z"})
    second = await state.start_run("a", "schedule")
    await state.finish_run(second, RunStatus.UNCHANGED,
                           watermarks={"Observation": "2026-02-01T00:00:00Z"})
    other = await state.start_run("b", "schedule")
    await state.finish_run(other, RunStatus.SUCCEEDED, watermarks={"bulk": "2026-03-01T00:00Z"})
    assert await state.watermarks("a") == {"Patient": "2026-01-01T00:00:00Z",
                                           "Observation": "2026-02-01T00:00:00Z"}
    assert await state.watermarks("b") == {"bulk": "2026-03-01T00:00Z"}


async def test_a_failure_inside_finish_run_changes_nothing(
        state: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run row and the watermarks are written (and flushed) before the failure; the one
    transaction rolls both back, so the old watermarks and the RUNNING row remain."""
    first = await state.start_run("a", "schedule")
    await state.finish_run(first, RunStatus.SUCCEEDED, watermarks={"Patient": "old"})
    run_id = await state.start_run("a", "schedule")
    written = StateStore._write_watermarks

    async def write_then_fail(self: StateStore, session: AsyncSession, *args: Any) -> None:
        await written(self, session, *args)
        raise RuntimeError("disk full")

    monkeypatch.setattr(StateStore, "_write_watermarks", write_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        await state.finish_run(run_id, RunStatus.SUCCEEDED, counts=COUNTS,
                               watermarks={"Patient": "new", "Observation": "new"})
    monkeypatch.undo()

    assert await state.watermarks("a") == {"Patient": "old"}
    run = await state.last_run("a")
    assert run is not None and run.id == run_id
    assert run.status is RunStatus.RUNNING and run.counts == RunCounts()
    # the run can still be finished, and then its watermarks move
    await state.finish_run(run_id, RunStatus.SUCCEEDED, watermarks={"Patient": "new"})
    assert await state.watermarks("a") == {"Patient": "new"}


async def test_a_value_the_database_refuses_changes_nothing(state: StateStore) -> None:
    """A count beyond BIGINT fails in the driver, inside finish_run's transaction."""
    first = await state.start_run("a", "schedule")
    await state.finish_run(first, RunStatus.SUCCEEDED, watermarks={"Patient": "old"})
    run_id = await state.start_run("a", "schedule")
    with pytest.raises((OverflowError, DBAPIError)):  # sqlite3's and asyncpg's
        await state.finish_run(run_id, RunStatus.SUCCEEDED, counts=RunCounts(patients=2**64),
                               watermarks={"Patient": "new"})
    assert await state.watermarks("a") == {"Patient": "old"}
    run = await state.last_run("a")
    assert run is not None and run.id == run_id and run.status is RunStatus.RUNNING


async def test_a_killed_run_leaves_the_old_watermarks_and_is_marked_interrupted(
        tmp_path: Any, state_url: str) -> None:
    before = StateStore(state_url)
    await before.migrate()
    done = await before.start_run("a", "schedule")
    await before.finish_run(done, RunStatus.SUCCEEDED, watermarks={"Patient": "t1"})
    killed = [await before.start_run("a", "schedule"), await before.start_run("b", "manual")]
    await before.close()  # the process dies here: no finish_run

    after = StateStore(state_url)  # the service starts again
    try:
        assert await after.mark_interrupted() == 2
        assert await after.mark_interrupted() == 0
        runs = {run.id: run for run in await after.runs()}
        assert {runs[i].status for i in killed} == {RunStatus.INTERRUPTED}
        assert all(runs[i].finished_at is not None for i in killed)
        assert runs[done].status is RunStatus.SUCCEEDED
        assert await after.watermarks("a") == {"Patient": "t1"}
        with pytest.raises(ConflictError, match="already ended 'interrupted'"):
            await after.finish_run(killed[0], RunStatus.SUCCEEDED)
    finally:
        await after.close()


async def test_finish_run_refuses_what_would_corrupt_the_history(state: StateStore) -> None:
    run_id = await state.start_run("a", "schedule")
    with pytest.raises(NotFoundError, match="run 999"):
        await state.finish_run(999, RunStatus.SUCCEEDED)
    with pytest.raises(ConflictError, match="not 'running'"):
        await state.finish_run(run_id, RunStatus.RUNNING)
    for status in (RunStatus.FAILED, RunStatus.INTERRUPTED):
        with pytest.raises(ConflictError, match="may not move watermarks"):
            await state.finish_run(run_id, status, watermarks={"Patient": "t"})
    with pytest.raises(ConflictError, match="at most 100 characters"):
        await state.finish_run(run_id, RunStatus.SUCCEEDED, watermarks={"Patient": "t" * 101})
    with pytest.raises(ConflictError, match="trigger"):
        await state.start_run("a", "x" * 33)
    await state.finish_run(run_id, RunStatus.FAILED, error="SourceError")
    with pytest.raises(ConflictError, match="already ended 'failed'"):
        await state.finish_run(run_id, RunStatus.SUCCEEDED)
    assert await state.watermarks("a") == {}


async def test_long_errors_are_cut(state: StateStore) -> None:
    run_id = await state.start_run("a", "schedule")
    record = await state.finish_run(run_id, RunStatus.FAILED, error="E" * (ERROR_LENGTH * 3))
    assert record.error is not None and len(record.error) == ERROR_LENGTH
    assert record.error.endswith("…")
    stored = await state.last_run("a")
    assert stored is not None and stored.error == record.error


async def test_runs_newest_first_with_limit_and_filters(state: StateStore) -> None:
    ids = []
    for i, dataset in enumerate(["a", "b", "a", "a", "b"]):
        ids.append(await state.start_run(dataset, "schedule"))
        await state.finish_run(ids[-1], RunStatus.FAILED if i == 3 else RunStatus.SUCCEEDED)
    assert [run.id for run in await state.runs()] == ids[::-1]
    assert [run.id for run in await state.runs(limit=2)] == [ids[4], ids[3]]
    assert [run.id for run in await state.runs("a")] == [ids[3], ids[2], ids[0]]
    assert [run.id for run in await state.runs("a", limit=1)] == [ids[3]]
    assert await state.runs(limit=0) == []
    last = await state.last_run("a")
    last_ok = await state.last_run("a", RunStatus.SUCCEEDED)
    assert last is not None and last.id == ids[3]
    assert last_ok is not None and last_ok.id == ids[2]
    assert await state.last_run("b", RunStatus.FAILED) is None


async def test_pending_erasures(state: StateStore) -> None:
    old, older, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assert await state.pending_erasures() == []
    await state.add_pending_erasure("a", older)
    await state.add_pending_erasure("a", old)
    await state.add_pending_erasure("b", other)
    await state.add_pending_erasure("a", older)  # again: still once
    assert sorted(await state.pending_erasures()) == sorted(
        [("a", older), ("a", old), ("b", other)])
    await state.clear_pending_erasure("a", older)
    await state.clear_pending_erasure("a", uuid.uuid4())  # unknown: nothing happens
    await state.clear_pending_erasure("b", old)  # right version, wrong dataset: nothing
    assert sorted(await state.pending_erasures()) == sorted([("a", old), ("b", other)])
    assert all(isinstance(version, uuid.UUID) for _, version in await state.pending_erasures())


async def test_schedules_count_from_the_newest_run_not_interrupted(state: StateStore) -> None:
    assert await state.schedule_anchor("adrenal") is None
    failed = await state.start_run("adrenal", "schedule")
    await state.finish_run(failed, RunStatus.FAILED, error="SourceError: unreachable")
    [failed_run] = await state.runs("adrenal")
    assert await state.schedule_anchor("adrenal") == failed_run.started_at
    await state.start_run("adrenal", "schedule")  # the process dies here
    assert await state.mark_interrupted() == 1
    assert await state.schedule_anchor("adrenal") == failed_run.started_at
    running = await state.start_run("adrenal", "manual")
    assert await state.schedule_anchor("adrenal") == (await state.last_run("adrenal")).started_at
    assert (await state.last_run("adrenal")).id == running
    assert await state.schedule_anchor("other") is None
