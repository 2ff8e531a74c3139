"""``dic connector serve``: the hospital-side service that keeps its datasets current.

``create_app(config)`` builds the aiohttp application; its ``cleanup_ctx`` opens the state
database, marks runs of a previous process that died as ``interrupted``, retries pending
erasures, starts the :class:`~.schedule.Scheduler` and a
:class:`~.subscriptions.watcher.SubscriptionWatcher` per subscription-triggered dataset;
on shutdown (``on_shutdown``, before aiohttp waits for requests in flight) the watchers,
the scheduler and any run in progress, forced ones included, are cancelled (the run is
recorded ``interrupted``; the nodes erase its uncommitted upload), then the database is
closed.

Endpoints (the service is an operator's tool; no endpoint returns a value or a patient id):

- ``GET /live``: the process serves HTTP.
- ``GET /ready``: the state database answers and has the schema this code expects (run
  ``dic connector migrate`` otherwise); 503 with the reason if not.
- ``GET /metrics``: Prometheus text format (:mod:`.metrics`).
- ``GET /v1/datasets``: each dataset's source kind, trigger, next due time (null while a
  scheduled run is under way), whether it is
  running, and its last run (counts only).
- ``GET /v1/runs?dataset=&limit=``: run history, newest first, counts only.
- ``POST /fhir-notify/{dataset}``: FHIR Subscription notifications of a dataset whose
  trigger is a subscription (:mod:`.subscriptions`); outside ``/v1``, authenticated by the
  subscription's shared secret; answered at once, the run only queued.
- ``POST /v1/datasets/{name}/runs``: run now (an owner forcing an immediate re-share, e.g.
  after a consent withdrawal); ``202`` with ``{"dataset", "queued": true}``, or with
  ``?wait=true`` ``200``/``502`` and the finished run (``503`` if the service stops first:
  the run is then interrupted, as any run in progress).

``/v1`` needs ``Authorization: Bearer <operator token>``, checked by SHA-256 against
``operator_token_sha256`` in constant time (:func:`hmac.compare_digest`); without a
configured hash ``/v1`` answers 403 to everyone. The service listens on 127.0.0.1 by
default: it is meant to sit inside the hospital network, beside the FHIR server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dic_connector.connector.config import ConnectorConfig
from dic_connector.connector.metrics import ConnectorMetrics
from dic_connector.connector.runs import Runner, RunOutcome, counts_summary
from dic_connector.connector.schedule import Scheduler
from dic_connector.connector.state import RunRecord, StateStore
from dic_connector.connector.subscriptions.receiver import WATCHERS, add_routes
from dic_connector.connector.subscriptions.watcher import watchers
from dic_connector.errors import ConfigError

CONFIG = web.AppKey("config", ConnectorConfig)
STATE = web.AppKey("state", StateStore)
METRICS = web.AppKey("metrics", ConnectorMetrics)
RUNNER = web.AppKey("runner", Runner)
SCHEDULER = web.AppKey("scheduler", Scheduler)
#: background runs started by POST, cancelled on shutdown
TASKS = web.AppKey("tasks", set[asyncio.Task[RunOutcome]])

LOGGER = "dic_connector.connector"


def record_json(record: RunRecord) -> dict[str, Any]:
    """A run as JSON: counts, names, times and the version id; never a value."""
    return {
        "id": record.id, "dataset": record.dataset, "trigger": record.trigger,
        "status": record.status.value, "started_at": record.started_at.isoformat(),
        "finished_at": None if record.finished_at is None else record.finished_at.isoformat(),
        "version_id": None if record.version_id is None else str(record.version_id),
        "counts": dict(counts_summary(record.counts)),
        "rejected": dict(record.counts.rejected), "error": record.error,
        "stage_seconds": {k: round(v, 3) for k, v in record.stage_seconds.items()},
    }


def _authorise(request: web.Request) -> None:
    expected = request.app[CONFIG].operator_token_sha256
    if expected is None:
        raise web.HTTPForbidden(text='{"detail": "no operator token is configured"}',
                                content_type="application/json")
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    digest = hashlib.sha256(token.strip().encode()).hexdigest()
    if scheme.lower() != "bearer" or not hmac.compare_digest(digest, expected):
        raise web.HTTPUnauthorized(text='{"detail": "operator token required"}',
                                   content_type="application/json",
                                   headers={"WWW-Authenticate": "Bearer"})


async def live(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "site": request.app[CONFIG].site})


async def ready(request: web.Request) -> web.Response:
    try:
        diff = await request.app[STATE].check_schema()
        database = "ok" if not diff else f"schema differs ({len(diff)} changes): run " \
                                         "`dic connector migrate`"
    except Exception:
        database = "unavailable"
    ok = database == "ok"
    return web.json_response({"status": "ok" if ok else "unavailable",
                              "site": request.app[CONFIG].site,
                              "checks": {"state_database": database}},
                             status=200 if ok else 503)


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def list_datasets(request: web.Request) -> web.Response:
    _authorise(request)
    app = request.app
    out = []
    for dataset in app[CONFIG].datasets:
        last = await app[STATE].last_run(dataset.name)
        due = app[SCHEDULER].due.get(dataset.name)
        out.append({"name": dataset.name, "mapping": dataset.mapping.name,
                    "source": dataset.source_kind, "trigger": dataset.trigger.describe(),
                    "running": app[RUNNER].running(dataset.name),
                    "next_due": None if due is None else due.isoformat(),
                    "subscription": _subscription_json(app, dataset.name),
                    "last_run": None if last is None else record_json(last)})
    return web.json_response({"site": app[CONFIG].site, "datasets": out})


def _subscription_json(app: web.Application, name: str) -> dict[str, Any] | None:
    watcher = app[WATCHERS].get(name)
    if watcher is None:
        return None
    return {"id": watcher.subscription, "kind": watcher.settings.kind.value,
            "highest_event": None if watcher.subscription is None
            else watcher.ledger.highest(watcher.subscription),
            "run_pending": watcher.debouncer.pending}


async def list_runs(request: web.Request) -> web.Response:
    _authorise(request)
    dataset = request.query.get("dataset") or None
    try:
        limit = max(1, min(500, int(request.query.get("limit", "50"))))
    except ValueError:
        raise web.HTTPBadRequest(text='{"detail": "limit must be an integer"}',
                                 content_type="application/json") from None
    records = await request.app[STATE].runs(dataset, limit)
    return web.json_response({"runs": [record_json(r) for r in records]})


async def start_run(request: web.Request) -> web.Response:
    _authorise(request)
    app, name = request.app, request.match_info["name"]
    try:
        app[CONFIG].dataset(name)
    except ConfigError as exc:
        raise web.HTTPNotFound(text=json.dumps({"detail": str(exc)}),
                               content_type="application/json") from None
    # the run is a task of the service, not of this request: shutdown cancels it (recorded
    # interrupted) rather than wait for it, and a caller that goes away does not stop it
    task = asyncio.create_task(app[RUNNER].run(name, "manual"), name=f"manual:{name}")
    app[TASKS].add(task)
    task.add_done_callback(app[TASKS].discard)
    if request.query.get("wait") not in ("1", "true", "yes"):
        return web.json_response({"dataset": name, "queued": True}, status=202)
    try:
        result: RunOutcome = await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.cancelled():  # this request was cancelled, not the run
            raise
        return web.json_response({"dataset": name, "detail": "the service is stopping; the "
                                  "run was interrupted"}, status=503)
    return web.json_response({"run": record_json(result.record)},
                             status=200 if result.ok else 502)


async def _stop_runs(app: web.Application) -> None:
    """Stop the subscription watchers and the scheduler, and cancel every run in progress
    (each is recorded interrupted).

    An ``on_shutdown`` handler: aiohttp calls it before it waits for requests in flight, so
    an operator's ``?wait=true`` request is answered (503) instead of holding the shutdown
    until its run ends; the cleanup context calls it again (then a no-op).
    """
    watchers = app[WATCHERS]
    for watcher in list(watchers.values()):
        await watcher.stop()
    watchers.clear()
    scheduler = app.get(SCHEDULER)
    if scheduler is not None:
        await scheduler.stop()
    tasks: set[asyncio.Task[RunOutcome]] = app[TASKS]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    state = StateStore(config.state_database_url)
    app[STATE] = state
    runner = Runner(config, state, app[METRICS], logger=logging.getLogger(LOGGER))
    app[RUNNER] = runner

    async def run(name: str, trigger: str) -> bool:
        return (await runner.run(name, trigger)).ok

    scheduler = Scheduler(config.datasets, state.schedule_anchor, run, logger=logging.getLogger(LOGGER))
    app[SCHEDULER] = scheduler
    schema_ok = False
    with contextlib.suppress(Exception):
        schema_ok = not await state.check_schema()
    if schema_ok:
        interrupted = await state.mark_interrupted()
        if interrupted:
            logging.getLogger(LOGGER).warning("runs of a previous process marked interrupted",
                                              extra={"event": "runs.interrupted",
                                                     "count": interrupted})
        await runner.retry_pending_erasures()
        scheduler.start()
        found = watchers(config.datasets, config.site, state, app[METRICS], run,
                         logger=logging.getLogger(LOGGER))
        for watcher in found.values():
            await watcher.start()
        app[WATCHERS].update(found)
    else:
        logging.getLogger(LOGGER).error(
            "state database not migrated: not scheduling (run `dic connector migrate`)",
            extra={"event": "state.unready"})
    try:
        yield
    finally:
        await _stop_runs(app)
        await state.close()


def create_app(config: ConnectorConfig, *, metrics: ConnectorMetrics | None = None
               ) -> web.Application:
    """The connector service for ``config`` (state opened and scheduler started on startup)."""
    app = web.Application(client_max_size=64 * 1024)
    app[CONFIG] = config
    app[METRICS] = metrics or ConnectorMetrics()
    app[TASKS] = set()
    app.router.add_get("/live", live)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/v1/datasets", list_datasets)
    app.router.add_get("/v1/runs", list_runs)
    app.router.add_post("/v1/datasets/{name}/runs", start_run)
    add_routes(app, app[METRICS], frozenset(d.name for d in config.datasets
                                            if d.trigger.subscription is not None))
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_stop_runs)
    return app

