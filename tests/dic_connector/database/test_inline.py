"""SQLite calls on the loop's thread (:mod:`dic_connector.database.inline`): statements run
there, a writer waiting for another's lock waits off the loop (which keeps running), errors
arrive as SQLAlchemy's, and the plain aiosqlite path is still there to choose."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from dic_connector.database.engine import create_engine
from dic_connector.database.inline import InlineConnection


async def test_statements_run_on_the_loop_thread(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    threads: list[int] = []
    try:
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert isinstance(driver, InlineConnection)
            await driver.create_function("thread_of", 0, lambda: threads.append(
                threading.get_ident()) or 1)
            assert (await conn.execute(text("SELECT thread_of()"))).scalar() == 1
        assert threads == [threading.get_ident()]
    finally:
        await engine.dispose()


async def test_a_writer_waits_for_the_lock_off_the_loop(tmp_path: Path) -> None:
    """Two engines on one file (as a node and ``dic node admin`` would be): the second
    writer's ``BEGIN IMMEDIATE`` waits for the first's commit while the loop runs on."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    first, second = create_engine(url), create_engine(url)
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    try:
        async with first.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        clock = asyncio.create_task(ticker())
        async with first.begin() as holder:  # holds the write lock
            await holder.exec_driver_sql("INSERT INTO t VALUES (1)")

            async def write() -> None:
                async with second.begin() as conn:
                    await conn.exec_driver_sql("INSERT INTO t VALUES (2)")

            waiting = asyncio.create_task(write())
            seen = ticks
            while ticks < seen + 10:  # the loop runs while the second writer waits
                await asyncio.sleep(0.005)
            assert not waiting.done()
        await waiting  # the first committed: the second got the lock
        stop.set()
        await clock
        async with second.connect() as conn:
            rows = (await conn.exec_driver_sql("SELECT x FROM t ORDER BY x")).all()
        assert [r[0] for r in rows] == [1, 2]
    finally:
        await first.dispose()
        await second.dispose()


@pytest.mark.parametrize("inline", [True, False])
async def test_errors_and_both_paths(tmp_path: Path, inline: bool) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}", sqlite_inline=inline)
    try:
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            assert isinstance(raw.driver_connection, InlineConnection) is inline
            with pytest.raises(OperationalError, match="no such table: missing"):
                await conn.exec_driver_sql("SELECT * FROM missing")
        async with engine.begin() as conn:  # the connection is still good after the error
            await conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            await conn.exec_driver_sql("INSERT INTO t VALUES (7)")
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("SELECT sum(x) FROM t")).scalar() == 7
            mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
            assert mode == "wal"
    finally:
        await engine.dispose()


async def test_a_closed_connection_refuses_calls(tmp_path: Path) -> None:
    connection = InlineConnection(lambda: sqlite3.connect(tmp_path / "x.db",
                                                          check_same_thread=False))
    await connection
    assert await (await connection.execute("SELECT 41 + 1")).fetchone() == (42,)
    await connection.close()
    with pytest.raises(ValueError, match=r"no active connection|Connection closed"):
        await connection.execute("SELECT 1")


@pytest.mark.parametrize("closing", ["close", "stop"])
async def test_a_connection_is_not_closed_under_a_call_on_its_thread(
        tmp_path: Path, closing: str) -> None:
    """A ``BEGIN IMMEDIATE`` waiting for another writer's lock on the worker thread, its
    caller cancelled (a task torn down), then the connection closed: sqlite3 closing a
    connection that thread is still inside crashed the process (seen once in CI: a fixture's
    teardown). ``close`` waits for the call; ``stop`` closes once it has returned."""
    path = tmp_path / "x.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")  # the write lock, held
    conn = InlineConnection(lambda: sqlite3.connect(path, timeout=5, isolation_level=None,
                                                    check_same_thread=False))
    await conn
    waiting = asyncio.ensure_future(conn.execute("BEGIN IMMEDIATE"))
    await asyncio.sleep(0.1)  # on the thread now, inside sqlite3's busy wait
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    raw = conn._connection
    assert raw is not None and conn._in_flight is not None and not conn._in_flight.done()
    loop = asyncio.get_running_loop()
    loop.call_later(0.2, holder.rollback)  # the other writer lets go
    if closing == "close":
        await conn.close()
        assert conn._in_flight.done()
    else:
        conn.stop()
        assert not conn._in_flight.done()  # still on its thread: not closed yet
        await asyncio.wait({conn._in_flight})
        await asyncio.sleep(0)  # the done callback
    with pytest.raises(sqlite3.ProgrammingError):  # closed, after the call returned
        raw.execute("SELECT 1")
    holder.close()
