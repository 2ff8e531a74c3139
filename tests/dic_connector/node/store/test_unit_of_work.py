"""The unit of work commits an action and its audit entry together, or neither; a reading
unit of work neither writes nor waits for writers."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from dic_connector.node.store.unit_of_work import Store


async def test_unit_of_work_commits_or_rolls_back_everything(store: Store) -> None:
    with pytest.raises(RuntimeError):
        async with store.unit_of_work() as uow:
            await uow.sites.add("lmu", "LMU")
            await uow.audit.append("admin", "site.add", "site:lmu")
            raise RuntimeError("boom")
    async with store.unit_of_work() as uow:
        assert await uow.sites.all() == []
        assert (await uow.audit.head()).seq == 0
        await uow.sites.add("lmu", "LMU")
        await uow.audit.append("admin", "site.add", "site:lmu")
    async with store.unit_of_work() as uow:
        assert [s.id for s in await uow.sites.all()] == ["lmu"]
        assert (await uow.audit.head()).seq == 1
        assert await uow.session.scalar(text("SELECT count(*) FROM audit_log")) == 1


async def test_a_reading_unit_of_work_sees_committed_state_and_cannot_write(store: Store) -> None:
    async with store.unit_of_work() as uow:
        await uow.sites.add("lmu", "LMU")
    async with store.reading() as uow:
        assert uow.read_only
        sites = await uow.sites.all()
    assert [s.name for s in sites] == ["LMU"]  # loaded objects stay usable after it ends
    with pytest.raises(DBAPIError, match=r"(?i)read.only|readonly"):
        async with store.reading() as uow:
            await uow.sites.add("tr", "Rome")
    async with store.unit_of_work() as uow:  # the pooled connection writes again
        await uow.sites.add("tr", "Rome")
    async with store.reading() as uow:
        assert sorted(s.id for s in await uow.sites.all()) == ["lmu", "tr"]


async def test_audit_entries_cannot_be_appended_in_a_reading_unit_of_work(store: Store) -> None:
    with pytest.raises(RuntimeError, match="read-only"):
        async with store.reading() as uow:
            await uow.audit.append("admin", "site.add", "site:lmu")
    async with store.reading() as uow:
        assert (await uow.audit.head()).seq == 0


async def test_a_reader_does_not_wait_for_an_open_writer(store: Store) -> None:
    """While a writer holds its transaction open, a reader runs to the end and sees the
    state before the writer's commit (WAL snapshot / PostgreSQL READ COMMITTED)."""
    async with store.unit_of_work() as uow:
        await uow.sites.add("lmu", "LMU")
    writer_may_commit = asyncio.Event()
    seen: list[list[str]] = []

    async def writer() -> None:
        async with store.unit_of_work() as uow:
            await uow.sites.add("tr", "Rome")
            await writer_may_commit.wait()

    async def reader() -> None:
        async with store.reading() as uow:
            seen.append(sorted(s.id for s in await uow.sites.all()))
        writer_may_commit.set()

    task = asyncio.create_task(writer())
    await asyncio.sleep(0)  # let the writer take its lock first
    await asyncio.wait_for(reader(), timeout=60)
    await task
    assert seen == [["lmu"]]
    async with store.reading() as uow:
        assert sorted(s.id for s in await uow.sites.all()) == ["lmu", "tr"]


async def test_writers_queue_in_arrival_order_and_all_commit(store: Store) -> None:
    order: list[int] = []

    async def write(i: int) -> None:
        async with store.unit_of_work() as uow:
            order.append(i)
            await uow.sites.add(f"s{i}", f"site {i}")
            await asyncio.sleep(0)
            await uow.audit.append("admin", "site.add", f"site:s{i}")

    await asyncio.gather(*(write(i) for i in range(8)))
    async with store.reading() as uow:
        assert len(await uow.sites.all()) == 8
        assert (await uow.audit.head()).seq == 8
        assert (await uow.audit.verify_chain()).broken_seq is None
    if store.engine.dialect.name == "sqlite":
        assert order == list(range(8))  # FIFO through the store's writer lock
