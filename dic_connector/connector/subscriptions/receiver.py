"""``POST /fhir-notify/{dataset}``: where the FHIR server delivers a dataset's notifications.

Outside ``/v1`` (the FHIR server has no operator token): each request must carry the
dataset's shared secret as ``Authorization: Bearer <secret>`` (the subscription's
``channel.header``), compared in constant time (:func:`hmac.compare_digest`); without it, 401
before the body is read. The body is parsed (:mod:`.notifications`; 400 with what is wrong
if it is not a notification), accounted for (:meth:`~.watcher.SubscriptionWatcher.receive`:
numbers only, recorded in the state database) and answered ``200`` at once: a run is only
*queued* (:mod:`.debounce`), never done inside the request, so the server's delivery does not
time out and mark the subscription ``error``.

Answers never echo the body, and nothing of it is logged or stored: a notification may
name patients (``id-only`` focus references, or a classic payload).
"""

from __future__ import annotations

import hmac
import json

from aiohttp import web

from dic_connector.connector.config import NOTIFY_HEADER
from dic_connector.connector.metrics import ConnectorMetrics
from dic_connector.connector.subscriptions.notifications import (
    NotificationError,
    parse_notification,
)
from dic_connector.connector.subscriptions.watcher import SubscriptionWatcher

#: the watcher of each subscription-triggered dataset (empty until the service has started)
WATCHERS = web.AppKey("subscription_watchers", dict[str, SubscriptionWatcher])
NOTIFY_METRICS = web.AppKey("subscription_metrics", ConnectorMetrics)
#: the datasets configured with a subscription trigger
SUBSCRIBED = web.AppKey("subscribed_datasets", frozenset[str])
PATH = "/fhir-notify/{dataset}"


def _answer(status: int, detail: str, **headers: str) -> web.Response:
    return web.Response(status=status, text=json.dumps({"detail": detail}),
                        content_type="application/json", headers=headers)


def authorised(header: str, secret: str) -> bool:
    """Whether ``header`` (the Authorization value) is ``Bearer <secret>``, in constant time."""
    scheme, _, token = header.partition(" ")
    ok = hmac.compare_digest(token.strip().encode(), secret.encode())
    return ok and scheme.lower() == "bearer"


async def notify(request: web.Request) -> web.Response:
    name = request.match_info["dataset"]
    watchers = request.app[WATCHERS]
    watcher = watchers.get(name)
    metrics = request.app[NOTIFY_METRICS]
    if watcher is None and name in request.app[SUBSCRIBED]:
        return _answer(503, "the connector is not ready (is the state database migrated?)")
    if watcher is None:
        return _answer(404, "no dataset of this connector is triggered by a subscription "
                            "at this path")
    if not authorised(request.headers.get(NOTIFY_HEADER, ""), watcher.secret):
        metrics.notifications_rejected.labels(name, "unauthorised").inc()
        return _answer(401, "the subscription's shared secret is required",
                       **{"WWW-Authenticate": "Bearer"})
    body = await request.read()
    try:
        notification = parse_notification(body)
    except NotificationError as exc:
        metrics.notifications_rejected.labels(name, "malformed").inc()
        return _answer(400, f"not a subscription notification: {exc}")
    await watcher.receive(notification)
    return web.json_response({"accepted": True, "type": notification.type.value})


def add_routes(app: web.Application, metrics: ConnectorMetrics,
               subscribed: frozenset[str]) -> None:
    """The receiver's route; ``app[WATCHERS]`` is filled when the service starts."""
    app[WATCHERS] = {}
    app[SUBSCRIBED] = subscribed
    app[NOTIFY_METRICS] = metrics
    app.router.add_post(PATH, notify)
