"""Dataset versions: state machine, visibility, cleanup, deletion, encryption at rest."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy import text

from dic_connector.errors import ConflictError, EncryptionError, NotFoundError
from dic_connector.node.store.enums import VersionState
from dic_connector.node.store.unit_of_work import Store
from dic_connector.trust.keyring import NodeKeyring

MANIFEST = {"columns": [{"name": "age", "type": "numeric"}, {"name": "sex", "type": "categorical"}]}
AGE = b"\x01\x02\x03\x04\x05\x06\x07\x08" * 64
SEX = b"share-pair-of-sex-column" * 16


async def _dataset(store: Store) -> uuid.UUID:
    async with store.unit_of_work() as uow:
        await uow.sites.add("lmu", "LMU Klinikum")
        return (await uow.datasets.create("lmu", "cohort")).id


async def _uploaded(store: Store, dataset_id: uuid.UUID, *, commit: bool = True) -> uuid.UUID:
    async with store.unit_of_work() as uow:
        version = await uow.versions.create(dataset_id, MANIFEST, row_count=64)
        await uow.versions.add_blob(version.id, "age", AGE)
        await uow.versions.add_blob(version.id, "sex", SEX)
        if commit:
            await uow.versions.commit(version.id)
        return version.id


async def test_committed_version_round_trips_its_blobs(store: Store) -> None:
    dataset_id = await _dataset(store)
    version_id = await _uploaded(store, dataset_id)
    async with store.unit_of_work() as uow:
        latest = await uow.versions.latest_committed(dataset_id)
        assert latest is not None and latest.id == version_id
        assert latest.state is VersionState.COMMITTED and latest.number == 1
        assert latest.committed_at is not None and latest.committed_at.tzinfo is not None
        assert await uow.versions.read_blob(version_id, "age") == AGE
        assert await uow.versions.read_blob(version_id, "sex") == SEX


async def test_half_written_version_is_invisible(store: Store) -> None:
    dataset_id = await _dataset(store)
    committed = await _uploaded(store, dataset_id)
    async with store.unit_of_work() as uow:
        half = await uow.versions.create(dataset_id, MANIFEST, row_count=70)
        await uow.versions.add_blob(half.id, "age", AGE)
    async with store.unit_of_work() as uow:
        latest = await uow.versions.latest_committed(dataset_id)
        assert latest is not None and latest.id == committed
        with pytest.raises(NotFoundError, match="not committed"):
            await uow.versions.read_blob(half.id, "age")
        assert await uow.versions.missing_columns(half.id) == ["sex"]
        with pytest.raises(ConflictError, match="columns without shares: sex"):
            await uow.versions.commit(half.id)


async def test_failed_upload_transaction_leaves_nothing(store: Store) -> None:
    dataset_id = await _dataset(store)
    version_id = uuid.uuid4()
    with pytest.raises(ConflictError):
        async with store.unit_of_work() as uow:
            await uow.versions.create(dataset_id, MANIFEST, row_count=1, version_id=version_id)
            await uow.versions.add_blob(version_id, "age", AGE)
            await uow.versions.add_blob(version_id, "weight", AGE)  # not in the manifest
    async with store.unit_of_work() as uow:
        with pytest.raises(NotFoundError):
            await uow.versions.get(version_id)
        assert await uow.versions.latest_committed(dataset_id) is None


async def test_blobs_only_while_receiving_and_commit_is_idempotent(store: Store) -> None:
    dataset_id = await _dataset(store)
    version_id = await _uploaded(store, dataset_id)
    async with store.unit_of_work() as uow:
        assert (await uow.versions.commit(version_id)).state is VersionState.COMMITTED
        with pytest.raises(ConflictError, match="only while it is receiving"):
            await uow.versions.add_blob(version_id, "age", b"late")


async def test_resending_a_column_replaces_it(store: Store) -> None:
    dataset_id = await _dataset(store)
    async with store.unit_of_work() as uow:
        version = await uow.versions.create(dataset_id, MANIFEST, row_count=64)
        await uow.versions.add_blob(version.id, "age", b"first try")
        await uow.versions.add_blob(version.id, "age", AGE)
        await uow.versions.add_blob(version.id, "sex", SEX)
        await uow.versions.commit(version.id)
        assert await uow.versions.read_blob(version.id, "age") == AGE


async def test_latest_committed_is_the_newest_and_numbers_increase(store: Store) -> None:
    dataset_id = await _dataset(store)
    first = await _uploaded(store, dataset_id)
    second = await _uploaded(store, dataset_id)
    await _uploaded(store, dataset_id, commit=False)
    async with store.unit_of_work() as uow:
        latest = await uow.versions.latest_committed(dataset_id)
        assert latest is not None and latest.id == second
        assert [v.number for v in await uow.versions.all(dataset_id)] == [1, 2, 3]
        await uow.versions.delete(second)
    async with store.unit_of_work() as uow:
        latest = await uow.versions.latest_committed(dataset_id)
        assert latest is not None and latest.id == first


async def test_cleanup_removes_stale_receiving_versions_only(store: Store) -> None:
    dataset_id = await _dataset(store)
    committed = await _uploaded(store, dataset_id)
    stale = await _uploaded(store, dataset_id, commit=False)
    async with store.unit_of_work() as uow:
        later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
        assert await uow.versions.cleanup_stale_receiving(dt.timedelta(hours=3), now=later) == []
        assert await uow.versions.cleanup_stale_receiving(dt.timedelta(hours=1), now=later) \
            == [stale]
    async with store.unit_of_work() as uow:
        assert (await uow.versions.get(stale)).state is VersionState.DELETED
        assert await uow.versions.stored_columns(stale) == []
        assert (await uow.versions.get(committed)).state is VersionState.COMMITTED
        assert await uow.versions.read_blob(committed, "age") == AGE
        with pytest.raises(ConflictError, match="deleted"):
            await uow.versions.commit(stale)


async def test_a_prepared_version_is_frozen_invisible_and_never_expires(store: Store) -> None:
    """The vote (phase one) is durable: a version this node voted ready on is not erased by
    the stale-upload cleanup however old it is, takes no more blobs, is read by nothing
    until committed, and commits (or aborts) later."""
    dataset_id = await _dataset(store)
    prepared = await _uploaded(store, dataset_id, commit=False)
    voted = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    async with store.unit_of_work() as uow:
        version = await uow.versions.prepare(prepared, now=voted)
        assert version.state is VersionState.PREPARED and version.prepared_at == voted
        assert (await uow.versions.prepare(prepared)).prepared_at == voted  # idempotent
        assert [v.id for v in await uow.versions.in_doubt()] == [prepared]
    async with store.unit_of_work() as uow:
        later = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
        assert await uow.versions.cleanup_stale_receiving(dt.timedelta(0), now=later) == []
        with pytest.raises(ConflictError, match="only while it is receiving"):
            await uow.versions.add_blob(prepared, "age", b"late")
        assert await uow.versions.latest_committed(dataset_id) is None
        with pytest.raises(NotFoundError, match="not committed"):
            await uow.versions.read_blob(prepared, "age")
    async with store.unit_of_work() as uow:
        assert (await uow.versions.get(prepared)).state is VersionState.PREPARED
        assert (await uow.versions.commit(prepared)).state is VersionState.COMMITTED
        assert await uow.versions.read_blob(prepared, "age") == AGE
        assert await uow.versions.in_doubt() == []
        assert (await uow.versions.prepare(prepared)).state is VersionState.COMMITTED


async def test_prepare_needs_every_column_and_a_live_version(store: Store) -> None:
    dataset_id = await _dataset(store)
    async with store.unit_of_work() as uow:
        version = await uow.versions.create(dataset_id, MANIFEST, row_count=64)
        await uow.versions.add_blob(version.id, "age", AGE)
        with pytest.raises(ConflictError, match="columns without shares: sex"):
            await uow.versions.prepare(version.id)
        await uow.versions.add_blob(version.id, "sex", SEX)
        await uow.versions.prepare(version.id)
        assert (await uow.versions.delete(version.id)).state is VersionState.DELETED  # abort
        assert await uow.versions.stored_columns(version.id) == []
        with pytest.raises(ConflictError, match="deleted and cannot be prepared"):
            await uow.versions.prepare(version.id)


async def test_delete_erases_rows_and_key(store: Store) -> None:
    dataset_id = await _dataset(store)
    version_id = await _uploaded(store, dataset_id)
    async with store.unit_of_work() as uow:
        await uow.versions.delete(version_id)
    async with store.unit_of_work() as uow:
        count = await uow.session.scalar(text("SELECT count(*) FROM share_blobs"))
        key = (await uow.session.execute(
            text("SELECT key_id, wrapped_key, state FROM dataset_versions"))).one()
        assert count == 0
        assert tuple(key) == (None, None, "deleted")
        assert await uow.versions.latest_committed(dataset_id) is None
        assert (await uow.versions.delete(version_id)).state is VersionState.DELETED


async def test_delete_dataset_erases_every_version(store: Store) -> None:
    dataset_id = await _dataset(store)
    first = await _uploaded(store, dataset_id)
    second = await _uploaded(store, dataset_id, commit=False)
    async with store.unit_of_work() as uow:
        assert sorted(await uow.versions.delete_dataset(dataset_id)) == sorted([first, second])
    async with store.unit_of_work() as uow:
        assert await uow.session.scalar(text("SELECT count(*) FROM share_blobs")) == 0
        assert await uow.datasets.all("lmu") == []
        with pytest.raises(NotFoundError):
            await uow.datasets.get(dataset_id)


async def _erased(store: Store, version_id: uuid.UUID) -> bool:
    async with store.unit_of_work() as uow:
        version = await uow.versions.get(version_id)
        return (version.state is VersionState.DELETED and version.key_id is None
                and version.wrapped_key is None
                and await uow.versions.stored_columns(version_id) == [])


async def test_erase_older_erases_older_committed_and_receiving_keeps_newer(
        store: Store) -> None:
    dataset_id = await _dataset(store)
    async with store.unit_of_work() as uow:
        other = (await uow.datasets.create("lmu", "other")).id
    elsewhere = await _uploaded(store, other)
    first = await _uploaded(store, dataset_id)
    stale = await _uploaded(store, dataset_id, commit=False)
    current = await _uploaded(store, dataset_id)
    newer = await _uploaded(store, dataset_id)
    arriving = await _uploaded(store, dataset_id, commit=False)
    async with store.unit_of_work() as uow:
        assert await uow.versions.erase_older(current) == [first, stale]
    assert await _erased(store, first) and await _erased(store, stale)
    async with store.unit_of_work() as uow:
        for kept in (current, newer, elsewhere):
            assert (await uow.versions.get(kept)).state is VersionState.COMMITTED
            assert await uow.versions.read_blob(kept, "age") == AGE
        assert (await uow.versions.get(arriving)).state is VersionState.RECEIVING
        assert await uow.versions.stored_columns(arriving) == ["age", "sex"]
        latest = await uow.versions.latest_committed(dataset_id)
        assert latest is not None and latest.id == newer
        await uow.versions.commit(arriving)  # an upload under way still completes


async def test_erase_older_is_idempotent(store: Store) -> None:
    dataset_id = await _dataset(store)
    first = await _uploaded(store, dataset_id)
    second = await _uploaded(store, dataset_id)
    third = await _uploaded(store, dataset_id)
    async with store.unit_of_work() as uow:
        await uow.versions.delete(first)  # erased before: not erased (or counted) again
    async with store.unit_of_work() as uow:
        assert await uow.versions.erase_older(third) == [second]
    async with store.unit_of_work() as uow:
        assert await uow.versions.erase_older(third) == []
        assert await uow.versions.erase_older(third) == []
    assert await _erased(store, first) and await _erased(store, second)
    async with store.unit_of_work() as uow:
        assert await uow.versions.read_blob(third, "sex") == SEX


async def test_erase_older_refuses_unless_the_version_is_committed(store: Store) -> None:
    dataset_id = await _dataset(store)
    first = await _uploaded(store, dataset_id)
    receiving = await _uploaded(store, dataset_id, commit=False)
    deleted = await _uploaded(store, dataset_id)
    async with store.unit_of_work() as uow:
        await uow.versions.delete(deleted)
    for version_id, state in ((receiving, "receiving"), (deleted, "deleted")):
        with pytest.raises(ConflictError, match=f"{version_id} is {state}; only a committed"):
            async with store.unit_of_work() as uow:
                await uow.versions.erase_older(version_id)
    with pytest.raises(NotFoundError):
        async with store.unit_of_work() as uow:
            await uow.versions.erase_older(uuid.uuid4())
    async with store.unit_of_work() as uow:  # nothing was erased by the refused calls
        assert await uow.versions.read_blob(first, "age") == AGE
        assert (await uow.versions.get(receiving)).state is VersionState.RECEIVING


async def test_stored_bytes_are_not_the_plaintext(store: Store) -> None:
    dataset_id = await _dataset(store)
    await _uploaded(store, dataset_id)
    async with store.unit_of_work() as uow:
        rows = (await uow.session.execute(text("SELECT nonce, ciphertext FROM share_blobs"))).all()
    assert len(rows) == 2
    for nonce, ciphertext in rows:
        assert len(nonce) == 12
        assert AGE[:16] not in bytes(ciphertext) and SEX[:16] not in bytes(ciphertext)
        assert len(ciphertext) in (len(AGE) + 16, len(SEX) + 16)


async def test_blob_moved_to_another_column_or_version_fails(store: Store) -> None:
    dataset_id = await _dataset(store)
    one = await _uploaded(store, dataset_id)
    two = await _uploaded(store, dataset_id)
    async with store.unit_of_work() as uow:  # swap the two columns of version one
        for old, new in (("age", "tmp"), ("sex", "age"), ("tmp", "sex")):
            await uow.session.execute(text(
                'UPDATE share_blobs SET "column" = :new WHERE "column" = :old AND version_id = :v'
            ), {"new": new, "old": old, "v": _db_uuid(store, one)})
    async with store.unit_of_work() as uow:
        with pytest.raises(EncryptionError, match="column 'age'"):
            await uow.versions.read_blob(one, "age")
    async with store.unit_of_work() as uow:  # move version two's age blob into version one
        await uow.session.execute(text("DELETE FROM share_blobs WHERE version_id = :v"),
                                  {"v": _db_uuid(store, one)})
        await uow.session.execute(text(
            "UPDATE share_blobs SET version_id = :one WHERE version_id = :two"),
            {"one": _db_uuid(store, one), "two": _db_uuid(store, two)})
    async with store.unit_of_work() as uow:
        with pytest.raises(EncryptionError, match="does not authenticate"):
            await uow.versions.read_blob(one, "age")


async def test_wrong_node_key_fails_clearly(store: Store) -> None:
    dataset_id = await _dataset(store)
    version_id = await _uploaded(store, dataset_id)
    impostor = Store(store.engine, NodeKeyring.generate("node-0"))
    async with impostor.unit_of_work() as uow:
        with pytest.raises(EncryptionError, match="does not decrypt under node key 'k1'"):
            await uow.versions.read_blob(version_id, "age")
    unknown = Store(store.engine, NodeKeyring.generate("node-0", key_id="k9"))
    async with unknown.unit_of_work() as uow:
        with pytest.raises(EncryptionError, match="key id 'k1' is not in"):
            await uow.versions.read_blob(version_id, "age")
    other_node = Store(store.engine, NodeKeyring("node-1", store.keyring.keys, "k1"))
    async with other_node.unit_of_work() as uow:
        with pytest.raises(EncryptionError):
            await uow.versions.read_blob(version_id, "age")


async def test_key_rotation_rewraps_and_keeps_blobs_readable(store: Store) -> None:
    dataset_id = await _dataset(store)
    version_id = await _uploaded(store, dataset_id)
    rotated = NodeKeyring("node-0", {**store.keyring.keys, "k2": bytes(range(32))}, "k2")
    async with Store(store.engine, rotated).unit_of_work() as uow:
        assert await uow.versions.rotate_keys() == 1
        assert (await uow.versions.get(version_id)).key_id == "k2"
    only_new = NodeKeyring("node-0", {"k2": bytes(range(32))}, "k2")
    async with Store(store.engine, only_new).unit_of_work() as uow:
        assert await uow.versions.read_blob(version_id, "age") == AGE


def test_manifest_is_validated() -> None:
    from dic_connector.node.store.datasets import manifest_columns

    assert manifest_columns(MANIFEST) == ["age", "sex"]
    bad: dict[str, Any]
    for bad in ({}, {"columns": []}, {"columns": [{"name": ""}]},
                {"columns": [{"name": "a"}, {"name": "a"}]}):
        with pytest.raises(ConflictError, match="manifest"):
            manifest_columns(bad)


def _db_uuid(store: Store, value: uuid.UUID) -> object:
    """How ``Uuid()`` is stored: native uuid on PostgreSQL, 32 hex characters on SQLite."""
    return value.hex if store.engine.dialect.name == "sqlite" else value
