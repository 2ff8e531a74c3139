"""The blocking client from inside a running event loop (as in a notebook): a researcher
submits, the owner approves, the researcher reads the result the three nodes agree on
(checked against numpy), all without ``await``; the profile's role picks the class and a
profile of another role is refused; every async method has its blocking counterpart.

The three nodes are served from their own loop in another thread: the test's loop blocks
while a blocking call waits, as a notebook's does, so nodes served by it could not answer.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from dic_connector.client import Admin, DataOwner, Principal, Researcher, sync
from dic_connector.errors import ApiError, ClientError, ConfigError
from tests.dic_connector.client.test_commands import write_profile
from tests.dic_connector.node.coordination.conftest import (
    Cluster,
    close_cluster,
    cohort,
    make_cluster,
)

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Cluster, Run[Any]]]:
    """Three computing nodes in a loop of their own thread, and how to run a coroutine
    there (to upload, or to close them)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(60)
    cluster = run(make_cluster(tmp_path))
    try:
        yield cluster, run
    finally:
        run(close_cluster(cluster))
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


async def test_submit_approve_and_read_without_await(
        served: tuple[Cluster, Run[Any]], tmp_path: Path) -> None:
    cluster, run = served
    table = cohort(30, seed=21)
    dataset_id = run(cluster.upload("tm", table))
    asyncio.get_running_loop()  # this test runs in a loop, as a notebook's cell does
    alice_file = write_profile(cluster, tmp_path, "alice", "researcher")
    owner_file = write_profile(cluster, tmp_path, "owner_tm", "data_owner", "tm")
    with sync.Researcher.from_profile(alice_file) as alice, \
            sync.connect(owner_file) as owner:
        assert isinstance(owner, sync.DataOwner) and owner.site == "tm"
        assert alice.name == "alice" and "Researcher('alice'" in repr(alice)
        study = alice.create_study("Adrenal SBRT")
        assert [s.id for s in alice.studies()] == [study.id]
        request_id = alice.submit(study, "mean", [dataset_id], {"column": "age"})
        [approved] = owner.approve(request_id, at=1, timeout_s=30)
        assert approved.id == request_id
        states = alice.wait(request_id, timeout_s=30)
        assert [s.status for s in states] == ["completed"] * 3
        result = alice.result(request_id)
        assert result.aggregates["n"] == 30
        assert int(result.aggregates["sum"]) == int(table[:, 0].sum())
        assert abs(float(result.aggregates["mean"]) - float(table[:, 0].mean())) < 1e-9
        with pytest.raises(ApiError) as caught:  # the async client's errors, as they come
            alice.result("00000000-0000-0000-0000-000000000000")
        assert caught.value.status == 404
    with pytest.raises(ClientError, match="closed"):
        alice.studies()
    alice.close()  # idempotent


async def test_the_profile_role_picks_the_class_or_a_builder_makes_it(
        served: tuple[Cluster, Run[Any]], tmp_path: Path) -> None:
    cluster, _ = served
    admin_file = write_profile(cluster, tmp_path, "admin", "admin", key=None)
    with sync.connect(admin_file) as admin:
        assert isinstance(admin, sync.Admin)
        assert [report.ok for report in admin.verify_audit()] == [True] * 3
    with pytest.raises(ConfigError, match="admin is a Admin, not a Researcher"):
        sync.Researcher.from_profile(admin_file)

    def build(session: aiohttp.ClientSession) -> Researcher:
        return Researcher("alice", cluster.keys["alice"],
                          cluster.deployment.clients(session, cluster.tokens, "alice"))
    with sync.Researcher.over(build) as alice:
        assert alice.newest_version("count") == "2"
        assert alice.requests() == [] and alice.datasets() == []
    forgotten = sync.Researcher.over(build)  # never closed: collected, it closes itself
    assert forgotten.studies() == []
    thread = next(t for t in threading.enumerate() if t.name == "dic-client-researcher")
    del forgotten
    gc.collect()
    thread.join(5)
    assert not thread.is_alive()
    threads = {t.name for t in threading.enumerate()}
    assert not any(name.startswith("dic-client-") for name in threads), threads


def _coroutines(cls: type[Any]) -> set[str]:
    return {name for name, member in inspect.getmembers(cls)
            if inspect.iscoroutinefunction(member) and not name.startswith("_")}


@pytest.mark.parametrize("async_class, facade", [
    (Researcher, sync.Researcher), (DataOwner, sync.DataOwner), (Admin, sync.Admin)])
def test_every_async_method_has_its_blocking_counterpart(
        async_class: type[Principal], facade: type[Any]) -> None:
    assert _coroutines(Principal) and _coroutines(async_class) > _coroutines(Principal)
    missing = {name for name in _coroutines(async_class)
               if not isinstance(inspect.getattr_static(facade, name, None), sync.Synced)}
    assert not missing, f"{facade.__name__} lacks {sorted(missing)}"


def test_an_interrupted_call_is_cancelled_in_the_loop() -> None:
    """A wait that ends early (Ctrl-C, a timeout) cancels the coroutine in the object's
    loop rather than leaving it running; a call from the loop's own thread is refused."""
    from dic_connector.client.sync import _LoopThread

    runner = _LoopThread("dic-client-test")
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def nested() -> None:
        runner.run(asyncio.sleep(0))

    try:
        with pytest.raises(TimeoutError):
            runner.run(forever(), timeout_s=0.05)
        assert cancelled.wait(5)
        with pytest.raises(ClientError, match="from its own event loop"):
            runner.run(nested())
    finally:
        runner.stop()
    assert runner.loop.is_closed()
