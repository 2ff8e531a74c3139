"""The subscription trigger against a real FHIR server: sekmet-fhir (started on 127.0.0.1
with :mod:`dic_connector.dev.sekmet`), the connector service in-process (an aiohttp test server
on 127.0.0.1 whose URL is the subscription's endpoint) and three node apps.

The connector creates a backport Subscription on sekmet (topic ``patient-change``,
heartbeats every second); a batch of new patients is a burst of notifications that gives
exactly one new committed version, counted in the state database, whose row count is what
the server holds; a restart reuses the subscription and its stored numbers (no gap); a
subscription switched ``off`` on the server falls silent, and the watchdog notices,
re-activates it and runs. A classic rest-hook gives empty pings, and one run for a burst.
Event notifications lost in transit (a relay answers 200 and drops them) are found from the
next heartbeat's count: a run at once, and a gap."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dic_connector.connector.service import create_app
from dic_connector.connector.state import RunRecord, RunStatus, StateStore
from dic_connector.connector.subscriptions.notifications import NotificationType, parse_notification
from dic_connector.connector.subscriptions.receiver import WATCHERS
from dic_connector.connector.subscriptions.resources import PROFILE, TAG_SYSTEM
from dic_connector.dev.sekmet import SekmetServer, start_sekmet, stop_sekmet
from dic_connector.dev.synthetic import pilot_resources
from dic_connector.node.store.enums import VersionState
from mpc.local import free_port
from tests.dic_connector.connector.conftest import DATASET, Client, Cluster, connector_config, until

pytestmark = pytest.mark.fhir_server

SECRET = "sekmet-notify-secret-0123456789"
#: the debounce window (and, plus a little, the wait after a run that shows no second run
#: follows): the notifications of one PUT are sent while the server stores it, well within
#: 1 s of each other; were they not, a burst would give two runs and the tests would fail
DEBOUNCE_S = 1.0
TOPIC = "http://sekmet.dev/fhir/SubscriptionTopic/patient-change"


@pytest.fixture(scope="module")
def fhir() -> Iterator[SekmetServer]:
    """An empty sekmet of this module's own (the session server holds other data)."""
    tmpdir = Path(tempfile.mkdtemp(prefix="dic-subs-sekmet-"))
    server = start_sekmet(tmpdir)
    try:
        server.put(list(pilot_resources("tm")))  # before the connector subscribes
        yield server
    finally:
        stop_sekmet(server)
        shutil.rmtree(tmpdir, ignore_errors=True)



Serve = Callable[..., Any]


@pytest.fixture
async def serve(cluster: Cluster, tmp_path: Path, export: Path, state: StateStore,
                fhir: SekmetServer) -> AsyncIterator[Serve]:
    """Start the connector service with a subscription trigger of the given settings."""
    clients: list[Client] = []

    async def start(settings: dict[str, Any], port: int | None = None) -> Client:
        port = port or free_port()
        config = connector_config(
            cluster, tmp_path, export,
            source={"kind": "fhir-rest", "base_url": fhir.base_url,
                    "auth": {"kind": "bearer", "token": fhir.static_token}},
            trigger={"subscription": {
                "secret": SECRET, "debounce": f"{DEBOUNCE_S:g}s", "heartbeat": "1s",
                "reconcile": "1h",
                "endpoint": f"http://127.0.0.1:{port}/fhir-notify/{DATASET}", **settings}})
        client = TestClient(TestServer(create_app(config), host="127.0.0.1", port=port))
        await client.start_server()
        clients.append(client)
        return client

    try:
        yield start
    finally:
        for client in clients:
            await client.close()


def count(metric: Any, *labels: str) -> float:
    return float(metric.labels(DATASET, *labels)._value.get())


def copy(n: int) -> list[dict[str, Any]]:
    """Munich's pilot patients again, as new patients (ids ``c<n>-...``)."""
    return [r for r in pilot_resources("tm", copies=n + 1) if r["id"].startswith(f"c{n}-")]


def succeeded(runs: list[RunRecord], trigger: str) -> list[RunRecord]:
    return [r for r in runs if r.trigger == trigger and r.status is RunStatus.SUCCEEDED]


