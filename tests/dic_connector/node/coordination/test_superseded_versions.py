"""Analyses and superseded dataset versions: when the connector erases a dataset's older
versions (``POST /v1/uploads/{version}/supersede``), a request that has not started runs on
the new version, a plan still pinning an erased version is refused by every node that holds
the erasure, and a computation that reaches an erased version fails with that reason: never
computed on erased shares, never a server error."""

from __future__ import annotations

import json
import os
import uuid

import pytest

from dic_connector.errors import NotFoundError, NotReady
from dic_connector.node.coordination.computation import compute
from dic_connector.node.coordination.verify import Plan, check_plan
from dic_connector.trust.dataset_ids import dataset_uuid
from dic_connector.vocabulary import RequestStatus

from .conftest import MANIFEST, Cluster, cohort

DATASET = "pilot"


async def _two_versions(cluster: Cluster, superseded: bool = True
                        ) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """tm's dataset with v1 (30 rows) and v2 (24 rows), v1 erased on every node."""
    uploader = cluster.uploader("tm")
    v1 = await uploader.upload(DATASET, cohort(30, seed=1), MANIFEST)
    v2 = await uploader.upload(DATASET, cohort(24, seed=2), MANIFEST)
    dataset_id = cluster.datasets["tm"] = dataset_uuid("tm", DATASET)
    if superseded:
        await uploader.erase_older(v2)
    return dataset_id, v1, v2


async def _plan(cluster: Cluster, node: int, request_id: str, dataset_id: uuid.UUID,
                version_id: uuid.UUID) -> Plan:
    async with cluster.stores[node].unit_of_work() as uow:
        return Plan(uuid.UUID(request_id), {dataset_id: version_id}, 5, await uow.ledger.head())


async def test_a_plan_pinning_an_erased_version_is_refused_and_the_request_runs_on_the_new(
        cluster: Cluster) -> None:
    dataset_id, v1, v2 = await _two_versions(cluster)
    await cluster.stop_node(0)  # the coordinator: the request waits, its plan not yet made
    request_id = await cluster.submit(1, "count", {}, sites=("tm",))
    await cluster.approve(1, request_id, "tm")
    await cluster.wait_for(1, request_id, {"waiting_for_nodes"})
    await cluster.wait_for(2, request_id, {"waiting_for_nodes"})

    for node in (1, 2):  # as a coordinator that proposed before the erasure would ask
        old = await _plan(cluster, node, request_id, dataset_id, v1)
        new = await _plan(cluster, node, request_id, dataset_id, v2)
        async with cluster.stores[node].unit_of_work() as uow:
            with pytest.raises(NotReady, match=f"node-{node}: version {v1} is deleted, "
                                               "not committed"):
                await check_plan(uow, cluster.configs[node], old)
            await check_plan(uow, cluster.configs[node], new)

    await cluster.start_node(0)
    results = await cluster.completed_everywhere(request_id)
    assert [r["n"] for r in results] == [24, 24, 24]  # v2's rows, not v1's 30
    for store in cluster.stores:
        async with store.unit_of_work() as uow:
            assert await uow.requests.pinned_versions(uuid.UUID(request_id)) == {dataset_id: v2}


async def test_a_computation_reaching_an_erased_version_fails_with_the_reason(
        cluster: Cluster) -> None:
    dataset_id, v1, v2 = await _two_versions(cluster, superseded=False)
    request_id = await cluster.submit(0, "count", {}, sites=("tm",))
    await cluster.wait_for(1, request_id, {"awaiting_approval"})
    plan = await _plan(cluster, 1, request_id, dataset_id, v1)
    store = cluster.stores[1]
    async with store.unit_of_work() as uow:  # as if node 1 had started on v1 just before
        for status in (RequestStatus.APPROVED, RequestStatus.RUNNING):
            await uow.requests.set_status(plan.request_id, status, "test")
        await uow.requests.pin_versions(plan.request_id, plan.versions)

    await cluster.uploader("tm").erase_older(v2)
    await compute(store, cluster.configs[1], plan, os.urandom(16))

    async with store.unit_of_work() as uow:
        req = await uow.requests.get(plan.request_id)
        assert req.status is RequestStatus.FAILED
        assert req.status_reason == (f"computation failed on node-1: dataset version {v1} "
                                     "is not committed")
        [failure] = [e for e in await uow.audit.entries(obj=f"request:{request_id}")
                     if e.action == "compute.fail"]
        assert json.loads(failure.details) == {"reason": req.status_reason.split(": ", 1)[1]}
        with pytest.raises(NotFoundError):
            await uow.results.for_request(plan.request_id)
    state = await cluster.status(1, request_id)  # the researcher sees why, through the API
    assert state is not None and state.status == "failed"
    assert f"dataset version {v1} is not committed" in (state.status_reason or "")
