"""Dataset ids are derived from (site, name), so all three nodes agree on them; a deleted
dataset created again is revived under the same id, its old versions staying erased."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dic_connector.errors import ConflictError, NotFoundError
from dic_connector.node.store import migrate
from dic_connector.node.store.enums import VersionState
from dic_connector.node.store.models import ShareBlob
from dic_connector.node.store.unit_of_work import Store
from dic_connector.trust.dataset_ids import DATASET_NAMESPACE, dataset_uuid
from dic_connector.trust.keyring import NodeKeyring

MANIFEST = {"columns": [{"name": "age"}]}
SHARES = b"share-pair" * 8


def test_dataset_uuid_is_uuid5_of_site_and_name_under_the_fixed_namespace() -> None:
    expected = uuid.uuid5(DATASET_NAMESPACE, "tm/pilot_adrenal")
    assert dataset_uuid("tm", "pilot_adrenal") == expected
    assert expected.version == 5
    # pinned: changing the namespace would rename every dataset of every deployment
    assert str(DATASET_NAMESPACE) == "81b88101-ab34-4731-9d17-a35f35aed790"
    assert str(expected) == "d6b2084d-79ea-5e3c-a4fb-9bcf46e88374"
    assert dataset_uuid("tm", "pilot_adrenal") == dataset_uuid("tm", "pilot_adrenal")
    ids = {dataset_uuid(s, n) for s in ("tm", "tr") for n in ("pilot_adrenal", "cohort", "a/b")}
    assert len(ids) == 6


async def test_three_nodes_give_a_dataset_the_same_id(tmp_path: Path) -> None:
    ids = []
    for i in range(3):
        url = f"sqlite+aiosqlite:///{tmp_path / f'node-{i}.db'}"
        await migrate.upgrade(url)
        store = Store.open(url, NodeKeyring.generate(f"node-{i}"))
        try:
            async with store.unit_of_work() as uow:
                await uow.sites.add("tm", "LMU Munich")
                await uow.sites.add("tr", "Gemelli Rome")
                if i == 1:  # another dataset first on one node changes nothing
                    await uow.datasets.create("tr", "pilot_adrenal")
                ids.append((await uow.datasets.create("tm", "pilot_adrenal")).id)
            async with store.unit_of_work() as uow:
                found = await uow.datasets.by_name("tm", "pilot_adrenal")
                assert found is not None and found.id == ids[-1]
        finally:
            await store.close()
    assert ids == [dataset_uuid("tm", "pilot_adrenal")] * 3


async def _upload(store: Store, dataset_id: uuid.UUID) -> uuid.UUID:
    async with store.unit_of_work() as uow:
        version = await uow.versions.create(dataset_id, MANIFEST, row_count=5)
        await uow.versions.add_blob(version.id, "age", SHARES)
        await uow.versions.commit(version.id)
        return version.id


async def test_deleted_dataset_is_revived_under_its_id_old_versions_stay_erased(
        store: Store) -> None:
    async with store.unit_of_work() as uow:
        await uow.sites.add("lmu", "LMU")
        dataset_id = (await uow.datasets.create("lmu", "cohort")).id
    old = [await _upload(store, dataset_id), await _upload(store, dataset_id)]
    async with store.unit_of_work() as uow:
        assert sorted(await uow.versions.delete_dataset(dataset_id)) == sorted(old)
        assert await uow.versions.delete_dataset(dataset_id) == []  # idempotent
        tombstone = await uow.datasets.find(dataset_id)
        assert tombstone is not None and tombstone.deleted_at is not None
        assert await uow.datasets.by_name("lmu", "cohort") is None

    async with store.unit_of_work() as uow:
        revived = await uow.datasets.create("lmu", "cohort")
        assert revived.id == dataset_id and revived.deleted_at is None
        with pytest.raises(ConflictError, match="dataset 'cohort' of site 'lmu' already exists"):
            await uow.datasets.create("lmu", "cohort")  # a live dataset is not created twice
    new = await _upload(store, dataset_id)

    async with store.unit_of_work() as uow:
        assert (await uow.datasets.get(dataset_id)).name == "cohort"
        versions = await uow.versions.all(dataset_id)
        assert [(v.id, v.number, v.state) for v in versions] == [
            (old[0], 1, VersionState.DELETED), (old[1], 2, VersionState.DELETED),
            (new, 3, VersionState.COMMITTED)]
        assert all(v.key_id is None and v.wrapped_key is None for v in versions[:2])
        for version_id in old:
            assert await uow.versions.stored_columns(version_id) == []
            with pytest.raises(NotFoundError):
                await uow.versions.read_blob(version_id, "age")
        assert await uow.session.scalar(
            select(func.count()).select_from(ShareBlob)
            .where(ShareBlob.version_id.in_(old))) == 0
        assert await uow.versions.read_blob(new, "age") == SHARES
        latest = await uow.versions.latest_committed(dataset_id)
        assert latest is not None and latest.id == new


async def test_unknown_dataset_lookup_and_deletion(store: Store) -> None:
    async with store.unit_of_work() as uow:
        assert await uow.datasets.find(dataset_uuid("lmu", "never")) is None
        with pytest.raises(NotFoundError):
            await uow.versions.delete_dataset(dataset_uuid("lmu", "never"))
