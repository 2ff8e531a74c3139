"""The release ledger: entries sealed per node and request, read back, and a head the
three nodes can compare."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from sqlalchemy import select

from dic_connector.errors import ConflictError, EncryptionError
from dic_connector.node.store.models import LedgerEntry
from dic_connector.node.store.unit_of_work import Store
from dic_connector.trust.canonical import canonical_json
from dic_connector.vocabulary import Role
from mpc.sharing import AShare


async def _request(store: Store) -> uuid.UUID:
    async with store.unit_of_work() as uow:
        if not [s for s in await uow.sites.all() if s.id == "lmu"]:
            await uow.sites.add("lmu", "LMU")
        researcher = await uow.principals.create(f"rita-{uuid.uuid4().hex[:6]}", Role.RESEARCHER)
        dataset = await uow.datasets.create("lmu", f"cohort-{uuid.uuid4().hex[:6]}")
        study = await uow.studies.create("s", researcher.id)
        request = await uow.requests.create(study.id, researcher.id, "frequency", "1",
                                            {"column": "g"}, [dataset.id], canonical_json({}))
    return request.id


async def test_an_entry_reads_back_sealed_and_the_head_tracks_the_entries(store: Store) -> None:
    async with store.unit_of_work() as uow:
        empty = await uow.ledger.head()
    assert empty.entries == 0
    request_id = await _request(store)
    counts = AShare(0, np.arange(6, dtype=np.uint64).reshape(2, 3),
                    np.arange(6, 12, dtype=np.uint64).reshape(2, 3))
    async with store.unit_of_work() as uow:
        await uow.ledger.add(request_id, ["g=a", "g=b", "g__missing"], [True, False, True],
                             ["d1/v1", "d2/v2"], counts.to_bytes())
    async with store.unit_of_work() as uow:
        (record,) = await uow.ledger.all()
        head = await uow.ledger.head()
        row = await uow._session.scalar(select(LedgerEntry))
    assert (record.request_id, record.cells, record.opened, record.contributors) == (
        request_id, ("g=a", "g=b", "g__missing"), (True, False, True), ("d1/v1", "d2/v2"))
    back = AShare.from_bytes(0, record.shares, 6).reshape(2, 3)
    assert np.array_equal(back.a, counts.a) and np.array_equal(back.b, counts.b)
    assert row is not None and counts.to_bytes() not in row.ciphertext  # sealed at rest
    assert head.entries == 1 and head != empty and len(head.digest) == 64
    with pytest.raises(ConflictError):
        async with store.unit_of_work() as uow:
            await uow.ledger.add(request_id, ["g=a"], [True], ["d1/v1"], b"\0" * 16)


async def test_an_entry_moved_to_another_request_does_not_decrypt(store: Store) -> None:
    first, second = await _request(store), await _request(store)
    async with store.unit_of_work() as uow:
        await uow.ledger.add(first, ["g=a"], [True], ["d1/v1"], b"\1" * 16)
        await uow.ledger.add(second, ["g=a"], [True], ["d1/v1"], b"\2" * 16)
    async with store.unit_of_work() as uow:
        rows = list(await uow._session.scalars(select(LedgerEntry)))
        a, b = rows
        a.ciphertext, b.ciphertext = b.ciphertext, a.ciphertext
        a.nonce, b.nonce = b.nonce, a.nonce
    with pytest.raises(EncryptionError):
        async with store.unit_of_work() as uow:
            await uow.ledger.all()
