"""Persistent, multiplexed channels (issue 17, part 2), real mutual TLS on 127.0.0.1: many
sessions on one connection per peer pair, chunked messages sent round-robin, a lost
connection failing its sessions and redialled for the next, per-session replay detection,
frames of a session buffered until it opens, certificates of the wrong party refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from mpc.channels import PeerAddress
from mpc.errors import PeerError
from mpc.local import LocalDeployment
from mpc.mux import (
    FLAG_MORE,
    FRAME,
    KIND_BYTES,
    KIND_HELLO,
    KIND_RING,
    MAGIC,
    VERSION,
    ChannelPool,
)
from mpc.protocols import arith
from mpc.ring import as_ring
from mpc.session import Party, new_session_id
from mpc.sharing import AShare, reconstruct, share

#: Frames of 64 KiB in these tests: multi-frame messages stay small.
CHUNK = 1 << 16


@pytest.fixture
def deployment(tmp_path: Path) -> LocalDeployment:
    return LocalDeployment.create(tmp_path / "pki")


@pytest.fixture
async def pools(deployment: LocalDeployment) -> AsyncIterator[list[ChannelPool]]:
    out = [ChannelPool(i, deployment.peers, deployment.tls(i), chunk_bytes=CHUNK)
           for i in range(3)]
    for pool in out:
        await pool.start()
    yield out
    for pool in out:
        await pool.close()


async def _products(pools: list[ChannelPool], session: bytes, x: np.ndarray,
                    y: np.ndarray) -> np.ndarray:
    """x * y computed by the three parties in ``session`` on ``pools``, opened."""
    xs, ys = share(as_ring(x)), share(as_ring(y))

    async def party(i: int) -> AShare:
        channels = await pools[i].open(session, 10.0)
        async with Party(channels, 10.0).session(session) as s:
            return await arith.mul(s, xs[i], ys[i])

    return reconstruct(*await asyncio.gather(*(party(i) for i in range(3))))


async def test_many_sessions_interleave_on_one_connection_per_pair(
        pools: list[ChannelPool]) -> None:
    """Twelve sessions multiply at once, some with multi-frame messages; each gets its own
    products, and every pair of parties used one connection for all of them."""
    rng = np.random.default_rng(7)
    sizes = [10, 3 * CHUNK // 8 + 5, 1, 1000] * 3
    xs = [rng.integers(-1000, 1000, n) for n in sizes]
    ys = [rng.integers(-1000, 1000, n) for n in sizes]
    results = await asyncio.gather(*(
        _products(pools, new_session_id(), x, y) for x, y in zip(xs, ys, strict=True)))
    for x, y, got in zip(xs, ys, results, strict=True):
        np.testing.assert_array_equal(got, as_ring(x * y))
    assert pools[0].connections == {1: 1, 2: 1}
    assert pools[2].connections == {0: 1, 1: 1}
    assert [p.sessions for p in pools] == [0, 0, 0] and pools[0].refused == 0


async def test_a_large_message_does_not_hold_up_a_small_one_of_another_session(
        pools: list[ChannelPool]) -> None:
    """Party 1 queues 64 frames for session A, then one small message for session B:
    party 0 has B's message while A's is still arriving (one frame at a time per session)."""
    a, b = new_session_id(), new_session_id()
    opened = [await asyncio.gather(*(pools[i].open(s, 10.0) for i in range(3)))
              for s in (a, b)]
    big = as_ring(np.arange(64 * CHUNK // 8))
    sending = asyncio.create_task(opened[0][1].send(0, a, 1, big))
    await asyncio.sleep(0)  # A's message is queued
    receiving = asyncio.create_task(opened[0][0].recv(1, a, 1, 10.0))
    await opened[1][1].send(0, b, 1, b"small")
    assert await opened[1][0].recv(1, b, 1, 10.0) == b"small"
    assert not receiving.done()
    np.testing.assert_array_equal(await receiving, big)
    await sending
    for channels in (*opened[0], *opened[1]):
        await channels.close()


async def test_a_killed_connection_fails_its_sessions_and_the_next_dials_anew(
        pools: list[ChannelPool]) -> None:
    """The connection between party 0 and 2 drops mid-session: both sessions on it fail
    with PeerError on every party; a new session afterwards runs over a new connection."""
    sessions = [new_session_id(), new_session_id()]
    opened = [await asyncio.gather(*(pools[i].open(s, 10.0) for i in range(3)))
              for s in sessions]
    await opened[0][2].send(0, sessions[0], 1, b"before")
    assert await opened[0][0].recv(2, sessions[0], 1, 10.0) == b"before"
    waiting = [asyncio.create_task(opened[k][0].recv(2, sessions[k], 2, 30.0))
               for k in range(2)]
    await asyncio.sleep(0)
    link = pools[0].link(2)
    assert link is not None
    link._writer.transport.abort()  # what a network failure looks like
    for task in waiting:
        with pytest.raises(PeerError, match="party 2: connection lost"):
            await task
    with pytest.raises(PeerError, match="party 0"):
        while True:  # party 2 learns of it when its read fails
            await opened[1][2].send(0, sessions[1], 3, b"after")
            await asyncio.sleep(0.01)
    for channels in (*opened[0], *opened[1]):
        await channels.close()
    x = np.arange(-20, 20)
    np.testing.assert_array_equal(await _products(pools, new_session_id(), x, x),
                                  as_ring(x * x))
    assert pools[0].connections == {1: 1, 2: 2} and pools[2].connections == {0: 2, 1: 1}


async def test_a_replayed_frame_fails_only_its_session(pools: list[ChannelPool]) -> None:
    """Party 2 sends step 1 of session A twice on the shared connection: A fails on party 0
    (its peers learn from A's CLOSE), session B on the same connection completes."""
    a, b = new_session_id(), new_session_id()
    ca = await asyncio.gather(*(pools[i].open(a, 10.0) for i in range(3)))
    await ca[2].send(0, a, 1, b"once")
    assert await ca[0].recv(2, a, 1, 10.0) == b"once"
    await ca[2].send(0, a, 1, b"twice")
    with pytest.raises(PeerError, match=r"party 2: replayed message .* step 1"):
        await ca[0].recv(2, a, 2, 10.0)
    ca[0].close_session(a)
    with pytest.raises(PeerError, match="party 0: closed session"):
        await ca[1].recv(0, a, 2, 10.0)
    x = np.arange(30)
    np.testing.assert_array_equal(await _products(pools, b, x, x + 1), as_ring(x * (x + 1)))
    assert pools[0].connections == {1: 1, 2: 1}
    for channels in ca:
        await channels.close()


async def test_a_frame_that_breaks_its_message_fails_only_its_session(
        pools: list[ChannelPool]) -> None:
    """A frame claiming a 16-byte message but carrying 5 bytes: the framing holds (the
    header says how long the frame is), so the session fails and the connection stays."""
    a, b = new_session_id(), new_session_id()
    ca = await asyncio.gather(*(pools[i].open(a, 10.0) for i in range(3)))
    link = pools[2].link(0)
    assert link is not None
    link._writer.write(FRAME.pack(MAGIC, VERSION, KIND_BYTES, 2, 0, a, 1, 5, 16) + b"short")
    with pytest.raises(PeerError, match=r"party 2: step 1: a message of 16 bytes"):
        await ca[0].recv(2, a, 1, 10.0)
    x = np.arange(5)
    np.testing.assert_array_equal(await _products(pools, b, x, x), as_ring(x * x))
    assert pools[0].connections == {1: 1, 2: 1}
    for channels in ca:
        await channels.close()


async def test_frames_of_a_session_not_opened_yet_are_held_not_refused(
        pools: list[ChannelPool]) -> None:
    """Parties 1 and 2 open and send before party 0 has heard of the session: their frames
    wait on party 0, which opens later and computes; nothing was refused or redialled."""
    session = new_session_id()
    x = np.arange(100) - 50
    xs = share(as_ring(x))

    async def party(i: int) -> AShare:
        channels = await pools[i].open(session, 10.0)
        async with Party(channels, 10.0).session(session) as s:
            return await arith.mul(s, xs[i], xs[i])

    early = [asyncio.create_task(party(i)) for i in (1, 2)]
    while session not in pools[0]._pending:
        await asyncio.sleep(0.005)
    late = await party(0)
    products = reconstruct(late, *(await asyncio.gather(*early)))
    np.testing.assert_array_equal(products, as_ring(x * x))
    assert pools[0].refused == 0 and pools[0].connections == {1: 1, 2: 1}


async def test_frames_beyond_the_pending_bound_fail_that_session_when_it_opens(
        deployment: LocalDeployment, pools: list[ChannelPool]) -> None:
    """Party 1 sends 3 KiB for a session party 0 has not opened, with 2 KiB allowed: the
    frames are dropped and opening it there fails at once, naming the bound; another
    session on the same connection still runs."""
    small = ChannelPool(0, deployment.peers, deployment.tls(0), pending_max_bytes=2048)
    await pools[0].close()
    pools[0] = small  # the fixture closes it
    await small.start()
    session = new_session_id()
    early = asyncio.create_task(pools[1].open(session, 10.0))
    link = None
    while link is None:
        await asyncio.sleep(0.005)
        link = pools[1].link(0)
    for step in (1, 2, 3):
        link.enqueue(session, KIND_BYTES, step, bytes(1024), None)
    while session not in small._closed:
        await asyncio.sleep(0.005)
    with pytest.raises(PeerError, match=r"was sent more than 2048 bytes before it opened"):
        await small.open(session, 5.0)
    early.cancel()
    x = np.arange(7)
    np.testing.assert_array_equal(await _products(pools, new_session_id(), x, x),
                                  as_ring(x * x))


async def test_a_session_a_peer_never_opens_times_out_with_the_missing_party(
        pools: list[ChannelPool]) -> None:
    """Party 2 opens nothing: party 0 says which peers it lacks, and how."""
    warm = new_session_id()
    await asyncio.gather(*(pools[i].open(warm, 5.0) for i in range(3)))
    session = new_session_id()
    with pytest.raises(PeerError, match=r"not open within 0.2 s: peers \[2\] did not open it"):
        await asyncio.gather(pools[0].open(session, 0.2), pools[1].open(session, 5.0))
    assert pools[0].sessions == 1  # the warm one
    lonely = ChannelPool(0, [pools[0].peers[0], pools[1].peers[1], pools[2].peers[2]],
                         pools[0]._tls)
    with pytest.raises(PeerError, match=r"not open within 0.1 s: peers \[1, 2\] not connected"):
        await lonely.open(new_session_id(), 0.1)
    await lonely.close()


async def _hello(deployment: LocalDeployment, as_party: int, cert_of: int) -> bytes:
    """Dial party 0 with ``cert_of``'s genuine certificate, announcing ``as_party``."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", deployment.peers[0].port, ssl=deployment.tls(cert_of).client_context(),
        server_hostname="node-0")
    try:
        writer.write(FRAME.pack(MAGIC, VERSION, KIND_HELLO, as_party, 0, bytes(16), 0, 0, 0))
        await writer.drain()
        return await asyncio.wait_for(reader.read(FRAME.size), 5.0)
    finally:
        writer.close()


async def test_a_certificate_of_another_party_is_refused(
        deployment: LocalDeployment, pools: list[ChannelPool]) -> None:
    """node-1's genuine certificate announcing party 2 is closed without an answer; party
    2's own is acknowledged. A dialler whose listener shows another
    party's certificate gives up at once."""
    assert await _hello(deployment, 2, 1) == b""
    assert pools[0].refused == 1
    answer = await _hello(deployment, 2, 2)
    assert FRAME.unpack(answer)[:5] == (MAGIC, VERSION, KIND_HELLO, 0, 0)
    wrong = [deployment.peers[1], deployment.peers[1], deployment.peers[2]]
    wrong[0] = PeerAddress("127.0.0.1", deployment.peers[1].port, "node-0")
    impostor = ChannelPool(2, wrong, deployment.tls(2))
    try:
        with pytest.raises(PeerError, match="certificate of node-0 rejected"):
            await impostor.open(new_session_id(), 5.0)
    finally:
        await impostor.close()


async def test_messages_at_and_around_frame_boundaries_arrive_whole(
        pools: list[ChannelPool]) -> None:
    """Ring messages of 0, 1, one frame less one element, exactly one, two and three frames
    and one element over, and byte messages of 0, exactly two frames and one byte over:
    each arrives equal to what was sent, a ring message as an array of its own (read into
    place, not a view of a receive buffer)."""
    session = new_session_id()
    ch = await asyncio.gather(*(pools[i].open(session, 10.0) for i in range(3)))
    per_frame = CHUNK // 8
    rng = np.random.default_rng(7)
    sizes = [0, 1, per_frame - 1, per_frame, 2 * per_frame, 3 * per_frame,
             2 * per_frame + 1]
    rings = [rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False) for n in sizes]
    raw = [b"", bytes(rng.integers(0, 256, 2 * CHUNK, dtype=np.uint8)),
           bytes(rng.integers(0, 256, CHUNK + 1, dtype=np.uint8))]
    for step, ring in enumerate(rings, 1):
        await ch[2].send(0, session, step, ring)
    for step, data in enumerate(raw, len(rings) + 1):
        await ch[2].send(0, session, step, data)
    for step, ring in enumerate(rings, 1):
        got = await ch[0].recv(2, session, step, 10.0)
        assert isinstance(got, np.ndarray) and got.dtype == np.uint64
        assert got.flags.owndata and got.flags.writeable
        np.testing.assert_array_equal(got, ring)
    for step, data in enumerate(raw, len(rings) + 1):
        assert await ch[0].recv(2, session, step, 10.0) == data
    assert ch[2].bytes_sent[0] == sum(ring.nbytes for ring in rings) + sum(map(len, raw)) \
        + FRAME.size * (1 + 1 + 1 + 1 + 2 + 3 + 3 + 1 + 2 + 2)
    for channels in ch:
        await channels.close()


