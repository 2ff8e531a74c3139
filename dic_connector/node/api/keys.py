"""Typed application state (``web.AppKey``) and per-request keys, in one place."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from dic_connector.node.api.auth import FAILURE_REASONS, Authenticator, Identity
from dic_connector.node.api.changes import RequestChanges
from dic_connector.node.api.endpoint import Endpoint
from dic_connector.node.api.throttle import FailedAuthThrottle
from dic_connector.node.config import NodeConfig
from dic_connector.node.coordination.coordinator import Coordination
from dic_connector.node.coordination.peers import PeerClient
from dic_connector.node.store.unit_of_work import Store

#: The locks whose waits ``dic_lock_wait_seconds`` shows.
LOCKS = ("database_writers", "compute")
#: From an uncontended acquire (well below 1 ms) to a computation queued behind another.
LOCK_WAIT_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, float("inf"))


@dataclass(eq=False)  # the registry keys collectors by identity
class PeerAuditCounts(Collector):
    """Counters of the audit head exchange, set at each scrape from where they are kept:
    mismatches from the database (never deleted, so monotonic across restarts), failed
    exchanges from the running exchange (since this process started)."""

    mismatches: dict[str, int] = field(default_factory=dict)
    unreachable: dict[str, int] = field(default_factory=dict)

    def collect(self) -> Iterator[Metric]:
        found = CounterMetricFamily(
            "dic_peer_audit_mismatches", "Times a peer's audit log no longer held the head "
            "recorded here (truncated or rewritten)", labels=["peer"])
        for peer, n in sorted(self.mismatches.items()):
            found.add_metric([peer], n)
        failed = CounterMetricFamily(
            "dic_peer_audit_unreachable", "Audit head exchanges that did not reach the peer "
            "or got an answer out of schema (no mismatch)", labels=["peer"])
        for peer, n in sorted(self.unreachable.items()):
            failed.add_metric([peer], n)
        yield found
        yield failed


@dataclass(frozen=True)
class Metrics:
    """The app's own Prometheus registry and instruments."""

    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    #: Failed authentications by the kind of credential (never by token or address).
    auth_failures: Counter
    #: Failed authentications answered 429, by the bucket that ran dry.
    auth_throttled: Counter
    #: Outbox messages per peer node, ``pending`` or ``parked`` (read at each scrape).
    outbox: Gauge
    #: Upload versions this node voted ready on whose outcome it has not learnt yet.
    in_doubt: Gauge
    #: Seconds queued for a lock: ``database_writers`` (SQLite write transactions of this
    #: process, one at a time) and ``compute`` (one MPC computation at a time).
    lock_wait: Histogram
    #: 1 while a peer has an unacknowledged audit mismatch (this node then agrees to no plan).
    peer_audit_flagged: Gauge
    #: ``dic_peer_audit_mismatches_total`` and ``dic_peer_audit_unreachable_total``.
    peer_audit: PeerAuditCounts

    @classmethod
    def create(cls) -> Metrics:
        registry = CollectorRegistry()
        peer_audit = PeerAuditCounts()
        registry.register(peer_audit)
        metrics = cls(
            registry,
            Counter("dic_http_requests_total", "HTTP requests by route and status",
                    ["method", "route", "status"], registry=registry),
            Histogram("dic_http_request_seconds", "HTTP request latency by route",
                      ["method", "route"], registry=registry),
            Counter("dic_auth_failures_total", "Failed authentications by credential kind "
                    "(missing, malformed, token, jwt, certificate)", ["reason"],
                    registry=registry),
            Counter("dic_auth_throttled_total", "Failed authentications answered 429, by "
                    "bucket (address, token)", ["bucket"], registry=registry),
            Gauge("dic_peer_outbox_messages", "Outbox messages owed to a peer node, pending "
                  "or parked (dead letters waiting for an admin)", ["peer", "state"],
                  registry=registry),
            Gauge("dic_uploads_in_doubt", "Upload versions this node voted ready on and has "
                  "not learnt the outcome of (prepared; resolved from the peers)",
                  registry=registry),
            Histogram("dic_lock_wait_seconds", "Seconds queued for a lock: database_writers "
                      "(SQLite write transactions), compute (one computation at a time)",
                      ["lock"], buckets=LOCK_WAIT_BUCKETS, registry=registry),
            Gauge("dic_peer_audit_flagged", "1 while a peer's audit mismatch waits for an "
                  "operator's acknowledgement (no plan is agreed meanwhile)", ["peer"],
                  registry=registry),
            peer_audit,
        )
        for reason in FAILURE_REASONS:  # every series from the start, at 0
            metrics.auth_failures.labels(reason)
        for lock in LOCKS:
            metrics.lock_wait.labels(lock)
        return metrics


CONFIG = web.AppKey("config", NodeConfig)
STORE = web.AppKey("store", Store)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
METRICS = web.AppKey("metrics", Metrics)
COORDINATION = web.AppKey("coordination", Coordination)
#: the peer client of status reads (GET /v1/requests/{id}/nodes), open while the app runs
PEER_STATUS = web.AppKey("peer_status", PeerClient)
#: wake-ups of the status long-poll (:mod:`.changes`), told by the store after each commit
REQUEST_CHANGES = web.AppKey("request_changes", RequestChanges)
ROUTE_ENDPOINTS = web.AppKey("route_endpoints", dict[web.AbstractRoute, Endpoint])
AUTH_THROTTLE = web.AppKey("auth_throttle", FailedAuthThrottle)

#: The caller's :class:`Identity`, set by the security middleware on protected routes.
IDENTITY = web.RequestKey("identity", Identity)
#: Who called, as the access log shows it: a principal id, or the certificate name of a
#: connector or peer node; set by the security middleware once authenticated.
PRINCIPAL = web.RequestKey("principal", str)


def identity(request: web.Request) -> Identity:
    return request[IDENTITY]
