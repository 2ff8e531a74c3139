"""Typed application state (``web.AppKey``) and per-request keys, in one place."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from dic_connector.node.api.auth import Authenticator, Identity
from dic_connector.node.api.endpoint import Endpoint
from dic_connector.node.config import NodeConfig
from dic_connector.node.coordination.coordinator import Coordination
from dic_connector.node.store.unit_of_work import Store


@dataclass(frozen=True)
class Metrics:
    """The app's own Prometheus registry and instruments."""

    registry: CollectorRegistry
    requests: Counter
    latency: Histogram

    @classmethod
    def create(cls) -> Metrics:
        registry = CollectorRegistry()
        return cls(
            registry,
            Counter("dic_http_requests_total", "HTTP requests by route and status",
                    ["method", "route", "status"], registry=registry),
            Histogram("dic_http_request_seconds", "HTTP request latency by route",
                      ["method", "route"], registry=registry),
        )


CONFIG = web.AppKey("config", NodeConfig)
STORE = web.AppKey("store", Store)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
METRICS = web.AppKey("metrics", Metrics)
COORDINATION = web.AppKey("coordination", Coordination)
ROUTE_ENDPOINTS = web.AppKey("route_endpoints", dict[web.AbstractRoute, Endpoint])

#: The caller's :class:`Identity`, set by the security middleware on protected routes.
IDENTITY = web.RequestKey("identity", Identity)


def identity(request: web.Request) -> Identity:
    return request[IDENTITY]
