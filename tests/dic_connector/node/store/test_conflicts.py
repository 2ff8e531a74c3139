"""Constraint violations become ConflictError naming the object; the transaction stays usable."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from dic_connector.errors import ConflictError
from dic_connector.node.store.unit_of_work import Store
from dic_connector.trust.canonical import canonical_json
from dic_connector.vocabulary import Role

MANIFEST = {"columns": [{"name": "age"}]}


async def test_duplicates_and_dangling_references_are_conflicts(store: Store) -> None:
    async with store.unit_of_work() as uow:
        await uow.sites.add("lmu", "LMU")
        with pytest.raises(ConflictError, match="site 'lmu' already exists") as info:
            await uow.sites.add("lmu", "LMU again")
        assert info.value.__cause__ is None and info.value.__suppress_context__
        await uow.datasets.create("lmu", "cohort")
        with pytest.raises(ConflictError, match="dataset 'cohort' of site 'lmu'"):
            await uow.datasets.create("lmu", "cohort")
        with pytest.raises(ConflictError, match="site 'nowhere'"):
            await uow.datasets.create("nowhere", "cohort")
        with pytest.raises(ConflictError, match="missing object"):
            await uow.studies.create("t", created_by=uuid.uuid4())
        researcher = await uow.principals.create("rita", Role.RESEARCHER)
        with pytest.raises(ConflictError, match="principal 'rita'"):
            await uow.principals.create("rita", Role.ADMIN)
        await uow.audit.append("admin", "still.usable", "tx")  # the transaction survived
    async with store.unit_of_work() as uow:
        assert [s.name for s in await uow.sites.all()] == ["LMU"]
        assert (await uow.principals.get(researcher.id)).name == "rita"
        assert (await uow.audit.verify_chain()).ok


async def test_a_forwarded_request_arriving_twice_is_a_conflict(store: Store) -> None:
    async with store.unit_of_work() as uow:
        await uow.sites.add("lmu", "LMU")
        dataset = await uow.datasets.create("lmu", "cohort")
        rita = await uow.principals.create("rita", Role.RESEARCHER)
        study = await uow.studies.create("s", rita.id)
    request_id = uuid.uuid4()
    for attempt in range(2):
        async with store.unit_of_work() as uow:
            create = uow.requests.create(study.id, rita.id, "count", "1", {}, [dataset.id],
                                         canonical_json({}), request_id=request_id)
            if attempt == 0:
                await create
            else:
                with pytest.raises(ConflictError, match=f"analysis request {request_id}"):
                    await create
    async with store.unit_of_work() as uow:
        assert [r.id for r in await uow.requests.all()] == [request_id]
        with pytest.raises(ConflictError, match="missing object"):
            await uow.requests.create(study.id, rita.id, "count", "1", {}, [uuid.uuid4()],
                                      canonical_json({}))


async def test_concurrent_versions_of_one_dataset_get_distinct_numbers(store: Store) -> None:
    async with store.unit_of_work() as uow:
        await uow.sites.add("lmu", "LMU")
        dataset_id = (await uow.datasets.create("lmu", "cohort")).id

    async def one() -> int:
        async with store.unit_of_work() as uow:
            return (await uow.versions.create(dataset_id, MANIFEST, row_count=1)).number

    assert sorted(await asyncio.gather(*(one() for _ in range(10)))) == list(range(1, 11))


async def test_rows_inserted_without_a_savepoint_end_the_transaction(store: Store) -> None:
    """Audit entries, results and ledger entries go in without a savepoint (two statements
    each, on every request): a conflict there is the same ConflictError, unchained, and the
    unit of work rolls back everything it wrote."""
    async with store.unit_of_work() as uow:
        await uow.sites.add("lmu", "LMU")
        dataset = await uow.datasets.create("lmu", "cohort")
        rita = await uow.principals.create("rita", Role.RESEARCHER)
        study = await uow.studies.create("s", rita.id)
        request = await uow.requests.create(study.id, rita.id, "count", "1", {}, [dataset.id],
                                            canonical_json({}))
        await uow.results.store(request.id, {"n": 1})
    with pytest.raises(ConflictError, match=f"result of request {request.id}") as info:
        async with store.unit_of_work() as uow:
            await uow.audit.append("admin", "before.the.conflict", "tx")
            await uow.results.store(request.id, {"n": 2})
    assert info.value.__cause__ is None and info.value.__suppress_context__
    async with store.reading() as uow:
        assert (await uow.results.for_request(request.id)).aggregates == {"n": 1}
        assert "before.the.conflict" not in [e.action for e in await uow.audit.entries()]
        assert (await uow.audit.verify_chain()).ok
    async with store.unit_of_work() as uow:  # and the chain goes on from its head
        for i in range(3):
            await uow.audit.append("admin", f"after.{i}", "tx")
    async with store.reading() as uow:
        assert (await uow.audit.verify_chain()).ok
        assert [e.action for e in await uow.audit.entries()][-3:] == [
            "after.0", "after.1", "after.2"]
