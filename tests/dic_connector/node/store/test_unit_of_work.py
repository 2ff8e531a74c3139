"""The unit of work commits an action and its audit entry together, or neither."""

from __future__ import annotations

import pytest
from sqlalchemy import text

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
