"""The periodic audit head exchange among three in-process nodes: heads are recorded in normal
operation; deleting the newest entries of one node's log, or rewriting one and re-chaining
from it (which that node's own verification cannot see), is detected by both others within
an interval, with no request involved; a flagged peer keeps every plan from being agreed
until an operator acknowledges the mismatch at each node; an unreachable peer is no
mismatch."""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from sqlalchemy import text

from dic_connector.client import commands
from dic_connector.errors import ApiError, NotFoundError, PeerRefused
from dic_connector.node import admin
from dic_connector.node.api.keys import COORDINATION
from dic_connector.node.api.schemas import AUDIT_PEERS
from dic_connector.node.coordination.exchange import (
    HEAD_PATH,
    AuditExchange,
    Report,
    mismatch,
)
from dic_connector.node.coordination.peers import PeerClient
from dic_connector.node.store.audit import GENESIS_HASH, ChainHead, entry_hash
from dic_connector.node.store.unit_of_work import Store

from .conftest import Cluster, close_cluster, cohort, make_cluster

INTERVAL_S = 0.1


@pytest.fixture
async def witnessed(tmp_path: Path) -> AsyncIterator[Cluster]:
    made = await make_cluster(tmp_path, audit_exchange_interval_s=INTERVAL_S)
    try:
        yield made
    finally:
        await close_cluster(made)


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout_s} s: {check.__doc__ or check}")


def exchange(cluster: Cluster, node: int) -> AuditExchange:
    runner = cluster.runners[node]
    assert runner is not None
    found: AuditExchange | None = runner.app[COORDINATION].audit_exchange
    assert found is not None
    return found


async def head_of(store: Store) -> ChainHead:
    async with store.reading() as uow:
        return await uow.audit.head()


async def recorded(cluster: Cluster, node: int, peer: str) -> ChainHead | None:
    store: Store = cluster.stores[node]
    async with store.reading() as uow:
        observed = await uow.peer_audit.recorded(peer)
    return None if observed is None else observed.head


async def flagged(cluster: Cluster, node: int) -> list[str]:
    store: Store = cluster.stores[node]
    async with store.reading() as uow:
        return await uow.peer_audit.flagged()


async def probes(store: Store, n: int) -> ChainHead:
    """``n`` entries appended (as a node's work would), one transaction each; the head."""
    for i in range(n):
        async with store.unit_of_work() as uow:
            await uow.audit.append("node:test", "probe", f"probe:{i}", {"i": i})
    return await head_of(store)


async def seen_by_both(cluster: Cluster, node: int, head: ChainHead) -> None:
    name = f"node-{node}"
    others = [i for i in range(3) if i != node]

    async def both() -> bool:
        """both other nodes recorded the head"""
        return all([await recorded(cluster, i, name) == head for i in others])

    await until(both)


async def rechain(store: Store, seq: int, details: dict[str, str]) -> None:
    """Entry ``seq`` gets other details and every hash from it on is recomputed: the chain
    still verifies on its own (a consistent rewrite by someone holding the database)."""
    async with store.reading() as uow:
        entries = await uow.audit.entries(after_seq=seq - 1, limit=10_000)
    prev = entries[0].prev_hash
    async with store.engine.begin() as conn:
        for entry in entries:
            payload = details if entry.seq == seq else json.loads(entry.details)
            new_hash = entry_hash(prev, entry.seq, entry.created_at, entry.actor,
                                  entry.action, entry.object, payload)
            await conn.execute(text("UPDATE audit_log SET details = :d, prev_hash = :p, "
                                    "hash = :h WHERE seq = :s"),
                               {"d": json.dumps(payload, sort_keys=True, separators=(",", ":")),
                                "p": prev, "h": new_hash, "s": entry.seq})
            prev = new_hash
    async with store.reading() as uow:
        assert (await uow.audit.verify_chain()).ok


async def scrape(cluster: Cluster, node: int) -> str:
    """``/metrics`` of ``node`` (public, Prometheus text)."""
    deployment = cluster.deployment
    async with cluster.http.get(deployment.api_url(node) + "/metrics",
                                ssl=deployment.ca_context,
                                server_hostname=f"node-{node}") as response:
        body: str = await response.text()
        return body


