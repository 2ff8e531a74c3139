"""Concurrent computations on the same three nodes (issue 17, part 3): requests in disjoint
ledger scopes run at once, each in its own MPC session on the nodes' one connection per
peer pair (:class:`mpc.mux.ChannelPool`);
requests of one scope, or beyond a node's ``max_concurrent_computations``, run one after
the other; results agree across the nodes and with the plaintext references."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from dic_connector.node.api.keys import COORDINATION
from dic_connector.node.coordination import computation, coordinator
from dic_connector.node.store.models import AuditEntry
from dic_connector.node.store.unit_of_work import Store
from mpc.mux import FRAME, KIND_HELLO, MAGIC, VERSION

from .conftest import Cluster, close_cluster, cohort, make_cluster


async def _timeline(store: Store, request_ids: list[str]) -> list[tuple[str, str]]:
    """(action, request id) of each compute.start and result.open, in audit order."""
    objects = {f"request:{r}": r for r in request_ids}
    async with store.reading() as uow:
        rows = await uow.session.scalars(select(AuditEntry).where(
            AuditEntry.action.in_(("compute.start", "result.open")),
            AuditEntry.object.in_(list(objects))).order_by(AuditEntry.seq))
        return [(row.action, objects[row.object]) for row in rows]


def _overlapping(timeline: list[tuple[str, str]]) -> bool:
    """Whether a computation started while another was open (started, not yet ended)."""
    running: set[str] = set()
    for action, request_id in timeline:
        if action == "compute.start":
            if running:
                return True
            running.add(request_id)
        else:
            running.discard(request_id)
    return False


class Hold:
    """The nodes' computations of the requests in :attr:`held` wait until
    :meth:`release` (at most 20 s), patched into the coordinator's ``compute``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.held: set[str] = set()
        self._release = asyncio.Event()
        real = computation.compute

        async def gated(*args: Any) -> None:
            if str(args[2].request_id) in self.held:
                await asyncio.wait_for(self._release.wait(), 20.0)
            await real(*args)

        monkeypatch.setattr(coordinator, "compute", gated)

    def release(self) -> None:
        self._release.set()


