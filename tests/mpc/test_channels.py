"""Peer channels: delivery, replay, timeouts, lost peers; mutual TLS identity checks."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import numpy as np
import pytest

from mpc.channels import FRAME, MAGIC, VERSION, LoopbackNetwork, Mailbox, PeerAddress, TlsChannels
from mpc.errors import PeerError, TlsConfigError
from mpc.local import LocalDeployment, free_port
from mpc.protocols import arith
from mpc.ring import as_ring
from mpc.session import Party, Session, new_session_id, run_local
from mpc.sharing import AShare, reconstruct, share
from mpc.tls import NodeTls, issue_cert, make_ca, write_dev_pki

SID = b"0123456789abcdef"
#: how long a listener waits for its peers in the refusal tests, which wait it out: the
#: refused dialler connects after 0.2 s and its TLS handshake on loopback takes milliseconds
LISTEN_S = 1.0


async def test_mailbox_delivers_in_any_order_and_detects_replay() -> None:
    box = Mailbox()
    box.deliver(1, SID, 2, b"second")
    waiter = asyncio.create_task(box.receive(1, SID, 1, 1.0))
    await asyncio.sleep(0)
    box.deliver(1, SID, 1, b"first")
    assert await waiter == b"first"
    assert await box.receive(1, SID, 2, 1.0) == b"second"
    with pytest.raises(PeerError, match=r"replayed message.*step 1"):
        box.deliver(1, SID, 1, b"again")


async def test_mailbox_rejects_closed_sessions_and_times_out() -> None:
    box = Mailbox()
    box.close_session(SID)
    with pytest.raises(PeerError, match="closed session"):
        box.deliver(2, SID, 1, b"late")
    with pytest.raises(PeerError, match=r"party 2: no message .* step 5 within 0.05 s"):
        await box.receive(2, b"x" * 16, 5, 0.05)


async def test_failed_peer_wakes_waiters_and_future_receives() -> None:
    box = Mailbox()
    waiter = asyncio.create_task(box.receive(0, SID, 1, 30.0))
    await asyncio.sleep(0)
    box.fail(0, PeerError("connection lost", 0))
    with pytest.raises(PeerError, match="connection lost"):
        await waiter
    with pytest.raises(PeerError, match="connection lost"):
        await box.receive(0, SID, 2, 30.0)


async def test_loopback_party_dying_mid_protocol_raises_on_the_others() -> None:
    network = LoopbackNetwork()
    views = share(as_ring(np.arange(10)))

    async def one(i: int) -> int:
        async with Party(network.parties[i], timeout_s=30.0).session(SID) as s:
            for rounds in range(1000):
                if i == 2 and rounds == 3:
                    network.kill(2)
                    return rounds
                await arith.mul(s, views[i], views[i])
        return -1

    results = await asyncio.wait_for(
        asyncio.gather(*(one(i) for i in range(3)), return_exceptions=True), 5.0)
    assert results[2] == 3
    for survivor in results[:2]:
        assert isinstance(survivor, PeerError) and "party 2" in str(survivor)


async def test_loopback_transcript_records_what_each_party_received() -> None:
    """``record`` keeps a copy of every delivery: the payload as sent, even when the sender
    reuses its buffer afterwards (the transcript is what the receiver got)."""
    network = LoopbackNetwork()
    transcript = network.record()

    async def program(s: Session) -> None:
        step = s.next_step()
        if s.party == 0:
            buffer = as_ring([1, 2, 3])
            await s.send(2, buffer, step)
            buffer[:] = 0
        elif s.party == 2:
            assert (await s.recv_ring(0, step, (3,))).tolist() == [1, 2, 3]

    await run_local(program, network=network)
    ring = [d.payload for d in transcript if isinstance(d.payload, np.ndarray)]
    assert [(d.sender, d.receiver, d.step) for d in transcript if d.step > 1] == [(0, 2, 2)]
    assert [r.tolist() for r in ring] == [[1, 2, 3]]
    # the session's key agreement (step 1): each party to both neighbours
    assert sorted((d.sender, d.receiver) for d in transcript if d.step == 1) == [
        (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]


async def test_loopback_silent_peer_times_out() -> None:
    async def program(s: Session) -> None:
        if s.party == 1:
            await asyncio.sleep(5)  # never sends
            return
        await arith.open_(s, AShare(s.party, as_ring([1]), as_ring([2])))

    with pytest.raises(PeerError, match=r"within 0.2 s"):
        await asyncio.wait_for(run_local(program, timeout_s=0.2), 3.0)


@pytest.fixture
def deployment(tmp_path: Path) -> LocalDeployment:
    return LocalDeployment.create(tmp_path / "pki")


async def _connect_all(deployment: LocalDeployment, timeout_s: float = 10.0) -> list[Party]:
    return list(await asyncio.gather(*(deployment.connect(i, timeout_s=timeout_s)
                                       for i in range(3))))


async def test_tls_parties_multiply_and_count_bytes(deployment: LocalDeployment) -> None:
    parties = await _connect_all(deployment)
    try:
        values = as_ring(np.arange(1000) - 500)
        views = share(values)

        async def one(i: int) -> AShare:
            async with parties[i].session(SID) as s:
                return await arith.mul(s, views[i], views[i])

        products = await asyncio.gather(*(one(i) for i in range(3)))
        assert np.array_equal(reconstruct(*products), values * values)
        # key agreement (2 x 64 B) + one round of 1000 elements to one neighbour
        for p in parties:
            assert p.bytes_sent == 2 * (FRAME.size + 64) + FRAME.size + 8000
    finally:
        await asyncio.gather(*(p.close() for p in parties))


async def test_tls_peer_disconnect_raises_peer_error(deployment: LocalDeployment) -> None:
    parties = await _connect_all(deployment, timeout_s=20.0)
    try:
        await parties[2].close()
        x = AShare(0, as_ring([1]), as_ring([2]))
        with pytest.raises(PeerError, match="party 2"):
            async with parties[0].session(SID) as s:
                await arith.open_(s, x)
    finally:
        await asyncio.gather(*(p.close() for p in parties[:2]))


async def test_tls_refuses_a_certificate_from_another_ca(deployment: LocalDeployment,
                                                         tmp_path: Path) -> None:
    """A dialler whose certificate is not from the deployment CA never becomes a peer."""
    rogue = write_dev_pki(tmp_path / "rogue", ["node-2"], ca_name="rogue CA")["node-2"]
    listener = asyncio.create_task(TlsChannels.connect(0, deployment.peers, deployment.tls(0),
                                                       timeout_s=LISTEN_S))
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(deployment.tls(0).ca_cert))
    ctx.load_cert_chain(str(rogue.cert), str(rogue.key))
    await asyncio.sleep(0.2)
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", deployment.peers[0].port, ssl=ctx, server_hostname="node-0")
        writer.write(FRAME.pack(MAGIC, VERSION, 0, 2, bytes(16), 0, 0))
        await writer.drain()
        await reader.readexactly(1)  # TLS 1.3: the server's rejection arrives on first read
    with pytest.raises(PeerError, match="not connected"):
        await listener


async def test_tls_refuses_a_valid_certificate_with_the_wrong_identity(
        deployment: LocalDeployment, tmp_path: Path) -> None:
    """node-1's genuine certificate cannot claim to be party 2."""
    listener = asyncio.create_task(TlsChannels.connect(0, deployment.peers, deployment.tls(0),
                                                       timeout_s=LISTEN_S))
    ctx = deployment.tls(1).client_context()
    await asyncio.sleep(0.2)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", deployment.peers[0].port, ssl=ctx, server_hostname="node-0")
    writer.write(FRAME.pack(MAGIC, VERSION, 0, 2, bytes(16), 0, 0))
    await writer.drain()
    assert await reader.read(1) == b""  # closed by the listener
    writer.close()
    with pytest.raises(PeerError, match="not connected"):
        await listener


