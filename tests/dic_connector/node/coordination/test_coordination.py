"""A request submitted at one node is verified by all three and computed by all three, or
by none: the agreement, the waiting, and the refusals, against plaintext references."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import uuid
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select, update

from dic_connector.node.coordination.replication import announce
from dic_connector.node.store.models import Approval, AuditEntry, PeerMessage, ShareBlob
from dic_connector.trust import payloads, signing
from dic_connector.vocabulary import Decision, RequestStatus

from .conftest import Cluster, close_cluster, cohort, make_cluster


async def test_request_at_one_node_runs_on_all_three_and_matches_numpy(cluster: Cluster) -> None:
    tm, tr = cohort(30, seed=1), cohort(25, seed=2)
    await cluster.upload("tm", tm)
    await cluster.upload("tr", tr)
    request_id = await cluster.submit(1, "mean", {"column": "age"})
    # each owner approves at a different node; the approvals reach every node
    await cluster.approve(2, request_id, "tm")
    await cluster.approve(0, request_id, "tr")
    results = await cluster.completed_everywhere(request_id)
    assert results[0] == results[1] == results[2]
    pooled = np.concatenate([tm[:, 0], tr[:, 0]])
    assert results[0]["n"] == 55
    assert np.isclose(float(results[0]["mean"]), pooled.mean())
    for verified in await cluster.admin.verify_audit():
        assert verified.ok, verified
    for store in cluster.stores:
        async with store.unit_of_work() as uow:
            start = await uow.session.scalar(select(AuditEntry).where(
                AuditEntry.action == "compute.start",
                AuditEntry.object == f"request:{request_id}"))
            opened = await uow.session.scalar(select(AuditEntry).where(
                AuditEntry.action == "result.open",
                AuditEntry.object == f"request:{request_id}"))
        assert start is not None and opened is not None
        # every node recorded where all three audit chains stood when they agreed
        assert sorted(json.loads(start.details)["audit_heads"]) == ["node-0", "node-1",
                                                                    "node-2"]
        assert "opened" in json.loads(opened.details)


async def test_frequency_suppresses_small_cells_on_every_node(cluster: Cluster) -> None:
    tm = cohort(40, seed=3, ecog_p=(0.6, 0.35, 0.05))
    await cluster.upload("tm", tm)
    request_id = await cluster.submit(0, "frequency", {"column": "ecog"}, sites=("tm",))
    await cluster.approve(1, request_id, "tm")
    await cluster.completed_everywhere(request_id)
    levels = (await cluster.result(2, request_id))["levels"]
    counts = np.bincount(tm[:, 1], minlength=3)
    assert counts[2] < 5 <= counts[1] <= counts[0]  # the seed's table: one small cell
    # the small cell is suppressed, and the smallest opened one too: otherwise 40 minus the
    # opened cells would give it away (secondary suppression)
    assert levels == {"0": int(counts[0]), "1": "suppressed", "2": "<5"}


async def test_a_node_down_makes_the_request_wait_then_run(cluster: Cluster) -> None:
    await cluster.upload("tm", cohort(20, seed=4))
    await cluster.stop_node(2)
    request_id = await cluster.approved_count(0, 1)
    state = await cluster.wait_for(0, request_id, {"waiting_for_nodes"})
    assert "node-2" in (state.status_reason or "")
    state = await cluster.wait_for(1, request_id, {"waiting_for_nodes"})
    assert "node-2" in (state.status_reason or "")
    async with cluster.stores[2].unit_of_work() as uow:  # node-2 is down: no API answers
        assert await uow.requests.find(uuid.UUID(request_id)) is None  # never reached it
    await cluster.start_node(2)
    await cluster.completed_everywhere(request_id)
    assert (await cluster.result(2, request_id))["n"] == 20


async def test_a_forged_approval_is_refused_by_the_other_nodes(cluster: Cluster) -> None:
    """Node 0 is compromised: it stores an approval no data owner signed. Nodes 1 and 2
    refuse it on their own, so nothing is computed anywhere."""
    await cluster.upload("tm", cohort(20, seed=5))
    request_id = await cluster.submit(0, "count", {}, sites=("tm",))
    for node in range(3):
        await cluster.wait_for(node, request_id, {"awaiting_approval"})
    forged = signing.signed(payloads.approval(request_id, "tm"), Ed25519PrivateKey.generate())
    async with cluster.stores[0].unit_of_work() as uow:
        owner = await uow.principals.by_name("owner_tm")
        assert owner is not None
        uow.session.add(Approval(
            request_id=uuid.UUID(request_id), site_id="tm", principal_id=owner.id,
            decision=Decision.APPROVE, canonical_payload=forged["payload"],
            signature=base64.b64decode(forged["signature"]),
            signer_public_key=signing.public_key_bytes(cluster.keys["owner_tm"])))
        await uow.requests.set_status(uuid.UUID(request_id), RequestStatus.APPROVED, "forged")
        await announce(uow, cluster.configs[0], "approval", "POST",
                       f"/v1/peer/requests/{request_id}/approvals",
                       {**forged, "signer": "owner_tm"})
    state = await cluster.wait_for(0, request_id, {"waiting_for_nodes", "failed"})
    reason = state.status_reason or ""
    assert "signature" in reason or "site(s) tm" in reason
    for node in (1, 2):
        seen = await cluster.status(node, request_id)
        assert seen is not None and seen.status == "awaiting_approval"
        async with cluster.stores[node].unit_of_work() as uow:
            assert await uow.approvals.for_request(uuid.UUID(request_id)) == []
            refused = await uow.session.scalar(select(func.count()).select_from(AuditEntry)
                                               .where(AuditEntry.action == "compute.start"))
            assert refused == 0
    async with cluster.stores[0].unit_of_work() as uow:
        outcomes = set(await uow.session.scalars(
            select(PeerMessage.outcome).where(PeerMessage.kind == "approval")))
    assert outcomes <= {"parked", None}


async def test_owner_deletion_at_one_node_erases_on_all_three(cluster: Cluster) -> None:
    dataset_id = await cluster.upload("tm", cohort(10, seed=6))
    assert await cluster.owners["tm"].delete_dataset(str(dataset_id), at=1) == 1
    for _ in range(200):
        counts = []
        for store in cluster.stores:
            async with store.unit_of_work() as uow:
                counts.append(await uow.session.scalar(
                    select(func.count()).select_from(ShareBlob)))
        if counts == [0, 0, 0]:
            break
        await asyncio.sleep(0.05)
    assert counts == [0, 0, 0]


async def test_the_peer_api_takes_only_the_other_nodes_certificates(cluster: Cluster) -> None:
    url = cluster.configs[1].peers[1].api_url + f"/v1/peer/requests/{uuid.uuid4()}"
    outcomes = {}
    for cert in ("connector.tm", "node-1", "node-0"):
        context = cluster.deployment.pki[cert].client_context()
        async with cluster.http.get(url, ssl=context, server_hostname="node-1") as response:
            outcomes[cert] = response.status
    # a connector, and node-1 itself, are not peers of node-1; node-0 is (404: no request)
    assert outcomes == {"connector.tm": 401, "node-1": 401, "node-0": 404}
    async with cluster.http.get(url, ssl=cluster.deployment.ca_context, server_hostname="node-1",
                                headers={"Authorization": "Bearer "
                                         + cluster.tokens[1]["admin"]}) as response:
        assert response.status == 401  # no token opens the peer API


async def test_a_request_that_cannot_start_fails_after_the_timeout(tmp_path: Path) -> None:
    cluster = await make_cluster(tmp_path, coordination_timeout_s=1)
    try:
        await cluster.upload("tm", cohort(12, seed=7))
        await cluster.stop_node(1)
        request_id = await cluster.approved_count(0, 2)
        state = await cluster.wait_for(0, request_id, {"failed"})
        assert "could not start within 1 s" in (state.status_reason or "")
        assert "node-1" in (state.status_reason or "")
        state = await cluster.wait_for(2, request_id, {"failed"})
        assert "node-0" in (state.status_reason or "")
        async with cluster.stores[0].unit_of_work() as uow:
            assert await uow.session.scalar(select(func.count()).select_from(AuditEntry).where(
                AuditEntry.action == "compute.start")) == 0
    finally:
        await close_cluster(cluster)


async def test_cross_node_audit_comparison_finds_a_rewritten_log(cluster: Cluster) -> None:
    await cluster.upload("tm", cohort(15, seed=8))
    request_id = await cluster.approved_count(2, 0)
    await cluster.alice.wait(request_id, until={"completed"}, timeout_s=30)
    report = await cluster.admin.compare_audit(request_id, at=2)
    assert report.consistent is True
    assert sorted(report.nodes) == ["node-0", "node-1", "node-2"]
    assert len({n.result_sha256 for n in report.nodes.values()}) == 1
    # node 1's operator rewrites an old entry of its log (e.g. to hide an approval)
    async with cluster.stores[1].unit_of_work() as uow:
        entry = await uow.session.scalar(select(AuditEntry).where(
            AuditEntry.action == "approval.approve"))
        assert entry is not None
        entry.details = entry.details.replace("owner_tm", "someone")
    report = await cluster.admin.compare_audit(request_id, at=0)
    assert report.consistent is False
    assert report.nodes["node-1"].chain_ok is False
    assert report.nodes["node-0"].chain_ok and report.nodes["node-2"].chain_ok


async def test_a_request_relayed_with_a_forged_researcher_signature_fails(
        cluster: Cluster) -> None:
    """Node 0 relays a request alice never signed: nodes 1 and 2 refuse it, node 0 marks it
    failed, and nobody computes."""
    dataset_id = await cluster.upload("tm", cohort(12, seed=9))
    study = await cluster.alice.create_study("x", at=0)
    payload = payloads.analysis_request(study.id, "alice", "count", [dataset_id], {})
    forged = signing.signed(payload, Ed25519PrivateKey.generate())
    request_id = payload["id"]
    async with cluster.stores[0].unit_of_work() as uow:  # bypasses node 0's own check
        alice = await uow.principals.by_name("alice")
        assert alice is not None
        await uow.requests.create(uuid.UUID(study.id), alice.id, "count", "1", {},
                                  [dataset_id], forged["payload"],
                                  base64.b64decode(forged["signature"]),
                                  request_id=uuid.UUID(request_id))
        await announce(uow, cluster.configs[0], "request", "PUT",
                       f"/v1/peer/requests/{request_id}",
                       {**forged, "study": {"id": study.id, "title": "x",
                                            "description": ""}})
    state = await cluster.wait_for(0, request_id, {"failed"})
    assert "signature does not verify" in (state.status_reason or "")
    for node in (1, 2):
        assert await cluster.status(node, request_id) is None
        async with cluster.stores[node].unit_of_work() as uow:
            refused = await uow.audit.latest("request.submit", f"request:{request_id}")
            assert refused is None


async def test_a_computation_interrupted_by_a_restart_fails_instead_of_hanging(
        cluster: Cluster) -> None:
    await cluster.upload("tm", cohort(12, seed=10))
    request_id = await cluster.submit(0, "count", {}, sites=("tm",))
    await cluster.wait_for(1, request_id, {"awaiting_approval"})
    async with cluster.stores[1].unit_of_work() as uow:  # as if node 1 crashed mid-run
        for status in (RequestStatus.APPROVED, RequestStatus.RUNNING):
            await uow.requests.set_status(uuid.UUID(request_id), status, "test")
    await cluster.stop_node(1)
    await cluster.start_node(1)
    state = await cluster.wait_for(1, request_id, {"failed"})
    assert "restarted during the computation" in (state.status_reason or "")


def _ecog_table(counts: tuple[int, int, int], seed: int) -> np.ndarray:
    ecog = np.repeat(np.arange(3), counts)
    np.random.default_rng(seed).shuffle(ecog)
    age = np.random.default_rng(seed + 1).integers(38, 92, ecog.size)
    return np.column_stack([age, ecog, np.eye(3, dtype=np.int64)[ecog]]).astype(np.int64)


async def test_pooled_minus_per_site_is_refused_by_the_ledger_on_every_node(
        cluster: Cluster) -> None:
    """A researcher releases ECOG pooled over tm and tr, then over tm alone: tr's ECOG 2
    (2 patients) would be the difference. All three nodes hold the first release in their
    ledger and withhold that cell of the second; the plan names the ledger they agree on."""
    await cluster.upload("tm", _ecog_table((15, 10, 6), seed=8))
    await cluster.upload("tr", _ecog_table((5, 5, 2), seed=9))
    pooled = await cluster.submit(0, "frequency", {"column": "ecog"})
    for site in ("tm", "tr"):
        await cluster.approve(1, pooled, site)
    assert {r["levels"]["2"] for r in await cluster.completed_everywhere(pooled)} == {8}
    alone = await cluster.submit(1, "frequency", {"column": "ecog"}, sites=("tm",))
    await cluster.approve(2, alone, "tm")
    results = await cluster.completed_everywhere(alone)
    assert all(r["levels"] == {"0": 15, "1": 10, "2": "suppressed"} for r in results)
    for store in cluster.stores:
        async with store.unit_of_work() as uow:
            entries = await uow.ledger.all()
        assert [(e.cells, e.opened) for e in entries] == [
            (("ecog=0", "ecog=1", "ecog=2"), (True, True, True)),
            (("ecog=0", "ecog=1", "ecog=2"), (True, True, False))]



async def _hold_deliveries(cluster: Cluster, peer: int, delay: dt.timedelta) -> None:
    """Node 0's pending messages to ``peer`` wait ``delay`` (negative: due at once)."""
    async with cluster.stores[0].unit_of_work() as uow:
        await uow.session.execute(update(PeerMessage).where(PeerMessage.peer == peer).values(
            next_attempt_at=dt.datetime.now(dt.UTC) + delay))


