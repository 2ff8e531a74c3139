"""The peer client over an injected session: node-0 calls a real node-1 app over mutual TLS
through the caller's session, which the client never closes; and the peer ``start`` route
refuses a non-coordinator, a plan the node never prepared, and missing audit heads.

Self-contained (its own PKI, config and one node on 127.0.0.1) rather than built on this
folder's three-node cluster: one peer is all the client's transport needs.
"""

from __future__ import annotations

import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from dic_connector.errors import PeerRefused, PeerUnavailable
from dic_connector.node.api import create_app
from dic_connector.node.config import NodeConfig, parse_config
from dic_connector.node.coordination.peers import PeerClient
from dic_connector.node.store import migrate
from dic_connector.node.store.unit_of_work import Store
from dic_connector.trust.keyring import NodeKeyring
from mpc.local import free_port
from mpc.tls import NodeTls, write_dev_pki

NAMES = ["node-0", "node-1", "node-2"]


@dataclass
class OnePeer:
    """Configs of the three nodes; only node 1 is serving."""

    configs: list[NodeConfig]
    pki: dict[str, NodeTls]


@pytest.fixture
async def one_peer(tmp_path: Path) -> AsyncIterator[OnePeer]:
    pki = write_dev_pki(tmp_path / "pki", NAMES)
    ports = [free_port() for _ in NAMES]
    peers = [{"api_url": f"https://127.0.0.1:{port}", "mpc_host": "127.0.0.1",
              "mpc_port": free_port(), "name": name} for port, name in zip(ports, NAMES,
                                                                            strict=True)]
    configs = [parse_config({
        "node_index": i, "database_url": f"sqlite+aiosqlite:///{tmp_path / f'{name}.db'}",
        "listen_port": ports[i], "peers": peers, "coordination_interval_s": 60,
        "tls": {"ca_cert": str(pki[name].ca_cert), "cert": str(pki[name].cert),
                "key": str(pki[name].key)}}) for i, name in enumerate(NAMES)]
    await migrate.upgrade(configs[1].database_url)
    store = Store.open(configs[1].database_url, NodeKeyring.generate("node-1"))
    runner = web.AppRunner(create_app(configs[1], store=store))
    try:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", ports[1], ssl_context=pki["node-1"]
                          .server_context(require_client_cert=False)).start()
        yield OnePeer(configs, pki)
    finally:
        await runner.cleanup()
        await store.close()


async def test_injected_session_carries_every_call_and_stays_open(one_peer: OnePeer) -> None:
    sent: list[str] = []

    async def count(request: aiohttp.ClientRequest,
                    handler: aiohttp.ClientHandlerType) -> aiohttp.ClientResponse:
        sent.append(f"{request.method} {request.url.path}")
        return await handler(request)

    erase = f"/v1/peer/datasets/{uuid.uuid4()}/erase"
    status = f"/v1/peer/requests/{uuid.uuid4()}"
    async with aiohttp.ClientSession(middlewares=(count,)) as session:
        client = PeerClient(one_peer.configs[0], session=session)
        # no 'async with' needed: the session is already open and is the caller's
        assert await client.call(1, "POST", erase, {"site": "tm", "by": "owner_tm"}) == {
            "ok": True, "detail": "already erased"}
        async with client:
            with pytest.raises(PeerRefused) as refused:  # node-1's own answer: no such request
                await client.call(1, "GET", status)
            assert refused.value.status == 404
        assert not session.closed  # leaving 'async with' left it open
        await client.call(1, "POST", erase, {"site": "tm", "by": "owner_tm"})
        assert sent == [f"POST {erase}", f"GET {status}", f"POST {erase}"]

        # the peer API authorises by certificate only, and the session carries none: the
        # calls above were accepted because the client presents node-0's per request
        ca_only = ssl.create_default_context(cafile=str(one_peer.pki["node-0"].ca_cert))
        async with session.post(one_peer.configs[1].peers[1].api_url + erase, ssl=ca_only,
                                server_hostname="node-1",
                                json={"site": "tm", "by": "owner_tm"}) as response:
            assert response.status == 401


