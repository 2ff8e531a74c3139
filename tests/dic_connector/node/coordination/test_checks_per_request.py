"""How often each node checks a plan for one request (issue 17: each check is a dozen
statements and a signature verification per signed object, so a repeated one is CPU the
nodes spend per request): the coordinator once, right before it marks the request
running; each peer at ``prepare`` and at ``start``, the second in the transaction that
marks it running. Every node still checks on its own before it computes."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from dic_connector.errors import NotReady
from dic_connector.node.api import peer
from dic_connector.node.config import NodeConfig
from dic_connector.node.coordination import coordinator, verify
from dic_connector.node.store.unit_of_work import UnitOfWork

from .conftest import Cluster, cohort


async def test_each_node_checks_a_plan_as_often_as_it_must_and_no_more(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    await cluster.upload("tm", cohort(20, seed=3))
    checks: Counter[tuple[str, bool]] = Counter()
    real = verify.check_plan

    async def counted(uow: UnitOfWork, config: NodeConfig, plan: verify.Plan,
                      enforce_min_cell_count: bool = True) -> Any:
        checks[(config.node_id, enforce_min_cell_count)] += 1
        return await real(uow, config, plan, enforce_min_cell_count)

    real_rules = verify.check_plan_rules

    async def counted_rules(uow: UnitOfWork, config: NodeConfig, plan: verify.Plan,
                            enforce_min_cell_count: bool = True) -> Any:
        checks[(config.node_id, enforce_min_cell_count)] += 1
        return await real_rules(uow, config, plan, enforce_min_cell_count)

    monkeypatch.setattr(coordinator, "check_plan", counted)
    monkeypatch.setattr(peer, "check_plan", counted)
    monkeypatch.setattr(peer, "check_plan_rules", counted_rules)  # prepare's
    request_id = await cluster.approved_count(0, 0)
    results = await cluster.completed_everywhere(request_id)
    assert results[0]["n"] == results[1]["n"] == results[2]["n"] == 20
    # prepare does not enforce k (it answers with the k it requires); start does
    assert checks == {("node-0", True): 1, ("node-1", False): 1, ("node-1", True): 1,
                      ("node-2", False): 1, ("node-2", True): 1}, checks
    for store in cluster.stores:  # and each node audited its start once
        async with store.reading() as uow:
            actions = [e.action for e in await uow.audit.entries(obj=f"request:{request_id}")]
        assert actions.count("compute.start") == 1 and "result.open" in actions, actions


async def test_a_coordinator_that_refuses_its_own_plan_starts_nothing(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """The coordinator's one check comes after the peers prepared: refusing there leaves
    the request waiting with its reason, and no node started."""
    await cluster.upload("tm", cohort(20, seed=4))
    real = verify.check_plan

    async def refusing(uow: UnitOfWork, config: NodeConfig, plan: verify.Plan,
                       enforce_min_cell_count: bool = True) -> Any:
        if config.node_index == 0:
            raise NotReady("node-0: refused for the test")
        return await real(uow, config, plan, enforce_min_cell_count)

    monkeypatch.setattr(coordinator, "check_plan", refusing)
    request_id = await cluster.approved_count(0, 0)
    # a peer a replication message behind (its approval on the way) is the first reason
    # shown; node-0 retries at once, and then refuses on its own check
    for _ in range(600):
        state = await cluster.wait_for(0, request_id, {"waiting_for_nodes"})
        if "refused for the test" in (state.status_reason or ""):
            break
        await asyncio.sleep(0.05)
    assert "refused for the test" in (state.status_reason or ""), state.status_reason
    for store in cluster.stores:
        async with store.reading() as uow:
            actions = {e.action for e in await uow.audit.entries(obj=f"request:{request_id}")}
        assert "compute.start" not in actions, actions
    monkeypatch.setattr(coordinator, "check_plan", real)
    results = await cluster.completed_everywhere(request_id)
    assert results[2]["n"] == 20