def sample(metrics: str, name: str, peer: str) -> float:
    found = re.search(rf'^{name}{{peer="{peer}"}} ([0-9.e+]+)$', metrics, re.MULTILINE)
    return float(found.group(1)) if found else -1.0


async def ready(cluster: Cluster, node: int) -> dict[str, Any]:
    body: dict[str, Any] = await cluster.deployment.client(node, cluster.http).ready()
    return body


# -- the decision, on its own -----------------------------------------------------------


def test_mismatch_names_truncation_rewrite_and_a_break() -> None:
    recorded = ChainHead(7, "a" * 64)
    assert mismatch(recorded, Report(ChainHead(9, "b" * 64), "a" * 64, True, "")) is None
    assert mismatch(recorded, Report(recorded, "a" * 64, True, "")) is None
    truncated = mismatch(recorded, Report(ChainHead(5, "c" * 64), None, False, ""))
    assert truncated is not None and "truncated" in truncated
    rewritten = mismatch(recorded, Report(ChainHead(9, "b" * 64), "d" * 64, False, ""))
    assert rewritten is not None and "rewritten" in rewritten
    gone = mismatch(recorded, Report(ChainHead(9, "b" * 64), None, False, ""))
    assert gone is not None and "no entry" in gone
    broken = mismatch(recorded, Report(ChainHead(9, "b" * 64), "a" * 64, False, "entry 8"))
    assert broken is not None and "chain broken after entry 7" in broken
    assert mismatch(ChainHead(0, GENESIS_HASH),
                    Report(ChainHead(0, GENESIS_HASH), GENESIS_HASH, True, "")) is None


def test_an_answer_out_of_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="malformed"):
        Report.from_json({"head": {"seq": 1}, "hash_at_seq": None, "chain_ok": True})
    with pytest.raises(ValueError, match="bad head"):
        Report.from_json({"head": {"seq": -1, "hash": "0" * 64}, "hash_at_seq": None,
                          "chain_ok": True})


# -- the peer route ---------------------------------------------------------------------


async def test_the_peer_route_answers_a_peer_and_refuses_a_body_out_of_schema(
        witnessed: Cluster) -> None:
    head = await probes(witnessed.stores[1], 3)
    async with PeerClient(witnessed.configs[0]) as client:
        answer = await client.call(1, "POST", HEAD_PATH, {"seq": 1, "hash": "0" * 64})
        assert answer["node"] == "node-1" and answer["head"] == {"seq": head.seq,
                                                                  "hash": head.hash}
        assert answer["chain_ok"] is False and "rewritten" in answer["reason"]
        assert answer["hash_at_seq"] is not None and answer["hash_at_seq"] != "0" * 64
        for body in ({"seq": -1, "hash": "0" * 64}, {"seq": 1, "hash": "xyz"},
                     {"seq": 1}, {"seq": 1, "hash": "0" * 64, "extra": 1},
                     {"seq": "1", "hash": "0" * 64}):
            with pytest.raises(PeerRefused) as refused:
                await client.call(1, "POST", HEAD_PATH, body)
            assert refused.value.status == 400, body
    # not a peer: a researcher's token, no node certificate
    alice = witnessed.deployment.client(1, witnessed.http, witnessed.tokens[1]["alice"])
    with pytest.raises(ApiError) as refused_alice:
        await alice.call("POST", HEAD_PATH, {"seq": 0, "hash": GENESIS_HASH})
    assert refused_alice.value.status == 401


# -- the exchange among three nodes ---------------------------------------------------------


async def test_heads_are_recorded_in_normal_operation(witnessed: Cluster) -> None:
    for node in range(3):
        await seen_by_both(witnessed, node, await probes(witnessed.stores[node], node + 1))
    head = await probes(witnessed.stores[1], 2)  # the log grows: the newer head is recorded
    await seen_by_both(witnessed, 1, head)
    for node in range(3):
        assert await flagged(witnessed, node) == []
        state = exchange(witnessed, node).peers
        assert all(s.exchanges > 0 and s.mismatches == 0 for s in state.values())
        assert (await ready(witnessed, node))["status"] == "ok"


