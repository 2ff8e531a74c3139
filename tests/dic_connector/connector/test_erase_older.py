"""A connector erases a dataset's superseded versions on all three nodes: after v2 commits,
v1's shares and keys are gone everywhere and v2 is intact; a node that is down is named and a
later call completes the erasure; an upload alone never erases anything."""

from __future__ import annotations

import uuid

import aiohttp
import pytest
from sqlalchemy import func, select

from dic_connector.connector.upload import Uploader
from dic_connector.errors import CoordinationError
from dic_connector.node.store.enums import VersionState
from dic_connector.node.store.models import ShareBlob
from dic_connector.node.store.unit_of_work import Store
from dic_connector.trust.dataset_ids import dataset_uuid

from .conftest import MANIFEST, Cluster, Traffic, table

DATASET = "pilot_adrenal"


async def _blobs(store: Store, version_id: uuid.UUID) -> int:
    async with store.unit_of_work() as uow:
        return int(await uow.session.scalar(
            select(func.count()).select_from(ShareBlob)
            .where(ShareBlob.version_id == version_id)) or 0)


async def _assert_erased(store: Store, version_id: uuid.UUID) -> None:
    assert await _blobs(store, version_id) == 0
    async with store.unit_of_work() as uow:
        version = await uow.versions.get(version_id)
        assert version.state is VersionState.DELETED
        assert version.key_id is None and version.wrapped_key is None


async def _assert_intact(store: Store, version_id: uuid.UUID) -> None:
    async with store.unit_of_work() as uow:
        version = await uow.versions.get(version_id)
        assert version.state is VersionState.COMMITTED
        latest = await uow.versions.latest_committed(version.dataset_id)
        assert latest is not None and latest.id == version_id
        for column in (c["name"] for c in MANIFEST["columns"]):
            assert len(await uow.versions.read_blob(version_id, column)) == 16 * 24


async def _supersessions(store: Store) -> list[str]:
    async with store.unit_of_work() as uow:
        return [e.details for e in await uow.audit.entries() if e.action == "version.supersede"]


async def test_erase_older_erases_v1_on_all_nodes_and_keeps_v2(cluster: Cluster) -> None:
    uploader = cluster.uploader()
    v1 = await uploader.upload(DATASET, table(seed=1), MANIFEST)
    v2 = await uploader.upload(DATASET, table(seed=2), MANIFEST)
    other = await cluster.uploader("tr").upload(DATASET, table(seed=3), MANIFEST)
    for store in cluster.stores:  # uploading v2 erased nothing: the caller decides
        assert await _blobs(store, v1) == 3
        assert await _supersessions(store) == []

    await uploader.erase_older(v2)

    for store in cluster.stores:
        await _assert_erased(store, v1)
        await _assert_intact(store, v2)
        await _assert_intact(store, other)  # another site's dataset of the same name
        assert await _supersessions(store) == [
            f'{{"dataset":"{dataset_uuid("tm", DATASET)}",'
            f'"erased":["{v1}"],"versions_erased":1}}']

    await uploader.erase_older(v2)  # idempotent: confirmed again, nothing new audited
    for store in cluster.stores:
        assert len(await _supersessions(store)) == 1


async def test_node_down_is_named_and_calling_again_completes_it(cluster: Cluster) -> None:
    uploader = cluster.uploader()
    v1 = await uploader.upload(DATASET, table(seed=1), MANIFEST)
    v2 = await uploader.upload(DATASET, table(seed=2), MANIFEST)
    await cluster.stop(2)
    with pytest.raises(CoordinationError,
                       match=rf"site 'tm' older than {v2} are not confirmed erased on "
                             r"\['node-2'\] \(erased on \['node-0', 'node-1'\];"
                             r".*call erase_older again"):
        await uploader.erase_older(v2)
    for i in (0, 1):
        await _assert_erased(cluster.stores[i], v1)
    assert await _blobs(cluster.stores[2], v1) == 3  # node 2 still holds its shares

    await cluster.start(2)
    await uploader.erase_older(v2)
    for store in cluster.stores:
        await _assert_erased(store, v1)
        await _assert_intact(store, v2)
        assert len(await _supersessions(store)) == 1  # one erasure audited per node


async def test_another_sites_connector_is_refused_once_per_node(cluster: Cluster) -> None:
    v1 = await cluster.uploader().upload(DATASET, table(seed=1), MANIFEST)
    v2 = await cluster.uploader().upload(DATASET, table(seed=2), MANIFEST)
    traffic = Traffic(cluster)
    async with aiohttp.ClientSession(middlewares=(traffic,)) as session:
        impostor = Uploader(cluster.endpoints, cluster.pki["connector.tr"], "tm", timeout_s=10,
                            commit_retries=3, retry_delay_s=0.05, session=session)
        with pytest.raises(CoordinationError,
                           match=r"not confirmed erased on \['node-0', 'node-1', 'node-2'\].*"
                                 rf"answered 404: upload {v2} not found"):
            await impostor.erase_older(v2)
    # a refusal is final: each node asked once although three attempts were allowed
    assert sorted(traffic.sent) == [(i, "POST", f"/v1/uploads/{v2}/supersede")
                                    for i in range(3)]
    for store in cluster.stores:
        assert await _blobs(store, v1) == 3
        assert await _supersessions(store) == []
