"""``POST /v1/uploads/{version}/supersede`` over mutual TLS: the owning site's connector erases
the dataset's older versions on this node, audited; other sites' connectors and people are
refused and nothing is erased."""

from __future__ import annotations

import json
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from dic_connector.node.api import create_app
from dic_connector.node.config import parse_config
from dic_connector.node.store.enums import VersionState
from dic_connector.node.store.unit_of_work import Store
from mpc.local import free_port
from mpc.tls import NodeTls, write_dev_pki

from .conftest import MANIFEST, SHARE_MARKER, Node


@dataclass
class TlsNode:
    """The seeded node served over TLS (connector calls need a client certificate)."""

    node: Node
    url: str
    pki: dict[str, NodeTls]

    async def call(self, method: str, path: str, cert: str | None,
                   headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        """``method path`` with ``cert``'s client certificate (or none); status and body."""
        if cert is None:
            ctx = ssl.create_default_context(cafile=str(self.pki["node-0"].ca_cert))
        else:
            ctx = self.pki[cert].client_context()
        async with aiohttp.ClientSession() as session, session.request(
                method, self.url + path, ssl=ctx, server_hostname="node-0",
                headers=headers or {}) as response:
            return response.status, dict(await response.json(content_type=None))


@pytest.fixture
async def tls_node(node: Node, tmp_path: Path) -> AsyncIterator[TlsNode]:
    pki = write_dev_pki(tmp_path / "pki", ["node-0", "connector.tm", "connector.tr"])
    config = parse_config({"node_index": 0,
                           "database_url": f"sqlite+aiosqlite:///{tmp_path / 'node.db'}"})
    runner = web.AppRunner(create_app(config, store=node.store))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=pki["node-0"].server_context(
        require_client_cert=False)).start()
    try:
        yield TlsNode(node, f"https://127.0.0.1:{port}", pki)
    finally:
        await runner.cleanup()


async def _version(store: Store, dataset_id: uuid.UUID, *, commit: bool = True) -> uuid.UUID:
    async with store.unit_of_work() as uow:
        version = await uow.versions.create(dataset_id, MANIFEST, 24)
        for column in (c["name"] for c in MANIFEST["columns"]):
            await uow.versions.add_blob(version.id, column, SHARE_MARKER)
        if commit:
            await uow.versions.commit(version.id)
        return version.id


async def _states(store: Store, *versions: uuid.UUID) -> list[VersionState]:
    async with store.unit_of_work() as uow:
        return [(await uow.versions.get(v)).state for v in versions]


async def _supersessions(store: Store) -> list[tuple[str, str, dict[str, Any]]]:
    async with store.unit_of_work() as uow:
        return [(e.actor, e.object, json.loads(e.details)) for e in await uow.audit.entries()
                if e.action == "version.supersede"]


async def test_the_sites_connector_erases_older_versions_audited_once(
        tls_node: TlsNode) -> None:
    node = tls_node.node
    first, current = node.version_id, await _version(node.store, node.dataset_id)
    stale = await _version(node.store, node.dataset_id, commit=False)  # numbered after current

    status, body = await tls_node.call("POST", f"/v1/uploads/{current}/supersede",
                                       "connector.tm")
    assert (status, body) == (200, {"version_id": str(current), "versions_erased": 1})
    assert await _states(node.store, first, current, stale) == [
        VersionState.DELETED, VersionState.COMMITTED, VersionState.RECEIVING]
    assert await _supersessions(node.store) == [
        ("connector:tm", f"version:{current}",
         {"dataset": str(node.dataset_id), "versions_erased": 1, "erased": [str(first)]})]

    # a retry confirms with nothing more to erase, and audits nothing new
    status, body = await tls_node.call("POST", f"/v1/uploads/{current}/supersede",
                                       "connector.tm")
    assert (status, body) == (200, {"version_id": str(current), "versions_erased": 0})
    assert len(await _supersessions(node.store)) == 1


async def test_other_sites_connector_people_and_uncommitted_versions_are_refused(
        tls_node: TlsNode) -> None:
    node = tls_node.node
    first, current = node.version_id, await _version(node.store, node.dataset_id)
    path = f"/v1/uploads/{current}/supersede"

    status, body = await tls_node.call("POST", path, "connector.tr")
    assert (status, body["detail"]) == (404, f"upload {current} not found")
    for who in ("alice", "owner_tm", "admin"):  # a person's token is not a certificate
        status, body = await tls_node.call("POST", path, None, node.auth(who))
        assert status == 401, who
        assert body["detail"] == "this operation needs a connector's TLS client certificate"

    receiving = await _version(node.store, node.dataset_id, commit=False)
    status, body = await tls_node.call("POST", f"/v1/uploads/{receiving}/supersede",
                                       "connector.tm")
    assert status == 409
    assert body["detail"] == (f"dataset version {receiving} is receiving; only a committed "
                              "version supersedes older ones")
    status, _ = await tls_node.call("POST", f"/v1/uploads/{uuid.uuid4()}/supersede",
                                    "connector.tm")
    assert status == 404

    assert await _states(node.store, first, current, receiving) == [
        VersionState.COMMITTED, VersionState.COMMITTED, VersionState.RECEIVING]
    assert await _supersessions(node.store) == []
