"""One long-lived listener per party serving several sessions at once (issue 17, part 3):
connections are routed by the session id of their hello, unknown or finished sessions are
refused and closed, each session keeps its own replay detection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from mpc.channels import FRAME, KIND_HELLO, MAGIC, VERSION, SessionListener, TlsChannels
from mpc.errors import PeerError
from mpc.local import LocalDeployment
from mpc.protocols import arith
from mpc.ring import as_ring
from mpc.session import Party, new_session_id
from mpc.sharing import share


@pytest.fixture
def deployment(tmp_path: Path) -> LocalDeployment:
    return LocalDeployment.create(tmp_path / "pki")


@pytest.fixture
async def listeners(deployment: LocalDeployment) -> AsyncIterator[list[SessionListener]]:
    out = [SessionListener(i, deployment.peers, deployment.tls(i)) for i in range(2)]
    for listener in out:
        await listener.start()
    yield out
    for listener in out:
        listener.close()


async def _channels(deployment: LocalDeployment, listeners: list[SessionListener],
                    session: bytes, timeout_s: float = 10.0) -> list[TlsChannels]:
    return list(await asyncio.gather(*(
        TlsChannels.connect(i, deployment.peers, deployment.tls(i), timeout_s, session,
                            listeners[i] if i < 2 else None) for i in range(3))))


async def test_sessions_run_at_the_same_time_through_one_listener_per_party(
        deployment: LocalDeployment, listeners: list[SessionListener]) -> None:
    """Four sessions connect and multiply at once; each gets its own products, and the
    listeners stay up for the next ones (nothing waits on them afterwards)."""
    sessions = [new_session_id() for _ in range(4)]
    values = [as_ring(np.arange(50) * (k + 1) - 7) for k in range(4)]
    views = [share(v) for v in values]
    started: list[float] = []
    finished: list[float] = []

    async def one(k: int) -> list[np.ndarray]:
        channels = await _channels(deployment, listeners, sessions[k])
        parties = [Party(c, 10.0) for c in channels]
        started.append(asyncio.get_running_loop().time())

        async def party(i: int) -> np.ndarray:
            async with parties[i].session(sessions[k]) as s:
                product = await arith.mul(s, views[k][i], views[k][i])
                return await arith.open_(s, product)

        try:
            return list(await asyncio.gather(*(party(i) for i in range(3))))
        finally:
            finished.append(asyncio.get_running_loop().time())
            await asyncio.gather(*(p.close() for p in parties))

    results = await asyncio.gather(*(one(k) for k in range(4)))
    for k, opened in enumerate(results):
        for result in opened:
            assert np.array_equal(result, values[k] * values[k])
    assert max(started) < min(finished)  # all four were connected at once
    assert [listener.sessions for listener in listeners] == [0, 0]
    # and a fifth session after them
    channels = await _channels(deployment, listeners, new_session_id())
    await asyncio.gather(*(c.close() for c in channels))


async def _hello(deployment: LocalDeployment, sender: int, session: bytes) -> bytes:
    """What listener 0 answers a hello from ``sender`` for ``session`` (b"": closed)."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", deployment.peers[0].port, ssl=deployment.tls(sender).client_context(),
        server_hostname="node-0")
    try:
        writer.write(FRAME.pack(MAGIC, VERSION, KIND_HELLO, sender, session, 0, 0))
        await writer.drain()
        return await asyncio.wait_for(reader.read(FRAME.size), 5.0)
    finally:
        writer.close()


async def test_a_connection_for_an_unknown_or_finished_session_is_refused_and_closed(
        deployment: LocalDeployment, listeners: list[SessionListener]) -> None:
    assert await _hello(deployment, 2, new_session_id()) == b""
    assert listeners[0].refused == 1
    finished = new_session_id()
    channels = await _channels(deployment, listeners, finished)
    await asyncio.gather(*(c.close() for c in channels))
    assert await _hello(deployment, 1, finished) == b""
    assert listeners[0].refused == 2
    # a session that is expecting its peers acknowledges a hello, and only once per peer
    waiting = TlsChannels(0, deployment.peers, new_session_id())
    listeners[0].expect(waiting.session, waiting)
    try:
        answer = await _hello(deployment, 1, waiting.session)
        assert FRAME.unpack(answer)[:5] == (MAGIC, VERSION, KIND_HELLO, 0, waiting.session)
        assert await _hello(deployment, 1, waiting.session) == b""  # node-1 is in already
        assert listeners[0].refused == 3
    finally:
        listeners[0].release(waiting.session)
        await waiting.close()


async def test_a_peer_that_comes_late_is_waited_for_not_refused_for_good(
        deployment: LocalDeployment, listeners: list[SessionListener]) -> None:
    """Party 2 dials before parties 0 and 1 expect the session: refused at first, it
    retries and connects once they do."""
    session = new_session_id()
    late = asyncio.create_task(TlsChannels.connect(2, deployment.peers, deployment.tls(2),
                                                   10.0, session))
    while listeners[0].refused == 0 or listeners[1].refused == 0:
        await asyncio.sleep(0.01)
    first = await asyncio.gather(*(
        TlsChannels.connect(i, deployment.peers, deployment.tls(i), 10.0, session,
                            listeners[i]) for i in range(2)))
    channels = [*first, await late]
    await asyncio.gather(*(c.close() for c in channels))


async def test_replays_are_detected_per_session(
        deployment: LocalDeployment, listeners: list[SessionListener]) -> None:
    """The same (session, step) key in two sessions is two messages, not a replay; a
    second frame for a key within one session fails that session only."""
    a, b = new_session_id(), new_session_id()
    ca, cb = await _channels(deployment, listeners, a), await _channels(deployment, listeners, b)
    try:
        await ca[1].send(0, a, 1, b"in a")
        await cb[1].send(0, b, 1, b"in b")
        assert await ca[0].recv(1, a, 1, 5.0) == b"in a"
        assert await cb[0].recv(1, b, 1, 5.0) == b"in b"
        await ca[1].send(0, a, 1, b"again")
        with pytest.raises(PeerError, match="replayed"):
            await ca[0].recv(1, a, 2, 5.0)
        await cb[1].send(0, b, 2, b"still fine")
        assert await cb[0].recv(1, b, 2, 5.0) == b"still fine"
    finally:
        await asyncio.gather(*(c.close() for c in (*ca, *cb)))
