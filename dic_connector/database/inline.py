"""SQLite statements run on the event loop's own thread, except those that may wait for a lock.

SQLAlchemy's ``sqlite+aiosqlite`` dialect drives an :class:`aiosqlite.Connection`, which runs
every call (each ``execute``, ``fetchall``, ``commit``, cursor ``close``) on a worker thread
of its own: the loop puts the call on a queue, the worker takes the GIL, runs it, and wakes
the loop through its self-pipe. A node's request handler makes a few dozen such calls,
each a few microseconds of SQLite work behind two thread hand-offs and a loop wake-up; on a
busy two-core machine a hand-off costs far more than the statement (issue 17: a peer
``PUT`` of one request took 20-40 ms, most of it in ``SimpleQueue.put_nowait`` and
``epoll``). A local SQLite statement on a WAL database does not wait for anything, except:

- ``BEGIN IMMEDIATE`` (every writing transaction, :mod:`.engine`): it takes the write lock,
  and waits up to the busy timeout for a writer of *another process* (a migration, a
  ``dic node admin`` command) or of another engine in this one;
- ``PRAGMA journal_mode``: switching to WAL needs an exclusive lock once per database;
- opening the file.

:class:`InlineConnection` is aiosqlite's connection with its worker thread kept for those
three, and every other call made at once on the calling thread. In WAL mode, once a
transaction holds the write lock nothing else it runs waits: readers never block
(https://www.sqlite.org/wal.html#concurrency), a ``COMMIT`` only appends to the WAL, and
the automatic checkpoint after it is ``PASSIVE`` (it skips what readers still need). The
sqlite3 connection is then used from two threads, never at once (SQLAlchemy checks a
connection out to one session, which awaits each call before the next), hence
``check_same_thread=False``. One exception: a caller cancelled while its call waits on the
worker thread (a task torn down) returns at once, the call does not; the connection is
then closed only once the call has returned (closing it under the thread crashed the
process).

What is given up: a statement that runs long (a share blob of millions of rows written or
read) now holds the loop for its duration, as numpy does for the MPC; tens of
milliseconds at 10^6 rows, against milliseconds saved on every request.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Callable, Generator
from functools import partial
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.engine import URL

#: statements that may wait for a lock: run on the worker thread, as aiosqlite would
_MAY_WAIT = re.compile(r"\s*(BEGIN\s+(IMMEDIATE|EXCLUSIVE)|PRAGMA\s+journal_mode)", re.I)


class _InlineQueue:
    """What SQLAlchemy's adapter puts on aiosqlite's queue directly (its ``isolation_level``
    setter): run at once, the future resolved before the adapter awaits it."""

    def put_nowait(self, item: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as exc:  # handed to the caller awaiting the future
            if future is not None and not future.done():
                future.set_exception(exc)
        else:
            if future is not None and not future.done():
                future.set_result(result)


class InlineConnection(aiosqlite.Connection):
    """aiosqlite's API; calls run on the caller's thread unless they may wait (see above)."""

    def __init__(self, connector: Callable[[], sqlite3.Connection]) -> None:
        super().__init__(connector, iter_chunk_size=64)
        self._tx = _InlineQueue()  # type: ignore[assignment]
        #: the call running on a worker thread, if any: the connection is not closed under
        #: it (sqlite3 closing a connection another thread is inside crashes the process)
        self._in_flight: asyncio.Future[Any] | None = None

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        if args and isinstance(args[0], str) and _MAY_WAIT.match(args[0]):
            loop = asyncio.get_running_loop()
            call = loop.run_in_executor(None, partial(fn, *args, **kwargs))
            self._in_flight = call
            # a caller cancelled while it waits leaves the call to finish on its thread
            return await asyncio.shield(call)
        return fn(*args, **kwargs)

    async def _connect(self) -> InlineConnection:
        if self._connection is None:
            self._connection = await asyncio.to_thread(self._connector)
        return self

    def __await__(self) -> Generator[Any, None, InlineConnection]:
        return self._connect().__await__()  # no worker thread to start

    def stop(self) -> None:
        self._running = False
        connection, self._connection = self._connection, None
        if connection is None:
            return
        call = self._in_flight
        if call is not None and not call.done():  # closed once its thread lets go of it
            call.add_done_callback(lambda _: connection.close())
        else:
            connection.close()

    async def close(self) -> None:
        call = self._in_flight
        if call is not None and not call.done():
            await asyncio.wait({call})  # (a lock wait ends at SQLite's busy timeout)
        self.stop()


def inline_connector(url: URL, before_connect: Callable[[], None] | None = None
                     ) -> Callable[[], InlineConnection]:
    """An ``async_creator`` for :func:`sqlalchemy.ext.asyncio.create_async_engine`: a new
    :class:`InlineConnection` to the database of ``url`` per call, with the arguments
    SQLAlchemy's aiosqlite dialect would give :func:`sqlite3.connect`, after
    ``before_connect`` (SQLAlchemy's ``do_connect`` event does not fire for a creator)."""
    args, options = SQLiteDialect_aiosqlite().create_connect_args(url)
    [database] = args
    options = {**options, "check_same_thread": False}

    def connector() -> sqlite3.Connection:
        if before_connect is not None:
            before_connect()
        connection: sqlite3.Connection = sqlite3.connect(database, **options)
        return connection

    def create() -> InlineConnection:
        return InlineConnection(connector)

    return create
