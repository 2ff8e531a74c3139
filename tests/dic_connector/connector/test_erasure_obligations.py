"""The runner's erasure of superseded versions is an obligation recorded before the nodes are
asked: it survives a process that dies while asking, is cleared only once all three nodes
confirmed, and stays pending while one does not; pending erasures are asked for again after
every run, per dataset only the newest (which covers, and settles, the older ones)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from dic_connector.connector import runs
from dic_connector.connector.config import ConnectorConfig, DatasetConfig, Trigger
from dic_connector.connector.pipeline import PipelineReport
from dic_connector.connector.runs import Runner
from dic_connector.connector.state import StateStore
from dic_connector.connector.upload import NodeEndpoint, Uploader
from dic_connector.errors import CoordinationError
from dic_connector.mapping import loads_mapping
from dic_connector.sources import NdjsonConfig
from mpc.tls import NodeTls
from tests.dic_connector.connector.conftest import GENDERS_MAPPING


class Nodes:
    """Stands in for the three nodes' supersede endpoint: records each request, then answers
    as told (confirm, refuse with a CoordinationError, or never, like a hung connection)."""

    def __init__(self, state: StateStore) -> None:
        self.state = state
        self.answer = "confirm"
        #: for each request, the erasures the state database held pending when it was sent
        self.asked: list[tuple[uuid.UUID, list[tuple[str, uuid.UUID]]]] = []
        self.waiting = asyncio.Event()
        #: versions a node refuses to supersede with (e.g. no longer committed there)
        self.refused: set[uuid.UUID] = set()

    async def erase_older(self, version: uuid.UUID) -> None:
        self.asked.append((version, await self.state.pending_erasures()))
        if self.answer == "refuse" or version in self.refused:
            raise CoordinationError("node-2 did not confirm")
        if self.answer == "hang":
            self.waiting.set()
            await asyncio.Event().wait()


class FakeUploader(Uploader):
    def __init__(self, nodes: Nodes) -> None:  # no TLS, no sessions: nothing is sent
        self._nodes = nodes

    async def erase_older(self, version_id: uuid.UUID) -> None:
        await self._nodes.erase_older(version_id)


class FakeNodesRunner(Runner):
    nodes: Nodes

    def uploader(self) -> Uploader:
        return FakeUploader(self.nodes)


@pytest.fixture
async def state(tmp_path: Path) -> AsyncIterator[StateStore]:
    store = StateStore(f"sqlite:///{tmp_path / 'connector-state.db'}")
    await store.migrate()
    yield store
    await store.close()




def runner(state: StateStore, nodes: Nodes, tmp_path: Path) -> FakeNodesRunner:
    dataset = DatasetConfig("pilot", loads_mapping(GENDERS_MAPPING, "genders.yaml"),
                            NdjsonConfig(tmp_path), Trigger())
    config = ConnectorConfig(
        site="tm", nodes=tuple(NodeEndpoint(f"https://127.0.0.1:{9000 + i}", f"node-{i}")
                               for i in range(3)),
        tls=NodeTls(tmp_path / "ca.pem", tmp_path / "c.pem", tmp_path / "c.key"),
        datasets=(dataset,),
        state_database_url=make_url(f"sqlite:///{tmp_path / 'unused.db'}"),
        lineage_key_file=tmp_path / "lineage.key")
    out = FakeNodesRunner(config, state)
    out.nodes = nodes
    return out


async def test_the_erasure_is_pending_before_the_nodes_are_asked_and_cleared_after(
        state: StateStore, tmp_path: Path) -> None:
    nodes = Nodes(state)
    version = uuid.uuid4()
    await runner(state, nodes, tmp_path)._erase_older("pilot", version)
    assert nodes.asked == [(version, [("pilot", version)])]
    assert await state.pending_erasures() == []


async def test_an_unconfirmed_erasure_stays_pending_and_is_asked_again(
        state: StateStore, tmp_path: Path) -> None:
    nodes = Nodes(state)
    nodes.answer = "refuse"
    version = uuid.uuid4()
    first = runner(state, nodes, tmp_path)
    await first._erase_older("pilot", version)
    assert await state.pending_erasures() == [("pilot", version)]
    assert first.metrics.registry.get_sample_value("dic_connector_pending_erasures") == 1
    nodes.answer = "confirm"
    assert await first.retry_pending_erasures() == 0
    assert await state.pending_erasures() == []


async def test_an_erasure_survives_a_process_that_dies_while_asking(
        state: StateStore, tmp_path: Path) -> None:
    """Killed while a node is still being asked (a hung call, retries with backoff): the
    next process finds the erasure pending and asks again at its start."""
    nodes = Nodes(state)
    nodes.answer = "hang"
    version = uuid.uuid4()
    task = asyncio.create_task(runner(state, nodes, tmp_path)._erase_older("pilot", version))
    await asyncio.wait_for(nodes.waiting.wait(), 10)
    task.cancel()  # all a SIGKILL leaves is what the state database holds
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await state.pending_erasures() == [("pilot", version)]

    nodes.answer = "confirm"
    assert await runner(state, Nodes(state), tmp_path).retry_pending_erasures() == 0
    assert await state.pending_erasures() == []


async def test_the_newest_pending_erasure_of_a_dataset_settles_the_older_ones(
        state: StateStore, tmp_path: Path) -> None:
    """v2 superseded v1 on some node already, which then refuses to supersede with v1:
    only v2 is asked for, and its confirmation settles v1's entry too."""
    v1, v2, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for name, version in (("pilot", v1), ("pilot", v2), ("other", other)):
        await state.add_pending_erasure(name, version)
    nodes = Nodes(state)
    nodes.refused = {v1}
    assert await runner(state, nodes, tmp_path).retry_pending_erasures() == 0
    assert sorted(version for version, _ in nodes.asked) == sorted([v2, other])
    assert await state.pending_erasures() == []


async def test_a_confirmed_erasure_settles_the_older_pending_ones_of_its_dataset(
        state: StateStore, tmp_path: Path) -> None:
    old, other = uuid.uuid4(), uuid.uuid4()
    await state.add_pending_erasure("pilot", old)
    await state.add_pending_erasure("other", other)
    nodes = Nodes(state)
    new = uuid.uuid4()
    await runner(state, nodes, tmp_path)._erase_older("pilot", new)
    assert await state.pending_erasures() == [("other", other)]  # another dataset's stays


async def test_every_run_asks_again_for_the_pending_erasures(
        state: StateStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    committed = uuid.uuid4()

    async def shared(*args: Any, **kwargs: Any) -> PipelineReport:
        return PipelineReport(site="tm", dataset="pilot", mapping="genders", resources_read=6,
                              patients=6, rows_rejected=0, rows_shared=6, columns=3,
                              version_id=committed)

    monkeypatch.setattr(runs, "share_cohort", shared)
    earlier = uuid.uuid4()
    await state.add_pending_erasure("other", earlier)  # a node was down back then
    nodes = Nodes(state)
    outcome = await runner(state, nodes, tmp_path).run("pilot", "manual")
    assert outcome.ok and outcome.record.version_id == committed
    # the run's own erasure once (not again right after), then the pending one
    assert [version for version, _ in nodes.asked] == [committed, earlier]
    assert await state.pending_erasures() == []