async def test_tls_dialler_rejects_a_listener_from_another_ca(deployment: LocalDeployment,
                                                              tmp_path: Path) -> None:
    ca_cert, ca_key = make_ca("impostor CA")
    cert, key = issue_cert(ca_cert, ca_key, "node-0")
    for name, data in (("ca.pem", ca_cert), ("node-0.pem", cert), ("node-0.key", key)):
        (tmp_path / name).write_bytes(data)
    impostor = NodeTls(tmp_path / "ca.pem", tmp_path / "node-0.pem", tmp_path / "node-0.key")
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1",
                                        deployment.peers[0].port, ssl=impostor.server_context())
    try:
        with pytest.raises(PeerError, match="certificate of node-0 rejected"):
            await TlsChannels.connect(1, deployment.peers, deployment.tls(1), timeout_s=5.0)
    finally:
        server.close()


def test_missing_tls_material_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(TlsConfigError, match="not found"):
        NodeTls(tmp_path / "ca.pem", tmp_path / "c.pem", tmp_path / "k.pem").server_context()


async def test_peers_that_never_come_up_time_out(tmp_path: Path) -> None:
    peers = [PeerAddress("127.0.0.1", free_port(), f"node-{i}") for i in range(3)]
    pki = write_dev_pki(tmp_path, [p.name for p in peers])
    with pytest.raises(PeerError, match=r"peers \[0, 1\] not connected within 0.5 s"):
        await TlsChannels.connect(2, peers, pki["node-2"], timeout_s=0.5)


async def test_sessions_are_isolated_on_one_connection(deployment: LocalDeployment) -> None:
    parties = await _connect_all(deployment)
    try:
        values = [as_ring([1, 2, 3]), as_ring([10, 20, 30])]
        views = [share(v) for v in values]
        sids = [new_session_id(), new_session_id()]

        async def one(i: int, k: int) -> np.ndarray:
            async with parties[i].session(sids[k]) as s:
                return await arith.open_(s, views[k][i])

        # two sessions interleaved over the same persistent connections
        results = await asyncio.gather(*(one(i, k) for k in range(2) for i in range(3)))
        for k in range(2):
            for r in results[3 * k: 3 * k + 3]:
                assert np.array_equal(r, values[k])
    finally:
        await asyncio.gather(*(p.close() for p in parties))


async def test_message_that_arrived_before_the_peer_left_is_still_delivered() -> None:
    """A peer that sends its last message and closes at once: the message is not lost."""
    box = Mailbox()
    box.deliver(1, SID, 7, b"last words")
    box.fail(1, PeerError("connection lost", 1))
    assert await box.receive(1, SID, 7, 1.0) == b"last words"
    with pytest.raises(PeerError, match="connection lost"):
        await box.receive(1, SID, 8, 1.0)
