"""Concurrent writers on one node: approvals of the same request arriving at once (one from
the owner, one relayed by a peer), status changes and audit appends queue instead of
deadlocking, on SQLite and on PostgreSQL (where a lock-order inversion once surfaced as
"deadlock detected" in the end-to-end test)."""

from __future__ import annotations

import asyncio
import base64
import uuid

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dic_connector.node.coordination.verify import reevaluate
from dic_connector.node.store.unit_of_work import Store
from dic_connector.trust import payloads, signing
from dic_connector.vocabulary import RequestStatus, Role

ROUNDS = 8


async def test_simultaneous_approvals_and_status_changes_never_deadlock(store: Store) -> None:
    keys = {site: Ed25519PrivateKey.generate() for site in ("tm", "tr")}
    async with store.unit_of_work() as uow:
        researcher = await uow.principals.create("alice", Role.RESEARCHER)
        for site in keys:
            await uow.sites.add(site, site)
            await uow.principals.create(f"owner_{site}", Role.DATA_OWNER, site,
                                        signing.public_key_bytes(keys[site]))
        datasets = [(await uow.datasets.create(site, "d")).id for site in keys]
        study = await uow.studies.create("s", researcher.id)
    request_ids = []
    async with store.unit_of_work() as uow:
        for _ in range(ROUNDS):
            req = await uow.requests.create(study.id, researcher.id, "count", "1", {},
                                            datasets, "{}")
            request_ids.append(req.id)

    async def approve(request_id: uuid.UUID, site: str) -> None:
        body = signing.signed(payloads.approval(request_id, site), keys[site])
        async with store.unit_of_work() as uow:
            signer = await uow.principals.by_name(f"owner_{site}")
            assert signer is not None
            await uow.approvals.add(request_id, signer, body["payload"],
                                    base64.b64decode(body["signature"]))
            await uow.audit.append(f"data_owner:{signer.name}", "approval.approve",
                                   f"request:{request_id}")
            await reevaluate(uow, request_id, "test")

    async def touch(request_id: uuid.UUID) -> None:  # the coordinator looking at it
        async with store.unit_of_work() as uow:
            await reevaluate(uow, request_id, "node:node-0")

    await asyncio.gather(*(call for request_id in request_ids for call in (
        approve(request_id, "tm"), approve(request_id, "tr"), touch(request_id))))
    async with store.unit_of_work() as uow:
        statuses = {(await uow.requests.get(r)).status for r in request_ids}
        verified = await uow.audit.verify_chain()
    assert statuses == {RequestStatus.APPROVED}
    assert verified.ok and verified.entries >= 3 * ROUNDS
