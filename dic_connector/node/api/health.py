"""Liveness, readiness and Prometheus metrics: the only unauthenticated endpoints.

``/live`` says the process serves HTTP; ``/ready`` also checks the database answers (an
orchestrator stops routing to a node that is not ready). ``/metrics`` is the Prometheus text
exposition format from ``prometheus_client`` with a registry per app (no global registry),
holding request counts and latencies by route template and status, never by concrete path
(which could carry identifiers), failed authentications by kind, the outbox messages
pending and parked per peer node, and the upload versions in doubt (prepared here, outcome
not yet learnt; both counted in the database at each scrape), and the audit head exchange
with each peer (:mod:`dic_connector.node.coordination.exchange`): mismatches detected
(``dic_peer_audit_mismatches_total``), exchanges that did not reach the peer
(``dic_peer_audit_unreachable_total``) and whether a mismatch waits for an operator
(``dic_peer_audit_flagged``).

``/ready`` of a coordinated node reports ``degraded`` (still 200: the node serves reads and
status, it only agrees to no plan) while a peer's audit log is flagged, naming the peer.
"""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from dic_connector.database.engine import read_only_options
from dic_connector.node.api.endpoint import PUBLIC, Endpoint
from dic_connector.node.api.keys import CONFIG, COORDINATION, METRICS, STORE
from dic_connector.node.api.schemas import HEALTH
from dic_connector.node.store.outbox import PARKED, PENDING


async def live(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "node": request.app[CONFIG].node_id})


async def ready(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    try:
        engine = request.app[STORE].engine
        async with engine.connect() as conn:
            # read-only: a readiness probe must not queue for SQLite's write lock
            conn = await conn.execution_options(**read_only_options(engine))
            await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception:
        checks["database"] = "unavailable"
    ok = all(v == "ok" for v in checks.values())
    status = "ok" if ok else "unavailable"
    if ok and request.app[CONFIG].coordinated:
        try:
            async with request.app[STORE].reading() as uow:
                flagged = await uow.peer_audit.flagged()
        except Exception:
            checks["peer_audit"] = "unavailable"
        else:
            checks["peer_audit"] = "ok" if not flagged else (
                f"mismatch: the audit log of {', '.join(flagged)} no longer holds the head "
                "recorded here (`dic admin audit peers`)")
        if checks["peer_audit"] != "ok":
            status = "degraded"
    return web.json_response({"status": status,
                              "node": request.app[CONFIG].node_id, "checks": checks},
                             status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    config, instruments = request.app[CONFIG], request.app[METRICS]
    if config.coordinated:
        try:
            async with request.app[STORE].reading() as uow:
                counts = await uow.outbox.counts()
        except Exception:  # /ready tells the database is down; the rest still shows
            logging.getLogger("dic_connector.node.api").warning(
                "outbox counts unavailable for /metrics", exc_info=True)
        else:
            for peer, node in enumerate(config.peers):
                for state in (PENDING, PARKED):
                    if peer != config.node_index:
                        instruments.outbox.labels(node.name, state).set(
                            counts.get((peer, state), 0))
    try:
        async with request.app[STORE].reading() as uow:
            instruments.in_doubt.set(len(await uow.versions.in_doubt()))
    except Exception:
        logging.getLogger("dic_connector.node.api").warning(
            "uploads in doubt unavailable for /metrics", exc_info=True)
    if config.coordinated:
        await _peer_audit_metrics(request)
    body = generate_latest(instruments.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _peer_audit_metrics(request: web.Request) -> None:
    config, instruments = request.app[CONFIG], request.app[METRICS]
    peers = [p.name for i, p in enumerate(config.peers) if i != config.node_index]
    try:
        async with request.app[STORE].reading() as uow:
            counts = await uow.peer_audit.mismatch_counts()
            flagged = set(await uow.peer_audit.flagged())
    except Exception:
        logging.getLogger("dic_connector.node.api").warning(
            "peer audit counts unavailable for /metrics", exc_info=True)
        return
    exchange = request.app[COORDINATION].audit_exchange if COORDINATION in request.app \
        else None
    for peer in peers:
        instruments.peer_audit.mismatches[peer] = counts.get(peer, 0)
        state = exchange.peers.get(peer) if exchange is not None else None
        instruments.peer_audit.unreachable[peer] = state.unreachable if state else 0
        instruments.peer_audit_flagged.labels(peer).set(1 if peer in flagged else 0)


ENDPOINTS = (
    Endpoint("GET", "/live", live, "live", "The process serves HTTP", PUBLIC,
             response_schema=HEALTH, tag="health"),
    Endpoint("GET", "/ready", ready, "ready", "The node can serve requests (database up)",
             PUBLIC, response_schema=HEALTH, tag="health"),
    Endpoint("GET", "/metrics", metrics, "metrics", "Prometheus metrics", PUBLIC,
             media_type="text/plain", tag="health"),
)