async def test_without_a_session_the_client_owns_one_for_the_span_of_async_with(
        one_peer: OnePeer) -> None:
    """The default is unchanged: the client opens its own session on entry, closes it on exit."""
    erase = f"/v1/peer/datasets/{uuid.uuid4()}/erase"
    body = {"site": "tm", "by": "owner_tm"}
    client = PeerClient(one_peer.configs[0])
    with pytest.raises(RuntimeError, match="outside 'async with'"):
        await client.call(1, "POST", erase, body)
    async with client:
        assert (await client.call(1, "POST", erase, body))["ok"] is True
    with pytest.raises(RuntimeError, match="outside 'async with'"):
        await client.call(1, "POST", erase, body)


def _start_body(request_heads: int = 3) -> dict[str, object]:
    head = {"seq": 0, "hash": "0" * 64}
    return {"versions": {str(uuid.uuid4()): str(uuid.uuid4())}, "min_cell_count": 5,
            "min_subset_size": 5, "ledger": {"entries": 0, "sha256": "0" * 64},
            "session_id": "ab" * 16,
            "audit_heads": {f"node-{i}": head for i in range(request_heads)}}


async def test_only_the_coordinator_starts_and_only_what_was_prepared(
        one_peer: OnePeer) -> None:
    start = f"/v1/peer/requests/{uuid.uuid4()}/start"
    async with PeerClient(one_peer.configs[2]) as other:
        with pytest.raises(PeerRefused) as refused:  # node-2 is a peer, not the coordinator
            await other.call(1, "POST", start, _start_body())
        assert refused.value.status == 403
        assert "only the coordinator (node-0)" in str(refused.value)
    async with PeerClient(one_peer.configs[0]) as coordinator:
        with pytest.raises(PeerRefused) as refused:  # node-1 never prepared this plan
            await coordinator.call(1, "POST", start, _start_body())
        assert refused.value.status == 409 and "prepared no plan" in str(refused.value)
        with pytest.raises(PeerRefused) as refused:  # every node's audit head, or nothing
            await coordinator.call(1, "POST", start, _start_body(request_heads=0))
        assert refused.value.status == 400


async def test_408_429_and_5xx_are_unavailable_other_4xx_refused_with_their_title(
        tmp_path: Path) -> None:
    """A peer that asks for time is retried; one that says no is not (its title is kept)."""
    pki = write_dev_pki(tmp_path / "pki", NAMES)
    port = free_port()
    peers = [{"api_url": f"https://127.0.0.1:{port}", "mpc_host": "127.0.0.1",
              "mpc_port": free_port(), "name": name} for name in NAMES]
    config = parse_config({
        "node_index": 0, "database_url": "sqlite://", "peers": peers,
        "tls": {"ca_cert": str(pki["node-0"].ca_cert), "cert": str(pki["node-0"].cert),
                "key": str(pki["node-0"].key)}})

    async def answer(request: web.Request) -> web.Response:
        status = int(request.match_info["status"])
        return web.json_response({"title": f"title {status}", "detail": "d"}, status=status)

    app = web.Application()
    app.router.add_post("/{status}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port,
                      ssl_context=pki["node-1"].server_context(require_client_cert=False)).start()
    try:
        async with PeerClient(config) as client:
            for status in (408, 429, 500, 503):
                with pytest.raises(PeerUnavailable) as unavailable:
                    await client.call(1, "POST", f"/{status}", {})
                assert unavailable.value.status == status and unavailable.value.connected
            for status in (400, 403, 404, 409, 422):
                with pytest.raises(PeerRefused) as refused:
                    await client.call(1, "POST", f"/{status}", {})
                assert (refused.value.status, refused.value.title) == (status, f"title {status}")
        async with PeerClient(replace(config, peers=(
                config.peers[0], replace(config.peers[1], api_url="https://127.0.0.1:1"),
                config.peers[2]))) as client:
            with pytest.raises(PeerUnavailable) as unreachable:
                await client.call(1, "POST", "/200", {})
            assert unreachable.value.status is None and not unreachable.value.connected
    finally:
        await runner.cleanup()