async def test_deleting_the_newest_entries_is_detected_by_both_others(
        witnessed: Cluster) -> None:
    await witnessed.upload("tm", cohort(30, seed=3))
    head = await probes(witnessed.stores[1], 3)  # say, an opening's entries
    await seen_by_both(witnessed, 1, head)
    async with witnessed.stores[1].engine.begin() as conn:
        await conn.execute(text(f"DELETE FROM audit_log WHERE seq > {head.seq - 2}"))
    async with witnessed.stores[1].reading() as uow:
        assert (await uow.audit.verify_chain()).ok  # node-1 alone cannot tell

    async def both_flag() -> bool:
        """node-0 and node-2 flag node-1"""
        return all([await flagged(witnessed, i) == ["node-1"] for i in (0, 2)])

    await until(both_flag, timeout_s=20 * INTERVAL_S + 5)
    assert await flagged(witnessed, 1) == []
    for node in (0, 2):
        async with witnessed.stores[node].reading() as uow:
            entry = await uow.audit.latest("audit.peer_mismatch", "node:node-1")
        assert entry is not None and entry.actor == f"node:node-{node}"
        details = json.loads(entry.details)
        assert (details["recorded_seq"], details["recorded_hash"]) == (head.seq, head.hash)
        assert details["reported_seq"] == head.seq - 2 and details["hash_at_recorded_seq"] \
            is None and "truncated" in details["reason"]
        metrics = await scrape(witnessed, node)
        assert sample(metrics, "dic_peer_audit_mismatches_total", "node-1") == 1.0
        assert sample(metrics, "dic_peer_audit_flagged", "node-1") == 1.0
        other = "node-2" if node == 0 else "node-0"
        assert sample(metrics, "dic_peer_audit_mismatches_total", other) == 0.0
        health = await ready(witnessed, node)
        assert health["status"] == "degraded"
        assert "node-1" in str(health["checks"])
    admin_0 = witnessed.deployment.client(0, witnessed.http, witnessed.tokens[0]["admin"])
    shown = await admin_0.call("GET", "/v1/audit/peers")
    jsonschema.validate(shown, AUDIT_PEERS)
    [flagged_1] = shown["peers"]["node-1"]["mismatches"]
    assert (flagged_1["recorded_seq"], flagged_1["reported_seq"]) == (head.seq, head.seq - 2)
    assert shown["peers"]["node-2"]["mismatches"] == []
    assert shown["peers"]["node-2"]["exchanges"] > 0
    # the admin's client reads the same, typed, from every node
    reports = await witnessed.admin.audit_peers()
    assert [(r.node, r.flagged) for r in reports] == [
        ("node-0", ["node-1"]), ("node-1", []), ("node-2", ["node-1"])]
    [typed] = reports[0].peers["node-1"].mismatches
    assert (typed.recorded.seq, typed.recorded.hash, typed.reported.seq) == (
        head.seq, head.hash, head.seq - 2)
    assert "truncated" in typed.reason and typed.detected_at.tzinfo is not None
    seen_2 = reports[0].peers["node-2"]
    assert not seen_2.flagged and seen_2.exchanges > 0 and seen_2.head is not None
    assert seen_2.observed_at is not None and sorted(reports[1].peers) == ["node-0", "node-2"]
    out = io.StringIO()
    assert not await commands.audit_peers(witnessed.admin, out)
    assert "node-0 sees node-1: " in out.getvalue() and "FLAGGED: " in out.getvalue()
    assert re.search(r"node-1 sees node-0: head seq \d+ \w{12}, \d+ exchange\(s\), 0 "
                     r"unreachable; ok", out.getvalue()), out.getvalue()
    alice_0 = witnessed.deployment.client(0, witnessed.http, witnessed.tokens[0]["alice"])
    with pytest.raises(ApiError) as not_admin:
        await alice_0.call("GET", "/v1/audit/peers")
    assert not_admin.value.status == 403
    await asyncio.sleep(5 * INTERVAL_S)  # one incident is flagged once
    for node in (0, 2):
        async with witnessed.stores[node].reading() as uow:
            assert await uow.peer_audit.mismatch_counts() == {"node-1": 1}
    assert (await ready(witnessed, 1))["status"] == "ok"