async def test_a_burst_of_changes_gives_one_new_version(
        fhir: SekmetServer, serve: Serve, state: StateStore, cluster: Cluster) -> None:
    service = await serve({"kind": "backport", "topic": TOPIC, "content": "empty"})
    watcher = service.server.app[WATCHERS][DATASET]

    def runner_busy() -> bool:
        return watcher.debouncer.running or watcher.debouncer.pending

    async def settled() -> bool:
        runs = await state.runs(DATASET)
        return bool(succeeded(runs, "reconcile")) and watcher.subscription is not None \
            and not runner_busy() and all(r.status is not RunStatus.RUNNING for r in runs)

    await until(settled)
    # the subscription on the server: ours, backport, active after the handshake
    found = await asyncio.to_thread(fhir.call, "GET",
                                    f"Subscription?_tag={TAG_SYSTEM}|tm.{DATASET}")
    [entry] = found["entry"]
    subscription = entry["resource"]
    assert subscription["id"] == watcher.subscription and subscription["criteria"] == TOPIC
    assert PROFILE in subscription["meta"]["profile"]
    assert subscription["channel"]["header"] == [f"Authorization: Bearer {SECRET}"]
    assert subscription["status"] == "active"
    metrics = watcher.metrics
    assert count(metrics.notifications, "handshake") >= 1

    before = await state.runs(DATASET)
    events_before = count(metrics.notifications, "event-notification")
    patients_before = (await asyncio.to_thread(fhir.call, "GET",
                                               "Patient?_summary=count"))["total"]
    await asyncio.to_thread(fhir.put, copy(1))  # 24 new Patients: 24 events

    async def delivered() -> bool:
        return count(metrics.notifications, "event-notification") - events_before >= 24

    await until(delivered)

    async def one_more() -> list[RunRecord]:
        runs = await state.runs(DATASET)
        done = [r for r in succeeded(runs, "subscription") if r not in before]
        return done if done and not runner_busy() else []

    [run] = await until(one_more)
    await asyncio.sleep(DEBOUNCE_S + 0.2)  # a further debounce window: still no second run
    after = await state.runs(DATASET)
    assert [r for r in after if r not in before] == [run]
    assert watcher.ledger.highest(watcher.subscription) >= 24
    assert count(metrics.gaps) == 0 and count(metrics.duplicates) == 0
    # the new version holds what the server holds: 24 more patients, one row each
    total = (await asyncio.to_thread(fhir.call, "GET", "Patient?_summary=count"))["total"]
    assert total == patients_before + 24
    assert run.counts.patients == run.counts.rows_shared == total
    assert run.version_id is not None
    versions = await cluster.versions(run.version_id)
    assert [v.state for v in versions] == [VersionState.COMMITTED] * 3
    assert all(v.row_count == total for v in versions)
    stored = await state.subscription_events(DATASET)
    assert stored[watcher.subscription][0] == watcher.ledger.highest(watcher.subscription)

    # a restart reuses the subscription, and the numbers it stored are no gap
    port = service.port
    await service.close()
    service = await serve({"kind": "backport", "topic": TOPIC, "content": "empty"},
                          port=port)
    again = service.server.app[WATCHERS][DATASET]

    async def reused() -> bool:
        return again.subscription == watcher.subscription and \
            count(again.metrics.notifications, "heartbeat") >= 1
    await until(reused)
    assert again.ledger.highest(again.subscription) == watcher.ledger.highest(
        watcher.subscription)
    assert count(again.metrics.gaps) == 0 and not again.debouncer.pending
    found = await asyncio.to_thread(fhir.call, "GET",
                                    f"Subscription?_tag={TAG_SYSTEM}|tm.{DATASET}")
    assert len(found["entry"]) == 1
    watcher, metrics = again, again.metrics

    # switched off on the server: no heartbeats, the watchdog re-activates it and runs
    subscription = await asyncio.to_thread(fhir.call, "GET",
                                           f"Subscription/{watcher.subscription}")
    subscription["status"] = "off"
    runs_before = await state.runs(DATASET)
    await asyncio.to_thread(fhir.call, "PUT", f"Subscription/{subscription['id']}",
                            subscription)

    async def reactivated() -> bool:
        if count(metrics.reactivations) < 1:
            return False
        current = await asyncio.to_thread(fhir.call, "GET",
                                          f"Subscription/{subscription['id']}")
        return bool(current["status"] == "active")

    await until(reactivated)
    assert count(metrics.heartbeats_missed) >= 1

    async def recovered() -> bool:
        runs = await state.runs(DATASET)
        return bool([r for r in succeeded(runs, "subscription") if r not in runs_before])

    await until(recovered)