async def test_one_peer_refusing_prepare_holds_the_start_while_the_other_is_ready(
        cluster: Cluster) -> None:
    """Both peers are asked to prepare at once: node-2 has not received the request (node
    0's delivery held back), so it refuses (404) while node-1 is ready. No node starts; the
    request waits naming node-2, and runs once the delivery goes through."""
    await cluster.upload("tm", cohort(20, seed=7))
    await cluster.stop_node(2)
    request_id = await cluster.approved_count(0, 0)
    await _hold_deliveries(cluster, 2, dt.timedelta(days=1))
    await cluster.start_node(2)
    state = await cluster.wait_for(0, request_id, {"waiting_for_nodes"})
    await asyncio.sleep(0.3)  # a few coordination rounds with node-2 up but refusing
    state = await cluster.wait_for(0, request_id, {"waiting_for_nodes"})
    assert "node-2 has not received the request" in (state.status_reason or "")
    for node in (0, 1):  # node-1 prepared, but nothing started anywhere
        async with cluster.stores[node].unit_of_work() as uow:
            actions = {e.action for e in await uow.audit.entries(obj=f"request:{request_id}")}
        assert "compute.start" not in actions, (node, actions)
    assert "compute.prepare" in actions
    await _hold_deliveries(cluster, 2, -dt.timedelta(days=1))  # the network heals
    await cluster.completed_everywhere(request_id)
    assert (await cluster.result(2, request_id))["n"] == 20
