"""A data owner approves a request once it reached their node, denies, sets and revokes
standing policies, and deletes the site's dataset."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import pytest

from dic_connector.errors import UnexpectedStatus
from dic_connector.vocabulary import Decision, RequestStatus

from .conftest import Node


async def test_approval_waits_for_the_request_to_arrive(node: Node) -> None:
    alice, owner = node.researcher(), node.owner("tm")
    study = await alice.create_study("x")
    request_id = str(uuid.uuid4())
    approving = asyncio.create_task(owner.approve([request_id], timeout_s=10))
    await asyncio.sleep(0.3)  # the owner's node does not have it yet: 404, keep waiting
    await alice.submit(study, "count", [node.dataset_id], request_id=request_id)
    [approved] = await approving
    assert approved.status is RequestStatus.APPROVED
    assert [(a.site, a.decision) for a in approved.approvals] == [("tm", Decision.APPROVE)]


async def test_a_request_that_ended_cannot_be_approved(node: Node) -> None:
    alice, owner = node.researcher(), node.owner("tm")
    request_id = await alice.submit(await alice.create_study("x"), "count", [node.dataset_id])
    [denied] = await owner.approve(request_id, decision="deny")
    assert denied.status is RequestStatus.REJECTED
    with pytest.raises(UnexpectedStatus, match="is rejected on node-0"):
        await owner.approve(request_id)


async def test_standing_policies_and_deletion(node: Node) -> None:
    alice, owner = node.researcher(), node.owner("tm")
    policy = await owner.add_policy(["count"], ["*"], 5, dt.timedelta(days=1))
    assert policy.site == "tm" and policy.analyses == ("count",)
    assert [p.id for p in await owner.policies()] == [policy.id]
    study = await alice.create_study("x")
    covered = await alice.submit(study, "count", [node.dataset_id])
    seen = await alice.status(covered)
    assert seen is not None and seen.status is RequestStatus.APPROVED
    await owner.revoke_policy(policy.id)
    assert await owner.policies() == []
    assert await owner.delete_dataset(node.dataset_id) == 1
    assert [d.site for d in await alice.datasets()] == ["tr"]