async def test_a_consistent_rewrite_is_detected(witnessed: Cluster) -> None:
    head = await probes(witnessed.stores[2], 4)
    await seen_by_both(witnessed, 2, head)
    await rechain(witnessed.stores[2], head.seq - 2, {"i": "edited"})

    async def both_flag() -> bool:
        """node-0 and node-1 flag node-2"""
        return all([await flagged(witnessed, i) == ["node-2"] for i in (0, 1)])

    await until(both_flag, timeout_s=20 * INTERVAL_S + 5)
    for node in (0, 1):
        async with witnessed.stores[node].reading() as uow:
            [found] = await uow.peer_audit.open_mismatches("node-2")
        assert (found.recorded_seq, found.reported_seq) == (head.seq, head.seq)
        assert found.hash_at_recorded not in (None, head.hash) and "rewritten" in found.reason


async def test_a_flagged_peer_blocks_every_plan_until_acknowledged_at_each_node(
        witnessed: Cluster) -> None:
    await witnessed.upload("tm", cohort(30, seed=5))
    head = await probes(witnessed.stores[1], 2)
    await seen_by_both(witnessed, 1, head)
    async with witnessed.stores[1].engine.begin() as conn:
        await conn.execute(text(f"DELETE FROM audit_log WHERE seq = {head.seq}"))

    async def both_flag() -> bool:
        """node-0 and node-2 flag node-1"""
        return all([await flagged(witnessed, i) == ["node-1"] for i in (0, 2)])

    await until(both_flag, timeout_s=20 * INTERVAL_S + 5)
    request_id = await witnessed.approved_count(0, 0)

    async def waits_for(reason: str) -> bool:
        state = await witnessed.status(0, request_id)
        return state is not None and state.status.value == "waiting_for_nodes" \
            and reason in (state.status_reason or "")

    async def refused_by_node_0() -> bool:
        """node-0 refuses: node-1 is flagged"""
        return await waits_for("node-0: the audit log of node-1 no longer holds")

    await until(refused_by_node_0)
    with pytest.raises(NotFoundError):
        await admin.acknowledge_peer_audit(witnessed.configs[0], "node-9")
    assert await admin.acknowledge_peer_audit(witnessed.configs[0], "node-1") == 1
    [status_1, _] = await admin.peer_audit_status(witnessed.configs[0])
    assert status_1.peer == "node-1" and not status_1.flagged

    async def refused_by_node_2() -> bool:
        """node-2 still refuses in prepare"""
        return await waits_for("node-2: the audit log of node-1 no longer holds")

    await until(refused_by_node_2)
    statuses = await admin.peer_audit_status(witnessed.configs[2])
    assert [s.peer for s in statuses if s.flagged] == ["node-1"]
    assert "FLAGGED" in statuses[1].describe() and "truncated" in statuses[1].describe()
    assert await admin.acknowledge_peer_audit(witnessed.configs[2], "node-1") == 1
    assert [r["n"] for r in await witnessed.completed_everywhere(request_id)] == [30] * 3
    for node in (0, 2):
        async with witnessed.stores[node].reading() as uow:
            entry = await uow.audit.latest("audit.peer_acknowledge", "node:node-1")
        assert entry is not None and entry.actor == admin.ADMIN_ACTOR
        assert (await ready(witnessed, node))["status"] == "ok"


async def test_an_unreachable_peer_is_counted_apart_and_is_no_mismatch(
        witnessed: Cluster) -> None:
    await witnessed.stop_node(2)
    state = exchange(witnessed, 0).peers["node-2"]
    before = state.unreachable

    async def counted() -> bool:
        """node-0 counts failed exchanges with node-2"""
        return state.unreachable >= before + 2

    await until(counted)
    assert "unreachable" in state.last_error
    assert await flagged(witnessed, 0) == []
    metrics = await scrape(witnessed, 0)
    assert sample(metrics, "dic_peer_audit_unreachable_total", "node-2") >= 2
    assert sample(metrics, "dic_peer_audit_mismatches_total", "node-2") == 0.0
    assert (await ready(witnessed, 0))["status"] == "ok"
