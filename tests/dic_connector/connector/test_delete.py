"""A connector withdraws its site's dataset on all three nodes: every version's shares are
erased on each, each audits it; other sites are refused; a node that is down is named and a
later retry completes the erasure."""

from __future__ import annotations

import ssl
import uuid

import aiohttp
import pytest
from sqlalchemy import func, select

from dic_connector.connector.upload import Uploader
from dic_connector.errors import CoordinationError, NotFoundError
from dic_connector.node.store.enums import VersionState
from dic_connector.node.store.models import ShareBlob
from dic_connector.node.store.unit_of_work import Store
from dic_connector.trust.dataset_ids import dataset_uuid

from .conftest import MANIFEST, Cluster, Traffic, table

DATASET = "pilot_adrenal"


async def _uploaded(cluster: Cluster, site: str = "tm", times: int = 1) -> list[uuid.UUID]:
    return [await cluster.uploader(site).upload(DATASET, table(seed=k), MANIFEST)
            for k in range(times)]


async def _blobs(store: Store, versions: list[uuid.UUID]) -> int:
    async with store.unit_of_work() as uow:
        return int(await uow.session.scalar(
            select(func.count()).select_from(ShareBlob)
            .where(ShareBlob.version_id.in_(versions))) or 0)


async def _deletions(store: Store) -> list[tuple[str, str, str]]:
    async with store.unit_of_work() as uow:
        return [(e.actor, e.object, e.details) for e in await uow.audit.entries()
                if e.action == "dataset.delete"]


async def _assert_erased(store: Store, dataset_id: uuid.UUID,
                         versions: list[uuid.UUID]) -> None:
    assert await _blobs(store, versions) == 0
    async with store.unit_of_work() as uow:
        for version_id in versions:
            version = await uow.versions.get(version_id)
            assert version.state is VersionState.DELETED
            assert version.key_id is None and version.wrapped_key is None
        with pytest.raises(NotFoundError):
            await uow.datasets.get(dataset_id)
        assert await uow.datasets.by_name("tm", DATASET) is None


async def test_delete_erases_every_version_on_all_nodes_and_audits(cluster: Cluster) -> None:
    versions = await _uploaded(cluster, times=2)
    other = await _uploaded(cluster, site="tr")
    dataset_id = dataset_uuid("tm", DATASET)
    for store in cluster.stores:  # the same dataset id on every node
        async with store.unit_of_work() as uow:
            assert (await uow.versions.get(versions[0])).dataset_id == dataset_id
        assert await _blobs(store, versions) == 6

    await cluster.uploader().delete_dataset(DATASET)

    for store in cluster.stores:
        await _assert_erased(store, dataset_id, versions)
        assert await _deletions(store) == [
            ("connector:tm", f"dataset:{dataset_id}", '{"site":"tm","versions_erased":2}')]
        # site tr's dataset of the same name is untouched
        assert await _blobs(store, other) == 3
        async with store.unit_of_work() as uow:
            assert (await uow.versions.get(other[0])).state is VersionState.COMMITTED

    # idempotent: deleting again succeeds everywhere and audits nothing new
    await cluster.uploader().delete_dataset(DATASET)
    for store in cluster.stores:
        assert len(await _deletions(store)) == 1


async def test_upload_again_after_delete_revives_the_same_id(cluster: Cluster) -> None:
    old = await _uploaded(cluster)
    await cluster.uploader().delete_dataset(DATASET)
    new = await _uploaded(cluster)
    for store in cluster.stores:
        async with store.unit_of_work() as uow:
            dataset = await uow.datasets.get(dataset_uuid("tm", DATASET))
            latest = await uow.versions.latest_committed(dataset.id)
            assert latest is not None and (latest.id, latest.number) == (new[0], 2)
            assert (await uow.versions.get(old[0])).state is VersionState.DELETED
        assert await _blobs(store, old) == 0 and await _blobs(store, new) == 3
        async with store.unit_of_work() as uow:
            assert [(e.action, e.object) for e in await uow.audit.entries()
                    if e.action.startswith("dataset.")] == [
                (action, f"dataset:{dataset.id}")
                for action in ("dataset.create", "dataset.delete", "dataset.revive")]


async def test_deleting_a_dataset_never_uploaded_is_a_no_op(cluster: Cluster) -> None:
    await cluster.uploader().delete_dataset("never_uploaded")
    for store in cluster.stores:
        assert await _deletions(store) == []


async def test_another_sites_connector_is_refused_and_nothing_is_deleted(
        cluster: Cluster) -> None:
    versions = await _uploaded(cluster)
    path = f"/v1/uploads/datasets/{dataset_uuid('tm', DATASET)}"
    traffic = Traffic(cluster)
    async with aiohttp.ClientSession(middlewares=(traffic,)) as session:
        # site tr's certificate, claiming to act for tm: tm's dataset id, refused by every node
        impostor = Uploader(cluster.endpoints, cluster.pki["connector.tr"], "tm", timeout_s=10,
                            commit_retries=3, retry_delay_s=0.05, session=session)
        with pytest.raises(CoordinationError,
                           match=r"not confirmed erased on \['node-0', 'node-1', 'node-2'\].*"
                                 r"answered 403: a connector may delete only its own site's"):
            await impostor.delete_dataset(DATASET)
    # each node asked once although three attempts were allowed: a refusal is final
    assert sorted(traffic.sent) == [(i, "DELETE", path) for i in range(3)]
    for store in cluster.stores:
        assert await _blobs(store, versions) == 3
        assert await _deletions(store) == []
        async with store.unit_of_work() as uow:
            assert (await uow.versions.get(versions[0])).state is VersionState.COMMITTED

    # a node certificate, or none, is not a connector's
    for cert in ("node-1", None):
        ctx = ssl.create_default_context(cafile=str(cluster.pki["node-0"].ca_cert))
        if cert:
            ctx.load_cert_chain(str(cluster.pki[cert].cert), str(cluster.pki[cert].key))
        async with aiohttp.ClientSession() as session, session.delete(
                cluster.endpoints[0].url + path, ssl=ctx, server_hostname="node-0") as response:
            assert response.status == 401
    assert await _blobs(cluster.stores[0], versions) == 3


async def test_node_down_is_named_and_a_retry_completes_the_erasure(cluster: Cluster) -> None:
    versions = await _uploaded(cluster, times=2)
    dataset_id = dataset_uuid("tm", DATASET)
    await cluster.stop(1)
    with pytest.raises(CoordinationError,
                       match=r"not confirmed erased on \['node-1'\] "
                             r"\(erased on \['node-0', 'node-2'\]"):
        await cluster.uploader().delete_dataset(DATASET)
    for i in (0, 2):
        await _assert_erased(cluster.stores[i], dataset_id, versions)
    assert await _blobs(cluster.stores[1], versions) == 6  # node 1 still holds its shares

    await cluster.start(1)
    await cluster.uploader().delete_dataset(DATASET)
    for store in cluster.stores:
        await _assert_erased(store, dataset_id, versions)
        assert [d[2] for d in await _deletions(store)] == [
            '{"site":"tm","versions_erased":2}']  # one deletion audited per node
