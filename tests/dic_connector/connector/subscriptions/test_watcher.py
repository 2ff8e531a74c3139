"""The watchdog on a stubbed FHIR server side: a subscription found in error is re-activated
and a run asked for; one that vanished is created again and the numbers of the old one are
forgotten; a ``$status`` count above what was seen is a gap (silence itself: test_sekmet).
Each recovery is counted under its reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dic_connector.connector.metrics import ConnectorMetrics
from dic_connector.connector.state import StateStore
from dic_connector.connector.subscriptions.debounce import Recovery
from dic_connector.connector.subscriptions.notifications import Notification, NotificationType
from dic_connector.connector.subscriptions.watcher import SubscriptionWatcher
from tests.dic_connector.connector.conftest import DATASET, Cluster, connector_config

SECRET = "watcher-secret-0123456789"


class StubServer:
    """What :class:`~.server.SubscriptionServer` answers, scripted by the test."""

    def __init__(self) -> None:
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.count = 0
        self.calls: list[str] = []
        self.created = 0

    async def ensure(self) -> tuple[str, str]:
        self.calls.append("ensure")
        for sub_id, sub in self.subscriptions.items():
            if sub["status"] in ("error", "off"):
                sub["status"] = "requested"
                return sub_id, "reactivated"
            return sub_id, "reused"
        self.created += 1
        sub_id = f"s{self.created}"
        self.subscriptions[sub_id] = {"id": sub_id, "status": "requested"}
        return sub_id, "created"

    async def read(self, subscription: str) -> dict[str, Any] | None:
        self.calls.append("read")
        return self.subscriptions.get(subscription)

    async def put_requested(self, found: dict[str, Any]) -> None:
        self.calls.append("put")
        found["status"] = "requested"

    async def status(self, subscription: str) -> Notification | None:
        self.calls.append("status")
        return Notification(NotificationType.QUERY_STATUS, subscription, "active", self.count)


def make(cluster: Cluster, tmp: Path, export: Path, state: StateStore, kind: str
         ) -> tuple[SubscriptionWatcher, StubServer, list[str]]:
    settings: dict[str, Any] = {"kind": kind, "secret": SECRET,
                                "endpoint": "http://127.0.0.1:1/fhir-notify/x"}
    settings |= {"topic": "http://t/topic"} if kind == "backport" else {"criteria": "Patient?"}
    config = connector_config(cluster, tmp, export, source={
        "kind": "fhir-rest", "base_url": "http://127.0.0.1:1/fhir"},
        trigger={"subscription": settings})
    runs: list[str] = []

    async def run(name: str, trigger: str) -> bool:
        runs.append(trigger)
        return True

    watcher = SubscriptionWatcher(config.datasets[0], "tm", state, ConnectorMetrics(), run)
    stub = StubServer()
    watcher.server = stub  # type: ignore[assignment]
    return watcher, stub, runs


def value(metric: Any, *labels: str) -> float:
    return float(metric.labels(DATASET, *labels)._value.get())


async def test_error_is_reactivated_and_a_vanished_subscription_recreated(
        cluster: Cluster, tmp_path: Path, export: Path, state: StateStore) -> None:
    watcher, stub, _ = make(cluster, tmp_path, export, state, "rest-hook")
    assert await watcher.ensure() == "created" and watcher.debouncer.pokes == 1
    await watcher.check()
    assert stub.calls[-1] == "status" and watcher.debouncer.pokes == 1  # active: nothing
    stub.subscriptions["s1"]["status"] = "error"
    await watcher.check()
    assert "put" in stub.calls and watcher.debouncer.pokes == 2
    assert value(watcher.metrics.reactivations) == 1
    assert value(watcher.metrics.recoveries, "error") == 1

    await watcher.receive(Notification(NotificationType.EVENT, "s1", "active", 1, (1,)))
    assert await state.subscription_events(DATASET) == {"s1": (1, [])}
    del stub.subscriptions["s1"]  # deleted on the server
    await watcher.check()
    assert watcher.subscription == "s2" and watcher.debouncer.pokes == 4
    assert value(watcher.metrics.reactivations) == 2
    assert value(watcher.metrics.recoveries, "missing") == 1
    assert value(watcher.metrics.recoveries, "error") == 1  # not a second time
    assert await state.subscription_events(DATASET) == {}  # the old numbers are gone
    await watcher.client.close()


async def test_a_status_count_above_what_was_seen_runs_then_is_a_gap(
        cluster: Cluster, tmp_path: Path, export: Path, state: StateStore) -> None:
    watcher, stub, _ = make(cluster, tmp_path, export, state, "backport")
    await watcher.ensure()
    stub.subscriptions["s1"]["status"] = "active"
    await watcher.receive(Notification(NotificationType.EVENT, "s1", "active", 2, (1, 2)))
    pokes = watcher.debouncer.pokes
    stub.count = 2
    await watcher.check()
    assert watcher.debouncer.pokes == pokes and value(watcher.metrics.gaps) == 0
    stub.count = 5
    assert value(watcher.metrics.recoveries, "status") == 0
    await watcher.check()  # counted, not delivered (yet): a run
    assert watcher.debouncer.pokes == pokes + 1 and value(watcher.metrics.gaps) == 0
    assert value(watcher.metrics.recoveries, "status") == 1
    assert await state.subscription_events(DATASET) == {"s1": (5, [3, 4, 5])}
    await watcher.check()  # still missing at the next check: a gap, no second run
    assert watcher.debouncer.pokes == pokes + 1 and value(watcher.metrics.gaps) == 1
    assert value(watcher.metrics.events_missed) == 3
    assert await state.subscription_events(DATASET) == {"s1": (5, [3, 4, 5])}
    assert value(watcher.metrics.recoveries, "status") == 1  # the gap was recovered once
    stub.count = 7
    await watcher.check(Recovery.HEARTBEAT)  # the watchdog's check after silence
    assert value(watcher.metrics.recoveries, "heartbeat") == 1
    await watcher.receive(Notification(NotificationType.HEARTBEAT, "s1", "active", 9))
    assert value(watcher.metrics.recoveries, "gap") == 1  # a pushed count
    assert watcher.debouncer.pokes == pokes + 3
    await watcher.client.close()
