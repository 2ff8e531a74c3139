"""Connector -> three nodes over mutual TLS, two-phase commit: all or nothing."""

from __future__ import annotations

import asyncio
import ssl
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from dic_connector.connector.upload import Uploader
from dic_connector.errors import UploadError
from dic_connector.node.api import create_app
from dic_connector.node.config import parse_config
from dic_connector.node.store import migrate
from dic_connector.node.store.enums import VersionState
from dic_connector.node.store.unit_of_work import Store
from dic_connector.trust.keyring import NodeKeyring
from mpc.ring import to_signed
from mpc.sharing import AShare, reconstruct
from mpc.tls import NodeTls, issue_cert

from .conftest import MANIFEST, Cluster, table


async def test_upload_commits_on_all_nodes_and_shares_reconstruct(cluster: Cluster) -> None:
    plain = table()
    handed = plain.copy()
    version_id = await cluster.uploader().upload("pilot_adrenal", handed, MANIFEST)
    assert not handed.any()  # the plaintext was wiped after sharing
    versions = await cluster.versions(version_id)
    assert [v.state for v in versions] == [VersionState.COMMITTED] * 3
    for j, column in enumerate(c["name"] for c in MANIFEST["columns"]):
        views = []
        for i, store in enumerate(cluster.stores):
            async with store.unit_of_work() as uow:
                data = await uow.versions.read_blob(version_id, column)
            views.append(AShare.from_bytes(i, data, len(plain)))
        assert list(to_signed(reconstruct(*views))) == list(plain[:, j])
        assert not np.array_equal(to_signed(views[0].a), plain[:, j])


async def test_missing_column_on_one_node_aborts_everywhere(cluster: Cluster,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    uploader = cluster.uploader()
    original = Uploader._send_columns

    async def flaky(self: Uploader, session: Any, node: int, base: str, columns: list[str],
                    pairs: list[list[bytes]]) -> None:
        if node == 2:
            columns, pairs = columns[:-1], pairs[:-1]  # node 2 never gets 'bed10'
        await original(self, session, node, base, columns, pairs)

    monkeypatch.setattr(Uploader, "_send_columns", flaky)
    version_id = uuid.uuid4()
    with pytest.raises(UploadError, match=r"node-2: POST /v1/uploads/.*/prepare answered 409"):
        await uploader.upload("pilot_adrenal", table(), MANIFEST, version_id=version_id)
    versions = await cluster.versions(version_id)
    assert [v.state for v in versions] == [VersionState.DELETED] * 3
    for store in cluster.stores:
        async with store.unit_of_work() as uow:
            assert await uow.versions.stored_columns(version_id) == []


async def test_dead_node_aborts_and_leaves_nothing_visible(cluster: Cluster) -> None:
    await cluster.runners[1].cleanup()
    version_id = uuid.uuid4()
    with pytest.raises(UploadError, match="node-1"):
        await cluster.uploader().upload("pilot_adrenal", table(), MANIFEST,
                                        version_id=version_id)
    for i in (0, 2):
        async with cluster.stores[i].unit_of_work() as uow:
            dataset = await uow.datasets.by_name("tm", "pilot_adrenal")
            assert dataset is not None
            assert await uow.versions.latest_committed(dataset.id) is None
            assert (await uow.versions.get(version_id)).state is VersionState.DELETED


async def test_unregistered_site_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    ca = cluster.pki["node-0"].ca_cert
    cert, key = issue_cert(ca.read_bytes(), (ca.parent / "ca.key").read_bytes(), "connector.xx")
    (tmp_path / "xx.pem").write_bytes(cert)
    (tmp_path / "xx.key").write_bytes(key)
    uploader = Uploader(cluster.endpoints, NodeTls(ca, tmp_path / "xx.pem", tmp_path / "xx.key"),
                        "xx", timeout_s=10)
    with pytest.raises(UploadError, match="site 'xx' is not registered"):
        await uploader.upload("cohort", table(), MANIFEST)


async def test_connector_of_another_site_and_people_are_refused(cluster: Cluster) -> None:
    with pytest.raises(UploadError, match="a connector may upload only its own site"):
        await Uploader(cluster.endpoints, cluster.pki["connector.tr"], "tm",
                       timeout_s=10).upload("pilot_adrenal", table(), MANIFEST)
    # a node certificate is not a connector certificate; no certificate at all is refused too
    for cert in ("node-1", None):
        ctx = ssl.create_default_context(cafile=str(cluster.pki["node-0"].ca_cert))
        if cert:
            ctx.load_cert_chain(str(cluster.pki[cert].cert), str(cluster.pki[cert].key))
        async with aiohttp.ClientSession() as session, session.put(
                f"{cluster.endpoints[0].url}/v1/uploads/{uuid.uuid4()}", ssl=ctx,
                server_hostname="node-0", json={}) as response:
            assert response.status == 401


async def test_abandoned_upload_is_erased_by_the_node(tmp_path: Path) -> None:
    """A connector that dies after sending half a version: the node erases it on its own."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'node.db'}"
    await migrate.upgrade(url)
    store = Store.open(url, NodeKeyring.generate("node-0"))
    async with store.unit_of_work() as uow:
        await uow.sites.add("tm", "LMU Munich")
        dataset = await uow.datasets.create("tm", "pilot_adrenal")
        version = await uow.versions.create(dataset.id, MANIFEST, 24)
        await uow.versions.add_blob(version.id, "age", bytes(16 * 24))
    config = parse_config({"node_index": 0, "database_url": url, "stale_upload_after_s": 0,
                           "cleanup_interval_s": 1})
    runner = web.AppRunner(create_app(config, store=store))
    await runner.setup()  # starts the cleanup task
    try:
        for _ in range(100):
            async with store.unit_of_work() as uow:
                state = (await uow.versions.get(version.id)).state
            if state is VersionState.DELETED:
                break
            await asyncio.sleep(0.05)
        assert state is VersionState.DELETED
        async with store.unit_of_work() as uow:
            assert await uow.versions.stored_columns(version.id) == []
            entries = await uow.audit.entries()
            assert any(e.action == "upload.expire" for e in entries)
    finally:
        await runner.cleanup()
        await store.close()
