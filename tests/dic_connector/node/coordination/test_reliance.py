"""A plan's checks read what the request relies on once (:class:`~.verify.Reliance`): the
standing policies of a site without an approval are read once per check, and what they
require (k, their signatures) still holds."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy import event, update

from dic_connector.errors import NotReady
from dic_connector.node.coordination.verify import check_plan, propose
from dic_connector.node.store.models import StandingPolicy
from dic_connector.vocabulary import RequestStatus

from .conftest import Cluster, cohort


async def test_a_check_reads_the_policies_once_and_enforces_their_k_and_signature(
        cluster: Cluster) -> None:
    await cluster.upload("tm", cohort(24, seed=3))
    await cluster.owners["tm"].add_policy(["count"], ["*"], 7, dt.timedelta(days=1), at=1)
    await cluster.stop_node(0)  # no coordinator: the request stays startable on node 1
    request_id = uuid.UUID(await cluster.submit(1, "count", {}, sites=("tm",)))
    store, config = cluster.stores[1], cluster.configs[1]
    async with store.unit_of_work() as uow:
        assert (await uow.requests.get(request_id)).status in (
            RequestStatus.APPROVED, RequestStatus.WAITING_FOR_NODES)
        plan = await propose(uow, config, request_id)
    assert plan.min_cell_count == 7  # the policy's k, above the node's 5

    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        statements.append(sql)

    event.listen(store.engine.sync_engine, "before_cursor_execute", record)
    try:
        async with store.unit_of_work() as uow:
            await check_plan(uow, config, plan)
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", record)
    assert sum("FROM standing_policies" in s for s in statements) == 1  # was 3
    assert sum("FROM approvals" in s for s in statements) == 1

    low = type(plan)(plan.request_id, plan.versions, 5, plan.ledger, 5, plan.perturbation)
    async with store.unit_of_work() as uow:
        with pytest.raises(NotReady, match="minimum cell count 5 is below the 7"):
            await check_plan(uow, config, low)
    async with store.unit_of_work() as uow:  # a policy whose signature no longer verifies
        await uow.session.execute(update(StandingPolicy).values(signature=bytes(64)))
    async with store.unit_of_work() as uow:
        with pytest.raises(NotReady, match="node-1: policy: Ed25519 signature does not"):
            await check_plan(uow, config, plan)