async def test_chunked_messages_of_two_sessions_interleaved_frame_by_frame(
        pools: list[ChannelPool]) -> None:
    """Party 2 writes the frames of a three-frame ring message of session A and a two-frame
    one of session B alternately (A1 B1 A2 B2 A3), the last frames of uneven length: each
    message is put together from its own frames; then a frame that continues A's step 3
    with another total than its first frame fails A alone, B's next message still arrives."""
    a, b = new_session_id(), new_session_id()
    ca = await asyncio.gather(*(pools[i].open(a, 10.0) for i in range(3)))
    cb = await asyncio.gather(*(pools[i].open(b, 10.0) for i in range(3)))
    link = pools[2].link(0)
    assert link is not None
    x = np.arange(3 * 1000 - 7, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    y = np.arange(2 * 1000 - 1, dtype=np.uint64) + np.uint64(2**63)
    bx, by = x.tobytes(), y.tobytes()
    frame = 8000

    def frames(session: bytes, body: bytes) -> list[bytes]:
        out = []
        for start in range(0, len(body), frame):
            chunk = body[start:start + frame]
            more = start + frame < len(body)
            out.append(FRAME.pack(MAGIC, VERSION, KIND_RING, 2, FLAG_MORE if more else 0,
                                  session, 1, len(chunk), len(body)) + chunk)
        return out

    fa, fb = frames(a, bx), frames(b, by)
    assert (len(fa), len(fb)) == (3, 2)
    for data in (fa[0], fb[0], fa[1], fb[1], fa[2]):
        link._writer.write(data)
    np.testing.assert_array_equal(await ca[0].recv(2, a, 1, 10.0), x)
    np.testing.assert_array_equal(await cb[0].recv(2, b, 1, 10.0), y)
    link._writer.write(FRAME.pack(MAGIC, VERSION, KIND_RING, 2, FLAG_MORE, a, 3, 8, 24)
                       + bytes(8) + FRAME.pack(MAGIC, VERSION, KIND_RING, 2, 0, a, 3, 8, 16)
                       + bytes(8))
    with pytest.raises(PeerError, match=r"party 2: step 3: a frame that does not continue"):
        await ca[0].recv(2, a, 3, 10.0)
    await cb[2].send(0, b, 2, b"still here")
    assert await cb[0].recv(2, b, 2, 10.0) == b"still here"
    assert pools[0].connections == {1: 1, 2: 1}
    for channels in (*ca, *cb):
        await channels.close()


async def test_a_chunked_message_beyond_the_pending_bound_is_refused_at_its_first_frame(
        deployment: LocalDeployment, pools: list[ChannelPool]) -> None:
    """A message of 64 KiB in frames of 4 KiB for a session party 0 has not opened, with
    16 KiB allowed: its first frame's total is over the bound, so no buffer is allocated,
    every frame is dropped and opening the session fails naming the bound."""
    small = ChannelPool(0, deployment.peers, deployment.tls(0), pending_max_bytes=1 << 14)
    await pools[0].close()
    pools[0] = small  # the fixture closes it
    await small.start()
    sender = ChannelPool(1, deployment.peers, deployment.tls(1), chunk_bytes=1 << 12)
    await pools[1].close()
    pools[1] = sender
    await sender.start()
    session = new_session_id()
    early = asyncio.create_task(sender.open(session, 10.0))
    link = None
    while link is None:
        await asyncio.sleep(0.005)
        link = sender.link(0)
    await link.send(session, KIND_RING, 1, np.zeros(1 << 13, dtype=np.uint64).data.cast("B"))
    while small.dropped < 16:
        await asyncio.sleep(0.005)
    assert small._pending_bytes == 0 and not small.link(1)._partial  # type: ignore[union-attr]
    with pytest.raises(PeerError, match=r"was sent more than 16384 bytes before it opened"):
        await small.open(session, 5.0)
    early.cancel()