async def test_classic_rest_hook_pings_give_one_run(
        fhir: SekmetServer, serve: Serve, state: StateStore, cluster: Cluster) -> None:
    """Classic R4: criteria, no payload (empty POSTs). The backport subscription of the test
    before (same site and dataset, so the same tag) is rewritten, not duplicated."""
    service = await serve({"kind": "rest-hook", "criteria": "Patient?gender=female"})
    watcher = service.server.app[WATCHERS][DATASET]

    async def settled() -> bool:
        runs = await state.runs(DATASET)
        return bool(succeeded(runs, "reconcile")) and watcher.subscription is not None \
            and not (watcher.debouncer.running or watcher.debouncer.pending) \
            and all(r.status is not RunStatus.RUNNING for r in runs)

    await until(settled)
    found = await asyncio.to_thread(fhir.call, "GET",
                                    f"Subscription?_tag={TAG_SYSTEM}|tm.{DATASET}")
    [entry] = found["entry"]
    subscription = entry["resource"]
    assert subscription["status"] == "active"
    assert subscription["criteria"] == "Patient?gender=female"
    assert "payload" not in subscription["channel"]
    assert PROFILE not in subscription.get("meta", {}).get("profile", [])

    before = await state.runs(DATASET)
    pings = count(watcher.metrics.notifications, "rest-hook")
    new = copy(2)
    women = sum(r["resourceType"] == "Patient" and r.get("gender") == "female" for r in new)
    assert women > 1
    await asyncio.to_thread(fhir.put, new)

    async def one_more() -> list[RunRecord]:
        if count(watcher.metrics.notifications, "rest-hook") - pings < women:
            return []
        runs = await state.runs(DATASET)
        done = [r for r in succeeded(runs, "subscription") if r not in before]
        busy = watcher.debouncer.running or watcher.debouncer.pending
        return done if done and not busy else []

    [run] = await until(one_more)
    await asyncio.sleep(DEBOUNCE_S + 0.2)  # a further debounce window: still no second run
    assert [r for r in await state.runs(DATASET) if r not in before] == [run]
    total = await asyncio.to_thread(fhir.call, "GET", "Patient?_summary=count")
    assert run.counts.patients == run.counts.rows_shared == total["total"]


class DroppingRelay:
    """An HTTP relay between sekmet and the connector's notification endpoint that answers
    ``200`` to event notifications without passing them on while ``dropping`` (lost in
    transit: the server believes them delivered); everything else is passed on."""

    def __init__(self, target_port: int) -> None:
        self.target = f"http://127.0.0.1:{target_port}"
        self.dropping = False
        self.dropped = 0
        self.port = free_port()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    async def _relay(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.dropping:
            with contextlib.suppress(Exception):
                if parse_notification(body).type is NotificationType.EVENT:
                    self.dropped += 1
                    return web.Response(status=200)
        assert self._http is not None
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("authorization", "content-type")}
        async with self._http.request(request.method, self.target + request.path_qs,
                                      data=body, headers=headers) as answer:
            return web.Response(status=answer.status, body=await answer.read())

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._relay)
        self._http = aiohttp.ClientSession()
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()


async def test_notifications_lost_in_transit_are_recovered_from_the_heartbeat(
        fhir: SekmetServer, serve: Serve, state: StateStore, cluster: Cluster) -> None:
    """Every event notification of a burst is lost between server and connector (the server
    got 200s): the next heartbeat's ``events-since-subscription-start`` is above what the
    connector saw, which asks for a run at once and, still missing at the next check, is a
    gap; the run's version holds every patient the server holds."""
    port = free_port()
    relay = DroppingRelay(port)
    base = await relay.start()
    try:
        service = await serve({"kind": "backport", "topic": TOPIC, "content": "empty",
                               "endpoint": f"{base}/fhir-notify/{DATASET}"}, port=port)
        watcher = service.server.app[WATCHERS][DATASET]
        metrics = watcher.metrics

        def busy() -> bool:
            return watcher.debouncer.running or watcher.debouncer.pending

        async def settled() -> bool:
            runs = await state.runs(DATASET)
            return bool(runs) and watcher.subscription is not None and not busy() \
                and all(r.status is not RunStatus.RUNNING for r in runs) \
                and count(metrics.notifications, "heartbeat") >= 1

        await until(settled)
        before = await state.runs(DATASET)
        events_before = count(metrics.notifications, "event-notification")
        gaps_before = count(metrics.gaps)
        relay.dropping = True
        await asyncio.to_thread(fhir.put, copy(3))  # 24 new Patients: 24 events, all lost

        async def recovered() -> list[RunRecord]:
            runs = await state.runs(DATASET)
            done = [r for r in succeeded(runs, "subscription") if r not in before]
            return done if done and not busy() and count(metrics.gaps) > gaps_before else []

        run = (await until(recovered))[0]
        assert relay.dropped >= 24
        assert count(metrics.notifications, "event-notification") == events_before  # none came
        assert count(metrics.events_missed) >= 24
        total = (await asyncio.to_thread(fhir.call, "GET",
                                         "Patient?_summary=count"))["total"]
        assert run.counts.patients == run.counts.rows_shared == total
        assert run.version_id is not None
        versions = await cluster.versions(run.version_id)
        assert [v.state for v in versions] == [VersionState.COMMITTED] * 3
        assert all(v.row_count == total for v in versions)
    finally:
        await relay.close()
