"""HTTP relays on 127.0.0.1 between sekmet and the connector's notification endpoint: the
fault proxy of issue 13's acceptance. :class:`DroppingRelay` loses event notifications in
transit (sekmet got its 200); :class:`FaultyRelay` drops, delays (so reorders), duplicates
and, while ``silent``, passes nothing at all (a heartbeat that stops)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

import aiohttp
from aiohttp import web

from dic_connector.connector.subscriptions.notifications import NotificationType, parse_notification
from mpc.local import free_port


class Relay:
    """An HTTP relay on 127.0.0.1 in front of the connector's notification endpoint (at
    ``target_port``); subclasses decide in :meth:`_relay` what reaches it."""

    def __init__(self, target_port: int) -> None:
        self.target = f"http://127.0.0.1:{target_port}"
        self.port = free_port()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    async def _relay(self, request: web.Request) -> web.Response:
        raise NotImplementedError

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._relay)
        self._http = aiohttp.ClientSession()
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()


class DroppingRelay(Relay):
    """An HTTP relay between sekmet and the connector's notification endpoint that answers
    ``200`` to event notifications without passing them on while ``dropping`` (lost in
    transit: the server believes them delivered); everything else is passed on."""

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)
        self.dropping = False
        self.dropped = 0

    async def _relay(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.dropping:
            with contextlib.suppress(Exception):
                if parse_notification(body).type is NotificationType.EVENT:
                    self.dropped += 1
                    return web.Response(status=200)
        assert self._http is not None
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("authorization", "content-type")}
        async with self._http.request(request.method, self.target + request.path_qs,
                                      data=body, headers=headers) as answer:
            return web.Response(status=answer.status, body=await answer.read())


class FaultyRelay(Relay):
    """A relay between sekmet and the connector's notification endpoint that answers sekmet
    ``200`` at once and disturbs what it passes on: each event notification (or classic
    ping) is dropped (``p_drop``), or passed on after a random delay below ``max_delay_s``
    (so a burst arrives reordered), and a second time after another delay
    (``p_duplicate``). While ``silent``, it passes nothing at all (a heartbeat that stops,
    with the events of the time lost). The handshake is passed on synchronously (the subscription's activation
    waits for it). Its decisions come from a seeded generator; the arrival order still
    depends on sekmet's delivery threads."""

    def __init__(self, target_port: int, seed: int = 13, p_drop: float = 0.15,
                 p_duplicate: float = 0.25, max_delay_s: float = 0.4) -> None:
        super().__init__(target_port)
        self.rng = random.Random(seed)
        self.p_drop, self.p_duplicate, self.max_delay_s = p_drop, p_duplicate, max_delay_s
        self.silent = False
        #: event notifications and classic pings received from the server
        self.changes = 0
        self.dropped = self.duplicated = self.delayed = self.silenced = 0
        self._pending: set[asyncio.Task[None]] = set()

    def idle(self) -> bool:
        """Whether nothing held back is still to be passed on."""
        return not self._pending

    async def _send(self, method: str, path: str, body: bytes, headers: dict[str, str],
                    delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        assert self._http is not None
        async with self._http.request(method, self.target + path, data=body,
                                      headers=headers) as answer:
            await answer.read()

    def _later(self, *args: Any) -> None:
        task = asyncio.ensure_future(self._send(*args))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _relay(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("authorization", "content-type")}
        kind = None
        with contextlib.suppress(Exception):
            kind = parse_notification(body).type
        if self.silent:
            self.silenced += 1
            return web.Response(status=200)
        if kind is NotificationType.HANDSHAKE:
            await self._send(request.method, request.path_qs, body, headers, 0)
        elif kind in (NotificationType.EVENT, NotificationType.REST_HOOK):
            self.changes += 1
            if self.rng.random() < self.p_drop:
                self.dropped += 1
            else:
                self.delayed += 1
                self._later(request.method, request.path_qs, body, headers,
                            self.rng.uniform(0, self.max_delay_s))
                if self.rng.random() < self.p_duplicate:
                    self.duplicated += 1
                    self._later(request.method, request.path_qs, body, headers,
                                self.rng.uniform(0, self.max_delay_s))
        else:  # heartbeats (and anything else) at once
            self._later(request.method, request.path_qs, body, headers, 0)
        return web.Response(status=200)

    async def close(self) -> None:
        for task in list(self._pending):
            task.cancel()
        await super().close()
