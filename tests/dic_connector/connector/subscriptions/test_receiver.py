"""``POST /fhir-notify/{dataset}`` on the real service (aiohttp test server on 127.0.0.1,
three node apps), fed by a small emitter posting crafted notification bundles: the shared
secret, malformed bodies, duplicates, reordering and gaps, numbers kept across a restart,
metrics, and nothing of a payload in answers, logs or the state database.

The dataset's FHIR server is unreachable here (the subscription cannot be created: the
watcher keeps trying in the background) and the debounce window is an hour, so every
outcome is the receiver's alone; runs and the real server are ``test_sekmet.py``'s."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import Any

import pytest

from dic_connector.connector.config import ConnectorConfig
from dic_connector.connector.state import StateStore
from dic_connector.connector.subscriptions.receiver import WATCHERS, authorised
from dic_connector.connector.subscriptions.watcher import SubscriptionWatcher
from mpc.local import free_port
from tests.dic_connector.connector.conftest import DATASET, Client, Cluster, connector_config
from tests.dic_connector.connector.subscriptions.bodies import bundle

SECRET = "notify-secret-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/fhir+json"}
PATH = f"/fhir-notify/{DATASET}"


def subscription_config(cluster: Cluster, tmp: Path, export: Path, **settings: Any
                        ) -> ConnectorConfig:
    subscription = {"kind": "backport", "topic": "http://example.org/topic/patient-change",
                    "secret": SECRET, "debounce": "1h", "heartbeat": "1h",
                    "endpoint": f"http://127.0.0.1:1{PATH}", **settings}
    return connector_config(
        cluster, tmp, export,
        source={"kind": "fhir-rest", "base_url": f"http://127.0.0.1:{free_port()}/fhir"},
        trigger={"subscription": subscription})


def watcher(client: Client) -> SubscriptionWatcher:
    return client.server.app[WATCHERS][DATASET]


def test_the_secret_is_compared_whole() -> None:
    assert authorised(f"Bearer {SECRET}", SECRET) and authorised(f"bearer {SECRET}", SECRET)
    assert not authorised(f"Bearer {SECRET[:-1]}", SECRET)
    assert not authorised(f"Basic {SECRET}", SECRET)
    assert not authorised(SECRET, SECRET) and not authorised("", SECRET)


async def test_emitter_duplicates_reordering_gaps_and_a_restart(
        cluster: Cluster, tmp_path: Path, export: Path, state: StateStore, serve: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dic_connector.connector")
    config = subscription_config(cluster, tmp_path, export)
    client = await serve(config)

    async def post(body: bytes, headers: dict[str, str] = AUTH, path: str = PATH) -> Any:
        answer = await client.post(path, data=body, headers=headers)
        return answer.status, await answer.json()

    # refused before the body is read: no secret, a wrong one, another scheme
    assert (await post(bundle("heartbeat", 0)))[0] == 200
    assert (await post(bundle("heartbeat", 0), {}))[0] == 401
    assert (await post(bundle("heartbeat", 0), {"Authorization": "Bearer guess"}))[0] == 401
    assert (await post(bundle("heartbeat", 0), {"Authorization": f"Basic {SECRET}"}))[0] == 401
    assert (await post(bundle("heartbeat", 0), path="/fhir-notify/other"))[0] == 404
    status, answer = await post(b"{\"resourceType\": \"Bundle\", \"type\": \"history\", "
                                b"\"entry\": [{\"resource\": {\"resourceType\": \"Parameters\", "
                                b"\"parameter\": [{\"name\": \"type\", \"valueCode\": \"x\"}]}}]}")
    assert status == 400 and "not a subscription notification: the notification's type" \
        in answer["detail"]
    assert (await post(b"not json"))[0] == 400

    w = watcher(client)
    sub = "emit-1"
    assert (await post(bundle("handshake", 0, sub=sub, state="requested"))) == (
        200, {"accepted": True, "type": "handshake"})
    pokes = w.debouncer.pokes
    await post(bundle("event-notification", 2, [1, 2], sub=sub))   # new: a run is due
    await post(bundle("event-notification", 2, [2], sub=sub))      # duplicate (a retry)
    await post(bundle("event-notification", 5, [5], sub=sub))      # 3, 4 skipped: suspect
    await post(bundle("event-notification", 4, [4], sub=sub))      # late: reordered
    await post(bundle("heartbeat", 7, sub=sub))                    # 6, 7 not sent yet: a run
    await post(bundle("heartbeat", 7, sub=sub))                    # 3, 6, 7 still missing: a gap
    assert w.debouncer.pokes - pokes == 3  # 1-2, 5 and the heartbeat; runs only queued
    assert w.debouncer.pending and w.debouncer.runs == 0
    assert await state.subscription_events(DATASET) == {sub: (7, [3, 6, 7])}

    metrics = await (await client.get("/metrics")).text()
    for line in (f'dic_connector_subscription_notifications_total{{dataset="{DATASET}",'
                 'type="event-notification"} 4.0',
                 f'dic_connector_subscription_notifications_total{{dataset="{DATASET}",'
                 'type="heartbeat"} 3.0',
                 f'dic_connector_subscription_duplicate_events_total{{dataset="{DATASET}"}} 1.0',
                 f'dic_connector_subscription_late_events_total{{dataset="{DATASET}"}} 1.0',
                 f'dic_connector_subscription_gaps_total{{dataset="{DATASET}"}} 1.0',
                 f'dic_connector_subscription_events_missed_total{{dataset="{DATASET}"}} 3.0',
                 'dic_connector_subscription_notifications_rejected_total{dataset='
                 f'"{DATASET}",reason="unauthorised"}} 3.0',
                 'dic_connector_subscription_notifications_rejected_total{dataset='
                 f'"{DATASET}",reason="malformed"}} 2.0'):
        assert line in metrics, line
    # a classic rest-hook ping (empty body) also asks for a run
    assert (await post(b""))[1]["type"] == "rest-hook"
    assert "secret-id" not in caplog.text and SECRET not in caplog.text
    gaps = [r for r in caplog.records if getattr(r, "event", "") == "subscription.gap"]
    assert [(r.subscription, r.missed) for r in gaps] == [(sub, 3)]  # type: ignore[attr-defined]

    # a restart restores the numbers: old ones are duplicates, a missed one is still late
    await client.close()
    again = await serve(config)
    w = watcher(again)
    for body in (bundle("event-notification", 5, [5], sub=sub),
                 bundle("event-notification", 3, [3], sub=sub)):
        assert (await again.post(PATH, data=body, headers=AUTH)).status == 200
    assert w.debouncer.pokes == 0
    assert await state.subscription_events(DATASET) == {sub: (7, [6, 7])}


async def test_not_ready_without_a_migrated_state_database_and_the_status_page(
        cluster: Cluster, tmp_path: Path, export: Path, serve: Any) -> None:
    config = subscription_config(cluster, tmp_path, export)
    client = await serve(config)  # state.db not migrated: nothing started
    answer = await client.post(PATH, data=bundle("heartbeat", 0), headers=AUTH)
    assert answer.status == 503 and "migrated" in (await answer.json())["detail"]
    await client.close()

    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    await store.migrate()
    await store.close()
    token = "operator-token-for-tests"
    client = await serve(dataclasses.replace(
        config, operator_token_sha256=hashlib.sha256(token.encode()).hexdigest()))
    await client.post(PATH, data=bundle("event-notification", 3, [3], sub="z"), headers=AUTH)
    listed = await (await client.get("/v1/datasets",
                                     headers={"Authorization": f"Bearer {token}"})).json()
    [entry] = listed["datasets"]
    assert entry["trigger"].startswith("subscription (backport http://example.org/topic/")
    assert entry["subscription"] == {"id": None, "kind": "backport", "highest_event": None,
                                     "run_pending": True}
