"""Waiting for a request to change, in this process: :class:`RequestChanges`.

The researcher's status read can wait for a change (``GET /v1/requests/{id}?wait=25`` with
the ``ETag`` last seen in ``If-None-Match``, :mod:`.requests`) instead of being polled: a
blocking query in the manner of Consul's (``?index=&wait=``, answered when the index moves
or at the wait's end) on HTTP's own conditional requests (RFC 9110 §13.1.2, §15.4.5). Polling
every 50 ms was most of a node's read transactions per request.

The handler does not poll the database meanwhile. Each app keeps one :class:`RequestChanges`
(``web.AppKey``) and adds its :meth:`~RequestChanges.notify` to the store's
``request_observers``, which every writing unit of work tells, after it commits, the
requests whose row, approvals or result it wrote
(:class:`~dic_connector.node.store.unit_of_work.UnitOfWork`): the API's own writes, the
coordination loop's and those a peer's message makes all go through one. A waiter takes its
:meth:`~RequestChanges.watch` *before* it reads the request, so a change committed between
the read and the wait still wakes it (no lost wake-up), and reads again when woken: a
notification says only "look again", so a spurious one costs one read, never a wrong answer.
Changes made by another process on the same database (an admin command) are not heard; a
waiter then answers at its wait's end, as an unchanged status.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field


@dataclass
class _Watch:
    """The waiters of one request: the event the next change sets, and how many wait."""

    changed: asyncio.Event = field(default_factory=asyncio.Event)
    waiters: int = 0


class RequestChanges:
    """Per-request wake-ups: :meth:`notify` after a commit, :meth:`watch` to wait."""

    def __init__(self) -> None:
        self._watches: dict[uuid.UUID, _Watch] = {}
        self._closed = False

    @contextlib.contextmanager
    def watch(self, request_id: uuid.UUID) -> Iterator[asyncio.Event]:
        """An event set by the next change of ``request_id`` after this call (or when the
        app shuts down); forgotten on leaving when nobody else waits for that request."""
        watch = self._watches.setdefault(request_id, _Watch())
        if self._closed:
            watch.changed.set()
        watch.waiters += 1
        try:
            yield watch.changed
        finally:
            watch.waiters -= 1
            if watch.waiters == 0 and self._watches.get(request_id) is watch:
                del self._watches[request_id]

    def notify(self, request_ids: Iterable[uuid.UUID]) -> None:
        """Wake every waiter of ``request_ids``; later waiters wait for the next change."""
        for request_id in request_ids:
            watch = self._watches.pop(request_id, None)
            if watch is not None:
                watch.changed.set()

    def close(self) -> None:
        """Wake every waiter now and each later one at once (the app is shutting down: a
        long-poll must not hold up the server's graceful stop)."""
        self._closed = True
        for watch in self._watches.values():
            watch.changed.set()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        """Requests someone waits for (a test's view of forgotten watches)."""
        return len(self._watches)