async def test_independent_requests_run_at_once_and_match_the_plaintext(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A count of tm and a mean over tr (disjoint scopes) approved together: on each node
    neither computes before both have started (a gate that a one-at-a-time node would
    never open: the test would time out), and the results are numpy's on all three."""
    cluster = await make_cluster(tmp_path, max_concurrent_computations=3)
    try:
        tm, tr = cohort(30, seed=11), cohort(26, seed=12)
        await cluster.upload("tm", tm)
        await cluster.upload("tr", tr)
        entered: dict[str, int] = defaultdict(int)
        both: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        real = computation.compute

        async def gated(*args: Any) -> None:
            node = args[1].node_id
            entered[node] += 1
            if entered[node] == 2:
                both[node].set()
            await asyncio.wait_for(both[node].wait(), 20.0)
            await real(*args)

        # a first request, alone: the coordinator learns the peers' limits
        warm = await cluster.submit(0, "count", {}, sites=("tm",))
        await cluster.approve(0, warm, "tm")
        await cluster.completed_everywhere(warm)
        monkeypatch.setattr(coordinator, "compute", gated)
        count = await cluster.submit(0, "count", {}, sites=("tm",))
        mean = await cluster.submit(0, "mean", {"column": "age"}, sites=("tr",))
        await cluster.approve(0, count, "tm")
        await cluster.approve(0, mean, "tr")
        warmed, counts, means = [await cluster.completed_everywhere(r)
                                 for r in (warm, count, mean)]
        assert warmed == counts and counts[0] == counts[1] == counts[2]
        assert counts[0]["n"] == 30
        assert means[0] == means[1] == means[2]
        assert means[0]["n"] == 26 and np.isclose(float(means[0]["mean"]), tr[:, 0].mean())
        for store in cluster.stores:  # the audit shows the overlap on every node
            assert _overlapping(await _timeline(store, [count, mean]))
        for verified in await cluster.admin.verify_audit():
            assert verified.ok, verified
        for runner in cluster.runners:  # three computations, one connection per pair
            assert runner is not None
            pool = runner.app[COORDINATION].pool
            assert pool is not None and set(pool.connections.values()) == {1}
            assert pool.sessions == 0
    finally:
        await close_cluster(cluster)


async def test_requests_of_one_scope_run_one_after_the_other(cluster: Cluster) -> None:
    """Two frequency tables of tm approved at once share the ledger scope: the second is
    checked against the first's release, so it never starts before the first ended."""
    tm = cohort(40, seed=13)
    await cluster.upload("tm", tm)
    first = await cluster.submit(0, "frequency", {"column": "ecog"}, sites=("tm",))
    second = await cluster.submit(0, "frequency", {"column": "ecog"}, sites=("tm",))
    await cluster.approve(0, first, "tm")
    await cluster.approve(0, second, "tm")
    results = [await cluster.completed_everywhere(r) for r in (first, second)]
    assert results[0] == results[1] and results[0][0] == results[0][1] == results[0][2]
    counts = np.bincount(tm[:, 1], minlength=3)
    assert all(results[0][0]["levels"][str(level)] in (int(n), "suppressed", "<5")
               for level, n in enumerate(counts))
    for store in cluster.stores:
        timeline = await _timeline(store, [first, second])
        assert not _overlapping(timeline) and len(timeline) == 4
        async with store.reading() as uow:
            assert len(await uow.ledger.all()) == 2


async def test_a_node_with_a_limit_of_one_keeps_one_at_a_time(tmp_path: Path) -> None:
    """node-2 runs one computation at a time: disjoint requests still all complete (they
    wait, never fail), on node-2 and on the coordinator one after the other."""
    cluster = await make_cluster(tmp_path, max_concurrent_computations=3)
    try:
        await cluster.stop_node(2)
        cluster.configs[2] = dataclasses.replace(cluster.configs[2],
                                                 max_concurrent_computations=1)
        await cluster.start_node(2)
        tm, tr = cohort(30, seed=14), cohort(20, seed=15)
        await cluster.upload("tm", tm)
        await cluster.upload("tr", tr)
        requests = [await cluster.submit(0, "count", {}, sites=(site,))
                    for site in ("tm", "tr", "tm", "tr")]
        for request_id, site in zip(requests, ("tm", "tr", "tm", "tr"), strict=True):
            await cluster.approve(0, request_id, site)
        for request_id, rows in zip(requests, (30, 20, 30, 20), strict=True):
            results = await cluster.completed_everywhere(request_id)
            assert results[0] == results[1] == results[2] and results[0]["n"] == rows
        for node in (0, 2):
            assert not _overlapping(await _timeline(cluster.stores[node], requests))
        assert cluster.runners[0] is not None
        assert cluster.runners[0].app[COORDINATION].limit == 1
    finally:
        await close_cluster(cluster)


async def test_the_node_pool_refuses_a_certificate_of_another_party(
        cluster: Cluster) -> None:
    """node-1's genuine certificate announcing party 2 in a well-formed hello: node-0 closes
    the connection without an acknowledgement; node-2's own is acknowledged."""
    assert cluster.runners[0] is not None
    pool = cluster.runners[0].app[COORDINATION].pool
    assert pool is not None and pool.refused == 0
    node0 = cluster.configs[0].peers[0]
    answers = []
    for holder in (1, 2):
        tls = cluster.configs[holder].tls
        assert tls is not None
        reader, writer = await asyncio.open_connection(
            node0.mpc_host, node0.mpc_port, ssl=tls.client_context(),
            server_hostname=node0.name)
        try:
            writer.write(FRAME.pack(MAGIC, VERSION, KIND_HELLO, 2, 0, bytes(16), 0, 0, 0))
            await writer.drain()
            answers.append(await asyncio.wait_for(reader.read(FRAME.size), 5.0))
        finally:
            writer.close()
    assert answers[0] == b"" and pool.refused == 1
    assert FRAME.unpack(answers[1])[:4] == (MAGIC, VERSION, KIND_HELLO, 0)


async def test_a_request_queued_behind_its_scope_does_not_hold_up_the_next(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With two slots, a count of tm held mid-computation and a second count of tm queued
    behind it (same scope), a mean over tr submitted after them runs and completes; the
    second count starts only once the first has ended."""
    cluster = await make_cluster(tmp_path, max_concurrent_computations=2)
    try:
        tm, tr = cohort(30, seed=16), cohort(22, seed=17)
        await cluster.upload("tm", tm)
        await cluster.upload("tr", tr)
        warm = await cluster.submit(0, "count", {}, sites=("tm",))
        await cluster.approve(0, warm, "tm")
        await cluster.completed_everywhere(warm)
        hold = Hold(monkeypatch)
        first = await cluster.submit(0, "count", {}, sites=("tm",))
        hold.held.add(first)
        await cluster.approve(0, first, "tm")
        await cluster.wait_for(0, first, {"running"})
        second = await cluster.submit(0, "count", {}, sites=("tm",))
        await cluster.approve(0, second, "tm")
        third = await cluster.submit(0, "mean", {"column": "age"}, sites=("tr",))
        await cluster.approve(0, third, "tr")
        means = await cluster.completed_everywhere(third)
        assert means[0] == means[1] == means[2]
        assert np.isclose(float(means[0]["mean"]), tr[:, 0].mean())
        # the coordinator says why it holds the second back (without naming the first)
        state = await cluster.wait_for(0, second, {"waiting_for_nodes"})
        assert state.status_reason == coordinator.SCOPE_BUSY
        assert first not in state.status_reason
        hold.release()
        for request_id in (first, second):
            counts = await cluster.completed_everywhere(request_id)
            assert counts[0] == counts[1] == counts[2] and counts[0]["n"] == 30
        timeline = await _timeline(cluster.stores[0], [first, second])
        assert timeline == [("compute.start", first), ("result.open", first),
                            ("compute.start", second), ("result.open", second)]
    finally:
        await close_cluster(cluster)


def test_fair_order_takes_the_studies_in_turn() -> None:
    a, b, c = (uuid.uuid4() for _ in range(3))
    r = [uuid.uuid4() for _ in range(6)]
    # a queued three, then b and c one each: a, b, c, a, a
    assert coordinator.fair_order([(r[0], a), (r[1], a), (r[2], a), (r[3], b), (r[4], c)],
                                  []) == [r[0], r[3], r[4], r[1], r[2]]
    # what a study already runs counts: a runs two, b one
    assert coordinator.fair_order([(r[0], a), (r[1], b), (r[2], c)], [a, a, b]) == [
        r[2], r[1], r[0]]
    # after a's turn, b (never served) goes before a's next, even if a's is older
    assert coordinator.fair_order([(r[0], a), (r[1], b)], [], {a: 7}) == [r[1], r[0]]
    assert coordinator.fair_order([(r[0], a), (r[1], b)], [], {a: 3, b: 5}) == [r[0], r[1]]
    # every request in a study of its own: submission order
    assert coordinator.fair_order([(r[i], uuid.uuid4()) for i in range(6)], []) == r
    assert coordinator.fair_order([], [a]) == []


async def test_a_study_with_a_long_queue_takes_turns_with_another(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One computation at a time: study A's three counts of tm are queued behind A's
    first (held mid-computation), then study B submits a count of tr; B's runs second,
    not after all of A's."""
    cluster = await make_cluster(tmp_path, max_concurrent_computations=1)
    try:
        await cluster.upload("tm", cohort(20, seed=18))
        await cluster.upload("tr", cohort(21, seed=19))
        hold = Hold(monkeypatch)
        alice = cluster.alice
        study_a = await alice.create_study("A", at=0)
        study_b = await alice.create_study("B", at=0)
        tm, tr = [cluster.datasets["tm"]], [cluster.datasets["tr"]]
        first = await alice.submit(study_a, "count", tm, {}, at=0)
        hold.held.add(first)
        await cluster.approve(0, first, "tm")
        await cluster.wait_for(0, first, {"running"})
        queued = [await alice.submit(study_a, "count", tm, {}, at=0) for _ in range(2)]
        other = await alice.submit(study_b, "count", tr, {}, at=0)
        for request_id in queued:
            await cluster.approve(0, request_id, "tm")
        await cluster.approve(0, other, "tr")
        hold.release()
        order = [first, other, *queued]
        for request_id, rows in zip(order, (20, 21, 20, 20), strict=True):
            results = await cluster.completed_everywhere(request_id)
            assert results[0] == results[1] == results[2] and results[0]["n"] == rows
        starts = [r for action, r in await _timeline(cluster.stores[0], order)
                  if action == "compute.start"]
        assert starts == order
    finally:
        await close_cluster(cluster)


async def test_requests_whose_memory_does_not_fit_run_one_after_the_other(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three slots but a 64 MiB budget: a count of tm held mid-computation with an
    estimate of 40 MiB, and a mean over tr (a disjoint scope, 40 MiB) approved after it,
    waits for memory (queued, not failed) and starts only once the count has ended."""
    cluster = await make_cluster(tmp_path, max_concurrent_computations=3,
                                 memory_budget_mib=64)
    try:
        tm, tr = cohort(24, seed=20), cohort(25, seed=21)
        await cluster.upload("tm", tm)
        await cluster.upload("tr", tr)
        warm = await cluster.submit(0, "count", {}, sites=("tr",))
        await cluster.approve(0, warm, "tr")
        await cluster.completed_everywhere(warm)  # the coordinator learns the peers' limits
        big: set[str] = set()
        real_estimate = coordinator.memory_estimate

        async def estimate(uow: Any, plan: Any) -> int:
            return 40 << 20 if str(plan.request_id) in big else await real_estimate(uow, plan)

        monkeypatch.setattr(coordinator, "memory_estimate", estimate)
        hold = Hold(monkeypatch)
        first = await cluster.submit(0, "count", {}, sites=("tm",))
        big.add(first)
        hold.held.add(first)
        await cluster.approve(0, first, "tm")
        await cluster.wait_for(0, first, {"running"})
        second = await cluster.submit(0, "mean", {"column": "age"}, sites=("tr",))
        big.add(second)
        await cluster.approve(0, second, "tr")
        assert cluster.runners[0] is not None
        coordination = cluster.runners[0].app[COORDINATION]
        assert coordination.memory_budget == 64 << 20
        deadline = asyncio.get_running_loop().time() + 20
        while uuid.UUID(second) not in coordination._memory_queued:
            assert asyncio.get_running_loop().time() < deadline, "never queued for memory"
            await asyncio.sleep(0.02)
        state = await cluster.wait_for(0, second, {"waiting_for_nodes"})
        assert state.status_reason == coordinator.MEMORY_BUSY
        hold.release()
        means = await cluster.completed_everywhere(second)
        assert means[0] == means[1] == means[2]
        assert np.isclose(float(means[0]["mean"]), tr[:, 0].mean())
        assert (await cluster.completed_everywhere(first))[0]["n"] == 24
        timeline = await _timeline(cluster.stores[0], [first, second])
        assert timeline == [("compute.start", first), ("result.open", first),
                            ("compute.start", second), ("result.open", second)]
        assert coordination._reserved == {}
    finally:
        await close_cluster(cluster)


def test_memory_estimates_scale_with_rows_and_sorts() -> None:
    from dic_connector.node.analyses.catalog import get_analysis

    count, median = get_analysis("count"), get_analysis("median")
    assert count.memory_estimate({}, 2_200_000) < median.memory_estimate({}, 2_200_000)
    assert median.memory_estimate({"column": "age"}, 2_200_000) >= 1 << 30
    correlation = get_analysis("correlation")
    assert correlation.memory_estimate({"method": "spearman"}, 1000) == \
        2 * median.memory_estimate({}, 1000)
    assert get_analysis("survival").memory_estimate({}, 10) == median.memory_estimate({}, 10)
